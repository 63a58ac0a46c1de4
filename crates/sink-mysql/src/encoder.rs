//! Encoding of a batch of rows into one multi-row `INSERT` statement.
//!
//! # Why literals and not a prepared statement
//!
//! A prepared statement would need one placeholder per value (15 per row, and the protocol caps a
//! statement at 65 535 placeholders, so at most 4 369 rows), a server round trip to prepare each
//! distinct batch size, and a value array per batch. A text statement with literal values is one
//! round trip, lets the server parse 1 000 rows as fast as it parses one, and is written straight
//! into a reused `String` without any per-value allocation. The price is that this module must
//! escape values exactly as the server unescapes them, which is what the tests (including the
//! round trip through a real server in `tests/partitions.rs`) pin down.
//!
//! # Idempotency
//!
//! Every statement ends with `ON DUPLICATE KEY UPDATE src_offset = src_offset`. The primary key of
//! `iot_data` is `(src_partition, src_offset, event_time)`, so a reading that Kafka re-delivers
//! after a restart hits the key of the row written the first time and the no-op update leaves it
//! untouched. Unlike `INSERT IGNORE`, this does not turn real errors (a value out of range, a
//! string too long, a missing partition) into silently dropped rows: those still fail the
//! statement. Re-delivered readings must map to the same `event_time`, which holds as long as the
//! configured time zone does not change between the two deliveries.
//!
//! # Assumptions about the session
//!
//! * String literals are escaped with backslashes, as MariaDB and MySQL read them in the default
//!   `sql_mode`. A session with `NO_BACKSLASH_ESCAPES` would read the backslashes literally (and
//!   `\'` would end a literal): the pool built by [`crate::health::prepare`] takes that mode out
//!   of every session it opens or resets ([`iotflow_mysql::SESSION_SQL_MODE`]), and
//!   [`iotflow_mysql::sql_mode_is_compatible`] checks the result.
//! * The connection character set is `utf8mb4` (mysql_async asks for `utf8mb4_general_ci` in its
//!   handshake). Backslash escaping is only safe in charsets where no multi-byte character
//!   contains the byte `0x5c`, which holds for UTF-8 but not for GBK, Big5 or SJIS.
//!
//! # Precision
//!
//! * Decimals are written with `Decimal`'s `Display` (never through `f64`) after rounding to the
//!   column scale of 8 digits with [`Decimal::round_dp_with_strategy`] and
//!   [`RoundingStrategy::MidpointAwayFromZero`], the same rounding the server would apply to a
//!   longer literal, but without its "data truncated" note.
//! * `DATETIME(3)` values are written with exactly three fractional digits; finer precision is
//!   truncated, as the server does by default.
//!
//! # Statement size
//!
//! The server refuses statements larger than `max_allowed_packet` (16 MiB by default in MariaDB
//! 10.11, 64 MiB in MySQL 8). A row that passes [`validate_row`] encodes to at most
//! [`MAX_ENCODED_ROW_BYTES`] bytes (3 180: every text column full of 4-byte characters).
//! Realistic readings take about 210 bytes, so a 1 000-row statement is about 210 KB (measured;
//! encoding it takes about 0.65 ms in a release build). Use [`max_rows_for_packet`] to turn the
//! server's limit into a safe upper bound for the batch policy's max rows: 16 MiB allows 5 275
//! worst-case rows. Batches of 500 to 2 000 rows are the sweet spot for throughput; larger ones
//! only lengthen the time the server holds its locks.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use rust_decimal::{Decimal, RoundingStrategy};

pub use iotflow_mysql::quote_identifier;

use crate::partitions::{FIRST_PARTITIONABLE_DAY, LAST_PARTITIONABLE_DAY};
use crate::Row;

/// Columns written by [`encode_insert`], in order (the shared row's columns). `ingested_at`
/// is left to its default.
pub use iotflow_sink::COLUMNS;

// The column rules are the model's (one rule set for the parser and every sink; the schema
// files are their source of truth).
pub use iotflow_model::columns::{
    DECIMAL_SCALE, PBOXID_MAX_CHARS, STATUS_MAX_CHARS, TEXT_MAX_CHARS,
};

