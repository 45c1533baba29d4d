"""The workers' state machine (workers.TRANSITIONS): every legal edge
is taken as declared, every other raises (in tests; a daemon logs it), and
nothing assigns a worker's state except Worker.transition()."""
import itertools
import logging
import pathlib
import re

import pytest

from xdpd.config.model import WorkerPlan
from xdpd.control import workers
from xdpd.control.workers import TRANSITIONS, IllegalTransition, Worker, WorkerState

STATES = list(WorkerState)


def worker(state: WorkerState) -> Worker:
    w = Worker(0, WorkerPlan("in0", 0, 0, "in0/q0"), 0, None)
    w.state = state             # a fixture's starting point, not a transition
    return w


@pytest.mark.parametrize("before,after", [(a, b) for a, b in itertools.product(STATES, STATES)
                                          if a is not b],
                         ids=lambda s: s.value)
def test_each_edge_is_legal_exactly_when_the_table_says(before, after):
    w = worker(before)
    if (before, after) in TRANSITIONS:
        w.transition(after)
        assert w.state is after
    else:
        with pytest.raises(IllegalTransition, match=f"{before.value} -> {after.value}"):
            w.transition(after)
        assert w.state is before


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.value)
def test_staying_put_is_no_change(state):
    w = worker(state)
    w.transition(state)
    assert w.state is state


def test_the_table_reads_as_a_life():
    """Spawned, running, dying and restarting, given up, drained, stopped:
    each state is reachable from STOPPED, and STOPPED from each."""
    edges = {}
    for a, b in TRANSITIONS:
        edges.setdefault(a, set()).add(b)
    reach, todo = {WorkerState.STOPPED}, [WorkerState.STOPPED]
    while todo:
        for b in edges.get(todo.pop(), ()):
            if b not in reach:
                reach.add(b)
                todo.append(b)
    assert reach == set(STATES)
    assert all((s, WorkerState.STOPPED) in TRANSITIONS for s in STATES
               if s is not WorkerState.STOPPED)
    assert all(why for why in TRANSITIONS.values())


def test_a_daemon_logs_an_illegal_change_and_carries_on(monkeypatch, caplog):
    monkeypatch.setattr(workers, "STRICT_TRANSITIONS", False)
    w = worker(WorkerState.STOPPED)
    with caplog.at_level(logging.ERROR, logger="xdpd"):
        w.transition(WorkerState.RUNNING)
    assert w.state is WorkerState.RUNNING
    assert "stopped -> running is not a legal state change" in caplog.text


def test_nothing_but_transition_assigns_a_state():
    control = pathlib.Path(workers.__file__).parent
    assigned = [(path.name, line.strip()) for path in sorted(control.glob("*.py"))
                for line in path.read_text().splitlines()
                if re.search(r"\.state\s*=[^=]", line)]
    assert assigned == [("workers.py", "self.state = new")], assigned
