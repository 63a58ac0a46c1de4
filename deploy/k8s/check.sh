#!/usr/bin/env bash
# Static validation of deploy/k8s (no Kubernetes cluster runs on the project's machines):
# check_k8s.py validates every manifest against the Kubernetes schemas (kubernetes-validate,
# strict, a fixed version) and cross-checks what the schemas cannot see (Service/ConfigMap/Secret
# references, IOTFLOW_PROCESSES = replicas, the peer DNS pattern against the StatefulSet and its
# headless Service, probes on the metrics port, the PDB's selector); then broken copies must fail.
# Needs python3 with the packages of requirements.txt: a venv under .local/ that this script
# creates with pip on first use (PyPI), reused afterwards.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "deploy/k8s/check.sh: FAIL: $*" >&2
    exit 1
}

venv="${IOTFLOW_HOME:-$repo/.local}/k8s-check-venv"
usable() { "$1" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; }
if ! usable "$venv/bin/python" 2>/dev/null; then
    command -v python3 >/dev/null || fail "python3 is required"
    echo "installing deploy/k8s/requirements.txt into $venv"
    python3 -m venv "$venv" || fail "cannot create $venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt" ||
        fail "pip install -r deploy/k8s/requirements.txt failed"
    usable "$venv/bin/python" || fail "$venv/bin/python cannot import kubernetes_validate and yaml"
fi
py="$venv/bin/python"

# 1. The files as committed.
"$py" "$here/check_k8s.py" --root "$repo" || fail "validation failed (see above)"

# 2. Broken copies in a mirror of the repository must fail.
mirror="$tmp/repo"
mkdir -p "$mirror/deploy"
cp -r "$here" "$mirror/deploy/k8s"
"$py" "$here/check_k8s.py" --root "$mirror" >/dev/null || fail "the unbroken mirror does not pass"
expect_rejected() { # what, file, sed expression applied to a pristine copy
    local what="$1" file="$2" expr="$3"
    cp "$here/$file" "$tmp/pristine"
    sed "$expr" <"$tmp/pristine" >"$mirror/deploy/k8s/$file"
    if "$py" "$here/check_k8s.py" --root "$mirror" >"$tmp/out.txt" 2>&1; then
        cat "$tmp/out.txt" >&2
        fail "a broken copy ($what) passed"
    fi
    echo "negative: broken $file ($what) rejected: $(head -n 1 "$tmp/out.txt")"
    cp "$tmp/pristine" "$mirror/deploy/k8s/$file"
}
expect_rejected "misspelt field (schema, strict)" statefulset.yaml 's/podManagementPolicy:/podManagmentPolicy:/'
expect_rejected "replicas without IOTFLOW_PROCESSES" statefulset.yaml 's/^  replicas: 2$/  replicas: 3/'
expect_rejected "peer pattern naming another Service" statefulset.yaml 's/iotflow-{i}.iotflow-peers/iotflow-{i}.iotflow-metrics/'
expect_rejected "peer port not the cluster port" statefulset.yaml 's/svc.cluster.local:2101/svc.cluster.local:2102/'
expect_rejected "readiness on /healthz" statefulset.yaml 's#path: /readyz#path: /healthz#'
expect_rejected "headless Service not headless" service.yaml 's/clusterIP: None/clusterIP: 10.0.0.10/'
expect_rejected "PDB selecting nothing" pdb.yaml 's/app.kubernetes.io\/name: iotflow$/app.kubernetes.io\/name: iotflw/'
expect_rejected "unknown secret key" publisher.yaml 's/key: mysql-url/key: mysql-uri/'
expect_rejected "metrics on loopback" configmap.yaml 's/listen = "0.0.0.0:9249"/listen = "127.0.0.1:9249"/'

echo "deploy/k8s/check.sh: OK"
