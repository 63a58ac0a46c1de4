//! Parse + enrich in-process on one timely worker, as the criterion bench
//! `benches/enrich.rs` (`parse_enrich_10k_devices`) measures it, for the end-to-end harness,
//! which cannot run criterion: the payloads are parsed in a `flat_map` and enriched with
//! `enrich_with` against a replicated dimension loaded (and settled) before the clock starts;
//! each pass sends every payload at a new timestamp and steps the worker until the probe has
//! passed it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use iotflow_enrich::{device_updates, replicate_dimension, EnrichWith};
use iotflow_model::{parse_reading, DeviceChange, DeviceInfo, ParseLimits, SourceRef, Zone};
use timely::dataflow::operators::vec::{Input, Map};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};

/// What [`parse_enrich`] measured.
#[derive(Clone, Debug)]
pub struct ParseEnrich {
    /// Wall time of each pass over the payloads.
    pub passes: Vec<Duration>,
    /// Readings enriched over all passes.
    pub enriched: usize,
    /// Of them, readings that found their device.
    pub known: usize,
}

impl ParseEnrich {
    /// The median pass.
    pub fn median(&self) -> Option<Duration> {
        let mut p = self.passes.clone();
        p.sort();
        p.get(p.len() / 2).copied()
    }
}

/// Runs `passes` passes of `payloads` through parse + enrich against `devices` on one worker
/// of this thread. Payloads that do not parse are dropped, as in the bench.
pub fn parse_enrich(payloads: &[Vec<u8>], devices: &[DeviceInfo], passes: usize) -> ParseEnrich {
    let payloads = payloads.to_vec();
    let devices = devices.to_vec();
    timely::execute_directly(move |worker| {
        let mut changes: InputHandleVec<u64, DeviceChange> = InputHandleVec::new();
        let mut payloads_in: InputHandleVec<u64, Vec<u8>> = InputHandleVec::new();
        let probe = ProbeHandle::new();
        let enriched = Rc::new(Cell::new(0usize));
        let known = Rc::new(Cell::new(0usize));
        worker.dataflow::<u64, _, _>(|scope| {
            let dimension = replicate_dimension(device_updates(scope.input_from(&mut changes)));
            let limits = ParseLimits::default();
            let mut offset = 0i64;
            let (count, hits) = (enriched.clone(), known.clone());
            scope
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
                })
                .enrich_with(&dimension, iotflow_metrics::detached().enrich("enrich", 0))
                .inspect_core(move |event| {
                    if let Ok((_, batch)) = event {
                        count.set(count.get() + batch.len());
                        hits.set(hits.get() + batch.iter().filter(|e| e.device.is_some()).count());
                    }
                })
                .probe_with(&probe);
        });
        for device in devices {
            changes.send(DeviceChange::Upsert(device));
        }
        let mut time = 1u64;
        let mut advance =
            |worker: &mut timely::worker::Worker,
             changes: &mut InputHandleVec<u64, DeviceChange>,
             payloads_in: &mut InputHandleVec<u64, Vec<u8>>| {
                changes.advance_to(time);
                payloads_in.advance_to(time);
                while probe.less_than(&time) {
                    worker.step();
                }
                time += 1;
            };
        advance(worker, &mut changes, &mut payloads_in);
        let mut times = Vec::new();
        for _ in 0..passes.max(1) {
            // The copy is made before the clock starts, as criterion's `iter_batched` does.
            let batch = payloads.clone();
            let start = Instant::now();
            for p in batch {
                payloads_in.send(p);
            }
            advance(worker, &mut changes, &mut payloads_in);
            times.push(start.elapsed());
        }
        ParseEnrich {
            passes: times,
            enriched: enriched.get(),
            known: known.get(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reading_is_parsed_and_enriched_once_per_pass() {
        let payloads = crate::payloads(3_000, 50, 3);
        // Devices 0..40 of the 50 the readings come from: some readings find no device.
        let devices = iotflow_gen::devices(40, 3);
        let m = parse_enrich(&payloads, &devices, 3);
        assert_eq!(m.passes.len(), 3);
        assert_eq!(m.enriched, 9_000);
        assert!(m.known < m.enriched && m.known > 0, "{m:?}");
        assert!(m.median().is_some_and(|d| d > Duration::ZERO));
    }
}
