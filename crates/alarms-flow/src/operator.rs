//! The alarm operator: each device's readings to one worker, through that worker's lateness
//! buffer and engine, out as checkpoints to the checkpoint writer.
//!
//! Event time: the operator keeps, per source partition, the newest event time it has been
//! given; the watermark is the least of those over the partitions that have given a reading
//! within `alarms.idle_partition_ms` (all of them when all are that quiet), minus the lateness
//! bound. A reading at or before the watermark already released is late: counted, shown, never
//! applied.
//!
//! Exactness: the operator holds its capability (and so the offset commit) at the earliest
//! time whose effect is not in a stored checkpoint, and at the earliest time with a reading
//! still in the lateness buffer. A restart therefore reads again every reading the stored
//! state does not cover: one at or before the stored watermark was covered (skipped; it was
//! applied or counted late before), one after it was not applied yet (taken again). At a stop
//! (the input is complete) the final checkpoint stores the buffer itself, since the offsets
//! are then committed past it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iotflow_alarms::{
    Engine, Event, Pushed, Reorder, Sample, StoredClock, StoredDevice, StoredSample,
};
use iotflow_config::RuleSet;
use iotflow_kafka::SourceHandle;
use iotflow_metrics::RateLimitedLog;
use iotflow_model::Enriched;
use iotflow_sink::{BatchPolicy, SinkBatches, SinkEnv, SinkOptions};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::board::LateReading;
use crate::store::{Checkpoint, CheckpointWriter};
use crate::{worker_of, AlarmsConnector};

/// One reading as the alarm operator takes it: the sample and its source position.
pub type Point = (Sample, i32, i64);

/// The sample the rules see of an enriched reading.
pub fn sample_of(e: &Enriched) -> Point {
    let r = &e.reading;
    let d = e.device.as_deref();
    (
        Sample {
            pboxid: r.pboxid.clone(),
            at_ms: r.event_time.and_utc().timestamp_millis(),
            metric: r.metric,
            model: d.and_then(|d| d.model.clone()),
            site: d.and_then(|d| d.site.clone()),
            threshold: d.and_then(|d| d.work_threshold),
            lat: r.latitude,
            lon: r.longitude,
        },
        r.source.partition,
        r.source.offset,
    )
}

/// The table's rule set in effect on a worker, as its clock stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InEffect {
    /// The set, as published.
    pub set: RuleSet,
    /// The event time it was applied from: its own, or (a set that came after the watermark
    /// had passed it) the first time after the watermark.
    pub applied_at: i64,
}

/// `.alarms(&connector, &env)`: the alarm operator and its checkpoint writer on a stream of
/// enriched readings.
pub trait Alarms<'scope> {
    /// Evaluates the connector's rules over the stream; `rules` brings the table's rule sets
    /// (`alarms.rules_topic`), every one to every worker. The returned stream carries no
    /// data; its frontier passes a time once every effect of the readings before it is stored.
    /// `lifecycle` tells when the readers drain (the final checkpoint then stores the
    /// lateness buffer).
    fn alarms(
        self,
        rules: Option<StreamVec<'scope, u64, RuleSet>>,
        connector: &AlarmsConnector,
        env: &SinkEnv,
        lifecycle: Arc<SourceHandle>,
    ) -> Result<StreamVec<'scope, u64, ()>, String>;
}

