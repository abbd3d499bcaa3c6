//! Graph-to-graph compiler passes of shufflekit.
//!
//! A [`Module`] is a graph with (optionally) its weights. Each pass rewrites
//! the graph, and the weights when present, so that the reference evaluator
//! computes the same outputs; [`run`] applies a list of passes, verifies the
//! graph after every pass ("after pass X" in errors) and times each one.
//! [`memory::plan`] then assigns every activation an offset in one arena.
//!
//! ```
//! use shufflekit_passes::{default_pipeline, run, Module, RunOptions};
//! let graph = shufflekit_spec::load_str(
//!     "name: t\ninput: [4, 8, 8]\nlayers:\n  - conv: {out: 8, kernel: 1}\n  - batch_norm\n  - relu\n  - channel_shuffle: {groups: 2}\n",
//!     "t.yaml",
//!     &[],
//! )
//! .unwrap();
//! let mut module = Module { graph, weights: None };
//! let report = run(&mut module, &default_pipeline(), &RunOptions::default()).unwrap();
//! // One convolution is left, with the batch norm, relu and shuffle folded into it.
//! assert_eq!(module.graph.len(), 2);
//! assert_eq!(report.passes.len(), default_pipeline().len());
//! ```
#![deny(missing_docs)]

pub mod fold_batch_norm;
pub mod fold_shuffle;
pub mod fuse;
pub mod fuse_copy;
pub mod memory;
pub mod simplify;

use std::time::{Duration, Instant};

use shufflekit_ir::text::{self, DumpOptions};
use shufflekit_ir::weights::Weights;
use shufflekit_ir::{Graph, IrError};

/// A graph and, when the caller has them, its weights. Passes keep the two
/// consistent: a pass that folds a batch norm into a convolution rewrites
/// that convolution's weights.
#[derive(Debug, Clone)]
pub struct Module {
    /// The graph.
    pub graph: Graph,
    /// The weights, or `None` for graph-only compilation (cost and memory
    /// reports); passes then make the same graph changes.
    pub weights: Option<Weights>,
}

/// What a pass reports about its work.
#[derive(Debug, Clone, Default)]
pub struct PassLog {
    /// Number of rewrites made.
    pub changes: usize,
    /// Explanations, e.g. why a shuffle could not be folded.
    pub notes: Vec<String>,
}

/// A graph-to-graph rewrite.
pub trait Pass {
    /// The pass's name on the command line (`fold-batch-norm`).
    fn name(&self) -> &'static str;
    /// Runs the pass.
    fn run(&self, module: &mut Module, log: &mut PassLog) -> Result<(), PassError>;
}

/// Errors of the pass driver.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The verifier rejected the graph after a pass: a bug in that pass.
    #[error("after pass {pass}: the graph is invalid:\n{}", errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Verify {
        /// The pass that ran last.
        pass: &'static str,
        /// Every problem found.
        errors: Vec<IrError>,
    },
    /// The graph was invalid before any pass ran.
    #[error("the input graph is invalid:\n{}", errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    InvalidInput {
        /// Every problem found.
        errors: Vec<IrError>,
    },
    /// A pass found the weights inconsistent with the graph.
    #[error("pass {pass}: {message}")]
    Weights {
        /// The pass.
        pass: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A pass could not keep the graph consistent (a bug in the pass).
    #[error("pass {pass}: {message}")]
    Internal {
        /// The pass.
        pass: &'static str,
        /// What went wrong.
        message: String,
    },
    /// `--passes` or `--skip-pass` named a pass that does not exist.
    #[error("unknown pass `{name}`; the passes are: {}", valid.join(", "))]
    UnknownPass {
        /// The name given.
        name: String,
        /// The valid names.
        valid: Vec<&'static str>,
    },
}

