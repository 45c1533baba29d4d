"""xdpd doctor: each check's findings (exact text) on a fake host and fake
status samples; the report, the exit codes and the command's refusals."""
from __future__ import annotations

import dataclasses
import errno
import json
from dataclasses import dataclass, field

import pytest

from xdpd import exitcodes
from xdpd.cli import main
from xdpd.config.schema import parse_config
from xdpd.control.doctor import (Finding, check_same_file, diagnose, exit_code, live_checks,
                                 rss_fix, static_checks)
from xdpd.control.server import ControlError
from xdpd.kernel.netdev import NetdevError


def unsupported(what):
    return NetdevError(errno.EOPNOTSUPP, f"ethtool {what} failed: EOPNOTSUPP")


@dataclass
class FakeHost:
    queues: dict = field(default_factory=lambda: {"in0": 2, "out0": 2})
    drivers: dict = field(default_factory=lambda: {"in0": "veth", "out0": "veth"})
    mtus: dict = field(default_factory=dict)
    rss: dict = field(default_factory=dict)         # name -> table; absent: EOPNOTSUPP
    ntuple: dict = field(default_factory=dict)      # name -> count; absent: EOPNOTSUPP
    attached: dict = field(default_factory=dict)    # name -> "native" | "generic"
    irq_cpus: dict = field(default_factory=dict)    # (name, queue) -> cpus
    features: dict = field(default_factory=dict)    # name -> XDP_ACT names; absent: veth's
    cpus: frozenset = frozenset({0, 1})
    idle_driver: str | None = "haltpoll"
    wake_limits: dict = field(default_factory=dict)  # cpu -> cap (absent: none; OSError: no file)
    wake_writable: bool = True

    def netdev_exists(self, name):
        return name in self.queues

    def rx_queue_count(self, name):
        return self.queues[name]

    def online_cpus(self):
        return self.cpus

    def mtu(self, name):
        return self.mtus.get(name, 1500)

    def xdp_features(self, name):
        from xdpd.kernel.xdp_features import XDP_ACT, XdpFeatures, XdpFeaturesError
        names = self.features.get(name, ("basic", "redirect", "rx-sg"))
        if names is None:
            raise XdpFeaturesError(2, "read XDP features: ENOENT (this kernel has no "
                                      "netdev netlink family (Linux 6.3 and later))")
        return XdpFeatures(7, sum(XDP_ACT[n] for n in names), None)

    def driver(self, name):
        return self.drivers[name]

    def link_kind(self, name):
        return "veth" if self.drivers[name] == "veth" else ""

    def link_peer(self, name):
        from xdpd.kernel.netdev import LinkPeer
        return LinkPeer(7, f"{name}-peer", "lab")

    def rss_indirection(self, name):
        if name not in self.rss:
            raise unsupported("GRXFHINDIR")
        return self.rss[name]

    def ntuple_rule_count(self, name):
        if name not in self.ntuple:
            raise unsupported("GRXCLSRLCNT")
        return self.ntuple[name]

    def xdp_attached_mode(self, name):
        return self.attached.get(name)

    def queue_irq_cpus(self, name, queue):
        return frozenset(self.irq_cpus.get((name, queue), ()))

    def cpu_idle_driver(self):
        return self.idle_driver

    def cpu_idle_states(self, cpu):
        from xdpd.kernel.cpuidle import IdleState
        return (IdleState("POLL", 0, False, 0), IdleState("haltpoll idle", 1, False, 0))

    def cpu_wake_limit(self, cpu):
        limit = self.wake_limits.get(cpu)
        if isinstance(limit, OSError):
            raise limit
        return limit

    def cpu_wake_limit_writable(self, cpu):
        return self.wake_writable


def config(in_queues="[0]", extra=""):
    return parse_config(f"""\
interfaces:
  - name: in0
    queues: {in_queues}
  - name: out0
forward:
  - from: in0
    to: out0
{extra}""", source="xdpd.yaml")


