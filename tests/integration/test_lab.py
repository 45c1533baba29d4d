"""The veth lab and the traffic tools, with no xdpd involved (root)."""
import os
import subprocess

import pytest
from integration_helpers import ROOT_ONLY, netns_list

from xdpd.lab.netns import Lab, LabError, cleanup_stale
from xdpd.lab.traffic import SinkProcess, send_in_ns

pytestmark = ROOT_ONLY


@pytest.fixture
def lab(fresh_lab):
    """These tests change the lab (processes, traffic counters): one each."""
    return fresh_lab


def link_stats(lab, dev):
    import json
    out = lab.run(lab.ns_of(dev), "ip", "-j", "-s", "-d", "link", "show", dev).stdout
    return json.loads(out)[0]


def test_lab_topology(lab):
    assert set(lab.namespaces) <= netns_list()
    for dev, ns in lab.devices.items():
        info = link_stats(lab, dev)
        assert info["address"] == Lab.MACS[dev]
        assert info["num_rx_queues"] == 2 and info["num_tx_queues"] == 2
        assert "UP" in info["flags"] and info["operstate"] == "UP"
        assert info["linkinfo"]["info_kind"] == "veth"
        v6 = lab.run(ns, "sysctl", "-n", f"net.ipv6.conf.{dev}.disable_ipv6").stdout
        assert v6.strip() == "1"
    for dev in (Lab.GEN_DEV, Lab.SINK_DEV):
        features = lab.run(lab.ns_of(dev), "ethtool", "-k", dev).stdout
        assert "generic-receive-offload: on" in features
    for ns in lab.namespaces:
        assert "UP" in lab.run(ns, "ip", "-br", "link", "show", "lo").stdout


def test_generator_to_sink_counts_exactly(lab):
    count, flows = 5000, 64
    with SinkProcess(lab, lab.dut_ns, Lab.IN_DEV, tag=7, expect=count, idle=2.0) as sink:
        sent = send_in_ns(lab, lab.gen_ns, Lab.GEN_DEV, dst_mac=Lab.MACS[Lab.IN_DEV],
                          count=count, flows=flows, tag=7)
        res = sink.result(timeout=30)
    assert sent["sent"] == count
    assert sent["src_mac"] == Lab.MACS[Lab.GEN_DEV]
    assert res["received"] == count, res
    assert res["bad_payload"] == 0
    assert res["duplicates"] == 0
    assert res["socket"]["drops"] == 0
    assert res["stopped_by"] == "expect"
    assert res["by_dst_mac"] == {Lab.MACS[Lab.IN_DEV]: count}
    assert len(res["by_flow"]) == flows and sum(res["by_flow"].values()) == count
    # The wire is quiet: IPv6 is off, so the kernel sent nothing of its own.
    assert link_stats(lab, Lab.GEN_DEV)["stats64"]["tx"]["packets"] == count
    assert link_stats(lab, Lab.IN_DEV)["stats64"]["rx"]["packets"] == count


def test_sink_ignores_other_runs(lab):
    with SinkProcess(lab, lab.dut_ns, Lab.IN_DEV, tag=2, idle=0.5, timeout=10) as sink:
        send_in_ns(lab, lab.gen_ns, Lab.GEN_DEV, dst_mac=Lab.MACS[Lab.IN_DEV],
                   count=300, tag=3)
        send_in_ns(lab, lab.gen_ns, Lab.GEN_DEV, dst_mac=Lab.MACS[Lab.IN_DEV],
                   count=200, tag=2)
        res = sink.result(timeout=15)
    assert res["received"] == 200 and res["stopped_by"] == "idle"


def test_sink_stops_on_request_and_still_reports(lab):
    with SinkProcess(lab, lab.dut_ns, Lab.IN_DEV, tag=4, idle=30, timeout=60) as sink:
        send_in_ns(lab, lab.gen_ns, Lab.GEN_DEV, dst_mac=Lab.MACS[Lab.IN_DEV],
                   count=100, tag=4, rate=10000)
        sink.stop()
        res = sink.result(timeout=10)
    assert res["stopped_by"] == "signal" and res["received"] == 100


def test_destroy_is_complete_and_idempotent():
    lab = Lab.create(queues=2)
    try:
        names = set(lab.namespaces)
        assert names <= netns_list()
    finally:
        lab.destroy()
    assert not names & netns_list()
    lab.destroy()                       # already gone: no error


def test_exception_inside_with_removes_lab():
    names = set()
    with pytest.raises(RuntimeError, match="boom"):
        with Lab.create(queues=2) as lab:
            names = set(lab.namespaces)
            raise RuntimeError("boom")
    assert names and not names & netns_list()


def test_destroy_ends_processes_left_in_lab():
    lab = Lab.create(queues=1)
    try:
        proc = lab.popen(lab.dut_ns, ["sleep", "60"])
    finally:
        lab.destroy()
    try:
        assert proc.wait(timeout=10) != 0           # ended by a signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not set(lab.namespaces) & netns_list()


def test_failed_create_removes_what_it_made():
    prefix = f"xdpdtest{os.getpid()}beef"
    with pytest.raises(LabError, match="veth"):
        Lab.create(prefix=prefix, queues=100000)    # more queues than veth allows
    assert not {f"{prefix}-{r}" for r in ("gen", "dut", "sink")} & netns_list()


def test_cleanup_stale_removes_only_dead_creators():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"xdpdtest{dead.pid}0a1b-dut"
    alive = f"xdpdtest{os.getpid()}0a1c-dut"
    foreign = "xdpdtestnotalab"
    made = []
    try:
        for name in (stale, alive, foreign):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
        removed = cleanup_stale("xdpdtest")
        assert stale in removed
        assert alive not in removed and foreign not in removed
        left = netns_list()
        assert stale not in left and alive in left and foreign in left
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert not set(made) & netns_list()
