//! Training throughput of ShuffleNet v1 0.5x g=3 with the small-image stem
//! on 28x28x1 MNIST-shaped batches: one forward, backward and SGD step of a
//! batch of 64, on 2 threads. Images per second = 64 / (time per step).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_spec::Spec;
use shufflekit_train::grad::{softmax_cross_entropy, Mode, Network};
use shufflekit_train::optim::Sgd;

fn bench(c: &mut Criterion) {
    let spec = Spec::parse_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../specs/shufflenet_v1.yaml"
    )))
    .unwrap();
    let set = |k: &str, v: &str| (k.to_string(), v.to_string());
    let graph = spec
        .build(&[
            set("groups", "3"),
            set("width", "0.5"),
            set("resolution", "28"),
            set("channels", "1"),
            set("classes", "10"),
            set("small_input", "true"),
        ])
        .unwrap();
    let net = Network::new(&graph).unwrap();
    let mut weights = Weights::init(&graph, &InitOptions::default());
    let batch = 64;
    let x = shufflekit_ir::input::random_input(net.input_shape(), batch, 1).unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let mut sgd = Sgd::new(&graph, 0.9, 4e-5);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("train_step");
    g.throughput(Throughput::Elements(batch as u64));
    g.sample_size(20);
    g.bench_function("shufflenet_v1_0.5x_g3_28x28_batch64_2threads", |b| {
        b.iter(|| {
            pool.install(|| {
                let tape = net.forward(&weights, &x, Mode::Train).unwrap();
                let (_, d, _) = softmax_cross_entropy(&tape.output().unwrap(), &labels).unwrap();
                let grads = tape.backward(&weights, &d).unwrap();
                tape.update_running_stats(&mut weights, 0.1);
                drop(tape);
                sgd.step(&mut weights, &grads.weights, 0.01).unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
