//! Differential property tests: every op, and every fused convolution
//! pattern, compiled by the JIT and compared with the reference evaluator
//! over random shapes, strides, paddings, dilations and groups, within
//! 1e-4 of the reference's largest magnitude.

mod common;

use common::{add, check};
use proptest::prelude::*;
use shufflekit_ir::ops::{
    Activation, BatchNorm, ChannelShuffle, ChannelSlice, Concat, Conv2d, Linear, Op, Pool,
};
use shufflekit_ir::{Graph, Shape};

/// A permutation of `0..n` drawn from `seed` (Fisher-Yates on a small LCG).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut s = seed | 1;
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        p.swap(i, (s >> 33) as usize % (i + 1));
    }
    p
}

#[derive(Debug, Clone)]
struct ConvCase {
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    bias: bool,
    activation: Activation,
    residual: bool,
    order: bool,
    batch: usize,
    threads: usize,
    seed: u64,
}

impl ConvCase {
    /// `input -> conv` (plus, for a residual, a plain conv of the same
    /// geometry whose output is added).
    fn graph(&self) -> Result<Graph, String> {
        let cin = self.groups * self.cin_g;
        let cout = self.groups * self.cout_g;
        let mut g = Graph::new("conv");
        let x = add(
            &mut g,
            Op::Input(Shape::chw(cin, self.hw[0], self.hw[1])),
            "input",
            &[],
        )?;
        let geometry = |c: &mut Conv2d| {
            c.kernel = self.kernel;
            c.stride = self.stride;
            c.padding = self.padding;
            c.dilation = self.dilation;
        };
        let mut inputs = vec![x];
        if self.residual {
            let mut r = Conv2d::new(cout, 1);
            geometry(&mut r);
            inputs.push(add(&mut g, Op::Conv2d(r), "residual", &[x])?);
        }
        let mut c = Conv2d::new(cout, 1);
        geometry(&mut c);
        c.groups = self.groups;
        c.bias = self.bias;
        c.activation = self.activation;
        c.residual = self.residual;
        if self.order {
            c.output_order = Some(permutation(cout, self.seed));
        }
        add(&mut g, Op::Conv2d(c), "conv", &inputs)?;
        Ok(g)
    }
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::None),
        Just(Activation::Relu),
        Just(Activation::Relu6)
    ]
}

prop_compose! {
    /// Any convolution: grouped, strided, padded, dilated, fused.
    fn any_conv()(
        groups in 1usize..4, cin_g in 1usize..6, cout_g in 1usize..9,
        h in 1usize..12, w in 1usize..22,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
        ph in 0usize..3, pw in 0usize..3, dh in 1usize..3, dw in 1usize..3,
        bias: bool, activation in activation(), residual: bool, order: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) -> ConvCase {
        ConvCase {
            groups, cin_g, cout_g, hw: [h, w], kernel: [kh, kw], stride: [sh, sw],
            padding: [ph, pw], dilation: [dh, dw], bias, activation, residual, order,
            batch, threads, seed,
        }
    }
}

prop_compose! {
    /// Pointwise convolutions with many input channels per group, so that
    /// the plane is split into rows that fit L1, often with a shorter
    /// last row.
    fn row_split_pointwise()(
        groups in 1usize..4, cin_g in 64usize..300, cout_g in 1usize..14,
        h in 2usize..16, w in 3usize..16,
        bias: bool, activation in activation(), residual: bool, order: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) -> ConvCase {
        ConvCase {
            groups, cin_g, cout_g, hw: [h, w], kernel: [1, 1], stride: [1, 1],
            padding: [0, 0], dilation: [1, 1], bias, activation, residual, order,
            batch, threads, seed,
        }
    }
}

