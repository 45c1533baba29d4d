"""The `xdpd` command.

    xdpd run --config PATH          the daemon, in the foreground
    xdpd check-config PATH          validate; print what would run
    xdpd demo [--seconds N]         a veth lab, traffic, a report

Anything an operator typed that is wrong ends in one precise message and a
named exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__, exitcodes

log = logging.getLogger("xdpd")

DEFAULT_CONFIG = "/etc/xdpd/xdpd.yaml"


def setup_logging(level: str) -> None:
    # No timestamps and no log file: systemd's journal adds both.
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def need_root(what: str) -> int | None:
    if os.geteuid() != 0:
        print(f"xdpd {what}: needs root (CAP_NET_ADMIN, CAP_BPF, CAP_IPC_LOCK); "
              "run it with sudo or from the systemd unit", file=sys.stderr)
        return exitcodes.NOPERM
    return None


def cmd_check_config(args) -> int:
    from .config import ConfigError, load_config, plan_workers
    from .netdev import Host
    from .shared_umem import UmemGeometry
    host = Host()
    try:
        config = load_config(args.path, host)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return exitcodes.CONFIG
    plans = plan_workers(config, host)
    geo = UmemGeometry(len(plans), config.umem.frames_per_worker, config.umem.frame_size)
    print(f"{args.path}: OK")
    print(f"workers: {len(plans)}")
    for p in plans:
        rule = config.rule_for(p.netdev)
        if rule is None:
            what = "drop (no rule)"
        elif rule.action == "drop":
            what = "drop"
        else:
            what = f"forward to {rule.to}"
        print(f"  {p.name:<20} cpu {p.cpu:<3} {what}")
    r = config.rings
    ring_bytes = (r.rx + r.tx) * 16 + (r.fill + r.completion) * 8   # descriptors
    print(f"umem: {geo.frames} frames x {geo.frame_size} B = {geo.size / 2**20:.1f} MiB "
          f"(hugepages: {config.umem.hugepages}); control area "
          f"{geo.control_size() / 2**20:.1f} MiB; rings {ring_bytes / 2**10:.0f} KiB per socket")
    print("per-worker memory: logged at start (rss, unique); shared regions are mapped "
          "by every worker")
    listen = config.metrics.listen
    print("metrics: " + (format_listen(listen) if listen else "disabled"))
    return exitcodes.OK


def cmd_run(args) -> int:
    from .bpf import BpfError
    from .config import ConfigError, load_config
    from .netdev import Host
    from .supervisor import SetupError, StopRequested, Supervisor
    from .xsk import XskError
    denied = need_root("run")
    if denied is not None:
        return denied
    try:
        config = load_config(args.config, Host())
    except ConfigError as e:
        for line in str(e).splitlines():
            log.error("%s", line)
        return exitcodes.CONFIG
    sup = Supervisor(config)
    # Before start(): SIGTERM's default action would kill xdpd mid-way with
    # its XDP programs attached.
    sup.install_signal_handlers()
    try:
        sup.start()
    except StopRequested:
        log.info("stopped during start-up; everything it set up is undone")
        return exitcodes.OK
    except ConfigError as e:
        log.error("%s", e)
        return exitcodes.CONFIG
    except SetupError as e:
        log.error("%s", e)
        return e.code
    except (BpfError, XskError, OSError) as e:
        log.error("start-up failed: %s", e)
        return exitcodes.OSERR
    try:
        sup.run_forever()
    finally:
        log.info("stopping")
        sup.stop()
    log.info("stopped; XDP programs detached, sockets closed")
    return exitcodes.OK


def cmd_demo(args) -> int:
    denied = need_root("demo")
    if denied is not None:
        return denied
    from .demo import run_demo
    return run_demo(seconds=args.seconds, queues=args.queues)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xdpd", description="AF_XDP packet forwarding daemon")
    p.add_argument("--version", action="version", version=f"xdpd {__version__}")
    p.add_argument("--log-level", default=os.environ.get("XDPD_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration against this host")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="forward traffic through a throw-away veth lab")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--queues", type=int, default=2)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 128 + 2       # interrupted (SIGINT), after cleaning up


if __name__ == "__main__":
    sys.exit(main())
