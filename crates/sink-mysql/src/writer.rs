//! The MySQL [`BatchWriter`]: day partitions first, then the rows, by `LOAD DATA LOCAL INFILE
//! ... IGNORE` ([`crate::load_data`]) or one multi-row idempotent INSERT, on one or several
//! connections at once.
//!
//! # Several connections
//!
//! With `mysql.connections_per_worker = k`, a batch is cut into up to `k` parts of at least
//! [`MIN_PART_ROWS`] rows, each written on its own connection at the same time, and the write
//! returns (the batch is acknowledged) only when every part is durable. The sink operator's
//! contract is unchanged: batches are still written one after the other, in order, and a
//! time's capability is released only after all its rows are stored. Within a batch the order
//! of rows never mattered: every row has its own key (a repeated key is the same Kafka record,
//! with the same values), and the first write of a key is kept whichever part lands first.
//! A failed part fails the whole batch (the other parts are abandoned), and the retry writes
//! every part again, which changes nothing for the rows already stored.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use iotflow_config::MysqlWriteMethod;
use iotflow_sink::{within, BatchWriter, Bisection, RejectRecorder, SinkError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};

use crate::encoder::{days, encode_insert, validate_row};
use crate::load_data::{encode_tsv, is_local_infile_refused, load, load_statement, LoadOutcome};
use crate::partitions::PartitionManager;
use crate::retry::{classify, is_row_error};
use crate::Row;

/// Smallest part a batch is cut into for concurrent connections: below this the extra round
/// trips cost more than the parallel parse saves.
pub const MIN_PART_ROWS: usize = 250;

/// The row ranges of a batch of `rows` rows written on up to `connections` connections: as
/// many parts as `connections` allows with none under [`MIN_PART_ROWS`] (always at least one),
/// sizes differing by at most one row.
///
/// ```
/// use iotflow_sink_mysql::writer::parts;
/// assert_eq!(parts(2000, 2), vec![0..1000, 1000..2000]);
/// assert_eq!(parts(300, 4), vec![0..300]);
/// assert_eq!(parts(0, 3), vec![0..0]);
/// ```
pub fn parts(rows: usize, connections: usize) -> Vec<Range<usize>> {
    let k = connections.min(rows / MIN_PART_ROWS).max(1);
    let (base, extra) = (rows / k, rows % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// Work that follows every stored batch, in the same write: the batch is acknowledged (and its
/// offsets become committable) only once it is done, and a failure fails the write, which is
/// retried whole (the rows again, idempotently, then this again). The rollups use it.
pub trait AfterWrite: Send + 'static {
    /// Called with the rows of a batch the table now holds (those it refused are left out).
    fn after_write<'a>(
        &'a mut self,
        stored: &'a [Row],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send + 'a>>;
}

/// Writes batches of [`Row`]s into one table.
pub struct MysqlWriter {
    pool: Pool,
    table: String,
    partitions: PartitionManager,
    rejects: RejectRecorder,
    timeout: Duration,
    method: MysqlWriteMethod,
    connections: usize,
    load_sql: String,
    stats: WriteStats,
    after: Option<Box<dyn AfterWrite>>,
}

/// How a writer's parts were written so far (counts of parts, not rows): what the tests and the
/// log look at to tell the fast path from the fallbacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Loads committed (their warnings, if any, were all duplicate keys).
    pub loads_committed: u64,
    /// Loads rolled back for other warnings, then written by INSERT.
    pub loads_rolled_back: u64,
    /// Loads the server refused (`local_infile` off), then written by INSERT.
    pub loads_refused: u64,
    /// Parts written by INSERT (the method, or a fallback).
    pub parts_inserted: u64,
}

/// What one part of a batch came to.
#[derive(Default)]
struct PartDone {
    /// Rows the server refused (index in the batch, reason).
    refused: Vec<(usize, String)>,
    /// The server refused `LOAD DATA LOCAL`: its message (the part was written by INSERT).
    load_refused: Option<String>,
    /// The load was committed.
    loaded: bool,
    /// The load was rolled back (the part was written by INSERT).
    rolled_back: bool,
}

