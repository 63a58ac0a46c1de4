//! The streaming job's graph, one worker's view:
//!
//! ```text
//! iot-topic ──kafka-source──parse──┬─ readings ──enrich──┬─ mysql-sink ─────────┐
//!                                  │                     ├─ clickhouse-sink ────┤
//!                                  │                     └─ elasticsearch-sink ─┤ (refused
//!                                  │                                            │  documents:
//!                                  └─ dead letters ─── dead-letter-sink ────────┼─ dead letters)
//! iot-broadcast ──broadcast-source──device-upsert──broadcast──arrange ──────────┴─ probe ─▶ commits
//! ```
//!
//! Each enabled sink is optional; the probe sees every one of them.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use differential_dataflow::Hashable;
use iotflow_config::Config;
use iotflow_enrich::{device_updates, replicate_dimension, EnrichWith};
use iotflow_kafka::{
    kafka_source, DeadLetterLedger, DeadLetterProducer, DeadLetterSink, ParseOptions,
    ParseReadings, SourceHandle, SourceOptions, StartFrom,
};
use iotflow_metrics::{Metrics, RateLimitedLog};
use iotflow_model::{parse_device_record, DeadLetter, DeviceChange, SourceRef};
use iotflow_sink::{Connector, Fatal, RejectRecorder, Rejected, Rejects, SinkBatches, SinkOptions};
use iotflow_sink_clickhouse::ClickhouseWriter;
use iotflow_sink_elasticsearch::ElasticsearchWriter;
use iotflow_sink_mysql::MysqlConnector;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Inspect, Probe};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// What every worker of a process shares.
#[derive(Clone)]
pub struct JobContext {
    /// The configuration.
    pub config: Config,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Drain/stop coordination.
    pub lifecycle: Arc<SourceHandle>,
    /// The first definite sink error.
    pub fatal: Fatal,
    /// The tokio runtime sinks write on.
    pub runtime: tokio::runtime::Handle,
    /// The checked MySQL sink (when it is enabled).
    pub mysql: Option<MysqlConnector>,
    /// ClickHouse client, and whether the server takes insert deduplication tokens (when the
    /// ClickHouse sink is enabled).
    pub clickhouse: Option<(iotflow_sink_clickhouse::Client, bool)>,
    /// Elasticsearch connection (when the Elasticsearch sink is enabled).
    pub elasticsearch: Option<ElasticsearchContext>,
    /// Where rows a store refused go (when any sink is enabled).
    pub dead_letters: Option<DeadLetterProducer>,
    /// Which dead letters are already in the dead-letter topic (read back at start).
    pub ledger: Arc<DeadLetterLedger>,
    /// The live work-time view (when `worktime.live` is on).
    pub live: Option<Arc<std::sync::Mutex<crate::live::LiveBoard>>>,
}

/// What the Elasticsearch sinks of a process share.
#[derive(Clone, Debug)]
pub struct ElasticsearchContext {
    /// The checked connection.
    pub connection: iotflow_sink_elasticsearch::Connection,
}

/// The `rejects` callback of a sink's writer: each row the store refused becomes a dead letter
/// (the row as the sink would have stored it as payload, the server's reason in the headers,
/// reason code `{sink}_rejected`), and the write waits for the broker's acknowledgement.
fn sink_rejects(
    sink: &'static str,
    store: &'static str,
    dead_letters: DeadLetterProducer,
    topic: String,
    recent: iotflow_metrics::RecentDeadLetters,
) -> Rejects {
    let code = format!("{sink}_rejected");
    Arc::new(move |r: Rejected| {
        let dead_letters = dead_letters.clone();
        recent.note(
            &code,
            &r.reason,
            &format!("{topic}/{}/{}", r.src_partition, r.src_offset),
        );
        let letter = DeadLetter {
            payload: r.document.into_bytes(),
            truncated: false,
            reason: format!("{store} refused the row for {}: {}", r.target, r.reason),
            reason_code: code.clone(),
            topic: topic.clone(),
            source: SourceRef {
                partition: r.src_partition,
                offset: r.src_offset,
            },
            kafka_ts_ms: r.kafka_ts_ms,
        };
        Box::pin(async move { dead_letters.send(&letter).await })
    })
}

