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
pub mod proxy;

use std::path::PathBuf;

use shufflekit_ir::Shape;

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
    Graph(String),
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
    #[error("checkpoint `{}`: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A worker thread pool could not be created.
    #[error("cannot start worker threads: {0}")]
    Threads(String),
    /// An inconsistency the checks should have ruled out (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}
