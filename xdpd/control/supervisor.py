"""The supervisor: the only privileged, long-lived owner of kernel state.

Start-up, in the order that never loses a packet that could be kept:
  0. read the record of what a previous xdpd attached (record.py): refuse
     if it still runs, else remove what it left attached, and undo the
     steering its journal names (steering.py); then apply this config's
     steering (channels, RSS, ntuple rules), since the channels are the
     queues the programs and sockets use;
  1. load one rr_redirect instance per netdev, mark the owned queues
     (no sockets yet, so the configured fallback applies), write the
     pass_to_kernel rules, attach;
  2. create the shared UMEM + control area, the AF_XDP sockets (the first
     registers the UMEM, the rest share it with their own FILL/COMPLETION
     pair), the forwarding table;
  3. spawn one pinned worker per (netdev, queue) and wait until each has
     primed its FILL ring and reports RUNNING;
  4. only then put each socket into its queue's XSKMAP slot: packets flow.
Stop runs the same steps backwards: stop redirecting first, then stop the
workers and their standbys, detach, undo the steering, close sockets, unmap.

The loop: wait (signals via a self-pipe, the control socket) with a
timeout, reap dead workers, replace dead or hung ones on the SAME socket
(the kernel lets a fresh process map a bound socket's rings again) by their
standby, at once after a worker ran, with backoff after a start-up
failure, start standbys, answer control requests, apply a reload (SIGHUP or
`xdpd reload`), ping systemd's watchdog while every worker heartbeats,
repeat.

Reload (config/diff.py computes the diff; apply.py applies it) in the order that keeps packets:
  1. new interfaces: program loaded and attached, queues owned (fallback),
     pass rules written;
  2. new workers: sockets bound to the shared UMEM in free slots, spawned,
     RUNNING;
  3. changed fallbacks and pass_to_kernel rules (map writes, no reattach);
     the new forwarding table, in which removed workers are no egress;
     every worker switches between two batches and acknowledges it;
  4. new sockets into XSKMAP: their queues flow;
  5. removed queues: disowned and out of XSKMAP (the kernel takes them
     back), their workers drained in two steps (datapath/worker.py), stopped, their
     sockets closed and slots reset;
  6. removed interfaces detached; the final table.
Steering of a new interface is applied before step 1; that of an interface
that stays changes after step 2 (a new rule may send a flow to a queue
added there; until step 4 it gets the fallback) and so before step 5 (a
rule for a queue being removed goes first); that of a removed interface is
undone after step 6.
"""
from __future__ import annotations

import grp
import logging
import os
import pwd
import select
import signal
import subprocess
import threading
import time

from xdpd import exitcodes
from xdpd.config.model import Config, WorkerPlan
from xdpd.config.plan import plan_workers
from xdpd.control.apply import Reloading
from xdpd.control.capture import COMMANDS as CAPTURE_COMMANDS
from xdpd.control.capture import Capturing
from xdpd.control.hosting import Hosting, direct_fds, signame
from xdpd.control.metrics import serve
from xdpd.control.ops import SetupError, StopRequested, SystemOps, needs_capability
from xdpd.control.placement import Placer
from xdpd.control.recovery import Recovery
from xdpd.control.server import ControlServer, root_only
from xdpd.control.snapshot import Snapshot, Snapshotter
from xdpd.control.startup import Startup
from xdpd.control.steering import check_steering
from xdpd.control.workers import STOP_TIMEOUT_S, Interface, Worker, WorkerState
from xdpd.datapath import _fastpath
from xdpd.datapath.worker import WorkerSpec
from xdpd.kernel.errors import errname

log = logging.getLogger("xdpd.supervisor")

