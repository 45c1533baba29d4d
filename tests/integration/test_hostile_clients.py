"""Clients that try to exhaust the daemon: thousands of idle connections
and slow-loris ones on the metrics port, idle and trickling ones on the
control socket, all while traffic flows.  Forwarding loses nothing,
`xdpd status` keeps answering within a second, a reload applies, and once
the clients are gone the daemon is as healthy as before."""
import json
import os
import signal
import statistics
import subprocess
import sys
import time

from integration_helpers import ROOT_ONLY
from integration_helpers import poll_until as poll
from integration_helpers import start_live_generator, stop_live_generator

from xdpd.lab.daemon import forward_config
from xdpd.lab.xdp import CountingSink

pytestmark = ROOT_ONLY

IDLE = 5000
SLOW = 200
CONTROL = 100
RATE = 20_000

# Runs inside the daemon's network namespace (the metrics port listens on
# its loopback).  Opens the connections without blocking, keeps the slow
# ones sending a byte a second, prints what it held, and closes everything
# when told (SIGTERM) or after HOLD_S.
ATTACKER = r"""
import errno, json, os, resource, selectors, signal, socket, sys, time
port, control, idle, slow, ncontrol, hold = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
resource.setrlimit(resource.RLIMIT_NOFILE, (idle + slow + ncontrol + 200,) * 2)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
socks, trickle = [], []
def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        s.connect(("127.0.0.1", int(port)))
    except BlockingIOError:
        pass
    except OSError:
        s.close(); return None
    return s
for i in range(idle):
    s = tcp()
    if s: socks.append(s)
for i in range(slow):
    s = tcp()
    if s: socks.append(s); trickle.append(s)
for i in range(ncontrol):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        s.connect(control)
    except OSError:
        s.close(); continue
    socks.append(s)
    if i % 2: trickle.append(s)
print(json.dumps({"opened": len(socks)}), flush=True)
request = b'GET /metrics HTTP/1.1\r\nHost: x\r\n'
n, end = 0, time.monotonic() + hold
while not stop and time.monotonic() < end:
    for s in trickle:
        try:
            s.send(request[n % len(request):n % len(request) + 1] if s.family == socket.AF_INET
                   else b'{')
        except OSError:
            pass
    n += 1
    time.sleep(1.0)
for s in socks:
    s.close()
"""


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "(gone)"


def scrape_or_none(d):
    """A scrape, or None if the server closed the connection (all slots busy)."""
    try:
        return d.scrape()
    except OSError:                     # http.client.RemoteDisconnected, a reset
        return None


def test_idle_and_slow_clients_exhaust_nothing(lab, start_daemon):
    # zero loss is asserted: the workers on CPU 1, the generator (and the
    # veth NAPI it runs) on CPU 0, so the test's own load never starves them
    d = start_daemon(forward_config(lab, reverse="drop", extra="workers:\n  cpus: [1]\n"))
    # the steady state: every standby started (their pipes are the daemon's)
    poll(lambda: all(w["standby_ready"] for w in d.status()["workers"]),
         what="every standby ready")
    baseline = d.scrape()
    with CountingSink(lab.sink_ns, lab.SINK_DEV, expect_dst_mac=lab.MACS[lab.SINK_DEV]) as sink:
        gen = start_live_generator(lab, RATE)
        attacker = None
        try:
            poll(lambda: sink.read()["packets"] > 1000, what="traffic")
            attacker = lab.popen(lab.dut_ns, [sys.executable, "-c", ATTACKER, str(d.port),
                                              d.socket_path, str(IDLE), str(SLOW),
                                              str(CONTROL), "60"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            opened = json.loads(attacker.stdout.readline() or "{}")
            assert opened.get("opened", 0) > CONTROL, attacker.stderr.read()
            # while they hold on, past every connection deadline (metrics 10 s,
            # control 2 s): status answers within a second, a reload applies
            # and scrapes get in: a full metrics server closes its oldest
            # client that has not sent a whole request to make room
            waits, scrapes = [], []
            t_end = time.monotonic() + 12
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                st = d.status()
                waits.append(time.monotonic() - t0)
                assert st["ready"]
                scrapes.append(scrape_or_none(d) is not None)
                time.sleep(0.2)
            assert max(waits) < 1.0, waits
            assert sum(scrapes) >= len(scrapes) // 2, scrapes
            r = d.reload(forward_config(lab, reverse="forward",
                                        extra="workers:\n  cpus: [1]\n"))
            assert r["result"] == "applied", r
            mark = sink.read()["packets"]
            poll(lambda: sink.read()["packets"] > mark + 1000, what="forwarding on")
        finally:
            if attacker is not None:
                attacker.send_signal(signal.SIGTERM)
                attacker.wait(30)
            sent = stop_live_generator(gen)
        poll(lambda: sink.read()["packets"] >= sent, what="every packet at the sink")
        got = sink.read()
    assert got["packets"] == sent and got["dst_mac_ok"] == sent
    # healthy afterwards: scrapes answer, nothing dropped, nothing restarted
    # the attack's last connections may still hold every metrics slot a
    # moment after it ends, and a scrape is then closed unanswered: polled
    m = poll(lambda: scrape_or_none(d), what="a scrape after the attack")
    assert m.value("xdpd_dropped_packets_total") == 0
    assert m.value("xdpd_xsk_rx_ring_full_total") == 0
    assert m.value("xdpd_worker_restarts_total") == 0
    assert d.proc.poll() is None and d.status()["ready"]
    # the connections' descriptors are all given back (a scrape's own may
    # still be closing: polled)
    before = baseline.value("process_open_fds")
    try:
        after = poll(lambda: (m := scrape_or_none(d)) and
                     (n := m.value("process_open_fds")) <= before and n,
                     timeout=20, what="the supervisor's descriptors back to where they were")
    except AssertionError:
        fd_dir = f"/proc/{d.proc.pid}/fd"
        held = sorted(_readlink(f"{fd_dir}/{f}") for f in os.listdir(fd_dir))
        raise AssertionError(f"{before:.0f} descriptors before, now {len(held)}: {held}; "
                             f"internal errors {d.scrape().by('xdpd_internal_errors_total', 'where')}"
                             ) from None
    print(f"\n{opened['opened']} connections opened ({IDLE} idle + {SLOW} slow on the "
          f"metrics port, {CONTROL} idle or trickling on the control socket) and held 12 s; "
          f"status answered in median {statistics.median(waits) * 1e3:.1f} ms, max "
          f"{max(waits) * 1e3:.1f} ms; {sum(scrapes)} of {len(scrapes)} scrapes during the "
          f"attack answered; {sent} packets sent, all delivered; supervisor fds "
          f"before {before:.0f}, after {after:.0f}; internal errors "
          f"{ {k[0]: v for k, v in m.by('xdpd_internal_errors_total', 'where').items() if v} }")
    assert "Traceback" not in d.log()
