//! A backlog meets a stalled sink: the job must hold a bounded amount of memory (its source
//! pauses once the sinks, the enrichment stash and the dead letters hold their budget; the
//! librdkafka prefetch is capped), then write everything once the sink is back. (Its own test
//! binary, so the load touches no other test.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generator};
use iotflow_model::NaiveDateTime;
use mysql_async::prelude::Queryable;

/// Resident set size of `pid` in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The stated bound: what the job may hold with the default budgets on 2 workers, plus the
/// process's own footprint (binary, runtime, librdkafka's threads and buffers).
const RSS_BOUND_MIB: u64 = 400;

#[test]
fn a_backlog_into_a_stalled_sink_holds_bounded_memory() {
    let f = Fixture::new("memory-bound", 2);
    let total = 400_000u64;
    let options = GenOptions {
        devices: 100,
        count: total,
        malformed_share: 0.0,
        unknown_share: 0.0,
        seed: 43,
        start: NaiveDateTime::parse_from_str("2025-04-10 08:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        ..Default::default()
    };
    publish_devices(&brokers(), &f.broadcast, &devices(100, 43)).unwrap();
    produce(&brokers(), &f.topic, Generator::new(options), 0.0, |_| {}).unwrap();

    // The sink stalls: another session holds a write lock on the table.
    let rt = runtime();
    let pool = mysql_async::Pool::new(f.db_url.as_str());
    let mut lock = rt.block_on(async {
        let mut c = pool.get_conn().await.unwrap();
        c.query_drop(iotflow_sink_mysql::IOT_DATA_DDL)
            .await
            .unwrap();
        c.query_drop("LOCK TABLES iot_data WRITE").await.unwrap();
        c
    });

    let port = free_port();
    let mut child = f
        .job(2, port)
        .env("IOTFLOW__MYSQL__CREATE_TABLE", "false")
        .env("IOTFLOW__MYSQL__WRITE_TIMEOUT_MS", "2000")
        .spawn()
        .unwrap();
    let label = format!("job_name=\"{}\"", f.name);
    // Wait until the source has stopped reading (paused by back-pressure).
    let start = Instant::now();
    let mut last = (0.0, Instant::now());
    let received = loop {
        let t = scrape_running(port, &mut child);
        let got = metric_sum(&t, "iotflow_kafka_messages_received_total", &[&label]);
        if got > 0.0 && got == last.0 && last.1.elapsed() > Duration::from_secs(3) {
            break got;
        }
        if got != last.0 {
            last = (got, Instant::now());
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the source never paused"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(rss_kib(child.id()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = scrape_running(port, &mut child);
    let held = metric_sum(&t, "iotflow_buffered_records", &[&label]);
    eprintln!(
        "stalled sink: read {received} of {total} readings, {held} records held, peak RSS {} MiB (bound {RSS_BOUND_MIB} MiB)",
        peak / 1024
    );
    assert!(received < total as f64, "the source read the whole backlog");
    assert!(peak > 0, "RSS read from /proc");
    assert!(
        peak / 1024 < RSS_BOUND_MIB,
        "peak RSS {} MiB above the bound of {RSS_BOUND_MIB} MiB",
        peak / 1024
    );

    // The sink comes back: everything arrives once.
    rt.block_on(async {
        lock.query_drop("UNLOCK TABLES").await.unwrap();
        drop(lock);
        pool.disconnect().await.unwrap();
    });
    wait_for("the backlog written", Duration::from_secs(180), || {
        (f.row_count() == total).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
}
