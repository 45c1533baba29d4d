"""xdpd's own packet generator and sink (AF_PACKET), for the lab.

    python -m xdpd.lab.traffic send --dev gen0 --dst-mac 02:00:00:00:00:02 --count 100000
    python -m xdpd.lab.traffic sink --dev sink0 --expect 100000

Frame layout (no FCS; every field after the MACs is fixed by (seq, flow,
size, tag), so the sink can check a frame byte for byte):

    0   dst MAC, src MAC                      (a forwarder may rewrite these)
    12  ethertype 0x0800
    14  IPv4: ihl 5, DF, ttl 64, proto UDP, valid header checksum,
        src 198.18.0.x, dst 198.19.0.x (x = 1 + flow % 254; RFC 2544 range)
    34  UDP: src port 10000 + flow, dst port 9, checksum 0 (none, legal in IPv4)
    42  b"XDPD"                                magic
    46  u32 tag   (big endian)                 tells runs apart
    50  u64 seq   (big endian)                 unique per frame within a run
    58  u16 flow  (big endian)
    60  fill: byte i = (seq + i) mod 256       up to the frame's end

Flows differ in their UDP source port and addresses, so the kernel's tx hash
spreads them over a veth's queues (and the peer receives each on the queue
it was sent on).

The sender keeps one prebuilt header per flow and 256 prebuilt fills, so a
frame costs three concatenations and one send(); it counts a frame as sent
only once the kernel accepted it (ENOBUFS/EAGAIN are retried).  The sink
attaches a classic BPF filter that lets only this run's frames (magic + tag)
into its socket, so foreign traffic neither costs Python time nor fills the
receive buffer, and it reports the socket's own drop counter
(PACKET_STATISTICS) so that a test can tell "the sink was too slow" from
"the forwarder lost frames".
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import functools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import NamedTuple

from xdpd.isolated import python_argv
from xdpd.kernel.errors import errname
from xdpd.lab.frames import ETH_P_IP, mac_to_str, parse_mac, udp4

# <linux/if_ether.h>, <linux/if_packet.h>, <asm-generic/socket.h>
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26

MAGIC = b"XDPD"
OFF_L3 = 12             # first byte after the MACs
OFF_MAGIC = 42
OFF_TAG = 46
OFF_SEQ = 50
OFF_FLOW = 58
OFF_FILL = 60
MIN_SIZE = 60           # headers + magic + tag + seq + flow, no fill
MAX_SIZE = 9014         # MTU 9000 (jumbo frames) + Ethernet header
DEFAULT_SIZE = 64
MAX_FLOWS = 50000       # src port 10000 + flow must stay a valid port
UDP_SRC_PORT_BASE = 10000
UDP_DST_PORT = 9        # discard
SRC_NET = bytes((198, 18, 0))
DST_NET = bytes((198, 19, 0))

# fill for seq starts at FILL_CYCLE[seq & 0xff]; long enough for any size.
FILL_CYCLE = bytes(range(256)) * ((MAX_SIZE + 255) // 256 + 1)


class TrafficError(RuntimeError):
    """The generator or the sink could not do what it was asked."""


class ParsedFrame(NamedTuple):
    seq: int
    flow: int
    dst_mac: bytes
    src_mac: bytes
    intact: bool        # every byte after the MACs is what build_frame made


def fill(seq: int, length: int) -> bytes:
    """The payload fill of frame seq: byte i is (seq + i) mod 256."""
    start = seq & 0xFF
    return FILL_CYCLE[start:start + length]


def _check_args(flow: int, size: int, tag: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"frame size {size} outside {MIN_SIZE}..{MAX_SIZE}")
    if not 0 <= flow < MAX_FLOWS:
        raise ValueError(f"flow {flow} outside 0..{MAX_FLOWS - 1}")
    if not 0 <= tag <= 0xFFFFFFFF:
        raise ValueError(f"tag {tag} is not a u32")


@functools.lru_cache(maxsize=65536)
def _l3_template(flow: int, size: int, tag: int) -> bytes:
    """Bytes 12..50 of every frame of (flow, size, tag): ethertype, IPv4,
    UDP, magic, tag."""
    _check_args(flow, size, tag)
    host = 1 + flow % 254
    head = udp4(bytes(6), bytes(6), SRC_NET + bytes((host,)), DST_NET + bytes((host,)),
                UDP_SRC_PORT_BASE + flow, UDP_DST_PORT, bytes(size - 42))
    return head[12:42] + MAGIC + struct.pack("!I", tag)


def build_frame(seq: int, flow: int, size: int, src_mac: bytes, dst_mac: bytes,
                tag: int) -> bytes:
    """One Ethernet/IPv4/UDP frame of exactly size bytes (no FCS)."""
    if len(src_mac) != 6 or len(dst_mac) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    if not 0 <= seq < 1 << 64:
        raise ValueError(f"seq {seq} is not a u64")
    return (bytes(dst_mac) + bytes(src_mac) + _l3_template(flow, size, tag)
            + seq.to_bytes(8, "big") + flow.to_bytes(2, "big") + fill(seq, size - OFF_FILL))


_PAYLOAD_HEAD = struct.Struct("!4sIQH")     # magic, tag, seq, flow at OFF_MAGIC


def _inspect(frame: bytes, tag: int) -> tuple[int, int, bool] | None:
    """(seq, flow, intact) of one of our frames, None if not ours.

    The sink's per-frame path: a plain tuple, no object built."""
    size = len(frame)
    if size < MIN_SIZE:
        return None
    magic, ftag, seq, flow = _PAYLOAD_HEAD.unpack_from(frame, OFF_MAGIC)
    if magic != MAGIC or ftag != tag:
        return None
    start = seq & 0xFF
    intact = (frame[OFF_FILL:] == FILL_CYCLE[start:start + size - OFF_FILL]
              and flow < MAX_FLOWS and size <= MAX_SIZE
              and frame[OFF_L3:OFF_SEQ] == _l3_template(flow, size, tag))
    return seq, flow, intact


