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
//! With `[alarms] enabled`, the enriched readings also go (exchanged by device) to the `alarms`
//! operator, whose checkpoints (`alarm-checkpoint`: events to `iot-alarms`, episodes and state
//! to MySQL) the probe sees like a sink's writes.
//!
//! Each enabled sink is optional; the probe sees every one of them. Operators and sinks are
//! built by their crates; this file only wires them. With `--input` a `file-source` takes the
//! place of the `kafka-source` (same records, the file as partition, the line's byte offset as
//! offset; see docs/file-source.md).

use std::cell::Cell;
use std::rc::Rc;

use iotflow_alarms_flow::Alarms;
use iotflow_enrich::{device_updates, replicate_dimension, EnrichWith};
use iotflow_file::{file_source, FileSourceOptions, FILE_TOPIC};
use iotflow_kafka::SourceOptions;
use iotflow_kafka::{device_changes, kafka_source, DeadLetterSink, ParseOptions, ParseReadings};
use iotflow_sink::{SinkEnv, SinkTo};
use iotflow_worktime::live::LiveWorkTime;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::{rejects, JobContext};

/// Builds the graph on `worker`; the returned probe is done when the job has finished.
pub fn build(worker: &mut Worker, ctx: &JobContext) -> anyhow::Result<ProbeHandle<u64>> {
    let (c, m, w) = (&ctx.config, &ctx.metrics, worker.index());
    let probe = ProbeHandle::new();
    // The source topic named in dead letters: file input has its own.
    let source_topic = match &ctx.files {
        Some(_) => FILE_TOPIC.to_string(),
        None => c.kafka.topic.clone(),
    };
    let sinks = SinkEnv {
        worker: w,
        runtime: ctx.runtime.clone(),
        metrics: m.clone(),
        pressure: Rc::new(Cell::new(0)),
        fatal: ctx.fatal.clone(),
        rejects: (ctx.dead_letters.clone())
            .map(|dl| rejects::to_dead_letters(dl, source_topic.clone(), m.clone(), w)),
    };
    // Readings waiting for the dimension and dead letters awaiting the broker: a budget of
    // their own, apart from the sinks' (`held_rows`).
    let stashed = Rc::new(Cell::new(0usize));
    let parse = match &ctx.files {
        Some(_) => ParseOptions::files(c, FILE_TOPIC)?,
        None => ParseOptions::readings(c)?,
    };
    worker.dataflow::<u64, _, _>(|scope| -> anyhow::Result<()> {
        let records = match &ctx.files {
            None => kafka_source(
                scope,
                &c.kafka,
                SourceOptions::readings(c, ctx.held_rows(), ctx.ledger.clone(), stashed.clone()),
                m.source("kafka-source", w),
                Some(probe.clone()),
                sinks.pressure.clone(),
                ctx.lifecycle.clone(),
            )?,
            Some(input) => {
                // No commit bounds what an earlier run of the same files wrote: the worker's
                // files' dead letters are read back from the start of their partitions.
                let positions: Vec<(i32, i64, String)> =
                    iotflow_file::assigned(&input.files, w, scope.peers())
                        .iter()
                        .map(|f| (f.partition, 0, String::new()))
                        .collect();
                ctx.ledger.load(&c.kafka, FILE_TOPIC, &positions)?;
                let options = FileSourceOptions {
                    epoch_ms: c.job.epoch_ms,
                    max_poll_records: c.kafka.max_poll_records,
                    max_pending_rows: ctx.held_rows(),
                    stashed: Some((stashed.clone(), c.job.max_stashed_readings)),
                };
                file_source(
                    scope,
                    &input.files,
                    options,
                    m.source("file-source", w),
                    sinks.pressure.clone(),
                    ctx.lifecycle.clone(),
                    input.summary.clone(),
                )
            }
        };
        // The dimension may stop once every reader of the cluster has finished.
        let readers = ProbeHandle::new();
        let records = records.probe_with(&readers);
        let devices = kafka_source(
            scope,
            &c.kafka,
            SourceOptions::dimension(c, readers.clone()),
            m.source("broadcast-source", w),
            None,
            Rc::new(Cell::new(0)),
            ctx.lifecycle.clone(),
        )?;
        let rule_sets = match &ctx.alarms {
            Some(_) if !c.alarms.rules_topic.is_empty() => {
                let records = kafka_source(
                    scope,
                    &c.kafka,
                    SourceOptions::rules(c, readers.clone()),
                    m.source("rules-source", w),
                    None,
                    Rc::new(Cell::new(0)),
                    ctx.lifecycle.clone(),
                )?;
                Some(iotflow_alarms_flow::rule_sets(
                    records,
                    c.alarms.rules_topic.clone(),
                ))
            }
            _ => None,
        };
        let changes = device_changes(devices, c.kafka.broadcast_topic.clone());
        let dimension = replicate_dimension(device_updates(changes));

        let (readings, letters) = records.parse_readings(parse, m.parse("parse", w));
        let letters = match &ctx.files {
            Some(input) => rejects::from_files(letters, input.files.clone(), input.summary.clone()),
            None => letters,
        };
        let letters = rejects::noted(letters, m.recent_dead_letters());
        let (dlq_metrics, dlq_held) = (
            m.dlq("dead-letter-sink", w),
            m.buffered("dead-letter-sink", w),
        );
        let dlq = DeadLetterSink::build(
            letters,
            &c.kafka,
            ctx.ledger.clone(),
            dlq_metrics,
            stashed.clone(),
            dlq_held,
        )?;

        let enriched = readings.enrich_with_pressure(&dimension, m.enrich("enrich", w), stashed);
        if let Some(board) = &ctx.live {
            enriched.clone().live_work_time(board.clone());
        }
        let mut stored = Vec::new();
        if let Some(s) = &ctx.mysql {
            stored.push(enriched.clone().sink_to(s, &sinks));
        }
        if let Some(s) = &ctx.clickhouse {
            stored.push(enriched.clone().sink_to(s, &sinks));
        }
        if let Some(s) = &ctx.elasticsearch {
            stored.push(enriched.clone().sink_to(s, &sinks));
        }
        if let Some(a) = &ctx.alarms {
            stored.push(
                enriched
                    .clone()
                    .alarms(rule_sets, a, &sinks, ctx.lifecycle.clone())
                    .map_err(|e| anyhow::anyhow!("alarms: {e}"))?,
            );
        }
        if stored.is_empty() {
            // No sink enabled: the probe still waits for enrichment.
            stored.push(enriched.map(|_| ()));
        }
        scope
            .concatenate(stored.into_iter().chain([dlq]))
            .probe_with(&probe);
        Ok(())
    })?;
    Ok(probe)
}
