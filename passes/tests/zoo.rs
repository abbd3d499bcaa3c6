//! Every zoo spec through the compiler passes: the optimised graph computes
//! what the original computes (bit-exact for the shuffle fold alone, within
//! 1e-5 relative for the whole pipeline), ShuffleNet graphs lose every
//! shuffle and batch norm, and the memory plan never overlaps live tensors.

use std::path::{Path, PathBuf};

use shufflekit_ir::eval::evaluate;
use shufflekit_ir::input::random_input;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, Op};
use shufflekit_passes::{default_pipeline, memory, run, select_pipeline, Module, RunOptions};

fn zoo() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("specs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn load(path: &Path, sets: &[(&str, &str)]) -> Graph {
    let o: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    shufflekit_spec::load(path, &o).unwrap_or_else(|e| panic!("{e}"))
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.max_abs_diff(b).expect("same shape") / a.max_abs().max(1e-6)
}

fn optimise(graph: &Graph, weights: &Weights, passes: &[String]) -> Module {
    let mut m = Module::with_weights(graph.clone(), weights.clone());
    let pipeline = if passes.is_empty() {
        default_pipeline()
    } else {
        select_pipeline(Some(passes), &[]).expect("known passes")
    };
    run(&mut m, &pipeline, &RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    m
}

#[test]
fn every_zoo_spec_computes_the_same_after_the_pipeline() {
    for path in zoo() {
        let graph = load(&path, &[("resolution", "64"), ("classes", "10")]);
        let weights = Weights::init(
            &graph,
            &InitOptions {
                seed: 7,
                randomize_batch_norm: true,
            },
        );
        let shape = graph.node(graph.input_nodes()[0]).shape.clone();
        let input = random_input(&shape, 2, 11).expect("input");
        let expected = evaluate(&graph, &weights, &input).unwrap_or_else(|e| panic!("{e}"));
        let m = optimise(&graph, &weights, &[]);
        let weights_after = m.weights.as_ref().expect("weights kept");
        weights_after
            .check(&m.graph)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = evaluate(&m.graph, weights_after, &input).unwrap_or_else(|e| panic!("{e}"));
        let d = rel_diff(&expected, &got);
        assert!(d <= 1e-5, "{}: relative difference {d}", path.display());
        // The shuffle fold alone moves data, never changes arithmetic: bit-exact.
        let m = optimise(&graph, &weights, &["fold-channel-shuffle".to_string()]);
        let got = evaluate(&m.graph, m.weights.as_ref().expect("weights"), &input)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            expected.data(),
            got.data(),
            "{}: shuffle fold is not bit-exact",
            path.display()
        );
    }
}

#[test]
fn shufflenet_graphs_lose_every_shuffle_and_batch_norm() {
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    let v2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v2.yaml");
    let mut cases: Vec<Graph> = ["1", "2", "3", "4", "8"]
        .iter()
        .map(|g| load(&v1, &[("groups", g)]))
        .collect();
    cases.push(load(&v1, &[("groups", "8"), ("width", "0.5")]));
    cases.push(load(&v2, &[]));
    cases.push(load(&v2, &[("width", "0.5")]));
    for graph in cases {
        let mut m = Module::graph_only(graph);
        let report = run(&mut m, &default_pipeline(), &RunOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let left: Vec<String> = m
            .graph
            .nodes()
            .filter(|&n| matches!(m.graph.node(n).op, Op::ChannelShuffle(_) | Op::BatchNorm(_)))
            .map(|n| m.graph.node(n).name.clone())
            .collect();
        assert!(
            left.is_empty(),
            "{}: left {left:?}; notes {:?}",
            m.graph.name,
            report.passes
        );
        // No data-movement op took the shuffles' place: the only slices and
        // concats are those the spec had.
        let moves = |g: &Graph| {
            g.nodes()
                .filter(|&n| matches!(g.node(n).op, Op::ChannelSlice(_) | Op::Concat(_)))
                .count()
        };
        assert!(
            moves(&m.graph) <= moves(&load_again(&m.graph.name)),
            "{}",
            m.graph.name
        );
    }
}

fn load_again(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../specs/{name}.yaml"));
    load(&path, &[])
}

#[test]
fn memory_plans_never_overlap_live_tensors() {
    for path in zoo() {
        let graph = load(&path, &[]);
        for g in [graph.clone(), {
            let mut m = Module::graph_only(graph);
            run(&mut m, &default_pipeline(), &RunOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            m.graph
        }] {
            let plan = memory::plan(&g);
            plan.check(&g)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(plan.arena_bytes >= plan.lower_bound_bytes);
            assert!(plan.arena_bytes < plan.total_bytes, "{}", path.display());
        }
    }
}

#[test]
fn shufflenet_1x_g3_arena_is_within_10_percent_of_the_lower_bound() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    let mut m = Module::graph_only(load(&path, &[]));
    run(&mut m, &default_pipeline(), &RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let plan = memory::plan(&m.graph);
    println!(
        "arena {} bytes, lower bound {} bytes, sum of activations {} bytes",
        plan.arena_bytes, plan.lower_bound_bytes, plan.total_bytes
    );
    assert!(plan.arena_bytes as f64 <= 1.1 * plan.lower_bound_bytes as f64);
    assert!(plan.arena_bytes * 4 < plan.total_bytes);
}

/// ShuffleNet v1's down-sampling units concatenate the shortcut's pool and
/// the branch's last convolution: both are written straight into the
/// concat's buffer, and the plan still checks.
#[test]
fn shufflenet_v1_concats_are_zero_copy() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    let mut m = Module::graph_only(load(&path, &[("groups", "3")]));
    run(&mut m, &default_pipeline(), &RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let g = &m.graph;
    let plan = memory::plan(g);
    plan.check(g).expect("the plan checks");
    let concats: Vec<_> = g
        .nodes()
        .filter(|&n| matches!(g.node(n).op, Op::Concat(_)))
        .collect();
    assert_eq!(concats.len(), 3, "one per stage");
    for c in concats {
        for i in g.inputs(c) {
            let b = plan.buffer(i).expect("planned");
            assert_eq!(
                (b.sharing, b.shares),
                (Some(memory::Sharing::IntoConcat), Some(c)),
                "`{}` into `{}`",
                g.node(i).name,
                g.node(c).name
            );
        }
    }
}
