"""The metrics contract of xdpd, and the metric names the shipped Grafana
dashboard and Prometheus rules depend on.

XDPD_METRICS is every series name xdpd's /metrics serves, as written in
PromQL (counters with their `_total` suffix), with its type; XDPD_METRIC_LABELS
gives each one's labels (without `job` and `instance`, which Prometheus adds
at scrape time).  Both are read from xdpd/metric_table.py, where each metric
is declared once.  The unit tests check that the dashboard and the alerting
rules use nothing outside the contract; an integration test can check the
contract against a live scrape.

The extraction is textual, not a PromQL parser: it removes what can hold a
name that is not a metric (string literals, comments, label matchers in
braces, label lists of by/without/on/ignoring/group_left/group_right) and
then takes every identifier starting with `xdpd_` or `process_`.  Names of
recording rules defined in a rules file are left out, and so is anything
next to a colon, the mark of a recording rule's name.
"""
from __future__ import annotations

import json
import re
from typing import Iterator

import yaml

from xdpd.control.metric_table import METRICS, PROCESS_SERIES  # each declared once

# every series xdpd serves, as written in PromQL, and its type
XDPD_METRICS: dict[str, str] = {**{m.series: m.kind for m in METRICS}, **PROCESS_SERIES}
XDPD_METRIC_LABELS: dict[str, tuple[str, ...]] = {
    **{m.series: m.labels for m in METRICS}, **{name: () for name in PROCESS_SERIES}}

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = ("job", "instance")

# A string literal (any of PromQL's three quotes) or a comment.  One pattern,
# scanned left to right, so a '#' inside a string is not taken for a comment.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|#[^\n]*')
# Label lists of aggregations and vector matching.
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
# Grafana's label_values(metric_or_selector, label) and label_values(label):
# the last argument is a label name.
_LABEL_VALUES = re.compile(r"\blabel_values\s*\((?:([^,(){}]*(?:\{[^}]*\})?)\s*,)?\s*\w+\s*\)")
# A metric name, not part of a longer identifier nor of a recording rule's
# colon-separated name.
_METRIC = re.compile(r"(?<![\w:])(xdpd_[a-z0-9_]+|process_[a-z0-9_]+)\b(?!:)")
# A metric name with a selector; the selector's label names.
_SELECTOR = re.compile(r"(?<![\w:])(xdpd_[a-z0-9_]+|process_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def without_strings(expr: str) -> str:
    """expr with every string literal emptied and every comment removed."""
    return _STRING_OR_COMMENT.sub(lambda m: "" if m.group().startswith("#") else '""', expr)


def expr_metric_names(expr: str) -> set[str]:
    """The xdpd_* and process_* metric names a PromQL expression (or a Grafana
    label_values() query) reads."""
    text = without_strings(expr)
    text = _LABEL_VALUES.sub(lambda m: m.group(1) or "", text)
    text = _LABEL_LIST.sub("", text)
    text = _MATCHERS.sub("", text)
    return set(_METRIC.findall(text))


def expr_selector_labels(expr: str) -> set[tuple[str, str]]:
    """(metric, label) for every label matcher on an xdpd_* or process_*
    selector in expr, e.g. ('xdpd_dropped_packets_total', 'reason')."""
    text = without_strings(expr)
    return {(metric, label)
            for metric, matchers in _SELECTOR.findall(text)
            for label in _MATCHER_LABEL.findall(matchers)}


def _panels(panels: list) -> Iterator[dict]:
    """Every panel, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions(path: str) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: the panels' targets,
    the query variables and the annotation queries."""
    with open(path) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in _panels(dash.get("panels", []))
             for t in p.get("targets", []) if t.get("expr")]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        # Grafana stores a query variable's query as a string or, since
        # version 10, as an object holding it
        if isinstance(query, dict):
            query = query.get("query")
        if query:
            exprs.append(query)
    exprs += [a["expr"] for a in dash.get("annotations", {}).get("list", []) if a.get("expr")]
    return exprs


def _rules(path: str) -> list[dict]:
    with open(path) as f:
        doc = yaml.safe_load(f)
    return [rule for group in doc.get("groups", []) for rule in group.get("rules", [])]


def rules_expressions(path: str) -> list[str]:
    """The expr of every alerting and recording rule of a Prometheus rules file."""
    return [str(rule["expr"]) for rule in _rules(path)]


def dashboard_metric_names(path: str) -> set[str]:
    """The xdpd_* and process_* metric names a Grafana dashboard queries."""
    return set().union(*map(expr_metric_names, dashboard_expressions(path)))


def rules_metric_names(path: str) -> set[str]:
    """The xdpd_* and process_* metric names a Prometheus rules file reads,
    without the recording rules it defines itself."""
    recorded = {rule["record"] for rule in _rules(path) if "record" in rule}
    return set().union(*map(expr_metric_names, rules_expressions(path))) - recorded
