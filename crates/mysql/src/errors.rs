//! Which driver errors are worth retrying.
//!
//! One table for every component: the sink turns the answer into
//! `iotflow_sink::SinkError::{Transient, Definite}`, the partition manager into its own error's
//! `is_transient`, and the jobs into "retry with backoff" or "stop".

/// Server error codes that go away by themselves: retry later.
pub const TRANSIENT_SERVER_CODES: &[u16] = &[
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

/// Whether a mysql_async error is worth retrying later: lost connections (also one the server
/// closed for idling past `wait_timeout`), lock waits, deadlocks, server restarts, connection
/// and resource limits of the user. Privilege errors (1142, 1044, 1045, 1227), syntax errors,
/// data errors and anything unknown are definite.
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
    fn privilege_errors_are_definite_and_lock_waits_transient() {
        for code in [1142, 1044, 1045, 1227, 1064, 1526] {
            assert!(!mysql_error_is_transient(&server_error(code)), "{code}");
        }
        for code in [1205, 1213, 2013, 1927] {
            assert!(mysql_error_is_transient(&server_error(code)), "{code}");
        }
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other("reset")));
        assert!(mysql_error_is_transient(&io));
    }

    #[test]
    fn idle_closes_and_user_limits_are_transient() {
        // MySQL 8.0.24+ sends 4031 when it closed a connection idle past wait_timeout; 1203 is
        // the user's max_user_connections used up, 1226 an hourly per-account limit, 1969
        // MariaDB's max_statement_time. All pass by themselves: a retry can succeed.
        for code in [4031, 1203, 1226, 1969] {
            assert!(mysql_error_is_transient(&server_error(code)), "{code}");
        }
        // A missing privilege next to them stays definite.
        for code in [1227, 1044] {
            assert!(!mysql_error_is_transient(&server_error(code)), "{code}");
        }
    }
}