def parse_frame(frame: bytes, tag: int) -> ParsedFrame | None:
    """ParsedFrame if frame is one of ours with this tag, else None.

    intact is False when anything after the MACs differs from what
    build_frame would have made for the frame's (seq, flow) at its length:
    headers, checksum, length fields or fill."""
    r = _inspect(frame, tag)
    if r is None:
        return None
    return ParsedFrame(r[0], r[1], frame[0:6], frame[6:12], r[2])


# --------------------------------------------------------------------------
# Sender

class _StopFlag:
    """Set by SIGTERM/SIGINT; the loops look at it between batches."""

    def __init__(self) -> None:
        self.signum = 0

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:
        self.signum = signum

    def __bool__(self) -> bool:
        return self.signum != 0


def _socket_error(what: str, dev: str, exc: OSError) -> TrafficError:
    return TrafficError(f"{what} {dev} failed: {errname(exc.errno)} ({exc.strerror}); "
                        f"is {dev} in this network namespace?")


def open_tx_socket(dev: str) -> socket.socket:
    """AF_PACKET socket bound to dev for sending only (protocol 0 receives nothing)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((dev, 0))
    except OSError as exc:
        sock.close()
        raise _socket_error("bind AF_PACKET socket to", dev, exc) from exc
    return sock


def send_frames(dev: str, dst_mac: bytes, src_mac: bytes | None = None, *,
                count: int | None = None, duration: float | None = None,
                flows: int = 64, size: int = DEFAULT_SIZE, tag: int = 1,
                rate: float | None = None, seq_start: int = 0,
                stop: _StopFlag | None = None, stall_timeout: float = 5.0) -> dict:
    """Send frames seq_start, seq_start+1, ... (flow = seq % flows) on dev.

    Ends after count frames, after duration seconds, or when stop is set.
    With rate, paces to rate frames/s with a token bucket (bursts of at most
    10 ms worth of frames).  Returns what was sent."""
    if (count is None) == (duration is None):
        raise ValueError("give exactly one of count and duration")
    if count is not None and count < 0:
        raise ValueError(f"count {count} < 0")
    if not 1 <= flows <= MAX_FLOWS:
        raise ValueError(f"flows {flows} outside 1..{MAX_FLOWS}")
    if not 0 <= seq_start < 1 << 63:
        raise ValueError(f"seq_start {seq_start} outside 0..2**63-1")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate {rate} must be > 0")
    _check_args(flows - 1, size, tag)
    stop = stop if stop is not None else _StopFlag()

    sock = open_tx_socket(dev)
    try:
        if src_mac is None:
            src_mac = sock.getsockname()[4]     # (ifname, proto, pkttype, hatype, addr)
        macs = bytes(dst_mac) + bytes(src_mac)
        # Per flow: MACs + L3 template (bytes 0..50); then seq; then flow + fill.
        heads = [macs + _l3_template(f, size, tag) for f in range(flows)]
        flow_ids = [f.to_bytes(2, "big") for f in range(flows)]
        fills = [fill(s, size - OFF_FILL) for s in range(256)]
        send = sock.send

        seq = seq_start
        end_seq = seq_start + count if count is not None else None
        retries = 0
        batch = 1024            # frames between looks at the clock and the stop flag
        # Bucket depth: 10 ms worth of frames, so that a late wake-up (sleep
        # overshoots by ~0.1 ms) is made up instead of lost.
        depth = 0.0 if rate is None else max(4.0, min(8192.0, rate * 0.01))
        tokens = min(depth, 1.0)
        t0 = last = time.monotonic()
        deadline = t0 + duration if duration is not None else None
        stopped_by = "count" if count is not None else "duration"
        while True:
            if stop:
                stopped_by = "signal"
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if end_seq is not None and seq >= end_seq:
                break
            n = batch
            if rate is not None:
                tokens = min(depth, tokens + (now - last) * rate)
                last = now
                n = min(batch, int(tokens))
                if n == 0:
                    # Wait for the next token in slices of at most 1 ms.
                    time.sleep(min((1.0 - tokens) / rate, 0.001))
                    continue
                tokens -= n
            if end_seq is not None:
                n = min(n, end_seq - seq)
            for seq in range(seq, seq + n):
                flow = seq % flows
                frame = heads[flow] + seq.to_bytes(8, "big") + flow_ids[flow] + fills[seq & 0xFF]
                try:
                    send(frame)
                except OSError as exc:
                    retries += _retry_send(send, frame, exc, stall_timeout, dev)
            seq += 1
        seconds = time.monotonic() - t0
    finally:
        sock.close()
    sent = seq - seq_start
    return {
        "sent": sent, "seconds": round(seconds, 6),
        "pps": round(sent / seconds, 1) if seconds > 0 else 0.0,
        "retries": retries, "seq_start": seq_start, "seq_next": seq,
        "flows": flows, "size": size, "tag": tag, "dev": dev,
        "src_mac": mac_to_str(src_mac), "dst_mac": mac_to_str(dst_mac),
        "stopped_by": stopped_by,
    }


def _retry_send(send, frame: bytes, exc: OSError, stall_timeout: float, dev: str) -> int:
    """The tx queue is momentarily full: retry the same frame until the
    kernel takes it.  Returns the number of retries."""
    if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
        raise TrafficError(f"send on {dev} failed: "
                           f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})") from exc
    give_up = time.monotonic() + stall_timeout
    retries = 0
    while True:
        retries += 1
        time.sleep(0.0001)
        try:
            send(frame)
            return retries
        except OSError as again:
            if again.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise TrafficError(f"send on {dev} failed: {again.strerror}") from again
            if time.monotonic() > give_up:
                raise TrafficError(f"send on {dev}: tx queue full for {stall_timeout} s "
                                   f"({again.strerror})") from again


# --------------------------------------------------------------------------
# Sink

# Classic BPF (struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}):
# accept IPv4 + UDP + ihl 5 + our magic + our tag, drop everything else.
_BPF_LD_H_ABS, _BPF_LD_B_ABS, _BPF_LD_W_ABS = 0x28, 0x30, 0x20
_BPF_JEQ_K, _BPF_RET_K = 0x15, 0x06


def _sink_filter(tag: int) -> list[tuple[int, int, int, int]]:
    # (code, jt, jf, k); jumps are relative; the last instruction drops.
    return [
        (_BPF_LD_H_ABS, 0, 0, 12),
        (_BPF_JEQ_K, 0, 8, ETH_P_IP),
        (_BPF_LD_B_ABS, 0, 0, 14),
        (_BPF_JEQ_K, 0, 6, 0x45),
        (_BPF_LD_B_ABS, 0, 0, 23),
        (_BPF_JEQ_K, 0, 4, socket.IPPROTO_UDP),
        (_BPF_LD_W_ABS, 0, 0, OFF_MAGIC),
        (_BPF_JEQ_K, 0, 2, int.from_bytes(MAGIC, "big")),
        (_BPF_LD_W_ABS, 0, 0, OFF_TAG),
        (_BPF_JEQ_K, 1, 0, tag),
        (_BPF_RET_K, 0, 0, 0),
        (_BPF_RET_K, 0, 0, 0x40000),
    ]


def _attach_filter(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    prog = b"".join(struct.pack("=HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(prog, len(prog))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; };
    fprog = struct.pack("@HP", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_rx_socket(dev: str, tag: int, rcvbuf: int = 64 << 20) -> socket.socket:
    """AF_PACKET socket on dev that sees only this run's incoming frames."""
    # Protocol 0 first: a socket made with ETH_P_ALL would receive from every
    # device, unfiltered, until bind().
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass            # before 4.20; the filter's tag check still applies
        _attach_filter(sock, _sink_filter(tag))
        sock.bind((dev, ETH_P_ALL))
    except OSError as exc:
        sock.close()
        raise _socket_error("open AF_PACKET sink on", dev, exc) from exc
    return sock


