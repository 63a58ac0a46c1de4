//! `.parse_readings()`: Kafka records into readings and dead letters.
//!
//! Errors travel as data: a record that fails to parse becomes a [`DeadLetter`] on the second
//! output, is counted by reason, and is logged at most once every few seconds (with a count of
//! the ones not logged), so a flood of garbage can neither stop the stream nor the logs.

use std::time::Duration;

use iotflow_metrics::{ParseMetrics, RateLimitedLog};
use iotflow_model::{
    check_window, parse_device_record, parse_reading, DeadLetter, DeviceChange, ParseError,
    ParseLimits, Reading, SourceRef, Zone,
};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::OkErr;
use timely::dataflow::StreamVec;

use crate::KafkaRecord;

/// Parses the broadcast topic's device records into changes of the device dimension. A
/// record that is not a device record is skipped with a warning (at most one every 5 s) that
/// names it by `topic`/partition/offset: the dimension is the publisher's, and one bad record
/// of it must not stop the readings.
pub fn device_changes<'scope>(
    records: StreamVec<'scope, u64, KafkaRecord>,
    topic: String,
) -> StreamVec<'scope, u64, DeviceChange> {
    let mut log = RateLimitedLog::new(Duration::from_secs(5));
    records.flat_map(move |r| -> Option<DeviceChange> {
        parse_device_record(r.key.as_deref(), r.payload.as_deref())
            .map_err(|e| {
                log.warn(|| {
                    format!(
                        "ignored device record {topic}/{}/{}: {e}",
                        r.partition, r.offset
                    )
                })
            })
            .ok()
    })
}

/// What the parser needs to know.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// Source topic name (recorded in dead letters).
    pub topic: String,
    /// Zone for RFC 3339 times.
    pub zone: Zone,
    /// Parser limits.
    pub limits: ParseLimits,
    /// Payload bytes kept in a dead letter.
    pub dlq_max_payload_bytes: usize,
    /// Whether to apply the plausibility window (`parse.max_event_age_secs` and
    /// `parse.max_event_lead_secs`) around the record's broker timestamp. On for Kafka; off for
    /// file input (`iotflow run --input`), which has no broker timestamp and whose archives
    /// are old by design: the wall clock would reject a whole backfill.
    pub check_window: bool,
}

impl ParseOptions {
    /// The options of the readings topic of `config`.
    pub fn readings(
        config: &iotflow_config::Config,
    ) -> Result<ParseOptions, iotflow_config::ConfigError> {
        Ok(ParseOptions {
            topic: config.kafka.topic.clone(),
            zone: config.zone()?,
            limits: config.parse_limits(),
            dlq_max_payload_bytes: config.kafka.dlq_max_payload_bytes,
            check_window: true,
        })
    }

    /// The options of file input (`iotflow run --input`): dead letters name the source topic
    /// `topic` and no window is checked (see [`ParseOptions::check_window`]).
    pub fn files(
        config: &iotflow_config::Config,
        topic: &str,
    ) -> Result<ParseOptions, iotflow_config::ConfigError> {
        Ok(ParseOptions {
            topic: topic.to_string(),
            check_window: false,
            ..ParseOptions::readings(config)?
        })
    }
}

/// Splits Kafka records into parsed readings and dead letters.
pub trait ParseReadings<'scope> {
    /// Parses every record; see the module docs.
    fn parse_readings(
        self,
        options: ParseOptions,
        metrics: ParseMetrics,
    ) -> (
        StreamVec<'scope, u64, Reading>,
        StreamVec<'scope, u64, DeadLetter>,
    );
}

