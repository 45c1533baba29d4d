"""Capture filters: tcpdump expressions compiled by libpcap, run by the
workers' classic BPF interpreter (xdpd/datapath/cbpf.h), held to libpcap's
own interpreter (pcap_offline_filter) on the same frames; and the checks a
program from the control socket must pass before a worker runs it."""
import random
import socket
import struct

import pytest

from xdpd.datapath import _fastpath
from xdpd.kernel.pcap_filter import (INSN, MAX_EXPRESSION, FilterError, compile_filter,
                                     libpcap_filter)

try:
    compile_filter("udp")
except OSError:                                 # pragma: no cover - a host without libpcap
    pytest.skip("needs libpcap (libpcap0.8)", allow_module_level=True)

GEN = bytes.fromhex("020000000001")
SINK = bytes.fromhex("020000000002")


def eth(dst: bytes, src: bytes, ethertype: int, body: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + body


def ip4(src: str, dst: str, proto: int, l4: bytes, frag: int = 0x4000, ihl: int = 5) -> bytes:
    opts = bytes(4 * (ihl - 5))
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(l4), 7, frag, 64,
                       proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + opts + l4


def ip6(src: str, dst: str, nh: int, l4: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), nh, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + l4


def udp(sport: int, dport: int, payload: bytes = b"XDPD" + bytes(20)) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 512, 0, 0) + payload


SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def corpus() -> list[bytes]:
    """Frames of every kind the expressions below tell apart."""
    v4 = lambda s, d, p, l4, **kw: eth(SINK, GEN, 0x0800, ip4(s, d, p, l4, **kw))  # noqa: E731
    frames = [
        v4("10.0.0.1", "10.0.0.2", 17, udp(1024, 9)),
        v4("10.0.0.1", "10.0.0.2", 17, udp(1500, 53)),
        v4("192.0.2.7", "198.51.100.1", 17, udp(53, 40000, bytes(1000))),
        v4("10.1.2.3", "10.0.0.2", 6, tcp(40000, 80, SYN)),
        v4("10.0.0.2", "10.1.2.3", 6, tcp(80, 40000, SYN | ACK)),
        v4("10.1.2.3", "10.0.0.2", 6, tcp(40000, 80, ACK | PSH, b"GET / HTTP/1.1\r\n")),
        v4("10.1.2.3", "10.0.0.2", 6, tcp(40000, 443, FIN | ACK)),
        v4("10.1.2.3", "10.0.0.2", 6, tcp(2222, 22, RST)),
        v4("10.0.0.1", "10.0.0.2", 1, bytes([8, 0, 0, 0, 0, 1, 0, 1]) + bytes(56)),
        v4("10.0.0.1", "10.0.0.2", 17, udp(1024, 9)[:4], frag=0x2000 | 0),   # MF, first
        v4("10.0.0.1", "10.0.0.2", 17, bytes(16), frag=0x0010),              # a later fragment
        v4("10.0.0.1", "10.0.0.2", 17, udp(1234, 1999), ihl=7),              # IP options
        v4("10.0.0.1", "224.0.0.251", 17, udp(5353, 5353)),
        v4("10.0.0.1", "10.0.0.2", 47, bytes(24)),
        eth(SINK, GEN, 0x86DD, ip6("2001:db8::1", "2001:db8::2", 17, udp(1000, 53))),
        eth(SINK, GEN, 0x86DD, ip6("2001:db8::1", "fd00::2", 6, tcp(50000, 443, SYN))),
        eth(SINK, GEN, 0x86DD, ip6("fe80::1", "ff02::1", 58, bytes([128, 0, 0, 0]) + bytes(8))),
        eth(SINK, GEN, 0x8100, struct.pack("!HH", 100, 0x0800) +
            ip4("10.0.0.1", "10.0.0.2", 17, udp(1024, 9))),
        eth(SINK, GEN, 0x8100, struct.pack("!H", 7) + struct.pack("!H", 0x86DD) +
            ip6("2001:db8::1", "2001:db8::2", 6, tcp(1, 2, SYN))),
        eth(SINK, GEN, 0x88A8, struct.pack("!H", 10) + struct.pack("!H", 0x8100) +
            struct.pack("!H", 100) + struct.pack("!H", 0x0800) +
            ip4("10.0.0.1", "10.0.0.2", 6, tcp(1000, 2000, ACK))),
        eth(b"\xff" * 6, GEN, 0x0806, bytes.fromhex("0001080006040001") + GEN +
            socket.inet_aton("10.0.0.1") + bytes(6) + socket.inet_aton("10.0.0.2")),
        eth(SINK, GEN, 0x88B5, bytes(46)),
        eth(GEN, SINK, 0x0800, ip4("10.0.0.2", "10.0.0.1", 17, udp(9, 1024))),   # a reply
        eth(SINK, GEN, 0x0800, bytes(10)),                       # IPv4, truncated
        eth(SINK, GEN, 0x86DD, bytes(20)),                       # IPv6, truncated
        SINK + GEN,                                              # no ethertype at all
    ]
    return frames


