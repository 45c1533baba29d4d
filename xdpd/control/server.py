"""The control socket: how `xdpd reload`, `xdpd status` and `xdpd top`
talk to a running supervisor.

A unix stream socket (default /run/xdpd/xdpd.sock, `control.socket`),
mode 0600 in a directory xdpd creates 0700: only root may ask.  The
protocol is one request and one answer per connection, each a single line
of JSON:

    -> {"command": "status"}
    <- {"ok": true, "result": {...}}

    -> {"command": "reload", "config_path": "/etc/xdpd/new.yaml",
        "config_text": "..."}                 (both optional)
    <- {"ok": false, "error": "...", "result": {...}}

The supervisor serves it from its main loop (a request is handled between
two turns of worker supervision, never concurrently with one), without
ever waiting for a client: connections are read and written as they
become ready, each with one deadline for its whole exchange (see
ControlServer).  No client, slow or many, can delay the reaping and
replacement of workers by more than the handling of a few requests.
"""
from __future__ import annotations

import collections
import errno
import json
import logging
import os
import selectors
import socket
import stat
import struct
import time
import typing

log = logging.getLogger("xdpd.control")

MAX_REQUEST = 4 << 20          # a reload carries the YAML text
REQUEST_TIMEOUT_S = 2.0        # server side: from accept to the answer's last byte
MAX_CLIENTS = 32               # connections open at once (idle ones make room)
MAX_REQUESTS_PER_SERVE = 8     # answered per serve(): the loop supervises between
ACCEPT_PAUSE_S = 0.1           # no accepting this long after EMFILE (no busy spin)
RELOAD_TIMEOUT_S = 120.0       # a reload may drain and start workers


class ControlError(Exception):
    """The daemon could not be asked, or answered with an error."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result


# -- client ----------------------------------------------------------------

def request(socket_path: str, command: str, timeout: float = 5.0, **args) -> dict:
    """Send one request; return the answer's "result" or raise ControlError."""
    body = json.dumps({"command": command, **args}).encode() + b"\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        try:
            while True:
                try:
                    s.connect(socket_path)
                    break
                except BlockingIOError:     # its backlog is full right now: busy, not gone
                    if time.monotonic() > deadline:
                        raise socket.timeout() from None
                    time.sleep(0.01)
        except FileNotFoundError:
            raise ControlError(f"{socket_path}: no such socket; is xdpd running? "
                               "(control.socket in its config names the socket)") from None
        except ConnectionRefusedError:
            raise ControlError(f"{socket_path}: connection refused; xdpd is not running "
                               "(a stale socket file)") from None
        except PermissionError:
            raise ControlError(f"{socket_path}: permission denied; the control socket "
                               "is root's (run with sudo)") from None
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)
        data = _read_line(s)
    except socket.timeout:
        raise ControlError(f"{socket_path}: no answer within {timeout:.0f} s") from None
    except OSError as e:
        raise ControlError(f"{socket_path}: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"{socket_path}: not an xdpd control socket "
                           f"(answer {data[:60]!r})") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{socket_path}: malformed answer")
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "unknown error")), answer.get("result"))
    return answer.get("result") or {}


def _read_line(s: socket.socket) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > MAX_REQUEST:
            break
    return b"".join(chunks)


# -- server ----------------------------------------------------------------

class _Client:
    """One accepted connection: its request bytes so far, then its answer."""

    __slots__ = ("sock", "deadline", "inbuf", "outbuf", "peer")

    def __init__(self, sock: socket.socket, deadline: float, peer: "Peer"):
        self.sock = sock
        self.deadline = deadline        # one for the whole request and answer
        self.inbuf = bytearray()
        self.outbuf = b""
        self.peer = peer


class Peer(typing.NamedTuple):
    """The connecting process, as the kernel saw it at connect()
    (SO_PEERCRED: struct ucred { pid_t pid; uid_t uid; gid_t gid; })."""
    pid: int
    uid: int
    gid: int


_UCRED = struct.Struct("iII")


def peer_of(sock: socket.socket) -> Peer:
    return Peer(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _UCRED.size)))


def root_only(peer: Peer, command: str) -> str | None:
    """The default policy: only root may ask anything."""
    if peer.uid != 0:
        return f"permission denied: uid {peer.uid} is not root"
    return None


