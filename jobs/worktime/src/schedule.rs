//! The schedule loop (`--schedule`) and the day arithmetic it and the CLI use.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{NaiveDate, NaiveDateTime};
use iotflow_config::Config;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;

use crate::store::create_tables;
use crate::{mysql_url, rules, run_days};

/// The days `from..=to`.
pub fn days_between(from: NaiveDate, to: NaiveDate) -> anyhow::Result<Vec<NaiveDate>> {
    if to < from {
        bail!("--to {to} is before --from {from}");
    }
    let n = (to - from).num_days();
    if n > 3660 {
        bail!("{n} days is more than ten years; split the range");
    }
    Ok(from.iter_days().take(n as usize + 1).collect())
}

/// Local wall time now in the configured zone.
fn local_now(config: &Config) -> anyhow::Result<NaiveDateTime> {
    let zone = config.zone()?;
    let now = chrono::Utc::now();
    Ok(zone.local(&now.fixed_offset()))
}

/// `HH:MM` of `worktime.schedule_at`.
pub fn schedule_time(text: &str) -> anyhow::Result<chrono::NaiveTime> {
    chrono::NaiveTime::parse_from_str(text, "%H:%M")
        .with_context(|| format!("worktime.schedule_at `{text}` is not HH:MM"))
}

/// Days from `yesterday` back `catch_up` days that have no succeeded run, oldest first.
async fn missing_days(
    pool: &Pool,
    yesterday: NaiveDate,
    catch_up: u32,
) -> anyhow::Result<Vec<NaiveDate>> {
    let first = yesterday - chrono::Duration::days(i64::from(catch_up.max(1)) - 1);
    let mut conn = pool.get_conn().await?;
    let done: Vec<String> = conn
        .exec(
            "SELECT CAST(day AS CHAR) FROM device_work_time_runs WHERE status = 'succeeded' AND day BETWEEN ? AND ?",
            (first.to_string(), yesterday.to_string()),
        )
        .await?;
    Ok(first
        .iter_days()
        .take_while(|d| *d <= yesterday)
        .filter(|d| !done.contains(&d.to_string()))
        .collect())
}

/// `--schedule`: at `worktime.schedule_at` every day, analyses the previous day; at start (and
/// after a failure, every 10 minutes) catches up the days of the last `catch_up_days` that have
/// no successful run. Runs until `stop` is set.
pub fn run_schedule(
    config: &Config,
    workers: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let at = schedule_time(&config.worktime.schedule_at)?;
    rules(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pool = runtime
        .block_on(iotflow_mysql::connect(
            mysql_url(config),
            Duration::from_secs(10),
        ))
        .context("work-time pre-flight check failed")?;
    runtime.block_on(create_tables(&pool))?;
    tracing::info!(at = %at, zone = %config.parse.time_zone, "work-time schedule started");
    let mut retry_at: Option<Instant> = Some(Instant::now());
    let mut last_scheduled: Option<NaiveDate> = None;
    while !stop.load(Ordering::SeqCst) {
        let now = local_now(config)?;
        let today = now.date();
        let due = now.time() >= at && last_scheduled != Some(today);
        if due || retry_at.is_some_and(|t| Instant::now() >= t) {
            let yesterday = today.pred_opt().unwrap_or(today);
            let days = runtime.block_on(missing_days(
                &pool,
                yesterday,
                config.worktime.catch_up_days,
            ))?;
            if !days.is_empty() {
                tracing::info!(days = days.len(), first = %days[0], "analysing the days without a successful run");
            }
            match run_days(config, &days, workers) {
                Ok(_) => retry_at = None,
                Err(e) => {
                    tracing::error!("work-time run failed (retrying in 10 minutes): {e:#}");
                    retry_at = Some(Instant::now() + Duration::from_secs(600));
                }
            }
            if now.time() >= at {
                last_scheduled = Some(today);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    runtime.block_on(pool.disconnect())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            days_between(d("2025-04-09"), d("2025-04-11"))
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            days_between(d("2025-04-09"), d("2025-04-09"))
                .unwrap()
                .len(),
            1
        );
        assert!(days_between(d("2025-04-10"), d("2025-04-09")).is_err());
    }

    #[test]
    fn schedule_times() {
        assert_eq!(
            schedule_time("01:00").unwrap(),
            chrono::NaiveTime::from_hms_opt(1, 0, 0).unwrap()
        );
        assert!(schedule_time("1am")
            .unwrap_err()
            .to_string()
            .contains("HH:MM"));
    }
}
