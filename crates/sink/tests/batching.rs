//! The sink operator's contract, tested on the operator alone: an in-memory `BatchWriter`
//! stands in for a database here (this checks batching and capability discipline; the MySQL
//! writer itself is tested against MariaDB in `crates/sink-mysql` and `jobs/cli`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotflow_sink::{
    BatchPolicy, BatchWriter, Fatal, RetryPolicy, SinkBatches, SinkError, SinkOptions,
};
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};

/// Records batches; fails transiently the first `transient_failures` times; the gate, while
/// closed, makes writes wait (so the test can look at the frontier mid-write).
#[derive(Clone)]
struct MemoryWriter {
    batches: Arc<Mutex<Vec<Vec<u64>>>>,
    transient_failures: Arc<AtomicUsize>,
    definite_on: Option<u64>,
    gate: Arc<Mutex<bool>>,
}

impl BatchWriter for MemoryWriter {
    type Row = u64;

    async fn write(&mut self, rows: &[u64]) -> Result<(), SinkError> {
        while !*self.gate.lock().unwrap() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.transient_failures.load(Ordering::SeqCst) > 0 {
            self.transient_failures.fetch_sub(1, Ordering::SeqCst);
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
    }
}

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

/// Feeds rows 0..n at times 1..=epochs into a sink; returns (probe check results, fatal).
fn run(
    w: MemoryWriter,
    max_rows: usize,
    rows_per_epoch: u64,
    epochs: u64,
    hold_gate_for_epoch: Option<u64>,
) -> (Vec<String>, Option<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let fatal: Fatal = Arc::new(Mutex::new(None));
    let fatal2 = fatal.clone();
    let log = timely::execute_directly(move |worker| {
        let mut input = InputHandleVec::new();
        let probe = ProbeHandle::new();
        let w2 = w.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .sink_batches(
                    w2,
                    options(max_rows),
                    handle.clone(),
                    iotflow_metrics::detached().sink("memory", "memory-sink", 0),
                    Rc::new(Cell::new(0)),
                    fatal2.clone(),
                )
                .probe_with(&probe);
        });
        let mut log = Vec::new();
        let mut next = 0u64;
        for epoch in 1..=epochs {
            input.advance_to(epoch);
            for _ in 0..rows_per_epoch {
                input.send(next);
                next += 1;
            }
            input.advance_to(epoch + 1);
            if hold_gate_for_epoch == Some(epoch) {
                // The store has not acknowledged: the probe must not pass this epoch.
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    worker.step_or_park(Some(Duration::from_millis(5)));
                }
                log.push(format!("held at {epoch}: {}", probe.less_equal(&epoch)));
                *w.gate.lock().unwrap() = true;
            }
            let start = Instant::now();
            while probe.less_equal(&epoch) && fatal2.lock().unwrap().is_none() {
                worker.step_or_park(Some(Duration::from_millis(5)));
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "probe stuck at {epoch}"
                );
            }
        }
        if fatal2.lock().unwrap().is_some() {
            // A failed sink never releases its capabilities: drop the dataflow, as the job does.
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        }
        log
    });
    let fatal = fatal.lock().unwrap().clone();
    (log, fatal)
}

#[test]
fn probe_waits_for_the_store_and_batches_respect_max_rows() {
    let w = writer(0, None, false);
    let (log, fatal) = run(w.clone(), 100, 250, 3, Some(1));
    assert_eq!(log, vec!["held at 1: true"]);
    assert_eq!(fatal, None);
    let batches = w.batches.lock().unwrap();
    assert!(
        batches.iter().all(|b| b.len() <= 100),
        "{:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut all: Vec<u64> = batches.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, (0..750).collect::<Vec<_>>(), "every row written once");
}

#[test]
fn transient_errors_are_retried_without_losing_rows() {
    let w = writer(5, None, true);
    let (_, fatal) = run(w.clone(), 50, 120, 2, None);
    assert_eq!(fatal, None);
    let mut all: Vec<u64> = w
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, (0..240).collect::<Vec<_>>());
}

#[test]
fn a_definite_error_stops_the_job_and_holds_the_frontier() {
    let w = writer(0, Some(130), true);
    let (_, fatal) = run(w.clone(), 50, 100, 3, None);
    let fatal = fatal.expect("definite error reported");
    assert!(
        fatal.contains("memory sink") && fatal.contains("row 130 rejected"),
        "{fatal}"
    );
    assert!(w
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .all(|r| *r != 130));
}

/// A backlog keeps the buffer from ever emptying: the oldest times must still complete as
/// their own batches are acknowledged (the Kafka source commits them), long before the backlog
/// is written. Before the fix every batch held the capabilities of every buffered time, so the
/// probe stood still until the buffer drained.
#[test]
fn the_oldest_times_complete_while_a_backlog_is_written() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let w = writer(0, None, true);
    let batches = w.batches.clone();
    let fatal: Fatal = Arc::new(Mutex::new(None));
    let (epochs, per_epoch, max_rows) = (50u64, 200u64, 10usize);
    let written_when_first_epochs_done = timely::execute_directly(move |worker| {
        let mut input = InputHandleVec::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .sink_batches(
                    w.clone(),
                    options(max_rows),
                    handle.clone(),
                    iotflow_metrics::detached().sink("memory", "memory-sink", 0),
                    Rc::new(Cell::new(0)),
                    fatal.clone(),
                )
                .probe_with(&probe);
        });
        // The whole backlog arrives at once, as after a restart.
        let mut next = 0u64;
        for epoch in 1..=epochs {
            input.advance_to(epoch);
            for _ in 0..per_epoch {
                input.send(next);
                next += 1;
            }
        }
        input.advance_to(epochs + 1);
        let start = Instant::now();
        while probe.less_equal(&3) {
            worker.step_or_park(Some(Duration::from_millis(1)));
            assert!(start.elapsed() < Duration::from_secs(30), "probe stuck");
        }
        let written: usize = w.batches.lock().unwrap().iter().map(Vec::len).sum();
        // Let the rest finish so the runtime shuts down cleanly.
        while probe.less_equal(&epochs) {
            worker.step_or_park(Some(Duration::from_millis(1)));
            assert!(start.elapsed() < Duration::from_secs(60), "probe stuck");
        }
        written
    });
    let total = (epochs * per_epoch) as usize;
    let all: usize = batches.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(all, total);
    assert!(
        written_when_first_epochs_done < total / 4,
        "epochs 1..=3 completed only after {written_when_first_epochs_done} of {total} rows were written"
    );
    assert!(batches.lock().unwrap().iter().all(|b| b.len() <= max_rows));
}
