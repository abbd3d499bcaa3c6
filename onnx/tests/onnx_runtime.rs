//! Differential tests against ONNX Runtime, round trips and import of an
//! independently built model.
//!
//! Python with `onnx`, `onnxruntime` and `numpy` is required: the pinned
//! environment `scripts/test` makes (`$PYTHON`); without it these tests
//! fail, they do not skip. The
//! scripts in `tests/python/` are the Python side: `ort_run.py` checks a
//! model with `onnx.checker` and runs it in ONNX Runtime;
//! `make_shufflenet_v2.py` builds a ShuffleNet v2 with `onnx.helper` the way
//! PyTorch exports torchvision's.

use std::path::{Path, PathBuf};

use shufflekit_ir::cost::{self, Convention};
use shufflekit_ir::input::{random_input, read_npy, write_npy};
use shufflekit_ir::ops::Activation;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{eval, Graph, Op};

/// The largest accepted `max |ours - theirs| / max |theirs|`.
const TOLERANCE: f32 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the onnx crate lives in the workspace")
        .to_path_buf()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// The Python modules these tests use (from the environment `scripts/test`
/// makes).
const MODULES: &[&str] = &["numpy", "onnx", "onnxruntime"];

fn run_python(args: &[&std::ffi::OsStr]) {
    let (script, rest) = args.split_first().expect("a script to run");
    shufflekit_test_support::run_script(MODULES, Path::new(script), rest);
}