prop_compose! {
    /// Pointwise (group) convolutions with wider channel counts and planes.
    fn pointwise()(
        groups in 1usize..5, cin_g in 1usize..40, cout_g in 1usize..30,
        h in 1usize..12, w in 1usize..15,
        bias: bool, activation in activation(), residual: bool, order: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) -> ConvCase {
        ConvCase {
            groups, cin_g, cout_g, hw: [h, w], kernel: [1, 1], stride: [1, 1],
            padding: [0, 0], dilation: [1, 1], bias, activation, residual, order,
            batch, threads, seed,
        }
    }
}

prop_compose! {
    /// Pointwise convolutions at the full-width tiers' sizes: up to ~1100
    /// input channels (K-blocked rows when the plane is large enough),
    /// output channels that no tile divides, planes of 1..300 pixels.
    fn wide_pointwise()(
        groups in 1usize..4, cin_g in 1usize..1100, cout_g in 1usize..40,
        h in 1usize..21, w in 1usize..16,
        bias: bool, activation in activation(), residual: bool, order: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) -> ConvCase {
        ConvCase {
            groups, cin_g, cout_g, hw: [h, w], kernel: [1, 1], stride: [1, 1],
            padding: [0, 0], dilation: [1, 1], bias, activation, residual, order,
            batch, threads, seed,
        }
    }
}

prop_compose! {
    /// Depthwise convolutions (one channel per group).
    fn depthwise()(
        channels in 1usize..70, h in 1usize..31, w in 1usize..70,
        k in 1usize..6, s in 1usize..3, p in 0usize..3, d in 1usize..3,
        bias: bool, activation in activation(), residual: bool, order: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) -> ConvCase {
        ConvCase {
            groups: channels, cin_g: 1, cout_g: 1, hw: [h, w], kernel: [k, k], stride: [s, s],
            padding: [p, p], dilation: [d, d], bias, activation, residual, order,
            batch, threads, seed,
        }
    }
}

prop_compose! {
    /// Stems: few input channels, 3x3 stride 2, larger images.
    fn stem()(
        cin in 1usize..5, cout in 1usize..30, h in 3usize..40, w in 3usize..70,
        bias: bool, activation in activation(), order: bool, seed: u64,
    ) -> ConvCase {
        ConvCase {
            groups: 1, cin_g: cin, cout_g: cout, hw: [h, w], kernel: [3, 3], stride: [2, 2],
            padding: [1, 1], dilation: [1, 1], bias, activation, residual: false, order,
            batch: 1, threads: 1, seed,
        }
    }
}

