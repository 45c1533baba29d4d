"""Prometheus metrics: one collector, serving the supervisor's latest snapshot.

Workers never talk to Prometheus and never pay for a scrape: they write
plain counters into the control area; the supervisor's loop reads them,
the AF_XDP sockets' XDP_STATISTICS and the XDP program's per-queue
counters into a snapshot (snapshot.py), at once when a scrape asks for
one, and the scrape turns it into metric families.  (prometheus_client's multiprocess mode is not
used: one reader of shared memory is the design.)

Names follow the Prometheus conventions: units in names, `_total` for
counters, drops as one metric with a bounded `reason` label.  Each metric's
name, type, help and labels are declared once, in metric_table.py.
"""
from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import MetricsHandler

from xdpd import __version__
from xdpd.control.metric_table import METRICS, family

log = logging.getLogger("xdpd.metrics")

RINGS = ("rx", "tx", "fill", "completion")
WORKER_STATES = ("starting", "running", "draining", "backoff", "fatal", "stopped")
XDP_VERDICTS = ("redirected", "passed", "no_socket", "pass_rule", "fanout_to_owner")


class XdpdCollector:
    """A snapshot (snapshot.py) as metric families: the loop takes one for
    each scrape (Supervisor.fresh_snapshot); no read of live state or shared
    memory here, on the HTTP thread."""

    def __init__(self, supervisor):
        self.sup = supervisor

    def describe(self):
        return []      # no describe-time collection: the worker set changes

    def collect(self) -> Iterator:
        snap = self.sup.fresh_snapshot()
        if snap is None:
            return
        info = family('xdpd_build_info')
        info.add_metric([__version__], 1)
        yield info
        yield from self._workers(snap)
        yield from self._interfaces(snap)
        yield from self._umem(snap)
        yield from self._reloads(snap)
        yield from self._captures(snap)
        yield from self._cpu_wake(snap)
        yield family('xdpd_ready', value=1 if snap.ready else 0)
        errors = family('xdpd_internal_errors')
        for where, n in sorted(snap.internal_errors.items()):
            errors.add_metric([where], n)
        yield errors

    def _workers(self, snap) -> Iterator:
        rx_p = family('xdpd_rx_packets')
        rx_b = family('xdpd_rx_bytes')
        rx_f = family('xdpd_rx_fragments')
        tx_p = family('xdpd_tx_packets')
        tx_b = family('xdpd_tx_bytes')
        drops = family('xdpd_dropped_packets')
        handoff = family('xdpd_handoff_packets')
        direct = family('xdpd_direct_tx_packets')
        kicks = family('xdpd_tx_wakeups')
        sleeps = family('xdpd_worker_sleeps')
        polls = family('xdpd_busy_polls')
        bad = family('xdpd_bad_descriptors')
        csum = family('xdpd_checksums_completed')
        up = family('xdpd_worker_up')
        state = family('xdpd_worker_state')
        started = family('xdpd_worker_start_time_seconds')
        restarts = family('xdpd_worker_restarts')
        cpu = family('xdpd_worker_cpu_seconds')
        busy = family('xdpd_worker_busy_seconds')
        ring_used = family('xdpd_ring_used_entries')
        ring_size = family('xdpd_ring_size_entries')
        rule_p = family('xdpd_rule_packets')
        rule_b = family('xdpd_rule_bytes')
        xsk = {m.source: family(m.name) for m in METRICS if m.source}
        for w in snap.workers:
            labels = [w.netdev, str(w.queue), str(w.member)]
            s = w.stats
            rx_p.add_metric(labels, s["rx_packets"])
            rx_b.add_metric(labels, s["rx_bytes"])
            rx_f.add_metric(labels, s["rx_frags"])
            tx_p.add_metric(labels, s["tx_packets"])
            tx_b.add_metric(labels, s["tx_bytes"])
            for reason, n in s["drops"].items():
                drops.add_metric(labels + [reason], n)
            handoff.add_metric(labels, s["handoff_out"])
            direct.add_metric(labels, s["direct_tx_packets"])
            kicks.add_metric(labels, s["tx_kicks"])
            sleeps.add_metric(labels, s["sleeps"])
            polls.add_metric(labels, s["busy_polls"])
            bad.add_metric(labels, s["bad_descs"])
            csum.add_metric(labels, s["csum_completed"])
            busy.add_metric(labels, s["busy_ns"] / 1e9)
            up.add_metric(labels, 1 if w.state == "running" else 0)
            for st in WORKER_STATES:
                state.add_metric(labels + [st], 1 if w.state == st else 0)
            restarts.add_metric(labels, w.restarts)
            if w.process:
                started.add_metric(labels, w.started_wall)
                if w.usage is not None:
                    cpu.add_metric(labels + ["user"], w.usage["user_ns"] / 1e9)
                    cpu.add_metric(labels + ["system"], w.usage["system_ns"] / 1e9)
            for rule, packets, bytes_ in w.rules:
                rule_p.add_metric(labels + [str(rule.index)], packets)
                rule_b.add_metric(labels + [str(rule.index)], bytes_)
            for ring, n in w.rings.items():
                ring_used.add_metric(labels + [ring], n)
                if ring in snap.ring_sizes:
                    ring_size.add_metric(labels + [ring], snap.ring_sizes[ring])
            for name, v in w.xsk.items():
                xsk[name].add_metric(labels, v)
        yield from (rx_p, rx_b, rx_f, tx_p, tx_b, drops, handoff, direct, kicks, sleeps, polls,
                    bad, csum, up, state, started, restarts, cpu, busy, ring_used, ring_size,
                    rule_p, rule_b)
        yield from xsk.values()

    def _interfaces(self, snap) -> Iterator:
        xdp = family('xdpd_xdp_packets')
        info = family('xdpd_interface_info')
        for iface in snap.interfaces:
            info.add_metric([iface.name, iface.xdp_mode,
                             "zero-copy" if snap.zero_copy else "copy"], 1)
            # every rx queue: traffic on a queue xdpd does not own shows as "passed"
            for st in iface.xdp_packets:
                for verdict in XDP_VERDICTS:
                    xdp.add_metric([iface.name, str(st["queue"]), verdict], st[verdict])
        yield xdp
        yield info

    def _umem(self, snap) -> Iterator:
        frames = family('xdpd_umem_frames')
        for loc, n in snap.umem["frames_by_location"].items():
            frames.add_metric([loc], n)
        yield frames
        yield family('xdpd_umem_frames_capacity', value=snap.umem["capacity"])
        yield family('xdpd_umem_bytes', value=snap.umem["bytes"])
        yield family('xdpd_worker_slots', value=snap.umem["worker_slots"])
        yield family('xdpd_worker_slots_used', value=snap.umem["worker_slots_used"])

    def _captures(self, snap) -> Iterator:
        yield family('xdpd_captures_active', value=len(snap.captures))
        records = family('xdpd_capture_records')
        for kind in ("captured", "dropped"):
            records.add_metric([kind], snap.capture_totals.get(kind, 0) +
                               sum(c[kind] for c in snap.captures))
        yield records

    def _cpu_wake(self, snap) -> Iterator:
        held = family('xdpd_cpu_wake_held')
        for cpu in sorted({w.cpu for w in snap.workers}):
            held.add_metric([str(cpu)], int(cpu in snap.cpu_wake.get("held", ())))
        yield held
        yield family('xdpd_workers_spread', value=int(snap.placement.get("spread", False)))
        yield family('xdpd_placement_changes', value=snap.placement.get("changes", 0))
        yield family('xdpd_workers_hosted', value=sum(w.hosted_by is not None
                                                      for w in snap.workers))

    def _reloads(self, snap) -> Iterator:
        reloads = family('xdpd_reloads')
        for result, n in snap.reloads.items():
            reloads.add_metric([result], n)
        yield reloads
        yield family('xdpd_config_generation', value=snap.generation)
        yield family('xdpd_last_reload_success_timestamp_seconds',
                     value=snap.last_reload_success)
        last = snap.last_reload
        ok = not last or last["result"] in ("applied", "unchanged")
        yield family('xdpd_last_reload_successful', value=1 if ok else 0)


