"""xdpd run as a service: the control socket (`xdpd status`, `xdpd reload`),
SIGHUP, live reloads that add and remove queues and interfaces, and a
reload-under-load run that accounts for every packet."""
import json
import signal
import subprocess
import sys

import pytest
from integration_helpers import ROOT_ONLY
from integration_helpers import poll_until as poll
from integration_helpers import xdp_attached

from xdpd.control.server import ControlError
from xdpd.lab.daemon import forward_config
from xdpd.lab.traffic import SinkProcess, child_env, send_in_ns
from xdpd.lab.xdp import CountingSink

pytestmark = ROOT_ONLY


def xdpd_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xdpd", *args], capture_output=True,
                          text=True, env=child_env(), timeout=120)


def start_generator(lab, rate: int, seconds: float, cpu: int) -> subprocess.Popen:
    """BPF live-frame generator from gen0; on veth the frames land on the rx
    queue numbered like the CPU that sends them (modulo the queue count)."""
    cmd = [sys.executable, "-m", "xdpd.lab.xdp", "gen", "--ifname", lab.GEN_DEV,
           "--dst-mac", lab.MACS[lab.IN_DEV], "--src-mac", lab.MACS[lab.GEN_DEV],
           "--rate", str(rate), "--seconds", str(seconds), "--cpu", str(cpu)]
    return lab.popen(lab.gen_ns, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     env=child_env())


def generator_sent(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.decode().strip().splitlines()[-1])["sent"]


def queues_config(lab, in_queues: str, rule: str | None = None) -> str:
    """in0 (with the queues given) -> out0 with the sink's MAC; out0 drops."""
    rule = rule or f"""    to: {lab.OUT_DEV}
    set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"
"""
    return f"""interfaces:
  - name: {lab.IN_DEV}
    queues: {in_queues}
  - name: {lab.OUT_DEV}
    queues: all
forward:
  - from: {lab.IN_DEV}
{rule}  - from: {lab.OUT_DEV}
    action: drop
"""


def test_status_reports_interfaces_workers_and_modes(lab, start_daemon):
    d = start_daemon(forward_config(lab))
    st = d.status()
    assert st["schema"] == 1 and st["ready"] is True
    assert st["config"] == {"path": d.config_path, "generation": 1}
    assert st["last_reload"] is None
    ifaces = {i["name"]: i for i in st["interfaces"]}
    assert set(ifaces) == {lab.IN_DEV, lab.OUT_DEV}
    for i in ifaces.values():
        assert i["xdp_mode"] == "native" and i["socket_mode"] == "copy"
        assert i["queues"] == [0, 1] and i["rx_queues"] == 2
    assert ifaces[lab.IN_DEV]["rule"].startswith(f"forward to {lab.OUT_DEV}")
    pids = d.worker_pids()
    assert {w["name"] for w in st["workers"]} == set(pids) == {
        f"{dev}/q{q}" for dev in (lab.IN_DEV, lab.OUT_DEV) for q in (0, 1)}
    for w in st["workers"]:
        assert w["state"] == "running" and w["pid"] == pids[w["name"]]
        assert w["uptime_seconds"] > 0 and w["restarts"] == 0
        assert set(w["xsk"]) >= {"rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs"}
        assert set(w["rings"]) == {"rx", "tx", "fill", "completion"}
    u = st["umem"]
    assert u["worker_slots"] == 4 + 2 and u["worker_slots_used"] == 4
    assert sum(u["frames_by_location"].values()) == u["frames"]

    text = xdpd_cli("status", "--socket", d.socket_path)
    assert text.returncode == 0, text.stderr
    assert f"{lab.IN_DEV}/q1" in text.stdout and "native" in text.stdout
    as_json = xdpd_cli("status", "--json", "--socket", d.socket_path)
    assert json.loads(as_json.stdout)["schema"] == 1


