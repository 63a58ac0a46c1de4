//! `iotflow mqtt-bridge`: MQTT → the readings topic, acknowledged in order, once.
//!
//! The bridge holds a persistent MQTT session (`clean_session = false`, a fixed client id) and
//! subscribes with QoS 1, so the broker keeps every message it has not acknowledged, across a
//! bridge crash, and queues what arrives while the bridge is away. Each message is sent to
//! Kafka keyed by its device id ([`key`]); the PUBACK goes to MQTT only after the Kafka
//! producer (idempotent, `acks=all`) reported the record durable, and in the order the messages
//! came. So a SIGKILL at any moment loses nothing: what Kafka did not acknowledge was not
//! acknowledged to MQTT, and the broker sends it again to the next session.
//!
//! Duplicates: a message Kafka stored whose PUBACK had not reached the broker (the bridge died
//! or lost its connection in between) comes again, with MQTT's DUP flag. The [`ledger`] knows
//! it (or, after a crash, finds it by reading the topic back) and the bridge acknowledges it
//! without a second copy in Kafka; the same check drops a device's own resend. What can still
//! duplicate (a lost ledger, a machine crash, a resend outside the window) is in
//! docs/mqtt.md.

#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use iotflow_config::Config;
use iotflow_metrics::{Metrics, RateLimitedLog};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};

pub mod key;
pub mod ledger;
mod metrics;

pub use key::{DeviceKey, Keyed};
pub use ledger::Ledger;
pub use metrics::BridgeMetrics;

/// Largest MQTT packet the bridge accepts (the readings parser refuses far smaller ones; this
/// only keeps a rogue publisher from making the bridge allocate without bound).
const MAX_PACKET_BYTES: usize = 4 * 1024 * 1024;

/// The Kafka header that carries the MQTT topic a message came from.
pub const TOPIC_HEADER: &str = "mqtt_topic";

/// The Kafka header naming the bridge (its MQTT client id) that forwarded a message.
pub const CLIENT_HEADER: &str = "mqtt_client";

/// The Kafka header with the message's fingerprint ([`ledger::fingerprint_text`]), what a
/// restarted bridge looks for to settle the messages it was unsure of.
pub const FINGERPRINT_HEADER: &str = "mqtt_fp";

/// How long recovery waits for more records of the topic before it takes what it found as all
/// there is.
const RECOVERY_IDLE: Duration = Duration::from_secs(3);

/// How the bridge runs.
#[derive(Clone, Debug, Default)]
pub struct BridgeArgs {
    /// Stop once this many messages were forwarded and acknowledged (0 = until SIGTERM); for
    /// tests and one-shot drains.
    pub max_messages: u64,
}

/// One message between its receipt and its acknowledgement.
struct InFlight {
    /// The MQTT connection it came on: a PUBACK is only sent on that one.
    connection: u64,
    publish: Publish,
    key: Option<String>,
    payload: bytes::Bytes,
    received: Instant,
    delivery: Option<DeliveryFuture>,
    /// Its fingerprint and ledger entry; `None` for a message the ledger knew (a
    /// redelivery Kafka has, or a device's resend): acknowledged without sending it.
    entry: Option<(ledger::Fingerprint, ledger::Entry)>,
}

/// The Kafka side: the producer (renewed after a fatal error) and the topic.
struct Sender {
    producer: Mutex<FutureProducer>,
    kafka: iotflow_config::KafkaConfig,
    topic: String,
    client_id: String,
}

impl Sender {
    fn new(
        kafka: &iotflow_config::KafkaConfig,
        topic: String,
        client_id: String,
    ) -> anyhow::Result<Sender> {
        Ok(Sender {
            producer: Mutex::new(producer(kafka)?),
            kafka: kafka.clone(),
            topic,
            client_id,
        })
    }

    fn current(&self) -> FutureProducer {
        self.producer.lock().expect("producer lock").clone()
    }

    /// Enqueues one record; waits while the producer's queue is full.
    async fn send(
        &self,
        mqtt_topic: &str,
        key: Option<&str>,
        payload: &[u8],
        fp: &ledger::Fingerprint,
    ) -> Result<DeliveryFuture, rdkafka::error::KafkaError> {
        let producer = self.current();
        let fp = ledger::fingerprint_text(fp);
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: TOPIC_HEADER,
                    value: Some(mqtt_topic),
                })
                .insert(Header {
                    key: CLIENT_HEADER,
                    value: Some(&self.client_id),
                })
                .insert(Header {
                    key: FINGERPRINT_HEADER,
                    value: Some(&fp),
                });
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
                .payload(payload)
                .headers(headers);
            if let Some(k) = key {
                record = record.key(k);
            }
            match producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// After a failed delivery: a new producer if this one hit a fatal error (an idempotent
    /// producer whose broker lost its state refuses every later record).
    fn renew_if_fatal(&self) {
        let mut p = self.producer.lock().expect("producer lock");
        if let Some((code, reason)) = p.client().fatal_error() {
            tracing::warn!(
                "the Kafka producer hit a fatal error ({code:?}: {reason}): starting a new one"
            );
            match producer(&self.kafka) {
                Ok(new) => *p = new,
                Err(e) => tracing::warn!("cannot start a new Kafka producer: {e:#}"),
            }
        }
    }
}

