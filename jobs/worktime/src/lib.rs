//! `iotflow worktime`: the daily device work-time analysis.
//!
//! For each requested day: read the day's readings from MySQL (the day partition of `iot_data`;
//! each timely worker reads its share of the devices), the per-device thresholds from
//! `device_info` (when that table exists), compute the rules of `docs/worktime.md` with
//! [`iotflow_worktime::worktime`] on all workers, replace the day's rows of `device_work_time`
//! in one transaction, record the run in `device_work_time_runs`, and push the run's metrics to
//! the Pushgateway. A MariaDB named lock per day keeps two runs of the same day from
//! overlapping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use chrono::{NaiveDate, NaiveDateTime};
use differential_dataflow::input::Input;
use iotflow_config::Config;
use iotflow_worktime::{scale, worktime, DayResult, Point, Rules};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};

/// The result tables (`schemas/mysql/device_work_time.sql`).
pub const DEVICE_WORK_TIME_DDL: &str = include_str!("../../../schemas/mysql/device_work_time.sql");

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

/// One device's result row.
#[derive(Clone, Debug, PartialEq)]
struct ResultRow {
    pboxid: String,
    result: DayResult,
    threshold: i128,
}

fn ms_of(text: &str) -> anyhow::Result<i64> {
    let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .with_context(|| format!("event_time `{text}`"))?;
    Ok(t.and_utc().timestamp_millis())
}

fn text_of_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

fn scaled_text(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:08}", a / 100_000_000, a % 100_000_000)
}

