"""The YAML configuration: read it, check it, freeze it.

Design
------
One loader serves `xdpd check-config`, start-up and `xdpd reload`, so an
operator gets the same answer from all three.  It works in two steps:

* parse_config() checks the schema: types, ranges, enums, and references
  between sections (a rule's `from`/`to` must name a listed interface).  It
  touches nothing on the host, so it runs unprivileged, anywhere, and the unit
  tests can pin every message down to the letter.
* check_host() asks a HostFacts object (xdpd.kernel.netdev.Host in the daemon, a
  fake in tests) whether the netdevs, queues and CPUs exist here.  It takes
  that object as an argument instead of importing the kernel-facing module,
  which keeps this module free of netlink.

Every problem found is collected and raised together in one ConfigError:
fixing a file should not take one run of the checker per typo.  A value that
fails its own check is left out of the checks that build on it, so one
mistake gives one message, not a cascade.

Every message reads `FILE: YAML.PATH: what is wrong; what to do`.  Unknown
keys are errors, never warnings: a misspelt key that silently falls back to
its default is the worst kind of configuration bug.

PyYAML implements YAML 1.1, which reads on/off/yes/no as booleans and
`12:34:56` as a base-60 integer: `zero_copy: off` would arrive as False and an
unquoted MAC such as 12:34:56:78:9a:bc as a number.  _Loader therefore takes
only true/false as booleans and only decimal or 0x-hex as integers, as YAML
1.2 does.  It also reports a key given twice in one mapping, which PyYAML
would otherwise settle by keeping the last one without a word.
"""
from __future__ import annotations

import difflib
import grp
import ipaddress
import os
import pwd
import re
import stat
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:  # a type only: importing the kernel-facing module is not needed here
    from xdpd.kernel.netdev import HostFacts

__all__ = [
    "Config", "ConfigError", "FlowRule", "ForwardRule", "InterfaceConfig", "Match",
    "MetricsConfig", "RingsConfig", "SteeringConfig", "UmemConfig", "WorkerPlan", "WorkersConfig",
    "check_host", "load_config", "parse_config", "plan_workers", "worker_name",
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
HUGEPAGES = ("on", "off", "auto")
FRAME_SIZES = (2048, 4096)

# Interfaces xdpd serves at once (FP_MAX_NETDEVS in xdpd/fastpath.h: rows of
# the forwarding table).
MAX_NETDEVS = 64
# Match rules per interface in `pass_to_kernel` (XDPD_MAX_PASS_RULES in
# bpf/rr_redirect.h: the XDP program tries at most this many per packet).
MAX_PASS_RULES = 16
# Forward rules per ingress interface (FP_MAX_RULES in xdpd/fastpath.h: the
# fast path tries at most this many per packet, first match wins).
MAX_FORWARD_RULES = 16
# Sockets (workers) sharing one rx queue: XDPD_MAX_FANOUT in bpf/rr_redirect.h
# and FP_MAX_FANOUT in xdpd/fastpath.h.
MAX_FANOUT = 16
# Worker slots in the control area, spare ones included (FP_MAX_WORKERS in
# xdpd/fastpath.h).
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
# field declared without one (tests/unit/test_reload.py), so a new key cannot
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
    index: int                  # position in `forward`, for messages and metrics
    from_: str
    action: str                 # forward | drop
    to: str | None = None       # set exactly when action == "forward"
    set_dst_mac: bytes | None = None
    set_src_mac: bytes | None = None
    swap_macs: bool = False
    match: Match | None = None  # None: every packet from `from_`
    push_vlan: int | None = None    # VLAN id of a tag pushed after the MACs
    vlan_proto: str = "802.1q"      # of the pushed tag: 802.1q | 802.1ad
    pop_vlan: bool = False          # remove the outer tag (untagged: unchanged)


@dataclass(frozen=True)
class WorkersConfig:
    AUTO_TX_BUDGET = 256        # measured best in the veth lab (docs/PERFORMANCE.md)

    cpus: Literal["auto"] | tuple[int, ...] = "auto"  # in the order given
    batch_size: int = 64
    idle: str = "adaptive"      # adaptive | sleep | spin
    busy_poll: bool = False     # SO_PREFER_BUSY_POLL: the worker drives NAPI itself
    # a worker outside fanout groups sends what it forwards on a TX socket of
    # its own on the egress queue (one wake-up per hop, not two); false:
    # hands it to the egress queue's worker
    direct_tx: bool = True
    busy_poll_usecs: int = 20   # SO_BUSY_POLL
    busy_poll_budget: int = 64  # SO_BUSY_POLL_BUDGET
    user: str = "nobody"        # workers and standbys run as this user...
    group: str | None = None    # ...and group (None: the user's primary group)
    # XDP_MAX_TX_SKB_BUDGET: "auto" (256, capped at rings.tx, where the
    # kernel has it), 0 (the kernel's default, 32) or a number
    tx_budget: Literal["auto"] | int = "auto"


@dataclass(frozen=True)
class UmemConfig:
    frame_size: int = 2048       # 2048 fits a 1500-byte MTU; 4096 for jumbo frames
    frames_per_worker: int = 4096
    hugepages: str = "auto"     # on | off | auto
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


_TOP_KEYS = ("interfaces", "forward", "workers", "umem", "rings", "metrics", "control")
_INTERFACE_KEYS = ("name", "queues", "xdp_mode", "zero_copy", "fallback", "pass_to_kernel",
                   "steering", "fanout", "fanout_spread", "checksum")
_MATCH_KEYS = ("ethertype", "vlan", "ip_proto", "src", "dst", "src_port", "dst_port")
_STEERING_KEYS = ("channels", "rss_queues", "flows")
_FLOW_KEYS = ("type", "src_ip", "dst_ip", "src_port", "dst_port", "queue")
FLOW_TYPES = ("tcp4", "udp4", "tcp6", "udp6")
# ETHTOOL_SCHANNELS takes a __u32; no NIC has more queues than the XDP program keeps
MAX_CHANNELS = MAX_QUEUE + 1
_RULE_KEYS = ("from", "to", "action", "match", "set_dst_mac", "set_src_mac", "swap_macs",
              "push_vlan", "vlan_proto", "pop_vlan")
# the TPID of a pushed tag, by the name a rule gives it
VLAN_PROTOS = {"802.1q": 0x8100, "802.1ad": 0x88a8}
_WORKERS_KEYS = ("cpus", "batch_size", "idle", "busy_poll", "busy_poll_usecs",
                 "busy_poll_budget", "tx_budget", "user", "group", "direct_tx")
_UMEM_KEYS = ("frame_size", "frames_per_worker", "hugepages", "spare_workers")
_RINGS_KEYS = ("rx", "tx", "fill", "completion")
_METRICS_KEYS = ("listen",)
_CONTROL_KEYS = ("socket", "status_group")
_ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")
MAX_SPARE_WORKERS = 64


# --- entry points -------------------------------------------------------------

def load_config(path: str, host: HostFacts | None = None) -> Config:
    """Read and check the file at `path`; with `host`, check it against the host too."""
    config = parse_config(read_config_file(path), source=path)
    if host is not None:
        check_host(config, host)
    return config


def parse_config(data: str | dict, source: str = "<config>") -> Config:
    """Check YAML text (or an already parsed mapping) against the schema."""
    errs = _Errors(source)
    if isinstance(data, str):
        if len(data) > MAX_FILE_BYTES:      # characters: at least as many bytes
            errs.line(f"{source}: {len(data)} characters; a configuration is at most "
                      f"{MAX_FILE_BYTES} bytes (a few kilobytes is usual): is this the "
                      "right file?")
            errs.raise_if_any()
        data = _load_yaml(data, errs)
        if data is _UNREADABLE:
            errs.raise_if_any()
    top = _top_level(errs, data)
    if top is None:
        errs.raise_if_any()

    suggested = _check_keys(errs, "", top, _TOP_KEYS)
    interfaces, names = _interfaces(errs, top, suggested)
    forward = _forward(errs, top, names, suggested)
    workers = _workers(errs, _section(errs, top, "workers"))
    umem = _umem(errs, _section(errs, top, "umem"))
    rings = _rings(errs, _section(errs, top, "rings"))
    metrics = _metrics(errs, _section(errs, top, "metrics"))
    control = _control(errs, _section(errs, top, "control"))
    if workers and rings and workers.tx_budget != "auto" and workers.tx_budget > rings.tx:
        errs.at("workers.tx_budget", f"{workers.tx_budget} is more than rings.tx "
                f"({rings.tx}); the kernel allows at most the TX ring size")
    errs.raise_if_any()
    return Config(interfaces=interfaces, forward=forward, workers=workers, umem=umem,
                  rings=rings, metrics=metrics, control=control, source=source)


def check_host(config: Config, host: HostFacts) -> None:
    """Raise ConfigError listing every netdev, queue and CPU this host lacks."""
    errs = _Errors(config.source)
    for i, iface in enumerate(config.interfaces):
        _check_netdev(errs, f"interfaces[{i}]", iface, host)
    if config.workers.cpus != "auto":
        online = host.online_cpus()
        for i, cpu in enumerate(config.workers.cpus):
            if cpu not in online:
                errs.at(f"workers.cpus[{i}]",
                        f"CPU {cpu} is not online (online: {format_cpulist(online)})")
    _check_worker_count(errs, config, host)
    errs.raise_if_any()


def plan_workers(config: Config, host: HostFacts) -> tuple[WorkerPlan, ...]:
    """One worker per owned (netdev, queue, fanout member), pinned
    round-robin over the CPUs.

    Order: interfaces as in the file, queues ascending, members ascending
    (the owner first), so the members of a queue land on different CPUs
    where there are enough; call check_host first.
    """
    if config.workers.cpus == "auto":
        cpus = sorted(host.online_cpus())
    else:
        cpus = list(config.workers.cpus)
    slots = [(iface, queue, member)
             for iface in config.interfaces
             for queue in _owned_queues(iface, host)
             for member in range(iface.fanout)]
    return tuple(WorkerPlan(netdev=iface.name, queue=queue, cpu=cpus[i % len(cpus)],
                            name=worker_name(iface.name, queue, member, iface.fanout),
                            member=member, fanout=iface.fanout)
                 for i, (iface, queue, member) in enumerate(slots))


def format_cpulist(cpus: frozenset[int] | set[int]) -> str:
    """The kernel's cpulist notation, as in /sys/devices/system/cpu/online: 0-3,6."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) or "none"


# --- host checks --------------------------------------------------------------

def _check_netdev(errs: _Errors, path: str, iface: InterfaceConfig, host: HostFacts) -> None:
    name = iface.name
    if not host.netdev_exists(name):
        errs.at(f"{path}.name", f"netdev {name!r} not found; see 'ip link show'")
        return
    steering = iface.steering
    if steering.channels is not None:
        # the queues are checked against the channels at parse time, the
        # channels against the driver's maximum by steering.check_steering()
        return
    if iface.queues == "all" and steering.rss_queues is None and not steering.flows:
        return
    try:
        count = host.rx_queue_count(name)
    except OSError as exc:  # the netdev went away between the two questions
        errs.at(f"{path}.queues", f"cannot count the rx queues of {name}: {exc}")
        return
    if iface.queues == "all":
        # steering refers to queues that 'all' means on this host
        owned = range(count)
        if steering.rss_queues is not None:
            _owned_refs(errs, f"{path}.steering.rss_queues", steering.rss_queues, owned, name)
        for j, rule in enumerate(steering.flows):
            if rule.queue not in owned:
                errs.at(f"{path}.steering.flows[{j}].queue", f"queue {rule.queue} is not "
                        f"owned by {name} (owned: {_queue_text(owned)}); steer only to "
                        "queues xdpd serves")
        return
    missing = [q for q in iface.queues if q >= count]
    if missing:
        what = "queue" if len(missing) == 1 else "queues"
        have = "1 rx queue" if count == 1 else f"{count} rx queues"
        errs.at(f"{path}.queues", f"{what} {', '.join(map(str, missing))} not on {name} "
                                  f"({have}; see 'ethtool -l {name}')")


def _check_worker_count(errs: _Errors, config: Config, host: HostFacts) -> None:
    """Workers (each queue's fanout members) and spare slots must fit the
    control area's MAX_WORKERS.  An interface whose queues cannot be counted
    here (its netdev missing: reported already) counts for none, so what is
    reported is a total the file needs at least."""
    counts = []
    for iface in config.interfaces:
        if iface.queues != "all":
            queues = len(iface.queues)
        elif iface.steering.channels is not None:
            queues = iface.steering.channels
        elif host.netdev_exists(iface.name):
            try:
                queues = host.rx_queue_count(iface.name)
            except OSError:     # the netdev went away meanwhile: nothing to count
                continue
        else:
            continue
        counts.append((iface, queues))
    workers = sum(queues * iface.fanout for iface, queues in counts)
    spare = config.umem.spare_workers
    if workers + spare <= MAX_WORKERS:
        return
    each = "; ".join(f"{iface.name}: {queues} {'queue' if queues == 1 else 'queues'} "
                     f"x fanout {iface.fanout}" for iface, queues in counts)
    errs.at("interfaces", f"{workers} workers ({each}) and umem.spare_workers {spare} need "
            f"{workers + spare} worker slots, more than the {MAX_WORKERS} xdpd has; lower "
            "an interface's fanout, own fewer queues or lower umem.spare_workers")


def _owned_queues(iface: InterfaceConfig, host: HostFacts) -> tuple[int, ...] | range:
    if iface.queues == "all":
        # with steering.channels, the count xdpd sets at start, not the one now:
        # planning does not depend on whether the channels are set yet
        if iface.steering.channels is not None:
            return range(iface.steering.channels)
        return range(host.rx_queue_count(iface.name))
    return iface.queues


# --- reading the file ---------------------------------------------------------

def read_config_file(path: str) -> str:
    """The file's text, if only root and the user running xdpd can change it."""
    try:
        # bytes first: a decoding error then has its offset in the file, not in a chunk
        with open(path, "rb") as f:
            # the file opened, not the name: a rename in between changes nothing
            st = os.fstat(f.fileno())
            _check_writers(path, st, f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError([f"{path}: not a regular file; give the path of the YAML "
                                   "file itself"])
            data = f.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise ConfigError([f"{path}: larger than {MAX_FILE_BYTES} bytes; a "
                                   "configuration is a few kilobytes: is this the right "
                                   "file?"])
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file; check the path, or start from {EXAMPLE}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} "
                           f"at offset {exc.start}); save it as UTF-8"]) from None


