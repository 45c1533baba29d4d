"""Fanout: several workers on one rx queue, in the veth lab.

in0 has two queues and `fanout: 2`: four workers, two per queue, the
queue's owner with its FILL and COMPLETION rings and one member that
receives into the owner's frames.  The XDP program spreads each queue's
packets over its two sockets by flow hash (each flow stays on one worker,
in order) or round robin (set live by a reload)."""
import os
import signal

import pytest
from integration_helpers import ROOT_ONLY
from integration_helpers import poll_until as poll
from integration_helpers import ready_to_kill, start_live_generator, stop_live_generator

from xdpd.control.server import ControlError
from xdpd.lab.daemon import forward_config
from xdpd.lab.traffic import SinkProcess, send_in_ns
from xdpd.lab.xdp import CountingSink

pytestmark = ROOT_ONLY

N = 20_000
FLOWS = 64
RATE = 20_000


def config(lab, spread: str = "flow_hash", fanout: int = 2, queues: str = "all") -> str:
    # workers on CPU 1, the live generator (and the veth NAPI it runs) on CPU 0
    text = forward_config(lab, reverse="drop", extra="workers:\n  cpus: [1]\n")
    return text.replace(f"  - name: {lab.IN_DEV}\n    queues: all\n",
                        f"  - name: {lab.IN_DEV}\n    queues: {queues}\n"
                        f"    fanout: {fanout}\n    fanout_spread: {spread}\n", 1)


def rx_by_worker(m, netdev: str) -> dict[tuple[str, str], float]:
    """{(queue, member): packets received} of netdev's workers."""
    return {(q, mem): v for (dev, q, mem), v in
            m.by("xdpd_rx_packets_total", "netdev", "queue", "member").items() if dev == netdev}


def frames_home(d):
    m = d.scrape()
    loc = m.by("xdpd_umem_frames", "location")
    return m if loc[("tx",)] == 0 and loc[("handoff",)] == 0 else None


def assert_every_frame_counted(m) -> None:
    loc = m.by("xdpd_umem_frames", "location")
    assert sum(loc.values()) == m.value("xdpd_umem_frames_capacity"), loc
    assert m.value("xdpd_bad_descriptors_total") == 0


def test_flow_hash_spreads_a_queue_over_its_workers_and_keeps_each_flow_in_order(
        lab, start_daemon):
    d = start_daemon(config(lab))
    st = d.status()
    names = [w["name"] for w in st["workers"] if w["netdev"] == lab.IN_DEV]
    assert names == [f"{lab.IN_DEV}/q0.0", f"{lab.IN_DEV}/q0.1",
                     f"{lab.IN_DEV}/q1.0", f"{lab.IN_DEV}/q1.1"]
    iface = next(i for i in st["interfaces"] if i["name"] == lab.IN_DEV)
    assert (iface["fanout"], iface["fanout_spread"]) == (2, "flow_hash")
    assert set(d.worker_pids()) >= set(names)           # process titles name the member

    # Paced: this test is about where each flow goes, not about how fast
    # four workers on one CPU drain a burst (an unpaced AF_PACKET sender on
    # the workers' CPU overflowed their RX rings on a busy machine).
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=71, expect=N, idle=2.0) as sink:
        sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                          count=N, flows=FLOWS, tag=71, rate=RATE)
        got = sink.result(timeout=60)
    m = poll(lambda: frames_home(d), what="every frame home")
    accounts = (f"sent {sent['sent']}, sink {got['received']}; xdpd drops "
                f"{m.by('xdpd_dropped_packets_total', 'reason')}, kernel rx_ring_full "
                f"{m.by('xdpd_xsk_rx_ring_full_total', 'netdev', 'queue', 'member')}, "
                f"xdp verdicts {m.by('xdpd_xdp_packets_total', 'netdev', 'verdict')}")
    assert sent["sent"] == N
    assert got["received"] == N and got["duplicates"] == 0 and got["bad_payload"] == 0, accounts
    assert got["reordered"] == 0                        # a flow never changes worker
    assert got["by_dst_mac"] == {lab.MACS[lab.SINK_DEV]: N}

    rx = rx_by_worker(m, lab.IN_DEV)
    assert sum(rx.values()) == N
    busy = {q for (q, _), v in rx.items() if v}
    print(f"\n{N} packets, {FLOWS} flows; received by in0's workers (queue, member): "
          f"{dict(sorted(rx.items()))}")
    assert busy, rx
    for q in busy:                  # both of a busy queue's workers took a fair share
        total = rx[(q, "0")] + rx[(q, "1")]
        assert min(rx[(q, "0")], rx[(q, "1")]) > total // 8, rx
    xdp = m.by("xdpd_xdp_packets_total", "netdev", "verdict")
    assert xdp[(lab.IN_DEV, "redirected")] == N
    assert xdp[(lab.IN_DEV, "fanout_to_owner")] == 0
    assert m.value("xdpd_dropped_packets_total") == 0
    assert_every_frame_counted(m)
    # a member receives into its owner's frames: its own stay on its free list
    assert m.value("xdpd_tx_packets_total", netdev=lab.OUT_DEV) == N