def socket_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call; the kernel resets them on read.

    packets includes drops (struct tpacket_stats {u32 tp_packets, tp_drops})."""
    packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return packets, drops


class _SeenSet:
    """Which seqs arrived: a bitmap for the usual small seqs, a set beyond."""

    BITMAP_LIMIT = 1 << 30          # at most 128 MiB of bitmap

    def __init__(self) -> None:
        self.bits = bytearray(1 << 16)
        self.other: set[int] = set()

    def add(self, seq: int) -> bool:
        """Record seq; True if it had been seen before."""
        if seq >= self.BITMAP_LIMIT:
            if seq in self.other:
                return True
            self.other.add(seq)
            return False
        i = seq >> 3
        if i >= len(self.bits):
            self.bits.extend(bytes(max(i + 1 - len(self.bits), len(self.bits))))
        m = 1 << (seq & 7)
        if self.bits[i] & m:
            return True
        self.bits[i] |= m
        return False


def run_sink(dev: str, tag: int = 1, expect: int | None = None, idle: float = 1.0,
             timeout: float = 30.0, stop: _StopFlag | None = None,
             on_ready=None) -> dict:
    """Count this run's frames arriving on dev until a stop condition."""
    stop = stop if stop is not None else _StopFlag()
    sock = open_rx_socket(dev, tag)
    tick = max(0.01, min(0.1, idle / 2))
    # A blocking recv that gives up after `tick`: the loop gets to look at
    # the clock and the stop flag without a select() per frame.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("@ll", int(tick), int((tick % 1) * 1e6)))
    received = bad = dups = reordered = foreign = 0
    by_dst: dict[bytes, int] = {}
    by_flow: dict[int, int] = {}
    last_seq: dict[int, int] = {}
    seen = _SeenSet()
    seen_add = seen.add
    bits = seen.bits
    recv = sock.recv
    inspect = _inspect
    pkts = drops = 0
    t_first = t_last = None
    stopped_by = None
    drain_until = 0.0
    try:
        if on_ready:
            on_ready()
        t0 = now = time.monotonic()
        while True:
            if stopped_by is None:
                if expect is not None and received >= expect:
                    stopped_by = "expect"
                    break
                if stop:
                    stopped_by = "signal"
                elif now - t0 >= timeout:
                    stopped_by = "timeout"
                if stopped_by is not None:
                    # Count what already sits in the socket, then end; a
                    # sender that keeps going gets at most one more second.
                    sock.setblocking(False)
                    drain_until = time.monotonic() + 1.0
            elif now >= drain_until:
                break
            try:
                frame = recv(MAX_SIZE + 4)     # with a VLAN tag
            except (BlockingIOError, TimeoutError):
                if stopped_by is not None:
                    break
                now = time.monotonic()
                if t_last is not None and now - t_last >= idle:
                    stopped_by = "idle"
                    break
                continue
            now = time.monotonic()
            r = inspect(frame, tag)
            if r is None:
                foreign += 1
                continue
            seq, flow, intact = r
            if t_first is None:
                t_first = now
            t_last = now
            received += 1
            if not intact:
                bad += 1
            dst = frame[0:6]
            by_dst[dst] = by_dst.get(dst, 0) + 1
            by_flow[flow] = by_flow.get(flow, 0) + 1
            # Inline _SeenSet.add for the bitmap case (a method call per frame
            # costs a tenth of the sink's rate).
            i = seq >> 3
            if i < len(bits):
                b = bits[i]
                m = 1 << (seq & 7)
                dup = b & m
                if not dup:
                    bits[i] = b | m
            else:
                dup = seen_add(seq)
                bits = seen.bits
            if dup:
                dups += 1
            elif seq < last_seq.get(flow, -1):
                reordered += 1
            else:
                last_seq[flow] = seq
        pkts, drops = socket_stats(sock)
    finally:
        sock.close()
    seconds = (t_last - t_first) if t_first is not None else 0.0
    return {
        "received": received, "bad_payload": bad, "duplicates": dups,
        "reordered": reordered, "foreign": foreign,
        "by_dst_mac": {mac_to_str(k): v for k, v in sorted(by_dst.items())},
        "by_flow": {str(k): v for k, v in sorted(by_flow.items())},
        "seconds": round(seconds, 6),
        "pps": round(received / seconds, 1) if seconds > 0 else 0.0,
        "socket": {"packets": pkts, "drops": drops},
        "stopped_by": stopped_by, "tag": tag, "dev": dev,
    }


