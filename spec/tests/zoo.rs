//! Every spec of the zoo (`specs/*.yaml`) evaluates at its default
//! parameters with batch 1 and batch 4, and each image of the batch gives
//! exactly what it gives alone.

use std::path::{Path, PathBuf};

use shufflekit_ir::eval;
use shufflekit_ir::input::random_input;
use shufflekit_ir::weights::{InitOptions, Weights};

fn zoo() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the specs folder")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    specs.sort();
    specs
}

#[test]
fn every_zoo_spec_runs_batched_and_alone() {
    let specs = zoo();
    assert!(
        specs.len() >= 3,
        "expected the zoo in specs/, found {specs:?}"
    );
    for path in specs {
        let graph =
            shufflekit_spec::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let weights = Weights::init(
            &graph,
            &InitOptions {
                seed: 1,
                randomize_batch_norm: true,
            },
        );
        let input_shape = &graph.node(graph.input_nodes()[0]).shape;
        let output_shape = &graph.node(graph.output().expect("an output")).shape;
        let x = random_input(input_shape, 4, 2).unwrap();
        let y = eval::evaluate(&graph, &weights, &x).unwrap();
        let mut expected = vec![4];
        expected.extend_from_slice(output_shape.dims());
        assert_eq!(y.shape(), expected, "{}", path.display());
        assert!(
            y.data().iter().all(|v| v.is_finite()),
            "{}: non-finite output",
            path.display()
        );
        assert!(y.max_abs() > 0.0, "{}: all-zero output", path.display());
        for i in 0..4 {
            let alone = eval::evaluate(&graph, &weights, &x.item(i).unwrap()).unwrap();
            assert_eq!(
                Some(alone.data()),
                y.item_data(i),
                "{}: image {i} differs between batch 4 and batch 1",
                path.display()
            );
        }
    }
}
