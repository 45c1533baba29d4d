#!/usr/bin/env python3
"""The C fast path alone, on synthetic AF_XDP rings: Mpps per core.

    make bench-micro
    python bench/fastpath_micro.py [--packets 10000000] [--runs 5] [--batch 64]
                                   [--size 64] [--cpu N] [--scenarios io,mac,...]
                                   [--frags N] [--max-segs M]
                                   [--hugepages auto] [--json]

No kernel, no NIC, no root: every worker's Port is built over in-process rings
laid out like the kernel's, and microbench() (the test harness,
_fastpath_testing: testing/fastpath_testing.c) runs the workers' own
loop step (port_iterate and its bookkeeping, the same C code, not a copy) on
them, with a small "kernel" in between that completes TX descriptors and turns
FILL addresses into received packets.  Only the time inside the loop step
counts as fast path; the emulated kernel's time is reported apart.  All ports
run in this one thread, so a scenario's rate is what one core does.

Scenarios (the forwarding table decides them, as the supervisor writes it):
  io       one worker, forwards to itself, frames untouched
  mac      one worker, forwards to itself, set_dst_mac + set_src_mac
  swap     one worker, forwards to itself, swap_macs
  handoff  two workers: worker 0 receives and hands every packet to worker 1,
           which transmits it, with MAC rewrite; frames go home through the
           return ring.  Both ports share the core: Mpps per core for the pair.
  drop     one worker, a drop rule
  match    one worker, three rules with matches (udp dst port 53: drop;
           udp dst port 9 from 198.18.0.0/15: forward to itself with
           set_dst_mac + set_src_mac; the rest: drop): every packet parsed
           and tried against two rules, the second taking it

Every UMEM frame holds an Ethernet/IPv4/UDP packet of --size bytes (without
FCS) at copy mode's 256-byte headroom.

Descriptor chains (multi-buffer): --frags N makes every packet N
descriptors, as copy mode fills them: the first N-1 whole (the frame less
its headroom, 1792 B in 2048-byte frames) and the last --size bytes, so
--frags 5 --size 64 is a 7232-byte packet; the ports are built with
--max-segs (default 18, copy mode's limit, when N > 1; 0, no chains,
otherwise: --frags 1 --max-segs 18 times the chain path on one-descriptor
packets).  Mpps and ns/pkt count packets, whatever their descriptors.

The clock is read around each loop step (one batch of up to --batch
packets); what a clock read costs here is printed under the table, and it
is part of the fast-path figure.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "testing"))
import build as harness  # noqa: E402  (testing/build.py: microbench() is not in the product)
from xdpd.kernel.xdp_program import match_to_c  # noqa: E402
from xdpd.config.model import COPY_MAX_SEGS, Match, RingsConfig, UmemConfig, WorkersConfig
from xdpd.kernel.pcap_filter import compile_filter  # noqa: E402
from xdpd.datapath.umem import SharedUmem, UmemGeometry  # noqa: E402

DST_MAC = bytes.fromhex("02000000aa02")     # what set_dst_mac writes
SRC_MAC = bytes.fromhex("02000000aa01")     # what set_src_mac writes


@dataclass(frozen=True)
class Scenario:
    name: str
    nworkers: int
    table: list           # rules by netdev, as Control.write_table takes them
    ingress: tuple[int, ...]
    what: str
    csum: bool = False    # netdev 0 completes partial checksums (interfaces[].checksum)

    def worker_netdevs(self) -> list[int]:
        """Worker w is queue 0 of netdev w: each has a rule of its own."""
        return list(range(self.nworkers))


def _forward(egress: list[int], **macs) -> dict:
    rule = {"action": "forward", "egress": egress,
            "set_dst_mac": None, "set_src_mac": None, "swap_macs": False}
    rule.update(macs)
    return rule


def match_bytes(**fields) -> bytes:
    """A config Match as the fast path's struct fp_match."""
    return bytes(match_to_c(Match(**fields)))


MATCH_RULES = [
    {"action": "drop", "id": 0, "match": match_bytes(ip_proto=17, dst_port=53)},
    {**_forward([0], set_dst_mac=DST_MAC, set_src_mac=SRC_MAC), "id": 1,
     "match": match_bytes(ip_proto=17, dst_port=9,
                          src=ipaddress.ip_network("198.18.0.0/15"))},
    {"action": "drop", "id": 2},
]

