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
"""
from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass

from . import _fastpath

FRAME_LOCATIONS = ("free", "rx", "tx", "handoff")


class Region:
    """An anonymous shared-memory file (memfd) and our mapping of it."""

    def __init__(self, name: str, size: int):
        self.name = name
        self.size = size
        self.fd = os.memfd_create(f"xdpd-{name}", os.MFD_CLOEXEC)
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

    def control_size(self) -> int:
        return _fastpath.control_size(self.nworkers, self.frames_per_worker,
                                      self.frame_size, self.ring_entries)


class SharedUmem:
    """The UMEM region plus the control area that accounts for its frames."""

    def __init__(self, geometry: UmemGeometry):
        self.geometry = geometry
        self.umem = Region("umem", geometry.size)
        try:
            self.ctl_region = Region("control", geometry.control_size())
            self.control = _fastpath.Control(self.ctl_region.fd, self.ctl_region.size)
            self.control.format(geometry.nworkers, geometry.frames_per_worker,
                                geometry.frame_size, geometry.ring_entries)
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
