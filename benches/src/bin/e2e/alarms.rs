//! (11), issue 12: the job over the backlog without sinks against the same job with
//! `[alarms] enabled` and `--alarm-rules` rules, both followed until every reading is enriched
//! and until every offset is committed (with alarms: every reading's events on the topic, its
//! episodes and state in MySQL).
//!
//! The rules are a fixed mix ([`rule_mix`]) made to fire on the simulator's readings: a device
//! works (metric about 75 ± 5) or idles (about 20 ± 5) and switches every 50 readings or so, so
//! bounds between 8 and 92 are crossed now and then, those on the device's `work_threshold`
//! (50) at every switch. Scopes name the models, sites and devices of the dimension the
//! readings are enriched with. Every device reports every second of event time until the
//! backlog ends, so the offline rules cost their timers but never fire.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use iotflow_benches::job::{COMMITTED_OFFSET, ENRICHED};
use iotflow_benches::prom;
use iotflow_benches::report::{AlarmCounts, AlarmRun, RuleMix};
use iotflow_model::DeviceInfo;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::Consumer;

use crate::{Bench, Topics};

/// `alarms.idle_partition_ms` of the alarms runs. At the end of a backlog nothing moves event
/// time any more, so the last `lateness_ms` (5 s) of it are released only once the partitions
/// count as idle; with the default 10 s that wait would outweigh a run of a few seconds.
pub(crate) const IDLE_PARTITION_MS: u64 = 1000;

/// `job.idle_exit_secs` of (11): longer than the other runs' 3 s, so that the job is still
/// there when its last commit (after the idle release and a checkpoint) is scraped.
const IDLE_EXIT_SECS: u64 = 8;

/// Where a rule looks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    All,
    Model(String),
    Site(String),
    Device(String),
}

/// One `[[alarms.rules]]` entry of the mix.
#[derive(Clone, Debug)]
struct RuleSpec {
    id: String,
    when: &'static str,
    value: Option<String>,
    low: Option<String>,
    high: Option<String>,
    after_secs: Option<u64>,
    for_secs: u64,
    hysteresis: u64,
    severity: &'static str,
    scope: Scope,
    device_threshold: bool,
}

/// The rule file of the alarms runs and what is in it.
pub(crate) struct AlarmRules {
    pub path: PathBuf,
    pub mix: RuleMix,
}

/// `count` rules over `devices` (whose models and sites the scopes name). Per 20 rules: 8
/// `above` (2 of them only after 10 or 30 s), 4 `below`, 4 `outside`, 2 `above` and 1 `below`
/// on the device's `work_threshold`, 1 `offline`; of every 5 rules 2 watch every device, 1 a
/// model, 1 a site, 1 a single device.
fn rule_mix(count: usize, devices: &[DeviceInfo]) -> Vec<RuleSpec> {
    let distinct = |field: fn(&DeviceInfo) -> Option<&String>| {
        let mut seen: Vec<String> = Vec::new();
        for d in devices {
            if let Some(v) = field(d) {
                if !seen.contains(v) {
                    seen.push(v.clone());
                }
            }
        }
        seen
    };
    let models = distinct(|d| d.model.as_ref());
    let sites = distinct(|d| d.site.as_ref());
    let half = |i: usize, v: usize| {
        if i % 2 == 1 {
            format!("{v}.5")
        } else {
            v.to_string()
        }
    };
    (0..count)
        .map(|i| {
            let mut r = RuleSpec {
                id: String::new(),
                when: "above",
                value: None,
                low: None,
                high: None,
                after_secs: None,
                for_secs: 0,
                hysteresis: 0,
                severity: ["info", "warning", "critical"][i % 3],
                scope: match (i + i / 20) % 5 {
                    2 if !models.is_empty() => Scope::Model(models[i % models.len()].clone()),
                    3 if !sites.is_empty() => Scope::Site(sites[i % sites.len()].clone()),
                    4 if !devices.is_empty() => {
                        Scope::Device(devices[(i * 7919) % devices.len()].pboxid.clone())
                    }
                    _ => Scope::All,
                },
                device_threshold: false,
            };
            match i % 20 {
                0..=5 => {
                    r.value = Some(half(i, 78 + (i * 7) % 15));
                    r.hysteresis = 1 + (i % 4) as u64;
                    r.for_secs = [0, 1, 3, 5][i % 4];
                }
                6..=9 => {
                    r.when = "below";
                    r.value = Some(half(i, 8 + (i * 5) % 15));
                    r.hysteresis = 1 + (i % 3) as u64;
                    r.for_secs = [0, 2, 4][i % 3];
                }
                10..=13 => {
                    r.when = "outside";
                    r.low = Some((10 + i % 8).to_string());
                    r.high = Some((82 + i % 9).to_string());
                    r.hysteresis = 1 + (i % 2) as u64;
                    r.for_secs = [0, 2][i % 2];
                }
                14 | 15 => {
                    r.value = Some("60".into());
                    r.hysteresis = 5;
                    r.for_secs = 2 + (i % 3) as u64;
                    r.device_threshold = true;
                }
                16 => {
                    r.when = "below";
                    r.value = Some("40".into());
                    r.hysteresis = 5;
                    r.for_secs = 3;
                    r.device_threshold = true;
                }
                17 => {
                    r.when = "offline";
                    r.after_secs = Some(10 + (i % 30) as u64);
                }
                k => {
                    r.value = Some("70".into());
                    r.hysteresis = 3;
                    r.for_secs = if k == 18 { 10 } else { 30 };
                }
            }
            r.id = format!(
                "bench-{i:03}-{}{}",
                r.when,
                if r.device_threshold { "-device" } else { "" }
            );
            r
        })
        .collect()
}

