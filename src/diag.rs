//! Rendering of errors: spec errors with the offending source line
//! underlined, any other error as one line with each cause said once.

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Config};
use shufflekit_spec::SpecError;

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

/// An error and its causes on one line, `message: cause: cause`, leaving
/// out a cause whose text the message before it already contains. The
/// libraries' errors say their source in their own text (so that
/// `to_string()` is complete) and also return it from `source()`; printing
/// the whole chain as anyhow's `{:#}` does would say it twice.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    let mut previous = out.clone();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        previous = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    /// An error in the libraries' style: its text includes its source.
    #[derive(Debug)]
    struct Read {
        source: std::io::Error,
    }

    impl std::fmt::Display for Read {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read `m.onnx`: {}", self.source)
        }
    }

    impl std::error::Error for Read {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Read { source: io });
        assert_eq!(one_line(&e), "cannot read `m.onnx`: no such file");
        // Context that does not include its cause still shows it.
        let e = e.context("importing");
        assert_eq!(
            one_line(&e),
            "importing: cannot read `m.onnx`: no such file"
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io).context("writing `out.yaml`");
        assert_eq!(one_line(&e), "writing `out.yaml`: gone");
    }
}
