#!/usr/bin/env bash
# The streaming job end to end on local defaults:   bash deploy/local/demo.sh
#
# Starts MariaDB + the Kafka-protocol broker (installing them on a fresh machine), creates the
# topics, builds iotflow, publishes the business records of DEVICES devices, runs the simulator
# for DEMO_SECONDS at RATE readings/s (1% malformed, 2% from unknown devices) while the job runs
# with 2 workers, three alarm rules (one a geofence) and the rollups on, then shows what arrived
# where: the readings in iot_data, the alarm episodes (raised and cleared) in device_alarms, the
# hourly rollups, the busiest heat-map tiles and the longest tracks. DEMO_SECONDS=0 runs until
# Ctrl-C.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
cd "$IOTFLOW_REPO_ROOT"

DEMO_SECONDS="${DEMO_SECONDS:-30}"
RATE="${RATE:-2000}"
DEVICES="${DEVICES:-100}"
WORKERS="${WORKERS:-2}"

bash "$here/start.sh"
bash "$here/topics.sh"
echo "==> building iotflow (release)" >&2
cargo build --release -p iotflow --quiet
bin="$IOTFLOW_REPO_ROOT/target/release/iotflow"

count=0
if [ "$DEMO_SECONDS" != "0" ]; then
    count=$((DEMO_SECONDS * ${RATE%.*}))
fi
echo "==> simulator: $DEVICES devices, $RATE readings/s, ${count/#0/unlimited} readings" >&2
"$bin" gen --devices "$DEVICES" --rate "$RATE" --count "$count" --malformed 0.01 --unknown 0.02 &
gen_pid=$!

job_log="$IOTFLOW_HOME/demo-job.log"
echo "==> job: iotflow run -w $WORKERS --config deploy/iotflow.example.toml (log: $job_log)" >&2
echo "    metrics: http://127.0.0.1:9249/metrics   web UI: http://127.0.0.1:9249/" >&2
export IOTFLOW__JOB__IDLE_EXIT_SECS="${IOTFLOW__JOB__IDLE_EXIT_SECS:-5}"
# Alarms (docs/alarms.md): the simulator's metric wanders over 0..100, so "overheat" raises on
# a device above 90 for 3 s of event time and clears at or below 80; "cold" is a warning below 5.
export IOTFLOW__ALARMS__ENABLED="${IOTFLOW__ALARMS__ENABLED:-true}"
# "depot" is a geofence over a quarter of the simulator's area (30..32 N, 120..122 E).
demo_rules='[{id = "overheat", when = "above", value = "90", for_secs = 3, hysteresis = "10", severity = "critical"}, {id = "cold", when = "below", value = "5", severity = "warning"}, {id = "depot", when = "in_area", area = [[[120.0, 30.0], [121.0, 30.0], [121.0, 31.0], [120.0, 31.0]]], severity = "info"}]'
export IOTFLOW__ALARMS__RULES="${IOTFLOW__ALARMS__RULES:-$demo_rules}"
# Rollups, heat map and tracks (docs/rollups.md), in the web UI's "Where devices are".
export IOTFLOW__ROLLUPS__ENABLED="${IOTFLOW__ROLLUPS__ENABLED:-true}"
[ "$DEMO_SECONDS" = "0" ] && export IOTFLOW__JOB__IDLE_EXIT_SECS=0
"$bin" run -w "$WORKERS" --config deploy/iotflow.example.toml 2> >(tee "$job_log" >&2) &
job_pid=$!
trap 'kill $gen_pid $job_pid 2>/dev/null || true' INT TERM

sleep 3
if kill -0 "$job_pid" 2>/dev/null; then
    echo "==> a sample of the live metrics:" >&2
    curl -fsS http://127.0.0.1:9249/metrics | grep -E '^iotflow_(kafka_messages_received|parse_(success|failure)|sink_rows_written)_total' | head -8 || true
    echo "==> alarms in effect now (iotflow_alarms_active):" >&2
    curl -fsS http://127.0.0.1:9249/metrics | grep -E '^iotflow_alarms_active' | head -4 || true
fi
wait "$gen_pid"
wait "$job_pid"

sql() { mariadb -h127.0.0.1 -P"$MYSQL_PORT" -u"$MYSQL_USER" -p"$MYSQL_PASSWORD" "$MYSQL_DATABASE" -e "$1"; }
echo
echo "==> results in MariaDB ($IOTFLOW_TEST_MYSQL_URL, table iot_data):"
sql "SELECT COUNT(*) AS readings, COUNT(company) AS enriched, COUNT(*) - COUNT(company) AS unknown_device, COUNT(DISTINCT pboxid) AS devices, MIN(event_time), MAX(event_time) FROM iot_data"
sql "SELECT PARTITION_NAME, TABLE_ROWS FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'iot_data'"
sql "SELECT event_time, pboxid, metric, company, site, line FROM iot_data ORDER BY event_time DESC LIMIT 5"
stored="$(mariadb -h127.0.0.1 -P"$MYSQL_PORT" -u"$MYSQL_USER" -p"$MYSQL_PASSWORD" "$MYSQL_DATABASE" -N -e "SELECT COUNT(*) FROM iot_data")"
[ "${stored:-0}" -gt 0 ] || iotflow_die "the demo stored no reading; see $job_log"
if [ "$IOTFLOW__ALARMS__ENABLED" = "true" ]; then
    echo
    echo "==> alarm episodes in device_alarms (raised and cleared in event time; events on the topic iot-alarms):"
    sql "SELECT rule_id, severity, COUNT(*) AS episodes, SUM(cleared_at IS NOT NULL) AS cleared, SUM(cleared_at IS NULL) AS still_active FROM device_alarms GROUP BY rule_id, severity"
    sql "SELECT rule_id, pboxid, raised_at, raised_value, cleared_at, cleared_value FROM device_alarms WHERE cleared_at IS NOT NULL ORDER BY raised_at DESC LIMIT 5"
fi
if [ "$IOTFLOW__ROLLUPS__ENABLED" = "true" ]; then
    echo
    echo "==> rollups (iot_rollup_minute / _hour / _day, also in ClickHouse when its sink is on):"
    sql "SELECT bucket AS hour, COUNT(*) AS devices, SUM(readings) AS readings, MIN(metric_min), MAX(metric_max), ROUND(SUM(metric_sum) / SUM(readings), 2) AS avg FROM iot_rollup_hour GROUP BY bucket ORDER BY bucket DESC LIMIT 3"
    echo "==> busiest heat-map tiles of the latest hour (iot_heat_hour) and the longest tracks (iot_tracks):"
    sql "SELECT tile, COUNT(*) AS devices, SUM(readings) AS readings FROM iot_heat_hour WHERE bucket = (SELECT MAX(bucket) FROM iot_heat_hour) GROUP BY tile ORDER BY readings DESC LIMIT 3"
    sql "SELECT pboxid, day, points, ROUND(distance_m) AS metres, stops FROM iot_tracks ORDER BY distance_m DESC LIMIT 3"
fi
echo
echo "==> rejected records are in the Kafka topic iot-dlq (reason in the iotflow.reason header);"
echo "    the job log has the first of them: grep rejected $job_log"
echo "==> run again to process more (offsets are committed: nothing is read twice):"
echo "    bash deploy/local/demo.sh      stop the servers: bash deploy/local/stop.sh"
