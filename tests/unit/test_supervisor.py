"""The supervisor's ordering and worker lifecycle, against a fake OS."""
import errno
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from test_steering import FakeNic
from test_wake import FakeCpus

from xdpd import exitcodes
from xdpd.cli.status import format_status
from xdpd.config.schema import parse_config
from xdpd.control import placement
from xdpd.control import record as run_record
from xdpd.control.ops import SetupError
from xdpd.control.snapshot import worker_stats
from xdpd.control.supervisor import BACKOFF_S, Supervisor
from xdpd.control.workers import WorkerState
from xdpd.datapath import _fastpath
from xdpd.datapath.hosted import SIGHOSTING
from xdpd.datapath.umem import UmemGeometry
from xdpd.kernel.ethtool import Ethtool
from xdpd.kernel.xsk import XskError

CONFIG = """
interfaces:
  - name: in0
  - name: out0
forward:
  - from: in0
    to: out0
    set_dst_mac: "02:00:00:00:00:04"
  - from: out0
    action: drop
workers:
  cpus: [0, 1]
umem:
  frames_per_worker: 512
metrics:
  listen: null
"""
# the control socket, and the record of attached programs beside it, in a
# directory of this test run's own
RUN_DIR = os.path.join(tempfile.gettempdir(), f"xdpd-unit-{os.getpid()}")
CONFIG += f'control:\n  socket: "{RUN_DIR}/xdpd.sock"\n'
RECORD = os.path.join(RUN_DIR, "xdpd.attached.json")


@pytest.fixture(autouse=True)
def _run_dir_removed():
    yield
    shutil.rmtree(RUN_DIR, ignore_errors=True)


class FakeHost:
    def __init__(self, queues=2, irq_cpus=None):
        self.queues = queues
        self.irq_cpus = irq_cpus or {}      # (netdev, queue) -> CPUs

    def netdev_exists(self, name):
        return True

    def ifindex(self, name):
        return {"in0": 10, "out0": 11}[name]

    mtus = {}

    def mtu(self, name):
        return self.mtus.get(name, 1500)

    def link_kind(self, name):
        return "veth"

    def link_peer(self, name):
        from xdpd.kernel.netdev import LinkPeer
        return LinkPeer(20, name.replace("0", "-peer"), "peerns")

    def rx_queue_count(self, name):
        return self.queues

    def online_cpus(self):
        return frozenset({0, 1})

    def queue_irq_cpus(self, name, queue):
        return frozenset(self.irq_cpus.get((name, queue), ()))


class FakeProgram:
    ids = itertools.count(500)

    def __init__(self, journal, netdev):
        self.journal, self.netdev = journal, netdev
        self.prog_id = next(self.ids)
        self.prog_tag = f"{self.prog_id:016x}"

    def set_queue(self, q, owned, fallback="pass", fanout=1, spread="flow_hash"):
        extra = (fanout, spread) if fanout != 1 else ()
        self.journal.append(("set_queue", self.netdev, q, owned, fallback, *extra))

    def set_pass_rules(self, matches):
        self.journal.append(("set_pass_rules", self.netdev,
                             tuple(m.describe() for m in matches)))

    def attach(self, ifindex, ifname, mode):
        self.journal.append(("attach", ifname, mode))
        return "native"

    def set_socket(self, q, fd, member=0):
        self.journal.append(("set_socket", self.netdev, q, *((member,) if member else ())))

    def clear_socket(self, q, member=0):
        self.journal.append(("clear_socket", self.netdev, q, *((member,) if member else ())))

    def queue_stats(self, q):
        return {"redirected": 0, "passed": 0, "no_socket": 0, "pass_rule": 0,
                "fanout_to_owner": 0}

    def close(self):
        self.journal.append(("detach", self.netdev))


class FakeSocket:
    def __init__(self, ops, netdev, ifindex, queue):
        self.ops, self.netdev, self.queue = ops, netdev, queue
        self.fd = next(ops.fds)
        self.ino = 7_000_000 + self.fd     # a socket's inode: one per socket
        self.closed = False

    def register_umem(self, addr, length, frame_size):
        self.ops.journal.append(("register_umem", self.netdev, self.queue))

    def set_rings(self, sizes, fill_completion=True):
        if not fill_completion:     # a fanout member: its owner's FILL and COMPLETION
            self.ops.journal.append(("rings_without_fill", self.netdev, self.queue))

    def set_tx_budget(self, budget):
        self.ops.journal.append(("tx_budget", self.netdev, self.queue, budget))
        return True

    def set_tx_ring(self, size):        # a direct socket: TX only
        self.ops.journal.append(("tx_only", self.netdev, self.queue))

    def set_busy_poll(self, usecs, budget):
        self.ops.journal.append(("busy_poll", self.netdev, self.queue, usecs, budget))

    def bind(self, *, zero_copy, shared_with=None, multi_buffer=False):
        if zero_copy and not self.ops.zero_copy_ok:
            raise XskError(errno.EOPNOTSUPP, f"bind AF_XDP socket to {self.netdev}/q{self.queue}")
        if self.ops.busy_binds:                 # a killed xdpd's socket not yet released
            self.ops.busy_binds -= 1
            raise XskError(errno.EBUSY, f"bind AF_XDP socket to {self.netdev}/q{self.queue}")
        if multi_buffer and shared_with is None:
            self.ops.journal.append(("multi_buffer", self.netdev, self.queue))
        self.ops.journal.append(("bind", self.netdev, self.queue, zero_copy,
                                 None if shared_with is None else shared_with.fd))

    def statistics(self):
        return dict(self.ops.xsk_stats.get((self.netdev, self.queue), {}))

    def close(self):
        self.closed = True


class FakeControl:
    tables_fd = 98

    def __init__(self, n):
        self.state = [_fastpath.STATE_NONE] * n
        self.pid = [0] * n
        self.places = {}            # worker id -> what set_worker() said
        self.rx_packets = [0] * n   # what a test says a worker received
        self.busy_ns = [0] * n      # and how long it was busy forwarding
        self.host = [None] * n      # hosting: who should run each slot's port...
        self.runner = [None] * n    # ...and who runs it (as the workers would claim it)
        self.nworkers = n
        self.stuck_runner = False   # a host that never lets go of a port
        self.socket_inos = {}       # worker id -> its socket's inode, as set_worker() said

    def set_worker(self, i, netdev, queue, ifindex, lane=None, owner=None, members=(),
                   direct=(), xsk_ino=0):
        self.places[i] = {"lane": queue if lane is None else lane,
                          "owner": i if owner is None else owner, "members": list(members),
                          "direct": list(direct)}
        self.socket_inos[i] = xsk_ino

    def hosting(self, i):
        return self.host[i], None, self.runner[i]

    def ask(self, i, who):
        pass

    def set_host(self, i, host):
        """The workers' processes settle at once (hosted.py), unless a test
        holds the host's (stuck_runner)."""
        self.host[i] = host
        if not self.stuck_runner:
            self.runner[i] = i if host is None else host

    def claim(self, i, expected, new):
        if self.runner[i] != expected:
            return False
        self.runner[i] = new
        return True

    def write_table(self, table, complete_checksums=(), direct_ok=None):
        self.table = table
        self.complete_checksums = sorted(complete_checksums)
        self.direct_ok = dict(direct_ok or {})
        return 1

    def worker_stats(self, i):
        return {"rx_packets": self.rx_packets[i], "tx_packets": 0, "rx_bytes": 0, "tx_bytes": 0,
                "drops": {reason: 0 for reason in _fastpath.DROP_REASONS},
                "handoff_out": 0, "handoff_in": 0, "tx_kicks": 0, "fill_kicks": 0,
                "sleeps": 0, "loops": 0, "busy_loops": 0, "busy_polls": 0, "bad_descs": 0,
                "csum_completed": 0, "rx_frags": 0, "tx_descs": 0, "busy_ns": self.busy_ns[i],
                "direct_packets": (0,) * 8, "direct_bytes": (0,) * 8}

    def ring_use(self, i):
        return {"rx": 0, "tx": 0, "fill": 0, "completion": 0}

    def rule_stats(self, i):
        return (0,) * 16, (0,) * 16

    def worker_liveness(self, i):
        return (0, self.pid[i], self.state[i], 1)

    def mark_stopped(self, i):
        self.state[i] = _fastpath.STATE_STOPPED

    def usage(self, i):
        """What a running worker reports of itself (worker.Usage)."""
        return {"pid": self.pid[i], "user_ns": 0, "system_ns": 0,
                "rss_bytes": 30 << 20, "uss_bytes": 12 << 20}

    def reset_worker(self, i):
        self.state[i] = _fastpath.STATE_NONE

    def close(self):
        pass


