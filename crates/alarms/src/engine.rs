//! The alarm state machine: one state per (rule, device), fed each device's readings in
//! event-time order.

use std::collections::{BTreeSet, HashMap, HashSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{Rule, RuleError, Severity};

/// One reading as the rules see it: the device, its event time, its value, and the parts of
/// its business record (as of that reading) that rules look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Device id.
    pub pboxid: String,
    /// Event time, milliseconds (the reading's local wall time read as UTC, as the stores keep it).
    pub at_ms: i64,
    /// The reading's value, exact.
    #[serde(with = "iotflow_model::serde_bin::decimal")]
    pub metric: Decimal,
    /// The device's model, from its record.
    pub model: Option<String>,
    /// The device's site, from its record.
    pub site: Option<String>,
    /// The device's `work_threshold`, from its record.
    #[serde(with = "iotflow_model::serde_bin::opt_decimal")]
    pub threshold: Option<Decimal>,
    /// Latitude of the reading, degrees (area rules).
    #[serde(with = "iotflow_model::serde_bin::decimal")]
    pub lat: Decimal,
    /// Longitude of the reading, degrees (area rules).
    #[serde(with = "iotflow_model::serde_bin::decimal")]
    pub lon: Decimal,
}

/// Whether an event opens or closes an alarm episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The episode begins.
    Raised,
    /// The episode ends.
    Cleared,
}

/// One transition of one (rule, device).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Event {
    /// The rule's id.
    pub rule: String,
    /// The device.
    pub pboxid: String,
    /// Raised or cleared.
    pub kind: EventKind,
    /// The rule's severity.
    pub severity: Severity,
    /// Event time of the transition: the reading that raised or cleared; for offline, the
    /// last reading's time plus the rule's silence (raised) and the next reading (cleared).
    pub at_ms: i64,
    /// The metric of the reading at the transition (offline raised: of the last reading).
    pub value: Decimal,
    /// Event time of the episode's first reading: the first of the breaching run (offline: the
    /// last reading before the silence).
    pub first_ms: i64,
    /// Event time of the episode's last reading before this event (raised: the raising one).
    pub last_ms: i64,
}

/// Where one (rule, device) stands (an offline rule is `Active` while the device is offline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not in alarm; `run` is the time of the first reading of the current breaching run.
    Normal {
        /// Event time of the breaching run's first reading, if a run is open.
        run: Option<i64>,
    },
    /// In alarm since the breaching run that began at `first`; `last` is its latest reading.
    Active {
        /// Event time of the episode's first reading.
        first: i64,
        /// Event time of the episode's latest reading.
        last: i64,
    },
}

/// What the engine knows of one device, as [`Engine::snapshot`] gives it and
/// [`Engine::restore`] takes it: enough to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSnapshot {
    /// The device's latest reading applied.
    pub last: Sample,
    /// Its state under each rule, by rule id.
    pub states: Vec<(String, State)>,
}

impl Event {
    /// An event of `rule` for `pboxid`.
    pub fn new(
        rule: &Rule,
        pboxid: &str,
        kind: EventKind,
        at_ms: i64,
        value: Decimal,
        first_ms: i64,
        last_ms: i64,
    ) -> Event {
        Event {
            rule: rule.id.clone(),
            pboxid: pboxid.to_string(),
            kind,
            severity: rule.severity,
            at_ms,
            value,
            first_ms,
            last_ms,
        }
    }
}

/// One device: its latest reading and its state under each rule (index-aligned with the
/// engine's rules; an offline rule's entry says whether it is raised, as `Active`).
#[derive(Debug)]
struct Device {
    last: Sample,
    states: Vec<State>,
    /// Per rule: when its offline timer fires (set while the rule waits on this device).
    due: Vec<Option<i64>>,
}

/// Evaluates rules over readings in event-time order.
///
/// Feed each device's readings in event-time order with [`Engine::observe`] (a [`Reorder`]
/// buffer gives that order; readings of different devices may interleave in any way) and the
/// watermark with [`Engine::advance`] (it fires offline alarms). Readings with the same time
/// are expected in order of their metric, and an exact repeat of the previous reading of a
/// device is ignored: then the events are a function of the set of readings.
///
/// [`Reorder`]: crate::Reorder
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    devices: HashMap<String, Device>,
    /// Offline timers: (fires at, device, rule index), for devices whose last reading an
    /// offline rule applies to and that are not offline yet.
    timers: BTreeSet<(i64, String, usize)>,
    /// Devices whose state changed since the last [`Engine::take_changed`].
    changed: HashSet<String>,
}

