//! `shufflekit compile --target T -o model.o`: objects for x86-64 (linked
//! with the host gcc, run natively) and AArch64 (linked with
//! `aarch64-linux-gnu-gcc -static`, run under `qemu-aarch64`), with the C
//! example harness, compared with the reference evaluator; x86-64 objects
//! at `--cpu x86-64-v3` and `x86-64-v4`, linked with the kernel library
//! written beside them (a level the host lacks is skipped, saying so), and
//! the symbols they import; the AArch64 code's NEON `fmla`; and the
//! errors.
//!
//! The cross tools are installed by `scripts/test`; without them these
//! tests fail (they never pass silently).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proptest::prelude::*;

use shufflekit_ir::eval;
use shufflekit_ir::input::{random_input, write_npy};
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};

const X86: &str = "x86_64-unknown-linux-gnu";
const ARM: &str = "aarch64-unknown-linux-gnu";

/// The zoo models at a reduced resolution (emulation is slow).
const ZOO: [(&str, &str, &[&str]); 4] = [
    (
        "shufflenet_v1_g3_0.5x",
        "specs/shufflenet_v1.yaml",
        &["groups=3", "width=0.5", "resolution=64"],
    ),
    (
        "shufflenet_v1_g8_0.5x",
        "specs/shufflenet_v1.yaml",
        &["groups=8", "width=0.5", "resolution=64"],
    ),
    (
        "shufflenet_v2_0.5x",
        "specs/shufflenet_v2.yaml",
        &["width=0.5", "resolution=64"],
    ),
    (
        "mobilenet_v1_0.25x",
        "specs/mobilenet_v1.yaml",
        &["width=0.25", "resolution=64"],
    ),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {shown}: {e} (scripts/test installs the cross tools)")
    });
    assert!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn shufflekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("running shufflekit")
}

