"""`xdpd capture IFACE[/QUEUE] [FILTER]`: what xdpd receives, sends and
drops, as tcpdump would show it (which sees none of it once XDP owns the
queue): pcapng with -w (tcpdump, tshark and Wireshark read it; -w - to a
pipe), else one line per packet.  A session on the control socket (root
only): started, read every READ_EVERY_S (which keeps its lease), stopped
at -c, --seconds, Ctrl-C or a broken pipe; at the end, on stderr, what
was captured and what xdpd's rings had no room for (tcpdump's "dropped by
kernel").
"""
from __future__ import annotations

import base64
import signal
import sys
import time

from xdpd import exitcodes
from xdpd.control.server import ControlError, request
from xdpd.datapath.capture import Record, records
from xdpd.datapath.pcapng import Writer

READ_EVERY_S = 0.1


class _Stop:
    """SIGINT and SIGTERM end the capture cleanly (the loop looks at it)."""

    def __init__(self):
        self.now = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)

    def __call__(self, signum, frame):
        self.now = True


def _target(text: str) -> tuple[str, int | None]:
    iface, _, queue = text.partition("/")
    if not queue:
        return iface, None
    q = queue[1:] if queue.startswith("q") else queue
    if not q.isdigit():
        raise ValueError(f"{text!r}: IFACE or IFACE/QUEUE (a number)")
    return iface, int(q)


def describe(r: Record, names: dict[str, str]) -> str:
    """One line per packet: time, iface/queue, point, what tcpdump -e would
    say of the headers in few words, and for a drop its reason."""
    t = time.strftime("%H:%M:%S", time.localtime(r.ts_ns // 10**9)) + \
        f".{r.ts_ns % 10**9 // 1000:06d}"
    where = f"{names.get(str(r.netdev), r.netdev)}/q{r.queue}"
    what = summary(r.data)
    verdict = ""
    if r.point == "drop":
        verdict = f" dropped: {r.reason}" + (f" (rule {r.rule})" if r.rule is not None else "")
    return f"{t} {where} {r.point:<4} {what}, length {r.wire_len}{verdict}"


def summary(f: bytes) -> str:
    """Ethernet, a VLAN tag, IPv4/IPv6 and ports, in a few words."""
    if len(f) < 14:
        return "runt"
    mac = lambda b: ":".join(f"{x:02x}" for x in b)     # noqa: E731
    head = f"{mac(f[6:12])} > {mac(f[0:6])}"
    etype, off, tags = int.from_bytes(f[12:14], "big"), 14, ""
    while etype in (0x8100, 0x88A8) and len(f) >= off + 4:
        tags += f" vlan {int.from_bytes(f[off:off + 2], 'big') & 0xFFF}"
        etype, off = int.from_bytes(f[off + 2:off + 4], "big"), off + 4
    l3 = f[off:]
    if etype == 0x0800 and len(l3) >= 20:
        import socket
        proto, ihl = l3[9], (l3[0] & 0xF) * 4
        src, dst = socket.inet_ntoa(l3[12:16]), socket.inet_ntoa(l3[16:20])
        return head + tags + " IPv4 " + _ports(src, dst, proto, l3[ihl:])
    if etype == 0x86DD and len(l3) >= 40:
        import socket
        src = socket.inet_ntop(socket.AF_INET6, l3[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, l3[24:40])
        return head + tags + " IPv6 " + _ports(src, dst, l3[6], l3[40:])
    return head + tags + f" ethertype 0x{etype:04x}"


def _ports(src: str, dst: str, proto: int, l4: bytes) -> str:
    name = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}.get(proto, f"proto {proto}")
    if proto in (6, 17) and len(l4) >= 4:
        return (f"{src}.{int.from_bytes(l4[0:2], 'big')} > "
                f"{dst}.{int.from_bytes(l4[2:4], 'big')}: {name}")
    return f"{src} > {dst}: {name}"


def command(args) -> int:
    try:
        iface, queue = _target(args.target)
    except ValueError as e:
        print(f"xdpd capture: {e}", file=sys.stderr)
        return exitcodes.USAGE
    points = ["rx", "tx", "drop"] if args.point == "all" else [args.point]
    try:
        start = request(args.socket, "capture_start", iface=iface, queue=queue, points=points,
                        snaplen=args.snaplen, filter=" ".join(args.filter))
    except ControlError as e:
        return _refused(e)
    stop = _Stop()
    out, got, totals, code = None, 0, None, exitcodes.OK
    try:
        out, writer = _output(args.write)
        got, totals = _loop(args, start, stop, writer, out)
    except BrokenPipeError:
        pass                                # the reader went away: end quietly
    except ControlError as e:               # the daemon stopped meanwhile
        print(f"xdpd capture: {e}", file=sys.stderr)
        code = exitcodes.UNAVAILABLE
    except OSError as e:                    # the output: a full disk, ...
        print(f"xdpd capture: {args.write}: {e.strerror or e}; capture ended",
              file=sys.stderr)
        code = exitcodes.FAILURE
    finally:
        try:
            end = request(args.socket, "capture_stop", token=start["token"])
        except ControlError:
            end = None                      # its lease ends it
        if out not in (None, sys.stdout.buffer):
            try:
                out.close()
            except OSError:
                pass                        # said above
    end = end or totals or {"captured": 0, "dropped": 0}
    print(f"{got} packets captured\n{end['dropped']} packets dropped by xdpd (its capture "
          f"ring had no room: the reader was slow)", file=sys.stderr)
    return code


def _refused(e: ControlError) -> int:
    """The daemon said no (a filter libpcap refused: exit 2, as tcpdump;
    other bad input: 64), or could not be asked (69)."""
    refused = (e.result or {}).get("refused")
    if refused is None and str(e).startswith("unknown command"):
        print("xdpd capture: this xdpd has no capture (an older version): upgrade and "
              "restart it", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    print(f"xdpd capture: {e}", file=sys.stderr)
    if refused == "filter":
        return 2
    return exitcodes.USAGE if refused else exitcodes.UNAVAILABLE


def _output(path: str | None):
    if path is None:
        return None, None
    out = sys.stdout.buffer if path == "-" else open(path, "wb")
    return out, Writer(out)


def _loop(args, start: dict, stop: _Stop, writer, out) -> tuple[int, dict]:
    names = start["interfaces"]
    got, deadline = 0, None if args.seconds is None else time.monotonic() + args.seconds
    answer: dict = {}
    while not stop.now and (deadline is None or time.monotonic() < deadline) and \
            (args.count is None or got < args.count):
        answer = request(args.socket, "capture_read", token=start["token"])
        for r in records(base64.b64decode(answer["records"])):
            if args.count is not None and got >= args.count:
                break
            got += 1
            if writer is None:
                print(describe(r, names), flush=False)
            else:
                writer.packet(r.packet(writer.interface(names.get(str(r.netdev), "?"),
                                                        args.snaplen)))
        (out or sys.stdout).flush()
        time.sleep(READ_EVERY_S)
    return got, answer
