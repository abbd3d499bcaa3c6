//! The foundation of shufflekit: the YAML spec language, the graph IR it
//! expands to, complexity accounting, and the reference evaluator that
//! defines what a graph computes.
//!
//! ```
//! use shufflekit_ir::{cost, spec};
//! let src = "
//! name: tiny
//! params: {width: 8}
//! input: [3, 32, 32]
//! layers:
//!   - conv: {name: stem, out: width, kernel: 3, stride: 2, padding: 1}
//!   - relu
//!   - global_avg_pool
//!   - flatten
//!   - linear: {out: 10}
//! ";
//! let graph = spec::load_str(src, "tiny.yaml", &[]).unwrap();
//! let cost = cost::count(&graph, cost::Convention::Macs);
//! // stem: 16 * 16 outputs * 3 * 3 * 3 * 8; classifier: 8 * 10.
//! assert_eq!(cost.macs, 16 * 16 * 27 * 8 + 80);
//! ```
#![deny(missing_docs)]

pub mod cost;
pub mod eval;
pub mod graph;
pub mod input;
pub mod ops;
pub mod shape;
pub mod spec;
pub mod tensor;
pub mod text;
pub mod verify;
pub mod weights;

pub use graph::{Graph, IrError, Node, NodeId, SourceLoc};
pub use ops::Op;
pub use shape::Shape;