/// Compiles `spec` with `sets` for `target` into `dir/model.o` and `dir/model.h`.
fn compile(dir: &Path, spec: &str, sets: &[&str], target: &str, extra: &[&str]) -> PathBuf {
    let object = dir.join("model.o");
    let mut args = vec![spec.to_string()];
    for s in sets {
        args.push(format!("--set={s}"));
    }
    args.extend(["--target".into(), target.into(), "-o".into()]);
    args.push(object.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shufflekit"));
    cmd.arg("compile").args(&args).current_dir(root());
    run(&mut cmd);
    assert!(dir.join("model.h").exists());
    object
}

/// Links the C example with the object for `target`.
fn link(dir: &Path, object: &Path, target: &str) -> PathBuf {
    link_with(dir, object, target, &[])
}

/// Links the C example with the object and `libraries` for `target`.
fn link_with(dir: &Path, object: &Path, target: &str, libraries: &[&Path]) -> PathBuf {
    let exe = dir.join("classify");
    let main = root().join("examples/c/main.c");
    let mut cmd = if target == ARM {
        let mut c = Command::new("aarch64-linux-gnu-gcc");
        c.arg("-static");
        c
    } else {
        Command::new("gcc")
    };
    cmd.args(["-O2", "-std=c11", "-Wall", "-Werror", "-I"])
        .arg(dir)
        .arg(&main)
        .arg(object)
        .args(libraries)
        .arg("-o")
        .arg(&exe)
        .arg("-lm");
    run(&mut cmd);
    exe
}

/// Runs the harness (under qemu for AArch64) and returns its raw output.
fn execute(exe: &Path, target: &str, args: &[&str], out: &Path) -> (Vec<f32>, String) {
    let mut cmd = if target == ARM {
        let mut c = Command::new("qemu-aarch64");
        c.arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args).arg("--output").arg(out);
    let o = run(&mut cmd);
    let bytes = std::fs::read(out).unwrap();
    let values = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (values, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The reference output of a spec with seed-0 weights on `input`.
fn reference(spec_path: &str, sets: &[&str], batch: usize) -> (Tensor, Tensor) {
    let overrides = sets
        .iter()
        .map(|s| shufflekit_spec::parse_override(s).unwrap())
        .collect::<Vec<_>>();
    let graph = shufflekit_spec::load(&root().join(spec_path), &overrides).unwrap();
    let weights = Weights::init(
        &graph,
        &InitOptions {
            seed: 0,
            randomize_batch_norm: false,
        },
    );
    let shape = graph.node(graph.input_nodes()[0]).shape.clone();
    let input = random_input(&shape, batch, 7).unwrap();
    let out = eval::evaluate(&graph, &weights, &input).unwrap();
    (input, out)
}

fn max_rel_diff(got: &[f32], want: &Tensor) -> f32 {
    assert_eq!(got.len(), want.data().len(), "output length");
    let scale = want.max_abs().max(f32::MIN_POSITIVE);
    got.iter()
        .zip(want.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale
}

fn zoo_on(target: &str) {
    zoo_at(target, None);
}

/// The zoo for `target` at `--cpu cpu`, linked with the kernel library
/// when the level has one.
fn zoo_at(target: &str, cpu: Option<&str>) {
    let batch = 2;
    let mut report = Vec::new();
    for (label, spec_path, sets) in ZOO {
        let dir = tempfile::tempdir().unwrap();
        let (input, want) = reference(spec_path, sets, batch);
        let input_path = dir.path().join("input.npy");
        write_npy(&input_path, &input).unwrap();
        let extra: Vec<&str> = cpu.map_or(vec![], |c| vec!["--cpu", c]);
        let object = compile(dir.path(), spec_path, sets, target, &extra);
        let library = dir.path().join("model.kernels.a");
        let wide = matches!(cpu, Some("x86-64-v3" | "x86-64-v4"));
        assert_eq!(library.exists(), wide, "{label} at {cpu:?}: kernel library");
        let libraries: Vec<&Path> = if wide { vec![&library] } else { vec![] };
        let exe = link_with(dir.path(), &object, target, &libraries);
        let (got, stdout) = execute(
            &exe,
            target,
            &["--input", input_path.to_str().unwrap(), "--top", "3"],
            &dir.path().join("out.raw"),
        );
        assert!(stdout.contains("image 1:"), "{stdout}");
        let rel = max_rel_diff(&got, &want);
        println!("{target} {cpu:?} {label}: max relative difference {rel:.3e}");
        report.push((label, rel));
        assert!(rel <= 1e-4, "{target} {cpu:?} {label}: {rel}");
    }
    eprintln!("{target} {cpu:?}: {report:?}");
}

/// Whether this machine runs an x86-64 level's kernels; says why not.
fn host_runs(level: &str) -> bool {
    let (runs, needs) = match level {
        "x86-64-v3" => (
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"),
            "AVX2 and FMA",
        ),
        _ => (std::arch::is_x86_feature_detected!("avx512f"), "AVX-512F"),
    };
    if !runs {
        println!("skipped: running {level} objects needs {needs}, which this CPU lacks");
    }
    runs
}

#[test]
fn zoo_x86_64_v3_objects_with_the_kernel_library_match_the_reference() {
    if host_runs("x86-64-v3") {
        zoo_at(X86, Some("x86-64-v3"));
    }
}

#[test]
fn zoo_x86_64_v4_objects_with_the_kernel_library_match_the_reference() {
    if host_runs("x86-64-v4") {
        zoo_at(X86, Some("x86-64-v4"));
    }
}

/// The symbols an object (or an archive's members) leaves undefined, by
/// `nm -u` (whose `U name` lines are the symbols; an archive adds a
/// `member.o:` line per member).
fn undefined_symbols(object: &Path) -> Vec<String> {
    let out = run(Command::new("nm").arg("-u").arg(object));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["U", name] => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

/// Compiling needs no such CPU, so these run everywhere: a wide object
/// that fell back to the 128-bit code would import nothing.
#[test]
fn wide_objects_import_their_tiers_kernels_and_baseline_objects_nothing() {
    let (_, spec_path, sets) = ZOO[0];
    let cases: [(&str, &[&str]); 3] = [
        ("x86-64", &[]),
        ("x86-64-v3", &["shufflekit_pointwise_avx2"]),
        // At AVX-512 the depthwise layers and the stem run wide too.
        (
            "x86-64-v4",
            &["shufflekit_pointwise_avx512", "shufflekit_window_avx512"],
        ),
    ];
    for (level, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let object = compile(dir.path(), spec_path, sets, X86, &["--cpu", level]);
        assert_eq!(undefined_symbols(&object), want, "{level}");
        let header = std::fs::read_to_string(dir.path().join("model.h")).unwrap();
        assert!(
            header.contains(&format!("#define SHUFFLENET_V1_CPU \"{level}\"")),
            "{header}"
        );
        let library = dir.path().join("model.kernels.a");
        assert_eq!(library.exists(), !want.is_empty(), "{level}");
        if library.exists() {
            assert!(header.contains("model.o model.kernels.a"), "{header}");
            // The library defines what the object imports and needs
            // nothing itself (no libc).
            let defined = run(Command::new("nm")
                .args(["-g", "--defined-only"])
                .arg(&library));
            let defined = String::from_utf8_lossy(&defined.stdout);
            for symbol in want {
                assert!(defined.contains(&format!(" T {symbol}")), "{defined}");
            }
            assert_eq!(undefined_symbols(&library), Vec::<String>::new());
        }
    }
}

#[test]
fn zoo_x86_64_objects_match_the_reference() {
    zoo_on(X86);
}

#[test]
fn zoo_aarch64_objects_match_the_reference_under_qemu() {
    zoo_on(ARM);
}

#[test]
fn external_weights_and_random_input() {
    let dir = tempfile::tempdir().unwrap();
    let sets = ["groups=3", "width=0.5", "resolution=32", "classes=10"];
    let spec_path = "specs/shufflenet_v1.yaml";
    let object = compile(dir.path(), spec_path, &sets, ARM, &["--external-weights"]);
    let header = std::fs::read_to_string(dir.path().join("model.h")).unwrap();
    assert!(header.contains("#define SHUFFLENET_V1_EMBEDDED_WEIGHTS 0"));
    assert!(header.contains("SHUFFLENET_V1_VERSION \"shufflekit "));
    assert!(header.contains("SHUFFLENET_V1_INPUT_SHAPE {3, 32, 32}"));
    assert!(!header.contains("void shufflenet_v1_run("));
    let stack: usize = header
        .lines()
        .find_map(|l| l.strip_prefix("#define SHUFFLENET_V1_STACK_BYTES "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the header states the stack a call needs");
    assert!((32..1 << 20).contains(&stack), "{stack}");
    let exe = link(dir.path(), &object, ARM);
    let weights = dir.path().join("model.weights");
    let (a, stdout) = execute(
        &exe,
        ARM,
        &["--weights", weights.to_str().unwrap(), "--seed", "3"],
        &dir.path().join("a.raw"),
    );
    assert!(stdout.contains("image 0:"), "{stdout}");
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|v| v.is_finite()));
    // Without the weights file the harness refuses clearly.
    let o = Command::new("qemu-aarch64").arg(&exe).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("without embedded weights"));
}

#[test]
fn aarch64_convolutions_use_neon_fmla() {
    let dir = tempfile::tempdir().unwrap();
    let (_, spec_path, sets) = ZOO[0];
    let object = compile(dir.path(), spec_path, sets, ARM, &[]);
    let out = run(Command::new("aarch64-linux-gnu-objdump")
        .arg("-d")
        .arg(&object));
    let text = String::from_utf8_lossy(&out.stdout);
    let fmla = text
        .lines()
        .filter(|l| l.contains("\tfmla\t") && l.contains(".4s"))
        .count();
    assert!(fmla > 100, "only {fmla} `fmla .4s` instructions");
    assert!(text.contains("<shufflenet_v1_run>:"));
    // No calls out of the object: every `bl` targets one of its kernels.
    for l in text.lines().filter(|l| l.contains("\tbl\t")) {
        assert!(l.contains("<shufflenet_v1_"), "call out of the object: {l}");
    }
    let syms = run(Command::new("aarch64-linux-gnu-nm").arg("-u").arg(&object));
    assert!(
        syms.stdout.is_empty(),
        "undefined symbols: {}",
        String::from_utf8_lossy(&syms.stdout)
    );
}

#[test]
fn bad_targets_outputs_and_specs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("m.o");
    let o = o.to_str().unwrap();
    let small = ["specs/shufflenet_v1.yaml", "--set=resolution=32"];

    let out = shufflekit(
        &[
            &["compile"],
            &small[..],
            &["--target", "riscv64gc-unknown-linux-gnu", "-o", o],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported target `riscv64gc-unknown-linux-gnu`"),
        "{err}"
    );
    assert!(err.contains("aarch64-unknown-linux-gnu"), "{err}");

    let out = shufflekit(
        &[
            &["compile"],
            &small[..],
            &["--target", ARM, "-o", "/nonexistent/dir/m.o"],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write `/nonexistent/dir/m.o`"), "{err}");

    // A CPU level that does not fit the target, and one that is no level.
    let out = shufflekit(
        &[
            &["compile"],
            &small[..],
            &["--target", ARM, "--cpu", "x86-64-v4", "-o", o],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cpu `x86-64-v4` does not fit target `aarch64-unknown-linux-gnu`"),
        "{err}"
    );
    assert!(!Path::new(o).exists(), "an object was written anyway");
    let out = shufflekit(
        &[
            &["compile"],
            &small[..],
            &["--target", X86, "--cpu", "skylake", "-o", o],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown cpu `skylake`"), "{err}");
    assert!(err.contains("x86-64-v3"), "{err}");

    let out = shufflekit(&[&["compile"], &small[..], &["--target", ARM]].concat());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--output"), "{err}");

    let out = shufflekit(
        &[
            &["compile"],
            &small[..],
            &["--target", ARM, "--name", "9bad", "-o", o],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a C identifier"));
}

/// A one-op network (with the epilogue ops the passes fuse into it) as a
/// spec: `[channels, h, w]` input, then `layers`.
#[derive(Debug, Clone)]
struct OpCase {
    input: [usize; 3],
    layers: String,
}

fn op_case() -> impl Strategy<Value = OpCase> {
    let conv = (
        1usize..=3,
        1usize..=5,
        1usize..=9,
        5usize..=13,
        prop_oneof![Just(1usize), Just(3), Just(5)],
        1usize..=2,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(groups, cin_g, cout_g, hw, k, stride, bias, bn)| {
            let padding = k / 2;
            let mut layers = format!(
                "  - conv: {{name: c, out: {}, kernel: {k}, stride: {stride}, padding: {padding}, groups: {groups}, bias: {bias}}}\n",
                groups * cout_g
            );
            if bn {
                layers.push_str("  - batch_norm\n  - relu\n");
            }
            OpCase {
                input: [groups * cin_g, hw, hw + 1],
                layers,
            }
        });
    let depthwise = (1usize..=12, 6usize..=14, 1usize..=2).prop_map(|(c, hw, stride)| OpCase {
        input: [c, hw, hw],
        layers: format!(
            "  - conv: {{name: dw, out: {c}, kernel: 3, stride: {stride}, padding: 1, groups: {c}}}\n  - batch_norm\n"
        ),
    });
    let pool = (
        1usize..=6,
        5usize..=12,
        prop_oneof![Just("max_pool"), Just("avg_pool")],
        2usize..=3,
        1usize..=2,
    )
        .prop_map(|(c, hw, op, k, stride)| OpCase {
            input: [c, hw, hw],
            layers: format!(
                "  - {op}: {{name: p, kernel: {k}, stride: {stride}, padding: {}}}\n",
                k / 2
            ),
        });
    let shuffle = (1usize..=4, 2usize..=3, 3usize..=9).prop_map(|(per, g, hw)| OpCase {
        input: [per * g, hw, hw],
        layers: format!("  - channel_shuffle: {{groups: {g}}}\n  - relu\n"),
    });
    let head = (1usize..=16, 1usize..=6, 1usize..=20).prop_map(|(c, hw, out)| OpCase {
        input: [c, hw, hw],
        layers: format!("  - global_avg_pool\n  - flatten\n  - linear: {{out: {out}}}\n"),
    });
    prop_oneof![conv, depthwise, pool, shuffle, head]
}

/// Compiles, links and runs one case for AArch64; returns the relative
/// difference to the reference.
fn run_op_case(case: &OpCase) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    let [c, h, w] = case.input;
    let spec_path = dir.path().join("op.yaml");
    std::fs::write(
        &spec_path,
        format!("name: op\ninput: [{c}, {h}, {w}]\nlayers:\n{}", case.layers),
    )
    .unwrap();
    let spec_str = spec_path.to_str().unwrap();
    let (input, want) = reference(spec_str, &[], 2);
    let input_path = dir.path().join("input.npy");
    write_npy(&input_path, &input).unwrap();
    let object = compile(dir.path(), spec_str, &[], ARM, &[]);
    let exe = link(dir.path(), &object, ARM);
    let (got, _) = execute(
        &exe,
        ARM,
        &["--input", input_path.to_str().unwrap()],
        &dir.path().join("out.raw"),
    );
    max_rel_diff(&got, &want)
}

proptest! {
    // Emulation is slow: a few cases (AOT_PROPTEST_CASES to change).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("AOT_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(12),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn single_ops_on_aarch64_match_the_reference(case in op_case()) {
        let rel = run_op_case(&case);
        prop_assert!(rel <= 1e-4, "{case:?}: {rel}");
    }
}
