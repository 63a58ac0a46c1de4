//! The Elasticsearch document before encoding: the shared [`FlatRow`] itself, plus its `_id`
//! and daily index.
//!
//! Decimals stay [`Decimal`](iotflow_model::Decimal)s: the encoder writes their exact text
//! into the JSON, so `_source` holds the value as the device sent it (the indexed `double` is
//! what searches and aggregations see).

use iotflow_sink::FlatRow;

/// One enriched reading as an Elasticsearch document: the shared flat row.
pub type Row = FlatRow;

/// The document `_id`: `{src_partition}-{src_offset}-{event_time millis}`.
///
/// Derived from the record's identity (partition, offset), so a record Kafka delivers again is
/// indexed under the same id and overwrites itself (bulk action `index`). The event time's
/// milliseconds (wall time read as UTC) make an id from a recreated topic, whose offsets
/// restart, unlikely to collide with an old one in the same daily index.
pub fn doc_id(row: &Row) -> String {
    format!(
        "{}-{}-{}",
        row.src_partition,
        row.src_offset,
        row.event_time.and_utc().timestamp_millis()
    )
}

/// The daily index the document goes to: `{prefix}-YYYY.MM.DD`, the (local) day of
/// `event_time`.
pub fn index_name(row: &Row, prefix: &str) -> String {
    format!("{prefix}-{}", row.day().format("%Y.%m.%d"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{Decimal, DeviceInfo, Enriched, NaiveDateTime, Reading, SourceRef};
    use std::str::FromStr;

    #[test]
    fn from_enriched_keeps_identity_and_names_the_day() {
        let e = Enriched {
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
                    status: Some("running".into()),
                    work_threshold: Some(Decimal::from(50)),
                    ..Default::default()
                }
                .into(),
            ),
        };
        let r = Row::from(&e);
        assert_eq!(doc_id(&r), "3-9-1744329599250");
        assert_eq!(index_name(&r, "iot-data"), "iot-data-2025.04.10");
        assert_eq!(r.metric.to_string(), "12345678.123456789");
        assert_eq!(r.company.as_deref(), Some("ACME"));
        assert_eq!(r.device_status.as_deref(), Some("running"));
        assert_eq!(r.site, None);
        assert_eq!(r.work_threshold, Some(Decimal::from(50)));
        assert_eq!(r.kafka_ts_ms, Some(1_744_329_599_999));
    }
}
