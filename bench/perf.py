#!/usr/bin/env python3
"""xdpd against DPDK's AF_XDP forwarder, side by side in one veth lab (root).

    make bench
    python bench/perf.py [--seconds 10] [--runs 3] [--warmup 2] [--size 64]
                         [--queues 1] [--modes io,mac]
                         [--peers xdpd,testpmd,xsk_fwd,kernel,bridge]
                         [--gen-cpu 0] [--fwd-cpu 1] [--xdpd-set workers.batch_size=128]
                         [--fanout 1,2] [--fanout-spread flow_hash]
                         [--cpu-share 40]

    gen0 --> in0 [forwarder] out0 --> sink0
    (gen ns)     (dut ns)             (sink ns)

The generator is BPF_PROG_TEST_RUN in live-frames mode: an XDP program
returning XDP_TX on gen0 sends each frame to in0 through the veth's
ndo_xdp_xmit, several Mpps from one core, far more than a forwarder takes.
Where the kernel refuses live frames it sends through an AF_PACKET
transmit ring (xdpd/lab/txring.py), about half a million frames a second
from one CPU here: less than a forwarder takes.  --cpu-share then caps
every thread pinned to the forwarding CPU at a share of it (a cgroup),
the same for each forwarder, so that each is saturated again; the column
"fwd CPU ns/p" (all of that CPU's busy time, ksoftirqd's included, per
delivered packet) shows the cost of a packet wherever it was spent.
A counting XDP program on sink0 counts what arrives (and, in mac mode,
whether the destination MAC was rewritten).  Each trial starts the
forwarder, runs the generator, lets it warm up, and then reads the
counters at the start and the end of a fixed window.

Forwarders, alternated trial by trial on the same lab, with the same CPU
placement and the same generator:
  xdpd     `xdpd run`, every worker pinned to --fwd-cpu
  xsk_fwd  bench/xsk_fwd.c, a minimal C AF_XDP forwarder on libxdp (in the
           style of the kernel's xsk_fwd sample): one thread on --fwd-cpu
           polling both sockets of one shared UMEM
  testpmd  dpdk-testpmd with the AF_XDP PMD on in0 and out0, its forwarding
           lcore on --fwd-cpu, its main lcore on --gen-cpu
  kernel   the lab's ceiling: an XDP program on in0 redirecting to out0
           through a DEVMAP, no user space at all
  bridge   a Linux bridge over in0 and out0 (the kernel's own L2 path; io
           only: it rewrites no MAC)
--size up to 9014 sets every link's MTU to size - 14 (a 9014-byte frame:
MTU 9000, 6 buffers of 2048 B, one descriptor chain through xdpd); a
forwarder that cannot take such frames (one buffer per packet: xsk_fwd,
testpmd's AF_XDP PMD) shows what it delivered, or why it failed.
With --fanout 1,2,... xdpd runs once per value, every queue of in0 and
out0 shared by that many workers (named xdpd-fN in the table); spread
them over CPUs with --xdpd-set workers.cpus=[0,1].
Modes: io (forward untouched) and mac (rewrite destination and source MAC;
testpmd's `mac` forwarding mode, xdpd's set_dst_mac + set_src_mac).

CPU per delivered packet: user and system time of the forwarder's processes
(xdpd's workers; testpmd), and softirq time of the whole machine, from
/proc/stat (veth NAPI polls run in softirq context, charged to no process).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xdpd.lab.daemon import LabDaemon  # noqa: E402
from xdpd.lab.netns import Lab, cleanup_stale  # noqa: E402
from xdpd.lab.traffic import child_env  # noqa: E402
from xdpd.lab.xdp import CountingSink, DevmapForwarder  # noqa: E402

MODES = ("io", "mac")
PEERS = ("xdpd", "testpmd", "xsk_fwd", "kernel", "bridge")
XSK_FWD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xsk_fwd")
# libxdp (under testpmd's AF_XDP PMD and xsk_fwd) pins its dispatchers here
# and leaves the directory behind when it detaches them
LIBXDP_PINS = "/sys/fs/bpf/xdp"


@contextlib.contextmanager
def libxdp_pins_removed():
    """Remove libxdp's pin directory afterwards if this run made it (and it
    is empty: libxdp removes its dispatchers' pins when it detaches them)."""
    made_here = not os.path.exists(LIBXDP_PINS)
    try:
        yield
    finally:
        if made_here:
            with contextlib.suppress(OSError):
                os.rmdir(LIBXDP_PINS)
