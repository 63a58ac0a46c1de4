//! The stored form of engine state: what a checkpoint writes per device and per worker, as
//! JSON with every decimal as its exact text (never a float).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{DeviceSnapshot, Sample, State};

/// One device's stored state: its latest reading applied, its states that are not plain
/// normal (a missing rule is normal with no breaching run), and per source partition the
/// newest offset of it the engine has seen (the floor below which a replayed reading of it
/// is known, not late).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDevice {
    /// Event time of the latest reading applied, ms.
    pub at_ms: i64,
    /// Its metric, exact text.
    pub metric: String,
    /// The device's model as of that reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The device's site as of that reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The device's `work_threshold` as of that reading, exact text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    /// Rules under which the device is not plainly normal.
    #[serde(default)]
    pub states: Vec<StoredState>,
    /// (partition, newest offset seen) per source partition.
    #[serde(default)]
    pub floors: Vec<(i32, i64)>,
}

/// A (rule, device) state that is not plain normal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "lowercase")]
pub enum StoredState {
    /// Normal, with a breaching run open since `since`.
    Run {
        /// The rule's id.
        rule: String,
        /// Event time of the run's first reading.
        since: i64,
    },
    /// In alarm (for an offline rule: offline).
    Active {
        /// The rule's id.
        rule: String,
        /// Event time of the episode's first reading.
        first: i64,
        /// Event time of its latest reading.
        last: i64,
    },
}

/// A worker's event-time clock: the watermark released through, the newest event time per
/// source partition, and the readings it held that no replay will bring again (those of a
/// stop that committed past them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClock {
    /// The watermark the lateness buffer has released through.
    pub released: Option<i64>,
    /// (partition, newest event time seen) per source partition. Stored for inspection only,
    /// never restored: a restart reads each partition again from its committed offset, behind
    /// this point, and a watermark built from it would pass readings the replay has yet to
    /// bring (they would be taken as already applied, and lost).
    pub newest: Vec<(i32, i64)>,
    /// Readings held in the lateness buffer that must be kept with the state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<StoredSample>,
    /// The table's rule set in effect (`alarms.rules_topic`), as its caller encodes it; none
    /// while only the configured rules are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
}

/// A reading held in the lateness buffer, stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSample {
    /// Device id.
    pub pboxid: String,
    /// Event time, ms.
    pub at_ms: i64,
    /// Metric, exact text.
    pub metric: String,
    /// Model as of the reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Site as of the reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// `work_threshold` as of the reading, exact text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    /// Latitude, exact text (absent in state stored before area rules: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<String>,
    /// Longitude, exact text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<String>,
}

impl StoredSample {
    /// The stored form of `s`.
    pub fn from_sample(s: &Sample) -> StoredSample {
        StoredSample {
            pboxid: s.pboxid.clone(),
            at_ms: s.at_ms,
            metric: s.metric.to_string(),
            model: s.model.clone(),
            site: s.site.clone(),
            threshold: s.threshold.map(|t| t.to_string()),
            lat: Some(s.lat.to_string()),
            lon: Some(s.lon.to_string()),
        }
    }

    /// The reading this stores.
    pub fn into_sample(self) -> Result<Sample, StoredError> {
        let decimal = |text: &str, what: &str| {
            Decimal::from_str(text).map_err(|e| StoredError {
                device: self.pboxid.clone(),
                reason: format!("held reading's {what} `{text}` is not a decimal: {e}"),
            })
        };
        let metric = decimal(&self.metric, "metric")?;
        let threshold = match &self.threshold {
            Some(t) => Some(decimal(t, "threshold")?),
            None => None,
        };
        let lat = match &self.lat {
            Some(t) => decimal(t, "latitude")?,
            None => Decimal::ZERO,
        };
        let lon = match &self.lon {
            Some(t) => decimal(t, "longitude")?,
            None => Decimal::ZERO,
        };
        Ok(Sample {
            pboxid: self.pboxid,
            at_ms: self.at_ms,
            metric,
            model: self.model,
            site: self.site,
            threshold,
            lat,
            lon,
        })
    }
}

