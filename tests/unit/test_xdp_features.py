"""The netdev generic netlink family, as xdpd reads a device's XDP features:
attribute and message encoding, hostile lengths, errors kept with errno,
and (as root) a real veth's answer."""
import errno
import os
import socket
import struct
import subprocess
import uuid

import pytest

from xdpd.kernel import xdp_features as xf


def answer(seq: int, *attributes: bytes, kind: int = 0x20) -> bytes:
    body = xf.GENLMSGHDR.pack(xf.NETDEV_CMD_DEV_GET, 1, 0) + b"".join(attributes)
    return xf.NLMSGHDR.pack(xf.NLMSGHDR.size + len(body), kind, 0, seq, 0) + body


def ack(seq: int, err: int = 0) -> bytes:
    body = struct.pack("=i", err) + bytes(16)
    return xf.NLMSGHDR.pack(xf.NLMSGHDR.size + len(body), xf.NLMSG_ERROR, 0, seq, 0) + body


def test_attributes_round_trip_with_padding():
    raw = xf.attr(1, b"abc") + xf.attr(3, struct.pack("=Q", 35)) + xf.attr(0x8004, b"\1\0\0\0")
    assert len(raw) % 4 == 0
    got = xf.attrs(raw)
    assert got[1] == b"abc" and struct.unpack("=Q", got[3]) == (35,)
    assert got[4] == b"\1\0\0\0"            # NLA_F_NESTED stripped from the type


@pytest.mark.parametrize("raw", [
    struct.pack("=HH", 2, 1),               # shorter than its own header
    struct.pack("=HH", 200, 1) + b"x" * 8,  # longer than what is there
    b"\1\2",                                # not even a header
])
def test_a_lying_attribute_ends_the_walk(raw):
    assert xf.attrs(xf.attr(7, b"ok!!") + raw) == {7: b"ok!!"}


def test_walk_keeps_only_answers_to_our_request():
    data = answer(4, xf.attr(1, b"a")) + answer(5, xf.attr(1, b"b"))
    assert [body[xf.GENLMSGHDR.size:] for _, body in xf.walk(data, 5)] == [xf.attr(1, b"b")]
    assert list(xf.walk(xf.NLMSGHDR.pack(4, 0, 0, 5, 0), 5)) == []   # a lying length


class FakeSocket:
    def __init__(self, *chunks):
        self.chunks, self.sent = list(chunks), []

    def send(self, data):
        self.sent.append(data)

    def recv(self, n):
        return self.chunks.pop(0)


def genl(*chunks):
    g = xf._Genl.__new__(xf._Genl)
    g.sock, g.seq = FakeSocket(*chunks), 0
    return g


def test_ask_collects_answers_until_the_ack():
    g = genl(answer(1, xf.attr(3, struct.pack("=Q", 33))), ack(1))
    assert g.ask(20, 1, 1, b"") == [{3: struct.pack("=Q", 33)}]
    (sent,) = g.sock.sent
    length, family, flags, seq, _ = xf.NLMSGHDR.unpack_from(sent)
    assert (length, family, seq) == (len(sent), 20, 1)
    assert flags == xf.NLM_F_REQUEST | xf.NLM_F_ACK


def test_ask_raises_the_kernels_errno():
    with pytest.raises(xf.XdpFeaturesError) as e:
        genl(ack(1, -errno.ENODEV)).ask(20, 1, 1, b"")
    assert e.value.errno == errno.ENODEV


def test_features_by_name():
    f = xf.XdpFeatures(3, xf.XDP_ACT["basic"] | xf.XDP_ACT["rx-sg"], None)
    assert f.has("rx-sg") and not f.has("xsk-zerocopy")
    assert f.names == ["basic", "rx-sg"]


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a veth pair")
def test_a_real_veth_answers():
    a, b = f"xf{uuid.uuid4().hex[:8]}", f"xg{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        f = xf.xdp_features(socket.if_nametoindex(a))
        assert f.has("basic") and f.has("redirect"), f.names
        with pytest.raises(xf.XdpFeaturesError) as e:
            xf.xdp_features(0x7FFFFFFF)
        assert e.value.errno == errno.ENODEV and "ENODEV" in str(e.value)
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)
