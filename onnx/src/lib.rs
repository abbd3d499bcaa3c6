//! ONNX in and out for shufflekit graphs.
//!
//! [`export`] writes a graph built from a spec (not the passes' optimised
//! graph) with its weights as an ONNX model, opset 17, IR version 8: channel
//! shuffle as Reshape-Transpose-Reshape, batch norm as BatchNormalization,
//! the way PyTorch exports the same network. [`import`] reads a model made
//! of the ops shufflekit has (Conv, BatchNormalization, Relu, Clip(0, 6),
//! Sigmoid, HardSigmoid, HardSwish, MaxPool, AveragePool, GlobalAveragePool, ReduceMean over H and
//! W, Add, Mul, Concat, Split/Slice on channels, the Reshape-Transpose-Reshape
//! shuffle, Gemm/MatMul(+Add), Flatten, Softmax, Identity, Constant) back
//! into a spec YAML and weights; anything else is an error listing every
//! node it cannot import.
//!
//! The protobuf messages are encoded and decoded by hand (`proto.rs`): the
//! subset of `onnx.proto` needed is small, and no `protoc` is needed to build.
//!
//! ```
//! use shufflekit_ir::{eval, input::random_input};
//! use shufflekit_ir::weights::{InitOptions, Weights};
//! let src = "
//! name: tiny
//! input: [4, 8, 8]
//! layers:
//!   - conv: {name: stem, out: 8, kernel: 3, padding: 1, groups: 2}
//!   - batch_norm: {name: bn}
//!   - channel_shuffle: {groups: 2}
//!   - global_avg_pool
//!   - flatten
//!   - linear: {name: fc, out: 3}
//! ";
//! let graph = shufflekit_spec::load_str(src, "tiny.yaml", &[]).unwrap();
//! let options = InitOptions { seed: 1, randomize_batch_norm: true };
//! let weights = Weights::init(&graph, &options);
//! let bytes = shufflekit_onnx::export(&graph, &weights).unwrap();
//!
//! let imported = shufflekit_onnx::import(&bytes).unwrap();
//! let back = shufflekit_spec::load_str(&imported.spec, "tiny.yaml", &[]).unwrap();
//! let x = random_input(&graph.node(graph.input_nodes()[0]).shape, 2, 0).unwrap();
//! let a = eval::evaluate(&graph, &weights, &x).unwrap();
//! let b = eval::evaluate(&back, &imported.weights, &x).unwrap();
//! assert_eq!(a, b);
//! ```
#![deny(missing_docs)]

mod export;
mod external;
mod fold;
mod import;
mod names;
mod proto;

use std::path::{Path, PathBuf};

pub use export::export;
pub use import::{import, Imported};

use shufflekit_ir::weights::WeightsError;

/// The ONNX operator set [`export`] targets.
pub const OPSET: i64 = 17;
/// The ONNX IR version [`export`] writes.
pub const IR_VERSION: i64 = 8;

/// Why a graph could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The verifier rejected the graph.
    #[error("the graph is invalid: {}", messages.join("; "))]
    InvalidGraph {
        /// Every problem the verifier found.
        messages: Vec<String>,
    },
    /// The graph went through the compiler passes: some nodes carry fused
    /// work that has no single ONNX op.
    #[error("the graph has fused nodes (it went through the compiler passes); export the spec's graph instead: {}", nodes.join("; "))]
    Optimised {
        /// Each fused node, with what it fuses.
        nodes: Vec<String>,
    },
    /// The weights do not fit the graph.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The graph has no input node, or several.
    #[error("the graph has {0} input nodes; ONNX export needs exactly one")]
    InputCount(usize),
}

/// Why an ONNX model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An error in a file, with the file's name.
    #[error("`{}`: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<ImportError>,
    },
    /// The bytes are not a valid protobuf `ModelProto` (truncated, corrupt,
    /// or another kind of file).
    #[error("not a valid ONNX model (truncated or corrupt): {0}")]
    Corrupt(String),
    /// An initializer's external data cannot be read: its location escapes
    /// the model's directory, the file is missing, or the range is past its
    /// end.
    #[error("tensor `{tensor}`: external data `{location}`: {message}")]
    ExternalData {
        /// The initializer.
        tensor: String,
        /// Its `location` entry.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The model is well formed but not something shufflekit can import
    /// (no graph, several inputs or outputs, an input that is not an image
    /// batch, another domain's opset).
    #[error("{0}")]
    Model(String),
    /// Nodes that are neither folded into constants nor mapped onto
    /// shufflekit's layers; all of them are listed, each with why.
    #[error("{} node{} shufflekit cannot import (it imports {}, and folds {} when their inputs are known at import): {}", nodes.len(), if nodes.len() == 1 { "" } else { "s" }, import::SUPPORTED.join(", "), fold::FOLDABLE.join(", "), nodes.iter().map(|n| format!("`{}` ({}): {}", n.name, n.op, n.reason)).collect::<Vec<_>>().join("; "))]
    Unsupported {
        /// Each node, in graph order.
        nodes: Vec<UnsupportedNode>,
    },
    /// A node of a supported op with attributes or inputs shufflekit cannot
    /// represent (asymmetric padding, a Slice on another axis...).
    #[error("node `{node}` ({op}): {message}")]
    Node {
        /// The node's name (or its first output's when it has none).
        node: String,
        /// Its op type.
        op: String,
        /// What cannot be imported.
        message: String,
    },
    /// The spec written by the importer does not load or does not match the
    /// weights (a bug in the importer if it happens).
    #[error("internal error: the imported spec does not load: {0}")]
    Internal(String),
}

/// A node [`import`] could neither fold nor map onto a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedNode {
    /// The node's name (or its first output's when it has none).
    pub name: String,
    /// Its op type, `domain::op` outside the default domain.
    pub op: String,
    /// Why it was not folded and not mapped.
    pub reason: String,
}

/// Reads an ONNX file and imports it; errors name the file. External data
/// is read from the file's directory.
pub fn import_file(path: &Path) -> Result<Imported, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    import::import_in(&bytes, Some(dir)).map_err(|e| ImportError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}
