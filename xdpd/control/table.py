"""The forwarding table the workers read, compiled from the configuration.

Owns: compile_table(): per ingress netdev its rules and egress lanes, in
the form Control.write_table() takes.
Must not: write the table (the supervisor does, with the generation and
acknowledgements) or know about processes.
"""
from __future__ import annotations

from xdpd.config.model import L2_OVERHEAD, VLAN_PROTOS, Config
from xdpd.control.workers import Interface, Worker
from xdpd.kernel.xdp_program import match_to_c

MAX_DIRECT = 8                      # FP_MAX_DIRECT: direct sockets per worker


def compile_table(config: Config, interfaces: list[Interface], workers: list[Worker],
                  old_config: Config | None = None,
                  exclude: frozenset[int] = frozenset(),
                  mtus: dict[str, int] | None = None) -> list[list[dict] | None]:
    """The YAML rules as the flat table the fast path reads, indexed by
    the netdev index each worker was given (holes: None): per ingress
    netdev its rules in the file's order, each with its match (struct
    fp_match) and its index in `forward` (the metrics' rule label).
    `mtus` (by netdev) limits the frame length a forward rule lets through.

    During a reload, an interface being removed keeps its rules, egress and
    all, from old_config (what its worker still has on the RX ring goes
    where it always went); in the new rules the workers in `exclude` (being
    removed) are nobody's egress."""
    names = {i.name for i in config.interfaces}
    table: list[list[dict] | None] = \
        [None] * (max((i.index for i in interfaces), default=-1) + 1)
    for iface in interfaces:
        source = config if iface.name in names else old_config
        rules = source.rules_for(iface.name) if source else ()
        if not rules:
            continue                        # counted as no_rule
        gone = exclude if source is config else frozenset()
        compiled = []
        for rule in rules:
            entry = {"action": rule.action, "id": rule.index,
                     "match": bytes(match_to_c(rule.match)) if rule.match else None}
            if rule.action == "forward":
                mtu = (mtus or {}).get(rule.to)
                entry.update(
                    egress=[w.id for w in workers if w.plan.netdev == rule.to and w.id not in gone],
                    set_dst_mac=rule.set_dst_mac, set_src_mac=rule.set_src_mac,
                    swap_macs=rule.swap_macs, max_len=mtu + L2_OVERHEAD if mtu else None,
                    push_vlan=rule.push_vlan, vlan_proto=VLAN_PROTOS[rule.vlan_proto],
                    pop_vlan=rule.pop_vlan)
            compiled.append(entry)
        table[iface.index] = compiled
    return table
