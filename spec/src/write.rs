//! Writes a graph as a flat spec: the input shape, then every layer in node
//! order with its name, explicit `from` and the fields of its op
//! ([`shufflekit_ir::ops::SPEC_SYNTAX`] names them; the parser reads the same
//! names). Parsing the text gives back the same graph: same ops, shapes,
//! edges and names.
//!
//! It writes what a spec can say. Graphs after the compiler passes (fused
//! activations, residuals and channel orders) and names that are not layer
//! names are refused with the layer and the reason; it does not rename.

use std::fmt::Write;

use crate::load::is_layer_name;
use shufflekit_ir::graph::Graph;
use shufflekit_ir::ops::{Op, SpecSyntax};

/// Why a graph cannot be written as a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layer `{layer}` cannot be written as a spec: {reason}")]
pub struct SpecWriteError {
    /// The node's name.
    pub layer: String,
    /// What a spec cannot express about it.
    pub reason: String,
}

/// What goes above the layers: comment lines (without `#`) and the
/// optional free-text `doc`.
#[derive(Debug, Clone, Default)]
pub struct SpecHeader<'a> {
    /// Lines written as `# ...` at the top.
    pub comments: &'a [String],
    /// The spec's `doc:` text.
    pub doc: Option<&'a str>,
}

/// The flat spec of `graph`.
pub fn write_flat(graph: &Graph, header: &SpecHeader<'_>) -> Result<String, SpecWriteError> {
    let mut s = String::new();
    for line in header.comments {
        let _ = writeln!(s, "# {}", line.replace(['\n', '\r'], " "));
    }
    let _ = writeln!(s, "name: {}", quoted(&graph.name));
    if let Some(doc) = header.doc {
        let doc: String = doc.chars().filter(|c| !c.is_control()).collect();
        if !doc.trim().is_empty() {
            let _ = writeln!(s, "doc: {}", quoted(doc.trim()));
        }
    }
    let inputs = graph.input_nodes();
    let &[input] = &inputs[..] else {
        return Err(SpecWriteError {
            layer: graph.name.clone(),
            reason: format!("a spec has one input, the graph has {}", inputs.len()),
        });
    };
    let _ = writeln!(s, "input: {}", list(graph.node(input).shape.dims()));
    let _ = writeln!(s, "layers:");
    let mut last = None;
    for id in graph.nodes() {
        let node = graph.node(id);
        let refuse = |reason: String| SpecWriteError {
            layer: node.name.clone(),
            reason,
        };
        let Some(key) = node.op.spec_key() else {
            if id == input {
                continue;
            }
            return Err(refuse("a second input".into()));
        };
        if !is_layer_name(&node.name) {
            return Err(refuse(
                "a layer name may use only letters, digits, `_` and `-`".into(),
            ));
        }
        let fields = fields(&node.op).map_err(refuse)?;
        debug_assert!(fields
            .iter()
            .all(|(f, _)| SpecSyntax::find(key).is_some_and(|syntax| syntax.fields.contains(f))));
        let from: Vec<String> = graph
            .inputs(id)
            .iter()
            .map(|&i| graph.node(i).name.clone())
            .collect();
        let from = match &from[..] {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let _ = write!(s, "  - {key}: {{name: {}, from: {from}", node.name);
        for (field, value) in fields {
            let _ = write!(s, ", {field}: {value}");
        }
        let _ = writeln!(s, "}}");
        last = Some(id);
    }
    if let Some(out) = graph.output() {
        if Some(out) != last {
            let _ = writeln!(s, "output: {}", graph.node(out).name);
        }
    }
    Ok(s)
}

/// The fields of an op as the parser reads them, or why a spec cannot say
/// it.
fn fields(op: &Op) -> Result<Vec<(&'static str, String)>, String> {
    let mut f = Vec::new();
    match op {
        Op::Conv2d(c) => {
            if c.activation != shufflekit_ir::ops::Activation::None
                || c.residual
                || c.output_order.is_some()
            {
                return Err("it has a fused epilogue (the compiler passes made it)".into());
            }
            f.push(("out", c.out_channels.to_string()));
            f.push(("kernel", pair(c.kernel)));
            f.push(("stride", pair(c.stride)));
            f.push(("padding", pair(c.padding)));
            if c.dilation != [1, 1] {
                f.push(("dilation", pair(c.dilation)));
            }
            if c.groups != 1 {
                f.push(("groups", c.groups.to_string()));
            }
            // The parser's default is no bias.
            if c.bias {
                f.push(("bias", "true".into()));
            }
        }
        // Display is the shortest text that reads back to the same f32.
        Op::BatchNorm(b) => f.push(("eps", b.eps.to_string())),
        Op::ChannelShuffle(c) => f.push(("groups", c.groups.to_string())),
        Op::MaxPool(p) | Op::AvgPool(p) => {
            f.push(("kernel", pair(p.kernel)));
            f.push(("stride", pair(p.stride)));
            f.push(("padding", pair(p.padding)));
            f.push(("ceil_mode", p.ceil_mode.to_string()));
            if matches!(op, Op::AvgPool(_)) {
                f.push(("count_include_pad", p.count_include_pad.to_string()));
            }
        }
        Op::Concat(c) if c.output_order.is_some() => {
            return Err("it has a fused channel order (the compiler passes made it)".into())
        }
        Op::Concat(c) if c.activation != shufflekit_ir::ops::Activation::None => {
            return Err(format!(
                "it has a fused activation (`{op}`, made by the compiler passes)"
            ))
        }
        Op::ChannelSlice(c) => {
            f.push(("start", c.start.to_string()));
            f.push(("len", c.len.to_string()));
        }
        Op::Linear(l) => {
            f.push(("out", l.out_features.to_string()));
            f.push(("bias", l.bias.to_string()));
        }
        Op::Input(_) => {}
        // The ops a key names alone.
        op if op.spec_key().and_then(Op::from_bare_spec_key).as_ref() == Some(op) => {}
        op => {
            return Err(format!(
                "the spec writer does not know the fields of `{op}`"
            ))
        }
    }
    Ok(f)
}

fn pair(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        list(&v)
    }
}

fn list(v: &[usize]) -> String {
    let items: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// A YAML single-quoted scalar.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
