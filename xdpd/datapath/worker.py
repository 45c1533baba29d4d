"""A worker: one process per (netdev, queue), pinned to one CPU.

The supervisor starts `python -m xdpd.datapath.worker` with the worker's frozen spec
(JSON, on stdin) and the file descriptors it needs already open: its
AF_XDP socket, the UMEM and control-area memfds, and every worker's
eventfd.  The worker never sees the YAML and never creates kernel objects;
it maps its rings and runs the C fast path in bounded bursts, so that
signals and the parent-death check run in Python between bursts.

Standby.  The spec line on stdin is followed by a line "go" when the
worker is to run.  The supervisor starts a standby for each running worker
ahead of time: it gets as far as it can without touching the socket (the
interpreter, the extension, the control area, its CPU) and waits for "go",
which the supervisor writes when the worker it stands by for has died.  It
then maps the rings and continues from the commit record the dead worker
left (fastpath.h), in milliseconds instead of an interpreter start.  EOF
instead of "go" (the supervisor closed the pipe, or died) ends it.

Removal by a reload is a two-step drain the supervisor drives, after it
took the socket out of XSKMAP and no forwarding table names the worker as
an egress any more:
  SIGUSR1  keep forwarding what is on the RX ring; once the ring stayed
           empty for DRAIN_QUIET_S (the kernel may still deliver what a
           NAPI poll redirected before the XSKMAP update), report DRAINING;
  SIGUSR2  (sent when every worker being removed reports DRAINING, so none
           of them receives or hands off anything new) transmit what was
           handed over, wait for every completion and for every lent frame
           to come home, then exit.
Nothing already received is dropped on the way.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass

from xdpd import exitcodes
from xdpd.datapath.hosted import SIGHOSTING, Ports, wakeup_pipe
from xdpd.kernel import cpuidle, privileges
from xdpd.logs import parse_level, setup_logging

log = logging.getLogger("xdpd.worker")

PR_SET_PDEATHSIG = 1
USAGE_INTERVAL_S = 1.0      # how often a worker reports its CPU time and RSS
DRAIN_QUIET_S = 0.05        # RX ring empty this long: nothing more arrives
DRAIN_BUDGET_US = 10_000    # shorter bursts while draining: react quickly
SETTLE_BUDGET_US = 1_000    # and while a port changes process (hosted.py)...
SETTLE_FOR_S = 1.0          # ...for this long at most (the other side may never be ready)
PARKED_WAIT_S = 0.2         # our port runs in a host's process: look this often


@dataclass(frozen=True)
class GuestSpec:
    """A slot whose port this worker may run besides its own (hosted.py)."""
    id: int
    name: str
    xsk_fd: int
    direct_fds: tuple[int, ...] = ()
    max_segs: int = 0


@dataclass(frozen=True)
class WorkerSpec:
    id: int
    netdev: str
    queue: int
    cpu: int
    xsk_fd: int
    umem_fd: int
    umem_size: int
    control_fd: int
    control_size: int
    tables_fd: int              # the tables area: sealed, mapped read-only
    eventfds: tuple[int, ...]
    rings: tuple[int, int, int, int]      # rx, tx, fill, completion
    # the control area's layout (nworkers, frames_per_worker, frame_size,
    # ring_entries): computed from this, never from the shared header
    layout: tuple[int, int, int, int]
    batch_size: int
    spin: bool
    spin_max_us: int            # adaptive spinning's cap (workers.idle: adaptive); 0: none
    busy_poll: bool
    budget_us: int
    parent_pid: int
    name: str = ""              # the plan's: netdev/qN, netdev/qN.M with fanout
    uid: int = 65534            # workers.user and workers.group, resolved
    gid: int = 65534
    # direct sockets (TX only, on other queues), by their index in the
    # slot's assignment; -1: closed (its queue was removed)
    direct_fds: tuple[int, ...] = ()
    # descriptors one packet may take (umem.multi_buffer): 0, one (the
    # socket has no XDP_USE_SG)
    max_segs: int = 0
    # scheduler slice asked for (workers.sched_slice_us); 0: the kernel's
    sched_slice_us: int = 0
    # the slots sharing this worker's CPU whose ports it may be asked to run
    # (workers.share_process), with their sockets
    guests: tuple[GuestSpec, ...] = ()

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", f"{self.netdev}/q{self.queue}")

    def fds(self) -> tuple[int, ...]:
        return (self.xsk_fd, self.umem_fd, self.control_fd, self.tables_fd, *self.eventfds,
                *(fd for fd in self.direct_fds if fd >= 0),
                *(fd for g in self.guests for fd in (g.xsk_fd, *g.direct_fds) if fd >= 0))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerSpec":
        d = json.loads(text)
        d["eventfds"] = tuple(d["eventfds"])
        d["rings"] = tuple(d["rings"])
        d["layout"] = tuple(d["layout"])
        d["direct_fds"] = tuple(d.get("direct_fds", ()))
        d["guests"] = tuple(GuestSpec(**{**g, "direct_fds": tuple(g.get("direct_fds", ()))})
                            for g in d.get("guests", ()))
        return cls(**d)


class StopFlag:
    """Signal handlers only set flags; the loop acts on them."""

    def __init__(self):
        self.stop = False
        self.drain = 0          # 0 running, 1 draining RX (SIGUSR1), 2 finishing (SIGUSR2)
        self.hosting = 0        # SIGHOSTINGs: the supervisor changed who runs a port

    def __call__(self, signum, frame):
        if signum == SIGHOSTING:
            self.hosting += 1           # the loop settles its ports after each burst
            return
        if signum == signal.SIGUSR1:
            self.drain = max(self.drain, 1)
        elif signum == signal.SIGUSR2:
            self.drain = 2
        else:
            self.stop = True


class Drain:
    """The worker's side of removal: when each step is done (see above)."""

    def __init__(self, port):
        self.port = port
        self.quiet_since: float | None = None
        self.reported = False

    def step(self, phase: int, now: float) -> bool:
        """Call after each burst; True when the worker may exit."""
        done = self.port.rx_empty() if phase == 1 else self.port.drained()
        if not done:
            self.quiet_since = None
            return False
        if self.quiet_since is None:
            self.quiet_since = now
        if now - self.quiet_since < DRAIN_QUIET_S:
            return False
        if phase == 1:
            if not self.reported:
                self.port.mark_draining()
                self.reported = True
            return False
        return True


