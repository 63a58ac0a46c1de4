//! Dead letters exactly once through crashes.
//!
//! A crash between a dead letter's write and the commit of its record's offset makes the
//! restarted job read the record again and write its letter a second time. The ledger stops
//! that: at start, each worker reads back the letters the dead-letter topic already holds for
//! its source partitions at or after their committed offsets, and every writer of dead letters
//! (the dead-letter sink, the stores' refused rows) skips a letter that is already there.
//!
//! * **One dead-letter partition per source partition**: every letter of source partition `s`
//!   goes to dead-letter partition `s % n`, so a worker reads back only the partitions its
//!   source partitions map to.
//! * **Where to start reading**: the commit of source partition `s` carries, as its offset
//!   metadata, the end of `s`'s dead-letter partition as this process knew it when the
//!   committed epoch closed. A letter of a later record is written after that epoch closed, so
//!   after every letter acknowledged before: reading from there finds them all. A broker that
//!   keeps no commit metadata (the local tansu does not) makes the read start at the
//!   partition's beginning instead: still exact, as slow as the partition is long (bounded by
//!   its retention).
//! * **Key**: a letter is `(source partition, source offset, reason code)`: a record refused by
//!   two stores has two letters, one per store.
//!
//! What remains: a letter whose delivery timed out (`message.timeout.ms`, 30 s) is sent again
//! by the sink; if the first attempt had in fact been stored, that letter is there twice. The
//! producers are not idempotent because the local broker does not implement it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotflow_config::KafkaConfig;
use iotflow_model::DeadLetter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::{client_config, KafkaError};

/// The prefix of the commit metadata the ledger writes.
const METADATA_PREFIX: &str = "iotflow-dlq:";

/// How long reading back one dead-letter partition may take before the start fails.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Which dead letters are already in the dead-letter topic; see the module docs.
#[derive(Debug)]
pub struct DeadLetterLedger {
    topic: String,
    partitions: i32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per dead-letter partition: the offset after the newest letter this process saw
    /// acknowledged.
    acked_end: HashMap<i32, i64>,
    /// Per source partition: the lower bound read from its commit metadata at start.
    floor: HashMap<i32, i64>,
    /// Letters already in the topic, per source partition: (source offset, reason code).
    existing: HashMap<i32, HashSet<(i64, String)>>,
}

