//! The figures issue 11 asks for beyond the sinks' own: (4c) parse + enrich in-process, (7a)
//! the Elasticsearch stand-in's bulk rate alone, (8) the job with all three sinks (backlog and
//! live), (9) peak RSS per size of the dimension, (10) two processes against one, and the goals
//! table that sets each job figure against its reference with the issue's goal beside it.
//! Rendered as part of [`Report::render`](super::Report::render).

use std::time::Duration;

use super::sinks::sink_rates;
use super::{
    cell, median, median_rss, mib, per_sec, quantile, range, rate, BacklogRun, LiveRun, Report,
    RunInfo, CLICKHOUSE_BATCH_ROWS, ELASTICSEARCH_BATCH_ROWS,
};
use crate::job::DEFAULT_BATCH_ROWS;
use crate::prom;

/// Goal 1 of issue 11: the job without sinks at a million readings/s on two workers.
pub const ONE_MILLION: f64 = 1_000_000.0;

/// One backlog run, sinks off, with a dimension of `devices` devices (9).
#[derive(Clone, Debug)]
pub struct DimensionRun {
    /// Devices published to the broadcast topic (and so held by every worker).
    pub devices: usize,
    /// The run.
    pub run: BacklogRun,
}

/// One backlog run, sinks off, of a cluster of `processes` processes of `workers` workers
/// each (10).
#[derive(Clone, Debug)]
pub struct ProcessRun {
    /// Processes (`iotflow run -n`).
    pub processes: usize,
    /// Workers per process (`-w`).
    pub workers: usize,
    /// The run: from the first process's start to the readings enriched over all processes;
    /// `peak_rss` is the largest of the processes'.
    pub run: BacklogRun,
    /// Peak RSS of each process, by process index.
    pub rss: Vec<Option<u64>>,
}

/// What (4c), (7a), (8), (9) and (10) measured.
#[derive(Clone, Debug, Default)]
pub struct IssueFigures {
    /// (4c) One pass of the readings through parse + enrich on one timely worker (median of
    /// the passes).
    pub parse_enrich: Option<Duration>,
    /// (4c) Devices in its dimension.
    pub parse_enrich_devices: usize,
    /// (7a) Posting the readings' documents straight to the stand-in's `_bulk`, one request at
    /// a time, per round.
    pub es_raw_1: Vec<Duration>,
    /// (7a) The same, two requests in flight, per round.
    pub es_raw_2: Vec<Duration>,
    /// (8) Readings of the all-sinks backlog (`--all-sinks`; 0: not run).
    pub all_sinks_readings: u64,
    /// (8) The job with MySQL, ClickHouse and the stand-in over that backlog, per round.
    pub all_sinks: Vec<BacklogRun>,
    /// (8) The job live with all three sinks.
    pub all_sinks_live: Vec<LiveRun>,
    /// (9) Backlog runs, sinks off, per dimension size and round.
    pub dimension: Vec<DimensionRun>,
    /// (10) Backlog runs, sinks off, per cluster layout and round.
    pub processes: Vec<ProcessRun>,
}

/// The rendered lines of [`IssueFigures`].
#[derive(Debug, Default)]
pub(super) struct IssueLines {
    /// Rows of the main table.
    pub rows: Vec<String>,
    /// Tables of their own, each preceded by a blank line.
    pub tables: Vec<String>,
}

/// "goal p50 ≤ 20 ms, p99 ≤ 50 ms: met" for a latency histogram (p50's goal optional).
pub(super) fn latency_goal(buckets: &[(f64, f64)], p50: Option<f64>, p99: f64) -> String {
    let goal = match p50 {
        Some(p50) => format!(
            "goal p50 ≤ {:.0} ms, p99 ≤ {:.0} ms",
            p50 * 1000.0,
            p99 * 1000.0
        ),
        None => format!("goal p99 ≤ {:.0} ms", p99 * 1000.0),
    };
    let verdict = match (
        prom::histogram_quantile(0.5, buckets),
        prom::histogram_quantile(0.99, buckets),
    ) {
        (Some(m50), Some(m99)) => {
            if m99 <= p99 && p50.is_none_or(|g| m50 <= g) {
                "met"
            } else {
                "**missed**"
            }
        }
        _ => "no observations",
    };
    format!("{goal}: {verdict}")
}

