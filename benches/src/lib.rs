//! Fixtures shared by iotflow's criterion benches (`benches/*.rs`) and the end-to-end harness
//! (`src/bin/e2e.rs`), so that both measure the same data the same way.
//!
//! * [`payloads`], [`readings`] and [`rows`]: realistic readings (about 120 bytes of JSON each)
//!   from the device simulator, at each stage of the pipeline.
//! * [`BaselineReading`]: the "serde parse alone" baseline the real parser is compared with.
//! * [`prom`]: the job's counters and histograms from its `/metrics` text (parsed by the
//!   project's one parser, `iotflow_metrics::Exposition`), and `histogram_quantile` as Prometheus computes it.
//! * [`job`]: `iotflow run` as a child process, followed through its `/metrics` (reqwest).
//! * [`report`]: the harness's results as data, and their markdown tables rendered once.
//! * [`parse_enrich`]: parse + enrich on one timely worker, as the criterion bench does it.
//! * [`rss`]: a process's resident memory from `/proc`, sampled for its peak.
//!
//! See `docs/benchmarks.md` for how to run everything and what each figure means.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use iotflow_gen::{GenOptions, Generator};
use iotflow_model::{parse_reading, DeviceInfo, Enriched, ParseLimits, Reading, SourceRef, Zone};
use iotflow_sink_mysql::Row;
use serde::Deserialize;

pub mod job;
pub mod parse_enrich;
pub mod prom;
pub mod report;
pub mod rss;

/// Event time of the first generated round of readings. Fixed so that runs are comparable: a
/// few hundred thousand readings of 1 000 devices, one second apart, all fall on this one day
/// (one day partition in MariaDB).
pub fn start_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 4, 10)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date")
}

/// Simulator options for `count` valid readings of `devices` known devices: no malformed
/// records, no unknown devices, 10 % RFC 3339 times (the simulator's default mix).
pub fn gen_options(count: u64, devices: usize, seed: u64) -> GenOptions {
    GenOptions {
        devices,
        count,
        malformed_share: 0.0,
        unknown_share: 0.0,
        seed,
        start: start_time(),
        ..GenOptions::default()
    }
}

/// `count` JSON readings as devices send them (about 120 bytes each).
pub fn payloads(count: u64, devices: usize, seed: u64) -> Vec<Vec<u8>> {
    Generator::new(gen_options(count, devices, seed))
        .map(|g| g.payload)
        .collect()
}

/// The "serde parse alone" baseline: the fields of a reading deserialized with `serde_json`
/// into `f64`s and `String`s, with no validation, no exact decimals and no time parsing.
///
/// The gap between this and [`iotflow_model::parse_reading`] is the price of exactness
/// (decimals read from their text) and of validation.
#[derive(Clone, Debug, Deserialize)]
pub struct BaselineReading {
    /// Event time, as sent.
    pub event_time: String,
    /// Metric, through `f64`.
    pub metric: f64,
    /// Device id.
    pub pboxid: String,
    /// Latitude, through `f64`.
    pub latitude: f64,
    /// Longitude, through `f64`.
    pub longitude: f64,
}

/// Parses one payload with the baseline.
pub fn parse_baseline(payload: &[u8]) -> serde_json::Result<BaselineReading> {
    serde_json::from_slice(payload)
}

/// Parses `payloads` with the real parser into readings, as the job's parse operator does
/// (source coordinates spread over `partitions` partitions, Kafka timestamp `kafka_ts_ms`).
///
/// Panics on a payload that does not parse: the fixtures contain none.
pub fn readings(payloads: &[Vec<u8>], partitions: i32, kafka_ts_ms: Option<i64>) -> Vec<Reading> {
    let limits = ParseLimits::default();
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let r = parse_reading(p, &Zone::Utc, &limits).expect("generated readings parse");
            let partitions = partitions.max(1) as usize;
            r.into_reading(
                SourceRef {
                    partition: (i % partitions) as i32,
                    offset: (i / partitions) as i64,
                },
                kafka_ts_ms,
            )
        })
        .collect()
}

/// The `iot_data` rows the job would write for `readings`, enriched with `devices` (a reading
/// of a device not in `devices` gets empty business columns, as in the job).
pub fn rows(readings: &[Reading], devices: &[DeviceInfo]) -> Vec<Row> {
    let by_id: HashMap<&str, &DeviceInfo> =
        devices.iter().map(|d| (d.pboxid.as_str(), d)).collect();
    readings
        .iter()
        .map(|r| {
            iotflow_sink_mysql::row(&Enriched {
                reading: r.clone(),
                device: by_id
                    .get(r.pboxid.as_str())
                    .map(|d| std::sync::Arc::new((*d).clone())),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_realistic_and_agree() {
        let p = payloads(2_000, 100, 7);
        assert_eq!(p.len(), 2_000);
        let mean = p.iter().map(Vec::len).sum::<usize>() / p.len();
        assert!((100..=140).contains(&mean), "mean payload {mean} bytes");
        for payload in &p {
            let b = parse_baseline(payload).unwrap();
            assert!(b.pboxid.starts_with("pbox-"));
        }
        let r = readings(&p, 8, Some(1));
        assert_eq!(
            r[9].source,
            SourceRef {
                partition: 1,
                offset: 1
            }
        );
        let devices = iotflow_gen::devices(100, 7);
        let rows = rows(&r, &devices);
        assert!(rows.iter().all(|row| row.company.is_some()));
        assert!(rows
            .iter()
            .all(|row| row.event_time.date() == start_time().date()));
    }
}
