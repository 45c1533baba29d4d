"""`xdpd top`: the pure frame, the one-frame path, and the live view on a
real pseudo-terminal, all against a fake daemon on a unix socket."""
from __future__ import annotations

import copy
import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import sys
import tempfile
import termios
import threading
import time

import pytest

from xdpd import exitcodes
from xdpd.cli.top import human, main, render, render_error

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import xdpd.control.server  # noqa: F401
    HAVE_CONTROL = True
except ImportError:             # the control socket's client is not there yet
    HAVE_CONTROL = False
needs_control = pytest.mark.skipif(not HAVE_CONTROL, reason="xdpd.control is not there")


# -- a status answer ------------------------------------------------------------

def worker(netdev: str, queue: int, **over) -> dict:
    w = {"name": f"{netdev}/q{queue}", "netdev": netdev, "queue": queue, "cpu": queue + 1,
         "pid": 4000 + queue, "state": "running", "uptime_seconds": 12.0, "restarts": 0,
         "rx_packets": 100, "tx_packets": 100, "rx_bytes": 6400, "tx_bytes": 6400,
         "drops": {"no_rule": 0, "rule": 0, "invalid": 0, "egress_down": 0},
         "rx_pps": 1_234_567.0, "tx_pps": 12_345.0, "drop_pps": 0.0,
         "xsk": {"rx_dropped": 5, "rx_invalid_descs": 0, "tx_invalid_descs": 0,
                 "rx_ring_full": 2, "rx_fill_ring_empty_descs": 9, "tx_ring_empty_descs": 0},
         "rings": {"rx": 0, "tx": 0, "fill": 4096, "completion": 0}}
    w.update(over)
    return w


def sample(workers: list[dict] | None = None, **over) -> dict:
    st = {"schema": 1, "version": "0.4.0", "pid": 123, "uptime_seconds": 754.5, "ready": True,
          "config": {"path": "/etc/xdpd/xdpd.yaml", "generation": 3},
          "last_reload": {"at": 1763700000.0, "result": "applied",
                          "message": "2 workers started", "duration_seconds": 0.02},
          "umem": {"frames": 16384, "frame_size": 2048, "worker_slots": 6,
                   "worker_slots_used": 4,
                   "frames_by_location": {"free": 11, "rx": 22, "tx": 33, "handoff": 0}},
          "interfaces": [{"name": "in0", "ifindex": 5, "xdp_mode": "native",
                          "socket_mode": "copy", "queues": [0, 1], "rx_queues": 2,
                          "rule": "forward to out0"}],
          "workers": workers if workers is not None else [
              # Out of order on purpose: the view sorts by netdev, then queue.
              worker("out0", 0),
              worker("in0", 1, pid=None, uptime_seconds=None, state="backoff", restarts=3,
                     rx_pps=0.0, tx_pps=0.0, drop_pps=2_500.0,
                     drops={"no_rule": 12, "rule": 0, "invalid": 3_000, "egress_down": 0}),
              worker("in0", 0)]}
    st.update(over)
    return st


def rows_by_name(lines: list[str]) -> dict[str, str]:
    return {line.split()[0]: line for line in lines if line[:1].strip()}


def cell_end(header: str, title: str) -> int:
    """Where a right-aligned column ends: its title ends there too."""
    return header.index(title) + len(title)


# -- render ---------------------------------------------------------------------

def test_header_says_what_runs():
    lines = render(sample(), None, 0.0, 200, 50)
    assert lines[0].startswith("xdpd 0.4.0  pid 123  up 12m34s  ready  config generation 3")
    assert "/etc/xdpd/xdpd.yaml" in lines[0]
    assert lines[1].startswith("last reload: applied at ")
    assert lines[1].endswith(" in 20 ms: 2 workers started")
    assert "workers: 2/3 running" in lines[2]
    assert "16384 frames x 2048 B, slots 4/6; frames free 11 rx 22 tx 33 handoff 0" in lines[2]


