//! `iotflow status`: what `flink list` was for the old system. Reads the metrics endpoints of
//! running iotflow processes (streaming job processes and the device publisher), scrapes each
//! twice an interval apart, and prints one line per process: job, uptime, throughput, consumer
//! lag, sink state; or DOWN with the reason when an endpoint does not answer.
//!
//! HTTP through reqwest (blocking), the text format through iotflow's one parser
//! (`iotflow_metrics::exposition`), the table through comfy-table.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use iotflow_config::Config;
use iotflow_metrics::Exposition;
use serde_json::{json, Value};

/// `iotflow status` arguments.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Configuration file (TOML): without --endpoint or --targets, the endpoints are
    /// `metrics.listen` (+ p for process p) and `publisher.metrics_listen`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// A metrics endpoint `host:port` to read (repeatable).
    #[arg(long = "endpoint", short = 'e', value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// A Prometheus file_sd JSON file (as in deploy/prometheus/targets/): every target in it
    /// (repeatable).
    #[arg(long, value_name = "FILE")]
    pub targets: Vec<PathBuf>,
    /// Without --endpoint/--targets: the streaming job's processes 0..N (ports
    /// `metrics.listen` + p).
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// Without --endpoint/--targets: leave out the device publisher.
    #[arg(long)]
    pub no_publisher: bool,
    /// Time between the two scrapes the rates come from, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Connect and read timeout of one scrape, milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// Machine-readable output (one JSON document on stdout).
    #[arg(long)]
    pub json: bool,
}

/// Runs `iotflow status`; an error (exit code 1) when any endpoint is down.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let targets = targets(&args)?;
    anyhow::ensure!(!targets.is_empty(), "no endpoints to read");
    let interval = Duration::from_millis(args.interval_ms);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let statuses: Vec<ProcessStatus> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| s.spawn(move || probe(t, interval, timeout)))
            .collect();
        handles
            .into_iter()
            .zip(&targets)
            .map(|(h, t)| {
                h.join()
                    .unwrap_or_else(|_| ProcessStatus::down(t, "probe failed".into()))
            })
            .collect()
    });
    let down = statuses.iter().filter(|s| s.down.is_some()).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "interval_ms": args.interval_ms,
            "up": statuses.len() - down,
            "down": down,
            "processes": statuses.iter().map(ProcessStatus::to_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        write!(out, "{}", render_table(&statuses))?;
    }
    out.flush()?;
    anyhow::ensure!(down == 0, "{down} of {} endpoint(s) down", statuses.len());
    Ok(())
}

/// One endpoint to read, with the labels its targets file gave it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `host:port`.
    pub endpoint: String,
    /// file_sd labels (empty for --endpoint and config endpoints).
    pub labels: BTreeMap<String, String>,
}

fn targets(args: &StatusArgs) -> anyhow::Result<Vec<Target>> {
    let mut out: Vec<Target> = Vec::new();
    let mut add = |t: Target| {
        if !out.iter().any(|o| o.endpoint == t.endpoint) {
            out.push(t);
        }
    };
    for e in &args.endpoints {
        add(Target {
            endpoint: normalize_endpoint(e)?,
            labels: BTreeMap::new(),
        });
    }
    for file in &args.targets {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read targets file {}", file.display()))?;
        for t in parse_file_sd(&text).with_context(|| format!("targets file {}", file.display()))? {
            add(t);
        }
    }
    if args.endpoints.is_empty() && args.targets.is_empty() {
        let config = Config::load(args.config.as_deref())?;
        if !config.metrics.listen.is_empty() {
            for p in 0..args.processes {
                add(Target {
                    endpoint: process_endpoint(&config.metrics.listen, p)?,
                    labels: BTreeMap::from([("process".to_string(), p.to_string())]),
                });
            }
        }
        if !args.no_publisher && !config.publisher.metrics_listen.is_empty() {
            add(Target {
                endpoint: process_endpoint(&config.publisher.metrics_listen, 0)?,
                labels: BTreeMap::from([("component".to_string(), "publisher".to_string())]),
            });
        }
    }
    Ok(out)
}

/// `host:port` from `host:port`, `http://host:port` or `http://host:port/metrics`.
pub fn normalize_endpoint(e: &str) -> anyhow::Result<String> {
    let s = e.trim();
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("endpoint `{e}` must be host:port"))?;
    port.parse::<u16>()
        .with_context(|| format!("endpoint `{e}`: bad port"))?;
    anyhow::ensure!(!host.is_empty(), "endpoint `{e}` has no host");
    Ok(s.to_string())
}

