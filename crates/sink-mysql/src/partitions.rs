//! Day partitions of the `iot_data` table, created on demand before a batch is written.
//!
//! # The rule
//!
//! The table is `PARTITION BY RANGE COLUMNS(event_time)`. Before a batch is written, every day the
//! batch touches must have its own partition `pYYYYMMDD` covering exactly `[day, day + 1)`, so that
//! dropping old data is `ALTER TABLE iot_data DROP PARTITION p20250410` and queries for one day
//! read one partition. Rows never sit in `pmax` or in any other partition for a day that has
//! (or should have) its own.
//!
//! # Any layout a human made
//!
//! The table may start with the single `pmax` partition of `schemas/mysql/iot_data.sql`, or with a
//! layout written by hand, e.g.
//!
//! ```text
//! p20250410 VALUES LESS THAN ('2025-04-11')    -- actually covers everything before 04-11
//! p20250411 VALUES LESS THAN ('2025-04-12')
//! p20250415 VALUES LESS THAN ('2025-04-16')    -- covers 04-12 to 04-15: a multi-day gap
//! pmax      VALUES LESS THAN (MAXVALUE)
//! ```
//!
//! Range partitions are defined by their upper bounds only: each one starts where the previous one
//! ends, and the first one has no lower bound. [`plan`] finds the partition(s) whose range
//! contains the day and splits them with `REORGANIZE PARTITION` into up to three pieces: the part
//! before the day, the day itself, and the part after it. Pieces are named
//!
//! * `pYYYYMMDD` when they cover exactly one day,
//! * `pmax` when they end at `MAXVALUE`,
//! * `pmin` when they have no lower bound (the first partition),
//! * `pgapYYYYMMDD` (named for their first day) for any other multi-day range,
//!
//! with a `_2`, `_3`, ... suffix when the name is already used by a partition that stays.
//!
//! The pieces around the day normally hold no rows, because every row the sink writes goes into a
//! day partition; reorganizing them is therefore cheap. When a human-made multi-day partition does
//! hold rows, `REORGANIZE PARTITION` moves each row into the piece that covers it (the integration
//! tests check this), at the cost of copying that partition once.
//!
//! Bounds that are not midnight (`'2025-04-13 12:00:00'`) are handled too: a day that straddles two
//! partitions is carved out of both in one statement. A table without a `MAXVALUE` partition is
//! extended: a day past the last bound becomes a new last partition.
//!
//! # Concurrency
//!
//! Every worker of every process runs its own [`PartitionManager`]. Changes are serialized with a
//! server-side named lock, `GET_LOCK('iotflow:partitions:<db>.<table>', 30)`, held only while the
//! layout is re-read and the missing partitions are created; days already known to have their
//! partition cost nothing, and days another worker just created are found by a lock-free read.
//! Humans do not take that lock: if a `REORGANIZE` fails because the layout changed under it, the
//! manager re-reads the layout and tries again a few times.
//!
//! `ALTER TABLE` waits for a metadata lock on the table and, while it waits, blocks every insert
//! queued behind it. The manager therefore lowers the session's `lock_wait_timeout` around its
//! `ALTER`s (30 s by default), so a long-running query on the table makes the change fail with a
//! transient error instead of stalling the pipeline indefinitely.
//!
//! DDL commits any open transaction: call [`PartitionManager::ensure_days`] outside a transaction.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use mysql_async::prelude::Queryable;

use crate::encoder::quote_identifier;

/// First day that can have a partition: `DATETIME` starts at year 1000.
pub const FIRST_PARTITIONABLE_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1000, 1, 1) {
    Some(day) => day,
    None => panic!("valid date"),
};

/// Last day that can have a partition: its upper bound, the next midnight, must still be a
/// `DATETIME` (which ends at year 9999).
pub const LAST_PARTITIONABLE_DAY: NaiveDate = match NaiveDate::from_ymd_opt(9999, 12, 30) {
    Some(day) => day,
    None => panic!("valid date"),
};

/// Upper bound of a range partition: its `VALUES LESS THAN (...)`.
///
/// Ordered so that every datetime bound sorts before `MAXVALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpperBound {
    /// `VALUES LESS THAN ('...')`: the partition holds rows strictly before this time.
    Before(NaiveDateTime),
    /// `VALUES LESS THAN (MAXVALUE)`: the partition is unbounded above.
    MaxValue,
}

