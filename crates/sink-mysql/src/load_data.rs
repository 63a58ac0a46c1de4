//! Writing a batch with `LOAD DATA LOCAL INFILE ... IGNORE` (`mysql.write_method = "load_data"`).
//!
//! # Why
//!
//! The server parses tab-separated text much faster than the `VALUES (...)` of a multi-row
//! `INSERT`: no SQL tokens, no quoting, no per-value expression. The batch is encoded once into
//! one buffer ([`encode_tsv`]) and streamed to the server as the "file" the statement names
//! (mysql_async's one-shot local infile handler, `Conn::set_infile_handler`: nothing touches
//! the file system, whatever name the server asks for).
//!
//! # Idempotency and bad values
//!
//! `IGNORE` keeps the row already stored when a key repeats, exactly like the `INSERT` path's
//! `ON DUPLICATE KEY UPDATE src_offset = src_offset`: a replay after a crash neither duplicates
//! nor overwrites. But `IGNORE` also turns what strict mode would refuse (a string too long, a
//! value out of range) into a *warning* and stores a changed value. So every load runs in a
//! transaction, and is committed only when the server's warnings are all `1062` (duplicate
//! key) and all of them could be read ([`warnings_are_only_duplicates`]). Otherwise it is
//! rolled back and the batch goes through the `INSERT` path, where strict mode refuses the bad
//! row, the halving finds it and it goes to the dead letters with the server's reason, while the
//! good rows are stored.
//!
//! `SHOW WARNINGS` lists at most `max_error_count` warnings (64 by default); the pool raises it
//! for its sessions ([`SESSION_MAX_ERROR_COUNT`]). When the server still reports more warnings
//! than it lists, the unseen ones cannot be proven duplicates: the load is treated as "not only
//! duplicates" and rolled back. (The info line's `Skipped:` count is no proof either: a row
//! `IGNORE` skips for another reason, a missing partition for example, is skipped too.)
//!
//! # The text format
//!
//! Each row is one line, fields separated by tabs, in the order of [`COLUMNS`]; the statement
//! spells out `FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'` and
//! `CHARACTER SET utf8mb4` (without it the server reads the file in the database's character
//! set). Text escapes backslash, tab, newline, carriage return and NUL (`\\`, `\t`, `\n`, `\r`,
//! `\0`), and NULL is `\N`: an empty field is an empty string, and a text `\N` is written as
//! `\\N`. Decimals are the exact text the `INSERT` path writes (rounded to the column scale,
//! never through `f64`), date-times `YYYY-MM-DD HH:MM:SS.fff`.
//!
//! # When the server refuses
//!
//! `LOAD DATA LOCAL` needs `local_infile=ON` (MariaDB's default; MySQL 8 defaults to OFF).
//! [`check_local_infile`] refuses to start without it. A server that refuses it later (error
//! 1148, 3948 or 4166, [`is_local_infile_refused`]) makes the writer log a warning once and go
//! on with `INSERT`.

use std::io::Write as _;

use bytes::Bytes;
use chrono::{Datelike, NaiveDateTime, Timelike};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, InfileData, TxOpts, Value};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::encoder::{kafka_ts_to_datetime, quote_identifier, COLUMNS, DECIMAL_SCALE};
use crate::Row;

/// The name the statement gives its "file". The handler ignores it: the data is the batch.
pub const INFILE_NAME: &str = "iotflow-batch.tsv";

/// Run on every session of the sink's pool: lets `SHOW WARNINGS` list up to 65 535 warnings
/// (the most both MariaDB and MySQL allow), so a batch of duplicates can be proven to be only
/// that.
pub const SESSION_MAX_ERROR_COUNT: &str = "SET SESSION max_error_count = 65535";

/// Server error for a duplicate key (`ER_DUP_ENTRY`): the only warning a load may have.
pub const DUPLICATE_KEY: u16 = 1062;