/// The default pipeline, in order. The reason for each position:
///
/// 1. `simplify` first: removes identity shuffles, whole-tensor slices and
///    dead nodes, so later passes see only real work.
/// 2. `fold-batch-norm` before the shuffle fold and fusion: afterwards a
///    convolution is followed directly by its activation and shuffle, the
///    chain the next two passes look for, and there is one op fewer to
///    push permutations through.
/// 3. `fold-channel-shuffle` before fusion: it walks up from a shuffle
///    through per-channel ops to the producing convolution or concat; fusing
///    first would work too, but folding first lets fusion see each
///    convolution's final output order and keeps the fold's rules about
///    plain ops only.
/// 4. `fuse-epilogue`: relu/relu6 and residual adds into the convolution
///    that feeds them.
/// 5. `fuse-copy-activation`: relu/relu6 after a concat into its copy.
///    After the folds, so that they see plain ops; it fuses into other
///    producers than `fuse-epilogue`, so their order does not matter.
/// 6. `simplify` again: removes nodes the folds left dead.
pub fn default_pipeline() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(simplify::Simplify),
        Box::new(fold_batch_norm::FoldBatchNorm),
        Box::new(fold_shuffle::FoldShuffle),
        Box::new(fuse::FuseEpilogue),
        Box::new(fuse_copy::FuseCopyActivation),
        Box::new(simplify::Simplify),
    ]
}

/// Names of all passes.
pub fn pass_names() -> Vec<&'static str> {
    vec![
        "simplify",
        "fold-batch-norm",
        "fold-channel-shuffle",
        "fuse-epilogue",
        "fuse-copy-activation",
    ]
}

fn pass_by_name(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "simplify" => Box::new(simplify::Simplify),
        "fold-batch-norm" => Box::new(fold_batch_norm::FoldBatchNorm),
        "fold-channel-shuffle" => Box::new(fold_shuffle::FoldShuffle),
        "fuse-epilogue" => Box::new(fuse::FuseEpilogue),
        "fuse-copy-activation" => Box::new(fuse_copy::FuseCopyActivation),
        _ => return None,
    })
}

/// Builds a pipeline: `only` (if given) lists the passes to run in order,
/// otherwise the default pipeline; `skip` removes passes from it. Unknown
/// names are an error listing the valid ones.
pub fn select_pipeline(
    only: Option<&[String]>,
    skip: &[String],
) -> Result<Vec<Box<dyn Pass>>, PassError> {
    let unknown = |name: &str| PassError::UnknownPass {
        name: name.to_string(),
        valid: pass_names(),
    };
    for s in skip {
        if pass_by_name(s).is_none() {
            return Err(unknown(s));
        }
    }
    let passes = match only {
        Some(names) => names
            .iter()
            .map(|n| pass_by_name(n).ok_or_else(|| unknown(n)))
            .collect::<Result<Vec<_>, _>>()?,
        None => default_pipeline(),
    };
    Ok(passes
        .into_iter()
        .filter(|p| !skip.iter().any(|s| s == p.name()))
        .collect())
}

/// Options of [`run`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Keep the text form of the graph before and after every pass.
    pub dump: bool,
}

/// What one pass did, and how long it took.
#[derive(Debug, Clone)]
pub struct PassRun {
    /// The pass's name.
    pub name: &'static str,
    /// Time spent in the pass (verification excluded).
    pub time: Duration,
    /// Its log.
    pub log: PassLog,
    /// The graph after the pass, when dumping.
    pub after: Option<String>,
}

/// What a pipeline run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry a pass, in order.
    pub passes: Vec<PassRun>,
    /// The graph before the first pass, when dumping.
    pub before: Option<String>,
}

