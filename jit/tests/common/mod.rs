//! Helpers of the differential tests: build small graphs, run them through
//! the JIT and the reference evaluator, compare.
#![allow(dead_code)]

use shufflekit_ir::eval;
use shufflekit_ir::input::random_input;
use shufflekit_ir::ops::Op;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, NodeId, Shape};
use shufflekit_jit::{CompileOptions, Isa, Model};

/// The tolerance of every comparison: relative to the largest magnitude of
/// the reference output.
pub const TOLERANCE: f32 = 1e-4;

/// Random weights with random batch-norm statistics and biases.
pub fn weights(graph: &Graph, seed: u64) -> Weights {
    Weights::init(
        graph,
        &InitOptions {
            seed,
            randomize_batch_norm: true,
        },
    )
}

/// A graph `input -> op` (the op's extra inputs are built by `extra`).
pub fn single(input: Shape, op: Op) -> Result<Graph, String> {
    let mut g = Graph::new("single");
    let x = g
        .add(Op::Input(input), "input", &[], None)
        .map_err(|e| e.to_string())?;
    g.add(op, "op", &[x], None).map_err(|e| e.to_string())?;
    Ok(g)
}

/// Adds a node, mapping the error to a string (proptest rejects on it).
pub fn add(g: &mut Graph, op: Op, name: &str, inputs: &[NodeId]) -> Result<NodeId, String> {
    g.add(op, name, inputs, None).map_err(|e| e.to_string())
}

/// The vector tiers every differential test runs on: all the host has.
pub fn tiers() -> Vec<Isa> {
    Isa::host_tiers()
}

/// Runs `graph` on a random batch through the JIT (with `threads`, on
/// every tier of [`tiers`]) and the evaluator; returns each tier's output
/// and the reference.
pub fn run_both(
    graph: &Graph,
    weights: &Weights,
    batch: usize,
    threads: usize,
    seed: u64,
) -> (Vec<(Isa, Tensor)>, Tensor) {
    let input_shape = graph.node(graph.input_nodes()[0]).shape.clone();
    let input = random_input(&input_shape, batch, seed).expect("input");
    let reference = eval::evaluate(graph, weights, &input).expect("reference evaluation");
    let outs = tiers()
        .into_iter()
        .map(|isa| {
            let options = CompileOptions {
                threads,
                isa: Some(isa),
                ..CompileOptions::default()
            };
            let mut model = Model::compile(graph, weights, &options).expect("compile");
            (isa, model.run(&input).expect("run"))
        })
        .collect();
    (outs, reference)
}

/// Checks every tier's output of [`run_both`].
pub fn assert_tiers_close(got: &[(Isa, Tensor)], expected: &Tensor, what: &str) {
    for (isa, out) in got {
        assert_close(out, expected, &format!("{what} (isa {isa})"));
    }
}

/// Checks `got` against `expected` within [`TOLERANCE`], relative to the
/// reference's largest magnitude.
pub fn assert_close(got: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(got.shape(), expected.shape(), "{what}: shapes differ");
    let scale = expected.max_abs().max(1e-6);
    let diff = got.max_abs_diff(expected).unwrap_or(f32::NAN);
    let within = |d: f32| {
        d.partial_cmp(&(TOLERANCE * scale))
            .is_some_and(|o| o.is_le())
    };
    if !within(diff) {
        let at = got
            .data()
            .iter()
            .zip(expected.data())
            .position(|(a, b)| !within((a - b).abs()))
            .unwrap_or(0);
        panic!(
            "{what}: max abs diff {diff} > {TOLERANCE} x {scale}; first at index {at}: jit {} vs reference {}",
            got.data()[at],
            expected.data()[at]
        );
    }
}

/// Compiles and compares one graph.
pub fn check(graph: &Graph, batch: usize, threads: usize, seed: u64) {
    let w = weights(graph, seed);
    let (got, expected) = run_both(graph, &w, batch, threads, seed);
    assert_tiers_close(&got, &expected, &graph.name);
}
