//! Alarms on real servers (tansu, MariaDB): every rule kind, offline detection, readings out of
//! order within the lateness bound and later than it, and SIGKILL restarts, each checked
//! against `iotflow_alarms::reference`, the direct definition, over the same readings.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use iotflow_alarms::reference::reference;
use iotflow_alarms::{Event, EventKind, Rule, Sample};
use iotflow_model::{Decimal, DeviceInfo};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, Producer};

const LATENESS_MS: i64 = 5000;
/// 2025-04-10 10:00:00 as event-time milliseconds.
const START_MS: i64 = 1_744_279_200_000;

/// The outer ring of the `fence` rule (its hole is in [`rules_toml`]); the walks of [`plan`]
/// move on a 0.01° grid, so they often stand exactly on its edges.
const FENCE: &str = "[[121.40, 31.20], [121.50, 31.20], [121.50, 31.30], [121.40, 31.30]]";

fn rules_toml(idle_ms: u64) -> String {
    format!(
        r#"
[alarms]
enabled = true
lateness_ms = {LATENESS_MS}
idle_partition_ms = {idle_ms}
checkpoint_interval_ms = 300

[[alarms.rules]]
id = "hot"
when = "above"
value = "80"
hysteresis = "10"
for_secs = 3
severity = "critical"

[[alarms.rules]]
id = "cold"
when = "below"
value = "20"
model = "PX"

[[alarms.rules]]
id = "band"
when = "outside"
low = "30"
high = "70"
hysteresis = "2.5"
site = "s2"
severity = "info"

[[alarms.rules]]
id = "own"
when = "above"
value = "95"
device_threshold = true

[[alarms.rules]]
id = "one"
when = "above"
value = "50"
device = "al-03"

[[alarms.rules]]
id = "gone"
when = "offline"
after_secs = 20

[[alarms.rules]]
id = "fence"
when = "in_area"
area = [{FENCE}, [[121.44, 31.24], [121.46, 31.24], [121.46, 31.26], [121.44, 31.26]]]
for_secs = 2

[[alarms.rules]]
id = "away"
when = "out_of_area"
area = [[[121.35, 31.15], [121.55, 31.15], [121.55, 31.35], [121.35, 31.35]]]
site = "s1"
"#
    )
}

fn rules(text: &str) -> Vec<Rule> {
    iotflow_config::Config::from_toml_with_env(text, "", Vec::new())
        .unwrap()
        .alarms
        .parsed_rules()
        .unwrap()
}

fn device_records(n: usize) -> Vec<DeviceInfo> {
    (0..n)
        .map(|i| DeviceInfo {
            pboxid: format!("al-{i:02}"),
            model: Some(if i % 2 == 0 { "PX" } else { "QZ" }.into()),
            site: Some(if i % 3 == 0 { "s2" } else { "s1" }.into()),
            work_threshold: (i % 4 == 1).then(|| Decimal::from(60)),
            ..Default::default()
        })
        .collect()
}

/// One reading to produce: the sample the rules see, and the partition it goes to.
#[derive(Clone, Debug)]
struct Planned {
    sample: Sample,
    partition: i32,
}

