//! Every op's gradient rule against central finite differences, on random
//! shapes, groups, strides, paddings and dilations, and a whole small
//! ShuffleNet's.
//!
//! The loss is `L = sum(y * r)` for a fixed random `r` (accumulated in
//! `f64`), so `dL/dy = r` is what [`Tape::backward`] receives. For a sampled
//! coordinate `v` of the input or of a trainable tensor, the numerical
//! derivative is `(L(v + e) - L(v - e)) / 2e`; it must agree with the
//! analytic one within `ATOL + RTOL * max(|a|, |n|)`. Near a kink (relu,
//! max pool) a difference quotient means nothing: a coordinate whose
//! estimates with `e` and `e / 2` disagree is skipped, and at least 60% of
//! the sampled coordinates must be checked.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shufflekit_ir::ops::{
    Activation, BatchNorm, ChannelShuffle, ChannelSlice, Concat, Conv2d, Linear, Pool,
};
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, Op, Shape};
use shufflekit_train::grad::{softmax_cross_entropy, Mode, Network};

const EPS: f32 = 1e-2;
const ATOL: f64 = 2e-3;
const RTOL: f64 = 2e-2;

fn loss(net: &Network, w: &Weights, x: &Tensor, r: &[f32], mode: Mode) -> f64 {
    let y = net.forward(w, x, mode).unwrap().output().unwrap();
    y.data()
        .iter()
        .zip(r)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

fn normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// Checks the gradients of `graph` with respect to its input and every
/// trainable tensor, at `samples` random coordinates of each.
fn check(graph: &Graph, mode: Mode, batch: usize, seed: u64, samples: usize) {
    check_with(graph, mode, batch, seed, samples, None)
}

fn check_with(
    graph: &Graph,
    mode: Mode,
    batch: usize,
    seed: u64,
    samples: usize,
    input: Option<Vec<f32>>,
) {
    check_eps(graph, mode, batch, seed, samples, input, EPS)
}

fn check_eps(
    graph: &Graph,
    mode: Mode,
    batch: usize,
    seed: u64,
    samples: usize,
    input: Option<Vec<f32>>,
    eps: f32,
) {
    let net = Network::new(graph).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let weights = Weights::init(
        graph,
        &InitOptions {
            seed,
            randomize_batch_norm: true,
        },
    );
    let mut shape = vec![batch];
    shape.extend_from_slice(net.input_shape().dims());
    let n_in = shape.iter().product();
    let x = Tensor::new(shape, input.unwrap_or_else(|| normal(&mut rng, n_in))).unwrap();
    let n_out = batch * net.output_shape().numel();
    let r = normal(&mut rng, n_out);
    let mut d_out_shape = vec![batch];
    d_out_shape.extend_from_slice(net.output_shape().dims());
    let tape = net.forward(&weights, &x, mode).unwrap();
    let grads = tape
        .backward(&weights, &Tensor::new(d_out_shape, r.clone()).unwrap())
        .unwrap();
    drop(tape);

    let mut targets: Vec<(String, usize)> = vec![("<input>".into(), n_in)];
    for (name, t) in grads.weights.iter() {
        targets.push((name.to_string(), t.numel()));
    }
    let (mut checked, mut total) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (name, len) in targets {
        for _ in 0..samples.min(len) {
            let i = rng.random_range(0..len);
            let analytic = if name == "<input>" {
                grads.input.data()[i]
            } else {
                grads.weights.get(&name).unwrap().data()[i]
            } as f64;
            let numeric = |e: f32| {
                let eval = |delta: f32| {
                    if name == "<input>" {
                        let mut xp = x.clone();
                        xp.data_mut()[i] += delta;
                        loss(&net, &weights, &xp, &r, mode)
                    } else {
                        let mut wp = weights.clone();
                        wp.get_mut(&name).unwrap().data_mut()[i] += delta;
                        loss(&net, &wp, &x, &r, mode)
                    }
                };
                (eval(e) - eval(-e)) / (2.0 * f64::from(e))
            };
            let (n1, n2) = (numeric(eps), numeric(eps / 2.0));
            total += 1;
            let tol = |a: f64, b: f64| ATOL + RTOL * a.abs().max(b.abs());
            if (n1 - n2).abs() > tol(n1, n2) {
                continue; // a kink between v - e and v + e
            }
            checked += 1;
            if (analytic - n2).abs() > tol(analytic, n2) {
                failures.push(format!(
                    "{name}[{i}]: analytic {analytic:.6}, numerical {n2:.6}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {checked} gradients differ:\n{}",
        graph.name,
        failures.len(),
        failures.join("\n")
    );
    assert!(
        checked * 10 >= total * 6,
        "{}: only {checked} of {total} coordinates were smooth enough to check",
        graph.name
    );
}

/// `input [c, h, w]` followed by `op`.
fn single(name: &str, input: Shape, op: Op) -> Graph {
    let mut g = Graph::new(name);
    let x = g.add(Op::Input(input), "input", &[], None).unwrap();
    g.add(op, "op", &[x], None).unwrap();
    g
}

#[test]
fn conv_gradients_random_shapes_groups_strides() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut tried = 0;
    while tried < 14 {
        let groups = rng.random_range(1..=3);
        let (cin_g, cout_g) = (rng.random_range(1..=3), rng.random_range(1..=3));
        let mut p = Conv2d::new(groups * cout_g, 1);
        p.kernel = [rng.random_range(1..=3), rng.random_range(1..=3)];
        p.stride = [rng.random_range(1..=3), rng.random_range(1..=2)];
        p.padding = [rng.random_range(0..=2), rng.random_range(0..=1)];
        p.dilation = [rng.random_range(1..=2), rng.random_range(1..=2)];
        p.groups = groups;
        p.bias = rng.random_bool(0.5);
        let (h, w) = (rng.random_range(3..=8), rng.random_range(3..=8));
        let shape = Shape::chw(groups * cin_g, h, w);
        if p.output_shape(&shape).is_err() {
            continue;
        }
        tried += 1;
        let g = single(&format!("conv{tried} {p:?}"), shape, Op::Conv2d(p));
        check(&g, Mode::Train, 2, tried, 8);
    }
}

/// 1x1 stride-1 convolutions take the direct kernels (no im2col); batches
/// of 1 and of more than one chunk of images.
#[test]
fn pointwise_conv_gradients() {
    for (i, (groups, cin_g, cout_g, batch)) in
        [(1, 3, 5, 2), (3, 2, 4, 1), (2, 5, 1, 11), (4, 1, 3, 3)]
            .into_iter()
            .enumerate()
    {
        let mut p = Conv2d::new(groups * cout_g, 1);
        p.groups = groups;
        p.bias = i % 2 == 0;
        let g = single("pointwise", Shape::chw(groups * cin_g, 5, 3), Op::Conv2d(p));
        check(&g, Mode::Train, batch, 40 + i as u64, 10);
    }
}

/// batch norm -> relu and add -> relu, which the network folds into one
/// step each.
#[test]
fn folded_relu_gradients() {
    let mut g = Graph::new("folded");
    let x = g
        .add(Op::Input(Shape::chw(3, 4, 5)), "input", &[], None)
        .unwrap();
    let bn = g
        .add(Op::BatchNorm(BatchNorm::default()), "bn", &[x], None)
        .unwrap();
    let r1 = g.add(Op::Relu, "relu1", &[bn], None).unwrap();
    let conv = g
        .add(Op::Conv2d(Conv2d::new(3, 1)), "conv", &[r1], None)
        .unwrap();
    let add = g.add(Op::Add, "add", &[x, conv], None).unwrap();
    g.add(Op::Relu, "relu2", &[add], None).unwrap();
    for mode in [Mode::Train, Mode::Eval] {
        check(&g, mode, 3, 21, 12);
    }
}

#[test]
fn depthwise_conv_gradients() {
    for (stride, pad, dil) in [(1, 1, 1), (2, 1, 1), (2, 2, 2), (1, 0, 1)] {
        let mut p = Conv2d::new(4, 3);
        p.groups = 4;
        p.stride = [stride, stride];
        p.padding = [pad, pad];
        p.dilation = [dil, dil];
        let g = single("depthwise", Shape::chw(4, 7, 6), Op::Conv2d(p));
        check(&g, Mode::Train, 2, stride as u64 * 10 + pad as u64, 10);
    }
}

#[test]
fn conv_fused_epilogue_gradients() {
    // conv(x) reordered, plus a residual, through relu / relu6.
    for act in [Activation::None, Activation::Relu, Activation::Relu6] {
        let mut g = Graph::new("fused");
        let x = g
            .add(Op::Input(Shape::chw(6, 5, 5)), "input", &[], None)
            .unwrap();
        let r = g.add(Op::Sigmoid, "r", &[x], None).unwrap();
        let mut p = Conv2d::new(6, 3);
        p.padding = [1, 1];
        p.groups = 3;
        p.bias = true;
        p.activation = act;
        p.residual = true;
        p.output_order = Some(vec![0, 2, 4, 1, 3, 5]);
        g.add(Op::Conv2d(p), "conv", &[x, r], None).unwrap();
        check(&g, Mode::Train, 2, 3, 12);
    }
}

#[test]
fn batch_norm_gradients_in_both_modes() {
    let g = single(
        "bn",
        Shape::chw(3, 4, 5),
        Op::BatchNorm(BatchNorm::default()),
    );
    check(&g, Mode::Train, 3, 1, 12);
    check(&g, Mode::Eval, 3, 2, 12);
    // A 1x1 plane: the batch is all a channel has.
    let g = single(
        "bn_flat",
        Shape::chw(4, 1, 1),
        Op::BatchNorm(BatchNorm::default()),
    );
    check(&g, Mode::Train, 5, 3, 12);
}

#[test]
fn hard_sigmoid_and_hard_swish_gradients() {
    for op in [Op::HardSigmoid, Op::HardSwish] {
        let g = single(op.kind(), Shape::chw(3, 2, 3), op.clone());
        // Inputs inside (-3, 3) and outside it, away from the kinks at +-3.
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let x: Vec<f32> = (0..2 * 18)
            .map(|k| {
                let v: f32 = if k % 3 == 0 {
                    rng.random_range(3.5..6.0)
                } else {
                    rng.random_range(0.1..2.5)
                };
                if rng.random_range(0..2) == 0 {
                    v
                } else {
                    -v
                }
            })
            .collect();
        check_with(&g, Mode::Train, 2, 4, 12, Some(x));
    }
}

#[test]
fn activation_and_softmax_gradients() {
    for op in [Op::Relu, Op::Relu6, Op::Sigmoid, Op::Softmax] {
        let g = single(op.kind(), Shape::chw(3, 2, 3), op.clone());
        // Inputs spread over (-8, 8) away from the kinks at 0 and 6.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x: Vec<f32> = (0..2 * 18)
            .map(|_| {
                let v: f32 = rng.random_range(0.2..2.0);
                let k: f32 = [-3.0, -1.0, 1.0, 4.0][rng.random_range(0..4)];
                k * v
            })
            .collect();
        check_with(&g, Mode::Train, 2, 4, 12, Some(x));
    }
    let g = single("softmax_flat", Shape::flat(5), Op::Softmax);
    check(&g, Mode::Train, 3, 6, 10);
}

#[test]
fn data_movement_gradients() {
    let g = single(
        "shuffle",
        Shape::chw(6, 2, 2),
        Op::ChannelShuffle(ChannelShuffle { groups: 3 }),
    );
    check(&g, Mode::Train, 2, 1, 12);
    let g = single(
        "slice",
        Shape::chw(5, 2, 3),
        Op::ChannelSlice(ChannelSlice { start: 1, len: 3 }),
    );
    check(&g, Mode::Train, 2, 2, 12);
    let g = single("flatten", Shape::chw(2, 2, 3), Op::Flatten);
    check(&g, Mode::Train, 2, 3, 12);
    // concat(b, a, b) of two slices, with and without a channel order, and
    // with each fused activation.
    let orders = [None, Some(vec![3, 0, 5, 1, 4, 2, 6])];
    let cases = orders.iter().map(|o| (o.clone(), Activation::None)).chain([
        (Some(vec![3, 0, 5, 1, 4, 2, 6]), Activation::Relu),
        (None, Activation::Relu6),
    ]);
    for (order, activation) in cases {
        let mut g = Graph::new("concat");
        let x = g
            .add(Op::Input(Shape::chw(4, 2, 2)), "input", &[], None)
            .unwrap();
        let a = g
            .add(
                Op::ChannelSlice(ChannelSlice { start: 0, len: 1 }),
                "a",
                &[x],
                None,
            )
            .unwrap();
        let b = g
            .add(
                Op::ChannelSlice(ChannelSlice { start: 1, len: 3 }),
                "b",
                &[x],
                None,
            )
            .unwrap();
        g.add(
            Op::Concat(Concat {
                output_order: order,
                activation,
            }),
            "cat",
            &[b, a, b],
            None,
        )
        .unwrap();
        check(&g, Mode::Train, 2, 4, 16);
    }
}

#[test]
fn pooling_gradients() {
    let pool = |k: usize, s: usize, p: usize, ceil: bool, incl: bool| Pool {
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
        ceil_mode: ceil,
        count_include_pad: incl,
    };
    // Distinct, well separated values so that no window has a near tie.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut values: Vec<f32> = (0..2 * 2 * 7 * 7).map(|i| i as f32 * 0.1).collect();
    for i in (1..values.len()).rev() {
        values.swap(i, rng.random_range(0..=i));
    }
    for (k, s, p, ceil, incl) in [
        (3, 2, 1, false, true),
        (3, 2, 1, true, true),
        (2, 2, 0, true, true),
        (3, 2, 1, true, false),
        (3, 1, 1, false, false),
    ] {
        let shape = Shape::chw(2, 7, 7);
        let g = single(
            "max_pool",
            shape.clone(),
            Op::MaxPool(pool(k, s, p, ceil, incl)),
        );
        check_with(&g, Mode::Train, 2, 1, 16, Some(values.clone()));
        let g = single("avg_pool", shape, Op::AvgPool(pool(k, s, p, ceil, incl)));
        check(&g, Mode::Train, 2, 2, 16);
    }
    let g = single("gap", Shape::chw(3, 3, 4), Op::GlobalAvgPool);
    check(&g, Mode::Train, 2, 3, 12);
}

#[test]
fn add_and_mul_gradients_with_broadcast() {
    let mut g = Graph::new("arith");
    let x = g
        .add(Op::Input(Shape::chw(3, 2, 3)), "input", &[], None)
        .unwrap();
    let s = g.add(Op::Sigmoid, "s", &[x], None).unwrap();
    let m = g.add(Op::Mul, "mul", &[x, s], None).unwrap();
    let gap = g.add(Op::GlobalAvgPool, "gap", &[m], None).unwrap();
    let b = g.add(Op::Mul, "scale", &[m, gap], None).unwrap();
    let sq = g.add(Op::Mul, "square", &[b, b], None).unwrap();
    g.add(Op::Add, "add", &[sq, x], None).unwrap();
    check(&g, Mode::Train, 2, 1, 16);
}

#[test]
fn linear_gradients() {
    for bias in [true, false] {
        let mut g = Graph::new("linear");
        let x = g
            .add(Op::Input(Shape::chw(2, 2, 2)), "input", &[], None)
            .unwrap();
        let f = g.add(Op::Flatten, "flatten", &[x], None).unwrap();
        g.add(
            Op::Linear(Linear {
                out_features: 5,
                bias,
            }),
            "fc",
            &[f],
            None,
        )
        .unwrap();
        check(&g, Mode::Train, 3, 2, 16);
    }
}

#[test]
fn softmax_cross_entropy_gradient_is_the_derivative_of_the_loss() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let logits = Tensor::new(vec![3, 4], normal(&mut rng, 12)).unwrap();
    let labels = [2, 0, 3];
    let (l, g, _) = softmax_cross_entropy(&logits, &labels).unwrap();
    for i in 0..12 {
        let f = |d: f32| {
            let mut t = logits.clone();
            t.data_mut()[i] += d;
            softmax_cross_entropy(&t, &labels).unwrap().0
        };
        let numeric = (f(1e-3) - f(-1e-3)) / 2e-3;
        assert!(
            (numeric - f64::from(g.data()[i])).abs() < 1e-4,
            "{i}: {numeric} vs {}",
            g.data()[i]
        );
    }
    // log(4) for uniform logits; labels out of range are refused.
    let (u, _, _) = softmax_cross_entropy(&Tensor::zeros(vec![1, 4]).unwrap(), &[1]).unwrap();
    assert!((u - 4f64.ln()).abs() < 1e-12 && l > 0.0);
    assert!(softmax_cross_entropy(&logits, &[0, 1, 4]).is_err());
    assert!(softmax_cross_entropy(&logits, &[0, 1]).is_err());
}

fn tiny_shufflenet(shuffle: bool) -> Graph {
    let spec = shufflekit_spec::Spec::parse_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../specs/shufflenet_v1.yaml"
    )))
    .unwrap();
    let set = |k: &str, v: &str| (k.to_string(), v.to_string());
    spec.build(&[
        set("groups", "3"),
        set("width", "0.25"),
        set("resolution", "12"),
        set("channels", "2"),
        set("classes", "5"),
        set("small_input", "true"),
        set("shallow", "true"),
        set("shuffle", &shuffle.to_string()),
    ])
    .unwrap()
}

