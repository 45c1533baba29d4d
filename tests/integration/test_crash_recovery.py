"""A supervisor killed with SIGKILL: its workers go by themselves, and the
next `xdpd run` removes the XDP programs it left attached and starts."""
import json
import os

import pytest
from integration_helpers import ROOT_ONLY, poll_until, xdp_attached
from test_hardening import memlock_like_the_unit, setpriv, unit_words

from xdpd import exitcodes
from xdpd.control import record as run_record
from xdpd.lab.daemon import DaemonError, LabDaemon, forward_config
from xdpd.lab.traffic import SinkProcess, send_in_ns

pytestmark = ROOT_ONLY

WORKERS_GONE_S = 2.0        # PR_SET_PDEATHSIG, and the parent check between bursts


def xdp_prog_id(lab, dev: str) -> int:
    info = json.loads(lab.run(lab.dut_ns, "ip", "-j", "-d", "link", "show", dev).stdout)[0]
    return info.get("xdp", {}).get("prog", {}).get("id", 0)


def running(pid: int) -> bool:
    """pid is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def unit_capabilities() -> list[str]:
    """`xdpd run` with only the systemd unit's capabilities: no CAP_SYS_ADMIN,
    so the kernel does not open a dead xdpd's program by its id."""
    prefix, extra = memlock_like_the_unit()
    return prefix + setpriv(unit_words("CapabilityBoundingSet") + extra)


@pytest.mark.parametrize("as_unit", [False, True], ids=["root", "unit-capabilities"])
def test_after_a_kill_workers_exit_and_the_next_start_removes_what_was_left(fresh_lab, as_unit):
    lab = fresh_lab
    devs = (lab.IN_DEV, lab.OUT_DEV)
    wrap = unit_capabilities() if as_unit else []
    with LabDaemon(lab, forward_config(lab), wrap=wrap) as daemon:
        daemon.start()
        workers = daemon.worker_pids()
        assert len(workers) == 4, workers
        # and their standbys, which must go too
        standbys = poll_until(lambda: [w["standby_pid"] for w in daemon.status()["workers"]
                                       if w["standby_pid"]] if all(
            w["standby_pid"] for w in daemon.status()["workers"]) else None,
            what="a standby for every worker")
        workers.update({f"standby {pid}": pid for pid in standbys})
        record = run_record.read(daemon.record_path)
        ids = {a.netdev: a.prog_id for a in record.attachments}
        assert ids == {dev: xdp_prog_id(lab, dev) for dev in devs}

        killed = daemon.kill()
        assert record.owner.pid == killed
        poll_until(lambda: not any(running(pid) for pid in workers.values()),
                   timeout=WORKERS_GONE_S, what="every worker exited after xdpd was killed")
        # what a crash leaves: the programs, held by the netdevs, and the record
        assert {dev: xdp_prog_id(lab, dev) for dev in devs} == ids
        assert os.path.exists(daemon.record_path)

        seen = len(daemon.log())
        daemon.start()
        log = daemon.log()[seen:]
        for dev in devs:
            assert (f"{dev}: removed rr_redirect (prog id {ids[dev]}) left attached by "
                    f"xdpd pid {killed} that died") in log, log
        record = run_record.read(daemon.record_path)
        assert record.owner.pid == daemon.proc.pid
        assert {a.netdev: a.prog_id for a in record.attachments} == \
            {dev: xdp_prog_id(lab, dev) for dev in devs}
        assert not set(ids.values()) & {a.prog_id for a in record.attachments}

        with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=71, expect=1000) as sink:
            sent = send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV],
                              count=1000, tag=71)
            got = sink.result(timeout=30)
        assert sent["sent"] == 1000 and got["received"] == 1000
        assert got["by_dst_mac"] == {lab.MACS[lab.SINK_DEV]: 1000}

        assert daemon.stop() == 0
        assert not any(xdp_attached(lab, lab.dut_ns, dev) for dev in devs)
        assert not os.path.exists(daemon.record_path)


def test_a_record_of_a_running_xdpd_makes_start_refuse(lab):
    with LabDaemon(lab, forward_config(lab)) as daemon:
        # this test's own process stands for the other xdpd: it is alive
        record = run_record.Record(run_record.Owner.me(),
                                 (run_record.Attachment(lab.IN_DEV, 1, 1, "native"),))
        run_record.write(daemon.record_path, record)
        with pytest.raises(DaemonError):
            daemon.start()
        assert daemon.proc.returncode == exitcodes.CONFIG
        assert (f"another xdpd (pid {os.getpid()}) runs with control.socket "
                f"{daemon.socket_path} (its record: {daemon.record_path}); stop it first, "
                "or give this one another control.socket") in daemon.log()
        assert "Traceback" not in daemon.log()
        assert not any(xdp_attached(lab, lab.dut_ns, dev) for dev in (lab.IN_DEV, lab.OUT_DEV))
        assert run_record.read(daemon.record_path) == record