def _check_writers(path: str, st: os.stat_result, fd: int | None = None) -> None:
    """Refuse a file that others can write: it says which programs run as root
    on which netdevs and where the metrics listen, so whoever can change it
    controls xdpd.  Root may own it, and so may the user running xdpd (a
    check-config run unprivileged on one's own copy)."""
    problems = []
    mode = stat.S_IMODE(st.st_mode)
    me = os.geteuid()
    if st.st_uid not in (0, me):
        owners = "root" if me == 0 else f"root or {_user(me)}, who runs xdpd"
        problems.append(f"{path}: owned by {_user(st.st_uid)}, who can change it; the owner "
                        f"must be {owners}: run 'chown root: {path}'")
    if mode & stat.S_IWOTH:
        problems.append(f"{path}: every user can write it (mode {mode:04o}); "
                        f"run 'chmod o-w {path}'")
    if mode & stat.S_IWGRP and st.st_gid != 0:
        problems.append(f"{path}: {_group(st.st_gid)} can write it (mode {mode:04o}); "
                        f"run 'chmod g-w {path}' or 'chown root: {path}'")
    for who in _acl_writers(fd, me) if fd is not None else ():
        problems.append(f"{path}: an access control list lets {who} write it; run "
                        f"'setfacl -b {path}' (getfacl {path} shows it)")
    if problems:
        raise ConfigError(problems)


# struct posix_acl_xattr_header { u32 a_version; } then entries of
# struct posix_acl_xattr_entry { u16 e_tag; u16 e_perm; u32 e_id; } (little endian)
_ACL_USER, _ACL_GROUP, _ACL_MASK = 0x02, 0x08, 0x10
_ACL_WRITE = 0x02


def _acl_writers(fd: int, me: int) -> list[str]:
    """Users and groups other than root (and us) that a POSIX ACL lets
    write the file: named entries with the write bit, within the mask."""
    try:
        raw = os.getxattr(fd, "system.posix_acl_access")
    except OSError:                     # no ACL (ENODATA), or none supported
        return []
    entries = [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw) - 7, 8)]
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0x07)
    out = []
    for tag, perm, ident in entries:
        if not perm & mask & _ACL_WRITE:
            continue
        if tag == _ACL_USER and ident not in (0, me):
            out.append(_user(ident))
        elif tag == _ACL_GROUP and ident != 0:
            out.append(_group(ident))
    return out


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"group {grp.getgrgid(gid).gr_name!r} (gid {gid})"
    except KeyError:
        return f"group gid {gid}"


