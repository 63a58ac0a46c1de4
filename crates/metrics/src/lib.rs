//! iotflow's metrics: one registry per process, typed per-operator handles, and the
//! Prometheus text endpoint.
//!
//! Every metric carries `job_name`, `job_id`, `operator` and `worker` labels (plus `sink`,
//! `partition` or `reason` where they apply, all bounded sets); never a device id. Operators
//! resolve their label sets once when they are built, so the hot path is one atomic add.

pub mod exposition;
pub mod history;
pub mod http;
mod log;
mod server;
pub mod signals;

use std::sync::Arc;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, TextEncoder};

pub use exposition::Exposition;
pub use http::{process_address, AddressError};
pub use log::RateLimitedLog;
pub use prometheus::{Gauge, GaugeVec, Histogram, IntCounter, IntGauge, Opts, Registry};
pub use server::{serve, serve_with, MetricsServer, ServerOptions};

/// The built-in web UI (one self-contained page: no external script or style).
pub const UI_HTML: &str = include_str!("ui.html");

/// Label names shared by every metric.
const BASE: &[&str] = &["job_name", "job_id", "operator", "worker"];

fn labels(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = BASE.to_vec();
    v.extend_from_slice(extra);
    v
}

/// A JSON page served next to `/metrics`: gets the query string (after `?`, may be empty).
pub type Route = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The most recent dead letters of a process (newest last), for the web UI: when, the reason
/// code, the reason, and where the record came from. Bounded; never holds payloads.
#[derive(Clone, Default)]
pub struct RecentDeadLetters(Arc<std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>>);

impl RecentDeadLetters {
    /// How many are kept.
    pub const KEEP: usize = 50;

    /// Notes one dead letter.
    pub fn note(&self, reason_code: &str, reason: &str, source: &str) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let reason: String = reason.chars().take(300).collect();
        let mut q = self.0.lock().expect("recent dead letters lock");
        q.push_back(serde_json::json!({
            "at": at, "reason_code": reason_code, "reason": reason, "source": source,
        }));
        while q.len() > Self::KEEP {
            q.pop_front();
        }
    }

    /// The kept dead letters as a JSON array, newest first.
    pub fn json(&self) -> String {
        let q = self.0.lock().expect("recent dead letters lock");
        serde_json::Value::Array(q.iter().rev().cloned().collect()).to_string()
    }
}

/// All metric families of one process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    routes: Arc<std::sync::RwLock<std::collections::HashMap<String, Route>>>,
    recent: RecentDeadLetters,
    /// Whether the process is ready for work, and why (not); `/readyz`.
    readiness: Arc<std::sync::Mutex<(bool, String)>>,
    job_name: String,
    job_id: String,
    messages_received: IntCounterVec,
    read_age: HistogramVec,
    parse_success: IntCounterVec,
    parse_failure: IntCounterVec,
    dlq_records: IntCounterVec,
    unknown_device: IntCounterVec,
    enriched: IntCounterVec,
    rows_written: IntCounterVec,
    batch_seconds: HistogramVec,
    e2e_seconds: HistogramVec,
    sink_errors: IntCounterVec,
    sink_retries: IntCounterVec,
    sink_items_rejected: IntCounterVec,
    sink_items_retried: IntCounterVec,
    sink_in_flight: IntGaugeVec,
    buffered_records: IntGaugeVec,
    offsets_committed: IntCounterVec,
    commit_failures: IntCounterVec,
    committed_offset: IntGaugeVec,
    consumer_lag: IntGaugeVec,
    dimension_devices: IntGaugeVec,
    dimension_updates: IntCounterVec,
    published: IntCounterVec,
    publish_lag: GaugeVec,
    publish_backlog: IntGaugeVec,
    publish_errors: IntCounterVec,
    snapshot_devices: IntGaugeVec,
}

impl Metrics {
    /// Sets what `/readyz` answers: 200 with `why` when `ready`, else 503 with `why` (starting,
    /// forming the cluster, loading, draining). A new registry is ready ("running"): jobs without
    /// phases need not say anything.
    pub fn set_readiness(&self, ready: bool, why: &str) {
        *self.readiness.lock().expect("readiness lock") = (ready, why.to_string());
    }

