//! Area (geofence) rules through the engine: enter and exit events on the edge cases of the
//! geometry (a point on the boundary, a fence across the antimeridian, one around a pole, a
//! fence with a hole), a dwell time, and rules from the configuration.

use std::str::FromStr;

use iotflow_alarms::{Area, Condition, Engine, Event, EventKind, Rule, Sample, Scope, Severity};
use rust_decimal::Decimal;

fn rule(id: &str, condition: Condition, duration_ms: i64) -> Rule {
    Rule {
        id: id.into(),
        scope: Scope::All,
        condition,
        duration_ms,
        hysteresis: Decimal::ZERO,
        severity: Severity::Warning,
        device_threshold: false,
    }
}

fn sample(t_s: i64, lat: &str, lon: &str) -> Sample {
    Sample {
        pboxid: "p".into(),
        at_ms: t_s * 1000,
        metric: Decimal::ONE,
        model: None,
        site: None,
        threshold: None,
        lat: Decimal::from_str(lat).unwrap(),
        lon: Decimal::from_str(lon).unwrap(),
    }
}

/// (time s, kind) of the events of `path` through `rule`.
fn events(rule: Rule, path: &[(i64, &str, &str)]) -> Vec<(i64, EventKind)> {
    let mut engine = Engine::new(vec![rule]).unwrap();
    let mut out: Vec<Event> = Vec::new();
    for (t, lat, lon) in path {
        engine.observe(&sample(*t, lat, lon), &mut out);
    }
    out.iter().map(|e| (e.at_ms / 1000, e.kind)).collect()
}

fn square_with_hole() -> Area {
    Area::new(vec![
        vec![[121.0, 31.0], [121.1, 31.0], [121.1, 31.1], [121.0, 31.1]],
        vec![
            [121.04, 31.04],
            [121.06, 31.04],
            [121.06, 31.06],
            [121.04, 31.06],
        ],
    ])
    .unwrap()
}

#[test]
fn entering_on_the_boundary_and_leaving_through_a_hole() {
    let path = [
        (0, "30.99", "121.05"),   // south of the fence
        (1, "31.0", "121.05"),    // on the southern edge: inside
        (2, "31.02", "121.05"),   // inside
        (3, "31.05", "121.05"),   // in the hole: outside
        (4, "31.06", "121.05"),   // on the hole's edge: inside again
        (5, "31.1", "121.1"),     // on the outer corner: inside
        (6, "31.10001", "121.1"), // just north: outside
    ];
    use EventKind::*;
    assert_eq!(
        events(
            rule(
                "in",
                Condition::InArea {
                    area: square_with_hole()
                },
                0
            ),
            &path
        ),
        vec![(1, Raised), (3, Cleared), (4, Raised), (6, Cleared)]
    );
    assert_eq!(
        events(
            rule(
                "out",
                Condition::OutOfArea {
                    area: square_with_hole()
                },
                0
            ),
            &path
        ),
        vec![
            (0, Raised),
            (1, Cleared),
            (3, Raised),
            (4, Cleared),
            (6, Raised)
        ]
    );
}

#[test]
fn a_fence_across_the_antimeridian() {
    // Around Fiji: from 179.5° E to 179.5° W.
    let area = Area::new(vec![vec![
        [179.5, -17.0],
        [-179.5, -17.0],
        [-179.5, -16.0],
        [179.5, -16.0],
    ]])
    .unwrap();
    let path = [
        (0, "-16.5", "179.4"),  // west of it
        (1, "-16.5", "179.9"),  // inside, east longitude
        (2, "-16.5", "180"),    // on the antimeridian
        (3, "-16.5", "-179.9"), // inside, west longitude
        (4, "-16.5", "-179.5"), // on the eastern edge
        (5, "-16.5", "-179.4"), // east of it
        (6, "-16.5", "0"),      // the other side of the globe
    ];
    use EventKind::*;
    assert_eq!(
        events(rule("fiji", Condition::InArea { area }, 0), &path),
        vec![(1, Raised), (5, Cleared)]
    );
}

#[test]
fn a_fence_around_the_north_pole() {
    // A ring along 80° N going east encloses the pole (on its left, RFC 7946).
    let area = Area::new(vec![vec![
        [-180.0, 80.0],
        [-90.0, 80.0],
        [0.0, 80.0],
        [90.0, 80.0],
        [180.0, 80.0],
    ]])
    .unwrap();
    let path = [
        (0, "79.9", "10"),
        (1, "85", "10"),
        (2, "90", "0"),    // the pole
        (3, "89", "-170"), // across, still inside
        (4, "80", "45"),   // on the ring
        (5, "79", "-100"),
    ];
    use EventKind::*;
    assert_eq!(
        events(rule("arctic", Condition::InArea { area }, 0), &path),
        vec![(1, Raised), (5, Cleared)]
    );
}

#[test]
fn a_dwell_time_raises_only_after_staying_inside() {
    let path = [
        (0, "31.02", "121.02"),
        (30, "31.02", "121.02"),
        (40, "30.5", "121.02"), // out before 60 s
        (50, "31.02", "121.02"),
        (100, "31.02", "121.02"),
        (110, "31.03", "121.02"), // 60 s inside since 50
        (120, "30.5", "121.02"),
    ];
    use EventKind::*;
    assert_eq!(
        events(
            rule(
                "dwell",
                Condition::InArea {
                    area: square_with_hole()
                },
                60_000
            ),
            &path
        ),
        vec![(110, Raised), (120, Cleared)]
    );
}

#[test]
fn bad_areas_are_refused_with_their_reason() {
    let e = Area::new(vec![vec![[121.0, 91.0], [121.1, 31.0], [121.1, 31.1]]]).unwrap_err();
    assert!(e.contains("latitude 91"), "{e}");
    let e = Area::new(vec![vec![[0.0, 0.0], [180.0, 0.0], [180.0, 1.0]]]).unwrap_err();
    assert!(e.contains("180"), "{e}");
    assert!(Area::new(vec![]).unwrap_err().contains("no ring"));
    let mut r = rule(
        "h",
        Condition::InArea {
            area: square_with_hole(),
        },
        0,
    );
    r.hysteresis = Decimal::ONE;
    assert!(r.check().unwrap_err().reason.contains("hysteresis"));
}
