//! The ClickHouse sink for enriched readings.
//!
//! Rows go in with the official `clickhouse` crate (RowBinary over HTTP). The table is a
//! `ReplacingMergeTree` ordered by `(pboxid, event_time, src_partition, src_offset)`: a reading
//! delivered again after a crash is a second copy of an identical row, which merges collapse and
//! `FINAL` hides. That makes the sink idempotent on every server version, whatever batches the
//! rows arrived in (an insert deduplication token, where the server has one, only catches a
//! retry of the *same* batch; after a restart batches are composed differently). See
//! `docs/clickhouse.md` for which queries see exact counts on which version.
//!
//! The job calls [`prepare`] once and builds each worker's [`ClickhouseWriter`] from the
//! returned [`ClickhouseConnector`] (`iotflow_sink::Connector`). The writer holds the enriched
//! readings themselves and encodes each into a [`Row`] (a view borrowing its strings) as the
//! insert is sent: the sink copies no reading.

mod connector;
mod encoder;
mod health;
mod retry;
mod row;
mod writer;

pub use clickhouse::Client;
pub use connector::ClickhouseConnector;
pub use encoder::{by_day, create_table_ddl, dedup_token, DEDUP_WINDOW, IOT_DATA_DDL};
pub use health::{prepare, Capabilities, CONNECT_TIMEOUT};
pub use iotflow_config::ClickhouseConfig;
pub use retry::{classify, is_row_error, ROW_ERROR_CODES, TRANSIENT_CODES};
pub use row::Row;
pub use writer::ClickhouseWriter;
