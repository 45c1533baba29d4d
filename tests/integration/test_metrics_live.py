"""A live /metrics scrape of the lab daemon: promtool finds nothing to
complain about, and every metric the Grafana dashboard and the alert rules
use is there."""
import importlib.util
import os
import shutil
import subprocess

import pytest
from integration_helpers import ROOT_ONLY

from xdpd.lab.daemon import forward_config
from xdpd.lab.traffic import SinkProcess, send_in_ns

pytestmark = ROOT_ONLY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _monitoring():
    spec = importlib.util.spec_from_file_location(
        "xdpd_deploy_monitoring", os.path.join(ROOT, "deploy", "monitoring.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scrape(lab):
    """One scrape after traffic, a drop rule hit and one reload, so that
    every label set the daemon can have is present."""
    from xdpd.lab.daemon import LabDaemon
    with LabDaemon(lab, forward_config(lab, reverse="drop")) as d:
        d.start()
        with SinkProcess(lab, lab.sink_ns, lab.SINK_DEV, tag=71, expect=200, idle=2.0) as sink:
            send_in_ns(lab, lab.gen_ns, lab.GEN_DEV, dst_mac=lab.MACS[lab.IN_DEV], count=200,
                       tag=71)
            sink.result()
        send_in_ns(lab, lab.sink_ns, lab.SINK_DEV, dst_mac=lab.MACS[lab.OUT_DEV], count=20,
                   tag=72)
        d.reload()
        yield d.scrape()


def test_promtool_check_metrics_is_clean(scrape):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package prometheus")
    r = subprocess.run([promtool, "check", "metrics"], input=scrape.text, text=True,
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


def test_every_metric_of_the_contract_is_exposed(scrape):
    mon = _monitoring()
    exposed = set(scrape.samples)
    missing = sorted(name for name in mon.XDPD_METRICS if name not in exposed)
    assert not missing, f"in deploy/monitoring.py's list, not on /metrics: {missing}"


def test_dashboard_and_rules_use_only_exposed_metrics(scrape):
    mon = _monitoring()
    used = mon.dashboard_metric_names(os.path.join(ROOT, "deploy", "grafana",
                                                   "xdpd-dashboard.json"))
    used |= mon.rules_metric_names(os.path.join(ROOT, "deploy", "prometheus", "xdpd-rules.yml"))
    assert used, "no metric names found in the dashboard and the rules"
    exposed = set(scrape.samples)
    missing = sorted(name for name in used if name not in exposed)
    assert not missing, f"used by the dashboard or the rules, not on /metrics: {missing}"
