//! The end-to-end harness's results and their markdown rendering: one table of rates, the
//! ratios of the job to its parts, the batch-size comparison and the live latency. The harness
//! only fills in [`Report`] and [`RunInfo`]; every line of the report is written here (the
//! figures of the other sinks by [`sinks`]).
//!
//! Repeated measurements keep every value; the tables show medians with the range beside them,
//! because on a shared 2-core machine one number alone says little.

use std::fmt::Write as _;
use std::time::Duration;

use crate::job::DEFAULT_BATCH_ROWS;
use crate::prom;

mod alarms;
mod goals;
mod rollups;
mod sinks;
pub use alarms::{AlarmCounts, AlarmFigures, AlarmRun, RuleMix};
pub use goals::{DimensionRun, IssueFigures, ProcessRun, ONE_MILLION};
pub use rollups::{GeofenceFigures, RollupFigures};
pub use sinks::{SinkFigures, CLICKHOUSE_BATCH_ROWS, ELASTICSEARCH_BATCH_ROWS};

/// Rows per statement of the raw MariaDB insert measurement.
pub const INSERT_STATEMENT_ROWS: usize = 1000;

/// What the run was: shown above the tables.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// The command that produced the report.
    pub command: String,
    /// Git commit (with `-dirty` for local changes).
    pub commit: String,
    /// When (UTC).
    pub date: String,
    /// CPUs the machine offers.
    pub cpus: usize,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// MySQL URL, password redacted.
    pub mysql: String,
    /// Readings of the backlog phases.
    pub readings: u64,
    /// Devices.
    pub devices: usize,
    /// Partitions of the readings topics.
    pub partitions: i32,
    /// Job worker threads.
    pub workers: usize,
    /// Readings/s asked of the live producer.
    pub live_rate: f64,
    /// Seconds of live production.
    pub live_secs: u64,
    /// Batch sizes of the backlog phase, in the order asked for.
    pub batch_rows: Vec<usize>,
}

/// Everything one run measured. Measurements repeated per round keep every round's value.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Total JSON bytes of the readings.
    pub payload_bytes: usize,
    /// (1) Producing the readings.
    pub produce: Option<Duration>,
    /// (2) Consuming them back, per round.
    pub consume: Vec<Duration>,
    /// Total bytes of the INSERT statements.
    pub statement_bytes: usize,
    /// (3a) Inserting them on one connection, per round.
    pub insert_1: Vec<Duration>,
    /// (3b) Inserting them on two connections, per round.
    pub insert_2: Vec<Duration>,
    /// (4a) Parsing them with the serde baseline.
    pub serde: Option<Duration>,
    /// (4b) Parsing them with `parse_reading`.
    pub parser: Option<Duration>,
    /// (5a, 5c) The job over the backlog.
    pub backlog: Vec<BacklogRun>,
    /// (5b) The job live.
    pub live: Vec<LiveRun>,
    /// (6) ClickHouse and (7) the Elasticsearch stand-in.
    pub sinks: SinkFigures,
    /// (4c), (7a), (8)–(10): parse + enrich, the stand-in alone, all sinks, memory, two
    /// processes, and the goals of issue 11.
    pub issue: IssueFigures,
    /// (11) of issue 12: the job with alarms against the job without sinks.
    pub alarms: AlarmFigures,
    /// (12) of issue 13: the job with the MySQL sink, rollups off and on.
    pub rollups: RollupFigures,
    /// (13) of issue 13: the job without sinks, and with only geofence rules.
    pub geofences: GeofenceFigures,
}

/// One run of the job over the backlog.
#[derive(Clone, Debug)]
pub struct BacklogRun {
    /// `mysql.batch.max_rows`, or `None` for the run without the MySQL sink.
    pub batch_rows: Option<usize>,
    /// Readings in the backlog.
    pub rows: u64,
    /// Job start → the last row acknowledged.
    pub total: Duration,
    /// Job start → the first scrape that saw rows, and how many it saw.
    pub first: (Duration, f64),
    /// End-to-end latency histogram (cumulative buckets).
    pub latency: Vec<(f64, f64)>,
    /// Batch write time histogram (cumulative buckets).
    pub batch_write: Vec<(f64, f64)>,
    /// Peak RSS of the job process, bytes (sampled every 50 ms).
    pub peak_rss: Option<u64>,
}

