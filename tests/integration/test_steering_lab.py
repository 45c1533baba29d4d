"""Steering on a 4-queue veth: channels set by xdpd at start for real and
restored at stop or, after a kill, at the next start; what veth cannot do
(ntuple, RSS) refused at check time and at start with the driver named.
The ntuple and RSS requests themselves are checked in tests/unit/test_steering.py."""
import os
import re
import subprocess
import sys

import pytest
from integration_helpers import ROOT_ONLY, netns_list, poll_until, xdp_attached

from xdpd import exitcodes
from xdpd.control.steering import journal_path
from xdpd.lab.daemon import DaemonError, LabDaemon, forward_config
from xdpd.lab.netns import Lab
from xdpd.lab.traffic import child_env

pytestmark = ROOT_ONLY

QUEUES = 4


@pytest.fixture(scope="module")
def lab():
    lab = Lab.create(queues=QUEUES)
    try:
        yield lab
    finally:
        lab.destroy()
    assert not set(lab.namespaces) & netns_list(), "lab namespaces outlived destroy()"


@pytest.fixture(autouse=True)
def channels_restored(lab):
    """The peer gen0 sends on 2 tx queues: veth takes a native XDP program
    only while it has at least as many rx queues as its peer has tx queues
    (veth_xdp_set), and xdpd leaves in0 2.  Whatever a test does, in0 and
    gen0 have all their channels again afterwards."""
    lab.run(lab.gen_ns, "ethtool", "-L", lab.GEN_DEV, "tx", "2")
    yield
    lab.run(lab.dut_ns, "ethtool", "-L", lab.IN_DEV, "rx", str(QUEUES), "tx", str(QUEUES),
            check=False)
    lab.run(lab.gen_ns, "ethtool", "-L", lab.GEN_DEV, "tx", str(QUEUES), check=False)


def channels(lab, dev: str) -> tuple[int, int]:
    """(rx, tx) under 'Current hardware settings' of `ethtool -l`."""
    out = lab.run(lab.dut_ns, "ethtool", "-l", dev).stdout
    current = out.split("Current hardware settings:")[1]
    return tuple(int(re.search(rf"^{k}:\s+(\d+)", current, re.M).group(1)) for k in ("RX", "TX"))


def steered_config(lab, steering: str) -> str:
    lines = "".join(f"      {line}\n" for line in steering.strip().splitlines())
    return forward_config(lab).replace(
        f"  - name: {lab.IN_DEV}\n    queues: all\n",
        f"  - name: {lab.IN_DEV}\n    queues: all\n    steering:\n{lines}", 1)


@pytest.mark.parametrize("as_unit", [False, True], ids=["root", "unit-capabilities"])
def test_channels_are_set_at_start_and_restored_at_stop(lab, as_unit):
    from test_crash_recovery import unit_capabilities
    assert channels(lab, lab.IN_DEV) == (QUEUES, QUEUES)
    wrap = unit_capabilities() if as_unit else []
    with LabDaemon(lab, steered_config(lab, "channels: 2"), wrap=wrap) as daemon:
        daemon.start()
        assert channels(lab, lab.IN_DEV) == (2, 2)
        workers = sorted(w["name"] for w in daemon.status()["workers"])
        assert workers == ["in0/q0", "in0/q1"] + [f"out0/q{q}" for q in range(QUEUES)]
        assert os.path.exists(journal_path(daemon.socket_path))
        assert "in0: channels rx 2 tx 2 (were rx 4 tx 4)" in daemon.log()
        assert daemon.stop() == 0
        assert channels(lab, lab.IN_DEV) == (QUEUES, QUEUES)
        assert not os.path.exists(journal_path(daemon.socket_path))
        assert "Traceback" not in daemon.log()


def check_config(lab, path) -> subprocess.CompletedProcess:
    return subprocess.run(lab.nsenter(lab.dut_ns) + [sys.executable, "-m", "xdpd",
                          "check-config", str(path)], capture_output=True, text=True,
                          env=child_env(), timeout=60)


