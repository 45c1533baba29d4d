"""Forward rules with a match: first match wins in the fast path, each
rule counts what it took (xdpd_rule_packets_total, xdpd_rule_bytes_total)."""
from integration_helpers import ROOT_ONLY

from xdpd.lab.traffic import UDP_DST_PORT, UDP_SRC_PORT_BASE, SinkProcess, send_in_ns

pytestmark = ROOT_ONLY

N = 10_000      # flows=2: even seqs are flow 0, odd ones flow 1


def match_config(lab, port: int = 9464) -> str:
    return f"""interfaces:
  - name: {lab.IN_DEV}
  - name: {lab.OUT_DEV}
forward:
  - from: {lab.IN_DEV}
    match: {{ip_proto: udp, dst_port: {UDP_DST_PORT}, src_port: {UDP_SRC_PORT_BASE}}}
    to: {lab.OUT_DEV}
    set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"
  - from: {lab.IN_DEV}
    action: drop
  - from: {lab.OUT_DEV}
    action: drop
metrics:
  listen: "127.0.0.1:{port}"
"""


def test_first_matching_rule_forwards_the_rest_is_dropped_and_each_rule_counts(
        lab, start_daemon):
    daemon = start_daemon(match_config(lab))
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=61, expect=N // 2, idle=2.0) as sink:
        sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                          count=N, flows=2, tag=61)
        got = sink.result(timeout=30)
    assert sent["sent"] == N
    # flow 0 (UDP source port BASE) matched rule 0; flow 1 fell through to the drop
    assert got["received"] == N // 2 and got["by_flow"] == {"0": N // 2}
    assert got["by_dst_mac"] == {lab.MACS[lab.SINK_DEV]: N // 2}
    assert got["bad_payload"] == 0 and got["duplicates"] == 0

    m = daemon.wait_for(lambda m: m.value("xdpd_rx_packets_total", netdev=lab.IN_DEV) >= N)
    assert m.value("xdpd_rule_packets_total", netdev=lab.IN_DEV, rule="0") == N // 2
    assert m.value("xdpd_rule_packets_total", netdev=lab.IN_DEV, rule="1") == N // 2
    assert m.value("xdpd_rule_bytes_total", netdev=lab.IN_DEV, rule="0") == N // 2 * 64
    assert m.value("xdpd_rule_bytes_total", netdev=lab.IN_DEV, rule="1") == N // 2 * 64
    assert m.value("xdpd_dropped_packets_total", netdev=lab.IN_DEV, reason="rule") == N // 2
    assert m.value("xdpd_dropped_packets_total", reason="no_rule") == 0
    assert m.value("xdpd_tx_packets_total", netdev=lab.OUT_DEV) == N // 2


def test_rule_counters_survive_a_killed_worker_and_restart_when_the_rules_change(
        lab, start_daemon):
    import os
    import signal

    from integration_helpers import poll_until
    daemon = start_daemon(match_config(lab))
    send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
               count=N, flows=2, tag=62)
    m = daemon.wait_for(lambda m: m.value("xdpd_rx_packets_total", netdev=lab.IN_DEV) >= N)
    before = m.by("xdpd_rule_packets_total", "netdev", "queue", "rule")
    assert sum(v for k, v in before.items() if k[0] == lab.IN_DEV) == N
    rules = {r["index"]: r for r in daemon.status()["rules"]}
    assert (rules[0]["packets"], rules[1]["packets"], rules[2]["packets"]) == (N // 2, N // 2, 0)
    assert rules[0]["match"] == f"udp src port {UDP_SRC_PORT_BASE} dst port {UDP_DST_PORT}"
    assert rules[1]["match"] is None and rules[1]["action"] == "drop"

    # a worker killed: its replacement continues the committed counters
    pids = daemon.worker_pids()
    victim = f"{lab.IN_DEV}/q0"
    os.kill(pids[victim], signal.SIGKILL)
    poll_until(lambda: daemon.worker_pids().get(victim) not in (None, pids[victim])
               and daemon.status()["ready"], timeout=20, what="the worker replaced")
    after = daemon.scrape().by("xdpd_rule_packets_total", "netdev", "queue", "rule")
    assert after == before

    # in0's rules change: its rule counters start again; out0's rule is untouched
    daemon.reload(match_config(lab).replace(f"src_port: {UDP_SRC_PORT_BASE}}}",
                                            f"src_port: {UDP_SRC_PORT_BASE + 1}}}"))
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=63, expect=N // 2, idle=2.0) as sink:
        send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                   count=N, flows=2, tag=63)
        got = sink.result(timeout=30)
    assert got["received"] == N // 2 and got["by_flow"] == {"1": N // 2}
    m = daemon.wait_for(lambda m: m.value("xdpd_rx_packets_total", netdev=lab.IN_DEV) >= 2 * N)
    assert m.value("xdpd_rule_packets_total", netdev=lab.IN_DEV, rule="0") == N // 2
    assert m.value("xdpd_rule_packets_total", netdev=lab.IN_DEV, rule="1") == N // 2
