"""Awkward frames through the lab (gen0 -> in0 [xdpd] out0 -> sink0): runts,
VLAN and QinQ tags, IPv6, ARP, IPv4 whose headers lie or are cut off,
802.3 length frames, and frames longer than the egress MTU.

xdpd looks at nothing past the Ethernet header, so every such frame must be
forwarded byte for byte (only the destination MAC rewritten) or dropped and
counted by the reason the rules give; no worker may die over one.

What the kernel lets through, found here (Linux 6.18, veth):

- AF_PACKET SOCK_RAW refuses frames shorter than the 14-byte Ethernet
  header with EINVAL (dev_validate_header(): Ethernet's min_header_len is
  ETH_HLEN), and BPF_PROG_TEST_RUN and bpf_xdp_adjust_tail() keep XDP
  frames at ETH_HLEN or more too. So `reason="invalid"` (a runt shorter
  than an Ethernet header, a descriptor outside the UMEM) cannot be
  provoked from the wire: these tests only check that it stays 0.
- From 14 bytes up a frame arrives exactly as sent: veth neither pads to
  the 60-byte Ethernet minimum nor adds an FCS, so xdpd sees (and must
  forward) 14-byte frames.
- The receiving stack moves the outer VLAN tag out of the data before any
  AF_PACKET socket sees a frame (skb_vlan_untag()); the sink puts it back
  from PACKET_AUXDATA, as libpcap does. A tagged frame with less than 6
  bytes after the Ethernet header (the tag alone, or tag + inner type) is
  freed there, before any socket: such frames are checked by sink0's
  veth counters, not byte for byte.
"""
import collections
import contextlib
import errno
import socket
import struct

import pytest
from integration_helpers import ROOT_ONLY, link_counters, poll_until

from xdpd.lab.daemon import forward_config, run_in_netns
from xdpd.lab.frames import ip_checksum

pytestmark = ROOT_ONLY

# <linux/if_packet.h>, <linux/if_ether.h>
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_ALL = 0x0003
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
SO_RCVBUFFORCE = 33

COPIES = 12                 # of each kind; well below any ring size
BROADCAST = b"\xff" * 6
OTHER_UNICAST = bytes.fromhex("020000000099")
MDNS_MULTICAST = bytes.fromhex("01005e0000fb")


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


# --- frames: everything after the two MAC addresses ---------------------------

def ipv4(payload: bytes, proto: int = socket.IPPROTO_UDP, *, ihl: int = 5,
         version: int = 4, total: int | None = None, frag: int = 0x4000,
         options: bytes = b"", checksum: bool = True) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0,
                                20 + len(options) + len(payload) if total is None else total,
                                0x1234, frag, 64, proto, 0, bytes((198, 18, 0, 1)),
                                bytes((198, 19, 0, 1))) + options)
    if checksum:
        s = sum(struct.unpack(f"!{len(hdr) // 2}H", bytes(hdr)))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        struct.pack_into("!H", hdr, 10, ~s & 0xFFFF)
    else:
        struct.pack_into("!H", hdr, 10, 0xBAD0)
    return bytes(hdr) + payload


def udp(payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", 10000, 9, 8 + len(payload) if length is None else length,
                       0) + payload


def ipv6(payload: bytes, next_header: int = socket.IPPROTO_UDP,
         length: int | None = None) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload) if length is None else length,
                       next_header, 64, b"\xfd" + bytes(14) + b"\x01",
                       b"\xfd" + bytes(14) + b"\x02") + payload


def arp(op: int, tha: bytes = bytes(6)) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac("02:00:00:00:00:01"),
                       bytes((198, 18, 0, 1)), tha, bytes((198, 18, 0, 2)))


def typed(ethertype: int, rest: bytes) -> bytes:
    return struct.pack("!H", ethertype) + rest


def tag(tpid: int, tci: int, rest: bytes) -> bytes:
    return struct.pack("!HH", tpid, tci) + rest


DATA = bytes(range(256)) * 6
UDP64 = ipv4(udp(DATA[:22]))                # an ordinary 64-byte frame's body


