//! The geometry behind trajectories, heat maps and geofences (issue 13), as plain functions
//! without I/O: great-circle distance ([`distance_m`]), geohash tiles ([`geohash`]), polygons
//! with holes that may cross the antimeridian or enclose a pole ([`Polygon`]), and a device's
//! track with its stops ([`Track`]).
//!
//! Coordinates are `f64` degrees (WGS 84 latitude and longitude, as the readings carry them;
//! the readings' exact decimals are converted once here): distances and containment are
//! geometry, not money, and a metre is far above `f64`'s resolution at these magnitudes.

#![deny(missing_docs)]

pub mod geohash;
mod polygon;
mod track;

pub use polygon::{Containment, Polygon, PolygonError};
pub use track::{Stop, Track, TrackPoint, TrackSummary};

/// Mean Earth radius, metres (IUGG), the radius of the haversine formula.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A position: latitude and longitude in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Latitude, −90..=90.
    pub lat: f64,
    /// Longitude, −180..=180.
    pub lon: f64,
}

impl Point {
    /// A position.
    pub const fn new(lat: f64, lon: f64) -> Point {
        Point { lat, lon }
    }
}

/// Great-circle distance between `a` and `b` in metres (haversine, on a sphere of
/// [`EARTH_RADIUS_M`]; within 0.5 % of the ellipsoid everywhere).
pub fn distance_m(a: Point, b: Point) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dla = la2 - la1;
    let dlo = (b.lon - a.lon).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_known_values() {
        // One degree of latitude: 111.195 km on the mean sphere.
        let d = distance_m(Point::new(0.0, 0.0), Point::new(1.0, 0.0));
        assert!((d - 111_195.0).abs() < 1.0, "{d}");
        // Across the antimeridian: 179.5 E to 179.5 W at the equator is one degree, not 359.
        let d = distance_m(Point::new(0.0, 179.5), Point::new(0.0, -179.5));
        assert!((d - 111_195.0).abs() < 1.0, "{d}");
        // Pole to pole: half the circumference.
        let d = distance_m(Point::new(90.0, 0.0), Point::new(-90.0, 0.0));
        assert!(
            (d - std::f64::consts::PI * EARTH_RADIUS_M).abs() < 1e-6,
            "{d}"
        );
        // Any two longitudes at a pole are one point.
        assert!(distance_m(Point::new(90.0, 10.0), Point::new(90.0, -170.0)) < 1e-6);
        // Shanghai to Beijing, about 1 067 km.
        let d = distance_m(Point::new(31.2304, 121.4737), Point::new(39.9042, 116.4074));
        assert!((d - 1_067_000.0).abs() < 5_000.0, "{d}");
    }
}