impl BacklogRun {
    /// Readings/s from the job's start (start-up included).
    pub fn rate(&self) -> f64 {
        per_sec(self.rows as f64, self.total)
    }

    /// Readings/s from the first row written (start-up excluded); `None` when the first scrape
    /// already saw (nearly) every row, so there is no interval to measure.
    pub fn rate_after_start(&self) -> Option<f64> {
        let rows = self.rows as f64 - self.first.1;
        let secs = self.total.saturating_sub(self.first.0);
        (rows > 0.0 && secs >= 2 * crate::job::SCRAPE_EVERY).then(|| per_sec(rows, secs))
    }
}

/// One live run: the job waiting on an empty topic while a producer sends at a fixed rate.
#[derive(Clone, Debug)]
pub struct LiveRun {
    /// `mysql.batch.max_rows`.
    pub batch_rows: usize,
    /// Readings produced (and written).
    pub produced: u64,
    /// How long producing them took.
    pub produce_time: Duration,
    /// End-to-end latency of just these readings (cumulative buckets).
    pub latency: Vec<(f64, f64)>,
    /// Their age when the source read them (Kafka timestamp → poll; cumulative buckets): the
    /// broker's and the fetch's share of `latency`.
    pub read_age: Vec<(f64, f64)>,
    /// Peak RSS of the job process, bytes (sampled every 50 ms).
    pub peak_rss: Option<u64>,
}

/// `n` per `d`.
pub fn per_sec(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

/// A rate with thousands separators: `1,234,567`.
pub fn rate(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as mebibytes (`123.4 MiB`), or `-`.
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    })
}

/// The median of some runs' peak RSS, as [`mib`].
fn median_rss<'a>(runs: impl IntoIterator<Item = &'a BacklogRun>) -> String {
    mib(median(
        runs.into_iter()
            .filter_map(|r| r.peak_rss.map(|b| b as f64)),
    )
    .map(|b| b as u64))
}

/// Seconds as milliseconds (`216 ms`, `1.5 ms`).
fn ms(seconds: f64) -> String {
    if seconds >= 0.1 {
        format!("{:.0} ms", seconds * 1000.0)
    } else {
        format!("{:.1} ms", seconds * 1000.0)
    }
}

/// The `q`-quantile of a latency histogram with the bucket it was interpolated in:
/// `216 ms (100–250)`, or `> 60000 ms` beyond the last bucket, `-` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> String {
    match (
        prom::histogram_quantile(q, buckets),
        prom::quantile_bucket(q, buckets),
    ) {
        (Some(v), Some((_, upper))) if upper.is_infinite() => format!("> {}", ms(v)),
        (Some(v), Some((lower, upper))) => format!(
            "{} ({}–{})",
            ms(v),
            (lower * 1000.0).round(),
            (upper * 1000.0).round()
        ),
        _ => "-".into(),
    }
}

/// The median of `values` (the upper one of an even count); `None` when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// `min–max` of `values` as rates, or the single value.
fn range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match values.len() {
        0 => "-".into(),
        1 => rate(min),
        _ => format!("{}–{}", rate(min), rate(max)),
    }
}

/// A rate, or `-`.
fn cell(r: Option<f64>) -> String {
    r.map_or("-".into(), rate)
}

impl Report {
    fn rates(times: &[Duration], n: f64) -> Vec<f64> {
        times.iter().map(|&d| per_sec(n, d)).collect()
    }

    /// The backlog runs of one configuration.
    fn runs(&self, batch_rows: Option<usize>) -> Vec<&BacklogRun> {
        self.backlog
            .iter()
            .filter(|r| r.batch_rows == batch_rows)
            .collect()
    }