def test_rows_sorted_with_units_and_aligned_columns():
    lines = render(sample(), None, 0.0, 200, 50)
    header = next(line for line in lines if line.startswith("NAME"))
    body = lines[lines.index(header) + 1:]
    assert [line.split()[0] for line in body] == ["in0/q0", "in0/q1", "out0/q0", "TOTAL"]

    row = rows_by_name(body)["in0/q0"]
    assert row.split()[:8] == ["in0/q0", "running", "1", "4000", "1.2M", "12.3k", "0",
                               # no previous refresh: no kernel rate yet
                               "-"]
    for title, value in [("PID", "4000"), ("RX/s", "1.2M"), ("TX/s", "12.3k"),
                         ("RST", "0")]:
        end = cell_end(header, title)
        assert row[end - len(value):end] == value, title
    # rx_dropped 5 + rx_ring_full 2, since start
    assert row.endswith("  kern:7")


def test_worker_not_running_shows_no_pid_and_its_drops():
    lines = render(sample(), None, 0.0, 200, 50)
    header = next(line for line in lines if line.startswith("NAME"))
    row = rows_by_name(lines)["in0/q1"]
    assert row.split()[1:4] == ["backoff", "2", "-"]
    assert row[cell_end(header, "PID") - 1] == "-"
    assert row[cell_end(header, "DROP/s") - 4:cell_end(header, "DROP/s")] == "2.5k"
    assert row[cell_end(header, "RST") - 1] == "3"
    assert row.endswith("  norule:12 inval:3.0k kern:7")


def test_totals_row_sums_every_worker():
    lines = render(sample(), None, 0.0, 200, 50)
    header = next(line for line in lines if line.startswith("NAME"))
    total = lines[-1]
    assert total.split()[:2] == ["TOTAL", "2/3"]
    for title, value in [("RX/s", "2.5M"), ("TX/s", "24.7k"), ("DROP/s", "2.5k"),
                         ("RST", "3")]:
        end = cell_end(header, title)
        assert total[end - len(value):end] == value, title
    assert total.endswith("  norule:12 inval:3.0k kern:21")


def test_kernel_rates_come_from_the_previous_refresh():
    before = sample()
    now = copy.deepcopy(before)
    w = next(w for w in now["workers"] if w["name"] == "in0/q0")
    w["xsk"]["rx_dropped"] += 30            # 30 + 10 over 2 s: 20/s
    w["xsk"]["rx_ring_full"] += 10
    w["xsk"]["rx_fill_ring_empty_descs"] += 8000
    lines = render(now, before, 2.0, 200, 50)
    header = next(line for line in lines if line.startswith("NAME"))
    rows = rows_by_name(lines)
    for name, kdrop, fill in [("in0/q0", "20", "4.0k"), ("out0/q0", "0", "0"),
                              ("TOTAL", "20", "4.0k")]:
        row = rows[name]
        assert row[cell_end(header, "KDROP/s") - len(kdrop):cell_end(header, "KDROP/s")] \
            == kdrop, name
        assert row[cell_end(header, "FILL-E/s") - len(fill):cell_end(header, "FILL-E/s")] \
            == fill, name


@pytest.mark.parametrize("change", ["daemon-restarted", "counter-went-down", "unreadable"])
def test_no_kernel_rate_where_the_counters_do_not_compare(change):
    before = sample()
    now = copy.deepcopy(before)
    if change == "daemon-restarted":
        now["pid"] = 124
        for w in now["workers"]:
            w["xsk"]["rx_dropped"] += 100
    elif change == "counter-went-down":
        for w in now["workers"]:
            w["xsk"]["rx_dropped"] = 0
            w["xsk"]["rx_fill_ring_empty_descs"] = 0
    else:
        for w in now["workers"]:
            w["xsk"] = {}               # the supervisor could not read them
    lines = render(now, before, 1.0, 200, 50)
    header = next(line for line in lines if line.startswith("NAME"))
    body = lines[lines.index(header) + 1:]
    assert [line.split()[0] for line in body] == ["in0/q0", "in0/q1", "out0/q0", "TOTAL"]
    for row in body:
        name = row.split()[0]
        assert row[cell_end(header, "KDROP/s") - 1] == "-", name
        assert row[cell_end(header, "FILL-E/s") - 1] == "-", name
    if change == "unreadable":
        assert "kern:" not in "\n".join(lines)


