//! The guarantee, on real servers: every valid reading lands in `iot_data` exactly once, every
//! malformed one in the dead-letter topic, including when the job is SIGKILLed mid-stream.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generator};
use iotflow_model::{Decimal, NaiveDateTime};
use rand::{Rng, SeedableRng};

/// What the table must hold, computed from the generator alone.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    valid: u64,
    malformed: u64,
    unknown: u64,
    /// pboxid -> (rows, sum of metric, sum of latitude, sum of longitude)
    per_device: BTreeMap<String, (u64, Decimal, Decimal, Decimal)>,
    days: Vec<String>,
}

fn expected(options: &GenOptions) -> Expected {
    let mut e = Expected::default();
    let mut days = std::collections::BTreeSet::new();
    for g in Generator::new(options.clone()) {
        match g.expected {
            Some(x) => {
                e.valid += 1;
                e.unknown += u64::from(!x.known);
                days.insert(x.event_time.format("p%Y%m%d").to_string());
                let d = e.per_device.entry(x.pboxid).or_default();
                d.0 += 1;
                d.1 += x.metric;
                d.2 += x.latitude;
                d.3 += x.longitude;
            }
            None => e.malformed += 1,
        }
    }
    e.days = days.into_iter().collect();
    e
}

fn options(seed: u64) -> GenOptions {
    GenOptions {
        devices: 200,
        count: 100_000,
        malformed_share: 0.01,
        unknown_share: 0.02,
        seed,
        // 500 rounds of 1 s from 23:58: the readings span midnight, so two day partitions.
        start: NaiveDateTime::parse_from_str("2025-04-10 23:58:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        ..Default::default()
    }
}

/// Publishes 200 devices and produces `count` readings of seed `seed` at once to `f`'s topics;
/// what the stores must then hold.
fn backlog(f: &Fixture, count: u64, seed: u64) -> Expected {
    let options = GenOptions {
        count,
        ..options(seed)
    };
    publish_devices(&brokers(), &f.broadcast, &devices(200, seed)).unwrap();
    produce(
        &brokers(),
        &f.topic,
        Generator::new(options.clone()),
        0.0,
        |_| {},
    )
    .unwrap();
    expected(&options)
}

/// Compares the table with `e`: per device count and exact decimal sums, day partitions only.
fn assert_table_matches(f: &Fixture, e: &Expected) {
    let rows: Vec<(String, u64, String, String, String)> = f.query(
        "SELECT pboxid, COUNT(*), CAST(SUM(metric) AS CHAR), CAST(SUM(latitude) AS CHAR), CAST(SUM(longitude) AS CHAR) \
         FROM iot_data GROUP BY pboxid",
    );
    let got: BTreeMap<String, (u64, Decimal, Decimal, Decimal)> = rows
        .into_iter()
        .map(|(id, n, m, la, lo)| {
            let d = |s: &str| Decimal::from_str(s).unwrap().normalize();
            (id, (n, d(&m), d(&la), d(&lo)))
        })
        .collect();
    let want: BTreeMap<String, (u64, Decimal, Decimal, Decimal)> = e
        .per_device
        .iter()
        .map(|(k, (n, m, la, lo))| {
            (
                k.clone(),
                (*n, m.normalize(), la.normalize(), lo.normalize()),
            )
        })
        .collect();
    let total: u64 = got.values().map(|v| v.0).sum();
    assert_eq!(total, e.valid, "row count");
    assert_eq!(got, want, "per-device counts and sums");
    let known: Vec<u64> = f.query("SELECT COUNT(company) FROM iot_data");
    assert_eq!(known[0], e.valid - e.unknown, "rows with business columns");
    let parts: Vec<(String, u64)> = f.query(&format!(
        "SELECT PARTITION_NAME, 0 FROM information_schema.PARTITIONS \
         WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'iot_data' AND PARTITION_NAME LIKE 'p2%' ORDER BY 1",
        f.db
    ));
    assert_eq!(
        parts.into_iter().map(|p| p.0).collect::<Vec<_>>(),
        e.days,
        "one partition per day"
    );
    for p in ["pmax", "pmin"] {
        let n: Vec<u64> = f.query(&format!("SELECT COUNT(*) FROM iot_data PARTITION ({p})"));
        assert_eq!(n[0], 0, "rows left in {p}");
    }
}

fn assert_dead_letters(f: &Fixture, e: &Expected, exactly: bool) {
    let letters = f.dead_letters(e.malformed as usize);
    let keys: std::collections::BTreeSet<_> = letters.iter().map(|l| l.0.clone()).collect();
    assert_eq!(keys.len() as u64, e.malformed, "distinct dead letters");
    if exactly {
        assert_eq!(
            letters.len() as u64,
            e.malformed,
            "every dead letter arrives once"
        );
    }
    for (key, _, headers) in &letters {
        assert!(
            key.starts_with(&f.topic),
            "key {key} names the source topic"
        );
        assert!(!headers["iotflow.reason"].is_empty());
        assert!(!headers["iotflow.reason_code"].is_empty());
        assert_eq!(headers["iotflow.source_topic"], f.topic);
    }
}

#[test]
fn hundred_thousand_readings_arrive_exactly_once() {
    let f = Fixture::new("exactly-once", 8);
    let options = options(7);
    let e = expected(&options);
    publish_devices(&brokers(), &f.broadcast, &devices(200, 7)).unwrap();
    produce(&brokers(), &f.topic, Generator::new(options), 0.0, |_| {}).unwrap();

    let port = free_port();
    let mut child = f
        .job(2, port)
        // No idle exit: idle time counts from the last record read while the sinks may still
        // be writing, so it could end the job before the scrapes below; SIGTERM ends it.
        .spawn()
        .unwrap();
    let label = format!("job_name=\"{}\"", f.name);
    wait_for(
        "every row and dead letter acknowledged",
        Duration::from_secs(180),
        || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the job exited ({status}) before it had written everything");
            }
            let t = scrape(port)?;
            let rows = metric_sum(&t, "iotflow_sink_rows_written_total", &[&label]) as u64;
            let dlq = metric_sum(&t, "iotflow_dlq_records_total", &[&label]) as u64;
            (rows == e.valid && dlq == e.malformed).then_some(t)
        },
    );
    // Offsets are committed once the sinks acknowledged: all of them, and not one more.
    let committed = wait_for("every offset committed", Duration::from_secs(60), || {
        let t = scrape(port)?;
        let sum = metric_sum(
            &t,
            "iotflow_kafka_committed_offset",
            &[&label, "operator=\"kafka-source\""],
        ) as u64;
        (sum == 100_000).then_some(t)
    });
    promtool_check_metrics(&committed);
    let text = committed;
    for family in [
        "iotflow_kafka_consumer_lag",
        "iotflow_kafka_committed_offset",
        "iotflow_kafka_offset_commits_total",
        "iotflow_sink_batch_write_seconds_bucket",
        "iotflow_end_to_end_latency_seconds_bucket",
        "iotflow_kafka_read_age_seconds_bucket",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    assert!(
        !text.contains("pbox-"),
        "a device id leaked into metric labels"
    );
    let m = |name: &str| metric_sum(&text, name, &[&label]) as u64;
    assert_eq!(
        metric_sum(
            &text,
            "iotflow_kafka_messages_received_total",
            &[&label, "operator=\"kafka-source\""]
        ) as u64,
        100_000
    );
    assert_eq!(m("iotflow_parse_success_total"), e.valid);
    assert_eq!(m("iotflow_parse_failure_total"), e.malformed);
    assert_eq!(m("iotflow_enriched_readings_total"), e.valid);
    assert_eq!(m("iotflow_unknown_device_readings_total"), e.unknown);
    assert_eq!(
        metric_sum(
            &text,
            "iotflow_dimension_devices",
            &[&label, "worker=\"0\""]
        ) as u64,
        200
    );
    assert!(m("iotflow_sink_batch_write_seconds_count") > 0);
    assert_eq!(m("iotflow_end_to_end_latency_seconds_count"), e.valid);
    // Every message read had its age taken (all carry a producer timestamp), malformed too.
    assert_eq!(
        metric_sum(
            &text,
            "iotflow_kafka_read_age_seconds_count",
            &[&label, "operator=\"kafka-source\""]
        ) as u64,
        100_000
    );

    // The test stops the job once it has read the metrics (an idle exit could come first).
    sigterm(&child);
    let (ok, stderr) = finish(child, Duration::from_secs(60));
    assert!(ok, "job failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_table_matches(&f, &e);
    assert_dead_letters(&f, &e, true);
}

#[test]
fn sigkill_three_times_loses_and_duplicates_nothing() {
    let f = Fixture::new("crash", 8);
    let options = options(11);
    let e = expected(&options);
    publish_devices(&brokers(), &f.broadcast, &devices(200, 11)).unwrap();
    // Readings keep arriving while the job is killed and restarted.
    let (b, topic, o) = (brokers(), f.topic.clone(), options.clone());
    let producer = std::thread::spawn(move || {
        produce(&b, &topic, Generator::new(o), 8_000.0, |_| {}).unwrap()
    });

    let seed: u64 = rand::random();
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut at_kill = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let mut child = f.job(2, port).spawn().unwrap();
        // Kill at a random moment once this run is writing.
        let label = format!("job_name=\"{}\"", f.name);
        wait_for("the job to write rows", Duration::from_secs(60), || {
            let t = scrape(port)?;
            (metric_sum(&t, "iotflow_sink_rows_written_total", &[&label]) > 0.0).then_some(())
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        at_kill.push(f.row_count());
    }
    producer.join().unwrap();
    eprintln!("rows at each kill: {at_kill:?} of {}", e.valid);
    assert!(
        at_kill.iter().all(|n| *n < e.valid),
        "every kill happened mid-stream: {at_kill:?}"
    );

    let child = f
        .job(2, free_port())
        .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "4")
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(180));
    assert!(ok, "final run failed:\n{stderr}");
    assert_table_matches(&f, &e);
    // Exactly once through the kills too: the ledger read back at each start skips the
    // letters of records the crashed run had dead-lettered but not committed.
    assert_dead_letters(&f, &e, true);
}

