//! The live work-time view: today's working seconds per device, maintained reading by reading
//! with the rules of `docs/worktime.md` ([`LiveDay`]) and served as JSON at
//! `/worktime/live[?day=YYYY-MM-DD]` on the metrics endpoint.
//!
//! [`LiveWorkTime::live_work_time`] is the operator that feeds a [`LiveBoard`] from the
//! enriched stream; [`route`] serves the board.
//!
//! Readings are exchanged by device so that one worker holds a device's state; in a cluster each
//! process serves the devices of its own workers. For readings that arrive in order (per device,
//! by time then metric) the figures at the end of a day equal the daily job's; a reading older
//! than the device's latest is counted as `late` and left out (the daily job, which sorts the
//! whole day, includes it). The threshold is the one on the device's record when the reading was
//! enriched; the daily job uses the record current when it runs, so the two differ for a day on
//! which a device's threshold changed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use differential_dataflow::Hashable;
use iotflow_model::{columns, Decimal, Enriched, Zone};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::{date_of, LiveDay, Rules, DAY_MS, SCALE};

/// One reading for the live view: device, local wall ms, scaled metric, device threshold.
pub type LivePoint = (String, i64, i128, Option<i128>);

// The live view compares at the stores' scale: the model's rounding applies.
const _: () = assert!(SCALE == columns::DECIMAL_SCALE);

/// `d × 10^SCALE`, rounded as the stores round (`columns::to_scale`: half away from zero, which
/// is also what `Decimal::rescale` does when it drops places). The rescale after it only pads
/// a value with fewer places to exactly `SCALE`, so the mantissa is the scaled integer.
fn scaled(d: &Decimal) -> i128 {
    let mut d = columns::to_scale(*d);
    d.rescale(SCALE);
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

/// Feeds the live work-time view.
pub trait LiveWorkTime {
    /// Takes every reading of the stream into `board`, device by device.
    ///
    /// Readings are exchanged by device id, so one worker holds a device's state. Timely
    /// delivers different times in any order: readings wait until their time is complete and
    /// are taken time by time, so a device's readings are taken in the order its partition
    /// delivered them.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use iotflow_model::Enriched;
    /// use iotflow_worktime::live::{LiveBoard, LiveWorkTime};
    /// use iotflow_worktime::Rules;
    /// use timely::dataflow::operators::vec::ToStream;
    ///
    /// let board = Arc::new(Mutex::new(LiveBoard::new(Rules::default())));
    /// let b = board.clone();
    /// timely::example(move |scope| {
    ///     Vec::<Enriched>::new().to_stream(scope).live_work_time(b);
    /// });
    /// assert_eq!(board.lock().unwrap().json(0), r#"{"day":"1970-01-01","devices":[]}"#);
    /// ```
    fn live_work_time(self, board: Arc<Mutex<LiveBoard>>);
}

impl LiveWorkTime for StreamVec<'_, u64, Enriched> {
    fn live_work_time(self, board: Arc<Mutex<LiveBoard>>) {
        self.map(|e| live_point(&e)).take_live_points(board);
    }
}

impl LiveWorkTime for StreamVec<'_, u64, LivePoint> {
    fn live_work_time(self, board: Arc<Mutex<LiveBoard>>) {
        self.take_live_points(board);
    }
}

/// The operator behind [`LiveWorkTime`], over points.
trait TakeLivePoints {
    fn take_live_points(self, board: Arc<Mutex<LiveBoard>>);
}

