//! Parsing and counting speed of the spec front end: a search evaluates
//! thousands of variants, so parse + expand + count of ShuffleNet 1x must take
//! well under 5 ms (the bound). `cargo bench --bench spec`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use shufflekit_ir::cost::{self, Convention};
use shufflekit_spec::Spec;

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/shufflenet_v1.yaml");
    c.bench_function("parse+expand+count shufflenet_v1 1x g=3", |b| {
        b.iter(|| {
            let spec = Spec::parse_file(&path).expect("valid spec");
            let graph = spec.build(&[]).expect("valid graph");
            cost::count(&graph, Convention::Macs).macs
        })
    });
    let spec = Spec::parse_file(&path).expect("valid spec");
    c.bench_function("expand+count (parsed once) shufflenet_v1 1x g=8", |b| {
        let overrides = vec![("groups".to_string(), "8".to_string())];
        b.iter(|| cost::count(&spec.build(&overrides).expect("valid"), Convention::Macs).macs)
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
