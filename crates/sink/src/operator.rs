//! `.sink_batches(writer, options)`: the timely shell around a [`BatchWriter`].

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use iotflow_metrics::SinkMetrics;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::{backoff, BatchPolicy, BatchWriter, RetryPolicy, SinkError};

/// The job's first definite error, if any: the job loop stops when it is set.
pub type Fatal = Arc<Mutex<Option<String>>>;

/// How one sink operator behaves.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// Sink name (`mysql`, ...): the `sink` label and the start of error messages.
    pub sink: String,
    /// Batch limits.
    pub batch: BatchPolicy,
    /// Retry backoff.
    pub retry: RetryPolicy,
}

/// Drives a [`BatchWriter`] from a stream of rows.
pub trait SinkBatches<'scope, R> {
    /// Writes the stream's rows through `writer` on `runtime`. The returned stream carries no
    /// data; its frontier passes a time once every row at that time is acknowledged, which is
    /// what the commit probe watches. `pressure` counts rows held (buffered or in flight) so
    /// the source can pause; `fatal` receives a definite error.
    #[allow(clippy::too_many_arguments)]
    fn sink_batches<W: BatchWriter<Row = R>>(
        self,
        writer: W,
        options: SinkOptions,
        runtime: tokio::runtime::Handle,
        metrics: SinkMetrics,
        pressure: Rc<Cell<usize>>,
        fatal: Fatal,
    ) -> StreamVec<'scope, u64, ()>;
}

struct Ack {
    id: u64,
    result: Result<Duration, SinkError>,
}

impl<'scope, R: Send + 'static> SinkBatches<'scope, R> for StreamVec<'scope, u64, R> {
    fn sink_batches<W: BatchWriter<Row = R>>(
        self,
        mut writer: W,
        options: SinkOptions,
        runtime: tokio::runtime::Handle,
        metrics: SinkMetrics,
        pressure: Rc<Cell<usize>>,
        fatal: Fatal,
    ) -> StreamVec<'scope, u64, ()> {
        let scope = self.scope();
        let name = format!("{}-sink", options.sink);
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            &name,
            move |_cap, info| {
                let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
                let activator = scope.activator_for(info.address);
                let (batch_tx, mut batch_rx) =
                    tokio::sync::mpsc::unbounded_channel::<(u64, Vec<R>)>();
                let (ack_tx, ack_rx) = mpsc::channel::<Ack>();
                let task_metrics = metrics.clone();
                let retry = options.retry.clone();
                let sink = options.sink.clone();
                runtime.spawn(async move {
                while let Some((id, rows)) = batch_rx.recv().await {
                    let start = Instant::now();
                    let mut attempt = 0u32;
                    let mut last_log: Option<Instant> = None;
                    let result = loop {
                        match writer.write(&rows).await {
                            Ok(()) => break Ok(start.elapsed()),
                            Err(e @ SinkError::Transient(_)) => {
                                task_metrics.transient_errors.inc();
                                task_metrics.retries.inc();
                                if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                    tracing::warn!(%sink, attempt, "write failed, retrying: {e}");
                                    last_log = Some(Instant::now());
                                }
                                tokio::time::sleep(backoff(&retry, attempt)).await;
                                attempt = attempt.saturating_add(1);
                            }
                            Err(e) => {
                                task_metrics.definite_errors.inc();
                                break Err(e);
                            }
                        }
                    };
                    let failed = result.is_err();
                    if ack_tx.send(Ack { id, result }).is_err() {
                        break;
                    }
                    let _ = sync_activator.activate();
                    if failed {
                        break;
                    }
                }
            });

