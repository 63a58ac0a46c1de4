//! Reading a day's input: each worker's share of the day's readings, from MySQL (the day
//! partition of `iot_data`) or ClickHouse, and the per-device thresholds from `device_info`.

use anyhow::{bail, Context};
use chrono::{NaiveDate, NaiveDateTime};
use iotflow_config::Config;
use iotflow_worktime::{scale, Point};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;

pub(crate) fn ms_of(text: &str) -> anyhow::Result<i64> {
    let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .with_context(|| format!("event_time `{text}`"))?;
    Ok(t.and_utc().timestamp_millis())
}

/// Reads worker `index` of `peers`'s share of the day's readings: `(pboxid, (ms, metric))`.
pub(crate) async fn read_share(
    pool: &Pool,
    day: NaiveDate,
    index: usize,
    peers: usize,
) -> anyhow::Result<Vec<(String, Point)>> {
    let mut conn = pool.get_conn().await?;
    let partition = format!("p{}", day.format("%Y%m%d"));
    let share = format!("MOD(CRC32(pboxid), {peers}) = {index}");
    let from = format!("{} 00:00:00", day.format("%Y-%m-%d"));
    let to = format!(
        "{} 00:00:00",
        day.succ_opt().unwrap_or(day).format("%Y-%m-%d")
    );
    let select = "SELECT pboxid, CAST(event_time AS CHAR), CAST(metric AS CHAR) FROM iot_data";
    // The day partition when it exists (the sink creates one per day); the range otherwise.
    let exists: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'iot_data' AND PARTITION_NAME = ?",
            (partition.as_str(),),
        )
        .await?;
    let sql = if exists.unwrap_or(0) > 0 {
        format!("{select} PARTITION (`{partition}`) WHERE {share}")
    } else {
        format!("{select} WHERE event_time >= '{from}' AND event_time < '{to}' AND {share}")
    };
    let rows: Vec<(String, String, String)> = conn
        .query(sql)
        .await
        .with_context(|| format!("reading the readings of {day}"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (pboxid, time, metric) in rows {
        let ms = ms_of(&time)?;
        let metric =
            scale(&metric).with_context(|| format!("metric `{metric}` of {pboxid} at {time}"))?;
        out.push((pboxid, (ms, metric)));
    }
    Ok(out)
}

/// A reading as read from ClickHouse (`schemas/clickhouse/iot_data.sql`): seconds and
/// milliseconds of the wall time, the metric as `Decimal(24, 8)` (value × 10^8, our scale).
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ChReading {
    pboxid: String,
    event_time: u32,
    event_ms: u16,
    metric: i128,
}

/// Worker `index` of `peers`'s share of the day from ClickHouse (`FINAL`: each reading once,
/// whatever re-deliveries are not merged yet).
pub(crate) async fn read_share_clickhouse(
    config: &Config,
    day: NaiveDate,
    index: usize,
    peers: usize,
) -> anyhow::Result<Vec<(String, Point)>> {
    let ch = &config.clickhouse;
    let client = clickhouse::Client::default()
        .with_url(&ch.url)
        .with_user(&ch.user)
        .with_password(&ch.password)
        .with_database(&ch.database)
        .with_validation(false);
    let table = &ch.table;
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("clickhouse.table `{table}` must be letters, digits and underscores");
    }
    let rows: Vec<ChReading> = client
        .query(&format!(
            "SELECT pboxid, event_time, event_ms, metric FROM `{table}` FINAL \
             WHERE toYYYYMMDD(event_time) = {} AND cityHash64(pboxid) % {peers} = {index}",
            day.format("%Y%m%d")
        ))
        .fetch_all()
        .await
        .with_context(|| format!("reading {day} from ClickHouse at {}", ch.url))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let ms = i64::from(r.event_time) * 1000 + i64::from(r.event_ms);
            (r.pboxid, (ms, r.metric))
        })
        .collect())
}

/// Per-device thresholds from `device_info`, when the table exists.
pub(crate) async fn read_thresholds(pool: &Pool) -> anyhow::Result<Vec<(String, i128)>> {
    let mut conn = pool.get_conn().await?;
    let exists: Option<u64> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'device_info'",
        )
        .await?;
    if exists.unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT pboxid, CAST(work_threshold AS CHAR) FROM device_info WHERE work_threshold IS NOT NULL",
        )
        .await?;
    rows.into_iter()
        .map(|(id, t)| {
            let v = scale(&t).with_context(|| format!("work_threshold `{t}` of {id}"))?;
            Ok((id, v))
        })
        .collect()
}
