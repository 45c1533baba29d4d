"""The config loader: every bad input gets its exact message; good input its model.

No privileges needed: host checks run against FakeHost, and the few checks of
the real Host only look at the loopback device.
"""
from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
from dataclasses import dataclass, field
from textwrap import dedent

import pytest

from xdpd.config.file import read_config_file
from xdpd.config.model import (Config, ConfigError, ForwardRule, InterfaceConfig, Match,
                               MetricsConfig, RingsConfig, UmemConfig, WorkerPlan,
                               WorkersConfig)
from xdpd.config.plan import check_host, format_cpulist, plan_workers
from xdpd.config.schema import load_config, parse_config
from xdpd.kernel.netdev import Host, NetdevError, parse_cpulist

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "config", "xdpd.yaml")

# Two interfaces and one rule: the smallest valid file, extended by the cases.
BASE = """\
interfaces:
  - name: veth-a
  - name: veth-b
forward:
  - from: veth-a
    to: veth-b
"""


def parse(text: str) -> Config:
    return parse_config(dedent(text), source="xdpd.yaml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def case(id: str, text: str, *messages: str):
    return pytest.param(text, list(messages), id=id)


BAD_INPUT = [
    # --- unknown keys
    case("unknown-top-key-suggested", BASE + "metric:\n  listen: null\n",
         "xdpd.yaml: metric: unknown key; did you mean 'metrics'?"),
    case("unknown-top-key-listed", BASE + "logging: debug\n",
         "xdpd.yaml: logging: unknown key; allowed keys: "
         "interfaces, forward, workers, umem, rings, metrics, control"),
    case("unknown-nested-key-suggested", """\
        interfaces:
          - name: veth-a
            qeues: [0]
        forward: []
        """,
         "xdpd.yaml: interfaces[0].qeues: unknown key; did you mean 'queues'?"),
    case("unknown-nested-key-listed", """\
        interfaces:
          - name: veth-a
            mtu: 1500
        forward: []
        """,
         "xdpd.yaml: interfaces[0].mtu: unknown key; allowed keys: "
         "name, queues, xdp_mode, zero_copy, fallback, pass_to_kernel, steering, fanout, "
         "fanout_spread, checksum"),
    case("checksum", "interfaces:\n  - name: veth-a\n    checksum: fix\nforward: []\n",
         "xdpd.yaml: interfaces[0].checksum: 'fix' is not allowed; use auto, complete or off"),
    case("unknown-key-in-section", BASE + "workers:\n  batch: 32\n",
         "xdpd.yaml: workers.batch: unknown key; did you mean 'batch_size'?"),
    case("unknown-key-in-rule", """\
        interfaces: [{name: veth-a}]
        forward:
          - from: veth-a
            to: veth-a
            swap_mac: true
        """,
         "xdpd.yaml: forward[0].swap_mac: unknown key; did you mean 'swap_macs'?"),
    case("misspelt-required-key-not-also-missing", """\
        intrefaces:
          - name: veth-a
        forward: []
        """,
         "xdpd.yaml: intrefaces: unknown key; did you mean 'interfaces'?"),

    # --- required keys
    case("interfaces-missing", "forward:\n  - from: veth-a\n    action: drop\n",
         "xdpd.yaml: interfaces: required key missing; list the netdevs xdpd owns, "
         "see config/xdpd.yaml"),
    case("forward-missing", "interfaces:\n  - name: veth-a\n",
         "xdpd.yaml: forward: required key missing; say where packets from each interface "
         "go, see config/xdpd.yaml"),
    case("interface-name-missing", "interfaces:\n  - queues: all\nforward: []\n",
         "xdpd.yaml: interfaces[0].name: required key missing; give the netdev, "
         "e.g. 'name: eth0'"),
    case("rule-from-missing", "interfaces: [{name: veth-a}]\nforward:\n  - to: veth-a\n",
         "xdpd.yaml: forward[0].from: required key missing; name the ingress interface, "
         "e.g. 'from: eth0'"),

    # --- wrong types
    case("batch-size-string", BASE + "workers:\n  batch_size: 64x\n",
         "xdpd.yaml: workers.batch_size: expected an integer, got string '64x'"),
    case("batch-size-boolean", BASE + "workers:\n  batch_size: true\n",
         "xdpd.yaml: workers.batch_size: expected an integer, got boolean true"),
    case("batch-size-float", BASE + "workers:\n  batch_size: 64.0\n",
         "xdpd.yaml: workers.batch_size: expected an integer, got float 64.0"),
    case("interfaces-not-a-list", "interfaces: veth-a\nforward: []\n",
         "xdpd.yaml: interfaces: expected a list of netdevs, got string 'veth-a'; "
         "see config/xdpd.yaml"),
    case("interfaces-empty", "interfaces: []\nforward: []\n",
         "xdpd.yaml: interfaces: empty list; list at least one netdev, e.g. '- name: eth0'"),
    case("interface-as-plain-name", "interfaces:\n  - veth-a\nforward: []\n",
         "xdpd.yaml: interfaces[0]: expected a mapping, got string 'veth-a'; "
         "write '- name: veth-a'"),
    case("forward-not-a-list", "interfaces: [{name: veth-a}]\nforward:\n  from: veth-a\n",
         "xdpd.yaml: forward: expected a list of rules, got mapping {from: veth-a}; "
         "see config/xdpd.yaml"),
    case("section-not-a-mapping", BASE + "umem: [4096]\n",
         "xdpd.yaml: umem: expected a mapping, got list [4096]; see config/xdpd.yaml"),
    case("swap-macs-yes-is-not-a-boolean", """\
        interfaces: [{name: veth-a}]
        forward:
          - from: veth-a
            to: veth-a
            swap_macs: yes
        """,
         "xdpd.yaml: forward[0].swap_macs: expected true or false, got string 'yes'"),

    # --- netdev names
    case("name-too-long", "interfaces:\n  - name: veth-abcdefghijkl\nforward: []\n",
         "xdpd.yaml: interfaces[0].name: 'veth-abcdefghijkl' is 17 characters long; "
         "netdev names have at most 15"),
    case("name-with-slash", "interfaces:\n  - name: veth/a\nforward: []\n",
         "xdpd.yaml: interfaces[0].name: 'veth/a' is not a valid netdev name; it cannot be "
         "'.' or '..' or contain '/', ':' or whitespace"),
    case("name-is-a-number", "interfaces:\n  - name: 1234\nforward: []\n",
         "xdpd.yaml: interfaces[0].name: expected a netdev name, got integer 1234; "
         "write it in quotes"),
    case("duplicate-interface", """\
        interfaces:
          - name: veth-a
          - name: veth-b
          - name: veth-a
        forward: []
        """,
         "xdpd.yaml: interfaces[2].name: 'veth-a' is listed twice (also interfaces[0]); "
         "list each netdev once"),

    # --- queue lists
    case("queue-negative", "interfaces:\n  - name: veth-a\n    queues: [0, -1]\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues[1]: queue -1 is out of range; use 0 to 255"),
    case("queue-too-high", "interfaces:\n  - name: veth-a\n    queues: [256]\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues[0]: queue 256 is out of range; use 0 to 255"),
    case("queue-duplicate", "interfaces:\n  - name: veth-a\n    queues: [1, 2, 1]\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues[2]: queue 1 is listed twice "
         "(also interfaces[0].queues[0]); list each queue once"),
    case("queue-list-empty", "interfaces:\n  - name: veth-a\n    queues: []\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues: empty list; use 'all' or list at least one queue, "
         "e.g. [0]"),
    case("queue-not-an-integer", "interfaces:\n  - name: veth-a\n    queues: [q1]\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues[0]: expected an integer, got string 'q1'"),
    case("queues-bare-integer", "interfaces:\n  - name: veth-a\n    queues: 3\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues: expected 'all' or a list of queue numbers, "
         "got integer 3; write [3]"),
    case("queues-unknown-word", "interfaces:\n  - name: veth-a\n    queues: every\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues: 'every' is not allowed; use 'all' or a list of "
         "queue numbers, e.g. [0, 1]"),
    case("queue-list-every-problem-reported",
         "interfaces:\n  - name: veth-a\n    queues: [0, x, 0, 300]\nforward: []\n",
         "xdpd.yaml: interfaces[0].queues[1]: expected an integer, got string 'x'",
         "xdpd.yaml: interfaces[0].queues[2]: queue 0 is listed twice "
         "(also interfaces[0].queues[0]); list each queue once",
         "xdpd.yaml: interfaces[0].queues[3]: queue 300 is out of range; use 0 to 255"),

    # --- enums
    case("xdp-mode", "interfaces:\n  - name: veth-a\n    xdp_mode: nativ\nforward: []\n",
         "xdpd.yaml: interfaces[0].xdp_mode: 'nativ' is not allowed; use native, generic or auto"),
    case("zero-copy-boolean", "interfaces:\n  - name: veth-a\n    zero_copy: true\nforward: []\n",
         "xdpd.yaml: interfaces[0].zero_copy: expected on, off or auto, got boolean true"),
    case("fallback", "interfaces:\n  - name: veth-a\n    fallback: reject\nforward: []\n",
         "xdpd.yaml: interfaces[0].fallback: 'reject' is not allowed; use pass or drop"),
    case("fanout-spread", "interfaces:\n  - name: veth-a\n    fanout_spread: random\nforward: []\n",
         "xdpd.yaml: interfaces[0].fanout_spread: 'random' is not allowed; use flow_hash or "
         "round_robin"),
    case("fanout-spread-not-a-word",
         "interfaces:\n  - name: veth-a\n    fanout_spread: [flow_hash]\nforward: []\n",
         "xdpd.yaml: interfaces[0].fanout_spread: expected flow_hash or round_robin, "
         "got list [flow_hash]"),
    case("fanout-zero", "interfaces:\n  - name: veth-a\n    fanout: 0\nforward: []\n",
         "xdpd.yaml: interfaces[0].fanout: 0 is out of range; use 1 to 16"),
    case("fanout-above-max", "interfaces:\n  - name: veth-a\n    fanout: 17\nforward: []\n",
         "xdpd.yaml: interfaces[0].fanout: 17 is out of range; use 1 to 16"),
    case("fanout-word", "interfaces:\n  - name: veth-a\n    fanout: auto\nforward: []\n",
         "xdpd.yaml: interfaces[0].fanout: expected an integer, got string 'auto'"),
    case("fanout-and-spread-both-wrong",
         "interfaces:\n  - name: veth-a\n    fanout: 2.0\n    fanout_spread: hash\nforward: []\n",
         "xdpd.yaml: interfaces[0].fanout: expected an integer, got float 2.0",
         "xdpd.yaml: interfaces[0].fanout_spread: 'hash' is not allowed; use flow_hash or "
         "round_robin"),
    case("idle", BASE + "workers:\n  idle: poll\n",
         "xdpd.yaml: workers.idle: 'poll' is not allowed; use adaptive, sleep or spin"),
    case("placement", BASE + "workers:\n  placement: paired\n",
         "xdpd.yaml: workers.placement: 'paired' is not allowed; use adaptive, by_queue or "
         "spread"),
    case("busy-poll-word", BASE + "workers:\n  busy_poll: on\n",
         "xdpd.yaml: workers.busy_poll: expected true or false, got string 'on'"),
    case("busy-poll-usecs", BASE + "workers:\n  busy_poll_usecs: 0\n",
         "xdpd.yaml: workers.busy_poll_usecs: 0 is out of range; use 1 to 10000"),
    case("busy-poll-budget", BASE + "workers:\n  busy_poll_budget: 4096\n",
         "xdpd.yaml: workers.busy_poll_budget: 4096 is out of range; use 1 to 1024"),
    case("tx-budget-range", BASE + "workers:\n  tx_budget: 8\n",
         "xdpd.yaml: workers.tx_budget: 8 is out of range; use auto, 0 (the kernel's "
         "default, 32) or 32 to 16384"),
    case("tx-budget-word", BASE + "workers:\n  tx_budget: max\n",
         "xdpd.yaml: workers.tx_budget: expected an integer, got string 'max'"),
    case("tx-budget-over-ring", BASE + "workers:\n  tx_budget: 4096\nrings:\n  tx: 1024\n",
         "xdpd.yaml: workers.tx_budget: 4096 is more than rings.tx (1024); the kernel allows "
         "at most the TX ring size"),
    case("wake-latency-range", BASE + "workers:\n  cpu_wake_latency_us: -1\n",
         "xdpd.yaml: workers.cpu_wake_latency_us: -1 is out of range; use 0 to 100000, or "
         "null to leave the CPUs' idle states alone"),
    case("wake-latency-word", BASE + "workers:\n  cpu_wake_latency_us: off\n",
         "xdpd.yaml: workers.cpu_wake_latency_us: expected an integer, got string 'off'"),
    case("sched-slice-range", BASE + "workers:\n  sched_slice_us: 50\n",
         "xdpd.yaml: workers.sched_slice_us: 50 is out of range; use 100 to 100000, or null "
         "for the kernel's default slice"),
    case("hugepages", BASE + "umem:\n  hugepages: always\n",
         "xdpd.yaml: umem.hugepages: 'always' is not allowed; use on, off or auto"),

    # --- rules
    case("rule-to-unknown-interface", BASE + "  - from: veth-b\n    to: veth-c\n",
         "xdpd.yaml: forward[1].to: 'veth-c' is not a configured interface; "
         "add it under 'interfaces' or use one of: veth-a, veth-b"),
    case("rule-from-unknown-interface", BASE + "  - from: eth0\n    action: drop\n",
         "xdpd.yaml: forward[1].from: 'eth0' is not a configured interface; "
         "add it under 'interfaces' or use one of: veth-a, veth-b"),
    case("rule-to-and-drop", BASE + "  - from: veth-b\n    to: veth-a\n    action: drop\n",
         "xdpd.yaml: forward[1].to: 'veth-a' given with 'action: drop'; a rule either "
         "forwards (to) or drops (action: drop), remove one"),
    case("rule-neither-to-nor-action", BASE + "  - from: veth-b\n",
         "xdpd.yaml: forward[1]: no 'to' and no 'action'; add 'to: <interface>' to forward "
         "or 'action: drop' to drop"),
    case("rule-forward-without-to", BASE + "  - from: veth-b\n    action: forward\n",
         "xdpd.yaml: forward[1].to: required key missing with 'action: forward'; "
         "name the egress interface, e.g. 'to: eth1'"),
    case("rule-unknown-action", BASE + "  - from: veth-b\n    action: reject\n",
         "xdpd.yaml: forward[1].action: 'reject' is not allowed; use forward or drop"),
    case("rule-never-used", BASE + "  - from: veth-a\n    action: drop\n",
         "xdpd.yaml: forward[1]: never used: forward[0] already takes every packet from "
         "'veth-a'; give that rule a 'match', or move this one before it"),
    case("rule-match-bad-field", BASE + "    match: {ip_proto: udp, dst_port: 70000}\n",
         "xdpd.yaml: forward[0].match.dst_port: 70000 is out of range; use 0 to 65535"),
    case("rule-match-unknown-key", BASE + "    match: {dport: 53}\n",
         "xdpd.yaml: forward[0].match.dport: unknown key; did you mean 'dst_port'?"),
    case("rule-match-empty", BASE + "    match: {}\n",
         "xdpd.yaml: forward[0].match: empty match would take every packet; give one or more "
         "of ethertype, vlan, ip_proto, src, dst, src_port or dst_port"),
    case("rules-too-many-per-interface",
         "interfaces: [{name: veth-a}]\nforward:\n"
         + "".join(f"  - {{from: veth-a, action: drop, match: {{dst_port: {p}}}}}\n"
                   for p in range(17)),
         "xdpd.yaml: forward[16].from: more than 16 rules from 'veth-a'; the fast path tries "
         "at most 16 per interface: merge rules (a prefix covers several addresses)"),
    case("rule-not-a-mapping", BASE + "  - veth-b\n",
         "xdpd.yaml: forward[1]: expected a mapping with 'from' and 'to' or 'action: drop', "
         "got string 'veth-b'"),
    case("swap-macs-with-set-dst-mac", BASE + "    swap_macs: true\n"
                                              "    set_dst_mac: 02:00:00:00:00:04\n",
         "xdpd.yaml: forward[0].swap_macs: true cannot be combined with set_dst_mac; "
         "swap the packet's own addresses or set new ones, not both"),
    case("drop-rule-with-rewrite", BASE + "  - from: veth-b\n    action: drop\n"
                                          "    set_src_mac: 02:00:00:00:00:03\n",
         "xdpd.yaml: forward[1].set_src_mac: a drop rule rewrites nothing; "
         "remove set_src_mac, or forward with 'to: <interface>'"),

    # --- VLAN push/pop
    case("push-vlan-out-of-range", BASE + "    push_vlan: 4096\n",
         "xdpd.yaml: forward[0].push_vlan: 4096 is out of range; use a VLAN id from 0 to 4095"),
    case("push-vlan-not-a-number", BASE + "    push_vlan: '100'\n",
         "xdpd.yaml: forward[0].push_vlan: expected a VLAN id from 0 to 4095, got string '100'"),
    case("push-vlan-true", BASE + "    push_vlan: true\n",
         "xdpd.yaml: forward[0].push_vlan: expected a VLAN id from 0 to 4095, got boolean true"),
    case("vlan-proto-unknown", BASE + "    push_vlan: 100\n    vlan_proto: qinq\n",
         "xdpd.yaml: forward[0].vlan_proto: 'qinq' is not allowed; use 802.1q or 802.1ad"),
    case("vlan-proto-without-push", BASE + "    vlan_proto: 802.1ad\n",
         "xdpd.yaml: forward[0].vlan_proto: '802.1ad' without push_vlan; vlan_proto is the "
         "type of a pushed tag: add 'push_vlan: ID' or remove vlan_proto"),
    case("push-and-pop", BASE + "    push_vlan: 100\n    pop_vlan: true\n",
         "xdpd.yaml: forward[0].pop_vlan: true cannot be combined with push_vlan; a rule "
         "pushes a tag or pops the outer one, not both"),
    case("pop-vlan-not-a-bool", BASE + "    pop_vlan: 1\n",
         "xdpd.yaml: forward[0].pop_vlan: expected true or false, got integer 1"),
    case("drop-rule-with-push", BASE + "  - from: veth-b\n    action: drop\n"
                                       "    push_vlan: 7\n",
         "xdpd.yaml: forward[1].push_vlan: a drop rule rewrites nothing; "
         "remove push_vlan, or forward with 'to: <interface>'"),
    case("drop-rule-with-pop", BASE + "  - from: veth-b\n    action: drop\n"
                                      "    pop_vlan: true\n",
         "xdpd.yaml: forward[1].pop_vlan: a drop rule rewrites nothing; "
         "remove pop_vlan, or forward with 'to: <interface>'"),
    case("push-vlan-misspelt", BASE + "    push_vlna: 5\n",
         "xdpd.yaml: forward[0].push_vlna: unknown key; did you mean 'push_vlan'?"),

    # --- MAC addresses
    case("mac-five-pairs", BASE + "    set_dst_mac: '02:00:00:00:04'\n",
         "xdpd.yaml: forward[0].set_dst_mac: '02:00:00:00:04' is not a MAC address; "
         "write six hex pairs, e.g. '02:00:00:00:00:04'"),
    case("mac-dashes", BASE + "    set_dst_mac: 02-00-00-00-00-04\n",
         "xdpd.yaml: forward[0].set_dst_mac: '02-00-00-00-00-04' is not a MAC address; "
         "write six hex pairs, e.g. '02:00:00:00:00:04'"),
    case("mac-not-a-string", BASE + "    set_dst_mac: 5\n",
         "xdpd.yaml: forward[0].set_dst_mac: expected a MAC address such as "
         "'02:00:00:00:00:04', got integer 5"),
    case("source-mac-multicast", BASE + "    set_src_mac: 01:00:5e:00:00:01\n",
         "xdpd.yaml: forward[0].set_src_mac: '01:00:5e:00:00:01' is a multicast address; "
         "a source MAC must be unicast (first byte even)"),

    # --- workers
    case("batch-size-zero", BASE + "workers:\n  batch_size: 0\n",
         "xdpd.yaml: workers.batch_size: 0 is out of range; use 1 to 1024"),
    case("batch-size-too-big", BASE + "workers:\n  batch_size: 2048\n",
         "xdpd.yaml: workers.batch_size: 2048 is out of range; use 1 to 1024"),
    case("cpu-listed-twice", BASE + "workers:\n  cpus: [0, 1, 0]\n",
         "xdpd.yaml: workers.cpus[2]: CPU 0 is listed twice (also workers.cpus[0]); "
         "list each CPU once"),
    case("cpu-negative", BASE + "workers:\n  cpus: [-1]\n",
         "xdpd.yaml: workers.cpus[0]: CPU -1 is out of range; CPU numbers start at 0"),
    case("cpus-unknown-word", BASE + "workers:\n  cpus: all\n",
         "xdpd.yaml: workers.cpus: 'all' is not allowed; use 'auto' or a list of CPU numbers, "
         "e.g. [0, 1]"),

    # --- umem and rings
    case("frame-size", BASE + "umem:\n  frame_size: 3000\n",
         "xdpd.yaml: umem.frame_size: 3000 is not allowed; use 2048 or 4096"),
    case("frame-size-quoted", BASE + "umem:\n  frame_size: '4096'\n",
         "xdpd.yaml: umem.frame_size: expected an integer, got string '4096'"),
    case("frames-not-power-of-two", BASE + "umem:\n  frames_per_worker: 3000\n",
         "xdpd.yaml: umem.frames_per_worker: 3000 is not a power of two; use 2048 or 4096"),
    case("frames-too-few", BASE + "umem:\n  frames_per_worker: 256\n",
         "xdpd.yaml: umem.frames_per_worker: 256 is out of range; "
         "use a power of two from 512 to 65536"),
    case("ring-not-power-of-two", BASE + "rings:\n  fill: 100\n",
         "xdpd.yaml: rings.fill: 100 is not a power of two; use 64 or 128"),
    case("ring-too-big", BASE + "rings:\n  rx: 32768\n",
         "xdpd.yaml: rings.rx: 32768 is out of range; use a power of two from 64 to 16384"),

    # --- metrics.listen
    case("listen-no-port", BASE + "metrics:\n  listen: 127.0.0.1\n",
         "xdpd.yaml: metrics.listen: '127.0.0.1' has no port; write HOST:PORT, "
         "e.g. '127.0.0.1:9464' or '[::1]:9464'"),
    case("listen-ipv6-without-brackets", BASE + "metrics:\n  listen: '::1:9464'\n",
         "xdpd.yaml: metrics.listen: '::1:9464' has an IPv6 address without brackets; "
         "write '[IPv6]:PORT', e.g. '[::1]:9464'"),
    case("listen-bad-ipv6", BASE + "metrics:\n  listen: '[fe80::zz]:9464'\n",
         "xdpd.yaml: metrics.listen: 'fe80::zz' in '[fe80::zz]:9464' is not an IPv6 address; "
         "write HOST:PORT, e.g. '127.0.0.1:9464' or '[::1]:9464'"),
    case("listen-port-out-of-range", BASE + "metrics:\n  listen: 127.0.0.1:99999\n",
         "xdpd.yaml: metrics.listen: port 99999 in '127.0.0.1:99999' is out of range; "
         "use 0 to 65535"),
    case("listen-port-not-a-number", BASE + "metrics:\n  listen: localhost:http\n",
         "xdpd.yaml: metrics.listen: port 'http' in 'localhost:http' is not a number; "
         "use 0 to 65535"),
    case("listen-no-host", BASE + "metrics:\n  listen: ':9464'\n",
         "xdpd.yaml: metrics.listen: ':9464' has no host; write '0.0.0.0:9464' for every "
         "IPv4 address or '127.0.0.1:9464' for this machine only"),
    case("listen-bad-ipv4", BASE + "metrics:\n  listen: 127.0.0.300:9464\n",
         "xdpd.yaml: metrics.listen: '127.0.0.300' in '127.0.0.300:9464' is not an IP address "
         "or host name; write HOST:PORT, e.g. '127.0.0.1:9464' or '[::1]:9464'"),
    case("listen-bare-port", BASE + "metrics:\n  listen: 9464\n",
         "xdpd.yaml: metrics.listen: expected 'HOST:PORT' or null, got integer 9464; "
         "write HOST:PORT, e.g. '127.0.0.1:9464' or '[::1]:9464'"),

    # --- the file as a whole
    case("yaml-syntax-error", """\
        interfaces:
          - name: veth-a
           queues: all
        """,
         "xdpd.yaml:3:4: YAML syntax error: expected <block end>, but found "
         "'<block mapping start>' (while parsing a block collection at line 2)"),
    case("yaml-tab", "interfaces:\n\t- name: veth-a\n",
         "xdpd.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token"),
    case("yaml-duplicate-key", """\
        interfaces:
          - name: veth-a
            queues: [0]
            queues: [1]
        forward: []
        """,
         "xdpd.yaml:4:5: key 'queues' appears twice in one mapping (first at line 3); keep one"),
    case("empty-file", "",
         "xdpd.yaml: the file is empty (or only comments); start from config/xdpd.yaml"),
    case("only-comments", "# interfaces:\n#   - name: eth0\n",
         "xdpd.yaml: the file is empty (or only comments); start from config/xdpd.yaml"),
    case("top-level-list", "- name: veth-a\n",
         "xdpd.yaml: expected a mapping with 'interfaces' and 'forward' at the top level, "
         "got list [{name: veth-a}]; see config/xdpd.yaml"),

    # --- several at once, in file order, and no cascades
    case("multiple-errors-reported-together", """\
        interfaces:
          - name: veth-a
            xdp_mode: fast
          - name: veth-b
            queues: [-1]
        forward:
          - from: veth-a
            to: veth-c
        umem:
          frame_size: 1024
        metrics:
          listen: nowhere
        """,
         "xdpd.yaml: interfaces[0].xdp_mode: 'fast' is not allowed; use native, generic or auto",
         "xdpd.yaml: interfaces[1].queues[0]: queue -1 is out of range; use 0 to 255",
         "xdpd.yaml: forward[0].to: 'veth-c' is not a configured interface; "
         "add it under 'interfaces' or use one of: veth-a, veth-b",
         "xdpd.yaml: umem.frame_size: 1024 is not allowed; use 2048 or 4096",
         "xdpd.yaml: metrics.listen: 'nowhere' has no port; write HOST:PORT, "
         "e.g. '127.0.0.1:9464' or '[::1]:9464'"),
    case("broken-name-does-not-cascade-into-rules", """\
        interfaces:
          - name: veth/a
        forward:
          - from: veth/a
            action: drop
        """,
         "xdpd.yaml: interfaces[0].name: 'veth/a' is not a valid netdev name; it cannot be "
         "'.' or '..' or contain '/', ':' or whitespace"),

    # --- found by tests/unit/test_config_fuzz.py: each was a traceback, a message
    # --- split over two lines or pointing nowhere, or a value accepted that cannot work
    case("tagged-int-not-a-number", BASE + "workers:\n  batch_size: !!int abc\n",
         "xdpd.yaml:8:15: 'abc' is tagged !!int but is not an integer; "
         "correct it or remove the tag"),
    case("tagged-float-empty", BASE + "workers:\n  batch_size: !!float ''\n",
         "xdpd.yaml:8:15: '' is tagged !!float but is not a number; correct it or remove the tag"),
    case("tagged-bool-not-a-boolean", BASE + "workers:\n  busy_poll: !!bool y\n",
         "xdpd.yaml:8:14: 'y' is tagged !!bool but is not a boolean; "
         "correct it or remove the tag"),
    case("tagged-timestamp-not-a-date", BASE + "workers:\n  idle: !!timestamp never\n",
         "xdpd.yaml:8:9: 'never' is tagged !!timestamp but is not a date; "
         "correct it or remove the tag"),
    case("plain-text-that-reads-as-a-bad-date", "interfaces:\n  - name: 2024-13-01\nforward: []\n",
         "xdpd.yaml:2:11: '2024-13-01' reads as a date in YAML but is not a valid one "
         "(month must be in 1..12); write it in quotes if it is text"),
    case("hex-prefix-without-digits-is-text", BASE + "workers:\n  batch_size: 0x_\n",
         "xdpd.yaml: workers.batch_size: expected an integer, got string '0x_'"),
    case("number-too-long-to-convert", BASE + "workers:\n  batch_size: " + "9" * 5000 + "\n",
         "xdpd.yaml:8:15: '9999999999999999999999999999999999999...' is too large; "
         "no setting takes a number beyond 63 bits"),
    case("hex-number-too-large-to-print", BASE + "umem:\n  spare_workers: 0x" + "f" * 5000 + "\n",
         "xdpd.yaml:8:18: '0xfffffffffffffffffffffffffffffffffff...' is too large; "
         "no setting takes a number beyond 63 bits"),
    case("mapping-tag-on-a-list", BASE + "workers: !!map [1]\n",
         "xdpd.yaml:7:10: YAML syntax error: expected a mapping node, but found sequence"),
    case("nested-too-deep", BASE + "workers: " + "[" * 2000 + "\n",
         "xdpd.yaml:7:41: nested more than 32 levels deep; a configuration needs 4"),
    case("unknown-key-with-a-line-break", BASE + 'workers:\n  "batch\\nsize": 1\n',
         "xdpd.yaml: workers.'batch\\nsize': unknown key; did you mean 'batch_size'?"),
    case("unknown-key-with-an-escape-sequence", BASE + 'rings:\n  "\\e[31m": 1\n',
         "xdpd.yaml: rings.'\\x1b[31m': unknown key; allowed keys: rx, tx, fill, completion"),
    case("unknown-key-that-looks-like-a-path", BASE + 'rings:\n  "rx.tx": 1\n',
         "xdpd.yaml: rings.'rx.tx': unknown key; allowed keys: rx, tx, fill, completion"),
    case("interface-given-as-unprintable-string", 'interfaces:\n  - "\\x1eeth0"\nforward: []\n',
         "xdpd.yaml: interfaces[0]: expected a mapping, got string '\\x1eeth0'"),
    case("half-a-surrogate-pair", 'interfaces:\n  - name: "eth\\ud800"\nforward: []\n',
         "xdpd.yaml:2:11: \\ud800 in 'eth\\ud800' is half of a UTF-16 surrogate pair, "
         "not a character; remove it"),
    case("status-group-not-a-group-name", BASE + 'control:\n  status_group: "Ops Team"\n',
         "xdpd.yaml: control.status_group: 'Ops Team' is not a group name; name a group "
         "whose members may use 'xdpd status' (e.g. 'xdpd-status'), or remove the key to "
         "leave the socket to root"),
    case("escaped-surrogate-pair", BASE + 'control:\n  socket: "/run/\\ud83d\\ude00"\n',
         "xdpd.yaml:8:11: \\ud83d\\ude00 in '/run/\\ud83d\\ude00' is a UTF-16 surrogate pair, "
         "which YAML does not join; write \\U0001f600 or the character itself"),
    case("lines-counted-as-an-editor-does", "forward: 'a\rb\rc'\ninterfaces: [\n",
         "xdpd.yaml:3:1: YAML syntax error: expected the node content, but found "
         "'<stream end>' (while parsing a flow node at line 3)"),
    case("netdev-name-with-nul", 'interfaces:\n  - name: "eth\\0x"\nforward: []\n',
         "xdpd.yaml: interfaces[0].name: 'eth\\x00x' has a control character; "
         "a netdev name is printable text"),
    case("listen-ipv6-scope-with-nul", BASE + 'metrics:\n  listen: "[fe80::1%\\0]:9464"\n',
         "xdpd.yaml: metrics.listen: 'fe80::1%\\x00' in '[fe80::1%\\x00]:9464' is not an IPv6 "
         "address; write HOST:PORT, e.g. '127.0.0.1:9464' or '[::1]:9464'"),
]


@pytest.mark.parametrize("text, expected", BAD_INPUT)
def test_bad_input_gets_exact_messages(text, expected):
    assert errors_of(text) == expected


def test_config_error_prints_one_problem_per_line():
    error = ConfigError(["a.yaml: x: one", "a.yaml: y: two"])
    assert str(error) == "a.yaml: x: one\na.yaml: y: two"
    assert error.errors == ["a.yaml: x: one", "a.yaml: y: two"]


# --- good input ---------------------------------------------------------------

def test_shipped_example_parses():
    with open(SHIPPED, encoding="utf-8") as f:
        config = parse_config(f.read(), source="xdpd.yaml")
    assert [i.name for i in config.interfaces] == ["veth-a", "veth-b"]
    assert [m.describe() for m in config.interfaces[0].pass_to_kernel] == [
        "arp", "tcp dst port 22"]
    assert config.forward[0] == ForwardRule(
        index=0, from_="veth-a", action="forward", to="veth-b",
        set_dst_mac=bytes.fromhex("020000000004"), set_src_mac=bytes.fromhex("020000000003"),
        swap_macs=False)
    assert config.forward[1] == ForwardRule(index=1, from_="veth-b", action="drop")
    # the example documents the defaults, so it must equal them
    assert config.workers == WorkersConfig()
    assert config.umem == UmemConfig()
    assert config.rings == RingsConfig()
    assert config.metrics == MetricsConfig()


def test_shipped_example_loads_from_its_path():
    assert load_config(SHIPPED).source == SHIPPED


def test_defaults():
    config = parse(BASE)
    assert config.interfaces == (InterfaceConfig("veth-a"), InterfaceConfig("veth-b"))
    assert config.interfaces[0] == InterfaceConfig(
        name="veth-a", queues="all", xdp_mode="auto", zero_copy="auto", fallback="pass",
        fanout=1, fanout_spread="flow_hash")
    assert config.workers == WorkersConfig(cpus="auto", batch_size=64, idle="adaptive")
    assert config.umem == UmemConfig(frame_size=2048, frames_per_worker=4096, hugepages="auto")
    assert config.rings == RingsConfig(rx=2048, tx=2048, fill=4096, completion=4096)
    assert config.metrics == MetricsConfig(listen=("127.0.0.1", 9464))
    assert config.source == "xdpd.yaml"


def test_every_value_set():
    config = parse("""\
        interfaces:
          - name: eth1
            queues: [3, 0, 1]
            xdp_mode: native
            zero_copy: off
            fallback: drop
            fanout: 16
            fanout_spread: round_robin
        forward:
          - from: eth1
            to: eth1
            swap_macs: true
        workers:
          cpus: [3, 1]
          batch_size: 1024
          idle: spin
          busy_poll: true
          busy_poll_usecs: 50
          busy_poll_budget: 16
        umem:
          frame_size: 2048
          frames_per_worker: 512
          hugepages: on
        rings:
          rx: 64
          tx: 128
          fill: 16384
          completion: 256
        metrics:
          listen: "[::1]:0"
        """)
    # zero_copy: off is the word, not YAML 1.1's boolean; queues come out ascending
    assert config.interfaces == (InterfaceConfig("eth1", (0, 1, 3), "native", "off", "drop",
                                                 fanout=16, fanout_spread="round_robin"),)
    assert config.forward == (ForwardRule(0, "eth1", "forward", "eth1", swap_macs=True),)
    assert config.workers == WorkersConfig(cpus=(3, 1), batch_size=1024, idle="spin",
                                           busy_poll=True, busy_poll_usecs=50,
                                           busy_poll_budget=16)
    assert config.umem == UmemConfig(2048, 512, "on")
    assert config.rings == RingsConfig(64, 128, 16384, 256)
    assert config.metrics.listen == ("::1", 0)


def test_empty_sections_mean_defaults():
    config = parse(BASE + "workers:\numem:\nrings: {}\n")
    assert (config.workers, config.umem, config.rings) == (WorkersConfig(), UmemConfig(), RingsConfig())


def test_metrics_listen_on_loopback_unless_configured():
    # nothing outside the machine sees the metrics until an operator says so
    for text in (BASE, BASE + "metrics:\n", BASE + "metrics: {}\n"):
        assert parse(text).metrics.listen == ("127.0.0.1", 9464)
    assert ipaddress.ip_address(MetricsConfig().listen[0]).is_loopback


def test_listen_null_disables_metrics():
    assert parse(BASE + "metrics:\n  listen: null\n").metrics.listen is None


def test_listen_host_name():
    assert parse(BASE + "metrics:\n  listen: localhost:9100\n").metrics.listen == ("localhost", 9100)


def test_unquoted_mac_that_yaml_1_1_reads_as_a_number():
    # 12:34:56:... is a base-60 integer in YAML 1.1
    config = parse(BASE + "    set_dst_mac: 12:34:56:00:00:01\n")
    assert config.forward[0].set_dst_mac == bytes.fromhex("123456000001")


def test_rules_hairpin_and_empty_list_are_allowed():
    config = parse("""\
        interfaces: [{name: veth-a}, {name: veth-b}]
        forward:
          - {from: veth-a, to: veth-a}
        """)
    assert config.rule_for("veth-a") == ForwardRule(0, "veth-a", "forward", "veth-a")
    assert config.rule_for("veth-b") is None  # dropped as no_rule at run time
    assert parse("interfaces: [{name: veth-a}]\nforward: []\n").forward == ()


def test_rules_with_match_share_a_from_in_file_order():
    config = parse("""\
        interfaces: [{name: veth-a}, {name: veth-b}]
        forward:
          - {from: veth-a, to: veth-b, match: {ip_proto: udp, dst_port: 53},
             set_dst_mac: "02:00:00:00:00:04"}
          - {from: veth-b, to: veth-a}
          - {from: veth-a, action: drop, match: {src: 10.0.0.0/8}}
          - {from: veth-a, action: drop}
        """)
    rules = config.rules_for("veth-a")
    assert [r.index for r in rules] == [0, 2, 3]
    assert rules[0].match == Match(ip_proto=17, dst_port=53)
    assert rules[0].match.describe() == "udp dst port 53"
    assert rules[1].match.describe() == "src 10.0.0.0/8"
    assert rules[2].match is None
    assert config.rule_for("veth-a") is rules[0]


def test_action_forward_with_to():
    config = parse("interfaces: [{name: a}]\nforward: [{from: a, action: forward, to: a}]\n")
    assert config.forward[0].action == "forward"


def test_interface_lookup():
    config = parse(BASE)
    assert config.interface("veth-b").name == "veth-b"
    with pytest.raises(KeyError):
        config.interface("eth0")


def test_parse_accepts_a_mapping():
    data = {"interfaces": [{"name": "veth-a"}], "forward": [{"from": "veth-a", "action": "drop"}]}
    assert parse_config(data).forward[0].action == "drop"
    with pytest.raises(ConfigError) as info:
        parse_config({"interfaces": [{"name": "veth-a", "queues": [True]}], "forward": []})
    assert info.value.errors == [
        "<config>: interfaces[0].queues[0]: expected an integer, got boolean true"]


def test_model_is_frozen():
    config = parse(BASE)
    with pytest.raises(AttributeError):
        config.workers.batch_size = 1  # type: ignore[misc]


# --- load_config --------------------------------------------------------------

def test_load_names_the_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "xdpd.yaml").write_text("interfaces:\n  - name: a\n    queues: [x]\nforward: []\n")
    with pytest.raises(ConfigError) as info:
        load_config("xdpd.yaml")
    assert info.value.errors == [
        "xdpd.yaml: interfaces[0].queues[0]: expected an integer, got string 'x'"]