/// `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The rules as a configuration file: `[alarms]` with the `[[alarms.rules]]` only; the rest
/// of the run's settings come as `IOTFLOW__*` variables.
fn rules_toml(rules: &[RuleSpec]) -> String {
    let mut s = String::from(
        "# Written by the e2e harness (benches/src/bin/e2e/alarms.rs): the rules of (11).\n[alarms]\n",
    );
    for r in rules {
        s.push_str(&format!(
            "\n[[alarms.rules]]\nid = {}\nwhen = \"{}\"\n",
            toml_str(&r.id),
            r.when
        ));
        for (key, value) in [("value", &r.value), ("low", &r.low), ("high", &r.high)] {
            if let Some(v) = value {
                s.push_str(&format!("{key} = {}\n", toml_str(v)));
            }
        }
        if let Some(after) = r.after_secs {
            s.push_str(&format!("after_secs = {after}\n"));
        } else {
            s.push_str(&format!(
                "for_secs = {}\nhysteresis = \"{}\"\n",
                r.for_secs, r.hysteresis
            ));
        }
        s.push_str(&format!("severity = \"{}\"\n", r.severity));
        match &r.scope {
            Scope::All => {}
            Scope::Model(m) => s.push_str(&format!("model = {}\n", toml_str(m))),
            Scope::Site(m) => s.push_str(&format!("site = {}\n", toml_str(m))),
            Scope::Device(m) => s.push_str(&format!("device = {}\n", toml_str(m))),
        }
        if r.device_threshold {
            s.push_str("device_threshold = true\n");
        }
    }
    s
}

fn mix_of(rules: &[RuleSpec]) -> RuleMix {
    let count = |f: &dyn Fn(&RuleSpec) -> bool| rules.iter().filter(|r| f(r)).count();
    RuleMix {
        rules: rules.len(),
        above: count(&|r| r.when == "above"),
        below: count(&|r| r.when == "below"),
        outside: count(&|r| r.when == "outside"),
        offline: count(&|r| r.when == "offline"),
        device_threshold: count(&|r| r.device_threshold),
        with_duration: count(&|r| r.for_secs > 0),
        with_hysteresis: count(&|r| r.hysteresis > 0),
        all: count(&|r| r.scope == Scope::All),
        model: count(&|r| matches!(r.scope, Scope::Model(_))),
        site: count(&|r| matches!(r.scope, Scope::Site(_))),
        device: count(&|r| matches!(r.scope, Scope::Device(_))),
    }
}

impl Bench {
    /// Writes `<log dir>/alarm-rules-<count>.toml` with the mix over `devices` and has the
    /// job check it (`iotflow run --config … --print-config` refuses a rule that cannot work,
    /// by name), so a bad rule stops the harness before anything is measured.
    pub(crate) fn alarm_rules(&self, count: usize, devices: &[DeviceInfo]) -> Result<AlarmRules> {
        ensure!(
            count > 0,
            "--alarm-rules must be at least 1 (or --no-alarms)"
        );
        let rules = rule_mix(count, devices);
        let path = self.args.log_dir.join(format!("alarm-rules-{count}.toml"));
        self.write_checked_rules(&path, &rules_toml(&rules), count)?;
        Ok(AlarmRules {
            path,
            mix: mix_of(&rules),
        })
    }

    /// (13) Writes `<log dir>/geofence-rules-<count>.toml`: `count` geofences over the
    /// simulator's area (30..32 N, 120..122 E), squares of 0.25° on a grid, every other one
    /// `out_of_area` and every third with a hole, checked by the job like [`Bench::alarm_rules`].
    pub(crate) fn geofence_rules(&self, count: usize) -> Result<AlarmRules> {
        self.area_or_threshold_rules(count, true)
    }

