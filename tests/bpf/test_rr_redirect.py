"""rr_redirect through BPF_PROG_TEST_RUN, and xdpd.kernel's libbpf calls.

The verdict cases are a table: each names what it shows, the packet, the
queue it arrives on, the queue configuration and the expected verdict and
counter.  Test runs pass ingress_ifindex/rx_queue_index of a real multi-queue
veth, so ctx->rx_queue_index is what a real packet would carry.
"""
import contextlib
import ctypes
import errno
import ipaddress
import logging
import mmap
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from xdpd.config.model import Match
from xdpd.kernel import libbpf, xdp_program
from xdpd.kernel.libbpf import XDP_DROP, XDP_PASS, XDP_REDIRECT
from xdpd.lab.xdp import test_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AF_XDP = 44

# --- packets -----------------------------------------------------------------

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp4(payload: bytes = b"xdpd" * 8) -> bytes:
    udp = struct.pack("!HHHH", 4000, 5000, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return MAC_B + MAC_A + b"\x08\x00" + hdr + udp


def arp_request() -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A,
                      socket.inet_aton("10.0.0.1"), bytes(6),
                      socket.inet_aton("10.0.0.2"))
    return b"\xff" * 6 + MAC_A + b"\x08\x06" + arp + bytes(18)


def runt() -> bytes:
    """An Ethernet header and nothing else: the smallest frame test-run takes."""
    return MAC_B + MAC_A + b"\x88\xb5"


# --- verdict table -------------------------------------------------------------

@dataclass
class Case:
    desc: str
    packet: bytes
    queue: int                          # rx queue the packet arrives on
    conf: dict = field(default_factory=dict)      # queue -> (owned, fallback)
    sockets: tuple = ()                 # queues with a socket in xsks
    expect: int = XDP_PASS
    counter: str | None = None          # the queue_stats field that moves
    repeat: int = 1


CASES = [
    Case("owned queue with a socket: redirected to the socket",
         udp4(), queue=1, conf={1: (True, "pass")}, sockets=(1,),
         expect=XDP_REDIRECT, counter="redirected", repeat=7),
    Case("owned queue, socket gone, fallback pass: left to the kernel",
         udp4(), queue=2, conf={2: (True, "pass")},
         expect=XDP_PASS, counter="no_socket", repeat=5),
    Case("owned queue, socket gone, fallback drop: dropped",
         udp4(), queue=2, conf={2: (True, "drop")},
         expect=XDP_DROP, counter="no_socket", repeat=3),
    Case("queue not owned: passed, even with a socket in xsks",
         udp4(), queue=0, conf={0: (False, "drop")}, sockets=(0,),
         expect=XDP_PASS, counter="passed", repeat=4),
    Case("queue never configured: not owned, passed",
         udp4(), queue=3, conf={1: (True, "drop")}, sockets=(1,),
         expect=XDP_PASS, counter="passed"),
    Case("another queue's socket does not take this queue's packets",
         udp4(), queue=2, conf={2: (True, "drop"), 3: (True, "drop")}, sockets=(3,),
         expect=XDP_DROP, counter="no_socket"),
    Case("ARP on an owned queue is redirected too: the program does not parse",
         arp_request(), queue=3, conf={3: (True, "pass")}, sockets=(3,),
         expect=XDP_REDIRECT, counter="redirected"),
    Case("smallest frame on an owned queue is redirected",
         runt(), queue=0, conf={0: (True, "drop")}, sockets=(0,),
         expect=XDP_REDIRECT, counter="redirected", repeat=2),
]


def all_stats(prog, queues):
    return {q: prog.queue_stats(q) for q in range(queues)}


@pytest.mark.root
@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_verdict(prog, lab, case):
    # The kernel accepts an AF_XDP socket in an XSKMAP before it is bound
    # (it only checks the socket family), and a test run does not deliver
    # the frame, so an unbound socket stands in for a worker's socket.
    socks = []
    try:
        for q, (owned, fallback) in case.conf.items():
            prog.set_queue(q, owned, fallback)
        for q in case.sockets:
            s = socket.socket(AF_XDP, socket.SOCK_RAW)
            socks.append(s)
            prog.set_socket(q, s.fileno())
        before = all_stats(prog, lab.queues)

        verdict = test_run(prog, case.packet, ingress_ifindex=lab.ifindex,
                                rx_queue_index=case.queue, repeat=case.repeat)

        assert verdict == case.expect, case.desc
        after = all_stats(prog, lab.queues)
        expected = {q: dict(v) for q, v in before.items()}
        expected[case.queue][case.counter] += case.repeat
        assert after == expected, case.desc
    finally:
        for s in socks:
            s.close()


@pytest.mark.root
def test_queue_beyond_maps_is_passed_uncounted(rr_object, make_lab):
    """A queue >= XDPD_MAX_QUEUES has no conf and no counter: passed."""
    with make_lab(xdp_program.XDPD_MAX_QUEUES + 1) as lab, \
            xdp_program.XdpProgram.load(rr_object, name=lab.ifname) as prog, \
            socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        for q in (0, xdp_program.XDPD_MAX_QUEUES - 1):
            prog.set_queue(q, True, "drop")
            prog.set_socket(q, s.fileno())
        verdict = test_run(prog, udp4(), lab.ifindex, xdp_program.XDPD_MAX_QUEUES, repeat=3)
        assert verdict == XDP_PASS
        zero = {"redirected": 0, "passed": 0, "no_socket": 0, "pass_rule": 0,
                "fanout_to_owner": 0}
        assert prog.queue_stats(0) == zero
        assert prog.queue_stats(xdp_program.XDPD_MAX_QUEUES - 1) == zero


@pytest.mark.root
def test_socket_cleared_applies_fallback(prog, lab):
    """A worker restart: the socket leaves xsks, the fallback takes over,
    and a new socket takes the traffic again."""
    prog.set_queue(1, True, "drop")
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(1, s.fileno())
        assert test_run(prog, udp4(), lab.ifindex, 1) == XDP_REDIRECT
        prog.clear_socket(1)
        prog.clear_socket(1)                    # already gone: not an error
        assert test_run(prog, udp4(), lab.ifindex, 1) == XDP_DROP
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(1, s.fileno())
        assert test_run(prog, udp4(), lab.ifindex, 1) == XDP_REDIRECT
    assert prog.queue_stats(1) == {"redirected": 2, "passed": 0, "no_socket": 1,
                                   "pass_rule": 0, "fanout_to_owner": 0}


@pytest.mark.root
def test_closed_socket_leaves_xsks(prog, lab):
    """The kernel drops a socket's XSKMAP entries when the socket is freed, so
    a dead worker's socket cannot swallow its queue's packets."""
    prog.set_queue(2, True, "pass")
    s = socket.socket(AF_XDP, socket.SOCK_RAW)
    prog.set_socket(2, s.fileno())
    s.close()
    assert test_run(prog, udp4(), lab.ifindex, 2) == XDP_PASS
    assert prog.queue_stats(2)["no_socket"] == 1


# --- pass rules: which packets on owned queues stay with the kernel ------------

def frame(ethertype: int, payload: bytes, vlans: tuple = (), tpids: tuple = ()) -> bytes:
    """Ethernet, the given VLAN ids as tags (outer first; TPID 0x8100 unless
    tpids says otherwise), then ethertype and payload."""
    tags = b"".join(struct.pack("!HH", (tpids[i] if i < len(tpids) else 0x8100), vid)
                    for i, vid in enumerate(vlans))
    return MAC_B + MAC_A + tags + struct.pack("!H", ethertype) + payload


def ports(sport: int, dport: int, proto: int) -> bytes:
    if proto == 6:      # TCP: ports, seq, ack, offset 5, SYN
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0)
    return struct.pack("!HHHH", sport, dport, 8, 0)


