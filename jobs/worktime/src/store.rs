//! Storing results: the result tables, the day's rows of `device_work_time` (replaced in one
//! transaction) and the run records of `device_work_time_runs`.

use anyhow::Context;
use chrono::NaiveDate;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;

use crate::compute::ResultRow;
use crate::DaySummary;

/// The result tables (`schemas/mysql/device_work_time.sql`).
pub const DEVICE_WORK_TIME_DDL: &str = include_str!("../../../schemas/mysql/device_work_time.sql");

pub(crate) fn text_of_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

pub(crate) fn scaled_text(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:08}", a / 100_000_000, a % 100_000_000)
}
/// Creates the result tables when missing.
pub async fn create_tables(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    for statement in iotflow_mysql::split_script(DEVICE_WORK_TIME_DDL) {
        conn.query_drop(&statement)
            .await
            .context("creating device_work_time")?;
    }
    Ok(())
}

/// Replaces the day's rows of `device_work_time` with `rows`, in one transaction.
pub(crate) async fn store(pool: &Pool, day: NaiveDate, rows: &[ResultRow]) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await?;
    let day_text = day.format("%Y-%m-%d").to_string();
    tx.exec_drop(
        "DELETE FROM device_work_time WHERE day = ?",
        (day_text.as_str(),),
    )
    .await?;
    for chunk in rows.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO device_work_time (day, pboxid, segments, working_seconds, first_reading, \
             last_reading, observed_seconds, utilisation, day_share, readings, threshold) VALUES ",
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * 11);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?,?,?,?,?,?,?)");
            let x = &r.result;
            params.extend([
                day_text.clone().into(),
                r.pboxid.clone().into(),
                x.segments.into(),
                x.working_seconds().into(),
                text_of_ms(x.first_ms).into(),
                text_of_ms(x.last_ms).into(),
                x.observed_seconds().into(),
                x.utilisation().into(),
                x.day_share().into(),
                x.readings.into(),
                scaled_text(r.threshold).into(),
            ]);
        }
        tx.exec_drop(sql, params).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn record_run(
    pool: &Pool,
    day: NaiveDate,
    status: &str,
    summary: &DaySummary,
    message: Option<&str>,
) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    conn.exec_drop(
        "INSERT INTO device_work_time_runs (day, status, started_at, finished_at, rows_read, devices, message) \
         VALUES (?, ?, NOW(3), IF(? = 'running', NULL, NOW(3)), ?, ?, ?) \
         ON DUPLICATE KEY UPDATE status = VALUES(status), \
         started_at = IF(VALUES(status) = 'running', VALUES(started_at), started_at), \
         finished_at = VALUES(finished_at), rows_read = VALUES(rows_read), devices = VALUES(devices), \
         message = VALUES(message)",
        (
            day.format("%Y-%m-%d").to_string(),
            status,
            status,
            summary.rows_read,
            summary.devices,
            message.map(|m| m.chars().take(1000).collect::<String>()),
        ),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use iotflow_worktime::scale;

    use super::*;
    use crate::read::ms_of;

    #[test]
    fn scaled_values_print_exactly() {
        assert_eq!(scaled_text(5_000_000_000), "50.00000000");
        assert_eq!(scaled_text(-5), "-0.00000005");
        assert_eq!(scaled_text(scale("42.125").unwrap()), "42.12500000");
    }

    #[test]
    fn times_round_trip() {
        let ms = ms_of("2025-04-10 08:00:01.250").unwrap();
        assert_eq!(text_of_ms(ms), "2025-04-10 08:00:01.250");
        assert_eq!(ms_of("2025-04-10 08:00:01").unwrap() + 250, ms);
        assert!(ms_of("yesterday").is_err());
    }
}