# --------------------------------------------------------------------------
# Helpers for tests, demo and benchmarks: the CLI run inside a namespace.

def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env() -> dict[str, str]:
    """Environment in which `python -m xdpd.lab.traffic` finds this very package."""
    env = dict(os.environ)
    root = _package_root()
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    return env


def traffic_cmd(*args: str) -> list[str]:
    return python_argv("xdpd.lab.traffic", *args)


def _ns_prefix(lab, ns: str | None) -> list[str]:
    if ns is None:
        return []
    if lab is not None:
        return lab.nsenter(ns)
    return ["nsenter", f"--net=/run/netns/{ns}", "--"]


DEFAULT_RATE = 100_000         # send_in_ns's pace for a count (frames/s)
_SEND_OPTIONS = ("dst_mac", "src_mac", "count", "duration", "flows", "size", "tag",
                 "rate", "seq_start")


def send_in_ns(lab, ns: str | None, dev: str, timeout: float | None = None, **kw) -> dict:
    """Run `send` on dev inside ns (None: here) and return its JSON.

    Keyword arguments are the CLI options with underscores: dst_mac="..",
    count=N or duration=S, flows, size, tag, rate, src_mac, seq_start.

    A count without a rate is paced at DEFAULT_RATE: a burst as fast as
    AF_PACKET goes (about 1 Mpps) fills a 2048-entry RX ring in 2 ms, so
    whether a test loses packets would depend on how busy the machine is,
    not on xdpd.  rate=None sends unpaced."""
    if "count" in kw and "rate" not in kw:
        kw["rate"] = DEFAULT_RATE
    args = ["send", "--dev", dev]
    for key, value in kw.items():
        if key not in _SEND_OPTIONS:
            raise TypeError(f"send_in_ns() got an unknown option {key!r}")
        if value is not None:
            args += ["--" + key.replace("_", "-"), str(value)]
    if timeout is None:
        if kw.get("duration") is not None:
            timeout = float(kw["duration"]) + 30.0
        elif kw.get("rate"):
            timeout = float(kw.get("count") or 0) / float(kw["rate"]) + 30.0
        else:
            timeout = 120.0
    cmd = _ns_prefix(lab, ns) + traffic_cmd(*args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=child_env())
    except subprocess.TimeoutExpired as exc:
        raise TrafficError(f"send on {dev} in {ns} did not finish within {timeout} s") from exc
    if proc.returncode != 0:
        raise TrafficError(f"send on {dev} in {ns} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()}")
    return _last_json(proc.stdout, f"send on {dev}")