class Usage:
    """The worker's report of its own resource use (struct fp_usage), which
    the supervisor cannot read from /proc: CPU time and resident memory
    every USAGE_INTERVAL_S, unique memory once before the loop (reading
    smaps_rollup walks every page table, milliseconds with a large UMEM)."""

    def __init__(self, port):
        self.port = port
        self.pid = os.getpid()
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.uss = 0
        self.due = 0.0

    def report(self, now: float, unique: bool = False) -> None:
        if now < self.due and not unique:
            return
        self.due = now + USAGE_INTERVAL_S
        t = os.times()
        try:
            with open("/proc/self/statm", "rb") as f:
                rss = int(f.read().split()[1]) * self.page
            if unique:
                self.uss = smaps_private_bytes()
        except (OSError, ValueError, IndexError):
            return
        self.port.report_usage(self.pid, int(t.user * 1e9), int(t.system * 1e9), rss, self.uss)


def smaps_private_bytes(path: str = "/proc/self/smaps_rollup") -> int:
    """Memory only this process maps (Private_Clean + Private_Dirty + Private_Hugetlb)."""
    total = 0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"Private_"):
                total += int(line.split()[1]) * 1024
    return total


def die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:     # the parent died before prctl took effect
        raise SystemExit(exitcodes.WORKER_ORPHANED)


def pin_to_cpu(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


def ask_for_slice(spec: WorkerSpec) -> None:
    """A short scheduler slice (kernel/cpuidle.py): woken by a packet, the
    worker preempts whatever runs on its CPU instead of waiting out that
    task's slice.  Best effort: without it the worker forwards as before."""
    if not spec.sched_slice_us:
        return
    try:
        if not cpuidle.set_slice(spec.sched_slice_us):
            log.debug("%s: this kernel ignores scheduler slices (before 6.12)", spec.name)
    except OSError as e:
        log.warning("%s: scheduler slice of %d us refused (%s); it keeps the kernel's",
                    spec.name, spec.sched_slice_us, e.strerror or e)


def confine(spec: WorkerSpec) -> None:
    """Become what a worker is from here on: spec.uid/spec.gid without any
    capability, non-dumpable, under no_new_privs, with the parent-death
    signal set again (the uid change cleared it), then under the worker's
    system call filter (confine.c)."""
    from xdpd.kernel import _confine
    privileges.drop_all_capabilities(spec.uid, spec.gid)
    die_with_parent(spec.parent_pid)
    try:
        _confine.install()
    except OSError as e:
        raise privileges.PrivilegeError(e.errno, "install the worker's seccomp filter") from None


def wait_for_go(spec: WorkerSpec, stdin) -> bool:
    """A standby's wait: True on "go", False on EOF (dismissed).  Signals
    keep their default action meanwhile: a standby holds nothing to undo."""
    line = stdin.readline()
    if line.strip() == "go":
        return True
    if line:
        log.error("%s: expected 'go' on stdin, got %r", spec.name, line[:40])
    return False


def run_worker(spec: WorkerSpec, stdin=None, ready_fd: int | None = None) -> int:
    from xdpd.datapath import _fastpath

    die_with_parent(spec.parent_pid)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # reload is the supervisor's business
    signal.signal(SIGHOSTING, signal.SIG_IGN)      # until the loop listens (a standby's wait)
    pin_to_cpu(spec.cpu)
    ask_for_slice(spec)
    # Before mapping anything a peer can write (docs/SECURITY.md), and so
    # before a standby waits: mapping the control area, the UMEM and the
    # socket's rings needs no capability, only the descriptors we were given.
    wake = wakeup_pipe()
    try:
        confine(spec)
    except privileges.PrivilegeError as e:
        log.error("%s: cannot drop privileges, exiting: %s", spec.name, e)
        return exitcodes.WORKER_PRIVILEGES
    control = _fastpath.Control(spec.control_fd, spec.control_size, layout=spec.layout,
                                tables_fd=spec.tables_fd)
    if ready_fd is not None:            # a standby: ready for "go" from here on
        _fastpath.set_proctitle(f"xdpd: standby {spec.name}")
        try:
            os.write(ready_fd, b"ready\n")
        except OSError:
            pass                        # the supervisor went away: stdin says so too
        os.close(ready_fd)
    if stdin is not None and not wait_for_go(spec, stdin):
        control.close()
        return exitcodes.OK
    _fastpath.set_proctitle(f"xdpd: worker {spec.name}")
    stop = StopFlag()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, SIGHOSTING):
        signal.signal(sig, stop)
    ports = Ports(spec, control, lambda slot: open_port(spec, control, slot), wake)
    try:
        if not take_own_port(spec, ports, stop):
            return exitcodes.OK
        log.info("%s: running on CPU %d", spec.name, spec.cpu)
        loop(spec, ports, stop)
    finally:
        ports.close()
        control.close()
    return exitcodes.OK