/// Where process `process` of a job with `metrics.listen = listen` serves /metrics (port +
/// process, as `iotflow run` does); a wildcard listen address is read on loopback.
pub fn process_endpoint(listen: &str, process: usize) -> anyhow::Result<String> {
    let listen = iotflow_metrics::process_address(listen, process)?;
    let (host, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("listen address `{listen}` must be host:port"))?;
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    Ok(format!("{host}:{port}"))
}

/// The targets of a Prometheus file_sd JSON document: `[{"targets": [..], "labels": {..}}]`.
pub fn parse_file_sd(text: &str) -> anyhow::Result<Vec<Target>> {
    let doc: Value = serde_json::from_str(text).context("not JSON")?;
    let groups = doc
        .as_array()
        .context("a file_sd document is a JSON array of target groups")?;
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let targets = g
            .get("targets")
            .and_then(Value::as_array)
            .with_context(|| format!("target group {i} has no \"targets\" array"))?;
        let labels: BTreeMap<String, String> = match g.get("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_string()))
                        .with_context(|| format!("target group {i}: label {k} is not a string"))
                })
                .collect::<anyhow::Result<_>>()?,
            Some(_) => anyhow::bail!("target group {i}: \"labels\" is not an object"),
        };
        for t in targets {
            let t = t
                .as_str()
                .with_context(|| format!("target group {i}: a target is not a string"))?;
            out.push(Target {
                endpoint: normalize_endpoint(t)?,
                labels: labels.clone(),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Scraping

/// GET `path` on `endpoint` (plain HTTP, reqwest); the body of a 200 response, or why not.
pub fn http_get(endpoint: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://{endpoint}{path}"))
        .header(reqwest::header::ACCEPT, "text/plain")
        .send()
        .map_err(|e| describe(&e, timeout))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )
        .trim_end()
        .to_string());
    }
    response.text().map_err(|e| describe(&e, timeout))
}

/// Why a request failed, in the words the status table uses.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    use std::io::ErrorKind::*;
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ConnectionRefused => return "connection refused".into(),
                TimedOut | WouldBlock => return format!("no answer within {timeout:?}"),
                ConnectionReset => return "connection reset".into(),
                _ => {}
            }
        }
        source = s.source();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// State

/// A sink's (or the publisher's) state between the two scrapes, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Nothing written, nothing in flight, no errors.
    Idle,
    /// Writing (rows written between the scrapes, or batches in flight), no errors.
    Ok,
    /// Transient errors, retries or rows resent alone increased between the scrapes.
    Retrying,
    /// Definite errors (the process stops on one).
    Failed,
}

impl State {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "IDLE",
            State::Ok => "OK",
            State::Retrying => "RETRYING",
            State::Failed => "FAILED",
        }
    }
}

/// One sink's counters in one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SinkCounters {
    /// `iotflow_sink_rows_written_total`.
    pub rows: f64,
    /// `iotflow_sink_errors_total{kind="transient"}`.
    pub transient: f64,
    /// `iotflow_sink_errors_total{kind="definite"}`.
    pub definite: f64,
    /// `iotflow_sink_retries_total`.
    pub retries: f64,
    /// `iotflow_sink_items_retried_total`.
    pub items_retried: f64,
    /// `iotflow_sink_items_rejected_total`.
    pub items_rejected: f64,
    /// `iotflow_sink_batches_in_flight`.
    pub in_flight: f64,
}

impl SinkCounters {
    fn read(e: &Exposition, sink: &str) -> SinkCounters {
        let f = [("sink", sink)];
        let get = |name: &str| e.sum(name, &f).unwrap_or(0.0);
        SinkCounters {
            rows: get("iotflow_sink_rows_written_total"),
            transient: e
                .sum(
                    "iotflow_sink_errors_total",
                    &[("sink", sink), ("kind", "transient")],
                )
                .unwrap_or(0.0),
            definite: e
                .sum(
                    "iotflow_sink_errors_total",
                    &[("sink", sink), ("kind", "definite")],
                )
                .unwrap_or(0.0),
            retries: get("iotflow_sink_retries_total"),
            items_retried: get("iotflow_sink_items_retried_total"),
            items_rejected: get("iotflow_sink_items_rejected_total"),
            in_flight: get("iotflow_sink_batches_in_flight"),
        }
    }
}

