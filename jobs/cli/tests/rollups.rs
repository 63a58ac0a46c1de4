//! Rollups, heat map and day tracks on real servers (MariaDB, ClickHouse, the broker), against
//! an oracle computed here from the generated readings: readings arrive out of order (shuffled
//! in windows of several minutes of event time, across minute, hour and day boundaries) while
//! the job is SIGKILLed twice, and every rollup row must equal the aggregate of exactly the
//! readings of its bucket.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generated, Generator};
use iotflow_geo::{geohash, Point, TrackPoint, TrackSummary};
use iotflow_model::{Decimal, NaiveDateTime};
use rand::seq::SliceRandom;
use rand::SeedableRng;

const PRECISION: usize = 7;
const STOP_RADIUS_M: f64 = 20.0;
const STOP_MIN_SECS: i64 = 60;

/// A stop's (from, to), `YYYY-MM-DD HH:MM:SS.fff`.
type Span = (String, String);

/// `(readings, min, max, sum, last)` of one bucket.
type Agg = (u64, Decimal, Decimal, Decimal, Decimal);

struct Oracle {
    /// By grain name, then (device, bucket start as `YYYY-MM-DD HH:MM:SS`).
    rollups: BTreeMap<&'static str, BTreeMap<(String, String), Agg>>,
    /// (hour, tile, device) → readings.
    heat: BTreeMap<(String, String, String), u64>,
    /// (device, day) → (points, distance, stops).
    tracks: BTreeMap<(String, String), (u64, f64, Vec<Span>)>,
}

fn bucket(at: NaiveDateTime, grain: &str) -> String {
    match grain {
        "minute" => at.format("%Y-%m-%d %H:%M:00").to_string(),
        "hour" => at.format("%Y-%m-%d %H:00:00").to_string(),
        _ => at.format("%Y-%m-%d 00:00:00").to_string(),
    }
}

fn oracle(records: &[Generated]) -> Oracle {
    // Every device has one reading per round, so event times within a device are distinct
    // and "last" is simply the latest.
    let mut by_device: BTreeMap<String, Vec<&iotflow_gen::Expected>> = BTreeMap::new();
    for r in records {
        if let Some(e) = &r.expected {
            by_device.entry(e.pboxid.clone()).or_default().push(e);
        }
    }
    let mut rollups: BTreeMap<&'static str, BTreeMap<(String, String), Agg>> = BTreeMap::new();
    let mut heat = BTreeMap::new();
    let mut tracks = BTreeMap::new();
    for (device, mut readings) in by_device {
        readings.sort_by_key(|e| e.event_time);
        for grain in ["minute", "hour", "day"] {
            let m = rollups.entry(grain).or_default();
            for e in &readings {
                let a = m
                    .entry((device.clone(), bucket(e.event_time, grain)))
                    .or_insert((0, e.metric, e.metric, Decimal::ZERO, e.metric));
                a.0 += 1;
                a.1 = a.1.min(e.metric);
                a.2 = a.2.max(e.metric);
                a.3 += e.metric;
                a.4 = e.metric;
            }
        }
        let point = |e: &iotflow_gen::Expected| {
            Point::new(
                e.latitude.to_string().parse().unwrap(),
                e.longitude.to_string().parse().unwrap(),
            )
        };
        let mut days: BTreeMap<String, TrackSummary> = BTreeMap::new();
        for e in &readings {
            *heat
                .entry((
                    bucket(e.event_time, "hour"),
                    geohash::encode(point(e), PRECISION),
                    device.clone(),
                ))
                .or_insert(0u64) += 1;
            days.entry(bucket(e.event_time, "day"))
                .or_insert_with(|| TrackSummary::new(STOP_RADIUS_M, STOP_MIN_SECS * 1000))
                .push(TrackPoint {
                    at_ms: e.event_time.and_utc().timestamp_millis(),
                    p: point(e),
                });
        }
        let text = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .naive_utc()
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        };
        for (day, s) in days {
            let stops = s
                .stops()
                .iter()
                .map(|st| (text(st.from_ms), text(st.to_ms)))
                .collect();
            tracks.insert((device.clone(), day), (s.points, s.distance_m, stops));
        }
    }
    Oracle {
        rollups,
        heat,
        tracks,
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap().normalize()
}

