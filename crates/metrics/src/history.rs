//! The process's own recent history: once a second the metrics endpoint samples the counters
//! the web UI draws (throughput per operator, consumer lag, end-to-end latency and batch-write
//! histograms per sink), stamped with this process's clock, into a ring of
//! [`HISTORY_SAMPLES`]. The web UI reads it at `/api/history` and computes every rate from two
//! samples of the *server's* time, as `iotflow status` and Prometheus' `rate()` do, so what it
//! shows never depends on the browser's clock or on when its requests happened to run.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Exposition, Metrics};

/// Samples kept: 10 minutes at one a second.
pub const HISTORY_SAMPLES: usize = 600;

/// Time between samples.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(1);

/// One sample: counters and gauges by series name, histograms as cumulative `(le, count)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistorySample {
    /// Unix time of the sample, ms (this process's clock).
    pub at_ms: i64,
    /// `received`, `parsed`, `enriched`, `dead_letters`, `lag`, `rows/<sink>`,
    /// `worker_rows/<sink>/<worker>`, `mqtt_received`, `mqtt_forwarded`, `alarm_events`:
    /// whichever the process has.
    pub values: BTreeMap<String, f64>,
    /// `e2e/<sink>`, `batch/<sink>`: cumulative buckets summed over workers.
    pub histograms: BTreeMap<String, Vec<(f64, f64)>>,
}

/// The ring of samples.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<HistorySample>,
}

impl History {
    /// Adds a sample, dropping the oldest beyond [`HISTORY_SAMPLES`].
    pub fn push(&mut self, s: HistorySample) {
        self.samples.push_back(s);
        while self.samples.len() > HISTORY_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The samples taken after `since_ms`, oldest first.
    pub fn since(&self, since_ms: i64) -> impl Iterator<Item = &HistorySample> {
        self.samples.iter().filter(move |s| s.at_ms > since_ms)
    }

    /// `/api/history[?since=MS]` as JSON.
    pub fn json(&self, query: &str) -> String {
        let since = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("since="))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(i64::MIN);
        let samples: Vec<serde_json::Value> = self
            .since(since)
            .map(|s| {
                serde_json::json!({
                    "at_ms": s.at_ms,
                    "values": s.values,
                    "histograms": s.histograms,
                })
            })
            .collect();
        serde_json::json!({
            "interval_ms": HISTORY_INTERVAL.as_millis() as u64,
            "capacity": HISTORY_SAMPLES,
            "samples": samples,
        })
        .to_string()
    }
}

/// The sample of an exposition taken at `at_ms`.
pub fn sample(text: &str, at_ms: i64) -> HistorySample {
    let e = Exposition::parse(text);
    let mut values = BTreeMap::new();
    let mut put = |k: String, v: Option<f64>| {
        if let Some(v) = v {
            values.insert(k, v);
        }
    };
    put(
        "received".into(),
        e.sum(
            "iotflow_kafka_messages_received_total",
            &[("operator", "kafka-source")],
        ),
    );
    let parsed = match (
        e.sum("iotflow_parse_success_total", &[]),
        e.sum("iotflow_parse_failure_total", &[]),
    ) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    put("parsed".into(), parsed);
    put(
        "enriched".into(),
        e.sum("iotflow_enriched_readings_total", &[]),
    );
    put(
        "dead_letters".into(),
        e.sum("iotflow_dlq_records_total", &[]),
    );
    put(
        "mqtt_received".into(),
        e.sum("iotflow_mqtt_messages_received_total", &[]),
    );
    put(
        "mqtt_forwarded".into(),
        e.sum("iotflow_mqtt_messages_forwarded_total", &[]),
    );
    put(
        "alarm_events".into(),
        e.sum("iotflow_alarm_events_total", &[]),
    );
    for (sink, rows) in e.sum_by("iotflow_sink_rows_written_total", "sink", &[]) {
        values.insert(format!("rows/{sink}"), rows);
    }
    for s in e
        .samples
        .iter()
        .filter(|s| s.name == "iotflow_sink_rows_written_total")
    {
        if let (Some(sink), Some(worker)) = (s.label("sink"), s.label("worker")) {
            *values
                .entry(format!("worker_rows/{sink}/{worker}"))
                .or_insert(0.0) += s.value;
        }
    }
    // Per partition the largest report (the worker that owns it), summed: as `iotflow status`.
    let mut lag: BTreeMap<&str, f64> = BTreeMap::new();
    for s in e.samples.iter().filter(|s| {
        s.name == "iotflow_kafka_consumer_lag" && s.matches(&[("operator", "kafka-source")])
    }) {
        let p = lag
            .entry(s.label("partition").unwrap_or_default())
            .or_insert(0.0);
        *p = p.max(s.value);
    }
    if !lag.is_empty() {
        values.insert("lag".into(), lag.values().sum());
    }
    let mut histograms = BTreeMap::new();
    for (family, key) in [
        ("iotflow_end_to_end_latency_seconds_bucket", "e2e"),
        ("iotflow_sink_batch_write_seconds_bucket", "batch"),
    ] {
        let mut per_sink: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
        for s in e.samples.iter().filter(|s| s.name == family) {
            let (Some(sink), Some(le)) = (s.label("sink"), s.label("le")) else {
                continue;
            };
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                }
            };
            let b = per_sink
                .entry(sink.to_string())
                .or_default()
                .entry(le.to_bits())
                .or_insert((le, 0.0));
            b.1 += s.value;
        }
        for (sink, buckets) in per_sink {
            let mut v: Vec<(f64, f64)> = buckets.into_values().collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            histograms.insert(format!("{key}/{sink}"), v);
        }
    }
    HistorySample {
        at_ms,
        values,
        histograms,
    }
}

