"""The supervisor's ordering and worker lifecycle, against a fake OS."""
import errno
import itertools
import json

import pytest

from xdpd import _fastpath
from xdpd.config import parse_config
from xdpd.shared_umem import UmemGeometry
from xdpd.supervisor import BACKOFF_S, SetupError, Supervisor, WorkerState
from xdpd.xsk import XskError

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


class FakeHost:
    def __init__(self, queues=2, irq_cpus=None):
        self.queues = queues
        self.irq_cpus = irq_cpus or {}      # (netdev, queue) -> CPUs

    def netdev_exists(self, name):
        return True

    def ifindex(self, name):
        return {"in0": 10, "out0": 11}[name]

    def rx_queue_count(self, name):
        return self.queues

    def online_cpus(self):
        return frozenset({0, 1})

    def queue_irq_cpus(self, name, queue):
        return frozenset(self.irq_cpus.get((name, queue), ()))


class FakeProgram:
    def __init__(self, journal, netdev):
        self.journal, self.netdev = journal, netdev

    def set_queue(self, q, owned, fallback):
        self.journal.append(("set_queue", self.netdev, q, owned, fallback))

    def attach(self, ifindex, ifname, mode):
        self.journal.append(("attach", ifname, mode))
        return "native"

    def set_socket(self, q, fd):
        self.journal.append(("set_socket", self.netdev, q))

    def clear_socket(self, q):
        self.journal.append(("clear_socket", self.netdev, q))

    def queue_stats(self, q):
        return {"redirected": 0, "passed": 0, "no_socket": 0}

    def close(self):
        self.journal.append(("detach", self.netdev))


class FakeSocket:
    def __init__(self, ops, netdev, ifindex, queue):
        self.ops, self.netdev, self.queue = ops, netdev, queue
        self.fd = next(ops.fds)
        self.closed = False

    def register_umem(self, addr, length, frame_size):
        self.ops.journal.append(("register_umem", self.netdev, self.queue))

    def set_rings(self, sizes):
        pass

    def set_tx_budget(self, budget):
        self.ops.journal.append(("tx_budget", self.netdev, self.queue, budget))
        return True

    def set_busy_poll(self, usecs, budget):
        self.ops.journal.append(("busy_poll", self.netdev, self.queue, usecs, budget))

    def bind(self, *, zero_copy, shared_with=None):
        if zero_copy and not self.ops.zero_copy_ok:
            raise XskError(errno.EOPNOTSUPP, f"bind AF_XDP socket to {self.netdev}/q{self.queue}")
        self.ops.journal.append(("bind", self.netdev, self.queue, zero_copy,
                                 None if shared_with is None else shared_with.fd))

    def statistics(self):
        return {}

    def close(self):
        self.closed = True


class FakeControl:
    def __init__(self, n):
        self.state = [_fastpath.STATE_NONE] * n

    def set_worker(self, *a):
        pass

    def write_table(self, table):
        self.table = table
        return 1

    def worker_liveness(self, i):
        return (0, 0, self.state[i], 1)

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
        self.start_ok = start_ok
        self.procs = []
        self.sockets = []
        self.programs = {}

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

    def process_memory(self, pid):
        return {"rss": 30 << 20, "uss": 12 << 20}

    def close_fd(self, fd):
        pass

    def spawn(self, args, stdin_text, pass_fds):
        spec = json.loads(stdin_text)
        self.journal.append(("spawn", spec["netdev"], spec["queue"], spec["xsk_fd"]))
        proc = FakeProc(self, spec)
        self.procs.append(proc)
        if self.start_ok:
            self.umem.control.state[spec["id"]] = _fastpath.STATE_RUNNING
        else:
            proc.returncode = 3
        return proc


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
    assert len(binds) == 4
    first_fd = sup.workers[0].socket.fd
    assert binds[0] == ("bind", "in0", 0, False, None)
    assert all(b[4] == first_fd for b in binds[1:])
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
    assert ops.journal == [("spawn", "in0", 1, fd)]
    assert w.restarts == 1 and w.state == WorkerState.STARTING
    sup.replace_workers()                       # it reports RUNNING in shared memory
    assert w.state == WorkerState.RUNNING
    sup.stop()


def test_worker_that_keeps_dying_at_start_is_given_up():
    sup, ops = started()
    w = sup.workers[2]
    for _ in range(len(BACKOFF_S) + 1):
        w.proc.returncode = 1
        sup.reap_workers()
        if w.state == WorkerState.FATAL:
            break
        w.next_start = 0
        sup.replace_workers()
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
        ("in0", 0, 256), ("in0", 1, 256), ("out0", 0, 256), ("out0", 1, 256)]
    sup.stop()
    sup, ops = started(CONFIG.replace("  cpus: [0, 1]", "  cpus: [0, 1]\n  tx_budget: 0"))
    assert "tx_budget" not in kinds(ops.journal)
    sup.stop()


def test_a_stop_requested_while_starting_undoes_the_start():
    from xdpd.supervisor import StopRequested
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
