use std::sync::Arc;

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::serde_bin;
use crate::DeviceInfo;

/// Where a record came from: its Kafka partition and offset in the source topic.
///
/// This pair is the record's identity. Sinks key their writes on it, so a record that Kafka
/// delivers twice (after a crash, before its offset was committed) overwrites itself instead of
/// becoming a second row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceRef {
    /// Kafka partition of the source topic.
    pub partition: i32,
    /// Offset of the record within that partition.
    pub offset: i64,
}

/// One valid reading of one device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reading {
    /// Local wall time of the reading in the configured zone (no zone attached).
    #[serde(with = "serde_bin::naive_micros")]
    pub event_time: NaiveDateTime,
    /// The device's measured value, exact as sent.
    #[serde(with = "serde_bin::decimal")]
    pub metric: Decimal,
    /// Device id: 1 to 64 printable characters.
    pub pboxid: String,
    /// Latitude in degrees, in [-90, 90].
    #[serde(with = "serde_bin::decimal")]
    pub latitude: Decimal,
    /// Longitude in degrees, in [-180, 180].
    #[serde(with = "serde_bin::decimal")]
    pub longitude: Decimal,
    /// Kafka partition and offset the reading was read from.
    pub source: SourceRef,
    /// Kafka message timestamp in milliseconds since the Unix epoch, when the broker gave one.
    pub kafka_ts_ms: Option<i64>,
}

/// A reading joined with its device's business record as of the moment it was processed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Enriched {
    /// The reading.
    pub reading: Reading,
    /// The device's record, or `None` for a device the dimension does not know. Shared with
    /// the dimension that holds it (and every other reading of the device): enriching a
    /// reading copies no string.
    pub device: Option<Arc<DeviceInfo>>,
}

/// A record that could not be parsed, on its way to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The original payload (truncated to the configured maximum; see `truncated`).
    pub payload: Vec<u8>,
    /// Whether `payload` was cut short.
    pub truncated: bool,
    /// Why the record was rejected, in words naming the field and the problem.
    pub reason: String,
    /// Short, low-cardinality reason code (for metrics and filtering).
    pub reason_code: String,
    /// Source topic.
    pub topic: String,
    /// Source partition and offset.
    pub source: SourceRef,
    /// Kafka message timestamp of the source record, if any.
    pub kafka_ts_ms: Option<i64>,
}
