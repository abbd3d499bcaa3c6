//! Scale of the spec front end: expansion (with shape inference and the
//! verifier), counting and the text form of generated specs of 10k, 30k and
//! 100k layers. Each step must grow no worse than n log n in the number of
//! layers (issue 15; a flat spec of 20,000 `relu`s used to take 148 s).
//! `cargo bench -p shufflekit-spec --bench scale`.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shufflekit_ir::cost::{self, Convention};
use shufflekit_ir::text::{self, DumpOptions};
use shufflekit_spec::Spec;
use shufflekit_test_support::scale::{self, Layout};

const SIZES: [usize; 3] = [10_000, 30_000, 100_000];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for layout in Layout::ALL {
        for nodes in SIZES {
            let src = scale::spec(layout, nodes);
            group.throughput(Throughput::Elements(nodes as u64));
            let id = BenchmarkId::new(format!("{}/parse+expand+verify", layout.name()), nodes);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let spec = Spec::parse(&src, "scale.yaml", Path::new(".")).expect("valid");
                    spec.build(&[]).expect("valid").len()
                })
            });
            let graph = Spec::parse(&src, "scale.yaml", Path::new("."))
                .and_then(|s| s.build(&[]))
                .expect("valid");
            let id = BenchmarkId::new(format!("{}/count+dump", layout.name()), nodes);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let cost = cost::count(&graph, Convention::Macs);
                    let dump = text::dump(&graph, DumpOptions { locations: true });
                    (cost.macs, dump.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
