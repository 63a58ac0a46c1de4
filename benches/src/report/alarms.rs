//! (11), issue 12: the job without sinks against the same job with `[alarms]` on and its rules,
//! over the same backlog, in the same rounds: the two rates, their ratio, the peak RSS of both,
//! and what the alarms run produced (events, episodes, late readings). Rendered as part of
//! [`Report::render`](super::Report::render).

use std::time::Duration;

use super::{median, mib, per_sec, range, rate, RunInfo};

/// What the rules of the alarms run are, counted by kind and scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleMix {
    /// Rules in all.
    pub rules: usize,
    /// `above` rules (those on the device's threshold included).
    pub above: usize,
    /// `below` rules (those on the device's threshold included).
    pub below: usize,
    /// `outside` rules.
    pub outside: usize,
    /// `offline` rules.
    pub offline: usize,
    /// `above` / `below` rules with `device_threshold`.
    pub device_threshold: usize,
    /// Rules with a `for_secs` above 0.
    pub with_duration: usize,
    /// Rules with a hysteresis above 0.
    pub with_hysteresis: usize,
    /// Rules on every device.
    pub all: usize,
    /// Rules scoped by model.
    pub model: usize,
    /// Rules scoped by site.
    pub site: usize,
    /// Rules on one device.
    pub device: usize,
}

/// What one alarms run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmCounts {
    /// `iotflow_alarm_events_total{kind="raised"}`.
    pub raised: u64,
    /// `iotflow_alarm_events_total{kind="cleared"}`.
    pub cleared: u64,
    /// `iotflow_alarms_active` at the end.
    pub active: u64,
    /// `iotflow_alarm_late_readings_total`.
    pub late: u64,
    /// Messages on the run's alarms topic.
    pub topic_events: u64,
    /// Rows (episodes) in `device_alarms`.
    pub table_rows: u64,
    /// Of them, still active (`cleared_at IS NULL`).
    pub table_active: u64,
}

/// One backlog run of (11).
#[derive(Clone, Debug)]
pub struct AlarmRun {
    /// Rules configured; 0 for the run without alarms (and without sinks).
    pub rules: usize,
    /// Readings in the backlog.
    pub rows: u64,
    /// Job start → the first scrape that saw readings enriched, and how many it saw.
    pub first: (Duration, f64),
    /// Job start → every reading enriched.
    pub enriched: Duration,
    /// Job start → the readings topic's committed offsets add up to the backlog: with alarms,
    /// every reading's effects are stored (events on the topic, episodes and state in MySQL).
    pub committed: Duration,
    /// Peak RSS of the job process, bytes (sampled every 50 ms).
    pub peak_rss: Option<u64>,
    /// What the alarms produced (`None` without alarms).
    pub counts: Option<AlarmCounts>,
}

impl AlarmRun {
    /// Readings/s from the job's start to every reading enriched.
    pub fn rate_enriched(&self) -> f64 {
        per_sec(self.rows as f64, self.enriched)
    }

    /// Readings/s from the first reading enriched to the last (start-up excluded); `None`
    /// when the first scrape already saw (nearly) all of them.
    pub fn rate_after_start(&self) -> Option<f64> {
        let rows = self.rows as f64 - self.first.1;
        let secs = self.enriched.saturating_sub(self.first.0);
        (rows > 0.0 && secs >= 2 * crate::job::SCRAPE_EVERY).then(|| per_sec(rows, secs))
    }

    /// Readings/s from the job's start to every offset committed.
    pub fn rate_committed(&self) -> f64 {
        per_sec(self.rows as f64, self.committed)
    }
}

/// What (11) measured.
#[derive(Clone, Debug, Default)]
pub struct AlarmFigures {
    /// Every run of both kinds, in the order they ran.
    pub runs: Vec<AlarmRun>,
    /// The rules of the alarms runs.
    pub mix: Option<RuleMix>,
    /// `alarms.idle_partition_ms` of the alarms runs.
    pub idle_partition_ms: u64,
}

