"""Frame building and parsing of the lab's generator/sink (no privileges)."""
import struct

import pytest

from xdpd.lab import frames, traffic
from xdpd.lab.traffic import ParsedFrame, build_frame, parse_frame

SRC = bytes.fromhex("020000000001")
DST = bytes.fromhex("020000000002")


@pytest.mark.parametrize("size", [60, 64, 128, 1514, 9014])
def test_round_trip(size):
    frame = build_frame(seq=123456789, flow=7, size=size, src_mac=SRC, dst_mac=DST, tag=42)
    assert len(frame) == size
    assert parse_frame(frame, tag=42) == ParsedFrame(
        seq=123456789, flow=7, dst_mac=DST, src_mac=SRC, intact=True)


@pytest.mark.parametrize("size", [59, 9015, 0])
def test_size_out_of_range_is_refused(size):
    with pytest.raises(ValueError, match="frame size"):
        build_frame(seq=1, flow=0, size=size, src_mac=SRC, dst_mac=DST, tag=1)


def test_headers_are_ethernet_ipv4_udp_in_benchmark_range():
    frame = build_frame(seq=5, flow=3, size=64, src_mac=SRC, dst_mac=DST, tag=1)
    assert frame[0:6] == DST and frame[6:12] == SRC
    assert frame[12:14] == b"\x08\x00"
    ver_ihl, _tos, total_len, _id, frag, ttl, proto, _csum, src, dst = struct.unpack(
        "!BBHHHBBH4s4s", frame[14:34])
    assert ver_ihl == 0x45 and total_len == 64 - 14 and proto == 17 and ttl == 64
    assert frag == 0x4000
    assert src[:3] == bytes((198, 18, 0)) and dst[:3] == bytes((198, 19, 0))
    sport, dport, udp_len, udp_csum = struct.unpack("!HHHH", frame[34:42])
    assert sport == 10000 + 3 and udp_len == 64 - 34 and udp_csum == 0
    assert frame[42:46] == b"XDPD"
    assert struct.unpack("!IQH", frame[46:60]) == (1, 5, 3)


@pytest.mark.parametrize("flow", [0, 1, 63, 253, 254, 4999])
def test_ipv4_header_checksum_is_valid(flow):
    frame = build_frame(seq=flow * 31, flow=flow, size=100, src_mac=SRC, dst_mac=DST, tag=9)
    header = frame[14:34]
    assert frames.ip_checksum(header) == 0          # sum including checksum field
    assert header[10:12] != b"\0\0"


def test_flows_differ_in_ports_and_addresses():
    a = build_frame(seq=1, flow=1, size=64, src_mac=SRC, dst_mac=DST, tag=1)
    b = build_frame(seq=1, flow=2, size=64, src_mac=SRC, dst_mac=DST, tag=1)
    assert a[26:38] != b[26:38]                        # IPs and ports


def test_fill_is_derived_from_seq():
    f1 = build_frame(seq=1, flow=0, size=200, src_mac=SRC, dst_mac=DST, tag=1)
    f2 = build_frame(seq=2, flow=0, size=200, src_mac=SRC, dst_mac=DST, tag=1)
    assert f1[60:] != f2[60:]
    assert f1[60:] == bytes((1 + i) % 256 for i in range(140))


@pytest.mark.parametrize("offset", [14, 24, 30, 36, 58, 60, 63, 1513])
def test_tampered_frame_is_not_intact(offset):
    frame = bytearray(build_frame(seq=77, flow=3, size=1514, src_mac=SRC, dst_mac=DST, tag=5))
    frame[offset] ^= 0x01
    parsed = parse_frame(bytes(frame), tag=5)
    assert parsed is not None and parsed.intact is False


def test_truncated_or_padded_frame_is_not_intact():
    frame = build_frame(seq=77, flow=3, size=200, src_mac=SRC, dst_mac=DST, tag=5)
    assert parse_frame(frame[:150], tag=5).intact is False
    assert parse_frame(frame + b"\0\0", tag=5).intact is False


def test_rewritten_macs_stay_intact():
    frame = build_frame(seq=8, flow=1, size=64, src_mac=SRC, dst_mac=DST, tag=5)
    other = bytes.fromhex("020000000004") + bytes.fromhex("020000000003") + frame[12:]
    parsed = parse_frame(other, tag=5)
    assert parsed.intact and parsed.dst_mac == bytes.fromhex("020000000004")


def test_foreign_frames_are_none():
    ours = build_frame(seq=1, flow=0, size=64, src_mac=SRC, dst_mac=DST, tag=5)
    assert parse_frame(ours, tag=6) is None                        # other run
    assert parse_frame(ours[:59], tag=5) is None                   # too short
    assert parse_frame(ours[:42] + b"XDPQ" + ours[46:], tag=5) is None
    arp = DST + SRC + b"\x08\x06" + bytes(46)
    assert parse_frame(arp, tag=5) is None
    assert parse_frame(b"", tag=5) is None


def test_argument_checks():
    with pytest.raises(ValueError):
        build_frame(seq=-1, flow=0, size=64, src_mac=SRC, dst_mac=DST, tag=1)
    with pytest.raises(ValueError):
        build_frame(seq=0, flow=traffic.MAX_FLOWS, size=64, src_mac=SRC, dst_mac=DST, tag=1)
    with pytest.raises(ValueError):
        build_frame(seq=0, flow=0, size=64, src_mac=SRC[:5], dst_mac=DST, tag=1)
    with pytest.raises(ValueError):
        build_frame(seq=0, flow=0, size=64, src_mac=SRC, dst_mac=DST, tag=1 << 32)


def test_mac_conversion():
    assert frames.parse_mac("02:00:00:00:00:0a") == bytes.fromhex("02000000000a")
    assert frames.mac_to_str(bytes.fromhex("02000000000a")) == "02:00:00:00:00:0a"
    with pytest.raises(ValueError, match="expected six hex octets"):
        frames.parse_mac("02:00:00:00:00")


def test_seen_set_finds_duplicates_also_beyond_bitmap():
    seen = traffic._SeenSet()
    for seq in (0, 1, 10**6, traffic._SeenSet.BITMAP_LIMIT + 5):
        assert seen.add(seq) is False
        assert seen.add(seq) is True


def test_sink_filter_accepts_exactly_our_frames():
    """Interpret the classic BPF filter on a few frames (no socket needed)."""
    insns = traffic._sink_filter(tag=5)

    def run(pkt):
        pc, acc = 0, 0
        while True:
            code, jt, jf, k = insns[pc]
            if code == traffic._BPF_RET_K:
                return k
            if code == traffic._BPF_LD_H_ABS:
                acc = int.from_bytes(pkt[k:k + 2], "big")
            elif code == traffic._BPF_LD_B_ABS:
                acc = pkt[k]
            elif code == traffic._BPF_LD_W_ABS:
                acc = int.from_bytes(pkt[k:k + 4], "big")
            elif code == traffic._BPF_JEQ_K:
                pc += jt if acc == k else jf
            pc += 1

    ours = build_frame(seq=1, flow=0, size=64, src_mac=SRC, dst_mac=DST, tag=5)
    assert run(ours) > 0
    assert run(build_frame(seq=1, flow=0, size=64, src_mac=SRC, dst_mac=DST, tag=4)) == 0
    assert run(ours[:42] + b"XDPQ" + ours[46:]) == 0
    assert run(ours[:12] + b"\x86\xdd" + ours[14:]) == 0
    assert run(ours[:23] + b"\x06" + ours[24:]) == 0