impl Engine {
    /// An engine for `rules`, each checked ([`Rule::check`]) and with a unique id.
    pub fn new(rules: Vec<Rule>) -> Result<Engine, RuleError> {
        let mut ids = HashSet::new();
        for rule in &rules {
            rule.check()?;
            if !ids.insert(rule.id.as_str()) {
                return Err(RuleError {
                    rule: rule.id.clone(),
                    reason: "another rule has the same id".into(),
                });
            }
        }
        Ok(Engine {
            rules,
            devices: HashMap::new(),
            timers: BTreeSet::new(),
            changed: HashSet::new(),
        })
    }

    /// Every device's state, for storing beside the input position it corresponds to.
    pub fn snapshot(&self) -> Vec<DeviceSnapshot> {
        let mut devices: Vec<DeviceSnapshot> =
            self.devices.values().map(|d| self.snapshot_of(d)).collect();
        devices.sort_by(|a, b| a.last.pboxid.cmp(&b.last.pboxid));
        devices
    }

    /// The snapshots of the devices whose state changed since the previous call (or since
    /// the engine was made), sorted by device: what an incremental checkpoint stores.
    pub fn take_changed(&mut self) -> Vec<DeviceSnapshot> {
        let mut ids: Vec<String> = self.changed.drain().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| self.device(&id)).collect()
    }

    /// The snapshot of one device, if it has a reading applied.
    pub fn device(&self, pboxid: &str) -> Option<DeviceSnapshot> {
        self.devices.get(pboxid).map(|d| self.snapshot_of(d))
    }

    fn snapshot_of(&self, d: &Device) -> DeviceSnapshot {
        DeviceSnapshot {
            last: d.last.clone(),
            states: self
                .rules
                .iter()
                .zip(&d.states)
                .map(|(r, s)| (r.id.clone(), *s))
                .collect(),
        }
    }

    /// Event time of the device's latest reading applied.
    pub fn last_at(&self, pboxid: &str) -> Option<i64> {
        self.devices.get(pboxid).map(|d| d.last.at_ms)
    }

    /// Devices known (with at least one reading applied).
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// An engine for `rules` that continues from `devices` ([`Engine::snapshot`]): it gives
    /// the events the snapshotted engine would have given next. A state of a rule no longer
    /// in `rules` is dropped; a new rule starts normal on every device.
    pub fn restore(rules: Vec<Rule>, devices: Vec<DeviceSnapshot>) -> Result<Engine, RuleError> {
        let mut engine = Engine::new(rules)?;
        engine.load(devices, None);
        Ok(engine)
    }

    /// Takes `devices` under the engine's rules (states by rule id); offline timers of a
    /// device waiting under a rule fire at its last reading plus the silence, or at `from`
    /// if that is later (a rule that takes effect at `from` cannot fire before it).
    fn load(&mut self, devices: Vec<DeviceSnapshot>, from: Option<i64>) {
        for d in devices {
            let states: Vec<State> = self
                .rules
                .iter()
                .map(|r| {
                    d.states
                        .iter()
                        .find(|(id, _)| *id == r.id)
                        .map_or(State::Normal { run: None }, |(_, s)| *s)
                })
                .collect();
            let mut due = vec![None; self.rules.len()];
            for (i, rule) in self.rules.iter().enumerate() {
                if let (Some(after), State::Normal { .. }) = (rule.offline_after(), states[i]) {
                    if rule.applies(&d.last) {
                        let at = (d.last.at_ms + after).max(from.unwrap_or(i64::MIN));
                        self.timers.insert((at, d.last.pboxid.clone(), i));
                        due[i] = Some(at);
                    }
                }
            }
            self.devices.insert(
                d.last.pboxid.clone(),
                Device {
                    last: d.last,
                    states,
                    due,
                },
            );
        }
    }

    /// Replaces the rules from event time `at` on: every reading before `at` must have been
    /// observed and none at or after it. Offline alarms due before `at` fire first (under
    /// the old rules). A rule that goes, or whose condition changes between offline and a
    /// value condition, clears its active alarms at `at` (with the device's latest value)
    /// and any breaching run; a rule that stays (by id) keeps its states, and the next
    /// reading is judged by its new version; a new rule starts normal. Refused, changing
    /// nothing, when the new rules do not check.
    pub fn change_rules(
        &mut self,
        rules: Vec<Rule>,
        at: i64,
        out: &mut Vec<Event>,
    ) -> Result<(), RuleError> {
        let next = Engine::new(rules)?;
        self.advance(at.saturating_sub(1), out);
        let same_kind = |old: &Rule| {
            next.rules.iter().any(|r| {
                r.id == old.id && r.offline_after().is_some() == old.offline_after().is_some()
            })
        };
        let mut ids: Vec<&String> = self.devices.keys().collect();
        ids.sort();
        let mut devices = Vec::with_capacity(ids.len());
        for id in ids {
            let d = &self.devices[id];
            let mut states = Vec::with_capacity(d.states.len());
            let mut dropped = false;
            for (rule, state) in self.rules.iter().zip(&d.states) {
                if same_kind(rule) {
                    states.push((rule.id.clone(), *state));
                    continue;
                }
                match *state {
                    State::Active { first, last } => {
                        dropped = true;
                        out.push(Event::new(
                            rule,
                            id,
                            EventKind::Cleared,
                            at,
                            d.last.metric,
                            first,
                            last,
                        ));
                    }
                    State::Normal { run: Some(_) } => dropped = true,
                    State::Normal { run: None } => {}
                }
            }
            if dropped {
                self.changed.insert(id.clone());
            }
            devices.push(DeviceSnapshot {
                last: d.last.clone(),
                states,
            });
        }
        self.rules = next.rules;
        self.devices.clear();
        self.timers.clear();
        self.load(devices, Some(at));
        Ok(())
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Applies the next reading of its device; the events it causes go to `out`, in event-time
    /// order for the device.
    pub fn observe(&mut self, s: &Sample, out: &mut Vec<Event>) {
        let fresh = !self.devices.contains_key(&s.pboxid);
        if fresh {
            let states = vec![State::Normal { run: None }; self.rules.len()];
            let due = vec![None; self.rules.len()];
            let last = s.clone();
            self.devices
                .insert(s.pboxid.clone(), Device { last, states, due });
        }
        let device = self.devices.get_mut(&s.pboxid).expect("inserted above");
        let prev = if fresh {
            None
        } else if device.last == *s {
            // An exact repeat of the reading just applied (a redelivery): nothing changes.
            return;
        } else {
            Some(device.last.clone())
        };
        if !self.changed.contains(&s.pboxid) {
            self.changed.insert(s.pboxid.clone());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let event = |kind, at_ms, value, first_ms, last_ms| {
                Event::new(rule, &s.pboxid, kind, at_ms, value, first_ms, last_ms)
            };
            let state = &mut device.states[i];
            if let Some(after) = rule.offline_after() {
                match (*state, &prev) {
                    (State::Active { first, last }, _) => {
                        out.push(event(EventKind::Cleared, s.at_ms, s.metric, first, last));
                        *state = State::Normal { run: None };
                    }
                    (State::Normal { .. }, Some(p)) => {
                        // The silence since `p` raised at its timer, had the watermark passed
                        // it before this reading came.
                        if let Some(due) = device.due[i].take() {
                            self.timers.remove(&(due, s.pboxid.clone(), i));
                            if due <= s.at_ms {
                                out.push(event(EventKind::Raised, due, p.metric, p.at_ms, p.at_ms));
                                out.push(event(
                                    EventKind::Cleared,
                                    s.at_ms,
                                    s.metric,
                                    p.at_ms,
                                    p.at_ms,
                                ));
                            }
                        }
                    }
                    (State::Normal { .. }, None) => {}
                }
                if rule.applies(s) {
                    self.timers.insert((s.at_ms + after, s.pboxid.clone(), i));
                    device.due[i] = Some(s.at_ms + after);
                }
                continue;
            }
            let breach = rule.applies(s) && rule.breaches(s);
            *state = match *state {
                State::Normal { run } if breach => {
                    let start = run.unwrap_or(s.at_ms);
                    if s.at_ms - start >= rule.duration_ms {
                        out.push(event(EventKind::Raised, s.at_ms, s.metric, start, s.at_ms));
                        State::Active {
                            first: start,
                            last: s.at_ms,
                        }
                    } else {
                        State::Normal { run: Some(start) }
                    }
                }
                State::Normal { .. } => State::Normal { run: None },
                State::Active { first, last } if !rule.applies(s) || rule.clears(s) => {
                    out.push(event(EventKind::Cleared, s.at_ms, s.metric, first, last));
                    State::Normal { run: None }
                }
                State::Active { first, .. } => State::Active {
                    first,
                    last: s.at_ms,
                },
            };
        }
        device.last = s.clone();
    }

    /// Event time is complete through `watermark`: raises the offline alarms whose silence
    /// ended at or before it.
    pub fn advance(&mut self, watermark: i64, out: &mut Vec<Event>) {
        while let Some((at, _, _)) = self.timers.first() {
            if *at > watermark {
                break;
            }
            let (at, pboxid, i) = self.timers.pop_first().expect("a first timer");
            let rule = &self.rules[i];
            let device = self.devices.get_mut(&pboxid).expect("a timer's device");
            device.due[i] = None;
            let last = device.last.at_ms;
            device.states[i] = State::Active { first: last, last };
            self.changed.insert(pboxid.clone());
            out.push(Event::new(
                rule,
                &pboxid,
                EventKind::Raised,
                at,
                device.last.metric,
                last,
                last,
            ));
        }
    }

    /// The active alarms: (rule index, device).
    pub fn active(&self) -> impl Iterator<Item = (&Rule, &str)> {
        self.devices.iter().flat_map(move |(id, d)| {
            d.states
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, State::Active { .. }))
                .map(move |(i, _)| (&self.rules[i], id.as_str()))
        })
    }
}