class Anything:
    fd = 99
    addr = 4096
    size = 1 << 20


class FakeUmem:
    def __init__(self, geometry: UmemGeometry):
        self.geometry = geometry
        self.capacity = geometry.frames
        self.umem = self.ctl_region = Anything()
        self.backing = "normal pages"
        self.control = FakeControl(geometry.nworkers)
        self.closed = False

    def frame_locations(self):
        return {"free": self.capacity, "rx": 0, "tx": 0, "handoff": 0}

    def close(self):
        self.closed = True


class FakeProc:
    pids = itertools.count(1000)

    def __init__(self, ops, spec):
        self.ops, self.spec = ops, spec
        self.pid = next(self.pids)
        self.returncode = None

    def poll(self):
        return self.returncode

    def send_signal(self, sig):
        if sig == SIGHOSTING:       # a worker's loop settles its ports (hosted.py)
            self.ops.hosting_signals.append((self.spec["netdev"], self.spec["queue"]))
            return
        self.ops.journal.append(("signal", self.spec["netdev"], self.spec["queue"], int(sig)))
        self.returncode = -int(sig)

    def wait(self, timeout=None):
        return self.returncode

    def kill(self):
        self.returncode = -9


class FakeOps:
    def __init__(self, zero_copy_ok=False, start_ok=True, host=None):
        self.host = host or FakeHost()
        self.journal = []
        self.fds = itertools.count(100)
        self.zero_copy_ok = zero_copy_ok
        self.xsk_stats: dict[tuple[str, int], dict] = {}    # XDP_STATISTICS by socket
        self.start_ok = start_ok
        self.procs = []
        self.sockets = []
        self.programs = {}
        self.busy_binds = 0
        self.xdp = {}               # ifindex -> {"native": prog id, "generic": prog id}
        self.nic = FakeNic(driver_picks=True)   # every netdev's ethtool answers
        self.lineage = {}           # pid -> [pid, parent, ...] for peer checks
        self.prog_infos = {}        # prog id -> (name, tag), default: ours
        self.cpus = FakeCpus()      # the CPUs' wake-up latency caps
        self.pin_refused = False    # sched_setaffinity() answers EPERM (no CAP_SYS_NICE)
        self.hosting_signals = []   # (netdev, queue) of each SIGHOSTING sent

    def ethtool(self):
        return Ethtool(self.nic)

    def cpu_access(self):
        return self.cpus

    def query_xdp(self, ifindex):
        ids = self.xdp.get(ifindex, {})
        mode = next((m for m in ("native", "generic") if ids.get(m)), None)
        return {"prog_id": ids.get(mode, 0), "mode": mode, "drv_prog_id": ids.get("native", 0),
                "skb_prog_id": ids.get("generic", 0), "hw_prog_id": 0}

    def prog_info(self, prog_id):
        return self.prog_infos.get(prog_id, ("rr_redirect", f"{prog_id:016x}"))

    def detach_xdp(self, ifindex, mode, prog_id):
        self.journal.append(("detach_xdp", ifindex, mode, prog_id))
        if self.xdp.get(ifindex, {}).get(mode) != prog_id:
            raise OSError(errno.EEXIST, "not that program")
        del self.xdp[ifindex][mode]

    def load_program(self, netdev):
        self.programs[netdev] = FakeProgram(self.journal, netdev)
        return self.programs[netdev]

    def create_umem(self, geometry, hugepages):
        self.hugepages = hugepages
        self.umem = FakeUmem(geometry)
        return self.umem

    def create_socket(self, netdev, ifindex, queue):
        sock = FakeSocket(self, netdev, ifindex, queue)
        self.sockets.append(sock)
        return sock

    def eventfd(self):
        return next(self.fds)

    def close_fd(self, fd):
        pass

    def spawn(self, args, stdin_text, pass_fds, standby=False):
        spec = json.loads(stdin_text.splitlines()[0])
        self.journal.append(("standby" if standby else "spawn", spec["netdev"], spec["queue"],
                             spec["xsk_fd"]))
        proc = FakeProc(self, spec)
        self.procs.append(proc)
        if not standby:
            self._run(proc)
        return proc

    def process_lineage(self, pid):
        return self.lineage.get(pid, [pid, 1])

    def standby_ready(self, proc):
        return getattr(proc, "ready", True)

    def release(self, proc):
        pass

    def pin(self, pid, cpu):
        self.journal.append(("pin", pid, cpu))
        if self.pin_refused:
            raise PermissionError(errno.EPERM, "Operation not permitted")

    def go(self, proc):
        self.journal.append(("go", proc.spec["netdev"], proc.spec["queue"]))
        self._run(proc)
        return True

    def _run(self, proc):
        """What a worker does once it runs: reports RUNNING, or dies at start."""
        if self.start_ok:
            self.umem.control.state[proc.spec["id"]] = _fastpath.STATE_RUNNING
            self.umem.control.pid[proc.spec["id"]] = proc.pid
        else:
            proc.returncode = 3


def started(config=CONFIG, **kw):
    ops = FakeOps(**kw)
    sup = Supervisor(parse_config(config, "xdpd.yaml"), ops)
    sup.start()
    return sup, ops


def kinds(journal):
    return [e[0] for e in journal]


def test_start_redirects_only_after_every_worker_runs():
    sup, ops = started()
    k = kinds(ops.journal)
    assert k.count("spawn") == 4 and k.count("set_socket") == 4
    assert max(i for i, e in enumerate(k) if e in ("attach", "spawn")) < k.index("set_socket")
    assert all(w.state == WorkerState.RUNNING for w in sup.workers)
    assert [w.plan.cpu for w in sup.workers] == [0, 1, 0, 1]
    sup.stop()


def test_first_socket_registers_the_umem_and_the_rest_share_it():
    sup, ops = started()
    # the last round of sockets (auto tried zero-copy first)
    last = max(i for i, e in enumerate(ops.journal) if e[0] == "register_umem")
    assert ops.journal[last] == ("register_umem", "in0", 0)
    binds = [e for e in ops.journal[last:] if e[0] == "bind"]
    assert len(binds) == 8
    first_fd = sup.workers[0].socket.fd
    assert binds[0] == ("bind", "in0", 0, False, None)
    assert all(b[4] == first_fd for b in binds[1:4])
    # then each worker's direct socket on the other interface's queue its
    # lane picks, bound to that queue's socket (sharing its rings)
    fd = {w.name: w.socket.fd for w in sup.workers}
    assert binds[4:] == [("bind", "out0", 0, False, fd["out0/q0"]),
                         ("bind", "out0", 1, False, fd["out0/q1"]),
                         ("bind", "in0", 0, False, fd["in0/q0"]),
                         ("bind", "in0", 1, False, fd["in0/q1"])]
    assert [e[1:] for e in ops.journal[last:] if e[0] == "tx_only"] == \
        [("out0", 0), ("out0", 1), ("in0", 0), ("in0", 1)]
    sup.stop()


def test_auto_zero_copy_falls_back_to_copy_for_all_sockets():
    sup, ops = started(zero_copy_ok=False)
    assert sup.zero_copy is False
    assert ops.sockets[0].closed       # the failed zero-copy attempt was closed
    sup.stop()