/// Server errors that mean "`LOAD DATA LOCAL` is not allowed here".
pub const LOCAL_INFILE_REFUSED_CODES: &[u16] = &[
    1148, // ER_NOT_ALLOWED_COMMAND (MySQL 5.x, MariaDB before 10.5)
    3948, // ER_CLIENT_LOCAL_FILES_DISABLED (MySQL 8)
    4166, // ER_LOAD_INFILE_CAPABILITY_DISABLED (MariaDB 10.5+)
];

/// Whether `e` is the server refusing `LOAD DATA LOCAL` (see [`LOCAL_INFILE_REFUSED_CODES`]).
pub fn is_local_infile_refused(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if LOCAL_INFILE_REFUSED_CODES.contains(&s.code))
}

/// Whether a value of `@@local_infile` means ON (`1`, `ON`; what MariaDB and MySQL return).
pub fn local_infile_is_on(value: &Value) -> bool {
    match value {
        Value::Int(v) => *v != 0,
        Value::UInt(v) => *v != 0,
        Value::Bytes(b) => {
            let text = String::from_utf8_lossy(b);
            let text = text.trim();
            text.eq_ignore_ascii_case("on")
                || text.eq_ignore_ascii_case("true")
                || text.parse::<i64>().is_ok_and(|v| v != 0)
        }
        _ => false,
    }
}

/// The start-up check for `write_method = "load_data"`: the error to fail the start with when
/// the server's `@@local_infile` (`value`) is OFF, naming `server`.
pub fn local_infile_error(value: &Value, server: &str) -> Option<String> {
    (!local_infile_is_on(value)).then(|| {
        format!(
            "MySQL at {server} has local_infile=OFF, which mysql.write_method = \"load_data\" \
             needs: set local_infile=ON on the server (SET GLOBAL local_infile = 1, or \
             --local-infile=1 / local_infile=ON in its configuration), or set \
             mysql.write_method = \"insert\""
        )
    })
}

/// Reads `@@local_infile` on `conn`; `Err` with the message of [`local_infile_error`] when it
/// is OFF.
pub async fn check_local_infile(
    conn: &mut Conn,
    server: &str,
) -> Result<Result<(), String>, mysql_async::Error> {
    let value: Option<Value> = conn.query_first("SELECT @@GLOBAL.local_infile").await?;
    Ok(
        match local_infile_error(&value.unwrap_or(Value::NULL), server) {
            Some(message) => Err(message),
            None => Ok(()),
        },
    )
}

/// The statement loading [`INFILE_NAME`] into `table`, columns [`COLUMNS`].
///
/// ```
/// let sql = iotflow_sink_mysql::load_data::load_statement("iot_data");
/// assert!(sql.starts_with("LOAD DATA LOCAL INFILE 'iotflow-batch.tsv' IGNORE INTO TABLE `iot_data`"));
/// assert!(sql.ends_with("src_partition, src_offset, kafka_ts)"));
/// ```
pub fn load_statement(table: &str) -> String {
    let mut sql = format!("LOAD DATA LOCAL INFILE '{INFILE_NAME}' IGNORE INTO TABLE ");
    quote_identifier(table, &mut sql);
    sql.push_str(
        r" CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' (",
    );
    sql.push_str(&COLUMNS.join(", "));
    sql.push(')');
    sql
}

