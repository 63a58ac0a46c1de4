//! `iotflow status`: what `flink list` was for the old system. Reads the metrics endpoints of
//! running iotflow processes (streaming job processes and the device publisher), scrapes each
//! twice an interval apart, and prints one line per process: job, uptime, throughput, consumer
//! lag, sink state; or DOWN with the reason when an endpoint does not answer.
//!
//! Plain `std::net::TcpStream` HTTP and a minimal parser of the Prometheus text format: the
//! endpoints are iotflow's own (`crates/metrics/src/server.rs`), so no HTTP stack is needed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use iotflow_config::Config;
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
    let (host, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("listen address `{listen}` must be host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("listen address `{listen}`: bad port"))?;
    let port = u16::try_from(usize::from(port) + process)
        .with_context(|| format!("listen address `{listen}` + {process}: port out of range"))?;
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

/// GET `path` on `endpoint` (plain HTTP); the body of a 200 response, or why not.
pub fn http_get(endpoint: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let addrs: Vec<_> = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?
        .collect();
    let mut last = format!("{endpoint} resolves to no address");
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = describe_io(&e, timeout),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| describe_io(&e, timeout))?;
    // HTTP/1.0: the server answers with a plain body and closes the connection.
    let host = endpoint;
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| describe_io(&e, timeout))?;
    let mut raw = Vec::new();
    stream
        .take(256 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| describe_io(&e, timeout))?;
    parse_http_response(&raw)
}

fn describe_io(e: &std::io::Error, timeout: Duration) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        TimedOut | WouldBlock => format!("no answer within {timeout:?}"),
        ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// The body of a raw HTTP response if its status is 200 (chunked bodies decoded).
pub fn parse_http_response(raw: &[u8]) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty response (not an HTTP server?)".into());
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response (no end of headers)")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err("not an HTTP response".into());
    }
    let code = parts.next().unwrap_or_default();
    if code != "200" {
        return Err(format!("HTTP {}", status_line[version.len()..].trim()));
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body).ok_or("malformed chunked body")?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The Prometheus text format, minimally

/// One sample: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text format; comment lines and lines it cannot read are skipped.
    pub fn parse(text: &str) -> Exposition {
        Exposition {
            samples: text.lines().filter_map(parse_sample).collect(),
        }
    }

    /// Whether any sample of `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// Sum of the samples of `name` matching every `label = value` of `filter`; `None` when
    /// none matches.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.matches(filter))
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }

    /// Like [`Exposition::sum`], grouped by the value of label `by`.
    pub fn sum_by(&self, name: &str, by: &str, filter: &[(&str, &str)]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.name == name && s.matches(filter))
        {
            *out.entry(s.label(by).unwrap_or_default().to_string())
                .or_insert(0.0) += s.value;
        }
        out
    }

    /// The first sample of `name`.
    pub fn first(&self, name: &str) -> Option<&Sample> {
        self.samples.iter().find(|s| s.name == name)
    }
}

/// Parses one line `name{a="x",b="y"} value [timestamp]`; `None` for comments, blank lines and
/// anything malformed.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
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
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
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
    fn parses_samples_with_labels_escapes_and_specials() {
        let s =
            parse_sample(r#"m_total{a="x",b="q\"uo,te}",c="back\\slash\nnl"} 12.5 1700000000000"#)
                .unwrap();
        assert_eq!(s.name, "m_total");
        assert_eq!(s.label("a"), Some("x"));
        assert_eq!(s.label("b"), Some("q\"uo,te}"));
        assert_eq!(s.label("c"), Some("back\\slash\nnl"));
        assert_eq!(s.value, 12.5);
        let s = parse_sample("up 1").unwrap();
        assert_eq!((s.name.as_str(), s.labels.len(), s.value), ("up", 0, 1.0));
        assert_eq!(
            parse_sample(r#"h_bucket{le="+Inf"} +Inf"#).unwrap().value,
            f64::INFINITY
        );
        assert!(parse_sample(r#"g{} NaN"#).unwrap().value.is_nan());
        assert_eq!(parse_sample("g{a=\"1\",} -3e2").unwrap().value, -300.0);
        for bad in [
            "# HELP x y",
            "",
            "   ",
            "x{a=\"1\"",
            "x{a=1} 2",
            "x",
            "x{a=\"1\"} abc",
            "9x 1",
        ] {
            assert_eq!(parse_sample(bad), None, "{bad:?}");
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

    #[test]
    fn http_responses() {
        assert_eq!(
            parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
            Ok("abc".into())
        );
        assert_eq!(
            parse_http_response(b"HTTP/1.1 404 Not Found\r\n\r\nnope"),
            Err("HTTP 404 Not Found".into())
        );
        assert_eq!(
            parse_http_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
            ),
            Ok("abcde".into())
        );
        assert!(parse_http_response(b"").is_err());
        assert!(parse_http_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
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