/// A sink's state from its counters in two scrapes: FAILED when it ever had a definite error,
/// RETRYING when transient errors, retries or rows resent alone grew between the scrapes, OK
/// when it wrote rows between them or has batches in flight, IDLE otherwise.
pub fn sink_state(before: &SinkCounters, after: &SinkCounters) -> State {
    if after.definite > 0.0 {
        State::Failed
    } else if after.transient > before.transient
        || after.retries > before.retries
        || after.items_retried > before.items_retried
    {
        State::Retrying
    } else if after.rows > before.rows || after.in_flight > 0.0 {
        State::Ok
    } else {
        State::Idle
    }
}

/// The publisher's state from two scrapes: RETRYING when failed rounds grew, OK when it
/// published records or has a backlog it is working on, IDLE otherwise.
pub fn publisher_state(errors: (f64, f64), records: (f64, f64), backlog_after: f64) -> State {
    if errors.1 > errors.0 {
        State::Retrying
    } else if records.1 > records.0 || backlog_after > 0.0 {
        State::Ok
    } else {
        State::Idle
    }
}

/// Per second increase of a counter between two scrapes (a counter that went down was reset:
/// its new value is the increase, as Prometheus' `rate()` counts it).
pub fn per_second(before: f64, after: f64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    let delta = if after >= before {
        after - before
    } else {
        after
    };
    delta / seconds
}

/// What a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `iotflow run`.
    Stream,
    /// `iotflow publish-devices`.
    Publisher,
    /// Something answering /metrics without iotflow process metrics.
    Other,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Publisher => "publisher",
            Kind::Other => "other",
        }
    }
}

/// One sink's line.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkStatus {
    /// `mysql`, `clickhouse`, `elasticsearch`.
    pub sink: String,
    /// State between the scrapes.
    pub state: State,
    /// Rows written per second between the scrapes.
    pub rows_per_second: f64,
    /// Counters at the second scrape.
    pub totals: SinkCounters,
}

/// The device publisher's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct PublisherStatus {
    /// Changes not yet published.
    pub backlog: f64,
    /// Lag of the last round, seconds.
    pub lag_seconds: f64,
    /// Records published per second between the scrapes.
    pub records_per_second: f64,
    /// Failed rounds so far.
    pub errors_total: f64,
    /// State between the scrapes.
    pub state: State,
}

/// One process, up or down.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessStatus {
    /// `host:port`.
    pub endpoint: String,
    /// file_sd labels.
    pub labels: BTreeMap<String, String>,
    /// `Some(reason)` when the endpoint did not answer.
    pub down: Option<String>,
    /// What it is.
    pub kind: Kind,
    /// `job_name` label.
    pub job_name: Option<String>,
    /// `job_id` label.
    pub job_id: Option<String>,
    /// Seconds since the process started.
    pub uptime_seconds: Option<f64>,
    /// Readings read from the readings topic per second (operator `kafka-source`).
    pub received_per_second: Option<f64>,
    /// Readings read so far.
    pub received_total: Option<f64>,
    /// Parse successes per second.
    pub parse_success_per_second: Option<f64>,
    /// Parse failures per second.
    pub parse_failure_per_second: Option<f64>,
    /// Consumer lag of the readings topic (per partition the largest report, summed).
    pub consumer_lag: Option<f64>,
    /// Per sink.
    pub sinks: Vec<SinkStatus>,
    /// Worst sink state (`None` without sinks).
    pub sink_state: Option<State>,
    /// For a publisher.
    pub publisher: Option<PublisherStatus>,
}

impl ProcessStatus {
    fn down(t: &Target, reason: String) -> ProcessStatus {
        ProcessStatus {
            endpoint: t.endpoint.clone(),
            labels: t.labels.clone(),
            down: Some(reason),
            kind: Kind::Other,
            job_name: None,
            job_id: None,
            uptime_seconds: None,
            received_per_second: None,
            received_total: None,
            parse_success_per_second: None,
            parse_failure_per_second: None,
            consumer_lag: None,
            sinks: Vec::new(),
            sink_state: None,
            publisher: None,
        }
    }

