//! Device work time: per device and calendar day, the working segments of its readings.
//!
//! The rules (also in `docs/worktime.md`; each has a unit test below):
//!
//! * For one device and one day (in the configured zone: `event_time` is stored as the device's
//!   local wall time, so the day is the date of `event_time`), take its readings ordered by
//!   `event_time`. Readings with equal times are ordered by metric (ascending), so the result
//!   never depends on the order the input arrived in.
//! * A **working segment** is a maximal run of consecutive readings with `metric > threshold`
//!   (strictly greater; the threshold is the device's `work_threshold` when it has one, else 50).
//! * A segment **starts** at its first reading's time and **ends** at the time of the first
//!   following reading whose metric is at or below the threshold; if no such reading follows
//!   within the day, it ends at its own last reading's time.
//! * A **gap** between two consecutive readings longer than `max_gap` (5 minutes by default)
//!   ends a segment at the reading before the gap; a reading above the threshold after the gap
//!   starts a new segment.
//! * Segments are clipped to the day (they cannot leave it: only the day's readings are used).
//! * Output per device per day: segments (a single reading above the threshold with nothing
//!   after it is a segment of 0 s), working seconds, first and last reading time, observed
//!   seconds (last − first), utilisation = working ÷ observed (0 when observed is 0), and
//!   working ÷ 86 400.
//!
//! Times are whole milliseconds of the local wall time read as UTC (as stored), metrics and
//! thresholds exact decimals scaled to integers ([`scale`]), so every comparison is exact.
//! [`analyse`] is the rule set as a state machine over sorted readings; [`worktime`] runs it as a
//! differential-dataflow `reduce` keyed by (device, day), spread over all workers;
//! [`reference`] is an independent formulation (per pair of consecutive readings) that the
//! tests hold both against.

pub mod live;

use chrono::NaiveDate;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::progress::Timestamp;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Decimal places kept by [`scale`]: metrics and thresholds are compared as `value × 10^8`.
pub const SCALE: u32 = 8;

/// `value × 10^8` as an integer, from the decimal text (`"50"`, `"-3.25"`, `"1e2"` is refused);
/// `None` when the text is not a plain decimal or has more than 8 decimal places.
pub fn scale(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > SCALE as usize
    {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    v = v.checked_mul(10i128.pow(SCALE - frac.len() as u32))?;
    Some(if negative { -v } else { v })
}

/// The rules' parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Threshold for devices without their own, scaled ([`scale`]). Default 50.
    pub default_threshold: i128,
    /// Longest gap between consecutive readings inside a segment, ms. Default 5 minutes.
    pub max_gap_ms: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            default_threshold: 50 * 10i128.pow(SCALE),
            max_gap_ms: 5 * 60 * 1000,
        }
    }
}

/// One reading as the analysis sees it: local wall time in ms, scaled metric.
pub type Point = (i64, i128);

/// The result for one device and day. Times in ms of the local wall time read as UTC.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct DayResult {
    /// Working segments.
    pub segments: u32,
    /// Total working time, ms.
    pub working_ms: i64,
    /// First reading of the day.
    pub first_ms: i64,
    /// Last reading of the day.
    pub last_ms: i64,
    /// Readings of the day.
    pub readings: u64,
}

impl DayResult {
    /// Last − first reading, seconds.
    pub fn observed_seconds(&self) -> f64 {
        (self.last_ms - self.first_ms) as f64 / 1000.0
    }

    /// Working time, seconds.
    pub fn working_seconds(&self) -> f64 {
        self.working_ms as f64 / 1000.0
    }

    /// Working ÷ observed; 0 when nothing was observed.
    pub fn utilisation(&self) -> f64 {
        if self.last_ms == self.first_ms {
            0.0
        } else {
            self.working_ms as f64 / (self.last_ms - self.first_ms) as f64
        }
    }

