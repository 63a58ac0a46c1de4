//! Alarm rules: what a device must do, for how long, to be in alarm, and when it clears.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Sample;

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
        }
    }
}
