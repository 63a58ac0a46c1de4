#!/usr/bin/env python3
"""Validates iotflow's Grafana dashboards.

    python3 deploy/grafana/validate.py [DASHBOARD.json ...]   # default: dashboards/*.json
    python3 deploy/grafana/validate.py --self-test            # broken dashboards must fail

Needs the packages of requirements.txt (jsonschema, PyYAML, promql-parser) and promtool, all
installed by deploy/local/install.sh (check.sh runs this with $IOTFLOW_HOME/venv/bin/python).

Checks, per dashboard:
  * dashboard.schema.json (Grafana's dashboard JSON model, the subset the generator uses), by
    the `jsonschema` package.
  * what a JSON Schema cannot say: panel ids unique; panels inside the 24-column grid and not
    overlapping; every datasource uid (and its type) provisioned in
    provisioning/datasources/iotflow.yml; refIds unique per panel; every $variable defined (and
    a variable's query only using variables defined before it); the file named after the uid.
  * PromQL: `promtool check rules` parses every expression (as recording rules); the
    `promql-parser` package gives each expression's syntax tree, whose metric names must be in
    metrics.json (the list the iotflow-metrics registry writes, see
    crates/metrics/tests/metric_list.rs; histograms with their _bucket/_sum/_count series), be
    `up`, one of the work-time job's pushed metrics (WORKTIME_METRICS) or a recording rule of
    deploy/prometheus/rules/; label names in selectors, by()/without(), on()/ignoring() and
    legends must exist on the metrics used.
  * SQL: only the work-time tables are read, and every identifier is one of their columns
    (schemas/mysql/device_work_time.sql, else WORK_TIME_TABLES), an alias, a variable or a
    known SQL keyword or function.
"""

import argparse
import copy
import glob
import json
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the sibling modules, also when this file is run from elsewhere

try:
    import jsonschema
    import yaml
    from promql_check import metric_contract, promql_labels, promql_problems, promtool_problems
    from sql_check import sql_problems
except ImportError as e:  # an installation problem, said plainly
    sys.exit(f"validate.py: {e}; install the packages of deploy/grafana/requirements.txt "
             "(bash deploy/local/install.sh puts them into $IOTFLOW_HOME/venv)")

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SCHEMA = os.path.join(HERE, "dashboard.schema.json")
DATASOURCES = os.path.join(HERE, "provisioning", "datasources", "iotflow.yml")
GRAFANA_BUILTINS = {
    "__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
    "__timeFilter", "__timeFrom", "__timeTo", "__unixEpochFilter", "__timeGroup",
    "__timeGroupAlias", "__from", "__to", "__dashboard", "__org", "__user",
}


# --------------------------------------------------------------------------- JSON Schema


def schema_validator(schema):
    """errors(instance) -> ["$.path: message"], by the jsonschema package."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    js = cls(schema)

    def errors(instance):
        out = []
        for e in sorted(js.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
            e = jsonschema.exceptions.best_match([e])  # the most specific cause of a oneOf miss
            where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
            out.append(f"{where}: {e.message[:160]}")
        return out

    return errors


# --------------------------------------------------------------------------- datasources


def provisioned_datasources(path=DATASOURCES):
    """{uid: type} from the datasource provisioning file."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
        raise ValueError(f"{path}: apiVersion 1 expected")
    out = {}
    for ds in doc.get("datasources") or []:
        for key in ("name", "uid", "type", "url", "access"):
            if not ds.get(key):
                raise ValueError(f"{path}: datasource {ds.get('name')!r} lacks {key}")
        out[ds["uid"]] = ds["type"]
    return out


# --------------------------------------------------------------------------- dashboards

VAR_REF = re.compile(r"\$\{([a-zA-Z_]\w*)(?::\w+)?\}|\$([a-zA-Z_]\w*)|\[\[([a-zA-Z_]\w*)\]\]")


def var_refs(text):
    return {a or b or c for a, b, c in VAR_REF.findall(text)}


