"""Adaptive placement's decision (control/placement.py): spread while the
workers sharing a CPU by queue keep it busy, by queue again once they are
quiet enough to share it, and nothing on a blip either way."""
from __future__ import annotations

from xdpd.config.model import WorkerPlan
from xdpd.control.placement import GATHER_AFTER_S, GATHER_AT, SPREAD_AFTER_S, SPREAD_AT, Placer

# one queue per interface on two CPUs: both by queue on CPU 0, out0 spread on 1
IN0 = WorkerPlan("in0", 0, 0, "in0/q0", spread_cpu=0)
OUT0 = WorkerPlan("out0", 0, 0, "out0/q0", spread_cpu=1)


class Run:
    """Feeds a Placer samples every `step` s with each worker busy for the
    given share of that time."""

    def __init__(self, plans=(IN0, OUT0), step=0.5):
        self.placer = Placer()
        self.plans = dict(enumerate(plans))
        self.busy = dict.fromkeys(self.plans, 0)
        self.now = 100.0
        self.step = step
        self.changes: list[float] = []
        self.placer.update(self._sample(), self.now)

    def _sample(self):
        return {wid: (plan, self.busy[wid]) for wid, plan in self.plans.items()}

    def run(self, seconds: float, *shares: float) -> None:
        for _ in range(round(seconds / self.step)):
            self.now += self.step
            for wid, share in enumerate(shares):
                self.busy[wid] += int(share * self.step * 1e9)
            if self.placer.update(self._sample(), self.now):
                self.changes.append(self.now)

    def cpus(self) -> list[int]:
        return [self.placer.cpu(p) for p in self.plans.values()]


def test_a_busy_shared_cpu_spreads_its_workers_and_a_quiet_one_gathers_them():
    r = Run()
    assert r.cpus() == [0, 0]
    r.run(SPREAD_AFTER_S + 0.5, 0.5, 0.5)          # all of CPU 0 together
    assert r.placer.spread and r.cpus() == [0, 1]
    # spread, they stay as long as together they would not fit under GATHER_AT
    r.run(30, 0.35, 0.35)
    assert r.placer.spread and len(r.changes) == 1
    r.run(GATHER_AFTER_S + 0.5, 0.02, 0.01)         # a ping's worth
    assert not r.placer.spread and r.cpus() == [0, 0]
    assert r.placer.moves == 2


def test_blips_and_a_load_between_the_thresholds_move_nothing():
    r = Run()
    for _ in range(10):                         # busy for less than SPREAD_AFTER_S
        r.run(SPREAD_AFTER_S - 0.5, 0.5, 0.5)
        r.run(1.0, 0.1, 0.1)
    assert not r.changes
    r.run(60, SPREAD_AT / 2 - 0.01, SPREAD_AT / 2 - 0.01)   # just under: by queue
    assert not r.changes
    r.run(SPREAD_AFTER_S + 0.5, 0.5, 0.5)
    assert len(r.changes) == 1
    for _ in range(10):                         # quiet for less than GATHER_AFTER_S
        r.run(GATHER_AFTER_S - 1.0, 0.0, 0.0)
        r.run(0.5, 0.5, 0.5)
    r.run(60, GATHER_AT / 2 + 0.01, GATHER_AT / 2 + 0.01)   # just over: spread
    assert r.changes == r.changes[:1] and r.placer.spread


def test_a_busy_cpu_that_no_worker_can_leave_moves_nothing():
    # two queues each on two CPUs: by queue and spread are one layout
    plans = (WorkerPlan("in0", 0, 0, "in0/q0", spread_cpu=0),
             WorkerPlan("in0", 1, 1, "in0/q1", spread_cpu=1),
             WorkerPlan("out0", 0, 0, "out0/q0", spread_cpu=0),
             WorkerPlan("out0", 1, 1, "out0/q1", spread_cpu=1))
    r = Run(plans)
    r.run(10, 0.5, 0.5, 0.5, 0.5)
    assert not r.changes and r.cpus() == [0, 1, 0, 1]


def test_workers_of_other_placements_never_move():
    r = Run((WorkerPlan("in0", 0, 0, "in0/q0"), WorkerPlan("out0", 0, 1, "out0/q0")))
    r.run(10, 1.0, 1.0)
    assert not r.changes and r.cpus() == [0, 1]


def test_a_replacement_whose_counter_starts_again_is_not_read_as_idle_or_negative():
    r = Run()
    r.run(1.0, 0.5, 0.5)
    r.busy[1] = 0                               # a new worker in out0/q0's slot
    r.run(0.5, 0.5, 0.5)                        # its first sample: below the last
    assert not r.changes and r.placer._since is None
    r.run(SPREAD_AFTER_S + 0.5, 0.5, 0.5)
    assert r.placer.spread
    # the same sample twice (no new snapshot) changes nothing
    assert not r.placer.update(r._sample(), r.now)
    # a worker removed by a reload is forgotten
    del r.plans[1]
    r.run(1.0, 0.5)
    assert set(r.placer._last) == {0}
