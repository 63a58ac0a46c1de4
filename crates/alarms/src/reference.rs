//! The alarm definitions of `docs/alarms.md`, written directly over a whole history: the
//! oracle the engine is tested against. Quadratic; for tests only.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::{Event, EventKind, Rule, Sample};

/// The events `rules` give over `samples` with event time complete through `watermark`.
/// Readings of one device with the same time and metric are one reading (the first given);
/// each device's readings are taken in (time, metric) order. Events come sorted.
pub fn reference(rules: &[Rule], samples: &[Sample], watermark: i64) -> Vec<Event> {
    reference_with_changes(rules, &[], samples, watermark)
}

/// [`reference`] with the rules replaced by `changes[k].1` from event time `changes[k].0` on
/// (times ascending; a change after `watermark` has not happened). A reading is judged by the
/// rule version in effect at its time. A rule that goes, or changes between offline and a
/// value condition, clears its open episode at the change (with the latest reading's value)
/// and breaks any breaching run there; a version that stays keeps the episode and the run.
/// An offline rule raises at the last reading plus its silence, or at the change that brings
/// the version, whichever is later, within the time that version is in effect.
pub fn reference_with_changes(
    rules: &[Rule],
    changes: &[(i64, Vec<Rule>)],
    samples: &[Sample],
    watermark: i64,
) -> Vec<Event> {
    let mut devices: BTreeMap<&str, BTreeMap<(i64, Decimal), &Sample>> = BTreeMap::new();
    for s in samples {
        devices
            .entry(s.pboxid.as_str())
            .or_default()
            .entry((s.at_ms, s.metric))
            .or_insert(s);
    }
    // The rule sets in time order, from the start.
    let mut sets: Vec<(i64, &[Rule])> = vec![(i64::MIN, rules)];
    sets.extend(
        changes
            .iter()
            .filter(|(at, _)| *at <= watermark)
            .map(|(at, r)| (*at, r.as_slice())),
    );
    let mut ids: Vec<&str> = sets
        .iter()
        .flat_map(|(_, r)| r.iter().map(|r| r.id.as_str()))
        .collect();
    ids.sort();
    ids.dedup();
    let mut events = Vec::new();
    for id in ids {
        let version = |c: usize| sets[c].1.iter().find(|r| r.id == id);
        let offline = |c: usize| version(c).is_some_and(|r| r.offline_after().is_some());
        let valued = |c: usize| version(c).is_some_and(|r| r.offline_after().is_none());
        // The set in effect at `t`: the last one from at or before it.
        let set_at = |t: i64| sets.iter().rposition(|(from, _)| *from <= t).unwrap_or(0);
        for (pboxid, readings) in &devices {
            let seq: Vec<&Sample> = readings.values().copied().collect();
            let event = |rule: &Rule, kind, at_ms, value, first_ms, last_ms| {
                Event::new(rule, pboxid, kind, at_ms, value, first_ms, last_ms)
            };
            // Offline: the silence after each reading, up to the next one (or the watermark).
            for k in 0..seq.len() {
                let p = seq[k];
                let q = seq.get(k + 1).copied();
                let bound = q.map_or(watermark, |q| q.at_ms);
                let mut c = set_at(p.at_ms);
                let mut raised: Option<&Rule> = None;
                loop {
                    let end = sets.get(c + 1).map_or(i64::MAX, |(from, _)| *from);
                    if raised.is_none() && offline(c) {
                        let rule = version(c).expect("an offline version");
                        let after = rule.offline_after().expect("offline");
                        let at = (p.at_ms + after).max(sets[c].0);
                        if rule.applies(p) && at < end && at <= bound {
                            events.push(event(
                                rule,
                                EventKind::Raised,
                                at,
                                p.metric,
                                p.at_ms,
                                p.at_ms,
                            ));
                            raised = Some(rule);
                        }
                    }
                    if end > bound {
                        break;
                    }
                    c += 1;
                    if let (Some(rule), false) = (raised, offline(c)) {
                        events.push(event(
                            rule,
                            EventKind::Cleared,
                            sets[c].0,
                            p.metric,
                            p.at_ms,
                            p.at_ms,
                        ));
                        raised = None;
                    }
                }
                if let (Some(rule), Some(q)) = (raised, q) {
                    let versioned = version(set_at(q.at_ms)).unwrap_or(rule);
                    events.push(event(
                        versioned,
                        EventKind::Cleared,
                        q.at_ms,
                        q.metric,
                        p.at_ms,
                        p.at_ms,
                    ));
                }
            }
            // Value conditions. A breaching run never reaches back past a change that
            // ended the rule's value condition (`barrier`: the first reading after it).
            let breach = |k: usize| {
                version(set_at(seq[k].at_ms)).is_some_and(|r| {
                    r.offline_after().is_none() && r.applies(seq[k]) && r.breaches(seq[k])
                })
            };
            let mut open: Option<(&Rule, i64, i64)> = None;
            let mut barrier = 0;
            let mut next = 1;
            let mut changes_until = |t: i64,
                                     k: usize,
                                     open: &mut Option<(&Rule, i64, i64)>,
                                     barrier: &mut usize,
                                     events: &mut Vec<Event>| {
                while next < sets.len() && sets[next].0 <= t {
                    if valued(next - 1) && !valued(next) {
                        if let Some((rule, first, last)) = open.take() {
                            let value = seq[k - 1].metric;
                            events.push(event(
                                rule,
                                EventKind::Cleared,
                                sets[next].0,
                                value,
                                first,
                                last,
                            ));
                        }
                        *barrier = k;
                    }
                    next += 1;
                }
            };
            for k in 0..seq.len() {
                let s = seq[k];
                changes_until(s.at_ms, k, &mut open, &mut barrier, &mut events);
                let Some(rule) = version(set_at(s.at_ms)).filter(|r| r.offline_after().is_none())
                else {
                    continue;
                };
                match open {
                    None if breach(k) => {
                        // The breaching run that ends here began at the earliest j with
                        // every reading j..=k breaching.
                        let mut j = k;
                        while j > barrier && breach(j - 1) {
                            j -= 1;
                        }
                        if s.at_ms - seq[j].at_ms >= rule.duration_ms {
                            events.push(event(
                                rule,
                                EventKind::Raised,
                                s.at_ms,
                                s.metric,
                                seq[j].at_ms,
                                s.at_ms,
                            ));
                            open = Some((rule, seq[j].at_ms, s.at_ms));
                        }
                    }
                    None => {}
                    Some((_, first, last)) => {
                        if !rule.applies(s) || rule.clears(s) {
                            events.push(event(
                                rule,
                                EventKind::Cleared,
                                s.at_ms,
                                s.metric,
                                first,
                                last,
                            ));
                            open = None;
                        } else {
                            open = Some((rule, first, s.at_ms));
                        }
                    }
                }
            }
            changes_until(i64::MAX, seq.len(), &mut open, &mut barrier, &mut events);
        }
    }
    events.sort();
    events
}
