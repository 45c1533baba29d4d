"""100 reloads under load: rule flips (forward with one MAC or another,
a source MAC rewrite, drop) mixed with queues removed and added back, while
the live-frames generator offers traffic the whole time.

Every packet sent must be delivered or explained by the configuration in
force (a drop rule, or its queue given back to the kernel while removed),
the UMEM's frames must add up on every scrape and all be home once the
traffic stops, and the supervisor must end the storm with what it started
with: open files, memfd mappings, threads, processes and worker slots.
"""
import os
import statistics
import time

from integration_helpers import (ROOT_ONLY, link_drops, poll_until, start_live_generator,
                                 stop_live_generator)

from xdpd.lab.xdp import CountingSink

pytestmark = ROOT_ONLY

RELOADS = 100
RATE = 50_000           # what the existing reload test shows the lab sustains
STEP = 400              # packets that must show the new rules before the next reload
OTHER_MAC = "02:00:00:00:00:99"


def rule(lab, kind: str) -> str:
    if kind == "drop":
        return "    action: drop\n"
    dst = OTHER_MAC if kind == "other" else lab.MACS[lab.SINK_DEV]
    src = f'    set_src_mac: "{lab.MACS[lab.OUT_DEV]}"\n' if kind == "sink+src" else ""
    return f'    to: {lab.OUT_DEV}\n    set_dst_mac: "{dst}"\n{src}'


def config(lab, kind: str, in_queues: str = "all", out_queues: str = "all") -> str:
    # workers on CPU 1, the generator (and the veth NAPI it drives) on CPU 0,
    # as in test_service's reload test: a worker sharing the generator's CPU
    # lets its RX ring overflow, reload or not
    return f"""interfaces:
  - name: {lab.IN_DEV}
    queues: {in_queues}
  - name: {lab.OUT_DEV}
    queues: {out_queues}
forward:
  - from: {lab.IN_DEV}
{rule(lab, kind)}  - from: {lab.OUT_DEV}
    action: drop
workers:
  cpus: [1]
"""


def plan(lab) -> list[tuple[str, str, dict]]:
    """The storm: blocks of 8 rule flips, then a queue removed and added
    back (in0/q0, which carries the traffic, or out0/q0, its egress,
    in turn). The rule before a removal forwards, so that the removed
    worker's drop count no longer moves when it goes."""
    flips = ["drop", "other", "sink+src", "drop", "other", "sink+src", "drop", "sink"]
    steps = []
    for block in range(RELOADS // 10):
        for kind in flips:
            steps.append((kind, config(lab, kind), {}))
        where = ({"in_queues": "[1]"} if block % 2 == 0 else {"out_queues": "[1]"})
        steps.append(("remove " + ("in0/q0" if "in_queues" in where else "out0/q0"),
                      config(lab, "sink", **where), where))
        steps.append(("add back", config(lab, "sink"), {}))
    return steps


def supervisor_resources(pid: int) -> dict:
    with open(f"/proc/{pid}/maps") as f:
        memfd_maps = sum("memfd:" in line for line in f)
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "memfd_maps": memfd_maps,
            "threads": threads}


def resources(d, led) -> dict:
    return {**supervisor_resources(d.proc.pid), "processes": xdpd_processes(d),
            "slots_used": led.scrape().value("xdpd_worker_slots_used")}


def steady_resources(d, led) -> dict:
    """resources() once two readings in a row agree: the connection of the
    status request or scrape just before may still be closing in the
    supervisor (one fd more for a moment), and that is no baseline."""
    last = [None]

    def steady():
        now = resources(d, led)
        agreed, last[0] = now == last[0], now
        return now if agreed else None
    return poll_until(steady, timeout=10, what="supervisor resources steady", every=0.05)


def xdpd_processes(d) -> int:
    return len(d.worker_pids()) + (d.proc.poll() is None)


class Ledger:
    """Counters that survive a worker's removal: the XDP program's verdicts
    (per interface) and the sink's count do; a removed worker's own
    counters go with it, so its drops are carried over before it goes."""

    def __init__(self, d, sink, lab):
        self.d, self.sink, self.lab = d, sink, lab
        self.carried = {}           # reason -> drops of removed workers
        self.scrapes = 0
        self.worst_frames = None

    def scrape(self):
        m = self.d.scrape()
        self.scrapes += 1
        loc = m.by("xdpd_umem_frames", "location")
        cap = m.value("xdpd_umem_frames_capacity")
        assert sum(loc.values()) == cap > 0, f"frames {loc} do not add up to {cap}"
        return m

    def drops(self, m, reason: str) -> float:
        return self.carried.get(reason, 0) + m.value("xdpd_dropped_packets_total",
                                                     reason=reason)

    def carry(self, m, netdev: str, queue: int) -> None:
        for lab_, v in m.samples.get("xdpd_dropped_packets_total", []):
            if lab_["netdev"] == netdev and lab_["queue"] == str(queue):
                self.carried[lab_["reason"]] = self.carried.get(lab_["reason"], 0) + v

    def verdicts(self, m) -> dict:
        return {v: m.value("xdpd_xdp_packets_total", netdev=self.lab.IN_DEV, verdict=v)
                for v in ("redirected", "passed", "no_socket")}

    def marks(self) -> dict:
        m = self.scrape()
        s = self.sink.read()
        return {"rule": self.drops(m, "rule"), "sink_mac": s["dst_mac_ok"],
                "other_mac": s["packets"] - s["dst_mac_ok"],
                "passed": self.verdicts(m)["passed"]}