def ip4(proto: int, l4: bytes, src="10.0.0.1", dst="10.0.0.2", options=b"",
        frag_off=0) -> bytes:
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(l4), 1, frag_off,
                      64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return frame(0x0800, hdr + options + l4)[14:]


def ip6(nexthdr: int, l4: bytes, src="2001:db8::1", dst="2001:db8:1::2") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), nexthdr, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + l4


def tcp4(dport=5000, sport=40000, **kw) -> bytes:
    return frame(0x0800, ip4(6, ports(sport, dport, 6), **kw))


def udp6(dport=5000, sport=4000, **kw) -> bytes:
    return frame(0x86DD, ip6(17, ports(sport, dport, 17), **kw))


def M(**kw) -> Match:
    """A Match as the config loader would make it."""
    for key in ("src", "dst"):
        if key in kw:
            kw[key] = ipaddress.ip_network(kw[key])
    return Match(**kw)


ARP, IPV4, IPV6 = 0x0806, 0x0800, 0x86DD
SSH = M(ip_proto=6, dst_port=22)
KEEP_HOST = [M(ethertype=ARP), SSH]


@dataclass
class RuleCase:
    desc: str
    packet: bytes
    rules: list
    passed: bool                # True: XDP_PASS as pass_rule; False: redirected


RULE_CASES = [
    RuleCase("no rules: ARP is redirected as before", arp_request(), [], False),
    RuleCase("ARP passed by an ethertype rule", arp_request(), KEEP_HOST, True),
    RuleCase("SSH (tcp dst 22) passed", tcp4(dport=22), KEEP_HOST, True),
    RuleCase("other TCP redirected", tcp4(dport=23), KEEP_HOST, False),
    RuleCase("UDP to port 22 is not tcp dst 22", frame(IPV4, ip4(17, ports(1, 22, 17))),
             KEEP_HOST, False),
    RuleCase("ports without ip_proto: UDP matches", frame(IPV4, ip4(17, ports(1, 53, 17))),
             [M(dst_port=53)], True),
    RuleCase("IPv4 options are skipped by IHL", tcp4(dport=22, options=b"\x01" * 8),
             [SSH], True),
    RuleCase("a later fragment has no ports: not matched",
             tcp4(dport=22, frag_off=0x0010), [SSH], False),
    RuleCase("a first fragment has ports: matched", tcp4(dport=22, frag_off=0x2000),
             [SSH], True),
    RuleCase("src prefix match", tcp4(src="192.168.7.9"), [M(src="192.168.0.0/16")], True),
    RuleCase("src prefix miss", tcp4(src="192.169.7.9"), [M(src="192.168.0.0/16")], False),
    RuleCase("dst host address", tcp4(dst="10.0.0.2"), [M(dst="10.0.0.2")], True),
    RuleCase("IPv4 prefix never matches an IPv6 packet", udp6(), [M(src="0.0.0.0/0")], False),
    RuleCase("IPv6 prefix and port", udp6(dport=546), [M(dst="2001:db8:1::/48", dst_port=546)],
             True),
    RuleCase("IPv6 prefix, other port", udp6(dport=547), [M(dst="2001:db8:1::/48", dst_port=546)],
             False),
    RuleCase("IPv6 prefix miss in the last word", udp6(dst="2001:db8:1::3"),
             [M(dst="2001:db8:1::2")], False),
    RuleCase("IPv6 src ::/0 takes every IPv6 packet", udp6(), [M(src="::/0")], True),
    RuleCase("icmpv6 by ip_proto", frame(IPV6, ip6(58, b"\x80\0\0\0" + bytes(4))),
             [M(ip_proto=58)], True),
    RuleCase("extension header: ip_proto is the extension's, no ports",
             frame(IPV6, ip6(0, bytes([17, 0]) + bytes(6) + ports(1, 53, 17))),
             [M(dst_port=53)], False),
    RuleCase("VLAN-tagged matched by its id", frame(ARP, arp_request()[14:], vlans=(100,)),
             [M(vlan=100)], True),
    RuleCase("VLAN-tagged, other id", frame(ARP, arp_request()[14:], vlans=(101,)),
             [M(vlan=100)], False),
    RuleCase("ethertype is what follows the tag", frame(ARP, arp_request()[14:], vlans=(5,)),
             [M(ethertype=ARP)], True),
    RuleCase("QinQ (802.1ad outer): outer id and inner payload",
             frame(IPV4, ip4(6, ports(1, 22, 6)), vlans=(300, 7), tpids=(0x88A8, 0x8100)),
             [M(vlan=300, ip_proto=6, dst_port=22)], True),
    RuleCase("QinQ: the inner id is not the vlan",
             frame(IPV4, ip4(6, ports(1, 22, 6)), vlans=(300, 7), tpids=(0x88A8, 0x8100)),
             [M(vlan=7)], False),
    RuleCase("three tags: nothing past them is read",
             frame(ARP, arp_request()[14:], vlans=(1, 2, 3)), [M(ethertype=ARP)], False),
    RuleCase("three tags: the outer id still matches",
             frame(ARP, arp_request()[14:], vlans=(1, 2, 3)), [M(vlan=1)], True),
    RuleCase("untagged matched by vlan none", tcp4(), [M(vlan="none")], True),
    RuleCase("tagged is not vlan none", frame(ARP, arp_request()[14:], vlans=(1,)),
             [M(vlan="none")], False),
    RuleCase("every field of a rule must match",
             tcp4(dport=22, src="10.1.2.3"), [M(ip_proto=6, dst_port=22, src="10.2.0.0/16")],
             False),
    RuleCase("any rule may match: the last one does", tcp4(dport=8080),
             [M(ethertype=ARP)] * 15 + [M(dst_port=8080)], True),
    # truncated headers: a field that is not in the frame never matches
    RuleCase("truncated VLAN tag: no id", MAC_B + MAC_A + b"\x81\x00\x00",
             [M(vlan=0)], False),
    RuleCase("truncated IPv4 header: no addresses", tcp4()[:14 + 19],
             [M(src="0.0.0.0/0")], False),
    RuleCase("truncated IPv4 header: ethertype known", tcp4()[:14 + 19],
             [M(ethertype=IPV4)], True),
    RuleCase("IHL below 5: not read as IPv4", frame(IPV4, b"\x44" + ip4(6, b"")[1:]),
             [M(ip_proto=6)], False),
    RuleCase("IHL past the frame: no ports", tcp4(dport=22, options=b"\x01" * 40)[:14 + 20 + 40 + 3],
             [SSH], False),
    RuleCase("truncated TCP ports: protocol matches, ports do not", tcp4(dport=22)[:14 + 20 + 3],
             [SSH], False),
    RuleCase("truncated TCP ports, protocol only", tcp4(dport=22)[:14 + 20 + 3],
             [M(ip_proto=6)], True),
    RuleCase("truncated IPv6 header", udp6()[:14 + 39], [M(ethertype=IPV6, ip_proto=17)], False),
    RuleCase("bare Ethernet header", runt(), [M(vlan="none", ethertype=0x88B5)], True),
]


@pytest.mark.root
@pytest.mark.parametrize("case", RULE_CASES, ids=[c.desc for c in RULE_CASES])
def test_pass_rules(prog, lab, case):
    prog.set_queue(1, True, "drop")
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(1, s.fileno())
        prog.set_pass_rules(case.rules)
        verdict = test_run(prog, case.packet, lab.ifindex, 1, repeat=3)
    assert verdict == (XDP_PASS if case.passed else XDP_REDIRECT), case.desc
    counter = "pass_rule" if case.passed else "redirected"
    assert prog.queue_stats(1) == {**ZERO_STATS, counter: 3}, case.desc


