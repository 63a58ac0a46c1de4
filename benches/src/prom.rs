//! Reading the job's `/metrics` text: counters summed over their label sets, histograms merged
//! bucket by bucket, and quantiles interpolated the way Prometheus' `histogram_quantile` does.
//!
//! The text format itself is parsed by `iotflow_metrics::Exposition` (the project's one
//! parser); this module only adds up what the harness needs from it.

use iotflow_metrics::Exposition;

/// The sum of every sample of `name` over all label sets (0 when there is none). A
/// histogram's own name has no samples (its `_bucket`, `_count` and `_sum` series do).
///
/// ```
/// let text = "# TYPE x_total counter\nx_total{worker=\"0\"} 3\nx_total{worker=\"1\"} 4\nx_totals 9\n";
/// assert_eq!(iotflow_benches::prom::sum(text, "x_total"), 7.0);
/// ```
pub fn sum(text: &str, name: &str) -> f64 {
    Exposition::parse(text).sum(name, &[]).unwrap_or(0.0)
}

/// The sum of the samples of `name` whose labels match every `label = value` of `filter` (0
/// when none does).
///
/// ```
/// let text = "x_total{kind=\"raised\",w=\"0\"} 3\nx_total{kind=\"cleared\",w=\"0\"} 4\nx_total{kind=\"raised\",w=\"1\"} 2\n";
/// assert_eq!(iotflow_benches::prom::sum_where(text, "x_total", &[("kind", "raised")]), 5.0);
/// ```
pub fn sum_where(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    Exposition::parse(text).sum(name, filter).unwrap_or(0.0)
}

/// The cumulative buckets `(le, count)` of histogram `name`, summed over all other labels and
/// sorted by `le` (the last one is `+Inf`).
pub fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for sample in Exposition::parse(text).samples {
        let le = sample.label("le").and_then(|le| le.parse::<f64>().ok());
        let Some(le) = le.filter(|_| sample.name == bucket) else {
            continue;
        };
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, count)) => *count += sample.value,
            None => buckets.push((le, sample.value)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// Buckets observed since `before` was taken: `after - before`, bucket by bucket (both from
/// [`histogram`] of the same process).
pub fn difference(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, m)| *m);
            (le, n - earlier)
        })
        .collect()
}

/// The total number of observations of cumulative `buckets`.
pub fn count(buckets: &[(f64, f64)]) -> f64 {
    buckets.last().map_or(0.0, |(_, n)| *n)
}

/// The `q`-quantile of cumulative `buckets`, as Prometheus' `histogram_quantile` computes it:
/// find the bucket holding rank `q * count` and interpolate linearly inside it (the first bucket
/// starts at 0). A rank in the `+Inf` bucket yields the largest finite bound, a lower bound of
/// the truth. `None` without observations.
///
/// ```
/// use iotflow_benches::prom::histogram_quantile;
/// let b = [(0.1, 50.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
/// assert_eq!(histogram_quantile(0.5, &b), Some(0.1));
/// assert!((histogram_quantile(0.75, &b).unwrap() - 0.55).abs() < 1e-9);
/// ```
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = count(buckets);
    if total <= 0.0 || buckets.len() < 2 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let i = buckets.iter().position(|&(_, n)| n >= rank)?;
    let (upper, n) = buckets[i];
    if upper.is_infinite() {
        return Some(buckets[buckets.len() - 2].0);
    }
    let (lower, below) = if i == 0 {
        (0.0_f64.min(upper), 0.0)
    } else {
        buckets[i - 1]
    };
    if n == below {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / (n - below))
}

/// The bounds `(lower, upper]` of the bucket that holds the `q`-quantile (`upper` is infinite
/// for the `+Inf` bucket): how much [`histogram_quantile`]'s interpolation can be trusted.
pub fn quantile_bucket(q: f64, buckets: &[(f64, f64)]) -> Option<(f64, f64)> {
    let total = count(buckets);
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let i = buckets.iter().position(|&(_, n)| n >= rank)?;
    let lower = if i == 0 { 0.0 } else { buckets[i - 1].0 };
    Some((lower, buckets[i].0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP lat Latency.
# TYPE lat histogram
lat_bucket{job="j",le="0.01",worker="0"} 10
lat_bucket{job="j",le="0.1",worker="0"} 80
lat_bucket{job="j",le="+Inf",worker="0"} 100
lat_sum{job="j",worker="0"} 5
lat_count{job="j",worker="0"} 100
lat_bucket{job="j",le="0.01",worker="1"} 0
lat_bucket{job="j",le="0.1",worker="1"} 20
lat_bucket{job="j",le="+Inf",worker="1"} 100
rows_total{sink="mysql",worker="0"} 1000
rows_total{sink="mysql",worker="1"} 234
"#;

    #[test]
    fn merges_buckets_and_sums_counters() {
        assert_eq!(
            histogram(TEXT, "lat"),
            vec![(0.01, 10.0), (0.1, 100.0), (f64::INFINITY, 200.0)]
        );
        assert_eq!(sum(TEXT, "rows_total"), 1234.0);
        assert_eq!(sum(TEXT, "lat"), 0.0);
        assert_eq!(sum(TEXT, "lat_count"), 100.0);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = histogram(TEXT, "lat");
        // Rank 5 of 10 in the first bucket [0, 0.01].
        assert!((histogram_quantile(0.025, &b).unwrap() - 0.005).abs() < 1e-12);
        // Rank 55: 45 of 90 into (0.01, 0.1].
        assert!((histogram_quantile(0.275, &b).unwrap() - 0.055).abs() < 1e-12);
        // Beyond the last finite bound: that bound.
        assert_eq!(histogram_quantile(0.99, &b), Some(0.1));
        assert_eq!(quantile_bucket(0.275, &b), Some((0.01, 0.1)));
        assert_eq!(quantile_bucket(0.99, &b), Some((0.1, f64::INFINITY)));
        assert_eq!(histogram_quantile(0.5, &[]), None);
        assert_eq!(
            histogram_quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
    }

    #[test]
    fn differences_isolate_a_phase() {
        let before = vec![(0.1, 5.0), (f64::INFINITY, 6.0)];
        let after = vec![(0.1, 15.0), (f64::INFINITY, 26.0)];
        assert_eq!(
            difference(&after, &before),
            vec![(0.1, 10.0), (f64::INFINITY, 20.0)]
        );
    }
}
