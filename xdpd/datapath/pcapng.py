"""pcapng, written and read: what `xdpd capture -w` produces.

Owns: the blocks of a pcapng file (the IETF draft "PCAP Next Generation
(pcapng) Capture File Format", draft-ietf-opsawg-pcapng): a Section
Header Block, one Interface Description Block per netdev (Ethernet,
nanosecond timestamps, the netdev's name), and one Enhanced Packet Block
per captured frame, whose options carry where xdpd saw it: the direction
(rx inbound, tx outbound), the queue, and for a drop the reason and the
rule, in words in a comment (`epb_flags`, `epb_queue`, `opt_comment`), as
tcpdump, tshark and Wireshark read them.  And a reader, for the tests and
for `xdpd capture` reading its own output back.
Must not: know where frames come from (the capture rings) or open files
it was not handed; a stream (stdout, a pipe) works as well as a file.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

BYTE_ORDER_MAGIC = 0x1A2B3C4D
SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
LINKTYPE_ETHERNET = 1

# options (section 3.5 and the blocks' own)
OPT_END, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_TSRESOL = 2, 9
EPB_FLAGS, EPB_QUEUE = 2, 6
# epb_flags bits 0-1: the direction
INBOUND, OUTBOUND = 1, 2
POINTS = ("rx", "tx", "drop")


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("=HH", code, len(value)) + value + bytes(_pad(len(value)))


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + struct.pack("=HH", OPT_END, 0)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("=II", kind, total) + body + struct.pack("=I", total)


@dataclass(frozen=True)
class Packet:
    """One captured frame, as a block says it."""
    interface: int              # index of its netdev's Interface Description Block
    timestamp_ns: int           # since the epoch
    data: bytes                 # the captured bytes (at most the snap length)
    wire_len: int               # the frame's length
    point: str                  # rx | tx | drop
    queue: int
    comment: str = ""           # for a drop: "drop: REASON, rule N"


class Writer:
    """pcapng onto a binary stream: the section header at once, an
    interface block the first time a netdev is named, then packets."""

    def __init__(self, out: BinaryIO, application: str = "xdpd capture"):
        self.out = out
        self.interfaces: dict[str, int] = {}
        body = struct.pack("=IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        body += _options([(SHB_USERAPPL, application.encode())])
        self.out.write(_block(SHB, body))

    def interface(self, name: str, snaplen: int) -> int:
        """The index of netdev name's interface block, written if new."""
        if name not in self.interfaces:
            body = struct.pack("=HHI", LINKTYPE_ETHERNET, 0, snaplen)
            body += _options([(IF_NAME, name.encode()), (IF_TSRESOL, bytes([9]))])
            self.out.write(_block(IDB, body))
            self.interfaces[name] = len(self.interfaces)
        return self.interfaces[name]

    def packet(self, p: Packet) -> None:
        if p.point not in POINTS:
            raise ValueError(f"point {p.point!r}: one of {', '.join(POINTS)}")
        if not 0 <= p.interface < len(self.interfaces):
            raise ValueError(f"interface {p.interface}: {len(self.interfaces)} written")
        opts = [(EPB_QUEUE, struct.pack("=I", p.queue))]
        if p.point != "drop":
            opts.insert(0, (EPB_FLAGS, struct.pack("=I", INBOUND if p.point == "rx"
                                                   else OUTBOUND)))
        comment = p.comment or p.point
        opts.append((OPT_COMMENT, comment.encode()))
        body = struct.pack("=IIIII", p.interface, p.timestamp_ns >> 32,
                           p.timestamp_ns & 0xFFFFFFFF, len(p.data), p.wire_len)
        body += p.data + bytes(_pad(len(p.data))) + _options(opts)
        self.out.write(_block(EPB, body))


class FormatError(ValueError):
    """Not a pcapng stream this reader understands."""


def _read_options(raw: bytes) -> dict[int, list[bytes]]:
    opts: dict[int, list[bytes]] = {}
    off = 0
    while off + 4 <= len(raw):
        code, n = struct.unpack_from("=HH", raw, off)
        if code == OPT_END:
            break
        opts.setdefault(code, []).append(raw[off + 4:off + 4 + n])
        off += 4 + n + _pad(n)
    return opts


def read(stream: BinaryIO) -> Iterator[tuple[str, object]]:
    """("interface", (name, snaplen)) and ("packet", Packet) in file order,
    from a stream in this host's byte order (as Writer writes it)."""
    names: list[str] = []
    while head := stream.read(8):
        if len(head) < 8:
            raise FormatError("truncated block header")
        kind, total = struct.unpack("=II", head)
        if total < 12 or total % 4:
            raise FormatError(f"block length {total}")
        body = stream.read(total - 12)
        tail = stream.read(4)
        if len(body) != total - 12 or len(tail) != 4 or struct.unpack("=I", tail)[0] != total:
            raise FormatError("truncated or inconsistent block")
        if kind == SHB:
            if struct.unpack_from("=I", body)[0] != BYTE_ORDER_MAGIC:
                raise FormatError("not in this host's byte order")
        elif kind == IDB:
            _, _, snaplen = struct.unpack_from("=HHI", body)
            opts = _read_options(body[8:])
            names.append(opts.get(IF_NAME, [b"?"])[0].decode(errors="replace"))
            yield "interface", (names[-1], snaplen)
        elif kind == EPB:
            ifc, hi, lo, cap, wire = struct.unpack_from("=IIIII", body)
            opts = _read_options(body[20 + cap + _pad(cap):])
            flags = struct.unpack("=I", opts[EPB_FLAGS][0])[0] if EPB_FLAGS in opts else 0
            comment = opts.get(OPT_COMMENT, [b""])[0].decode(errors="replace")
            point = {INBOUND: "rx", OUTBOUND: "tx"}.get(flags & 3, "drop")
            queue = struct.unpack("=I", opts[EPB_QUEUE][0])[0] if EPB_QUEUE in opts else 0
            yield "packet", Packet(ifc, hi << 32 | lo, body[20:20 + cap], wire, point, queue,
                                   comment if point == "drop" else "")