/// `a ÷ b` with two decimals, or `-`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// `median (range)` of rates, or `-`.
fn with_range(values: &[f64]) -> String {
    match median(values.iter().copied()) {
        Some(m) if values.len() > 1 => format!("{} ({})", rate(m), range(values)),
        Some(m) => rate(m),
        None => "-".into(),
    }
}

impl AlarmFigures {
    fn of(&self, alarms: bool) -> Vec<&AlarmRun> {
        self.runs
            .iter()
            .filter(|r| (r.rules > 0) == alarms)
            .collect()
    }

    /// The table of (11) and its notes, each line to be written as it is; empty when (11) did
    /// not run.
    pub(super) fn lines(&self, info: &RunInfo) -> Vec<String> {
        let (plain, alarms) = (self.of(false), self.of(true));
        if plain.is_empty() && alarms.is_empty() {
            return Vec::new();
        }
        let rules = alarms.first().map_or(0, |r| r.rules);
        let mut t = vec![
            String::new(),
            format!(
                "| (11) job over the backlog of {} readings, {} devices | readings/s, start → every reading enriched | from the first reading enriched | **start → every offset committed** | committed, each round | peak RSS (median) |",
                rate(info.readings as f64),
                rate(info.devices as f64)
            ),
            "|---|---:|---:|---:|---|---:|".into(),
        ];
        let rates = |runs: &[&AlarmRun]| {
            (
                runs.iter().map(|r| r.rate_enriched()).collect::<Vec<_>>(),
                runs.iter()
                    .filter_map(|r| r.rate_after_start())
                    .collect::<Vec<_>>(),
                runs.iter().map(|r| r.rate_committed()).collect::<Vec<_>>(),
            )
        };
        let rss =
            |runs: &[&AlarmRun]| median(runs.iter().filter_map(|r| r.peak_rss.map(|b| b as f64)));
        for (name, runs) in [
            ("without sinks".to_string(), &plain),
            (format!("**alarms on, {rules} rules**"), &alarms),
        ] {
            if runs.is_empty() {
                continue;
            }
            let (enriched, steady, committed) = rates(runs);
            let each: Vec<String> = committed.iter().map(|&r| rate(r)).collect();
            t.push(format!(
                "| {name} | {} | {} | **{}** | {} | {} |",
                with_range(&enriched),
                with_range(&steady),
                with_range(&committed),
                each.join(", "),
                mib(rss(runs).map(|b| b as u64))
            ));
        }
        if !plain.is_empty() && !alarms.is_empty() {
            let (pe, ps, pc) = rates(&plain);
            let (ae, as_, ac) = rates(&alarms);
            let m = |v: &[f64]| median(v.iter().copied());
            t.push(format!(
                "| alarms ÷ without sinks (medians) | {} | {} | **{}** | | {} |",
                ratio(m(&ae), m(&pe)),
                ratio(m(&as_), m(&ps)),
                ratio(m(&ac), m(&pc)),
                ratio(rss(&alarms), rss(&plain))
            ));
        }
        t.push(String::new());
        if let Some(mix) = &self.mix {
            t.push(format!(
                "Alarms (11): {} rules: {} above, {} below ({} of these on the device's `work_threshold`), {} outside, {} offline; {} with `for_secs`, {} with hysteresis; {} on every device, {} by model, {} by site, {} on one device. \
                 \"Committed\" is the job's own end of a reading: with alarms, its events are on the topic, its episodes and state in MySQL and its offset committed (without sinks: once enriched). \
                 The alarms runs use `alarms.idle_partition_ms` = {} (the default 10 000 would hold the backlog's last `lateness_ms` of event time for 10 s of wall time); from the last reading enriched to the last offset committed: median {} with alarms, {} without sinks.",
                mix.rules,
                mix.above,
                mix.below,
                mix.device_threshold,
                mix.outside,
                mix.offline,
                mix.with_duration,
                mix.with_hysteresis,
                mix.all,
                mix.model,
                mix.site,
                mix.device,
                self.idle_partition_ms,
                tail(&alarms),
                tail(&plain)
            ));
        }
        let counts: Vec<&AlarmCounts> = alarms.iter().filter_map(|r| r.counts.as_ref()).collect();
        if let Some(first) = counts.first() {
            let same = counts.iter().all(|c| c == first);
            let shown: Vec<&AlarmCounts> = if same { vec![first] } else { counts.clone() };
            let text: Vec<String> = shown
                .iter()
                .map(|c| {
                    format!(
                        "{} raised and {} cleared (`iotflow_alarm_events_total`), {} events on the topic, {} rows in `device_alarms` ({} active; `iotflow_alarms_active` {}), {} late readings",
                        rate(c.raised as f64),
                        rate(c.cleared as f64),
                        rate(c.topic_events as f64),
                        rate(c.table_rows as f64),
                        rate(c.table_active as f64),
                        rate(c.active as f64),
                        rate(c.late as f64)
                    )
                })
                .collect();
            t.push(String::new());
            t.push(if same {
                format!(
                    "Alarm counts, the same in each of the {} round(s): {}.",
                    counts.len(),
                    text[0]
                )
            } else {
                format!("Alarm counts per round (they differ): {}.", text.join("; "))
            });
        }
        t
    }
}

