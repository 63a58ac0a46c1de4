//! The figures of the sinks other than MySQL, (6) ClickHouse and (7) the Elasticsearch
//! stand-in: their rows of the main table and their ratio table, rendered as part of
//! [`Report::render`](super::Report::render).

use std::time::Duration;

use super::{cell, median, per_sec, quantile, range, rate, BacklogRun, Report, RunInfo};
use crate::job::DEFAULT_BATCH_ROWS;

/// Rows per insert of the raw ClickHouse measurement: the sink's default
/// `clickhouse.batch.max_rows` (see `iotflow_config::ClickhouseConfig`), so that the job and
/// the raw inserts send batches of the same size.
pub const CLICKHOUSE_BATCH_ROWS: usize = 50_000;

/// The Elasticsearch sink's default `elasticsearch.batch.max_rows` (see
/// `iotflow_config::ElasticsearchConfig`).
pub const ELASTICSEARCH_BATCH_ROWS: usize = 5000;

/// What (6) and (7) measured.
#[derive(Clone, Debug, Default)]
pub struct SinkFigures {
    /// `SELECT version()` of the ClickHouse server.
    pub clickhouse_version: Option<String>,
    /// (6a) Inserting the rows into ClickHouse, per round.
    pub clickhouse_raw: Vec<Duration>,
    /// (6b) The job with only the ClickHouse sink, per round (`batch_rows` is `None`: the MySQL
    /// sink is off).
    pub clickhouse_job: Vec<BacklogRun>,
    /// (7) The job with only the Elasticsearch sink, into the stand-in, per round.
    pub stand_in_job: Vec<BacklogRun>,
    /// (7) Per run, the CPU time of the stand-in's thread ÷ the time from the first row written
    /// to the last (when `/proc` says).
    pub stand_in_busy: Vec<f64>,
}

/// The rendered lines of [`SinkFigures`]: where they go is up to [`Report::render`].
#[derive(Debug, Default)]
pub(super) struct SinkLines {
    /// Rows of the main table.
    pub rows: Vec<String>,
    /// The ratio table, preceded by a blank line and followed by its notes.
    pub ratios: Vec<String>,
}

impl SinkFigures {
    /// Whether (6) or (7) measured anything; if not, the report shows nothing of them.
    pub fn is_empty(&self) -> bool {
        self.clickhouse_raw.is_empty()
            && self.clickhouse_job.is_empty()
            && self.stand_in_job.is_empty()
    }

