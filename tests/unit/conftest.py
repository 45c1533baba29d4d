"""The unit tier's shared setting: a worker state change that the
workers.TRANSITIONS table does not allow raises here (a daemon logs
it), so that every test of the supervisor also checks its state machine."""
import pytest

from xdpd.control import workers


@pytest.fixture(autouse=True)
def _strict_worker_transitions(monkeypatch):
    monkeypatch.setattr(workers, "STRICT_TRANSITIONS", True)
