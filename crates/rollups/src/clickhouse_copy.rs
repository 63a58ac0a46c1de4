//! The ClickHouse copy of the rollups (schemas/clickhouse/rollups.sql): after each MySQL
//! rollup transaction, the final rows of its buckets are inserted; `ReplacingMergeTree(readings)`
//! keeps, per bucket, the copy with the most readings, which is the newest (a bucket's set of
//! readings only grows). A crash between the MySQL commit and this insert replays the batch,
//! whose buckets are then recomputed and copied again.

use std::collections::BTreeMap;

use iotflow_model::columns::{to_scale, DECIMAL_SCALE};
use iotflow_sink::SinkError;
use iotflow_sink_clickhouse::Client;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::agg::Grain;
use crate::store::{table, BucketRow};

/// The ClickHouse DDL.
pub const DDL: &str = include_str!("../../../schemas/clickhouse/rollups.sql");

/// One rollup row as RowBinary wants it (column order of the DDL).
#[derive(Clone, Debug, clickhouse::Row, Serialize)]
struct ChRow<'a> {
    pboxid: &'a str,
    bucket: u32,
    readings: u64,
    metric_min: i128,
    metric_max: i128,
    metric_sum: i128,
    metric_avg: i128,
    metric_last: i128,
    last_time: u32,
    last_ms: u16,
}

fn scaled(d: Decimal) -> i128 {
    let mut d = to_scale(d);
    d.rescale(DECIMAL_SCALE);
    d.mantissa()
}

fn secs(at: chrono::NaiveDateTime) -> u32 {
    at.and_utc().timestamp().clamp(0, u32::MAX as i64) as u32
}

fn error(context: &str, e: clickhouse::error::Error) -> SinkError {
    // The ClickHouse sink's classification: network and server-side transient errors retry.
    iotflow_sink_clickhouse::classify(context, &e)
}

/// Creates the missing rollup tables.
pub async fn create_tables(client: &Client) -> Result<(), SinkError> {
    for statement in crate::sql_statements(DDL) {
        client
            .query(&statement)
            .execute()
            .await
            .map_err(|e| error("creating the ClickHouse rollup tables", e))?;
    }
    Ok(())
}

/// Inserts `rows`, one insert per grain.
pub async fn copy(client: &Client, rows: &[BucketRow]) -> Result<(), SinkError> {
    let mut by: BTreeMap<Grain, Vec<&BucketRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.grain).or_default().push(r);
    }
    for (grain, rows) in by {
        let name = table(grain);
        let context = format!(
            "copying {} rollup rows into ClickHouse `{name}`",
            rows.len()
        );
        let mut insert = client
            .insert::<ChRow<'static>>(name)
            .await
            .map_err(|e| error(&context, e))?;
        for r in rows {
            let a = &r.agg;
            let last_ms = (a.last_key.0.and_utc().timestamp_subsec_millis()).min(999) as u16;
            insert
                .write(&ChRow {
                    pboxid: &r.pboxid,
                    bucket: secs(r.bucket),
                    readings: a.readings,
                    metric_min: scaled(a.min),
                    metric_max: scaled(a.max),
                    metric_sum: scaled(a.sum),
                    metric_avg: scaled(a.avg()),
                    metric_last: scaled(a.last),
                    last_time: secs(a.last_key.0),
                    last_ms,
                })
                .await
                .map_err(|e| error(&context, e))?;
        }
        insert.end().await.map_err(|e| error(&context, e))?;
    }
    Ok(())
}