/// Reads worker `index` of `peers`'s share of the day's readings: `(pboxid, (ms, metric))`.
async fn read_share(
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
async fn read_share_clickhouse(
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
async fn read_thresholds(pool: &Pool) -> anyhow::Result<Vec<(String, i128)>> {
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

/// Computes one day on `workers` timely workers; returns the results and the rows read.
fn compute(
    config: &Config,
    url: &str,
    day: NaiveDate,
    rules: Rules,
    workers: usize,
) -> anyhow::Result<(Vec<ResultRow>, u64)> {
    let config = config.clone();
    let results: Arc<Mutex<Vec<ResultRow>>> = Arc::default();
    let read: Arc<Mutex<u64>> = Arc::default();
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let (sink, count, failed) = (results.clone(), read.clone(), failure.clone());
    let url = url.to_string();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime per worker");
        let loaded = runtime.block_on(async {
            let pool = Pool::new(url.as_str());
            let share = if config.worktime.source == "clickhouse" {
                read_share_clickhouse(&config, day, index, peers).await
            } else {
                read_share(&pool, day, index, peers).await
            };
            let thresholds = read_thresholds(&pool).await;
            pool.disconnect().await.ok();
            Ok::<_, anyhow::Error>((share?, thresholds?))
        });
        let (share, thresholds) = match loaded {
            Ok(x) => x,
            Err(e) => {
                failed.lock().expect("lock").get_or_insert(format!("{e:#}"));
                (Vec::new(), Vec::new())
            }
        };
        *count.lock().expect("lock") += share.len() as u64;
        tracing::info!(day = %day, worker = index, readings = share.len(), "read; computing");
        // Every worker knows every threshold (a small table), to report the one used.
        let used: HashMap<String, i128> = thresholds.iter().cloned().collect();
        let sink = sink.clone();
        let probe = ProbeHandle::new();
        let (mut rin, mut tin) = worker.dataflow::<u64, _, _>(|scope| {
            let (rin, readings) = scope.new_collection::<(String, Point), isize>();
            let (tin, thresholds) = scope.new_collection::<(String, i128), isize>();
            worktime(readings, thresholds, rules)
                .inner
                .inspect(move |(((pboxid, _day), result), _time, diff)| {
                    // One round of input: results only appear, never change.
                    if *diff > 0 {
                        sink.lock().expect("lock").push(ResultRow {
                            pboxid: pboxid.clone(),
                            result: *result,
                            threshold: used.get(pboxid).copied().unwrap_or(rules.default_threshold),
                        });
                    }
                })
                .probe_with(&probe);
            (rin, tin)
        });
        for r in share {
            rin.insert(r);
        }
        if index == 0 {
            for t in thresholds {
                tin.insert(t);
            }
        }
        rin.close();
        tin.close();
        while !probe.done() {
            worker.step();
        }
    })
    .map_err(|e| anyhow::anyhow!("starting timely workers: {e}"))?;
    if let Some(e) = failure.lock().expect("lock").take() {
        bail!("{e}");
    }
    let mut rows = std::mem::take(&mut *results.lock().expect("lock"));
    rows.sort_by(|a, b| a.pboxid.cmp(&b.pboxid));
    let n = *read.lock().expect("lock");
    Ok((rows, n))
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
async fn store(pool: &Pool, day: NaiveDate, rows: &[ResultRow]) -> anyhow::Result<()> {
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

async fn record_run(
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

fn mysql_url(config: &Config) -> &str {
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

/// The Pushgateway exposition of a run. On success every metric (PUT replaces the group); on
/// failure only the failure metrics, sent with POST so `last_success` survives. Registry gauges
/// encoded by prometheus' `TextEncoder`, with the process and build telemetry every iotflow
/// service exposes (`iotflow_metrics::register_service_telemetry`).
pub fn exposition(summary: &DaySummary, success: bool, now: f64) -> String {
    use iotflow_metrics::{GaugeVec, Opts, Registry};
    let day = summary.day.map(|d| d.to_string()).unwrap_or_default();
    let registry = Registry::new();
    iotflow_metrics::register_service_telemetry(&registry);
    let metric = |name: &str, help: &str, value: f64| {
        let gauge = GaugeVec::new(Opts::new(name, help), &["day"]).expect("valid metric");
        registry
            .register(Box::new(gauge.clone()))
            .expect("unique metric");
        gauge.with_label_values(&[day.as_str()]).set(value);
    };
    metric(
        "iotflow_worktime_success",
        "Whether the last work-time run succeeded (1) or failed (0).",
        if success { 1.0 } else { 0.0 },
    );
    metric(
        "iotflow_worktime_last_run_timestamp_seconds",
        "When the last work-time run ended.",
        now,
    );
    if success {
        metric(
            "iotflow_worktime_last_success_timestamp_seconds",
            "When the last successful work-time run ended.",
            now,
        );
        metric(
            "iotflow_worktime_devices_analysed",
            "Devices with results in the last successful run.",
            summary.devices as f64,
        );
        metric(
            "iotflow_worktime_rows_read",
            "Readings read by the last successful run.",
            summary.rows_read as f64,
        );
        metric(
            "iotflow_worktime_duration_seconds",
            "Duration of the last successful run.",
            summary.seconds,
        );
    }
    iotflow_metrics::encode_text(&registry)
}

/// Pushes the run's metrics to the Pushgateway (group `job="iotflow-worktime"`). A push that
/// fails is logged, never fails the run.
async fn push(config: &Config, summary: &DaySummary, success: bool) {
    let base = config.worktime.pushgateway_url.trim_end_matches('/');
    if base.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let body = exposition(summary, success, now);
    let url = format!("{base}/metrics/job/iotflow-worktime");
    let client = reqwest::Client::new();
    let request = if success {
        client.put(&url)
    } else {
        client.post(&url)
    };
    match request
        .header("content-type", "text/plain; version=0.0.4")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(%url, status = %r.status(), "Pushgateway refused the run metrics"),
        Err(e) => tracing::warn!(%url, "cannot push the run metrics: {}", e.without_url()),
    }
}

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

    #[test]
    fn a_failure_push_keeps_the_last_success() {
        let s = DaySummary::default();
        let failed = exposition(&s, false, 1.0);
        assert!(failed.contains("iotflow_worktime_success{day=\"\"} 0"));
        assert!(!failed.contains("last_success"));
        assert!(
            exposition(&s, true, 1.0).contains("iotflow_worktime_last_success_timestamp_seconds")
        );
        // The telemetry of every iotflow service rides along with each push.
        for text in [failed, exposition(&s, true, 1.0)] {
            assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
            assert!(text.contains("iotflow_build_info{"), "{text}");
            assert!(
                text.contains("# TYPE iotflow_worktime_success gauge"),
                "{text}"
            );
        }
    }
}
