"""Integration fixtures: a uniquely named veth lab per test module, and a
real `xdpd run` process per test, both removed also when a test fails."""
import pytest

from xdpd.lab import Lab
from xdpd.labdaemon import LabDaemon

@pytest.fixture(scope="module")
def lab():
    lab = Lab.create(queues=2)
    try:
        yield lab
    finally:
        lab.destroy()


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
