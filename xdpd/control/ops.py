"""Everything the supervisor asks of the OS, behind one object.

Owns: SystemOps (load a program, create the UMEM and sockets, eventfds,
spawn and signal processes, read a process's lineage), so that unit tests
can hand the supervisor a fake (supervisord's DummyOptions), and the
resolution of workers.user/group to ids.
Must not: hold state of its own or decide anything.
"""
from __future__ import annotations

import grp
import os
import pwd
import subprocess

from xdpd import exitcodes
from xdpd.datapath.umem import SharedUmem
from xdpd.isolated import python_argv
from xdpd.kernel.cpuidle import CpuAccess
from xdpd.kernel.ethtool import Ethtool
from xdpd.kernel.libbpf import detach_xdp, prog_info, query_xdp
from xdpd.kernel.netdev import Host
from xdpd.kernel.xdp_program import XdpProgram
from xdpd.kernel.xsk import XdpSocket


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived while starting; start() undoes what it did."""


class SetupError(Exception):
    """A start-up step failed; carries the exit code for the CLI."""

    def __init__(self, message: str, code: int = exitcodes.OSERR):
        super().__init__(message)
        self.code = code


class SystemOps:
    """Everything the supervisor asks of the OS, behind one object, so that
    unit tests can hand the supervisor a fake (supervisord's DummyOptions)."""

    def __init__(self, host=None):
        self.host = host or Host()

    def load_program(self, netdev: str):
        return XdpProgram.load(name=netdev)

    def create_umem(self, geometry, hugepages: str):
        return SharedUmem(geometry, hugepages)

    def create_socket(self, netdev: str, ifindex: int, queue: int):
        return XdpSocket(netdev, ifindex, queue)

    def query_xdp(self, ifindex: int) -> dict:
        """The XDP programs attached to ifindex (bpf.query_xdp)."""
        return query_xdp(ifindex)

    def prog_info(self, prog_id: int) -> tuple[str, str]:
        """(name, tag) of a loaded BPF program (bpf.prog_info)."""
        return prog_info(prog_id)

    def detach_xdp(self, ifindex: int, mode: str, prog_id: int) -> None:
        """Detach program prog_id from ifindex if it is still the one there."""
        detach_xdp(ifindex, mode, prog_id)

    def cpu_access(self):
        """The CPUs' wake-up latency caps in sysfs (kernel/cpuidle.py)."""
        return CpuAccess()

    def ethtool(self):
        """The ethtool requests steering makes (ethtool.Ethtool)."""
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

    def pin(self, pid: int, cpu: int) -> None:
        """Move process pid to cpu (adaptive placement)."""
        os.sched_setaffinity(pid, {cpu})

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
                         "user", exitcodes.CONFIG)
    if gid == 0:
        raise SetupError("workers.group: gid 0 is root's group; name an unprivileged group",
                         exitcodes.CONFIG)
    return pw.pw_uid, gid


def needs_capability(e: OSError, what: str, cap: str, then: str = "") -> OSError:
    """The error for an operation on workers.user's processes the kernel
    refused (EPERM): the capability it needs and where to keep it, for
    the supervisor's note_internal_error."""
    return OSError(e.errno, f"{what} needs {cap} (keep it in the unit's "
                            f"CapabilityBoundingSet=){'; ' + then if then else ''}")