def by_check(findings, check, subject=None):
    return [f.line() for f in findings
            if f.check == check and (subject is None or f.subject == subject)]


# --- static checks ------------------------------------------------------------

def test_on_veth_with_nothing_attached_every_static_check_is_ok():
    findings = static_checks(config(), FakeHost())
    assert {f.level for f in findings} == {"ok"}
    assert by_check(findings, "xdp_mode")[0] == (
        "OK in0: native XDP untested (driver veth, nothing attached; doctor does not attach "
        "to find out); xdp_mode: auto, 'xdpd run' logs the mode it gets")
    assert by_check(findings, "zero_copy")[0] == (
        "OK in0: copy mode: veth has no AF_XDP zero-copy (expected)")
    assert by_check(findings, "channels") == [
        "OK in0: owns queues 0 of 2; the kernel keeps queue 1",
        "OK out0: all 2 rx queues owned"]
    assert by_check(findings, "rss")[0] == (
        "OK in0: no RSS indirection table (not supported by driver veth)")
    assert by_check(findings, "ntuple")[0] == (
        "OK in0: no ntuple filters (not supported by driver veth)")
    assert by_check(findings, "mtu")[0] == (
        "OK in0: MTU 1500 (+18 B headers) fits a 2048 B frame (1792 B after the 256 B "
        "XDP headroom)")
    assert by_check(findings, "napi") == ["OK workers: no worker on its queue's IRQ CPU (3 workers)"]
    assert exit_code(findings) == exitcodes.OK


def test_missing_netdev_and_queues_beyond_the_channel_count_are_errors():
    host = FakeHost(queues={"in0": 2})
    findings = static_checks(config("[0, 3]"), host)
    assert by_check(findings, "netdev") == [
        "ERROR out0: netdev 'out0' not found; see 'ip link show'; create it or remove it "
        "from interfaces"]
    assert by_check(findings, "channels") == [
        "ERROR in0: configured queues 3 not on in0 (2 rx queues); raise the channel count "
        "(ethtool -L in0 combined 4) or remove them from queues"]
    assert by_check(findings, "napi") == []          # no worker plan for a broken config
    assert exit_code(findings) == exitcodes.DOCTOR_ERRORS


def test_attached_mode_and_the_running_daemons_mode_decide_native_xdp():
    host = FakeHost(drivers={"in0": "ixgbe", "out0": "veth"}, attached={"in0": "generic"})
    findings = static_checks(config(), host)
    assert by_check(findings, "xdp_mode")[0] == (
        "WARN in0: generic XDP (of the program attached now): driver ixgbe did not take a "
        "native program; every packet costs an skb before XDP sees it; use a NIC whose "
        "driver has native XDP, or set xdp_mode: generic to accept it")
    status = {"interfaces": [
        {"name": "in0", "xdp_mode": "native", "socket_mode": "copy", "rx_queues": 2,
         "queues": [0]},
        {"name": "out0", "xdp_mode": "native", "socket_mode": "copy", "rx_queues": 2,
         "queues": [0, 1]}]}
    findings = static_checks(config(), host, status)
    assert by_check(findings, "xdp_mode")[0] == (
        "OK in0: native XDP (in use by the running xdpd; driver ixgbe)")
    assert by_check(findings, "zero_copy")[0] == (
        "WARN in0: copy mode: driver ixgbe did not take zero-copy sockets; every packet is "
        "copied into the UMEM; check the driver's AF_XDP zero-copy support and the xdpd "
        "start log, or set zero_copy: off to accept copy mode")


def test_channels_added_after_start_with_queues_all_warn():
    status = {"interfaces": [
        {"name": "in0", "xdp_mode": "native", "socket_mode": "copy", "rx_queues": 2,
         "queues": [0, 1]},
        {"name": "out0", "xdp_mode": "native", "socket_mode": "copy", "rx_queues": 2,
         "queues": [0, 1]}]}
    host = FakeHost(queues={"in0": 4, "out0": 2})
    findings = static_checks(config("all"), host, status)
    assert by_check(findings, "channels")[0] == (
        "WARN in0: 4 rx queues now, 2 when xdpd started: queues 2-3 have no worker, the "
        "kernel keeps their traffic; xdpd reload (queues: all owns them)")


