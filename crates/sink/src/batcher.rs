//! The sink operator's bookkeeping, as plain Rust with no timely in it: which rows are buffered
//! at which times, when a batch is cut (rows, bytes, deadline, in-flight limit), and which times
//! are still held once batches are acknowledged.
//!
//! The operator ([`crate::SinkBatches`]) feeds it rows with their times, sends the batches it
//! cuts to the writer task, reports acknowledgements back, and keeps one capability at
//! [`Batcher::hold`]: the least time with a row not yet durable. Times only complete through
//! acknowledgements, so the probe after the sink (and the Kafka offset commit behind it) never
//! passes a row the store has not acknowledged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::BatchPolicy;

/// One batch cut from the front of the buffer, to be written.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch<R> {
    /// Identifies the batch in [`Batcher::acknowledge`] and [`Batcher::fail`].
    pub id: u64,
    /// Its rows, in arrival order.
    pub rows: Vec<R>,
}

/// What a batch held, returned when it is acknowledged (or failed).
#[derive(Debug, PartialEq, Eq)]
pub struct Sent {
    /// The distinct times of its rows.
    pub times: Vec<u64>,
    /// The Kafka timestamps of its rows' source messages (for end-to-end latency).
    pub stamps: Vec<i64>,
    /// How many rows it had.
    pub rows: usize,
}

/// Batches rows by time under a [`BatchPolicy`]; see the module docs.
#[derive(Debug)]
pub struct Batcher<R> {
    policy: BatchPolicy,
    row_size: fn(&R) -> usize,
    kafka_ts_ms: fn(&R) -> Option<i64>,
    buffer: VecDeque<R>,
    buffer_bytes: usize,
    /// When the first row of the current buffer arrived.
    buffer_started: Instant,
    /// The buffer's rows as runs of one time each, in buffer order: a batch cut from the front
    /// holds its own rows' times and no others, so the oldest times complete as their batches
    /// are acknowledged, also while a backlog keeps the buffer from ever emptying.
    runs: Runs,
    /// Per time, the number of sent batches holding rows of it.
    sent_times: BTreeMap<u64, usize>,
    in_flight: HashMap<u64, Sent>,
    next_id: u64,
    failed: bool,
}

impl<R> Batcher<R> {
    /// An empty batcher; `row_size` is a row's approximate encoded size (for `max_bytes`),
    /// `kafka_ts_ms` the Kafka timestamp of its source message.
    pub fn new(
        policy: BatchPolicy,
        row_size: fn(&R) -> usize,
        kafka_ts_ms: fn(&R) -> Option<i64>,
    ) -> Self {
        Batcher {
            policy,
            row_size,
            kafka_ts_ms,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            buffer_started: Instant::now(),
            runs: Runs::default(),
            sent_times: BTreeMap::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            failed: false,
        }
    }

    /// Buffers `rows`, all at time `time`, arriving at `now`.
    pub fn push(&mut self, time: u64, rows: impl IntoIterator<Item = R>, now: Instant) {
        let before = self.buffer.len();
        for row in rows {
            self.buffer_bytes += (self.row_size)(&row);
            self.buffer.push_back(row);
        }
        let added = self.buffer.len() - before;
        if added == 0 {
            return;
        }
        if before == 0 {
            self.buffer_started = now;
        }
        self.runs.push(time, added);
    }

    /// The next batch to write at `now`, if one is due: the buffer is not empty, fewer than
    /// `max_in_flight` batches are in flight, and the buffer reached `max_rows` or `max_bytes`,
    /// its first row waited `max_delay` (or `linger` while no batch is in flight), or the input
    /// is `closing` (its frontier is empty). A batch has at most `max_rows` rows, taken from
    /// the front of the buffer.
    ///
    /// So an idle writer gets rows as soon as they have lingered, and while a write is in
    /// flight rows coalesce into the next batch, which leaves when that write is acknowledged
    /// (or on size or `max_delay`, up to `max_in_flight`).
    pub fn next_batch(&mut self, now: Instant, closing: bool) -> Option<Batch<R>> {
        let policy = &self.policy;
        let waited = now.saturating_duration_since(self.buffer_started);
        let due = self.buffer.len() >= policy.max_rows
            || self.buffer_bytes >= policy.max_bytes
            || waited >= policy.max_delay
            || (self.in_flight.is_empty() && waited >= policy.linger)
            || closing;
        if self.failed
            || self.buffer.is_empty()
            || self.in_flight.len() >= policy.max_in_flight
            || !due
        {
            return None;
        }
        let take = self.buffer.len().min(policy.max_rows);
        let rows: Vec<R> = self.buffer.drain(..take).collect();
        self.buffer_bytes -= rows.iter().map(self.row_size).sum::<usize>();
        // The batch holds the times of its own rows only.
        let times = self.runs.take_front(take);
        for t in &times {
            *self.sent_times.entry(*t).or_default() += 1;
        }
        let stamps = rows.iter().filter_map(self.kafka_ts_ms).collect();
        self.next_id += 1;
        self.in_flight.insert(
            self.next_id,
            Sent {
                times,
                stamps,
                rows: rows.len(),
            },
        );
        Some(Batch {
            id: self.next_id,
            rows,
        })
    }

