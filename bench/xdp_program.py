#!/usr/bin/env python3
"""rr_redirect alone: what the XDP program costs per packet, by what it does.

    python bench/xdp_program.py [--repeat 2000000] [--runs 5] [--json]

BPF_PROG_TEST_RUN runs the program on one frame `repeat` times and the
kernel reports the average time per run.  The program is loaded (not
attached) and its queue 0 configured as each scenario says; no socket is in
its XSKMAP, so an owned queue ends in the map miss and the fallback, the
same path length as a redirect.  The baseline is the default configuration
(one socket per queue, no pass_to_kernel rules): every other row is
measured in the same run and shown against it.  This is the cost that
lands on the CPU running the queue's NAPI poll (on veth, the sender's).

Scenarios:
  unowned            queue not xdpd's: counted and passed
  owned              one socket per queue, no rules (the default)
  pass_rules         owned, 2 pass_to_kernel rules that do not match (ARP;
                     TCP port 22): every packet parsed and tried against both
  fanout_rr          fanout 4, round robin: a per-CPU counter, no parsing
  fanout_hash        fanout 4, flow hash: parsed and hashed (IPv4/UDP)
  fanout_hash_ipv6   the same with an IPv6/UDP frame
  fanout_hash_rules  fanout 4, flow hash, and the 2 pass rules: one parse
Needs root (loading a BPF program).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xdpd.config.model import ETHERTYPES, IP_PROTOS, Match
from xdpd.kernel.xdp_program import XdpProgram
from xdpd.lab.xdp import timed_run  # noqa: E402

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def udp_frame(ipv6: bool = False, size: int = 64) -> bytes:
    """Ethernet + IPv4 (or IPv6) + UDP, padded to size bytes."""
    udp = (4000).to_bytes(2, "big") + (9).to_bytes(2, "big") + bytes(4)
    if ipv6:
        ip = (bytes([0x60, 0, 0, 0]) + len(udp).to_bytes(2, "big") + bytes([17, 64])
              + bytes.fromhex("20010db8000000000000000000000001")
              + bytes.fromhex("20010db8000000000000000000000002"))
        eth = DST_MAC + SRC_MAC + b"\x86\xdd"
    else:
        ip = (bytes([0x45, 0]) + (20 + len(udp)).to_bytes(2, "big") + bytes(4)
              + bytes([64, 17, 0, 0]) + bytes([198, 18, 0, 1]) + bytes([198, 19, 0, 1]))
        eth = DST_MAC + SRC_MAC + b"\x08\x00"
    frame = eth + ip + udp
    return frame + bytes(max(0, size - len(frame)))


RULES = (Match(ethertype=ETHERTYPES["arp"]), Match(ip_proto=IP_PROTOS["tcp"], dst_port=22))
# name -> (queue_conf, pass rules, IPv6 frame)
SCENARIOS = {
    "unowned": (None, (), False),
    "owned": ({}, (), False),
    "pass_rules": ({}, RULES, False),
    "fanout_rr": ({"fanout": 4, "spread": "round_robin"}, (), False),
    "fanout_hash": ({"fanout": 4, "spread": "flow_hash"}, (), False),
    "fanout_hash_ipv6": ({"fanout": 4, "spread": "flow_hash"}, (), True),
    "fanout_hash_rules": ({"fanout": 4, "spread": "flow_hash"}, RULES, False),
}
BASELINE = "owned"


def measure(prog: XdpProgram, name: str, repeat: int) -> int:
    conf, rules, ipv6 = SCENARIOS[name]
    if conf is None:
        prog.set_queue(0, owned=False)
    else:
        prog.set_queue(0, owned=True, **conf)
    prog.set_pass_rules(rules)
    return timed_run(prog, udp_frame(ipv6), repeat=repeat)[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2_000_000, help="runs per measurement")
    ap.add_argument("--runs", type=int, default=5, help="measurements per scenario (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/xdp_program.py needs root (loading a BPF program)", file=sys.stderr)
        return 77
    results: dict[str, list[int]] = {name: [] for name in SCENARIOS}
    with XdpProgram.load() as prog:
        for _ in range(args.runs):              # interleaved: drift hits every row alike
            for name in SCENARIOS:
                results[name].append(measure(prog, name, args.repeat))
    med = {name: statistics.median(v) for name, v in results.items()}
    if args.json:
        json.dump({"ns_per_packet": med, "runs": results}, sys.stdout, indent=1)
        print()
        return 0
    print(f"rr_redirect per packet (BPF_PROG_TEST_RUN, {args.repeat} runs x {args.runs}, "
          f"median; kernel {os.uname().release})")
    head = f"{'scenario':<20}{'ns/pkt':>8}{'min-max':>10}{'vs owned':>10}"
    print(head)
    print("-" * len(head))
    for name, ns in med.items():
        print(f"{name:<20}{ns:>8.0f}{min(results[name]):>5}-{max(results[name]):<4}"
              f"{ns - med[BASELINE]:>+10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