def all_panels(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", []) if isinstance(p, dict) else []


def semantic_problems(d, contract, datasources):
    problems = []
    panels = [p for p in all_panels(d) if isinstance(p, dict)]
    ids = [p.get("id") for p in panels]
    for i in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        problems.append(f"panel id {i} is used {ids.count(i)} times")
    cells = {}
    for p in panels:
        g = p.get("gridPos") or {}
        try:
            x, y, w, h = g["x"], g["y"], g["w"], g["h"]
        except KeyError:
            continue  # the schema reports it
        if x + w > 24:
            problems.append(f"panel {p.get('id')} ({p.get('title')}) is wider than the grid: x+w={x + w}")
        for cx in range(x, min(x + w, 24)):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    problems.append(f"panels {cells[(cx, cy)]} and {p.get('id')} overlap at x={cx} y={cy}")
                    break
                cells[(cx, cy)] = p.get("id")
            else:
                continue
            break
        if p.get("type") == "row" and not p.get("collapsed") and p.get("panels"):
            problems.append(f"row {p.get('id')} is expanded but holds panels (Grafana ignores them)")

    variables = (d.get("templating") or {}).get("list") or []
    names = [v.get("name") for v in variables]
    defined = set()
    for v in variables:
        if names.count(v.get("name")) > 1:
            problems.append(f"variable {v.get('name')} is defined twice")
        for ref in var_refs(str(v.get("query", ""))):
            if ref not in defined and ref not in GRAFANA_BUILTINS:
                problems.append(f"variable {v.get('name')} uses ${ref}, not defined before it")
        ds = v.get("datasource")
        if isinstance(ds, dict):
            problems += [f"variable {v.get('name')}: {m}" for m in datasource_problems(ds, datasources)]
            q = str(v.get("query", ""))
            if ds.get("type") == "prometheus":
                m = re.match(r"^label_values\((.*),\s*([a-zA-Z_]\w*)\)$", q)
                if not m:
                    problems.append(f"variable {v.get('name')}: expected label_values(selector, label)")
                else:
                    sel, label = m.groups()
                    problems += [f"variable {v.get('name')}: {x}" for x in promql_problems(sel, contract)]
                    labels = promql_labels(sel, contract)
                    if labels and label not in labels:
                        problems.append(f"variable {v.get('name')}: no label {label!r} on {sel}")
            elif ds.get("type") == "mysql":
                problems += [f"variable {v.get('name')}: {x}" for x in sql_problems(q)]
        defined.add(v.get("name"))

    for p in panels:
        where = f"panel {p.get('id')} ({p.get('title')})"
        for ref in var_refs(str(p.get("title", ""))):
            if ref not in defined:
                problems.append(f"{where}: title uses undefined variable ${ref}")
        if p.get("type") == "row":
            continue
        ds = p.get("datasource")
        if isinstance(ds, dict):
            problems += [f"{where}: {m}" for m in datasource_problems(ds, datasources)]
        refids = [t.get("refId") for t in p.get("targets", []) if isinstance(t, dict)]
        if len(refids) != len(set(refids)):
            problems.append(f"{where}: refIds not unique: {refids}")
        for t in p.get("targets", []):
            if not isinstance(t, dict):
                continue
            tds = t.get("datasource")
            if isinstance(tds, dict):
                problems += [f"{where} target {t.get('refId')}: {m}"
                             for m in datasource_problems(tds, datasources)]
                if isinstance(ds, dict) and tds.get("uid") != ds.get("uid"):
                    problems.append(f"{where} target {t.get('refId')}: datasource differs from the panel's")
            text = str(t.get("expr", "")) + " " + str(t.get("rawSql", ""))
            for ref in var_refs(text):
                if ref not in defined and ref not in GRAFANA_BUILTINS:
                    problems.append(f"{where} target {t.get('refId')}: undefined variable ${ref}")
            if "expr" in t:
                expr_problems = promql_problems(str(t["expr"]), contract)
                problems += [f"{where} target {t.get('refId')}: {m}" for m in expr_problems]
                legend = str(t.get("legendFormat", ""))
                labels = promql_labels(str(t["expr"]), contract)
                for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
                    if labels and label not in labels:
                        problems.append(f"{where} target {t.get('refId')}: legend label {label!r} is on no metric used")
            if "rawSql" in t:
                problems += [f"{where} target {t.get('refId')}: {m}" for m in sql_problems(str(t["rawSql"]))]
    return problems


def datasource_problems(ds, datasources):
    uid, typ = ds.get("uid"), ds.get("type")
    if uid not in datasources:
        return [f"datasource uid {uid!r} is not provisioned (have {sorted(datasources)})"]
    if datasources[uid] != typ:
        return [f"datasource {uid!r} is provisioned as {datasources[uid]!r}, used as {typ!r}"]
    return []


def expressions(d):
    return [t["expr"] for p in all_panels(d) if isinstance(p, dict)
            for t in p.get("targets", []) if isinstance(t, dict) and "expr" in t]


def check_dashboard(d, schema_errors, contract, datasources, file_name=None):
    problems = [f"schema: {e}" for e in schema_errors(d)]
    problems += semantic_problems(d, contract, datasources)
    if file_name is not None and isinstance(d, dict) and file_name != f"{d.get('uid')}.json":
        problems.append(f"file {file_name} should be named {d.get('uid')}.json (its uid)")
    return problems


# --------------------------------------------------------------------------- self-test


def mutations():
    """(what, mutate(dashboard)) pairs: each must make a valid dashboard fail."""

    def first(d, kind):
        return next(p for p in d["panels"] if p["type"] == kind)

    def prom_panel(d):
        return next(p for p in d["panels"] if p["type"] == "timeseries"
                    and p["datasource"]["type"] == "prometheus")

    def target(d):
        return prom_panel(d)["targets"][0]

    def set_(path, value):
        def f(d):
            node = d
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        return f

    def delete(key):
        return lambda d: d.pop(key)

    return [
        ("no title", delete("title")),
        ("no uid", delete("uid")),
        ("no panels", delete("panels")),
        ("no schemaVersion", delete("schemaVersion")),
        ("no templating", delete("templating")),
        ("no time", delete("time")),
        ("schemaVersion a string", set_(["schemaVersion"], "39")),
        ("unknown top-level key", set_(["dashbaord"], {})),
        ("duplicate panel id", lambda d: d["panels"][2].update(id=d["panels"][1]["id"])),
        ("panel without gridPos", lambda d: prom_panel(d).pop("gridPos")),
        ("gridPos width 25", lambda d: first(d, "timeseries")["gridPos"].update(w=25)),
        ("panel beyond the right edge", lambda d: first(d, "timeseries")["gridPos"].update(x=20, w=8)),
        ("overlapping panels", lambda d: first(d, "timeseries")["gridPos"].update(
            y=first(d, "stat")["gridPos"]["y"], x=first(d, "stat")["gridPos"]["x"])),
        ("datasource uid not provisioned", lambda d: prom_panel(d).update(
            datasource={"type": "prometheus", "uid": "prometheus-typo"})),
        ("target datasource uid not provisioned", lambda d: target(d).update(
            datasource={"type": "prometheus", "uid": "nope"})),
        ("target without expr or rawSql", lambda d: target(d).pop("expr")),
        ("target with neither datasource", lambda d: target(d).pop("datasource")),
        ("unknown metric name", lambda d: target(d).update(
            expr=target(d)["expr"].replace("iotflow_", "iotflow_typo_", 1))),
        ("unknown label", lambda d: target(d).update(expr=target(d)["expr"].replace(
            "{", '{no_such_label="x", ', 1))),
        ("unbalanced PromQL", lambda d: target(d).update(expr=target(d)["expr"] + ")")),
        ("undefined variable", lambda d: target(d).update(
            expr=target(d)["expr"].replace("{", '{job=~"$undefined_variable", ', 1))),
        ("duplicate refId", lambda d: prom_panel(d)["targets"].append(
            copy.deepcopy(prom_panel(d)["targets"][0]))),
        ("row holding panels while expanded", lambda d: first(d, "row")["panels"].append(
            dict(copy.deepcopy(first(d, "stat")), id=999, gridPos={"h": 1, "w": 1, "x": 0, "y": 999}))),
        ("variable without name", lambda d: d["templating"]["list"][0].pop("name")),
        ("query variable without datasource", lambda d: d["templating"]["list"][0].pop("datasource")),
    ]


def sql_mutations():
    def sql_target(d):
        return next(t for p in all_panels(d) for t in p.get("targets", []) if "rawSql" in t)

    return [
        ("SQL column not in the table", lambda d: sql_target(d).update(
            rawSql=sql_target(d)["rawSql"].replace("working_seconds", "work_seconds", 1)
            if "working_seconds" in sql_target(d)["rawSql"]
            else sql_target(d)["rawSql"].replace("day =", "dayz =", 1))),
        ("SQL from another table", lambda d: sql_target(d).update(
            rawSql=sql_target(d)["rawSql"].replace("device_work_time", "iot_data", 1))),
        ("SQL target without format", lambda d: sql_target(d).pop("format")),
        ("mysql uid used with type prometheus", lambda d: sql_target(d).update(
            datasource={"type": "prometheus", "uid": "iotflow-mysql"})),
    ]


def self_test(paths, schema_errors, contract, datasources, promtool):
    failures = 0
    checked = 0
    for path in paths:
        good = json.load(open(path, encoding="utf-8"))
        base = schema_errors(good) + semantic_problems(good, contract, datasources)
        if base:
            print(f"self-test: {os.path.basename(path)} fails before any change: {base[:3]}")
            failures += 1
        has_sql = any("rawSql" in t for p in all_panels(good) for t in p.get("targets", []))
        has_ts = any(p.get("type") == "timeseries" and p["datasource"]["type"] == "prometheus"
                     for p in good["panels"])
        cases = (mutations() if has_ts else []) + (sql_mutations() if has_sql else [])
        for what, mutate in cases:
            bad = copy.deepcopy(good)
            mutate(bad)
            if bad == good:
                print(f"self-test: '{what}' changed nothing in {os.path.basename(path)}")
                failures += 1
                continue
            checked += 1
            if not (schema_errors(bad) or semantic_problems(bad, contract, datasources)):
                print(f"self-test: '{what}' in {os.path.basename(path)} was NOT caught")
                failures += 1
    # The metric contract itself must reject a made-up name and accept a registered one.
    if promql_problems("rate(iotflow_made_up_total[5m])", contract) == []:
        print("self-test: a made-up metric name passed")
        failures += 1
    if promql_problems("sum by (sink) (rate(iotflow_sink_rows_written_total[5m]))", contract):
        print("self-test: a registered metric failed")
        failures += 1
    # The syntax tree sees what a regex would miss: a label in on(), a grouping label.
    if not promql_problems("sum without (no_such_label) (iotflow_parse_success_total)", contract):
        print("self-test: an unknown without() label passed")
        failures += 1
    if not promql_problems("up / on(no_such_label) iotflow_parse_success_total", contract):
        print("self-test: an unknown on() label passed")
        failures += 1
    checked += 1
    if promtool_problems(["sum(rate(iotflow_parse_success_total[5m])"], promtool) is None:
        print("self-test: promtool accepted an unbalanced expression")
        failures += 1
    if promtool_problems(["sum by (sink) (rate(iotflow_sink_rows_written_total[$__rate_interval]))"],
                         promtool) is not None:
        print("self-test: promtool rejected a good expression")
        failures += 1
    print(f"self-test: {checked} broken variants, each rejected (jsonschema, promql-parser, promtool)"
          if not failures else f"self-test: {failures} failure(s)")
    return failures == 0


# --------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description="Validate iotflow's Grafana dashboards.")
    parser.add_argument("dashboards", nargs="*",
                        default=sorted(glob.glob(os.path.join(HERE, "dashboards", "*.json"))))
    parser.add_argument("--self-test", action="store_true",
                        help="check that broken copies of the dashboards are rejected")
    parser.add_argument("--no-promtool", action="store_true",
                        help="skip the promtool parse (the syntax tree is still checked)")
    args = parser.parse_args()
    if not args.dashboards:
        print("validate: no dashboards given or found", file=sys.stderr)
        return 1
    promtool = shutil.which("promtool")
    if promtool is None and (args.self_test or not args.no_promtool):
        print("validate: promtool not found (Debian package prometheus; bash deploy/local/install.sh)",
              file=sys.stderr)
        return 1
    schema_errors = schema_validator(json.load(open(SCHEMA, encoding="utf-8")))
    contract = metric_contract()
    datasources = provisioned_datasources()
    if args.self_test:
        return 0 if self_test(args.dashboards, schema_errors, contract, datasources, promtool) else 1

    failed = False
    uids = {}
    exprs = []
    for path in args.dashboards:
        try:
            d = json.load(open(path, encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"{path}: not readable JSON: {e}")
            failed = True
            continue
        problems = check_dashboard(d, schema_errors, contract, datasources,
                                   file_name=os.path.basename(path))
        if isinstance(d, dict) and d.get("uid") in uids:
            problems.append(f"uid {d['uid']} also used by {uids[d['uid']]}")
        if isinstance(d, dict):
            uids[d.get("uid")] = path
            try:
                exprs += expressions(d)
            except (AttributeError, TypeError):
                pass
        for p in problems:
            print(f"{path}: {p}")
        failed |= bool(problems)
        if not problems:
            n = sum(1 for p in all_panels(d) if p.get("type") != "row")
            print(f"{os.path.relpath(path, REPO)}: ok ({n} panels, schema: jsonschema)")
    if not args.no_promtool and exprs:
        out = promtool_problems(exprs, promtool)
        if out:
            print(f"promtool check rules rejected a dashboard expression:\n{out}")
            failed = True
        else:
            print(f"promtool: all {len(exprs)} PromQL expressions parse")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