fn mysql_rollups(f: &Fixture, grain: &str) -> BTreeMap<(String, String), (Agg, Decimal)> {
    type R = (String, String, u64, String, String, String, String, String);
    f.query::<R>(&format!(
        "SELECT pboxid, DATE_FORMAT(bucket, '%Y-%m-%d %H:%i:%s'), readings, \
         CAST(metric_min AS CHAR), CAST(metric_max AS CHAR), CAST(metric_sum AS CHAR), \
         CAST(metric_last AS CHAR), CAST(metric_avg AS CHAR) FROM iot_rollup_{grain}"
    ))
    .into_iter()
    .map(|(d, b, n, min, max, sum, last, avg)| {
        (
            (d, b),
            ((n, dec(&min), dec(&max), dec(&sum), dec(&last)), dec(&avg)),
        )
    })
    .collect()
}

fn clickhouse_rollups(f: &Fixture, grain: &str) -> BTreeMap<(String, String), Agg> {
    f.clickhouse_tsv(&format!(
        "SELECT pboxid, toString(bucket), readings, toString(metric_min), toString(metric_max), \
         toString(metric_sum), toString(metric_last) FROM iot_rollup_{grain} FINAL"
    ))
    .iter()
    .map(|line| {
        let v: Vec<&str> = line.split('\t').collect();
        (
            (v[0].to_string(), v[1].to_string()),
            (
                v[2].parse().unwrap(),
                dec(v[3]),
                dec(v[4]),
                dec(v[5]),
                dec(v[6]),
            ),
        )
    })
    .collect()
}

