"""Hosting (workers.share_process): the supervisor's side (control/hosting.py)
with the supervisor tests' fakes, and a worker's side (datapath/hosted.py)
with a control area of its own."""
import logging
import os
import signal
import threading
import time

import pytest
from test_supervisor import _run_dir_removed  # noqa: F401  (the same autouse clean-up)
from test_supervisor import CONFIG, FakeHost, _busy_snapshot, started

from xdpd.cli.status import format_status
from xdpd.control import hosting, placement
from xdpd.control.workers import WorkerState
from xdpd.datapath.hosted import SIGHOSTING, Ports
from xdpd.datapath.worker import GuestSpec, WorkerSpec

ONE_QUEUE = {"host": FakeHost(queues=1)}


def by_name(sup):
    return {w.name: w for w in sup.workers}


def test_the_first_worker_on_a_cpu_is_spawned_with_the_sockets_of_the_others_there():
    spec = WorkerSpec.from_json(WorkerSpec(
        id=0, netdev="in0", queue=0, cpu=0, xsk_fd=3, umem_fd=4, umem_size=0, control_fd=5,
        control_size=0, tables_fd=6, eventfds=(7,), rings=(1, 1, 1, 1), layout=(1, 1, 1, 1),
        batch_size=1, spin=False, spin_max_us=0, busy_poll=False, budget_us=1, parent_pid=1,
        direct_fds=(8,), guests=(GuestSpec(id=1, name="out0/q0", xsk_fd=9, direct_fds=(10, -1)),
                                 )).to_json())
    assert spec.guests == (GuestSpec(id=1, name="out0/q0", xsk_fd=9, direct_fds=(10, -1)),)
    assert spec.fds() == (3, 4, 5, 6, 7, 8, 9, 10)      # the guests' descriptors passed too
    sup, ops = started()            # 2 queues each on CPUs 0 and 1, by queue
    w = by_name(sup)
    for host, guest in (("in0/q0", "out0/q0"), ("in0/q1", "out0/q1")):
        g = w[guest]
        assert w[host].proc.spec["guests"] == [{
            "id": g.id, "name": guest, "xsk_fd": g.socket.fd,
            "direct_fds": [d.socket.fd for d in g.direct], "max_segs": 0}]
        assert g.proc.spec["guests"] == []
    sup.stop()


def test_guests_run_in_their_hosts_process_and_status_says_so():
    sup, ops = started()
    w = by_name(sup)
    ctl = ops.umem.control
    sup._turn()
    assert ctl.hosting(w["out0/q0"].id)[::2] == (w["in0/q0"].id, w["in0/q0"].id)
    assert ctl.hosting(w["out0/q1"].id)[::2] == (w["in0/q1"].id, w["in0/q1"].id)
    assert ctl.hosting(w["in0/q0"].id)[::2] == (None, None)
    # both processes of each pair were told
    assert sorted(ops.hosting_signals) == [("in0", 0), ("in0", 1), ("out0", 0), ("out0", 1)]
    status = sup.status()
    assert {x["name"]: x["hosted_by"] for x in status["workers"]} == {
        "in0/q0": None, "in0/q1": None, "out0/q0": "in0/q0", "out0/q1": "in0/q1"}
    assert "(port run by in0/q0)" in format_status(status)
    from xdpd.control.metrics import XdpdCollector
    served = {s.name: s for f in XdpdCollector(sup).collect() for s in f.samples}
    assert served["xdpd_workers_hosted"].value == 2
    ops.hosting_signals.clear()
    sup._turn()                     # nothing changed: nobody is signalled again
    assert ops.hosting_signals == []
    sup.stop()


@pytest.mark.parametrize("change", [
    "  share_process: false\n", "  placement: spread\n", "  busy_poll: true\n"])
def test_no_hosting_where_the_config_rules_it_out(change):
    sup, ops = started(CONFIG.replace("  cpus: [0, 1]\n", "  cpus: [0, 1]\n" + change))
    sup._turn()
    assert all(w.proc.spec["guests"] == [] for w in sup.workers)
    assert all(h is None for h in ops.umem.control.host)
    assert ops.hosting_signals == []
    sup.stop()