fn temp_dir(case: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("onnx-{case}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `model` in ONNX Runtime (after `onnx.checker`) on `x`.
fn onnx_runtime(case: &str, model: &Path, x: &Tensor) -> Tensor {
    let dir = temp_dir(case);
    let (x_path, y_path) = (dir.join("x.npy"), dir.join("y.npy"));
    write_npy(&x_path, x).unwrap();
    let _ = std::fs::remove_file(&y_path);
    let ort_run = script("ort_run.py");
    run_python(&[
        ort_run.as_os_str(),
        model.as_os_str(),
        x_path.as_os_str(),
        y_path.as_os_str(),
    ]);
    read_npy(&y_path).unwrap()
}

fn relative(got: &Tensor, expected: &Tensor, case: &str) -> f32 {
    assert_eq!(
        got.shape(),
        expected.shape(),
        "{case}: output shapes differ"
    );
    let scale = expected.max_abs();
    assert!(scale > 0.0, "{case}: the outputs are all zero");
    got.max_abs_diff(expected).expect("same shapes") / scale
}

/// A test case: name, spec file, parameter overrides.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The zoo at reduced size (resolution 64, 10 classes).
const ZOO: &[Case] = &[
    (
        "shufflenet_v1_g3",
        "shufflenet_v1.yaml",
        &[("groups", "3"), ("resolution", "64"), ("classes", "10")],
    ),
    (
        "shufflenet_v1_g8_half",
        "shufflenet_v1.yaml",
        &[
            ("groups", "8"),
            ("width", "0.5"),
            ("resolution", "64"),
            ("classes", "10"),
        ],
    ),
    (
        "shufflenet_v2",
        "shufflenet_v2.yaml",
        &[("resolution", "64"), ("classes", "10")],
    ),
    (
        "mobilenet_v1",
        "mobilenet_v1.yaml",
        &[("resolution", "64"), ("classes", "10")],
    ),
    (
        "mobilenet_v3_small",
        "mobilenet_v3.yaml",
        &[("resolution", "64"), ("classes", "10")],
    ),
    (
        "mobilenet_v3_large",
        "mobilenet_v3.yaml",
        &[("large", "true"), ("resolution", "64"), ("classes", "10")],
    ),
    (
        "resnet_bottleneck",
        "resnet_bottleneck.yaml",
        &[("resolution", "64"), ("classes", "10")],
    ),
    (
        "resnext",
        "resnext.yaml",
        &[("resolution", "64"), ("classes", "10")],
    ),
    (
        "vgg_like",
        "vgg_like.yaml",
        &[("resolution", "64"), ("classes", "10")],
    ),
    (
        "xception_like",
        "xception_like.yaml",
        &[("resolution", "64"), ("classes", "10")],
    ),
];

fn load(spec_file: &str, overrides: &[(&str, &str)]) -> Graph {
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    shufflekit_spec::load(&root().join("specs").join(spec_file), &overrides)
        .unwrap_or_else(|e| panic!("{spec_file}: {e}"))
}

fn random_weights(graph: &Graph) -> Weights {
    Weights::init(
        graph,
        &InitOptions {
            seed: 7,
            randomize_batch_norm: true,
        },
    )
}

fn input_for(graph: &Graph, batch: usize) -> Tensor {
    random_input(&graph.node(graph.input_nodes()[0]).shape, batch, 3).unwrap()
}

/// Exports `graph`, checks it and runs it in ONNX Runtime, and compares
/// with the reference evaluator.
fn export_matches_onnx_runtime(case: &str, graph: &Graph, batch: usize) -> f32 {
    let weights = random_weights(graph);
    let bytes = shufflekit_onnx::export(graph, &weights).unwrap();
    let model = temp_dir(case).join("model.onnx");
    std::fs::write(&model, bytes).unwrap();
    let x = input_for(graph, batch);
    let theirs = onnx_runtime(case, &model, &x);
    let ours = eval::evaluate(graph, &weights, &x).unwrap();
    let rel = relative(&ours, &theirs, case);
    eprintln!("{case}: max relative difference vs ONNX Runtime {rel:e}");
    assert!(rel < TOLERANCE, "{case}: {rel:e} exceeds {TOLERANCE:e}");
    rel
}

#[test]
fn every_zoo_spec_exports_and_matches_onnx_runtime() {
    for (case, file, overrides) in ZOO {
        export_matches_onnx_runtime(case, &load(file, overrides), 2);
    }
}

#[test]
fn shufflenet_v1_g3_at_its_defaults_matches_onnx_runtime() {
    let graph = load("shufflenet_v1.yaml", &[]);
    export_matches_onnx_runtime("shufflenet_v1_g3_224", &graph, 1);
}

#[test]
fn round_trip_keeps_the_graph() {
    for (case, file, overrides) in ZOO {
        let graph = load(file, overrides);
        let weights = random_weights(&graph);
        let bytes = shufflekit_onnx::export(&graph, &weights).unwrap();
        let imported = shufflekit_onnx::import(&bytes).unwrap_or_else(|e| panic!("{case}: {e}"));
        let back = shufflekit_spec::load_str(&imported.spec, "imported.yaml", &[])
            .unwrap_or_else(|e| panic!("{case}: {e}\n{}", imported.spec));
        let (a, b) = (
            cost::count(&graph, Convention::Macs),
            cost::count(&back, Convention::Macs),
        );
        assert_eq!(a.macs, b.macs, "{case}: MACs differ");
        assert_eq!(a.params, b.params, "{case}: params differ");
        assert_eq!(a.buffers, b.buffers, "{case}: buffers differ");
        assert_eq!(graph.len(), back.len(), "{case}: layer counts differ");
        let kinds = |g: &Graph| g.nodes().map(|n| g.node(n).op.clone()).collect::<Vec<_>>();
        assert_eq!(kinds(&graph), kinds(&back), "{case}: ops differ");
        let x = input_for(&graph, 2);
        let y1 = eval::evaluate(&graph, &weights, &x).unwrap();
        let y2 = eval::evaluate(&back, &imported.weights, &x).unwrap();
        assert_eq!(y1, y2, "{case}: outputs differ");
    }
}

/// Imports the Python-built ShuffleNet v2, runs it with the JIT (and the
/// reference evaluator) and compares with ONNX Runtime on the same file.
fn import_python_shufflenet_v2(case: &str, extra: &[&str]) {
    let dir = temp_dir(case);
    let model = dir.join("shufflenet_v2.onnx");
    let script_path = script("make_shufflenet_v2.py");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        script_path.as_os_str(),
        model.as_os_str(),
        "--resolution".as_ref(),
        "64".as_ref(),
        "--classes".as_ref(),
        "10".as_ref(),
    ];
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    run_python(&args);

    let imported = shufflekit_onnx::import_file(&model).unwrap_or_else(|e| panic!("{e}"));
    let graph = shufflekit_spec::load_str(&imported.spec, "imported.yaml", &[])
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.spec));
    // The channel shuffles were recognised, not rejected or left as reshapes.
    let shuffles = graph
        .nodes()
        .filter(|&n| graph.node(n).op.kind() == "channel_shuffle")
        .count();
    assert_eq!(shuffles, 16, "one channel shuffle per unit");
    if !extra.contains(&"--fold-bn") {
        let ours = load(
            "shufflenet_v2.yaml",
            &[("resolution", "64"), ("classes", "10")],
        );
        let (a, b) = (
            cost::count(&graph, Convention::Macs),
            cost::count(&ours, Convention::Macs),
        );
        assert_eq!(
            (a.macs, a.params),
            (b.macs, b.params),
            "the same MACs and parameters as our ShuffleNet v2 spec"
        );
    }

    let x = input_for(&graph, 2);
    let theirs = onnx_runtime(case, &model, &x);
    let mut jit = shufflekit_jit::Model::compile(
        &graph,
        &imported.weights,
        &shufflekit_jit::CompileOptions::default(),
    )
    .unwrap();
    let ours = jit.run(&x).unwrap();
    let rel = relative(&ours, &theirs, case);
    eprintln!("{case}: JIT vs ONNX Runtime, max relative difference {rel:e}");
    assert!(rel < TOLERANCE, "{case}: {rel:e} exceeds {TOLERANCE:e}");
    let reference = eval::evaluate(&graph, &imported.weights, &x).unwrap();
    let rel = relative(&reference, &theirs, case);
    eprintln!("{case}: reference evaluator vs ONNX Runtime, max relative difference {rel:e}");
    assert!(rel < TOLERANCE, "{case}: {rel:e} exceeds {TOLERANCE:e}");
}