/// Seeded readings of `n` devices over `rounds` seconds: random walks that cross every bound,
/// a few repeats and same-time readings, two devices silent for 50 s and one for good; sent
/// in an order shuffled within 3 s of event time (inside the 5 s bound), over 2 partitions.
fn plan(seed: u64, n: usize, rounds: i64) -> Vec<Planned> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let records = device_records(n);
    let mut out = Vec::new();
    let mut level: Vec<i64> = (0..n).map(|_| rng.random_range(0..10_000)).collect();
    // Positions in hundredths of a degree, walking around the fences of the area rules.
    let mut at: Vec<(i64, i64)> = (0..n)
        .map(|_| (rng.random_range(3110..3140), rng.random_range(12130..12160)))
        .collect();
    for round in 0..rounds {
        for (i, d) in records.iter().enumerate() {
            let silent =
                (i == n - 1 || i == n - 2) && (rounds / 2..rounds / 2 + 50).contains(&round);
            let gone = i == n - 3 && round > rounds - 60;
            if silent || gone {
                continue;
            }
            let step: i64 = if rng.random_bool(0.05) {
                rng.random_range(-6000..6000)
            } else {
                rng.random_range(-900..900)
            };
            level[i] = (level[i] + step).clamp(0, 10_000);
            at[i].0 = (at[i].0 + rng.random_range(-2..=2)).clamp(3105, 3145);
            at[i].1 = (at[i].1 + rng.random_range(-2..=2)).clamp(12125, 12165);
            let at_ms = START_MS + round * 1000 + rng.random_range(0..3) * 250;
            let sample = Sample {
                pboxid: d.pboxid.clone(),
                at_ms,
                metric: Decimal::new(level[i], 2),
                model: d.model.clone(),
                site: d.site.clone(),
                threshold: d.work_threshold,
                lat: Decimal::new(at[i].0, 2),
                lon: Decimal::new(at[i].1, 2),
            };
            let partition = rng.random_range(0..2);
            if rng.random_bool(0.02) {
                // A redelivery: the same reading again, right after.
                out.push(Planned {
                    sample: sample.clone(),
                    partition,
                });
            }
            if rng.random_bool(0.02) {
                // Another reading at the same instant.
                let mut other = sample.clone();
                other.metric = Decimal::new((level[i] + 1500).min(10_000), 2);
                out.push(Planned {
                    sample: other,
                    partition,
                });
            }
            out.push(Planned { sample, partition });
        }
    }
    // Arrival order: event time plus up to 3 s of jitter.
    let mut keyed: Vec<(i64, usize, Planned)> = out
        .into_iter()
        .enumerate()
        .map(|(k, p)| (p.sample.at_ms + rng.random_range(0..3000), k, p))
        .collect();
    keyed.sort_by_key(|(t, k, _)| (*t, *k));
    let mut arrival: Vec<Planned> = keyed.into_iter().map(|(_, _, p)| p).collect();
    // Within equal arrival keys, any order: shuffle small windows once more.
    for chunk in arrival.chunks_mut(3) {
        chunk.shuffle(&mut rng);
    }
    arrival
}

fn payload(s: &Sample) -> String {
    let t = chrono::DateTime::from_timestamp_millis(s.at_ms)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    format!(
        r#"{{"event_time":"{t}","metric":{},"pboxid":"{}","latitude":{},"longitude":{}}}"#,
        s.metric, s.pboxid, s.lat, s.lon
    )
}