impl<'scope> ParseReadings<'scope> for StreamVec<'scope, u64, KafkaRecord> {
    // The `Result` only routes each record to one of two output containers; it is never
    // returned up a call stack, so the size of the dead-letter variant costs nothing.
    #[allow(clippy::result_large_err)]
    fn parse_readings(
        self,
        options: ParseOptions,
        metrics: ParseMetrics,
    ) -> (
        StreamVec<'scope, u64, Reading>,
        StreamVec<'scope, u64, DeadLetter>,
    ) {
        let mut log = RateLimitedLog::new(Duration::from_secs(5));
        self.ok_err(move |rec: KafkaRecord| {
            let result = match &rec.payload {
                Some(p) => parse_reading(p, &options.zone, &options.limits).and_then(|r| {
                    if !options.check_window {
                        return Ok(r);
                    }
                    // The window is relative to the record's own time, so a replay after a
                    // restart gets the same verdict; the wall clock only stands in for a
                    // record without a timestamp.
                    let reference = rec.ts_ms.unwrap_or_else(now_ms);
                    check_window(&r, &options.zone, &options.limits, reference).map(|()| r)
                }),
                None => Err(ParseError::Empty),
            };
            match result {
                Ok(r) => {
                    metrics.success.inc();
                    Ok(r.into_reading(
                        SourceRef {
                            partition: rec.partition,
                            offset: rec.offset,
                        },
                        rec.ts_ms,
                    ))
                }
                Err(e) => {
                    metrics.failure(e.code()).inc();
                    log.warn(|| {
                        format!(
                            "rejected {}/{}/{}: {e}",
                            options.topic, rec.partition, rec.offset
                        )
                    });
                    Err(dead_letter(rec, &e, &options))
                }
            }
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Builds the dead letter of a rejected record.
pub fn dead_letter(rec: KafkaRecord, e: &ParseError, options: &ParseOptions) -> DeadLetter {
    let mut payload = rec.payload.unwrap_or_default();
    let truncated = payload.len() > options.dlq_max_payload_bytes;
    payload.truncate(options.dlq_max_payload_bytes);
    DeadLetter {
        payload,
        truncated,
        reason: e.to_string(),
        reason_code: e.code().to_string(),
        topic: options.topic.clone(),
        source: SourceRef {
            partition: rec.partition,
            offset: rec.offset,
        },
        kafka_ts_ms: rec.ts_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use timely::dataflow::operators::{Capture, ToStream};

    use super::*;

    /// Parses `records` with `options`; returns (readings, dead-letter reason codes).
    fn parse(records: Vec<KafkaRecord>, options: ParseOptions) -> (usize, Vec<String>) {
        let (ok_tx, ok_rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        timely::example(move |scope| {
            let metrics = iotflow_metrics::Metrics::new("t", "t").parse("parse", 0);
            let (ok, err) = records.to_stream(scope).parse_readings(options, metrics);
            ok.capture_into(ok_tx);
            err.capture_into(err_tx);
        });
        use timely::dataflow::operators::capture::Event;
        let readings = ok_rx
            .try_iter()
            .map(|e| match e {
                Event::Messages(_, d) => d.len(),
                _ => 0,
            })
            .sum();
        let codes = err_rx
            .try_iter()
            .flat_map(|e| match e {
                Event::Messages(_, d) => d,
                _ => vec![],
            })
            .map(|l: DeadLetter| l.reason_code)
            .collect();
        (readings, codes)
    }

    #[test]
    fn file_input_has_no_window_kafka_input_does() {
        let mut config = iotflow_config::Config::default();
        config.parse.max_event_age_secs = 3600;
        // A reading of 2025 without a broker timestamp, as every line of a file is.
        let record = KafkaRecord {
            partition: -7,
            offset: 42,
            ts_ms: None,
            key: None,
            payload: Some(
                br#"{"event_time":"2025-04-10 08:00:00","metric":1.5,"pboxid":"p","latitude":1,"longitude":2}"#
                    .to_vec(),
            ),
        };
        let kafka = ParseOptions::readings(&config).unwrap();
        assert!(kafka.check_window);
        let (n, codes) = parse(vec![record.clone()], kafka);
        assert_eq!(n, 0);
        assert_eq!(codes.len(), 1, "{codes:?}");

        let files = ParseOptions::files(&config, "file").unwrap();
        assert!(!files.check_window && files.topic == "file");
        let (n, codes) = parse(vec![record], files);
        assert_eq!((n, codes.len()), (1, 0), "{codes:?}");
    }
}