_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# The configuration is four levels deep (interfaces[0].queues[0]); PyYAML
# composes nodes recursively, so a few hundred '[' would end in RecursionError.
MAX_DEPTH = 32
# Hostile files (see docs/SECURITY.md): a configuration is a few kilobytes;
# one of MAX_FILE_BYTES is answered (a configuration or its errors) in well
# under 2 s of CPU, in the main loop during a reload.  Aliases may not expand
# the document past MAX_NODES nodes (a "billion laughs" file of a few hundred
# bytes would otherwise expand to millions), no scalar is longer than
# MAX_SCALAR (the longest setting is a path), and at most MAX_ERRORS
# messages are reported.
MAX_FILE_BYTES = 256 << 10
MAX_NODES = 50_000
MAX_SCALAR = 4096
MAX_ERRORS = 50
# No setting takes a number near 2**63; a bigger one would not even print
# (Python refuses int/str conversions beyond 4300 digits).
MAX_INT_BITS = 63

_SCALAR_KINDS = {_INT_TAG: ("!!int", "an integer"), _FLOAT_TAG: ("!!float", "a number"),
                 _BOOL_TAG: ("!!bool", "a boolean"), _TIMESTAMP_TAG: ("!!timestamp", "a date")}
_SURROGATE = re.compile("[\ud800-\udfff]")
# what datetime says about a date or time out of range, worth passing on
_DATE_REASON = re.compile(r"\w+ (?:must be in|is out of range)[\w .]*")


class _ContentError(yaml.MarkedYAMLError):
    """Well-formed YAML the loader refuses, at its place in the file: a scalar
    that is not what YAML reads it as, half a surrogate pair, deep nesting."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and integers that reports duplicate keys.

    Every failure comes out as a yaml.MarkedYAMLError, with the place in the
    file: PyYAML's own scalar constructors raise ValueError, KeyError or
    AttributeError on text like `!!int abc` or `2024-13-01`.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _INT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicate_keys: list[tuple[str, yaml.Mark, yaml.Mark]] = []
        self._depth = 0
        self._sizes: list[int] = []         # expanded size of each collection being composed
        self._total = 0                     # values composed so far, aliases expanded

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _ContentError(None, None, f"nested more than {MAX_DEPTH} levels deep; "
                                    "a configuration needs 4", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        # nodes the document stands for once every alias is expanded: an
        # alias is the node it names, counted again wherever it is used (a
        # node still in the making, named by a recursive alias, counts 1)
        size = getattr(node, "expanded", 1)
        if self._sizes:
            self._sizes[-1] += size
        self._total += size if self._depth else 0   # the whole document, as it grows
        if self._total > MAX_NODES:
            self._too_many(node)
        return node

    def _too_many(self, node) -> None:
        raise _ContentError(None, None, f"more than {MAX_NODES} values, aliases expanded; "
                            "a configuration needs a few thousand at most (aliases that "
                            "expand without end?)", node.start_mark)

    def compose_sequence_node(self, anchor):
        return self._sized(super().compose_sequence_node, anchor)

    def compose_mapping_node(self, anchor):
        return self._sized(super().compose_mapping_node, anchor)

    def compose_scalar_node(self, anchor):
        node = super().compose_scalar_node(anchor)
        node.expanded = 1
        # (a long integer gets its own message: "too large")
        if len(node.value) > MAX_SCALAR and node.tag != _INT_TAG:
            raise _ContentError(None, None, f"{_clip(node.value)} is {len(node.value)} "
                                f"characters long; no setting takes more than {MAX_SCALAR}",
                                node.start_mark)
        return node

    def _sized(self, compose, anchor):
        self._sizes.append(1)
        try:
            node = compose(anchor)
        finally:
            size = self._sizes.pop()
        node.expanded = size
        if size > MAX_NODES:
            self._too_many(node)
        return node

    def construct_scalar(self, node) -> str:
        value = super().construct_scalar(node)
        half = _SURROGATE.search(value)
        if half:
            raise _ContentError(None, None, _surrogate_problem(value, half.start()),
                                node.start_mark)
        return value

    def construct_checked_scalar(self, node) -> Any:
        """int, float, bool and timestamp: PyYAML's constructor, with its errors marked."""
        tag, kind = _SCALAR_KINDS[node.tag]
        if node.tag == _INT_TAG and len(node.value) > 2 * MAX_INT_BITS:
            value = None      # too long to convert: Python's int() refuses past 4300 digits
        else:
            try:
                value = yaml.SafeLoader.yaml_constructors[node.tag](self, node)
            except (ValueError, LookupError, AttributeError) as exc:
                raise _ContentError(None, None, self._not_a(node, tag, kind, exc),
                                    node.start_mark) from None
        if node.tag == _INT_TAG and (value is None or abs(value).bit_length() > MAX_INT_BITS):
            raise _ContentError(None, None, f"{_clip(node.value)} is too large; no setting "
                                f"takes a number beyond {MAX_INT_BITS} bits", node.start_mark)
        return value

    def _not_a(self, node, tag: str, kind: str, exc: Exception) -> str:
        reason = _DATE_REASON.fullmatch(str(exc))
        reason = f" ({reason.group()})" if reason else ""
        text = _clip(node.value)
        if node.style is None and \
                self.resolve(yaml.ScalarNode, node.value, (True, False)) == node.tag:
            # plain text that YAML took for a date: 2024-13-01
            return (f"{text} reads as {kind} in YAML but is not a valid one{reason}; "
                    "write it in quotes if it is text")
        return f"{text} is tagged {tag} but is not {kind}{reason}; correct it or remove the tag"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if not isinstance(node, yaml.MappingNode):  # `!!map [1]`: let PyYAML say so
            return super().construct_mapping(node, deep)
        first_seen: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, _ in node.value:
            # a merge key (<<) may legitimately repeat keys it brings in
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value)
            if key in first_seen:
                self.duplicate_keys.append((key_node.value, key_node.start_mark, first_seen[key]))
            else:
                first_seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F][0-9a-fA-F_]*)$"),
    list("-+0123456789"))
for _tag in _SCALAR_KINDS:
    _Loader.add_constructor(_tag, _Loader.construct_checked_scalar)


def _surrogate_problem(value: str, at: int) -> str:
    """An escaped UTF-16 surrogate ("\\ud83d\\ude00", as JSON writes it): a
    string with one can be neither encoded for a syscall nor printed."""
    pair = value[at:at + 2]
    escaped = "".join(f"\\u{ord(c):04x}" for c in pair)
    if re.fullmatch("[\ud800-\udbff][\udc00-\udfff]", pair):  # YAML does not join a pair
        joined = ord(pair.encode("utf-16-le", "surrogatepass").decode("utf-16-le"))
        return (f"{escaped} in {_clip(value)} is a UTF-16 surrogate pair, which YAML does not "
                f"join; write \\U{joined:08x} or the character itself")
    return (f"{escaped[:6]} in {_clip(value)} is half of a UTF-16 surrogate pair, not a "
            "character; remove it")