    /// The rows of (6) and (7) for the end of the main table, and the lines of their ratio
    /// table with its notes (each line without its newline).
    pub(super) fn lines(&self, report: &Report, info: &RunInfo) -> SinkLines {
        if self.is_empty() {
            return SinkLines::default();
        }
        let n = info.readings as f64;
        let raw: Vec<f64> = self.clickhouse_raw.iter().map(|&d| per_sec(n, d)).collect();
        let (ch_start, ch_steady) =
            sink_rates(&self.clickhouse_job, CLICKHOUSE_BATCH_ROWS, info.workers);
        let (es_start, es_steady) =
            sink_rates(&self.stand_in_job, ELASTICSEARCH_BATCH_ROWS, info.workers);
        // The MySQL job of the report's ratios: the default batch size if it ran.
        let mysql_size = info
            .batch_rows
            .iter()
            .copied()
            .find(|&b| b == DEFAULT_BATCH_ROWS)
            .or(info.batch_rows.first().copied());
        let mysql = mysql_size.map(|b| report.job_rates(Some(b)));
        let no_sink = report.job_rates(None);

        let mut rows = Vec::new();
        if !raw.is_empty() {
            rows.push(format!(
                "| 6a | ClickHouse INSERT, RowBinary (`clickhouse` crate), {CLICKHOUSE_BATCH_ROWS}-row batches, 1 client | {} | {}; ClickHouse {}, table as the sink creates it |",
                cell(median(raw.clone())),
                range(&raw),
                self.clickhouse_version.as_deref().unwrap_or("?")
            ));
        }
        for (number, what, runs, (start, steady), note) in [
            (
                "6b",
                "**job, ClickHouse sink only** (MySQL off), backlog",
                &self.clickhouse_job,
                (&ch_start, &ch_steady),
                format!("batches of {} rows", rate(CLICKHOUSE_BATCH_ROWS as f64)),
            ),
            (
                "7",
                "**job, Elasticsearch sink only, into the ES stand-in (not Elasticsearch)**, backlog",
                &self.stand_in_job,
                (&es_start, &es_steady),
                match median(self.stand_in_busy.iter().copied()) {
                    Some(busy) => format!(
                        "the job's side of `_bulk` only; the stand-in thread's CPU time ÷ time from the first row to the last: {:.0}%; see the note below",
                        100.0 * busy
                    ),
                    None => "the job's side of `_bulk` only: see the note below".to_string(),
                },
            ),
        ] {
            let Some(run) = median_by_rate(runs) else {
                continue;
            };
            let firsts = median(runs.iter().map(|r| r.first.0.as_secs_f64()));
            rows.push(format!(
                "| {number} | {what}, from process start | **{}** | {}; first row after {:.2} s; batch write p50 / p99 {} / {}; peak RSS {} |",
                cell(median(start.clone())),
                range(start),
                firsts.unwrap_or_default(),
                quantile(0.5, &run.batch_write),
                quantile(0.99, &run.batch_write),
                super::median_rss(runs.iter())
            ));
            let steady_note = if steady.is_empty() {
                "not measured: in no round were two batches per worker left after the first \
                 write seen; run more readings"
                    .to_string()
            } else {
                range(steady)
            };
            rows.push(format!(
                "| {number} | {what}, from the first row written | **{}** | {steady_note}; {note} |",
                cell(median(steady.clone()))
            ));
        }

        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let medians = |(start, steady): &(Vec<f64>, Vec<f64>)| {
            (median(start.clone()), median(steady.clone()))
        };
        let (ch, es) = (
            medians(&(ch_start, ch_steady)),
            medians(&(es_start, es_steady)),
        );
        let raw = median(raw);
        let mysql = mysql.as_ref().map(medians).unwrap_or_default();
        let no_sink = medians(&no_sink);
        let mysql_name = format!(
            "job, MySQL sink only, max_rows {} (5a)",
            mysql_size.unwrap_or(DEFAULT_BATCH_ROWS)
        );
        let mut ratios = vec![
            String::new(),
            "| ratio (medians, same run) | from start | from first row |".to_string(),
            "|---|---:|---:|".to_string(),
        ];
        for (what, (a, a_steady), (b, b_steady), present) in [
            (
                "job, ClickHouse only (6b) ÷ ClickHouse raw insert (6a)".to_string(),
                ch,
                (raw, raw),
                !self.clickhouse_job.is_empty() && raw.is_some(),
            ),
            (
                format!("job, ClickHouse only (6b) ÷ {mysql_name}"),
                ch,
                mysql,
                !self.clickhouse_job.is_empty(),
            ),
            (
                "job, ClickHouse only (6b) ÷ job without sinks (5c)".to_string(),
                ch,
                no_sink,
                !self.clickhouse_job.is_empty(),
            ),
            (
                format!("job, ES stand-in only (7) ÷ {mysql_name}"),
                es,
                mysql,
                !self.stand_in_job.is_empty(),
            ),
            (
                "job, ES stand-in only (7) ÷ job without sinks (5c)".to_string(),
                es,
                no_sink,
                !self.stand_in_job.is_empty(),
            ),
        ] {
            if present {
                ratios.push(format!(
                    "| {what} | {} | {} |",
                    ratio(a, b),
                    ratio(a_steady, b_steady)
                ));
            }
        }
        ratios.push(String::new());
        ratios.push(format!(
            "(6) and (7) ran in the same {} interleaved round(s) as (2), (3), (5a) and (5c). \
             (6a) and (6b) send batches of the same size ({CLICKHOUSE_BATCH_ROWS} rows, the sink's \
             default) into the same table, created as the sink creates it; the job has one writer \
             per worker, (6a) one client.",
            report.consume.len()
        ));
        if !self.stand_in_job.is_empty() {
            ratios.push(String::new());
            ratios.push(
                "**(7) is not Elasticsearch.** The job wrote to `iotflow-es-stand-in`, an HTTP \
                 server inside this harness that implements `_bulk` after Elasticsearch's \
                 documented format and keeps the documents in memory. It indexes nothing, and it \
                 parses and checks every document on one thread that shares the cores with the \
                 job. The figure measures the job's side of the bulk protocol (encoding, HTTP, \
                 item-by-item responses), bounded by the stand-in's own speed. Beside the figure, \
                 the CPU time of the stand-in's thread divided by the time from the first row \
                 written to the last: near 100 % (or above: its work on the first batch comes \
                 before the first row), the stand-in set the pace, not the job. It says nothing \
                 about what a real cluster would accept."
                    .to_string(),
            );
        }

        SinkLines { rows, ratios }
    }
}