    /// Whether the process is ready, and why (not).
    pub fn readiness(&self) -> (bool, String) {
        self.readiness.lock().expect("readiness lock").clone()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("job_name", &self.job_name)
            .field("job_id", &self.job_id)
            .finish()
    }
}

fn counter(r: &Registry, name: &str, help: &str, extra: &[&'static str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &labels(extra)).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, extra: &[&'static str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &labels(extra)).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    extra: &[&'static str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets),
        &labels(extra),
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// A fresh `job_id` for a service process that has none configured (the device publisher, the
/// MQTT bridge): 16 hex digits of the start time in ns mixed with the process id, so two
/// processes started in the same instant differ.
pub fn new_job_id() -> String {
    format!(
        "{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((std::process::id() as u64) << 32)
    )
}

/// The version of this build (the workspace version).
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit of this build (`git rev-parse --short HEAD` when it was built), or "unknown".
pub const BUILD_COMMIT: &str = env!("IOTFLOW_GIT_COMMIT");

/// Registers what every Prometheus-instrumented service exposes besides its own metrics: the
/// process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_threads`, ...; Linux only) and `iotflow_build_info{version,
/// commit}` = 1. [`Metrics::new`] calls it; registries of their own (the worktime push) too.
pub fn register_service_telemetry(r: &Registry) {
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
    .expect("unique metric");
    let info = IntGaugeVec::new(
        Opts::new(
            "iotflow_build_info",
            "The iotflow build this process runs (always 1; see the labels).",
        ),
        &["version", "commit"],
    )
    .expect("valid metric");
    r.register(Box::new(info.clone())).expect("unique metric");
    info.with_label_values(&[BUILD_VERSION, BUILD_COMMIT])
        .set(1);
}

/// The Prometheus text exposition of `registry` (what `/metrics` serves and what is pushed to
/// the Pushgateway).
pub fn encode_text(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).expect("utf-8 exposition")
}

/// Latency buckets from 1 ms to 60 s, dense between 50 ms and 1 s where live end-to-end
/// latency sits (one epoch plus one batch delay plus the write).
fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
        1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

impl Metrics {
    /// Creates the registry and every metric family for one job process.
    pub fn new(job_name: &str, job_id: &str) -> Metrics {
        let r = Registry::new();
        // Uptime is time() - this; `iotflow status` and the web UI show it.
        let start = GaugeVec::new(
            Opts::new(
                "iotflow_process_start_time_seconds",
                "When this process started, Unix seconds (uptime = time() - this).",
            ),
            &["job_name", "job_id"],
        )
        .expect("valid metric");
        r.register(Box::new(start.clone())).expect("unique metric");
        start.with_label_values(&[job_name, job_id]).set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        register_service_telemetry(&r);
        Metrics {
            messages_received: counter(&r, "iotflow_kafka_messages_received_total", "Kafka messages read from the readings topic.", &[]),
            read_age: histogram(&r, "iotflow_kafka_read_age_seconds", "Age of a message when the source read it: from its Kafka timestamp to the poll that took it (the broker's and the fetch's share of the end-to-end latency).", &[], latency_buckets()),
            parse_success: counter(&r, "iotflow_parse_success_total", "Readings that parsed and validated.", &[]),
            parse_failure: counter(&r, "iotflow_parse_failure_total", "Readings rejected by the parser, by reason code.", &["reason"]),
            dlq_records: counter(&r, "iotflow_dlq_records_total", "Dead letters acknowledged by the dead-letter topic.", &[]),
            unknown_device: counter(&r, "iotflow_unknown_device_readings_total", "Readings of devices absent from the device dimension (stored with empty business columns).", &[]),
            enriched: counter(&r, "iotflow_enriched_readings_total", "Readings joined with the device dimension (known or not).", &[]),
            rows_written: counter(&r, "iotflow_sink_rows_written_total", "Rows durably written by a sink.", &["sink"]),
            batch_seconds: histogram(&r, "iotflow_sink_batch_write_seconds", "Time to write one batch, retries included.", &["sink"], latency_buckets()),
            e2e_seconds: histogram(&r, "iotflow_end_to_end_latency_seconds", "From the Kafka message timestamp to the durable write of the row.", &["sink"], latency_buckets()),
            sink_errors: counter(&r, "iotflow_sink_errors_total", "Failed write attempts, by kind (transient: retried; definite: job stops).", &["sink", "kind"]),
            sink_retries: counter(&r, "iotflow_sink_retries_total", "Batch write retries after transient errors.", &["sink"]),
            sink_items_rejected: counter(&r, "iotflow_sink_items_rejected_total", "Rows the store refused definitely (e.g. an Elasticsearch mapping error); each went to the dead-letter topic.", &["sink"]),
            sink_items_retried: counter(&r, "iotflow_sink_items_retried_total", "Rows sent again alone after the store refused them for now (e.g. an Elasticsearch bulk item with status 429 or 5xx).", &["sink"]),
            sink_in_flight: gauge(&r, "iotflow_sink_batches_in_flight", "Batches handed to a sink and not yet acknowledged.", &["sink"]),
            buffered_records: gauge(&r, "iotflow_buffered_records", "Records an operator holds in memory (enrich: readings waiting for the dimension; dead-letter-sink: letters awaiting the broker; sinks: rows buffered or in flight). They count into the back-pressure that pauses the worker's source.", &[]),
            offsets_committed: counter(&r, "iotflow_kafka_offset_commits_total", "Offset commits of completed epochs acknowledged by the broker.", &[]),
            commit_failures: counter(&r, "iotflow_kafka_offset_commit_failures_total", "Offset commits the broker refused (retried with the next epoch).", &[]),
            committed_offset: gauge(&r, "iotflow_kafka_committed_offset", "Last committed offset (next offset to read) per partition.", &["partition"]),
            consumer_lag: gauge(&r, "iotflow_kafka_consumer_lag", "Messages between the partition's high watermark and the consumer position.", &["partition"]),
            dimension_devices: gauge(&r, "iotflow_dimension_devices", "Devices in the device dimension as seen by this worker.", &[]),
            dimension_updates: counter(&r, "iotflow_dimension_updates_total", "Device business record changes applied to the dimension.", &[]),
            published: counter(&r, "iotflow_publisher_records_total", "Device records published to the broadcast topic and acknowledged, by kind (upsert or tombstone).", &["kind"]),
            publish_lag: {
                let g = GaugeVec::new(Opts::new("iotflow_publisher_lag_seconds", "Age of the oldest change in the last published round, from its commit in MySQL to the broker's acknowledgement (0 when idle)."), &labels(&[])).expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            publish_backlog: gauge(&r, "iotflow_publisher_backlog", "Changes in device_info_changes not yet published.", &[]),
            publish_errors: counter(&r, "iotflow_publisher_errors_total", "Publishing rounds that failed (MySQL or broker trouble; retried).", &[]),
            snapshot_devices: gauge(&r, "iotflow_publisher_snapshot_devices", "Devices in the full snapshot published at start.", &[]),
            routes: Arc::default(),
            recent: RecentDeadLetters::default(),
            readiness: Arc::new(std::sync::Mutex::new((true, "running".into()))),
            registry: r,
            job_name: job_name.to_string(),
            job_id: job_id.to_string(),
        }
    }

    /// The process's recent dead letters (served at `/api/dead-letters`).
    pub fn recent_dead_letters(&self) -> RecentDeadLetters {
        self.recent.clone()
    }

    /// Serves `handler`'s JSON at `path` (e.g. `/worktime/live`) on the metrics endpoint.
    pub fn add_route(&self, path: &str, handler: Route) {
        self.routes
            .write()
            .expect("routes lock")
            .insert(path.to_string(), handler);
    }

    /// The JSON of the page at `path`, if one is registered.
    pub fn route(&self, path: &str, query: &str) -> Option<String> {
        let handler = self.routes.read().expect("routes lock").get(path).cloned();
        handler.map(|h| h(query))
    }

    /// The `job_name` label of every metric.
    pub fn job_name(&self) -> &str {
        &self.job_name
    }

    /// The `job_id` label of every metric.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The registry, for exposition.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current exposition text.
    pub fn render(&self) -> String {
        encode_text(&self.registry)
    }

    fn base<'a>(&'a self, operator: &'a str, worker: &'a str) -> [&'a str; 4] {
        [&self.job_name, &self.job_id, operator, worker]
    }

    fn with<'a>(&'a self, operator: &'a str, worker: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = self.base(operator, worker).to_vec();
        v.extend_from_slice(extra);
        v
    }

    /// Handles for a Kafka source operator.
    pub fn source(&self, operator: &str, worker: usize) -> SourceMetrics {
        let w = worker.to_string();
        SourceMetrics {
            messages_received: self
                .messages_received
                .with_label_values(&self.base(operator, &w)),
            read_age: self.read_age.with_label_values(&self.base(operator, &w)),
            offsets_committed: self
                .offsets_committed
                .with_label_values(&self.base(operator, &w)),
            commit_failures: self
                .commit_failures
                .with_label_values(&self.base(operator, &w)),
            committed_offset: self.committed_offset.clone(),
            consumer_lag: self.consumer_lag.clone(),
            labels: [
                self.job_name.clone(),
                self.job_id.clone(),
                operator.to_string(),
                w,
            ],
        }
    }

    /// Handles for the parse operator.
    pub fn parse(&self, operator: &str, worker: usize) -> ParseMetrics {
        let w = worker.to_string();
        ParseMetrics {
            success: self
                .parse_success
                .with_label_values(&self.base(operator, &w)),
            failure: self.parse_failure.clone(),
            labels: [
                self.job_name.clone(),
                self.job_id.clone(),
                operator.to_string(),
                w,
            ],
        }
    }

    /// Records `operator` of `worker` holds in memory (see `iotflow_buffered_records`).
    pub fn buffered(&self, operator: &str, worker: usize) -> IntGauge {
        self.buffered_records
            .with_label_values(&self.base(operator, &worker.to_string()))
    }

    /// Handles for the dead-letter sink.
    pub fn dlq(&self, operator: &str, worker: usize) -> IntCounter {
        self.dlq_records
            .with_label_values(&self.base(operator, &worker.to_string()))
    }

    /// Handles for the enrichment operator.
    pub fn enrich(&self, operator: &str, worker: usize) -> EnrichMetrics {
        let w = worker.to_string();
        EnrichMetrics {
            enriched: self.enriched.with_label_values(&self.base(operator, &w)),
            unknown_device: self
                .unknown_device
                .with_label_values(&self.base(operator, &w)),
            devices: self
                .dimension_devices
                .with_label_values(&self.base(operator, &w)),
            updates: self
                .dimension_updates
                .with_label_values(&self.base(operator, &w)),
            held: self.buffered(operator, worker),
        }
    }

    /// Handles for the device publisher.
    pub fn publisher(&self) -> PublisherMetrics {
        let base = self.base("device-publisher", "0");
        let kind = |k: &str| {
            self.published
                .with_label_values(&self.with("device-publisher", "0", &[k]))
        };
        PublisherMetrics {
            upserts: kind("upsert"),
            tombstones: kind("tombstone"),
            lag_seconds: self.publish_lag.with_label_values(&base),
            backlog: self.publish_backlog.with_label_values(&base),
            errors: self.publish_errors.with_label_values(&base),
            snapshot_devices: self.snapshot_devices.with_label_values(&base),
        }
    }

    /// Handles for one sink operator.
    pub fn sink(&self, sink: &str, operator: &str, worker: usize) -> SinkMetrics {
        let w = worker.to_string();
        let l = self.with(operator, &w, &[sink]);
        let kind = |k: &str| {
            self.sink_errors
                .with_label_values(&self.with(operator, &w, &[sink, k]))
        };
        SinkMetrics {
            rows_written: self.rows_written.with_label_values(&l),
            batch_seconds: self.batch_seconds.with_label_values(&l),
            e2e_seconds: self.e2e_seconds.with_label_values(&l),
            transient_errors: kind("transient"),
            definite_errors: kind("definite"),
            retries: self.sink_retries.with_label_values(&l),
            items_rejected: self.sink_items_rejected.with_label_values(&l),
            items_retried: self.sink_items_retried.with_label_values(&l),
            in_flight: self.sink_in_flight.with_label_values(&l),
            held: self.buffered(operator, worker),
        }
    }
}

