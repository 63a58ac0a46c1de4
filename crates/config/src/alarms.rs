//! `[alarms]`: device alarms evaluated by the streaming job (docs/alarms.md).

use std::str::FromStr;

use iotflow_alarms::{Condition, Rule, Scope, Severity};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// Device alarms evaluated by the streaming job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmsConfig {
    /// Evaluate the rules in the streaming job. Needs the MySQL connection (`mysql.url`): the
    /// alarm state and `device_alarms` live there, even with the MySQL sink off. Default false.
    pub enabled: bool,
    /// Topic the alarm events go to (keyed by device). Default `iot-alarms`.
    pub topic: String,
    /// Table of alarm episodes, one row per (rule, device, first reading). Default
    /// `device_alarms`.
    pub table: String,
    /// Table the alarm state is checkpointed to. Default `alarm_state`.
    pub state_table: String,
    /// How far, in ms of event time, a reading may arrive behind the newest one of its source
    /// partition and still be applied in its place; later ones are counted as late and never
    /// change an alarm. Default 5000.
    pub lateness_ms: u64,
    /// A source partition that has given no reading for this long (wall time) stops holding
    /// event time back; when every partition is that quiet, everything received is released.
    /// Default 10000.
    pub idle_partition_ms: u64,
    /// Least time between two checkpoints of a worker's alarm state (ms). Offsets are committed
    /// only up to a checkpoint, so it adds to the commit lag. Default 2000.
    pub checkpoint_interval_ms: u64,
    /// The rules (`[[alarms.rules]]`). Default none.
    pub rules: Vec<AlarmRuleConfig>,
    /// Topic of the rule sets `iotflow publish-devices` publishes from the MySQL table
    /// `alarm_rules` (schemas/mysql/alarm_rules.sql); empty (the default) for rules from this
    /// file only. Both sides read it: the publisher publishes there, the job applies each set
    /// from its event time on, beside the rules of this file (a table rule with the id of a
    /// configured one replaces it).
    pub rules_topic: String,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            enabled: false,
            topic: "iot-alarms".into(),
            table: "device_alarms".into(),
            state_table: "alarm_state".into(),
            lateness_ms: 5000,
            idle_partition_ms: 10_000,
            checkpoint_interval_ms: 2000,
            rules: Vec::new(),
            rules_topic: String::new(),
        }
    }
}

/// One `[[alarms.rules]]` entry.
///
/// ```toml
/// [[alarms.rules]]
/// id = "overheat"
/// when = "above"        # above | below | outside | offline | in_area | out_of_area
/// value = "80"          # decimals as strings or integers, never floats
/// for_secs = 30         # the breach holds this long in event time (default 0)
/// hysteresis = "5"      # clears at 75 or below
/// severity = "critical" # info | warning | critical
/// model = "PX-200"      # at most one of device / model / site; none = every device
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlarmRuleConfig {
    /// Unique id.
    pub id: String,
    /// `above`, `below`, `outside` or `offline`.
    pub when: String,
    /// The bound of `above` / `below`.
    pub value: Option<Exact>,
    /// Lower edge of the normal band of `outside`.
    pub low: Option<Exact>,
    /// Upper edge of the normal band of `outside`.
    pub high: Option<Exact>,
    /// `offline`: silence in seconds of event time.
    pub after_secs: Option<u64>,
    /// Seconds of event time the breach must hold (ms precision: `for_ms`). Default 0.
    pub for_secs: Option<u64>,
    /// As `for_secs`, in milliseconds.
    pub for_ms: Option<u64>,
    /// Clearing margin (default 0).
    pub hysteresis: Option<Exact>,
    /// `info`, `warning` (default) or `critical`.
    pub severity: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only devices of this model.
    pub model: Option<String>,
    /// Only devices at this site.
    pub site: Option<String>,
    /// `above` / `below`: use the device's `work_threshold` when its record has one.
    pub device_threshold: bool,
    /// `in_area` / `out_of_area`: the geofence, as GeoJSON polygon coordinates: rings of
    /// `[longitude, latitude]` vertices, the first the outer boundary, the others holes
    /// (`area = [[[121.40, 31.20], [121.50, 31.20], [121.50, 31.30], [121.40, 31.30]]]`).
    /// Degrees as floats (geometry, not money). See docs/geo.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area: Option<Vec<Vec<[f64; 2]>>>,
}

