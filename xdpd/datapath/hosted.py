"""The ports a worker process runs (workers.share_process; docs/ARCHITECTURE.md,
"Hosting").

A worker process runs its own slot's port, unless another worker's process
hosts it; and a host runs the ports of the guest slots the supervisor asks
it to, in the same loop as its own (Port.run's `hosted`).  Three fields of
each slot in the control area decide who runs a port (fastpath.h,
fp_worker): `host`, the supervisor's wish; `asked`, set by a host ready to
take the port; and `runner`, taken and given up by compare-and-swap
(Control.claim), so that a port is never run by two processes.  A port
changes process only between bursts: the one running it closes it (its
state is in the commit record, as after any burst) and gives it up; the
other claims it and opens it, as a standby takes over a dead worker's.
The one giving a port up always runs it until the other is ready for it:
a guest lets go only once its host has asked (the host then waits in
short bursts), and a host lets go only when the wish changes (its guest
then waits in short steps).  So a busy process, which notices a change
only at the end of a burst, never leaves a port unserved meanwhile.  The
supervisor sends SIGHOSTING to both processes when it changes a wish, so
that a sleeping one does not wait out a burst either.

The supervisor spawns a host with its guests' sockets (WorkerSpec.guests).
A guest slot whose socket is no longer the one given (the tables area names
the slot's socket by inode) was removed by a reload: the host closes its
copies of that slot's descriptors and never hosts it again.

Owns: Ports: which ports this process runs, the claims, the guests'
descriptors.
Must not: decide who hosts whom (the supervisor does, control/hosting.py).
"""
from __future__ import annotations

import logging
import os
import select
import signal
from dataclasses import replace

log = logging.getLogger("xdpd.worker")

# the supervisor's "who hosts whom changed": a real-time signal, so that a
# worker's other signals keep their meaning
SIGHOSTING = signal.SIGRTMIN + 1


def wakeup_pipe() -> tuple[int, int]:
    """For Ports: made before the seccomp filter, which has no pipe2()."""
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


class Ports:
    """This process's own port (None while another process runs it) and the
    guest ports it runs (`hosted`)."""

    def __init__(self, spec, control, opener, wake: tuple[int, int]):
        self.spec = spec
        self.control = control
        self.opener = opener            # opener(slot spec) -> Port
        # a port's direct sockets as its last Port in this process left
        # them: one it closed for good (its queue removed) is -1 from then on
        self.direct: dict[int, tuple[int, ...]] = {}
        self.own = None
        self.gave_up = False            # our port went to a host once
        self.guests = {g.id: g for g in spec.guests}    # hostable, by slot id
        self.hosted: dict[int, object] = {}            # slot id -> Port
        self.ino = {g.id: os.fstat(g.xsk_fd).st_ino for g in spec.guests}
        # signals end a parked wait (wait()): Python writes their numbers here
        self._wake_r = wake[0]
        self._parked = select.poll()
        self._parked.register(wake[0], select.POLLIN)
        signal.set_wakeup_fd(wake[1], warn_on_full_buffer=False)

    def running(self) -> tuple:
        """The guest ports for Port.run's `hosted`."""
        return tuple(self.hosted.values())

    def settle(self) -> bool:
        """Give up and take ports as the supervisor's wishes say now; True
        while a port this process is to run is still another's."""
        me = self.spec.id
        host, asked, runner = self.control.hosting(me)
        elsewhere = host is not None and host != me
        pending = False
        if self.own is not None and elsewhere and asked != host:
            pending = True              # until the host is ready: it takes it at once
        elif self.own is not None and elsewhere:
            self._close(me, self.own)   # committed at the end of the last burst
            self.own = None
            self.gave_up = True
            self.control.claim(me, me, None)
            log.info("%s: its port runs in worker slot %d's process now", self.spec.name, host)
        if self.own is None and not elsewhere:
            if runner == me or self.control.claim(me, None, me):
                self.own = self._open(self.spec)
                if self.gave_up:
                    log.info("%s: runs its own port again", self.spec.name)
            else:
                pending = True          # the host has not let go yet
        for gid in list(self.guests):
            pending |= self._settle_guest(gid)
        return pending

    def _settle_guest(self, gid: int) -> bool:
        me, g = self.spec.id, self.guests[gid]
        port = self.hosted.get(gid)
        host, asked, _ = self.control.hosting(gid)
        if port is not None:
            if host == me:
                return False
            self._close(gid, port)
            del self.hosted[gid]
            self.control.claim(gid, me, None)
            self.control.ask(gid, None)
            log.info("%s: gave %s's port back", self.spec.name, g.name)
            return False
        if self.control.socket_ino(gid) != self.ino[gid]:
            self._forget(g)             # removed by a reload
            return False
        if host != me:
            return False
        if not self.control.claim(gid, None, me):
            if asked != me:
                self.control.ask(gid, me)   # its own process lets go once it sees this
            return True
        try:
            self.hosted[gid] = self._open(g)
        except OSError as e:
            self.control.claim(gid, me, None)
            log.warning("%s: cannot run %s's port (%s); it stays with its own process",
                        self.spec.name, g.name, e)
            self._forget(g)
            return False
        log.info("%s: runs %s's port too", self.spec.name, g.name)
        return False

    def _open(self, slot):
        return self.opener(replace(slot, direct_fds=self.direct.get(slot.id, slot.direct_fds)))

    def _close(self, slot_id: int, port) -> None:
        self.direct[slot_id] = port.direct_fds()
        port.close()

    def _forget(self, g) -> None:
        del self.guests[g.id]
        for fd in (g.xsk_fd, *self.direct.pop(g.id, g.direct_fds)):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def wait(self, timeout: float) -> None:
        """Parked: until a signal, or timeout seconds."""
        self._parked.poll(timeout * 1000)
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Leaving: the guests' ports back to nobody (their own processes
        take them), our own closed as STOPPED if we have it."""
        for gid, port in list(self.hosted.items()):
            self._close(gid, port)
            self.control.claim(gid, self.spec.id, None)
        self.hosted.clear()
        if self.own is not None:
            self.own.stop()
            self.own.close()
            self.own = None
