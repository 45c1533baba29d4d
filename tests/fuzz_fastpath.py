#!/usr/bin/env python3
"""The C fast path under fuzz() (the test harness, `_fastpath_testing`),
optionally built with AddressSanitizer.

    make fuzz
    python tests/fuzz_fastpath.py [--asan] [--steps 1000000] [--seeds 1-8]
                                  [--modes lie,crash,lie+crash] [--fanout N]
                                  [--direct] [--max-segs N] [--json]

Each seed runs every mode on one of a few geometries (workers, frames per
worker, frame size, ring sizes, batch), chosen by the seed:

  lie        the kernel and the peers lie (bad descriptors, addresses,
             lengths, indices, tables): nothing may crash or touch memory
             out of bounds
  crash      well-behaved kernel and peers, ports killed at random points
             of an iteration and replaced through port_recover(): every
             frame and every packet accounted for exactly
  lie+crash  both: recovery from whatever the liars left
  exact      (not run unless named) well-behaved kernel and peers, no
             crashes: every frame and packet accounted for exactly

--max-segs N builds the ports with descriptor chains (multi-buffer, at most
N descriptors a packet): the kernel delivers chains of up to min(N, 6)
fragments, and now and then one the ports must refuse (checked exactly
too); lying, it and the peers make up chains of every kind.  A geometry's
batch and RX ring are raised to N where smaller (a batch holds a whole
chain; an RX ring must, for the kernel to deliver one).

--asan builds the harness (testing/fastpath_testing.c, which includes
xdpd/datapath/_fastpath.c, the fast path's one translation unit) with
-fsanitize=address,undefined into a temporary
directory and runs the seeds in a child process that has the sanitizer
runtime preloaded and loads that build instead of the one `make build` made.  Any
sanitizer report aborts the child; the exit status says whether it passed.
tests/unit/test_fastpath_fuzz.py runs a short version of this.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAPATH = os.path.join(ROOT, "xdpd", "datapath")
# the unity file: it includes the fast path's units (ring.h, ..., port.c)
SOURCE = os.path.join(DATAPATH, "_fastpath.c")
sys.path.insert(0, os.path.join(ROOT, "testing"))
import build as harness  # noqa: E402  (testing/build.py)
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]

# (workers, frames per worker, frame size, (rx, tx, fill, completion), batch).
# Frames per worker not a multiple of 8 and an even number of workers leave
# padding after the free lists and redo logs for ASan to poison.
GEOMETRIES = [
    (4, 60, 2048, (32, 32, 64, 64), 16),
    (2, 37, 4096, (16, 64, 32, 128), 7),
    (3, 64, 2048, (64, 16, 128, 16), 64),
    (1, 50, 2048, (8, 8, 64, 8), 3),
]
MODES = {
    "lie": {"misbehave": True},
    "crash": {"crash_every": 40, "misbehave": False},
    "lie+crash": {"crash_every": 40, "misbehave": True},
    "exact": {"misbehave": False},
}
DEFAULT_MODES = "lie,crash,lie+crash"


def sanitizer_runtime() -> str | None:
    """The ASan runtime gcc links against, or None without gcc or libasan."""
    gcc = shutil.which("gcc")
    if not gcc:
        return None
    try:
        path = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    # gcc echoes the bare name back when it has no such file
    return path if os.path.isabs(path) and os.path.exists(path) else None


def build(dest: str, flags: list[str] = SANITIZE, fastpath: str | None = None) -> str:
    """The harness compiled into dest with flags (default: the sanitizers);
    fastpath: a copy of xdpd/datapath/_fastpath.c to build it from instead
    (with copies of its units beside it: mutant())."""
    return harness.build(dest, flags, fastpath)


def units() -> list[str]:
    """The fast path's source files, by name: _fastpath.c, the units it
    includes, and fastpath.h."""
    return sorted(f for f in os.listdir(DATAPATH) if f.endswith((".c", ".h")))


def mutant(dest: str, old: str, new: str) -> tuple[str, str]:
    """Copies of the fast path's sources in dest, with old replaced by new in
    the one unit that holds it: old must occur exactly once in all of them
    together (ValueError otherwise).  All of them are copied because the unity
    file includes its units from its own directory first.  Returns (the copy
    of _fastpath.c, for build(fastpath=...); the name of the unit changed)."""
    texts = {f: open(os.path.join(DATAPATH, f)).read() for f in units()}
    found = {f: t.count(old) for f, t in texts.items() if old in t}
    if sum(found.values()) != 1:
        raise ValueError(f"{old!r} occurs {sum(found.values())} times in the fast path's "
                         f"sources ({', '.join(found) or 'none'}); a mutant needs exactly one")
    (unit,) = found
    texts[unit] = texts[unit].replace(old, new)
    os.makedirs(dest, exist_ok=True)
    for f, t in texts.items():
        with open(os.path.join(dest, f), "w") as out:
            out.write(t)
    return os.path.join(dest, os.path.basename(SOURCE)), unit


def sanitizer_env(runtime: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_PRELOAD"] = runtime
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    return env


def load(module_path: str | None):
    """The harness module: the given build, or the one `make build` made."""
    sys.path.insert(0, ROOT)
    return harness.load(module_path)


def geometry(seed: int, max_segs: int = 0) -> tuple:
    """The seed's geometry; with max_segs, its batch and RX ring at least
    max_segs (a power of two for the ring)."""
    nworkers, fpw, frame_size, (rx, tx, fill, comp), batch = GEOMETRIES[seed % len(GEOMETRIES)]
    if max_segs:
        batch = max(batch, max_segs)
        rx = max(rx, 1 << (max_segs - 1).bit_length())
    return nworkers, fpw, frame_size, (rx, tx, fill, comp), batch


def run_one(fastpath, seed: int, steps: int, mode: str, fanout: int = 1,
            direct: bool = False, max_segs: int = 0) -> dict:
    """One fuzz() run on a fresh control area and UMEM of the seed's geometry.

    fanout > 1: the workers in groups of that many (the last one maybe
    smaller) sharing a queue: the first of each owns the FILL and
    COMPLETION rings, the others receive into its frames.
    direct (without fanout): each worker also has a direct socket on every
    other worker's queue, and puts what it forwards there on it itself.
    max_segs: descriptor chains of up to that many (0: none)."""
    from xdpd.datapath.umem import Region

    nworkers, fpw, frame_size, rings, batch = geometry(seed, max_segs)
    entries = 1 << (fpw - 1).bit_length()
    ctl_region = Region("fuzz-control",
                        fastpath.control_size(nworkers, fpw, frame_size, entries))
    # two frames past the last worker's: no code may touch them
    umem = Region("fuzz-umem", (nworkers * fpw + 2) * frame_size)
    ctl = fastpath.Control(ctl_region.fd, ctl_region.size)
    try:
        ctl.format(nworkers, fpw, frame_size, entries)
        for w in range(nworkers):
            owner = w - w % fanout
            group = range(owner, min(owner + fanout, nworkers))
            queue = owner // fanout
            # two netdevs, a rule each
            ctl.set_worker(w, queue % 2, queue, 0, lane=w, owner=owner,
                           members=[m for m in group if m != w] if w == owner else (),
                           direct=[x for x in range(nworkers) if x != w][:8]
                           if direct and fanout == 1 else ())
        t = time.monotonic()
        r = fastpath.fuzz(ctl, umem.fd, umem.size, seed, steps, ring_sizes=rings,
                          batch=batch, max_segs=max_segs, **MODES[mode])
        r["seconds"] = round(time.monotonic() - t, 3)
        r["mode"] = mode
        r["fanout"] = fanout
        r["direct"] = direct
        return r
    finally:
        ctl.close()
        ctl_region.close()
        umem.close()


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def summary(results: list[dict]) -> dict:
    exact = [r for r in results if r["exact"]]
    return {
        "runs": len(results),
        "steps": sum(r["steps"] for r in results),
        "seconds": round(sum(r["seconds"] for r in results), 1),
        "crashes": sum(r["crashes"] for r in results),
        "crashes_checked_exactly": sum(r["crashes"] for r in exact),
        "scans": sum(r["scans"] for r in exact),
        "packets_checked": sum(r["packets"] for r in exact),
        "chains_checked": sum(r["chains"] for r in exact),
        "bad_descs_refused": sum(r["bad_descs"] for r in results),
        "chains_refused": sum(r["chain_invalid"] for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000, help="steps per run")
    ap.add_argument("--seeds", default="1-8", help="e.g. 1-8 or 3,5,9")
    ap.add_argument("--modes", default=DEFAULT_MODES, help="from: " + ", ".join(MODES))
    ap.add_argument("--fanout", type=int, default=1,
                    help="workers per queue (groups sharing FILL/COMPLETION rings)")
    ap.add_argument("--direct", action="store_true",
                    help="each worker sends on the others' queues through its own sockets")
    ap.add_argument("--max-segs", type=int, default=0, metavar="N",
                    help="descriptor chains of up to N descriptors (2..64; 0: none)")
    ap.add_argument("--asan", action="store_true",
                    help="build with AddressSanitizer and UBSan and run under them")
    ap.add_argument("--module", help=argparse.SUPPRESS)     # the child's build
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    if args.max_segs == 1 or not 0 <= args.max_segs <= 64:
        ap.error("--max-segs: 0, or 2..64")

    if args.asan:
        runtime = sanitizer_runtime()
        if not runtime:
            print("fuzz_fastpath: --asan needs gcc and its libasan", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="xdpd-asan-") as tmp:
            t = time.monotonic()
            module = build(tmp)
            print(f"built {os.path.basename(module)} with {' '.join(SANITIZE)} "
                  f"in {time.monotonic() - t:.1f} s", file=sys.stderr)
            child = [sys.executable, os.path.abspath(__file__), "--module", module,
                     "--steps", str(args.steps), "--seeds", args.seeds,
                     "--modes", args.modes, "--fanout", str(args.fanout),
                     "--max-segs", str(args.max_segs)] + \
                (["--json"] if args.json else []) + (["--direct"] if args.direct else [])
            return subprocess.run(child, env=sanitizer_env(runtime)).returncode

    fastpath = load(args.module)
    results = []
    for seed in parse_seeds(args.seeds):
        for mode in modes:
            r = run_one(fastpath, seed, args.steps, mode, args.fanout, args.direct,
                        args.max_segs)
            results.append(r)
            if not args.json:
                chains = (f"  chains {r['chains']:>7}  chain_invalid {r['chain_invalid']:>7}"
                          if args.max_segs else "")
                print(f"seed {seed:3} {mode:<9} {r['steps']:>9} steps {r['seconds']:7.2f} s  "
                      f"crashes {r['crashes']:>6}  scans {r['scans']:>6}  "
                      f"packets {r['packets']:>8}  bad_descs {r['bad_descs']:>9}{chains}",
                      flush=True)
    total = summary(results)
    total["module"] = fastpath.__file__        # which build ran
    if args.json:
        json.dump({"summary": total, "runs": results}, sys.stdout, indent=2)
        print()
    else:
        print(json.dumps(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
