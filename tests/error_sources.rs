//! The libraries' errors keep their causes as typed sources: walking
//! `source()` down from the error the CLI gets finds the typed cause, not
//! only its text. (The CLI prints the chain as one line; `diag::one_line`
//! says each cause once.)

use std::error::Error;
use std::path::PathBuf;

use shufflekit_ir::input::InputError;
use shufflekit_ir::verify::VerifyErrors;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, Shape};
use shufflekit_jit::{CompileOptions, JitError, Model};
use shufflekit_search::train::{TrainEvalOptions, TrainEvaluator};
use shufflekit_search::{EvaluatorError, SearchError};
use shufflekit_spec as spec;
use shufflekit_train::{DataError, DataSource, GraphProblem, Network, TrainError};

/// The first error of type `T` in the chain that starts at `e`.
fn find<'a, T: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        next = cause.source();
    }
    None
}

const TINY: &str = "
name: tiny
input: [3, 8, 8]
layers:
  - conv: {name: stem, out: 4, kernel: 3, padding: 1}
  - relu: {name: act}
  - global_avg_pool
  - flatten
  - linear: {out: 2}
";

/// A graph the verifier rejects: a layer's stored shape no longer matches
/// the shape its op infers.
fn broken_graph() -> Graph {
    let mut graph = spec::load_str(TINY, "tiny.yaml", &[]).unwrap();
    let act = graph.find("act").expect("the spec names the relu `act`");
    graph.node_mut(act).shape = Shape::chw(5, 8, 8);
    graph
}

#[test]
fn a_jit_error_keeps_the_verifier_errors() {
    let graph = broken_graph();
    let weights = Weights::init(&graph, &InitOptions::default());
    let Err(e) = Model::compile(&graph, &weights, &CompileOptions::default()) else {
        panic!("a graph that does not verify compiled");
    };
    assert!(matches!(e, JitError::InvalidGraph(_)), "{e}");
    let verify = find::<VerifyErrors>(&e).expect("the verifier's errors are a source");
    assert!(verify.0.iter().any(|v| v.node == "act"), "{verify}");
    assert!(e.to_string().contains(&verify.to_string()), "{e}");
}

#[test]
fn a_train_error_keeps_the_verifier_errors() {
    let Err(e) = Network::new(&broken_graph()) else {
        panic!("a graph that does not verify was accepted for training");
    };
    assert!(
        matches!(e, TrainError::Graph(GraphProblem::Invalid(_))),
        "{e}"
    );
    let verify = find::<VerifyErrors>(&e).expect("the verifier's errors are a source");
    assert!(verify.0.iter().any(|v| v.node == "act"), "{verify}");
}

#[test]
fn a_search_error_keeps_the_dataset_error() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-dataset");
    let options = TrainEvalOptions {
        data: DataSource::Path(missing),
        ..TrainEvalOptions::default()
    };
    let Err(e) = TrainEvaluator::new(options, 0) else {
        panic!("a missing dataset was loaded");
    };
    assert!(matches!(e, SearchError::TrainData(_)), "{e}");
    let data = find::<DataError>(&e).expect("the dataset error is a source");
    assert!(e.to_string().contains(&data.to_string()), "{e}");
}

#[test]
fn an_evaluator_error_keeps_its_cause() {
    let graph = spec::load_str(TINY, "tiny.yaml", &[]).unwrap();
    // No minibatch of `usize::MAX` images can be made.
    let e: EvaluatorError =
        shufflekit_search::evaluator::naswot(&graph, usize::MAX, 0).unwrap_err();
    assert_eq!(e.evaluator, "proxy");
    let input = find::<InputError>(&e).expect("the input error is a source");
    // The recorded text is the cause's, as before it was typed.
    assert_eq!(e.to_string(), format!("proxy: {input}"));
}
