//! ShuffleNet v1 1x g=3 at 224x224: latency at batch 1 and 8 with 1 and 2
//! threads, and the compile time of the whole network.
//!
//! `cargo bench -p shufflekit-jit --bench shufflenet`

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shufflekit_ir::input::random_input;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_jit::{optimize, CompileOptions, Model};

fn shufflenet() -> (shufflekit_ir::Graph, Weights) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    let graph = shufflekit_spec::load(&path, &[]).expect("spec");
    let weights = Weights::init(
        &graph,
        &InitOptions {
            seed: 0,
            randomize_batch_norm: true,
        },
    );
    optimize(&graph, &weights).expect("passes")
}

fn inference(c: &mut Criterion) {
    let (graph, weights) = shufflenet();
    let shape = graph.node(graph.input_nodes()[0]).shape.clone();
    let mut group = c.benchmark_group("shufflenet_v1_g3_224");
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(30);
    for batch in [1usize, 8] {
        let input = random_input(&shape, batch, 1).expect("input");
        group.throughput(Throughput::Elements(batch as u64));
        for threads in [1usize, 2] {
            let options = CompileOptions {
                threads,
                ..CompileOptions::default()
            };
            let mut model = Model::compile(&graph, &weights, &options).expect("compile");
            group.bench_with_input(
                BenchmarkId::new(format!("batch{batch}"), format!("threads{threads}")),
                &input,
                |b, input| b.iter(|| model.run(input).expect("run")),
            );
        }
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let (graph, weights) = shufflenet();
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("shufflenet_v1_g3_224", |b| {
        b.iter(|| Model::compile(&graph, &weights, &CompileOptions::default()).expect("compile"))
    });
    group.finish();
}

criterion_group!(benches, inference, compile);
criterion_main!(benches);