SCENARIOS = {s.name: s for s in (
    Scenario("io", 1, [_forward([0])], (0,), "forward, frames untouched"),
    Scenario("mac", 1, [_forward([0], set_dst_mac=DST_MAC, set_src_mac=SRC_MAC)], (0,),
             "forward, set_dst_mac + set_src_mac"),
    Scenario("swap", 1, [_forward([0], swap_macs=True)], (0,), "forward, swap_macs"),
    Scenario("handoff", 2, [_forward([1], set_dst_mac=DST_MAC, set_src_mac=SRC_MAC), None],
             (0,), "worker 0 -> worker 1 -> home, MAC rewrite; both on one core"),
    Scenario("drop", 1, [{"action": "drop"}], (0,), "a drop rule"),
    Scenario("match", 1, [MATCH_RULES], (0,), "three rules with matches, the second forwards"),
    Scenario("csum", 1, [_forward([0], set_dst_mac=DST_MAC, set_src_mac=SRC_MAC)], (0,),
             "mac, with checksum completion on: every frame checked (none partial)",
             csum=True),
    Scenario("vlan", 1, [_forward([0], set_dst_mac=DST_MAC, set_src_mac=SRC_MAC, push_vlan=100)],
             (0,), "forward, MAC rewrite + push_vlan (the per-packet rule path)"),
)}


@dataclass(frozen=True)
class Setup:
    packets: int = 10_000_000
    batch: int = WorkersConfig.batch_size
    size: int = 64
    frame_size: int = UmemConfig.frame_size
    frames_per_worker: int = UmemConfig.frames_per_worker
    rings: tuple[int, int, int, int] = (RingsConfig.rx, RingsConfig.tx,
                                        RingsConfig.fill, RingsConfig.completion)
    hugepages: str = "auto"
    frags: int = 1        # descriptors per packet (chains when > 1)
    max_segs: int = 0     # the ports' (0: no chains)
    capture: str | None = None    # a tcpdump expression armed in capture slot 0
    capture_points: int = 1       # _fastpath.CAP_* bits
    snaplen: int = 128


def prepare(scenario: Scenario, setup: Setup) -> SharedUmem:
    """Fresh UMEM and control area, workers placed, the scenario's table written."""
    geo = UmemGeometry(scenario.nworkers, setup.frames_per_worker, setup.frame_size)
    umem = SharedUmem(geo, setup.hugepages)
    try:
        for w, netdev in enumerate(scenario.worker_netdevs()):
            umem.control.set_worker(w, netdev, 0, 0)
        umem.control.write_table(scenario.table,
                                 complete_checksums=[0] if scenario.csum else [])
        if setup.capture is not None:
            umem.control.capture_arm(0, -1, -1, setup.capture_points, setup.snaplen,
                                     compile_filter(setup.capture))
    except Exception:
        umem.close()
        raise
    return umem


def run_once(umem: SharedUmem, scenario: Scenario, setup: Setup) -> dict:
    """One microbench() run on a prepared (fresh) area; the raw result."""
    chains = {"frags": setup.frags, "max_segs": setup.max_segs} \
        if setup.frags > 1 or setup.max_segs else {}
    if setup.capture is not None:
        chains["drain_capture"] = True      # a reader that keeps up, off the clock
    return harness.load().microbench(umem.control, umem.umem.fd, umem.umem.size, setup.rings,
                                setup.batch, setup.packets, setup.size, scenario.ingress,
                                **chains)


