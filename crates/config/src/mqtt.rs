//! `[mqtt]`: the MQTT bridge, `iotflow mqtt-bridge` (docs/mqtt.md).

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The level of a topic pattern that holds the device id.
pub const DEVICE_ID_LEVEL: &str = "{pboxid}";

/// `iotflow mqtt-bridge`: MQTT subscriptions → the readings topic, acknowledged to MQTT only
/// after Kafka acknowledged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// MQTT broker host. Default `127.0.0.1`.
    pub host: String,
    /// MQTT broker port. Default 1883.
    pub port: u16,
    /// Client id of the bridge's persistent session: what the broker queues messages for while
    /// the bridge is away. Two bridges with one id take the session from each other; give each
    /// bridge its own id and its own topic filters. Default `iotflow-mqtt-bridge`.
    pub client_id: String,
    /// User name; empty = anonymous. Default empty.
    pub username: String,
    /// Password (with `username`). Default empty.
    pub password: String,
    /// Topic filters subscribed with QoS 1 (`+` one level, `#` the rest). Default
    /// `["pboxes/+/readings"]`.
    pub topics: Vec<String>,
    /// Where the device id (the Kafka key) comes from: empty = the payload's `pboxid`; or a
    /// topic pattern with one `{pboxid}` level, e.g. `pboxes/{pboxid}/readings` (`+` matches
    /// any one level, `#` the rest). With a pattern, a JSON payload without `pboxid` gets the
    /// topic's. Default empty.
    pub device_id_from_topic: String,
    /// Kafka topic the messages go to; empty = `kafka.topic`. Default empty.
    pub kafka_topic: String,
    /// MQTT keep-alive, seconds. Default 30.
    pub keep_alive_secs: u64,
    /// Directory of the bridge's ledger (`<client_id>.forwarded`, 40 bytes per message of
    /// `dedupe_window`): which messages went to Kafka, so one the broker sends again after a
    /// crash is not forwarded twice.
    /// Keep it on a persistent volume; losing it can only duplicate, never lose. Default
    /// `.iotflow/mqtt-bridge` (relative to the working directory).
    pub state_dir: String,
    /// Messages the ledger remembers (40 bytes each on disk, about 60 in memory): a message
    /// the broker or a device sends again while its first copy is among the last this many is
    /// acknowledged without a second copy in Kafka. At least 65536 (the most a broker can have
    /// unacknowledged). Default 262144.
    pub dedupe_window: usize,
    /// Address of the bridge's `/metrics`; empty disables it. Default `127.0.0.1:9252`.
    pub metrics_listen: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "iotflow-mqtt-bridge".into(),
            username: String::new(),
            password: String::new(),
            topics: vec!["pboxes/+/readings".into()],
            device_id_from_topic: String::new(),
            kafka_topic: String::new(),
            keep_alive_secs: 30,
            state_dir: ".iotflow/mqtt-bridge".into(),
            dedupe_window: 262_144,
            metrics_listen: "127.0.0.1:9252".into(),
        }
    }
}

impl MqttConfig {
    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Value(m));
        if self.host.trim().is_empty() {
            return bad("mqtt.host must not be empty".into());
        }
        if self.client_id.is_empty() || self.client_id.len() > 65535 {
            return bad(
                "mqtt.client_id must not be empty: the persistent session is known by it".into(),
            );
        }
        if self.topics.is_empty() {
            return bad("mqtt.topics must name at least one topic filter".into());
        }
        for t in &self.topics {
            check_filter(t).map_err(|m| ConfigError::Value(format!("mqtt.topics: `{t}` {m}")))?;
        }
        if !self.device_id_from_topic.is_empty() {
            let p = &self.device_id_from_topic;
            let levels = p.split('/').filter(|l| *l == DEVICE_ID_LEVEL).count();
            if levels != 1
                || p.split('/')
                    .any(|l| l != DEVICE_ID_LEVEL && l.contains('{'))
            {
                return bad(format!(
                    "mqtt.device_id_from_topic: `{p}` must have exactly one level that is `{DEVICE_ID_LEVEL}`"
                ));
            }
            check_filter(&p.replace(DEVICE_ID_LEVEL, "+"))
                .map_err(|m| ConfigError::Value(format!("mqtt.device_id_from_topic: `{p}` {m}")))?;
        }
        if self.keep_alive_secs < 5 {
            return bad(format!(
                "mqtt.keep_alive_secs = {} must be at least 5",
                self.keep_alive_secs
            ));
        }
        if self.dedupe_window < 65_536 {
            return bad(format!(
                "mqtt.dedupe_window = {} must be at least 65536 (the most messages an MQTT broker can have unacknowledged)",
                self.dedupe_window
            ));
        }
        if self.state_dir.trim().is_empty() {
            return bad("mqtt.state_dir must not be empty".into());
        }
        if self.username.is_empty() && !self.password.is_empty() {
            return bad("mqtt.password is set but mqtt.username is empty".into());
        }
        Ok(())
    }
}

/// An MQTT topic filter's rules: not empty, `+` alone in its level, `#` alone and last.
fn check_filter(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("is empty".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('+') && *l != "+" {
            return Err("has `+` inside a level (it must be a whole level)".into());
        }
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err("has `#` that is not the whole last level".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_patterns_are_checked_with_the_key_named() {
        let ok = MqttConfig {
            device_id_from_topic: "site/+/{pboxid}/#".into(),
            ..MqttConfig::default()
        };
        ok.validate().unwrap();
        for (change, expect) in [
            (
                MqttConfig {
                    topics: vec!["a/b+/c".into()],
                    ..MqttConfig::default()
                },
                "mqtt.topics: `a/b+/c`",
            ),
            (
                MqttConfig {
                    topics: vec!["a/#/c".into()],
                    ..MqttConfig::default()
                },
                "`#` that is not the whole last level",
            ),
            (
                MqttConfig {
                    topics: vec![],
                    ..MqttConfig::default()
                },
                "at least one",
            ),
            (
                MqttConfig {
                    device_id_from_topic: "a/{pboxid}/{pboxid}".into(),
                    ..MqttConfig::default()
                },
                "exactly one level",
            ),
            (
                MqttConfig {
                    device_id_from_topic: "a/x{pboxid}".into(),
                    ..MqttConfig::default()
                },
                "exactly one level",
            ),
            (
                MqttConfig {
                    client_id: String::new(),
                    ..MqttConfig::default()
                },
                "mqtt.client_id",
            ),
        ] {
            let e = change.validate().unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
    }
}