    /// Working ÷ the whole day.
    pub fn day_share(&self) -> f64 {
        self.working_ms as f64 / DAY_MS as f64
    }
}

/// The day (its first ms) of a local wall time in ms.
pub fn day_start(t_ms: i64) -> i64 {
    t_ms.div_euclid(DAY_MS) * DAY_MS
}

/// The calendar date of a local wall time in ms.
pub fn date_of(t_ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(day_start(t_ms))
        .map(|d| d.date_naive())
        .unwrap_or_default()
}

/// The rules over one device's readings of one day, **sorted** by (time, metric). The
/// segment-by-segment formulation.
pub fn analyse(points: &[Point], threshold: i128, max_gap_ms: i64) -> DayResult {
    let Some(&(first, _)) = points.first() else {
        return DayResult::default();
    };
    let last = points.last().map_or(first, |p| p.0);
    let (day_begin, day_end) = (day_start(first), day_start(first) + DAY_MS);
    let clip = |t: i64| t.clamp(day_begin, day_end);
    let mut result = DayResult {
        first_ms: first,
        last_ms: last,
        readings: points.len() as u64,
        ..Default::default()
    };
    // The open segment's start, and its last reading so far.
    let mut open: Option<(i64, i64)> = None;
    for &(t, metric) in points {
        let above = metric > threshold;
        if let Some((start, previous)) = open {
            if t - previous > max_gap_ms {
                // The gap ends the segment at the reading before it.
                result.working_ms += clip(previous) - clip(start);
                open = None;
            } else if !above {
                // The first following reading at or below the threshold ends it.
                result.working_ms += clip(t) - clip(start);
                open = None;
                continue;
            } else {
                open = Some((start, t));
                continue;
            }
        }
        if above {
            result.segments += 1;
            open = Some((t, t));
        }
    }
    if let Some((start, previous)) = open {
        // Nothing followed within the day: it ends at its last reading.
        result.working_ms += clip(previous) - clip(start);
    }
    result
}

/// An independent formulation of the same rules, for tests: a segment starts at every reading
/// above the threshold whose predecessor is not (or is too far back), and the time between two
/// consecutive readings is working time exactly when the earlier one is above the threshold
/// and the gap is at most `max_gap_ms`. Sorts its input itself.
pub fn reference(points: &[Point], threshold: i128, max_gap_ms: i64) -> DayResult {
    let mut p = points.to_vec();
    p.sort();
    if p.is_empty() {
        return DayResult::default();
    }
    let mut r = DayResult {
        first_ms: p[0].0,
        last_ms: p[p.len() - 1].0,
        readings: p.len() as u64,
        ..Default::default()
    };
    for i in 0..p.len() {
        let above = p[i].1 > threshold;
        let starts =
            above && (i == 0 || p[i - 1].1 <= threshold || p[i].0 - p[i - 1].0 > max_gap_ms);
        if starts {
            r.segments += 1;
        }
        if i + 1 < p.len() && above && p[i + 1].0 - p[i].0 <= max_gap_ms {
            r.working_ms += p[i + 1].0 - p[i].0;
        }
    }
    r
}

