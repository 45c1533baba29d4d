"""Every metric xdpd serves, declared once: name, type, help, labels.

The collector (metrics.py) makes each family from here, deploy/monitoring.py
derives the contract the dashboard and the alerting rules are checked
against, and tests/unit/test_metric_table.py holds the README's metrics
reference and a scrape to it.  Owns the names and their meaning; computes
nothing.  A counter's name is given without `_total`, which the exposition
adds (Metric.series is the name as scraped).
"""
from __future__ import annotations

from dataclasses import dataclass

QUEUE = ("netdev", "queue")
# a worker: its queue, and which of the queue's fanout workers (0 without fanout)
WORKER = QUEUE + ("member",)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str                       # counter | gauge
    help: str
    labels: tuple[str, ...] = ()
    source: str = ""                # the XDP_STATISTICS field it carries, if any

    @property
    def series(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


METRICS: tuple[Metric, ...] = (
    Metric('xdpd_build_info', 'gauge',
           'xdpd version',
           ('version',)),
    Metric('xdpd_ready', 'gauge',
           '1 once every worker is forwarding',
           ()),
    Metric('xdpd_internal_errors', 'counter',
           'Operations of the supervisor that failed and were retried (spawn, accept, '
           'watchdog, ...), by where',
           ('where',)),
    Metric('xdpd_rx_packets', 'counter',
           "Packets received from the queue's AF_XDP socket",
           WORKER),
    Metric('xdpd_rx_bytes', 'counter',
           "Bytes received from the queue's AF_XDP socket",
           WORKER),
    Metric('xdpd_rx_fragments', 'counter',
           'Buffers (descriptors) of the packets received: one per packet, more for a '
           'packet longer than a frame (umem.multi_buffer); divided by '
           'xdpd_rx_packets_total: fragments per packet',
           WORKER),
    Metric('xdpd_tx_packets', 'counter',
           "Packets put on the queue's AF_XDP TX rings: the worker's own, and other "
           "workers' direct sockets on its queue",
           WORKER),
    Metric('xdpd_tx_bytes', 'counter',
           "Bytes put on the queue's AF_XDP TX rings (as xdpd_tx_packets_total)",
           WORKER),
    Metric('xdpd_dropped_packets', 'counter',
           "Packets dropped by xdpd's workers, by reason",
           WORKER + ('reason',)),
    Metric('xdpd_handoff_packets', 'counter',
           'Packets passed to the worker of the egress queue',
           WORKER),
    Metric('xdpd_direct_tx_packets', 'counter',
           "Packets the worker sent on another interface's queue through a TX socket of its "
           "own there (workers.direct_tx; also counted in that queue's "
           'xdpd_tx_packets_total)',
           WORKER),
    Metric('xdpd_tx_wakeups', 'counter',
           'sendto() calls made to start transmission',
           WORKER),
    Metric('xdpd_worker_sleeps', 'counter',
           'Times a worker blocked waiting for packets',
           WORKER),
    Metric('xdpd_busy_polls', 'counter',
           'recvfrom()/sendto() calls made to busy-poll the queue (workers.busy_poll)',
           WORKER),
    Metric('xdpd_bad_descriptors', 'counter',
           "Descriptors a worker refused: an address outside the UMEM or not its owner's, a "
           'length past the frame, a frame returned twice',
           WORKER),
    Metric('xdpd_checksums_completed', 'counter',
           "Partial TCP/UDP checksums (a local stack's, TX offload on) completed before "
           'forwarding (interfaces[].checksum)',
           WORKER),
    Metric('xdpd_worker_up', 'gauge',
           '1 while the worker is running',
           WORKER),
    Metric('xdpd_worker_state', 'gauge',
           "1 for the worker's current state",
           WORKER + ('state',)),
    Metric('xdpd_worker_start_time_seconds', 'gauge',
           "Unix time the worker's current process was started",
           WORKER),
    Metric('xdpd_worker_restarts', 'counter',
           'Worker processes replaced',
           WORKER),
    Metric('xdpd_worker_cpu_seconds', 'counter',
           "CPU time of the worker's current process, by mode, as it reports it (about once "
           'a second)',
           WORKER + ('mode',)),
    Metric('xdpd_worker_busy_seconds', 'counter',
           'Time the worker spent in loop iterations that moved frames, its kicks\' '
           'kernel work included (not its idle spinning): the forwarding load on its CPU',
           WORKER),
    Metric('xdpd_ring_used_entries', 'gauge',
           "Entries on the socket's ring (as of the worker's last pause, at most 200 ms old)",
           WORKER + ('ring',)),
    Metric('xdpd_ring_size_entries', 'gauge',
           "Size of the socket's ring",
           WORKER + ('ring',)),
    Metric('xdpd_rule_packets', 'counter',
           'Packets a forward rule took (the first whose match fits), by its index in '
           "`forward`; zeroed when the interface's rules change",
           WORKER + ('rule',)),
    Metric('xdpd_rule_bytes', 'counter',
           'Bytes of the packets a forward rule took, by its index in `forward`',
           WORKER + ('rule',)),
    Metric('xdpd_xdp_packets', 'counter',
           'XDP program verdicts per rx queue',
           QUEUE + ('verdict',)),
    Metric('xdpd_interface_info', 'gauge',
           "The XDP mode in use and the AF_XDP sockets' mode, per interface",
           ('netdev', 'xdp_mode', 'socket_mode')),
    Metric('xdpd_umem_frames', 'gauge',
           'UMEM frames by location',
           ('location',)),
    Metric('xdpd_umem_frames_capacity', 'gauge',
           'UMEM frames in all',
           ()),
    Metric('xdpd_umem_bytes', 'gauge',
           'UMEM size',
           ()),
    Metric('xdpd_worker_slots', 'gauge',
           'Workers the UMEM was sized for (configured + umem.spare_workers)',
           ()),
    Metric('xdpd_worker_slots_used', 'gauge',
           'Worker slots in use',
           ()),
    Metric('xdpd_reloads', 'counter',
           'Reload requests, by result',
           ('result',)),
    Metric('xdpd_captures_active', 'gauge',
           '`xdpd capture` sessions running',
           ()),
    Metric('xdpd_capture_records', 'counter',
           "Records of `xdpd capture` sessions, ended or running: captured (written into "
           "the workers' rings) and dropped (the rings had no room: a reader was slow)",
           ('kind',)),
    Metric('xdpd_cpu_wake_held', 'gauge',
           "1 while xdpd caps the CPU's wake-up latency at workers.cpu_wake_latency_us "
           "(its workers received within the last seconds), 0 otherwise; one per CPU with "
           "workers",
           ('cpu',)),
    Metric('xdpd_workers_spread', 'gauge',
           '1 while the workers run on their spread CPUs (workers.placement: spread, or '
           'adaptive while busy), 0 while by queue',
           ()),
    Metric('xdpd_workers_hosted', 'gauge',
           "Workers whose port runs in another worker's process now, as they share a CPU "
           "(workers.share_process)",
           ()),
    Metric('xdpd_placement_changes', 'counter',
           'Moves of the workers between the by-queue and the spread layout '
           '(workers.placement: adaptive)',
           ()),
    Metric('xdpd_config_generation', 'gauge',
           '1 at start, +1 per applied reload',
           ()),
    Metric('xdpd_last_reload_success_timestamp_seconds', 'gauge',
           'Unix time of the last applied reload (0: none yet)',
           ()),
    Metric('xdpd_last_reload_successful', 'gauge',
           '0 if the last reload was refused or failed, else 1',
           ()),
    Metric('xdpd_xsk_rx_dropped_packets', 'counter',
           'AF_XDP socket XDP_STATISTICS rx_dropped: packets the kernel dropped before the '
           'RX ring (other than ring full)',
           WORKER, source='rx_dropped'),
    Metric('xdpd_xsk_rx_invalid_descriptors', 'counter',
           'AF_XDP socket XDP_STATISTICS rx_invalid_descs: invalid FILL ring descriptors',
           WORKER, source='rx_invalid_descs'),
    Metric('xdpd_xsk_tx_invalid_descriptors', 'counter',
           'AF_XDP socket XDP_STATISTICS tx_invalid_descs: invalid TX ring descriptors',
           WORKER, source='tx_invalid_descs'),
    Metric('xdpd_xsk_rx_ring_full', 'counter',
           'AF_XDP socket XDP_STATISTICS rx_ring_full: packets dropped because the RX ring '
           'was full',
           WORKER, source='rx_ring_full'),
    Metric('xdpd_xsk_fill_ring_empty', 'counter',
           'AF_XDP socket XDP_STATISTICS rx_fill_ring_empty_descs: times the kernel found '
           'the FILL ring empty',
           WORKER, source='rx_fill_ring_empty_descs'),
    Metric('xdpd_xsk_tx_ring_empty', 'counter',
           'AF_XDP socket XDP_STATISTICS tx_ring_empty_descs: times the kernel found the TX '
           'ring empty when woken',
           WORKER, source='tx_ring_empty_descs'),
)
BY_NAME = {m.name: m for m in METRICS}

# The supervisor process, from prometheus_client's ProcessCollector.
PROCESS_SERIES = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
}


def family(name: str, **kwargs):
    """The family for metric `name`, as declared (value=... for one without
    labels)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    m = BY_NAME[name]
    kind = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
    if m.labels:
        return kind(m.name, m.help, labels=list(m.labels), **kwargs)
    return kind(m.name, m.help, **kwargs)
