//! `shufflekit run` and `shufflekit init` end to end: outputs, exit codes
//! and the error text for bad weights, images, arrays and output paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A small ShuffleNet so that every run takes milliseconds.
const SMALL: [&str; 6] = [
    "specs/shufflenet_v1.yaml",
    "--set",
    "resolution=32",
    "--set",
    "classes=10",
    "--set=width=0.5",
];

fn shufflekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn run(extra: &[&str]) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    shufflekit(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run_cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// Fails unless the command failed cleanly (exit 1, no panic) with `needle`
/// in its error output.
fn fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a clean failure; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
}

fn init(path: &Path, extra: &[&str]) {
    let mut args = vec!["init"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(&["-o", s(path)]);
    args.extend_from_slice(extra);
    let o = shufflekit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("wrote "), "{}", stdout(&o));
}

#[test]
fn run_with_random_weights_prints_top_k_and_time() {
    let o = run(&["--top", "3", "--batch", "2", "--random-input"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("image 0: top 3 of 10 classes"), "{out}");
    assert!(out.contains("image 1: top 3 of 10 classes"), "{out}");
    assert_eq!(out.matches(" p=").count(), 6, "{out}");
    // The JIT is the default engine.
    assert!(out.contains("ms (jit engine, batch 2)"), "{out}");
    let r = run(&[
        "--top",
        "3",
        "--batch",
        "2",
        "--random-input",
        "--engine",
        "reference",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stdout(&r).contains("ms (reference engine, batch 2)"),
        "{}",
        stdout(&r)
    );
    // Both engines rank the same classes.
    let classes = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(" p="))
            .map(|l| l.split(" p=").next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(classes(&out), classes(&stdout(&r)));
    assert!(
        stderr(&o).contains("initialising weights from seed 0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn init_then_run_with_the_file_and_write_the_logits() {
    let w = temp("init.safetensors");
    init(&w, &["--seed", "4", "--randomize-batch-norm"]);
    let y = temp("logits.npy");
    let o = run(&["--weights", s(&w), "--seed", "9", "--output", s(&y)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("initialising weights"),
        "{}",
        stderr(&o)
    );
    let logits = shufflekit_ir::input::read_npy(&y).unwrap();
    assert_eq!(logits.shape(), &[1, 10]);
    // Same weights and input give the same logits.
    let y2 = temp("logits2.npy");
    let o = run(&["--weights", s(&w), "--seed", "9", "--output", s(&y2)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(shufflekit_ir::input::read_npy(&y2).unwrap(), logits);
}

#[test]
fn npy_and_image_inputs() {
    // One [C, H, W] array is taken as a batch of one.
    let x = temp("one.npy");
    let t = shufflekit_ir::tensor::Tensor::zeros(vec![3, 32, 32]).unwrap();
    shufflekit_ir::input::write_npy(&x, &t).unwrap();
    let o = run(&["--input", s(&x)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("batch 1)"), "{}", stdout(&o));

    let png = temp("photo.png");
    image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 128]))
        .save(&png)
        .unwrap();
    let o = run(&[
        "--input",
        s(&png),
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25,0.25,0.25",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("image `"), "{}", stdout(&o));
}

#[test]
fn bad_weight_files_are_clear_errors() {
    let corrupt = temp("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    fails_with(
        &run(&["--weights", s(&corrupt)]),
        "corrupt.safetensors` is not a valid safetensors file",
    );

    let missing = temp("missing.safetensors");
    fails_with(
        &run(&["--weights", s(&missing)]),
        "cannot read weights file `",
    );

    // Weights of the g=8 network do not fit the g=3 one.
    let g8 = temp("g8.safetensors");
    init(&g8, &["--set", "groups=8"]);
    let o = run(&["--weights", s(&g8)]);
    fails_with(&o, "the weights do not fit the graph `shufflenet_v1`");
    fails_with(
        &o,
        "tensor `conv1.weight` has shape [16, 3, 3, 3], expected [12, 3, 3, 3]",
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let small = temp("small.npy");
    shufflekit_ir::input::write_npy(
        &small,
        &shufflekit_ir::tensor::Tensor::zeros(vec![2, 3, 16, 16]).unwrap(),
    )
    .unwrap();
    fails_with(
        &run(&["--input", s(&small)]),
        "small.npy` has shape [2, 3, 16, 16], but the network takes [N, 3, 32, 32]",
    );

    let ints = temp("ints.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }\n";
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(&ints, bytes).unwrap();
    fails_with(
        &run(&["--input", s(&ints)]),
        "ints.npy` is not a valid .npy file: dtype `<i4` is not supported",
    );

    let png = temp("broken.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\x00\x00garbage").unwrap();
    fails_with(&run(&["--input", s(&png)]), "cannot decode image `");

    let grey = temp("grey.png");
    image::GrayImage::from_pixel(8, 8, image::Luma([3]))
        .save(&grey)
        .unwrap();
    let o = shufflekit(&[
        "run",
        "specs/shufflenet_v1.yaml",
        "--set",
        "resolution=32",
        "--set",
        "channels=1",
        "--input",
        s(&grey),
    ]);
    fails_with(
        &o,
        "mean has 3 values but the network's input has 1 channel",
    );
    let rgb = temp("rgb.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([3, 4, 5]))
        .save(&rgb)
        .unwrap();
    let o = shufflekit(&[
        "run",
        "specs/shufflenet_v1.yaml",
        "--set",
        "resolution=32",
        "--set",
        "channels=1",
        "--input",
        s(&rgb),
        "--mean",
        "0.5",
        "--std",
        "0.5",
    ]);
    fails_with(&o, "rgb.png` has 3 channels but the network's input has 1");
    fails_with(
        &run(&["--input", s(&rgb), "--mean", "0.5,0.5"]),
        "mean has 2 values",
    );
}

#[test]
fn unwritable_outputs_and_unknown_engines_fail_cleanly() {
    let nowhere = temp("no/such/dir/y.npy");
    fails_with(&run(&["--output", s(&nowhere)]), "cannot write `");
    let mut args = vec!["init"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(&["-o", s(&nowhere)]);
    fails_with(&shufflekit(&args), "cannot write weights file `");

    let o = run(&["--engine", "tpu"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid value 'tpu'"), "{}", stderr(&o));
}

#[test]
fn bench_reports_latency_throughput_per_kind_and_a_measured_peak() {
    for threads in ["1", "2"] {
        let mut args = vec!["bench"];
        args.extend_from_slice(&SMALL);
        args.extend_from_slice(&["--iters", "5", "--batch", "2", "--threads", threads]);
        let o = shufflekit(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        for needle in [
            "compile: ",
            "latency: median ",
            "throughput: ",
            "pointwise",
            "depthwise",
            "of peak",
            "peak measured: ",
        ] {
            assert!(out.contains(needle), "no `{needle}` in:\n{out}");
        }
        assert!(
            out.contains(&format!("on {threads} thread(s)")),
            "peak not measured on {threads} thread(s):\n{out}"
        );
    }
    // The reference engine has no per-layer profile and no peak.
    let mut args = vec!["bench"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(&["--iters", "2", "--engine", "reference"]);
    let o = shufflekit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("peak measured"), "{}", stdout(&o));
}

#[test]
fn isa_forces_a_tier_and_bench_prints_its_peak() {
    for isa in shufflekit_jit::Isa::host_tiers() {
        let mut args = vec!["bench"];
        args.extend_from_slice(&SMALL);
        args.extend_from_slice(&["--iters", "2", "--isa", isa.name()]);
        let o = shufflekit(&args);
        assert!(o.status.success(), "{isa}: {}", stderr(&o));
        let out = stdout(&o);
        for needle in [
            format!("isa {isa} ({} bits)", isa.bits()),
            format!("independent {}-bit", isa.bits()),
            "cpu: ".to_string(),
        ] {
            assert!(out.contains(&needle), "no `{needle}` in:\n{out}");
        }
        let o = run(&["--random-input", "--isa", isa.name()]);
        assert!(o.status.success(), "run --isa {isa}: {}", stderr(&o));
    }
    for isa in shufflekit_jit::Isa::ALL
        .into_iter()
        .filter(|i| !i.supported())
    {
        fails_with(
            &run(&["--random-input", "--isa", isa.name()]),
            "the host cannot run isa",
        );
    }
    let o = run(&["--random-input", "--isa", "avx1024"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown isa `avx1024`"),
        "{}",
        stderr(&o)
    );
}
