//! The list of every metric family the registry exposes (name, type, label names), committed as
//! `deploy/grafana/metrics.json`: the Grafana validator (`deploy/grafana/validate.py`) checks
//! the dashboards' PromQL against it, so the list must come from the registry itself, not from
//! reading the Rust source.
//!
//! The test builds a [`Metrics`] registry, registers the families the alarm operators, the
//! MQTT bridge and the rollups add to it, touches every family through the public handles (a labelled family
//! appears in the exposition only once it has a child), and compares what the registry gathers
//! with the committed file. (It lives in the `iotflow` crate because that one sees every crate
//! that registers metrics.) When a family is added, renamed or relabelled
//! the test fails; regenerate the file with
//!
//! ```text
//! IOTFLOW_WRITE_METRIC_LIST=1 cargo test -p iotflow --test metric_list
//! ```
//!
//! and commit it. A new labelled family also needs a touch in [`touch_every_family`], or it is
//! missing from the list (and a dashboard that uses it fails validation).

use std::collections::BTreeSet;
use std::path::PathBuf;

use iotflow_metrics::Metrics;
use prometheus::proto::MetricType;
use serde_json::Value;

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
    let alarms = iotflow_alarms_flow::AlarmMetrics::register(m, m.job_name(), m.job_id());
    alarms.late(0);
    alarms.replayed(0);
    alarms.held(0);
    alarms.restored_active("rule", "warning");
    alarms.event(&iotflow_alarms::Event {
        rule: "rule".into(),
        pboxid: "p".into(),
        kind: iotflow_alarms::EventKind::Raised,
        severity: iotflow_alarms::Severity::Warning,
        at_ms: 0,
        value: Default::default(),
        first_ms: 0,
        last_ms: 0,
    });
    iotflow_mqtt_bridge::BridgeMetrics::register(m);
    iotflow_rollups::RollupMetrics::register(m);
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

/// One metric family of the list.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Family {
    name: String,
    kind: &'static str,
    labels: BTreeSet<String>,
}

/// Every family the registry gathers, sorted by name; the labels of a histogram are those of
/// its series without `le`.
fn families(m: &Metrics) -> Vec<Family> {
    let mut out: Vec<Family> = m
        .registry()
        .gather()
        .iter()
        .map(|f| Family {
            name: f.name().to_string(),
            kind: type_name(f.get_field_type()),
            labels: f
                .get_metric()
                .iter()
                .flat_map(|metric| metric.get_label().iter().map(|l| l.name().to_string()))
                .collect(),
        })
        .collect();
    out.sort();
    out
}

/// The file's text: one family per line, written by hand so that the text does not depend on
/// serde_json's map order (a feature another crate of the workspace may switch on).
fn render(families: &[Family]) -> String {
    let q = |s: &str| Value::String(s.to_string()).to_string();
    let lines: Vec<String> = families
        .iter()
        .map(|f| {
            let labels: Vec<String> = f.labels.iter().map(|l| q(l)).collect();
            format!(
                "    {{\"name\": {}, \"type\": {}, \"labels\": [{}]}}",
                q(&f.name),
                q(f.kind),
                labels.join(", ")
            )
        })
        .collect();
    format!(
        "{{\n  \"//\": {},\n  \"metrics\": [\n{}\n  ]\n}}\n",
        q(&format!(
            "Generated from the iotflow registry by jobs/cli/tests/metric_list.rs; \
             regenerate with {WRITE}=1 cargo test -p iotflow --test metric_list"
        )),
        lines.join(",\n")
    )
}

#[test]
fn committed_metric_list_matches_the_registry() {
    let m = Metrics::new("metric-list", "0");
    touch_every_family(&m);
    let list = families(&m);
    let text = render(&list);
    serde_json::from_str::<Value>(&text).expect("the list is valid JSON");
    let path = list_path();
    if std::env::var_os(WRITE).is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let old: BTreeSet<&str> = committed.lines().map(str::trim).collect();
        let new: BTreeSet<&str> = text.lines().map(str::trim).collect();
        panic!(
            "{} is stale; regenerate it with `{WRITE}=1 cargo test -p iotflow-metrics --test \
             metric_list` and commit it.\nonly in the file: {:?}\nonly in the registry: {:?}",
            path.display(),
            old.difference(&new).collect::<Vec<_>>(),
            new.difference(&old).collect::<Vec<_>>(),
        );
    }
}
