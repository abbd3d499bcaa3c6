//! Golden tests, one pass per test: `tests/golden/<pass>.yaml` is run
//! through that pass alone and the result (graph text and the pass's notes)
//! compared with `tests/golden/<pass>.out`. Run with `SHUFFLEKIT_BLESS=1` to
//! rewrite the `.out` files after an intended change, then review the diff.

use std::path::Path;

use shufflekit_ir::eval::evaluate;
use shufflekit_ir::input::random_input;
use shufflekit_ir::text::{self, DumpOptions};
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_passes::{run, select_pipeline, Module, RunOptions};

fn golden(pass: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let spec_path = dir.join(format!("{pass}.yaml"));
    let graph = shufflekit_spec::load(&spec_path, &[]).unwrap_or_else(|e| panic!("{e}"));
    let weights = Weights::init(
        &graph,
        &InitOptions {
            seed: 3,
            randomize_batch_norm: true,
        },
    );
    let mut module = Module::with_weights(graph.clone(), weights.clone());
    let passes = select_pipeline(Some(&[pass.to_string()]), &[]).expect("known pass");
    let report =
        run(&mut module, &passes, &RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut actual =
        format!("# {pass}.yaml through the pass `{pass}` alone (passes/tests/golden.rs)\n");
    actual += &text::dump(&module.graph, DumpOptions::default());
    for note in &report.passes[0].log.notes {
        actual += &format!("note: {note}\n");
    }
    actual += &format!("changes: {}\n", report.passes[0].log.changes);

    // The rewritten graph computes the same values.
    let shape = graph.node(graph.input_nodes()[0]).shape.clone();
    let input = random_input(&shape, 2, 5).expect("input");
    let before = evaluate(&graph, &weights, &input).unwrap_or_else(|e| panic!("{e}"));
    let after = evaluate(
        &module.graph,
        module.weights.as_ref().expect("weights"),
        &input,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let diff = before.max_abs_diff(&after).expect("same shape") / before.max_abs().max(1e-6);
    assert!(diff <= 1e-5, "{pass}: relative difference {diff}");

    let out = dir.join(format!("{pass}.out"));
    if std::env::var_os("SHUFFLEKIT_BLESS").is_some() {
        std::fs::write(&out, &actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs (rerun with SHUFFLEKIT_BLESS=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        out.display()
    );
}

#[test]
fn fold_batch_norm() {
    golden("fold-batch-norm");
}

#[test]
fn fold_channel_shuffle() {
    golden("fold-channel-shuffle");
}

#[test]
fn fuse_copy_activation() {
    golden("fuse-copy-activation");
}

#[test]
fn fuse_epilogue() {
    golden("fuse-epilogue");
}

#[test]
fn simplify() {
    golden("simplify");
}
