//! Removes channel shuffles by absorbing each one into the channel order in
//! which a neighbouring op writes or reads its channels, so a shuffle costs
//! nothing at run time.
//!
//! A shuffle `S` (output channel `k` = input channel `P[k]`) is folded:
//! - upward, when the chain from its input up to a producing convolution or
//!   concat has single users and only per-channel ops (batch norm,
//!   activations, pooling, depthwise convolution): the producer's
//!   `output_order` is composed with `P` and the per-channel ops' parameters
//!   are permuted (`new[k] = old[P[k]]`), since a permutation commutes with
//!   per-channel work;
//! - otherwise downward, when every user of the shuffle is a dense
//!   convolution (one group): their weights' input channels are permuted.
//!
//! It does not fold a shuffle that feeds or follows anything else (an add,
//! a slice, the graph output, a grouped consumer, a convolution with a fused
//! residual): the shuffle stays, and the log says why.

use shufflekit_ir::ops::{ChannelShuffle, WeightKey};
use shufflekit_ir::weights::Weights;
use shufflekit_ir::{Graph, NodeId, Op};

use crate::util::{permute, single_user, tensor_mut};
use crate::{Module, Pass, PassError, PassLog};

/// The pass.
pub struct FoldShuffle;

const NAME: &str = "fold-channel-shuffle";

impl Pass for FoldShuffle {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, module: &mut Module, log: &mut PassLog) -> Result<(), PassError> {
        let shuffles: Vec<NodeId> = module
            .graph
            .nodes()
            .filter(|&n| matches!(module.graph.node(n).op, Op::ChannelShuffle(_)))
            .collect();
        for s in shuffles {
            let perm = shuffle_permutation(&module.graph, s);
            let up = plan_up(&module.graph, s);
            let plan = match up {
                Ok(plan) => plan,
                Err(why_up) => match plan_down(&module.graph, s) {
                    Ok(plan) => plan,
                    Err(why_down) => {
                        log.notes.push(format!(
                            "{}: not folded: upward: {why_up}; downward: {why_down}",
                            module.graph.node(s).name
                        ));
                        continue;
                    }
                },
            };
            apply(module, s, &perm, plan)?;
            log.changes += 1;
        }
        Ok(())
    }
}

/// `P` with output channel `k` = input channel `P[k]`.
fn shuffle_permutation(graph: &Graph, s: NodeId) -> Vec<usize> {
    let channels = graph.node(s).shape.channels();
    let Op::ChannelShuffle(p) = &graph.node(s).op else {
        unreachable!("only shuffles are folded")
    };
    let p: &ChannelShuffle = p;
    (0..channels)
        .map(|k| p.source_channel(k, channels))
        .collect()
}

enum Plan {
    /// Compose the producer's order; permute the chain's per-channel ops.
    Up {
        producer: NodeId,
        chain: Vec<NodeId>,
    },
    /// Permute the input channels of these dense convolutions.
    Down { users: Vec<NodeId> },
}

fn plan_up(graph: &Graph, s: NodeId) -> Result<Plan, String> {
    let mut chain = Vec::new();
    let mut next = s;
    let mut cur = graph.inputs(s)[0];
    loop {
        let node = graph.node(cur);
        if single_user(graph, cur) != Some(next) {
            return Err(format!("`{}` has other users", node.name));
        }
        match &node.op {
            op if op.is_per_channel() => {}
            Op::Conv2d(c) => {
                if c.residual {
                    return Err(format!("`{}` has a fused residual", node.name));
                }
                let depthwise = c
                    .geometry(graph.input_shapes(cur)[0])
                    .is_ok_and(|g| g.is_depthwise());
                if !(depthwise && c.output_order.is_none()) {
                    return Ok(Plan::Up {
                        producer: cur,
                        chain,
                    });
                }
            }
            Op::Concat(_) => {
                return Ok(Plan::Up {
                    producer: cur,
                    chain,
                })
            }
            other => return Err(format!("`{}` is a {}", node.name, other.kind())),
        }
        chain.push(cur);
        next = cur;
        cur = graph.inputs(cur)[0];
    }
}

