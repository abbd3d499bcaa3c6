//! Training of shufflekit graphs: reverse-mode gradients of the IR
//! ([`grad`]), SGD with momentum and learning-rate schedules ([`optim`]),
//! datasets ([`data`]), the training loop with checkpoints ([`fit`]) and the
//! proxy task that adapts a spec to a dataset ([`proxy`]). Its charts (the
//! learning curves) are drawn by `shufflekit-reports`.
//!
//! It depends on `shufflekit-ir` only: any graph the IR can express is
//! trainable, and the search's `train` evaluator and `shufflekit train`
//! share this code.
//!
//! ```
//! use shufflekit_ir::{tensor::Tensor, weights::{InitOptions, Weights}};
//! use shufflekit_train::grad::{softmax_cross_entropy, Mode, Network};
//! let src = "
//! name: tiny
//! input: [1, 6, 6]
//! layers:
//!   - conv: {out: 4, kernel: 3, padding: 1}
//!   - batch_norm
//!   - relu
//!   - global_avg_pool
//!   - flatten
//!   - linear: {out: 3}
//! ";
//! let graph = shufflekit_spec::load_str(src, "tiny.yaml", &[]).unwrap();
//! let net = Network::new(&graph).unwrap();
//! let weights = Weights::init(&graph, &InitOptions::default());
//! let x = Tensor::full(vec![2, 1, 6, 6], 0.5).unwrap();
//! let tape = net.forward(&weights, &x, Mode::Train).unwrap();
//! let (loss, d_logits, _) = softmax_cross_entropy(&tape.output().unwrap(), &[0, 2]).unwrap();
//! let grads = tape.backward(&weights, &d_logits).unwrap();
//! assert!(loss > 0.0);
//! assert_eq!(grads.weights.get("linear.weight").unwrap().shape(), &[3, 4]);
//! ```
#![deny(missing_docs)]

pub mod data;
pub mod fit;
pub mod grad;
mod kernels;
pub mod optim;
pub mod profile;
pub mod proxy;
mod small_gemm;

use std::path::PathBuf;

use shufflekit_ir::verify::VerifyErrors;
use shufflekit_ir::Shape;
use shufflekit_spec::SpecError;

pub use data::{DataError, DataSource, Dataset, Split};
pub use fit::{EpochStats, Event, History, TrainConfig, Trainer};
pub use grad::{Gradients, Mode, Network, Tape};
pub use optim::{Schedule, ScheduleKind, Sgd};

/// Why training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The graph cannot be trained (invalid, several inputs, no output, an
    /// output that is not `[classes]`).
    #[error("cannot train this graph: {0}")]
    Graph(#[from] GraphProblem),
    /// The weights do not fit the graph.
    #[error(transparent)]
    Weights(#[from] shufflekit_ir::weights::WeightsError),
    /// The batch does not have the network's input shape.
    #[error("input shape {got:?} does not match the network's [N, {}]", expected.dims().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    InputShape {
        /// The network's shape (without batch).
        expected: Shape,
        /// The shape given.
        got: Vec<usize>,
    },
    /// Labels do not fit the logits (count, range).
    #[error("labels: {0}")]
    Labels(String),
    /// A setting is out of range (epochs, batch, learning rate...).
    #[error("bad training setting: {0}")]
    Config(String),
    /// The loss or a weight became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}, step {step}: the loss is {loss} (try a lower --lr)"
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step in the epoch.
        step: usize,
        /// The loss value.
        loss: f64,
    },
    /// The dataset could not be loaded or does not fit the network.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A checkpoint could not be read or written, or belongs to another run.
    #[error("checkpoint `{}`: {problem}", path.display())]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        problem: CheckpointProblem,
    },
    /// A worker thread pool could not be created.
    #[error("cannot start worker threads: {0}")]
    Threads(#[source] rayon::ThreadPoolBuildError),
    /// An inconsistency the checks should have ruled out (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a graph cannot be trained, or cannot be adapted to a dataset.
#[derive(Debug, thiserror::Error)]
pub enum GraphProblem {
    /// The verifier rejected the graph.
    #[error("{0}")]
    Invalid(#[source] VerifyErrors),
    /// The graph has no input node or several.
    #[error("the graph has {0} input nodes; training needs exactly one")]
    InputCount(usize),
    /// The graph has no output node.
    #[error("the graph has no output")]
    NoOutput,
    /// No path leads from the input to the output.
    #[error("the output does not depend on the input")]
    Disconnected,
    /// The network's input is not the dataset's image shape.
    #[error("the network takes {input} but the images of `{data}` are {images:?} (set the spec's resolution and channels)")]
    InputMismatch {
        /// The network's input shape.
        input: Shape,
        /// The dataset.
        data: String,
        /// Its image shape `[C, H, W]`.
        images: [usize; 3],
    },
    /// The network's output is not one logit per class of the dataset.
    #[error("the network outputs {output} but `{data}` has {classes} classes (set the spec's classes; the output must be the logits)")]
    ClassMismatch {
        /// The network's output shape.
        output: Shape,
        /// The dataset.
        data: String,
        /// Its number of classes.
        classes: usize,
    },
    /// The proxy task must set a parameter the spec does not declare.
    #[error("the spec `{spec}` has no `{param}` parameter, so it cannot be adapted to `{data}` ({}x{}x{} images, {classes} classes)", images[0], images[1], images[2])]
    MissingParam {
        /// The spec's name.
        spec: String,
        /// The parameter.
        param: String,
        /// The dataset.
        data: String,
        /// Its image shape `[C, H, W]`.
        images: [usize; 3],
        /// Its number of classes.
        classes: usize,
    },
    /// The dataset's images are not square, which `resolution` cannot make.
    #[error(
        "`{data}` has {height}x{width} images; the `resolution` parameter makes square inputs"
    )]
    NotSquare {
        /// The dataset.
        data: String,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// The spec does not build with the user's overrides.
    #[error("{0}")]
    Spec(#[source] SpecError),
    /// The spec does not build once adapted to the dataset.
    #[error("adapting to `{data}`: {source}")]
    Adapt {
        /// The dataset.
        data: String,
        /// The spec's error.
        source: SpecError,
    },
}

/// What is wrong with a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointProblem {
    /// A file or directory of the checkpoint could not be written.
    #[error("{0}")]
    Write(#[source] std::io::Error),
    /// `state.json` could not be read.
    #[error("cannot read state.json: {0}")]
    ReadState(#[source] std::io::Error),
    /// The state could not be written as JSON.
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
    /// `state.json` is not a checkpoint's state.
    #[error("state.json is not a checkpoint: {0}")]
    Decode(#[source] serde_json::Error),
    /// The state has a format this version does not read.
    #[error("unknown format `{0}`")]
    UnknownFormat(String),
    /// The checkpoint is of another network.
    #[error("it was written for another network (the spec or --set differ)")]
    OtherNetwork,
    /// The checkpoint was trained on another dataset.
    #[error("it was trained on `{trained_on}`, not `{data}`")]
    OtherData {
        /// The checkpoint's dataset.
        trained_on: String,
        /// The dataset of this run.
        data: String,
    },
    /// The checkpoint was written with other settings.
    #[error("it was written with other settings: {0}")]
    OtherSettings(String),
}