def _fold(data: bytes) -> int:
    """The one's complement sum of data, not complemented."""
    return 0xFFFF - ip_checksum(data)


def l4_checked(proto: int, payload: bytes, how: str) -> bytes:
    """A TCP or UDP segment from ipv4()'s addresses whose checksum is
    `wrong` (as a damaged frame from a wire has it) or `partial` (the
    pseudo-header sum alone, what a local stack with TX offload leaves)."""
    if proto == socket.IPPROTO_TCP:
        seg = bytearray(struct.pack("!HHIIBBHHH", 10000, 9, 1, 0, 5 << 4, 0x18, 512, 0, 0)
                        + payload)
        at = 16
    else:
        seg = bytearray(udp(payload))
        at = 6
    pseudo = bytes((198, 18, 0, 1, 198, 19, 0, 1)) + struct.pack("!xBH", proto, len(seg))
    if how == "partial":
        value = _fold(pseudo)
    else:
        value = (~_fold(pseudo + bytes(seg)) + 0x0101) & 0xFFFF or 1
    struct.pack_into("!H", seg, at, value)
    return bytes(seg)


def size(body: bytes, frame_len: int) -> bytes:
    """body padded with DATA (or cut) so the whole frame is frame_len bytes."""
    want = frame_len - 12
    return (body + DATA * 2)[:want] if len(body) < want else body[:want]


