"""`xdpd demo`: build a veth lab, run xdpd on it, push traffic, report.

    gen ns: gen0 --> in0 [xdpd] out0 --> sink0 :sink ns

Delivery is counted at sink0 by an XDP program (xdpd.labxdp.CountingSink):
exact at any rate, where a user-space capture socket would itself drop
frames once xdpd outruns it.  The integration tests check payloads byte for
byte at lower rates.

The lab's namespaces carry this process's pid, so a later run removes
what an interrupted one left (cleanup_stale), and the `with` blocks remove
everything this run made, also on Ctrl-C.
"""
from __future__ import annotations

import logging
import time

from . import exitcodes
from .lab import Lab, LabError, cleanup_stale
from .labdaemon import DaemonError, LabDaemon, forward_config
from .bpf import BpfError
from .labxdp import CountingSink
from .traffic import TrafficError, send_in_ns

log = logging.getLogger("xdpd.demo")


def _rates(before, after, seconds: float) -> list[tuple]:
    rows = []
    keys = sorted(set(after.by("xdpd_rx_packets_total", "netdev", "queue")) |
                  set(after.by("xdpd_tx_packets_total", "netdev", "queue")))
    for netdev, queue in keys:
        def delta(name, **extra):
            return (after.value(name, netdev=netdev, queue=queue, **extra) -
                    before.value(name, netdev=netdev, queue=queue, **extra))
        rows.append((f"{netdev}/q{queue}",
                     delta("xdpd_rx_packets_total") / seconds,
                     delta("xdpd_tx_packets_total") / seconds,
                     delta("xdpd_dropped_packets_total"),
                     delta("xdpd_xsk_rx_dropped_packets_total") + delta("xdpd_xsk_rx_ring_full_total")))
    return rows


def run_demo(seconds: float = 5.0, queues: int = 2) -> int:
    removed = cleanup_stale()
    if removed:
        print(f"removed a previous run's lab: {', '.join(removed)}")
    try:
        with Lab.create(queues=queues) as lab:
            print(f"lab: {lab.gen_ns}/gen0 -> {lab.dut_ns}/in0 [xdpd] "
                  f"{lab.dut_ns}/out0 -> {lab.sink_ns}/sink0, {queues} queues each")
            with LabDaemon(lab, forward_config(lab)) as daemon:
                daemon.start()
                print("xdpd is forwarding; sending for %.0f s ..." % seconds)
                with CountingSink(lab.sink_ns, lab.SINK_DEV,
                                  expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
                    before = daemon.scrape()
                    sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV,
                                      dst_mac=lab.MACS[lab.IN_DEV], duration=seconds,
                                      flows=64, size=64)
                    got = _settled(sink, sent["sent"])
                after = daemon.scrape()
                status = daemon.stop()
                _report(sent, got, _rates(before, after, sent["seconds"]), after,
                        lab.MACS[lab.SINK_DEV])
                if status != 0:
                    print(f"xdpd exited with status {status}:\n{daemon.log()}")
                    return exitcodes.FAILURE
        print("lab removed")
        return exitcodes.OK if got["packets"] == sent["sent"] else exitcodes.FAILURE
    except (LabError, DaemonError, TrafficError, BpfError) as e:
        print(f"demo failed: {e}")
        return exitcodes.FAILURE


def _settled(sink: CountingSink, expect: int, quiet: float = 0.5, timeout: float = 10.0) -> dict:
    """The sink's counts once all expected frames arrived, or once nothing
    has arrived for `quiet` seconds (frames still in flight get there)."""
    deadline = time.monotonic() + timeout
    last, since = sink.read(), time.monotonic()
    while last["packets"] < expect and time.monotonic() < deadline:
        time.sleep(0.02)
        now = sink.read()
        if now["packets"] != last["packets"]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet:
            break
    return last


def _report(sent: dict, got: dict, rows: list[tuple], metrics, sink_mac: str) -> None:
    print()
    print(f"{'worker':<12} {'rx pps':>12} {'tx pps':>12} {'drops':>8} {'kernel drops':>13}")
    for name, rx, tx, drops, kdrops in rows:
        print(f"{name:<12} {rx:>12,.0f} {tx:>12,.0f} {drops:>8,.0f} {kdrops:>13,.0f}")
    print()
    lost = sent["sent"] - got["packets"]
    print(f"sent       {sent['sent']:>12,} frames in {sent['seconds']:.2f} s "
          f"({sent['pps']:,.0f} pps)")
    print(f"delivered  {got['packets']:>12,} frames at sink0 (counted by XDP), "
          f"{got['dst_mac_ok']:,} with dst MAC {sink_mac}")
    print(f"lost       {lost:>12,}")
    frames = metrics.by("xdpd_umem_frames", "location")
    cap = metrics.value("xdpd_umem_frames_capacity")
    print("umem       " + ", ".join(f"{k[0]} {v:,.0f}" for k, v in sorted(frames.items())) +
          f" (capacity {cap:,.0f})")
