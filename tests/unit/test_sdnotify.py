"""sd_notify against real AF_UNIX datagram sockets: the exact bytes each
method sends, what from_env() reads and removes, and that a missing or dead
listener never raises into the daemon."""
import os
import re
import secrets
import socket
import subprocess
import time

import pytest

from xdpd.control import sdnotify
from xdpd.control.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path):
    """A bound datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


@pytest.fixture
def env(monkeypatch):
    """os.environ without any systemd variable the test run may have."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def received(sock) -> bytes:
    return sock.recv(4096)


def nothing_queued(sock) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_each_method_sends_its_exact_message(listener, env):
    path, sock = listener
    env.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_env()
    assert n.enabled

    n.ready()
    assert received(sock) == b"READY=1"
    n.ready("forwarding: 4 workers")
    assert received(sock) == b"READY=1\nSTATUS=forwarding: 4 workers"
    n.stopping()
    assert received(sock) == b"STOPPING=1"
    n.status("reloading generation 2")
    assert received(sock) == b"STATUS=reloading generation 2"
    n.watchdog()
    assert received(sock) == b"WATCHDOG=1"
    assert nothing_queued(sock)


def test_reloading_carries_the_monotonic_clock_in_microseconds(listener, env):
    path, sock = listener
    env.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_env()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    m = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", received(sock))
    assert m, "RELOADING=1 without MONOTONIC_USEC"
    assert before <= int(m.group(1)) <= after


def test_a_multi_line_status_stays_one_assignment(listener, env):
    path, sock = listener
    env.setenv("NOTIFY_SOCKET", path)
    Notifier.from_env().status("first\nREADY=1")
    assert received(sock) == b"STATUS=first READY=1"


def test_abstract_namespace_address(env):
    name = f"xdpd-test-{os.getpid()}-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        env.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier.from_env()
        n.ready("up")
        assert received(sock) == b"READY=1\nSTATUS=up"


def test_from_env_removes_the_variables_so_workers_do_not_inherit_them(listener, env):
    path, _ = listener
    env.setenv("NOTIFY_SOCKET", path)
    env.setenv("WATCHDOG_USEC", "30000000")
    Notifier.from_env()
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    # what a spawned worker sees
    child = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    assert "NOTIFY_SOCKET=" not in child and "WATCHDOG_USEC=" not in child


def test_watchdog_without_watchdog_pid_is_on_at_half_the_interval(listener, env):
    path, _ = listener
    env.setenv("NOTIFY_SOCKET", path)
    env.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier.from_env()
    assert n.watchdog_interval() == pytest.approx(15.0)


def test_watchdog_for_this_pid_is_on(listener, env):
    path, _ = listener
    env.setenv("NOTIFY_SOCKET", path)
    env.setenv("WATCHDOG_USEC", "4000000")
    env.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().watchdog_interval() == pytest.approx(2.0)


def test_watchdog_for_another_pid_is_off(listener, env):
    path, sock = listener
    env.setenv("NOTIFY_SOCKET", path)
    env.setenv("WATCHDOG_USEC", "30000000")
    env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    n = Notifier.from_env()
    assert n.watchdog_interval() is None
    n.ready()                       # notifications still go out
    assert received(sock) == b"READY=1"


@pytest.mark.parametrize("usec", ["0", "soon", ""])
def test_unusable_watchdog_usec_means_no_watchdog(listener, env, usec):
    path, _ = listener
    env.setenv("NOTIFY_SOCKET", path)
    env.setenv("WATCHDOG_USEC", usec)
    assert Notifier.from_env().watchdog_interval() is None


def test_without_notify_socket_every_method_is_a_no_op(env, monkeypatch):
    env.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier.from_env()
    assert not n.enabled
    assert n.watchdog_interval() is None

    def no_socket(*args, **kw):
        raise AssertionError("a disabled notifier opened a socket")
    monkeypatch.setattr(sdnotify.socket, "socket", no_socket)
    n.ready("x")
    n.reloading()
    n.stopping()
    n.status("x")
    n.watchdog()


@pytest.mark.parametrize("value", ["relative/path", "@", "vsock:2:1234"])
def test_an_address_that_is_not_a_unix_socket_disables_it(env, value):
    env.setenv("NOTIFY_SOCKET", value)
    n = Notifier.from_env()
    assert not n.enabled
    n.ready()


def test_a_missing_socket_does_not_raise_nor_leak_an_fd(tmp_path, env):
    env.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    n = Notifier.from_env()
    before = open_fds()
    n.ready("x")
    n.watchdog()
    assert open_fds() == before


def test_a_closed_listener_does_not_raise(tmp_path, env):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.close()                    # the path stays; connecting is refused
    env.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_env()
    before = open_fds()
    n.stopping()
    n.reloading()
    assert open_fds() == before


def test_a_path_longer_than_sun_path_does_not_raise(env):
    env.setenv("NOTIFY_SOCKET", "/" + "x" * 200)
    n = Notifier.from_env()
    assert n.enabled
    n.ready()


def test_the_socket_is_opened_close_on_exec(listener, env, monkeypatch):
    path, sock = listener
    env.setenv("NOTIFY_SOCKET", path)
    types = []
    real = socket.socket

    def recording(family, type_, *args, **kw):
        types.append(type_)
        return real(family, type_, *args, **kw)
    monkeypatch.setattr(sdnotify.socket, "socket", recording)
    n = Notifier.from_env()                     # its one socket is made here
    n.watchdog()
    assert received(sock) == b"WATCHDOG=1"
    assert types and all(t & socket.SOCK_CLOEXEC for t in types)


def test_the_watchdog_ping_needs_no_free_descriptor(tmp_path, env):
    import resource
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    env.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    env.setenv("WATCHDOG_USEC", "1000000")
    n = Notifier.from_env()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hog = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(map(int, open_fds())) + 8, hard))
        try:
            while True:
                hog.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass                                # every descriptor taken
        assert n.watchdog() is True
    finally:
        for fd in hog:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert listener.recv(100) == b"WATCHDOG=1"
    listener.close()
