//! Alarm rules: what a device must do, for how long, to be in alarm, and when it clears.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Sample;

/// A geofence: a polygon whose rings are lists of `[longitude, latitude]` vertices (GeoJSON
/// order, RFC 7946), the first ring the outer boundary, the others holes. Edges are straight in
/// latitude/longitude and take the short way round, so a fence may cross the antimeridian; a
/// ring that goes once around the globe encloses the pole on its left (see
/// [`iotflow_geo::Polygon`]). A point on the boundary (within about 0.1 mm) counts as inside.
#[derive(Clone, Debug)]
pub struct Area {
    rings: Vec<Vec<[f64; 2]>>,
    polygon: std::sync::Arc<iotflow_geo::Polygon>,
}

impl Area {
    /// The area of `rings` (`[[lon, lat], ...]` each), or why it cannot be one.
    pub fn new(rings: Vec<Vec<[f64; 2]>>) -> Result<Area, String> {
        if rings.is_empty() {
            return Err("the area has no ring".into());
        }
        for (i, ring) in rings.iter().enumerate() {
            for [lon, lat] in ring {
                if !(lat.is_finite() && (-90.0..=90.0).contains(lat)) {
                    return Err(format!("ring {i}: latitude {lat} is outside [-90, 90]"));
                }
                if !(lon.is_finite() && (-180.0..=180.0).contains(lon)) {
                    return Err(format!("ring {i}: longitude {lon} is outside [-180, 180]"));
                }
            }
        }
        let points = |r: &Vec<[f64; 2]>| -> Vec<iotflow_geo::Point> {
            r.iter()
                .map(|[lon, lat]| iotflow_geo::Point::new(*lat, *lon))
                .collect()
        };
        let holes: Vec<Vec<iotflow_geo::Point>> = rings[1..].iter().map(points).collect();
        let polygon =
            iotflow_geo::Polygon::new(&points(&rings[0]), &holes).map_err(|e| e.to_string())?;
        Ok(Area {
            rings,
            polygon: std::sync::Arc::new(polygon),
        })
    }

    /// The rings, as given.
    pub fn rings(&self) -> &[Vec<[f64; 2]>] {
        &self.rings
    }

    /// Whether the position is inside (or on the boundary).
    pub fn contains(&self, lat: Decimal, lon: Decimal) -> bool {
        use rust_decimal::prelude::ToPrimitive;
        let p = iotflow_geo::Point::new(lat.to_f64().unwrap_or(0.0), lon.to_f64().unwrap_or(0.0));
        self.polygon.contains(p) != iotflow_geo::Containment::Outside
    }

    fn bits(&self) -> Vec<Vec<[u64; 2]>> {
        self.rings
            .iter()
            .map(|r| r.iter().map(|[a, b]| [a.to_bits(), b.to_bits()]).collect())
            .collect()
    }
}

impl PartialEq for Area {
    fn eq(&self, other: &Area) -> bool {
        self.bits() == other.bits()
    }
}

impl Eq for Area {}

impl std::hash::Hash for Area {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.bits().hash(h)
    }
}

/// How bad an alarm is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// The lowercase name (the metric label and the table's value).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which devices a rule watches, by the device's business record as of each reading.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Scope {
    /// Every device.
    All,
    /// One device, by id.
    Device(String),
    /// Devices of this model.
    Model(String),
    /// Devices at this site.
    Site(String),
}

/// When a reading breaches a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// `metric > value`; clears at `metric <= value - hysteresis`.
    Above {
        /// The bound (or the device's `work_threshold`, see [`Rule::device_threshold`]).
        value: Decimal,
    },
    /// `metric < value`; clears at `metric >= value + hysteresis`.
    Below {
        /// The bound (or the device's `work_threshold`, see [`Rule::device_threshold`]).
        value: Decimal,
    },
    /// `metric < low` or `metric > high`; clears inside
    /// `[low + hysteresis, high - hysteresis]`.
    Outside {
        /// Lower edge of the normal band.
        low: Decimal,
        /// Upper edge of the normal band.
        high: Decimal,
    },
    /// No reading for `after_ms` of event time: raised at the last reading's time plus
    /// `after_ms` once the watermark passes it, cleared by the device's next reading. A device
    /// that never reported is not offline.
    Offline {
        /// Silence, in milliseconds of event time, that makes a device offline.
        after_ms: i64,
    },
    /// The reading's position is inside the area (boundary included): an alarm while the
    /// device is in the geofence, raised when it enters, cleared when it leaves.
    InArea {
        /// The geofence.
        area: Area,
    },
    /// The reading's position is outside the area: an alarm while the device is away from
    /// where it belongs, raised when it leaves, cleared when it is back.
    OutOfArea {
        /// The geofence.
        area: Area,
    },
}

