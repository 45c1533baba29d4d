"""The unit tier's shared setting: a worker state change that the
supervisor's TRANSITIONS table does not allow raises here (a daemon logs
it), so that every test of the supervisor also checks its state machine."""
import pytest

from xdpd import supervisor


@pytest.fixture(autouse=True)
def _strict_worker_transitions(monkeypatch):
    monkeypatch.setattr(supervisor, "STRICT_TRANSITIONS", True)
