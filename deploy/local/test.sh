#!/usr/bin/env bash
# THE test command for iotflow:   bash deploy/local/test.sh [extra args for `cargo test`]
#
# 1. installs what is missing and starts MariaDB + tansu + ClickHouse + the Prometheus Pushgateway
#    (deploy/local/start.sh, idempotent),
# 2. creates the topics (deploy/local/topics.sh),
# 3. exports IOTFLOW_TEST_MYSQL_URL / IOTFLOW_TEST_BROKERS / IOTFLOW_TEST_CLICKHOUSE_URL /
#    IOTFLOW_TEST_PUSHGATEWAY_URL (deploy/local/env.sh),
# 4. checks deploy/prometheus (promtool), deploy/grafana and deploy/compose (static), runs cargo
#    fmt --check, cargo clippy -D warnings and cargo test --workspace.
# Exits non-zero on the first failing step. Services that this script started are stopped again
# when it exits; services that were already running are left alone. IOTFLOW_KEEP_SERVICES=1
# keeps everything running.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
# shellcheck source=deploy/local/lib.sh
source "$here/lib.sh"
cd "$IOTFLOW_REPO_ROOT"

# Which services are ours to stop at exit?
to_stop=()
iotflow_pid_alive "$IOTFLOW_MARIADB_RUN/mariadb.pid" mariadbd >/dev/null || to_stop+=(mariadb)
iotflow_pid_alive "$IOTFLOW_TANSU_DIR/tansu.pid" tansu >/dev/null || to_stop+=(tansu)
iotflow_pid_alive "$IOTFLOW_CLICKHOUSE_DIR/clickhouse.pid" clickhouse >/dev/null || to_stop+=(clickhouse)
iotflow_pid_alive "$IOTFLOW_PUSHGATEWAY_DIR/pushgateway.pid" prometheus-push >/dev/null || to_stop+=(pushgateway)
iotflow_pid_alive "$IOTFLOW_MOSQUITTO_DIR/mosquitto.pid" mosquitto >/dev/null || to_stop+=(mosquitto)

cleanup() {
    local rc=$?
    trap - EXIT
    if [ "${IOTFLOW_KEEP_SERVICES:-0}" != "1" ] && [ "${#to_stop[@]}" -gt 0 ]; then
        bash "$here/stop.sh" "${to_stop[@]}" || rc=$((rc == 0 ? 1 : rc))
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() {
    local name="$1"
    shift
    echo "==> $name" >&2
    local rc=0
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "iotflow: FAILED (exit $rc): $name" >&2
        exit "$rc"
    fi
}

ensure_rust_components() {
    local missing=()
    if command -v rustup >/dev/null 2>&1; then
        local installed
        installed="$(rustup component list --installed 2>/dev/null || true)"
        grep -q '^rustfmt' <<<"$installed" || missing+=(rustfmt)
        grep -q '^clippy' <<<"$installed" || missing+=(clippy)
        if [ "${#missing[@]}" -gt 0 ]; then
            rustup component add "${missing[@]}" ||
                iotflow_die "rust components missing and could not be installed: ${missing[*]}"
        fi
    else
        command -v rustfmt >/dev/null 2>&1 || iotflow_die "rustfmt not found (and no rustup to add it)"
        command -v cargo-clippy >/dev/null 2>&1 || iotflow_die "cargo-clippy not found (and no rustup to add it)"
    fi
}

step "start services (deploy/local/start.sh)" bash "$here/start.sh"
step "create topics (deploy/local/topics.sh)" bash "$here/topics.sh"
step "rustfmt/clippy components" ensure_rust_components
step "Prometheus config, rules and rule tests (deploy/prometheus/check.sh)" \
    bash "$IOTFLOW_REPO_ROOT/deploy/prometheus/check.sh"
step "Grafana dashboards: generated and schema-checked (deploy/grafana/check.sh)" \
    bash "$IOTFLOW_REPO_ROOT/deploy/grafana/check.sh"
step "compose files: static checks (deploy/compose/check.sh)" \
    bash "$IOTFLOW_REPO_ROOT/deploy/compose/check.sh"
step "Kubernetes manifests: schemas and cross-checks (deploy/k8s/check.sh)" \
    bash "$IOTFLOW_REPO_ROOT/deploy/k8s/check.sh"
step "cargo fmt --all -- --check" cargo fmt --all -- --check
step "cargo clippy --workspace --all-targets -- -D warnings" \
    cargo clippy --workspace --all-targets -- -D warnings
step "cargo test --workspace $*" cargo test --workspace "$@"
