//! The engine behind a lateness buffer, fed seeded random histories in shuffled arrival orders,
//! against the direct definitions (`reference`): rules of every kind, ties in time and value,
//! repeated readings, device records that change, and disorder inside the lateness bound.

use std::collections::VecDeque;

use iotflow_alarms::reference::{reference, reference_with_changes};
use iotflow_alarms::{Condition, Engine, Event, Pushed, Reorder, Rule, Sample, Scope, Severity};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

fn d(v: i64) -> Decimal {
    Decimal::from(v)
}

fn rule(id: &str, scope: Scope, condition: Condition, duration_ms: i64, hysteresis: i64) -> Rule {
    Rule {
        id: id.into(),
        scope,
        condition,
        duration_ms,
        hysteresis: d(hysteresis),
        severity: Severity::Warning,
        device_threshold: false,
    }
}

fn random_rules(rng: &mut SmallRng) -> Vec<Rule> {
    let mut rules = Vec::new();
    for i in 0..rng.random_range(1..6) {
        let scope = match rng.random_range(0..4) {
            0 => Scope::All,
            1 => Scope::Device(format!("dev-{}", rng.random_range(0..4))),
            2 => Scope::Model(format!("m{}", rng.random_range(0..2))),
            _ => Scope::Site(format!("s{}", rng.random_range(0..2))),
        };
        let condition = match rng.random_range(0..4) {
            0 => Condition::Above {
                value: d(rng.random_range(3..8)),
            },
            1 => Condition::Below {
                value: d(rng.random_range(2..7)),
            },
            2 => {
                let low = rng.random_range(1..4);
                Condition::Outside {
                    low: d(low),
                    high: d(low + rng.random_range(3..6)),
                }
            }
            _ => Condition::Offline {
                after_ms: rng.random_range(1..6) * 1000,
            },
        };
        let hysteresis = match condition {
            Condition::Outside { .. } => rng.random_range(0..2),
            _ => rng.random_range(0..3),
        };
        let mut r = rule(
            &format!("r{i}"),
            scope,
            condition,
            rng.random_range(0..4) * 1000,
            hysteresis,
        );
        r.device_threshold = rng.random_bool(0.3);
        rules.push(r);
    }
    rules
}

/// A history of a few devices on a coarse grid of times and values (ties on purpose), with
/// gaps (for offline) and records that change once (model, site, threshold).
fn random_history(rng: &mut SmallRng) -> Vec<Sample> {
    let mut samples = Vec::new();
    for dev in 0..4 {
        let mut t = rng.random_range(0..3) * 500;
        let change_at = rng.random_range(0..40) * 500;
        for _ in 0..rng.random_range(0..40) {
            t += match rng.random_range(0..10) {
                0 => 0,
                1 => 7000,
                _ => 500 * rng.random_range(1..3),
            };
            let changed = t >= change_at;
            let s = Sample {
                pboxid: format!("dev-{dev}"),
                at_ms: t,
                metric: d(rng.random_range(0..10)),
                model: Some(format!("m{}", (dev + changed as i32) % 2)),
                site: (dev != 3).then(|| format!("s{}", dev % 2)),
                threshold: (dev % 2 == 0).then(|| d(4 + changed as i64)),
                lat: Decimal::ZERO,
                lon: Decimal::ZERO,
            };
            if rng.random_bool(0.1) {
                samples.push(s.clone());
            }
            samples.push(s);
        }
    }
    samples
}

/// Runs `samples` in arrival order through a [`Reorder`] of `lateness` into an engine,
/// releasing after every reading; then completes event time through `end`. Returns the
/// sorted events and the late readings.
fn run(rules: &[Rule], arrivals: &[Sample], lateness: i64, end: i64) -> (Vec<Event>, Vec<Sample>) {
    run_restarting(rules, &[], arrivals, lateness, end, None)
}

/// Releases through `w`, changing the rules at each pending change the watermark passes:
/// first the readings before the change, then the change, then the rest.
fn release(
    engine: &mut Engine,
    order: &mut Reorder,
    pending: &mut VecDeque<(i64, Vec<Rule>)>,
    w: i64,
    events: &mut Vec<Event>,
) {
    while pending.front().is_some_and(|(at, _)| *at <= w) {
        let (at, rules) = pending.pop_front().expect("a pending change");
        for s in order.release(at - 1) {
            engine.observe(&s, events);
        }
        engine.change_rules(rules, at, events).unwrap();
    }
    for s in order.release(w) {
        engine.observe(&s, events);
    }
    engine.advance(w, events);
}