/// Samples `metrics` every [`HISTORY_INTERVAL`] into a new history, serves it at
/// `/api/history`, and returns it. Runs on the metrics endpoint's runtime.
pub(crate) fn start(metrics: Arc<Metrics>) -> Arc<Mutex<History>> {
    let history = Arc::new(Mutex::new(History::default()));
    {
        let history = history.clone();
        metrics.add_route(
            "/api/history",
            Arc::new(move |query: &str| history.lock().expect("history lock").json(query)),
        );
    }
    let h = history.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HISTORY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let m = metrics.clone();
            let Ok(s) = tokio::task::spawn_blocking(move || {
                let at_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                sample(&m.render(), at_ms)
            })
            .await
            else {
                continue;
            };
            h.lock().expect("history lock").push(s);
        }
    });
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"iotflow_kafka_messages_received_total{job_id="a",job_name="j",operator="kafka-source",worker="0"} 10
iotflow_kafka_messages_received_total{job_id="a",job_name="j",operator="kafka-source",worker="1"} 5
iotflow_kafka_messages_received_total{job_id="a",job_name="j",operator="broadcast-source",worker="0"} 100
iotflow_parse_success_total{worker="0"} 12
iotflow_parse_failure_total{reason="x",worker="1"} 3
iotflow_sink_rows_written_total{sink="mysql",worker="0"} 7
iotflow_sink_rows_written_total{sink="mysql",worker="1"} 4
iotflow_kafka_consumer_lag{operator="kafka-source",partition="0",worker="0"} 9
iotflow_kafka_consumer_lag{operator="kafka-source",partition="0",worker="1"} 2
iotflow_kafka_consumer_lag{operator="kafka-source",partition="1",worker="1"} 1
iotflow_end_to_end_latency_seconds_bucket{sink="mysql",worker="0",le="0.1"} 2
iotflow_end_to_end_latency_seconds_bucket{sink="mysql",worker="0",le="+Inf"} 3
iotflow_end_to_end_latency_seconds_bucket{sink="mysql",worker="1",le="0.1"} 1
iotflow_end_to_end_latency_seconds_bucket{sink="mysql",worker="1",le="+Inf"} 4
"#;

    #[test]
    fn a_sample_sums_what_the_ui_draws() {
        let s = sample(TEXT, 1000);
        assert_eq!(s.values["received"], 15.0, "the readings source only");
        assert_eq!(s.values["parsed"], 15.0);
        assert_eq!(s.values["rows/mysql"], 11.0);
        assert_eq!(s.values["worker_rows/mysql/1"], 4.0);
        assert_eq!(s.values["lag"], 10.0, "per partition the largest, summed");
        assert!(!s.values.contains_key("enriched"));
        assert_eq!(
            s.histograms["e2e/mysql"],
            vec![(0.1, 3.0), (f64::INFINITY, 7.0)]
        );
    }

    #[test]
    fn the_ring_keeps_the_newest_and_answers_since() {
        let mut h = History::default();
        for i in 0..(HISTORY_SAMPLES as i64 + 5) {
            h.push(HistorySample {
                at_ms: i * 1000,
                ..Default::default()
            });
        }
        assert_eq!(h.since(i64::MIN).count(), HISTORY_SAMPLES);
        assert_eq!(h.since(i64::MIN).next().unwrap().at_ms, 5000);
        let json: serde_json::Value = serde_json::from_str(&h.json("since=602000")).unwrap();
        let at: Vec<i64> = json["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["at_ms"].as_i64().unwrap())
            .collect();
        assert_eq!(at, vec![603_000, 604_000]);
    }
}