ZERO_STATS = {"redirected": 0, "passed": 0, "no_socket": 0, "pass_rule": 0,
              "fanout_to_owner": 0}


@pytest.mark.parametrize("case", RULE_CASES, ids=[c.desc for c in RULE_CASES])
def test_the_fast_path_parser_reads_every_frame_as_the_xdp_program_does(case):
    """Forward rules' matches are judged by the workers' C parser, pass
    rules by the XDP program's: one Match, one meaning.  The same frames
    (VLAN and QinQ tags, IPv4 options and fragments, IPv6, truncated
    headers) and rules: the fast path's first fitting rule is one exactly
    when the program passes the frame by a rule."""
    from xdpd.datapath import _fastpath
    matches = [bytes(xdp_program.match_to_c(m)) for m in case.rules]
    first = _fastpath.classify(case.packet, matches)
    assert (first < len(matches)) == case.passed, case.desc
    if case.passed:     # and it is a rule that fits the frame on its own
        assert _fastpath.classify(case.packet, [matches[first]]) == 0


def test_classify_refuses_what_is_not_a_match():
    from xdpd.datapath import _fastpath
    with pytest.raises(ValueError, match="match 0: expected"):
        _fastpath.classify(tcp4(), [b"short"])
    assert _fastpath.classify(tcp4(), []) == 0


@pytest.mark.root
def test_pass_rules_only_on_owned_queues_and_before_the_socket(prog, lab):
    """An unowned queue is passed as 'passed', rules or not; on an owned
    queue a rule wins over the socket's absence (fallback drop)."""
    prog.set_pass_rules(KEEP_HOST)
    prog.set_queue(2, True, "drop")
    assert test_run(prog, arp_request(), lab.ifindex, 0) == XDP_PASS
    assert test_run(prog, arp_request(), lab.ifindex, 2) == XDP_PASS
    assert test_run(prog, tcp4(), lab.ifindex, 2) == XDP_DROP
    assert prog.queue_stats(0) == {**ZERO_STATS, "passed": 1}
    assert prog.queue_stats(2) == {**ZERO_STATS, "pass_rule": 1, "no_socket": 1}


@pytest.mark.root
def test_pass_rules_replaced_and_removed(prog, lab):
    """What a reload does: each call replaces the whole list."""
    prog.set_queue(1, True, "drop")
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(1, s.fileno())
        run = lambda pkt: test_run(prog, pkt, lab.ifindex, 1)   # noqa: E731
        prog.set_pass_rules([M(ethertype=ARP), SSH, M(dst_port=80)])
        assert [run(arp_request()), run(tcp4(dport=80))] == [XDP_PASS, XDP_PASS]
        prog.set_pass_rules([SSH])          # fewer: the old third rule is gone too
        assert [run(arp_request()), run(tcp4(dport=80)), run(tcp4(dport=22))] == \
            [XDP_REDIRECT, XDP_REDIRECT, XDP_PASS]
        prog.set_pass_rules([])
        assert run(tcp4(dport=22)) == XDP_REDIRECT
    with pytest.raises(ValueError):
        prog.set_pass_rules([SSH] * 17)


def test_match_to_c_fields():
    r = xdp_program.match_to_c(M(src="10.0.0.0/8", dst_port=22, vlan=4095))
    assert r.fields == (xdp_program.XDPD_MATCH_SRC | xdp_program.XDPD_MATCH_ETHERTYPE |
                        xdp_program.XDPD_MATCH_DST_PORT | xdp_program.XDPD_MATCH_VLAN)
    assert bytes(r)[4:6] == b"\x08\x00" and r.vlan == 4095
    assert bytes(r.src)[:4] == bytes([10, 0, 0, 0]) and bytes(r.src_mask) == b"\xff" + bytes(15)
    assert xdp_program.match_to_c(M(vlan="none")).fields == xdp_program.XDPD_MATCH_UNTAGGED


# --- fanout: several sockets on one queue ---------------------------------------
#
# A test run does not deliver the frame, so which member slot the program
# picked shows in what it found there: with an (unbound) socket in member
# k's slot only, a frame is redirected exactly when it picked k, and falls
# back (no_socket) otherwise, the owner's slot being empty too.  A frame no
# member k >= 1 takes picked the owner, slot 0; with a socket in the owner's
# slot only, every frame is redirected, and fanout_to_owner counts those
# that had picked another slot.

FQ = 0                                  # the queue the fanout tests run on


def picked_slots(prog, lab, packets, fanout, queue=FQ):
    """The member slot the flow hash picks for each packet (0..fanout-1),
    checked both ways: through the members' slots and through the owner's."""
    prog.set_queue(queue, True, "drop", fanout=fanout, spread="flow_hash")
    slots = [0] * len(packets)
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        for k in range(1, fanout):
            prog.set_socket(queue, s.fileno(), member=k)
            for i, pkt in enumerate(packets):
                verdict = test_run(prog, pkt, lab.ifindex, queue)
                assert verdict in (XDP_REDIRECT, XDP_DROP)
                if verdict == XDP_REDIRECT:
                    assert slots[i] == 0, f"packet {i} picked slots {slots[i]} and {k}"
                    slots[i] = k
            prog.clear_socket(queue, member=k)
        prog.set_socket(queue, s.fileno())
        for i, pkt in enumerate(packets):
            before = prog.queue_stats(queue)["fanout_to_owner"]
            assert test_run(prog, pkt, lab.ifindex, queue) == XDP_REDIRECT
            to_owner = prog.queue_stats(queue)["fanout_to_owner"] - before
            assert to_owner == (1 if slots[i] else 0), f"packet {i}: slot {slots[i]}"
        prog.clear_socket(queue)
    return slots


def udp4_flow(sport=4000, dport=5000, src="10.0.0.1", dst="10.0.0.2", payload=b"x" * 18):
    return frame(IPV4, ip4(17, ports(sport, dport, 17) + payload, src=src, dst=dst))


def udp6_flow(sport=4000, dport=5000, payload=b"x" * 18, **kw):
    return frame(IPV6, ip6(17, ports(sport, dport, 17) + payload, **kw))


def ip4_fragments(sport: int, src="10.0.0.1", dst="10.0.0.2") -> list:
    """One UDP datagram in three IPv4 fragments: the first (MF, offset 0)
    carries the UDP header and its ports, the later ones payload only."""
    l4 = ports(sport, 5000, 17) + bytes(40)
    first = ip4(17, l4[:24], src=src, dst=dst, frag_off=0x2000)
    middle = ip4(17, l4[24:40], src=src, dst=dst, frag_off=0x2000 | 3)
    last = ip4(17, l4[40:], src=src, dst=dst, frag_off=5)
    return [frame(IPV4, f) for f in (first, middle, last)]


def ip6_fragments(sport: int, src="2001:db8::1") -> list:
    """The same in IPv6: a fragment header (next header 44) behind the
    fixed one, the first fragment then the UDP header."""
    l4 = ports(sport, 5000, 17) + bytes(40)
    out = []
    for off, chunk, more in ((0, l4[:24], 1), (3, l4[24:40], 1), (5, l4[40:], 0)):
        fh = struct.pack("!BBHI", 17, 0, off << 3 | more, 0x1234)
        out.append(frame(IPV6, ip6(44, fh + chunk, src=src)))
    return out


def arp_from(mac: bytes, ip="10.0.0.1") -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(ip),
                      bytes(6), socket.inet_aton("10.0.0.2"))
    return b"\xff" * 6 + mac + b"\x08\x06" + arp + bytes(18)