/// A stored device that cannot be read back, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored alarm state of device `{device}`: {reason}")]
pub struct StoredError {
    /// The device.
    pub device: String,
    /// What is wrong.
    pub reason: String,
}

impl StoredDevice {
    /// The stored form of `snapshot`, with the device's partition floors.
    pub fn from_snapshot(snapshot: &DeviceSnapshot, floors: Vec<(i32, i64)>) -> StoredDevice {
        let last = &snapshot.last;
        StoredDevice {
            at_ms: last.at_ms,
            metric: last.metric.to_string(),
            model: last.model.clone(),
            site: last.site.clone(),
            threshold: last.threshold.map(|t| t.to_string()),
            states: snapshot
                .states
                .iter()
                .filter_map(|(rule, state)| match *state {
                    State::Normal { run: None } => None,
                    State::Normal { run: Some(since) } => Some(StoredState::Run {
                        rule: rule.clone(),
                        since,
                    }),
                    State::Active { first, last } => Some(StoredState::Active {
                        rule: rule.clone(),
                        first,
                        last,
                    }),
                })
                .collect(),
            floors,
        }
    }

    /// The snapshot of device `pboxid` this stores, and its partition floors.
    pub fn into_snapshot(
        self,
        pboxid: &str,
    ) -> Result<(DeviceSnapshot, Vec<(i32, i64)>), StoredError> {
        let decimal = |text: &str, what: &str| {
            Decimal::from_str(text).map_err(|e| StoredError {
                device: pboxid.to_string(),
                reason: format!("{what} `{text}` is not a decimal: {e}"),
            })
        };
        let metric = decimal(&self.metric, "metric")?;
        let threshold = match &self.threshold {
            Some(t) => Some(decimal(t, "threshold")?),
            None => None,
        };
        let states = self
            .states
            .into_iter()
            .map(|s| match s {
                StoredState::Run { rule, since } => (rule, State::Normal { run: Some(since) }),
                StoredState::Active { rule, first, last } => (rule, State::Active { first, last }),
            })
            .collect();
        Ok((
            DeviceSnapshot {
                last: Sample {
                    pboxid: pboxid.to_string(),
                    at_ms: self.at_ms,
                    metric,
                    model: self.model,
                    site: self.site,
                    threshold,
                    // The position of the last reading is not stored: no rule looks back at
                    // it (area rules decide on each reading's own position).
                    lat: Decimal::ZERO,
                    lon: Decimal::ZERO,
                },
                states,
            },
            self.floors,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_round_trips_exactly_and_plain_normal_is_left_out() {
        let snapshot = DeviceSnapshot {
            last: Sample {
                pboxid: "p-1".into(),
                at_ms: 1_700_000_000_123,
                metric: Decimal::from_str("12345678901234.12345678").unwrap(),
                model: Some("m".into()),
                site: None,
                threshold: Some(Decimal::from_str("0.00000001").unwrap()),
                lat: Decimal::ZERO,
                lon: Decimal::ZERO,
            },
            states: vec![
                ("a".into(), State::Normal { run: None }),
                ("b".into(), State::Normal { run: Some(5) }),
                ("c".into(), State::Active { first: 1, last: 9 }),
            ],
        };
        let stored = StoredDevice::from_snapshot(&snapshot, vec![(3, 77)]);
        assert_eq!(stored.states.len(), 2);
        let json = serde_json::to_string(&stored).unwrap();
        assert!(json.contains("\"12345678901234.12345678\""), "{json}");
        let back: StoredDevice = serde_json::from_str(&json).unwrap();
        let (restored, floors) = back.into_snapshot("p-1").unwrap();
        assert_eq!(floors, vec![(3, 77)]);
        assert_eq!(restored.last, snapshot.last);
        assert_eq!(restored.states, snapshot.states[1..].to_vec());
    }

    #[test]
    fn a_bad_decimal_names_the_device() {
        let stored = StoredDevice {
            at_ms: 0,
            metric: "x".into(),
            model: None,
            site: None,
            threshold: None,
            states: vec![],
            floors: vec![],
        };
        let e = stored.into_snapshot("dev-9").unwrap_err();
        assert!(e.to_string().contains("dev-9") && e.to_string().contains("`x`"));
    }
}
