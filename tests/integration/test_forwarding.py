"""xdpd end to end: a real daemon forwarding between veths in namespaces."""
import concurrent.futures
import os
import subprocess
import sys

from integration_helpers import ROOT_ONLY, processes_in_netns, xdp_attached

from xdpd.lab.daemon import forward_config
from xdpd.lab.traffic import SinkProcess, child_env, send_in_ns

pytestmark = ROOT_ONLY

N = 20_000


def assert_frames_add_up(m):
    locations = m.by("xdpd_umem_frames", "location")
    assert set(k[0] for k in locations) == {"free", "rx", "tx", "handoff"}
    assert sum(locations.values()) == m.value("xdpd_umem_frames_capacity") > 0


def test_forwards_every_packet_with_rewritten_mac(lab, start_daemon):
    daemon = start_daemon(forward_config(lab))
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=11, expect=N, idle=2.0) as sink:
        sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                          count=N, flows=64, tag=11)
        got = sink.result(timeout=30)
    assert sent["sent"] == N
    assert got["received"] == N
    assert got["by_dst_mac"] == {lab.MACS[lab.SINK_DEV]: N}
    assert got["bad_payload"] == 0 and got["duplicates"] == 0

    m = daemon.scrape()
    per_queue = m.by("xdpd_rx_packets_total", "netdev", "queue")
    assert per_queue[("in0", "0")] > 0 and per_queue[("in0", "1")] > 0, per_queue
    assert m.value("xdpd_rx_packets_total", netdev="in0") == N
    assert m.value("xdpd_tx_packets_total", netdev="out0") == N
    assert m.value("xdpd_rx_bytes_total", netdev="in0") == N * 64
    assert m.value("xdpd_tx_bytes_total", netdev="out0") == N * 64
    assert m.value("xdpd_dropped_packets_total") == 0
    assert m.value("xdpd_xdp_packets_total", netdev="in0", verdict="redirected") == N
    assert_frames_add_up(m)


def test_forwards_both_directions_at_once(lab, start_daemon):
    start_daemon(forward_config(lab))
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=21, expect=N, idle=2.0) as east, \
            SinkProcess(lab, lab.gen_ns, lab.GEN_DEV, tag=22, expect=N, idle=2.0) as west, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(send_in_ns, lab, lab.gen_ns, lab.GEN_DEV,
                        dst_mac=lab.MACS[lab.IN_DEV], count=N, tag=21)
        b = pool.submit(send_in_ns, lab, lab.sink_ns, lab.SINK_DEV,
                        dst_mac=lab.MACS[lab.OUT_DEV], count=N, tag=22)
        assert a.result()["sent"] == N and b.result()["sent"] == N
        got_east, got_west = east.result(timeout=30), west.result(timeout=30)
    assert got_east["received"] == N and got_east["bad_payload"] == 0
    assert got_west["received"] == N and got_west["bad_payload"] == 0
    assert got_east["by_dst_mac"] == {lab.MACS[lab.SINK_DEV]: N}
    assert got_west["by_dst_mac"] == {lab.MACS[lab.GEN_DEV]: N}


def test_drop_rule_drops_and_counts(lab, start_daemon):
    daemon = start_daemon(forward_config(lab, reverse="drop"))
    n = 5000
    with SinkProcess(lab, lab.gen_ns, lab.GEN_DEV, tag=31, idle=1.0, timeout=4) as sink:
        send_in_ns(lab, lab.sink_ns, lab.SINK_DEV, dst_mac=lab.MACS[lab.OUT_DEV],
                   count=n, tag=31)
        got = sink.result(timeout=30)
    assert got["received"] == 0
    m = daemon.scrape()
    assert m.value("xdpd_dropped_packets_total", netdev="out0", reason="rule") == n
    assert m.value("xdpd_rx_packets_total", netdev="out0") == n
    assert m.value("xdpd_tx_packets_total") == 0
    assert_frames_add_up(m)


def test_traffic_without_a_rule_is_dropped_as_no_rule(lab, start_daemon):
    cfg = forward_config(lab).replace(
        f"""  - from: {lab.OUT_DEV}
    to: {lab.IN_DEV}
    set_dst_mac: "{lab.MACS[lab.GEN_DEV]}"
""", "")
    daemon = start_daemon(cfg)
    n = 3000
    send_in_ns(lab, lab.sink_ns, lab.SINK_DEV, dst_mac=lab.MACS[lab.OUT_DEV], count=n, tag=41)
    m = daemon.wait_for(lambda m: m.value("xdpd_dropped_packets_total", reason="no_rule") >= n)
    assert m.value("xdpd_dropped_packets_total", netdev="out0", reason="no_rule") == n


def title(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_stop_leaves_nothing_and_a_second_start_works(lab, start_daemon):
    before = set(processes_in_netns(lab.dut_ns))
    for round_ in range(2):
        daemon = start_daemon(forward_config(lab))
        children = set(processes_in_netns(lab.dut_ns)) - before - {daemon.proc.pid}
        titles = {pid: title(pid) for pid in children}
        # one worker per (netdev, queue), and its standby once the loop runs
        workers = {pid for pid, t in titles.items() if t.startswith(b"xdpd: worker ")}
        assert len(workers) == 4, titles
        assert all(t.startswith(b"xdpd: standby ") or b"\0xdpd.datapath.worker\0" in t
                   for pid, t in titles.items() if pid not in workers), titles
        assert xdp_attached(lab, lab.dut_ns, lab.IN_DEV)
        assert xdp_attached(lab, lab.dut_ns, lab.OUT_DEV)
        with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=50 + round_, expect=1000) as sink:
            send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                       count=1000, tag=50 + round_)
            assert sink.result(timeout=30)["received"] == 1000

        assert daemon.stop() == 0
        assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)
        assert not xdp_attached(lab, lab.dut_ns, lab.OUT_DEV)
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived xdpd"
        assert set(processes_in_netns(lab.dut_ns)) <= before
        # memfds die with their last holder; nothing named is left in /dev/shm
        assert not [f for f in os.listdir("/dev/shm") if "xdpd" in f]


