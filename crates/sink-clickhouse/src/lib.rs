//! The ClickHouse sink for enriched readings.
//!
//! Rows go in with the official `clickhouse` crate (RowBinary over HTTP). The table is a
//! `ReplacingMergeTree` ordered by `(pboxid, event_time, src_partition, src_offset)`: a reading
//! delivered again after a crash is a second copy of an identical row, which merges collapse and
//! `FINAL` hides. That makes the sink idempotent on every server version, whatever batches the
//! rows arrived in (an insert deduplication token, where the server has one, only catches a
//! retry of the *same* batch; after a restart batches are composed differently). See
//! `docs/clickhouse.md` for which queries see exact counts on which version.

mod row;
mod writer;

pub use clickhouse::Client;
pub use row::Row;
pub use writer::{
    dedup_token, prepare, Capabilities, ClickhouseWriter, Prepared, DEDUP_WINDOW, IOT_DATA_DDL,
};
