//! The MySQL [`BatchWriter`]: day partitions first, then one multi-row idempotent INSERT.

use std::time::Duration;

use iotflow_model::Enriched;
use iotflow_sink::{within, BatchWriter, RejectRecorder, Rejected, SinkError};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::encoder::{days, encode_insert, sql_mode_is_compatible, validate_row, Row};
use crate::partitions::{mysql_error_is_transient, PartitionManager};

/// The DDL of `iot_data`, applied at start when `mysql.create_table` is on.
pub const IOT_DATA_DDL: &str = include_str!("../../../schemas/mysql/iot_data.sql");

// Text columns of the business record are cut to their column width.
use iotflow_model::columns::{STATUS_MAX_CHARS, TEXT_MAX_CHARS};

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

/// Server errors about a value of a row, not about the sink: the row goes to the dead letters
/// and the rest of the batch is written.
const ROW_ERROR_CODES: &[u16] = &[
    1048, // ER_BAD_NULL_ERROR
    1264, // ER_WARN_DATA_OUT_OF_RANGE
    1265, // WARN_DATA_TRUNCATED
    1292, // ER_TRUNCATED_WRONG_VALUE (dates)
    1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
    1367, // ER_ILLEGAL_VALUE_FOR_TYPE
    1406, // ER_DATA_TOO_LONG
    1690, // ER_DATA_OUT_OF_RANGE
];