    /// The store made batch `id` durable: its times are released (those without other
    /// buffered or sent rows complete). `None` for an unknown id.
    pub fn acknowledge(&mut self, id: u64) -> Option<Sent> {
        let sent = self.in_flight.remove(&id)?;
        for t in &sent.times {
            if let std::collections::btree_map::Entry::Occupied(mut e) = self.sent_times.entry(*t) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        Some(sent)
    }

    /// Batch `id` failed definitely: the batcher stops cutting batches, and the batch's times
    /// stay held for good (nothing at or after them may complete). `None` for an unknown id.
    pub fn fail(&mut self, id: u64) -> Option<Sent> {
        let sent = self.in_flight.remove(&id)?;
        self.failed = true;
        Some(sent)
    }

    /// Stops cutting batches (the writer is gone); what is buffered or in flight stays held.
    pub fn halt(&mut self) {
        self.failed = true;
    }

    /// Whether a batch failed or the batcher was halted.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The least time with a row buffered or in flight: what the operator's capability may
    /// downgrade to. `None` once every row pushed is acknowledged (the capability may go).
    pub fn hold(&self) -> Option<u64> {
        let buffered = self.runs.rows.keys().next();
        let sent = self.sent_times.keys().next();
        match (buffered, sent) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    /// Whether rows at `time` are buffered or in flight.
    pub fn holds(&self, time: u64) -> bool {
        self.runs.holds(time) || self.sent_times.contains_key(&time)
    }

    /// Rows buffered, not yet cut into a batch.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Rows held: buffered or in flight.
    pub fn held_rows(&self) -> usize {
        self.buffer.len() + self.in_flight.values().map(|s| s.rows).sum::<usize>()
    }

    /// How long after `now` the buffer's deadline falls (zero when it is due), or `None` when
    /// nothing is buffered: the operator re-activates itself after that long. With no batch in
    /// flight the deadline is the linger's; otherwise an acknowledgement wakes the operator
    /// first, or `max_delay` does.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        (!self.buffer.is_empty()).then(|| {
            let deadline = if self.in_flight.is_empty() {
                self.policy.linger.min(self.policy.max_delay)
            } else {
                self.policy.max_delay
            };
            deadline.saturating_sub(now.saturating_duration_since(self.buffer_started))
        })
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
    use super::*;

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

    /// A timer-only policy: the linger equals `max_delay`, so only size and time cut batches.
    fn policy(max_rows: usize, max_bytes: usize, max_in_flight: usize) -> BatchPolicy {
        BatchPolicy {
            max_rows,
            max_bytes,
            max_delay: Duration::from_millis(100),
            linger: Duration::from_millis(100),
            max_in_flight,
        }
    }

    /// Rows are their own size in bytes; a row's Kafka timestamp is itself when it is even.
    fn batcher(policy: BatchPolicy) -> Batcher<u64> {
        Batcher::new(
            policy,
            |r| *r as usize,
            |r| (r % 2 == 0).then_some(*r as i64),
        )
    }

    fn rows(b: &Batch<u64>) -> Vec<u64> {
        b.rows.clone()
    }