/// [`run`], but with the engine and the buffer stopped after `restart_after` arrivals and
/// continued from their snapshots (the rules handed over in reverse order: states follow the
/// rule ids, not positions).
fn run_restarting(
    rules: &[Rule],
    changes: &[(i64, Vec<Rule>)],
    arrivals: &[Sample],
    lateness: i64,
    end: i64,
    restart_after: Option<usize>,
) -> (Vec<Event>, Vec<Sample>) {
    let mut engine = Engine::new(rules.to_vec()).unwrap();
    let mut pending: VecDeque<(i64, Vec<Rule>)> = changes.iter().cloned().collect();
    let mut order = Reorder::new(lateness);
    let mut events = Vec::new();
    let mut late = Vec::new();
    for (k, s) in arrivals.iter().enumerate() {
        if Some(k) == restart_after {
            let devices = engine.snapshot();
            let (newest, released, held) = order.snapshot();
            let mut reversed = engine.rules().to_vec();
            reversed.reverse();
            engine = Engine::restore(reversed, devices).unwrap();
            order = Reorder::restore(lateness, newest, released, held);
        }
        if order.push(s.clone()) == Pushed::Late {
            late.push(s.clone());
        }
        if let Some(w) = order.watermark() {
            release(&mut engine, &mut order, &mut pending, w, &mut events);
        }
    }
    release(&mut engine, &mut order, &mut pending, end, &mut events);
    events.sort();
    (events, late)
}

/// `history` in an arrival order inside the bound: each reading arrives at its time plus a
/// random delay below `lateness`, so when it arrives nothing newer than its time + lateness
/// has been seen.
fn arrivals_within(rng: &mut SmallRng, history: &[Sample], lateness: i64) -> Vec<Sample> {
    let mut arrivals: Vec<(i64, usize)> = history
        .iter()
        .enumerate()
        .map(|(i, s)| (s.at_ms + rng.random_range(0..lateness), i))
        .collect();
    arrivals.sort();
    arrivals
        .into_iter()
        .map(|(_, i)| history[i].clone())
        .collect()
}

#[test]
fn any_arrival_order_inside_the_bound_gives_the_reference_history() {
    let lateness = 3000;
    for seed in 0..400 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let rules = random_rules(&mut rng);
        let history = random_history(&mut rng);
        let end = history.iter().map(|s| s.at_ms).max().unwrap_or(0) + rng.random_range(0..8000);
        let want = reference(&rules, &history, end);
        for _ in 0..3 {
            let arrivals = arrivals_within(&mut rng, &history, lateness);
            let (got, late) = run(&rules, &arrivals, lateness, end);
            assert!(
                late.is_empty(),
                "seed {seed}: {} late inside the bound",
                late.len()
            );
            assert_eq!(got, want, "seed {seed}, rules {rules:#?}");
            // Stopped anywhere and continued from the snapshots: the same history.
            let k = rng.random_range(0..arrivals.len().max(1));
            let (restarted, _) = run_restarting(&rules, &[], &arrivals, lateness, end, Some(k));
            assert_eq!(restarted, want, "seed {seed}, restarted after {k} readings");
        }
    }
}

#[test]
fn a_reading_delivered_twice_changes_nothing() {
    // What an at-least-once producer upstream can do (docs/mqtt.md): the same reading (device,
    // time, value) arrives again, shortly after or inside the bound. The alarm history is
    // the one of the readings without their copies.
    let lateness = 3000;
    for seed in 0..200 {
        let mut rng = SmallRng::seed_from_u64(9000 + seed);
        let rules = random_rules(&mut rng);
        let history = random_history(&mut rng);
        let end = history.iter().map(|s| s.at_ms).max().unwrap_or(0) + rng.random_range(0..8000);
        let want = reference(&rules, &history, end);
        let mut doubled = history.clone();
        for s in &history {
            if rng.random_range(0..3) == 0 {
                doubled.push(s.clone());
            }
        }
        let arrivals = arrivals_within(&mut rng, &doubled, lateness);
        let (got, late) = run(&rules, &arrivals, lateness, end);
        assert!(late.is_empty(), "seed {seed}: late inside the bound");
        assert_eq!(got, want, "seed {seed}, rules {rules:#?}");
    }
}

/// The next version of a rule set: a rule removed, one added, one changed in bound, scope,
/// duration or kind (the same id), or several of these.
fn changed_rules(rng: &mut SmallRng, rules: &[Rule], generation: usize) -> Vec<Rule> {
    let mut next = rules.to_vec();
    let fresh = random_rules(rng);
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..3) {
            0 if !next.is_empty() => {
                next.remove(rng.random_range(0..next.len()));
            }
            1 => {
                let mut r = fresh[rng.random_range(0..fresh.len())].clone();
                r.id = format!("g{generation}-{}", next.len());
                if !next.iter().any(|n| n.id == r.id) {
                    next.push(r);
                }
            }
            _ if !next.is_empty() => {
                // Same id, another version: possibly another kind.
                let k = rng.random_range(0..next.len());
                let mut r = fresh[rng.random_range(0..fresh.len())].clone();
                r.id = next[k].id.clone();
                next[k] = r;
            }
            _ => {}
        }
    }
    next
}