/// `a ÷ b` with two decimals, or `-`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// Least-squares line through `points`: (slope, intercept); `None` for fewer than two distinct
/// x values.
pub(super) fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (points.len() >= 2 && sxx > 0.0).then(|| {
        let slope = sxy / sxx;
        (slope, my - slope * mx)
    })
}

/// Median rates from start and from the first row of `runs`.
fn medians(runs: &[&BacklogRun]) -> (Option<f64>, Option<f64>) {
    (
        median(runs.iter().map(|r| r.rate())),
        median(runs.iter().filter_map(|r| r.rate_after_start())),
    )
}

impl IssueFigures {
    pub(super) fn lines(&self, report: &Report, info: &RunInfo) -> IssueLines {
        let n = info.readings as f64;
        let mut out = IssueLines::default();
        let pe = self.parse_enrich.map(|d| per_sec(n, d));
        if let Some(pe) = pe {
            out.rows.push(format!(
                "| 4c | parse + enrich in-process (timely, 1 worker, {} devices), as criterion's `parse_enrich_10k_devices` | {} | median of 5 passes |",
                rate(self.parse_enrich_devices as f64),
                rate(pe)
            ));
        }
        let es_1: Vec<f64> = self.es_raw_1.iter().map(|&d| per_sec(n, d)).collect();
        let es_2: Vec<f64> = self.es_raw_2.iter().map(|&d| per_sec(n, d)).collect();
        for (what, rates) in [
            ("1 request at a time", &es_1),
            ("2 requests in flight", &es_2),
        ] {
            if !rates.is_empty() {
                out.rows.push(format!(
                    "| 7a | ES stand-in `_bulk` alone: the sink's documents in {ELASTICSEARCH_BATCH_ROWS}-document requests (`reqwest`), {what} | {} | {} |",
                    cell(median(rates.iter().copied())),
                    range(rates)
                ));
            }
        }
        let all: Vec<&BacklogRun> = self.all_sinks.iter().collect();
        if !all.is_empty() {
            // As for (6b): a rate from the first row only with two ClickHouse batches per
            // worker left after it.
            let (start, steady) = sink_rates(&self.all_sinks, CLICKHOUSE_BATCH_ROWS, info.workers);
            let (all_start, all_steady) = (median(start.clone()), median(steady.clone()));
            out.rows.push(format!(
                "| 8 | **job, all three sinks** (MySQL max_rows {DEFAULT_BATCH_ROWS}, ClickHouse, ES stand-in), backlog of {} readings, from process start | **{}** | {}; first row after {:.2} s; peak RSS {} |",
                rate(self.all_sinks_readings as f64),
                cell(all_start),
                range(&start),
                median(all.iter().map(|r| r.first.0.as_secs_f64())).unwrap_or_default(),
                median_rss(all.iter().copied())
            ));
            let steady_note = if steady.is_empty() {
                "not measured: in no round were two ClickHouse batches per worker left after the first write seen; run more readings".to_string()
            } else {
                range(&steady)
            };
            out.rows.push(format!(
                "| 8 | job, all three sinks, from the first row written | {} | {steady_note}; a reading counts when all three sinks wrote it |",
                cell(all_steady)
            ));
        }
        for live in &self.all_sinks_live {
            out.rows.push(format!(
                "| 8 | **job, all three sinks, live** at {}/s for {} s: e2e latency p50 / p99 (rows of all sinks) | {} | **{} / {}** over {} rows; {}; peak RSS {} |",
                rate(info.live_rate),
                info.live_secs,
                rate(per_sec(live.produced as f64, live.produce_time)),
                quantile(0.5, &live.latency),
                quantile(0.99, &live.latency),
                prom::count(&live.latency),
                latency_goal(&live.latency, None, 0.100),
                mib(live.peak_rss)
            ));
        }

        self.memory_table(report, info, &mut out.tables);
        let (one_by_two, two_by_one) = self.processes_table(&mut out.tables);
        self.goals_table(
            report,
            info,
            pe,
            (es_1, es_2),
            (one_by_two, two_by_one),
            &mut out,
        );
        out
    }