class ControlServer:
    """The listening socket and its connections, served without blocking.

    A client can hold nothing of the supervisor's loop: the server never
    waits for a client.  It owns an epoll set (selectors) of the listener
    and every connection; fileno() is that set's descriptor, so the loop's
    select() wakes when any of them is ready, and serve() then does what
    is ready without blocking: accepts, reads what arrived, answers a
    complete request (handler(request) runs on the loop: status is cheap,
    a reload is the loop's business anyway), writes what the peer takes.
    Each connection gets one deadline, REQUEST_TIMEOUT_S from its accept,
    for its whole request and answer: a client that sends one byte a
    second is closed at the deadline, not served for ever.  At most
    MAX_CLIENTS connections are open: a new one takes the place of the
    oldest that has not sent a whole request yet, and only when every open
    one has (they are being answered) is it told "busy" and closed.
    At most MAX_REQUESTS_PER_SERVE requests are answered per serve(), so
    the loop reaps and replaces workers between bursts of clients."""

    def __init__(self, path: str, clock=time.monotonic, authorize=root_only,
                 note_error=lambda where, e: None, group: int | None = None):
        self.path = path
        self.clock = clock
        # authorize(peer, command) -> None, or why the peer may not ask it
        self.authorize = authorize
        self.note_error = note_error        # (where, exception): counted by the caller
        self._made_dir = make_private_dir(os.path.dirname(path) or ".")
        _remove_stale(path)
        self.group = group
        self.sock = socket.socket(socket.AF_UNIX,
                                  socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o177)           # born 0600: no window where others may connect
            try:
                self.sock.bind(path)
            finally:
                os.umask(old)
            if group is not None:           # a group for read-only commands (status)
                d = os.path.dirname(path) or "."
                os.chown(path, -1, group)
                os.chmod(path, 0o660)
                os.chown(d, -1, group)      # its members may reach the socket...
                os.chmod(d, 0o750)          # ...but not change the directory
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.clients: dict[int, _Client] = {}
        self.ready: collections.deque[_Client] = collections.deque()  # complete requests
        self._accept_paused_until = 0.0     # after EMFILE: let descriptors free up

    def fileno(self) -> int:
        return self.sel.fileno()

    def next_deadline(self) -> float | None:
        """When serve() has something to do without any I/O (a request
        waiting, a connection expiring, the listener to resume): the
        loop's select() must wake by then."""
        if self.ready:
            return self.clock()
        times = [c.deadline for c in self.clients.values()]
        if self._accept_paused_until:
            times.append(self._accept_paused_until)
        return min(times) if times else None

    def serve(self, handler, interrupt=lambda: False) -> int:
        """Do what is ready, without blocking; returns requests answered.

        handler(request) returns (ok, result, error); anything unexpected is
        an error answer, never an exception out of the supervisor's loop.
        interrupt() is asked between answers: True (a worker died, say)
        leaves the rest for the next turn of the loop."""
        now = self.clock()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self.sel.register(self.sock, selectors.EVENT_READ, None)
        for key, events in self.sel.select(0):
            if key.data is None:
                self._accept(now)
            elif events & selectors.EVENT_READ:
                self._read(key.data)
            elif events & selectors.EVENT_WRITE:
                self._write(key.data)
        answered = 0
        while self.ready and answered < MAX_REQUESTS_PER_SERVE and not interrupt():
            self._answer(self.ready.popleft(), handler)
            answered += 1
        for c in [c for c in self.clients.values() if c.deadline <= now]:
            log.debug("control client closed: no whole request and answer within %.0f s",
                      REQUEST_TIMEOUT_S)
            self._close(c)
        return answered

    def _accept(self, now: float) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:            # EMFILE, ENFILE, ENOBUFS: pause, do not spin
                self.note_error("control", e)
                self.sel.unregister(self.sock)
                self._accept_paused_until = now + ACCEPT_PAUSE_S
                return
            conn.setblocking(False)
            if len(self.clients) >= MAX_CLIENTS:
                self._evict_one_idle()
            if len(self.clients) >= MAX_CLIENTS:
                try:
                    conn.send(json.dumps({"ok": False, "error": "busy: too many control "
                                          "clients at once; try again"}).encode() + b"\n")
                except OSError:
                    pass
                conn.close()
                continue
            try:
                peer = peer_of(conn)
            except OSError:
                conn.close()
                continue
            c = _Client(conn, now + REQUEST_TIMEOUT_S, peer)
            self.clients[conn.fileno()] = c
            self.sel.register(conn, selectors.EVENT_READ, c)
            self._read(c)                   # the request is usually there already

    def _evict_one_idle(self) -> None:
        """Make room for a new connection by closing the oldest one that has
        not sent a whole request yet: a real client sends its request right
        after connecting, so only idle or trickling ones are ever closed,
        and holding every slot open does not lock out the next `xdpd
        status`."""
        idle = [c for c in self.clients.values() if not c.outbuf and c not in self.ready]
        if idle:
            oldest = min(idle, key=lambda c: c.deadline)
            log.debug("control client closed to make room: no whole request yet")
            self._close(oldest)

    def _read(self, c: _Client) -> None:
        while True:
            try:
                chunk = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(c)
                return
            c.inbuf += chunk
            if not chunk or b"\n" in chunk or len(c.inbuf) > MAX_REQUEST:
                self.sel.unregister(c.sock)     # complete: nothing more is read
                self.ready.append(c)
                return

    def _answer(self, c: _Client, handler) -> None:
        answer = self._handle(bytes(c.inbuf), handler, c.peer, self.authorize)
        c.inbuf = bytearray()
        try:
            c.outbuf = json.dumps(answer).encode() + b"\n"
        except (TypeError, ValueError) as e:        # a result that is not JSON: a bug
            log.error("control answer not serialisable: %s", e)
            c.outbuf = json.dumps({"ok": False, "error": f"internal error: {e}"}).encode() + b"\n"
        self.sel.register(c.sock, selectors.EVENT_WRITE, c)
        self._write(c)

    @staticmethod
    def _handle(data: bytes, handler, peer: Peer, authorize) -> dict:
        if len(data) > MAX_REQUEST:
            return {"ok": False, "error": f"bad request: longer than {MAX_REQUEST} bytes"}
        try:
            req = json.loads(data)
            if not isinstance(req, dict) or not isinstance(req.get("command"), str):
                raise ValueError("expected {\"command\": ...}")
        except (ValueError, RecursionError) as e:   # RecursionError: nested too deep
            return {"ok": False, "error": f"bad request: {str(e)[:200]}"}
        try:
            refused = authorize(peer, req["command"])
        except Exception as e:                  # a bug in the policy: refuse
            log.exception("control peer check failed")
            refused = f"internal error: {e}"
        if refused:
            log.warning("control request %r from pid %d (uid %d) refused: %s",
                        req["command"][:40], peer.pid, peer.uid, refused)
            return {"ok": False, "error": refused}
        try:
            ok, result, error = handler(req)
        except Exception as e:                  # a bug: answer it, keep running
            log.exception("control request %r failed", req.get("command"))
            ok, result, error = False, None, f"internal error: {e}"
        answer = {"ok": ok, "result": result}
        if not ok:
            answer["error"] = error
        return answer

    def _write(self, c: _Client) -> None:
        try:
            sent = c.sock.send(c.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.debug("control client went away: %s", e)
            self._close(c)
            return
        c.outbuf = c.outbuf[sent:]
        if not c.outbuf:
            self._close(c)

    def _close(self, c: _Client) -> None:
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        self.clients.pop(c.sock.fileno(), None)
        try:
            self.ready.remove(c)
        except ValueError:
            pass
        c.sock.close()

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._close(c)
        self.sel.close()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self._made_dir:
            try:
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass                        # not empty, or systemd's RuntimeDirectory


def make_private_dir(d: str) -> bool:
    """Create the socket's directory 0700 if missing; True if we made it.
    An existing directory others may write to is refused: they could
    replace our socket with theirs."""
    _check_parents(d)
    try:
        os.mkdir(d, 0o700)
        return True
    except FileExistsError:
        pass
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, f"control.socket: {d} is a symbolic link; give the "
                      "socket a real directory only root can write (e.g. /run/xdpd)")
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"control.socket: {d} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"control.socket: {d} is writable by other users; "
                      "use a directory only root can write (e.g. /run/xdpd)")
    return False


