//! The graph verifier. It collects every problem, each with its node, rather
//! than stopping at the first.
//!
//! Invariants checked:
//! - the graph has an output node and at least one `input` node;
//! - the graph is acyclic and the stored node order is topological;
//! - every node has the number of inputs its op takes;
//! - every node's stored shape equals the shape its op infers from its
//!   inputs now (so a pass that rewrote an op kept shapes consistent);
//! - names are non-empty and unique.

use std::collections::{HashMap, HashSet};

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::graph::{Graph, IrError};
use crate::ops::Arity;

/// Checks the graph; returns every problem found.
pub fn verify(graph: &Graph) -> Result<(), Vec<IrError>> {
    let mut errors = Vec::new();
    let mut seen_names: HashMap<&str, usize> = HashMap::new();
    let mut placed = HashSet::new();
    let whole = |message: String| IrError {
        node: graph.name.clone(),
        op: "graph",
        loc: None,
        message,
    };
    if graph.input_nodes().is_empty() {
        errors.push(whole("the graph has no input node".into()));
    }
    match graph.output() {
        None => errors.push(whole("the graph has no output node".into())),
        Some(o) if graph.petgraph().node_weight(o.0).is_none() => {
            errors.push(whole(format!("the output {o} does not exist")))
        }
        Some(_) => {}
    }
    if is_cyclic(graph) {
        errors.push(whole("the graph has a cycle".into()));
    }
    if graph.petgraph().node_count() != graph.len() {
        errors.push(whole(format!(
            "{} nodes exist but {} are in the node order",
            graph.petgraph().node_count(),
            graph.len()
        )));
    }
    for id in graph.nodes() {
        let node = graph.node(id);
        let err = |message: String| IrError {
            node: node.name.clone(),
            op: node.op.kind(),
            loc: node.loc.clone(),
            message,
        };
        if node.name.is_empty() {
            errors.push(err(format!("{id} has an empty name")));
        }
        *seen_names.entry(&node.name).or_default() += 1;
        let inputs = graph.inputs(id);
        for i in &inputs {
            if !placed.contains(i) {
                errors.push(err(format!(
                    "input {i} does not come before {id} in the node order"
                )));
            }
        }
        placed.insert(id);
        let arity_ok = match node.op.arity() {
            Arity::Exactly(n) => inputs.len() == n,
            Arity::AtLeast(n) => inputs.len() >= n,
        };
        if !arity_ok {
            errors.push(err(format!(
                "has {} inputs, wrong for its op",
                inputs.len()
            )));
            continue;
        }
        match node.op.output_shape(&graph.input_shapes(id)) {
            Ok(s) if s == node.shape => {}
            Ok(s) => errors.push(err(format!(
                "stored shape {} differs from the inferred shape {s}",
                node.shape
            ))),
            Err(e) => errors.push(err(e)),
        }
    }
    for (name, count) in seen_names {
        if count > 1 {
            errors.push(whole(format!("the name `{name}` is used {count} times")));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A graph the verifier rejected: every problem it found, in the order
/// found. Displays them joined by `; `.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyErrors(pub Vec<IrError>);

impl From<Vec<IrError>> for VerifyErrors {
    fn from(errors: Vec<IrError>) -> Self {
        VerifyErrors(errors)
    }
}

impl std::fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyErrors {}

/// Whether the graph has a cycle: Kahn's algorithm, which removes nodes
/// without pending inputs until none is left. Iterative, so a chain of
/// 100,000 layers needs no deep stack (petgraph's `is_cyclic_directed`
/// recurses once per node and overflowed it).
fn is_cyclic(graph: &Graph) -> bool {
    let g = graph.petgraph();
    let mut pending: HashMap<NodeIndex<u32>, usize> = g
        .node_indices()
        .map(|n| (n, g.edges_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: Vec<NodeIndex<u32>> = pending
        .iter()
        .filter(|(_, &c)| c == 0)
        .map(|(&n, _)| n)
        .collect();
    let mut done = 0;
    while let Some(n) = ready.pop() {
        done += 1;
        for e in g.edges_directed(n, Direction::Outgoing) {
            if let Some(c) = pending.get_mut(&e.target()) {
                *c -= 1;
                if *c == 0 {
                    ready.push(e.target());
                }
            }
        }
    }
    done < g.node_count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Conv2d, Op};
    use crate::shape::Shape;

    #[test]
    fn a_well_formed_graph_passes() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(3, 8, 8)), "input", &[], None)
            .unwrap();
        g.add(Op::Conv2d(Conv2d::new(4, 3)), "c", &[x], None)
            .unwrap();
        assert!(verify(&g).is_ok());
    }

    #[test]
    fn a_cycle_is_reported() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(3, 8, 8)), "input", &[], None)
            .unwrap();
        let a = g.add(Op::Relu, "a", &[x], None).unwrap();
        let b = g.add(Op::Relu, "b", &[a], None).unwrap();
        g.set_inputs(a, &[b]);
        let errors = verify(&g).unwrap_err();
        assert!(
            errors.iter().any(|e| e.message.contains("cycle")),
            "{errors:?}"
        );
        assert!(g.sort_topologically().is_err());
    }

    #[test]
    fn every_problem_is_reported() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(3, 8, 8)), "input", &[], None)
            .unwrap();
        let a = g
            .add(Op::Conv2d(Conv2d::new(4, 3)), "a", &[x], None)
            .unwrap();
        let b = g.add(Op::Relu, "b", &[a], None).unwrap();
        // Two broken nodes: a shape that no longer matches, and a bad group count.
        g.node_mut(b).shape = Shape::chw(5, 6, 6);
        if let Op::Conv2d(c) = &mut g.node_mut(a).op {
            c.groups = 2;
        }
        let errors = verify(&g).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| e.node == "a" && e.message.contains("divisible")));
        assert!(errors
            .iter()
            .any(|e| e.node == "b" && e.message.contains("differs")));
        let joined = VerifyErrors::from(errors.clone()).to_string();
        assert_eq!(joined, format!("{}; {}", errors[0], errors[1]));
    }
}
