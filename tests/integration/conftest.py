"""Integration fixtures: a uniquely named veth lab per test module, and a
real `xdpd run` process per test, both removed also when a test fails."""
import pytest
from integration_helpers import netns_list

from xdpd.lab.daemon import LabDaemon
from xdpd.lab.netns import Lab


def _lab_lifetime():
    lab = Lab.create(queues=2)
    try:
        yield lab
    finally:
        lab.destroy()
    assert not set(lab.namespaces) & netns_list(), "lab namespaces outlived destroy()"


@pytest.fixture(scope="module")
def lab():
    """One lab shared by a module's tests (each test starts its own daemon)."""
    yield from _lab_lifetime()


@pytest.fixture
def fresh_lab():
    """A lab of the test's own."""
    yield from _lab_lifetime()


@pytest.fixture
def start_daemon(lab):
    """start_daemon(config_yaml) -> a running LabDaemon; stopped at test end."""
    daemons = []

    def start(config_yaml: str, **kw) -> LabDaemon:
        d = LabDaemon(lab, config_yaml, **kw)
        daemons.append(d)
        return d.start()

    yield start
    for d in daemons:
        d.close()