    /// Rates from start and from the first row of every run of one configuration.
    pub(crate) fn job_rates(&self, batch_rows: Option<usize>) -> (Vec<f64>, Vec<f64>) {
        let runs = self.runs(batch_rows);
        (
            runs.iter().map(|r| r.rate()).collect(),
            runs.iter().filter_map(|r| r.rate_after_start()).collect(),
        )
    }

    /// The run of `batch_rows` with the median rate from the first row.
    fn median_run(&self, batch_rows: Option<usize>) -> Option<&BacklogRun> {
        let mut runs = self.runs(batch_rows);
        let key = |r: &BacklogRun| r.rate_after_start().unwrap_or(0.0);
        runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
        runs.get(runs.len() / 2).copied()
    }

    /// The run whose rates stand for "the job": the default batch size if it ran.
    fn headline(&self) -> Option<&BacklogRun> {
        self.median_run(Some(DEFAULT_BATCH_ROWS))
            .or_else(|| self.backlog.iter().find(|r| r.batch_rows.is_some()))
    }

    /// The whole report as markdown.
    pub fn render(&self, info: &RunInfo) -> String {
        let n = info.readings as f64;
        let consume = Self::rates(&self.consume, n);
        let insert_1 = Self::rates(&self.insert_1, n);
        let insert_2 = Self::rates(&self.insert_2, n);
        let serde = self.serde.map(|d| per_sec(n, d));
        let parser = self.parser.map(|d| per_sec(n, d));
        let (no_sink, no_sink_steady) = self.job_rates(None);
        let headline = self.headline();
        let sinks = self.sinks.lines(self, info);

        let mut s = String::new();
        let _ = writeln!(s, "## iotflow end-to-end benchmark\n");
        let _ = writeln!(s, "- command: `{}`", info.command);
        let _ = writeln!(s, "- commit: `{}`", info.commit);
        let _ = writeln!(s, "- date: {}", info.date);
        let _ = writeln!(
            s,
            "- machine: {} CPUs (shared); broker {} (tansu, memory storage); MariaDB {}",
            info.cpus, info.brokers, info.mysql
        );
        let _ = writeln!(
            s,
            "- data: {} readings of {} devices, {:.0} bytes of JSON each on average, {} partitions; \
             job `-w {}`; {} interleaved round(s) of (2), (3), (5a), (5c): medians, ranges in notes\n",
            info.readings,
            info.devices,
            self.payload_bytes as f64 / n,
            info.partitions,
            info.workers,
            self.consume.len()
        );

        let _ = writeln!(s, "| # | measurement | readings/s | notes |");
        let _ = writeln!(s, "|---|---|---:|---|");
        let _ = writeln!(
            s,
            "| 1 | broker produce (rdkafka, linger 5 ms, acks all) | {} | {:.2} s for {:.1} MB, once |",
            cell(self.produce.map(|d| per_sec(n, d))),
            self.produce.map_or(0.0, |d| d.as_secs_f64()),
            self.payload_bytes as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "| 2 | broker consume (one BaseConsumer, all partitions, no processing) | {} | {} |",
            cell(median(consume.clone())),
            range(&consume)
        );
        let _ = writeln!(
            s,
            "| 3a | MariaDB INSERT, {INSERT_STATEMENT_ROWS}-row statements, 1 connection | {} | {}; {:.0} bytes/row |",
            cell(median(insert_1.clone())),
            range(&insert_1),
            self.statement_bytes as f64 / n
        );
        let _ = writeln!(
            s,
            "| 3b | MariaDB INSERT, {INSERT_STATEMENT_ROWS}-row statements, 2 connections | {} | {} |",
            cell(median(insert_2.clone())),
            range(&insert_2)
        );
        let _ = writeln!(
            s,
            "| 4a | serde parse alone (`f64` fields, no validation), 1 thread | {} | median of 5 passes |",
            cell(serde)
        );
        let _ = writeln!(
            s,
            "| 4b | `parse_reading` (exact decimals, validated), 1 thread | {} | median of 5 passes |",
            cell(parser)
        );
        if let Some(run) = headline {
            let size = run.batch_rows.unwrap_or_default();
            let (from_start, steady) = self.job_rates(run.batch_rows);
            let _ = writeln!(
                s,
                "| 5a | **job**, backlog, max_rows {size}, from process start | **{}** | {}; first row after {:.2} s; peak RSS {} |",
                cell(median(from_start.clone())),
                range(&from_start),
                run.first.0.as_secs_f64(),
                median_rss(self.runs(run.batch_rows))
            );
            let _ = writeln!(
                s,
                "| 5a | **job**, backlog, max_rows {size}, from the first row written | **{}** | {} |",
                cell(median(steady.clone())),
                range(&steady)
            );
            let _ = writeln!(
                s,
                "| 5a | job, backlog: e2e latency p50 / p99 | - | {} / {} (the age of the backlog, not the job's latency) |",
                quantile(0.5, &run.latency),
                quantile(0.99, &run.latency)
            );
        }
        if let Some(live) = self
            .live
            .iter()
            .find(|l| l.batch_rows == DEFAULT_BATCH_ROWS)
            .or(self.live.first())
        {
            let _ = writeln!(
                s,
                "| 5b | **job, live** at {}/s for {} s, max_rows {}: e2e latency p50 / p99 | {} | **{} / {}** over {} readings (readings/s: as produced); {}; of it the age at read (Kafka timestamp → poll: broker and fetch) p50 / p99 {} / {}; peak RSS {} |",
                rate(info.live_rate),
                info.live_secs,
                live.batch_rows,
                rate(per_sec(live.produced as f64, live.produce_time)),
                quantile(0.5, &live.latency),
                quantile(0.99, &live.latency),
                prom::count(&live.latency),
                goals::latency_goal(&live.latency, Some(0.020), 0.050),
                quantile(0.5, &live.read_age),
                quantile(0.99, &live.read_age),
                mib(live.peak_rss)
            );
        }
        if !no_sink.is_empty() {
            let _ = writeln!(
                s,
                "| 5c | job without the MySQL sink (Kafka → parse → enrich), from process start | {} | {}; peak RSS {} |",
                cell(median(no_sink.clone())),
                range(&no_sink),
                median_rss(self.runs(None))
            );
            let _ = writeln!(
                s,
                "| 5c | job without the MySQL sink, from the first reading enriched | {} | {} (coarse: 50 ms scrapes of a sub-second run) |",
                cell(median(no_sink_steady.clone())),
                range(&no_sink_steady)
            );
        }
        for row in &sinks.rows {
            let _ = writeln!(s, "{row}");
        }
        let issue = self.issue.lines(self, info);
        for row in &issue.rows {
            let _ = writeln!(s, "{row}");
        }

        if let Some(run) = headline {
            let (from_start, steady) = self.job_rates(run.batch_rows);
            let job = median(from_start);
            let job_steady = median(steady);
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "\n| ratio (job at max_rows {}, medians) | from start | from first row |",
                run.batch_rows.unwrap_or_default()
            );
            let _ = writeln!(s, "|---|---:|---:|");
            let same = |x: Option<f64>| (x, x);
            for (what, (limit, steady_limit)) in [
                ("÷ broker consume (2)", same(median(consume))),
                (
                    "÷ MariaDB insert, 1 connection (3a)",
                    same(median(insert_1)),
                ),
                (
                    "÷ MariaDB insert, 2 connections (3b)",
                    same(median(insert_2)),
                ),
                ("÷ serde parse alone, 1 thread (4a)", same(serde)),
                ("÷ `parse_reading`, 1 thread (4b)", same(parser)),
                (
                    "÷ job without the MySQL sink (5c)",
                    (median(no_sink), median(no_sink_steady)),
                ),
            ] {
                if limit.is_some() {
                    let _ = writeln!(
                        s,
                        "| job {what} | {} | {} |",
                        ratio(job, limit),
                        ratio(job_steady, steady_limit)
                    );
                }
            }
            for line in &sinks.ratios {
                let _ = writeln!(s, "{line}");
            }
        }

