//! Per-layer-kind profile of a zoo spec through the JIT:
//! `cargo run --release -p shufflekit-jit --example profile -- [batch] [threads] [iters] [key=value]...`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shufflekit_ir::input::random_input;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_jit::{optimize, CompileOptions, Model};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (batch, threads, iters) = (num(0, 1), num(1, 1), num(2, 50));
    let sets: Vec<(String, String)> = args
        .iter()
        .skip(3)
        .filter_map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    // SPEC=specs/other.yaml (relative to the workspace) profiles another spec.
    let spec = std::env::var("SPEC").unwrap_or_else(|_| "specs/shufflenet_v1.yaml".into());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(spec);
    let graph = shufflekit_spec::load(&path, &sets).expect("spec");
    let weights = Weights::init(
        &graph,
        &InitOptions {
            seed: 0,
            randomize_batch_norm: true,
        },
    );
    let t = std::time::Instant::now();
    let (graph, weights) = optimize(&graph, &weights).expect("passes");
    let passes = t.elapsed();
    let options = CompileOptions {
        threads,
        ..CompileOptions::default()
    };
    if let Ok(path) = std::env::var("ASM") {
        let text = shufflekit_jit::emit(&graph, shufflekit_jit::Emit::Asm, &options).expect("asm");
        std::fs::write(&path, text).expect("write asm");
        let clif =
            shufflekit_jit::emit(&graph, shufflekit_jit::Emit::Clif, &options).expect("clif");
        std::fs::write(format!("{path}.clif"), clif).expect("write clif");
    }
    let mut model = Model::compile(&graph, &weights, &options).expect("compile");
    println!(
        "passes {:?}, compile {:?}, {:?}",
        passes,
        model.stats().compile_time,
        model.stats()
    );
    let input = random_input(&graph.node(graph.input_nodes()[0]).shape, batch, 1).expect("input");
    let layers = model.layers();
    let mut totals = vec![Duration::ZERO; layers.len()];
    let mut wall = Vec::new();
    for _ in 0..iters {
        let t = std::time::Instant::now();
        model.run(&input).expect("run");
        wall.push(t.elapsed());
    }
    for i in 0..iters {
        let (_, times) = model.run_profiled(&input).expect("run");
        if i >= iters / 5 {
            for (a, b) in totals.iter_mut().zip(times) {
                *a += b;
            }
        }
    }
    wall.sort();
    let n = (iters - iters / 5) as f64;
    let mut kinds: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for (l, t) in layers.iter().zip(&totals) {
        let e = kinds.entry(format!("{:?}", l.kind)).or_default();
        e.0 += t.as_secs_f64() / n;
        e.1 += l.macs * batch as u64;
    }
    println!(
        "median {:?} p10 {:?}",
        wall[wall.len() / 2],
        wall[wall.len() / 10]
    );
    for (k, (s, m)) in kinds {
        println!(
            "{k:<10} {:8.3} ms {:7.2} GMAC/s",
            s * 1e3,
            m as f64 / s / 1e9
        );
    }
    if std::env::var("LAYERS").is_ok() {
        for (l, t) in layers.iter().zip(&totals) {
            let s = t.as_secs_f64() / n;
            println!(
                "{:<32} {:<8} {:8.1} us {:7.2} GMAC/s",
                l.name,
                l.op,
                s * 1e6,
                (l.macs * batch as u64) as f64 / s / 1e9
            );
        }
    }
}
