//! Rate-limited logging: the one place a repeated warning is thinned out.
//!
//! A fault that hits every record (a broker down, a table locked, a stream of malformed input)
//! would otherwise write one line per record. [`RateLimitedLog`] speaks at most once per
//! interval and says how many lines it held back; the counters in the registry still count
//! every occurrence.

use std::time::{Duration, Instant};

/// Logs at most once per interval, reporting how many messages it held back.
#[derive(Debug)]
pub struct RateLimitedLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// A log that speaks at most once per `every`.
    pub fn new(every: Duration) -> Self {
        RateLimitedLog {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be written now; if not, counts it as suppressed. On `Some(n)` the
    /// caller writes its line (at the level it chooses), mentioning the `n` lines held back
    /// since the last one when `n > 0`.
    pub fn admit(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Logs `message()` at warn level unless it logged within the interval.
    pub fn warn(&mut self, message: impl FnOnce() -> String) {
        match self.admit() {
            None => {}
            Some(0) => tracing::warn!("{}", message()),
            Some(n) => tracing::warn!("{} ({n} similar messages suppressed)", message()),
        }
    }

    /// Logs `message()` at error level unless it logged within the interval.
    pub fn error(&mut self, message: impl FnOnce() -> String) {
        match self.admit() {
            None => {}
            Some(0) => tracing::error!("{}", message()),
            Some(n) => tracing::error!("{} ({n} similar messages suppressed)", message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaks_once_per_interval_and_counts_the_rest() {
        let mut log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        let mut log2 = RateLimitedLog::new(Duration::ZERO);
        assert_eq!(log2.admit(), Some(0));
        assert_eq!(log2.admit(), Some(0));
        // The held-back count is reported with the next line and then reset.
        log.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(log.admit(), Some(2));
        assert_eq!(log.admit(), None);
    }
}
