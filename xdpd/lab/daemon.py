"""A real `xdpd run` inside a veth lab: used by the demo, the integration
tests and the benchmarks, so that all three drive the daemon the same way
an operator does (a process, a YAML file, /metrics)."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from xdpd.isolated import python_argv
from xdpd.lab.netns import pids_in_netns
from xdpd.lab.traffic import child_env

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class DaemonError(RuntimeError):
    pass


def run_in_netns(ns: str, fn, *args, timeout: float = 30.0):
    """Call fn(*args) on a thread that joined network namespace ns.

    setns() moves only the calling thread, so the caller's own namespace
    never changes."""
    box: dict = {}

    def target():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as e:     # re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"call in netns {ns} did not return within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _http_get(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class Metrics:
    """One parsed scrape: samples by name, each a list of (labels, value)."""

    def __init__(self, text: str):
        self.text = text
        self.samples: dict[str, list[tuple[dict, float]]] = defaultdict(list)
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                self.samples[s.name].append((s.labels, s.value))

    def value(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return sum(v for lab, v in self.samples.get(name, [])
                   if all(lab.get(k) == str(x) for k, x in labels.items()))

    def by(self, name: str, *keys: str) -> dict[tuple, float]:
        out: dict[tuple, float] = defaultdict(float)
        for lab, v in self.samples.get(name, []):
            out[tuple(lab.get(k) for k in keys)] += v
        return dict(out)


class LabDaemon:
    """`xdpd run` in the lab's dut namespace, on a config written for it."""

    def __init__(self, lab, config_yaml: str, port: int = 9464, log_path: str | None = None,
                 wrap: list[str] | None = None, command: list[str] | None = None,
                 cwd: str | None = None):
        self.lab = lab
        self.port = port
        # a command prefix for `xdpd run` (setpriv, strace) inside the namespace
        self.wrap = list(wrap or [])
        # `xdpd` itself (default: this package, isolated), and where it starts
        self.command = list(command) if command else python_argv("xdpd")
        self.cwd = cwd
        self._dir = tempfile.TemporaryDirectory(prefix="xdpd-lab-")
        self.config_path = os.path.join(self._dir.name, "xdpd.yaml")
        # every lab daemon has a control socket of its own
        self.socket_path = os.path.join(self._dir.name, "xdpd.sock")
        self.write_config(config_yaml)
        self.log_path = log_path or os.path.join(self._dir.name, "xdpd.log")
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 30.0) -> "LabDaemon":
        log = open(self.log_path, "ab")
        try:
            self.proc = self.lab.popen(
                self.lab.dut_ns,
                [*self.wrap, *self.command, "run", "--config", self.config_path],
                stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=self.cwd)
        finally:
            log.close()
        self.wait_ready(ready_timeout)
        return self

    def write_config(self, config_yaml: str) -> None:
        """(Re)write the daemon's file; a `control:` section is added
        unless the YAML has one."""
        if not any(line.startswith("control:") for line in config_yaml.splitlines()):
            config_yaml += f'\ncontrol:\n  socket: "{self.socket_path}"\n'
        with open(self.config_path, "w") as f:
            f.write(config_yaml)

    def request(self, command: str, timeout: float = 60.0, **args) -> dict:
        """Ask the daemon over its control socket (xdpd.control.request)."""
        from xdpd.control.server import request
        return request(self.socket_path, command, timeout=timeout, **args)

    def status(self) -> dict:
        return self.request("status")

    def reload(self, config_yaml: str | None = None) -> dict:
        """Rewrite the file (if given) and reload; ControlError if refused."""
        if config_yaml is not None:
            self.write_config(config_yaml)
        return self.request("reload")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def worker_pids(self) -> dict[str, int]:
        """Running workers by name ("in0/q1"), from their process titles."""
        prefix = b"xdpd: worker "
        found = {}
        for pid in pids_in_netns(self.lab.dut_ns):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                continue            # gone meanwhile
            if title.startswith(prefix):
                found[title[len(prefix):].split(b"\0")[0].strip().decode()] = pid
        return found

    def scrape(self, timeout: float = 5.0) -> Metrics:
        url = f"http://127.0.0.1:{self.port}/metrics"
        return Metrics(run_in_netns(self.lab.dut_ns, _http_get, url, timeout,
                                    timeout=timeout + 1))

    def wait_for(self, predicate, timeout: float = 10.0) -> Metrics:
        """Scrape until predicate(metrics) holds; return those metrics."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.scrape()
            if predicate(m):
                return m
            if time.monotonic() > deadline:
                raise DaemonError(f"condition not met within {timeout} s; last scrape:\n{m.text}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"xdpd exited with status {self.proc.returncode} "
                                  f"before it was ready:\n{self.log()}")
            try:
                if self.scrape(timeout=1.0).value("xdpd_ready") == 1:
                    return
            except (OSError, TimeoutError) as e:
                last = e
            time.sleep(0.05)
        raise DaemonError(f"xdpd not ready within {timeout} s ({last}):\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it hangs. Returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> int:
        """SIGKILL the supervisor (what a crash or the OOM killer does) and
        reap it; its workers are left to notice on their own.  Returns its
        pid.  start() may be called again, on the same file and socket."""
        pid = self.proc.pid
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        return pid

    @property
    def record_path(self) -> str:
        """The daemon's record of the XDP programs it attached (record.py)."""
        from xdpd.control.record import record_path
        return record_path(self.socket_path)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> "LabDaemon":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def forward_config(lab, *, port: int = 9464, reverse: str = "forward",
                   extra: str = "") -> str:
    """in0 -> out0 rewriting the destination MAC to the sink's; out0 -> in0
    back to the generator's, or dropped (reverse="drop")."""
    back = (f"""  - from: {lab.OUT_DEV}
    to: {lab.IN_DEV}
    set_dst_mac: "{lab.MACS[lab.GEN_DEV]}"
""" if reverse == "forward" else f"""  - from: {lab.OUT_DEV}
    action: drop
""")
    return f"""interfaces:
  - name: {lab.IN_DEV}
    queues: all
  - name: {lab.OUT_DEV}
    queues: all
forward:
  - from: {lab.IN_DEV}
    to: {lab.OUT_DEV}
    set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"
{back}metrics:
  listen: "127.0.0.1:{port}"
{extra}"""
