"""`xdpd capture` against a running xdpd in the veth lab: what it writes is
what went through (tcpdump reads it back), forwarding loses nothing, bad
input gets a precise error, and a client that dies leaves nothing."""
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from integration_helpers import ROOT_ONLY, poll_until

from xdpd.control.server import ControlError
from xdpd.datapath.pcapng import read
from xdpd.lab.daemon import forward_config
from xdpd.lab.frames import parse_mac
from xdpd.lab.traffic import SinkProcess, child_env, parse_frame, send_in_ns

pytestmark = ROOT_ONLY
TAG = 0xCA

needs_tcpdump = pytest.mark.skipif(not shutil.which("tcpdump"),
                                   reason="needs tcpdump: make deps installs it")


def capture(d, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "xdpd", "capture", "--socket",
                             d.socket_path, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(), **kw)


def active(d) -> list:
    return d.status()["captures"]


def send(lab, count: int, rate: int = 20000) -> dict:
    return send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                      count=count, rate=rate, tag=TAG, flows=8)


@needs_tcpdump
def test_a_thousand_packets_before_and_after_the_rewrite_and_nothing_lost(lab, start_daemon,
                                                                          tmp_path):
    d = start_daemon(forward_config(lab, reverse="drop"))
    path = tmp_path / "in0.pcapng"
    cli = capture(d, lab.IN_DEV, "--point", "all", "-c", "1000", "-w", str(path),
                  "udp and dst port 9")
    try:
        poll_until(lambda: active(d), what="the capture running")
        with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=TAG, expect=3000) as sink:
            sent = send(lab, 3000, rate=100000)["sent"]
            got = sink.result(timeout=30)
        out, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    assert cli.returncode == 0, err.decode()
    assert got["received"] == sent == 3000 and got["bad_payload"] == 0     # nothing lost
    assert b"1000 packets captured" in err, err
    blocks = list(read(io.BytesIO(path.read_bytes())))
    packets = [p for kind, p in blocks if kind == "packet"]
    assert [b for kind, b in blocks if kind == "interface"] == [(lab.IN_DEV, 262144)]
    assert len(packets) == 1000
    rx = [p for p in packets if p.point == "rx"]
    tx = [p for p in packets if p.point == "tx"]
    assert rx and tx and len(rx) + len(tx) == 1000
    for p in packets:                   # whole frames, as the generator made them
        f = parse_frame(p.data, TAG)
        assert f is not None and f.intact and p.wire_len == len(p.data), p
    assert {parse_frame(p.data, TAG).dst_mac for p in rx} == {parse_mac(lab.MACS[lab.IN_DEV])}
    assert {parse_frame(p.data, TAG).dst_mac for p in tx} == {parse_mac(lab.MACS[lab.SINK_DEV])}
    # libpcap's reader agrees, and a filter on the file selects the same
    r = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, timeout=30)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1000, r.stderr
    assert not active(d)                # ended with its client


def test_a_drop_rule_is_captured_with_its_reason_and_rule(lab, start_daemon):
    d = start_daemon(forward_config(lab, reverse="drop"))
    cli = capture(d, lab.OUT_DEV, "--point", "drop", "-c", "20")
    try:
        poll_until(lambda: active(d), what="the capture running")
        send_in_ns(lab, lab.sink_ns, lab.SINK_DEV, dst_mac=lab.MACS[lab.OUT_DEV], count=50,
                   rate=5000, tag=TAG)
        out, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    lines = out.decode().splitlines()
    assert len(lines) == 20, (lines, err)
    assert all(f" {lab.OUT_DEV}/q" in ln and " drop " in ln and
               ln.endswith("dropped: rule (rule 0)") for ln in lines), lines[:3]
    assert "UDP, length 64" in lines[0] or ": UDP" in lines[0], lines[0]


