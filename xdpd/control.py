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
two turns of worker supervision, never concurrently with one), so a slow
client gets a short read deadline rather than a thread.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat

log = logging.getLogger("xdpd.control")

MAX_REQUEST = 4 << 20          # a reload carries the YAML text
READ_TIMEOUT_S = 2.0           # for the request line, on the server side
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
    try:
        try:
            s.connect(socket_path)
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

class ControlServer:
    """The listening socket; the supervisor polls fileno() and calls
    handle_one() when it is readable."""

    def __init__(self, path: str):
        self.path = path
        self._made_dir = make_private_dir(os.path.dirname(path) or ".")
        _remove_stale(path)
        self.sock = socket.socket(socket.AF_UNIX,
                                  socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o177)           # born 0600: no window where others may connect
            try:
                self.sock.bind(path)
            finally:
                os.umask(old)
            self.sock.listen(8)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle_one(self, handler) -> None:
        """Accept a connection, read its request, answer with handler(request).

        handler returns (ok, result, error); anything unexpected is an
        error answer, never an exception out of the supervisor's loop."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            conn.setblocking(True)
            conn.settimeout(READ_TIMEOUT_S)
            try:
                data = _read_line(conn)
                req = json.loads(data)
                if not isinstance(req, dict) or not isinstance(req.get("command"), str):
                    raise ValueError("expected {\"command\": ...}")
            except (OSError, ValueError) as e:
                self._answer(conn, {"ok": False, "error": f"bad request: {e}"})
                return
            try:
                ok, result, error = handler(req)
            except Exception as e:                  # a bug: answer it, keep running
                log.exception("control request %r failed", req.get("command"))
                ok, result, error = False, None, f"internal error: {e}"
            answer = {"ok": ok, "result": result}
            if not ok:
                answer["error"] = error
            self._answer(conn, answer)

    @staticmethod
    def _answer(conn: socket.socket, answer: dict) -> None:
        try:
            conn.settimeout(READ_TIMEOUT_S)
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError as e:
            log.debug("control client went away: %s", e)

    def close(self) -> None:
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
    try:
        os.mkdir(d, 0o700)
        return True
    except FileExistsError:
        pass
    st = os.stat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"control.socket: {d} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"control.socket: {d} is writable by other users; "
                      "use a directory only root can write (e.g. /run/xdpd)")
    return False


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
    except OSError:                     # refused (nobody listens) or gone
        if os.path.lexists(path):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"control.socket: {path} is in use by another "
                  "running xdpd; stop it or give this one another control.socket")
