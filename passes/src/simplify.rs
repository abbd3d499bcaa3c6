//! Removes nodes that compute nothing: identity shuffles (one group, or as
//! many groups as channels), slices of every channel, single-input concats
//! without a fused activation, flattens of flat tensors, identity channel
//! orders, and nodes whose value no path to the output uses.
//!
//! It does not merge equal nodes or reorder anything.

use std::collections::HashSet;

use shufflekit_ir::ops::Activation;
use shufflekit_ir::{Graph, NodeId, Op};

use crate::{Module, Pass, PassError, PassLog};

/// The pass.
pub struct Simplify;

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn run(&self, module: &mut Module, log: &mut PassLog) -> Result<(), PassError> {
        let graph = &mut module.graph;
        let ids: Vec<NodeId> = graph.nodes().collect();
        for id in ids {
            clear_identity_order(graph, id, log);
            if is_identity(graph, id) {
                let input = graph.inputs(id)[0];
                graph.replace_uses(id, input);
                graph.remove(id);
                log.changes += 1;
            }
        }
        let live = live_nodes(graph);
        let dead: Vec<NodeId> = graph
            .nodes()
            .filter(|n| !live.contains(n) && !matches!(graph.node(*n).op, Op::Input(_)))
            .collect();
        for n in dead {
            if let Some(w) = module.weights.as_mut() {
                let name = graph.node(n).name.clone();
                for spec in graph.weights(n) {
                    w.remove(&spec.tensor_name(&name));
                }
            }
            graph.remove(n);
            log.changes += 1;
        }
        Ok(())
    }
}

fn clear_identity_order(graph: &mut Graph, id: NodeId, log: &mut PassLog) {
    let order = match &mut graph.node_mut(id).op {
        Op::Conv2d(c) => &mut c.output_order,
        Op::Concat(c) => &mut c.output_order,
        _ => return,
    };
    if order
        .as_ref()
        .is_some_and(|o| o.iter().enumerate().all(|(k, &c)| k == c))
    {
        *order = None;
        log.changes += 1;
    }
}

fn is_identity(graph: &Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    let input_shape = || graph.input_shapes(id).first().map(|s| (*s).clone());
    match &node.op {
        Op::ChannelShuffle(s) => s.groups == 1 || s.groups == node.shape.channels(),
        Op::ChannelSlice(s) => s.start == 0 && input_shape().is_some_and(|i| i == node.shape),
        Op::Concat(c) => {
            c.output_order.is_none()
                && c.activation == Activation::None
                && graph.inputs(id).len() == 1
        }
        Op::Flatten => input_shape().is_some_and(|i| i.rank() == 1),
        _ => false,
    }
}

/// Nodes from which the output can be reached.
fn live_nodes(graph: &Graph) -> HashSet<NodeId> {
    let mut live = HashSet::new();
    let mut stack: Vec<NodeId> = graph.output().into_iter().collect();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(graph.inputs(n));
        }
    }
    live
}
