"""Fast wake-ups for busy workers (control/wake.py, kernel/cpuidle.py):
the CPUs' wake-up latency caps held while traffic flows, put back after,
and after a killed supervisor; the workers' scheduler slice."""
import errno
import logging
import os
import platform
import subprocess
import sys

import pytest

from xdpd.config.model import SCHED_SLICE_US
from xdpd.control import record as run_record
from xdpd.control import wake
from xdpd.kernel import cpuidle

OWNER = run_record.Owner(4567, 891234, "boot-a")


class FakeCpus:
    """kernel.cpuidle.CpuAccess over a dict: cpu -> cap in us (None: none)."""

    def __init__(self, caps=None, broken=()):
        self.caps = dict(caps or {0: None, 1: None})
        self.broken = set(broken)
        self.writes = []

    def read(self, cpu):
        if cpu in self.broken or cpu not in self.caps:
            raise OSError(errno.EACCES, "Permission denied")
        return self.caps[cpu]

    def write(self, cpu, us):
        if cpu in self.broken:
            raise OSError(errno.EACCES, "Permission denied")
        self.writes.append((cpu, us))
        self.caps[cpu] = us

    def where(self, cpu):
        return f"/sys/devices/system/cpu/cpu{cpu}/power/pm_qos_resume_latency_us"


# -- the sysfs file's upside-down text ------------------------------------------

@pytest.mark.parametrize("text,us", [("0\n", None), ("n/a\n", 0), ("20\n", 20),
                                     ("100000", 100000)])
def test_the_files_text_reads_as_a_cap_and_writes_back_the_same(text, us):
    assert cpuidle.parse_limit(text) == us
    assert cpuidle.format_limit(us) == text.strip()


@pytest.mark.parametrize("text", ["", "-1", "fast", "1.5"])
def test_text_that_is_no_cap_is_refused(text):
    with pytest.raises(ValueError):
        cpuidle.parse_limit(text)


def test_read_and_write_go_to_the_cpus_own_file(tmp_path):
    os.makedirs(tmp_path / "cpu3" / "power")
    path = tmp_path / "cpu3" / "power" / "pm_qos_resume_latency_us"
    path.write_text("0\n")
    cpus = cpuidle.CpuAccess(str(tmp_path))
    assert cpus.read(3) is None
    cpus.write(3, 0)
    assert path.read_text() == "n/a" and cpus.read(3) == 0
    with pytest.raises(OSError):
        cpus.read(4)


def test_idle_states_are_read_shallowest_first(tmp_path):
    (tmp_path / "cpuidle").mkdir()
    (tmp_path / "cpuidle" / "current_driver").write_text("haltpoll\n")
    for i, (name, lat) in enumerate([("POLL", 0), ("haltpoll idle", 1)] * 6):
        d = tmp_path / "cpu0" / "cpuidle" / f"state{i}"
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "latency").write_text(f"{lat + i}\n")
        (d / "disable").write_text("1\n" if i == 11 else "0\n")
        (d / "time").write_text(f"{1000 * i}\n")
    states = cpuidle.idle_states(0, str(tmp_path))
    # state10 after state9, not after state1
    assert [s.exit_latency_us for s in states] == [0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12]
    assert states[0].name == "POLL" and states[11].disabled and not states[10].disabled
    assert cpuidle.idle_driver(str(tmp_path)) == "haltpoll"
    assert cpuidle.idle_states(1, str(tmp_path)) == ()
    assert cpuidle.idle_driver(str(tmp_path / "none")) is None


def test_poll_time_sums_the_states_that_take_nothing_to_leave(tmp_path):
    for i, (lat, t) in enumerate([(0, 1500), (1, 90000), (0, 25)]):
        d = tmp_path / "cpu2" / "cpuidle" / f"state{i}"
        d.mkdir(parents=True)
        (d / "name").write_text("POLL\n" if lat == 0 else "C1\n")
        (d / "disable").write_text("0\n")
        (d / "latency").write_text(f"{lat}\n")
        (d / "time").write_text(f"{t}\n")
    assert cpuidle.poll_time_us(2, str(tmp_path)) == 1525
    assert cpuidle.poll_time_us(3, str(tmp_path)) is None