impl UpperBound {
    /// Parse `information_schema.PARTITIONS.PARTITION_DESCRIPTION` of a `RANGE COLUMNS` partition
    /// on a `DATETIME` column: `MAXVALUE` or a quoted literal as the table was created with, such
    /// as `'2025-04-11'`, `'2025-04-11 00:00:00'` or `'2025-04-11 00:00:00.000'`.
    pub fn parse(description: &str) -> Option<Self> {
        let description = description.trim();
        if description.eq_ignore_ascii_case("MAXVALUE") {
            return Some(Self::MaxValue);
        }
        let literal = description.strip_prefix('\'')?.strip_suffix('\'')?;
        if let Ok(at) = NaiveDateTime::parse_from_str(literal, "%Y-%m-%d %H:%M:%S%.f") {
            return Some(Self::Before(at));
        }
        if let Ok(day) = NaiveDate::parse_from_str(literal, "%Y-%m-%d") {
            return Some(Self::Before(day.and_time(NaiveTime::MIN)));
        }
        None
    }

    /// Append the bound as it goes inside `VALUES LESS THAN (...)`.
    fn push_sql(&self, out: &mut String) {
        match self {
            Self::MaxValue => out.push_str("MAXVALUE"),
            Self::Before(at) => {
                out.push('\'');
                out.push_str(&at.format("%Y-%m-%d %H:%M:%S%.f").to_string());
                out.push('\'');
            }
        }
    }
}

/// One partition of the table: its name and upper bound. A layout is a slice of these in
/// partition order, with strictly increasing bounds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionBound {
    /// Partition name, e.g. `p20250410`.
    pub name: String,
    /// Its `VALUES LESS THAN`.
    pub less_than: UpperBound,
}

impl PartitionBound {
    /// A partition called `name` holding rows before `less_than`.
    pub fn new(name: impl Into<String>, less_than: UpperBound) -> Self {
        Self {
            name: name.into(),
            less_than,
        }
    }
}

/// One `ALTER TABLE` that gives a day its own partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorganize {
    /// The consecutive existing partitions that are replaced. Empty when the table has no
    /// `MAXVALUE` partition and the day lies past its last bound: the new partitions are then
    /// appended with `ADD PARTITION`.
    pub from: Vec<String>,
    /// The partitions that replace them (or are appended), in order. They cover exactly the
    /// range of `from`, except that the last partition of the table may be extended.
    pub into: Vec<PartitionBound>,
}

impl Reorganize {
    /// The `ALTER TABLE` statement for `table` (a plain table name, quoted here).
    pub fn to_sql(&self, table: &str) -> String {
        let mut sql = String::with_capacity(128 + 64 * self.into.len());
        sql.push_str("ALTER TABLE ");
        quote_identifier(table, &mut sql);
        if self.from.is_empty() {
            sql.push_str(" ADD PARTITION (");
        } else {
            sql.push_str(" REORGANIZE PARTITION ");
            for (i, name) in self.from.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                quote_identifier(name, &mut sql);
            }
            sql.push_str(" INTO (");
        }
        for (i, piece) in self.into.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("PARTITION ");
            quote_identifier(&piece.name, &mut sql);
            sql.push_str(" VALUES LESS THAN (");
            piece.less_than.push_sql(&mut sql);
            sql.push(')');
        }
        sql.push(')');
        sql
    }
}

fn midnight(day: NaiveDate) -> NaiveDateTime {
    day.and_time(NaiveTime::MIN)
}

/// Lower bound of partition `i` of a layout (`None`: unbounded below).
fn lower_bound(layout: &[PartitionBound], i: usize) -> Option<NaiveDateTime> {
    match i.checked_sub(1).map(|prev| layout[prev].less_than) {
        None => None,
        Some(UpperBound::Before(at)) => Some(at),
        // Only the last partition may be MAXVALUE, so nothing follows it in a valid layout.
        Some(UpperBound::MaxValue) => Some(NaiveDateTime::MAX),
    }
}

/// The day whose exact range `[lower, upper)` is, if it is exactly one day.
fn exact_day(lower: Option<NaiveDateTime>, upper: UpperBound) -> Option<NaiveDate> {
    let lower = lower?;
    let UpperBound::Before(upper) = upper else {
        return None;
    };
    let day = lower.date();
    (lower == midnight(day) && Some(upper) == day.succ_opt().map(midnight)).then_some(day)
}

/// The days that already have their own partition in `layout`.
pub fn exact_days(layout: &[PartitionBound]) -> BTreeSet<NaiveDate> {
    (0..layout.len())
        .filter_map(|i| exact_day(lower_bound(layout, i), layout[i].less_than))
        .collect()
}

/// Check that `layout` is something [`plan`] can work on: at least one partition, strictly
/// increasing bounds, `MAXVALUE` only last, and unique names (case-insensitively, as the server
/// compares them).
pub fn validate_layout(layout: &[PartitionBound]) -> Result<(), String> {
    if layout.is_empty() {
        return Err("the table has no partitions".into());
    }
    for pair in layout.windows(2) {
        if pair[0].less_than >= pair[1].less_than {
            return Err(format!(
                "partition bounds are not increasing: {} then {}",
                pair[0].name, pair[1].name
            ));
        }
    }
    let mut names = BTreeSet::new();
    for partition in layout {
        if !names.insert(partition.name.to_ascii_lowercase()) {
            return Err(format!("duplicate partition name {}", partition.name));
        }
    }
    Ok(())
}