def test_a_hundred_reloads_under_load_lose_nothing_and_leak_nothing(lab, start_daemon):
    t_start = time.monotonic()
    d = start_daemon(config(lab, "sink"))
    pid = d.proc.pid
    assert d.status()["pid"] == pid
    pids_at_start = d.worker_pids()
    durations: dict[str, list[float]] = {"rules": [], "remove": [], "add": []}
    with CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
        gen = start_live_generator(lab, RATE)
        try:
            led = Ledger(d, sink, lab)
            poll_until(lambda: sink.read()["packets"] > STEP, what="first packets at the sink")
            # the steady state: every standby started (its ready pipe read and closed)
            poll_until(lambda: all(w["standby_ready"] for w in d.status()["workers"]),
                       what="every standby ready")
            before = steady_resources(d, led)

            for n, (what, yaml, where) in enumerate(plan(lab)):
                mark = led.marks()
                if what.startswith("remove in0"):
                    led.carry(d.scrape(), lab.IN_DEV, 0)
                r = d.reload(yaml)
                assert r["result"] == "applied", (n, what, r)
                kind = "remove" if what.startswith("remove") else \
                    "add" if what == "add back" else "rules"
                durations[kind].append(r["duration_seconds"])
                # the new configuration shows in the traffic before the next reload
                key = {"drop": "rule", "other": "other_mac"}.get(what, "sink_mac")
                if what.startswith("remove in0"):
                    key = "passed"
                poll_until(lambda: led.marks()[key] >= mark[key] + STEP, timeout=10,
                           what=f"reload {n} ({what}): {key} moving")
            storm_s = time.monotonic() - t_start
        finally:
            sent = stop_live_generator(gen)

        def settled():
            m = led.scrape()
            v = led.verdicts(m)
            done = sink.read()["packets"] + led.drops(m, "rule")
            return m if (sum(v.values()) >= sent and done >= v["redirected"]) else None
        try:
            m = poll_until(settled, timeout=10, what="every packet accounted for")
        except AssertionError:
            m = d.scrape()
            raise AssertionError(
                f"sent {sent}, sink {sink.read()}, verdicts {led.verdicts(m)}, drops "
                f"{m.by('xdpd_dropped_packets_total', 'reason')} + carried {led.carried}, "
                f"xsk rx_dropped {m.value('xdpd_xsk_rx_dropped_packets_total')}, "
                f"{lab.IN_DEV} {link_drops(lab, lab.dut_ns, lab.IN_DEV)}, "
                f"{lab.OUT_DEV} {link_drops(lab, lab.dut_ns, lab.OUT_DEV)}, "
                f"{lab.SINK_DEV} {link_drops(lab, lab.sink_ns, lab.SINK_DEV)}") from None
        got = sink.read()

    v = led.verdicts(m)
    rule_drops = led.drops(m, "rule")
    # nothing lost on the way in, nothing inside xdpd
    assert sum(v.values()) == sent, "frames lost between the generator and in0"
    assert got["packets"] + rule_drops == v["redirected"]
    for reason in ("no_rule", "invalid", "egress_down", "too_long"):
        assert led.drops(m, reason) == 0, reason
    for name in ("xdpd_xsk_rx_dropped_packets_total", "xdpd_xsk_rx_ring_full_total"):
        assert m.value(name) == 0, name
    # each kind of rule was in force and did its work
    assert rule_drops > 0 and got["dst_mac_ok"] > 0 and got["packets"] > got["dst_mac_ok"]
    assert v["passed"] > 0          # in0/q0 with the kernel while it was removed
    st = d.status()
    assert st["config"]["generation"] == 1 + RELOADS

    # once the traffic stopped, every frame is back home: on a free list or
    # waiting in a FILL ring for the next packet
    def home():
        loc = {k[0]: v for k, v in led.scrape().by("xdpd_umem_frames", "location").items()}
        return loc if loc["tx"] == 0 and loc["handoff"] == 0 else None
    frames_home = poll_until(home, timeout=5, what="every frame home")

    # no leaks: what the supervisor holds is what it held before the storm
    # (polled: a scrape's connection may still be closing)
    def same():
        now = resources(d, led)
        return now if now == before else None
    try:
        after = poll_until(same, timeout=5, what="supervisor resources as before")
    except AssertionError:
        after = resources(d, led)
        raise AssertionError(f"before the storm {before}, after {after}") from None
    assert d.proc.poll() is None
    # the workers never removed kept running all along
    kept = {k: p for k, p in d.worker_pids().items() if k in ("in0/q1", "out0/q1")}
    assert kept == {k: pids_at_start[k] for k in kept}
    assert m.value("xdpd_worker_restarts_total") == 0

    ms = {k: [x * 1e3 for x in v] for k, v in durations.items()}
    print(f"\n{RELOADS} reloads in {storm_s:.1f} s at {RATE} pps offered: "
          f"{sent} sent, {got['packets']} delivered ({got['dst_mac_ok']} with the sink's "
          f"MAC, {got['packets'] - got['dst_mac_ok']} with {OTHER_MAC}), {rule_drops:.0f} "
          f"dropped by rule; in0/q0 with the kernel while removed: {v['passed']:.0f} passed, "
          f"{v['no_socket']:.0f} while owned again but its new worker still starting "
          f"(fallback: pass); 0 lost")
    for k, xs in ms.items():
        print(f"  {k:<7} reloads: {len(xs):3d}, duration median {statistics.median(xs):.1f} ms, "
              f"max {max(xs):.1f} ms")
    print(f"  frames after the storm: {frames_home}; {led.scrapes} scrapes, all adding up; "
          f"{lab.OUT_DEV} {link_drops(lab, lab.dut_ns, lab.OUT_DEV)}, "
          f"{lab.SINK_DEV} {link_drops(lab, lab.sink_ns, lab.SINK_DEV)}")
    print(f"  supervisor before {before}, after {after}")