fn producer(kafka: &iotflow_config::KafkaConfig) -> anyhow::Result<FutureProducer> {
    iotflow_kafka::client_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // A record that cannot be delivered in this time is reported and sent again; until
        // then librdkafka retries on its own.
        .set("message.timeout.ms", "60000")
        .create()
        .with_context(|| format!("creating a Kafka producer for {}", kafka.brokers))
}

/// Runs the bridge until SIGTERM / Ctrl-C (or `args.max_messages`).
pub fn run(config: Config, args: BridgeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("iotflow-mqtt-bridge")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run_async(config, args))
}

/// The MQTT options of the bridge's session.
fn mqtt_options(m: &iotflow_config::MqttConfig) -> MqttOptions {
    let mut o = MqttOptions::new(&m.client_id, &m.host, m.port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(m.keep_alive_secs))
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if !m.username.is_empty() {
        o.set_credentials(&m.username, &m.password);
    }
    o
}

async fn run_async(config: Config, args: BridgeArgs) -> anyhow::Result<()> {
    let m = &config.mqtt;
    // First thing: a SIGTERM during the recovery read is a stop request, not a kill.
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let metrics = Arc::new(Metrics::new("mqtt-bridge", &iotflow_metrics::new_job_id()));
    let bm = BridgeMetrics::register(&metrics);
    if !m.metrics_listen.is_empty() {
        let server = iotflow_metrics::serve(&m.metrics_listen, metrics.clone())
            .with_context(|| format!("serving metrics on {}", m.metrics_listen))?;
        tracing::info!("metrics at http://{}/metrics", server.addr);
    }
    let topic = if m.kafka_topic.is_empty() {
        config.kafka.topic.clone()
    } else {
        m.kafka_topic.clone()
    };
    let sender = Arc::new(Sender::new(
        &config.kafka,
        topic.clone(),
        m.client_id.clone(),
    )?);
    let keys = DeviceKey::new(&m.device_id_from_topic);
    let ledger_path = std::path::Path::new(&m.state_dir).join(format!(
        "{}.forwarded",
        m.client_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            })
            .collect::<String>()
    ));
    let mut opened = Ledger::open(&ledger_path, m.dedupe_window)
        .with_context(|| format!("opening the bridge's ledger {}", ledger_path.display()))?;
    recover(&mut opened, &config.kafka, &topic, &m.client_id).await?;
    let ledger = Arc::new(Mutex::new(opened));

    // The PUBACKs go through the client's request channel; one slot per possible packet id,
    // so acknowledging never waits for the event loop.
    let (client, eventloop) = AsyncClient::new(mqtt_options(m), u16::MAX as usize + 1);
    let connection = Arc::new(Mutex::new(0u64));
    let acked = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<InFlight>();
    let acker = tokio::spawn(acknowledge(
        rx,
        client.clone(),
        sender.clone(),
        ledger.clone(),
        connection.clone(),
        acked.clone(),
        bm.clone(),
    ));
    let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
    let poller = tokio::spawn(poll(
        eventloop,
        events_tx,
        connection.clone(),
        bm.clone(),
        format!("{}:{}", m.host, m.port),
    ));

    tracing::info!(
        mqtt = %format!("{}:{}", m.host, m.port),
        client_id = %m.client_id,
        topics = ?m.topics,
        kafka_topic = %topic,
        "MQTT bridge starting"
    );

    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    let mut stopping = false;
    let mut current = 0u64;
    loop {
        if !stopping
            && (stop.load(Ordering::SeqCst)
                || (args.max_messages > 0 && acked.load(Ordering::SeqCst) >= args.max_messages))
        {
            // Take no new message (the broker keeps it for the next session), finish those
            // in flight, then disconnect cleanly.
            tracing::info!(
                in_flight = bm.in_flight.get(),
                "stopping: finishing the messages in flight"
            );
            stopping = true;
        }
        if stopping && bm.in_flight.get() == 0 {
            break;
        }
        let event = tokio::select! {
            e = events.recv() => match e {
                Some(e) => e,
                None => anyhow::bail!("the MQTT event loop stopped"),
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
        };
        match event {
            Polled::Connected(n, session_present) => {
                current = n;
                tracing::info!(
                    session_present,
                    connection = n,
                    "connected to the MQTT broker"
                );
                // Every time: a broker that lost the session (restarted without persistence)
                // forgets the subscriptions too.
                let filters = m
                    .topics
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                client
                    .subscribe_many(filters)
                    .await
                    .context("subscribing")?;
            }
            Polled::Refused(codes) => anyhow::bail!(
                "the MQTT broker refused a subscription of {:?} (return codes {codes:?})",
                m.topics
            ),
            Polled::Message(p) => {
                if stopping {
                    continue;
                }
                bm.received.inc();
                if p.dup {
                    bm.redelivered.inc();
                }
                if p.retain {
                    // A retained message, sent because the bridge (re)subscribed: the last
                    // message of its topic, which the session received live when it was
                    // published. Acknowledged, not forwarded again.
                    bm.retained_skipped.inc();
                    bm.in_flight.inc();
                    let item = InFlight {
                        connection: current,
                        key: None,
                        payload: p.payload.clone(),
                        publish: p,
                        received: Instant::now(),
                        delivery: None,
                        entry: None,
                    };
                    if tx.send(item).is_err() {
                        anyhow::bail!("the acknowledging task stopped");
                    }
                    continue;
                }
                let Keyed {
                    key,
                    payload,
                    mismatch,
                } = keys.key(&p.topic, p.payload.clone());
                if key.is_none() {
                    bm.unkeyed.inc();
                }
                if mismatch {
                    bm.key_mismatch.inc();
                }
                // A message the ledger knows is in Kafka already, or on its way there: a
                // redelivery after a crash or a lost connection, or a device's own resend.
                let fp = ledger::fingerprint(&p.topic, &p.payload);
                let entry = {
                    let mut l = ledger.lock().expect("ledger lock");
                    if l.contains(&fp) {
                        None
                    } else {
                        Some(l.sent(fp).with_context(|| {
                            format!("writing the ledger {}", l.path().display())
                        })?)
                    }
                };
                let delivery = match entry {
                    None => {
                        bm.duplicates_dropped.inc();
                        None
                    }
                    Some(_) => match sender.send(&p.topic, key.as_deref(), &payload, &fp).await {
                        Ok(f) => Some(f),
                        Err(e) => {
                            bm.produce_errors.inc();
                            log.warn(|| {
                                format!(
                                    "cannot send a message of {} to Kafka (sending it again): {e}",
                                    p.topic
                                )
                            });
                            None
                        }
                    },
                };
                bm.in_flight.inc();
                let item = InFlight {
                    connection: current,
                    publish: p,
                    key,
                    payload,
                    received: Instant::now(),
                    delivery,
                    entry: entry.map(|e| (fp, e)),
                };
                if tx.send(item).is_err() {
                    anyhow::bail!("the acknowledging task stopped");
                }
            }
            Polled::Disconnected => {}
        }
    }
    // A clean DISCONNECT: the session (and its subscriptions) stays on the broker.
    if client.disconnect().await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
    }
    drop(tx);
    let _ = acker.await;
    let _ = sender.current().flush(Duration::from_secs(10));
    tracing::info!(
        forwarded = bm.forwarded.get(),
        acknowledged = bm.acknowledged.get(),
        "MQTT bridge stopped"
    );
    Ok(())
}

