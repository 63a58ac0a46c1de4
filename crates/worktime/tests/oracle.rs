//! The dataflow against the independent reference formulation, on seeded random readings of many
//! devices over several days, fed unordered and in two rounds (the second changes days the
//! first already produced results for), on 1 and 2 workers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use iotflow_worktime::{reference, worktime, DayResult, Point, Rules, DAY_MS};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};

type Key = (String, i64);

/// Output updates: (key, result, time, diff).
type Updates = Arc<Mutex<Vec<(Key, DayResult, u64, isize)>>>;

/// Readings of `devices` devices over 4 days: bursts above and below 50 with gaps of up to
/// 10 minutes, duplicates and equal timestamps included; thresholds for every third device.
fn data(seed: u64, devices: usize) -> (Vec<(String, Point)>, BTreeMap<String, i128>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut readings = Vec::new();
    let mut thresholds = BTreeMap::new();
    let start = 20_188 * DAY_MS;
    for d in 0..devices {
        let id = format!("dev-{d}");
        if d % 3 == 0 {
            thresholds.insert(
                id.clone(),
                i128::from(rng.random_range(30..70)) * 100_000_000,
            );
        }
        let mut t = start + rng.random_range(0..DAY_MS / 2);
        while t < start + 4 * DAY_MS {
            // Every fifth device never exceeds 50 (with the default threshold: no segment).
            let top = if d % 5 == 4 { 50 } else { 100 };
            let metric = i128::from(rng.random_range(0..top)) * 100_000_000
                + i128::from(rng.random_range(0..3)) * 50_000_000;
            readings.push((id.clone(), (t, metric)));
            if rng.random_bool(0.02) {
                readings.push((id.clone(), (t, metric))); // a duplicate
            }
            t += match rng.random_range(0..100) {
                0..=3 => 0,                                    // equal time
                4..=89 => rng.random_range(1_000..120_000),    // normal cadence
                90..=97 => rng.random_range(200_000..400_000), // around max_gap
                _ => rng.random_range(600_000..3_600_000),     // long gap
            };
        }
    }
    // Unordered.
    for i in (1..readings.len()).rev() {
        let j = rng.random_range(0..=i);
        readings.swap(i, j);
    }
    (readings, thresholds)
}

fn expected(
    readings: &[(String, Point)],
    thresholds: &BTreeMap<String, i128>,
    rules: Rules,
) -> BTreeMap<Key, DayResult> {
    let mut by_key: BTreeMap<Key, Vec<Point>> = BTreeMap::new();
    for (d, p) in readings {
        by_key
            .entry((d.clone(), p.0.div_euclid(DAY_MS)))
            .or_default()
            .push(*p);
    }
    by_key
        .into_iter()
        .map(|(k, points)| {
            let threshold = thresholds
                .get(&k.0)
                .copied()
                .unwrap_or(rules.default_threshold);
            let r = reference(&points, threshold, rules.max_gap_ms);
            (k, r)
        })
        .collect()
}

/// Runs the dataflow on `workers` threads: round 1 gets the first half of the readings, round 2
/// the rest. Returns the consolidated output after each round.
fn run(
    workers: usize,
    readings: Vec<(String, Point)>,
    thresholds: BTreeMap<String, i128>,
    rules: Rules,
) -> (BTreeMap<Key, DayResult>, BTreeMap<Key, DayResult>) {
    let out: Updates = Arc::default();
    let sink = out.clone();
    let readings = Arc::new(readings);
    let thresholds = Arc::new(thresholds);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let sink = sink.clone();
        let probe = ProbeHandle::new();
        let (mut rin, mut tin) = worker.dataflow::<u64, _, _>(|scope| {
            let (rin, r) = scope.new_collection::<(String, Point), isize>();
            let (tin, t) = scope.new_collection::<(String, i128), isize>();
            worktime(r, t, rules)
                .inner
                .inspect(move |(data, time, diff)| {
                    sink.lock()
                        .unwrap()
                        .push((data.0.clone(), data.1, *time, *diff));
                })
                .probe_with(&probe);
            (rin, tin)
        });
        // Each worker feeds its share.
        for (i, (d, t)) in thresholds.iter().enumerate() {
            if i % peers == index {
                tin.insert((d.clone(), *t));
            }
        }
        let half = readings.len() / 2;
        for (i, r) in readings[..half].iter().enumerate() {
            if i % peers == index {
                rin.insert(r.clone());
            }
        }
        rin.advance_to(1);
        tin.advance_to(1);
        rin.flush();
        tin.flush();
        while probe.less_than(&1) {
            worker.step();
        }
        for (i, r) in readings[half..].iter().enumerate() {
            if i % peers == index {
                rin.insert(r.clone());
            }
        }
        rin.close();
        tin.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let updates = out.lock().unwrap().clone();
    let at = |limit: u64| {
        let mut acc: BTreeMap<(Key, DayResult), isize> = BTreeMap::new();
        for (k, r, t, d) in &updates {
            if *t <= limit {
                *acc.entry((k.clone(), *r)).or_default() += d;
            }
        }
        let mut result = BTreeMap::new();
        for ((k, r), d) in acc {
            assert!(d == 0 || d == 1, "{k:?} {r:?} has multiplicity {d}");
            if d == 1 {
                assert!(
                    result.insert(k.clone(), r).is_none(),
                    "two results for {k:?}"
                );
            }
        }
        result
    };
    (at(0), at(1))
}

#[test]
fn the_dataflow_agrees_with_the_reference_on_one_and_two_workers() {
    let rules = Rules::default();
    for (seed, workers) in [(1, 1), (2, 2), (3, 2)] {
        let (readings, thresholds) = data(seed, 60);
        let half = readings.len() / 2;
        let want_first = expected(&readings[..half], &thresholds, rules);
        let want_all = expected(&readings, &thresholds, rules);
        assert!(
            want_all.len() > 200,
            "enough device-days: {}",
            want_all.len()
        );
        assert!(
            want_all.values().any(|r| r.segments > 3) && want_all.values().any(|r| r.segments == 0),
            "varied data"
        );
        let (first, all) = run(workers, readings, thresholds, rules);
        assert_eq!(
            first, want_first,
            "after round 1, seed {seed}, {workers} workers"
        );
        assert_eq!(
            all, want_all,
            "after round 2, seed {seed}, {workers} workers"
        );
    }
}
