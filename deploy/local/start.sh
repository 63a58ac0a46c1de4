#!/usr/bin/env bash
# Start the local iotflow stack (idempotent): MariaDB on 127.0.0.1:$MYSQL_PORT, the tansu
# Kafka-protocol broker (memory storage) on 127.0.0.1:$BROKER_PORT, ClickHouse on
# 127.0.0.1:$CLICKHOUSE_HTTP_PORT (HTTP) / $CLICKHOUSE_TCP_PORT (native) and the Prometheus
# Pushgateway on 127.0.0.1:$PUSHGATEWAY_PORT and Mosquitto on 127.0.0.1:$MQTT_PORT. Installs what
# is missing first.
# Services run detached and survive the calling shell; stop them with deploy/local/stop.sh.
# Prints one line per service. Exit status 2 means a port is held by something that is not ours.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
# shellcheck source=deploy/local/lib.sh
source "$here/lib.sh"

bash "$here/install.sh"

MARIADB_TIMEOUT="${IOTFLOW_MARIADB_TIMEOUT:-120}"
TANSU_TIMEOUT="${IOTFLOW_TANSU_TIMEOUT:-60}"
CLICKHOUSE_TIMEOUT="${IOTFLOW_CLICKHOUSE_TIMEOUT:-60}"
PUSHGATEWAY_TIMEOUT="${IOTFLOW_PUSHGATEWAY_TIMEOUT:-30}"
MOSQUITTO_TIMEOUT="${IOTFLOW_MOSQUITTO_TIMEOUT:-30}"

# ---------------------------------------------------------------- MariaDB
start_mariadb() {
    local data="$IOTFLOW_MARIADB_DATA" run="$IOTFLOW_MARIADB_RUN"
    local pidfile="$run/mariadb.pid" errlog="$run/error.log" pid

    pid="$(iotflow_pid_alive "$pidfile" mariadbd)" || pid=""
    if [ -n "$pid" ]; then
        # Ours and alive: make sure it is usable (it may still be starting).
        mariadb_login_ready && return 0
        iotflow_wait_for "MariaDB" "$MARIADB_TIMEOUT" "$errlog" "$pid" mariadb_alive
        provision_mariadb
        mariadb_check_login
        return 0
    fi

    iotflow_require_free_port "$MYSQL_PORT" "MariaDB (MYSQL_PORT)"

    # Run as user mysql; if it cannot reach $IOTFLOW_HOME (e.g. a checkout under /root, mode 700),
    # fall back to root for this loopback-only test instance.
    local user=mysql
    mkdir -p "$data" "$run"
    chown mysql:mysql "$data" "$run"
    chmod 750 "$data" "$run"
    if ! runuser -u mysql -- test -w "$data" 2>/dev/null || ! runuser -u mysql -- test -w "$run" 2>/dev/null; then
        iotflow_log "user mysql cannot write under $IOTFLOW_HOME (a parent directory lacks o+x); running MariaDB as root"
        user=root
        chown -R root:root "$data" "$run"
    fi

    if [ ! -d "$data/mysql" ]; then
        if ! mariadb-install-db --no-defaults --user="$user" --datadir="$data" --skip-test-db \
            --auth-root-authentication-method=socket >"$run/install-db.log" 2>&1; then
            tail -n 30 "$run/install-db.log" >&2
            iotflow_die "mariadb-install-db failed for $data (log: $run/install-db.log)"
        fi
    fi

    rm -f "$pidfile" "$IOTFLOW_MARIADB_SOCKET"
    setsid mariadbd --no-defaults --user="$user" --datadir="$data" \
        --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
        --socket="$IOTFLOW_MARIADB_SOCKET" --pid-file="$pidfile" --log-error="$errlog" \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        --max-connections=500 --max-allowed-packet=64M --local-infile=ON \
        --skip-name-resolve --default-time-zone=+00:00 \
        </dev/null >>"$run/mariadbd.out" 2>&1 &
    pid=$!
    iotflow_wait_for "MariaDB" "$MARIADB_TIMEOUT" "$errlog" "$pid" mariadb_alive
    provision_mariadb
    mariadb_check_login
}