WORKER_BUDGET_US = 200_000          # a worker returns to Python at least this often
# workers.idle: adaptive: the longest a worker keeps looking for work after
# work before it sleeps (the budget it learns stays below; datapath/port.c,
# "Adaptive spinning"): requests 160 µs apart or closer are followed without
# a sleep; measured in docs/PERFORMANCE.md
ADAPTIVE_SPIN_MAX_US = 200
START_TIMEOUT_S = 10.0
HEARTBEAT_TIMEOUT_S = 5.0
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
QUICK_DEATH_S = 1.0                 # died sooner after its start: a start-up failure
STANDBY_RETRY_S = 1.0               # a standby that died is replaced after this
WATCHDOG_FRESH_S = 1.0              # heartbeats older than this stop the watchdog
SPAWN_RETRY_S = 0.5                 # a spawn the OS refused (EMFILE, EAGAIN) is retried
ERROR_LOG_S = 10.0                  # an internal error is logged at most this often
SCRAPE_WAIT_S = 1.0                 # a scrape waits this long for a fresh snapshot
LOOP_ERROR_PAUSE_S = 0.05           # after a failed loop turn: no busy spin
# where an OSError is counted and survived (xdpd_internal_errors_total{where}):
# the spawns, the metrics server's accept, the watchdog ping, each step of the
# loop and the loop itself
INTERNAL_ERROR_PLACES = ("spawn", "spawn_standby", "metrics", "watchdog", "reap", "replace",
                         "reload", "control", "capture", "sample", "loop", "signal",
                         "placement", "hosting")
RELOAD_RESULTS = ("applied", "unchanged", "invalid", "refused", "failed")
READ_ONLY_COMMANDS = ("status",)    # what control.status_group's members may ask


