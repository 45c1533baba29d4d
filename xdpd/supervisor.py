"""The supervisor: the only privileged, long-lived owner of kernel state.

Start-up, in the order that never loses a packet that could be kept:
  1. load one rr_redirect instance per netdev, mark the owned queues
     (no sockets yet, so the configured fallback applies), attach;
  2. create the shared UMEM + control area, the AF_XDP sockets (the first
     registers the UMEM, the rest share it with their own FILL/COMPLETION
     pair), the forwarding table;
  3. spawn one pinned worker per (netdev, queue) and wait until each has
     primed its FILL ring and reports RUNNING;
  4. only then put each socket into its queue's XSKMAP slot: packets flow.
Stop runs the same steps backwards: stop redirecting first, then stop the
workers, detach, close sockets, unmap.

The loop: wait (signals via a self-pipe) with a timeout, reap dead
workers, replace dead or hung ones with backoff on the SAME socket (the
kernel lets a fresh process map a bound socket's rings again), repeat.
"""
from __future__ import annotations

import enum
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from . import exitcodes
from .config import Config, WorkerPlan, WorkersConfig, plan_workers
from .oserrors import errname

log = logging.getLogger("xdpd.supervisor")

WORKER_BUDGET_US = 200_000          # a worker returns to Python at least this often
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
HEARTBEAT_TIMEOUT_S = 5.0
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class WorkerState(enum.Enum):
    STOPPED = "stopped"     # not running, not wanted to run
    STARTING = "starting"   # spawned, not yet RUNNING in shared memory
    RUNNING = "running"     # forwarding
    BACKOFF = "backoff"     # died; waiting before the next start
    FATAL = "fatal"         # died too often while starting; given up


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived while starting; start() undoes what it did."""


class SetupError(Exception):
    """A start-up step failed; carries the exit code for the CLI."""

    def __init__(self, message: str, code: int = exitcodes.OSERR):
        super().__init__(message)
        self.code = code


@dataclass
class Worker:
    id: int
    plan: WorkerPlan
    netdev_index: int
    socket: object                  # xsk.XdpSocket
    state: WorkerState = WorkerState.STOPPED
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    next_start: float = 0.0

    @property
    def name(self) -> str:
        return self.plan.name


@dataclass
class Interface:
    name: str
    index: int
    ifindex: int
    program: object                 # bpf.XdpProgram
    xdp_mode: str = ""
    queues: list[int] = field(default_factory=list)     # owned rx queues
    rx_queues: int = 0                                  # all rx queues of the netdev


class SystemOps:
    """Everything the supervisor asks of the OS, behind one object, so that
    unit tests can hand the supervisor a fake (supervisord's DummyOptions)."""

    def __init__(self, host=None):
        from .netdev import Host
        self.host = host or Host()

    def load_program(self, netdev: str):
        from .bpf import XdpProgram
        return XdpProgram.load(name=netdev)

    def create_umem(self, geometry, hugepages: str):
        from .shared_umem import SharedUmem
        return SharedUmem(geometry, hugepages)

    def create_socket(self, netdev: str, ifindex: int, queue: int):
        from .xsk import XdpSocket
        return XdpSocket(netdev, ifindex, queue)

    def process_memory(self, pid: int) -> dict[str, int] | None:
        """Resident (rss) and unique (uss: not shared with any other process)
        bytes of a process; None if it is gone."""
        import psutil
        try:
            info = psutil.Process(pid).memory_full_info()
        except (psutil.Error, OSError):
            return None
        return {"rss": info.rss, "uss": info.uss}

    def eventfd(self) -> int:
        return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def close_fd(self, fd: int) -> None:
        os.close(fd)

    def spawn(self, args: list[str], stdin_text: str, pass_fds: tuple[int, ...]):
        """Start a process; returns a Popen (pid, poll, send_signal, wait, kill)."""
        proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                                pass_fds=pass_fds, close_fds=True, text=True)
        proc.stdin.write(stdin_text)
        proc.stdin.close()
        return proc