fn plan_down(graph: &Graph, s: NodeId) -> Result<Plan, String> {
    if graph.output() == Some(s) {
        return Err("it is the graph output".into());
    }
    let users = graph.users(s);
    for &u in &users {
        let node = graph.node(u);
        match &node.op {
            Op::Conv2d(c)
                if c.groups == 1
                    && graph.inputs(u)[0] == s
                    && !(c.residual && graph.inputs(u)[1] == s) => {}
            other => {
                return Err(format!(
                    "its user `{}` ({}) cannot read permuted channels",
                    node.name,
                    other.kind()
                ))
            }
        }
    }
    if users.is_empty() {
        return Err("it has no users".into());
    }
    let mut users = users;
    users.dedup();
    Ok(Plan::Down { users })
}

fn apply(module: &mut Module, s: NodeId, perm: &[usize], plan: Plan) -> Result<(), PassError> {
    let graph = &mut module.graph;
    match plan {
        Plan::Up { producer, chain } => {
            for &n in &chain {
                if let Some(w) = module.weights.as_mut() {
                    permute_per_channel(graph, w, n, perm)?;
                }
            }
            let order = match &mut graph.node_mut(producer).op {
                Op::Conv2d(c) => &mut c.output_order,
                Op::Concat(c) => &mut c.output_order,
                _ => unreachable!("plan_up only picks convs and concats"),
            };
            *order = Some(match order.take() {
                Some(old) => permute(&old, perm),
                None => perm.to_vec(),
            });
        }
        Plan::Down { users } => {
            let mut inverse = vec![0; perm.len()];
            for (k, &p) in perm.iter().enumerate() {
                inverse[p] = k;
            }
            if let Some(w) = module.weights.as_mut() {
                for &u in &users {
                    let name = WeightKey::Weight.tensor_name(&graph.node(u).name);
                    let out = graph.node(u).shape.channels();
                    let data = tensor_mut(w, NAME, &name)?;
                    let cin = perm.len();
                    if data.len() % (out * cin) != 0 {
                        return Err(PassError::Weights {
                            pass: NAME,
                            message: format!("`{name}` does not have {out} x {cin} input channels"),
                        });
                    }
                    let taps = data.len() / (out * cin);
                    let old = data.to_vec();
                    for o in 0..out {
                        for (j, &from) in inverse.iter().enumerate() {
                            let src = (o * cin + from) * taps;
                            let dst = (o * cin + j) * taps;
                            data[dst..dst + taps].copy_from_slice(&old[src..src + taps]);
                        }
                    }
                }
            }
        }
    }
    let input = graph.inputs(s)[0];
    graph.replace_uses(s, input);
    graph.remove(s);
    Ok(())
}

/// Permutes the per-channel parameters of a node the permutation moves past.
fn permute_per_channel(
    graph: &Graph,
    weights: &mut Weights,
    n: NodeId,
    perm: &[usize],
) -> Result<(), PassError> {
    let node = graph.node(n);
    // The first dimension of every weight tensor indexes the node's output
    // channels (`ops::WeightSpec`), so the permutation reorders its rows.
    for spec in graph.weights(n) {
        let name = spec.tensor_name(&node.name);
        let data = tensor_mut(weights, NAME, &name)?;
        if data.len() % perm.len() != 0 {
            return Err(PassError::Weights {
                pass: NAME,
                message: format!("`{name}` does not have {} channels", perm.len()),
            });
        }
        let row = data.len() / perm.len();
        let old = data.to_vec();
        for (k, &p) in perm.iter().enumerate() {
            data[k * row..(k + 1) * row].copy_from_slice(&old[p * row..(p + 1) * row]);
        }
    }
    Ok(())
}
