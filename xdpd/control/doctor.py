"""`xdpd doctor`: what stands between the configuration and packets reaching
xdpd, one finding and one fix per line.

Design
------
A check is a function that returns findings; each finding names the check,
a level (ok, warn, error), a subject (`in0`, `in0/q1`), what was found and
the fix.  The worst level decides the exit code.  Two kinds of checks:

* static, from the configuration and the host (no daemon needed): the XDP
  mode, copy or zero-copy, the channel count against the configured queues,
  the RSS indirection table against the owned queues, ntuple rules, the MTU
  against the frame size, workers pinned on their queue's IRQ CPU;
* live, when a daemon answers on the control socket: two `status` samples
  N seconds apart, and the counters that rose between them: traffic on
  queues without a socket (mis-steered, or an owned queue whose worker is
  gone), socket drops, FILL-ring starvation, refused descriptors, and
  workers that are not running.

Doctor changes nothing.  In particular it does not attach a program to find
out whether the driver has native XDP: attaching in native mode makes many
drivers (i40e, ice, mlx5, ...) reconfigure their rings, a short outage on a
production interface, and the answer is only needed when xdpd is about to
attach anyway.  So native XDP is judged by what is attached: the mode a
running xdpd got (`xdp_mode` in its status), else the mode of whatever
program is attached to the netdev now, else it is reported as untested, with
the driver's name, and `xdpd run` logs the mode it gets.

The ethtool questions (driver, RSS table, ntuple rule count) are asked of
the driver; a driver without the operation (EOPNOTSUPP, e.g. veth) is an ok
finding saying so, not an error.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from typing import Callable

from xdpd import exitcodes
from xdpd.config.model import L2_OVERHEAD, XDP_HEADROOM
from xdpd.config.plan import (format_cpulist, fragments, frame_size_for, interface_mtus,
                              max_mtu, multi_buffer, napi_placement, plan_workers)
from xdpd.control.server import ControlError
from xdpd.kernel.libbpf import query_xdp
from xdpd.kernel.netdev import Host, completes_checksums, partial_checksums_left

LEVELS = ("ok", "warn", "error")


DEFAULT_SECONDS = 2.0


@dataclass(frozen=True)
class Finding:
    check: str
    level: str          # ok | warn | error
    subject: str        # "in0", "in0/q1", "xdpd"
    finding: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level.upper()} {self.subject}: {self.finding}"
        return f"{text}; {self.fix}" if self.fix else text

    def as_dict(self) -> dict:
        return {"check": self.check, "level": self.level, "subject": self.subject,
                "finding": self.finding, "fix": self.fix}


def worst(findings: list[Finding]) -> str:
    return max((f.level for f in findings), key=LEVELS.index, default="ok")


def exit_code(findings: list[Finding]) -> int:
    return {"ok": exitcodes.OK, "warn": exitcodes.DOCTOR_WARNINGS,
            "error": exitcodes.DOCTOR_ERRORS}[worst(findings)]


def queue_list(queues) -> str:
    """0-1,3: the owned queues, short."""
    return format_cpulist(set(queues))


# --- static checks ------------------------------------------------------------

@dataclass
class Netdev:
    """What the static checks know about one configured interface."""
    config: object              # InterfaceConfig
    rx_queues: int
    owned: tuple[int, ...]
    driver: str
    running: dict | None        # the daemon's status entry for it, if one runs

    @property
    def name(self) -> str:
        return self.config.name


def static_checks(config, host, status: dict | None = None) -> list[Finding]:
    """Every static finding for `config` on `host`; `status` is a running
    daemon's answer (or None) for what only it knows (the XDP mode it got)."""
    findings: list[Finding] = []
    running = {i["name"]: i for i in (status or {}).get("interfaces", [])}
    complete = True         # every netdev and queue there: workers can be planned
    for iface in config.interfaces:
        nd = _netdev(iface, host, running.get(iface.name), findings)
        if nd is None:
            complete = False
            continue
        for check in NETDEV_CHECKS:
            findings += check(config, host, nd)
        if any(q >= nd.rx_queues for q in nd.owned):
            complete = False
    if complete:
        plans = plan_workers(config, host)
        findings += check_napi(config, host, plans)
        findings += check_wake(config, host, plans)
    return findings


