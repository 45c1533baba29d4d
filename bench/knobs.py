#!/usr/bin/env python3
"""The effect of each xdpd tuning knob, measured in the veth lab (root).

    python bench/knobs.py [--seconds 5] [--runs 3] [--mode io] [--only NAME,...]

Same lab, generator, sink and window as bench/perf.py; each variant below is
xdpd with one setting changed from the defaults, trials interleaved round
by round so that drift of the machine hits every variant alike.  Prints
delivered Mpps (median, min-max) and CPU per packet for each, relative to
the defaults.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from perf import (CountingSink, Lab, Xdpd, check_cpu_share, cleanup_stale,  # noqa: E402
                  run_trial)

from xdpd.lab.netns import hugepages_reserved  # noqa: E402

# name -> settings changed from the defaults (what `--xdpd-set` takes)
VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "batch_size=16": ["workers.batch_size=16"],
    "batch_size=256": ["workers.batch_size=256"],
    "rings rx/tx=512": ["rings.rx=512", "rings.tx=512"],
    "rings rx/tx=8192": ["rings.rx=8192", "rings.tx=8192", "rings.fill=8192",
                         "rings.completion=8192", "umem.frames_per_worker=16384"],
    "frames_per_worker=1024": ["umem.frames_per_worker=1024", "rings.fill=1024",
                               "rings.completion=1024", "rings.rx=512", "rings.tx=512"],
    "frame_size=2048": ["umem.frame_size=2048"],
    "hugepages=on": ["umem.hugepages=on"],
    "hugepages=off": ["umem.hugepages=off"],
    "idle=spin": ["workers.idle=spin"],
    "busy_poll": ["workers.busy_poll=true"],
    "tx_budget=0 (kernel's 32)": ["workers.tx_budget=0"],
    "tx_budget=1024": ["workers.tx_budget=1024"],
    "workers on the generator's CPU": ["@cpu=gen"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", default="io", choices=("io", "mac"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--flows", type=int, default=256)
    ap.add_argument("--queues", type=int, default=1)
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--fwd-cpu", type=int, default=1)
    ap.add_argument("--cpu-share", type=float, default=0, metavar="PERCENT",
                    help="cap the workers' CPU at PERCENT of one CPU, as bench/perf.py does")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args()
    check_cpu_share(ap, args.cpu_share)
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if os.geteuid() != 0:
        print("bench/knobs.py needs root", file=sys.stderr)
        return 77
    cleanup_stale()
    results: dict[str, list] = {n: [] for n in names}
    # 64 MiB of UMEM (2 workers x 16384 x 2048 at most) in 2 MiB pages, and spare
    with Lab.create(queues=args.queues) as lab, hugepages_reserved(80):
        sink = CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV])
        try:
            for run in range(args.runs):
                for name in names:
                    sets = [s for s in VARIANTS[name] if not s.startswith("@")]
                    cpu = args.gen_cpu if "@cpu=gen" in VARIANTS[name] else args.fwd_cpu
                    t = run_trial(lab, sink, Xdpd(lab, args.mode, cpu, sets), args.mode, args)
                    results[name].append(t)
                    print(f"run {run + 1}/{args.runs} {name:<32} delivered "
                          f"{t.delivered_pps / 1e6:.3f} Mpps", flush=True)
        finally:
            sink.close()
    base = statistics.median(t.delivered_pps for t in results.get("defaults", [])) \
        if "defaults" in results else None
    print(f"\nxdpd knobs, {args.mode} mode, {args.queues} queue(s), {args.size} B, "
          f"{args.runs} x {args.seconds:g} s; generator CPU {args.gen_cpu}, workers CPU "
          f"{args.fwd_cpu} unless stated")
    head = (f"{'variant':<34}{'delivered Mpps':>15}{'min-max':>16}{'vs defaults':>12}"
            f"{'user ns/p':>11}{'sys ns/p':>10}")
    print(head)
    print("-" * len(head))
    for name in names:
        rows = results[name]
        d = [t.delivered_pps for t in rows]
        med = statistics.median(d)
        rel = f"{med / base:.2f}" if base else "-"
        print(f"{name:<34}{med / 1e6:>15.3f}{f'{min(d) / 1e6:.3f}-{max(d) / 1e6:.3f}':>16}"
              f"{rel:>12}{statistics.median(t.user_ns for t in rows):>11.1f}"
              f"{statistics.median(t.sys_ns for t in rows):>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