def _clip(text: str, limit: int = 40) -> str:
    """A piece of the file for a message: quoted, escaped, at most `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


_UNREADABLE = object()  # the text is not YAML at all: nothing more to check


def _load_yaml(text: str, errs: _Errors) -> Any:
    loader = None
    try:
        loader = _Loader(text)  # the reader rejects unprintable characters already here
        data = loader.get_single_data()
    except _ContentError as exc:
        errs.line(f"{_place(errs.source, text, exc.problem_mark.index)}: {exc.problem}")
        return _UNREADABLE
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _place(errs.source, text, mark.index) if mark else errs.source
        problem = (exc.problem or exc.context or "cannot parse").removeprefix("but ")
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} at line {_line(text, exc.context_mark.index)})"
        errs.line(f"{where}: YAML syntax error: {problem}")
        return _UNREADABLE
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        errs.line(f"{_place(errs.source, text, exc.position)}: YAML syntax error: unacceptable "
                  f"character #x{code:04x}: {exc.reason}")
        return _UNREADABLE
    except yaml.YAMLError as exc:
        errs.line(f"{errs.source}: YAML syntax error: {' '.join(str(exc).split())}")
        return _UNREADABLE
    finally:
        if loader is not None:
            loader.dispose()
    for key, mark, first in loader.duplicate_keys:
        errs.line(f"{_place(errs.source, text, mark.index)}: key {key!r} appears twice "
                  f"in one mapping (first at line {_line(text, first.index)}); keep one")
    return data


# Lines as an editor, sed or grep count them: YAML also breaks lines at a lone
# \r, NEL, U+2028 and U+2029, and its marks would point past the file's end.
def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _place(source: str, text: str, index: int) -> str:
    """FILE:LINE:COLUMN for a character index into the text."""
    line_start = text.rfind("\n", 0, index) + 1
    return f"{source}:{_line(text, index)}:{index - line_start + 1}"


def _top_level(errs: _Errors, data: Any) -> dict | None:
    if data is None:
        errs.line(f"{errs.source}: the file is empty (or only comments); start from {EXAMPLE}")
        return None
    if not isinstance(data, dict):
        errs.line(f"{errs.source}: expected a mapping with 'interfaces' and 'forward' at the "
                  f"top level, got {_got(data)}; see {EXAMPLE}")
        return None
    return data


# --- sections -----------------------------------------------------------------

def _section(errs: _Errors, top: dict, key: str) -> dict | None:
    """An optional section; absent or empty (all keys commented out) means defaults."""
    value = top.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errs.at(key, f"expected a mapping, got {_got(value)}; see {EXAMPLE}")
        return None
    return value


def _interfaces(errs: _Errors, top: dict, suggested: set[str]
                ) -> tuple[tuple[InterfaceConfig, ...] | None, list[str] | None]:
    """The interfaces, and their names for checking rules against.

    The names are None when some entry's name could not be read: checking
    rules against a partial list would report references that are fine.
    """
    if "interfaces" not in top:
        if "interfaces" not in suggested:
            errs.at("interfaces", f"required key missing; list the netdevs xdpd owns, see {EXAMPLE}")
        return None, None
    raw = top["interfaces"]
    if not isinstance(raw, list):
        errs.at("interfaces", f"expected a list of netdevs, got {_got(raw)}; see {EXAMPLE}")
        return None, None
    if not raw:
        errs.at("interfaces", "empty list; list at least one netdev, e.g. '- name: eth0'")
        return None, None

    before = len(errs)
    interfaces: list[InterfaceConfig] = []
    first_index: dict[str, int] = {}
    names_readable = True
    for i, item in enumerate(raw):
        name, iface = _interface(errs, f"interfaces[{i}]", item)
        if name is None:
            names_readable = False
        elif name in first_index:
            errs.at(f"interfaces[{i}].name", f"{name!r} is listed twice "
                    f"(also interfaces[{first_index[name]}]); list each netdev once")
        else:
            first_index[name] = i
        if iface is not None:
            interfaces.append(iface)
    names = list(first_index) if names_readable else None
    return (tuple(interfaces) if len(errs) == before else None), names


def _interface(errs: _Errors, path: str, item: Any) -> tuple[str | None, InterfaceConfig | None]:
    if not isinstance(item, dict):
        printable = isinstance(item, str) and item.isprintable()
        hint = f"; write '- name: {item}'" if printable else ""
        errs.at(path, f"expected a mapping, got {_got(item)}{hint}")
        return None, None
    before = len(errs)
    suggested = _check_keys(errs, path, item, _INTERFACE_KEYS)
    name = None
    if "name" in item:
        name = _netdev_name(errs, f"{path}.name", item["name"])
    elif "name" not in suggested:
        errs.at(f"{path}.name", "required key missing; give the netdev, e.g. 'name: eth0'")
    defaults = InterfaceConfig(name="")
    queues = _id_list(errs, f"{path}.queues", item.get("queues", defaults.queues),
                      keyword="all", noun="queue", highest=MAX_QUEUE)
    xdp_mode = _choice(errs, f"{path}.xdp_mode", item.get("xdp_mode", defaults.xdp_mode), XDP_MODES)
    zero_copy = _choice(errs, f"{path}.zero_copy", item.get("zero_copy", defaults.zero_copy), ZERO_COPY)
    fallback = _choice(errs, f"{path}.fallback", item.get("fallback", defaults.fallback), FALLBACKS)
    fanout = _int_in(errs, f"{path}.fanout", item.get("fanout", defaults.fanout), 1, MAX_FANOUT)
    # with fanout 1 the spread is unused, and harmless: accepted as written
    fanout_spread = _choice(errs, f"{path}.fanout_spread",
                            item.get("fanout_spread", defaults.fanout_spread), FANOUT_SPREADS)
    checksum = _choice(errs, f"{path}.checksum", item.get("checksum", defaults.checksum),
                       CHECKSUM_MODES)
    pass_to_kernel = _pass_to_kernel(errs, f"{path}.pass_to_kernel", item.get("pass_to_kernel", []))
    steering = _steering(errs, f"{path}.steering", item.get("steering"), queues, name)
    if len(errs) > before:
        return name, None
    if queues != "all":
        queues = tuple(sorted(queues))  # the order of queues carries no meaning
    return name, InterfaceConfig(name=name, queues=queues, xdp_mode=xdp_mode,
                                 zero_copy=zero_copy, fallback=fallback,
                                 pass_to_kernel=pass_to_kernel, steering=steering,
                                 fanout=fanout, fanout_spread=fanout_spread,
                                 checksum=checksum)


def _pass_to_kernel(errs: _Errors, path: str, value: Any) -> tuple[Match, ...] | None:
    """A list of at most MAX_PASS_RULES matches; empty (or null) means none."""
    if value is None:
        return ()
    if not isinstance(value, list):
        errs.at(path, f"expected a list of matches, got {_got(value)}; e.g. "
                      "'- {ip_proto: tcp, dst_port: 22}'")
        return None
    if len(value) > MAX_PASS_RULES:
        errs.at(path, f"{len(value)} entries; the XDP program takes at most {MAX_PASS_RULES} "
                      "per interface: merge entries (a prefix covers several addresses)")
        return None
    matches = [_match(errs, f"{path}[{i}]", item) for i, item in enumerate(value)]
    return None if None in matches else tuple(matches)


# --- match: which packets a rule applies to -------------------------------------

def _match(errs: _Errors, path: str, item: Any) -> Match | None:
    """A match mapping: every field optional, at least one given, all given
    must hold.  Fields that contradict each other (a packet could never
    match) are errors, so a rule that cannot fire is not silently kept."""
    fields_ = _one_of(_MATCH_KEYS)
    if not isinstance(item, dict):
        errs.at(path, f"expected a mapping with one or more of {fields_}, got {_got(item)}")
        return None
    if not item:
        errs.at(path, f"empty match would take every packet; give one or more of {fields_}")
        return None
    before = len(errs)
    _check_keys(errs, path, item, _MATCH_KEYS)
    got = {}
    if "ethertype" in item:
        got["ethertype"] = _ethertype(errs, f"{path}.ethertype", item["ethertype"])
    if "vlan" in item:
        got["vlan"] = _vlan(errs, f"{path}.vlan", item["vlan"])
    if "ip_proto" in item:
        got["ip_proto"] = _named_number(errs, f"{path}.ip_proto", item["ip_proto"],
                                        IP_PROTOS, 0, 255)
    for key in ("src", "dst"):
        if key in item:
            got[key] = _prefix(errs, f"{path}.{key}", item[key])
    for key in ("src_port", "dst_port"):
        if key in item:
            got[key] = _int_in(errs, f"{path}.{key}", item[key], 0, 65535)
    if len(errs) > before:
        return None
    match = Match(**got)
    _check_match(errs, path, match)
    return match if len(errs) == before else None


def _check_match(errs: _Errors, path: str, m: Match) -> None:
    ip = (ETHERTYPES["ipv4"], ETHERTYPES["ipv6"])
    if m.src is not None and m.dst is not None and m.src.version != m.dst.version:
        errs.at(f"{path}.dst", f"IPv{m.dst.version} prefix {m.dst} with IPv{m.src.version} "
                               f"src {m.src}; a packet has one family, use two entries")
        return
    family = m.family_ethertype
    if family is not None and m.ethertype is not None and m.ethertype != family:
        key = "src" if m.src is not None else "dst"
        errs.at(f"{path}.ethertype", f"{_ethertype_word(m.ethertype)} with {key} "
                                     f"{getattr(m, key)}; remove ethertype (the prefix "
                                     "implies its family)")
        return
    needs_ip = [k for k in ("ip_proto", "src_port", "dst_port") if getattr(m, k) is not None]
    if needs_ip and m.ethertype is not None and m.ethertype not in ip:
        errs.at(f"{path}.ethertype", f"{_ethertype_word(m.ethertype)} with {needs_ip[0]}; "
                                     f"{needs_ip[0]} needs ipv4 or ipv6, or no ethertype")
        return
    icmp = {4: IP_PROTOS["icmpv6"], 6: IP_PROTOS["icmp"]}    # the other family's ICMP
    version = {ETHERTYPES["ipv4"]: 4, ETHERTYPES["ipv6"]: 6}.get(family or m.ethertype)
    if version and m.ip_proto == icmp[version]:
        errs.at(f"{path}.ip_proto", f"{_proto_word(m.ip_proto)} with IPv{version}; use "
                                    f"ip_proto {'icmp' if version == 4 else 'icmpv6'}")
        return
    ports = [k for k in ("src_port", "dst_port") if getattr(m, k) is not None]
    if ports and m.ip_proto is not None and m.ip_proto not in (IP_PROTOS["tcp"], IP_PROTOS["udp"]):
        errs.at(f"{path}.{ports[0]}", f"ports are TCP's or UDP's, not ip_proto "
                                      f"{_proto_word(m.ip_proto)}; use ip_proto tcp or udp, "
                                      "or leave ip_proto out (either)")


def _ethertype_word(value: int) -> str:
    names = {v: k for k, v in ETHERTYPES.items()}
    return f"ethertype {names.get(value, f'0x{value:04x}')}"


def _proto_word(value: int) -> str:
    names = {v: k for k, v in IP_PROTOS.items()}
    return names.get(value, str(value))


def _named_number(errs: _Errors, path: str, value: Any, names: dict[str, int], lowest: int,
                  highest: int, hex_: bool = False) -> int | None:
    """A name from `names` or a number in lowest..highest."""
    def show(n):
        return f"0x{n:04x}" if hex_ else str(n)
    allowed = f"{_one_of(tuple(names))} or a number from {show(lowest)} to {show(highest)}"
    if isinstance(value, str):
        if value in names:
            return names[value]
        errs.at(path, f"{_show(value)} is not allowed; use {allowed}")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        errs.at(path, f"expected {allowed}, got {_got(value)}")
        return None
    if not lowest <= value <= highest:
        errs.at(path, f"{show(value) if value >= 0 else value} is out of range; use {allowed}")
        return None
    return value


def _ethertype(errs: _Errors, path: str, value: Any) -> int | None:
    n = _named_number(errs, path, value, ETHERTYPES, 0x0600, 0xFFFF, hex_=True)
    if n in VLAN_ETHERTYPES:
        errs.at(path, f"0x{n:04x} is a VLAN tag, not what a packet carries; match tags with "
                      "'vlan: ID' (ethertype is what follows the tags)")
        return None
    return n


def _vlan(errs: _Errors, path: str, value: Any) -> int | str | None:
    if value == VLAN_NONE:
        return VLAN_NONE
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_VLAN:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        errs.at(path, f"{value} is out of range; use a VLAN id from 0 to {MAX_VLAN}, "
                      f"or '{VLAN_NONE}' for untagged packets")
    else:
        errs.at(path, f"expected a VLAN id from 0 to {MAX_VLAN} or '{VLAN_NONE}' for "
                      f"untagged packets, got {_got(value)}")
    return None


def _prefix(errs: _Errors, path: str, value: Any
            ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An IPv4 or IPv6 prefix; a bare address is a /32 or /128."""
    example = "e.g. 10.0.0.0/8 or 2001:db8::/32"
    if not isinstance(value, str):
        errs.at(path, f"expected an IPv4 or IPv6 prefix ({example}), got {_got(value)}")
        return None
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        errs.at(path, f"{_show(value)} is not an IPv4 or IPv6 prefix; write ADDRESS/LENGTH, "
                      f"{example}")
        return None
    errs.at(path, f"{_show(value)} has host bits set; write {loose} for the network, or "
                  f"{value.split('/')[0]} for that address alone")
    return None