@pytest.mark.root
@pytest.mark.parametrize("fanout", [2, 4])
def test_flow_hash_keeps_a_flow_on_one_slot(prog, lab, fanout):
    """Same addresses, protocol and ports: the same slot, whatever the
    payload, its length or the packet's other header fields."""
    flows = [dict(sport=sp, dport=dp) for sp, dp in ((4000, 5000), (4001, 5000),
                                                     (53, 33000), (40000, 443))]
    packets, owner = [], []
    for i, f in enumerate(flows):
        for payload in (b"", b"a" * 18, bytes(range(200)), b"xdpd" * 100):
            packets += [udp4_flow(**f, payload=payload), udp6_flow(**f, payload=payload),
                        frame(IPV4, ip4(6, ports(f["sport"], f["dport"], 6) + payload))]
            owner += [(i, "udp4"), (i, "udp6"), (i, "tcp4")]
    slots = picked_slots(prog, lab, packets, fanout)
    by_flow = {}
    for key, slot in zip(owner, slots):
        by_flow.setdefault(key, set()).add(slot)
    assert all(len(s) == 1 for s in by_flow.values()), by_flow


@pytest.mark.root
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("fanout", [2, 4])
def test_flow_hash_spreads_flows_over_every_slot(prog, lab, fanout, family):
    """256 flows that differ in the UDP source port only: every slot gets
    some, none more than twice its share."""
    make = udp4_flow if family == "ipv4" else udp6_flow
    slots = picked_slots(prog, lab, [make(sport=10000 + i) for i in range(256)], fanout)
    counts = [slots.count(k) for k in range(fanout)]
    assert min(counts) > 0 and max(counts) <= 2 * 256 // fanout, counts


@pytest.mark.root
@pytest.mark.parametrize("fragments", [ip4_fragments, ip6_fragments],
                         ids=["ipv4", "ipv6"])
def test_flow_hash_keeps_the_fragments_of_a_datagram_together(prog, lab, fragments):
    """Later fragments carry no ports, so no fragment is hashed by its
    ports, the first included: every fragment of a datagram picks the same
    slot (the addresses' and protocol's), whatever its ports."""
    fanout = 4
    pairs = [("10.0.0.%d" % i, "2001:db8::%x" % i) for i in range(1, 33)]
    packets, datagram = [], []
    for i, (src4, src6) in enumerate(pairs):
        for sport in (4000, 4001, 60000):
            frags = (ip4_fragments(sport, src=src4) if fragments is ip4_fragments
                     else ip6_fragments(sport, src=src6))
            packets += frags
            datagram += [i] * len(frags)
    slots = picked_slots(prog, lab, packets, fanout)
    by_source = {}
    for i, slot in zip(datagram, slots):
        by_source.setdefault(i, set()).add(slot)
    assert all(len(s) == 1 for s in by_source.values()), by_source
    # and the addresses still spread: fragments are not all on one slot
    assert len(set(slots)) == fanout


@pytest.mark.root
def test_flow_hash_of_non_ip_frames(prog, lab):
    """ARP and other non-IP frames hash their MAC addresses and ethertype:
    the same frame always picks the same slot, different senders spread,
    and a bare Ethernet header is handled."""
    fanout = 4
    macs = [bytes([2, 0, 0, 0, 1, i]) for i in range(64)]
    packets = [arp_from(m) for m in macs] + [arp_from(m, ip="10.9.9.9") for m in macs]
    packets += [runt(), runt(), frame(0x88B5, b"", vlans=(10, 20, 30))]
    slots = picked_slots(prog, lab, packets, fanout)
    # the sender's IP is not hashed, its MAC is
    assert slots[:64] == slots[64:128]
    assert len(set(slots[:64])) == fanout
    assert slots[128] == slots[129]


def _run_each(prog, lab, n, packet=None, queue=FQ):
    return [test_run(prog, packet or udp4(), lab.ifindex, queue) for _ in range(n)]


@contextlib.contextmanager
def on_one_cpu():
    """The round-robin counter is per CPU: keep this thread's test runs on
    one CPU so they see one counter."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


@pytest.mark.root
@pytest.mark.parametrize("fanout", [2, 3, 4, 16])
def test_round_robin_cycles_through_the_slots(prog, lab, fanout):
    """With a socket in member k's slot only, exactly every fanout-th frame
    (the same flow every time) is redirected; over all k every frame is."""
    rounds = 3
    hits = set()
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s, on_one_cpu():
        prog.set_queue(FQ, True, "drop", fanout=fanout, spread="round_robin")
        for k in range(1, fanout):
            prog.set_socket(FQ, s.fileno(), member=k)
            verdicts = _run_each(prog, lab, fanout * rounds)
            at = [i for i, v in enumerate(verdicts) if v == XDP_REDIRECT]
            assert len(at) == rounds and at == list(range(at[0], fanout * rounds, fanout)), \
                (k, verdicts)
            hits.add(at[0] % fanout)
            prog.clear_socket(FQ, member=k)
        # the slots follow each other: member k's turns come k - 1 frames
        # after member 1's (each k ran after fanout * rounds frames)
        assert len(hits) == fanout - 1
        prog.set_socket(FQ, s.fileno())                 # the owner alone
        before = prog.queue_stats(FQ)
        assert _run_each(prog, lab, fanout * rounds) == [XDP_REDIRECT] * (fanout * rounds)
        after = prog.queue_stats(FQ)
    assert after["fanout_to_owner"] - before["fanout_to_owner"] == (fanout - 1) * rounds
    assert after["redirected"] - before["redirected"] == fanout * rounds


@pytest.mark.root
def test_round_robin_in_one_test_run(prog, lab):
    """A repeated test run stays on one CPU: of 4 * 25 frames, each member
    slot gets 25."""
    prog.set_queue(FQ, True, "pass", fanout=4, spread="round_robin")
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(FQ, s.fileno(), member=2)
        test_run(prog, udp4(), lab.ifindex, FQ, repeat=100)
    assert prog.queue_stats(FQ) == {**ZERO_STATS, "redirected": 25, "no_socket": 75}


@pytest.mark.root
@pytest.mark.parametrize("fallback,verdict", [("pass", XDP_PASS), ("drop", XDP_DROP)])
def test_missing_member_goes_to_the_owner(prog, lab, fallback, verdict):
    """A member being restarted: its share goes to the owner, counted as
    fanout_to_owner; without the owner too, the fallback applies."""
    socks = [socket.socket(AF_XDP, socket.SOCK_RAW) for _ in range(4)]
    try:
        prog.set_queue(FQ, True, fallback, fanout=4, spread="round_robin")
        for m, s in enumerate(socks):
            prog.set_socket(FQ, s.fileno(), member=m)
        with on_one_cpu():
            assert _run_each(prog, lab, 8) == [XDP_REDIRECT] * 8
            assert prog.queue_stats(FQ) == {**ZERO_STATS, "redirected": 8}
            prog.clear_socket(FQ, member=2)
            assert _run_each(prog, lab, 8) == [XDP_REDIRECT] * 8
            assert prog.queue_stats(FQ) == {**ZERO_STATS, "redirected": 16,
                                            "fanout_to_owner": 2}
            prog.clear_socket(FQ)                       # the owner too
            verdicts = _run_each(prog, lab, 8)
        assert sorted(verdicts) == sorted([XDP_REDIRECT] * 4 + [verdict] * 4)
        assert prog.queue_stats(FQ) == {**ZERO_STATS, "redirected": 20,
                                        "fanout_to_owner": 2, "no_socket": 4}
    finally:
        for s in socks:
            s.close()


@pytest.mark.root
def test_missing_member_goes_to_the_owner_with_flow_hash(prog, lab):
    """The same with the flow hash: a flow whose member is gone lands on
    the owner; without the owner either, on the fallback."""
    flows = [udp4_flow(sport=10000 + i) for i in range(64)]
    slots = picked_slots(prog, lab, flows, 4)
    gone = [p for p, k in zip(flows, slots) if k == 3]
    assert gone
    prog.set_queue(FQ, True, "drop", fanout=4)
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        before = prog.queue_stats(FQ)
        prog.set_socket(FQ, s.fileno())
        assert [test_run(prog, p, lab.ifindex, FQ) for p in gone] == [XDP_REDIRECT] * len(gone)
        prog.clear_socket(FQ)
        assert [test_run(prog, p, lab.ifindex, FQ) for p in gone] == [XDP_DROP] * len(gone)
        after = prog.queue_stats(FQ)
    n = len(gone)
    assert {k: after[k] - before[k] for k in after} == \
        {**ZERO_STATS, "redirected": n, "fanout_to_owner": n, "no_socket": n}


@pytest.mark.root
def test_fanout_one_uses_the_owner_only(prog, lab):
    """fanout 1, the default: member slots are never looked at, nothing is
    counted as fanout_to_owner."""
    socks = [socket.socket(AF_XDP, socket.SOCK_RAW) for _ in range(2)]
    try:
        prog.set_queue(FQ, True, "drop")
        prog.set_socket(FQ, socks[1].fileno(), member=1)
        for spread in ("flow_hash", "round_robin"):
            prog.set_queue(FQ, True, "drop", fanout=1, spread=spread)
            assert _run_each(prog, lab, 4, udp4_flow(sport=1)) == [XDP_DROP] * 4
        prog.set_socket(FQ, socks[0].fileno())
        assert test_run(prog, udp4(), lab.ifindex, FQ, repeat=5) == XDP_REDIRECT
        assert prog.queue_stats(FQ) == {**ZERO_STATS, "no_socket": 8, "redirected": 5}
    finally:
        for s in socks:
            s.close()


def _write_queue_conf(prog, queue, **fields):
    """queue_conf[queue] as given, past set_queue's checks: what a bad
    value in the map makes the program do."""
    key = ctypes.c_uint32(queue)
    val = xdp_program.XdpdQueueConf(**fields)
    assert libbpf.library().bpf_map_update_elem(prog._conf_fd, ctypes.byref(key),
                                             ctypes.byref(val), libbpf.BPF_ANY) == 0


@pytest.mark.root
def test_fanout_beyond_the_map_is_clamped(prog, lab):
    """A fanout above XDPD_MAX_FANOUT in the map acts as XDPD_MAX_FANOUT:
    no key beyond the queue's own slots is looked at."""
    n = xdp_program.XDPD_MAX_FANOUT
    _write_queue_conf(prog, FQ, owned=1, fallback=XDP_DROP, fanout=1000,
                      spread=xdp_program.XDPD_SPREAD_ROUND_ROBIN)
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(FQ, s.fileno(), member=n - 1)
        test_run(prog, udp4(), lab.ifindex, FQ, repeat=3 * n)
    assert prog.queue_stats(FQ) == {**ZERO_STATS, "redirected": 3, "no_socket": 3 * n - 3}


