#!/usr/bin/env python3
"""Real clients through each forwarder, side by side in one veth lab (root).

    make bench-clients
    python bench/clients.py [--runs 3] [--seconds 4] [--mtu 1500]
                            [--peers bridge,bridge-polled,kernel,xsk_fwd,xdpd,
                                     xdpd-nowake,xdpd-handoff,xdpd-spread,
                                     xdpd-sleep,xdpd-spin]
                            [--json FILE]

    gen0 --> in0 [forwarder] out0 --> sink0
    (gen ns)     (dut ns)             (sink ns)

gen0 and sink0 are addressed (10.202.0.1 and .2/24) and keep their default
offloads (TX checksum on: their TCP and UDP carry partial checksums).
Forwarders, both directions, alternated run by run on the same lab:
  bridge     a Linux bridge over in0 and out0 (the kernel's own L2 path)
  bridge-polled the same with every CPU's wake-up latency capped at 0 while
             it runs (idle CPUs poll): what xdpd does to its busy workers'
             CPUs, given to the bridge too
  kernel     XDP redirect in0 <-> out0 through a DEVMAP (no user space)
  xsk_fwd    bench/xsk_fwd.c, a minimal C AF_XDP forwarder (built by make
             bench-clients), one spinning thread on CPU 1
  xdpd       `xdpd run` with its defaults (workers.idle: adaptive, direct_tx)
  xdpd-nowake the same with workers.cpu_wake_latency_us: null and
             sched_slice_us: null (CPUs' idle states and the workers' slice
             left to the kernel, as before fast wake-ups)
  xdpd-handoff the same with workers.direct_tx: false (each packet handed to
             the egress queue's worker over a fwd ring, as before direct
             sockets)
  xdpd-spread the same with workers.placement: spread (the lab's two
             workers on two CPUs, not both on the first)
  xdpd-sleep the same with workers.idle: sleep (sleep as soon as idle)
  xdpd-spin  the same with workers.idle: spin (never sleep)
Per forwarder and run:
  tcp        iperf3 TCP, gen -> sink, Gbit/s received; again with both peers'
             TX offloads off (MTU-sized segments for everyone: the fair one),
             and so both ways at once (--bidir: the sum of the two received)
  udp        iperf3 UDP, 64 B payloads at full speed, packets/s received
  udp full   iperf3 UDP, datagrams of the whole MTU at full speed, Gbit/s
             received (at --mtu 9000: 6-buffer chains through xdpd)
  rtt        ping RTT p50 and p99 at 50 pps, 1 kpps and 10 kpps sent; meanwhile
             the workers' CPU time and each CPU's idle time spent polling
--mtu sets every link of the lab (both peers, in0, out0): at 9000 a
full-size packet takes 6 buffers of 2048 B, which xdpd carries as one
descriptor chain (umem.multi_buffer: auto) and xsk_fwd (one buffer per
packet) cannot.
The table gives the median over runs; each run's numbers are in --json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf import (XSK_FWD, Bridge, OneProcess, libxdp_pins_removed, set_mtu,  # noqa: E402
                  why_failed)

from xdpd.kernel import cpuidle  # noqa: E402
from xdpd.lab.daemon import LabDaemon  # noqa: E402
from xdpd.lab.netns import Lab, LabError, cleanup_stale  # noqa: E402
from xdpd.lab.xdp import DevmapForwarder  # noqa: E402

GEN_IP, SINK_IP = "10.202.0.1", "10.202.0.2"
PEERS = ("bridge", "bridge-polled", "kernel", "xsk_fwd", "xdpd", "xdpd-nowake", "xdpd-handoff",
         "xdpd-by_queue", "xdpd-spread", "xdpd-unshared", "xdpd-sleep", "xdpd-spin")
PING_RATES = ((50, 100), (1000, 1000), (10000, 3000))   # (packets/s, count)
METRICS_PORT = 9478


class BenchError(RuntimeError):
    pass


class Kernel:
    name = "kernel"

    def __init__(self, lab: Lab):
        self.lab = lab
        self.fwds: list[DevmapForwarder] = []

    def start(self) -> None:
        lab = self.lab
        self.fwds = [DevmapForwarder(lab.dut_ns, lab.IN_DEV, lab.OUT_DEV),
                     DevmapForwarder(lab.dut_ns, lab.OUT_DEV, lab.IN_DEV)]

    def stop(self) -> None:
        for f in self.fwds:
            f.close()
        self.fwds = []


class PolledBridge(Bridge):
    """The bridge with every CPU's wake-up latency capped at 0 while it
    runs (what xdpd does to its busy workers' CPUs): how much of xdpd's
    latency is that setting alone."""
    name = "bridge-polled"

    def start(self) -> None:
        self.found = {cpu: cpuidle.read_limit(cpu) for cpu in sorted(os.sched_getaffinity(0))}
        for cpu in self.found:
            cpuidle.write_limit(cpu, 0)
        super().start()

    def stop(self) -> None:
        super().stop()
        for cpu, us in getattr(self, "found", {}).items():
            cpuidle.write_limit(cpu, us)


class XskFwd(OneProcess):
    """bench/xsk_fwd.c in io mode: in0 <-> out0 as they are."""
    name = "xsk_fwd"

    def __init__(self, lab: Lab):
        self.lab = lab
        self.cmd = [XSK_FWD, lab.IN_DEV, lab.OUT_DEV, "--cpu", "1", "--mode", "io"]

    def start(self) -> None:
        self.proc = self.lab.popen(self.lab.dut_ns, self.cmd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        if '"ready"' not in self.proc.stdout.readline():
            self.proc.wait(30)
            raise BenchError(f"xsk_fwd did not start: {self.proc.stderr.read().strip()}")


class Xdpd:
    def __init__(self, lab: Lab, variant: str):
        self.lab = lab
        self.name = "xdpd" if variant == "" else f"xdpd-{variant}"
        workers = {"": "", "handoff": "  direct_tx: false\n",
                   "by_queue": "  placement: by_queue\n", "spread": "  placement: spread\n",
                   "unshared": "  share_process: false\n",
                   "nowake": "  cpu_wake_latency_us: null\n  sched_slice_us: null\n"
                   }.get(variant, f"  idle: {variant}\n")
        self.config = (f"interfaces:\n  - name: {lab.IN_DEV}\n  - name: {lab.OUT_DEV}\n"
                       f"forward:\n  - from: {lab.IN_DEV}\n    to: {lab.OUT_DEV}\n"
                       f"  - from: {lab.OUT_DEV}\n    to: {lab.IN_DEV}\n"
                       f'metrics:\n  listen: "127.0.0.1:{METRICS_PORT}"\n'
                       + (f"workers:\n{workers}" if workers else ""))
        self.daemon: LabDaemon | None = None

    def start(self) -> None:
        self.daemon = LabDaemon(self.lab, self.config, port=METRICS_PORT)
        self.daemon.start()

    def pids(self) -> list[int]:
        return list(self.daemon.worker_pids().values()) if self.daemon else []

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


def make(peer: str, lab: Lab):
    if peer == "bridge":
        return Bridge(lab)
    if peer == "bridge-polled":
        return PolledBridge(lab)
    if peer == "kernel":
        return Kernel(lab)
    if peer == "xsk_fwd":
        return XskFwd(lab)
    if peer.startswith("xdpd"):
        return Xdpd(lab, peer.partition("-")[2])
    raise BenchError(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")


def address(lab: Lab) -> None:
    for ns, dev, ip in ((lab.gen_ns, lab.GEN_DEV, GEN_IP), (lab.sink_ns, lab.SINK_DEV, SINK_IP)):
        lab.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)


def txoff(lab: Lab, off: bool) -> None:
    for ns, dev in ((lab.gen_ns, lab.GEN_DEV), (lab.sink_ns, lab.SINK_DEV)):
        lab.run(ns, "ethtool", "-K", dev, "tx", "off" if off else "on")


def listening(lab: Lab, port: int) -> bool:
    return f"{SINK_IP}:{port} " in lab.run(lab.sink_ns, "ss", "-ltnH").stdout


def iperf3(lab: Lab, *args: str, seconds: float) -> dict:
    server = lab.popen(lab.sink_ns, ["iperf3", "-s", "-1", "-B", SINK_IP],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not listening(lab, 5201):
            if time.monotonic() > deadline:
                raise BenchError("iperf3 server did not listen")
            time.sleep(0.02)
        try:
            r = lab.run(lab.gen_ns, "iperf3", "-c", SINK_IP, "-J", "--connect-timeout", "5000",
                        "-t", f"{seconds:g}", *args, check=False, timeout=seconds + 60)
        except LabError as e:
            raise BenchError(f"iperf3 {' '.join(args)}: {e}") from None
        report = json.loads(r.stdout or "{}")
        if r.returncode or "error" in report:
            raise BenchError(f"iperf3 {' '.join(args)}: {report.get('error', r.stderr)}")
        return report
    finally:
        server.kill()
        server.wait(10)


def ping_rtts(lab: Lab, rate: int, count: int) -> tuple[list[float], int]:
    """Per-reply RTTs in ms, and how many replies were missing."""
    r = lab.run(lab.gen_ns, "ping", "-n", "-c", str(count), "-i", f"{1 / rate:.4f}",
                "-W", "1", SINK_IP, check=False, timeout=count / rate + 30)
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", r.stdout)]
    return rtts, count - len(rtts)


def cpus_polled_us() -> list[int]:
    """Per CPU, the idle time spent polling so far (0 without cpuidle)."""
    return [cpuidle.poll_time_us(cpu) or 0 for cpu in sorted(os.sched_getaffinity(0))]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def one_run(lab: Lab, fwd, seconds: float, mtu: int) -> dict:
    fwd.start()
    try:
        # the path is up: the first replies (ARP, MAC learning) come back
        deadline = time.monotonic() + 20
        while ping_rtts(lab, 20, 3)[1]:
            if time.monotonic() > deadline:
                raise BenchError(f"{fwd.name}: no ping reply through it")
        out: dict = {"failed": {}}
        # the round trips first, on a forwarder that has carried nothing
        # but the path's first pings: the state an exchange meets on a path
        # that is not also moving bulk (adaptive placement spreads the
        # workers under the bulk rows below, and gathers them 5 s after)
        for rate, count in PING_RATES:
            procs = [psutil.Process(p) for p in getattr(fwd, "pids", list)()]
            cpu0 = [sum(p.cpu_times()[:2]) for p in procs]
            polled0 = cpus_polled_us()
            t0 = time.monotonic()
            rtts, missing = ping_rtts(lab, rate, count)
            elapsed = time.monotonic() - t0
            out[f"rtt_{rate}"] = {"p50": pct(rtts, 0.5), "p99": pct(rtts, 0.99),
                                  "missing": missing,
                                  # each CPU's idle time spent polling, % of the ping's
                                  "cpu_polled_pct": [
                                      round((b - a) / (elapsed * 1e4), 1)
                                      for a, b in zip(polled0, cpus_polled_us())]}
            if procs:                   # the workers' CPU meanwhile, % of one CPU each
                out[f"rtt_{rate}"]["worker_cpu_pct"] = [
                    round(100 * (sum(p.cpu_times()[:2]) - c) / elapsed, 1)
                    for p, c in zip(procs, cpu0)]
        try:
            tcp = iperf3(lab, seconds=seconds)
            out["tcp_gbps"] = tcp["end"]["sum_received"]["bits_per_second"] / 1e9
        except BenchError as e:         # e.g. partial checksums dropped at the sink
            out["tcp_gbps"] = None
            out["failed"]["tcp"] = str(e)
        # the fair comparison for TCP: both peers' TX offloads off, so that
        # every forwarder carries MTU-sized segments (xdpd cannot take the
        # 64 KiB GSO ones a bridge passes along)
        txoff(lab, True)
        try:
            tcp = iperf3(lab, seconds=seconds)
            out["tcp_txoff_gbps"] = tcp["end"]["sum_received"]["bits_per_second"] / 1e9
        except BenchError as e:
            out["tcp_txoff_gbps"] = None
            out["failed"]["tcp tx off"] = str(e)
        try:                            # both directions at once: the two received
            tcp = iperf3(lab, "--bidir", seconds=seconds)["end"]
            out["tcp_bidir_gbps"] = (tcp["sum_received"]["bits_per_second"]
                                     + tcp["sum_received_bidir_reverse"]["bits_per_second"]) / 1e9
        except (BenchError, KeyError) as e:
            out["tcp_bidir_gbps"] = None
            out["failed"]["tcp bidir tx off"] = str(e)
        finally:
            txoff(lab, False)
        try:
            udp = iperf3(lab, "-u", "-b", "0", "-l", "64", seconds=seconds)
            s = udp["end"]["sum"]
            out["udp_pps"] = (s["packets"] - s["lost_packets"]) / s["seconds"]
            out["udp_lost"] = s["lost_packets"]
        except BenchError as e:
            out["udp_pps"] = None
            out["failed"]["udp"] = str(e)
        try:
            udp = iperf3(lab, "-u", "-b", "0", "-l", str(mtu - 28), seconds=seconds)
            s = udp["end"]["sum"]
            got = (s["packets"] - s["lost_packets"]) / s["seconds"]
            out["udp_full_gbps"] = got * (mtu - 28) * 8 / 1e9 if got else None
            if not got:
                out["failed"]["udp full"] = f"nothing received of {s['packets']}"
        except BenchError as e:
            out["udp_full_gbps"] = None
            out["failed"]["udp full"] = str(e)
        if procs := [psutil.Process(p) for p in getattr(fwd, "pids", list)()]:
            cpu0 = [sum(p.cpu_times()[:2]) for p in procs]
            t0 = time.monotonic()
            time.sleep(2.0)             # a measurement window of no traffic
            out["idle_worker_cpu_pct"] = [
                round(100 * (sum(p.cpu_times()[:2]) - c) / (time.monotonic() - t0), 2)
                for p, c in zip(procs, cpu0)]
        return out
    finally:
        fwd.stop()


def table(results: dict[str, list[dict]]) -> list[str]:
    def med(peer: str, get) -> float | None:
        values = [get(r) for r in results[peer]]
        return None if None in values else statistics.median(values)

    def num(v: float | None, scale: float, width: int, digits: int) -> str:
        return f"{'fails':>{width}}" if v is None else f"{v / scale:>{width}.{digits}f}"
    head = (f"{'forwarder':<14} {'TCP Gbit/s':>10} {'tx off':>7} {'bidir':>6} {'UDP kpps':>9} "
            f"{'UDP full Gbit/s':>15}"
            + "".join(f" {'RTT ' + _rate(r) + ' p50/p99 ms':>22}" for r, _ in PING_RATES))
    lines = [head, "-" * len(head)]
    for peer in results:
        row = (f"{peer:<14} {num(med(peer, lambda r: r['tcp_gbps']), 1, 10, 2)} "
               f"{num(med(peer, lambda r: r['tcp_txoff_gbps']), 1, 7, 2)} "
               f"{num(med(peer, lambda r: r['tcp_bidir_gbps']), 1, 6, 2)} "
               f"{num(med(peer, lambda r: r['udp_pps']), 1e3, 9, 1)} "
               f"{num(med(peer, lambda r: r['udp_full_gbps']), 1, 15, 2)}")
        for rate, _ in PING_RATES:
            p50 = med(peer, lambda r: r[f"rtt_{rate}"]["p50"])
            p99 = med(peer, lambda r: r[f"rtt_{rate}"]["p99"])
            row += f" {f'{p50:.3f} / {p99:.3f}':>22}"
        lines.append(row)
    if "bridge" in results:
        for peer in results:
            if peer == "bridge":
                continue
            parts = []
            for key, label in (("tcp_gbps", "TCP"), ("tcp_txoff_gbps", "TCP tx off"),
                               ("tcp_bidir_gbps", "bidir")):
                got = med(peer, lambda r: r[key])
                base = med("bridge", lambda r: r[key])
                parts.append(f"{label} {got / base:.2f}x" if got is not None and base
                             else f"{label} fails")
            for rate, _ in PING_RATES:
                b50 = med("bridge", lambda r: r[f"rtt_{rate}"]["p50"])
                b99 = med("bridge", lambda r: r[f"rtt_{rate}"]["p99"])
                p50 = med(peer, lambda r: r[f"rtt_{rate}"]["p50"])
                p99 = med(peer, lambda r: r[f"rtt_{rate}"]["p99"])
                parts.append(f"RTT {_rate(rate)} p50 {p50 / b50:.1f}x p99 {p99 / b99:.1f}x")
            lines.append(f"{peer}/bridge: " + ", ".join(parts))
    return lines


def _rate(pps: int) -> str:
    return f"{pps // 1000}k" if pps >= 1000 else str(pps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--mtu", type=int, default=1500, help="of every link (1280..9000)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not 1280 <= args.mtu <= 9000:
        ap.error(f"--mtu {args.mtu}: choose 1280..9000")
    if os.geteuid() != 0:
        print("bench/clients.py needs root (network namespaces, XDP)", file=sys.stderr)
        return 2
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"--peers: {', '.join(unknown)}: choose from {', '.join(PEERS)}")
    if "xsk_fwd" in peers and not os.access(XSK_FWD, os.X_OK):
        print(f"{XSK_FWD} not built: make bench-clients builds it (needs libxdp-dev), or "
              "leave it out with --peers", file=sys.stderr)
        return 69
    cleanup_stale()
    results: dict[str, list[dict]] = {p: [] for p in peers}
    cannot: dict[str, str] = {}         # peer -> why it could not run
    try:
        with libxdp_pins_removed(), Lab.create(queues=1) as lab:
            address(lab)
            set_mtu(lab, args.mtu)
            for run in range(args.runs):
                for peer in peers:
                    try:
                        r = one_run(lab, make(peer, lab), args.seconds, args.mtu)
                    except BenchError as e:     # e.g. xsk_fwd at MTU 9000
                        cannot[peer] = why_failed(str(e))
                        print(f"run {run + 1}/{args.runs} {peer:<14} cannot: {cannot[peer]}",
                              flush=True)
                        continue
                    results[peer].append(r)
                    tcp = "fails" if r["tcp_gbps"] is None else f"{r['tcp_gbps']:.2f} Gbit/s"
                    if r["tcp_txoff_gbps"] is not None:
                        tcp += f" ({r['tcp_txoff_gbps']:.2f} with tx off"
                        if r["tcp_bidir_gbps"] is not None:
                            tcp += f", {r['tcp_bidir_gbps']:.2f} both ways at once"
                        tcp += ")"
                    udp = "fails" if r["udp_pps"] is None else f"{r['udp_pps'] / 1e3:.1f} kpps"
                    print(f"run {run + 1}/{args.runs} {peer:<14} TCP {tcp}, UDP {udp}, RTT p50 "
                          + ", ".join(f"{_rate(k)} {r[f'rtt_{k}']['p50']:.3f} ms"
                                      for k, _ in PING_RATES), flush=True)
                    print("  CPUs' idle time polling %: "
                          + ", ".join(f"{_rate(k)} {r[f'rtt_{k}']['cpu_polled_pct']}"
                                      for k, _ in PING_RATES), flush=True)
                    if "idle_worker_cpu_pct" in r:
                        print(f"  workers' CPU %: idle {r['idle_worker_cpu_pct']}, during ping "
                              + ", ".join(f"{_rate(k)} {r[f'rtt_{k}']['worker_cpu_pct']}"
                                          for k, _ in PING_RATES), flush=True)
                    for what, why in r["failed"].items():
                        print(f"  {what} through {peer}: {why}", flush=True)
    except BenchError as e:
        print(f"bench/clients.py: {e}", file=sys.stderr)
        return 1
    print()
    print(f"veth lab, 1 queue, default offloads on the peers; {args.runs} runs x "
          f"{args.seconds:g} s per iperf3; kernel {os.uname().release}, {os.cpu_count()} CPUs")
    print("\n".join(table({p: r for p, r in results.items() if r})))
    for peer, why in cannot.items():
        if not results[peer]:
            print(f"{peer:<14} cannot: {why}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
