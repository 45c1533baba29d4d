"""The shared control area and the rule compiler, without a kernel."""
import sys

import pytest

from xdpd.config.model import WorkerPlan
from xdpd.config.schema import parse_config
from xdpd.control.table import compile_table
from xdpd.control.workers import Interface, Worker
from xdpd.datapath import _fastpath
from xdpd.datapath.umem import Region, UmemGeometry


@pytest.fixture
def control():
    geo = UmemGeometry(nworkers=3, frames_per_worker=512, frame_size=2048)
    region = Region("test-control", geo.control_size())
    ctl = _fastpath.Control(region.fd, region.size)
    ctl.format(geo.nworkers, geo.frames_per_worker, geo.frame_size, geo.ring_entries)
    yield ctl
    ctl.close()
    region.close()


def test_fresh_area_has_every_frame_free(control):
    for w in range(3):
        assert control.worker_frames(w) == {"free": 512, "rx": 0, "tx": 0, "handoff": 0}
        stats = control.worker_stats(w)
        assert stats["rx_packets"] == 0
        assert set(stats["drops"]) == set(_fastpath.DROP_REASONS)
        assert control.worker_liveness(w) == (0, 0, _fastpath.STATE_NONE, 0)


def test_worker_index_is_checked(control):
    with pytest.raises(IndexError):
        control.worker_frames(3)


def test_tables_flip_and_generation_moves(control):
    assert control.generation() == 0
    assert control.write_table([{"action": "forward", "egress": [1, 2],
                                 "set_dst_mac": b"\x02\0\0\0\0\x04"}, {"action": "drop"}]) == 1
    assert control.write_table([None, None]) == 2
    assert control.generation() == 2


@pytest.mark.parametrize("rules, error", [
    ([{"action": "forward", "egress": []}], "forward rule without egress workers"),
    ([{"action": "forward", "egress": [7]}], "egress worker 7 out of range"),
    ([{"action": "bounce"}], "action must be forward or drop"),
    ([{"action": "drop", "set_dst_mac": b"\x02"}], "MAC must be 6 bytes"),
], ids=["no-egress", "egress-range", "action", "mac-length"])
def test_bad_tables_are_refused(control, rules, error):
    with pytest.raises(ValueError, match=error):
        control.write_table(rules)
    assert control.generation() == 0


def test_ring_entries_must_cover_a_workers_frames():
    with pytest.raises(ValueError, match="ring_entries"):
        _fastpath.control_size(2, 1024, 2048, 512)


