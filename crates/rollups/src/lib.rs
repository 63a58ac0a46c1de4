//! Per-device rollups, heat-map tiles and day tracks (issue 13; docs/rollups.md, docs/geo.md).
//!
//! With `[rollups] enabled`, every batch the MySQL sink stores is followed, before the batch is
//! acknowledged, by one MySQL transaction ([`store`]) that brings up to date:
//!
//! * `iot_rollup_minute`, `iot_rollup_hour`, `iot_rollup_day`: per device and bucket the
//!   count, min, max, exact sum, avg and last of metric ([`agg`]);
//! * `iot_heat_hour`: readings per (hour, geohash tile, device), the heat map;
//! * `iot_tracks`: per device and day the points, metres travelled and stops.
//!
//! Then the buckets' final rows are copied to ClickHouse ([`clickhouse_copy`]) when its sink is on.
//! The offsets of a batch are committed only after all of it, so a crash in between replays
//! the batch, and replayed readings make their buckets be recomputed from the stored rows:
//! the rollups are exact under reordering, replays and SIGKILLs (see [`store`]).

#![deny(missing_docs)]

pub mod agg;
pub mod api;
pub mod clickhouse_copy;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use iotflow_config::RollupsConfig;
use iotflow_sink::SinkError;
use iotflow_sink_mysql::{AfterWrite, Row};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;

pub use agg::{Agg, Grain, Pt};
pub use metrics::RollupMetrics;
pub use store::{Applied, Params, Store};

/// The [`Params`] of a `[rollups]` section.
pub fn params(config: &RollupsConfig) -> Params {
    Params {
        precision: config.geohash_precision as usize,
        stop_radius_m: config.stop_radius_m,
        stop_min_ms: (config.stop_min_secs.min(i64::MAX as u64 / 1000) * 1000) as i64,
    }
}

/// Creates the rollup tables that are missing (MySQL, and ClickHouse when `clickhouse` is
/// given).
pub async fn create_tables(
    pool: &Pool,
    clickhouse: Option<&iotflow_sink_clickhouse::Client>,
) -> Result<(), SinkError> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| iotflow_sink_mysql::retry::classify("connecting to MySQL", &e))?;
    for statement in sql_statements(store::MYSQL_DDL) {
        conn.query_drop(statement).await.map_err(|e| {
            iotflow_sink_mysql::retry::classify(
                "creating the rollup tables (schemas/mysql/rollups.sql)",
                &e,
            )
        })?;
    }
    if let Some(client) = clickhouse {
        clickhouse_copy::create_tables(client).await?;
    }
    Ok(())
}

/// The statements of a DDL file: split at `;` line ends, comments dropped.
pub fn sql_statements(ddl: &str) -> Vec<String> {
    let text: String = ddl
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(";\n")
        .map(|s| s.trim().trim_end_matches(';').trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One API page: (pool, readings table, query) → its JSON.
type ApiCall = fn(Pool, String, String) -> Pin<Box<dyn Future<Output = String> + Send>>;

/// Serves the JSON API of [`api`] on `metrics`' endpoint, querying through `pool` on
/// `runtime` (the routes run on the endpoint's blocking threads).
pub fn add_routes(
    metrics: &iotflow_metrics::Metrics,
    pool: Pool,
    readings_table: &str,
    runtime: tokio::runtime::Handle,
) {
    let route = |f: ApiCall| {
        let (pool, table, runtime) = (pool.clone(), readings_table.to_string(), runtime.clone());
        let r: iotflow_metrics::Route = std::sync::Arc::new(move |query: &str| {
            runtime.block_on(f(pool.clone(), table.clone(), query.to_string()))
        });
        r
    };
    metrics.add_route(
        "/api/heatmap",
        route(|p, _, q| Box::pin(async move { api::heatmap(&p, &q).await })),
    );
    metrics.add_route(
        "/api/tracks",
        route(|p, _, q| Box::pin(async move { api::tracks(&p, &q).await })),
    );
    metrics.add_route(
        "/api/track",
        route(|p, t, q| Box::pin(async move { api::track(&p, &t, &q).await })),
    );
    metrics.add_route(
        "/api/rollups",
        route(|p, _, q| Box::pin(async move { api::rollups(&p, &q).await })),
    );
}

/// One worker's rollups: the [`AfterWrite`] of its MySQL writer.
pub struct Rollups {
    store: Store,
    clickhouse: Option<iotflow_sink_clickhouse::Client>,
    metrics: RollupMetrics,
}

impl Rollups {
    /// Rollups through `pool`, recomputing from `readings_table`, copying to `clickhouse`.
    pub fn new(
        pool: Pool,
        readings_table: &str,
        params: Params,
        clickhouse: Option<iotflow_sink_clickhouse::Client>,
        metrics: RollupMetrics,
    ) -> Rollups {
        Rollups {
            store: Store::new(pool, readings_table, params),
            clickhouse,
            metrics,
        }
    }

    /// Updates the rollups of `rows` (just stored).
    pub async fn update(&mut self, rows: &[Row]) -> Result<Applied, SinkError> {
        let started = Instant::now();
        let points: Vec<Pt> = rows
            .iter()
            .map(|r| Pt {
                pboxid: r.pboxid.clone(),
                at: r.event_time,
                partition: r.src_partition,
                offset: r.src_offset,
                metric: r.metric,
                lat: r.latitude,
                lon: r.longitude,
            })
            .collect();
        let applied = self.store.apply(&points).await?;
        if let Some(client) = &self.clickhouse {
            clickhouse_copy::copy(client, &applied.rows).await?;
        }
        self.metrics.updated.inc_by(applied.updated as u64);
        self.metrics.recomputed.inc_by(applied.recomputed as u64);
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(applied)
    }
}

impl AfterWrite for Rollups {
    fn after_write<'a>(
        &'a mut self,
        stored: &'a [Row],
    ) -> Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>> {
        Box::pin(async move { self.update(stored).await.map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_files_split_into_their_statements() {
        let mysql = sql_statements(store::MYSQL_DDL);
        assert_eq!(mysql.len(), store::TABLES.len());
        for (s, t) in mysql.iter().zip(store::TABLES) {
            assert!(
                s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {t} ")),
                "{s}"
            );
        }
        let ch = sql_statements(clickhouse_copy::DDL);
        assert_eq!(ch.len(), 3);
    }
}
