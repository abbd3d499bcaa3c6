//! Our side of `bench/train-peer.sh`: times training steps (forward,
//! softmax cross-entropy, backward, running statistics, SGD with momentum)
//! of ShuffleNet v1 0.5x g=3 with the small-image stem on batches of the
//! MNIST sample, and prints the images per second as one JSON line.
//!
//! `--describe PATH` instead writes what the PyTorch side needs to build the
//! same run: the graph's nodes in order (op, parameters, inputs) with the
//! trainable parameter count, and the same batches (little-endian f32
//! images, then u32 labels).
//!
//! With `SHUFFLEKIT_TRAIN_PROFILE=1` it also prints the time per op kind
//! of the timed steps to stderr.
//!
//! ```text
//! train_steps [--threads 2] [--batch 64] [--steps 20] [--warmup 3]
//!             [--batches 8] [--describe DIR]
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use shufflekit_ir::ops::Op;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::Graph;
use shufflekit_spec::Spec;
use shufflekit_train::data::{epoch_order, mnist_sample, Augment};
use shufflekit_train::grad::{softmax_cross_entropy, Mode, Network};
use shufflekit_train::optim::Sgd;
use shufflekit_train::profile;

struct Args {
    threads: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    batches: usize,
    describe: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: 2,
        batch: 64,
        steps: 20,
        warmup: 3,
        batches: 8,
        describe: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{flag} {value}: expected a positive integer"))
        };
        match flag.as_str() {
            "--threads" => args.threads = number()?,
            "--batch" => args.batch = number()?,
            "--steps" => args.steps = number()?,
            "--warmup" => args.warmup = number()?,
            "--batches" => args.batches = number()?,
            "--describe" => args.describe = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn graph() -> Graph {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../specs/shufflenet_v1.yaml");
    let spec = Spec::parse_file(std::path::Path::new(path)).expect("the spec parses");
    let set = |k: &str, v: &str| (k.to_string(), v.to_string());
    spec.build(&[
        set("groups", "3"),
        set("width", "0.5"),
        set("resolution", "28"),
        set("channels", "1"),
        set("classes", "10"),
        set("small_input", "true"),
    ])
    .expect("the spec builds")
}

/// One node for the PyTorch mirror; only the ops specs produce.
fn describe_op(op: &Op) -> Value {
    match op {
        Op::Input(_) => json!({"op": "input"}),
        Op::Conv2d(p) => json!({"op": "conv", "out": p.out_channels, "kernel": p.kernel,
            "stride": p.stride, "padding": p.padding, "dilation": p.dilation,
            "groups": p.groups, "bias": p.bias}),
        Op::BatchNorm(p) => json!({"op": "batch_norm", "eps": p.eps}),
        Op::Relu => json!({"op": "relu"}),
        Op::ChannelShuffle(p) => json!({"op": "channel_shuffle", "groups": p.groups}),
        Op::AvgPool(p) => json!({"op": "avg_pool", "kernel": p.kernel, "stride": p.stride,
            "padding": p.padding, "ceil_mode": p.ceil_mode,
            "count_include_pad": p.count_include_pad}),
        Op::Concat(_) => json!({"op": "concat"}),
        Op::Add => json!({"op": "add"}),
        Op::GlobalAvgPool => json!({"op": "global_avg_pool"}),
        Op::Flatten => json!({"op": "flatten"}),
        Op::Linear(p) => json!({"op": "linear", "out": p.out_features, "bias": p.bias}),
        other => json!({"op": format!("unsupported: {other:?}")}),
    }
}

fn describe(graph: &Graph, batches: &[(Tensor, Vec<u32>)], dir: &PathBuf) {
    let ids: Vec<_> = graph.nodes().collect();
    let pos = |id| {
        ids.iter()
            .position(|&i| i == id)
            .expect("a node of the graph")
    };
    let nodes: Vec<Value> = ids
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let mut v = describe_op(&node.op);
            v["name"] = json!(node.name);
            v["inputs"] = json!(graph.inputs(id).into_iter().map(pos).collect::<Vec<_>>());
            v["in_channels"] = json!(graph
                .input_shapes(id)
                .first()
                .map(|s| s.channels())
                .unwrap_or(0));
            v["shape"] = json!(node.shape.dims());
            v
        })
        .collect();
    let params: usize = ids
        .iter()
        .flat_map(|&id| graph.weights(id))
        .filter(|w| w.trainable())
        .map(|w| w.numel())
        .sum();
    std::fs::create_dir_all(dir).expect("the describe directory");
    let meta = json!({"nodes": nodes, "trainable_params": params,
        "batch": batches[0].1.len(), "batches": batches.len(),
        "image": [1, 28, 28], "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
        "bn_momentum": BN_MOMENTUM});
    std::fs::write(dir.join("graph.json"), meta.to_string()).expect("graph.json");
    let mut f = std::fs::File::create(dir.join("batches.bin")).expect("batches.bin");
    for (x, _) in batches {
        for v in x.data() {
            f.write_all(&v.to_le_bytes()).expect("batches.bin");
        }
    }
    for (_, labels) in batches {
        for l in labels {
            f.write_all(&l.to_le_bytes()).expect("batches.bin");
        }
    }
}

const LR: f32 = 0.01;
const MOMENTUM: f32 = 0.9;
const WEIGHT_DECAY: f32 = 4e-5;
const BN_MOMENTUM: f32 = 0.1;

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("train_steps: {e}");
        std::process::exit(2)
    });
    let graph = graph();
    let split = mnist_sample().expect("the embedded MNIST sample");
    let order = epoch_order(split.train.len(), 0, 0);
    let batches: Vec<(Tensor, Vec<u32>)> = order
        .chunks_exact(args.batch)
        .take(args.batches)
        .map(|idx| {
            split
                .batch(&split.train, idx, Augment::default(), None)
                .expect("a batch")
        })
        .collect();
    if let Some(dir) = &args.describe {
        describe(&graph, &batches, dir);
        return;
    }
    let net = Network::new(&graph).expect("a trainable graph");
    let mut weights = shufflekit_train::fit::training_init(&graph, 0).expect("weights");
    let mut sgd = Sgd::new(&graph, MOMENTUM, WEIGHT_DECAY);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .expect("a thread pool");
    let mut step = |k: usize| {
        let (x, labels) = &batches[k % batches.len()];
        let timed = |label: &str, t: Instant| {
            if profile::enabled() {
                profile::record(label, t.elapsed());
            }
        };
        let tape = net.forward(&weights, x, Mode::Train).expect("forward");
        let t = Instant::now();
        let (loss, d, _) =
            softmax_cross_entropy(&tape.output().expect("logits"), labels).expect("loss");
        timed("loss", t);
        let grads = tape.backward(&weights, &d).expect("backward");
        let t = Instant::now();
        tape.update_running_stats(&mut weights, BN_MOMENTUM);
        drop(tape);
        timed("running stats + tape drop", t);
        let t = Instant::now();
        sgd.step(&mut weights, &grads.weights, LR).expect("sgd");
        drop(grads);
        timed("sgd + gradients drop", t);
        loss
    };
    pool.install(|| {
        for k in 0..args.warmup {
            step(k);
        }
        // The timed steps only.
        let _ = profile::report();
        let start = Instant::now();
        let mut loss = 0.0;
        for k in 0..args.steps {
            loss = step(args.warmup + k);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({"images_per_s": (args.steps * args.batch) as f64 / secs,
                "seconds": secs, "steps": args.steps, "batch": args.batch,
                "threads": args.threads, "last_loss": loss})
        );
        if profile::enabled() {
            eprint!("{}", profile::report());
        }
    });
}
