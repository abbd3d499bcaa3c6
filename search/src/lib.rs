//! The search driver of shufflekit: sweeps of a spec's parameters under a
//! compute budget, with pluggable evaluators.
//!
//! This crate is a placeholder in the workspace layout: the driver is the
//! subject of the "Search driver and reports" issue and is not written yet.
//! It exports nothing.
#![deny(missing_docs)]
