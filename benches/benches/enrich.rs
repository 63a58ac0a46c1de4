//! Enrichment throughput on one timely worker: readings through `enrich_with` against a
//! replicated 10 000-device dimension (`device_updates` → `replicate_dimension`), loaded before
//! the measurement. Each iteration sends one batch of 100 000 readings at a new timestamp (one
//! epoch of a busy job) and steps the worker until the probe has passed it.
//!
//! `enrich` starts from parsed readings; `parse_enrich` starts from the JSON payloads and parses
//! them in a `flat_map` first, so the difference is the parser's share of the worker.
//!
//! Criterion runs inside `timely::execute_directly` (its own `main`, `harness = false`), because
//! the worker, the inputs and the probe must live across iterations.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use iotflow_benches::{payloads, readings};
use iotflow_enrich::{device_updates, replicate_dimension, EnrichWith};
use iotflow_model::{parse_reading, DeviceChange, ParseLimits, Reading, SourceRef, Zone};
use timely::dataflow::operators::vec::{Input, Map};
use timely::dataflow::operators::{Concat, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};

/// Devices in the dimension.
const DEVICES: usize = 10_000;
/// Readings per iteration.
const BATCH: u64 = 100_000;

fn main() {
    timely::execute_directly(|worker| {
        let mut criterion = Criterion::default().configure_from_args();
        let mut changes: InputHandleVec<u64, DeviceChange> = InputHandleVec::new();
        let mut readings_in: InputHandleVec<u64, Reading> = InputHandleVec::new();
        let mut payloads_in: InputHandleVec<u64, Vec<u8>> = InputHandleVec::new();
        let probe = ProbeHandle::new();
        let enriched = Rc::new(Cell::new(0usize));
        let known = Rc::new(Cell::new(0usize));

        worker.dataflow::<u64, _, _>(|scope| {
            let dimension = replicate_dimension(device_updates(scope.input_from(&mut changes)));
            let limits = ParseLimits::default();
            let mut offset = 0i64;
            let parsed = scope
                .input_from(&mut payloads_in)
                .flat_map(move |payload: Vec<u8>| {
                    offset += 1;
                    parse_reading(&payload, &Zone::Utc, &limits).ok().map(|r| {
                        r.into_reading(
                            SourceRef {
                                partition: 0,
                                offset,
                            },
                            None,
                        )
                    })
                });
            let (count, hits) = (enriched.clone(), known.clone());
            scope
                .input_from(&mut readings_in)
                .concat(parsed)
                .enrich_with(&dimension, iotflow_metrics::detached().enrich("enrich", 0))
                .inspect_core(move |event| {
                    if let Ok((_, batch)) = event {
                        count.set(count.get() + batch.len());
                        hits.set(hits.get() + batch.iter().filter(|e| e.device.is_some()).count());
                    }
                })
                .probe_with(&probe);
        });

        // Load the dimension at time 0 and let it settle.
        for device in iotflow_gen::devices(DEVICES, 42) {
            changes.send(DeviceChange::Upsert(device));
        }
        let mut time = 1u64;
        let mut advance =
            |worker: &mut timely::worker::Worker,
             changes: &mut InputHandleVec<u64, DeviceChange>,
             readings_in: &mut InputHandleVec<u64, Reading>,
             payloads_in: &mut InputHandleVec<u64, Vec<u8>>| {
                changes.advance_to(time);
                readings_in.advance_to(time);
                payloads_in.advance_to(time);
                while probe.less_than(&time) {
                    worker.step();
                }
                time += 1;
            };
        advance(worker, &mut changes, &mut readings_in, &mut payloads_in);

        let payloads = payloads(BATCH, DEVICES, 42);
        let readings = readings(&payloads, 1, None);

        let mut group = criterion.benchmark_group("enrich");
        group
            .throughput(Throughput::Elements(BATCH))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        group.bench_function("enrich_10k_devices", |b| {
            b.iter_batched(
                || readings.clone(),
                |batch| {
                    for r in batch {
                        readings_in.send(r);
                    }
                    advance(worker, &mut changes, &mut readings_in, &mut payloads_in);
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function("parse_enrich_10k_devices", |b| {
            b.iter_batched(
                || payloads.clone(),
                |batch| {
                    for p in batch {
                        payloads_in.send(p);
                    }
                    advance(worker, &mut changes, &mut readings_in, &mut payloads_in);
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
        criterion.final_summary();
        // Every reading came through, and every one found its device.
        assert_eq!(enriched.get() % BATCH as usize, 0);
        assert_eq!(known.get(), enriched.get());
    });
}