def compile_table(config: Config, interfaces: list[Interface],
                  workers: list[Worker]) -> list[dict | None]:
    """The YAML rules as the flat per-ingress-netdev table the fast path reads."""
    by_netdev = {i.name: i for i in interfaces}
    table: list[dict | None] = []
    for iface in interfaces:
        rule = config.rule_for(iface.name)
        if rule is None:
            table.append(None)              # counted as no_rule
        elif rule.action == "drop":
            table.append({"action": "drop"})
        else:
            egress = [w.id for w in workers if w.plan.netdev == by_netdev[rule.to].name]
            table.append({"action": "forward", "egress": egress,
                          "set_dst_mac": rule.set_dst_mac, "set_src_mac": rule.set_src_mac,
                          "swap_macs": rule.swap_macs})
    return table


class Supervisor:
    def __init__(self, config: Config, ops: SystemOps | None = None):
        self.config = config
        self.ops = ops or SystemOps()
        self.host = self.ops.host
        self.interfaces: list[Interface] = []
        self.workers: list[Worker] = []
        self.umem = None
        self.zero_copy = False
        self.eventfds: list[int] = []
        self.metrics_server = None
        self.ready = False
        self.lock = threading.Lock()      # workers' process fields vs the metrics thread
        self._stop = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- start-up ---------------------------------------------------------

    def start(self) -> None:
        """Set everything up, in order; on any failure, or a stop requested
        meanwhile (checked between steps, see install_signal_handlers),
        undo what was done and raise."""
        plans = plan_workers(self.config, self.host)
        self._check_napi_placement(plans)
        try:
            for step in (lambda: self._load_programs(plans),
                         lambda: self._create_umem_and_sockets(plans),
                         self._write_table, self._spawn_all, self._wait_running,
                         self._open_queues, self._start_metrics):
                if self._stop:
                    raise StopRequested()
                step()
        except BaseException:
            self.stop()
            raise
        self._log_worker_memory()
        log.info("forwarding: %d workers on %s (%s, %s mode)", len(self.workers),
                 ", ".join(f"{i.name} [{i.xdp_mode}]" for i in self.interfaces),
                 "UMEM %d frames x %d B" % (self.umem.capacity, self.config.umem.frame_size),
                 "zero-copy" if self.zero_copy else "copy")
        self.ready = True

    def _log_worker_memory(self) -> None:
        # rss counts the pages of the shared UMEM and control area a worker
        # has touched; uss is what the worker alone costs (its interpreter).
        for w in self.workers:
            mem = self.ops.process_memory(w.proc.pid) if w.proc else None
            if mem:
                log.info("%s: pid %d rss %.1f MiB, unique %.1f MiB", w.name, w.proc.pid,
                         mem["rss"] / 2**20, mem["uss"] / 2**20)

    def _check_napi_placement(self, plans) -> list[str]:
        """Warn about a worker pinned to the CPU that runs its queue's NAPI
        poll (the queue's IRQ CPU): the two take turns on one core, and a
        spinning or busy-polling worker starves the NAPI poll it waits for."""
        warnings = []
        w = self.config.workers
        polling = w.idle == "spin" or w.busy_poll
        for plan in plans:
            cpus = self.host.queue_irq_cpus(plan.netdev, plan.queue)
            if plan.cpu not in cpus:
                continue
            what = ("it spins, so the NAPI poll only runs when the scheduler preempts it "
                    "and the rx ring overflows" if polling else
                    "the worker and the NAPI poll take turns on one core")
            warnings.append(f"{plan.name}: worker CPU {plan.cpu} also takes the queue's "
                            f"interrupts (NAPI); {what}. Pin the worker elsewhere "
                            "(workers.cpus) or move the IRQ (/proc/irq/N/smp_affinity_list)")
        for text in warnings:
            log.warning("%s", text)
        return warnings

    def _load_programs(self, plans) -> None:
        from .bpf import BpfError
        for index, iface_cfg in enumerate(self.config.interfaces):
            queues = [p.queue for p in plans if p.netdev == iface_cfg.name]
            ifindex = self.host.ifindex(iface_cfg.name)
            try:
                prog = self.ops.load_program(iface_cfg.name)
            except BpfError as e:
                raise SetupError(f"load rr_redirect for {iface_cfg.name}: {e}") from None
            iface = Interface(iface_cfg.name, index, ifindex, prog, queues=queues,
                              rx_queues=self.host.rx_queue_count(iface_cfg.name))
            self.interfaces.append(iface)
            for q in queues:
                prog.set_queue(q, owned=True, fallback=iface_cfg.fallback)
            try:
                iface.xdp_mode = prog.attach(ifindex, iface_cfg.name, iface_cfg.xdp_mode)
            except BpfError as e:
                raise SetupError(str(e)) from None
            log.info("%s: rr_redirect attached (%s), queues %s", iface.name,
                     iface.xdp_mode, ",".join(map(str, queues)))

    def _zero_copy_choices(self) -> list[bool]:
        # Copy vs zero-copy is a property of the shared UMEM (the kernel makes
        # every sharing socket inherit the owner's mode), so decide it once.
        modes = {i.zero_copy for i in self.config.interfaces}
        if "off" in modes:
            if "on" in modes:
                raise SetupError("interfaces mix zero_copy: on and off, but all sockets "
                                 "share one UMEM and so one mode; make them agree",
                                 exitcodes.CONFIG)
            return [False]
        if modes == {"on"}:
            return [True]
        return [True, False]

    def _create_umem_and_sockets(self, plans) -> None:
        from .shared_umem import UmemGeometry
        from .xsk import RingSizes, XskError
        geo = UmemGeometry(len(plans), self.config.umem.frames_per_worker,
                           self.config.umem.frame_size)
        try:
            self.umem = self.ops.create_umem(geo, self.config.umem.hugepages)
        except OSError as e:
            raise SetupError(f"allocate UMEM ({geo.size} bytes) and control area: {e}") from None
        log.info("UMEM %.1f MiB (%d frames x %d B) on %s; control area %.1f MiB",
                 geo.size / 2**20, geo.frames, geo.frame_size, self.umem.backing,
                 self.umem.ctl_region.size / 2**20)
        r = self.config.rings
        self.ring_sizes = RingSizes(r.rx, r.tx, r.fill, r.completion)
        choices = self._zero_copy_choices()
        for n, zc in enumerate(choices):
            try:
                sockets = self._bind_sockets(plans, zc)
                break
            except XskError as e:
                if n + 1 < len(choices):
                    log.info("zero-copy not available (%s: %s); using copy mode for "
                             "all sockets", e.what, errname(e.errno))
                    continue
                raise SetupError(str(e)) from None
        self.zero_copy = choices[n]
        index = {i.name: i.index for i in self.interfaces}
        for wid, (plan, sock) in enumerate(zip(plans, sockets)):
            self.workers.append(Worker(wid, plan, index[plan.netdev], sock))
            self.umem.control.set_worker(wid, index[plan.netdev], plan.queue,
                                         self.host.ifindex(plan.netdev))
        self.eventfds = [self.ops.eventfd() for _ in plans]

    def _bind_sockets(self, plans, zero_copy: bool) -> list:
        sockets: list = []
        try:
            for plan in plans:
                sock = self.ops.create_socket(plan.netdev, self.host.ifindex(plan.netdev),
                                              plan.queue)
                sockets.append(sock)
                if len(sockets) == 1:
                    sock.register_umem(self.umem.umem.addr, self.umem.geometry.size,
                                       self.umem.geometry.frame_size)
                sock.set_rings(self.ring_sizes)
                sock.bind(zero_copy=zero_copy, shared_with=sockets[0] if len(sockets) > 1 else None)
                self._set_tx_budget(sock, first=len(sockets) == 1)
                if self.config.workers.busy_poll:
                    sock.set_busy_poll(self.config.workers.busy_poll_usecs,
                                       self.config.workers.busy_poll_budget)
        except BaseException:
            for s in sockets:
                s.close()
            raise
        return sockets

    def _set_tx_budget(self, sock, first: bool) -> None:
        budget = self.config.workers.tx_budget
        if budget == 0:
            return
        explicit = budget != "auto"
        if not explicit:
            budget = min(WorkersConfig.AUTO_TX_BUDGET, self.ring_sizes.tx)
            if budget < 32:
                return
        if not sock.set_tx_budget(budget) and first:
            if explicit:
                log.warning("workers.tx_budget: this kernel has no XDP_MAX_TX_SKB_BUDGET "
                            "(Linux 6.17+); sendto() keeps sending at most 32 per call")
            else:
                log.debug("no XDP_MAX_TX_SKB_BUDGET in this kernel; copy-mode TX budget "
                          "stays at 32 per sendto()")

    def _write_table(self) -> None:
        table = compile_table(self.config, self.interfaces, self.workers)
        self.generation = self.umem.control.write_table(table)

    # -- workers ----------------------------------------------------------

    def worker_spec(self, w: Worker):
        from .worker import WorkerSpec
        geo = self.umem.geometry
        r = self.ring_sizes
        return WorkerSpec(
            id=w.id, netdev=w.plan.netdev, queue=w.plan.queue, cpu=w.plan.cpu,
            xsk_fd=w.socket.fd, umem_fd=self.umem.umem.fd, umem_size=self.umem.umem.size,
            control_fd=self.umem.ctl_region.fd, control_size=self.umem.ctl_region.size,
            eventfds=tuple(self.eventfds), rings=(r.rx, r.tx, r.fill, r.completion),
            batch_size=self.config.workers.batch_size,
            spin=self.config.workers.idle == "spin",
            busy_poll=self.config.workers.busy_poll,
            budget_us=WORKER_BUDGET_US, parent_pid=os.getpid())

    def spawn_worker(self, w: Worker) -> None:
        spec = self.worker_spec(w)
        proc = self.ops.spawn(["-m", "xdpd.worker", w.name], spec.to_json() + "\n",
                              spec.fds())
        with self.lock:
            w.proc = proc
            w.started_at = time.monotonic()
            w.state = WorkerState.STARTING   # STOPPED/BACKOFF -> STARTING: spawned
        log.info("%s: spawned pid %d on CPU %d", w.name, proc.pid, w.plan.cpu)

    def _spawn_all(self) -> None:
        for w in self.workers:
            self.spawn_worker(w)

    def _worker_reports(self, w: Worker) -> int:
        return self.umem.control.worker_liveness(w.id)[2]

    def _wait_running(self) -> None:
        from . import _fastpath
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(self.workers)
        while pending:
            for w in list(pending):
                if w.proc.poll() is not None:
                    raise SetupError(f"worker {w.name} exited with status {w.proc.returncode} "
                                     "during start-up; see its messages above")
                if self._worker_reports(w) == _fastpath.STATE_RUNNING:
                    w.state = WorkerState.RUNNING   # STARTING -> RUNNING: FILL primed
                    pending.remove(w)
            if pending and time.monotonic() > deadline:
                raise SetupError("workers did not start within %.0f s: %s"
                                 % (START_TIMEOUT_S, ", ".join(w.name for w in pending)))
            if pending and self._stop:
                raise StopRequested()
            if pending:
                time.sleep(0.01)

    def _open_queues(self) -> None:
        """Socket into XSKMAP: from here on the queue's packets go to its worker."""
        for w in self.workers:
            iface = self.interfaces[w.netdev_index]
            iface.program.set_socket(w.plan.queue, w.socket.fd)

    def _close_queues(self) -> None:
        for w in self.workers:
            iface = self.interfaces[w.netdev_index]
            try:
                iface.program.clear_socket(w.plan.queue)
            except OSError as e:
                log.warning("%s: removing socket from XSKMAP failed: %s", w.name, e)

    def _start_metrics(self) -> None:
        listen = self.config.metrics.listen
        if listen is None:
            return
        from .metrics import serve
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
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _on_sigchld(self, signum, frame) -> None:
        try:
            os.write(self._wake_w, b"c")
        except OSError:
            pass

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT only set a flag (and wake the main loop); start()
        and run_forever() act on it.  A handler that raised instead could
        fire inside a ctypes callback (libbpf's log function), where the
        exception is dropped and the stop lost."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGCHLD, self._on_sigchld)

    def run_forever(self) -> None:
        self.install_signal_handlers()
        while not self._stop:
            select.select([self._wake_r], [], [], self._next_timeout())
            try:
                while os.read(self._wake_r, 64):
                    pass
            except BlockingIOError:
                pass
            if self._stop:
                break
            self.reap_workers()
            self.replace_workers()

    def _next_timeout(self) -> float:
        """Wake at least every 0.5 s, and in time for the next restart."""
        now = time.monotonic()
        due = [w.next_start - now for w in self.workers if w.state == WorkerState.BACKOFF]
        return max(0.0, min([0.5] + due))

    def reap_workers(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.proc is None or w.proc.poll() is None:
                continue
            lived = now - w.started_at
            code = w.proc.returncode
            with self.lock:
                w.proc = None
                w.quick_deaths = w.quick_deaths + 1 if lived < 5.0 else 0
                if w.quick_deaths > len(BACKOFF_S):
                    w.state = WorkerState.FATAL   # BACKOFF -> FATAL: kept dying at start
                    log.error("%s: died %d times within 5 s of starting; giving up on it "
                              "(its queue falls back to the kernel)", w.name, w.quick_deaths)
                    continue
                w.state = WorkerState.BACKOFF     # RUNNING/STARTING -> BACKOFF: died
                delay = BACKOFF_S[min(w.quick_deaths, len(BACKOFF_S)) - 1] if w.quick_deaths else 0
                w.next_start = now + delay
            log.warning("%s: exited (status %s) after %.1f s; restarting in %.1f s",
                        w.name, code, lived, delay)

    def replace_workers(self) -> None:
        from . import _fastpath
        now = time.monotonic()
        for w in self.workers:
            if w.state == WorkerState.BACKOFF and now >= w.next_start:
                w.restarts += 1
                self.spawn_worker(w)
            elif w.state == WorkerState.STARTING and \
                    self._worker_reports(w) == _fastpath.STATE_RUNNING:
                w.state = WorkerState.RUNNING     # STARTING -> RUNNING
            elif w.state == WorkerState.RUNNING:
                beat = self.umem.control.worker_liveness(w.id)[0]
                if beat and time.monotonic_ns() - beat > HEARTBEAT_TIMEOUT_S * 1e9:
                    log.warning("%s: no heartbeat for %.0f s; killing it", w.name,
                                HEARTBEAT_TIMEOUT_S)
                    self.kill_worker(w, signal.SIGKILL)

    def kill_worker(self, w: Worker, sig=signal.SIGTERM) -> None:
        if w.proc is not None and w.proc.poll() is None:
            try:
                w.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    # -- stop -------------------------------------------------------------

    def stop(self) -> None:
        """Undo everything start() did, in reverse; safe on a partial start."""
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
        self._close_queues()
        for w in self.workers:
            self.kill_worker(w)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s: did not stop in %.0f s; killing it", w.name, STOP_TIMEOUT_S)
                w.proc.kill()
                w.proc.wait()
            w.proc = None
            w.state = WorkerState.STOPPED         # * -> STOPPED: supervisor stopping
        for iface in self.interfaces:
            try:
                iface.program.close()             # detaches only if still ours
            except OSError as e:
                log.warning("%s: %s", iface.name, e)
        self.interfaces = []
        for w in self.workers:
            w.socket.close()
        self.workers = []
        for fd in self.eventfds:
            self.ops.close_fd(fd)
        self.eventfds = []
        if self.umem is not None:
            self.umem.close()
            self.umem = None
        self.ready = False