/// Name for a new partition covering `[lower, upper)` (see the module docs).
fn piece_name(lower: Option<NaiveDateTime>, upper: UpperBound) -> String {
    match (lower, upper) {
        (None, _) => "pmin".to_owned(),
        (Some(_), UpperBound::MaxValue) => "pmax".to_owned(),
        (Some(lower), upper) => match exact_day(Some(lower), upper) {
            Some(day) => format!("p{}", day.format("%Y%m%d")),
            None => format!("pgap{}", lower.date().format("%Y%m%d")),
        },
    }
}

/// `base`, or `base_2`, `base_3`, ... if taken; records the result as taken.
fn unique_name(base: String, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name.to_ascii_lowercase()) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(name.to_ascii_lowercase());
    name
}

/// Plan the `ALTER TABLE` that gives `day` its own partition `[day, day + 1)` in `existing`, or
/// `None` if it already has one.
///
/// `existing` is the table's layout in partition order, as [`read_partitions`] returns it (see
/// [`validate_layout`]). An empty layout, or a `day` past [`LAST_PARTITIONABLE_DAY`], yields
/// `None`: there is nothing this function can plan (the manager reports both as errors).
///
/// ```
/// use chrono::NaiveDate;
/// use iotflow_sink_mysql::partitions::{plan, PartitionBound, UpperBound};
///
/// let layout = [PartitionBound::new("pmax", UpperBound::MaxValue)];
/// let day = NaiveDate::from_ymd_opt(2025, 4, 10).unwrap();
/// let change = plan(&layout, day).unwrap();
/// assert_eq!(
///     change.to_sql("iot_data"),
///     "ALTER TABLE `iot_data` REORGANIZE PARTITION `pmax` INTO (\
///      PARTITION `pmin` VALUES LESS THAN ('2025-04-10 00:00:00'), \
///      PARTITION `p20250410` VALUES LESS THAN ('2025-04-11 00:00:00'), \
///      PARTITION `pmax` VALUES LESS THAN (MAXVALUE))"
/// );
/// ```
pub fn plan(existing: &[PartitionBound], day: NaiveDate) -> Option<Reorganize> {
    let start = midnight(day);
    let end = midnight(day.succ_opt()?);
    let last = existing.len().checked_sub(1)?;

    // Partitions whose range [lower, upper) overlaps [start, end): consecutive, since bounds
    // increase.
    let overlapping: Vec<usize> = (0..existing.len())
        .filter(|&i| {
            lower_bound(existing, i).is_none_or(|lower| lower < end)
                && existing[i].less_than > UpperBound::Before(start)
        })
        .collect();

    if let [only] = overlapping[..] {
        if exact_day(lower_bound(existing, only), existing[only].less_than) == Some(day) {
            return None;
        }
    }

    let (from, lower, upper) = match (overlapping.first(), overlapping.last()) {
        (Some(&first), Some(&last_overlapping)) => {
            let mut upper = existing[last_overlapping].less_than;
            // Only the last partition can end before the day ends (nothing follows it); a
            // REORGANIZE may extend the last partition's range.
            if last_overlapping == last && upper < UpperBound::Before(end) {
                upper = UpperBound::Before(end);
            }
            let from: Vec<String> = existing[first..=last_overlapping]
                .iter()
                .map(|p| p.name.clone())
                .collect();
            (from, lower_bound(existing, first), upper)
        }
        // The day lies at or past the last bound (so that bound is a datetime): append.
        _ => {
            let UpperBound::Before(table_end) = existing[last].less_than else {
                return None;
            };
            (Vec::new(), Some(table_end), UpperBound::Before(end))
        }
    };

    let mut taken: BTreeSet<String> = existing
        .iter()
        .filter(|p| !from.contains(&p.name))
        .map(|p| p.name.to_ascii_lowercase())
        .collect();
    let mut into = Vec::with_capacity(3);
    let mut push = |lower: Option<NaiveDateTime>, upper: UpperBound| {
        let name = unique_name(piece_name(lower, upper), &mut taken);
        into.push(PartitionBound::new(name, upper));
    };
    if lower.is_none_or(|lower| lower < start) {
        push(lower, UpperBound::Before(start));
    }
    push(Some(start), UpperBound::Before(end));
    if UpperBound::Before(end) < upper {
        push(Some(end), upper);
    }
    Some(Reorganize { from, into })
}

/// The layout after `change` has been applied to `existing`.
pub fn apply(existing: &[PartitionBound], change: &Reorganize) -> Vec<PartitionBound> {
    let mut layout = existing.to_vec();
    match change.from.first() {
        None => layout.extend(change.into.iter().cloned()),
        Some(first) => {
            let at = layout
                .iter()
                .position(|p| &p.name == first)
                .unwrap_or(layout.len());
            let end = (at + change.from.len()).min(layout.len());
            layout.splice(at..end, change.into.iter().cloned());
        }
    }
    layout
}

