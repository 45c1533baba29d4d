"""Fast wake-ups with a real client (control/wake.py): while ping runs
through xdpd, the CPUs of the workers that receive it have their wake-up
latency capped at workers.cpu_wake_latency_us (0: polling only); 2 s after
the traffic stops the caps found before are back, and so after stop and
after a SIGKILL of the supervisor (the next start puts them back).  The
workers run with the scheduler slice they asked for."""
import os
import platform
import shutil
import subprocess

import pytest
from integration_helpers import ROOT_ONLY, poll_until

from xdpd.control.wake import journal_path
from xdpd.kernel import cpuidle
from xdpd.lab.daemon import forward_config

pytestmark = [*ROOT_ONLY, pytest.mark.skipif(
    not os.path.exists(cpuidle.limit_path(0)) or not shutil.which("ping"),
    reason="needs the CPUs' PM QoS files in sysfs and ping")]

GEN_IP, SINK_IP = "10.203.0.1", "10.203.0.2"
BEFORE = 77                 # a cap of the test's own on every CPU: xdpd must put it back


@pytest.fixture
def caps():
    """Every online CPU's cap set to BEFORE; the caps found put back after."""
    cpus = sorted(os.sched_getaffinity(0))
    found = {cpu: cpuidle.read_limit(cpu) for cpu in cpus}
    try:
        for cpu in cpus:
            cpuidle.write_limit(cpu, BEFORE)
        yield cpus
    finally:
        for cpu, us in found.items():
            cpuidle.write_limit(cpu, us)


@pytest.fixture
def addressed(lab):
    for ns, dev, ip in ((lab.gen_ns, lab.GEN_DEV, GEN_IP), (lab.sink_ns, lab.SINK_DEV, SINK_IP)):
        lab.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
    try:
        yield
    finally:
        for ns, dev in ((lab.gen_ns, lab.GEN_DEV), (lab.sink_ns, lab.SINK_DEV)):
            lab.run(ns, "ip", "addr", "flush", "dev", dev, check=False)
            lab.run(ns, "ip", "neigh", "flush", "dev", dev, check=False)


def start_ping(lab, seconds: float) -> subprocess.Popen:
    return lab.popen(lab.gen_ns, ["ping", "-n", "-q", "-i", "0.02", "-c", str(int(seconds * 50)),
                                  "-W", "1", SINK_IP],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def busy_cpus(status: dict) -> set[int]:
    return {w["cpu"] for w in status["workers"] if w["rx_packets"] > 0}


def caps_now(cpus) -> dict[int, int | None]:
    return {cpu: cpuidle.read_limit(cpu) for cpu in cpus}


def test_busy_workers_cpus_are_held_while_ping_runs_and_let_go_after(
        lab, addressed, caps, start_daemon):
    daemon = start_daemon(forward_config(lab))
    assert daemon.status()["cpu_wake"] == {"latency_us": 0, "held": []}
    assert caps_now(caps) == dict.fromkeys(caps, BEFORE)    # no traffic: nothing held
    ping = start_ping(lab, seconds=6)
    try:
        # every CPU whose workers received is held, and only those
        held = poll_until(lambda: (s := daemon.status())["cpu_wake"]["held"] and
                          set(s["cpu_wake"]["held"]) == busy_cpus(s) and s["cpu_wake"]["held"],
                          timeout=10, what="the busy workers' CPUs held")
        assert caps_now(caps) == {cpu: 0 if cpu in held else BEFORE for cpu in caps}
        m = daemon.scrape()
        assert m.by("xdpd_cpu_wake_held", "cpu") == {
            (str(cpu),): float(cpu in held) for cpu in {w["cpu"] for w in
                                                        daemon.status()["workers"]}}
        out, _ = ping.communicate(timeout=30)
    finally:
        ping.kill()
        ping.wait()
    assert " 0% packet loss" in out, out
    # 2 s after the last packet the caps found are back
    poll_until(lambda: daemon.status()["cpu_wake"]["held"] == [], timeout=10,
               what="the CPUs let go")
    assert caps_now(caps) == dict.fromkeys(caps, BEFORE)
    # the workers' scheduler slice (Linux 6.12+: EEVDF custom slices)
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    if (major, minor) >= (6, 12):
        assert {name: cpuidle.get_slice_us(pid) for name, pid in daemon.worker_pids().items()} \
            == dict.fromkeys(daemon.worker_pids(), 100)


def test_stop_and_a_killed_supervisor_put_the_caps_back(lab, addressed, caps, start_daemon):
    daemon = start_daemon(forward_config(lab))
    journal = journal_path(daemon.socket_path)

    def held_now(ping):
        try:
            return poll_until(lambda: daemon.status()["cpu_wake"]["held"], timeout=10,
                              what="a CPU held")
        finally:
            ping.kill()
            ping.wait()

    held = held_now(start_ping(lab, seconds=5))
    assert os.path.exists(journal)
    daemon.kill()                              # SIGKILL: nothing put back, the journal stays
    assert os.path.exists(journal)
    assert all(cpuidle.read_limit(cpu) == 0 for cpu in held)
    daemon.start()                             # the next start puts back what it names
    assert caps_now(caps) == dict.fromkeys(caps, BEFORE)
    assert "wake-up latency cap put back to 77 us" in daemon.log()
    held = held_now(start_ping(lab, seconds=5))
    assert all(cpuidle.read_limit(cpu) == 0 for cpu in held)
    assert daemon.stop() == 0                  # a clean stop puts back at once
    assert caps_now(caps) == dict.fromkeys(caps, BEFORE)
    assert not os.path.exists(journal)
