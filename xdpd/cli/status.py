"""`xdpd status [--json]`: what runs, per interface and worker, read from
the daemon's control socket; --json is the stable, documented form.
"""
from __future__ import annotations

import json
import sys

from xdpd import exitcodes
from xdpd.cli.top import duration
from xdpd.control.server import ControlError, request


def command(args) -> int:
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
    place = st.get("placement")
    if place and place["mode"] == "adaptive":
        lines.append(f"placement: adaptive, {'spread' if place['spread'] else 'by queue'} now "
                     f"({place['changes']} change{'' if place['changes'] == 1 else 's'} "
                     "since start)")
    lines.append(f"{'WORKER':<16}{'STATE':<10}{'CPU':>4}{'PID':>9}{'UPTIME':>9}"
                 f"{'RX pps':>12}{'TX pps':>12}{'DROP pps':>10}{'DROPS':>12}{'RESTARTS':>9}")
    for w in st["workers"]:
        drops = sum(w["drops"].values())
        lines.append(f"{w['name']:<16}{w['state']:<10}{w['cpu']:>4}{w['pid'] or '-':>9}"
                     f"{duration(w['uptime_seconds']):>9}{w['rx_pps']:>12,.0f}"
                     f"{w['tx_pps']:>12,.0f}{w['drop_pps']:>10,.0f}{drops:>12,}"
                     f"{w['restarts']:>9}"
                     + (f"  (port run by {w['hosted_by']})" if w.get("hosted_by") else ""))
    return "\n".join(lines)
