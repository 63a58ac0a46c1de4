//! The dead-letter sink: rejected records go to the dead-letter topic with the original bytes
//! as payload and the reason and source coordinates as headers.
//!
//! Like every sink it holds its input capability until the broker acknowledged the write, so
//! offsets are not committed past a dead letter that is not yet durable. A crash between the
//! write and the commit makes the restarted job meet the record again: the
//! [`DeadLetterLedger`] read back at start knows its letter is already there, and it is not
//! written twice. Letters keep the key `topic/partition/offset` of their source record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotflow_config::KafkaConfig;
use iotflow_metrics::{IntCounter, IntGauge, RateLimitedLog};
use iotflow_model::DeadLetter;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureProducer, FutureRecord, ProducerContext,
};
use rdkafka::ClientContext;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::{client_config, DeadLetterLedger, KafkaError};

/// Header names on dead-letter records.
pub const DLQ_HEADERS: [&str; 7] = [
    "iotflow.reason",
    "iotflow.reason_code",
    "iotflow.source_topic",
    "iotflow.source_partition",
    "iotflow.source_offset",
    "iotflow.source_timestamp_ms",
    "iotflow.truncated",
];

/// The key (`topic/partition/offset` of the source record) and headers of a dead letter.
fn key_and_headers(l: &DeadLetter) -> (String, OwnedHeaders) {
    let key = format!("{}/{}/{}", l.topic, l.source.partition, l.source.offset);
    let values = [
        l.reason.clone(),
        l.reason_code.clone(),
        l.topic.clone(),
        l.source.partition.to_string(),
        l.source.offset.to_string(),
        l.kafka_ts_ms.map(|t| t.to_string()).unwrap_or_default(),
        l.truncated.to_string(),
    ];
    let mut headers = OwnedHeaders::new_with_capacity(values.len());
    for (k, v) in DLQ_HEADERS.iter().zip(values.iter()) {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    (key, headers)
}

/// Sends dead letters from async code (a sink's writer task) and reports each one's delivery:
/// for records a store refused after they were parsed, such as documents Elasticsearch
/// rejected. Same topic, key and headers as [`DeadLetterSink`]; one per process, shared.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    ledger: Arc<DeadLetterLedger>,
    written: IntCounter,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.ledger.topic())
            .finish_non_exhaustive()
    }
}

impl DeadLetterProducer {
    /// A producer to the ledger's topic, counting acknowledged letters into `written`.
    pub fn new(
        kafka: &KafkaConfig,
        ledger: Arc<DeadLetterLedger>,
        written: IntCounter,
    ) -> Result<Self, KafkaError> {
        let producer: FutureProducer = client_config(kafka)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|source| KafkaError::Client {
                brokers: kafka.brokers.clone(),
                source,
            })?;
        Ok(DeadLetterProducer {
            producer,
            ledger,
            written,
        })
    }

    /// The same producer, counting acknowledged letters into `written` (one counter per
    /// worker).
    pub fn counting(&self, written: IntCounter) -> Self {
        DeadLetterProducer {
            producer: self.producer.clone(),
            ledger: self.ledger.clone(),
            written,
        }
    }

    /// Sends `letter`; resolves once the broker acknowledged it (all in-sync replicas), or
    /// with the reason it was not.
    pub async fn send(&self, letter: &DeadLetter) -> Result<(), String> {
        if self.ledger.already_written(letter) {
            // Written before a restart, its record not yet committed then.
            return Ok(());
        }
        let (key, headers) = key_and_headers(letter);
        let topic = self.ledger.topic();
        let record = FutureRecord::to(topic)
            .key(key.as_bytes())
            .partition(self.ledger.partition_for(letter.source.partition))
            .payload(&letter.payload[..])
            .headers(headers);
        match self.producer.send(record, Duration::from_secs(30)).await {
            Ok(delivery) => {
                self.ledger
                    .acknowledged(delivery.partition, delivery.offset);
                self.written.inc();
                Ok(())
            }
            Err((e, _)) => Err(format!("dead-letter topic {topic}: {e}")),
        }
    }
}

type Acks = Arc<Mutex<Vec<(usize, Result<(i32, i64), String>)>>>;

struct DlqContext {
    acks: Acks,
}

impl ClientContext for DlqContext {}