impl<'scope> Alarms<'scope> for StreamVec<'scope, u64, Enriched> {
    fn alarms(
        self,
        rules: Option<StreamVec<'scope, u64, RuleSet>>,
        connector: &AlarmsConnector,
        env: &SinkEnv,
        lifecycle: Arc<SourceHandle>,
    ) -> Result<StreamVec<'scope, u64, ()>, String> {
        let scope = self.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let mut state = WorkerState::restore(connector, index, peers)?;
        let interval = Duration::from_millis(connector.options.checkpoint_interval_ms);
        let rules = match rules {
            Some(r) => r,
            None => timely::dataflow::operators::ToStream::to_stream(Vec::<RuleSet>::new(), scope),
        };
        let checkpoints = self
            .map(|e| sample_of(&e))
            .binary_frontier::<_, CapacityContainerBuilder<Vec<Checkpoint>>, _, _, _, _>(
                rules,
                Exchange::new(|p: &Point| crate::device_hash(&p.0.pboxid)),
                Pipeline,
                "alarms",
                move |_cap, info| {
                    let activator = scope.activator_for(info.address);
                    let mut stash: BTreeMap<u64, Vec<Point>> = BTreeMap::new();
                    let mut cap: Option<Capability<u64>> = None;
                    let mut last_checkpoint = Instant::now();
                    move |(input, frontier), (sets, sets_frontier), output| {
                        sets.for_each(|_, data| {
                            for set in data.drain(..) {
                                state.schedule(set);
                            }
                        });
                        input.for_each(|stamp, data| {
                            let Some(t) = stamp.least().copied() else {
                                return;
                            };
                            if data.is_empty() {
                                return;
                            }
                            if cap.as_ref().is_none_or(|c| t < *c.time()) {
                                cap = Some(stamp.retain_least(0).expect("non-empty stamp"));
                            }
                            stash.entry(t).or_default().append(data);
                        });
                        let now = Instant::now();
                        while let Some(entry) = stash.first_entry() {
                            // Readings wait for the rule sets published before them too.
                            if frontier.less_equal(entry.key())
                                || sets_frontier.less_equal(entry.key())
                            {
                                break;
                            }
                            let t = *entry.key();
                            let points = entry.remove();
                            state.take(t, points, now);
                            state.release(now, cap.as_ref().map(|c| *c.time()));
                        }
                        if !state.reorder.is_empty() {
                            // Wall time alone can make a partition idle and move the watermark.
                            state.release(now, cap.as_ref().map(|c| *c.time()));
                        }
                        // Draining (or the input is complete): from now on every checkpoint stores
                        // the lateness buffer, and the buffer no longer holds the commit back.
                        let draining = (frontier.is_empty() && stash.is_empty())
                            || lifecycle.draining.load(Ordering::SeqCst)
                            || lifecycle.stop.load(Ordering::SeqCst);
                        if draining && !state.drained {
                            state.drained = true;
                            if let Some(t) = cap.as_ref().map(|c| *c.time()) {
                                state.dirty(t);
                            }
                        }
                        let due = state.dirty_since.is_some()
                            && (last_checkpoint.elapsed() >= interval || state.drained);
                        if due {
                            if let Some(c) = cap.as_ref() {
                                let checkpoint = state.checkpoint();
                                output.session(c).give(checkpoint);
                                last_checkpoint = Instant::now();
                            }
                        }
                        state.metrics_held.set(state.reorder.len() as i64);
                        let hold = [
                            stash.keys().next().copied(),
                            state.dirty_since,
                            if state.drained {
                                None
                            } else {
                                state.epoch_max.keys().next().copied()
                            },
                        ]
                        .into_iter()
                        .flatten()
                        .min();
                        match (hold, cap.as_mut()) {
                            (Some(h), Some(c)) => {
                                if h > *c.time() {
                                    c.downgrade(&h);
                                }
                            }
                            _ => cap = None,
                        }
                        if state.dirty_since.is_some() {
                            activator.activate_after(
                                interval
                                    .saturating_sub(last_checkpoint.elapsed())
                                    .max(Duration::from_millis(1)),
                            );
                        } else if !state.reorder.is_empty() {
                            activator.activate_after(state.idle / 4 + Duration::from_millis(1));
                        }
                    }
                },
            );
        let writer = CheckpointWriter {
            pool: connector.pool.clone(),
            producer: connector.producer.clone(),
            topic: connector.options.topic.clone(),
            table: connector.options.table.clone(),
            state_table: connector.options.state_table.clone(),
            group: connector.group.clone(),
            timeout: connector.write_timeout,
        };
        let options = SinkOptions {
            sink: "alarms".into(),
            batch: BatchPolicy {
                max_rows: 64,
                max_bytes: 16 << 20,
                max_delay: Duration::ZERO,
                linger: Duration::ZERO,
                max_in_flight: 4,
            },
            retry: connector.retry.clone(),
        };
        Ok(checkpoints.sink_batches(
            writer,
            options,
            env.runtime.clone(),
            env.metrics.sink("alarms", "alarm-checkpoint", env.worker),
            env.pressure.clone(),
            env.fatal.clone(),
        ))
    }
}

/// One worker's alarm state.
struct WorkerState {
    worker: usize,
    peers: usize,
    engine: Engine,
    reorder: Reorder,
    lateness: i64,
    idle: Duration,
    /// Newest event time (none before the first reading) and when it was heard (or the
    /// start), per source partition.
    newest: BTreeMap<i32, (Option<i64>, Instant)>,
    released: Option<i64>,
    /// Per device, per partition, the newest offset seen.
    floors: HashMap<String, BTreeMap<i32, i64>>,
    floors_changed: HashSet<String>,
    /// Per input time with readings still held, the latest event time held from it.
    epoch_max: BTreeMap<u64, i64>,
    /// Readings held that came from the stored state (no replay brings them again).
    restored_held: BTreeSet<(i64, String, Decimal)>,
    /// The earliest input time whose effects are not in an emitted checkpoint.
    dirty_since: Option<u64>,
    events: Vec<Event>,
    /// Draining: checkpoints store the lateness buffer, which then holds nothing back.
    drained: bool,
    /// The table's rule set in effect, if one was applied.
    in_effect: Option<InEffect>,
    /// Rule sets to apply when the watermark passes their time, by that time.
    pending: BTreeMap<i64, RuleSet>,
    connector: AlarmsConnector,
    metrics_held: prometheus::IntGauge,
    late: prometheus::IntCounter,
    replayed: prometheus::IntCounter,
    late_log: RateLimitedLog,
}

