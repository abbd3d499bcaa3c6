//! The set-up part of `scripts/test` on a fresh clone: it makes the Python
//! environment from nothing, and the packages import from every directory
//! the tests run Python in, un-isolated, as the real packages of that
//! environment (not our `onnx/` crate directory, which once passed for the
//! `onnx` package and hid a missing install step).

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn setup_on_a_fresh_clone_makes_the_python_environment_the_tests_import_from() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    let pyenv = tmp.path().join("pyenv");
    run(Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(root)
        .arg(&clone));

    let out = run(Command::new(clone.join("scripts/test"))
        .arg("--setup-only")
        .env_remove("PYTHON")
        .env("SHUFFLEKIT_PYENV", &pyenv)
        .current_dir(&clone));
    let log = String::from_utf8_lossy(&out.stderr);
    let python = pyenv.join("bin/python");
    assert!(
        log.contains(&format!(
            "making the Python environment {}",
            pyenv.display()
        )),
        "the environment was not made from scratch:\n{log}"
    );
    for line in ["numpy 2.", "onnx 1.", "onnxruntime 1."] {
        assert!(
            log.contains(line),
            "no `{line}` in the version line:\n{log}"
        );
    }
    assert!(
        log.contains(&format!("Python {}", python.display())),
        "{log}"
    );

    // Not isolated on purpose: this is how a careless check would run.
    let probe = "import numpy, onnx, onnxruntime; print(numpy.__file__); print(onnx.__file__); print(onnxruntime.__file__)";
    for dir in [
        ".",
        "ir",
        "onnx",
        "onnx/tests/python",
        "tests/oracle",
        "bench",
    ] {
        let out = run(Command::new(&python)
            .args(["-c", probe])
            .env_remove("PYTHONPATH")
            .current_dir(clone.join(dir)));
        let files = String::from_utf8_lossy(&out.stdout);
        let files: Vec<&str> = files.lines().collect();
        assert_eq!(files.len(), 3, "from {dir}: {files:?}");
        for file in files {
            assert!(
                Path::new(file).starts_with(&pyenv),
                "from {dir}, a module came from outside the environment: {file}"
            );
        }
    }

    // A second set-up reuses the environment instead of reinstalling it.
    let out = run(Command::new(clone.join("scripts/test"))
        .arg("--setup-only")
        .env("SHUFFLEKIT_PYENV", &pyenv)
        .current_dir(&clone));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("making the Python environment"), "{log}");
}
