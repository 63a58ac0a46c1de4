use std::time::Duration;

use rand::Rng;

/// When a batch is written: whichever limit is reached first.
#[derive(Clone, Debug)]
pub struct BatchPolicy {
    /// Most rows in one write.
    pub max_rows: usize,
    /// Most (approximate) bytes in one write.
    pub max_bytes: usize,
    /// Longest the first row of a batch waits.
    pub max_delay: Duration,
    /// How long the first row waits while no batch is in flight (an idle writer): zero writes
    /// at once, and rows coalesce while a write is in flight.
    pub linger: Duration,
    /// Batches queued or being written before the sink stops flushing (the source pauses).
    pub max_in_flight: usize,
}

impl From<&iotflow_config::BatchConfig> for BatchPolicy {
    fn from(c: &iotflow_config::BatchConfig) -> Self {
        BatchPolicy {
            max_rows: c.max_rows,
            max_bytes: c.max_bytes,
            max_delay: Duration::from_millis(c.max_delay_ms),
            linger: Duration::from_millis(c.linger_ms),
            max_in_flight: c.max_in_flight,
        }
    }
}

/// Backoff for transient errors.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// First backoff.
    pub initial: Duration,
    /// Ceiling.
    pub max: Duration,
}

impl From<&iotflow_config::RetryConfig> for RetryPolicy {
    fn from(c: &iotflow_config::RetryConfig) -> Self {
        RetryPolicy {
            initial: Duration::from_millis(c.initial_backoff_ms),
            max: Duration::from_millis(c.max_backoff_ms),
        }
    }
}

/// The wait before retry number `attempt` (0-based): full jitter over an exponentially
/// growing, capped window, so many workers retrying at once don't retry in lockstep.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let window = policy
        .initial
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(policy.max)
        .max(Duration::from_millis(1));
    let ms = rand::rng().random_range(0..=window.as_millis() as u64);
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_ceiling_with_jitter() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for attempt in 0..30 {
            let window = (100u64 << attempt.min(20)).min(1000);
            for _ in 0..50 {
                let b = backoff(&p, attempt).as_millis() as u64;
                assert!(
                    (1..=window).contains(&b),
                    "attempt {attempt}: {b} outside 1..={window}"
                );
            }
        }
        // Jitter: not always the same value.
        let samples: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(&p, 5)).collect();
        assert!(samples.len() > 5);
    }
}
