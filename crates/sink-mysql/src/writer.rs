//! The MySQL [`BatchWriter`]: day partitions first, then one multi-row idempotent INSERT.

use std::future::Future;
use std::time::Duration;

use iotflow_model::Enriched;
use iotflow_sink::{BatchWriter, SinkError};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::encoder::{days, encode_insert, sql_mode_is_compatible, Row};
use crate::partitions::{mysql_error_is_transient, PartitionManager};

/// The DDL of `iot_data`, applied at start when `mysql.create_table` is on.
pub const IOT_DATA_DDL: &str = include_str!("../../../schemas/mysql/iot_data.sql");

/// Text columns of the business record are cut to their column width (128 characters).
const TEXT_MAX_CHARS: usize = 128;
const STATUS_MAX_CHARS: usize = 32;

fn cut(s: &Option<String>, max: usize) -> Option<String> {
    s.as_ref().map(|s| {
        if s.chars().count() > max {
            s.chars().take(max).collect()
        } else {
            s.clone()
        }
    })
}

impl From<&Enriched> for Row {
    fn from(e: &Enriched) -> Row {
        let r = &e.reading;
        let d = e.device.as_ref();
        Row {
            event_time: r.event_time,
            pboxid: r.pboxid.clone(),
            metric: r.metric,
            latitude: r.latitude,
            longitude: r.longitude,
            company: d.and_then(|d| cut(&d.company, TEXT_MAX_CHARS)),
            site: d.and_then(|d| cut(&d.site, TEXT_MAX_CHARS)),
            line: d.and_then(|d| cut(&d.line, TEXT_MAX_CHARS)),
            device_name: d.and_then(|d| cut(&d.device_name, TEXT_MAX_CHARS)),
            model: d.and_then(|d| cut(&d.model, TEXT_MAX_CHARS)),
            device_status: d.and_then(|d| cut(&d.status, STATUS_MAX_CHARS)),
            work_threshold: d.and_then(|d| d.work_threshold),
            src_partition: r.source.partition,
            src_offset: r.source.offset,
            kafka_ts_ms: r.kafka_ts_ms,
        }
    }
}

/// Writes batches of [`Row`]s into one table.
pub struct MysqlWriter {
    pool: Pool,
    table: String,
    partitions: PartitionManager,
    sql: String,
    timeout: Duration,
}

impl MysqlWriter {
    /// How long one write may take by default (the `mysql.write_timeout_ms` default).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A writer using connections from `pool`; each write may take
    /// [`MysqlWriter::DEFAULT_TIMEOUT`] (see [`MysqlWriter::with_timeout`]).
    pub fn new(pool: Pool, table: &str) -> Self {
        MysqlWriter {
            pool,
            table: table.to_string(),
            partitions: PartitionManager::new(table),
            sql: String::new(),
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
}

/// Runs `write` with a deadline. An unfinished write is dropped, and with it its connection:
/// mysql_async marks a connection whose statement was cut off as broken, so the pool closes it
/// instead of handing it out again. Abandoning is safe because the INSERT is idempotent: if the
/// server still completes it, the retry overwrites the same rows.
async fn within(
    limit: Duration,
    what: impl FnOnce() -> String,
    write: impl Future<Output = Result<(), SinkError>>,
) -> Result<(), SinkError> {
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result,
        Err(_) => Err(SinkError::Transient(format!(
            "{}: no answer within {limit:?} (mysql.write_timeout_ms); abandoned, will retry",
            what()
        ))),
    }
}

fn classify(context: &str, e: mysql_async::Error) -> SinkError {
    let message = format!("{context}: {e}");
    if mysql_error_is_transient(&e) {
        SinkError::Transient(message)
    } else {
        SinkError::Definite(message)
    }
}

impl MysqlWriter {
    /// One write, without the deadline.
    async fn write_now(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(|e| classify("connecting to MySQL", e))?;
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
        self.sql.clear();
        encode_insert(&self.table, rows, &mut self.sql);
        conn.query_drop(&self.sql).await.map_err(|e| {
            classify(
                &format!("inserting {} rows into `{}`", rows.len(), self.table),
                e,
            )
        })
    }
}

impl BatchWriter for MysqlWriter {
    type Row = Row;

    async fn write(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let (limit, n, table) = (self.timeout, rows.len(), self.table.clone());
        let what = move || format!("writing {n} rows into MySQL table `{table}`");
        within(limit, what, self.write_now(rows)).await
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

/// A URL with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    match Opts::from_url(url) {
        Ok(opts) if opts.pass().is_some() => {
            let user = opts.user().unwrap_or("");
            url.replacen(
                &format!("{user}:{}@", opts.pass().unwrap_or("")),
                &format!("{user}:***@"),
                1,
            )
        }
        _ => url.to_string(),
    }
}

/// Connects, checks the server, and (optionally) creates the table. Fails with a message that
/// names the server and the problem, for the job to print before it starts any worker.
pub async fn prepare(
    url: &str,
    table: &str,
    create_table: bool,
    max_connections: usize,
    connect_timeout: Duration,
) -> Result<Pool, String> {
    let shown = redact(url);
    let opts = Opts::from_url(url).map_err(|e| format!("invalid MySQL URL {shown}: {e}"))?;
    if opts.db_name().is_none() {
        return Err(format!(
            "MySQL URL {shown} names no database (mysql://user:pass@host:port/DATABASE)"
        ));
    }
    let constraints = PoolConstraints::new(1, max_connections.max(1)).expect("1 <= max");
    let opts = OptsBuilder::from_opts(opts)
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .stmt_cache_size(0);
    let pool = Pool::new(opts);
    let mut conn = tokio::time::timeout(connect_timeout, pool.get_conn())
        .await
        .map_err(|_| {
            format!("cannot connect to MySQL at {shown}: no answer within {connect_timeout:?}")
        })?
        .map_err(|e| format!("cannot connect to MySQL at {shown}: {e}"))?;
    let sql_mode: Option<String> = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .map_err(|e| format!("MySQL at {shown}: {e}"))?;
    if !sql_mode_is_compatible(sql_mode.as_deref().unwrap_or("")) {
        return Err(format!(
            "MySQL at {shown} runs with sql_mode NO_BACKSLASH_ESCAPES, which changes string escaping; remove it for the iotflow user"
        ));
    }
    if create_table {
        let ddl = IOT_DATA_DDL
            .replace("`iot_data`", &format!("`{table}`"))
            .replace(" iot_data ", &format!(" {table} "));
        conn.query_drop(ddl)
            .await
            .map_err(|e| format!("creating table `{table}` on {shown}: {e}"))?;
    }
    let exists: Option<String> = conn
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(|e| format!("MySQL at {shown}: {e}"))?;
    if exists.is_none() {
        return Err(format!(
            "table `{table}` does not exist on {shown}; apply schemas/mysql/iot_data.sql or set mysql.create_table = true"
        ));
    }
    drop(conn);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("mysql://u:secret@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(redact("mysql://u@h:3306/db"), "mysql://u@h:3306/db");
    }
}