def test_zero_copy_on_where_unsupported_fails_and_undoes_everything():
    ops = FakeOps(zero_copy_ok=False)
    sup = Supervisor(parse_config(CONFIG.replace("  - name: out0\n",
                                                 "  - name: out0\n    zero_copy: on\n")
                                  .replace("  - name: in0\n", "  - name: in0\n    zero_copy: on\n"),
                                  "xdpd.yaml"), ops)
    with pytest.raises(SetupError, match="bind AF_XDP socket to in0/q0 failed: EOPNOTSUPP"):
        sup.start()
    assert sorted(e for e in ops.journal if e[0] == "detach") == [("detach", "in0"),
                                                                  ("detach", "out0")]
    assert ops.umem.closed and all(s.closed for s in ops.sockets)


def test_mixed_zero_copy_settings_are_a_config_error():
    ops = FakeOps()
    cfg = CONFIG.replace("  - name: in0\n", "  - name: in0\n    zero_copy: on\n") \
                .replace("  - name: out0\n", "  - name: out0\n    zero_copy: off\n")
    with pytest.raises(SetupError, match="mix zero_copy: on and off"):
        Supervisor(parse_config(cfg, "xdpd.yaml"), ops).start()


def test_stop_stops_redirecting_before_stopping_workers_then_detaches():
    sup, ops = started()
    ops.journal.clear()
    sup.stop()
    k = kinds(ops.journal)
    assert k == ["clear_socket"] * 4 + ["signal"] * 4 + ["detach"] * 2
    assert ops.umem.closed and all(s.closed for s in ops.sockets)


def test_a_worker_that_dies_at_start_fails_the_start_cleanly():
    ops = FakeOps(start_ok=False)
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    with pytest.raises(SetupError, match="worker in0/q0 exited with status 3 during start-up"):
        sup.start()
    assert "set_socket" not in kinds(ops.journal)
    assert ("detach", "in0") in ops.journal and ops.umem.closed


def test_dead_worker_is_replaced_on_the_same_socket():
    sup, ops = started()
    w = sup.workers[1]
    fd = w.socket.fd
    w.proc.returncode = -9                      # killed
    sup.reap_workers()
    assert w.state == WorkerState.BACKOFF
    w.next_start = 0                            # backoff over
    ops.journal.clear()
    sup.replace_workers()
    # no standby yet: a fresh process (the others get their standbys)
    assert [e for e in ops.journal if e[0] != "standby"] == [("spawn", "in0", 1, fd)]
    assert w.restarts == 1 and w.state == WorkerState.STARTING
    sup.replace_workers()                       # it reports RUNNING in shared memory
    assert w.state == WorkerState.RUNNING
    sup.stop()


def test_a_worker_that_ran_is_replaced_at_once_by_its_standby():
    sup, ops = started()
    sup.replace_workers()                       # a standby per running worker
    assert [e for e in ops.journal if e[0] == "standby"] == [
        ("standby", w.plan.netdev, w.plan.queue, w.socket.fd) for w in sup.workers]
    w = sup.workers[1]
    standby = w.standby
    w.started_at -= 10                          # it ran: not a start-up failure
    w.proc.returncode = -9
    sup.reap_workers()
    assert w.state == WorkerState.BACKOFF and w.next_start <= time.monotonic()
    ops.journal.clear()
    sup.replace_workers()
    assert ops.journal == [("go", "in0", 1)]    # no new interpreter, same socket
    assert w.proc is standby and w.standby is None and w.restarts == 1
    sup.replace_workers()                       # RUNNING
    sup.replace_workers()                       # and a new standby behind it
    assert w.state == WorkerState.RUNNING
    assert ops.journal[-1] == ("standby", "in0", 1, w.socket.fd)
    standbys = [x.standby for x in sup.workers]
    sup.stop()
    assert all(p.returncode is not None for p in standbys)   # none outlives stop


def test_a_standby_still_starting_still_takes_over_and_the_log_says_so(caplog):
    sup, ops = started()
    sup.replace_workers()
    w = sup.workers[0]
    standby = w.standby
    standby.ready = False                       # its interpreter still starting
    w.started_at -= 10
    w.proc.returncode = -9
    sup.reap_workers()
    with caplog.at_level("INFO"):
        sup.replace_workers()
    assert w.proc is standby                    # quicker than a fresh interpreter
    assert "still starting: a delay" in caplog.text
    sup.stop()


def test_the_control_socket_refuses_non_root_workers_and_their_children():
    from xdpd.control.server import Peer
    sup, ops = started()
    sup.replace_workers()                       # standbys too
    w = sup.workers[0]
    assert sup.authorize_peer(Peer(4242, 0, 0), "reload") is None      # root's shell
    assert "not root" in sup.authorize_peer(Peer(4242, 1000, 1000), "status")
    assert "is an xdpd worker" in sup.authorize_peer(Peer(w.proc.pid, 0, 0), "reload")
    assert "is an xdpd worker" in sup.authorize_peer(Peer(w.standby.pid, 0, 0), "status")
    ops.lineage[777] = [777, w.proc.pid, 1]     # a process a worker forked
    assert "is an xdpd worker or its child" in sup.authorize_peer(Peer(777, 0, 0), "reload")
    ops.lineage[778] = None                     # hidden (hidepid=): judged by its uid
    assert sup.authorize_peer(Peer(778, 0, 0), "status") is None
    ops.lineage[w.proc.pid] = None              # a worker is known by its pid anyway
    assert "is an xdpd worker" in sup.authorize_peer(Peer(w.proc.pid, 0, 0), "status")
    sup.stop()


def test_a_spawn_the_os_refuses_is_counted_and_retried_not_fatal(caplog):
    sup, ops = started()
    sup.replace_workers()
    w = sup.workers[0]
    w.standby.returncode = 1                    # no standby: a fresh spawn is needed
    sup.reap_workers()
    w.started_at -= 10
    w.proc.returncode = -9
    sup.reap_workers()
    real = ops.spawn

    def refused(*a, **kw):
        raise OSError(errno.EMFILE, "Too many open files")
    ops.spawn = refused
    with caplog.at_level("WARNING"):
        sup.replace_workers()                   # no exception out of the loop
    assert {k: v for k, v in sup.internal_errors.items() if v} == {"spawn": 1}
    assert w.state == WorkerState.BACKOFF
    assert w.restarts == 0 and w.next_start > time.monotonic()
    assert "spawn failed: EMFILE: Too many open files" in caplog.text
    ops.spawn = real
    w.next_start = 0
    sup.replace_workers()
    assert w.state == WorkerState.STARTING and w.restarts == 1
    sup.stop()


def test_a_status_group_may_ask_status_and_nothing_else():
    from xdpd.control.server import Peer
    sup, ops = started()
    sup._status_gid = 4321
    assert sup.authorize_peer(Peer(4242, 1000, 4321), "status") is None
    assert sup.authorize_peer(Peer(4242, 1000, 4321), "reload") == (
        "permission denied: members of control.status_group may ask only status")
    assert "not root" in sup.authorize_peer(Peer(4242, 1000, 1000), "status")
    sup._status_gid = None                      # without the key: root alone
    assert "not root" in sup.authorize_peer(Peer(4242, 1000, 4321), "status")
    sup.stop()


def test_a_death_before_the_worker_reported_running_backs_off():
    sup, ops = started()
    w = sup.workers[0]
    w.started_at -= 10
    w.state = WorkerState.STARTING
    ops.umem.control.pid[w.id] = 1              # RUNNING in shared memory, but a predecessor's
    w.proc.returncode = 1
    sup.reap_workers()
    assert w.quick_deaths == 1 and w.next_start - time.monotonic() > BACKOFF_S[0] / 2
    sup.stop()


def test_a_standby_that_dies_is_replaced_after_a_pause():
    sup, ops = started()
    sup.replace_workers()
    w = sup.workers[0]
    w.standby.returncode = 1
    sup.reap_workers()
    assert w.standby is None and w.state == WorkerState.RUNNING
    ops.journal.clear()
    sup.replace_workers()
    assert not [e for e in ops.journal if e[0] == "standby"]   # not at once
    w.standby_after = 0
    sup.replace_workers()
    assert ops.journal == [("standby", "in0", 0, w.socket.fd)]
    sup.stop()


def die_at_start_until_given_up(sup, w):
    """w dies right after each start until the supervisor gives up on it."""
    for _ in range(len(BACKOFF_S) + 1):
        w.proc.returncode = 1
        sup.reap_workers()
        if w.state == WorkerState.FATAL:
            break
        w.next_start = 0
        sup.replace_workers()