def test_no_hosting_with_fanout():
    sup, ops = started(CONFIG.replace("  - name: in0\n", "  - name: in0\n    fanout: 2\n"),
                       **ONE_QUEUE)
    w = by_name(sup)
    sup._turn()
    assert all(x.proc.spec["guests"] == [] for x in sup.workers if x.plan.fanout > 1)
    assert [x.name for x in sup.workers if x.proc.spec["guests"]] == []
    assert ops.umem.control.host[w["out0/q0"].id] is None
    sup.stop()


def test_spreading_gives_each_port_back_and_gathering_hosts_it_again(monkeypatch):
    monkeypatch.setattr(placement, "SPREAD_AFTER_S", 0.0)
    monkeypatch.setattr(placement, "GATHER_AFTER_S", 0.0)
    sup, ops = started(**ONE_QUEUE)
    in0, out0 = sup.workers
    ctl = ops.umem.control
    _busy_snapshot(sup, ops, 0, 0)
    assert ctl.hosting(out0.id)[::2] == (in0.id, in0.id)
    _busy_snapshot(sup, ops, 100, 100)          # busy: out0 spread to CPU 1
    assert out0.cpu == 1 and ctl.hosting(out0.id)[::2] == (None, out0.id)
    assert sup.status()["workers"][1]["hosted_by"] is None
    _busy_snapshot(sup, ops, 0, 0)
    _busy_snapshot(sup, ops, 0, 0)              # quiet: back on CPU 0, hosted
    assert out0.cpu == 0 and ctl.hosting(out0.id)[::2] == (in0.id, in0.id)
    sup.stop()


def _die(sup, w):
    w.proc.returncode = -9
    w.started_at -= 10                          # not a start-up failure
    sup.reap_workers()


def test_a_dead_hosts_guests_go_back_to_their_own_processes_until_its_standby_runs(caplog):
    caplog.set_level(logging.INFO)
    sup, ops = started(**ONE_QUEUE)
    in0, out0 = sup.workers
    ctl = ops.umem.control
    sup.replace_workers()                       # standbys, spawned with the guests too
    assert in0.standby.spec["guests"][0]["id"] == out0.id
    sup._turn()
    assert ctl.hosting(out0.id)[::2] == (in0.id, in0.id)
    ctl.stuck_runner = True                     # the host dies holding out0's port
    _die(sup, in0)
    # nobody runs out0's port: its own process takes it back
    assert ctl.hosting(out0.id)[::2] == (None, None)
    assert ("out0", 0) in ops.hosting_signals
    assert "out0/q0: its port goes back to its own process" in caplog.text
    ctl.stuck_runner = False
    sup.replace_workers()                       # in0's standby takes over
    assert in0.state is WorkerState.STARTING
    assert sup.hosting.host_for(out0, sup.workers) is None     # not before in0 runs
    sup._turn()                                 # it reports running
    assert in0.state is WorkerState.RUNNING and ctl.hosting(out0.id)[::2] == (in0.id, in0.id)
    sup.stop()


def test_a_dead_guest_is_hosted_by_nobody_and_its_host_is_told():
    sup, ops = started(**ONE_QUEUE)
    in0, out0 = sup.workers
    ctl = ops.umem.control
    sup._turn()
    ops.hosting_signals.clear()
    ctl.stuck_runner = True                     # the host still runs it when out0 dies
    _die(sup, out0)
    assert ctl.hosting(out0.id)[::2] == (None, in0.id)
    assert ops.hosting_signals == [("in0", 0)]  # to let it go; the replacement waits for it
    sup.stop()


def hosts_while_applying(sup, monkeypatch, new_config):
    """Each worker's wished host while a reload of new_config applies."""
    ctl, seen = sup.umem.control, {}
    monkeypatch.setattr(type(sup), "_apply", lambda self, plan, new: seen.update(
        {x.name: ctl.hosting(x.id)[0] for x in self.workers}))
    ok, _, error = sup.reload(text=new_config)
    assert ok, error
    return seen


def test_a_reload_that_removes_nothing_leaves_every_port_where_it_runs(monkeypatch):
    sup, ops = started()
    w = by_name(sup)
    sup._turn()
    hosted = {"out0/q0": w["in0/q0"].id, "out0/q1": w["in0/q1"].id}
    assert {n: ops.umem.control.hosting(w[n].id)[0] for n in hosted} == hosted
    ops.hosting_signals.clear()
    seen = hosts_while_applying(sup, monkeypatch,
                                CONFIG.replace("02:00:00:00:00:04", "02:00:00:00:00:05"))
    assert seen == {**hosted, "in0/q0": None, "in0/q1": None}
    assert ops.hosting_signals == []            # no port changed process
    sup._turn()
    assert sup.hosting.hosted_by(w["out0/q0"]) is w["in0/q0"]
    sup.stop()


