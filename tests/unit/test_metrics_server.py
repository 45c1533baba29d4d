"""The scrape endpoint's bounds (metrics.BoundedServer): a cap on open
connections, a read timeout and one deadline per connection, so idle or
slow clients cannot take the supervisor's descriptors or threads."""
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from xdpd.metrics import BoundedServer


class Hello(BaseHTTPRequestHandler):
    timeout = 5.0

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(BoundedServer, "CONNECTION_DEADLINE_S", 1.0)
    errors = []
    srv = BoundedServer(("127.0.0.1", 0), Hello, note_error=lambda w, e: errors.append(w))
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield srv, errors
    srv.shutdown()
    srv.server_close()


def connect(srv) -> socket.socket:
    return socket.create_connection(srv.server_address, timeout=5)


def get(srv) -> bytes:
    with connect(srv) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s.recv(4096)


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_idle_connections_beyond_the_cap_are_closed_at_once(server):
    srv, _ = server
    idle = [connect(srv) for _ in range(BoundedServer.MAX_CONNECTIONS + 10)]
    wait_until(lambda: srv.open_connections() == BoundedServer.MAX_CONNECTIONS)
    closed = 0
    for s in idle[BoundedServer.MAX_CONNECTIONS:]:
        s.settimeout(2)
        closed += s.recv(10) == b""     # the surplus: closed by the server
    assert closed == 10
    for s in idle:
        s.close()


def test_a_slow_client_is_cut_off_at_its_deadline_and_its_slot_returns(server):
    srv, _ = server
    slow = connect(srv)
    t0 = time.monotonic()
    slow.sendall(b"GET / HT")
    slow.settimeout(3)
    for _ in range(10):                 # a byte every 0.2 s: no read ever times out
        try:
            slow.sendall(b"T")
        except OSError:
            break
        time.sleep(0.2)
    wait_until(lambda: srv.open_connections() == 0)
    assert 0.9 < time.monotonic() - t0 < 3.0
    assert get(srv).startswith(b"HTTP/1.0 200")      # the server serves on
    slow.close()
