//! The sink contract, written once (see `docs/specs/sink.md`):
//!
//! * a sink holds its input capability for a time until the store acknowledged every row at
//!   that time, so the probe after the sinks (and with it the Kafka offset commit) never passes
//!   data that is not durable;
//! * rows are written in batches bounded by rows, bytes and delay;
//! * a row the store refuses for reasons of its own (a value its column cannot hold) goes to
//!   the writer's [`Rejects`] (the dead-letter topic) and the rest of the batch is written;
//! * transient errors are retried with exponential backoff and full jitter, forever (the job
//!   stalls, visibly in metrics, and loses nothing); definite errors stop the job with the
//!   store's message;
//! * writes are idempotent, so re-delivered rows after a crash overwrite themselves.
//!
//! A backend implements [`BatchWriter`]: plain async Rust with no timely in it. The operator
//! ([`SinkBatches::sink_batches`]) is the thin shell that drives it: it batches on the worker
//! thread and hands batches to a task on the process's tokio runtime, which acknowledges them
//! back through a channel and wakes the operator.

mod batcher;
mod connector;
mod operator;
mod policy;
mod reject;
mod row;
mod split;

pub use batcher::{Batch, Batcher, Sent};
pub use connector::{Connector, RejectsFor, SinkEnv, SinkTo};
pub use operator::{Fatal, SinkBatches, SinkOptions};
pub use policy::{backoff, BatchPolicy, RetryPolicy};
pub use reject::{RejectFuture, RejectRecorder, Rejected, Rejects};
pub use row::{enriched_texts, FlatRow, COLUMNS, TEXT_COLUMNS};
pub use split::Bisection;

use std::future::Future;
use std::time::Duration;

/// Why a write failed, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The store is unreachable, overloaded or restarting: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The store refused the write for a reason retrying cannot fix (credentials,
    /// privileges, schema): stop the job.
    #[error("{0}")]
    Definite(String),
}

impl SinkError {
    /// Whether the write should be retried.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

/// A backend that writes batches of rows, idempotently.
pub trait BatchWriter: Send + 'static {
    /// One row as the backend stores it.
    type Row: Send + 'static;

    /// Writes `rows`; returns only when they are durable (or with an error).
    fn write(&mut self, rows: &[Self::Row]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Approximate encoded size of a row in bytes (for the `max_bytes` batch limit).
    fn row_size(row: &Self::Row) -> usize;

    /// The Kafka timestamp of the row's source message, for end-to-end latency.
    fn kafka_ts_ms(row: &Self::Row) -> Option<i64>;
}

/// Runs one write with a deadline: an unfinished write is dropped (and with it its connection
/// or request) and fails as transient, so the operator retries it with backoff instead of
/// waiting silently on a hung server. Safe because every sink's writes are idempotent: if the
/// server still completes the abandoned one, the retry overwrites the same rows. `setting`
/// names the configuration key of `limit` in the message.
pub async fn within(
    limit: Duration,
    setting: &str,
    what: impl FnOnce() -> String,
    write: impl Future<Output = Result<(), SinkError>>,
) -> Result<(), SinkError> {
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result,
        Err(_) => Err(SinkError::Transient(format!(
            "{}: no answer within {limit:?} ({setting}); abandoned, will retry",
            what()
        ))),
    }
}