def _netdev(iface, host, running, findings) -> Netdev | None:
    name = iface.name
    if not host.netdev_exists(name):
        findings.append(Finding("netdev", "error", name, f"netdev {name!r} not found",
                                "see 'ip link show'; create it or remove it from interfaces"))
        return None
    try:
        count = host.rx_queue_count(name)
    except OSError as e:
        findings.append(Finding("netdev", "error", name, f"cannot count its rx queues: {e}",
                                f"see 'ethtool -l {name}'"))
        return None
    try:
        driver = host.driver(name)
    except OSError:
        driver = "unknown"
    owned = tuple(range(count)) if iface.queues == "all" else tuple(iface.queues)
    return Netdev(iface, count, owned, driver, running)


def check_xdp_mode(config, host, nd: Netdev) -> list[Finding]:
    wanted = nd.config.xdp_mode
    if nd.running is not None:
        mode = nd.running["xdp_mode"]
        source = "in use by the running xdpd"
    else:
        mode = host.xdp_attached_mode(nd.name)
        source = "of the program attached now"
    if mode == "native":
        return [Finding("xdp_mode", "ok", nd.name, f"native XDP ({source}; driver {nd.driver})")]
    if mode == "generic":
        if wanted == "generic":
            return [Finding("xdp_mode", "ok", nd.name, f"generic XDP, as configured ({source})")]
        return [Finding("xdp_mode", "warn", nd.name,
                        f"generic XDP ({source}): driver {nd.driver} did not take a native "
                        "program; every packet costs an skb before XDP sees it",
                        "use a NIC whose driver has native XDP, or set xdp_mode: generic "
                        "to accept it")]
    return [Finding("xdp_mode", "ok", nd.name,
                    f"native XDP untested (driver {nd.driver}, nothing attached; doctor does "
                    f"not attach to find out); xdp_mode: {wanted}, 'xdpd run' logs the mode "
                    "it gets")]


def check_zero_copy(config, host, nd: Netdev) -> list[Finding]:
    wanted = nd.config.zero_copy
    if nd.driver == "veth":
        return [Finding("zero_copy", "ok", nd.name,
                        "copy mode: veth has no AF_XDP zero-copy (expected)")]
    if nd.running is None:
        return [Finding("zero_copy", "ok", nd.name,
                        f"zero_copy: {wanted}; decided at start (driver {nd.driver})")]
    mode = nd.running["socket_mode"]
    if mode == "zero-copy":
        return [Finding("zero_copy", "ok", nd.name, "zero-copy sockets")]
    if wanted == "off" or any(i.zero_copy == "off" for i in config.interfaces):
        return [Finding("zero_copy", "ok", nd.name,
                        "copy mode, as configured (zero_copy: off on an interface makes "
                        "every socket copy)")]
    return [Finding("zero_copy", "warn", nd.name,
                    f"copy mode: driver {nd.driver} did not take zero-copy sockets; every "
                    "packet is copied into the UMEM",
                    "check the driver's AF_XDP zero-copy support and the xdpd start log, "
                    "or set zero_copy: off to accept copy mode")]


def check_channels(config, host, nd: Netdev) -> list[Finding]:
    name, count = nd.name, nd.rx_queues
    missing = [q for q in nd.owned if q >= count]
    if missing:
        return [Finding("channels", "error", name,
                        f"configured queues {queue_list(missing)} not on {name} "
                        f"({count} rx queues)",
                        f"raise the channel count (ethtool -L {name} combined "
                        f"{max(missing) + 1}) or remove them from queues")]
    if nd.running is not None:
        started = nd.running["rx_queues"]
        owned = set(nd.running["queues"])
        if nd.config.queues == "all" and count > started:
            new = [q for q in range(count) if q not in owned]
            return [Finding("channels", "warn", name,
                            f"{count} rx queues now, {started} when xdpd started: queues "
                            f"{queue_list(new)} have no worker, the kernel keeps their traffic",
                            "xdpd reload (queues: all owns them)")]
    unowned = [q for q in range(count) if q not in nd.owned]
    if not unowned:
        return [Finding("channels", "ok", name, f"all {count} rx queues owned")]
    # A list that leaves queues to the kernel is a choice (management traffic);
    # whether traffic lands there is the RSS check's and the live check's job.
    what = "queue" if len(unowned) == 1 else "queues"
    return [Finding("channels", "ok", name,
                    f"owns queues {queue_list(nd.owned)} of {count}; the kernel keeps "
                    f"{what} {queue_list(unowned)}")]


