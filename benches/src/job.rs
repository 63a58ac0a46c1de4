//! Running `iotflow run` as a child process and following it through its `/metrics` endpoint,
//! the way an operator (or Prometheus) sees it: no hooks into the job's code.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::prom;
use crate::rss::RssSampler;

/// Counter of rows the sinks acknowledged.
pub const ROWS_WRITTEN: &str = "iotflow_sink_rows_written_total";
/// Counter of readings through the enrichment (the progress of a job without sinks).
pub const ENRICHED: &str = "iotflow_enriched_readings_total";
/// Histogram: Kafka message timestamp → durable write of the row.
pub const E2E_LATENCY: &str = "iotflow_end_to_end_latency_seconds";
/// A message's age when the source read it (the broker's and the fetch's share of the latency).
pub const READ_AGE: &str = "iotflow_kafka_read_age_seconds";
/// Histogram: time to write one batch, retries included.
pub const BATCH_WRITE: &str = "iotflow_sink_batch_write_seconds";
/// Gauge: devices in each worker's copy of the dimension.
pub const DIMENSION_DEVICES: &str = "iotflow_dimension_devices";
/// Gauge: the readings source's last committed offset (next offset to read) per partition; on
/// a fresh topic their sum is the readings whose every effect is stored.
pub const COMMITTED_OFFSET: &str = "iotflow_kafka_committed_offset";

/// How often [`RunningJob`] reads `/metrics` while it waits.
pub const SCRAPE_EVERY: Duration = Duration::from_millis(50);

/// The job's default `mysql.batch.max_rows` (see `iotflow_config::BatchConfig`).
pub const DEFAULT_BATCH_ROWS: usize = 2000;

/// One run of the job, configured through `IOTFLOW__*` environment overrides.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// The `iotflow` binary.
    pub iotflow: PathBuf,
    /// Worker threads (`-w`).
    pub workers: usize,
    /// Name of the run: the log file and the `job_name` label.
    pub name: String,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Readings topic.
    pub readings: String,
    /// Device records topic.
    pub devices: String,
    /// Dead-letter topic.
    pub dlq: String,
    /// Consumer group (fresh for a run from the beginning).
    pub group: String,
    /// MySQL URL of the database to write to (the job creates the table).
    pub db_url: String,
    /// `mysql.batch.max_rows`; `None` disables the MySQL sink.
    pub batch_rows: Option<usize>,
    /// `job.idle_exit_secs` (0: run until terminated).
    pub idle_exit_secs: u64,
    /// Where the job's log (its stderr) goes: `<log_dir>/job-<name>.log`.
    pub log_dir: PathBuf,
    /// Timely processes in the cluster (`-n`); 1 for a job alone.
    pub processes: usize,
    /// This process's index (`-p`), below `processes`.
    pub process: usize,
    /// The cluster's hostfile (`-h`: one `host:port` per process), when `processes > 1`.
    pub hostfile: Option<PathBuf>,
    /// A configuration file (`iotflow run --config`), for what the environment cannot say
    /// (arrays of tables: `[[alarms.rules]]`); the `IOTFLOW__*` variables override it.
    pub config: Option<PathBuf>,
    /// More `IOTFLOW__*` overrides, set after (and so over) the ones above; set on the child's
    /// command only, never in this process.
    pub env: Vec<(String, String)>,
}

