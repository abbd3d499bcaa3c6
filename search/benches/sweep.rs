//! A FLOPs-only sweep of 1,000 ShuffleNet v1 candidates (5 group counts x
//! 200 widths): parse nothing, build, count, plan memory, append results.
//! The target is under 2 seconds on the project's 2-core machine.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use shufflekit_search::{ExistingResults, Search, Sweep};
use shufflekit_spec::Spec;

fn sweep_1000(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    let spec_text = std::fs::read_to_string(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    let mut group = c.benchmark_group("search");
    group.sample_size(10);
    group.bench_function("flops_sweep_1000_candidates", |b| {
        b.iter(|| {
            let spec =
                Spec::parse(&spec_text, "shufflenet_v1.yaml", path.parent().unwrap()).unwrap();
            let report = Search::new(spec, "specs/shufflenet_v1.yaml")
                .with_sweep(Sweep::parse("groups=1,2,3,4,8").unwrap())
                .with_sweep(Sweep::parse("width=0.01:2.0:0.01").unwrap())
                .with_results(&results)
                .with_existing(ExistingResults::Overwrite)
                .run()
                .unwrap();
            assert_eq!(report.results.records.len(), 1000);
            report.evaluated
        })
    });
    group.finish();
}

criterion_group!(benches, sweep_1000);
criterion_main!(benches);
