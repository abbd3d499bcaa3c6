//! Differential test of the reference evaluator against an independent
//! numpy implementation of whole networks (`tests/oracle/numpy_reference.py`),
//! written from the architecture descriptions and sharing only the tensor
//! names with our specs.
//!
//! Each case writes weights with random batch-norm statistics and a random
//! batch of two images, runs the script in the pinned Python environment
//! `scripts/test` makes (`$PYTHON`), and compares logits within 1e-4
//! relative (max abs diff / max abs value).
//! Without that environment the tests fail, naming `scripts/test`.

use std::path::Path;

use shufflekit_ir::eval;
use shufflekit_ir::input::{random_input, read_npy, write_npy};
use shufflekit_ir::weights::{InitOptions, Weights};

/// The largest accepted `max |ours - numpy| / max |numpy|`.
const TOLERANCE: f32 = 1e-4;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds `spec` with `overrides`, evaluates it and the oracle on the same
/// weights and input, and returns the relative difference.
fn compare(case: &str, spec_file: &str, overrides: &[(&str, &str)], oracle: &[&str]) -> f32 {
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let graph = shufflekit_spec::load(&root().join("specs").join(spec_file), &overrides)
        .unwrap_or_else(|e| panic!("{spec_file}: {e}"));
    let weights = Weights::init(
        &graph,
        &InitOptions {
            seed: 11,
            randomize_batch_norm: true,
        },
    );
    let input_shape = &graph.node(graph.input_nodes()[0]).shape;
    let x = random_input(input_shape, 2, 5).unwrap();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oracle-{case}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (w_path, x_path, y_path) = (
        dir.join("w.safetensors"),
        dir.join("x.npy"),
        dir.join("y.npy"),
    );
    weights.save(&w_path).unwrap();
    write_npy(&x_path, &x).unwrap();
    let _ = std::fs::remove_file(&y_path);

    let script = root().join("tests/oracle/numpy_reference.py");
    let mut args: Vec<&std::ffi::OsStr> = oracle.iter().map(std::ffi::OsStr::new).collect();
    args.extend([
        "--weights".as_ref(),
        w_path.as_os_str(),
        "--input".as_ref(),
        x_path.as_os_str(),
        "--output".as_ref(),
        y_path.as_os_str(),
    ]);
    shufflekit_test_support::run_script(&["numpy"], &script, &args);
    let expected = read_npy(&y_path).unwrap();
    let got = eval::evaluate(&graph, &weights, &x).unwrap();
    assert_eq!(
        got.shape(),
        expected.shape(),
        "{case}: output shapes differ"
    );
    let scale = expected.max_abs();
    assert!(scale > 0.0, "{case}: the oracle's logits are all zero");
    let diff = got.max_abs_diff(&expected).expect("same shapes");
    let rel = diff / scale;
    eprintln!("{case}: max abs diff {diff:e}, max abs value {scale:e}, relative {rel:e}");
    assert!(
        rel < TOLERANCE,
        "{case}: relative difference {rel:e} exceeds {TOLERANCE:e}"
    );
    rel
}

#[test]
fn shufflenet_v1_g3_matches_numpy() {
    compare(
        "shufflenet_v1_g3",
        "shufflenet_v1.yaml",
        &[
            ("groups", "3"),
            ("width", "0.5"),
            ("resolution", "64"),
            ("classes", "10"),
        ],
        &[
            "shufflenet_v1",
            "--groups",
            "3",
            "--width",
            "0.5",
            "--classes",
            "10",
        ],
    );
}

#[test]
fn shufflenet_v1_g8_matches_numpy() {
    compare(
        "shufflenet_v1_g8",
        "shufflenet_v1.yaml",
        &[
            ("groups", "8"),
            ("width", "0.5"),
            ("resolution", "64"),
            ("classes", "10"),
        ],
        &[
            "shufflenet_v1",
            "--groups",
            "8",
            "--width",
            "0.5",
            "--classes",
            "10",
        ],
    );
}

#[test]
fn shufflenet_v2_matches_numpy() {
    compare(
        "shufflenet_v2",
        "shufflenet_v2.yaml",
        &[("width", "0.5"), ("resolution", "64"), ("classes", "10")],
        &["shufflenet_v2", "--width", "0.5", "--classes", "10"],
    );
}

#[test]
fn mobilenet_v1_matches_numpy() {
    compare(
        "mobilenet_v1",
        "mobilenet_v1.yaml",
        &[("width", "0.5"), ("resolution", "64"), ("classes", "10")],
        &["mobilenet_v1", "--width", "0.5", "--classes", "10"],
    );
}