/// Upper bound on the bytes one row that passes [`validate_row`] adds to a statement.
///
/// Counts every text column at its maximum length in 4-byte characters (escaping only ever
/// doubles 1-byte ASCII characters, so it cannot exceed that), decimals at their longest form,
/// and the separators. Checked against a worst-case row in the unit tests.
pub const MAX_ENCODED_ROW_BYTES: usize = {
    let datetime = 25; // 'YYYY-MM-DD HH:MM:SS.fff'
    let decimal = 31; // sign, up to 29 digits, point
    let separators = 2 + 14 + 1; // parentheses, commas between values, comma between rows
    datetime * 2 // event_time, kafka_ts
        + encoded_text_bytes(PBOXID_MAX_CHARS)
        + decimal * 4 // metric, latitude, longitude, work_threshold
        + encoded_text_bytes(TEXT_MAX_CHARS) * 5
        + encoded_text_bytes(STATUS_MAX_CHARS)
        + 11 // i32
        + 20 // i64
        + separators
};

/// Longest quoted literal of a text value of `chars` characters (at most 4 bytes each).
const fn encoded_text_bytes(chars: usize) -> usize {
    chars * 4 + 2
}

/// Bytes of a statement that do not depend on the number of rows, with generous room for a long
/// table name.
const STATEMENT_OVERHEAD_BYTES: usize = 1024;

/// Largest number of rows that passed [`validate_row`] that always fit in one statement under
/// the server's `max_allowed_packet` (in bytes).
///
/// ```
/// use iotflow_sink_mysql::encoder::max_rows_for_packet;
/// assert!(max_rows_for_packet(16 * 1024 * 1024) > 4_000);
/// ```
pub fn max_rows_for_packet(max_allowed_packet: usize) -> usize {
    max_allowed_packet.saturating_sub(STATEMENT_OVERHEAD_BYTES) / MAX_ENCODED_ROW_BYTES
}

/// Append one `INSERT ... VALUES (...),(...) ON DUPLICATE KEY UPDATE src_offset = src_offset`
/// statement for `rows` into `table` to `out`.
///
/// `out` is appended to, not cleared, so callers can reuse one buffer across batches
/// (`out.clear()` first). `table` is a plain table name (no database prefix); it is quoted as an
/// identifier. With no rows nothing is written, since `VALUES` cannot be empty.
///
/// Values are not validated here: a row that fails [`validate_row`] makes the server reject the
/// whole statement.
///
/// ```
/// use chrono::NaiveDate;
/// use iotflow_sink_mysql::encoder::encode_insert;
/// use iotflow_sink_mysql::Row;
/// use rust_decimal::Decimal;
///
/// let row = Row {
///     event_time: NaiveDate::from_ymd_opt(2025, 4, 10).unwrap().and_hms_milli_opt(8, 0, 0, 5).unwrap(),
///     pboxid: "it's-1".into(),
///     metric: Decimal::new(125, 1),
///     latitude: Decimal::new(3_123_456_789, 8),
///     longitude: Decimal::new(12_123_456_789, 8),
///     company: None, site: None, line: None, device_name: None, model: None,
///     device_status: None, work_threshold: None,
///     src_partition: 3, src_offset: 42, kafka_ts_ms: None,
/// };
/// let mut sql = String::new();
/// encode_insert("iot_data", &[row], &mut sql);
/// assert!(sql.contains("('2025-04-10 08:00:00.005','it\\'s-1',12.5,31.23456789,121.23456789,NULL,"));
/// assert!(sql.ends_with("ON DUPLICATE KEY UPDATE src_offset = src_offset"));
/// ```
pub fn encode_insert(table: &str, rows: &[Row], out: &mut String) {
    if rows.is_empty() {
        return;
    }
    out.reserve(128 + rows.len() * 256);
    out.push_str("INSERT INTO ");
    quote_identifier(table, out);
    out.push_str(" (");
    for (i, column) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(column);
    }
    out.push_str(") VALUES ");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_row(row, out);
    }
    out.push_str(" ON DUPLICATE KEY UPDATE src_offset = src_offset");
}

