"""The supervisor: the only privileged, long-lived owner of kernel state.

Start-up, in the order that never loses a packet that could be kept:
  0. read the record of what a previous xdpd attached (runstate.py): refuse
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

Reload (reload.py computes the diff) in the order that keeps packets:
  1. new interfaces: program loaded and attached, queues owned (fallback),
     pass rules written;
  2. new workers: sockets bound to the shared UMEM in free slots, spawned,
     RUNNING;
  3. changed fallbacks and pass_to_kernel rules (map writes, no reattach);
     the new forwarding table, in which removed workers are no egress;
     every worker switches between two batches and acknowledges it;
  4. new sockets into XSKMAP: their queues flow;
  5. removed queues: disowned and out of XSKMAP (the kernel takes them
     back), their workers drained in two steps (worker.py), stopped, their
     sockets closed and slots reset;
  6. removed interfaces detached; the final table.
Steering of a new interface is applied before step 1; that of an interface
that stays changes after step 2 (a new rule may send a flow to a queue
added there; until step 4 it gets the fallback) and so before step 5 (a
rule for a queue being removed goes first); that of a removed interface is
undone after step 6.
"""
from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace

from xdpd import __version__, exitcodes
from xdpd.config.file import read_config_file
from xdpd.config.model import (VLAN_PROTOS, Config, ConfigError, InterfaceConfig, WorkerPlan,
                               WorkersConfig)
from xdpd.config.plan import check_host, plan_workers
from xdpd.config.schema import parse_config
from xdpd.isolated import python_argv
from xdpd.control.workers import DirectSocket, Worker, WorkerState, worker_rule_counts
from xdpd.kernel.errors import errname

log = logging.getLogger("xdpd.supervisor")

WORKER_BUDGET_US = 200_000          # a worker returns to Python at least this often
# workers.idle: adaptive: the longest a worker keeps looking for work after
# work before it sleeps (the budget it learns stays below; _fastpath.c,
# "Adaptive spinning"); measured in docs/PERFORMANCE.md
ADAPTIVE_SPIN_MAX_US = 50
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
HEARTBEAT_TIMEOUT_S = 5.0
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
QUICK_DEATH_S = 1.0                 # died sooner after its start: a start-up failure
STANDBY_RETRY_S = 1.0               # a standby that died is replaced after this
TABLE_ACK_TIMEOUT_S = 2.0           # every worker switches tables within this
DRAIN_TIMEOUT_S = 5.0               # per drain step of a removed worker
REBIND_TIMEOUT_S = 2.0              # a just-closed queue's socket is released async
WATCHDOG_FRESH_S = 1.0              # heartbeats older than this stop the watchdog
RATE_WINDOW_S = 1.0                 # status rates: over about this long
SPAWN_RETRY_S = 0.5                 # a spawn the OS refused (EMFILE, EAGAIN) is retried
ERROR_LOG_S = 10.0                  # an internal error is logged at most this often
LOOP_ERROR_PAUSE_S = 0.05           # after a failed loop turn: no busy spin
# where an OSError is counted and survived (xdpd_internal_errors_total{where}):
# the spawns, the metrics server's accept, the watchdog ping, each step of the
# loop and the loop itself
INTERNAL_ERROR_PLACES = ("spawn", "spawn_standby", "metrics", "watchdog", "reap", "replace",
                         "reload", "control", "sample", "loop", "signal")
