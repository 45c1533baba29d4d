"""The control socket: one JSON request, one JSON answer (xdpd/control.py)."""
import json
import os
import socket
import stat
import threading

import pytest

from xdpd.control import server as control
from xdpd.control.server import ControlError, ControlServer, request


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "run" / "xdpd.sock")
    srv = ControlServer(path)
    stop = threading.Event()
    seen = []

    def handler(req):
        seen.append(req)
        if req["command"] == "fail":
            return False, {"result": "refused"}, "no, and here is why"
        if req["command"] == "boom":
            raise RuntimeError("a bug")
        return True, {"echo": req}, None

    def loop():
        import select
        while not stop.is_set():
            select.select([srv], [], [], 0.05)
            srv.serve(handler)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv, seen
    stop.set()
    t.join(2)
    srv.close()


def test_request_and_answer(server):
    srv, seen = server
    assert request(srv.path, "status") == {"echo": {"command": "status"}}
    result = request(srv.path, "reload", config_path="/x.yaml", config_text="a: 1")
    assert result["echo"]["config_text"] == "a: 1"


def test_an_error_answer_raises_with_its_result(server):
    srv, _ = server
    with pytest.raises(ControlError) as e:
        request(srv.path, "fail")
    assert str(e.value) == "no, and here is why" and e.value.result == {"result": "refused"}


def test_a_handler_bug_is_an_error_answer_not_a_dead_server(server):
    srv, _ = server
    with pytest.raises(ControlError, match="internal error: a bug"):
        request(srv.path, "boom")
    assert request(srv.path, "status")      # still serving


def test_garbage_gets_a_bad_request_answer(server):
    srv, _ = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(srv.path)
        s.sendall(b"not json\n")
        s.shutdown(socket.SHUT_WR)
        assert b"bad request" in s.recv(4096)


def test_socket_is_private(server):
    srv, _ = server
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(srv.path)).st_mode) == 0o700


def test_no_daemon_is_a_clear_error(tmp_path):
    with pytest.raises(ControlError, match="no such socket; is xdpd running"):
        request(str(tmp_path / "none.sock"), "status")


