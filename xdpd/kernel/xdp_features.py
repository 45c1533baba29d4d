"""A netdev's XDP features and zero-copy segment limit, from the kernel's
`netdev` generic netlink family (Documentation/netlink/specs/netdev.yaml,
Linux 6.3 and later).

What multi-buffer AF_XDP needs to know per interface: whether its driver
takes fragmented packets in XDP (NETDEV_XDP_ACT_RX_SG) and sends them
(NETDEV_XDP_ACT_NDO_XMIT_SG), whether it does zero-copy at all, and how
many descriptors one packet may span in zero-copy mode
(NETDEV_A_DEV_XDP_ZC_MAX_SEGS; copy mode allows MAX_SKB_FRAGS + 1).

Owns: the request (CTRL_CMD_GETFAMILY for the family's id, then
NETDEV_CMD_DEV_GET for one ifindex) and the answer's parsing.  The netlink
messages are a few structs, written here with struct: pyroute2, which xdpd
uses for rtnetlink, has no message class for this family.
Must not: decide what a feature means for xdpd's configuration (doctor
and the supervisor do); it keeps errno (XdpFeaturesError.errno).
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from xdpd.kernel.errors import errname

# linux/netlink.h, linux/genetlink.h
NETLINK_GENERIC = 16
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR, NLMSG_DONE = 2, 3
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
# linux/netdev.h
NETDEV_FAMILY_NAME = "netdev"
NETDEV_FAMILY_VERSION = 1
NETDEV_CMD_DEV_GET = 1
NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES, NETDEV_A_DEV_XDP_ZC_MAX_SEGS = 1, 3, 4
XDP_ACT = {                 # enum netdev_xdp_act: the names `ip`/ynl print
    "basic": 1, "redirect": 2, "ndo-xmit": 4, "xsk-zerocopy": 8, "hw-offload": 16,
    "rx-sg": 32, "ndo-xmit-sg": 64,
}
# MAX_SKB_FRAGS + 1: descriptors per packet in copy mode (the kernel's
# default MAX_SKB_FRAGS is 17; CONFIG_MAX_SKB_FRAGS can raise it)
COPY_MODE_MAX_SEGS = 18

# struct nlmsghdr { __u32 nlmsg_len; __u16 nlmsg_type; __u16 nlmsg_flags;
#                   __u32 nlmsg_seq; __u32 nlmsg_pid; };
NLMSGHDR = struct.Struct("=IHHII")
# struct genlmsghdr { __u8 cmd; __u8 version; __u16 reserved; };
GENLMSGHDR = struct.Struct("=BBH")
# struct nlattr { __u16 nla_len; __u16 nla_type; };
NLATTR = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF      # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


class XdpFeaturesError(OSError):
    """The kernel did not answer (errno kept): an old kernel without the
    netdev family is ENOENT, an unknown ifindex ENODEV."""


@dataclass(frozen=True)
class XdpFeatures:
    ifindex: int
    flags: int                  # NETDEV_XDP_ACT_* bits
    zc_max_segs: int | None     # None: the kernel did not say (no zero-copy)

    def has(self, name: str) -> bool:
        return bool(self.flags & XDP_ACT[name])

    @property
    def names(self) -> list[str]:
        return [name for name, bit in XDP_ACT.items() if self.flags & bit]


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = NLATTR.pack(NLATTR.size + len(payload), kind) + payload
    return raw + bytes(_align(len(raw)) - len(raw))


def attrs(data: bytes) -> dict[int, bytes]:
    """The attributes in data by type (the last one of a type wins); a
    truncated or lying length ends the walk."""
    out, off = {}, 0
    while off + NLATTR.size <= len(data):
        length, kind = NLATTR.unpack_from(data, off)
        if length < NLATTR.size or off + length > len(data):
            break
        out[kind & NLA_TYPE_MASK] = data[off + NLATTR.size:off + length]
        off += _align(length)
    return out


def message(family: int, cmd: int, version: int, payload: bytes, seq: int) -> bytes:
    body = GENLMSGHDR.pack(cmd, version, 0) + payload
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), family, NLM_F_REQUEST | NLM_F_ACK,
                         seq, 0) + body


def walk(data: bytes, seq: int):
    """(type, body) of each netlink message in data that answers seq; a
    truncated or lying length ends the walk."""
    off = 0
    while off + NLMSGHDR.size <= len(data):
        length, kind, _flags, got_seq, _pid = NLMSGHDR.unpack_from(data, off)
        if length < NLMSGHDR.size or off + length > len(data):
            break
        if got_seq == seq:
            yield kind, data[off + NLMSGHDR.size:off + length]
        off += _align(length)


class _Genl:
    """One NETLINK_GENERIC socket, one request at a time."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_GENERIC)
        self.sock.settimeout(2.0)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def ask(self, family: int, cmd: int, version: int, payload: bytes) -> list[dict]:
        """The attributes of each answer, until the kernel's ACK (an
        NLMSG_ERROR of 0); a non-zero error raises it."""
        self.seq += 1
        self.sock.send(message(family, cmd, version, payload, self.seq))
        answers = []
        while True:
            for kind, body in walk(self.sock.recv(65536), self.seq):
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", body)
                    if err:
                        raise XdpFeaturesError(-err, os.strerror(-err))
                    return answers
                if kind == NLMSG_DONE:
                    return answers
                answers.append(attrs(body[GENLMSGHDR.size:]))


def xdp_features(ifindex: int) -> XdpFeatures:
    """The XDP features of netdev ifindex (in this thread's netns)."""
    genl = None
    try:
        genl = _Genl()
        found = genl.ask(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1,
                         attr(CTRL_ATTR_FAMILY_NAME, NETDEV_FAMILY_NAME.encode() + b"\0"))
        ids = [a[CTRL_ATTR_FAMILY_ID] for a in found if CTRL_ATTR_FAMILY_ID in a]
        if not ids:
            raise XdpFeaturesError(errno.ENOENT, "no netdev netlink family")
        (family,) = struct.unpack("=H", ids[0][:2])
        got = genl.ask(family, NETDEV_CMD_DEV_GET, NETDEV_FAMILY_VERSION,
                       attr(NETDEV_A_DEV_IFINDEX, struct.pack("=I", ifindex)))
    except XdpFeaturesError as e:
        what = ("this kernel has no netdev netlink family (Linux 6.3 and later)"
                if e.errno == errno.ENOENT else f"ifindex {ifindex}")
        raise XdpFeaturesError(e.errno, f"read XDP features: {errname(e.errno)} ({what})") \
            from None
    except OSError as e:
        raise XdpFeaturesError(e.errno or errno.EIO,
                               f"read XDP features of ifindex {ifindex}: "
                               f"{errname(e.errno) if e.errno else e}") from None
    finally:
        if genl is not None:
            genl.close()
    for a in got:
        if NETDEV_A_DEV_XDP_FEATURES in a:
            (flags,) = struct.unpack("=Q", a[NETDEV_A_DEV_XDP_FEATURES][:8].ljust(8, b"\0"))
            zc = a.get(NETDEV_A_DEV_XDP_ZC_MAX_SEGS)
            return XdpFeatures(ifindex, flags,
                               struct.unpack("=I", zc[:4])[0] if zc and len(zc) >= 4 else None)
    raise XdpFeaturesError(errno.EPROTO, f"read XDP features of ifindex {ifindex}: "
                           "the answer had no xdp-features")