@pytest.mark.root
def test_fanout_zero_in_the_map_is_one(prog, lab):
    _write_queue_conf(prog, FQ, owned=1, fallback=XDP_DROP, fanout=0)
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(FQ, s.fileno())
        assert test_run(prog, udp4(), lab.ifindex, FQ, repeat=3) == XDP_REDIRECT
    assert prog.queue_stats(FQ) == {**ZERO_STATS, "redirected": 3}


@pytest.mark.root
def test_pass_rules_come_before_the_fanout(prog, lab):
    """With rules and a flow hash the packet is parsed once for both; a
    rule's packet stays with the kernel whatever slot it would pick."""
    prog.set_pass_rules(KEEP_HOST)
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        for m in range(4):
            prog.set_socket(FQ, s.fileno(), member=m)
        for spread in ("flow_hash", "round_robin"):
            prog.set_queue(FQ, True, "drop", fanout=4, spread=spread)
            assert test_run(prog, arp_request(), lab.ifindex, FQ, repeat=4) == XDP_PASS
            assert test_run(prog, tcp4(dport=22), lab.ifindex, FQ, repeat=4) == XDP_PASS
            assert test_run(prog, tcp4(dport=80), lab.ifindex, FQ, repeat=4) == XDP_REDIRECT
    assert prog.queue_stats(FQ) == {**ZERO_STATS, "pass_rule": 16, "redirected": 8}


@pytest.mark.root
def test_fanout_spreads_the_same_with_pass_rules(prog, lab):
    """Rules that a packet does not match change nothing in its slot: the
    flow hash picks the same, and round robin still cycles."""
    flows = [udp4_flow(sport=10000 + i) for i in range(32)]
    without = picked_slots(prog, lab, flows, 4)
    prog.set_pass_rules(KEEP_HOST)
    assert picked_slots(prog, lab, flows, 4) == without
    prog.set_queue(FQ, True, "drop", fanout=4, spread="round_robin")
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(FQ, s.fileno(), member=1)
        before = prog.queue_stats(FQ)
        test_run(prog, udp4(), lab.ifindex, FQ, repeat=4 * 5)
        after = prog.queue_stats(FQ)
    assert {k: after[k] - before[k] for k in after} == \
        {**ZERO_STATS, "redirected": 5, "no_socket": 15}


@pytest.mark.root
def test_fanout_slots_of_queues_do_not_mix(prog, lab):
    """Member 1 of queue 1 is xsks[257]: queue 2's member 1 (xsks[258]) or
    queue 1's owner does not stand in for it."""
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_queue(1, True, "drop", fanout=2, spread="round_robin")
        prog.set_socket(2, s.fileno(), member=1)
        test_run(prog, udp4(), lab.ifindex, 1, repeat=4)
        assert prog.queue_stats(1) == {**ZERO_STATS, "no_socket": 4}
        prog.set_socket(1, s.fileno(), member=1)
        test_run(prog, udp4(), lab.ifindex, 1, repeat=4)
        assert prog.queue_stats(1) == {**ZERO_STATS, "no_socket": 6, "redirected": 2}


@pytest.mark.root
def test_fanout_argument_errors(prog, lab):
    for fanout in (0, xdp_program.XDPD_MAX_FANOUT + 1, -1, True, "4", 2.0):
        with pytest.raises(ValueError) as e:
            prog.set_queue(0, True, fanout=fanout)
        assert str(e.value) == f"fanout {fanout!r}: expected 1..16"
    with pytest.raises(ValueError) as e:
        prog.set_queue(0, True, spread="hash")
    assert str(e.value) == "spread 'hash': expected flow_hash or round_robin"
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        for member in (-1, xdp_program.XDPD_MAX_FANOUT, None):
            with pytest.raises(ValueError) as e:
                prog.set_socket(3, s.fileno(), member=member)
            assert str(e.value) == f"fanout member {member!r} of queue 3: expected 0..15"
            with pytest.raises(ValueError):
                prog.clear_socket(3, member=member)
        # a queue beyond the map would alias another queue's member slot
        with pytest.raises(libbpf.BpfError) as e:
            prog.set_socket(xdp_program.XDPD_MAX_QUEUES, s.fileno())
        assert e.value.errno == errno.E2BIG
        assert str(e.value) == (f"put socket fd {s.fileno()} into xsks (queue 256) of xdpa "
                                "failed: E2BIG; rr_redirect handles rx queues 0..255")
        with pytest.raises(libbpf.BpfError) as e:
            prog.clear_socket(xdp_program.XDPD_MAX_QUEUES, member=1)
        assert str(e.value) == ("clear xsks (queue 256) of xdpa failed: E2BIG; "
                                "rr_redirect handles rx queues 0..255")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        fd = udp.fileno()
        with pytest.raises(libbpf.BpfError) as e:
            prog.set_socket(3, fd, member=1)
        assert str(e.value) == (f"put socket fd {fd} into xsks[259] (queue 3, fanout "
                                f"member 1) of xdpa failed: EOPNOTSUPP; fd {fd} is not "
                                "an AF_XDP socket")
        with pytest.raises(libbpf.BpfError) as e:
            prog.set_socket(3, fd)
        assert str(e.value).startswith(f"put socket fd {fd} into xsks[3] (queue 3) of xdpa "
                                       "failed: EOPNOTSUPP")
    prog.clear_socket(3, member=15)             # nothing there: not an error