def _unreadable(check: str, nd: Netdev, e: OSError, what: str, lacks: str,
                flag: str) -> list[Finding]:
    """A failed ethtool read: a driver without the operation is fine (ok,
    said so), any other failure a warning pointing at the ethtool command."""
    if e.errno == errno.EOPNOTSUPP:
        return [Finding(check, "ok", nd.name, f"{lacks} (not supported by driver {nd.driver})")]
    return [Finding(check, "warn", nd.name, f"cannot {what}: {e}",
                    f"see 'ethtool {flag} {nd.name}'")]


def check_rss(config, host, nd: Netdev) -> list[Finding]:
    name = nd.name
    try:
        table = host.rss_indirection(name)
    except OSError as e:
        return _unreadable("rss", nd, e, "read the RSS indirection table",
                           "no RSS indirection table", "-x")
    if not table:
        return [Finding("rss", "ok", name, f"no RSS indirection table (driver {nd.driver})")]
    owned = set(nd.owned)
    away = [q for q in table if q not in owned]
    if not away:
        return [Finding("rss", "ok", name,
                        f"RSS table: all {len(table)} entries point at owned queues")]
    share = 100.0 * len(away) / len(table)
    queues = sorted(set(away))
    return [Finding("rss", "warn", name,
                    f"RSS table: {len(away)} of {len(table)} entries ({share:.0f}% of flows) "
                    f"point at queues {queue_list(queues)}, which xdpd does not own: that "
                    "traffic never reaches xdpd",
                    f"{rss_fix(name, nd.owned, nd.rx_queues)}, or add queues "
                    f"{queue_list(queues)}")]


def rss_fix(name: str, owned, count: int) -> str:
    """The ethtool command that spreads RSS over the owned queues only."""
    if list(owned) == list(range(len(owned))):
        return f"ethtool -X {name} equal {len(owned)}"
    weights = " ".join("1" if q in set(owned) else "0" for q in range(count))
    return f"ethtool -X {name} weight {weights}"


def check_ntuple(config, host, nd: Netdev) -> list[Finding]:
    name = nd.name
    try:
        rules = host.ntuple_rule_count(name)
    except OSError as e:
        return _unreadable("ntuple", nd, e, "count the ntuple rules", "no ntuple filters", "-n")
    what = "1 ntuple rule" if rules == 1 else f"{rules} ntuple rules"
    return [Finding("ntuple", "ok", name, f"{what} (ethtool -n {name} lists them; the live "
                                           "check shows traffic a rule sends to an unowned "
                                           "queue)" if rules else "no ntuple rules")]


def _features(host, name: str) -> str:
    """What the driver says about multi-buffer XDP, in words."""
    try:
        f = host.xdp_features(name)
    except OSError as e:
        return f"its XDP features are unknown ({e.strerror or e})"
    zc = f", zero-copy up to {f.zc_max_segs} buffers per packet" if f.zc_max_segs else ""
    return ("its driver takes multi-buffer packets in XDP (rx-sg)" if f.has("rx-sg")
            else "its driver cannot take multi-buffer packets in XDP (no rx-sg)") + zc


