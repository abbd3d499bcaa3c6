//! Scale of the pass pipeline and the memory plan (what `shufflekit flops`
//! runs after expansion) on generated specs of 10k, 30k and 100k layers:
//! each must grow no worse than n log n in the number of layers (issue 15).
//! `cargo bench -p shufflekit-passes --bench scale`.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shufflekit_passes::{memory, optimize, Module};
use shufflekit_spec::Spec;
use shufflekit_test_support::scale::{self, Layout};

const SIZES: [usize; 3] = [10_000, 30_000, 100_000];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for layout in Layout::ALL {
        for nodes in SIZES {
            let graph = Spec::parse(&scale::spec(layout, nodes), "scale.yaml", Path::new("."))
                .and_then(|s| s.build(&[]))
                .expect("valid");
            group.throughput(Throughput::Elements(nodes as u64));
            let id = BenchmarkId::new(format!("{}/passes+memory-plan", layout.name()), nodes);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let mut module = Module::graph_only(graph.clone());
                    optimize(&mut module).expect("the pipeline runs");
                    memory::plan(&module.graph).arena_bytes
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
