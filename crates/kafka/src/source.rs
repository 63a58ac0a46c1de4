//! The Kafka source operator.
//!
//! One consumer per worker, `assign`ed the worker's own partitions (no group rebalancing).
//! Records read during an epoch carry that epoch as their timestamp. When the epoch closes the
//! operator remembers each partition's next offset; when the commit probe shows the epoch
//! complete (every sink acknowledged everything up to it), those offsets are committed. A crash
//! at any moment therefore restarts from offsets whose records are all durably stored.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iotflow_config::{Config, KafkaConfig};
use iotflow_metrics::{RateLimitedLog, SourceMetrics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::{assigned_partitions, client_config, DeadLetterLedger, KafkaError};

/// One Kafka message, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Message timestamp (ms since the Unix epoch), if the broker gave one.
    pub ts_ms: Option<i64>,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message payload; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
}

/// Where a source starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// From the group's committed offsets (the beginning when there are none).
    Committed,
    /// From the beginning of every partition (the dimension topic: it is replayed on start).
    Beginning,
}

/// How a source operator behaves.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Operator name (appears in metrics).
    pub name: String,
    /// Topic to read.
    pub topic: String,
    /// Where to start.
    pub start: StartFrom,
    /// Commit offsets of epochs the commit probe shows complete.
    pub commit: bool,
    /// Hold the first epoch open until every partition is read up to the high watermark it
    /// had at start, so downstream never sees a half-loaded topic as complete.
    pub wait_for_catch_up: bool,
    /// Epoch length in milliseconds.
    pub epoch_ms: u64,
    /// Least time between two commits (see `job.commit_interval_ms`); draining commits at once.
    pub commit_interval: Duration,
    /// Most records taken per activation.
    pub max_poll_records: usize,
    /// Finish after this long without a record (after draining and committing).
    pub idle_exit: Option<Duration>,
    /// Pause reading while the worker's sinks hold more rows than this.
    pub max_pending_rows: usize,
    /// For a source without commits (the dimension): finish once this probe is done, i.e.
    /// once the readers of the whole cluster have finished. Without it the source finishes
    /// when its process is told to stop, which in a cluster can be too early: a process
    /// whose readers got no partitions would stop loading its share of the dimension.
    pub finish_after: Option<ProbeHandle<u64>>,
    /// For a reader: the dead-letter ledger, read back at start for the reader's partitions
    /// and written into each commit's metadata (see [`DeadLetterLedger`]).
    pub dead_letters: Option<Arc<DeadLetterLedger>>,
    /// Records held outside the sinks (readings waiting for the dimension, dead letters
    /// awaiting the broker), and the most of them before the source pauses. Counted apart
    /// from the sinks' rows so that a stalled sink pauses the source as soon as it holds its
    /// own limit.
    pub stashed: Option<(Backpressure, usize)>,
}

impl SourceOptions {
    /// The readings source (`kafka-source` on `kafka.topic`): starts from the committed
    /// offsets and commits what the probe shows complete; finishes after `job.idle_exit_secs`
    /// without a record (never when 0). It pauses while the worker's sinks hold more than
    /// `max_pending_rows`, or while `stashed` counts more than `job.max_stashed_readings`
    /// records held outside the sinks; `dead_letters` is the ledger written into its commits.
    pub fn readings(
        config: &Config,
        max_pending_rows: usize,
        dead_letters: Arc<DeadLetterLedger>,
        stashed: Backpressure,
    ) -> SourceOptions {
        SourceOptions {
            name: "kafka-source".into(),
            topic: config.kafka.topic.clone(),
            start: StartFrom::Committed,
            commit: true,
            wait_for_catch_up: false,
            epoch_ms: config.job.epoch_ms,
            commit_interval: Duration::from_millis(config.job.commit_interval_ms),
            max_poll_records: config.kafka.max_poll_records,
            idle_exit: (config.job.idle_exit_secs > 0)
                .then(|| Duration::from_secs(config.job.idle_exit_secs)),
            max_pending_rows,
            finish_after: None,
            dead_letters: Some(dead_letters),
            stashed: Some((stashed, config.job.max_stashed_readings)),
        }
    }

    /// The device dimension source (`broadcast-source` on `kafka.broadcast_topic`): replayed
    /// from the beginning, complete before time moves (the first epoch waits for the catch-up),
    /// never committed, never paused; it finishes once `finish_after` (the readers' probe) is
    /// done.
    pub fn dimension(config: &Config, finish_after: ProbeHandle<u64>) -> SourceOptions {
        SourceOptions::whole_topic(
            "broadcast-source",
            &config.kafka.broadcast_topic,
            config,
            finish_after,
        )
    }

