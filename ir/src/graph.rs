//! The graph IR: a petgraph `StableGraph` of [`Node`]s wrapped in
//! [`Graph`], whose only way to add a node checks its shapes at once, so a
//! bad spec fails at the node that is wrong.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ops::{Arity, Op, WeightSpec};
use crate::shape::Shape;

/// A node's id. Prints as `n3`, the way the text dump names nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub NodeIndex<u32>);

impl NodeId {
    /// The index as a number (stable across node removals).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0.index())
    }
}

/// Where in a spec file a node came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceLoc {
    /// The spec file, as the user named it.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One operation in the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// Hierarchical name, unique in the graph (`stage3.unit2.pw1`).
    pub name: String,
    /// Output shape without the batch dimension.
    pub shape: Shape,
    /// The spec location the node came from, if it came from a spec.
    pub loc: Option<SourceLoc>,
}

/// An error found while building or verifying a graph, with the node it
/// concerns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}layer `{node}` ({op}): {message}", loc.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
pub struct IrError {
    /// Name of the node.
    pub node: String,
    /// The node's op kind.
    pub op: &'static str,
    /// Where the node came from.
    pub loc: Option<SourceLoc>,
    /// What is wrong.
    pub message: String,
}

/// A network: nodes with ordered inputs, one designated output.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The network's name.
    pub name: String,
    g: StableDiGraph<Node, usize>,
    names: HashMap<String, NodeId>,
    /// The node order; removed nodes leave a hole (`None`) until more than
    /// half are holes, so removing is O(1) amortised, not O(n).
    order: Vec<Option<NodeId>>,
    /// Where each node is in `order`.
    position: HashMap<NodeId, usize>,
    /// Number of holes in `order`.
    holes: usize,
    output: Option<NodeId>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a node after checking its arity, input shapes, name and size
    /// limits. The new node becomes the output.
    pub fn add(
        &mut self,
        op: Op,
        name: impl Into<String>,
        inputs: &[NodeId],
        loc: Option<SourceLoc>,
    ) -> Result<NodeId, IrError> {
        let name = name.into();
        let err = |message: String| IrError {
            node: name.clone(),
            op: op.kind(),
            loc: loc.clone(),
            message,
        };
        let arity_ok = match op.arity() {
            Arity::Exactly(n) => inputs.len() == n,
            Arity::AtLeast(n) => inputs.len() >= n,
        };
        if !arity_ok {
            return Err(err(format!(
                "takes {} input(s), got {}",
                match op.arity() {
                    Arity::Exactly(n) => n.to_string(),
                    Arity::AtLeast(n) => format!("at least {n}"),
                },
                inputs.len()
            )));
        }
        if name.is_empty() {
            return Err(err("a layer needs a name".into()));
        }
        if let Some(&other) = self.names.get(&name) {
            return Err(err(format!(
                "the name is already used by {other} ({})",
                self.node(other).op.kind()
            )));
        }
        let mut shapes = Vec::with_capacity(inputs.len());
        for &i in inputs {
            match self.g.node_weight(i.0) {
                Some(n) => shapes.push(&n.shape),
                None => return Err(err(format!("input {i} does not exist"))),
            }
        }
        let shape = op.output_shape(&shapes).map_err(&err)?;
        let node = Node {
            op,
            name: name.clone(),
            shape,
            loc,
        };
        let id = NodeId(self.g.add_node(node));
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i.0, id.0, slot);
        }
        self.names.insert(name, id);
        self.position.insert(id, self.order.len());
        self.order.push(Some(id));
        self.output = Some(id);
        Ok(id)
    }

    /// The node with this id. Panics on an id from another graph or a removed
    /// node: ids are only handed out by this graph.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    /// Mutable access to a node. Callers that change an op must keep shapes
    /// consistent; [`crate::verify`] checks.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    /// Looks a node up by its full name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// The node's inputs, in slot order.
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), NodeId(e.source())))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that read this node's output (once per use).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self
            .g
            .edges_directed(id.0, Direction::Outgoing)
            .map(|e| NodeId(e.target()))
            .collect();
        users.sort();
        users
    }

    /// Shapes of the node's inputs, in slot order.
    pub fn input_shapes(&self, id: NodeId) -> Vec<&Shape> {
        self.inputs(id)
            .into_iter()
            .map(|i| &self.node(i).shape)
            .collect()
    }

    /// The weight tensors of a node.
    pub fn weights(&self, id: NodeId) -> Vec<WeightSpec> {
        self.node(id).op.weights(&self.input_shapes(id))
    }

    /// Node ids in the order they were added, which is a topological order
    /// (inputs always exist before their users).
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.order.iter().flatten().copied()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.order.len() - self.holes
    }

    /// True when the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `Input` nodes, in order.
    pub fn input_nodes(&self) -> Vec<NodeId> {
        self.nodes()
            .filter(|&n| matches!(self.node(n).op, Op::Input(_)))
            .collect()
    }

    /// The node whose value the network returns.
    pub fn output(&self) -> Option<NodeId> {
        self.output
    }

    /// Chooses the output node.
    pub fn set_output(&mut self, id: NodeId) {
        self.output = Some(id);
    }

    /// The petgraph graph, for algorithms (read only).
    pub fn petgraph(&self) -> &StableDiGraph<Node, usize> {
        &self.g
    }

    /// Makes every user of `old` (and the graph output, if it is `old`) read
    /// `new` instead, in the same input slots.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        // Only `old`'s own edges are visited: a scan of every edge here made
        // passes over long chains quadratic.
        let uses: Vec<(EdgeIndex<u32>, NodeId, usize)> = self
            .g
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.id(), NodeId(e.target()), *e.weight()))
            .collect();
        for &(edge, _, _) in &uses {
            self.g.remove_edge(edge);
        }
        for (_, user, slot) in uses {
            self.g.add_edge(new.0, user.0, slot);
        }
        if self.output == Some(old) {
            self.output = Some(new);
        }
    }

    /// Replaces a node's inputs. The caller keeps shapes consistent (the
    /// verifier checks) and calls [`Graph::sort_topologically`] if an input
    /// now comes later in the node order.
    pub fn set_inputs(&mut self, id: NodeId, inputs: &[NodeId]) {
        let old: Vec<EdgeIndex<u32>> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for edge in old {
            self.g.remove_edge(edge);
        }
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i.0, id.0, slot);
        }
    }

    /// Renames a node. Fails if the name is taken.
    pub fn rename(&mut self, id: NodeId, name: String) -> Result<(), String> {
        if self.names.contains_key(&name) {
            return Err(format!("the name `{name}` is already used"));
        }
        let old = std::mem::replace(&mut self.g[id.0].name, name.clone());
        self.names.remove(&old);
        self.names.insert(name, id);
        Ok(())
    }

    /// Re-sorts the node order topologically, keeping the current order
    /// wherever the edges allow it. Fails if the graph has a cycle.
    pub fn sort_topologically(&mut self) -> Result<(), String> {
        let position = &self.position;
        let mut pending: HashMap<NodeId, usize> = self
            .nodes()
            .map(|n| (n, self.g.edges_directed(n.0, Direction::Incoming).count()))
            .collect();
        let mut ready: std::collections::BTreeSet<(usize, NodeId)> = pending
            .iter()
            .filter(|(_, &c)| c == 0)
            .map(|(&n, _)| (position[&n], n))
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(first) = ready.pop_first() {
            let n = first.1;
            order.push(n);
            for e in self.g.edges_directed(n.0, Direction::Outgoing) {
                let t = NodeId(e.target());
                if let Some(c) = pending.get_mut(&t) {
                    *c -= 1;
                    if *c == 0 {
                        ready.insert((position[&t], t));
                    }
                }
            }
        }
        if order.len() != self.len() {
            return Err("the graph has a cycle".into());
        }
        self.set_order(order);
        Ok(())
    }

    /// Replaces the node order (without holes) and its position index.
    fn set_order(&mut self, order: Vec<NodeId>) {
        self.position = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        self.order = order.into_iter().map(Some).collect();
        self.holes = 0;
    }

    /// Removes a node and its edges. Ids of other nodes stay valid.
    pub fn remove(&mut self, id: NodeId) -> Option<Node> {
        let node = self.g.remove_node(id.0)?;
        self.names.remove(&node.name);
        if let Some(p) = self.position.remove(&id) {
            self.order[p] = None;
            self.holes += 1;
            if self.holes > self.order.len() / 2 {
                let order: Vec<NodeId> = self.nodes().collect();
                self.set_order(order);
            }
        }
        if self.output == Some(id) {
            self.output = None;
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removing nodes (which leaves holes in the order, compacted now and
    /// then) and re-adding them keeps the order, the length and the edges
    /// right.
    #[test]
    fn removals_keep_the_node_order() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(1, 2, 2)), "input", &[], None)
            .unwrap();
        let mut ids = vec![x];
        for k in 0..20 {
            let prev = *ids.last().unwrap();
            ids.push(g.add(Op::Relu, format!("r{k}"), &[prev], None).unwrap());
        }
        // Remove every other relu, bypassing it.
        let mut kept = vec![x];
        for (k, &id) in ids.iter().enumerate().skip(1) {
            if k % 2 == 1 {
                let input = g.inputs(id)[0];
                g.replace_uses(id, input);
                assert!(g.remove(id).is_some());
            } else {
                kept.push(id);
            }
            assert_eq!(g.len(), g.nodes().count());
        }
        assert_eq!(g.nodes().collect::<Vec<_>>(), kept);
        for w in kept.windows(2) {
            assert_eq!(g.inputs(w[1]), vec![w[0]]);
            assert_eq!(g.users(w[0]), vec![w[1]]);
        }
        // A new node goes last, even when it reuses a removed node's index.
        let last = *kept.last().unwrap();
        let new = g.add(Op::Relu, "new", &[last], None).unwrap();
        assert_eq!(g.nodes().last(), Some(new));
        assert_eq!(g.len(), kept.len() + 1);
        g.sort_topologically().unwrap();
        assert_eq!(g.nodes().last(), Some(new));
        assert!(crate::verify::verify(&g).is_ok());
    }
}
