"""A hostile worker against the control area (docs/SECURITY.md).

Every worker maps the control area read-write.  Here one scribbles over all
of it (the header's offsets and counts, every ring index, every slot) and
the supervisor's side goes on: it derives no address from shared memory (the layout is its own,
from format(); a worker's comes from its spec), so each call answers from
inside the area, refuses a slot with a reason, or reports a counter the
worker made up, and never reads or writes outside it.  The scenario runs in
a child process (a wild access would kill it), with the normal build and
with AddressSanitizer and UBSan.

What the supervisor writes and workers only read (each slot's assignment,
the forwarding tables, the active table's number) is in the tables area, a
sealed memfd: a worker's every way to write it is refused."""
import ctypes
import errno
import fcntl
import json
import mmap
import os
import re
import struct
import subprocess
import sys

import pytest
from test_fastpath_fuzz import ROOT, ff

SCENARIO = r"""
import json, mmap, random, sys
sys.path.insert(0, sys.argv[1])
fastpath = __import__("fuzz_fastpath").load(sys.argv[2] or None)
from xdpd.datapath.umem import Region, UmemGeometry

geo = UmemGeometry(nworkers=3, frames_per_worker=64, frame_size=2048)
region = Region("control", geo.control_size())
sup = fastpath.Control(region.fd, region.size)
sup.format(*geo.layout)
drop = {"action": "drop", "egress": [], "match": None, "id": 0}
g1 = sup.write_table([[drop], None])
worker_view = fastpath.Control(region.fd, region.size, layout=geo.layout,
                               tables_fd=sup.tables_fd)

raw = mmap.mmap(region.fd, region.size)     # the hostile worker's own mapping
results = {}
for seed in range(int(sys.argv[3])):
    rng = random.Random(seed)
    if seed % 3 == 0:                       # the header alone: offsets, counts, table
        raw[0:256] = rng.randbytes(256)
    elif seed % 3 == 1:                     # everything, random
        raw[:] = rng.randbytes(region.size)
    else:                                   # everything, all ones: every index maximal
        raw[:] = b"\xff" * region.size
    for i in range(geo.nworkers):
        for call in ("worker_liveness", "worker_stats", "worker_frames", "ring_use",
                     "rule_stats"):
            try:
                getattr(sup, call)(i)
            except (TimeoutError, ValueError) as e:     # refused, with a reason
                results.setdefault(call + " refused", str(e))
        worker_view.worker_liveness(i)       # a replacement's view: its spec's layout
    sup.mark_stopped(1)
    try:
        sup.reset_worker(2)
    except (ValueError, TimeoutError) as e:
        results.setdefault("reset_worker refused", str(e))
    for i in (geo.nworkers, 10**6):
        try:
            sup.worker_stats(i)
            raise SystemExit(f"slot {i} answered")
        except IndexError:
            pass
before = sup.generation()
g2 = sup.write_table([None, [drop]])
assert g2 == before + 1 == g1 + 1, (g1, before, g2)    # its own count, not the shared word
results["generation"] = [g1, g2]
print(json.dumps(results))
"""


def run(module: str = "", env=None, rounds: int = 30) -> dict:
    r = subprocess.run([sys.executable, "-c", SCENARIO, os.path.join(ROOT, "tests"), module,
                        str(rounds)], capture_output=True, text=True, timeout=120,
                       env=env, cwd=ROOT)
    assert "ERROR: AddressSanitizer" not in r.stderr, r.stderr[-4000:]
    assert "runtime error" not in r.stderr, r.stderr[-4000:]
    assert r.returncode == 0, (r.returncode, r.stderr[-4000:])
    return json.loads(r.stdout)


def test_a_worker_scribbling_over_the_control_area_cannot_steer_the_supervisor():
    out = run()
    assert out["generation"] == [1, 2]
    # what a lie does is refuse that slot, with its reason
    assert re.fullmatch(r"worker 2 (still has \d+ frames lent out|: .* ring with worker "
                        r"\d not empty)", out["reset_worker refused"]), out


def test_the_same_under_address_sanitizer(tmp_path):
    runtime = ff.sanitizer_runtime()
    if not runtime:
        pytest.skip("needs gcc and libasan to build the fast path with AddressSanitizer")
    module = ff.build(str(tmp_path))
    out = run(module, env=ff.sanitizer_env(runtime), rounds=12)
    assert out["generation"] == [1, 2]


def test_a_worker_cannot_write_the_tables_area():
    """Each way a worker holding the tables area's fd could write it (a
    writable mapping, mprotect of its read-only one, write() through the fd
    or a reopen of it, resizing, lifting the seals) is refused by the
    kernel, and the supervisor's own writes still reach a read-only view."""
    from xdpd.datapath import _fastpath
    from xdpd.datapath.umem import Region, UmemGeometry

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    geo = UmemGeometry(nworkers=2, frames_per_worker=64, frame_size=2048)
    region = Region("control", geo.control_size())
    sup = _fastpath.Control(region.fd, region.size)
    sup.format(*geo.layout)
    fd = sup.tables_fd
    size = os.fstat(fd).st_size
    worker = _fastpath.Control(region.fd, region.size, layout=geo.layout, tables_fd=fd)
    ro = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr != ctypes.c_void_p(-1).value
        try:
            assert libc.mprotect(addr, size, mmap.PROT_READ | mmap.PROT_WRITE) == -1
            assert ctypes.get_errno() == errno.EACCES
        finally:
            libc.munmap(addr, size)
        for path in (None, f"/proc/self/fd/{fd}"):
            wfd = os.open(path, os.O_RDWR) if path else fd
            try:
                with pytest.raises(PermissionError):
                    os.pwrite(wfd, b"\xff" * 64, 0)
                with pytest.raises(PermissionError):
                    mmap.mmap(wfd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                with pytest.raises(PermissionError):
                    os.ftruncate(wfd, 0)
            finally:
                if path:
                    os.close(wfd)
        with pytest.raises(PermissionError):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0)          # F_SEAL_SEAL: no change at all
        with pytest.raises(PermissionError, match="cannot write the tables area"):
            worker.write_table([None])
        with pytest.raises(PermissionError, match="cannot write the tables area"):
            worker.set_worker(0, 0, 0, 1)
        # struct fp_tables_area: magic, version, then (a cache line on)
        # active_table and the generation
        magic, version = struct.unpack_from("<QI", ro, 0)
        assert (magic, version) == (0x7864706463746c31, 13)
        drop = {"action": "drop", "egress": [], "match": None, "id": 0}
        assert sup.write_table([[drop]]) == 1
        assert struct.unpack_from("<I4xQ", ro, 64) == (1, 1)
    finally:
        ro.close()
        worker.close()
        sup.close()
        region.close()
