//! The alarm definitions of `docs/alarms.md`, written directly over a whole history: the
//! oracle the engine is tested against. Quadratic; for tests only.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::{Event, EventKind, Rule, Sample};

/// The events `rules` give over `samples` with event time complete through `watermark`.
/// Readings of one device with the same time and metric are one reading (the first given);
/// each device's readings are taken in (time, metric) order. Events come sorted.
pub fn reference(rules: &[Rule], samples: &[Sample], watermark: i64) -> Vec<Event> {
    let mut devices: BTreeMap<&str, BTreeMap<(i64, Decimal), &Sample>> = BTreeMap::new();
    for s in samples {
        devices
            .entry(s.pboxid.as_str())
            .or_default()
            .entry((s.at_ms, s.metric))
            .or_insert(s);
    }
    let mut events = Vec::new();
    for (pboxid, readings) in &devices {
        let seq: Vec<&Sample> = readings.values().copied().collect();
        for rule in rules {
            let event = |kind, at_ms, value, first_ms, last_ms| {
                Event::new(rule, pboxid, kind, at_ms, value, first_ms, last_ms)
            };
            if let Some(after) = rule.offline_after() {
                // Silences between consecutive readings, then after the last one.
                for pair in seq.windows(2) {
                    let (p, q) = (pair[0], pair[1]);
                    if rule.applies(p) && q.at_ms - p.at_ms >= after {
                        events.push(event(
                            EventKind::Raised,
                            p.at_ms + after,
                            p.metric,
                            p.at_ms,
                            p.at_ms,
                        ));
                        events.push(event(
                            EventKind::Cleared,
                            q.at_ms,
                            q.metric,
                            p.at_ms,
                            p.at_ms,
                        ));
                    }
                }
                if let Some(last) = seq.last() {
                    if rule.applies(last) && last.at_ms + after <= watermark {
                        events.push(event(
                            EventKind::Raised,
                            last.at_ms + after,
                            last.metric,
                            last.at_ms,
                            last.at_ms,
                        ));
                    }
                }
                continue;
            }
            let breach = |k: usize| rule.applies(seq[k]) && rule.breaches(seq[k]);
            // (first, last) of the open episode.
            let mut open: Option<(i64, i64)> = None;
            for k in 0..seq.len() {
                let s = seq[k];
                match open {
                    None if breach(k) => {
                        // The breaching run that ends here began at the earliest j with
                        // every reading j..=k breaching.
                        let mut j = k;
                        while j > 0 && breach(j - 1) {
                            j -= 1;
                        }
                        if s.at_ms - seq[j].at_ms >= rule.duration_ms {
                            events.push(event(
                                EventKind::Raised,
                                s.at_ms,
                                s.metric,
                                seq[j].at_ms,
                                s.at_ms,
                            ));
                            open = Some((seq[j].at_ms, s.at_ms));
                        }
                    }
                    None => {}
                    Some((first, last)) => {
                        if !rule.applies(s) || rule.clears(s) {
                            events.push(event(EventKind::Cleared, s.at_ms, s.metric, first, last));
                            open = None;
                        } else {
                            open = Some((first, s.at_ms));
                        }
                    }
                }
            }
        }
    }
    events.sort();
    events
}
