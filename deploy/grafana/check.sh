#!/usr/bin/env bash
# Static checks of iotflow's Grafana dashboards and provisioning (Grafana itself cannot be
# installed on the project's machines, so nothing here loads them into a running Grafana):
#   1. the committed dashboards are exactly what generate.py writes (they stay generated);
#   2. every dashboard passes validate.py: dashboard.schema.json (jsonschema), unique panel ids,
#      grid, provisioned datasource uids, defined variables, metric names and labels of
#      metrics.json (written from the registry by crates/metrics/tests/metric_list.rs, read from
#      each expression's syntax tree by promql-parser), work-time SQL columns, and a PromQL
#      parse by promtool;
#   3. negative self-tests: broken copies must fail, a hand edit must be caught.
# Needs what deploy/local/install.sh installs: the packages of requirements.txt in
# $IOTFLOW_HOME/venv (default .local/venv), and promtool (Debian package prometheus). A python3
# that already has those packages is used when there is no such venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "deploy/grafana/check.sh: FAIL: $*" >&2
    exit 1
}

# A python with the packages of requirements.txt: the project's venv first.
has_packages() { "$1" -c 'import jsonschema, yaml, promql_parser' >/dev/null 2>&1; }
py=""
for candidate in "${IOTFLOW_HOME:-$repo/.local}/venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 && has_packages "$candidate"; then
        py="$candidate"
        break
    fi
done
[ -n "$py" ] || fail "no python with jsonschema, PyYAML and promql-parser: run bash deploy/local/install.sh"
command -v promtool >/dev/null || fail "promtool is required (Debian package prometheus): run bash deploy/local/install.sh"
cd "$repo"

# 1. Generated files are up to date, and nothing else lies in dashboards/.
"$py" "$here/generate.py" --out "$tmp/generated"
for f in "$tmp"/generated/*.json; do
    name="$(basename "$f")"
    [ -f "$here/dashboards/$name" ] || fail "dashboards/$name is missing: run python3 deploy/grafana/generate.py"
    if ! cmp -s "$f" "$here/dashboards/$name"; then
        diff -u "$here/dashboards/$name" "$f" | head -n 40 >&2 || true
        fail "dashboards/$name differs from what generate.py writes: edit generate.py, run it, commit both"
    fi
done
for f in "$here"/dashboards/*.json; do
    [ -f "$tmp/generated/$(basename "$f")" ] || fail "dashboards/$(basename "$f") is not produced by generate.py"
done
echo "generated: dashboards/*.json match generate.py"

# 2. The dashboards are valid.
"$py" "$here/validate.py" "$here"/dashboards/*.json ||
    fail "dashboard validation failed (see above)"

# 3a. In-memory negative tests: ~25 kinds of breakage per dashboard.
"$py" "$here/validate.py" --self-test "$here"/dashboards/*.json || fail "validate.py self-test"

# 3b. On files: a deliberately broken copy must fail validate.py, whichever way it is broken.
expect_rejected() { # what, file
    if "$py" "$here/validate.py" --no-promtool "$2" >"$tmp/out.txt" 2>&1; then
        cat "$tmp/out.txt" >&2
        fail "a broken dashboard ($1) passed validate.py"
    fi
    echo "negative: broken dashboard ($1) rejected: $(grep -v ': ok (' "$tmp/out.txt" | head -n 1)"
}
mkdir -p "$tmp/broken"
overview="$tmp/broken/iotflow-overview.json"
"$py" - "$here/dashboards/iotflow-overview.json" "$overview" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
d["panels"][3]["id"] = d["panels"][2]["id"]      # duplicate panel id
json.dump(d, open(sys.argv[2], "w"))
EOF
expect_rejected "duplicate panel id" "$overview"
sed 's/"uid": "iotflow-prometheus"/"uid": "prometheus"/' "$here/dashboards/iotflow-overview.json" >"$overview"
expect_rejected "unprovisioned datasource uid" "$overview"
sed 's/iotflow_sink_rows_written_total/iotflow_sink_rows_total/' "$here/dashboards/iotflow-overview.json" >"$overview"
expect_rejected "unknown metric name" "$overview"
sed 's/"schemaVersion": [0-9]*/"schemaVersion": "x"/' "$here/dashboards/iotflow-overview.json" >"$overview"
expect_rejected "schemaVersion not an integer" "$overview"
head -c 2000 "$here/dashboards/iotflow-overview.json" >"$overview"
expect_rejected "truncated JSON" "$overview"
devices="$tmp/broken/iotflow-devices.json"
sed 's/working_seconds/work_seconds/g' "$here/dashboards/iotflow-devices.json" >"$devices"
expect_rejected "SQL column not in device_work_time" "$devices"

# 3c. A hand edit of a committed dashboard is caught by the comparison of step 1.
sed 's/"title": "Consumer lag"/"title": "Consumer lag (edited)"/' "$here/dashboards/iotflow-overview.json" >"$tmp/edited.json"
if cmp -s "$tmp/edited.json" "$tmp/generated/iotflow-overview.json"; then
    fail "a hand-edited dashboard compared equal to the generated one"
fi
echo "negative: a hand edit of dashboards/iotflow-overview.json is detected"

# Provisioning: the dashboards folder the provider loads is where deploy/compose mounts them.
grep -q '^ *path: /var/lib/grafana/dashboards$' "$here/provisioning/dashboards/iotflow.yml" ||
    fail "provisioning/dashboards/iotflow.yml must load /var/lib/grafana/dashboards"
grep -q '^ *url: http://prometheus:9099$' "$here/provisioning/datasources/iotflow.yml" ||
    fail "the Prometheus datasource must point at http://prometheus:9099"

echo "deploy/grafana/check.sh: OK"