/// Kubernetes may stop a pod the moment it starts. A SIGTERM that arrives while the job is
/// still in its pre-flight checks (the metrics endpoint answers first, the sinks are checked
/// after) is a stop request: the process exits 0, it is not killed by the signal, and the run
/// after it still writes everything exactly once.
#[test]
fn a_sigterm_during_start_up_stops_cleanly() {
    let f = Fixture::new("early-term", 4);
    let e = backlog(&f, 5_000, 17);

    for attempt in 0..3 {
        let port = free_port();
        let mut child = f.job(2, port).spawn().unwrap();
        // The endpoint is served before the pre-flight checks: stop as soon as it answers.
        let started = Instant::now();
        while scrape(port).is_none() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("attempt {attempt}: the job exited ({status}) before serving metrics");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no metrics endpoint"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        sigterm(&child);
        let (ok, stderr) = finish(child, Duration::from_secs(60));
        assert!(
            ok,
            "attempt {attempt}: a SIGTERM while starting failed the job:\n{stderr}"
        );
        assert!(stderr.contains("stop requested"), "{stderr}");
    }

    let child = f
        .job(2, free_port())
        .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "4")
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(180));
    assert!(ok, "the run after the early stops failed:\n{stderr}");
    assert_table_matches(&f, &e);
    assert_dead_letters(&f, &e, true);
}

