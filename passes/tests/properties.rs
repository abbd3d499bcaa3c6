//! Property tests over random valid graphs with groups, shuffles, concats,
//! splits and residual adds: every pass, alone and in the pipeline, keeps
//! the graph valid (the driver verifies after each pass), the output shape
//! equal and the numbers equal (within 1e-5 relative), and the memory plan
//! of every result keeps live tensors apart.

use proptest::prelude::*;
use shufflekit_ir::eval::evaluate;
use shufflekit_ir::input::random_input;
use shufflekit_ir::ops::{BatchNorm, ChannelShuffle, ChannelSlice, Concat, Conv2d, Linear, Pool};
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, NodeId, Op, Shape};
use shufflekit_passes::{
    default_pipeline, memory, pass_names, run, select_pipeline, Module, RunOptions,
};

/// Builds a random valid graph from a list of choices.
fn build(channels: usize, size: usize, choices: &[u8]) -> Graph {
    let mut g = Graph::new("random");
    let mut cur = g
        .add(
            Op::Input(Shape::chw(channels, size, size)),
            "input",
            &[],
            None,
        )
        .expect("input");
    let mut seen: Vec<NodeId> = vec![cur];
    let mut k = 0;
    let mut add = |g: &mut Graph, op: Op, inputs: &[NodeId]| -> Option<NodeId> {
        k += 1;
        g.add(op, format!("n{k}"), inputs, None).ok()
    };
    for pair in choices.chunks(2) {
        let (what, arg) = (pair[0] % 11, pair.get(1).copied().unwrap_or(0) as usize);
        let shape = g.node(cur).shape.clone();
        let c = shape.channels();
        let divisors: Vec<usize> = (1..=c)
            .filter(|d| c.is_multiple_of(*d) && *d <= 8)
            .collect();
        let groups = divisors[arg % divisors.len()];
        let next = match what {
            0 => {
                let mut conv = Conv2d::new(groups * (1 + arg % 3) * 2, 1);
                conv.groups = groups;
                add(&mut g, Op::Conv2d(conv), &[cur])
            }
            1 => {
                let mut conv = Conv2d::new(c, 3);
                conv.groups = c;
                conv.padding = [1, 1];
                conv.bias = arg % 2 == 0;
                add(&mut g, Op::Conv2d(conv), &[cur])
            }
            2 => add(&mut g, Op::BatchNorm(BatchNorm::default()), &[cur]),
            3 => add(
                &mut g,
                if arg % 2 == 0 { Op::Relu } else { Op::Relu6 },
                &[cur],
            ),
            4 if groups > 1 => add(
                &mut g,
                Op::ChannelShuffle(ChannelShuffle { groups }),
                &[cur],
            ),
            5 => {
                // Concat with an earlier tensor of the same spatial size.
                let other = seen
                    .iter()
                    .rev()
                    .copied()
                    .find(|&s| g.node(s).shape.dims()[1..] == shape.dims()[1..]);
                other.and_then(|o| add(&mut g, Op::Concat(Concat::default()), &[o, cur]))
            }
            6 => {
                // Residual add with an earlier tensor of the same shape.
                let other = seen
                    .iter()
                    .rev()
                    .skip(1)
                    .copied()
                    .find(|&s| g.node(s).shape == shape);
                other.and_then(|o| add(&mut g, Op::Add, &[o, cur]))
            }
            7 if c >= 2 => {
                // Split: two slices, one of which goes on (the other may be concatenated back later).
                let half = c / 2;
                let a = add(
                    &mut g,
                    Op::ChannelSlice(ChannelSlice {
                        start: 0,
                        len: half,
                    }),
                    &[cur],
                );
                let b = add(
                    &mut g,
                    Op::ChannelSlice(ChannelSlice {
                        start: half,
                        len: c - half,
                    }),
                    &[cur],
                );
                if let Some(a) = a {
                    seen.push(a);
                }
                b
            }
            8 => {
                let mut conv = Conv2d::new(c, 1);
                conv.bias = true;
                add(&mut g, Op::Conv2d(conv), &[cur])
            }
            9 if shape.dims()[1] >= 4 => {
                let mut p = Pool::new(3);
                p.stride = [2, 2];
                p.padding = [1, 1];
                add(&mut g, Op::AvgPool(p), &[cur])
            }
            10 => add(&mut g, Op::Sigmoid, &[cur]),
            _ => None,
        };
        if let Some(n) = next {
            cur = n;
            seen.push(n);
        }
    }
    let pooled = g.add(Op::GlobalAvgPool, "gap", &[cur], None).expect("gap");
    let flat = g
        .add(Op::Flatten, "flatten", &[pooled], None)
        .expect("flatten");
    g.add(
        Op::Linear(Linear {
            out_features: 5,
            bias: true,
        }),
        "fc",
        &[flat],
        None,
    )
    .expect("fc");
    g
}

