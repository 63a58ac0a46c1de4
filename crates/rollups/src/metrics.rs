//! The rollups' metrics: `iotflow_rollup_*`, one set per process, shared by its workers.

use iotflow_metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, IntCounter, Opts};

/// The rollups' metrics of one process (clones share the counters).
#[derive(Clone)]
pub struct RollupMetrics {
    /// Rollup rows brought up to date (buckets of every grain, heat-map device-hours, tracks).
    pub updated: IntCounter,
    /// Of those, recomputed from stored rows because of late or replayed readings.
    pub recomputed: IntCounter,
    /// Time of one rollup transaction (and its ClickHouse copy).
    pub seconds: Histogram,
}

impl RollupMetrics {
    /// Registers the metrics in `metrics`' registry (once per process).
    pub fn register(metrics: &Metrics) -> RollupMetrics {
        let r = metrics.registry();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(
                Opts::new(name, help)
                    .const_label("job_name", metrics.job_name())
                    .const_label("job_id", metrics.job_id()),
            )
            .expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let updated = counter(
            "iotflow_rollup_rows_updated_total",
            "Rollup rows brought up to date after stored batches: buckets of every grain, heat-map device-hours and day tracks.",
        );
        let recomputed = counter(
            "iotflow_rollup_rows_recomputed_total",
            "Rollup rows recomputed from the stored readings because a batch brought late or replayed readings.",
        );
        let seconds = Histogram::with_opts(
            HistogramOpts::new(
                "iotflow_rollup_seconds",
                "Time of one rollup transaction after a stored batch, its ClickHouse copy included.",
            )
            .const_label("job_name", metrics.job_name())
            .const_label("job_id", metrics.job_id())
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(seconds.clone()))
            .expect("unique metric");
        RollupMetrics {
            updated,
            recomputed,
            seconds,
        }
    }
}