/// Builds the graph on `worker`; the returned probe is done when the job has finished.
pub fn build(worker: &mut Worker, ctx: &JobContext) -> anyhow::Result<ProbeHandle<u64>> {
    let index = worker.index();
    let c = &ctx.config;
    let m = &ctx.metrics;
    let probe = ProbeHandle::new();
    let pressure = Rc::new(Cell::new(0usize));
    let zone = c.zone()?;
    // Rows each enabled sink may hold before the source pauses (a row held by two sinks
    // counts twice).
    let hold = |b: &iotflow_config::BatchConfig| b.max_rows * (b.max_in_flight + 1) * 2;
    let max_pending_rows = [
        ctx.mysql.as_ref().map(|_| hold(&c.mysql.batch)),
        ctx.clickhouse.as_ref().map(|_| hold(&c.clickhouse.batch)),
        ctx.elasticsearch
            .as_ref()
            .map(|_| hold(&c.elasticsearch.batch)),
    ]
    .into_iter()
    .flatten()
    .sum::<usize>()
    .max(hold(&c.mysql.batch));
    // Readings waiting for the dimension (an epoch's worth normally) and dead letters awaiting
    // the broker: a budget of their own.
    let stashed = Rc::new(Cell::new(0usize));
    worker.dataflow::<u64, _, _>(|scope| -> anyhow::Result<()> {
        // Readings: committed offsets, commit when the probe says so.
        let records = kafka_source(
            scope,
            &c.kafka,
            SourceOptions {
                name: "kafka-source".into(),
                topic: c.kafka.topic.clone(),
                start: StartFrom::Committed,
                commit: true,
                wait_for_catch_up: false,
                epoch_ms: c.job.epoch_ms,
                max_poll_records: c.kafka.max_poll_records,
                idle_exit: (c.job.idle_exit_secs > 0)
                    .then(|| Duration::from_secs(c.job.idle_exit_secs)),
                max_pending_rows,
                finish_after: None,
                dead_letters: Some(ctx.ledger.clone()),
                stashed: Some((stashed.clone(), c.job.max_stashed_readings)),
            },
            m.source("kafka-source", index),
            Some(probe.clone()),
            pressure.clone(),
            ctx.lifecycle.clone(),
        )?;
        // Done once every reader of the cluster has finished: then the dimension may stop.
        let readers = ProbeHandle::new();
        let records = records.probe_with(&readers);

        // Device dimension: replayed from the beginning, complete before time moves.
        let device_records = kafka_source(
            scope,
            &c.kafka,
            SourceOptions {
                name: "broadcast-source".into(),
                topic: c.kafka.broadcast_topic.clone(),
                start: StartFrom::Beginning,
                commit: false,
                wait_for_catch_up: true,
                epoch_ms: c.job.epoch_ms,
                max_poll_records: c.kafka.max_poll_records,
                idle_exit: None,
                max_pending_rows: usize::MAX,
                finish_after: Some(readers),
                dead_letters: None,
                stashed: None,
            },
            m.source("broadcast-source", index),
            None,
            Rc::new(Cell::new(0)),
            ctx.lifecycle.clone(),
        )?;
        let broadcast_topic = c.kafka.broadcast_topic.clone();
        let mut log = RateLimitedLog::new(Duration::from_secs(5));
        let changes = device_records.flat_map(move |r| -> Option<DeviceChange> {
            match parse_device_record(r.key.as_deref(), r.payload.as_deref()) {
                Ok(change) => Some(change),
                Err(e) => {
                    log.warn(|| {
                        format!(
                            "ignored device record {broadcast_topic}/{}/{}: {e}",
                            r.partition, r.offset
                        )
                    });
                    None
                }
            }
        });
        let dimension = replicate_dimension(device_updates(changes));

        let (readings, dead_letters) = records.parse_readings(
            ParseOptions {
                topic: c.kafka.topic.clone(),
                zone,
                limits: c.parse_limits(),
                dlq_max_payload_bytes: c.kafka.dlq_max_payload_bytes,
            },
            m.parse("parse", index),
        );
        // The web UI shows the latest reasons.
        let recent = m.recent_dead_letters();
        let dead_letters = dead_letters.inspect(move |l| {
            recent.note(
                &l.reason_code,
                &l.reason,
                &format!("{}/{}/{}", l.topic, l.source.partition, l.source.offset),
            )
        });
        let mut done = vec![DeadLetterSink::build(
            dead_letters,
            &c.kafka,
            ctx.ledger.clone(),
            m.dlq("dead-letter-sink", index),
            stashed.clone(),
            m.buffered("dead-letter-sink", index),
        )?];

        let enriched =
            readings.enrich_with_pressure(&dimension, m.enrich("enrich", index), stashed.clone());

        if let Some(board) = &ctx.live {
            // Work time, live: one worker per device (readings exchanged by device id).
            // Timely delivers different times in any order: readings wait until their time is
            // complete and are taken time by time, so a device's readings are taken in the
            // order its partition delivered them.
            let board = board.clone();
            let mut stash: std::collections::BTreeMap<u64, Vec<crate::live::LivePoint>> =
                Default::default();
            enriched.clone().map(|e| crate::live::live_point(&e)).sink(
                Exchange::new(|p: &crate::live::LivePoint| p.0.hashed()),
                "worktime-live",
                move |(input, frontier)| {
                    input.for_each(|stamp, data| {
                        if let Some(t) = stamp.least().copied() {
                            stash.entry(t).or_default().append(data);
                        }
                    });
                    while let Some(entry) = stash.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let points = entry.remove();
                        let mut board = board.lock().expect("live board lock");
                        for point in points {
                            board.push(point);
                        }
                    }
                },
            );
        }

        // Each sink's refused rows: to the dead letters, counted per sink and worker.
        let recorder = |sink: &'static str, store: &'static str, operator: &str| {
            let recorder = RejectRecorder::none(sink);
            match &ctx.dead_letters {
                Some(dl) => recorder
                    .to(sink_rejects(
                        sink,
                        store,
                        dl.counting(m.dlq(operator, index)),
                        c.kafka.topic.clone(),
                        m.recent_dead_letters(),
                    ))
                    .counting(m.sink(sink, operator, index).items_rejected),
                None => recorder,
            }
        };
        if let Some(connector) = &ctx.mysql {
            let metrics = m.sink("mysql", "mysql-sink", index);
            done.push(
                enriched
                    .clone()
                    .map(|e| MysqlConnector::row(&e))
                    .sink_batches(
                        connector.writer(recorder("mysql", "MySQL", "mysql-sink"), &metrics),
                        connector.options(),
                        ctx.runtime.clone(),
                        metrics,
                        pressure.clone(),
                        ctx.fatal.clone(),
                    ),
            );
        }
        if let Some((client, dedup_tokens)) = &ctx.clickhouse {
            done.push(
                enriched
                    .clone()
                    .map(|e| iotflow_sink_clickhouse::Row::from(&e))
                    .sink_batches(
                        ClickhouseWriter::new(client.clone(), &c.clickhouse.table)
                            .with_dedup_tokens(*dedup_tokens)
                            .with_timeout(Duration::from_millis(c.clickhouse.write_timeout_ms))
                            .with_rejects(recorder("clickhouse", "ClickHouse", "clickhouse-sink")),
                        SinkOptions {
                            sink: "clickhouse".into(),
                            batch: (&c.clickhouse.batch).into(),
                            retry: (&c.clickhouse.retry).into(),
                        },
                        ctx.runtime.clone(),
                        m.sink("clickhouse", "clickhouse-sink", index),
                        pressure.clone(),
                        ctx.fatal.clone(),
                    ),
            );
        }
        if let Some(es) = &ctx.elasticsearch {
            let sink_metrics = m.sink("elasticsearch", "elasticsearch-sink", index);
            let writer = ElasticsearchWriter::new(
                es.connection.clone(),
                &c.elasticsearch.index_prefix,
                sink_rejects(
                    "elasticsearch",
                    "Elasticsearch",
                    ctx.dead_letters
                        .as_ref()
                        .expect("a dead-letter producer when a sink is enabled")
                        .counting(m.dlq("elasticsearch-sink", index)),
                    c.kafka.topic.clone(),
                    m.recent_dead_letters(),
                ),
            )
            .with_item_retry(
                c.elasticsearch.item_attempts,
                iotflow_sink::RetryPolicy {
                    initial: Duration::from_millis(c.elasticsearch.retry.initial_backoff_ms),
                    max: Duration::from_millis(
                        c.elasticsearch
                            .retry
                            .max_backoff_ms
                            .min(2_000)
                            .max(c.elasticsearch.retry.initial_backoff_ms),
                    ),
                },
            )
            .with_counters(
                sink_metrics.items_rejected.clone(),
                sink_metrics.items_retried.clone(),
            );
            done.push(
                enriched
                    .clone()
                    .map(|e| iotflow_sink_elasticsearch::Row::from(&e))
                    .sink_batches(
                        writer,
                        SinkOptions {
                            sink: "elasticsearch".into(),
                            batch: (&c.elasticsearch.batch).into(),
                            retry: (&c.elasticsearch.retry).into(),
                        },
                        ctx.runtime.clone(),
                        sink_metrics,
                        pressure.clone(),
                        ctx.fatal.clone(),
                    ),
            );
        }
        if done.len() == 1 {
            // No sink enabled: the probe still needs to see enrichment complete.
            done.push(enriched.map(|_| ()));
        }
        scope.concatenate(done).probe_with(&probe);
        Ok(())
    })?;
    Ok(probe)
}
