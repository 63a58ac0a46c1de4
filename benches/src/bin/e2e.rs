//! `e2e`: the streaming job's end-to-end throughput and latency, measured in one run side by
//! side with the limits of what it is built from, on the local stack (tansu + MariaDB).
//!
//! 1. broker produce rate: the readings produced to a fresh 8-partition topic (once);
//! 2. broker consume rate: a plain `BaseConsumer` reading that topic back, no processing;
//! 3. MariaDB insert rate: the same rows in 1 000-row statements from the sink's own encoder,
//!    on one connection and on two in parallel;
//! 4. parse rate in-process: serde alone (the `f64` baseline) and the real parser;
//! 5. the job (`iotflow run`): (a) draining the backlog of (1) once per `--batch-rows`, (c) the
//!    same without the MySQL sink, then (b) live: a producer at a fixed rate into a fresh topic
//!    while the job runs, for the latency that matters (in backlog mode the latency is mostly
//!    the age of the backlog).
//!
//! (2), (3), (5a) and (5c) are repeated `--rounds` times, interleaved, and reported as medians
//! with their ranges; the ratios of the job to (2), (3), (4) and (5c) say which part bounds it.
//! Everything the harness creates (topics, `iotflow_bench_*` databases) is its own and is
//! removed at the end unless `--keep`. Run it through `bash benches/e2e.sh`, which builds and
//! starts what it needs; see `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use iotflow_benches::job::{JobSpec, BATCH_WRITE, E2E_LATENCY, ROWS_WRITTEN};
use iotflow_benches::report::{BacklogRun, LiveRun, Report, RunInfo, INSERT_STATEMENT_ROWS};
use iotflow_benches::{gen_options, parse_baseline, prom, readings, rows, start_time};
use iotflow_gen::{Generated, Generator};
use iotflow_model::{parse_reading, ParseLimits, Zone};
use iotflow_sink_mysql::encoder::encode_insert;
use iotflow_sink_mysql::partitions::PartitionManager;
use iotflow_sink_mysql::IOT_DATA_DDL;
use mysql_async::prelude::Queryable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Command line. `bash benches/e2e.sh [READINGS] [WORKERS]` passes the two positionals and the
/// local stack's addresses.
#[derive(Parser, Debug)]
#[command(
    name = "e2e",
    about = "End-to-end benchmark of the iotflow job on the local stack"
)]
struct Args {
    /// Readings produced for the throughput phases.
    #[arg(default_value_t = 200_000)]
    readings: u64,
    /// Worker threads of the job (`iotflow run -w`).
    #[arg(default_value_t = 2)]
    workers: usize,
    /// Kafka bootstrap servers.
    #[arg(long, env = "IOTFLOW_TEST_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// MySQL URL of a database the user can log in to; scratch databases are created beside it.
    #[arg(
        long,
        env = "IOTFLOW_TEST_MYSQL_URL",
        default_value = "mysql://iotflow:iotflow@127.0.0.1:3306/iotflow"
    )]
    mysql_url: String,
    /// Prefix of the scratch databases (the iotflow user may create `iotflow_*`).
    #[arg(long, default_value = "iotflow_bench")]
    database_prefix: String,
    /// The `iotflow` binary to benchmark.
    #[arg(long, default_value = "target/release/iotflow")]
    iotflow: PathBuf,
    /// `mysql.batch.max_rows` values to run the backlog phase with.
    #[arg(long, value_delimiter = ',', default_values_t = vec![500, 2000, 5000])]
    batch_rows: Vec<usize>,
    /// Rounds of the repeated measurements (broker consume, MariaDB inserts, the job per batch
    /// size and without sink), interleaved; the report gives medians and ranges.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Readings per second of the live latency phase.
    #[arg(long, default_value_t = 20_000.0)]
    live_rate: f64,
    /// `mysql.batch.max_rows` values to run the live phase with (one fresh topic each).
    #[arg(long, value_delimiter = ',', default_values_t = vec![2000, 5000])]
    live_batch_rows: Vec<usize>,
    /// Seconds the live phase produces for.
    #[arg(long, default_value_t = 10)]
    live_secs: u64,
    /// Devices (published to the broadcast topic; the readings come from them).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Partitions of the readings topics.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the job's logs go.
    #[arg(long, default_value = "target/e2e")]
    log_dir: PathBuf,
    /// Keep the topics and scratch databases instead of deleting them at the end.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    ensure!(
        args.database_prefix.starts_with("iotflow_")
            && args
                .database_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "--database-prefix must start with `iotflow_` and be letters, digits and underscores"
    );
    ensure!(args.readings > 0 && args.workers > 0, "nothing to measure");
    ensure!(
        args.iotflow.is_file(),
        "{} not found; build it with `cargo build --release -p iotflow`",
        args.iotflow.display()
    );
    std::fs::create_dir_all(&args.log_dir)
        .with_context(|| format!("creating {}", args.log_dir.display()))?;
    let mut bench = Bench::new(args)?;
    let report = bench.measure();
    bench.clean_up();
    println!("{}", report?.render(&bench.info()));
    Ok(())
}

