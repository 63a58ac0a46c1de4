use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::parse::{decimal_field, ParseError};
use crate::serde_bin;

/// A device's business record, as published on `iot-broadcast` from the MySQL business table.
///
/// Every field but `pboxid` is optional: a reading is enriched with whatever the record has.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id, the join key.
    pub pboxid: String,
    /// Owning company.
    pub company: Option<String>,
    /// Site (plant) the device is installed at.
    pub site: Option<String>,
    /// Production line within the site.
    pub line: Option<String>,
    /// Human-readable device name.
    pub device_name: Option<String>,
    /// Device model.
    pub model: Option<String>,
    /// Business status, e.g. `active`, `maintenance`, `retired`.
    pub status: Option<String>,
    /// Per-device working threshold for the work-time analysis (default 50 when absent).
    #[serde(with = "serde_bin::opt_decimal")]
    pub work_threshold: Option<Decimal>,
    /// When the business record was last changed, as text from the source table.
    pub updated_at: Option<String>,
}

/// What one `iot-broadcast` record says about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChange {
    /// The device exists with this record (insert or update).
    Upsert(DeviceInfo),
    /// The device was removed (a `deleted` flag or a Kafka tombstone).
    Delete(String),
}

impl DeviceChange {
    /// The device id the change is about.
    pub fn pboxid(&self) -> &str {
        match self {
            DeviceChange::Upsert(d) => &d.pboxid,
            DeviceChange::Delete(id) => id,
        }
    }
}

#[derive(Deserialize)]
struct WireDevice<'a> {
    pboxid: Option<String>,
    company: Option<String>,
    site: Option<String>,
    line: Option<String>,
    device_name: Option<String>,
    model: Option<String>,
    status: Option<String>,
    #[serde(borrow)]
    work_threshold: Option<&'a RawValue>,
    updated_at: Option<String>,
    #[serde(default)]
    deleted: bool,
}

/// Parses one `iot-broadcast` record: JSON keyed by `pboxid`.
///
/// A missing payload (a Kafka tombstone) or `"deleted": true` removes the device. The id comes
/// from the payload's `pboxid`, or from the key when the payload has none; when both are present
/// they must agree.
pub fn parse_device_record(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<DeviceChange, ParseError> {
    let key = match key {
        Some(k) => Some(std::str::from_utf8(k).map_err(|_| ParseError::BadPboxid {
            reason: "the record key is not UTF-8".into(),
        })?),
        None => None,
    };
    let Some(payload) = payload else {
        let id = key.ok_or(ParseError::Missing {
            field: "pboxid (tombstone without a key)",
        })?;
        crate::parse::check_pboxid(id)?;
        return Ok(DeviceChange::Delete(id.to_owned()));
    };
    let wire: WireDevice = serde_json::from_slice(payload).map_err(ParseError::json)?;
    let pboxid = match (wire.pboxid, key) {
        (Some(p), Some(k)) if p != k => {
            return Err(ParseError::BadPboxid {
                reason: format!("payload pboxid `{p}` differs from record key `{k}`"),
            })
        }
        (Some(p), _) => p,
        (None, Some(k)) => k.to_owned(),
        (None, None) => return Err(ParseError::Missing { field: "pboxid" }),
    };
    crate::parse::check_pboxid(&pboxid)?;
    if wire.deleted {
        return Ok(DeviceChange::Delete(pboxid));
    }
    let work_threshold = match wire.work_threshold {
        Some(raw) => decimal_field("work_threshold", raw)?,
        None => None,
    };
    if let Some(t) = work_threshold {
        // A threshold the sinks' DECIMAL(24,8) cannot hold would make every reading of the
        // device a poison record: the device record is refused instead.
        if !crate::columns::fits_decimal(t, crate::columns::METRIC_INT_DIGITS) {
            return Err(ParseError::OutOfRange {
                field: "work_threshold",
                value: t.to_string(),
                range: "(-1e16, 1e16) after rounding to 8 decimal places (DECIMAL(24,8))",
            });
        }
    }
    Ok(DeviceChange::Upsert(DeviceInfo {
        pboxid,
        company: wire.company,
        site: wire.site,
        line: wire.line,
        device_name: wire.device_name,
        model: wire.model,
        status: wire.status,
        work_threshold,
        updated_at: wire.updated_at,
    }))
}

impl DeviceInfo {
    /// The record as published on `iot-broadcast`.
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), serde_json::Value::String(v.clone()));
            }
        };
        put("pboxid", &Some(self.pboxid.clone()));
        put("company", &self.company);
        put("site", &self.site);
        put("line", &self.line);
        put("device_name", &self.device_name);
        put("model", &self.model);
        put("status", &self.status);
        put(
            "work_threshold",
            &self.work_threshold.map(|d| d.to_string()),
        );
        put("updated_at", &self.updated_at);
        serde_json::Value::Object(m).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn upsert_round_trips_through_json() {
        let d = DeviceInfo {
            pboxid: "pbox-1".into(),
            company: Some("Acme 'Works'".into()),
            line: Some("L2".into()),
            work_threshold: Some(Decimal::from_str("55.5").unwrap()),
            ..Default::default()
        };
        let back = parse_device_record(Some(b"pbox-1"), Some(d.to_json().as_bytes())).unwrap();
        assert_eq!(back, DeviceChange::Upsert(d));
    }

    #[test]
    fn tombstone_and_deleted_flag_remove() {
        assert_eq!(
            parse_device_record(Some(b"pbox-9"), None).unwrap(),
            DeviceChange::Delete("pbox-9".into())
        );
        assert_eq!(
            parse_device_record(None, Some(br#"{"pboxid":"pbox-9","deleted":true}"#)).unwrap(),
            DeviceChange::Delete("pbox-9".into())
        );
    }

    #[test]
    fn key_and_payload_must_agree() {
        let err = parse_device_record(Some(b"a"), Some(br#"{"pboxid":"b"}"#)).unwrap_err();
        assert!(err.to_string().contains("differs"), "{err}");
        let err = parse_device_record(None, None).unwrap_err();
        assert!(err.to_string().contains("pboxid"), "{err}");
        assert_eq!(
            parse_device_record(Some(b"k"), Some(br#"{"company":"c"}"#))
                .unwrap()
                .pboxid(),
            "k"
        );
    }

    #[test]
    fn survives_bincode_between_processes() {
        let d = DeviceInfo {
            pboxid: "x".into(),
            work_threshold: Some(Decimal::from_str("12345678.123456789").unwrap()),
            ..Default::default()
        };
        let bytes = bincode::serialize(&d).unwrap();
        assert_eq!(bincode::deserialize::<DeviceInfo>(&bytes).unwrap(), d);
    }
}