def test_status_without_a_daemon_says_so(tmp_path):
    r = xdpd_cli("status", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 69
    assert "is xdpd running" in r.stderr and "Traceback" not in r.stderr


def test_invalid_reload_is_refused_and_the_old_config_keeps_forwarding(lab, start_daemon,
                                                                      tmp_path):
    d = start_daemon(forward_config(lab))
    bad = tmp_path / "bad.yaml"
    bad.write_text(forward_config(lab).replace("set_dst_mac", "set_dts_mac", 1))
    r = xdpd_cli("reload", "--config", str(bad), "--socket", d.socket_path)
    assert r.returncode == 78, r.stdout + r.stderr
    assert "set_dts_mac" in r.stderr and "did you mean 'set_dst_mac'" in r.stderr
    assert str(bad) in r.stderr and "Traceback" not in r.stderr
    st = d.status()
    assert st["config"]["generation"] == 1
    assert st["last_reload"]["result"] == "invalid"
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=61, expect=500, idle=2.0) as sink:
        send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV], count=500,
                   tag=61)
        got = sink.result()
    assert got["received"] == 500
    m = d.scrape()
    assert m.value("xdpd_reloads_total", result="invalid") == 1
    assert m.value("xdpd_last_reload_successful") == 0


def test_reload_refuses_what_cannot_change_live(lab, start_daemon):
    d = start_daemon(forward_config(lab))
    with pytest.raises(ControlError) as e:
        d.reload(forward_config(lab, extra="umem:\n  frame_size: 4096\n"))
    msg = str(e.value)
    assert "umem.frame_size: 2048 -> 4096" in msg and "restart" in msg
    assert e.value.result["result"] == "refused"
    r = xdpd_cli("reload", "--socket", d.socket_path)
    assert r.returncode == 78 and "refused" in r.stderr
    assert d.status()["config"]["generation"] == 1
    assert len(d.worker_pids()) == 4


def test_sighup_reloads_the_daemons_file(lab, start_daemon):
    d = start_daemon(forward_config(lab))
    d.write_config(forward_config(lab, reverse="drop"))
    d.proc.send_signal(signal.SIGHUP)
    poll(lambda: d.status()["config"]["generation"] == 2, what="generation 2")
    st = d.status()
    assert st["last_reload"]["result"] == "applied"
    assert "forwarding rules changed" in st["last_reload"]["changes"]
    assert [i["rule"] for i in st["interfaces"] if i["name"] == lab.OUT_DEV] == ["drop"]
    assert "reload from" in d.log()


def test_a_queue_is_added_and_removed_live(lab, start_daemon):
    d = start_daemon(queues_config(lab, "[0]"))
    before = d.worker_pids()
    assert f"{lab.IN_DEV}/q1" not in before
    r = d.reload(queues_config(lab, "all"))
    assert r["result"] == "applied"
    assert any(c.startswith(f"worker {lab.IN_DEV}/q1 added") for c in r["changes"]), r
    after = d.worker_pids()
    for name, pid in before.items():
        assert after[name] == pid, f"{name} was restarted by the reload"
    # traffic on queue 1 (sent from CPU 1) now reaches the new worker
    with CountingSink(lab.sink_ns, lab.SINK_DEV) as sink:
        gen = start_generator(lab, rate=20000, seconds=1.0, cpu=1)
        sent = generator_sent(gen)
        poll(lambda: sink.read()["packets"] >= sent, what=f"{sent} packets at the sink")
    m = d.scrape()
    assert m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, queue=1,
                   verdict="redirected") == sent
    # 3 workers at start + 2 spare slots; the new worker took one
    assert (m.value("xdpd_worker_slots_used"), m.value("xdpd_worker_slots")) == (4, 5)

    r = d.reload(queues_config(lab, "[0]"))
    assert any(c.startswith(f"worker {lab.IN_DEV}/q1 removed") for c in r["changes"])
    assert d.worker_pids() == before
    st = d.status()
    assert st["umem"]["worker_slots_used"] == 3
    assert sum(st["umem"]["frames_by_location"].values()) == st["umem"]["frames"]
    m = d.scrape()
    passed = m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, queue=1, verdict="passed")
    sent = generator_sent(start_generator(lab, rate=5000, seconds=0.2, cpu=1))
    poll(lambda: d.scrape().value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, queue=1,
                                  verdict="passed") >= passed + sent,
         what="queue 1 back with the kernel")
    # added straight back: the kernel frees the old socket's queue lazily
    for _ in range(3):
        assert d.reload(queues_config(lab, "all"))["result"] == "applied"
        assert d.reload(queues_config(lab, "[0]"))["result"] == "applied"