/// One alarm rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Unique id: the `rule` of every event and table row.
    pub id: String,
    /// Devices watched.
    pub scope: Scope,
    /// When a reading breaches.
    pub condition: Condition,
    /// The breach must hold, reading after reading, for at least this long in event time
    /// (from the first breaching reading to the one that raises); 0 raises on the first.
    /// Not used by [`Condition::Offline`].
    pub duration_ms: i64,
    /// How far back past the bound a reading must be to clear (≥ 0); readings in between keep
    /// the alarm as it is.
    pub hysteresis: Decimal,
    /// Severity of the alarms it raises.
    pub severity: Severity,
    /// For [`Condition::Above`] and [`Condition::Below`]: use the device's `work_threshold`,
    /// when its record has one, instead of `value`.
    pub device_threshold: bool,
}

/// A rule that cannot work, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("alarm rule `{rule}`: {reason}")]
pub struct RuleError {
    /// The rule's id (may be empty: that is one of the errors).
    pub rule: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl Rule {
    /// Checks that the rule can raise and clear: a non-empty id, no negative duration or
    /// hysteresis, a band whose clearing range is not empty, a positive offline time.
    pub fn check(&self) -> Result<(), RuleError> {
        let fail = |reason: String| {
            Err(RuleError {
                rule: self.id.clone(),
                reason,
            })
        };
        if self.id.trim().is_empty() {
            return fail("the id is empty".into());
        }
        if self.duration_ms < 0 {
            return fail(format!("duration_ms is negative ({})", self.duration_ms));
        }
        if self.hysteresis.is_sign_negative() && !self.hysteresis.is_zero() {
            return fail(format!("hysteresis is negative ({})", self.hysteresis));
        }
        match &self.condition {
            Condition::Outside { low, high } => {
                if low >= high {
                    return fail(format!(
                        "the band is empty: low {low} is not below high {high}"
                    ));
                }
                if *low + self.hysteresis > *high - self.hysteresis {
                    return fail(format!(
                        "hysteresis {} leaves no value that clears inside [{low}, {high}]",
                        self.hysteresis
                    ));
                }
            }
            Condition::Offline { after_ms } if *after_ms <= 0 => {
                return fail(format!("after_ms must be positive ({after_ms})"));
            }
            Condition::InArea { .. } | Condition::OutOfArea { .. }
                if !self.hysteresis.is_zero() =>
            {
                return fail(
                    "hysteresis does not apply to an area rule (it clears on the first reading across the boundary)".into(),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the rule watches the device of `s` (as its record was at that reading).
    pub fn applies(&self, s: &Sample) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Device(id) => *id == s.pboxid,
            Scope::Model(m) => s.model.as_deref() == Some(m.as_str()),
            Scope::Site(site) => s.site.as_deref() == Some(site.as_str()),
        }
    }

    /// Whether this is an offline rule, and its silence.
    pub fn offline_after(&self) -> Option<i64> {
        match self.condition {
            Condition::Offline { after_ms } => Some(after_ms),
            _ => None,
        }
    }

    /// The bound of an `Above` / `Below` rule for `s`.
    fn bound(&self, value: Decimal, s: &Sample) -> Decimal {
        match (self.device_threshold, s.threshold) {
            (true, Some(t)) => t,
            _ => value,
        }
    }

    /// Whether `s` breaches the rule (never, for an offline rule).
    pub fn breaches(&self, s: &Sample) -> bool {
        match &self.condition {
            Condition::Above { value } => s.metric > self.bound(*value, s),
            Condition::Below { value } => s.metric < self.bound(*value, s),
            Condition::Outside { low, high } => s.metric < *low || s.metric > *high,
            Condition::Offline { .. } => false,
            Condition::InArea { area } => area.contains(s.lat, s.lon),
            Condition::OutOfArea { area } => !area.contains(s.lat, s.lon),
        }
    }

    /// Whether `s` clears an active alarm of the rule: past the bound by the hysteresis.
    pub fn clears(&self, s: &Sample) -> bool {
        let h = self.hysteresis;
        match &self.condition {
            Condition::Above { value } => s.metric <= self.bound(*value, s) - h,
            Condition::Below { value } => s.metric >= self.bound(*value, s) + h,
            Condition::Outside { low, high } => s.metric >= *low + h && s.metric <= *high - h,
            Condition::Offline { .. } => true,
            Condition::InArea { area } => !area.contains(s.lat, s.lon),
            Condition::OutOfArea { area } => area.contains(s.lat, s.lon),
        }
    }
}
