"""Static checks of deploy/k8s: every manifest against the Kubernetes schemas (strict, one fixed
version), then what the schemas cannot see: the references between the objects and the cluster
settings the iotflow processes derive their peers from. Exits non-zero naming the file and the
problem. Usage: check_k8s.py [--root REPO] [--kubernetes-version V]"""

import argparse
import pathlib
import re
import sys

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"


def load(root):
    docs = {}
    for path in sorted((root / "deploy/k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.setdefault(path.name, []).append(doc)
    return docs


def find(docs, kind, name=None):
    for file, items in docs.items():
        for d in items:
            if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
                return file, d
    return None, None


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def cross_check(root, docs):
    problems = []
    kustomization = yaml.safe_load((root / "deploy/k8s/kustomization.yaml").read_text())
    namespace = kustomization.get("namespace")
    listed = set(kustomization.get("resources", []))
    for file in docs:
        if file not in listed and file != "secret.example.yaml":
            problems.append(f"kustomization.yaml: {file} is not in resources")
    for file in listed:
        if not (root / "deploy/k8s" / file).exists():
            problems.append(f"kustomization.yaml: resource {file} does not exist")

    sts_file, sts = find(docs, "StatefulSet", "iotflow")
    if sts is None:
        return problems + ["no StatefulSet iotflow"]
    spec = sts["spec"]
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    if spec["selector"]["matchLabels"] != {k: labels.get(k) for k in spec["selector"]["matchLabels"]}:
        problems.append(f"{sts_file}: the selector does not match the pod labels")
    svc_file, headless = find(docs, "Service", spec["serviceName"])
    if headless is None:
        problems.append(f"{sts_file}: serviceName {spec['serviceName']} is not a Service")
    else:
        if headless["spec"].get("clusterIP") != "None":
            problems.append(f"{svc_file}: {spec['serviceName']} must be headless (clusterIP: None)")
        if not headless["spec"].get("publishNotReadyAddresses"):
            problems.append(f"{svc_file}: {spec['serviceName']} must publish not-ready addresses (peers meet before readiness)")
    if spec.get("updateStrategy", {}).get("type") != "OnDelete":
        problems.append(f"{sts_file}: updateStrategy must be OnDelete (a rolling update mixes cluster shapes)")
    container = pod["spec"]["containers"][0]
    env = env_of(container)
    for key in ["IOTFLOW_PROCESSES", "IOTFLOW_PROCESS", "IOTFLOW_PEERS", "IOTFLOW_CLUSTER_LISTEN"]:
        if key not in env:
            problems.append(f"{sts_file}: env {key} is missing")
    if problems:
        return problems
    if str(env["IOTFLOW_PROCESSES"]["value"]) != str(spec["replicas"]):
        problems.append(f"{sts_file}: IOTFLOW_PROCESSES {env['IOTFLOW_PROCESSES']['value']} != replicas {spec['replicas']}")
    if env["IOTFLOW_PROCESS"]["value"] != "auto":
        problems.append(f"{sts_file}: IOTFLOW_PROCESS must be auto (the pod's ordinal)")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    want = rf"^{re.escape(sts['metadata']['name'])}-\{{i\}}\.{re.escape(spec['serviceName'])}\.{re.escape(namespace or '')}\.svc(\.cluster\.local)?:(\d+)$"
    m = re.match(want, env["IOTFLOW_PEERS"]["value"])
    if not m:
        problems.append(f"{sts_file}: IOTFLOW_PEERS {env['IOTFLOW_PEERS']['value']!r} is not <statefulset>-{{i}}.<headless service>.<namespace>.svc...:port")
    elif int(m.group(2)) != ports.get("cluster"):
        problems.append(f"{sts_file}: IOTFLOW_PEERS port {m.group(2)} is not the container's cluster port {ports.get('cluster')}")
    listen_port = env["IOTFLOW_CLUSTER_LISTEN"]["value"].rsplit(":", 1)[-1]
    if int(listen_port) != ports.get("cluster"):
        problems.append(f"{sts_file}: IOTFLOW_CLUSTER_LISTEN port {listen_port} is not the cluster port")
    if headless is not None:
        svc_ports = {p["name"]: p["port"] for p in headless["spec"]["ports"]}
        if svc_ports.get("cluster") != ports.get("cluster"):
            problems.append(f"{svc_file}: the headless Service's cluster port is not the container's")

    # Probes, scrape annotations and references in every workload.
    _, config = find(docs, "ConfigMap")
    config_names = {d["metadata"]["name"] for items in docs.values() for d in items if d.get("kind") == "ConfigMap"}
    secret_file, secret = find(docs, "Secret", "iotflow-credentials")
    secret_keys = set((secret or {}).get("stringData", {}))
    workloads = []
    for file, items in docs.items():
        for d in items:
            if d.get("kind") in ("StatefulSet", "Deployment"):
                workloads.append((file, d, d["spec"]["template"]["spec"]))
            elif d.get("kind") == "CronJob":
                workloads.append((file, d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    for file, d, podspec in workloads:
        name = d["metadata"]["name"]
        for v in podspec.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in config_names:
                problems.append(f"{file}: {name} mounts ConfigMap {v['configMap']['name']}, which is not defined")
        for c in podspec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and (ref["name"] != "iotflow-credentials" or ref["key"] not in secret_keys):
                    problems.append(f"{file}: {name} reads secret {ref['name']}/{ref['key']}, not in secret.example.yaml")
                if e["name"].startswith("IOTFLOW__") and "value" in e and "PASSWORD" in e["name"]:
                    problems.append(f"{file}: {name} has a password in plain env {e['name']}")
            cports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                if d["kind"] == "CronJob":
                    continue
                p = c.get(probe, {}).get("httpGet")
                if not p:
                    problems.append(f"{file}: {name} has no {probe}")
                    continue
                if p["path"] != path or p["port"] not in ("metrics", cports.get("metrics")):
                    problems.append(f"{file}: {name} {probe} must GET {path} on the metrics port")
            annotations = d["spec"].get("template", {}).get("metadata", {}).get("annotations", {})
            if d["kind"] != "CronJob" and str(annotations.get("prometheus.io/port")) != str(cports.get("metrics")):
                problems.append(f"{file}: {name}: prometheus.io/port is not the metrics port")
    _, pdb = find(docs, "PodDisruptionBudget")
    if pdb is None:
        problems.append("no PodDisruptionBudget")
    elif pdb["spec"]["selector"]["matchLabels"].items() - labels.items():
        problems.append("pdb.yaml: the selector does not match the StatefulSet's pods")
    if config is not None and "iotflow.toml" in config["data"]:
        text = config["data"]["iotflow.toml"]
        if not re.search(r'^listen\s*=\s*"0\.0\.0\.0:%d"' % ports.get("metrics", 0), text, re.M):
            problems.append("configmap.yaml: metrics.listen must be 0.0.0.0:<metrics port> (probes and Prometheus come from outside the pod)")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=pathlib.Path(__file__).resolve().parents[2], type=pathlib.Path)
    ap.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = ap.parse_args()
    docs = load(args.root)
    problems = []
    for file, items in docs.items():
        for d in items:
            try:
                kubernetes_validate.validate(d, args.kubernetes_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{file}: {d.get('kind')}/{d.get('metadata', {}).get('name')}: {e.message} at {'/'.join(map(str, e.path))}")
            except Exception as e:  # noqa: BLE001 - a schema that is missing is a failure too
                problems.append(f"{file}: {d.get('kind')}: {e}")
    if not problems:
        problems = cross_check(args.root, docs)
    for p in problems:
        print(f"deploy/k8s: {p}", file=sys.stderr)
    if problems:
        return 1
    objects = sum(len(v) for v in docs.values())
    print(f"deploy/k8s: {objects} objects in {len(docs)} files valid against Kubernetes {args.kubernetes_version} (strict) and consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
