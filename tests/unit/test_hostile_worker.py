"""A hostile worker against the control area (docs/SECURITY.md).

Every worker maps the control area read-write.  Here one scribbles over all
of it (the header's offsets and counts, the active table's number, both
forwarding tables, every ring index, every slot) and the supervisor's side
goes on: it derives no address from shared memory (the layout is its own,
from format(); a worker's comes from its spec), so each call answers from
inside the area, refuses a slot with a reason, or reports a counter the
worker made up, and never reads or writes outside it.  The scenario runs in
a child process (a wild access would kill it), with the normal build and
with AddressSanitizer and UBSan."""
import json
import os
import re
import subprocess
import sys

import pytest

from test_fastpath_fuzz import ROOT, ff

SCENARIO = r"""
import json, mmap, random, sys
sys.path.insert(0, sys.argv[1])
fastpath = __import__("fuzz_fastpath").load(sys.argv[2] or None)
from xdpd.shared_umem import Region, UmemGeometry

geo = UmemGeometry(nworkers=3, frames_per_worker=64, frame_size=2048)
region = Region("control", geo.control_size())
sup = fastpath.Control(region.fd, region.size)
sup.format(*geo.layout)
drop = {"action": "drop", "egress": [], "match": None, "id": 0}
g1 = sup.write_table([[drop], None])
worker_view = fastpath.Control(region.fd, region.size, layout=geo.layout)

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
