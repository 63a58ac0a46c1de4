//! Rows a store refuses for reasons of the row itself, and where they go.
//!
//! A store may refuse one row of a batch for a reason no retry can fix (a value its column
//! cannot hold, a mapping conflict): that row is the data's problem, not the sink's, so it must
//! neither stop the job nor hold back the rows around it. The writer hands it to a [`Rejects`]
//! callback (in the job: the dead-letter topic, with the server's reason) and goes on; `write`
//! returns `Ok` only once every row is stored or its rejection is durable.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use iotflow_metrics::{IntCounter, RateLimitedLog};

use crate::SinkError;

/// A row a store refused definitely, for the dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Kafka partition of the source record.
    pub src_partition: i32,
    /// Kafka offset of the source record.
    pub src_offset: i64,
    /// Kafka timestamp of the source record (epoch ms), if any.
    pub kafka_ts_ms: Option<i64>,
    /// Where the row was meant to go (table, index).
    pub target: String,
    /// The row as the sink would have stored it (one JSON object).
    pub document: String,
    /// The server's reason.
    pub reason: String,
}

/// A boxed future that resolves once a [`Rejected`] row is durably recorded elsewhere.
pub type RejectFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where a writer hands the rows a store refused definitely. The returned future must resolve
/// only once the rejection is durable (in the job: acknowledged by the dead-letter topic); an
/// `Err` makes the write transient, so the batch is retried.
pub type Rejects = Arc<dyn Fn(Rejected) -> RejectFuture + Send + Sync>;

/// A writer's side of [`Rejects`]: records each refused row once per batch (the operator
/// retries a failed batch with the same rows, and a retry must not record them again), counts
/// them, and logs at most once per 10 s.
pub struct RejectRecorder {
    sink: &'static str,
    rejects: Option<Rejects>,
    counter: Option<IntCounter>,
    recorded: HashSet<(i32, i64)>,
    log: RateLimitedLog,
}

impl std::fmt::Debug for RejectRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectRecorder")
            .field("sink", &self.sink)
            .field("recorded", &self.recorded.len())
            .finish_non_exhaustive()
    }
}

impl RejectRecorder {
    /// A recorder for `sink` with nowhere to send rejections: a refused row is then a
    /// definite error (the job stops, nothing is committed past it).
    pub fn none(sink: &'static str) -> Self {
        RejectRecorder {
            sink,
            rejects: None,
            counter: None,
            recorded: HashSet::new(),
            log: RateLimitedLog::new(Duration::from_secs(10)),
        }
    }

    /// Sends refused rows to `rejects`.
    pub fn to(mut self, rejects: Rejects) -> Self {
        self.rejects = Some(rejects);
        self
    }

    /// Counts recorded rejections into `counter`.
    pub fn counting(mut self, counter: IntCounter) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Records `rejected` (once per batch); resolves when it is durable.
    pub async fn reject(&mut self, rejected: Rejected) -> Result<(), SinkError> {
        let key = (rejected.src_partition, rejected.src_offset);
        if self.recorded.contains(&key) {
            return Ok(());
        }
        let Some(rejects) = &self.rejects else {
            return Err(SinkError::Definite(format!(
                "{} refused the row from partition {} offset {} and no dead-letter topic takes it: {}",
                rejected.target, rejected.src_partition, rejected.src_offset, rejected.reason
            )));
        };
        if let Some(not_logged_before) = self.log.admit() {
            tracing::warn!(
                sink = self.sink,
                partition = rejected.src_partition,
                offset = rejected.src_offset,
                reason = %rejected.reason,
                not_logged_before,
                "the store refused a row: sending it to the dead letters"
            );
        }
        let (partition, offset) = key;
        rejects(rejected).await.map_err(|e| {
            SinkError::Transient(format!(
                "recording a row the {} sink's store refused ({partition}/{offset}): {e}",
                self.sink
            ))
        })?;
        self.recorded.insert(key);
        if let Some(c) = &self.counter {
            c.inc();
        }
        Ok(())
    }

    /// The batch is written: forget what was recorded for it.
    pub fn batch_done(&mut self) {
        self.recorded.clear();
    }
}
