//! The Kubernetes manifests (`deploy/k8s`) and the cluster addresses the processes derive from
//! them: the StatefulSet's environment, rendered by `iotflow peers` exactly as `iotflow run`
//! renders it, must name the StatefulSet's own pods through its headless Service, on the port
//! the container listens on, one per replica; and each pod's host name gives its index.
//! (`deploy/k8s/check.sh` validates the manifests against the Kubernetes schemas.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn k8s(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/k8s")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first value of `key:` in `text` (plain YAML scalars, quotes removed).
fn scalar(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.trim().trim_start_matches("- ");
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// The container's environment: `- name: X` followed by `value: Y`.
fn env(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.strip_prefix("- name: ") {
            if let Some(v) = lines.get(i + 1).and_then(|n| n.strip_prefix("value: ")) {
                out.insert(
                    name.trim().to_string(),
                    v.trim().trim_matches('"').to_string(),
                );
            }
        }
    }
    out
}

#[test]
fn the_statefulset_names_its_own_pods_as_peers() {
    let sts = k8s("statefulset.yaml");
    let svc = k8s("service.yaml");
    let namespace = scalar(&k8s("kustomization.yaml"), "namespace").expect("namespace");
    let name = scalar(&sts, "name").expect("StatefulSet name");
    let service = scalar(&sts, "serviceName").expect("serviceName");
    assert!(
        svc.contains(&format!("name: {service}")) && svc.contains("clusterIP: None"),
        "the headless Service {service} is in service.yaml"
    );
    let replicas: usize = scalar(&sts, "replicas").unwrap().parse().unwrap();
    let env = env(&sts);
    assert_eq!(
        env["IOTFLOW_PROCESSES"].parse::<usize>().unwrap(),
        replicas,
        "IOTFLOW_PROCESSES must equal replicas"
    );
    assert_eq!(env["IOTFLOW_PROCESS"], "auto");
    let listen = &env["IOTFLOW_CLUSTER_LISTEN"];
    let port = listen.rsplit_once(':').unwrap().1;
    assert!(
        sts.contains(&format!("containerPort: {port}")),
        "the container exposes the cluster port {port}"
    );
    for pod in 0..replicas {
        let out = Command::new(env!("CARGO_BIN_EXE_iotflow"))
            .args(["peers"])
            .env("IOTFLOW_PROCESSES", &env["IOTFLOW_PROCESSES"])
            .env("IOTFLOW_PEERS", &env["IOTFLOW_PEERS"])
            .env("HOSTNAME", format!("{name}-{pod}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("is process {pod} with --process auto")),
            "{text}"
        );
        let addresses: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').nth(1).unwrap())
            .collect();
        let want: Vec<String> = (0..replicas)
            .map(|i| format!("{name}-{i}.{service}.{namespace}.svc.cluster.local:{port}"))
            .collect();
        assert_eq!(addresses, want, "from pod {pod}");
    }
    // Five replicas render five names, the last iotflow-4.
    let out = Command::new(env!("CARGO_BIN_EXE_iotflow"))
        .args(["peers", "-n", "5"])
        .env("IOTFLOW_PEERS", &env["IOTFLOW_PEERS"])
        .env("HOSTNAME", format!("{name}-4"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("is process 4"), "{text}");
    assert!(
        text.contains(&format!(
            "4\t{name}-4.{service}.{namespace}.svc.cluster.local:{port}"
        )),
        "{text}"
    );
}
