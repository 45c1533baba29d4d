"""The veth lab: three network namespaces and two veth pairs.

    ns {prefix}-gen:   gen0  <--veth-->  in0   :ns {prefix}-dut   (xdpd runs here)
    ns {prefix}-dut:   out0  <--veth-->  sink0 :ns {prefix}-sink

`xdpd demo`, the integration tests and the benchmarks all use this one lab.

Why it is built the way it is:

- Every device is created directly inside its namespace (`ip -n NS link add
  ... peer ... netns NS2`), so nothing ever appears in the caller's namespace
  and two labs can run side by side with the same device names.
- IPv6 is switched off in each namespace (all, default and per device) before
  any link comes up, so the kernel sends no router solicitations or neighbour
  discovery frames; the only frames on the wires are the ones a test sends.
- GRO is on for gen0 and sink0: a veth end that receives XDP-redirected frames
  needs NAPI on the receiving side, and GRO is what gives it NAPI without an
  XDP program of its own (kernel commit "veth: allow enabling NAPI even
  without XDP", Linux 5.13).
- Commands run through `nsenter --net=/run/netns/NS`, not `ip netns exec`,
  because the latter remounts /sys and hides the bpffs xdpd pins to.
- Namespace names carry the creating pid: `{base}{pid}{4 hex}-{role}`.
  cleanup_stale() uses it to remove what an interrupted run left behind
  without touching the lab of a run that is still alive.
- destroy() first ends the processes still inside the lab's namespaces (a
  forwarder or sink a failed test did not stop): a namespace with a process
  in it survives `ip netns del`, invisible, together with its veths and any
  XDP program attached to them.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import ClassVar

import psutil

NETNS_DIR = "/run/netns"
ROLES = ("gen", "dut", "sink")


class LabError(RuntimeError):
    """A command that builds or tears down the lab failed."""

    def __init__(self, cmd: list[str] | str, stderr: str, what: str = ""):
        self.cmd = cmd if isinstance(cmd, str) else " ".join(cmd)
        self.stderr = (stderr or "").strip()
        msg = f"{what}: " if what else ""
        msg += f"`{self.cmd}` failed"
        if self.stderr:
            msg += f": {self.stderr}"
        super().__init__(msg)


def make_prefix(base: str = "xdpd") -> str:
    """A fresh lab prefix: base, the creating pid, 4 random hex digits.

    base may be "xdpd" followed by lowercase letters (e.g. "xdpdbench"); the
    pid must stay right before the 4 hex digits for cleanup_stale()."""
    return f"{base}{os.getpid()}{secrets.token_hex(2)}"


def _run(cmd: list[str], check: bool = True, what: str = "",
         timeout: float = 30.0) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(cmd, str(exc), what) from exc
    if check and proc.returncode != 0:
        raise LabError(cmd, proc.stderr or proc.stdout, what)
    return proc


def _ns_exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def nsenter(ns: str) -> list[str]:
    """Command prefix that runs the rest of a command line inside netns ns."""
    return ["nsenter", f"--net={NETNS_DIR}/{ns}", "--"]


def pids_in_netns(ns: str) -> list[int]:
    """Processes whose network namespace is ns (what `ip netns pids` does)."""
    try:
        st = os.stat(os.path.join(NETNS_DIR, ns))
    except FileNotFoundError:
        return []
    key = (st.st_dev, st.st_ino)
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            pst = os.stat(f"/proc/{entry}/ns/net")
        except OSError:          # gone meanwhile, a zombie, or a kernel thread
            continue
        if (pst.st_dev, pst.st_ino) == key:
            pids.append(int(entry))
    return pids


@contextlib.contextmanager
def hugepages_reserved(extra: int, path: str = "/proc/sys/vm/nr_hugepages"):
    """Reserve `extra` more default-size huge pages for the block; put the
    old count back afterwards, also on failure."""
    with open(path) as f:
        before = int(f.read())
    try:
        with open(path, "w") as f:
            f.write(str(before + extra))
        yield
    finally:
        with open(path, "w") as f:
            f.write(str(before))


def _end_processes(ns: str, term_wait: float = 3.0, kill_wait: float = 2.0) -> None:
    """SIGTERM what still runs in ns, SIGKILL what has not left by the deadline."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        pids = pids_in_netns(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pids_in_netns(ns):
                return
            time.sleep(0.02)


def _delete_ns(ns: str) -> None:
    """Remove netns ns; a namespace that is already gone is not an error."""
    if not _ns_exists(ns):
        return
    _end_processes(ns)
    proc = _run(["ip", "netns", "del", ns], check=False)
    if proc.returncode != 0 and _ns_exists(ns):
        raise LabError(["ip", "netns", "del", ns], proc.stderr, f"delete netns {ns}")