def test_compile_table_maps_rules_to_egress_workers():
    config = parse_config("""
interfaces:
  - name: a
  - name: b
  - name: c
forward:
  - from: a
    to: b
    set_dst_mac: "02:00:00:00:00:04"
  - from: b
    action: drop
""")
    ifaces = [Interface(n, i, 10 + i, program=None) for i, n in enumerate("abc")]
    workers = [Worker(i, WorkerPlan(n, q, 0, f"{n}/q{q}"), "abc".index(n), socket=None)
               for i, (n, q) in enumerate([("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0)])]
    table = compile_table(config, ifaces, workers)
    assert table[0] == [{"action": "forward", "id": 0, "match": None, "egress": [2, 3],
                         "set_dst_mac": bytes.fromhex("020000000004"),
                         "set_src_mac": None, "swap_macs": False, "max_len": None,
                         "push_vlan": None, "vlan_proto": 0x8100, "pop_vlan": False}]
    assert table[1] == [{"action": "drop", "id": 1, "match": None}]
    assert table[2] is None        # no rule: dropped as no_rule
    # the egress MTU limits the frame length: + Ethernet header + one VLAN tag
    table = compile_table(config, ifaces, workers, mtus={"a": 9000, "b": 1280})
    assert table[0][0]["max_len"] == 1280 + 18


def test_compile_table_carries_vlan_actions_and_status_names_them(control):
    from xdpd.control.snapshot import describe_rule
    config = parse_config("""
interfaces: [{name: a}, {name: b}]
forward:
  - {from: a, to: b, push_vlan: 100}
  - {from: b, to: a, match: {vlan: 5}, pop_vlan: true}
  - {from: b, to: a, push_vlan: 7, vlan_proto: 802.1ad, swap_macs: true}
""")
    ifaces = [Interface(n, i, 10 + i, program=None) for i, n in enumerate("ab")]
    workers = [Worker(i, WorkerPlan(n, 0, 0, f"{n}/q0"), "ab".index(n), socket=None)
               for i, n in enumerate("ab")]
    table = compile_table(config, ifaces, workers)
    assert [(r["push_vlan"], r["vlan_proto"], r["pop_vlan"]) for r in table[0] + table[1]] == \
        [(100, 0x8100, False), (None, 0x8100, True), (7, 0x88a8, False)]
    assert control.write_table(table) == 1
    assert describe_rule(config, "a") == "forward to b, push vlan 100"
    assert describe_rule(config, "b") == \
        "vlan 5: forward to a, pop vlan; forward to a, swap MACs, push vlan 7 (802.1ad)"


@pytest.mark.parametrize("rule, error", [
    ({"push_vlan": 4096}, "push_vlan out of range 0..4095"),
    ({"push_vlan": 1, "vlan_proto": 0x0800}, "vlan_proto must be 0x8100 or 0x88a8"),
    ({"push_vlan": 1, "pop_vlan": True}, "push_vlan and pop_vlan in one rule"),
], ids=["id", "proto", "both"])
def test_the_fast_path_refuses_a_bad_vlan_action(control, rule, error):
    with pytest.raises(ValueError, match=error):
        control.write_table([[{"action": "forward", "egress": [0], **rule}]])


def test_compile_table_lists_a_netdevs_rules_in_order_with_their_matches(control):
    from xdpd.kernel.xdp_program import XDPD_MATCH_DST_PORT, XDPD_MATCH_IP_PROTO, XdpdMatch
    config = parse_config("""
interfaces: [{name: a}, {name: b}]
forward:
  - {from: b, action: drop}
  - {from: a, to: b, match: {ip_proto: udp, dst_port: 4789}}
  - {from: a, action: drop}
""")
    ifaces = [Interface(n, i, 10 + i, program=None) for i, n in enumerate("ab")]
    workers = [Worker(i, WorkerPlan(n, 0, 0, f"{n}/q0"), "ab".index(n), socket=None)
               for i, n in enumerate("ab")]
    rules = compile_table(config, ifaces, workers)[0]
    assert [(r["id"], r["action"]) for r in rules] == [(1, "forward"), (2, "drop")]
    assert rules[0]["egress"] == [1] and rules[1]["match"] is None
    m = XdpdMatch.from_buffer_copy(rules[0]["match"])
    assert m.fields == XDPD_MATCH_IP_PROTO | XDPD_MATCH_DST_PORT
    assert m.ip_proto == 17
    assert m.dst_port == int.from_bytes((4789).to_bytes(2, "big"), sys.byteorder)  # network order
    assert control.write_table(compile_table(config, ifaces, workers)) == 1


def test_hugepages_auto_uses_huge_pages_when_free_else_says_why():
    from xdpd.datapath.umem import SharedUmem, UmemGeometry, hugepage_size, hugepages_free
    geo = UmemGeometry(1, 512, 2048)            # 1 MiB: rounded up to one huge page
    enough = hugepages_free() >= -(-geo.size // hugepage_size())
    umem = SharedUmem(geo, "auto")
    try:
        if enough:
            assert umem.umem.hugepages and umem.umem.size % hugepage_size() == 0
            assert "huge pages of" in umem.backing
        else:
            assert not umem.umem.hugepages and umem.umem.size == geo.size
            assert umem.backing.startswith("normal pages, huge pages not available: 1 free")
    finally:
        umem.close()


def test_hugepages_on_without_free_huge_pages_names_the_sysctl():
    import pytest

    from xdpd.datapath.umem import HugepageError, SharedUmem, UmemGeometry, hugepages_free
    if hugepages_free() > 64:
        pytest.skip("this host has huge pages to spare; the shortage cannot be shown")
    geo = UmemGeometry(64, 65536, 4096)         # 16 GiB: more than any spare pool here
    with pytest.raises(HugepageError) as info:
        SharedUmem(geo, "on")
    assert "umem.hugepages is on but huge pages are not available" in str(info.value)
    assert "sysctl vm.nr_hugepages=8192" in str(info.value)


def test_rules_in_words_and_their_counters_by_forward_index():
    from types import SimpleNamespace

    from xdpd.control.snapshot import describe_rule
    from xdpd.control.workers import worker_rule_counts
    config = parse_config("""
interfaces: [{name: a}, {name: b}]
forward:
  - {from: b, action: drop}
  - {from: a, to: b, match: {ip_proto: udp, dst_port: 53}, set_dst_mac: "02:00:00:00:00:04"}
  - {from: a, action: drop}
""")
    assert describe_rule(config, "a") == \
        "udp dst port 53: forward to b, dst MAC 02:00:00:00:00:04; drop"
    assert describe_rule(config, "b") == "drop"

    class Control:
        def rule_stats(self, i):
            return [7, 3] + [0] * 14, [700, 300] + [0] * 14
    worker = SimpleNamespace(id=0, plan=WorkerPlan("a", 0, 0, "a/q0"))
    assert [(r.index, p, b) for r, p, b in worker_rule_counts(config, Control(), worker)] == \
        [(1, 7, 700), (2, 3, 300)]