/// Work time per (device, day) of `readings` (`(device, (local wall ms, scaled metric))`),
/// with per-device thresholds from `thresholds` (`(device, scaled threshold)`, at most one per
/// device; others use `rules.default_threshold`). Runs on every worker: readings are exchanged
/// by (device, day), so a big day is spread over all workers. The output is keyed by
/// `(device, day as days since 1970-01-01)`.
pub fn worktime<'scope, T>(
    readings: VecCollection<'scope, T, (String, Point)>,
    thresholds: VecCollection<'scope, T, (String, i128)>,
    rules: Rules,
) -> VecCollection<'scope, T, ((String, i64), DayResult)>
where
    T: Timestamp + differential_dataflow::lattice::Lattice + Ord,
{
    let by_device = readings.clone();
    let with_own = by_device
        .clone()
        .join_map(thresholds.clone(), |device, point, threshold| {
            (device.clone(), (*point, *threshold))
        });
    let with_default = by_device
        .antijoin(thresholds.map(|(device, _)| device))
        .map(move |(device, point)| (device, (point, rules.default_threshold)));
    let max_gap = rules.max_gap_ms;
    with_own
        .concat(with_default)
        .map(|(device, (point, threshold))| {
            (
                (device, point.0.div_euclid(DAY_MS)),
                (point.0, point.1, threshold),
            )
        })
        .reduce(move |_key, input, output| {
            // Values arrive sorted by (time, metric, threshold): the rules' order.
            let threshold = input[0].0 .2;
            let mut points = Vec::with_capacity(input.len());
            for ((t, metric, _), count) in input {
                for _ in 0..(*count).max(0) {
                    points.push((*t, *metric));
                }
            }
            if !points.is_empty() {
                output.push((analyse(&points, threshold, max_gap), 1));
            }
        })
}

/// The rules applied reading by reading, for the live view: the same result as [`analyse`]
/// when a device's readings arrive in the rules' order (time, then metric), in O(1) per
/// reading. A reading that arrives out of order (before the device's latest one) cannot be
/// placed any more: it is counted in `late` and left out; the daily job, which sorts the whole
/// day, is the authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveDay {
    /// The day, as days since 1970-01-01 of the local wall time.
    pub day: i64,
    result: DayResult,
    /// Start of the open segment and its last reading.
    open: Option<(i64, i64)>,
    /// The latest reading taken: time and metric.
    latest: Option<Point>,
    /// Readings left out because they arrived out of order.
    pub late: u64,
}

impl LiveDay {
    /// An empty day.
    pub fn new(day: i64) -> LiveDay {
        LiveDay {
            day,
            result: DayResult::default(),
            open: None,
            latest: None,
            late: 0,
        }
    }

    /// Takes one reading of this day; `false` when it arrived out of order and was left out.
    pub fn push(&mut self, (t, metric): Point, threshold: i128, max_gap_ms: i64) -> bool {
        if let Some(latest) = self.latest {
            if (t, metric) < latest {
                self.late += 1;
                return false;
            }
        }
        let r = &mut self.result;
        if self.latest.is_none() {
            r.first_ms = t;
        }
        r.last_ms = t;
        r.readings += 1;
        self.latest = Some((t, metric));
        let above = metric > threshold;
        if let Some((start, previous)) = self.open {
            if t - previous > max_gap_ms {
                r.working_ms += previous - start;
                self.open = None;
            } else if !above {
                r.working_ms += t - start;
                self.open = None;
                return true;
            } else {
                self.open = Some((start, t));
                return true;
            }
        }
        if above {
            r.segments += 1;
            self.open = Some((t, t));
        }
        true
    }