/// Sends `readings` in order, `rate` per second (0: at once).
fn send(topic: &str, readings: &[Planned], rate: f64) {
    let producer = iotflow_gen::producer(&brokers()).unwrap();
    let start = std::time::Instant::now();
    for (k, p) in readings.iter().enumerate() {
        if rate > 0.0 {
            let due = Duration::from_secs_f64(k as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let body = payload(&p.sample);
        let record = BaseRecord::to(topic)
            .key(p.sample.pboxid.as_bytes())
            .payload(body.as_bytes())
            .partition(p.partition);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// One `device_alarms` row, as the test compares it.
type Episode = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn text(ms: i64) -> String {
    iotflow_alarms_flow::time_text(ms)
}

fn dec(d: &Decimal) -> String {
    let mut d = d.normalize();
    d.rescale(8);
    d.to_string()
}

/// The episodes `events` describe, as rows of `device_alarms`.
fn episodes(events: &[Event]) -> BTreeSet<Episode> {
    let mut rows: BTreeMap<(String, String, i64), Episode> = BTreeMap::new();
    for e in events {
        let key = (e.rule.clone(), e.pboxid.clone(), e.first_ms);
        match e.kind {
            EventKind::Raised => {
                rows.insert(
                    key,
                    (
                        e.rule.clone(),
                        e.pboxid.clone(),
                        text(e.first_ms),
                        e.severity.as_str().into(),
                        text(e.at_ms),
                        dec(&e.value),
                        text(e.last_ms),
                        None,
                        None,
                    ),
                );
            }
            EventKind::Cleared => {
                let row = rows.get_mut(&key).expect("a clear follows its raise");
                row.6 = text(e.last_ms.max(row.row_6_ms()));
                row.7 = Some(text(e.at_ms));
                row.8 = Some(dec(&e.value));
            }
        }
    }
    rows.into_values().collect()
}

trait LastMs {
    fn row_6_ms(&self) -> i64;
}

impl LastMs for Episode {
    fn row_6_ms(&self) -> i64 {
        chrono::NaiveDateTime::parse_from_str(&self.6, "%Y-%m-%d %H:%M:%S%.3f")
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }
}

/// What the job must end with: per worker of `workers`, the reference over that worker's
/// devices, with event time complete through its newest reading minus the bound (every
/// partition is idle at the end, so the worker releases everything it has).
fn expected(rules: &[Rule], readings: &[Planned], workers: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for w in 0..workers {
        let mine: Vec<Sample> = readings
            .iter()
            .filter(|p| iotflow_alarms_flow::worker_of(&p.sample.pboxid, workers) == w)
            .map(|p| p.sample.clone())
            .collect();
        let Some(newest) = mine.iter().map(|s| s.at_ms).max() else {
            continue;
        };
        let watermark = newest - LATENESS_MS;
        let applied: Vec<Sample> = mine.into_iter().filter(|s| s.at_ms <= watermark).collect();
        events.extend(reference(rules, &applied, watermark));
    }
    events
}

fn table(f: &Fixture) -> BTreeSet<Episode> {
    let exists: Vec<String> = f.query(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'device_alarms'",
        f.db
    ));
    if exists.is_empty() {
        return BTreeSet::new();
    }
    let rows: Vec<Episode> =
        f.query(
            "SELECT rule_id, pboxid, DATE_FORMAT(first_at, '%Y-%m-%d %H:%i:%s.%f'), severity, \
             DATE_FORMAT(raised_at, '%Y-%m-%d %H:%i:%s.%f'), CAST(raised_value AS CHAR), \
             DATE_FORMAT(last_at, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(cleared_at, '%Y-%m-%d %H:%i:%s.%f'), \
             CAST(cleared_value AS CHAR) FROM device_alarms",
        );
    // DATE_FORMAT's %f is microseconds: cut to the milliseconds the table holds.
    let ms = |s: String| s[..s.len() - 3].to_string();
    rows.into_iter()
        .map(|(r, p, first, sev, raised, rv, last, cleared, cv)| {
            (
                r,
                p,
                ms(first),
                sev,
                ms(raised),
                rv,
                ms(last),
                cleared.map(ms),
                cv,
            )
        })
        .collect()
}

/// The alarm events on the alarms topic: (id, count); reads until `expected` distinct ids
/// are there and the topic has been quiet for 2 s.
fn topic_events(topic: &str, group: &str, expected: usize) -> BTreeMap<String, usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{group}-alarms-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut ids = BTreeMap::new();
    let start = std::time::Instant::now();
    let mut quiet_since = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = std::time::Instant::now();
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                assert_eq!(
                    m.key(),
                    v["pboxid"].as_str().map(str::as_bytes),
                    "keyed by device"
                );
                *ids.entry(v["id"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if ids.len() >= expected && quiet_since.elapsed() > Duration::from_secs(2) => {
                break
            }
            None => {}
        }
    }
    ids
}

fn alarm_job(
    f: &Fixture,
    config: &std::path::Path,
    workers: usize,
    port: u16,
    alarms: &str,
) -> std::process::Command {
    let mut c = f.job(workers, port);
    c.arg("--config")
        .arg(config)
        .env("IOTFLOW__ALARMS__TOPIC", alarms)
        .env("IOTFLOW__JOB__COMMIT_INTERVAL_MS", "200")
        .env(
            "IOTFLOW_LOG",
            std::env::var("ALARM_TEST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        );
    c
}

fn write_config(f: &Fixture, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}-alarms.toml", f.group));
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_for_table(f: &Fixture, want: &BTreeSet<Episode>, child: &mut Child, timeout: Duration) {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the job exited ({status}) before the alarms were complete");
        }
        let last = table(f);
        if &last == want {
            return;
        }
        if start.elapsed() > timeout {
            let missing: Vec<_> = want.difference(&last).take(5).collect();
            let extra: Vec<_> = last.difference(want).take(5).collect();
            panic!(
                "device_alarms after {timeout:?}: {} rows, want {}; missing {missing:#?}; unexpected {extra:#?}",
                last.len(),
                want.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn label_sum(port: u16, name: &str, f: &Fixture) -> f64 {
    let label = format!("job_name=\"{}\"", f.name);
    scrape(port).map_or(0.0, |t| metric_sum(&t, name, &[&label]))
}

#[test]
fn every_rule_kind_matches_the_reference_and_late_readings_are_counted_not_applied() {
    let f = Fixture::new("alarms", 2);
    let alarms_topic = format!("{}-alarms", f.topic);
    create_topic(&alarms_topic, 1);
    let text = rules_toml(3000);
    let rules = rules(&text);
    let seed: u64 = rand::random();
    eprintln!("alarm data seed {seed}");
    let readings = plan(seed, 12, 300);
    let events = expected(&rules, &readings, 2);
    let kinds: BTreeSet<&str> = events.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(kinds.len(), 8, "the data raises every rule: {kinds:?}");
    for rule in ["fence", "away"] {
        assert!(
            events
                .iter()
                .any(|e| e.rule == rule && e.kind == EventKind::Cleared),
            "{rule}: a device enters and leaves"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e.rule == "gone" && e.kind == EventKind::Cleared)
            && events
                .iter()
                .any(|e| e.rule == "hot" && e.kind == EventKind::Cleared),
        "episodes that clear"
    );
    let want = episodes(&events);
    assert!(
        want.iter().any(|e| e.7.is_none()),
        "episodes still active at the end"
    );

    publish_devices(&f, 12);
    send(&f.topic, &readings, 0.0);
    let config = write_config(&f, &text);
    let port = free_port();
    let mut child = Reaped::new(
        alarm_job(&f, &config, 2, port, &alarms_topic)
            .spawn()
            .unwrap(),
    );
    wait_for_table(&f, &want, &mut child, Duration::from_secs(120));

    // Readings later than the bound: counted, shown, and the table does not move.
    let late: Vec<Planned> = (0..5)
        .map(|i| Planned {
            sample: Sample {
                pboxid: "al-03".into(),
                at_ms: START_MS + 10_000 + i * 1000,
                metric: Decimal::from(99),
                model: None,
                site: None,
                threshold: None,
                lat: Decimal::ZERO,
                lon: Decimal::ZERO,
            },
            partition: (i % 2) as i32,
        })
        .collect();
    send(&f.topic, &late, 0.0);
    wait_for("5 late readings counted", Duration::from_secs(60), || {
        (label_sum(port, "iotflow_alarm_late_readings_total", &f) == 5.0).then_some(())
    });
    let (_, body) = http_get(port, "/api/alarms", Duration::from_secs(5)).unwrap();
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["late_total"], 5, "{body}");
    let active_now = want.iter().filter(|e| e.7.is_none()).count();
    assert_eq!(
        api["active"].as_array().unwrap().len(),
        active_now,
        "{body}"
    );
    assert_eq!(
        label_sum(port, "iotflow_alarms_active", &f) as usize,
        active_now,
        "the active-alarm gauge"
    );
    let metrics = scrape(port).unwrap();
    assert!(!metrics.contains("al-0"), "a device id in a metric label");

    sigterm(&child);
    let (ok, stderr) = finish(child.take(), Duration::from_secs(60));
    assert!(ok, "job failed:\n{stderr}");
    assert_eq!(table(&f), want, "after the stop");
    // Every event once on the topic (one run, clean stop), with the ids of the reference.
    let ids: BTreeSet<String> = events.iter().map(iotflow_alarms_flow::event_id).collect();
    let on_topic = topic_events(&alarms_topic, &f.group, ids.len());
    assert_eq!(on_topic.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(on_topic.values().all(|n| *n == 1), "{on_topic:?}");
}

fn publish_devices(f: &Fixture, n: usize) {
    iotflow_gen::publish_devices(&brokers(), &f.broadcast, &device_records(n)).unwrap();
}

#[test]
fn alarms_are_exact_through_sigkills() {
    let f = Fixture::new("alarms-crash", 2);
    let alarms_topic = format!("{}-alarms", f.topic);
    create_topic(&alarms_topic, 1);
    let text = rules_toml(10_000);
    let rules = rules(&text);
    let seed: u64 = rand::random();
    eprintln!("alarm data seed {seed}");
    let readings = plan(seed, 40, 400);
    let events = expected(&rules, &readings, 2);
    let want = episodes(&events);
    publish_devices(&f, 40);

    // Readings keep arriving while the job is killed and restarted.
    let (topic, r) = (f.topic.clone(), readings.clone());
    let total = readings.len();
    let producer = std::thread::spawn(move || send(&topic, &r, total as f64 / 15.0));
    let config = write_config(&f, &text);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed);
    let mut at_kill = Vec::new();
    let mut late = 0.0;
    for run in 0..3 {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-run{run}.log", f.group));
        let mut child = Reaped::new(
            alarm_job(&f, &config, 2, port, &alarms_topic)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        eprintln!("run {run} logs to {}", log.display());
        wait_for(
            "an alarm checkpoint stored",
            Duration::from_secs(60),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("the job exited ({status})");
                }
                (label_sum(port, "iotflow_sink_rows_written_total", &f) > 0.0).then_some(())
            },
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(200..2500)));
        late += label_sum(port, "iotflow_alarm_late_readings_total", &f);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        at_kill.push(table(&f).len());
    }
    producer.join().unwrap();
    eprintln!("episodes at each kill: {at_kill:?} of {}", want.len());
    assert_eq!(late, 0.0, "late readings in the runs that were killed");
    assert!(
        at_kill.iter().any(|n| *n < want.len()),
        "a kill happened before the end: {at_kill:?}"
    );
    let port = free_port();
    let mut child = Reaped::new(
        alarm_job(&f, &config, 2, port, &alarms_topic)
            .spawn()
            .unwrap(),
    );
    wait_for_table(&f, &want, &mut child, Duration::from_secs(180));
    assert_eq!(
        label_sum(port, "iotflow_alarm_late_readings_total", &f),
        0.0,
        "no reading inside the bound was taken as late across the restarts"
    );
    sigterm(&child);
    let (ok, stderr) = finish(child.take(), Duration::from_secs(60));
    assert!(ok, "job failed:\n{stderr}");
    assert_eq!(table(&f), want, "after the stop");
    // At least once on the topic, never an event the reference does not have.
    let ids: BTreeSet<String> = events.iter().map(iotflow_alarms_flow::event_id).collect();
    let on_topic = topic_events(&alarms_topic, &f.group, ids.len());
    assert_eq!(on_topic.keys().cloned().collect::<BTreeSet<_>>(), ids);
    let repeats: usize = on_topic.values().map(|n| n - 1).sum();
    eprintln!(
        "events on the topic: {} distinct, {repeats} repeated",
        ids.len()
    );
}

/// A rule of the table, as the publisher publishes it.
fn table_rule(
    id: &str,
    when: &str,
    value: Option<&str>,
    after_secs: Option<u64>,
) -> iotflow_config::AlarmRuleConfig {
    iotflow_config::AlarmRuleConfig {
        id: id.into(),
        when: when.into(),
        value: value.map(|v| iotflow_config::Exact(v.into())),
        after_secs,
        ..Default::default()
    }
}

fn rule_count_received(port: u16, f: &Fixture) -> f64 {
    let label = format!("job_name=\"{}\"", f.name);
    scrape(port).map_or(0.0, |t| {
        metric_sum(
            &t,
            "iotflow_kafka_messages_received_total",
            &[&label, "operator=\"rules-source\""],
        )
    })
}

/// Waits until the publisher has published every rule change (the outbox is empty) and the
/// job has read `sets` rule sets.
fn wait_for_rules(f: &Fixture, port: u16, sets: f64, child: &mut Child) {
    wait_for(
        "the rule sets published and read",
        Duration::from_secs(60),
        || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the job exited ({status})");
            }
            let left: Vec<u64> = f.query("SELECT COUNT(*) FROM alarm_rules_changes");
            (left[0] == 0 && rule_count_received(port, f) >= sets).then_some(())
        },
    );
}

#[test]
fn rules_from_mysql_change_live_at_their_event_time_and_through_a_sigkill() {
    let f = Fixture::new("alarm-rules", 2);
    let alarms_topic = format!("{}-alarms", f.topic);
    let rules_topic = format!("{}-rules", f.topic);
    create_topic(&alarms_topic, 1);
    create_topic(&rules_topic, 1);
    let toml = rules_toml(10_000);
    let config = iotflow_config::Config::from_toml_with_env(&toml, "", Vec::new()).unwrap();
    let seed: u64 = rand::random();
    eprintln!("alarm data seed {seed}");
    let readings = plan(seed, 24, 400);
    let (e1, e2) = (START_MS + 150_000, START_MS + 300_000);

    // The table: first one rule; at e1 a rule changed, a configured rule replaced, an offline
    // rule added; at e2 the first one retired (disabled from e2) and the offline one changed.
    seed_device_info(&f, &device_records(24));
    f.query::<u64>(&format!(
        "INSERT INTO alarm_rules (id, `when`, value, effective_from) VALUES ('tbl-hot', 'above', 60, '{}')",
        text(START_MS)
    ));
    let set = |rules: Vec<iotflow_config::AlarmRuleConfig>| {
        config
            .alarms
            .rules_with(&iotflow_config::RuleSet {
                rules,
                ..Default::default()
            })
            .unwrap()
    };
    let mut hot = table_rule("hot", "below", Some("10"), None);
    hot.severity = Some("critical".into());
    // A geofence from the table (the `area` column, GeoJSON coordinates), from e1 on.
    let mut fence = table_rule("tbl-fence", "out_of_area", None, None);
    fence.area = Some(serde_json::from_str(&format!("[{FENCE}]")).unwrap());
    let v0 = set(vec![table_rule("tbl-hot", "above", Some("60"), None)]);
    let v1 = set(vec![
        hot.clone(),
        fence.clone(),
        table_rule("tbl-gone", "offline", None, Some(5)),
        table_rule("tbl-hot", "above", Some("70"), None),
    ]);
    let v2 = set(vec![
        hot,
        fence,
        table_rule("tbl-gone", "offline", None, Some(3)),
    ]);
    let changes = vec![(e1, v1), (e2, v2)];
    let mut events = Vec::new();
    for w in 0..2 {
        let mine: Vec<Sample> = readings
            .iter()
            .filter(|p| iotflow_alarms_flow::worker_of(&p.sample.pboxid, 2) == w)
            .map(|p| p.sample.clone())
            .collect();
        let watermark = mine.iter().map(|s| s.at_ms).max().unwrap() - LATENESS_MS;
        let applied: Vec<Sample> = mine.into_iter().filter(|s| s.at_ms <= watermark).collect();
        events.extend(iotflow_alarms::reference::reference_with_changes(
            &v0, &changes, &applied, watermark,
        ));
    }
    let without = expected(&v0, &readings, 2);
    assert_ne!(
        episodes(&without),
        episodes(&events),
        "the changes change the history"
    );
    for (rule, why) in [
        ("tbl-gone", "the offline rule added at e1 raises"),
        ("hot", "the replaced configured rule raises"),
        ("tbl-fence", "the area rule from the table raises"),
    ] {
        assert!(events.iter().any(|e| e.rule == rule), "{why}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.rule == "tbl-hot" && e.kind == EventKind::Cleared && e.at_ms == e2),
        "the retired rule clears its open episodes at e2"
    );
    let want = episodes(&events);

    let config_path = write_config(&f, &toml);
    let publisher_port = free_port();
    let mut publisher = Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_iotflow"))
            .arg("publish-devices")
            .arg("--config")
            .arg(&config_path)
            .env("IOTFLOW__KAFKA__BROKERS", brokers())
            .env("IOTFLOW__KAFKA__BROADCAST_TOPIC", &f.broadcast)
            .env("IOTFLOW__MYSQL__URL", &f.db_url)
            .env("IOTFLOW__PUBLISHER__POLL_INTERVAL_MS", "100")
            .env("IOTFLOW__ALARMS__RULES_TOPIC", &rules_topic)
            .env(
                "IOTFLOW__PUBLISHER__METRICS_LISTEN",
                format!("127.0.0.1:{publisher_port}"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Arrival order is event time plus < 3 s: the readings before `at - 10 s` keep the
    // watermark short of `at`, so each change is published before event time reaches it.
    let split = |at: i64| {
        readings
            .iter()
            .position(|p| p.sample.at_ms >= at - 10_000)
            .unwrap()
    };
    let (k1, k2) = (split(e1), split(e2));
    let start_job = |run: usize| {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-run{run}.log", f.group));
        eprintln!("run {run} logs to {}", log.display());
        let child = alarm_job(&f, &config_path, 2, port, &alarms_topic)
            .env("IOTFLOW__ALARMS__RULES_TOPIC", &rules_topic)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (Reaped::new(child), port)
    };
    let (mut child, port) = start_job(0);
    // The snapshot at the publisher's start and the insert's own set.
    wait_for_rules(&f, port, 2.0, &mut child);
    send(&f.topic, &readings[..k1], 0.0);
    f.query::<u64>(&format!(
        "INSERT INTO alarm_rules (id, `when`, value, after_secs, severity, effective_from, area) VALUES \
         ('tbl-hot', 'above', 70, NULL, 'warning', '{t}', NULL), ('hot', 'below', 10, NULL, 'critical', '{t}', NULL), \
         ('tbl-gone', 'offline', NULL, 5, 'warning', '{t}', NULL), \
         ('tbl-fence', 'out_of_area', NULL, NULL, 'warning', '{t}', '[{FENCE}]') \
         ON DUPLICATE KEY UPDATE value = VALUES(value), effective_from = VALUES(effective_from)",
        t = text(e1)
    ));
    wait_for_rules(&f, port, 3.0, &mut child);
    send(&f.topic, &readings[k1..k2], 0.0);
    // A checkpoint past e1 (an episode of the rule added there is stored with the state).
    wait_for(
        "an episode of tbl-gone stored",
        Duration::from_secs(60),
        || table(&f).iter().any(|e| e.0 == "tbl-gone").then_some(()),
    );
    // A SIGKILL after the first change: the restarted job continues with the stored set.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, port) = start_job(1);
    wait_for_rules(&f, port, 3.0, &mut child);
    f.query::<u64>(&format!(
        "UPDATE alarm_rules SET enabled = (id <> 'tbl-hot'), after_secs = IF(id = 'tbl-gone', 3, after_secs), \
         effective_from = '{}'",
        text(e2)
    ));
    wait_for_rules(&f, port, 4.0, &mut child);
    send(&f.topic, &readings[k2..], 0.0);
    wait_for_table(&f, &want, &mut child, Duration::from_secs(120));
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "the job's clean stop: {status}");
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    assert_eq!(table(&f), want, "after the stop");
}