/// Append one parenthesised value tuple.
fn encode_row(row: &Row, out: &mut String) {
    out.push('(');
    push_datetime(row.event_time, out);
    out.push(',');
    push_str_literal(&row.pboxid, out);
    out.push(',');
    push_decimal(row.metric, out);
    out.push(',');
    push_decimal(row.latitude, out);
    out.push(',');
    push_decimal(row.longitude, out);
    for text in row.texts() {
        out.push(',');
        match text {
            Some(text) => push_str_literal(text, out),
            None => out.push_str("NULL"),
        }
    }
    out.push(',');
    match row.work_threshold {
        Some(threshold) => push_decimal(threshold, out),
        None => out.push_str("NULL"),
    }
    // Writing integers into a String cannot fail.
    let _ = write!(out, ",{},{},", row.src_partition, row.src_offset);
    match row.kafka_ts_ms.and_then(kafka_ts_to_datetime) {
        Some(ts) => push_datetime(ts, out),
        None => out.push_str("NULL"),
    }
    out.push(')');
}

/// Every calendar day (of `event_time`) that `rows` touch: the day partitions a batch needs.
pub fn days(rows: &[Row]) -> BTreeSet<NaiveDate> {
    rows.iter().map(|row| row.event_time.date()).collect()
}

/// Append `value` as a single-quoted string literal, escaped for the default `sql_mode`.
///
/// Escapes the same bytes as `mysql_real_escape_string`: NUL, `\n`, `\r`, `\\`, `'`, `"` and
/// Ctrl-Z (`\x1a`). All of them are ASCII, so slicing around them is always on a character
/// boundary; runs of other characters are copied in one piece.
pub fn push_str_literal(value: &str, out: &mut String) {
    out.reserve(value.len() + 2);
    out.push('\'');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped = match byte {
            0 => "\\0",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\\' => "\\\\",
            b'\'' => "\\'",
            b'"' => "\\\"",
            0x1a => "\\Z",
            _ => continue,
        };
        out.push_str(&value[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&value[start..]);
    out.push('\'');
}

/// Append `value` rounded to [`DECIMAL_SCALE`] digits as an unquoted decimal literal.
pub fn push_decimal(value: Decimal, out: &mut String) {
    let rounded =
        value.round_dp_with_strategy(DECIMAL_SCALE, RoundingStrategy::MidpointAwayFromZero);
    // `Decimal`'s Display formats into a stack buffer; writing into a String cannot fail.
    let _ = write!(out, "{rounded}");
}

/// Append `value` as `'YYYY-MM-DD HH:MM:SS.fff'`, truncated to milliseconds.
pub fn push_datetime(value: NaiveDateTime, out: &mut String) {
    // A leap second is represented with nanoseconds >= 1e9: keep it inside the same second.
    let millis = (value.nanosecond() / 1_000_000).min(999);
    let _ = write!(
        out,
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}'",
        value.year(),
        value.month(),
        value.day(),
        value.hour(),
        value.minute(),
        value.second(),
        millis
    );
}

/// The Kafka timestamp as a UTC wall-clock time, or `None` when it is outside what `DATETIME`
/// can hold (years 1000 to 9999). The timestamp is metadata: a broken one is stored as NULL
/// rather than failing the batch.
pub fn kafka_ts_to_datetime(ms: i64) -> Option<NaiveDateTime> {
    let ts = chrono::DateTime::from_timestamp_millis(ms)?.naive_utc();
    datetime_in_range(ts).then_some(ts)
}

/// Why a row cannot be stored in `iot_data` as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// A text value has more characters than its column.
    #[error("{column} has {chars} characters, the column holds at most {max}")]
    TooLong {
        /// Column name.
        column: &'static str,
        /// Length of the value in characters.
        chars: usize,
        /// Column capacity in characters.
        max: usize,
    },
    /// A decimal value, after rounding to 8 digits, does not fit its column's precision.
    #[error(
        "{column} = {value} is outside the range of its DECIMAL column (|value| < 10^{int_digits})"
    )]
    OutOfRange {
        /// Column name.
        column: &'static str,
        /// The offending value.
        value: Decimal,
        /// Digits before the point that the column allows.
        int_digits: u32,
    },
    /// `event_time` is on a day that cannot have a partition: before 1000-01-01 or after
    /// 9999-12-30 (see [`crate::partitions::LAST_PARTITIONABLE_DAY`]).
    #[error("event_time {0} is outside the days that can be stored (1000-01-01 to 9999-12-30)")]
    EventTimeOutOfRange(NaiveDateTime),
}