def test_worker_that_keeps_dying_at_start_is_given_up():
    sup, ops = started()
    w = sup.workers[2]
    die_at_start_until_given_up(sup, w)
    assert w.state == WorkerState.FATAL
    assert w.restarts == len(BACKOFF_S)
    sup.stop()


def test_busy_poll_is_set_on_every_socket_after_bind():
    config = CONFIG.replace("  cpus: [0, 1]", "  cpus: [0, 1]\n  busy_poll: true\n"
                            "  busy_poll_usecs: 50\n  busy_poll_budget: 16")
    sup, ops = started(config)
    polled = [e[1:] for e in ops.journal if e[0] == "busy_poll"]
    assert polled == [("in0", 0, 50, 16), ("in0", 1, 50, 16), ("out0", 0, 50, 16),
                      ("out0", 1, 50, 16)]
    # after its bind, never before
    first_bind = kinds(ops.journal).index("bind")
    assert kinds(ops.journal).index("busy_poll") > first_bind
    sup.stop()


def test_busy_poll_off_by_default_and_hugepages_setting_reaches_the_umem():
    sup, ops = started()
    assert "busy_poll" not in kinds(ops.journal)
    assert ops.hugepages == "auto"
    sup.stop()


def jumbo(mtus: dict, umem: str = "", config: str = CONFIG, **ops_kw):
    """A supervisor (not started) on a host with these MTUs; umem: a line
    added under `umem:` (e.g. "multi_buffer: 'off'")."""
    host = FakeHost()
    host.mtus = mtus
    if umem:
        config = config.replace("  frames_per_worker: 512",
                                f"  frames_per_worker: 512\n  {umem}")
    ops = FakeOps(host=host, **ops_kw)
    return Supervisor(parse_config(config, "xdpd.yaml"), ops), ops, host


def test_a_jumbo_mtu_without_multi_buffer_is_warned_about_with_the_fix(caplog):
    sup, ops, _ = jumbo({"in0": 3000, "out0": 9000}, "multi_buffer: 'off'")
    with caplog.at_level("WARNING", logger="xdpd"):
        sup.start()
    warned = [m for m in caplog.messages if "MTU" in m]
    assert warned == [
        "in0: MTU 3000: packets over 1774 B (+18 B headers) need more than one 2048 B frame, "
        "and multi-buffer is off (one buffer per packet): the kernel drops them "
        "(xdpd_xsk_rx_dropped_packets_total); set umem.multi_buffer: auto, or "
        "umem.frame_size: 4096",
        "out0: MTU 9000: packets over 1774 B (+18 B headers) need more than one 2048 B frame, "
        "and multi-buffer is off (one buffer per packet): the kernel drops them "
        "(xdpd_xsk_rx_dropped_packets_total); set umem.multi_buffer: auto"]
    assert "multi_buffer" not in kinds(ops.journal)
    assert all(sup.worker_spec(w).max_segs == 0 for w in sup.workers)
    sup.stop()


def test_a_jumbo_mtu_turns_descriptor_chains_on(caplog):
    sup, ops, _ = jumbo({"out0": 9000})
    with caplog.at_level("INFO", logger="xdpd"):
        sup.start()
    assert not [m for m in caplog.messages if "drops" in m]
    assert "out0: MTU 9000: a full-size packet (9018 B with headers) takes 6 buffers of " \
        "2048 B, one descriptor chain (multi-buffer)" in caplog.messages
    # the socket that registers the UMEM says XDP_USE_SG, the others inherit it
    assert kinds(ops.journal).count("multi_buffer") == 1
    assert kinds(ops.journal).index("multi_buffer") + 1 == kinds(ops.journal).index("bind")
    assert sup.multi_buffer and sup.status()["umem"]["max_segs"] == 18
    assert all(sup.worker_spec(w).max_segs == 18 for w in sup.workers)
    # chains go over the fwd rings: no direct sockets
    assert all(not w.direct for w in sup.workers)
    assert "tx_only" not in kinds(ops.journal)
    sup.stop()


def test_drops_at_a_socket_with_multi_buffer_on_are_explained_once(caplog):
    sup, ops, _ = jumbo({"out0": 9000})
    sup.start()
    ops.xsk_stats[("out0", 1)] = {"rx_dropped": 5, "rx_fill_ring_empty_descs": 5}
    sup.status()
    ops.xsk_stats[("out0", 1)] = {"rx_dropped": 9, "rx_fill_ring_empty_descs": 9}
    with caplog.at_level("WARNING", logger="xdpd"):
        sup.status()                    # an empty FILL ring's drops: nothing to say
        assert not caplog.messages
        ops.xsk_stats[("out0", 1)] = {"rx_dropped": 12, "rx_fill_ring_empty_descs": 9}
        sup.status()
        ops.xsk_stats[("out0", 1)] = {"rx_dropped": 20, "rx_fill_ring_empty_descs": 9}
        sup.status()
    assert caplog.messages == [
        "out0/q1: the kernel dropped 3 packets at this socket with multi-buffer on "
        "(XDP_STATISTICS rx_dropped, not for an empty FILL ring): a kernel that does not "
        "give sockets sharing a UMEM multi-buffer (XDP_USE_SG; fixed upstream in "
        "93e84fe45b75) drops every packet longer than a frame there; upgrade the kernel, or "
        "set umem.multi_buffer: off and an MTU that fits one frame"]
    sup.stop()


def test_a_driver_that_refuses_native_xdp_at_its_mtu_is_refused_with_the_mtu_and_fix():
    from xdpd.kernel.libbpf import BpfError
    sup, ops, _ = jumbo({"in0": 9000}, config=CONFIG.replace(
        "  - name: in0\n", "  - name: in0\n    xdp_mode: native\n"))
    attach = FakeProgram.attach

    def refuse(prog, ifindex, ifname, mode):
        raise BpfError(errno.ERANGE, f"attach rr_redirect to {ifname} (native): ERANGE; "
                                     "lower it, or try xdp_mode: generic")
    FakeProgram.attach = refuse
    try:
        with pytest.raises(SetupError) as e:
            sup.start()
    finally:
        FakeProgram.attach = attach
    assert str(e.value) == ("in0: MTU 9000: attach rr_redirect to in0 (native): ERANGE; "
                            "lower it, or try xdp_mode: generic")
    assert "spawn" not in kinds(ops.journal)


def test_an_interface_a_reload_adds_that_needs_chains_asks_for_a_restart(caplog):
    """multi_buffer: auto is decided at start, with the sockets: an
    interface a reload brings that needs chains is warned about."""
    sup, _, host = jumbo({})
    one = CONFIG.replace("  - name: out0\n", "").replace(
        "  - from: in0\n    to: out0\n    set_dst_mac: \"02:00:00:00:00:04\"\n", "").replace(
        "  - from: out0\n    action: drop\n", "  - from: in0\n    action: drop\n")
    sup.config = parse_config(one, "xdpd.yaml")
    sup.start()
    assert not sup.multi_buffer
    host.mtus = {"out0": 9000}
    with caplog.at_level("WARNING", logger="xdpd"):
        ok, _, error = sup.reload(text=CONFIG)
    assert ok, error
    assert [m for m in caplog.messages if "MTU" in m] == [
        "out0: MTU 9000: packets over 1774 B (+18 B headers) need more than one 2048 B frame, "
        "and multi-buffer is off (one buffer per packet): the kernel drops them "
        "(xdpd_xsk_rx_dropped_packets_total); restart xdpd (multi-buffer is decided at "
        "start, with the sockets)"]
    sup.stop()


def test_zero_copy_chains_take_the_nics_segment_limit():
    from xdpd.kernel.xdp_features import XdpFeatures
    sup, _, host = jumbo({}, "multi_buffer: 'on'", zero_copy_ok=True)
    host.xdp_features = lambda name: XdpFeatures(1, 0, 5 if name == "in0" else None)
    sup.start()
    assert sup.zero_copy and sup.max_segs == 5
    sup.stop()


