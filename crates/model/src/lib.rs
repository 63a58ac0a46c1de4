//! The data of iotflow, with no I/O: readings as devices send them, device business records,
//! enriched readings, dead letters, and the parsers that turn Kafka payloads into them.
//!
//! Everything here is plain Rust so it can be unit-tested and benchmarked in isolation. Types
//! that cross timely process boundaries serialize with serde in a way bincode 1.x can read
//! (no `deserialize_any`): decimals travel as their 16-byte representation and date-times as
//! microseconds, never through text or `f64`.

pub mod columns;
mod device;
mod parse;
mod reading;
pub mod serde_bin;
mod zone;

pub use device::{parse_device_record, DeviceChange, DeviceInfo};
pub use parse::{check_window, parse_reading, ParseError, ParseLimits, ParsedReading};
#[doc(hidden)]
pub use parse::{parse_reading_fast, parse_reading_reference};
pub use reading::{DeadLetter, Enriched, Reading, SourceRef};
pub use zone::{Zone, ZoneError};

pub use chrono::{NaiveDate, NaiveDateTime};
pub use rust_decimal::Decimal;
