"""systemd's readiness protocol (sd_notify), in plain Python.

A service started with Type=notify finds an AF_UNIX datagram socket named
in NOTIFY_SOCKET: an absolute path, or "@name" for a socket in the abstract
namespace (the "@" stands for the leading NUL byte).  Each notification is
one datagram of newline-separated KEY=VALUE lines.  xdpd sends:

    READY=1              start-up is complete: the unit becomes "active";
                         sent again after a reload to end RELOADING=1
    RELOADING=1          a reload has begun; with
    MONOTONIC_USEC=N     CLOCK_MONOTONIC now in microseconds: systemd 253+
                         requires it with RELOADING=1 for Type=notify-reload
                         (to pair the reload with the request); older ones
                         ignore it
    STOPPING=1           orderly shutdown has begun
    STATUS=text          one line shown by `systemctl status`
    WATCHDOG=1           keep-alive ping for WatchdogSec=

The watchdog is on when WATCHDOG_USEC holds the interval and WATCHDOG_PID
is either unset or this process's pid: the manager may set both for a
process that forks, and the variables then belong to that pid alone.
systemd recommends pinging at half the interval.

from_env() removes the variables from os.environ, as libsystemd's
sd_notify(unset_environment=1) and sd_watchdog_enabled() do: the workers
xdpd spawns would otherwise inherit them, and NotifyAccess=main ignores
their messages anyway.

A notification that cannot be sent (no listener, the socket gone, a full
queue) is logged at debug level and dropped: losing one must never stop
the daemon from forwarding packets.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("xdpd.sdnotify")

SEND_TIMEOUT_S = 1.0        # a manager this far behind must not stall the supervisor loop


class Notifier:
    """Sends sd_notify messages to `address`, or nothing when it is None."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None):
        self._address = address
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.last_error: OSError | None = None
        # one socket for the daemon's life, made now: a watchdog ping must
        # not need a free descriptor when descriptors have run out
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(SEND_TIMEOUT_S)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> "Notifier":
        """A notifier for the socket and watchdog systemd gave this process;
        disabled when NOTIFY_SOCKET is unset or not a unix socket address."""
        env = os.environ if environ is None else environ
        raw = env.pop("NOTIFY_SOCKET", None)
        usec = env.pop("WATCHDOG_USEC", None)
        pid = env.pop("WATCHDOG_PID", None)
        address: str | bytes | None = None
        if raw:
            if raw.startswith("/"):
                address = raw
            elif raw.startswith("@") and len(raw) > 1:
                address = b"\0" + raw[1:].encode()
            else:
                # e.g. "vsock:CID:PORT" (systemd 254+), which a virtual
                # machine's init uses to reach its host, not a service
                log.warning("NOTIFY_SOCKET=%r is not a unix socket path or @name; "
                            "readiness is not reported to systemd", raw)
        watchdog = None
        if address is not None and usec:
            try:
                watchdog = int(usec)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number; watchdog off", usec)
            if pid:
                try:
                    if int(pid) != os.getpid():
                        watchdog = None     # meant for another process of the unit
                except ValueError:
                    log.warning("WATCHDOG_PID=%r is not a pid; watchdog off", pid)
                    watchdog = None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1e6

    def ready(self, status: str | None = None) -> None:
        self._send("READY=1", status)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", None, f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1", None)

    def status(self, text: str) -> None:
        self._send(None, text)

    def watchdog(self) -> bool:
        """False if the ping could not be sent (last_error says why)."""
        return self._send("WATCHDOG=1", None)

    def _send(self, state: str | None, status: str | None, *extra: str) -> bool:
        if self._address is None:
            return True
        lines = [line for line in (state, *extra) if line]
        if status is not None:
            # one line: a newline would end STATUS= and start a new assignment
            lines.append("STATUS=" + " ".join(status.splitlines()))
        message = "\n".join(lines).encode()
        try:
            self._sock.sendto(message, self._address)
        except OSError as e:
            log.debug("sd_notify %r to %r not sent: %s", message, self._address, e)
            self.last_error = e
            return False
        return True