def _steering(errs: _Errors, path: str, value: Any, queues: Any, name: str | None
              ) -> SteeringConfig | None:
    """`steering:` of one interface.  Queues it names must be owned queues:
    steering traffic to a queue no worker serves would only move it past xdpd."""
    if value is None:
        return SteeringConfig()
    if not isinstance(value, dict):
        errs.at(path, f"expected a mapping with channels, rss_queues or flows, got {_got(value)}")
        return None
    before = len(errs)
    _check_keys(errs, path, value, _STEERING_KEYS)
    channels = None
    if "channels" in value:
        channels = _int_in(errs, f"{path}.channels", value["channels"], 1, MAX_CHANNELS)
    # the queues this interface will own: "all" means every channel there will be
    if queues == "all":
        owned = range(channels) if channels is not None else None
    else:
        owned = queues
    dev = name or "the interface"
    if channels is not None and queues not in ("all", None) and max(queues) >= channels:
        missing = [q for q in queues if q >= channels]
        errs.at(f"{path}.channels", f"{channels} channels leave out owned "
                f"{'queue' if len(missing) == 1 else 'queues'} {', '.join(map(str, missing))} "
                f"(queues number from 0); raise channels to {max(queues) + 1} or drop "
                f"{'that queue' if len(missing) == 1 else 'those queues'} from "
                f"{path.rsplit('.', 1)[0]}.queues")
    rss_queues = None
    if "rss_queues" in value:
        rss_queues = _id_list(errs, f"{path}.rss_queues", value["rss_queues"], keyword="all",
                              noun="queue", highest=MAX_QUEUE)
        if rss_queues == "all":
            errs.at(f"{path}.rss_queues", "'all' is not allowed here; list the queues RSS "
                    "spreads over, e.g. [0, 1], or leave rss_queues out to keep the NIC's table")
            rss_queues = None
        elif rss_queues is not None:
            _owned_refs(errs, f"{path}.rss_queues", rss_queues, owned, dev)
    flows: list[FlowRule] = []
    if "flows" in value:
        raw = value["flows"]
        if not isinstance(raw, list) or not raw:
            errs.at(f"{path}.flows", f"expected a non-empty list of rules such as "
                    f"'- {{type: udp4, dst_port: 4789, queue: 0}}', got {_got(raw)}")
        else:
            first: dict[FlowRule, int] = {}
            for i, item in enumerate(raw):
                rule = _flow(errs, f"{path}.flows[{i}]", item, owned, dev)
                if rule is not None:
                    if rule in first:
                        errs.at(f"{path}.flows[{i}]", f"the same rule as {path}.flows"
                                f"[{first[rule]}]; list each rule once")
                    first.setdefault(rule, i)
                    flows.append(rule)
    if len(errs) > before:
        return None
    return SteeringConfig(channels=channels, rss_queues=rss_queues, flows=tuple(flows))


def _owned_refs(errs: _Errors, path: str, refs: tuple[int, ...], owned, dev: str) -> None:
    if owned is None:
        return                  # queues: all, channels unchanged: checked on the host
    for i, q in enumerate(refs):
        if q not in owned:
            errs.at(f"{path}[{i}]", f"queue {q} is not owned by {dev} (owned: {_queue_text(owned)}); "
                    "steer only to queues xdpd serves")


def _queue_text(owned) -> str:
    owned = list(owned)
    if len(owned) > 2 and owned == list(range(owned[0], owned[-1] + 1)):
        return f"{owned[0]}-{owned[-1]}"
    return ", ".join(map(str, owned))


