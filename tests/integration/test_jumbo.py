"""MTU 9000 on every link of the lab, native XDP: descriptor chains.

The XDP program is multi-buffer aware (SEC("xdp.frags")), so it attaches in
native mode where veth refuses a program without frags ("Peer MTU is too
large to set XDP").  With umem.multi_buffer: auto the sockets are bound
with XDP_USE_SG and a 9000-byte packet crosses xdpd as a chain of 6
buffers; with multi_buffer: off the workers take one buffer per packet,
and a packet larger than a frame is dropped by the kernel at the socket
and counted in the socket's rx_dropped, nothing else breaks, and what fits
a frame goes through.  Real clients judge it: ping at both sizes."""
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess

import pytest
from integration_helpers import ROOT_ONLY, poll_until, ready_to_kill, run_iperf3
from test_bad_traffic import (lab_sockets, mac, open_rx, open_tx, receive_all, size,
                              socket_drops, tag, typed)

from xdpd.lab.traffic import SinkProcess, child_env, traffic_cmd

pytestmark = [*ROOT_ONLY, pytest.mark.skipif(not shutil.which("ping"),
                                              reason="needs ping (iputils-ping)")]

MTU = 9000
GEN_IP, SINK_IP = "10.202.0.1", "10.202.0.2"


@contextlib.contextmanager
def jumbo(lab):
    """Every link of the lab at MTU, addressed end to end; 1500 and no
    addresses again after."""
    links = ((lab.gen_ns, lab.GEN_DEV), (lab.dut_ns, lab.IN_DEV),
             (lab.dut_ns, lab.OUT_DEV), (lab.sink_ns, lab.SINK_DEV))
    try:
        for ns, dev in links:
            lab.run(ns, "ip", "link", "set", dev, "mtu", str(MTU))
        lab.run(lab.gen_ns, "ip", "addr", "add", f"{GEN_IP}/24", "dev", lab.GEN_DEV)
        lab.run(lab.sink_ns, "ip", "addr", "add", f"{SINK_IP}/24", "dev", lab.SINK_DEV)
        yield
    finally:
        for ns, dev in ((lab.gen_ns, lab.GEN_DEV), (lab.sink_ns, lab.SINK_DEV)):
            lab.run(ns, "ip", "addr", "flush", "dev", dev, check=False)
            lab.run(ns, "ip", "neigh", "flush", "dev", dev, check=False)
        for ns, dev in links:
            lab.run(ns, "ip", "link", "set", dev, "mtu", "1500", check=False)


def config(lab, umem: str = "", mode: str = "native", fanout: int = 1) -> str:
    share = (f"    fanout: {fanout}\n    fanout_spread: round_robin\n" if fanout > 1
             else "")
    return (umem + f"interfaces:\n  - name: {lab.IN_DEV}\n    xdp_mode: {mode}\n{share}"
            f"  - name: {lab.OUT_DEV}\n    xdp_mode: {mode}\n{share}"
            f"forward:\n  - from: {lab.IN_DEV}\n    to: {lab.OUT_DEV}\n"
            f"  - from: {lab.OUT_DEV}\n    to: {lab.IN_DEV}\n"
            'metrics:\n  listen: "127.0.0.1:9464"\n')


def ping(lab, size: int, count: int = 10):
    return lab.run(lab.gen_ns, "ping", "-c", str(count), "-i", "0.05", "-W", "2", "-q", "-M",
                   "do", "-s", str(size), SINK_IP, check=False).stdout


@pytest.mark.parametrize("mode,fanout", [("native", 1), ("generic", 1), ("native", 2)],
                         ids=["native", "generic", "fanout"])
def test_at_mtu_9000_full_size_packets_cross_as_chains(lab, start_daemon, mode, fanout):
    """With fanout, a member receives chains into its owner's frames and
    sends them on its own TX ring (their completions reach the owner)."""
    with jumbo(lab):
        d = start_daemon(config(lab, mode=mode, fanout=fanout))
        st = d.status()
        assert {i["name"]: i["xdp_mode"] for i in st["interfaces"]} == {
            lab.IN_DEV: mode, lab.OUT_DEV: mode}
        assert st["umem"]["max_segs"] == 18
        assert "takes 6 buffers of 2048 B, one descriptor chain (multi-buffer)" in d.log()
        pids = d.worker_pids()
        for n in (56, 1472, 1800, 4000, MTU - 28):
            out = ping(lab, n)
            assert " 0% packet loss" in out, (n, out)
        m = d.scrape()
        # 10 requests and 10 replies of each size: 1, 1, 2, 3 and 6 buffers
        assert m.value("xdpd_rx_packets_total") >= 100
        assert m.value("xdpd_rx_fragments_total") >= 2 * 10 * (1 + 1 + 2 + 3 + 6)
        assert m.value("xdpd_dropped_packets_total") == 0
        assert m.value("xdpd_bad_descriptors_total") == 0
        assert m.value("xdpd_xsk_rx_dropped_packets_total") == 0
        assert d.worker_pids() == pids
        if fanout > 1:                  # members took chains too (round robin)
            members = [w for w in d.status()["workers"] if w["member"] > 0]
            assert any(w["rx_fragments"] > w["rx_packets"] > 0 for w in members), members


