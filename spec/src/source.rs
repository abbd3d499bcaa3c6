//! One source file: its name as the user wrote it, its text, its YAML tree
//! and the located errors about it. Specs and search-space files both read
//! their YAML through here, so their errors look the same.

use std::path::Path;
use std::sync::Arc;

use crate::yaml::{self, Loc, Yaml};
use crate::{SpecError, SpecErrorInfo, MAX_SPEC_BYTES};

/// A source file and the errors that point into it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The file, as the user named it.
    pub name: Arc<str>,
    /// Its text.
    pub text: Arc<str>,
}

impl SourceFile {
    /// A file of the given name and text.
    pub fn new(name: &str, text: &str) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads UTF-8 text of at most [`MAX_SPEC_BYTES`]; `what` names the kind
    /// of file in messages ("the spec").
    pub fn read(path: &Path, what: &str) -> Result<SourceFile, SpecError> {
        let name = path.display().to_string();
        let text = read_limited(path, &name, what)?;
        Ok(SourceFile::new(&name, &text))
    }

    /// The located YAML tree of the text.
    pub fn parse_yaml(&self) -> Result<Yaml, SpecError> {
        yaml::parse(&self.text).map_err(|e| {
            let loc = e.loc.unwrap_or(Loc {
                line: 1,
                col: 1,
                offset: 0,
            });
            self.error(loc, 1, format!("invalid YAML: {}", e.message))
        })
    }

    /// The text of a map key, which must be a string.
    pub fn key_str<'y>(&self, key: &'y Yaml) -> Result<&'y str, SpecError> {
        key.as_str().ok_or_else(|| {
            self.error(
                key.loc,
                1,
                format!("keys must be names, found {}", key.type_name()),
            )
        })
    }

    /// The text of a node that must be a string; `what` names the field.
    pub fn string(&self, node: &Yaml, what: &str) -> Result<String, SpecError> {
        node.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.type_error(node, &format!("`{what}`"), "a string"))
    }

    /// An unknown key `name` (a `what`, such as "field"), with the closest
    /// valid one and the list of all.
    pub fn unknown_key(&self, key: &Yaml, name: &str, valid: &[&str], what: &str) -> SpecError {
        let mut e = self.error(key.loc, name.len(), format!("unknown {what} `{name}`"));
        if let Some(s) = suggest(name, valid.iter().copied()) {
            e.notes.push(format!("did you mean `{s}`?"));
        }
        e.notes.push(format!("valid: {}", valid.join(", ")));
        e
    }

    /// `what` must be `expected` but `node` is not.
    pub fn type_error(&self, node: &Yaml, what: &str, expected: &str) -> SpecError {
        self.error_at_node(
            node,
            format!("{what} must be {expected}, found {}", node.type_name()),
        )
    }

    /// An error at `node`, underlining its first token.
    pub fn error_at_node(&self, node: &Yaml, message: String) -> SpecError {
        self.error(node.loc, token_len(&self.text, node.loc.offset), message)
    }

    /// An error at `loc` underlining `len` bytes.
    pub fn error(&self, loc: Loc, len: usize, message: String) -> SpecError {
        let (line, col) = if loc.line == 0 {
            line_col(&self.text, loc.offset)
        } else {
            (loc.line, loc.col)
        };
        SpecError::from(SpecErrorInfo {
            file: self.name.clone(),
            source: self.text.clone(),
            offset: loc.offset.min(self.text.len()),
            len: len.min(self.text.len().saturating_sub(loc.offset)),
            line,
            col,
            layer: None,
            message,
            notes: Vec::new(),
        })
    }

    /// An error at a byte offset of the text.
    pub fn error_at_offset(&self, offset: usize, len: usize, message: String) -> SpecError {
        let (line, col) = line_col(&self.text, offset);
        self.error(Loc { line, col, offset }, len, message)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut cut = offset;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let before = &text[..cut];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Length of the token starting at `offset`, for underlining.
pub(crate) fn token_len(text: &str, offset: usize) -> usize {
    text.get(offset..)
        .map(|rest| {
            rest.find(['\n', ',', '}', ']', ':'])
                .unwrap_or(rest.len())
                .max(1)
                .min(rest.len())
        })
        .unwrap_or(0)
}

/// The closest candidate by edit distance, for "did you mean" notes.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len())
        .min()
        .map(|(_, c)| c)
}

pub(crate) fn read_limited(path: &Path, name: &str, what: &str) -> Result<String, SpecError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| SpecError::global(name, format!("cannot read {what}: {e}")))?;
    if !meta.is_file() {
        return Err(SpecError::global(
            name,
            format!("cannot read {what}: not a file"),
        ));
    }
    if meta.len() > MAX_SPEC_BYTES {
        return Err(SpecError::global(
            name,
            format!(
                "{what} is {} bytes, more than the limit of {MAX_SPEC_BYTES}",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| SpecError::global(name, format!("cannot read {what}: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        SpecError::global(
            name,
            format!(
                "{what} is not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}
