//! The MySQL / MariaDB sink for enriched readings.
//!
//! * [`encoder`]: rows into one multi-row `INSERT ... ON DUPLICATE KEY UPDATE` (idempotent on
//!   the source coordinates `(src_partition, src_offset, event_time)`).
//! * [`partitions`]: every day a batch touches gets its own `pYYYYMMDD` partition first.
//! * [`writer`]: the [`iotflow_sink::BatchWriter`] tying both to a connection pool, plus the
//!   start-up check ([`writer::prepare`]).
pub mod encoder;
pub mod partitions;
pub mod writer;

pub use encoder::Row;
pub use writer::{prepare, redact, MysqlWriter, IOT_DATA_DDL};
