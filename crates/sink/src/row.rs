//! The one flat row every sink starts from.
//!
//! An [`Enriched`] reading is a reading plus an optional business record; every store keeps the
//! same 15 columns of it (`schemas/`). [`FlatRow`] is that row, built once per reading, with
//! exact decimals and the local wall time; each sink's `row.rs` maps it to what its store's
//! wire format needs (MySQL literals, Elasticsearch JSON), and every sink's dead letter carries
//! the same [`FlatRow::document`]. The ClickHouse sink skips the copy: it encodes RowBinary
//! straight from the reading, its text columns borrowed through [`enriched_texts`].

use iotflow_model::columns::{STATUS_MAX_CHARS, TEXT_MAX_CHARS};
use iotflow_model::{Decimal, Enriched, NaiveDate, NaiveDateTime};

use crate::Rejected;

/// The stored columns, in the column order of `schemas/` (`ingested_at` is left to the store).
pub const COLUMNS: [&str; 15] = [
    "event_time",
    "pboxid",
    "metric",
    "latitude",
    "longitude",
    "company",
    "site",
    "line",
    "device_name",
    "model",
    "device_status",
    "work_threshold",
    "src_partition",
    "src_offset",
    "kafka_ts",
];

/// The optional text columns of the business record, in column order (see [`FlatRow::texts`]).
pub const TEXT_COLUMNS: [&str; 6] = [
    "company",
    "site",
    "line",
    "device_name",
    "model",
    "device_status",
];

/// One enriched reading as the stores keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatRow {
    /// Reading time as local wall time in the configured time zone.
    pub event_time: NaiveDateTime,
    /// Device (power box) identifier, at most 64 characters.
    pub pboxid: String,
    /// Measured value, exact (`DECIMAL(24,8)` in the stores).
    pub metric: Decimal,
    /// Latitude in degrees, exact (`DECIMAL(11,8)`).
    pub latitude: Decimal,
    /// Longitude in degrees, exact (`DECIMAL(11,8)`).
    pub longitude: Decimal,
    /// Owning company, from the device's business record.
    pub company: Option<String>,
    /// Site of the device, from the business record.
    pub site: Option<String>,
    /// Production line, from the business record.
    pub line: Option<String>,
    /// Device name, from the business record.
    pub device_name: Option<String>,
    /// Device model, from the business record.
    pub model: Option<String>,
    /// Device status, from the business record.
    pub device_status: Option<String>,
    /// Threshold above which the device counts as working, exact.
    pub work_threshold: Option<Decimal>,
    /// Kafka partition of the source record (part of the idempotency key).
    pub src_partition: i32,
    /// Kafka offset of the source record (part of the idempotency key).
    pub src_offset: i64,
    /// Kafka timestamp of the source record, milliseconds since the Unix epoch, if any.
    pub kafka_ts_ms: Option<i64>,
}

/// The optional text columns of `e`'s business record, in the order of [`TEXT_COLUMNS`],
/// borrowed from the (shared) record: the one mapping of the record's fields to the columns,
/// for [`FlatRow`] and for a sink that encodes straight from the reading (ClickHouse).
pub fn enriched_texts(e: &Enriched) -> [Option<&str>; 6] {
    let Some(d) = e.device.as_deref() else {
        return [None; 6];
    };
    [
        d.company.as_deref(),
        d.site.as_deref(),
        d.line.as_deref(),
        d.device_name.as_deref(),
        d.model.as_deref(),
        d.status.as_deref(),
    ]
}

impl From<&Enriched> for FlatRow {
    fn from(e: &Enriched) -> FlatRow {
        let r = &e.reading;
        let [company, site, line, device_name, model, device_status] =
            enriched_texts(e).map(|t| t.map(str::to_owned));
        FlatRow {
            event_time: r.event_time,
            pboxid: r.pboxid.clone(),
            metric: r.metric,
            latitude: r.latitude,
            longitude: r.longitude,
            company,
            site,
            line,
            device_name,
            model,
            device_status,
            work_threshold: e.device.as_ref().and_then(|d| d.work_threshold),
            src_partition: r.source.partition,
            src_offset: r.source.offset,
            kafka_ts_ms: r.kafka_ts_ms,
        }
    }
}

impl FlatRow {
    /// The optional text columns, in the order of [`TEXT_COLUMNS`].
    pub fn texts(&self) -> [&Option<String>; 6] {
        [
            &self.company,
            &self.site,
            &self.line,
            &self.device_name,
            &self.model,
            &self.device_status,
        ]
    }