fn avg(a: &Agg) -> Decimal {
    (a.3 / Decimal::from(a.0))
        .round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

fn assert_matches(f: &Fixture, o: &Oracle, clickhouse: bool) {
    for (grain, want) in &o.rollups {
        let got = mysql_rollups(f, grain);
        assert_eq!(got.len(), want.len(), "{grain} buckets in MySQL");
        for (key, a) in want {
            let (g, g_avg) = got
                .get(key)
                .unwrap_or_else(|| panic!("{grain} {key:?} missing from MySQL"));
            let a = (
                a.0,
                a.1.normalize(),
                a.2.normalize(),
                a.3.normalize(),
                a.4.normalize(),
            );
            assert_eq!(*g, a, "{grain} {key:?} in MySQL");
            assert_eq!(*g_avg, avg(&a), "{grain} {key:?} avg in MySQL");
        }
        if clickhouse {
            let got = clickhouse_rollups(f, grain);
            assert_eq!(got.len(), want.len(), "{grain} buckets in ClickHouse");
            for (key, a) in want {
                let a = (
                    a.0,
                    a.1.normalize(),
                    a.2.normalize(),
                    a.3.normalize(),
                    a.4.normalize(),
                );
                assert_eq!(got.get(key), Some(&a), "{grain} {key:?} in ClickHouse");
            }
        }
    }
    type H = (String, String, String, u64);
    let heat: BTreeMap<(String, String, String), u64> = f
        .query::<H>(
            "SELECT DATE_FORMAT(bucket, '%Y-%m-%d %H:%i:%s'), tile, pboxid, readings FROM iot_heat_hour",
        )
        .into_iter()
        .map(|(b, t, d, n)| ((b, t, d), n))
        .collect();
    assert_eq!(heat, o.heat, "heat map");
    type T = (String, String, u64, f64, u64, Option<String>);
    let tracks = f.query::<T>(
        "SELECT pboxid, DATE_FORMAT(day, '%Y-%m-%d %H:%i:%s'), points, distance_m, stops, state FROM iot_tracks",
    );
    type S = (String, String, String, String);
    let mut ended: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for (d, day, from, to) in f.query::<S>(
        "SELECT pboxid, DATE_FORMAT(day, '%Y-%m-%d %H:%i:%s'), \
         DATE_FORMAT(from_time, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(to_time, '%Y-%m-%d %H:%i:%s.%f') \
         FROM iot_track_stops ORDER BY pboxid, day, from_time",
    ) {
        // %f is microseconds: the columns hold milliseconds.
        ended
            .entry((d, day))
            .or_default()
            .push((from[..23].to_string(), to[..23].to_string()));
    }
    assert_eq!(tracks.len(), o.tracks.len(), "day tracks");
    let mut stops = 0;
    for (d, day, points, distance, n, state) in tracks {
        let (want_points, want_distance, want_stops) = &o.tracks[&(d.clone(), day.clone())];
        assert_eq!(points, *want_points, "{d} {day} points");
        // The same additions in the same order: equal up to the text round trip.
        assert!(
            (distance - want_distance).abs() <= 1e-6 * want_distance.max(1.0),
            "{d} {day}: {distance} m, want {want_distance}"
        );
        assert_eq!(n as usize, want_stops.len(), "{d} {day} stops");
        // The ended stops are rows; the stay in progress, once long enough, is in the state.
        let mut got = ended.remove(&(d.clone(), day.clone())).unwrap_or_default();
        if let Some(open) = state.as_deref().and_then(iotflow_rollups::store::open_stop) {
            got.push((open.from, open.to));
        }
        assert_eq!(&got, want_stops, "{d} {day} stops");
        stops += n;
    }
    assert!(ended.is_empty(), "stops of no track: {ended:?}");
    assert!(stops > 0, "the readings make some stops");
}

fn options(count: u64) -> GenOptions {
    GenOptions {
        devices: 40,
        count,
        malformed_share: 0.0,
        unknown_share: 0.0,
        seed: 61,
        // 7 s a round: 1000 rounds span about two hours across midnight.
        start: NaiveDateTime::parse_from_str("2025-04-10 23:10:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        step: chrono::Duration::seconds(7),
        ..Default::default()
    }
}

/// The generated records, shuffled within windows of `window` records (readings arrive up to
/// `window / devices` rounds late), each device's over several partitions.
fn shuffled(options: &GenOptions, window: usize, seed: u64) -> Vec<Generated> {
    let mut records: Vec<Generated> = Generator::new(options.clone()).collect();
    // Keys that spread each device over several partitions, so over both workers: two
    // transactions may update one device's buckets at once (the row locks order them).
    for (i, r) in records.iter_mut().enumerate() {
        r.key = format!("{}/{}", r.key, i % 3);
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    for chunk in records.chunks_mut(window) {
        chunk.shuffle(&mut rng);
    }
    records
}

fn rollup_job(f: &Fixture, port: u16, env: &[(String, String)]) -> std::process::Command {
    let mut c = f.job(2, port);
    c.envs(env.iter().map(|(k, v)| (k, v)))
        .env("IOTFLOW__ROLLUPS__ENABLED", "true")
        .env("IOTFLOW__ROLLUPS__GEOHASH_PRECISION", PRECISION.to_string())
        .env("IOTFLOW__ROLLUPS__STOP_RADIUS_M", STOP_RADIUS_M.to_string())
        .env("IOTFLOW__ROLLUPS__STOP_MIN_SECS", STOP_MIN_SECS.to_string())
        // Small batches: many rollup transactions, buckets split across them.
        .env("IOTFLOW__MYSQL__BATCH__MAX_ROWS", "300");
    c
}

#[test]
fn rollups_are_exact_under_reordering_and_sigkills() {
    let f = Fixture::new("rollups", 4);
    let env = f.clickhouse_env();
    let options = options(40_000);
    // 2400 records: 60 rounds, 7 minutes of event time.
    let records = shuffled(&options, 2_400, 7);
    let o = oracle(&records);
    publish_devices(&brokers(), &f.broadcast, &devices(40, 61)).unwrap();
    let (b, topic) = (brokers(), f.topic.clone());
    let producer = std::thread::spawn(move || {
        produce(&b, &topic, records.into_iter(), 6_000.0, |_| {}).unwrap()
    });

    let label = format!("job_name=\"{}\"", f.name);
    for kill in 0..2 {
        let port = free_port();
        let mut child = rollup_job(&f, port, &env).spawn().unwrap();
        wait_for("rollups to be written", Duration::from_secs(90), || {
            let t = scrape_running(port, &mut child);
            (metric_sum(&t, "iotflow_rollup_rows_updated_total", &[&label]) > 0.0).then_some(())
        });
        std::thread::sleep(Duration::from_millis(700 + 900 * kill));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("kill {kill}: {} rows stored", f.row_count());
    }
    assert_eq!(producer.join().unwrap(), 40_000);
    let port = free_port();
    let mut child = rollup_job(&f, port, &env).spawn().unwrap();
    let recomputed = wait_for(
        "every reading counted in the day rollups",
        Duration::from_secs(180),
        || {
            let t = scrape_running(port, &mut child);
            let counted: Vec<Option<u64>> =
                f.query("SELECT CAST(SUM(readings) AS UNSIGNED) FROM iot_rollup_day");
            (counted[0] == Some(40_000))
                .then(|| metric_sum(&t, "iotflow_rollup_rows_recomputed_total", &[&label]))
        },
    );
    eprintln!("the last run recomputed {recomputed} rollup rows (late and replayed readings)");
    assert_api(port, &o);
    sigterm(&child);
    let (ok, stderr) = finish(child, Duration::from_secs(120));
    assert!(ok, "final run failed:\n{stderr}");
    assert_matches(&f, &o, true);
}

fn api(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http_get(port, path, Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("error").is_none(), "{path}: {body}");
    v
}

/// The web UI's JSON API agrees with the oracle.
fn assert_api(port: u16, o: &Oracle) {
    // The heat map of the first hour: devices and readings per tile.
    let hour = "2025-04-10 23";
    let v = api(
        port,
        &format!("/api/heatmap?hour={}", hour.replace(' ', "%20")),
    );
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((h, tile, _), n) in &o.heat {
        if h.starts_with(hour) {
            let e = want.entry(tile.clone()).or_default();
            e.0 += 1;
            e.1 += n;
        }
    }
    let got: BTreeMap<String, (u64, u64)> = v["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let (s, n) = (t["south"].as_f64().unwrap(), t["north"].as_f64().unwrap());
            assert!(s < n, "{t}");
            (
                t["tile"].as_str().unwrap().to_string(),
                (
                    t["devices"].as_u64().unwrap(),
                    t["readings"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want, "heat map of {hour}");
    // One device's track: the summary and a path of every point, in time order.
    let ((device, day), (points, distance, stops)) = o.tracks.iter().next().unwrap();
    let v = api(
        port,
        &format!("/api/track?device={device}&day={}", &day[..10]),
    );
    assert_eq!(v["points"].as_u64(), Some(*points), "{v}");
    assert!((v["distance_m"].as_f64().unwrap() - distance).abs() < 1e-6 * distance.max(1.0));
    assert_eq!(v["stops"].as_array().unwrap().len(), stops.len());
    let path = v["path"].as_array().unwrap();
    assert_eq!(path.len() as u64, (*points).min(2000));
    assert!(
        path.windows(2).all(|w| w[0][0].as_str() < w[1][0].as_str()),
        "path in time order"
    );
    let list = api(port, &format!("/api/tracks?day={}", &day[..10]));
    let n = o.tracks.keys().filter(|(_, d)| d == day).count();
    assert_eq!(list["tracks"].as_array().unwrap().len(), n);
    // The device's minute rollups, newest first.
    let v = api(port, &format!("/api/rollups?device={device}&grain=minute"));
    let want: Vec<u64> = o.rollups["minute"]
        .iter()
        .filter(|((d, _), _)| d == device)
        .rev()
        .map(|(_, a)| a.0)
        .collect();
    let got: Vec<u64> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["readings"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
    // Bad parameters are named.
    let (_, body) = http_get(port, "/api/track?day=2025-04-10", Duration::from_secs(10)).unwrap();
    assert!(body.contains("device is required"), "{body}");
    let (_, body) = http_get(
        port,
        "/api/rollups?device=x&grain=week",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(body.contains("grain `week`"), "{body}");
}

#[test]
fn rollups_are_off_by_default_and_leave_no_tables() {
    let f = Fixture::new("rollups-off", 2);
    let options = options(2_000);
    publish_devices(&brokers(), &f.broadcast, &devices(40, 61)).unwrap();
    produce(&brokers(), &f.topic, Generator::new(options), 0.0, |_| {}).unwrap();
    let (ok, stderr) = finish(
        f.job(2, free_port())
            .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "3")
            .spawn()
            .unwrap(),
        Duration::from_secs(120),
    );
    assert!(ok, "{stderr}");
    assert_eq!(f.row_count(), 2_000);
    let tables = f.query::<String>(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'iot_rollup%'",
    );
    assert!(tables.is_empty(), "{tables:?}");
}
