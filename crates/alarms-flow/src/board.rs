//! What a process shows of its alarms: the metrics and the `/api/alarms` JSON (active alarms,
//! recent events, recent late readings), fed by the alarm operators of its workers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use iotflow_alarms::{Event, EventKind};
use iotflow_metrics::Metrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// Events and late readings kept for the UI.
const RECENT: usize = 200;

/// The alarm metrics of one process (registered once, shared by its workers).
#[derive(Clone)]
pub struct AlarmMetrics {
    active: IntGaugeVec,
    events: IntCounterVec,
    late: IntCounterVec,
    replayed: IntCounterVec,
    held: IntGaugeVec,
    job: [String; 2],
}

impl AlarmMetrics {
    /// Registers the alarm metrics in `metrics`' registry, labelled with its job.
    pub fn register(metrics: &Metrics, job_name: &str, job_id: &str) -> AlarmMetrics {
        let r = metrics.registry();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        AlarmMetrics {
            active: gauge(
                "iotflow_alarms_active",
                "Alarms in effect (raised, not cleared), by rule and severity.",
                &["job_name", "job_id", "rule", "severity"],
            ),
            events: counter(
                "iotflow_alarm_events_total",
                "Alarm events (raised or cleared) produced, by rule and kind.",
                &["job_name", "job_id", "rule", "kind"],
            ),
            late: counter(
                "iotflow_alarm_late_readings_total",
                "Readings that arrived later than alarms.lateness_ms behind their partition's newest: counted, never applied to an alarm.",
                &["job_name", "job_id", "worker"],
            ),
            replayed: counter(
                "iotflow_alarm_replayed_readings_total",
                "Readings read again after a restart that the restored alarm state already covers (skipped).",
                &["job_name", "job_id", "worker"],
            ),
            held: gauge(
                "iotflow_alarm_held_readings",
                "Readings the alarm operator holds until event time passes them (the lateness bound).",
                &["job_name", "job_id", "worker"],
            ),
            job: [job_name.to_string(), job_id.to_string()],
        }
    }

    fn l<'a>(&'a self, extra: [&'a str; 2]) -> [&'a str; 4] {
        [&self.job[0], &self.job[1], extra[0], extra[1]]
    }

    /// The worker's late-reading counter.
    pub fn late(&self, worker: usize) -> IntCounter {
        let w = worker.to_string();
        self.late
            .with_label_values(&[&self.job[0], &self.job[1], &w])
    }

    /// The worker's replayed-reading counter.
    pub fn replayed(&self, worker: usize) -> IntCounter {
        let w = worker.to_string();
        self.replayed
            .with_label_values(&[&self.job[0], &self.job[1], &w])
    }

    /// The worker's held-readings gauge.
    pub fn held(&self, worker: usize) -> IntGauge {
        let w = worker.to_string();
        self.held
            .with_label_values(&[&self.job[0], &self.job[1], &w])
    }

    /// Counts `event` and moves the active gauge.
    pub fn event(&self, event: &Event) {
        let kind = match event.kind {
            EventKind::Raised => "raised",
            EventKind::Cleared => "cleared",
        };
        self.events
            .with_label_values(&self.l([&event.rule, kind]))
            .inc();
        let active = self
            .active
            .with_label_values(&self.l([&event.rule, event.severity.as_str()]));
        match event.kind {
            EventKind::Raised => active.inc(),
            EventKind::Cleared => active.dec(),
        }
    }

    /// An alarm restored as active at start.
    pub fn restored_active(&self, rule: &str, severity: &str) {
        self.active
            .with_label_values(&self.l([rule, severity]))
            .inc();
    }
}

