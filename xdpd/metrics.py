"""Prometheus metrics: one collector in the supervisor, read at scrape time.

Workers never talk to Prometheus and never pay for a scrape: they write
plain counters into the control area, and this collector reads them, the
AF_XDP sockets' XDP_STATISTICS and the XDP program's per-queue counters
when /metrics is requested.  (prometheus_client's multiprocess mode is not
used: one reader of shared memory is the design.)

Names follow the Prometheus conventions: units in names, `_total` for
counters, drops as one metric with a bounded `reason` label.
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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler

from . import __version__
from .bpf import XDPD_MAX_QUEUES
from .supervisor import worker_rule_counts

log = logging.getLogger("xdpd.metrics")

QUEUE_LABELS = ["netdev", "queue"]
# a worker: its queue, and which of the queue's fanout workers (0 without fanout)
WORKER_LABELS = QUEUE_LABELS + ["member"]
# XDP_STATISTICS field -> (metric, what it counts)
XSK_STATISTICS = {
    "rx_dropped": ("xdpd_xsk_rx_dropped_packets",
                   "packets the kernel dropped before the RX ring (other than ring full)"),
    "rx_invalid_descs": ("xdpd_xsk_rx_invalid_descriptors", "invalid FILL ring descriptors"),
    "tx_invalid_descs": ("xdpd_xsk_tx_invalid_descriptors", "invalid TX ring descriptors"),
    "rx_ring_full": ("xdpd_xsk_rx_ring_full",
                     "packets dropped because the RX ring was full"),
    "rx_fill_ring_empty_descs": ("xdpd_xsk_fill_ring_empty",
                                 "times the kernel found the FILL ring empty"),
    "tx_ring_empty_descs": ("xdpd_xsk_tx_ring_empty",
                            "times the kernel found the TX ring empty when woken"),
}
RINGS = ("rx", "tx", "fill", "completion")
WORKER_STATES = ("starting", "running", "draining", "backoff", "fatal", "stopped")
XDP_VERDICTS = ("redirected", "passed", "no_socket", "pass_rule", "fanout_to_owner")


class XdpdCollector:
    def __init__(self, supervisor):
        self.sup = supervisor

    def describe(self):
        return []      # no describe-time collection: the worker set changes

    def collect(self) -> Iterator:
        sup = self.sup
        with sup.lock:
            workers = list(sup.workers)
            interfaces = list(sup.interfaces)
            procs = {w.id: w.proc for w in workers}
            umem = sup.umem
            config = getattr(sup, "config", None)
        if umem is None:
            return

        info = GaugeMetricFamily("xdpd_build_info", "xdpd version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._workers(workers, procs, umem, config)
        yield from self._interfaces(interfaces, sup.zero_copy)
        yield from self._umem(umem, len(sup.free_slots))
        yield from self._reloads(sup)
        yield GaugeMetricFamily("xdpd_ready", "1 once every worker is forwarding",
                                value=1 if sup.ready else 0)
        errors = CounterMetricFamily("xdpd_internal_errors", "Operations of the supervisor "
                                     "that failed and were retried (spawn, accept, watchdog, "
                                     "...), by where", labels=["where"])
        for where, n in sorted(sup.internal_errors.items()):
            errors.add_metric([where], n)
        yield errors

    def _workers(self, workers, procs, umem, config=None) -> Iterator:
        rx_p = CounterMetricFamily("xdpd_rx_packets", "Packets received from the queue's AF_XDP socket", labels=WORKER_LABELS)
        rx_b = CounterMetricFamily("xdpd_rx_bytes", "Bytes received from the queue's AF_XDP socket", labels=WORKER_LABELS)
        tx_p = CounterMetricFamily("xdpd_tx_packets", "Packets put on the queue's AF_XDP TX ring", labels=WORKER_LABELS)
        tx_b = CounterMetricFamily("xdpd_tx_bytes", "Bytes put on the queue's AF_XDP TX ring", labels=WORKER_LABELS)
        drops = CounterMetricFamily("xdpd_dropped_packets", "Packets dropped by xdpd's workers, by reason",
                                    labels=WORKER_LABELS + ["reason"])
        handoff = CounterMetricFamily("xdpd_handoff_packets", "Packets passed to the worker of the egress queue",
                                      labels=WORKER_LABELS)
        direct = CounterMetricFamily("xdpd_direct_tx_packets", "Packets the worker sent on "
                                     "another interface's queue through a TX socket of its "
                                     "own there (workers.direct_tx; also counted in that "
                                     "queue's xdpd_tx_packets_total)", labels=WORKER_LABELS)
        kicks = CounterMetricFamily("xdpd_tx_wakeups", "sendto() calls made to start transmission",
                                    labels=WORKER_LABELS)
        sleeps = CounterMetricFamily("xdpd_worker_sleeps", "Times a worker blocked waiting for packets",
                                     labels=WORKER_LABELS)
        polls = CounterMetricFamily("xdpd_busy_polls", "recvfrom()/sendto() calls made to "
                                    "busy-poll the queue (workers.busy_poll)", labels=WORKER_LABELS)
        bad = CounterMetricFamily("xdpd_bad_descriptors", "Descriptors a worker refused: an "
                                  "address outside the UMEM or not its owner's, a length "
                                  "past the frame, a frame returned twice",
                                  labels=WORKER_LABELS)
        csum = CounterMetricFamily("xdpd_checksums_completed", "Partial TCP/UDP checksums "
                                   "(a local stack's, TX offload on) completed before "
                                   "forwarding (interfaces[].checksum)", labels=WORKER_LABELS)
        up = GaugeMetricFamily("xdpd_worker_up", "1 while the worker is running", labels=WORKER_LABELS)
        state = GaugeMetricFamily("xdpd_worker_state", "1 for the worker's current state",
                                  labels=WORKER_LABELS + ["state"])
        started = GaugeMetricFamily("xdpd_worker_start_time_seconds", "Unix time the worker's "
                                    "current process was started", labels=WORKER_LABELS)
        restarts = CounterMetricFamily("xdpd_worker_restarts", "Worker processes replaced", labels=WORKER_LABELS)
        cpu = CounterMetricFamily("xdpd_worker_cpu_seconds", "CPU time of the worker's current "
                                  "process, by mode, as it reports it (about once a second)", labels=WORKER_LABELS + ["mode"])
        ring_used = GaugeMetricFamily("xdpd_ring_used_entries", "Entries on the socket's ring "
                                      "(as of the worker's last pause, at most 200 ms old)",
                                      labels=WORKER_LABELS + ["ring"])
        ring_size = GaugeMetricFamily("xdpd_ring_size_entries", "Size of the socket's ring",
                                      labels=WORKER_LABELS + ["ring"])
        rule_p = CounterMetricFamily("xdpd_rule_packets", "Packets a forward rule took (the "
                                     "first whose match fits), by its index in `forward`; "
                                     "zeroed when the interface's rules change",
                                     labels=WORKER_LABELS + ["rule"])
        rule_b = CounterMetricFamily("xdpd_rule_bytes", "Bytes of the packets a forward rule "
                                     "took, by its index in `forward`",
                                     labels=WORKER_LABELS + ["rule"])
        xsk = {name: CounterMetricFamily(metric, f"AF_XDP socket XDP_STATISTICS {name}: {help}",
                                         labels=WORKER_LABELS)
               for name, (metric, help) in XSK_STATISTICS.items()}
        r = getattr(self.sup, "ring_sizes", None)
        sizes = {ring: getattr(r, ring) for ring in RINGS} if r else {}
        all_stats = self.sup.worker_stats()
        for w in workers:
            labels = [w.plan.netdev, str(w.plan.queue), str(w.plan.member)]
            s = all_stats.get(w.id)
            if s is None:               # gone since the list was taken
                continue
            rx_p.add_metric(labels, s["rx_packets"])
            rx_b.add_metric(labels, s["rx_bytes"])
            tx_p.add_metric(labels, s["tx_packets"])
            tx_b.add_metric(labels, s["tx_bytes"])
            for reason, n in s["drops"].items():
                drops.add_metric(labels + [reason], n)
            handoff.add_metric(labels, s["handoff_out"])
            direct.add_metric(labels, s["direct_packets"])
            kicks.add_metric(labels, s["tx_kicks"])
            sleeps.add_metric(labels, s["sleeps"])
            polls.add_metric(labels, s["busy_polls"])
            bad.add_metric(labels, s["bad_descs"])
            csum.add_metric(labels, s["csum_completed"])
            up.add_metric(labels, 1 if w.state.value == "running" else 0)
            for st in WORKER_STATES:
                state.add_metric(labels + [st], 1 if w.state.value == st else 0)
            restarts.add_metric(labels, w.restarts)
            proc = procs.get(w.id)
            if proc is not None:
                started.add_metric(labels, w.started_wall)
                use = self.sup.worker_usage(w.id, proc.pid)
                if use is not None:
                    cpu.add_metric(labels + ["user"], use["user_ns"] / 1e9)
                    cpu.add_metric(labels + ["system"], use["system_ns"] / 1e9)
            for rule, packets, bytes_ in worker_rule_counts(config, umem.control, w):
                rule_p.add_metric(labels + [str(rule.index)], packets)
                rule_b.add_metric(labels + [str(rule.index)], bytes_)
            for ring, n in umem.control.ring_use(w.id).items():
                ring_used.add_metric(labels + [ring], n)
                if ring in sizes:
                    ring_size.add_metric(labels + [ring], sizes[ring])
            try:
                for name, v in w.socket.statistics().items():
                    xsk[name].add_metric(labels, v)
            except OSError as e:
                log.debug("%s: %s", w.name, e)
        yield from (rx_p, rx_b, tx_p, tx_b, drops, handoff, direct, kicks, sleeps, polls, bad, csum, up, state,
                    started, restarts, cpu, ring_used, ring_size, rule_p, rule_b)
        yield from xsk.values()

    def _interfaces(self, interfaces, zero_copy: bool) -> Iterator:
        xdp = CounterMetricFamily("xdpd_xdp_packets", "XDP program verdicts per rx queue",
                                  labels=QUEUE_LABELS + ["verdict"])
        info = GaugeMetricFamily("xdpd_interface_info", "The XDP mode in use and the AF_XDP "
                                 "sockets' mode, per interface",
                                 labels=["netdev", "xdp_mode", "socket_mode"])
        for iface in interfaces:
            info.add_metric([iface.name, iface.xdp_mode, "zero-copy" if zero_copy else "copy"], 1)
            # every rx queue: traffic on a queue xdpd does not own shows as "passed"
            for q in range(min(iface.rx_queues, XDPD_MAX_QUEUES)):
                try:
                    st = iface.program.queue_stats(q)
                except OSError as e:
                    log.debug("%s/q%d: %s", iface.name, q, e)
                    continue
                for verdict in XDP_VERDICTS:
                    xdp.add_metric([iface.name, str(q), verdict], st[verdict])
        yield xdp
        yield info

    def _umem(self, umem, free_slots: int) -> Iterator:
        frames = GaugeMetricFamily("xdpd_umem_frames", "UMEM frames by location", labels=["location"])
        for loc, n in umem.frame_locations().items():
            frames.add_metric([loc], n)
        yield frames
        yield GaugeMetricFamily("xdpd_umem_frames_capacity", "UMEM frames in all", value=umem.capacity)
        yield GaugeMetricFamily("xdpd_umem_bytes", "UMEM size", value=umem.geometry.size)
        yield GaugeMetricFamily("xdpd_worker_slots", "Workers the UMEM was sized for "
                                "(configured + umem.spare_workers)", value=umem.geometry.nworkers)
        yield GaugeMetricFamily("xdpd_worker_slots_used", "Worker slots in use",
                                value=umem.geometry.nworkers - free_slots)

    def _reloads(self, sup) -> Iterator:
        reloads = CounterMetricFamily("xdpd_reloads", "Reload requests, by result",
                                      labels=["result"])
        for result, n in sup.reloads.items():
            reloads.add_metric([result], n)
        yield reloads
        yield GaugeMetricFamily("xdpd_config_generation", "1 at start, +1 per applied reload",
                                value=sup.generation)
        yield GaugeMetricFamily("xdpd_last_reload_success_timestamp_seconds",
                                "Unix time of the last applied reload (0: none yet)",
                                value=sup.last_reload_success)
        last = sup.last_reload
        yield GaugeMetricFamily("xdpd_last_reload_successful", "0 if the last reload was "
                                "refused or failed, else 1",
                                value=0 if last and last["result"] not in ("applied", "unchanged")
                                else 1)


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