def check_mtu(config, host, nd: Netdev) -> list[Finding]:
    name = nd.name
    try:
        mtu = host.mtu(name)
    except OSError as e:
        return [Finding("mtu", "warn", name, f"cannot read the MTU: {e}", "")]
    frame = config.umem.frame_size
    room = frame - XDP_HEADROOM
    need = mtu + L2_OVERHEAD
    if need <= room:
        return [Finding("mtu", "ok", name,
                        f"MTU {mtu} (+{L2_OVERHEAD} B headers) fits a {frame} B frame "
                        f"({room} B after the {XDP_HEADROOM} B XDP headroom)")]
    features = _features(host, name)
    n = fragments(need, frame)
    if multi_buffer(config.umem, interface_mtus(config, host).values()):
        sg = "no rx-sg" not in features
        r = config.rings
        return [Finding("mtu", "ok" if sg else "warn", name,
                        f"MTU {mtu} (+{L2_OVERHEAD} B headers = {need} B): a full-size packet "
                        f"takes {n} buffers of {frame} B, one descriptor chain (multi-buffer, "
                        f"umem.multi_buffer: {config.umem.multi_buffer}); the rx ring holds "
                        f"{r.rx // n} such packets, the fill ring buffers for {r.fill // n}; "
                        f"{features}",
                        "" if sg else f"xdp_mode: generic on {name} (its driver's native XDP "
                        f"cannot take packets over one page), or an MTU of "
                        f"{max_mtu(frame)} or less")]
    fits = frame_size_for(mtu)
    fix = ("umem.multi_buffer: auto" + (f" (or umem.frame_size: {fits})" if fits else ""))
    return [Finding("mtu", "error", name,
                    f"MTU {mtu} (+{L2_OVERHEAD} B headers = {need} B) does not fit a {frame} B "
                    f"frame ({room} B after the {XDP_HEADROOM} B XDP headroom): such a packet "
                    f"arrives in {n} buffers"
                    + (f"; {features}" if features else "")
                    + "; with umem.multi_buffer: off xdpd's workers take one buffer per "
                    "packet, so the kernel drops longer ones (rx_dropped)", fix)]



def check_checksum(config, host, nd: Netdev) -> list[Finding]:
    """Partial TCP/UDP checksums (a local stack's with TX offload on): who
    completes them, or, where nobody does, who sends them and the fix."""
    mode = nd.config.checksum
    try:
        kind = host.link_kind(nd.name)
    except OSError:
        kind = "unknown"
    if completes_checksums(mode, kind):
        return [Finding("checksum", "ok", nd.name,
                        f"partial TCP/UDP checksums completed ({kind or 'a NIC'}, checksum: "
                        f"{mode}); frames whose checksum verifies are left as they are")]
    if not kind:
        return [Finding("checksum", "ok", nd.name,
                        f"a NIC: frames from a wire carry complete checksums (checksum: {mode})")]
    return [Finding("checksum", "warn", nd.name, *partial_checksums_left(host, nd.name, kind))]


NETDEV_CHECKS: tuple[Callable, ...] = (check_xdp_mode, check_zero_copy, check_channels,
                                       check_rss, check_ntuple, check_mtu, check_checksum)


def check_napi(config, host, plans) -> list[Finding]:
    bad = napi_placement(config, plans, host)
    findings = [Finding("napi", "warn", plan.name, finding, fix) for plan, finding, fix in bad]
    if plans and not bad:
        findings.append(Finding("napi", "ok", "workers",
                                f"no worker on its queue's IRQ CPU ({len(plans)} workers)"))
    return findings


