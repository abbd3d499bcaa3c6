//! Rendering of spec errors with the offending source line underlined.

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Config};
use shufflekit_ir::spec::SpecError;

/// The error as text: `error: message`, `--> file:line:col`, the source line
/// with the offending text underlined, and notes.
pub fn render(e: &SpecError) -> String {
    let message = match &e.layer {
        Some(layer) => format!("layer `{layer}`: {}", e.message),
        None => e.message.clone(),
    };
    if e.line == 0 || e.source.is_empty() {
        let mut s = format!("error: {}: {message}\n", e.file);
        for n in &e.notes {
            s.push_str(&format!("  = note: {n}\n"));
        }
        return s;
    }
    let file = SimpleFile::new(e.file.to_string(), e.source.to_string());
    let src = &*e.source;
    let mut start = e.offset.min(src.len());
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + e.len.max(1)).min(src.len());
    while !src.is_char_boundary(end) {
        end += 1;
    }
    let diagnostic = Diagnostic::error()
        .with_message(message)
        .with_labels(vec![Label::primary((), start..end)])
        .with_notes(e.notes.clone());
    match term::emit_into_string(&Config::default(), &file, &diagnostic) {
        Ok(s) => s,
        Err(_) => format!("error: {e}\n"),
    }
}
