"""The `xdpd` command.

    xdpd run --config PATH          the daemon, in the foreground
    xdpd reload [--config PATH]     apply a changed configuration, live
    xdpd status [--json]            what runs, per interface and worker
    xdpd top                        live per-queue rates and drops
    xdpd check-config PATH          validate; print what would run
    xdpd doctor [--json]            what keeps packets from xdpd, and the fix
    xdpd demo [--seconds N]         a veth lab, traffic, a report

Anything an operator typed that is wrong ends in one precise message and a
named exit code, never a traceback.

Owns: the parser and main(); each command is a module of this package
with a command(args) -> int, imported only when it runs.
Must not: do a command's work here (so `xdpd status` loads no supervisor,
and only `xdpd demo` loads the lab).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from xdpd import __version__, exitcodes
from xdpd.logs import LEVELS, parse_level, setup_logging

DEFAULT_CONFIG = "/etc/xdpd/xdpd.yaml"
DEFAULT_SOCKET = os.environ.get("XDPD_SOCKET", "/run/xdpd/xdpd.sock")


def need_root(what: str) -> int | None:
    if os.geteuid() != 0:
        print(f"xdpd {what}: needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and a "
              "memlock limit for the UMEM); run it with sudo or from the systemd unit",
              file=sys.stderr)
        return exitcodes.NOPERM
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xdpd", description="AF_XDP packet forwarding daemon")
    p.add_argument("--version", action="version", version=f"xdpd {__version__}")
    p.add_argument("--log-level", default=None, type=str.lower, choices=LEVELS,
                   help="default: XDPD_LOG_LEVEL, else info")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})")
    run.set_defaults(module="run")

    reload = sub.add_parser("reload", help="apply a changed configuration to the running daemon")
    reload.add_argument("--config", help="apply this file instead of the daemon's own "
                        "(once: a later reload reads the daemon's file again)")
    reload.add_argument("--socket", default=DEFAULT_SOCKET,
                        help=f"control socket (default {DEFAULT_SOCKET})")
    reload.set_defaults(module="reload")

    status = sub.add_parser("status", help="interfaces, workers, rates of the running daemon")
    status.add_argument("--json", action="store_true", help="the stable, documented form")
    status.add_argument("--socket", default=DEFAULT_SOCKET,
                        help=f"control socket (default {DEFAULT_SOCKET})")
    status.set_defaults(module="status")

    top = sub.add_parser("top", help="live per-queue rates and drops (q quits)")
    top.add_argument("--socket", default=DEFAULT_SOCKET,
                     help=f"control socket (default {DEFAULT_SOCKET})")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.set_defaults(module="top")

    check = sub.add_parser("check-config", help="validate a configuration against this host")
    check.add_argument("path")
    check.set_defaults(module="check_config")

    doctor = sub.add_parser("doctor", help="check the host, the steering and the running "
                            "daemon; one finding and one fix per line")
    doctor.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"YAML file (default {DEFAULT_CONFIG})")
    doctor.add_argument("--socket", help="control socket (default: control.socket of the "
                        "config)")
    doctor.add_argument("--json", action="store_true", help="findings and the worst level, "
                        "for programs")
    doctor.add_argument("--seconds", type=float, default=2.0,
                        help="time between the two status samples of the live checks")
    doctor.add_argument("-v", "--verbose", action="store_true", help="also the ok findings")
    doctor.set_defaults(module="doctor")

    cap = sub.add_parser("capture", help="see what xdpd receives, sends and drops, like "
                                         "tcpdump (root)")
    cap.add_argument("target", metavar="IFACE[/QUEUE]", help="an interface xdpd owns, and "
                     "one of its queues (default: all)")
    cap.add_argument("filter", nargs="*", help="a tcpdump filter expression (pcap-filter(7))")
    cap.add_argument("--point", default="rx", choices=("rx", "tx", "drop", "all"),
                     help="as received, as sent after the rules, as dropped, or all three")
    cap.add_argument("-c", "--count", type=int, help="stop after this many packets")
    cap.add_argument("-s", "--snaplen", type=int, default=262144,
                     help="bytes kept of each frame (default: all)")
    cap.add_argument("--seconds", type=float, help="stop after this long")
    cap.add_argument("-w", "--write", metavar="FILE", help="pcapng to FILE, or - for stdout")
    cap.add_argument("--socket", default=DEFAULT_SOCKET,
                     help=f"control socket (default {DEFAULT_SOCKET})")
    # the filter's words may also come after options ("in0 --point all udp"),
    # where argparse leaves them over: main() gives them to `filter`
    cap.set_defaults(module="capture", trailing_words="filter")

    demo = sub.add_parser("demo", help="forward traffic through a throw-away veth lab")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--queues", type=int, default=2)
    demo.set_defaults(module="demo")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # words argparse left over: a command whose last positional takes any
    # number of words says which (trailing_words) and gets them; an unknown
    # option is an error for every command, as parse_args() makes it
    trailing = getattr(args, "trailing_words", None)
    if extra and trailing and not any(w.startswith("-") for w in extra):
        getattr(args, trailing).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = args.log_level
    if level is None:
        env = os.environ.get("XDPD_LOG_LEVEL")
        level = parse_level(env) if env is not None else "info"
        if level is None:
            parser.error(f"XDPD_LOG_LEVEL={env[:40]!r} is not a log level; "
                         f"use one of {', '.join(LEVELS)} (or unset it)")
    os.environ["XDPD_LOG_LEVEL"] = level        # what the workers log at
    setup_logging(level)
    try:
        # each command's module is imported when it runs: `xdpd status` loads
        # no supervisor, and only `xdpd demo` loads the lab
        return importlib.import_module(f"xdpd.cli.{args.module}").command(args)
    except KeyboardInterrupt:
        return 128 + 2       # interrupted (SIGINT), after cleaning up


if __name__ == "__main__":
    sys.exit(main())
