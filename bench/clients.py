#!/usr/bin/env python3
"""Real clients through each forwarder, side by side in one veth lab (root).

    make bench-clients
    python bench/clients.py [--runs 3] [--seconds 4] [--peers bridge,kernel,xdpd,xdpd-spin]
                            [--json FILE]

    gen0 --> in0 [forwarder] out0 --> sink0
    (gen ns)     (dut ns)             (sink ns)

gen0 and sink0 are addressed (10.202.0.1 and .2/24) and keep their default
offloads (TX checksum on: their TCP and UDP carry partial checksums).
Forwarders, both directions, alternated run by run on the same lab:
  bridge     a Linux bridge over in0 and out0 (the kernel's own L2 path)
  kernel     XDP redirect in0 <-> out0 through a DEVMAP (no user space)
  xdpd       `xdpd run` with its defaults (workers sleep when idle)
  xdpd-spin  the same with workers.idle: spin
Per forwarder and run:
  tcp        iperf3 TCP, gen -> sink, Gbit/s received
  udp        iperf3 UDP, 64 B payloads at full speed, packets/s received
  rtt        ping RTT p50 and p99 at 50 pps, 1 kpps and 10 kpps sent
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xdpd.lab import Lab, cleanup_stale  # noqa: E402
from xdpd.labdaemon import LabDaemon  # noqa: E402
from xdpd.labxdp import DevmapForwarder  # noqa: E402

GEN_IP, SINK_IP = "10.202.0.1", "10.202.0.2"
PEERS = ("bridge", "kernel", "xdpd", "xdpd-spin")
PING_RATES = ((50, 100), (1000, 1000), (10000, 3000))   # (packets/s, count)
METRICS_PORT = 9478


class BenchError(RuntimeError):
    pass


class Bridge:
    name = "bridge"

    def __init__(self, lab: Lab):
        self.lab = lab

    def start(self) -> None:
        ns = self.lab.dut_ns
        self.lab.run(ns, "ip", "link", "add", "br0", "type", "bridge")
        for dev in (self.lab.IN_DEV, self.lab.OUT_DEV):
            self.lab.run(ns, "ip", "link", "set", dev, "master", "br0")
        self.lab.run(ns, "ip", "link", "set", "br0", "up")

    def stop(self) -> None:
        ns = self.lab.dut_ns
        for dev in (self.lab.IN_DEV, self.lab.OUT_DEV):
            self.lab.run(ns, "ip", "link", "set", dev, "nomaster", check=False)
        self.lab.run(ns, "ip", "link", "del", "br0", check=False)


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


class Xdpd:
    def __init__(self, lab: Lab, idle: str):
        self.lab = lab
        self.name = "xdpd" if idle == "sleep" else f"xdpd-{idle}"
        self.config = (f"interfaces:\n  - name: {lab.IN_DEV}\n  - name: {lab.OUT_DEV}\n"
                       f"forward:\n  - from: {lab.IN_DEV}\n    to: {lab.OUT_DEV}\n"
                       f"  - from: {lab.OUT_DEV}\n    to: {lab.IN_DEV}\n"
                       f'metrics:\n  listen: "127.0.0.1:{METRICS_PORT}"\n'
                       + (f"workers:\n  idle: {idle}\n" if idle != "sleep" else ""))
        self.daemon: LabDaemon | None = None

    def start(self) -> None:
        self.daemon = LabDaemon(self.lab, self.config, port=METRICS_PORT)
        self.daemon.start()

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None


def make(peer: str, lab: Lab):
    if peer == "bridge":
        return Bridge(lab)
    if peer == "kernel":
        return Kernel(lab)
    if peer.startswith("xdpd"):
        return Xdpd(lab, peer.partition("-")[2] or "sleep")
    raise BenchError(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")


def address(lab: Lab) -> None:
    for ns, dev, ip in ((lab.gen_ns, lab.GEN_DEV, GEN_IP), (lab.sink_ns, lab.SINK_DEV, SINK_IP)):
        lab.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)


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
        r = lab.run(lab.gen_ns, "iperf3", "-c", SINK_IP, "-J", "-t", str(seconds), *args,
                    check=False, timeout=seconds + 60)
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


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def one_run(lab: Lab, fwd, seconds: float) -> dict:
    fwd.start()
    try:
        # the path is up: the first replies (ARP, MAC learning) come back
        deadline = time.monotonic() + 20
        while ping_rtts(lab, 20, 3)[1]:
            if time.monotonic() > deadline:
                raise BenchError(f"{fwd.name}: no ping reply through it")
        out: dict = {}
        tcp = iperf3(lab, seconds=seconds)
        out["tcp_gbps"] = tcp["end"]["sum_received"]["bits_per_second"] / 1e9
        udp = iperf3(lab, "-u", "-b", "0", "-l", "64", seconds=seconds)
        s = udp["end"]["sum"]
        out["udp_pps"] = (s["packets"] - s["lost_packets"]) / s["seconds"]
        out["udp_lost"] = s["lost_packets"]
        for rate, count in PING_RATES:
            rtts, missing = ping_rtts(lab, rate, count)
            out[f"rtt_{rate}"] = {"p50": pct(rtts, 0.5), "p99": pct(rtts, 0.99),
                                  "missing": missing}
        return out
    finally:
        fwd.stop()


def table(results: dict[str, list[dict]]) -> list[str]:
    def med(peer: str, get) -> float:
        return statistics.median(get(r) for r in results[peer])
    head = (f"{'forwarder':<10} {'TCP Gbit/s':>10} {'UDP kpps':>9}"
            + "".join(f" {'RTT ' + _rate(r) + ' p50/p99 ms':>22}" for r, _ in PING_RATES))
    lines = [head, "-" * len(head)]
    for peer in results:
        row = (f"{peer:<10} {med(peer, lambda r: r['tcp_gbps']):>10.2f} "
               f"{med(peer, lambda r: r['udp_pps']) / 1e3:>9.1f}")
        for rate, _ in PING_RATES:
            p50 = med(peer, lambda r: r[f"rtt_{rate}"]["p50"])
            p99 = med(peer, lambda r: r[f"rtt_{rate}"]["p99"])
            row += f" {f'{p50:.3f} / {p99:.3f}':>22}"
        lines.append(row)
    if "bridge" in results:
        for peer in results:
            if peer == "bridge":
                continue
            parts = [f"TCP {med(peer, lambda r: r['tcp_gbps']) / med('bridge', lambda r: r['tcp_gbps']):.2f}x"]
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
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/clients.py needs root (network namespaces, XDP)", file=sys.stderr)
        return 2
    peers = [p for p in args.peers.split(",") if p]
    cleanup_stale()
    results: dict[str, list[dict]] = {p: [] for p in peers}
    try:
        with Lab.create(queues=1) as lab:
            address(lab)
            for run in range(args.runs):
                for peer in peers:
                    r = one_run(lab, make(peer, lab), args.seconds)
                    results[peer].append(r)
                    print(f"run {run + 1}/{args.runs} {peer:<10} TCP {r['tcp_gbps']:.2f} Gbit/s, "
                          f"UDP {r['udp_pps'] / 1e3:.1f} kpps, RTT p50 "
                          + ", ".join(f"{_rate(k)} {r[f'rtt_{k}']['p50']:.3f} ms"
                                      for k, _ in PING_RATES), flush=True)
    except BenchError as e:
        print(f"bench/clients.py: {e}", file=sys.stderr)
        return 1
    print()
    print(f"veth lab, 1 queue, default offloads on the peers; {args.runs} runs x "
          f"{args.seconds:g} s per iperf3; kernel {os.uname().release}, {os.cpu_count()} CPUs")
    print("\n".join(table(results)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