def _check_parents(d: str) -> None:
    """Every directory above d, as the path names it, is one that only root
    (or we) can change: owned by root or us, and writable by others only
    with the sticky bit (like /tmp, where others cannot rename our entry).
    A symbolic link on the way must be root's or ours too; the directory it
    lies in was checked just before.  Otherwise someone else could swap the
    directory under the socket for one of theirs."""
    me = os.geteuid()
    parts = os.path.abspath(d).split(os.sep)[1:-1]
    prefix = ""
    for part in parts:
        prefix += os.sep + part
        lst = os.lstat(prefix)
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (0, me):
            raise OSError(errno.EPERM, f"control.socket: {prefix} is a symbolic link owned "
                          f"by uid {lst.st_uid}; use a path only root controls")
        st = os.stat(prefix)
        if st.st_uid not in (0, me):
            raise OSError(errno.EPERM, f"control.socket: {prefix} is owned by uid "
                          f"{st.st_uid}; use a path only root controls (e.g. /run/xdpd)")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise OSError(errno.EPERM, f"control.socket: {prefix} is writable by other "
                          "users; use a path only root controls (e.g. /run/xdpd)")


def _remove_stale(path: str) -> None:
    """A socket file left by a killed xdpd is removed; a live one means
    another xdpd uses this path, which is an error, not a takeover."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"control.socket: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:      # nobody listens: a dead xdpd's
        if os.path.lexists(path):
            os.unlink(path)
        return
    except FileNotFoundError:           # gone meanwhile
        return
    except OSError as e:                # a full backlog (a busy live one), no access, ...
        raise OSError(e.errno or errno.EADDRINUSE,
                      f"control.socket: {path} exists and cannot be probed "
                      f"({e.strerror or e}): it may belong to a running xdpd; "
                      "stop it, or remove the file if you know it is stale") from None
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"control.socket: {path} is in use by another "
                  "running xdpd; stop it or give this one another control.socket")