# -- holding and letting go -----------------------------------------------------

def holder(tmp_path, cpus, limit=0, hold_s=2.0):
    return wake.WakeHolder(limit, cpus, str(tmp_path / "xdpd.wake.json"), OWNER, hold_s=hold_s)


def test_a_cpu_is_held_only_once_its_workers_receive_and_let_go_when_quiet(tmp_path):
    cpus = FakeCpus({0: None, 1: 20})
    h = holder(tmp_path, cpus)
    h.update({7: (0, 100), 8: (1, 50)}, now=10.0)     # first counts: nothing moved yet
    assert cpus.writes == [] and not (tmp_path / "xdpd.wake.json").exists()
    h.update({7: (0, 100), 8: (1, 51)}, now=10.5)     # worker 8 on CPU 1 received
    assert cpus.caps == {0: None, 1: 0} and set(h.held) == {1}
    journal = wake.read_journal(str(tmp_path / "xdpd.wake.json"))
    assert journal == (OWNER, {1: wake.Held(before=20, set=0)})
    h.update({7: (0, 100), 8: (1, 60)}, now=12.0)     # still busy: held, not written again
    h.update({7: (0, 100), 8: (1, 60)}, now=13.9)
    assert cpus.writes == [(1, 0)]
    h.update({7: (0, 100), 8: (1, 60)}, now=14.0)     # 2 s quiet: the old cap is back
    assert cpus.caps == {0: None, 1: 20} and h.held == {}
    assert not (tmp_path / "xdpd.wake.json").exists()
    h.update({7: (0, 101), 8: (1, 60)}, now=15.0)     # traffic again, on CPU 0 now
    assert cpus.caps == {0: 0, 1: 20}
    h.release_all()
    assert cpus.caps == {0: None, 1: 20} and not (tmp_path / "xdpd.wake.json").exists()


def test_a_cap_as_low_as_ours_is_someone_elses_and_never_touched(tmp_path):
    cpus = FakeCpus({0: 0, 1: 5})
    h = holder(tmp_path, cpus, limit=10)
    h.update({1: (0, 1), 2: (1, 1)}, now=0.0)
    h.update({1: (0, 2), 2: (1, 2)}, now=0.1)
    h.release_all()
    assert cpus.writes == [] and cpus.caps == {0: 0, 1: 5}


def test_an_operators_change_while_held_wins(tmp_path, caplog):
    cpus = FakeCpus()
    h = holder(tmp_path, cpus)
    h.update({1: (0, 1)}, now=0.0)
    h.update({1: (0, 2)}, now=0.1)
    assert cpus.caps[0] == 0
    cpus.caps[0] = 50                               # `echo 50 > ...` meanwhile
    with caplog.at_level(logging.INFO, "xdpd.wake"):
        h.release_all()
    assert cpus.caps[0] == 50
    assert "CPU 0: wake-up latency cap is 50 us, not the polling only (0 us) xdpd set; " \
           "left as it is" in caplog.text


def test_a_cpu_whose_file_fails_is_warned_of_once_and_the_others_still_held(tmp_path, caplog):
    cpus = FakeCpus({0: None, 1: None}, broken={1})
    h = holder(tmp_path, cpus)
    with caplog.at_level(logging.WARNING, "xdpd.wake"):
        for n in range(5):
            h.update({1: (0, n), 2: (1, n)}, now=n * 0.1)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "CPU 1: cannot cap its wake-up latency (/sys/devices/system/cpu/cpu1/power/"
        "pm_qos_resume_latency_us: EACCES); its workers wake as the CPU's idle states "
        "allow. Run as root with /sys writable, or set workers.cpu_wake_latency_us: null "
        "to leave CPUs alone"]
    assert set(h.held) == {0} and cpus.caps[0] == 0