/// The device publisher's metrics.
#[derive(Clone)]
pub struct PublisherMetrics {
    /// Upserts published.
    pub upserts: IntCounter,
    /// Tombstones published.
    pub tombstones: IntCounter,
    /// Lag of the last round, seconds.
    pub lag_seconds: Gauge,
    /// Changes waiting.
    pub backlog: IntGauge,
    /// Failed rounds.
    pub errors: IntCounter,
    /// Devices in the start-up snapshot.
    pub snapshot_devices: IntGauge,
}

/// A Kafka source's metrics.
#[derive(Clone)]
pub struct SourceMetrics {
    /// Messages read.
    pub messages_received: IntCounter,
    /// Age of each message when read (now − its Kafka timestamp), seconds.
    pub read_age: Histogram,
    /// Commits acknowledged.
    pub offsets_committed: IntCounter,
    /// Commits refused.
    pub commit_failures: IntCounter,
    committed_offset: IntGaugeVec,
    consumer_lag: IntGaugeVec,
    labels: [String; 4],
}

impl SourceMetrics {
    fn per_partition(&self, vec: &IntGaugeVec, partition: i32) -> IntGauge {
        let p = partition.to_string();
        let [a, b, c, d] = &self.labels;
        vec.with_label_values(&[a.as_str(), b, c, d, &p])
    }

