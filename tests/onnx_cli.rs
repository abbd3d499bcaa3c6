//! `shufflekit export` and `shufflekit import` end to end: a spec exported
//! to ONNX, imported back into a directory, and run with `shufflekit run`
//! on both sides gives the same output.

use std::path::Path;
use std::process::{Command, Output};

fn shufflekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn ok(args: &[&str]) -> (String, String) {
    let out = shufflekit(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?} failed:\n{stderr}");
    (stdout, stderr)
}

#[test]
fn export_then_import_then_run_gives_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (model, weights, imported) = (p("v2.onnx"), p("w.safetensors"), p("imported"));
    let set = ["--set", "resolution=64", "--set", "classes=10"];
    let mut init = vec!["init", "specs/shufflenet_v2.yaml", "--randomize-batch-norm"];
    init.extend(set);
    init.extend(["-o", &weights]);
    ok(&init);

    // Without --weights the command says it initialises them.
    let mut export = vec!["export", "specs/shufflenet_v2.yaml"];
    export.extend(set);
    export.extend(["-o", &model]);
    let (_, stderr) = ok(&export);
    assert!(stderr.contains("no --weights given"), "{stderr}");

    export.extend(["--weights", &weights]);
    let (stdout, stderr) = ok(&export);
    assert!(stdout.starts_with(&format!("wrote {model} (")), "{stdout}");
    assert!(!stderr.contains("no --weights"), "{stderr}");

    let (stdout, _) = ok(&["import", &model, "-o", &imported]);
    let spec = Path::new(&imported).join("shufflenet_v2.yaml");
    let imported_weights = Path::new(&imported).join("shufflenet_v2.safetensors");
    assert!(spec.exists() && imported_weights.exists(), "{stdout}");

    let (a, b) = (p("a.npy"), p("b.npy"));
    let mut run = vec!["run", "specs/shufflenet_v2.yaml"];
    run.extend(set);
    run.extend(["--weights", &weights, "--batch", "2", "--output", &a]);
    ok(&run);
    let spec = spec.to_string_lossy().into_owned();
    let imported_weights = imported_weights.to_string_lossy().into_owned();
    ok(&[
        "run",
        &spec,
        "--weights",
        &imported_weights,
        "--batch",
        "2",
        "--output",
        &b,
    ]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn import_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"\x08\x08\x3a\xff\xff\x01").unwrap();
    let bad = bad.to_string_lossy().into_owned();
    let out_dir = dir.path().join("out").to_string_lossy().into_owned();
    let out = shufflekit(&["import", &bad, "-o", &out_dir]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: `{bad}`: not a valid ONNX model")),
        "{stderr}"
    );
}

#[test]
fn an_import_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let missing = missing.to_string_lossy().into_owned();
    let out_dir = dir.path().join("out").to_string_lossy().into_owned();
    let out = shufflekit(&["import", &missing, "-o", &out_dir]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: cannot read `{missing}`: ")),
        "{stderr}"
    );
    // The I/O error's text once, not `<msg>: <msg>`.
    let cause = stderr
        .trim_end()
        .rsplit_once("`: ")
        .map(|(_, c)| c.to_string())
        .unwrap_or_default();
    assert!(!cause.is_empty(), "{stderr}");
    assert_eq!(stderr.matches(&cause).count(), 1, "{stderr}");
}