impl ProducerContext for DlqContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let r = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.acks.lock().expect("acks lock").push((seq, r));
    }
}

/// Builder of the dead-letter sink operator.
#[derive(Debug)]
pub struct DeadLetterSink;

impl DeadLetterSink {
    /// Writes `letters` to the ledger's topic, each once (see [`DeadLetterLedger`]); the
    /// returned stream's frontier passes a time only once every dead letter at that time is
    /// acknowledged by the broker.
    ///
    /// Letters awaiting the broker count into `pressure` (the worker's back-pressure, so a
    /// slow dead-letter topic pauses the source instead of filling memory) and into `held`.
    pub fn build<'scope>(
        letters: StreamVec<'scope, u64, DeadLetter>,
        kafka: &KafkaConfig,
        ledger: Arc<DeadLetterLedger>,
        written: IntCounter,
        pressure: crate::Backpressure,
        held: IntGauge,
    ) -> Result<StreamVec<'scope, u64, ()>, KafkaError> {
        let acks: Acks = Default::default();
        let producer: BaseProducer<DlqContext> = client_config(kafka)
            // A dead letter is data: wait for every in-sync replica.
            .set("acks", "all")
            // Small batches of rare records; don't hold them long.
            .set("linger.ms", "5")
            // After this the delivery fails and the operator sends it again.
            .set("message.timeout.ms", "30000")
            .create_with_context(DlqContext { acks: acks.clone() })
            .map_err(|source| KafkaError::Client {
                brokers: kafka.brokers.clone(),
                source,
            })?;
        let topic = ledger.topic().to_string();
        let scope = letters.scope();
        Ok(letters.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "dead-letter-sink",
            move |_cap, info| {
                let activator = scope.activator_for(info.address);
                let mut seq = 0usize;
                let mut letters_by_seq: HashMap<usize, (u64, DeadLetter)> = HashMap::new();
                let mut to_send: VecDeque<usize> = VecDeque::new();
                let mut per_time: BTreeMap<u64, (Capability<u64>, usize)> = BTreeMap::new();
                let mut deferred_log = RateLimitedLog::new(Duration::from_secs(10));
                move |(input, frontier), _output| {
                    input.for_each(|cap, data| {
                        let Some(t) = cap.least().copied() else { return };
                        for letter in data.drain(..) {
                            if ledger.already_written(&letter) {
                                continue;
                            }
                            seq += 1;
                            pressure.set(pressure.get() + 1);
                            letters_by_seq.insert(seq, (t, letter));
                            to_send.push_back(seq);
                            let entry = per_time.entry(t).or_insert_with(|| {
                                (cap.retain_least(0).expect("non-empty stamp"), 0)
                            });
                            entry.1 += 1;
                        }
                    });
                    while let Some(s) = to_send.pop_front() {
                        let (_, l) = &letters_by_seq[&s];
                        let (key, headers) = key_and_headers(l);
                        let record = BaseRecord::with_opaque_to(&topic, s)
                            .key(key.as_bytes())
                            .partition(ledger.partition_for(l.source.partition))
                            .payload(&l.payload[..])
                            .headers(headers);
                        if let Err((e, _)) = producer.send(record) {
                            deferred_log
                                .warn(|| format!("dead-letter send to {topic} deferred: {e}"));
                            to_send.push_front(s);
                            break;
                        }
                    }
                    producer.poll(Duration::ZERO);
                    for (s, result) in std::mem::take(&mut *acks.lock().expect("acks lock")) {
                        match result {
                            Ok((partition, offset)) => {
                                ledger.acknowledged(partition, offset);
                                if let Some((t, _)) = letters_by_seq.remove(&s) {
                                    pressure.set(pressure.get().saturating_sub(1));
                                    written.inc();
                                    if let Some(e) = per_time.get_mut(&t) {
                                        e.1 -= 1;
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(%topic, "dead-letter delivery failed, sending again: {e}");
                                to_send.push_back(s);
                            }
                        }
                    }
                    held.set(letters_by_seq.len() as i64);
                    per_time.retain(|t, (_, n)| *n > 0 || frontier.less_equal(t));
                    if !letters_by_seq.is_empty() {
                        activator.activate_after(Duration::from_millis(5));
                    }
                }
            },
        ))
    }
}