#[test]
fn pytorch_style_shufflenet_v2_imports_and_matches_onnx_runtime() {
    import_python_shufflenet_v2("pytorch_v2", &[]);
}

#[test]
fn pytorch_style_shufflenet_v2_with_folded_batch_norm_and_mean_head_imports() {
    import_python_shufflenet_v2("pytorch_v2_folded", &["--fold-bn", "--mean-head"]);
}

#[test]
fn a_corrupt_file_is_an_error_naming_the_file() {
    let graph = load(
        "shufflenet_v2.yaml",
        &[("resolution", "64"), ("classes", "10")],
    );
    let bytes = shufflekit_onnx::export(&graph, &random_weights(&graph)).unwrap();
    let dir = temp_dir("corrupt");
    let truncated = dir.join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = shufflekit_onnx::import_file(&truncated)
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated.onnx"), "{e}");
    assert!(e.contains("not a valid ONNX model"), "{e}");
    assert!(e.contains("truncated"), "{e}");

    let png = dir.join("picture.onnx");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let e = shufflekit_onnx::import_file(&png).unwrap_err().to_string();
    assert!(e.starts_with(&format!("`{}`: ", png.display())), "{e}");

    let missing = dir.join("missing.onnx");
    let e = shufflekit_onnx::import_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read `") && e.contains("missing.onnx"),
        "{e}"
    );
}

/// Every op and option the exporter writes, in one small network: dilated
/// and non-square convolutions with bias, relu6, sigmoid, a
/// squeeze-excitation `mul`, pools with `ceil_mode` and
/// `count_include_pad: false`, slices, concat, shuffle, softmax.
const EVERY_OP: &str = "
name: every_op
input: [6, 13, 11]
layers:
  - conv: {name: c1, out: 12, kernel: [3, 1], stride: [1, 2], padding: [2, 0], dilation: [2, 1], groups: 3, bias: true}
  - batch_norm: {name: bn1, eps: 0.001}
  - relu6: {name: r6}
  - max_pool: {name: mp, kernel: 3, stride: 2, padding: 1, ceil_mode: true}
  - avg_pool: {name: ap, kernel: 2, stride: 2, padding: 1, ceil_mode: true, count_include_pad: false}
  - global_avg_pool: {name: se_pool}
  - conv: {name: se_fc, out: 12, kernel: 1, bias: true}
  - sigmoid: {name: se_gate}
  - mul: {name: se, from: [ap, se_gate]}
  - slice: {name: left, from: se, start: 0, len: 4}
  - slice: {name: right, from: se, start: 4, len: 8}
  - relu: {name: right_relu, from: right}
  - concat: {name: cat, from: [right_relu, left]}
  - add: {name: res, from: [cat, se]}
  - channel_shuffle: {name: shuffle, groups: 4}
  - avg_pool: {name: ap2, kernel: 3, stride: 1, padding: 1}
  - flatten: {name: flat}
  - linear: {name: fc, out: 5}
  - linear: {name: fc2, out: 7, bias: false}
  - softmax: {name: prob}
";

#[test]
fn every_op_exports_matches_onnx_runtime_and_round_trips() {
    let graph = shufflekit_spec::load_str(EVERY_OP, "every_op.yaml", &[]).unwrap();
    export_matches_onnx_runtime("every_op", &graph, 3);
    let weights = random_weights(&graph);
    let bytes = shufflekit_onnx::export(&graph, &weights).unwrap();
    let imported = shufflekit_onnx::import(&bytes).unwrap();
    let back = shufflekit_spec::load_str(&imported.spec, "imported.yaml", &[])
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.spec));
    let kinds = |g: &Graph| g.nodes().map(|n| g.node(n).op.clone()).collect::<Vec<_>>();
    assert_eq!(kinds(&graph), kinds(&back), "{}", imported.spec);
    let x = input_for(&graph, 2);
    assert_eq!(
        eval::evaluate(&graph, &weights, &x).unwrap(),
        eval::evaluate(&back, &imported.weights, &x).unwrap()
    );
}

#[test]
fn a_concat_with_a_fused_activation_exports_it_as_a_node() {
    let src = "name: fused_copy\ninput: [4, 6, 6]\nlayers:\n  - conv: {name: c1, out: 4, kernel: 1}\n  - concat: {name: cat1, from: [input, c1]}\n  - relu\n  - conv: {name: c2, out: 4, kernel: 1}\n  - concat: {name: cat2, from: [c2, c1]}\n  - relu6\n";
    let graph = shufflekit_spec::load_str(src, "fused_copy.yaml", &[]).unwrap();
    let mut module = shufflekit_passes::Module::graph_only(graph);
    let passes =
        shufflekit_passes::select_pipeline(Some(&["fuse-copy-activation".into()]), &[]).unwrap();
    shufflekit_passes::run(&mut module, &passes, &Default::default()).unwrap();
    let fused = module
        .graph
        .nodes()
        .filter(|&n| matches!(&module.graph.node(n).op, Op::Concat(c) if c.activation != Activation::None))
        .count();
    assert_eq!(fused, 2, "both activations fused");
    export_matches_onnx_runtime("fused_copy", &module.graph, 2);
}

#[test]
fn an_optimised_graph_is_refused() {
    let graph = load(
        "shufflenet_v1.yaml",
        &[("resolution", "64"), ("classes", "10")],
    );
    let weights = random_weights(&graph);
    let mut module = shufflekit_passes::Module::graph_only(graph);
    shufflekit_passes::optimize(&mut module).unwrap();
    let e = shufflekit_onnx::export(&module.graph, &weights)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("the graph has fused nodes (it went through the compiler passes); export the spec's graph instead: `"),
        "{e}"
    );
}

