#!/usr/bin/env bash
# Rescale the streaming job: bash deploy/k8s/scale.sh PROCESSES [NAMESPACE]
# A timely cluster's shape is fixed at start, so this stops it and starts it again in the new
# shape (docs/operations.md, "Scale"):
#   1. scale the StatefulSet to 0: every pod gets SIGTERM and drains (commits what its sinks
#      stored; the request is relayed, so the cluster drains together);
#   2. wait until no pod is left;
#   3. set IOTFLOW_PROCESSES and replicas to PROCESSES and wait until every pod is ready.
# Every partition resumes from its committed offset on whichever worker owns it in the new
# shape: nothing is lost or written twice.
set -euo pipefail

usage() {
    echo "usage: bash deploy/k8s/scale.sh PROCESSES [NAMESPACE]   (NAMESPACE default: iotflow)" >&2
    exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
n="$1"
ns="${2:-iotflow}"
[[ "$n" =~ ^[1-9][0-9]*$ ]] || usage
command -v kubectl >/dev/null || { echo "scale.sh: kubectl is not installed" >&2; exit 1; }
k=(kubectl -n "$ns")

echo "scale.sh: stopping statefulset/iotflow (SIGTERM: drain and commit)"
"${k[@]}" scale statefulset/iotflow --replicas=0
"${k[@]}" wait --for=delete pod -l app.kubernetes.io/name=iotflow --timeout=300s || true
left="$("${k[@]}" get pods -l app.kubernetes.io/name=iotflow -o name | wc -l)"
[ "$left" -eq 0 ] || { echo "scale.sh: $left pod(s) still there after 300 s; not starting a new shape" >&2; exit 1; }

echo "scale.sh: starting $n process(es)"
"${k[@]}" set env statefulset/iotflow IOTFLOW_PROCESSES="$n"
"${k[@]}" scale statefulset/iotflow --replicas="$n"
"${k[@]}" rollout status statefulset/iotflow --timeout=600s
"${k[@]}" wait --for=condition=Ready pod -l app.kubernetes.io/name=iotflow --timeout=600s
echo "scale.sh: iotflow runs as $n process(es)"
