"""The ethtool ioctl (SIOCETHTOOL): channels, RSS indirection, ntuple rules.

Design
------
Thin: one function per ethtool command, the C struct mirrored beside the
Python layout, errno kept, no policy (what to set and when to undo it is
steering.py's business).  Every request goes through one `send(ifname,
buffer)` callable that does the ioctl and leaves the kernel's answer in the
buffer; the unit tests pass their own and check the exact bytes xdpd would
send for RSS and ntuple, which no veth can take.

Why the ioctl and not ethtool netlink: ntuple rules (ETHTOOL_SRXCLSRLINS)
and the plain RSS indirection table exist only as ioctls; the kernel has no
netlink message for either, and pyroute2 has neither (its IoctlEthtool has
channels only, on a socket of its own that a test cannot stand in for).
Channels do have a netlink message (ETHTOOL_MSG_CHANNELS_SET), but one path
for all three keeps one injectable layer and one error shape, and the ioctl
is what netdev.py already uses to read channel counts.  The
ioctl is answered in the caller's network namespace, like netlink.

Errors are CallError (oserrors.py): `ETHTOOL_SRXCLSRLINS on eth1 (driver
ixgbe) failed: EOPNOTSUPP (...)`, with the way out where there is one.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Callable

from xdpd.kernel.errors import CallError

__all__ = ["Channels", "Ethtool", "FlowSpec", "EthtoolError", "RX_CLS_LOC_ANY"]

SIOCETHTOOL = 0x8946

# linux/ethtool.h command numbers
ETHTOOL_GDRVINFO = 0x03
ETHTOOL_GRXRINGS = 0x2D
ETHTOOL_GRXCLSRLCNT = 0x2E
ETHTOOL_GRXCLSRULE = 0x2F
ETHTOOL_GRXCLSRLALL = 0x30
ETHTOOL_SRXCLSRLDEL = 0x31
ETHTOOL_SRXCLSRLINS = 0x32
ETHTOOL_GRXFHINDIR = 0x38
ETHTOOL_SRXFHINDIR = 0x39
ETHTOOL_GCHANNELS = 0x3C
ETHTOOL_SCHANNELS = 0x3D

COMMAND_NAMES = {v: k for k, v in globals().items() if k.startswith("ETHTOOL_")}

# flow types (ethtool_rx_flow_spec.flow_type)
TCP_V4_FLOW = 0x01
UDP_V4_FLOW = 0x02
TCP_V6_FLOW = 0x05
UDP_V6_FLOW = 0x06
FLOW_EXT = 0x80000000
FLOW_MAC_EXT = 0x40000000
FLOW_RSS = 0x20000000
FLOW_TYPES = {"tcp4": TCP_V4_FLOW, "udp4": UDP_V4_FLOW,
              "tcp6": TCP_V6_FLOW, "udp6": UDP_V6_FLOW}

RX_CLS_LOC_ANY = 0xFFFFFFFF
RX_CLS_LOC_SPECIAL = 0x80000000   # in GRXCLSRLCNT's data: the driver picks locations

# struct ifreq {
#         char ifr_name[IFNAMSIZ];        /* 16 */
#         union { ...; void *ifr_data; }; /* 24 bytes: struct ifmap is the largest member */
# };
_IFREQ = struct.Struct("16sP")
_IFREQ_SIZE = 40

# struct ethtool_drvinfo {
#         __u32   cmd;
#         char    driver[32];
#         char    version[32];
#         char    fw_version[ETHTOOL_FWVERS_LEN];     /* 32 */
#         char    bus_info[ETHTOOL_BUSINFO_LEN];      /* 32 */
#         char    erom_version[ETHTOOL_EROMVERS_LEN]; /* 32 */
#         char    reserved2[12];
#         __u32   n_priv_flags;
#         __u32   n_stats;
#         __u32   testinfo_len;
#         __u32   eedump_len;
#         __u32   regdump_len;
# };
_DRVINFO = struct.Struct("=I32s32s32s32s32s12s5I")

# struct ethtool_channels {
#         __u32   cmd;
#         __u32   max_rx;
#         __u32   max_tx;
#         __u32   max_other;
#         __u32   max_combined;
#         __u32   rx_count;
#         __u32   tx_count;
#         __u32   other_count;
#         __u32   combined_count;
# };
_CHANNELS = struct.Struct("=9I")

# struct ethtool_rxfh_indir {
#         __u32   cmd;
#         __u32   size;
#         __u32   ring_index[];   /* size entries */
# };
_INDIR_HEAD = struct.Struct("=II")

# union ethtool_flow_union {       /* 52 bytes: __u8 hdata[52] */
#         struct ethtool_tcpip4_spec tcp_ip4_spec;  /* also udp_ip4_spec */
#         struct ethtool_tcpip6_spec tcp_ip6_spec;  /* also udp_ip6_spec */
#         ...
# };
# struct ethtool_tcpip4_spec {
#         __be32  ip4src;
#         __be32  ip4dst;
#         __be16  psrc;
#         __be16  pdst;
#         __u8    tos;
# };
# struct ethtool_tcpip6_spec {
#         __be32  ip6src[4];
#         __be32  ip6dst[4];
#         __be16  psrc;
#         __be16  pdst;
#         __u8    tclass;
# };
_FLOW_UNION_SIZE = 52
_TCPIP4 = struct.Struct("!4s4sHHB")
_TCPIP6 = struct.Struct("!16s16sHHB")
# struct ethtool_flow_ext {        /* 20 bytes, all zero: xdpd matches no VLAN or MAC */
#         __u8            padding[2];
#         unsigned char   h_dest[ETH_ALEN];
#         __be16          vlan_etype;
#         __be16          vlan_tci;
#         __be32          data[2];
# };
_FLOW_EXT_SIZE = 20
# struct ethtool_rx_flow_spec {
#         __u32                   flow_type;
#         union ethtool_flow_union h_u;     /* the values matched */
#         struct ethtool_flow_ext h_ext;
#         union ethtool_flow_union m_u;     /* masks: a set bit is compared */
#         struct ethtool_flow_ext m_ext;
#         __u64                   ring_cookie;  /* the rx queue */
#         __u32                   location;
# };                                            /* 168 bytes: u64-aligned */
_FLOW_SPEC = struct.Struct("=I52s20s52s20s4xQI4x")
# struct ethtool_rxnfc {
#         __u32                           cmd;
#         __u32                           flow_type;
#         __u64                           data;
#         struct ethtool_rx_flow_spec     fs;
#         union {
#                 __u32                   rule_cnt;
#                 __u32                   rss_context;
#         };
#         __u32                           rule_locs[];
# };                                            /* 192 bytes without rule_locs */
_RXNFC_HEAD = struct.Struct("=IIQ")
_RXNFC_SIZE = _RXNFC_HEAD.size + _FLOW_SPEC.size + 8   # rule_cnt and the padding after it
_RULE_CNT_OFFSET = _RXNFC_HEAD.size + _FLOW_SPEC.size

Send = Callable[[str, bytearray], None]


class EthtoolError(CallError):
    """An ethtool request the kernel refused; errno is kept."""


@dataclass(frozen=True)
class Channels:
    max_rx: int
    max_tx: int
    max_other: int
    max_combined: int
    rx: int
    tx: int
    other: int
    combined: int

    @property
    def rx_queues(self) -> int:
        return self.rx + self.combined


@dataclass(frozen=True)
class FlowSpec:
    """An ntuple rule as the kernel takes it, built from (type, addresses, ports)."""
    flow_type: int
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    queue: int = 0

    @classmethod
    def of(cls, kind: str, queue: int, src_ip=None, dst_ip=None, src_port=None,
           dst_port=None) -> "FlowSpec":
        return cls(FLOW_TYPES[kind], src_ip, dst_ip, src_port, dst_port, queue)

    def pack(self, location: int = RX_CLS_LOC_ANY) -> bytes:
        """struct ethtool_rx_flow_spec."""
        v6 = self.flow_type in (TCP_V6_FLOW, UDP_V6_FLOW)
        layout, width = (_TCPIP6, 16) if v6 else (_TCPIP4, 4)

        def addr(text):
            return ipaddress.ip_address(text).packed if text else bytes(width)

        def mask(value, size):
            return b"\xff" * size if value is not None else bytes(size)

        h_u = layout.pack(addr(self.src_ip), addr(self.dst_ip), self.src_port or 0,
                          self.dst_port or 0, 0)
        m_u = layout.pack(mask(self.src_ip, width), mask(self.dst_ip, width),
                          0xFFFF if self.src_port is not None else 0,
                          0xFFFF if self.dst_port is not None else 0, 0)
        return _FLOW_SPEC.pack(self.flow_type, h_u.ljust(_FLOW_UNION_SIZE, b"\0"),
                               bytes(_FLOW_EXT_SIZE), m_u.ljust(_FLOW_UNION_SIZE, b"\0"),
                               bytes(_FLOW_EXT_SIZE), self.queue, location)

    @staticmethod
    def match_part(packed: bytes) -> bytes:
        """What identifies a rule in a driver's answer (GRXCLSRULE): the flow
        type without the FLOW_EXT/MAC_EXT/RSS flags, the values, the masks and
        the queue; not the location."""
        fields = list(_FLOW_SPEC.unpack(packed))
        fields[0] &= ~(FLOW_EXT | FLOW_MAC_EXT | FLOW_RSS)
        fields[6] = 0
        return _FLOW_SPEC.pack(*fields)


def ioctl_send(ifname: str, request: bytearray) -> None:
    """SIOCETHTOOL on `ifname` with `request` as ifr_data; the answer is copied back."""
    buf = ctypes.create_string_buffer(bytes(request), len(request))
    ifreq = _IFREQ.pack(ifname.encode(), ctypes.addressof(buf)).ljust(_IFREQ_SIZE, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    request[:] = buf.raw


class Ethtool:
    """ethtool requests for netdevs of the caller's network namespace."""

    def __init__(self, send: Send = ioctl_send):
        self.send = send
        self._drivers: dict[str, str] = {}

    def _call(self, ifname: str, request: bytearray, hint: str = "") -> bytearray:
        cmd = struct.unpack_from("=I", request)[0]
        try:
            self.send(ifname, request)
        except OSError as e:
            what = f"{COMMAND_NAMES.get(cmd, hex(cmd))} on {ifname}"
            if cmd != ETHTOOL_GDRVINFO:
                what += f" (driver {self.driver(ifname)})"
            if e.errno == errno.ENODEV:
                hint = "the netdev is gone; see 'ip link show'"
            raise EthtoolError(e.errno, what, hint) from None
        return request

    def driver(self, ifname: str) -> str:
        """The driver's name (ETHTOOL_GDRVINFO), '?' if it does not say."""
        if ifname not in self._drivers:
            request = bytearray(_DRVINFO.pack(ETHTOOL_GDRVINFO, *[b""] * 6, *[0] * 5))
            try:
                self._call(ifname, request)
            except EthtoolError:
                return "?"
            self._drivers[ifname] = _DRVINFO.unpack(request)[1].split(b"\0")[0].decode(
                errors="replace") or "?"
        return self._drivers[ifname]

    # -- channels -----------------------------------------------------------

    def get_channels(self, ifname: str) -> Channels:
        request = self._call(ifname, bytearray(_CHANNELS.pack(ETHTOOL_GCHANNELS, *[0] * 8)))
        return Channels(*_CHANNELS.unpack(request)[1:])

    def set_channels(self, ifname: str, rx: int, tx: int, other: int, combined: int) -> None:
        # the maximums are ignored by the kernel on SCHANNELS
        request = bytearray(_CHANNELS.pack(ETHTOOL_SCHANNELS, 0, 0, 0, 0,
                                           rx, tx, other, combined))
        self._call(ifname, request, "see 'ethtool -l " + ifname + "' for what it allows")

    # -- RSS ----------------------------------------------------------------

    def rx_rings(self, ifname: str) -> int:
        """ETHTOOL_GRXRINGS: the rx queues RSS and ntuple rules may use."""
        request = bytearray(_RXNFC_SIZE)
        _RXNFC_HEAD.pack_into(request, 0, ETHTOOL_GRXRINGS, 0, 0)
        return _RXNFC_HEAD.unpack_from(self._call(ifname, request))[2]

    def get_indirection(self, ifname: str) -> list[int]:
        """The RSS indirection table: entry i is the rx queue of hash bucket i."""
        request = self._call(ifname, bytearray(_INDIR_HEAD.pack(ETHTOOL_GRXFHINDIR, 0)))
        size = _INDIR_HEAD.unpack(request)[1]         # size 0 asks for the size
        request = bytearray(_INDIR_HEAD.pack(ETHTOOL_GRXFHINDIR, size) + bytes(4 * size))
        self._call(ifname, request)
        return list(struct.unpack_from(f"={size}I", request, _INDIR_HEAD.size))

    def set_indirection(self, ifname: str, table: list[int]) -> None:
        """Replace the RSS indirection table; an empty table restores the
        driver's default (the kernel's documented meaning of size 0)."""
        request = bytearray(_INDIR_HEAD.pack(ETHTOOL_SRXFHINDIR, len(table)) +
                            struct.pack(f"={len(table)}I", *table))
        self._call(ifname, request)

    # -- ntuple rules -------------------------------------------------------

    def rule_count(self, ifname: str) -> tuple[int, int, bool]:
        """(rules now, table size, whether the driver picks locations itself)."""
        request = bytearray(_RXNFC_SIZE)
        _RXNFC_HEAD.pack_into(request, 0, ETHTOOL_GRXCLSRLCNT, 0, 0)
        self._call(ifname, request, "the driver has no ntuple filters "
                                    f"(see 'ethtool -k {ifname} | grep ntuple')")
        data = _RXNFC_HEAD.unpack_from(request)[2]
        count = struct.unpack_from("=I", request, _RULE_CNT_OFFSET)[0]
        return count, data & ~RX_CLS_LOC_SPECIAL, bool(data & RX_CLS_LOC_SPECIAL)

    def rule_locations(self, ifname: str) -> list[int]:
        count, size, _ = self.rule_count(ifname)
        request = bytearray(_RXNFC_SIZE + 4 * count)
        _RXNFC_HEAD.pack_into(request, 0, ETHTOOL_GRXCLSRLALL, 0, size)
        struct.pack_into("=I", request, _RULE_CNT_OFFSET, count)
        self._call(ifname, request)
        got = struct.unpack_from("=I", request, _RULE_CNT_OFFSET)[0]
        return list(struct.unpack_from(f"={got}I", request, _RULE_CNT_OFFSET + 4))

    def get_rule(self, ifname: str, location: int) -> bytes:
        """The rule at `location` as struct ethtool_rx_flow_spec; CallError
        (ENOENT, EINVAL) if there is none."""
        request = bytearray(_RXNFC_SIZE)
        _RXNFC_HEAD.pack_into(request, 0, ETHTOOL_GRXCLSRULE, 0, 0)
        struct.pack_into("=I", request, _RXNFC_HEAD.size + _FLOW_SPEC.size - 8, location)
        self._call(ifname, request)
        return bytes(request[_RXNFC_HEAD.size:_RXNFC_HEAD.size + _FLOW_SPEC.size])

    def insert_rule(self, ifname: str, spec: FlowSpec, location: int = RX_CLS_LOC_ANY) -> int:
        """Insert a rule; returns the location the driver put it at."""
        request = bytearray(_RXNFC_SIZE)
        _RXNFC_HEAD.pack_into(request, 0, ETHTOOL_SRXCLSRLINS, 0, 0)
        request[_RXNFC_HEAD.size:_RXNFC_HEAD.size + _FLOW_SPEC.size] = spec.pack(location)
        self._call(ifname, request, "check 'ethtool -n " + ifname + "' and that ntuple "
                                    f"filters are on ('ethtool -K {ifname} ntuple on')")
        return _FLOW_SPEC.unpack_from(request, _RXNFC_HEAD.size)[6]

    def delete_rule(self, ifname: str, location: int) -> None:
        request = bytearray(_RXNFC_SIZE)
        _RXNFC_HEAD.pack_into(request, 0, ETHTOOL_SRXCLSRLDEL, 0, 0)
        struct.pack_into("=I", request, _RXNFC_HEAD.size + _FLOW_SPEC.size - 8, location)
        self._call(ifname, request)
