"""Hosting (workers.share_process): the workers that share a CPU run in one
process while they share it.

By queue, the ingress and the egress worker of a forwarded exchange share
a CPU (placement.py).  As two processes they take turns on it, and every
forwarded reply waits for a switch between their address spaces: the
largest item of a round trip's profile here.  So the first worker of each
such group (the lowest slot id, its host) is spawned with the sockets of
the others (its guests, WorkerSpec.guests) and, while they share its CPU,
runs their ports in its own loop (datapath/hosted.py); their processes wait
meanwhile.  When they stop sharing it (adaptive placement spreads them),
when either process dies, and before a reload changes anything, each port
goes back to its own process.

The wish is one field per slot in the control area (fp_worker.host); the
processes hand a port over between bursts by compare-and-swap of its
runner.  Each change of a wish is signalled (SIGHOSTING) to both processes
concerned.

Owns: Hosting: who is whose host (hosts(), host_for()), the wishes, and
what a dead process leaves (forget()).
Must not: start or reap processes, or move them between CPUs.
"""
from __future__ import annotations

import logging
import signal
import time

from xdpd.control.workers import Worker, WorkerState
from xdpd.datapath import _fastpath
from xdpd.datapath.hosted import SIGHOSTING
from xdpd.datapath.worker import GuestSpec

log = logging.getLogger("xdpd.supervisor")

RELEASE_TIMEOUT_S = 2.0     # release(): the ports back with their own processes by then


