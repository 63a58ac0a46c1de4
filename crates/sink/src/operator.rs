//! `.sink_batches(writer, options)`: the timely shell around a [`BatchWriter`].

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
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
                // The buffer's rows as runs of one time each, in buffer order: a batch cut from
                // the front holds the capabilities of its own rows' times and no others, so
                // the oldest times complete as their batches are acknowledged, also while a
                // backlog keeps the buffer from ever emptying.
                let mut runs = Runs::default();
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
                        if data.is_empty() {
                            return;
                        }
                        caps.entry(t)
                            .or_insert_with(|| (cap.retain_least(0).expect("non-empty stamp"), 0));
                        runs.push(t, data.len());
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
                        // The batch holds the times of its own rows only.
                        let times = runs.take_front(take);
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

                    metrics.held.set(
                        (buffer.len() + in_flight.values().map(|(_, _, n)| *n).sum::<usize>())
                            as i64,
                    );
                    caps.retain(|t, (_, n)| *n > 0 || runs.holds(*t) || frontier.less_equal(t));
                    if !buffer.is_empty() {
                        let wait = policy.max_delay.saturating_sub(buffer_started.elapsed());
                        activator.activate_after(wait.max(Duration::from_millis(1)));
                    }
                }
            },
        )
    }
}

/// The times of a sink's buffered rows, as runs of consecutive rows at one time (rows arrive in
/// containers of one time each, so runs are long and this stays small).
#[derive(Debug, Default)]
struct Runs {
    runs: VecDeque<(u64, usize)>,
    /// Buffered rows per time.
    rows: BTreeMap<u64, usize>,
}

impl Runs {
    /// `n` rows at time `t` were appended to the buffer.
    fn push(&mut self, t: u64, n: usize) {
        match self.runs.back_mut() {
            Some((last, count)) if *last == t => *count += n,
            _ => self.runs.push_back((t, n)),
        }
        *self.rows.entry(t).or_default() += n;
    }

    /// The first `n` rows of the buffer were cut into a batch: the distinct times among them.
    fn take_front(&mut self, mut n: usize) -> Vec<u64> {
        let mut times = Vec::new();
        while n > 0 {
            let Some((t, count)) = self.runs.front_mut() else {
                break;
            };
            let t = *t;
            let taken = n.min(*count);
            *count -= taken;
            n -= taken;
            if *count == 0 {
                self.runs.pop_front();
            }
            if let std::collections::btree_map::Entry::Occupied(mut e) = self.rows.entry(t) {
                *e.get_mut() -= taken;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            if !times.contains(&t) {
                times.push(t);
            }
        }
        times
    }

    /// Whether rows at time `t` are still buffered.
    fn holds(&self, t: u64) -> bool {
        self.rows.contains_key(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::Runs;

    #[test]
    fn a_batch_cut_from_the_front_holds_only_its_own_times() {
        let mut runs = Runs::default();
        runs.push(1, 3);
        runs.push(1, 2);
        runs.push(2, 4);
        runs.push(1, 1); // a late container of an earlier time
        runs.push(3, 5);
        assert_eq!(runs.take_front(4), vec![1]);
        assert!(runs.holds(1) && runs.holds(2) && runs.holds(3));
        assert_eq!(runs.take_front(3), vec![1, 2]);
        assert!(runs.holds(1), "the late row at 1 is still buffered");
        assert_eq!(runs.take_front(3), vec![2, 1]);
        assert!(!runs.holds(1) && !runs.holds(2));
        assert_eq!(runs.take_front(10), vec![3]);
        assert!(!runs.holds(3));
        assert_eq!(runs.take_front(1), Vec::<u64>::new());
    }
}
