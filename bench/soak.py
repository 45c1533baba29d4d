#!/usr/bin/env python3
"""Soak: xdpd in the veth lab at the highest rate, for a long time (root).

    make soak                                   # 30 minutes
    python bench/soak.py [--minutes 30] [--every 30] [--mode mac] [--queues 1]

The lab and the generator are bench/perf.py's: live frames from gen0 as fast
as the generator's CPU makes them (far more than a forwarder takes), xdpd's
workers on --fwd-cpu, a counting XDP program on sink0. Every --every
seconds it samples:

  memory    rss and uss (unique set: pages no other process maps) of the
            supervisor and of each worker; rss includes the pages of the
            shared UMEM a process touched, so it rises in the first
            seconds as frames cycle through, uss does not
  frames    UMEM frames by location, and whether they add up to capacity
  drops     xdpd's drops by reason; the kernel's, from each socket's
            XDP_STATISTICS (rx_dropped, rx_ring_full, fill ring empty): at
            this rate the kernel drops what the workers cannot take, which
            is expected and not an error
  restarts  worker restarts, workers up

and prints a table over time, then a verdict: rss and uss growth per process
from the first to the last sample, whether the frames always added up, and
errors (xdpd gone, restarts, drops by xdpd, WARNING/ERROR lines in its log,
failed scrapes). Exit status 0 if the verdict is steady, 1 if not.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xdpd.lab.netns import Lab, cleanup_stale  # noqa: E402
from xdpd.lab.xdp import CountingSink  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf import MODES, Generator, Xdpd  # noqa: E402

MiB = 2**20
LOCATIONS = ("free", "rx", "tx", "handoff")
XSK = {"rx_dropped": "xdpd_xsk_rx_dropped_packets_total",
       "ring_full": "xdpd_xsk_rx_ring_full_total",
       "fill_empty": "xdpd_xsk_fill_ring_empty_total"}


def memory(pid: int) -> tuple[int, int] | None:
    """(rss, uss) in bytes, None if the process is gone."""
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return None
    return info.rss, info.uss


def sample(t: float, fwd: Xdpd, sink: CountingSink, gen: Generator) -> dict:
    d = fwd.daemon
    s = {"t": t, "errors": []}
    try:
        m = d.scrape()
    except (OSError, TimeoutError) as e:
        s["errors"].append(f"scrape failed: {e}")
        m = None
    counted = sink.read()
    s["delivered"] = counted["packets"]
    s["mac_ok"] = counted["dst_mac_ok"]
    s["offered"] = gen.progress[-1][1] if gen.progress else 0
    s["memory"] = {}
    if d.proc is not None and d.proc.poll() is None:
        s["memory"]["supervisor"] = memory(d.proc.pid)
    else:
        s["errors"].append("xdpd is not running")
    for name, pid in sorted(d.worker_pids().items()):
        s["memory"][name] = memory(pid)
    try:
        for w in d.status()["workers"]:
            if w["standby_pid"]:                # waiting to take over w
                s["memory"][f"{w['name']} standby"] = memory(w["standby_pid"])
    except (OSError, ValueError) as e:
        s["errors"].append(f"status failed: {e}")
    if m is not None:
        loc = {k[0]: v for k, v in m.by("xdpd_umem_frames", "location").items()}
        s["frames"] = {k: int(loc.get(k, 0)) for k in LOCATIONS}
        s["capacity"] = int(m.value("xdpd_umem_frames_capacity"))
        s["drops"] = {k[0]: int(v) for k, v in
                      m.by("xdpd_dropped_packets_total", "reason").items()}
        s["kernel"] = {k: int(m.value(name)) for k, name in XSK.items()}
        s["restarts"] = int(m.value("xdpd_worker_restarts_total"))
        s["up"] = int(m.value("xdpd_worker_up"))
        s["workers"] = len({lab_["netdev"] + "/q" + lab_["queue"]
                            for lab_, _ in m.samples.get("xdpd_worker_up", [])})
    return s


def log_problems(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))]


# --- report ---------------------------------------------------------------------

def _mem(v) -> str:
    return "gone" if v is None else f"{v[0] / MiB:5.1f}/{v[1] / MiB:4.1f}"


def print_table(samples: list[dict], procs: list[str]) -> None:
    head = (f"{'t s':>6} {'offered':>8} {'deliv.':>7} "
            + " ".join(f"{p[:15]:>15}" for p in procs)
            + f" {'frames free/rx/tx/handoff':>27} {'sum ok':>6} {'xdpd drops':>10}"
            f" {'kernel rx_dropped/ring_full/fill_empty':>38} {'restarts':>8}")
    print("\n" + " " * 23 + "rss/uss MiB per process; offered and delivered Mpps over "
          "the interval; drops cumulative")
    print(head)
    print("-" * len(head))
    prev = None
    for s in samples:
        if prev is None:
            rate_o = rate_d = "-"
        else:
            dt = s["t"] - prev["t"]
            rate_o = f"{(s['offered'] - prev['offered']) / dt / 1e6:.3f}"
            rate_d = f"{(s['delivered'] - prev['delivered']) / dt / 1e6:.3f}"
        mems = " ".join(f"{_mem(s['memory'].get(p)):>15}" for p in procs)
        if "frames" in s:
            f = s["frames"]
            frames = "/".join(str(f[k]) for k in LOCATIONS)
            ok = "yes" if sum(f.values()) == s["capacity"] else "NO"
            drops = sum(s["drops"].values())
            k = s["kernel"]
            kernel = "/".join(f"{k[n] / 1e6:.2f}M" for n in XSK)
            restarts = str(s["restarts"])
        else:
            frames = ok = drops = kernel = restarts = "?"
        print(f"{s['t']:6.0f} {rate_o:>8} {rate_d:>7} {mems} {frames:>27} {ok:>6} "
              f"{drops:>10} {kernel:>38} {restarts:>8}")
        prev = s


def verdict(samples: list[dict], procs: list[str], log: str, args) -> bool:
    first, last = samples[0], samples[-1]
    minutes = (last["t"] - first["t"]) / 60
    print(f"\nverdict over {minutes:.1f} min, {len(samples)} samples "
          f"(growth from the first to the last sample):")
    problems = []
    for p in procs:
        a, b = first["memory"].get(p), last["memory"].get(p)
        if a is None or b is None:
            problems.append(f"{p}: gone")
            print(f"  {p:<12} gone")
            continue
        rss, uss = (b[0] - a[0]) / MiB, (b[1] - a[1]) / MiB
        print(f"  {p:<12} rss {a[0] / MiB:6.1f} -> {b[0] / MiB:6.1f} MiB ({rss:+.1f})   "
              f"uss {a[1] / MiB:6.1f} -> {b[1] / MiB:6.1f} MiB ({uss:+.1f})")
        if uss > args.max_growth_mib:
            problems.append(f"{p}: uss grew {uss:+.1f} MiB")
    full = [s for s in samples if "frames" in s]
    adding = sum(sum(s["frames"].values()) == s["capacity"] for s in full)
    print(f"  frames: added up to capacity ({full[-1]['capacity'] if full else '?'}) "
          f"in {adding} of {len(samples)} samples")
    if adding != len(samples):
        problems.append(f"frames did not add up in {len(samples) - adding} samples")
    errors = [e for s in samples for e in s["errors"]]
    if last.get("restarts"):
        errors.append(f"{last['restarts']} worker restarts")
    if last.get("up") != last.get("workers"):
        errors.append(f"{last.get('up')} of {last.get('workers')} workers up")
    drops = {r: n for r, n in last.get("drops", {}).items() if n}
    if drops:
        errors.append(f"xdpd dropped {drops}")
    lines = log_problems(log)
    if lines:
        errors.append(f"{len(lines)} warnings/errors in xdpd's log, first: {lines[0]}")
    print(f"  errors: {'; '.join(errors) if errors else 'none'}")
    problems += errors
    k = last.get("kernel", {})
    dt = last["t"] - first["t"]
    print(f"  delivered {(last['delivered'] - first['delivered']) / dt / 1e6:.3f} Mpps "
          f"of {(last['offered'] - first['offered']) / dt / 1e6:.3f} offered; the kernel "
          f"dropped in all {k.get('rx_dropped', 0)} (rx_dropped) + {k.get('ring_full', 0)} "
          f"(RX ring full) with {k.get('fill_empty', 0)} FILL-ring-empty events; "
          f"{last['mac_ok'] / max(last['delivered'], 1) * 100:.0f}% with the sink's MAC")
    ok = not problems
    print("VERDICT: " + ("steady" if ok else "NOT steady: " + "; ".join(problems)))
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=30.0, metavar="SECONDS",
                    help="sample interval")
    ap.add_argument("--warmup", type=float, default=5.0, metavar="SECONDS",
                    help="traffic before the first sample")
    ap.add_argument("--mode", choices=MODES, default="mac",
                    help="mac: rewrite both MACs (checked at the sink); io: forward as is")
    ap.add_argument("--size", type=int, default=64, help="frame size in bytes, without FCS")
    ap.add_argument("--flows", type=int, default=256)
    ap.add_argument("--queues", type=int, default=1)
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--fwd-cpu", type=int, default=1)
    # the supervisor's Python heap moves by about 1 MiB between samples
    ap.add_argument("--max-growth-mib", type=float, default=2.0,
                    help="uss growth per process, first to last sample, still called steady")
    ap.add_argument("--json", metavar="FILE", help="also write the samples here")
    args = ap.parse_args()
    if args.every <= 0 or args.minutes <= 0:
        ap.error("--minutes and --every must be > 0")
    if os.geteuid() != 0:
        print("bench/soak.py needs root (network namespaces, XDP)", file=sys.stderr)
        return 77
    cleanup_stale()
    samples: list[dict] = []
    log = ""
    with Lab.create(queues=args.queues) as lab:
        sink = CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV])
        fwd = Xdpd(lab, args.mode, args.fwd_cpu, [])
        gen = None
        try:
            fwd.start()
            gen = Generator(lab, args.size, args.gen_cpu,
                            seconds=args.warmup + args.minutes * 60 + 60, flows=args.flows)
            t0 = time.monotonic() + args.warmup
            gen.wait_progress(t0, timeout=args.warmup + 10)
            end = t0 + args.minutes * 60
            due = t0
            while True:
                s = sample(time.monotonic() - t0, fwd, sink, gen)
                samples.append(s)
                print(f"sample {len(samples)} at {s['t']:.0f} s: delivered {s['delivered']}, "
                      f"frames {s.get('frames')}, errors {s['errors'] or 'none'}", flush=True)
                if "xdpd is not running" in s["errors"] or due >= end:
                    break
                due = min(due + args.every, end)
                # the sampling clock: wait for the next sample time
                time.sleep(max(0.0, due - time.monotonic()))
        except KeyboardInterrupt:
            print("interrupted; reporting what was sampled", file=sys.stderr)
        finally:
            if gen is not None:
                gen.stop()
            log = fwd.daemon.log()
            fwd.stop()
            sink.close()
    if len(samples) < 2:
        print("fewer than two samples: nothing to compare", file=sys.stderr)
        return 1
    procs = ["supervisor"] + sorted({p for s in samples for p in s["memory"]} - {"supervisor"})
    print(f"\nveth lab, {args.queues} queue(s), {args.size} B frames, mode {args.mode}, "
          f"generator on CPU {args.gen_cpu} (unpaced), workers on CPU {args.fwd_cpu}; kernel "
          f"{os.uname().release}, {os.cpu_count()} CPUs")
    print_table(samples, procs)
    ok = verdict(samples, procs, log, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "samples": samples}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