    /// Records the committed offset of `partition`.
    pub fn set_committed(&self, partition: i32, offset: i64) {
        self.per_partition(&self.committed_offset, partition)
            .set(offset);
    }

    /// Records the consumer lag of `partition`.
    pub fn set_lag(&self, partition: i32, lag: i64) {
        self.per_partition(&self.consumer_lag, partition).set(lag);
    }
}

/// The parser's metrics.
#[derive(Clone)]
pub struct ParseMetrics {
    /// Successful parses.
    pub success: IntCounter,
    failure: IntCounterVec,
    labels: [String; 4],
}

impl ParseMetrics {
    /// Counts one failure with its reason code.
    pub fn failure(&self, reason: &str) -> IntCounter {
        let [a, b, c, d] = &self.labels;
        self.failure
            .with_label_values(&[a.as_str(), b, c, d, reason])
    }
}

/// The enrichment operator's metrics.
#[derive(Clone)]
pub struct EnrichMetrics {
    /// Readings enriched (known device or not).
    pub enriched: IntCounter,
    /// Readings of unknown devices.
    pub unknown_device: IntCounter,
    /// Devices in the dimension.
    pub devices: IntGauge,
    /// Dimension changes applied.
    pub updates: IntCounter,
    /// Readings waiting for the dimension.
    pub held: IntGauge,
}

