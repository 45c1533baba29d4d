#!/usr/bin/env python3
"""How long xdpd takes to start forwarding and to replace a worker (root).

    python bench/latency.py [--runs 5] [--rate 200000] [--queues 1]

A paced generator (BPF live frames) offers traffic into the veth lab the
whole time; a counting XDP program on sink0 is read every 0.2 ms.

  start     from spawning `xdpd run` to the first packet at the sink
  replace   SIGKILL of the worker that receives the traffic (running for
            a second, its standby ready; the standby takes over the same
            socket): the longest time the sink saw nothing in the second
            after the kill, and when that stall ended
  reload    a rule change (the rewritten destination MAC) over the control
            socket: request to answer, and request to the first packet at
            the sink that carries the new MAC (the sink's XDP program
            checks it)
  fanout    in0 with fanout 2 (round robin, 30 kpps by default): SIGKILL of
            the member in0/q0.1, then of the owner in0/q0.0 (each running
            for a second, its standby ready); kill -> consuming is the time
            until the replacement's received-packets counter moves past
            its value at the kill (read from the control area, mapped
            here, every 0.2 ms: no request to the supervisor in the way),
            with the packets the kernel dropped meanwhile because the RX
            ring was full.  Measured twice: quiet,
            and while --hammer processes ask `xdpd status` in a tight loop
            (a client of the control socket must not slow supervision).

    python bench/latency.py --only fanout --runs 10
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xdpd.lab.daemon import LabDaemon  # noqa: E402
from xdpd.lab.netns import Lab, cleanup_stale  # noqa: E402
from xdpd.lab.traffic import child_env  # noqa: E402
from xdpd.lab.xdp import CountingSink  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf import METRICS_PORT, Xdpd, xdpd_config  # noqa: E402

POLL_S = 0.0002


def start_generator(lab: Lab, rate: int, seconds: float, cpu: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "xdpd.lab.xdp", "gen", "--ifname", lab.GEN_DEV,
           "--dst-mac", lab.MACS[lab.IN_DEV], "--src-mac", lab.MACS[lab.GEN_DEV],
           "--rate", str(rate), "--seconds", str(seconds), "--cpu", str(cpu)]
    return lab.popen(lab.gen_ns, cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     env=child_env())


def wait_count(sink: CountingSink, above: int, timeout: float) -> float:
    """Poll until the sink has counted more than `above`; the time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink.read()["packets"] > above:
            return time.monotonic()
        time.sleep(POLL_S)
    raise RuntimeError(f"no packet at the sink within {timeout} s")


def measure_start(lab: Lab, sink: CountingSink, args) -> float:
    daemon = LabDaemon(lab, xdpd_config(lab, "io", args.fwd_cpu, []), port=METRICS_PORT)
    base = sink.read()["packets"]
    t0 = time.monotonic()
    # spawn without waiting for readiness: the clock runs until a packet arrives
    log = open(daemon.log_path, "ab")
    daemon.proc = lab.popen(lab.dut_ns, [sys.executable, "-m", "xdpd", "run", "--config",
                                         daemon.config_path],
                            stdout=log, stderr=subprocess.STDOUT, env=child_env())
    log.close()
    try:
        t1 = wait_count(sink, base, timeout=30)
    finally:
        daemon.close()
    return t1 - t0


