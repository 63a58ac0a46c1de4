"""PromQL for validate.py: the metrics contract (metrics.json, written from the iotflow-metrics
registry by crates/metrics/tests/metric_list.rs, plus the work-time job's pushed metrics and the
recording rules) and what an expression uses of it, read from its syntax tree (promql-parser);
`promtool check rules` parses every expression as Prometheus would."""

import glob
import json
import os
import re
import subprocess
import tempfile

import promql_parser
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
# Written by crates/metrics/tests/metric_list.rs from the registry itself.
METRIC_LIST = os.path.join(HERE, "metrics.json")
RULES_DIR = os.path.join(REPO, "deploy", "prometheus", "rules")

# The daily work-time analysis (`iotflow worktime`) pushes these gauges to the Pushgateway
# (job="iotflow-worktime", label `day`). They are a contract for that job (README.md). When its
# sources are in the tree they are the authority: the names are read from WORKTIME_SOURCES, and
# the list below is used only when those files are absent.
WORKTIME_SOURCES = os.path.join(REPO, "jobs", "worktime", "src")
WORKTIME_METRICS = {
    "iotflow_worktime_last_success_timestamp_seconds",
    "iotflow_worktime_last_run_timestamp_seconds",
    "iotflow_worktime_duration_seconds",
    "iotflow_worktime_devices_analysed",
    "iotflow_worktime_rows_read",
    "iotflow_worktime_success",
}
WORKTIME_LABELS = {"day"}
# Labels Prometheus adds when it scrapes.
TARGET_LABELS = {"job", "instance"}


def metric_contract(path=METRIC_LIST):
    """{series name: label set} of every metric family in metrics.json (from the registry)."""
    with open(path, encoding="utf-8") as f:
        families = json.load(f)["metrics"]
    if len(families) < 10:
        raise ValueError(f"{path}: only {len(families)} metric families; regenerate it with "
                         "IOTFLOW_WRITE_METRIC_LIST=1 cargo test -p iotflow-metrics --test metric_list")
    series = {}
    for family in families:
        name, kind = family["name"], family["type"]
        labels = set(family["labels"]) | TARGET_LABELS
        if kind == "histogram":
            series[name + "_bucket"] = labels | {"le"}
            series[name + "_sum"] = labels
            series[name + "_count"] = labels
        elif kind == "summary":
            series[name] = labels | {"quantile"}
            series[name + "_sum"] = labels
            series[name + "_count"] = labels
        else:
            series[name] = labels
    for name in worktime_metrics():
        series[name] = TARGET_LABELS | WORKTIME_LABELS
    series["up"] = set(TARGET_LABELS)
    series["ALERTS"] = None  # alertname, alertstate and each alert's own labels
    for f in sorted(glob.glob(os.path.join(RULES_DIR, "*.y*ml"))):
        with open(f, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                if "record" in rule:
                    series[rule["record"]] = None  # labels unknown: any
    return series


def worktime_metrics():
    """The work-time job's pushed metric names: from its sources when present."""
    files = sorted(glob.glob(os.path.join(WORKTIME_SOURCES, "**", "*.rs"), recursive=True))
    if not files:
        return set(WORKTIME_METRICS)
    names = set()
    for f in files:
        names |= set(re.findall(r'"(iotflow_worktime_[a-z0-9_]+)"', open(f, encoding="utf-8").read()))
    if not names:
        raise ValueError(f"{WORKTIME_SOURCES}: no iotflow_worktime_* metric names found")
    return names


def concrete(expr):
    """The expression Prometheus receives once Grafana has substituted its variables."""
    e = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    e = e.replace("$__range", "1h")
    return re.sub(r"\$\{?\w+\}?", ".*", e)


class Uses:
    """What one PromQL expression reads: (metric, matcher labels) per selector, and the labels
    named by by/without, on/ignoring and group_left/group_right."""

    def __init__(self, expr):
        self.selectors = []
        self.grouping = []
        promql_parser.walk(promql_parser.parse(concrete(expr)), self._visit)

    def _visit(self, node):
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers
            labels = [m.name for m in matchers.matchers]
            for alternative in matchers.or_matchers or []:
                labels += [m.name for m in alternative]
            labels = [label for label in labels if label != "__name__"]
            name = node.name or next((m.value for m in matchers.matchers if m.name == "__name__"), None)
            if name:
                self.selectors.append((name, labels))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            self.grouping += list(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                self.grouping += list(node.modifier.matching.labels)
            self.grouping += list(node.modifier.group_labels or [])

    @property
    def names(self):
        return {name for name, _ in self.selectors}


def promql_problems(expr, contract):
    """Names and labels an expression uses that the metrics contract does not have."""
    try:
        uses = Uses(expr)
    except ValueError as e:
        return [f"does not parse as PromQL: {str(e).splitlines()[0] if str(e) else e!r}"]
    problems = []
    if not uses.names:
        problems.append("uses no metric")
    available = set()
    for name, labels in uses.selectors:
        if name not in contract:
            problems.append(f"unknown metric {name}")
            continue
        if contract[name] is None:
            available = None  # a recording rule: its labels are not known here
            continue
        if available is not None:
            available |= contract[name]
        for label in labels:
            if label not in contract[name]:
                problems.append(f"metric {name} has no label {label!r}")
    if available is not None:
        for label in uses.grouping:
            if label not in available:
                problems.append(f"grouping label {label!r} is on none of the metrics used")
    return problems


def promql_labels(expr, contract):
    """The labels the metrics of an expression have (empty if unknown or unparseable)."""
    try:
        names = Uses(expr).names
    except ValueError:
        return set()
    labels = set()
    for name in names:
        if contract.get(name):
            labels |= contract[name]
    return labels


def promtool_problems(exprs, promtool):
    """Parses every expression with `promtool check rules`; returns error text or None."""
    rules = {"groups": [{"name": "grafana-dashboard-expressions", "rules": [
        {"record": f"grafana_check:expr_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "exprs.rules.yml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rules, f, indent=1)  # JSON is YAML
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            return (r.stdout + r.stderr).strip()
    return None
