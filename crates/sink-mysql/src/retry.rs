//! Error classification for the MySQL sink: retry, stop, or send the row to the dead letters.
//!
//! Whether an error passes by itself is the same question for every MySQL client of iotflow
//! and answered once, by [`iotflow_mysql::mysql_error_is_transient`] (its table:
//! [`iotflow_mysql::TRANSIENT_SERVER_CODES`]). What is the sink's own is the third answer:
//! a value of one row the table cannot hold ([`ROW_ERROR_CODES`]).

use iotflow_sink::SinkError;

pub use iotflow_mysql::{mysql_error_is_transient, TRANSIENT_SERVER_CODES};

/// Server errors about a value of a row, not about the sink: the row goes to the dead letters
/// and the rest of the batch is written.
pub const ROW_ERROR_CODES: &[u16] = &[
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

/// The sink error for `e`, met while doing `context`: transient when retrying later may
/// succeed ([`mysql_error_is_transient`]), definite otherwise.
pub fn classify(context: &str, e: &mysql_async::Error) -> SinkError {
    let message = format!("{context}: {e}");
    if mysql_error_is_transient(e) {
        SinkError::Transient(message)
    } else {
        SinkError::Definite(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "test".into(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn value_errors_are_the_rows_and_nothing_else_is() {
        for code in ROW_ERROR_CODES {
            assert!(is_row_error(&server_error(*code)), "{code}");
            assert!(!mysql_error_is_transient(&server_error(*code)), "{code}");
        }
        for code in [1205, 1142, 2013, 1064] {
            assert!(!is_row_error(&server_error(code)), "{code}");
        }
    }

    #[test]
    fn classify_names_the_context_and_keeps_the_class() {
        let e = classify("inserting 3 rows into `iot_data`", &server_error(1205));
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "transient: inserting 3 rows into `iot_data`: Server error: `ERROR 1205 (HY000): test'"
        );
        let e = classify("connecting to MySQL", &server_error(1045));
        assert!(!e.is_transient());
        assert!(e.to_string().starts_with("connecting to MySQL: "));
    }
}
