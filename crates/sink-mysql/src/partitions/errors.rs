//! What can go wrong while managing partitions, and which of it is worth retrying.

use std::time::Duration;

use chrono::NaiveDate;
use iotflow_mysql::mysql_error_is_transient;

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
    #[error("table `{database}`.`{table}` does not exist: apply its schema from schemas/mysql/")]
    TableMissing {
        /// Database searched.
        database: String,
        /// Table name.
        table: String,
    },
    /// The table is not partitioned the way the manager expects.
    #[error(
        "table `{database}`.`{table}` must be PARTITION BY RANGE COLUMNS on its time column \
         (event_time for readings, bucket or day for rollups) with datetime bounds: {detail}"
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
    /// The sink error for this failure met while `context` (`creating day partitions`):
    /// transient when [`PartitionError::is_transient`], definite otherwise.
    pub fn into_sink_error(self, context: &str) -> iotflow_sink::SinkError {
        let message = format!("{context}: {self}");
        if self.is_transient() {
            iotflow_sink::SinkError::Transient(message)
        } else {
            iotflow_sink::SinkError::Definite(message)
        }
    }

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

pub(crate) fn is_layout_conflict(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(server) if LAYOUT_CONFLICT_CODES.contains(&server.code))
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
}