def check_wake(config, host, plans) -> list[Finding]:
    """How fast the workers' CPUs wake (control/wake.py): their idle
    states, and whether xdpd can cap the wake-up latency while they
    receive (workers.cpu_wake_latency_us)."""
    limit = config.workers.cpu_wake_latency_us
    by_cpu: dict[int, list[str]] = {}
    for plan in plans:
        by_cpu.setdefault(plan.cpu, []).append(plan.name)
    driver = host.cpu_idle_driver()
    findings = []
    for cpu, names in sorted(by_cpu.items()):
        subject = f"CPU {cpu}"
        states = [s for s in host.cpu_idle_states(cpu) if not s.disabled]
        deepest = max(states, key=lambda s: s.exit_latency_us, default=None)
        idle = (f"idle states up to {deepest.name!r} ({deepest.exit_latency_us} us to leave"
                f"{', a halt into the hypervisor' if driver == 'haltpoll' else ''}; "
                f"driver {driver})" if deepest else "no cpuidle states (the default halt)")
        who = f"workers {', '.join(names)}"
        if limit is None:
            findings.append(Finding(
                "wake", "ok", subject,
                f"{who}: {idle}; workers.cpu_wake_latency_us: null leaves them, so a packet "
                "for a sleeping worker waits for the CPU to leave its idle state",
                "set workers.cpu_wake_latency_us: 0 for the fastest wake-ups while traffic "
                "flows (docs/PERFORMANCE.md, \"Real clients\")"))
            continue
        try:
            current = host.cpu_wake_limit(cpu)
            writable = host.cpu_wake_limit_writable(cpu)
        except (OSError, ValueError) as e:
            findings.append(Finding(
                "wake", "warn", subject,
                f"{who}: cannot read the CPU's wake-up latency cap ({e}); xdpd cannot hold it "
                f"at {limit} us while they receive",
                "run xdpd as root on a kernel with PM QoS (CONFIG_PM), or set "
                "workers.cpu_wake_latency_us: null"))
            continue
        if not writable:
            findings.append(Finding(
                "wake", "warn", subject,
                f"{who}: the CPU's wake-up latency cap is not writable here; xdpd cannot "
                f"hold it at {limit} us while they receive",
                "run xdpd as root with /sys mounted read-write, or set "
                "workers.cpu_wake_latency_us: null"))
            continue
        now = "no cap now" if current is None else f"capped at {current} us now"
        findings.append(Finding(
            "wake", "ok", subject,
            f"{who}: {idle}; capped at {limit} us while they receive ({now})"))
    return findings


# --- live checks --------------------------------------------------------------

def live_checks(config, before: dict, after: dict, seconds: float,
                host=None) -> list[Finding]:
    """Findings from two status samples `seconds` apart; `host` (optional)
    says which steering tools a fix may name."""
    findings: list[Finding] = []
    findings += check_workers(after)
    findings += check_steering(before, after, seconds, config, host)
    findings += check_sockets(before, after, seconds)
    return findings


def _by(items: list[dict], key: str) -> dict:
    return {i[key]: i for i in items}


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} pkt/s" if seconds > 0 else f"{n} packets"


def check_workers(status: dict) -> list[Finding]:
    findings = []
    for w in status.get("workers", []):
        state = w["state"]
        if state == "running":
            continue
        if state == "fatal":
            findings.append(Finding("workers", "error", w["name"],
                                    "worker given up (fatal) after repeated start failures; "
                                    "its queue gets the interface's fallback",
                                    "see the xdpd log for the cause, fix it, restart xdpd"))
        else:
            findings.append(Finding("workers", "warn", w["name"],
                                    f"worker {state} (restarts: {w['restarts']})",
                                    "run doctor again; if it stays, see the xdpd log"))
    running = sum(w["state"] == "running" for w in status.get("workers", []))
    if running and running == len(status.get("workers", [])):
        findings.append(Finding("workers", "ok", "workers", f"all {running} workers running"))
    return findings


def _verdict_deltas(before: dict, after: dict) -> dict[str, dict[int, dict[str, int]]]:
    """{netdev: {queue: {verdict: rise}}} from the status' xdp_packets."""
    old = _by(before.get("interfaces", []), "name")
    out: dict[str, dict[int, dict[str, int]]] = {}
    for iface in after.get("interfaces", []):
        prev = {q["queue"]: q for q in old.get(iface["name"], {}).get("xdp_packets", [])}
        per_queue = {}
        for q in iface.get("xdp_packets", []):
            p = prev.get(q["queue"], {})
            per_queue[q["queue"]] = {v: q.get(v, 0) - p.get(v, 0)
                                     for v in ("redirected", "passed", "no_socket",
                                               "fanout_to_owner")}
        out[iface["name"]] = per_queue
    return out


def steering_tools(host, name: str, owned, count: int) -> list[str]:
    """The ways this driver offers to steer traffic to the owned queues:
    the RSS table (if readable) and ntuple rules (if countable)."""
    if host is None:
        return []
    tools = []
    try:
        host.rss_indirection(name)
        tools.append(rss_fix(name, owned, count))
    except OSError:
        pass
    try:
        host.ntuple_rule_count(name)
        tools.append(f"an ntuple rule: ethtool -N {name} flow-type ... action {min(owned)}")
    except OSError:
        pass
    return tools


