#!/usr/bin/env python3
"""Static validation of deploy/compose (no Docker engine needed). Needs jsonschema and PyYAML
(requirements.txt; deploy/local/install.sh puts them into $IOTFLOW_HOME/venv).

    python3 deploy/compose/check_compose.py [--root REPO]    # check the files under REPO
    python3 deploy/compose/check_compose.py --self-test      # broken variants must fail

What it checks (after Compose's ${VAR:-default} interpolation, with the defaults):
  * both compose files parse and are valid against the Compose Specification's JSON schema
    (compose-spec.json, vendored; see README.md for its source), and every service has an image
    or a build whose context and Dockerfile exist;
  * every bind-mounted path and env_file exists inside the repository, named volumes are
    declared, depends_on names services (service_healthy ones have a healthcheck), no ${VAR}
    lacks a default;
  * ports: Prometheus 9099, Pushgateway 9091, Grafana 3000 (listen flags, published ports);
  * Prometheus: the config file mounted where --config.file points, every rule file it names
    found through the mounts (and `promtool check config` passes when promtool is installed);
  * Grafana: provisioning and dashboards mounted where deploy/grafana/provisioning expects them,
    every $VARIABLE of the datasource file set;
  * iotflow services: every IOTFLOW__SECTION__KEY names a key of deploy/iotflow.example.toml and
    its value has the key's type; the cluster's `run -n/-p/-h/-w` flags agree with each other,
    with the hostfile and with the Prometheus targets (metrics port + process index); the
    publisher, simulator and work-time services exist, the latter pushing to the Pushgateway;
  * stores: Kafka KRaft, MySQL 8, ClickHouse 24, Elasticsearch 8 single-node without security;
  * Dockerfile: multi-stage, Rust at the workspace's rust-version or newer, cmake for rdkafka,
    `cargo build --release -p iotflow`, a slim Debian runtime; the context excludes target/.
"""

import argparse
import copy
import os
import sys

# The sibling modules, also when this file is run from elsewhere.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compose_load import Problems, interpolate, load_compose, schema_problems  # noqa: E402
from compose_rules import (check_cluster, check_dockerfile, check_grafana,  # noqa: E402
                           check_iotflow_env, check_ports, check_prometheus, check_same_images,
                           check_stores, generic, promtool_check)

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- driver

FILES = {
    # compose file: the Prometheus config its prometheus service must mount
    "monitoring.yml": "deploy/prometheus/prometheus.yml",
    "full-stack.yml": "deploy/compose/prometheus.yml",
}


def check_docs(docs, root, compose_dir, notes):
    p = Problems()
    promtool_runs = []
    for name, doc in docs.items():
        if doc is None:
            continue
        schema_problems(doc, name, p)
        generic(doc, name, compose_dir, root, p)
        check_ports(doc, name, p)
        check_prometheus(doc, name, compose_dir, root, FILES[name], p, promtool_runs)
        check_grafana(doc, name, compose_dir, root, p)
    full = docs.get("full-stack.yml")
    if full is not None:
        n = check_iotflow_env(full, "full-stack.yml", root, p)
        if n == 0:
            p.add("full-stack.yml", "sets no IOTFLOW__ variables")
        cluster = Problems()
        check_cluster(full, "full-stack.yml", compose_dir, root,
                      os.path.join(root, FILES["full-stack.yml"]), cluster)
        p += cluster
        check_stores(full, "full-stack.yml", p)
    if all(d is not None for d in docs.values()):
        check_same_images(docs, p)
    check_dockerfile(root, p)
    if notes is not None and not p:
        notes.append(promtool_check(promtool_runs, root, p))
    return p


def load_all(root):
    compose_dir = os.path.join(root, "deploy", "compose")
    p = Problems()
    docs = {name: load_compose(os.path.join(compose_dir, name), p) for name in FILES}
    return docs, compose_dir, p