def test_a_reload_gives_back_what_it_removes_and_what_their_processes_host(monkeypatch):
    sup, ops = started()
    w = by_name(sup)
    sup._turn()
    # in0/q0, out0/q0's host, goes: out0/q0 runs in its own process while the
    # reload applies; in0/q1 goes on hosting out0/q1
    seen = hosts_while_applying(sup, monkeypatch, CONFIG.replace(
        "  - name: in0\n", "  - name: in0\n    queues: [1]\n"))
    assert seen == {"in0/q0": None, "out0/q0": None, "in0/q1": None,
                    "out0/q1": w["in0/q1"].id}
    sup.stop()


def test_a_host_that_does_not_let_go_delays_a_reload_only_so_long(monkeypatch, caplog):
    monkeypatch.setattr(hosting, "RELEASE_TIMEOUT_S", 0.05)
    sup, ops = started()
    sup._turn()
    ops.umem.control.stuck_runner = True
    ok, _, error = sup.reload(text=CONFIG.replace("  - name: in0\n",
                                                  "  - name: in0\n    queues: [1]\n"))
    assert ok, error
    assert "hosting: out0/q0 not back with their own processes within" in caplog.text
    sup.stop()


def test_removing_a_guest_tells_its_host_and_replaces_its_standby():
    sup, ops = started(**ONE_QUEUE)
    in0, out0 = sup.workers
    sup.replace_workers()
    sup._turn()
    standby = in0.standby
    ops.hosting_signals.clear()
    one = CONFIG.replace("  - name: out0\n", "").replace(
        "  - from: in0\n    to: out0\n    set_dst_mac: \"02:00:00:00:00:04\"\n", "").replace(
        "  - from: out0\n    action: drop\n", "  - from: in0\n    action: drop\n")
    ok, _, error = sup.reload(text=one)
    assert ok, error
    assert ("in0", 0) in ops.hosting_signals and in0.standby is None
    assert standby.returncode is not None
    assert sup.hosting.spawned[in0.id] == frozenset()
    sup.stop()


# -- a worker's side ------------------------------------------------------------

class Control:
    """The two fields of each slot, as fastpath.h has them, and the inodes."""

    def __init__(self, n):
        self.host = [None] * n
        self.asked = [None] * n
        self.runner = [None] * n
        self.inos = [0] * n

    def hosting(self, i):
        return self.host[i], self.asked[i], self.runner[i]

    def ask(self, i, who):
        self.asked[i] = who

    def claim(self, i, expected, new):
        if self.runner[i] != expected:
            return False
        self.runner[i] = new
        return True

    def socket_ino(self, i):
        return self.inos[i]


class Port:
    def __init__(self, slot):
        self.slot, self.closed, self.stopped = slot, False, False
        self.fds = slot.direct_fds

    def direct_fds(self):
        return self.fds

    def close(self):
        self.closed = True

    def stop(self):
        self.stopped = True


@pytest.fixture
def pipes():
    """Pipes whose ends stand for descriptors; Ports' wake-up pipe is one."""
    made = []

    def pipe():
        r, w = os.pipe2(os.O_NONBLOCK)
        made.extend((r, w))
        return r, w
    yield pipe
    signal.set_wakeup_fd(-1)
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


def with_guest(pipes, **guest):
    """A control area of two slots, and slot 0's Ports able to host slot 1
    (whose socket is a pipe's end, named in the tables area by its inode)."""
    ctl = Control(2)
    sock = pipes()[0]
    ctl.inos[1] = os.fstat(sock).st_ino
    g = GuestSpec(id=1, name="out0/q0", xsk_fd=sock, **guest)
    return ctl, ports_for(0, [g], ctl, pipes), sock