/// Whether `e` is the server refusing a value (see [`ROW_ERROR_CODES`]).
pub fn is_row_error(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if ROW_ERROR_CODES.contains(&s.code))
}

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
    /// alone, so k bad rows in n cost about 2k·log2(n) extra statements.
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
        let mut ranges = vec![(0, rows.len())];
        while let Some((a, b)) = ranges.pop() {
            if a == b {
                continue;
            }
            self.sql.clear();
            encode_insert(&self.table, &rows[a..b], &mut self.sql);
            match conn.query_drop(&self.sql).await {
                Ok(()) => {}
                Err(e) if is_row_error(&e) => {
                    if b - a == 1 {
                        let reason = e.to_string();
                        self.rejects
                            .reject(rejected(&rows[a], &self.table, reason))
                            .await?;
                    } else {
                        let mid = a + (b - a) / 2;
                        ranges.push((mid, b));
                        ranges.push((a, mid));
                    }
                }
                Err(e) => {
                    return Err(classify(
                        &format!("inserting {} rows into `{}`", b - a, self.table),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// A refused row for the dead letters: the row as it would have been stored, as JSON.
fn rejected(row: &Row, table: &str, reason: String) -> Rejected {
    let text = |v: &Option<String>| v.as_deref().map(serde_json::Value::from);
    let document = serde_json::json!({
        "event_time": row.event_time.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        "pboxid": row.pboxid,
        "metric": row.metric.to_string(),
        "latitude": row.latitude.to_string(),
        "longitude": row.longitude.to_string(),
        "company": text(&row.company),
        "site": text(&row.site),
        "line": text(&row.line),
        "device_name": text(&row.device_name),
        "model": text(&row.model),
        "device_status": text(&row.device_status),
        "work_threshold": row.work_threshold.map(|t| t.to_string()),
        "src_partition": row.src_partition,
        "src_offset": row.src_offset,
        "kafka_ts_ms": row.kafka_ts_ms,
    });
    Rejected {
        src_partition: row.src_partition,
        src_offset: row.src_offset,
        kafka_ts_ms: row.kafka_ts_ms,
        target: table.to_string(),
        document: document.to_string(),
        reason,
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
                            .reject(rejected(r, &self.table, e.to_string()))
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

/// A URL with its password replaced by `***`, for messages (errors, logs).
///
/// Works on the text as written, never on a parsed and decoded form: mysql_async percent-decodes
/// the password (`p%40ss` is `p@ss`), so searching the URL for the decoded password misses it,
/// while the raw text between the user's `:` and the `@` is exactly what must not be shown.
///
/// * A well-formed authority (`scheme://user:password@host...`, the `@` before the first `/`,
///   `?` or `#` after `//` and no other `@` later): the raw password text is replaced, whatever
///   it contains. `mysql://u:p%40ss@h/db` → `mysql://u:***@h/db`; an empty password stays
///   visibly empty (`mysql://u:@h/db`), it hides nothing and explains "using password: NO".
/// * Anything else with an `@` after `//` (a password holding a raw `/`, `?`, `#` or `@`, an `@`
///   in the path or query, a URL that does not parse): everything from after the user (the
///   first `:`) — or from after `//` when there is no `:` — up to the **last** `@` is replaced.
///   This may hide more than the password, never less.
/// * No `@` after `//`: there is no user information, the URL is returned as is.
///
/// Without `//` the whole text is treated as the part after it (`u:pw@h/db` → `u:***@h/db`).
pub fn redact(url: &str) -> String {
    let start = url.find("//").map_or(0, |i| i + 2);
    let rest = &url[start..];
    let Some(last_at) = rest.rfind('@') else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // The user ends at the first `:` (a user name cannot hold a raw `:`; it would be `%3A`).
    let colon = rest[..last_at].find(':');
    let well_formed = last_at < authority_end;
    let hidden_from = match colon {
        // Well formed and no password at all (`user@host`): nothing to hide.
        None if well_formed => return url.to_string(),
        // Well formed with an empty password: nothing to hide either.
        Some(c) if well_formed && c + 1 == last_at => return url.to_string(),
        Some(c) => c + 1,
        None => 0,
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start + hidden_from]);
    out.push_str("***");
    out.push_str(&rest[last_at..]);
    out
}

/// The statement the sink's pool runs on every connection it opens, and again after every
/// `COM_RESET_CONNECTION` (mysql_async resets a connection each time it goes back to the pool;
/// a reset puts the session back to the server's defaults): it takes `NO_BACKSLASH_ESCAPES`
/// out of the session's `sql_mode` and keeps every other mode the server or the DBA chose
/// (strictness included), without leaving an empty element in the list.
///
/// The encoder escapes string literals with backslashes ([`crate::encoder::push_str_literal`]).
/// Under `NO_BACKSLASH_ESCAPES` a backslash is an ordinary character, so `'it\'s'` would end the
/// literal after `it\` and let the rest of the value be read as SQL. That makes the session mode
/// part of the sink's injection safety, which is why it is set on each connection rather than
/// checked once on the first.
pub const SESSION_SQL_MODE: &str = "SET SESSION sql_mode = TRIM(BOTH ',' FROM \
     REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ','))";

/// Connects, checks the server, and (optionally) creates the table. Fails with a message that
/// names the server (password redacted, see [`redact`]) and the problem, for the job to print
/// before it starts any worker.
///
/// # The pool's sessions
///
/// Every connection of the returned pool runs [`SESSION_SQL_MODE`] when it is opened and after
/// every reset, so string literals are read the way the encoder writes them whatever the
/// server's global `sql_mode`; the first connection checks the result with
/// [`sql_mode_is_compatible`] and the start fails if the server kept `NO_BACKSLASH_ESCAPES`.
///
/// Multi-statements cannot be switched off: mysql_async 0.37 always sends
/// `CLIENT_MULTI_STATEMENTS` in its handshake and has no `COM_SET_OPTION`. What the sink sends
/// is safe without it: identifiers are backtick-quoted with backticks doubled
/// ([`crate::encoder::quote_identifier`]; `mysql.table` is also limited to letters, digits and
/// underscores by the config), values are numbers, escaped literals or `NULL`, so a `;` can
/// only appear inside a correctly escaped string literal. The DDL of `create_table`
/// ([`IOT_DATA_DDL`]) is run as one script and may hold several statements.
pub async fn prepare(
    url: &str,
    table: &str,
    create_table: bool,
    max_connections: usize,
    connect_timeout: Duration,
) -> Result<Pool, String> {
    let shown = redact(url);
    let opts = Opts::from_url(url).map_err(|e| format!("invalid MySQL URL {shown}: {e}"))?;
    prepare_checked(
        opts,
        &shown,
        table,
        create_table,
        max_connections,
        connect_timeout,
    )
    .await
}

/// [`prepare`] with options built in code rather than parsed from a URL. Commands already in
/// `opts.setup()` run before [`SESSION_SQL_MODE`], and `opts.init()` commands before both
/// (tests use an `init` command to open sessions the way a server with `NO_BACKSLASH_ESCAPES` in
/// its global `sql_mode` would). Messages name the server as `mysql://user@host:port/db`.
pub async fn prepare_opts(
    opts: Opts,
    table: &str,
    create_table: bool,
    max_connections: usize,
    connect_timeout: Duration,
) -> Result<Pool, String> {
    let shown = format!(
        "mysql://{}{}:{}/{}",
        opts.user().map(|u| format!("{u}@")).unwrap_or_default(),
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("")
    );
    prepare_checked(
        opts,
        &shown,
        table,
        create_table,
        max_connections,
        connect_timeout,
    )
    .await
}

async fn prepare_checked(
    opts: Opts,
    shown: &str,
    table: &str,
    create_table: bool,
    max_connections: usize,
    connect_timeout: Duration,
) -> Result<Pool, String> {
    if opts.db_name().is_none() {
        return Err(format!(
            "MySQL URL {shown} names no database (mysql://user:pass@host:port/DATABASE)"
        ));
    }
    // mysql_async runs setup commands from the last to the first: put ours first so it runs
    // last and nothing after it can bring the mode back.
    let mut setup = vec![SESSION_SQL_MODE.to_string()];
    setup.extend(opts.setup().iter().cloned());
    let constraints = PoolConstraints::new(1, max_connections.max(1)).expect("1 <= max");
    let opts = OptsBuilder::from_opts(opts)
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .stmt_cache_size(0)
        .setup(setup);
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
            "MySQL at {shown} keeps NO_BACKSLASH_ESCAPES in the session sql_mode even after the sink takes it out, which changes string escaping; remove it from the server's sql_mode"
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

    /// The password `p@ss:/%word`, as it must be written in a URL.
    const ENCODED: &str = "p%40ss%3A%2F%25word";
    const DECODED: &str = "p@ss:/%word";

    fn assert_hidden(url: &str) -> String {
        let shown = redact(url);
        for secret in [ENCODED, DECODED, "%40ss", "word"] {
            assert!(!shown.contains(secret), "{url} shown as {shown}");
        }
        shown
    }

    #[test]
    fn redacts_percent_encoded_passwords_as_written() {
        // mysql_async decodes it; the raw text is what is in the URL and what must go.
        let url = format!("mysql://iotflow:{ENCODED}@127.0.0.1:3306/iotflow");
        assert_eq!(Opts::from_url(&url).unwrap().pass(), Some(DECODED));
        assert_eq!(
            assert_hidden(&url),
            "mysql://iotflow:***@127.0.0.1:3306/iotflow"
        );
        // An encoded user keeps its own text, only the password goes.
        assert_eq!(
            assert_hidden(&format!("mysql://us%40er:{ENCODED}@h/db?pool_max=3")),
            "mysql://us%40er:***@h/db?pool_max=3"
        );
        // No user name, only a password.
        assert_eq!(
            assert_hidden(&format!("mysql://:{ENCODED}@h/db")),
            "mysql://:***@h/db"
        );
        // A password that is also the host name or the database name: only the password goes.
        assert_eq!(redact("mysql://h:h@h/h"), "mysql://h:***@h/h");
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "mysql://u:@h:3306/db", // empty password
            "mysql://u@h:3306/db",  // user, no password
            "mysql://h:3306/db",    // neither
            "mysql://h/db?pool_max=3",
            "",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn unparsable_urls_never_show_the_password() {
        // A raw `/`, `?`, `#` or `@` in the password: the URL no longer says where the password
        // ends, so everything between the user and the last `@` is hidden.
        for (url, shown) in [
            ("mysql://u:p@ss:/%word@h:3306/db", "mysql://u:***@h:3306/db"),
            ("mysql://u:pa/ss%word@h/db", "mysql://u:***@h/db"),
            ("mysql://u:pa?ss%word@h/db", "mysql://u:***@h/db"),
            ("mysql://u:pa#ss%word@h/db", "mysql://u:***@h/db"),
            ("mysql://u:1234/ss%word@h/db", "mysql://u:***@h/db"),
            // No `//`, or a scheme mysql_async does not know: the same rules.
            (concat!("u:", "p%40ss%3A%2F%25word", "@h/db"), "u:***@h/db"),
            (
                concat!("postgres://u:", "p%40ss%3A%2F%25word", "@h/db"),
                "postgres://u:***@h/db",
            ),
            (
                concat!("mysql:/u:", "p%40ss%3A%2F%25word", "@h/db"),
                "mysql:***@h/db",
            ),
            // Invalid escapes and unknown parameters do not matter either.
            (
                "mysql://u:%zz%word@h/db?what=1",
                "mysql://u:***@h/db?what=1",
            ),
            // No `:` before the last `@`: all of it may be a password.
            ("mysql://pa/ss%word@h/db", "mysql://***@h/db"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert!(!redact(url).contains("word"), "{url}");
        }
        // The decoded password pasted into a URL as is.
        assert_eq!(
            assert_hidden(&format!("mysql://u:{DECODED}@h/db")),
            "mysql://u:***@h/db"
        );
        // An `@` in the query hides more than needed, never less.
        assert_eq!(
            assert_hidden(&format!("mysql://u:{ENCODED}@h/db?x=a@b")),
            "mysql://u:***@b"
        );
    }
}