def _flow(errs: _Errors, path: str, item: Any, owned, dev: str) -> FlowRule | None:
    if not isinstance(item, dict):
        errs.at(path, f"expected a mapping such as '{{type: udp4, dst_port: 4789, queue: 0}}', "
                      f"got {_got(item)}")
        return None
    before = len(errs)
    suggested = _check_keys(errs, path, item, _FLOW_KEYS)
    kind = None
    if "type" in item:
        kind = _choice(errs, f"{path}.type", item["type"], FLOW_TYPES)
    elif "type" not in suggested:
        errs.at(f"{path}.type", f"required key missing; use {_one_of(FLOW_TYPES)}")
    queue = None
    if "queue" in item:
        queue = _int_in(errs, f"{path}.queue", item["queue"], 0, MAX_QUEUE)
        if queue is not None and owned is not None and queue not in owned:
            errs.at(f"{path}.queue", f"queue {queue} is not owned by {dev} (owned: "
                    f"{_queue_text(owned)}); steer only to queues xdpd serves")
    elif "queue" not in suggested:
        errs.at(f"{path}.queue", "required key missing; give the rx queue the flow goes to")
    version = 6 if kind in ("tcp6", "udp6") else 4
    ips = {}
    for key in ("src_ip", "dst_ip"):
        if key in item:
            ips[key] = _ip(errs, f"{path}.{key}", item[key], version if kind else None)
    ports = {}
    for key in ("src_port", "dst_port"):
        if key in item:
            ports[key] = _int_in(errs, f"{path}.{key}", item[key], 0, 65535)
    if not ips and not ports and not (set(item) - set(_FLOW_KEYS)):
        errs.at(path, "no match field; give at least one of src_ip, dst_ip, src_port, "
                      "dst_port (a rule matching every packet of a type is what RSS is for)")
    if len(errs) > before:
        return None
    return FlowRule(type=kind, queue=queue, **ips, **ports)


def _ip(errs: _Errors, path: str, value: Any, version: int | None) -> str | None:
    """A host address of the rule's IP version, in the form ipaddress prints."""
    if not isinstance(value, str):
        errs.at(path, f"expected an IP address in quotes, got {_got(value)}")
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        errs.at(path, f"{_show(value)} is not an IP address; write one host address, e.g. "
                      f"{'192.0.2.1' if version != 6 else '2001:db8::1'} (no prefix length)")
        return None
    if version is not None and addr.version != version:
        want = "tcp6 or udp6" if addr.version == 6 else "tcp4 or udp4"
        errs.at(path, f"{_show(value)} is an IPv{addr.version} address but the rule's type is "
                      f"IPv{version}; use type {want}")
        return None
    return str(addr)


def _forward(errs: _Errors, top: dict, names: list[str] | None, suggested: set[str]
             ) -> tuple[ForwardRule, ...] | None:
    if "forward" not in top:
        if "forward" not in suggested:
            errs.at("forward", "required key missing; say where packets from each interface go, "
                               f"see {EXAMPLE}")
        return None
    raw = top["forward"]
    if not isinstance(raw, list):
        errs.at("forward", f"expected a list of rules, got {_got(raw)}; see {EXAMPLE}")
        return None
    # An empty list is valid: every packet is dropped and counted as no_rule.
    if len(raw) > MAX_NETDEVS * MAX_FORWARD_RULES:
        errs.at("forward", f"{len(raw)} rules; at most {MAX_FORWARD_RULES} per interface "
                f"and {MAX_NETDEVS} interfaces, so {MAX_NETDEVS * MAX_FORWARD_RULES} in all")
        return None
    rules = [_rule(errs, f"forward[{i}]", i, item, names) for i, item in enumerate(raw)]
    if None in rules:
        return None
    _check_rule_order(errs, rules)
    return tuple(rules)


def _check_rule_order(errs: _Errors, rules: list[ForwardRule]) -> None:
    """Rules sharing a `from` are tried in order, first match wins: a rule
    after one without a match (which takes every packet) can never fire,
    and the fast path tries at most MAX_FORWARD_RULES per interface."""
    catch_all: dict[str, int] = {}
    count: dict[str, int] = {}
    for rule in rules:
        path = f"forward[{rule.index}]"
        count[rule.from_] = count.get(rule.from_, 0) + 1
        if count[rule.from_] == MAX_FORWARD_RULES + 1:
            errs.at(f"{path}.from", f"more than {MAX_FORWARD_RULES} rules from "
                                    f"{rule.from_!r}; the fast path tries at most "
                                    f"{MAX_FORWARD_RULES} per interface: merge rules "
                                    "(a prefix covers several addresses)")
        if rule.from_ in catch_all:
            errs.at(path, f"never used: forward[{catch_all[rule.from_]}] already takes every "
                          f"packet from {rule.from_!r}; give that rule a 'match', or move "
                          "this one before it")
        elif rule.match is None:
            catch_all[rule.from_] = rule.index


def _rule(errs: _Errors, path: str, index: int, item: Any, names: list[str] | None
          ) -> ForwardRule | None:
    if not isinstance(item, dict):
        errs.at(path, f"expected a mapping with 'from' and 'to' or 'action: drop', got {_got(item)}")
        return None
    before = len(errs)
    suggested = _check_keys(errs, path, item, _RULE_KEYS)
    from_ = None
    if "from" in item:
        from_ = _netdev_ref(errs, f"{path}.from", item["from"], names)
    elif "from" not in suggested:
        errs.at(f"{path}.from", "required key missing; name the ingress interface, e.g. 'from: eth0'")
    target = _rule_target(errs, path, item, names, suggested)
    dst = _mac(errs, f"{path}.set_dst_mac", item["set_dst_mac"]) if "set_dst_mac" in item else None
    src = _mac(errs, f"{path}.set_src_mac", item["set_src_mac"], source=True) \
        if "set_src_mac" in item else None
    swap = _bool(errs, f"{path}.swap_macs", item.get("swap_macs", False))
    if target is not None and swap is not None:
        _check_rewrites(errs, path, item, target[0], swap)
    push, proto, pop = _vlan_action(errs, path, item, target[0] if target else None)
    match = _match(errs, f"{path}.match", item["match"]) if "match" in item else None
    if len(errs) > before:
        return None
    action, to = target
    return ForwardRule(index=index, from_=from_, action=action, to=to,
                       set_dst_mac=dst, set_src_mac=src, swap_macs=swap, match=match,
                       push_vlan=push, vlan_proto=proto, pop_vlan=pop)


def _vlan_action(errs: _Errors, path: str, item: dict, action: str | None
                 ) -> tuple[int | None, str, bool]:
    """(push_vlan, vlan_proto, pop_vlan): push a tag or pop the outer one,
    not both, and only on a rule that forwards."""
    push = proto = None
    if "push_vlan" in item:
        value = item["push_vlan"]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_VLAN:
            push = value
        elif isinstance(value, int) and not isinstance(value, bool):
            errs.at(f"{path}.push_vlan", f"{value} is out of range; use a VLAN id from 0 "
                                         f"to {MAX_VLAN}")
        else:
            errs.at(f"{path}.push_vlan", f"expected a VLAN id from 0 to {MAX_VLAN}, "
                                         f"got {_got(value)}")
    if "vlan_proto" in item:
        proto = _choice(errs, f"{path}.vlan_proto", item["vlan_proto"], tuple(VLAN_PROTOS))
        if proto is not None and "push_vlan" not in item:
            errs.at(f"{path}.vlan_proto", f"{_show(proto)} without push_vlan; vlan_proto is "
                                          "the type of a pushed tag: add 'push_vlan: ID' or "
                                          "remove vlan_proto")
    pop = _bool(errs, f"{path}.pop_vlan", item.get("pop_vlan", False))
    if pop and "push_vlan" in item:
        errs.at(f"{path}.pop_vlan", "true cannot be combined with push_vlan; a rule pushes "
                                    "a tag or pops the outer one, not both")
    if action == "drop":
        for key in ("push_vlan", "vlan_proto") + (("pop_vlan",) if pop else ()):
            if key in item:
                errs.at(f"{path}.{key}", f"a drop rule rewrites nothing; remove {key}, "
                                         "or forward with 'to: <interface>'")
    return push, proto or "802.1q", bool(pop)


def _rule_target(errs: _Errors, path: str, item: dict, names: list[str] | None,
                 suggested: set[str]) -> tuple[str, str | None] | None:
    """(action, to) from `to` and `action`: `to` implies forward, drop excludes `to`."""
    action = item.get("action")
    if "action" in item and _choice(errs, f"{path}.action", action, ACTIONS) is None:
        return None
    if action == "drop":
        if "to" in item:
            errs.at(f"{path}.to", f"{_show(item['to'])} given with 'action: drop'; a rule either "
                                  "forwards (to) or drops (action: drop), remove one")
            return None
        return "drop", None
    if "to" not in item:
        if action == "forward":
            errs.at(f"{path}.to", "required key missing with 'action: forward'; "
                                  "name the egress interface, e.g. 'to: eth1'")
        elif not suggested & {"to", "action"}:
            errs.at(path, "no 'to' and no 'action'; add 'to: <interface>' to forward "
                          "or 'action: drop' to drop")
        return None
    to = _netdev_ref(errs, f"{path}.to", item["to"], names)
    return None if to is None else ("forward", to)


