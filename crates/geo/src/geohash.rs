//! Geohash tiles: the heat map's cells. A geohash of `n` characters names a cell of the
//! latitude/longitude grid (5 bits a character, longitude first); precision 5 is about
//! 4.9 × 4.9 km at the equator, 6 about 1.2 × 0.6 km, 7 about 153 × 153 m.

use crate::Point;

const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// Most characters [`encode`] gives (60 bits).
pub const MAX_PRECISION: usize = 12;

/// The geohash of `p` with `precision` characters (1..=12; clamped). Latitudes and longitudes
/// outside their ranges are clamped to them; 180 is the same meridian as −180.
pub fn encode(p: Point, precision: usize) -> String {
    let precision = precision.clamp(1, MAX_PRECISION);
    let lat = p.lat.clamp(-90.0, 90.0);
    let mut lon = p.lon;
    if !(-180.0..180.0).contains(&lon) {
        lon = (lon + 180.0).rem_euclid(360.0) - 180.0;
    }
    let (mut lat_lo, mut lat_hi) = (-90.0f64, 90.0f64);
    let (mut lon_lo, mut lon_hi) = (-180.0f64, 180.0f64);
    let mut out = String::with_capacity(precision);
    let mut even = true;
    for _ in 0..precision {
        let mut ch = 0usize;
        for _ in 0..5 {
            ch <<= 1;
            if even {
                let mid = (lon_lo + lon_hi) / 2.0;
                if lon >= mid {
                    ch |= 1;
                    lon_lo = mid;
                } else {
                    lon_hi = mid;
                }
            } else {
                let mid = (lat_lo + lat_hi) / 2.0;
                if lat >= mid {
                    ch |= 1;
                    lat_lo = mid;
                } else {
                    lat_hi = mid;
                }
            }
            even = !even;
        }
        out.push(BASE32[ch] as char);
    }
    out
}

/// The cell a geohash names: `(south-west, north-east)` corners; `None` for a character
/// outside the geohash alphabet or an empty hash.
pub fn bounds(hash: &str) -> Option<(Point, Point)> {
    if hash.is_empty() {
        return None;
    }
    let (mut lat_lo, mut lat_hi) = (-90.0f64, 90.0f64);
    let (mut lon_lo, mut lon_hi) = (-180.0f64, 180.0f64);
    let mut even = true;
    for c in hash.bytes() {
        let v = BASE32.iter().position(|b| *b == c.to_ascii_lowercase())?;
        for bit in (0..5).rev() {
            let on = (v >> bit) & 1 == 1;
            if even {
                let mid = (lon_lo + lon_hi) / 2.0;
                if on {
                    lon_lo = mid;
                } else {
                    lon_hi = mid;
                }
            } else {
                let mid = (lat_lo + lat_hi) / 2.0;
                if on {
                    lat_lo = mid;
                } else {
                    lat_hi = mid;
                }
            }
            even = !even;
        }
    }
    Some((Point::new(lat_lo, lon_lo), Point::new(lat_hi, lon_hi)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn known_hashes() {
        // The classic examples of the geohash literature.
        assert_eq!(encode(Point::new(57.64911, 10.40744), 11), "u4pruydqqvj");
        assert_eq!(encode(Point::new(42.6, -5.6), 5), "ezs42");
        assert_eq!(encode(Point::new(-90.0, -180.0), 4), "0000");
        assert_eq!(
            encode(Point::new(90.0, 180.0), 1),
            encode(Point::new(90.0, -180.0), 1)
        );
    }

    #[test]
    fn a_point_lies_in_the_cell_of_its_hash() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        for _ in 0..10_000 {
            let p = Point::new(
                rng.random_range(-90.0..90.0),
                rng.random_range(-180.0..180.0),
            );
            let n = rng.random_range(1..=MAX_PRECISION);
            let h = encode(p, n);
            assert_eq!(h.len(), n);
            let (sw, ne) = bounds(&h).unwrap();
            assert!(
                sw.lat <= p.lat && p.lat <= ne.lat,
                "{p:?} {h} {sw:?} {ne:?}"
            );
            assert!(
                sw.lon <= p.lon && p.lon <= ne.lon,
                "{p:?} {h} {sw:?} {ne:?}"
            );
            // A longer hash is a sub-cell of a shorter one.
            assert!(encode(p, MAX_PRECISION).starts_with(&h));
        }
        assert_eq!(bounds("a"), None, "`a` is not in the alphabet");
        assert_eq!(bounds(""), None);
    }
}
