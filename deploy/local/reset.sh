#!/usr/bin/env bash
# Stop the local iotflow stack and delete its state (MariaDB data, broker logs, ClickHouse data,
# the Pushgateway's persisted metrics, Mosquitto's sessions);
# keeps the venv and the installed tools. The next deploy/local/start.sh starts from empty databases.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"

bash "$here/stop.sh"
rm -rf "${IOTFLOW_HOME:?}/mariadb" "${IOTFLOW_HOME:?}/tansu" "${IOTFLOW_CLICKHOUSE_DIR:?}" \
    "${IOTFLOW_PUSHGATEWAY_DIR:?}" "${IOTFLOW_MOSQUITTO_DIR:?}"