                let policy = options.batch.clone();
                let sink = options.sink.clone();
                // Capabilities per time, with the number of sent batches holding rows of it.
                let mut caps: BTreeMap<u64, (Capability<u64>, usize)> = BTreeMap::new();
                let mut buffer: Vec<R> = Vec::new();
                let mut buffer_bytes = 0usize;
                let mut buffer_times: Vec<u64> = Vec::new();
                let mut buffer_started = Instant::now();
                // Sent batches: their times, Kafka timestamps and row counts.
                let mut in_flight: HashMap<u64, (Vec<u64>, Vec<i64>, usize)> = HashMap::new();
                let mut next_id = 0u64;
                let mut failed = false;
                move |(input, frontier), _output| {
                    for ack in ack_rx.try_iter() {
                        let Some((times, stamps, rows)) = in_flight.remove(&ack.id) else {
                            continue;
                        };
                        metrics.in_flight.dec();
                        match ack.result {
                            Ok(took) => {
                                pressure.set(pressure.get().saturating_sub(rows));
                                metrics.rows_written.inc_by(rows as u64);
                                metrics.batch_seconds.observe(took.as_secs_f64());
                                let now_ms = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_millis() as i64)
                                    .unwrap_or(0);
                                for ts in stamps {
                                    metrics
                                        .e2e_seconds
                                        .observe((now_ms - ts).max(0) as f64 / 1000.0);
                                }
                                for t in times {
                                    if let Some(entry) = caps.get_mut(&t) {
                                        entry.1 -= 1;
                                    }
                                }
                            }
                            Err(e) => {
                                failed = true;
                                let message = format!("{sink} sink: {e}");
                                tracing::error!("{message}");
                                fatal.lock().expect("fatal lock").get_or_insert(message);
                            }
                        }
                    }

                    input.for_each(|cap, data| {
                        let Some(t) = cap.least().copied() else {
                            return;
                        };
                        caps.entry(t)
                            .or_insert_with(|| (cap.retain_least(0).expect("non-empty stamp"), 0));
                        if !buffer_times.contains(&t) {
                            buffer_times.push(t);
                        }
                        if buffer.is_empty() {
                            buffer_started = Instant::now();
                        }
                        pressure.set(pressure.get() + data.len());
                        for row in data.drain(..) {
                            buffer_bytes += W::row_size(&row);
                            buffer.push(row);
                        }
                    });
                    if failed {
                        // A writer that vanished without saying why (it panicked).
                        if matches!(ack_rx.try_recv(), Err(mpsc::TryRecvError::Disconnected)) {
                            fatal
                                .lock()
                                .expect("fatal lock")
                                .get_or_insert(format!("{sink} sink: writer task stopped"));
                        }
                        // Hold every capability: nothing after the failure may be committed.
                        return;
                    }

                    let closing = frontier.is_empty();
                    while !buffer.is_empty()
                        && in_flight.len() < policy.max_in_flight
                        && (buffer.len() >= policy.max_rows
                            || buffer_bytes >= policy.max_bytes
                            || buffer_started.elapsed() >= policy.max_delay
                            || closing)
                    {
                        let take = buffer.len().min(policy.max_rows);
                        let rest = buffer.split_off(take);
                        let rows = std::mem::replace(&mut buffer, rest);
                        buffer_bytes = buffer.iter().map(W::row_size).sum();
                        // A batch holds every time present in the buffer it came from.
                        let times = buffer_times.clone();
                        if buffer.is_empty() {
                            buffer_times.clear();
                        }
                        for t in &times {
                            caps.get_mut(t).expect("capability of a buffered time").1 += 1;
                        }
                        let stamps: Vec<i64> = rows.iter().filter_map(W::kafka_ts_ms).collect();
                        next_id += 1;
                        in_flight.insert(next_id, (times, stamps, rows.len()));
                        metrics.in_flight.inc();
                        if batch_tx.send((next_id, rows)).is_err() {
                            // The writer stopped after a definite error; its acknowledgement
                            // carries the reason and is read at the next activation.
                            failed = true;
                            activator.activate();
                            return;
                        }
                    }

                    caps.retain(|t, (_, n)| {
                        *n > 0 || buffer_times.contains(t) || frontier.less_equal(t)
                    });
                    if !buffer.is_empty() {
                        let wait = policy.max_delay.saturating_sub(buffer_started.elapsed());
                        activator.activate_after(wait.max(Duration::from_millis(1)));
                    }
                }
            },
        )
    }
}