def test_rss_entries_on_unowned_queues_warn_with_the_ethtool_fix():
    host = FakeHost(queues={"in0": 4, "out0": 2}, rss={"in0": [0, 1, 2, 3] * 32})
    findings = static_checks(config("[0, 1]"), host)
    assert by_check(findings, "rss", "in0") == [
        "WARN in0: RSS table: 64 of 128 entries (50% of flows) point at queues 2-3, which "
        "xdpd does not own: that traffic never reaches xdpd; ethtool -X in0 equal 2, or "
        "add queues 2-3"]
    host.rss["in0"] = [0, 1] * 64
    assert by_check(static_checks(config("[0, 1]"), host), "rss", "in0") == [
        "OK in0: RSS table: all 128 entries point at owned queues"]
    assert rss_fix("in0", (1, 3), 4) == "ethtool -X in0 weight 0 1 0 1"


def test_ntuple_rules_are_counted():
    host = FakeHost(ntuple={"in0": 3, "out0": 0})
    findings = static_checks(config(), host)
    assert by_check(findings, "ntuple") == [
        "OK in0: 3 ntuple rules (ethtool -n in0 lists them; the live check shows traffic a "
        "rule sends to an unowned queue)",
        "OK out0: no ntuple rules"]


def test_a_jumbo_mtu_takes_descriptor_chains_where_the_driver_has_rx_sg():
    host = FakeHost(mtus={"in0": 3000, "out0": 9000}, features={"out0": ("basic",)})
    findings = static_checks(config(), host)
    assert by_check(findings, "mtu") == [
        "OK in0: MTU 3000 (+18 B headers = 3018 B): a full-size packet takes 2 buffers of "
        "2048 B, one descriptor chain (multi-buffer, umem.multi_buffer: auto); the rx ring "
        "holds 1024 such packets, the fill ring buffers for 2048; its driver takes "
        "multi-buffer packets in XDP (rx-sg)",
        "WARN out0: MTU 9000 (+18 B headers = 9018 B): a full-size packet takes 6 buffers of "
        "2048 B, one descriptor chain (multi-buffer, umem.multi_buffer: auto); the rx ring "
        "holds 341 such packets, the fill ring buffers for 682; its driver cannot take "
        "multi-buffer packets in XDP (no rx-sg); xdp_mode: generic on out0 (its "
        "driver's native XDP cannot take packets over one page), or an MTU of 1774 or less"]


def test_a_jumbo_mtu_without_multi_buffer_is_an_error_with_the_fix():
    host = FakeHost(mtus={"in0": 3000, "out0": 9000}, features={"out0": ("basic",)})
    findings = static_checks(config(extra="umem:\n  multi_buffer: 'off'\n"), host)
    assert by_check(findings, "mtu") == [
        "ERROR in0: MTU 3000 (+18 B headers = 3018 B) does not fit a 2048 B frame (1792 B "
        "after the 256 B XDP headroom): such a packet arrives in 2 buffers; its driver takes "
        "multi-buffer packets in XDP (rx-sg); with umem.multi_buffer: off xdpd's workers take "
        "one buffer per packet, so the kernel drops longer ones (rx_dropped); "
        "umem.multi_buffer: auto (or umem.frame_size: 4096)",
        "ERROR out0: MTU 9000 (+18 B headers = 9018 B) does not fit a 2048 B frame (1792 B "
        "after the 256 B XDP headroom): such a packet arrives in 6 buffers; its driver cannot "
        "take multi-buffer packets in XDP (no rx-sg); with umem.multi_buffer: off xdpd's "
        "workers take one buffer per packet, so the kernel drops longer ones (rx_dropped); "
        "umem.multi_buffer: auto"]
    ok = static_checks(config(extra="umem:\n  frame_size: 4096\n"), FakeHost(mtus={"in0": 3000}))
    assert by_check(ok, "mtu")[0].startswith("OK in0: MTU 3000 (+18 B headers) fits a 4096 B")


