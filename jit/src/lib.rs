//! Cranelift code generation of shufflekit: the host JIT and ahead-of-time
//! objects for AArch64 and x86-64.
//!
//! This crate is a placeholder in the workspace layout: lowering is the
//! subject of the "Cranelift JIT" issue and is not written yet. It exports
//! nothing.
#![deny(missing_docs)]
