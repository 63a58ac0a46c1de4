#!/usr/bin/env bash
# Static validation of deploy/compose: the compose files, the Prometheus config of the full stack,
# the hostfile and the Dockerfile (check_compose.py says what exactly), then negative self-tests
# that break copies of the files and require the check to fail. No Docker engine runs on the
# project's machines, so nothing here starts a container; `docker compose config` runs too when
# a Compose CLI happens to be installed.
# Needs python3 >= 3.11 with the packages of requirements.txt (jsonschema, PyYAML): the venv that
# deploy/local/install.sh fills ($IOTFLOW_HOME/venv, default .local/venv), else a python3 that
# has them, else a venv under .local/ that this script creates with pip; uses promtool when
# installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "deploy/compose/check.sh: FAIL: $*" >&2
    exit 1
}

# A python3 (3.11+, for tomllib) that can import jsonschema and yaml.
usable() { "$1" -c 'import sys, jsonschema, yaml, tomllib' >/dev/null 2>&1; }
py=""
for candidate in "${IOTFLOW_HOME:-$repo/.local}/venv/bin/python" python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
        py="$candidate"
        break
    fi
done
if [ -z "$py" ]; then
    venv="$repo/.local/compose-check-venv"
    if ! usable "$venv/bin/python" 2>/dev/null; then
        command -v python3 >/dev/null || fail "python3 is required"
        echo "jsonschema or PyYAML not importable: installing requirements.txt into $venv"
        python3 -m venv "$venv" || fail "cannot create $venv"
        "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt" ||
            fail "pip install -r deploy/compose/requirements.txt failed"
    fi
    usable "$venv/bin/python" || fail "$venv/bin/python cannot import jsonschema, yaml and tomllib (needs Python 3.11+)"
    py="$venv/bin/python"
fi

# 1. The files as committed.
"$py" "$here/check_compose.py" --root "$repo" || fail "static validation failed (see above)"

# 2. In-memory negative tests: ~35 kinds of breakage.
"$py" "$here/check_compose.py" --self-test --root "$repo" || fail "check_compose.py self-test"

# 3. On files: broken copies in a mirror of the repository must fail.
mirror="$tmp/repo"
mkdir -p "$mirror/deploy"
cp -r "$here" "$mirror/deploy/compose"
for path in deploy/grafana deploy/prometheus deploy/iotflow.example.toml Cargo.toml; do
    ln -s "$repo/$path" "$mirror/$path"
done
"$py" "$here/check_compose.py" --root "$mirror" >/dev/null || fail "the unbroken mirror does not pass"
expect_rejected() { # what, file in the mirror, replacement command run on a pristine copy
    local what="$1" file="$2"
    shift 2
    cp "$here/$file" "$tmp/pristine"
    "$@" <"$tmp/pristine" >"$mirror/deploy/compose/$file"
    if "$py" "$here/check_compose.py" --root "$mirror" >"$tmp/out.txt" 2>&1; then
        cat "$tmp/out.txt" >&2
        fail "a broken copy ($what) passed"
    fi
    echo "negative: broken $file ($what) rejected: $(head -n 1 "$tmp/out.txt")"
    cp "$tmp/pristine" "$mirror/deploy/compose/$file"
}
expect_rejected "YAML syntax error" full-stack.yml sed 's/^services:$/services: [/'
expect_rejected "misspelt service key (Compose schema)" full-stack.yml sed '0,/restart: unless-stopped/s//restarts: unless-stopped/'
expect_rejected "misspelt IOTFLOW__ key" full-stack.yml sed 's/IOTFLOW__MYSQL__URL:/IOTFLOW__MYSQL__URLL:/'
expect_rejected "Grafana published on 3001" full-stack.yml sed 's/:3000:3000/:3001:3000/'
expect_rejected "Prometheus config path missing" monitoring.yml sed 's#../prometheus/prometheus.yml#../prometheus/prometheus-missing.yml#'
expect_rejected "no cmake in the build stage" Dockerfile sed 's/cmake g++/g++/'
expect_rejected "hostfile with one process" hostfile head -n 1
expect_rejected "process 1 not scraped" prometheus.yml sed 's/iotflow-1:9250/iotflow-1:9249/'

# 4. Compose's own parser, when a Compose CLI is installed (not on the project's machines).
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    compose=()
fi
if [ "${#compose[@]}" -gt 0 ]; then
    for f in monitoring.yml full-stack.yml; do
        "${compose[@]}" -f "$here/$f" config -q || fail "${compose[*]} config rejects $f"
    done
    echo "compose: ${compose[*]} config accepts both files"
else
    echo "compose: no Compose CLI installed; Compose's own parser not run (static checks only)"
fi

echo "deploy/compose/check.sh: OK"
