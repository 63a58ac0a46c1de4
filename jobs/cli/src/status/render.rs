//! The status output: the table `iotflow status` prints and the JSON document of `--json`.

use serde_json::{json, Value};

use super::model::{Kind, ProcessStatus, State};

impl ProcessStatus {
    /// This process in the `--json` document.
    pub(super) fn to_json(&self) -> Value {
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
            "mqtt_bridge": self.bridge.as_ref().map(|b| json!({
                "connected": b.connected,
                "received_per_second": round3(b.received_per_second),
                "forwarded_per_second": round3(b.forwarded_per_second),
                "in_flight": b.in_flight,
                "duplicates_dropped_total": b.duplicates_dropped_total,
                "state": b.state.as_str(),
            })),
        })
    }
}

/// Rounded to 3 decimals (the JSON's rates and uptimes; the measurement is not finer).
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
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
            (Kind::Bridge, _) if s.bridge.is_some() => {
                let b = s.bridge.as_ref().expect("checked");
                (
                    format!("mqtt {}", rate_text(b.received_per_second)),
                    format!("kafka {}", rate_text(b.forwarded_per_second)),
                    format!("in flight {}", b.in_flight),
                    if b.connected {
                        b.state.as_str().to_string()
                    } else {
                        format!("{} (not connected to MQTT)", b.state.as_str())
                    },
                )
            }
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::status::targets::Target;

    fn target() -> Target {
        Target {
            endpoint: "127.0.0.1:9249".into(),
            labels: BTreeMap::new(),
        }
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
    fn uptime_text() {
        assert_eq!(format_uptime(42.9), "42s");
        assert_eq!(format_uptime(307.0), "5m07s");
        assert_eq!(format_uptime(7980.0), "2h13m");
        assert_eq!(format_uptime(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
    }
}
