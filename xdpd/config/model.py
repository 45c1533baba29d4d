"""The configuration model: frozen dataclasses, limits, and what a reload
does with each key.

Owns: the shape of a checked configuration (Config and its parts), the
limits shared with the C side (MAX_*, checked by tests/unit/test_limits.py),
and each field's reload class (live/restart/identity/meta), declared with the
field itself.
Must not: read files, parse YAML or ask the host anything.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from typing import Literal

__all__ = [
    "Config", "ConfigError", "FlowRule", "ForwardRule", "InterfaceConfig", "Match",
    "MetricsConfig", "RingsConfig", "SteeringConfig", "UmemConfig", "WorkerPlan", "WorkersConfig",
    "worker_name",
]


# The XDP program keeps per-queue state for queues 0..255 (XDPD_MAX_QUEUES in
# bpf/rr_redirect.h) and passes anything above to the kernel.
MAX_QUEUE = 255
# IFNAMSIZ - 1: the kernel's limit on a netdev name, in bytes.
MAX_NETDEV_NAME = 15

XDP_MODES = ("native", "generic", "auto")
ZERO_COPY = ("on", "off", "auto")
# Partial TCP/UDP checksums (a local stack's, through a veth or tap with TX
# offload on): complete them, leave them, or auto (complete on every
# interface that is not a NIC's own netdev: a wire never delivers them)
CHECKSUM_MODES = ("auto", "complete", "off")
FALLBACKS = ("pass", "drop")
# How the XDP program spreads a queue's packets over its fanout members:
# flow_hash keeps each flow on one member and so in order; round_robin does not
FANOUT_SPREADS = ("flow_hash", "round_robin")
ACTIONS = ("forward", "drop")
IDLE = ("adaptive", "sleep", "spin")
PLACEMENTS = ("adaptive", "by_queue", "spread")   # workers.placement (config/plan.py)
HUGEPAGES = ("on", "off", "auto")
# umem.multi_buffer: descriptor chains (XDP_USE_SG) for packets longer than a
# frame; auto: when an interface's MTU needs them
MULTI_BUFFER = ("auto", "on", "off")
# The descriptors one packet may take in copy mode: MAX_SKB_FRAGS + 1, the
# kernel's limit on a TX chain (include/linux/skbuff.h; 17 + 1 unless the
# kernel was built with CONFIG_MAX_SKB_FRAGS).  Zero-copy: the NIC's
# xdp-zc-max-segs (netdev netlink).
COPY_MAX_SEGS = 18
FRAME_SIZES = (2048, 4096)
# XDP_PACKET_HEADROOM: in copy mode the kernel writes a packet 256 bytes into
# its frame, so a frame holds frame_size - 256 bytes of packet.
XDP_HEADROOM = 256
# The longest frame an egress takes: its MTU plus the Ethernet header and
# one VLAN tag (what veth and most drivers accept; longer frames would be
# dropped silently by the kernel after TX, so the fast path counts them as
# too_long instead).
L2_OVERHEAD = 14 + 4

# Interfaces xdpd serves at once (FP_MAX_NETDEVS in xdpd/datapath/fastpath.h: rows of
# the forwarding table).
MAX_NETDEVS = 64
# Match rules per interface in `pass_to_kernel` (XDPD_MAX_PASS_RULES in
# bpf/rr_redirect.h: the XDP program tries at most this many per packet).
MAX_PASS_RULES = 16
# Forward rules per ingress interface (FP_MAX_RULES in xdpd/datapath/fastpath.h: the
# fast path tries at most this many per packet, first match wins).
MAX_FORWARD_RULES = 16
# Sockets (workers) sharing one rx queue: XDPD_MAX_FANOUT in bpf/rr_redirect.h
# and FP_MAX_FANOUT in xdpd/datapath/fastpath.h.
MAX_FANOUT = 16
# Worker slots in the control area, spare ones included (FP_MAX_WORKERS in
# xdpd/datapath/fastpath.h).
MAX_WORKERS = 256

EXAMPLE = "config/xdpd.yaml"
MAC_EXAMPLE = "02:00:00:00:00:04"


class ConfigError(Exception):
    """All problems found in a configuration, not just the first."""

    def __init__(self, errors: list[str]):
        super().__init__(errors)
        self.errors = list(errors)  # each one a complete message line

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --- the frozen model ---------------------------------------------------------

# What a reload does when a key changes, declared with the key itself (the
# dataclass field's metadata), for every field of Config, InterfaceConfig and
# SteeringConfig: reload.diff reads nothing else, and a unit test refuses a
# field declared without one (tests/unit/test_reload_diff.py), so a new key cannot
# be taken by a reload and silently never applied.
#   live(how)     a running xdpd applies it; `how` names the step in reload.diff
#   restart(why)  a reload refuses it, saying why (and to restart)
#   identity      it names the thing: a changed name is a removal and an addition
#   meta          not configuration (where it was read from)
RELOAD_STEPS = ("interfaces", "workers", "rules", "queue_conf", "pass_rules",
                "steering", "checksum")


def live(how: str, **kw):
    if how not in RELOAD_STEPS:
        raise ValueError(f"live({how!r}): not a reload step ({', '.join(RELOAD_STEPS)})")
    return field(metadata={"reload": "live", "how": how}, **kw)


def restart(why: str, **kw):
    return field(metadata={"reload": "restart", "why": why}, **kw)


def identity(**kw):
    return field(metadata={"reload": "identity"}, **kw)


def meta(**kw):
    return field(metadata={"reload": "meta"}, **kw)


def reload_class(f) -> tuple[str, str]:
    """(kind, how or why) of a dataclass field; KeyError without one."""
    m = f.metadata
    return m["reload"], m.get("how") or m.get("why") or ""


def keys(section) -> tuple[str, ...]:
    """The YAML keys of a section: its dataclass's fields in order, by the
    name the file uses (metadata "key": `from` for from_), leaving out what
    is not read from the file (meta() fields, metadata "derived").  The
    schema walk takes its allowed keys from here, so a key is declared once,
    with its type and default."""
    return tuple(f.metadata.get("key", f.name) for f in fields(section)
                 if f.metadata.get("reload") != "meta" and not f.metadata.get("derived"))


@dataclass(frozen=True)
class FlowRule:
    """One ntuple rule (`ethtool -N NAME flow-type ...`): matching packets go to `queue`."""
    type: str                   # tcp4 | udp4 | tcp6 | udp6
    queue: int
    src_ip: str | None = None   # compressed text form (ipaddress), None: any
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None


@dataclass(frozen=True)
class SteeringConfig:
    """What xdpd asks the NIC for at start (steering.py) and undoes at stop."""
    # `ethtool -L NAME combined N` (or rx/tx N)
    channels: int | None = restart("the channel count is the queue count the running "
                                   "workers and sockets were set up on", default=None)
    # RSS indirection over these queues only
    rss_queues: tuple[int, ...] | None = live("steering", default=None)
    flows: tuple[FlowRule, ...] = live("steering", default=())

    @property
    def empty(self) -> bool:
        return self.channels is None and self.rss_queues is None and not self.flows


@dataclass(frozen=True)
class InterfaceConfig:
    name: str = identity()
    # explicit queues are ascending; a reload adds and removes their workers
    queues: Literal["all"] | tuple[int, ...] = live("workers", default="all")
    # native | generic | auto
    xdp_mode: str = restart("the XDP program stays attached in the mode it was "
                            "attached in", default="auto")
    # on | off | auto
    zero_copy: str = restart("all sockets share one UMEM and so one copy/zero-copy "
                             "mode", default="auto")
    # verdict for an owned queue whose socket is gone (the queue's config in
    # the XDP program: a map write)
    fallback: str = live("queue_conf", default="pass")
    # packets on owned queues that match any of these stay with the kernel
    pass_to_kernel: tuple[Match, ...] = live("pass_rules", default=())
    steering: SteeringConfig = live("steering", default_factory=SteeringConfig)
    # workers (AF_XDP sockets) sharing each owned queue: member 0, the owner,
    # has the queue's FILL and COMPLETION rings and the others receive into
    # its frames; the XDP program spreads the queue's packets over them
    fanout: int = restart("the sockets sharing a queue are bound together: the owner's "
                          "FILL and COMPLETION rings serve them all", default=1)
    # flow_hash | round_robin; unused at fanout 1
    fanout_spread: str = live("queue_conf", default="flow_hash")
    # auto | complete | off (CHECKSUM_MODES): a flag of its netdev in the table
    checksum: str = live("checksum", default="auto")


# Names a match accepts for ethertype and ip_proto, and the numbers they stand for.
ETHERTYPES = {"arp": 0x0806, "ipv4": 0x0800, "ipv6": 0x86DD}
IP_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
# 802.1Q and 802.1ad: tags, not the ethertype of what a packet carries
VLAN_ETHERTYPES = (0x8100, 0x88A8)
MAX_VLAN = 4095
VLAN_NONE = "none"


@dataclass(frozen=True)
class Match:
    """What a packet must look like; every field given must match, None is
    "any".  One model for every place a config selects packets.

    ethertype is what the packet carries after up to two VLAN tags; vlan is
    the id in the outer tag, or VLAN_NONE for an untagged packet.  A src/dst
    prefix implies the ethertype of its family; ports are TCP's or UDP's."""
    ethertype: int | None = None
    vlan: int | Literal["none"] | None = None
    ip_proto: int | None = None
    src: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    src_port: int | None = None
    dst_port: int | None = None

    def describe(self) -> str:
        """The match in words, for `xdpd status` and the log."""
        names = {v: k for k, v in ETHERTYPES.items()}
        protos = {v: k for k, v in IP_PROTOS.items()}
        words = []
        if self.ethertype is not None:
            words.append(names.get(self.ethertype, f"ethertype 0x{self.ethertype:04x}"))
        if self.vlan == VLAN_NONE:
            words.append("untagged")
        elif self.vlan is not None:
            words.append(f"vlan {self.vlan}")
        if self.ip_proto is not None:
            words.append(protos.get(self.ip_proto, f"ip proto {self.ip_proto}"))
        for key in ("src", "dst", "src_port", "dst_port"):
            value = getattr(self, key)
            if value is not None:
                words.append(f"{key.replace('_', ' ')} {value}")
        return " ".join(words)

    @property
    def family_ethertype(self) -> int | None:
        """The ethertype a src/dst prefix implies (IPv4 or IPv6), else None."""
        prefix = self.src or self.dst
        if prefix is None:
            return None
        return ETHERTYPES["ipv4"] if prefix.version == 4 else ETHERTYPES["ipv6"]


@dataclass(frozen=True)
class ForwardRule:
    # position in `forward`, for messages and metrics
    index: int = field(metadata={"derived": True})
    from_: str = field(metadata={"key": "from"})
    action: str                 # forward | drop
    to: str | None = None       # set exactly when action == "forward"
    set_dst_mac: bytes | None = None
    set_src_mac: bytes | None = None
    swap_macs: bool = False
    match: Match | None = None  # None: every packet from `from_`
    push_vlan: int | None = None    # VLAN id of a tag pushed after the MACs
    vlan_proto: str = "802.1q"      # of the pushed tag: 802.1q | 802.1ad
    pop_vlan: bool = False          # remove the outer tag (untagged: unchanged)


# workers.sched_slice_us: the kernel's bounds for a SCHED_OTHER task's
# sched_runtime (kernel/cpuidle.py keeps the same)
SCHED_SLICE_US = (100, 100_000)


@dataclass(frozen=True)
class WorkersConfig:
    AUTO_TX_BUDGET = 256        # measured best in the veth lab (docs/PERFORMANCE.md)

    cpus: Literal["auto"] | tuple[int, ...] = "auto"  # in the order given
    # by_queue: the k-th worker of every interface takes the k-th CPU of
    # `cpus`, so a forwarded exchange (queue k in, queue k out) stays on one
    # CPU; spread: every worker the next CPU; adaptive: by queue, spread
    # while forwarding keeps a shared CPU busy (config/plan.py)
    placement: str = "adaptive"
    batch_size: int = 64
    idle: str = "adaptive"      # adaptive | sleep | spin
    busy_poll: bool = False     # SO_PREFER_BUSY_POLL: the worker drives NAPI itself
    # a worker outside fanout groups sends what it forwards on a TX socket of
    # its own on the egress queue (one wake-up per hop, not two); false:
    # hands it to the egress queue's worker
    direct_tx: bool = True
    # the workers placed on one CPU by queue run in one process while they
    # share it: one loop and one poll() for their ports, no switch between
    # processes per packet (control/hosting.py); false: a process each
    share_process: bool = True
    busy_poll_usecs: int = 20   # SO_BUSY_POLL
    busy_poll_budget: int = 64  # SO_BUSY_POLL_BUDGET
    user: str = "nobody"        # workers and standbys run as this user...
    group: str | None = None    # ...and group (None: the user's primary group)
    # XDP_MAX_TX_SKB_BUDGET: "auto" (256, capped at rings.tx, where the
    # kernel has it), 0 (the kernel's default, 32) or a number
    tx_budget: Literal["auto"] | int = "auto"
    # while a worker moves packets, its CPU's wake-up latency is capped at
    # this (PM QoS resume latency; 0: the idle CPU polls instead of
    # halting); None: CPUs' idle states are left alone (control/wake.py)
    cpu_wake_latency_us: int | None = 0
    # each worker's scheduler slice (EEVDF, Linux 6.12+): short, so that a
    # woken worker preempts a busy task on its CPU; None: the kernel's
    sched_slice_us: int | None = 100


@dataclass(frozen=True)
class UmemConfig:
    frame_size: int = 2048       # 2048 fits a 1500-byte MTU; 4096 for jumbo frames
    frames_per_worker: int = 4096
    hugepages: str = "auto"     # on | off | auto
    # descriptor chains for packets longer than a frame: auto (when an
    # interface's MTU + 18 B of headers exceeds a frame less its 256 B
    # headroom) | on | off
    multi_buffer: str = "auto"
    # worker slots beyond the configured workers: the UMEM and the control
    # area are sized once, at start, so a reload can add at most this many
    # (netdev, queue) workers without a restart
    spare_workers: int = 2


@dataclass(frozen=True)
class RingsConfig:
    rx: int = 2048
    tx: int = 2048
    fill: int = 4096
    completion: int = 4096


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[str, int] | None = ("127.0.0.1", 9464)  # host without brackets


@dataclass(frozen=True)
class ControlConfig:
    socket: str = "/run/xdpd/xdpd.sock"     # unix socket of `xdpd reload/status/top`
    # a group whose members may ask read-only commands (status, top); root
    # alone when None
    status_group: str | None = None


@dataclass(frozen=True)
class Config:
    interfaces: tuple[InterfaceConfig, ...] = live("interfaces")
    forward: tuple[ForwardRule, ...] = live("rules")
    workers: WorkersConfig = restart("worker settings are fixed when the workers and "
                                     "sockets are set up", default_factory=WorkersConfig)
    umem: UmemConfig = restart("the UMEM is registered with the kernel once, at start",
                               default_factory=UmemConfig)
    rings: RingsConfig = restart("ring sizes are fixed when the sockets are bound, at start",
                                 default_factory=RingsConfig)
    metrics: MetricsConfig = restart("the metrics endpoint is bound at start",
                                     default_factory=MetricsConfig)
    control: ControlConfig = restart("the control socket is bound at start",
                                     default_factory=ControlConfig)
    source: str = meta(default="<config>")     # the file name, as the operator gave it

    def interface(self, name: str) -> InterfaceConfig:
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        raise KeyError(f"netdev {name!r} is not configured")

    def rule_for(self, netdev: str) -> ForwardRule | None:
        """The first rule for packets arriving on `netdev`."""
        return next((rule for rule in self.forward if rule.from_ == netdev), None)

    def rules_for(self, netdev: str) -> tuple[ForwardRule, ...]:
        """The rules for packets arriving on `netdev`, in the file's order:
        the fast path takes the first whose match the packet fits."""
        return tuple(rule for rule in self.forward if rule.from_ == netdev)


@dataclass(frozen=True)
class WorkerPlan:
    netdev: str
    queue: int
    cpu: int
    name: str                   # worker_name(...): the worker's name everywhere
    member: int = 0             # of the sockets sharing the queue; 0 is the owner
    fanout: int = 1             # the interface's fanout: members on this queue
    # workers.placement adaptive: the CPU the worker moves to while the one
    # it shares is busy (its CPU in the spread layout); None: it stays
    spread_cpu: int | None = None

    @property
    def movable(self) -> bool:
        """Adaptive placement moves this worker to another CPU while busy."""
        return self.spread_cpu is not None and self.spread_cpu != self.cpu

    @property
    def lane(self) -> int:
        """Distinct per (queue, member) on the netdev; the fast path picks an
        egress worker with it."""
        return self.queue * self.fanout + self.member

    @property
    def owner_name(self) -> str:
        """The name of member 0 of this queue: the worker whose FILL and
        COMPLETION rings serve the whole queue (this one when member is 0)."""
        return worker_name(self.netdev, self.queue, 0, self.fanout)


def worker_name(netdev: str, queue: int, member: int = 0, fanout: int = 1) -> str:
    """`in0/q0` without fanout; with fanout every member, owner included, is
    numbered: `in0/q0.0`, `in0/q0.1`, ..."""
    if fanout == 1:
        return f"{netdev}/q{queue}"
    return f"{netdev}/q{queue}.{member}"


FLOW_TYPES = ("tcp4", "udp4", "tcp6", "udp6")
# ETHTOOL_SCHANNELS takes a __u32; no NIC has more queues than the XDP program keeps
MAX_CHANNELS = MAX_QUEUE + 1
# the TPID of a pushed tag, by the name a rule gives it
VLAN_PROTOS = {"802.1q": 0x8100, "802.1ad": 0x88a8}
_ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")
MAX_SPARE_WORKERS = 64


