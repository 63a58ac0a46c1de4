//! The partition manager: runs the plan on the server, serialized by a named lock.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use mysql_async::prelude::Queryable;

use super::errors::{is_layout_conflict, PartitionError};
use super::planner::{
    apply, exact_days, plan_all, PartitionBound, Reorganize, FIRST_PARTITIONABLE_DAY,
    LAST_PARTITIONABLE_DAY,
};
use super::schema::read_partitions;

/// Name of the server-side lock that serializes layout changes of `database.table`.
///
/// MySQL limits lock names to 64 characters: longer names are replaced by a stable hash.
pub fn lock_name(database: &str, table: &str) -> String {
    let name = format!("iotflow:partitions:{database}.{table}");
    if name.chars().count() <= 64 {
        return name;
    }
    // FNV-1a: stable across processes, builds and Rust versions, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("iotflow:partitions:{hash:016x}")
}

/// Keeps one table's day partitions ahead of the rows written to it.
///
/// One manager per worker (each with its own connection) is the intended use; managers in any
/// number of workers and processes coordinate through a named lock on the server. The manager
/// caches the days it has seen with their own partition, so for a running stream
/// [`ensure_days`](Self::ensure_days) is a set lookup except when a new day starts. The cache is
/// dropped every [`with_cache_ttl`](Self::with_cache_ttl) (5 minutes by default) so that days an
/// operator dropped are noticed again; call [`forget`](Self::forget) to drop it at once.
#[derive(Debug)]
pub struct PartitionManager {
    table: String,
    column: String,
    database: Option<String>,
    known: BTreeSet<NaiveDate>,
    refreshed_at: Option<Instant>,
    cache_ttl: Duration,
    lock_timeout: Duration,
    ddl_lock_wait_timeout: Duration,
    max_attempts: u32,
    partitions_created: u64,
}

impl PartitionManager {
    /// Default time to wait for the named lock (`GET_LOCK(..., 30)`).
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `lock_wait_timeout` for the manager's `ALTER TABLE` statements.
    pub const DEFAULT_DDL_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default lifetime of the cache of known days.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
    /// Attempts at reorganizing when the layout changes under the manager.
    pub const MAX_ATTEMPTS: u32 = 5;

