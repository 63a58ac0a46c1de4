//! The ClickHouse [`BatchWriter`]: one insert per day, rows the server refuses found by
//! halving ([`Bisection`]) and sent to the dead letters.

use std::time::Duration;

use clickhouse::Client;
use iotflow_model::Enriched;
use iotflow_sink::{
    enriched_texts, within, BatchWriter, Bisection, FlatRow, RejectRecorder, SinkError,
};

use crate::encoder::{by_day, dedup_token};
use crate::retry::{classify, is_row_error};
use crate::Row;

/// Writes batches of rows into one table.
pub struct ClickhouseWriter {
    client: Client,
    table: String,
    dedup_tokens: bool,
    rejects: RejectRecorder,
    timeout: Duration,
}

impl ClickhouseWriter {
    /// How long one write may take by default (the `clickhouse.write_timeout_ms` default).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A writer on `client` (as a [`ClickhouseConnector`](crate::ClickhouseConnector) holds
    /// it). Sends no deduplication token; see [`ClickhouseWriter::with_dedup_tokens`]. Each
    /// write may take [`ClickhouseWriter::DEFAULT_TIMEOUT`]; see
    /// [`ClickhouseWriter::with_timeout`].
    pub fn new(client: Client, table: &str) -> Self {
        ClickhouseWriter {
            client,
            table: table.to_string(),
            dedup_tokens: false,
            rejects: RejectRecorder::none("clickhouse"),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Bounds each write (the whole INSERT, until the server's answer) by `timeout`: a write
    /// not answered by then is abandoned and fails as transient, so the sink operator retries
    /// it with backoff and counts it, instead of waiting silently on a hung server.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Rows the server refuses for a value (see [`ROW_ERROR_CODES`](crate::ROW_ERROR_CODES))
    /// go to `rejects`, found by splitting the refused insert in halves; the rest is written.
    /// When every row of a batch of several is refused the table is at fault, not the rows:
    /// that is a definite error and nothing is dead-lettered.
    pub fn with_rejects(mut self, rejects: RejectRecorder) -> Self {
        self.rejects = rejects;
        self
    }

    /// Sends each batch with `insert_deduplication_token` ([`dedup_token`]) when `on`: only
    /// for servers whose [`Capabilities`](crate::Capabilities) say they know the setting (an
    /// older server refuses the insert with `Unknown setting`).
    pub fn with_dedup_tokens(mut self, on: bool) -> Self {
        self.dedup_tokens = on;
        self
    }

    /// One insert of `rows` (one day's), each encoded as it is sent.
    async fn insert(&self, rows: &[&Enriched]) -> Result<(), clickhouse::error::Error> {
        let mut insert = self.client.insert::<Row<'static>>(&self.table).await?;
        if self.dedup_tokens {
            insert = insert.with_setting(
                "insert_deduplication_token",
                dedup_token(rows.iter().copied()),
            );
        }
        for row in rows {
            insert.write(&Row::from(*row)).await?;
        }
        insert.end().await
    }

    /// Inserts the rows of `batch` at `day` (indices), splitting around the rows the server
    /// refuses; returns those (index, server's reason).
    async fn insert_splitting(
        &self,
        batch: &[Enriched],
        day: &[usize],
    ) -> Result<Vec<(usize, String)>, SinkError> {
        let mut refused = Vec::new();
        let mut split = Bisection::new(day.len());
        while let Some(range) = split.next_range() {
            let rows: Vec<&Enriched> = day[range.clone()].iter().map(|&i| &batch[i]).collect();
            match self.insert(&rows).await {
                Ok(()) => {}
                Err(e) if is_row_error(&e) => {
                    if let Some(k) = split.refused(range) {
                        refused.push((day[k], e.to_string()));
                    }
                }
                Err(e) => {
                    return Err(classify(
                        &format!(
                            "inserting {} rows into ClickHouse table `{}`",
                            rows.len(),
                            self.table
                        ),
                        &e,
                    ))
                }
            }
        }
        Ok(refused)
    }

    /// One write, without the deadline.
    async fn write_now(&mut self, rows: &[Enriched]) -> Result<(), SinkError> {
        let mut refused = Vec::new();
        for day in by_day(rows) {
            refused.extend(self.insert_splitting(rows, &day).await?);
        }
        if refused.len() == rows.len() && rows.len() > 1 {
            let (_, reason) = &refused[0];
            return Err(SinkError::Definite(format!(
                "ClickHouse refused every one of {} rows for table `{}` (does the table match schemas/clickhouse/iot_data.sql?): {reason}",
                rows.len(),
                self.table
            )));
        }
        for (i, reason) in refused {
            self.rejects
                .reject(FlatRow::from(&rows[i]).rejected(self.table.as_str(), reason))
                .await?;
        }
        self.rejects.batch_done();
        Ok(())
    }
}

impl BatchWriter for ClickhouseWriter {
    /// The enriched readings themselves: each is encoded straight from the reading and its
    /// shared device record while the insert is sent ([`Row`]), with no copy in between.
    type Row = Enriched;

    async fn write(&mut self, rows: &[Enriched]) -> Result<(), SinkError> {
        let (limit, n, table) = (self.timeout, rows.len(), self.table.clone());
        let what = move || format!("inserting {n} rows into ClickHouse table `{table}`");
        within(
            limit,
            "clickhouse.write_timeout_ms",
            what,
            self.write_now(rows),
        )
        .await
    }

    fn row_size(row: &Enriched) -> usize {
        90 + row.reading.pboxid.len()
            + enriched_texts(row)
                .iter()
                .map(|s| s.map_or(1, |s| s.len() + 2))
                .sum::<usize>()
    }

    fn kafka_ts_ms(row: &Enriched) -> Option<i64> {
        crate::row::kafka_ts_ms(row)
    }
}
