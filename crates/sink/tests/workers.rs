//! The sink operator on one and on two workers (`timely::execute` with `Config::process`):
//! rows are exchanged between the workers before the sink, so each worker's sink gets rows of
//! both inputs, and the probe must wait for every worker's store acknowledgements.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use iotflow_sink::{
    BatchPolicy, BatchWriter, Fatal, RetryPolicy, SinkBatches, SinkError, SinkOptions,
};
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Exchange, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};

/// Records batches (with the worker that wrote them); fails transiently the first
/// `transient_failures` times, definitely on row `definite_on`; waits while the gate is closed,
/// and, while `budget` holds a number, before writing more than that many rows of any one origin
/// worker (see [`row`]).
#[derive(Clone)]
struct MemoryWriter {
    batches: Arc<Mutex<Vec<Vec<u64>>>>,
    transient_failures: Arc<AtomicUsize>,
    definite_on: Option<u64>,
    gate: Arc<Mutex<bool>>,
    budget: Arc<Mutex<Option<usize>>>,
}

impl MemoryWriter {
    /// Rows of origin worker `origin` written so far.
    fn written_from(&self, origin: u64) -> usize {
        let batches = self.batches.lock().unwrap();
        batches
            .iter()
            .flatten()
            .filter(|r| *r / 10_000 % 10 == origin)
            .count()
    }
}

impl BatchWriter for MemoryWriter {
    type Row = u64;

    async fn write(&mut self, rows: &[u64]) -> Result<(), SinkError> {
        while !*self.gate.lock().unwrap() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(first) = rows.first() {
            let origin = *first / 10_000 % 10;
            loop {
                let budget = *self.budget.lock().unwrap();
                match budget {
                    Some(b) if self.written_from(origin) + rows.len() > b => {
                        tokio::time::sleep(Duration::from_millis(2)).await
                    }
                    _ => break,
                }
            }
        }
        if self
            .transient_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Transient("connection reset".into()));
        }
        if let Some(bad) = self.definite_on {
            if rows.contains(&bad) {
                return Err(SinkError::Definite(format!("row {bad} rejected by schema")));
            }
        }
        self.batches.lock().unwrap().push(rows.to_vec());
        Ok(())
    }

    fn row_size(_: &u64) -> usize {
        8
    }

    fn kafka_ts_ms(_: &u64) -> Option<i64> {
        None
    }
}

fn writer(transient_failures: usize, definite_on: Option<u64>, open: bool) -> MemoryWriter {
    MemoryWriter {
        batches: Default::default(),
        transient_failures: Arc::new(AtomicUsize::new(transient_failures)),
        definite_on,
        gate: Arc::new(Mutex::new(open)),
        budget: Default::default(),
    }
}

const MAX_ROWS: usize = 40;

fn options(max_rows: usize) -> SinkOptions {
    SinkOptions {
        sink: "memory".into(),
        batch: BatchPolicy {
            max_rows,
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(20),
            linger: Duration::from_millis(20),
            max_in_flight: 2,
        },
        retry: RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
    }
}

/// The row `k` that worker `w` sends at `epoch`.
fn row(epoch: u64, w: usize, k: u64) -> u64 {
    epoch * 100_000 + w as u64 * 10_000 + k
}

/// Each of `workers` workers sends `per_epoch` rows at each epoch 1..=epochs; the store's gate
/// stays closed through epoch 1 for 300 ms. Returns per worker the log of what its probe showed
/// while the gate was closed, and the fatal error.
fn run(
    workers: usize,
    w: MemoryWriter,
    per_epoch: u64,
    epochs: u64,
) -> (Vec<Vec<String>>, Option<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let fatal: Fatal = Arc::new(Mutex::new(None));
    let fatal2 = fatal.clone();
    let barrier = Arc::new(Barrier::new(workers));
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let mut input = InputHandleVec::new();
        let probe = ProbeHandle::new();
        let w2 = w.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .exchange(|r: &u64| *r)
                .sink_batches(
                    w2,
                    options(MAX_ROWS),
                    handle.clone(),
                    iotflow_metrics::detached().sink("memory", "memory-sink", index),
                    Rc::new(Cell::new(0)),
                    fatal2.clone(),
                )
                .probe_with(&probe);
        });
        let mut log = Vec::new();
        let gate_closed = !*w.gate.lock().unwrap();
        for epoch in 1..=epochs {
            input.advance_to(epoch);
            for k in 0..per_epoch {
                input.send(row(epoch, index, k));
            }
            input.advance_to(epoch + 1);
            if epoch == 1 && gate_closed {
                // No store has acknowledged: no worker's probe may pass epoch 1.
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    worker.step_or_park(Some(Duration::from_millis(5)));
                }
                log.push(format!("held at 1: {}", probe.less_equal(&1)));
                barrier.wait();
                *w.gate.lock().unwrap() = true;
            }
            let start = Instant::now();
            while probe.less_equal(&epoch) && fatal2.lock().unwrap().is_none() {
                worker.step_or_park(Some(Duration::from_millis(5)));
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "worker {index}: probe stuck at {epoch}"
                );
            }
        }
        if fatal2.lock().unwrap().is_some() {
            // A failed sink never releases its capability: drop the dataflow, as the job does.
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        }
        log
    })
    .expect("timely workers");
    let logs = guards
        .join()
        .into_iter()
        .map(|r| r.expect("worker"))
        .collect();
    let fatal = fatal.lock().unwrap().clone();
    (logs, fatal)
}

