//! Finding the rows a store refuses inside a batch, by halving.
//!
//! A store that refuses a multi-row write for one bad value refuses all of it and (usually)
//! does not say which row was at fault. [`Bisection`] is the plan every sink follows: write the
//! whole batch; when the store refuses a range for a row's reason, write its halves instead,
//! until a refused range is a single row, which is then the row's fault. k bad rows in n cost
//! about 2k·log2(n) extra writes, and a batch with no bad row costs nothing extra.
//!
//! It is a plain state machine, so each writer keeps its own async write loop (and its own
//! borrows of connections and buffers):
//!
//! ```
//! # use iotflow_sink::Bisection;
//! let rows = [1, 2, -3, 4, 5];
//! let mut refused = Vec::new();
//! let mut split = Bisection::new(rows.len());
//! while let Some(range) = split.next_range() {
//!     // "The store": refuses any write containing a negative value.
//!     if rows[range.clone()].iter().any(|v| *v < 0) {
//!         refused.extend(split.refused(range));
//!     }
//! }
//! assert_eq!(refused, [2]);
//! ```

use std::ops::Range;

/// The ranges of a batch still to write, in row order.
#[derive(Clone, Debug)]
pub struct Bisection {
    // A stack: the next range to write is on top, so ranges come out in row order.
    ranges: Vec<Range<usize>>,
}

impl Bisection {
    /// The plan for a batch of `rows` rows: first, all of them at once.
    pub fn new(rows: usize) -> Bisection {
        Bisection {
            ranges: std::iter::once(0..rows).filter(|r| !r.is_empty()).collect(),
        }
    }

    /// The next range to write, or `None` when every row is written or refused.
    pub fn next_range(&mut self) -> Option<Range<usize>> {
        self.ranges.pop()
    }

    /// The store refused `range` for a row's reason: a range of one row gives that row's index
    /// (it is the row's fault); a longer range is written again as its two halves.
    pub fn refused(&mut self, range: Range<usize>) -> Option<usize> {
        match range.len() {
            0 => None,
            1 => Some(range.start),
            n => {
                let mid = range.start + n / 2;
                self.ranges.push(mid..range.end);
                self.ranges.push(range.start..mid);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a bisection against a store refusing any write that holds a bad row; returns the
    /// refused indices and the number of writes.
    fn run(n: usize, bad: &[usize]) -> (Vec<usize>, usize) {
        let mut split = Bisection::new(n);
        let (mut refused, mut writes, mut written) = (Vec::new(), 0, Vec::new());
        while let Some(range) = split.next_range() {
            writes += 1;
            if range.clone().any(|i| bad.contains(&i)) {
                refused.extend(split.refused(range));
            } else {
                written.extend(range);
            }
        }
        // Every row is written or refused, once, in order.
        let mut all: Vec<usize> = written.iter().chain(&refused).copied().collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        (refused, writes)
    }

    #[test]
    fn a_clean_batch_is_one_write() {
        assert_eq!(run(1000, &[]), (vec![], 1));
        assert_eq!(run(0, &[]), (vec![], 0));
    }

    #[test]
    fn finds_every_bad_row_in_few_writes() {
        let (refused, writes) = run(1024, &[7]);
        assert_eq!(refused, [7]);
        assert!(writes <= 2 * 10 + 1, "{writes} writes");
        let (refused, _) = run(1000, &[0, 1, 500, 999]);
        assert_eq!(refused, [0, 1, 500, 999]);
        assert_eq!(run(1, &[0]), (vec![0], 1));
        let (refused, _) = run(5, &[0, 1, 2, 3, 4]);
        assert_eq!(refused, [0, 1, 2, 3, 4]);
    }
}
