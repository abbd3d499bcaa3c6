//! Graph-to-graph compiler passes of shufflekit: verify, fold batch norm,
//! fold channel shuffle, fuse, plan memory.
//!
//! This crate is a placeholder in the workspace layout: the passes are the
//! subject of the "Compiler passes" issue and are not written yet. It
//! exports nothing, so nothing can depend on a half-built pass.
#![deny(missing_docs)]
