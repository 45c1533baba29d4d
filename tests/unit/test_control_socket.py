"""The control socket: one JSON request, one JSON answer (xdpd/control.py)."""
import os
import socket
import stat
import threading

import pytest

from xdpd.control import ControlError, ControlServer, request


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
            if select.select([srv], [], [], 0.05)[0]:
                srv.handle_one(handler)

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