def ports_for(slot, guests, ctl, pipe):
    spec = WorkerSpec(id=slot, netdev="in0", queue=0, cpu=0, xsk_fd=-1, umem_fd=-1,
                      umem_size=0, control_fd=-1, control_size=0, tables_fd=-1, eventfds=(),
                      rings=(1, 1, 1, 1), layout=(1, 1, 1, 1), batch_size=1, spin=False,
                      spin_max_us=0, busy_poll=False, budget_us=1, parent_pid=1,
                      guests=tuple(guests))
    wake = pipe()
    return Ports(spec, ctl, Port, wake)


def test_a_port_changes_process_only_once_its_runner_let_go(pipes):
    ctl, host, _ = with_guest(pipes)
    guest = ports_for(1, [], ctl, pipes)
    assert not host.settle() and not guest.settle()
    assert host.own.slot.id == 0 and guest.own.slot.id == 1 and ctl.runner == [0, 1]
    ctl.host[1] = 0                             # the supervisor's wish
    own = guest.own
    assert guest.settle() and guest.own is own  # it runs its port until the host is ready
    assert host.settle()                        # ready: it asks, the guest still runs it
    assert host.running() == () and ctl.asked[1] == 0
    assert not guest.settle() and guest.own is None and own.closed and ctl.runner[1] is None
    assert not host.settle() and [p.slot.id for p in host.running()] == [1]
    assert ctl.runner == [0, 0]
    ctl.host[1] = None                          # back
    assert guest.settle()                       # the host has not let go yet
    hosted = host.running()[0]
    assert not host.settle() and hosted.closed and host.running() == ()
    assert not guest.settle() and guest.own.slot.id == 1 and ctl.runner == [0, 1]
    assert ctl.asked[1] is None                 # the next wish starts unasked
    host.close()
    guest.close()
    assert ctl.runner == [0, 1] and guest.own is None


def test_a_direct_socket_closed_for_good_is_not_given_to_the_next_port(pipes):
    """A Port closes a direct socket whose queue was removed; a later Port of
    that slot in the same process gets -1 there, not the closed number."""
    ctl, host, _ = with_guest(pipes, direct_fds=(pipes()[0],))
    host.settle()
    ctl.host[1] = 0
    host.settle()
    host.running()[0].fds = (-1,)               # retired while it ran
    ctl.host[1] = None
    host.settle()
    ctl.runner[1], ctl.host[1] = None, 0        # hosted again
    host.settle()
    assert host.running()[0].slot.direct_fds == (-1,)


def test_leaving_gives_the_guests_ports_back_and_stops_only_its_own(pipes):
    ctl, host, _ = with_guest(pipes)
    ctl.runner[1], ctl.host[1] = None, 0
    host.settle()
    own, hosted = host.own, host.running()[0]
    host.close()
    assert own.stopped and own.closed and hosted.closed and not hosted.stopped
    assert ctl.runner == [0, None]


def test_a_guest_slot_with_another_socket_is_forgotten_and_its_descriptors_closed(pipes):
    other = pipes()[0]
    ctl, host, sock = with_guest(pipes, direct_fds=(other,))
    host.settle()
    ctl.inos[1] = 0                             # removed by a reload
    ctl.host[1] = 0                             # and even if asked: never hosted again
    assert not host.settle() and host.guests == {} and host.running() == ()
    for fd in (sock, other):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_port_that_cannot_be_opened_stays_with_its_own_process(pipes, caplog):
    ctl, spec_ports, _ = with_guest(pipes)

    def opener(slot):
        if slot.id == 1:
            raise OSError(12, "Cannot allocate memory")
        return Port(slot)
    spec_ports.opener = opener
    ctl.host[1] = 0
    assert not spec_ports.settle()
    assert spec_ports.running() == () and ctl.runner[1] is None and spec_ports.guests == {}
    assert "cannot run out0/q0's port" in caplog.text


def test_a_parked_wait_ends_at_a_signal(pipes):
    old = signal.signal(SIGHOSTING, lambda *a: None)
    try:
        ports = ports_for(0, [], Control(1), pipes)
        timer = threading.Timer(0.05, os.kill, (os.getpid(), SIGHOSTING))
        started_at = time.monotonic()
        timer.start()
        ports.wait(30.0)
        timer.join()
        assert time.monotonic() - started_at < 20   # the signal, not the timeout
        ports.wait(0)                               # the pipe was emptied
    finally:
        signal.signal(SIGHOSTING, old)
