"""pcapng as `xdpd capture -w` writes it: read back by our reader, and by
tcpdump (libpcap's reader), from a file and from a pipe."""
import io
import shutil
import socket
import struct
import subprocess

import pytest

from xdpd.datapath.pcapng import FormatError, Packet, Writer, read
from xdpd.lab.frames import udp4

IN_MAC, OUT_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
T0 = 1_796_000_000_123_456_789          # ns since the epoch


def frame(dport: int, size: int = 0) -> bytes:
    return udp4(IN_MAC, OUT_MAC, socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"),
                1024, dport, bytes(size))


def capture() -> tuple[bytes, list[Packet]]:
    out = io.BytesIO()
    w = Writer(out)
    in0, out0 = w.interface("in0", 128), w.interface("out0", 128)
    assert (in0, out0, w.interface("in0", 128)) == (0, 1, 0)
    big = frame(9, 1000)
    packets = [
        Packet(in0, T0, frame(9), len(frame(9)), "rx", 0),
        Packet(out0, T0 + 1500, frame(9), len(frame(9)), "tx", 1),
        Packet(in0, T0 + 3001, big[:128], len(big), "rx", 3),          # snapped
        Packet(in0, T0 + 4002, frame(53)[:61], 61, "drop", 0, "drop: rule, rule 1"),
    ]
    for p in packets:
        w.packet(p)
    return out.getvalue(), packets


def test_what_is_written_reads_back_exactly():
    data, packets = capture()
    got = list(read(io.BytesIO(data)))
    assert got[:2] == [("interface", ("in0", 128)), ("interface", ("out0", 128))]
    assert [p for kind, p in got[2:]] == packets
    assert all(kind == "packet" for kind, _ in got[2:])


def test_a_packet_names_a_known_interface_and_point():
    w = Writer(io.BytesIO())
    with pytest.raises(ValueError, match="interface 0: 0 written"):
        w.packet(Packet(0, T0, b"x" * 60, 60, "rx", 0))
    w.interface("in0", 64)
    with pytest.raises(ValueError, match="point 'sideways'"):
        w.packet(Packet(0, T0, b"x" * 60, 60, "sideways", 0))


def test_a_truncated_stream_is_a_format_error():
    data, _ = capture()
    with pytest.raises(FormatError):
        list(read(io.BytesIO(data[:-3])))
    with pytest.raises(FormatError, match="byte order"):
        list(read(io.BytesIO(data[:8] + struct.pack(">I", 0x1A2B3C4D) + data[12:])))


needs_tcpdump = pytest.mark.skipif(not shutil.which("tcpdump"),
                                   reason="needs tcpdump: make deps installs it")


def tcpdump(args: list[str], data: bytes | None = None) -> str:
    r = subprocess.run(["tcpdump", "-nn", "-tt", *args], input=data, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


@needs_tcpdump
def test_tcpdump_reads_the_file_with_its_timestamps_interfaces_and_lengths(tmp_path):
    data, packets = capture()
    path = tmp_path / "capture.pcapng"
    path.write_bytes(data)
    lines = tcpdump(["-r", str(path), "-e"]).splitlines()
    assert len(lines) == len(packets), lines
    # nanosecond timestamps, to the microsecond tcpdump prints by default
    assert lines[0].startswith("1796000000.123456 "), lines[0]
    assert lines[1].startswith("1796000000.123458 "), lines[1]
    assert "02:00:00:00:00:01 > 02:00:00:00:00:02" in lines[0]
    assert "10.0.0.1.1024 > 10.0.0.2.9: UDP, length 0" in lines[0]
    assert "length 1042" in lines[2]                    # the wire's length, not the snap's
    # a filter on the file selects what it should
    assert len(tcpdump(["-r", str(path), "udp and dst port 53"]).splitlines()) == 1


@needs_tcpdump
def test_tcpdump_reads_it_from_a_pipe():
    data, packets = capture()
    lines = tcpdump(["-r", "-"], data).splitlines()
    assert len(lines) == len(packets)