# (name, destination MAC if not in0's, body, the sink's AF_PACKET sees it)
KINDS = [
    ("runt 14 B: Ethernet header only", None, typed(0x88B5, b""), True),
    ("runt 15 B", None, typed(0x88B5, b"\x01"), True),
    ("runt 42 B", None, size(typed(0x88B5, b""), 42), True),
    ("runt 59 B", None, size(typed(0x88B5, b""), 59), True),
    ("60 B: Ethernet minimum without FCS", None, size(typed(0x88B5, b""), 60), True),
    ("IPv4 UDP 64 B (reference)", None, typed(0x0800, UDP64), True),
    ("broadcast destination", BROADCAST, typed(0x0800, UDP64), True),
    ("multicast destination", MDNS_MULTICAST, typed(0x0800, UDP64), True),
    ("unicast destination not in0's", OTHER_UNICAST, typed(0x0800, UDP64), True),
    ("802.1Q VID 100, IPv4 UDP", None, tag(0x8100, 100, typed(0x0800, UDP64)), True),
    ("802.1Q priority tag (VID 0, PCP 5)", None, tag(0x8100, 5 << 13, typed(0x0800, UDP64)),
     True),
    ("802.1Q tag and nothing after (16 B)", None, tag(0x8100, 100, b""), False),
    ("802.1Q tag + inner type, no payload (18 B)", None, tag(0x8100, 100, typed(0x0800, b"")),
     False),
    ("802.1Q tag, IPv4 cut after 2 bytes (20 B)", None,
     tag(0x8100, 100, typed(0x0800, UDP64[:2])), True),
    ("QinQ 802.1ad S-VID 10, C-VID 100, IPv4 UDP", None,
     tag(0x88A8, 10, tag(0x8100, 100, typed(0x0800, UDP64))), True),
    ("QinQ with two 0x8100 tags", None,
     tag(0x8100, 10, tag(0x8100, 100, typed(0x0800, UDP64))), True),
    ("QinQ, both tags and nothing after (20 B)", None, tag(0x88A8, 10, tag(0x8100, 100, b"")),
     True),
    ("IPv6 UDP", None, typed(0x86DD, ipv6(udp(DATA[:30]))), True),
    ("IPv6 hop-by-hop options + UDP", None,
     typed(0x86DD, ipv6(bytes((socket.IPPROTO_UDP, 0, 5, 2, 0, 0, 1, 0)) + udp(DATA[:30]),
                        next_header=0)), True),
    ("IPv6 header cut after 30 B", None, typed(0x86DD, ipv6(udp(DATA[:30]))[:30]), True),
    ("IPv6 payload length 1400 in a short frame", None,
     typed(0x86DD, ipv6(udp(DATA[:30]), length=1400)), True),
    ("ARP request", BROADCAST, typed(0x0806, arp(1)), True),
    ("ARP reply", None, typed(0x0806, arp(2, mac("02:00:00:00:00:02"))), True),
    ("ARP cut after 8 B", None, typed(0x0806, arp(1)[:8]), True),
    ("IPv4 header cut after 10 B", None, typed(0x0800, UDP64[:10]), True),
    ("IPv4 IHL 15 in a 20-byte header", None, typed(0x0800, ipv4(udp(DATA[:8]), ihl=15)), True),
    ("IPv4 IHL 2", None, typed(0x0800, ipv4(udp(DATA[:8]), ihl=2)), True),
    ("IPv4 ethertype carrying version 6", None, typed(0x0800, ipv4(udp(DATA[:8]), version=6)),
     True),
    ("IPv4 total length 1500 in 60 B", None,
     size(typed(0x0800, ipv4(udp(DATA[:8]), total=1500)), 60), True),
    ("IPv4 total length 20, 30 B trailing", None,
     typed(0x0800, ipv4(udp(DATA[:22]), total=20)), True),
    ("IPv4 total length 0", None, typed(0x0800, ipv4(udp(DATA[:8]), total=0)), True),
    ("IPv4 bad header checksum", None, typed(0x0800, ipv4(udp(DATA[:22]), checksum=False)),
     True),
    ("IPv4 options (IHL 6) + UDP", None,
     typed(0x0800, ipv4(udp(DATA[:22]), ihl=6, options=b"\x01\x01\x01\x00")), True),
    ("IPv4 UDP header cut after 4 B", None, typed(0x0800, ipv4(udp(b"")[:4])), True),
    ("IPv4 UDP length 2000 in 64 B", None, typed(0x0800, ipv4(udp(DATA[:22], length=2000))),
     True),
    ("IPv4 later fragment (offset 1480, MF)", None,
     typed(0x0800, ipv4(DATA[:30], frag=0x2000 | 185)), True),
    ("IPv4 TCP header cut after 6 B", None, typed(0x0800, ipv4(DATA[:6], socket.IPPROTO_TCP)),
     True),
    # checksums xdpd must not "heal" (it completes partial ones only,
    # docs/ARCHITECTURE.md "Partial checksums"): a wrong one from a wire,
    # and partial-looking ones where it parses nothing
    ("IPv4 UDP, wrong checksum", None,
     typed(0x0800, ipv4(l4_checked(socket.IPPROTO_UDP, DATA[:22], "wrong"))), True),
    ("IPv4 TCP, wrong checksum", None,
     typed(0x0800, ipv4(l4_checked(socket.IPPROTO_TCP, DATA[:30], "wrong"),
                        socket.IPPROTO_TCP)), True),
    ("IPv4 UDP first fragment (MF), partial-looking checksum", None,
     typed(0x0800, ipv4(l4_checked(socket.IPPROTO_UDP, DATA[:22], "partial"), frag=0x2000)),
     True),
    ("IPv4 TCP, partial-looking checksum, IP length past the frame", None,
     typed(0x0800, ipv4(l4_checked(socket.IPPROTO_TCP, DATA[:30], "partial"),
                        socket.IPPROTO_TCP, total=1400)), True),
    ("IPv6 hop-by-hop + UDP, partial-looking checksum", None,
     typed(0x86DD, ipv6(bytes((socket.IPPROTO_UDP, 0, 5, 2, 0, 0, 1, 0))
                        + l4_checked(socket.IPPROTO_UDP, DATA[:30], "partial"),
                        next_header=0)), True),
    ("802.3 length 46 + LLC/SNAP", None,
     size(typed(46, b"\xaa\xaa\x03\x00\x00\x00\x08\x00"), 60), True),
    ("802.3 length 1500 in a 60 B frame", None, size(typed(1500, b"\x42\x42\x03"), 60), True),
    ("1514 B: in0's MTU", None, size(typed(0x0800, ipv4(udp(b""), total=1500)), 1514), True),
    ("802.1Q 1518 B: MTU + tag", None,
     size(tag(0x8100, 100, typed(0x0800, ipv4(udp(b""), total=1500))), 1518), True),
]


