//! `e2e`: the streaming job's end-to-end throughput and latency, measured in one run side by
//! side with the limits of what it is built from, on the local stack (tansu, MariaDB,
//! ClickHouse).
//!
//! 1. broker produce rate: the readings produced to a fresh 8-partition topic (once);
//! 2. broker consume rate: a plain `BaseConsumer` reading that topic back, no processing;
//! 3. MariaDB insert rate: the same rows in 1 000-row statements from the sink's own encoder,
//!    on one connection and on two in parallel;
//! 4. parse rate in-process: serde alone (the `f64` baseline) and the real parser;
//! 5. the job (`iotflow run`): (a) draining the backlog of (1) once per `--batch-rows`, (c) the
//!    same without the MySQL sink, then (b) live: a producer at a fixed rate into a fresh topic
//!    while the job runs, for the latency that matters (in backlog mode the latency is mostly
//!    the age of the backlog);
//! 6. ClickHouse: (a) its raw insert rate, the same rows as the sink's `Row`s in batches of the
//!    sink's default size, and (b) the job with only the ClickHouse sink draining the backlog;
//! 7. the job with only the Elasticsearch sink draining the backlog into the in-process
//!    Elasticsearch **stand-in** (`iotflow-es-stand-in`, not Elasticsearch): the job's side of
//!    the bulk protocol, nothing about a real cluster.
//!
//! (2), (3), (5a), (5c), (6) and (7) are repeated `--rounds` times, interleaved, and reported as
//! medians with their ranges; the ratios of the job to (2), (3), (4) and (5c) say which part
//! bounds it, those of (6b) to (6a) and of (6b) and (7) to (5a) compare the sinks. Everything the
//! harness creates (topics, `iotflow_bench_*` databases in MariaDB and ClickHouse) is its own and
//! is removed at the end unless `--keep`. Run it through `bash benches/e2e.sh`, which builds and
//! starts what it needs; see `docs/benchmarks.md`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use iotflow_benches::job::{JobSpec, BATCH_WRITE, DEFAULT_BATCH_ROWS, E2E_LATENCY, ROWS_WRITTEN};
use iotflow_benches::report::{
    median, per_sec, quantile, rate, BacklogRun, LiveRun, Report, RunInfo, INSERT_STATEMENT_ROWS,
};
use iotflow_benches::{gen_options, parse_baseline, prom, readings, rows, start_time};
use iotflow_es_stand_in::StandIn;
use iotflow_gen::{Generated, Generator};
use iotflow_model::{parse_reading, DeviceInfo, Enriched, ParseLimits, Reading, Zone};
use iotflow_sink_clickhouse::Row as ClickhouseRow;
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
    /// ClickHouse HTTP URL (user `default`, no password, as on the local stack); the scratch
    /// databases `<prefix>_ch_raw` and `<prefix>_ch_job` are created there.
    #[arg(
        long,
        env = "IOTFLOW_TEST_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
    /// Skip the ClickHouse figures (6a, 6b).
    #[arg(long)]
    no_clickhouse: bool,
    /// Skip the Elasticsearch stand-in figure (7).
    #[arg(long)]
    no_elasticsearch: bool,
}

/// Rows per insert of the raw ClickHouse measurement: the sink's default
/// `clickhouse.batch.max_rows` (see `iotflow_config::ClickhouseConfig`), so that the job and
/// the raw inserts send batches of the same size.
const CLICKHOUSE_BATCH_ROWS: usize = 50_000;

/// The Elasticsearch sink's default `elasticsearch.batch.max_rows` (see
/// `iotflow_config::ElasticsearchConfig`).
const ELASTICSEARCH_BATCH_ROWS: usize = 5000;

/// The name `StandIn::spawn` gives the thread that serves every request of the stand-in.
const STAND_IN_THREAD: &str = "es-stand-in";

/// The ClickHouse user: the job's default `clickhouse.user`, with no password, as on the local
/// stack.
const CLICKHOUSE_USER: &str = "default";

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
    let report = report?;
    let text = report.render(&bench.info());
    println!("{}", bench.sinks.render_into(&text, &report, &bench.args));
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
    /// ClickHouse scratch databases.
    clickhouse_databases: Vec<String>,
    /// The Elasticsearch stand-in of (7), started on first use; it serves until the harness
    /// exits.
    stand_in: Option<StandIn>,
    /// What (6) and (7) measured.
    sinks: SinkFigures,
}

