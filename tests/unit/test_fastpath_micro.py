"""The fast-path microbenchmark on synthetic rings: correctness, not speed.

Each scenario of bench/fastpath_micro.py runs the workers' own loop step on
in-process rings; these checks say that every packet is accounted for, that
every frame is where the control area says, and that the frames carry what
the rule asked for.  No timing is asserted.
"""
import importlib.util
import ipaddress
import json
import mmap
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from xdpd.datapath import _fastpath

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "fastpath_micro.py")


def _load_bench():
    spec = importlib.util.spec_from_file_location("fastpath_micro", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod        # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()

# Smaller than the daemon's defaults so a run takes milliseconds; the ring
# sizes differ from one another so that a mixed-up ring would show.
SETUP = bench.Setup(packets=100_000, batch=64, size=64, frame_size=2048,
                    frames_per_worker=1024, rings=(512, 256, 1024, 2048), hugepages="off")


def run(name, setup=SETUP):
    """Run a scenario; return the result, each worker's frame counts, and
    the ingress worker's frames as (MACs, rest of the packet) pairs."""
    scenario = bench.SCENARIOS[name]
    umem = bench.prepare(scenario, setup)
    try:
        r = bench.run_once(umem, scenario, setup)
        frames = [umem.control.worker_frames(w) for w in range(scenario.nworkers)]
        with mmap.mmap(umem.umem.fd, umem.umem.size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            packets = []
            for f in range(setup.frames_per_worker):      # worker 0's frames
                at = f * setup.frame_size + r["headroom"]
                packets.append((m[at:at + 12], m[at + 12:at + setup.size]))
    finally:
        umem.close()
    return r, frames, packets


def assert_frames_settled(frames, setup=SETUP):
    for f in frames:
        assert sum(f.values()) == setup.frames_per_worker
        assert f["tx"] == 0 and f["handoff"] == 0     # everything came home


def assert_macs(r, packets, rewritten):
    """Every frame holds the original packet, or the original with its MACs
    as `rewritten`; the packet past the MACs is never touched."""
    original = r["frame"][:12]
    changed = 0
    for macs, rest in packets:
        assert rest == r["frame"][12:]
        assert macs in (original, rewritten)
        changed += macs != original
    return changed


@pytest.mark.parametrize("name", ["io", "mac", "swap"])
def test_forwarding_to_oneself_sends_every_packet(name):
    r, frames, packets = run(name)
    n = SETUP.packets
    assert r["packets"] == r["transmitted"] == n and r["dropped"] == 0
    (w,) = r["workers"]
    assert w["rx_packets"] == w["tx_packets"] == n
    assert w["rx_bytes"] == w["tx_bytes"] == n * SETUP.size
    assert sum(w["drops"].values()) == 0
    assert w["handoff_out"] == w["handoff_in"] == 0
    # synthetic rings never ask for a wakeup, and nothing busy-polls
    assert w["tx_kicks"] == w["fill_kicks"] == w["busy_polls"] == w["sleeps"] == 0
    assert_frames_settled(frames)
    original = r["frame"][:12]
    expected = {"io": original,
                "mac": bench.DST_MAC + bench.SRC_MAC,
                "swap": original[6:] + original[:6]}[name]
    changed = assert_macs(r, packets, expected)
    if name == "io":
        assert changed == 0
    else:
        # the frames cycle LIFO, so not every one is used; at least a batch is
        assert changed >= SETUP.batch


def test_handoff_passes_every_packet_to_the_peer_and_every_frame_home():
    r, frames, packets = run("handoff")
    n = SETUP.packets
    assert r["transmitted"] == n and r["dropped"] == 0
    w0, w1 = r["workers"]
    assert w0["rx_packets"] == w0["handoff_out"] == n
    assert w1["handoff_in"] == w1["tx_packets"] == n
    assert w0["tx_packets"] == 0 and w1["rx_packets"] == 0
    assert sum(w0["drops"].values()) == sum(w1["drops"].values()) == 0
    assert_frames_settled(frames)
    # worker 1 never lent a frame of its own: all of them wait in its FILL ring
    assert frames[1] == {"free": 0, "rx": SETUP.frames_per_worker, "tx": 0, "handoff": 0}
    assert assert_macs(r, packets, bench.DST_MAC + bench.SRC_MAC) >= SETUP.batch


def test_drop_rule_drops_every_packet_untouched():
    r, frames, packets = run("drop")
    n = SETUP.packets
    assert r["transmitted"] == 0 and r["dropped"] == n
    (w,) = r["workers"]
    assert w["rx_packets"] == w["drops"]["rule"] == n
    assert w["tx_packets"] == 0
    assert_frames_settled(frames)
    assert assert_macs(r, packets, r["frame"][:12]) == 0


def test_first_matching_rule_takes_every_packet_and_counts_it():
    r, frames, packets = run("match")
    n = SETUP.packets
    assert r["transmitted"] == n and r["dropped"] == 0
    (w,) = r["workers"]
    assert w["rx_packets"] == w["tx_packets"] == n
    assert sum(w["drops"].values()) == 0
    assert_frames_settled(frames)
    assert assert_macs(r, packets, bench.DST_MAC + bench.SRC_MAC) >= SETUP.batch


@pytest.mark.parametrize("name", ["match", "io"])
def test_a_tx_ring_smaller_than_a_batch_holds_packets_back_never_drops(name):
    setup = replace(SETUP, packets=20_000, rings=(512, 16, 1024, 2048))
    r, frames, _ = run(name, setup)
    assert r["transmitted"] == 20_000 and r["dropped"] == 0
    assert_frames_settled(frames, setup)


def run_rules(table, nworkers=1, setup=SETUP):
    """A one-off scenario: the result, and worker 0's rule counters."""
    scenario = bench.Scenario("rules", nworkers, table, (0,), "test")
    umem = bench.prepare(scenario, setup)
    try:
        r = bench.run_once(umem, scenario, setup)
        packets, bytes_ = umem.control.rule_stats(0)
        frames = [umem.control.worker_frames(w) for w in range(nworkers)]
    finally:
        umem.close()
    assert_frames_settled(frames, setup)
    return r, packets, bytes_


M = bench.match_bytes
DROP_RULE = {"action": "drop"}


@pytest.mark.parametrize("rules, taken_by, outcome", [
    # the emulated packets: UDP 198.18.0.1:1024 -> 198.19.0.1:9, untagged
    ([{**DROP_RULE, "match": M(dst_port=9)}, bench._forward([0])], 0, "rule"),
    ([{**DROP_RULE, "match": M(dst_port=10)}, bench._forward([0])], 1, "sent"),
    ([bench._forward([0], match=M(src=ipaddress.ip_network("198.18.0.0/16"))),
      DROP_RULE], 0, "sent"),
    ([bench._forward([0], match=M(vlan=5)), DROP_RULE], 1, "rule"),
    ([bench._forward([0], match=M(vlan="none", ethertype=0x0800, src_port=1024))], 0, "sent"),
    ([bench._forward([0], match=M(ip_proto=6))], None, "no_rule"),
    ([bench._forward([0], match=M(dst=ipaddress.ip_network("2001:db8::/32")))],
     None, "no_rule"),
], ids=["drop-first", "second-forwards", "src-prefix", "vlan-misses", "untagged-port",
        "nothing-fits", "other-family"])
def test_first_match_wins_and_its_rule_counts(rules, taken_by, outcome):
    n = SETUP.packets
    r, packets, bytes_ = run_rules([rules])
    (w,) = r["workers"]
    if outcome == "sent":
        assert r["transmitted"] == w["tx_packets"] == n
    else:
        assert w["drops"][outcome] == n and r["transmitted"] == 0
    expect = [0] * 16
    if taken_by is not None:
        expect[taken_by] = n
    assert packets == expect
    assert bytes_ == [p * SETUP.size for p in expect]


def test_a_match_hands_packets_to_another_worker():
    n = SETUP.packets
    table = [[{**DROP_RULE, "match": M(dst_port=53)},
              bench._forward([1], match=M(dst_port=9), set_dst_mac=bench.DST_MAC)], None]
    r, packets, _ = run_rules(table, nworkers=2)
    w0, w1 = r["workers"]
    assert w0["handoff_out"] == w1["handoff_in"] == w1["tx_packets"] == n
    assert packets[:2] == [0, n]


def test_one_rule_without_a_match_counts_as_rule_0():
    r, packets, bytes_ = run_rules([bench._forward([0])])
    assert packets[0] == SETUP.packets and bytes_[0] == SETUP.packets * SETUP.size
    assert sum(packets) == SETUP.packets


def test_write_table_refuses_more_rules_than_fit_and_bad_matches():
    scenario = bench.SCENARIOS["io"]
    umem = bench.prepare(scenario, SETUP)
    try:
        with pytest.raises(ValueError, match="at most 16 rules per netdev"):
            umem.control.write_table([[DROP_RULE] * 17])
        with pytest.raises(ValueError, match="match must be 80 bytes"):
            umem.control.write_table([[{**DROP_RULE, "match": b"x"}]])
    finally:
        umem.close()


def test_odd_sizes_and_batches_are_accounted_exactly():
    setup = replace(SETUP, packets=12_345, batch=7, size=1514)
    r, frames, _ = run("mac", setup)
    assert r["transmitted"] == 12_345
    assert r["workers"][0]["tx_bytes"] == 12_345 * 1514
    assert_frames_settled(frames, setup)


def test_packet_is_ethernet_ipv4_udp_with_a_valid_header_checksum():
    r, _, _ = run("io", replace(SETUP, packets=1))
    f = r["frame"]
    assert len(f) == SETUP.size and f[12:14] == b"\x08\x00"
    ip = f[14:34]
    assert ip[0] == 0x45 and ip[9] == 17
    assert int.from_bytes(ip[2:4], "big") == SETUP.size - 14
    total = sum(int.from_bytes(ip[i:i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    assert total == 0xffff
    assert int.from_bytes(f[38:40], "big") == SETUP.size - 34     # UDP length


def test_microbench_refuses_an_area_that_was_already_used():
    scenario = bench.SCENARIOS["io"]
    umem = bench.prepare(scenario, SETUP)
    try:
        bench.run_once(umem, scenario, SETUP)
        with pytest.raises(ValueError, match="format"):
            bench.run_once(umem, scenario, SETUP)
    finally:
        umem.close()


@pytest.mark.parametrize("change, error", [
    ({"size": 59}, "pkt_len 59 out of range 60..1792"),
    ({"size": 1793}, "pkt_len 1793 out of range"),
    ({"rings": (512, 300, 1024, 2048)}, "powers of two"),
    ({"batch": 0}, "batch_size out of range"),
    ({"frags": 3, "max_segs": 2}, "frags 3: 1..64, and at most max_segs"),
    ({"frags": 2, "max_segs": 0}, "at most max_segs \\(0\\)"),
    ({"frags": 2, "max_segs": 65}, "max_segs 65: 0, or 2..64"),
    ({"frags": 1, "max_segs": 128, "batch": 64}, "at most batch_size"),
], ids=["runt", "too-long", "ring-size", "batch", "frags-over-max-segs", "no-chains",
        "max-segs", "segs-over-batch"])
def test_microbench_checks_its_arguments(change, error):
    setup = replace(SETUP, **change)
    scenario = bench.SCENARIOS["io"]
    umem = bench.prepare(scenario, setup)
    try:
        with pytest.raises(ValueError, match=error):
            bench.run_once(umem, scenario, setup)
    finally:
        umem.close()


def test_a_netdev_without_a_rule_drops_every_packet_as_no_rule():
    scenario = bench.Scenario("none", 1, [None], (0,), "no rule")
    umem = bench.prepare(scenario, SETUP)
    try:
        r = bench.run_once(umem, scenario, SETUP)
    finally:
        umem.close()
    assert r["workers"][0]["drops"]["no_rule"] == SETUP.packets


def test_port_takes_busy_poll_as_a_keyword_and_needs_a_socket():
    scenario = bench.SCENARIOS["io"]
    umem = bench.prepare(scenario, SETUP)
    try:
        args = (umem.control, 0, -1, umem.umem.fd, umem.umem.size, SETUP.rings, 64, False, [-1])
        # the keyword parses; the missing socket is what is refused
        with pytest.raises(ValueError, match="xsk_fd must be an AF_XDP socket"):
            _fastpath.Port(*args, busy_poll=True)
        with pytest.raises(TypeError):
            _fastpath.Port(*args, True)              # busy_poll is keyword-only
        with pytest.raises(TypeError):
            _fastpath.Port(*args, busy_pol=True)
        assert umem.control.worker_stats(0)["busy_polls"] == 0
    finally:
        umem.close()


def test_script_prints_json():
    out = subprocess.run([sys.executable, SCRIPT, "--packets", "5000", "--runs", "2",
                          "--hugepages", "off", "--json"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    doc = json.loads(out)
    rows = {r["scenario"]: r for r in doc["scenarios"]}
    assert set(rows) == set(bench.SCENARIOS)
    for r in rows.values():
        assert len(r["mpps"]) == 2 and r["mpps_min"] <= r["mpps_median"] <= r["mpps_max"]
        assert all(run["packets"] == 5000 for run in r["runs"])


def run_vlan(table, nworkers=1, setup=SETUP):
    """A one-off scenario: the result, and the bytes just before each of
    worker 0's packets and its first 16 (where a pushed tag lands)."""
    scenario = bench.Scenario("vlan", nworkers, table, (0,), "test")
    umem = bench.prepare(scenario, setup)
    try:
        r = bench.run_once(umem, scenario, setup)
        frames = [umem.control.worker_frames(w) for w in range(nworkers)]
        with mmap.mmap(umem.umem.fd, umem.umem.size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            heads = [m[at - 4:at + 16] for at in
                     (f * setup.frame_size + r["headroom"] for f in range(setup.frames_per_worker))]
    finally:
        umem.close()
    assert_frames_settled(frames, setup)
    return r, heads


@pytest.mark.parametrize("egress, proto", [(0, 0x8100), (1, 0x88a8)], ids=["tx", "handoff"])
def test_a_pushed_tag_makes_every_packet_4_bytes_longer(egress, proto):
    """Sent from 4 bytes before where the kernel put it: the TX descriptor
    and the handoff entry carry the new address, and the frame still goes
    home by its masked address (frames settled)."""
    n = SETUP.packets
    r, heads = run_vlan([[bench._forward([egress], push_vlan=100, vlan_proto=proto)], None],
                        nworkers=2)
    w0, w1 = r["workers"]
    tx = (w0, w1)[egress]
    assert r["transmitted"] == tx["tx_packets"] == n and r["dropped"] == 0
    assert w0["rx_bytes"] == n * SETUP.size and tx["tx_bytes"] == n * (SETUP.size + 4)
    ethertype = r["frame"][12:14]
    for head in heads:
        # MACs moved 4 bytes forward, then TPID and TCI, then the ethertype
        assert head[12:16] == proto.to_bytes(2, "big") + (100).to_bytes(2, "big")
        assert head[16:18] == ethertype


def test_max_len_is_judged_after_the_push():
    n = SETUP.packets
    r, _ = run_vlan([[bench._forward([0], push_vlan=5, max_len=SETUP.size + 3)]])
    (w,) = r["workers"]
    assert w["drops"]["too_long"] == n and r["transmitted"] == 0
    r, _ = run_vlan([[bench._forward([0], push_vlan=5, max_len=SETUP.size + 4)]])
    assert r["transmitted"] == n


def test_pop_leaves_an_untagged_packet_as_it_is():
    n = SETUP.packets
    r, heads = run_vlan([[bench._forward([0], pop_vlan=True)]])
    (w,) = r["workers"]
    assert r["transmitted"] == n and w["tx_bytes"] == n * SETUP.size
    assert all(head[4:] == r["frame"][:16] for head in heads)


# Descriptor chains (multi-buffer): with --frags N every packet is N
# descriptors, the first N-1 whole frames (less the headroom) and the last
# --size bytes; the ports are built with max_segs.
WHOLE = SETUP.frame_size - 256


@pytest.mark.parametrize("frags", [1, 3])
@pytest.mark.parametrize("name", ["io", "mac", "handoff"])
def test_chains_cross_whole_and_every_frame_comes_home(name, frags):
    setup = replace(SETUP, packets=20_000, frags=frags, max_segs=bench.COPY_MAX_SEGS)
    r, frames, packets = run(name, setup)
    n, size = setup.packets, (frags - 1) * WHOLE + setup.size
    assert r["transmitted"] == n and r["dropped"] == 0 and r["frags"] == frags
    rx, tx = r["workers"][0], r["workers"][-1]
    assert rx["rx_packets"] == n and rx["rx_frags"] == n * frags and rx["rx_bytes"] == n * size
    assert tx["tx_packets"] == n and tx["tx_descs"] == n * frags and tx["tx_bytes"] == n * size
    assert sum(rx["drops"].values()) == 0
    if name == "handoff":
        assert rx["handoff_out"] == tx["handoff_in"] == n
    assert_frames_settled(frames, setup)
    # fragment 0 carries the headers (the IPv4 length is the whole packet's);
    # only its MACs change, and no other byte of any frame
    assert int.from_bytes(r["frame"][16:18], "big") == size - 14
    first = dict(r, frame=r["frame"][:setup.size])
    changed = assert_macs(first, packets, bench.DST_MAC + bench.SRC_MAC)
    assert changed == 0 if name == "io" else changed >= setup.batch // frags


def test_script_runs_chains():
    out = subprocess.run([sys.executable, SCRIPT, "--packets", "3000", "--runs", "1",
                          "--hugepages", "off", "--frags", "5", "--scenarios", "io,handoff"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "5-descriptor packets of 7232 B (4 x 1792 + 64), max_segs 18" in out
    r = subprocess.run([sys.executable, SCRIPT, "--frags", "19"], capture_output=True, text=True)
    assert r.returncode == 2 and "at most --max-segs (18)" in r.stderr