def test_round_robin_is_set_live_and_fanout_itself_is_refused(lab, start_daemon):
    d = start_daemon(config(lab))
    r = d.reload(config(lab, spread="round_robin"))
    assert r["result"] == "applied"
    assert any("fanout_spread round_robin" in line for line in r["changes"]), r
    with CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
        gen = start_live_generator(lab, 20_000)         # one flow, queue 0
        try:
            poll(lambda: sink.read()["packets"] > 10_000, timeout=30, what="traffic")
        finally:
            sent = stop_live_generator(gen)
        poll(lambda: sink.read()["packets"] >= sent, what="all packets at the sink")
    m = poll(lambda: frames_home(d), what="every frame home")
    rx = rx_by_worker(m, lab.IN_DEV)
    a, b = rx[("0", "0")], rx[("0", "1")]
    # one flow, both workers: alternately (one counter per CPU the
    # generator ran on, so at most a few apart)
    print(f"\nround robin, one flow, {sent} packets: in0/q0.0 {a:.0f}, in0/q0.1 {b:.0f}")
    assert a + b == sent and abs(a - b) <= 8, rx
    assert_every_frame_counted(m)

    with pytest.raises(ControlError) as e:
        d.reload(config(lab, spread="round_robin", fanout=3))
    msg = str(e.value)
    assert f"interface {lab.IN_DEV}: fanout 2 -> 3" in msg and "restart" in msg
    assert d.status()["ready"]


def kill_and_wait_replaced(d, name: str) -> dict:
    """SIGKILL worker `name` (steady state, standby ready); its new process
    once it reports RUNNING.  The test's workers are on CPU 1 and its
    generator on CPU 0 (config()): a test about zero loss gives the workers
    a CPU its own load does not compete for."""
    w = ready_to_kill(d, name)
    os.kill(w["pid"], signal.SIGKILL)
    new = poll(lambda: (x := {x["name"]: x for x in d.status()["workers"]}[name])
               ["state"] == "running" and x["pid"] not in (None, w["pid"]) and x,
               timeout=10, what=f"{name} replaced", every=0.005)
    assert new["pid"] == w["standby_pid"], "not taken over by its standby"
    return new


def assert_kills_lost_nothing(d, sink, sent: int, kills: dict[tuple, int]) -> None:
    """Every packet delivered with the right MAC, none dropped anywhere, every
    frame home, and one restart for each worker killed once."""
    m = poll(lambda: frames_home(d), what="every frame home")
    got = sink.read()
    accounts = (f"sent {sent}, delivered {got['packets']}; xdpd drops "
                f"{m.by('xdpd_dropped_packets_total', 'reason')}, kernel rx_ring_full "
                f"{m.by('xdpd_xsk_rx_ring_full_total', 'netdev', 'queue', 'member')}, "
                f"rx_dropped {m.value('xdpd_xsk_rx_dropped_packets_total')}")
    assert got["packets"] == sent and got["dst_mac_ok"] == sent, accounts
    assert m.value("xdpd_dropped_packets_total") == 0, accounts
    assert m.value("xdpd_xsk_rx_ring_full_total") == 0, accounts
    assert m.value("xdpd_xsk_rx_dropped_packets_total") == 0, accounts
    assert_every_frame_counted(m)
    restarts = m.by("xdpd_worker_restarts_total", "netdev", "queue", "member")
    assert {k: v for k, v in restarts.items() if v} == kills, restarts


