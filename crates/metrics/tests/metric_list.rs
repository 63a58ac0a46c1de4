//! The list of every metric family the registry exposes (name, type, label names), committed as
//! `deploy/grafana/metrics.json`: the Grafana validator (`deploy/grafana/validate.py`) checks
//! the dashboards' PromQL against it, so the list must come from the registry itself, not from
//! reading the Rust source.
//!
//! The test builds a [`Metrics`] registry, touches every family through the public handles
//! (a labelled family appears in the exposition only once it has a child), and compares what
//! the registry gathers with the committed file. When a family is added, renamed or relabelled
//! the test fails; regenerate the file with
//!
//! ```text
//! IOTFLOW_WRITE_METRIC_LIST=1 cargo test -p iotflow-metrics --test metric_list
//! ```
//!
//! and commit it. A new labelled family also needs a touch in [`touch_every_family`], or it is
//! missing from the list (and a dashboard that uses it fails validation).

use std::collections::BTreeSet;
use std::path::PathBuf;

use iotflow_metrics::Metrics;
use prometheus::proto::MetricType;
use serde_json::{json, Value};

/// The environment variable that makes the test write the list instead of comparing it.
const WRITE: &str = "IOTFLOW_WRITE_METRIC_LIST";

fn list_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/metrics.json")
}

/// Gives every labelled family one child, through the handles the operators use.
fn touch_every_family(m: &Metrics) {
    let source = m.source("source", 0);
    source.set_committed(0, 0);
    source.set_lag(0, 0);
    m.parse("parse", 0).failure("reason");
    m.buffered("enrich", 0);
    m.dlq("dead-letter-sink", 0);
    m.enrich("enrich", 0);
    m.publisher();
    m.sink("mysql", "sink", 0);
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

/// `{"metrics": [{name, type, labels}]}`, sorted by name, labels sorted; the labels of a
/// histogram are those of its series without `le`.
fn metric_list(m: &Metrics) -> Value {
    let mut families: Vec<Value> = m
        .registry()
        .gather()
        .iter()
        .map(|f| {
            let labels: BTreeSet<&str> = f
                .get_metric()
                .iter()
                .flat_map(|metric| metric.get_label().iter().map(|l| l.name()))
                .collect();
            json!({
                "name": f.name(),
                "type": type_name(f.get_field_type()),
                "labels": labels.into_iter().collect::<Vec<_>>(),
            })
        })
        .collect();
    families.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "//": format!(
            "Generated from the iotflow-metrics registry by crates/metrics/tests/metric_list.rs; \
             regenerate with {WRITE}=1 cargo test -p iotflow-metrics --test metric_list"
        ),
        "metrics": families,
    })
}

#[test]
fn committed_metric_list_matches_the_registry() {
    let m = Metrics::new("metric-list", "0");
    touch_every_family(&m);
    let list = metric_list(&m);
    let text = serde_json::to_string_pretty(&list).expect("JSON") + "\n";
    let path = list_path();
    if std::env::var_os(WRITE).is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let names = |v: &Value| -> BTreeSet<String> {
            v["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m.to_string())
                .collect()
        };
        let old = serde_json::from_str::<Value>(&committed).unwrap_or(Value::Null);
        let (old, new) = (names(&old), names(&list));
        panic!(
            "{} is stale; regenerate it with `{WRITE}=1 cargo test -p iotflow-metrics --test \
             metric_list` and commit it.\nonly in the file: {:?}\nonly in the registry: {:?}",
            path.display(),
            old.difference(&new).collect::<Vec<_>>(),
            new.difference(&old).collect::<Vec<_>>(),
        );
    }
}
