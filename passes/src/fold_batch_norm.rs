//! Folds an inference-mode batch norm into the convolution or linear layer
//! that feeds it: with `s = weight / sqrt(running_var + eps)`, the
//! producer's output channel `c` gets its weights scaled by `s[c]` and the
//! bias `(bias[c] - running_mean[c]) * s[c] + beta[c]`.
//!
//! It does not fold a batch norm whose producer has other users (they would
//! see the scaled values), one after a convolution that already has a fused
//! epilogue (activation or residual), or one after any other op; those stay
//! and are listed in the log.

use shufflekit_ir::ops::WeightKey;
use shufflekit_ir::{Graph, NodeId, Op};

use crate::util::{single_user, tensor, tensor_mut};
use crate::{Module, Pass, PassError, PassLog};

/// The pass.
pub struct FoldBatchNorm;

const NAME: &str = "fold-batch-norm";

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, module: &mut Module, log: &mut PassLog) -> Result<(), PassError> {
        let bns: Vec<NodeId> = module
            .graph
            .nodes()
            .filter(|&n| matches!(module.graph.node(n).op, Op::BatchNorm(_)))
            .collect();
        for bn in bns {
            match foldable(&module.graph, bn) {
                Ok(producer) => {
                    fold(module, producer, bn)?;
                    log.changes += 1;
                }
                Err(why) => log
                    .notes
                    .push(format!("{}: not folded: {why}", module.graph.node(bn).name)),
            }
        }
        Ok(())
    }
}

fn foldable(graph: &Graph, bn: NodeId) -> Result<NodeId, String> {
    let producer = graph.inputs(bn)[0];
    let p = graph.node(producer);
    match &p.op {
        Op::Conv2d(c) if c.residual || c.activation != Default::default() => {
            return Err(format!("`{}` already has a fused epilogue", p.name))
        }
        Op::Conv2d(_) | Op::Linear(_) => {}
        other => {
            return Err(format!(
                "its input `{}` is a {}, not a conv or linear",
                p.name,
                other.kind()
            ))
        }
    }
    if single_user(graph, producer) != Some(bn) {
        return Err(format!("`{}` has other users", p.name));
    }
    Ok(producer)
}

fn fold(module: &mut Module, producer: NodeId, bn: NodeId) -> Result<(), PassError> {
    let graph = &mut module.graph;
    let channels = graph.node(bn).shape.channels();
    let eps = match &graph.node(bn).op {
        Op::BatchNorm(b) => b.eps,
        _ => unreachable!("only batch norms are folded"),
    };
    let (had_bias, order) = match &mut graph.node_mut(producer).op {
        Op::Conv2d(c) => {
            let had = c.bias;
            c.bias = true;
            (had, c.output_order.clone())
        }
        Op::Linear(l) => {
            let had = l.bias;
            l.bias = true;
            (had, None)
        }
        _ => unreachable!("checked by foldable"),
    };
    if let Some(weights) = module.weights.as_mut() {
        let bn_name = graph.node(bn).name.clone();
        let p_name = graph.node(producer).name.clone();
        let bn_tensor =
            |key: WeightKey| tensor(weights, NAME, &key.tensor_name(&bn_name), channels);
        let gamma = bn_tensor(WeightKey::Weight)?;
        let beta = bn_tensor(WeightKey::Bias)?;
        let mean = bn_tensor(WeightKey::RunningMean)?;
        let var = bn_tensor(WeightKey::RunningVar)?;
        let kernel = WeightKey::Weight.tensor_name(&p_name);
        let w = tensor_mut(weights, NAME, &kernel)?;
        if w.len() % channels != 0 {
            return Err(PassError::Weights {
                pass: NAME,
                message: format!("`{kernel}` does not split into {channels} output channels"),
            });
        }
        let row = w.len() / channels;
        // Output channel k of the node is the producer's logical channel order[k].
        let logical = |k: usize| order.as_ref().map_or(k, |o| o[k]);
        let mut scale = vec![0f32; channels];
        for k in 0..channels {
            let s = gamma[k] / (var[k] + eps).sqrt();
            scale[logical(k)] = s;
            for v in &mut w[logical(k) * row..(logical(k) + 1) * row] {
                *v *= s;
            }
        }
        let old_bias = if had_bias {
            tensor(
                weights,
                NAME,
                &WeightKey::Bias.tensor_name(&p_name),
                channels,
            )?
        } else {
            vec![0.0; channels]
        };
        let mut bias = vec![0f32; channels];
        for k in 0..channels {
            let c = logical(k);
            bias[c] = (old_bias[c] - mean[k]) * scale[c] + beta[k];
        }
        let bias_tensor =
            shufflekit_ir::tensor::Tensor::new(vec![channels], bias).map_err(|e| {
                PassError::Weights {
                    pass: NAME,
                    message: e.to_string(),
                }
            })?;
        weights.insert_of(&p_name, WeightKey::Bias, bias_tensor);
        for key in WeightKey::ALL {
            weights.remove_of(&bn_name, key);
        }
    }
    graph.replace_uses(bn, producer);
    graph.remove(bn);
    Ok(())
}
