"""Adaptive placement (workers.placement: adaptive): which CPU each worker
runs on now, by queue or spread.

By queue, the k-th worker of every interface shares the k-th CPU: a
forwarded request and its reply are received on one CPU, and the round
trip is short (docs/ARCHITECTURE.md, "Placement").  Where an interface has
fewer queues than there are CPUs, that leaves CPUs idle while the shared
one is saturated, and bulk traffic both ways is faster spread.  So the
workers start by queue and move to their spread CPUs (WorkerPlan.spread_cpu)
while forwarding keeps a shared CPU busy, and come back once the workers
that would share it again are quiet enough to fit on it.

Busy is the time a worker spends in loop iterations that moved frames,
its kicks' kernel work included (fp_stats.busy_ns), per second of wall
time: what forwarding takes of a CPU, not the spinning of an idle worker.

Owns: Placer: the decision, with its hysteresis, and moving the workers'
processes (SystemOps.pin, sched_setaffinity()).
Must not: read the control area (it is handed each snapshot's counters),
or start, signal or reap processes.
"""
from __future__ import annotations

import logging

from xdpd.config.model import WorkerPlan
from xdpd.control.ops import needs_capability

# The workers sharing a CPU by queue take this much of it together, for
# SPREAD_AFTER_S: spread.  Below GATHER_AT together for GATHER_AFTER_S:
# by queue again.  The gap between the two keeps a load near either from
# moving the workers back and forth.  In the 1-queue lab (2 CPUs): TCP
# 1.1-1.6 s per second, ping at 10 kpps (about 28,000 exchanges a second)
# 0.6, a UDP flood the client cannot push past 250 kpps 0.44, ping at
# 1 kpps 0.03 (docs/PERFORMANCE.md, "Adaptive placement").
SPREAD_AT = 0.9
SPREAD_AFTER_S = 1.0
GATHER_AT = 0.6
GATHER_AFTER_S = 5.0

log = logging.getLogger("xdpd.supervisor")


class Placer:
    """Spread or by queue, for all workers at once, from their busy time."""

    def __init__(self, ops=None, note_error=None):
        self.ops = ops                  # SystemOps: pin()
        self.note_error = note_error    # the supervisor's note_internal_error
        self._seen = 0.0                # the snapshot place() last took
        self.spread = False
        self.moves = 0                  # changes between the two layouts
        self._last: dict[int, tuple[float, int]] = {}   # worker id -> (when, busy_ns)
        self._since: float | None = None    # the load has been past the threshold since

    def cpu(self, plan: WorkerPlan) -> int:
        """Where the worker of this plan belongs now."""
        if self.spread and plan.spread_cpu is not None:
            return plan.spread_cpu
        return plan.cpu

    def place(self, workers, snapshot) -> bool:
        """Take the snapshot's busy time (once per snapshot) and move every
        worker that is not where it belongs now; a worker not running goes
        there when it starts (its spec names Worker.cpu).  False when the
        kernel refused a move: then nothing moves any more."""
        if snapshot.taken == self._seen:
            return True
        self._seen = snapshot.taken
        plans = {w.id: w.plan for w in workers}
        self.update({v.id: (plans[v.id], v.stats["busy_ns"])
                     for v in snapshot.workers if v.id in plans}, snapshot.taken)
        for w in workers:
            cpu = self.cpu(w.plan)
            if cpu == w.cpu:
                continue
            if not self.pin(w, cpu, (w.proc, w.standby)):
                return False
            log.debug("%s: now on CPU %d", w.name, cpu)
            w.cpu = cpu
        return True

    def pin(self, w, cpu: int, procs) -> bool:
        """Move w's processes to cpu.  The workers run as workers.user:
        without CAP_SYS_NICE the kernel refuses (counted and logged, once),
        and they stay where they are."""
        for proc in procs:
            if proc is None or proc.poll() is not None:
                continue
            try:
                self.ops.pin(proc.pid, cpu)
            except ProcessLookupError:
                continue                    # exited: reaped on the supervisor's next turn
            except PermissionError as e:
                self.note_error("placement", needs_capability(
                    e, f"moving {w.name} (pid {proc.pid}) to CPU {cpu}", "CAP_SYS_NICE",
                    "the workers stay where they are"))
                return False
        return True

    def update(self, busy: dict[int, tuple[WorkerPlan, int]], now: float) -> bool:
        """Take each worker's busy_ns counter at time now (seconds, monotonic);
        True when the layout changed."""
        load: dict[int, float] = {}     # by-queue CPU -> busy seconds per second
        relieved: set[int] = set()      # by-queue CPUs that spreading takes a worker off
        for wid, (plan, busy_ns) in busy.items():
            last = self._last.get(wid)
            self._last[wid] = (now, busy_ns)
            if plan.spread_cpu is None:
                continue                # not adaptive: it stays
            if plan.movable:
                relieved.add(plan.cpu)
            if last is None or now <= last[0] or busy_ns < last[1]:
                continue                # a new worker, or a replacement that starts at 0
            load[plan.cpu] = load.get(plan.cpu, 0.0) + (busy_ns - last[1]) / 1e9 / (now - last[0])
        for wid in set(self._last) - busy.keys():
            del self._last[wid]
        load = {cpu: share for cpu, share in load.items() if cpu in relieved}
        if not load:
            return False
        peak_cpu = max(load, key=load.get)
        peak = load[peak_cpu]
        past = peak < GATHER_AT if self.spread else peak >= SPREAD_AT
        if not past:
            self._since = None
            return False
        if self._since is None:
            self._since = now
        if now - self._since < (GATHER_AFTER_S if self.spread else SPREAD_AFTER_S):
            return False
        self.spread = not self.spread
        self._since = None
        self.moves += 1
        if self.spread:
            log.info("placement: the workers sharing CPU %d are busy forwarding %.2f s per "
                     "second together: spreading the workers that share a CPU by queue",
                     peak_cpu, peak)
        else:
            log.info("placement: quiet for %.0f s (at most %.2f s busy per second on a CPU "
                     "shared by queue): workers back by queue", GATHER_AFTER_S, peak)
        return True