    /// The result so far: an open segment counts up to its last reading.
    pub fn result(&self) -> DayResult {
        let mut r = self.result;
        if let Some((start, previous)) = self.open {
            r.working_ms += previous - start;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i128 = 50 * 100_000_000;
    const GAP: i64 = 300_000;

    /// 2025-04-10 at `h:m:s` in ms.
    fn at(h: i64, m: i64, s: i64) -> i64 {
        20_188 * DAY_MS + ((h * 60 + m) * 60 + s) * 1000
    }

    fn v(x: &str) -> i128 {
        scale(x).unwrap()
    }

    fn both(points: &[Point]) -> DayResult {
        let mut sorted = points.to_vec();
        sorted.sort();
        let a = analyse(&sorted, T, GAP);
        assert_eq!(a, reference(points, T, GAP), "the two formulations agree");
        a
    }

    #[test]
    fn live_in_order_equals_the_daily_rules() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..300 {
            let mut t = at(0, 0, 0);
            let mut points = Vec::new();
            for _ in 0..rng.random_range(0..60) {
                t += [0, 1_000, 30_000, 299_000, 300_000, 301_000, 3_600_000]
                    [rng.random_range(0..7)];
                points.push((t, v(["10", "50", "50.5", "90"][rng.random_range(0..4)])));
            }
            points.sort();
            let mut live = LiveDay::new(20_188);
            for p in &points {
                assert!(live.push(*p, T, GAP));
            }
            assert_eq!(live.result(), analyse(&points, T, GAP), "{points:?}");
        }
    }

    #[test]
    fn a_reading_delivered_twice_changes_segments_and_working_time_not() {
        // An at-least-once producer upstream can deliver a reading twice (docs/mqtt.md): the
        // copy is one more reading, at the same time and value, and nothing else.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        for _ in 0..300 {
            let mut t = at(0, 0, 0);
            let mut points = Vec::new();
            for _ in 0..rng.random_range(1..60) {
                t += [1_000, 30_000, 299_000, 301_000][rng.random_range(0..4)];
                points.push((t, v(["10", "50", "50.5", "90"][rng.random_range(0..4)])));
            }
            let once = both(&points);
            let mut twice = points.clone();
            let copies = rng.random_range(1..=points.len());
            for _ in 0..copies {
                twice.push(points[rng.random_range(0..points.len())]);
            }
            let got = both(&twice);
            assert_eq!(
                (got.segments, got.working_ms, got.first_ms, got.last_ms),
                (once.segments, once.working_ms, once.first_ms, once.last_ms),
                "{points:?}"
            );
            assert_eq!(got.readings, once.readings + copies as u64);
        }
    }

    #[test]
    fn live_leaves_late_readings_out() {
        let mut live = LiveDay::new(20_188);
        assert!(live.push((at(8, 0, 0), v("60")), T, GAP));
        assert!(live.push((at(8, 2, 0), v("60")), T, GAP));
        assert!(!live.push((at(8, 1, 0), v("10")), T, GAP));
        assert_eq!(live.late, 1);
        assert_eq!(live.result().working_ms, 120_000);
    }