# tcpdump expressions, as an operator types them
EXPRESSIONS = [
    "", "udp", "tcp", "icmp", "arp", "ip", "ip6", "not ip",
    "udp and dst port 9", "tcp port 80", "port 53", "src port 53 or dst port 443",
    "portrange 1000-2000", "tcp dst portrange 20-100",
    "host 10.0.0.2", "src net 10.0.0.0/8", "dst net 198.51.100.0/24", "net 2001:db8::/32",
    "ip6 and tcp", "ip6 and dst port 53", "icmp6", "ip6 multicast",
    "vlan", "vlan 100", "vlan and udp", "vlan 7 and ip6", "vlan 10 and vlan 100 and tcp",
    "tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0", "tcp[13] = 0x18",
    "ip[6:2] & 0x1fff != 0", "ip[6] & 0x20 != 0", "ip[0] & 0xf != 5",
    "ether src 02:00:00:00:00:01", "ether broadcast", "ether proto 0x88b5",
    "ip multicast", "ip proto 47", "len > 100", "greater 1000", "less 64",
    "udp[8:4] = 0x58445044", "tcp and (dst port 80 or dst port 443) and not src net 10.0.0.0/24",
]


@pytest.fixture(scope="module")
def programs() -> dict[str, bytes]:
    return {e: compile_filter(e) for e in EXPRESSIONS}


def test_every_expression_compiles_to_a_program_the_workers_take(programs):
    assert len(programs) >= 20
    for expression, program in programs.items():
        assert program and len(program) % INSN.size == 0, expression
        _fastpath.filter_check(program)


def test_the_workers_select_exactly_what_libpcap_selects(programs):
    frames = corpus()
    for expression, program in programs.items():
        ours = [_fastpath.filter_run(program, f) for f in frames]
        theirs = [libpcap_filter(program, f) for f in frames]
        assert ours == theirs, expression
    # the corpus tells the expressions apart: each but the empty one takes
    # some frames and leaves others
    for expression, program in programs.items():
        taken = sum(bool(_fastpath.filter_run(program, f)) for f in frames)
        assert 0 < taken < len(frames) or expression == "", (expression, taken)


def test_a_snapped_frame_is_judged_on_what_was_captured(programs):
    """A worker may hand the filter only the first buffer of a chain: the
    frame's length (len, greater) is the wire's, loads past the captured
    bytes fail, as in libpcap."""
    for f in corpus():
        long = f + bytes(2000)
        for cap in (14, 34, 54, 60):
            for expression, program in programs.items():
                got = _fastpath.filter_run(program, long[:cap], len(long))
                assert got == libpcap_filter(program, long[:cap], len(long)), (expression, cap)


def test_libpcaps_own_message_for_an_expression_that_does_not_compile():
    with pytest.raises(FilterError, match="syntax error"):
        compile_filter("udp and and")
    with pytest.raises(FilterError, match="unknown host 'nosuchhost.invalid'|nosuchhost"):
        compile_filter("host nosuchhost.invalid")
    with pytest.raises(FilterError, match=f"at most {MAX_EXPRESSION}"):
        compile_filter("udp or " * 1000 + "udp")
    with pytest.raises(FilterError, match="NUL"):
        compile_filter("udp\0 or tcp")


def insn(code, jt=0, jf=0, k=0) -> bytes:
    return INSN.pack(code, jt, jf, k)