        if !info.batch_rows.is_empty() && !self.backlog.is_empty() {
            let _ = writeln!(
                s,
                "\n| max_rows | readings/s from start | from first row (median) | from first row, each round | first row after | batch write p50 / p99 | peak RSS (median) |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---|---:|---|---:|");
            for &size in &info.batch_rows {
                let Some(run) = self.median_run(Some(size)) else {
                    continue;
                };
                let (from_start, steady) = self.job_rates(Some(size));
                let each: Vec<String> = steady.iter().map(|&r| rate(r)).collect();
                let _ = writeln!(
                    s,
                    "| {size} | {} | {} | {} | {:.2} s | {} / {} | {} |",
                    cell(median(from_start)),
                    cell(median(steady)),
                    each.join(", "),
                    run.first.0.as_secs_f64(),
                    quantile(0.5, &run.batch_write),
                    quantile(0.99, &run.batch_write),
                    median_rss(self.runs(Some(size)))
                );
            }
        }
        if self.live.len() > 1 {
            let _ = writeln!(
                s,
                "\n| live, max_rows | produced readings/s | readings | e2e p50 | e2e p99 | read age p50 | read age p99 | peak RSS |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---|---|---|---|---:|");
            for live in &self.live {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    live.batch_rows,
                    rate(per_sec(live.produced as f64, live.produce_time)),
                    prom::count(&live.latency),
                    quantile(0.5, &live.latency),
                    quantile(0.99, &live.latency),
                    quantile(0.5, &live.read_age),
                    quantile(0.99, &live.read_age),
                    mib(live.peak_rss)
                );
            }
        }
        for line in &issue.tables {
            let _ = writeln!(s, "{line}");
        }
        for line in self.alarms.lines(info) {
            let _ = writeln!(s, "{line}");
        }
        for line in self
            .rollups
            .lines()
            .into_iter()
            .chain(self.geofences.lines())
        {
            let _ = writeln!(s, "{line}");
        }
        if let Some(verdict) = self.batch_verdict(&info.batch_rows) {
            let _ = writeln!(s, "\n{verdict}");
        }
        for warning in self.warnings(info) {
            let _ = writeln!(s, "\nWarning: {warning}");
        }
        if headline.is_none() {
            // No job ratio table to follow: the other sinks' ratios close the report.
            for line in &sinks.ratios {
                let _ = writeln!(s, "{line}");
            }
        }
        s
    }

    /// The fastest batch size by median rate from the first row, and how close the default
    /// comes to it.
    pub fn batch_verdict(&self, sizes: &[usize]) -> Option<String> {
        let medians: Vec<(usize, f64)> = sizes
            .iter()
            .filter_map(|&b| {
                median(
                    self.runs(Some(b))
                        .iter()
                        .filter_map(|r| r.rate_after_start()),
                )
                .map(|m| (b, m))
            })
            .collect();
        let &(best, best_rate) = medians.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let (_, steady) = self.job_rates(Some(best));
        let default = medians.iter().find(|(b, _)| *b == DEFAULT_BATCH_ROWS);
        Some(match default {
            Some(&(_, default_rate)) => format!(
                "Batch size: the fastest median is max_rows = {best} ({}/s from the first row, \
                 rounds {}); the default {DEFAULT_BATCH_ROWS} reaches {:.0}% of it.",
                rate(best_rate),
                range(&steady),
                100.0 * default_rate / best_rate
            ),
            None => format!(
                "Batch size: the fastest median is max_rows = {best} ({}/s from the first row).",
                rate(best_rate)
            ),
        })
    }

    /// Conditions that make the live latency figure suspect.
    fn warnings(&self, info: &RunInfo) -> Vec<String> {
        let mut warnings = Vec::new();
        let steady = self.headline().and_then(BacklogRun::rate_after_start);
        if steady.is_some_and(|s| info.live_rate > 0.8 * s) {
            warnings.push(format!(
                "the live rate ({}/s) is above 80% of the job's backlog throughput; the live \
                 latency includes queueing.",
                rate(info.live_rate)
            ));
        }
        for live in &self.live {
            let achieved = per_sec(live.produced as f64, live.produce_time);
            if achieved < 0.95 * info.live_rate {
                warnings.push(format!(
                    "the live producer (max_rows {}) reached only {}/s of the {}/s asked for.",
                    live.batch_rows,
                    rate(achieved),
                    rate(info.live_rate)
                ));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(batch_rows: Option<usize>, secs: f64) -> BacklogRun {
        BacklogRun {
            batch_rows,
            rows: 100_000,
            total: Duration::from_secs_f64(secs + 1.0),
            first: (Duration::from_secs(1), 0.0),
            latency: vec![(0.1, 10.0), (0.25, 90.0), (f64::INFINITY, 100.0)],
            batch_write: vec![(0.01, 5.0), (f64::INFINITY, 10.0)],
            peak_rss: Some(100 << 20),
        }
    }

    fn report() -> Report {
        Report {
            payload_bytes: 12_000_000,
            produce: Some(Duration::from_millis(250)),
            consume: vec![Duration::from_millis(500); 3],
            statement_bytes: 19_000_000,
            insert_1: vec![Duration::from_secs(2); 3],
            insert_2: vec![Duration::from_secs(1); 3],
            serde: Some(Duration::from_millis(50)),
            parser: Some(Duration::from_millis(100)),
            backlog: vec![
                run(Some(500), 4.0),
                run(Some(2000), 2.0),
                run(Some(5000), 2.5),
                run(Some(2000), 2.2),
                run(Some(2000), 1.8),
                run(None, 0.5),
            ],
            live: vec![LiveRun {
                batch_rows: 2000,
                produced: 100_000,
                produce_time: Duration::from_secs(10),
                latency: vec![(0.1, 0.0), (0.25, 50_000.0), (f64::INFINITY, 100_000.0)],
                read_age: vec![(0.05, 0.0), (0.1, 50_000.0), (f64::INFINITY, 100_000.0)],
                peak_rss: Some(150 << 20),
            }],
            sinks: SinkFigures::default(),
            issue: IssueFigures::default(),
            alarms: AlarmFigures::default(),
            rollups: RollupFigures::default(),
            geofences: GeofenceFigures::default(),
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            readings: 100_000,
            live_rate: 10_000.0,
            live_secs: 10,
            batch_rows: vec![500, 2000, 5000],
            ..RunInfo::default()
        }
    }

    #[test]
    fn ratios_use_medians_of_the_default_batch_size() {
        let text = report().render(&info());
        // Job median from the first row: 100 000 rows in 2 s; MariaDB 2 connections 100 000/s.
        assert!(
            text.contains("| job ÷ MariaDB insert, 2 connections (3b) | 0.33 | 0.50 |"),
            "{text}"
        );
        assert!(text.contains("| job ÷ broker consume (2) | 0.17 | 0.25 |"));
        // Without the sink, each column is divided by its own kind of rate.
        assert!(text.contains("| job ÷ job without the MySQL sink (5c) | 0.50 | 0.25 |"));
        assert!(text.contains("| 2000 | 33,333 | 50,000 | 50,000, 45,455, 55,556 |"));
        assert!(text.contains("**250 ms (100–250) / > 250 ms**"), "{text}");
        // The age at read is reported beside the end-to-end latency it is part of.
        assert!(
            text.contains(
                "(Kafka timestamp → poll: broker and fetch) p50 / p99 100 ms (50–100) / > 100 ms"
            ),
            "{text}"
        );
    }

    #[test]
    fn verdict_names_the_fastest_size_and_the_default_share() {
        let verdict = report().batch_verdict(&info().batch_rows).unwrap();
        assert!(
            verdict.contains("fastest median is max_rows = 2000 (50,000/s"),
            "{verdict}"
        );
        assert!(verdict.contains("reaches 100% of it"));
        assert_eq!(rate(1_234_567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
    }
}
