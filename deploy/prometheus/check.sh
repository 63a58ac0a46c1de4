#!/usr/bin/env bash
# Validates the Prometheus setup in this directory (run in CI and before any change here):
#   1. promtool check config prometheus.yml   (and the rule files it loads)
#   2. the same config with targets/example.json.sample discovered as a targets file
#   3. promtool check rules rules/*.yml
#   4. promtool test rules tests/*.yml        (unit tests of every alert and recording rule)
# Usage, from any directory: bash deploy/prometheus/check.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

fail() {
    echo >&2
    echo "!!! deploy/prometheus/check.sh FAILED: $*" >&2
    exit 1
}

command -v promtool >/dev/null 2>&1 ||
    fail "promtool not found (Debian package 'prometheus'; run: bash deploy/local/install.sh)"
echo "== $(promtool --version 2>&1 | head -n 1)"

step() {
    local what="$1"
    shift
    echo "== $what: $*"
    "$@" || fail "$what ($*)"
}

# Expect one WARNING here: no targets/*.json exists until you add one (see README.md).
step "config" promtool check config prometheus.yml

# The example targets file is not loaded by default (its name does not end in .json, so a local
# Prometheus does not scrape hosts that do not exist); check it the way Prometheus would read it.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r prometheus.yml rules "$tmp"/
mkdir "$tmp/targets"
cp targets/example.json.sample "$tmp/targets/example.json"
step "config with targets/example.json.sample" promtool check config "$tmp/prometheus.yml"

step "rules" promtool check rules rules/*.yml
step "rule unit tests" promtool test rules tests/*.yml

echo "== deploy/prometheus/check.sh: all checks passed"
