"""Fast wake-ups for busy workers: the wake-up latency cap of their CPUs
(workers.cpu_wake_latency_us), held while they move packets, and its journal.

Design
------
A quiet worker sleeps in poll(), and its CPU, idle, enters an idle state.
The next packet has to bring that CPU out of it before the worker can
run: on this project's 2-CPU virtual machine, where an idle CPU halts
into the hypervisor, that costs 20-50 us per hop (docs/PERFORMANCE.md,
"Real clients"), more than the whole round trip through a Linux bridge.
So while a worker moves packets, the supervisor caps the wake-up latency
of its CPU (kernel/cpuidle.py: the CPU's PM QoS resume latency) at
`cpu_wake_latency_us`: with 0, the default, the idle CPU polls in the
kernel's idle loop instead of halting, and any task that becomes runnable
there (the worker, or anyone else) runs at once.  The worker itself still
sleeps in poll() and uses no CPU time; what the cap costs is the CPU's
idle time spent polling instead of halting (power, and on a virtual
machine the host's CPU), and only while traffic flows: a CPU whose
workers received nothing for HOLD_S gets its old cap back.

Activity is the workers' rx_packets in the snapshot the supervisor's loop
takes at least every 0.5 s (snapshot.py; the counters are read once, for
status, metrics and this): a CPU is held within about 0.5 s of traffic
starting.

The cap is one value per CPU, held by the sysfs file and not by a
process, so:

* a CPU whose cap is already at or below ours (an operator's, tuned's,
  another xdpd's) is left alone: nothing to hold, nothing to put back;
* before it writes, the supervisor records the old cap in a journal next
  to its control socket (xdpd.wake.json, written like record.py's
  record), and on release puts the old cap back only while the file
  still says what xdpd wrote (an operator's later change wins);
* a killed supervisor leaves the journal, and the next start puts back
  what it names, under the same rule (recover()).

A host without the file (no PM QoS, a read-only /sys) gets one warning
naming the file and the way to silence it, and xdpd runs on without.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from xdpd.control import record as run_record
from xdpd.kernel import cpuidle
from xdpd.kernel.errors import errname

log = logging.getLogger("xdpd.wake")

FORMAT = 1
SUFFIX = ".wake.json"               # /run/xdpd/xdpd.sock -> /run/xdpd/xdpd.wake.json
HOLD_S = 2.0                        # a CPU is let go this long after its last packet


def journal_path(control_socket: str) -> str:
    return run_record.beside_socket(control_socket, SUFFIX)


class WakeError(Exception):
    """The journal is another live xdpd's, or cannot be moved aside."""


class JournalError(ValueError):
    """The journal exists but is not one this module wrote."""


@dataclass
class Held:
    before: int | None          # the cap found (None: no cap)
    set: int                    # the cap xdpd wrote


def read_journal(path: str) -> tuple[run_record.Owner, dict[int, Held]] | None:
    try:
        doc = run_record.read_document(path, FORMAT)
        if doc is None:
            return None
        owner = run_record.owner_of(doc)
        held = {}
        for entry in doc["cpus"]:
            cpu, before, set_ = entry["cpu"], entry["before"], entry["set"]
            for value in (cpu, set_) + ((before,) if before is not None else ()):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{value!r} is not a CPU or a latency")
            held[cpu] = Held(before, set_)
    except (ValueError, KeyError, TypeError) as e:
        raise JournalError(f"{path}: not an xdpd wake journal ({e!r})") from None
    return owner, held