# --- the wire ------------------------------------------------------------------

def open_tx(lab, ns: str, dev: str) -> socket.socket:
    """An AF_PACKET socket made inside ns (a socket keeps its netns), sending only."""
    def make():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.bind((dev, 0))
        return s
    return run_in_netns(ns, make)


def open_rx(lab, ns: str, dev: str) -> socket.socket:
    """An AF_PACKET socket on dev in ns: every incoming frame, with the
    VLAN tag the stack took out of the data in PACKET_AUXDATA."""
    def make():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            s.bind((dev, ETH_P_ALL))
        except BaseException:
            s.close()
            raise
        s.setblocking(False)
        return s
    return run_in_netns(ns, make)


def receive_all(sock: socket.socket) -> list[bytes]:
    """What sits in the socket, each frame with its outer VLAN tag put back."""
    frames = []
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(16384, socket.CMSG_SPACE(AUXDATA.size))
        except BlockingIOError:
            return frames
        for level, typ, cdata in anc:
            if level == SOL_PACKET and typ == PACKET_AUXDATA:
                status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(cdata)
                if status & TP_STATUS_VLAN_VALID:
                    tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        frames.append(data)


def socket_drops(sock: socket.socket) -> int:
    return struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]


def build(kinds, run_id: int, default_dst: bytes) -> list[tuple[int, bytes]]:
    """COPIES frames of each kind; the source MAC 02:RUN:KIND:COPY (never
    rewritten by the rules here) makes each one unique."""
    frames = []
    for k, (_, dst, body, _) in enumerate(kinds):
        for c in range(COPIES):
            src = bytes((0x02, run_id, k)) + c.to_bytes(3, "big")
            frames.append((k, (dst or default_dst) + src + body))
    return frames


@contextlib.contextmanager
def lab_sockets(lab, pairs):
    socks = []
    try:
        for opener, ns, dev in pairs:
            socks.append(opener(lab, ns, dev))
        yield socks
    finally:
        for s in socks:
            s.close()


def send(tx: socket.socket, frames: list[tuple[int, bytes]]) -> None:
    for _, f in frames:
        assert tx.send(f) == len(f)


def send_through(lab, d, frames, run_id: int, expect: int, counter: tuple[str, str]):
    """Send frames from gen0; wait until the metric counter (name, netdev)
    counts them all and `expect` frames of this run are at the sink.
    Returns (metrics, frames received)."""
    got: list[bytes] = []
    with lab_sockets(lab, [(open_tx, lab.gen_ns, lab.GEN_DEV),
                           (open_rx, lab.sink_ns, lab.SINK_DEV)]) as (tx, rx):
        send(tx, frames)
        name, netdev = counter
        m = d.wait_for(lambda m: m.value(name, netdev=netdev) >= len(frames), timeout=10)

        def all_in():
            got.extend(f for f in receive_all(rx) if f[6:8] == bytes((0x02, run_id)))
            return len(got) >= expect
        poll_until(all_in, timeout=10, what=f"{expect} frames at the sink")
        assert socket_drops(rx) == 0
    return m, got


def assert_alive(d, pids: dict) -> None:
    assert d.proc.poll() is None, f"xdpd exited:\n{d.log()}"
    assert d.worker_pids() == pids, "a worker was replaced"
    m = d.scrape()
    assert m.value("xdpd_worker_restarts_total") == 0
    assert m.value("xdpd_worker_up") == len(pids)


def assert_frames_add_up(m) -> None:
    locations = m.by("xdpd_umem_frames", "location")
    assert sum(locations.values()) == m.value("xdpd_umem_frames_capacity") > 0


def drops(m) -> dict:
    return {r: v for (r,), v in m.by("xdpd_dropped_packets_total", "reason").items() if v}


# --- tests ---------------------------------------------------------------------

