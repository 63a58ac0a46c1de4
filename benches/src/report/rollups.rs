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

/// (13) of issue 13: the job without sinks against the same job with only geofence rules
/// (`in_area` / `out_of_area`), over the same backlog, to the last commit.
#[derive(Clone, Debug, Default)]
pub struct GeofenceFigures {
    /// Every run: `rules` 0 without alarms, else the geofence rules.
    pub runs: Vec<super::AlarmRun>,
}

impl GeofenceFigures {
    /// The report's lines (none when the phase did not run).
    pub fn lines(&self) -> Vec<String> {
        if self.runs.is_empty() {
            return Vec::new();
        }
        let pick = |on: bool| -> Vec<&super::AlarmRun> {
            self.runs.iter().filter(|r| (r.rules > 0) == on).collect()
        };
        let rules = self.runs.iter().map(|r| r.rules).max().unwrap_or(0);
        let mut out = vec![
            String::new(),
            "### (13) What geofence rules cost (issue 13)".into(),
            String::new(),
            "| job over the backlog | readings/s from the first reading enriched (median) | range | start → every offset committed | peak RSS |".into(),
            "|---|---:|---|---:|---|".into(),
        ];
        let mut medians = Vec::new();
        for (label, on) in [
            ("without sinks".to_string(), false),
            (format!("{rules} geofence rules"), true),
        ] {
            let runs = pick(on);
            let after: Vec<f64> = runs.iter().filter_map(|r| r.rate_after_start()).collect();
            let committed: Vec<f64> = runs.iter().map(|r| r.rate_committed()).collect();
            let m = median(after.iter().copied());
            medians.push(m);
            out.push(format!(
                "| {label} | {} | {} | {} | {} |",
                m.map_or("-".into(), super::rate),
                range(&after),
                median(committed.iter().copied()).map_or("-".into(), super::rate),
                mib(
                    median(runs.iter().filter_map(|r| r.peak_rss.map(|b| b as f64)))
                        .map(|b| b as u64)
                ),
            ));
        }
        if let [Some(off), Some(on)] = medians[..] {
            out.push(String::new());
            out.push(format!(
                "With {rules} geofence rules the job enriches {:.2}× the readings per second it does without sinks (medians of the same rounds).",
                on / off
            ));
        }
        let events: Vec<u64> = self
            .runs
            .iter()
            .filter_map(|r| r.counts.as_ref().map(|c| c.raised + c.cleared))
            .collect();
        if let Some(e) = events.last() {
            out.push(format!(
                "The last run with geofences produced {e} enter/exit events ({:.3} per reading).",
                *e as f64 / self.runs[0].rows.max(1) as f64
            ));
        }
        out
    }
}