    /// The alarm rule sets (`rules-source` on `alarms.rules_topic`): like
    /// [`SourceOptions::dimension`], replayed from the beginning and loaded before time moves.
    pub fn rules(config: &Config, finish_after: ProbeHandle<u64>) -> SourceOptions {
        SourceOptions::whole_topic(
            "rules-source",
            &config.alarms.rules_topic,
            config,
            finish_after,
        )
    }

    fn whole_topic(
        name: &str,
        topic: &str,
        config: &Config,
        finish_after: ProbeHandle<u64>,
    ) -> SourceOptions {
        SourceOptions {
            name: name.into(),
            topic: topic.into(),
            start: StartFrom::Beginning,
            commit: false,
            wait_for_catch_up: true,
            epoch_ms: config.job.epoch_ms,
            commit_interval: Duration::ZERO,
            max_poll_records: config.kafka.max_poll_records,
            idle_exit: None,
            max_pending_rows: usize::MAX,
            finish_after: Some(finish_after),
            dead_letters: None,
            stashed: None,
        }
    }
}

/// Where a source that loads a whole topic before time moves stands on one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CatchUp {
    /// Low watermark: the first offset still in the partition.
    low: i64,
    /// High watermark: the offset after the last message at start.
    high: i64,
    /// Whether a fetch response confirmed the watermarks.
    confirmed: bool,
}

impl CatchUp {
    /// Whether the partition is loaded, `next` being the offset after the last record read.
    /// A partition that retention emptied (`low == high > 0`) has nothing to read: it is
    /// loaded at once, although no record ever moves `next`.
    fn reached(&self, next: Option<i64>) -> bool {
        self.confirmed && (self.high <= self.low || next.is_some_and(|o| o >= self.high))
    }
}

/// Rows a worker's sinks hold (buffered or in flight); the source pauses above a limit.
///
/// All operators of a worker run on one thread, so a shared cell is enough.
pub type Backpressure = Rc<Cell<usize>>;

/// Process-wide lifecycle shared by the job loop and its sources.
#[derive(Debug, Default)]
pub struct SourceHandle {
    /// Set to drain and stop every source (SIGTERM, or all readers finished).
    pub stop: AtomicBool,
    /// Set when a stop was asked for (a signal), not merely reached (readers finished): such a
    /// request is relayed to every process of the cluster.
    pub requested: AtomicBool,
    /// Commit-enabled readers (one per worker) still running in this process.
    pub running_readers: AtomicUsize,
    /// Set once a commit-enabled reader of this process has begun to drain (stop or idle
    /// exit): operators that hold back the commit for data they keep (the alarms' lateness
    /// buffer) store that data instead, so the drain can complete.
    pub draining: AtomicBool,
}

impl SourceHandle {
    /// A handle for a process whose `readers` workers each run one commit-enabled source.
    ///
    /// The count is set before any worker starts: counting sources as they are built would let
    /// a worker without partitions finish (and stop the process) before a slower worker has
    /// registered its source.
    pub fn new(readers: usize) -> Arc<SourceHandle> {
        Arc::new(SourceHandle {
            stop: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            running_readers: AtomicUsize::new(readers),
            draining: AtomicBool::new(false),
        })
    }
}

/// How long after `now` the next epoch of `epoch_ms` begins (at least 1 ms): when a source
/// wakes to close its epoch.
pub fn until_next_epoch(now: SystemTime, epoch_ms: u64) -> Duration {
    let epoch_ms = epoch_ms.max(1);
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Duration::from_millis((epoch_ms - ms % epoch_ms).max(1))
}

/// The epoch (timestamp) of wall-clock time `now`.
pub fn epoch_of(now: SystemTime, epoch_ms: u64) -> u64 {
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms / epoch_ms * epoch_ms
}

