//! `[rollups]`: per-device rollups, heat-map tiles and day tracks (docs/rollups.md,
//! docs/geo.md), kept by the MySQL sink.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// What the MySQL sink derives from every batch it stores: per device the minute, hour and day
/// rollups of the metric (count, min, max, sum, avg, last), the readings per geohash tile and
/// hour (the heat map) and the day's track (distance, stops). Kept exact in MySQL, in the
/// transaction that follows the batch's rows; the rollups are copied to ClickHouse too when
/// its sink is on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupsConfig {
    /// Keep the rollups. Needs `mysql.enabled` (their state lives next to `iot_data`).
    /// Default false.
    pub enabled: bool,
    /// Geohash length of a heat-map tile, 1..=12 (5: about 4.9 × 4.9 km, 6: 1.2 × 0.6 km,
    /// 7: 153 × 153 m). Default 6.
    pub geohash_precision: u8,
    /// A stop is a stay within this many metres of where it began. Default 50.
    pub stop_radius_m: f64,
    /// ... lasting at least this many seconds. Default 300.
    pub stop_min_secs: u64,
    /// Copy the minute, hour and day rollups into ClickHouse when the ClickHouse sink is on.
    /// Default true.
    pub clickhouse: bool,
}

impl Default for RollupsConfig {
    fn default() -> Self {
        RollupsConfig {
            enabled: false,
            geohash_precision: 6,
            stop_radius_m: 50.0,
            stop_min_secs: 300,
            clickhouse: true,
        }
    }
}

impl RollupsConfig {
    /// Checks the values (called by [`crate::Config::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=12).contains(&self.geohash_precision) {
            return Err(ConfigError::Value(format!(
                "rollups.geohash_precision = {} must be between 1 and 12",
                self.geohash_precision
            )));
        }
        if !(self.stop_radius_m.is_finite() && self.stop_radius_m > 0.0) {
            return Err(ConfigError::Value(format!(
                "rollups.stop_radius_m = {} must be a positive number of metres",
                self.stop_radius_m
            )));
        }
        Ok(())
    }
}
