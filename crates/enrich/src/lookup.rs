//! `.enrich_with(&dimension)`: the asymmetric lookup of readings in the replicated dimension.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::cursor::{cursor_list, Cursor, Navigable};
use differential_dataflow::trace::TraceReader;
use iotflow_metrics::EnrichMetrics;
use iotflow_model::{DeviceInfo, Enriched, Reading};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::Antichain;
use timely::PartialOrder;

use crate::DimensionTrace;

/// Joins readings with the device dimension.
pub trait EnrichWith<'scope> {
    /// Each reading at time `t` waits until the dimension is complete through `t`, then is
    /// joined with its device's record as of `t` (`None` for an unknown device). Readings stay
    /// on their worker. Later dimension changes never touch readings already emitted.
    ///
    /// ```text
    /// readings.enrich_with(&dimension, metrics)   // StreamVec<Reading> -> StreamVec<Enriched>
    /// ```
    fn enrich_with(
        self,
        dimension: &Arranged<'scope, DimensionTrace>,
        metrics: EnrichMetrics,
    ) -> StreamVec<'scope, u64, Enriched>
    where
        Self: Sized,
    {
        self.enrich_with_pressure(dimension, metrics, Rc::new(Cell::new(0)))
    }

    /// [`EnrichWith::enrich_with`], counting the readings that wait for the dimension into
    /// `pressure` (the worker's back-pressure: its source pauses above a limit), so a
    /// dimension that lags (loading at start, a slow broadcast source) cannot make the stash
    /// grow without bound.
    fn enrich_with_pressure(
        self,
        dimension: &Arranged<'scope, DimensionTrace>,
        metrics: EnrichMetrics,
        pressure: Rc<Cell<usize>>,
    ) -> StreamVec<'scope, u64, Enriched>;
}

impl<'scope> EnrichWith<'scope> for StreamVec<'scope, u64, Reading> {
    fn enrich_with_pressure(
        self,
        dimension: &Arranged<'scope, DimensionTrace>,
        metrics: EnrichMetrics,
        pressure: Rc<Cell<usize>>,
    ) -> StreamVec<'scope, u64, Enriched> {
        let mut trace = Some(dimension.trace.clone());
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<Enriched>>, _, _, _, _>(
            dimension.stream.clone(),
            Pipeline,
            Pipeline,
            "enrich",
            move |_cap, _info| {
                let mut stash: BTreeMap<u64, (Capability<u64>, Vec<Reading>)> = BTreeMap::new();
                // The dimension is complete (in the trace) for times not beyond this.
                let mut upper = Antichain::from_elem(0u64);
                let mut devices = 0i64;
                let mut stashed = 0usize;
                move |(readings, reading_frontier), (spans, _), output| {
                    readings.for_each(|cap, data| {
                        let Some(t) = cap.least().copied() else {
                            return;
                        };
                        let entry = stash.entry(t).or_insert_with(|| {
                            (cap.retain_least(0).expect("non-empty stamp"), Vec::new())
                        });
                        pressure.set(pressure.get() + data.len());
                        stashed += data.len();
                        entry.1.append(data);
                    });
                    spans.for_each(|_cap, data| {
                        for span in data.drain(..) {
                            upper.clone_from(span.upper());
                            if let Some(batch) = span.inner {
                                let mut c = batch.cursor();
                                while c.key_valid(&batch) {
                                    while c.val_valid(&batch) {
                                        c.map_times(&batch, |_, d| {
                                            devices += *d;
                                            metrics.updates.inc_by(d.unsigned_abs());
                                        });
                                        c.step_val(&batch);
                                    }
                                    c.step_key(&batch);
                                }
                                metrics.devices.set(devices);
                            }
                        }
                    });
                    let Some(tr) = trace.as_mut() else { return };
                    tr.advance_upper(&mut upper);

                    let ready: Vec<u64> = stash
                        .keys()
                        .copied()
                        .take_while(|t| !upper.less_equal(t))
                        .collect();
                    if !ready.is_empty() {
                        let batches = tr
                            .batches_through(upper.borrow())
                            .expect("dimension batches through its upper");
                        let (mut cursor, storage) = cursor_list(batches);
                        for t in ready {
                            let (cap, mut batch) = stash.remove(&t).expect("ready time is stashed");
                            pressure.set(pressure.get().saturating_sub(batch.len()));
                            stashed -= batch.len();
                            // Stable: a device's readings keep their arrival (partition)
                            // order, which the live work-time view relies on.
                            batch.sort_by(|a, b| a.pboxid.cmp(&b.pboxid));
                            cursor.rewind_keys(&storage);
                            let mut session = output.session(&cap);
                            let mut last: Option<(String, Option<Arc<DeviceInfo>>)> = None;
                            for reading in batch {
                                let device = match &last {
                                    Some((id, d)) if *id == reading.pboxid => d.clone(),
                                    _ => {
                                        let mut found = None;
                                        cursor.seek_key(&storage, &reading.pboxid);
                                        if cursor.get_key(&storage) == Some(&reading.pboxid) {
                                            while let Some(val) = cursor.get_val(&storage) {
                                                let mut count = 0i64;
                                                cursor.map_times(&storage, |time, diff| {
                                                    if time.less_equal(&t) {
                                                        count += *diff;
                                                    }
                                                });
                                                if count > 0 {
                                                    found = Some(val.clone());
                                                }
                                                cursor.step_val(&storage);
                                            }
                                        }
                                        last = Some((reading.pboxid.clone(), found.clone()));
                                        found
                                    }
                                };
                                metrics.enriched.inc();
                                if device.is_none() {
                                    metrics.unknown_device.inc();
                                }
                                session.give(Enriched { reading, device });
                            }
                        }
                    }

                    metrics.held.set(stashed as i64);

                    // Times we may still be asked about: stashed ones and future readings.
                    let mut hold = Antichain::new();
                    for t in reading_frontier.frontier().iter() {
                        hold.insert(*t);
                    }
                    if let Some(t) = stash.keys().next() {
                        hold.insert(*t);
                    }
                    if hold.is_empty() {
                        // No more readings: release the trace so the arrangement can free.
                        trace = None;
                    } else {
                        tr.set_logical_compaction(hold.borrow());
                        tr.set_physical_compaction(upper.borrow());
                    }
                }
            },
        )
    }
}
