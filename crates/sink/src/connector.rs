//! What a sink crate hands the job: the one shape every connector has.
//!
//! A sink crate (`crates/sink-<name>`) exports `prepare(config, workers)`, which checks the
//! store at start (reachable, privileges, schema) and returns the crate's connector: a cheap,
//! clonable value implementing [`Connector`]. The job builds one writer per worker from it and
//! hands both to the generic sink operator; it needs to know nothing else about the store.

use iotflow_metrics::SinkMetrics;
use iotflow_model::Enriched;

use crate::{BatchWriter, RejectRecorder, SinkOptions};

/// A prepared sink: how to turn readings into its rows and how to build a worker's writer.
pub trait Connector: Clone + Send + Sync + 'static {
    /// The sink's [`BatchWriter`].
    type Writer: BatchWriter;

    /// Short name: the `sink` metric label, the config section, the dead letters' reason code
    /// (`{name}_rejected`) and the operator name (`{name}-sink`).
    fn name(&self) -> &'static str;

    /// The store as people name it (`MySQL`), for messages.
    fn store(&self) -> &'static str;

    /// The row the writer stores for one enriched reading.
    fn row(enriched: &Enriched) -> <Self::Writer as BatchWriter>::Row;

    /// Batch limits and retry backoff, from the sink's config section.
    fn options(&self) -> SinkOptions;

    /// One worker's writer. Rows the store refuses for their own reason go to `rejects`;
    /// `metrics` are the worker's sink metrics (for counters the writer keeps itself).
    fn writer(&self, rejects: RejectRecorder, metrics: &SinkMetrics) -> Self::Writer;
}
