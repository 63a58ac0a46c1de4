//! Chaos (issue 9, "Faults and bad input never stop, rewind or duplicate the stream"): one run
//! of 200 000 readings with malformed and poison records mixed in, produced at a steady rate
//! while the job is SIGKILLed 20 times at random moments and restarted each time, MariaDB is
//! stopped for 30 s and ClickHouse crashed for 30 s under the running job. Afterwards every
//! sink and the dead-letter topic are checked row for row: nothing lost, nothing duplicated,
//! and the job that outlived the last fault caught up and stops cleanly.
//!
//! Its own test binary: cargo runs test binaries one at a time, so the outages touch no other
//! test of this crate. (They do touch anything else using the same local servers meanwhile.)
//!
//! `IOTFLOW_CHAOS_SEED=<n>` replays a kill schedule; the seed is printed either way.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generated, Generator};
use iotflow_model::NaiveDateTime;
use rand::{Rng, SeedableRng};

const READINGS: u64 = 200_000;
/// Every this many generated records, one poison record follows.
const POISON_EVERY: u64 = 1_000;
/// 200 000 readings at 1 500/s take ~135 s: about as long as the fault schedule below (20
/// kills of 1-4 s plus two 30 s outages plus restarts), so the faults hit a live stream, not
/// only a backlog.
const RATE: f64 = 1_500.0;
const KILLS: usize = 20;
/// The MariaDB outage comes after this many kills, the ClickHouse outage after the second.
const OUTAGES_AFTER: [usize; 2] = [4, 10];
const OUTAGE: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(15 * 60);
const PARTITIONS: i32 = 4;
const WORKERS: usize = 2;
const DEVICES: usize = 200;

/// The payloads of the two poison records (the parser's `out_of_range` and `not_object`).
fn poison(n: u64) -> Generated {
    let (payload, code) = if n.is_multiple_of(2) {
        (
            format!(
                r#"{{"event_time":"2025-04-10 08:00:00","metric":9999999999999999.999999995,"pboxid":"poison-{n}","latitude":31.23,"longitude":121.47}}"#
            ),
            "out_of_range",
        )
    } else {
        (
            r#"["2025-04-10 08:00:00", 1, "x", 1, 1]"#.to_string(),
            "not_object",
        )
    };
    Generated {
        key: format!("poison-{n}"),
        payload: payload.into_bytes(),
        expected: None,
        defect: Some(code),
    }
}

/// The generator's records with a poison record after every `POISON_EVERY`th.
fn records(options: &GenOptions) -> impl Iterator<Item = Generated> {
    Generator::new(options.clone())
        .zip(1u64..)
        .flat_map(|(g, i)| {
            let p = i
                .is_multiple_of(POISON_EVERY)
                .then(|| poison(i / POISON_EVERY - 1));
            std::iter::once(g).chain(p)
        })
}

/// What the stores and the dead-letter topic must hold, from the records alone.
#[derive(Default)]
struct Expected {
    total: u64,
    valid: u64,
    unknown: u64,
    per_device: PerDevice,
    /// Payload of every record that must become a dead letter -> how many such records, and
    /// the reason code when the test knows it (the poison records).
    bad: BTreeMap<Vec<u8>, (u64, Option<&'static str>)>,
    bad_total: u64,
    poison: u64,
}

fn expected(options: &GenOptions) -> Expected {
    let mut e = Expected::default();
    for g in records(options) {
        e.total += 1;
        match g.expected {
            Some(x) => {
                e.valid += 1;
                e.unknown += u64::from(!x.known);
                let d = e.per_device.entry(x.pboxid).or_default();
                d.0 += 1;
                d.1 += x.metric;
                d.2 += x.latitude;
                d.3 += x.longitude;
            }
            None => {
                let poison = g.key.starts_with("poison-");
                e.poison += u64::from(poison);
                e.bad_total += 1;
                let b = e.bad.entry(g.payload).or_default();
                b.0 += 1;
                if poison {
                    b.1 = g.defect;
                }
            }
        }
    }
    for v in e.per_device.values_mut() {
        *v = (v.0, v.1.normalize(), v.2.normalize(), v.3.normalize());
    }
    e
}

/// One run of the job; its stderr goes to the test's log file. Killed if the test fails.
struct Job {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Job {
    fn spawn(f: &Fixture, env: &[(String, String)], log: &PathBuf, run: usize) -> Job {
        let mut file = File::options().create(true).append(true).open(log).unwrap();
        writeln!(file, "\n===== run {run} =====").unwrap();
        let port = free_port();
        let child = f
            .job(WORKERS, port)
            .envs(env.iter().cloned())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Job {
            child,
            port,
            log: log.clone(),
        }
    }

