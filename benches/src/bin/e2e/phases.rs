//! The harness's phases in their order: generate and produce (1), parse in-process (4), then
//! the interleaved rounds of (2), (3), (5a), (5c), (6), (7) and (8)–(11), and the live runs
//! (5b).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use iotflow_benches::job::{
    JobSpec, BATCH_WRITE, DEFAULT_BATCH_ROWS, E2E_LATENCY, READ_AGE, ROWS_WRITTEN,
};
use iotflow_benches::report::{
    BacklogRun, LiveRun, Report, RunInfo, CLICKHOUSE_BATCH_ROWS, ELASTICSEARCH_BATCH_ROWS,
    INSERT_STATEMENT_ROWS,
};
use iotflow_benches::{gen_options, parse_baseline, prom, readings, rows};
use iotflow_gen::{Generated, Generator};
use iotflow_model::{parse_reading, ParseLimits, Zone};
use iotflow_sink_mysql::encoder::encode_insert;
use rdkafka::config::ClientConfig;

use crate::raw::clickhouse_rows;
use crate::{git_commit, Args, Bench, JobRun, Topics};

impl Bench {
    pub(crate) fn new(args: Args) -> Result<Bench> {
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
        })
    }

    pub(crate) fn measure(&mut self) -> Result<Report> {
        let mut report = Report::default();
        let n = self.args.readings;
        if !self.args.no_clickhouse {
            // Before creating anything: fail early when ClickHouse is down.
            report.sinks.clickhouse_version = Some(self.clickhouse_version()?);
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
        // And as the ES sink's `_bulk` bodies, for (7a).
        let es_bodies =
            (!self.args.no_elasticsearch).then(|| Arc::new(es_bulk_bodies(&parsed, &devices)));
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
        // 4c. Parse + enrich on one timely worker, the reference of goal 1: a dimension of at
        // least the criterion bench's 10 000 devices.
        let pe_devices = self.args.devices.max(10_000);
        eprintln!("e2e: [4c] parse + enrich in-process, 1 worker, {pe_devices} devices");
        let pe = iotflow_benches::parse_enrich::parse_enrich(
            &payloads,
            &iotflow_gen::devices(pe_devices, self.args.seed),
            5,
        );
        ensure!(
            pe.enriched == 5 * payloads.len(),
            "parse + enrich in-process gave {} readings for 5 passes of {}",
            pe.enriched,
            payloads.len()
        );
        report.issue.parse_enrich = pe.median();
        report.issue.parse_enrich_devices = pe_devices;
        drop(payloads);

        let job_topics = Topics {
            readings: topic.clone(),
            devices: self.topic("devices", 1)?,
            dlq: self.topic("dlq", 1)?,
        };
        iotflow_gen::publish_devices(&self.args.brokers, &job_topics.devices, &devices)?;

        // 9. One devices topic per dimension size, published once.
        let mut dimension_topics = Vec::new();
        if !self.args.no_dimension_sizes {
            for size in self.args.dimension_sizes.clone() {
                let topics = Topics {
                    devices: self.topic(&format!("devices-{size}"), 1)?,
                    ..job_topics.clone()
                };
                eprintln!("e2e: [9] publishing {size} devices to {}", topics.devices);
                let devices = iotflow_gen::devices(size, self.args.seed);
                iotflow_gen::publish_devices(&self.args.brokers, &topics.devices, &devices)?;
                dimension_topics.push((size, topics));
            }
        }
        // 8. The all-sinks backlog, produced once.
        let all_n = self.args.all_sinks;
        let all_topics = if all_n > 0 {
            ensure!(
                !self.args.no_clickhouse && !self.args.no_elasticsearch,
                "--all-sinks needs ClickHouse and the stand-in (no --no-clickhouse, --no-elasticsearch)"
            );
            let topics = Topics {
                readings: self.topic("readings-all-sinks", self.args.partitions)?,
                ..job_topics.clone()
            };
            eprintln!("e2e: [8] producing {all_n} readings to {}", topics.readings);
            let sent = iotflow_gen::produce(
                &self.args.brokers,
                &topics.readings,
                Generator::new(gen_options(all_n, self.args.devices, self.args.seed + 2)),
                0.0,
                |_| {},
            )?;
            ensure!(sent == all_n, "produced {sent} of {all_n} readings");
            report.issue.all_sinks_readings = all_n;
            Some(topics)
        } else {
            None
        };

        // 11. The rule file, written and checked once.
        let alarm_rules = if self.args.no_alarms {
            None
        } else {
            let rules = self.alarm_rules(self.args.alarm_rules, &devices)?;
            eprintln!(
                "e2e: [11] {} alarm rules in {}",
                rules.mix.rules,
                rules.path.display()
            );
            report.alarms.mix = Some(rules.mix.clone());
            report.alarms.idle_partition_ms = crate::alarms::IDLE_PARTITION_MS;
            Some(rules)
        };

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
        if all_topics.is_some() {
            runs.push(JobRun::AllSinks);
        }
        runs.extend(
            dimension_topics
                .iter()
                .map(|(size, _)| JobRun::Dimension(*size)),
        );
        if !self.args.no_processes {
            runs.extend([JobRun::Processes(1, 2), JobRun::Processes(2, 1)]);
            if !self.args.no_scale_out {
                runs.extend([JobRun::Processes(1, 1), JobRun::Processes(4, 1)]);
            }
        }
        if alarm_rules.is_some() {
            runs.extend([JobRun::Alarms(false), JobRun::Alarms(true)]);
        }
        if !self.args.no_rollups {
            runs.extend([JobRun::Rollups(false), JobRun::Rollups(true)]);
        }
        let geofences = if self.args.no_geofences {
            None
        } else {
            let fences = self.geofence_rules(self.args.geofence_rules)?;
            let thresholds = self.threshold_rules(self.args.geofence_rules)?;
            runs.extend([
                JobRun::Geofences(None),
                JobRun::Geofences(Some(false)),
                JobRun::Geofences(Some(true)),
            ]);
            Some((thresholds, fences))
        };
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
                report.sinks.clickhouse_raw.push(took);
            }
            if let Some(bodies) = &es_bodies {
                eprintln!(
                    "e2e:   [7a] posting {n} documents to the ES stand-in, {ELASTICSEARCH_BATCH_ROWS}-document requests, 1 and 2 in flight"
                );
                report.issue.es_raw_1.push(self.es_bulk(bodies, n, 1)?);
                report.issue.es_raw_2.push(self.es_bulk(bodies, n, 2)?);
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
                        report.sinks.clickhouse_job.push(run);
                    }
                    JobRun::StandIn => {
                        eprintln!(
                            "e2e:   [7] job over the backlog, Elasticsearch sink only, into the stand-in"
                        );
                        let (run, busy) = self.stand_in_run(&job_topics, &name("es-stand-in"))?;
                        report.sinks.stand_in_job.push(run);
                        report.sinks.stand_in_busy.extend(busy);
                    }
                    JobRun::AllSinks => {
                        let topics = all_topics.as_ref().expect("AllSinks runs with its topic");
                        eprintln!("e2e:   [8] job over {all_n} readings, all three sinks");
                        let run = self.all_sinks_run(topics, all_n, &name("all-sinks"))?;
                        report.issue.all_sinks.push(run);
                    }
                    JobRun::Dimension(size) => {
                        let topics = &dimension_topics
                            .iter()
                            .find(|(s, _)| *s == size)
                            .expect("a topic per size")
                            .1;
                        eprintln!("e2e:   [9] job over the backlog, no sinks, {size} devices");
                        let run = self.dimension_run(
                            &topics.clone(),
                            size,
                            &name(&format!("devices-{size}")),
                        )?;
                        report.issue.dimension.push(run);
                    }
                    JobRun::Processes(processes, workers) => {
                        eprintln!(
                            "e2e:   [10] job over the backlog, no sinks, {processes} process(es) × {workers} worker(s)"
                        );
                        let run = self.process_run(
                            &job_topics,
                            processes,
                            workers,
                            &name(&format!("{processes}x{workers}")),
                        )?;
                        report.issue.processes.push(run);
                    }
                    JobRun::Alarms(on) => {
                        let rules = alarm_rules.as_ref().filter(|_| on);
                        let what = match rules {
                            Some(r) => format!("alarms on, {} rules", r.mix.rules),
                            None => "no sinks".into(),
                        };
                        eprintln!("e2e:   [11] job over the backlog, {what}, to the last commit");
                        let run_name = if on { "alarms" } else { "alarms-off" };
                        let run = self.alarm_run(&job_topics, rules, &name(run_name))?;
                        report.alarms.runs.push(run);
                    }
                    JobRun::Rollups(on) => {
                        eprintln!(
                            "e2e:   [12] job over the backlog, MySQL sink, rollups {}",
                            if on { "on" } else { "off" }
                        );
                        let env = if on {
                            vec![("IOTFLOW__ROLLUPS__ENABLED".to_string(), "true".to_string())]
                        } else {
                            Vec::new()
                        };
                        let run_name = if on { "rollups" } else { "rollups-off" };
                        let (run, text) = self.backlog_run_with(
                            &job_topics,
                            Some(DEFAULT_BATCH_ROWS),
                            &name(run_name),
                            env,
                        )?;
                        if on {
                            report.rollups.rows = Some((
                                prom::sum(&text, "iotflow_rollup_rows_updated_total"),
                                prom::sum(&text, "iotflow_rollup_rows_recomputed_total"),
                            ));
                            report.rollups.seconds =
                                prom::histogram(&text, "iotflow_rollup_seconds");
                        }
                        report.rollups.runs.push((on, run));
                    }
                    JobRun::Geofences(kind) => {
                        let rules =
                            geofences
                                .as_ref()
                                .and_then(|(thresholds, fences)| match kind {
                                    None => None,
                                    Some(false) => Some(thresholds),
                                    Some(true) => Some(fences),
                                });
                        let (what, run_name) = match kind {
                            None => ("no sinks", "geofences-off"),
                            Some(false) => ("above rules", "geofences-above"),
                            Some(true) => ("geofence rules", "geofences"),
                        };
                        eprintln!("e2e:   [13] job over the backlog, {what}, to the last commit");
                        let run = self.alarm_run(&job_topics, rules, &name(run_name))?;
                        report.geofences.kinds.push(kind);
                        report.geofences.runs.push(run);
                    }
                }
            }
        }
        drop(statements);
        drop(ch_rows);
        drop(es_bodies);

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
            if all_topics.is_some() {
                let live = Topics {
                    readings: self.topic("live-all-sinks", self.args.partitions)?,
                    ..job_topics.clone()
                };
                eprintln!(
                    "e2e: [8] live: {live_n} readings at {}/s into {}, all three sinks",
                    self.args.live_rate, live.readings
                );
                let run = self.all_sinks_live(&live, live_n)?;
                report.issue.all_sinks_live.push(run);
            }
        }
        Ok(report)
    }

    /// A job run from a fresh consumer group into a fresh database.
    pub(crate) fn job(
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
    pub(crate) fn spec(&self, topics: &Topics, name: String, idle_exit_secs: u64) -> JobSpec {
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
            processes: 1,
            process: 0,
            hostfile: None,
            config: None,
            env: Vec::new(),
        }
    }

    /// The job over the whole backlog of `topics.readings` (or without the MySQL sink), until
    /// it exits on idleness.
    pub(crate) fn backlog_run(
        &mut self,
        topics: &Topics,
        batch_rows: Option<usize>,
        name: &str,
    ) -> Result<BacklogRun> {
        Ok(self
            .backlog_run_with(topics, batch_rows, name, Vec::new())?
            .0)
    }

    /// [`Bench::backlog_run`] with more `IOTFLOW__*` overrides; also the last scrape.
    pub(crate) fn backlog_run_with(
        &mut self,
        topics: &Topics,
        batch_rows: Option<usize>,
        name: &str,
        env: Vec<(String, String)>,
    ) -> Result<(BacklogRun, String)> {
        let n = self.args.readings;
        let (mut spec, db) = self.job(topics, format!("backlog-{name}"), batch_rows, 3)?;
        spec.env = env;
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
        let run = BacklogRun {
            batch_rows,
            rows: n,
            total: progress.done,
            first: progress.first,
            latency: prom::histogram(&progress.text, E2E_LATENCY),
            batch_write: prom::histogram(&progress.text, BATCH_WRITE),
            peak_rss: running.peak_rss(),
        };
        Ok((run, progress.text))
    }

    /// The job running live while `count` readings are produced at `--live-rate`; the latency
    /// of just those readings.
    pub(crate) fn live_run(
        &mut self,
        topics: &Topics,
        batch_rows: usize,
        count: u64,
    ) -> Result<LiveRun> {
        let name = format!("live-{batch_rows}");
        self.live_run_with(topics, &name, batch_rows, count, Vec::new(), 1)
    }

    /// [`Bench::live_run`] with more `IOTFLOW__*` overrides (`env`, e.g. more sinks on); the
    /// sinks' counter must reach `sinks` rows per reading.
    pub(crate) fn live_run_with(
        &mut self,
        topics: &Topics,
        name: &str,
        batch_rows: usize,
        count: u64,
        env: Vec<(String, String)>,
        sinks: u64,
    ) -> Result<LiveRun> {
        let (mut spec, _db) = self.job(topics, name.to_string(), Some(batch_rows), 0)?;
        spec.env = env;
        let mut running = spec.spawn()?;
        running.wait_until_ready(
            (self.args.devices * self.args.workers) as f64,
            Duration::from_secs(120),
        )?;
        let scraped = running.scrape().unwrap_or_default();
        let before = prom::histogram(&scraped, E2E_LATENCY);
        let age_before = prom::histogram(&scraped, READ_AGE);
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
        let progress =
            running.wait_for(ROWS_WRITTEN, sinks * produced, Duration::from_secs(600))?;
        running.terminate();
        running.finish(Duration::from_secs(60))?;
        Ok(LiveRun {
            batch_rows,
            produced,
            produce_time,
            latency: prom::difference(&prom::histogram(&progress.text, E2E_LATENCY), &before),
            read_age: prom::difference(&prom::histogram(&progress.text, READ_AGE), &age_before),
            peak_rss: running.peak_rss(),
        })
    }

    /// What the run was, for the report's header.
    pub(crate) fn info(&self) -> RunInfo {
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
}

/// The Elasticsearch sink's `_bulk` bodies for `readings` enriched with `devices`, in requests
/// of its default `elasticsearch.batch.max_rows`, encoded by its own encoder.
fn es_bulk_bodies(
    readings: &[iotflow_model::Reading],
    devices: &[iotflow_model::DeviceInfo],
) -> Vec<Vec<u8>> {
    let by_id: std::collections::HashMap<&str, &iotflow_model::DeviceInfo> =
        devices.iter().map(|d| (d.pboxid.as_str(), d)).collect();
    let rows: Vec<iotflow_sink_elasticsearch::Row> = readings
        .iter()
        .map(|r| {
            iotflow_sink_elasticsearch::Row::from(&iotflow_model::Enriched {
                reading: r.clone(),
                device: by_id
                    .get(r.pboxid.as_str())
                    .map(|d| std::sync::Arc::new((*d).clone())),
            })
        })
        .collect();
    let prefix = iotflow_sink_elasticsearch::ElasticsearchConfig::default().index_prefix;
    rows.chunks(ELASTICSEARCH_BATCH_ROWS)
        .map(|chunk| iotflow_sink_elasticsearch::encoder::encode_bulk(chunk, &prefix))
        .collect()
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