def test_load_yaml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "xdpd.yaml"
    path.write_text("interfaces:\n  - name: a\nforward: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.errors == [
        f"{path}:4:1: YAML syntax error: expected the node content, "
        "but found '<stream end>' (while parsing a flow node at line 4)"]


def test_load_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        f"{path}: no such file; check the path, or start from config/xdpd.yaml"]


def test_load_directory(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.errors == [f"{tmp_path}: cannot read: Is a directory"]


def test_load_not_utf8(tmp_path):
    path = tmp_path / "xdpd.yaml"
    path.write_bytes(b"forward: []\ninterfaces: [{name: \xff}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.errors == [
        f"{path}:2: not UTF-8 text (byte 0xff at offset 32); save it as UTF-8"]


def test_load_checks_the_host_when_given_one(tmp_path):
    path = tmp_path / "xdpd.yaml"
    path.write_text(BASE)
    host = FakeHost(queues={"veth-a": 1})
    with pytest.raises(ConfigError) as info:
        load_config(str(path), host=host)
    assert info.value.errors == [
        f"{path}: interfaces[1].name: netdev 'veth-b' not found; see 'ip link show'"]


# --- who can write the file ---------------------------------------------------
# The file decides what runs as root; a file others can change is refused by
# run, check-config and reload alike (all read it with read_config_file).

ROOT = os.geteuid() == 0
NOBODY = 4000123             # a uid and gid that no system names


def config_file(tmp_path, mode: int, uid: int | None = None, gid: int | None = None) -> str:
    path = tmp_path / f"xdpd-{mode:o}.yaml"
    path.write_text(BASE)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    os.chmod(path, mode)
    return str(path)


def load_errors(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.errors


def test_file_writable_by_everyone_is_refused(tmp_path):
    path = config_file(tmp_path, 0o646)
    errors = load_errors(path)
    assert errors == [f"{path}: every user can write it (mode 0646); run 'chmod o-w {path}'"]
    # read_config_file is what `xdpd reload --config` reads the file with
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert info.value.errors == errors


@pytest.mark.skipif(not ROOT, reason="needs root to give the file a group of another user")
def test_file_writable_by_a_group_other_than_roots_is_refused(tmp_path):
    path = config_file(tmp_path, 0o664, gid=NOBODY)
    assert load_errors(path) == [
        f"{path}: group gid {NOBODY} can write it (mode 0664); "
        f"run 'chmod g-w {path}' or 'chown root: {path}'"]


@pytest.mark.skipif(not ROOT, reason="needs root to give the file to root's group")
def test_file_writable_by_roots_group_is_fine(tmp_path):
    assert load_config(config_file(tmp_path, 0o664, uid=0, gid=0)).interfaces


@pytest.mark.skipif(not ROOT, reason="needs root to give the file to another user")
def test_file_owned_by_another_user_is_refused(tmp_path):
    path = config_file(tmp_path, 0o644, uid=NOBODY, gid=0)
    assert load_errors(path) == [
        f"{path}: owned by uid {NOBODY}, who can change it; the owner must be root: "
        f"run 'chown root: {path}'"]


@pytest.mark.skipif(not ROOT, reason="needs root to give the file to another user")
def test_file_with_every_problem_gets_every_message(tmp_path):
    path = config_file(tmp_path, 0o666, uid=NOBODY, gid=NOBODY)
    assert load_errors(path) == [
        f"{path}: owned by uid {NOBODY}, who can change it; the owner must be root: "
        f"run 'chown root: {path}'",
        f"{path}: every user can write it (mode 0666); run 'chmod o-w {path}'",
        f"{path}: group gid {NOBODY} can write it (mode 0666); "
        f"run 'chmod g-w {path}' or 'chown root: {path}'"]


def test_file_only_its_owner_can_write_is_fine(tmp_path):
    # the user running xdpd may own it: check-config unprivileged on one's own copy
    for mode in (0o644, 0o600, 0o400):
        assert load_config(config_file(tmp_path, mode)).interfaces


# --- host checks --------------------------------------------------------------

@dataclass
class FakeHost:
    """A host with the given netdevs (name -> rx queue count) and online CPUs."""

    queues: dict[str, int] = field(default_factory=dict)
    cpus: frozenset[int] = frozenset({0, 1})

    def netdev_exists(self, name: str) -> bool:
        return name in self.queues

    def rx_queue_count(self, name: str) -> int:
        return self.queues[name]

    def online_cpus(self) -> frozenset[int]:
        return self.cpus


def host_errors(text: str, host: FakeHost) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check_host(parse(text), host)
    return info.value.errors


def test_host_netdev_missing():
    text = "interfaces:\n  - name: eth7\n    queues: [0]\nforward: []\n"
    # a missing netdev's queues are not also reported
    assert host_errors(text, FakeHost(queues={"eth0": 8})) == [
        "xdpd.yaml: interfaces[0].name: netdev 'eth7' not found; see 'ip link show'"]


def test_host_queue_out_of_range():
    text = """\
        interfaces:
          - name: eth0
            queues: [0, 7]
          - name: eth1
            queues: [1, 9]
        forward: []
        """
    assert host_errors(text, FakeHost(queues={"eth0": 8, "eth1": 8})) == [
        "xdpd.yaml: interfaces[1].queues: queue 9 not on eth1 (8 rx queues; see 'ethtool -l eth1')"]


def test_host_several_queues_out_of_range():
    text = "interfaces:\n  - name: veth-a\n    queues: [0, 1, 2]\nforward: []\n"
    assert host_errors(text, FakeHost(queues={"veth-a": 1})) == [
        "xdpd.yaml: interfaces[0].queues: queues 1, 2 not on veth-a "
        "(1 rx queue; see 'ethtool -l veth-a')"]


def test_host_cpu_offline():
    text = BASE + "workers:\n  cpus: [1, 5, 0, 9]\n"
    host = FakeHost(queues={"veth-a": 1, "veth-b": 1}, cpus=frozenset({0, 1}))
    assert host_errors(text, host) == [
        "xdpd.yaml: workers.cpus[1]: CPU 5 is not online (online: 0-1)",
        "xdpd.yaml: workers.cpus[3]: CPU 9 is not online (online: 0-1)"]


def test_host_all_problems_together():
    text = """\
        interfaces:
          - name: eth0
            queues: [4]
          - name: eth9
        forward: []
        workers:
          cpus: [6]
        """
    host = FakeHost(queues={"eth0": 4}, cpus=frozenset({0, 1, 2, 3, 5, 7}))
    assert host_errors(text, host) == [
        "xdpd.yaml: interfaces[0].queues: queue 4 not on eth0 (4 rx queues; see 'ethtool -l eth0')",
        "xdpd.yaml: interfaces[1].name: netdev 'eth9' not found; see 'ip link show'",
        "xdpd.yaml: workers.cpus[0]: CPU 6 is not online (online: 0-3,5,7)"]


def test_host_fine():
    check_host(parse(BASE + "workers:\n  cpus: [1]\n"), FakeHost(queues={"veth-a": 1, "veth-b": 1}))


# --- plan_workers -------------------------------------------------------------

@pytest.mark.parametrize("placement", ["spread", "by_queue", "adaptive"])
def test_plan_auto_cpus_round_robin_over_all_queues(placement):
    # veth-a has as many queues as there are CPUs: the two layouts agree
    config = parse(BASE + f"workers:\n  placement: {placement}\n")
    host = FakeHost(queues={"veth-a": 2, "veth-b": 3}, cpus=frozenset({1, 0}))
    plans = plan_workers(config, host)
    if placement == "adaptive":         # where they agree there is nowhere to move
        assert [p.spread_cpu for p in plans] == [p.cpu for p in plans]
        plans = tuple(dataclasses.replace(p, spread_cpu=None) for p in plans)
    assert plans == (
        WorkerPlan("veth-a", 0, 0, "veth-a/q0"),
        WorkerPlan("veth-a", 1, 1, "veth-a/q1"),
        WorkerPlan("veth-b", 0, 0, "veth-b/q0"),
        WorkerPlan("veth-b", 1, 1, "veth-b/q1"),
        WorkerPlan("veth-b", 2, 0, "veth-b/q2"),
    )


def test_plan_explicit_cpus_and_queue_lists():
    config = parse("""\
        interfaces:
          - name: eth1
            queues: [5, 2]
          - name: eth0
            queues: all
        forward: []
        workers:
          cpus: [3, 1, 2]
          placement: spread
        """)
    host = FakeHost(queues={"eth0": 2, "eth1": 8}, cpus=frozenset(range(4)))
    assert plan_workers(config, host) == (
        WorkerPlan("eth1", 2, 3, "eth1/q2"),
        WorkerPlan("eth1", 5, 1, "eth1/q5"),
        WorkerPlan("eth0", 0, 2, "eth0/q0"),
        WorkerPlan("eth0", 1, 3, "eth0/q1"),
    )


def test_plan_fanout_members_of_a_queue_owner_first_on_different_cpus():
    config = parse("""\
        interfaces:
          - name: in0
            queues: [1, 0]
            fanout: 3
          - name: out0
            queues: [0]
        forward: []
        workers:
          placement: spread
        """)
    host = FakeHost(queues={"in0": 2, "out0": 1}, cpus=frozenset(range(4)))
    assert plan_workers(config, host) == (
        WorkerPlan("in0", 0, 0, "in0/q0.0", member=0, fanout=3),
        WorkerPlan("in0", 0, 1, "in0/q0.1", member=1, fanout=3),
        WorkerPlan("in0", 0, 2, "in0/q0.2", member=2, fanout=3),
        WorkerPlan("in0", 1, 3, "in0/q1.0", member=0, fanout=3),
        WorkerPlan("in0", 1, 0, "in0/q1.1", member=1, fanout=3),
        WorkerPlan("in0", 1, 1, "in0/q1.2", member=2, fanout=3),
        WorkerPlan("out0", 0, 2, "out0/q0"),
    )


@pytest.mark.parametrize("placement, cpus, spread_cpus", [
    ("by_queue", [0, 0], [None, None]),     # one CPU, and they stay
    ("spread", [0, 1], [None, None]),       # two
    ("adaptive", [0, 0], [0, 1]),           # one, and out0's spread CPU to move to
])
def test_plan_one_queue_each_on_four_cpus_by_placement(placement, cpus, spread_cpus):
    host = FakeHost(queues={"veth-a": 1, "veth-b": 1}, cpus=frozenset(range(4)))
    plans = plan_workers(parse(BASE + f"workers:\n  placement: {placement}\n"), host)
    assert [p.cpu for p in plans] == cpus
    assert [p.spread_cpu for p in plans] == spread_cpus
    assert [p.movable for p in plans] == [False, placement == "adaptive"]


def test_placement_is_adaptive_by_default():
    assert parse(BASE).workers.placement == "adaptive"


def test_plan_by_queue_with_explicit_cpus_queue_lists_and_fanout():
    config = parse("""\
        interfaces:
          - name: in0
            queues: [1, 0]
            fanout: 2
          - name: out0
            queues: [0, 1, 2]
        forward: []
        workers:
          cpus: [3, 1, 2]
          placement: by_queue
        """)
    host = FakeHost(queues={"in0": 2, "out0": 3}, cpus=frozenset(range(4)))
    assert plan_workers(config, host) == (
        WorkerPlan("in0", 0, 3, "in0/q0.0", member=0, fanout=2),
        WorkerPlan("in0", 0, 1, "in0/q0.1", member=1, fanout=2),
        WorkerPlan("in0", 1, 2, "in0/q1.0", member=0, fanout=2),
        WorkerPlan("in0", 1, 3, "in0/q1.1", member=1, fanout=2),
        WorkerPlan("out0", 0, 3, "out0/q0"),
        WorkerPlan("out0", 1, 1, "out0/q1"),
        WorkerPlan("out0", 2, 2, "out0/q2"),
    )


def test_plan_lanes_and_owners():
    config = parse("interfaces:\n  - name: in0\n    queues: all\n    fanout: 2\nforward: []\n")
    plans = plan_workers(config, FakeHost(queues={"in0": 3}))
    # one lane per (queue, member): no two workers of a netdev share one
    assert [p.lane for p in plans] == [0, 1, 2, 3, 4, 5]
    assert [p.owner_name for p in plans] == ["in0/q0.0", "in0/q0.0", "in0/q1.0", "in0/q1.0",
                                             "in0/q2.0", "in0/q2.0"]
    # without fanout: the lane is the queue, and a worker owns its queue
    single = WorkerPlan("in0", 5, 0, "in0/q5")
    assert (single.member, single.fanout, single.lane, single.owner_name) == (0, 1, 5, "in0/q5")


def test_fanout_spread_without_fanout_is_accepted_and_unused():
    config = parse("interfaces:\n  - name: in0\n    fanout_spread: round_robin\nforward: []\n")
    assert config.interfaces[0].fanout_spread == "round_robin"
    assert [p.name for p in plan_workers(config, FakeHost(queues={"in0": 1}))] == ["in0/q0"]


def test_worker_slots_fit_the_control_area_with_fanout():
    text = """\
        interfaces:
          - name: in0
            fanout: 16
          - name: out0
            queues: [0, 1]
            fanout: 2
          - name: eth9
        forward: []
        """
    host = FakeHost(queues={"in0": 16, "out0": 4})
    # eth9 is missing: it counts for none, and is reported on its own
    assert host_errors(text, host) == [
        "xdpd.yaml: interfaces[2].name: netdev 'eth9' not found; see 'ip link show'",
        "xdpd.yaml: interfaces: 260 workers (in0: 16 queues x fanout 16; out0: 2 queues "
        "x fanout 2) and umem.spare_workers 2 need 262 worker slots, more than the 256 "
        "xdpd has; lower an interface's fanout, own fewer queues or lower "
        "umem.spare_workers"]
    # 16 x 16 fills every slot: no room for spare ones, unless there are none
    text = "interfaces:\n  - name: in0\n    fanout: 16\nforward: []\n"
    assert host_errors(text, FakeHost(queues={"in0": 16})) == [
        "xdpd.yaml: interfaces: 256 workers (in0: 16 queues x fanout 16) and "
        "umem.spare_workers 2 need 258 worker slots, more than the 256 xdpd has; lower an "
        "interface's fanout, own fewer queues or lower umem.spare_workers"]
    check_host(parse(text + "umem:\n  spare_workers: 0\n"), FakeHost(queues={"in0": 16}))


def test_worker_slots_counted_with_the_channels_xdpd_sets():
    text = """\
        interfaces:
          - name: in0
            fanout: 8
            steering:
              channels: 32
        forward: []
        """
    # the 32 channels, not the 1 queue there is now
    assert host_errors(text, FakeHost(queues={"in0": 1})) == [
        "xdpd.yaml: interfaces: 256 workers (in0: 32 queues x fanout 8) and "
        "umem.spare_workers 2 need 258 worker slots, more than the 256 xdpd has; lower an "
        "interface's fanout, own fewer queues or lower umem.spare_workers"]


def test_cpulist_round_trip():
    assert format_cpulist({0, 1, 2, 3, 6, 8, 9}) == "0-3,6,8-9"
    assert parse_cpulist("0-3,6,8-9\n") == frozenset({0, 1, 2, 3, 6, 8, 9})
    assert format_cpulist(set()) == "none"


# --- the real Host, on loopback (no privileges needed) ------------------------

def test_real_host_loopback():
    host = Host()
    assert host.netdev_exists("lo")
    assert host.ifname(host.ifindex("lo")) == "lo"
    assert host.rx_queue_count("lo") >= 1
    assert host.mac_address("lo") == bytes(6)
    assert host.online_cpus() <= frozenset(os.sched_getaffinity(0))
    assert host.online_cpus()


def test_real_host_missing_netdev():
    host = Host()
    assert not host.netdev_exists("xdpd-nonesuch")
    with pytest.raises(NetdevError) as info:
        host.ifindex("xdpd-nonesuch")
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == "netdev 'xdpd-nonesuch' not found; see 'ip link show'"


def test_real_host_passes_check_host():
    config = parse("interfaces:\n  - name: lo\n    queues: [0]\nforward: []\n")
    check_host(config, Host())


# --- pass_to_kernel: match rules --------------------------------------------------

def with_pass_rules(entries: str) -> str:
    """BASE with `pass_to_kernel` on veth-a; entries: the YAML list, flow style."""
    return BASE.replace("  - name: veth-a\n",
                        f"  - name: veth-a\n    pass_to_kernel: {entries}\n")


P = "xdpd.yaml: interfaces[0].pass_to_kernel"

BAD_MATCHES = [
    case("not-a-list", with_pass_rules("{ethertype: arp}"),
         f"{P}: expected a list of matches, got mapping {{ethertype: arp}}; e.g. "
         "'- {ip_proto: tcp, dst_port: 22}'"),
    case("too-many", with_pass_rules("[" + ", ".join(f"{{dst_port: {p}}}" for p in range(17)) + "]"),
         f"{P}: 17 entries; the XDP program takes at most 16 per interface: merge entries "
         "(a prefix covers several addresses)"),
    case("entry-not-a-mapping", with_pass_rules("[arp]"),
         f"{P}[0]: expected a mapping with one or more of ethertype, vlan, ip_proto, src, dst, "
         "src_port or dst_port, got string 'arp'"),
    case("empty-entry", with_pass_rules("[{}]"),
         f"{P}[0]: empty match would take every packet; give one or more of ethertype, vlan, "
         "ip_proto, src, dst, src_port or dst_port"),
    case("unknown-key", with_pass_rules("[{dport: 22}]"),
         f"{P}[0].dport: unknown key; did you mean 'dst_port'?"),
    case("ethertype-word", with_pass_rules("[{ethertype: ip}]"),
         f"{P}[0].ethertype: 'ip' is not allowed; use arp, ipv4 or ipv6 or a number from "
         "0x0600 to 0xffff"),
    case("ethertype-too-small", with_pass_rules("[{ethertype: 0x05ff}]"),
         f"{P}[0].ethertype: 0x05ff is out of range; use arp, ipv4 or ipv6 or a number from "
         "0x0600 to 0xffff"),
    case("ethertype-vlan-tag", with_pass_rules("[{ethertype: 0x8100}]"),
         f"{P}[0].ethertype: 0x8100 is a VLAN tag, not what a packet carries; match tags "
         "with 'vlan: ID' (ethertype is what follows the tags)"),
    case("vlan-out-of-range", with_pass_rules("[{vlan: 4096}]"),
         f"{P}[0].vlan: 4096 is out of range; use a VLAN id from 0 to 4095, or 'none' for "
         "untagged packets"),
    case("vlan-word", with_pass_rules("[{vlan: untagged}]"),
         f"{P}[0].vlan: expected a VLAN id from 0 to 4095 or 'none' for untagged packets, "
         "got string 'untagged'"),
    case("ip-proto-out-of-range", with_pass_rules("[{ip_proto: 256}]"),
         f"{P}[0].ip_proto: 256 is out of range; use tcp, udp, icmp or icmpv6 or a number "
         "from 0 to 255"),
    case("ip-proto-bool", with_pass_rules("[{ip_proto: true}]"),
         f"{P}[0].ip_proto: expected tcp, udp, icmp or icmpv6 or a number from 0 to 255, "
         "got boolean true"),
    case("prefix-host-bits", with_pass_rules("[{src: 10.0.0.1/8}]"),
         f"{P}[0].src: '10.0.0.1/8' has host bits set; write 10.0.0.0/8 for the network, "
         "or 10.0.0.1 for that address alone"),
    case("prefix-junk", with_pass_rules("[{dst: 10.0.0.0/33}]"),
         f"{P}[0].dst: '10.0.0.0/33' is not an IPv4 or IPv6 prefix; write ADDRESS/LENGTH, "
         "e.g. 10.0.0.0/8 or 2001:db8::/32"),
    case("prefix-number", with_pass_rules("[{dst: 10}]"),
         f"{P}[0].dst: expected an IPv4 or IPv6 prefix (e.g. 10.0.0.0/8 or 2001:db8::/32), "
         "got integer 10"),
    case("port-out-of-range", with_pass_rules("[{dst_port: 65536}]"),
         f"{P}[0].dst_port: 65536 is out of range; use 0 to 65535"),
    case("families-differ", with_pass_rules("[{src: 10.0.0.0/8, dst: '2001:db8::/32'}]"),
         f"{P}[0].dst: IPv6 prefix 2001:db8::/32 with IPv4 src 10.0.0.0/8; a packet has "
         "one family, use two entries"),
    case("ethertype-against-prefix", with_pass_rules("[{ethertype: ipv6, src: 10.0.0.0/8}]"),
         f"{P}[0].ethertype: ethertype ipv6 with src 10.0.0.0/8; remove ethertype (the "
         "prefix implies its family)"),
    case("arp-with-port", with_pass_rules("[{ethertype: arp, dst_port: 22}]"),
         f"{P}[0].ethertype: ethertype arp with dst_port; dst_port needs ipv4 or ipv6, or "
         "no ethertype"),
    case("icmp-of-the-other-family", with_pass_rules("[{ip_proto: icmp, dst: '2001:db8::/32'}]"),
         f"{P}[0].ip_proto: icmp with IPv6; use ip_proto icmpv6"),
    case("ports-of-icmp", with_pass_rules("[{ip_proto: icmp, src_port: 7}]"),
         f"{P}[0].src_port: ports are TCP's or UDP's, not ip_proto icmp; use ip_proto tcp "
         "or udp, or leave ip_proto out (either)"),
    case("every-entry-reported", with_pass_rules("[{vlan: -1}, {ethertype: arp}, {src_port: x}]"),
         f"{P}[0].vlan: -1 is out of range; use a VLAN id from 0 to 4095, or 'none' for "
         "untagged packets",
         f"{P}[2].src_port: expected an integer, got string 'x'"),
]


@pytest.mark.parametrize("text,expected", BAD_MATCHES)
def test_bad_match_gets_exact_messages(text, expected):
    assert errors_of(text) == expected


def test_pass_to_kernel_model():
    from xdpd.config.model import Match
    config = parse(with_pass_rules(
        "[{ethertype: arp}, {ip_proto: tcp, dst_port: 22}, {ethertype: 0x88cc}, "
        "{vlan: 100, src: 10.0.0.0/8, src_port: 53}, {vlan: none, dst: '2001:db8::1'}]"))
    net = ipaddress.ip_network
    rules = config.interfaces[0].pass_to_kernel
    assert rules == (Match(ethertype=0x0806), Match(ip_proto=6, dst_port=22),
                     Match(ethertype=0x88CC),
                     Match(vlan=100, src=net("10.0.0.0/8"), src_port=53),
                     Match(vlan="none", dst=net("2001:db8::1/128")))
    assert [m.describe() for m in rules] == [
        "arp", "tcp dst port 22", "ethertype 0x88cc",
        "vlan 100 src 10.0.0.0/8 src port 53", "untagged dst 2001:db8::1/128"]
    assert config.interfaces[1].pass_to_kernel == ()
    # an empty list (or null) is no rules, as if the key were absent
    assert parse(with_pass_rules("[]")).interfaces[0].pass_to_kernel == ()
    assert parse(with_pass_rules("null")).interfaces[0].pass_to_kernel == ()
    assert len(parse(with_pass_rules(
        "[" + ", ".join(f"{{dst_port: {p}}}" for p in range(16)) + "]"
    )).interfaces[0].pass_to_kernel) == 16


# --- steering -----------------------------------------------------------------

STEER = """\
interfaces:
  - name: eth0
    queues: {queues}
    steering:
{steering}
forward: []
"""


def steer(steering: str, queues: str = "[0, 1]") -> str:
    return STEER.format(queues=queues, steering=dedent(steering).rstrip().replace("\n", "\n      ")
                        .join(["      ", ""]))


STEERING_BAD = [
    case("steering-unknown-key", steer("chanels: 4"),
         "xdpd.yaml: interfaces[0].steering.chanels: unknown key; did you mean 'channels'?"),
    case("steering-not-a-mapping", STEER.format(queues="[0]", steering="      - 4"),
         "xdpd.yaml: interfaces[0].steering: expected a mapping with channels, rss_queues or "
         "flows, got list [4]"),
    case("channels-zero", steer("channels: 0"),
         "xdpd.yaml: interfaces[0].steering.channels: 0 is out of range; use 1 to 256"),
    case("channels-leave-out-owned-queues", steer("channels: 1"),
         "xdpd.yaml: interfaces[0].steering.channels: 1 channels leave out owned queue 1 "
         "(queues number from 0); raise channels to 2 or drop that queue from "
         "interfaces[0].queues"),
    case("rss-queue-not-owned", steer("rss_queues: [1, 3]"),
         "xdpd.yaml: interfaces[0].steering.rss_queues[1]: queue 3 is not owned by eth0 "
         "(owned: 0, 1); steer only to queues xdpd serves"),
    case("rss-queue-beyond-channels", steer("channels: 4\nrss_queues: [4]", queues="all"),
         "xdpd.yaml: interfaces[0].steering.rss_queues[0]: queue 4 is not owned by eth0 "
         "(owned: 0-3); steer only to queues xdpd serves"),
    case("rss-all", steer("rss_queues: all"),
         "xdpd.yaml: interfaces[0].steering.rss_queues: 'all' is not allowed here; list the "
         "queues RSS spreads over, e.g. [0, 1], or leave rss_queues out to keep the NIC's table"),
    case("rss-twice", steer("rss_queues: [0, 0]"),
         "xdpd.yaml: interfaces[0].steering.rss_queues[1]: queue 0 is listed twice "
         "(also interfaces[0].steering.rss_queues[0]); list each queue once"),
    case("flows-empty", steer("flows: []"),
         "xdpd.yaml: interfaces[0].steering.flows: expected a non-empty list of rules such as "
         "'- {type: udp4, dst_port: 4789, queue: 0}', got list []"),
    case("flow-unknown-key", steer("flows:\n  - {type: udp4, dst_prot: 53, queue: 0}"),
         "xdpd.yaml: interfaces[0].steering.flows[0].dst_prot: unknown key; "
         "did you mean 'dst_port'?"),
    case("flow-missing-type-and-queue", steer("flows:\n  - {dst_port: 53}"),
         "xdpd.yaml: interfaces[0].steering.flows[0].type: required key missing; "
         "use tcp4, udp4, tcp6 or udp6",
         "xdpd.yaml: interfaces[0].steering.flows[0].queue: required key missing; "
         "give the rx queue the flow goes to"),
    case("flow-bad-type", steer("flows:\n  - {type: sctp4, dst_port: 53, queue: 0}"),
         "xdpd.yaml: interfaces[0].steering.flows[0].type: 'sctp4' is not allowed; "
         "use tcp4, udp4, tcp6 or udp6"),
    case("flow-no-match", steer("flows:\n  - {type: udp4, queue: 0}"),
         "xdpd.yaml: interfaces[0].steering.flows[0]: no match field; give at least one of "
         "src_ip, dst_ip, src_port, dst_port (a rule matching every packet of a type is what "
         "RSS is for)"),
    case("flow-queue-not-owned", steer("flows:\n  - {type: tcp4, dst_port: 80, queue: 5}"),
         "xdpd.yaml: interfaces[0].steering.flows[0].queue: queue 5 is not owned by eth0 "
         "(owned: 0, 1); steer only to queues xdpd serves"),
    case("flow-port-range", steer("flows:\n  - {type: tcp4, dst_port: 65536, queue: 0}"),
         "xdpd.yaml: interfaces[0].steering.flows[0].dst_port: 65536 is out of range; "
         "use 0 to 65535"),
    case("flow-ip-version", steer("flows:\n  - {type: udp4, dst_ip: '2001:db8::1', queue: 0}"),
         "xdpd.yaml: interfaces[0].steering.flows[0].dst_ip: '2001:db8::1' is an IPv6 address "
         "but the rule's type is IPv4; use type tcp6 or udp6"),
    case("flow-ip-prefix", steer("flows:\n  - {type: udp4, src_ip: 10.0.0.0/8, queue: 0}"),
         "xdpd.yaml: interfaces[0].steering.flows[0].src_ip: '10.0.0.0/8' is not an IP "
         "address; write one host address, e.g. 192.0.2.1 (no prefix length)"),
    case("flow-twice", steer("flows:\n  - {type: udp4, dst_port: 53, queue: 0}\n"
                             "  - {type: udp4, dst_port: 53, queue: 0}"),
         "xdpd.yaml: interfaces[0].steering.flows[1]: the same rule as "
         "interfaces[0].steering.flows[0]; list each rule once"),
]


@pytest.mark.parametrize("text, expected", STEERING_BAD)
def test_steering_bad_input_gets_exact_messages(text, expected):
    assert errors_of(text) == expected


def test_steering_every_key():
    from xdpd.config.model import FlowRule, SteeringConfig
    config = parse(steer("""\
        channels: 4
        rss_queues: [2, 1]
        flows:
          - {type: udp4, dst_port: 4789, queue: 3}
          - {type: tcp6, src_ip: '2001:DB8::1', dst_ip: '2001:db8::2', src_port: 1, queue: 0}
        """, queues="all"))
    assert config.interfaces[0].steering == SteeringConfig(
        channels=4, rss_queues=(2, 1),
        flows=(FlowRule(type="udp4", queue=3, dst_port=4789),
               FlowRule(type="tcp6", queue=0, src_ip="2001:db8::1", dst_ip="2001:db8::2",
                        src_port=1)))


def test_steering_absent_is_empty():
    assert parse(BASE).interfaces[0].steering.empty


def test_channels_plan_the_workers_whatever_the_count_now():
    config = parse(steer("channels: 3", queues="all"))
    host = FakeHost(queues={"eth0": 8})
    check_host(config, host)
    assert [p.name for p in plan_workers(config, host)] == ["eth0/q0", "eth0/q1", "eth0/q2"]


def test_steering_queues_of_all_checked_on_the_host():
    text = steer("rss_queues: [0, 2]\nflows:\n  - {type: udp4, dst_port: 53, queue: 3}",
                 queues="all")
    assert host_errors(text, FakeHost(queues={"eth0": 2})) == [
        "xdpd.yaml: interfaces[0].steering.rss_queues[1]: queue 2 is not owned by eth0 "
        "(owned: 0, 1); steer only to queues xdpd serves",
        "xdpd.yaml: interfaces[0].steering.flows[0].queue: queue 3 is not owned by eth0 "
        "(owned: 0, 1); steer only to queues xdpd serves"]


def test_vlan_actions_parse():
    config = parse(BASE + "    push_vlan: 100\n  - from: veth-b\n    to: veth-a\n"
                          "    push_vlan: 0\n    vlan_proto: 802.1ad\n"
                          "    match: {vlan: 5}\n  - from: veth-b\n    to: veth-a\n"
                          "    pop_vlan: true\n")
    assert config.forward == (
        ForwardRule(0, "veth-a", "forward", "veth-b", push_vlan=100),
        ForwardRule(1, "veth-b", "forward", "veth-a", push_vlan=0, vlan_proto="802.1ad",
                    match=Match(vlan=5)),
        ForwardRule(2, "veth-b", "forward", "veth-a", pop_vlan=True),
    )


def test_check_config_names_each_rules_rewrites(tmp_path, capsys):
    from types import SimpleNamespace

    from xdpd.cli.check_config import command as cmd_check_config
    path = tmp_path / "xdpd.yaml"
    path.write_text(dedent("""\
        interfaces: [{name: lo}]
        forward:
          - {from: lo, to: lo, match: {vlan: none}, push_vlan: 100}
          - {from: lo, to: lo, pop_vlan: true, swap_macs: true}
        metrics: {listen: null}
        """))
    path.chmod(0o600)
    assert cmd_check_config(SimpleNamespace(path=str(path))) == 0
    out = capsys.readouterr().out
    assert "untagged: forward to lo, push vlan 100; forward to lo, swap MACs, pop vlan" in out
    # what a full-size packet of lo takes (its MTU is far over a frame)
    mtu = int(open("/sys/class/net/lo/mtu").read())
    (frames,) = [line for line in out.splitlines() if line.startswith("frames lo: ")]
    assert frames.startswith(f"frames lo: MTU {mtu}: a full-size packet ({mtu + 18} B "
                             "with headers) takes "), frames
    # lo's 64 KiB packets need more buffers than a chain may take
    assert f"more than the 18 one packet may take in copy mode, so packets over " \
        f"{18 * 1792} B are dropped (chain_invalid)" in frames, frames
    (multi,) = [line for line in out.splitlines() if line.startswith("multi-buffer: ")]
    assert multi.startswith("multi-buffer: on (umem.multi_buffer: auto); a packet takes up "
                            f"to 18 descriptors in copy mode, 37 at MTU {mtu}"), multi


def test_frame_use_in_words():
    from xdpd.config.plan import fragments, frame_size_for, frame_use, max_mtu
    assert (max_mtu(2048), max_mtu(4096)) == (1774, 3822)
    assert [frame_size_for(m) for m in (1500, 1774, 1775, 3822, 3823)] == \
        [2048, 2048, 4096, 4096, None]
    assert fragments(1518, 2048) == 1 and fragments(1793, 2048) == 2
    assert fragments(9018, 2048) == 6 and fragments(9018, 4096) == 3
    for chains in (False, True):
        assert frame_use(1500, 2048, chains) == ("MTU 1500: a full-size packet (1518 B with "
                                                 "headers) fits one 2048 B frame")
    assert frame_use(9000, 4096, False) == (
        "MTU 9000: a full-size packet (9018 B with headers) takes 3 buffers of 4096 B; "
        "with umem.multi_buffer: off workers take one buffer per packet, so packets over "
        "3822 B are dropped (see xdpd doctor)")
    assert frame_use(9000, 2048, True) == (
        "MTU 9000: a full-size packet (9018 B with headers) takes 6 buffers of 2048 B, "
        "one descriptor chain (multi-buffer)")


def test_multi_buffer_auto_follows_the_largest_mtu():
    from xdpd.config.model import UmemConfig
    from xdpd.config.plan import multi_buffer
    assert not multi_buffer(UmemConfig(), [1500, 1774])
    assert multi_buffer(UmemConfig(), [1500, 1775])
    assert not multi_buffer(UmemConfig(frame_size=4096), [3822])
    assert multi_buffer(UmemConfig(multi_buffer="on"), [1500])
    assert not multi_buffer(UmemConfig(multi_buffer="off"), [9000])
    assert not multi_buffer(UmemConfig(), [])


def test_check_config_shows_fanout_members_and_spread(tmp_path, capsys):
    from types import SimpleNamespace

    from xdpd.cli.check_config import command as cmd_check_config
    path = tmp_path / "xdpd.yaml"
    path.write_text(dedent("""\
        interfaces:
          - {name: lo, queues: [0], fanout: 2, fanout_spread: round_robin}
        forward: []
        workers: {cpus: [0]}
        metrics: {listen: null}
        """))
    path.chmod(0o600)
    assert cmd_check_config(SimpleNamespace(path=str(path))) == 0
    out = capsys.readouterr().out.splitlines()
    assert "workers: 2" in out
    assert [line.split()[0] for line in out if line.startswith("  lo/")] == ["lo/q0.0", "lo/q0.1"]
    assert ("fanout lo: 2 workers per queue (round_robin); member 0 has the queue's FILL "
            "and COMPLETION rings and its 4096 frames serve all 2 RX rings") in out
    path.write_text(path.read_text().replace("fanout: 2, ", ""))
    assert cmd_check_config(SimpleNamespace(path=str(path))) == 0
    out = capsys.readouterr().out.splitlines()
    assert "fanout lo: 1 (fanout_spread round_robin unused without fanout)" in out