#[test]
fn damaged_models_never_panic() {
    let graph = shufflekit_spec::load_str(EVERY_OP, "every_op.yaml", &[]).unwrap();
    let bytes = shufflekit_onnx::export(&graph, &random_weights(&graph)).unwrap();
    // Deterministic damage: flip, zero or cut at many positions.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for k in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut damaged = bytes.clone();
        let at = (state as usize) % damaged.len();
        match k % 3 {
            0 => damaged[at] ^= 1 << ((state >> 32) % 8),
            1 => damaged[at] = 0xff,
            _ => damaged.truncate(at),
        }
        let _ = shufflekit_onnx::import(&damaged);
    }
}

/// The corpus of real PyTorch exports (`../shared/onnx-corpus/` from the
/// repository root; see its README). The tests fail, they do not skip,
/// when it is missing.
fn corpus() -> PathBuf {
    let dir = root().join("../shared/onnx-corpus");
    assert!(
        dir.join("README.md").is_file(),
        "the ONNX corpus is missing: expected it at `{}` (../shared/onnx-corpus from the repository root)",
        dir.display()
    );
    dir
}

/// The corpus files, each with its test below.
const CORPUS: &[&str] = &[
    "shufflenet_v2_x0_5_torchscript_op17.onnx",
    "shufflenet_v2_x0_5_dynamo_op18.onnx",
    "mobilenet_v3_small_torchscript_op17.onnx",
];

#[test]
fn every_corpus_file_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    found.sort();
    let mut expected: Vec<String> = CORPUS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected);
}

/// MACs and parameters counted from the ONNX file by `count_onnx.py`
/// (ONNX Runtime measures the shapes), independently of the importer.
fn independent_count(case: &str, model: &Path) -> (u64, u64) {
    let out = temp_dir(case).join("count.txt");
    let script_path = script("count_onnx.py");
    run_python(&[script_path.as_os_str(), model.as_os_str(), out.as_os_str()]);
    let text = std::fs::read_to_string(&out).unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    (v[0], v[1])
}

