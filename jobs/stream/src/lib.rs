//! The streaming job that replaces Flink's `Kafka2Mysql`: Kafka readings are parsed, enriched
//! with the device dimension and written to the sinks; offsets are committed only once every
//! sink has durably written everything before them. With `--input` the readings come from
//! JSON-lines files instead (`iotflow-file`), through the same graph.
//!
//! [`dataflow`] is the graph, top to bottom; [`run`] sets up the process around it.

pub mod cluster;
mod context;
pub mod dataflow;
mod rejects;
mod run;
mod stop_relay;

pub use cluster::ClusterArgs;
pub use context::{FileInput, JobContext};
pub use run::run;
