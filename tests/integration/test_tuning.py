"""The tuning knobs with real traffic: busy polling, hugepage-backed UMEM,
and what an idle worker costs with the defaults."""
import time

import psutil
from integration_helpers import ROOT_ONLY

from xdpd.datapath.umem import hugepage_size
from xdpd.lab.daemon import forward_config
from xdpd.lab.netns import hugepages_reserved
from xdpd.lab.traffic import SinkProcess, send_in_ns

pytestmark = ROOT_ONLY

N = 20_000
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def forward_exactly(lab, tag: int) -> None:
    with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=tag, expect=N, idle=2.0) as sink:
        sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                          count=N, flows=64, tag=tag)
        got = sink.result(timeout=30)
    assert sent["sent"] == N
    assert got["received"] == N and got["bad_payload"] == 0
    assert got["by_dst_mac"] == {lab.MACS[lab.SINK_DEV]: N}


def test_busy_polling_worker_forwards_everything_and_polls(lab, start_daemon):
    daemon = start_daemon(forward_config(lab, extra="workers:\n  busy_poll: true\n"
                                         "  busy_poll_usecs: 50\n"))
    forward_exactly(lab, tag=41)
    m = daemon.scrape()
    assert m.value("xdpd_busy_polls_total", netdev="in0") > 0
    assert m.value("xdpd_tx_packets_total", netdev="out0") == N


def test_hugepage_umem_when_reserved(lab, start_daemon):
    # (4 workers + 2 spare slots) x 4096 frames x 2048 B = 48 MiB
    pages = (6 * 4096 * 2048) // hugepage_size() + 1
    with hugepages_reserved(pages):
        daemon = start_daemon(forward_config(lab, extra="umem:\n  hugepages: on\n"
                                             "  frame_size: 2048\n"))
        forward_exactly(lab, tag=42)
        assert "huge pages of" in daemon.log()
        daemon.close()


def test_hugepages_on_without_reserve_is_refused_with_the_fix(lab, start_daemon):
    import pytest

    from xdpd.lab.daemon import DaemonError
    with open(NR_HUGEPAGES) as f:
        if int(f.read()) > 0:
            pytest.skip("huge pages are reserved on this host")
    with pytest.raises(DaemonError) as info:
        start_daemon(forward_config(lab, extra="umem:\n  hugepages: on\n"))
    assert "umem.hugepages is on but huge pages are not available" in str(info.value)
    assert "sysctl vm.nr_hugepages=" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_idle_workers_use_almost_no_cpu_by_default(lab, start_daemon):
    daemon = start_daemon(forward_config(lab))
    procs = [psutil.Process(p) for p in daemon.worker_pids().values()]
    assert len(procs) == 4
    before = [sum(p.cpu_times()[:2]) for p in procs]
    t0 = time.monotonic()
    time.sleep(2.0)        # a measurement window, not a wait for a condition
    elapsed = time.monotonic() - t0
    used = [sum(p.cpu_times()[:2]) - b for p, b in zip(procs, before)]
    assert max(used) / elapsed < 0.05, used