# The client honours MYSQL_HOST / MYSQL_PWD / MYSQL_UNIX_PORT from the environment; keep them out.
mariadb_client() {
    env -u MYSQL_HOST -u MYSQL_PWD -u MYSQL_UNIX_PORT -u MYSQL_TCP_PORT "$@"
}

mariadb_root() {
    mariadb_client mariadb --no-defaults --protocol=socket --socket="$IOTFLOW_MARIADB_SOCKET" -uroot "$@"
}

# Server accepts connections (only liveness: ping exits 0 even on "Access denied").
mariadb_alive() {
    mariadb_client mariadb-admin --no-defaults --protocol=socket --socket="$IOTFLOW_MARIADB_SOCKET" \
        -uroot --connect-timeout=2 ping >/dev/null 2>&1
}

# The real readiness check: log in over TCP as the job's user and run SELECT 1.
MARIADB_LOGIN_ERR=""
mariadb_login_ready() {
    local out
    if out="$(mariadb_client env MYSQL_PWD="$MYSQL_PASSWORD" mariadb --no-defaults --protocol=tcp \
        -h127.0.0.1 -P"$MYSQL_PORT" -u"$MYSQL_USER" --connect-timeout=2 -D"$MYSQL_DATABASE" \
        -N -B -e 'SELECT 1' 2>&1)" && [ "$out" = "1" ]; then
        return 0
    fi
    MARIADB_LOGIN_ERR="$out"
    return 1
}

# Login as $MYSQL_USER must work within a few seconds of provisioning; fail with the error if not.
mariadb_check_login() {
    local deadline=$((SECONDS + 10))
    until mariadb_login_ready; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$MARIADB_LOGIN_ERR" >&2
            iotflow_die "MariaDB is up but '$MYSQL_USER'@127.0.0.1:$MYSQL_PORT cannot log in and SELECT 1 on '$MYSQL_DATABASE'"
        fi
        sleep 0.1
    done
}

# Quote a string literal for MariaDB (backslash is an escape character there).
sql_quote() {
    local v="${1//\\/\\\\}"
    printf "'%s'" "${v//\'/\'\'}"
}