#[test]
fn rule_changes_take_effect_at_their_event_time_whatever_the_arrival_order() {
    let lateness = 3000;
    let mut changed_kinds = 0;
    for seed in 0..400 {
        let mut rng = SmallRng::seed_from_u64(5000 + seed);
        let rules = random_rules(&mut rng);
        let history = random_history(&mut rng);
        let last = history.iter().map(|s| s.at_ms).max().unwrap_or(0);
        let end = last + rng.random_range(0..8000);
        // One to three changes, at times on the readings' grid (ties with readings on
        // purpose) or between.
        let mut changes: Vec<(i64, Vec<Rule>)> = Vec::new();
        let mut current = rules.clone();
        let mut times: Vec<i64> = (0..rng.random_range(1..4))
            .map(|_| rng.random_range(0..(end / 250).max(1) + 4) * 250)
            .collect();
        times.sort();
        for (g, at) in times.into_iter().enumerate() {
            let next = changed_rules(&mut rng, &current, g);
            changed_kinds += next
                .iter()
                .filter(|n| {
                    current.iter().any(|c| {
                        c.id == n.id && c.offline_after().is_some() != n.offline_after().is_some()
                    })
                })
                .count();
            changes.push((at, next.clone()));
            current = next;
        }
        let want = reference_with_changes(&rules, &changes, &history, end);
        for _ in 0..2 {
            let arrivals = arrivals_within(&mut rng, &history, lateness);
            let (got, late) = run_restarting(&rules, &changes, &arrivals, lateness, end, None);
            assert!(late.is_empty(), "seed {seed}: late inside the bound");
            assert_eq!(
                got, want,
                "seed {seed}, rules {rules:#?}, changes {changes:#?}"
            );
            let k = rng.random_range(0..arrivals.len().max(1));
            let (restarted, _) =
                run_restarting(&rules, &changes, &arrivals, lateness, end, Some(k));
            assert_eq!(restarted, want, "seed {seed}, restarted after {k} readings");
        }
    }
    assert!(
        changed_kinds > 20,
        "changes of kind were tried: {changed_kinds}"
    );
}

#[test]
fn a_removed_rule_clears_at_its_removal_and_a_new_offline_rule_raises_from_it() {
    let hot = rule("hot", Scope::All, Condition::Above { value: d(50) }, 0, 0);
    let gone = rule(
        "gone",
        Scope::All,
        Condition::Offline { after_ms: 5_000 },
        0,
        0,
    );
    let s = |t: i64, m: i64| Sample {
        pboxid: "p".into(),
        at_ms: t,
        metric: d(m),
        model: None,
        site: None,
        threshold: None,
        lat: Decimal::ZERO,
        lon: Decimal::ZERO,
    };
    let mut engine = Engine::new(vec![hot]).unwrap();
    let mut out = Vec::new();
    engine.observe(&s(0, 60), &mut out);
    engine.observe(&s(1000, 70), &mut out);
    // At 20 s "hot" goes and "gone" comes: the open episode ends at 20 s with the latest
    // value; the device, silent since 1 s, is offline from 20 s (not from 6 s: the rule
    // did not exist then).
    engine.change_rules(vec![gone], 20_000, &mut out).unwrap();
    engine.advance(20_000, &mut out);
    let got: Vec<_> = out
        .iter()
        .map(|e| {
            (
                e.rule.as_str(),
                e.kind,
                e.at_ms,
                e.value,
                e.first_ms,
                e.last_ms,
            )
        })
        .collect();
    use iotflow_alarms::EventKind::*;
    assert_eq!(
        got,
        vec![
            ("hot", Raised, 0, d(60), 0, 0),
            ("hot", Cleared, 20_000, d(70), 0, 1000),
            ("gone", Raised, 20_000, d(70), 1000, 1000),
        ]
    );
    let bad = rule("b", Scope::All, Condition::Above { value: d(1) }, -1, 0);
    assert!(engine.change_rules(vec![bad], 30_000, &mut out).is_err());
    assert_eq!(
        engine.rules()[0].id,
        "gone",
        "a refused change changes nothing"
    );
}

