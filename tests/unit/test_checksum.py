"""Partial checksums (datapath/parse.h, "Partial checksums"): what a worker does
to a frame from an interface with `checksum: auto|complete`.

A local stack with TX checksum offload on leaves the pseudo-header's sum in
a TCP or UDP checksum field (CHECKSUM_PARTIAL); the worker completes exactly
those, as a NIC would, and leaves every other frame byte for byte as it
came: complete ones, wrong ones that are not partial, and what it does not
parse (fragments, IPv6 extension headers, truncated headers).  The expected
checksums here are computed in Python, independently of the C."""
import random
import struct

import pytest

from xdpd.datapath import _fastpath

SRC4, DST4 = bytes([10, 200, 0, 1]), bytes([10, 200, 0, 2])
SRC6 = bytes.fromhex("fd000000000000000000000000000001")
DST6 = bytes.fromhex("fd000000000000000000000000000002")
MACS = bytes.fromhex("020000000002" "020000000001")


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return s


def pseudo(v6: bool, proto: int, length: int) -> bytes:
    if v6:
        return SRC6 + DST6 + struct.pack("!IxxxB", length, proto)
    return SRC4 + DST4 + struct.pack("!xBH", proto, length)


def l4(proto: int, payload: bytes) -> bytes:
    """A TCP or UDP header (checksum 0) and its payload."""
    if proto == 6:
        return struct.pack("!HHIIBBHHH", 40000, 5201, 1, 0, 5 << 4, 0x18, 512, 0, 0) + payload
    return struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload


def frame(proto: int, payload: bytes, v6: bool = False, how: str = "complete",
          vlans: int = 0) -> bytearray:
    """An Ethernet frame whose TCP/UDP checksum is `complete`, `partial`
    (the pseudo-header sum, as Linux leaves it), `wrong` or `zero`."""
    seg = bytearray(l4(proto, payload))
    at = 16 if proto == 6 else 6
    ps = pseudo(v6, proto, len(seg))
    if how == "complete":
        c = 0xffff - ones_sum(ps + bytes(seg))
        c = c or (0xffff if proto == 17 else 0)
    elif how == "partial":
        c = ones_sum(ps)
    elif how == "wrong":
        c = (0xffff - ones_sum(ps + bytes(seg)) + 0x1234) & 0xffff
    else:
        c = 0
    struct.pack_into("!H", seg, at, c)
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(seg), proto, 64) + SRC6 + DST6
        ethertype = 0x86DD
    else:
        hdr = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(seg), 1, 0x4000, 64, proto, 0)
                        + SRC4 + DST4)
        struct.pack_into("!H", hdr, 10, 0xffff - ones_sum(bytes(hdr)))
        ip = bytes(hdr)
        ethertype = 0x0800
    tags = b"".join(struct.pack("!HH", 0x88A8 if i == 0 and vlans == 2 else 0x8100, 100 + i)
                    for i in range(vlans))
    return bytearray(MACS + tags + struct.pack("!H", ethertype) + ip + seg)


def verifies(f: bytes, proto: int, v6: bool, vlans: int = 0) -> bool:
    l3 = 14 + 4 * vlans
    seg = f[l3 + 40:] if v6 else f[l3 + 20:]
    return ones_sum(pseudo(v6, proto, len(seg)) + bytes(seg)) == 0xffff


CASES = [(proto, v6, size, vlans) for proto in (6, 17) for v6 in (False, True)
         for size in (0, 1, 7, 1400, 1441) for vlans in (0, 1, 2)]


@pytest.mark.parametrize("proto, v6, size, vlans", CASES)
def test_a_partial_checksum_is_completed_to_exactly_the_right_one(proto, v6, size, vlans):
    payload = random.Random(size * 7 + proto).randbytes(size)
    want = frame(proto, payload, v6, "complete", vlans)
    f = frame(proto, payload, v6, "partial", vlans)
    assert f != want and not verifies(f, proto, v6, vlans)
    assert _fastpath.complete_checksum(f) is True
    assert f == want and verifies(f, proto, v6, vlans)
    assert _fastpath.complete_checksum(f) is False          # once: complete now
    assert f == want


@pytest.mark.parametrize("proto, v6, size, vlans", CASES[::3])
@pytest.mark.parametrize("how", ["complete", "wrong"])
def test_frames_that_are_not_partial_are_never_touched(proto, v6, size, vlans, how):
    f = frame(proto, random.Random(size).randbytes(size), v6, how, vlans)
    before = bytes(f)
    assert _fastpath.complete_checksum(f) is False
    assert bytes(f) == before


