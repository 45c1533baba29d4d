"""What a reload would change: the diff between the running configuration
and a new one, keyed by worker identity: the worker's name (netdev/queue,
or netdev/queue.member on an interface with fanout).

Pure: no kernel calls, so the rules for what may change live are unit
tested on their own.  The supervisor applies the result (control/apply.py,
Supervisor.reload); the order it applies it in is what keeps packets.

Live:
  - forwarding rules: a new table, switched between two batches;
  - interfaces and queues added: new sockets and workers, then XSKMAP;
  - interfaces and queues removed: out of XSKMAP, drained, stopped; on an
    interface with fanout, a queue comes and goes with all its members;
  - an interface's `fallback`, `fanout_spread` (the queues' config in the
    XDP program) and `pass_to_kernel` (map writes; the program stays
    attached).
  - an interface's `steering.rss_queues` and `steering.flows` (only the
    rules that differ are removed or inserted);
  - an interface's `checksum` (a flag of its netdev in the table).
Not live (refused, with what to do): anything sized or bound at start -
`umem`, `rings`, `workers`, `metrics`, `control` - and an existing
interface's `xdp_mode` / `zero_copy` / `steering.channels` / `fanout`.

Which is which is declared with each key in config/model.py (live(step),
restart(why)); the tables below are read from there, and
tests/unit/test_reload_diff.py holds every key to its declaration.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from xdpd.config.model import Config, InterfaceConfig, SteeringConfig, WorkerPlan, reload_class

# What to do instead of changing fanout live: for the refusal message.
FANOUT_ADVICE = "remove {name} in one reload and add it back in the next"


def _keys(cls, kind: str, how: str | None = None) -> tuple[str, ...]:
    """The fields of cls declared `kind` (and, for live ones, applied by
    step `how`): config/model.py declares each field's class with the field."""
    return tuple(f.name for f in fields(cls) if reload_class(f)[0] == kind and
                 (how is None or reload_class(f)[1] == how))


def _why(cls, name: str) -> str:
    return reload_class(next(f for f in fields(cls) if f.name == name))[1]


# Sections fixed at start (restart), and why, for the refusal message.
FIXED_SECTIONS = {name: _why(Config, name) for name in _keys(Config, "restart")}
FIXED_INTERFACE_KEYS = {name: _why(InterfaceConfig, name)
                        for name in _keys(InterfaceConfig, "restart")}
FIXED_STEERING_KEYS = {name: _why(SteeringConfig, name)
                       for name in _keys(SteeringConfig, "restart")}
# An interface's keys that are its queues' config in the XDP program: a
# change is a map write, live.
QUEUE_CONF_KEYS = _keys(InterfaceConfig, "live", "queue_conf")


class Refused(Exception):
    """The new configuration is valid but cannot be applied live."""


@dataclass
class ReloadPlan:
    add_interfaces: list[InterfaceConfig] = field(default_factory=list)
    remove_interfaces: list[str] = field(default_factory=list)
    add_workers: list[WorkerPlan] = field(default_factory=list)
    remove_workers: list[str] = field(default_factory=list)        # worker names
    # interfaces whose QUEUE_CONF_KEYS changed (the new config), and which keys
    queue_conf_changes: list[InterfaceConfig] = field(default_factory=list)
    queue_conf_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pass_rule_changes: list[InterfaceConfig] = field(default_factory=list)
    steering_changes: list[InterfaceConfig] = field(default_factory=list)   # the new config
    checksum_changes: list[InterfaceConfig] = field(default_factory=list)   # the new config
    rules_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.add_interfaces or self.remove_interfaces or self.add_workers or
                    self.remove_workers or self.queue_conf_changes or
                    self.pass_rule_changes or self.steering_changes or
                    self.checksum_changes or self.rules_changed)

    def summary(self) -> list[str]:
        """One line per change, for the log and the reload answer."""
        lines = []
        lines += [f"interface {i.name} added" for i in self.add_interfaces]
        lines += [f"interface {n} removed" for n in self.remove_interfaces]
        lines += [f"worker {p.name} added (CPU {p.cpu})" for p in self.add_workers]
        lines += [f"worker {n} removed" for n in self.remove_workers]
        lines += [f"{i.name}: " + ", ".join(
                      f"{key} {getattr(i, key)}"
                      for key in self.queue_conf_keys.get(i.name, QUEUE_CONF_KEYS))
                  for i in self.queue_conf_changes]
        lines += [f"{i.name}: pass_to_kernel: "
                  + ("; ".join(m.describe() for m in i.pass_to_kernel) or "none")
                  for i in self.pass_rule_changes]
        lines += [f"{i.name}: steering changed" for i in self.steering_changes]
        lines += [f"{i.name}: checksum {i.checksum}" for i in self.checksum_changes]
        if self.rules_changed:
            lines.append("forwarding rules changed")
        return lines