/// One sink's metrics.
#[derive(Clone)]
pub struct SinkMetrics {
    /// Rows written.
    pub rows_written: IntCounter,
    /// Batch latency.
    pub batch_seconds: Histogram,
    /// End-to-end latency.
    pub e2e_seconds: Histogram,
    /// Transient write errors.
    pub transient_errors: IntCounter,
    /// Definite write errors.
    pub definite_errors: IntCounter,
    /// Retries.
    pub retries: IntCounter,
    /// Rows refused definitely and dead-lettered.
    pub items_rejected: IntCounter,
    /// Rows resent alone after a for-now refusal.
    pub items_retried: IntCounter,
    /// Batches in flight.
    pub in_flight: IntGauge,
    /// Rows buffered or in flight.
    pub held: IntGauge,
}

/// Metrics that stand alone (for tests and tools that have no job).
pub fn detached() -> Arc<Metrics> {
    Arc::new(Metrics::new("detached", "0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_and_render() {
        let m = Metrics::new("job", "abc");
        m.source("kafka-source", 1).messages_received.inc_by(3);
        m.parse("parse", 1).failure("invalid_json").inc();
        m.sink("mysql", "mysql-sink", 0).batch_seconds.observe(0.01);
        m.source("kafka-source", 1).set_lag(4, 17);
        let text = m.render();
        assert!(text.contains(
            r#"iotflow_kafka_messages_received_total{job_id="abc",job_name="job",operator="kafka-source",worker="1"} 3"#
        ), "{text}");
        assert!(text.contains(r#"reason="invalid_json""#));
        assert!(text.contains(r#"iotflow_kafka_consumer_lag{job_id="abc",job_name="job",operator="kafka-source",partition="4",worker="1"} 17"#));
        assert!(text.contains("iotflow_sink_batch_write_seconds_bucket"));
    }

    #[test]
    fn every_registry_carries_process_and_build_telemetry() {
        let text = Metrics::new("job", "abc").render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
        let info =
            format!(r#"iotflow_build_info{{commit="{BUILD_COMMIT}",version="{BUILD_VERSION}"}} 1"#);
        assert!(text.contains(&info), "{text}");
        assert!(!BUILD_COMMIT.is_empty());
    }
}