impl MysqlWriter {
    /// How long one write may take by default (the `mysql.write_timeout_ms` default).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A writer using connections from `pool`, writing with INSERT on one connection; each
    /// write may take [`MysqlWriter::DEFAULT_TIMEOUT`] (see [`MysqlWriter::with_timeout`]). A
    /// row the server refuses is a definite error unless [`MysqlWriter::with_rejects`] gives
    /// it somewhere to go. [`MysqlWriter::with_method`] and
    /// [`MysqlWriter::with_connections`] choose LOAD DATA and more connections.
    pub fn new(pool: Pool, table: &str) -> Self {
        MysqlWriter {
            pool,
            table: table.to_string(),
            partitions: PartitionManager::new(table),
            rejects: RejectRecorder::none("mysql"),
            timeout: Self::DEFAULT_TIMEOUT,
            method: MysqlWriteMethod::Insert,
            connections: 1,
            load_sql: load_statement(table),
            stats: WriteStats::default(),
            after: None,
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

    /// Writes with `method` (`mysql.write_method`). With
    /// [`MysqlWriteMethod::LoadData`] a part whose load has warnings other than duplicate keys
    /// is rolled back and written by INSERT (which names the bad row); a server refusing
    /// `LOAD DATA LOCAL` makes this writer log a warning once and use INSERT from then on.
    /// The pool's sessions should run [`crate::load_data::SESSION_MAX_ERROR_COUNT`] (the pool
    /// of [`crate::prepare`] does).
    pub fn with_method(mut self, method: MysqlWriteMethod) -> Self {
        self.method = method;
        self
    }

    /// Writes each batch on up to `connections` connections at once (see the module docs);
    /// 0 is taken as 1. The pool needs that many connections per writer.
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections.max(1);
        self
    }

    /// Runs `after` on every batch once its rows are stored ([`AfterWrite`]).
    pub fn with_after_write(mut self, after: Box<dyn AfterWrite>) -> Self {
        self.after = Some(after);
        self
    }

    /// The method this writer uses now (INSERT after the server refused LOAD DATA LOCAL).
    pub fn method(&self) -> MysqlWriteMethod {
        self.method
    }

    /// How the parts written so far were written.
    pub fn stats(&self) -> WriteStats {
        self.stats
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
        if rows.is_empty() {
            self.rejects.batch_done();
            return Ok(());
        }
        self.partitions
            .ensure_days(&mut conn, days(rows))
            .await
            .map_err(|e| e.into_sink_error("creating day partitions"))?;
        let load_sql = (self.method == MysqlWriteMethod::LoadData).then_some(&self.load_sql[..]);
        let (pool, table) = (&self.pool, &self.table[..]);
        let mut first = Some(conn);
        let mut refused = Vec::new();
        let done = futures_util::future::try_join_all(
            parts(rows.len(), self.connections)
                .into_iter()
                .map(|range| write_part(pool, first.take(), table, load_sql, rows, range)),
        )
        .await?;
        for part in done {
            if part.loaded {
                self.stats.loads_committed += 1;
            } else {
                self.stats.parts_inserted += 1;
            }
            self.stats.loads_rolled_back += u64::from(part.rolled_back);
            if let Some(reason) = part.load_refused {
                self.stats.loads_refused += 1;
                if self.method == MysqlWriteMethod::LoadData {
                    tracing::warn!(
                        table = %self.table,
                        "the server refused LOAD DATA LOCAL INFILE ({reason}); this writer uses \
                         INSERT from now on (set local_infile=ON on the server, or \
                         mysql.write_method = \"insert\")"
                    );
                    self.method = MysqlWriteMethod::Insert;
                }
            }
            for (i, reason) in part.refused {
                self.rejects
                    .reject(rows[i].rejected(&self.table, reason))
                    .await?;
                refused.push(i);
            }
        }
        self.rejects.batch_done();
        if let Some(after) = &mut self.after {
            if refused.is_empty() {
                after.after_write(rows).await?;
            } else {
                refused.sort_unstable();
                let stored: Vec<Row> = (0..rows.len())
                    .filter(|i| refused.binary_search(i).is_err())
                    .map(|i| rows[i].clone())
                    .collect();
                after.after_write(&stored).await?;
            }
        }
        Ok(())
    }
}

/// Writes `rows[range]` on `conn` (or a new connection of `pool`): by `load_sql` when given,
/// falling back to INSERT when the load is rolled back or refused.
async fn write_part(
    pool: &Pool,
    conn: Option<Conn>,
    table: &str,
    load_sql: Option<&str>,
    rows: &[Row],
    range: Range<usize>,
) -> Result<PartDone, SinkError> {
    let mut conn = match conn {
        Some(conn) => conn,
        None => pool
            .get_conn()
            .await
            .map_err(|e| classify("connecting to MySQL", &e))?,
    };
    let part = &rows[range.clone()];
    let mut done = PartDone::default();
    if let Some(statement) = load_sql {
        let mut data = Vec::new();
        encode_tsv(part, &mut data);
        match load(&mut conn, statement, Bytes::from(data), part.len()).await {
            Ok(LoadOutcome::Committed { .. }) => {
                done.loaded = true;
                return Ok(done);
            }
            Ok(LoadOutcome::RolledBack { warnings, first }) => {
                done.rolled_back = true;
                tracing::debug!(
                    %table,
                    warnings,
                    ?first,
                    "LOAD DATA had warnings other than duplicate keys; rolled back, writing the rows by INSERT"
                );
            }
            Err(e) if is_local_infile_refused(&e) => done.load_refused = Some(e.to_string()),
            Err(e) => {
                return Err(classify(
                    &format!("loading {} rows into `{table}`", part.len()),
                    &e,
                ))
            }
        }
    }
    done.refused = insert_splitting(&mut conn, table, part).await?;
    for (i, _) in &mut done.refused {
        *i += range.start;
    }
    Ok(done)
}

/// Inserts `rows`, splitting around the rows the server refuses; returns those (index in
/// `rows`, the server's reason).
async fn insert_splitting(
    conn: &mut Conn,
    table: &str,
    rows: &[Row],
) -> Result<Vec<(usize, String)>, SinkError> {
    let mut refused = Vec::new();
    let mut sql = String::new();
    let mut split = Bisection::new(rows.len());
    while let Some(range) = split.next_range() {
        sql.clear();
        encode_insert(table, &rows[range.clone()], &mut sql);
        match conn.query_drop(&sql).await {
            Ok(()) => {}
            Err(e) if is_row_error(&e) => {
                if let Some(i) = split.refused(range) {
                    refused.push((i, e.to_string()));
                }
            }
            Err(e) => {
                return Err(classify(
                    &format!("inserting {} rows into `{table}`", range.len()),
                    &e,
                ))
            }
        }
    }
    Ok(refused)
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
