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
//! 7a. the stand-in's `_bulk` alone: the ES sink's documents in requests of its default size,
//!    1 and 2 in flight (the reference of (7));
//! 8. with `--all-sinks N`: the job with MySQL, ClickHouse and the stand-in over a backlog of N
//!    readings, and live at `--live-rate`;
//! 9. the job without sinks per dimension size (10 000, 50 000, 100 000 devices): peak RSS;
//! 10. the job without sinks as 2 processes × 1 worker and as 1 process × 2 workers;
//! 11. issue 12: the job without sinks against the same job with `[alarms] enabled` and
//!     `--alarm-rules` rules (a mix of every kind and scope, [`alarms`]), each until every
//!     reading is enriched and until every offset is committed (with alarms: every reading's
//!     events on the topic, episodes and state in MySQL); peak RSS and the alarms' counts.
//! 12. issue 13: the job with the MySQL sink (default batch) against the same job with
//!     `[rollups] enabled` (minute / hour / day rollups, heat map, day tracks), over the backlog;
//! 13. issue 13: the job without sinks, with `--geofence-rules` plain `above` rules, and with as
//!     many geofence rules (`in_area` / `out_of_area`, some with holes), to the last commit.
//!
//! Every job process's RSS is sampled every 50 ms for its peak. (4c), parse + enrich on one
//! timely worker, is the reference of goal 1; a goals table sets each figure against the goal
//! of issue 11.
//!
//! (2), (3), (5a), (5c), (6), (7), (7a), (8), (9), (10) and (11) are repeated `--rounds` times, interleaved, and reported as
//! medians with their ranges; the ratios of the job to (2), (3), (4) and (5c) say which part
//! bounds it, those of (6b) to (6a) and of (6b) and (7) to (5a) compare the sinks, that of
//! (11) what the alarms cost. Everything the
//! harness creates (topics, `iotflow_bench_*` databases in MariaDB and ClickHouse) is its own and
//! is removed at the end unless `--keep`. Run it through `bash benches/e2e.sh`, which builds and
//! starts what it needs; see `docs/benchmarks.md`.
//!
//! This file holds the command line and the run's state; the phases are in [`phases`], the
//! raw measurements of the stores in [`raw`], the runs of the job with one other sink in
//! [`sink_runs`], the alarms runs in [`alarms`] and the scratch topics and databases in
//! [`scratch`]. The report is data
//! ([`iotflow_benches::report::Report`]), rendered once by `iotflow_benches::report`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use iotflow_es_stand_in::StandIn;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

mod alarms;
mod issue;
mod phases;
mod raw;
mod scratch;
mod sink_runs;

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
    /// Skip the Elasticsearch stand-in figures (7, 7a).
    #[arg(long)]
    no_elasticsearch: bool,
    /// Readings of the backlog run with all three sinks on (8), also the live run with all
    /// three at `--live-rate`; 0: skip both. Needs ClickHouse and the stand-in.
    #[arg(long, default_value_t = 0)]
    all_sinks: u64,
    /// Dimension sizes (devices) of the memory runs (9).
    #[arg(long, value_delimiter = ',', default_values_t = vec![10_000, 50_000, 100_000])]
    dimension_sizes: Vec<usize>,
    /// Skip the memory runs per dimension size (9).
    #[arg(long)]
    no_dimension_sizes: bool,
    /// Skip 2 processes × 1 worker against 1 process × 2 workers (10).
    #[arg(long)]
    no_processes: bool,
    /// Skip the scale-out shapes of (10): 1, 2 and 4 processes of one worker (issue 14).
    #[arg(long)]
    no_scale_out: bool,
    /// Skip the job with alarms against the job without sinks (11).
    #[arg(long)]
    no_alarms: bool,
    /// Rules of the alarms runs (11), a fixed mix of every kind and scope.
    #[arg(long, default_value_t = 100)]
    alarm_rules: usize,
    /// Skip the job with rollups against the job with the MySQL sink alone (12).
    #[arg(long)]
    no_rollups: bool,
    /// Skip the job with geofence rules against the job without sinks (13).
    #[arg(long)]
    no_geofences: bool,
    /// Geofence rules of (13).
    #[arg(long, default_value_t = 20)]
    geofence_rules: usize,
}

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
    println!("{}", report.render(&bench.info()));
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
    /// (8) with all three sinks, over its own backlog.
    AllSinks,
    /// (9) without sinks, with a dimension of this many devices.
    Dimension(usize),
    /// (10) without sinks, as this many processes (1 × 2 workers or 2 × 1 worker).
    Processes(usize, usize),
    /// (11) without sinks (`false`) or with alarms on (`true`), followed to the last commit.
    Alarms(bool),
    /// (12) with the MySQL sink, rollups off (`false`) or on (`true`).
    Rollups(bool),
    /// (13) without sinks (`None`), with as many `above` rules (`Some(false)`) or with the
    /// geofence rules (`Some(true)`).
    Geofences(Option<bool>),
}

/// The job's topics for one phase.
#[derive(Clone)]
struct Topics {
    readings: String,
    devices: String,
    dlq: String,
}

/// The checked-out commit, `-dirty` when the work tree has changes.
pub(crate) fn git_commit() -> String {
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