def mutations():
    """(what, file, mutate(doc)) — each must produce at least one problem."""
    def svc(name):
        return lambda d: d["services"][name]

    def env(d, sname):
        return d["services"][sname]["environment"]

    return [
        ("service without image or build", "full-stack.yml", lambda d: svc("kafka")(d).pop("image")),
        ("unknown top-level key", "monitoring.yml", lambda d: d.update(service={})),
        ("unknown depends_on condition", "full-stack.yml",
         lambda d: svc("iotflow-0")(d)["depends_on"]["mysql"].update(condition="service_ready")),
        ("port published as a mapping of the wrong shape", "monitoring.yml",
         lambda d: svc("grafana")(d).update(ports=[{"published": "3000", "target": "x"}])),
        ("unknown service key", "full-stack.yml",
         lambda d: svc("mysql")(d).update(enviroment=svc("mysql")(d).pop("environment"))),
        ("IOTFLOW__ key not in iotflow.example.toml", "full-stack.yml",
         lambda d: env(d, "iotflow-0").update(IOTFLOW__MYSQL__URLL=env(d, "iotflow-0").pop("IOTFLOW__MYSQL__URL"))),
        ("IOTFLOW__ section not in iotflow.example.toml", "full-stack.yml",
         lambda d: env(d, "publisher").update(IOTFLOW__SINK__ENABLED="true")),
        ("IOTFLOW__ value of the wrong type", "full-stack.yml",
         lambda d: env(d, "iotflow-1").update(IOTFLOW__CLICKHOUSE__ENABLED="yes")),
        ("numeric password (reads as an integer)", "full-stack.yml",
         lambda d: env(d, "iotflow-1").update(IOTFLOW__CLICKHOUSE__PASSWORD="123456")),
        ("Prometheus on 9090", "full-stack.yml",
         lambda d: svc("prometheus")(d).update(ports=["127.0.0.1:9090:9090"])),
        ("Prometheus listening on 9090", "monitoring.yml",
         lambda d: svc("prometheus")(d)["command"].__setitem__(3, "--web.listen-address=127.0.0.1:9090")),
        ("Pushgateway not published", "full-stack.yml", lambda d: svc("pushgateway")(d).pop("ports")),
        ("Grafana on 3001", "monitoring.yml",
         lambda d: svc("grafana")(d)["environment"].update(GF_SERVER_HTTP_PORT="3001")),
        ("bind mount of a missing file", "full-stack.yml",
         lambda d: svc("iotflow-0")(d)["volumes"].append("./no-such-file:/etc/x:ro")),
        ("bind mount outside the repository", "monitoring.yml",
         lambda d: svc("grafana")(d)["volumes"].append("../../../etc:/etc/host:ro")),
        ("undeclared named volume", "monitoring.yml", lambda d: d["volumes"].pop("grafana-data")),
        ("depends on an unknown service", "full-stack.yml",
         lambda d: svc("grafana")(d)["depends_on"].append("postgres")),
        ("waits for health without a healthcheck", "full-stack.yml",
         lambda d: svc("mysql")(d).pop("healthcheck")),
        ("two processes claim -p 0", "full-stack.yml",
         lambda d: svc("iotflow-1")(d)["command"].__setitem__(4, "0")),
        ("-n disagrees", "full-stack.yml",
         lambda d: svc("iotflow-1")(d)["command"].__setitem__(2, "3")),
        ("process service not named in the hostfile", "full-stack.yml",
         lambda d: d["services"].update({"iotflow-b": d["services"].pop("iotflow-1")})),
        ("metrics on loopback", "full-stack.yml",
         lambda d: env(d, "iotflow-0").update(IOTFLOW__METRICS__LISTEN="127.0.0.1:9249")),
        ("metrics port Prometheus does not scrape", "full-stack.yml",
         lambda d: env(d, "iotflow-1").update(IOTFLOW__METRICS__LISTEN="0.0.0.0:9300")),
        ("no simulator", "full-stack.yml", lambda d: d["services"].pop("simulator")),
        ("work-time job pushing to loopback", "full-stack.yml",
         lambda d: env(d, "worktime").update(IOTFLOW__WORKTIME__PUSHGATEWAY_URL="http://127.0.0.1:9091")),
        ("no work-time job", "full-stack.yml", lambda d: d["services"].pop("worktime")),
        ("Grafana dashboards mounted elsewhere", "full-stack.yml",
         lambda d: svc("grafana")(d).update(volumes=[v.replace("/var/lib/grafana/dashboards", "/dashboards")
                                                      for v in svc("grafana")(d)["volumes"]])),
        ("Grafana without the MySQL datasource variables", "full-stack.yml",
         lambda d: svc("grafana")(d)["environment"].pop("IOTFLOW_GRAFANA_MYSQL_PASSWORD")),
        ("Prometheus rules not mounted", "monitoring.yml",
         lambda d: svc("prometheus")(d).update(volumes=[v for v in svc("prometheus")(d)["volumes"]
                                                        if "rules" not in v])),
        ("Prometheus config from the wrong file", "full-stack.yml",
         lambda d: svc("prometheus")(d).update(volumes=[v.replace("./prometheus.yml", "../prometheus/prometheus.yml")
                                                        for v in svc("prometheus")(d)["volumes"]])),
        ("Elasticsearch with security on", "full-stack.yml",
         lambda d: env(d, "elasticsearch").update({"xpack.security.enabled": "true"})),
        ("ClickHouse 23", "full-stack.yml",
         lambda d: svc("clickhouse")(d).update(image="clickhouse/clickhouse-server:23.8")),
        ("monitoring images drift apart", "monitoring.yml",
         lambda d: svc("grafana")(d).update(image="grafana/grafana:10.0.0")),
        ("host networking with published ports", "monitoring.yml",
         lambda d: svc("pushgateway")(d).update(ports=["9091:9091"])),
    ]


def self_test(root):
    docs, compose_dir, p = load_all(root)
    if p or check_docs(docs, root, compose_dir, None):
        print("self-test: the committed files must pass before they can be broken")
        return False
    failures = 0
    for what, name, mutate in mutations():
        bad = copy.deepcopy(docs)
        mutate(bad[name])
        if bad == docs:
            print(f"self-test: '{what}' changed nothing")
            failures += 1
            continue
        if not check_docs(bad, root, compose_dir, None):
            print(f"self-test: '{what}' ({name}) was NOT caught")
            failures += 1
    # Interpolation: a variable without a default is an error.
    q = Problems()
    interpolate("${NO_DEFAULT}", "x", q)
    q2 = Problems()
    interpolate("${NEEDED:?set it}", "x", q2)
    if not q or not q2 or interpolate("$${A} ${B:-b} ${C-c}${D:+d}", "x", Problems()) != "${A} b c":
        print("self-test: interpolation")
        failures += 1
    n = len(mutations())
    print(f"self-test: {n} broken variants, each rejected" if not failures
          else f"self-test: {failures} failure(s)")
    return failures == 0


def main():
    parser = argparse.ArgumentParser(description="Static validation of deploy/compose.")
    parser.add_argument("--root", default=os.path.abspath(os.path.join(HERE, "..", "..")),
                        help="repository root holding deploy/compose (default: this repository)")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    if args.self_test:
        return 0 if self_test(root) else 1
    docs, compose_dir, p = load_all(root)
    notes = []
    p += check_docs(docs, root, compose_dir, notes)
    for problem in p:
        print(problem)
    if p:
        print(f"check_compose: {len(p)} problem(s)")
        return 1
    services = sum(len(d["services"]) for d in docs.values())
    print(f"check_compose: {', '.join(FILES)} ok ({services} services); " + "; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
