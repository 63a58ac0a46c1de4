//! The arithmetic of rollups, without I/O: one reading ([`Pt`]), the buckets it falls in
//! ([`Grain`]) and the aggregate of a bucket ([`Agg`]).
//!
//! An aggregate is a function of the *set* of readings in its bucket: count, min, max, exact
//! sum and the last metric (the reading with the greatest `(event_time, partition, offset)`,
//! so ties between readings of the same millisecond are broken the same way every time). Adding
//! readings in any order, or merging the aggregates of disjoint sets, gives the same result.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use iotflow_geo::Point;
use rust_decimal::Decimal;

/// One stored reading as the rollups see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pt {
    /// Device.
    pub pboxid: String,
    /// Event time, local wall time as the stores keep it.
    pub at: NaiveDateTime,
    /// Kafka partition of the source record.
    pub partition: i32,
    /// Kafka offset of the source record.
    pub offset: i64,
    /// The exact metric.
    pub metric: Decimal,
    /// Latitude, degrees.
    pub lat: Decimal,
    /// Longitude, degrees.
    pub lon: Decimal,
}

/// The order of readings: event time, then Kafka coordinates (unique per reading).
pub type Key = (NaiveDateTime, i32, i64);

impl Pt {
    /// Its place in the order of readings.
    pub fn key(&self) -> Key {
        (self.at, self.partition, self.offset)
    }

    /// Its position as floating-point degrees (for distances and tiles).
    pub fn point(&self) -> Point {
        use rust_decimal::prelude::ToPrimitive;
        Point::new(
            self.lat.to_f64().unwrap_or(0.0),
            self.lon.to_f64().unwrap_or(0.0),
        )
    }
}

/// A bucket size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    /// Calendar minute.
    Minute,
    /// Calendar hour.
    Hour,
    /// Calendar day.
    Day,
}

impl Grain {
    /// All grains, finest first.
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

    /// The start of the bucket `at` falls in.
    pub fn bucket(self, at: NaiveDateTime) -> NaiveDateTime {
        let d = at.date();
        let t = match self {
            Grain::Minute => NaiveTime::from_hms_opt(at.hour(), at.minute(), 0),
            Grain::Hour => NaiveTime::from_hms_opt(at.hour(), 0, 0),
            Grain::Day => NaiveTime::from_hms_opt(0, 0, 0),
        };
        d.and_time(t.expect("a valid time"))
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: NaiveDateTime) -> NaiveDateTime {
        match self {
            Grain::Minute => start + chrono::Duration::minutes(1),
            Grain::Hour => start + chrono::Duration::hours(1),
            Grain::Day => start + chrono::Duration::days(1),
        }
    }

    /// The grain one step finer (what a bucket of this grain is recomputed from), if any.
    pub fn finer(self) -> Option<Grain> {
        match self {
            Grain::Minute => None,
            Grain::Hour => Some(Grain::Minute),
            Grain::Day => Some(Grain::Hour),
        }
    }

    /// `minute`, `hour`, `day`: table suffixes and API values.
    pub fn name(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    /// The grain named `name` ([`Grain::name`]).
    pub fn parse(name: &str) -> Option<Grain> {
        Grain::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// The day a bucket start belongs to.
pub fn day_of(at: NaiveDateTime) -> NaiveDate {
    NaiveDate::from_ymd_opt(at.year(), at.month(), at.day()).expect("a valid date")
}

/// The aggregate of the readings of one bucket of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agg {
    /// Readings counted.
    pub readings: u64,
    /// Least metric.
    pub min: Decimal,
    /// Greatest metric.
    pub max: Decimal,
    /// Exact sum of the metrics.
    pub sum: Decimal,
    /// Metric of the last reading (greatest [`Key`]).
    pub last: Decimal,
    /// Key of the last reading.
    pub last_key: Key,
    /// Event time of the first reading.
    pub first_at: NaiveDateTime,
}

impl Agg {
    /// The aggregate of one reading.
    pub fn of(p: &Pt) -> Agg {
        Agg {
            readings: 1,
            min: p.metric,
            max: p.metric,
            sum: p.metric,
            last: p.metric,
            last_key: p.key(),
            first_at: p.at,
        }
    }

    /// Adds one reading not yet counted.
    pub fn add(&mut self, p: &Pt) {
        self.merge(&Agg::of(p));
    }

    /// Adds the aggregate of a disjoint set of readings.
    pub fn merge(&mut self, o: &Agg) {
        self.readings += o.readings;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        if o.last_key > self.last_key {
            self.last_key = o.last_key;
            self.last = o.last;
        }
        self.first_at = self.first_at.min(o.first_at);
    }

    /// The mean metric, rounded half away from zero to 8 decimal places (the column's scale).
    pub fn avg(&self) -> Decimal {
        (self.sum / Decimal::from(self.readings.max(1)))
            .round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    }

    /// The aggregate of `points` (`None` for none).
    pub fn of_all<'a>(points: impl IntoIterator<Item = &'a Pt>) -> Option<Agg> {
        let mut out: Option<Agg> = None;
        for p in points {
            match &mut out {
                Some(a) => a.add(p),
                None => out = Some(Agg::of(p)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn pt(s: i64, part: i32, off: i64, metric: i64) -> Pt {
        Pt {
            pboxid: "d".into(),
            at: NaiveDate::from_ymd_opt(2025, 4, 10)
                .unwrap()
                .and_hms_opt(23, 59, 0)
                .unwrap()
                + chrono::Duration::milliseconds(s),
            partition: part,
            offset: off,
            metric: Decimal::new(metric, 2),
            lat: Decimal::new(3_100_000_000, 8),
            lon: Decimal::new(12_100_000_000, 8),
        }
    }

    #[test]
    fn buckets_cut_at_calendar_boundaries() {
        let at = pt(59_999, 0, 0, 0).at;
        assert_eq!(Grain::Minute.bucket(at).to_string(), "2025-04-10 23:59:00");
        assert_eq!(Grain::Hour.bucket(at).to_string(), "2025-04-10 23:00:00");
        assert_eq!(Grain::Day.bucket(at).to_string(), "2025-04-10 00:00:00");
        let next = pt(60_000, 0, 0, 0).at;
        assert_eq!(
            Grain::Minute.bucket(next).to_string(),
            "2025-04-11 00:00:00"
        );
        assert_eq!(
            Grain::Day.next(Grain::Day.bucket(at)),
            Grain::Day.bucket(next)
        );
        assert_eq!(Grain::parse("hour"), Some(Grain::Hour));
    }

    #[test]
    fn the_aggregate_is_a_function_of_the_set() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        // Ties on the millisecond: the last is decided by the Kafka coordinates.
        let mut points: Vec<Pt> = (0..500)
            .map(|i| {
                pt(
                    rng.random_range(0..60) * 1000,
                    rng.random_range(0..4),
                    i,
                    rng.random_range(-9999..9999),
                )
            })
            .collect();
        let whole = Agg::of_all(&points).unwrap();
        let last = points.iter().max_by_key(|p| p.key()).unwrap();
        assert_eq!(whole.last, last.metric);
        assert_eq!(whole.readings, 500);
        for _ in 0..20 {
            points.shuffle(&mut rng);
            let cut = rng.random_range(1..499);
            let mut a = Agg::of_all(&points[..cut]).unwrap();
            a.merge(&Agg::of_all(&points[cut..]).unwrap());
            assert_eq!(a, whole);
        }
        assert_eq!(
            Agg::of_all(&[pt(0, 0, 0, 1), pt(1, 0, 1, 2)])
                .unwrap()
                .avg(),
            Decimal::new(15, 3)
        );
    }
}