/// Median seconds from every reading enriched to every offset committed.
fn tail(runs: &[&AlarmRun]) -> String {
    median(
        runs.iter()
            .map(|r| r.committed.saturating_sub(r.enriched).as_secs_f64()),
    )
    .map_or("-".into(), |s| format!("{s:.2} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rules: usize, enriched: f64, committed: f64, counts: Option<AlarmCounts>) -> AlarmRun {
        AlarmRun {
            rules,
            rows: 100_000,
            first: (Duration::from_secs(1), 0.0),
            enriched: Duration::from_secs_f64(enriched),
            committed: Duration::from_secs_f64(committed),
            peak_rss: Some(if rules > 0 { 200 << 20 } else { 100 << 20 }),
            counts,
        }
    }

    #[test]
    fn ratios_set_the_alarms_runs_against_the_runs_without_sinks() {
        let counts = AlarmCounts {
            raised: 1200,
            cleared: 1100,
            active: 100,
            late: 0,
            topic_events: 2300,
            table_rows: 1200,
            table_active: 100,
        };
        let figures = AlarmFigures {
            runs: vec![
                run(0, 2.0, 2.5, None),
                run(100, 4.0, 5.0, Some(counts.clone())),
                run(0, 2.0, 2.5, None),
                run(100, 5.0, 6.0, Some(counts)),
            ],
            mix: Some(RuleMix {
                rules: 100,
                ..RuleMix::default()
            }),
            idle_partition_ms: 1000,
        };
        let info = RunInfo {
            readings: 100_000,
            devices: 10_000,
            ..RunInfo::default()
        };
        let text = figures.lines(&info).join("\n");
        // Committed: 40 000/s without sinks; with alarms the upper median of 20 000 and
        // 16 667; peak RSS 200 ÷ 100 MiB.
        assert!(
            text.contains("| alarms ÷ without sinks (medians) | 0.50 | 0.33 | **0.50** | | 2.00 |"),
            "{text}"
        );
        assert!(
            text.contains("| **alarms on, 100 rules** | 25,000 (20,000–25,000) |"),
            "{text}"
        );
        assert!(
            text.contains("median 1.00 s with alarms, 0.50 s without sinks"),
            "{text}"
        );
        assert!(
            text.contains("the same in each of the 2 round(s): 1,200 raised and 1,100 cleared"),
            "{text}"
        );
        assert!(text.contains("1,200 rows in `device_alarms` (100 active; `iotflow_alarms_active` 100), 0 late readings"), "{text}");
    }

    #[test]
    fn nothing_without_runs() {
        assert!(AlarmFigures::default()
            .lines(&RunInfo::default())
            .is_empty());
    }
}
