"""The lab's one frame builder: Ethernet/IPv4/UDP headers, MAC addresses
written and read, and the Internet checksum, for traffic.py (the AF_PACKET
sender and sink) and xdp.py (the BPF generator's template), which add
their own payloads; no I/O."""
from __future__ import annotations

import socket
import struct

ETH_P_IP = 0x0800
ETH_HLEN, IP_HLEN, UDP_HLEN = 14, 20, 8


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


def udp4(src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes, src_port: int,
         dst_port: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame carrying payload (no FCS): DF set, TTL 64,
    the IP checksum right and the UDP checksum 0 (none, as IPv4 allows)."""
    if len(src_mac) != 6 or len(dst_mac) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    udp_len = UDP_HLEN + len(payload)
    ip = bytearray(struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0,                # version 4, ihl 5; tos
        IP_HLEN + udp_len,      # total length
        0, 0x4000,              # id; DF, fragment offset 0
        64, socket.IPPROTO_UDP,
        0,                      # checksum, filled below
        src_ip, dst_ip))
    struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
    return (bytes(dst_mac) + bytes(src_mac) + struct.pack("!H", ETH_P_IP) + bytes(ip)
            + struct.pack("!HHHH", src_port, dst_port, udp_len, 0) + payload)
