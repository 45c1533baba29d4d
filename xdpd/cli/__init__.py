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
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from xdpd import __version__, exitcodes
from xdpd.logs import LEVELS, parse_level, setup_logging

log = logging.getLogger("xdpd")

DEFAULT_CONFIG = "/etc/xdpd/xdpd.yaml"
DEFAULT_SOCKET = os.environ.get("XDPD_SOCKET", "/run/xdpd/xdpd.sock")


def format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def need_root(what: str) -> int | None:
    if os.geteuid() != 0:
        print(f"xdpd {what}: needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and a "
              "memlock limit for the UMEM); run it with sudo or from the systemd unit",
              file=sys.stderr)
        return exitcodes.NOPERM
    return None


def cmd_check_config(args) -> int:
    from xdpd.config.model import ConfigError, InterfaceConfig
    from xdpd.config.plan import plan_workers
    from xdpd.config.schema import load_config
    from xdpd.control.snapshot import describe_rule
    from xdpd.datapath.umem import UmemGeometry
    from xdpd.kernel.netdev import Host
    host = Host()
    try:
        config = load_config(args.path, host)
        if any(not i.steering.empty for i in config.interfaces):
            from xdpd.control.steering import check_steering
            from xdpd.kernel.ethtool import Ethtool
            check_steering(config, Ethtool())
    except ConfigError as e:
        print(e, file=sys.stderr)
        return exitcodes.CONFIG
    plans = plan_workers(config, host)
    geo = UmemGeometry(len(plans), config.umem.frames_per_worker, config.umem.frame_size)
    print(f"{args.path}: OK")
    print(f"workers: {len(plans)}")
    for p in plans:
        print(f"  {p.name:<20} cpu {p.cpu:<3} {describe_rule(config, p.netdev)}")
    for iface in config.interfaces:
        if iface.fanout > 1:
            print(f"fanout {iface.name}: {iface.fanout} workers per queue "
                  f"({iface.fanout_spread}); member 0 has the queue's FILL and COMPLETION "
                  f"rings and its {config.umem.frames_per_worker} frames serve all "
                  f"{iface.fanout} RX rings")
        elif iface.fanout_spread != InterfaceConfig(name="").fanout_spread:
            print(f"fanout {iface.name}: 1 (fanout_spread {iface.fanout_spread} unused "
                  "without fanout)")
        if iface.pass_to_kernel:
            print(f"pass to kernel on {iface.name}: "
                  + "; ".join(m.describe() for m in iface.pass_to_kernel))
    r = config.rings
    ring_bytes = (r.rx + r.tx) * 16 + (r.fill + r.completion) * 8   # descriptors
    print(f"umem: {geo.frames} frames x {geo.frame_size} B = {geo.size / 2**20:.1f} MiB "
          f"(hugepages: {config.umem.hugepages}); control area "
          f"{geo.control_size() / 2**20:.1f} MiB; rings {ring_bytes / 2**10:.0f} KiB per socket")
    print("per-worker memory: logged at start (rss, unique); shared regions are mapped "
          "by every worker")
    for iface in config.interfaces:
        s = iface.steering
        if s.empty:
            continue
        from xdpd.control.steering import describe_flow
        what = []
        if s.channels is not None:
            what.append(f"{s.channels} channels")
        if s.rss_queues is not None:
            what.append("RSS over queues " + ",".join(map(str, s.rss_queues)))
        what += [describe_flow(rule) for rule in s.flows]
        print(f"steering {iface.name}: " + "; ".join(what))
    listen = config.metrics.listen
    print("metrics: " + (format_listen(listen) if listen else "disabled"))
    return exitcodes.OK


def cmd_doctor(args) -> int:
    import json

    from xdpd.config.model import ConfigError
    from xdpd.config.schema import load_config
    from xdpd.control.doctor import DoctorHost, diagnose, exit_code
    from xdpd.control.server import request
    if args.seconds < 0:
        print("xdpd doctor: --seconds must be 0 or more", file=sys.stderr)
        return exitcodes.USAGE
    try:
        # the schema only: what the host lacks is a finding, not a refusal
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return exitcodes.CONFIG
    socket_path = args.socket or os.environ.get("XDPD_SOCKET") or config.control.socket
    report = diagnose(config, DoctorHost(), lambda: request(socket_path, "status"),
                      seconds=args.seconds)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines(verbose=args.verbose)))
    return exit_code(report.findings)


FD_LIMIT = 65536