/// Runs passes in order, verifying the graph before the first and after
/// every pass.
pub fn run(
    module: &mut Module,
    passes: &[Box<dyn Pass>],
    options: &RunOptions,
) -> Result<Report, PassError> {
    shufflekit_ir::verify::verify(&module.graph)
        .map_err(|errors| PassError::InvalidInput { errors })?;
    let mut report = Report {
        before: options
            .dump
            .then(|| text::dump(&module.graph, DumpOptions::default())),
        ..Default::default()
    };
    for pass in passes {
        let mut log = PassLog::default();
        let start = Instant::now();
        pass.run(module, &mut log)?;
        let time = start.elapsed();
        shufflekit_ir::verify::verify(&module.graph).map_err(|errors| PassError::Verify {
            pass: pass.name(),
            errors,
        })?;
        report.passes.push(PassRun {
            name: pass.name(),
            time,
            log,
            after: options
                .dump
                .then(|| text::dump(&module.graph, DumpOptions::default())),
        });
    }
    Ok(report)
}

/// Runs the default pipeline.
pub fn optimize(module: &mut Module) -> Result<Report, PassError> {
    run(module, &default_pipeline(), &RunOptions::default())
}

/// Helpers shared by the passes.
pub(crate) mod util {
    use shufflekit_ir::ops::Activation;
    use shufflekit_ir::weights::Weights;
    use shufflekit_ir::{Graph, NodeId, Op};

    use crate::{PassError, PassLog};

    /// The node's single user, if it has exactly one use and is not the
    /// graph output.
    pub fn single_user(graph: &Graph, id: NodeId) -> Option<NodeId> {
        let users = graph.users(id);
        match users.as_slice() {
            [u] if graph.output() != Some(id) => Some(*u),
            _ => None,
        }
    }

    /// Fuses each `relu` or `relu6` into the node that feeds it, when that
    /// node is used only there, is not the output, and `field` gives its
    /// activation, still `None`.
    pub fn fuse_activations(
        graph: &mut Graph,
        log: &mut PassLog,
        field: fn(&mut Op) -> Option<&mut Activation>,
    ) {
        let acts: Vec<NodeId> = graph
            .nodes()
            .filter(|&n| matches!(graph.node(n).op, Op::Relu | Op::Relu6))
            .collect();
        for act in acts {
            let src = graph.inputs(act)[0];
            if single_user(graph, src) != Some(act) {
                continue;
            }
            let activation = if matches!(graph.node(act).op, Op::Relu) {
                Activation::Relu
            } else {
                Activation::Relu6
            };
            match field(&mut graph.node_mut(src).op) {
                Some(a) if *a == Activation::None => *a = activation,
                _ => continue,
            }
            graph.replace_uses(act, src);
            graph.remove(act);
            log.changes += 1;
        }
    }

    /// The weight tensor `<node>.<suffix>`, as a mutable slice.
    pub fn tensor_mut<'w>(
        weights: &'w mut Weights,
        pass: &'static str,
        name: &str,
    ) -> Result<&'w mut [f32], PassError> {
        weights
            .get_mut(name)
            .map(|t| t.data_mut())
            .ok_or_else(|| PassError::Weights {
                pass,
                message: format!("the weights have no tensor `{name}`"),
            })
    }

    /// A copy of the weight tensor `<node>.<suffix>`.
    pub fn tensor(
        weights: &Weights,
        pass: &'static str,
        name: &str,
        len: usize,
    ) -> Result<Vec<f32>, PassError> {
        let t = weights.get(name).ok_or_else(|| PassError::Weights {
            pass,
            message: format!("the weights have no tensor `{name}`"),
        })?;
        if t.numel() != len {
            return Err(PassError::Weights {
                pass,
                message: format!("tensor `{name}` has {} values, expected {len}", t.numel()),
            });
        }
        Ok(t.data().to_vec())
    }

    /// Reorders the per-channel vector: `new[k] = old[perm[k]]`.
    pub fn permute<T: Copy>(old: &[T], perm: &[usize]) -> Vec<T> {
        perm.iter().map(|&p| old[p]).collect()
    }
}

impl Module {
    /// A module without weights.
    pub fn graph_only(graph: Graph) -> Self {
        Module {
            graph,
            weights: None,
        }
    }

    /// A module with weights.
    pub fn with_weights(graph: Graph, weights: Weights) -> Self {
        Module {
            graph,
            weights: Some(weights),
        }
    }
}
