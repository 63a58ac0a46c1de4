//! The ClickHouse row: an enriched reading as RowBinary wants it (scaled integers, split
//! times), borrowed from the reading while it is encoded.

use iotflow_model::columns::{to_scale, DECIMAL_SCALE};
use iotflow_model::{Decimal, Enriched};
use iotflow_sink::enriched_texts;
use serde::Serialize;

/// One row of the ClickHouse `iot_data` table, in column order (RowBinary is positional).
///
/// The sink holds the [`Enriched`] readings themselves and builds this view of each one only
/// while the `clickhouse` crate encodes it: the strings are the reading's own and its
/// device's shared record, so a reading is never copied on its way to the wire.
///
/// Decimals travel as their scaled integers (`value × 10^8`, of the column's storage width),
/// computed from the exact decimal, never through `f64`. ClickHouse 18.16 has no `DateTime64`,
/// so times are whole seconds plus a milliseconds column.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct Row<'a> {
    /// `DateTime('UTC')`: the local wall time's seconds, read as UTC (like MySQL's DATETIME).
    pub event_time: u32,
    /// `UInt16`: milliseconds of `event_time`.
    pub event_ms: u16,
    /// `String`.
    pub pboxid: &'a str,
    /// `Decimal(24, 8)` as `value × 10^8`.
    pub metric: i128,
    /// `Decimal(11, 8)` as `value × 10^8`.
    pub latitude: i64,
    /// `Decimal(11, 8)` as `value × 10^8`.
    pub longitude: i64,
    /// `Nullable(String)`.
    pub company: Option<&'a str>,
    /// `Nullable(String)`.
    pub site: Option<&'a str>,
    /// `Nullable(String)`.
    pub line: Option<&'a str>,
    /// `Nullable(String)`.
    pub device_name: Option<&'a str>,
    /// `Nullable(String)`.
    pub model: Option<&'a str>,
    /// `Nullable(String)`.
    pub device_status: Option<&'a str>,
    /// `Nullable(Decimal(24, 8))` as `value × 10^8`.
    pub work_threshold: Option<i128>,
    /// `Int32`.
    pub src_partition: i32,
    /// `Int64`.
    pub src_offset: i64,
    /// `Nullable(DateTime('UTC'))`: the Kafka timestamp's seconds.
    pub kafka_ts: Option<u32>,
    /// `Nullable(UInt16)`: the Kafka timestamp's milliseconds.
    pub kafka_ms: Option<u16>,
}

/// `d × 10^8`, rounded half away from zero at the 8th decimal (as the columns store it,
/// [`to_scale`]).
pub(crate) fn scaled(d: Decimal) -> i128 {
    let mut d = to_scale(d);
    d.rescale(DECIMAL_SCALE);
    d.mantissa()
}

/// A Kafka timestamp before the epoch has no `DateTime` value: it is stored as NULL.
pub(crate) fn kafka_ts_ms(e: &Enriched) -> Option<i64> {
    e.reading.kafka_ts_ms.filter(|ms| *ms >= 0)
}

/// `event_time`'s whole seconds, read as UTC: the `DateTime` column's value. The parser
/// accepts years 1970..=2099, inside u32 seconds.
pub(crate) fn event_secs(e: &Enriched) -> u32 {
    e.reading
        .event_time
        .and_utc()
        .timestamp()
        .clamp(0, u32::MAX as i64) as u32
}

impl<'a> From<&'a Enriched> for Row<'a> {
    fn from(e: &'a Enriched) -> Row<'a> {
        let r = &e.reading;
        let [company, site, line, device_name, model, device_status] = enriched_texts(e);
        let kafka = kafka_ts_ms(e);
        Row {
            event_time: event_secs(e),
            event_ms: r.event_time.and_utc().timestamp_subsec_millis() as u16,
            pboxid: &r.pboxid,
            metric: scaled(r.metric),
            latitude: scaled(r.latitude) as i64,
            longitude: scaled(r.longitude) as i64,
            company,
            site,
            line,
            device_name,
            model,
            device_status,
            work_threshold: e.device.as_ref().and_then(|d| d.work_threshold).map(scaled),
            src_partition: r.source.partition,
            src_offset: r.source.offset,
            kafka_ts: kafka.map(|ms| (ms / 1000).min(u32::MAX as i64) as u32),
            kafka_ms: kafka.map(|ms| (ms % 1000) as u16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{DeviceInfo, NaiveDateTime, Reading, SourceRef};
    use std::str::FromStr;

    #[test]
    fn decimals_scale_exactly_and_times_split() {
        let e = Enriched {
            reading: Reading {
                event_time: NaiveDateTime::parse_from_str(
                    "2025-04-10 08:00:01.250",
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
                kafka_ts_ms: Some(1_744_272_001_999),
            },
            device: Some(
                DeviceInfo {
                    pboxid: "p".into(),
                    company: Some("ACME".into()),
                    work_threshold: Some(Decimal::from(50)),
                    ..Default::default()
                }
                .into(),
            ),
        };
        let r = Row::from(&e);
        assert_eq!(r.event_time, 1_744_272_001);
        assert_eq!(r.event_ms, 250);
        assert_eq!(
            r.metric, 1_234_567_812_345_679,
            "rounded half away from zero at 8 places"
        );
        assert_eq!(r.latitude, -3_120_000_000);
        assert_eq!(r.longitude, 12_147_370_001);
        assert_eq!(r.work_threshold, Some(5_000_000_000));
        assert_eq!((r.kafka_ts, r.kafka_ms), (Some(1_744_272_001), Some(999)));
        assert_eq!(r.pboxid, "p");
        assert_eq!((r.company, r.device_status), (Some("ACME"), None));
    }
}