/// The run's names, clients and scratch resources.
struct Bench {
    args: Args,
    tag: String,
    rt: tokio::runtime::Runtime,
    admin: AdminClient<DefaultClientContext>,
    topics: Vec<String>,
    databases: Vec<String>,
}

/// The job's topics for one phase.
struct Topics {
    readings: String,
    devices: String,
    dlq: String,
}

impl Bench {
    fn new(args: Args) -> Result<Bench> {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            chrono::Utc::now().format("%H%M%S")
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting a tokio runtime")?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", &args.brokers)
            .create()
            .with_context(|| format!("creating a Kafka admin client for {}", args.brokers))?;
        Ok(Bench {
            args,
            tag,
            rt,
            admin,
            topics: Vec::new(),
            databases: Vec::new(),
        })
    }

    fn measure(&mut self) -> Result<Report> {
        let mut report = Report::default();
        let n = self.args.readings;
        eprintln!(
            "e2e: generating {n} readings of {} devices",
            self.args.devices
        );
        let generated: Vec<Generated> =
            Generator::new(gen_options(n, self.args.devices, self.args.seed)).collect();
        let payloads: Vec<Vec<u8>> = generated.iter().map(|g| g.payload.clone()).collect();
        report.payload_bytes = payloads.iter().map(Vec::len).sum();

        // 1. Produce, once: the topic is the backlog of every later phase.
        let topic = self.topic("readings", self.args.partitions)?;
        eprintln!("e2e: [1] producing {n} readings to {topic}");
        let start = Instant::now();
        let sent = iotflow_gen::produce(
            &self.args.brokers,
            &topic,
            generated.iter().cloned(),
            0.0,
            |_| {},
        )?;
        report.produce = Some(start.elapsed());
        ensure!(sent == n, "produced {sent} of {n} readings");
        drop(generated);

        // The same rows the job will write, encoded once as the sink would.
        let devices = iotflow_gen::devices(self.args.devices, self.args.seed);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let rows = rows(
            &readings(&payloads, self.args.partitions, Some(now_ms)),
            &devices,
        );
        let statements: Arc<Vec<String>> = Arc::new(
            rows.chunks(INSERT_STATEMENT_ROWS)
                .map(|chunk| {
                    let mut sql = String::new();
                    encode_insert("iot_data", chunk, &mut sql);
                    sql
                })
                .collect(),
        );
        drop(rows);
        report.statement_bytes = statements.iter().map(String::len).sum();

        // 4. Parsing alone (in-process, steady enough to run once).
        eprintln!("e2e: [4] parsing in-process, 1 thread");
        report.serde = Some(median_time(5, || {
            for p in &payloads {
                std::hint::black_box(parse_baseline(p).expect("valid JSON"));
            }
        }));
        let limits = ParseLimits::default();
        report.parser = Some(median_time(5, || {
            for p in &payloads {
                std::hint::black_box(parse_reading(p, &Zone::Utc, &limits).expect("valid"));
            }
        }));
        drop(payloads);

        let job_topics = Topics {
            readings: topic.clone(),
            devices: self.topic("devices", 1)?,
            dlq: self.topic("dlq", 1)?,
        };
        iotflow_gen::publish_devices(&self.args.brokers, &job_topics.devices, &devices)?;

        // 2, 3 and 5 once per round, interleaved, so that a noisy minute hits all of them;
        // the order of the job runs rotates from round to round.
        let rounds = self.args.rounds.max(1);
        let mut sizes: Vec<Option<usize>> =
            self.args.batch_rows.iter().copied().map(Some).collect();
        sizes.push(None);
        for round in 0..rounds {
            eprintln!("e2e: round {} of {rounds}", round + 1);
            eprintln!("e2e:   [2] consuming {topic} with a plain BaseConsumer");
            report.consume.push(self.consume_all(&topic, n)?);
            eprintln!("e2e:   [3] inserting {n} rows into MariaDB, 1 and 2 connections");
            let raw_db = self.database("raw")?;
            report.insert_1.push(self.insert(&raw_db, &statements, 1)?);
            report.insert_2.push(self.insert(&raw_db, &statements, 2)?);
            for i in 0..sizes.len() {
                let batch_rows = sizes[(i + round) % sizes.len()];
                let what = batch_rows.map_or("no-sink".to_string(), |b| b.to_string());
                eprintln!("e2e:   [5] job over the backlog, max_rows {what}");
                let name = format!("{what}-r{}", round + 1);
                report
                    .backlog
                    .push(self.backlog_run(&job_topics, batch_rows, &name)?);
            }
        }
        drop(statements);

        // 5b. Live: the job waits on an empty topic; a producer sends at a fixed rate.
        let live_n = (self.args.live_rate * self.args.live_secs as f64).round() as u64;
        if live_n > 0 {
            for batch_rows in self.args.live_batch_rows.clone() {
                let live = Topics {
                    readings: self.topic(&format!("live-{batch_rows}"), self.args.partitions)?,
                    devices: job_topics.devices.clone(),
                    dlq: job_topics.dlq.clone(),
                };
                eprintln!(
                    "e2e: [5b] live: {live_n} readings at {}/s into {}, max_rows {batch_rows}",
                    self.args.live_rate, live.readings
                );
                report.live.push(self.live_run(&live, batch_rows, live_n)?);
            }
        }
        Ok(report)
    }

    /// A job run from a fresh consumer group into a fresh database.
    fn job(
        &mut self,
        topics: &Topics,
        name: String,
        batch_rows: Option<usize>,
        idle_exit_secs: u64,
    ) -> Result<(JobSpec, String)> {
        let db = self.database(if idle_exit_secs > 0 { "job" } else { "live" })?;
        let spec = JobSpec {
            iotflow: self.args.iotflow.clone(),
            workers: self.args.workers,
            group: format!("bench-{}-{name}", self.tag),
            name,
            brokers: self.args.brokers.clone(),
            readings: topics.readings.clone(),
            devices: topics.devices.clone(),
            dlq: topics.dlq.clone(),
            db_url: self.db_url(&db),
            batch_rows,
            idle_exit_secs,
            log_dir: self.args.log_dir.clone(),
        };
        Ok((spec, db))
    }

    /// The job over the whole backlog of `topics.readings` (or without the MySQL sink), until
    /// it exits on idleness.
    fn backlog_run(
        &mut self,
        topics: &Topics,
        batch_rows: Option<usize>,
        name: &str,
    ) -> Result<BacklogRun> {
        let n = self.args.readings;
        let (spec, db) = self.job(topics, format!("backlog-{name}"), batch_rows, 3)?;
        let mut running = spec.spawn()?;
        let progress = running.wait_for(spec.progress_metric(), n, Duration::from_secs(600))?;
        running.finish(Duration::from_secs(60))?;
        if batch_rows.is_some() {
            let stored = self.count_rows(&db)?;
            ensure!(
                stored == n,
                "the job stored {stored} rows for {n} readings (see {})",
                running.log().display()
            );
        }
        Ok(BacklogRun {
            batch_rows,
            rows: n,
            total: progress.done,
            first: progress.first,
            latency: prom::histogram(&progress.text, E2E_LATENCY),
            batch_write: prom::histogram(&progress.text, BATCH_WRITE),
        })
    }

    /// The job running live while `count` readings are produced at `--live-rate`; the latency
    /// of just those readings.
    fn live_run(&mut self, topics: &Topics, batch_rows: usize, count: u64) -> Result<LiveRun> {
        let (spec, _db) = self.job(topics, format!("live-{batch_rows}"), Some(batch_rows), 0)?;
        let mut running = spec.spawn()?;
        running.wait_until_ready(
            (self.args.devices * self.args.workers) as f64,
            Duration::from_secs(120),
        )?;
        let before = prom::histogram(&running.scrape().unwrap_or_default(), E2E_LATENCY);
        let start = Instant::now();
        let options = gen_options(count, self.args.devices, self.args.seed + 1);
        let produced = iotflow_gen::produce(
            &self.args.brokers,
            &topics.readings,
            Generator::new(options),
            self.args.live_rate,
            |_| {},
        )?;
        let produce_time = start.elapsed();
        let progress = running.wait_for(ROWS_WRITTEN, produced, Duration::from_secs(600))?;
        running.terminate();
        running.finish(Duration::from_secs(60))?;
        Ok(LiveRun {
            batch_rows,
            produced,
            produce_time,
            latency: prom::difference(&prom::histogram(&progress.text, E2E_LATENCY), &before),
        })
    }

    /// What the run was, for the report's header.
    fn info(&self) -> RunInfo {
        let a = &self.args;
        RunInfo {
            command: std::env::var("IOTFLOW_E2E_COMMAND")
                .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
            commit: git_commit(),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            brokers: a.brokers.clone(),
            mysql: iotflow_sink_mysql::redact(&a.mysql_url),
            readings: a.readings,
            devices: a.devices,
            partitions: a.partitions,
            workers: a.workers,
            live_rate: a.live_rate,
            live_secs: a.live_secs,
            batch_rows: a.batch_rows.clone(),
        }
    }

    /// Creates a fresh topic of this run.
    fn topic(&mut self, what: &str, partitions: i32) -> Result<String> {
        let name = format!("bench-{}-{what}", self.tag);
        let results = self
            .rt
            .block_on(self.admin.create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))
            .with_context(|| {
                format!(
                    "creating topic {name} on {} (is the broker up? bash deploy/local/start.sh)",
                    self.args.brokers
                )
            })?;
        for r in results {
            r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
        }
        self.topics.push(name.clone());
        Ok(name)
    }

    /// The URL of database `db` on the server of `--mysql-url`.
    fn db_url(&self, db: &str) -> String {
        match self.args.mysql_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{db}"),
            None => format!("{}/{db}", self.args.mysql_url),
        }
    }

    /// (Re)creates the empty scratch database `<prefix>_<what>`.
    fn database(&mut self, what: &str) -> Result<String> {
        let db = format!("{}_{what}", self.args.database_prefix);
        let url = self.args.mysql_url.clone();
        self.rt.block_on(async {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await.with_context(|| {
                format!(
                    "connecting to MariaDB at {} (bash deploy/local/start.sh)",
                    iotflow_sink_mysql::redact(&url)
                )
            })?;
            conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                .await?;
            conn.query_drop(format!("CREATE DATABASE `{db}`")).await?;
            drop(conn);
            pool.disconnect().await?;
            anyhow::Ok(())
        })?;
        if !self.databases.contains(&db) {
            self.databases.push(db.clone());
        }
        Ok(db)
    }

    fn count_rows(&self, db: &str) -> Result<u64> {
        let url = self.db_url(db);
        self.rt.block_on(async {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await?;
            let n: Option<u64> = conn.query_first("SELECT COUNT(*) FROM iot_data").await?;
            drop(conn);
            pool.disconnect().await?;
            anyhow::Ok(n.unwrap_or(0))
        })
    }

    /// Reads every message of `topic` (all partitions, from the beginning); the time taken.
    fn consume_all(&self, topic: &str, expected: u64) -> Result<Duration> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.args.brokers)
            .set("group.id", format!("bench-{}-raw", self.tag))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating a Kafka consumer")?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.args.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        let start = Instant::now();
        consumer.assign(&tpl)?;
        let (mut count, mut bytes) = (0u64, 0usize);
        let mut last = Instant::now();
        while count < expected {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    count += 1;
                    bytes += m.payload_len();
                    last = Instant::now();
                }
                Some(Err(e)) => bail!("consuming {topic}: {e}"),
                None => ensure!(
                    last.elapsed() < Duration::from_secs(30),
                    "consumed only {count} of {expected} messages of {topic} ({bytes} bytes)"
                ),
            }
        }
        Ok(start.elapsed())
    }

    /// Runs `statements` into a fresh `iot_data` in `db` over `connections` connections; the
    /// time taken by the statements alone.
    fn insert(
        &self,
        db: &str,
        statements: &Arc<Vec<String>>,
        connections: usize,
    ) -> Result<Duration> {
        let url = self.db_url(db);
        let statements = statements.clone();
        self.rt.block_on(async move {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await?;
            conn.query_drop("DROP TABLE IF EXISTS iot_data").await?;
            conn.query_drop(IOT_DATA_DDL).await?;
            // The day partition, as the sink creates it before its first write.
            PartitionManager::new("iot_data")
                .ensure_days(&mut conn, [start_time().date()])
                .await
                .context("creating the day partition")?;
            let mut conns = vec![conn];
            while conns.len() < connections {
                conns.push(pool.get_conn().await?);
            }
            let start = Instant::now();
            let tasks: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(i, mut conn)| {
                    let statements = statements.clone();
                    tokio::spawn(async move {
                        for sql in statements.iter().skip(i).step_by(connections) {
                            conn.query_drop(sql.as_str()).await?;
                        }
                        Ok::<_, mysql_async::Error>(conn)
                    })
                })
                .collect();
            let mut done = Vec::new();
            for task in tasks {
                done.push(task.await.context("insert task")??);
            }
            let took = start.elapsed();
            drop(done);
            pool.disconnect().await?;
            anyhow::Ok(took)
        })
    }

    /// Deletes this run's topics and databases (unless `--keep`). Best effort: reports, never
    /// fails.
    fn clean_up(&mut self) {
        if self.args.keep {
            eprintln!(
                "e2e: kept topics {:?} and databases {:?}",
                self.topics, self.databases
            );
            return;
        }
        let url = self.args.mysql_url.clone();
        let databases = std::mem::take(&mut self.databases);
        let dropped = self.rt.block_on(async {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await?;
            for db in &databases {
                conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await?;
            }
            drop(conn);
            pool.disconnect().await?;
            anyhow::Ok(())
        });
        if let Err(e) = dropped {
            eprintln!("e2e: warning: could not drop {databases:?}: {e}");
        }
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if !topics.is_empty() {
            let deleted = self.rt.block_on(self.admin.delete_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ));
            if let Err(e) = deleted {
                eprintln!("e2e: warning: could not delete topics {topics:?}: {e}");
            }
        }
    }
}

/// The median wall time of `runs` calls of `f`.
fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// The checked-out commit, `-dirty` when the work tree has changes.
fn git_commit() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match out(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            }
        }
        None => "unknown".into(),
    }
}
