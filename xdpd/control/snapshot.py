"""One immutable picture of the daemon per loop turn: `xdpd status` and the
metrics endpoint both read it.

The supervisor's loop takes a snapshot (Snapshotter.take) at most every
SNAPSHOT_S, at once when a status request arrives, and after start and
each reload.  The metrics thread reads the latest one (Supervisor.snapshot:
one reference, swapped whole) and never touches the supervisor's live
fields or the control area, so there is no lock between the two threads
and no fact is gathered twice: a worker's packets in `xdpd status` and in
xdpd_rx_packets_total come from the same read.

Owns: Snapshot (and the views of a worker and an interface in it), the
rates over RATE_WINDOW_S, the status document (schema STATUS_SCHEMA: keys
are only ever added), and worker_stats(), the per-worker counters with
direct sends folded into the egress queue's.
Must not: change anything it reads; the snapshot's dicts are not changed
after take() returns (a reader that wants to change one copies it).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from xdpd import __version__
from xdpd.control.workers import WorkerState, worker_rule_counts
from xdpd.kernel.xdp_program import XDPD_MAX_QUEUES

log = logging.getLogger("xdpd.supervisor")

STATUS_SCHEMA = 1
SNAPSHOT_S = 0.5                    # the loop takes one at least this often
RATE_WINDOW_S = 1.0                 # status rates: over about this long


@dataclass(frozen=True)
class WorkerView:
    id: int
    name: str
    netdev: str
    queue: int
    member: int
    cpu: int
    state: str                      # WorkerState's value
    pid: int | None                 # of the running process, None when there is none
    process: bool                   # a process is there (running or not yet reaped)
    started_wall: float             # time.time() of its start
    restarts: int
    standby_pid: int | None
    standby_ready: bool
    stats: dict                     # worker_stats(): counters, drops by reason
    rates: tuple[float, float, float]   # rx, tx, drops per second
    xsk: dict                       # XDP_STATISTICS of its socket ({} if unreadable)
    rings: dict                     # entries in use per ring
    rules: tuple                    # (ForwardRule, packets, bytes) per rule of its netdev
    direct_sockets: tuple[str, ...]
    usage: dict | None              # CPU and memory it reported of itself
    hosted_by: str | None = None    # the worker whose process runs its port (hosting.py)


@dataclass(frozen=True)
class InterfaceView:
    name: str
    ifindex: int
    xdp_mode: str
    queues: tuple[int, ...]
    rx_queues: int
    fallback: str | None
    fanout: int
    fanout_spread: str | None
    pass_to_kernel: tuple[str, ...]
    rule: str                       # describe_rule(): the rules in words
    xdp_packets: tuple[dict, ...]   # the XDP program's verdicts per rx queue


@dataclass(frozen=True)
class Snapshot:
    taken: float                    # time.monotonic()
    wall: float                     # time.time()
    pid: int
    started_wall: float
    ready: bool
    config_path: str
    generation: int
    last_reload: dict | None
    last_reload_success: float
    reloads: dict
    internal_errors: dict
    zero_copy: bool
    umem: dict
    ring_sizes: dict                # ring -> entries, {} before the sockets exist
    interfaces: tuple[InterfaceView, ...]
    workers: tuple[WorkerView, ...]
    rules: tuple[dict, ...] = field(default=())     # per rule, summed over workers
    captures: tuple[dict, ...] = field(default=())  # running `xdpd capture` sessions
    capture_totals: dict = field(default_factory=dict)  # of the ended ones: records
    # workers.cpu_wake_latency_us and the CPUs held at it now (control/wake.py)
    cpu_wake: dict = field(default_factory=dict)
    # workers.placement, and with adaptive whether the workers are spread
    placement: dict = field(default_factory=dict)

    def status(self) -> dict:
        """The answer to `xdpd status`; its JSON form is documented in the
        README (schema 1: keys are only ever added)."""
        now = self.wall
        workers = [{
            "name": w.name, "netdev": w.netdev, "queue": w.queue, "member": w.member,
            "cpu": w.cpu, "pid": w.pid, "state": w.state,
            "uptime_seconds": round(now - w.started_wall, 3) if w.pid is not None else None,
            "restarts": w.restarts, "standby_pid": w.standby_pid,
            "standby_ready": w.standby_ready,
            "rx_packets": w.stats["rx_packets"], "tx_packets": w.stats["tx_packets"],
            "rx_bytes": w.stats["rx_bytes"], "tx_bytes": w.stats["tx_bytes"],
            "rx_fragments": w.stats["rx_frags"],
            "drops": dict(w.stats["drops"]),
            "rx_pps": round(w.rates[0], 1), "tx_pps": round(w.rates[1], 1),
            "drop_pps": round(w.rates[2], 1), "xsk": dict(w.xsk),
            "bad_descriptors": w.stats["bad_descs"],
            "checksums_completed": w.stats["csum_completed"],
            "direct_tx_packets": w.stats["direct_tx_packets"],
            "direct_sockets": list(w.direct_sockets), "hosted_by": w.hosted_by,
            "rings": dict(w.rings)} for w in self.workers]
        interfaces = [{
            "name": i.name, "ifindex": i.ifindex, "xdp_mode": i.xdp_mode,
            "socket_mode": "zero-copy" if self.zero_copy else "copy",
            "queues": list(i.queues), "rx_queues": i.rx_queues, "fallback": i.fallback,
            "fanout": i.fanout, "fanout_spread": i.fanout_spread,
            "pass_to_kernel": list(i.pass_to_kernel), "rule": i.rule,
            "xdp_packets": [dict(q) for q in i.xdp_packets]} for i in self.interfaces]
        umem = {k: v for k, v in self.umem.items() if k != "capacity"}
        umem["frames_by_location"] = dict(umem["frames_by_location"])
        return {
            "schema": STATUS_SCHEMA, "version": __version__, "pid": self.pid,
            "uptime_seconds": round(now - self.started_wall, 3), "ready": self.ready,
            "config": {"path": self.config_path, "generation": self.generation},
            "last_reload": self.last_reload, "umem": umem,
            "interfaces": interfaces, "workers": workers,
            "rules": [dict(r) for r in self.rules],
            "captures": [dict(c) for c in self.captures],
            "cpu_wake": dict(self.cpu_wake), "placement": dict(self.placement)}


def worker_stats(sup) -> dict[int, dict]:
    """Every worker's counters (Control.worker_stats), with what others
    sent on its queue through their direct sockets counted as its
    transmissions (tx_packets, tx_bytes: the netdev's), and what it
    sent on its own in all as direct_tx_packets."""
    stats = {w.id: sup.umem.control.worker_stats(w.id) for w in sup.workers}
    for wid, (packets, bytes_) in sup.direct_carried.items():
        if wid in stats:
            stats[wid]["tx_packets"] += packets
            stats[wid]["tx_bytes"] += bytes_
    for w in sup.workers:
        mine = stats[w.id]
        mine["direct_tx_packets"] = sum(mine["direct_packets"])
        for j, d in enumerate(w.direct):
            if d.owner in stats:
                stats[d.owner]["tx_packets"] += mine["direct_packets"][j]
                stats[d.owner]["tx_bytes"] += mine["direct_bytes"][j]
    return stats


def describe_rule(config, netdev: str) -> str:
    """The rules for `netdev` in words, for `xdpd status`: one, or several
    ("udp dst port 53: forward to eth1; drop"), tried in that order."""
    rules = config.rules_for(netdev)
    if not rules:
        return "drop (no rule)"
    return "; ".join((f"{r.match.describe()}: " if r.match else "") + _describe_action(r)
                     for r in rules)


def _describe_action(rule) -> str:
    if rule.action == "drop":
        return "drop"
    what = [f"forward to {rule.to}"]
    if rule.swap_macs:
        what.append("swap MACs")
    if rule.set_dst_mac:
        what.append("dst MAC " + rule.set_dst_mac.hex(":"))
    if rule.set_src_mac:
        what.append("src MAC " + rule.set_src_mac.hex(":"))
    if rule.push_vlan is not None:
        what.append(f"push vlan {rule.push_vlan}"
                    + (f" ({rule.vlan_proto})" if rule.vlan_proto != "802.1q" else ""))
    if rule.pop_vlan:
        what.append("pop vlan")
    return ", ".join(what)


def xdp_packets(iface) -> tuple[dict, ...]:
    """The XDP program's verdicts per rx queue, owned or not: traffic on a
    queue xdpd does not own shows as `passed` (xdpd doctor reads it)."""
    out = []
    for q in range(min(iface.rx_queues, XDPD_MAX_QUEUES)):
        try:
            st = iface.program.queue_stats(q)
        except OSError:         # the map read failed: leave the queue out
            continue
        out.append({"queue": q, **st})      # every verdict counter of the map
    return tuple(out)


class Snapshotter:
    """Takes the snapshots, and keeps the few past counter samples the rates
    need (per worker id: (time, rx, tx, drops))."""

    def __init__(self):
        self._samples: dict[int, list[tuple[float, int, int, int]]] = {}
        self._sg_drops: dict[str, int] = {}     # worker name -> rx_dropped first seen
        self._sg_warned: set[str] = set()

    def _watch_sg_drops(self, name: str, dropped: int) -> None:
        """With multi-buffer on, packets the kernel drops at a socket for
        another reason than an empty FILL ring (dropped: rx_dropped less
        rx_fill_ring_empty_descs; what is left in copy mode is a packet
        longer than a frame on a socket without XDP_USE_SG): say once per
        worker what that means and the fix, rather than leave it to a
        counter.  A kernel that does not pass XDP_USE_SG to the sockets
        sharing the UMEM (before upstream 93e84fe45b75) does this to every
        worker's socket but the first."""
        if name in self._sg_warned:
            return
        first = self._sg_drops.setdefault(name, dropped)
        if dropped > first:
            self._sg_warned.add(name)
            log.warning("%s: the kernel dropped %d packets at this socket with multi-buffer "
                        "on (XDP_STATISTICS rx_dropped, not for an empty FILL ring): a kernel that does not give sockets "
                        "sharing a UMEM multi-buffer (XDP_USE_SG; fixed upstream in "
                        "93e84fe45b75) drops every packet longer than a frame there; upgrade "
                        "the kernel, or set umem.multi_buffer: off and an MTU that fits one "
                        "frame", name, dropped - first)

    def forget(self, wid: int) -> None:
        """Worker slot wid was released: its samples go with it."""
        self._samples.pop(wid, None)

    def due(self, last: Snapshot | None, now: float) -> bool:
        return last is None or now - last.taken >= SNAPSHOT_S

    def take(self, sup) -> Snapshot:
        now, wall = time.monotonic(), time.time()
        all_stats = worker_stats(sup)
        umem_control = sup.umem.control
        rules: dict[int, dict] = {}     # by index in `forward`, summed over workers
        views = []
        for w in sorted(sup.workers, key=lambda w: (w.plan.netdev, w.plan.queue,
                                                    w.plan.member)):
            stats = all_stats[w.id]
            try:
                xsk = w.socket.statistics()
            except OSError:
                xsk = {}
            if sup.multi_buffer and "rx_dropped" in xsk:
                self._watch_sg_drops(w.name, xsk["rx_dropped"] -
                                     xsk.get("rx_fill_ring_empty_descs", 0))
            running = w.proc is not None and w.state in (WorkerState.RUNNING,
                                                        WorkerState.STARTING,
                                                        WorkerState.DRAINING)
            standby_up = w.standby is not None and w.standby.poll() is None
            counted = tuple(worker_rule_counts(sup.config, umem_control, w))
            for rule, packets, bytes_ in counted:
                entry = rules.setdefault(rule.index, {
                    "index": rule.index, "from": rule.from_,
                    "match": rule.match.describe() if rule.match else None,
                    "action": rule.action, "to": rule.to, "packets": 0, "bytes": 0})
                entry["packets"] += packets
                entry["bytes"] += bytes_
            views.append(WorkerView(
                id=w.id, name=w.name, netdev=w.plan.netdev, queue=w.plan.queue,
                member=w.plan.member, cpu=w.cpu, state=w.state.value,
                pid=w.proc.pid if running else None, process=w.proc is not None,
                started_wall=w.started_wall,
                restarts=w.restarts,
                standby_pid=w.standby.pid if standby_up else None,
                standby_ready=standby_up and sup.ops.standby_ready(w.standby),
                stats=stats, rates=self._rates(w.id, now, stats), xsk=xsk,
                rings=umem_control.ring_use(w.id), rules=counted,
                direct_sockets=tuple(f"{d.netdev}/q{d.queue}" for d in w.direct
                                     if d.socket is not None),
                usage=sup.worker_usage(w.id, w.proc.pid) if w.proc is not None else None,
                hosted_by=getattr(sup.hosting.hosted_by(w), "name", None)))
        for wid in set(self._samples) - all_stats.keys():
            del self._samples[wid]              # gone: its samples with it
        interfaces = tuple(InterfaceView(
            name=i.name, ifindex=i.ifindex, xdp_mode=i.xdp_mode, queues=tuple(sorted(i.queues)),
            rx_queues=i.rx_queues, fallback=i.config.fallback if i.config else None,
            fanout=i.config.fanout if i.config else 1,
            fanout_spread=i.config.fanout_spread if i.config else None,
            pass_to_kernel=(tuple(m.describe() for m in i.config.pass_to_kernel)
                            if i.config else ()),
            rule=describe_rule(sup.config, i.name), xdp_packets=xdp_packets(i))
            for i in sorted(sup.interfaces, key=lambda i: i.name))
        geo = sup.umem.geometry
        r = sup.ring_sizes
        return Snapshot(
            taken=now, wall=wall, pid=os.getpid(), started_wall=sup.started_wall,
            ready=sup.ready, config_path=sup.config.source, generation=sup.generation,
            last_reload=sup.last_reload, last_reload_success=sup.last_reload_success,
            reloads=dict(sup.reloads), internal_errors=sup.internal_errors_now(),
            zero_copy=sup.zero_copy,
            umem={"frames": geo.frames, "frame_size": geo.frame_size, "bytes": geo.size,
                  "backing": sup.umem.backing, "worker_slots": geo.nworkers,
                  "worker_slots_used": geo.nworkers - len(sup.free_slots),
                  "frames_by_location": sup.umem.frame_locations(),
                  "max_segs": sup.max_segs, "capacity": sup.umem.capacity},
            ring_sizes={ring: getattr(r, ring) for ring in ("rx", "tx", "fill", "completion")}
            if r else {},
            interfaces=interfaces, workers=tuple(views),
            rules=tuple(rules[i] for i in sorted(rules)),
            captures=tuple(s.view() for _, s in sorted(sup.captures.items())),
            capture_totals=dict(sup.capture_totals),
            cpu_wake={"latency_us": sup.config.workers.cpu_wake_latency_us,
                      "held": sorted(sup.wake.held) if sup.wake else []},
            placement={"mode": sup.config.workers.placement,
                       "spread": sup.config.workers.placement == "spread"
                       or bool(sup.placer and sup.placer.spread),
                       "changes": sup.placer.moves if sup.placer else 0})

    def _rates(self, wid: int, now: float, stats: dict) -> tuple[float, float, float]:
        """Per second over the last RATE_WINDOW_S or so, from the samples of
        earlier snapshots; this one's counts become a sample too."""
        drops = sum(stats["drops"].values())
        samples = self._samples.setdefault(wid, [])
        rates = (0.0, 0.0, 0.0)
        if samples and now - samples[0][0] >= 0.05:
            t, rx, tx, dropped = samples[0]
            dt = now - t
            rates = ((stats["rx_packets"] - rx) / dt, (stats["tx_packets"] - tx) / dt,
                     (drops - dropped) / dt)
        samples.append((now, stats["rx_packets"], stats["tx_packets"], drops))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.pop(0)
        return rates