def _changed_keys(section: str, old, new) -> list[str]:
    return [f"{section}.{f.name}: {getattr(old, f.name)!r} -> {getattr(new, f.name)!r}"
            for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def diff(old: Config, new: Config, old_plans: list[WorkerPlan],
         new_plans: list[WorkerPlan], free_slots: int, zero_copy: bool) -> ReloadPlan:
    """The changes from old to new; raise Refused naming every change that
    cannot be applied live and what to do instead."""
    refusals = []
    for section, why in FIXED_SECTIONS.items():
        changed = _changed_keys(section, getattr(old, section), getattr(new, section))
        if changed:
            refusals.append(f"{'; '.join(changed)}: {why}")

    plan = ReloadPlan()
    refanned: set[str] = set()      # interfaces whose fanout change is refused
    old_ifaces = {i.name: i for i in old.interfaces}
    new_ifaces = {i.name: i for i in new.interfaces}
    for name, iface in new_ifaces.items():
        before = old_ifaces.get(name)
        if before is None:
            plan.add_interfaces.append(iface)
            if (iface.zero_copy == "on" and not zero_copy) or \
                    (iface.zero_copy == "off" and zero_copy):
                refusals.append(f"interface {name}: zero_copy {iface.zero_copy} but the "
                                f"running sockets are in {'zero-copy' if zero_copy else 'copy'} "
                                "mode: all sockets share one UMEM and so one mode")
            continue
        for key, why in FIXED_INTERFACE_KEYS.items():
            if getattr(before, key) == getattr(iface, key):
                continue
            refusal = (f"interface {name}: {key} {getattr(before, key)!r} -> "
                       f"{getattr(iface, key)!r}: {why}")
            if key == "fanout":         # its workers are renamed: not also added
                refusal += "; " + FANOUT_ADVICE.format(name=name)
                refanned.add(name)
            refusals.append(refusal)
        queue_conf = tuple(key for key in QUEUE_CONF_KEYS
                           if getattr(before, key) != getattr(iface, key))
        if queue_conf:
            plan.queue_conf_changes.append(iface)
            plan.queue_conf_keys[name] = queue_conf
        if before.pass_to_kernel != iface.pass_to_kernel:
            plan.pass_rule_changes.append(iface)
        if before.checksum != iface.checksum:
            plan.checksum_changes.append(iface)
        steering_fixed = [f"interface {name}: steering.{key} "
                          f"{getattr(before.steering, key)!r} -> "
                          f"{getattr(iface.steering, key)!r}: {why}"
                          for key, why in FIXED_STEERING_KEYS.items()
                          if getattr(before.steering, key) != getattr(iface.steering, key)]
        if steering_fixed:
            refusals += steering_fixed
        elif before.steering != iface.steering:
            plan.steering_changes.append(iface)
    plan.remove_interfaces = [n for n in old_ifaces if n not in new_ifaces]

    running = {p.name for p in old_plans}
    wanted = {p.name for p in new_plans}
    plan.add_workers = [p for p in new_plans if p.name not in running]
    plan.remove_workers = [p.name for p in old_plans if p.name not in wanted]
    # a refused fanout change renames its interface's workers: not also a
    # shortage of slots
    adding = [p for p in plan.add_workers if p.netdev not in refanned]
    if len(adding) > free_slots:
        refusals.append(f"{len(adding)} workers to add "
                        f"({', '.join(p.name for p in adding)}) but only "
                        f"{free_slots} free worker slots: raise umem.spare_workers (now "
                        f"{old.umem.spare_workers}) and restart, or remove queues in one "
                        "reload and add them in the next")
    if not new_plans:
        refusals.append("the new configuration owns no queues at all")

    plan.rules_changed = old.forward != new.forward
    if refusals:
        raise Refused("cannot apply live: " + " | ".join(refusals) +
                      "; the running configuration stays; restart xdpd "
                      "(systemctl restart xdpd) to apply such changes")
    return plan
