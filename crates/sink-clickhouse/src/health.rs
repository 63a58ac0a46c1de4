//! The start-up check: the server answers, its version decides what the sink may use, and the
//! table is there (created when `clickhouse.create_table` is on).

use std::time::Duration;

use clickhouse::Client;
use iotflow_config::{ClickhouseCompression, ClickhouseConfig};
use iotflow_sink::SinkError;

use crate::encoder::{create_table_ddl, DEDUP_WINDOW};
use crate::retry::classify;
use crate::ClickhouseConnector;

/// How long the server may take to answer `SELECT version()` at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server version offers the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The crate's schema validation works (`RowBinaryWithNamesAndTypes`; 24.1 and later).
    pub validation: bool,
    /// `insert_deduplication_token` and `non_replicated_deduplication_window` exist (22.2 and
    /// later): a retried batch can be dropped by the server instead of stored twice.
    pub dedup_tokens: bool,
}

impl Capabilities {
    /// From `SELECT version()` (`18.16.1`, `24.8.4.13`); unknown text offers nothing.
    pub fn of(version: &str) -> Capabilities {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        Capabilities {
            validation: major >= 24,
            dedup_tokens: (major, minor) >= (22, 2),
        }
    }
}

/// Connects, reads the server version, and (optionally) creates the table. Servers before 24.1
/// cannot describe a table the way the crate's schema validation needs
/// (`RowBinaryWithNamesAndTypes`), so validation is turned off there; the round-trip
/// integration test is what guards the row layout.
///
/// `workers` is not used: the `clickhouse` client keeps its own pool of HTTP connections,
/// which grows with the inserts in flight.
pub async fn prepare(
    config: &ClickhouseConfig,
    workers: usize,
) -> Result<ClickhouseConnector, SinkError> {
    let _ = workers;
    let ClickhouseConfig {
        url,
        database,
        table,
        ..
    } = config;
    let base = Client::default()
        .with_url(url)
        .with_user(&config.user)
        .with_password(&config.password)
        .with_database(database)
        .with_compression(match config.compression {
            ClickhouseCompression::Lz4 => clickhouse::Compression::Lz4,
            ClickhouseCompression::None => clickhouse::Compression::None,
        })
        .with_validation(false);
    let reach = format!("cannot reach ClickHouse at {url}");
    let version: String =
        tokio::time::timeout(CONNECT_TIMEOUT, base.query("SELECT version()").fetch_one())
            .await
            .map_err(|_| {
                SinkError::Transient(format!("{reach}: no answer within {CONNECT_TIMEOUT:?}"))
            })?
            .map_err(|e| classify(&reach, &e))?;
    let capabilities = Capabilities::of(&version);
    let client = base.clone().with_validation(capabilities.validation);
    if config.create_table {
        let ddl = create_table_ddl(table, capabilities.dedup_tokens);
        base.query(&ddl).execute().await.map_err(|e| {
            classify(
                &format!("creating ClickHouse table `{database}`.`{table}` on {url}"),
                &e,
            )
        })?;
    }
    let on = format!("ClickHouse at {url}");
    let exists: u64 = base
        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?")
        .bind(table)
        .fetch_one()
        .await
        .map_err(|e| classify(&on, &e))?;
    if exists == 0 {
        return Err(SinkError::Definite(format!(
            "ClickHouse table `{database}`.`{table}` does not exist on {url}; apply schemas/clickhouse/iot_data.sql or set clickhouse.create_table = true"
        )));
    }
    if capabilities.dedup_tokens {
        let engine: String = base
            .query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = ?")
            .bind(table)
            .fetch_one()
            .await
            .map_err(|e| classify(&on, &e))?;
        let windowed = engine.contains("non_replicated_deduplication_window")
            || engine.starts_with("Replicated");
        if !windowed {
            tracing::warn!(%table, "ClickHouse table has no non_replicated_deduplication_window: a retried batch whose first attempt was stored leaves duplicates until merges (FINAL still counts exactly); ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW} to drop them at insert");
        }
    }
    tracing::info!(%url, %version, validation = capabilities.validation, dedup_tokens = capabilities.dedup_tokens, "ClickHouse sink ready");
    Ok(ClickhouseConnector {
        config: config.clone(),
        client,
        version,
        capabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_the_version() {
        let c = |v: &str| Capabilities::of(v);
        assert_eq!(
            c("18.16.1"),
            Capabilities {
                validation: false,
                dedup_tokens: false
            }
        );
        assert!(!c("22.1.3.7").dedup_tokens);
        assert!(c("22.2.2.1").dedup_tokens && !c("22.2.2.1").validation);
        assert!(c("23.8.16.40").dedup_tokens);
        assert_eq!(
            c("24.8.4.13"),
            Capabilities {
                validation: true,
                dedup_tokens: true
            }
        );
        assert_eq!(c("garbage"), c("0.0"));
    }
}
