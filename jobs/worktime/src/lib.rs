//! `iotflow worktime`: the daily device work-time analysis.
//!
//! For each requested day: read the day's readings from MySQL (the day partition of `iot_data`;
//! each timely worker reads its share of the devices), the per-device thresholds from
//! `device_info` (when that table exists), compute the rules of `docs/worktime.md` with
//! [`iotflow_worktime::worktime`] on all workers, replace the day's rows of `device_work_time`
//! in one transaction, record the run in `device_work_time_runs`, and push the run's metrics to
//! the Pushgateway. A MariaDB named lock per day keeps two runs of the same day from
//! overlapping.

mod compute;
mod push;
mod read;
mod schedule;
mod store;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::NaiveDate;
use iotflow_config::Config;
use iotflow_worktime::{scale, Rules};
use mysql_async::prelude::Queryable;

use compute::compute;
pub use push::exposition;
use push::push;
pub use schedule::{days_between, run_schedule, schedule_time};
pub use store::{create_tables, DEVICE_WORK_TIME_DDL};
use store::{record_run, store};

/// What one day's run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaySummary {
    /// The day.
    pub day: Option<NaiveDate>,
    /// Readings read.
    pub rows_read: u64,
    /// Devices with results.
    pub devices: u64,
    /// Total working seconds over all devices.
    pub working_seconds: f64,
    /// Wall time of the run.
    pub seconds: f64,
}

/// The rules from the configuration.
pub fn rules(config: &Config) -> anyhow::Result<Rules> {
    let w = &config.worktime;
    let threshold = scale(&w.threshold).with_context(|| {
        format!(
            "worktime.threshold `{}` is not a decimal with at most 8 places",
            w.threshold
        )
    })?;
    Ok(Rules {
        default_threshold: threshold,
        max_gap_ms: (w.max_gap_secs as i64).saturating_mul(1000),
    })
}
pub(crate) fn mysql_url(config: &Config) -> &str {
    if config.worktime.mysql_url.is_empty() {
        &config.mysql.url
    } else {
        &config.worktime.mysql_url
    }
}

/// Runs `days` one after the other on `workers` workers; returns a summary per day. Stops at
/// the first failing day (its run is recorded as failed and pushed as a failure).
pub fn run_days(
    config: &Config,
    days: &[NaiveDate],
    workers: usize,
) -> anyhow::Result<Vec<DaySummary>> {
    let rules = rules(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = mysql_url(config).to_string();
    let pool = runtime
        .block_on(iotflow_mysql::connect(&url, Duration::from_secs(10)))
        .context("work-time pre-flight check failed")?;
    runtime.block_on(create_tables(&pool))?;
    let mut out = Vec::new();
    let total = days.len();
    for (i, day) in days.iter().copied().enumerate() {
        let started = Instant::now();
        // Never the same day twice at once, in this process or another.
        let mut lock = runtime.block_on(pool.get_conn())?;
        let name = format!("iotflow-worktime-{day}");
        let got: Option<Option<i64>> =
            runtime.block_on(lock.exec_first("SELECT GET_LOCK(?, 0)", (name.as_str(),)))?;
        if got.flatten() != Some(1) {
            bail!("{day} is being analysed by another run right now (lock {name})");
        }
        let mut summary = DaySummary {
            day: Some(day),
            ..Default::default()
        };
        runtime.block_on(record_run(&pool, day, "running", &summary, None))?;
        let result = compute(config, &url, day, rules, workers).and_then(|(rows, read)| {
            summary.rows_read = read;
            summary.devices = rows.len() as u64;
            summary.working_seconds = rows.iter().map(|r| r.result.working_seconds()).sum();
            runtime.block_on(store(&pool, day, &rows))
        });
        summary.seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                runtime.block_on(record_run(&pool, day, "succeeded", &summary, None))?;
                tracing::info!(
                    day = %day,
                    progress = format!("{}/{total}", i + 1),
                    rows_read = summary.rows_read,
                    devices = summary.devices,
                    seconds = format!("{:.2}", summary.seconds),
                    "day analysed"
                );
                runtime.block_on(push(config, &summary, true));
                out.push(summary);
            }
            Err(e) => {
                let message = format!("{e:#}");
                runtime.block_on(record_run(&pool, day, "failed", &summary, Some(&message)))?;
                runtime.block_on(push(config, &summary, false));
                return Err(e.context(format!("analysing {day}")));
            }
        }
        runtime.block_on(lock.exec_drop("SELECT RELEASE_LOCK(?)", (name.as_str(),)))?;
    }
    runtime.block_on(pool.disconnect())?;
    Ok(out)
}
