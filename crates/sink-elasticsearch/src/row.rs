use iotflow_model::{Decimal, Enriched, NaiveDateTime};

/// One enriched reading as an Elasticsearch document, before encoding.
///
/// Decimals stay [`Decimal`]s: the encoder writes their exact text into the JSON, so `_source`
/// holds the value as the device sent it (the indexed `double` is what searches and
/// aggregations see).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Local wall time of the reading (no zone; see the crate docs).
    pub event_time: NaiveDateTime,
    /// Device id.
    pub pboxid: String,
    /// The measured value, exact.
    pub metric: Decimal,
    /// Latitude in degrees, exact.
    pub latitude: Decimal,
    /// Longitude in degrees, exact.
    pub longitude: Decimal,
    /// Business record: company.
    pub company: Option<String>,
    /// Business record: site.
    pub site: Option<String>,
    /// Business record: production line.
    pub line: Option<String>,
    /// Business record: device name.
    pub device_name: Option<String>,
    /// Business record: device model.
    pub model: Option<String>,
    /// Business record: device status.
    pub device_status: Option<String>,
    /// Business record: work threshold, exact.
    pub work_threshold: Option<Decimal>,
    /// Kafka partition of the source record.
    pub src_partition: i32,
    /// Kafka offset of the source record.
    pub src_offset: i64,
    /// Kafka timestamp of the source record, milliseconds since the Unix epoch.
    pub kafka_ts_ms: Option<i64>,
}

impl Row {
    /// The document `_id`: `{src_partition}-{src_offset}-{event_time millis}`.
    ///
    /// Derived from the record's identity (partition, offset), so a record Kafka delivers again
    /// is indexed under the same id and overwrites itself (bulk action `index`). The event
    /// time's milliseconds (wall time read as UTC) make an id from a recreated topic, whose
    /// offsets restart, unlikely to collide with an old one in the same daily index.
    pub fn doc_id(&self) -> String {
        format!(
            "{}-{}-{}",
            self.src_partition,
            self.src_offset,
            self.event_time.and_utc().timestamp_millis()
        )
    }

    /// The daily index the document goes to: `{prefix}-YYYY.MM.DD`, the (local) day of
    /// `event_time`.
    pub fn index_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.event_time.format("%Y.%m.%d"))
    }
}

impl From<&Enriched> for Row {
    fn from(e: &Enriched) -> Row {
        let r = &e.reading;
        let d = e.device.as_ref();
        Row {
            event_time: r.event_time,
            pboxid: r.pboxid.clone(),
            metric: r.metric,
            latitude: r.latitude,
            longitude: r.longitude,
            company: d.and_then(|d| d.company.clone()),
            site: d.and_then(|d| d.site.clone()),
            line: d.and_then(|d| d.line.clone()),
            device_name: d.and_then(|d| d.device_name.clone()),
            model: d.and_then(|d| d.model.clone()),
            device_status: d.and_then(|d| d.status.clone()),
            work_threshold: d.and_then(|d| d.work_threshold),
            src_partition: r.source.partition,
            src_offset: r.source.offset,
            kafka_ts_ms: r.kafka_ts_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{DeviceInfo, Reading, SourceRef};
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
            device: Some(DeviceInfo {
                pboxid: "p".into(),
                company: Some("ACME".into()),
                status: Some("running".into()),
                work_threshold: Some(Decimal::from(50)),
                ..Default::default()
            }),
        };
        let r = Row::from(&e);
        assert_eq!(r.doc_id(), "3-9-1744329599250");
        assert_eq!(r.index_name("iot-data"), "iot-data-2025.04.10");
        assert_eq!(r.metric.to_string(), "12345678.123456789");
        assert_eq!(r.company.as_deref(), Some("ACME"));
        assert_eq!(r.device_status.as_deref(), Some("running"));
        assert_eq!(r.site, None);
        assert_eq!(r.work_threshold, Some(Decimal::from(50)));
        assert_eq!(r.kafka_ts_ms, Some(1_744_329_599_999));
    }
}