impl TakeLivePoints for StreamVec<'_, u64, LivePoint> {
    fn take_live_points(self, board: Arc<Mutex<LiveBoard>>) {
        let mut stash: BTreeMap<u64, Vec<LivePoint>> = BTreeMap::new();
        self.sink(
            Exchange::new(|p: &LivePoint| p.0.hashed()),
            "worktime-live",
            move |(input, frontier)| {
                input.for_each(|stamp, data| {
                    if let Some(t) = stamp.least().copied() {
                        stash.entry(t).or_default().append(data);
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let points = entry.remove();
                    let mut board = board.lock().expect("live board lock");
                    for point in points {
                        board.push(point);
                    }
                }
            },
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{DeviceInfo, Reading, SourceRef};
    use std::str::FromStr;
    use timely::dataflow::operators::vec::Input;
    use timely::dataflow::operators::Concatenate;
    use timely::dataflow::InputHandleVec;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    /// Ms of 2025-04-10 at `h:m:s` (local wall time read as UTC).
    fn at(h: u32, m: u32, s: u32) -> i64 {
        chrono::NaiveDate::from_ymd_opt(2025, 4, 10)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn enriched(pboxid: &str, t_ms: i64, metric: &str, threshold: Option<&str>) -> Enriched {
        Enriched {
            reading: Reading {
                event_time: chrono::DateTime::from_timestamp_millis(t_ms)
                    .unwrap()
                    .naive_utc(),
                metric: dec(metric),
                pboxid: pboxid.into(),
                latitude: Decimal::ZERO,
                longitude: Decimal::ZERO,
                source: SourceRef {
                    partition: 0,
                    offset: 0,
                },
                kafka_ts_ms: None,
            },
            device: threshold.map(|t| {
                DeviceInfo {
                    pboxid: pboxid.into(),
                    work_threshold: Some(dec(t)),
                    ..Default::default()
                }
                .into()
            }),
        }
    }

    fn day_of(t_ms: i64) -> i64 {
        t_ms.div_euclid(DAY_MS)
    }

    fn device(board: &LiveBoard, day: i64, pboxid: &str) -> serde_json::Value {
        let json: serde_json::Value = serde_json::from_str(&board.json(day)).unwrap();
        json["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["pboxid"] == pboxid)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn points_are_scaled_as_the_stores_round() {
        let p = live_point(&enriched("a", 5, "12.5", Some("50")));
        assert_eq!(p, ("a".into(), 5, 1_250_000_000, Some(5_000_000_000)));
        // More places than the stores keep: rounded half away from zero, as MySQL rounds.
        for (text, scaled) in [
            ("0.000000005", 1),
            ("-0.000000005", -1),
            ("0.0000000049", 0),
            ("1.234567894999", 123_456_789),
            ("-2", -200_000_000),
        ] {
            assert_eq!(
                live_point(&enriched("a", 0, text, None)).2,
                scaled,
                "{text}"
            );
            let mut old = dec(text);
            old.rescale(SCALE);
            assert_eq!(old.mantissa(), scaled, "{text}: same as the former rescale");
        }
        assert_eq!(live_point(&enriched("a", 0, "1", None)).3, None);
    }

    #[test]
    fn the_board_keeps_two_days_and_counts_rotated_out_readings_late() {
        let mut board = LiveBoard::new(Rules::default());
        let today = at(8, 0, 0);
        let yesterday = today - DAY_MS;
        let before = yesterday - DAY_MS;
        board.push(live_point(&enriched("a", yesterday, "60", None)));
        board.push(live_point(&enriched("a", today, "60", None)));
        board.push(live_point(&enriched("a", today + 60_000, "10", None)));
        assert_eq!(device(&board, day_of(today), "a")["working_seconds"], 60.0);
        assert_eq!(device(&board, day_of(yesterday), "a")["readings"], 1);
        // A reading two days back: no room for its day any more.
        board.push(live_point(&enriched("a", before, "60", None)));
        assert_eq!(device(&board, day_of(yesterday), "a")["late"], 1);
        assert_eq!(device(&board, day_of(before), "a"), serde_json::Value::Null);
        // The device's own threshold applies.
        board.push(live_point(&enriched("b", today, "60", Some("70"))));
        assert_eq!(device(&board, day_of(today), "b")["segments"], 0);
    }

    /// Readings of a later time delivered before those of an earlier one are still taken in
    /// time order: nothing is late.
    #[test]
    fn the_operator_takes_times_in_order_whatever_order_they_arrive_in() {
        let board = Arc::new(Mutex::new(LiveBoard::new(Rules::default())));
        let b = board.clone();
        timely::execute_directly(move |worker| {
            let mut early = InputHandleVec::new();
            let mut late = InputHandleVec::new();
            worker.dataflow::<u64, _, _>(|scope| {
                let a = scope.input_from(&mut early);
                let c = scope.input_from(&mut late);
                scope.concatenate([a, c]).live_work_time(b.clone());
            });
            // Time 2 first: 08:01 above the threshold, 08:02 below it.
            late.advance_to(2);
            late.send(enriched("d", at(8, 1, 0), "60", None));
            late.send(enriched("d", at(8, 2, 0), "10", None));
            for _ in 0..20 {
                worker.step();
            }
            assert_eq!(
                b.lock()
                    .unwrap()
                    .json(day_of(at(8, 0, 0)))
                    .matches("\"d\"")
                    .count(),
                0
            );
            // Then time 1: 08:00, the reading before them.
            early.advance_to(1);
            early.send(enriched("d", at(8, 0, 0), "60", None));
            early.advance_to(3);
            late.advance_to(3);
            for _ in 0..20 {
                worker.step();
            }
        });
        let board = board.lock().unwrap();
        let d = device(&board, day_of(at(8, 0, 0)), "d");
        assert_eq!(d["late"], 0, "{d}");
        assert_eq!(d["readings"], 3);
        assert_eq!(d["segments"], 1);
        assert_eq!(d["working_seconds"], 120.0);
        assert_eq!(d["first_reading"], "2025-04-10 08:00:00.000");
    }

    #[test]
    fn the_route_reads_the_asked_day() {
        let board = Arc::new(Mutex::new(LiveBoard::new(Rules::default())));
        board
            .lock()
            .unwrap()
            .push(live_point(&enriched("a", at(8, 0, 0), "60", None)));
        let route = route(board, Zone::Utc);
        let json: serde_json::Value = serde_json::from_str(&route("day=2025-04-10")).unwrap();
        assert_eq!(json["day"], "2025-04-10");
        assert_eq!(json["devices"][0]["pboxid"], "a");
        let other: serde_json::Value = serde_json::from_str(&route("x=1&day=2025-04-11")).unwrap();
        assert_eq!(other["devices"].as_array().unwrap().len(), 0);
    }
}