impl DeadLetterLedger {
    /// The ledger of dead-letter topic `topic` (its partition count read from the broker).
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Arc<Self>, KafkaError> {
        let consumer: BaseConsumer =
            client_config(kafka)
                .create()
                .map_err(|source| KafkaError::Client {
                    brokers: kafka.brokers.clone(),
                    source,
                })?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(15))
            .map_err(|e| KafkaError::Metadata {
                topic: topic.to_string(),
                brokers: kafka.brokers.clone(),
                reason: e.to_string(),
            })?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32)
            .ok_or_else(|| KafkaError::Metadata {
                topic: topic.to_string(),
                brokers: kafka.brokers.clone(),
                reason: "the dead-letter topic does not exist or has no partitions".into(),
            })?;
        Ok(Arc::new(Self::with_partitions(topic, partitions)))
    }

    /// A ledger for a topic of `partitions` partitions, with nothing read back yet.
    pub fn with_partitions(topic: &str, partitions: i32) -> Self {
        DeadLetterLedger {
            topic: topic.to_string(),
            partitions: partitions.max(1),
            state: Mutex::default(),
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead-letter partition of the letters of `source_partition`.
    pub fn partition_for(&self, source_partition: i32) -> i32 {
        source_partition.rem_euclid(self.partitions)
    }

    /// A letter was acknowledged at `offset` of dead-letter partition `partition`.
    pub fn acknowledged(&self, partition: i32, offset: i64) {
        let mut s = self.state.lock().expect("ledger lock");
        let end = s.acked_end.entry(partition).or_insert(0);
        *end = (*end).max(offset + 1);
    }

    /// Whether `letter` is already in the topic (written before a restart).
    pub fn already_written(&self, letter: &DeadLetter) -> bool {
        let s = self.state.lock().expect("ledger lock");
        s.existing
            .get(&letter.source.partition)
            .is_some_and(|set| set.contains(&(letter.source.offset, letter.reason_code.clone())))
    }

    /// The commit metadata for `source_partition` now: a position of its dead-letter
    /// partition before which no letter of a record not yet read can be.
    pub fn commit_metadata(&self, source_partition: i32) -> String {
        let s = self.state.lock().expect("ledger lock");
        let d = self.partition_for(source_partition);
        let position = s
            .acked_end
            .get(&d)
            .copied()
            .unwrap_or(0)
            .max(s.floor.get(&source_partition).copied().unwrap_or(0));
        format!("{METADATA_PREFIX}{position}")
    }

    /// Reads back the letters of `source_topic`'s partitions in `committed` (partition,
    /// committed offset, commit metadata) at or after their committed offsets; returns how
    /// many it found. Call before any letter of those partitions is written.
    pub fn load(
        &self,
        kafka: &KafkaConfig,
        source_topic: &str,
        committed: &[(i32, i64, String)],
    ) -> Result<usize, KafkaError> {
        let mut by_dlq: BTreeMap<i32, Vec<(i32, i64, i64)>> = BTreeMap::new();
        for (p, offset, metadata) in committed {
            let floor = metadata
                .strip_prefix(METADATA_PREFIX)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            by_dlq
                .entry(self.partition_for(*p))
                .or_default()
                .push((*p, (*offset).max(0), floor));
        }
        let mut found = 0;
        for (d, sources) in by_dlq {
            let start = sources.iter().map(|s| s.2).min().unwrap_or(0);
            let letters = self.read_back(kafka, d, start, source_topic, &sources)?;
            found += letters.values().map(HashSet::len).sum::<usize>();
            let mut s = self.state.lock().expect("ledger lock");
            for (p, _, floor) in &sources {
                s.floor.insert(*p, *floor);
            }
            for (p, set) in letters {
                s.existing.entry(p).or_default().extend(set);
            }
        }
        Ok(found)
    }

    fn read_back(
        &self,
        kafka: &KafkaConfig,
        d: i32,
        start: i64,
        source_topic: &str,
        sources: &[(i32, i64, i64)],
    ) -> Result<HashMap<i32, HashSet<(i64, String)>>, KafkaError> {
        let fail = |reason: String| KafkaError::Metadata {
            topic: self.topic.clone(),
            brokers: kafka.brokers.clone(),
            reason,
        };
        let consumer: BaseConsumer = client_config(kafka)
            .set("group.id", "iotflow-dlq-ledger")
            .set("enable.auto.commit", "false")
            // The end of the partition (as a fetch response saw it) is where reading stops.
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|source| KafkaError::Client {
                brokers: kafka.brokers.clone(),
                source,
            })?;
        let (low, _high) = consumer
            .fetch_watermarks(&self.topic, d, Duration::from_secs(15))
            .map_err(|e| fail(format!("watermarks of partition {d}: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, d, Offset::Offset(start.max(low)))
            .expect("valid offset");
        consumer
            .assign(&tpl)
            .map_err(|e| fail(format!("reading back partition {d}: {e}")))?;
        let wanted: HashMap<i32, i64> = sources.iter().map(|(p, c, _)| (*p, *c)).collect();
        let mut out: HashMap<i32, HashSet<(i64, String)>> = HashMap::new();
        let began = Instant::now();
        let mut read = 0u64;
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    read += 1;
                    let Some(h) = m.headers() else { continue };
                    let header = |name: &str| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_string)
                    };
                    if header("iotflow.source_topic").as_deref() != Some(source_topic) {
                        continue;
                    }
                    let (Some(p), Some(o), Some(code)) = (
                        header("iotflow.source_partition").and_then(|v| v.parse::<i32>().ok()),
                        header("iotflow.source_offset").and_then(|v| v.parse::<i64>().ok()),
                        header("iotflow.reason_code"),
                    ) else {
                        continue;
                    };
                    if wanted.get(&p).is_some_and(|c| o >= *c) {
                        out.entry(p).or_default().insert((o, code));
                    }
                }
                Some(Err(RdKafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.topic, partition = d, "reading back dead letters: {e}")
                }
                None => {}
            }
            if began.elapsed() > READ_BACK_TIMEOUT {
                return Err(fail(format!(
                    "reading back partition {d} from offset {start}: no end after {READ_BACK_TIMEOUT:?} ({read} letters read)"
                )));
            }
        }
        tracing::info!(
            topic = %self.topic,
            partition = d,
            from = start.max(low),
            read,
            already_there = out.values().map(HashSet::len).sum::<usize>(),
            "read back the dead letters of records not yet committed"
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::SourceRef;

    fn letter(p: i32, o: i64, code: &str) -> DeadLetter {
        DeadLetter {
            payload: vec![],
            truncated: false,
            reason: String::new(),
            reason_code: code.into(),
            topic: "t".into(),
            source: SourceRef {
                partition: p,
                offset: o,
            },
            kafka_ts_ms: None,
        }
    }

    #[test]
    fn metadata_is_the_newest_acknowledged_end_or_the_floor() {
        let l = DeadLetterLedger::with_partitions("dlq", 2);
        assert_eq!(l.partition_for(5), 1);
        assert_eq!(l.commit_metadata(5), "iotflow-dlq:0");
        l.state.lock().unwrap().floor.insert(5, 40);
        assert_eq!(l.commit_metadata(5), "iotflow-dlq:40");
        l.acknowledged(1, 99);
        l.acknowledged(1, 50);
        assert_eq!(l.commit_metadata(5), "iotflow-dlq:100");
        assert_eq!(
            l.commit_metadata(4),
            "iotflow-dlq:0",
            "partition 0 saw nothing"
        );
    }

    #[test]
    fn a_letter_is_known_by_partition_offset_and_reason() {
        let l = DeadLetterLedger::with_partitions("dlq", 1);
        l.state
            .lock()
            .unwrap()
            .existing
            .entry(3)
            .or_default()
            .insert((7, "mysql_rejected".into()));
        assert!(l.already_written(&letter(3, 7, "mysql_rejected")));
        assert!(!l.already_written(&letter(3, 7, "clickhouse_rejected")));
        assert!(!l.already_written(&letter(3, 8, "mysql_rejected")));
        assert!(!l.already_written(&letter(2, 7, "mysql_rejected")));
    }
}