/// A run of the job in the rotation of every round.
#[derive(Clone, Copy, Debug)]
enum JobRun {
    /// (5a) with the MySQL sink at this `max_rows`, or (5c) without any sink.
    Mysql(Option<usize>),
    /// (6b) with only the ClickHouse sink.
    Clickhouse,
    /// (7) with only the Elasticsearch sink, writing to the stand-in.
    StandIn,
}

/// The sinks other than MySQL: (6) and (7). `report.rs` renders the MySQL figures; these are
/// spliced into its tables by [`SinkFigures::render_into`].
#[derive(Debug, Default)]
struct SinkFigures {
    /// `SELECT version()` of the ClickHouse server.
    clickhouse_version: Option<String>,
    /// (6a) Inserting the rows into ClickHouse, per round.
    clickhouse_raw: Vec<Duration>,
    /// (6b) The job with only the ClickHouse sink, per round (`batch_rows` is `None`: the MySQL
    /// sink is off).
    clickhouse_job: Vec<BacklogRun>,
    /// (7) The job with only the Elasticsearch sink, into the stand-in, per round.
    stand_in_job: Vec<BacklogRun>,
    /// (7) Per run, the CPU time of the stand-in's thread ÷ the time from the first row written
    /// to the last (when `/proc` says).
    stand_in_busy: Vec<f64>,
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
            clickhouse_databases: Vec::new(),
            stand_in: None,
            sinks: SinkFigures::default(),
        })
    }

    fn measure(&mut self) -> Result<Report> {
        let mut report = Report::default();
        let n = self.args.readings;
        if !self.args.no_clickhouse {
            // Before creating anything: fail early when ClickHouse is down.
            self.sinks.clickhouse_version = Some(self.clickhouse_version()?);
        }
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
        let parsed = readings(&payloads, self.args.partitions, Some(now_ms));
        let rows = rows(&parsed, &devices);
        // The same again as the ClickHouse sink's rows, for (6a).
        let ch_rows =
            (!self.args.no_clickhouse).then(|| Arc::new(clickhouse_rows(&parsed, &devices)));
        drop(parsed);
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

        // 2, 3, 5, 6 and 7 once per round, interleaved, so that a noisy minute hits all of
        // them; the order of the job runs rotates from round to round.
        let rounds = self.args.rounds.max(1);
        let mut runs: Vec<JobRun> = self
            .args
            .batch_rows
            .iter()
            .map(|&b| JobRun::Mysql(Some(b)))
            .collect();
        runs.push(JobRun::Mysql(None));
        if !self.args.no_clickhouse {
            runs.push(JobRun::Clickhouse);
        }
        if !self.args.no_elasticsearch {
            runs.push(JobRun::StandIn);
        }
        for round in 0..rounds {
            eprintln!("e2e: round {} of {rounds}", round + 1);
            eprintln!("e2e:   [2] consuming {topic} with a plain BaseConsumer");
            report.consume.push(self.consume_all(&topic, n)?);
            eprintln!("e2e:   [3] inserting {n} rows into MariaDB, 1 and 2 connections");
            let raw_db = self.database("raw")?;
            report.insert_1.push(self.insert(&raw_db, &statements, 1)?);
            report.insert_2.push(self.insert(&raw_db, &statements, 2)?);
            if let Some(rows) = &ch_rows {
                eprintln!(
                    "e2e:   [6a] inserting {n} rows into ClickHouse, {CLICKHOUSE_BATCH_ROWS}-row batches"
                );
                let took = self.clickhouse_insert(rows)?;
                self.sinks.clickhouse_raw.push(took);
            }
            for i in 0..runs.len() {
                let name = |what: &str| format!("{what}-r{}", round + 1);
                match runs[(i + round) % runs.len()] {
                    JobRun::Mysql(batch_rows) => {
                        let what = batch_rows.map_or("no-sink".to_string(), |b| b.to_string());
                        eprintln!("e2e:   [5] job over the backlog, max_rows {what}");
                        report.backlog.push(self.backlog_run(
                            &job_topics,
                            batch_rows,
                            &name(&what),
                        )?);
                    }
                    JobRun::Clickhouse => {
                        eprintln!("e2e:   [6b] job over the backlog, ClickHouse sink only");
                        let run = self.clickhouse_run(&job_topics, &name("clickhouse"))?;
                        self.sinks.clickhouse_job.push(run);
                    }
                    JobRun::StandIn => {
                        eprintln!(
                            "e2e:   [7] job over the backlog, Elasticsearch sink only, into the stand-in"
                        );
                        let (run, busy) = self.stand_in_run(&job_topics, &name("es-stand-in"))?;
                        self.sinks.stand_in_job.push(run);
                        self.sinks.stand_in_busy.extend(busy);
                    }
                }
            }
        }
        drop(statements);
        drop(ch_rows);

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
        let mut spec = self.spec(topics, name, idle_exit_secs);
        spec.db_url = self.db_url(&db);
        spec.batch_rows = batch_rows;
        Ok((spec, db))
    }

    /// A job run from a fresh consumer group, with every sink off: MySQL's through
    /// `batch_rows: None`, the others by default.
    fn spec(&self, topics: &Topics, name: String, idle_exit_secs: u64) -> JobSpec {
        JobSpec {
            iotflow: self.args.iotflow.clone(),
            workers: self.args.workers,
            group: format!("bench-{}-{name}", self.tag),
            name,
            brokers: self.args.brokers.clone(),
            readings: topics.readings.clone(),
            devices: topics.devices.clone(),
            dlq: topics.dlq.clone(),
            db_url: self.args.mysql_url.clone(),
            batch_rows: None,
            idle_exit_secs,
            log_dir: self.args.log_dir.clone(),
        }
    }

    /// (6b) The job over the whole backlog with only the ClickHouse sink, into a fresh
    /// database; `SELECT count() … FINAL` must then find every reading.
    fn clickhouse_run(&mut self, topics: &Topics, name: &str) -> Result<BacklogRun> {
        let db = self.clickhouse_database("ch_job")?;
        let wrapper = self.wrapper(
            "clickhouse",
            &[
                ("IOTFLOW__MYSQL__ENABLED", "false"),
                ("IOTFLOW__CLICKHOUSE__ENABLED", "true"),
                ("IOTFLOW__CLICKHOUSE__URL", &self.args.clickhouse_url),
                ("IOTFLOW__CLICKHOUSE__DATABASE", &db),
                ("IOTFLOW__ELASTICSEARCH__ENABLED", "false"),
            ],
        )?;
        let (run, log) = self.sink_backlog_run(topics, &format!("backlog-{name}"), wrapper)?;
        let stored = self.clickhouse_count(&db)?;
        ensure!(
            stored == self.args.readings,
            "the job stored {stored} rows in ClickHouse `{db}`.iot_data (FINAL) for {} readings (see {})",
            self.args.readings,
            log.display()
        );
        Ok(run)
    }

    /// (7) The job over the whole backlog with only the Elasticsearch sink, into the stand-in,
    /// emptied first; the stand-in must then hold one document per reading. Also returns the
    /// CPU time of the stand-in's thread over the run, divided by the time from the first row
    /// written to the last: near 1 (or above, its work on the first batch comes before the
    /// first row), the stand-in and not the job set the pace.
    fn stand_in_run(&mut self, topics: &Topics, name: &str) -> Result<(BacklogRun, Option<f64>)> {
        let stand_in = self.stand_in.get_or_insert_with(StandIn::spawn);
        {
            // Empty, as a fresh cluster: the job installs its template again at start.
            let mut state = stand_in.state();
            state.docs.clear();
            state.templates.clear();
            state.requests.clear();
        }
        let url = stand_in.url.clone();
        let wrapper = self.wrapper(
            "elasticsearch",
            &[
                ("IOTFLOW__MYSQL__ENABLED", "false"),
                ("IOTFLOW__CLICKHOUSE__ENABLED", "false"),
                ("IOTFLOW__ELASTICSEARCH__ENABLED", "true"),
                ("IOTFLOW__ELASTICSEARCH__URL", &url),
            ],
        )?;
        let cpu_before = thread_cpu(STAND_IN_THREAD);
        let (run, log) = self.sink_backlog_run(topics, &format!("backlog-{name}"), wrapper)?;
        let busy = match (cpu_before, thread_cpu(STAND_IN_THREAD)) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
            _ => None,
        }
        .map(|cpu| {
            cpu / run
                .total
                .saturating_sub(run.first.0)
                .as_secs_f64()
                .max(1e-3)
        });
        let stand_in = self.stand_in.as_ref().expect("started above");
        let stored = stand_in.doc_count() as u64;
        // The documents take memory in this process; the next run starts empty anyway.
        stand_in.state().docs.clear();
        ensure!(
            stored == self.args.readings,
            "the job stored {stored} documents in the Elasticsearch stand-in for {} readings (see {})",
            self.args.readings,
            log.display()
        );
        Ok((run, busy))
    }

    /// The job started through `wrapper` over the whole backlog of `topics.readings`, until
    /// it exits on idleness; progress is the rows the sinks acknowledged. Also returns the
    /// job's log.
    fn sink_backlog_run(
        &self,
        topics: &Topics,
        name: &str,
        wrapper: PathBuf,
    ) -> Result<(BacklogRun, PathBuf)> {
        let n = self.args.readings;
        let mut spec = self.spec(topics, name.to_string(), 3);
        spec.iotflow = wrapper;
        let mut running = spec.spawn()?;
        let progress = running.wait_for(ROWS_WRITTEN, n, Duration::from_secs(600))?;
        running.finish(Duration::from_secs(60))?;
        let run = BacklogRun {
            batch_rows: None,
            rows: n,
            total: progress.done,
            first: progress.first,
            latency: prom::histogram(&progress.text, E2E_LATENCY),
            batch_write: prom::histogram(&progress.text, BATCH_WRITE),
        };
        Ok((run, running.log().to_path_buf()))
    }

    /// Writes `<log dir>/iotflow-<sink>-only.sh`, which runs `--iotflow` with `env` added, and
    /// returns its path.
    ///
    /// `JobSpec` (src/job.rs) sets only the MySQL sink's variables, and setting variables in
    /// this process for the child to inherit would race with the threads already running
    /// (librdkafka's, tokio's, the stand-in's) that may read the environment. The script
    /// `exec`s the job, so the process `JobSpec` started, signals and kills is the job itself.
    fn wrapper(&self, sink: &str, env: &[(&str, &str)]) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let iotflow = std::fs::canonicalize(&self.args.iotflow)
            .with_context(|| format!("resolving {}", self.args.iotflow.display()))?;
        let mut script = format!(
            "#!/bin/sh\n# Written by the e2e harness (benches/src/bin/e2e.rs): the job with only the {sink} sink.\n"
        );
        for (key, value) in env {
            script.push_str(&format!("export {key}={}\n", sh_quote(value)));
        }
        script.push_str(&format!(
            "exec {} \"$@\"\n",
            sh_quote(&iotflow.to_string_lossy())
        ));
        let path = self.args.log_dir.join(format!("iotflow-{sink}-only.sh"));
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(path)
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
            mysql: iotflow_mysql::redact(&a.mysql_url),
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
                    iotflow_mysql::redact(&url)
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

    /// A client of `--clickhouse-url` as the job's user, on no particular database. Schema
    /// validation is off: ClickHouse before 24.1 cannot describe a table the way the crate
    /// needs (as in `iotflow_sink_clickhouse::prepare`).
    fn clickhouse_client(&self) -> iotflow_sink_clickhouse::Client {
        iotflow_sink_clickhouse::Client::default()
            .with_url(&self.args.clickhouse_url)
            .with_user(CLICKHOUSE_USER)
            .with_validation(false)
    }

    /// `SELECT version()`: checks that ClickHouse answers before anything is measured.
    fn clickhouse_version(&self) -> Result<String> {
        let client = self.clickhouse_client();
        self.rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    client.query("SELECT version()").fetch_one::<String>(),
                )
                .await
            })
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!(
                    "asking ClickHouse at {} for its version (bash deploy/local/start.sh, or --no-clickhouse)",
                    self.args.clickhouse_url
                )
            })
    }

    /// (Re)creates the empty ClickHouse scratch database `<prefix>_<what>`.
    fn clickhouse_database(&mut self, what: &str) -> Result<String> {
        let db = format!("{}_{what}", self.args.database_prefix);
        let client = self.clickhouse_client();
        self.rt
            .block_on(async {
                client
                    .query(&format!("DROP DATABASE IF EXISTS `{db}`"))
                    .execute()
                    .await?;
                client
                    .query(&format!("CREATE DATABASE `{db}`"))
                    .execute()
                    .await
            })
            .with_context(|| {
                format!(
                    "creating ClickHouse database `{db}` at {}",
                    self.args.clickhouse_url
                )
            })?;
        if !self.clickhouse_databases.contains(&db) {
            self.clickhouse_databases.push(db.clone());
        }
        Ok(db)
    }

    /// Rows in `<db>.iot_data`, copies of a row counted once (`FINAL`), as the sink's
    /// guarantees are stated.
    fn clickhouse_count(&self, db: &str) -> Result<u64> {
        let client = self.clickhouse_client();
        self.rt
            .block_on(
                client
                    .query(&format!("SELECT count() FROM `{db}`.iot_data FINAL"))
                    .fetch_one::<u64>(),
            )
            .with_context(|| format!("counting the rows of ClickHouse `{db}`.iot_data"))
    }

    /// (6a) Inserts `rows` into a fresh `iot_data`, created as the job creates it, in batches
    /// of [`CLICKHOUSE_BATCH_ROWS`], one after the other on one client; the time taken by the
    /// inserts alone (RowBinary encoding included: the crate encodes while it sends).
    fn clickhouse_insert(&mut self, rows: &Arc<Vec<ClickhouseRow>>) -> Result<Duration> {
        let db = self.clickhouse_database("ch_raw")?;
        let url = self.args.clickhouse_url.clone();
        let took = self.rt.block_on(async {
            let prepared = iotflow_sink_clickhouse::prepare(
                &url,
                CLICKHOUSE_USER,
                "",
                &db,
                "iot_data",
                true,
                Duration::from_secs(10),
            )
            .await
            .map_err(anyhow::Error::msg)?;
            let client = prepared.client;
            let start = Instant::now();
            for batch in rows.chunks(CLICKHOUSE_BATCH_ROWS) {
                let mut insert = client.insert::<ClickhouseRow>("iot_data").await?;
                for row in batch {
                    insert.write(row).await?;
                }
                insert.end().await?;
            }
            anyhow::Ok(start.elapsed())
        });
        let took = took.with_context(|| format!("inserting into ClickHouse `{db}`.iot_data"))?;
        let stored = self.clickhouse_count(&db)?;
        ensure!(
            stored == rows.len() as u64,
            "ClickHouse `{db}`.iot_data holds {stored} rows (FINAL) after inserting {}",
            rows.len()
        );
        Ok(took)
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
                "e2e: kept topics {:?}, databases {:?} and ClickHouse databases {:?}",
                self.topics, self.databases, self.clickhouse_databases
            );
            return;
        }
        let client = self.clickhouse_client();
        let databases = std::mem::take(&mut self.clickhouse_databases);
        for db in &databases {
            let dropped = self.rt.block_on(
                client
                    .query(&format!("DROP DATABASE IF EXISTS `{db}`"))
                    .execute(),
            );
            if let Err(e) = dropped {
                eprintln!("e2e: warning: could not drop ClickHouse database {db}: {e}");
            }
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

/// The ClickHouse sink's rows for `readings`, enriched with `devices` as the job does (the
/// counterpart of `iotflow_benches::rows`, which gives the MySQL sink's).
fn clickhouse_rows(readings: &[Reading], devices: &[DeviceInfo]) -> Vec<ClickhouseRow> {
    let by_id: HashMap<&str, &DeviceInfo> =
        devices.iter().map(|d| (d.pboxid.as_str(), d)).collect();
    readings
        .iter()
        .map(|r| {
            ClickhouseRow::from(&Enriched {
                reading: r.clone(),
                device: by_id.get(r.pboxid.as_str()).map(|d| (*d).clone()),
            })
        })
        .collect()
}

/// CPU time (user + system) of this process's thread named `name`, from `/proc/self/task`;
/// `None` where there is no such thread or no `/proc`.
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        // `pid (comm) state ppid …`: utime and stime are the 14th and 15th fields, in clock
        // ticks (USER_HZ, 100 on Linux wherever this runs).
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        return Some(Duration::from_millis(ticks * 10));
    }
    None
}