class Supervisor(Startup, Recovery, Reloading, Capturing):
    _status_gid: int | None = None      # control.status_group's gid
    # The record of what this supervisor attached (record.py), set up by
    # start() once what a dead xdpd left is removed; stop() removes it.
    _record_path: str | None = None
    _record_owner = None                # record.Owner: this process
    _record_dir_made = False
    _detach_failed: tuple = ()          # Interfaces still attached after stop: kept on record
    steering = None                     # steering.Steering: what this xdpd changed on NICs
    wake = None                         # wake.WakeHolder: CPUs held for fast wake-ups

    def __init__(self, config: Config, ops: SystemOps | None = None, notifier=None):
        self.config = config
        self.ops = ops or SystemOps()
        self.host = self.ops.host
        self.notifier = notifier
        self.interfaces: list[Interface] = []
        self.workers: list[Worker] = []
        self.umem = None
        self.worker_uid: int | None = None  # workers.user and workers.group, resolved
        self.worker_gid: int | None = None
        self.zero_copy = False
        # descriptor chains (umem.multi_buffer, decided at start): the
        # sockets are bound with XDP_USE_SG and a packet may take up to
        # max_segs descriptors; 0 without chains
        self.multi_buffer = False
        self.max_segs = 0
        self.captures = {}                  # by capture slot (control/capture.py)
        self.capture_totals = {"captured": 0, "dropped": 0}
        self.eventfds: list[int] = []       # one per slot
        self.free_slots: list[int] = []     # slot ids no worker uses
        self.quarantined: set[int] = set()  # slots whose frames did not all come back
        # what workers gone since sent on a queue through their direct
        # sockets, by that queue's worker: [packets, bytes]
        self.direct_carried: dict[int, list[int]] = {}
        self.metrics_server = None
        self.control = None
        self.ready = False
        self.generation = 0               # of the configuration: 1 at start, +1 per reload
        self.table_generation = 0
        self.mtus: dict[str, int] = {}    # egress MTUs the table was written with
        self.started_wall = time.time()
        self.last_reload: dict | None = None
        self.last_reload_success = 0.0    # time.time() of the last applied reload
        self.reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self.ring_sizes = None              # xsk.RingSizes, once the sockets are set up
        # the latest picture of the daemon: `xdpd status` and the metrics
        # endpoint read it (snapshot.py); None until the UMEM exists
        self.snapshot: Snapshot | None = None
        self._snapshots = Snapshotter()
        self._snapshot_wanted = False       # a scrape waits for a new one
        self._snapshot_taken = threading.Condition()
        self._stop = False
        self._reload_requested = False
        self._child_exited = False          # SIGCHLD since the loop's last reaping
        self._unsignallable: set[int] = set()   # pids a signal was refused to (no CAP_KILL)
        self._next_watchdog = 0.0
        # workers.placement adaptive: by queue or spread, from their busy time
        self.placer = (Placer(self.ops, self.note_internal_error)
                       if config.workers.placement == "adaptive" else None)
        self.hosting = Hosting(config, None, self.signal)   # control: the UMEM's, once made
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # failures the daemon survives, by where (xdpd_internal_errors_total);
        # also counted from the metrics thread, hence the lock
        self.internal_errors: dict[str, int] = dict.fromkeys(INTERNAL_ERROR_PLACES, 0)
        self._errors_lock = threading.Lock()
        self._errors_logged: dict[str, tuple[float, int]] = {}  # where -> (when, count)

    # -- start-up ---------------------------------------------------------

    def start(self) -> None:
        """Set everything up, in order; on any failure, or a stop requested
        meanwhile (checked between steps, see install_signal_handlers),
        undo what was done and raise."""
        if any(not i.steering.empty for i in self.config.interfaces):
            check_steering(self.config, self.ops.ethtool())
        plans: list[WorkerPlan] = []

        def plan() -> None:
            # after the steering: a dead xdpd's channel counts are undone and
            # this config's set, so `queues: all` counts the queues there are
            plans[:] = plan_workers(self.config, self.host)
            self._check_napi_placement(plans)

        try:
            for step in (self._resolve_worker_user,
                         self._remove_what_a_dead_xdpd_left, self._apply_steering, plan,
                         self._decide_multi_buffer,
                         lambda: self._load_programs(plans),
                         lambda: self._create_umem_and_sockets(plans),
                         self._write_table, self._spawn_all,
                         lambda: self._wait_running(self.workers),
                         lambda: self._open_queues(self.workers),
                         self._start_control, self._start_metrics):
                if self._stop:
                    raise StopRequested()
                step()
        except BaseException:
            self.stop()
            raise
        self._log_worker_memory()
        self.generation = 1
        log.info("forwarding: %d workers on %s (%s, %s mode%s)", len(self.workers),
                 ", ".join(f"{i.name} [{i.xdp_mode}]" for i in self.interfaces),
                 "UMEM %d frames x %d B" % (self.umem.capacity, self.config.umem.frame_size),
                 "zero-copy" if self.zero_copy else "copy",
                 f", multi-buffer: up to {self.max_segs} buffers per packet"
                 if self.multi_buffer else "")
        self.ready = True
        self._take_snapshot(force=True)
        if self.notifier:
            self.notifier.ready(self._status_line())

    def _status_line(self) -> str:
        running = sum(w.state == WorkerState.RUNNING for w in self.workers)
        return (f"forwarding: {running}/{len(self.workers)} workers, "
                f"config generation {self.generation}")


    def worker_usage(self, wid: int, pid: int) -> dict[str, int] | None:
        """CPU time and memory that process pid in worker slot wid reported
        of itself (worker.Usage; its /proc is not ours to read), or None
        before its first report.  A worker's claim: for metrics and logs."""
        umem = self.umem
        if umem is None:
            return None
        use = umem.control.usage(wid)
        return use if use["pid"] == pid else None


    # -- workers ----------------------------------------------------------

    def worker_spec(self, w: Worker):
        r = self.ring_sizes
        return WorkerSpec(
            id=w.id, netdev=w.plan.netdev, queue=w.plan.queue, cpu=w.cpu,
            xsk_fd=w.socket.fd, umem_fd=self.umem.umem.fd, umem_size=self.umem.umem.size,
            control_fd=self.umem.ctl_region.fd, control_size=self.umem.ctl_region.size,
            tables_fd=self.umem.control.tables_fd,
            eventfds=tuple(self.eventfds), rings=(r.rx, r.tx, r.fill, r.completion),
            layout=self.umem.geometry.layout,
            batch_size=self.config.workers.batch_size,
            spin=self.config.workers.idle == "spin",
            spin_max_us=ADAPTIVE_SPIN_MAX_US if self.config.workers.idle == "adaptive" else 0,
            busy_poll=self.config.workers.busy_poll,
            budget_us=WORKER_BUDGET_US, parent_pid=os.getpid(), name=w.name,
            uid=self.worker_uid, gid=self.worker_gid,
            direct_fds=direct_fds(w), max_segs=self.max_segs,
            sched_slice_us=self.config.workers.sched_slice_us or 0,
            guests=self.hosting.guest_specs(w, self.workers, self.max_segs))

    def spawn_worker(self, w: Worker) -> None:
        """Start w's process: its standby takes over if it has one, else a
        fresh process.  Either maps the socket's rings and continues from the
        commit record its predecessor left (fastpath.h)."""
        standby, w.standby = w.standby, None
        ready = standby is not None and self.ops.standby_ready(standby)
        if standby is not None and standby.poll() is None and self.ops.go(standby):
            self.ops.release(standby)
            proc = standby
            self.hosting.took_over(w)
            if self.placer is not None and w.plan.movable:
                if not self.placer.pin(w, w.cpu, (proc,)):   # moved while starting
                    self.placer = None
            # a standby still starting up is still the quickest way back
            how = "standby pid %d took over%s" % (
                standby.pid, "" if ready else " (it was still starting: a delay)")
        else:
            if standby is not None:
                self._reap_standby(w.name, standby)
            spec = self.worker_spec(w)
            proc = self.ops.spawn(["xdpd.datapath.worker", w.name],
                                  spec.to_json() + "\ngo\n", spec.fds())
            self.hosting.spawning(w, self.workers, standby=False)
            how = "spawned pid %d" % proc.pid
        w.proc = proc
        w.started_at = time.monotonic()
        w.started_wall = time.time()
        w.standby_after = w.started_at
        w.transition(WorkerState.STARTING)
        log.info("%s: %s on CPU %d", w.name, how, w.cpu)

    def spawn_standby(self, w: Worker) -> None:
        spec = self.worker_spec(w)
        w.standby = self.ops.spawn(["xdpd.datapath.worker", w.name], spec.to_json() + "\n",
                                   spec.fds(), standby=True)
        self.hosting.spawning(w, self.workers, standby=True)
        log.debug("%s: standby pid %d", w.name, w.standby.pid)

    def dismiss_standby(self, w: Worker) -> None:
        """Stop w's standby (before its socket is closed: it holds the socket
        too, and the kernel releases a queue only when the last holder goes)."""
        standby, w.standby = w.standby, None
        if standby is not None:
            self._reap_standby(w.name, standby)

    def _reap_standby(self, name: str, proc) -> None:
        self.ops.release(proc)
        if proc.poll() is None and not self.signal(proc, signal.SIGKILL):
            return                                # left to its parent-death signal
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s: standby pid %d did not exit", name, proc.pid)

    def _spawn_all(self) -> None:
        for w in self.workers:
            self.spawn_worker(w)

    def _worker_reports(self, w: Worker) -> int:
        return self.umem.control.worker_liveness(w.id)[2]

    def _reports_running(self, w: Worker) -> bool:
        """w's current process (not a predecessor whose state is still in
        shared memory) reports RUNNING."""
        _, pid, state, _ = self.umem.control.worker_liveness(w.id)
        return w.proc is not None and pid == w.proc.pid and state == _fastpath.STATE_RUNNING

    def _wait_running(self, workers: list[Worker]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(workers)
        while pending:
            for w in list(pending):
                if w.proc.poll() is not None:
                    raise SetupError(f"worker {w.name} exited with status {w.proc.returncode} "
                                     "during start-up; see its messages above")
                if self._reports_running(w):
                    w.transition(WorkerState.RUNNING)
                    pending.remove(w)
            if pending and time.monotonic() > deadline:
                raise SetupError("workers did not start within %.0f s: %s"
                                 % (START_TIMEOUT_S, ", ".join(w.name for w in pending)))
            if pending and self._stop:
                raise StopRequested()
            if pending:
                time.sleep(0.01)

    def _start_control(self) -> None:
        path = self.config.control.socket
        group = self.config.control.status_group
        if group is not None:
            try:
                self._status_gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise SetupError(f"control.status_group: no group {group!r} on this host; "
                                 f"create it (groupadd {group}) or remove the key",
                                 exitcodes.CONFIG) from None
        try:
            self.control = ControlServer(path, authorize=self.authorize_peer,
                                         note_error=self.note_internal_error,
                                         group=self._status_gid)
        except OSError as e:
            raise SetupError(f"control.socket {path}: {e.strerror or e}",
                             exitcodes.CONFIG) from None
        log.info("control socket %s", path)

    def _start_metrics(self) -> None:
        listen = self.config.metrics.listen
        if listen is None:
            return
        host, port = listen
        try:
            self.metrics_server = serve(self, host, port)
        except OSError as e:
            raise SetupError(f"metrics.listen {host}:{port}: cannot listen: "
                             f"{e.strerror}; choose another address or port",
                             exitcodes.CONFIG) from None
        log.info("metrics on http://%s:%d/metrics", host if ":" not in host else f"[{host}]",
                 self.metrics_server.server_port)

    # -- main loop ----------------------------------------------------------

    def request_stop(self, signum=None, frame=None) -> None:
        self._stop = True
        self._poke(b"x")

    def request_reload(self, signum=None, frame=None) -> None:
        self._reload_requested = True
        self._poke(b"h")

    def _on_sigchld(self, signum, frame) -> None:
        self._child_exited = True           # control requests yield to the reaping
        self._poke(b"c")

    def _poke(self, byte: bytes) -> None:
        try:
            os.write(self._wake_w, byte)
        except OSError:
            pass

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT/SIGHUP only set a flag (and wake the main loop);
        start() and run_forever() act on it.  A handler that raised instead
        could fire inside a ctypes callback (libbpf's log function), where
        the exception is dropped and the stop lost.  A SIGHUP during
        start-up is kept and applied once running."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        signal.signal(signal.SIGCHLD, self._on_sigchld)

    def note_internal_error(self, where: str, e: BaseException) -> None:
        """Count a failure the daemon survives; log it, at most once per
        ERROR_LOG_S for each `where` (with how many there were since)."""
        now = time.monotonic()
        with self._errors_lock:
            self.internal_errors[where] = self.internal_errors.get(where, 0) + 1
            total = self.internal_errors[where]
            last, logged = self._errors_logged.get(where, (-ERROR_LOG_S, 0))
            if now - last < ERROR_LOG_S:
                return
            self._errors_logged[where] = (now, total)
        reason = (f"{errname(e.errno)}: {e.strerror}" if isinstance(e, OSError) and e.errno
                  else repr(e))
        log.warning("%s failed: %s (%d such failures so far, %d since the last message); "
                    "retrying", where, reason, total, total - logged)

    def run_forever(self) -> None:
        self.install_signal_handlers()
        waitables = [self._wake_r] + ([self.control] if self.control else [])
        while not self._stop:
            try:
                select.select(waitables, [], [], self._next_timeout())
                try:
                    while os.read(self._wake_r, 64):
                        pass
                except BlockingIOError:
                    pass
                if self._stop:
                    break
                self._turn()
            except OSError as e:
                # nothing the OS refuses (no descriptors, no memory) ends the
                # daemon: count it, breathe, go round again
                self.note_internal_error("loop", e)
                time.sleep(LOOP_ERROR_PAUSE_S)

    def _turn(self) -> None:
        """One turn of the loop: supervise, then serve; each step on its own,
        so that one failing does not starve the others."""
        self._child_exited = False
        for where, step in (("reap", self.reap_workers), ("replace", self.replace_workers),
                            ("reload", self._reload_if_requested),
                            ("control", self._serve_control), ("capture", self.expire_captures),
                            ("sample", self._take_snapshot), ("wake", self._hold_busy_cpus),
                            ("placement", self._place_workers),
                            ("hosting", lambda: self.hosting.update(self.workers)),
                            ("watchdog", self._watchdog)):
            try:
                step()
            except OSError as e:
                self.note_internal_error(where, e)

    def _hold_busy_cpus(self) -> None:
        """Cap the wake-up latency of the CPUs whose workers receive, let
        go of those quiet for a while (wake.py); the counters are the
        latest snapshot's, read at most every SNAPSHOT_S."""
        if self.wake is not None and self.snapshot is not None:
            self.wake.update({w.id: (w.cpu, w.stats["rx_packets"])
                              for w in self.snapshot.workers}, time.monotonic())

    def _place_workers(self) -> None:
        """workers.placement adaptive: each worker to the CPU the placer
        wants it on now, from the latest snapshot (placement.py)."""
        if self.placer is not None and self.snapshot is not None:
            if not self.placer.place(self.workers, self.snapshot):
                self.placer = None          # the kernel refused: they stay

    def _reload_if_requested(self) -> None:
        if self._reload_requested:
            self._reload_requested = False
            ok, result, error = self.reload()
            if not ok:
                log.error("reload (SIGHUP) not applied: %s", error)

    def _serve_control(self) -> None:
        if self.control is not None:
            self.control.serve(self.handle_request, interrupt=lambda: self._child_exited)

    def _next_timeout(self) -> float:
        """Wake at least every 0.5 s (counters for the rates, the watchdog),
        and in time for the next restart."""
        now = time.monotonic()
        due = [w.next_start - now for w in self.workers if w.state == WorkerState.BACKOFF]
        if any(w.state == WorkerState.STARTING or
               (w.standby is not None and not self.ops.standby_ready(w.standby))
               for w in self.workers):
            due.append(0.01)                # RUNNING (a standby's ready) is seen soon
        if self.notifier and self.notifier.watchdog_interval():
            due.append(self._next_watchdog - now)
        if self.control is not None and (t := self.control.next_deadline()) is not None:
            due.append(t - now)             # a request read, a connection expiring
        return max(0.0, min([0.5] + due))

    def all_heartbeating(self) -> bool:
        """Every worker running and seen alive within WATCHDOG_FRESH_S."""
        now = time.monotonic_ns()
        for w in self.workers:
            if w.state not in (WorkerState.RUNNING, WorkerState.DRAINING):
                return False
            beat = self.umem.control.worker_liveness(w.id)[0]
            if not beat or now - beat > WATCHDOG_FRESH_S * 1e9:
                return False
        return bool(self.workers)

    def _watchdog(self) -> None:
        """systemd's watchdog is fed only while every worker heartbeats: a
        worker xdpd cannot bring back (FATAL, or hung and not replaced)
        ends in systemd restarting the service."""
        if not self.notifier or not self.notifier.watchdog_interval():
            return
        now = time.monotonic()
        if now < self._next_watchdog:
            return
        if self.all_heartbeating():
            if not self.notifier.watchdog():
                self.note_internal_error("watchdog", self.notifier.last_error)
            self._next_watchdog = now + self.notifier.watchdog_interval()
        else:
            # look again soon, so the ping resumes as soon as all beat again
            self._next_watchdog = now + min(0.1, self.notifier.watchdog_interval())

    def reap_workers(self) -> None:
        """Collect dead workers (and dead standbys).  A worker that reached
        RUNNING and lived QUICK_DEATH_S is restarted at once (by its standby);
        one that died while starting, or right after, backs off, and after
        len(BACKOFF_S) such deaths in a row is given up (FATAL)."""
        now = time.monotonic()
        for w in self.workers:
            if w.standby is not None and w.standby.poll() is not None:
                log.warning("%s: standby pid %d exited (status %s); another in %.0f s",
                            w.name, w.standby.pid, w.standby.returncode, STANDBY_RETRY_S)
                self.ops.release(w.standby)
                w.standby = None
                w.standby_after = now + STANDBY_RETRY_S
            if w.proc is None or w.state == WorkerState.DRAINING or w.proc.poll() is None:
                continue
            if w.state == WorkerState.FATAL:    # a member stopped with its owner
                w.proc = None
                continue
            lived = now - w.started_at
            code = w.proc.returncode
            self.hosting.forget(w, self.workers)
            booted = w.state == WorkerState.RUNNING or self._reports_running(w)
            w.proc = None
            quick = not booted or lived < QUICK_DEATH_S
            w.quick_deaths = w.quick_deaths + 1 if quick else 0
            if w.quick_deaths > len(BACKOFF_S):
                w.transition(WorkerState.FATAL)
                log.error("%s: died %d times in a row while starting (last status %s); "
                          "giving up on it: its queue falls back to the kernel. See its "
                          "messages above, fix the cause, then restart xdpd",
                          w.name, w.quick_deaths, code)
                self.dismiss_standby(w)
                # without its owner a fanout group has no FILL ring to
                # receive into and no COMPLETION ring to send with
                gone = self.group(w) if w.plan.member == 0 else [w]
                if len(gone) > 1:
                    log.error("%s: its fanout members %s stop receiving and sending "
                              "with it", w.name, ", ".join(x.name for x in gone[1:]))
                self._close_queues(gone)    # the interface's fallback applies
                for x in gone:
                    self.umem.control.mark_stopped(x.id)    # peers: egress_down
                for x in gone[1:]:
                    x.transition(WorkerState.FATAL)
                    self.dismiss_standby(x)
                    self.kill_worker(x)
                continue
            w.transition(WorkerState.BACKOFF)
            delay = BACKOFF_S[min(w.quick_deaths, len(BACKOFF_S)) - 1] if w.quick_deaths else 0
            w.next_start = now + delay
            log.warning("%s: exited (status %s) after %.1f s; restarting in %.1f s",
                        w.name, code, lived, delay)

    def replace_workers(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.state == WorkerState.BACKOFF and now >= w.next_start:
                try:
                    self.spawn_worker(w)
                except OSError as e:            # EMFILE, EAGAIN, ENOMEM: not its fault
                    self.note_internal_error("spawn", e)
                    w.next_start = now + SPAWN_RETRY_S
                    continue
                w.restarts += 1
            elif w.state == WorkerState.STARTING and self._reports_running(w):
                w.transition(WorkerState.RUNNING)
            elif w.state == WorkerState.STARTING and now - w.started_at > START_TIMEOUT_S:
                log.warning("%s: not running %.0f s after its start; killing it", w.name,
                            START_TIMEOUT_S)
                self.kill_worker(w, signal.SIGKILL)
            elif w.state == WorkerState.RUNNING:
                beat = self.umem.control.worker_liveness(w.id)[0]
                if beat and time.monotonic_ns() - beat > HEARTBEAT_TIMEOUT_S * 1e9:
                    log.warning("%s: no heartbeat for %.0f s; killing it", w.name,
                                HEARTBEAT_TIMEOUT_S)
                    self.kill_worker(w, signal.SIGKILL)
                elif w.standby is None and now >= w.standby_after:
                    try:
                        self.spawn_standby(w)
                    except OSError as e:
                        self.note_internal_error("spawn_standby", e)
                        w.standby_after = now + STANDBY_RETRY_S
            if w.standby is not None:
                self.ops.standby_ready(w.standby)   # reads its ready pipe once, closes it

    def kill_worker(self, w: Worker, sig=signal.SIGTERM) -> None:
        if w.proc is not None and w.proc.poll() is None:
            self.signal(w.proc, sig)

    def signal(self, proc, sig) -> bool:
        """Send sig to a worker or standby process; True if it was sent.  A
        process gone already is no error; one the supervisor may not signal
        (workers.user's, without CAP_KILL) is counted and logged."""
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return False
        except PermissionError as e:
            self._unsignallable.add(proc.pid)
            self.note_internal_error("signal", needs_capability(
                e, f"{signame(sig)} to pid {proc.pid}: signalling workers.user's processes",
                "CAP_KILL"))
            return False
        return True

    # -- reload -------------------------------------------------------------


    # -- control requests and status -------------------------------------------

    def authorize_peer(self, peer, command: str) -> str | None:
        """Who may use the control socket: root, members of
        control.status_group for READ_ONLY_COMMANDS, and never a process
        of the workers' user or group (through `reload` with config_text a
        worker could skip the file checks) nor one a worker started.  A
        peer's ancestors are read from /proc where the supervisor can see
        them (under the unit's ProtectProc=ptraceable, not a worker's, nor
        an operator's shell: those are judged by their ids alone)."""
        if self.worker_uid is not None and peer.uid == self.worker_uid or \
                self.worker_gid is not None and peer.gid == self.worker_gid:
            return (f"permission denied: pid {peer.pid} runs as the workers' user or group "
                    f"(workers.user, workers.group)")
        refused = root_only(peer, command)
        if refused and self._in_status_group(peer):     # control.status_group
            refused = (None if command in READ_ONLY_COMMANDS else
                       f"permission denied: members of control.status_group may ask only "
                       f"{', '.join(READ_ONLY_COMMANDS)}")
        if refused:
            return refused
        ours = {p.pid for w in self.workers for p in (w.proc, w.standby) if p is not None}
        lineage = self.ops.process_lineage(peer.pid) or [peer.pid]
        if ours & set(lineage):
            return f"permission denied: pid {peer.pid} is an xdpd worker or its child"
        return None

    def _in_status_group(self, peer) -> bool:
        """The peer is a member of control.status_group: its primary group,
        or listed as a member in the group database."""
        if self._status_gid is None:
            return False
        if peer.gid == self._status_gid:
            return True
        try:
            user = pwd.getpwuid(peer.uid).pw_name
            return user in grp.getgrgid(self._status_gid).gr_mem
        except KeyError:
            return False

    def handle_request(self, req: dict) -> tuple[bool, dict | None, str | None]:
        command = req.get("command")
        if command == "status":
            return True, self.status(), None
        if command == "reload":
            path, text = req.get("config_path"), req.get("config_text")
            if (path is not None and not isinstance(path, str)) or \
                    (text is not None and not isinstance(text, str)):
                return False, None, "config_path and config_text must be strings"
            return self.reload(path, text)
        if command in CAPTURE_COMMANDS:
            return self.capture_request(command, req)
        return False, None, (f"unknown command {command!r}; known: status, reload, "
                             f"{', '.join(CAPTURE_COMMANDS)}")

    def status(self) -> dict:
        """The answer to `xdpd status`: a snapshot taken now (so a status
        request sees what just happened), which the metrics read as well."""
        self._take_snapshot(force=True)
        return self.snapshot.status()

    def _take_snapshot(self, force: bool = False) -> None:
        """The loop's picture of the daemon, at most every SNAPSHOT_S unless
        forced, or asked for by a scrape (snapshot.py)."""
        force = force or self._snapshot_wanted
        if self.umem is not None and (force or self._snapshots.due(self.snapshot,
                                                                   time.monotonic())):
            snap = self._snapshots.take(self)
            with self._snapshot_taken:
                self.snapshot = snap
                self._snapshot_wanted = False
                self._snapshot_taken.notify_all()

    def fresh_snapshot(self, timeout: float = SCRAPE_WAIT_S) -> Snapshot | None:
        """For the metrics thread: a snapshot the loop took after this call,
        so that a scrape right after an event sees it; the latest one if the
        loop is busy (a reload being applied) for longer than `timeout`."""
        asked = time.monotonic()
        with self._snapshot_taken:
            self._snapshot_wanted = True
        self._poke(b"s")
        with self._snapshot_taken:
            self._snapshot_taken.wait_for(
                lambda: self.snapshot is not None and self.snapshot.taken >= asked, timeout)
            return self.snapshot

    def internal_errors_now(self) -> dict[str, int]:
        """A copy of the internal error counts (the metrics thread adds to them)."""
        with self._errors_lock:
            return dict(self.internal_errors)

    # -- stop -------------------------------------------------------------

    def stop(self) -> None:
        """Undo everything start() did, in reverse; safe on a partial start."""
        if self.notifier:
            self.notifier.stopping()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.umem is not None:
            self.stop_captures()
        self._close_queues(self.workers)
        for w in self.workers:
            self.kill_worker(w)
            self.dismiss_standby(w)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for w in self.workers:
            if w.proc is None:
                continue
            if w.proc.pid in self._unsignallable:   # no SIGTERM arrived: no use waiting
                self._wait_gone(w)
                w.proc = None
                w.transition(WorkerState.STOPPED)
                continue
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s: did not stop in %.0f s; killing it", w.name, STOP_TIMEOUT_S)
                self.signal(w.proc, signal.SIGKILL)
                self._wait_gone(w)
            w.proc = None
            w.transition(WorkerState.STOPPED)
        for iface in list(self.interfaces):
            try:
                iface.program.close()             # detaches only if still ours
            except OSError as e:
                log.warning("%s: %s", iface.name, e)
                self._detach_failed = (*self._detach_failed, iface)
        self.interfaces = []
        if self.steering is not None:
            self.steering.undo_all()              # after the detach: queues may go away
        if self.wake is not None:
            self.wake.release_all()
        self._close_record()
        for w in self.workers:
            for d in w.direct:
                d.close()
            w.socket.close()
        self.workers = []
        for fd in self.eventfds:
            self.ops.close_fd(fd)
        self.eventfds = []
        if self.umem is not None:
            self.umem.close()
            self.umem = None
        self.ready = False