fn check(graph: Graph, seed: u64) -> Result<(), TestCaseError> {
    let weights = Weights::init(
        &graph,
        &InitOptions {
            seed,
            randomize_batch_norm: true,
        },
    );
    let shape = graph.node(graph.input_nodes()[0]).shape.clone();
    let input = random_input(&shape, 2, seed).expect("input");
    let expected = evaluate(&graph, &weights, &input).expect("evaluates");
    let mut pipelines: Vec<Vec<String>> = pass_names()
        .into_iter()
        .map(|p| vec![p.to_string()])
        .collect();
    pipelines.push(
        default_pipeline()
            .iter()
            .map(|p| p.name().to_string())
            .collect(),
    );
    for names in pipelines {
        let mut m = Module::with_weights(graph.clone(), weights.clone());
        let passes = select_pipeline(Some(&names), &[]).expect("known passes");
        let r = run(&mut m, &passes, &RunOptions::default());
        prop_assert!(
            r.is_ok(),
            "{names:?}: {}",
            r.err().map(|e| e.to_string()).unwrap_or_default()
        );
        let w = m.weights.as_ref().expect("weights");
        prop_assert!(
            w.check(&m.graph).is_ok(),
            "{names:?}: weights no longer match the graph"
        );
        let got = evaluate(&m.graph, w, &input).expect("optimised graph evaluates");
        prop_assert_eq!(got.shape(), expected.shape());
        let diff = expected.max_abs_diff(&got).expect("same shape") / expected.max_abs().max(1e-6);
        prop_assert!(diff <= 1e-5, "{names:?}: relative difference {diff}");
        let plan = memory::plan(&m.graph);
        prop_assert!(
            plan.check(&m.graph).is_ok(),
            "{names:?}: {:?}",
            plan.check(&m.graph)
        );
        // Consumers that take fewer sharings, or want other alignments.
        let restricted = [
            memory::Options {
                align: 256,
                allows: |_, _, _| false,
            },
            memory::Options {
                align: 4,
                allows: |_, _, sharing| sharing != memory::Sharing::View,
            },
        ];
        for options in restricted {
            let plan = memory::plan_with(&m.graph, &options);
            prop_assert!(
                plan.check(&m.graph).is_ok(),
                "{names:?}, align {}: {:?}",
                options.align,
                plan.check(&m.graph)
            );
            for b in &plan.buffers {
                prop_assert_eq!(b.offset % options.align, 0);
                if let Some(sharing) = b.sharing {
                    prop_assert!((options.allows)(&m.graph, b.node, sharing));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn every_pass_keeps_graphs_valid_and_numbers_equal(
        channels in prop::sample::select(vec![4usize, 6, 8, 12]),
        size in 5usize..9,
        choices in prop::collection::vec(any::<u8>(), 4..40),
        seed in any::<u64>(),
    ) {
        check(build(channels, size, &choices), seed)?;
    }
}

#[test]
fn unknown_pass_names_are_refused_with_the_valid_ones() {
    let e = select_pipeline(Some(&["fold-bn".to_string()]), &[])
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(text.contains("unknown pass `fold-bn`"), "{text}");
    assert!(text.contains("fold-batch-norm"), "{text}");
    assert!(select_pipeline(None, &["nope".to_string()]).is_err());
    let skipped = select_pipeline(None, &["simplify".to_string()]).expect("valid");
    assert!(skipped.iter().all(|p| p.name() != "simplify"));
}
