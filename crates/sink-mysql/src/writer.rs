//! The MySQL [`BatchWriter`]: day partitions first, then one multi-row idempotent INSERT.

use std::time::Duration;

use iotflow_sink::{within, BatchWriter, Bisection, RejectRecorder, SinkError};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;

use crate::encoder::{days, encode_insert, validate_row};
use crate::partitions::PartitionManager;
use crate::retry::{classify, is_row_error};
use crate::Row;

/// Writes batches of [`Row`]s into one table.
pub struct MysqlWriter {
    pool: Pool,
    table: String,
    partitions: PartitionManager,
    sql: String,
    rejects: RejectRecorder,
    timeout: Duration,
}

impl MysqlWriter {
    /// How long one write may take by default (the `mysql.write_timeout_ms` default).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A writer using connections from `pool`; each write may take
    /// [`MysqlWriter::DEFAULT_TIMEOUT`] (see [`MysqlWriter::with_timeout`]). A row the server
    /// refuses is a definite error unless [`MysqlWriter::with_rejects`] gives it somewhere to
    /// go.
    pub fn new(pool: Pool, table: &str) -> Self {
        MysqlWriter {
            pool,
            table: table.to_string(),
            partitions: PartitionManager::new(table),
            sql: String::new(),
            rejects: RejectRecorder::none("mysql"),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Bounds each write (getting a connection, the day partitions, the INSERT) by `timeout`:
    /// a write not finished by then is abandoned and fails as transient, so the sink operator
    /// retries it with backoff and counts it, instead of waiting silently on a hung server or
    /// a table lock held elsewhere.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Rows whose values the table cannot hold (by [`validate_row`], or by the server's
    /// answer: 1264, 1265, 1366, 1406, ...) go to `rejects` and the rest of the batch is
    /// written. A batch the server refuses is split in halves until the refused rows are
    /// alone ([`Bisection`]), so k bad rows in n cost about 2k·log2(n) extra statements.
    pub fn with_rejects(mut self, rejects: RejectRecorder) -> Self {
        self.rejects = rejects;
        self
    }

    /// Inserts `rows`, splitting around the rows the server refuses.
    async fn insert_splitting(
        &mut self,
        conn: &mut mysql_async::Conn,
        rows: &[Row],
    ) -> Result<(), SinkError> {
        let mut split = Bisection::new(rows.len());
        while let Some(range) = split.next_range() {
            self.sql.clear();
            encode_insert(&self.table, &rows[range.clone()], &mut self.sql);
            match conn.query_drop(&self.sql).await {
                Ok(()) => {}
                Err(e) if is_row_error(&e) => {
                    if let Some(i) = split.refused(range) {
                        self.rejects
                            .reject(rows[i].rejected(&self.table, e.to_string()))
                            .await?;
                    }
                }
                Err(e) => {
                    return Err(classify(
                        &format!("inserting {} rows into `{}`", range.len(), self.table),
                        &e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// One write, without the deadline.
    async fn write_now(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(|e| classify("connecting to MySQL", &e))?;
        // Values the columns cannot hold never reach the server (the parser's rules are the
        // same, so this is a second line of defence, e.g. for a schema changed by hand).
        let valid: Vec<Row>;
        let rows = if rows.iter().all(|r| validate_row(r).is_ok()) {
            rows
        } else {
            let mut keep = Vec::with_capacity(rows.len());
            for r in rows {
                match validate_row(r) {
                    Ok(()) => keep.push(r.clone()),
                    Err(e) => {
                        self.rejects
                            .reject(r.rejected(&self.table, e.to_string()))
                            .await?
                    }
                }
            }
            valid = keep;
            &valid[..]
        };
        self.partitions
            .ensure_days(&mut conn, days(rows))
            .await
            .map_err(|e| {
                let message = format!("creating day partitions: {e}");
                if e.is_transient() {
                    SinkError::Transient(message)
                } else {
                    SinkError::Definite(message)
                }
            })?;
        self.insert_splitting(&mut conn, rows).await?;
        self.rejects.batch_done();
        Ok(())
    }
}

impl BatchWriter for MysqlWriter {
    type Row = Row;

    async fn write(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let (limit, n, table) = (self.timeout, rows.len(), self.table.clone());
        let what = move || format!("writing {n} rows into MySQL table `{table}`");
        within(limit, "mysql.write_timeout_ms", what, self.write_now(rows)).await
    }

    fn row_size(row: &Row) -> usize {
        // Fixed columns plus the texts; close enough for a byte limit on the statement.
        160 + row.pboxid.len()
            + row
                .texts()
                .iter()
                .map(|s| s.as_ref().map_or(4, |s| s.len() + 2))
                .sum::<usize>()
    }

    fn kafka_ts_ms(row: &Row) -> Option<i64> {
        row.kafka_ts_ms
    }
}
