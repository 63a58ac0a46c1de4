//! `.sink_batches(writer, options)`: the timely shell around a [`BatchWriter`].
//!
//! The bookkeeping (what is buffered at which time, when a batch is cut, which times are
//! complete) is the [`Batcher`]'s; this file moves rows in, batches out to a writer task on the
//! tokio runtime, acknowledgements back, and keeps one capability at [`Batcher::hold`].

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use iotflow_metrics::{RateLimitedLog, SinkMetrics};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use crate::{backoff, BatchPolicy, BatchWriter, Batcher, RetryPolicy, SinkError};

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
        writer: W,
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
                let (batch_tx, batch_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Vec<R>)>();
                let (ack_tx, ack_rx) = mpsc::channel::<Ack>();
                runtime.spawn(write_batches(
                    writer,
                    batch_rx,
                    ack_tx,
                    sync_activator,
                    options.retry.clone(),
                    options.sink.clone(),
                    metrics.clone(),
                ));

                let sink = options.sink.clone();
                let mut batcher: Batcher<R> =
                    Batcher::new(options.batch.clone(), W::row_size, W::kafka_ts_ms);
                // One capability, at the least time with a row not yet durable.
                let mut cap: Option<Capability<u64>> = None;
                move |(input, frontier), _output| {
                    for ack in ack_rx.try_iter() {
                        match ack.result {
                            Ok(took) => {
                                let Some(sent) = batcher.acknowledge(ack.id) else {
                                    continue;
                                };
                                metrics.in_flight.dec();
                                pressure.set(pressure.get().saturating_sub(sent.rows));
                                metrics.rows_written.inc_by(sent.rows as u64);
                                metrics.batch_seconds.observe(took.as_secs_f64());
                                let now_ms = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map(|d| d.as_millis() as i64)
                                    .unwrap_or(0);
                                for ts in sent.stamps {
                                    metrics
                                        .e2e_seconds
                                        .observe((now_ms - ts).max(0) as f64 / 1000.0);
                                }
                            }
                            Err(e) => {
                                if batcher.fail(ack.id).is_none() {
                                    continue;
                                }
                                metrics.in_flight.dec();
                                let message = format!("{sink} sink: {e}");
                                tracing::error!("{message}");
                                fatal.lock().expect("fatal lock").get_or_insert(message);
                            }
                        }
                    }

                    input.for_each(|stamp, data| {
                        let Some(t) = stamp.least().copied() else {
                            return;
                        };
                        if data.is_empty() {
                            return;
                        }
                        // Every held time is at or after the capability: a new, earlier time
                        // brings its own.
                        if cap.as_ref().is_none_or(|c| t < *c.time()) {
                            cap = Some(stamp.retain_least(0).expect("non-empty stamp"));
                        }
                        pressure.set(pressure.get() + data.len());
                        batcher.push(t, data.drain(..), Instant::now());
                    });
                    if batcher.failed() {
                        // A writer that vanished without saying why (it panicked).
                        if matches!(ack_rx.try_recv(), Err(mpsc::TryRecvError::Disconnected)) {
                            fatal
                                .lock()
                                .expect("fatal lock")
                                .get_or_insert(format!("{sink} sink: writer task stopped"));
                        }
                        // Hold the capability: nothing after the failure may be committed.
                        return;
                    }

                    let now = Instant::now();
                    while let Some(batch) = batcher.next_batch(now, frontier.is_empty()) {
                        metrics.in_flight.inc();
                        if batch_tx.send((batch.id, batch.rows)).is_err() {
                            // The writer stopped after a definite error; its acknowledgement
                            // carries the reason and is read at the next activation.
                            batcher.halt();
                            activator.activate();
                            return;
                        }
                    }

                    metrics.held.set(batcher.held_rows() as i64);
                    match (batcher.hold(), cap.as_mut()) {
                        (Some(t), Some(c)) => c.downgrade(&t),
                        _ => cap = None,
                    }
                    if let Some(wait) = batcher.wait(now) {
                        activator.activate_after(wait.max(Duration::from_millis(1)));
                    }
                }
            },
        )
    }
}

/// The writer task: writes each batch (retrying transient errors with backoff, forever) and
/// acknowledges it, waking the operator; stops after a definite error or when the operator is
/// gone.
async fn write_batches<W: BatchWriter>(
    mut writer: W,
    mut batches: tokio::sync::mpsc::UnboundedReceiver<(u64, Vec<W::Row>)>,
    acks: mpsc::Sender<Ack>,
    wake: SyncActivator,
    retry: RetryPolicy,
    sink: String,
    metrics: SinkMetrics,
) {
    // One transient failure logged per 10 s for the whole task, however many batches fail;
    // the counters count every one.
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    while let Some((id, rows)) = batches.recv().await {
        let start = Instant::now();
        let mut attempt = 0u32;
        let result = loop {
            match writer.write(&rows).await {
                Ok(()) => break Ok(start.elapsed()),
                Err(e @ SinkError::Transient(_)) => {
                    metrics.transient_errors.inc();
                    metrics.retries.inc();
                    if let Some(suppressed) = log.admit() {
                        tracing::warn!(%sink, attempt, suppressed, "write failed, retrying: {e}");
                    }
                    tokio::time::sleep(backoff(&retry, attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => {
                    metrics.definite_errors.inc();
                    break Err(e);
                }
            }
        };
        let failed = result.is_err();
        if acks.send(Ack { id, result }).is_err() {
            break;
        }
        let _ = wake.activate();
        if failed {
            break;
        }
    }
}
