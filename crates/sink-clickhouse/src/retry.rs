//! Which ClickHouse errors are worth retrying, and which are a row's fault.
//!
//! Type and schema errors are never retried; network trouble, overload and a server that is
//! restarting are. A value a column cannot hold is the row's problem: the row goes to the dead
//! letters ([`is_row_error`]).

use clickhouse::error::Error;
use iotflow_sink::SinkError;

/// Server error codes that go away by themselves.
///
/// 60 and 81 look definite but are not, for this sink: a server restarting answers them for
/// tables and databases it has not loaded yet, and a table or database that is missing for good
/// was already caught by the start-up check ([`prepare`](crate::prepare) fails when the table
/// does not exist), so after start they mean "not yet" (or an operator dropped the table under
/// a running job, which then stalls with the error in its log and metrics until the table is
/// back). 218, 236 and 394 are what a server shutting down answers for tables being shut down
/// and queries it cancels.
pub const TRANSIENT_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (connection cut mid-request)
    60,  // UNKNOWN_TABLE (not loaded yet after a restart; see above)
    81,  // UNKNOWN_DATABASE (likewise)
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    218, // TABLE_IS_DROPPED ("dropped or detached": also a table shut down with the server)
    236, // ABORTED (e.g. "Shutdown is called for table")
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY (replica recovering)
    252, // TOO_MANY_PARTS (merges are behind)
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED (a server shutting down cancels running queries)
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

/// Server error codes about a value of a row: the row goes to the dead letters. (Parse errors
/// of RowBinary are not among them: rows that passed the parser's column rules only fail to
/// parse when the table's columns differ from the sink's, which is the table's problem.)
pub const ROW_ERROR_CODES: &[u32] = &[
    69,  // ARGUMENT_OUT_OF_BOUND
    131, // TOO_LARGE_STRING_SIZE
    407, // DECIMAL_OVERFLOW
];

/// The server's error code in a response like `Code: 60, e.displayText() = ...` (old) or
/// `Code: 60. DB::Exception: ...` (new).
pub(crate) fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `e`, met while doing `context`, as a transient or definite [`SinkError`].
pub fn classify(context: &str, e: &Error) -> SinkError {
    let message = format!("{context}: {e}");
    let transient = match e {
        Error::Network(_) | Error::TimedOut => true,
        Error::BadResponse(text) => server_code(text).is_none_or(|c| TRANSIENT_CODES.contains(&c)),
        _ => false,
    };
    if transient {
        SinkError::Transient(message)
    } else {
        SinkError::Definite(message)
    }
}

/// Whether the server refused an insert for a value of one of its rows
/// ([`ROW_ERROR_CODES`]).
pub fn is_row_error(e: &Error) -> bool {
    matches!(e, Error::BadResponse(text) if server_code(text).is_some_and(|c| ROW_ERROR_CODES.contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_server_codes_of_old_and_new_servers() {
        assert_eq!(
            server_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert_eq!(
            server_code("Code: 252. DB::Exception: Too many parts"),
            Some(252)
        );
        assert_eq!(server_code("502 Bad Gateway"), None);
    }

    #[test]
    fn classification() {
        assert!(classify("x", &Error::TimedOut).is_transient());
        assert!(
            classify("x", &Error::BadResponse("Code: 252. Too many parts".into())).is_transient()
        );
        assert!(
            classify("x", &Error::BadResponse("503 Service Unavailable".into())).is_transient()
        );
        assert!(
            !classify("x", &Error::BadResponse("Code: 53. Type mismatch".into())).is_transient()
        );
        assert!(!classify("x", &Error::NotEnoughData).is_transient());
    }

    #[test]
    fn value_errors_are_the_rows_fault() {
        for code in ROW_ERROR_CODES {
            let text = format!("Code: {code}. DB::Exception: value");
            assert!(is_row_error(&Error::BadResponse(text)), "{code}");
        }
        assert!(!is_row_error(&Error::BadResponse(
            "Code: 60. DB::Exception: Table x does not exist".into()
        )));
        assert!(!is_row_error(&Error::TimedOut));
    }

    #[test]
    fn a_restarting_or_stopping_server_is_transient() {
        // What 18.16 answers for a table it has not loaded (yet): transient, because the
        // start-up check already proved the table exists.
        let unknown = "Code: 60, e.displayText() = DB::Exception: Table iotflow.iot_data doesn't exist., e.what() = DB::Exception\n";
        assert!(classify("x", &Error::BadResponse(unknown.into())).is_transient());
        // The modern form, and the database not loaded yet.
        for text in [
            "Code: 60. DB::Exception: Table iotflow.iot_data does not exist. (UNKNOWN_TABLE) (version 24.8.4.13 (official build))",
            "Code: 81. DB::Exception: Database iotflow does not exist. (UNKNOWN_DATABASE)",
            "Code: 218. DB::Exception: Table is dropped or detached. (TABLE_IS_DROPPED)",
            "Code: 236. DB::Exception: Shutdown is called for table. (ABORTED)",
            "Code: 394. DB::Exception: Query was cancelled. (QUERY_WAS_CANCELLED)",
            "Code: 210. DB::NetException: Connection reset by peer (NETWORK_ERROR)",
        ] {
            let e = classify("inserting", &Error::BadResponse(text.into()));
            assert!(e.is_transient(), "{text}");
            assert!(e.to_string().contains(text), "the server's words are kept: {e}");
        }
        // Schema and privilege errors stay definite.
        for text in [
            "Code: 16. DB::Exception: No such column metric in table iotflow.iot_data",
            "Code: 497. DB::Exception: default: Not enough privileges. (ACCESS_DENIED)",
            "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)",
        ] {
            assert!(
                !classify("x", &Error::BadResponse(text.into())).is_transient(),
                "{text}"
            );
        }
    }
}
