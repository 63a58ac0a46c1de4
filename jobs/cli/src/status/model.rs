//! What a process's status is: its kind, job, rates, consumer lag and sink / publisher states,
//! computed from two scrapes of its exposition. Plain data and arithmetic, no I/O.

use std::collections::BTreeMap;

use iotflow_metrics::Exposition;

use super::targets::Target;

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
    /// `iotflow mqtt-bridge`.
    Bridge,
    /// Something answering /metrics without iotflow process metrics.
    Other,
}

impl Kind {
    /// As printed in the JSON.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Publisher => "publisher",
            Kind::Bridge => "mqtt-bridge",
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

/// The MQTT bridge's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct BridgeStatus {
    /// Connected to the MQTT broker at the second scrape.
    pub connected: bool,
    /// Messages received per second between the scrapes.
    pub received_per_second: f64,
    /// Messages Kafka acknowledged per second between the scrapes.
    pub forwarded_per_second: f64,
    /// Received, not yet acknowledged by Kafka, at the second scrape.
    pub in_flight: f64,
    /// Redeliveries and resends dropped so far.
    pub duplicates_dropped_total: f64,
    /// State between the scrapes.
    pub state: State,
}

/// The bridge's state from two scrapes: RETRYING when it is not connected or Kafka or
/// connection errors grew, OK when it forwarded messages or has some in flight, IDLE otherwise.
pub fn bridge_state(
    connected: bool,
    errors: (f64, f64),
    forwarded: (f64, f64),
    in_flight: f64,
) -> State {
    if !connected || errors.1 > errors.0 {
        State::Retrying
    } else if forwarded.1 > forwarded.0 || in_flight > 0.0 {
        State::Ok
    } else {
        State::Idle
    }
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
    /// For an MQTT bridge.
    pub bridge: Option<BridgeStatus>,
}

impl ProcessStatus {
    pub(super) fn down(t: &Target, reason: String) -> ProcessStatus {
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
            bridge: None,
        }
    }
}

/// A process's status from two scrapes `seconds` apart, the second at Unix time `now`.
pub fn assess(t: &Target, a: &Exposition, b: &Exposition, seconds: f64, now: f64) -> ProcessStatus {
    let mut s = ProcessStatus::down(t, String::new());
    s.down = None;
    s.kind = if b.has("iotflow_publisher_backlog") {
        Kind::Publisher
    } else if b.has("iotflow_mqtt_in_flight") {
        Kind::Bridge
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
    if s.kind == Kind::Bridge {
        let get = |e: &Exposition, name: &str| e.sum(name, &[]).unwrap_or(0.0);
        let pair = |name: &str| (get(a, name), get(b, name));
        let forwarded = pair("iotflow_mqtt_messages_forwarded_total");
        let received = pair("iotflow_mqtt_messages_received_total");
        let errors = {
            let (k, c) = (
                pair("iotflow_mqtt_produce_errors_total"),
                pair("iotflow_mqtt_connection_errors_total"),
            );
            (k.0 + c.0, k.1 + c.1)
        };
        let connected = get(b, "iotflow_mqtt_connected") > 0.0;
        let in_flight = get(b, "iotflow_mqtt_in_flight");
        s.bridge = Some(BridgeStatus {
            connected,
            received_per_second: per_second(received.0, received.1, seconds),
            forwarded_per_second: per_second(forwarded.0, forwarded.1, seconds),
            in_flight,
            duplicates_dropped_total: get(b, "iotflow_mqtt_duplicates_dropped_total"),
            state: bridge_state(connected, errors, forwarded, in_flight),
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::render::render_table;

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
    fn bridge_states() {
        assert_eq!(
            bridge_state(false, (0.0, 0.0), (1.0, 5.0), 0.0),
            State::Retrying
        );
        assert_eq!(
            bridge_state(true, (1.0, 2.0), (1.0, 5.0), 0.0),
            State::Retrying
        );
        assert_eq!(bridge_state(true, (1.0, 1.0), (1.0, 5.0), 0.0), State::Ok);
        assert_eq!(bridge_state(true, (0.0, 0.0), (5.0, 5.0), 3.0), State::Ok);
        assert_eq!(bridge_state(true, (0.0, 0.0), (5.0, 5.0), 0.0), State::Idle);
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
    fn other_exporters_are_up_but_not_iotflow() {
        let e = Exposition::parse("up 1\n");
        let s = assess(&target(), &e, &e, 1.0, 0.0);
        assert_eq!(
            (s.kind, s.down.clone(), s.job_name.clone()),
            (Kind::Other, None, None)
        );
    }
}