/// Check that every value of `row` fits its column, so that one bad reading can go to the
/// dead-letter sink instead of making the server reject a whole batch.
///
/// This checks storage limits only (lengths, decimal precision, date range), not business rules
/// such as latitude being within ±90°.
pub fn validate_row(row: &Row) -> Result<(), RowError> {
    if !(FIRST_PARTITIONABLE_DAY..=LAST_PARTITIONABLE_DAY).contains(&row.event_time.date()) {
        return Err(RowError::EventTimeOutOfRange(row.event_time));
    }
    check_len("pboxid", &row.pboxid, PBOXID_MAX_CHARS)?;
    for (column, value) in [
        ("company", &row.company),
        ("site", &row.site),
        ("line", &row.line),
        ("device_name", &row.device_name),
        ("model", &row.model),
    ] {
        if let Some(value) = value {
            check_len(column, value, TEXT_MAX_CHARS)?;
        }
    }
    if let Some(status) = &row.device_status {
        check_len("device_status", status, STATUS_MAX_CHARS)?;
    }
    use iotflow_model::columns::{COORDINATE_INT_DIGITS, METRIC_INT_DIGITS};
    check_decimal("metric", row.metric, METRIC_INT_DIGITS)?;
    check_decimal("latitude", row.latitude, COORDINATE_INT_DIGITS)?;
    check_decimal("longitude", row.longitude, COORDINATE_INT_DIGITS)?;
    if let Some(threshold) = row.work_threshold {
        check_decimal("work_threshold", threshold, METRIC_INT_DIGITS)?;
    }
    Ok(())
}

fn check_len(column: &'static str, value: &str, max: usize) -> Result<(), RowError> {
    // Byte length bounds the character count: skip counting for the common short value.
    if value.len() <= max {
        return Ok(());
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(RowError::TooLong { column, chars, max });
    }
    Ok(())
}

fn check_decimal(column: &'static str, value: Decimal, int_digits: u32) -> Result<(), RowError> {
    if !iotflow_model::columns::fits_decimal(value, int_digits) {
        return Err(RowError::OutOfRange {
            column,
            value,
            int_digits,
        });
    }
    Ok(())
}