    /// The end of the log, for failure messages.
    fn log_tail(&self) -> String {
        let mut file = File::open(&self.log).unwrap();
        let len = file.metadata().unwrap().len();
        file.seek(SeekFrom::Start(len.saturating_sub(6000)))
            .unwrap();
        let mut s = String::new();
        let _ = file.read_to_string(&mut s);
        s
    }

    /// Fails the test if the job exited.
    fn assert_alive(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the job exited ({status}) {when}; end of its log {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }

    /// /metrics of the running job (fails the test if it exited or does not answer in 10 s).
    fn scrape(&mut self, when: &str) -> String {
        let start = Instant::now();
        loop {
            self.assert_alive(when);
            if let Some(t) = scrape(self.port) {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the job's metrics endpoint did not answer for 10 s {when}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls every 500 ms until `f` holds, failing after `timeout` or at the test's deadline.
fn poll(what: &str, timeout: Duration, deadline: Instant, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout && Instant::now() < deadline,
            "timed out after {:?} waiting for {what}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the fault steps look at besides the job: the broker's committed offsets, whether the
/// producer is still sending, the test's deadline, the job's metric label.
struct Watch {
    committed: CommittedOffsets,
    produced: Arc<AtomicBool>,
    deadline: Instant,
    label: String,
}

impl Watch {
    fn producing(&self) -> bool {
        !self.produced.load(Ordering::SeqCst)
    }
}

/// A 30 s outage of one sink under the running job: the sink must see it (transient errors),
/// commits must stop, the job must stay up, and once the server is back commits move again.
/// Returns how long the server was down (until `start.sh` had it ready again).
fn outage(job: &mut Job, w: &Watch, name: &str, sink: &str, stop: impl FnOnce()) -> Duration {
    let (committed, deadline, label) = (&w.committed, w.deadline, w.label.as_str());
    let sink_label = format!("sink=\"{sink}\"");
    let written = |t: &str| metric_sum(t, "iotflow_sink_rows_written_total", &[label, &sink_label]);
    let errors = |t: &str, kind: &str| {
        metric_sum(
            t,
            "iotflow_sink_errors_total",
            &[label, &sink_label, &format!("kind=\"{kind}\"")],
        )
    };
    poll(
        &format!("the {sink} sink writing before the {name} outage"),
        Duration::from_secs(60),
        deadline,
        || written(&job.scrape("before the outage")) > 0.0,
    );
    assert!(
        w.producing(),
        "the {name} outage begins while readings arrive"
    );
    eprintln!("{name} down");
    stop();
    let down = Instant::now();
    poll(
        &format!("transient {sink} errors during the {name} outage"),
        OUTAGE,
        deadline,
        || errors(&job.scrape("during the outage"), "transient") > 0.0,
    );
    // Commits in flight when the server went away may still land; after that, none may.
    while down.elapsed() < OUTAGE / 3 {
        job.assert_alive("during the outage");
        std::thread::sleep(Duration::from_millis(500));
    }
    let settled = committed.total().expect("committed offsets");
    while down.elapsed() < OUTAGE {
        job.assert_alive("during the outage");
        std::thread::sleep(Duration::from_millis(500));
    }
    let t = job.scrape(&format!("at the end of the {name} outage"));
    assert_eq!(
        committed.total().expect("committed offsets"),
        settled,
        "offsets were committed while {name} was down"
    );
    assert_eq!(
        errors(&t, "definite"),
        0.0,
        "definite {sink} errors during the outage"
    );
    run_script("start.sh", &[]);
    let outage = down.elapsed();
    eprintln!("{name} back after {outage:?}");
    job.assert_alive(&format!("after the {name} outage"));
    poll(
        &format!("commits to move again after the {name} outage"),
        Duration::from_secs(120),
        deadline,
        || {
            job.assert_alive(&format!("after the {name} outage"));
            committed.total().is_some_and(|n| n > settled)
        },
    );
    outage
}

#[test]
fn twenty_sigkills_and_two_outages_lose_and_duplicate_nothing() {
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let f = Fixture::new("chaos", PARTITIONS);
    let env = f.clickhouse_env();
    let log = std::env::temp_dir().join(format!("{}.log", f.group));
    eprintln!("job log: {}", log.display());
    let options = GenOptions {
        devices: DEVICES,
        count: READINGS,
        malformed_share: 0.01,
        unknown_share: 0.02,
        seed: 29,
        // 1000 rounds of 1 s from 23:55: the readings span midnight, two day partitions.
        start: NaiveDateTime::parse_from_str("2025-04-10 23:55:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        ..Default::default()
    };
    let e = expected(&options);
    publish_devices(&brokers(), &f.broadcast, &devices(DEVICES, 29)).unwrap();

    let seed: u64 = std::env::var("IOTFLOW_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("IOTFLOW_CHAOS_SEED is a number"))
        .unwrap_or_else(rand::random);
    eprintln!("chaos seed {seed} (IOTFLOW_CHAOS_SEED={seed} replays the kill schedule)");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);

    let produced = Arc::new(AtomicBool::new(false));
    let (b, topic, o, done) = (
        brokers(),
        f.topic.clone(),
        options.clone(),
        produced.clone(),
    );
    let producer = std::thread::spawn(move || {
        let sent = produce(&b, &topic, records(&o), RATE, |_| {});
        done.store(true, Ordering::SeqCst);
        sent.unwrap()
    });
    let w = Watch {
        committed: CommittedOffsets::new(&f, PARTITIONS),
        produced,
        deadline,
        label: format!("job_name=\"{}\"", f.name),
    };
    // Whatever happens, the servers run again when this test ends.
    let _start_again = StartAgain;

    let mut runs = 0;
    let mut job = Job::spawn(&f, &env, &log, runs);
    let mut rows_at_kill = Vec::new();
    let mut kills_while_producing = 0;
    let mut outages = Vec::new();
    for kill in 0..KILLS {
        if kill == OUTAGES_AFTER[0] {
            outages.push(outage(&mut job, &w, "MariaDB", "mysql", || {
                run_script("stop.sh", &["mariadb"])
            }));
        }
        if kill == OUTAGES_AFTER[1] {
            outages.push(outage(
                &mut job,
                &w,
                "ClickHouse",
                "clickhouse",
                kill_clickhouse,
            ));
        }
        // A random moment of this run: the metrics endpoint answers first thing, so the kill
        // can fall into the pre-flight checks, the dimension load or the stream.
        job.scrape("after a restart");
        std::thread::sleep(Duration::from_millis(rng.random_range(1_000..=4_000)));
        job.assert_alive("before a kill");
        kills_while_producing += usize::from(w.producing());
        job.sigkill();
        rows_at_kill.push(f.row_count());
        assert!(Instant::now() < deadline, "past the test's deadline");
        runs += 1;
        job = Job::spawn(&f, &env, &log, runs);
    }
    eprintln!("MySQL rows at each kill: {rows_at_kill:?}");

    // The last run must catch up on its own: everything committed, so every sink and the
    // dead-letter topic acknowledged every record.
    let sent = producer.join().unwrap();
    assert_eq!(sent, e.total, "records produced");
    poll(
        "the last run to commit every offset",
        Duration::from_secs(300),
        deadline,
        || {
            job.assert_alive("while catching up");
            w.committed.total() == Some(e.total as i64)
        },
    );
    job.scrape("after catching up");
    sigterm(&job.child);
    let stop = Instant::now();
    let status = loop {
        if let Some(s) = job.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(60),
            "the job did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let tail = job.log_tail();
    assert!(status.success(), "the last run failed ({status}):\n{tail}");
    let whole_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !whole_log.contains("panicked"),
        "a run panicked; see {}",
        log.display()
    );
    let ends = w.committed.get().unwrap();

    // Everything measured first, then one summary line, then the assertions.
    let my_per_device = mysql_per_device(&f);
    let my_rows: u64 = my_per_device.values().map(|v| v.0).sum();
    let my_known: u64 = f.query::<u64>("SELECT COUNT(company) FROM iot_data")[0];
    let my_coords: Vec<(i32, i64)> = f.query("SELECT src_partition, src_offset FROM iot_data");
    let ch_per_device = clickhouse_per_device(&f);
    let ch_rows: u64 = ch_per_device.values().map(|v| v.0).sum();
    let ch_raw: u64 = f.clickhouse_tsv("SELECT count() FROM iot_data")[0]
        .parse()
        .unwrap();
    let ch_known: u64 = f.clickhouse_tsv("SELECT count(company) FROM iot_data FINAL")[0]
        .parse()
        .unwrap();
    let ch_coords: BTreeSet<(i32, i64)> = f
        .clickhouse_tsv("SELECT src_partition, src_offset FROM iot_data FINAL")
        .iter()
        .map(|l| {
            let (p, o) = l.split_once('\t').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    let letters = f.dead_letters(e.bad_total as usize);
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in letters.iter().enumerate() {
        by_key.entry(l.0.as_str()).or_default().push(i);
    }
    let dlq_duplicates = letters.len() - by_key.len();
    let elapsed = started.elapsed();
    eprintln!(
        "CHAOS SUMMARY: seed={seed} kills={} (while producing {kills_while_producing}) \
         outages={:?} records={} valid={} bad={} (poison {}) mysql_rows={my_rows} \
         clickhouse_final={ch_rows} clickhouse_raw={ch_raw} dead_letters={} \
         distinct_keys={} dlq_duplicates={dlq_duplicates} elapsed={:.0}s",
        rows_at_kill.len(),
        outages
            .iter()
            .map(|d| format!("{:.0}s", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        e.total,
        e.valid,
        e.bad_total,
        e.poison,
        letters.len(),
        by_key.len(),
        elapsed.as_secs_f64(),
    );

    assert_eq!(rows_at_kill.len(), KILLS);
    assert_eq!(outages.len(), 2);
    // MySQL: the primary key makes a second copy of a row impossible; count and exact sums
    // per device show none is missing or altered.
    assert_eq!(my_rows, e.valid, "MySQL rows");
    assert_eq!(
        my_per_device, e.per_device,
        "MySQL per-device counts and sums"
    );
    assert_eq!(
        my_known,
        e.valid - e.unknown,
        "MySQL rows with business columns"
    );
    // ClickHouse, FINAL: re-delivered copies collapse there.
    assert_eq!(ch_rows, e.valid, "ClickHouse rows (FINAL)");
    assert_eq!(ch_per_device, e.per_device, "ClickHouse per device (FINAL)");
    assert_eq!(
        ch_known,
        e.valid - e.unknown,
        "ClickHouse rows with business columns"
    );
    // Dead letters: one per bad record, with its original bytes and, for poison, its reason.
    let mut got_bad: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut dlq_coords = BTreeSet::new();
    for (key, first) in &by_key {
        let (_, payload, headers) = &letters[first[0]];
        let (topic, po) = key.split_once('/').unwrap();
        let (p, o) = po.split_once('/').unwrap();
        assert_eq!(topic, f.topic, "key {key} names the source topic");
        assert_eq!(headers["iotflow.source_topic"], f.topic);
        dlq_coords.insert((p.parse::<i32>().unwrap(), o.parse::<i64>().unwrap()));
        match e.bad.get(payload) {
            Some((_, Some(code))) => assert_eq!(
                &headers["iotflow.reason_code"],
                code,
                "reason of {}",
                String::from_utf8_lossy(payload)
            ),
            Some((_, None)) => assert!(!headers["iotflow.reason_code"].is_empty()),
            None => panic!(
                "dead letter {key} is no bad record: {}",
                String::from_utf8_lossy(payload)
            ),
        }
        *got_bad.entry(payload.clone()).or_default() += 1;
    }
    assert_eq!(by_key.len() as u64, e.bad_total, "distinct dead letters");
    let want_bad: BTreeMap<Vec<u8>, u64> = e.bad.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    assert!(got_bad == want_bad, "dead letters are not the bad records");
    // Row for row: every offset of every partition is exactly one stored row (in both stores)
    // or exactly one dead letter.
    let my_set: BTreeSet<(i32, i64)> = my_coords.iter().copied().collect();
    assert_eq!(
        my_set.len(),
        my_coords.len(),
        "MySQL rows sharing coordinates"
    );
    assert!(
        my_set == ch_coords,
        "MySQL and ClickHouse hold different records"
    );
    assert!(
        my_set.is_disjoint(&dlq_coords),
        "a record both stored and dead-lettered"
    );
    for (p, end) in &ends {
        let seen = my_set
            .iter()
            .chain(&dlq_coords)
            .filter(|c| c.0 == *p)
            .count() as i64;
        let all_below = my_set
            .iter()
            .chain(&dlq_coords)
            .filter(|c| c.0 == *p)
            .all(|c| c.1 < *end);
        assert!(
            seen == *end && all_below,
            "partition {p}: {seen} records accounted for, offsets must be 0..{end}"
        );
    }
    // Last, because it is the one the dead-letter sink does not promise yet (see
    // docs/guarantees.md): no dead letter twice.
    let twice: Vec<(&str, usize)> = by_key
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| (*k, v.len()))
        .take(5)
        .collect();
    assert_eq!(
        dlq_duplicates, 0,
        "dead letters written more than once (first few: {twice:?})"
    );
}