RELOAD_RESULTS = ("applied", "unchanged", "invalid", "refused", "failed")
READ_ONLY_COMMANDS = ("status",)    # what control.status_group's members may ask
STATUS_SCHEMA = 1
MAX_NETDEVS = 64                    # FP_MAX_NETDEVS: forwarding table rows
MAX_DIRECT = 8                      # FP_MAX_DIRECT: direct sockets per worker
# The longest frame an egress takes: its MTU plus the Ethernet header and
# one VLAN tag (what veth and most drivers accept; longer frames would be
# dropped silently by the kernel after TX, so the fast path counts them as
# too_long instead).
L2_OVERHEAD = 14 + 4


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived while starting; start() undoes what it did."""


class SetupError(Exception):
    """A start-up step failed; carries the exit code for the CLI."""

    def __init__(self, message: str, code: int = exitcodes.OSERR):
        super().__init__(message)
        self.code = code


@dataclass
class Interface:
    name: str
    index: int
    ifindex: int
    program: object                 # bpf.XdpProgram
    xdp_mode: str = ""
    queues: list[int] = field(default_factory=list)     # owned rx queues
    rx_queues: int = 0                                  # all rx queues of the netdev
    config: InterfaceConfig | None = None
    kind: str = ""          # rtnetlink kind: "veth", "tun", ...; "" for a NIC

    @property
    def completes_checksums(self) -> bool:
        from xdpd.kernel.netdev import completes_checksums
        return completes_checksums(self.config.checksum if self.config else "auto", self.kind)


class SystemOps:
    """Everything the supervisor asks of the OS, behind one object, so that
    unit tests can hand the supervisor a fake (supervisord's DummyOptions)."""

    def __init__(self, host=None):
        from xdpd.kernel.netdev import Host
        self.host = host or Host()

    def load_program(self, netdev: str):
        from xdpd.kernel.xdp_program import XdpProgram
        return XdpProgram.load(name=netdev)

    def create_umem(self, geometry, hugepages: str):
        from xdpd.datapath.umem import SharedUmem
        return SharedUmem(geometry, hugepages)

    def create_socket(self, netdev: str, ifindex: int, queue: int):
        from xdpd.kernel.xsk import XdpSocket
        return XdpSocket(netdev, ifindex, queue)

    def query_xdp(self, ifindex: int) -> dict:
        """The XDP programs attached to ifindex (bpf.query_xdp)."""
        from xdpd.kernel.libbpf import query_xdp
        return query_xdp(ifindex)

    def prog_info(self, prog_id: int) -> tuple[str, str]:
        """(name, tag) of a loaded BPF program (bpf.prog_info)."""
        from xdpd.kernel.libbpf import prog_info
        return prog_info(prog_id)

    def detach_xdp(self, ifindex: int, mode: str, prog_id: int) -> None:
        """Detach program prog_id from ifindex if it is still the one there."""
        from xdpd.kernel.libbpf import detach_xdp
        detach_xdp(ifindex, mode, prog_id)

    def ethtool(self):
        """The ethtool requests steering makes (ethtool.Ethtool)."""
        from xdpd.kernel.ethtool import Ethtool
        return Ethtool()

    def process_lineage(self, pid: int) -> list[int] | None:
        """pid and its ancestors' pids; None if they cannot be read (pid
        gone, hidden by hidepid=, or 0: not in our pid namespace)."""
        import psutil
        if pid <= 0:
            return None
        try:
            return [pid, *(p.pid for p in psutil.Process(pid).parents())]
        except (psutil.Error, OSError):
            return None

    def eventfd(self) -> int:
        return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def close_fd(self, fd: int) -> None:
        os.close(fd)

    def spawn(self, args: list[str], stdin_text: str, pass_fds: tuple[int, ...],
              standby: bool = False):
        """Start `python -m MODULE ARGS...` (args: [MODULE, *ARGS]), isolated
        from the current directory and PYTHON* variables (isolated.py);
        returns a Popen (pid, poll, send_signal, wait, kill).  A standby
        keeps its stdin open: go() starts it, closing it dismisses it."""
        ready_r = ready_w = None
        if standby:                     # it says on this pipe when it waits for "go"
            ready_r, ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            args = [*args, "--ready-fd", str(ready_w)]
            pass_fds = (*pass_fds, ready_w)
        try:
            proc = subprocess.Popen(python_argv(*args), stdin=subprocess.PIPE,
                                    pass_fds=pass_fds, close_fds=True, text=True)
        except BaseException:
            if ready_r is not None:
                os.close(ready_r)
            raise
        finally:
            if ready_w is not None:
                os.close(ready_w)
        proc.ready_fd = ready_r
        proc.ready = not standby
        proc.stdin.write(stdin_text)
        if standby:
            proc.stdin.flush()
        else:
            proc.stdin.close()
        return proc

    def standby_ready(self, proc) -> bool:
        """Whether a standby got as far as waiting for "go" (it wrote a line
        on its ready pipe); until then "go" waits behind its start-up."""
        if not proc.ready and proc.ready_fd is not None:
            try:
                proc.ready = bool(os.read(proc.ready_fd, 64))
            except BlockingIOError:
                return False
            except OSError:
                pass
            os.close(proc.ready_fd)         # the line, or EOF: it died before it
            proc.ready_fd = None
        return proc.ready

    def release(self, proc) -> None:
        """Close what spawn() kept for a process that is gone."""
        if getattr(proc, "ready_fd", None) is not None:
            os.close(proc.ready_fd)
            proc.ready_fd = None

    def go(self, proc) -> bool:
        """Tell a standby to take over; False if it is gone."""
        try:
            proc.stdin.write("go\n")
            proc.stdin.close()
            return True
        except (OSError, ValueError):        # BrokenPipeError; ValueError: closed
            return False


def compile_table(config: Config, interfaces: list[Interface], workers: list[Worker],
                  old_config: Config | None = None,
                  exclude: frozenset[int] = frozenset(),
                  mtus: dict[str, int] | None = None) -> list[list[dict] | None]:
    """The YAML rules as the flat table the fast path reads, indexed by
    the netdev index each worker was given (holes: None): per ingress
    netdev its rules in the file's order, each with its match (struct
    fp_match) and its index in `forward` (the metrics' rule label).
    `mtus` (by netdev) limits the frame length a forward rule lets through.

    During a reload, an interface being removed keeps its rules, egress and
    all, from old_config (what its worker still has on the RX ring goes
    where it always went); in the new rules the workers in `exclude` (being
    removed) are nobody's egress."""
    from xdpd.kernel.xdp_program import match_to_c
    names = {i.name for i in config.interfaces}
    table: list[list[dict] | None] = \
        [None] * (max((i.index for i in interfaces), default=-1) + 1)
    for iface in interfaces:
        source = config if iface.name in names else old_config
        rules = source.rules_for(iface.name) if source else ()
        if not rules:
            continue                        # counted as no_rule
        gone = exclude if source is config else frozenset()
        compiled = []
        for rule in rules:
            entry = {"action": rule.action, "id": rule.index,
                     "match": bytes(match_to_c(rule.match)) if rule.match else None}
            if rule.action == "forward":
                mtu = (mtus or {}).get(rule.to)
                entry.update(
                    egress=[w.id for w in workers if w.plan.netdev == rule.to and w.id not in gone],
                    set_dst_mac=rule.set_dst_mac, set_src_mac=rule.set_src_mac,
                    swap_macs=rule.swap_macs, max_len=mtu + L2_OVERHEAD if mtu else None,
                    push_vlan=rule.push_vlan, vlan_proto=VLAN_PROTOS[rule.vlan_proto],
                    pop_vlan=rule.pop_vlan)
            compiled.append(entry)
        table[iface.index] = compiled
    return table


def resolve_worker_user(workers) -> tuple[int, int]:
    """(uid, gid) of workers.user and workers.group (default: the user's
    primary group); SetupError naming the key when either is missing or
    is root's."""
    try:
        pw = pwd.getpwnam(workers.user)
    except KeyError:
        raise SetupError(f"workers.user: no user {workers.user!r} on this host; create it "
                         f"(useradd --system --no-create-home --shell /usr/sbin/nologin "
                         f"{workers.user}) or name another", exitcodes.CONFIG) from None
    gid = pw.pw_gid
    if workers.group is not None:
        try:
            gid = grp.getgrnam(workers.group).gr_gid
        except KeyError:
            raise SetupError(f"workers.group: no group {workers.group!r} on this host; "
                             f"create it (groupadd --system {workers.group}) or remove the "
                             f"key to use {workers.user}'s primary group",
                             exitcodes.CONFIG) from None
    if pw.pw_uid == 0:
        raise SetupError(f"workers.user: {workers.user!r} has uid 0; name an unprivileged "
                         f"user", exitcodes.CONFIG)
    if gid == 0:
        raise SetupError(f"workers.group: gid 0 is root's group; name an unprivileged group",
                         exitcodes.CONFIG)
    return pw.pw_uid, gid


class Supervisor:
    _status_gid: int | None = None      # control.status_group's gid
    # The record of what this supervisor attached (runstate.py), set up by
    # start() once what a dead xdpd left is removed; stop() removes it.
    _record_path: str | None = None
    _record_owner = None                # runstate.Owner: this process
    _record_dir_made = False
    _detach_failed: tuple = ()          # Interfaces still attached after stop: kept on record
    steering = None                     # steering.Steering: what this xdpd changed on NICs

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
        self.eventfds: list[int] = []       # one per slot
        self.free_slots: list[int] = []     # slot ids no worker uses
        self.quarantined: set[int] = set()  # slots whose frames did not all come back
        # what workers gone since sent on a queue through their direct
        # sockets, by that queue's worker: [packets, bytes]
        self.direct_carried: dict[int, list[int]] = {}
        self.metrics_server = None
        self.control = None
        self.ready = False
        self.lock = threading.Lock()      # workers' process fields vs the metrics thread
        self.generation = 0               # of the configuration: 1 at start, +1 per reload
        self.table_generation = 0
        self.mtus: dict[str, int] = {}    # egress MTUs the table was written with
        self.started_wall = time.time()
        self.last_reload: dict | None = None
        self.last_reload_success = 0.0    # time.time() of the last applied reload
        self.reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self._samples: dict[int, list[tuple[float, int, int, int]]] = {}
        self._stop = False
        self._reload_requested = False
        self._child_exited = False          # SIGCHLD since the loop's last reaping
        self._unsignallable: set[int] = set()   # pids a signal was refused to (no CAP_KILL)
        self._next_watchdog = 0.0
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
        from xdpd.control.steering import check_steering
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
        log.info("forwarding: %d workers on %s (%s, %s mode)", len(self.workers),
                 ", ".join(f"{i.name} [{i.xdp_mode}]" for i in self.interfaces),
                 "UMEM %d frames x %d B" % (self.umem.capacity, self.config.umem.frame_size),
                 "zero-copy" if self.zero_copy else "copy")
        self.ready = True
        if self.notifier:
            self.notifier.ready(self._status_line())

    def _status_line(self) -> str:
        running = sum(w.state == WorkerState.RUNNING for w in self.workers)
        return (f"forwarding: {running}/{len(self.workers)} workers, "
                f"config generation {self.generation}")

    def _resolve_worker_user(self) -> None:
        """workers.user and workers.group as ids, before anything is set up:
        each worker and standby becomes that user (xdpd/privileges.py)."""
        self.worker_uid, self.worker_gid = resolve_worker_user(self.config.workers)

    def _log_worker_memory(self) -> None:
        # rss counts the pages of the shared UMEM and control area a worker
        # has touched; uss is what the worker alone costs (its interpreter).
        for w in self.workers:
            use = self.worker_usage(w.id, w.proc.pid) if w.proc else None
            if use:
                log.info("%s: pid %d rss %.1f MiB, unique %.1f MiB", w.name, w.proc.pid,
                         use["rss_bytes"] / 2**20, use["uss_bytes"] / 2**20)

    def worker_usage(self, wid: int, pid: int) -> dict[str, int] | None:
        """CPU time and memory that process pid in worker slot wid reported
        of itself (worker.Usage; its /proc is not ours to read), or None
        before its first report.  A worker's claim: for metrics and logs."""
        umem = self.umem
        if umem is None:
            return None
        use = umem.control.usage(wid)
        return use if use["pid"] == pid else None

    def _check_napi_placement(self, plans) -> list[str]:
        """Warn about a worker pinned to the CPU that runs its queue's NAPI
        poll (the queue's IRQ CPU): the two take turns on one core, and a
        spinning or busy-polling worker starves the NAPI poll it waits for."""
        from xdpd.control.doctor import napi_placement
        warnings = [f"{plan.name}: {finding}. {fix[0].upper()}{fix[1:]}"
                    for plan, finding, fix in napi_placement(self.config, plans, self.host)]
        for text in warnings:
            log.warning("%s", text)
        return warnings

    def _remove_what_a_dead_xdpd_left(self) -> None:
        """Detach what a killed xdpd with this control socket left attached
        (its record, runstate.py), then take the record over.

        Only a program the record names, and only while its netdev still
        has exactly that program: anything else is left alone, and logged.
        A record whose owner still runs is another xdpd: refuse."""
        from xdpd.control import recovery as runstate
        path = runstate.record_path(self.config.control.socket)
        try:
            self._record_dir_made = runstate.make_dir(path)
        except OSError as e:
            raise SetupError(e.strerror or str(e), exitcodes.CONFIG) from None
        try:
            record = runstate.read(path)
        except runstate.RecordError as e:
            try:
                runstate.quarantine(path, e, "nothing detached: check 'ip link' for XDP "
                                    "programs an earlier xdpd may have left")
            except OSError as err:
                raise SetupError(str(err)) from None
            record = None
        except OSError as e:
            raise SetupError(f"read {path} failed: {errname(e.errno)}") from None
        if record is not None:
            owner = record.owner
            if runstate.owner_alive(owner):
                raise SetupError(f"another xdpd (pid {owner.pid}) runs with control.socket "
                                 f"{self.config.control.socket} (its record: {path}); stop it "
                                 "first, or give this one another control.socket",
                                 exitcodes.CONFIG)
            if owner.boot_id != runstate.boot_id():
                log.info("%s: left by xdpd pid %d before the last boot; nothing it names "
                         "is attached", path, owner.pid)
            else:
                for a in record.attachments:
                    self._remove_left_program(a, owner.pid)
        runstate.remove(path)
        self._record_path, self._record_owner = path, runstate.Owner.me()
        self._undo_what_a_dead_xdpd_steered()

    def _undo_what_a_dead_xdpd_steered(self) -> None:
        """Undo the steering a killed xdpd's journal names (steering.py:
        only what is still as it set it), then keep a journal of our own."""
        from xdpd.control import steering
        path = steering.journal_path(self.config.control.socket)
        nic = self.ops.ethtool()
        try:
            steering.recover(path, nic)
        except steering.SteeringError as e:
            raise SetupError(str(e), exitcodes.CONFIG) from None
        except OSError as e:
            raise SetupError(f"undo the steering in {path}: {e}") from None
        self.steering = steering.Steering(nic, path, self._record_owner)

    def _apply_steering(self, ifaces=None) -> None:
        from xdpd.control.steering import SteeringError
        for iface_cfg in self.config.interfaces if ifaces is None else ifaces:
            if iface_cfg.steering.empty:
                continue
            try:
                self.steering.apply(iface_cfg)
            except SteeringError as e:
                raise SetupError(f"steering of {iface_cfg.name}: {e}") from None

    def _remove_left_program(self, a, pid: int) -> None:
        """Detach a dead xdpd's program from its netdev if it is still there."""
        from xdpd.kernel.xdp_program import PROG_NAME
        theirs = f"{PROG_NAME} (prog id {a.prog_id}) left attached by xdpd pid {pid} that died"
        try:
            cur = self.ops.query_xdp(a.ifindex)
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise SetupError(f"{a.netdev}: look for {theirs}: {e}") from None
            cur = {"prog_id": 0, "mode": None, "drv_prog_id": 0, "skb_prog_id": 0}
        ids = {"native": cur["drv_prog_id"], "generic": cur["skb_prog_id"]}
        mode = a.xdp_mode or next((m for m, i in ids.items() if i == a.prog_id), None)
        if ids.get(mode) != a.prog_id:
            now = (f"XDP program id {cur['prog_id']} ({cur['mode']}) is attached now"
                   if cur["prog_id"] else "no XDP program is attached now")
            log.warning("%s (ifindex %d): not removing anything: xdpd pid %d that died had "
                        "attached %s (prog id %d), but %s", a.netdev, a.ifindex, pid,
                        PROG_NAME, a.prog_id, now)
            return
        if a.prog_tag is not None:
            try:
                name, tag = self.ops.prog_info(a.prog_id)
            except OSError as e:
                if e.errno != errno.EPERM:
                    raise SetupError(f"{a.netdev}: look for {theirs}: {e}") from None
                # opening a program by id needs CAP_SYS_ADMIN, which the unit
                # does not grant: the attached id is all there is to compare
                log.info("%s: prog id %d's tag not checked (%s)", a.netdev, a.prog_id, e)
                name, tag = PROG_NAME, a.prog_tag
            if (name, tag) != (PROG_NAME, a.prog_tag):
                log.warning("%s (ifindex %d): not removing anything: prog id %d is %s "
                            "(tag %s) now, not the %s (tag %s) xdpd pid %d attached",
                            a.netdev, a.ifindex, a.prog_id, name or "unnamed", tag,
                            PROG_NAME, a.prog_tag, pid)
                return
        try:
            self.ops.detach_xdp(a.ifindex, mode, a.prog_id)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOENT, errno.ENODEV):   # changed meanwhile
                log.warning("%s: %s; left alone", a.netdev, e)
                return
            raise SetupError(f"{a.netdev}: remove {theirs}: {e}") from None
        log.info("%s: removed %s", a.netdev, theirs)

    def _write_record(self) -> None:
        """Put on file what is attached now (and what is being attached):
        what the next start removes if this process dies without detaching."""
        from xdpd.control import recovery as runstate
        if self._record_path is None:
            return
        attached = [*self.interfaces, *self._detach_failed]
        record = runstate.Record(self._record_owner, tuple(
            runstate.Attachment(i.name, i.ifindex, i.program.prog_id, i.xdp_mode or None,
                                i.program.prog_tag)
            for i in attached))
        try:
            runstate.write(self._record_path, record)
        except OSError as e:
            raise SetupError(f"write {self._record_path} (the XDP programs xdpd attached) "
                             f"failed: {errname(e.errno)}") from None

    def _close_record(self) -> None:
        """On stop: remove the record, or keep on it what could not be detached."""
        from xdpd.control import recovery as runstate
        if self._record_path is None:
            return
        try:
            if self._detach_failed:
                self._write_record()
                log.warning("%s: still attached; %s names them for the next start",
                            ", ".join(i.name for i in self._detach_failed), self._record_path)
                return
            runstate.remove(self._record_path)
        except (SetupError, OSError) as e:
            log.warning("%s", e)
            return
        if self._record_dir_made:
            runstate.remove_dir(self._record_path)
        self._record_path = None

    def _load_programs(self, plans) -> None:
        for iface_cfg in self.config.interfaces:
            self._add_interface(iface_cfg, [p.queue for p in plans if p.netdev == iface_cfg.name])

    def _add_interface(self, iface_cfg: InterfaceConfig, queues: list[int]) -> Interface:
        """Load rr_redirect for a netdev, own `queues` (no sockets yet: the
        fallback applies), attach.  The netdev gets the lowest free index
        in the forwarding table, kept for as long as it is configured."""
        from xdpd.kernel.libbpf import BpfError
        used = {i.index for i in self.interfaces}
        index = next(n for n in range(len(used) + 1) if n not in used)
        if index >= MAX_NETDEVS:
            raise SetupError(f"at most {MAX_NETDEVS} interfaces", exitcodes.CONFIG)
        ifindex = self.host.ifindex(iface_cfg.name)
        try:
            prog = self.ops.load_program(iface_cfg.name)
        except BpfError as e:
            raise SetupError(f"load rr_redirect for {iface_cfg.name}: {e}") from None
        iface = Interface(iface_cfg.name, index, ifindex, prog, queues=list(queues),
                          rx_queues=self.host.rx_queue_count(iface_cfg.name),
                          config=iface_cfg, kind=self._link_kind(iface_cfg.name))
        with self.lock:
            self.interfaces.append(iface)
        for q in queues:
            self._own_queue(iface, q)
        if iface_cfg.pass_to_kernel:
            prog.set_pass_rules(iface_cfg.pass_to_kernel)
        self._write_record()                  # before the attach: a kill in between is covered
        try:
            iface.xdp_mode = prog.attach(ifindex, iface_cfg.name, iface_cfg.xdp_mode)
        except BpfError as e:
            raise SetupError(str(e)) from None
        self._write_record()                  # with the mode the kernel accepted
        log.info("%s: rr_redirect attached (%s), queues %s", iface.name,
                 iface.xdp_mode, ",".join(map(str, queues)))
        self._say_checksums(iface)
        return iface

    def _link_kind(self, name: str) -> str:
        """The netdev's rtnetlink kind ("" for a NIC); "unknown" where
        netlink does not say, which `checksum: auto` treats as software."""
        from xdpd.kernel.netdev import NetdevError
        try:
            return self.host.link_kind(name)
        except NetdevError as e:
            log.warning("%s: link kind unknown (%s); checksum: auto completes partial "
                        "checksums on it", name, e)
            return "unknown"

    def _say_checksums(self, iface: Interface) -> None:
        """What xdpd does with partial checksums from this interface, and,
        where it leaves them, who sends them and the command that stops it."""
        mode = iface.config.checksum
        if iface.completes_checksums:
            log.info("%s: partial TCP/UDP checksums completed before forwarding (%s%s; "
                     "checksum: %s); frames whose checksum verifies are left as they are",
                     iface.name, iface.kind or "a NIC", "" if iface.kind else
                     ", completed as configured", mode)
            return
        if not iface.kind:
            return                          # a NIC: a wire sends no partial checksums
        from xdpd.kernel.netdev import partial_checksums_left
        what, fix = partial_checksums_left(self.host, iface.name, iface.kind)
        log.warning("%s: %s; %s", iface.name, what, fix)

    def _remove_interface(self, iface: Interface) -> None:
        try:
            iface.program.close()             # detaches only if still ours
            log.info("%s: rr_redirect detached", iface.name)
        except OSError as e:
            log.warning("%s: %s", iface.name, e)
            self._detach_failed = (*self._detach_failed, iface)
        with self.lock:
            self.interfaces.remove(iface)
        try:
            self._write_record()
        except SetupError as e:
            log.warning("%s", e)

    def interface(self, name: str) -> Interface:
        return next(i for i in self.interfaces if i.name == name)

    @staticmethod
    def _own_queue(iface: Interface, queue: int) -> None:
        """queue_conf for an owned queue: its fallback, and how many sockets
        share it (fanout) and how the program spreads packets over them."""
        cfg = iface.config
        iface.program.set_queue(queue, owned=True, fallback=cfg.fallback, fanout=cfg.fanout,
                                spread=cfg.fanout_spread)

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
        from xdpd.datapath.umem import UmemGeometry
        from xdpd.kernel.xsk import RingSizes, XskError
        # spare slots: workers a reload may add (the UMEM cannot grow)
        slots = len(plans) + self.config.umem.spare_workers
        geo = UmemGeometry(slots, self.config.umem.frames_per_worker,
                           self.config.umem.frame_size)
        try:
            self.umem = self.ops.create_umem(geo, self.config.umem.hugepages)
        except OSError as e:
            raise SetupError(f"allocate UMEM ({geo.size} bytes) and control area: {e}") from None
        log.info("UMEM %.1f MiB (%d frames x %d B, %d worker slots, %d spare) on %s; "
                 "control area %.1f MiB", geo.size / 2**20, geo.frames, geo.frame_size,
                 slots, slots - len(plans), self.umem.backing, self.umem.ctl_region.size / 2**20)
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
        for wid, (plan, sock) in enumerate(zip(plans, sockets)):
            self._add_worker(wid, plan, sock)
        for w in self.workers:
            self._open_direct(w)
        self._link_groups(self.workers)
        self.free_slots = list(range(len(plans), slots))
        self.eventfds = [self.ops.eventfd() for _ in range(slots)]

    def _add_worker(self, wid: int, plan: WorkerPlan, sock) -> Worker:
        iface = self.interface(plan.netdev)
        w = Worker(wid, plan, iface.index, sock)
        with self.lock:
            self.workers.append(w)
        return w

    def group(self, w: Worker) -> list[Worker]:
        """The workers sharing w's queue (fanout), the owner first; [w] alone
        without fanout."""
        return sorted((x for x in self.workers if x.plan.netdev == w.plan.netdev and
                       x.plan.queue == w.plan.queue), key=lambda x: x.plan.member)

    def _link_groups(self, workers: list[Worker]) -> None:
        """Tell the fast path each new worker's place (before it starts):
        its lane (which egress it picks), and in a fanout group the owner
        (FILL and COMPLETION rings) and, to the owner, its members."""
        for w in workers:
            group = self.group(w)
            owner = group[0]
            members = [x.id for x in group[1:]] if w is owner else []
            self.umem.control.set_worker(w.id, w.netdev_index, w.plan.queue,
                                         self.interface(w.plan.netdev).ifindex,
                                         lane=w.plan.lane, owner=owner.id, members=members,
                                         direct=[d.owner for d in w.direct])

    def _direct_targets(self, w: Worker) -> list[Worker]:
        """The queue owners w sends to on direct sockets: on each other
        interface, the owner of the queue w's lane picks there (as
        compile_table lists egress workers and the fast path picks one).
        None for a worker of an interface with fanout: its group's frames
        are lent by several workers (the fast path, "Direct transmission")."""
        iface = self.interface(w.plan.netdev)
        if not self.config.workers.direct_tx or (iface.config and iface.config.fanout > 1):
            return []
        targets: list[Worker] = []
        for other in self.interfaces:
            egress = [x for x in self.workers if x.plan.netdev == other.name]
            if other.name == w.plan.netdev or not egress:
                continue
            owner = self.group(egress[w.plan.lane % len(egress)])[0]
            if owner not in targets and len(targets) < MAX_DIRECT:
                targets.append(owner)
        return targets

    def _open_direct(self, w: Worker) -> None:
        """w's direct sockets, each a TX ring bound to its target's queue
        sharing that socket's rings.  One the kernel refuses is left out
        (logged): w then hands those packets to that queue's worker."""
        from xdpd.kernel.xsk import XskError
        for owner in self._direct_targets(w):
            sock = self.ops.create_socket(owner.plan.netdev,
                                          self.host.ifindex(owner.plan.netdev), owner.plan.queue)
            try:
                sock.set_tx_ring(self.ring_sizes.tx)
                sock.bind(zero_copy=self.zero_copy, shared_with=owner.socket)
                self._set_tx_budget(sock, first=False)
            except XskError as e:
                sock.close()
                log.warning("%s: no direct socket on %s (%s); hands those packets to its "
                            "worker instead", w.name, owner.name, e)
                continue
            except BaseException:
                sock.close()
                raise
            w.direct.append(DirectSocket(owner.id, owner.plan.netdev, owner.plan.queue, sock))

    def _bind_sockets(self, plans, zero_copy: bool) -> list:
        sockets: list = []
        owners: dict[tuple[str, int], object] = {}
        try:
            for plan in plans:
                owner = owners.get((plan.netdev, plan.queue)) if plan.member else None
                sockets.append(self._bound_socket(plan, zero_copy,
                                                  owner or (sockets[0] if sockets else None)))
                owners.setdefault((plan.netdev, plan.queue), sockets[-1])
        except BaseException:
            for s in sockets:
                s.close()
            raise
        return sockets

    def _setup_socket(self, sock, zero_copy: bool, shared_with) -> None:
        # a fanout member binds to its owner's socket (same netdev and
        # queue): it shares the owner's FILL and COMPLETION rings
        same_queue = shared_with is not None and (shared_with.netdev, shared_with.queue) == \
            (sock.netdev, sock.queue)
        sock.set_rings(self.ring_sizes, fill_completion=not same_queue)
        sock.bind(zero_copy=zero_copy, shared_with=shared_with)
        self._set_tx_budget(sock, first=shared_with is None)
        if self.config.workers.busy_poll:
            sock.set_busy_poll(self.config.workers.busy_poll_usecs,
                               self.config.workers.busy_poll_budget)

    def _new_socket(self, plan: WorkerPlan):
        """A socket for a worker a reload adds: bound with XDP_SHARED_UMEM
        to any running socket (the UMEM lives as long as one does), a
        fanout member to its owner's, added just before it."""
        owner = next((w.socket for w in self.workers if w.plan.netdev == plan.netdev and
                      w.plan.queue == plan.queue and w.plan.member == 0), None)
        if plan.member and owner is not None:
            return self._bound_socket(plan, self.zero_copy, owner)
        return self._bound_socket(plan, self.zero_copy, self.workers[0].socket)

    def _bound_socket(self, plan: WorkerPlan, zero_copy: bool, shared_with):
        """A socket bound to plan's queue: sharing shared_with's UMEM, or,
        without one, registering the UMEM.

        A queue whose socket was just closed (removed by the previous
        reload, or held by the workers of an xdpd that was killed) stays
        busy for a moment: the kernel releases the socket's buffer pool
        from a work queue, and bind() answers EBUSY until then."""
        from xdpd.kernel.xsk import XskError
        deadline = time.monotonic() + REBIND_TIMEOUT_S
        while True:
            sock = self.ops.create_socket(plan.netdev, self.host.ifindex(plan.netdev),
                                          plan.queue)
            try:
                if shared_with is None:
                    sock.register_umem(self.umem.umem.addr, self.umem.geometry.size,
                                       self.umem.geometry.frame_size)
                self._setup_socket(sock, zero_copy, shared_with)
                return sock
            except XskError as e:
                sock.close()
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
            except BaseException:
                sock.close()
                raise
            time.sleep(0.01)

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

    def _write_table(self, old_config: Config | None = None,
                     exclude: frozenset[int] = frozenset()) -> None:
        """Publish the forwarding table; wait until every running worker
        switched to it (they do between two batches), so that the next
        write cannot overwrite a table a worker is still reading."""
        self.mtus = self._egress_mtus()
        table = compile_table(self.config, self.interfaces, self.workers, old_config, exclude,
                              self.mtus)
        complete = [i.index for i in self.interfaces if i.completes_checksums]
        # a direct socket may be used while its queue's worker stays
        serving = {w.id for w in self.workers if w.id not in exclude}
        direct_ok = {w.id: sum(1 << j for j, d in enumerate(w.direct)
                               if d.socket is not None and d.owner in serving)
                     for w in self.workers if w.direct}
        self.table_generation = gen = self.umem.control.write_table(
            table, complete_checksums=complete, direct_ok=direct_ok)
        waiting = [w for w in self.workers if w.proc is not None and
                   w.state in (WorkerState.RUNNING, WorkerState.DRAINING)]
        for w in waiting:
            self._wake(w.id)
        deadline = time.monotonic() + TABLE_ACK_TIMEOUT_S
        while waiting:
            waiting = [w for w in waiting if w.proc.poll() is None and
                       self.umem.control.worker_liveness(w.id)[3] < gen]
            if not waiting:
                break
            if time.monotonic() > deadline:
                log.warning("table %d: not acknowledged within %.0f s by %s (hung? the "
                            "heartbeat check replaces it)", gen, TABLE_ACK_TIMEOUT_S,
                            ", ".join(w.name for w in waiting))
                break
            time.sleep(0.001)

    def _egress_mtus(self) -> dict[str, int]:
        """The MTU of every interface a rule forwards to, read whenever the
        table is written (start and reload)."""
        mtus = {}
        for iface in self.interfaces:
            try:
                mtus[iface.name] = self.host.mtu(iface.name)
            except OSError as e:
                log.warning("%s: cannot read the MTU (%s); frames of any length are "
                            "forwarded to it", iface.name, e)
        return mtus

    def _wake(self, wid: int) -> None:
        """Wake a worker sleeping in poll() (its eventfd), e.g. to switch tables."""
        try:
            os.write(self.eventfds[wid], (1).to_bytes(8, "little"))
        except (OSError, IndexError):
            pass

    # -- workers ----------------------------------------------------------

    def worker_spec(self, w: Worker):
        from xdpd.datapath.worker import WorkerSpec
        r = self.ring_sizes
        return WorkerSpec(
            id=w.id, netdev=w.plan.netdev, queue=w.plan.queue, cpu=w.plan.cpu,
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
            direct_fds=tuple(d.socket.fd if d.socket is not None else -1 for d in w.direct))

    def spawn_worker(self, w: Worker) -> None:
        """Start w's process: its standby takes over if it has one, else a
        fresh process.  Either maps the socket's rings and continues from the
        commit record its predecessor left (fastpath.h)."""
        standby, w.standby = w.standby, None
        ready = standby is not None and self.ops.standby_ready(standby)
        if standby is not None and standby.poll() is None and self.ops.go(standby):
            self.ops.release(standby)
            proc = standby
            # a standby still starting up is still the quickest way back
            how = "standby pid %d took over%s" % (
                standby.pid, "" if ready else " (it was still starting: a delay)")
        else:
            if standby is not None:
                self._reap_standby(w.name, standby)
            spec = self.worker_spec(w)
            proc = self.ops.spawn(["xdpd.datapath.worker", w.name],
                                  spec.to_json() + "\ngo\n", spec.fds())
            how = "spawned pid %d" % proc.pid
        with self.lock:
            w.proc = proc
            w.started_at = time.monotonic()
            w.started_wall = time.time()
            w.standby_after = w.started_at
            w.transition(WorkerState.STARTING)
        log.info("%s: %s on CPU %d", w.name, how, w.plan.cpu)

    def spawn_standby(self, w: Worker) -> None:
        spec = self.worker_spec(w)
        w.standby = self.ops.spawn(["xdpd.datapath.worker", w.name], spec.to_json() + "\n",
                                   spec.fds(), standby=True)
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
        from xdpd.datapath import _fastpath
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

    def _open_queues(self, workers: list[Worker]) -> None:
        """Socket into XSKMAP: from here on the queue's packets go to its worker."""
        for w in workers:
            self.interface(w.plan.netdev).program.set_socket(w.plan.queue, w.socket.fd,
                                                             member=w.plan.member)

    def _close_queues(self, workers: list[Worker], disown: bool = False) -> None:
        """Socket out of XSKMAP; with disown, the queue is no longer xdpd's
        either (first, so that it goes to the kernel, not to the fallback)."""
        for w in workers:
            iface = self.interface(w.plan.netdev)
            try:
                if disown:
                    iface.program.set_queue(w.plan.queue, owned=False)
                iface.program.clear_socket(w.plan.queue, member=w.plan.member)
            except OSError as e:
                log.warning("%s: removing socket from XSKMAP failed: %s", w.name, e)

    def _start_control(self) -> None:
        from xdpd.control.server import ControlServer
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
        from xdpd.control.metrics import serve
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
                            ("control", self._serve_control),
                            ("sample", self._sample_counters), ("watchdog", self._watchdog)):
            try:
                step()
            except OSError as e:
                self.note_internal_error(where, e)

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
            booted = w.state == WorkerState.RUNNING or self._reports_running(w)
            with self.lock:
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
            self.note_internal_error("signal", OSError(
                e.errno, f"{signal.Signals(sig).name} to pid {proc.pid}: signalling "
                         f"workers.user's processes needs CAP_KILL (keep it in the unit's "
                         f"CapabilityBoundingSet=)"))
            return False
        return True

    # -- reload -------------------------------------------------------------

    def reload(self, path: str | None = None, text: str | None = None) -> tuple[bool, dict, str | None]:
        """Apply a new configuration: the file xdpd runs with, or `text`
        (named `path` in messages) from `xdpd reload --config`.  Returns
        (ok, result, error); the running configuration stays on any error."""
        from xdpd.config.diff import Refused
        started = time.monotonic()
        source = path or self.config.source
        if self.notifier:
            self.notifier.reloading()
        changes: list[str] = []
        try:
            if text is None:
                text = read_config_file(source)
            new = parse_config(text, source=source)
            # `xdpd reload --config X` applies X once: the daemon's own file
            # stays the one a later reload (or SIGHUP) reads
            new = replace(new, source=self.config.source)
            check_host(new, self.host)
            if any(not i.steering.empty for i in new.interfaces):
                from xdpd.control.steering import check_steering
                check_steering(new, self.ops.ethtool())
            plan = self._plan_reload(new)
            changes = plan.summary()
            if plan.empty and self._egress_mtus() != self.mtus:
                self._write_table()
                changes = ["egress MTU changed: " + ", ".join(
                    f"{n} {self.mtus.get(n)}" for n in sorted(self.mtus))]
                outcome, message = "applied", changes[0]
            elif plan.empty:
                outcome, message = "unchanged", "nothing to change"
            else:
                self._apply(plan, new)
                outcome, message = "applied", "; ".join(changes)
        except ConfigError as e:
            outcome, message = "invalid", str(e)
        except Refused as e:
            outcome, message = "refused", str(e)
        except (SetupError, OSError) as e:
            outcome, message = "failed", f"{e}; what was added is undone, the rest runs on"
        duration = time.monotonic() - started
        ok = outcome in ("applied", "unchanged")
        self.reloads[outcome] += 1
        self.last_reload = {"at": time.time(), "result": outcome, "message": message,
                            "duration_seconds": round(duration, 6), "source": source,
                            "changes": changes}
        if outcome == "applied":
            self.generation += 1
            self.last_reload_success = self.last_reload["at"]
        (log.info if ok else log.error)("reload from %s: %s (%.1f ms): %s", source, outcome,
                                        duration * 1e3, message)
        if self.notifier:
            self.notifier.ready(self._status_line())
        result = {"result": outcome, "message": message, "changes": changes,
                  "generation": self.generation, "duration_seconds": round(duration, 6)}
        return ok, result, None if ok else message

    def _plan_reload(self, new: Config):
        from xdpd.config.diff import Refused, diff
        new_plans = list(plan_workers(new, self.host))
        # Workers that stay keep their CPU; only new ones take the new plan's.
        old_plans = [w.plan for w in self.workers]
        plan = diff(self.config, new, old_plans, new_plans, len(self.free_slots), self.zero_copy)
        if len(self.interfaces) - len(plan.remove_interfaces) + len(plan.add_interfaces) > MAX_NETDEVS:
            raise Refused(f"at most {MAX_NETDEVS} interfaces")
        return plan

    def _apply(self, plan, new: Config) -> None:
        old = self.config
        added_ifaces: list[Interface] = []
        added: list[Worker] = []
        # 1-2: everything new, undone if any step fails
        try:
            self._apply_steering(plan.add_interfaces)
            for iface_cfg in plan.add_interfaces:
                queues = [p.queue for p in plan.add_workers if p.netdev == iface_cfg.name]
                added_ifaces.append(self._add_interface(iface_cfg, queues))
            for p in plan.add_workers:
                iface = self.interface(p.netdev)
                if iface not in added_ifaces and p.queue not in iface.queues:
                    self._own_queue(iface, p.queue)
                    iface.queues.append(p.queue)
                sock = self._new_socket(p)
                added.append(self._add_worker(self.free_slots.pop(0), p, sock))
            for w in added:
                self._open_direct(w)
            self._link_groups(added)
            for w in added:
                self.spawn_worker(w)
            self._wait_running(added)
            self._update_steering(old, plan.steering_changes)
        except BaseException:
            self._undo_additions(added, added_ifaces)
            for iface_cfg in plan.add_interfaces:
                self.steering.undo(iface_cfg.name)
            raise
        # 3-4: the switch
        for iface_cfg in plan.queue_conf_changes:
            iface = self.interface(iface_cfg.name)
            iface.config = iface_cfg
            for q in iface.queues:
                self._own_queue(iface, q)
        for iface_cfg in plan.pass_rule_changes:
            # the program stays attached: the new rule set replaces the old
            # in one map update (xdp_program.py, set_pass_rules)
            iface = self.interface(iface_cfg.name)
            iface.config = iface_cfg
            iface.program.set_pass_rules(iface_cfg.pass_to_kernel)
        for iface_cfg in plan.checksum_changes:
            # a flag of the netdev in the table written next
            iface = self.interface(iface_cfg.name)
            iface.config = iface_cfg
            self._say_checksums(iface)
        removed = set(plan.remove_workers)
        removing = [w for w in self.workers if w.name in removed]
        self.config = new
        self._write_table(old_config=old, exclude=frozenset(w.id for w in removing))
        self._open_queues(added)
        # 5-6: what goes away
        if removing:
            self._drain(removing)
        for name in plan.remove_interfaces:
            self._remove_interface(self.interface(name))
            self.steering.undo(name)
        if removing or plan.remove_interfaces:
            self._write_table()

    def _update_steering(self, old: Config, changed: list[InterfaceConfig]) -> None:
        """Only what differs (steering.Steering.update); a failure is
        reported, what was changed stays on the journal."""
        from xdpd.control.steering import SteeringError
        for iface_cfg in changed:
            try:
                self.steering.update(old.interface(iface_cfg.name), iface_cfg)
            except SteeringError as e:
                raise SetupError(f"steering of {iface_cfg.name}: {e}") from None

    def _undo_additions(self, added: list[Worker], added_ifaces: list[Interface]) -> None:
        for w in added:
            self.kill_worker(w, signal.SIGKILL)
            if w.proc is not None:
                w.proc.wait()
            self._release_worker(w)
        for w in added:
            iface = self.interface(w.plan.netdev)
            if iface not in added_ifaces and w.plan.queue in iface.queues:
                iface.program.set_queue(w.plan.queue, owned=False)
                iface.queues.remove(w.plan.queue)
        for iface in added_ifaces:
            self._remove_interface(iface)

    def _drain(self, removing: list[Worker]) -> None:
        """Take removed workers' queues back from them and let them finish
        (worker.py: the two drain steps), then give their slots back."""
        from xdpd.datapath import _fastpath
        self._close_queues(removing, disown=True)
        for w in removing:
            iface = self.interface(w.plan.netdev)
            if w.plan.queue in iface.queues:
                iface.queues.remove(w.plan.queue)
            with self.lock:
                w.transition(WorkerState.DRAINING)
        live = [w for w in removing if w.proc is not None and w.proc.poll() is None]
        # step 1: each RX ring stays empty (nothing more comes from the wire)
        for w in live:
            self.signal(w.proc, signal.SIGUSR1)
        self._wait_until(live, lambda w: w.proc.poll() is not None or
                         self._worker_reports(w) == _fastpath.STATE_DRAINING, "drain RX")
        # step 2: nobody being removed receives anything any more: finish
        for w in live:
            if w.proc.poll() is None:
                self.signal(w.proc, signal.SIGUSR2)
        self._wait_until(live, lambda w: w.proc.poll() is not None, "finish")
        for w in removing:
            if w.proc is not None and w.proc.poll() is None:
                log.warning("%s: did not drain within %.0f s; killing it", w.name,
                            DRAIN_TIMEOUT_S)
                self.signal(w.proc, signal.SIGKILL)
            if w.proc is not None:
                self._wait_gone(w)
            self._release_worker(w)
            log.info("%s: removed", w.name)

    def _wait_gone(self, w: Worker) -> None:
        """Reap w's process after a SIGKILL; one that could not be sent one
        is left to its parent-death signal (the supervisor's exit)."""
        if w.proc.pid in self._unsignallable:
            log.error("%s: pid %d could not be signalled; left to end with the supervisor",
                      w.name, w.proc.pid)
            return
        try:
            w.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("%s: pid %d still running after SIGKILL; left behind", w.name,
                      w.proc.pid)

    def _wait_until(self, workers: list[Worker], done, what: str) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        pending = list(workers)
        while pending and time.monotonic() < deadline:
            pending = [w for w in pending if not done(w)]
            if pending:
                time.sleep(0.002)
        if pending:
            log.warning("%s: %s not done within %.0f s", ", ".join(w.name for w in pending),
                        what, DRAIN_TIMEOUT_S)

    def _release_worker(self, w: Worker) -> None:
        """Close a stopped worker's socket and give its slot back, unless
        some of its frames are still elsewhere (then the slot stays unused
        until restart, and the log says so)."""
        with self.lock:
            w.proc = None
            w.transition(WorkerState.STOPPED)
            if w in self.workers:
                self.workers.remove(w)
        self.dismiss_standby(w)
        self._close_direct(w)
        w.socket.close()
        try:
            self.umem.control.reset_worker(w.id)
        except ValueError as e:
            self.quarantined.add(w.id)
            log.warning("worker slot %d (%s) not reused until restart: %s", w.id, w.name, e)
            return
        self.free_slots.append(w.id)
        self.free_slots.sort()
        self._samples.pop(w.id, None)

    def _close_direct(self, w: Worker) -> None:
        """w is gone: its own direct sockets close (what they sent stays
        counted, as its egress queues' transmissions), and so does every
        other worker's copy of a socket on w's queue (the worker closes its
        own once nothing of it is out; its standby holds one too, and is
        replaced).  Then w's queue can be bound again."""
        stats = self.umem.control.worker_stats(w.id)
        for j, d in enumerate(w.direct):
            carried = self.direct_carried.setdefault(d.owner, [0, 0])
            carried[0] += stats["direct_packets"][j]
            carried[1] += stats["direct_bytes"][j]
            d.close()
        self.direct_carried.pop(w.id, None)
        for x in self.workers:
            onto_w = [d for d in x.direct if d.owner == w.id and d.socket is not None]
            for d in onto_w:
                d.close()
            if onto_w:
                self.dismiss_standby(x)

    def worker_stats(self) -> dict[int, dict]:
        """Every worker's counters (Control.worker_stats), with what others
        sent on its queue through their direct sockets counted as its
        transmissions (tx_packets, tx_bytes: the netdev's), and what it
        sent on its own in all as direct_tx_packets."""
        stats = {w.id: self.umem.control.worker_stats(w.id) for w in self.workers}
        for wid, (packets, bytes_) in self.direct_carried.items():
            if wid in stats:
                stats[wid]["tx_packets"] += packets
                stats[wid]["tx_bytes"] += bytes_
        for w in self.workers:
            mine = stats[w.id]
            mine["direct_tx_packets"] = sum(mine["direct_packets"])
            for j, d in enumerate(w.direct):
                if d.owner in stats:
                    stats[d.owner]["tx_packets"] += mine["direct_packets"][j]
                    stats[d.owner]["tx_bytes"] += mine["direct_bytes"][j]
        return stats

    # -- control requests and status -------------------------------------------

    def authorize_peer(self, peer, command: str) -> str | None:
        """Who may use the control socket: root, members of
        control.status_group for READ_ONLY_COMMANDS, and never a process
        of the workers' user or group (through `reload` with config_text a
        worker could skip the file checks) nor one a worker started.  A
        peer's ancestors are read from /proc where the supervisor can see
        them (under the unit's ProtectProc=ptraceable, not a worker's, nor
        an operator's shell: those are judged by their ids alone)."""
        from xdpd.control.server import root_only
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
        return False, None, f"unknown command {command!r}; known: status, reload"

    def _sample_counters(self) -> None:
        """Remember (time, rx, tx, drops) per worker, for the status rates."""
        now = time.monotonic()
        all_stats = self.worker_stats()
        for w in self.workers:
            s = all_stats[w.id]
            samples = self._samples.setdefault(w.id, [])
            samples.append((now, s["rx_packets"], s["tx_packets"], sum(s["drops"].values())))
            while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
                samples.pop(0)

    def _rates(self, w: Worker, stats: dict) -> tuple[float, float, float]:
        samples = self._samples.get(w.id)
        now = time.monotonic()
        if not samples or now - samples[0][0] < 0.05:
            return 0.0, 0.0, 0.0
        t, rx, tx, drops = samples[0]
        dt = now - t
        return ((stats["rx_packets"] - rx) / dt, (stats["tx_packets"] - tx) / dt,
                (sum(stats["drops"].values()) - drops) / dt)

    @staticmethod
    def _xdp_packets(iface: Interface) -> list[dict]:
        """The XDP program's verdicts per rx queue, owned or not: traffic on
        a queue xdpd does not own shows as `passed` (xdpd doctor reads it)."""
        from xdpd.kernel.xdp_program import XDPD_MAX_QUEUES
        out = []
        for q in range(min(iface.rx_queues, XDPD_MAX_QUEUES)):
            try:
                st = iface.program.queue_stats(q)
            except OSError:         # the map read failed: leave the queue out
                continue
            out.append({"queue": q, **st})      # every verdict counter of the map
        return out

    def status(self) -> dict:
        """The answer to `xdpd status`; its JSON form is documented in the
        README (schema 1: keys are only ever added)."""
        now = time.time()
        workers = []
        rules: dict[int, dict] = {}     # by index in `forward`, summed over workers
        all_stats = self.worker_stats()
        for w in sorted(self.workers, key=lambda w: (w.plan.netdev, w.plan.queue,
                                                     w.plan.member)):
            stats = all_stats[w.id]
            rx_pps, tx_pps, drop_pps = self._rates(w, stats)
            try:
                xsk = w.socket.statistics()
            except OSError:
                xsk = {}
            running = w.proc is not None and w.state in (WorkerState.RUNNING,
                                                        WorkerState.STARTING,
                                                        WorkerState.DRAINING)
            workers.append({
                "name": w.name, "netdev": w.plan.netdev, "queue": w.plan.queue,
                "member": w.plan.member, "cpu": w.plan.cpu, "pid": w.proc.pid if running else None,
                "state": w.state.value,
                "uptime_seconds": round(now - w.started_wall, 3) if running else None,
                "restarts": w.restarts,
                "standby_pid": (w.standby.pid if w.standby is not None
                                and w.standby.poll() is None else None),
                "standby_ready": (w.standby is not None and w.standby.poll() is None
                                  and self.ops.standby_ready(w.standby)),
                "rx_packets": stats["rx_packets"], "tx_packets": stats["tx_packets"],
                "rx_bytes": stats["rx_bytes"], "tx_bytes": stats["tx_bytes"],
                "drops": stats["drops"],
                "rx_pps": round(rx_pps, 1), "tx_pps": round(tx_pps, 1),
                "drop_pps": round(drop_pps, 1), "xsk": xsk,
                "bad_descriptors": stats["bad_descs"],
                "checksums_completed": stats["csum_completed"],
                "direct_tx_packets": stats["direct_tx_packets"],
                "direct_sockets": [f"{d.netdev}/q{d.queue}" for d in w.direct
                                   if d.socket is not None],
                "rings": self.umem.control.ring_use(w.id)})
            for rule, packets, bytes_ in worker_rule_counts(self.config, self.umem.control, w):
                entry = rules.setdefault(rule.index, {
                    "index": rule.index, "from": rule.from_,
                    "match": rule.match.describe() if rule.match else None,
                    "action": rule.action, "to": rule.to, "packets": 0, "bytes": 0})
                entry["packets"] += packets
                entry["bytes"] += bytes_
        interfaces = []
        for i in sorted(self.interfaces, key=lambda i: i.name):
            interfaces.append({
                "name": i.name, "ifindex": i.ifindex, "xdp_mode": i.xdp_mode,
                "socket_mode": "zero-copy" if self.zero_copy else "copy",
                "queues": sorted(i.queues), "rx_queues": i.rx_queues,
                "fallback": i.config.fallback if i.config else None,
                "fanout": i.config.fanout if i.config else 1,
                "fanout_spread": i.config.fanout_spread if i.config else None,
                "pass_to_kernel": ([m.describe() for m in i.config.pass_to_kernel]
                                   if i.config else []),
                "rule": describe_rule(self.config, i.name),
                "xdp_packets": self._xdp_packets(i)})
        geo = self.umem.geometry
        return {
            "schema": STATUS_SCHEMA, "version": __version__, "pid": os.getpid(),
            "uptime_seconds": round(now - self.started_wall, 3), "ready": self.ready,
            "config": {"path": self.config.source, "generation": self.generation},
            "last_reload": self.last_reload,
            "umem": {"frames": geo.frames, "frame_size": geo.frame_size,
                     "bytes": geo.size, "backing": self.umem.backing,
                     "worker_slots": geo.nworkers,
                     "worker_slots_used": geo.nworkers - len(self.free_slots),
                     "frames_by_location": self.umem.frame_locations()},
            "interfaces": interfaces, "workers": workers,
            "rules": [rules[i] for i in sorted(rules)]}

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
        with self.lock:
            self.interfaces = []
        if self.steering is not None:
            self.steering.undo_all()              # after the detach: queues may go away
        self._close_record()
        for w in self.workers:
            for d in w.direct:
                d.close()
            w.socket.close()
        with self.lock:
            self.workers = []
        for fd in self.eventfds:
            self.ops.close_fd(fd)
        self.eventfds = []
        if self.umem is not None:
            self.umem.close()
            self.umem = None
        self.ready = False


def describe_rule(config: Config, netdev: str) -> str:
    """The rules for `netdev` in words, for `xdpd status`: one, or several
    ("udp dst port 53: forward to eth1; drop"), tried in that order."""
    rules = config.rules_for(netdev)
    if not rules:
        return "drop (no rule)"
    return "; ".join((f"{r.match.describe()}: " if r.match else "") + _describe_action(r)
                     for r in rules)


def _describe_action(rule) -> str:
    if rule.action == "drop":
        return "drop"
    what = [f"forward to {rule.to}"]
    if rule.swap_macs:
        what.append("swap MACs")
    if rule.set_dst_mac:
        what.append("dst MAC " + rule.set_dst_mac.hex(":"))
    if rule.set_src_mac:
        what.append("src MAC " + rule.set_src_mac.hex(":"))
    if rule.push_vlan is not None:
        what.append(f"push vlan {rule.push_vlan}"
                    + (f" ({rule.vlan_proto})" if rule.vlan_proto != "802.1q" else ""))
    if rule.pop_vlan:
        what.append("pop vlan")
    return ", ".join(what)
