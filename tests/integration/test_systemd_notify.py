"""systemd's notify protocol, against a fake NOTIFY_SOCKET: READY only once
forwarding, RELOADING/READY around a reload, STOPPING on stop, and
WATCHDOG pings that stop while a worker hangs."""
import os
import signal
import socket
import time

import pytest
from integration_helpers import ROOT_ONLY

from xdpd.lab.daemon import forward_config

pytestmark = ROOT_ONLY


class FakeSystemd:
    """The manager's end: a datagram socket that records what arrives,
    with the time it arrived."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def drain(self, timeout: float = 0.0) -> None:
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
            self.sock.settimeout(0.0)

    def wait_for(self, key: str, value: str = "1", after: float = 0.0,
                  timeout: float = 15.0) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            for t, fields in self.messages:
                if t >= after and fields.get(key) == value:
                    return t, fields
            if time.monotonic() > deadline:
                raise AssertionError(f"no {key}={value} within {timeout} s: {self.messages}")
            self.drain(timeout=0.05)

    def times(self, key: str) -> list[float]:
        return [t for t, f in self.messages if key in f]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path, monkeypatch):
    manager = FakeSystemd(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")       # pings every 0.5 s
    yield manager
    manager.close()


def test_notify_protocol_ready_reload_watchdog_stop(lab, start_daemon, fake_systemd):
    d = start_daemon(forward_config(lab))
    t_ready, ready = fake_systemd.wait_for("READY")
    assert "4/4 workers" in ready.get("STATUS", "")
    # READY came after every worker was forwarding: none was sent before
    # the daemon reported ready on /metrics, and no other READY came first
    assert d.scrape().value("xdpd_ready") == 1
    assert [f for _, f in fake_systemd.messages if "READY" in f] == [ready]

    # watchdog pings while all workers heartbeat
    fake_systemd.wait_for("WATCHDOG", after=t_ready)
    fake_systemd.wait_for("WATCHDOG", after=time.monotonic())

    # reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again
    before = time.monotonic()
    d.reload(forward_config(lab, reverse="drop"))
    t_rel, reloading = fake_systemd.wait_for("RELOADING", after=before)
    assert int(reloading["MONOTONIC_USEC"]) >= int(before * 1e6)
    t_again, _ = fake_systemd.wait_for("READY", after=t_rel)
    assert t_again >= t_rel

    # a hung worker: the pings stop until the supervisor has replaced it
    victim = d.worker_pids()[f"{lab.IN_DEV}/q0"]
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # the supervisor kills a worker after 5 s without a heartbeat and
        # starts a new one; wait until it did
        deadline = time.monotonic() + 20
        while d.worker_pids().get(f"{lab.IN_DEV}/q0") in (None, victim):
            assert time.monotonic() < deadline, "hung worker not replaced"
            fake_systemd.drain(timeout=0.1)
        replaced_at = time.monotonic()
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    resumed, _ = fake_systemd.wait_for("WATCHDOG", after=replaced_at, timeout=10)
    pings = fake_systemd.times("WATCHDOG")
    # a heartbeat counts as fresh for 1 s, and a ping is timed when this
    # test reads it: none from 2 s after the hang until the replacement
    silent = [t for t in pings if stopped_at + 2.0 < t < replaced_at - 0.2]
    assert not silent, f"watchdog pinged while a worker hung: {silent}"
    assert replaced_at - stopped_at > 4, "the worker was replaced too early to tell"

    # stop: STOPPING=1
    before = time.monotonic()
    assert d.stop() == 0
    fake_systemd.wait_for("STOPPING", after=before, timeout=5)