RET_K, RET_A, LD_ABS_H, JEQ_K, JA, ST, LD_MEM, ALU_DIV_K = 0x06, 0x16, 0x28, 0x15, 0x05, \
    0x02, 0x60, 0x34


@pytest.mark.parametrize("program,why", [
    (b"", "no instructions"),
    (insn(RET_K, k=1) * 4097, "more than 4096"),
    (insn(LD_ABS_H, k=12), "not a return"),
    (insn(JEQ_K, 1, 0, 0x800) + insn(RET_K), "a jump past the last instruction"),
    (insn(JA, k=5) + insn(RET_K), "a jump past the last instruction"),
    (insn(ST, k=16) + insn(RET_K), "scratch memory index past 15"),
    (insn(LD_MEM, k=99) + insn(RET_K), "scratch memory index past 15"),
    (insn(ALU_DIV_K, k=0) + insn(RET_K), "division by a constant zero"),
    (insn(0xffff) + insn(RET_K), "not classic BPF"),
    (insn(0x0e) + insn(RET_K), "not classic BPF"),                # ret x: not classic
    (insn(RET_K)[:5], "whole 8-byte instructions"),
    (insn(LD_MEM, k=3) + insn(RET_A), "read before it is written"),
    # written on one way only, read where the two ways meet
    (insn(JEQ_K, 0, 1, 0) + insn(ST, k=2) + insn(LD_MEM, k=2) + insn(RET_A),
     "read before it is written"),
])
def test_a_hostile_program_is_refused_before_it_runs(program, why):
    with pytest.raises(ValueError, match=why):
        _fastpath.filter_check(program)
    with pytest.raises(ValueError, match=why):
        _fastpath.filter_run(program, bytes(64))


# every classic BPF opcode libpcap's interpreter knows
OPCODES = [0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x80, 0x00, 0x60, 0x01, 0x61, 0x81, 0xb1,
           0x02, 0x03, 0x07, 0x87, 0x84,
           *(0x04 | op | src for op in (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90,
                                        0xa0) for src in (0x00, 0x08)
             if not (op in (0x60, 0x70) and src))]    # a shift by X: C's, in libpcap
JUMPS = [0x05, *(0x05 | op | src for op in (0x10, 0x20, 0x30, 0x40) for src in (0x00, 0x08))]


def random_program(rng: random.Random, n: int) -> bytes:
    """A random program the workers take: n - 1 instructions, then a
    return (drawn again while it reads a scratch word it did not write)."""
    while True:
        program = random_draw(rng, n)
        try:
            _fastpath.filter_check(program)
            return program
        except ValueError as e:
            assert "read before it is written" in str(e), e


def random_draw(rng: random.Random, n: int) -> bytes:
    out = b""
    for pc in range(n - 1):
        left = n - pc - 1
        if rng.random() < 0.25:
            code = rng.choice(JUMPS)
            if code == 0x05:
                out += insn(code, k=rng.randrange(left))
            else:
                out += insn(code, rng.randrange(left), rng.randrange(left),
                            rng.choice([0, 1, 0x800, 6, 17, rng.getrandbits(32)]))
            continue
        code = rng.choice(OPCODES)
        if code in (0x02, 0x03, 0x60, 0x61):
            k = rng.randrange(16)
        elif code & 0x07 == 0x04 and code & 0xf0 in (0x60, 0x70):
            k = rng.randrange(32)                           # shifts libpcap defines
        elif code & 0x07 == 0x04 and code & 0xf0 in (0x30, 0x90) and not code & 0x08:
            k = rng.randrange(1, 50)
        else:
            k = rng.choice([0, 1, 12, 14, 23, 30, 60, 1 << 31, rng.randrange(100)])
        out += insn(code, k=k)
    return out + insn(rng.choice([RET_K, RET_A]), k=rng.choice([0, 1, 96, 65535]))


def test_random_programs_agree_with_libpcap():
    """Every opcode, with values at the edges, on every frame: what the
    workers' interpreter returns is libpcap's (shifts of 32 and more, which
    libpcap leaves to C, are left out)."""
    rng = random.Random(18)
    frames = corpus()
    for _ in range(400):
        program = random_program(rng, rng.randrange(2, 24))
        for f in frames:
            want = libpcap_filter(program, f)
            assert _fastpath.filter_run(program, f) == want, (program.hex(), f.hex())
