//! The deterministic text form of a graph, used by `--print-ir`, in errors
//! and in golden tests. One line a node, in topological order:
//!
//! ```text
//! n1 = conv2d out=24 k=3 s=2 p=1 (n0) -> [24, 112, 112]  ; conv1 @ specs/x.yaml:12:5
//! ```

use std::fmt::Write;

use crate::graph::Graph;

/// Options for [`dump`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    /// Append each node's spec location.
    pub locations: bool,
}

/// Renders the graph as text, one node a line.
pub fn dump(graph: &Graph, options: DumpOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", graph.name);
    for id in graph.nodes() {
        let node = graph.node(id);
        let inputs: Vec<String> = graph.inputs(id).iter().map(|i| i.to_string()).collect();
        let _ = write!(out, "  {id} = {}", node.op);
        if !inputs.is_empty() {
            let _ = write!(out, " ({})", inputs.join(", "));
        }
        let _ = write!(out, " -> {}  ; {}", node.shape, node.name);
        if options.locations {
            if let Some(loc) = &node.loc {
                let _ = write!(out, " @ {loc}");
            }
        }
        out.push('\n');
    }
    if let Some(o) = graph.output() {
        let _ = writeln!(out, "  return {o}");
    }
    out.push_str("}\n");
    out
}
