//! What a sink crate hands the job: the one shape every connector has.
//!
//! A sink crate (`crates/sink-<name>`) exports `prepare(config, workers)`, which checks the
//! store at start (reachable, privileges, schema) and returns the crate's connector: a cheap,
//! clonable value implementing [`Connector`]. The job builds one writer per worker from it and
//! hands both to the generic sink operator; it needs to know nothing else about the store.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use iotflow_metrics::{Metrics, SinkMetrics};
use iotflow_model::Enriched;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::{BatchPolicy, BatchWriter, Fatal, RejectRecorder, Rejects, SinkBatches, SinkOptions};

/// A prepared sink: how to turn readings into its rows and how to build a worker's writer.
pub trait Connector: Clone + Send + Sync + 'static {
    /// The sink's [`BatchWriter`].
    type Writer: BatchWriter;

    /// Short name: the `sink` metric label, the config section, the dead letters' reason code
    /// (`{name}_rejected`) and the operator name (`{name}-sink`).
    fn name(&self) -> &'static str;

    /// The store as people name it (`MySQL`), for messages.
    fn store(&self) -> &'static str;

    /// The row the writer stores for one enriched reading (given away: a sink whose row is
    /// the reading keeps it as it is).
    fn row(enriched: Enriched) -> <Self::Writer as BatchWriter>::Row;

    /// Batch limits and retry backoff, from the sink's config section.
    fn options(&self) -> SinkOptions;

    /// One worker's writer. Rows the store refuses for their own reason go to `rejects`;
    /// `metrics` are the worker's sink metrics (for counters the writer keeps itself).
    fn writer(&self, rejects: RejectRecorder, metrics: &SinkMetrics) -> Self::Writer;
}

/// What every sink of one worker shares: the process's runtime and metrics, the worker's
/// back-pressure count, the job's fatal-error slot and where refused rows go.
#[derive(Clone)]
pub struct SinkEnv {
    /// The worker's index (the `worker` metric label).
    pub worker: usize,
    /// The tokio runtime writers run on.
    pub runtime: tokio::runtime::Handle,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Rows the worker's sinks hold (buffered or in flight): the source pauses above its budget.
    pub pressure: Rc<Cell<usize>>,
    /// The job's first definite error.
    pub fatal: Fatal,
    /// Where a sink's refused rows go, given its name, its store and its operator name; `None`
    /// keeps them in the recorder only (tests, tools).
    pub rejects: Option<RejectsFor>,
}

/// The [`Rejects`] of one sink: called with the sink's name, store and operator name.
pub type RejectsFor = Rc<dyn Fn(&'static str, &'static str, &str) -> Rejects>;

impl SinkEnv {
    /// The rows a sink with `batch` limits may hold before the source pauses: its batches in
    /// flight and one being filled, twice over for the rows the operator buffers meanwhile.
    pub fn held_rows(batch: &BatchPolicy) -> usize {
        batch.max_rows * (batch.max_in_flight + 1) * 2
    }
}

/// `.sink_to(&connector, &env)`: a prepared sink on a stream of enriched readings.
pub trait SinkTo<'scope> {
    /// Writes every reading of the stream through one writer of `connector`. The returned
    /// stream carries no data; its frontier passes a time once the store holds every row of
    /// that time (see [`SinkBatches::sink_batches`]).
    fn sink_to<C: Connector>(self, connector: &C, env: &SinkEnv) -> StreamVec<'scope, u64, ()>;
}

impl<'scope> SinkTo<'scope> for StreamVec<'scope, u64, Enriched> {
    fn sink_to<C: Connector>(self, connector: &C, env: &SinkEnv) -> StreamVec<'scope, u64, ()> {
        let name = connector.name();
        let operator = format!("{name}-sink");
        let metrics = env.metrics.sink(name, &operator, env.worker);
        let mut rejects = RejectRecorder::none(name);
        if let Some(to) = &env.rejects {
            rejects = rejects
                .to(to(name, connector.store(), &operator))
                .counting(metrics.items_rejected.clone());
        }
        let writer = connector.writer(rejects, &metrics);
        self.map(C::row).sink_batches(
            writer,
            connector.options(),
            env.runtime.clone(),
            metrics,
            env.pressure.clone(),
            env.fatal.clone(),
        )
    }
}