    /// A manager for `table` (a plain table name) in the connection's current database.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            column: "event_time".into(),
            database: None,
            known: BTreeSet::new(),
            refreshed_at: None,
            cache_ttl: Self::DEFAULT_CACHE_TTL,
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
            ddl_lock_wait_timeout: Self::DEFAULT_DDL_LOCK_WAIT_TIMEOUT,
            max_attempts: Self::MAX_ATTEMPTS,
            partitions_created: 0,
        }
    }

    /// How long to wait for the named lock before giving up with a transient error
    /// (whole seconds, rounded up).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// `lock_wait_timeout` for the `ALTER TABLE` statements (whole seconds, rounded up, at least
    /// one): how long an `ALTER` may wait for queries on the table to finish.
    pub fn with_ddl_lock_wait_timeout(mut self, timeout: Duration) -> Self {
        self.ddl_lock_wait_timeout = timeout;
        self
    }

    /// How long the cache of known days is trusted before the layout is read again.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The table is partitioned by `column` (default `event_time`), a DATETIME or DATE column.
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.column = column.into();
        self
    }

    /// The managed table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Days currently known to have their own partition.
    pub fn known_days(&self) -> &BTreeSet<NaiveDate> {
        &self.known
    }

    /// Number of day partitions this manager has created. Usually one per `ALTER TABLE`; two
    /// when splitting a two-day range leaves both halves exactly one day long.
    pub fn partitions_created(&self) -> u64 {
        self.partitions_created
    }

    /// Drop the cache of known days, e.g. after partitions were dropped by hand.
    pub fn forget(&mut self) {
        self.known.clear();
        self.refreshed_at = None;
    }

    /// Make sure each of `days` has its own partition, creating the missing ones.
    ///
    /// Cheap when all days are cached. Otherwise reads the layout; if days are still missing,
    /// takes the named lock, re-reads the layout, runs one `ALTER TABLE` per missing day,
    /// verifies the result and releases the lock. Must not be called inside a transaction.
    ///
    /// The named lock and the lowered `lock_wait_timeout` belong to the session. If this future
    /// is dropped half-way, they stay with the connection until it is closed or reset; a
    /// `mysql_async::Pool` resets connections that are returned to it (its default
    /// `reset_connection`), which releases both.
    pub async fn ensure_days(
        &mut self,
        conn: &mut mysql_async::Conn,
        days: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<(), PartitionError> {
        if self
            .refreshed_at
            .is_some_and(|at| at.elapsed() > self.cache_ttl)
        {
            self.forget();
        }
        let missing: BTreeSet<NaiveDate> = days
            .into_iter()
            .filter(|day| !self.known.contains(day))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(&day) = missing
            .iter()
            .find(|day| !(FIRST_PARTITIONABLE_DAY..=LAST_PARTITIONABLE_DAY).contains(*day))
        {
            return Err(PartitionError::DayOutOfRange(day));
        }

        let database = self.current_database(conn).await?;
        // Another worker may have created them already: check without the lock first.
        let layout = read_partitions(conn, &database, &self.table, &self.column).await?;
        self.refresh(&layout);
        if missing.is_subset(&self.known) {
            return Ok(());
        }

        let lock = lock_name(&database, &self.table);
        self.acquire_lock(conn, &lock).await?;
        let result = self.ensure_locked(conn, &database, &missing).await;
        let released = self.release_lock(conn, &lock).await;
        result.and(released)
    }

    fn refresh(&mut self, layout: &[PartitionBound]) {
        self.known = exact_days(layout);
        self.refreshed_at = Some(Instant::now());
    }

    fn mysql_error(
        &self,
        what: impl Into<String>,
    ) -> impl FnOnce(mysql_async::Error) -> PartitionError {
        let table = self.table.clone();
        let what = what.into();
        move |source| PartitionError::Mysql {
            table,
            what,
            source,
        }
    }

    async fn current_database(
        &mut self,
        conn: &mut mysql_async::Conn,
    ) -> Result<String, PartitionError> {
        let database: Option<String> = conn
            .query_first("SELECT DATABASE()")
            .await
            .map_err(self.mysql_error("SELECT DATABASE()"))?
            .flatten();
        let database = database.ok_or(PartitionError::NoDatabase)?;
        if self.database.as_deref() != Some(database.as_str()) {
            self.known.clear();
            self.database = Some(database.clone());
        }
        Ok(database)
    }

    async fn acquire_lock(
        &self,
        conn: &mut mysql_async::Conn,
        lock: &str,
    ) -> Result<(), PartitionError> {
        let seconds = whole_seconds(self.lock_timeout);
        let started = Instant::now();
        let acquired: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, ?)", (lock, seconds))
            .await
            .map_err(self.mysql_error(format!("GET_LOCK({lock:?})")))?;
        match acquired.flatten() {
            Some(1) => Ok(()),
            Some(_) => Err(PartitionError::LockTimeout {
                lock: lock.to_owned(),
                waited: started.elapsed(),
            }),
            None => Err(PartitionError::LockFailed {
                lock: lock.to_owned(),
            }),
        }
    }

    async fn release_lock(
        &self,
        conn: &mut mysql_async::Conn,
        lock: &str,
    ) -> Result<(), PartitionError> {
        let released: Option<Option<i64>> = conn
            .exec_first("SELECT RELEASE_LOCK(?)", (lock,))
            .await
            .map_err(self.mysql_error(format!("RELEASE_LOCK({lock:?})")))?;
        if released.flatten() != Some(1) {
            tracing::warn!(
                lock,
                "the partition lock was not held by this session at release"
            );
        }
        Ok(())
    }

    /// The work done under the named lock.
    async fn ensure_locked(
        &mut self,
        conn: &mut mysql_async::Conn,
        database: &str,
        missing: &BTreeSet<NaiveDate>,
    ) -> Result<(), PartitionError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let layout = read_partitions(conn, database, &self.table, &self.column).await?;
            let changes = plan_all(&layout, missing.iter().copied());
            let failure = match self.run_alters(conn, &layout, &changes).await {
                Ok(()) => {
                    let layout = read_partitions(conn, database, &self.table, &self.column).await?;
                    self.refresh(&layout);
                    match missing.difference(&self.known).next() {
                        None => return Ok(()),
                        Some(&day) => (
                            day,
                            format!(
                                "day {day} still has no partition of its own after the changes"
                            ),
                        ),
                    }
                }
                Err((statement, source)) if is_layout_conflict(&source) => {
                    let day = missing
                        .iter()
                        .copied()
                        .find(|day| !self.known.contains(day))
                        .unwrap_or(*missing.first().expect("missing is not empty"));
                    (day, format!("{statement}: {source}"))
                }
                Err((statement, source)) => {
                    return Err(PartitionError::Mysql {
                        table: self.table.clone(),
                        what: statement,
                        source,
                    })
                }
            };
            if attempt >= self.max_attempts {
                return Err(PartitionError::LayoutKeptChanging {
                    table: self.table.clone(),
                    day: failure.0,
                    attempts: attempt,
                    last: failure.1,
                });
            }
            tracing::warn!(
                table = %self.table,
                attempt,
                last = %failure.1,
                "partition layout changed under the manager; reading it again"
            );
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
    }

    /// Run `changes` (planned on `layout`) with the session's `lock_wait_timeout` lowered,
    /// restoring it afterwards. On failure returns the failed statement and its error.
    async fn run_alters(
        &mut self,
        conn: &mut mysql_async::Conn,
        layout: &[PartitionBound],
        changes: &[Reorganize],
    ) -> Result<(), (String, mysql_async::Error)> {
        if changes.is_empty() {
            return Ok(());
        }
        let set = format!(
            "SET @iotflow_saved_lock_wait_timeout = @@SESSION.lock_wait_timeout, \
             SESSION lock_wait_timeout = {}",
            whole_seconds(self.ddl_lock_wait_timeout).max(1)
        );
        conn.query_drop(&set).await.map_err(|e| (set, e))?;
        let mut result = Ok(());
        let mut layout = layout.to_vec();
        for change in changes {
            let statement = change.to_sql(&self.table);
            let started = Instant::now();
            if let Err(e) = conn.query_drop(&statement).await {
                result = Err((statement, e));
                break;
            }
            // Usually one new day partition; two when a two-day gap is split.
            let before = exact_days(&layout);
            layout = apply(&layout, change);
            let created = exact_days(&layout).difference(&before).count();
            self.partitions_created += created as u64;
            tracing::info!(
                table = %self.table,
                statement = %statement,
                created,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "created day partitions"
            );
        }
        let restore = "SET SESSION lock_wait_timeout = @iotflow_saved_lock_wait_timeout";
        let restored = conn.query_drop(restore).await;
        result?;
        restored.map_err(|e| (restore.to_owned(), e))
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_fit_in_64_characters() {
        assert_eq!(
            lock_name("iotflow", "iot_data"),
            "iotflow:partitions:iotflow.iot_data"
        );
        let long = lock_name(&"d".repeat(64), "iot_data");
        assert!(long.len() <= 64);
        assert_eq!(long, lock_name(&"d".repeat(64), "iot_data"));
        assert_ne!(long, lock_name(&"e".repeat(64), "iot_data"));
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }
}