def test_a_reload_message_of_many_lines_stays_on_one():
    refused = {"at": 1763700000.0, "result": "invalid", "duration_seconds": 0.001,
               "message": "xdpd.yaml: forward[0].to: no such interface\n"
                          "xdpd.yaml: umem.frames: not a number"}
    lines = render(sample(last_reload=refused), None, 0.0, 200, 50)
    assert lines[1].startswith("last reload: invalid at ")
    assert lines[1].endswith(": xdpd.yaml: forward[0].to: no such interface / "
                             "xdpd.yaml: umem.frames: not a number")
    assert lines[2].startswith("workers: ")


def test_no_reload_yet_and_not_ready():
    lines = render(sample(last_reload=None, ready=False), None, 0.0, 200, 50)
    assert "NOT READY" in lines[0]
    assert lines[1] == "last reload: none since start"


def test_too_many_workers_for_the_height():
    workers = [worker("in0", q) for q in range(10)]
    lines = render(sample(workers), None, 0.0, 200, 12)
    assert len(lines) == 12
    # 3 header lines, a blank, the column titles; the TOTAL row always shows.
    assert [line.split()[0] for line in lines[5:10]] == \
        ["in0/q0", "in0/q1", "in0/q2", "in0/q3", "in0/q4"]
    assert lines[10].startswith("... +5 more")
    assert lines[11].startswith("TOTAL")


def test_exactly_as_many_workers_as_fit():
    workers = [worker("in0", q) for q in range(4)]
    assert not any("more" in line for line in render(sample(workers), None, 0.0, 200, 10))
    lines = render(sample(workers), None, 0.0, 200, 9)
    assert len(lines) == 9
    assert lines[-2].startswith("... +2 more")


def test_lines_fit_the_width():
    for width in (1, 20, 40, 79):
        lines = render(sample(), None, 0.0, width, 50)
        assert lines and all(len(line) <= width for line in lines)
    assert render(sample(), None, 0.0, 80, 0) == []
    assert len(render(sample(), None, 0.0, 80, 2)) == 2


def test_unknown_and_missing_keys_are_tolerated():
    st = {"schema": 2, "pid": 1, "something_new": [1, 2],
          "workers": [{"name": "x/q0", "drops": {"no_rule": 1, "new_cause": 2},
                       "xsk": {"rx_dropped": 1}}]}
    lines = render(st, None, 0.0, 200, 50)
    assert "x/q0" in rows_by_name(lines)
    assert rows_by_name(lines)["x/q0"].endswith("norule:1 new_cause:2")


def test_error_screen():
    lines = render_error("/run/xdpd/xdpd.sock: no such socket; is xdpd running?", 0.5, 80, 24)
    text = "\n".join(lines)
    assert "cannot get the daemon's status" in text
    assert "/run/xdpd/xdpd.sock: no such socket; is xdpd running?" in lines
    assert "asking again every 0.5 s; q quits" in lines
    assert all(len(line) <= 10 for line in render_error("x" * 50, 1.0, 10, 24))
    assert len(render_error("x", 1.0, 80, 2)) == 2


@pytest.mark.parametrize("value, text", [
    (None, "-"), (0, "0"), (0.4, "0"), (999, "999"), (999.6, "1.0k"), (1_500, "1.5k"),
    (12_345, "12.3k"), (99_960, "100k"), (123_456, "123k"), (999_600, "1.0M"),
    (14_880_952, "14.9M"), (2.5e9, "2.5G")])
def test_units(value, text):
    assert human(value) == text


# -- a fake daemon on the control socket ----------------------------------------

class FakeDaemon:
    """Serves the control protocol: one JSON line in, one JSON line out, close.
    answer(n) gives the n-th answer (1-based)."""

    def __init__(self, path: str, answer):
        self.path = path
        self.answer = answer
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, name="fake-xdpd", daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                data = b""
                try:
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    req = json.loads(data)
                    with self._lock:
                        self.requests.append(req)
                        n = len(self.requests)
                    conn.sendall(json.dumps(self.answer(n)).encode() + b"\n")
                except (OSError, ValueError):
                    pass            # a client that went away; the test sees its count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        assert not self._thread.is_alive(), "fake daemon thread did not stop"


