"""Workers as the supervisor sees them: the record of one worker process
per (netdev, queue[, member]), its state machine, and its sockets.

Owns: WorkerState, the transition table (TRANSITIONS) and
Worker.transition(), the one place a worker's state changes; DirectSocket.
Must not: spawn, signal or wait for processes (the supervisor does, through
SystemOps), or touch the control area beyond reading a worker's counters.
"""
from __future__ import annotations

import enum
import logging
import subprocess
from dataclasses import dataclass, field

from xdpd.config.model import InterfaceConfig, WorkerPlan
from xdpd.kernel.netdev import completes_checksums

# How long the supervisor waits on a worker, where more than one step waits
STOP_TIMEOUT_S = 5.0  # a stopped worker exits within this
TABLE_ACK_TIMEOUT_S = 2.0           # every worker switches tables within this
DRAIN_TIMEOUT_S = 5.0               # per drain step of a removed worker
REBIND_TIMEOUT_S = 2.0              # a just-closed queue's socket is released async

log = logging.getLogger("xdpd.supervisor")


class WorkerState(enum.Enum):
    STOPPED = "stopped"     # not running, not wanted to run
    STARTING = "starting"   # spawned, not yet RUNNING in shared memory
    RUNNING = "running"     # forwarding
    DRAINING = "draining"   # being removed by a reload
    BACKOFF = "backoff"     # died; waiting before the next start
    FATAL = "fatal"         # died too often while starting; given up


_S = WorkerState
# Every legal change of a worker's state, and what makes it (Worker.transition):
# nothing else assigns Worker.state.
TRANSITIONS = {
    (_S.STOPPED, _S.STARTING): "spawned",
    (_S.BACKOFF, _S.STARTING): "spawned again after its delay",
    (_S.STARTING, _S.RUNNING): "its fast path reports RUNNING (FILL ring primed)",
    (_S.STARTING, _S.BACKOFF): "died before it ran",
    (_S.RUNNING, _S.BACKOFF): "died",
    (_S.STARTING, _S.FATAL): "died too often in a row while starting",
    (_S.RUNNING, _S.FATAL): "died too often in a row soon after starting",
    (_S.BACKOFF, _S.FATAL): "its fanout group's owner was given up",
    **{(s, _S.FATAL): "its fanout group's owner was given up"
       for s in (_S.STOPPED, _S.DRAINING)},
    **{(s, _S.DRAINING): "removed by a reload"
       for s in (_S.STARTING, _S.RUNNING, _S.BACKOFF, _S.FATAL)},
    **{(s, _S.STOPPED): "released, or the supervisor stopping"
       for s in (_S.STARTING, _S.RUNNING, _S.DRAINING, _S.BACKOFF, _S.FATAL)},
}
del _S
# Tests set this: an illegal change raises there; a daemon logs it (a bug)
# and carries on.
STRICT_TRANSITIONS = False


class IllegalTransition(RuntimeError):
    """A worker state change that TRANSITIONS does not allow: a bug."""


@dataclass
class DirectSocket:
    """A worker's TX-only socket on another interface's queue (the fast
    path's "Direct transmission"), bound with XDP_SHARED_UMEM to the socket
    of the worker owning that queue's rings: what the worker forwards there
    it sends itself, and that worker's COMPLETION ring gives it back."""
    owner: int                      # that worker's id
    netdev: str
    queue: int
    socket: object | None           # xsk.XdpSocket; None once closed (queue removed)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


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
    started_wall: float = 0.0       # time.time() of the current process's spawn
    # A process already started (interpreter up, control area mapped) that
    # waits on its stdin to take over this worker's socket: replacing a
    # dead worker costs a pipe write, not an interpreter start.
    standby: subprocess.Popen | None = None
    standby_after: float = 0.0      # time.monotonic() from which to start a standby
    direct: list[DirectSocket] = field(default_factory=list)   # by index in the slot
    # where its processes run: the plan's CPU, or with adaptive placement
    # the one the supervisor moved them to (control/placement.py)
    cpu: int = -1

    def __post_init__(self):
        if self.cpu < 0:
            self.cpu = self.plan.cpu

    @property
    def name(self) -> str:
        return self.plan.name

    def transition(self, new: WorkerState) -> None:
        """The one way the state changes: along TRANSITIONS (staying put is
        no change)."""
        if new is not self.state and (self.state, new) not in TRANSITIONS:
            msg = f"{self.name}: {self.state.value} -> {new.value} is not a legal state change"
            if STRICT_TRANSITIONS:
                raise IllegalTransition(msg)
            log.error("%s (a bug in xdpd: please report it)", msg)
        self.state = new


def worker_rule_counts(config, control, worker) -> list[tuple]:
    """(rule, packets, bytes) for each rule of the worker's netdev, in order:
    the fast path counts by position in that list (rule_stats)."""
    if config is None:
        return []
    rules = config.rules_for(worker.plan.netdev)
    if not rules:
        return []
    packets, bytes_ = control.rule_stats(worker.id)
    return [(rule, packets[k], bytes_[k]) for k, rule in enumerate(rules)]


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
        return completes_checksums(self.config.checksum if self.config else "auto", self.kind)
