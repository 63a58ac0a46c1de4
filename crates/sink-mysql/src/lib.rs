//! The MySQL / MariaDB sink for enriched readings.
//!
//! * [`row`](mod@row): the stored row, the shared [`iotflow_sink::FlatRow`] with its texts cut;
//! * [`encoder`]: rows into one multi-row `INSERT ... ON DUPLICATE KEY UPDATE` (idempotent on
//!   the source coordinates `(src_partition, src_offset, event_time)`);
//! * [`load_data`]: rows as tab-separated text for `LOAD DATA LOCAL INFILE ... IGNORE`, in a
//!   transaction committed only when every warning is a duplicate key (the default method);
//! * [`retry`]: which errors are retried, which stop the job, which are a row's fault;
//! * [`health`]: the start-up check ([`prepare`]);
//! * [`partitions`]: every day a batch touches gets its own `pYYYYMMDD` partition first;
//! * [`writer`]: the [`iotflow_sink::BatchWriter`] tying them to a connection pool;
//! * [`connector`]: [`MysqlConnector`], what the job gets from [`prepare`].
pub mod connector;
pub mod encoder;
pub mod health;
pub mod load_data;
pub mod partitions;
pub mod retry;
pub mod row;
pub mod writer;

pub use connector::MysqlConnector;
pub use health::{prepare, prepare_opts, IOT_DATA_DDL};
pub use row::{row, Row};
pub use writer::{AfterWrite, MysqlWriter, WriteStats};