    #[test]
    fn a_batch_is_cut_at_max_rows() {
        let now = Instant::now();
        let mut b = batcher(policy(3, usize::MAX, 10));
        b.push(1, [1, 1], now);
        assert_eq!(b.next_batch(now, false), None, "2 of 3 rows, no deadline");
        b.push(1, [1, 1, 1, 1], now);
        let first = b.next_batch(now, false).expect("max_rows reached");
        assert_eq!((first.id, rows(&first)), (1, vec![1, 1, 1]));
        let second = b.next_batch(now, false).expect("3 rows left");
        assert_eq!((second.id, rows(&second)), (2, vec![1, 1, 1]));
        assert_eq!(b.next_batch(now, false), None);
        assert_eq!((b.buffered(), b.in_flight(), b.held_rows()), (0, 2, 6));
    }

    #[test]
    fn a_batch_is_cut_at_max_bytes() {
        let now = Instant::now();
        let mut b = batcher(policy(100, 10, 10));
        b.push(1, [4, 5], now);
        assert_eq!(b.next_batch(now, false), None, "9 bytes");
        b.push(1, [1], now);
        let batch = b.next_batch(now, false).expect("10 bytes");
        assert_eq!(rows(&batch), vec![4, 5, 1]);
        // The byte count starts again from what is left.
        b.push(2, [9], now);
        assert_eq!(b.next_batch(now, false), None, "9 bytes again");
    }

    #[test]
    fn a_batch_is_cut_at_the_deadline_or_when_the_input_closes() {
        let start = Instant::now();
        let mut b = batcher(policy(100, usize::MAX, 10));
        b.push(1, [1, 2], start);
        assert_eq!(b.wait(start), Some(Duration::from_millis(100)));
        let later = start + Duration::from_millis(60);
        assert_eq!(b.wait(later), Some(Duration::from_millis(40)));
        assert_eq!(b.next_batch(later, false), None);
        let due = start + Duration::from_millis(100);
        assert_eq!(b.wait(due), Some(Duration::ZERO));
        assert_eq!(
            rows(&b.next_batch(due, false).expect("deadline")),
            vec![1, 2]
        );
        assert_eq!(b.wait(due), None, "nothing buffered");
        // The deadline counts from the first row of a new buffer.
        b.push(2, [3], due);
        assert_eq!(b.next_batch(due, false), None);
        assert_eq!(rows(&b.next_batch(due, true).expect("closing")), vec![3]);
    }

    #[test]
    fn an_idle_writer_gets_rows_after_the_linger_and_a_busy_one_coalesces_them() {
        let start = Instant::now();
        let linger = Duration::from_millis(5);
        let mut b = batcher(BatchPolicy {
            linger,
            ..policy(100, usize::MAX, 2)
        });
        b.push(1, [1], start);
        assert_eq!(b.wait(start), Some(linger), "idle: the linger's deadline");
        assert_eq!(b.next_batch(start, false), None, "still lingering");
        let first = b.next_batch(start + linger, false).expect("idle writer");
        assert_eq!(rows(&first), vec![1]);
        // A write is in flight: rows coalesce past the linger, up to max_delay.
        let t = start + Duration::from_millis(10);
        b.push(1, [2, 3], t);
        assert_eq!(b.wait(t), Some(Duration::from_millis(100)));
        assert_eq!(b.next_batch(t + linger, false), None, "busy: coalescing");
        b.push(2, [4], t + linger);
        // The acknowledgement makes the writer idle: what coalesced leaves as one batch.
        b.acknowledge(first.id).expect("known");
        let second = b.next_batch(t + linger, false).expect("idle again");
        assert_eq!(rows(&second), vec![2, 3, 4]);
        // max_delay still bounds the wait while busy.
        let u = t + Duration::from_millis(20);
        b.push(3, [5], u);
        assert_eq!(b.next_batch(u + Duration::from_millis(99), false), None);
        let third = b.next_batch(u + Duration::from_millis(100), false);
        assert_eq!(
            third.map(|b| rows(&b)),
            Some(vec![5]),
            "max_delay while busy"
        );
        // A zero linger writes at once.
        let mut eager = batcher(BatchPolicy {
            linger: Duration::ZERO,
            ..policy(100, usize::MAX, 2)
        });
        eager.push(1, [7], start);
        assert_eq!(eager.wait(start), Some(Duration::ZERO));
        assert!(eager.next_batch(start, false).is_some());
    }