    /// (13) The reference of [`Bench::geofence_rules`]: `count` plain `above` rules (a
    /// threshold per rule over the simulator's metric), so that the two runs differ only in
    /// what each rule evaluates.
    pub(crate) fn threshold_rules(&self, count: usize) -> Result<AlarmRules> {
        self.area_or_threshold_rules(count, false)
    }

    fn area_or_threshold_rules(&self, count: usize, areas: bool) -> Result<AlarmRules> {
        ensure!(
            count > 0,
            "--geofence-rules must be at least 1 (or --no-geofences)"
        );
        let mut s = String::from(
            "# Written by the e2e harness (benches/src/bin/e2e/alarms.rs): the geofences of (13).\n[alarms]\n",
        );
        for i in 0..count {
            let (row, col) = ((i / 8) % 8, i % 8);
            let (s0, w0) = (30.0 + 0.25 * row as f64, 120.0 + 0.25 * col as f64);
            let (n0, e0) = (s0 + 0.25, w0 + 0.25);
            let mut rings = format!("[[{w0}, {s0}], [{e0}, {s0}], [{e0}, {n0}], [{w0}, {n0}]]");
            if i % 3 == 0 {
                let (a, b, c, d) = (w0 + 0.1, s0 + 0.1, w0 + 0.15, s0 + 0.15);
                rings.push_str(&format!(
                    ", [[{a}, {b}], [{c}, {b}], [{c}, {d}], [{a}, {d}]]"
                ));
            }
            if areas {
                s.push_str(&format!(
                    "\n[[alarms.rules]]\nid = \"bench-fence-{i:03}\"\nwhen = \"{}\"\narea = [{rings}]\nseverity = \"info\"\n",
                    if i % 2 == 0 { "in_area" } else { "out_of_area" }
                ));
            } else {
                s.push_str(&format!(
                    "\n[[alarms.rules]]\nid = \"bench-above-{i:03}\"\nwhen = \"above\"\nvalue = \"{}\"\nseverity = \"info\"\n",
                    95 + i % 5
                ));
            }
        }
        let kind = if areas { "geofence" } else { "threshold" };
        let path = self.args.log_dir.join(format!("{kind}-rules-{count}.toml"));
        self.write_checked_rules(&path, &s, count)?;
        Ok(AlarmRules {
            path,
            mix: RuleMix {
                rules: count,
                ..Default::default()
            },
        })
    }