def test_an_interface_is_removed_and_added_back_live(lab, start_daemon):
    full = forward_config(lab, reverse="drop")
    only_in = f"""interfaces:
  - name: {lab.IN_DEV}
forward:
  - from: {lab.IN_DEV}
    action: drop
"""
    d = start_daemon(full)
    r = d.reload(only_in)
    assert f"interface {lab.OUT_DEV} removed" in r["changes"]
    assert not xdp_attached(lab, lab.dut_ns, lab.OUT_DEV)
    assert all(not n.startswith(lab.OUT_DEV) for n in d.worker_pids())
    r = d.reload(full)
    assert f"interface {lab.OUT_DEV} added" in r["changes"]
    assert xdp_attached(lab, lab.dut_ns, lab.OUT_DEV)
    assert len(d.worker_pids()) == 4
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=63, expect=300, idle=2.0) as sink:
        send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV], count=300,
                   tag=63)
        assert sink.result()["received"] == 300
    st = d.status()
    assert st["config"]["generation"] == 3
    assert sum(st["umem"]["frames_by_location"].values()) == st["umem"]["frames"]


def test_twenty_reloads_under_load_lose_no_packet(lab, start_daemon):
    """Traffic runs while the rules flip 20 times between forwarding (with
    the sink's MAC) and dropping: every packet sent is delivered with the
    right MAC or counted as dropped by rule; nothing else is lost."""
    # workers on CPU 1, the generator (and the veth NAPI it schedules) on
    # CPU 0: a worker sharing its CPU with a generator that sends in bursts
    # lets its RX ring overflow, reload or not (docs/PERFORMANCE.md)
    pin = "workers:\n  cpus: [1]\n"
    forward = queues_config(lab, "all") + pin
    drop = queues_config(lab, "all", rule="    action: drop\n") + pin
    d = start_daemon(forward)
    durations = []
    with CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
        gen = start_generator(lab, rate=50000, seconds=8.0, cpu=0)
        poll(lambda: sink.read()["packets"] > 0, what="first packets at the sink")
        for n in range(20):
            m = d.scrape()
            mark = (m.value("xdpd_dropped_packets_total", reason="rule"), sink.read()["packets"])
            r = d.reload(drop if n % 2 == 0 else forward)
            assert r["result"] == "applied", r
            durations.append(r["duration_seconds"])
            # let traffic flow under the new rules before the next flip
            if n % 2 == 0:
                poll(lambda: d.scrape().value("xdpd_dropped_packets_total",
                                              reason="rule") > mark[0] + 1000,
                     what="drops under the drop rules")
            else:
                poll(lambda: sink.read()["packets"] > mark[1] + 1000,
                     what="deliveries under the forward rules")
        sent = generator_sent(gen)

        def settled():
            m = d.scrape()
            done = sink.read()["packets"] + m.value("xdpd_dropped_packets_total", reason="rule")
            return m if done >= sent else None
        try:
            m = poll(settled, timeout=10, what="every packet accounted for")
        except AssertionError:
            m = d.scrape()
            raise AssertionError(f"sent {sent}, at the sink {sink.read()}; " + "; ".join(
                f"{k} {v}" for k, v in sorted(
                    (f"{n}{lab_}", v) for n in ("xdpd_xdp_packets_total",
                                                "xdpd_dropped_packets_total",
                                                "xdpd_rx_packets_total",
                                                "xdpd_tx_packets_total",
                                                "xdpd_xsk_rx_dropped_packets_total",
                                                "xdpd_xsk_rx_ring_full_total")
                    for lab_, v in m.samples.get(n, []) if v))) from None
        got = sink.read()
    arrived = m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV)
    assert arrived == sent, "frames lost between the generator and in0"
    assert m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, verdict="redirected") == sent
    for reason in ("no_rule", "invalid", "egress_down"):
        assert m.value("xdpd_dropped_packets_total", reason=reason) == 0, reason
    for name in ("xdpd_xsk_rx_dropped_packets_total", "xdpd_xsk_rx_ring_full_total"):
        assert m.value(name) == 0, name
    dropped = m.value("xdpd_dropped_packets_total", reason="rule")
    assert got["packets"] + dropped == sent
    assert got["dst_mac_ok"] == got["packets"]
    assert dropped > 0 and got["packets"] > 0
    assert d.status()["config"]["generation"] == 21
    print(f"\n20 reloads: median {sorted(durations)[10] * 1e3:.1f} ms, "
          f"max {max(durations) * 1e3:.1f} ms; {sent} sent, {got['packets']} delivered, "
          f"{dropped:.0f} dropped by rule")