METRICS_PORT = 9477


class BenchError(RuntimeError):
    pass


# --- CPU accounting -------------------------------------------------------------

def _proc_stat_ns(line: str) -> list[int]:
    """The times of /proc/stat's line `line` ("cpu": all CPUs, "cpu1": one)
    so far, in ns: user, nice, system, idle, iowait, irq, softirq."""
    with open("/proc/stat") as f:
        for text in f:
            fields = text.split()
            if fields[0] == line:
                tick = 10**9 // os.sysconf("SC_CLK_TCK")
                return [int(v) * tick for v in fields[1:8]]
    raise BenchError(f"no {line!r} line in /proc/stat")


def _proc_stat_softirq_ns() -> int:
    """Softirq time of all CPUs so far."""
    return _proc_stat_ns("cpu")[6]


def _cpu_busy_ns(cpu: int) -> int:
    """CPU cpu's time so far in anything but idle and iowait, whoever it
    was spent for: processes, ksoftirqd, interrupts."""
    t = _proc_stat_ns(f"cpu{cpu}")
    return sum(t) - t[3] - t[4]


def _cpu_times(pids: list[int]) -> tuple[float, float]:
    user = system = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        user += t.user
        system += t.system
    return user, system


def _memory(pids: list[int]) -> list[tuple[int, str, int, int]]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            info = p.memory_full_info()
            out.append((pid, " ".join(p.cmdline())[:40], info.rss, info.uss))
        except psutil.Error:
            continue
    return out


# --- a cap on the forwarding CPU --------------------------------------------------

# A forwarder that delivered this share of what was offered was not saturated.
TOOK_ALL = 0.98
CGROUP_V1_CPU = "/sys/fs/cgroup/cpu"
CGROUP_V2 = "/sys/fs/cgroup"
CAP_PERIOD_US = 10_000


def check_cpu_share(ap: argparse.ArgumentParser, share: float) -> None:
    """--cpu-share: 0 (no cap) or 10..100: the kernel's smallest quota is
    1 ms, of the 10 ms period here."""
    if share and not 10 <= share <= 100:
        ap.error(f"--cpu-share: {share:g}: a percentage from 10 to 100 (0: no cap)")


