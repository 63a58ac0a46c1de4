//! The runs issue 11 added: (7a) the Elasticsearch stand-in's `_bulk` alone, (8) the job with
//! all three sinks (backlog and live), (9) the job without sinks per dimension size, and (10)
//! the job as two processes of one worker against one process of two.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use iotflow_benches::job::{free_port, tail, RunningJob, E2E_LATENCY, ENRICHED, ROWS_WRITTEN};
use iotflow_benches::prom;
use iotflow_benches::report::{BacklogRun, DimensionRun, LiveRun, ProcessRun};
use iotflow_es_stand_in::StandIn;
use reqwest::header::CONTENT_TYPE;

use crate::{Bench, Topics};

/// The sinks of (8), as `IOTFLOW__*` overrides beside the MySQL sink's (set by `JobSpec`).
fn all_sinks_env(clickhouse_url: &str, clickhouse_db: &str, es_url: &str) -> Vec<(String, String)> {
    [
        ("IOTFLOW__CLICKHOUSE__ENABLED", "true"),
        ("IOTFLOW__CLICKHOUSE__URL", clickhouse_url),
        ("IOTFLOW__CLICKHOUSE__DATABASE", clickhouse_db),
        ("IOTFLOW__ELASTICSEARCH__ENABLED", "true"),
        ("IOTFLOW__ELASTICSEARCH__URL", es_url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Bench {
    /// The stand-in (started on first use), emptied as a fresh cluster; its URL.
    pub(crate) fn fresh_stand_in(&mut self) -> String {
        let stand_in = self.stand_in.get_or_insert_with(StandIn::spawn);
        let mut state = stand_in.state();
        state.docs.clear();
        state.templates.clear();
        state.requests.clear();
        drop(state);
        stand_in.url.clone()
    }

    /// (7a) Posts `bodies` (the sink's `_bulk` bodies, encoded by its own encoder) straight to
    /// the emptied stand-in with `reqwest`, the ES sink's HTTP client, `concurrency` requests
    /// in flight; the time taken. Every document must then be in the stand-in.
    pub(crate) fn es_bulk(
        &mut self,
        bodies: &Arc<Vec<Vec<u8>>>,
        documents: u64,
        concurrency: usize,
    ) -> Result<Duration> {
        let url = format!("{}/_bulk", self.fresh_stand_in());
        let bodies = bodies.clone();
        let took = self.rt.block_on(async move {
            let client = reqwest::Client::new();
            let start = Instant::now();
            let tasks: Vec<_> = (0..concurrency.max(1))
                .map(|i| {
                    let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
                    tokio::spawn(async move {
                        for body in bodies.iter().skip(i).step_by(concurrency.max(1)) {
                            let response = client
                                .post(&url)
                                .header(CONTENT_TYPE, "application/x-ndjson")
                                .body(body.clone())
                                .send()
                                .await?;
                            let status = response.status();
                            let text = response.bytes().await?;
                            if !status.is_success() {
                                bail!("stand-in `_bulk` answered {status}");
                            }
                            // The response's top-level `errors` flag (it comes first).
                            let head = String::from_utf8_lossy(&text[..text.len().min(200)])
                                .replace(' ', "");
                            ensure!(
                                !head.contains("\"errors\":true"),
                                "stand-in `_bulk` refused documents: {head}"
                            );
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for task in tasks {
                task.await.context("bulk task")??;
            }
            anyhow::Ok(start.elapsed())
        })?;
        let stand_in = self.stand_in.as_ref().expect("started above");
        let stored = stand_in.doc_count() as u64;
        stand_in.state().docs.clear();
        ensure!(
            stored == documents,
            "the stand-in holds {stored} documents after {documents} were posted"
        );
        Ok(took)
    }

    /// (8) The job with all three sinks over the backlog of `topics.readings` (`readings`
    /// readings): MySQL at the default batch size into a fresh database, ClickHouse into a
    /// fresh database, the emptied stand-in. Every store must then hold every reading. The
    /// run's rate counts a reading once all three sinks wrote it (the sinks' counter reaches
    /// three times the readings).
    pub(crate) fn all_sinks_run(
        &mut self,
        topics: &Topics,
        readings: u64,
        name: &str,
    ) -> Result<BacklogRun> {
        let ch_db = self.clickhouse_database("ch_all")?;
        let es_url = self.fresh_stand_in();
        let db = self.database("all")?;
        let mut spec = self.spec(topics, format!("backlog-{name}"), 3);
        spec.db_url = self.db_url(&db);
        spec.batch_rows = Some(iotflow_benches::job::DEFAULT_BATCH_ROWS);
        spec.env = all_sinks_env(&self.args.clickhouse_url, &ch_db, &es_url);
        let mut running = spec.spawn()?;
        let progress = running.wait_for(ROWS_WRITTEN, 3 * readings, Duration::from_secs(900))?;
        running.finish(Duration::from_secs(60))?;
        let log = running.log().display().to_string();
        let mysql = self.count_rows(&db)?;
        let clickhouse = self.clickhouse_count(&ch_db)?;
        let stand_in = self.stand_in.as_ref().expect("started above");
        let es = stand_in.doc_count() as u64;
        stand_in.state().docs.clear();
        ensure!(
            (mysql, clickhouse, es) == (readings, readings, readings),
            "all sinks: MySQL holds {mysql}, ClickHouse {clickhouse} (FINAL), the stand-in {es} for {readings} readings (see {log})"
        );
        Ok(BacklogRun {
            batch_rows: None,
            rows: readings,
            total: progress.done,
            // Rows of three sinks: a third of them, in readings.
            first: (progress.first.0, progress.first.1 / 3.0),
            latency: prom::histogram(&progress.text, E2E_LATENCY),
            batch_write: prom::histogram(&progress.text, iotflow_benches::job::BATCH_WRITE),
            peak_rss: running.peak_rss(),
        })
    }

    /// (8) The job live with all three sinks at `--live-rate`, MySQL at the default batch size.
    pub(crate) fn all_sinks_live(&mut self, topics: &Topics, count: u64) -> Result<LiveRun> {
        let ch_db = self.clickhouse_database("ch_all_live")?;
        let es_url = self.fresh_stand_in();
        let env = all_sinks_env(&self.args.clickhouse_url, &ch_db, &es_url);
        let run = self.live_run_with(
            topics,
            "live-all-sinks",
            iotflow_benches::job::DEFAULT_BATCH_ROWS,
            count,
            env,
            3,
        );
        if let Some(stand_in) = &self.stand_in {
            stand_in.state().docs.clear();
        }
        run
    }

    /// (9) The job without sinks over the backlog, with the dimension of `devices` devices
    /// published to `topics.devices`.
    pub(crate) fn dimension_run(
        &mut self,
        topics: &Topics,
        devices: usize,
        name: &str,
    ) -> Result<DimensionRun> {
        let run = self.backlog_run(topics, None, name)?;
        Ok(DimensionRun { devices, run })
    }

    /// (10) The job without sinks over the backlog as `processes` processes of `workers`
    /// workers each (`iotflow run -n -p -h`, a hostfile of free loopback ports), one consumer
    /// group; from the first process's start until the processes' enriched readings add up to
    /// the backlog, then until every process exits on idleness.
    pub(crate) fn process_run(
        &mut self,
        topics: &Topics,
        processes: usize,
        workers: usize,
        name: &str,
    ) -> Result<ProcessRun> {
        let n = self.args.readings;
        let name = format!("backlog-{name}");
        let hostfile = (processes > 1)
            .then(|| -> Result<PathBuf> {
                let mut text = String::new();
                for _ in 0..processes {
                    text.push_str(&format!("127.0.0.1:{}\n", free_port()?));
                }
                let path = self.args.log_dir.join(format!("hostfile-{name}"));
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(path)
            })
            .transpose()?;
        let mut base = self.spec(topics, name.clone(), 3);
        base.workers = workers;
        base.processes = processes;
        base.hostfile = hostfile;
        let mut jobs: Vec<RunningJob> = Vec::new();
        let start = Instant::now();
        for p in 0..processes {
            let mut spec = base.clone();
            spec.process = p;
            spec.name = format!("{name}-p{p}");
            jobs.push(spec.spawn()?);
        }
        let mut first = None;
        let done = loop {
            let texts: Vec<Option<String>> = jobs.iter().map(RunningJob::scrape).collect();
            let now = start.elapsed();
            let value: f64 = texts
                .iter()
                .map(|t| t.as_deref().map_or(0.0, |t| prom::sum(t, ENRICHED)))
                .sum();
            if value > 0.0 && first.is_none() {
                first = Some((now, value));
            }
            if value >= n as f64 {
                break now;
            }
            for job in &mut jobs {
                if let Some(status) = job.exited()? {
                    bail!(
                        "a process of the cluster exited early ({status}); last lines of {}:\n{}",
                        job.log().display(),
                        tail(job.log(), 20)
                    );
                }
            }
            ensure!(
                now < Duration::from_secs(600),
                "{ENRICHED} is {value} of {n} after {now:?} over {processes} processes (see {})",
                jobs[0].log().display()
            );
            std::thread::sleep(iotflow_benches::job::SCRAPE_EVERY);
        };
        for job in &mut jobs {
            job.finish(Duration::from_secs(60))?;
        }
        let rss: Vec<Option<u64>> = jobs.iter().map(RunningJob::peak_rss).collect();
        Ok(ProcessRun {
            processes,
            workers,
            run: BacklogRun {
                batch_rows: None,
                rows: n,
                total: done,
                first: first.unwrap_or((done, n as f64)),
                // No sinks: no latency, no batches.
                latency: Vec::new(),
                batch_write: Vec::new(),
                peak_rss: rss.iter().flatten().copied().max(),
            },
            rss,
        })
    }
}