def completed(d) -> float:
    return d.scrape().value("xdpd_checksums_completed_total")


needs_iperf3 = pytest.mark.skipif(not shutil.which("iperf3"),
                                  reason="needs iperf3: make deps installs it")


@needs_iperf3
@pytest.mark.parametrize("reverse", [False, True])
def test_iperf3_tcp_at_mtu_9000_with_default_offloads(lab, start_daemon, reverse):
    """TCP segments of 8948 B payload, each a chain of 6 buffers whose
    partial checksum (the peers' TX offload) xdpd completes over every
    fragment: a wrong sum and the receiver drops every segment."""
    with jumbo(lab):
        d = start_daemon(config(lab))
        report = run_iperf3(lab, SINK_IP, "-t", "2", "-M", "8948",
                            *(["-R"] if reverse else []))
        got = report["end"].get("sum_received")
        assert got and got["bytes"] > 10 << 20, report.get("error", report["end"])
        m = d.scrape()
        frags, packets = m.value("xdpd_rx_fragments_total"), m.value("xdpd_rx_packets_total")
        assert frags > 3 * packets, (frags, packets)       # full-size segments: 6 buffers
        assert completed(d) > 1000
        assert m.value("xdpd_dropped_packets_total") == 0
        assert m.value("xdpd_bad_descriptors_total") == 0


@needs_iperf3
def test_iperf3_udp_8900_byte_datagrams_lose_nothing(lab, start_daemon):
    """Each datagram a 6-buffer chain with a partial checksum: every one
    arrives (the receiver checks the sum xdpd completed), and xdpd counts
    each completion (but for the odd one whose partial sum verifies)."""
    with jumbo(lab):
        d = start_daemon(config(lab))
        report = run_iperf3(lab, SINK_IP, "-u", "-b", "50M", "-l", "8900", "-t", "2")
        s = report["end"]["sum"]
        assert s["packets"] > 1000 and s["lost_packets"] == 0, s
        poll_until(lambda: completed(d) >= s["packets"] - s["packets"] // 1000,
                   what="a completion per datagram")


def test_native_at_mtu_9000_without_chains_counts_what_does_not_fit(lab, start_daemon):
    with jumbo(lab):
        d = start_daemon(config(lab, "umem:\n  multi_buffer: 'off'\n"))
        st = d.status()
        assert {i["name"]: i["xdp_mode"] for i in st["interfaces"]} == {
            lab.IN_DEV: "native", lab.OUT_DEV: "native"}
        assert "MTU 9000: packets over 1774 B" in d.log()       # said at start, with the fix
        assert d.status()["umem"]["max_segs"] == 0
        pids = d.worker_pids()

        out = lab.run(lab.gen_ns, "ping", "-c", "20", "-i", "0.05", "-W", "2", "-q",
                      SINK_IP).stdout
        assert " 0% packet loss" in out, out

        def dropped():
            return d.scrape().value("xdpd_xsk_rx_dropped_packets_total")
        before = dropped()
        big = lab.run(lab.gen_ns, "ping", "-c", "5", "-i", "0.1", "-W", "1", "-q", "-M", "do",
                      "-s", str(MTU - 28), SINK_IP, check=False).stdout
        assert "5 packets transmitted, 0 received" in big, big
        # each 9000-byte echo request was dropped at in0's socket, and counted
        poll_until(lambda: dropped() - before >= 5, what="5 more xsk rx_dropped")
        m = d.scrape()
        assert m.value("xdpd_dropped_packets_total") == 0
        assert m.value("xdpd_bad_descriptors_total") == 0
        assert d.worker_pids() == pids                          # nobody crashed


# --- every size, byte for byte ------------------------------------------------

SIZES = range(60, MTU + 14 + 1)         # every frame length up to a full MTU 9000 frame
CHUNK = 64                              # frames in flight: far below any ring's size


