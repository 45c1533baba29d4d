"""The shared UMEM and the control area: two memfd regions every process maps.

The UMEM holds the packet frames: worker w's frames are
[w * frames_per_worker, (w + 1) * frames_per_worker) ("homed" at w).  The
first AF_XDP socket registers it once; the kernel pins its pages, so each
process may map the memfd at any address it likes, descriptors carry
offsets into it.

The control area (layout in fastpath.h) holds the workers' counters,
liveness, free lists, the handoff/return rings between workers, and the
forwarding tables.  The supervisor formats it and reads it at scrape time;
workers write it.  Both regions are memfds: they have no name in any file
system, so nothing is left behind when the last process holding one exits.

Hugepages.  With `umem.hugepages` on or auto the UMEM memfd is backed by
huge pages (MFD_HUGETLB): 2 MiB pages instead of 4 KiB ones, so a worker
walking thousands of frames misses the TLB far less.  The kernel reserves
huge pages when the region is mapped, so a shortage shows up here, as
ENOMEM, and never later as a SIGBUS in a worker; `auto` then falls back to
normal pages and says why.  A huge-page region is a whole number of huge
pages long; the UMEM registered with the sockets keeps its exact size.
"""
from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass

from xdpd.datapath import _fastpath

FRAME_LOCATIONS = ("free", "rx", "tx", "handoff")
MFD_HUGETLB = getattr(os, "MFD_HUGETLB", 0x0004)


def hugepage_size(meminfo: str = "/proc/meminfo") -> int:
    """The default huge page size in bytes (Hugepagesize in /proc/meminfo)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 2 << 20


def hugepages_free(meminfo: str = "/proc/meminfo") -> int:
    """Free default-size huge pages (HugePages_Free), 0 if unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Region:
    """An anonymous shared-memory file (memfd) and our mapping of it."""

    def __init__(self, name: str, size: int, hugepages: bool = False):
        self.name = name
        self.hugepages = hugepages
        flags = os.MFD_CLOEXEC
        if hugepages:
            page = hugepage_size()
            size = -(-size // page) * page
            flags |= MFD_HUGETLB
        self.size = size
        self.fd = os.memfd_create(f"xdpd-{name}", flags)
        try:
            os.ftruncate(self.fd, size)
            self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self.fd)
            raise
        self._anchor = ctypes.c_char.from_buffer(self._map)

    @property
    def addr(self) -> int:
        return ctypes.addressof(self._anchor)

    def close(self) -> None:
        if self.fd < 0:
            return
        del self._anchor
        self._map.close()
        os.close(self.fd)
        self.fd = -1


@dataclass(frozen=True)
class UmemGeometry:
    nworkers: int
    frames_per_worker: int
    frame_size: int

    @property
    def frames(self) -> int:
        return self.nworkers * self.frames_per_worker

    @property
    def size(self) -> int:
        return self.frames * self.frame_size

    @property
    def ring_entries(self) -> int:
        # one slot per frame a worker owns: a handoff ring can never overflow
        return 1 << (self.frames_per_worker - 1).bit_length()

    @property
    def layout(self) -> tuple[int, int, int, int]:
        """What the control area's layout is computed from: a worker is told
        this in its spec and never reads it from the shared header."""
        return (self.nworkers, self.frames_per_worker, self.frame_size, self.ring_entries)

    def control_size(self) -> int:
        return _fastpath.control_size(*self.layout)


class HugepageError(OSError):
    """umem.hugepages: on, and the kernel cannot give us huge pages."""


def _umem_region(size: int, hugepages: str) -> tuple[Region, str]:
    """The UMEM region, and a note on its backing for the log."""
    if hugepages == "off":
        return Region("umem", size), "normal pages (umem.hugepages: off)"
    page = hugepage_size()
    try:
        region = Region("umem", size, hugepages=True)
    except OSError as e:
        need = -(-size // page)
        why = (f"{need} free {page >> 20} MiB huge pages needed, "
               f"{hugepages_free()} free ({e.strerror})")
        if hugepages == "on":
            raise HugepageError(e.errno, f"umem.hugepages is on but huge pages are not "
                                f"available: {why}; reserve them with "
                                f"'sysctl vm.nr_hugepages={need}' or set umem.hugepages: "
                                "auto") from None
        return Region("umem", size), f"normal pages, huge pages not available: {why}"
    return region, f"{region.size // page} huge pages of {page >> 20} MiB"


class SharedUmem:
    """The UMEM region plus the control area that accounts for its frames."""

    def __init__(self, geometry: UmemGeometry, hugepages: str = "off"):
        self.geometry = geometry
        self.umem, self.backing = _umem_region(geometry.size, hugepages)
        try:
            self.ctl_region = Region("control", geometry.control_size())
            self.control = _fastpath.Control(self.ctl_region.fd, self.ctl_region.size)
            self.control.format(*geometry.layout)
        except Exception:
            self.umem.close()
            raise

    @property
    def capacity(self) -> int:
        return self.geometry.frames

    def frame_locations(self) -> dict[str, int]:
        """Frames by location, summed over workers; adds up to capacity."""
        total = dict.fromkeys(FRAME_LOCATIONS, 0)
        for w in range(self.geometry.nworkers):
            for k, v in self.control.worker_frames(w).items():
                total[k] += v
        return total

    def close(self) -> None:
        self.control.close()
        self.ctl_region.close()
        self.umem.close()
