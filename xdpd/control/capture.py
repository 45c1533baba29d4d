"""`xdpd capture`, the supervisor's side: capture sessions.

Owns: the sessions (at most MAX_CAPTURES at once, one capture slot each:
fastpath.h, "Capture"), their three requests on the control socket (root
only, one request per answer, like every other), and their leases:

    capture_start {"iface", "queue" (null: all), "points" ["rx", ...],
                   "snaplen", "filter"}  -> {"token", "slot", "lease_seconds",
                                             "interfaces": {index: name}}
    capture_read  {"token"}  -> {"records": base64, "captured", "dropped"}
    capture_stop  {"token"}  -> {"captured", "dropped"}

A read renews the lease; a session not read for LEASE_S (its client was
killed, or its pipe broke) is stopped by the loop, as the daemon's stop
stops them all: nothing of a capture outlives its client by more than
LEASE_S and a loop turn.  The filter is compiled here with libpcap
(kernel/pcap_filter.py), its message returned as the error when it does
not compile.
Must not: wait for a client, or read more per request than the rings hold
(a read returns what the workers wrote since the last one).
"""
from __future__ import annotations

import base64
import logging
import secrets
import time
from dataclasses import dataclass, field

from xdpd.datapath import _fastpath
from xdpd.datapath.capture import POINTS
from xdpd.kernel.pcap_filter import MAX_SNAPLEN, FilterError, compile_filter

log = logging.getLogger("xdpd.supervisor")

MAX_CAPTURES = _fastpath.MAX_CAPTURES
LEASE_S = 0.5                   # a client reads every 0.1 s
COMMANDS = ("capture_start", "capture_read", "capture_stop")


@dataclass
class CaptureSession:
    token: str
    slot: int
    iface: str
    netdev: int                 # the interface's index in the forwarding table
    queue: int | None
    points: tuple[str, ...]
    snaplen: int
    expression: str
    deadline: float             # of the lease
    started_wall: float
    base: dict[int, tuple[int, int]] = field(default_factory=dict)   # by worker: counts
    captured: int = 0           # records read out, over every worker
    dropped: int = 0            # records the rings had no room for

    def view(self) -> dict:
        return {"slot": self.slot, "iface": self.iface, "queue": self.queue,
                "points": list(self.points), "snaplen": self.snaplen,
                "filter": self.expression, "started": self.started_wall,
                "captured": self.captured, "dropped": self.dropped}


class Capturing:
    """The supervisor's capture requests and leases; mixed into Supervisor,
    whose umem, interfaces and workers they use."""

    captures: dict[int, CaptureSession]
    capture_totals: dict[str, int]          # records of the sessions that ended

    def capture_request(self, command: str, req: dict) -> tuple[bool, dict | None, str | None]:
        if self.umem is None:
            return False, None, "xdpd is not running yet"
        try:
            if command == "capture_start":
                return True, self._capture_start(req), None
            session = self._session(req.get("token"))
            if command == "capture_read":
                return True, self._capture_read(session), None
            return True, self._capture_stop(session), None
        except FilterError as e:
            return False, {"refused": "filter"}, f"filter: {e}"
        except ValueError as e:
            return False, {"refused": "input"}, str(e)

    def _session(self, token) -> CaptureSession:
        for s in self.captures.values():
            if isinstance(token, str) and secrets.compare_digest(s.token, token):
                return s
        raise ValueError("no such capture (ended, or its lease ran out)")

    def _capture_start(self, req: dict) -> dict:
        iface = next((i for i in self.interfaces if i.name == req.get("iface")), None)
        if iface is None:
            raise ValueError(f"interface {req.get('iface')!r} is not one of xdpd's: "
                             f"{', '.join(i.name for i in self.interfaces)}")
        queue = req.get("queue")
        if queue is not None and (not isinstance(queue, int) or queue not in iface.queues):
            raise ValueError(f"queue {queue!r} of {iface.name}: xdpd owns queues "
                             f"{', '.join(map(str, sorted(iface.queues)))}")
        points = req.get("points") or ["rx"]
        if not isinstance(points, list) or not set(points) <= set(POINTS) or not points:
            raise ValueError(f"points {points!r}: some of {', '.join(POINTS)}")
        snaplen = req.get("snaplen", 262144)
        if not isinstance(snaplen, int) or not 1 <= snaplen <= MAX_SNAPLEN:
            raise ValueError(f"snaplen {snaplen!r}: 1..{MAX_SNAPLEN}")
        expression = req.get("filter") or ""
        if not isinstance(expression, str):
            raise ValueError("filter must be a string")
        program = compile_filter(expression)
        slot = next((s for s in range(MAX_CAPTURES) if s not in self.captures), None)
        if slot is None:
            raise ValueError(f"{MAX_CAPTURES} captures run already; end one first")
        session = CaptureSession(secrets.token_hex(16), slot, iface.name, iface.index, queue,
                                 tuple(points), snaplen, expression,
                                 time.monotonic() + LEASE_S, time.time())
        control = self.umem.control
        for w in self.workers:              # what an earlier capture left in the slot
            control.capture_read(w.id, slot, True)
            session.base[w.id] = control.capture_counts(w.id, slot)
        control.capture_arm(slot, iface.index, -1 if queue is None else queue,
                            sum(POINTS[p] for p in points), snaplen, program)
        self.captures[slot] = session
        log.info("capture %d started: %s%s %s, snaplen %d, filter %r", slot, iface.name,
                 "" if queue is None else f"/q{queue}", ",".join(points), snaplen, expression)
        return {"token": session.token, "slot": slot, "lease_seconds": LEASE_S,
                "interfaces": {str(i.index): i.name for i in self.interfaces}}

    def _capture_read(self, s: CaptureSession) -> dict:
        s.deadline = time.monotonic() + LEASE_S
        control, chunks = self.umem.control, []
        for w in self.workers:
            if w.id not in s.base:          # a worker a reload added: from now on
                control.capture_read(w.id, s.slot, True)
                s.base[w.id] = control.capture_counts(w.id, s.slot)
                continue
            data = control.capture_read(w.id, s.slot)
            if data:
                chunks.append(data)
        data = b"".join(chunks)
        self._capture_counts(s)
        return {"records": base64.b64encode(data).decode(), "captured": s.captured,
                "dropped": s.dropped}

    def _capture_counts(self, s: CaptureSession) -> None:
        captured = dropped = 0
        for w in self.workers:
            if w.id in s.base:
                c, d = self.umem.control.capture_counts(w.id, s.slot)
                captured += c - s.base[w.id][0]
                dropped += d - s.base[w.id][1]
        s.captured, s.dropped = captured, dropped

    def _capture_stop(self, s: CaptureSession, why: str = "ended by its client") -> dict:
        self.umem.control.capture_disarm(s.slot)
        self._capture_counts(s)
        del self.captures[s.slot]
        self.capture_totals["captured"] += s.captured
        self.capture_totals["dropped"] += s.dropped
        log.info("capture %d %s: %d captured, %d dropped (rings full)", s.slot, why,
                 s.captured, s.dropped)
        return {"captured": s.captured, "dropped": s.dropped}

    def expire_captures(self) -> None:
        """Stop the sessions whose client stopped reading (the loop, each turn)."""
        now = time.monotonic()
        for s in [s for s in self.captures.values() if s.deadline < now]:
            self._capture_stop(s, "stopped: its client did not read for "
                                  f"{LEASE_S:g} s")

    def stop_captures(self) -> None:
        """The daemon stops: every session with it."""
        for s in list(self.captures.values()):
            self._capture_stop(s, "stopped with the daemon")
