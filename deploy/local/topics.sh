#!/usr/bin/env bash
# Create the iotflow topics on the local tansu broker if they are missing (idempotent):
#   iot-topic        $IOT_TOPIC_PARTITIONS partitions (default 8)
#   iot-broadcast    1 partition
#   iot-dlq          1 partition
#   iot-alarms       $IOT_TOPIC_PARTITIONS partitions: alarm events (alarms.topic), keyed by
#                    device like the readings (a device's events go to one partition)
#   iot-alarm-rules  1 partition: the alarm rule sets publish-devices publishes from MySQL
#                    (alarms.rules_topic, used only when set, e.g. to this name); every worker
#                    of the job reads the whole topic from the beginning
# A topic that exists with a different partition count (tansu cannot add partitions) is deleted
# and created again: the local broker keeps topics in memory only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/env.sh
source "$here/env.sh"
# shellcheck source=deploy/local/lib.sh
source "$here/lib.sh"

broker="tcp://127.0.0.1:${BROKER_PORT}"
[ -x "$IOTFLOW_TANSU_BIN" ] || iotflow_die "$IOTFLOW_TANSU_BIN not found; run deploy/local/start.sh first"
iotflow_port_open "$BROKER_PORT" || iotflow_die "no broker on 127.0.0.1:$BROKER_PORT; run deploy/local/start.sh first"

# name -> partition count of the existing topics.
existing_topics() {
    local json
    json="$(timeout 30 "$IOTFLOW_TANSU_BIN" topic list --broker "$broker" 2>&1)" ||
        { echo "$json" >&2; iotflow_die "tansu topic list failed against $broker"; }
    printf '%s' "$json" | "$IOTFLOW_HOME/venv/bin/python" -c '
import json, sys
for t in json.load(sys.stdin):
    if t.get("error_code", 0) == 0:
        print(t["name"], len(t.get("partitions") or []))
' || iotflow_die "could not parse 'tansu topic list' output: $json"
}

ensure_topic() {
    local name="$1" partitions="$2" have out
    have="$(awk -v n="$name" '$1 == n { print $2 }' <<<"$existing")"
    if [ -n "$have" ]; then
        [ "$have" = "$partitions" ] && return 0
        # The local broker keeps topics in memory only, so nothing durable is lost here: a
        # default topic with the wrong shape (auto-created by a client after a broker restart,
        # say) is made again with the right one, so the demo works after anything else ran.
        iotflow_log "topic $name has $have partitions, want $partitions: recreating it (the local broker keeps no data across restarts anyway)"
        if ! out="$(timeout 30 "$IOTFLOW_TANSU_BIN" topic delete "$name" --broker "$broker" 2>&1)"; then
            echo "$out" >&2
            iotflow_die "could not delete topic $name on $broker; run deploy/local/reset.sh"
        fi
    fi
    if ! out="$(timeout 30 "$IOTFLOW_TANSU_BIN" topic create "$name" --broker "$broker" \
        --partitions "$partitions" 2>&1)"; then
        case "$out" in
        *"already exists"*) return 0 ;; # created concurrently
        esac
        echo "$out" >&2
        iotflow_die "could not create topic $name ($partitions partitions) on $broker"
    fi
}

[[ "$IOT_TOPIC_PARTITIONS" =~ ^[1-9][0-9]*$ ]] || iotflow_die "IOT_TOPIC_PARTITIONS must be a positive integer, got '$IOT_TOPIC_PARTITIONS'"

existing="$(existing_topics)"
ensure_topic iot-topic "$IOT_TOPIC_PARTITIONS"
ensure_topic iot-broadcast 1
ensure_topic iot-dlq 1
ensure_topic iot-alarms "$IOT_TOPIC_PARTITIONS"
ensure_topic iot-alarm-rules 1