def test_check_config_against_the_lab(lab, tmp_path):
    path = tmp_path / "xdpd.yaml"
    path.write_text(forward_config(lab))
    out = subprocess.run(lab.nsenter(lab.dut_ns) + [sys.executable, "-m", "xdpd",
                         "check-config", str(path)], capture_output=True, text=True,
                         env=child_env())
    assert out.returncode == 0, out.stderr
    assert "workers: 4" in out.stdout
    assert "in0/q1" in out.stdout and "forward to out0" in out.stdout

    path.write_text(forward_config(lab).replace("queues: all", "queues: [0, 5]", 1))
    out = subprocess.run(lab.nsenter(lab.dut_ns) + [sys.executable, "-m", "xdpd",
                         "check-config", str(path)], capture_output=True, text=True,
                         env=child_env())
    assert out.returncode == 78
    assert f"{path}: interfaces[0].queues: queue 5 not on in0 (2 rx queues; " \
           "see 'ethtool -l in0')" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_at_start_exits_78_without_traceback(lab, tmp_path):
    path = tmp_path / "xdpd.yaml"
    path.write_text(forward_config(lab).replace("out0", "out9"))
    out = subprocess.run(lab.nsenter(lab.dut_ns) + [sys.executable, "-m", "xdpd", "run",
                         "--config", str(path)], capture_output=True, text=True,
                         env=child_env(), timeout=30)
    assert out.returncode == 78
    assert "netdev 'out9' not found" in out.stderr
    assert "Traceback" not in out.stderr
    assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)


def test_killed_worker_is_replaced_on_the_same_socket(lab, start_daemon):
    daemon = start_daemon(forward_config(lab))
    victim = daemon.worker_pids()["in0/q1"]
    os.kill(victim, 9)
    daemon.wait_for(lambda m: m.value("xdpd_worker_restarts_total", netdev="in0", queue="1") == 1
                    and m.value("xdpd_worker_up") == 4, timeout=10)
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=61, expect=N, idle=2.0) as sink:
        send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV], count=N, tag=61)
        assert sink.result(timeout=30)["received"] == N
    m = daemon.scrape()
    assert m.value("xdpd_rx_packets_total", netdev="in0", queue="1") > 0
    assert_frames_add_up(m)


def test_generic_mode_forwards_too(lab, start_daemon):
    cfg = forward_config(lab).replace("    queues: all\n", "    queues: all\n    xdp_mode: generic\n")
    daemon = start_daemon(cfg)
    assert "in0 [generic]" in daemon.log() and "out0 [generic]" in daemon.log()
    # Paced: generic XDP on veth runs behind the per-CPU backlog queue, which
    # drops (netdev_max_backlog) instead of pushing back on the sender.
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=71, expect=5000, idle=2.0) as sink:
        send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV], count=5000,
                   rate=20000, tag=71)
        assert sink.result(timeout=30)["received"] == 5000


def test_unowned_queue_stays_with_the_kernel(lab, start_daemon):
    # own only queue 0 of in0: what lands on queue 1 is XDP_PASSed, not forwarded
    cfg = forward_config(lab).replace("    queues: all\n", "    queues: [0]\n", 1)
    daemon = start_daemon(cfg)
    n = 4000
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=81, idle=1.5, timeout=20) as sink:
        send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV], count=n,
                   flows=64, tag=81)
        got = sink.result(timeout=30)
    m = daemon.wait_for(lambda m: m.value("xdpd_xdp_packets_total", netdev="in0") >= 0)
    passed = m.value("xdpd_xdp_packets_total", netdev="in0", verdict="passed")
    redirected = m.value("xdpd_xdp_packets_total", netdev="in0", verdict="redirected")
    assert passed > 0 and redirected > 0
    assert passed + redirected == n
    assert got["received"] == redirected          # only queue 0's packets were forwarded
    assert m.samples["xdpd_rx_packets_total"] == [
        ({"netdev": "in0", "queue": "0", "member": "0"}, redirected),
        ({"netdev": "out0", "queue": "0", "member": "0"}, 0.0),
        ({"netdev": "out0", "queue": "1", "member": "0"}, 0.0)]


def test_sigterm_during_start_up_undoes_what_was_set_up(lab, tmp_path):
    """Stopping xdpd while it is still starting (systemd does that when a
    start times out) must detach and clean up like a normal stop."""
    import signal
    import time
    path = tmp_path / "xdpd.yaml"
    path.write_text(forward_config(lab))
    before = set(processes_in_netns(lab.dut_ns))
    proc = lab.popen(lab.dut_ns, [sys.executable, "-m", "xdpd", "run", "--config", str(path)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                     env=child_env())
    try:
        deadline = time.monotonic() + 20
        while not xdp_attached(lab, lab.dut_ns, lab.IN_DEV):   # start-up is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert not xdp_attached(lab, lab.dut_ns, lab.IN_DEV)
    assert not xdp_attached(lab, lab.dut_ns, lab.OUT_DEV)
    deadline = time.monotonic() + 5
    while set(processes_in_netns(lab.dut_ns)) - before:      # workers die with PDEATHSIG
        assert time.monotonic() < deadline, set(processes_in_netns(lab.dut_ns)) - before
        time.sleep(0.01)