/// An exact decimal in the configuration: a TOML string (`"80.5"`) or integer (`80`). A TOML
/// float is refused: it has already lost digits when it is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exact(pub String);

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Exact, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Exact;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a decimal as a string (\"80.5\") or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Exact, E> {
                Ok(Exact(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Exact, E> {
                Ok(Exact(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Exact, E> {
                Ok(Exact(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Exact, E> {
                Err(E::custom(format!(
                    "{v} is a TOML float, which is not exact; write it as a string: \"{v}\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl AlarmsConfig {
    /// The rules, each checked; an error names the rule and what is wrong.
    pub fn parsed_rules(&self) -> Result<Vec<Rule>, ConfigError> {
        parse_rules(&self.rules, "alarms.rules")
    }

    /// The rules in effect with the table's `set`: those of this file, then the set's (one
    /// with the id of a configured rule replaces it). An error names the rule.
    pub fn rules_with(&self, set: &RuleSet) -> Result<Vec<Rule>, ConfigError> {
        let mut all: Vec<AlarmRuleConfig> = self
            .rules
            .iter()
            .filter(|r| !set.rules.iter().any(|t| t.id == r.id))
            .cloned()
            .collect();
        all.extend(set.rules.iter().cloned());
        parse_rules(&all, "alarm_rules")
    }
}

fn parse_rules(rules: &[AlarmRuleConfig], what: &str) -> Result<Vec<Rule>, ConfigError> {
    let rules: Vec<Rule> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| r.to_rule(i))
        .collect::<Result<_, _>>()?;
    // The engine checks each rule and that ids are unique; its error names the rule.
    iotflow_alarms::Engine::new(rules.clone())
        .map_err(|e| ConfigError::Value(format!("{what}: {e}")))?;
    Ok(rules)
}

/// One record of `alarms.rules_topic`: the whole enabled rule set of the table `alarm_rules`,
/// in effect from event time `effective_ms` on (milliseconds of the naive local time read as
/// UTC, as readings' event times are).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    /// Event time the set applies from.
    pub effective_ms: i64,
    /// The highest outbox id it covers (0 for the set published at the publisher's start):
    /// for diagnostics.
    pub version: u64,
    /// The rules, as `[[alarms.rules]]` entries.
    pub rules: Vec<AlarmRuleConfig>,
}

impl AlarmRuleConfig {
    fn to_rule(&self, index: usize) -> Result<Rule, ConfigError> {
        let name = if self.id.is_empty() {
            format!("alarms.rules[{index}]")
        } else {
            format!("alarms.rules `{}`", self.id)
        };
        let err = |m: String| ConfigError::Value(format!("{name}: {m}"));
        let exact = |v: &Option<Exact>, key: &str| -> Result<Option<Decimal>, ConfigError> {
            match v {
                None => Ok(None),
                Some(Exact(text)) => Decimal::from_str(text.trim())
                    .map(Some)
                    .map_err(|e| err(format!("{key} `{text}` is not a decimal: {e}"))),
            }
        };
        let need = |v: Option<Decimal>, key: &str| {
            v.ok_or_else(|| err(format!("`when = \"{}\"` needs `{key}`", self.when)))
        };
        let value = exact(&self.value, "value")?;
        let low = exact(&self.low, "low")?;
        let high = exact(&self.high, "high")?;
        let condition = match self.when.as_str() {
            "above" => Condition::Above {
                value: need(value, "value")?,
            },
            "below" => Condition::Below {
                value: need(value, "value")?,
            },
            "outside" => Condition::Outside {
                low: need(low, "low")?,
                high: need(high, "high")?,
            },
            "offline" => Condition::Offline {
                after_ms: self
                    .after_secs
                    .ok_or_else(|| err("`when = \"offline\"` needs `after_secs`".into()))?
                    .saturating_mul(1000)
                    .min(i64::MAX as u64) as i64,
            },
            "in_area" | "out_of_area" => {
                let rings = self.area.clone().ok_or_else(|| {
                    err(format!(
                        "`when = \"{}\"` needs `area` (rings of [longitude, latitude])",
                        self.when
                    ))
                })?;
                let area = iotflow_alarms::Area::new(rings).map_err(|e| err(format!("area: {e}")))?;
                if self.when == "in_area" {
                    Condition::InArea { area }
                } else {
                    Condition::OutOfArea { area }
                }
            }
            other => {
                return Err(err(format!(
                    "when = `{other}`: must be `above`, `below`, `outside`, `offline`, `in_area` or `out_of_area`"
                )))
            }
        };
        let unused: Vec<&str> = [
            (
                "value",
                self.value.is_some() && !matches!(self.when.as_str(), "above" | "below"),
            ),
            ("low", self.low.is_some() && self.when != "outside"),
            ("high", self.high.is_some() && self.when != "outside"),
            (
                "after_secs",
                self.after_secs.is_some() && self.when != "offline",
            ),
            (
                "for_secs",
                self.for_secs.is_some() && self.when == "offline",
            ),
            ("for_ms", self.for_ms.is_some() && self.when == "offline"),
            (
                "area",
                self.area.is_some() && !matches!(self.when.as_str(), "in_area" | "out_of_area"),
            ),
            (
                "device_threshold",
                self.device_threshold && !matches!(self.when.as_str(), "above" | "below"),
            ),
        ]
        .into_iter()
        .filter(|(_, bad)| *bad)
        .map(|(k, _)| k)
        .collect();
        if !unused.is_empty() {
            return Err(err(format!(
                "`{}` does not apply to `when = \"{}\"`",
                unused.join("`, `"),
                self.when
            )));
        }
        if self.for_secs.is_some() && self.for_ms.is_some() {
            return Err(err("set `for_secs` or `for_ms`, not both".into()));
        }
        let duration_ms = self
            .for_ms
            .or(self.for_secs.map(|s| s.saturating_mul(1000)))
            .unwrap_or(0)
            .min(i64::MAX as u64) as i64;
        let scopes: Vec<Scope> = [
            self.device.clone().map(Scope::Device),
            self.model.clone().map(Scope::Model),
            self.site.clone().map(Scope::Site),
        ]
        .into_iter()
        .flatten()
        .collect();
        if scopes.len() > 1 {
            return Err(err(
                "set at most one of `device`, `model`, `site` (none watches every device)".into(),
            ));
        }
        let severity = match self.severity.as_deref().unwrap_or("warning") {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => {
                return Err(err(format!(
                    "severity `{other}`: must be `info`, `warning` or `critical`"
                )))
            }
        };
        Ok(Rule {
            id: self.id.clone(),
            scope: scopes.into_iter().next().unwrap_or(Scope::All),
            condition,
            duration_ms,
            hysteresis: exact(&self.hysteresis, "hysteresis")?.unwrap_or_default(),
            severity,
            device_threshold: self.device_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml_with_env(text, "", Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_parse_exactly_with_defaults() {
        let c = load(
            r#"
[alarms]
enabled = true
[[alarms.rules]]
id = "hot"
when = "above"
value = "80.12345678"
hysteresis = 5
for_secs = 30
severity = "critical"
model = "PX"
[[alarms.rules]]
id = "gone"
when = "offline"
after_secs = 60
"#,
        )
        .unwrap();
        let rules = c.alarms.parsed_rules().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].condition,
            iotflow_alarms::Condition::Above {
                value: "80.12345678".parse().unwrap()
            }
        );
        assert_eq!(rules[0].duration_ms, 30_000);
        assert_eq!(rules[0].scope, iotflow_alarms::Scope::Model("PX".into()));
        assert_eq!(rules[1].severity, iotflow_alarms::Severity::Warning);
        assert_eq!(rules[1].scope, iotflow_alarms::Scope::All);
        assert_eq!(
            rules[1].condition,
            iotflow_alarms::Condition::Offline { after_ms: 60_000 }
        );
    }

    #[test]
    fn area_rules_parse_from_geojson_coordinates() {
        let c = load(
            r#"
[alarms]
enabled = true
[[alarms.rules]]
id = "depot"
when = "in_area"
area = [[[121.0, 31.0], [121.1, 31.0], [121.1, 31.1], [121.0, 31.1]], [[121.04, 31.04], [121.06, 31.04], [121.06, 31.06]]]
for_secs = 60
"#,
        )
        .unwrap();
        let rules = c.alarms.parsed_rules().unwrap();
        let iotflow_alarms::Condition::InArea { area } = &rules[0].condition else {
            panic!("{:?}", rules[0].condition);
        };
        assert_eq!(area.rings().len(), 2);
        assert!(area.contains("31.02".parse().unwrap(), "121.02".parse().unwrap()));
        assert!(!area.contains("31.045".parse().unwrap(), "121.055".parse().unwrap()));
        for (body, want) in [
            ("when = \"in_area\"", "needs `area`"),
            (
                "when = \"above\"\nvalue = 1\narea = [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]]",
                "`area` does not apply",
            ),
            (
                "when = \"out_of_area\"\narea = [[[0.0, 95.0], [1.0, 0.0], [1.0, 1.0]]]",
                "latitude 95",
            ),
        ] {
            let e = load(&format!("[[alarms.rules]]\nid = \"r1\"\n{body}\n"))
                .and_then(|c| {
                    c.alarms
                        .parsed_rules()
                        .map_err(|e| e.to_string())
                        .map(|_| ())
                })
                .unwrap_err();
            assert!(e.contains(want) && e.contains("r1"), "{body}: {e}");
        }
    }

    #[test]
    fn bad_rules_are_refused_by_name() {
        let cases = [
            ("when = \"above\"\nvalue = 80.5", "not exact"),
            ("when = \"above\"", "needs `value`"),
            ("when = \"sideways\"\nvalue = 1", "must be `above`"),
            ("when = \"above\"\nvalue = \"8x\"", "`8x` is not a decimal"),
            (
                "when = \"offline\"\nafter_secs = 5\nvalue = 1",
                "does not apply",
            ),
            (
                "when = \"above\"\nvalue = 1\nmodel = \"a\"\nsite = \"b\"",
                "at most one",
            ),
            ("when = \"outside\"\nlow = 10\nhigh = 5", "r1"),
            (
                "when = \"above\"\nvalue = 1\nseverity = \"loud\"",
                "severity `loud`",
            ),
        ];
        for (body, want) in cases {
            let text = format!("[alarms]\n[[alarms.rules]]\nid = \"r1\"\n{body}\n");
            let e = load(&text).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        let dup = "[alarms]\n[[alarms.rules]]\nid = \"a\"\nwhen = \"above\"\nvalue = 1\n[[alarms.rules]]\nid = \"a\"\nwhen = \"below\"\nvalue = 1\n";
        assert!(load(dup).unwrap_err().contains("same id"));
    }
}