impl WorkerState {
    fn restore(c: &AlarmsConnector, worker: usize, peers: usize) -> Result<WorkerState, String> {
        let mine = c
            .stored
            .devices
            .iter()
            .filter(|(id, _)| worker_of(id, peers) == worker);
        let mut snapshots = Vec::new();
        let mut floors = HashMap::new();
        for (id, stored) in mine {
            let (snapshot, f) = stored
                .clone()
                .into_snapshot(id)
                .map_err(|e| e.to_string())?;
            floors.insert(id.clone(), f.into_iter().collect());
            snapshots.push(snapshot);
        }
        let clock = c.clock_for(worker, peers);
        let in_effect: Option<InEffect> = clock
            .rules
            .as_deref()
            .map(|r| {
                serde_json::from_str(r).map_err(|e| {
                    format!(
                        "{}: the stored rule set is not readable: {e}",
                        c.options.state_table
                    )
                })
            })
            .transpose()?;
        let rules = match &in_effect {
            Some(e) => c
                .options
                .rules_with(&e.set)
                .map_err(|e| format!("the stored rule set: {e}"))?,
            None => c.rules.clone(),
        };
        let engine = Engine::restore(rules, snapshots).map_err(|e| e.to_string())?;
        c.board
            .lock()
            .expect("alarm board")
            .rules_in_effect(engine.rules());
        let now = Instant::now();
        let mut restored_held = BTreeSet::new();
        let mut held = Vec::new();
        for s in clock.held {
            let s = s.into_sample().map_err(|e| e.to_string())?;
            if worker_of(&s.pboxid, peers) == worker {
                restored_held.insert((s.at_ms, s.pboxid.clone(), s.metric));
                held.push(s);
            }
        }
        let lateness = c.options.lateness_ms.min(i64::MAX as u64) as i64;
        let reorder = Reorder::restore(lateness, None, clock.released, held);
        for (rule, pboxid) in engine.active() {
            c.metrics.restored_active(&rule.id, rule.severity.as_str());
            if let Some(d) = engine.device(pboxid) {
                let first = d
                    .states
                    .iter()
                    .find_map(|(id, s)| match s {
                        iotflow_alarms::State::Active { first, .. } if *id == rule.id => {
                            Some(*first)
                        }
                        _ => None,
                    })
                    .unwrap_or(d.last.at_ms);
                let event = Event::new(
                    rule,
                    pboxid,
                    iotflow_alarms::EventKind::Raised,
                    first,
                    d.last.metric,
                    first,
                    d.last.at_ms,
                );
                c.board
                    .lock()
                    .expect("alarm board")
                    .restored(&rule.id, pboxid, event);
            }
        }
        if !c.stored.devices.is_empty() {
            tracing::info!(
                worker,
                devices = engine.devices(),
                released = ?clock.released,
                newest = ?clock.newest,
                held = reorder.len(),
                "alarm state restored"
            );
        }
        Ok(WorkerState {
            worker,
            peers,
            engine,
            reorder,
            lateness,
            idle: Duration::from_millis(c.options.idle_partition_ms),
            // Every partition starts unheard, as at a first start: the replay of each begins at
            // its committed offset, so the stored newest times are ahead of what it brings. The
            // watermark restarts from `released` and moves on only as the replay catches up.
            newest: c.partitions.iter().map(|p| (*p, (None, now))).collect(),
            released: clock.released,
            floors,
            floors_changed: HashSet::new(),
            epoch_max: BTreeMap::new(),
            restored_held,
            dirty_since: None,
            events: Vec::new(),
            drained: false,
            in_effect,
            pending: BTreeMap::new(),
            connector: c.clone(),
            metrics_held: c.metrics.held(worker),
            late: c.metrics.late(worker),
            replayed: c.metrics.replayed(worker),
            late_log: RateLimitedLog::new(Duration::from_secs(10)),
        })
    }