/// `value` as one single-quoted `sh` word.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

impl SinkFigures {
    /// `text` (the rendered report) with (6) and (7) added: their rows at the end of the
    /// main table, their ratios in a table after the job's ratios, and a note on the stand-in.
    fn render_into(&self, text: &str, report: &Report, args: &Args) -> String {
        if self.clickhouse_raw.is_empty()
            && self.clickhouse_job.is_empty()
            && self.stand_in_job.is_empty()
        {
            return text.to_string();
        }
        let n = args.readings as f64;
        let raw: Vec<f64> = self.clickhouse_raw.iter().map(|&d| per_sec(n, d)).collect();
        let (ch_start, ch_steady) =
            sink_rates(&self.clickhouse_job, CLICKHOUSE_BATCH_ROWS, args.workers);
        let (es_start, es_steady) =
            sink_rates(&self.stand_in_job, ELASTICSEARCH_BATCH_ROWS, args.workers);
        // The MySQL job of the report's ratios: the default batch size if it ran.
        let mysql_size = args
            .batch_rows
            .iter()
            .copied()
            .find(|&b| b == DEFAULT_BATCH_ROWS)
            .or(args.batch_rows.first().copied());
        let runs_of = |size: Option<usize>| -> Vec<BacklogRun> {
            report
                .backlog
                .iter()
                .filter(|r| r.batch_rows == size)
                .cloned()
                .collect()
        };
        let mysql = mysql_size.map(|b| job_rates(&runs_of(Some(b))));
        let no_sink = job_rates(&runs_of(None));

        let mut rows = Vec::new();
        if !raw.is_empty() {
            rows.push(format!(
                "| 6a | ClickHouse INSERT, RowBinary (`clickhouse` crate), {CLICKHOUSE_BATCH_ROWS}-row batches, 1 client | {} | {}; ClickHouse {}, table as the sink creates it |",
                cell(median(raw.clone())),
                spread(&raw),
                self.clickhouse_version.as_deref().unwrap_or("?")
            ));
        }
        for (number, what, runs, (start, steady), note) in [
            (
                "6b",
                "**job, ClickHouse sink only** (MySQL off), backlog",
                &self.clickhouse_job,
                (&ch_start, &ch_steady),
                format!("batches of {} rows", rate(CLICKHOUSE_BATCH_ROWS as f64)),
            ),
            (
                "7",
                "**job, Elasticsearch sink only, into the ES stand-in (not Elasticsearch)**, backlog",
                &self.stand_in_job,
                (&es_start, &es_steady),
                match median(self.stand_in_busy.iter().copied()) {
                    Some(busy) => format!(
                        "the job's side of `_bulk` only; the stand-in thread's CPU time ÷ time from the first row to the last: {:.0}%; see the note below",
                        100.0 * busy
                    ),
                    None => "the job's side of `_bulk` only: see the note below".to_string(),
                },
            ),
        ] {
            let Some(run) = median_run(runs) else {
                continue;
            };
            let firsts = median(runs.iter().map(|r| r.first.0.as_secs_f64()));
            rows.push(format!(
                "| {number} | {what}, from process start | **{}** | {}; first row after {:.2} s; batch write p50 / p99 {} / {} |",
                cell(median(start.clone())),
                spread(start),
                firsts.unwrap_or_default(),
                quantile(0.5, &run.batch_write),
                quantile(0.99, &run.batch_write)
            ));
            let steady_note = if steady.is_empty() {
                "not measured: in no round were two batches per worker left after the first \
                 write seen; run more readings"
                    .to_string()
            } else {
                spread(steady)
            };
            rows.push(format!(
                "| {number} | {what}, from the first row written | **{}** | {steady_note}; {note} |",
                cell(median(steady.clone()))
            ));
        }

        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let medians = |(start, steady): &(Vec<f64>, Vec<f64>)| {
            (median(start.clone()), median(steady.clone()))
        };
        let (ch, es) = (
            medians(&(ch_start, ch_steady)),
            medians(&(es_start, es_steady)),
        );
        let raw = median(raw);
        let mysql = mysql.as_ref().map(medians).unwrap_or_default();
        let no_sink = medians(&no_sink);
        let mysql_name = format!(
            "job, MySQL sink only, max_rows {} (5a)",
            mysql_size.unwrap_or(DEFAULT_BATCH_ROWS)
        );
        let mut ratios = vec![
            String::new(),
            "| ratio (medians, same run) | from start | from first row |".to_string(),
            "|---|---:|---:|".to_string(),
        ];
        for (what, (a, a_steady), (b, b_steady), present) in [
            (
                "job, ClickHouse only (6b) ÷ ClickHouse raw insert (6a)".to_string(),
                ch,
                (raw, raw),
                !self.clickhouse_job.is_empty() && raw.is_some(),
            ),
            (
                format!("job, ClickHouse only (6b) ÷ {mysql_name}"),
                ch,
                mysql,
                !self.clickhouse_job.is_empty(),
            ),
            (
                "job, ClickHouse only (6b) ÷ job without sinks (5c)".to_string(),
                ch,
                no_sink,
                !self.clickhouse_job.is_empty(),
            ),
            (
                format!("job, ES stand-in only (7) ÷ {mysql_name}"),
                es,
                mysql,
                !self.stand_in_job.is_empty(),
            ),
            (
                "job, ES stand-in only (7) ÷ job without sinks (5c)".to_string(),
                es,
                no_sink,
                !self.stand_in_job.is_empty(),
            ),
        ] {
            if present {
                ratios.push(format!(
                    "| {what} | {} | {} |",
                    ratio(a, b),
                    ratio(a_steady, b_steady)
                ));
            }
        }
        ratios.push(String::new());
        ratios.push(format!(
            "(6) and (7) ran in the same {} interleaved round(s) as (2), (3), (5a) and (5c). \
             (6a) and (6b) send batches of the same size ({CLICKHOUSE_BATCH_ROWS} rows, the sink's \
             default) into the same table, created as the sink creates it; the job has one writer \
             per worker, (6a) one client.",
            report.consume.len()
        ));
        if !self.stand_in_job.is_empty() {
            ratios.push(String::new());
            ratios.push(
                "**(7) is not Elasticsearch.** The job wrote to `iotflow-es-stand-in`, an HTTP \
                 server inside this harness that implements `_bulk` after Elasticsearch's \
                 documented format and keeps the documents in memory. It indexes nothing, and it \
                 parses and checks every document on one thread that shares the cores with the \
                 job. The figure measures the job's side of the bulk protocol (encoding, HTTP, \
                 item-by-item responses), bounded by the stand-in's own speed. Beside the figure, \
                 the CPU time of the stand-in's thread divided by the time from the first row \
                 written to the last: near 100 % (or above: its work on the first batch comes \
                 before the first row), the stand-in set the pace, not the job. It says nothing \
                 about what a real cluster would accept."
                    .to_string(),
            );
        }

        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if !insert_at_table_end(&mut lines, "| # | measurement |", &rows) {
            lines.push(String::new());
            lines.push("| # | measurement | readings/s | notes |".into());
            lines.push("|---|---|---:|---|".into());
            lines.extend(rows);
        }
        if !insert_at_table_end(&mut lines, "| ratio (job", &ratios) {
            lines.extend(ratios);
        }
        let mut out = lines.join("\n");
        if text.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

/// Inserts `new` after the last line of the markdown table whose header line starts with
/// `header`; `false` (and nothing inserted) when there is no such table.
fn insert_at_table_end(lines: &mut Vec<String>, header: &str, new: &[String]) -> bool {
    let Some(start) = lines.iter().position(|l| l.starts_with(header)) else {
        return false;
    };
    let end = start
        + lines[start..]
            .iter()
            .take_while(|l| l.starts_with('|'))
            .count();
    lines.splice(end..end, new.iter().cloned());
    true
}

/// Rates of (6b) or (7) runs, from process start and from the first row written. The second
/// only for runs that had at least two batches of `batch_rows` per worker left to write after
/// the first write seen: ClickHouse's batches are 50 000 rows, and with fewer readings what
/// follows the first write is one or two batches landing, not a rate.
fn sink_rates(runs: &[BacklogRun], batch_rows: usize, workers: usize) -> (Vec<f64>, Vec<f64>) {
    let enough = (2 * batch_rows * workers) as f64;
    (
        runs.iter().map(BacklogRun::rate).collect(),
        runs.iter()
            .filter(|r| r.rows as f64 - r.first.1 >= enough)
            .filter_map(BacklogRun::rate_after_start)
            .collect(),
    )
}

/// Rates from process start and from the first row written of `runs`, as `report.rs`
/// computes them for (5a) and (5c).
fn job_rates(runs: &[BacklogRun]) -> (Vec<f64>, Vec<f64>) {
    (
        runs.iter().map(BacklogRun::rate).collect(),
        runs.iter()
            .filter_map(BacklogRun::rate_after_start)
            .collect(),
    )
}

/// The run with the median rate from process start.
fn median_run(runs: &[BacklogRun]) -> Option<&BacklogRun> {
    let mut sorted: Vec<&BacklogRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    sorted.get(sorted.len() / 2).copied()
}

/// A rate, or `-`.
fn cell(r: Option<f64>) -> String {
    r.map_or("-".into(), rate)
}

/// `min–max` of `values` as rates, or the single value.
fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match values.len() {
        0 => "-".into(),
        1 => rate(min),
        _ => format!("{}–{}", rate(min), rate(max)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(batch_rows: Option<usize>, secs: f64) -> BacklogRun {
        BacklogRun {
            batch_rows,
            rows: 100_000,
            total: Duration::from_secs_f64(secs + 1.0),
            first: (Duration::from_secs(1), 0.0),
            latency: Vec::new(),
            batch_write: vec![(0.1, 5.0), (f64::INFINITY, 10.0)],
        }
    }

    #[test]
    fn other_sinks_go_into_the_reports_tables() {
        // One worker: 100 000 rows are two ClickHouse batches, enough for a rate from the first.
        let args = Args::parse_from(["e2e", "100000", "1"]);
        let report = Report {
            consume: vec![Duration::from_secs(1)],
            backlog: vec![run(Some(2000), 1.0), run(None, 0.5)],
            ..Report::default()
        };
        let info = RunInfo {
            readings: 100_000,
            batch_rows: vec![2000],
            ..RunInfo::default()
        };
        let sinks = SinkFigures {
            clickhouse_version: Some("18.16.1".into()),
            clickhouse_raw: vec![
                Duration::from_secs(2),
                Duration::from_secs(1),
                Duration::from_secs(4),
            ],
            clickhouse_job: vec![run(None, 4.0), run(None, 1.0), run(None, 3.0)],
            stand_in_job: vec![run(None, 2.0)],
            stand_in_busy: vec![0.5, 0.9, 0.7],
        };
        let text = sinks.render_into(&report.render(&info), &report, &args);
        let line = |prefix: &str| {
            text.lines()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
        };
        // Rows at the end of the main table, ratios after the job's ratios.
        assert_eq!(line("| 6a |"), line("| 5c |") + 2, "{text}");
        assert!(line("| 7 |") < line("| ratio (job"));
        assert!(line("| ratio (medians, same run)") > line("| job ÷ job without the MySQL sink"));
        // ClickHouse job: medians 100 000 / 4 s from start, 100 000 / 3 s from the first row;
        // raw: median 100 000 / 2 s.
        assert!(
            text.contains("| 6b | **job, ClickHouse sink only** (MySQL off), backlog, from process start | **25,000** | 20,000–50,000; first row after 1.00 s;"),
            "{text}"
        );
        assert!(text.contains("| 6a | ClickHouse INSERT, RowBinary (`clickhouse` crate), 50000-row batches, 1 client | 50,000 | 25,000–100,000; ClickHouse 18.16.1"));
        assert!(text
            .contains("| job, ClickHouse only (6b) ÷ ClickHouse raw insert (6a) | 0.50 | 0.67 |"));
        assert!(text.contains("| job, ClickHouse only (6b) ÷ job, MySQL sink only, max_rows 2000 (5a) | 0.50 | 0.33 |"));
        assert!(
            text.contains("| job, ES stand-in only (7) ÷ job without sinks (5c) | 0.50 | 0.25 |")
        );
        assert!(text.contains("**(7) is not Elasticsearch.**"));
        assert!(text.contains("time from the first row to the last: 70%"));
    }

    #[test]
    fn too_few_batches_after_the_first_write_give_no_rate_from_it() {
        let mut late = run(None, 1.0);
        late.first.1 = 80_001.0;
        let (from_start, steady) = sink_rates(&[run(None, 1.0), late.clone()], 10_000, 2);
        assert_eq!(from_start, vec![50_000.0, 50_000.0]);
        assert_eq!(steady, vec![100_000.0]);
        let sinks = SinkFigures {
            clickhouse_job: vec![late],
            ..SinkFigures::default()
        };
        let args = Args::parse_from(["e2e", "100000", "2"]);
        let text = sinks.render_into("", &Report::default(), &args);
        assert!(
            text.contains("from the first row written | **-** | not measured:"),
            "{text}"
        );
    }

    #[test]
    fn finds_a_thread_by_name() {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("e2e-test-busy".into())
            .spawn(move || {
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(50) {
                    std::hint::black_box(0u64);
                }
                wait.recv().ok();
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let cpu = thread_cpu("e2e-test-busy");
        done.send(()).unwrap();
        thread.join().unwrap();
        assert!(cpu.is_some_and(|c| c < Duration::from_secs(5)), "{cpu:?}");
        assert_eq!(thread_cpu("no-such-thread"), None);
    }

    #[test]
    fn wrapper_values_are_quoted_for_sh() {
        assert_eq!(sh_quote("http://h:1/x"), "'http://h:1/x'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