def test_an_old_kernel_without_the_netdev_family_still_gets_the_mtu_finding():
    host = FakeHost(mtus={"in0": 9000}, features={"in0": None})
    (line, _) = by_check(static_checks(config(), host), "mtu")
    assert "takes 6 buffers of 2048 B, one descriptor chain (multi-buffer, umem.multi_buffer: " \
        "auto); the rx ring holds 341 such packets, the fill ring buffers for 682; its XDP " \
        "features are unknown (read XDP features: ENOENT" in line


def test_a_worker_on_its_queues_irq_cpu_warns():
    # by_queue: in0/q0 and out0/q0 on CPU 1, out0/q1 on CPU 0
    host = FakeHost(irq_cpus={("out0", 1): {0}})
    findings = static_checks(config(extra="workers:\n  cpus: [1, 0]\n"), host)
    assert by_check(findings, "napi") == [
        "WARN out0/q1: worker CPU 0 also takes the queue's interrupts (NAPI); the worker and "
        "the NAPI poll take turns on one core; pin the worker elsewhere (workers.cpus) or "
        "move the IRQ (/proc/irq/N/smp_affinity_list)"]


def test_a_worker_whose_spread_cpu_takes_its_queues_irq_warns_with_adaptive_placement():
    # one queue each: by queue both on CPU 0; out0/q0 moves to CPU 1 while busy
    host = FakeHost(queues={"in0": 1, "out0": 1}, irq_cpus={("out0", 0): {1}})
    assert by_check(static_checks(config(), host), "napi") == [
        "WARN out0/q0: worker CPU 1 (where adaptive placement moves it while busy) also takes "
        "the queue's interrupts (NAPI); the worker and the NAPI poll take turns on one core; "
        "pin the worker elsewhere (workers.cpus) or move the IRQ "
        "(/proc/irq/N/smp_affinity_list)"]
    by_queue = config(extra="workers:\n  placement: by_queue\n")
    assert by_check(static_checks(by_queue, host), "napi") == [
        "OK workers: no worker on its queue's IRQ CPU (2 workers)"]


# --- live checks --------------------------------------------------------------

def sample(uptime, verdicts, workers=None, owned=(0,)):
    """A status answer: in0 with `owned` queues of 2; verdicts per queue as
    (redirected, passed, no_socket); workers: name -> overrides."""
    ws = []
    for q in owned:
        w = {"name": f"in0/q{q}", "netdev": "in0", "queue": q, "member": 0,
             "state": "running", "restarts": 0, "bad_descriptors": 0,
             "xsk": {"rx_dropped": 0, "rx_ring_full": 0, "rx_fill_ring_empty_descs": 0,
                     "rx_invalid_descs": 0, "tx_invalid_descs": 0, "tx_ring_empty_descs": 0}}
        for k, v in (workers or {}).get(w["name"], {}).items():
            if k in w["xsk"]:
                w["xsk"][k] = v
            else:
                w[k] = v
        ws.append(w)
    return {"pid": 42, "uptime_seconds": uptime, "workers": ws, "interfaces": [
        {"name": "in0", "queues": list(owned), "rx_queues": 2, "fallback": "pass",
         "xdp_mode": "native", "socket_mode": "copy",
         "xdp_packets": [{"queue": q, "redirected": r, "passed": p, "no_socket": n}
                         for q, (r, p, n) in enumerate(verdicts)]}]}