def _check_rewrites(errs: _Errors, path: str, item: dict, action: str, swap: bool) -> None:
    setters = [key for key in ("set_dst_mac", "set_src_mac") if key in item]
    if action == "drop":
        for key in setters + (["swap_macs"] if swap else []):
            errs.at(f"{path}.{key}", f"a drop rule rewrites nothing; remove {key}, "
                                     "or forward with 'to: <interface>'")
    elif swap and setters:
        errs.at(f"{path}.swap_macs", f"true cannot be combined with {' and '.join(setters)}; "
                                     "swap the packet's own addresses or set new ones, not both")


def _workers(errs: _Errors, section: dict | None) -> WorkersConfig | None:
    if section is None:
        return None
    before, d = len(errs), WorkersConfig()
    _check_keys(errs, "workers", section, _WORKERS_KEYS)
    cpus = _id_list(errs, "workers.cpus", section.get("cpus", d.cpus),
                    keyword="auto", noun="CPU", highest=None)
    batch_size = _int_in(errs, "workers.batch_size", section.get("batch_size", d.batch_size), 1, 1024)
    idle = _choice(errs, "workers.idle", section.get("idle", d.idle), IDLE)
    busy_poll = _bool(errs, "workers.busy_poll", section.get("busy_poll", d.busy_poll))
    direct_tx = _bool(errs, "workers.direct_tx", section.get("direct_tx", d.direct_tx))
    usecs = _int_in(errs, "workers.busy_poll_usecs",
                    section.get("busy_poll_usecs", d.busy_poll_usecs), 1, 10000)
    budget = _int_in(errs, "workers.busy_poll_budget",
                     section.get("busy_poll_budget", d.busy_poll_budget), 1, 1024)
    tx_budget = section.get("tx_budget", d.tx_budget)
    if tx_budget != "auto":
        tx_budget = _int(errs, "workers.tx_budget", tx_budget)
        if tx_budget is not None and tx_budget != 0 and not 32 <= tx_budget <= 16384:
            errs.at("workers.tx_budget", f"{tx_budget} is out of range; use auto, 0 (the "
                    "kernel's default, 32) or 32 to 16384")
    user, group = section.get("user", d.user), section.get("group", d.group)
    if not (isinstance(user, str) and _ACCOUNT_NAME.fullmatch(user)):
        errs.at("workers.user", f"{_show(user)} is not a user name; name an unprivileged "
                "user for the workers (e.g. 'nobody' or a dedicated 'xdpd-worker')")
    elif user == "root":
        errs.at("workers.user", "root would give each worker the supervisor's uid; name an "
                "unprivileged user (e.g. 'nobody' or a dedicated 'xdpd-worker')")
    if group is not None and not (isinstance(group, str) and _ACCOUNT_NAME.fullmatch(group)):
        errs.at("workers.group", f"{_show(group)} is not a group name; name a group, or "
                "remove the key to use the user's primary group")
    elif group == "root":
        errs.at("workers.group", "root is the supervisor's group; name an unprivileged "
                "group, or remove the key to use the user's primary group")
    if len(errs) > before:
        return None
    return WorkersConfig(cpus=cpus, batch_size=batch_size, idle=idle, busy_poll=busy_poll,
                         busy_poll_usecs=usecs, busy_poll_budget=budget, tx_budget=tx_budget,
                         user=user, group=group, direct_tx=direct_tx)


def _umem(errs: _Errors, section: dict | None) -> UmemConfig | None:
    if section is None:
        return None
    before, d = len(errs), UmemConfig()
    _check_keys(errs, "umem", section, _UMEM_KEYS)
    frame_size = _choice(errs, "umem.frame_size", section.get("frame_size", d.frame_size), FRAME_SIZES)
    frames = _power_of_two(errs, "umem.frames_per_worker",
                           section.get("frames_per_worker", d.frames_per_worker), 512, 65536)
    hugepages = _choice(errs, "umem.hugepages", section.get("hugepages", d.hugepages), HUGEPAGES)
    spare = _int_in(errs, "umem.spare_workers", section.get("spare_workers", d.spare_workers),
                    0, MAX_SPARE_WORKERS)
    if len(errs) > before:
        return None
    return UmemConfig(frame_size=frame_size, frames_per_worker=frames, hugepages=hugepages,
                      spare_workers=spare)


def _rings(errs: _Errors, section: dict | None) -> RingsConfig | None:
    if section is None:
        return None
    before, d = len(errs), RingsConfig()
    _check_keys(errs, "rings", section, _RINGS_KEYS)
    sizes = {key: _power_of_two(errs, f"rings.{key}", section.get(key, getattr(d, key)), 64, 16384)
             for key in _RINGS_KEYS}
    if len(errs) > before:
        return None
    return RingsConfig(**sizes)


def _metrics(errs: _Errors, section: dict | None) -> MetricsConfig | None:
    if section is None:
        return None
    before = len(errs)
    _check_keys(errs, "metrics", section, _METRICS_KEYS)
    if "listen" in section:
        listen = _listen(errs, "metrics.listen", section["listen"])
    else:
        listen = MetricsConfig().listen
    if len(errs) > before:
        return None
    return MetricsConfig(listen=listen)


def _control(errs: _Errors, section: dict | None) -> ControlConfig | None:
    if section is None:
        return None
    before = len(errs)
    _check_keys(errs, "control", section, _CONTROL_KEYS)
    path = section.get("socket", ControlConfig().socket)
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        errs.at("control.socket", f"{path!r} is not an absolute path; write e.g. "
                f"'{ControlConfig().socket}'")
    elif len(path.encode()) > 107:
        errs.at("control.socket", f"path is {len(path.encode())} bytes; a unix socket "
                "path may have at most 107")
    group = section.get("status_group")
    if group is not None and not (isinstance(group, str) and _ACCOUNT_NAME.fullmatch(group)):
        errs.at("control.status_group", f"{_show(group)} is not a group name; name a group "
                "whose members may use 'xdpd status' (e.g. 'xdpd-status'), or remove the "
                "key to leave the socket to root")
    if len(errs) > before:
        return None
    return ControlConfig(socket=path, status_group=group)


# --- values -------------------------------------------------------------------
# Each checker returns the value, or None after recording why it is wrong.

def _check_keys(errs: _Errors, path: str, mapping: dict, allowed: tuple[str, ...]) -> set[str]:
    """Report unknown keys; return the keys suggested instead, so that the
    caller does not also call them missing."""
    suggested = set()
    for key in mapping:
        if isinstance(key, str) and key in allowed:
            continue
        # a key already present is no answer to "did you mean"
        unused = [k for k in allowed if k not in mapping]
        match = difflib.get_close_matches(key, unused, n=1) if isinstance(key, str) else []
        where = _join(path, _key(key))
        if match:
            errs.at(where, f"unknown key; did you mean '{match[0]}'?")
            suggested.add(match[0])
        else:
            errs.at(where, f"unknown key; allowed keys: {', '.join(allowed)}")
    return suggested


def _int(errs: _Errors, path: str, value: Any) -> int | None:
    # bool is a subclass of int in Python; `true` is not a number in a config
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    errs.at(path, f"expected an integer, got {_got(value)}")
    return None


def _int_in(errs: _Errors, path: str, value: Any, lowest: int, highest: int) -> int | None:
    n = _int(errs, path, value)
    if n is not None and not lowest <= n <= highest:
        errs.at(path, f"{n} is out of range; use {lowest} to {highest}")
        return None
    return n


def _power_of_two(errs: _Errors, path: str, value: Any, lowest: int, highest: int) -> int | None:
    n = _int(errs, path, value)
    if n is None:
        return None
    if not lowest <= n <= highest:
        errs.at(path, f"{n} is out of range; use a power of two from {lowest} to {highest}")
        return None
    if n & (n - 1):
        below = 1 << (n.bit_length() - 1)
        errs.at(path, f"{n} is not a power of two; use {below} or {below * 2}")
        return None
    return n