def test_multi_buffer_needs_a_batch_that_holds_a_whole_chain():
    sup, ops, _ = jumbo({"in0": 9000}, config=CONFIG.replace(
        "  cpus: [0, 1]", "  cpus: [0, 1]\n  batch_size: 16"))
    with pytest.raises(SetupError) as e:
        sup.start()
    assert str(e.value) == (
        "workers.batch_size 16 is less than the 18 descriptors one packet may take with "
        "multi-buffer (umem.multi_buffer: auto); set workers.batch_size: 18 or more")
    assert e.value.code == exitcodes.CONFIG
    assert "bind" not in kinds(ops.journal) and "attach" not in kinds(ops.journal)


def test_worker_on_its_queues_irq_cpu_is_warned_about(caplog):
    host = FakeHost(irq_cpus={("in0", 1): {1}, ("out0", 0): {1}})
    ops = FakeOps(host=host)
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    with caplog.at_level("WARNING", logger="xdpd"):
        sup.start()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # plans alternate CPUs 0, 1, 0, 1: in0/q1 is on CPU 1 (its IRQ's CPU);
    # out0/q0 is on CPU 0, away from its IRQ on CPU 1
    assert len(warned) == 1
    assert warned[0].startswith("in0/q1: worker CPU 1 also takes the queue's interrupts (NAPI)")
    assert "workers.cpus" in warned[0]
    sup.stop()


def test_tx_budget_auto_is_set_on_every_socket_and_zero_leaves_the_kernel_default():
    sup, ops = started()
    assert [e[1:] for e in ops.journal if e[0] == "tx_budget"] == [
        ("in0", 0, 256), ("in0", 1, 256), ("out0", 0, 256), ("out0", 1, 256),
        # the direct sockets: out0's queues for in0's workers, and back
        ("out0", 0, 256), ("out0", 1, 256), ("in0", 0, 256), ("in0", 1, 256)]
    sup.stop()
    sup, ops = started(CONFIG.replace("  cpus: [0, 1]", "  cpus: [0, 1]\n  tx_budget: 0"))
    assert "tx_budget" not in kinds(ops.journal)
    sup.stop()


def test_a_stop_requested_while_starting_undoes_the_start():
    from xdpd.control.ops import StopRequested
    ops = FakeOps()
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    spawn = ops.spawn

    def spawn_then_sigterm(*a):
        proc = spawn(*a)
        sup.request_stop()          # what the SIGTERM handler does
        return proc
    ops.spawn = spawn_then_sigterm
    with pytest.raises(StopRequested):
        sup.start()
    assert "set_socket" not in kinds(ops.journal)        # nothing was redirected
    assert kinds(ops.journal)[-2:] == ["detach", "detach"]
    assert all(s.closed for s in ops.sockets)


# -- what a killed supervisor left ------------------------------------------------

def dead_owner():
    """An Owner whose process is gone (a child that ran and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = run_record.Owner.me()
    return run_record.Owner(child.pid, me.start_time, me.boot_id)


def write_record(owner, *attachments):
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    run_record.write(RECORD, run_record.Record(owner, attachments))


def test_start_records_what_it_attaches_and_stop_removes_the_record():
    ops = FakeOps()
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    attach = FakeProgram.attach
    seen = []

    def attach_seeing_the_record(prog, *a):
        seen.append(run_record.read(RECORD).attachments[-1])    # recorded before the attach
        return attach(prog, *a)
    FakeProgram.attach = attach_seeing_the_record
    try:
        sup.start()
    finally:
        FakeProgram.attach = attach
    in0, out0 = ops.programs["in0"], ops.programs["out0"]
    assert seen == [run_record.Attachment("in0", 10, in0.prog_id, None, in0.prog_tag),
                    run_record.Attachment("out0", 11, out0.prog_id, None, out0.prog_tag)]
    record = run_record.read(RECORD)
    assert record.owner == run_record.Owner.me()
    assert record.attachments == (
        run_record.Attachment("in0", 10, in0.prog_id, "native", in0.prog_tag),
        run_record.Attachment("out0", 11, out0.prog_id, "native", out0.prog_tag))
    sup.stop()
    assert not os.path.exists(RUN_DIR)          # record gone, and the directory it made


def test_start_removes_only_what_a_dead_xdpd_recorded_and_is_still_attached(caplog):
    owner = dead_owner()
    write_record(owner,
                 run_record.Attachment("in0", 10, 77, "native"),
                 run_record.Attachment("out0", 11, 78, "native"),     # replaced since
                 run_record.Attachment("gone0", 12, 79, None))        # died mid-attach
    ops = FakeOps()
    ops.xdp = {10: {"native": 77}, 11: {"native": 99}, 12: {"generic": 79}}
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    with caplog.at_level("INFO", logger="xdpd"):
        sup.start()
    k = kinds(ops.journal)
    assert [e for e in ops.journal if e[0] == "detach_xdp"] == [
        ("detach_xdp", 10, "native", 77), ("detach_xdp", 12, "generic", 79)]
    assert k.index("attach") > max(i for i, e in enumerate(k) if e == "detach_xdp")
    assert ops.xdp == {10: {}, 11: {"native": 99}, 12: {}}      # 99 was never ours
    messages = [r.getMessage() for r in caplog.records]
    assert (f"in0: removed rr_redirect (prog id 77) left attached by xdpd pid {owner.pid} "
            "that died") in messages
    assert (f"gone0: removed rr_redirect (prog id 79) left attached by xdpd pid {owner.pid} "
            "that died") in messages
    assert (f"out0 (ifindex 11): not removing anything: xdpd pid {owner.pid} that died had "
            "attached rr_redirect (prog id 78), but XDP program id 99 (native) is attached "
            "now") in messages
    assert run_record.read(RECORD).owner == run_record.Owner.me()      # the record is ours now
    sup.stop()
    assert not os.path.exists(RECORD)


def test_a_recorded_program_id_now_held_by_another_program_is_left_alone(caplog):
    owner = dead_owner()
    write_record(owner, run_record.Attachment("in0", 10, 77, "native", "00112233445566aa"),
                 run_record.Attachment("out0", 11, 78, "native", "00112233445566bb"))
    ops = FakeOps()
    ops.xdp = {10: {"native": 77}, 11: {"native": 78}}
    ops.prog_infos = {77: ("rr_redirect", "00112233445566aa"),     # still ours
                      78: ("someone_else", "ffffffffffffffff")}    # the id came round
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    with caplog.at_level("WARNING", logger="xdpd"):
        sup.start()
    assert [e for e in ops.journal if e[0] == "detach_xdp"] == [("detach_xdp", 10, "native", 77)]
    assert (f"out0 (ifindex 11): not removing anything: prog id 78 is someone_else (tag "
            f"ffffffffffffffff) now, not the rr_redirect (tag 00112233445566bb) xdpd pid "
            f"{owner.pid} attached") in caplog.messages
    sup.stop()


def test_a_record_of_a_running_xdpd_refuses_the_start_and_is_kept():
    owner = run_record.Owner.me()                 # alive: another supervisor, as far as start knows
    write_record(owner, run_record.Attachment("in0", 10, 77, "native"))
    before = open(RECORD).read()
    ops = FakeOps()
    ops.xdp = {10: {"native": 77}}
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    with pytest.raises(SetupError) as e:
        sup.start()
    assert str(e.value) == (f"another xdpd (pid {owner.pid}) runs with control.socket "
                            f"{RUN_DIR}/xdpd.sock (its record: {RECORD}); stop it first, or "
                            "give this one another control.socket")
    assert e.value.code == exitcodes.CONFIG
    assert ops.journal == [] and ops.xdp == {10: {"native": 77}}    # nothing touched
    assert open(RECORD).read() == before


def test_a_record_from_a_reused_pid_is_a_dead_owner():
    me = run_record.Owner.me()
    write_record(run_record.Owner(me.pid, me.start_time + 1, me.boot_id),
                 run_record.Attachment("in0", 10, 77, "native"))
    ops = FakeOps()
    ops.xdp = {10: {"native": 77}}
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    sup.start()
    assert ("detach_xdp", 10, "native", 77) in ops.journal
    sup.stop()


def test_a_record_from_an_earlier_boot_detaches_nothing(caplog):
    owner = run_record.Owner(1, 1, "an earlier boot")
    write_record(owner, run_record.Attachment("in0", 10, 77, "native"))
    ops = FakeOps()
    ops.xdp = {10: {"native": 77}}             # the same id, by chance: not the same program
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    with caplog.at_level("INFO", logger="xdpd"):
        sup.start()
    assert "detach_xdp" not in kinds(ops.journal)
    assert any("before the last boot" in r.getMessage() for r in caplog.records)
    sup.stop()


def test_an_unreadable_record_is_moved_aside_and_nothing_is_detached(caplog):
    os.makedirs(RUN_DIR, mode=0o700)
    with open(RECORD, "w") as f:
        f.write("{not json")
    ops = FakeOps()
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    with caplog.at_level("WARNING", logger="xdpd"):
        sup.start()
    assert "detach_xdp" not in kinds(ops.journal)
    assert any(r.getMessage().startswith(f"{RECORD}: not an xdpd record (") and
               f"; moved to {RECORD}.invalid, nothing detached" in r.getMessage()
               for r in caplog.records)
    sup.stop()
    assert not os.path.exists(RECORD)
    with open(RECORD + ".invalid") as f:
        assert f.read() == "{not json"


def test_a_program_that_would_not_detach_stays_on_record():
    sup, ops = started()
    in0 = ops.programs["in0"]

    def close():
        raise OSError(errno.EPERM, "detach rr_redirect from in0 (native) failed: EPERM")
    in0.close = close
    sup.stop()
    assert run_record.read(RECORD).attachments == (
        run_record.Attachment("in0", 10, in0.prog_id, "native", in0.prog_tag),)


def test_start_retries_a_bind_the_kernel_answers_ebusy():
    ops = FakeOps()
    ops.busy_binds = 3
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    sup.start()
    assert ops.busy_binds == 0 and len(sup.workers) == 4
    assert sum(s.closed for s in ops.sockets) >= 3    # the refused ones were closed
    sup.stop()


def test_start_gives_up_on_a_queue_that_stays_busy(monkeypatch):
    from xdpd.control import startup
    monkeypatch.setattr(startup, "REBIND_TIMEOUT_S", 0.05)
    ops = FakeOps()
    ops.busy_binds = 10**9
    with pytest.raises(SetupError, match="bind AF_XDP socket to in0/q0 failed: EBUSY"):
        Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops).start()
    assert all(s.closed for s in ops.sockets) and ops.umem.closed


def test_reload_keeps_the_record_to_what_is_attached():
    sup, ops = started()
    one = CONFIG.replace("  - name: out0\n", "").replace(
        "  - from: in0\n    to: out0\n    set_dst_mac: \"02:00:00:00:00:04\"\n", "").replace(
        "  - from: out0\n    action: drop\n", "  - from: in0\n    action: drop\n")
    ok, result, error = sup.reload(text=one)
    assert ok, error
    assert [a.netdev for a in run_record.read(RECORD).attachments] == ["in0"]
    ok, result, error = sup.reload(text=CONFIG)
    assert ok, error
    record = run_record.read(RECORD)
    assert [(a.netdev, a.prog_id, a.xdp_mode) for a in record.attachments] == [
        ("in0", ops.programs["in0"].prog_id, "native"),
        ("out0", ops.programs["out0"].prog_id, "native")]
    sup.stop()
    assert not os.path.exists(RECORD)


def test_reload_from_another_file_applies_it_once(tmp_path):
    sup, ops = started()
    other = tmp_path / "other.yaml"
    other.write_text(CONFIG.replace("02:00:00:00:00:04", "02:00:00:00:00:05"))
    ok, result, error = sup.reload(str(other))
    assert ok and result["result"] == "applied", error
    assert sup.last_reload["source"] == str(other)
    assert sup.config.source == "xdpd.yaml"     # still the daemon's own file
    sup.stop()


PASS_RULES = "    pass_to_kernel: [{ethertype: arp}, {ip_proto: tcp, dst_port: 22}]\n"


def test_pass_rules_are_written_before_the_attach_and_changed_live():
    sup, ops = started(CONFIG.replace("  - name: in0\n", "  - name: in0\n" + PASS_RULES))
    j = ops.journal
    rules_at = j.index(("set_pass_rules", "in0", ("arp", "tcp dst port 22")))
    assert rules_at < j.index(("attach", "in0", "auto"))
    assert not [e for e in j if e[0] == "set_pass_rules" and e[1] == "out0"]
    prog_id = ops.programs["in0"].prog_id

    del j[:]
    ok, result, error = sup.reload(text=CONFIG)
    assert ok, error
    assert ("set_pass_rules", "in0", ()) in j
    assert not [e for e in j if e[0] in ("attach", "detach", "spawn", "clear_socket")]
    assert ops.programs["in0"].prog_id == prog_id
    assert sup.interface("in0").config.pass_to_kernel == ()
    sup.stop()


# --- steering -----------------------------------------------------------------

STEERED = CONFIG.replace("  - name: in0\n", """  - name: in0
    steering:
      channels: 2
      flows:
        - {type: udp4, dst_port: 53, queue: 1}
