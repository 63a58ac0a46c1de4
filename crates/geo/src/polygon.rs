//! Geofence polygons: an outer ring and holes, edges straight in latitude/longitude (as GeoJSON,
//! RFC 7946, draws them), allowed to cross the antimeridian or to go around a pole.
//!
//! - Each ring's longitudes are unwrapped: every edge takes the short way round (an edge of
//!   exactly 180° of longitude is ambiguous and refused), so a ring from 170° E to 170° W
//!   crosses the antimeridian instead of spanning the globe.
//! - A ring whose unwrapped longitudes end 360° from where they began goes once around a pole.
//!   It encloses the pole on its left, as RFC 7946's counter-clockwise outer rings do: going
//!   east, the north pole; going west, the south pole.
//! - A point on an edge or a vertex is [`Containment::Boundary`] (within 1e-9° of it, about
//!   0.1 mm); of a hole's boundary too. A point in a hole is outside.

use crate::Point;

/// Closer than this (degrees) to an edge is on it.
const EPS: f64 = 1e-9;

/// Where a point is with respect to a polygon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Containment {
    /// Inside, not on the boundary.
    Inside,
    /// On an edge or a vertex of the outer ring or of a hole.
    Boundary,
    /// Outside, or inside a hole.
    Outside,
}

/// A polygon that cannot be used, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolygonError(pub String);

impl std::fmt::Display for PolygonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolygonError {}

/// One ring, unwrapped.
#[derive(Clone, Debug)]
struct Ring {
    /// `(unwrapped longitude, latitude)`, closed (the last equals the first, or, around a
    /// pole, is it moved by 360° and followed by the pole's corners).
    points: Vec<(f64, f64)>,
    /// The longitude range the unwrapped ring covers.
    min_u: f64,
    max_u: f64,
    /// `Some(±90.0)` for a ring around that pole.
    pole: Option<f64>,
}

/// A polygon: an outer ring and holes.
#[derive(Clone, Debug)]
pub struct Polygon {
    outer: Ring,
    holes: Vec<Ring>,
}