class CpuCap:
    """Every thread pinned to the forwarding CPU alone (xdpd's workers,
    testpmd's forwarding lcore, xsk_fwd) in a cgroup allowed share % of
    one CPU: the same budget for each forwarder, small enough that a
    slower generator than live frames still offers more than any of them
    takes.  cgroup v1's cpu controller moves single threads; v2 moves whole
    processes (testpmd's main lcore then shares the budget)."""

    def __init__(self, share: float, cpu: int):
        self.share, self.cpu = share, cpu
        self.v1 = os.path.isdir(CGROUP_V1_CPU)
        root = CGROUP_V1_CPU if self.v1 else CGROUP_V2
        self.path = os.path.join(root, f"xdpd-bench-{os.getpid()}")
        quota = int(CAP_PERIOD_US * share / 100)
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise BenchError(f"--cpu-share: cannot make the cgroup {self.path}: {e.strerror}; "
                             "it needs cgroup v1's cpu controller or cgroup v2") from None
        try:
            if self.v1:
                self._write("cpu.cfs_period_us", CAP_PERIOD_US)
                self._write("cpu.cfs_quota_us", quota)
            else:
                self._write("cpu.max", f"{quota} {CAP_PERIOD_US}")
        except OSError as e:
            os.rmdir(self.path)
            raise BenchError(f"--cpu-share: cannot set a CPU quota in {self.path}: {e.strerror}; "
                             f"with cgroup v2, enable the cpu controller: echo +cpu > "
                             f"{root}/cgroup.subtree_control") from None

    def _write(self, name: str, value) -> None:
        with open(os.path.join(self.path, name), "w") as f:
            f.write(f"{value}\n")

    def add(self, pids: list[int]) -> int:
        """Move the forwarders' threads pinned to the CPU; returns how many."""
        moved = 0
        for pid in pids:
            if not self.v1:
                with contextlib.suppress(OSError):
                    self._write("cgroup.procs", pid)
                    moved += 1
                continue
            with contextlib.suppress(OSError):
                for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                    with contextlib.suppress(OSError):
                        if os.sched_getaffinity(tid) == {self.cpu}:
                            self._write("tasks", tid)
                            moved += 1
        return moved

    def close(self) -> None:
        """Remove the group once its threads are gone (the forwarder stopped)."""
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(self.path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    print(f"could not remove {self.path}", file=sys.stderr)
                    return
                time.sleep(0.05)


# --- the generator --------------------------------------------------------------

class Generator:
    """`python -m xdpd.lab.xdp gen` in the gen namespace, reporting progress
    lines (monotonic time, frames sent so far) that the window is cut from."""

    def __init__(self, lab: Lab, size: int, cpu: int, seconds: float, flows: int = 256,
                 dst_mac: str | None = None):
        cmd = [sys.executable, "-m", "xdpd.lab.xdp", "gen", "--ifname", lab.GEN_DEV,
               "--dst-mac", dst_mac or lab.MACS[lab.IN_DEV], "--src-mac", lab.MACS[lab.GEN_DEV],
               "--size", str(size), "--flows", str(flows), "--seconds", str(seconds),
               "--cpu", str(cpu), "--progress", "0.05"]
        self.proc = lab.popen(lab.gen_ns, cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=child_env())
        self.progress: list[tuple[float, int]] = []
        self.cond = threading.Condition()
        self.result: dict | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if "progress" in msg:
                    self.progress.append((msg["t"], msg["progress"]))
                else:
                    self.result = msg
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_progress(self, at_least: float, timeout: float) -> tuple[float, int]:
        """The first progress report at or after monotonic time `at_least`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, sent in self.progress:
                    if t >= at_least:
                        return t, sent
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise BenchError(f"generator exited ({self.proc.returncode}): "
                                     f"{self.proc.stderr.read().strip()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError("generator reports no progress")
                self.cond.wait(min(left, 0.5))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)


# --- forwarders -----------------------------------------------------------------

def xdpd_config(lab: Lab, mode: str, cpu: int, sets: list[str], fanout: int = 1,
                spread: str = "flow_hash") -> str:
    rewrite = (f'    set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"\n'
               f'    set_src_mac: "{lab.MACS[lab.OUT_DEV]}"\n' if mode == "mac" else "")
    back = (f'    set_dst_mac: "{lab.MACS[lab.GEN_DEV]}"\n'
            f'    set_src_mac: "{lab.MACS[lab.IN_DEV]}"\n' if mode == "mac" else "")
    sections: dict[str, dict[str, str]] = {"workers": {"cpus": f"[{cpu}]"}}
    for item in sets:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name or not value:
            raise BenchError(f"--xdpd-set {item!r}: expected SECTION.KEY=VALUE")
        sections.setdefault(section, {})[name] = value
    extra = "".join(f"{s}:\n" + "".join(f"  {k}: {v}\n" for k, v in kv.items())
                    for s, kv in sections.items())
    share = f"    fanout: {fanout}\n    fanout_spread: {spread}\n" if fanout > 1 else ""
    return (f"interfaces:\n  - name: {lab.IN_DEV}\n    xdp_mode: native\n{share}"
            f"  - name: {lab.OUT_DEV}\n    xdp_mode: native\n{share}"
            f"forward:\n  - from: {lab.IN_DEV}\n    to: {lab.OUT_DEV}\n{rewrite}"
            f"  - from: {lab.OUT_DEV}\n    to: {lab.IN_DEV}\n{back}"
            f"metrics:\n  listen: \"127.0.0.1:{METRICS_PORT}\"\n{extra}")


# --capture: xdpd with `xdpd capture` running on in0 (rx, snaplen 128),
# read every 0.1 s as the CLI reads it: a filter that takes nothing of the
# generator's UDP, and one that takes everything
CAPTURES = {"xdpd-capnone": "tcp", "xdpd-capall": ""}


class Xdpd:
    def __init__(self, lab: Lab, mode: str, cpu: int, sets: list[str], fanout: int = 1,
                 spread: str = "flow_hash", capture: str | None = None):
        self.lab, self.cpu = lab, cpu
        self.name = "xdpd" if fanout == 1 else f"xdpd-f{fanout}"
        self.daemon = LabDaemon(lab, xdpd_config(lab, mode, cpu, sets, fanout, spread),
                                port=METRICS_PORT)
        self.capture, self.reader, self.done = capture, None, threading.Event()
        self.records = self.capture_dropped = 0

    def start(self) -> None:
        self.daemon.start()
        if self.capture is not None:
            self.name = next(k for k, v in CAPTURES.items() if v == self.capture)
            token = self.daemon.request("capture_start", iface=self.lab.IN_DEV, points=["rx"],
                                        snaplen=128, filter=self.capture)["token"]
            self.reader = threading.Thread(target=self._read, args=(token,), daemon=True)
            self.reader.start()

    def _read(self, token: str) -> None:
        while not self.done.wait(0.1):
            r = self.daemon.request("capture_read", token=token)
            self.records = r["captured"]
            self.capture_dropped = r["dropped"]

    def pids(self) -> list[int]:
        return list(self.daemon.worker_pids().values())

    def all_pids(self) -> list[int]:
        return ([self.daemon.proc.pid] if self.daemon.proc else []) + self.pids()

    def stop(self) -> None:
        self.done.set()
        if self.reader is not None:
            self.reader.join(5)
        self.daemon.close()


class OneProcess:
    """A forwarder that is one process (self.proc), ended with SIGINT."""
    proc: subprocess.Popen | None = None

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def all_pids(self) -> list[int]:
        return self.pids()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Testpmd(OneProcess):
    name = "testpmd"

    def __init__(self, lab: Lab, mode: str, cpu: int, main_cpu: int, queues: int):
        self.lab = lab
        fd, self.log_path = tempfile.mkstemp(prefix=f"{lab.prefix}-testpmd-", suffix=".log")
        os.close(fd)
        mac_args = ([f"--eth-peer=1,{lab.MACS[lab.SINK_DEV]}",
                     f"--eth-peer=0,{lab.MACS[lab.GEN_DEV]}"] if mode == "mac" else [])
        # stdbuf: testpmd's stdout is a file here, and "Press enter to exit"
        # (it is forwarding) must not sit in a stdio buffer
        self.cmd = [
            "stdbuf", "-oL", "dpdk-testpmd", "-l", f"{main_cpu},{cpu}", "--main-lcore", str(main_cpu),
            "--no-huge", "-m", "1024", "--no-shconf", "--no-pci", "--log-level", "*:notice",
            "--vdev", f"net_af_xdp0,iface={lab.IN_DEV},start_queue=0,queue_count={queues}",
            "--vdev", f"net_af_xdp1,iface={lab.OUT_DEV},start_queue=0,queue_count={queues}",
            "--", f"--forward-mode={mode}", f"--rxq={queues}", f"--txq={queues}",
            "--total-num-mbufs=16384", *mac_args]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "w")
        self.proc = self.lab.popen(self.lab.dut_ns, self.cmd, stdin=subprocess.PIPE,
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"dpdk-testpmd exited with {self.proc.returncode}:\n"
                                 + self._log_tail())
            if "Press enter to exit" in self._log_tail(4000):
                return
            time.sleep(0.05)
        raise BenchError("dpdk-testpmd did not start forwarding:\n" + self._log_tail())

    def _log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


class XskFwd(OneProcess):
    """bench/xsk_fwd.c: a minimal C AF_XDP forwarder (libxdp, one thread,
    both sockets on one UMEM), pinned to the forwarder CPU."""
    name = "xsk_fwd"

    def __init__(self, lab: Lab, mode: str, cpu: int, queues: int):
        if queues != 1:
            raise BenchError("xsk_fwd forwards one queue: use --queues 1 with it")
        self.lab = lab
        macs = ([f"--mac-in2out={lab.MACS[lab.SINK_DEV]},{lab.MACS[lab.OUT_DEV]}",
                 f"--mac-out2in={lab.MACS[lab.GEN_DEV]},{lab.MACS[lab.IN_DEV]}"]
                if mode == "mac" else [])
        self.cmd = [XSK_FWD, lab.IN_DEV, lab.OUT_DEV, "--cpu", str(cpu), "--mode", mode, *macs]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = self.lab.popen(self.lab.dut_ns, self.cmd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if '"ready"' not in ready:
            self.proc.wait(timeout)
            raise BenchError(f"xsk_fwd did not start: {self.proc.stderr.read().strip()}")


class Kernel:
    """The ceiling: in-kernel XDP redirect through a DEVMAP, in0 -> out0."""
    name = "kernel"

    def __init__(self, lab: Lab, mode: str):
        self.lab, self.mode = lab, mode
        self.fwd: DevmapForwarder | None = None

    def start(self) -> None:
        rewrite = ({"dst_mac": self.lab.MACS[self.lab.SINK_DEV],
                    "src_mac": self.lab.MACS[self.lab.OUT_DEV]} if self.mode == "mac" else {})
        self.fwd = DevmapForwarder(self.lab.dut_ns, self.lab.IN_DEV, self.lab.OUT_DEV, **rewrite)

    def pids(self) -> list[int]:
        return []

    all_pids = pids

    def stop(self) -> None:
        if self.fwd is not None:
            self.fwd.close()
            self.fwd = None


class Bridge:
    """A Linux bridge over in0 and out0 in the DUT namespace.  Frames to a
    port's own MAC are the bridge's to receive, not to forward: the
    generator sends to the sink's (unknown to the bridge: flooded to
    out0, the only other port)."""
    name = "bridge"

    def __init__(self, lab: Lab, mode: str = "io"):
        self.lab = lab
        self.gen_dst = lab.MACS[lab.SINK_DEV]

    def start(self) -> None:
        ns = self.lab.dut_ns
        self.lab.run(ns, "ip", "link", "add", "br0", "type", "bridge")
        for dev in (self.lab.IN_DEV, self.lab.OUT_DEV):
            self.lab.run(ns, "ip", "link", "set", dev, "master", "br0")
        self.lab.run(ns, "ip", "link", "set", "br0", "up")

    def pids(self) -> list[int]:
        return []

    all_pids = pids

    def stop(self) -> None:
        ns = self.lab.dut_ns
        for dev in (self.lab.IN_DEV, self.lab.OUT_DEV):
            self.lab.run(ns, "ip", "link", "set", dev, "nomaster", check=False)
        self.lab.run(ns, "ip", "link", "del", "br0", check=False)


def set_mtu(lab: Lab, mtu: int) -> None:
    """Every link of the lab (both peers, in0, out0) at mtu."""
    for ns, dev in ((lab.gen_ns, lab.GEN_DEV), (lab.dut_ns, lab.IN_DEV),
                    (lab.dut_ns, lab.OUT_DEV), (lab.sink_ns, lab.SINK_DEV)):
        lab.run(ns, "ip", "link", "set", dev, "mtu", str(mtu))


# --- one trial ------------------------------------------------------------------

@dataclass
class Trial:
    peer: str
    mode: str
    offered_pps: float
    delivered_pps: float
    user_ns: float          # per delivered packet
    sys_ns: float
    softirq_ns: float
    fwd_cpu_ns: float       # the forwarding CPU's busy time, all of it
    rewritten: float        # fraction of delivered packets with the sink's MAC
    memory: list = field(default_factory=list)


def run_trial(lab: Lab, sink: CountingSink, fwd, mode: str, args) -> Trial:
    gen = cap = None
    try:
        fwd.start()
        if args.cpu_share and fwd.pids():
            cpu = getattr(fwd, "cpu", args.fwd_cpu)   # xdpd's workers may be elsewhere
            cap = CpuCap(args.cpu_share, cpu)
            if not cap.add(fwd.pids()):
                raise BenchError(f"{fwd.name}: no thread pinned to CPU {cpu} alone to cap")
        gen = Generator(lab, args.size, args.gen_cpu,
                        seconds=args.warmup + args.seconds + 5, flows=args.flows,
                        dst_mac=getattr(fwd, "gen_dst", None))
        t_start = time.monotonic() + args.warmup
        t0, sent0 = gen.wait_progress(t_start, timeout=args.warmup + 10)
        pids = fwd.pids()
        c0, u0, s0, q0 = sink.read(), *_cpu_times(pids), _proc_stat_softirq_ns()
        b0 = _cpu_busy_ns(args.fwd_cpu)
        t1, sent1 = gen.wait_progress(t0 + args.seconds, timeout=args.seconds + 10)
        c1, u1, s1, q1 = sink.read(), *_cpu_times(pids), _proc_stat_softirq_ns()
        b1 = _cpu_busy_ns(args.fwd_cpu)
        memory = _memory(fwd.all_pids())
    finally:
        if gen is not None:
            gen.stop()
        fwd.stop()
        if cap is not None:
            cap.close()
    delivered = c1["packets"] - c0["packets"]
    per = 1e9 / max(delivered, 1)
    return Trial(peer=fwd.name, mode=mode,
                 offered_pps=(sent1 - sent0) / (t1 - t0),
                 delivered_pps=delivered / (t1 - t0),
                 user_ns=(u1 - u0) * per, sys_ns=(s1 - s0) * per,
                 softirq_ns=(q1 - q0) / max(delivered, 1),
                 fwd_cpu_ns=(b1 - b0) / max(delivered, 1),
                 rewritten=(c1["dst_mac_ok"] - c0["dst_mac_ok"]) / max(delivered, 1),
                 memory=memory)


def why_failed(text: str) -> str:
    """The line of a forwarder's failure that says why: one naming the MTU
    or an error, else the last."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if "mtu" in ln.lower() or "out of range" in ln.lower():
            return ln[:200]
    return lines[-1][:200] if lines else "failed"