""")
JOURNAL = os.path.join(RUN_DIR, "xdpd.steering.json")


def test_steering_is_applied_before_the_programs_and_undone_after_the_detach():
    sup, ops = started(STEERED)
    calls = [e for e in ops.nic.requests if e[1] in ("ETHTOOL_SCHANNELS", "ETHTOOL_SRXCLSRLINS")]
    assert [c[1] for c in calls] == ["ETHTOOL_SCHANNELS", "ETHTOOL_SRXCLSRLINS"]
    assert ops.nic.combined == 2 and len(ops.nic.rules) == 1
    assert os.path.exists(JOURNAL)
    first_attach = kinds(ops.journal).index("attach")
    assert sup.workers and first_attach >= 0
    sup.stop()
    assert ops.nic.combined == 4 and ops.nic.rules == {}
    assert not os.path.exists(JOURNAL)
    assert not os.path.exists(RUN_DIR)


def test_a_dead_xdpds_steering_is_undone_at_start():
    sup, ops = started(STEERED)
    os.rename(JOURNAL, JOURNAL + ".kept")       # a kill: the journal stays, nothing undone
    sup.steering = None
    sup.stop()
    os.rename(JOURNAL + ".kept", JOURNAL)
    doc = json.load(open(JOURNAL))
    doc["pid"], doc["start_time"] = 1, 1          # not this process: its owner is dead
    with open(JOURNAL, "w") as f:
        json.dump(doc, f)
    assert ops.nic.combined == 2 and len(ops.nic.rules) == 1
    sup = Supervisor(parse_config(CONFIG, "xdpd.yaml"), ops)
    sup.start()
    assert ops.nic.combined == 4 and ops.nic.rules == {}
    assert not os.path.exists(JOURNAL)
    sup.stop()


def test_steering_the_driver_cannot_do_is_a_config_error_before_anything_is_done():
    from xdpd.config.model import ConfigError
    ops = FakeOps()
    ops.nic = FakeNic(driver="veth", combined=None, rx_tx=(4, 4), ntuple=0)
    sup = Supervisor(parse_config(STEERED, "xdpd.yaml"), ops)
    with pytest.raises(ConfigError) as info:
        sup.start()
    assert info.value.errors == [
        "xdpd.yaml: interfaces[0].steering.flows: in0 (driver veth) has no ntuple filters: "
        "ETHTOOL_GRXCLSRLCNT answered EOPNOTSUPP; remove flows or use a NIC that has them"]
    assert ops.journal == []


def test_reload_changes_flows_live_and_refuses_channels():
    sup, ops = started(STEERED)
    new = STEERED.replace("dst_port: 53, queue: 1", "dst_port: 54, queue: 0")
    ok, result, _ = sup.reload("xdpd.yaml", new)
    assert ok and result["changes"] == ["in0: steering changed"], result
    [spec] = ops.nic.rules.values()
    assert struct_port(spec) == 54
    ok, result, _ = sup.reload("xdpd.yaml", new.replace("channels: 2", "channels: 1"))
    assert not ok and result["result"] == "refused"
    assert "interface in0: steering.channels 2 -> 1: the channel count is the queue count" \
        in result["message"]
    sup.stop()
    assert ops.nic.rules == {}


def struct_port(spec: bytes) -> int:
    import struct
    return struct.unpack_from("!H", spec, 4 + 10)[0]


FANOUT = CONFIG.replace("  - name: in0\n", "  - name: in0\n    fanout: 2\n"
                        "    fanout_spread: round_robin\n")


def test_fanout_members_share_their_owners_socket_and_slot_in_xskmap():
    sup, ops = started(FANOUT)
    names = [w.name for w in sup.workers]
    assert names == ["in0/q0.0", "in0/q0.1", "in0/q1.0", "in0/q1.1", "out0/q0", "out0/q1"]
    by = {w.name: w for w in sup.workers}
    # the last round of binds (auto tried zero-copy first): a member binds to
    # its owner's socket without a FILL/COMPLETION pair of its own
    last = max(i for i, e in enumerate(ops.journal) if e[0] == "register_umem")
    binds = [e for e in ops.journal[last:] if e[0] == "bind"]
    first = sup.workers[0].socket.fd
    # and out0's workers' direct sockets, both on in0/q0 (lanes 0 and 1 pick
    # in0/q0.0 and in0/q0.1: one queue); in0's workers, with fanout, have none
    assert [b[4] for b in binds] == [None, first, first, by["in0/q1.0"].socket.fd, first, first,
                                     first, first]
    assert [e[1:] for e in ops.journal[last:] if e[0] == "rings_without_fill"] == \
        [("in0", 0), ("in0", 1)]
    # the fast path learns each worker's owner, members and lane
    places = ops.umem.control.places
    assert places[by["in0/q0.0"].id] == {"lane": 0, "owner": by["in0/q0.0"].id,
                                         "members": [by["in0/q0.1"].id], "direct": []}
    assert places[by["in0/q1.1"].id] == {"lane": 3, "owner": by["in0/q1.0"].id, "members": [],
                                         "direct": []}
    assert places[by["out0/q1"].id] == {"lane": 1, "owner": by["out0/q1"].id, "members": [],
                                        "direct": [by["in0/q0.0"].id]}
    # the queue's sockets in XSKMAP, each in its member's slot
    assert ("set_socket", "in0", 1, 1) in ops.journal and ("set_socket", "in0", 1) in ops.journal
    assert ("set_queue", "in0", 0, True, "pass", 2, "round_robin") in ops.journal
    assert ("set_queue", "out0", 0, True, "pass") in ops.journal
    sup.stop()
    assert ("clear_socket", "in0", 1, 1) in ops.journal


def test_an_owner_given_up_takes_its_fanout_members_with_it():
    sup, ops = started(FANOUT)
    owner, member = sup.workers[0], sup.workers[1]
    die_at_start_until_given_up(sup, owner)
    assert owner.state == member.state == WorkerState.FATAL
    assert ("clear_socket", "in0", 0) in ops.journal and ("clear_socket", "in0", 0, 1) in ops.journal
    assert ops.umem.control.state[member.id] == _fastpath.STATE_STOPPED
    if member.proc is not None:
        member.proc.returncode = 0              # it stopped (SIGTERM): not restarted
    sup.reap_workers()
    sup.replace_workers()
    assert member.state == WorkerState.FATAL and member.proc is None
    sup.stop()


def test_a_member_given_up_leaves_its_owner_running():
    sup, ops = started(FANOUT)
    owner, member = sup.workers[0], sup.workers[1]
    die_at_start_until_given_up(sup, member)
    assert member.state == WorkerState.FATAL and owner.state == WorkerState.RUNNING
    # out of its slot: the program sends its share to the owner
    assert ("clear_socket", "in0", 0, 1) in ops.journal
    assert ("clear_socket", "in0", 0) not in ops.journal
    sup.stop()


def test_the_workers_user_is_resolved_or_refused_naming_the_key():
    import grp
    import pwd

    from xdpd.config.model import WorkersConfig
    from xdpd.control.ops import resolve_worker_user
    nobody = pwd.getpwnam("nobody")
    assert resolve_worker_user(WorkersConfig()) == (nobody.pw_uid, nobody.pw_gid)
    nogroup = grp.getgrgid(nobody.pw_gid).gr_name
    assert resolve_worker_user(WorkersConfig(group=nogroup)) == (nobody.pw_uid, nobody.pw_gid)
    for workers, words in (
            (WorkersConfig(user="xdpd-no-such-user"), ["workers.user", "useradd"]),
            (WorkersConfig(group="xdpd-no-such-group"), ["workers.group", "groupadd"]),
            (WorkersConfig(user="root"), ["workers.user", "uid 0"]),
            (WorkersConfig(group="root"), ["workers.group", "gid 0"])):
        with pytest.raises(SetupError) as e:
            resolve_worker_user(workers)
        assert e.value.code == exitcodes.CONFIG
        assert all(w in str(e.value) for w in words), str(e.value)


def test_partial_checksums_are_completed_per_interface_and_a_reload_changes_it(caplog):
    """checksum: auto completes on a software netdev (the fake host's are
    veths), off leaves them and says who sends them and the command that
    stops it; a reload changes the netdev's flag in the next table."""
    off = CONFIG.replace("  - name: out0\n", "  - name: out0\n    checksum: off\n", 1)
    with caplog.at_level(logging.INFO, logger="xdpd"):
        sup, ops = started(off)
    by_name = {i.name: i.index for i in sup.interfaces}
    assert ops.umem.control.complete_checksums == [by_name["in0"]]
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "in0: partial TCP/UDP checksums completed before forwarding (veth; checksum: auto)" \
        in said
    assert ("out0: checksum: off on a veth: TCP and UDP from its peer out-peer in netns "
            "peerns with TX checksum offload on (the default) arrive with partial checksums"
            in said)
    assert ("their receivers drop them; set checksum: auto, or turn the sender's offload "
            "off: ip netns exec peerns ethtool -K out-peer tx off") in said
    ok, result, _ = sup.reload("xdpd.yaml", CONFIG)
    assert ok and result["changes"] == ["out0: checksum auto"], result
    assert ops.umem.control.complete_checksums == sorted(by_name.values())
    sup.stop()


