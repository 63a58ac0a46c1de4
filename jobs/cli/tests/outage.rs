//! One sink down: ClickHouse is killed (SIGKILL) and kept down for 30 s mid-run. The job must stall rather than drop
//! data, commit no offset past unwritten rows, show the stall in its metrics, and deliver
//! everything exactly once when the server is back. (Its own test binary: cargo runs test
//! binaries one at a time, so the outage touches no other test.)

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generator};
use iotflow_model::{Decimal, NaiveDateTime};

#[test]
fn clickhouse_outage_stalls_the_job_then_everything_arrives_exactly_once() {
    let f = Fixture::new("outage", 4);
    let ch_env = f.clickhouse_env();
    let options = GenOptions {
        devices: 50,
        count: 60_000,
        malformed_share: 0.0,
        unknown_share: 0.0,
        seed: 23,
        start: NaiveDateTime::parse_from_str("2025-04-12 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        ..Default::default()
    };
    let (mut count, mut sum) = (0u64, Decimal::ZERO);
    for g in Generator::new(options.clone()) {
        let e = g.expected.unwrap();
        count += 1;
        sum += e.metric;
    }
    publish_devices(&brokers(), &f.broadcast, &devices(50, 23)).unwrap();
    let (b, topic, o) = (brokers(), f.topic.clone(), options.clone());
    // 60k readings over ~40 s: the outage falls in the middle. (A stopping ClickHouse closes its
    // port at once but keeps serving open keep-alive connections for 10-20 s, so the job's
    // writes fail only once the process is gone.)
    let producer = std::thread::spawn(move || {
        produce(&b, &topic, Generator::new(o), 1_500.0, |_| {}).unwrap()
    });

    let port = free_port();
    let mut child = f
        .job(2, port)
        .envs(ch_env)
        .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "5")
        // Small batches: the source may hold (500 + 500) × 3 × 2 = 6000 rows per worker, so
        // during the outage it pauses for far longer than the idle exit. A paused source is not
        // idle: it must not drain and leave input unread.
        .env("IOTFLOW__CLICKHOUSE__BATCH__MAX_ROWS", "500")
        .env("IOTFLOW__MYSQL__BATCH__MAX_ROWS", "500")
        .spawn()
        .unwrap();
    let label = format!("job_name=\"{}\"", f.name);
    let ch = "sink=\"clickhouse\"".to_string();
    let metric = |t: &str, name: &str, extra: &[&str]| {
        let mut filter = vec![label.as_str()];
        filter.extend_from_slice(extra);
        metric_sum(t, name, &filter)
    };
    let started = Instant::now();
    let first = wait_for("ClickHouse rows", Duration::from_secs(60), || {
        let t = scrape(port)?;
        let rows = metric(&t, "iotflow_sink_rows_written_total", &[&ch]);
        (rows > 0.0).then_some(rows)
    });
    eprintln!(
        "{first} ClickHouse rows after {:?}: stopping ClickHouse",
        started.elapsed()
    );

    // Whatever happens below, ClickHouse is running again when this test ends: the test
    // binaries after this one need it.
    let _start_again = StartAgain;
    // A crash (SIGKILL), not a clean stop: a stopping 18.16 keeps answering inserts on open
    // keep-alive connections while it detaches its tables, with "table doesn't exist", which the
    // sink takes for a schema error and stops on (a known limit, see the closing note).
    let dir = std::env::var("IOTFLOW_CLICKHOUSE_DIR")
        .unwrap_or_else(|_| format!("{}/../../.local/clickhouse", env!("CARGO_MANIFEST_DIR")));
    let pid = std::fs::read_to_string(format!("{dir}/clickhouse.pid")).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {pid}");
    let down = Instant::now();
    // The sink keeps failing and retrying; commits stop advancing.
    let at_start = wait_for(
        "transient ClickHouse errors",
        Duration::from_secs(30),
        || {
            let t = scrape_running(port, &mut child);
            let errors = metric(
                &t,
                "iotflow_sink_errors_total",
                &[&ch, "kind=\"transient\""],
            );
            let retries = metric(&t, "iotflow_sink_retries_total", &[&ch]);
            (errors > 0.0 && retries > 0.0).then_some(t)
        },
    );
    std::thread::sleep(Duration::from_secs(5)); // let in-flight commits settle
    let committed = |t: &str| {
        metric(
            t,
            "iotflow_kafka_committed_offset",
            &["operator=\"kafka-source\""],
        )
    };
    let settled = committed(&scrape_running(port, &mut child));
    while down.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let late = scrape_running(port, &mut child);
    assert_eq!(
        committed(&late),
        settled,
        "offsets were committed while ClickHouse was down"
    );
    // The source paused once the sinks held their limit, readings kept arriving: the lag
    // gauge shows it (statistics are served while the partition queues wait).
    let lag = metric(
        &late,
        "iotflow_kafka_consumer_lag",
        &["operator=\"kafka-source\""],
    );
    assert!(lag > 1000.0, "consumer lag during the outage: {lag}");
    assert!(settled < count as f64, "the outage happened mid-run");
    assert!(
        metric(
            &late,
            "iotflow_sink_errors_total",
            &[&ch, "kind=\"transient\""]
        ) > metric(
            &at_start,
            "iotflow_sink_errors_total",
            &[&ch, "kind=\"transient\""]
        ),
        "errors keep being counted during the outage"
    );
    assert_eq!(
        metric(
            &late,
            "iotflow_sink_errors_total",
            &[&ch, "kind=\"definite\""]
        ),
        0.0
    );

    run_script("start.sh", &[]);
    producer.join().unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(180));
    assert!(ok, "job failed:\n{stderr}");

    let my: Vec<(u64, String)> =
        f.query("SELECT COUNT(*), CAST(SUM(metric) AS CHAR) FROM iot_data");
    assert_eq!(my[0].0, count, "MariaDB rows");
    assert_eq!(Decimal::from_str(&my[0].1).unwrap(), sum);
    let chr = f.clickhouse_tsv("SELECT count(), toString(sum(metric)) FROM iot_data FINAL");
    let v: Vec<&str> = chr[0].split('\t').collect();
    assert_eq!(
        v[0].parse::<u64>().unwrap(),
        count,
        "ClickHouse rows (FINAL)"
    );
    assert_eq!(Decimal::from_str(v[1]).unwrap(), sum);
}