    /// Writes the rule file `text` to `path` and has the job check it (`iotflow run --config …
    /// --print-config` refuses a rule that cannot work, by name) and count its `count` rules.
    fn write_checked_rules(&self, path: &std::path::Path, text: &str, count: usize) -> Result<()> {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        let out = Command::new(&self.args.iotflow)
            .args(["run", "--print-config", "--config"])
            .arg(path)
            .output()
            .with_context(|| format!("starting {}", self.args.iotflow.display()))?;
        ensure!(
            out.status.success(),
            "the job refuses the rules of {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let loaded = String::from_utf8_lossy(&out.stdout)
            .matches("AlarmRuleConfig {")
            .count();
        ensure!(
            loaded == count,
            "the job read {loaded} of the {count} rules of {}",
            path.display()
        );
        Ok(())
    }

    /// (11) The job over the whole backlog without sinks, or with alarms on and `rules`
    /// (into a fresh database and a fresh alarms topic); from start until every reading is
    /// enriched and until the committed offsets add up to the backlog.
    pub(crate) fn alarm_run(
        &mut self,
        topics: &Topics,
        rules: Option<&AlarmRules>,
        name: &str,
    ) -> Result<AlarmRun> {
        let n = self.args.readings;
        let mut spec = self.spec(topics, format!("backlog-{name}"), IDLE_EXIT_SECS);
        let mut scratch = None;
        if let Some(rules) = rules {
            let db = self.database("alarms")?;
            let topic = self.topic(&format!("alarms-{name}"), self.args.partitions)?;
            spec.db_url = self.db_url(&db);
            spec.config = Some(rules.path.clone());
            spec.env = [
                ("IOTFLOW__ALARMS__ENABLED", "true".to_string()),
                ("IOTFLOW__ALARMS__TOPIC", topic.clone()),
                (
                    "IOTFLOW__ALARMS__IDLE_PARTITION_MS",
                    IDLE_PARTITION_MS.to_string(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            scratch = Some((db, topic));
        }
        let mut running = spec.spawn()?;
        let enriched = running.wait_for(ENRICHED, n, Duration::from_secs(600))?;
        let committed = running.wait_for(COMMITTED_OFFSET, n, Duration::from_secs(600))?;
        running.finish(Duration::from_secs(60))?;
        let counts = match scratch {
            Some((db, topic)) => Some(self.alarm_counts(&committed.text, &db, &topic)?),
            None => None,
        };
        Ok(AlarmRun {
            rules: rules.map_or(0, |r| r.mix.rules),
            rows: n,
            first: enriched.first,
            enriched: enriched.done,
            committed: committed.done,
            peak_rss: running.peak_rss(),
            counts,
        })
    }

    /// What an alarms run produced: its counters from `text` (the scrape at the last commit),
    /// the episodes in `<db>.device_alarms` and the events on `topic`, which must be at least
    /// the counter's (the topic is at least once).
    fn alarm_counts(&self, text: &str, db: &str, topic: &str) -> Result<AlarmCounts> {
        let events = "iotflow_alarm_events_total";
        let raised = prom::sum_where(text, events, &[("kind", "raised")]) as u64;
        let cleared = prom::sum_where(text, events, &[("kind", "cleared")]) as u64;
        let url = self.db_url(db);
        let (table_rows, table_active) = self
            .rt
            .block_on(async {
                let pool = mysql_async::Pool::new(url.as_str());
                let mut conn = pool.get_conn().await?;
                let row: Option<(u64, u64)> = conn
                    .query_first(
                        "SELECT COUNT(*), CAST(COALESCE(SUM(cleared_at IS NULL), 0) AS UNSIGNED) FROM device_alarms",
                    )
                    .await?;
                drop(conn);
                pool.disconnect().await?;
                anyhow::Ok(row.unwrap_or_default())
            })
            .with_context(|| format!("counting the rows of `{db}`.device_alarms"))?;
        Ok(AlarmCounts {
            raised,
            cleared,
            active: prom::sum(text, "iotflow_alarms_active") as u64,
            late: prom::sum(text, "iotflow_alarm_late_readings_total") as u64,
            topic_events: self.count_messages(topic, raised + cleared)?,
            table_rows,
            table_active,
        })
    }

    /// Every message of `topic` (all partitions, from the beginning): at least `at_least`,
    /// then until none came for a second.
    fn count_messages(&self, topic: &str, at_least: u64) -> Result<u64> {
        let (consumer, tpl) = self.reader_from_start(topic, "alarms-count")?;
        consumer.assign(&tpl)?;
        let (mut count, mut last) = (0u64, Instant::now());
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(_)) => {
                    count += 1;
                    last = Instant::now();
                }
                Some(Err(e)) => bail!("consuming {topic}: {e}"),
                None if count >= at_least && last.elapsed() >= Duration::from_secs(1) => {
                    return Ok(count)
                }
                None => ensure!(
                    last.elapsed() < Duration::from_secs(30),
                    "{topic} holds {count} alarm events, the job counted {at_least}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_of_100_rules() {
        let devices = iotflow_gen::devices(10_000, 42);
        let rules = rule_mix(100, &devices);
        let mix = mix_of(&rules);
        assert_eq!(
            mix,
            RuleMix {
                rules: 100,
                above: 50,
                below: 25,
                outside: 20,
                offline: 5,
                device_threshold: 15,
                with_duration: 68,
                with_hysteresis: 95,
                all: 40,
                model: 20,
                site: 20,
                device: 20,
            }
        );
        let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 100, "ids are unique");
        // Scopes name what the dimension holds.
        for r in &rules {
            match &r.scope {
                Scope::Model(m) => assert!(devices.iter().any(|d| d.model.as_ref() == Some(m))),
                Scope::Site(s) => assert!(devices.iter().any(|d| d.site.as_ref() == Some(s))),
                Scope::Device(id) => assert!(devices.iter().any(|d| &d.pboxid == id)),
                Scope::All => {}
            }
        }
    }

    #[test]
    fn rules_are_written_as_toml() {
        let devices = iotflow_gen::devices(100, 42);
        let text = rules_toml(&rule_mix(20, &devices));
        assert_eq!(text.matches("[[alarms.rules]]").count(), 20);
        assert!(text.contains(
            "id = \"bench-000-above\"\nwhen = \"above\"\nvalue = \"78\"\nfor_secs = 0\nhysteresis = \"1\"\nseverity = \"info\"\n"
        ), "{text}");
        assert!(
            text.contains("when = \"offline\"\nafter_secs = 27\n"),
            "{text}"
        );
        assert!(text.contains("device_threshold = true\n"));
        assert_eq!(toml_str("PB-500 \"Pro\""), r#""PB-500 \"Pro\"""#);
    }
}