impl Polygon {
    /// A polygon from its outer ring and holes, each a list of vertices (closing the ring is
    /// optional: a last vertex equal to the first is dropped).
    pub fn new(outer: &[Point], holes: &[Vec<Point>]) -> Result<Polygon, PolygonError> {
        Ok(Polygon {
            outer: ring(outer).map_err(|e| PolygonError(format!("outer ring: {e}")))?,
            holes: holes
                .iter()
                .enumerate()
                .map(|(i, h)| ring(h).map_err(|e| PolygonError(format!("hole {}: {e}", i + 1))))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Where `p` is.
    pub fn contains(&self, p: Point) -> Containment {
        match self.outer.locate(p) {
            Containment::Outside => Containment::Outside,
            Containment::Boundary => Containment::Boundary,
            Containment::Inside => {
                for h in &self.holes {
                    match h.locate(p) {
                        Containment::Inside => return Containment::Outside,
                        Containment::Boundary => return Containment::Boundary,
                        Containment::Outside => {}
                    }
                }
                Containment::Inside
            }
        }
    }
}

/// The short way from longitude `a` to `b`, in (−180, 180]; `None` for exactly 180 (either
/// way round).
fn delta(a: f64, b: f64) -> Option<f64> {
    let d = (b - a).rem_euclid(360.0);
    if (d - 180.0).abs() < EPS {
        None
    } else if d > 180.0 {
        Some(d - 360.0)
    } else {
        Some(d)
    }
}

fn ring(vertices: &[Point]) -> Result<Ring, String> {
    let mut v: Vec<Point> = vertices.to_vec();
    if v.len() > 1 && v.first() == v.last() {
        v.pop();
    }
    if v.len() < 3 {
        return Err(format!("{} vertices, at least 3 needed", v.len()));
    }
    for (i, p) in v.iter().enumerate() {
        if !(-90.0..=90.0).contains(&p.lat) || !p.lat.is_finite() {
            return Err(format!(
                "vertex {}: latitude {} outside −90..90",
                i + 1,
                p.lat
            ));
        }
        if !(-180.0..=180.0).contains(&p.lon) || !p.lon.is_finite() {
            return Err(format!(
                "vertex {}: longitude {} outside −180..180",
                i + 1,
                p.lon
            ));
        }
    }
    let mut points = Vec::with_capacity(v.len() + 3);
    let mut u = v[0].lon;
    points.push((u, v[0].lat));
    for i in 1..=v.len() {
        let (a, b) = (v[i - 1], v[i % v.len()]);
        let d = delta(a.lon, b.lon).ok_or_else(|| {
            format!(
                "the edge from vertex {} to vertex {} spans 180° of longitude, which way round is ambiguous: add a vertex between them",
                i,
                i % v.len() + 1
            )
        })?;
        u += d;
        points.push((u, b.lat));
    }
    let turn = u - v[0].lon;
    let pole = if turn.abs() < EPS {
        None
    } else if (turn - 360.0).abs() < 1e-6 {
        Some(90.0)
    } else if (turn + 360.0).abs() < 1e-6 {
        Some(-90.0)
    } else {
        return Err(format!(
            "the ring winds {:.0}° of longitude around the globe; a ring goes round a pole once at most",
            turn
        ));
    };
    if let Some(pole) = pole {
        // Closed over the pole: along the pole's latitude back to where the ring began.
        points.push((u, pole));
        points.push((v[0].lon, pole));
        points.push((v[0].lon, v[0].lat));
    }
    let min_u = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let max_u = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    Ok(Ring {
        points,
        min_u,
        max_u,
        pole,
    })
}

impl Ring {
    fn locate(&self, p: Point) -> Containment {
        if let Some(pole) = self.pole {
            if (p.lat - pole).abs() < EPS {
                // The pole itself: every longitude is the same point, inside the ring.
                return Containment::Inside;
            }
        }
        // The point's longitude moved by whole turns into the ring's unwrapped range (a
        // ring around a pole covers 360°: its start meridian twice, one of them is enough).
        let mut best = Containment::Outside;
        for k in [-1.0, 0.0, 1.0] {
            let u = p.lon + 360.0 * k;
            if u < self.min_u - EPS || u > self.max_u + EPS {
                continue;
            }
            match locate_planar(&self.points, u, p.lat, self.pole) {
                Containment::Boundary => return Containment::Boundary,
                Containment::Inside => best = Containment::Inside,
                Containment::Outside => {}
            }
        }
        best
    }
}

/// Crossing-number test in the plane of (unwrapped longitude, latitude); edges along a
/// pole's latitude (added to close a polar ring) are not boundary.
fn locate_planar(points: &[(f64, f64)], x: f64, y: f64, pole: Option<f64>) -> Containment {
    let mut inside = false;
    for w in points.windows(2) {
        let ((x1, y1), (x2, y2)) = (w[0], w[1]);
        let on_pole_edge = pole.is_some_and(|p| (y1 - p).abs() < EPS && (y2 - p).abs() < EPS);
        if !on_pole_edge && on_segment(x, y, x1, y1, x2, y2) {
            return Containment::Boundary;
        }
        if (y1 > y) != (y2 > y) {
            let xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1);
            if x < xc {
                inside = !inside;
            }
        }
    }
    if inside {
        Containment::Inside
    } else {
        Containment::Outside
    }
}

fn on_segment(x: f64, y: f64, x1: f64, y1: f64, x2: f64, y2: f64) -> bool {
    let (dx, dy) = (x2 - x1, y2 - y1);
    let len2 = dx * dx + dy * dy;
    if len2 == 0.0 {
        return (x - x1).abs() < EPS && (y - y1).abs() < EPS;
    }
    let t = (((x - x1) * dx + (y - y1) * dy) / len2).clamp(0.0, 1.0);
    let (px, py) = (x1 + t * dx, y1 + t * dy);
    (x - px).hypot(y - py) < EPS
}

#[cfg(test)]
mod tests {
    use super::*;
    use Containment::*;

    fn pts(v: &[(f64, f64)]) -> Vec<Point> {
        v.iter().map(|&(lat, lon)| Point::new(lat, lon)).collect()
    }

    #[test]
    fn a_square_has_an_inside_an_outside_and_a_boundary() {
        let sq = Polygon::new(
            &pts(&[(0.0, 0.0), (0.0, 10.0), (10.0, 10.0), (10.0, 0.0)]),
            &[],
        )
        .unwrap();
        assert_eq!(sq.contains(Point::new(5.0, 5.0)), Inside);
        assert_eq!(sq.contains(Point::new(11.0, 5.0)), Outside);
        assert_eq!(sq.contains(Point::new(5.0, -0.1)), Outside);
        assert_eq!(sq.contains(Point::new(0.0, 5.0)), Boundary, "on an edge");
        assert_eq!(sq.contains(Point::new(10.0, 10.0)), Boundary, "on a vertex");
        assert_eq!(sq.contains(Point::new(5.0, 10.0)), Boundary);
        // A longitude a whole turn away is the same meridian.
        assert_eq!(sq.contains(Point::new(5.0, 5.0 - 360.0)), Inside);
        assert_eq!(sq.contains(Point::new(5.0, 185.0)), Outside, "= 175° W");
    }

    #[test]
    fn a_polygon_across_the_antimeridian() {
        let p = Polygon::new(
            &pts(&[
                (-10.0, 170.0),
                (-10.0, -170.0),
                (10.0, -170.0),
                (10.0, 170.0),
            ]),
            &[],
        )
        .unwrap();
        for lon in [179.9, -179.9, 180.0, -180.0, 170.5, -170.5] {
            assert_eq!(p.contains(Point::new(0.0, lon)), Inside, "{lon}");
        }
        for lon in [0.0, 169.0, -169.0, 90.0] {
            assert_eq!(p.contains(Point::new(0.0, lon)), Outside, "{lon}");
        }
        assert_eq!(
            p.contains(Point::new(10.0, 180.0)),
            Boundary,
            "the edge across 180°"
        );
        assert_eq!(p.contains(Point::new(0.0, -170.0)), Boundary);
    }

    #[test]
    fn turning_the_globe_changes_nothing() {
        // A random polygon and points, and the same turned by `shift` degrees of longitude:
        // whether it crosses the antimeridian then or not, every point is where it was.
        use rand::{Rng, SeedableRng};
        let turn = |lon: f64, shift: f64| (lon + shift + 180.0).rem_euclid(360.0) - 180.0;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for _ in 0..300 {
            let (clat, clon) = (
                rng.random_range(-60.0..60.0),
                rng.random_range(-180.0..180.0),
            );
            let n = rng.random_range(3..9);
            // A star-shaped ring around the centre, at most 20° across.
            let ring: Vec<Point> = (0..n)
                .map(|i| {
                    let a = i as f64 / n as f64 * std::f64::consts::TAU;
                    let r = rng.random_range(2.0..10.0);
                    Point::new(clat + r * a.sin(), turn(clon + r * a.cos(), 0.0))
                })
                .collect();
            let shift = rng.random_range(-180.0..180.0);
            let turned: Vec<Point> = ring
                .iter()
                .map(|p| Point::new(p.lat, turn(p.lon, shift)))
                .collect();
            let (a, b) = (
                Polygon::new(&ring, &[]).unwrap(),
                Polygon::new(&turned, &[]).unwrap(),
            );
            for _ in 0..50 {
                let p = Point::new(
                    clat + rng.random_range(-12.0..12.0),
                    turn(clon + rng.random_range(-12.0..12.0), 0.0),
                );
                let q = Point::new(p.lat, turn(p.lon, shift));
                let (x, y) = (a.contains(p), b.contains(q));
                // A point within rounding of an edge may be Boundary on one side only.
                if x != Boundary && y != Boundary {
                    assert_eq!(x, y, "{p:?} in {ring:?}, turned by {shift}");
                }
            }
        }
    }

    #[test]
    fn rings_around_the_poles() {
        // Eastward at 80° N: the north polar cap.
        let north = Polygon::new(
            &pts(&[
                (80.0, 0.0),
                (80.0, 90.0),
                (80.0, 180.0 - 1.0),
                (80.0, -90.0),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(north.contains(Point::new(85.0, 45.0)), Inside);
        assert_eq!(north.contains(Point::new(85.0, -135.0)), Inside);
        assert_eq!(north.contains(Point::new(85.0, 179.5)), Inside);
        assert_eq!(north.contains(Point::new(90.0, 0.0)), Inside, "the pole");
        assert_eq!(
            north.contains(Point::new(90.0, -77.0)),
            Inside,
            "the pole at any longitude"
        );
        assert_eq!(north.contains(Point::new(75.0, 45.0)), Outside);
        assert_eq!(north.contains(Point::new(-85.0, 45.0)), Outside);
        assert_eq!(north.contains(Point::new(80.0, 90.0)), Boundary);
        // Westward at 70° S: the south polar cap.
        let south = Polygon::new(
            &pts(&[(-70.0, 0.0), (-70.0, -90.0), (-70.0, -179.0), (-70.0, 90.0)]),
            &[],
        )
        .unwrap();
        assert_eq!(south.contains(Point::new(-80.0, 10.0)), Inside);
        assert_eq!(south.contains(Point::new(-90.0, 10.0)), Inside);
        assert_eq!(south.contains(Point::new(-60.0, 10.0)), Outside);
        assert_eq!(south.contains(Point::new(60.0, 10.0)), Outside);
    }

    #[test]
    fn a_hole_is_outside_and_its_edge_is_boundary() {
        let p = Polygon::new(
            &pts(&[
                (0.0, 0.0),
                (0.0, 10.0),
                (10.0, 10.0),
                (10.0, 0.0),
                (0.0, 0.0),
            ]),
            &[pts(&[(4.0, 4.0), (4.0, 6.0), (6.0, 6.0), (6.0, 4.0)])],
        )
        .unwrap();
        assert_eq!(p.contains(Point::new(5.0, 5.0)), Outside, "in the hole");
        assert_eq!(
            p.contains(Point::new(4.0, 5.0)),
            Boundary,
            "on the hole's edge"
        );
        assert_eq!(p.contains(Point::new(2.0, 2.0)), Inside);
        assert_eq!(p.contains(Point::new(7.0, 5.0)), Inside);
    }

    #[test]
    fn unusable_rings_are_refused_with_the_reason() {
        let err = |v: &[(f64, f64)]| Polygon::new(&pts(v), &[]).unwrap_err().0;
        assert!(err(&[(0.0, 0.0), (1.0, 1.0)]).contains("at least 3"));
        assert!(err(&[(0.0, 0.0), (91.0, 1.0), (0.0, 2.0)]).contains("latitude 91"));
        assert!(err(&[(0.0, 0.0), (0.0, 180.0), (1.0, 1.0)]).contains("spans 180°"));
        let hole = Polygon::new(
            &pts(&[(0.0, 0.0), (0.0, 10.0), (10.0, 10.0)]),
            &[pts(&[(1.0, 1.0)])],
        )
        .unwrap_err();
        assert!(hole.0.starts_with("hole 1:"), "{hole}");
    }
}