def sized_frames(run_id: int, dst: bytes, tagged: bool) -> list[bytes]:
    """One frame of each length in SIZES (VLAN 100 tagged: 4 B more), its
    length in the source MAC 02:RUN:00:00:LEN, an experimental ethertype
    (no stack answers it) and a payload that differs at every offset."""
    frames = []
    for n in SIZES:
        src = bytes((0x02, run_id, 0, 0)) + n.to_bytes(2, "big")
        body = size(typed(0x88B5, b""), n)
        frames.append(dst + src + (tag(0x8100, 100, body) if tagged else body))
    return frames


def carry(lab, src_end, dst_end, frames: list[bytes], run_id: int) -> list[bytes]:
    """frames sent from src_end (ns, dev), CHUNK at a time, and what of this
    run arrived at dst_end (outer VLAN tag where the wire had it)."""
    got: list[bytes] = []
    with lab_sockets(lab, [(open_tx, *src_end), (open_rx, *dst_end)]) as (tx, rx):
        def arrived():
            got.extend(f for f in receive_all(rx) if f[6:8] == bytes((0x02, run_id)))
            return len(got)
        for i in range(0, len(frames), CHUNK):
            for f in frames[i:i + CHUNK]:
                assert tx.send(f) == len(f)
            poll_until(lambda: arrived() >= min(i + CHUNK, len(frames)), timeout=10,
                       what=f"{min(i + CHUNK, len(frames))} frames at {dst_end[1]}")
        assert socket_drops(rx) == 0
    return got


def rewrite_config(lab, out: str, back: str) -> str:
    return (f"interfaces:\n  - name: {lab.IN_DEV}\n  - name: {lab.OUT_DEV}\n"
            f"forward:\n  - from: {lab.IN_DEV}\n    to: {lab.OUT_DEV}\n"
            f'    set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"\n{out}'
            f"  - from: {lab.OUT_DEV}\n    to: {lab.IN_DEV}\n"
            f'    set_dst_mac: "{lab.MACS[lab.GEN_DEV]}"\n{back}'
            'metrics:\n  listen: "127.0.0.1:9464"\n')


def both_ways(lab, d, out_tagged: bool, back_tagged: bool):
    """Every size each way: (sent gen -> sink, got at sink, sent back, got at gen)."""
    gen, sink = (lab.gen_ns, lab.GEN_DEV), (lab.sink_ns, lab.SINK_DEV)
    out = sized_frames(0xE1, mac(lab.MACS[lab.IN_DEV]), out_tagged)
    back = sized_frames(0xE2, mac(lab.MACS[lab.OUT_DEV]), back_tagged)
    return out, carry(lab, gen, sink, out, 0xE1), back, carry(lab, sink, gen, back, 0xE2)