@pytest.mark.parametrize("spread", ["round_robin", "flow_hash"])
def test_a_killed_member_and_a_killed_owner_lose_nothing(lab, start_daemon, spread):
    d = start_daemon(config(lab, spread=spread))
    with CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
        # 64 flows: flow hash gives both of queue 0's workers a share
        gen = start_live_generator(lab, 30_000, flows=64)
        try:
            poll(lambda: sink.read()["packets"] > 2_000, timeout=30, what="traffic")
            for name in (f"{lab.IN_DEV}/q0.1", f"{lab.IN_DEV}/q0.0"):
                kill_and_wait_replaced(d, name)
                mark = sink.read()["packets"]
                poll(lambda: sink.read()["packets"] > mark + 1_000, what="forwarding again")
        finally:
            sent = stop_live_generator(gen)
        poll(lambda: sink.read()["packets"] >= sent, what="all packets at the sink")
        rx = rx_by_worker(d.scrape(), lab.IN_DEV)
        assert rx[("0", "0")] and rx[("0", "1")], rx          # both took a share
        assert_kills_lost_nothing(d, sink, sent, {(lab.IN_DEV, "0", "0"): 1,
                                                  (lab.IN_DEV, "0", "1"): 1})


def test_a_killed_owner_is_replaced_while_its_member_keeps_running(lab, start_daemon):
    d = start_daemon(config(lab, spread="round_robin"))
    member = f"{lab.IN_DEV}/q0.1"
    with CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
        gen = start_live_generator(lab, 30_000)
        try:
            poll(lambda: sink.read()["packets"] > 2_000, timeout=30, what="traffic")
            before = {x["name"]: x for x in d.status()["workers"]}[member]
            for _ in range(3):
                kill_and_wait_replaced(d, f"{lab.IN_DEV}/q0.0")
                mark = sink.read()["packets"]
                poll(lambda: sink.read()["packets"] > mark + 1_000, what="forwarding again")
            after = {x["name"]: x for x in d.status()["workers"]}[member]
            assert after["pid"] == before["pid"]          # the member was never restarted
            assert after["rx_packets"] > before["rx_packets"]
        finally:
            sent = stop_live_generator(gen)
        poll(lambda: sink.read()["packets"] >= sent, what="all packets at the sink")
        assert_kills_lost_nothing(d, sink, sent, {(lab.IN_DEV, "0", "0"): 3})


def test_a_reload_removes_and_adds_a_queue_with_all_its_workers(lab, start_daemon):
    d = start_daemon(config(lab, spread="round_robin"))
    slots = d.scrape().value("xdpd_worker_slots_used")
    with CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
        gen = start_live_generator(lab, 20_000)         # queue 0
        try:
            poll(lambda: sink.read()["packets"] > 2_000, timeout=30, what="traffic")
            # queue 0's group, busy, drained and removed: its traffic goes
            # to the kernel from then on
            r = d.reload(config(lab, spread="round_robin", queues="[1]"))
            assert r["result"] == "applied"
            assert {f"worker {lab.IN_DEV}/q0.0 removed",
                    f"worker {lab.IN_DEV}/q0.1 removed"} <= set(r["changes"]), r
            m = d.scrape()
            assert m.value("xdpd_worker_slots_used") == slots - 2
            assert_every_frame_counted(m)
            # and back
            r = d.reload(config(lab, spread="round_robin"))
            assert r["result"] == "applied"
            mark = sink.read()["packets"]
            poll(lambda: sink.read()["packets"] > mark + 2_000, what="forwarding again")
        finally:
            stop_live_generator(gen)
    m = poll(lambda: frames_home(d), what="every frame home")
    assert m.value("xdpd_worker_slots_used") == slots
    assert_every_frame_counted(m)
    assert "not reused until restart" not in d.log()
    names = {w["name"] for w in d.status()["workers"]}
    assert {f"{lab.IN_DEV}/q0.0", f"{lab.IN_DEV}/q0.1"} <= names
