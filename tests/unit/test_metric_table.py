"""One declaration per metric (xdpd/metric_table.py): the collector makes
its families from it, deploy/monitoring.py derives the dashboard's contract
from it, and the README's reference names exactly its series."""
import pathlib
import re

import pytest

from xdpd.control.metric_table import BY_NAME, METRICS, Metric

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_names_are_unique_and_follow_the_conventions():
    assert len(BY_NAME) == len(METRICS)
    for m in METRICS:
        assert re.fullmatch(r"xdpd_[a-z0-9_]+", m.name), m.name
        assert m.kind in ("counter", "gauge"), m
        assert not m.name.endswith("_total"), f"{m.name}: the exposition adds _total"
        assert m.help.strip(), m
        assert len(set(m.labels)) == len(m.labels), m


def test_the_readme_reference_names_every_series_and_no_other():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(xdpd_[a-z0-9_]+)(?:\{[^`]*\})?`", readme))
    series = {m.series for m in METRICS}
    assert series <= named, f"not in the README's metrics reference: {sorted(series - named)}"
    assert named <= series, f"the README names what xdpd does not serve: {sorted(named - series)}"


def test_the_dashboard_contract_is_the_table():
    import importlib.util
    spec = importlib.util.spec_from_file_location("xdpd_deploy_monitoring",
                                                  ROOT / "deploy" / "monitoring.py")
    mon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mon)
    for m in METRICS:
        assert mon.XDPD_METRICS[m.series] == m.kind
        assert mon.XDPD_METRIC_LABELS[m.series] == m.labels


def test_a_scrape_serves_the_table():
    """The collector over the supervisor on a fake OS: every family it yields
    is declared, with the declared type, help and labels."""
    from test_supervisor import started

    from xdpd.control.metrics import XdpdCollector
    sup, _ = started()
    try:
        families = list(XdpdCollector(sup).collect())
    finally:
        sup.stop()
    served = {f.name: f for f in families}
    assert set(served) == {m.name for m in METRICS}
    for name, f in served.items():
        m = BY_NAME[name]
        assert (f.type, f.documentation) == (m.kind, m.help), name
        for sample in f.samples:
            assert tuple(sample.labels) == m.labels, (name, sample.labels)


def test_family_refuses_an_undeclared_metric():
    from xdpd.control.metric_table import family
    with pytest.raises(KeyError):
        family("xdpd_not_declared")
    assert isinstance(METRICS[0], Metric)