def assert_chains_counted(d, sent: list[bytes]) -> None:
    frames, total_bytes = len(sent), sum(map(len, sent))
    fragments = sum(-(-len(f) // 1792) for f in sent)
    m = d.wait_for(lambda m: m.value("xdpd_rx_packets_total") >= frames, timeout=10)
    assert m.value("xdpd_rx_packets_total") == frames
    assert m.value("xdpd_rx_bytes_total") == total_bytes
    # a frame of n bytes arrives in ceil(n / 1792) buffers of 2048 B
    assert m.value("xdpd_rx_fragments_total") == fragments
    assert m.value("xdpd_dropped_packets_total") == 0
    assert m.value("xdpd_bad_descriptors_total") == 0
    assert m.value("xdpd_xsk_rx_dropped_packets_total") == 0


def test_every_size_to_9014_b_both_ways_with_a_mac_rewrite(lab, start_daemon):
    with jumbo(lab):
        d = start_daemon(rewrite_config(lab, "", ""))
        out, got_out, back, got_back = both_ways(lab, d, False, False)
        sink, gen = mac(lab.MACS[lab.SINK_DEV]), mac(lab.MACS[lab.GEN_DEV])
        assert sorted(got_out) == sorted(sink + f[6:] for f in out)
        assert sorted(got_back) == sorted(gen + f[6:] for f in back)
        assert_chains_counted(d, out + back)


def test_every_size_both_ways_with_vlan_push_and_pop(lab, start_daemon):
    """gen -> sink: pushed (the egress gets 4 B more); sink -> gen: tagged
    frames popped (4 B fewer).  Both act on fragment 0 of the chain."""
    with jumbo(lab):
        d = start_daemon(rewrite_config(lab, "    push_vlan: 100\n", "    pop_vlan: true\n"))
        out, got_out, back, got_back = both_ways(lab, d, False, True)
        sink, gen = mac(lab.MACS[lab.SINK_DEV]), mac(lab.MACS[lab.GEN_DEV])
        assert sorted(got_out) == sorted(sink + f[6:12] + tag(0x8100, 100, f[12:]) for f in out)
        assert sorted(got_back) == sorted(gen + f[6:12] + f[16:] for f in back)
        assert_chains_counted(d, out + back)


# --- chains under worker kills and reloads ----------------------------------

SMALL, LARGE = 64, MTU + 14
MIXED_RATES = {SMALL: 4000, LARGE: 1000}     # pps; the large ones are 6-buffer chains
FAULTS = 20                                  # kills, and as many reloads


def chaos_config(lab, dst: str) -> str:
    """Each way forwarded with a MAC rewrite (to dst's MAC in one direction);
    a reload flips dst, so every reload changes the table.  Workers on CPU 1,
    the senders on CPU 0 (as test_worker_faults)."""
    return (f"interfaces:\n  - name: {lab.IN_DEV}\n  - name: {lab.OUT_DEV}\n"
            f"forward:\n  - from: {lab.IN_DEV}\n    to: {lab.OUT_DEV}\n"
            f'    set_dst_mac: "{lab.MACS[dst]}"\n'
            f"  - from: {lab.OUT_DEV}\n    to: {lab.IN_DEV}\n"
            "workers:\n  cpus: [1]\n"
            'metrics:\n  listen: "127.0.0.1:9464"\n')


def start_sender(lab, size: int):
    """The lab's AF_PACKET sender in gen0, paced, until SIGTERM (then it
    prints what it sent)."""
    cmd = traffic_cmd("send", "--dev", lab.GEN_DEV, "--dst-mac", lab.MACS[lab.IN_DEV],
                      "--size", str(size), "--tag", str(size), "--flows", "16",
                      "--rate", str(MIXED_RATES[size]), "--duration", "600")
    return lab.popen(lab.gen_ns, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True, env=child_env())


def stop_sender(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])["sent"]


def test_mixed_64_and_9014_b_under_20_kills_and_20_reloads_lose_nothing(lab, start_daemon):
    """Every packet of both sizes arrives intact and once while workers are
    SIGKILLed (a replacement continues mid-chain from the commit record) and
    the table is replaced; every frame comes home."""
    with jumbo(lab):
        d = start_daemon(chaos_config(lab, lab.SINK_DEV))
        rng = random.Random(os.getpid())
        sinks = {n: SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=n, idle=3.0, timeout=300)
                 for n in MIXED_RATES}
        try:
            senders = {n: start_sender(lab, n) for n in MIXED_RATES}
            try:
                poll_until(lambda: d.scrape().value("xdpd_rx_fragments_total") > 1000,
                           what="jumbo traffic through xdpd")
                for i in range(FAULTS):
                    victim = ready_to_kill(d, rng.choice(sorted(d.worker_pids())))
                    os.kill(victim["pid"], signal.SIGKILL)
                    poll_until(lambda: any(w["name"] == victim["name"] and
                                           w["state"] == "running" and
                                           w["pid"] not in (None, victim["pid"])
                                           for w in d.status()["workers"]),
                               what=f"{victim['name']} replaced")
                    d.reload(chaos_config(lab, (lab.GEN_DEV, lab.SINK_DEV)[i % 2]))
            finally:
                sent = {n: stop_sender(p) for n, p in senders.items()}
            got = {n: sinks[n].result(timeout=30) for n in MIXED_RATES}
        finally:
            for sink in sinks.values():
                sink.kill()
        m = d.scrape()
        for n in MIXED_RATES:
            assert got[n]["received"] == sent[n], (n, got[n], sent, m.by(
                "xdpd_dropped_packets_total", "reason"), m.by(
                "xdpd_xsk_rx_ring_full_total", "netdev", "queue"))
            assert got[n]["bad_payload"] == 0 and got[n]["duplicates"] == 0, got[n]
        assert m.value("xdpd_dropped_packets_total") == 0
        assert m.value("xdpd_xsk_rx_dropped_packets_total") == 0
        assert m.value("xdpd_bad_descriptors_total") == 0
        assert sum(m.by("xdpd_worker_restarts_total", "netdev", "queue").values()) == FAULTS
        loc = poll_until(lambda: (lambda x: x[("handoff",)] == 0 and x[("tx",)] == 0 and x)(
            d.scrape().by("xdpd_umem_frames", "location")), what="every lent frame home")
        assert sum(loc.values()) == d.scrape().value("xdpd_umem_frames_capacity")
