"""The YAML configuration's schema walk: text in, a frozen Config out.

Owns: load_config() and parse_config(), the one loader behind `xdpd
check-config`, start-up and `xdpd reload`, and the checks of every section.
Must not: touch the host (plan.py asks it), or read the file itself
(file.py does, with its permission checks).

Design
------
One loader serves `xdpd check-config`, start-up and `xdpd reload`, so an
operator gets the same answer from all three.  It works in two steps:

* parse_config() checks the schema: types, ranges, enums, and references
  between sections (a rule's `from`/`to` must name a listed interface).  It
  touches nothing on the host, so it runs unprivileged, anywhere, and the unit
  tests can pin every message down to the letter.
* check_host() (plan.py) asks a HostFacts object (xdpd.kernel.netdev.Host
  in the daemon, a fake in tests) whether the netdevs, queues and CPUs exist
  here.  It takes that object as an argument instead of importing the
  kernel-facing module, which keeps the config plane free of netlink.

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

import ipaddress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: importing the kernel-facing module is not needed here
    from xdpd.kernel.netdev import HostFacts

from xdpd.config.file import read_config_file
from xdpd.config.loader import MAX_FILE_BYTES, _UNREADABLE, _load_yaml, _top_level
from xdpd.config.model import (ACTIONS, CHECKSUM_MODES, ETHERTYPES, EXAMPLE, FALLBACKS,
                               FANOUT_SPREADS, FLOW_TYPES, FRAME_SIZES, HUGEPAGES, IDLE,
                               IP_PROTOS, MAX_CHANNELS, MAX_FANOUT, MAX_FORWARD_RULES,
                               MAX_NETDEVS, MAX_PASS_RULES, MAX_QUEUE, MAX_SPARE_WORKERS,
                               MAX_VLAN, MULTI_BUFFER, PLACEMENTS, SCHED_SLICE_US,
                               VLAN_ETHERTYPES, VLAN_NONE, VLAN_PROTOS, XDP_MODES, ZERO_COPY,
                               _ACCOUNT_NAME, Config, ControlConfig, FlowRule, ForwardRule,
                               InterfaceConfig, Match, MetricsConfig, RingsConfig,
                               SteeringConfig, UmemConfig, WorkersConfig, keys)
from xdpd.config.plan import check_host
from xdpd.config.values import (_Errors, _bool, _check_keys, _choice, _got, _id_list, _int,
                                _int_in, _listen, _mac, _netdev_name, _netdev_ref, _one_of,
                                _owned_refs, _power_of_two, _queue_text, _show)

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

    suggested = _check_keys(errs, "", top, keys(Config))
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
    suggested = _check_keys(errs, path, item, keys(InterfaceConfig))
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
    fields_ = _one_of(keys(Match))
    if not isinstance(item, dict):
        errs.at(path, f"expected a mapping with one or more of {fields_}, got {_got(item)}")
        return None
    if not item:
        errs.at(path, f"empty match would take every packet; give one or more of {fields_}")
        return None
    before = len(errs)
    _check_keys(errs, path, item, keys(Match))
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
    _check_keys(errs, path, value, keys(SteeringConfig))
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


def _flow(errs: _Errors, path: str, item: Any, owned, dev: str) -> FlowRule | None:
    if not isinstance(item, dict):
        errs.at(path, f"expected a mapping such as '{{type: udp4, dst_port: 4789, queue: 0}}', "
                      f"got {_got(item)}")
        return None
    before = len(errs)
    suggested = _check_keys(errs, path, item, keys(FlowRule))
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
    if not ips and not ports and not (set(item) - set(keys(FlowRule))):
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
    suggested = _check_keys(errs, path, item, keys(ForwardRule))
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
    _check_keys(errs, "workers", section, keys(WorkersConfig))
    cpus = _id_list(errs, "workers.cpus", section.get("cpus", d.cpus),
                    keyword="auto", noun="CPU", highest=None)
    placement = _choice(errs, "workers.placement", section.get("placement", d.placement),
                        PLACEMENTS)
    batch_size = _int_in(errs, "workers.batch_size", section.get("batch_size", d.batch_size), 1, 1024)
    idle = _choice(errs, "workers.idle", section.get("idle", d.idle), IDLE)
    busy_poll = _bool(errs, "workers.busy_poll", section.get("busy_poll", d.busy_poll))
    direct_tx = _bool(errs, "workers.direct_tx", section.get("direct_tx", d.direct_tx))
    share = _bool(errs, "workers.share_process", section.get("share_process", d.share_process))
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
    wake_latency = section.get("cpu_wake_latency_us", d.cpu_wake_latency_us)
    if wake_latency is not None:
        wake_latency = _int_in(errs, "workers.cpu_wake_latency_us", wake_latency, 0, 100_000,
                               hint="or null to leave the CPUs' idle states alone")
    slice_us = section.get("sched_slice_us", d.sched_slice_us)
    if slice_us is not None:
        slice_us = _int_in(errs, "workers.sched_slice_us", slice_us, *SCHED_SLICE_US,
                           hint="or null for the kernel's default slice")
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
    return WorkersConfig(cpus=cpus, placement=placement, batch_size=batch_size, idle=idle,
                         busy_poll=busy_poll, busy_poll_usecs=usecs, busy_poll_budget=budget,
                         tx_budget=tx_budget, user=user, group=group, direct_tx=direct_tx,
                         cpu_wake_latency_us=wake_latency, sched_slice_us=slice_us,
                         share_process=share)


def _umem(errs: _Errors, section: dict | None) -> UmemConfig | None:
    if section is None:
        return None
    before, d = len(errs), UmemConfig()
    _check_keys(errs, "umem", section, keys(UmemConfig))
    frame_size = _choice(errs, "umem.frame_size", section.get("frame_size", d.frame_size), FRAME_SIZES)
    frames = _power_of_two(errs, "umem.frames_per_worker",
                           section.get("frames_per_worker", d.frames_per_worker), 512, 65536)
    hugepages = _choice(errs, "umem.hugepages", section.get("hugepages", d.hugepages), HUGEPAGES)
    multi = _choice(errs, "umem.multi_buffer", section.get("multi_buffer", d.multi_buffer),
                    MULTI_BUFFER)
    spare = _int_in(errs, "umem.spare_workers", section.get("spare_workers", d.spare_workers),
                    0, MAX_SPARE_WORKERS)
    if len(errs) > before:
        return None
    return UmemConfig(frame_size=frame_size, frames_per_worker=frames, hugepages=hugepages,
                      spare_workers=spare, multi_buffer=multi)


def _rings(errs: _Errors, section: dict | None) -> RingsConfig | None:
    if section is None:
        return None
    before, d = len(errs), RingsConfig()
    _check_keys(errs, "rings", section, keys(RingsConfig))
    sizes = {key: _power_of_two(errs, f"rings.{key}", section.get(key, getattr(d, key)), 64, 16384)
             for key in keys(RingsConfig)}
    if len(errs) > before:
        return None
    return RingsConfig(**sizes)


def _metrics(errs: _Errors, section: dict | None) -> MetricsConfig | None:
    if section is None:
        return None
    before = len(errs)
    _check_keys(errs, "metrics", section, keys(MetricsConfig))
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
    _check_keys(errs, "control", section, keys(ControlConfig))
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