impl JobSpec {
    /// The counter that says how many readings went all the way through.
    pub fn progress_metric(&self) -> &'static str {
        match self.batch_rows {
            Some(_) => ROWS_WRITTEN,
            None => ENRICHED,
        }
    }

    /// Starts the job with its metrics on a free loopback port.
    pub fn spawn(&self) -> Result<RunningJob> {
        let port = free_port()?;
        // The job serves its metrics on `metrics.listen`'s port + its process index.
        let listen_port = port
            .checked_sub(u16::try_from(self.process).unwrap_or(u16::MAX))
            .filter(|&p| p > 0)
            .context("no metrics port below the free one for this process index")?;
        let log = self.log_dir.join(format!("job-{}.log", self.name));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let batch_rows = self.batch_rows.unwrap_or(DEFAULT_BATCH_ROWS);
        let started = Instant::now();
        let mut command = Command::new(&self.iotflow);
        command.args(["run", "-w", &self.workers.to_string()]);
        if self.processes > 1 {
            command.args([
                "-n",
                &self.processes.to_string(),
                "-p",
                &self.process.to_string(),
            ]);
        }
        if let Some(hostfile) = &self.hostfile {
            command.arg("-h").arg(hostfile);
        }
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command
            .env("IOTFLOW__KAFKA__BROKERS", &self.brokers)
            .env("IOTFLOW__KAFKA__TOPIC", &self.readings)
            .env("IOTFLOW__KAFKA__BROADCAST_TOPIC", &self.devices)
            .env("IOTFLOW__KAFKA__DLQ_TOPIC", &self.dlq)
            .env("IOTFLOW__KAFKA__GROUP_ID", &self.group)
            .env("IOTFLOW__MYSQL__URL", &self.db_url)
            // Bench readings are dated 2025-04-10 (start_time) and produced now.
            .env("IOTFLOW__PARSE__MAX_EVENT_AGE_SECS", "0")
            .env(
                "IOTFLOW__MYSQL__ENABLED",
                self.batch_rows.is_some().to_string(),
            )
            .env("IOTFLOW__MYSQL__BATCH__MAX_ROWS", batch_rows.to_string())
            .env(
                "IOTFLOW__METRICS__LISTEN",
                format!("127.0.0.1:{listen_port}"),
            )
            .env(
                "IOTFLOW__JOB__IDLE_EXIT_SECS",
                self.idle_exit_secs.to_string(),
            )
            .env("IOTFLOW__JOB__NAME", format!("e2e-{}", self.name))
            .env("IOTFLOW_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.iotflow.display()))?;
        // Short timeouts: a scrape that does not answer quickly is retried on the next poll.
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let rss = RssSampler::start(child.id());
        Ok(RunningJob {
            child,
            rss,
            http,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            started,
            log,
        })
    }
}

/// A job process started by [`JobSpec::spawn`]; killed on drop if it is still running.
#[derive(Debug)]
pub struct RunningJob {
    child: Child,
    rss: RssSampler,
    http: reqwest::blocking::Client,
    metrics_url: String,
    started: Instant,
    log: PathBuf,
}

/// What [`RunningJob::wait_for`] saw.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Since start: when the counter was first seen above zero, and its value then.
    pub first: (Duration, f64),
    /// Since start: when the counter reached the expected value.
    pub done: Duration,
    /// The `/metrics` text at that moment.
    pub text: String,
}

impl RunningJob {
    /// The job's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The job process's peak RSS so far, in bytes (sampled every
    /// [`SAMPLE_EVERY`](crate::rss::SAMPLE_EVERY) since it was started).
    pub fn peak_rss(&self) -> Option<u64> {
        self.rss.peak()
    }

    /// Whether the job has exited (with its status); fails only if the OS cannot say.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Time since the job was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The `/metrics` text, or `None` while the endpoint does not answer.
    pub fn scrape(&self) -> Option<String> {
        let response = self.http.get(&self.metrics_url).send().ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().ok()
    }

    /// Fails with the end of the job's log if the job has exited.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the job exited early ({status}); last lines of {}:\n{}",
                self.log.display(),
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// Polls `/metrics` every [`SCRAPE_EVERY`] until the counter `metric` (summed over its
    /// label sets) reaches `expected`.
    pub fn wait_for(&mut self, metric: &str, expected: u64, timeout: Duration) -> Result<Progress> {
        let mut first = None;
        loop {
            let text = self.scrape();
            let now = self.started.elapsed();
            let value = text.as_deref().map_or(0.0, |t| prom::sum(t, metric));
            if value > 0.0 && first.is_none() {
                first = Some((now, value));
            }
            if value >= expected as f64 {
                return Ok(Progress {
                    first: first.unwrap_or((now, value)),
                    done: now,
                    text: text.unwrap_or_default(),
                });
            }
            self.check_running()?;
            ensure!(
                now < timeout,
                "{metric} is {value} of {expected} after {now:?} (see {})",
                self.log.display()
            );
            std::thread::sleep(SCRAPE_EVERY);
        }
    }

    /// Waits until the workers' dimensions hold `devices` device records in all, then one
    /// second more for the readings consumers to settle.
    pub fn wait_until_ready(&mut self, devices: f64, timeout: Duration) -> Result<()> {
        loop {
            let loaded = self
                .scrape()
                .map_or(0.0, |t| prom::sum(&t, DIMENSION_DEVICES));
            if loaded >= devices {
                std::thread::sleep(Duration::from_secs(1));
                return Ok(());
            }
            self.check_running()?;
            ensure!(
                self.started.elapsed() < timeout,
                "the job's dimensions hold {loaded} of {devices} device records after {timeout:?} (see {})",
                self.log.display()
            );
            std::thread::sleep(SCRAPE_EVERY);
        }
    }

    /// Asks the job to drain and stop (SIGTERM, as an operator would).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the job to exit, which must be a success.
    pub fn finish(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "the job failed ({status}); last lines of {}:\n{}",
                    self.log.display(),
                    tail(&self.log, 20)
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the job did not exit within {timeout:?} (see {})",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?
        .port())
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