# --- fanout with real sockets: which one the kernel delivers to ---------------
#
# N AF_XDP sockets bound to queue 0 of a one-queue veth (the owner registers
# the UMEM, the members share it), the program attached, frames sent into
# the peer.  The FILL ring stays empty, so every frame redirected to a
# socket is dropped there and counted in that socket's own rx_dropped: the
# count says which socket the kernel delivered it to.

@contextlib.contextmanager
def live_fanout(rr_object, make_lab, fanout: int):
    from xdpd.kernel import xsk
    with make_lab(1) as lab, xdp_program.XdpProgram.load(rr_object, name=lab.ifname) as prog:
        prog.attach(lab.ifindex, lab.ifname, "native")
        # the peer's own IPv6 and ARP chatter stays out of the counts
        prog.set_pass_rules([M(ethertype=IPV6), M(ethertype=ARP)])
        size = 16 * 4096
        area = mmap.mmap(-1, size)
        base = ctypes.c_char.from_buffer(area)
        socks = [xsk.XdpSocket(lab.ifname, lab.ifindex, 0) for _ in range(fanout)]
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            socks[0].register_umem(ctypes.addressof(base), size, 4096)
            socks[0].set_rings(xsk.RingSizes(16, 16, 16, 16))
            socks[0].bind(zero_copy=False)
            for s in socks[1:]:         # same (netdev, queue): the owner's FILL ring
                s._sock.setsockopt(xsk.SOL_XDP, xsk.XDP_RX_RING, 16)
                s.bind(zero_copy=False, shared_with=socks[0])
            tx.bind((lab.peer, 0))
            yield lab, prog, socks, tx
        finally:
            tx.close()
            for s in socks:
                s.close()
            del base
            area.close()


def delivered(socks, tx, frames) -> list:
    """Frames each socket received (and dropped) while `frames` were sent."""
    before = [s.statistics()["rx_dropped"] for s in socks]
    for f in frames:
        tx.send(f)
    for _ in range(400):
        got = [s.statistics()["rx_dropped"] - b for s, b in zip(socks, before)]
        if sum(got) >= len(frames):
            break
        time.sleep(0.005)
    return got


@pytest.mark.root
def test_live_flow_hash_delivers_to_the_picked_socket(rr_object, make_lab):
    """Each flow reaches the member socket the test runs say it picks."""
    fanout = 4
    flows = [udp4_flow(sport=20000 + i) for i in range(32)]
    with live_fanout(rr_object, make_lab, fanout) as (lab, prog, socks, tx), \
            xdp_program.XdpProgram.load(rr_object, name="model") as model:
        slots = picked_slots(model, lab, flows, fanout)
        prog.set_queue(0, True, "drop", fanout=fanout)
        for m, s in enumerate(socks):
            prog.set_socket(0, s.fd, member=m)
        before = prog.queue_stats(0)
        for flow, slot in zip(flows, slots):
            expect = [0] * fanout
            expect[slot] = 2
            assert delivered(socks, tx, [flow, flow]) == expect
        assert prog.queue_stats(0)["redirected"] - before["redirected"] == 2 * len(flows)


@pytest.mark.root
def test_live_round_robin_and_a_missing_member(rr_object, make_lab):
    """Round robin gives each socket its turn; a member's socket leaving
    xsks sends its turns to the owner."""
    fanout, rounds = 4, 8
    with live_fanout(rr_object, make_lab, fanout) as (lab, prog, socks, tx), on_one_cpu():
        prog.set_queue(0, True, "drop", fanout=fanout, spread="round_robin")
        for m, s in enumerate(socks):
            prog.set_socket(0, s.fd, member=m)
        before = prog.queue_stats(0)
        assert delivered(socks, tx, [udp4()] * (fanout * rounds)) == [rounds] * fanout
        prog.clear_socket(0, member=2)
        assert delivered(socks, tx, [udp4()] * (fanout * rounds)) == \
            [2 * rounds, rounds, 0, rounds]
        after = prog.queue_stats(0)
    assert after["redirected"] - before["redirected"] == 2 * fanout * rounds
    assert after["fanout_to_owner"] - before["fanout_to_owner"] == rounds


# --- map and test-run errors ---------------------------------------------------

@pytest.mark.root
def test_map_errors(prog, lab):
    with pytest.raises(libbpf.BpfError) as e:
        prog.set_queue(xdp_program.XDPD_MAX_QUEUES, True)
    assert e.value.errno == errno.E2BIG
    assert str(e.value) == ("set queue_conf[256] of xdpa failed: E2BIG; "
                            "rr_redirect handles rx queues 0..255")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(libbpf.BpfError) as e:
            prog.set_socket(0, udp.fileno())
    assert e.value.errno == errno.EOPNOTSUPP
    assert "failed: EOPNOTSUPP; fd " in str(e.value)
    assert "is not an AF_XDP socket" in str(e.value)

    with pytest.raises(ValueError):
        prog.set_queue(0, True, "redirect")


@pytest.mark.root
def test_test_run_errors(prog, lab):
    with pytest.raises(libbpf.BpfError) as e:
        test_run(prog, b"\0" * 13, lab.ifindex, 0)
    assert e.value.errno == errno.EINVAL
    assert "at least 14 bytes, got 13" in str(e.value)

    with pytest.raises(libbpf.BpfError) as e:
        test_run(prog, udp4(), lab.ifindex, lab.queues)
    assert e.value.errno == errno.EINVAL
    assert f"more than {lab.queues} rx queues" in str(e.value)


@pytest.mark.root
def test_load_errors(rr_object, tmp_path, caplog):
    with pytest.raises(libbpf.BpfError) as e:
        xdp_program.XdpProgram.load(str(tmp_path / "missing.o"))
    assert e.value.errno == errno.ENOENT

    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an ELF object")
    caplog.set_level(logging.DEBUG, logger="xdpd.bpf")
    with pytest.raises(libbpf.BpfError) as e:
        xdp_program.XdpProgram.load(str(junk), name="eth9")
    assert str(e.value).startswith(f"load rr_redirect from {junk} for eth9 failed: ")
    # libbpf's own message reached logging, its %s formatted
    assert any(r.name == "xdpd.bpf" and str(junk) in r.getMessage()
               for r in caplog.records)


@pytest.mark.root
def test_prog_id_and_close(rr_object):
    prog = xdp_program.XdpProgram.load(rr_object)
    assert prog.prog_id > 0 and prog.prog_fd >= 0
    prog.close()
    prog.close()
    with pytest.raises(ValueError):
        prog.set_queue(0, True)


# --- attach / detach -----------------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize("mode,used", [("native", "native"), ("generic", "generic"),
                                       ("auto", "native")])
def test_attach_detach(prog, lab, mode, used):
    assert prog.attach(lab.ifindex, lab.ifname, mode) == used
    assert libbpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    assert libbpf.query_xdp(lab.ifindex)["mode"] == used
    prog.detach()
    assert libbpf.query_xdp(lab.ifindex) == {"prog_id": 0, "mode": None,
                                          "drv_prog_id": 0, "skb_prog_id": 0,
                                          "hw_prog_id": 0}
    prog.detach()                               # idempotent


@pytest.mark.root
def test_close_detaches(rr_object, lab):
    with xdp_program.XdpProgram.load(rr_object) as prog:
        prog.attach(lab.ifindex, lab.ifname, "native")
        assert libbpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    assert libbpf.query_xdp(lab.ifindex)["prog_id"] == 0