def measure(scenario: Scenario, setup: Setup, runs: int) -> dict:
    results, backing = [], None
    for _ in range(runs):
        umem = prepare(scenario, setup)
        try:
            backing = umem.backing
            r = run_once(umem, scenario, setup)
        finally:
            umem.close()
        r.pop("frame")
        results.append(r)
    mpps = [r["packets"] * 1e3 / r["ns_fastpath"] for r in results]
    median_run = sorted(results, key=lambda r: r["ns_fastpath"])[len(results) // 2]
    return {
        "scenario": scenario.name,
        "what": scenario.what,
        "workers": scenario.nworkers,
        "umem": backing,
        "mpps": mpps,
        "mpps_median": statistics.median(mpps),
        "mpps_min": min(mpps),
        "mpps_max": max(mpps),
        "fastpath_ns_per_packet": median_run["ns_fastpath"] / median_run["packets"],
        "emulator_ns_per_packet": statistics.median(
            r["ns_emulator"] / r["packets"] for r in results),
        # each timed loop step includes about one clock read
        "clock_ns": statistics.median(r["ns_clock"] for r in results),
        "clock_ns_per_packet": median_run["ns_clock"] * median_run["iterations"]
                                / median_run["packets"],
        "runs": results,
    }


def print_table(rows: list[dict], setup: Setup, runs: int, cpu: int | None) -> None:
    where = f"CPU {cpu}" if cpu is not None else "unpinned"
    if setup.frags > 1:
        whole = setup.frame_size - 256
        size = (f"{setup.frags}-descriptor packets of {(setup.frags - 1) * whole + setup.size} B "
                f"({setup.frags - 1} x {whole} + {setup.size})")
    else:
        size = f"{setup.size} B packets"
    chains = f", max_segs {setup.max_segs}" if setup.max_segs else ", no chains (max_segs 0)"
    print(f"fast path on synthetic rings: {setup.packets:,} packets x {runs} runs, "
          f"batch {setup.batch}, {size}{chains}, {where}")
    print(f"UMEM {setup.frames_per_worker} x {setup.frame_size} B frames per worker, "
          f"{rows[0]['umem']}; rings rx/tx/fill/comp {'/'.join(map(str, setup.rings))}")
    print()
    print(f"{'scenario':<9} {'Mpps/core':>9} {'(min-max)':<15} "
          f"{'fast path ns/pkt':>16} {'emulator ns/pkt':>15}")
    for r in rows:
        spread = f"({r['mpps_min']:.1f}-{r['mpps_max']:.1f})"
        print(f"{r['scenario']:<9} {r['mpps_median']:>9.1f} {spread:<15} "
              f"{r['fastpath_ns_per_packet']:>16.2f} {r['emulator_ns_per_packet']:>15.2f}")
    print()
    print(f"Mpps/core: median over runs of packets / time inside the loop step; "
          f"handoff counts both workers' steps (one core for the pair).")
    clock = ", ".join(f"{r['scenario']} {r['clock_ns_per_packet']:.2f}" for r in rows)
    print(f"clock_gettime costs {rows[0]['clock_ns']:.0f} ns here; the fast-path column "
          f"includes about one per loop step, ns/pkt: {clock}.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=Setup.packets, help="packets per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=Setup.batch, help="the workers' batch_size")
    ap.add_argument("--size", type=int, default=Setup.size,
                    help="frame size in bytes, without FCS")
    ap.add_argument("--cpu", type=int, help="pin this process to CPU N")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma-separated, from: " + ", ".join(SCENARIOS))
    ap.add_argument("--hugepages", choices=("on", "off", "auto"), default=Setup.hugepages,
                    help="UMEM backing, as umem.hugepages")
    ap.add_argument("--frame-size", type=int, default=Setup.frame_size,
                    help="umem.frame_size (2048 or 4096)")
    ap.add_argument("--frames-per-worker", type=int, default=Setup.frames_per_worker)
    ap.add_argument("--rings", default=",".join(map(str, Setup.rings)), metavar="RX,TX,FILL,COMP",
                    help="ring sizes (powers of two)")
    ap.add_argument("--frags", type=int, default=1, metavar="N",
                    help="descriptors per packet (chains): N-1 whole frames, then --size bytes")
    ap.add_argument("--max-segs", type=int, metavar="M",
                    help=f"the ports' max_segs (default: {COPY_MAX_SEGS} with --frags over 1, "
                         f"else 0: no chains)")
    ap.add_argument("--capture", metavar="EXPRESSION",
                    help="arm capture slot 0 with this tcpdump filter (a reader that keeps "
                         "up empties the rings between loop steps, off the clock)")
    ap.add_argument("--capture-points", default="rx", metavar="rx,tx,drop")
    ap.add_argument("--snaplen", type=int, default=Setup.snaplen)
    ap.add_argument("--json", action="store_true",
                    help="print the results as JSON instead of the table")
    args = ap.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    for name in names:
        if name not in SCENARIOS:
            ap.error(f"--scenarios: {name!r} is not one of {', '.join(SCENARIOS)}")
    if args.packets < 1 or args.runs < 1:
        ap.error("--packets and --runs must be positive")
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError as e:
            ap.error(f"--cpu {args.cpu}: {e.strerror}")
    try:
        rings = tuple(int(v) for v in args.rings.split(","))
        if len(rings) != 4:
            raise ValueError
    except ValueError:
        ap.error(f"--rings {args.rings!r}: expected four sizes, RX,TX,FILL,COMP")
    max_segs = args.max_segs if args.max_segs is not None else \
        (COPY_MAX_SEGS if args.frags > 1 else 0)
    if args.frags < 1 or (args.frags > 1 and max_segs < args.frags):
        ap.error(f"--frags {args.frags}: at least 1, and at most --max-segs ({max_segs})")
    setup = Setup(packets=args.packets, batch=args.batch, size=args.size,
                  hugepages=args.hugepages, frame_size=args.frame_size,
                  frames_per_worker=args.frames_per_worker, rings=rings,
                  frags=args.frags, max_segs=max_segs, capture=args.capture,
                  capture_points=sum({"rx": 1, "tx": 2, "drop": 4}[p]
                                     for p in args.capture_points.split(",") if p),
                  snaplen=args.snaplen)
    try:
        rows = [measure(SCENARIOS[name], setup, args.runs) for name in names]
    except (ValueError, OSError, RuntimeError) as e:
        print(f"fastpath_micro: {e}", file=sys.stderr)
        return 1
    if args.json:
        json.dump({"setup": {**setup.__dict__, "runs": args.runs, "cpu": args.cpu},
                   "scenarios": rows}, sys.stdout, indent=2)
        print()
    else:
        print_table(rows, setup, args.runs, args.cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
