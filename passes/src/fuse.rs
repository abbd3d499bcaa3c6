//! Fuses work into the epilogue of the convolution that feeds it: a
//! residual `add` whose one input is a convolution becomes that
//! convolution's `residual` input, and a `relu` or `relu6` after a
//! convolution becomes its `activation`. The epilogue computes
//! `activation(conv + bias + residual)`, so the add is fused before the
//! activation.
//!
//! It does not fuse when the convolution has other users (they need the
//! value before the add or activation), when it already has an activation
//! (the add would come after it), and it fuses nothing into linear layers,
//! pooling or concat.

use shufflekit_ir::ops::Activation;
use shufflekit_ir::{Graph, NodeId, Op};

use crate::util::{fuse_activations, single_user};
use crate::{Module, Pass, PassError, PassLog};

/// The pass.
pub struct FuseEpilogue;

const NAME: &str = "fuse-epilogue";

impl Pass for FuseEpilogue {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, module: &mut Module, log: &mut PassLog) -> Result<(), PassError> {
        let graph = &mut module.graph;
        let adds: Vec<NodeId> = graph
            .nodes()
            .filter(|&n| matches!(graph.node(n).op, Op::Add))
            .collect();
        let mut reorder = false;
        for add in adds {
            let inputs = graph.inputs(add);
            // Prefer the convolution that comes later: its partner is then
            // already computed when it runs.
            let pick = [1, 0]
                .into_iter()
                .find(|&i| plain_conv(graph, inputs[i], add));
            let Some(i) = pick else {
                log.notes.push(format!(
                    "{}: not fused: no input is a convolution used only here",
                    graph.node(add).name
                ));
                continue;
            };
            let (conv, residual) = (inputs[i], inputs[1 - i]);
            if let Op::Conv2d(c) = &mut graph.node_mut(conv).op {
                c.residual = true;
            }
            let x = graph.inputs(conv)[0];
            graph.set_inputs(conv, &[x, residual]);
            graph.replace_uses(add, conv);
            graph.remove(add);
            reorder = true;
            log.changes += 1;
        }
        if reorder {
            graph
                .sort_topologically()
                .map_err(|message| PassError::Internal {
                    pass: NAME,
                    message,
                })?;
        }
        fuse_activations(graph, log, |op| match op {
            Op::Conv2d(c) => Some(&mut c.activation),
            _ => None,
        });
        Ok(())
    }
}

/// A convolution without epilogue whose only user is `user`.
fn plain_conv(graph: &Graph, id: NodeId, user: NodeId) -> bool {
    matches!(&graph.node(id).op, Op::Conv2d(c) if !c.residual && c.activation == Activation::None)
        && single_user(graph, id) == Some(user)
}
