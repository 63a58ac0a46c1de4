//! The live work-time view: today's working seconds per device, maintained reading by reading
//! with the rules of `docs/worktime.md` ([`iotflow_worktime::LiveDay`]) and served as JSON at
//! `/worktime/live[?day=YYYY-MM-DD]` on the metrics endpoint.
//!
//! Readings are exchanged by device so that one worker holds a device's state; in a cluster each
//! process serves the devices of its own workers. For readings that arrive in order (per device,
//! by time then metric) the figures at the end of a day equal the daily job's; a reading older
//! than the device's latest is counted as `late` and left out (the daily job, which sorts the
//! whole day, includes it). The threshold is the one on the device's record when the reading was
//! enriched; the daily job uses the record current when it runs, so the two differ for a day on
//! which a device's threshold changed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use iotflow_model::{Decimal, Enriched, Zone};
use iotflow_worktime::{date_of, LiveDay, Rules, DAY_MS};

/// One reading for the live view: device, local wall ms, scaled metric, device threshold.
pub type LivePoint = (String, i64, i128, Option<i128>);

fn scaled(d: &Decimal) -> i128 {
    let mut d = *d;
    d.rescale(iotflow_worktime::SCALE);
    d.mantissa()
}

/// The live view's input from an enriched reading.
pub fn live_point(e: &Enriched) -> LivePoint {
    (
        e.reading.pboxid.clone(),
        e.reading.event_time.and_utc().timestamp_millis(),
        scaled(&e.reading.metric),
        e.device
            .as_ref()
            .and_then(|d| d.work_threshold.as_ref())
            .map(scaled),
    )
}

/// Per device its two latest days.
#[derive(Debug)]
pub struct LiveBoard {
    rules: Rules,
    devices: HashMap<String, VecDeque<LiveDay>>,
}

impl LiveBoard {
    /// An empty board.
    pub fn new(rules: Rules) -> LiveBoard {
        LiveBoard {
            rules,
            devices: HashMap::new(),
        }
    }

    /// Takes one reading.
    pub fn push(&mut self, (pboxid, t, metric, threshold): LivePoint) {
        let day = t.div_euclid(DAY_MS);
        let days = self.devices.entry(pboxid).or_default();
        let live = match days.iter_mut().find(|d| d.day == day) {
            Some(d) => d,
            None => {
                if days.back().is_some_and(|d| d.day > day) {
                    // A reading of a day already rotated out: late for the live view.
                    if let Some(d) = days.iter_mut().min_by_key(|d| d.day) {
                        d.late += 1;
                    }
                    return;
                }
                days.push_back(LiveDay::new(day));
                while days.len() > 2 {
                    days.pop_front();
                }
                days.back_mut().expect("just pushed")
            }
        };
        live.push(
            (t, metric),
            threshold.unwrap_or(self.rules.default_threshold),
            self.rules.max_gap_ms,
        );
    }

    /// The JSON of `day` (days since 1970-01-01).
    pub fn json(&self, day: i64) -> String {
        let mut devices: Vec<serde_json::Value> = self
            .devices
            .iter()
            .filter_map(|(id, days)| days.iter().find(|d| d.day == day).map(|d| (id, d)))
            .map(|(id, d)| {
                let r = d.result();
                let text = |ms: i64| {
                    chrono::DateTime::from_timestamp_millis(ms)
                        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                        .unwrap_or_default()
                };
                serde_json::json!({
                    "pboxid": id,
                    "segments": r.segments,
                    "working_seconds": r.working_seconds(),
                    "first_reading": text(r.first_ms),
                    "last_reading": text(r.last_ms),
                    "observed_seconds": r.observed_seconds(),
                    "utilisation": r.utilisation(),
                    "day_share": r.day_share(),
                    "readings": r.readings,
                    "late": d.late,
                })
            })
            .collect();
        devices.sort_by(|a, b| a["pboxid"].as_str().cmp(&b["pboxid"].as_str()));
        serde_json::json!({ "day": date_of(day * DAY_MS).to_string(), "devices": devices })
            .to_string()
    }
}

/// The `/worktime/live` handler: `?day=YYYY-MM-DD`, default today in `zone`.
pub fn route(board: Arc<Mutex<LiveBoard>>, zone: Zone) -> iotflow_metrics::Route {
    Arc::new(move |query: &str| {
        let asked = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("day="))
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        let day = asked.unwrap_or_else(|| zone.local(&chrono::Utc::now().fixed_offset()).date());
        let days = day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis().div_euclid(DAY_MS))
            .unwrap_or(0);
        board.lock().expect("live board lock").json(days)
    })
}