@pytest.mark.root
def test_native_unsupported(prog, lab):
    """lo has no native XDP: native names the way out, auto falls back."""
    lo = socket.if_nametoindex("lo")
    with pytest.raises(libbpf.BpfError) as e:
        prog.attach(lo, "lo", "native")
    assert e.value.errno == errno.EOPNOTSUPP
    assert str(e.value) == ("attach rr_redirect to lo (native) failed: "
                            "EOPNOTSUPP; try xdp_mode: generic")
    assert prog.attach(lo, "lo", "auto") == "generic"
    assert libbpf.query_xdp(lo) == {"prog_id": prog.prog_id, "mode": "generic",
                                 "drv_prog_id": 0, "skb_prog_id": prog.prog_id,
                                 "hw_prog_id": 0}
    prog.detach()
    assert libbpf.query_xdp(lo)["prog_id"] == 0


@pytest.mark.root
@pytest.mark.parametrize("foreign_mode,word", [("native", "xdp"),
                                               ("generic", "xdpgeneric")])
@pytest.mark.parametrize("mode", ["native", "generic", "auto"])
def test_attach_never_replaces_a_foreign_program(rr_object, prog, lab,
                                                 foreign_mode, word, mode):
    with xdp_program.XdpProgram.load(rr_object, name="foreign") as foreign:
        foreign.attach(lab.ifindex, lab.ifname, foreign_mode)
        with pytest.raises(libbpf.BpfError) as e:
            prog.attach(lab.ifindex, lab.ifname, mode)
        assert e.value.errno == errno.EBUSY
        tried = "generic" if mode == "generic" else "native"
        assert str(e.value) == (
            f"attach rr_redirect to xdpa ({tried}) failed: EBUSY; another XDP "
            f"program (id {foreign.prog_id}, name rr_redirect, {foreign_mode}) is "
            f"attached; if it is stale, remove it with 'ip link set dev xdpa {word} off'")
        assert libbpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id
        prog.close()                            # not attached: detaches nothing
        assert libbpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id


@pytest.mark.root
def test_detach_leaves_a_program_that_replaced_ours(rr_object, prog, lab, caplog):
    prog.attach(lab.ifindex, lab.ifname, "native")
    lab.ip("link", "set", "dev", lab.ifname, "xdp", "off")      # someone else
    with xdp_program.XdpProgram.load(rr_object, name="foreign") as foreign:
        foreign.attach(lab.ifindex, lab.ifname, "native")
        with caplog.at_level(logging.WARNING, logger="xdpd.bpf"):
            prog.detach()
        assert libbpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id
        assert any(f"not detaching XDP program id {foreign.prog_id}" in r.getMessage()
                   for r in caplog.records)
        prog.detach()                           # idempotent, still leaves it
        assert libbpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id
    assert libbpf.query_xdp(lab.ifindex)["prog_id"] == 0


@pytest.mark.root
def test_detach_after_someone_detached_ours(prog, lab, caplog):
    prog.attach(lab.ifindex, lab.ifname, "generic")
    lab.ip("link", "set", "dev", lab.ifname, "xdpgeneric", "off")
    with caplog.at_level(logging.WARNING, logger="xdpd.bpf"):
        prog.detach()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert prog.mode is None


@pytest.mark.root
@pytest.mark.parametrize("mode", ["native", "generic"])
def test_detach_xdp_by_id_only_while_that_program_is_attached(rr_object, prog, lab, mode):
    """What the supervisor uses on the programs of a dead xdpd."""
    prog.attach(lab.ifindex, lab.ifname, mode)
    assert libbpf.prog_name(prog.prog_id) == "rr_redirect"
    with xdp_program.XdpProgram.load(rr_object, name="other") as other:
        with pytest.raises(libbpf.BpfError) as e:
            libbpf.detach_xdp(lab.ifindex, mode, other.prog_id)
        assert e.value.errno == errno.EEXIST
        assert str(e.value) == (f"detach XDP program id {other.prog_id} from ifindex "
                                f"{lab.ifindex} ({mode}) failed: EEXIST; it is no longer "
                                "the program attached there")
        gone = other.prog_id
    assert libbpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    with pytest.raises(libbpf.BpfError) as e:
        libbpf.detach_xdp(lab.ifindex, mode, gone)
    assert e.value.errno == errno.ENOENT and "no such program (unloaded)" in str(e.value)
    with pytest.raises(libbpf.BpfError) as e:
        libbpf.prog_name(gone)
    assert e.value.errno == errno.ENOENT
    libbpf.detach_xdp(lab.ifindex, mode, prog.prog_id)
    assert libbpf.query_xdp(lab.ifindex)["prog_id"] == 0
    with pytest.raises(libbpf.BpfError) as e:     # none attached: not that program either
        libbpf.detach_xdp(lab.ifindex, mode, prog.prog_id)
    assert e.value.errno == errno.EEXIST


# detach_xdp in a process with the capabilities of xdpd's systemd unit
# (CAP_BPF, CAP_NET_ADMIN: no CAP_SYS_ADMIN, so no opening a program by id)
UNIT_CAPS_DETACH = """
import sys
from xdpd.kernel import libbpf, xdp_program
ifindex, mode, prog_id = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
try:
    libbpf.prog_name(prog_id)
except libbpf.BpfError as e:
    print("prog_name", e.errno)
try:
    libbpf.detach_xdp(ifindex, mode, prog_id)
    print("detached")
except libbpf.BpfError as e:
    print("detach", e.errno)
"""