/// Imports a corpus file, checks its MACs and parameters against the
/// independent count, and compares the JIT and the reference evaluator with
/// ONNX Runtime running the original file on the same input.
fn corpus_file_matches_onnx_runtime(file: &str) {
    let case = file.trim_end_matches(".onnx");
    let model = corpus().join(file);
    let imported = shufflekit_onnx::import_file(&model).unwrap_or_else(|e| panic!("{e}"));
    let graph = shufflekit_spec::load_str(&imported.spec, "imported.yaml", &[])
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.spec));

    let ours = cost::count(&graph, Convention::Macs);
    let (macs, params) = independent_count(case, &model);
    eprintln!(
        "{case}: {} MACs, {} parameters (independent count: {macs}, {params})",
        ours.macs, ours.params
    );
    assert_eq!(
        (ours.macs, ours.params),
        (macs, params),
        "{case}: MACs and parameters"
    );

    // The corpus files have a fixed batch of 1.
    let x = input_for(&graph, 1);
    let theirs = onnx_runtime(case, &model, &x);
    let mut jit = shufflekit_jit::Model::compile(
        &graph,
        &imported.weights,
        &shufflekit_jit::CompileOptions::default(),
    )
    .unwrap();
    let rel = relative(&jit.run(&x).unwrap(), &theirs, case);
    eprintln!("{case}: JIT vs ONNX Runtime, max relative difference {rel:e}");
    assert!(rel < TOLERANCE, "{case}: {rel:e} exceeds {TOLERANCE:e}");
    let reference = eval::evaluate(&graph, &imported.weights, &x).unwrap();
    let rel = relative(&reference, &theirs, case);
    eprintln!("{case}: reference evaluator vs ONNX Runtime, max relative difference {rel:e}");
    assert!(rel < TOLERANCE, "{case}: {rel:e} exceeds {TOLERANCE:e}");
}

#[test]
fn corpus_shufflenet_v2_x0_5_torchscript_op17_matches_onnx_runtime() {
    corpus_file_matches_onnx_runtime("shufflenet_v2_x0_5_torchscript_op17.onnx");
}

#[test]
fn corpus_shufflenet_v2_x0_5_dynamo_op18_with_external_data_matches_onnx_runtime() {
    corpus_file_matches_onnx_runtime("shufflenet_v2_x0_5_dynamo_op18.onnx");
}

#[test]
fn corpus_mobilenet_v3_small_torchscript_op17_matches_onnx_runtime() {
    corpus_file_matches_onnx_runtime("mobilenet_v3_small_torchscript_op17.onnx");
}

/// Opsets 11 to 21: each op written in the form its opset defines (Split
/// and Squeeze/Unsqueeze sizes as attributes before 13 and inputs from 13,
/// ReduceMean axes as an input from 18), with a shape computation to fold;
/// the import must match ONNX Runtime on the same file.
#[test]
fn ops_in_the_form_of_each_opset_import_and_match_onnx_runtime() {
    for opset in [11, 12, 13, 17, 18, 21] {
        let case = format!("opset{opset}");
        let model = temp_dir(&case).join("model.onnx");
        let script_path = script("make_opset_model.py");
        let opset_text = opset.to_string();
        run_python(&[
            script_path.as_os_str(),
            opset_text.as_ref(),
            model.as_os_str(),
        ]);
        let imported =
            shufflekit_onnx::import_file(&model).unwrap_or_else(|e| panic!("{case}: {e}"));
        let graph = shufflekit_spec::load_str(&imported.spec, "imported.yaml", &[])
            .unwrap_or_else(|e| panic!("{case}: {e}\n{}", imported.spec));
        let kinds: Vec<&str> = graph.nodes().map(|n| graph.node(n).op.kind()).collect();
        assert!(
            kinds.contains(&"channel_shuffle") && kinds.contains(&"relu6"),
            "{case}: {kinds:?}"
        );
        let x = input_for(&graph, 2);
        let theirs = onnx_runtime(&case, &model, &x);
        let ours = eval::evaluate(&graph, &imported.weights, &x).unwrap();
        let rel = relative(&ours, &theirs, &case);
        eprintln!("{case}: max relative difference vs ONNX Runtime {rel:e}");
        assert!(rel < TOLERANCE, "{case}: {rel:e} exceeds {TOLERANCE:e}");
    }
}