def test_the_kernel_refuses_frames_shorter_than_an_ethernet_header(lab):
    with lab_sockets(lab, [(open_tx, lab.gen_ns, lab.GEN_DEV)]) as (tx,):
        for n in (0, 1, 6, 12, 13):
            with pytest.raises(OSError) as e:
                tx.send((mac(lab.MACS[lab.IN_DEV]) + bytes(8))[:n])
            assert e.value.errno == errno.EINVAL, n
        assert tx.send(mac(lab.MACS[lab.IN_DEV]) + bytes(8)) == 14


def test_awkward_frames_are_forwarded_byte_for_byte(lab, start_daemon):
    d = start_daemon(forward_config(lab, reverse="drop"))
    pids = d.worker_pids()
    run_id = 0xB1
    frames = build(KINDS, run_id, mac(lab.MACS[lab.IN_DEV]))
    sink_mac = mac(lab.MACS[lab.SINK_DEV])
    expected = {sink_mac + f[6:]: k for k, f in frames if KINDS[k][3]}
    total_bytes = sum(len(f) for _, f in frames)
    before = link_counters(lab, lab.sink_ns, lab.SINK_DEV)
    m, got = send_through(lab, d, frames, run_id, len(expected),
                          ("xdpd_tx_packets_total", lab.OUT_DEV))

    # every frame the sink's stack lets through arrived exactly once, as sent
    # but for the destination MAC
    unknown = [f.hex() for f in got if f not in expected]
    assert not unknown, f"frames changed on the way: {unknown[:5]}"
    assert len(set(got)) == len(got) == len(expected)
    # ...and the ones it frees (cut VLAN tags) did reach sink0
    after = link_counters(lab, lab.sink_ns, lab.SINK_DEV)
    assert after["rx"]["packets"] - before["rx"]["packets"] == len(frames)
    assert after["rx"]["bytes"] - before["rx"]["bytes"] == total_bytes

    n = len(frames)
    assert m.value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, verdict="redirected") == n
    assert m.value("xdpd_rx_packets_total", netdev=lab.IN_DEV) == n
    assert m.value("xdpd_rx_bytes_total", netdev=lab.IN_DEV) == total_bytes
    assert m.value("xdpd_tx_packets_total", netdev=lab.OUT_DEV) == n
    assert m.value("xdpd_tx_bytes_total", netdev=lab.OUT_DEV) == total_bytes
    assert drops(m) == {}
    assert m.value("xdpd_xsk_rx_dropped_packets_total") == 0
    assert m.value("xdpd_xsk_rx_invalid_descriptors_total") == 0
    assert m.value("xdpd_xsk_tx_invalid_descriptors_total") == 0
    assert_frames_add_up(m)
    assert_alive(d, pids)
    exact = collections.Counter(expected[f] for f in got)
    print(f"\n{len(KINDS)} kinds x {COPIES}: {n} frames, {total_bytes} bytes forwarded; "
          f"{len(got)} compared byte for byte at the sink")
    for k, (name, _, body, visible) in enumerate(KINDS):
        seen = f"{exact[k]}/{COPIES} exact at the sink" if visible else \
            "counted by sink0's veth (freed by its stack before any socket)"
        print(f"  {name:<46} {12 + len(body):>5} B  forwarded, {seen}")