/// Rates of (6b) or (7) runs, from process start and from the first row written. The second
/// only for runs that had at least two batches of `batch_rows` per worker left to write after
/// the first write seen: ClickHouse's batches are 50 000 rows, and with fewer readings what
/// follows the first write is one or two batches landing, not a rate.
pub(super) fn sink_rates(
    runs: &[BacklogRun],
    batch_rows: usize,
    workers: usize,
) -> (Vec<f64>, Vec<f64>) {
    let enough = (2 * batch_rows * workers) as f64;
    (
        runs.iter().map(BacklogRun::rate).collect(),
        runs.iter()
            .filter(|r| r.rows as f64 - r.first.1 >= enough)
            .filter_map(BacklogRun::rate_after_start)
            .collect(),
    )
}

/// The run with the median rate from process start.
fn median_by_rate(runs: &[BacklogRun]) -> Option<&BacklogRun> {
    let mut sorted: Vec<&BacklogRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    sorted.get(sorted.len() / 2).copied()
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
            latency: Vec::new(),
            batch_write: vec![(0.1, 5.0), (f64::INFINITY, 10.0)],
            peak_rss: None,
        }
    }

    #[test]
    fn other_sinks_go_into_the_reports_tables() {
        // One worker: 100 000 rows are two ClickHouse batches, enough for a rate from the first.
        let info = RunInfo {
            readings: 100_000,
            workers: 1,
            batch_rows: vec![2000],
            ..RunInfo::default()
        };
        let sinks = SinkFigures {
            clickhouse_version: Some("18.16.1".into()),
            clickhouse_raw: vec![
                Duration::from_secs(2),
                Duration::from_secs(1),
                Duration::from_secs(4),
            ],
            clickhouse_job: vec![run(None, 4.0), run(None, 1.0), run(None, 3.0)],
            stand_in_job: vec![run(None, 2.0)],
            stand_in_busy: vec![0.5, 0.9, 0.7],
        };
        let report = Report {
            consume: vec![Duration::from_secs(1)],
            backlog: vec![run(Some(2000), 1.0), run(None, 0.5)],
            sinks,
            ..Report::default()
        };
        let text = report.render(&info);
        let line = |prefix: &str| {
            text.lines()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
        };
        // Rows at the end of the main table, ratios after the job's ratios.
        assert_eq!(line("| 6a |"), line("| 5c |") + 2, "{text}");
        assert!(line("| 7 |") < line("| ratio (job"));
        assert!(line("| ratio (medians, same run)") > line("| job ÷ job without the MySQL sink"));
        // ClickHouse job: medians 100 000 / 4 s from start, 100 000 / 3 s from the first row;
        // raw: median 100 000 / 2 s.
        assert!(
            text.contains("| 6b | **job, ClickHouse sink only** (MySQL off), backlog, from process start | **25,000** | 20,000–50,000; first row after 1.00 s;"),
            "{text}"
        );
        assert!(text.contains("| 6a | ClickHouse INSERT, RowBinary (`clickhouse` crate), 50000-row batches, 1 client | 50,000 | 25,000–100,000; ClickHouse 18.16.1"));
        assert!(text
            .contains("| job, ClickHouse only (6b) ÷ ClickHouse raw insert (6a) | 0.50 | 0.67 |"));
        assert!(text.contains("| job, ClickHouse only (6b) ÷ job, MySQL sink only, max_rows 2000 (5a) | 0.50 | 0.33 |"));
        assert!(
            text.contains("| job, ES stand-in only (7) ÷ job without sinks (5c) | 0.50 | 0.25 |")
        );
        assert!(text.contains("**(7) is not Elasticsearch.**"));
        assert!(text.contains("time from the first row to the last: 70%"));
    }

    #[test]
    fn too_few_batches_after_the_first_write_give_no_rate_from_it() {
        let mut late = run(None, 1.0);
        late.first.1 = 80_001.0;
        let (from_start, steady) = sink_rates(&[run(None, 1.0), late.clone()], 10_000, 2);
        assert_eq!(from_start, vec![50_000.0, 50_000.0]);
        assert_eq!(steady, vec![100_000.0]);
        let report = Report {
            sinks: SinkFigures {
                clickhouse_job: vec![late],
                ..SinkFigures::default()
            },
            ..Report::default()
        };
        let info = RunInfo {
            readings: 100_000,
            workers: 2,
            ..RunInfo::default()
        };
        let text = report.render(&info);
        assert!(
            text.contains("from the first row written | **-** | not measured:"),
            "{text}"
        );
    }
}