def test_traffic_on_an_unowned_queue_is_reported_as_mis_steered():
    before = sample(10.0, [(100, 0, 0), (0, 5, 0)])
    after = sample(12.0, [(300, 0, 0), (0, 2005, 0)])
    findings = live_checks(config(), before, after, 2.0, FakeHost())
    assert by_check(findings, "steering") == [
        "WARN in0/q1: mis-steered: traffic on in0 queue 1 (1,000 pkt/s), which xdpd does "
        "not own; the kernel gets it; steer it to queues 0 or add queue 1 to "
        "interfaces[0].queues"]
    assert exit_code(findings) == exitcodes.DOCTOR_WARNINGS
    # a driver with an RSS table and ntuple filters: the fix names both
    host = FakeHost(rss={"in0": [0, 1] * 64}, ntuple={"in0": 0})
    assert by_check(live_checks(config(), before, after, 2.0, host), "steering") == [
        "WARN in0/q1: mis-steered: traffic on in0 queue 1 (1,000 pkt/s), which xdpd does "
        "not own; the kernel gets it; steer it to queues 0 (ethtool -X in0 equal 1; or an "
        "ntuple rule: ethtool -N in0 flow-type ... action 0) or add queue 1 to "
        "interfaces[0].queues"]


def test_traffic_only_on_owned_queues_is_ok():
    before = sample(10.0, [(100, 0, 0), (0, 5, 0)])
    after = sample(12.0, [(5000, 0, 0), (0, 5, 0)])
    findings = live_checks(config(), before, after, 2.0)
    assert by_check(findings, "steering") == ["OK in0: no traffic on queues xdpd does not own, none on owned queues without a socket"]
    assert exit_code(findings) == exitcodes.OK


def test_an_owned_queue_without_a_socket_is_an_error():
    before = sample(10.0, [(100, 0, 0), (0, 0, 0)])
    after = sample(12.0, [(100, 0, 60), (0, 0, 0)], workers={"in0/q0": {"state": "fatal"}})
    findings = live_checks(config(), before, after, 2.0)
    assert by_check(findings, "steering") == [
        "ERROR in0/q0: traffic on an owned queue with no socket (30 pkt/s; worker fatal): "
        "fallback pass applies; see the worker finding and the xdpd log; xdpd restores the "
        "socket when the worker runs again"]
    assert by_check(findings, "workers") == [
        "ERROR in0/q0: worker given up (fatal) after repeated start failures; its queue gets "
        "the interface's fallback; see the xdpd log for the cause, fix it, restart xdpd"]
    assert exit_code(findings) == exitcodes.DOCTOR_ERRORS


def test_a_fanout_member_without_a_socket_sends_its_share_to_the_owner():
    before = sample(10.0, [(100, 0, 0), (0, 0, 0)])
    after = sample(12.0, [(900, 0, 0), (0, 0, 0)])
    after["workers"].append(dict(after["workers"][0], name="in0/q0.1", member=1,
                                 state="fatal"))
    after["workers"][0]["name"] = "in0/q0.0"
    after["interfaces"][0]["xdp_packets"][0]["fanout_to_owner"] = 400
    findings = live_checks(config(), before, after, 2.0)
    assert by_check(findings, "steering") == [
        "WARN in0/q0: fanout: 200 pkt/s of the queue's traffic goes to its owner because a "
        "member has no socket: in0/q0.1 (fatal); see the worker finding and the xdpd log; "
        "the member's share returns to it when it runs again"]


def test_socket_drops_starvation_and_bad_descriptors():
    before = sample(10.0, [(0, 0, 0), (0, 0, 0)])
    after = sample(12.0, [(0, 0, 0), (0, 0, 0)], workers={"in0/q0": {
        "rx_ring_full": 7, "rx_dropped": 3, "rx_fill_ring_empty_descs": 9,
        "bad_descriptors": 1}})
    findings = live_checks(config(), before, after, 2.0)
    assert by_check(findings, "redirect") == [
        "WARN in0/q0: RX ring full: the kernel dropped 7 packets in 2.0 s (XDP_STATISTICS "
        "rx_ring_full); the worker is not keeping up: give it a CPU of its own "
        "(workers.cpus), raise rings.rx, or spread the traffic over more queues",
        "WARN in0/q0: the socket dropped 3 packets in 2.0 s (XDP_STATISTICS rx_dropped: "
        "longer than a frame, or no free frame); see the mtu and fill_ring findings"]
    assert by_check(findings, "fill_ring") == [
        "WARN in0/q0: FILL ring ran empty 9 times in 2.0 s: packets arrived with no frame to "
        "put them in; raise umem.frames_per_worker and rings.fill, or give the worker a CPU "
        "of its own (workers.cpus)"]
    assert by_check(findings, "descriptors") == [
        "ERROR in0/q0: 0 descriptors the kernel refused, 1 xdpd refused, in 2.0 s: frames are "
        "being lost; a bug: report it with 'xdpd status --json' and the log"]


