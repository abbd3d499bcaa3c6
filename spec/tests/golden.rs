//! Golden tests for the zoo: the text form of each spec's graph at its
//! defaults, with its exact multiply-adds and parameters, compared with
//! `tests/golden/<spec>.txt`. Run with `SHUFFLEKIT_BLESS=1` to rewrite the
//! files after an intended change, then review the diff.

use std::path::Path;

use shufflekit_ir::cost::{self, Convention};
use shufflekit_ir::text::{self, DumpOptions};

fn render(path: &Path) -> String {
    let graph = shufflekit_spec::load(path, &[]).unwrap_or_else(|e| panic!("{e}"));
    let c = cost::count(&graph, Convention::Macs);
    // The header names the test's first home (`ir/tests`): the blessed files
    // stay byte-identical across the move to this crate.
    format!(
        "# {}: produced by ir/tests/golden.rs\nmacs {}\nconv_macs {}\nlinear_macs {}\nparams {}\nbuffers {}\nactivations {}\n\n{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        c.macs,
        c.conv_macs,
        c.linear_macs,
        c.params,
        c.buffers,
        c.activations,
        text::dump(&graph, DumpOptions::default())
    )
}

#[test]
fn zoo_matches_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let specs = root.join("../specs");
    let golden = root.join("tests/golden");
    let bless = std::env::var_os("SHUFFLEKIT_BLESS").is_some();
    let mut names: Vec<_> = std::fs::read_dir(&specs)
        .expect("specs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "the zoo has {} specs", names.len());
    let mut failures = Vec::new();
    for path in names {
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let actual = render(&path);
        let file = golden.join(format!("{stem}.txt"));
        if bless {
            std::fs::create_dir_all(&golden).expect("create tests/golden");
            std::fs::write(&file, &actual).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => {
                let line = expected
                    .lines()
                    .zip(actual.lines())
                    .position(|(a, b)| a != b)
                    .map(|i| i + 1)
                    .unwrap_or(expected.lines().count().min(actual.lines().count()) + 1);
                failures.push(format!(
                    "{stem}: differs from {} at line {line}",
                    file.display()
                ));
            }
            Err(_) => failures.push(format!("{stem}: no golden file {}", file.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nrerun with SHUFFLEKIT_BLESS=1 to accept the new output",
        failures.join("\n")
    );
}
