//! Statement encoding throughput: `iotflow_sink_mysql::encoder::encode_insert` turning batches
//! of 1 000 and 5 000 enriched rows into one multi-row `INSERT`, into a reused buffer as the
//! MySQL writer does.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iotflow_benches::{payloads, readings, rows};
use iotflow_sink_mysql::encoder::encode_insert;

fn encode(c: &mut Criterion) {
    let devices = iotflow_gen::devices(1_000, 42);
    let readings = readings(&payloads(5_000, 1_000, 42), 8, Some(1_744_243_200_000));
    let rows = rows(&readings, &devices);

    let mut group = c.benchmark_group("encode_insert");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [1_000usize, 5_000] {
        let batch = &rows[..n];
        let mut sql = String::new();
        encode_insert("iot_data", batch, &mut sql);
        eprintln!(
            "encode_insert: {n} rows -> {} bytes ({:.0} bytes/row)",
            sql.len(),
            sql.len() as f64 / n as f64
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), batch, |b, batch| {
            b.iter(|| {
                sql.clear();
                encode_insert("iot_data", black_box(batch), &mut sql);
                black_box(sql.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
