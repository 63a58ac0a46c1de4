//! The Elasticsearch [`BatchWriter`]: `_bulk` requests, item by item.

use std::fmt;
use std::time::Duration;

use iotflow_metrics::IntCounter;
use iotflow_sink::{backoff, BatchWriter, RejectRecorder, Rejected, RetryPolicy, SinkError};
use reqwest::header::CONTENT_TYPE;

use crate::encoder::{encode_bulk, source_document};
use crate::response::{parse_bulk_response, ItemOutcome};
use crate::retry::classify_status;
use crate::row::index_name;
use crate::{Connection, Row};

/// Writes batches of [`Row`]s with the `_bulk` API into daily indices.
///
/// `write` returns `Ok` only once every row is stored (2xx) or durably handed to its
/// [`RejectRecorder`]. Items the server refused with 429 or 5xx are sent again, alone, up to
/// `item_attempts` times with jittered backoff; after that `write` returns
/// [`SinkError::Transient`] and the generic sink operator retries the whole batch, which is
/// harmless: ids are deterministic, so stored documents overwrite themselves. A row rejected in
/// a batch that is retried is rejected again, but recorded once (the recorder remembers what it
/// recorded until the batch succeeds). Only a crash records a rejection twice (the batch is
/// re-read from Kafka), so the dead-letter side must tolerate rare duplicates, keyed by
/// `(src_partition, src_offset)`.
pub struct ElasticsearchWriter {
    connection: Connection,
    index_prefix: String,
    rejects: RejectRecorder,
    item_attempts: u32,
    item_backoff: RetryPolicy,
    item_retries: Option<IntCounter>,
}

impl fmt::Debug for ElasticsearchWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticsearchWriter")
            .field("connection", &self.connection)
            .field("index_prefix", &self.index_prefix)
            .field("item_attempts", &self.item_attempts)
            .field("item_backoff", &self.item_backoff)
            .finish_non_exhaustive()
    }
}

impl ElasticsearchWriter {
    /// A writer on `connection` into `{index_prefix}-YYYY.MM.DD`. A document refused
    /// definitely is an error until [`ElasticsearchWriter::with_rejects`] says where it goes.
    /// Retriable items get 5 attempts per `write`, with backoff from 100 ms up to
    /// [`ITEM_RETRY_MAX_BACKOFF`](crate::ITEM_RETRY_MAX_BACKOFF).
    pub fn new(connection: Connection, index_prefix: &str) -> Self {
        ElasticsearchWriter {
            connection,
            index_prefix: index_prefix.to_string(),
            rejects: RejectRecorder::none("elasticsearch"),
            item_attempts: 5,
            item_backoff: RetryPolicy {
                initial: Duration::from_millis(100),
                max: crate::ITEM_RETRY_MAX_BACKOFF,
            },
            item_retries: None,
        }
    }

    /// Documents the cluster refuses for their own reason go to `rejects` (with the source
    /// line the cluster refused as the dead letter's document).
    pub fn with_rejects(mut self, rejects: RejectRecorder) -> Self {
        self.rejects = rejects;
        self
    }

    /// Counts documents sent again after a retriable item status into `item_retries`.
    pub fn with_item_retries_counter(mut self, item_retries: IntCounter) -> Self {
        self.item_retries = Some(item_retries);
        self
    }

    /// Sets how often (at least once) and with what backoff retriable items are sent within
    /// one `write`.
    pub fn with_item_retry(mut self, attempts: u32, backoff: RetryPolicy) -> Self {
        self.item_attempts = attempts.max(1);
        self.item_backoff = backoff;
        self
    }

    /// One `_bulk` request for `rows`; the outcome of each, in order.
    async fn bulk(&self, rows: &[&Row]) -> Result<Vec<ItemOutcome>, SinkError> {
        let body = encode_bulk(rows.iter().copied(), &self.index_prefix);
        let context = || {
            format!(
                "bulk-indexing {} documents into Elasticsearch at {}",
                rows.len(),
                self.connection.url()
            )
        };
        let request = self
            .connection
            .client
            .post(format!("{}/_bulk", self.connection.url()))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        let (status, body) = self.connection.send(request, &context).await?;
        if !status.is_success() {
            return Err(classify_status(&context(), status, &body));
        }
        // A 200 that is not a bulk response (a proxy's page, a truncated body): retry.
        let outcomes = parse_bulk_response(&body, rows.len())
            .map_err(|e| SinkError::Transient(format!("{}: {e}", context())))?;
        // An item refused for a reason about the cluster or its index fails the whole write
        // before any item of the response is acted on: a document refused for its own reason
        // in the same response is not dead-lettered while the batch is retried or the job
        // stops (the retry, or the restarted job, sees it again).
        let mut sink_wide = outcomes.iter().filter_map(|o| match o {
            ItemOutcome::Sink(e) => Some(e),
            _ => None,
        });
        if let Some(first) = sink_wide.next() {
            let more = match sink_wide.count() {
                0 => String::new(),
                n => format!(" (and {n} more items like it)"),
            };
            let with_context = |m: &str| format!("{}: {m}{more}", context());
            return Err(match first {
                SinkError::Transient(m) => SinkError::Transient(with_context(m)),
                SinkError::Definite(m) => SinkError::Definite(with_context(m)),
            });
        }
        Ok(outcomes)
    }
}

impl BatchWriter for ElasticsearchWriter {
    type Row = Row;

    async fn write(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let mut pending: Vec<&Row> = rows.iter().collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let outcomes = self.bulk(&pending).await?;
            let mut retry = Vec::new();
            let mut last_reason = String::new();
            for (row, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    ItemOutcome::Stored => {}
                    ItemOutcome::Retry(reason) => {
                        retry.push(*row);
                        last_reason = reason;
                    }
                    // (`bulk` already returns these as the write's error.)
                    ItemOutcome::Sink(e) => return Err(e),
                    ItemOutcome::Rejected(reason) => {
                        // The dead letter carries what the cluster refused (the source
                        // line), not the shared flat form.
                        let rejected = Rejected {
                            src_partition: row.src_partition,
                            src_offset: row.src_offset,
                            kafka_ts_ms: row.kafka_ts_ms,
                            target: index_name(row, &self.index_prefix),
                            document: source_document(row),
                            reason,
                        };
                        self.rejects.reject(rejected).await?;
                    }
                }
            }
            attempt += 1;
            if !retry.is_empty() {
                if attempt >= self.item_attempts {
                    return Err(SinkError::Transient(format!(
                        "Elasticsearch still refused {} of {} documents after {attempt} attempts; last: {last_reason}",
                        retry.len(),
                        rows.len()
                    )));
                }
                if let Some(c) = &self.item_retries {
                    c.inc_by(retry.len() as u64);
                }
                tracing::debug!(
                    documents = retry.len(),
                    attempt,
                    reason = %last_reason,
                    "retrying documents Elasticsearch refused for now"
                );
                tokio::time::sleep(backoff(&self.item_backoff, attempt - 1)).await;
            }
            pending = retry;
        }
        self.rejects.batch_done();
        Ok(())
    }

    fn row_size(row: &Row) -> usize {
        // Action line and fixed fields (~260 bytes) plus the variable strings with their keys.
        260 + row.pboxid.len()
            + row
                .texts()
                .iter()
                .map(|s| s.as_ref().map_or(0, |s| s.len() + 18))
                .sum::<usize>()
    }

    fn kafka_ts_ms(row: &Row) -> Option<i64> {
        row.kafka_ts_ms
    }
}