    #[test]
    fn scaling_is_exact_and_strict() {
        assert_eq!(scale("50"), Some(5_000_000_000));
        assert_eq!(scale("50.00000001"), Some(5_000_000_001));
        assert_eq!(scale("-0.5"), Some(-50_000_000));
        assert_eq!(scale(".5"), Some(50_000_000));
        assert_eq!(scale("1.123456789"), None, "more than 8 places");
        for bad in ["", "-", "1e2", "abc", "1.2.3", " 1"] {
            assert_eq!(scale(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_segment_ends_at_the_first_reading_at_or_below_the_threshold() {
        let r = both(&[
            (at(8, 0, 0), v("60")),
            (at(8, 1, 0), v("70")),
            (at(8, 2, 0), v("50")), // equal: not working, ends the segment here
            (at(8, 3, 0), v("40")),
        ]);
        assert_eq!(r.segments, 1);
        assert_eq!(r.working_ms, 120_000);
        assert_eq!(r.observed_seconds(), 180.0);
        assert!((r.utilisation() - 120.0 / 180.0).abs() < 1e-12);
    }

    #[test]
    fn equal_to_the_threshold_is_not_working() {
        let r = both(&[(at(8, 0, 0), v("50")), (at(8, 1, 0), v("50"))]);
        assert_eq!((r.segments, r.working_ms), (0, 0));
        let r = both(&[(at(8, 0, 0), v("50.00000001")), (at(8, 1, 0), v("50"))]);
        assert_eq!((r.segments, r.working_ms), (1, 60_000));
    }

    #[test]
    fn a_gap_ends_the_segment_at_the_reading_before_it() {
        let r = both(&[
            (at(8, 0, 0), v("60")),
            (at(8, 4, 0), v("60")),
            // 5 min 1 s later: a new segment.
            (at(8, 9, 1), v("60")),
            (at(8, 10, 0), v("10")),
        ]);
        assert_eq!(r.segments, 2);
        assert_eq!(r.working_ms, 240_000 + 59_000);
        // Exactly max_gap is not a gap.
        let r = both(&[(at(8, 0, 0), v("60")), (at(8, 5, 0), v("60"))]);
        assert_eq!((r.segments, r.working_ms), (1, 300_000));
        // A gap before a reading at or below the threshold: the segment ends before the gap.
        let r = both(&[
            (at(8, 0, 0), v("60")),
            (at(8, 1, 0), v("60")),
            (at(9, 0, 0), v("1")),
        ]);
        assert_eq!((r.segments, r.working_ms), (1, 60_000));
    }

    #[test]
    fn without_a_following_reading_the_segment_ends_at_its_last_reading() {
        let r = both(&[(at(23, 57, 0), v("60")), (at(23, 59, 59), v("61"))]);
        assert_eq!((r.segments, r.working_ms), (1, 179_000));
    }

    #[test]
    fn a_single_reading() {
        let r = both(&[(at(12, 0, 0), v("99"))]);
        assert_eq!((r.segments, r.working_ms, r.readings), (1, 0, 1));
        assert_eq!(r.utilisation(), 0.0, "nothing observed");
        let r = both(&[(at(12, 0, 0), v("1"))]);
        assert_eq!((r.segments, r.working_ms), (0, 0));
        assert_eq!(both(&[]), DayResult::default());
    }

    #[test]
    fn all_above_and_all_below() {
        let above: Vec<Point> = (0..10).map(|i| (at(6, i, 0), v("80"))).collect();
        let r = both(&above);
        assert_eq!((r.segments, r.working_ms), (1, 9 * 60_000));
        assert_eq!(r.utilisation(), 1.0);
        assert!((r.day_share() - 540.0 / 86_400.0).abs() < 1e-12);
        let below: Vec<Point> = (0..10).map(|i| (at(6, i, 0), v("20"))).collect();
        let r = both(&below);
        assert_eq!((r.segments, r.working_ms, r.readings), (0, 0, 10));
        assert_eq!(r.observed_seconds(), 540.0);
    }

    #[test]
    fn unordered_input_gives_the_ordered_result() {
        let ordered = vec![
            (at(8, 0, 0), v("60")),
            (at(8, 1, 0), v("40")),
            (at(8, 2, 0), v("70")),
            (at(8, 3, 0), v("70")),
            (at(8, 4, 0), v("10")),
        ];
        let mut shuffled = ordered.clone();
        shuffled.reverse();
        shuffled.swap(1, 3);
        assert_eq!(reference(&shuffled, T, GAP), both(&ordered));
        assert_eq!(both(&ordered).segments, 2);
        assert_eq!(both(&ordered).working_ms, 60_000 + 120_000);
    }

    #[test]
    fn equal_times_order_by_metric() {
        // At 08:01 both a low and a high reading: low first, so the segment ends at 08:01 and a
        // new one starts there.
        let r = both(&[
            (at(8, 0, 0), v("60")),
            (at(8, 1, 0), v("70")),
            (at(8, 1, 0), v("10")),
            (at(8, 2, 0), v("10")),
        ]);
        assert_eq!((r.segments, r.working_ms), (2, 60_000 + 60_000));
    }

    #[test]
    fn days_are_separate() {
        // 23:59 above, next day 00:00:30 above: two days, one segment each, nothing crosses.
        let a = both(&[(at(23, 59, 0), v("60")), (at(23, 59, 30), v("60"))]);
        assert_eq!((a.segments, a.working_ms), (1, 30_000));
        let next = at(23, 59, 0) + 90_000;
        assert_eq!(date_of(next), date_of(at(0, 0, 0)).succ_opt().unwrap());
        let b = both(&[(next, v("60")), (next + 30_000, v("10"))]);
        assert_eq!((b.segments, b.working_ms), (1, 30_000));
    }
}
