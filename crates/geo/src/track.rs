//! A device's track through one day: its points in time order, the distance travelled
//! (great-circle, point to point) and its stops: stays within `radius_m` of where the stay
//! began for at least `min_stop_ms`. Built incrementally, one point at a time.

use crate::{distance_m, Point};

/// One point of a track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackPoint {
    /// Event time, ms.
    pub at_ms: i64,
    /// Where.
    pub p: Point,
}

/// A stop: the device stayed within the radius of `at` from `from_ms` to `to_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stop {
    /// Where the stay began.
    pub at: Point,
    /// Its first point's time.
    pub from_ms: i64,
    /// Its last point's time.
    pub to_ms: i64,
}

/// A track's running summary without its points: what [`Track`] keeps besides them, small
/// enough to store per device and day and resume from when the next points come.
///
/// Stops are found greedily in time order: a stay begins at a point and lasts while every
/// later point is within `radius_m` of that first point; the first point outside ends it (and
/// begins the next stay), and a stay of at least `min_stop_ms` is a stop. Feeding the same
/// points in the same order gives the same summary whether they come in one call or many, so
/// a summary resumed after a restart is the summary of all its points.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackSummary {
    /// Stay radius, metres.
    pub radius_m: f64,
    /// Shortest stay that is a stop, ms.
    pub min_stop_ms: i64,
    /// Points fed.
    pub points: u64,
    /// The first point.
    pub first: Option<TrackPoint>,
    /// The last point.
    pub last: Option<TrackPoint>,
    /// The first point of the stay in progress.
    pub stay: Option<TrackPoint>,
    /// Metres travelled, point to point.
    pub distance_m: f64,
    /// The stops that have ended (the stay in progress is not among them).
    pub closed: Vec<Stop>,
}

impl TrackSummary {
    /// An empty summary; stops are stays within `radius_m` for at least `min_stop_ms`.
    pub fn new(radius_m: f64, min_stop_ms: i64) -> TrackSummary {
        TrackSummary {
            radius_m,
            min_stop_ms,
            points: 0,
            first: None,
            last: None,
            stay: None,
            distance_m: 0.0,
            closed: Vec::new(),
        }
    }

    /// Adds the next point (not earlier than the last one; an earlier one is refused and
    /// returns false: a caller sorts first, or starts again from all the points).
    pub fn push(&mut self, point: TrackPoint) -> bool {
        match (self.last, self.stay) {
            (Some(last), Some(stay)) => {
                if point.at_ms < last.at_ms {
                    return false;
                }
                self.distance_m += distance_m(last.p, point.p);
                if distance_m(stay.p, point.p) > self.radius_m {
                    if last.at_ms - stay.at_ms >= self.min_stop_ms {
                        self.closed.push(Stop {
                            at: stay.p,
                            from_ms: stay.at_ms,
                            to_ms: last.at_ms,
                        });
                    }
                    self.stay = Some(point);
                }
            }
            _ => {
                self.first = Some(point);
                self.stay = Some(point);
            }
        }
        self.last = Some(point);
        self.points += 1;
        true
    }

    /// The stops so far, the stay in progress included when it is already long enough.
    pub fn stops(&self) -> Vec<Stop> {
        let mut out = self.closed.clone();
        if let (Some(stay), Some(last)) = (self.stay, self.last) {
            if last.at_ms - stay.at_ms >= self.min_stop_ms {
                out.push(Stop {
                    at: stay.p,
                    from_ms: stay.at_ms,
                    to_ms: last.at_ms,
                });
            }
        }
        out
    }
}

/// A track being built: its points and their [`TrackSummary`].
#[derive(Clone, Debug)]
pub struct Track {
    summary: TrackSummary,
    points: Vec<TrackPoint>,
}

impl Track {
    /// An empty track; stops are stays within `radius_m` for at least `min_stop_ms`.
    pub fn new(radius_m: f64, min_stop_ms: i64) -> Track {
        Track {
            summary: TrackSummary::new(radius_m, min_stop_ms),
            points: Vec::new(),
        }
    }

    /// Adds the next point (not earlier than the last one; an earlier one is refused and
    /// returns false: a caller sorts first, or holds points for its lateness bound).
    pub fn push(&mut self, point: TrackPoint) -> bool {
        let added = self.summary.push(point);
        if added {
            self.points.push(point);
        }
        added
    }

    /// The points so far.
    pub fn points(&self) -> &[TrackPoint] {
        &self.points
    }

    /// The summary so far.
    pub fn summary(&self) -> &TrackSummary {
        &self.summary
    }

    /// Metres travelled so far.
    pub fn distance_m(&self) -> f64 {
        self.summary.distance_m
    }

    /// The stops so far, the stay in progress included when it is already long enough.
    pub fn stops(&self) -> Vec<Stop> {
        self.summary.stops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(at_s: i64, lat: f64, lon: f64) -> TrackPoint {
        TrackPoint {
            at_ms: at_s * 1000,
            p: Point::new(lat, lon),
        }
    }

    #[test]
    fn distance_and_stops() {
        // 0.001° of latitude is 111.2 m.
        let mut t = Track::new(50.0, 60_000);
        for s in 0..=120 {
            // Two minutes in place, jittering by 10 m.
            assert!(t.push(tp(s, 31.0 + if s % 2 == 0 { 0.0 } else { 0.00009 }, 121.0)));
        }
        for k in 1..=5 {
            // Then north 111 m a step, once a second.
            assert!(t.push(tp(120 + k, 31.0 + 0.001 * k as f64, 121.0)));
        }
        let stops = t.stops();
        assert_eq!(stops.len(), 1, "{stops:?}");
        assert_eq!((stops[0].from_ms, stops[0].to_ms), (0, 120_000));
        // 120 jitters of 10 m and about 5 × 111 m north.
        let d = t.distance_m();
        assert!((d - (120.0 * 10.007 + 556.0)).abs() < 15.0, "{d}");
        assert!(!t.push(tp(0, 31.0, 121.0)), "an earlier point is refused");
        // A short pause is no stop.
        let mut t = Track::new(50.0, 60_000);
        for s in 0..30 {
            t.push(tp(s, 31.0, 121.0));
        }
        assert!(t.stops().is_empty());
    }

    #[test]
    fn a_summary_fed_in_pieces_is_the_summary_fed_at_once() {
        let points: Vec<TrackPoint> = (0..600)
            .map(|s| {
                // Moving, a stay of 200 s, moving again: in 0.0004° steps (44 m).
                let step = if (200..400).contains(&s) {
                    200
                } else {
                    s.min(400) - if s >= 400 { 200 } else { 0 }
                };
                tp(
                    s,
                    31.0 + 0.0004 * step as f64,
                    121.0 + if s % 3 == 0 { 0.00001 } else { 0.0 },
                )
            })
            .collect();
        let mut whole = TrackSummary::new(30.0, 60_000);
        for p in &points {
            assert!(whole.push(*p));
        }
        for cut in [1, 7, 199, 200, 201, 399, 599] {
            let mut a = TrackSummary::new(30.0, 60_000);
            for p in &points[..cut] {
                a.push(*p);
            }
            let mut resumed = a.clone();
            for p in &points[cut..] {
                resumed.push(*p);
            }
            assert_eq!(resumed, whole, "cut at {cut}");
        }
        assert_eq!(whole.points, 600);
        assert_eq!(whole.stops().len(), 1, "{:?}", whole.stops());
    }
}
