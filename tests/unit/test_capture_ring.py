"""Capture in the workers' loop, on synthetic rings (the microbenchmark's
ports run port_step, the workers' own code): a slot armed with a libpcap
filter gets a record per packet it takes at each point, frames as they
were received and as they left; a ring that fills drops records, never
packets; an armed slot for nothing and a disarmed one cost nothing but
the test.  Real traffic through a running xdpd waits for `xdpd capture`."""
import importlib.util
import os
import sys
import time
from dataclasses import replace

import pytest

from xdpd.datapath import _fastpath
from xdpd.datapath.capture import POINTS, records
from xdpd.kernel.pcap_filter import compile_filter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("fastpath_micro",
                                              os.path.join(ROOT, "bench", "fastpath_micro.py"))
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)

try:
    compile_filter("udp")
except OSError:                                 # pragma: no cover
    pytest.skip("needs libpcap (libpcap0.8)", allow_module_level=True)

SETUP = bench.Setup(packets=400, batch=64, size=64, frame_size=2048, frames_per_worker=1024,
                    rings=(512, 256, 1024, 2048), hugepages="off")


def captured(scenario: str, expression: str, points: str, packets: int, snaplen: int = 128,
             arm: bool = True):
    s = bench.SCENARIOS[scenario]
    setup = replace(SETUP, packets=packets)
    umem = bench.prepare(s, setup)
    try:
        if arm:
            umem.control.capture_arm(0, -1, -1, sum(POINTS[p] for p in points.split(",")),
                                     snaplen, compile_filter(expression))
        r = bench.run_once(umem, s, setup)
        got = records(umem.control.capture_read(0, 0))
        counts = umem.control.capture_counts(0, 0)
    finally:
        umem.close()
    return r, got, counts


def test_rx_and_tx_records_show_the_frame_before_and_after_the_rewrite():
    t0 = time.time_ns()
    r, got, (n, dropped) = captured("mac", "udp and dst port 9", "rx,tx", 400)
    assert r["workers"][0]["tx_packets"] == 400
    assert (n, dropped) == (800, 0) and len(got) == 800
    rx = [g for g in got if g.point == "rx"]
    tx = [g for g in got if g.point == "tx"]
    assert len(rx) == len(tx) == 400
    assert all(g.data == r["frame"] and g.wire_len == 64 for g in rx)
    rewritten = bench.DST_MAC + bench.SRC_MAC + r["frame"][12:]
    assert all(g.data == rewritten for g in tx), tx[0].data.hex()
    assert all(g.queue == 0 and g.netdev == 0 and g.reason is None for g in got)
    assert all(t0 <= g.ts_ns <= time.time_ns() for g in got)


def test_the_snap_length_and_a_filter_that_takes_nothing():
    _, got, (n, _) = captured("io", "udp", "rx", 100, snaplen=34)
    assert n == 100 and all(len(g.data) == 34 and g.wire_len == 64 for g in got)
    _, got, (n, dropped) = captured("io", "tcp", "rx,tx,drop", 100)
    assert (got, n, dropped) == ([], 0, 0)
    _, got, (n, dropped) = captured("io", "udp", "rx", 100, arm=False)
    assert (got, n, dropped) == ([], 0, 0)


def test_a_drop_record_names_the_reason_and_the_rule():
    r, got, (n, _) = captured("drop", "udp", "drop", 50)
    assert n == 50 and {(g.point, g.reason, g.rule) for g in got} == {("drop", "rule", 0)}


def test_a_reader_that_does_not_read_loses_records_not_packets():
    r, got, (n, dropped) = captured("mac", "udp", "rx,tx", 5000)
    assert r["workers"][0]["tx_packets"] == 5000           # forwarding untouched
    assert n + dropped == 10000 and dropped > 0
    assert len(got) == n                                   # what fit, whole
    assert n * 96 <= _fastpath.CAPTURE_RING                 # 32 B header + 64 B, 32-aligned


@pytest.mark.parametrize("args,why", [
    ((4, -1, -1, 1, 128), "capture slot 4"),
    ((0, -1, -1, 0, 128), "points 0x0"),
    ((0, -1, -1, 8, 128), "points 0x8"),
    ((0, -1, -1, 1, 0), "snaplen 0"),
])
def test_arming_a_slot_checks_what_it_is_given(args, why):
    s = bench.SCENARIOS["io"]
    umem = bench.prepare(s, SETUP)
    try:
        with pytest.raises(ValueError, match=why):
            umem.control.capture_arm(*args, compile_filter("udp"))
        with pytest.raises(ValueError, match="not a return"):
            umem.control.capture_arm(0, -1, -1, 1, 128, compile_filter("udp")[:8])
    finally:
        umem.close()
