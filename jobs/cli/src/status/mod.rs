//! `iotflow status`: what `flink list` was for the old system. Reads the metrics endpoints of
//! running iotflow processes (streaming job processes, the device publisher and the MQTT bridge), scrapes each
//! twice an interval apart, and prints one line per process: job, uptime, throughput, consumer
//! lag, sink state; or DOWN with the reason when an endpoint does not answer.
//!
//! One concern per file: [`targets`] which endpoints to read, [`fetch`] reading a process's
//! /metrics twice (HTTP through reqwest, blocking), [`model`] what a process's status is,
//! computed from the two expositions (iotflow's one parser, `iotflow_metrics::exposition`),
//! [`render`] the table (comfy-table) and the JSON document.

mod fetch;
mod model;
mod render;
mod targets;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use fetch::probe;
use model::ProcessStatus;
use render::render_table;
use targets::targets;

/// `iotflow status` arguments.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Configuration file (TOML): without --endpoint or --targets, the endpoints are
    /// `metrics.listen` (+ p for process p) and `publisher.metrics_listen`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// A metrics endpoint `host:port` to read (repeatable).
    #[arg(long = "endpoint", short = 'e', value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// A Prometheus file_sd JSON file (as in deploy/prometheus/targets/): every target in it
    /// (repeatable).
    #[arg(long, value_name = "FILE")]
    pub targets: Vec<PathBuf>,
    /// Without --endpoint/--targets: the streaming job's processes 0..N (ports
    /// `metrics.listen` + p).
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// Without --endpoint/--targets: leave out the device publisher.
    #[arg(long)]
    pub no_publisher: bool,
    /// Without --endpoint/--targets: also read the MQTT bridge (`mqtt.metrics_listen`).
    #[arg(long)]
    pub mqtt_bridge: bool,
    /// Time between the two scrapes the rates come from, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Connect and read timeout of one scrape, milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// Machine-readable output (one JSON document on stdout).
    #[arg(long)]
    pub json: bool,
}

/// Runs `iotflow status`; an error (exit code 1) when any endpoint is down.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let targets = targets(&args)?;
    anyhow::ensure!(!targets.is_empty(), "no endpoints to read");
    let interval = Duration::from_millis(args.interval_ms);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let statuses: Vec<ProcessStatus> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| s.spawn(move || probe(t, interval, timeout)))
            .collect();
        handles
            .into_iter()
            .zip(&targets)
            .map(|(h, t)| {
                h.join()
                    .unwrap_or_else(|_| ProcessStatus::down(t, "probe failed".into()))
            })
            .collect()
    });
    let down = statuses.iter().filter(|s| s.down.is_some()).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "interval_ms": args.interval_ms,
            "up": statuses.len() - down,
            "down": down,
            "processes": statuses.iter().map(ProcessStatus::to_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        write!(out, "{}", render_table(&statuses))?;
    }
    out.flush()?;
    anyhow::ensure!(down == 0, "{down} of {} endpoint(s) down", statuses.len());
    Ok(())
}