def test_awkward_frames_meet_the_drop_and_the_no_rule_case(lab, start_daemon):
    """The other way (sink0 -> out0): first a drop rule, then (after a
    reload) no rule at all; every frame is counted by that reason, none
    leaves in0."""
    d = start_daemon(forward_config(lab, reverse="drop"))
    pids = d.worker_pids()
    run_id = 0xB2
    frames = build(KINDS, run_id, mac(lab.MACS[lab.OUT_DEV]))
    n = len(frames)
    no_rule = forward_config(lab).replace(
        f"""  - from: {lab.OUT_DEV}
    to: {lab.IN_DEV}
    set_dst_mac: "{lab.MACS[lab.GEN_DEV]}"
""", "")
    with lab_sockets(lab, [(open_tx, lab.sink_ns, lab.SINK_DEV),
                           (open_rx, lab.gen_ns, lab.GEN_DEV)]) as (tx, rx):
        send(tx, frames)
        m = d.wait_for(lambda m: m.value("xdpd_dropped_packets_total", reason="rule") >= n,
                       timeout=10)
        assert drops(m) == {"rule": n}
        assert d.reload(no_rule)["result"] == "applied"
        send(tx, frames)
        m = d.wait_for(lambda m: m.value("xdpd_dropped_packets_total", reason="no_rule") >= n,
                       timeout=10)
        assert drops(m) == {"rule": n, "no_rule": n}
        assert [f for f in receive_all(rx) if f[6:8] == bytes((0x02, run_id))] == []
    assert m.value("xdpd_rx_packets_total", netdev=lab.OUT_DEV) == 2 * n
    assert m.value("xdpd_tx_packets_total") == 0
    assert m.value("xdpd_xsk_rx_dropped_packets_total") == 0
    assert_frames_add_up(m)
    assert_alive(d, pids)


EGRESS_MTU = 1280
# the fast path's limit: the egress MTU + Ethernet header + one VLAN tag
LIMIT = EGRESS_MTU + 14 + 4


@contextlib.contextmanager
def egress_mtu(lab, mtu: int):
    """out0 and its peer sink0 (one link, one MTU) at mtu; 1500 again after."""
    links = [(lab.dut_ns, lab.OUT_DEV), (lab.sink_ns, lab.SINK_DEV)]
    try:
        for ns, dev in links:
            lab.run(ns, "ip", "link", "set", dev, "mtu", str(mtu))
        yield
    finally:
        for ns, dev in links:
            lab.run(ns, "ip", "link", "set", dev, "mtu", "1500", check=False)


def test_frames_longer_than_the_egress_mtu_are_dropped_as_too_long(lab, start_daemon):
    """in0 has MTU 1500, out0 1280: what fits out0 (up to MTU + 14 + a
    4-byte tag) goes through byte for byte, what does not is dropped at the
    ingress worker as too_long, not handed to a kernel that would drop it
    silently (veth: out0's tx_dropped) or send an oversized frame."""
    body = typed(0x0800, ipv4(udp(b""), total=1500))
    tagged = tag(0x8100, 100, body)
    kinds = [
        ("MTU + 14", None, size(body, EGRESS_MTU + 14), True),
        ("MTU + 18, untagged", None, size(body, LIMIT), True),
        ("MTU + 18, 802.1Q", None, size(tagged, LIMIT), True),
        ("MTU + 19", None, size(body, LIMIT + 1), False),
        ("MTU + 19, 802.1Q", None, size(tagged, LIMIT + 1), False),
        ("1400 B", None, size(body, 1400), False),
        ("1514 B", None, size(body, 1514), False),
    ]
    with egress_mtu(lab, EGRESS_MTU):
        d = start_daemon(forward_config(lab, reverse="drop"))
        pids = d.worker_pids()
        run_id = 0xB3
        frames = build(kinds, run_id, mac(lab.MACS[lab.IN_DEV]))
        fits = [f for k, f in frames if kinds[k][3]]
        too_long = len(frames) - len(fits)
        sink_mac = mac(lab.MACS[lab.SINK_DEV])
        m, got = send_through(lab, d, frames, run_id, len(fits),
                              ("xdpd_rx_packets_total", lab.IN_DEV))
        m = d.scrape()
        assert drops(m) == {"too_long": too_long}
        assert m.value("xdpd_dropped_packets_total", netdev=lab.IN_DEV,
                       reason="too_long") == too_long
        assert sorted(got) == sorted(sink_mac + f[6:] for f in fits)
        assert m.value("xdpd_tx_packets_total", netdev=lab.OUT_DEV) == len(fits)
        assert link_counters(lab, lab.dut_ns, lab.OUT_DEV)["tx"]["dropped"] == 0
        assert_frames_add_up(m)
        assert_alive(d, pids)
