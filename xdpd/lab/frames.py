"""What the lab's frame builders share: MAC addresses written and read,
and the Internet checksum.  One of each, for traffic.py (the AF_PACKET
sender and sink) and xdp.py (the BPF generator's template); no I/O."""
from __future__ import annotations

import struct


def parse_mac(mac: str | bytes) -> bytes:
    """'02:00:00:00:00:01' (or 6 raw bytes) -> 6 bytes; ValueError naming
    the text otherwise."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
        return bytes(mac)
    parts = mac.split(":")
    try:
        if len(parts) != 6 or any(len(p) not in (1, 2) for p in parts):
            raise ValueError
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"MAC address {mac!r}: expected six hex octets "
                         "like 02:00:00:00:00:01") from None


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def ip_checksum(header: bytes) -> int:
    """The Internet checksum (RFC 1071) of header: the ones' complement of
    its ones' complement sum (0 when the header's own checksum is right)."""
    if len(header) % 2:
        header += b"\0"
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
