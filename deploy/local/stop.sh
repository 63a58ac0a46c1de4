#!/usr/bin/env bash
# Stop the local iotflow stack started by deploy/local/start.sh (idempotent). Only stops the
# processes recorded in our pid files; never touches other MariaDB, broker, ClickHouse or
# Pushgateway or Mosquitto instances.
# Usage: stop.sh [mariadb] [tansu] [clickhouse] [pushgateway] [mosquitto]     (default: all five)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
# shellcheck source=deploy/local/lib.sh
source "$here/lib.sh"

STOP_TIMEOUT="${IOTFLOW_STOP_TIMEOUT:-60}"
failed=0
stop_mariadb=0
stop_tansu=0
stop_clickhouse=0
stop_pushgateway=0
stop_mosquitto=0
[ "$#" -gt 0 ] || set -- mariadb tansu clickhouse pushgateway mosquitto
for arg in "$@"; do
    case "$arg" in
    mariadb) stop_mariadb=1 ;;
    tansu) stop_tansu=1 ;;
    clickhouse) stop_clickhouse=1 ;;
    pushgateway) stop_pushgateway=1 ;;
    mosquitto) stop_mosquitto=1 ;;
    *) iotflow_die "stop.sh: unknown service '$arg' (expected: mariadb, tansu, clickhouse, pushgateway, mosquitto)" ;;
    esac
done

# ---------------------------------------------------------------- tansu
tansu_pidfile="$IOTFLOW_TANSU_DIR/tansu.pid"
if [ "$stop_tansu" -eq 1 ]; then
    if pid="$(iotflow_pid_alive "$tansu_pidfile" tansu)"; then
        iotflow_terminate "$pid" tansu "$STOP_TIMEOUT" || { iotflow_log "tansu (pid $pid) is still there"; failed=1; }
    fi
    [ "$failed" -ne 0 ] || rm -f "$tansu_pidfile"
fi

# ---------------------------------------------------------------- Pushgateway
pushgateway_pidfile="$IOTFLOW_PUSHGATEWAY_DIR/pushgateway.pid"
if [ "$stop_pushgateway" -eq 1 ]; then
    pg_failed=0
    # SIGTERM makes the Pushgateway write its persistence file before it exits.
    if pid="$(iotflow_pid_alive "$pushgateway_pidfile" prometheus-push)"; then
        iotflow_terminate "$pid" pushgateway "$STOP_TIMEOUT" || { iotflow_log "pushgateway (pid $pid) is still there"; pg_failed=1; failed=1; }
    fi
    [ "$pg_failed" -ne 0 ] || rm -f "$pushgateway_pidfile"
fi

# ---------------------------------------------------------------- Mosquitto
mosquitto_pidfile="$IOTFLOW_MOSQUITTO_DIR/mosquitto.pid"
if [ "$stop_mosquitto" -eq 1 ]; then
    mq_failed=0
    # SIGTERM makes Mosquitto save its persistence file (sessions, queued messages) and exit.
    if pid="$(iotflow_pid_alive "$mosquitto_pidfile" mosquitto)"; then
        iotflow_terminate "$pid" mosquitto "$STOP_TIMEOUT" || { iotflow_log "mosquitto (pid $pid) is still there"; mq_failed=1; failed=1; }
    fi
    [ "$mq_failed" -ne 0 ] || rm -f "$mosquitto_pidfile"
fi

# ---------------------------------------------------------------- ClickHouse
clickhouse_pidfile="$IOTFLOW_CLICKHOUSE_DIR/clickhouse.pid"
if [ "$stop_clickhouse" -eq 1 ]; then
    ch_failed=0
    # SIGTERM is ClickHouse's clean shutdown (it finishes running queries and flushes buffers).
    if pid="$(iotflow_pid_alive "$clickhouse_pidfile" clickhouse)"; then
        iotflow_terminate "$pid" clickhouse "$STOP_TIMEOUT" || { iotflow_log "clickhouse (pid $pid) is still there"; ch_failed=1; failed=1; }
    fi
    [ "$ch_failed" -ne 0 ] || rm -f "$clickhouse_pidfile"
fi

# ---------------------------------------------------------------- MariaDB
mariadb_pidfile="$IOTFLOW_MARIADB_RUN/mariadb.pid"
if [ "$stop_mariadb" -eq 1 ] && pid="$(iotflow_pid_alive "$mariadb_pidfile" mariadbd)"; then
    # Clean shutdown through the socket as root; SIGTERM (also a clean shutdown) if that fails.
    if ! env -u MYSQL_HOST -u MYSQL_PWD -u MYSQL_UNIX_PORT mariadb-admin --no-defaults \
        --protocol=socket --socket="$IOTFLOW_MARIADB_SOCKET" -uroot --connect-timeout=5 \
        --shutdown-timeout="$STOP_TIMEOUT" shutdown >/dev/null 2>&1; then
        iotflow_log "mariadb-admin shutdown failed; sending SIGTERM to mariadbd (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if ! iotflow_wait_gone "$pid" "$STOP_TIMEOUT"; then
        iotflow_log "mariadbd (pid $pid) did not stop within ${STOP_TIMEOUT}s; see $IOTFLOW_MARIADB_RUN/error.log"
        failed=1
    fi
fi

[ "$failed" -eq 0 ] || iotflow_die "could not stop every service"