# --- direct transmission ------------------------------------------------------

def test_each_worker_gets_a_direct_socket_on_the_queue_its_lane_picks():
    sup, ops = started()
    by = {w.name: w for w in sup.workers}
    want = {"in0/q0": "out0/q0", "in0/q1": "out0/q1", "out0/q0": "in0/q0", "out0/q1": "in0/q1"}
    for name, target in want.items():
        w = by[name]
        assert [(d.owner, f"{d.netdev}/q{d.queue}") for d in w.direct] == \
            [(by[target].id, target)]
        assert ops.umem.control.places[w.id]["direct"] == [by[target].id]
        spec = sup.worker_spec(w)
        assert spec.direct_fds == (w.direct[0].socket.fd,)
        assert w.direct[0].socket.fd in spec.fds()
    # every socket allowed by the table
    assert ops.umem.control.direct_ok == {w.id: 1 for w in sup.workers}
    sockets = [d.socket for w in sup.workers for d in w.direct]
    sup.stop()
    assert all(s.closed for s in sockets)


def test_direct_tx_false_hands_everything_over():
    sup, ops = started(CONFIG.replace("  cpus: [0, 1]", "  cpus: [0, 1]\n  direct_tx: false"))
    assert all(not w.direct for w in sup.workers)
    assert not [e for e in ops.journal if e[0] == "tx_only"]
    assert ops.umem.control.direct_ok == {}
    assert all(sup.worker_spec(w).direct_fds == () for w in sup.workers)
    sup.stop()