fn expected(workers: usize, per_epoch: u64, epochs: u64) -> Vec<u64> {
    let mut all: Vec<u64> = (1..=epochs)
        .flat_map(|e| (0..workers).flat_map(move |w| (0..per_epoch).map(move |k| row(e, w, k))))
        .collect();
    all.sort();
    all
}

fn written(w: &MemoryWriter) -> Vec<u64> {
    let mut all: Vec<u64> = w
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .collect();
    all.sort();
    all
}

fn probe_waits_for_every_store_acknowledgement(workers: usize) {
    let w = writer(0, None, false);
    let (logs, fatal) = run(workers, w.clone(), 150, 3);
    assert_eq!(logs, vec![vec!["held at 1: true".to_string()]; workers]);
    assert_eq!(fatal, None);
    let batches = w.batches.lock().unwrap().clone();
    assert!(
        batches.iter().all(|b| b.len() <= MAX_ROWS),
        "{:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(
        written(&w),
        expected(workers, 150, 3),
        "every row written once"
    );
}

#[test]
fn probe_waits_for_every_store_acknowledgement_on_one_worker() {
    probe_waits_for_every_store_acknowledgement(1);
}

#[test]
fn probe_waits_for_every_store_acknowledgement_on_two_workers() {
    probe_waits_for_every_store_acknowledgement(2);
}

fn transient_errors_lose_nothing(workers: usize) {
    let w = writer(7, None, true);
    let (_, fatal) = run(workers, w.clone(), 90, 3);
    assert_eq!(fatal, None);
    assert_eq!(w.transient_failures.load(Ordering::SeqCst), 0);
    assert_eq!(written(&w), expected(workers, 90, 3));
}

#[test]
fn transient_errors_lose_nothing_on_one_worker() {
    transient_errors_lose_nothing(1);
}

#[test]
fn transient_errors_lose_nothing_on_two_workers() {
    transient_errors_lose_nothing(2);
}

fn a_definite_error_stops_the_job(workers: usize) {
    let bad = row(2, 0, 17);
    let w = writer(0, Some(bad), true);
    let (_, fatal) = run(workers, w.clone(), 60, 3);
    let fatal = fatal.expect("definite error reported");
    assert!(
        fatal.contains("memory sink") && fatal.contains(&format!("row {bad} rejected")),
        "{fatal}"
    );
    assert!(!written(&w).contains(&bad));
}

#[test]
fn a_definite_error_stops_the_job_on_one_worker() {
    a_definite_error_stops_the_job(1);
}

#[test]
fn a_definite_error_stops_the_job_on_two_workers() {
    a_definite_error_stops_the_job(2);
}

/// A backlog on every worker: the oldest times complete as their own batches are acknowledged,
/// long before the backlog is written (as `batching.rs` checks on one worker), and the probe,
/// which sees every worker, passes them. No exchange here, as in the job (each worker's sinks
/// take its own readings in time order): the buffer is cut in arrival order, so rows of an old
/// time that arrive from another worker behind a local backlog wait for that backlog.
///
/// The store takes at most a quarter of each worker's rows until every worker's probe has passed
/// epoch 3, so the check does not depend on how the two workers happen to be scheduled: if the
/// oldest times waited for the backlog, the probe would never pass them.
fn the_oldest_times_complete_while_a_backlog_is_written(workers: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let w = writer(0, None, true);
    let (epochs, per_epoch, max_rows) = (40u64, 100u64, 10usize);
    let per_worker = (epochs * per_epoch) as usize;
    *w.budget.lock().unwrap() = Some(per_worker / 4);
    let passed = Arc::new(AtomicUsize::new(0));
    let batches = w.batches.clone();
    let budget = w.budget.clone();
    let fatal: Fatal = Arc::new(Mutex::new(None));
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let mut input = InputHandleVec::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .sink_batches(
                    w.clone(),
                    options(max_rows),
                    handle.clone(),
                    iotflow_metrics::detached().sink("memory", "memory-sink", index),
                    Rc::new(Cell::new(0)),
                    fatal.clone(),
                )
                .probe_with(&probe);
        });
        for epoch in 1..=epochs {
            input.advance_to(epoch);
            for k in 0..per_epoch {
                input.send(row(epoch, index, k));
            }
        }
        input.advance_to(epochs + 1);
        let start = Instant::now();
        while probe.less_equal(&3) {
            worker.step_or_park(Some(Duration::from_millis(1)));
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "epochs 1..=3 did not complete while the store took at most {} rows of each worker",
                per_worker / 4
            );
        }
        let written = w.written_from(index as u64);
        if passed.fetch_add(1, Ordering::SeqCst) + 1 == worker.peers() {
            *w.budget.lock().unwrap() = None;
        }
        while probe.less_equal(&epochs) {
            worker.step_or_park(Some(Duration::from_millis(1)));
            assert!(start.elapsed() < Duration::from_secs(120), "probe stuck");
        }
        written
    })
    .expect("timely workers");
    for written in guards.join().into_iter().map(|r| r.expect("worker")) {
        assert!(
            written <= per_worker / 4,
            "{written} rows written past the budget"
        );
    }
    assert!(budget.lock().unwrap().is_none());
    let total = workers * per_worker;
    let all: usize = batches.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(all, total);
    assert!(batches.lock().unwrap().iter().all(|b| b.len() <= max_rows));
}

#[test]
fn the_oldest_times_complete_while_a_backlog_is_written_on_one_worker() {
    the_oldest_times_complete_while_a_backlog_is_written(1);
}

#[test]
fn the_oldest_times_complete_while_a_backlog_is_written_on_two_workers() {
    the_oldest_times_complete_while_a_backlog_is_written(2);
}