provision_mariadb() {
    local db="$MYSQL_DATABASE" pw user
    pw="$(sql_quote "$MYSQL_PASSWORD")"
    user="$(sql_quote "$MYSQL_USER")"
    # Also grant on databases named "<db>_*" so tests can create isolated scratch databases.
    if ! mariadb_root --batch >"$IOTFLOW_MARIADB_RUN/provision.log" 2>&1 <<SQL; then
CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS $user@'127.0.0.1' IDENTIFIED BY $pw;
CREATE USER IF NOT EXISTS $user@'localhost' IDENTIFIED BY $pw;
ALTER USER $user@'127.0.0.1' IDENTIFIED BY $pw;
ALTER USER $user@'localhost' IDENTIFIED BY $pw;
GRANT ALL PRIVILEGES ON \`$db\`.* TO $user@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`$db\`.* TO $user@'localhost';
GRANT ALL PRIVILEGES ON \`${db//_/\\_}\\_%\`.* TO $user@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`${db//_/\\_}\\_%\`.* TO $user@'localhost';
FLUSH PRIVILEGES;
SQL
        cat "$IOTFLOW_MARIADB_RUN/provision.log" >&2
        iotflow_die "could not create database $db / user $MYSQL_USER in MariaDB"
    fi
}

# ---------------------------------------------------------------- tansu
start_tansu() {
    local dir="$IOTFLOW_TANSU_DIR" pidfile="$IOTFLOW_TANSU_DIR/tansu.pid"
    local log="$IOTFLOW_TANSU_DIR/tansu.log" pid url="tcp://127.0.0.1:${BROKER_PORT}"

    pid="$(iotflow_pid_alive "$pidfile" tansu)" || pid=""
    if [ -n "$pid" ]; then
        iotflow_wait_for "tansu" "$TANSU_TIMEOUT" "$log" "$pid" tansu_ready
        return 0
    fi

    iotflow_require_free_port "$BROKER_PORT" "tansu (BROKER_PORT)"
    mkdir -p "$dir"
    rm -f "$pidfile"
    # Never RUST_LOG=info: tansu logs every request at info (gigabytes).
    env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG="${TANSU_RUST_LOG:-warn}" \
        setsid "$IOTFLOW_TANSU_BIN" broker \
        --listener-url "$url" --advertised-listener-url "$url" \
        --storage-engine memory://tansu/ \
        </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    iotflow_wait_for "tansu" "$TANSU_TIMEOUT" "$log" "$pid" tansu_ready
}

# Port open first (tansu's client retries a refused connection for ~27 s), then a real request.
tansu_ready() {
    iotflow_port_open "$BROKER_PORT" &&
        timeout 5 "$IOTFLOW_TANSU_BIN" topic list --broker "tcp://127.0.0.1:${BROKER_PORT}" >/dev/null 2>&1
}

# ---------------------------------------------------------------- ClickHouse
start_clickhouse() {
    local dir="$IOTFLOW_CLICKHOUSE_DIR" pidfile="$IOTFLOW_CLICKHOUSE_DIR/clickhouse.pid"
    local log="$IOTFLOW_CLICKHOUSE_DIR/log/clickhouse-server.err.log" pid

    pid="$(iotflow_pid_alive "$pidfile" clickhouse)" || pid=""
    if [ -n "$pid" ]; then
        iotflow_wait_for "ClickHouse" "$CLICKHOUSE_TIMEOUT" "$log" "$pid" clickhouse_ready
        return 0
    fi

    iotflow_require_free_port "$CLICKHOUSE_HTTP_PORT" "ClickHouse HTTP (CLICKHOUSE_HTTP_PORT)"
    iotflow_require_free_port "$CLICKHOUSE_TCP_PORT" "ClickHouse native (CLICKHOUSE_TCP_PORT)"
    mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
    # The config is regenerated on every start so that changed ports take effect.
    sed -e "s|@DIR@|$dir|g" -e "s|@HTTP_PORT@|$CLICKHOUSE_HTTP_PORT|g" \
        -e "s|@TCP_PORT@|$CLICKHOUSE_TCP_PORT|g" \
        "$here/clickhouse/config.xml.in" >"$dir/config.xml"
    cp "$here/clickhouse/users.xml" "$dir/users.xml"
    rm -f "$pidfile"
    # stdout/stderr catch what happens before the logger is set up (e.g. a bad config).
    setsid /usr/sbin/clickhouse-server --config-file="$dir/config.xml" \
        </dev/null >>"$dir/clickhouse-server.out" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    if ! (iotflow_wait_for "ClickHouse" "$CLICKHOUSE_TIMEOUT" "$log" "$pid" clickhouse_ready); then
        tail -n 10 "$dir/clickhouse-server.out" >&2 2>/dev/null || true
        exit 1
    fi
}

# /ping answers "Ok." as soon as the HTTP server is up; SELECT 1 proves that queries run.
clickhouse_ready() {
    local url="http://127.0.0.1:${CLICKHOUSE_HTTP_PORT}"
    [ "$(curl -fsS --max-time 2 "$url/ping" 2>/dev/null)" = "Ok." ] &&
        [ "$(curl -fsS --max-time 5 --data-binary 'SELECT 1' "$url/" 2>/dev/null)" = "1" ]
}

# ---------------------------------------------------------------- Pushgateway
start_pushgateway() {
    local dir="$IOTFLOW_PUSHGATEWAY_DIR" pidfile="$IOTFLOW_PUSHGATEWAY_DIR/pushgateway.pid"
    local log="$IOTFLOW_PUSHGATEWAY_DIR/pushgateway.log" pid

    # /proc/PID/comm is cut to 15 characters: "prometheus-push".
    pid="$(iotflow_pid_alive "$pidfile" prometheus-push)" || pid=""
    if [ -n "$pid" ]; then
        iotflow_wait_for "Pushgateway" "$PUSHGATEWAY_TIMEOUT" "$log" "$pid" pushgateway_ready
        return 0
    fi

    iotflow_require_free_port "$PUSHGATEWAY_PORT" "Pushgateway (PUSHGATEWAY_PORT)"
    mkdir -p "$dir"
    rm -f "$pidfile"
    # Pushed metrics survive a restart: they are written to the persistence file on SIGTERM (and
    # at most every --persistence.interval, default 5m) and loaded again at start.
    setsid /usr/bin/prometheus-pushgateway \
        --web.listen-address="127.0.0.1:${PUSHGATEWAY_PORT}" \
        --persistence.file="$dir/pushgateway.data" \
        </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    iotflow_wait_for "Pushgateway" "$PUSHGATEWAY_TIMEOUT" "$log" "$pid" pushgateway_ready
}

pushgateway_ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:${PUSHGATEWAY_PORT}/-/ready" >/dev/null 2>&1
}

