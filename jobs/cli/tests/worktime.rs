//! `iotflow worktime` on MariaDB and the Pushgateway: readings go through the real streaming job
//! into `iot_data` (day partitions), then two days are analysed and `device_work_time` must
//! equal the reference formulation of the rules computed from the simulator's own readings,
//! with per-device thresholds from `device_info`. Running the days again gives the same rows,
//! no duplicates; the run metrics arrive at the Pushgateway; a day already being analysed is
//! refused. The streaming job's live view (`/worktime/live`) shows the same figures.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generator};
use iotflow_model::{Decimal, NaiveDateTime};
use iotflow_worktime::{reference, scale, DAY_MS};
use mysql_async::prelude::Queryable;

fn pushgateway() -> String {
    std::env::var("IOTFLOW_TEST_PUSHGATEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:9091".into())
}

fn worktime(f: &Fixture, args: &[&str]) -> std::process::Output {
    worktime_with(f, args, &[])
}

fn worktime_with(f: &Fixture, args: &[&str], env: &[(String, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iotflow"))
        .arg("worktime")
        .args(args)
        .env("IOTFLOW__MYSQL__URL", &f.db_url)
        .env("IOTFLOW__WORKTIME__PUSHGATEWAY_URL", pushgateway())
        .envs(env.iter().cloned())
        .output()
        .unwrap()
}

/// `device_work_time` as (day, pboxid) → (segments, working ms, readings, first, last, threshold).
type Stored = BTreeMap<(String, String), (u32, i64, u64, String, String, String)>;

/// A `device_work_time` row as read.
type Row = (String, String, u32, f64, u64, String, String, String);

fn stored(f: &Fixture) -> Stored {
    let rows: Vec<Row> = f.query(
        "SELECT CAST(day AS CHAR), pboxid, segments, working_seconds, readings, CAST(first_reading AS CHAR), \
         CAST(last_reading AS CHAR), CAST(threshold AS CHAR) FROM device_work_time",
    );
    rows.into_iter()
        .map(|(day, id, seg, work, n, first, last, thr)| {
            (
                (day, id),
                (seg, (work * 1000.0).round() as i64, n, first, last, thr),
            )
        })
        .collect()
}

#[test]
fn two_days_analysed_exactly_idempotently_and_pushed() {
    let f = Fixture::new("worktime", 4);
    let options = GenOptions {
        devices: 40,
        count: 16_000,
        malformed_share: 0.0,
        unknown_share: 0.05,
        seed: 77,
        // 400 rounds 20 s apart from 23:00: two days.
        start: NaiveDateTime::parse_from_str("2025-04-10 23:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        step: chrono::Duration::seconds(20),
        ..Default::default()
    };
    // Ten devices get their own threshold in device_info.
    let mut records = devices(40, 77);
    for d in records.iter_mut().take(10) {
        d.work_threshold = Some(Decimal::from(70));
    }
    // Five have none: the default (50) applies, as for the unknown ("ghost") devices.
    for d in records.iter_mut().skip(10).take(5) {
        d.work_threshold = None;
    }
    let thresholds: BTreeMap<String, i128> = records
        .iter()
        .filter_map(|d| Some((d.pboxid.clone(), scale(&d.work_threshold?.to_string())?)))
        .collect();
    seed_device_info(&f, &records);
    publish_devices(&brokers(), &f.broadcast, &records).unwrap();
    produce(
        &brokers(),
        &f.topic,
        Generator::new(options.clone()),
        0.0,
        |_| {},
    )
    .unwrap();
    let port = free_port();
    // ClickHouse too: the work time can be read from there.
    let ch_env = f.clickhouse_env();
    let mut job = f.job(2, port).envs(ch_env.clone()).spawn().unwrap();
    let label = format!("job_name=\"{}\"", f.name);
    wait_for("every reading stored", Duration::from_secs(120), || {
        let t = scrape_running(port, &mut job);
        // Both sinks (MySQL and ClickHouse), each with every reading.
        let written =
            |sink: &str| metric_sum(&t, "iotflow_sink_rows_written_total", &[&label, sink]);
        (written("sink=\"mysql\"") == 16_000.0 && written("sink=\"clickhouse\"") == 16_000.0)
            .then_some(())
    });
    // The live view of the running job, per day (in-order data: it must equal the daily job).
    let live: Vec<serde_json::Value> = ["2025-04-10", "2025-04-11"]
        .iter()
        .map(|day| {
            let (code, body) = http_get(
                port,
                &format!("/worktime/live?day={day}"),
                Duration::from_secs(30),
            )
            .expect("the live work-time page answers");
            assert_eq!(code, 200, "{body}");
            serde_json::from_str(&body).unwrap()
        })
        .collect();
    // Stopped by the test once the live view is read (an idle exit could end the job before).
    sigterm(&job);
    let (ok, stderr) = finish(job, Duration::from_secs(120));
    assert!(ok, "streaming job failed:\n{stderr}");

    // The reference, from the simulator's readings.
    let mut points: BTreeMap<(String, i64), Vec<(i64, i128)>> = BTreeMap::new();
    for g in Generator::new(options) {
        let x = g.expected.unwrap();
        let ms = x.event_time.and_utc().timestamp_millis();
        points
            .entry((x.pboxid, ms.div_euclid(DAY_MS)))
            .or_default()
            .push((ms, scale(&x.metric.to_string()).unwrap()));
    }
    let text = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string()
    };
    let want: Stored = points
        .iter()
        .map(|((id, day), p)| {
            let threshold = thresholds.get(id).copied().unwrap_or(50 * 100_000_000);
            let r = reference(p, threshold, 300_000);
            let day = chrono::DateTime::from_timestamp_millis(day * DAY_MS)
                .unwrap()
                .date_naive()
                .to_string();
            (
                (day, id.clone()),
                (
                    r.segments,
                    r.working_ms,
                    r.readings,
                    text(r.first_ms),
                    text(r.last_ms),
                    format!("{}.00000000", threshold / 100_000_000),
                ),
            )
        })
        .collect();
    assert!(
        want.values().any(|v| v.0 > 1),
        "some device-days have several segments"
    );

    let live: Stored = live
        .iter()
        .flat_map(|page| {
            let day = page["day"].as_str().unwrap().to_string();
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                // The simulator's unknown devices can get two readings with the same time in
                // one round, not in the rules' order (time, then metric): not in-order data.
                .filter(|d| !d["pboxid"].as_str().unwrap().starts_with("ghost-"))
                .map(|d| {
                    assert_eq!(d["late"], 0, "{d}");
                    let id = d["pboxid"].as_str().unwrap().to_string();
                    let threshold = thresholds.get(&id).copied().unwrap_or(50 * 100_000_000);
                    (
                        (day.clone(), id),
                        (
                            d["segments"].as_u64().unwrap() as u32,
                            (d["working_seconds"].as_f64().unwrap() * 1000.0).round() as i64,
                            d["readings"].as_u64().unwrap(),
                            d["first_reading"].as_str().unwrap().to_string(),
                            d["last_reading"].as_str().unwrap().to_string(),
                            format!("{}.00000000", threshold / 100_000_000),
                        ),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let known: Stored = want
        .iter()
        .filter(|(k, _)| !k.1.starts_with("ghost-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(known.len() > 60);
    assert_eq!(
        live, known,
        "the live view equals the rules for in-order data"
    );

    let out = worktime(
        &f,
        &["--from", "2025-04-10", "--to", "2025-04-11", "-w", "2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stored(&f);
    assert_eq!(first, want);

    // Again: the same rows, not twice as many.
    let out = worktime(&f, &["--date", "2025-04-11", "-w", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored(&f), want, "a re-run replaces the day's results");
    let runs: Vec<(String, String, u64)> = f.query(
        "SELECT CAST(day AS CHAR), status, rows_read FROM device_work_time_runs ORDER BY day",
    );
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.1 == "succeeded"));
    assert_eq!(runs.iter().map(|r| r.2).sum::<u64>(), 16_000);

    // From ClickHouse instead of MySQL: the same results.
    let mut from_ch = ch_env.clone();
    from_ch.push(("IOTFLOW__WORKTIME__SOURCE".into(), "clickhouse".into()));
    let out = worktime_with(
        &f,
        &["--from", "2025-04-10", "--to", "2025-04-11"],
        &from_ch,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored(&f), want, "read from ClickHouse");
    // (And it really reads there: a missing ClickHouse table fails the run, naming ClickHouse.)
    from_ch.push(("IOTFLOW__CLICKHOUSE__TABLE".into(), "nope".into()));
    let out = worktime_with(&f, &["--date", "2025-04-10"], &from_ch);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("from ClickHouse"));
    let runs: Vec<(String, String)> =
        f.query("SELECT CAST(day AS CHAR), status FROM device_work_time_runs ORDER BY day");
    assert_eq!(runs[0].1, "failed", "the failed run is recorded");
    assert_eq!(
        stored(&f),
        want,
        "a failed run leaves the day's results alone"
    );
    let out = worktime(&f, &["--date", "2025-04-11"]);
    assert!(out.status.success());

    // The Pushgateway has the last run's metrics.
    let body = runtime().block_on(async {
        reqwest::get(format!("{}/metrics", pushgateway()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let devices_day2 = want.keys().filter(|k| k.0 == "2025-04-11").count();
    let line = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("job=\"iotflow-worktime\""))
            .unwrap_or_else(|| panic!("{name} not pushed:\n{body}"))
            .to_string()
    };
    assert!(line("iotflow_worktime_success{").ends_with(" 1"));
    assert!(line("iotflow_worktime_devices_analysed{").ends_with(&format!(" {devices_day2}")));
    assert!(line("iotflow_worktime_last_success_timestamp_seconds{").contains("day=\"2025-04-11\""));

    // A day being analysed elsewhere is refused, and nothing is written.
    runtime().block_on(async {
        let pool = mysql_async::Pool::new(f.db_url.as_str());
        let mut held = pool.get_conn().await.unwrap();
        let got: Option<i64> = held
            .query_first("SELECT GET_LOCK('iotflow-worktime-2025-04-10', 0)")
            .await
            .unwrap();
        assert_eq!(got, Some(1));
        let out = worktime(&f, &["--date", "2025-04-10"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("being analysed by another run"), "{stderr}");
        drop(held);
        pool.disconnect().await.unwrap();
    });
    assert_eq!(stored(&f), want);
}

/// `--schedule` catches up the recent days without a successful run at start, then waits for
/// its time; SIGTERM ends it cleanly.
#[test]
fn the_schedule_catches_up_missed_days_and_stops_on_sigterm() {
    let f = Fixture::new("worktime-schedule", 1);
    // An empty iot_data: days with no readings are analysed too (no device, a succeeded run).
    runtime().block_on(async {
        let pool = iotflow_mysql::connect(&f.db_url, Duration::from_secs(10))
            .await
            .unwrap();
        let mut conn = pool.get_conn().await.unwrap();
        conn.query_drop(
            "CREATE TABLE iot_data (event_time DATETIME(3) NOT NULL, pboxid VARCHAR(64) NOT NULL, \
             metric DECIMAL(24,8) NOT NULL)",
        )
        .await
        .unwrap();
        drop(conn);
        pool.disconnect().await.unwrap();
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_iotflow"))
        .args(["worktime", "--schedule", "-w", "1"])
        .env("IOTFLOW__MYSQL__URL", &f.db_url)
        .env("IOTFLOW__WORKTIME__PUSHGATEWAY_URL", "")
        .env("IOTFLOW__WORKTIME__CATCH_UP_DAYS", "3")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let expected: Vec<String> = (1..=3)
        .rev()
        .map(|n| (today - chrono::Duration::days(n)).to_string())
        .collect();
    let days = wait_for("three caught-up days", Duration::from_secs(60), || {
        let exists: Vec<String> = f.query(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'device_work_time_runs'",
            f.db
        ));
        if exists.is_empty() {
            return None;
        }
        let days: Vec<String> = f.query(
            "SELECT CAST(day AS CHAR) FROM device_work_time_runs WHERE status = 'succeeded' ORDER BY day",
        );
        (days.len() >= 3).then_some(days)
    });
    // (Unless the date changed while the test ran.)
    if chrono::Utc::now().date_naive() == today {
        assert_eq!(days, expected, "the three days before today, oldest first");
    }
    assert_eq!(days.len(), 3);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "--schedule ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit}");
}