#[test]
fn two_processes_share_the_partitions_exactly_once() {
    let f = Fixture::new("two-processes", 8);
    let e = backlog(&f, 30_000, 13);

    // Timely's own ports for the two processes, and one metrics port each (base + process).
    let hosts = std::env::temp_dir().join(format!("{}.hosts", f.group));
    let timely_ports = [free_port(), free_port()];
    std::fs::write(
        &hosts,
        timely_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let metrics_base = wait_for("two adjacent free ports", Duration::from_secs(10), || {
        let p = free_port();
        std::net::TcpListener::bind(("127.0.0.1", p + 1))
            .ok()
            .map(|_| p)
    });
    let children: Vec<_> = (0..2)
        .map(|p| {
            f.job(2, metrics_base)
                .args([
                    "-n",
                    "2",
                    "-p",
                    &p.to_string(),
                    "-h",
                    hosts.to_str().unwrap(),
                ])
                .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "4")
                .spawn()
                .unwrap()
        })
        .collect();
    // Both processes read: each worker of each process owns two of the eight partitions.
    let label = format!("job_name=\"{}\"", f.name);
    for p in 0..2u16 {
        wait_for("both processes read", Duration::from_secs(120), || {
            let t = scrape(metrics_base + p)?;
            (metric_sum(
                &t,
                "iotflow_kafka_messages_received_total",
                &[&label, "operator=\"kafka-source\""],
            ) > 0.0)
                .then_some(())
        });
    }
    for child in children {
        let (ok, stderr) = finish(child, Duration::from_secs(180));
        assert!(ok, "process failed:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_file(&hosts);
    assert_table_matches(&f, &e);
}

/// Two processes of two workers, a readings topic of two partitions (both read by process 0)
/// and a dimension topic of four (one per worker): process 1 reads no readings at all, yet it
/// must keep loading its half of the dimension for everyone. (It used to stop its dimension
/// sources as soon as its readers, having no partitions, finished: the devices on its
/// partitions were never loaded and their readings were stored without business data.)
#[test]
fn a_process_without_readings_still_loads_its_share_of_the_dimension() {
    let f = Fixture::new("idle-process", 2);
    let broadcast = format!("{}-4", f.broadcast);
    create_topic(&broadcast, 4);
    let options = GenOptions {
        count: 10_000,
        unknown_share: 0.0,
        ..options(17)
    };
    let e = expected(&options);
    publish_devices(&brokers(), &broadcast, &devices(200, 17)).unwrap();
    produce(&brokers(), &f.topic, Generator::new(options), 0.0, |_| {}).unwrap();

    let hosts = std::env::temp_dir().join(format!("{}.hosts", f.group));
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let metrics_base = wait_for("two adjacent free ports", Duration::from_secs(10), || {
        let p = free_port();
        std::net::TcpListener::bind(("127.0.0.1", p + 1))
            .ok()
            .map(|_| p)
    });
    let children: Vec<_> = (0..2)
        .map(|p| {
            f.job(2, metrics_base)
                .args(["-n", "2", "-p", &p.to_string()])
                .args(["-h", hosts.to_str().unwrap()])
                .env("IOTFLOW__KAFKA__BROADCAST_TOPIC", &broadcast)
                .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "4")
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let (ok, stderr) = finish(child, Duration::from_secs(180));
        assert!(ok, "process failed:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_file(&hosts);
    let unenriched: Vec<u64> = f.query("SELECT COUNT(*) - COUNT(company) FROM iot_data");
    assert_eq!(
        unenriched[0], 0,
        "readings stored without their device's business data"
    );
    assert_table_matches(&f, &e);
}

/// The ClickHouse table against `e`, through `FINAL` (re-delivered copies collapse there).
fn assert_clickhouse_matches(f: &Fixture, e: &Expected) {
    let d = |s: &str| Decimal::from_str(s).unwrap().normalize();
    let got: BTreeMap<String, (u64, Decimal, Decimal, Decimal)> = f
        .clickhouse_tsv(
            "SELECT pboxid, count(), toString(sum(metric)), toString(sum(latitude)), toString(sum(longitude)) \
             FROM iot_data FINAL GROUP BY pboxid",
        )
        .iter()
        .map(|line| {
            let v: Vec<&str> = line.split('\t').collect();
            (v[0].to_string(), (v[1].parse().unwrap(), d(v[2]), d(v[3]), d(v[4])))
        })
        .collect();
    let want: BTreeMap<String, (u64, Decimal, Decimal, Decimal)> = e
        .per_device
        .iter()
        .map(|(k, (n, m, la, lo))| {
            (
                k.clone(),
                (*n, m.normalize(), la.normalize(), lo.normalize()),
            )
        })
        .collect();
    assert_eq!(
        got.values().map(|v| v.0).sum::<u64>(),
        e.valid,
        "ClickHouse rows (FINAL)"
    );
    assert_eq!(got, want, "ClickHouse per-device counts and sums (FINAL)");
    let known = f.clickhouse_tsv("SELECT count(company) FROM iot_data FINAL");
    assert_eq!(known, vec![(e.valid - e.unknown).to_string()]);
    let mut days = f.clickhouse_tsv(&format!(
        "SELECT DISTINCT partition FROM system.parts WHERE database = '{}' AND table = 'iot_data' AND active",
        f.db
    ));
    days.sort();
    let want_days: Vec<String> = e
        .days
        .iter()
        .map(|p| p.trim_start_matches('p').to_string())
        .collect();
    assert_eq!(days, want_days, "ClickHouse day partitions");
}

/// MySQL, ClickHouse and Elasticsearch (the in-test stand-in; no real cluster can run here)
/// at once: every kill leaves each store somewhere else, and the final run makes all three
/// exact.
#[test]
fn all_three_sinks_are_exact_after_sigkills() {
    let f = Fixture::new("three-sinks", 8);
    let es = iotflow_es_stand_in::StandIn::spawn();
    let mut env = f.clickhouse_env();
    env.extend(elasticsearch_env(&es.url));
    let options = options(17);
    let e = expected(&options);
    publish_devices(&brokers(), &f.broadcast, &devices(200, 17)).unwrap();
    let (b, topic, o) = (brokers(), f.topic.clone(), options.clone());
    let producer = std::thread::spawn(move || {
        produce(&b, &topic, Generator::new(o), 8_000.0, |_| {}).unwrap()
    });

    let seed: u64 = rand::random();
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let label = format!("job_name=\"{}\"", f.name);
    for _ in 0..3 {
        let port = free_port();
        let mut child = f.job(2, port).envs(env.clone()).spawn().unwrap();
        wait_for(
            "all three sinks to write rows",
            Duration::from_secs(60),
            || {
                let t = scrape(port)?;
                let written = |sink: &str| {
                    metric_sum(
                        &t,
                        "iotflow_sink_rows_written_total",
                        &[&label, &format!("sink=\"{sink}\"")],
                    )
                };
                ["clickhouse", "mysql", "elasticsearch"]
                    .iter()
                    .all(|s| written(s) > 0.0)
                    .then_some(())
            },
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    producer.join().unwrap();
    let port = free_port();
    let child = f
        .job(2, port)
        .envs(env)
        .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "4")
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(180));
    assert!(ok, "final run failed:\n{stderr}");
    assert_table_matches(&f, &e);
    assert_clickhouse_matches(&f, &e);
    let (got, with_company) = stand_in_per_device(&es, "iot-data");
    let norm = |m: &BTreeMap<String, (u64, Decimal, Decimal, Decimal)>| -> BTreeMap<_, _> {
        m.iter()
            .map(|(k, (n, a, b, c))| (k.clone(), (*n, a.normalize(), b.normalize(), c.normalize())))
            .collect()
    };
    assert_eq!(
        got.values().map(|v| v.0).sum::<u64>(),
        e.valid,
        "Elasticsearch documents"
    );
    assert_eq!(norm(&got), norm(&e.per_device), "Elasticsearch per device");
    assert_eq!(with_company, e.valid - e.unknown);
}

/// How a stage of the rescale test ends.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGKILL every process at once (a crash, a node lost).
    Kill,
    /// SIGTERM every process (Kubernetes scaling the StatefulSet down): each drains.
    Term,
}

/// Starts a cluster of `processes` × `workers` on loopback; returns the children and the
/// metrics port of process 0 (process `i` serves on that port + `i`).
fn start_cluster(
    f: &Fixture,
    env: &[(String, String)],
    processes: usize,
    workers: usize,
    extra: &[(&str, &str)],
) -> (Vec<Reaped>, u16) {
    let metrics_base = wait_for("adjacent free ports", Duration::from_secs(10), || {
        let p = free_port();
        (1..processes as u16)
            .all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
            .then_some(p)
    });
    let hosts = std::env::temp_dir().join(format!("{}-{processes}x{workers}.hosts", f.group));
    let lines: String = (0..processes)
        .map(|_| format!("127.0.0.1:{}\n", free_port()))
        .collect();
    std::fs::write(&hosts, lines).unwrap();
    let children = (0..processes)
        .map(|p| {
            let mut c = f.job(workers, metrics_base);
            c.envs(env.iter().cloned())
                .args(["-n", &processes.to_string(), "-p", &p.to_string()])
                .args(["-h", hosts.to_str().unwrap()]);
            for (k, v) in extra {
                c.env(k, v);
            }
            Reaped::new(c.spawn().unwrap())
        })
        .collect();
    (children, metrics_base)
}

/// The job of a user who rescales: a paced producer keeps writing while the job is stopped and
/// restarted as 1×2, 2×1, 1×4 and finally 1×1 processes × workers (same consumer group),
/// stopped by SIGKILL, SIGTERM, SIGKILL. Every partition resumes from its committed offset on
/// whichever worker owns it in the new shape, so MySQL, ClickHouse, Elasticsearch and the
/// dead-letter topic end up exactly as if one process had read everything once.
#[test]
fn rescaling_by_restart_keeps_every_sink_exact() {
    let f = Fixture::new("rescale", 8);
    let es = iotflow_es_stand_in::StandIn::spawn();
    let mut env = f.clickhouse_env();
    env.extend(elasticsearch_env(&es.url));
    let options = GenOptions {
        count: 120_000,
        ..options(23)
    };
    let e = expected(&options);
    publish_devices(&brokers(), &f.broadcast, &devices(200, 23)).unwrap();
    let (b, topic, o) = (brokers(), f.topic.clone(), options.clone());
    let producer = std::thread::spawn(move || {
        produce(&b, &topic, Generator::new(o), 6_000.0, |_| {}).unwrap()
    });
    let seed: u64 = rand::random();
    eprintln!("stop schedule seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let label = format!("job_name=\"{}\"", f.name);
    let mut figures = Vec::new();
    for (processes, workers, stop) in [(1, 2, Stop::Kill), (2, 1, Stop::Term), (1, 4, Stop::Kill)] {
        let started = Instant::now();
        let before = f.row_count();
        let (children, port) = start_cluster(&f, &env, processes, workers, &[]);
        // Every process of the new shape writes before it is stopped.
        for p in 0..processes as u16 {
            wait_for(
                "every process to write rows",
                Duration::from_secs(90),
                || {
                    let t = scrape(port + p)?;
                    (metric_sum(&t, "iotflow_sink_rows_written_total", &[&label]) > 0.0)
                        .then_some(())
                },
            );
        }
        let first_write = started.elapsed();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        match stop {
            Stop::Kill => {
                for c in children {
                    let mut c = c.take();
                    c.kill().unwrap();
                    c.wait().unwrap();
                }
            }
            Stop::Term => {
                let children: Vec<_> = children.into_iter().map(Reaped::take).collect();
                for c in &children {
                    sigterm(c);
                }
                for c in children {
                    let (ok, stderr) = finish(c, Duration::from_secs(120));
                    assert!(ok, "a SIGTERMed process failed:\n{stderr}");
                }
            }
        }
        let after = f.row_count();
        eprintln!(
            "{processes}x{workers}: first rows after {first_write:?}, rows {before} -> {after} of {}, stopped by {stop:?}",
            e.valid
        );
        figures.push(after);
    }
    producer.join().unwrap();
    assert!(
        figures.iter().all(|n| *n < e.valid),
        "every stop happened mid-stream: {figures:?}"
    );
    let (children, _) = start_cluster(&f, &env, 1, 1, &[("IOTFLOW__JOB__IDLE_EXIT_SECS", "4")]);
    for c in children {
        let (ok, stderr) = finish(c.take(), Duration::from_secs(240));
        assert!(ok, "final 1x1 run failed:\n{stderr}");
    }
    assert_table_matches(&f, &e);
    assert_clickhouse_matches(&f, &e);
    assert_dead_letters(&f, &e, true);
    let (got, with_company) = stand_in_per_device(&es, "iot-data");
    assert_eq!(
        got.values().map(|v| v.0).sum::<u64>(),
        e.valid,
        "Elasticsearch documents"
    );
    assert_eq!(with_company, e.valid - e.unknown);
}

/// Collects a child's stderr as it comes.
fn collect_stderr(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let o = out.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut o = o.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    });
    out
}

/// Cluster membership with real processes: a process started before its peer names the peer
/// it cannot reach and is not ready; once the peer is up both become ready; when one is
/// SIGKILLed the other stops at once with an error naming it (status 3) instead of waiting
/// forever for progress; restarted, the cluster finishes the data exactly once, and a SIGTERM
/// to one process stops both cleanly.
#[test]
fn an_unreachable_peer_is_named_and_a_lost_one_stops_the_cluster() {
    let f = Fixture::new("peers", 4);
    let e = backlog(&f, 20_000, 29);
    let hosts = std::env::temp_dir().join(format!("{}.hosts", f.group));
    let ports = [free_port(), free_port()];
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let metrics = wait_for("two adjacent free ports", Duration::from_secs(10), || {
        let p = free_port();
        std::net::TcpListener::bind(("127.0.0.1", p + 1))
            .ok()
            .map(|_| p)
    });
    let process = |p: usize| {
        let mut c = f.job(1, metrics);
        c.args([
            "-n",
            "2",
            "-p",
            &p.to_string(),
            "-h",
            hosts.to_str().unwrap(),
        ]);
        c
    };
    let mut one = process(1).spawn().unwrap();
    let one_log = collect_stderr(&mut one);
    let one = Reaped::new(one);
    let named = format!("cannot reach process 0 at 127.0.0.1:{}", ports[0]);
    wait_for(
        "process 1 to name its missing peer",
        Duration::from_secs(60),
        || one_log.lock().unwrap().contains(&named).then_some(()),
    );
    let (status, body) = wait_for("process 1's /readyz", Duration::from_secs(30), || {
        http_get(metrics + 1, "/readyz", Duration::from_secs(2))
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("forming the cluster"), "{body}");

    let zero = Reaped::new(process(0).spawn().unwrap());
    for p in 0..2u16 {
        wait_for("both processes ready", Duration::from_secs(120), || {
            let (status, body) = http_get(metrics + p, "/readyz", Duration::from_secs(2))?;
            (status == 200 && body.contains("running")).then_some(())
        });
    }
    let mut zero = zero.take();
    zero.kill().unwrap();
    zero.wait().unwrap();
    let mut one = one.take();
    let status = wait_for("process 1 to stop", Duration::from_secs(60), || {
        one.try_wait().unwrap()
    });
    let log = one_log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(3), "exit status; stderr:\n{log}");
    assert!(log.contains("lost process 0"), "{log}");

    // Restarted, the cluster finishes the data; then a SIGTERM to one process (a pod deleted)
    // drains both: the request is relayed, and both exit 0.
    let children: Vec<_> = (0..2)
        .map(|p| Reaped::new(process(p).spawn().unwrap()))
        .collect();
    wait_for("everything stored", Duration::from_secs(120), || {
        (f.row_count() == e.valid).then_some(())
    });
    let children: Vec<_> = children.into_iter().map(Reaped::take).collect();
    sigterm(&children[1]);
    let mut logs = Vec::new();
    for c in children {
        let (ok, stderr) = finish(c, Duration::from_secs(60));
        assert!(ok, "a process of the SIGTERMed cluster failed:\n{stderr}");
        logs.push(stderr);
    }
    assert!(
        logs[0].contains("stop requested elsewhere in the cluster"),
        "{}",
        logs[0]
    );
    let _ = std::fs::remove_file(&hosts);
    assert_table_matches(&f, &e);
    assert_dead_letters(&f, &e, true);
}

/// Partitions added while the job runs (2 workers) are read without a restart, their lag is
/// reported, their offsets committed, and every reading is stored exactly once.
///
/// Stand-in, said plainly: neither broker that runs here can add partitions to a topic (tansu
/// answers CreatePartitions with UnsupportedFeature; librdkafka's mock cluster has no handler
/// for it) and Apache Kafka cannot be installed. So the topic is created with 6 partitions and
/// the job is told, through the test-only `IOTFLOW_TEST_PRETEND_PARTITIONS`, to believe at start
/// that it had 2: its first metadata check then sees 4 new ones, exactly as after a
/// CreatePartitions. Everything after the count (assignment, queues, lag, commits) is real.
#[test]
fn partitions_added_while_running_are_read_without_a_restart() {
    let f = Fixture::new("grow", 6);
    let e = backlog(&f, 20_000, 31);
    let port = free_port();
    let child = Reaped::new(
        f.job(2, port)
            .env("IOTFLOW__KAFKA__METADATA_REFRESH_SECS", "2")
            .env("IOTFLOW_TEST_PRETEND_PARTITIONS", format!("{}:2", f.topic))
            .spawn()
            .unwrap(),
    );
    let label = format!("job_name=\"{}\"", f.name);
    wait_for(
        "lag reported for the added partitions",
        Duration::from_secs(60),
        || {
            let t = scrape(port)?;
            (2..6)
                .all(|p| {
                    t.lines().any(|l| {
                        l.starts_with("iotflow_kafka_consumer_lag{")
                            && l.contains(&label)
                            && l.contains("operator=\"kafka-source\"")
                            && l.contains(&format!("partition=\"{p}\""))
                    })
                })
                .then_some(())
        },
    );
    wait_for("everything stored", Duration::from_secs(120), || {
        (f.row_count() == e.valid).then_some(())
    });
    let child = child.take();
    sigterm(&child);
    let (ok, stderr) = finish(child, Duration::from_secs(120));
    assert!(ok, "job failed:\n{stderr}");
    assert!(
        stderr.contains("the topic grew from 2 to 6 partitions"),
        "{stderr}"
    );
    let committed = CommittedOffsets::new(&f, 6)
        .get()
        .expect("committed offsets");
    assert!(
        (2..6).all(|p| committed.get(&p).is_some_and(|o| *o > 0)),
        "offsets committed for the added partitions: {committed:?}"
    );
    assert_table_matches(&f, &e);
    assert_dead_letters(&f, &e, true);
}

/// A process that fails (here a definite MySQL error: a column the sink writes was dropped)
/// exits, and its peer, which has nothing to write and would otherwise wait for it forever,
/// stops on the lost process: the cluster does not hang, the orchestrator can restart it.
#[test]
fn a_failed_process_takes_the_cluster_down_instead_of_hanging() {
    // One partition: process 0 reads and writes everything, process 1 only takes part.
    let f = Fixture::new("fail-peer", 1);
    let e = backlog(&f, 5_000, 37);
    let (children, port) = start_cluster(&f, &[], 2, 1, &[]);
    let label = format!("job_name=\"{}\"", f.name);
    wait_for("process 0 to write rows", Duration::from_secs(90), || {
        let t = scrape(port)?;
        (metric_sum(&t, "iotflow_sink_rows_written_total", &[&label]) > 0.0).then_some(())
    });
    wait_for("process 1 to be ready", Duration::from_secs(60), || {
        let (status, _) = http_get(port + 1, "/readyz", Duration::from_secs(2))?;
        (status == 200).then_some(())
    });
    let _: Vec<u64> = f.query("ALTER TABLE iot_data DROP COLUMN company");
    // More readings, which process 0 can no longer store.
    let more = GenOptions {
        count: 2_000,
        ..options(41)
    };
    produce(&brokers(), &f.topic, Generator::new(more), 0.0, |_| {}).unwrap();
    let mut logs = Vec::new();
    for c in children {
        let (ok, stderr) = finish(c.take(), Duration::from_secs(90));
        assert!(!ok, "a process of the failed cluster exited 0:\n{stderr}");
        logs.push(stderr);
    }
    assert!(logs[0].contains("mysql sink"), "{}", logs[0]);
    assert!(logs[1].contains("lost process 0"), "{}", logs[1]);
    assert!(f.row_count() >= 1 && f.row_count() <= e.valid);
}
