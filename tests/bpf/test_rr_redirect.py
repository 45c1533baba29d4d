"""rr_redirect through BPF_PROG_TEST_RUN, and xdpd.bpf's kernel calls.

The verdict cases are a table: each names what it shows, the packet, the
queue it arrives on, the queue configuration and the expected verdict and
counter.  Test runs pass ingress_ifindex/rx_queue_index of a real multi-queue
veth, so ctx->rx_queue_index is what a real packet would carry.
"""
import ctypes
import errno
import ipaddress
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from xdpd import bpf
from xdpd.bpf import XDP_DROP, XDP_PASS, XDP_REDIRECT
from xdpd.config import Match

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

        verdict = prog.test_run(case.packet, ingress_ifindex=lab.ifindex,
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
    with make_lab(bpf.XDPD_MAX_QUEUES + 1) as lab, \
            bpf.XdpProgram.load(rr_object, name=lab.ifname) as prog, \
            socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        for q in (0, bpf.XDPD_MAX_QUEUES - 1):
            prog.set_queue(q, True, "drop")
            prog.set_socket(q, s.fileno())
        verdict = prog.test_run(udp4(), lab.ifindex, bpf.XDPD_MAX_QUEUES, repeat=3)
        assert verdict == XDP_PASS
        zero = {"redirected": 0, "passed": 0, "no_socket": 0, "pass_rule": 0,
                "fanout_to_owner": 0}
        assert prog.queue_stats(0) == zero
        assert prog.queue_stats(bpf.XDPD_MAX_QUEUES - 1) == zero


@pytest.mark.root
def test_socket_cleared_applies_fallback(prog, lab):
    """A worker restart: the socket leaves xsks, the fallback takes over,
    and a new socket takes the traffic again."""
    prog.set_queue(1, True, "drop")
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(1, s.fileno())
        assert prog.test_run(udp4(), lab.ifindex, 1) == XDP_REDIRECT
        prog.clear_socket(1)
        prog.clear_socket(1)                    # already gone: not an error
        assert prog.test_run(udp4(), lab.ifindex, 1) == XDP_DROP
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(1, s.fileno())
        assert prog.test_run(udp4(), lab.ifindex, 1) == XDP_REDIRECT
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
    assert prog.test_run(udp4(), lab.ifindex, 2) == XDP_PASS
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
        verdict = prog.test_run(case.packet, lab.ifindex, 1, repeat=3)
    assert verdict == (XDP_PASS if case.passed else XDP_REDIRECT), case.desc
    counter = "pass_rule" if case.passed else "redirected"
    assert prog.queue_stats(1) == {**ZERO_STATS, counter: 3}, case.desc


ZERO_STATS = {"redirected": 0, "passed": 0, "no_socket": 0, "pass_rule": 0,
              "fanout_to_owner": 0}


@pytest.mark.root
def test_pass_rules_only_on_owned_queues_and_before_the_socket(prog, lab):
    """An unowned queue is passed as 'passed', rules or not; on an owned
    queue a rule wins over the socket's absence (fallback drop)."""
    prog.set_pass_rules(KEEP_HOST)
    prog.set_queue(2, True, "drop")
    assert prog.test_run(arp_request(), lab.ifindex, 0) == XDP_PASS
    assert prog.test_run(arp_request(), lab.ifindex, 2) == XDP_PASS
    assert prog.test_run(tcp4(), lab.ifindex, 2) == XDP_DROP
    assert prog.queue_stats(0) == {**ZERO_STATS, "passed": 1}
    assert prog.queue_stats(2) == {**ZERO_STATS, "pass_rule": 1, "no_socket": 1}


@pytest.mark.root
def test_pass_rules_replaced_and_removed(prog, lab):
    """What a reload does: each call replaces the whole list."""
    prog.set_queue(1, True, "drop")
    with socket.socket(AF_XDP, socket.SOCK_RAW) as s:
        prog.set_socket(1, s.fileno())
        run = lambda pkt: prog.test_run(pkt, lab.ifindex, 1)   # noqa: E731
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
    r = bpf.match_to_c(M(src="10.0.0.0/8", dst_port=22, vlan=4095))
    assert r.fields == (bpf.XDPD_MATCH_SRC | bpf.XDPD_MATCH_ETHERTYPE |
                        bpf.XDPD_MATCH_DST_PORT | bpf.XDPD_MATCH_VLAN)
    assert bytes(r)[4:6] == b"\x08\x00" and r.vlan == 4095
    assert bytes(r.src)[:4] == bytes([10, 0, 0, 0]) and bytes(r.src_mask) == b"\xff" + bytes(15)
    assert bpf.match_to_c(M(vlan="none")).fields == bpf.XDPD_MATCH_UNTAGGED


# --- map and test-run errors ---------------------------------------------------

@pytest.mark.root
def test_map_errors(prog, lab):
    with pytest.raises(bpf.BpfError) as e:
        prog.set_queue(bpf.XDPD_MAX_QUEUES, True)
    assert e.value.errno == errno.E2BIG
    assert str(e.value) == ("set queue_conf[256] of xdpa failed: E2BIG; "
                            "rr_redirect handles rx queues 0..255")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(bpf.BpfError) as e:
            prog.set_socket(0, udp.fileno())
    assert e.value.errno == errno.EOPNOTSUPP
    assert "failed: EOPNOTSUPP; fd " in str(e.value)
    assert "is not an AF_XDP socket" in str(e.value)

    with pytest.raises(ValueError):
        prog.set_queue(0, True, "redirect")


@pytest.mark.root
def test_test_run_errors(prog, lab):
    with pytest.raises(bpf.BpfError) as e:
        prog.test_run(b"\0" * 13, lab.ifindex, 0)
    assert e.value.errno == errno.EINVAL
    assert "at least 14 bytes, got 13" in str(e.value)

    with pytest.raises(bpf.BpfError) as e:
        prog.test_run(udp4(), lab.ifindex, lab.queues)
    assert e.value.errno == errno.EINVAL
    assert f"more than {lab.queues} rx queues" in str(e.value)


@pytest.mark.root
def test_load_errors(rr_object, tmp_path, caplog):
    with pytest.raises(bpf.BpfError) as e:
        bpf.XdpProgram.load(str(tmp_path / "missing.o"))
    assert e.value.errno == errno.ENOENT

    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an ELF object")
    caplog.set_level(logging.DEBUG, logger="xdpd.bpf")
    with pytest.raises(bpf.BpfError) as e:
        bpf.XdpProgram.load(str(junk), name="eth9")
    assert str(e.value).startswith(f"load rr_redirect from {junk} for eth9 failed: ")
    # libbpf's own message reached logging, its %s formatted
    assert any(r.name == "xdpd.bpf" and str(junk) in r.getMessage()
               for r in caplog.records)


@pytest.mark.root
def test_prog_id_and_close(rr_object):
    prog = bpf.XdpProgram.load(rr_object)
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
    assert bpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    assert bpf.query_xdp(lab.ifindex)["mode"] == used
    prog.detach()
    assert bpf.query_xdp(lab.ifindex) == {"prog_id": 0, "mode": None,
                                          "drv_prog_id": 0, "skb_prog_id": 0,
                                          "hw_prog_id": 0}
    prog.detach()                               # idempotent


@pytest.mark.root
def test_close_detaches(rr_object, lab):
    with bpf.XdpProgram.load(rr_object) as prog:
        prog.attach(lab.ifindex, lab.ifname, "native")
        assert bpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    assert bpf.query_xdp(lab.ifindex)["prog_id"] == 0


@pytest.mark.root
def test_native_unsupported(prog, lab):
    """lo has no native XDP: native names the way out, auto falls back."""
    lo = socket.if_nametoindex("lo")
    with pytest.raises(bpf.BpfError) as e:
        prog.attach(lo, "lo", "native")
    assert e.value.errno == errno.EOPNOTSUPP
    assert str(e.value) == ("attach rr_redirect to lo (native) failed: "
                            "EOPNOTSUPP; try xdp_mode: generic")
    assert prog.attach(lo, "lo", "auto") == "generic"
    assert bpf.query_xdp(lo) == {"prog_id": prog.prog_id, "mode": "generic",
                                 "drv_prog_id": 0, "skb_prog_id": prog.prog_id,
                                 "hw_prog_id": 0}
    prog.detach()
    assert bpf.query_xdp(lo)["prog_id"] == 0


@pytest.mark.root
@pytest.mark.parametrize("foreign_mode,word", [("native", "xdp"),
                                               ("generic", "xdpgeneric")])
@pytest.mark.parametrize("mode", ["native", "generic", "auto"])
def test_attach_never_replaces_a_foreign_program(rr_object, prog, lab,
                                                 foreign_mode, word, mode):
    with bpf.XdpProgram.load(rr_object, name="foreign") as foreign:
        foreign.attach(lab.ifindex, lab.ifname, foreign_mode)
        with pytest.raises(bpf.BpfError) as e:
            prog.attach(lab.ifindex, lab.ifname, mode)
        assert e.value.errno == errno.EBUSY
        tried = "generic" if mode == "generic" else "native"
        assert str(e.value) == (
            f"attach rr_redirect to xdpa ({tried}) failed: EBUSY; another XDP "
            f"program (id {foreign.prog_id}, name rr_redirect, {foreign_mode}) is "
            f"attached; if it is stale, remove it with 'ip link set dev xdpa {word} off'")
        assert bpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id
        prog.close()                            # not attached: detaches nothing
        assert bpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id


@pytest.mark.root
def test_detach_leaves_a_program_that_replaced_ours(rr_object, prog, lab, caplog):
    prog.attach(lab.ifindex, lab.ifname, "native")
    lab.ip("link", "set", "dev", lab.ifname, "xdp", "off")      # someone else
    with bpf.XdpProgram.load(rr_object, name="foreign") as foreign:
        foreign.attach(lab.ifindex, lab.ifname, "native")
        with caplog.at_level(logging.WARNING, logger="xdpd.bpf"):
            prog.detach()
        assert bpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id
        assert any(f"not detaching XDP program id {foreign.prog_id}" in r.getMessage()
                   for r in caplog.records)
        prog.detach()                           # idempotent, still leaves it
        assert bpf.query_xdp(lab.ifindex)["prog_id"] == foreign.prog_id
    assert bpf.query_xdp(lab.ifindex)["prog_id"] == 0


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
    assert bpf.prog_name(prog.prog_id) == "rr_redirect"
    with bpf.XdpProgram.load(rr_object, name="other") as other:
        with pytest.raises(bpf.BpfError) as e:
            bpf.detach_xdp(lab.ifindex, mode, other.prog_id)
        assert e.value.errno == errno.EEXIST
        assert str(e.value) == (f"detach XDP program id {other.prog_id} from ifindex "
                                f"{lab.ifindex} ({mode}) failed: EEXIST; it is no longer "
                                "the program attached there")
        gone = other.prog_id
    assert bpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    with pytest.raises(bpf.BpfError) as e:
        bpf.detach_xdp(lab.ifindex, mode, gone)
    assert e.value.errno == errno.ENOENT and "no such program (unloaded)" in str(e.value)
    with pytest.raises(bpf.BpfError) as e:
        bpf.prog_name(gone)
    assert e.value.errno == errno.ENOENT
    bpf.detach_xdp(lab.ifindex, mode, prog.prog_id)
    assert bpf.query_xdp(lab.ifindex)["prog_id"] == 0
    with pytest.raises(bpf.BpfError) as e:     # none attached: not that program either
        bpf.detach_xdp(lab.ifindex, mode, prog.prog_id)
    assert e.value.errno == errno.EEXIST


# detach_xdp in a process with the capabilities of xdpd's systemd unit
# (CAP_BPF, CAP_NET_ADMIN: no CAP_SYS_ADMIN, so no opening a program by id)
UNIT_CAPS_DETACH = """
import sys
from xdpd import bpf
ifindex, mode, prog_id = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
try:
    bpf.prog_name(prog_id)
except bpf.BpfError as e:
    print("prog_name", e.errno)
try:
    bpf.detach_xdp(ifindex, mode, prog_id)
    print("detached")
except bpf.BpfError as e:
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
    with bpf.XdpProgram.load(rr_object, name="other") as other:
        assert detach_as_the_unit(other.prog_id) == [f"prog_name {errno.EPERM}",
                                                     f"detach {errno.EEXIST}"]
    assert bpf.query_xdp(lab.ifindex)["prog_id"] == prog.prog_id
    assert detach_as_the_unit(prog.prog_id) == [f"prog_name {errno.EPERM}", "detached"]
    assert bpf.query_xdp(lab.ifindex)["prog_id"] == 0


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
    "xdpd_queue_conf": (bpf.XdpdQueueConf, False),
    "xdpd_queue_stats": (bpf.XdpdQueueStats, False),
    "xdpd_match": (bpf.XdpdMatch, False),
    "xdpd_prog_conf": (bpf.XdpdProgConf, False),
    "xdp_md": (bpf.XdpMd, False),
    "bpf_prog_info": (bpf.BpfProgInfo, True),
    "bpf_xdp_attach_opts": (bpf.BpfXdpAttachOpts, False),
    "bpf_xdp_query_opts": (bpf.BpfXdpQueryOpts, False),
    "bpf_test_run_opts": (bpf.BpfTestRunOpts, False),
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
    assert bpf.XDPD_MAX_QUEUES == c_layout[("XDPD_MAX_QUEUES",)]


def test_fanout_constants_match_header(c_layout):
    assert bpf.XDPD_MAX_FANOUT == c_layout[("XDPD_MAX_FANOUT",)]
    assert bpf.XDPD_SPREAD_FLOW_HASH == c_layout[("XDPD_SPREAD_FLOW_HASH",)]
    assert bpf.XDPD_SPREAD_ROUND_ROBIN == c_layout[("XDPD_SPREAD_ROUND_ROBIN",)]
    assert bpf.SPREADS == {"flow_hash": bpf.XDPD_SPREAD_FLOW_HASH,
                           "round_robin": bpf.XDPD_SPREAD_ROUND_ROBIN}


def test_match_constants_match_header(c_layout):
    from xdpd import config
    names = [k[0] for k in c_layout if k[0].startswith("XDPD_MATCH_")]
    assert len(names) == 8
    for name in names:
        assert getattr(bpf, name) == c_layout[(name,)], name
    assert bpf.XDPD_MAX_PASS_RULES == c_layout[("XDPD_MAX_PASS_RULES",)]
    assert config.MAX_PASS_RULES == bpf.XDPD_MAX_PASS_RULES
