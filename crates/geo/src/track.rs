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

/// A track being built.
#[derive(Clone, Debug)]
pub struct Track {
    radius_m: f64,
    min_stop_ms: i64,
    points: Vec<TrackPoint>,
    distance_m: f64,
    stops: Vec<Stop>,
    /// The stay in progress: index of its first point.
    stay: usize,
}

impl Track {
    /// An empty track; stops are stays within `radius_m` for at least `min_stop_ms`.
    pub fn new(radius_m: f64, min_stop_ms: i64) -> Track {
        Track {
            radius_m,
            min_stop_ms,
            points: Vec::new(),
            distance_m: 0.0,
            stops: Vec::new(),
            stay: 0,
        }
    }

    /// Adds the next point (not earlier than the last one; an earlier one is refused and
    /// returns false: a caller sorts first, or holds points for its lateness bound).
    pub fn push(&mut self, point: TrackPoint) -> bool {
        if let Some(last) = self.points.last() {
            if point.at_ms < last.at_ms {
                return false;
            }
            self.distance_m += distance_m(last.p, point.p);
            let origin = self.points[self.stay].p;
            if distance_m(origin, point.p) > self.radius_m {
                self.close_stay();
                self.stay = self.points.len();
            }
        }
        self.points.push(point);
        true
    }

    fn close_stay(&mut self) {
        let (first, last) = (self.points[self.stay], self.points[self.points.len() - 1]);
        if last.at_ms - first.at_ms >= self.min_stop_ms {
            self.stops.push(Stop {
                at: first.p,
                from_ms: first.at_ms,
                to_ms: last.at_ms,
            });
        }
    }

    /// The points so far.
    pub fn points(&self) -> &[TrackPoint] {
        &self.points
    }

    /// Metres travelled so far.
    pub fn distance_m(&self) -> f64 {
        self.distance_m
    }

    /// The stops so far, the stay in progress included when it is already long enough.
    pub fn stops(&self) -> Vec<Stop> {
        let mut out = self.stops.clone();
        if let (Some(first), Some(last)) = (self.points.get(self.stay), self.points.last()) {
            if last.at_ms - first.at_ms >= self.min_stop_ms {
                out.push(Stop {
                    at: first.p,
                    from_ms: first.at_ms,
                    to_ms: last.at_ms,
                });
            }
        }
        out
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
}
