//! The process around the graph: runtime, metrics endpoint, pre-flight checks, signals, and the
//! timely cluster.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use iotflow_config::Config;
use iotflow_kafka::SourceHandle;
use iotflow_metrics::Metrics;
use iotflow_worktime::Rules;

use crate::cluster::{self, ClusterArgs};
use crate::dataflow::build;
use crate::{FileInput, JobContext};

/// Runs the streaming job until it finishes (idle exit, SIGTERM) or fails.
///
/// With `inputs` (`--input`, files or directories) the readings come from those files instead
/// of the readings topic, and the job finishes once every file is read and every sink has
/// acknowledged everything; it fails (after that) when a file could not be read to its end.
pub fn run(
    config: Config,
    cluster: ClusterArgs,
    inputs: &[std::path::PathBuf],
) -> anyhow::Result<()> {
    let files = if inputs.is_empty() {
        None
    } else {
        let files = iotflow_file::discover(inputs).context("--input")?;
        tracing::info!(
            files = files.len(),
            "reading input files instead of the readings topic"
        );
        Some(FileInput {
            files: Arc::new(files),
            summary: Arc::default(),
        })
    };
    let job_id = if config.job.id.is_empty() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{:016x}",
            (nanos as u64) ^ ((std::process::id() as u64) << 32)
        )
    } else {
        config.job.id.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("iotflow-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    // The stop signals are listened for before anything else: a SIGTERM during the pre-flight
    // checks then drains (there is nothing to drain yet) instead of killing the process.
    let lifecycle = SourceHandle::new(cluster.workers);
    {
        let lifecycle = lifecycle.clone();
        let mut signals = {
            let _guard = runtime.enter();
            iotflow_metrics::signals::StopSignals::listen()
        };
        runtime.spawn(async move {
            signals.recv().await;
            tracing::info!(
                "stop requested: draining (commits what the sinks acknowledged); signal again to abort"
            );
            lifecycle.requested.store(true, Ordering::SeqCst);
            lifecycle.stop.store(true, Ordering::SeqCst);
            signals.recv().await;
            tracing::warn!("aborting without draining");
            std::process::exit(130);
        });
    }
    let metrics = Arc::new(Metrics::new(&config.job.name, &job_id));
    metrics.set_readiness(false, "starting: pre-flight checks of the sinks and topics");
    if !config.metrics.listen.is_empty() {
        // One process per host (`--process auto`, a pod each) keeps the configured port;
        // processes sharing a machine move it by their index.
        let addr = if cluster.shared_host {
            iotflow_metrics::process_address(&config.metrics.listen, cluster.process)
                .context("metrics.listen")?
        } else {
            config.metrics.listen.clone()
        };
        let server = iotflow_metrics::serve(&addr, metrics.clone())?;
        tracing::info!("metrics at http://{}/metrics", server.addr);
    }

    let mysql = if config.mysql.enabled {
        let connector = runtime
            .block_on(iotflow_sink_mysql::prepare(&config.mysql, cluster.workers))
            .context("MySQL sink pre-flight check failed")?;
        Some(connector)
    } else {
        None
    };

    let clickhouse = if config.clickhouse.enabled {
        Some(
            runtime
                .block_on(iotflow_sink_clickhouse::prepare(
                    &config.clickhouse,
                    cluster.workers,
                ))
                .context("ClickHouse sink pre-flight check failed")?,
        )
    } else {
        None
    };

    // The rollups follow every batch the MySQL sink stores, in its writer (iotflow_rollups).
    let mysql = match (mysql, config.rollups.enabled) {
        (Some(connector), true) => {
            let copy_to = clickhouse
                .as_ref()
                .filter(|_| config.rollups.clickhouse)
                .map(|c| c.client().clone());
            if config.mysql.create_table {
                runtime
                    .block_on(iotflow_rollups::create_tables(
                        connector.pool(),
                        copy_to.as_ref().filter(|_| config.clickhouse.create_table),
                    ))
                    .context("creating the rollup tables")?;
            }
            let rollup_metrics = iotflow_rollups::RollupMetrics::register(&metrics);
            iotflow_rollups::add_routes(
                &metrics,
                connector.pool().clone(),
                &config.mysql.table,
                runtime.handle().clone(),
            );
            let (pool, table, params) = (
                connector.pool().clone(),
                config.mysql.table.clone(),
                iotflow_rollups::params(&config.rollups),
            );
            tracing::info!(
                clickhouse = copy_to.is_some(),
                geohash_precision = config.rollups.geohash_precision,
                "rollups on: minute, hour and day rollups, heat map and day tracks after every stored batch"
            );
            Some(connector.with_after_write(Arc::new(move |_| {
                Box::new(iotflow_rollups::Rollups::new(
                    pool.clone(),
                    &table,
                    params,
                    copy_to.clone(),
                    rollup_metrics.clone(),
                ))
            })))
        }
        (mysql, _) => mysql,
    };

    let elasticsearch = if config.elasticsearch.enabled {
        Some(
            runtime
                .block_on(iotflow_sink_elasticsearch::prepare(
                    &config.elasticsearch,
                    cluster.workers,
                ))
                .context("Elasticsearch sink pre-flight check failed")?,
        )
    } else {
        None
    };

    let alarms = if config.alarms.enabled {
        Some(
            runtime
                .block_on(iotflow_alarms_flow::prepare(
                    &config,
                    &metrics,
                    files.is_none(),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("alarms pre-flight check failed")?,
        )
    } else {
        None
    };

    // Rows a store refuses (a value its column cannot hold, a mapping conflict) go to the
    // dead-letter topic; the producer needs the runtime (its delivery futures are awaited by
    // the writer tasks).
    let ledger = iotflow_kafka::DeadLetterLedger::new(&config.kafka, &config.kafka.dlq_topic)
        .context("dead-letter topic")?;
    let dead_letters = if mysql.is_some() || clickhouse.is_some() || elasticsearch.is_some() {
        let _guard = runtime.enter();
        Some(
            iotflow_kafka::DeadLetterProducer::new(
                &config.kafka,
                ledger.clone(),
                metrics.dlq("sink-rejects", 0),
            )
            .context("dead-letter producer for rows the stores refuse")?,
        )
    } else {
        None
    };

    let live = if config.worktime.live {
        let rules = Rules {
            default_threshold: iotflow_worktime::scale(&config.worktime.threshold).with_context(
                || {
                    format!(
                        "worktime.threshold `{}` is not a decimal with at most 8 places",
                        config.worktime.threshold
                    )
                },
            )?,
            max_gap_ms: (config.worktime.max_gap_secs as i64).saturating_mul(1000),
        };
        let board = Arc::new(Mutex::new(iotflow_worktime::live::LiveBoard::new(rules)));
        metrics.add_route(
            "/worktime/live",
            iotflow_worktime::live::route(board.clone(), config.zone()?),
        );
        Some(board)
    } else {
        None
    };

    let fatal: iotflow_sink::Fatal = Arc::new(Mutex::new(None));
    let ctx = JobContext {
        config: config.clone(),
        metrics,
        lifecycle,
        fatal: fatal.clone(),
        runtime: runtime.handle().clone(),
        mysql,
        clickhouse,
        elasticsearch,
        dead_letters,
        ledger,
        alarms,
        live,
        files: files.clone(),
    };
    tracing::info!(
        job = %config.job.name, job_id = %job_id, workers = cluster.workers, processes = cluster.processes, process = cluster.process,
        "starting"
    );
    let startup_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let startup = startup_error.clone();
    if cluster.processes > 1 {
        cluster::exit_when_a_peer_is_lost(cluster.addresses()?);
        ctx.metrics
            .set_readiness(false, "forming the cluster: connecting to the peers");
    }
    let (allocators, comms) = cluster::allocators(&cluster)?;
    ctx.metrics.set_readiness(
        false,
        "loading: waiting for the first epoch to pass every sink",
    );
    let ready_metrics = ctx.metrics.clone();
    let ready_workers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = cluster.workers;
    let cluster_size = cluster.processes;
    let first_epoch = iotflow_kafka::epoch_of(SystemTime::now(), config.job.epoch_ms.max(1));
    let guards = timely::execute::execute_from(
        allocators,
        comms,
        timely::WorkerConfig::default(),
        move |worker| {
            // Timely keeps stepping a worker's dataflows after its closure returns; a failed sink
            // holds its capabilities forever, so on failure the dataflows are dropped, not drained.
            //
            // In a cluster, a failed process exits from here instead: finishing its workers would
            // send its peers a clean end-of-stream, after which they wait forever for progress
            // it will never make. Exiting closes the connections without one, so the peers stop
            // on the lost process (status 3) and the orchestrator restarts the cluster, from the
            // committed offsets.
            let abandon = |worker: &mut timely::worker::Worker| {
                if cluster_size > 1 {
                    let failure = startup
                        .lock()
                        .expect("lock")
                        .clone()
                        .or_else(|| ctx.fatal.lock().expect("fatal lock").clone())
                        .unwrap_or_default();
                    tracing::error!("{failure}; stopping this process (its peers stop on it); a restart of the cluster resumes from the committed offsets");
                    eprintln!("iotflow: error: {failure}; offsets were not committed past the failed data, a restart of the cluster resumes from there");
                    std::process::exit(1);
                }
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
            };
            let probe = match build(worker, &ctx) {
                Ok(p) => p,
                Err(e) => {
                    let message = format!("worker {}: {e:#}", worker.index());
                    startup.lock().expect("lock").get_or_insert(message);
                    ctx.lifecycle.stop.store(true, Ordering::SeqCst);
                    abandon(worker);
                    return;
                }
            };
            if cluster_size > 1 {
                crate::stop_relay::install(worker, ctx.lifecycle.clone(), probe.clone());
            }
            let mut ready = false;
            let mut draining = false;
            while !probe.done() {
                if !ready && !probe.less_equal(&first_epoch) {
                    ready = true;
                    if ready_workers.fetch_add(1, Ordering::SeqCst) + 1 == workers {
                        ready_metrics.set_readiness(true, "running");
                    }
                }
                if !draining && ctx.lifecycle.stop.load(Ordering::SeqCst) {
                    draining = true;
                    ready_metrics.set_readiness(
                        false,
                        "draining: stop requested, committing what the sinks stored",
                    );
                }
                if ctx.fatal.lock().expect("fatal lock").is_some()
                    || startup.lock().expect("lock").is_some()
                {
                    abandon(worker);
                    return;
                }
                worker.step_or_park(Some(Duration::from_millis(50)));
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("starting timely workers: {e}"))?;
    for result in guards.join() {
        if let Err(e) = result {
            bail!("a worker failed: {e}");
        }
    }
    if let Some(e) = startup_error.lock().expect("lock").take() {
        bail!("{e}");
    }
    if let Some(e) = fatal.lock().expect("fatal lock").take() {
        if files.is_some() {
            bail!("{e}; re-running the same input writes nothing twice");
        }
        bail!("{e}; offsets were not committed past the failed data, a restart resumes from there");
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Some(input) = files {
        let s = &input.summary;
        let (read, lines, bad) = (
            s.files.load(Ordering::SeqCst),
            s.lines.load(Ordering::SeqCst),
            s.bad_lines.load(Ordering::SeqCst),
        );
        let assigned = (0..cluster.workers)
            .map(|w| {
                let index = cluster.process * cluster.workers + w;
                iotflow_file::assigned(&input.files, index, cluster.workers * cluster.processes)
                    .len()
            })
            .sum::<usize>();
        tracing::info!(files = read, assigned, lines, bad_lines = bad, "input read");
        println!("input: {read} of {assigned} files read, {lines} lines, {bad} bad lines (in the dead-letter topic)");
        if let Some(e) = s.error() {
            bail!("{e}; the lines before it are written, re-running the same input writes nothing twice");
        }
        if s.interrupted.load(Ordering::SeqCst) {
            bail!("stopped before the end of the input; re-running the same input writes nothing twice");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_port_moves_with_the_process() {
        assert_eq!(
            iotflow_metrics::process_address("127.0.0.1:9249", 2).unwrap(),
            "127.0.0.1:9251"
        );
        assert_eq!(
            iotflow_metrics::process_address("127.0.0.1:0", 2).unwrap(),
            "127.0.0.1:0"
        );
        assert!(iotflow_metrics::process_address("nope", 0).is_err());
    }
}