def _queues_key(config, name: str) -> str:
    for i, iface in enumerate(getattr(config, "interfaces", ())):
        if iface.name == name:
            return f"interfaces[{i}].queues"
    return f"the queues of {name}"


def check_steering(before: dict, after: dict, seconds: float, config=None,
                   host=None) -> list[Finding]:
    findings = []
    deltas = _verdict_deltas(before, after)
    queue_workers: dict[tuple[str, int], list[dict]] = {}
    for w in after.get("workers", []):
        queue_workers.setdefault((w["netdev"], w["queue"]), []).append(w)
    for iface in after.get("interfaces", []):
        name = iface["name"]
        owned = iface["queues"]
        if "xdp_packets" not in iface:
            continue
        bad = False
        for q, d in sorted(deltas.get(name, {}).items()):
            if q not in owned and d["passed"] > 0:
                bad = True
                tools = steering_tools(host, name, owned, iface["rx_queues"]) if owned else []
                how = f" ({'; or '.join(tools)})" if tools else ""
                findings.append(Finding(
                    "steering", "warn", f"{name}/q{q}",
                    f"mis-steered: traffic on {name} queue {q} ({_rate(d['passed'], seconds)}), "
                    "which xdpd does not own; the kernel gets it",
                    f"steer it to queues {queue_list(owned)}{how} or add queue {q} to "
                    f"{_queues_key(config, name)}"))
            elif q in owned and d["no_socket"] > 0:
                bad = True
                w = min(queue_workers.get((name, q), []),    # the owner, with fanout
                        key=lambda w: w.get("member", 0), default={})
                findings.append(Finding(
                    "steering", "error", f"{name}/q{q}",
                    f"traffic on an owned queue with no socket ({_rate(d['no_socket'], seconds)}; "
                    f"worker {w.get('state', 'missing')}): fallback {iface.get('fallback')} "
                    "applies",
                    "see the worker finding and the xdpd log; xdpd restores the socket when "
                    "the worker runs again"))
            elif q in owned and d["fanout_to_owner"] > 0:
                bad = True
                gone = [f"{w['name']} ({w['state']})" for w in queue_workers.get((name, q), [])
                        if w.get("member", 0) and w["state"] != "running"]
                findings.append(Finding(
                    "steering", "warn", f"{name}/q{q}",
                    f"fanout: {_rate(d['fanout_to_owner'], seconds)} of the queue's traffic "
                    "goes to its owner because a member has no socket"
                    + (f": {', '.join(gone)}" if gone else ""),
                    "see the worker finding and the xdpd log; the member's share returns to "
                    "it when it runs again"))
        if not bad:
            findings.append(Finding("steering", "ok", name,
                                    "no traffic on queues xdpd does not own, none on owned queues without a socket"))
    return findings


def check_sockets(before: dict, after: dict, seconds: float) -> list[Finding]:
    findings = []
    old = _by(before.get("workers", []), "name")
    for w in after.get("workers", []):
        p = old.get(w["name"])
        if p is None:
            continue
        name = w["name"]

        def rise(key: str) -> int:          # an XDP_STATISTICS counter
            return max(0, w.get("xsk", {}).get(key, 0) - p.get("xsk", {}).get(key, 0))

        dropped, full = rise("rx_dropped"), rise("rx_ring_full")
        empty = rise("rx_fill_ring_empty_descs")
        invalid = rise("rx_invalid_descs") + rise("tx_invalid_descs")
        bad = max(0, w.get("bad_descriptors", 0) - p.get("bad_descriptors", 0))
        if full:
            findings.append(Finding(
                "redirect", "warn", name,
                f"RX ring full: the kernel dropped {full} packets in {seconds:.1f} s "
                "(XDP_STATISTICS rx_ring_full)",
                "the worker is not keeping up: give it a CPU of its own (workers.cpus), "
                "raise rings.rx, or spread the traffic over more queues"))
        if dropped:
            findings.append(Finding(
                "redirect", "warn", name,
                f"the socket dropped {dropped} packets in {seconds:.1f} s "
                "(XDP_STATISTICS rx_dropped: longer than a frame, or no free frame)",
                "see the mtu and fill_ring findings"))
        if empty:
            findings.append(Finding(
                "fill_ring", "warn", name,
                f"FILL ring ran empty {empty} times in {seconds:.1f} s: packets arrived with "
                "no frame to put them in",
                "raise umem.frames_per_worker and rings.fill, or give the worker a CPU "
                "of its own (workers.cpus)"))
        if invalid or bad:
            findings.append(Finding(
                "descriptors", "error", name,
                f"{invalid} descriptors the kernel refused, {bad} xdpd refused, in "
                f"{seconds:.1f} s: frames are being lost",
                "a bug: report it with 'xdpd status --json' and the log"))
    if not findings and after.get("workers"):
        findings.append(Finding("sockets", "ok", "workers",
                                "no socket drops, FILL-ring starvation or bad descriptors"))
    return findings