def test_a_queue_that_goes_takes_the_direct_sockets_on_it_along():
    sup, ops = started()
    by = {w.name: w for w in sup.workers}
    gone, sender = by["out0/q1"], by["in0/q1"]
    sock = sender.direct[0].socket
    # the table written for the reload no longer allows the socket on it
    sup._write_table(exclude=frozenset({gone.id}))
    assert ops.umem.control.direct_ok[sender.id] == 0
    assert ops.umem.control.direct_ok[by["in0/q0"].id] == 1
    sup._close_direct(gone)
    assert sock.closed and sender.direct[0].socket is None
    assert sup.worker_spec(sender).direct_fds == (-1,)      # a replacement maps nothing
    assert not by["in0/q0"].direct[0].socket.closed
    sup.stop()


def test_direct_sends_count_as_the_egress_queues_transmissions():
    sup, ops = started()
    by = {w.name: w for w in sup.workers}
    ctl = ops.umem.control
    base = ctl.worker_stats

    def stats(i):
        s = base(i)
        if i == by["in0/q0"].id:
            s["direct_packets"] = (10,) + (0,) * 7
            s["direct_bytes"] = (640,) + (0,) * 7
        if i == by["out0/q0"].id:
            s["tx_packets"], s["tx_bytes"] = 5, 320
        return s

    ctl.worker_stats = stats
    all_stats = worker_stats(sup)
    assert all_stats[by["out0/q0"].id]["tx_packets"] == 15
    assert all_stats[by["out0/q0"].id]["tx_bytes"] == 960
    assert all_stats[by["in0/q0"].id]["direct_tx_packets"] == 10
    assert all_stats[by["in0/q0"].id]["tx_packets"] == 0
    # the sender gone: what it sent stays counted on the egress queue
    sender = by["in0/q0"]
    sup._close_direct(sender)
    sup.workers.remove(sender)
    assert worker_stats(sup)[by["out0/q0"].id]["tx_packets"] == 15
    sup.workers.append(sender)
    sup.stop()


# -- fast wake-ups (control/wake.py) ------------------------------------------------

def test_a_busy_workers_cpu_is_held_and_stop_puts_its_cap_back():
    sup, ops = started()
    ops.cpus.caps = {0: None, 1: 40}
    sup._turn()
    assert ops.cpus.writes == []                     # nothing received yet
    in_q1 = next(w for w in sup.workers if w.name == "in0/q1")
    ops.umem.control.rx_packets[in_q1.id] += 3
    sup._snapshot_wanted = True             # the counters come from a snapshot: take one
    sup._turn()
    assert ops.cpus.caps == {0: None, 1: 0}
    assert sup.status()["cpu_wake"] == {"latency_us": 0, "held": [1]}
    assert os.path.exists(os.path.join(RUN_DIR, "xdpd.wake.json"))
    sup.stop()
    assert ops.cpus.caps == {0: None, 1: 40}
    assert not os.path.exists(os.path.join(RUN_DIR, "xdpd.wake.json"))


def test_start_puts_back_what_a_killed_xdpd_held_and_null_holds_nothing():
    os.makedirs(RUN_DIR, exist_ok=True)
    dead = run_record.Owner(4567, 1, run_record.boot_id())
    run_record.write_json(os.path.join(RUN_DIR, "xdpd.wake.json"), {
        "format": 1, "pid": dead.pid, "start_time": dead.start_time, "boot_id": dead.boot_id,
        "cpus": [{"cpu": 1, "before": 25, "set": 0}]})
    ops = FakeOps()
    ops.cpus.caps = {0: None, 1: 0}
    sup = Supervisor(parse_config(CONFIG.replace("  cpus: [0, 1]\n", "  cpus: [0, 1]\n"
                                                 "  cpu_wake_latency_us: null\n"),
                                  "xdpd.yaml"), ops)
    sup.start()
    assert ops.cpus.caps == {0: None, 1: 25}
    for w in sup.workers:
        ops.umem.control.rx_packets[w.id] += 1
    sup._snapshot_wanted = True
    sup._turn()
    assert ops.cpus.writes == [(1, 25)] and sup.wake is None
    assert sup.status()["cpu_wake"] == {"latency_us": None, "held": []}
    sup.stop()


# -- adaptive placement (control/placement.py) ---------------------------------

def _busy_snapshot(sup, ops, *busy_s):
    """Each worker busy that many more seconds, then a snapshot and a turn."""
    for w, seconds in zip(sup.workers, busy_s):
        ops.umem.control.busy_ns[w.id] += int(seconds * 1e9)
    sup._snapshot_wanted = True
    sup._turn()


def test_adaptive_placement_moves_both_processes_and_a_replacement_starts_where_it_is(
        monkeypatch):
    monkeypatch.setattr(placement, "SPREAD_AFTER_S", 0.0)
    monkeypatch.setattr(placement, "GATHER_AFTER_S", 0.0)
    # one queue per interface on two CPUs: by queue both on 0, out0 spread on 1
    sup, ops = started(host=FakeHost(queues=1))
    in0, out0 = sup.workers
    assert (in0.cpu, out0.cpu) == (0, 0) and sup.status()["placement"] == {
        "mode": "adaptive", "spread": False, "changes": 0}
    sup.replace_workers()                       # standbys
    _busy_snapshot(sup, ops, 0, 0)              # the first sample
    ops.journal.clear()
    _busy_snapshot(sup, ops, 100, 100)          # far more than SPREAD_AT of CPU 0
    assert [e for e in ops.journal if e[0] == "pin"] == [
        ("pin", out0.proc.pid, 1), ("pin", out0.standby.pid, 1)]
    status = sup.status()
    assert [w["cpu"] for w in status["workers"]] == [0, 1]
    assert status["placement"] == {"mode": "adaptive", "spread": True, "changes": 1}
    assert "placement: adaptive, spread now (1 change since start)" in format_status(status)
    from xdpd.control.metrics import XdpdCollector
    served = {s.name: s for f in XdpdCollector(sup).collect() for s in f.samples}
    assert served["xdpd_workers_spread"].value == 1
    assert served["xdpd_placement_changes_total"].value == 1
    assert {s.labels["netdev"]: s.value for f in XdpdCollector(sup).collect()
            for s in f.samples if s.name == "xdpd_worker_busy_seconds_total"} == {
        "in0": 100.0, "out0": 100.0}
    # killed there, it comes back there: its standby was moved, a fresh
    # process is spawned with the CPU in its spec
    out0.standby.returncode = -9
    out0.started_at -= 10
    out0.proc.returncode = -9
    sup.reap_workers()
    sup.replace_workers()
    assert out0.proc.spec["cpu"] == 1 and out0.cpu == 1
    ops.journal.clear()
    _busy_snapshot(sup, ops, 0, 0)              # quiet: back by queue
    _busy_snapshot(sup, ops, 0, 0)
    assert [e for e in ops.journal if e[0] == "pin"] == [("pin", out0.proc.pid, 0)]
    assert [w["cpu"] for w in sup.status()["workers"]] == [0, 0]
    sup.stop()


def test_without_cap_sys_nice_placement_stops_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(placement, "SPREAD_AFTER_S", 0.0)
    sup, ops = started(host=FakeHost(queues=1))
    ops.pin_refused = True
    _busy_snapshot(sup, ops, 0, 0)
    _busy_snapshot(sup, ops, 100, 100)
    assert sup.placer is None and [w.cpu for w in sup.workers] == [0, 0]
    assert {k: v for k, v in sup.internal_errors.items() if v} == {"placement": 1}
    assert "needs CAP_SYS_NICE" in caplog.text and "stay where they are" in caplog.text
    _busy_snapshot(sup, ops, 100, 100)          # and it does not try again
    assert len([e for e in ops.journal if e[0] == "pin"]) == 1
    assert "Traceback" not in caplog.text
    sup.stop()


def test_other_placements_never_move_a_worker():
    sup, ops = started(CONFIG.replace("  cpus: [0, 1]\n", "  cpus: [0, 1]\n  placement: spread\n"),
                       host=FakeHost(queues=1))
    _busy_snapshot(sup, ops, 0, 0)
    _busy_snapshot(sup, ops, 100, 100)
    assert sup.placer is None and not [e for e in ops.journal if e[0] == "pin"]
    assert [w.cpu for w in sup.workers] == [0, 1]
    assert sup.status()["placement"] == {"mode": "spread", "spread": True, "changes": 0}
    sup.stop()
