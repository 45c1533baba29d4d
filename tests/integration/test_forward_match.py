"""Forward rules with a match: first match wins in the fast path, each
rule counts what it took (xdpd_rule_packets_total, xdpd_rule_bytes_total)."""
from integration_helpers import ROOT_ONLY
from xdpd.traffic import UDP_DST_PORT, UDP_SRC_PORT_BASE, SinkProcess, send_in_ns

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