#[test]
fn readings_beyond_the_bound_are_reported_and_change_nothing() {
    let lateness = 1000;
    for seed in 0..200 {
        let mut rng = SmallRng::seed_from_u64(1000 + seed);
        let rules = random_rules(&mut rng);
        let history = random_history(&mut rng);
        let end = history.iter().map(|s| s.at_ms).max().unwrap_or(0);
        // Arbitrary disorder, well past the bound.
        let mut arrivals = history.clone();
        for i in (1..arrivals.len()).rev() {
            let j = rng.random_range(0..=i);
            arrivals.swap(i, j);
        }
        let k = rng.random_range(0..arrivals.len().max(1));
        let (got, late) = run_restarting(&rules, &[], &arrivals, lateness, end, Some(k));
        // What was applied is exactly the history without the late readings (a late reading
        // whose twin was applied in time takes nothing away).
        let applied: Vec<Sample> = {
            let mut rest = arrivals.clone();
            for l in &late {
                let k = rest.iter().position(|s| s == l).unwrap();
                rest.remove(k);
            }
            rest
        };
        assert_eq!(got, reference(&rules, &applied, end), "seed {seed}");
    }
}

#[test]
fn a_rule_raises_after_its_duration_and_clears_past_its_hysteresis() {
    let r = rule(
        "hot",
        Scope::All,
        Condition::Above { value: d(50) },
        2000,
        5,
    );
    let s = |t: i64, m: i64| Sample {
        pboxid: "p".into(),
        at_ms: t,
        metric: d(m),
        model: None,
        site: None,
        threshold: None,
        lat: Decimal::ZERO,
        lon: Decimal::ZERO,
    };
    let mut engine = Engine::new(vec![r]).unwrap();
    let mut out = Vec::new();
    for (t, m) in [
        (0, 60),
        (1000, 49),
        (2000, 70),
        (3000, 71),
        (4000, 72),
        (5000, 47),
        (6000, 45),
    ] {
        engine.observe(&s(t, m), &mut out);
    }
    let got: Vec<_> = out
        .iter()
        .map(|e| (e.kind, e.at_ms, e.first_ms, e.last_ms))
        .collect();
    use iotflow_alarms::EventKind::*;
    // 60 at 0 starts a run that 49 breaks; 70..72 hold from 2000 to 4000 (2 s): raised at
    // 4000. 47 is inside the hysteresis (> 50 - 5): still active; 45 clears.
    assert_eq!(
        got,
        vec![(Raised, 4000, 2000, 4000), (Cleared, 6000, 2000, 5000)]
    );
    assert_eq!(engine.active().count(), 0);
}

#[test]
fn offline_is_raised_by_the_watermark_and_cleared_by_the_next_reading() {
    let r = rule(
        "gone",
        Scope::All,
        Condition::Offline { after_ms: 10_000 },
        0,
        0,
    );
    let s = |id: &str, t: i64| Sample {
        pboxid: id.into(),
        at_ms: t,
        metric: d(1),
        model: None,
        site: None,
        threshold: None,
        lat: Decimal::ZERO,
        lon: Decimal::ZERO,
    };
    let mut engine = Engine::new(vec![r]).unwrap();
    let mut out = Vec::new();
    engine.observe(&s("a", 0), &mut out);
    engine.advance(9_999, &mut out);
    assert!(out.is_empty());
    engine.advance(10_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].kind, out[0].at_ms),
        (iotflow_alarms::EventKind::Raised, 10_000)
    );
    assert_eq!(engine.active().count(), 1);
    engine.observe(&s("a", 15_000), &mut out);
    assert_eq!(
        (out[1].kind, out[1].at_ms),
        (iotflow_alarms::EventKind::Cleared, 15_000)
    );
    assert_eq!(
        engine.active().count(),
        0,
        "a device that never reported is not offline"
    );
}

#[test]
fn rules_that_cannot_work_are_refused_with_the_reason() {
    let band = rule(
        "b",
        Scope::All,
        Condition::Outside {
            low: d(10),
            high: d(12),
        },
        0,
        2,
    );
    let e = Engine::new(vec![band]).unwrap_err();
    assert!(
        e.to_string()
            .contains("alarm rule `b`: hysteresis 2 leaves no value"),
        "{e}"
    );
    let twice = rule("x", Scope::All, Condition::Above { value: d(1) }, 0, 0);
    let e = Engine::new(vec![twice.clone(), twice]).unwrap_err();
    assert!(e.to_string().contains("same id"), "{e}");
    let neg = rule("n", Scope::All, Condition::Above { value: d(1) }, -1, 0);
    assert!(Engine::new(vec![neg]).is_err());
    let off = rule("o", Scope::All, Condition::Offline { after_ms: 0 }, 0, 0);
    assert!(Engine::new(vec![off]).is_err());
}