struct SourceContext {
    topic: String,
    metrics: SourceMetrics,
    /// Low and high watermarks from fetch responses (via statistics), per partition.
    highs: Arc<std::sync::Mutex<BTreeMap<i32, (i64, i64)>>>,
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        if let Some(topic) = stats.topics.get(&self.topic) {
            for (p, part) in &topic.partitions {
                if *p < 0 || !part.desired {
                    continue;
                }
                if part.hi_offset >= 0 {
                    self.highs
                        .lock()
                        .expect("highs lock")
                        .insert(*p, (part.lo_offset, part.hi_offset));
                }
                let lag = if part.hi_offset >= 0 && part.app_offset >= 0 {
                    (part.hi_offset - part.app_offset).max(0)
                } else {
                    part.consumer_lag
                };
                if lag >= 0 {
                    self.metrics.set_lag(*p, lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {}

/// Offsets to commit per partition, each with its commit metadata.
type Commit = BTreeMap<i32, (i64, String)>;

/// Commits offsets on a thread of its own, synchronously, so the worker never blocks on the
/// broker and every commit's outcome is known. (An asynchronous manual commit in librdkafka
/// reports its result nowhere unless a reply queue is given, which the Rust client doesn't
/// expose.) Requests coalesce: only the newest offsets matter.
struct Committer {
    /// Offsets to commit, each with its commit metadata.
    requests: std::sync::mpsc::Sender<Commit>,
    /// Offsets the broker acknowledged.
    acknowledged: Arc<std::sync::Mutex<BTreeMap<i32, i64>>>,
}

impl Committer {
    fn start(
        consumer: Arc<BaseConsumer<SourceContext>>,
        topic: String,
        metrics: SourceMetrics,
    ) -> Committer {
        let (requests, rx) = std::sync::mpsc::channel::<Commit>();
        let acknowledged: Arc<std::sync::Mutex<BTreeMap<i32, i64>>> = Default::default();
        let acked = acknowledged.clone();
        std::thread::Builder::new()
            .name("iotflow-commit".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(100);
                while let Ok(mut offsets) = rx.recv() {
                    loop {
                        // Coalesce: later requests include everything earlier ones had.
                        for newer in rx.try_iter() {
                            offsets.extend(newer);
                        }
                        let mut tpl = TopicPartitionList::new();
                        let done = acked.lock().expect("acked lock").clone();
                        for (p, (o, metadata)) in &offsets {
                            if done.get(p) != Some(o) {
                                tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
                                    .expect("valid offset");
                                if !metadata.is_empty() {
                                    if let Some(mut e) = tpl.find_partition(&topic, *p) {
                                        e.set_metadata(metadata);
                                    }
                                }
                            }
                        }
                        if tpl.count() == 0 {
                            break;
                        }
                        match consumer.commit(&tpl, CommitMode::Sync) {
                            Ok(()) => {
                                metrics.offsets_committed.inc();
                                for (p, (o, _)) in &offsets {
                                    metrics.set_committed(*p, *o);
                                }
                                acked
                                    .lock()
                                    .expect("acked lock")
                                    .extend(offsets.iter().map(|(p, (o, _))| (*p, *o)));
                                backoff = Duration::from_millis(100);
                                break;
                            }
                            Err(e) => {
                                metrics.commit_failures.inc();
                                tracing::warn!(%topic, "offset commit failed, retrying in {backoff:?}: {e}");
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                }
            })
            .expect("spawn commit thread");
        Committer {
            requests,
            acknowledged,
        }
    }
}

/// Test-only stand-in for a topic that grows: `IOTFLOW_TEST_PRETEND_PARTITIONS=topic:n` makes
/// the source believe at start that `topic` has `n` partitions, so its first metadata check
/// finds the rest "added". No broker that runs on the development machine can add partitions
/// (tansu refuses CreatePartitions, librdkafka's mock has none), and the live pick-up must be
/// tested with real processes anyway; see `partitions_added_while_running_are_read_without_a_restart`.
fn pretend_partitions(topic: &str) -> Option<i32> {
    let v = std::env::var("IOTFLOW_TEST_PRETEND_PARTITIONS").ok()?;
    let (t, n) = v.rsplit_once(':')?;
    (t == topic).then(|| n.parse().ok()).flatten()
}

/// What [`watch_partitions`] needs.
struct PartitionWatch {
    topic: String,
    known: i32,
    index: usize,
    peers: usize,
    start: StartFrom,
    every: Duration,
    grown: Arc<AtomicI32>,
    metrics: SourceMetrics,
}

/// Checks the topic's partition count every `w.every` on a thread of its own (metadata
/// requests block) and publishes a larger count in `w.grown`; for this worker's new partitions
/// it sets the lag metric at once (high watermark minus where reading starts), before
/// librdkafka's statistics report it. Ends when the consumer is dropped.
fn watch_partitions(consumer: std::sync::Weak<BaseConsumer<SourceContext>>, w: PartitionWatch) {
    let topic = w.topic.clone();
    let spawned = std::thread::Builder::new()
        .name("iotflow-partitions".into())
        .spawn(move || {
            let mut known = w.known;
            let mut log = RateLimitedLog::new(Duration::from_secs(60));
            loop {
                std::thread::sleep(w.every);
                let Some(consumer) = consumer.upgrade() else {
                    return;
                };
                let count = match consumer.fetch_metadata(Some(&w.topic), Duration::from_secs(10)) {
                    Ok(m) => m
                        .topics()
                        .iter()
                        .find(|t| t.name() == w.topic && t.error().is_none())
                        .map_or(0, |t| t.partitions().len() as i32),
                    Err(e) => {
                        if let Some(suppressed) = log.admit() {
                            tracing::warn!(topic = %w.topic, suppressed, "checking the partition count failed: {e}");
                        }
                        continue;
                    }
                };
                if count <= known {
                    continue;
                }
                for p in (known..count).filter(|p| (*p as usize) % w.peers == w.index) {
                    let Ok((low, high)) = consumer.fetch_watermarks(&w.topic, p, Duration::from_secs(10)) else {
                        continue;
                    };
                    let mut from = low.max(0);
                    if w.start == StartFrom::Committed {
                        let mut q = TopicPartitionList::new();
                        q.add_partition(&w.topic, p);
                        if let Ok(c) = consumer.committed_offsets(q, Duration::from_secs(10)) {
                            if let Some(Offset::Offset(o)) = c.elements().first().map(|e| e.offset()) {
                                from = from.max(o);
                            }
                        }
                    }
                    w.metrics.set_lag(p, (high - from).max(0));
                }
                known = count;
                w.grown.store(count, Ordering::SeqCst);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(%topic, "cannot start the partition watch: {e}");
    }
}

enum State {
    Running,
    Draining,
    Done,
}

/// Builds the source operator for this worker.
///
/// `probe` must watch the frontier after every sink (required when `options.commit`).
/// `lifecycle` coordinates draining with the job loop.
#[allow(clippy::too_many_arguments)]
pub fn kafka_source<'scope>(
    scope: Scope<'scope, u64>,
    kafka: &KafkaConfig,
    options: SourceOptions,
    metrics: SourceMetrics,
    probe: Option<ProbeHandle<u64>>,
    pressure: Backpressure,
    lifecycle: Arc<SourceHandle>,
) -> Result<StreamVec<'scope, u64, KafkaRecord>, KafkaError> {
    let index = scope.index();
    let peers = scope.peers();
    let mut config = client_config(kafka);
    config
        .set("group.id", &kafka.group_id)
        // Offsets are committed only for epochs every sink has made durable.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A group without committed offsets starts at the beginning: never skip data.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Lower than librdkafka's 500 ms default: latency matters more than fetch request count.
        .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
        // Prefetch per partition is memory the job holds outside its own accounting: bound it
        // (librdkafka's 64 MiB default times many partitions is a lot of RSS).
        .set(
            "queued.max.messages.kbytes",
            kafka.fetch_queue_max_kbytes.to_string(),
        )
        // Source of the consumer-lag metric, and of the true high watermarks a catch-up
        // source waits for (so it asks often while loading).
        .set(
            "statistics.interval.ms",
            if options.wait_for_catch_up {
                250
            } else {
                kafka.stats_interval_secs * 1000
            }
            .to_string(),
        )
        .set("client.id", format!("iotflow-{}-w{index}", options.name));
    let highs: Arc<std::sync::Mutex<BTreeMap<i32, (i64, i64)>>> = Default::default();
    let context = SourceContext {
        topic: options.topic.clone(),
        metrics: metrics.clone(),
        highs: highs.clone(),
    };
    let consumer: BaseConsumer<SourceContext> =
        config
            .create_with_context(context)
            .map_err(|source| KafkaError::Client {
                brokers: kafka.brokers.clone(),
                source,
            })?;
    let metadata = consumer
        .fetch_metadata(Some(&options.topic), Duration::from_secs(15))
        .map_err(|e| KafkaError::Metadata {
            topic: options.topic.clone(),
            brokers: kafka.brokers.clone(),
            reason: e.to_string(),
        })?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == options.topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32)
        .ok_or_else(|| KafkaError::Metadata {
            topic: options.topic.clone(),
            brokers: kafka.brokers.clone(),
            reason: "the topic does not exist or has no partitions".into(),
        })?;
    let partitions = pretend_partitions(&options.topic).map_or(partitions, |n| n.min(partitions));
    let mine = assigned_partitions(partitions, index, peers);
    let mut tpl = TopicPartitionList::new();
    for p in &mine {
        let offset = match options.start {
            StartFrom::Committed => Offset::Stored,
            StartFrom::Beginning => Offset::Beginning,
        };
        tpl.add_partition_offset(&options.topic, *p, offset)
            .expect("valid offset");
    }
    if let Some(ledger) = &options.dead_letters {
        // Before any record is read: which of the dead letters of records not yet committed
        // are already in the dead-letter topic (written before a crash).
        let mut query = TopicPartitionList::new();
        for p in &mine {
            query.add_partition(&options.topic, *p);
        }
        let committed = consumer
            .committed_offsets(query, Duration::from_secs(15))
            .map_err(|e| KafkaError::Metadata {
                topic: options.topic.clone(),
                brokers: kafka.brokers.clone(),
                reason: format!("committed offsets of group {}: {e}", kafka.group_id),
            })?;
        let committed: Vec<(i32, i64, String)> = committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                (e.partition(), offset, e.metadata().to_string())
            })
            .collect();
        ledger.load(kafka, &options.topic, &committed)?;
    }
    consumer.assign(&tpl).map_err(|source| KafkaError::Client {
        brokers: kafka.brokers.clone(),
        source,
    })?;
    // Where "caught up" is, for a source that must load the whole topic before time moves:
    // per partition, the high watermark and whether a fetch response confirmed it. ListOffsets
    // alone is not trusted (some Kafka-compatible brokers answer it with a stale offset); the
    // watermark of a real fetch response (reported in librdkafka's statistics) is.
    let mut catch_up: BTreeMap<i32, CatchUp> = BTreeMap::new();
    if options.wait_for_catch_up {
        for p in &mine {
            let (low, high) = consumer
                .fetch_watermarks(&options.topic, *p, Duration::from_secs(15))
                .map_err(|e| KafkaError::Metadata {
                    topic: options.topic.clone(),
                    brokers: kafka.brokers.clone(),
                    reason: format!("watermarks of partition {p}: {e}"),
                })?;
            catch_up.insert(
                *p,
                CatchUp {
                    low: low.max(0),
                    high: high.max(0),
                    confirmed: false,
                },
            );
        }
    }
    let catch_up_started = Instant::now();
    tracing::info!(
        worker = index,
        topic = %options.topic,
        partitions = ?mine,
        "source assigned {} of {} partitions",
        mine.len(),
        partitions
    );
    let consumer = Arc::new(consumer);
    // Partitions added to the topic while the job runs: a thread watches the partition count;
    // the operator assigns this worker's share of the new ones (the assignment is by
    // `partition % peers`, so no partition changes owner when the topic grows).
    let grown = Arc::new(AtomicI32::new(partitions));
    if kafka.metadata_refresh_secs > 0 {
        watch_partitions(
            Arc::downgrade(&consumer),
            PartitionWatch {
                topic: options.topic.clone(),
                known: partitions,
                index,
                peers,
                start: options.start,
                every: Duration::from_secs(kafka.metadata_refresh_secs),
                grown: grown.clone(),
                metrics: metrics.clone(),
            },
        );
    }
    let start_offset = match options.start {
        StartFrom::Committed => Offset::Stored,
        StartFrom::Beginning => Offset::Beginning,
    };
    // Each partition's messages get a queue of their own, so the consumer's main queue carries
    // only events (statistics: lag and high watermarks; errors). The main queue is served on
    // every activation, also while back-pressure holds the partition queues unread: the lag
    // metric keeps moving during a sink stall, and no message is taken that cannot be emitted.
    let mut queues = Vec::with_capacity(mine.len());
    for p in &mine {
        let queue = consumer
            .split_partition_queue(&options.topic, *p)
            .ok_or_else(|| KafkaError::Metadata {
                topic: options.topic.clone(),
                brokers: kafka.brokers.clone(),
                reason: format!("cannot give partition {p} a queue of its own"),
            })?;
        queues.push(queue);
    }
    let committer = options
        .commit
        .then(|| Committer::start(consumer.clone(), options.topic.clone(), metrics.clone()));

    let name = options.name.clone();
    let ledger = options.dead_letters.clone();
    let stream = source::<_, CapacityContainerBuilder<Vec<KafkaRecord>>, _, _>(
        scope,
        &name,
        move |cap, info| {
            let activator = scope.activator_for(info.address.clone());
            // A partition queue that receives messages while empty wakes the operator from
            // librdkafka's thread: no polling on a timer for data.
            let waker = scope.worker().sync_activator_for(info.address.to_vec());
            let wake_on_data =
                move |queue: &mut rdkafka::consumer::base_consumer::PartitionQueue<
                    SourceContext,
                >| {
                    let wake = std::sync::Mutex::new(waker.clone());
                    queue.set_nonempty_callback(move || {
                        if let Ok(wake) = wake.lock() {
                            let _ = wake.activate();
                        }
                    });
                };
            for queue in queues.iter_mut() {
                wake_on_data(queue);
            }
            let mut known_partitions = partitions;
            let mut cap = Some(cap);
            // A reader without partitions has nothing to do, unless partitions may be added.
            let mut state = if mine.is_empty() && options.commit && kafka.metadata_refresh_secs == 0
            {
                State::Draining
            } else {
                State::Running
            };
            // Next offset per partition, as read.
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            // Offsets as of the end of each closed epoch, awaiting the probe.
            let mut pending: VecDeque<(u64, Commit)> = VecDeque::new();
            let mut snapshot: BTreeMap<i32, i64> = BTreeMap::new();
            // The newest offsets handed to the committer.
            let mut requested: BTreeMap<i32, i64> = BTreeMap::new();
            let mut last_record = Instant::now();
            let mut error_log = RateLimitedLog::new(Duration::from_secs(10));
            let mut last_commit: Option<Instant> = None;
            // Observed locally (no atomics per message), flushed once per activation.
            let read_age = metrics.read_age.local();

            move |output| {
                let Some(c) = cap.as_mut() else { return };
                let count = grown.load(Ordering::SeqCst);
                if count > known_partitions && matches!(state, State::Running) {
                    let added: Vec<i32> = (known_partitions..count)
                        .filter(|p| (*p as usize) % peers == index)
                        .collect();
                    let mut tpl = TopicPartitionList::new();
                    for p in &added {
                        tpl.add_partition_offset(&options.topic, *p, start_offset)
                            .expect("valid offset");
                    }
                    match consumer.incremental_assign(&tpl) {
                        Ok(()) => {
                            for p in &added {
                                match consumer.split_partition_queue(&options.topic, *p) {
                                    Some(mut queue) => {
                                        wake_on_data(&mut queue);
                                        queues.push(queue);
                                    }
                                    None => {
                                        tracing::error!(topic = %options.topic, partition = p, "cannot give an added partition a queue of its own")
                                    }
                                }
                            }
                            tracing::info!(worker = index, topic = %options.topic, added = ?added, "the topic grew from {known_partitions} to {count} partitions; this worker now also reads {added:?}");
                            known_partitions = count;
                        }
                        Err(e) => {
                            if let Some(suppressed) = error_log.admit() {
                                tracing::warn!(topic = %options.topic, suppressed, "assigning added partitions {added:?} failed, retrying: {e}");
                            }
                        }
                    }
                }
                let now_epoch = epoch_of(SystemTime::now(), options.epoch_ms);
                if !catch_up.is_empty() {
                    let give_up = catch_up_started.elapsed() > Duration::from_secs(30);
                    for (p, c) in catch_up.iter_mut() {
                        if let Some((l, h)) = highs.lock().expect("highs lock").get(p).copied() {
                            if !c.confirmed {
                                c.high = c.high.max(h);
                                c.low = c.low.max(l);
                                c.confirmed = true;
                            }
                        }
                        if give_up && !c.confirmed {
                            tracing::warn!(topic = %options.topic, partition = p, "no fetch response confirmed the high watermark within 30 s; trusting ListOffsets ({})", c.high);
                            c.confirmed = true;
                        }
                    }
                    let caught_up = catch_up
                        .iter()
                        .all(|(p, c)| c.reached(next.get(p).copied()));
                    if caught_up {
                        tracing::info!(topic = %options.topic, worker = index, "loaded the topic up to its high watermark at start");
                        catch_up.clear();
                    }
                }

                // Close the epoch when the clock has moved on (never backwards; never before
                // a catch-up source has loaded its topic).
                let close_epoch = |c: &mut timely::dataflow::operators::Capability<u64>,
                                   pending: &mut VecDeque<(u64, Commit)>,
                                   snapshot: &mut BTreeMap<i32, i64>,
                                   next: &BTreeMap<i32, i64>,
                                   to: u64| {
                    if next != snapshot {
                        // Each offset with the dead-letter position it vouches for (before
                        // which no letter of a record read later can be), taken now.
                        let with_metadata = next
                            .iter()
                            .map(|(p, o)| {
                                let m = ledger.as_ref().map(|l| l.commit_metadata(*p));
                                (*p, (*o, m.unwrap_or_default()))
                            })
                            .collect();
                        pending.push_back((*c.time(), with_metadata));
                        snapshot.clone_from(next);
                    }
                    c.downgrade(&to);
                };
                if matches!(state, State::Running) && catch_up.is_empty() && now_epoch > *c.time() {
                    close_epoch(c, &mut pending, &mut snapshot, &next, now_epoch);
                }

                if matches!(state, State::Running) {
                    // A reader stops when its process is told to; the dimension only once every
                    // reader of the cluster has finished (see `finish_after`).
                    let stop = match (&options.finish_after, options.commit) {
                        (Some(readers), false) => readers.done(),
                        _ => lifecycle.stop.load(Ordering::SeqCst),
                    };
                    if stop {
                        state = State::Draining;
                    } else if options
                        .idle_exit
                        .is_some_and(|d| last_record.elapsed() >= d)
                        && catch_up.is_empty()
                    {
                        tracing::info!(worker = index, topic = %options.topic, "no input for {:?}: draining", options.idle_exit.unwrap_or_default());
                        state = State::Draining;
                    }
                    if matches!(state, State::Draining) {
                        if options.commit {
                            lifecycle.draining.store(true, Ordering::SeqCst);
                        }
                        let to = *c.time() + 1;
                        close_epoch(c, &mut pending, &mut snapshot, &next, to);
                    }
                }

                let mut read = 0usize;
                let paused = pressure.get() > options.max_pending_rows
                    || options
                        .stashed
                        .as_ref()
                        .is_some_and(|(held, max)| held.get() > *max);
                if paused {
                    // Idle means "the broker had nothing", never "we did not ask": a source held
                    // back by slow sinks must not drain and leave input unread.
                    last_record = Instant::now();
                }
                if matches!(state, State::Running) {
                    let mut session = output.session(&*c);
                    // One clock reading per activation: a message's age is taken at the start
                    // of the poll that takes it.
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let mut take = |m: &BorrowedMessage<'_>| {
                        next.insert(m.partition(), m.offset() + 1);
                        if let Some(ts) = m.timestamp().to_millis() {
                            read_age.observe((now_ms - ts).max(0) as f64 / 1000.0);
                        }
                        session.give(KafkaRecord {
                            partition: m.partition(),
                            offset: m.offset(),
                            ts_ms: m.timestamp().to_millis(),
                            key: m.key().map(<[u8]>::to_vec),
                            payload: m.payload().map(<[u8]>::to_vec),
                        });
                    };
                    let mut report = |e: RdKafkaError| {
                        if let Some(suppressed) = error_log.admit() {
                            tracing::warn!(topic = %options.topic, suppressed, "Kafka consumer error: {e}");
                        }
                    };
                    // Events (and, rarely, a message fetched before its partition was split off:
                    // taken, so emitted).
                    for _ in 0..options.max_poll_records {
                        match consumer.poll(Duration::ZERO) {
                            Some(Ok(m)) => {
                                read += 1;
                                take(&m);
                            }
                            Some(Err(e)) => {
                                report(e);
                                break;
                            }
                            None => break,
                        }
                    }
                    // Messages, partition by partition in turns, unless back-pressured.
                    let mut open = if paused { 0 } else { queues.len() };
                    while open > 0 && read < options.max_poll_records {
                        open = 0;
                        for queue in &queues {
                            if read >= options.max_poll_records {
                                break;
                            }
                            match queue.poll(Duration::ZERO) {
                                Some(Ok(m)) => {
                                    read += 1;
                                    open += 1;
                                    take(&m);
                                }
                                Some(Err(e)) => report(e),
                                None => {}
                            }
                        }
                    }
                }
                // While paused the partition queues are not polled: a message taken must be
                // emitted. The main queue (events) is served either way.
                if read > 0 {
                    metrics.messages_received.inc_by(read as u64);
                    read_age.flush();
                    last_record = Instant::now();
                }

                // Commit the newest epoch the probe shows complete, at most once per
                // `commit_interval` (at once when draining).
                let commit_due = matches!(state, State::Draining)
                    || last_commit.is_none_or(|t| t.elapsed() >= options.commit_interval);
                if options.commit && commit_due {
                    if let Some(probe) = &probe {
                        let mut done = None;
                        while pending.front().is_some_and(|(t, _)| !probe.less_equal(t)) {
                            done = pending.pop_front();
                        }
                        if let (Some((_, offsets)), Some(committer)) = (done, &committer) {
                            last_commit = Some(Instant::now());
                            tracing::debug!(?offsets, "epoch complete: committing");
                            requested.extend(offsets.iter().map(|(p, (o, _))| (*p, *o)));
                            if committer.requests.send(offsets).is_err() {
                                tracing::error!(topic = %options.topic, "commit thread stopped");
                            }
                        }
                    }
                }

                let all_acknowledged = committer.as_ref().is_none_or(|c| {
                    let acked = c.acknowledged.lock().expect("acked lock");
                    requested.iter().all(|(p, o)| acked.get(p) == Some(o))
                });
                if matches!(state, State::Draining)
                    && ((pending.is_empty() && all_acknowledged) || !options.commit)
                {
                    tracing::info!(worker = index, topic = %options.topic, "source finished; committed {:?}", requested);
                    state = State::Done;
                    cap = None;
                    if options.commit
                        && lifecycle.running_readers.fetch_sub(1, Ordering::SeqCst) == 1
                    {
                        lifecycle.stop.store(true, Ordering::SeqCst);
                    }
                    return;
                }
                if matches!(state, State::Running)
                    && !options.commit
                    && options.finish_after.is_none()
                    && lifecycle.stop.load(Ordering::SeqCst)
                {
                    state = State::Done;
                    cap = None;
                    return;
                }
                if read >= options.max_poll_records {
                    activator.activate();
                } else {
                    // Data wakes the operator through the queues' callbacks; the clock wakes
                    // it at the next epoch boundary (to close the epoch), and at least every
                    // 20 ms (back-pressure, stop requests, commits).
                    let tick = until_next_epoch(SystemTime::now(), options.epoch_ms)
                        .min(Duration::from_millis(20));
                    activator.activate_after(tick);
                }
            }
        },
    );
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readings_and_dimension_options_come_from_the_config() {
        let mut config = Config::default();
        config.kafka.topic = "readings".into();
        config.kafka.broadcast_topic = "devices".into();
        config.kafka.max_poll_records = 77;
        config.job.epoch_ms = 250;
        config.job.max_stashed_readings = 1234;
        let ledger = Arc::new(DeadLetterLedger::with_partitions("dlq", 2));
        let stashed: Backpressure = Rc::new(Cell::new(0));
        let r = SourceOptions::readings(&config, 999, ledger.clone(), stashed.clone());
        assert_eq!(
            (r.name.as_str(), r.topic.as_str()),
            ("kafka-source", "readings")
        );
        assert_eq!(r.start, StartFrom::Committed);
        assert!(r.commit && !r.wait_for_catch_up);
        assert_eq!(
            (r.epoch_ms, r.max_poll_records, r.max_pending_rows),
            (250, 77, 999)
        );
        assert_eq!(r.idle_exit, None, "idle_exit_secs 0: never");
        assert!(r.finish_after.is_none());
        assert!(r.dead_letters.is_some_and(|l| Arc::ptr_eq(&l, &ledger)));
        let (cell, limit) = r.stashed.expect("stash budget");
        assert!(Rc::ptr_eq(&cell, &stashed) && limit == 1234);
        config.job.idle_exit_secs = 30;
        let r = SourceOptions::readings(&config, 1, ledger, stashed);
        assert_eq!(r.idle_exit, Some(Duration::from_secs(30)));

        let d = SourceOptions::dimension(&config, ProbeHandle::new());
        assert_eq!(
            (d.name.as_str(), d.topic.as_str()),
            ("broadcast-source", "devices")
        );
        assert_eq!(d.start, StartFrom::Beginning);
        assert!(!d.commit && d.wait_for_catch_up);
        assert_eq!((d.epoch_ms, d.max_poll_records), (250, 77));
        assert_eq!((d.idle_exit, d.max_pending_rows), (None, usize::MAX));
        assert!(d.finish_after.is_some() && d.dead_letters.is_none() && d.stashed.is_none());
    }

    #[test]
    fn a_source_wakes_at_the_next_epoch_boundary() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(until_next_epoch(at(1_000), 10), Duration::from_millis(10));
        assert_eq!(until_next_epoch(at(1_003), 10), Duration::from_millis(7));
        assert_eq!(until_next_epoch(at(1_009), 10), Duration::from_millis(1));
        assert_eq!(until_next_epoch(at(1_250), 100), Duration::from_millis(50));
        // Never zero, and a zero epoch cannot divide by zero.
        assert_eq!(until_next_epoch(at(5), 1), Duration::from_millis(1));
        assert_eq!(until_next_epoch(at(5), 0), Duration::from_millis(1));
        assert_eq!(epoch_of(at(1_009), 10) + 10, epoch_of(at(1_010), 10));
    }

    #[test]
    fn a_partition_emptied_by_retention_is_loaded_at_once() {
        let c = |low, high| CatchUp {
            low,
            high,
            confirmed: true,
        };
        assert!(c(0, 0).reached(None), "never written");
        assert!(c(500, 500).reached(None), "emptied by retention");
        assert!(!c(400, 500).reached(None));
        assert!(!c(400, 500).reached(Some(499)));
        assert!(c(400, 500).reached(Some(500)));
        let unconfirmed = CatchUp {
            confirmed: false,
            ..c(500, 500)
        };
        assert!(!unconfirmed.reached(None));
    }
}