/// Plan the changes for several days, one `ALTER TABLE` per day that needs one, each planned on
/// the layout the previous ones leave.
pub fn plan_all(
    existing: &[PartitionBound],
    days: impl IntoIterator<Item = NaiveDate>,
) -> Vec<Reorganize> {
    let mut layout = existing.to_vec();
    let mut changes = Vec::new();
    for day in days {
        if let Some(change) = plan(&layout, day) {
            layout = apply(&layout, &change);
            changes.push(change);
        }
    }
    changes
}

/// Errors of the partition manager.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// A statement failed on the server or the connection.
    #[error("{what} for table `{table}` failed: {source}")]
    Mysql {
        /// Table being managed.
        table: String,
        /// What was being done (for ALTERs, the statement itself).
        what: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// Another worker or process held the partition lock for longer than the lock timeout.
    #[error("timed out after {waited:?} waiting for the named lock {lock:?}")]
    LockTimeout {
        /// Name of the lock.
        lock: String,
        /// How long the manager waited.
        waited: Duration,
    },
    /// `GET_LOCK` returned NULL (the session was killed or the server ran out of memory).
    #[error("GET_LOCK({lock:?}) failed")]
    LockFailed {
        /// Name of the lock.
        lock: String,
    },
    /// The connection has no current database.
    #[error("the connection has no current database: put one in the connection URL")]
    NoDatabase,
    /// The table does not exist.
    #[error("table `{database}`.`{table}` does not exist: apply schemas/mysql/iot_data.sql")]
    TableMissing {
        /// Database searched.
        database: String,
        /// Table name.
        table: String,
    },
    /// The table is not partitioned the way the manager expects.
    #[error(
        "table `{database}`.`{table}` must be PARTITION BY RANGE COLUMNS(event_time) with \
         datetime bounds: {detail}"
    )]
    UnexpectedLayout {
        /// Database of the table.
        database: String,
        /// Table name.
        table: String,
        /// What is wrong.
        detail: String,
    },
    /// A day whose partition bounds cannot be written as `DATETIME` values.
    #[error(
        "day {0} cannot have a partition: DATETIME bounds allow days from 1000-01-01 to 9999-12-30"
    )]
    DayOutOfRange(NaiveDate),
    /// The layout changed under every attempt to reorganize it, or the server kept rejecting
    /// the planned change. Not transient: retrying at once has already failed several times.
    #[error(
        "could not give day {day} its own partition in `{table}` after {attempts} attempts; \
         last failure: {last}"
    )]
    LayoutKeptChanging {
        /// Table name.
        table: String,
        /// A day that is still missing its partition.
        day: NaiveDate,
        /// Attempts made.
        attempts: u32,
        /// The last statement and its error, or what was found after it.
        last: String,
    },
}

impl PartitionError {
    /// Whether retrying later may succeed (`true`) or the job must stop (`false`).
    ///
    /// Lock timeouts, lost connections, deadlocks and the like are transient; missing privileges
    /// (MySQL errors 1142, 1044, 1045, 1227), a missing table, an unexpected layout and
    /// out-of-range days are definite.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Mysql { source, .. } => mysql_error_is_transient(source),
            Self::LockTimeout { .. } | Self::LockFailed { .. } => true,
            Self::NoDatabase
            | Self::TableMissing { .. }
            | Self::UnexpectedLayout { .. }
            | Self::DayOutOfRange(_)
            | Self::LayoutKeptChanging { .. } => false,
        }
    }
}

/// Server error codes that go away by themselves: retry later.
const TRANSIENT_SERVER_CODES: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1159, // ER_NET_READ_INTERRUPTED
    1161, // ER_NET_WRITE_INTERRUPTED
    1203, // ER_TOO_MANY_USER_CONNECTIONS: the user's max_user_connections is used up for now
    1205, // ER_LOCK_WAIT_TIMEOUT (also metadata locks, see lock_wait_timeout)
    1213, // ER_LOCK_DEADLOCK
    1226, // ER_USER_LIMIT_REACHED: an hourly max_queries/updates_per_hour limit, reset hourly
    1290, // ER_OPTION_PREVENTS_STATEMENT: --read-only while a replica is being promoted
    1317, // ER_QUERY_INTERRUPTED
    1836, // ER_READ_ONLY_MODE
    1927, // ER_CONNECTION_KILLED (MariaDB)
    1969, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time): the statement was cut, not refused
    2006, // CR_SERVER_GONE_ERROR
    2013, // CR_SERVER_LOST
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+): the server closed an idle connection
];