fn config() -> ProptestConfig {
    // 64 cases each unless PROPTEST_CASES says otherwise.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn check_conv(case: &ConvCase) -> Result<(), TestCaseError> {
    let graph = case.graph();
    prop_assume!(graph.is_ok());
    if let Ok(g) = graph {
        check(&g, case.batch, case.threads, case.seed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn conv_any_shape_matches_reference(case in any_conv()) {
        check_conv(&case)?;
    }

    #[test]
    fn conv_pointwise_matches_reference(case in pointwise()) {
        check_conv(&case)?;
    }

    #[test]
    fn conv_row_split_pointwise_matches_reference(case in row_split_pointwise()) {
        check_conv(&case)?;
    }

    #[test]
    fn conv_wide_pointwise_matches_reference(case in wide_pointwise()) {
        check_conv(&case)?;
    }

    #[test]
    fn conv_depthwise_matches_reference(case in depthwise()) {
        check_conv(&case)?;
    }

    #[test]
    fn conv_stem_matches_reference(case in stem()) {
        check_conv(&case)?;
    }

    #[test]
    fn pools_match_reference(
        c in 1usize..5, h in 1usize..15, w in 1usize..25,
        k in 1usize..5, s in 1usize..4, p in 0usize..3,
        ceil_mode: bool, count_include_pad: bool, max: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) {
        let pool = Pool {
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            ceil_mode,
            count_include_pad,
        };
        let op = if max { Op::MaxPool(pool) } else { Op::AvgPool(pool) };
        let g = common::single(Shape::chw(c, h, w), op);
        prop_assume!(g.is_ok());
        if let Ok(g) = g {
            check(&g, batch, threads, seed);
        }
    }

    #[test]
    fn max_pool_propagates_nan_like_the_reference(
        c in 1usize..4, h in 1usize..12, w in 1usize..20,
        k in 1usize..4, s in 1usize..3, p in 0usize..2,
        every in 2usize..12, seed: u64,
    ) {
        let pool = Pool { kernel: [k, k], stride: [s, s], padding: [p, p], ceil_mode: false, count_include_pad: false };
        let g = common::single(Shape::chw(c, h, w), Op::MaxPool(pool));
        prop_assume!(g.is_ok());
        if let Ok(g) = g {
            let input_shape = g.node(g.input_nodes()[0]).shape.clone();
            let mut input = shufflekit_ir::input::random_input(&input_shape, 1, seed).unwrap();
            for (i, v) in input.data_mut().iter_mut().enumerate() {
                if (i as u64 ^ seed).is_multiple_of(every as u64) {
                    *v = f32::NAN;
                }
            }
            let w = common::weights(&g, seed);
            let expected = shufflekit_ir::eval::evaluate(&g, &w, &input).unwrap();
            let mut model = shufflekit_jit::Model::compile(
                &g, &w, &shufflekit_jit::CompileOptions::default()).unwrap();
            let got = model.run(&input).unwrap();
            for (a, b) in got.data().iter().zip(expected.data()) {
                prop_assert_eq!(a.is_nan(), b.is_nan());
                if !b.is_nan() {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }

    #[test]
    fn elementwise_ops_match_reference(
        c in 1usize..6, h in 1usize..9, w in 1usize..13, flat: bool,
        which in 0usize..6, batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) {
        let shape = if flat { Shape::flat(c * h * w) } else { Shape::chw(c, h, w) };
        let op = match which {
            0 => Op::BatchNorm(BatchNorm::default()),
            1 => Op::Relu,
            2 => Op::Relu6,
            3 => Op::HardSigmoid,
            4 => Op::HardSwish,
            _ => Op::Sigmoid,
        };
        let g = common::single(shape, op);
        prop_assume!(g.is_ok());
        if let Ok(g) = g {
            check(&g, batch, threads, seed);
        }
    }

    #[test]
    fn add_mul_and_global_pool_match_reference(
        c in 1usize..9, h in 1usize..9, w in 1usize..13, which in 0usize..3,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) {
        let mut g = Graph::new("binary");
        let x = add(&mut g, Op::Input(Shape::chw(c, h, w)), "input", &[]).map_err(TestCaseError::fail)?;
        let r = add(&mut g, Op::Sigmoid, "sigmoid", &[x]).map_err(TestCaseError::fail)?;
        match which {
            0 => add(&mut g, Op::Add, "add", &[x, r]),
            1 => add(&mut g, Op::Mul, "mul", &[x, r]),
            _ => {
                let p = add(&mut g, Op::GlobalAvgPool, "gap", &[r]).map_err(TestCaseError::fail)?;
                add(&mut g, Op::Mul, "scale", &[x, p])
            }
        }
        .map_err(TestCaseError::fail)?;
        check(&g, batch, threads, seed);
    }

    #[test]
    fn data_movement_matches_reference(
        groups in 1usize..5, n in 1usize..6, h in 1usize..7, w in 1usize..9,
        start in 0usize..4, len in 1usize..5, order: bool, fused: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) {
        let c = groups * n;
        let mut g = Graph::new("moves");
        let x = add(&mut g, Op::Input(Shape::chw(c, h, w)), "input", &[]).map_err(TestCaseError::fail)?;
        let s = add(&mut g, Op::ChannelShuffle(ChannelShuffle { groups }), "shuffle", &[x])
            .map_err(TestCaseError::fail)?;
        let slice = add(
            &mut g,
            Op::ChannelSlice(ChannelSlice { start: start.min(c - 1), len: len.min(c - start.min(c - 1)) }),
            "slice",
            &[s],
        )
        .map_err(TestCaseError::fail)?;
        let total = c + g.node(slice).shape.channels() + c;
        let output_order = order.then(|| permutation(total, seed));
        let act = if order { Activation::Relu6 } else { Activation::Relu };
        // An activation fused into the concat's copy, or a layer of its own.
        let activation = if fused { act } else { Activation::None };
        let cat = add(&mut g, Op::Concat(Concat { output_order, activation }), "concat", &[x, slice, s])
            .map_err(TestCaseError::fail)?;
        if !fused {
            add(&mut g, act.op().expect("an activation"), "act", &[cat]).map_err(TestCaseError::fail)?;
        }
        check(&g, batch, threads, seed);
    }

    #[test]
    fn wide_linear_matches_reference(
        inputs in 1usize..1100, out in 1usize..1100, bias: bool,
        batch in 1usize..3, threads in 1usize..3, seed: u64,
    ) {
        let mut g = Graph::new("fc");
        let x = add(&mut g, Op::Input(Shape::chw(inputs, 1, 1)), "input", &[]).map_err(TestCaseError::fail)?;
        let f = add(&mut g, Op::Flatten, "flatten", &[x]).map_err(TestCaseError::fail)?;
        add(&mut g, Op::Linear(Linear { out_features: out, bias }), "fc", &[f])
            .map_err(TestCaseError::fail)?;
        check(&g, batch, threads, seed);
    }

    #[test]
    fn linear_and_softmax_match_reference(
        c in 1usize..9, h in 1usize..4, w in 1usize..5, out in 1usize..40, bias: bool,
        softmax_planes: bool, batch in 1usize..4, threads in 1usize..3, seed: u64,
    ) {
        let mut g = Graph::new("head");
        let x = add(&mut g, Op::Input(Shape::chw(c, h, w)), "input", &[]).map_err(TestCaseError::fail)?;
        if softmax_planes {
            add(&mut g, Op::Softmax, "softmax", &[x]).map_err(TestCaseError::fail)?;
        } else {
            let f = add(&mut g, Op::Flatten, "flatten", &[x]).map_err(TestCaseError::fail)?;
            let l = add(&mut g, Op::Linear(Linear { out_features: out, bias }), "fc", &[f])
                .map_err(TestCaseError::fail)?;
            add(&mut g, Op::Softmax, "softmax", &[l]).map_err(TestCaseError::fail)?;
        }
        check(&g, batch, threads, seed);
    }
}

/// A ShuffleNet unit fused by hand the way the passes fuse it: batch norm
/// folded into biases, the shuffle folded into the first convolution's
/// output order, ReLU and the residual add in the epilogues.
#[test]
fn hand_fused_shufflenet_unit_matches_reference() {
    let (c, mid, groups) = (48, 12, 3);
    let mut g = Graph::new("fused_unit");
    let x = add(&mut g, Op::Input(Shape::chw(c, 14, 14)), "input", &[]).unwrap();
    let mut pw1 = Conv2d::new(mid, 1);
    pw1.groups = groups;
    pw1.bias = true;
    pw1.activation = Activation::Relu;
    let shuffle = ChannelShuffle { groups };
    pw1.output_order = Some((0..mid).map(|k| shuffle.source_channel(k, mid)).collect());
    let a = add(&mut g, Op::Conv2d(pw1), "pw1", &[x]).unwrap();
    let mut dw = Conv2d::new(mid, 3);
    dw.padding = [1, 1];
    dw.groups = mid;
    dw.bias = true;
    let b = add(&mut g, Op::Conv2d(dw), "dw", &[a]).unwrap();
    let mut pw2 = Conv2d::new(c, 1);
    pw2.groups = groups;
    pw2.bias = true;
    pw2.residual = true;
    pw2.activation = Activation::Relu;
    add(&mut g, Op::Conv2d(pw2), "pw2", &[b, x]).unwrap();
    for threads in [1, 2] {
        check(&g, 2, threads, 7);
    }
}

/// Pointwise convolutions at the edges of the full-width kernels' blocks:
/// every pixel count around the vector and register-block sizes (1 pixel,
/// tails of 1..15 after full blocks), odd and one-channel groups, every
/// tile remainder, with residual, bias, activation and a channel order.
#[test]
fn pointwise_tails_match_reference_on_every_tier() {
    let mut case = 0u64;
    for pixels in [
        1usize, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 79, 127, 129, 1025,
    ] {
        for (groups, cin_g, cout_g) in [(1, 1, 1), (3, 1, 1), (1, 3, 7), (2, 5, 11), (3, 8, 12)] {
            case += 1;
            let conv = ConvCase {
                groups,
                cin_g,
                cout_g,
                hw: [1, pixels],
                kernel: [1, 1],
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                bias: true,
                activation: [Activation::None, Activation::Relu, Activation::Relu6]
                    [case as usize % 3],
                residual: case.is_multiple_of(2),
                order: !case.is_multiple_of(3),
                batch: 1 + (case % 2) as usize,
                threads: 1,
                seed: case,
            };
            let g = conv.graph().expect("graph");
            check(&g, conv.batch, conv.threads, conv.seed);
        }
    }
}

/// Large ungrouped pointwise convolutions (MobileNet-like) whose rows the
/// full-width tiers split into K blocks: several blocks and a shorter
/// last block, a last row of a few pixels, output channels that no tile
/// divides, with residual (in place over the output), relu6 and a channel
/// order, on 1 and 2 threads.
#[test]
fn k_blocked_pointwise_matches_reference_on_every_tier() {
    let mut case = 0u64;
    for (cin_g, cout_g, hw) in [
        (256, 64, [28, 28]),
        (600, 37, [20, 23]),
        (1030, 13, [12, 40]),
        (530, 70, [9, 60]),
        (1400, 9, [8, 60]),
    ] {
        for (residual, activation, order) in [
            (false, Activation::Relu, false),
            (true, Activation::Relu6, true),
            (true, Activation::None, false),
        ] {
            case += 1;
            let conv = ConvCase {
                groups: 1,
                cin_g,
                cout_g,
                hw,
                kernel: [1, 1],
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                bias: true,
                activation,
                residual,
                order,
                batch: 1,
                threads: 1 + (case % 2) as usize,
                seed: case,
            };
            let g = conv.graph().expect("graph");
            check(&g, conv.batch, conv.threads, conv.seed);
        }
    }
}

/// Window convolutions at the edges of the full-width kernels' blocks:
/// row widths around the vector and register-block sizes (8, 16, 32, 64
/// pixels), both horizontal strides the wide kernels take and one they do
/// not, every padding up to 2, 3x3 and 5x5, depthwise and stem-like,
/// with residual, activation and a channel order in turn.
#[test]
fn window_tails_match_reference_on_every_tier() {
    let mut case = 0u64;
    for w in [1usize, 2, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 129] {
        for stride in [1usize, 2, 3] {
            for (k, pad) in [(3usize, 0usize), (3, 1), (3, 2), (5, 2)] {
                for (groups, cin_g, cout_g) in [(5, 1, 1), (1, 3, 7)] {
                    case += 1;
                    let conv = ConvCase {
                        groups,
                        cin_g,
                        cout_g,
                        hw: [4, w],
                        kernel: [k, k],
                        stride: [stride, stride],
                        padding: [pad, pad],
                        dilation: [1, 1 + (case % 2) as usize],
                        bias: true,
                        activation: [Activation::None, Activation::Relu, Activation::Relu6]
                            [case as usize % 3],
                        residual: case.is_multiple_of(2),
                        order: !case.is_multiple_of(3),
                        batch: 1,
                        threads: 1,
                        seed: case,
                    };
                    // Windows larger than the padded row have no output.
                    if let Ok(g) = conv.graph() {
                        check(&g, conv.batch, conv.threads, conv.seed);
                    }
                }
            }
        }
    }
}