@dataclass
class Lab:
    """One veth lab; create with Lab.create(), remove with destroy() or `with`."""

    prefix: str
    queues: int
    gen_ns: str
    dut_ns: str
    sink_ns: str
    GEN_DEV: ClassVar[str] = "gen0"
    IN_DEV: ClassVar[str] = "in0"
    OUT_DEV: ClassVar[str] = "out0"
    SINK_DEV: ClassVar[str] = "sink0"
    # Locally administered (bit 1 of the first octet), never seen on a real LAN.
    MACS: ClassVar[dict[str, str]] = {
        "gen0": "02:00:00:00:00:01",
        "in0": "02:00:00:00:00:02",
        "out0": "02:00:00:00:00:03",
        "sink0": "02:00:00:00:00:04",
    }

    @classmethod
    def create(cls, prefix: str | None = None, queues: int = 2) -> "Lab":
        """Build the lab; on any failure remove what was made and raise LabError."""
        if queues < 1:
            raise ValueError(f"queues must be >= 1, not {queues}")
        if prefix is None:
            prefix = make_prefix()
            while any(_ns_exists(f"{prefix}-{r}") for r in ROLES):
                prefix = make_prefix()
        lab = cls(prefix=prefix, queues=queues, gen_ns=f"{prefix}-gen",
                  dut_ns=f"{prefix}-dut", sink_ns=f"{prefix}-sink")
        try:
            lab._build()
        except BaseException as exc:
            try:
                lab.destroy()
            except LabError:
                pass            # the original failure is the one worth reporting
            if isinstance(exc, LabError):
                raise
            if isinstance(exc, Exception):
                raise LabError("lab create", str(exc), f"create lab {prefix}") from exc
            raise               # KeyboardInterrupt and friends pass through
        return lab

    def _build(self) -> None:
        for ns in (self.gen_ns, self.dut_ns, self.sink_ns):
            _run(["ip", "netns", "add", ns], what=f"create netns {ns}")
            self._disable_ipv6(ns, ["all", "default"])
            self.run(ns, "ip", "link", "set", "lo", "up")
        self._add_veth(self.gen_ns, self.GEN_DEV, self.dut_ns, self.IN_DEV)
        self._add_veth(self.dut_ns, self.OUT_DEV, self.sink_ns, self.SINK_DEV)
        for dev, ns in self.devices.items():
            self._disable_ipv6(ns, [dev])
        for dev in (self.GEN_DEV, self.SINK_DEV):
            self.run(self.devices[dev], "ethtool", "-K", dev, "gro", "on")
        for dev, ns in self.devices.items():
            self.run(ns, "ip", "link", "set", dev, "up")

    def _add_veth(self, ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> None:
        q = str(self.queues)
        _run(["ip", "-n", ns_a, "link", "add", dev_a,
              "numtxqueues", q, "numrxqueues", q, "address", self.MACS[dev_a],
              "type", "veth", "peer", "name", dev_b,
              "numtxqueues", q, "numrxqueues", q, "address", self.MACS[dev_b],
              "netns", ns_b],
             what=f"create veth {ns_a}/{dev_a} <-> {ns_b}/{dev_b}")

    def _disable_ipv6(self, ns: str, names: list[str]) -> None:
        # /proc/sys/net is per network namespace: it shows the netns of the
        # process that opens it, hence sysctl through nsenter.
        if not os.path.isdir("/proc/sys/net/ipv6"):
            return              # kernel without IPv6: nothing will be sent
        for name in names:
            self.run(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1")

    @property
    def devices(self) -> dict[str, str]:
        """Device name -> the namespace it lives in."""
        return {self.GEN_DEV: self.gen_ns, self.IN_DEV: self.dut_ns,
                self.OUT_DEV: self.dut_ns, self.SINK_DEV: self.sink_ns}

    @property
    def namespaces(self) -> list[str]:
        return [self.gen_ns, self.dut_ns, self.sink_ns]

    def ns_of(self, dev: str) -> str:
        return self.devices[dev]

    def nsenter(self, ns: str) -> list[str]:
        """Prefix for a command line run in ns (keeps /sys and bpffs visible)."""
        return nsenter(ns)

    def run(self, ns: str, *cmd: str, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run cmd inside ns; capture text output; LabError if check and it fails."""
        return _run(self.nsenter(ns) + list(cmd), check=check, timeout=timeout,
                    what=f"in netns {ns}")

    def popen(self, ns: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        """Start cmd inside ns as a child process (Popen keyword arguments pass through)."""
        return subprocess.Popen(self.nsenter(ns) + list(cmd), **kwargs)

    def destroy(self) -> None:
        """Delete the lab's namespaces (their veths go with them). Idempotent."""
        errors = []
        for ns in (self.gen_ns, self.dut_ns, self.sink_ns):
            try:
                _delete_ns(ns)
            except LabError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc_info) -> None:
        self.destroy()


_NAME_TEMPLATE = r"^{base}[a-z_]*?(\d+)[0-9a-f]{{4}}-(?:gen|dut|sink)$"


def _process_start_time(pid: int) -> float | None:
    """Wall-clock start time of pid (psutil), None if there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _creator_alive(pid: int, ns_path: str) -> bool:
    """True if the process that created the namespace at ns_path still runs.

    pid_max is small here (32768), so a pid can be reused: a process that
    started after the namespace was made cannot be its creator."""
    start = _process_start_time(pid)
    if start is None:
        return False
    try:
        made = os.stat(ns_path).st_mtime
    except FileNotFoundError:
        return False
    # btime has one-second resolution; allow for it.
    return start <= made + 2.0


def cleanup_stale(prefix_startswith: str = "xdpd") -> list[str]:
    """Remove lab namespaces left by runs whose creating process is gone.

    Matches names `{prefix_startswith}[a-z_]*{pid}{4 hex}-{gen,dut,sink}`;
    namespaces of a live creator are left alone. Returns the removed names."""
    pattern = re.compile(_NAME_TEMPLATE.format(base=re.escape(prefix_startswith)))
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []
    removed, errors = [], []
    for name in names:
        m = pattern.match(name)
        if not m or _creator_alive(int(m.group(1)), os.path.join(NETNS_DIR, name)):
            continue
        try:
            _delete_ns(name)
        except LabError as exc:
            errors.append(exc)
            continue
        removed.append(name)
    if errors:
        raise errors[0]
    return removed