    /// (9): peak RSS per dimension size, with the 5c runs as the smallest size.
    fn memory_table(&self, report: &Report, info: &RunInfo, t: &mut Vec<String>) {
        if self.dimension.is_empty() {
            return;
        }
        let mut sizes: Vec<(usize, Vec<&BacklogRun>)> = Vec::new();
        let no_sink = report.runs(None);
        if !no_sink.is_empty() {
            sizes.push((info.devices, no_sink));
        }
        for d in &self.dimension {
            match sizes.iter_mut().find(|(devices, _)| *devices == d.devices) {
                Some((_, runs)) => runs.push(&d.run),
                None => sizes.push((d.devices, vec![&d.run])),
            }
        }
        sizes.sort_by_key(|(devices, _)| *devices);
        t.push(String::new());
        t.push("| (9) devices in the dimension (job without sinks, backlog) | peak RSS (median) | Δ peak RSS per 10 000 devices, from the row above | readings/s from start (median) |".into());
        t.push("|---:|---:|---:|---:|".into());
        let peak =
            |runs: &[&BacklogRun]| median(runs.iter().filter_map(|r| r.peak_rss.map(|b| b as f64)));
        let mut points = Vec::new();
        let mut previous: Option<(usize, f64)> = None;
        for (devices, runs) in &sizes {
            let p = peak(runs);
            let delta = match (previous, p) {
                (Some((d0, p0)), Some(p)) if *devices > d0 => {
                    let per_10k = (p - p0) / (*devices - d0) as f64 * 10_000.0;
                    if per_10k < 0.0 {
                        format!("-{} (fell)", mib(Some(-per_10k as u64)))
                    } else {
                        mib(Some(per_10k as u64))
                    }
                }
                _ => "-".into(),
            };
            if let Some(p) = p {
                points.push((*devices as f64, p));
                previous = Some((*devices, p));
            }
            t.push(format!(
                "| {} | {} | {delta} | {} |",
                rate(*devices as f64),
                mib(p.map(|p| p as u64)),
                cell(median(runs.iter().map(|r| r.rate())))
            ));
        }
        t.push(String::new());
        match linear_fit(&points) {
            Some((slope, intercept)) => t.push(format!(
                "Memory: a least-squares line through the {} sizes gives **{:.1} MiB per 10 000 devices** on top of {:.1} MiB (job `-w {}`, every worker holds the whole dimension). \
                 The bound this states: peak RSS ≈ {:.1} MiB + {:.1} MiB × devices / 10 000 for a backlog run without sinks; the sinks add their batches (see (8)).",
                points.len(),
                slope * 10_000.0 / f64::from(1 << 20),
                intercept / f64::from(1 << 20),
                info.workers,
                intercept / f64::from(1 << 20),
                slope * 10_000.0 / f64::from(1 << 20),
            )),
            None => t.push("Memory: too few sizes with an RSS sample for a line.".into()),
        }
    }