    fn dirty(&mut self, t: u64) {
        self.dirty_since = Some(self.dirty_since.map_or(t, |d| d.min(t)));
    }

    /// Takes the readings of input time `t`.
    fn take(&mut self, t: u64, points: Vec<Point>, now: Instant) {
        if points.is_empty() {
            return;
        }
        self.dirty(t);
        for (s, partition, offset) in points {
            let floor = self
                .floors
                .get(&s.pboxid)
                .and_then(|f| f.get(&partition))
                .copied();
            let seen = floor.is_some_and(|f| offset <= f);
            if !seen {
                let floors = self.floors.entry(s.pboxid.clone()).or_default();
                floors.insert(partition, offset);
                if !self.floors_changed.contains(&s.pboxid) {
                    self.floors_changed.insert(s.pboxid.clone());
                }
            }
            tracing::trace!(target: "iotflow_alarms_flow::reading", worker = self.worker, t, pboxid = %s.pboxid, at = s.at_ms, metric = %s.metric, partition, offset, seen, released = ?self.released, "take");
            if let Some(released) = self.released.filter(|r| s.at_ms <= *r) {
                if seen {
                    self.replayed.inc();
                } else {
                    self.late(&s, released, partition, offset);
                }
                continue;
            }
            let entry = self.newest.entry(partition).or_insert((None, now));
            entry.0 = Some(entry.0.map_or(s.at_ms, |t| t.max(s.at_ms)));
            entry.1 = now;
            let at = s.at_ms;
            match self.reorder.push(s.clone()) {
                Pushed::Held => {
                    let m = self.epoch_max.entry(t).or_insert(at);
                    *m = (*m).max(at);
                }
                Pushed::Duplicate => {}
                Pushed::Late => self.late(&s, self.released.unwrap_or(i64::MIN), partition, offset),
            }
        }
    }

    fn late(&mut self, s: &Sample, released: i64, partition: i32, offset: i64) {
        self.late.inc();
        if let Some(suppressed) = self.late_log.admit() {
            tracing::warn!(
                worker = self.worker,
                pboxid = %s.pboxid,
                event_time = %crate::board::time_text(s.at_ms),
                released_through = %crate::board::time_text(released),
                partition,
                offset,
                suppressed,
                "late reading for alarms (behind alarms.lateness_ms): counted, not applied"
            );
        }
        self.connector
            .board
            .lock()
            .expect("alarm board")
            .late(LateReading {
                pboxid: s.pboxid.clone(),
                at_ms: s.at_ms,
                released_ms: released,
                partition,
                offset,
            });
    }

    /// The watermark now: the least newest event time over the partitions heard from within
    /// the idle time (over all when none was), minus the bound. A partition not heard from
    /// yet holds it, until it has been quiet for the idle time since the start.
    fn watermark(&self, now: Instant) -> Option<i64> {
        let mut live = self
            .newest
            .values()
            .filter(|(_, heard)| now.duration_since(*heard) < self.idle)
            .map(|(t, _)| *t)
            .peekable();
        let base = if live.peek().is_some() {
            // `None` (a partition yet to speak) is the least: it holds everything.
            live.min().flatten()?
        } else {
            self.newest.values().filter_map(|(t, _)| *t).max()?
        };
        Some(base.saturating_sub(self.lateness))
    }