#[test]
fn whole_shufflenet_gradients() {
    // With its ReLUs, a small step of a stem weight moves hundreds of units
    // across their kinks, and the difference quotient averages over them;
    // with sigmoids in their place the loss is smooth and every rule of the
    // network (grouped, depthwise and strided convs, training-mode batch
    // norm, shuffle, average-pool shortcut, concat, add, global pool,
    // linear) is checked exactly. ReLU's own rule is checked above.
    let mut g = tiny_shufflenet(true);
    let relus: Vec<_> = g
        .nodes()
        .filter(|&id| matches!(g.node(id).op, Op::Relu))
        .collect();
    assert!(relus.len() > 10);
    for id in relus {
        g.node_mut(id).op = Op::Sigmoid;
    }
    check_eps(&g, Mode::Train, 4, 11, 3, None, 1e-2);
}

#[test]
fn inference_mode_matches_the_reference_evaluator() {
    let g = tiny_shufflenet(true);
    let net = Network::new(&g).unwrap();
    let w = Weights::init(
        &g,
        &InitOptions {
            seed: 4,
            randomize_batch_norm: true,
        },
    );
    let x = shufflekit_ir::input::random_input(net.input_shape(), 3, 2).unwrap();
    let ours = net.predict(&w, &x).unwrap();
    let reference = shufflekit_ir::eval::evaluate(&g, &w, &x).unwrap();
    let diff = ours.max_abs_diff(&reference).unwrap();
    assert!(diff <= 1e-4 * reference.max_abs().max(1.0), "{diff}");
}