    fn to_json(&self) -> Value {
        let sinks: Vec<Value> = self
            .sinks
            .iter()
            .map(|s| {
                json!({
                    "sink": s.sink,
                    "state": s.state.as_str(),
                    "rows_per_second": round3(s.rows_per_second),
                    "rows_written_total": s.totals.rows,
                    "transient_errors_total": s.totals.transient,
                    "definite_errors_total": s.totals.definite,
                    "retries_total": s.totals.retries,
                    "items_retried_total": s.totals.items_retried,
                    "items_rejected_total": s.totals.items_rejected,
                    "batches_in_flight": s.totals.in_flight,
                })
            })
            .collect();
        json!({
            "endpoint": self.endpoint,
            "labels": self.labels,
            "status": if self.down.is_some() { "DOWN" } else { "UP" },
            "up": self.down.is_none(),
            "reason": self.down,
            "kind": self.down.is_none().then(|| self.kind.as_str()),
            "job_name": self.job_name,
            "job_id": self.job_id,
            "uptime_seconds": self.uptime_seconds.map(round3),
            "received_per_second": self.received_per_second.map(round3),
            "received_total": self.received_total,
            "parse_success_per_second": self.parse_success_per_second.map(round3),
            "parse_failure_per_second": self.parse_failure_per_second.map(round3),
            "consumer_lag": self.consumer_lag,
            "rows_per_second": (!self.sinks.is_empty())
                .then(|| round3(self.sinks.iter().map(|s| s.rows_per_second).fold(0.0, |a, b| a + b))),
            "sink_state": self.sink_state.map(State::as_str),
            "sinks": sinks,
            "publisher": self.publisher.as_ref().map(|p| json!({
                "backlog": p.backlog,
                "lag_seconds": p.lag_seconds,
                "records_per_second": round3(p.records_per_second),
                "errors_total": p.errors_total,
                "state": p.state.as_str(),
            })),
        })
    }
}