def test_flows_and_rss_on_veth_are_refused_at_check_and_at_start(lab, tmp_path):
    config = steered_config(lab, """\
channels: 2
rss_queues: [0, 1]
flows:
  - {type: udp4, dst_port: 4789, queue: 1}
""")
    expected = [
        "interfaces[0].steering.rss_queues: in0 (driver veth) has no RSS indirection table: "
        "ETHTOOL_GRXFHINDIR answered EOPNOTSUPP; remove rss_queues or use a NIC that has them",
        "interfaces[0].steering.flows: in0 (driver veth) has no ntuple filters: "
        "ETHTOOL_GRXCLSRLCNT answered EOPNOTSUPP; remove flows or use a NIC that has them"]
    path = tmp_path / "xdpd.yaml"
    path.write_text(config)
    out = check_config(lab, path)
    assert out.returncode == exitcodes.CONFIG, out
    assert out.stderr.splitlines() == [f"{path}: {line}" for line in expected]

    with LabDaemon(lab, config) as daemon:
        with pytest.raises(DaemonError):
            daemon.start()
        assert daemon.proc.returncode == exitcodes.CONFIG
        for line in expected:
            assert f"{daemon.config_path}: {line}" in daemon.log()
        assert "Traceback" not in daemon.log()
        # nothing was touched
        assert channels(lab, lab.IN_DEV) == (QUEUES, QUEUES)
        assert not any(xdp_attached(lab, lab.dut_ns, d) for d in (lab.IN_DEV, lab.OUT_DEV))
        assert not os.path.exists(journal_path(daemon.socket_path))


def test_check_config_shows_the_steering(lab, tmp_path):
    path = tmp_path / "xdpd.yaml"
    path.write_text(steered_config(lab, "channels: 3"))
    out = check_config(lab, path)
    assert out.returncode == 0, out.stderr
    assert "steering in0: 3 channels" in out.stdout
    assert "in0/q2" in out.stdout and "in0/q3" not in out.stdout
    path.write_text(steered_config(lab, "channels: 9"))
    out = check_config(lab, path)
    assert out.returncode == exitcodes.CONFIG
    assert out.stderr.splitlines() == [
        f"{path}: interfaces[0].steering.channels: 9 but in0 (driver veth) has at most 4 rx "
        "channels (see 'ethtool -l in0'); use 4 or fewer"]


def test_after_a_kill_the_next_start_restores_the_channels(lab):
    with LabDaemon(lab, steered_config(lab, "channels: 2")) as daemon:
        daemon.start()
        assert channels(lab, lab.IN_DEV) == (2, 2)
        killed = daemon.kill()
        # what a crash leaves: the channels as xdpd set them, and the journal
        assert channels(lab, lab.IN_DEV) == (2, 2)
        assert os.path.exists(journal_path(daemon.socket_path))

        seen = len(daemon.log())
        daemon.write_config(forward_config(lab))          # no steering any more
        daemon.start()
        log = daemon.log()[seen:]
        assert (f"in0: channels restored to rx 4 tx 4 (set by xdpd pid {killed} that died)"
                in log), log
        assert channels(lab, lab.IN_DEV) == (QUEUES, QUEUES)
        assert not os.path.exists(journal_path(daemon.socket_path))
        poll_until(lambda: len(daemon.status()["workers"]) == 2 * QUEUES,
                   what="a worker on every queue of in0 and out0")
        assert daemon.stop() == 0
        assert channels(lab, lab.IN_DEV) == (QUEUES, QUEUES)


def test_a_reload_adding_flows_on_veth_is_invalid_and_changes_nothing(lab):
    from xdpd.control.server import ControlError
    with LabDaemon(lab, steered_config(lab, "channels: 2")) as daemon:
        daemon.start()
        new = steered_config(lab, "channels: 2\nflows:\n  - {type: tcp4, dst_port: 80, queue: 0}")
        try:
            answer = daemon.reload(new)
        except ControlError as e:
            answer = {"message": str(e)}
        assert ("interfaces[0].steering.flows: in0 (driver veth) has no ntuple filters: "
                "ETHTOOL_GRXCLSRLCNT answered EOPNOTSUPP") in answer["message"], answer
        status = daemon.status()
        assert status["last_reload"]["result"] == "invalid"
        assert channels(lab, lab.IN_DEV) == (2, 2)
        assert daemon.stop() == 0
        assert channels(lab, lab.IN_DEV) == (QUEUES, QUEUES)