/// Server error codes meaning the layout was not what the plan assumed: re-read and re-plan.
const LAYOUT_CONFLICT_CODES: &[u16] = &[
    1146, // ER_NO_SUCH_TABLE (re-reading reports it clearly)
    1493, // ER_RANGE_NOT_INCREASING_ERROR
    1505, // ER_PARTITION_MGMT_ON_NONPARTITIONED
    1507, // ER_PARTITION_DOES_NOT_EXIST
    1516, // ER_REORG_PARTITION_NOT_EXIST
    1517, // ER_SAME_NAME_PARTITION
    1519, // ER_CONSECUTIVE_REORG_PARTITIONS
    1520, // ER_REORG_OUTSIDE_RANGE
    1735, // ER_UNKNOWN_PARTITION
];

/// Whether a mysql_async error is worth retrying later: lost connections (also one the server
/// closed for idling past `wait_timeout`), lock waits, deadlocks, server restarts, connection
/// and resource limits of the user. Privilege errors (1142, 1044, 1045, 1227), syntax errors, data errors and
/// anything unknown are definite.
pub fn mysql_error_is_transient(error: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, Error};
    match error {
        Error::Io(_) => true,
        Error::Server(server) => TRANSIENT_SERVER_CODES.contains(&server.code),
        Error::Driver(driver) => matches!(
            driver,
            DriverError::ConnectionClosed
                | DriverError::PacketOutOfOrder
                | DriverError::UnexpectedPacket { .. }
                | DriverError::BadCompressedPacketHeader
        ),
        Error::Other(_) | Error::Url(_) => false,
    }
}

fn is_layout_conflict(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(server) if LAYOUT_CONFLICT_CODES.contains(&server.code))
}

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

