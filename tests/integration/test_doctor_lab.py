"""`xdpd doctor` on the lab: xdpd owns only queue 0 of in0 (2 queues).
Traffic sent so that it lands on queue 1 is reported as mis-steered, with
the fix, and the exit code says warning; traffic on queue 0 only is not.

Run with -s to see what doctor printed."""
import json
import subprocess
import sys

from integration_helpers import ROOT_ONLY
from integration_helpers import poll_until as poll
from integration_helpers import start_live_generator, stop_live_generator

from xdpd import exitcodes
from xdpd.lab.traffic import child_env

pytestmark = ROOT_ONLY


def only_queue_0(lab) -> str:
    # workers on CPU 0 and 1 as auto would; the generator's CPU picks in0's
    # rx queue (veth: the sending CPU's queue)
    return f"""interfaces:
  - name: {lab.IN_DEV}
    queues: [0]
  - name: {lab.OUT_DEV}
forward:
  - from: {lab.IN_DEV}
    to: {lab.OUT_DEV}
    set_dst_mac: "{lab.MACS[lab.SINK_DEV]}"
  - from: {lab.OUT_DEV}
    action: drop
"""


def doctor(lab, d, *args: str) -> subprocess.CompletedProcess:
    """xdpd doctor in the daemon's namespace, as an operator runs it there."""
    proc = lab.popen(lab.dut_ns, [sys.executable, "-m", "xdpd", "doctor", "--config",
                                  d.config_path, "--socket", d.socket_path, "--seconds", "1",
                                  *args],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     env=child_env())
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def xdp_verdict(d, lab, queue: int, verdict: str) -> float:
    return d.scrape().value("xdpd_xdp_packets_total", netdev=lab.IN_DEV, queue=queue,
                            verdict=verdict)


def with_traffic(lab, d, cpu: int, queue: int, verdict: str, args: tuple = ()):
    """Doctor's answer while the generator sends from `cpu` (so on in0's rx
    queue `queue`, where the XDP program counts `verdict`)."""
    mark = xdp_verdict(d, lab, queue, verdict)
    gen = start_live_generator(lab, rate=5000, cpu=cpu)
    try:
        poll(lambda: xdp_verdict(d, lab, queue, verdict) > mark + 100,
             what=f"traffic on in0 queue {queue}")
        return doctor(lab, d, *args)
    finally:
        stop_live_generator(gen)


def test_doctor_reports_traffic_on_a_queue_xdpd_does_not_own(lab, start_daemon):
    d = start_daemon(only_queue_0(lab))
    r = with_traffic(lab, d, cpu=1, queue=1, verdict="passed", args=("-v",))
    print(f"\n$ xdpd doctor -v   # traffic on {lab.IN_DEV} queue 1, xdpd owns queue 0\n"
          + r.stdout + r.stderr + f"(exit {r.returncode})")
    assert r.returncode == exitcodes.DOCTOR_WARNINGS, r.stdout + r.stderr
    warnings = [line for line in r.stdout.splitlines() if line.startswith("WARN")]
    assert len(warnings) == 1, r.stdout
    assert warnings[0].startswith(
        f"WARN {lab.IN_DEV}/q1: mis-steered: traffic on {lab.IN_DEV} queue 1 (")
    # veth has neither an RSS table nor ntuple filters: no ethtool command
    assert warnings[0].endswith(
        "which xdpd does not own; the kernel gets it; steer it to queues 0 or add queue 1 "
        "to interfaces[0].queues")
    assert f"OK {lab.IN_DEV}: native XDP (in use by the running xdpd; driver veth)" in r.stdout
    assert "Traceback" not in r.stderr

    j = with_traffic(lab, d, cpu=1, queue=1, verdict="passed", args=("--json",))
    report = json.loads(j.stdout)
    assert j.returncode == exitcodes.DOCTOR_WARNINGS
    assert report["worst"] == "warn"
    assert [(f["check"], f["subject"]) for f in report["findings"] if f["level"] != "ok"] == [
        ("steering", f"{lab.IN_DEV}/q1")]


def test_doctor_is_quiet_when_traffic_lands_on_the_owned_queue(lab, start_daemon):
    d = start_daemon(only_queue_0(lab))
    r = with_traffic(lab, d, cpu=0, queue=0, verdict="redirected")
    print(f"\n$ xdpd doctor   # traffic on {lab.IN_DEV} queue 0 only\n"
          + r.stdout + r.stderr + f"(exit {r.returncode})")
    assert r.returncode == exitcodes.OK, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("doctor: 0 errors, 0 warnings, ")
    assert "mis-steered" not in r.stdout
    status = d.status()
    in0 = [i for i in status["interfaces"] if i["name"] == lab.IN_DEV][0]
    assert [q["queue"] for q in in0["xdp_packets"]] == [0, 1]
    assert in0["xdp_packets"][0]["redirected"] > 0
    assert all(w["bad_descriptors"] == 0 for w in status["workers"])


def test_doctor_reports_a_stalled_worker_as_socket_drops(lab, start_daemon):
    """A worker stopped (SIGSTOP, shorter than the 5 s hang limit) while
    traffic arrives on its queue: the kernel finds its RX ring full."""
    import os
    import signal
    d = start_daemon(only_queue_0(lab))
    pid = d.worker_pids()[f"{lab.IN_DEV}/q0"]

    def ring_full() -> int:
        st = d.status()
        return [w for w in st["workers"] if w["name"] == f"{lab.IN_DEV}/q0"][0]["xsk"][
            "rx_ring_full"]

    gen = start_live_generator(lab, rate=5000, cpu=0)
    try:
        os.kill(pid, signal.SIGSTOP)
        try:
            poll(lambda: ring_full() > 0, timeout=3, what="rx_ring_full rising")
            r = doctor(lab, d)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        stop_live_generator(gen)
    print(f"\n$ xdpd doctor   # worker {lab.IN_DEV}/q0 stopped under traffic\n"
          + r.stdout + r.stderr + f"(exit {r.returncode})")
    assert r.returncode == exitcodes.DOCTOR_WARNINGS, r.stdout + r.stderr
    assert f"WARN {lab.IN_DEV}/q0: RX ring full: the kernel dropped " in r.stdout
    assert "mis-steered" not in r.stdout