    /// Releases what the watermark has passed into the engine and fires offline timers.
    fn release(&mut self, now: Instant, cap: Option<u64>) {
        let Some(w) = self.watermark(now) else {
            return;
        };
        if self.released.is_some_and(|r| w <= r) {
            return;
        }
        self.released = Some(w);
        if let Some(t) = cap {
            self.dirty(t);
        }
        let before = self.events.len();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > w {
                break;
            }
            let (at, set) = entry.remove_entry();
            self.apply_through(at.saturating_sub(1));
            self.change_rules(at, set);
        }
        self.apply_through(w);
        while let Some((_, max)) = self.epoch_max.first_key_value() {
            if *max > w {
                break;
            }
            self.epoch_max.pop_first();
        }
        let new = &self.events[before..];
        if !new.is_empty() {
            for e in new {
                self.connector.metrics.event(e);
            }
            self.connector
                .board
                .lock()
                .expect("alarm board")
                .events(new);
        }
    }

    /// A rule set from the topic: scheduled at its time, or (the watermark passed that) at the
    /// first time after the watermark, unless it is one already applied.
    fn schedule(&mut self, set: RuleSet) {
        if let Some(e) = &self.in_effect {
            if (set.effective_ms, set.version) <= (e.set.effective_ms, e.set.version)
                || set.rules == e.set.rules
            {
                return;
            }
        }
        let mut at = set.effective_ms;
        if let Some(released) = self.released.filter(|r| at <= *r) {
            if self.pending.is_empty() {
                tracing::warn!(
                    worker = self.worker,
                    version = set.version,
                    effective = %crate::board::time_text(set.effective_ms),
                    released_through = %crate::board::time_text(released),
                    "alarm rule set came after event time passed its effective time: applied from the watermark on"
                );
            }
            at = released.saturating_add(1);
        }
        self.pending.insert(at, set);
    }

    /// Replaces the rules from `at` on (every reading before it applied).
    fn change_rules(&mut self, at: i64, set: RuleSet) {
        let rules = match self.connector.options.rules_with(&set) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(
                    worker = self.worker,
                    version = set.version,
                    "alarm rule set refused, the rules in effect stay: {e}"
                );
                return;
            }
        };
        match self.engine.change_rules(rules, at, &mut self.events) {
            Ok(()) => {
                if self.worker == 0 {
                    tracing::info!(version = set.version, rules = self.engine.rules().len(), from = %crate::board::time_text(at), "alarm rules changed");
                }
                self.connector
                    .board
                    .lock()
                    .expect("alarm board")
                    .rules_in_effect(self.engine.rules());
                self.in_effect = Some(InEffect {
                    set,
                    applied_at: at,
                });
            }
            Err(e) => tracing::error!(
                worker = self.worker,
                "alarm rule set refused, the rules in effect stay: {e}"
            ),
        }
    }

    /// Applies the buffered readings through `w` and fires the offline alarms due by then.
    fn apply_through(&mut self, w: i64) {
        for s in self.reorder.release(w) {
            // Only after a change of the cluster's shape can a reading older than the
            // device's latest applied one come here: it was applied (or late) before.
            if let Some(last) = self
                .engine
                .last_at(&s.pboxid)
                .filter(|last| s.at_ms < *last)
            {
                tracing::debug!(worker = self.worker, pboxid = %s.pboxid, at = s.at_ms, last, "released reading older than the device's latest: skipped");
                self.replayed.inc();
                continue;
            }
            tracing::trace!(target: "iotflow_alarms_flow::reading", worker = self.worker, pboxid = %s.pboxid, at = s.at_ms, metric = %s.metric, w, "apply");
            self.engine.observe(&s, &mut self.events);
        }
        self.engine.advance(w, &mut self.events);
    }

    /// The checkpoint of everything since the previous one; once draining it also stores the
    /// readings still held.
    fn checkpoint(&mut self) -> Checkpoint {
        let done = self.drained;
        let mut changed: BTreeMap<String, iotflow_alarms::DeviceSnapshot> = self
            .engine
            .take_changed()
            .into_iter()
            .map(|d| (d.last.pboxid.clone(), d))
            .collect();
        for id in self.floors_changed.drain() {
            if let std::collections::btree_map::Entry::Vacant(slot) = changed.entry(id) {
                if let Some(d) = self.engine.device(slot.key()) {
                    slot.insert(d);
                }
            }
        }
        let devices: Vec<(String, String)> = changed
            .into_iter()
            .map(|(id, d)| {
                let floors = self
                    .floors
                    .get(&id)
                    .map(|f| f.iter().map(|(p, o)| (*p, *o)).collect())
                    .unwrap_or_default();
                let json = serde_json::to_string(&StoredDevice::from_snapshot(&d, floors))
                    .expect("stored device serializes");
                (id, json)
            })
            .collect();
        let (_, _, held) = self.reorder.snapshot();
        let held: Vec<StoredSample> = held
            .iter()
            .filter(|s| {
                done || self
                    .restored_held
                    .contains(&(s.at_ms, s.pboxid.clone(), s.metric))
            })
            .map(StoredSample::from_sample)
            .collect();
        let clock = StoredClock {
            released: self.released,
            newest: self
                .newest
                .iter()
                .filter_map(|(p, (t, _))| t.map(|t| (*p, t)))
                .collect(),
            held,
            rules: self
                .in_effect
                .as_ref()
                .map(|e| serde_json::to_string(e).expect("rule set serializes")),
        };
        tracing::debug!(
            worker = self.worker,
            since = ?self.dirty_since,
            released = ?self.released,
            events = self.events.len(),
            devices = devices.len(),
            held = clock.held.len(),
            "alarm checkpoint"
        );
        self.dirty_since = None;
        Checkpoint {
            events: std::mem::take(&mut self.events),
            devices,
            clock: (
                format!("{}/{}", self.worker, self.peers),
                serde_json::to_string(&clock).expect("clock serializes"),
            ),
        }
    }
}
