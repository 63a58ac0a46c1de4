//! Reading parser throughput: `iotflow_model::parse_reading` (exact decimals, validated) side
//! by side with its reference path (`parse_reading_reference`: serde, what the fast path must
//! equal) and the "serde parse alone" baseline (`f64` fields, no validation), on the same
//! realistic ~120-byte readings, in one criterion group so the ratios are measured in one run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iotflow_benches::{parse_baseline, payloads};
use iotflow_model::{parse_reading, parse_reading_reference, ParseLimits, Zone};

/// Readings per iteration.
const BATCH: u64 = 10_000;

fn parse(c: &mut Criterion) {
    let payloads = payloads(BATCH, 1_000, 42);
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let limits = ParseLimits::default();
    let zone = Zone::Utc;

    let mut group = c.benchmark_group("parse");
    group
        .throughput(Throughput::Elements(BATCH))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("parse_reading", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(parse_reading(black_box(p), &zone, &limits).expect("valid reading"));
            }
        })
    });
    group.bench_function("parse_reading_reference", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(
                    parse_reading_reference(black_box(p), &zone, &limits).expect("valid reading"),
                );
            }
        })
    });
    group.bench_function("serde_f64_baseline", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(parse_baseline(black_box(p)).expect("valid JSON"));
            }
        })
    });
    group.finish();
    eprintln!(
        "parse: {BATCH} readings per iteration, {:.1} bytes each on average",
        bytes as f64 / BATCH as f64
    );
}

criterion_group!(benches, parse);
criterion_main!(benches);