def test_bad_input_gets_a_precise_error(lab, start_daemon):
    d = start_daemon(forward_config(lab, reverse="drop"))
    cases = [
        (["in0", "udp and and"], 2, "filter: can't parse filter expression: syntax error"),
        (["nosuch0"], 64, "interface 'nosuch0' is not one of xdpd's"),
        ([f"{lab.IN_DEV}/7"], 64, f"queue 7 of {lab.IN_DEV}: xdpd owns queues"),
        ([lab.IN_DEV, "-s", "0"], 64, "snaplen 0: 1..262144"),
        ([lab.IN_DEV, "udp or " * 700 + "udp"], 2, "at most 4096"),
    ]
    for args, code, message in cases:
        cli = capture(d, *args)
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == code, (args, cli.returncode, err)
        assert message in err.decode(), (args, err)
        assert b"Traceback" not in err
    assert not active(d)
    # four at once, then a precise refusal; each ends with its stop
    tokens = [d.request("capture_start", iface=lab.IN_DEV, filter="udp")["token"]
              for _ in range(4)]
    assert len(active(d)) == 4
    with pytest.raises(ControlError, match="4 captures run already; end one first"):
        d.request("capture_start", iface=lab.IN_DEV)
    for t in tokens:
        d.request("capture_stop", token=t)
    assert not active(d)


def test_a_killed_client_leaves_nothing_and_a_slow_one_loses_records_not_packets(
        lab, start_daemon):
    d = start_daemon(forward_config(lab, reverse="drop"))
    cli = capture(d, lab.IN_DEV, "--point", "all")          # lines to a pipe
    poll_until(lambda: active(d), what="the capture running")
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    t0 = time.monotonic()
    poll_until(lambda: not active(d), timeout=10, what="the killed client's capture ended")
    print(f"\ncapture of a killed client ended after {time.monotonic() - t0:.2f} s")
    assert "its client did not read for" in d.log()
    # a session read slowly: the workers' rings fill, records are dropped
    # and counted, every packet is forwarded
    start = d.request("capture_start", iface=lab.IN_DEV, points=["rx", "tx"], snaplen=2048,
                      filter="")
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=TAG, expect=20000) as sink:
        deadline = time.monotonic() + 20
        result = {}
        t = threading.Thread(target=lambda: result.update(send(lab, 20000, rate=50000)))
        t.start()
        while t.is_alive() and time.monotonic() < deadline:
            d.request("capture_read", token=start["token"])      # keeps the lease
            time.sleep(0.4)
        t.join()
        got = sink.result(timeout=30)
    end = d.request("capture_stop", token=start["token"])
    assert got["received"] == result["sent"] == 20000
    assert end["dropped"] > 0 and end["captured"] + end["dropped"] == 40000, end
    m = d.scrape()
    assert m.value("xdpd_dropped_packets_total") == 0
    assert m.value("xdpd_captures_active") == 0
    assert m.value("xdpd_capture_records_total", kind="dropped") >= end["dropped"]


@needs_tcpdump
def test_w_dash_streams_to_tcpdump_and_a_full_disk_ends_the_capture(lab, start_daemon):
    d = start_daemon(forward_config(lab, reverse="drop"))
    cli = capture(d, lab.IN_DEV, "-c", "10", "-w", "-")
    dump = subprocess.Popen(["tcpdump", "-nn", "-r", "-"], stdin=cli.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cli.stdout.close()
    try:
        poll_until(lambda: active(d), what="the capture running")
        send(lab, 50, rate=5000)
        out, _ = dump.communicate(timeout=30)
        cli.wait(30)
    finally:
        cli.kill()
        dump.kill()
    assert cli.returncode == 0 and len(out.splitlines()) == 10, out
    # the file header is written at the first flush, which fails at once
    cli = capture(d, lab.IN_DEV, "-w", "/dev/full")
    try:
        _, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    assert cli.returncode == 1, err
    assert b"/dev/full: No space left on device; capture ended" in err, err
    poll_until(lambda: not active(d), what="the capture ended")
