//! Kafka for iotflow: the source operator whose offsets are committed only when the dataflow
//! has finished with them, and the dead-letter sink.
//!
//! Timestamps are epochs of wall-clock time (`epoch_ms` wide, in milliseconds since the Unix
//! epoch), the same on every worker of every process. A source emits what it reads under the
//! current epoch and, when the epoch closes, remembers each partition's next offset. When the
//! probe after the sinks shows an epoch complete, every record read in it or before has been
//! durably written, and those offsets are committed. Nothing else commits: auto-commit is off
//! and no consumer-group rebalancing runs inside the cluster (partitions are assigned to
//! workers by `partition % workers`).

mod client;
mod dlq;
mod ledger;
mod parse;
mod source;

pub use client::{client_config, KafkaError};
pub use dlq::{DeadLetterProducer, DeadLetterSink, DLQ_HEADERS};
pub use ledger::DeadLetterLedger;
pub use parse::{dead_letter, device_changes, ParseOptions, ParseReadings};
pub use source::{
    epoch_of, kafka_source, Backpressure, KafkaRecord, SourceHandle, SourceOptions, StartFrom,
};

/// The partitions of `partitions` that worker `index` of `peers` reads.
pub fn assigned_partitions(partitions: i32, index: usize, peers: usize) -> Vec<i32> {
    (0..partitions)
        .filter(|p| (*p as usize) % peers == index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_worker() {
        for peers in 1..6 {
            for parts in 0..20 {
                let mut all: Vec<i32> = (0..peers)
                    .flat_map(|w| assigned_partitions(parts, w, peers))
                    .collect();
                all.sort();
                assert_eq!(all, (0..parts).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_growing_topic_moves_no_partition() {
        // Partitions added while running go to new owners only: the old ones stay put, so a
        // worker extends its assignment without any other worker giving anything up.
        for peers in 1..6 {
            for w in 0..peers {
                for (before, after) in [(2, 6), (8, 9), (0, 4), (5, 40)] {
                    let old = assigned_partitions(before, w, peers);
                    let new = assigned_partitions(after, w, peers);
                    assert_eq!(&new[..old.len()], &old[..], "{peers} peers, worker {w}");
                    assert!(new[old.len()..].iter().all(|p| *p >= before));
                }
            }
        }
    }
}