    /// (10): the cluster layouts; returns the median rates (from start, from the first
    /// reading) of 1 × 2 and of 2 × 1.
    #[allow(clippy::type_complexity)]
    fn processes_table(
        &self,
        t: &mut Vec<String>,
    ) -> ((Option<f64>, Option<f64>), (Option<f64>, Option<f64>)) {
        let layout = |p: usize, w: usize| -> Vec<&ProcessRun> {
            self.processes
                .iter()
                .filter(|r| r.processes == p && r.workers == w)
                .collect()
        };
        let rates =
            |runs: &[&ProcessRun]| medians(&runs.iter().map(|r| &r.run).collect::<Vec<_>>());
        let (a, b) = (layout(1, 2), layout(2, 1));
        if self.processes.is_empty() {
            return ((None, None), (None, None));
        }
        t.push(String::new());
        t.push("| (10) cluster (job without sinks, same backlog) | readings/s from start (median) | from the first reading enriched | each round, from start | peak RSS per process (median) |".into());
        t.push("|---|---:|---:|---|---|".into());
        let (one, four) = (layout(1, 1), layout(4, 1));
        for (name, runs) in [
            ("1 process × 1 worker", &one),
            ("1 process × 2 workers", &a),
            ("2 processes × 1 worker", &b),
            ("4 processes × 1 worker", &four),
        ] {
            if runs.is_empty() {
                continue;
            }
            let (start, steady) = rates(runs);
            let processes = runs.iter().map(|r| r.rss.len()).max().unwrap_or(0);
            let per_process: Vec<String> = (0..processes)
                .map(|i| {
                    let rss = median(
                        runs.iter()
                            .filter_map(|r| r.rss.get(i).copied().flatten().map(|b| b as f64)),
                    );
                    format!("p{i} {}", mib(rss.map(|b| b as u64)))
                })
                .collect();
            let each: Vec<String> = runs.iter().map(|r| rate(r.run.rate())).collect();
            t.push(format!(
                "| {name} | {} | {} | {} | {} |",
                cell(start),
                cell(steady),
                each.join(", "),
                per_process.join(", ")
            ));
        }
        let (ra, rb) = (rates(&a), rates(&b));
        t.push(String::new());
        t.push(format!(
            "Processes: 2 processes × 1 worker ÷ 1 process × 2 workers = {} from start, {} from the first reading (same machine: the exchange between the processes goes over loopback TCP).",
            ratio(rb.0, ra.0),
            ratio(rb.1, ra.1)
        ));
        if !one.is_empty() {
            let r1 = rates(&one);
            let r4 = rates(&four);
            t.push(format!(
                "Scale-out on this 2-core machine (one worker per process, from the first reading): 2 processes ÷ 1 = {}, 4 processes ÷ 1 = {}; 1 process × 2 workers ÷ 1 × 1 = {} (docs/scaling.md models separate machines).",
                ratio(rb.1, r1.1),
                ratio(r4.1, r1.1),
                ratio(ra.1, r1.1)
            ));
        }
        (ra, rb)
    }

