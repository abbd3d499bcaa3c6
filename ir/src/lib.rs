//! The foundation of shufflekit: the graph IR, complexity accounting, and
//! the reference evaluator that defines what a graph computes.
//!
//! The spec language that writes graphs is the `shufflekit-spec` crate,
//! built on this one.
#![deny(missing_docs)]

pub mod cost;
pub mod eval;
pub mod graph;
pub mod input;
pub mod ops;
pub mod shape;
pub mod tensor;
pub mod text;
pub mod verify;
pub mod weights;

pub use graph::{Graph, IrError, Node, NodeId, SourceLoc};
pub use ops::Op;
pub use shape::Shape;