def ready_worker(daemon: LabDaemon, name: str, timeout: float = 10.0) -> int:
    """The pid of worker `name` once it has run for a second with its
    standby ready: the steady state, where a death is not a start-up
    failure (docs/ARCHITECTURE.md, "Worker faults")."""
    deadline = time.monotonic() + timeout
    while True:
        w = next(w for w in daemon.status()["workers"] if w["name"] == name)
        if w["state"] == "running" and w["standby_pid"] and w["uptime_seconds"] > 1.0:
            return w["pid"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not running with a standby within {timeout} s")
        time.sleep(0.05)


def measure_replace(lab: Lab, sink: CountingSink, args) -> tuple[float, float]:
    """SIGKILL the worker the traffic goes through; over the next second,
    the longest time the sink saw nothing (the stall) and when it ended,
    counted from the kill.  With a standby taking over in milliseconds the
    stall can be shorter than the backlog the egress worker still sends,
    so there is no gap to wait for: the longest one is taken."""
    fwd = Xdpd(lab, "io", args.fwd_cpu, [])
    fwd.start()
    try:
        wait_count(sink, sink.read()["packets"], timeout=10)
        victim = ready_worker(fwd.daemon, f"{lab.IN_DEV}/q0")
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        last, t_last = sink.read()["packets"], t_kill
        gap, gap_end = 0.0, t_kill
        while time.monotonic() - t_kill < 1.0:
            now, t = sink.read()["packets"], time.monotonic()
            if now != last:
                if t - t_last > gap:
                    gap, gap_end = t - t_last, t
                last, t_last = now, t
            time.sleep(POLL_S)
    finally:
        fwd.stop()
    return gap_end - t_kill, gap


OTHER_MAC = "02:00:00:00:00:99"


def _hammer(path: str, stop, served) -> None:
    from xdpd.control.server import ControlError, request
    n = 0
    while not stop.is_set():
        try:
            request(path, "status", timeout=5)
            n += 1
        except ControlError:
            pass
    served.value = n


class ControlView:
    """The running daemon's control area, mapped here from its memfd
    (/proc/PID/fd): a worker's counters read without asking the supervisor,
    so that what is measured is not the queue of status requests."""

    def __init__(self, supervisor_pid: int):
        from xdpd.datapath import _fastpath
        fd_dir = f"/proc/{supervisor_pid}/fd"

        def memfd(prefix: str, flags: int) -> int:
            name = next(f for f in os.listdir(fd_dir)
                        if os.readlink(f"{fd_dir}/{f}").startswith(prefix))
            return os.open(f"{fd_dir}/{name}", flags | os.O_CLOEXEC)

        self.fd = memfd("/memfd:xdpd-control", os.O_RDWR)
        tables_fd = memfd("/memfd:xdpd-tables", os.O_RDONLY)
        # struct fp_header: u64 magic, u32 version, then nworkers,
        # frames_per_worker, frame_size, ring_entries (a tool may read them)
        layout = struct.unpack_from("<4I", os.pread(self.fd, 28, 12))
        try:
            self.control = _fastpath.Control(self.fd, os.fstat(self.fd).st_size,
                                             layout=layout, tables_fd=tables_fd)
        finally:
            os.close(tables_fd)

    def slot_of(self, pid: int) -> int:
        i = 0
        while True:
            if self.control.worker_liveness(i)[1] == pid:   # ValueError past the last
                return i
            i += 1

    def consuming(self, slot: int, not_pid: int, rx_above: int) -> bool:
        """Another process runs the slot, and it has received a packet."""
        return (self.control.worker_liveness(slot)[1] != not_pid and
                self.control.worker_stats(slot)["rx_packets"] > rx_above)

    def close(self) -> None:
        self.control.close()
        os.close(self.fd)


def measure_fanout_kills(lab: Lab, args, hammer: int) -> list[dict]:
    """Kill in0/q0.1 (member) then in0/q0.0 (owner), args.runs times each,
    under round-robin traffic; see the module's docstring."""
    import multiprocessing

    from xdpd.control.server import request
    rr = xdpd_config(lab, "io", args.fwd_cpu, [], fanout=2, spread="round_robin")
    daemon = LabDaemon(lab, rr, port=METRICS_PORT)
    sink = CountingSink(lab.sink_ns, lab.SINK_DEV)
    gen = start_generator(lab, args.fanout_rate, 3600, args.gen_cpu)
    stop = multiprocessing.Event()
    served = [multiprocessing.Value("q", 0) for _ in range(hammer)]
    hammers = []
    out = []
    view = None
    try:
        daemon.start()
        view = ControlView(daemon.proc.pid)
        wait_count(sink, 0, timeout=10)
        hammers = [multiprocessing.Process(target=_hammer, args=(daemon.socket_path, stop, v))
                   for v in served]
        for h in hammers:
            h.start()
        t_hammer = time.monotonic()

        def worker(name: str) -> dict:
            return next(w for w in request(daemon.socket_path, "status")["workers"]
                        if w["name"] == name)

        for _ in range(args.runs):
            for name, role in ((f"{lab.IN_DEV}/q0.1", "member"), (f"{lab.IN_DEV}/q0.0", "owner")):
                deadline = time.monotonic() + 20
                while not ((w := worker(name))["standby_ready"] and w["uptime_seconds"] > 1.0):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name}: no ready standby within 20 s")
                    time.sleep(0.05)
                full0 = sum(w["xsk"].get("rx_ring_full", 0) for w in
                            request(daemon.socket_path, "status")["workers"])
                slot = view.slot_of(w["pid"])
                rx0 = view.control.worker_stats(slot)["rx_packets"]
                t_kill = time.monotonic()
                os.kill(w["pid"], signal.SIGKILL)
                while not view.consuming(slot, w["pid"], rx0):
                    if time.monotonic() - t_kill > 10:
                        raise RuntimeError(f"{name}: not consuming 10 s after the kill")
                    time.sleep(POLL_S)
                took = time.monotonic() - t_kill
                time.sleep(0.2)             # what overflowed is counted by now
                full = sum(w["xsk"].get("rx_ring_full", 0) for w in
                           request(daemon.socket_path, "status")["workers"]) - full0
                out.append({"role": role, "hammer": hammer, "ms": took * 1e3, "full": full})
    finally:
        stop.set()
        for h in hammers:
            h.join(10)
        if hammers:
            rate = sum(v.value for v in served) / (time.monotonic() - t_hammer)
            for o in out:
                o["status_per_s"] = rate
        gen.send_signal(signal.SIGTERM)
        gen.wait(10)
        if view is not None:
            view.close()
        daemon.close()
        sink.close()
    return out