def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path):
    path = str(tmp_path / "xdpd.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()                       # the file stays, nobody listens
    srv = ControlServer(path)
    try:
        with pytest.raises(OSError, match="in use by another running xdpd"):
            ControlServer(path)
    finally:
        srv.close()
    assert not os.path.exists(path)


def test_a_directory_others_can_write_is_refused(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(OSError, match="writable by other users"):
        ControlServer(str(d / "xdpd.sock"))


# -- no client can hold the supervisor's loop -------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def direct(tmp_path):
    """A server driven by hand, as the supervisor's loop drives it, on a
    clock the test moves."""
    clock = Clock()
    srv = ControlServer(str(tmp_path / "run" / "xdpd.sock"), clock=clock)
    yield srv, clock
    srv.close()


def ask(path: str, body: bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(body)
    return s


def echo(req):
    return True, {"echo": req["command"]}, None


def test_a_client_that_sends_nothing_never_blocks_serve_and_is_closed_at_its_deadline(direct):
    import time
    srv, clock = direct
    idle = ask(srv.path, b'{"command": "st')        # half a request, then silence
    t0 = time.monotonic()
    for _ in range(20):
        assert srv.serve(echo) == 0
    assert time.monotonic() - t0 < 0.5              # not one blocking read
    assert srv.next_deadline() == clock.now + control.REQUEST_TIMEOUT_S
    # a well-behaved client beside it is answered at once
    good = ask(srv.path, b'{"command": "status"}\n')
    assert srv.serve(echo) == 1
    assert json.loads(good.recv(4096)) == {"ok": True, "result": {"echo": "status"}}
    # one byte at a time does not extend the deadline: one per request
    clock.now += control.REQUEST_TIMEOUT_S - 0.1
    idle.sendall(b"a")
    srv.serve(echo)
    clock.now += 0.2
    srv.serve(echo)
    assert idle.recv(4096) == b""                   # closed by the server
    assert not srv.clients


def test_deeply_nested_json_is_a_bad_request_not_a_dead_loop(direct):
    srv, _ = direct
    s = ask(srv.path, b"[" * 100_000 + b"\n")
    assert srv.serve(echo) == 1
    answer = json.loads(s.recv(4096))
    assert answer["ok"] is False and answer["error"].startswith("bad request")
    s = ask(srv.path, b'{"command": "status"}\n')
    assert srv.serve(echo) == 1 and json.loads(s.recv(4096))["ok"]


def test_idle_connections_holding_every_slot_do_not_lock_out_a_real_client(direct):
    srv, _ = direct
    idle = [ask(srv.path, b"") for _ in range(control.MAX_CLIENTS * 2)]
    srv.serve(echo)
    assert len(srv.clients) == control.MAX_CLIENTS
    good = ask(srv.path, b'{"command": "status"}\n')
    while srv.serve(echo) == 0:
        pass
    assert json.loads(good.recv(4096)) == {"ok": True, "result": {"echo": "status"}}
    assert len(srv.clients) <= control.MAX_CLIENTS
    for s in idle:
        s.close()


def test_many_clients_are_answered_a_few_per_serve_and_the_surplus_is_told_busy(direct):
    srv, _ = direct
    socks = [ask(srv.path, b'{"command": "status"}\n')
             for _ in range(control.MAX_CLIENTS + 5)]
    answered = srv.serve(echo)
    assert answered == control.MAX_REQUESTS_PER_SERVE      # the loop gets a turn
    while srv.serve(echo):
        pass
    answers = [json.loads(s.recv(4096)) for s in socks]
    assert sum(a["ok"] for a in answers) == control.MAX_CLIENTS
    busy = [a for a in answers if not a["ok"]]
    assert len(busy) == 5 and all(a["error"].startswith("busy") for a in busy)
    assert not srv.clients


def test_a_request_larger_than_the_limit_is_refused(direct):
    srv, _ = direct
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(srv.path)
    s.setblocking(False)
    sent = 0
    blob = b"x" * 65536
    while sent <= control.MAX_REQUEST:
        try:
            sent += s.send(blob)
        except BlockingIOError:
            srv.serve(echo)
    s.setblocking(True)
    while srv.serve(echo) == 0:
        pass
    answer = json.loads(s.recv(4096))
    assert answer == {"ok": False,
                      "error": f"bad request: longer than {control.MAX_REQUEST} bytes"}


def test_the_peer_is_checked_with_its_kernel_credentials_before_the_handler(tmp_path):
    seen = []

    def authorize(peer, command):
        seen.append(peer)
        return "permission denied: not you" if command == "reload" else None

    srv = ControlServer(str(tmp_path / "run" / "xdpd.sock"), authorize=authorize)
    handled = []
    try:
        for command in ("reload", "status"):
            s = ask(srv.path, json.dumps({"command": command}).encode() + b"\n")
            assert srv.serve(lambda req: handled.append(req) or (True, {}, None)) == 1
            answers = json.loads(s.recv(4096))
            assert answers["ok"] is (command == "status"), answers
    finally:
        srv.close()
    assert [r["command"] for r in handled] == ["status"]      # the refused one never ran
    assert seen[0] == (os.getpid(), os.geteuid(), os.getegid())


def test_root_only_refuses_other_users():
    from xdpd.control.server import Peer, root_only
    assert root_only(Peer(1, 0, 0), "status") is None
    assert root_only(Peer(1, 1000, 0), "status") == "permission denied: uid 1000 is not root"


def test_a_live_socket_with_a_full_backlog_is_not_taken_for_stale(tmp_path):
    path = str(tmp_path / "xdpd.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(0)                      # never accepts: its backlog fills
    waiting = []
    try:
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            waiting.append(s)
        with pytest.raises(OSError, match="cannot be probed"):
            ControlServer(path)
        assert os.path.exists(path)     # left for its owner
    finally:
        for s in waiting:
            s.close()
        live.close()


def test_a_symlinked_socket_directory_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError, match="is a symbolic link"):
        ControlServer(str(tmp_path / "link" / "xdpd.sock"))


def test_a_parent_others_can_write_is_refused_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)             # others could swap our directory for theirs
    with pytest.raises(OSError, match=f"{shared} is writable by other users"):
        ControlServer(str(shared / "run" / "xdpd.sock"))
    assert not (shared / "run").exists()
    os.chmod(shared, 0o1777)            # like /tmp: they cannot rename our entry
    srv = ControlServer(str(shared / "run" / "xdpd.sock"))
    srv.close()


def test_serving_yields_between_answers_when_interrupted(direct):
    srv, _ = direct
    socks = [ask(srv.path, b'{"command": "status"}\n') for _ in range(5)]
    calls = []

    def interrupt():
        calls.append(1)
        return len(calls) > 2                   # e.g. SIGCHLD arrived after two answers
    assert srv.serve(echo, interrupt=interrupt) == 2
    assert srv.serve(echo) == 3                 # the rest on the next turn
    assert all(json.loads(s.recv(4096))["ok"] for s in socks)


def test_an_accept_that_fails_pauses_the_listener_and_is_counted(tmp_path, monkeypatch):
    import errno as errno_
    clock = Clock()
    noted = []
    srv = ControlServer(str(tmp_path / "run" / "xdpd.sock"), clock=clock,
                        note_error=lambda where, e: noted.append((where, e.errno)))
    try:
        real_accept = srv.sock.accept
        calls = []

        def no_descriptors():
            calls.append(1)
            raise OSError(errno_.EMFILE, "Too many open files")
        monkeypatch.setattr(srv, "sock", type("S", (), {
            "accept": staticmethod(no_descriptors), "fileno": srv.sock.fileno,
            "close": srv.sock.close})())
        s = ask(srv.path, b'{"command": "status"}\n')
        srv.serve(echo)
        srv.serve(echo)                         # paused: not tried again at once
        assert calls == [1] and noted == [("control", errno_.EMFILE)]
        assert srv.next_deadline() == clock.now + control.ACCEPT_PAUSE_S
        monkeypatch.setattr(srv.sock, "accept", real_accept)
        clock.now += control.ACCEPT_PAUSE_S
        while srv.serve(echo) == 0:
            pass
        assert json.loads(s.recv(4096))["ok"]
    finally:
        srv.close()
