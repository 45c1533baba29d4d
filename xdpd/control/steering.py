"""Steering: what xdpd asks a NIC for (channels, RSS indirection, ntuple
rules), the journal of it, and undoing it.

Design
------
Applied at start before any XDP program is attached, because the channel
count is the queue count: the program marks queues owned, and the sockets
bind to queues, that must exist.  The worker plan does not wait for it:
config.plan_workers() takes `queues: all` with `steering.channels: N` as
queues 0..N-1, the count there will be, and parse_config() refuses
`channels` that leave out an owned queue; so planning, check-config and
start agree whether the channels are set yet or not.  Then RSS (a channel
change may reset the indirection table, so after it), then the ntuple rules.
Stop undoes it in reverse, after the programs are detached.

Every change is written to the journal *before* it is made, with the value
it replaces (a channel change, an indirection table), or right after it
(an ntuple rule: the driver picks its location):

    {"format": 1, "pid": 4567, "start_time": 891234, "boot_id": "...",
     "netdevs": [{"name": "in0",
                  "channels": {"before": [4, 4, 0, 0], "set": [2, 2, 0, 0]},
                  "rss": {"before": [0, 1, 2, 3, ...], "set": [0, 1, 0, 1, ...]},
                  "rules": [{"location": 1023, "flow": {...}, "match": "hex"}]}]}

(channel counts as rx, tx, other, combined).  It lives next to the control
socket as xdpd.steering.json, written like run_record.py's record (whole
file, renamed over), and is removed when everything in it is undone.  A
killed xdpd leaves it; the next start undoes what it names:

* a rule only where GRXCLSRULE at its location still answers with the rule
  xdpd inserted (values, masks, queue): a rule xdpd did not add is never
  removed, and neither is one that replaced xdpd's at the same location;
* the indirection table and channel counts only while they are what xdpd
  set: an operator's later `ethtool -X`/`-L` wins.

A crash between inserting a rule and writing its location leaves that one
rule behind (the kernel answers the location only after the insert); the
log of the next start cannot name it, but `ethtool -n` shows it.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import asdict, dataclass, field

from xdpd.config.model import Config, ConfigError, FlowRule, InterfaceConfig
from xdpd.control import record as run_record
from xdpd.kernel.errors import errname
from xdpd.kernel.ethtool import RX_CLS_LOC_ANY, Channels, Ethtool, EthtoolError, FlowSpec

log = logging.getLogger("xdpd.steering")

FORMAT = 1
SUFFIX = ".steering.json"           # /run/xdpd/xdpd.sock -> /run/xdpd/xdpd.steering.json


class SteeringError(Exception):
    """A steering change failed; the message says what, on what, and the way out."""


class JournalError(ValueError):
    """The journal exists but is not one this module wrote."""


def journal_path(control_socket: str) -> str:
    return run_record.beside_socket(control_socket, SUFFIX)


# --- check time ---------------------------------------------------------------

def check_steering(config: Config, nic: Ethtool) -> None:
    """Raise ConfigError for steering a netdev's driver cannot do: no
    ntuple filters, no RSS table, no channel control or too few channels.
    A question the kernel refuses to answer unprivileged (EPERM) is left
    to start-up."""
    errors = []
    for i, iface in enumerate(config.interfaces):
        s = iface.steering
        path = f"{config.source}: interfaces[{i}].steering"
        name = iface.name
        if s.channels is not None:
            try:
                ch = nic.get_channels(name)
            except EthtoolError as e:
                if e.errno != errno.EPERM:
                    errors.append(f"{path}.channels: {name} (driver {nic.driver(name)}) cannot "
                                  f"change its channel count: ETHTOOL_GCHANNELS answered "
                                  f"{errname(e.errno)}; remove channels")
            else:
                most = ch.max_combined or ch.max_rx
                if most == 0:
                    errors.append(f"{path}.channels: {name} (driver {nic.driver(name)}) reports "
                                  "no channel maximum, so its channels cannot be set; remove "
                                  "channels")
                elif s.channels > most:
                    kind = "combined" if ch.max_combined else "rx"
                    errors.append(f"{path}.channels: {s.channels} but {name} (driver "
                                  f"{nic.driver(name)}) has at most {most} {kind} channels "
                                  f"(see 'ethtool -l {name}'); use {most} or fewer")
        if s.rss_queues is not None:
            _supported(errors, f"{path}.rss_queues", nic, name, nic.get_indirection,
                       "RSS indirection table", "ETHTOOL_GRXFHINDIR", "rss_queues")
        if s.flows:
            _supported(errors, f"{path}.flows", nic, name, nic.rule_count,
                       "ntuple filters", "ETHTOOL_GRXCLSRLCNT", "flows")
    if errors:
        raise ConfigError(errors)


def _supported(errors, path, nic, name, ask, feature, command, key) -> None:
    try:
        ask(name)
    except EthtoolError as e:
        if e.errno == errno.EPERM:
            return
        errors.append(f"{path}: {name} (driver {nic.driver(name)}) has no {feature}: "
                      f"{command} answered {errname(e.errno)}; remove {key} or use a NIC "
                      "that has them")


# --- the journal ----------------------------------------------------------------

@dataclass
class NetdevSteering:
    """What xdpd changed on one netdev: each with the value it replaced."""
    name: str
    channels: dict | None = None        # {"before": [rx, tx, other, combined], "set": [...]}
    rss: dict | None = None             # {"before": [...], "set": [...]}
    rules: list[dict] = field(default_factory=list)   # {"location", "flow", "match"}

    @property
    def empty(self) -> bool:
        return self.channels is None and self.rss is None and not self.rules


def read_journal(path: str) -> tuple[run_record.Owner, list[NetdevSteering]] | None:
    try:
        doc = run_record.read_document(path, FORMAT)
        if doc is None:
            return None
        owner = run_record.owner_of(doc)
        netdevs = []
        for n in doc["netdevs"]:
            if not isinstance(n, dict) or not isinstance(n.get("rules", []), list):
                raise ValueError("a netdev entry is not an object with a list of rules")
            rules = [{"location": int(r["location"]), "flow": dict(r["flow"]),
                      "match": str(r["match"])} for r in n.get("rules", [])]
            netdevs.append(NetdevSteering(str(n["name"]), _pair(n.get("channels")),
                                          _pair(n.get("rss")), rules))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise JournalError(f"{path}: not an xdpd steering journal ({e!r})") from None
    return owner, netdevs


def _pair(value):
    if value is None:
        return None
    return {"before": [int(x) for x in value["before"]], "set": [int(x) for x in value["set"]]}


class Steering:
    """The steering xdpd applied, kept in the journal at `path` (None: no journal)."""

    def __init__(self, nic: Ethtool, path: str | None, owner: run_record.Owner | None):
        self.nic = nic
        self.path = path
        self.owner = owner
        self.netdevs: dict[str, NetdevSteering] = {}

    # -- journal --

    def _write(self) -> None:
        if self.path is None:
            return
        entries = [n for n in self.netdevs.values() if not n.empty]
        try:
            if not entries:
                run_record.remove(self.path)
                return
            run_record.write_json(self.path, {
                "format": FORMAT, "pid": self.owner.pid, "start_time": self.owner.start_time,
                "boot_id": self.owner.boot_id,
                "netdevs": [{"name": n.name, "channels": n.channels, "rss": n.rss,
                             "rules": n.rules} for n in entries]})
        except OSError as e:
            raise SteeringError(f"write {self.path} (the steering xdpd changed) failed: "
                                f"{errname(e.errno)}") from None

    def _entry(self, name: str) -> NetdevSteering:
        return self.netdevs.setdefault(name, NetdevSteering(name))

    # -- apply --

    def apply(self, iface: InterfaceConfig) -> None:
        """Channels, then RSS, then rules, each on the journal before or as it is made."""
        s = iface.steering
        if s.channels is not None:
            self.set_channels(iface.name, s.channels)
        if s.rss_queues is not None:
            self.set_rss(iface.name, s.rss_queues)
        for rule in s.flows:
            self.add_rule(iface.name, rule)

    def set_channels(self, name: str, count: int) -> None:
        ch = self._call(self.nic.get_channels, name)
        now = _counts(ch)
        if ch.max_combined:
            want = [now[0], now[1], now[2], count]
        else:
            want = [count, count if ch.max_tx >= count else now[1], now[2], now[3]]
        entry = self._entry(name)
        if want == now:
            return
        entry.channels = {"before": (entry.channels or {}).get("before", now), "set": want}
        self._write()
        self._call(self.nic.set_channels, name, *want)
        log.info("%s: channels %s (were %s)", name, _channels_text(want), _channels_text(now))

    def set_rss(self, name: str, queues: tuple[int, ...]) -> None:
        now = self._call(self.nic.get_indirection, name)
        want = [queues[i % len(queues)] for i in range(len(now))]
        entry = self._entry(name)
        if want == now:
            return
        entry.rss = {"before": (entry.rss or {}).get("before", now), "set": want}
        self._write()
        self._call(self.nic.set_indirection, name, want)
        log.info("%s: RSS spreads over queues %s (%d-entry table)", name,
                 ",".join(map(str, queues)), len(want))

    def add_rule(self, name: str, rule: FlowRule) -> None:
        spec = FlowSpec.of(rule.type, rule.queue, rule.src_ip, rule.dst_ip, rule.src_port,
                           rule.dst_port)
        _, size, driver_picks = self._call(self.nic.rule_count, name)
        location = RX_CLS_LOC_ANY
        if not driver_picks:
            # as ethtool(8) does: the lowest free location
            used = set(self._call(self.nic.rule_locations, name))
            location = next((n for n in range(size) if n not in used), None)
            if location is None:
                raise SteeringError(f"{name}: no free ntuple rule location (driver "
                                    f"{self.nic.driver(name)}, {size} in all); remove rules "
                                    f"with 'ethtool -N {name} delete N' or fewer flows")
        location = self._call(self.nic.insert_rule, name, spec, location)
        self._entry(name).rules.append({"location": location, "flow": asdict(rule),
                                        "match": FlowSpec.match_part(spec.pack()).hex()})
        self._write()
        log.info("%s: ntuple rule %s at location %d", name, describe_flow(rule), location)

    # -- undo --

    def undo(self, name: str) -> None:
        """Undo what xdpd changed on `name`, newest first; what fails is logged."""
        entry = self.netdevs.get(name)
        if entry is None:
            return
        undo_netdev(self.nic, entry, "xdpd")
        if entry.empty:
            del self.netdevs[name]
        try:
            self._write()
        except SteeringError as e:
            log.warning("%s", e)

    def undo_all(self) -> None:
        for name in reversed(list(self.netdevs)):
            self.undo(name)

    def update(self, old: InterfaceConfig, new: InterfaceConfig) -> None:
        """A reload: only what differs.  Channels are not changed live (config/diff.py refuses)."""
        name = new.name
        o, n = old.steering, new.steering
        entry = self._entry(name)
        for r in entry.rules[::-1]:
            if FlowRule(**r["flow"]) not in n.flows:
                _undo_rule(self.nic, name, r, "xdpd")
                entry.rules.remove(r)
                self._write()
        if o.rss_queues != n.rss_queues:
            if n.rss_queues is None:
                if entry.rss is not None:
                    _undo_pair(self.nic, name, "rss", entry, "xdpd")
                    self._write()
            else:
                self.set_rss(name, n.rss_queues)
        have = [FlowRule(**r["flow"]) for r in entry.rules]
        for rule in n.flows:
            if rule not in have:
                self.add_rule(name, rule)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except EthtoolError as e:
            raise SteeringError(str(e)) from None


def undo_netdev(nic: Ethtool, entry: NetdevSteering, whose: str) -> None:
    """Rules, then RSS, then channels: the reverse of apply."""
    for r in entry.rules[::-1]:
        _undo_rule(nic, entry.name, r, whose)
    entry.rules = []
    if entry.rss is not None:
        _undo_pair(nic, entry.name, "rss", entry, whose)
    if entry.channels is not None:
        _undo_pair(nic, entry.name, "channels", entry, whose)


def _undo_rule(nic: Ethtool, name: str, r: dict, whose: str) -> None:
    where = f"{name}: ntuple rule {describe_flow(FlowRule(**r['flow']))} at location " \
            f"{r['location']}"
    try:
        now = nic.get_rule(name, r["location"])
    except EthtoolError as e:
        log.warning("%s (added by %s): not removed, it is gone (%s)", where, whose,
                    errname(e.errno))
        return
    if FlowSpec.match_part(now).hex() != r["match"]:
        log.warning("%s (added by %s): not removed, another rule is there now", where, whose)
        return
    try:
        nic.delete_rule(name, r["location"])
    except EthtoolError as e:
        log.warning("%s: %s", where, e)
        return
    log.info("%s removed (added by %s)", where, whose)


def _undo_pair(nic: Ethtool, name: str, kind: str, entry: NetdevSteering, whose: str) -> None:
    pair = getattr(entry, kind)
    setattr(entry, kind, None)
    try:
        if kind == "rss":
            now = nic.get_indirection(name)
        else:
            now = _counts(nic.get_channels(name))
        if now != pair["set"]:
            log.warning("%s: %s changed since %s set them; left as they are", name,
                        "RSS indirection" if kind == "rss" else "channel counts", whose)
            return
        if kind == "rss":
            nic.set_indirection(name, pair["before"])
            log.info("%s: RSS indirection restored (set by %s)", name, whose)
        else:
            nic.set_channels(name, *pair["before"])
            log.info("%s: channels restored to %s (set by %s)", name,
                     _channels_text(pair["before"]), whose)
    except EthtoolError as e:
        log.warning("%s: restore %s: %s", name, kind, e)


def recover(path: str, nic: Ethtool, owner_alive=run_record.owner_alive,
            current_boot=run_record.boot_id) -> None:
    """At start: undo what a dead xdpd's journal names, then remove it.
    SteeringError if its owner still runs."""
    def undo(owner, netdevs):
        for entry in reversed(netdevs):
            undo_netdev(nic, entry, f"xdpd pid {owner.pid} that died")
    run_record.recover_journal(path, read_journal, undo, kind="steering",
                               nothing="nothing undone",
                               by_hand="check the NIC's channels, RSS and ntuple rules by "
                                       "hand (ethtool -l, -x, -n)",
                               refused=SteeringError, owner_alive=owner_alive,
                               current_boot=current_boot)


def describe_flow(rule: FlowRule) -> str:
    parts = [rule.type]
    for key in ("src_ip", "dst_ip", "src_port", "dst_port"):
        if getattr(rule, key) is not None:
            parts.append(f"{key} {getattr(rule, key)}")
    return " ".join(parts) + f" -> queue {rule.queue}"


def _counts(ch: Channels) -> list[int]:
    return [ch.rx, ch.tx, ch.other, ch.combined]


def _channels_text(counts: list[int]) -> str:
    names = ("rx", "tx", "other", "combined")
    return " ".join(f"{n} {c}" for n, c in zip(names, counts) if c) or "none"