    /// The goals of issue 11, each job figure against its reference, in one table.
    #[allow(clippy::type_complexity)]
    fn goals_table(
        &self,
        report: &Report,
        info: &RunInfo,
        pe: Option<f64>,
        (es_1, es_2): (Vec<f64>, Vec<f64>),
        (one_by_two, two_by_one): ((Option<f64>, Option<f64>), (Option<f64>, Option<f64>)),
        out: &mut IssueLines,
    ) {
        let n = info.readings as f64;
        let no_sink = medians(&report.runs(None));
        let mysql_size = info
            .batch_rows
            .iter()
            .copied()
            .find(|&b| b == DEFAULT_BATCH_ROWS)
            .or(info.batch_rows.first().copied());
        let mysql = mysql_size.map(|b| medians(&report.runs(Some(b))));
        let insert_2 = median(report.insert_2.iter().map(|&d| per_sec(n, d)));
        let ch_raw = median(report.sinks.clickhouse_raw.iter().map(|&d| per_sec(n, d)));
        // The rule of (6b) and (7): a rate from the first row only with two batches per worker
        // left after it.
        let sink = |runs: &[BacklogRun], batch_rows: usize| {
            let (start, steady) = sink_rates(runs, batch_rows, info.workers);
            (median(start), median(steady))
        };
        let ch = sink(&report.sinks.clickhouse_job, CLICKHOUSE_BATCH_ROWS);
        let es = sink(&report.sinks.stand_in_job, ELASTICSEARCH_BATCH_ROWS);
        let same = |x: Option<f64>| (x, x);
        let mut t = Vec::new();
        // `reference`: (from start, from the first row); the same rate twice for the stores
        // alone, which have no start-up.
        let mut row = |what: String,
                       job: (Option<f64>, Option<f64>),
                       reference: (Option<f64>, Option<f64>),
                       goal: Option<f64>| {
            if job.0.is_none() || reference.0.is_none() {
                return;
            }
            // Judged from the first row when there is such a rate: the references leave
            // start-up out too.
            let judged = match (job.1, reference.1) {
                (Some(j), Some(r)) if r > 0.0 => Some(j / r),
                _ => job.0.zip(reference.0).map(|(j, r)| j / r),
            };
            let met = match (judged, goal) {
                (Some(r), Some(g)) if r >= g => "yes",
                (Some(_), Some(_)) => "**no**",
                _ => "-",
            };
            t.push(format!(
                "| {what} | {} | {} | {} | {} | {} | {} | {met} |",
                cell(job.0),
                cell(job.1),
                cell(reference.0),
                ratio(job.0, reference.0),
                ratio(job.1, reference.1),
                goal.map_or("-".into(), |g| format!("≥ {g:.2}"))
            ));
        };
        row(
            "1: job without sinks (5c) ÷ 1 000 000 readings/s".into(),
            no_sink,
            same(Some(ONE_MILLION)),
            Some(1.0),
        );
        row(
            format!(
                "1: job without sinks (5c) ÷ parse + enrich in-process (4c) × {} workers",
                info.workers
            ),
            no_sink,
            same(pe.map(|p| p * info.workers as f64)),
            Some(0.8),
        );
        if let Some(mysql) = mysql {
            row(
                format!(
                    "3: job, MySQL sink only (5a, max_rows {}) ÷ MariaDB INSERT, 2 connections (3b)",
                    mysql_size.unwrap_or(DEFAULT_BATCH_ROWS)
                ),
                mysql,
                same(insert_2),
                Some(1.0),
            );
        }
        row(
            "3: job, ClickHouse sink only (6b) ÷ ClickHouse raw insert (6a)".into(),
            ch,
            same(ch_raw),
            Some(0.8),
        );
        row(
            "3: job, ES sink only (7) ÷ stand-in `_bulk` alone, 1 request (7a)".into(),
            es,
            same(median(es_1)),
            Some(0.8),
        );
        row(
            "3: job, ES sink only (7) ÷ stand-in `_bulk` alone, 2 requests (7a)".into(),
            es,
            same(median(es_2)),
            Some(0.8),
        );
        row(
            "6: 2 processes × 1 worker ÷ 1 process × 2 workers (10), sinks off".into(),
            two_by_one,
            one_by_two,
            None,
        );
        let live = report
            .live
            .iter()
            .find(|l| l.batch_rows == DEFAULT_BATCH_ROWS)
            .or(report.live.first());
        let mut notes = Vec::new();
        if let Some(live) = live {
            notes.push(format!(
                "- 2: live into MySQL (5b, max_rows {}) at {}/s: p50 / p99 {} / {}; {}. Of it, the age at read (Kafka timestamp → the source's poll: the broker holding the fetch, the fetch itself) p50 / p99 {} / {}.",
                live.batch_rows,
                rate(info.live_rate),
                quantile(0.5, &live.latency),
                quantile(0.99, &live.latency),
                latency_goal(&live.latency, Some(0.020), 0.050),
                quantile(0.5, &live.read_age),
                quantile(0.99, &live.read_age)
            ));
        }
        for live in &self.all_sinks_live {
            notes.push(format!(
                "- 2: live with all three sinks (8) at {}/s: p50 / p99 {} / {}; {}; age at read p50 / p99 {} / {}.",
                rate(info.live_rate),
                quantile(0.5, &live.latency),
                quantile(0.99, &live.latency),
                latency_goal(&live.latency, None, 0.100),
                quantile(0.5, &live.read_age),
                quantile(0.99, &live.read_age)
            ));
        }
        if !self.all_sinks.is_empty() {
            notes.push(format!(
                "- 5: peak RSS with all three sinks over a backlog of {} readings (8): {} (median of the rounds); per 10 000 devices: see (9).",
                rate(self.all_sinks_readings as f64),
                median_rss(self.all_sinks.iter())
            ));
        }
        if t.is_empty() && notes.is_empty() {
            return;
        }
        let out = &mut out.tables;
        if !t.is_empty() {
            out.push(String::new());
            out.push("| goal (issue 11) | job, from start | job, from first row | reference | ÷ from start | ÷ from first row | goal | met |".into());
            out.push("|---|---:|---:|---:|---:|---:|---:|---|".into());
            out.extend(t);
        }
        if !notes.is_empty() {
            out.push(String::new());
            out.extend(notes);
        }
        out.push(String::new());
        out.push("\"met\" is judged on the rate from the first row where there is one (the references leave start-up out too), else from start. Latency quantiles are interpolated inside histogram buckets (see above).".into());
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IssueFigures, SinkFigures};
    use super::*;