def report_fanout(rows: list[dict], args) -> None:
    print(f"\nfanout 2, round robin, {args.fanout_rate} pps on in0/q0; kill -> consuming "
          f"(the replacement's rx counter moves), {args.runs} kills each")
    print(f"{'worker':<8}{'status clients':>16}{'status/s':>10}{'median ms':>11}{'min':>8}"
          f"{'max':>8}{'rx_ring_full':>14}")
    for role in ("member", "owner"):
        for hammer in sorted({r["hammer"] for r in rows}):
            sel = [r for r in rows if r["role"] == role and r["hammer"] == hammer]
            if not sel:
                continue
            ms = [r["ms"] for r in sel]
            rate = sel[0].get("status_per_s", 0.0)
            print(f"{role:<8}{'none' if not hammer else f'{hammer} (tight loop)':>16}"
                  f"{rate:>10.0f}{statistics.median(ms):>11.1f}{min(ms):>8.1f}{max(ms):>8.1f}"
                  f"{sum(r['full'] for r in sel):>14.0f}")


def measure_reload(lab: Lab, sink: CountingSink, args) -> list[tuple[float, float]]:
    """Flip the rules reloads times between rewriting to OTHER_MAC and to the
    sink's MAC; for each flip to the sink's MAC, (answer, first new packet)."""
    sink_rule = xdpd_config(lab, "mac", args.fwd_cpu, [])
    other_rule = sink_rule.replace(f'set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"',
                                   f'set_dst_mac: "{OTHER_MAC}"', 1)
    daemon = LabDaemon(lab, other_rule, port=METRICS_PORT)
    out = []
    try:
        daemon.start()
        wait_count(sink, sink.read()["packets"], timeout=10)
        for _ in range(args.reloads):
            ok_before = sink.read()["dst_mac_ok"]
            daemon.write_config(sink_rule)
            t0 = time.monotonic()
            daemon.request("reload")
            t_answer = time.monotonic()
            deadline = t0 + 10
            while sink.read()["dst_mac_ok"] == ok_before:
                if time.monotonic() > deadline:
                    raise RuntimeError("the new rule never reached the sink")
                time.sleep(POLL_S)
            out.append((t_answer - t0, time.monotonic() - t0))
            daemon.reload(other_rule)
    finally:
        daemon.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rate", type=int, default=200_000, help="offered packets per second")
    ap.add_argument("--queues", type=int, default=1)
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--fwd-cpu", type=int, default=1)
    ap.add_argument("--reloads", type=int, default=20, help="rule flips measured per run")
    ap.add_argument("--only", choices=("all", "service", "fanout"), default="all",
                    help="service: start, replace, reload; fanout: the fanout kills")
    ap.add_argument("--fanout-rate", type=int, default=30_000,
                    help="offered pps in the fanout kills (the integration test's rate)")
    ap.add_argument("--hammer", type=int, default=3,
                    help="processes asking `xdpd status` in a tight loop, fanout kills")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/latency.py needs root", file=sys.stderr)
        return 77
    cleanup_stale()
    if args.only in ("all", "fanout"):
        with Lab.create(queues=2) as lab:
            rows = measure_fanout_kills(lab, args, 0)
            rows += measure_fanout_kills(lab, args, args.hammer)
        report_fanout(rows, args)
    if args.only == "fanout":
        return 0
    starts, replaces, gaps, answers, effective = [], [], [], [], []
    with Lab.create(queues=args.queues) as lab:
        sink = CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV])
        gen = start_generator(lab, args.rate, 3600, args.gen_cpu)
        try:
            for i in range(args.runs):
                starts.append(measure_start(lab, sink, args))
                kill_to_back, gap = measure_replace(lab, sink, args)
                replaces.append(kill_to_back)
                gaps.append(gap)
                flips = measure_reload(lab, sink, args)
                answers += [a for a, _ in flips]
                effective += [e for _, e in flips]
                print(f"run {i + 1}: start -> first packet {starts[-1] * 1e3:.0f} ms; "
                      f"longest stall after a kill {gap * 1e3:.1f} ms, over "
                      f"{kill_to_back * 1e3:.1f} ms after it; reload answered in "
                      f"{statistics.median(a for a, _ in flips) * 1e3:.1f} ms (median of "
                      f"{len(flips)})", flush=True)
        finally:
            gen.send_signal(signal.SIGTERM)
            gen.wait(10)
            sink.close()
    print(f"\n{'measure':<42}{'median ms':>10}{'min':>8}{'max':>8}")
    for name, vals in (("xdpd run -> first forwarded packet", starts),
                       ("worker SIGKILL -> end of the longest stall", replaces),
                       ("  the stall (nothing delivered)", gaps),
                       ("reload (rule change) -> answer", answers),
                       ("reload (rule change) -> new rule at sink", effective)):
        print(f"{name:<42}{statistics.median(vals) * 1e3:>10.1f}"
              f"{min(vals) * 1e3:>8.1f}{max(vals) * 1e3:>8.1f}")
    print(f"offered {args.rate} pps; {args.queues} queue(s); generator CPU {args.gen_cpu}, "
          f"workers CPU {args.fwd_cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