/// What the event loop's task passes on.
enum Polled {
    /// Connection number `.0` is up; `.1`: the broker had the session.
    Connected(u64, bool),
    /// A subscription was refused, with these codes.
    Refused(Vec<rumqttc::SubscribeReasonCode>),
    /// A message.
    Message(Publish),
    /// The connection is gone (the event loop connects again).
    Disconnected,
}

/// Drives the MQTT event loop in a task of its own (its `poll` must never be cancelled half
/// way) until the bridge sent its DISCONNECT or stopped listening. A lost connection bumps
/// `connection` (under its lock) and drops every PUBACK still queued, so no PUBACK of one
/// connection is ever sent on the next: the broker sends those messages again instead.
async fn poll(
    mut eventloop: EventLoop,
    events: tokio::sync::mpsc::Sender<Polled>,
    connection: Arc<Mutex<u64>>,
    bm: BridgeMetrics,
    broker: String,
) {
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    let mut failures = 0u32;
    loop {
        let polled = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                bm.connected.set(1);
                let mut n = connection.lock().expect("connection lock");
                *n += 1;
                Polled::Connected(*n, ack.session_present)
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    Polled::Refused(ack.return_codes)
                } else {
                    bm.subscribed.set(1);
                    continue;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Polled::Message(p),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => {
                {
                    let mut n = connection.lock().expect("connection lock");
                    *n += 1;
                    // The PUBACKs queued since the event loop's own clean-up.
                    eventloop.clean();
                }
                bm.connected.set(0);
                bm.subscribed.set(0);
                bm.connection_errors.inc();
                log.warn(|| format!("MQTT connection to {broker} failed (retrying): {e}"));
                let wait = iotflow_sink::backoff(&retry_policy(), failures);
                failures = failures.saturating_add(1);
                if events.send(Polled::Disconnected).await.is_err() {
                    return;
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if events.send(polled).await.is_err() {
            return;
        }
    }
}

fn retry_policy() -> iotflow_sink::RetryPolicy {
    iotflow_sink::RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    }
}

/// Waits for each message's Kafka acknowledgement, in arrival order; marks it done in the
/// ledger, then acknowledges it to MQTT if its connection is still the current one (otherwise
/// the broker sends it again, and the ledger knows it).
async fn acknowledge(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<InFlight>,
    client: AsyncClient,
    sender: Arc<Sender>,
    ledger: Arc<Mutex<Ledger>>,
    connection: Arc<Mutex<u64>>,
    acked: Arc<AtomicU64>,
    bm: BridgeMetrics,
) {
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    let mut synced = Instant::now();
    while let Some(mut item) = rx.recv().await {
        if let Some((fp, entry)) = item.entry {
            let (partition, offset) = delivered(&mut item, &fp, &sender, &bm, &mut log).await;
            let mut l = ledger.lock().expect("ledger lock");
            if let Err(e) = l.done(entry, partition, offset) {
                // Not fatal: a crash now could only forward this message again.
                log.warn(|| format!("cannot write the ledger {}: {e}", l.path().display()));
            }
            if synced.elapsed() >= Duration::from_secs(1) {
                synced = Instant::now();
                if let Err(e) = tokio::task::block_in_place(|| l.sync()) {
                    log.warn(|| format!("cannot sync the ledger {}: {e}", l.path().display()));
                }
            }
        }
        if item.publish.qos != QoS::AtMostOnce {
            // Under the lock the event loop's task takes when a connection is lost: a PUBACK
            // is queued only while its connection is the current one.
            let n = connection.lock().expect("connection lock");
            if *n == item.connection && client.try_ack(&item.publish).is_ok() {
                bm.acknowledged.inc();
            }
        }
        // Counted before the gauge drops, so a stop that waits for in_flight == 0 sees it.
        acked.fetch_add(1, Ordering::SeqCst);
        bm.in_flight.dec();
    }
    let l = ledger.lock().expect("ledger lock");
    if let Err(e) = l.sync() {
        tracing::warn!("cannot sync the ledger {}: {e}", l.path().display());
    }
}

/// Waits until Kafka acknowledged `item`, sending it again after each failure; its partition
/// and offset.
async fn delivered(
    item: &mut InFlight,
    fp: &ledger::Fingerprint,
    sender: &Sender,
    bm: &BridgeMetrics,
    log: &mut RateLimitedLog,
) -> (i32, i64) {
    let mut failures = 0u32;
    loop {
        let outcome = match item.delivery.take() {
            Some(f) => match f.await {
                Ok(Ok(d)) => Ok((d.partition, d.offset)),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("the producer was dropped".to_string()),
            },
            None => Err("not sent".to_string()),
        };
        match outcome {
            Ok(at) => {
                bm.forwarded.inc();
                bm.forward_seconds
                    .observe(item.received.elapsed().as_secs_f64());
                return at;
            }
            Err(e) => {
                bm.produce_errors.inc();
                log.warn(|| {
                    format!(
                        "Kafka did not take a message of {} ({} bytes) to {}: {e}; sending it again",
                        item.publish.topic,
                        item.payload.len(),
                        sender.topic
                    )
                });
                sender.renew_if_fatal();
                tokio::time::sleep(iotflow_sink::backoff(&retry_policy(), failures)).await;
                failures = failures.saturating_add(1);
                item.delivery = sender
                    .send(&item.publish.topic, item.key.as_deref(), &item.payload, fp)
                    .await
                    .ok();
            }
        }
    }
}

/// After a crash: finds which of the ledger's uncertain messages Kafka has, by reading the
/// topic after the newest acknowledged offset of each partition for records of this bridge
/// (`mqtt_client`) with their fingerprints (`mqtt_fp`), until all are found or nothing more
/// comes for a few seconds. Those found are done; the others are forgotten, to be sent again.
pub async fn recover(
    ledger: &mut Ledger,
    kafka: &iotflow_config::KafkaConfig,
    topic: &str,
    client_id: &str,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};

    let uncertain: std::collections::HashSet<ledger::Fingerprint> =
        ledger.uncertain().into_iter().collect();
    if uncertain.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let from = ledger.newest_done();
    let kafka = kafka.clone();
    let topic = topic.to_string();
    let client_id = client_id.to_string();
    let wanted = uncertain.clone();
    let found = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let consumer: BaseConsumer = iotflow_kafka::client_config(&kafka)
            .set("group.id", format!("{client_id}-recovery"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .context("creating the recovery consumer")?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
            .with_context(|| format!("reading the partitions of {topic}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut assignment = rdkafka::TopicPartitionList::new();
        for p in partitions {
            let offset = match from.get(&p) {
                Some(o) => rdkafka::Offset::Offset(o + 1),
                // No record of this bridge in the ledger's window there: the recent tail.
                None => rdkafka::Offset::OffsetTail(ledger::TAIL_WITHOUT_MARK),
            };
            assignment.add_partition_offset(&topic, p, offset)?;
        }
        consumer.assign(&assignment)?;
        let mut found = HashMap::new();
        let mut idle_since = Instant::now();
        while found.len() < wanted.len() && idle_since.elapsed() < RECOVERY_IDLE {
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.with_context(|| format!("reading {topic} to settle the ledger"))?;
            idle_since = Instant::now();
            let Some(headers) = m.headers() else { continue };
            let mut ours = false;
            let mut fp = None;
            for h in headers.iter() {
                match h.key {
                    CLIENT_HEADER => ours = h.value == Some(client_id.as_bytes()),
                    FINGERPRINT_HEADER => {
                        fp = h
                            .value
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(ledger::parse_fingerprint)
                    }
                    _ => {}
                }
            }
            if let (true, Some(fp)) = (ours, fp) {
                if wanted.contains(&fp) {
                    found.insert(fp, (m.partition(), m.offset()));
                }
            }
        }
        Ok(found)
    })
    .await
    .context("the recovery reader stopped")??;
    tracing::info!(
        uncertain = uncertain.len(),
        in_kafka = found.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "settled the messages in flight at the last stop: those in Kafka are not sent again"
    );
    ledger
        .settle(&found)
        .with_context(|| format!("writing the ledger {}", ledger.path().display()))?;
    Ok(())
}

fn watch_signals(stop: Arc<AtomicBool>) {
    let terminated = iotflow_metrics::signals::terminated();
    tokio::spawn(async move {
        terminated.await;
        stop.store(true, Ordering::SeqCst);
    });
}

/// Publishes `readings` (device id, JSON payload) to MQTT with QoS 1, on the topic
/// `pattern` with `{pboxid}` replaced by the device id, at `rate` per second (0 = as fast as
/// the broker takes them); returns once the broker acknowledged every one. The simulator's
/// `iotflow gen --mqtt`.
pub async fn publish(
    host: &str,
    port: u16,
    pattern: &str,
    readings: impl Iterator<Item = (String, Vec<u8>)>,
    rate: f64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let mut o = MqttOptions::new(format!("iotflow-gen-{}", std::process::id()), host, port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(200)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    let (client, mut eventloop) = AsyncClient::new(o, 1000);
    let acked = Arc::new(AtomicU64::new(0));
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let poller = {
        let acked = acked.clone();
        let failed = failed.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return eventloop,
                    Ok(_) => {}
                    Err(e) => {
                        *failed.lock().expect("lock") = Some(e.to_string());
                        return eventloop;
                    }
                }
            }
        })
    };
    let started = Instant::now();
    let mut sent = 0u64;
    for (device, payload) in readings {
        if let Some(e) = failed.lock().expect("lock").clone() {
            anyhow::bail!("MQTT connection to {host}:{port} failed: {e}");
        }
        if rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let topic = pattern.replace(iotflow_config::DEVICE_ID_LEVEL, &device);
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .context("publishing to MQTT")?;
        sent += 1;
        if sent.is_multiple_of(10_000) {
            progress(sent);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < sent {
        if let Some(e) = failed.lock().expect("lock").clone() {
            anyhow::bail!("MQTT connection to {host}:{port} failed: {e}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the MQTT broker acknowledged {} of {sent} messages in 60 s",
            acked.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
    Ok(sent)
}
