"""VLAN push and pop in forward rules, through the lab (gen0 -> in0 [xdpd]
out0 -> sink0): what arrives at the sink is what was sent with the tag
pushed or popped, byte for byte otherwise.

The sink's stack takes the outer tag out of the data (skb_vlan_untag());
the sink socket puts it back from PACKET_AUXDATA (test_bad_traffic), so a
frame is compared with its outer tag where the wire had it.
"""
from integration_helpers import ROOT_ONLY
from test_bad_traffic import UDP64, build, mac, send_through, size, tag, typed

pytestmark = ROOT_ONLY


def vlan_config(lab, action: str) -> str:
    return f"""interfaces:
  - name: {lab.IN_DEV}
  - name: {lab.OUT_DEV}
forward:
  - from: {lab.IN_DEV}
    to: {lab.OUT_DEV}
    set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"
    {action}
  - from: {lab.OUT_DEV}
    action: drop
"""


# (name, destination MAC if not in0's, body after the MACs, sink sees it):
# build()'s shape, every kind forwarded
UNTAGGED = [
    ("IPv4 UDP 64 B", None, typed(0x0800, UDP64), True),
    ("60 B", None, size(typed(0x88B5, b""), 60), True),
    ("1514 B: a full 1500 MTU", None, size(typed(0x0800, UDP64), 1514), True),
]
TAGGED = [
    ("802.1Q VID 100, IPv4 UDP", None, tag(0x8100, 100, typed(0x0800, UDP64)), True),
    ("802.1Q VID 7, PCP 5", None, tag(0x8100, 5 << 13 | 7, typed(0x0800, UDP64)), True),
    ("QinQ 802.1ad 10 / 802.1Q 100", None,
     tag(0x88A8, 10, tag(0x8100, 100, typed(0x0800, UDP64))), True),
]


def forward(lab, d, kinds, run_id):
    """Send every kind through; (frames sent, frames received, metrics)."""
    frames = build(kinds, run_id, mac(lab.MACS[lab.IN_DEV]))
    m, got = send_through(lab, d, frames, run_id, len(frames),
                          ("xdpd_tx_packets_total", lab.OUT_DEV))
    return [f for _, f in frames], got, m


def test_push_vlan_tags_every_frame_and_changes_nothing_else(lab, start_daemon):
    d = start_daemon(vlan_config(lab, "push_vlan: 100"))
    sent, got, m = forward(lab, d, UNTAGGED + TAGGED[:1], 0xC1)
    sink = mac(lab.MACS[lab.SINK_DEV])
    expected = {sink + f[6:12] + tag(0x8100, 100, f[12:]) for f in sent}
    assert sorted(got) == sorted(expected), \
        f"frames changed on the way: {[f.hex() for f in got if f not in expected][:3]}"
    assert m.value("xdpd_rx_bytes_total", netdev=lab.IN_DEV) == sum(map(len, sent))
    assert m.value("xdpd_tx_bytes_total", netdev=lab.OUT_DEV) == sum(map(len, sent)) + 4 * len(sent)
    assert m.value("xdpd_dropped_packets_total", netdev=lab.IN_DEV, reason="too_long") == 0
    (iface,) = [i for i in d.status()["interfaces"] if i["name"] == lab.IN_DEV]
    assert iface["rule"] == f"forward to {lab.OUT_DEV}, dst MAC {lab.MACS[lab.SINK_DEV]}, " \
                           "push vlan 100"


def test_pop_vlan_removes_the_outer_tag_and_leaves_untagged_frames_alone(lab, start_daemon):
    d = start_daemon(vlan_config(lab, "pop_vlan: true"))
    sent, got, m = forward(lab, d, TAGGED + UNTAGGED, 0xC2)
    sink = mac(lab.MACS[lab.SINK_DEV])
    expected = {sink + f[6:12] + (f[16:] if f[12:14] in (b"\x81\x00", b"\x88\xa8") else f[12:])
                for f in sent}
    assert sorted(got) == sorted(expected), \
        f"frames changed on the way: {[f.hex() for f in got if f not in expected][:3]}"
    popped = sum(f[12:14] in (b"\x81\x00", b"\x88\xa8") for f in sent)
    assert popped == 3 * len(sent) // 6
    assert m.value("xdpd_tx_bytes_total", netdev=lab.OUT_DEV) == sum(map(len, sent)) - 4 * popped


def test_an_802_1ad_push_and_the_mtu_judged_after_it(lab, start_daemon):
    """The egress takes MTU + 18 bytes: a full 1500 MTU frame with a tag
    already on it, pushed again, is 1522 bytes and dropped as too_long."""
    d = start_daemon(vlan_config(lab, "push_vlan: 4095\n    vlan_proto: 802.1ad"))
    fits = UNTAGGED[:1] + TAGGED[:1]
    long = [("802.1Q 1518 B: MTU + tag", None,
             size(tag(0x8100, 100, typed(0x0800, UDP64)), 1518), True)]
    frames = build(fits + long, 0xC3, mac(lab.MACS[lab.IN_DEV]))
    sent = [f for k, f in frames if k < len(fits)]
    m, got = send_through(lab, d, frames, 0xC3, len(sent),
                          ("xdpd_rx_packets_total", lab.IN_DEV))
    sink = mac(lab.MACS[lab.SINK_DEV])
    assert sorted(got) == sorted(sink + f[6:12] + tag(0x88A8, 4095, f[12:]) for f in sent)
    m = d.wait_for(lambda m: m.value("xdpd_tx_packets_total", netdev=lab.OUT_DEV) >= len(sent))
    assert m.value("xdpd_dropped_packets_total", netdev=lab.IN_DEV, reason="too_long") == \
        len(frames) - len(sent)
