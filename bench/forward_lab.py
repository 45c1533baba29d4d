#!/usr/bin/env python3
"""Forwarding throughput of xdpd in the veth lab (root).

    python bench/forward_lab.py [--seconds 5] [--runs 3] [--queues 2] [--size 64]

gen0 -> in0 [xdpd] out0 -> sink0, the project's AF_PACKET generator
offering as fast as it can.  Reports, per run and as median: offered and
delivered packets per second, loss, and the CPU time xdpd's workers spent
per delivered packet (user and system, from the kernel's per-process
accounting).  Numbers, not assertions: this is not part of `make test`.

The AF_PACKET generator tops out well below what the forwarder can take,
so this measures xdpd at the generator's rate; the CPU cost per packet is
the figure to compare between versions.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xdpd.lab import Lab, cleanup_stale  # noqa: E402
from xdpd.labdaemon import LabDaemon, forward_config  # noqa: E402
from xdpd.traffic import SinkProcess, send_in_ns  # noqa: E402


def worker_pids(lab, daemon) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", lab.dut_ns], capture_output=True,
                         text=True).stdout.split()
    pids = []
    for p in map(int, out):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().startswith(b"xdpd: worker "):
                    pids.append(p)
        except OSError:
            pass
    return pids


def cpu_times(pids) -> tuple[float, float]:
    user = system = 0.0
    for p in pids:
        try:
            t = psutil.Process(p).cpu_times()
        except psutil.Error:
            continue
        user += t.user
        system += t.system
    return user, system


def one_run(lab, daemon, seconds: float, size: int, tag: int) -> dict:
    pids = worker_pids(lab, daemon)
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=tag, idle=1.0,
                     timeout=seconds + 60) as sink:
        u0, s0 = cpu_times(pids)
        sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                          duration=seconds, size=size, flows=64, tag=tag)
        got = sink.result(timeout=60)
        u1, s1 = cpu_times(pids)
    delivered = got["received"]
    return {
        "offered_pps": sent["sent"] / sent["seconds"],
        "delivered_pps": delivered / sent["seconds"],
        "lost": sent["sent"] - delivered,
        "user_ns_per_pkt": (u1 - u0) * 1e9 / max(delivered, 1),
        "sys_ns_per_pkt": (s1 - s0) * 1e9 / max(delivered, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--queues", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 77
    cleanup_stale()
    rows = []
    with Lab.create(queues=args.queues) as lab, \
            LabDaemon(lab, forward_config(lab)) as daemon:
        daemon.start()
        one_run(lab, daemon, 1.0, args.size, tag=99)          # warm-up
        for i in range(args.runs):
            rows.append(one_run(lab, daemon, args.seconds, args.size, tag=100 + i))
    cols = ("offered_pps", "delivered_pps", "lost", "user_ns_per_pkt", "sys_ns_per_pkt")
    print(f"xdpd forwarding, veth lab, {args.queues} queues, {args.size} B frames, "
          f"{args.runs} x {args.seconds:.0f} s, {os.cpu_count()} CPUs")
    print(f"{'run':<8}" + "".join(f"{c:>18}" for c in cols))
    for i, r in enumerate(rows):
        print(f"{i + 1:<8}" + "".join(f"{r[c]:>18,.0f}" for c in cols))
    med = {c: statistics.median(r[c] for r in rows) for c in cols}
    print(f"{'median':<8}" + "".join(f"{med[c]:>18,.0f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