def _last_json(text: str, what: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise TrafficError(f"{what} printed no JSON result: {text!r}")


class SinkProcess:
    """`sink` running on dev inside ns as a child process.

        with SinkProcess(lab, lab.sink_ns, "sink0", expect=1000) as sink:
            send_in_ns(...)
            res = sink.result(timeout=10)

    The constructor returns once the sink's socket is bound (it printed
    READY), so nothing sent afterwards is missed."""

    def __init__(self, lab, ns: str | None, dev: str, *, tag: int = 1,
                 expect: int | None = None, idle: float = 1.0, timeout: float = 30.0,
                 ready_timeout: float = 10.0) -> None:
        self.dev = dev
        self.ns = ns
        args = ["sink", "--dev", dev, "--tag", str(tag), "--idle", str(idle),
                "--timeout", str(timeout)]
        if expect is not None:
            args += ["--expect", str(expect)]
        self.cmd = _ns_prefix(lab, ns) + traffic_cmd(*args)
        self._stderr = b""
        self._result: dict | None = None
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=child_env())
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, ready_timeout: float) -> None:
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + ready_timeout
        while b"READY\n" not in self._stderr:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TrafficError(f"sink on {self.dev} not ready after {ready_timeout} s: "
                                   f"{self._stderr.decode(errors='replace').strip()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:       # stderr closed: the sink exited
                self.proc.wait()
                raise TrafficError(
                    f"sink on {self.dev} exited ({self.proc.returncode}) before ready: "
                    f"{self._stderr.decode(errors='replace').strip()}")
            self._stderr += chunk

    def stop(self) -> None:
        """Ask the sink to finish now (SIGTERM); it still prints its result."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def result(self, timeout: float = 10.0) -> dict:
        """Wait up to timeout for the sink to end by itself (idle, expect or
        its own timeout), else stop it; return its JSON."""
        if self._result is not None:
            return self._result
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            try:
                out, err = self.proc.communicate(timeout=10.0)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TrafficError(f"sink on {self.dev} ignored SIGTERM") from None
        self._stderr += err
        if self.proc.returncode != 0:
            raise TrafficError(f"sink on {self.dev} failed (exit {self.proc.returncode}): "
                               f"{self._stderr.decode(errors='replace').strip()}")
        self._result = _last_json(out.decode(), f"sink on {self.dev}")
        return self._result

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.communicate(timeout=5.0)
        except (subprocess.TimeoutExpired, ValueError):
            pass

    def __enter__(self) -> "SinkProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()


# --------------------------------------------------------------------------
# CLI

def _mac_arg(text: str) -> bytes:
    try:
        return parse_mac(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xdpd.lab.traffic",
                                description="xdpd lab packet generator and sink (AF_PACKET)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("send", help="send numbered UDP frames on a device")
    s.add_argument("--dev", required=True)
    s.add_argument("--dst-mac", required=True, type=_mac_arg)
    s.add_argument("--src-mac", type=_mac_arg, help="default: the device's own MAC")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--count", type=int, help="send this many frames")
    how.add_argument("--duration", type=float, help="send for this many seconds")
    s.add_argument("--flows", type=int, default=64)
    s.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"frame size without FCS, {MIN_SIZE}..{MAX_SIZE}")
    s.add_argument("--tag", type=int, default=1)
    s.add_argument("--rate", type=float, help="frames per second (default: as fast as possible)")
    s.add_argument("--seq-start", type=int, default=0,
                   help="first sequence number (to continue a run without duplicates)")

    k = sub.add_parser("sink", help="count this run's frames arriving on a device")
    k.add_argument("--dev", required=True)
    k.add_argument("--tag", type=int, default=1)
    k.add_argument("--expect", type=int, help="stop once this many frames arrived")
    k.add_argument("--idle", type=float, default=1.0,
                   help="stop after this many seconds without a frame (once one arrived)")
    k.add_argument("--timeout", type=float, default=30.0, help="stop after this many seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = _StopFlag()
    stop.install()
    try:
        if args.cmd == "send":
            res = send_frames(args.dev, args.dst_mac, args.src_mac, count=args.count,
                              duration=args.duration, flows=args.flows, size=args.size,
                              tag=args.tag, rate=args.rate, seq_start=args.seq_start,
                              stop=stop)
        else:
            def ready() -> None:
                print("READY", file=sys.stderr, flush=True)
            res = run_sink(args.dev, tag=args.tag, expect=args.expect, idle=args.idle,
                           timeout=args.timeout, stop=stop, on_ready=ready)
    except (TrafficError, ValueError) as exc:
        print(f"xdpd.lab.traffic {args.cmd}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
