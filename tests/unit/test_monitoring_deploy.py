"""The shipped monitoring: Grafana dashboard and provisioning, Prometheus
alerting rules (checked and unit-tested with promtool) and scrape config.

Also checks that the dashboard and the rules only use metrics of the contract
in deploy/monitoring.py, with labels those metrics have.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")
DASHBOARD = os.path.join(DEPLOY, "grafana", "xdpd-dashboard.json")
DASHBOARD_PROVIDER = os.path.join(DEPLOY, "grafana", "provisioning", "dashboards", "xdpd.yaml")
DATASOURCES = os.path.join(DEPLOY, "grafana", "provisioning", "datasources", "prometheus.yaml")
RULES = os.path.join(DEPLOY, "prometheus", "xdpd-rules.yml")
RULES_TEST = os.path.join(DEPLOY, "prometheus", "xdpd-rules.test.yml")
PROMETHEUS_EXAMPLE = os.path.join(DEPLOY, "prometheus", "prometheus.yml.example")

ROWS = ["Overview", "Per-queue rates", "Drops by cause", "Workers", "UMEM"]
DATASOURCE_REFS = ("${datasource}", "$datasource")


def _load_monitoring():
    # deploy/ is not a package: load the module from its file
    spec = importlib.util.spec_from_file_location("xdpd_deploy_monitoring",
                                                  os.path.join(DEPLOY, "monitoring.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


monitoring = _load_monitoring()


@pytest.fixture(scope="module")
def dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(panels: list) -> list[dict]:
    """Every panel, including those inside collapsed rows."""
    out = []
    for p in panels:
        out.append(p)
        out += all_panels(p.get("panels", []))
    return out


def load_yaml(path: str):
    with open(path) as f:
        return yaml.safe_load(f)


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: install the Debian package prometheus")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


# ------------------------------------------------------------------ dashboard

def test_dashboard_identity(dashboard):
    # the uid is what links and provisioning refer to: it must never change
    assert dashboard["uid"] == "xdpd-overview"
    assert dashboard["title"] == "xdpd"
    assert dashboard["id"] is None      # Grafana assigns the database id
    assert dashboard["schemaVersion"] >= 36


def test_dashboard_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"

    netdev = variables["netdev"]
    assert netdev["type"] == "query"
    assert "label_values(xdpd_rx_packets_total" in netdev["query"]
    assert netdev["query"].rstrip().endswith("netdev)")
    assert netdev["multi"] and netdev["includeAll"]

    # query variables run against the selected data source too
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] in DATASOURCE_REFS, v["name"]


def test_rows(dashboard):
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ROWS
    # every row has panels under it
    kinds = [p["type"] for p in dashboard["panels"]]
    for i, kind in enumerate(kinds):
        if kind == "row":
            assert i + 1 < len(kinds) and kinds[i + 1] != "row", dashboard["panels"][i]["title"]


def test_panel_ids_unique_and_layout(dashboard):
    panels = all_panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        boxes.append((p["title"], g))
    for (t1, a), (t2, b) in itertools.combinations(boxes, 2):
        overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                   and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
        assert not overlap, f"{t1!r} overlaps {t2!r}"


def test_every_panel_queries_the_datasource_variable(dashboard):
    for p in all_panels(dashboard["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in DATASOURCE_REFS, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] in DATASOURCE_REFS, (p["title"], t["refId"])
            assert t["expr"].strip(), (p["title"], t["refId"])
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
    for a in dashboard["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"]["uid"] in DATASOURCE_REFS, a["name"]


def _datasource_refs(node):
    """Every value of a "datasource" key anywhere under node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def test_no_hard_coded_datasource(dashboard):
    # a uid of one Grafana's data source would break the dashboard on any other
    refs = list(_datasource_refs(dashboard["panels"])) + \
        list(_datasource_refs(dashboard["templating"]))
    assert refs
    for ref in refs:
        uid = ref["uid"] if isinstance(ref, dict) else ref
        assert uid in DATASOURCE_REFS, ref
    assert "__inputs" not in dashboard     # no import-time data source prompt


_RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase)\s*\(")


def _call_argument(expr: str, open_paren: int) -> str:
    """The text between the parenthesis at open_paren and its match."""
    depth = 0
    for i in range(open_paren, len(expr)):
        if expr[i] == "(":
            depth += 1
        elif expr[i] == ")":
            depth -= 1
            if depth == 0:
                return expr[open_paren + 1:i]
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def test_rates_use_rate_interval():
    exprs = monitoring.dashboard_expressions(DASHBOARD)
    calls = 0
    for expr in exprs:
        text = monitoring.without_strings(expr)
        for m in _RANGE_FUNCTION.finditer(text):
            arg = _call_argument(text, m.end() - 1)
            assert re.search(r"\[\$__rate_interval\]\s*$", arg), (m.group(1), expr)
            calls += 1
        # no other range anywhere (no [5m], no $__range, no subqueries)
        for selector in re.findall(r"\[[^\]]*\]", text):
            assert selector == "[$__rate_interval]", expr
    assert calls >= 20


def test_helper_finds_every_rate_call():
    # the check above relies on these: irate( is not rate(, strings are ignored
    text = monitoring.without_strings('irate(a[5m]) + rate(b{x="rate(c[1m])"}[$__rate_interval])')
    found = [(m.group(1), _call_argument(text, m.end() - 1))
             for m in _RANGE_FUNCTION.finditer(text)]
    assert found == [("irate", "a[5m]"), ("rate", 'b{x=""}[$__rate_interval]')]


# ------------------------------------------------------------- provisioning

def test_dashboard_provider():
    doc = load_yaml(DASHBOARD_PROVIDER)
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "xdpd"
    assert os.path.isabs(provider["options"]["path"])


def test_datasource_provisioning(dashboard):
    doc = load_yaml(DATASOURCES)
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["uid"] == "prometheus"
    assert ds["url"] == "http://localhost:9090"
    # $__rate_interval is built from the data source's scrape interval: it
    # must be the one of the Prometheus example
    example = load_yaml(PROMETHEUS_EXAMPLE)
    assert ds["jsonData"]["timeInterval"] == example["global"]["scrape_interval"]
    # the dashboard selects this data source by default
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == ds["uid"]


# ------------------------------------------------------------------ rules

def test_promtool_check_rules():
    out = promtool("check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules():
    out = promtool("test", "rules", RULES_TEST)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_prometheus_example():
    # also checks the rules file, which the example lists
    out = promtool("check", "config", PROMETHEUS_EXAMPLE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout


def alerts() -> dict[str, dict]:
    doc = load_yaml(RULES)
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_rules_group_and_alert_fields():
    doc = load_yaml(RULES)
    assert [g["name"] for g in doc["groups"]] == ["xdpd"]
    found = alerts()
    for name in ("XdpdDown", "XdpdWorkerDown", "XdpdWorkerRestarting", "XdpdWorkerFatal",
                 "XdpdDropsRising", "XdpdKernelDropsRising", "XdpdFillRingStarved",
                 "XdpdTrafficWithoutSocket", "XdpdReloadFailed", "XdpdBadDescriptors"):
        assert name in found
    for name, rule in found.items():
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        for key in ("summary", "description"):
            assert "$labels." in rule["annotations"][key], (name, key)
    # the intended drops (a drop rule said so) must not alert
    assert 'reason!="rule"' in found["XdpdDropsRising"]["expr"]


def test_every_alert_has_a_firing_and_a_quiet_test_case():
    doc = load_yaml(RULES_TEST)
    assert doc["rule_files"] == [os.path.basename(RULES)]
    firing, quiet = set(), set()
    for test in doc["tests"]:
        assert test["input_series"]
        for case in test.get("alert_rule_test", []):
            expected = case.get("exp_alerts") or []
            (firing if expected else quiet).add(case["alertname"])
            for alert in expected:
                # firing cases pin the labels and the rendered annotations
                assert alert["exp_labels"]["severity"], case["alertname"]
                assert set(alert["exp_annotations"]) >= {"summary", "description"}, \
                    case["alertname"]
    names = set(alerts())
    assert names - firing == set(), "alerts without a firing test case"
    assert names - quiet == set(), "alerts without a test case where they do not fire"
    assert firing | quiet <= names, "test cases for alerts that do not exist"


# ---------------------------------------------------------- metrics contract

def test_contract_is_consistent():
    m = monitoring
    assert set(m.XDPD_METRICS) == set(m.XDPD_METRIC_LABELS)
    for name, kind in m.XDPD_METRICS.items():
        assert re.fullmatch(r"(xdpd|process)_[a-z0-9_]+", name), name
        assert kind in ("counter", "gauge"), name
        # counters are exposed, and queried, with the _total suffix
        assert name.endswith("_total") == (kind == "counter"), name


def test_dashboard_uses_only_contract_metrics():
    used = monitoring.dashboard_metric_names(DASHBOARD)
    assert "xdpd_rx_packets_total" in used
    assert used - set(monitoring.XDPD_METRICS) == set()


def test_rules_use_only_contract_metrics():
    used = monitoring.rules_metric_names(RULES)
    assert "xdpd_worker_up" in used
    assert used - set(monitoring.XDPD_METRICS) == set()


def test_selectors_use_existing_labels():
    exprs = monitoring.dashboard_expressions(DASHBOARD) + monitoring.rules_expressions(RULES)
    pairs = set().union(*map(monitoring.expr_selector_labels, exprs))
    assert ("xdpd_dropped_packets_total", "reason") in pairs
    for metric, label in pairs:
        allowed = monitoring.XDPD_METRIC_LABELS[metric] + monitoring.TARGET_LABELS
        assert label in allowed, (metric, label)


def test_metric_name_extraction():
    names = monitoring.expr_metric_names
    # label names (matchers, by/on lists), strings and comments are not metrics
    assert names('sum by (xdpd_label) (rate(xdpd_a_total{xdpd_l="xdpd_v"}[5m]))'
                 ' / on (xdpd_x) group_left (xdpd_y) xdpd_b  # xdpd_c') == \
        {"xdpd_a_total", "xdpd_b"}
    # recording rule names (with colons) are not metrics of the daemon
    assert names("job:xdpd_rx_packets:rate5m + xdpd_ready:sum") == set()
    assert names("process_cpu_seconds_total - process_start_time_seconds") == \
        {"process_cpu_seconds_total", "process_start_time_seconds"}
    assert names('label_values(xdpd_rx_packets_total{instance=~"$instance", a="b"}, netdev)') \
        == {"xdpd_rx_packets_total"}
    assert names("label_values(xdpd_label)") == set()
    assert monitoring.expr_selector_labels('xdpd_a{reason!="x,y=z", netdev=~"$netdev"}') == \
        {("xdpd_a", "reason"), ("xdpd_a", "netdev")}


def test_recording_rules_are_not_metrics(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "xdpd_rx_pps", "expr": "sum(rate(xdpd_rx_packets_total[5m]))"},
        {"alert": "A", "expr": "xdpd_rx_pps > 0"},
    ]}]}))
    assert monitoring.rules_metric_names(str(path)) == {"xdpd_rx_packets_total"}
