//! Whole networks: every zoo spec at reduced resolution, ShuffleNet v1 1x
//! g=3 at full resolution, thread-count independence and the memory limit.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, assert_tiers_close, check, run_both, weights};
use shufflekit_ir::input::random_input;
use shufflekit_ir::Graph;
use shufflekit_jit::{CompileOptions, JitError, Model};

fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs")
}

fn load(name: &str, sets: &[(&str, &str)]) -> Graph {
    let overrides: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    shufflekit_spec::load(&specs_dir().join(name), &overrides).expect("spec loads")
}

#[test]
fn every_zoo_spec_at_64_matches_reference_on_every_tier() {
    let mut names: Vec<String> = std::fs::read_dir(specs_dir())
        .expect("specs directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "zoo specs found: {names:?}");
    for name in names {
        let graph = load(&name, &[("resolution", "64")]);
        let w = weights(&graph, 1);
        let (got, expected) = run_both(&graph, &w, 2, 1, 3);
        assert_tiers_close(&got, &expected, &name);
    }
}

#[test]
fn shufflenet_v1_g3_at_224_matches_reference_at_batch_1_and_3() {
    let graph = load("shufflenet_v1.yaml", &[]);
    check(&graph, 1, 1, 11);
    check(&graph, 3, 2, 12);
}

#[test]
fn two_threads_give_the_same_outputs_as_one() {
    let graph = load(
        "shufflenet_v1.yaml",
        &[("resolution", "96"), ("groups", "8"), ("width", "0.5")],
    );
    let w = weights(&graph, 5);
    let input_shape = graph.node(graph.input_nodes()[0]).shape.clone();
    for batch in [1, 4] {
        let input = random_input(&input_shape, batch, 9).unwrap();
        let outputs: Vec<_> = [1, 2]
            .iter()
            .map(|&threads| {
                let options = CompileOptions {
                    threads,
                    ..CompileOptions::default()
                };
                Model::compile(&graph, &w, &options)
                    .unwrap()
                    .run(&input)
                    .unwrap()
            })
            .collect();
        // Every unit is computed by the same code whatever thread runs it.
        assert_eq!(outputs[0], outputs[1], "batch {batch}");
    }
}

#[test]
fn a_graph_over_the_memory_limit_is_refused_before_codegen() {
    let graph = load("shufflenet_v1.yaml", &[]);
    let w = weights(&graph, 0);
    let options = CompileOptions {
        memory_limit: 1 << 20,
        ..CompileOptions::default()
    };
    let e = Model::compile(&graph, &w, &options).unwrap_err();
    assert!(matches!(e, JitError::MemoryLimit { batch: 1, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("more than the memory limit of 1048576 bytes"),
        "{e}"
    );
    assert!(shufflekit_jit::emit(&graph, shufflekit_jit::Emit::Clif, &options).is_err());

    // A model that fits for one image but not for a large batch refuses
    // the batch at run time.
    let small = load("shufflenet_v1.yaml", &[("resolution", "64")]);
    let w = weights(&small, 0);
    let options = CompileOptions {
        memory_limit: 12 << 20,
        ..CompileOptions::default()
    };
    let mut model = Model::compile(&small, &w, &options).unwrap();
    let input_shape = small.node(small.input_nodes()[0]).shape.clone();
    let big = random_input(&input_shape, 64, 0).unwrap();
    let e = model.run(&big).unwrap_err();
    assert!(matches!(e, JitError::MemoryLimit { batch: 64, .. }), "{e}");
}

#[test]
fn bad_inputs_give_errors() {
    let graph = load("shufflenet_v1.yaml", &[("resolution", "64")]);
    let w = weights(&graph, 0);
    let mut model = Model::compile(&graph, &w, &CompileOptions::default()).unwrap();
    let wrong = shufflekit_ir::tensor::Tensor::zeros(vec![1, 3, 32, 32]).unwrap();
    assert!(matches!(
        model.run(&wrong),
        Err(JitError::InputShape { .. })
    ));
    let empty = shufflekit_ir::tensor::Tensor::zeros(vec![0, 3, 64, 64]).unwrap();
    assert!(matches!(model.run(&empty), Err(JitError::EmptyBatch)));
    let options = CompileOptions {
        threads: 0,
        ..CompileOptions::default()
    };
    assert!(matches!(
        Model::compile(&graph, &w, &options),
        Err(JitError::Options { .. })
    ));
    // New weights need no recompilation.
    let w2 = weights(&graph, 1);
    model.set_weights(&w2).unwrap();
    let input = random_input(&graph.node(graph.input_nodes()[0]).shape, 1, 0).unwrap();
    let got = model.run(&input).unwrap();
    let expected = shufflekit_ir::eval::evaluate(&graph, &w2, &input).unwrap();
    assert_close(&got, &expected, "new weights");
}

#[test]
fn emit_prints_clif_and_asm() {
    let graph = load("shufflenet_v1.yaml", &[("resolution", "64")]);
    let clif = shufflekit_jit::emit(
        &graph,
        shufflekit_jit::Emit::Clif,
        &CompileOptions::default(),
    )
    .unwrap();
    assert!(
        clif.contains("function u0:0(i64, i64, i64)"),
        "{}",
        &clif[..200.min(clif.len())]
    );
    assert!(clif.contains("f32x4"));
    let asm = shufflekit_jit::emit(
        &graph,
        shufflekit_jit::Emit::Asm,
        &CompileOptions::default(),
    )
    .unwrap();
    assert!(asm.contains("kernel0"));
}

#[test]
fn optimised_zoo_specs_match_the_reference_on_the_original_graph_on_every_tier() {
    let mut names: Vec<String> = std::fs::read_dir(specs_dir())
        .expect("specs directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    for name in names {
        let graph = load(&name, &[("resolution", "64")]);
        let w = weights(&graph, 2);
        let (opt_graph, opt_weights) = shufflekit_jit::optimize(&graph, &w).unwrap();
        let input = random_input(&graph.node(graph.input_nodes()[0]).shape, 2, 4).unwrap();
        let expected = shufflekit_ir::eval::evaluate(&graph, &w, &input).unwrap();
        for (threads, isa) in [1, 2]
            .into_iter()
            .flat_map(|t| common::tiers().into_iter().map(move |i| (t, i)))
        {
            let options = CompileOptions {
                threads,
                isa: Some(isa),
                ..CompileOptions::default()
            };
            let mut model = Model::compile(&opt_graph, &opt_weights, &options).unwrap();
            assert_eq!(
                model.stats().arena_bytes,
                shufflekit_passes::memory::plan(&opt_graph).arena_bytes,
                "{name}: the arena is not the passes' memory plan"
            );
            let got = model.run(&input).unwrap();
            assert_close(
                &got,
                &expected,
                &format!("{name} optimised, {threads} threads, isa {isa}"),
            );
        }
    }
}

#[test]
fn optimised_shufflenet_v1_g3_at_224_matches_reference_on_every_tier() {
    let graph = load("shufflenet_v1.yaml", &[]);
    let w = weights(&graph, 21);
    let (opt_graph, opt_weights) = shufflekit_jit::optimize(&graph, &w).unwrap();
    let input = random_input(&graph.node(graph.input_nodes()[0]).shape, 3, 5).unwrap();
    let expected = shufflekit_ir::eval::evaluate(&graph, &w, &input).unwrap();
    for ((threads, batch), isa) in [(1, 1), (2, 3)]
        .into_iter()
        .flat_map(|tb| common::tiers().into_iter().map(move |i| (tb, i)))
    {
        let options = CompileOptions {
            threads,
            isa: Some(isa),
            ..CompileOptions::default()
        };
        let mut model = Model::compile(&opt_graph, &opt_weights, &options).unwrap();
        let x = if batch == 1 {
            input.item(0).unwrap()
        } else {
            input.clone()
        };
        let e = if batch == 1 {
            expected.item(0).unwrap()
        } else {
            expected.clone()
        };
        assert_close(
            &model.run(&x).unwrap(),
            &e,
            &format!("batch {batch}, {threads} threads, isa {isa}"),
        );
    }
}

#[test]
fn forcing_a_tier_the_host_lacks_is_a_typed_error() {
    let graph = load("shufflenet_v1.yaml", &[("resolution", "64")]);
    let w = weights(&graph, 1);
    for isa in shufflekit_jit::Isa::ALL {
        let options = CompileOptions {
            isa: Some(isa),
            ..CompileOptions::default()
        };
        match Model::compile(&graph, &w, &options) {
            Ok(m) => {
                assert!(isa.supported(), "{isa} compiled on a host without it");
                assert_eq!(m.stats().isa, isa);
            }
            Err(JitError::IsaUnsupported { isa: got, .. }) => {
                assert!(!isa.supported());
                assert_eq!(got, isa);
            }
            Err(e) => panic!("{isa}: {e}"),
        }
    }
    assert_eq!(
        Model::compile(&graph, &w, &CompileOptions::default())
            .unwrap()
            .stats()
            .isa,
        shufflekit_jit::Isa::host()
    );
}