class Hosting:
    def __init__(self, config, control, signal):
        self.config = config
        self.control = control          # _fastpath.Control (or a test's fake)
        self.signal = signal            # Supervisor.signal(proc, sig) -> bool
        self.wish: dict[int, Worker] = {}      # guest slot id -> its host now
        # per worker slot: the guests' (slot id, socket inode) its current
        # process was spawned with, and its standby's
        self.spawned: dict[int, frozenset] = {}
        self.standby: dict[int, frozenset] = {}
        self.paused = False             # a reload is under way

    def eligible(self, w: Worker) -> bool:
        c = self.config.workers
        return (c.share_process and c.placement != "spread" and not c.busy_poll
                and w.plan.fanout == 1)

    def group_host(self, w: Worker, workers) -> Worker | None:
        """The host of w's group: the eligible worker with the lowest slot id
        on w's CPU by queue."""
        if not self.eligible(w):
            return None
        group = [x for x in workers if self.eligible(x) and x.plan.cpu == w.plan.cpu]
        return min(group, key=lambda x: x.id)

    def guests_of(self, w: Worker, workers) -> list[Worker]:
        """The workers w's process is spawned able to host (WorkerSpec.guests)."""
        if self.group_host(w, workers) is not w:
            return []
        return sorted((x for x in workers if x is not w and self.group_host(x, workers) is w),
                      key=lambda x: x.id)[:_fastpath.MAX_HOSTED]

    def guest_specs(self, w: Worker, workers, max_segs: int) -> tuple[GuestSpec, ...]:
        return tuple(GuestSpec(id=g.id, name=g.name, xsk_fd=g.socket.fd,
                               direct_fds=direct_fds(g), max_segs=max_segs)
                     for g in self.guests_of(w, workers))

    def spawning(self, w: Worker, workers, standby: bool) -> None:
        """w's process (or standby) is spawned with its guests' sockets."""
        (self.standby if standby else self.spawned)[w.id] = frozenset(
            (g.id, g.socket.ino) for g in self.guests_of(w, workers))

    def took_over(self, w: Worker) -> None:
        self.spawned[w.id] = self.standby.pop(w.id, frozenset())

    def host_for(self, g: Worker, workers) -> Worker | None:
        """Who should run g's port now; None: its own process."""
        h = self.group_host(g, workers)
        if (h is None or h is g or g.proc is None or h.proc is None
                or g.state is not WorkerState.RUNNING or h.state is not WorkerState.RUNNING
                or g.cpu != h.cpu or (g.id, g.socket.ino) not in self.spawned.get(h.id, ())):
            return None
        return h

    def update(self, workers) -> None:
        """Make each wish what host_for() says now; none changes while a
        reload is under way (release())."""
        if self.paused:
            return
        for g in workers:
            want = self.host_for(g, workers)
            if want is not self.wish.get(g.id):
                self._set(g, want)

    def _set(self, g: Worker, host: Worker | None) -> None:
        old = self.wish.pop(g.id, None)
        if host is not None:
            self.wish[g.id] = host
        self.control.set_host(g.id, host.id if host is not None else None)
        for w in (g, host or old):
            if w is not None and w.proc is not None and w.proc.poll() is None:
                self.signal(w.proc, SIGHOSTING)
        if host is not None:
            log.info("%s: its port runs in %s's process (they share CPU %d)", g.name,
                     host.name, g.cpu)
        elif old is not None:
            log.info("%s: its port goes back to its own process", g.name)

    def forget(self, dead: Worker, workers) -> None:
        """dead's process is gone: it hosts nothing and is hosted by nobody.
        A port it ran has no runner now: its own process takes it back."""
        for g in workers:
            host = self.wish.get(g.id)
            if host is dead or (g is dead and host is not None):
                self._set(g, None)
        for g in workers:
            if g is not dead:
                self.control.claim(g.id, dead.id, None)
        self.spawned.pop(dead.id, None)

    def removed(self, gone: Worker, workers) -> list[Worker]:
        """gone's slot was given back (its socket closed, the tables area's
        inode of it cleared): each process spawned with that socket is told
        to close its copy (it sees the inode gone); the workers whose
        standbys hold one are returned, to be replaced."""
        for h in workers:
            if any(gid == gone.id for gid, _ in self.spawned.get(h.id, ())):
                self.spawned[h.id] = frozenset(k for k in self.spawned[h.id] if k[0] != gone.id)
                if h.proc is not None and h.proc.poll() is None:
                    self.signal(h.proc, SIGHOSTING)
        return [h for h in workers
                if any(gid == gone.id for gid, _ in self.standby.get(h.id, ()))]

    def release(self, gone: set[str], workers) -> bool:
        """Before a reload applies anything, these ports go back to their
        own processes: those of the workers it removes (named in gone),
        those their processes host, and the guests with a direct socket
        onto a queue it removes.  Drains and removals then meet one
        process per port; and a guest's own process holds a copy of its
        direct sockets that only a Port running there closes: left hosted,
        it would keep the removed queue bound, and adding the queue back
        would fail (EBUSY).  Every other port stays where it runs, and no
        wish changes until resume(): a port that changes process is
        unserved until the one taking it is scheduled, on a busy CPU long
        enough for its RX ring to overflow.  True once they are back,
        False after RELEASE_TIMEOUT_S."""
        self.paused = True
        gone_ids = {w.id for w in workers if w.name in gone}
        back = [g for g in workers if g.name in gone
                or (g.id in self.wish and (self.wish[g.id].id in gone_ids
                                           or any(d.owner in gone_ids for d in g.direct)))]
        for g in back:
            if g.id in self.wish:
                self._set(g, None)
        deadline = time.monotonic() + RELEASE_TIMEOUT_S
        while True:
            away = [g for g in workers if g.proc is not None and g.proc.poll() is None
                    and g.id not in self.wish
                    and self.control.hosting(g.id)[2] not in (None, g.id)]
            if not away or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        if away:
            log.warning("hosting: %s not back with their own processes within %.0f s",
                        ", ".join(g.name for g in away), RELEASE_TIMEOUT_S)
        return not away

    def resume(self) -> None:
        self.paused = False

    def hosted_by(self, w: Worker) -> Worker | None:
        return self.wish.get(w.id)


def signame(sig: int) -> str:
    """SIGTERM, ...; SIGHOSTING, which the signal module has no name for."""
    return "SIGHOSTING" if sig == SIGHOSTING else signal.Signals(sig).name


def direct_fds(w: Worker) -> tuple[int, ...]:
    """w's direct sockets by index in its slot; -1: closed (its queue was removed)."""
    return tuple(d.socket.fd if d.socket is not None else -1 for d in w.direct)