# --- the report and the command --------------------------------------------------

def test_diagnose_takes_two_samples_the_daemons_clock_apart():
    answers = iter([sample(10.0, [(0, 0, 0), (0, 0, 0)]),
                    sample(13.0, [(0, 0, 0), (0, 3000, 0)])])
    slept = []
    report = diagnose(config(), FakeHost(), lambda: next(answers), seconds=2.0,
                      sleep=slept.append)
    assert slept == [2.0]
    lines = report.lines()
    assert lines[0].startswith("WARN in0/q1: mis-steered: traffic on in0 queue 1 (1,000 pkt/s)")
    assert lines[-1] == "doctor: 0 errors, 1 warning, 19 ok; live: 3.0 s sample of xdpd pid 42"
    d = report.as_dict()
    assert d["worst"] == "warn" and d["findings"][0]["check"] == "xdp_mode"


def test_a_daemon_restarted_between_the_samples_cuts_the_live_checks_short():
    second = sample(1.0, [(0, 0, 0), (0, 0, 0)])
    second["pid"] = 43
    answers = iter([sample(10.0, [(0, 0, 0), (0, 0, 0)]), second])
    report = diagnose(config(), FakeHost(), lambda: next(answers), sleep=lambda s: None)
    assert report.lines() == [
        "WARN xdpd: restarted during the sample (pid 42 -> 43); run doctor again; if it "
        "keeps happening, see the xdpd log",
        "doctor: 0 errors, 1 warning, 17 ok; live checks cut short"]


def test_without_a_daemon_only_static_checks_run():
    def ask():
        raise ControlError("/run/x.sock: no such socket; is xdpd running?")
    report = diagnose(config(), FakeHost(), ask, sleep=pytest.fail)
    assert report.lines() == ["doctor: 0 errors, 0 warnings, 17 ok; live checks skipped: "
                              "/run/x.sock: no such socket; is xdpd running?"]


def test_the_command_gives_the_loaders_message_and_78(tmp_path, capsys):
    path = tmp_path / "xdpd.yaml"
    path.write_text("interfaces:\n  - name: in0\n    qeues: [0]\nforward: []\n")
    path.chmod(0o600)
    assert main(["doctor", "--config", str(path)]) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert "interfaces[0].qeues: unknown key; did you mean 'queues'?" in err
    assert "Traceback" not in err
    assert main(["doctor", "--config", str(tmp_path / "none.yaml")]) == exitcodes.CONFIG
    assert main(["doctor", "--config", str(path), "--seconds", "-1"]) == exitcodes.USAGE