/// Rounded to 3 decimals (the JSON's rates and uptimes; the measurement is not finer).
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn probe(t: &Target, interval: Duration, timeout: Duration) -> ProcessStatus {
    let first = match http_get(&t.endpoint, "/metrics", timeout) {
        Ok(body) => body,
        Err(reason) => return ProcessStatus::down(t, reason),
    };
    let t0 = Instant::now();
    if let Some(rest) = interval.checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
    let second = match http_get(&t.endpoint, "/metrics", timeout) {
        Ok(body) => body,
        Err(reason) => {
            return ProcessStatus::down(
                t,
                format!("stopped answering between the scrapes: {reason}"),
            )
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    assess(
        t,
        &Exposition::parse(&first),
        &Exposition::parse(&second),
        seconds,
        now,
    )
}

/// A process's status from two scrapes `seconds` apart, the second at Unix time `now`.
pub fn assess(t: &Target, a: &Exposition, b: &Exposition, seconds: f64, now: f64) -> ProcessStatus {
    let mut s = ProcessStatus::down(t, String::new());
    s.down = None;
    s.kind = if b.has("iotflow_publisher_backlog") {
        Kind::Publisher
    } else if b.has("iotflow_process_start_time_seconds")
        || b.has("iotflow_kafka_messages_received_total")
    {
        Kind::Stream
    } else {
        Kind::Other
    };
    let start = b.first("iotflow_process_start_time_seconds");
    let any_job = start.or_else(|| b.samples.iter().find(|s| s.label("job_name").is_some()));
    s.job_name = any_job.and_then(|x| x.label("job_name")).map(String::from);
    s.job_id = any_job.and_then(|x| x.label("job_id")).map(String::from);
    s.uptime_seconds = start.map(|x| (now - x.value).max(0.0));
    let rate = |name: &str, filter: &[(&str, &str)]| {
        let after = b.sum(name, filter)?;
        Some(per_second(
            a.sum(name, filter).unwrap_or(0.0),
            after,
            seconds,
        ))
    };
    if s.kind == Kind::Stream {
        let src = [("operator", "kafka-source")];
        s.received_total = b.sum("iotflow_kafka_messages_received_total", &src);
        s.received_per_second = rate("iotflow_kafka_messages_received_total", &src);
        s.parse_success_per_second = rate("iotflow_parse_success_total", &[]);
        s.parse_failure_per_second =
            rate("iotflow_parse_failure_total", &[]).or(s.parse_success_per_second.map(|_| 0.0));
        // Per partition the largest report (a partition's lag is reported by the worker that
        // owns it), summed over partitions.
        let mut lag: BTreeMap<&str, f64> = BTreeMap::new();
        for x in b
            .samples
            .iter()
            .filter(|x| x.name == "iotflow_kafka_consumer_lag" && x.matches(&src))
        {
            let e = lag
                .entry(x.label("partition").unwrap_or_default())
                .or_insert(0.0);
            *e = e.max(x.value);
        }
        s.consumer_lag = (!lag.is_empty()).then(|| lag.values().sum());
        let sinks: Vec<String> = b
            .sum_by("iotflow_sink_rows_written_total", "sink", &[])
            .into_keys()
            .collect();
        for sink in sinks {
            let before = SinkCounters::read(a, &sink);
            let after = SinkCounters::read(b, &sink);
            s.sinks.push(SinkStatus {
                state: sink_state(&before, &after),
                rows_per_second: per_second(before.rows, after.rows, seconds),
                totals: after,
                sink,
            });
        }
        s.sink_state = s.sinks.iter().map(|x| x.state).max();
    }
    if s.kind == Kind::Publisher {
        let get = |e: &Exposition, name: &str| e.sum(name, &[]).unwrap_or(0.0);
        let records = (
            get(a, "iotflow_publisher_records_total"),
            get(b, "iotflow_publisher_records_total"),
        );
        let errors = (
            get(a, "iotflow_publisher_errors_total"),
            get(b, "iotflow_publisher_errors_total"),
        );
        let backlog = get(b, "iotflow_publisher_backlog");
        s.publisher = Some(PublisherStatus {
            backlog,
            lag_seconds: b
                .samples
                .iter()
                .filter(|x| x.name == "iotflow_publisher_lag_seconds")
                .map(|x| x.value)
                .fold(0.0, f64::max),
            records_per_second: per_second(records.0, records.1, seconds),
            errors_total: errors.1,
            state: publisher_state(errors, records, backlog),
        });
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Text output

/// `42s`, `5m07s`, `2h13m`, `3d04h`.
pub fn format_uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn rate_text(v: f64) -> String {
    format!("{v:.1}/s")
}

/// The table: a header and one line per process.
pub fn render_table(statuses: &[ProcessStatus]) -> String {
    let mut rows: Vec<Vec<String>> = vec![[
        "STATUS", "JOB", "JOB ID", "ENDPOINT", "UPTIME", "RECEIVED", "WRITTEN", "LAG", "STATE",
    ]
    .map(String::from)
    .to_vec()];
    let dash = || "-".to_string();
    for s in statuses {
        if let Some(reason) = &s.down {
            rows.push(vec![
                "DOWN".into(),
                dash(),
                dash(),
                s.endpoint.clone(),
                dash(),
                dash(),
                dash(),
                dash(),
                reason.clone(),
            ]);
            continue;
        }
        let (received, written, lag, state) = match (&s.kind, &s.publisher) {
            (Kind::Publisher, Some(p)) => (
                dash(),
                format!("published {}", rate_text(p.records_per_second)),
                format!("backlog {}, lag {:.2}s", p.backlog, p.lag_seconds),
                p.state.as_str().to_string(),
            ),
            (Kind::Stream, _) => {
                let written = if s.sinks.is_empty() {
                    dash()
                } else {
                    s.sinks
                        .iter()
                        .map(|k| format!("{} {}", k.sink, rate_text(k.rows_per_second)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let state = match s.sink_state {
                    None => dash(),
                    Some(worst) if s.sinks.len() > 1 => format!(
                        "{} ({})",
                        worst.as_str(),
                        s.sinks
                            .iter()
                            .map(|k| format!("{} {}", k.sink, k.state.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(worst) => worst.as_str().to_string(),
                };
                (
                    s.received_per_second.map(rate_text).unwrap_or_else(dash),
                    written,
                    s.consumer_lag.map(|l| format!("{l}")).unwrap_or_else(dash),
                    state,
                )
            }
            _ => (dash(), dash(), dash(), "no iotflow metrics".to_string()),
        };
        rows.push(vec![
            "UP".into(),
            s.job_name.clone().unwrap_or_else(dash),
            s.job_id.clone().unwrap_or_else(dash),
            s.endpoint.clone(),
            s.uptime_seconds.map(format_uptime).unwrap_or_else(dash),
            received,
            written,
            lag,
            state,
        ]);
    }
    let mut header = rows.remove(0).into_iter();
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.by_ref().collect::<Vec<_>>());
    for row in rows {
        table.add_row(row);
    }
    // Two spaces between columns, none before the first: lines start with STATUS.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM_A: &str = r#"# HELP iotflow_process_start_time_seconds When this process started.
# TYPE iotflow_process_start_time_seconds gauge
iotflow_process_start_time_seconds{job_id="00ab",job_name="plant-a"} 1700000000.5
# TYPE iotflow_kafka_messages_received_total counter
iotflow_kafka_messages_received_total{job_id="00ab",job_name="plant-a",operator="kafka-source",worker="0"} 100
iotflow_kafka_messages_received_total{job_id="00ab",job_name="plant-a",operator="kafka-source",worker="1"} 50
iotflow_kafka_messages_received_total{job_id="00ab",job_name="plant-a",operator="broadcast-source",worker="0"} 7
iotflow_parse_success_total{job_id="00ab",job_name="plant-a",operator="parse",worker="0"} 140
iotflow_kafka_consumer_lag{job_id="00ab",job_name="plant-a",operator="kafka-source",partition="0",worker="0"} 5
iotflow_kafka_consumer_lag{job_id="00ab",job_name="plant-a",operator="kafka-source",partition="1",worker="1"} 7
iotflow_sink_rows_written_total{job_id="00ab",job_name="plant-a",operator="mysql-sink",sink="mysql",worker="0"} 100
iotflow_sink_rows_written_total{job_id="00ab",job_name="plant-a",operator="clickhouse-sink",sink="clickhouse",worker="0"} 100
iotflow_sink_errors_total{job_id="00ab",job_name="plant-a",kind="transient",operator="clickhouse-sink",sink="clickhouse",worker="0"} 1
iotflow_sink_errors_total{job_id="00ab",job_name="plant-a",kind="definite",operator="clickhouse-sink",sink="clickhouse",worker="0"} 0
iotflow_sink_batch_write_seconds_bucket{job_id="00ab",job_name="plant-a",operator="mysql-sink",sink="mysql",worker="0",le="+Inf"} 3
"#;

    fn stream_b() -> String {
        STREAM_A
            .replace(r#"worker="0"} 100"#, r#"worker="0"} 300"#)
            .replace(
                r#"kind="transient",operator="clickhouse-sink",sink="clickhouse",worker="0"} 1"#,
                r#"kind="transient",operator="clickhouse-sink",sink="clickhouse",worker="0"} 4"#,
            )
            .replace(
                r#"partition="0",worker="0"} 5"#,
                r#"partition="0",worker="0"} 3"#,
            )
    }

    fn target() -> Target {
        Target {
            endpoint: "127.0.0.1:9249".into(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn sums_filter_and_group() {
        let e = Exposition::parse(STREAM_A);
        assert_eq!(
            e.sum(
                "iotflow_kafka_messages_received_total",
                &[("operator", "kafka-source")]
            ),
            Some(150.0)
        );
        assert_eq!(
            e.sum("iotflow_kafka_messages_received_total", &[]),
            Some(157.0)
        );
        assert_eq!(e.sum("iotflow_nothing", &[]), None);
        assert_eq!(
            e.sum_by("iotflow_sink_rows_written_total", "sink", &[]),
            BTreeMap::from([("clickhouse".into(), 100.0), ("mysql".into(), 100.0)])
        );
    }

    #[test]
    fn sink_states() {
        let idle = SinkCounters::default();
        assert_eq!(sink_state(&idle, &idle), State::Idle);
        let wrote = SinkCounters { rows: 10.0, ..idle };
        assert_eq!(sink_state(&idle, &wrote), State::Ok);
        let in_flight = SinkCounters {
            in_flight: 1.0,
            ..idle
        };
        assert_eq!(sink_state(&idle, &in_flight), State::Ok);
        // Old transient errors that did not grow: not retrying.
        let old = SinkCounters {
            transient: 3.0,
            retries: 3.0,
            ..idle
        };
        assert_eq!(
            sink_state(&old, &SinkCounters { rows: 5.0, ..old }),
            State::Ok
        );
        assert_eq!(sink_state(&old, &old), State::Idle);
        for grew in [
            SinkCounters {
                transient: 4.0,
                ..old
            },
            SinkCounters {
                retries: 4.0,
                ..old
            },
            SinkCounters {
                items_retried: 1.0,
                rows: 9.0,
                ..old
            },
        ] {
            assert_eq!(sink_state(&old, &grew), State::Retrying, "{grew:?}");
        }
        let failed = SinkCounters {
            definite: 1.0,
            transient: 9.0,
            ..idle
        };
        assert_eq!(sink_state(&failed, &failed), State::Failed);
        assert_eq!(sink_state(&idle, &failed), State::Failed);
        assert!(
            State::Failed > State::Retrying
                && State::Retrying > State::Ok
                && State::Ok > State::Idle
        );
    }

    #[test]
    fn publisher_states() {
        assert_eq!(
            publisher_state((1.0, 2.0), (5.0, 9.0), 0.0),
            State::Retrying
        );
        assert_eq!(publisher_state((1.0, 1.0), (5.0, 9.0), 0.0), State::Ok);
        assert_eq!(publisher_state((0.0, 0.0), (5.0, 5.0), 3.0), State::Ok);
        assert_eq!(publisher_state((0.0, 0.0), (5.0, 5.0), 0.0), State::Idle);
    }

    #[test]
    fn rates_handle_resets() {
        assert_eq!(per_second(10.0, 30.0, 2.0), 10.0);
        assert_eq!(per_second(100.0, 20.0, 2.0), 10.0);
        assert_eq!(per_second(1.0, 2.0, 0.0), 0.0);
    }

    #[test]
    fn assesses_a_stream_process() {
        let a = Exposition::parse(STREAM_A);
        let b = Exposition::parse(&stream_b());
        let s = assess(&target(), &a, &b, 2.0, 1_700_000_100.5);
        assert_eq!(s.kind, Kind::Stream);
        assert_eq!(s.down, None);
        assert_eq!(s.job_name.as_deref(), Some("plant-a"));
        assert_eq!(s.job_id.as_deref(), Some("00ab"));
        assert_eq!(s.uptime_seconds, Some(100.0));
        // kafka-source only: worker 0 went 100 -> 300 in 2 s.
        assert_eq!(s.received_per_second, Some(100.0));
        assert_eq!(s.received_total, Some(350.0));
        assert_eq!(s.parse_success_per_second, Some(0.0));
        assert_eq!(s.parse_failure_per_second, Some(0.0));
        assert_eq!(s.consumer_lag, Some(10.0));
        let by: BTreeMap<_, _> = s
            .sinks
            .iter()
            .map(|k| (k.sink.as_str(), (k.state, k.rows_per_second)))
            .collect();
        assert_eq!(by["mysql"], (State::Ok, 100.0));
        assert_eq!(by["clickhouse"], (State::Retrying, 100.0));
        assert_eq!(s.sink_state, Some(State::Retrying));
        let j = s.to_json();
        assert_eq!(j["status"], "UP");
        assert_eq!(j["rows_per_second"], 200.0);
        assert_eq!(j["sink_state"], "RETRYING");
        let table = render_table(std::slice::from_ref(&s));
        assert!(table.contains("plant-a"), "{table}");
        assert!(
            table.contains("RETRYING (clickhouse RETRYING, mysql OK)"),
            "{table}"
        );
        assert!(table.contains("1m40s"), "{table}");
    }

    #[test]
    fn assesses_a_publisher() {
        let text = |records: u32, errors: u32, backlog: u32| {
            format!(
                "iotflow_process_start_time_seconds{{job_id=\"9\",job_name=\"publish-devices\"}} 100\n\
                 iotflow_publisher_records_total{{job_id=\"9\",job_name=\"publish-devices\",kind=\"upsert\",operator=\"device-publisher\",worker=\"0\"}} {records}\n\
                 iotflow_publisher_errors_total{{job_id=\"9\",job_name=\"publish-devices\",operator=\"device-publisher\",worker=\"0\"}} {errors}\n\
                 iotflow_publisher_backlog{{job_id=\"9\",job_name=\"publish-devices\",operator=\"device-publisher\",worker=\"0\"}} {backlog}\n\
                 iotflow_publisher_lag_seconds{{job_id=\"9\",job_name=\"publish-devices\",operator=\"device-publisher\",worker=\"0\"}} 0.25\n"
            )
        };
        let a = Exposition::parse(&text(10, 0, 0));
        let b = Exposition::parse(&text(14, 0, 2));
        let s = assess(&target(), &a, &b, 1.0, 160.0);
        assert_eq!(s.kind, Kind::Publisher);
        assert_eq!(s.job_name.as_deref(), Some("publish-devices"));
        assert_eq!(s.uptime_seconds, Some(60.0));
        let p = s.publisher.clone().unwrap();
        assert_eq!(
            (p.backlog, p.lag_seconds, p.records_per_second, p.state),
            (2.0, 0.25, 4.0, State::Ok)
        );
        assert!(s.sinks.is_empty() && s.sink_state.is_none());
        let table = render_table(&[s]);
        assert!(table.contains("backlog 2, lag 0.25s"), "{table}");
        let b = Exposition::parse(&text(10, 1, 0));
        assert_eq!(
            assess(&target(), &a, &b, 1.0, 160.0)
                .publisher
                .unwrap()
                .state,
            State::Retrying
        );
    }

    #[test]
    fn a_down_endpoint_renders_its_reason() {
        let s = ProcessStatus::down(&target(), "connection refused".into());
        let table = render_table(std::slice::from_ref(&s));
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("DOWN"), "{table}");
        assert!(line.ends_with("connection refused"), "{table}");
        let j = s.to_json();
        assert_eq!(
            (j["status"].as_str(), j["up"].as_bool()),
            (Some("DOWN"), Some(false))
        );
        assert_eq!(j["reason"], "connection refused");
    }

    #[test]
    fn other_exporters_are_up_but_not_iotflow() {
        let e = Exposition::parse("up 1\n");
        let s = assess(&target(), &e, &e, 1.0, 0.0);
        assert_eq!(
            (s.kind, s.down.clone(), s.job_name.clone()),
            (Kind::Other, None, None)
        );
    }

    /// A peer that answers every connection with `raw` and closes (not an HTTP server: it
    /// plays canned bytes, including ones no HTTP server would send).
    fn canned(raw: &'static [u8]) -> String {
        let listener = iotflow_metrics::http::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(false).unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut head = [0u8; 4096];
                let _ = std::io::Read::read(&mut s, &mut head);
                let _ = s.write_all(raw);
            }
        });
        endpoint
    }

    #[test]
    fn http_responses() {
        let get = |raw| http_get(&canned(raw), "/metrics", Duration::from_secs(5));
        assert_eq!(
            get(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
            Ok("abc".into())
        );
        assert_eq!(
            get(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"),
            Err("HTTP 404 Not Found".into())
        );
        assert_eq!(
            get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            Ok("abcde".into())
        );
        assert!(get(b"").is_err());
        assert!(get(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn endpoints_and_file_sd() {
        assert_eq!(
            normalize_endpoint("http://10.0.0.1:9249/metrics").unwrap(),
            "10.0.0.1:9249"
        );
        assert_eq!(normalize_endpoint("host:1").unwrap(), "host:1");
        assert!(normalize_endpoint("host").is_err());
        assert!(normalize_endpoint("host:99999").is_err());
        assert_eq!(
            process_endpoint("127.0.0.1:9249", 2).unwrap(),
            "127.0.0.1:9251"
        );
        assert_eq!(
            process_endpoint("0.0.0.0:9250", 0).unwrap(),
            "127.0.0.1:9250"
        );
        assert!(process_endpoint("127.0.0.1:65535", 1).is_err());
        let sample = include_str!("../../../deploy/prometheus/targets/example.json.sample");
        let t = parse_file_sd(sample).unwrap();
        assert_eq!(
            t.iter().map(|t| t.endpoint.as_str()).collect::<Vec<_>>(),
            [
                "10.0.0.11:9249",
                "10.0.0.12:9250",
                "10.0.0.13:9251",
                "10.0.0.20:9250"
            ]
        );
        assert_eq!(t[3].labels["job"], "iotflow-publisher");
        assert!(parse_file_sd("{}").is_err());
        assert!(parse_file_sd(r#"[{"labels":{}}]"#).is_err());
        assert!(parse_file_sd(r#"[{"targets":["a:1"],"labels":{"x":1}}]"#).is_err());
        assert_eq!(parse_file_sd(r#"[{"targets":["a:1"]}]"#).unwrap().len(), 1);
    }

    #[test]
    fn uptime_text() {
        assert_eq!(format_uptime(42.9), "42s");
        assert_eq!(format_uptime(307.0), "5m07s");
        assert_eq!(format_uptime(7980.0), "2h13m");
        assert_eq!(format_uptime(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
    }
}