    fn run(secs: f64, rss_mib: u64) -> BacklogRun {
        BacklogRun {
            batch_rows: None,
            rows: 100_000,
            total: Duration::from_secs_f64(secs + 1.0),
            first: (Duration::from_secs(1), 0.0),
            latency: Vec::new(),
            batch_write: Vec::new(),
            peak_rss: Some(rss_mib << 20),
        }
    }

    fn live(p99_ms: f64) -> LiveRun {
        // Half the rows within 10 ms, all within `p99_ms` × 1.01 (so that p99 lands near it).
        LiveRun {
            batch_rows: 2000,
            produced: 100_000,
            produce_time: Duration::from_secs(5),
            latency: vec![
                (0.010, 50_000.0),
                (p99_ms / 1000.0 * 1.0101, 100_000.0),
                (f64::INFINITY, 100_000.0),
            ],
            read_age: vec![(0.005, 50_000.0), (f64::INFINITY, 100_000.0)],
            peak_rss: Some(200 << 20),
        }
    }

    fn report() -> (Report, RunInfo) {
        let mut mysql = run(1.0, 120);
        mysql.batch_rows = Some(2000);
        let report = Report {
            insert_2: vec![Duration::from_secs(1)],
            backlog: vec![mysql, run(0.25, 80)],
            live: vec![live(40.0)],
            sinks: SinkFigures {
                clickhouse_raw: vec![Duration::from_millis(500)],
                clickhouse_job: vec![run(0.5, 150)],
                stand_in_job: vec![run(2.0, 90)],
                ..SinkFigures::default()
            },
            issue: IssueFigures {
                parse_enrich: Some(Duration::from_millis(200)),
                parse_enrich_devices: 1000,
                es_raw_1: vec![Duration::from_secs(2)],
                es_raw_2: vec![Duration::from_secs(1)],
                all_sinks_readings: 100_000,
                all_sinks: vec![run(4.0, 300)],
                all_sinks_live: vec![live(150.0)],
                dimension: vec![
                    DimensionRun {
                        devices: 11_000,
                        run: run(0.5, 90),
                    },
                    DimensionRun {
                        devices: 51_000,
                        run: run(0.5, 130),
                    },
                ],
                processes: vec![
                    ProcessRun {
                        processes: 1,
                        workers: 2,
                        run: run(0.25, 80),
                        rss: vec![Some(80 << 20)],
                    },
                    ProcessRun {
                        processes: 2,
                        workers: 1,
                        run: run(0.5, 60),
                        rss: vec![Some(60 << 20), Some(55 << 20)],
                    },
                ],
            },
            ..Report::default()
        };
        let info = RunInfo {
            readings: 100_000,
            devices: 1000,
            workers: 2,
            live_rate: 20_000.0,
            live_secs: 5,
            batch_rows: vec![2000],
            ..RunInfo::default()
        };
        (report, info)
    }