def raise_fd_limit() -> None:
    """Descriptor headroom for the supervisor: its sockets, memfds, eventfds,
    pipes to standbys and clients (metrics and control connections are
    capped, so these are margin, not a defence).  The soft limit goes up to
    FD_LIMIT, within the hard limit (the unit's LimitNOFILE=)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, want, e)


def cmd_run(args) -> int:
    from xdpd.config.model import ConfigError
    from xdpd.config.schema import load_config
    from xdpd.control.ops import SetupError, StopRequested
    from xdpd.control.supervisor import Supervisor
    from xdpd.kernel.libbpf import BpfError
    from xdpd.kernel.netdev import Host
    from xdpd.kernel.xsk import XskError
    denied = need_root("run")
    if denied is not None:
        return denied
    try:
        config = load_config(args.config, Host())
    except ConfigError as e:
        for line in str(e).splitlines():
            log.error("%s", line)
        return exitcodes.CONFIG
    raise_fd_limit()
    from xdpd.control.sdnotify import Notifier
    sup = Supervisor(config, notifier=Notifier.from_env())
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


def cmd_reload(args) -> int:
    from xdpd.config.file import read_config_file
    from xdpd.config.model import ConfigError
    from xdpd.control.server import RELOAD_TIMEOUT_S, ControlError, request
    fields = {}
    if args.config:
        try:
            text = read_config_file(args.config)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return exitcodes.CONFIG
        fields = {"config_path": os.path.abspath(args.config), "config_text": text}
    try:
        result = request(args.socket, "reload", timeout=RELOAD_TIMEOUT_S, **fields)
    except ControlError as e:
        if e.result is None:                # nobody answered
            print(f"xdpd reload: {e}", file=sys.stderr)
            return exitcodes.UNAVAILABLE
        print(f"xdpd reload: {e.result.get('result', 'failed')}: {e}", file=sys.stderr)
        return exitcodes.OSERR if e.result.get("result") == "failed" else exitcodes.CONFIG
    print(f"{result['result']} (generation {result['generation']}, "
          f"{result['duration_seconds'] * 1e3:.1f} ms)")
    for line in result.get("changes", []):
        print(f"  {line}")
    return exitcodes.OK


def cmd_status(args) -> int:
    import json

    from xdpd.control.server import ControlError, request
    try:
        status = request(args.socket, "status")
    except ControlError as e:
        print(f"xdpd status: {e}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return exitcodes.OK


def format_status(st: dict) -> str:
    """`xdpd status` for people; --json is the stable form for programs."""
    from xdpd.cli.top import duration
    lines = [f"xdpd {st['version']}, pid {st['pid']}, up {duration(st['uptime_seconds'])}, "
             f"{'ready' if st['ready'] else 'NOT READY'}",
             f"config: {st['config']['path']} (generation {st['config']['generation']})"]
    last = st.get("last_reload")
    if last:
        lines.append(f"last reload: {last['result']} ({last['duration_seconds'] * 1e3:.1f} ms): "
                     f"{last['message']}")
    u = st["umem"]
    loc = u["frames_by_location"]
    lines.append(f"umem: {u['frames']} frames x {u['frame_size']} B, worker slots "
                 f"{u['worker_slots_used']}/{u['worker_slots']}; frames " +
                 ", ".join(f"{k} {v}" for k, v in loc.items()))
    lines.append("")
    lines.append(f"{'INTERFACE':<16}{'XDP':<9}{'SOCKETS':<11}{'QUEUES':<12}RULE")
    for i in st["interfaces"]:
        queues = ",".join(map(str, i["queues"])) + f" of {i['rx_queues']}"
        lines.append(f"{i['name']:<16}{i['xdp_mode']:<9}{i['socket_mode']:<11}{queues:<12}"
                     f"{i['rule']}")
        for m in i.get("pass_to_kernel", []):
            lines.append(f"{'':<16}pass to kernel: {m}")
    lines.append("")
    lines.append(f"{'WORKER':<16}{'STATE':<10}{'CPU':>4}{'PID':>9}{'UPTIME':>9}"
                 f"{'RX pps':>12}{'TX pps':>12}{'DROP pps':>10}{'DROPS':>12}{'RESTARTS':>9}")
    for w in st["workers"]:
        drops = sum(w["drops"].values())
        lines.append(f"{w['name']:<16}{w['state']:<10}{w['cpu']:>4}{w['pid'] or '-':>9}"
                     f"{duration(w['uptime_seconds']):>9}{w['rx_pps']:>12,.0f}"
                     f"{w['tx_pps']:>12,.0f}{w['drop_pps']:>10,.0f}{drops:>12,}"
                     f"{w['restarts']:>9}")
    return "\n".join(lines)


def cmd_top(args) -> int:
    from xdpd.cli.top import main as top_main
    return top_main(args.socket, args.interval)


def cmd_demo(args) -> int:
    denied = need_root("demo")
    if denied is not None:
        return denied
    from xdpd.lab.demo import run_demo
    return run_demo(seconds=args.seconds, queues=args.queues)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xdpd", description="AF_XDP packet forwarding daemon")
    p.add_argument("--version", action="version", version=f"xdpd {__version__}")
    p.add_argument("--log-level", default=None, type=str.lower, choices=LEVELS,
                   help="default: XDPD_LOG_LEVEL, else info")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})")
    run.set_defaults(func=cmd_run)

    reload = sub.add_parser("reload", help="apply a changed configuration to the running daemon")
    reload.add_argument("--config", help="apply this file instead of the daemon's own "
                        "(once: a later reload reads the daemon's file again)")
    reload.add_argument("--socket", default=DEFAULT_SOCKET,
                        help=f"control socket (default {DEFAULT_SOCKET})")
    reload.set_defaults(func=cmd_reload)

    status = sub.add_parser("status", help="interfaces, workers, rates of the running daemon")
    status.add_argument("--json", action="store_true", help="the stable, documented form")
    status.add_argument("--socket", default=DEFAULT_SOCKET,
                        help=f"control socket (default {DEFAULT_SOCKET})")
    status.set_defaults(func=cmd_status)

    top = sub.add_parser("top", help="live per-queue rates and drops (q quits)")
    top.add_argument("--socket", default=DEFAULT_SOCKET,
                     help=f"control socket (default {DEFAULT_SOCKET})")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.set_defaults(func=cmd_top)

    check = sub.add_parser("check-config", help="validate a configuration against this host")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)

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
    doctor.set_defaults(func=cmd_doctor)

    demo = sub.add_parser("demo", help="forward traffic through a throw-away veth lab")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--queues", type=int, default=2)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
        return args.func(args)
    except KeyboardInterrupt:
        return 128 + 2       # interrupted (SIGINT), after cleaning up


if __name__ == "__main__":
    sys.exit(main())
