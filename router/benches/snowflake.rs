//! Id generation per worker: ours against the `snowflaked` crate, same run.
//!
//! Both are clock-bound: 12 bits of sequence = 4,096 ids per millisecond per worker,
//! so the physical limit is 4,096,000 ids/s. `scripts/bench-snowflake.sh` runs this and
//! prints ids/s and the ratios to the limit and to the reference.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

fn ids_per_worker(c: &mut Criterion) {
    let mut group = c.benchmark_group("snowflake_per_worker");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(30);

    let ours = router::Snowflake::new(1, 1).expect("generator");
    group.bench_function("router", |b| {
        b.iter(|| black_box(ours.next_id().expect("id")))
    });

    let reference = snowflaked::sync::Generator::new(33);
    group.bench_function("snowflaked_sync", |b| {
        b.iter(|| black_box(reference.generate::<u64>()))
    });

    let mut reference_mut = snowflaked::Generator::new(34);
    group.bench_function("snowflaked_unsync", |b| {
        b.iter(|| black_box(reference_mut.generate::<u64>()))
    });
    group.finish();
}

criterion_group!(benches, ids_per_worker);
criterion_main!(benches);
