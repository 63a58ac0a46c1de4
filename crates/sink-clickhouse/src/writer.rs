//! The ClickHouse [`BatchWriter`] and the start-up check.

use std::time::Duration;

use clickhouse::Client;
use iotflow_sink::{BatchWriter, SinkError};

use crate::Row;

/// The DDL of `iot_data`, applied at start when `clickhouse.create_table` is on.
pub const IOT_DATA_DDL: &str = include_str!("../../../schemas/clickhouse/iot_data.sql");

/// Server error codes that go away by themselves.
const TRANSIENT_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (connection cut mid-request)
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY (replica recovering)
    252, // TOO_MANY_PARTS (merges are behind)
    319, // UNKNOWN_STATUS_OF_INSERT
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

/// The server's error code in a response like `Code: 60, e.displayText() = ...` (old) or
/// `Code: 60. DB::Exception: ...` (new).
fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Type and schema errors are never retried; network trouble and overload are.
pub(crate) fn classify(context: &str, e: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error;
    let message = format!("{context}: {e}");
    let transient = match &e {
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

/// Writes batches of [`Row`]s into one table.
pub struct ClickhouseWriter {
    client: Client,
    table: String,
}

impl ClickhouseWriter {
    /// A writer on `client` (as returned by [`prepare`]).
    pub fn new(client: Client, table: &str) -> Self {
        ClickhouseWriter {
            client,
            table: table.to_string(),
        }
    }
}

impl BatchWriter for ClickhouseWriter {
    type Row = Row;

    async fn write(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let context = || {
            format!(
                "inserting {} rows into ClickHouse table `{}`",
                rows.len(),
                self.table
            )
        };
        let mut insert = self
            .client
            .insert::<Row>(&self.table)
            .await
            .map_err(|e| classify(&context(), e))?;
        for row in rows {
            insert
                .write(row)
                .await
                .map_err(|e| classify(&context(), e))?;
        }
        insert.end().await.map_err(|e| classify(&context(), e))
    }

    fn row_size(row: &Row) -> usize {
        90 + row.pboxid.len()
            + [
                &row.company,
                &row.site,
                &row.line,
                &row.device_name,
                &row.model,
                &row.device_status,
            ]
            .iter()
            .map(|s| s.as_ref().map_or(1, |s| s.len() + 2))
            .sum::<usize>()
    }

    fn kafka_ts_ms(row: &Row) -> Option<i64> {
        row.kafka_ts
            .map(|s| s as i64 * 1000 + row.kafka_ms.unwrap_or(0) as i64)
    }
}

/// A checked connection.
#[derive(Clone)]
pub struct Prepared {
    /// The client, configured for the server's version.
    pub client: Client,
    /// What `SELECT version()` said.
    pub version: String,
}

/// Connects, reads the server version, and (optionally) creates the table. Servers before 24.1
/// cannot describe a table the way the crate's schema validation needs
/// (`RowBinaryWithNamesAndTypes`), so validation is turned off there; the round-trip
/// integration test is what guards the row layout.
pub async fn prepare(
    url: &str,
    user: &str,
    password: &str,
    database: &str,
    table: &str,
    create_table: bool,
    timeout: Duration,
) -> Result<Prepared, String> {
    let base = Client::default()
        .with_url(url)
        .with_user(user)
        .with_password(password)
        .with_database(database)
        .with_validation(false);
    let version: String = tokio::time::timeout(timeout, base.query("SELECT version()").fetch_one())
        .await
        .map_err(|_| format!("cannot reach ClickHouse at {url}: no answer within {timeout:?}"))?
        .map_err(|e| format!("cannot reach ClickHouse at {url}: {e}"))?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let client = base.clone().with_validation(major >= 24);
    if create_table {
        // Comments go (the crate reads `?` as a bind placeholder, and comments have some).
        let ddl: String = IOT_DATA_DDL
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("EXISTS iot_data (", &format!("EXISTS `{table}` ("));
        base.query(&ddl).execute().await.map_err(|e| {
            format!("creating ClickHouse table `{database}`.`{table}` on {url}: {e}")
        })?;
    }
    let exists: u64 = base
        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?")
        .bind(table)
        .fetch_one()
        .await
        .map_err(|e| format!("ClickHouse at {url}: {e}"))?;
    if exists == 0 {
        return Err(format!(
            "ClickHouse table `{database}`.`{table}` does not exist on {url}; apply schemas/clickhouse/iot_data.sql or set clickhouse.create_table = true"
        ));
    }
    tracing::info!(%url, %version, validation = major >= 24, "ClickHouse sink ready");
    Ok(Prepared { client, version })
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
        use clickhouse::error::Error;
        assert!(classify("x", Error::TimedOut).is_transient());
        assert!(
            classify("x", Error::BadResponse("Code: 252. Too many parts".into())).is_transient()
        );
        assert!(classify("x", Error::BadResponse("503 Service Unavailable".into())).is_transient());
        assert!(
            !classify("x", Error::BadResponse("Code: 53. Type mismatch".into())).is_transient()
        );
        assert!(!classify(
            "x",
            Error::BadResponse("Code: 60, e.displayText() = no table".into())
        )
        .is_transient());
        assert!(!classify("x", Error::NotEnoughData).is_transient());
    }
}
