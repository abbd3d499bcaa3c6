//! Speed of the reference evaluator: batch-1 ShuffleNet v1 1x g=3 at
//! 224x224 on one thread (rayon limited to 1). The evaluator is meant to run
//! this in well under a second. `cargo bench --bench eval`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use shufflekit_ir::eval;
use shufflekit_ir::input::random_input;
use shufflekit_ir::weights::{InitOptions, Weights};

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/shufflenet_v1.yaml");
    let graph = shufflekit_spec::load(&path, &[]).expect("the zoo spec builds");
    let weights = Weights::init(&graph, &InitOptions::default());
    let input = random_input(&graph.node(graph.input_nodes()[0]).shape, 1, 0).expect("input");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut group = c.benchmark_group("reference evaluator");
    group.sample_size(20);
    group.bench_function("shufflenet_v1 1x g=3 224x224 batch 1, 1 thread", |b| {
        pool.install(|| {
            b.iter(|| eval::evaluate(black_box(&graph), &weights, black_box(&input)).expect("runs"))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