def test_a_journal_that_cannot_be_written_holds_nothing(tmp_path, caplog):
    cpus = FakeCpus()
    h = wake.WakeHolder(0, cpus, str(tmp_path / "no-such-dir" / "xdpd.wake.json"), OWNER)
    with caplog.at_level(logging.WARNING, "xdpd.wake"):
        h.update({1: (0, 1)}, now=0.0)
        h.update({1: (0, 2)}, now=0.1)
    assert cpus.writes == [] and h.held == {}
    assert "(the journal of what xdpd changed): ENOENT" in caplog.text


def test_a_worker_gone_is_forgotten_and_a_new_one_starts_from_its_own_count(tmp_path):
    cpus = FakeCpus()
    h = holder(tmp_path, cpus)
    h.update({1: (0, 500)}, now=0.0)
    h.update({}, now=0.1)                            # removed by a reload
    h.update({1: (0, 0)}, now=0.2)                   # its slot reused: a fresh count
    assert cpus.writes == []


# -- a killed supervisor's journal ----------------------------------------------

def write_journal(path, held, owner=OWNER):
    run_record.write_json(str(path), {
        "format": 1, "pid": owner.pid, "start_time": owner.start_time,
        "boot_id": owner.boot_id,
        "cpus": [{"cpu": c, "before": h.before, "set": h.set} for c, h in held.items()]})


def test_recover_puts_back_what_a_dead_xdpd_still_holds(tmp_path, caplog):
    path = tmp_path / "xdpd.wake.json"
    write_journal(path, {0: wake.Held(None, 0), 1: wake.Held(30, 0)})
    cpus = FakeCpus({0: 0, 1: 7})                    # CPU 1 changed since by someone
    with caplog.at_level(logging.INFO, "xdpd.wake"):
        wake.recover(str(path), cpus, owner_alive=lambda o: False,
                     current_boot=lambda: "boot-a")
    assert cpus.caps == {0: None, 1: 7} and not path.exists()
    assert "CPU 0: wake-up latency cap put back to no cap (xdpd pid 4567 died holding it)" \
        in caplog.text


def test_recover_refuses_a_live_owners_journal(tmp_path):
    path = tmp_path / "xdpd.wake.json"
    write_journal(path, {0: wake.Held(None, 0)})
    with pytest.raises(wake.WakeError, match="another xdpd \\(pid 4567\\) keeps its wake "
                                             "journal"):
        wake.recover(str(path), FakeCpus({0: 0}), owner_alive=lambda o: True)
    assert path.exists()


def test_recover_after_a_reboot_puts_nothing_back(tmp_path):
    path = tmp_path / "xdpd.wake.json"
    write_journal(path, {0: wake.Held(None, 0)})
    cpus = FakeCpus({0: 0})
    wake.recover(str(path), cpus, owner_alive=lambda o: False, current_boot=lambda: "boot-b")
    assert cpus.writes == [] and not path.exists()


@pytest.mark.parametrize("doc", ['{"format": 1}', "not json",
                                 '{"format": 1, "pid": 1, "start_time": 2, "boot_id": "b", '
                                 '"cpus": [{"cpu": -1, "before": null, "set": 0}]}'])
def test_a_journal_that_is_not_one_is_moved_aside(tmp_path, doc):
    path = tmp_path / "xdpd.wake.json"
    path.write_text(doc)
    cpus = FakeCpus()
    wake.recover(str(path), cpus, owner_alive=lambda o: False)
    assert cpus.writes == [] and not path.exists()
    assert (tmp_path / "xdpd.wake.json.invalid").read_text() == doc


# -- the scheduler slice --------------------------------------------------------

def test_the_slice_bounds_are_the_configs():
    assert (cpuidle.SLICE_MIN_US, cpuidle.SLICE_MAX_US) == SCHED_SLICE_US


def test_a_worker_gets_the_slice_it_asks_for_where_the_kernel_has_slices():
    # in a child: the test process keeps its own slice
    code = ("from xdpd.kernel import cpuidle; import os; "
            "print(cpuidle.set_slice(150), cpuidle.get_slice_us(), "
            "os.sched_getscheduler(0) == os.SCHED_OTHER)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    if (major, minor) >= (6, 12):
        assert out == ["True", "150", "True"]
    else:
        assert out == ["False", "0", "True"]
    with pytest.raises(ValueError):
        cpuidle.set_slice(50)
