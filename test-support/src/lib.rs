//! What the tests of several crates share (a dev-dependency only).
//!
//! Tests that run Python use the virtual environment `scripts/test` makes
//! (pinned versions from `scripts/requirements-test.txt`), never whatever
//! interpreter is on `PATH`: that is how a missing install step stays
//! visible. Every Python call is isolated (`-I`) and runs from a temporary
//! directory, so no directory of the tree (our `onnx/` crate, say) can stand
//! in for a package.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod scale;

/// The interpreter of the test environment: `$PYTHON` (which `scripts/test`
/// exports), else `target/pyenv/bin/python` when `scripts/test` made it.
/// Panics, naming `scripts/test`, when neither exists or when it cannot
/// import `modules`.
pub fn python(modules: &[&str]) -> PathBuf {
    let default = workspace_root().join("target/pyenv/bin/python");
    find_python(std::env::var_os("PYTHON"), &default, modules).unwrap_or_else(|e| panic!("{e}"))
}

/// [`python`] with its inputs spelled out: the value of `$PYTHON` and the
/// environment `scripts/test` makes by default.
pub fn find_python(
    from_env: Option<OsString>,
    default: &Path,
    modules: &[&str],
) -> Result<PathBuf, String> {
    let python = match from_env {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if default.exists() => default.to_path_buf(),
        _ => {
            return Err(format!(
                "PYTHON is not set and {} does not exist: run the tests with `scripts/test`, \
                 which makes the Python environment with the pinned packages (or run \
                 `scripts/test --setup-only` once, then `cargo test`)",
                default.display()
            ))
        }
    };
    let check = format!("import {}", modules.join(", "));
    match isolated(&python).args(["-c", &check]).output() {
        Ok(o) if o.status.success() => Ok(python),
        Ok(o) => Err(format!(
            "`{}` cannot import {} ({}): run `scripts/test`, which installs \
             scripts/requirements-test.txt into its environment",
            python.display(),
            modules.join(", "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "cannot run `{}` ({e}): run `scripts/test`, which makes the Python environment",
            python.display()
        )),
    }
}

/// Runs `script` with `args` in the test environment (isolated, from a
/// temporary directory); panics with its stderr when it fails.
pub fn run_script(modules: &[&str], script: &Path, args: &[&OsStr]) -> Output {
    let python = python(modules);
    let out = isolated(&python)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", python.display()));
    assert!(
        out.status.success(),
        "`{} {}` failed:\n{}",
        python.display(),
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `python -I` from the system's temporary directory: neither the working
/// directory nor the script's own directory is put on `sys.path`, and no
/// `PYTHON*` variable changes what is imported.
pub fn isolated(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg("-I").current_dir(std::env::temp_dir());
    cmd
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_environment_the_error_names_scripts_test() {
        let missing = Path::new("/nonexistent/pyenv/bin/python");
        let err = find_python(None, missing, &["numpy"]).unwrap_err();
        assert!(err.contains("scripts/test"), "{err}");
        assert!(err.contains("PYTHON is not set"), "{err}");
        let err = find_python(Some("".into()), missing, &["numpy"]).unwrap_err();
        assert!(err.contains("scripts/test"), "{err}");
    }

    #[test]
    fn an_interpreter_that_cannot_run_names_scripts_test() {
        let err = find_python(
            Some("/nonexistent/python".into()),
            Path::new("/nonexistent"),
            &["numpy"],
        )
        .unwrap_err();
        assert!(err.contains("cannot run `/nonexistent/python`"), "{err}");
        assert!(err.contains("scripts/test"), "{err}");
    }

    #[test]
    fn a_missing_module_is_named() {
        // `false` stands for an interpreter without the module.
        let err =
            find_python(Some("false".into()), Path::new("/nonexistent"), &["onnx"]).unwrap_err();
        assert!(err.contains("cannot import onnx"), "{err}");
        assert!(err.contains("scripts/test"), "{err}");
    }
}