class WakeHolder:
    """Holds `limit_us` on the CPUs whose workers moved packets within
    HOLD_S; `path` None: no journal (tests)."""

    def __init__(self, limit_us: int, cpus: cpuidle.CpuAccess | None = None,
                 path: str | None = None, owner: run_record.Owner | None = None,
                 hold_s: float = HOLD_S):
        self.limit_us = limit_us
        self.cpus = cpus or cpuidle.CpuAccess()
        self.path = path
        self.owner = owner
        self.hold_s = hold_s
        self.held: dict[int, Held] = {}
        self._last_active: dict[int, float] = {}
        self._counts: dict[int, int] = {}   # by worker id: rx_packets seen last
        self._broken: set[int] = set()      # CPUs whose file failed once: not tried again

    def update(self, activity: dict[int, tuple[int, int]], now: float) -> None:
        """activity: by worker id, (its CPU, its rx_packets so far).  Holds
        the CPUs that became busy, lets go those quiet for hold_s."""
        busy: set[int] = set()
        for wid, (cpu, count) in activity.items():
            if self._counts.get(wid, count) != count:
                busy.add(cpu)
            self._counts[wid] = count
        for wid in set(self._counts) - activity.keys():
            del self._counts[wid]           # a worker gone: its count with it
        for cpu in busy:
            self._last_active[cpu] = now
            if cpu not in self.held and cpu not in self._broken:
                self._hold(cpu)
        for cpu in list(self.held):
            if now - self._last_active.get(cpu, now) >= self.hold_s:
                self._release(cpu)

    def _hold(self, cpu: int) -> None:
        try:
            current = self.cpus.read(cpu)
        except (OSError, ValueError) as e:
            self._give_up(cpu, f"{self.cpus.where(cpu)}: {_reason(e)}")
            return
        if current is not None and current <= self.limit_us:
            return                          # someone keeps it as low or lower: theirs
        self.held[cpu] = Held(current, self.limit_us)
        try:
            self._write_journal()
        except OSError as e:
            del self.held[cpu]
            self._give_up(cpu, f"{self.path} (the journal of what xdpd changed): {_reason(e)}")
            return
        try:
            self.cpus.write(cpu, self.limit_us)
        except OSError as e:
            del self.held[cpu]
            self._write_journal_quietly()
            self._give_up(cpu, f"{self.cpus.where(cpu)}: {_reason(e)}")
            return
        log.debug("CPU %d: wake-up latency capped at %s while its workers are busy (was %s)",
                  cpu, cpuidle.describe_limit(self.limit_us), cpuidle.describe_limit(current))

    def _give_up(self, cpu: int, why: str) -> None:
        self._broken.add(cpu)
        log.warning("CPU %d: cannot cap its wake-up latency (%s); its workers wake as the "
                    "CPU's idle states allow. Run as root with /sys writable, or set "
                    "workers.cpu_wake_latency_us: null to leave CPUs alone", cpu, why)

    def _release(self, cpu: int) -> None:
        held = self.held.pop(cpu)
        self._last_active.pop(cpu, None)
        put_back(self.cpus, cpu, held, "xdpd")
        self._write_journal_quietly()

    def release_all(self) -> None:
        """At stop: every held CPU gets its old cap back, then the journal goes."""
        for cpu in list(self.held):
            self._release(cpu)

    def _write_journal(self) -> None:
        if self.path is None:
            return
        if not self.held:
            run_record.remove(self.path)
            return
        run_record.write_json(self.path, {
            "format": FORMAT, "pid": self.owner.pid, "start_time": self.owner.start_time,
            "boot_id": self.owner.boot_id,
            "cpus": [{"cpu": cpu, "before": h.before, "set": h.set}
                     for cpu, h in sorted(self.held.items())]})

    def _write_journal_quietly(self) -> None:
        try:
            self._write_journal()
        except OSError as e:
            log.warning("%s (the CPUs xdpd holds): %s; a killed xdpd would leave their "
                        "wake-up latency capped", self.path, _reason(e))


def put_back(cpus: cpuidle.CpuAccess, cpu: int, held: Held, whose: str) -> bool:
    """Restore the cap `held` replaced while the file still says what was
    set; True when it did."""
    try:
        current = cpus.read(cpu)
        if current != held.set:
            log.info("CPU %d: wake-up latency cap is %s, not the %s %s set; left as it is",
                     cpu, cpuidle.describe_limit(current), cpuidle.describe_limit(held.set),
                     whose)
            return False
        cpus.write(cpu, held.before)
    except (OSError, ValueError) as e:
        log.warning("CPU %d: cannot put its wake-up latency cap back to %s (%s: %s); write "
                    "it by hand", cpu, cpuidle.describe_limit(held.before), cpus.where(cpu),
                    _reason(e))
        return False
    return True


def recover(path: str, cpus: cpuidle.CpuAccess | None = None,
            owner_alive=run_record.owner_alive, current_boot=run_record.boot_id) -> None:
    """At start: put back the caps a dead xdpd's journal names, then
    remove it.  WakeError if its owner still runs."""
    cpus = cpus or cpuidle.CpuAccess()

    def undo(owner, held):
        for cpu, h in sorted(held.items()):
            if put_back(cpus, cpu, h, f"xdpd pid {owner.pid} that died"):
                log.info("CPU %d: wake-up latency cap put back to %s (xdpd pid %d died "
                         "holding it)", cpu, cpuidle.describe_limit(h.before), owner.pid)
    run_record.recover_journal(path, read_journal, undo, kind="wake", nothing="nothing put back",
                               by_hand="check /sys/devices/system/cpu/cpu*/power/"
                                       "pm_qos_resume_latency_us",
                               refused=WakeError, owner_alive=owner_alive,
                               current_boot=current_boot)


def _reason(e: Exception) -> str:
    if isinstance(e, OSError) and e.errno:
        return errname(e.errno)
    return str(e)