def test_a_partial_sum_that_happens_to_verify_is_left_alone():
    """A frame whose field equals the pseudo-header sum and whose checksum
    also verifies (the data sums to zero): complete already, untouched."""
    payload = bytearray(64)
    f = frame(17, bytes(payload), how="partial")
    seg_at = 14 + 20
    # choose the last two payload bytes so that the whole segment sums to 0xffff
    struct.pack_into("!H", f, len(f) - 2, 0)
    rest = ones_sum(pseudo(False, 17, len(f) - seg_at) + bytes(f[seg_at:]))
    struct.pack_into("!H", f, len(f) - 2, 0xffff - rest)
    assert verifies(f, 17, False)
    before = bytes(f)
    assert _fastpath.complete_checksum(f) is False and bytes(f) == before


def test_udp_without_a_checksum_stays_without():
    f = frame(17, b"query", how="zero")
    before = bytes(f)
    assert _fastpath.complete_checksum(f) is False and bytes(f) == before


def test_a_udp_sum_of_zero_is_sent_as_ffff():
    """UDP: 0 means "no checksum", so a computed 0 goes out as 0xffff."""
    for n in range(20000):
        payload = struct.pack("!I", n)
        want = frame(17, payload, how="complete")
        if struct.unpack_from("!H", want, 14 + 20 + 6)[0] == 0xffff:
            break
    else:
        pytest.fail("no payload with a zero sum found")
    f = frame(17, payload, how="partial")
    assert _fastpath.complete_checksum(f) is True and f == want


def mangle(f: bytearray, what: str) -> bytearray:
    if what == "fragment":              # MF set: the checksum covers the whole datagram
        struct.pack_into("!H", f, 14 + 6, 0x2000)
    elif what == "later fragment":
        struct.pack_into("!H", f, 14 + 6, 0x0010)
    elif what == "truncated":           # the IP length says more than the frame has
        struct.pack_into("!H", f, 14 + 2, len(f))
    elif what == "short l4":            # a TCP header cut at 12 bytes
        struct.pack_into("!H", f, 14 + 2, 20 + 12)
        del f[14 + 20 + 12:]
    elif what == "not ip":
        struct.pack_into("!H", f, 12, 0x0806)
    elif what == "runt":
        del f[20:]
    return f


@pytest.mark.parametrize("what", ["fragment", "later fragment", "truncated", "short l4",
                                  "not ip", "runt"])
def test_what_it_does_not_parse_it_leaves_as_it_is(what):
    f = mangle(frame(6, b"x" * 100, how="partial"), what)
    before = bytes(f)
    assert _fastpath.complete_checksum(f) is False and bytes(f) == before


def test_ipv6_with_an_extension_header_is_left_as_it_is():
    f = frame(17, b"y" * 50, v6=True, how="partial")
    # a hop-by-hop header (8 bytes, PadN) in front of UDP
    ip = 14
    hbh = bytes([17, 0, 1, 4, 0, 0, 0, 0])
    f[ip + 6] = 0                       # next header: hop-by-hop
    plen = struct.unpack_from("!H", f, ip + 4)[0]
    struct.pack_into("!H", f, ip + 4, plen + 8)
    f[ip + 40:ip + 40] = hbh
    before = bytes(f)
    assert _fastpath.complete_checksum(f) is False and bytes(f) == before


def test_ipv4_options_are_skipped_by_the_header_length():
    """ihl > 5: the L4 header starts after the options."""
    seg = bytearray(l4(6, b"z" * 33))
    ps = pseudo(False, 6, len(seg))
    struct.pack_into("!H", seg, 16, ones_sum(ps))        # partial
    hdr = bytearray(struct.pack("!BBHHHBBH", 0x46, 0, 24 + len(seg), 1, 0x4000, 64, 6, 0)
                    + SRC4 + DST4 + b"\x01\x01\x01\x00")  # NOP NOP NOP EOL
    struct.pack_into("!H", hdr, 10, 0xffff - ones_sum(bytes(hdr)))
    f = bytearray(MACS + b"\x08\x00" + hdr + seg)
    assert _fastpath.complete_checksum(f) is True
    assert ones_sum(ps + bytes(f[14 + 24:])) == 0xffff


def test_random_bytes_never_crash_it_and_rarely_change():
    rng = random.Random(1)
    changed = 0
    for _ in range(20000):
        f = bytearray(rng.randbytes(rng.randrange(0, 200)))
        if len(f) > 14 and rng.random() < 0.5:
            struct.pack_into("!H", f, 12, rng.choice((0x0800, 0x86DD, 0x8100)))
        changed += _fastpath.complete_checksum(f)
    assert changed < 20
