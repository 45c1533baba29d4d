"""The config loader under generated and mutated input: an answer, never a traceback.

`xdpd check-config`, start-up and `xdpd reload` all read a file the same way:
read_config_file(), parse_config(), check_host() (load_config() does the
three), and check-config then plans the workers.  These tests feed that path
thousands of files:

* built from the schema: the real sections and keys with values of the right
  and the wrong type, out-of-range numbers, odd strings and MAC addresses,
  explicit tags, unknown, missing and duplicate keys, anchors and aliases,
  nested junk;
* mutations of the shipped config/xdpd.yaml: flipped and replaced bytes,
  truncation, deleted, duplicated and swapped lines, changed indentation,
  inserted unicode and YAML syntax;
* arbitrary bytes and text.

Properties, for every file:

1. load_config() returns a Config (and then plan_workers() a plan) or raises
   ConfigError; any other exception is a traceback an operator would see.
2. Every line of a ConfigError is printable text on one line, and names
   where the problem is.  A line is one of
     FILE:LINE[:COL]: message   a place in the file (not UTF-8, YAML syntax,
                                a duplicate key); LINE is within the file
     FILE: PATH: message        PATH leads into the document the loader read:
                                mapping keys joined by '.', list items as [i],
                                each step present in the document, except that
                                the last may be a schema key that is missing
     FILE: message              only when there is no document to point into:
                                the text is not YAML, or is empty, or its top
                                level is not a mapping
   where FILE is the path exactly as given to the loader.
3. What it accepts can be used: netdev names and the metrics host are
   printable, the control socket path has no NUL.

derandomize=True: the same examples on every run, so a CI failure reproduces.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdpd.config.loader import _Loader
from xdpd.config.model import (Config, ConfigError, ControlConfig, ForwardRule,
                               InterfaceConfig, Match, MetricsConfig, RingsConfig, UmemConfig,
                               WorkersConfig, keys)
from xdpd.config.plan import plan_workers
from xdpd.config.schema import load_config

with open(os.path.join(os.path.dirname(__file__), "..", "..", "config", "xdpd.yaml"), "rb") as f:
    SHIPPED = f.read()

# 1000 + 1200 + 300 files: about 15 s
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class FakeHost:
    """Every netdev but eth9 exists, so that whatever the schema lets through
    reaches the host checks and the plan; four CPUs."""

    queues = {"veth-a": 2, "veth-b": 4, "eth0": 8}

    def netdev_exists(self, name: str) -> bool:
        return name != "eth9"

    def rx_queue_count(self, name: str) -> int:
        return self.queues.get(name, 4)

    def online_cpus(self) -> frozenset[int]:
        return frozenset({0, 1, 2, 3})


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz") / "xdpd.yaml")


def check_load(path: str, data: bytes) -> None:
    """The three properties for one file."""
    with open(path, "wb") as f:
        f.write(data)
    host = FakeHost()
    try:
        config = load_config(path, host)
    except ConfigError as e:
        check_error_lines(e, path, data)
        return
    check_accepted(config)
    assert len(plan_workers(config, host)) > 0


def check_accepted(config) -> None:
    """Property 3: xdpd can put what the loader accepts in a syscall, a log line
    and a metric label."""
    for name in [i.name for i in config.interfaces] + [r.from_ for r in config.forward]:
        assert name.isprintable(), f"netdev name {name!r} accepted"
    if config.metrics.listen is not None:
        assert config.metrics.listen[0].isprintable(), f"metrics host {config.metrics.listen!r}"
    assert "\0" not in config.control.socket, f"control socket {config.control.socket!r}"


# --- property 2: every line says where ----------------------------------------

_NO_DOCUMENT = object()
_MISSING = object()
SCHEMA_KEYS = frozenset(k for section in (Config, InterfaceConfig, Match, ForwardRule, WorkersConfig,
                                           UmemConfig, RingsConfig, MetricsConfig, ControlConfig)
                        for k in keys(section))
SCHEMA_KEYS_LIST = sorted(SCHEMA_KEYS)


def check_error_lines(error: ConfigError, path: str, data: bytes) -> None:
    assert error.errors, "a ConfigError with no message"
    assert str(error).splitlines() == error.errors, f"a message spans lines: {error.errors!r}"
    document = _document(data)
    last_line = data.count(b"\n") + 1
    for line in error.errors:
        assert line.isprintable(), f"unprintable characters in {line!r}"
        assert line.startswith(path + ":"), f"does not name the file: {line!r}"
        rest = line[len(path):]
        at = re.match(r":(\d+)(?::(\d+))?: \S", rest)
        if at:
            assert 1 <= int(at.group(1)) <= last_line, f"no such line: {line!r}"
            assert at.group(2) is None or int(at.group(2)) >= 1, line
            continue
        assert rest.startswith(": ") and len(rest) > 2, f"no place named: {line!r}"
        if document is _NO_DOCUMENT or not isinstance(document, dict):
            continue
        assert any(after.startswith(": ") and len(after) > 2
                   for after in _path_ends(document, rest[2:], top=True)), \
            f"no YAML path into the document: {line!r}"


def _document(data: bytes):
    """The document as the loader reads it, or _NO_DOCUMENT."""
    try:
        return yaml.load(data.decode("utf-8"), Loader=_Loader)
    except Exception:  # any failure here was reported as a syntax or decoding error
        return _NO_DOCUMENT


def _name(key) -> str:
    """A key as a step of a path: a plain word as written, other text quoted
    (so that no key can break the line or pass for a path), others as YAML."""
    if isinstance(key, str):
        if re.fullmatch(r"[A-Za-z0-9_-]+", key) and len(key) <= 40:
            return key
        # quoted, and a long one clipped to 40 characters as messages show it
        return repr(key if len(key) <= 40 else key[:37] + "...")
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _path_ends(node, rest: str, top: bool):
    """What follows each path into `node` that `rest` starts with."""
    if isinstance(node, dict):
        steps = [(_name(key), child) for key, child in node.items()]
        steps += [(key, _MISSING) for key in SCHEMA_KEYS if key not in node]
        for name, child in steps:
            step = name if top else "." + name
            if step and rest.startswith(step):
                yield rest[len(step):]
                if child is not _MISSING:
                    yield from _path_ends(child, rest[len(step):], top=False)
    elif isinstance(node, list):
        index = re.match(r"\[(\d+)\]", rest)
        if index and int(index.group(1)) < len(node):
            yield rest[index.end():]
            yield from _path_ends(node[int(index.group(1))], rest[index.end():], top=False)


# --- (a) configurations built from the schema ---------------------------------
# A generated document is a small tree that emit() writes as YAML text, so a
# scalar is exactly what an operator could type (unquoted 12:34:56:78:9a:bc,
# `on`, `0x_`, `!!int x`), not what a YAML dumper would make of a value.

@dataclass
class Scalar:
    text: str


@dataclass
class Alias:
    name: str


@dataclass
class Seq:
    items: list
    flow: bool = False
    anchor: str | None = None


@dataclass
class Map:
    items: list                 # (key text, node); a key may repeat
    flow: bool = False
    anchor: str | None = None


NUMBERS = [
    "0", "1", "-1", "2", "3", "7", "8", "15", "16", "20", "31", "32", "63", "64", "65", "100",
    "255", "256", "511", "512", "1023", "1024", "1025", "2048", "4096", "8192", "10000", "10001",
    "16384", "16385", "65535", "65536", "65537", "2147483648", "9223372036854775808",
    "18446744073709551616", "9" * 30, "9" * 5000, "0x40", "0x1000", "0x_", "0x__", "0xFF_FF",
    "0x" + "f" * 40, "0x" + "f" * 5000, "1_000", "1_", "+5", "-0", "+0", "007", "0o17", "0b101",
    "1.5", "2048.0", "-1.0", ".inf", "-.inf", ".nan", "1e3", "1e999", "1:30", "190:20:30",
]
WORDS = [
    "veth-a", "veth-b", "eth0", "lo", "eth1", "all", "auto", "native", "generic", "on", "off",
    "yes", "no", "y", "n", "pass", "drop", "forward", "sleep", "spin", "true", "false", "True",
    "FALSE", "null", "~", "Null", "x", "eth/0", "eth:0", "a b", "..", ".", "é", "ünïcödé",
    "ethernet-interface-0", "0123456789abcdef", "-", "=", "<<",
]
DATES = ["2024-01-31", "2024-13-01", "2024-02-30", "0000-00-00", "9999-12-31",
         "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5", "2001-12-14T25:00:00Z",
         "2001-12-14t21:59:43.10+99:99"]
MACS = ["02:00:00:00:00:04", "02:00:00:00:00:03", "12:34:56:78:9a:bc", "12:34:56:00:00:01",
        "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "03:00:00:00:00:00", "00:00:00:00:00:00",
        "02:00:00:00:00", "02:00:00:00:00:00:00", "02-00-00-00-00-04", "0200.0000.0004",
        "g2:00:00:00:00:04", "2:0:0:0:0:4", "02:00:00:00:00:0", "59:59:59:59:59:59"]
LISTENS = ["127.0.0.1:9464", "0.0.0.0:0", "[::1]:9464", "[::]:1", "localhost:9100", ":9464",
           "::1:9464", "[::1]", "[::1]x", "[::1:9464", "[fe80::1%eth0]:9464", "[zz]:1",
           "localhost:http", "127.0.0.300:1", "127.0.0.1:99999", "127.0.0.1:", "host",
           "-bad-:1", "a..b:1", "1.2.3.4.5:6", "127.0.0.1:0x10", "127.0.0.1:+1"]
PATHS = ["/run/xdpd/xdpd.sock", "/tmp/x.sock", "relative.sock", "/", "/" + "a" * 120,
         "/run/xdpd/" + "é" * 60]
TAGGED = [
    "!!int abc", "!!int ''", "!!int 0b2", "!!int 0x", "!!int 1:x", "!!float x", "!!float ''",
    "!!float 1:x", "!!bool maybe", "!!bool ''", "!!timestamp never", "!!timestamp 2024-13-01",
    "!!binary 'not base64!'", "!!binary aGVsbG8=", "!!str 5", "!!null x", "!!int 5",
    "!!set {a, b}", "!!omap [a]", "!!omap [{a: 1}]", "!!pairs [x]", "!!map [1]", "!!seq {a: 1}",
    "!!python/name:os.system", "!!python/object/apply:os.getpid []", "!custom x",
    "!<tag:example.com,2000:x> y", "!!merge x", "!!value x",
]
QUOTED = ['""', "''", '"\\ud800"', '"\\ud83d\\ude00"', '"\\0"', '"eth\\0x"', '"\\e[31mred"',
          '"\\u2028"', '"\\x85"', '"a\\nb"', '"\\t"', '"\\x7f"', '"\\uFEFF"', "'it''s'",
          '"\\U0001F600"', '"\\N"', '"\\_"', '"\\L\\P"', '"\\ud800x"']


def _scalars(*pools: list[str]) -> st.SearchStrategy:
    return st.sampled_from([text for pool in pools for text in pool]).map(Scalar)


quoted_text = st.builds(lambda s, ascii_: Scalar(json.dumps(s, ensure_ascii=ascii_)),
                        st.text(max_size=20), st.booleans())
single_quoted = st.text(max_size=12).map(lambda s: Scalar("'" + s.replace("'", "''") + "'"))
any_scalar = st.one_of(
    _scalars(NUMBERS, WORDS), _scalars(DATES, MACS, LISTENS, PATHS), _scalars(TAGGED, QUOTED),
    quoted_text, single_quoted,
)
ANCHORS = ["a", "b", "c"]
aliases = st.sampled_from(ANCHORS).map(Alias)
anchors = st.sampled_from([None] * 12 + ANCHORS)   # a repeated anchor is an error too
unknown_keys = st.one_of(
    st.sampled_from(["metric", "interface", "qeues", "queue", "xdpmode", "form", "too",
                     "swap_mac", "frame-size", "cpu", "batch", "listen_on", "sockets", "Name",
                     "names", "logging", "<<", "?", "1", "0x10", "null", "~", "true", "on",
                     "2024-01-31", "1.5", "'quoted key'", '"\\ud800"', '"a\\nb"', '"\\e[0m"',
                     '"\\u2028"', '"a: b"', '"a.b"', '"[0]"', "''", '"\\x85"', "[a, b]",
                     "{a: 1}", "!!int x", "!!bool y", "!!float z"]),
    st.text(max_size=10).map(json.dumps),
)


any_key = st.one_of(unknown_keys, st.sampled_from(SCHEMA_KEYS_LIST))
junk = st.recursive(                # arbitrary nested YAML, aliases included
    st.one_of(any_scalar, aliases),
    lambda inner: st.one_of(
        st.builds(Seq, st.lists(inner, max_size=3), st.booleans(), anchors),
        st.builds(Map, st.lists(st.tuples(any_key, inner), max_size=3), st.booleans(), anchors),
    ),
    max_leaves=5,
)
anything = st.one_of(any_scalar, aliases, junk)


def _flow_list(items: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(Seq, st.lists(items, max_size=4), st.booleans(), anchors)


# Per key: values the schema accepts (including the odd ones that it should
# still let through, or refuse: a NUL or an escape character in a name), and
# values of the right kind that may well be wrong.
small_ints = _scalars(["0", "1", "2", "3", "4", "7", "8", "-1", "255", "256", "0x1", "1_0",
                       "99999999999999999999", "0x" + "f" * 40, "x", "1.0", "true", "~"])
POWERS = ["64", "128", "512", "1024", "2048", "4096", "16384", "0x800"]
GOOD_NAMES = ["veth-a", "veth-b", "eth0"] * 4 + [
    "'veth-a'", '"veth-b"', '"eth\\0x"', '"\\e[31m"', '"e\\u0085"', '"\\u00e9th"', "eth0.100",
    "br-lan"]
VALID = {
    "name": _scalars(GOOD_NAMES),
    "queues": _scalars(["all", "[0]", "[0, 1]", "[1, 0]", "[0, 2, 3]", "[3]"]),
    "xdp_mode": _scalars(["native", "generic", "auto"]),
    "zero_copy": _scalars(["on", "off", "auto"]),
    "fallback": _scalars(["pass", "drop"]),
    "fanout": _scalars(["1", "2", "4", "16"]),
    "fanout_spread": _scalars(["flow_hash", "round_robin"]),
    "checksum": _scalars(["auto", "complete", "off"]),
    "pass_to_kernel": _scalars(["[]", "[{ethertype: arp}]", "[{ip_proto: tcp, dst_port: 22}]",
                                "[{vlan: none, src: 10.0.0.0/8}, {dst: '2001:db8::/32'}]"]),
    "steering": _scalars(["{}", "{channels: 4}", "{rss_queues: [0]}",
                          "{flows: [{type: udp4, dst_port: 53, queue: 0}]}"]),
    "from": _scalars(["veth-a", "veth-b"]),
    "to": _scalars(["veth-a", "veth-b"]),
    "action": _scalars(["forward"]),
    "match": _scalars(["{ip_proto: udp, dst_port: 53}", "{ethertype: arp}", "{vlan: none}",
                       "{src: 10.0.0.0/8, dst_port: 80}"]),
    "set_dst_mac": _scalars(MACS[:6]),
    "set_src_mac": _scalars(MACS[:4]),
    "swap_macs": _scalars(["false"]),
    "push_vlan": _scalars(["0", "100", "4095"]),
    "vlan_proto": _scalars(["802.1q", "802.1ad"]),
    "pop_vlan": _scalars(["false"]),
    "cpus": st.one_of(_scalars(["auto", "[0]", "[3, 1]"])),
    "placement": _scalars(["spread", "by_queue", "adaptive"]),
    "batch_size": _scalars(["1", "64", "1024", "0x40"]),
    "idle": _scalars(["adaptive", "sleep", "spin"]),
    "busy_poll": _scalars(["true", "false"]),
    "direct_tx": _scalars(["true", "false"]),
    "share_process": _scalars(["true", "false"]),
    "busy_poll_usecs": _scalars(["1", "20", "10000"]),
    "busy_poll_budget": _scalars(["1", "64", "1024"]),
    "tx_budget": _scalars(["auto", "0", "32", "256"]),
    "cpu_wake_latency_us": _scalars(["0", "20", "100000", "null"]),
    "sched_slice_us": _scalars(["100", "3000", "100000", "null"]),
    "user": _scalars(["nobody", "xdpd-worker"]),
    "group": _scalars(["nogroup", "xdpd-worker", "null"]),
    "frame_size": _scalars(["2048", "4096"]),
    "frames_per_worker": _scalars(["512", "4096", "65536"]),
    "hugepages": _scalars(["on", "off", "auto"]),
    "multi_buffer": _scalars(["auto", "on", "off"]),
    "spare_workers": _scalars(["0", "2", "64"]),
    "rx": _scalars(POWERS), "tx": _scalars(POWERS[4:]),
    "fill": _scalars(POWERS), "completion": _scalars(POWERS),
    "listen": _scalars(["127.0.0.1:9464", "'[::1]:9464'", "null", "localhost:9100",
                        "'[fe80::1%lo]:1'", '"[fe80::1%\\0]:1"', '"[fe80::1%\\e]:1"']),
    "socket": _scalars(["/run/xdpd/xdpd.sock", "/tmp/x.sock", '"/run/\\e[0m.sock"']),
    "status_group": _scalars(["xdpd-status", "adm", "null"]),
}
PLAUSIBLE = {
    "name": _scalars(WORDS[:5], ["eth0:1", "a" * 16, "ä" * 8, "eth9"], QUOTED),
    "queues": st.one_of(_scalars(["all", "auto", "[]", "[0]", "0"]), _flow_list(small_ints)),
    "xdp_mode": _scalars(["native", "generic", "auto", "Native", "skb", "on"]),
    "zero_copy": _scalars(["on", "off", "auto", "true", "false", "yes"]),
    "fallback": _scalars(["pass", "drop", "PASS", "forward"]),
    "fanout": _scalars(NUMBERS, ["auto", "[2]"]),
    "fanout_spread": _scalars(["flow_hash", "round_robin", "hash", "rr", "true", "null"]),
    "checksum": _scalars(["auto", "complete", "off", "on", "fix", "true", "null"]),
    "pass_to_kernel": _scalars(["[]", "{}", "[{}]", "[arp]", "[{ethertype: 0x8100}]",
                                "[{vlan: 4096}]", "[{ip_proto: icmp, dst_port: 1}]",
                                "[{src: 10.0.0.1/8}]", "[{src: '::/0', dst: 0.0.0.0/0}]",
                                "[{dport: 22}]", "[{vlan: '\\e[0m'}]", "null"]),
    "steering": _scalars(["{}", "{channels: 1}", "{channels: 0}", "{rss_queues: all}",
                          "{rss_queues: [9]}", "{flows: []}", "[4]", "null",
                          "{flows: [{type: udp6, dst_ip: 10.0.0.1, queue: 0}]}",
                          "{flows: [{type: tcp4, queue: 3}]}", "{flows: [7]}"]),
    "from": _scalars(["veth-a", "veth-b", "eth0", "eth9", "1234"]),
    "to": _scalars(["veth-a", "veth-b", "eth0", "eth9", "1234"]),
    "action": _scalars(["forward", "drop", "pass", "Drop"]),
    "match": _scalars(["{}", "[]", "null", "{dport: 53}", "{ip_proto: icmp, src_port: 1}",
                       "{vlan: 4096}", "{src: '::/0', dst: 0.0.0.0/0}"]),
    "set_dst_mac": _scalars(MACS),
    "set_src_mac": _scalars(MACS),
    "swap_macs": _scalars(["true", "false", "yes", "on", "1"]),
    "push_vlan": _scalars(["-1", "4096", "'100'", "true", "1.5", "0x64"]),
    "vlan_proto": _scalars(["802.1Q", "qinq", "0x8100", "33024"]),
    "pop_vlan": _scalars(["true", "false", "yes", "1"]),
    "cpus": st.one_of(_scalars(["auto", "all", "[]", "0"]), _flow_list(small_ints)),
    "placement": _scalars(["by-queue", "paired", "Spread", "Adaptive", "1"], ["null", "[]"]),
    "batch_size": _scalars(NUMBERS),
    "idle": _scalars(["sleep", "spin", "poll", "on"]),
    "busy_poll": _scalars(["true", "false", "on", "1"]),
    "direct_tx": _scalars(["true", "false", "on", "1"]),
    "share_process": _scalars(["true", "false", "yes", "0"]),
    "busy_poll_usecs": _scalars(NUMBERS),
    "busy_poll_budget": _scalars(NUMBERS),
    "tx_budget": _scalars(NUMBERS, ["auto", "off"]),
    "cpu_wake_latency_us": _scalars(NUMBERS, ["auto", "off", "-1", "100001"]),
    "sched_slice_us": _scalars(NUMBERS, ["auto", "99", "100001"]),
    "user": _scalars(["root", "Ops", "a b"], ["null", "42"]),
    "group": _scalars(["root", "-x"], ["42", "[]"]),
    "frame_size": _scalars(NUMBERS),
    "frames_per_worker": _scalars(NUMBERS),
    "hugepages": _scalars(["on", "off", "auto", "true", "2M"]),
    "multi_buffer": _scalars(["yes", "true", "9000", "sg"]),
    "spare_workers": _scalars(NUMBERS),
    "rx": _scalars(NUMBERS), "tx": _scalars(NUMBERS),
    "fill": _scalars(NUMBERS), "completion": _scalars(NUMBERS),
    "listen": _scalars(LISTENS, ["null", "~", "9464"]),
    "socket": _scalars(PATHS, ["null", "42"]),
    "status_group": _scalars(["xdpd-status", "Ops", "a b", "-x"], ["null", "42"]),
}
WRONG = {key: st.one_of(values, values, values, anything) for key, values in PLAUSIBLE.items()}
percent = st.integers(0, 99)


@st.composite
def section(draw, keys: tuple[str, ...], required: tuple[str, ...], mischief: int,
            valid: dict | None = None) -> Map:
    """A mapping with some of `keys` (most of `required`); each value is wrong
    `mischief` times in a hundred, and so is the mapping (an unknown or
    repeated key, or an entry that is not a mapping).  `valid` overrides
    VALID for some keys."""
    valid = {**VALID, **(valid or {})}
    chosen = [k for k in keys if draw(percent) < (95 if k in required else 40)]
    items = [(k, draw(WRONG[k] if draw(percent) < mischief else valid[k])) for k in chosen]
    if draw(percent) < mischief // 3:
        items.append((draw(unknown_keys), draw(anything)))
    if items and draw(percent) < mischief // 4:
        items.append((items[draw(st.integers(0, len(items) - 1))][0], draw(any_scalar)))
    items = draw(st.permutations(items))
    return Map(list(items), flow=draw(percent) < 20, anchor=draw(anchors) if mischief else None)


@st.composite
def entries(draw, keys: tuple[str, ...], required: tuple[str, ...], mischief: int,
            valid: list[dict]) -> Seq:
    """A list of mappings, the i-th with the values valid[i] where they are right;
    as many as `valid` has unless mischief adds or leaves out some."""
    count = draw(st.integers(0, 4)) if draw(percent) < mischief else len(valid)
    items = [draw(anything) if draw(percent) < mischief // 4 else
             draw(section(keys, required, mischief, valid[i % len(valid)]))
             for i in range(count)]
    return Seq(items, flow=draw(percent) < 15, anchor=draw(anchors) if mischief else None)


SECTIONS = {  # name: (keys, required keys, a list of them?)
    "interfaces": (keys(InterfaceConfig), ("name",), True),
    "forward": (keys(ForwardRule), ("from", "to", "set_src_mac"), True),
    "workers": (keys(WorkersConfig), (), False),
    "umem": (keys(UmemConfig), (), False),
    "rings": (keys(RingsConfig), (), False),
    "metrics": (keys(MetricsConfig), (), False),
    "control": (keys(ControlConfig), (), False),
}
prologues = st.sampled_from(["", "", "", "", "---\n", "%YAML 1.1\n---\n", "# comment\n",
                             "%TAG ! tag:x,2000:\n---\n"])
epilogues = st.sampled_from(["", "", "", "", "...\n", "---\n", "--- x\n",
                             "---\n- another document\n"])


@st.composite
def schema_configs(draw) -> str:
    """A whole file: from a valid one (mischief 0) to one where most things are wrong."""
    mischief = draw(st.sampled_from([0, 0, 5, 15, 40, 100]))
    # the interfaces' names, each once, and rules between them
    names = list(dict.fromkeys(draw(st.lists(st.sampled_from(GOOD_NAMES), min_size=1, max_size=3))))
    valid = {"interfaces": [{"name": st.just(Scalar(name))} for name in names],
             "forward": [{"from": _scalars(names), "to": _scalars(names)}
                         ] * draw(st.integers(1, 3))}
    items = []
    for key, (allowed, required, is_list) in SECTIONS.items():
        if draw(percent) < (95 if key in ("interfaces", "forward") else 30):
            if draw(percent) < mischief // 4:
                value = draw(st.one_of(anything, st.sampled_from([Scalar(""), Map([])])))
            elif is_list:
                value = draw(entries(allowed, required, mischief, valid[key]))
            else:
                value = draw(section(allowed, required, mischief))
            items.append((key, value))
    if draw(percent) < mischief // 3:
        items.append((draw(unknown_keys), draw(anything)))
    if items and draw(percent) < mischief // 4:
        items.append((items[draw(st.integers(0, len(items) - 1))][0], draw(any_scalar)))
    if draw(percent) < mischief // 5:       # a merge key: `<<: *a`
        items.append(("merged", Map([("<<", draw(aliases))])))
    items = draw(st.permutations(items))
    if draw(percent) < mischief // 10:      # a top level that is not a mapping
        return emit(draw(st.one_of(junk, st.just(Seq([value for _, value in items])))))
    text = emit(Map(list(items)))
    if draw(percent) < mischief // 5:
        return draw(prologues) + text + draw(epilogues)
    return text


def emit(node, indent: int = 0) -> str:
    """YAML text for a tree: block style, except where a collection asks for flow."""
    if isinstance(node, (Map, Seq)) and not node.flow and node.items:
        return "\n".join(_block(node, indent)) + "\n"
    return " " * indent + _flow(node) + "\n"


def _prefix(node) -> str:
    return f"&{node.anchor} " if getattr(node, "anchor", None) else ""


def _flow(node) -> str:
    if isinstance(node, Scalar):
        return node.text
    if isinstance(node, Alias):
        return f"*{node.name}"
    if isinstance(node, Seq):
        return _prefix(node) + "[" + ", ".join(_flow(i) for i in node.items) + "]"
    return _prefix(node) + "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in node.items) + "}"


def _is_block(node) -> bool:
    return isinstance(node, (Map, Seq)) and not node.flow and bool(node.items)


def _block(node, indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for entry in node.items:
        key, value = entry if isinstance(node, Map) else (None, entry)
        lead = f"{pad}{key}:" if isinstance(node, Map) else f"{pad}-"
        if not _is_block(value):
            lines.append(f"{lead} {_flow(value)}")
            continue
        inner = _block(value, indent + 2)
        if value.anchor:
            lines.append(f"{lead} {_prefix(value).rstrip()}")
            lines.extend(inner)
        elif isinstance(node, Seq):      # `- first: line` of a nested collection
            lines.append(f"{pad}- {inner[0][indent + 2:]}")
            lines.extend(inner[1:])
        else:
            lines.append(lead)
            lines.extend(inner)
    return lines


@settings(FUZZ, max_examples=1000)
@given(text=schema_configs())
def test_generated_configs_get_an_answer(config_file, text):
    check_load(config_file, text.encode("utf-8", "surrogatepass"))


# --- (b) mutations of the shipped file ----------------------------------------

SNIPPETS = ["---\n", "...\n", "%YAML 1.2\n", "&a ", "*a", "*b ", "<<: *a\n", "? [a, b]\n: c\n",
            "!!binary |\n  ???\n", "!!int ", "!!timestamp ", "\t", "  ", "- ", ": ", "{", "}",
            "[", "]", "'", '"', "#", "|", ">", "@", "`", "%", "!", "&", "\\", "\r", "\r\n",
            "\ufeff", "\x00", "\x85", "\u2028", "\x1b[31m", "0x_", "2024-13-01", "9" * 5000,
            "[" * 2000, "- " * 600 + "x\n", "key: value\n"]


@st.composite
def mutated_shipped(draw) -> bytes:
    data = bytearray(SHIPPED)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "byte", "truncate", "delete-line", "duplicate-line",
                                   "swap-lines", "indent", "unicode", "snippet", "snippet"]))
        at = draw(st.integers(0, len(data)))
        lines = bytes(data).split(b"\n")
        line = draw(st.integers(0, len(lines) - 1))
        if op == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "delete-line":
            del lines[line]
            data = bytearray(b"\n".join(lines))
        elif op == "duplicate-line":
            lines.insert(line, lines[line])
            data = bytearray(b"\n".join(lines))
        elif op == "swap-lines":
            other = draw(st.integers(0, len(lines) - 1))
            lines[line], lines[other] = lines[other], lines[line]
            data = bytearray(b"\n".join(lines))
        elif op == "indent":
            shift = draw(st.sampled_from([b" ", b"  ", b"    ", b"\t", b" \t", b"-"]))
            lines[line] = shift + lines[line] if draw(st.booleans()) \
                else lines[line][len(shift):]
            data = bytearray(b"\n".join(lines))
        elif op == "unicode":
            data[at:at] = draw(st.text(min_size=1, max_size=8)).encode("utf-8", "surrogatepass")
        else:
            data[at:at] = draw(st.sampled_from(SNIPPETS)).encode("utf-8")
    return bytes(data)


@settings(FUZZ, max_examples=1200)
@given(data=mutated_shipped())
def test_mutated_shipped_config_gets_an_answer(config_file, data):
    check_load(config_file, data)


@settings(FUZZ, max_examples=300)
@given(data=st.one_of(st.binary(max_size=200),
                      st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_arbitrary_bytes_get_an_answer(config_file, data):
    check_load(config_file, data)
