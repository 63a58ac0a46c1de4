//! The streaming job that replaces Flink's `Kafka2Mysql`: Kafka readings are parsed, enriched
//! with the device dimension and written to the sinks; offsets are committed only once every
//! sink has durably written everything before them.
//!
//! [`dataflow`] is the graph, top to bottom; [`run`] sets up the process around it.

mod context;
pub mod dataflow;
mod rejects;
mod run;

pub use context::JobContext;
pub use run::{run, ClusterArgs};