class BoundedServer(ThreadingHTTPServer):
    """The scrape endpoint, bounded so that no client can exhaust the
    supervisor: at most MAX_CONNECTIONS at once, each with a read timeout
    of READ_TIMEOUT_S and a deadline of CONNECTION_DEADLINE_S from its
    accept (a slow-loris client sending a byte a second is cut off there),
    a backlog of LISTEN_BACKLOG, and an accept that fails for want of
    descriptors (EMFILE, ENFILE) pauses the thread for ACCEPT_PAUSE_S
    instead of spinning.  When every slot is held, a new connection takes
    the slot of the oldest one that has not sent a whole request yet (it is
    closed), so clients that connect and wait cannot keep a scrape out;
    when every slot is answering a request, the new one is closed.  Everything runs on the
    metrics thread; the supervisor's loop never waits for it.  Failures
    are counted in the supervisor's internal errors (where="metrics")."""
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG = 64
    MAX_CONNECTIONS = 16
    READ_TIMEOUT_S = 5.0
    CONNECTION_DEADLINE_S = 10.0
    ACCEPT_PAUSE_S = 0.1

    def __init__(self, address, handler, note_error=lambda where, e: None):
        self.note_error = note_error
        self._slots = threading.BoundedSemaphore(self.MAX_CONNECTIONS)
        self._open: dict[socket.socket, float] = {}     # connection -> its deadline
        self._answering: set[socket.socket] = set()     # ... that sent a whole request
        self._open_lock = threading.Lock()
        self.evicted = 0                                # connections closed to make room

        class Marked(handler):
            def parse_request(self):
                whole = super().parse_request()
                if whole:
                    self.server._mark_answering(self.request)
                return whole

        super().__init__(address, Marked)

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.note_error("metrics", e)
                time.sleep(self.ACCEPT_PAUSE_S)
            raise                           # socketserver drops this request

    def process_request(self, request, client_address):
        with self._open_lock:
            victim = None
            if not self._slots.acquire(blocking=False):
                victim = self._take_slot_of_oldest_waiting()
                if victim is None:
                    self.shutdown_request(request)  # all answering: Prometheus retries
                    return
            self._open[request] = time.monotonic() + self.CONNECTION_DEADLINE_S
        if victim is not None:
            try:
                victim.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            super().process_request(request, client_address)
        except BaseException as e:          # no thread (EAGAIN, ENOMEM)
            self._done(request)
            self.note_error("metrics", e)
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _take_slot_of_oldest_waiting(self):
        """Every slot held (the lock held): the oldest connection still
        waiting for its request gives up its slot, for the caller's new one;
        the caller closes it (its handler's read ends; _done() then has no
        slot to give back).  None when every connection is being answered."""
        waiting = [c for c in self._open if c not in self._answering]
        if not waiting:
            return None
        victim = min(waiting, key=self._open.__getitem__)
        del self._open[victim]
        self.evicted += 1
        return victim

    def _mark_answering(self, request) -> None:
        with self._open_lock:
            if request in self._open:
                self._answering.add(request)

    def _done(self, request) -> None:
        with self._open_lock:
            self._answering.discard(request)
            if self._open.pop(request, None) is not None:
                self._slots.release()

    def service_actions(self):
        """Called by serve_forever() about every poll interval: cut off
        connections past their deadline (their handler's read then ends)."""
        now = time.monotonic()
        with self._open_lock:
            late = [c for c, deadline in self._open.items() if deadline <= now]
        for c in late:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # a client that went away or timed out: not worth a traceback
        log.debug("metrics client %s: %s", client_address, sys.exc_info()[1])

    def open_connections(self) -> int:
        with self._open_lock:
            return len(self._open)


def serve(supervisor, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics from a daemon thread; the caller shuts it down."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(XdpdCollector(supervisor))
    ProcessCollector(registry=registry)     # the supervisor's own process_* metrics
    handler = MetricsHandler.factory(registry)

    class Server(BoundedServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(handler):
        timeout = BoundedServer.READ_TIMEOUT_S          # per read of the request

        def log_message(self, fmt, *args):   # no access log on stderr
            pass

    server = Server((host, port), Quiet, note_error=supervisor.note_internal_error)
    threading.Thread(target=server.serve_forever, args=(0.2,), name="metrics",
                     daemon=True).start()
    return server