    #[test]
    fn the_in_flight_limit_holds_batches_back_until_one_is_acknowledged() {
        let now = Instant::now();
        let mut b = batcher(policy(1, usize::MAX, 2));
        b.push(1, [1, 2, 3], now);
        let one = b.next_batch(now, false).expect("first");
        let _two = b.next_batch(now, false).expect("second");
        assert_eq!(b.next_batch(now, true), None, "two in flight");
        let sent = b.acknowledge(one.id).expect("known batch");
        assert_eq!(
            sent,
            Sent {
                times: vec![1],
                stamps: vec![],
                rows: 1
            }
        );
        assert_eq!(
            rows(&b.next_batch(now, false).expect("room again")),
            vec![3]
        );
        assert_eq!(b.acknowledge(one.id), None, "acknowledged once only");
    }

    #[test]
    fn times_complete_as_their_batches_are_acknowledged() {
        let now = Instant::now();
        let mut b = batcher(policy(2, usize::MAX, 10));
        assert_eq!(b.hold(), None);
        b.push(1, [2, 4], now);
        b.push(2, [6], now);
        b.push(3, [7], now);
        assert_eq!(b.hold(), Some(1));
        let first = b.next_batch(now, false).expect("rows at 1");
        let second = b.next_batch(now, false).expect("rows at 2 and 3");
        assert_eq!(b.next_batch(now, true), None, "all sent");
        assert!(b.holds(1) && b.holds(2) && b.holds(3));
        // The later batch first: time 1 is still held, and with it the capability.
        let sent = b.acknowledge(second.id).expect("known");
        assert_eq!(sent.times, vec![2, 3]);
        assert_eq!(sent.stamps, vec![6]);
        assert_eq!(b.hold(), Some(1));
        assert!(!b.holds(2) && !b.holds(3));
        let sent = b.acknowledge(first.id).expect("known");
        assert_eq!((sent.stamps, sent.rows), (vec![2, 4], 2));
        assert_eq!(b.hold(), None);
        assert_eq!(b.held_rows(), 0);
    }

    #[test]
    fn a_time_split_over_batches_completes_with_the_last_of_them() {
        let now = Instant::now();
        let mut b = batcher(policy(2, usize::MAX, 10));
        b.push(5, [1, 1, 1], now);
        b.push(6, [1], now);
        let a = b.next_batch(now, false).expect("two rows at 5");
        let c = b.next_batch(now, false).expect("one at 5, one at 6");
        b.acknowledge(a.id);
        assert_eq!(b.hold(), Some(5), "a row at 5 is still in flight");
        b.acknowledge(c.id);
        assert_eq!(b.hold(), None);
    }

    #[test]
    fn buffered_rows_hold_their_time_while_older_times_complete() {
        let now = Instant::now();
        let mut b = batcher(policy(2, usize::MAX, 10));
        b.push(1, [1, 1], now);
        b.push(2, [1], now);
        let a = b.next_batch(now, false).expect("rows at 1");
        b.acknowledge(a.id);
        assert_eq!(b.hold(), Some(2), "the buffered row at 2");
        // A late container of an earlier time lowers the hold again.
        b.push(1, [1], now);
        assert_eq!(b.hold(), Some(1));
    }

    #[test]
    fn a_failed_batch_stops_batching_and_keeps_its_times_held() {
        let now = Instant::now();
        let mut b = batcher(policy(1, usize::MAX, 10));
        b.push(1, [1], now);
        b.push(2, [1, 1], now);
        let a = b.next_batch(now, false).expect("row at 1");
        let _c = b.next_batch(now, false).expect("row at 2");
        assert_eq!(b.fail(a.id).map(|s| s.times), Some(vec![1]));
        assert!(b.failed());
        assert_eq!(b.next_batch(now, true), None, "no batch after a failure");
        assert_eq!(b.hold(), Some(1));
        assert_eq!(b.fail(a.id), None);
        let mut h = batcher(policy(1, usize::MAX, 10));
        h.push(1, [1], now);
        h.halt();
        assert!(h.failed());
        assert_eq!(h.next_batch(now, true), None);
        assert_eq!(h.hold(), Some(1));
    }

    #[test]
    fn empty_pushes_change_nothing() {
        let now = Instant::now();
        let mut b = batcher(policy(1, usize::MAX, 10));
        b.push(3, std::iter::empty(), now);
        assert_eq!((b.hold(), b.buffered(), b.wait(now)), (None, 0, None));
        assert_eq!(b.next_batch(now, true), None);
    }
}