/// A late reading, as the UI lists it.
#[derive(Clone, Debug)]
pub struct LateReading {
    /// The device.
    pub pboxid: String,
    /// Its event time, ms.
    pub at_ms: i64,
    /// The watermark already released when it came, ms.
    pub released_ms: i64,
    /// Source partition and offset.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Active alarms and recent events of a process.
#[derive(Debug, Default)]
pub struct AlarmBoard {
    active: BTreeMap<(String, String), Event>,
    recent: VecDeque<Event>,
    late: VecDeque<LateReading>,
    late_total: u64,
    /// The area rules in effect (geofences), as the UI draws them.
    areas: Vec<serde_json::Value>,
}

/// Formats event-time milliseconds as the stores show them.
pub fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// The JSON of one event (as published on the alarms topic and shown by the UI).
pub fn event_json(e: &Event) -> serde_json::Value {
    let kind = match e.kind {
        EventKind::Raised => "raised",
        EventKind::Cleared => "cleared",
    };
    serde_json::json!({
        "id": event_id(e),
        "rule": e.rule,
        "pboxid": e.pboxid,
        "kind": kind,
        "severity": e.severity.as_str(),
        "at": time_text(e.at_ms),
        "at_ms": e.at_ms,
        "value": e.value.to_string(),
        "first": time_text(e.first_ms),
        "last": time_text(e.last_ms),
    })
}

/// The event's identity: the same event produced again (after a restart) has the same id,
/// so a consumer of the alarms topic can drop a repeat.
pub fn event_id(e: &Event) -> String {
    let kind = match e.kind {
        EventKind::Raised => "raised",
        EventKind::Cleared => "cleared",
    };
    format!("{}/{}/{}/{kind}", e.rule, e.pboxid, e.first_ms)
}

impl AlarmBoard {
    /// Takes events in the order they happened.
    pub fn events(&mut self, events: &[Event]) {
        for e in events {
            let key = (e.rule.clone(), e.pboxid.clone());
            match e.kind {
                EventKind::Raised => {
                    self.active.insert(key, e.clone());
                }
                EventKind::Cleared => {
                    self.active.remove(&key);
                }
            }
            self.recent.push_back(e.clone());
            while self.recent.len() > RECENT {
                self.recent.pop_front();
            }
        }
    }

    /// An alarm active at start (restored state; its raising event is not known here).
    pub fn restored(&mut self, rule: &str, pboxid: &str, event: Event) {
        self.active
            .insert((rule.to_string(), pboxid.to_string()), event);
    }

    /// A late reading.
    pub fn late(&mut self, late: LateReading) {
        self.late_total += 1;
        self.late.push_back(late);
        while self.late.len() > RECENT {
            self.late.pop_front();
        }
    }

    /// The rules in effect changed (or were loaded): keeps their geofences for the UI.
    pub fn rules_in_effect(&mut self, rules: &[iotflow_alarms::Rule]) {
        use iotflow_alarms::Condition;
        self.areas = rules
            .iter()
            .filter_map(|r| {
                let (when, area) = match &r.condition {
                    Condition::InArea { area } => ("in_area", area),
                    Condition::OutOfArea { area } => ("out_of_area", area),
                    _ => return None,
                };
                Some(serde_json::json!({
                    "rule": r.id,
                    "when": when,
                    "severity": r.severity.as_str(),
                    "rings": area.rings(),
                }))
            })
            .collect();
    }

    /// The `/api/alarms` JSON.
    pub fn json(&self) -> String {
        let active: Vec<_> = self.active.values().map(event_json).collect();
        let recent: Vec<_> = self.recent.iter().rev().map(event_json).collect();
        let late: Vec<_> = self
            .late
            .iter()
            .rev()
            .map(|l| {
                serde_json::json!({
                    "pboxid": l.pboxid,
                    "at": time_text(l.at_ms),
                    "released_through": time_text(l.released_ms),
                    "partition": l.partition,
                    "offset": l.offset,
                })
            })
            .collect();
        serde_json::json!({
            "active": active,
            "recent": recent,
            "late_total": self.late_total,
            "late": late,
            "areas": self.areas,
        })
        .to_string()
    }
}

/// The route serving `board` at `/api/alarms`.
pub fn route(board: Arc<Mutex<AlarmBoard>>) -> iotflow_metrics::Route {
    Arc::new(move |_query: &str| board.lock().expect("alarm board lock").json())
}
