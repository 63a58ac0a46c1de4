//! Putting readings into event-time order, within a lateness bound.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::Sample;

/// What [`Reorder::push`] did with a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Held until the watermark passes its time.
    Held,
    /// The same reading is already held (a redelivery): dropped.
    Duplicate,
    /// Its time is at or before the watermark already released: too late to apply. The
    /// caller counts and reports it; it never changes an alarm.
    Late,
}

/// Holds readings until event time is complete through theirs, then releases them in
/// (time, device, metric) order.
///
/// The watermark is the latest event time seen minus the lateness bound: a reading may arrive
/// up to `lateness_ms` behind the newest one and still be applied in its place. One that
/// arrives later than that is [`Pushed::Late`].
#[derive(Debug)]
pub struct Reorder {
    lateness_ms: i64,
    newest: Option<i64>,
    released: Option<i64>,
    held: BTreeMap<(i64, String, Decimal), Sample>,
}

impl Reorder {
    /// A buffer with the given lateness bound (milliseconds, ≥ 0).
    pub fn new(lateness_ms: i64) -> Reorder {
        Reorder {
            lateness_ms: lateness_ms.max(0),
            newest: None,
            released: None,
            held: BTreeMap::new(),
        }
    }

    /// Takes a reading.
    pub fn push(&mut self, s: Sample) -> Pushed {
        if self.released.is_some_and(|w| s.at_ms <= w) {
            return Pushed::Late;
        }
        self.newest = Some(self.newest.map_or(s.at_ms, |n| n.max(s.at_ms)));
        let key = (s.at_ms, s.pboxid.clone(), s.metric);
        if self.held.contains_key(&key) {
            return Pushed::Duplicate;
        }
        self.held.insert(key, s);
        Pushed::Held
    }

    /// The newest event time seen minus the bound: time is complete through it.
    pub fn watermark(&self) -> Option<i64> {
        self.newest.map(|n| n - self.lateness_ms)
    }

    /// Releases, in order, every reading at or before `watermark` (never moving backwards);
    /// readings at or before it that arrive later are [`Pushed::Late`].
    pub fn release(&mut self, watermark: i64) -> Vec<Sample> {
        let watermark = self.released.map_or(watermark, |w| w.max(watermark));
        self.released = Some(watermark);
        let rest = self
            .held
            .split_off(&(watermark.saturating_add(1), String::new(), Decimal::MIN));
        std::mem::replace(&mut self.held, rest)
            .into_values()
            .collect()
    }

    /// What the buffer holds, for storing: the newest time seen, the watermark released
    /// through, and the readings held (in release order).
    pub fn snapshot(&self) -> (Option<i64>, Option<i64>, Vec<Sample>) {
        (
            self.newest,
            self.released,
            self.held.values().cloned().collect(),
        )
    }

    /// A buffer that continues from [`Reorder::snapshot`].
    pub fn restore(
        lateness_ms: i64,
        newest: Option<i64>,
        released: Option<i64>,
        held: Vec<Sample>,
    ) -> Reorder {
        let mut order = Reorder::new(lateness_ms);
        order.newest = newest;
        order.released = released;
        for s in held {
            order.held.insert((s.at_ms, s.pboxid.clone(), s.metric), s);
        }
        order
    }

    /// Readings held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no reading is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}