/// Append `rows` as tab-separated lines (see the module docs) to `out`.
///
/// ```
/// use chrono::NaiveDate;
/// use iotflow_sink_mysql::{load_data::encode_tsv, Row};
/// use rust_decimal::Decimal;
///
/// let row = Row {
///     event_time: NaiveDate::from_ymd_opt(2025, 4, 10).unwrap().and_hms_milli_opt(8, 0, 0, 5).unwrap(),
///     pboxid: "a\tb\\c".into(),
///     metric: Decimal::new(125, 1),
///     latitude: Decimal::new(3_123_456_789, 8),
///     longitude: Decimal::new(12_123_456_789, 8),
///     company: None, site: Some(String::new()), line: None, device_name: None, model: None,
///     device_status: None, work_threshold: None,
///     src_partition: 3, src_offset: 42, kafka_ts_ms: None,
/// };
/// let mut out = Vec::new();
/// encode_tsv(&[row], &mut out);
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     "2025-04-10 08:00:00.005\ta\\tb\\\\c\t12.5\t31.23456789\t121.23456789\t\\N\t\t\\N\t\\N\t\\N\t\\N\t\\N\t3\t42\t\\N\n"
/// );
/// ```
pub fn encode_tsv(rows: &[Row], out: &mut Vec<u8>) {
    out.reserve(rows.len() * 200);
    for row in rows {
        push_datetime(row.event_time, out);
        out.push(b'\t');
        push_text(&row.pboxid, out);
        out.push(b'\t');
        push_decimal(row.metric, out);
        out.push(b'\t');
        push_decimal(row.latitude, out);
        out.push(b'\t');
        push_decimal(row.longitude, out);
        for text in row.texts() {
            out.push(b'\t');
            match text {
                Some(text) => push_text(text, out),
                None => out.extend_from_slice(b"\\N"),
            }
        }
        out.push(b'\t');
        match row.work_threshold {
            Some(threshold) => push_decimal(threshold, out),
            None => out.extend_from_slice(b"\\N"),
        }
        // Writing into a Vec cannot fail.
        let _ = write!(out, "\t{}\t{}\t", row.src_partition, row.src_offset);
        match row.kafka_ts_ms.and_then(kafka_ts_to_datetime) {
            Some(ts) => push_datetime(ts, out),
            None => out.extend_from_slice(b"\\N"),
        }
        out.push(b'\n');
    }
}

/// Append `value` escaped for `ESCAPED BY '\\'` with tab-separated fields and `\n` lines.
pub fn push_text(value: &str, out: &mut Vec<u8>) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Append `value` rounded to [`DECIMAL_SCALE`] digits, as the `INSERT` path writes it.
fn push_decimal(value: Decimal, out: &mut Vec<u8>) {
    let rounded =
        value.round_dp_with_strategy(DECIMAL_SCALE, RoundingStrategy::MidpointAwayFromZero);
    let _ = write!(out, "{rounded}");
}

/// Append `value` as `YYYY-MM-DD HH:MM:SS.fff` (milliseconds, truncated; a leap second stays
/// in its second), as the `INSERT` path writes it but unquoted.
fn push_datetime(value: NaiveDateTime, out: &mut Vec<u8>) {
    let millis = (value.nanosecond() / 1_000_000).min(999);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        value.year(),
        value.month(),
        value.day(),
        value.hour(),
        value.minute(),
        value.second(),
        millis
    );
}

/// Whether a load may be committed: the server reported `reported` warnings and `SHOW WARNINGS`
/// listed `shown` codes. Only when every warning was listed and every one is
/// [`DUPLICATE_KEY`].
pub fn warnings_are_only_duplicates(reported: usize, shown: &[u16]) -> bool {
    shown.len() >= reported && shown.iter().all(|&code| code == DUPLICATE_KEY)
}

/// What became of one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Committed: every row is stored, or was already (`skipped` rows, first write kept).
    Committed {
        /// Rows the load inserted.
        inserted: u64,
        /// Rows whose key was already stored.
        skipped: u64,
    },
    /// Rolled back because of warnings other than duplicate keys (or more than could be
    /// listed): the first of them, `(code, message)`, for the log. The caller writes the rows
    /// another way.
    RolledBack {
        /// Warnings the server reported.
        warnings: usize,
        /// The first warning that is not a duplicate key, if one was listed.
        first: Option<(u16, String)>,
    },
}