def _bool(errs: _Errors, path: str, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    errs.at(path, f"expected true or false, got {_got(value)}")
    return None


def _choice(errs: _Errors, path: str, value: Any, allowed: tuple) -> Any:
    """One of a few words, or of a few numbers."""
    if isinstance(allowed[0], int):
        value = _int(errs, path, value)
        if value is None:
            return None
    elif not isinstance(value, str):
        errs.at(path, f"expected {_one_of(allowed)}, got {_got(value)}")
        return None
    if value in allowed:
        return value
    errs.at(path, f"{_show(value)} is not allowed; use {_one_of(allowed)}")
    return None


def _id_list(errs: _Errors, path: str, value: Any, keyword: str, noun: str,
             highest: int | None) -> str | tuple[int, ...] | None:
    """`keyword` or a non-empty list of distinct numbers >= 0 (queues, CPUs), in the order given."""
    if value == keyword:
        return keyword
    if isinstance(value, str):
        errs.at(path, f"{_show(value)} is not allowed; use '{keyword}' or a list of "
                      f"{noun} numbers, e.g. [0, 1]")
        return None
    if not isinstance(value, list):
        hint = f"; write [{value}]" if type(value) is int else ""
        errs.at(path, f"expected '{keyword}' or a list of {noun} numbers, got {_got(value)}{hint}")
        return None
    if not value:
        errs.at(path, f"empty list; use '{keyword}' or list at least one {noun}, e.g. [0]")
        return None
    first_index: dict[int, int] = {}
    ok = True
    for i, item in enumerate(value):
        n = _int(errs, f"{path}[{i}]", item)
        if n is None:
            ok = False
        elif n < 0 or highest is not None and n > highest:
            allowed = f"use 0 to {highest}" if highest is not None else f"{noun} numbers start at 0"
            errs.at(f"{path}[{i}]", f"{noun} {n} is out of range; {allowed}")
            ok = False
        elif n in first_index:
            errs.at(f"{path}[{i}]", f"{noun} {n} is listed twice (also {path}[{first_index[n]}]); "
                                    f"list each {noun} once")
            ok = False
        else:
            first_index[n] = i
    return tuple(first_index) if ok else None


def _netdev_name(errs: _Errors, path: str, value: Any) -> str | None:
    if not isinstance(value, str):
        errs.at(path, f"expected a netdev name, got {_got(value)}{_quote_hint(value)}")
        return None
    size = len(value.encode())
    if not value:
        errs.at(path, "empty name; give the netdev, e.g. 'eth0'")
    elif size > MAX_NETDEV_NAME:
        unit = "characters" if value.isascii() else "bytes in UTF-8"
        errs.at(path, f"{_show(value)} is {size} {unit} long; netdev names have at most "
                      f"{MAX_NETDEV_NAME}")
    elif value in (".", "..") or any(c in "/:" or c.isspace() for c in value):
        # the kernel's dev_valid_name() rules
        errs.at(path, f"{_show(value)} is not a valid netdev name; it cannot be '.' or '..' "
                      "or contain '/', ':' or whitespace")
    elif not value.isprintable():
        # the kernel would stop at a NUL, and the name goes into log lines and metric labels
        errs.at(path, f"{_show(value)} has a control character; a netdev name is printable text")
    else:
        return value
    return None


def _netdev_ref(errs: _Errors, path: str, value: Any, names: list[str] | None) -> str | None:
    """A reference to a listed interface; unchecked when the list itself is broken."""
    if not isinstance(value, str):
        errs.at(path, f"expected an interface name, got {_got(value)}{_quote_hint(value)}")
        return None
    if names is not None and value not in names:
        errs.at(path, f"{_show(value)} is not a configured interface; add it under 'interfaces' "
                      f"or use one of: {', '.join(names)}")
        return None
    return value


_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


def _mac(errs: _Errors, path: str, value: Any, source: bool = False) -> bytes | None:
    if not isinstance(value, str):
        errs.at(path, f"expected a MAC address such as '{MAC_EXAMPLE}', got {_got(value)}")
        return None
    if not _MAC.fullmatch(value):
        errs.at(path, f"{_show(value)} is not a MAC address; write six hex pairs, e.g. '{MAC_EXAMPLE}'")
        return None
    mac = bytes.fromhex(value.replace(":", ""))
    # IEEE 802.3: the I/G bit marks a group address, which no frame may carry as its source
    if source and mac[0] & 1:
        errs.at(path, f"{_show(value)} is a multicast address; a source MAC must be unicast "
                      "(first byte even)")
        return None
    return mac


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_LISTEN_EXAMPLE = "write HOST:PORT, e.g. '127.0.0.1:9464' or '[::1]:9464'"


def _listen(errs: _Errors, path: str, value: Any) -> tuple[str, int] | None:
    """HOST:PORT or [IPv6]:PORT; the caller treats null as 'no endpoint'."""
    if value is None:
        return None
    if not isinstance(value, str):
        errs.at(path, f"expected 'HOST:PORT' or null, got {_got(value)}; {_LISTEN_EXAMPLE}")
        return None
    shown = _show(value)
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            errs.at(path, f"{shown} has no closing ']'; {_LISTEN_EXAMPLE}")
            return None
        if not _is_ipv6(host):
            errs.at(path, f"{_show(host)} in {shown} is not an IPv6 address; {_LISTEN_EXAMPLE}")
            return None
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            errs.at(path, f"{shown} has {_show(rest)} after ']'; {_LISTEN_EXAMPLE}")
            return None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            host, port_text = value, None
        elif ":" in host:
            errs.at(path, f"{shown} has an IPv6 address without brackets; write '[IPv6]:PORT', "
                          "e.g. '[::1]:9464'")
            return None
        if not host:
            example = port_text or "9464"
            errs.at(path, f"{shown} has no host; write '0.0.0.0:{example}' for every IPv4 address "
                          f"or '127.0.0.1:{example}' for this machine only")
            return None
        if not _is_host(host):
            errs.at(path, f"{_show(host)} in {shown} is not an IP address or host name; "
                          f"{_LISTEN_EXAMPLE}")
            return None
    if not port_text:
        errs.at(path, f"{shown} has no port; {_LISTEN_EXAMPLE}")
        return None
    if not (port_text.isascii() and port_text.isdigit()):
        errs.at(path, f"port {_show(port_text)} in {shown} is not a number; use 0 to 65535")
        return None
    port = int(port_text)
    if port > 65535:
        errs.at(path, f"port {port} in {shown} is out of range; use 0 to 65535")
        return None
    return host, port


def _is_ipv6(text: str) -> bool:
    if not text.isprintable() or any(c.isspace() for c in text):  # the %scope may be anything
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_host(text: str) -> bool:
    if all(part.isdigit() for part in text.split(".")):  # looks like IPv4: must be one
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME.fullmatch(text))


# --- message helpers ----------------------------------------------------------

class _Errors:
    """The messages found so far, each prefixed with the source file."""

    def __init__(self, source: str):
        self.source = _clip(source, 200) if len(source) > 200 else source
        self.lines: list[str] = []          # the first MAX_ERRORS of them
        self.found = 0

    def __len__(self) -> int:
        return self.found

    def at(self, path: str, message: str) -> None:
        self.line(f"{self.source}: {path}: {message}")

    def line(self, text: str) -> None:
        """A message that has no YAML path (the file as a whole, or a line:col)."""
        self.found += 1
        if len(self.lines) < MAX_ERRORS:
            self.lines.append(text)

    def raise_if_any(self) -> None:
        if self.lines:
            more = self.found - len(self.lines)
            raise ConfigError(self.lines + ([f"{self.source}: ... and {more} more errors; "
                                             "fix these first"] if more else []))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: Any) -> str:
    """A mapping key as a step of a YAML path: a plain word as it is, anything
    else quoted, so that a key cannot break the line or pass for a path."""
    if isinstance(key, str):
        return key if _PLAIN_KEY.fullmatch(key) and len(key) <= 40 else _clip(key)
    return _show(key)


def _one_of(allowed: tuple) -> str:
    words = [str(a) for a in allowed]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "float", str: "string",
               list: "list", dict: "mapping"}


def _got(value: Any) -> str:
    """What a value is, for 'expected X, got ...': `string '64x'`, `null`."""
    if value is None:
        return "null"
    return f"{_TYPE_NAMES.get(type(value), type(value).__name__)} {_show(value)}"


def _show(value: Any) -> str:
    """A value as the operator wrote it, more or less, in YAML notation."""
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
        if "\n" in text:      # a string with a line break: YAML folds it over lines
            text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return str(value)


def _quote_hint(value: Any) -> str:
    """YAML reads `name: 1234` as a number; netdev names may well look like one."""
    return "; write it in quotes" if isinstance(value, (int, float)) else ""