# ---------------------------------------------------------------- Mosquitto
start_mosquitto() {
    local dir="$IOTFLOW_MOSQUITTO_DIR" pidfile="$IOTFLOW_MOSQUITTO_DIR/mosquitto.pid"
    local log="$IOTFLOW_MOSQUITTO_DIR/mosquitto.log" conf="$IOTFLOW_MOSQUITTO_DIR/mosquitto.conf" pid

    pid="$(iotflow_pid_alive "$pidfile" mosquitto)" || pid=""
    if [ -n "$pid" ]; then
        iotflow_wait_for "Mosquitto" "$MOSQUITTO_TIMEOUT" "$log" "$pid" mosquitto_ready
        return 0
    fi

    iotflow_require_free_port "$MQTT_PORT" "Mosquitto (MQTT_PORT)"
    mkdir -p "$dir/data"
    rm -f "$pidfile"
    # - persistence: sessions and their queued QoS 1 messages survive a broker restart (written
    #   every autosave_interval seconds and at a clean stop);
    # - max_queued_messages 0: no cap on what waits for a disconnected persistent session (the
    #   default of 1000 drops QoS 1 messages while the bridge is down or slow);
    # - max_inflight_messages: QoS 1 messages sent to a client and not yet acknowledged. The bridge
    #   acknowledges only after Kafka did, so this window bounds its throughput (default 20).
    cat >"$conf" <<CONF
listener ${MQTT_PORT} 127.0.0.1
allow_anonymous true
persistence true
persistence_location ${dir}/data/
autosave_interval 5
max_queued_messages 0
max_inflight_messages 1000
log_dest file ${log}
log_type error
log_type warning
log_type notice
CONF
    # Runs as the calling user (as root, mosquitto switches to user "mosquitto", which may not
    # reach this directory): "user" in the config names the current one.
    echo "user $(id -un)" >>"$conf"
    setsid /usr/sbin/mosquitto -c "$conf" </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    iotflow_wait_for "Mosquitto" "$MOSQUITTO_TIMEOUT" "$log" "$pid" mosquitto_ready
}

mosquitto_ready() {
    iotflow_port_open "$MQTT_PORT"
}

start_mariadb
echo "mariadb: mysql://${MYSQL_USER}@127.0.0.1:${MYSQL_PORT}/${MYSQL_DATABASE} (socket $IOTFLOW_MARIADB_SOCKET)"
start_tansu
echo "tansu:   127.0.0.1:${BROKER_PORT} (memory storage, log $IOTFLOW_TANSU_DIR/tansu.log)"
start_clickhouse
echo "clickhouse: ${IOTFLOW_TEST_CLICKHOUSE_URL} (native 127.0.0.1:${CLICKHOUSE_TCP_PORT}, user default, log $IOTFLOW_CLICKHOUSE_DIR/log)"
start_pushgateway
echo "pushgateway: ${IOTFLOW_TEST_PUSHGATEWAY_URL} (persistence $IOTFLOW_PUSHGATEWAY_DIR/pushgateway.data, log $IOTFLOW_PUSHGATEWAY_DIR/pushgateway.log)"
start_mosquitto
echo "mosquitto: mqtt://127.0.0.1:${MQTT_PORT} (persistent sessions in $IOTFLOW_MOSQUITTO_DIR/data, log $IOTFLOW_MOSQUITTO_DIR/mosquitto.log)"
