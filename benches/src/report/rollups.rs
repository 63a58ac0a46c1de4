//! (12) of issue 13: the job with the MySQL sink against the same job with `[rollups] enabled`
//! (minute / hour / day rollups, heat map and day tracks after every stored batch), over the
//! same backlog, interleaved in every round.

use super::{median, mib, quantile, range, BacklogRun};

/// The rollups runs: (rollups on, run).
#[derive(Clone, Debug, Default)]
pub struct RollupFigures {
    /// Every run, in the order they ran.
    pub runs: Vec<(bool, BacklogRun)>,
    /// Rollup rows updated and recomputed by the last run with rollups on.
    pub rows: Option<(f64, f64)>,
    /// That run's rollup-transaction time histogram.
    pub seconds: Vec<(f64, f64)>,
}

impl RollupFigures {
    /// The report's lines (none when the phase did not run).
    pub fn lines(&self) -> Vec<String> {
        if self.runs.is_empty() {
            return Vec::new();
        }
        let rates = |on: bool| -> Vec<f64> {
            self.runs
                .iter()
                .filter(|(o, _)| *o == on)
                .filter_map(|(_, r)| r.rate_after_start().or(Some(r.rate())))
                .collect()
        };
        let (off, on) = (rates(false), rates(true));
        let run = |on: bool| {
            self.runs
                .iter()
                .rev()
                .find(|(o, _)| *o == on)
                .map(|(_, r)| r)
        };
        let mut out = vec![
            String::new(),
            "### (12) What the rollups cost (issue 13)".into(),
            String::new(),
            "| job over the backlog, MySQL sink | readings/s (from the first row) | range | batch write p50 / p99 | peak RSS |".into(),
            "|---|---:|---|---|---|".into(),
        ];
        for (label, flag, rates) in [("rollups off", false, &off), ("rollups on", true, &on)] {
            let r = run(flag);
            out.push(format!(
                "| {label} | {} | {} | {} / {} | {} |",
                median(rates.iter().copied()).map_or("-".into(), super::rate),
                range(rates),
                r.map_or("-".into(), |r| quantile(0.5, &r.batch_write)),
                r.map_or("-".into(), |r| quantile(0.99, &r.batch_write)),
                mib(r.and_then(|r| r.peak_rss)),
            ));
        }
        if let (Some(a), Some(b)) = (median(on.iter().copied()), median(off.iter().copied())) {
            out.push(String::new());
            out.push(format!(
                "With rollups the job stores {:.2}× the readings per second it stores without (medians of the same rounds).",
                a / b
            ));
        }
        if let Some((updated, recomputed)) = self.rows {
            out.push(format!(
                "The last run with rollups updated {updated:.0} rollup rows ({recomputed:.0} recomputed from stored rows); one rollup transaction p50 {}, p99 {}.",
                quantile(0.5, &self.seconds),
                quantile(0.99, &self.seconds)
            ));
        }
        out
    }
}

/// (13) of issue 13: the job without sinks, with `above` rules, and with as many geofence
/// rules (`in_area` / `out_of_area`), over the same backlog, to the last commit.
#[derive(Clone, Debug, Default)]
pub struct GeofenceFigures {
    /// Every run, in the order they ran.
    pub runs: Vec<super::AlarmRun>,
    /// What each run of `runs` had: `None` no alarms, `Some(false)` above rules, `Some(true)`
    /// geofence rules.
    pub kinds: Vec<Option<bool>>,
}

impl GeofenceFigures {
    /// The report's lines (none when the phase did not run).
    pub fn lines(&self) -> Vec<String> {
        if self.runs.is_empty() {
            return Vec::new();
        }
        let pick = |kind: Option<bool>| -> Vec<&super::AlarmRun> {
            self.runs
                .iter()
                .zip(&self.kinds)
                .filter(|(_, k)| **k == kind)
                .map(|(r, _)| r)
                .collect()
        };
        let rules = self.runs.iter().map(|r| r.rules).max().unwrap_or(0);
        let mut out = vec![
            String::new(),
            "### (13) What geofence rules cost (issue 13)".into(),
            String::new(),
            "| job over the backlog | readings/s from the first reading enriched (median) | range | start → every offset committed (median) | peak RSS | alarm events |".into(),
            "|---|---:|---|---:|---|---:|".into(),
        ];
        let mut enriched = Vec::new();
        let mut committed = Vec::new();
        for (label, kind) in [
            ("without sinks".to_string(), None),
            (format!("{rules} `above` rules"), Some(false)),
            (format!("{rules} geofence rules"), Some(true)),
        ] {
            let runs = pick(kind);
            let after: Vec<f64> = runs.iter().filter_map(|r| r.rate_after_start()).collect();
            let m = median(after.iter().copied());
            let c = median(runs.iter().map(|r| r.rate_committed()));
            enriched.push(m);
            committed.push(c);
            let events = runs
                .last()
                .and_then(|r| r.counts.as_ref())
                .map_or("-".to_string(), |c| (c.raised + c.cleared).to_string());
            out.push(format!(
                "| {label} | {} | {} | {} | {} | {events} |",
                m.map_or("-".into(), super::rate),
                range(&after),
                c.map_or("-".into(), super::rate),
                mib(
                    median(runs.iter().filter_map(|r| r.peak_rss.map(|b| b as f64)))
                        .map(|b| b as u64)
                ),
            ));
        }
        if let (Some(above), Some(fences), Some(ca), Some(cf)) =
            (enriched[1], enriched[2], committed[1], committed[2])
        {
            out.push(String::new());
            out.push(format!(
                "Geofence rules against as many `above` rules: {:.2}× the readings enriched per second, {:.2}× committed (medians of the same rounds): what the polygon tests cost over the alarm machinery both share.",
                fences / above,
                cf / ca
            ));
        }
        out
    }
}