@pytest.fixture
def sock_path(tmp_path):
    path = str(tmp_path / "xdpd.sock")
    if len(path) < 100:                 # sun_path is 108 bytes
        yield path
        return
    d = tempfile.mkdtemp(prefix="xdpd-top-")
    try:
        yield os.path.join(d, "xdpd.sock")
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


@pytest.fixture
def daemons():
    started: list[FakeDaemon] = []

    def start(path, answer) -> FakeDaemon:
        d = FakeDaemon(path, answer)
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop()


def ok(status: dict) -> dict:
    return {"ok": True, "result": status}


def client_fetch(path: str):
    """The protocol's client side, for when xdpd.control is not there."""
    def fetch() -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(path)
            s.sendall(b'{"command": "status"}\n')
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        answer = json.loads(data)
        if not answer["ok"]:
            raise ConnectionError(answer["error"])
        return answer["result"]
    return fetch


FETCHES = [pytest.param("client", id="test-client"),
           pytest.param("control", id="control.request", marks=needs_control)]


def fetch_for(kind: str, path: str):
    return client_fetch(path) if kind == "client" else None    # None: main() uses request()


# -- one frame, without a terminal ----------------------------------------------

@pytest.mark.parametrize("kind", FETCHES)
def test_without_a_terminal_one_frame_is_printed(kind, sock_path, daemons, capsys):
    daemon = daemons(sock_path, lambda n: ok(sample()))
    # pytest captures stdout: not a tty, so no curses and no loop.
    assert main(sock_path, 0.1, fetch=fetch_for(kind, sock_path)) == exitcodes.OK
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("xdpd 0.4.0  pid 123")
    assert [line.split()[0] for line in lines[5:]] == ["in0/q0", "in0/q1", "out0/q0", "TOTAL"]
    assert err == ""
    assert daemon.requests == [{"command": "status"}]


def test_once_prints_whole_lines(sock_path, daemons, capsys):
    daemons(sock_path, lambda n: ok(sample([worker("a-rather-long-netdev-name", 0)])))
    assert main(sock_path, 1.0, once=True, fetch=client_fetch(sock_path)) == exitcodes.OK
    out = capsys.readouterr().out
    assert any(len(line) > 80 for line in out.splitlines()), "a pipe gets untruncated lines"


@pytest.mark.parametrize("kind", FETCHES)
def test_once_without_a_daemon_fails_on_stderr(kind, sock_path, capsys):
    assert main(sock_path, 1.0, once=True, fetch=fetch_for(kind, sock_path)) == \
        exitcodes.UNAVAILABLE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("xdpd top: ")
    if kind == "control":
        assert sock_path in err and "no such socket" in err


@pytest.mark.parametrize("kind", FETCHES)
def test_once_with_an_error_answer_fails_on_stderr(kind, sock_path, daemons, capsys):
    daemons(sock_path, lambda n: {"ok": False, "error": "unknown command 'status'"})
    assert main(sock_path, 1.0, once=True, fetch=fetch_for(kind, sock_path)) == \
        exitcodes.UNAVAILABLE
    out, err = capsys.readouterr()
    assert out == ""
    assert "unknown command 'status'" in err


@pytest.mark.parametrize("interval", [0, -1, float("nan")])
def test_interval_must_be_positive(interval, sock_path, capsys):
    assert main(sock_path, interval, once=True, fetch=client_fetch(sock_path)) == \
        exitcodes.USAGE
    assert "--interval" in capsys.readouterr().err


# -- the live view, on a pseudo-terminal ----------------------------------------

