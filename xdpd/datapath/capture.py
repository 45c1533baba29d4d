"""Capture records, as a worker writes them into its capture ring
(struct fp_caprec in xdpd/datapath/fastpath.h) and Control.capture_read()
returns them: parsed, and turned into pcapng packets (datapath/pcapng.py).

Owns: the record's layout on the Python side and what its fields mean.
Must not: arm or read a ring itself (the Control object does).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from xdpd.datapath import _fastpath
from xdpd.datapath.pcapng import Packet

# struct fp_caprec: size, point, reason, rule, wire_len, cap_len, queue,
# netdev, pad, ts_ns
RECORD = struct.Struct("=IBBHIIHHIQ")
POINT_NAMES = {_fastpath.CAP_RX: "rx", _fastpath.CAP_TX: "tx", _fastpath.CAP_DROP: "drop"}
POINTS = {name: bit for bit, name in POINT_NAMES.items()}
NO_RULE = 0xFFFF


class RecordError(ValueError):
    """Bytes that are not whole records."""


@dataclass(frozen=True)
class Record:
    point: str                  # rx | tx | drop
    reason: str | None          # a drop's reason (DROP_REASONS), else None
    rule: int | None            # the rule's position in its netdev's list
    wire_len: int
    queue: int
    netdev: int                 # index in the forwarding table
    ts_ns: int
    data: bytes

    def packet(self, interface: int) -> Packet:
        comment = ""
        if self.point == "drop":
            comment = f"drop: {self.reason}" + (f", rule {self.rule}" if self.rule is not None
                                                else "")
        return Packet(interface, self.ts_ns, self.data, self.wire_len, self.point, self.queue,
                      comment)


def records(data: bytes) -> list[Record]:
    """The records of one capture_read()."""
    out, off = [], 0
    while off < len(data):
        if len(data) - off < RECORD.size:
            raise RecordError(f"{len(data) - off} bytes left, not a record")
        size, point, reason, rule, wire, cap, queue, netdev, _, ts = RECORD.unpack_from(data, off)
        if size < RECORD.size + cap or off + size > len(data) or point not in POINT_NAMES:
            raise RecordError(f"record at {off}: size {size}, point {point}, cap_len {cap}")
        name = POINT_NAMES[point]
        out.append(Record(name, _fastpath.DROP_REASONS[reason] if name == "drop" and
                          reason < len(_fastpath.DROP_REASONS) else None,
                          None if rule == NO_RULE else rule, wire, queue, netdev, ts,
                          data[off + RECORD.size:off + RECORD.size + cap]))
        off += size
    return out
