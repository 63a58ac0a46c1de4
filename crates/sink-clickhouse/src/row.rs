use iotflow_model::{Decimal, Enriched};
use serde::Serialize;

/// One row of the ClickHouse `iot_data` table, in column order (RowBinary is positional).
///
/// Decimals travel as their scaled integers (`value × 10^8`, of the column's storage width),
/// computed from the exact decimal, never through `f64`. ClickHouse 18.16 has no `DateTime64`,
/// so times are whole seconds plus a milliseconds column.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct Row {
    /// `DateTime('UTC')`: the local wall time's seconds, read as UTC (like MySQL's DATETIME).
    pub event_time: u32,
    /// `UInt16`: milliseconds of `event_time`.
    pub event_ms: u16,
    /// `String`.
    pub pboxid: String,
    /// `Decimal(24, 8)` as `value × 10^8`.
    pub metric: i128,
    /// `Decimal(11, 8)` as `value × 10^8`.
    pub latitude: i64,
    /// `Decimal(11, 8)` as `value × 10^8`.
    pub longitude: i64,
    /// `Nullable(String)`.
    pub company: Option<String>,
    /// `Nullable(String)`.
    pub site: Option<String>,
    /// `Nullable(String)`.
    pub line: Option<String>,
    /// `Nullable(String)`.
    pub device_name: Option<String>,
    /// `Nullable(String)`.
    pub model: Option<String>,
    /// `Nullable(String)`.
    pub device_status: Option<String>,
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

impl Row {
    /// The row as JSON, for a dead letter: times as `yyyy-MM-dd HH:mm:ss.fff`, decimals as
    /// exact strings.
    pub fn document(&self) -> String {
        let time = |s: u32, ms: u16| {
            chrono::DateTime::from_timestamp(i64::from(s), u32::from(ms) * 1_000_000)
                .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        };
        let dec = |v: i128| Decimal::from_i128_with_scale(v, 8).normalize().to_string();
        serde_json::json!({
            "event_time": time(self.event_time, self.event_ms),
            "pboxid": self.pboxid,
            "metric": dec(self.metric),
            "latitude": dec(i128::from(self.latitude)),
            "longitude": dec(i128::from(self.longitude)),
            "company": self.company,
            "site": self.site,
            "line": self.line,
            "device_name": self.device_name,
            "model": self.model,
            "device_status": self.device_status,
            "work_threshold": self.work_threshold.map(dec),
            "src_partition": self.src_partition,
            "src_offset": self.src_offset,
            "kafka_ts": self.kafka_ts.and_then(|s| time(s, self.kafka_ms.unwrap_or(0))),
        })
        .to_string()
    }
}

/// `d × 10^8`, rounded half away from zero at the 8th decimal (as the columns store it).
pub(crate) fn scaled(d: Decimal) -> i128 {
    let mut d = d.round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    d.rescale(8);
    d.mantissa()
}

impl From<&Enriched> for Row {
    fn from(e: &Enriched) -> Row {
        let r = &e.reading;
        let d = e.device.as_ref();
        let t = r.event_time.and_utc();
        Row {
            // The parser accepts years 1970..=2099, inside u32 seconds.
            event_time: t.timestamp().clamp(0, u32::MAX as i64) as u32,
            event_ms: t.timestamp_subsec_millis() as u16,
            pboxid: r.pboxid.clone(),
            metric: scaled(r.metric),
            latitude: scaled(r.latitude) as i64,
            longitude: scaled(r.longitude) as i64,
            company: d.and_then(|d| d.company.clone()),
            site: d.and_then(|d| d.site.clone()),
            line: d.and_then(|d| d.line.clone()),
            device_name: d.and_then(|d| d.device_name.clone()),
            model: d.and_then(|d| d.model.clone()),
            device_status: d.and_then(|d| d.status.clone()),
            work_threshold: d.and_then(|d| d.work_threshold).map(scaled),
            src_partition: r.source.partition,
            src_offset: r.source.offset,
            kafka_ts: r
                .kafka_ts_ms
                .filter(|ms| *ms >= 0)
                .map(|ms| (ms / 1000).min(u32::MAX as i64) as u32),
            kafka_ms: r
                .kafka_ts_ms
                .filter(|ms| *ms >= 0)
                .map(|ms| (ms % 1000) as u16),
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
            device: Some(DeviceInfo {
                pboxid: "p".into(),
                work_threshold: Some(Decimal::from(50)),
                ..Default::default()
            }),
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
    }
}
