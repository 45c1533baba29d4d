"""`xdpd demo`: build a veth lab, run xdpd on it, push traffic, report.

    gen ns: gen0 --> in0 [xdpd] out0 --> sink0 :sink ns

1. Full speed: the lab's BPF generator (BPF_PROG_TEST_RUN with live frames,
   several Mpps from one core; AF_PACKET where the kernel refuses live
   frames, and the report says so) sends 64-byte frames as fast as it can, with
   a live rate line each second; what xdpd delivers is counted at sink0 by
   an XDP program (xdpd.lab.xdp.CountingSink), exact at any rate.  What the
   generator offers beyond xdpd's rate is lost at in0 (the RX ring full),
   as it would be on a NIC.
2. Real clients: gen0 and sink0 get addresses, and `ping` and `iperf3`
   (where installed) run through xdpd, with the peers' default offloads.

The lab's namespaces carry this process's pid, so a later run removes
what an interrupted one left (cleanup_stale), and the `with` blocks remove
everything this run made, also on Ctrl-C.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time

from xdpd import exitcodes
from xdpd.kernel.libbpf import BpfError
from xdpd.lab.daemon import DaemonError, LabDaemon, forward_config
from xdpd.lab.netns import Lab, LabError, cleanup_stale
from xdpd.lab.traffic import TrafficError, child_env
from xdpd.lab.xdp import CountingSink

log = logging.getLogger("xdpd.lab.demo")


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


GEN_IP, SINK_IP = "10.203.0.1", "10.203.0.2"


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
                print(f"xdpd is forwarding; the lab's generator sends 64 B frames as fast "
                      f"as it can for {seconds:.0f} s ...")
                with CountingSink(lab.sink_ns, lab.SINK_DEV,
                                  expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
                    before = daemon.scrape()
                    sent = _full_speed(lab, daemon, sink, seconds)
                    got = _settled(sink, sent["sent"])
                after = daemon.scrape()
                _report(sent, got, _rates(before, after, sent["seconds"]), after,
                        lab.MACS[lab.SINK_DEV])
                clients_ok = _clients(lab)
                status = daemon.stop()
                if status != 0:
                    print(f"xdpd exited with status {status}:\n{daemon.log()}")
                    return exitcodes.FAILURE
        print("lab removed")
        delivered = got["packets"] > 0 and got["dst_mac_ok"] == got["packets"]
        return exitcodes.OK if delivered and clients_ok else exitcodes.FAILURE
    except (LabError, DaemonError, TrafficError, BpfError) as e:
        print(f"demo failed: {e}")
        return exitcodes.FAILURE


def _full_speed(lab: Lab, daemon: LabDaemon, sink: CountingSink, seconds: float) -> dict:
    """The generator, unpaced, with a rate line a second; its summary."""
    gen = lab.popen(lab.gen_ns, [sys.executable, "-I", "-m", "xdpd.lab.xdp", "gen",
                                 "--ifname", lab.GEN_DEV, "--dst-mac", lab.MACS[lab.IN_DEV],
                                 "--src-mac", lab.MACS[lab.GEN_DEV], "--flows", "64",
                                 "--seconds", str(seconds)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    last_t, last = time.monotonic(), (sink.read()["packets"], daemon.scrape())
    while gen.poll() is None:
        time.sleep(1.0)                 # the rate line's period
        now_t, now = time.monotonic(), (sink.read()["packets"], daemon.scrape())
        dt = now_t - last_t
        rx = (now[1].value("xdpd_rx_packets_total", netdev=lab.IN_DEV) -
              last[1].value("xdpd_rx_packets_total", netdev=lab.IN_DEV)) / dt
        tx = (now[1].value("xdpd_tx_packets_total", netdev=lab.OUT_DEV) -
              last[1].value("xdpd_tx_packets_total", netdev=lab.OUT_DEV)) / dt
        ring_full = (now[1].value("xdpd_xsk_rx_ring_full_total") +
                     now[1].value("xdpd_xsk_rx_dropped_packets_total") -
                     last[1].value("xdpd_xsk_rx_ring_full_total") -
                     last[1].value("xdpd_xsk_rx_dropped_packets_total")) / dt
        print(f"  in0 rx {rx / 1e6:6.2f} Mpps   out0 tx {tx / 1e6:6.2f} Mpps   at sink0 "
              f"{(now[0] - last[0]) / dt / 1e6:6.2f} Mpps   lost at in0 (RX ring full) "
              f"{ring_full / 1e6:6.2f} Mpps", flush=True)
        last_t, last = now_t, now
    out, err = gen.communicate()
    if gen.returncode != 0:
        raise TrafficError(f"the generator failed: {err.strip() or out.strip()}")
    return json.loads(out.strip().splitlines()[-1])


def _clients(lab: Lab) -> bool:
    """ping and iperf3 from gen0 to sink0 through xdpd; True if they got through."""
    for ns, dev, ip in ((lab.gen_ns, lab.GEN_DEV, GEN_IP), (lab.sink_ns, lab.SINK_DEV, SINK_IP)):
        lab.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
    ok = True
    print()
    if shutil.which("ping"):
        r = lab.run(lab.gen_ns, "ping", "-c", "10", "-i", "0.05", "-W", "2", "-q", SINK_IP,
                    check=False)
        tail = [line for line in r.stdout.splitlines() if "packet loss" in line or "rtt" in line]
        print(f"ping {SINK_IP} through xdpd: " + "; ".join(tail))
        ok &= " 0% packet loss" in r.stdout
    else:
        print("ping: not installed (apt install iputils-ping); skipped")
    if shutil.which("iperf3"):
        server = lab.popen(lab.sink_ns, ["iperf3", "-s", "-1", "-B", SINK_IP],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while f"{SINK_IP}:5201 " not in lab.run(lab.sink_ns, "ss", "-ltnH").stdout:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            r = lab.run(lab.gen_ns, "iperf3", "-c", SINK_IP, "-t", "3", "-J",
                        "--connect-timeout", "5000", check=False, timeout=60)
            report = json.loads(r.stdout or "{}")
            got = report.get("end", {}).get("sum_received")
            if got:
                print(f"iperf3 TCP {GEN_IP} -> {SINK_IP} through xdpd: "
                      f"{got['bits_per_second'] / 1e9:.2f} Gbit/s for {got['seconds']:.1f} s "
                      "(the peers keep TX checksum offload on: xdpd completes their "
                      "partial checksums)")
            else:
                print(f"iperf3: {report.get('error', r.stderr.strip())}")
                ok = False
        finally:
            server.kill()
            server.wait(10)
    else:
        print("iperf3: not installed (apt install iperf3); skipped")
    return ok


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


# what the generator's summary says it sent with (xdpd.lab.xdp gen: "via")
GENERATORS = {"live": "BPF live frames",
              "af_packet": "by AF_PACKET, as this kernel refuses BPF live frames: what "
                           "it offers may be below what xdpd can take"}


def _report(sent: dict, got: dict, rows: list[tuple], metrics, sink_mac: str) -> None:
    print()
    print(f"{'worker':<12} {'rx pps':>12} {'tx pps':>12} {'drops':>8} {'kernel drops':>13}")
    for name, rx, tx, drops, kdrops in rows:
        print(f"{name:<12} {rx:>12,.0f} {tx:>12,.0f} {drops:>8,.0f} {kdrops:>13,.0f}")
    print()
    lost = sent["sent"] - got["packets"]
    print(f"offered    {sent['sent']:>12,} frames in {sent['seconds']:.2f} s "
          f"({sent['pps']:,.0f} pps, the generator's full speed, {GENERATORS[sent['via']]})")
    print(f"delivered  {got['packets']:>12,} frames at sink0 (counted by XDP), "
          f"{got['dst_mac_ok']:,} with dst MAC {sink_mac}")
    print(f"not taken  {lost:>12,} (beyond xdpd's rate: lost at in0's RX ring, "
          "as on a NIC)")
    frames = metrics.by("xdpd_umem_frames", "location")
    cap = metrics.value("xdpd_umem_frames_capacity")
    print("umem       " + ", ".join(f"{k[0]} {v:,.0f}" for k, v in sorted(frames.items())) +
          f" (capacity {cap:,.0f})")