class Terminal:
    """`xdpd top` on a pseudo-terminal of its own, as its controlling
    terminal: keys are typed into it and the screen is read out of it."""

    def __init__(self, sock: str, interval: float, rows: int = 40, cols: int = 120):
        code = (f"import sys; from xdpd.cli.top import main; "
                f"sys.exit(main({sock!r}, {interval!r}))")
        env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS")}
        env.update(TERM="xterm", PYTHONPATH=REPO)   # LINES/COLUMNS would pin the size
        self.output = b""
        self.status: int | None = None
        pid, fd = pty.fork()
        if pid == 0:
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                # as a background job of a shell without job control starts
                # it (CI's, say): Ctrl-C must quit all the same
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                os.execve(sys.executable, [sys.executable, "-c", code], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd

    def _read(self, timeout: float) -> bool:
        """Read what is there within timeout; False once the child closed it."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:                 # EIO: the child is gone
            return False
        self.output += data
        return bool(data)

    def wait_for(self, needle: bytes, since: int = 0, timeout: float = 10.0) -> int:
        """Read until needle shows after offset since; return where it ends."""
        deadline = time.monotonic() + timeout
        while (at := self.output.find(needle, since)) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{needle!r} not on the screen; last output: "
                                     f"{self.output[-600:]!r}")
        return at + len(needle)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def resize(self, rows: int, cols: int) -> None:
        # The kernel sends SIGWINCH to the terminal's foreground process.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def exit_code(self, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return os.waitstatus_to_exitcode(status)
            self._read(0.05)            # keep draining: a full pty would block its exit
        raise AssertionError(f"xdpd top still runs {timeout} s after the key; "
                             f"last output: {self.output[-600:]!r}")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except ProcessLookupError:
                pass
        os.close(self.fd)


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def open_(*args, **kwargs) -> Terminal:
        t = Terminal(*args, **kwargs)
        opened.append(t)
        return t
    yield open_
    for t in opened:
        t.close()


def flapping(n: int) -> dict:
    """The first answer has in0/q1 running; every later one has it in backoff,
    a word drawn only by a refresh."""
    if n == 1:
        return ok(sample([worker("in0", 0), worker("in0", 1)]))
    return ok(sample([worker("in0", 0),
                      worker("in0", 1, state="backoff", pid=None, restarts=n)]))


@needs_control
@pytest.mark.parametrize("key", [b"q", b"Q", b"\x1b", b"\x03"], ids=["q", "Q", "Esc", "Ctrl-C"])
def test_live_view_refreshes_in_place_and_quits(key, sock_path, daemons, terminal):
    daemon = daemons(sock_path, flapping)
    top = terminal(sock_path, 0.2)
    seen = top.wait_for(b"in0/q0")
    top.wait_for(b"backoff", since=seen)
    deadline = time.monotonic() + 10
    while daemon.count < 3:             # the first frame and two refreshes
        assert time.monotonic() < deadline, f"only {daemon.count} status requests"
        top._read(0.1)
    top.type(key)
    assert top.exit_code() == 0
    assert b"Traceback" not in top.output
    assert termios.tcgetattr(top.fd)[3] & termios.ECHO, "the terminal was left without echo"


@needs_control
def test_live_view_stops_cleanly_on_sigterm(sock_path, daemons, terminal):
    daemons(sock_path, lambda n: ok(sample()))
    top = terminal(sock_path, 0.2)
    top.wait_for(b"in0/q0")
    os.kill(top.pid, signal.SIGTERM)
    assert top.exit_code() == 0
    assert b"Traceback" not in top.output
    assert termios.tcgetattr(top.fd)[3] & termios.ECHO, "the terminal was left without echo"


@needs_control
def test_live_view_waits_for_the_daemon(sock_path, daemons, terminal):
    top = terminal(sock_path, 0.2)
    at = top.wait_for(b"no such socket")
    daemon = daemons(sock_path, lambda n: ok(sample()))
    at = top.wait_for(b"out0/q0", since=at)
    daemon.stop()                       # the daemon goes away again: the view stays
    top.wait_for(b"no such socket", since=at)
    top.type(b"q")
    assert top.exit_code() == 0


@needs_control
def test_live_view_follows_a_resize(sock_path, daemons, terminal):
    workers = [worker("in0", q) for q in range(8)]
    daemons(sock_path, lambda n: ok(sample(workers)))
    top = terminal(sock_path, 5.0, rows=40, cols=120)
    at = top.wait_for(b"in0/q7")
    # A refresh is 5 s away: what follows the resize is the redraw for it.
    # 10 rows: 5 of header, 3 workers, the "+5 more" line, TOTAL.
    top.resize(10, 80)
    top.wait_for(b"+5 more", since=at, timeout=3.0)
    top.type(b"q")
    assert top.exit_code() == 0