/// Loads `data` (the [`encode_tsv`] text of `rows` rows) into `table` on `conn` in one
/// transaction and commits it only if its warnings are all duplicate keys (see the module
/// docs). A server error (for example [`is_local_infile_refused`]) is returned as it is; the
/// transaction is then rolled back.
pub async fn load(
    conn: &mut Conn,
    statement: &str,
    data: Bytes,
    rows: usize,
) -> Result<LoadOutcome, mysql_async::Error> {
    // The handler is one-shot and the connection's own; it is dropped with the connection's
    // return to the pool if the statement never asks for it.
    conn.set_infile_handler(async move {
        let stream: InfileData =
            futures_util::stream::iter([Ok::<_, std::io::Error>(data)]).boxed();
        Ok::<_, mysql_async::Error>(stream)
    });
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.query_drop(statement).await?;
    let inserted = tx.affected_rows();
    let reported = usize::from(tx.get_warnings());
    if reported == 0 {
        tx.commit().await?;
        return Ok(LoadOutcome::Committed {
            inserted,
            skipped: (rows as u64).saturating_sub(inserted),
        });
    }
    let shown: Vec<(String, u16, String)> = tx.query("SHOW WARNINGS").await?;
    let codes: Vec<u16> = shown.iter().map(|(_, code, _)| *code).collect();
    if warnings_are_only_duplicates(reported, &codes) {
        tx.commit().await?;
        return Ok(LoadOutcome::Committed {
            inserted,
            skipped: (rows as u64).saturating_sub(inserted),
        });
    }
    tx.rollback().await?;
    let first = shown
        .into_iter()
        .find(|(_, code, _)| *code != DUPLICATE_KEY)
        .map(|(_, code, message)| (code, message));
    Ok(LoadOutcome::RolledBack {
        warnings: reported,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        let mut out = Vec::new();
        push_text(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_escapes_what_load_data_reads_specially() {
        assert_eq!(text(""), "");
        assert_eq!(text("plain 温度 ✓"), "plain 温度 ✓");
        assert_eq!(text("a\tb\nc\rd\\e\0f"), r"a\tb\nc\rd\\e\0f");
        // A literal `\N` must not become NULL.
        assert_eq!(text(r"\N"), r"\\N");
        // Quotes are not special in this format.
        assert_eq!(text("it's \"x\""), "it's \"x\"");
    }

    #[test]
    fn only_duplicates_that_were_all_listed_may_be_committed() {
        assert!(warnings_are_only_duplicates(0, &[]));
        assert!(warnings_are_only_duplicates(2, &[1062, 1062]));
        assert!(!warnings_are_only_duplicates(2, &[1062, 1265]));
        assert!(!warnings_are_only_duplicates(1, &[1406]));
        // More reported than listed (max_error_count): the rest are unknown.
        assert!(!warnings_are_only_duplicates(65, &[1062; 64]));
    }

    #[test]
    fn local_infile_values() {
        // The check is tested against the values servers return rather than by switching the
        // shared server's global off: that would break every other test loading data at once.
        for on in [
            Value::Int(1),
            Value::UInt(1),
            Value::Bytes(b"1".to_vec()),
            Value::Bytes(b"ON".to_vec()),
        ] {
            assert!(local_infile_is_on(&on), "{on:?}");
            assert_eq!(local_infile_error(&on, "s"), None);
        }
        for off in [
            Value::Int(0),
            Value::Bytes(b"0".to_vec()),
            Value::Bytes(b"OFF".to_vec()),
            Value::NULL,
        ] {
            assert!(!local_infile_is_on(&off), "{off:?}");
            let e = local_infile_error(&off, "mysql://u@h:1/db").unwrap();
            assert!(
                e.contains("local_infile=OFF") && e.contains("mysql://u@h:1/db"),
                "{e}"
            );
            assert!(e.contains("local_infile=ON"), "{e}");
            assert!(e.contains("write_method = \"insert\""), "{e}");
        }
    }

    #[test]
    fn refusals_of_local_infile_are_recognised() {
        let server = |code| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "x".into(),
                state: "HY000".into(),
            })
        };
        for code in [1148, 3948, 4166] {
            assert!(is_local_infile_refused(&server(code)));
        }
        assert!(!is_local_infile_refused(&server(1062)));
        assert!(!is_local_infile_refused(&server(1406)));
    }
}
