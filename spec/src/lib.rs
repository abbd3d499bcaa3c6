//! The spec language: YAML in, graph out.
//!
//! A spec names a network, its parameters with defaults, derived values,
//! reusable blocks and the layer list. [`Spec::parse`] reads a file and its
//! imports once; [`Spec::build`] expands it with parameter overrides into a
//! shape-checked [`Graph`]. Every error names the file, line and column, and
//! the layer it concerns. The language is described in `docs/spec-language.md`.
//!
//! ```
//! use shufflekit_ir::cost;
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
//! let graph = shufflekit_spec::load_str(src, "tiny.yaml", &[]).unwrap();
//! let cost = cost::count(&graph, cost::Convention::Macs);
//! // stem: 16 * 16 outputs * 3 * 3 * 3 * 8; classifier: 8 * 10.
//! assert_eq!(cost.macs, 16 * 16 * 27 * 8 + 80);
//! ```

#![deny(missing_docs)]

pub mod expr;
pub mod yaml;

mod expand;
mod load;
mod source;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shufflekit_ir::graph::Graph;

pub use expand::{MAX_NODES, MAX_REPEAT, MAX_STEPS};
pub use expr::Value;
pub use load::{Block, Spec};
pub use source::SourceFile;
pub use write::{write_flat, SpecHeader, SpecWriteError};

/// The largest spec file read, in bytes.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// A spec problem with the place it concerns. Boxed, so results stay small;
/// its fields are read through [`SpecErrorInfo`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError(Box<SpecErrorInfo>);

impl std::ops::Deref for SpecError {
    type Target = SpecErrorInfo;
    fn deref(&self) -> &SpecErrorInfo {
        &self.0
    }
}

impl std::ops::DerefMut for SpecError {
    fn deref_mut(&mut self) -> &mut SpecErrorInfo {
        &mut self.0
    }
}

impl From<SpecErrorInfo> for SpecError {
    fn from(info: SpecErrorInfo) -> Self {
        SpecError(Box::new(info))
    }
}

/// The details of a [`SpecError`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpecErrorInfo {
    /// The file, as the user named it (or `<command line>` for `--set`).
    pub file: Arc<str>,
    /// The file's text, for showing the offending line.
    pub source: Arc<str>,
    /// Byte offset of the problem in `source`.
    pub offset: usize,
    /// Length in bytes of the offending text (at least 1 where there is text).
    pub len: usize,
    /// 1-based line (0 when the error has no place in a file).
    pub line: usize,
    /// 1-based column in chars (0 when there is no place).
    pub col: usize,
    /// The hierarchical layer name, when the error concerns a layer.
    pub layer: Option<String>,
    /// What is wrong, without a trailing period.
    pub message: String,
    /// Extra context: where a block was called from, valid alternatives.
    pub notes: Vec<String>,
}

impl SpecError {
    /// An error with no place in a file (an I/O error, a bad override).
    pub fn global(file: &str, message: impl Into<String>) -> Self {
        SpecError::from(SpecErrorInfo {
            file: file.into(),
            source: "".into(),
            offset: 0,
            len: 0,
            line: 0,
            col: 0,
            layer: None,
            message: message.into(),
            notes: Vec::new(),
        })
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if let Some(layer) = &self.layer {
            write!(f, "layer `{layer}`: ")?;
        }
        write!(f, "{}", self.message)?;
        for note in &self.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Parameter overrides as `name=value` pairs (values are expressions, e.g.
/// `3`, `0.5`, `true`).
pub type Overrides = [(String, String)];

/// Splits a `name=value` command-line override.
pub fn parse_override(text: &str) -> Result<(String, String), SpecError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(SpecError::global(
            "<command line>",
            format!("`--set {text}` must have the form name=value"),
        )),
    }
}

/// Reads a spec file (and its imports) and builds the graph.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Graph, SpecError> {
    Spec::parse_file(path)?.build(overrides)
}

/// Parses spec text (imports resolve relative to the current directory) and
/// builds the graph.
pub fn load_str(src: &str, file: &str, overrides: &Overrides) -> Result<Graph, SpecError> {
    Spec::parse(src, file, &PathBuf::from("."))?.build(overrides)
}

/// The parameters of a spec with their values after overrides, in
/// declaration order.
pub type ParamValues = BTreeMap<String, Value>;