/// Read the layout of `database.table` from `information_schema.PARTITIONS`, in partition order,
/// and check that it is one [`plan`] can work on.
pub async fn read_partitions(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
) -> Result<Vec<PartitionBound>, PartitionError> {
    type PartitionRow = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<PartitionRow> = conn
        .exec(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION, PARTITION_METHOD, \
             PARTITION_EXPRESSION, SUBPARTITION_NAME \
             FROM information_schema.PARTITIONS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(|source| PartitionError::Mysql {
            table: table.to_owned(),
            what: "reading information_schema.PARTITIONS".to_owned(),
            source,
        })?;
    let unexpected = |detail: String| PartitionError::UnexpectedLayout {
        database: database.to_owned(),
        table: table.to_owned(),
        detail,
    };
    if rows.is_empty() {
        return Err(PartitionError::TableMissing {
            database: database.to_owned(),
            table: table.to_owned(),
        });
    }
    let mut layout = Vec::with_capacity(rows.len());
    for (name, description, method, expression, subpartition) in rows {
        let Some(name) = name else {
            return Err(unexpected("the table is not partitioned".into()));
        };
        if method.as_deref() != Some("RANGE COLUMNS") {
            return Err(unexpected(format!(
                "it is partitioned by {}",
                method.as_deref().unwrap_or("?")
            )));
        }
        let column = expression.as_deref().unwrap_or("").trim().trim_matches('`');
        if !column.eq_ignore_ascii_case("event_time") {
            return Err(unexpected(format!("it is partitioned on {column}")));
        }
        if subpartition.is_some() {
            return Err(unexpected("it has subpartitions".into()));
        }
        let description = description.unwrap_or_default();
        let Some(less_than) = UpperBound::parse(&description) else {
            return Err(unexpected(format!(
                "cannot read the bound {description} of partition {name}"
            )));
        };
        layout.push(PartitionBound { name, less_than });
    }
    validate_layout(&layout).map_err(unexpected)?;
    Ok(layout)
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
        let layout = read_partitions(conn, &database, &self.table).await?;
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
            let layout = read_partitions(conn, database, &self.table).await?;
            let changes = plan_all(&layout, missing.iter().copied());
            let failure = match self.run_alters(conn, &layout, &changes).await {
                Ok(()) => {
                    let layout = read_partitions(conn, database, &self.table).await?;
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

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn before(y: i32, m: u32, d: u32) -> UpperBound {
        UpperBound::Before(midnight(day(y, m, d)))
    }

    fn p(name: &str, less_than: UpperBound) -> PartitionBound {
        PartitionBound::new(name, less_than)
    }

    /// The layout from the article: consecutive days, then pmax.
    fn article() -> Vec<PartitionBound> {
        vec![
            p("p20250410", before(2025, 4, 11)),
            p("p20250411", before(2025, 4, 12)),
            p("p20250412", before(2025, 4, 13)),
            p("pmax", UpperBound::MaxValue),
        ]
    }

    fn names(pieces: &[PartitionBound]) -> Vec<&str> {
        pieces.iter().map(|p| p.name.as_str()).collect()
    }

    /// Apply the plan for `d` and check the day then has its own partition named `pYYYYMMDD`,
    /// the layout stays valid and planning again is a no-op.
    fn apply_and_check(layout: &[PartitionBound], d: NaiveDate) -> Vec<PartitionBound> {
        let change = plan(layout, d).expect("a change");
        let after = apply(layout, &change);
        validate_layout(&after).unwrap();
        assert!(exact_days(&after).contains(&d));
        assert!(plan(&after, d).is_none());
        after
    }

    #[test]
    fn only_pmax_splits_into_pmin_day_pmax() {
        let layout = [p("pmax", UpperBound::MaxValue)];
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(change.from, ["pmax"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 10)),
                p("p20250410", before(2025, 4, 11)),
                p("pmax", UpperBound::MaxValue),
            ]
        );
        apply_and_check(&layout, day(2025, 4, 10));
    }

    #[test]
    fn article_layout_days_are_present_except_the_unbounded_first_one() {
        let layout = article();
        assert_eq!(plan(&layout, day(2025, 4, 11)), None);
        assert_eq!(plan(&layout, day(2025, 4, 12)), None);
        assert_eq!(
            exact_days(&layout),
            [day(2025, 4, 11), day(2025, 4, 12)].into()
        );
        // p20250410 really covers everything before 04-11: it must lose its open lower end.
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(change.from, ["p20250410"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 10)),
                p("p20250410", before(2025, 4, 11))
            ]
        );
        apply_and_check(&layout, day(2025, 4, 10));
    }

    #[test]
    fn day_right_after_the_last_day_partition_is_cut_from_pmax() {
        let layout = article();
        let change = plan(&layout, day(2025, 4, 13)).unwrap();
        assert_eq!(change.from, ["pmax"]);
        assert_eq!(
            change.into,
            [
                p("p20250413", before(2025, 4, 14)),
                p("pmax", UpperBound::MaxValue)
            ]
        );
        assert_eq!(
            change.to_sql("iot_data"),
            "ALTER TABLE `iot_data` REORGANIZE PARTITION `pmax` INTO (\
             PARTITION `p20250413` VALUES LESS THAN ('2025-04-14 00:00:00'), \
             PARTITION `pmax` VALUES LESS THAN (MAXVALUE))"
        );
        apply_and_check(&layout, day(2025, 4, 13));
    }

    #[test]
    fn day_far_after_the_last_day_partition_leaves_a_gap_before_it() {
        let layout = article();
        let change = plan(&layout, day(2025, 5, 1)).unwrap();
        assert_eq!(change.from, ["pmax"]);
        assert_eq!(
            change.into,
            [
                p("pgap20250413", before(2025, 5, 1)),
                p("p20250501", before(2025, 5, 2)),
                p("pmax", UpperBound::MaxValue),
            ]
        );
        apply_and_check(&layout, day(2025, 5, 1));
    }

    #[test]
    fn day_before_the_first_partition_splits_the_first_partition() {
        let layout = article();
        let change = plan(&layout, day(2025, 4, 1)).unwrap();
        assert_eq!(change.from, ["p20250410"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 1)),
                p("p20250401", before(2025, 4, 2)),
                p("pgap20250402", before(2025, 4, 11)),
            ]
        );
        // [04-02, 04-11) is not one day, so it is a gap (04-10 gets its own when needed).
        let after = apply_and_check(&layout, day(2025, 4, 1));
        let after = apply_and_check(&after, day(2025, 4, 10));
        assert_eq!(
            names(&after),
            [
                "pmin",
                "p20250401",
                "pgap20250402",
                "p20250410",
                "p20250411",
                "p20250412",
                "pmax"
            ]
        );
    }

    #[test]
    fn day_the_day_before_the_first_partition() {
        let layout = [
            p("p20250410", before(2025, 4, 11)),
            p("pmax", UpperBound::MaxValue),
        ];
        let after = apply_and_check(&layout, day(2025, 4, 9));
        assert_eq!(
            after,
            [
                p("pmin", before(2025, 4, 9)),
                p("p20250409", before(2025, 4, 10)),
                // [04-10, 04-11): exactly one day, so it keeps its day name.
                p("p20250410", before(2025, 4, 11)),
                p("pmax", UpperBound::MaxValue),
            ]
        );
        assert_eq!(
            exact_days(&after),
            [day(2025, 4, 9), day(2025, 4, 10)].into()
        );
    }

    #[test]
    fn day_in_a_gap_between_days_splits_the_gap() {
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("p20250410", before(2025, 4, 11)),
            p("p20250415", before(2025, 4, 16)), // a human's [04-11, 04-16)
            p("pmax", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 13)).unwrap();
        assert_eq!(change.from, ["p20250415"]);
        assert_eq!(
            change.into,
            [
                p("pgap20250411", before(2025, 4, 13)),
                p("p20250413", before(2025, 4, 14)),
                p("pgap20250414", before(2025, 4, 16)),
            ]
        );
        // First and last day of the gap: no empty pieces.
        let change = plan(&layout, day(2025, 4, 11)).unwrap();
        assert_eq!(
            change.into,
            [
                p("p20250411", before(2025, 4, 12)),
                p("pgap20250412", before(2025, 4, 16))
            ]
        );
        let change = plan(&layout, day(2025, 4, 15)).unwrap();
        assert_eq!(
            change.into,
            [
                p("pgap20250411", before(2025, 4, 15)),
                p("p20250415", before(2025, 4, 16))
            ]
        );
        // A gap of two days splits into two day partitions.
        let after = apply_and_check(&layout, day(2025, 4, 13));
        let change = plan(&after, day(2025, 4, 12)).unwrap();
        assert_eq!(change.from, ["pgap20250411"]);
        assert_eq!(
            change.into,
            [
                p("p20250411", before(2025, 4, 12)),
                p("p20250412", before(2025, 4, 13))
            ]
        );
    }

    #[test]
    fn day_already_present_needs_nothing() {
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("p20250410", before(2025, 4, 11)),
            p("pmax", UpperBound::MaxValue),
        ];
        assert_eq!(plan(&layout, day(2025, 4, 10)), None);
        // The name does not matter, the range does.
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("today", before(2025, 4, 11)),
        ];
        assert_eq!(plan(&layout, day(2025, 4, 10)), None);
    }

    #[test]
    fn maxvalue_bounds_are_parsed_and_kept_last() {
        assert_eq!(UpperBound::parse("MAXVALUE"), Some(UpperBound::MaxValue));
        assert_eq!(UpperBound::parse("maxvalue"), Some(UpperBound::MaxValue));
        assert_eq!(UpperBound::parse("'2025-04-11'"), Some(before(2025, 4, 11)));
        assert_eq!(
            UpperBound::parse("'2025-04-11 00:00:00'"),
            Some(before(2025, 4, 11))
        );
        assert_eq!(
            UpperBound::parse("'2025-04-11 00:00:00.000'"),
            Some(before(2025, 4, 11))
        );
        assert_eq!(
            UpperBound::parse("'2025-04-13 12:00:00.5'"),
            Some(UpperBound::Before(
                day(2025, 4, 13).and_hms_milli_opt(12, 0, 0, 500).unwrap()
            ))
        );
        assert_eq!(UpperBound::parse("738000"), None);
        assert_eq!(UpperBound::parse("'soon'"), None);
        assert!(before(9999, 12, 31) < UpperBound::MaxValue);

        assert!(
            validate_layout(&[p("pmax", UpperBound::MaxValue), p("x", before(2025, 1, 1))])
                .is_err()
        );
        assert!(validate_layout(&[]).is_err());
        assert!(
            validate_layout(&[p("a", before(2025, 1, 2)), p("b", before(2025, 1, 1))]).is_err()
        );
        assert!(
            validate_layout(&[p("a", before(2025, 1, 1)), p("A", before(2025, 1, 2))]).is_err()
        );

        // A single MAXVALUE partition not called pmax: the tail piece is still pmax.
        let layout = [p("future", UpperBound::MaxValue)];
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(names(&change.into), ["pmin", "p20250410", "pmax"]);
    }

    #[test]
    fn a_table_without_maxvalue_is_extended() {
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("p20250410", before(2025, 4, 11)),
        ];
        let change = plan(&layout, day(2025, 4, 11)).unwrap();
        assert!(change.from.is_empty());
        assert_eq!(change.into, [p("p20250411", before(2025, 4, 12))]);
        assert_eq!(
            change.to_sql("iot_data"),
            "ALTER TABLE `iot_data` ADD PARTITION (\
             PARTITION `p20250411` VALUES LESS THAN ('2025-04-12 00:00:00'))"
        );
        let change = plan(&layout, day(2025, 4, 20)).unwrap();
        assert_eq!(
            change.into,
            [
                p("pgap20250411", before(2025, 4, 20)),
                p("p20250420", before(2025, 4, 21))
            ]
        );
        apply_and_check(&layout, day(2025, 4, 20));
    }

    #[test]
    fn bounds_that_are_not_midnight_are_carved_around_the_day() {
        let noon = |d: u32| UpperBound::Before(day(2025, 4, d).and_hms_opt(12, 0, 0).unwrap());
        let layout = [
            p("a", noon(10)),
            p("b", noon(11)),
            p("c", noon(13)),
            p("d", UpperBound::MaxValue),
        ];
        // 04-11 straddles b [04-10 12:00, 04-11 12:00) and c [04-11 12:00, 04-13 12:00).
        let change = plan(&layout, day(2025, 4, 11)).unwrap();
        assert_eq!(change.from, ["b", "c"]);
        assert_eq!(
            change.into,
            [
                p("pgap20250410", before(2025, 4, 11)),
                p("p20250411", before(2025, 4, 12)),
                p("pgap20250412", noon(13)),
            ]
        );
        assert!(change
            .to_sql("t")
            .contains("VALUES LESS THAN ('2025-04-13 12:00:00')"));
        apply_and_check(&layout, day(2025, 4, 11));

        // The last partition ends at noon: it is extended to the end of the day.
        let layout = [p("a", noon(10))];
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(change.from, ["a"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 10)),
                p("p20250410", before(2025, 4, 11))
            ]
        );
    }

    #[test]
    fn new_names_never_clash_with_partitions_that_stay() {
        // A human called a multi-day partition pmax and a day partition pmin.
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("pmax", before(2025, 4, 20)),
            p("pgap20250420", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 25)).unwrap();
        assert_eq!(change.from, ["pgap20250420"]);
        assert_eq!(names(&change.into), ["pgap20250420", "p20250425", "pmax_2"]);
        let after = apply_and_check(&layout, day(2025, 4, 25));

        // A partition named like the new day but covering other days.
        let after = apply_and_check(&after, day(2025, 4, 12));
        assert!(names(&after).contains(&"p20250412"));
        let layout = [
            p("p20250412", before(2025, 4, 10)),
            p("pmax", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 12)).unwrap();
        assert_eq!(names(&change.into), ["pgap20250410", "p20250412_2", "pmax"]);

        // Case-insensitive, as the server compares partition names.
        let layout = [
            p("PMIN", before(2025, 4, 1)),
            p("rest", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 5)).unwrap();
        assert_eq!(names(&change.into), ["pgap20250401", "p20250405", "pmax"]);
    }

    #[test]
    fn many_days_in_any_order_each_get_their_own_partition() {
        let layout = article();
        let days = [
            day(2025, 4, 20),
            day(2025, 3, 1),
            day(2025, 4, 14),
            day(2025, 4, 10),
            day(2025, 4, 11),
            day(2025, 3, 2),
            day(2025, 4, 15),
        ];
        let changes = plan_all(&layout, days);
        // 04-11 already has its partition.
        assert_eq!(changes.len(), 6);
        let after = changes.iter().fold(layout, |l, c| apply(&l, c));
        validate_layout(&after).unwrap();
        for d in days {
            assert!(exact_days(&after).contains(&d), "{d}");
            let name = format!("p{}", d.format("%Y%m%d"));
            assert!(names(&after).contains(&name.as_str()), "{name}");
        }
        assert!(plan_all(&after, days).is_empty());
        assert_eq!(after.last().unwrap(), &p("pmax", UpperBound::MaxValue));
    }

    #[test]
    fn days_outside_datetime_cannot_be_planned() {
        let layout = [p("pmax", UpperBound::MaxValue)];
        assert_eq!(plan(&layout, NaiveDate::MAX), None);
        assert!(plan(&layout, LAST_PARTITIONABLE_DAY).is_some());
        assert_eq!(plan(&[], day(2025, 1, 1)), None);
    }

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

    fn server_error(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "test".into(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn privilege_errors_are_definite_and_lock_waits_transient() {
        let mysql = |code| PartitionError::Mysql {
            table: "iot_data".into(),
            what: "ALTER TABLE".into(),
            source: server_error(code),
        };
        for code in [1142, 1044, 1045, 1227, 1064, 1526] {
            assert!(!mysql(code).is_transient(), "{code}");
        }
        for code in [1205, 1213, 2013, 1927] {
            assert!(mysql(code).is_transient(), "{code}");
        }
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other("reset")));
        assert!(mysql_error_is_transient(&io));
        assert!(PartitionError::LockTimeout {
            lock: "l".into(),
            waited: Duration::from_secs(30)
        }
        .is_transient());
        assert!(!PartitionError::DayOutOfRange(NaiveDate::MAX).is_transient());
        assert!(is_layout_conflict(&server_error(1517)));
        assert!(!is_layout_conflict(&server_error(1142)));
    }

    #[test]
    fn idle_closes_and_user_limits_are_transient() {
        // MySQL 8.0.24+ sends 4031 when it closed a connection idle past wait_timeout; 1203 is
        // the user's max_user_connections used up, 1226 an hourly per-account limit, 1969
        // MariaDB's max_statement_time. All pass by themselves: a retry can succeed.
        for code in [4031, 1203, 1226, 1969] {
            assert!(mysql_error_is_transient(&server_error(code)), "{code}");
            let e = PartitionError::Mysql {
                table: "iot_data".into(),
                what: "reading partitions".into(),
                source: server_error(code),
            };
            assert!(e.is_transient(), "{code}");
        }
        // A missing privilege next to them stays definite.
        for code in [1227, 1044] {
            assert!(!mysql_error_is_transient(&server_error(code)), "{code}");
        }
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }
}