def check_same_file(config, status: dict) -> list[Finding]:
    """The static checks judged the file doctor read; say so when the
    daemon runs another one."""
    running = (status.get("config") or {}).get("path")
    if not running or not os.path.isabs(running) or \
            os.path.realpath(running) == os.path.realpath(config.source):
        return []
    return [Finding("config", "warn", "xdpd",
                    f"the running xdpd uses {running}, the static checks read {config.source}",
                    f"xdpd doctor --config {running}")]


# --- running it ----------------------------------------------------------------

class DoctorHost:
    """The real host plus what only doctor asks: the XDP mode attached now."""

    def __init__(self, host=None):
        self._host = host or Host()

    def __getattr__(self, name):
        return getattr(self._host, name)

    def xdp_attached_mode(self, name: str) -> str | None:
        try:
            return query_xdp(self._host.ifindex(name))["mode"]
        except OSError:
            return None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


@dataclass
class Report:
    findings: list[Finding]
    live: str               # what the live part did, in words

    @property
    def worst(self) -> str:
        return worst(self.findings)

    def lines(self, verbose: bool = False) -> list[str]:
        out = [f.line() for f in self.findings if verbose or f.level != "ok"]
        counts = {lv: sum(f.level == lv for f in self.findings) for lv in LEVELS}
        out.append(f"doctor: {_count(counts['error'], 'error')}, "
                   f"{_count(counts['warn'], 'warning')}, {counts['ok']} ok; {self.live}")
        return out

    def as_dict(self) -> dict:
        return {"worst": self.worst, "live": self.live,
                "findings": [f.as_dict() for f in self.findings]}


def diagnose(config, host, ask: Callable[[], dict] | None, seconds: float = DEFAULT_SECONDS,
             sleep: Callable[[float], None] = time.sleep) -> Report:
    """Static checks, then live ones if ask() (one `status` request) answers.
    ask raises ControlError when no daemon answers."""
    before = None
    live = "no daemon asked"
    if ask is not None:
        try:
            before = ask()
        except ControlError as e:
            live = f"live checks skipped: {e}"
    findings = static_checks(config, host, before)
    if before is not None:
        sleep(seconds)
        try:
            after = ask()
        except ControlError as e:
            findings.append(Finding("daemon", "error", "xdpd",
                                    f"stopped answering during the sample: {e}",
                                    "see the xdpd log"))
            return Report(findings, "live checks cut short")
        if after.get("pid") != before.get("pid"):
            findings.append(Finding("daemon", "warn", "xdpd",
                                    f"restarted during the sample (pid {before.get('pid')} "
                                    f"-> {after.get('pid')})",
                                    "run doctor again; if it keeps happening, see the xdpd log"))
            return Report(findings, "live checks cut short")
        # the daemon's own clock: the time between the two samples
        took = after.get("uptime_seconds", 0) - before.get("uptime_seconds", 0)
        if took <= 0:
            took = seconds
        findings += live_checks(config, before, after, took, host)
        findings += check_same_file(config, after)
        live = f"live: {took:.1f} s sample of xdpd pid {after.get('pid')}"
    return Report(findings, live)

