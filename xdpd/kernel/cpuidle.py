"""A CPU's idle states and its wake-up latency limit (PM QoS), in sysfs;
and a process's scheduler slice (sched_setattr).

Design
------
An idle CPU enters an idle state: on bare metal a C-state, in a virtual
machine usually a halt that hands the CPU back to the hypervisor.  Leaving
it is the wake-up latency a packet pays when it has to wake a worker
there.  The kernel lets user space cap it per CPU: the CPU's device PM QoS
"resume latency" (Documentation/ABI/testing/sysfs-devices-power), which the
cpuidle governors read before every idle entry and which rules out every
state whose exit latency is above it.  A cap of 0 leaves only the polling
state: the idle CPU spins in the kernel's idle loop (giving way at once to
any task that becomes runnable), so a wake-up needs neither an interrupt
nor a hypervisor.  The file's text is upside down for historic reasons:

    /sys/devices/system/cpu/cpuN/power/pm_qos_resume_latency_us
        "0"    no cap (the default)
        "n/a"  0 us: only states with no exit latency, i.e. polling
        "N"    N us

Here a cap is an int (us) and no cap is None; read_limit/write_limit
translate.  The value is one request per CPU, held by the file, not by a
process: who writes it must put the old value back (control/wake.py keeps
a journal for a supervisor that is killed).

The scheduler slice (Linux 6.12+, EEVDF custom slices): a SCHED_OTHER task
can ask for a shorter slice with sched_setattr's sched_runtime.  A task
with a short slice gets an early deadline when it wakes, so it preempts
the task that is running on its CPU instead of waiting for that one's
slice (3 ms by default) to end; it does not run any longer or more often
than its fair share.  Older kernels ignore the field for SCHED_OTHER:
set_slice reads it back and says whether it took.
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

SYSFS_CPU = "/sys/devices/system/cpu"
SLICE_MIN_US, SLICE_MAX_US = 100, 100_000   # the kernel's bounds for sched_runtime

_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SYS_SCHED_GETATTR = {"x86_64": 315, "aarch64": 275}


def limit_path(cpu: int, root: str = SYSFS_CPU) -> str:
    return os.path.join(root, f"cpu{cpu}", "power", "pm_qos_resume_latency_us")


def parse_limit(text: str) -> int | None:
    """The file's text as a cap in us; None: no cap.  ValueError otherwise."""
    text = text.strip()
    if text == "n/a":
        return 0
    value = int(text)
    if value < 0:
        raise ValueError(f"negative latency {value}")
    return None if value == 0 else value


def format_limit(us: int | None) -> str:
    """A cap in us (None: no cap) as the file takes it."""
    if us is None:
        return "0"
    if us < 0:
        raise ValueError(f"negative latency {us}")
    return "n/a" if us == 0 else str(us)


def describe_limit(us: int | None) -> str:
    """For messages: 'no cap', 'polling only (0 us)', '20 us'."""
    return "no cap" if us is None else "polling only (0 us)" if us == 0 else f"{us} us"


def read_limit(cpu: int, root: str = SYSFS_CPU) -> int | None:
    """The CPU's wake-up latency cap; OSError if it cannot be read (no
    such CPU, no PM QoS), ValueError if the text is not one."""
    with open(limit_path(cpu, root)) as f:
        return parse_limit(f.read())


def write_limit(cpu: int, us: int | None, root: str = SYSFS_CPU) -> None:
    """Set the CPU's cap (root); OSError as the kernel answers it."""
    with open(limit_path(cpu, root), "w") as f:
        f.write(format_limit(us))


class CpuAccess:
    """The sysfs calls, behind one object so that tests can pass a fake."""

    def __init__(self, root: str = SYSFS_CPU):
        self.root = root

    def read(self, cpu: int) -> int | None:
        return read_limit(cpu, self.root)

    def write(self, cpu: int, us: int | None) -> None:
        write_limit(cpu, us, self.root)

    def where(self, cpu: int) -> str:
        return limit_path(cpu, self.root)


@dataclass(frozen=True)
class IdleState:
    name: str
    exit_latency_us: int
    disabled: bool
    time_us: int                # spent in it since boot


def idle_driver(root: str = SYSFS_CPU) -> str | None:
    """The cpuidle driver (intel_idle, acpi_idle, haltpoll, ...); None
    without cpuidle (the CPU idles in the architecture's default halt)."""
    try:
        with open(os.path.join(root, "cpuidle", "current_driver")) as f:
            name = f.read().strip()
    except OSError:
        return None
    return None if name in ("", "none") else name


def idle_states(cpu: int, root: str = SYSFS_CPU) -> tuple[IdleState, ...]:
    """The CPU's idle states, shallowest first; () without cpuidle.  A
    state whose files cannot be read is left out."""
    base = os.path.join(root, f"cpu{cpu}", "cpuidle")
    try:
        names = sorted((n for n in os.listdir(base) if n.startswith("state")),
                       key=lambda n: int(n[5:]))
    except (OSError, ValueError):
        return ()

    def read(state: str, leaf: str) -> str:
        with open(os.path.join(base, state, leaf)) as f:
            return f.read().strip()
    states = []
    for n in names:
        try:
            states.append(IdleState(read(n, "name"), int(read(n, "latency")),
                                    read(n, "disable") == "1", int(read(n, "time"))))
        except (OSError, ValueError):
            continue
    return tuple(states)


def poll_time_us(cpu: int, root: str = SYSFS_CPU) -> int | None:
    """Time the CPU spent idle in polling states (exit latency 0, "POLL")
    since boot, in us; None without cpuidle."""
    polling = [s.time_us for s in idle_states(cpu, root) if s.exit_latency_us == 0]
    return sum(polling) if polling else None


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
                ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32)]


def _sched_call(numbers: dict[str, int], *args) -> None:
    number = numbers.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"sched_setattr: not known on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def get_slice_us(pid: int = 0) -> int:
    """The task's slice in us (sched_getattr's sched_runtime): the one it
    asked for, else the kernel's default (6.12+), or 0 on a kernel without
    custom slices."""
    attr = _SchedAttr()
    _sched_call(_SYS_SCHED_GETATTR, pid, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    return attr.sched_runtime // 1000


def set_slice(us: int, pid: int = 0) -> bool:
    """Ask for a scheduler slice of `us` (SLICE_MIN_US..SLICE_MAX_US) for
    the task, keeping SCHED_OTHER and its nice value.  False when the
    kernel took the call but ignores the slice (before 6.12); OSError when
    it refuses it."""
    if not SLICE_MIN_US <= us <= SLICE_MAX_US:
        raise ValueError(f"slice {us} us is outside {SLICE_MIN_US}..{SLICE_MAX_US}")
    attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=os.SCHED_OTHER,
                      sched_nice=os.getpriority(os.PRIO_PROCESS, pid),
                      sched_runtime=us * 1000)
    _sched_call(_SYS_SCHED_SETATTR, pid, ctypes.byref(attr), 0)
    return get_slice_us(pid) == us
