//! The device id of an MQTT message: the Kafka key, from the payload or the topic.

use std::borrow::Cow;

use iotflow_config::DEVICE_ID_LEVEL;

/// What the bridge makes of one message's device id.
#[derive(Debug, PartialEq, Eq)]
pub struct Keyed {
    /// The Kafka key: the device id the stream job will read from the payload; `None` when
    /// there is none (the job dead-letters such a reading, with its reason).
    pub key: Option<String>,
    /// The payload to forward: the message's own, or with the topic's `pboxid` added.
    pub payload: bytes::Bytes,
    /// The topic named one device and the payload another (the payload's wins: it is what the
    /// job reads).
    pub mismatch: bool,
}

/// Where device ids come from.
#[derive(Clone, Debug)]
pub enum DeviceKey {
    /// The payload's `pboxid`.
    Payload,
    /// A level of the topic: the levels of a pattern like `pboxes/{pboxid}/readings`.
    Topic(Vec<String>),
}

impl DeviceKey {
    /// From `mqtt.device_id_from_topic` (validated by the configuration): empty = the payload.
    pub fn new(pattern: &str) -> DeviceKey {
        if pattern.is_empty() {
            DeviceKey::Payload
        } else {
            DeviceKey::Topic(pattern.split('/').map(str::to_string).collect())
        }
    }

    /// The device id the pattern finds in `topic`, if the topic matches it.
    pub fn from_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let DeviceKey::Topic(pattern) = self else {
            return None;
        };
        let mut found = None;
        let mut levels = topic.split('/');
        for p in pattern {
            if p == "#" {
                return found;
            }
            let level = levels.next()?;
            match p.as_str() {
                "+" => {}
                p if p == DEVICE_ID_LEVEL => found = Some(level),
                p if p == level => {}
                _ => return None,
            }
        }
        if levels.next().is_some() {
            return None;
        }
        found.filter(|id| !id.is_empty())
    }

    /// The key and payload to forward for a message on `topic`.
    pub fn key(&self, topic: &str, payload: bytes::Bytes) -> Keyed {
        let in_payload = payload_device(&payload);
        let from_topic = self.from_topic(topic);
        match (in_payload, from_topic) {
            (PayloadDevice::Id(id), topic_id) => Keyed {
                mismatch: topic_id.is_some_and(|t| t != id),
                key: Some(id.into_owned()),
                payload,
            },
            (PayloadDevice::Missing, Some(t)) => Keyed {
                payload: with_device(&payload, t),
                key: Some(t.to_string()),
                mismatch: false,
            },
            _ => Keyed {
                key: None,
                payload,
                mismatch: false,
            },
        }
    }
}

/// What a payload says of its device.
enum PayloadDevice<'a> {
    /// A `pboxid` string.
    Id(Cow<'a, str>),
    /// A JSON object without `pboxid`.
    Missing,
    /// Not a JSON object, or a `pboxid` that is not a string: forwarded as it is, for the job
    /// to reject with its reason.
    Unusable,
}

fn payload_device(payload: &[u8]) -> PayloadDevice<'_> {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        pboxid: Option<Cow<'a, str>>,
    }
    match serde_json::from_slice::<Probe>(payload) {
        Ok(Probe { pboxid: Some(id) }) if !id.is_empty() => PayloadDevice::Id(id),
        Ok(Probe { pboxid: None }) => PayloadDevice::Missing,
        _ => PayloadDevice::Unusable,
    }
}

/// `payload` (a JSON object without `pboxid`) with `"pboxid": id` first.
fn with_device(payload: &[u8], id: &str) -> bytes::Bytes {
    let text = payload.trim_ascii_start();
    // The probe parsed it as an object, so it opens with `{`.
    let rest = text[1..].trim_ascii_start();
    let mut out = Vec::with_capacity(payload.len() + id.len() + 14);
    out.extend_from_slice(b"{\"pboxid\":");
    out.extend_from_slice(
        serde_json::to_string(id)
            .expect("a string serializes")
            .as_bytes(),
    );
    if !rest.starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn patterns_find_the_device_level() {
        let k = DeviceKey::new("site/+/{pboxid}/#");
        assert_eq!(k.from_topic("site/a/p1/x/y"), Some("p1"));
        assert_eq!(k.from_topic("site/a/p1"), Some("p1"));
        assert_eq!(k.from_topic("other/a/p1"), None);
        assert_eq!(k.from_topic("site/a"), None);
        let k = DeviceKey::new("pboxes/{pboxid}/readings");
        assert_eq!(k.from_topic("pboxes/p2/readings"), Some("p2"));
        assert_eq!(k.from_topic("pboxes/p2/readings/extra"), None);
        assert_eq!(k.from_topic("pboxes//readings"), None);
        assert_eq!(DeviceKey::Payload.from_topic("pboxes/p2/readings"), None);
    }

    #[test]
    fn the_payload_id_is_the_key_and_a_missing_one_comes_from_the_topic() {
        let k = DeviceKey::new("pboxes/{pboxid}/readings");
        let got = k.key("pboxes/p1/readings", b(r#"{"pboxid":"p1","metric":1}"#));
        assert_eq!(got.key.as_deref(), Some("p1"));
        assert!(!got.mismatch);
        let got = k.key("pboxes/p1/readings", b(r#" { "metric": 1 }"#));
        assert_eq!(got.key.as_deref(), Some("p1"));
        let v: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
        assert_eq!(v, serde_json::json!({"pboxid": "p1", "metric": 1}));
        let got = k.key("pboxes/p\"1/readings", b("{}"));
        let v: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
        assert_eq!(v, serde_json::json!({"pboxid": "p\"1"}));
        let got = k.key("pboxes/p1/readings", b(r#"{"pboxid":"p9"}"#));
        assert_eq!(got.key.as_deref(), Some("p9"));
        assert!(got.mismatch);
        // Escaped ids are read as the job reads them.
        let got = DeviceKey::Payload.key("t", b(r#"{"pboxid":"a\u0062"}"#));
        assert_eq!(got.key.as_deref(), Some("ab"));
    }

    #[test]
    fn unusable_payloads_go_on_unchanged_and_unkeyed() {
        for p in ["not json", r#"{"pboxid": 7}"#, "[1,2]", r#"{"pboxid":""}"#] {
            let k = DeviceKey::new("pboxes/{pboxid}/readings");
            let got = k.key("pboxes/p1/readings", b(p));
            assert_eq!(got.key, None, "{p}");
            assert_eq!(&got.payload[..], p.as_bytes());
        }
        let got = DeviceKey::Payload.key("pboxes/p1/readings", b(r#"{"metric":1}"#));
        assert_eq!(got.key, None);
    }
}