def open_port(spec: WorkerSpec, control, slot):
    """The Port of slot (this worker's spec, or one of its GuestSpecs)."""
    from xdpd.datapath import _fastpath
    return _fastpath.Port(control, slot.id, slot.xsk_fd, spec.umem_fd, spec.umem_size,
                          spec.rings, spec.batch_size, spec.spin, spec.eventfds,
                          busy_poll=spec.busy_poll, spin_max_us=spec.spin_max_us,
                          direct_fds=slot.direct_fds, max_segs=slot.max_segs)


def take_own_port(spec: WorkerSpec, ports: Ports, stop: StopFlag) -> bool:
    """Our port, once a host that still runs it has let go (a replacement of
    a worker whose port was hosted); False when told to stop first."""
    while not stop.stop:
        ports.settle()
        if ports.own is not None:
            return True
        ports.wait(SETTLE_BUDGET_US / 1e6)
    return False


def loop(spec: WorkerSpec, ports: Ports, stop: StopFlag) -> None:
    drain = Drain(ports.own)
    usage = Usage(ports.own)
    usage.report(time.monotonic(), unique=True)
    phase = 0
    short = False                       # a port is changing process: look again soon
    pending_since = 0.0
    told = stop.hosting
    while not stop.stop:
        if ports.own is None:           # hosted: our port runs in the host's process
            ports.wait(SETTLE_BUDGET_US / 1e6 if short else PARKED_WAIT_S)
        else:
            budget = (DRAIN_BUDGET_US if stop.drain else
                      SETTLE_BUDGET_US if short else spec.budget_us)
            ports.own.run(budget, ports.running())
            usage.port = ports.own
            usage.report(time.monotonic())
        if os.getppid() != spec.parent_pid:
            log.warning("%s: supervisor gone, exiting", spec.name)
            break
        now, pending = time.monotonic(), ports.settle()
        if told != stop.hosting:        # a new wish: a new second to settle it
            told, pending_since = stop.hosting, 0.0
        if not pending:
            pending_since = 0.0
        elif not pending_since:
            pending_since = now
        short = pending and now - pending_since < SETTLE_FOR_S
        if stop.drain and ports.own is not None:
            drain.port = ports.own
            if stop.drain != phase:
                phase = stop.drain
                drain.quiet_since = None
            if drain.step(phase, time.monotonic()):
                log.info("%s: drained; exiting", spec.name)
                break


def main() -> int:
    # the supervisor's command line checked and exported the level
    setup_logging(parse_level(os.environ.get("XDPD_LOG_LEVEL")) or "info")
    try:
        spec = WorkerSpec.from_json(sys.stdin.readline())
    except (ValueError, TypeError, KeyError) as e:
        log.error("bad worker spec on stdin: %s", e)
        return exitcodes.WORKER_BOOT_FAILED
    ready_fd = None
    if "--ready-fd" in sys.argv[1:-1]:      # a standby (SystemOps.spawn)
        ready_fd = int(sys.argv[sys.argv.index("--ready-fd") + 1])
    try:
        return run_worker(spec, sys.stdin, ready_fd)
    except OSError as e:
        log.error("%s: %s", spec.name, e)
        return exitcodes.WORKER_BOOT_FAILED


if __name__ == "__main__":
    sys.exit(main())
