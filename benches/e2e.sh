#!/usr/bin/env bash
# End-to-end benchmark of the iotflow job on the local stack (see docs/benchmarks.md):
#     bash benches/e2e.sh [READINGS] [WORKERS]      # defaults 200000 and 2
# Builds the release binaries, starts the local stack (MariaDB, tansu, ClickHouse) if it is not
# running, then runs target/release/e2e, which prints one markdown report (also saved to
# target/e2e/report.md). Extra arguments after the two positionals go to e2e (e.g. --rounds 2,
# --keep, --no-clickhouse, --no-elasticsearch, --all-sinks N, --no-dimension-sizes,
# --no-processes; see --help).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

readings="${1:-200000}"
workers="${2:-2}"
shift $(($# > 2 ? 2 : $#))

cargo build --release -p iotflow -p iotflow-benches
bash deploy/local/start.sh >&2
# shellcheck source=deploy/local/env.sh
source deploy/local/env.sh

target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target/e2e"
export IOTFLOW_E2E_COMMAND="bash benches/e2e.sh $readings $workers${*:+ $*}"
"$target/release/e2e" "$readings" "$workers" \
    --iotflow "$target/release/iotflow" \
    --brokers "$IOTFLOW_TEST_BROKERS" \
    --mysql-url "$IOTFLOW_TEST_MYSQL_URL" \
    --clickhouse-url "$IOTFLOW_TEST_CLICKHOUSE_URL" \
    --log-dir "$target/e2e" \
    "$@" | tee "$target/e2e/report.md"
