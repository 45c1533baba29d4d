"""The scrape endpoint's bounds (metrics.BoundedServer): a cap on open
connections, a read timeout and one deadline per connection, so idle or
slow clients cannot take the supervisor's descriptors or threads, and a
full server makes room for a scrape by closing its oldest idle client."""
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from xdpd.control.metrics import BoundedServer


class Hello(BaseHTTPRequestHandler):
    timeout = 5.0
    hold = None                 # a threading.Event: answer only once it is set

    def do_GET(self):
        if self.hold is not None:
            self.hold.wait(10)
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


def closed_by_server(s: socket.socket) -> bool:
    s.settimeout(2)
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_beyond_the_cap_close_the_oldest_idle_ones(server, monkeypatch):
    monkeypatch.setattr(BoundedServer, "CONNECTION_DEADLINE_S", 60.0)   # none cut off here
    srv, _ = server
    cap = BoundedServer.MAX_CONNECTIONS
    idle = []
    for _ in range(cap + 10):
        idle.append(connect(srv))
        wait_until(lambda: srv.open_connections() == min(len(idle), cap) and
                   srv.evicted == max(0, len(idle) - cap))
    # the ten oldest made room for the ten newest: still the cap, no more
    assert [closed_by_server(s) for s in idle[:10]] == [True] * 10
    assert srv.open_connections() == cap and srv.evicted == 10
    # and a scrape gets through a server full of idle clients at once
    assert get(srv).startswith(b"HTTP/1.0 200")
    assert srv.open_connections() <= cap
    for s in idle:
        s.close()


def test_connections_answering_a_request_are_never_closed_for_room(server, monkeypatch):
    monkeypatch.setattr(BoundedServer, "CONNECTION_DEADLINE_S", 60.0)
    srv, _ = server
    hold = threading.Event()
    monkeypatch.setattr(Hello, "hold", hold)
    cap = BoundedServer.MAX_CONNECTIONS
    busy = []
    for _ in range(cap):
        s = connect(srv)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        busy.append(s)
    wait_until(lambda: len(srv._answering) == cap)
    late = connect(srv)
    assert closed_by_server(late)       # no idle slot to take: the newcomer goes
    assert srv.evicted == 0
    hold.set()
    for s in busy:                      # every request that was in is answered
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.0 200")
        s.close()
    late.close()


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