/// A network reuses the buffers of its last tape: its passes after the
/// first must give exactly what a fresh network gives.
#[test]
fn reused_buffers_do_not_change_results() {
    let g = tiny_shufflenet(true);
    let w = Weights::init(&g, &InitOptions::default());
    let labels: Vec<u32> = (0..6).map(|i| i % 5).collect();
    let step = |net: &Network, seed: u64| {
        let x = shufflekit_ir::input::random_input(net.input_shape(), 6, seed).unwrap();
        let tape = net.forward(&w, &x, Mode::Train).unwrap();
        let out = tape.output().unwrap();
        let (_, d, _) = softmax_cross_entropy(&out, &labels).unwrap();
        (out, tape.backward(&w, &d).unwrap().weights)
    };
    let used = Network::new(&g).unwrap();
    step(&used, 1);
    step(&used, 2);
    assert_eq!(step(&used, 3), step(&Network::new(&g).unwrap(), 3));
}

#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    let g = tiny_shufflenet(false);
    let net = Network::new(&g).unwrap();
    let w = Weights::init(&g, &InitOptions::default());
    let x = shufflekit_ir::input::random_input(net.input_shape(), 20, 1).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let tape = net.forward(&w, &x, Mode::Train).unwrap();
            let labels: Vec<u32> = (0..20).map(|i| i % 5).collect();
            let (_, d, _) = softmax_cross_entropy(&tape.output().unwrap(), &labels).unwrap();
            tape.backward(&w, &d).unwrap().weights
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn bad_batches_are_refused() {
    let g = tiny_shufflenet(true);
    let net = Network::new(&g).unwrap();
    let w = Weights::init(&g, &InitOptions::default());
    let e = net
        .forward(&w, &Tensor::zeros(vec![2, 1, 12, 12]).unwrap(), Mode::Train)
        .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    let e = net
        .forward(
            &Weights::new(),
            &Tensor::zeros(vec![2, 2, 12, 12]).unwrap(),
            Mode::Train,
        )
        .unwrap_err();
    assert!(e.to_string().contains("missing tensor"), "{e}");
}
