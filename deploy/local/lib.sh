# shellcheck shell=bash
# Process helpers for the deploy/local scripts (sourced after env.sh).

# Print the pid recorded in PIDFILE if that process is alive and its name starts with COMM.
iotflow_pid_alive() {
    local pidfile="$1" comm="$2" pid name
    [ -s "$pidfile" ] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$pid" ] || return 1
    name="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    # A zombie (exited, not yet reaped) counts as gone.
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] || return 1
    case "$name" in
    "$comm"*) echo "$pid" ;;
    *) return 1 ;;
    esac
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
iotflow_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Fail (exit 2) if PORT is already taken by a process that is not ours.
iotflow_require_free_port() {
    local port="$1" what="$2" holder=""
    if iotflow_port_open "$port"; then
        if command -v ss >/dev/null 2>&1; then
            holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 3)"
        fi
        echo "iotflow: error: port $port for $what is already in use by another process" \
            "(not started by these scripts); stop it or choose another port." >&2
        [ -z "$holder" ] || echo "$holder" >&2
        exit 2
    fi
}

# Poll CHECK (a function/command) every 0.1 s until it succeeds, for at most TIMEOUT seconds.
# Fails with the tail of LOG if the process PID dies or the time runs out.
iotflow_wait_for() {
    local what="$1" timeout="$2" log="$3" pid="$4" check="$5"
    local deadline=$((SECONDS + timeout))
    while ! "$check"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "iotflow: error: $what exited during start-up; last lines of $log:" >&2
            tail -n 40 "$log" >&2 2>/dev/null || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "iotflow: error: $what not ready after ${timeout}s; last lines of $log:" >&2
            tail -n 40 "$log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
}

# Send SIGTERM to PID and wait up to TIMEOUT seconds for it to exit; SIGKILL after that.
iotflow_terminate() {
    local pid="$1" what="$2" timeout="${3:-30}" deadline
    kill -TERM "$pid" 2>/dev/null || return 0
    deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            iotflow_log "$what (pid $pid) did not stop after ${timeout}s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    iotflow_wait_gone "$pid" 10
}

# Wait until PID no longer exists (it may be a zombie of another parent: check /proc state).
iotflow_wait_gone() {
    local pid="$1" timeout="$2" deadline state
    deadline=$((SECONDS + timeout))
    while [ -e "/proc/$pid" ]; do
        state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
        [ "$state" != "Z" ] || return 0
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
