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

import logging
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler

from . import __version__
from .bpf import XDPD_MAX_QUEUES

log = logging.getLogger("xdpd.metrics")

QUEUE_LABELS = ["netdev", "queue"]
XSK_STATISTICS = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
                  "rx_fill_ring_empty_descs", "tx_ring_empty_descs")
XDP_VERDICTS = ("redirected", "passed", "no_socket")


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
            umem = sup.umem
        if umem is None:
            return

        info = GaugeMetricFamily("xdpd_build_info", "xdpd version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

        rx_p = CounterMetricFamily("xdpd_rx_packets", "Packets received from the queue's AF_XDP socket", labels=QUEUE_LABELS)
        rx_b = CounterMetricFamily("xdpd_rx_bytes", "Bytes received from the queue's AF_XDP socket", labels=QUEUE_LABELS)
        tx_p = CounterMetricFamily("xdpd_tx_packets", "Packets put on the queue's AF_XDP TX ring", labels=QUEUE_LABELS)
        tx_b = CounterMetricFamily("xdpd_tx_bytes", "Bytes put on the queue's AF_XDP TX ring", labels=QUEUE_LABELS)
        drops = CounterMetricFamily("xdpd_dropped_packets", "Packets dropped by xdpd's workers, by reason",
                                    labels=QUEUE_LABELS + ["reason"])
        handoff = CounterMetricFamily("xdpd_handoff_packets", "Packets passed to the worker of the egress queue",
                                      labels=QUEUE_LABELS)
        kicks = CounterMetricFamily("xdpd_tx_wakeups", "sendto() calls made to start transmission",
                                    labels=QUEUE_LABELS)
        sleeps = CounterMetricFamily("xdpd_worker_sleeps", "Times a worker blocked waiting for packets",
                                     labels=QUEUE_LABELS)
        polls = CounterMetricFamily("xdpd_busy_polls", "recvfrom()/sendto() calls made to "
                                    "busy-poll the queue (workers.busy_poll)", labels=QUEUE_LABELS)
        up = GaugeMetricFamily("xdpd_worker_up", "1 while the worker is running", labels=QUEUE_LABELS)
        restarts = CounterMetricFamily("xdpd_worker_restarts", "Worker processes replaced", labels=QUEUE_LABELS)
        xsk = {name: CounterMetricFamily(f"xdpd_xsk_{name}", f"AF_XDP socket XDP_STATISTICS {name}",
                                         labels=QUEUE_LABELS) for name in XSK_STATISTICS}
        for w in workers:
            labels = [w.plan.netdev, str(w.plan.queue)]
            s = umem.control.worker_stats(w.id)
            rx_p.add_metric(labels, s["rx_packets"])
            rx_b.add_metric(labels, s["rx_bytes"])
            tx_p.add_metric(labels, s["tx_packets"])
            tx_b.add_metric(labels, s["tx_bytes"])
            for reason, n in s["drops"].items():
                drops.add_metric(labels + [reason], n)
            handoff.add_metric(labels, s["handoff_out"])
            kicks.add_metric(labels, s["tx_kicks"])
            sleeps.add_metric(labels, s["sleeps"])
            polls.add_metric(labels, s["busy_polls"])
            up.add_metric(labels, 1 if w.state.value == "running" else 0)
            restarts.add_metric(labels, w.restarts)
            try:
                for name, v in w.socket.statistics().items():
                    xsk[name].add_metric(labels, v)
            except OSError as e:
                log.debug("%s: %s", w.name, e)
        yield from (rx_p, rx_b, tx_p, tx_b, drops, handoff, kicks, sleeps, polls, up, restarts)
        yield from xsk.values()

        xdp = CounterMetricFamily("xdpd_xdp_packets", "XDP program verdicts per rx queue",
                                  labels=QUEUE_LABELS + ["verdict"])
        for iface in interfaces:
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

        frames = GaugeMetricFamily("xdpd_umem_frames", "UMEM frames by location", labels=["location"])
        for loc, n in umem.frame_locations().items():
            frames.add_metric([loc], n)
        yield frames
        yield GaugeMetricFamily("xdpd_umem_frames_capacity", "UMEM frames in all", value=umem.capacity)
        yield GaugeMetricFamily("xdpd_umem_bytes", "UMEM size", value=umem.geometry.size)
        yield GaugeMetricFamily("xdpd_ready", "1 once every worker is forwarding",
                                value=1 if sup.ready else 0)


def serve(supervisor, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics from a daemon thread; the caller shuts it down."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(XdpdCollector(supervisor))
    handler = MetricsHandler.factory(registry)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(handler):
        def log_message(self, fmt, *args):   # no access log on stderr
            pass

    server = Server((host, port), Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