fn datetime_in_range(value: NaiveDateTime) -> bool {
    (1000..=9999).contains(&value.year())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dt(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_milli_opt(h, mi, s, ms)
            .unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn row(offset: i64) -> Row {
        Row {
            event_time: dt(2025, 4, 10, 8, 30, 15, 123),
            pboxid: "pbox-001".into(),
            metric: dec("12.5"),
            latitude: dec("31.23"),
            longitude: dec("121.47"),
            company: Some("ACME".into()),
            site: None,
            line: Some("L1".into()),
            device_name: None,
            model: None,
            device_status: Some("working".into()),
            work_threshold: Some(dec("10")),
            src_partition: 2,
            src_offset: offset,
            kafka_ts_ms: Some(1_744_273_815_123),
        }
    }

    fn literal(s: &str) -> String {
        let mut out = String::new();
        push_str_literal(s, &mut out);
        out
    }

    #[test]
    fn escapes_every_special_byte() {
        assert_eq!(literal(""), "''");
        assert_eq!(literal("plain"), "'plain'");
        assert_eq!(
            literal("a\0b\nc\rd\\e'f\"g\x1ah"),
            r#"'a\0b\nc\rd\\e\'f\"g\Zh'"#
        );
        assert_eq!(
            literal("'; DROP TABLE iot_data; --"),
            r"'\'; DROP TABLE iot_data; --'"
        );
        assert_eq!(literal("\\'"), r"'\\\''");
    }

    #[test]
    fn leaves_unicode_and_other_controls_alone() {
        assert_eq!(literal("温度 ✓ 🔥\t%_`"), "'温度 ✓ 🔥\t%_`'");
        assert_eq!(literal("é'é"), "'é\\'é'");
    }

    #[test]
    fn decimals_round_to_column_scale_without_floats() {
        let text = |d: Decimal| {
            let mut out = String::new();
            push_decimal(d, &mut out);
            out
        };
        assert_eq!(text(dec("0.1")), "0.1");
        assert_eq!(
            text(dec("1234567890123456.12345678")),
            "1234567890123456.12345678"
        );
        assert_eq!(text(dec("0.123456785")), "0.12345679");
        assert_eq!(text(dec("-0.123456785")), "-0.12345679");
        assert_eq!(text(dec("2.000000004")), "2.00000000");
        assert_eq!(text(dec("-42")), "-42");
        assert_eq!(text(Decimal::MAX), Decimal::MAX.to_string());
    }

    #[test]
    fn datetimes_have_millisecond_precision() {
        let mut out = String::new();
        push_datetime(dt(2025, 4, 10, 0, 0, 0, 0), &mut out);
        push_datetime(
            NaiveDate::from_ymd_opt(999 + 1, 1, 2)
                .unwrap()
                .and_hms_nano_opt(3, 4, 5, 6_999_999)
                .unwrap(),
            &mut out,
        );
        // Leap second.
        push_datetime(
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_milli_opt(23, 59, 59, 1_500)
                .unwrap(),
            &mut out,
        );
        assert_eq!(
            out,
            "'2025-04-10 00:00:00.000''1000-01-02 03:04:05.006''2016-12-31 23:59:59.999'"
        );
    }

    #[test]
    fn kafka_timestamps_are_utc_and_null_when_unrepresentable() {
        assert_eq!(
            kafka_ts_to_datetime(1_744_273_815_123),
            Some(dt(2025, 4, 10, 8, 30, 15, 123))
        );
        assert_eq!(kafka_ts_to_datetime(0), Some(dt(1970, 1, 1, 0, 0, 0, 0)));
        assert_eq!(
            kafka_ts_to_datetime(-1),
            Some(dt(1969, 12, 31, 23, 59, 59, 999))
        );
        assert_eq!(kafka_ts_to_datetime(i64::MAX), None);
        assert_eq!(kafka_ts_to_datetime(-40_000_000_000_000), None);
    }

    #[test]
    fn encodes_one_statement_with_all_columns() {
        let mut second = row(43);
        second.pboxid = "o'brien".into();
        second.company = None;
        second.work_threshold = None;
        second.kafka_ts_ms = None;
        let mut sql = String::from("stale");
        sql.clear();
        encode_insert("iot_data", &[row(42), second], &mut sql);
        assert_eq!(
            sql,
            "INSERT INTO `iot_data` (event_time, pboxid, metric, latitude, longitude, company, \
             site, line, device_name, model, device_status, work_threshold, src_partition, \
             src_offset, kafka_ts) VALUES \
             ('2025-04-10 08:30:15.123','pbox-001',12.5,31.23,121.47,'ACME',NULL,'L1',NULL,NULL,\
             'working',10,2,42,'2025-04-10 08:30:15.123'),\
             ('2025-04-10 08:30:15.123','o\\'brien',12.5,31.23,121.47,NULL,NULL,'L1',NULL,NULL,\
             'working',NULL,2,43,NULL) \
             ON DUPLICATE KEY UPDATE src_offset = src_offset"
        );
    }

    #[test]
    fn encode_appends_and_writes_nothing_for_no_rows() {
        let mut sql = String::from("-- ");
        encode_insert("iot_data", &[], &mut sql);
        assert_eq!(sql, "-- ");
        encode_insert("iot_data", &[row(1)], &mut sql);
        assert!(sql.starts_with("-- INSERT INTO"));
    }

    #[test]
    fn days_lists_each_touched_day_once() {
        let mut rows = vec![row(1), row(2), row(3)];
        rows[1].event_time = dt(2025, 4, 8, 23, 59, 59, 999);
        rows[2].event_time = dt(2025, 4, 11, 0, 0, 0, 0);
        let days: Vec<_> = days(&rows).into_iter().collect();
        assert_eq!(
            days,
            vec![
                NaiveDate::from_ymd_opt(2025, 4, 8).unwrap(),
                NaiveDate::from_ymd_opt(2025, 4, 10).unwrap(),
                NaiveDate::from_ymd_opt(2025, 4, 11).unwrap(),
            ]
        );
    }

    fn worst_case_row() -> Row {
        // 4-byte characters in every text column at full length, longest decimals.
        let text = |n: usize| Some("🔥".repeat(n));
        Row {
            event_time: dt(9999, 12, 30, 23, 59, 59, 999),
            pboxid: "🔥".repeat(PBOXID_MAX_CHARS),
            metric: dec("-9999999999999999.99999999"),
            latitude: dec("-999.99999999"),
            longitude: dec("-999.99999999"),
            company: text(TEXT_MAX_CHARS),
            site: text(TEXT_MAX_CHARS),
            line: text(TEXT_MAX_CHARS),
            device_name: text(TEXT_MAX_CHARS),
            model: text(TEXT_MAX_CHARS),
            device_status: text(STATUS_MAX_CHARS),
            work_threshold: Some(dec("-9999999999999999.99999999")),
            src_partition: i32::MIN,
            src_offset: i64::MIN,
            kafka_ts_ms: Some(253_402_300_799_999),
        }
    }

    #[test]
    fn max_encoded_row_bytes_bounds_the_worst_case_row() {
        let worst = worst_case_row();
        assert_eq!(validate_row(&worst), Ok(()));
        let mut one = String::new();
        encode_insert("t", std::slice::from_ref(&worst), &mut one);
        let mut two = String::new();
        encode_insert("t", &[worst.clone(), worst], &mut two);
        let per_row = two.len() - one.len();
        assert!(
            per_row <= MAX_ENCODED_ROW_BYTES,
            "{per_row} > {MAX_ENCODED_ROW_BYTES}"
        );
        // Escaping doubles ASCII specials, which are 1 byte: still within 4 bytes per character.
        let mut quotes = row(1);
        quotes.pboxid = "'".repeat(PBOXID_MAX_CHARS);
        let mut out = String::new();
        encode_row(&quotes, &mut out);
        assert!(out.len() < MAX_ENCODED_ROW_BYTES);
    }

    #[test]
    fn thousand_typical_rows_are_far_below_the_default_packet_limit() {
        let rows: Vec<Row> = (0..1000).map(row).collect();
        let mut sql = String::new();
        encode_insert("iot_data", &rows, &mut sql);
        assert!(sql.len() < 300 * 1000, "{} bytes", sql.len());
        assert!(sql.len() < 16 * 1024 * 1024 / 50);
        assert!(max_rows_for_packet(16 * 1024 * 1024) >= 4_000);
        assert_eq!(max_rows_for_packet(10), 0);
    }

    #[test]
    fn validate_row_rejects_values_the_columns_cannot_hold() {
        assert_eq!(validate_row(&row(1)), Ok(()));

        let mut r = row(1);
        r.pboxid = "x".repeat(65);
        assert!(matches!(
            validate_row(&r),
            Err(RowError::TooLong {
                column: "pboxid",
                chars: 65,
                max: 64
            })
        ));
        // 64 characters of 4 bytes each are fine: the limit is in characters.
        r.pboxid = "🔥".repeat(64);
        assert_eq!(validate_row(&r), Ok(()));

        let mut r = row(1);
        r.device_status = Some("s".repeat(33));
        assert!(matches!(
            validate_row(&r),
            Err(RowError::TooLong {
                column: "device_status",
                ..
            })
        ));

        let mut r = row(1);
        r.metric = dec("9999999999999999.999999995"); // rounds up to 10^16
        assert!(matches!(
            validate_row(&r),
            Err(RowError::OutOfRange {
                column: "metric",
                ..
            })
        ));
        r.metric = dec("9999999999999999.99999999");
        assert_eq!(validate_row(&r), Ok(()));

        let mut r = row(1);
        r.longitude = dec("-1000");
        assert!(matches!(
            validate_row(&r),
            Err(RowError::OutOfRange {
                column: "longitude",
                ..
            })
        ));

        let mut r = row(1);
        r.work_threshold = Some(dec("100000000000000000"));
        assert!(matches!(
            validate_row(&r),
            Err(RowError::OutOfRange {
                column: "work_threshold",
                ..
            })
        ));

        let mut r = row(1);
        r.event_time = dt(999, 12, 31, 0, 0, 0, 0);
        assert!(matches!(
            validate_row(&r),
            Err(RowError::EventTimeOutOfRange(_))
        ));
        r.event_time = dt(9999, 12, 31, 0, 0, 0, 0);
        assert!(matches!(
            validate_row(&r),
            Err(RowError::EventTimeOutOfRange(_))
        ));
    }
}