    #[test]
    fn issue_figures_render_with_their_ratios_and_goals() {
        let (report, info) = report();
        let text = report.render(&info);
        let has = |needle: &str| assert!(text.contains(needle), "no {needle:?} in\n{text}");
        // Main table rows.
        has("| 4c | parse + enrich in-process (timely, 1 worker, 1,000 devices), as criterion's `parse_enrich_10k_devices` | 500,000 |");
        has("2 requests in flight | 100,000 |");
        has("backlog of 100,000 readings, from process start | **20,000** | 20,000; first row after 1.00 s; peak RSS 300.0 MiB |");
        has("**10.0 ms (0–10) / ");
        has("goal p99 ≤ 100 ms: **missed**");
        has("peak RSS 120.0 MiB |");
        // The MySQL live row carries its goal.
        has("goal p50 ≤ 20 ms, p99 ≤ 50 ms: met");
        // Memory: 1 000 (5c, 80 MiB), 11 000 (90), 51 000 (130): 10 MiB per 10 000 devices.
        has("| 1,000 | 80.0 MiB | - | 80,000 |");
        has("| 11,000 | 90.0 MiB | 10.0 MiB | 66,667 |");
        has("| 51,000 | 130.0 MiB | 10.0 MiB | 66,667 |");
        has("**10.0 MiB per 10 000 devices** on top of 79.0 MiB");
        // Processes.
        has("| 2 processes × 1 worker | 66,667 | 200,000 | 66,667 | p0 60.0 MiB, p1 55.0 MiB |");
        has("2 processes × 1 worker ÷ 1 process × 2 workers = 0.83 from start, 0.50 from the first reading");
        // Goals: 5c from the first row 400 000/s.
        has("| 1: job without sinks (5c) ÷ 1 000 000 readings/s | 80,000 | 400,000 | 1,000,000 | 0.08 | 0.40 | ≥ 1.00 | **no** |");
        has("| 1: job without sinks (5c) ÷ parse + enrich in-process (4c) × 2 workers | 80,000 | 400,000 | 1,000,000 | 0.08 | 0.40 | ≥ 0.80 | **no** |");
        has("| 3: job, MySQL sink only (5a, max_rows 2000) ÷ MariaDB INSERT, 2 connections (3b) | 50,000 | 100,000 | 100,000 | 0.50 | 1.00 | ≥ 1.00 | yes |");
        // 100 000 readings on 2 workers are not two 50 000-row batches per worker: no rate
        // from the first row, as in (6b)'s own row, so judged from start.
        has("| 3: job, ClickHouse sink only (6b) ÷ ClickHouse raw insert (6a) | 66,667 | - | 200,000 | 0.33 | - | ≥ 0.80 | **no** |");
        has("| 8 | job, all three sinks, from the first row written | - | not measured:");
        has("| 3: job, ES sink only (7) ÷ stand-in `_bulk` alone, 1 request (7a) | 33,333 | 50,000 | 50,000 | 0.67 | 1.00 | ≥ 0.80 | yes |");
        has("| 3: job, ES sink only (7) ÷ stand-in `_bulk` alone, 2 requests (7a) | 33,333 | 50,000 | 100,000 | 0.33 | 0.50 | ≥ 0.80 | **no** |");
        has("| 6: 2 processes × 1 worker ÷ 1 process × 2 workers (10), sinks off | 66,667 | 200,000 | 80,000 | 0.83 | 0.50 | - | - |");
        has("- 5: peak RSS with all three sinks over a backlog of 100,000 readings (8): 300.0 MiB");
    }

    #[test]
    fn without_the_issue_figures_nothing_of_them_shows() {
        let (mut report, info) = report();
        report.issue = IssueFigures::default();
        let text = report.render(&info);
        assert!(!text.contains("(9) devices"));
        assert!(!text.contains("(10) cluster"));
        assert!(!text.contains("| 8 |"));
        // The goals that need only the other phases still show.
        assert!(text.contains("| 3: job, MySQL sink only"), "{text}");
        assert!(!text.contains("stand-in `_bulk` alone"));
        // Nothing to set against a goal: no goals table at all.
        let empty = Report::default().render(&info);
        assert!(!empty.contains("goal (issue 11)"), "{empty}");
    }

    #[test]
    fn fits_a_line() {
        let (slope, intercept) = linear_fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((slope - 2.0).abs() < 1e-12 && (intercept - 1.0).abs() < 1e-12);
        assert_eq!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(linear_fit(&[]), None);
    }
}