@pytest.mark.root
@pytest.mark.parametrize("mode", ["native", "generic"])
def test_detach_xdp_without_cap_sys_admin_still_checks_the_program(rr_object, prog, lab, mode):
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux)")

    def detach_as_the_unit(prog_id):
        cmd = ["ip", "netns", "exec", lab.netns, "setpriv",
               "--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all", "--no-new-privs",
               "--", sys.executable, "-c", UNIT_CAPS_DETACH, str(lab.ifindex), mode,
               str(prog_id)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        assert res.returncode == 0, res.stderr
        return res.stdout.split("\n")[:2]

    prog.attach(lab.ifindex, lab.ifname, mode)
    with xdp_program.XdpProgram.load(rr_object, name="other") as other:
        assert detach_as_the_unit(other.prog_id) == [f"prog_name {errno.EPERM}",
                                                     f"detach {errno.EEXIST}"]
    assert libbpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    assert detach_as_the_unit(prog.prog_id) == [f"prog_name {errno.EPERM}", "detached"]
    assert libbpf.query_xdp(lab.ifindex)["prog_id"] == 0


# --- layouts -------------------------------------------------------------------

LAYOUT_C = r"""
#include <stddef.h>
#include <stdio.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include "rr_redirect.h"

#define SIZE(s) printf(#s " sizeof %zu\n", sizeof(struct s))
#define OFF(s, f) printf(#s " " #f " %zu\n", offsetof(struct s, f))

int main(void)
{
	printf("XDPD_MAX_QUEUES %d\n", XDPD_MAX_QUEUES);
	printf("XDPD_MAX_FANOUT %d\n", XDPD_MAX_FANOUT);
	printf("XDPD_SPREAD_FLOW_HASH %d\n", XDPD_SPREAD_FLOW_HASH);
	printf("XDPD_SPREAD_ROUND_ROBIN %d\n", XDPD_SPREAD_ROUND_ROBIN);
	SIZE(xdpd_queue_conf);
	OFF(xdpd_queue_conf, owned); OFF(xdpd_queue_conf, fallback);
	OFF(xdpd_queue_conf, fanout); OFF(xdpd_queue_conf, spread);
	SIZE(xdpd_queue_stats);
	OFF(xdpd_queue_stats, redirected); OFF(xdpd_queue_stats, passed);
	OFF(xdpd_queue_stats, no_socket); OFF(xdpd_queue_stats, pass_rule);
	OFF(xdpd_queue_stats, fanout_to_owner);
	printf("XDPD_MAX_PASS_RULES %d\n", XDPD_MAX_PASS_RULES);
	printf("XDPD_MATCH_ETHERTYPE %u\n", XDPD_MATCH_ETHERTYPE);
	printf("XDPD_MATCH_VLAN %u\n", XDPD_MATCH_VLAN);
	printf("XDPD_MATCH_UNTAGGED %u\n", XDPD_MATCH_UNTAGGED);
	printf("XDPD_MATCH_IP_PROTO %u\n", XDPD_MATCH_IP_PROTO);
	printf("XDPD_MATCH_SRC %u\n", XDPD_MATCH_SRC);
	printf("XDPD_MATCH_DST %u\n", XDPD_MATCH_DST);
	printf("XDPD_MATCH_SRC_PORT %u\n", XDPD_MATCH_SRC_PORT);
	printf("XDPD_MATCH_DST_PORT %u\n", XDPD_MATCH_DST_PORT);
	SIZE(xdpd_match);
	OFF(xdpd_match, fields); OFF(xdpd_match, ethertype); OFF(xdpd_match, vlan);
	OFF(xdpd_match, ip_proto); OFF(xdpd_match, pad); OFF(xdpd_match, src_port);
	OFF(xdpd_match, dst_port); OFF(xdpd_match, pad2); OFF(xdpd_match, src);
	OFF(xdpd_match, src_mask); OFF(xdpd_match, dst); OFF(xdpd_match, dst_mask);
	SIZE(xdpd_prog_conf);
	OFF(xdpd_prog_conf, pass_rules_first); OFF(xdpd_prog_conf, nr_pass_rules);
	SIZE(xdp_md);
	OFF(xdp_md, data); OFF(xdp_md, data_end); OFF(xdp_md, data_meta);
	OFF(xdp_md, ingress_ifindex); OFF(xdp_md, rx_queue_index);
	OFF(xdp_md, egress_ifindex);
	OFF(bpf_prog_info, type); OFF(bpf_prog_info, id); OFF(bpf_prog_info, tag);
	OFF(bpf_prog_info, jited_prog_len); OFF(bpf_prog_info, xlated_prog_len);
	OFF(bpf_prog_info, jited_prog_insns); OFF(bpf_prog_info, xlated_prog_insns);
	OFF(bpf_prog_info, load_time); OFF(bpf_prog_info, created_by_uid);
	OFF(bpf_prog_info, nr_map_ids); OFF(bpf_prog_info, map_ids);
	OFF(bpf_prog_info, name);
	SIZE(bpf_xdp_attach_opts);
	OFF(bpf_xdp_attach_opts, sz); OFF(bpf_xdp_attach_opts, old_prog_fd);
	SIZE(bpf_xdp_query_opts);
	OFF(bpf_xdp_query_opts, sz); OFF(bpf_xdp_query_opts, prog_id);
	OFF(bpf_xdp_query_opts, drv_prog_id); OFF(bpf_xdp_query_opts, hw_prog_id);
	OFF(bpf_xdp_query_opts, skb_prog_id); OFF(bpf_xdp_query_opts, attach_mode);
	SIZE(bpf_test_run_opts);
	OFF(bpf_test_run_opts, sz); OFF(bpf_test_run_opts, data_in);
	OFF(bpf_test_run_opts, data_out); OFF(bpf_test_run_opts, data_size_in);
	OFF(bpf_test_run_opts, data_size_out); OFF(bpf_test_run_opts, ctx_in);
	OFF(bpf_test_run_opts, ctx_out); OFF(bpf_test_run_opts, ctx_size_in);
	OFF(bpf_test_run_opts, ctx_size_out); OFF(bpf_test_run_opts, retval);
	OFF(bpf_test_run_opts, repeat); OFF(bpf_test_run_opts, duration);
	OFF(bpf_test_run_opts, flags); OFF(bpf_test_run_opts, cpu);
	OFF(bpf_test_run_opts, batch_size);
	return 0;
}
"""

# C struct name -> ctypes mirror; prefix: the mirror is a leading part only
LAYOUTS = {
    "xdpd_queue_conf": (xdp_program.XdpdQueueConf, False),
    "xdpd_queue_stats": (xdp_program.XdpdQueueStats, False),
    "xdpd_match": (xdp_program.XdpdMatch, False),
    "xdpd_prog_conf": (xdp_program.XdpdProgConf, False),
    "xdp_md": (libbpf.XdpMd, False),
    "bpf_prog_info": (libbpf.BpfProgInfo, True),
    "bpf_xdp_attach_opts": (libbpf.BpfXdpAttachOpts, False),
    "bpf_xdp_query_opts": (libbpf.BpfXdpQueryOpts, False),
    "bpf_test_run_opts": (libbpf.BpfTestRunOpts, False),
}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("needs a C compiler to read the C layouts")
    tmp = tmp_path_factory.mktemp("layout")
    src, exe = tmp / "layout.c", tmp / "layout"
    src.write_text(LAYOUT_C)
    res = subprocess.run([cc, "-I", os.path.join(REPO, "bpf"), str(src), "-o", str(exe)],
                         capture_output=True, text=True)
    if res.returncode != 0 and "bpf/libbpf.h" in res.stderr:
        pytest.skip("needs libbpf's headers (Debian: libbpf-dev)")
    assert res.returncode == 0, res.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    layout = {}
    for line in out.splitlines():
        *key, value = line.split()
        layout[tuple(key)] = int(value)
    return layout


@pytest.mark.parametrize("cname", LAYOUTS)
def test_ctypes_layout_matches_c(c_layout, cname):
    mirror, prefix = LAYOUTS[cname]
    for fname, _ in mirror._fields_:
        assert getattr(mirror, fname).offset == c_layout[(cname, fname)], \
            f"{cname}.{fname}"
    if not prefix:
        assert ctypes.sizeof(mirror) == c_layout[(cname, "sizeof")], cname
    # every field of the C struct is mirrored (offsets list it)
    c_fields = {k[1] for k in c_layout if k[0] == cname and k[1] != "sizeof"}
    assert c_fields == {f for f, _ in mirror._fields_}


def test_max_queues_matches_header(c_layout):
    assert xdp_program.XDPD_MAX_QUEUES == c_layout[("XDPD_MAX_QUEUES",)]


def test_fanout_constants_match_header(c_layout):
    assert xdp_program.XDPD_MAX_FANOUT == c_layout[("XDPD_MAX_FANOUT",)]
    assert xdp_program.XDPD_SPREAD_FLOW_HASH == c_layout[("XDPD_SPREAD_FLOW_HASH",)]
    assert xdp_program.XDPD_SPREAD_ROUND_ROBIN == c_layout[("XDPD_SPREAD_ROUND_ROBIN",)]
    assert xdp_program.SPREADS == {"flow_hash": xdp_program.XDPD_SPREAD_FLOW_HASH,
                           "round_robin": xdp_program.XDPD_SPREAD_ROUND_ROBIN}


def test_match_constants_match_header(c_layout):
    from xdpd.config import model as config
    names = [k[0] for k in c_layout if k[0].startswith("XDPD_MATCH_")]
    assert len(names) == 8
    for name in names:
        assert getattr(xdp_program, name) == c_layout[(name,)], name
    assert xdp_program.XDPD_MAX_PASS_RULES == c_layout[("XDPD_MAX_PASS_RULES",)]
    assert config.MAX_PASS_RULES == xdp_program.XDPD_MAX_PASS_RULES