def make_forwarder(peer: str, lab: Lab, mode: str, args):
    if peer in CAPTURES:
        return Xdpd(lab, mode, args.fwd_cpu, args.xdpd_set, capture=CAPTURES[peer])
    if peer.startswith("xdpd"):
        fanout = int(peer[len("xdpd-f"):]) if peer != "xdpd" else 1
        return Xdpd(lab, mode, args.fwd_cpu, args.xdpd_set, fanout, args.fanout_spread)
    if peer == "testpmd":
        return Testpmd(lab, mode, args.fwd_cpu, args.gen_cpu, args.queues)
    if peer == "xsk_fwd":
        return XskFwd(lab, mode, args.fwd_cpu, args.queues)
    if peer == "bridge":
        return Bridge(lab, mode)
    return Kernel(lab, mode)


# --- report ---------------------------------------------------------------------

def _mpps(v: float) -> str:
    return f"{v / 1e6:.3f}"


def report(trials: list[Trial], args, failed: dict[str, str] | None = None) -> dict:
    summary = {}
    print(f"\nveth lab, {args.queues} queue(s), {args.size} B frames, {args.runs} runs x "
          f"{args.seconds:g} s after {args.warmup:g} s warm-up; generator on CPU "
          f"{args.gen_cpu}, forwarder on CPU {args.fwd_cpu}"
          + (f" capped at {args.cpu_share:g} %" if args.cpu_share else "") + "; kernel "
          f"{os.uname().release}, {os.cpu_count()} CPUs")
    head = (f"{'mode':<5}{'forwarder':<10}{'offered Mpps':>13}{'delivered Mpps':>16}"
            f"{'min-max':>16}{'Gbit/s':>8}{'user ns/p':>11}{'sys ns/p':>10}"
            f"{'softirq ns/p':>14}{'fwd CPU ns/p':>14}{'MAC ok':>8}")
    print(head)
    print("-" * len(head))
    for mode in args.modes:
        for peer in args.peers:
            rows = [t for t in trials if t.peer == peer and t.mode == mode]
            if not rows and f"{mode}/{peer}" in (failed or {}):
                print(f"{mode:<5}{peer:<10} cannot: {failed[f'{mode}/{peer}']}")
                continue
            if not rows:
                continue
            d = [t.delivered_pps for t in rows]
            med = {k: statistics.median(getattr(t, k) for t in rows)
                   for k in ("offered_pps", "delivered_pps", "user_ns", "sys_ns",
                             "softirq_ns", "fwd_cpu_ns", "rewritten")}
            summary[f"{mode}/{peer}"] = {**med, "min_pps": min(d), "max_pps": max(d),
                                         "runs": len(rows)}
            ok = f"{med['rewritten'] * 100:.0f}%" if mode == "mac" else "-"
            print(f"{mode:<5}{peer:<10}{_mpps(med['offered_pps']):>13}"
                  f"{_mpps(med['delivered_pps']):>16}"
                  f"{_mpps(min(d)) + '-' + _mpps(max(d)):>16}"
                  f"{med['delivered_pps'] * args.size * 8 / 1e9:>8.2f}"
                  f"{med['user_ns']:>11.1f}{med['sys_ns']:>10.1f}{med['softirq_ns']:>14.1f}"
                  f"{med['fwd_cpu_ns']:>14.1f}{ok:>8}")
    print()
    for mode in args.modes:
        x, t = summary.get(f"{mode}/xdpd"), summary.get(f"{mode}/testpmd")
        k = summary.get(f"{mode}/kernel")
        c = summary.get(f"{mode}/xsk_fwd")
        parts = []
        if x and t:
            ratio = x["delivered_pps"] / max(t["delivered_pps"], 1)
            summary[f"{mode}/ratio"] = ratio
            parts.append(f"xdpd/testpmd = {ratio:.2f}")
        if x and c:
            ratio = x["delivered_pps"] / max(c["delivered_pps"], 1)
            summary[f"{mode}/ratio_xsk_fwd"] = ratio
            parts.append(f"xdpd/xsk_fwd = {ratio:.2f}")
        if x and k:
            parts.append(f"xdpd/kernel ceiling = {x['delivered_pps'] / max(k['delivered_pps'], 1):.2f}")
        for peer in args.peers:
            f = summary.get(f"{mode}/{peer}")
            if peer.startswith("xdpd-f") and f:
                for base, other in (("xdpd", x), ("testpmd", t)):
                    if other:
                        parts.append(f"{peer}/{base} = "
                                     f"{f['delivered_pps'] / max(other['delivered_pps'], 1):.2f}")
        if parts:
            print(f"{mode}: " + ", ".join(parts))
        took_all = [p for p in ("xdpd", "testpmd", "xsk_fwd") if summary.get(f"{mode}/{p}")
                    and summary[f"{mode}/{p}"]["delivered_pps"]
                    >= TOOK_ALL * summary[f"{mode}/{p}"]["offered_pps"]]
        if len(took_all) > 1:
            print(f"{mode}: {', '.join(took_all)} took all that was offered: the generator is "
                  "the limit, and these ratios compare nothing; where the kernel refuses "
                  "live frames, rerun with --cpu-share 40")
    mem = {}
    for t in trials:
        for pid, cmd, rss, uss in t.memory:
            mem.setdefault((t.peer, cmd.split(" --")[0][:32]), (rss, uss))
    if mem:
        print("\nmemory at the end of a trial (one process each):")
        for (peer, cmd), (rss, uss) in sorted(mem.items()):
            print(f"  {peer:<8} {cmd:<34} rss {rss / 2**20:7.1f} MiB  unique {uss / 2**20:6.1f} MiB")
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per trial")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=64, help="frame size in bytes, without FCS")
    ap.add_argument("--flows", type=int, default=256)
    ap.add_argument("--queues", type=int, default=1)
    ap.add_argument("--modes", default="io,mac")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--fwd-cpu", type=int, default=1)
    ap.add_argument("--xdpd-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override an xdpd setting, e.g. workers.batch_size=128")
    ap.add_argument("--fanout", default="1", metavar="N[,N...]",
                    help="run xdpd with every queue shared by N workers, once per N")
    ap.add_argument("--fanout-spread", default="flow_hash", choices=("flow_hash", "round_robin"))
    ap.add_argument("--capture", action="store_true",
                    help="also xdpd with `xdpd capture` running on in0 (rx, snaplen 128): "
                         "a filter that takes nothing (xdpd-capnone), and everything "
                         "(xdpd-capall)")
    ap.add_argument("--cpu-share", type=float, default=0, metavar="PERCENT",
                    help="cap the threads pinned to --fwd-cpu at PERCENT of one CPU "
                         "(a cgroup), the same for every forwarder; for hosts whose "
                         "generator is slower than the forwarders (no live frames)")
    ap.add_argument("--json", metavar="FILE", help="also write the trials and summary here")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.peers = [p for p in args.peers.split(",") if p]
    try:
        fanouts = [int(f) for f in args.fanout.split(",") if f]
    except ValueError:
        ap.error(f"--fanout: {args.fanout!r}: expected numbers such as 1,2")
    if not fanouts or any(not 1 <= f <= 16 for f in fanouts):
        ap.error(f"--fanout: {args.fanout!r}: each between 1 and 16")
    check_cpu_share(ap, args.cpu_share)
    for m in args.modes:
        if m not in MODES:
            ap.error(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    for p in args.peers:
        if p not in PEERS:
            ap.error(f"--peers: {p!r} is not one of {', '.join(PEERS)}")
    # xdpd once per fanout, in its place in the list: xdpd, xdpd-f2, ...
    args.peers = [name for p in args.peers for name in
                  ([f"xdpd-f{f}" if f > 1 else "xdpd" for f in fanouts] if p == "xdpd" else [p])]
    if args.capture:
        at = args.peers.index("xdpd") + 1 if "xdpd" in args.peers else len(args.peers)
        args.peers[at:at] = list(CAPTURES)
    if os.geteuid() != 0:
        print("bench/perf.py needs root (network namespaces, XDP)", file=sys.stderr)
        return 77
    if "testpmd" in args.peers and not any(
            os.access(os.path.join(d, "dpdk-testpmd"), os.X_OK)
            for d in os.environ.get("PATH", "").split(os.pathsep)):
        print("dpdk-testpmd not found; install the Debian package dpdk-dev "
              "(make bench does), or leave it out with --peers xdpd,kernel", file=sys.stderr)
        return 69
    if "xsk_fwd" in args.peers and not os.access(XSK_FWD, os.X_OK):
        print(f"{XSK_FWD} not built; make bench builds it (needs libxdp-dev), or leave it "
              "out with --peers xdpd,testpmd,kernel", file=sys.stderr)
        return 69
    cleanup_stale()
    trials: list[Trial] = []
    failed: dict[str, str] = {}         # mode/peer -> why it could not run
    with libxdp_pins_removed(), Lab.create(queues=args.queues) as lab:
        if args.size > 1514:
            set_mtu(lab, args.size - 14)
        sink = CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV])
        try:
            for run in range(args.runs):
                for mode in args.modes:
                    for peer in args.peers:
                        if peer == "bridge" and mode != "io":
                            continue                # a bridge rewrites no MAC
                        try:
                            trial = run_trial(lab, sink, make_forwarder(peer, lab, mode, args),
                                              mode, args)
                        except BenchError as e:     # e.g. testpmd's MTU cap at 9000
                            failed[f"{mode}/{peer}"] = why_failed(str(e))
                            print(f"run {run + 1}/{args.runs} {mode:<4} {peer:<8} cannot: "
                                  f"{failed[f'{mode}/{peer}']}", flush=True)
                            continue
                        trials.append(trial)
                        print(f"run {run + 1}/{args.runs} {mode:<4} {peer:<8} offered "
                              f"{_mpps(trial.offered_pps)} Mpps, delivered "
                              f"{_mpps(trial.delivered_pps)} Mpps", flush=True)
        finally:
            sink.close()
    summary = report(trials, args, failed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "summary": summary,
                       "trials": [t.__dict__ for t in trials]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
