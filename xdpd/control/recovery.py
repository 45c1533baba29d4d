"""Recovery at start: what a killed xdpd left attached or steered is found
through its record (record.py) and journal (steering.py), and removed.

Owns: the Recovery steps of Supervisor.start() (remove a dead xdpd's
programs, undo its steering, take the record over) and the writing and
closing of this xdpd's own record.
Must not: touch a program or NIC setting the record does not name, or one
whose netdev now has something else attached: those are logged and left.
"""
from __future__ import annotations

import errno
import logging

from xdpd import exitcodes
from xdpd.control import record as run_record
from xdpd.control import steering, wake
from xdpd.control.ops import SetupError
from xdpd.kernel.errors import errname
from xdpd.kernel.xdp_program import PROG_NAME

log = logging.getLogger("xdpd.supervisor")


class Recovery:
    """What a killed xdpd left behind, found and removed at start, and this
    xdpd's own record kept for the next one; mixed into Supervisor."""

    def _remove_what_a_dead_xdpd_left(self) -> None:
        """Detach what a killed xdpd with this control socket left attached
        (its record, record.py), then take the record over.

        Only a program the record names, and only while its netdev still
        has exactly that program: anything else is left alone, and logged.
        A record whose owner still runs is another xdpd: refuse."""
        path = run_record.record_path(self.config.control.socket)
        try:
            self._record_dir_made = run_record.make_dir(path)
        except OSError as e:
            raise SetupError(e.strerror or str(e), exitcodes.CONFIG) from None
        try:
            record = run_record.read(path)
        except run_record.RecordError as e:
            try:
                run_record.quarantine(path, e, "nothing detached: check 'ip link' for XDP "
                                    "programs an earlier xdpd may have left")
            except OSError as err:
                raise SetupError(str(err)) from None
            record = None
        except OSError as e:
            raise SetupError(f"read {path} failed: {errname(e.errno)}") from None
        if record is not None:
            owner = record.owner
            if run_record.owner_alive(owner):
                raise SetupError(f"another xdpd (pid {owner.pid}) runs with control.socket "
                                 f"{self.config.control.socket} (its record: {path}); stop it "
                                 "first, or give this one another control.socket",
                                 exitcodes.CONFIG)
            if owner.boot_id != run_record.boot_id():
                log.info("%s: left by xdpd pid %d before the last boot; nothing it names "
                         "is attached", path, owner.pid)
            else:
                for a in record.attachments:
                    self._remove_left_program(a, owner.pid)
        run_record.remove(path)
        self._record_path, self._record_owner = path, run_record.Owner.me()
        self._undo_what_a_dead_xdpd_steered()
        self._put_back_what_a_dead_xdpd_held()

    def _undo_what_a_dead_xdpd_steered(self) -> None:
        """Undo the steering a killed xdpd's journal names (steering.py:
        only what is still as it set it), then keep a journal of our own."""
        path = steering.journal_path(self.config.control.socket)
        nic = self.ops.ethtool()
        _recover_journal(lambda: steering.recover(path, nic), steering.SteeringError,
                         f"undo the steering in {path}")
        self.steering = steering.Steering(nic, path, self._record_owner)

    def _put_back_what_a_dead_xdpd_held(self) -> None:
        """Put back the CPU wake-up latency caps a killed xdpd's journal
        names (wake.py: only where the file still says what it set), then
        hold our own with a journal of their own."""
        path = wake.journal_path(self.config.control.socket)
        cpus = self.ops.cpu_access()
        _recover_journal(lambda: wake.recover(path, cpus), wake.WakeError,
                         f"put back the CPU caps in {path}")
        limit = self.config.workers.cpu_wake_latency_us
        if limit is not None:
            self.wake = wake.WakeHolder(limit, cpus, path, self._record_owner)

    def _remove_left_program(self, a, pid: int) -> None:
        """Detach a dead xdpd's program from its netdev if it is still there."""
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
        if self._record_path is None:
            return
        attached = [*self.interfaces, *self._detach_failed]
        record = run_record.Record(self._record_owner, tuple(
            run_record.Attachment(i.name, i.ifindex, i.program.prog_id, i.xdp_mode or None,
                                  i.program.prog_tag)
            for i in attached))
        try:
            run_record.write(self._record_path, record)
        except OSError as e:
            raise SetupError(f"write {self._record_path} (the XDP programs xdpd attached) "
                             f"failed: {errname(e.errno)}") from None

    def _close_record(self) -> None:
        """On stop: remove the record, or keep on it what could not be detached."""
        if self._record_path is None:
            return
        try:
            if self._detach_failed:
                self._write_record()
                log.warning("%s: still attached; %s names them for the next start",
                            ", ".join(i.name for i in self._detach_failed), self._record_path)
                return
            run_record.remove(self._record_path)
        except (SetupError, OSError) as e:
            log.warning("%s", e)
            return
        if self._record_dir_made:
            run_record.remove_dir(self._record_path)
        self._record_path = None


def _recover_journal(recover, refused: type[Exception], doing: str) -> None:
    """Run a journal's recovery at start: what it refuses (a journal of a
    live xdpd, one that cannot be moved aside) is a config error for the
    operator, any other OS error says what was being done where."""
    try:
        recover()
    except refused as e:
        raise SetupError(str(e), exitcodes.CONFIG) from None
    except OSError as e:
        raise SetupError(f"{doing}: {e}") from None
