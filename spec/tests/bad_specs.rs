//! Malformed specs: every file in `tests/bad_specs/` marks the line the
//! error must point at with `#~ ERROR <expected message text>`. Lines
//! `#~ SET name=value` give overrides. Loading must fail (never panic) with
//! that message at that line.

use std::path::{Path, PathBuf};

use shufflekit_spec::SpecError;

struct Case {
    path: PathBuf,
    line: usize,
    message: String,
    overrides: Vec<(String, String)>,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_specs");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bad_specs exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable case");
            let mut marker = None;
            let mut overrides = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if let Some(rest) = line.split("#~ ERROR").nth(1) {
                    assert!(marker.is_none(), "{}: two ERROR markers", path.display());
                    marker = Some((i + 1, rest.trim().to_string()));
                }
                if let Some(rest) = line.split("#~ SET").nth(1) {
                    overrides.push(
                        shufflekit_spec::parse_override(rest.trim()).expect("valid SET line"),
                    );
                }
            }
            let (line, message) =
                marker.unwrap_or_else(|| panic!("{}: no `#~ ERROR` marker", path.display()));
            Case {
                path,
                line,
                message,
                overrides,
            }
        })
        .collect()
}

fn load(case: &Case) -> Result<(), SpecError> {
    shufflekit_spec::load(&case.path, &case.overrides).map(|_| ())
}

#[test]
fn every_bad_spec_fails_at_the_marked_line_with_the_marked_message() {
    let cases = cases();
    assert!(cases.len() >= 25, "only {} bad specs", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        match load(case) {
            Ok(()) => failures.push(format!("{}: loaded without error", case.path.display())),
            Err(e) => {
                let text = e.to_string();
                if e.line != case.line || !text.contains(&case.message) {
                    failures.push(format!(
                        "{}: expected line {} with `{}`, got line {}: {text}",
                        case.path.display(),
                        case.line,
                        case.message,
                        e.line
                    ));
                }
                if !text.contains(&*case.path.display().to_string()) {
                    failures.push(format!(
                        "{}: error does not name the file: {text}",
                        case.path.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_parameter_on_the_command_line_is_refused_with_the_valid_ones() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    let e = shufflekit_spec::load(&path, &[("grups".into(), "3".into())]).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("has no parameter `grups`"), "{text}");
    assert!(text.contains("did you mean `groups`?"), "{text}");
    assert!(text.contains("parameters: groups, width"), "{text}");
}

#[test]
fn bad_override_values_are_refused() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    let e = shufflekit_spec::load(&path, &[("groups".into(), "3 +".into())]).unwrap_err();
    assert!(e.to_string().contains("`--set groups=3 +`"), "{e}");
    // A group count the table has no column for: the error points at the table.
    let e = shufflekit_spec::load(&path, &[("groups".into(), "5".into())]).unwrap_err();
    assert!(e.to_string().contains("no entry for 5 in table"), "{e}");
    assert!(e.line > 0, "{e}");
    // With an explicit stage-2 width, groups=5 is a valid network.
    let g = shufflekit_spec::load(
        &path,
        &[
            ("groups".into(), "5".into()),
            ("stage2".into(), "300".into()),
        ],
    );
    assert!(g.is_ok(), "{:?}", g.err());
    assert!(shufflekit_spec::parse_override("groups").is_err());
    assert!(shufflekit_spec::parse_override("=3").is_err());
}
