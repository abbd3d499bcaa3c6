//! Weights (and the tables the kernels read) packed once into the layout
//! each kernel wants. Packing is separate from code generation: new weights
//! for the same graph are packed again, the code is reused.

use shufflekit_ir::ops::{Op, WeightKey};
use shufflekit_ir::weights::Weights;
use shufflekit_ir::Graph;

use crate::plan::{Kernel, Layer, Reduce};
use crate::JitError;

/// A table entry (a small non-negative integer) stored in a float slot.
fn bits(v: usize) -> Result<f32, JitError> {
    u32::try_from(v)
        .ok()
        .filter(|&v| v <= i32::MAX as u32)
        .map(f32::from_bits)
        .ok_or_else(|| JitError::Internal(format!("table entry {v} does not fit 31 bits")))
}

/// The packed parameters of one layer (empty when it has none).
pub(crate) fn pack(graph: &Graph, weights: &Weights, layer: &Layer) -> Result<Vec<f32>, JitError> {
    let node = graph.node(layer.node);
    let tensor = |key: WeightKey| {
        weights
            .of(&node.name, key)
            .map(|t| t.data())
            .ok_or_else(|| {
                JitError::Internal(format!(
                    "weight `{}` is missing",
                    key.tensor_name(&node.name)
                ))
            })
    };
    match (&layer.kernel, &node.op) {
        (Kernel::Window(w), Op::Conv2d(c)) if w.reduce == Reduce::Fma => {
            let weight = tensor(WeightKey::Weight)?;
            let bias = if c.bias {
                Some(tensor(WeightKey::Bias)?)
            } else {
                None
            };
            let out_channels = c.out_channels;
            // Conv channel `oc` is written to output channel `position[oc]`.
            let mut position: Vec<usize> = (0..out_channels).collect();
            if let Some(order) = &c.output_order {
                for (k, &oc) in order.iter().enumerate() {
                    if let Some(p) = position.get_mut(oc) {
                        *p = k;
                    }
                }
            }
            let plane = w.out_plane();
            let taps = w.taps();
            let per_oc = w.cin_g * taps;
            if weight.len() != out_channels * per_oc {
                return Err(JitError::Internal(format!(
                    "`{}`: weight has {} values, expected {}",
                    node.name,
                    weight.len(),
                    out_channels * per_oc
                )));
            }
            let mut out = Vec::with_capacity(w.group_len() * w.groups);
            let (full, rem) = w.tiles();
            for g in 0..w.groups {
                for t in 0..w.tiles_per_group() {
                    let mt = if t < full { w.m } else { rem };
                    let oc0 = g * w.cout_g + t * w.m;
                    for ic in 0..w.cin_g {
                        for tap in 0..taps {
                            for j in 0..mt {
                                out.push(weight[(oc0 + j) * per_oc + ic * taps + tap]);
                            }
                        }
                    }
                    for j in 0..mt {
                        out.push(bias.map_or(0.0, |b| b[oc0 + j]));
                    }
                    for j in 0..mt {
                        out.push(bits(position[oc0 + j] * plane * 4)?);
                    }
                }
            }
            Ok(out)
        }
        (Kernel::Elementwise { channels, .. }, Op::BatchNorm(p)) => {
            let (gamma, beta, mean, var) = (
                tensor(WeightKey::Weight)?,
                tensor(WeightKey::Bias)?,
                tensor(WeightKey::RunningMean)?,
                tensor(WeightKey::RunningVar)?,
            );
            let mut out = vec![0.0; 2 * channels];
            for c in 0..*channels {
                let scale = gamma[c] / (var[c] + p.eps).sqrt();
                out[c] = scale;
                out[channels + c] = beta[c] - mean[c] * scale;
            }
            Ok(out)
        }
        (Kernel::Gather { channels, len, .. }, op) => {
            let in_shapes = graph.input_shapes(layer.node);
            // (input slot, channel) of each output channel.
            let source = |k: usize| -> (usize, usize) {
                match op {
                    Op::ChannelShuffle(s) => (0, s.source_channel(k, *channels)),
                    Op::ChannelSlice(s) => (0, s.start + k),
                    Op::Flatten => (0, k),
                    Op::Concat(c) => {
                        let mut j = c
                            .output_order
                            .as_ref()
                            .and_then(|o| o.get(k).copied())
                            .unwrap_or(k);
                        for (slot, s) in in_shapes.iter().enumerate() {
                            if j < s.channels() {
                                return (slot, j);
                            }
                            j -= s.channels();
                        }
                        (usize::MAX, 0)
                    }
                    _ => (usize::MAX, 0),
                }
            };
            let mut out = Vec::with_capacity(2 * channels);
            for k in 0..*channels {
                let (slot, ch) = source(k);
                let fits = in_shapes
                    .get(slot)
                    .is_some_and(|s| (ch + 1) * len <= s.numel());
                if !fits {
                    return Err(JitError::Internal(format!(
                        "`{}`: output channel {k} reads outside its input",
                        node.name
                    )));
                }
                out.push(bits(slot)?);
                out.push(bits(ch * len * 4)?);
            }
            Ok(out)
        }
        (Kernel::Linear { inputs, outputs, m }, Op::Linear(l)) => {
            let weight = tensor(WeightKey::Weight)?;
            let bias = if l.bias {
                Some(tensor(WeightKey::Bias)?)
            } else {
                None
            };
            let mut out = Vec::with_capacity(outputs * (inputs + 1));
            let chunks = inputs / 4;
            for t in 0..outputs.div_ceil(*m) {
                let o0 = t * m;
                let mt = (*m).min(outputs - o0);
                for q in 0..chunks {
                    for j in 0..mt {
                        let row = (o0 + j) * inputs + 4 * q;
                        out.extend_from_slice(&weight[row..row + 4]);
                    }
                }
                for r in 4 * chunks..*inputs {
                    for j in 0..mt {
                        out.push(weight[(o0 + j) * inputs + r]);
                    }
                }
                for j in 0..mt {
                    out.push(bias.map_or(0.0, |b| b[o0 + j]));
                }
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// The packed parameters of one layer, checked against the length its
/// kernel's code reads: the step the JIT and the object writer share.
pub(crate) fn pack_checked(
    graph: &Graph,
    weights: &Weights,
    layer: &Layer,
) -> Result<Vec<f32>, JitError> {
    let p = pack(graph, weights, layer)?;
    let expected = packed_len(layer);
    if p.len() != expected {
        return Err(JitError::Internal(format!(
            "`{}`: packed {} values, the kernel reads {expected}",
            layer.name,
            p.len()
        )));
    }
    Ok(p)
}

/// The packed length a kernel's code assumes (checked against what
/// [`pack`] produced before any call).
pub(crate) fn packed_len(layer: &Layer) -> usize {
    match &layer.kernel {
        Kernel::Window(w) if w.reduce == Reduce::Fma => w.group_len() * w.groups,
        Kernel::Elementwise {
            op: crate::lower::Elementwise::Affine,
            channels,
            ..
        } => 2 * channels,
        Kernel::Gather { channels, .. } => 2 * channels,
        Kernel::Linear {
            inputs, outputs, ..
        } => outputs * (inputs + 1),
        _ => 0,
    }
}