def test_the_command_prints_json_and_exits_with_the_worst_level(tmp_path, capsys, monkeypatch):
    path = tmp_path / "xdpd.yaml"
    path.write_text("interfaces:\n  - name: nosuchdev0\nforward: []\n")
    path.chmod(0o600)
    code = main(["doctor", "--config", str(path), "--socket", str(tmp_path / "no.sock"),
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == exitcodes.DOCTOR_ERRORS
    assert out["worst"] == "error"
    assert out["findings"] == [{"check": "netdev", "level": "error", "subject": "nosuchdev0",
                                "finding": "netdev 'nosuchdev0' not found",
                                "fix": "see 'ip link show'; create it or remove it from "
                                       "interfaces"}]
    assert out["live"].startswith("live checks skipped: ")


def test_a_daemon_running_another_file_is_a_warning():
    st = {"config": {"path": "/etc/xdpd/other.yaml", "generation": 1}}
    assert [f.line() for f in check_same_file(config(), st)] == [
        "WARN xdpd: the running xdpd uses /etc/xdpd/other.yaml, the static checks read "
        "xdpd.yaml; xdpd doctor --config /etc/xdpd/other.yaml"]
    assert check_same_file(config(), {"config": {"path": "xdpd.yaml"}}) == []


def test_finding_line_without_a_fix():
    assert Finding("x", "ok", "in0", "fine").line() == "OK in0: fine"


def test_checksum_off_on_a_veth_names_the_peer_and_the_command():
    assert [f.finding for f in static_checks(config(), FakeHost()) if f.check == "checksum"] == [
        "partial TCP/UDP checksums completed (veth, checksum: auto); frames whose checksum "
        "verifies are left as they are"] * 2
    cfg = config()
    off = dataclasses.replace(cfg, interfaces=(
        dataclasses.replace(cfg.interfaces[0], checksum="off"), *cfg.interfaces[1:]))
    [f] = [f for f in static_checks(off, FakeHost()) if f.check == "checksum" and
           f.level != "ok"]
    assert (f.level, f.subject, f.finding, f.fix) == (
        "warn", "in0", "checksum: off on a veth: TCP and UDP from its peer in0-peer in netns "
        "lab with TX checksum offload on (the default) arrive with partial checksums and are "
        "forwarded so; their receivers drop them",
        "set checksum: auto, or turn the sender's offload off: ip netns exec lab ethtool -K "
        "in0-peer tx off")
    nic = FakeHost(drivers={"in0": "ice", "out0": "veth"})
    [f] = [f for f in static_checks(off, nic) if f.check == "checksum" and f.subject == "in0"]
    assert (f.level, f.finding) == ("ok", "a NIC: frames from a wire carry complete checksums "
                                          "(checksum: off)")


def test_the_workers_cpus_wake_up_latency_is_reported_with_what_xdpd_will_do():
    findings = static_checks(config(), FakeHost(wake_limits={1: 0}))
    assert by_check(findings, "wake") == [
        "OK CPU 0: workers in0/q0, out0/q0: idle states up to 'haltpoll idle' (1 us to leave, "
        "a halt into the hypervisor; driver haltpoll); capped at 0 us while they receive "
        "(no cap now)",
        "OK CPU 1: workers out0/q1: idle states up to 'haltpoll idle' (1 us to leave, a halt "
        "into the hypervisor; driver haltpoll); capped at 0 us while they receive (capped at "
        "0 us now)"]


def test_a_wake_up_cap_xdpd_cannot_write_is_a_warning_with_the_way_out():
    host = FakeHost(wake_limits={0: OSError(errno.ENOENT, "No such file or directory")},
                    wake_writable=False)
    lines = by_check(static_checks(config(), host), "wake")
    assert lines[0].startswith("WARN CPU 0: workers in0/q0, out0/q0: cannot read the CPU's "
                               "wake-up latency cap ([Errno 2] No such file or directory)")
    assert lines[1] == (
        "WARN CPU 1: workers out0/q1: the CPU's wake-up latency cap is not writable here; xdpd "
        "cannot hold it at 0 us while they receive; run xdpd as root with /sys mounted "
        "read-write, or set workers.cpu_wake_latency_us: null")


def test_with_the_cap_off_doctor_says_what_a_sleeping_worker_waits_for():
    lines = by_check(static_checks(config(extra="workers:\n  cpu_wake_latency_us: null\n"),
                                   FakeHost(idle_driver="intel_idle")), "wake", "CPU 1")
    assert lines == [
        "OK CPU 1: workers out0/q1: idle states up to 'haltpoll idle' (1 us to leave; driver "
        "intel_idle); workers.cpu_wake_latency_us: null leaves them, so a packet for a "
        "sleeping worker waits for the CPU to leave its idle state; set "
        "workers.cpu_wake_latency_us: 0 for the fastest wake-ups while traffic flows "
        "(docs/PERFORMANCE.md, \"Real clients\")"]