    /// The row with its text columns cut to the widths of the `VARCHAR` columns
    /// (`iotflow_model::columns`), for a store that refuses longer values.
    pub fn with_texts_cut(mut self) -> FlatRow {
        for (text, max) in [
            (&mut self.company, TEXT_MAX_CHARS),
            (&mut self.site, TEXT_MAX_CHARS),
            (&mut self.line, TEXT_MAX_CHARS),
            (&mut self.device_name, TEXT_MAX_CHARS),
            (&mut self.model, TEXT_MAX_CHARS),
            (&mut self.device_status, STATUS_MAX_CHARS),
        ] {
            if let Some(s) = text {
                if let Some((cut, _)) = s.char_indices().nth(max) {
                    s.truncate(cut);
                }
            }
        }
        self
    }

    /// The (local) day of `event_time`: the partition / index the row belongs to.
    pub fn day(&self) -> NaiveDate {
        self.event_time.date()
    }

    /// The row as one JSON object, for a dead letter: times as `yyyy-MM-dd HH:mm:ss.fff`,
    /// decimals as exact strings, the Kafka timestamp as epoch milliseconds.
    pub fn document(&self) -> String {
        serde_json::json!({
            "event_time": self.event_time.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            "pboxid": self.pboxid,
            "metric": self.metric.to_string(),
            "latitude": self.latitude.to_string(),
            "longitude": self.longitude.to_string(),
            "company": self.company,
            "site": self.site,
            "line": self.line,
            "device_name": self.device_name,
            "model": self.model,
            "device_status": self.device_status,
            "work_threshold": self.work_threshold.map(|t| t.to_string()),
            "src_partition": self.src_partition,
            "src_offset": self.src_offset,
            "kafka_ts_ms": self.kafka_ts_ms,
        })
        .to_string()
    }

    /// The row as a [`Rejected`] for the dead letters: refused by `target` (a table, an
    /// index) for the server's `reason`.
    pub fn rejected(&self, target: impl Into<String>, reason: impl Into<String>) -> Rejected {
        Rejected {
            src_partition: self.src_partition,
            src_offset: self.src_offset,
            kafka_ts_ms: self.kafka_ts_ms,
            target: target.into(),
            document: self.document(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{DeviceInfo, Reading, SourceRef};
    use std::str::FromStr;

    fn enriched() -> Enriched {
        Enriched {
            reading: Reading {
                event_time: NaiveDateTime::parse_from_str(
                    "2025-04-10 23:59:59.250",
                    "%Y-%m-%d %H:%M:%S%.f",
                )
                .unwrap(),
                metric: Decimal::from_str("12345678.123456789").unwrap(),
                pboxid: "p".into(),
                latitude: Decimal::from_str("-31.2").unwrap(),
                longitude: Decimal::from_str("121.47370001").unwrap(),
                source: SourceRef {
                    partition: 3,
                    offset: 9,
                },
                kafka_ts_ms: Some(1_744_329_599_999),
            },
            device: Some(
                DeviceInfo {
                    pboxid: "p".into(),
                    company: Some("ACME".into()),
                    status: Some("é".repeat(40)),
                    work_threshold: Some(Decimal::from(50)),
                    ..Default::default()
                }
                .into(),
            ),
        }
    }

    #[test]
    fn from_enriched_keeps_every_value_exact() {
        let r = FlatRow::from(&enriched());
        assert_eq!(r.metric.to_string(), "12345678.123456789");
        assert_eq!(r.company.as_deref(), Some("ACME"));
        assert_eq!(r.site, None);
        assert_eq!(r.work_threshold, Some(Decimal::from(50)));
        assert_eq!((r.src_partition, r.src_offset), (3, 9));
        assert_eq!(r.kafka_ts_ms, Some(1_744_329_599_999));
        assert_eq!(r.day().to_string(), "2025-04-10");
        assert_eq!(r.texts()[0].as_deref(), Some("ACME"));
    }

    #[test]
    fn texts_are_cut_in_characters_not_bytes() {
        let r = FlatRow::from(&enriched()).with_texts_cut();
        assert_eq!(r.device_status.unwrap().chars().count(), STATUS_MAX_CHARS);
        assert_eq!(r.company.as_deref(), Some("ACME"));
    }

    #[test]
    fn the_dead_letter_document_is_the_row_as_json() {
        let r = FlatRow::from(&enriched());
        let rejected = r.rejected("iot_data", "Data too long");
        assert_eq!((rejected.src_partition, rejected.src_offset), (3, 9));
        let doc: serde_json::Value = serde_json::from_str(&rejected.document).unwrap();
        assert_eq!(doc["event_time"], "2025-04-10 23:59:59.250");
        assert_eq!(doc["metric"], "12345678.123456789");
        assert_eq!(doc["kafka_ts_ms"], 1_744_329_599_999i64);
        assert_eq!(doc["site"], serde_json::Value::Null);
    }
}
