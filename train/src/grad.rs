//! Reverse-mode differentiation of the graph IR.
//!
//! [`Network::forward`] runs a graph on a batch in training mode (batch
//! norm normalises with the batch's statistics) or inference mode (running
//! statistics, exactly what `shufflekit_ir::eval` computes) and keeps every
//! value on a [`Tape`]; [`Tape::backward`] walks the graph in reverse
//! topological order and applies one gradient rule per op, giving the
//! gradient of every trainable tensor and of the input.
//!
//! Rules (with `g` the gradient reaching a node's output `y`):
//! - conv2d (grouped, depthwise, strided, padded, dilated): `dW = g * col^T`,
//!   `dcol = W^T * g` folded back by col2im; its fused epilogue backwards:
//!   activation mask, residual gets `g`, `output_order` inverted; bias sums
//!   `g`. Depthwise convolutions use a direct loop (3x3 stride 1: a stencil,
//!   `kernels::Stencil3`); 1x1 stride-1 convolutions multiply the NCHW
//!   planes in place (`small_gemm`: `nn` for the output and the input
//!   gradient, `nt` dot products for the weight gradient), with no column
//!   matrix.
//! - batch norm, training mode: `dx = gamma / sigma / M * (M g - sum g -
//!   xhat sum(g xhat))` over the `M = N H W` values of a channel; inference
//!   mode: `dx = g gamma / sqrt(running_var + eps)`.
//! - relu / relu6: `g` where `0 < y` (`0 < y < 6`); sigmoid `g y (1 - y)`;
//!   softmax `y (g - sum(g y))`.
//! - channel shuffle, slice, concat (with `output_order`), flatten: the
//!   inverse data movement; add: `g` to both; mul: `g b`, `g a` (summed over
//!   the plane for a `[C, 1, 1]` second input).
//! - max pool: `g` to the first maximum of each window; average pool: `g /
//!   divisor` to every real cell of the window (ceil mode and
//!   `count_include_pad` as the forward pass counts them); global average
//!   pool: `g / (H W)`.
//! - linear: `dW = g^T x`, `dx = g W`, `db = sum g`.
//!
//! Why a Rust backward evaluator and not backward graphs in the IR: the
//! backward of a convolution needs ops the IR does not have (a weight
//! gradient, a transposed convolution, col2im, max-pool index scatter,
//! batch reductions). Adding them to the closed `Op` enum would make every
//! exhaustive match in the passes, the JIT and the ONNX exporter handle ops
//! that only training uses. The rules above are the contract such a
//! lowering would implement; the finite-difference tests in
//! `train/tests/gradients.rs` check each one.
//!
//! A ReLU that is the only reader of an add or a batch norm is folded into
//! it (`fuse_relus`), a channel shuffle that only a depthwise convolution
//! reads is folded into that convolution's plane order (`fuse_shuffles`),
//! and a network hands the buffers of its last tape to its next forward
//! pass: all save passes over memory, which is where most of a training
//! step goes at these sizes. `SHUFFLEKIT_TRAIN_PROFILE=1` times each op
//! ([`crate::profile`]).
//!
//! Work is spread with rayon over images (convolutions, pooling) and
//! planes (elementwise ops). Weight gradients are summed per fixed chunk of
//! images and the chunks added in order, so gradients do not depend on the
//! number of threads.

use std::collections::HashMap;

use rayon::prelude::*;
use shufflekit_ir::ops::{Activation, Conv2d, ConvGeometry, Op, Pool, WeightKey};
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::verify::{self, VerifyErrors};
use shufflekit_ir::weights::Weights;
use shufflekit_ir::{Graph, NodeId, Shape};

use crate::kernels::{self, gemm, ConvGeom, Stencil3, Strides, Window};
use crate::profile;
use crate::small_gemm::{self, Isa};
use crate::{GraphProblem, TrainError};

/// Batch norm statistics: training mode normalises with the batch's,
/// inference mode with the running ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics (and running averages to update afterwards).
    Train,
    /// Running statistics: the same function as the reference evaluator.
    Eval,
}

/// A graph prepared for training: verified, with one input, and its nodes
/// in topological order.
#[derive(Debug, Clone)]
pub struct Network {
    graph: Graph,
    steps: Vec<Step>,
    output: usize,
    spare: Spare,
}

/// The value buffers of the last dropped [`Tape`], for the next forward
/// pass to overwrite: a fresh buffer is zeroed (and its pages faulted in)
/// first, which cost about a tenth of a training step (measured with perf:
/// `memset` at 11%). Only ops that write every element of their output take
/// one, so a reused buffer's old contents are never read.
#[derive(Default)]
struct Spare(std::sync::Mutex<Vec<Vec<f32>>>);

impl Spare {
    /// A buffer of `len` values, of unspecified contents.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match spare.iter().position(|b| b.len() == len) {
            Some(i) => spare.swap_remove(i),
            None => vec![0.0; len],
        }
    }

    /// Keeps `buffers` (dropping what an earlier tape left), so the spare
    /// set never holds more than one tape's values.
    fn keep(&self, buffers: Vec<Vec<f32>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = buffers;
    }
}

/// A clone starts without spare buffers.
impl Clone for Spare {
    fn clone(&self) -> Spare {
        Spare::default()
    }
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spare")
    }
}

#[derive(Debug, Clone)]
struct Step {
    name: String,
    op: Op,
    inputs: Vec<usize>,
    in_shapes: Vec<Shape>,
    shape: Shape,
    /// A ReLU that read only this step's output, folded in (see
    /// [`fuse_relus`]): the step's value is `relu(op(...))`.
    relu: bool,
    /// A depthwise convolution that reads its input through a channel
    /// shuffle folded into it (see [`fuse_shuffles`]): its channel `k`
    /// reads input channel `input_order[k]`.
    input_order: Option<Vec<usize>>,
}

/// Folds each ReLU into the add or batch norm before it when nothing else
/// reads that op's output: one pass over memory and one buffer fewer per
/// fused pair, forward and backward. The rules are unchanged: the gradient
/// is masked by `y > 0` (as the ReLU's rule does), then the op's own rule
/// runs, and neither op's rule reads its own output. Returns the steps and
/// the output's new position.
fn fuse_relus(mut steps: Vec<Step>, output: usize) -> (Vec<Step>, usize) {
    let mut uses = vec![0usize; steps.len()];
    for s in &steps {
        for &i in &s.inputs {
            uses[i] += 1;
        }
    }
    // `merged[i]`: the step whose value step `i`'s value now is.
    let mut merged: Vec<usize> = (0..steps.len()).collect();
    for i in 0..steps.len() {
        let j = match (&steps[i].op, steps[i].inputs.as_slice()) {
            (Op::Relu, &[j]) => j,
            _ => continue,
        };
        let foldable = matches!(steps[j].op, Op::Add | Op::BatchNorm(_));
        if foldable && !steps[j].relu && uses[j] == 1 && j != output {
            steps[j].relu = true;
            merged[i] = j;
        }
    }
    let mut position = vec![0usize; steps.len()];
    let mut kept = Vec::with_capacity(steps.len());
    for (i, mut s) in steps.into_iter().enumerate() {
        if merged[i] != i {
            continue;
        }
        for input in &mut s.inputs {
            *input = position[merged[*input]];
        }
        position[i] = kept.len();
        kept.push(s);
    }
    (kept, position[merged[output]])
}

/// Folds each channel shuffle whose only reader is a depthwise
/// convolution into that convolution, which then reads its input planes in
/// the shuffled order (and writes their gradients back in that order): the
/// copy of the tensor forward and backward goes away. The rules are
/// unchanged; only the plane each channel reads moves. Returns the steps
/// and the output's new position.
fn fuse_shuffles((mut steps, output): (Vec<Step>, usize)) -> (Vec<Step>, usize) {
    let mut readers = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for &j in &s.inputs {
            readers[j].push(i);
        }
    }
    let mut merged: Vec<usize> = (0..steps.len()).collect();
    for i in 0..steps.len() {
        let (Op::ChannelShuffle(p), &[source], &[reader]) = (
            &steps[i].op,
            steps[i].inputs.as_slice(),
            readers[i].as_slice(),
        ) else {
            continue;
        };
        let channels = steps[i].shape.channels();
        let order: Vec<usize> = (0..channels)
            .map(|k| p.source_channel(k, channels))
            .collect();
        let r = &mut steps[reader];
        let foldable = match &r.op {
            Op::Conv2d(c) => {
                c.groups == channels
                    && c.out_channels == channels
                    && r.inputs.len() == 1
                    && r.input_order.is_none()
            }
            _ => false,
        };
        if foldable && i != output {
            r.input_order = Some(order);
            r.inputs[0] = source;
            merged[i] = source;
        }
    }
    let mut position = vec![0usize; steps.len()];
    let mut kept = Vec::with_capacity(steps.len());
    for (i, mut s) in steps.into_iter().enumerate() {
        if merged[i] != i {
            continue;
        }
        for input in &mut s.inputs {
            *input = position[*input];
        }
        position[i] = kept.len();
        kept.push(s);
    }
    (kept, position[output])
}

/// What a forward pass keeps for the backward pass beyond the values.
#[derive(Debug, Clone)]
enum Saved {
    None,
    /// Training-mode batch norm: the batch mean, `1 / sqrt(var + eps)` and
    /// the unbiased variance for the running average.
    BatchNorm {
        mean: Vec<f32>,
        inv_std: Vec<f32>,
        unbiased_var: Vec<f32>,
    },
    /// Max pool: the flat input index of each output's maximum.
    MaxPool(Vec<u32>),
}

/// The values of one forward pass, ready for [`Tape::backward`].
#[derive(Debug)]
pub struct Tape<'n> {
    net: &'n Network,
    mode: Mode,
    batch: usize,
    values: Vec<Option<Vec<f32>>>,
    saved: Vec<Saved>,
}

/// Gradients of one backward pass.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// Gradient of every trainable tensor, named like the weights.
    pub weights: Weights,
    /// Gradient with respect to the network's input, `[N, ...]`.
    pub input: Tensor,
}

impl Network {
    /// Prepares a graph: it must verify, have exactly one input and an
    /// output node.
    pub fn new(graph: &Graph) -> Result<Network, TrainError> {
        Network::build(graph, true)
    }

    /// [`Network::new`], with or without [`fuse_relus`] (the tests compare).
    fn build(graph: &Graph, fuse: bool) -> Result<Network, TrainError> {
        verify::verify(graph).map_err(|errors| GraphProblem::Invalid(VerifyErrors(errors)))?;
        let inputs = graph.input_nodes();
        if inputs.len() != 1 {
            return Err(GraphProblem::InputCount(inputs.len()).into());
        }
        let out = graph.output().ok_or(GraphProblem::NoOutput)?;
        let mut needed = std::collections::HashSet::new();
        let mut stack = vec![out];
        while let Some(id) = stack.pop() {
            if needed.insert(id) {
                stack.extend(graph.inputs(id));
            }
        }
        if !needed.contains(&inputs[0]) {
            return Err(GraphProblem::Disconnected.into());
        }
        let ids: Vec<NodeId> = graph.nodes().filter(|id| needed.contains(id)).collect();
        let pos: HashMap<NodeId, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let steps = ids
            .iter()
            .map(|&id| {
                let node = graph.node(id);
                Step {
                    name: node.name.clone(),
                    op: node.op.clone(),
                    inputs: graph.inputs(id).iter().map(|i| pos[i]).collect(),
                    in_shapes: graph.input_shapes(id).into_iter().cloned().collect(),
                    shape: node.shape.clone(),
                    relu: false,
                    input_order: None,
                }
            })
            .collect::<Vec<_>>();
        let last = steps.len() - 1;
        let (steps, output) = if fuse {
            fuse_shuffles(fuse_relus(steps, last))
        } else {
            (steps, last)
        };
        Ok(Network {
            graph: graph.clone(),
            output,
            steps,
            spare: Spare::default(),
        })
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The input shape without batch.
    pub fn input_shape(&self) -> &Shape {
        &self.steps[0].shape
    }

    /// The output shape without batch.
    pub fn output_shape(&self) -> &Shape {
        &self.steps[self.output].shape
    }

    /// Runs the graph and keeps every value for [`Tape::backward`].
    pub fn forward(
        &self,
        weights: &Weights,
        input: &Tensor,
        mode: Mode,
    ) -> Result<Tape<'_>, TrainError> {
        self.run(weights, input, mode, true)
    }

    /// Inference only (running batch norm statistics), freeing each value
    /// after its last use: `[N, ...]` of the output shape.
    pub fn predict(&self, weights: &Weights, input: &Tensor) -> Result<Tensor, TrainError> {
        let mut tape = self.run(weights, input, Mode::Eval, false)?;
        tape.output_tensor_owned()
    }

    fn run(
        &self,
        weights: &Weights,
        input: &Tensor,
        mode: Mode,
        keep: bool,
    ) -> Result<Tape<'_>, TrainError> {
        weights.check(&self.graph)?;
        let expected = self.input_shape();
        let got = input.shape();
        if got.len() != expected.rank() + 1 || got[1..] != *expected.dims() || got[0] == 0 {
            return Err(TrainError::InputShape {
                expected: expected.clone(),
                got: got.to_vec(),
            });
        }
        let batch = got[0];
        let mut uses = vec![0usize; self.steps.len()];
        for s in &self.steps {
            for &i in &s.inputs {
                uses[i] += 1;
            }
        }
        uses[self.output] += 1;
        let mut tape = Tape {
            net: self,
            mode,
            batch,
            values: vec![None; self.steps.len()],
            saved: vec![Saved::None; self.steps.len()],
        };
        for (i, s) in self.steps.iter().enumerate() {
            let (value, saved) = if let Op::Input(_) = s.op {
                (input.data().to_vec(), Saved::None)
            } else {
                let args: Vec<&[f32]> = s
                    .inputs
                    .iter()
                    .map(|&j| tape.values[j].as_deref().unwrap_or(&[]))
                    .collect();
                let timer = profile::start();
                let out = forward_op(s, &args, batch, weights, mode, &self.spare)?;
                profile::stop(timer, || format!("fwd {}", op_label(s)));
                out
            };
            tape.values[i] = Some(value);
            tape.saved[i] = saved;
            if !keep {
                for &j in &s.inputs {
                    uses[j] -= 1;
                    if uses[j] == 0 {
                        tape.values[j] = None;
                    }
                }
            }
        }
        Ok(tape)
    }
}

/// A step's kind for the profile: the op, the kind of convolution, the
/// folded ReLU.
fn op_label(s: &Step) -> String {
    let kind = match &s.op {
        Op::Conv2d(p) => match conv_geometry(p, s) {
            Ok(g) if g.is_depthwise() => {
                format!("conv dw{}x{} s{}", p.kernel[0], p.kernel[1], p.stride[0])
            }
            Ok(g) if g.is_pointwise() => format!("conv 1x1 g{}", p.groups),
            _ => format!("conv {}x{} g{}", p.kernel[0], p.kernel[1], p.groups),
        },
        Op::BatchNorm(_) => "batch_norm".to_string(),
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("?")
            .to_lowercase(),
    };
    if s.relu {
        format!("{kind}+relu")
    } else {
        kind
    }
}

fn weight<'a>(weights: &'a Weights, s: &Step, key: WeightKey) -> Result<&'a [f32], TrainError> {
    weights
        .of(&s.name, key)
        .map(Tensor::data)
        .ok_or_else(|| TrainError::Internal(format!("layer `{}`: no `{key}`", s.name)))
}

/// The checked geometry of a step's convolution.
fn conv_geometry(p: &Conv2d, s: &Step) -> Result<ConvGeometry, TrainError> {
    p.geometry(&s.in_shapes[0])
        .map_err(|e| TrainError::Internal(format!("layer `{}`: {e}", s.name)))
}

fn chw(shape: &Shape) -> (usize, usize, usize) {
    shape.as_chw().unwrap_or((shape.channels(), 1, 1))
}

/// Parallel elementwise map into a new buffer.
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    // Collected, not zero-filled and then overwritten: one pass over memory.
    x.par_iter().with_min_len(1 << 12).map(|&v| f(v)).collect()
}

/// The gradient through a fused activation, from the gradient `g` of its
/// output `y`.
fn activation_grad(act: Activation, g: Vec<f32>, y: &[f32]) -> Vec<f32> {
    match act {
        Activation::None => g,
        Activation::Relu => zip_in_place(g, y, |g, y| if y > 0.0 { g } else { 0.0 }),
        Activation::Relu6 => zip_in_place(g, y, |g, y| if y > 0.0 && y < 6.0 { g } else { 0.0 }),
    }
}

/// `a[i] = f(a[i], b[i])` in parallel, reusing `a`'s buffer: most gradient
/// rules of elementwise ops own the incoming gradient and need no new one.
fn zip_in_place(mut a: Vec<f32>, b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    a.par_chunks_mut(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b)));
    a
}

/// Parallel elementwise map of two buffers.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    a.par_iter()
        .zip(b)
        .with_min_len(1 << 12)
        .map(|(&a, &b)| f(a, b))
        .collect()
}

/// Per image, new channel `k` = old channel `order[k]`.
fn permute_channels(data: &mut [f32], spatial: usize, order: &[usize], inverse: bool) {
    let item = order.len() * spatial;
    data.par_chunks_mut(item.max(1)).for_each(|image| {
        let old = image.to_vec();
        for (k, &c) in order.iter().enumerate() {
            let (to, from) = if inverse { (c, k) } else { (k, c) };
            image[to * spatial..(to + 1) * spatial]
                .copy_from_slice(&old[from * spatial..(from + 1) * spatial]);
        }
    });
}

fn forward_op(
    s: &Step,
    args: &[&[f32]],
    batch: usize,
    weights: &Weights,
    mode: Mode,
    spare: &Spare,
) -> Result<(Vec<f32>, Saved), TrainError> {
    let x = args[0];
    let xs = &s.in_shapes[0];
    let out_len = batch * s.shape.numel();
    let mut saved = Saved::None;
    let y = match &s.op {
        Op::Input(_) => x.to_vec(),
        Op::Conv2d(p) => {
            let bias = if p.bias {
                Some(weight(weights, s, WeightKey::Bias)?)
            } else {
                None
            };
            let mut y = conv_forward(
                x,
                batch,
                &conv_geometry(p, s)?,
                weight(weights, s, WeightKey::Weight)?,
                spare,
                s.input_order.as_deref(),
            );
            let spatial = s.shape.spatial();
            if let Some(b) = bias {
                y.par_chunks_mut(spatial)
                    .enumerate()
                    .for_each(|(bc, plane)| {
                        let v = b[bc % p.out_channels];
                        plane.iter_mut().for_each(|o| *o += v);
                    });
            }
            if let Some(order) = &p.output_order {
                permute_channels(&mut y, spatial, order, false);
            }
            if p.residual {
                y = zip_in_place(y, args[1], |a, b| a + b);
            }
            if p.activation != Activation::None {
                let act = p.activation;
                y.par_chunks_mut(1 << 14)
                    .for_each(|c| c.iter_mut().for_each(|v| *v = act.apply(*v)));
            }
            y
        }
        Op::BatchNorm(p) => {
            let (c, spatial) = (xs.channels(), xs.spatial());
            let gamma = weight(weights, s, WeightKey::Weight)?;
            let beta = weight(weights, s, WeightKey::Bias)?;
            let (mean, inv_std, denom) = match mode {
                Mode::Eval => {
                    let rm = weight(weights, s, WeightKey::RunningMean)?;
                    let rv = weight(weights, s, WeightKey::RunningVar)?;
                    let denom: Vec<f32> = rv.iter().map(|v| (v + p.eps).sqrt()).collect();
                    (rm.to_vec(), Vec::new(), denom)
                }
                Mode::Train => {
                    let m = (batch * spatial) as f64;
                    let (means, vars) = channel_moments(x, c, spatial);
                    let stats: Vec<(f64, f64)> = means.into_iter().zip(vars).collect();
                    let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
                    let inv: Vec<f32> = stats
                        .iter()
                        .map(|s| (1.0 / (s.1 + f64::from(p.eps)).sqrt()) as f32)
                        .collect();
                    let unbiased: Vec<f32> = stats
                        .iter()
                        .map(|s| {
                            if m > 1.0 {
                                (s.1 * m / (m - 1.0)) as f32
                            } else {
                                s.1 as f32
                            }
                        })
                        .collect();
                    saved = Saved::BatchNorm {
                        mean: mean.clone(),
                        inv_std: inv.clone(),
                        unbiased_var: unbiased,
                    };
                    (mean, inv, Vec::new())
                }
            };
            let mut y = spare.take(x.len());
            y.par_chunks_mut(spatial.max(1))
                .zip(x.par_chunks(spatial.max(1)))
                .enumerate()
                .for_each(|(bc, (plane, xs))| {
                    let ch = bc % c;
                    let (mu, g, b) = (mean[ch], gamma[ch], beta[ch]);
                    let out = plane.iter_mut().zip(xs);
                    match mode {
                        // The reference evaluator's expression, so inference
                        // matches it bit for bit.
                        Mode::Eval => {
                            let d = denom[ch];
                            out.for_each(|(o, &v)| *o = (v - mu) / d * g + b);
                        }
                        Mode::Train if s.relu => {
                            let is = inv_std[ch];
                            out.for_each(|(o, &v)| *o = ((v - mu) * is * g + b).max(0.0));
                        }
                        Mode::Train => {
                            let is = inv_std[ch];
                            out.for_each(|(o, &v)| *o = (v - mu) * is * g + b);
                        }
                    }
                    if s.relu && mode == Mode::Eval {
                        plane.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                });
            y
        }
        Op::Relu => map(x, |v| v.max(0.0)),
        Op::Relu6 => map(x, |v| v.clamp(0.0, 6.0)),
        Op::Sigmoid => map(x, |v| 1.0 / (1.0 + (-v).exp())),
        Op::HardSigmoid => map(x, shufflekit_ir::ops::hard_sigmoid),
        Op::HardSwish => map(x, shufflekit_ir::ops::hard_swish),
        Op::Flatten => x.to_vec(),
        Op::ChannelShuffle(p) => {
            let (c, spatial) = (xs.channels(), xs.spatial().max(1));
            let mut y = spare.take(out_len);
            y.par_chunks_mut(spatial)
                .enumerate()
                .for_each(|(bc, plane)| {
                    let (b, oc) = (bc / c, bc % c);
                    let src = (b * c + p.source_channel(oc, c)) * spatial;
                    plane.copy_from_slice(&x[src..src + spatial]);
                });
            y
        }
        Op::ChannelSlice(p) => {
            let (item, spatial) = (xs.numel(), xs.spatial());
            let len = p.len * spatial;
            let mut y = spare.take(out_len);
            y.par_chunks_mut(len.max(1)).enumerate().for_each(|(b, o)| {
                let at = b * item + p.start * spatial;
                o.copy_from_slice(&x[at..at + len]);
            });
            y
        }
        Op::Concat(p) => {
            let item = s.shape.numel();
            let mut y = spare.take(out_len);
            y.par_chunks_mut(item.max(1))
                .enumerate()
                .for_each(|(b, o)| {
                    let mut at = 0;
                    for (a, sh) in args.iter().zip(&s.in_shapes) {
                        let n = sh.numel();
                        o[at..at + n].copy_from_slice(&a[b * n..(b + 1) * n]);
                        at += n;
                    }
                });
            if p.activation != Activation::None {
                let act = p.activation;
                y = map(&y, |v| act.apply(v));
            }
            if let Some(order) = &p.output_order {
                permute_channels(&mut y, s.shape.spatial(), order, false);
            }
            y
        }
        Op::Add if s.relu => zip_map(x, args[1], |a, b| (a + b).max(0.0)),
        Op::Add => zip_map(x, args[1], |a, b| a + b),
        Op::Mul => {
            if s.in_shapes[1] == *xs {
                zip_map(x, args[1], |a, b| a * b)
            } else {
                let spatial = xs.spatial().max(1);
                let sc = args[1];
                let mut y = x.to_vec();
                y.par_chunks_mut(spatial)
                    .enumerate()
                    .for_each(|(bc, plane)| plane.iter_mut().for_each(|v| *v *= sc[bc]));
                y
            }
        }
        Op::GlobalAvgPool => {
            let spatial = xs.spatial().max(1);
            let mut y = spare.take(out_len);
            y.par_iter_mut().enumerate().for_each(|(bc, o)| {
                let plane = &x[bc * spatial..(bc + 1) * spatial];
                *o = (plane.iter().map(|&v| f64::from(v)).sum::<f64>() / spatial as f64) as f32;
            });
            y
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (_, h, w) = chw(xs);
            let (_, oh, ow) = chw(&s.shape);
            let (rows, cols) = pool_windows(p, (h, w), (oh, ow));
            let mut y = spare.take(out_len);
            if let Op::MaxPool(_) = s.op {
                let mut arg = vec![0u32; out_len];
                y.par_chunks_mut(oh * ow)
                    .zip(arg.par_chunks_mut(oh * ow))
                    .enumerate()
                    .for_each(|(bc, (o, a))| {
                        kernels::max_pool_plane(
                            &x[bc * h * w..(bc + 1) * h * w],
                            w,
                            &rows,
                            &cols,
                            o,
                            a,
                        )
                    });
                saved = Saved::MaxPool(arg);
            } else {
                y.par_chunks_mut(oh * ow).enumerate().for_each(|(bc, o)| {
                    kernels::avg_pool_plane(p, &x[bc * h * w..(bc + 1) * h * w], w, &rows, &cols, o)
                });
            }
            y
        }
        Op::Linear(p) => {
            let inputs = xs.numel();
            let w = weight(weights, s, WeightKey::Weight)?;
            let mut y = vec![0.0; out_len];
            let rows = 16;
            y.par_chunks_mut(rows * p.out_features)
                .zip(x.par_chunks(rows * inputs))
                .for_each(|(yc, xc)| {
                    let n = xc.len() / inputs;
                    gemm(
                        (n, inputs, p.out_features),
                        xc,
                        Strides::rows(inputs),
                        w,
                        Strides::transposed(inputs),
                        0.0,
                        yc,
                        Strides::rows(p.out_features),
                    );
                });
            if p.bias {
                let b = weight(weights, s, WeightKey::Bias)?;
                y.chunks_mut(p.out_features)
                    .for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v += b));
            }
            y
        }
        Op::Softmax => {
            let (c, spatial) = (xs.channels(), xs.spatial().max(1));
            let item = c * spatial;
            let mut y = spare.take(out_len);
            y.par_chunks_mut(item.max(1))
                .enumerate()
                .for_each(|(b, o)| {
                    let xb = &x[b * item..(b + 1) * item];
                    for sp in 0..spatial {
                        let max = (0..c)
                            .map(|k| xb[k * spatial + sp])
                            .fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0.0f64;
                        for k in 0..c {
                            let e = f64::from(xb[k * spatial + sp] - max).exp();
                            o[k * spatial + sp] = e as f32;
                            sum += e;
                        }
                        for k in 0..c {
                            o[k * spatial + sp] = (f64::from(o[k * spatial + sp]) / sum) as f32;
                        }
                    }
                });
            y
        }
    };
    if y.len() != out_len {
        return Err(TrainError::Internal(format!(
            "layer `{}` produced {} values, expected {out_len}",
            s.name,
            y.len()
        )));
    }
    Ok((y, saved))
}

fn pool_windows(
    p: &Pool,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> (Vec<Window>, Vec<Window>) {
    (kernels::windows(p, 0, h, oh), kernels::windows(p, 1, w, ow))
}

/// Images per task of a convolution: their column matrices sit side by
/// side so that one matrix product covers them all. Fixed, so that weight
/// gradients (summed per chunk, then over chunks in order) do not depend on
/// the number of threads.
const CONV_CHUNK: usize = 8;

/// Grouped 2-D convolution of a batch, without bias or epilogue.
/// `input_order` (depthwise only, see [`fuse_shuffles`]): channel `k`
/// reads input plane `input_order[k]`.
fn conv_forward(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
    spare: &Spare,
    input_order: Option<&[usize]>,
) -> Vec<f32> {
    if geometry.is_pointwise() && !geometry.is_depthwise() {
        let out =
            spare.take(batch * geometry.out_channels * geometry.out_size[0] * geometry.out_size[1]);
        pointwise_forward(x, batch, geometry, weight, out, Isa::detect())
    } else {
        general_conv_forward_ordered(x, batch, geometry, weight, input_order)
    }
}

/// [`general_conv_forward_ordered`] in channel order.
#[cfg(test)]
fn general_conv_forward(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
) -> Vec<f32> {
    general_conv_forward_ordered(x, batch, geometry, weight, None)
}

/// Any convolution: depthwise by a direct loop (reading its planes in
/// `input_order` when given), the others by im2col of a chunk of images
/// side by side and one matrix product per group.
fn general_conv_forward_ordered(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
    input_order: Option<&[usize]>,
) -> Vec<f32> {
    let (c, o) = (geometry.in_channels, geometry.out_channels);
    let [h, w] = geometry.in_size;
    let geom = ConvGeom::new(geometry);
    let (cin_g, cout_g) = (geometry.in_per_group, geometry.out_per_group);
    let (k, n) = (cin_g * geom.taps, geom.out_plane);
    let (item_in, item_out) = (c * h * w, o * n);
    let depthwise = geometry.is_depthwise();
    let mut out = vec![0.0f32; batch * item_out];
    out.par_chunks_mut(CONV_CHUNK * item_out)
        .enumerate()
        .for_each(|(chunk, oc)| {
            let b0 = chunk * CONV_CHUNK;
            let nb = oc.len() / item_out;
            if depthwise {
                let mut stencil = Stencil3::new(geometry);
                for (i, ob) in oc.chunks_mut(item_out).enumerate() {
                    let xb = &x[(b0 + i) * item_in..(b0 + i + 1) * item_in];
                    for ch in 0..o {
                        let src = input_order.map_or(ch, |order| order[ch]);
                        let xp = &xb[src * h * w..(src + 1) * h * w];
                        if let Some(st) = &mut stencil {
                            st.forward(
                                xp,
                                &weight[ch * geom.taps..(ch + 1) * geom.taps],
                                &mut ob[ch * n..(ch + 1) * n],
                            );
                            continue;
                        }
                        geom.depthwise(
                            xp,
                            &weight[ch * geom.taps..(ch + 1) * geom.taps],
                            &mut ob[ch * n..(ch + 1) * n],
                        );
                    }
                }
                return;
            }
            let cols = nb * n;
            let mut col = vec![0.0f32; k * cols];
            let mut res = vec![0.0f32; cout_g * cols];
            for g in 0..geometry.groups {
                for i in 0..nb {
                    let xb = &x[(b0 + i) * item_in..(b0 + i + 1) * item_in];
                    let xg = &xb[g * cin_g * h * w..(g + 1) * cin_g * h * w];
                    if geom.pointwise {
                        for r in 0..k {
                            col[r * cols + i * n..r * cols + (i + 1) * n]
                                .copy_from_slice(&xg[r * n..(r + 1) * n]);
                        }
                    } else {
                        geom.im2col(xg, cin_g, &mut col, cols, i * n);
                    }
                }
                gemm(
                    (cout_g, k, cols),
                    &weight[g * cout_g * k..(g + 1) * cout_g * k],
                    Strides::rows(k),
                    &col,
                    Strides::rows(cols),
                    0.0,
                    &mut res,
                    Strides::rows(cols),
                );
                for (i, ob) in oc.chunks_mut(item_out).enumerate() {
                    for r in 0..cout_g {
                        ob[(g * cout_g + r) * n..(g * cout_g + r + 1) * n]
                            .copy_from_slice(&res[r * cols + i * n..r * cols + (i + 1) * n]);
                    }
                }
            }
        });
    out
}

/// A 1x1 convolution reads each image's NCHW planes as the matrix it
/// multiplies: per image and group, `y (cout_g x HW) = W_g (cout_g x cin_g)
/// * x (cin_g x HW)`, with no column matrix and no copies.
/// `out` may hold anything: every element is written.
fn pointwise_forward(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
    mut out: Vec<f32>,
    isa: Isa,
) -> Vec<f32> {
    let (cin_g, cout_g) = (geometry.in_per_group, geometry.out_per_group);
    let n = geometry.out_size[0] * geometry.out_size[1];
    let (item_in, item_out) = (geometry.in_channels * n, geometry.out_channels * n);
    out.resize(batch * item_out, 0.0);
    out.par_chunks_mut(item_out)
        .zip(x.par_chunks(item_in))
        .for_each(|(ob, xb)| {
            for g in 0..geometry.groups {
                small_gemm::nn(
                    isa,
                    (cout_g, cin_g, n),
                    &weight[g * cout_g * cin_g..][..cout_g * cin_g],
                    Strides::rows(cin_g),
                    &xb[g * cin_g * n..][..cin_g * n],
                    n,
                    &mut ob[g * cout_g * n..][..cout_g * n],
                    n,
                    false,
                );
            }
        });
    out
}

/// Backward of [`pointwise_forward`]: per image and group `dx = W_g^T dy`
/// straight into the input gradient, and `dW_g += dy x^T` summed over a
/// fixed chunk of images (then over chunks in order).
fn pointwise_backward(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
    gy: &[f32],
    isa: Isa,
) -> (Vec<f32>, Vec<f32>) {
    let (cin_g, cout_g) = (geometry.in_per_group, geometry.out_per_group);
    let n = geometry.out_size[0] * geometry.out_size[1];
    let (item_in, item_out) = (geometry.in_channels * n, geometry.out_channels * n);
    let mut dx = vec![0.0f32; batch * item_in];
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(CONV_CHUNK * item_in)
        .zip(x.par_chunks(CONV_CHUNK * item_in))
        .zip(gy.par_chunks(CONV_CHUNK * item_out))
        .map(|((dxc, xc), gc)| {
            let mut dw = vec![0.0f32; weight.len()];
            for ((dxb, xb), gb) in dxc
                .chunks_mut(item_in)
                .zip(xc.chunks(item_in))
                .zip(gc.chunks(item_out))
            {
                for g in 0..geometry.groups {
                    let (wo, xo, go) = (g * cout_g * cin_g, g * cin_g * n, g * cout_g * n);
                    let gg = &gb[go..][..cout_g * n];
                    // Dot products along the planes, packing-free: the
                    // general GEMM packed both operands per image and group
                    // (41-48% of a step in the profile, with its packing).
                    small_gemm::nt(
                        isa,
                        (cout_g, n, cin_g),
                        gg,
                        n,
                        &xb[xo..][..cin_g * n],
                        n,
                        &mut dw[wo..][..cout_g * cin_g],
                        cin_g,
                    );
                    small_gemm::nn(
                        isa,
                        (cin_g, cout_g, n),
                        &weight[wo..][..cout_g * cin_g],
                        Strides::transposed(cin_g),
                        gg,
                        n,
                        &mut dxb[xo..][..cin_g * n],
                        n,
                        false,
                    );
                }
            }
            dw
        })
        .collect();
    (dx, sum_in_order(partial, weight.len()))
}

/// Backward of [`conv_forward`]: the input gradient and the weight gradient.
fn conv_backward(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
    gy: &[f32],
    input_order: Option<&[usize]>,
) -> (Vec<f32>, Vec<f32>) {
    if geometry.is_pointwise() && !geometry.is_depthwise() {
        pointwise_backward(x, batch, geometry, weight, gy, Isa::detect())
    } else {
        general_conv_backward_ordered(x, batch, geometry, weight, gy, input_order)
    }
}

/// [`general_conv_backward_ordered`] in channel order.
#[cfg(test)]
fn general_conv_backward(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
    gy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    general_conv_backward_ordered(x, batch, geometry, weight, gy, None)
}

/// Backward of [`general_conv_forward_ordered`], with its input order.
fn general_conv_backward_ordered(
    x: &[f32],
    batch: usize,
    geometry: &ConvGeometry,
    weight: &[f32],
    gy: &[f32],
    input_order: Option<&[usize]>,
) -> (Vec<f32>, Vec<f32>) {
    let (c, o) = (geometry.in_channels, geometry.out_channels);
    let [h, w] = geometry.in_size;
    let geom = ConvGeom::new(geometry);
    let (cin_g, cout_g) = (geometry.in_per_group, geometry.out_per_group);
    let (k, n) = (cin_g * geom.taps, geom.out_plane);
    let depthwise = geometry.is_depthwise();
    let (item_in, item_out) = (c * h * w, o * n);
    let mut dx = vec![0.0f32; batch * item_in];
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(CONV_CHUNK * item_in)
        .enumerate()
        .map(|(chunk, dxc)| {
            let b0 = chunk * CONV_CHUNK;
            let nb = dxc.len() / item_in;
            let mut dw = vec![0.0f32; weight.len()];
            if depthwise {
                let mut stencil = Stencil3::new(geometry);
                for (i, dxb) in dxc.chunks_mut(item_in).enumerate() {
                    let b = b0 + i;
                    let xb = &x[b * item_in..(b + 1) * item_in];
                    let gb = &gy[b * item_out..(b + 1) * item_out];
                    for ch in 0..o {
                        let src = input_order.map_or(ch, |order| order[ch]);
                        let (xp, dxp) = (
                            &xb[src * h * w..(src + 1) * h * w],
                            &mut dxb[src * h * w..(src + 1) * h * w],
                        );
                        if let Some(st) = &mut stencil {
                            st.backward(
                                xp,
                                &weight[ch * geom.taps..(ch + 1) * geom.taps],
                                &gb[ch * n..(ch + 1) * n],
                                dxp,
                                &mut dw[ch * geom.taps..(ch + 1) * geom.taps],
                            );
                            continue;
                        }
                        geom.depthwise_back(
                            xp,
                            &weight[ch * geom.taps..(ch + 1) * geom.taps],
                            &gb[ch * n..(ch + 1) * n],
                            dxp,
                            &mut dw[ch * geom.taps..(ch + 1) * geom.taps],
                        );
                    }
                }
                return dw;
            }
            let cols = nb * n;
            let mut col = vec![0.0f32; k * cols];
            let mut gcol = vec![0.0f32; cout_g * cols];
            let mut dcol = vec![0.0f32; k * cols];
            for g in 0..geometry.groups {
                for i in 0..nb {
                    let b = b0 + i;
                    let xg = &x[b * item_in + g * cin_g * h * w..][..cin_g * h * w];
                    if geom.pointwise {
                        for r in 0..k {
                            col[r * cols + i * n..r * cols + (i + 1) * n]
                                .copy_from_slice(&xg[r * n..(r + 1) * n]);
                        }
                    } else {
                        geom.im2col(xg, cin_g, &mut col, cols, i * n);
                    }
                    let gg = &gy[b * item_out + g * cout_g * n..][..cout_g * n];
                    for r in 0..cout_g {
                        gcol[r * cols + i * n..r * cols + (i + 1) * n]
                            .copy_from_slice(&gg[r * n..(r + 1) * n]);
                    }
                }
                let wg = &weight[g * cout_g * k..(g + 1) * cout_g * k];
                gemm(
                    (cout_g, cols, k),
                    &gcol,
                    Strides::rows(cols),
                    &col,
                    Strides::transposed(cols),
                    1.0,
                    &mut dw[g * cout_g * k..(g + 1) * cout_g * k],
                    Strides::rows(k),
                );
                gemm(
                    (k, cout_g, cols),
                    wg,
                    Strides::transposed(k),
                    &gcol,
                    Strides::rows(cols),
                    0.0,
                    &mut dcol,
                    Strides::rows(cols),
                );
                for (i, dxb) in dxc.chunks_mut(item_in).enumerate() {
                    let dxg = &mut dxb[g * cin_g * h * w..(g + 1) * cin_g * h * w];
                    if geom.pointwise {
                        for r in 0..k {
                            dxg[r * n..(r + 1) * n]
                                .copy_from_slice(&dcol[r * cols + i * n..r * cols + (i + 1) * n]);
                        }
                    } else {
                        geom.col2im(&dcol, cin_g, dxg, cols, i * n);
                    }
                }
            }
            dw
        })
        .collect();
    (dx, sum_in_order(partial, weight.len()))
}

fn sum_in_order(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0.0f32; len];
    for p in parts {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

/// Sum of a slice in 8 `f32` lanes (vectorised), returned as `f64`.
fn sum_lanes(a: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in acc.iter_mut().zip(c) {
            *l += v;
        }
    }
    acc.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(rest)
}

/// Dot product of two slices in 8 `f32` lanes, returned as `f64`.
fn dot_lanes(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, p), q) in acc.iter_mut().zip(x).zip(y) {
            *l += p * q;
        }
    }
    acc.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(rest)
}

/// Per channel of `[N, C, spatial]` data, the sum of `a` and of `a * b`
/// over the batch and the plane (plane sums in `f32` lanes, added in `f64`).
fn channel_sums2(a: &[f32], b: &[f32], c: usize, spatial: usize) -> (Vec<f64>, Vec<f64>) {
    per_channel(a, b, c, spatial, |a, b| (sum_lanes(a), dot_lanes(a, b)))
}

/// Per channel of `[N, C, spatial]` data, the sums over the batch of
/// `plane(a_plane, b_plane)`. Images are read in memory order (a channel's
/// planes are far apart: reading them channel by channel, a small plane at
/// a time, made a training step 4% slower), summed per fixed chunk
/// of images, then the chunks in order, so the result does not depend on
/// the number of threads.
fn per_channel(
    a: &[f32],
    b: &[f32],
    c: usize,
    spatial: usize,
    plane: impl Fn(&[f32], &[f32]) -> (f64, f64) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let item = (c * spatial).max(1);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = a
        .par_chunks(CONV_CHUNK * item)
        .zip(b.par_chunks(CONV_CHUNK * item))
        .map(|(ac, bc)| {
            let (mut s, mut d) = (vec![0.0f64; c], vec![0.0f64; c]);
            for (ai, bi) in ac.chunks(item).zip(bc.chunks(item)) {
                for (ch, (s, d)) in s.iter_mut().zip(&mut d).enumerate() {
                    let at = ch * spatial;
                    let (ps, pd) = plane(&ai[at..at + spatial], &bi[at..at + spatial]);
                    *s += ps;
                    *d += pd;
                }
            }
            (s, d)
        })
        .collect();
    let (mut s, mut d) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (ps, pd) in parts {
        s.iter_mut().zip(ps).for_each(|(t, v)| *t += v);
        d.iter_mut().zip(pd).for_each(|(t, v)| *t += v);
    }
    (s, d)
}

/// Per channel of `[N, C, spatial]` data, the mean and the (biased)
/// variance in one pass over memory: sums of `v - k` and `(v - k)^2` with
/// `k` the channel's first value, so a large mean does not cancel the
/// variance away.
fn channel_moments(x: &[f32], c: usize, spatial: usize) -> (Vec<f64>, Vec<f64>) {
    let shift: Vec<f32> = (0..c)
        .map(|ch| x.get(ch * spatial).copied().unwrap_or(0.0))
        .collect();
    let item = (c * spatial).max(1);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = x
        .par_chunks(CONV_CHUNK * item)
        .map(|xc| {
            let (mut s, mut q) = (vec![0.0f64; c], vec![0.0f64; c]);
            for xi in xc.chunks(item) {
                for ch in 0..c {
                    let (ps, pq) = shifted_sums(&xi[ch * spatial..(ch + 1) * spatial], shift[ch]);
                    s[ch] += ps;
                    q[ch] += pq;
                }
            }
            (s, q)
        })
        .collect();
    let (mut s, mut q) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (ps, pq) in parts {
        s.iter_mut().zip(ps).for_each(|(t, v)| *t += v);
        q.iter_mut().zip(pq).for_each(|(t, v)| *t += v);
    }
    let m = (x.len() / item * spatial).max(1) as f64;
    let mean = (0..c).map(|ch| f64::from(shift[ch]) + s[ch] / m).collect();
    let var = (0..c)
        .map(|ch| (q[ch] / m - (s[ch] / m).powi(2)).max(0.0))
        .collect();
    (mean, var)
}

/// Sums of `v - k` and `(v - k)^2` over a slice in 8 `f32` lanes, as `f64`.
fn shifted_sums(a: &[f32], k: f32) -> (f64, f64) {
    let (mut s, mut q) = ([0f32; 8], [0f32; 8]);
    let chunks = a.chunks_exact(8);
    let (mut rs, mut rq) = (0.0f32, 0.0f32);
    for v in chunks.remainder() {
        let d = v - k;
        rs += d;
        rq += d * d;
    }
    for c in chunks {
        for ((s, q), v) in s.iter_mut().zip(&mut q).zip(c) {
            let d = v - k;
            *s += d;
            *q += d * d;
        }
    }
    let total = |l: [f32; 8], r: f32| l.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(r);
    (total(s, rs), total(q, rq))
}

/// The values go to the network's spare buffers, for its next forward pass.
impl Drop for Tape<'_> {
    fn drop(&mut self) {
        self.net
            .spare
            .keep(self.values.drain(..).flatten().collect());
    }
}

impl Tape<'_> {
    /// The output's values, `[N, ...]` of the output shape.
    pub fn output(&self) -> Result<Tensor, TrainError> {
        let data = self.values[self.net.output]
            .clone()
            .ok_or_else(|| TrainError::Internal("the output has no value".into()))?;
        self.tensor_of(self.net.output, data)
    }

    fn output_tensor_owned(&mut self) -> Result<Tensor, TrainError> {
        let data = self.values[self.net.output]
            .take()
            .ok_or_else(|| TrainError::Internal("the output has no value".into()))?;
        self.tensor_of(self.net.output, data)
    }

    fn tensor_of(&self, pos: usize, data: Vec<f32>) -> Result<Tensor, TrainError> {
        let mut shape = vec![self.batch];
        shape.extend_from_slice(self.net.steps[pos].shape.dims());
        Tensor::new(shape, data).map_err(|e| TrainError::Internal(e.to_string()))
    }

    /// Whether batch norm used batch or running statistics.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Updates every batch norm's running statistics with this pass's batch
    /// statistics (PyTorch's rule: `running = (1 - momentum) * running +
    /// momentum * batch`, the unbiased variance for `running_var`). Does
    /// nothing after an inference-mode pass.
    pub fn update_running_stats(&self, weights: &mut Weights, momentum: f32) {
        for (s, saved) in self.net.steps.iter().zip(&self.saved) {
            if let Saved::BatchNorm {
                mean, unbiased_var, ..
            } = saved
            {
                for (key, batch) in [
                    (WeightKey::RunningMean, mean),
                    (WeightKey::RunningVar, unbiased_var),
                ] {
                    if let Some(t) = weights.of_mut(&s.name, key) {
                        for (r, b) in t.data_mut().iter_mut().zip(batch) {
                            *r = (1.0 - momentum) * *r + momentum * b;
                        }
                    }
                }
            }
        }
    }

    /// Propagates `d_output` (the gradient of a scalar loss with respect to
    /// the output, `[N, ...]` of the output shape) back through the graph.
    pub fn backward(&self, weights: &Weights, d_output: &Tensor) -> Result<Gradients, TrainError> {
        let net = self.net;
        let out_len = self.batch * net.steps[net.output].shape.numel();
        if d_output.numel() != out_len {
            return Err(TrainError::InputShape {
                expected: net.steps[net.output].shape.clone(),
                got: d_output.shape().to_vec(),
            });
        }
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; net.steps.len()];
        grads[net.output] = Some(d_output.data().to_vec());
        let mut wgrads = Weights::new();
        for i in (0..net.steps.len()).rev() {
            let Some(g) = grads[i].take() else { continue };
            let s = &net.steps[i];
            if let Op::Input(_) = s.op {
                grads[i] = Some(g);
                continue;
            }
            let timer = profile::start();
            let val = |j: usize| -> Result<&[f32], TrainError> {
                self.values[j]
                    .as_deref()
                    .ok_or_else(|| TrainError::Internal(format!("value {j} was not kept")))
            };
            let x = val(s.inputs[0])?;
            let y = val(i)?;
            let g = if s.relu {
                zip_in_place(g, y, |g, y| if y > 0.0 { g } else { 0.0 })
            } else {
                g
            };
            let mut add_w =
                |key: WeightKey, data: Vec<f32>, shape: Vec<usize>| -> Result<(), TrainError> {
                    let t = Tensor::new(shape, data)
                        .map_err(|e| TrainError::Internal(e.to_string()))?;
                    wgrads.insert_of(&s.name, key, t);
                    Ok(())
                };
            let in_grads: Vec<Vec<f32>> = match &s.op {
                Op::Input(_) => Vec::new(),
                Op::Conv2d(p) => {
                    let spatial = s.shape.spatial();
                    let mut g = activation_grad(p.activation, g, y);
                    let residual = if p.residual { Some(g.clone()) } else { None };
                    if let Some(order) = &p.output_order {
                        permute_channels(&mut g, spatial, order, true);
                    }
                    let wt = weight(weights, s, WeightKey::Weight)?;
                    if p.bias {
                        let db: Vec<f32> = channel_sums2(&g, &g, p.out_channels, spatial)
                            .0
                            .into_iter()
                            .map(|v| v as f32)
                            .collect();
                        add_w(WeightKey::Bias, db, vec![p.out_channels])?;
                    }
                    let (dx, dw) = conv_backward(
                        x,
                        self.batch,
                        &conv_geometry(p, s)?,
                        wt,
                        &g,
                        s.input_order.as_deref(),
                    );
                    add_w(
                        WeightKey::Weight,
                        dw,
                        p.weight_shape(s.in_shapes[0].channels()),
                    )?;
                    let mut v = vec![dx];
                    v.extend(residual);
                    v
                }
                Op::BatchNorm(p) => {
                    let (c, spatial) = (s.shape.channels(), s.shape.spatial().max(1));
                    let gamma = weight(weights, s, WeightKey::Weight)?;
                    let (mean, inv_std, train) = match &self.saved[i] {
                        Saved::BatchNorm { mean, inv_std, .. } => {
                            (mean.clone(), inv_std.clone(), true)
                        }
                        _ => {
                            let rm = weight(weights, s, WeightKey::RunningMean)?;
                            let rv = weight(weights, s, WeightKey::RunningVar)?;
                            (
                                rm.to_vec(),
                                rv.iter().map(|v| 1.0 / (v + p.eps).sqrt()).collect(),
                                false,
                            )
                        }
                    };
                    // xhat = (x - mean) * inv_std is recomputed, not kept:
                    // sum(g * xhat) = inv_std * (sum(g x) - mean * sum(g)).
                    let (sum_g, sum_gxraw) = channel_sums2(&g, x, c, spatial);
                    let sum_gx: Vec<f64> = (0..c)
                        .map(|ch| {
                            f64::from(inv_std[ch])
                                * (sum_gxraw[ch] - f64::from(mean[ch]) * sum_g[ch])
                        })
                        .collect();
                    add_w(
                        WeightKey::Weight,
                        sum_gx.iter().map(|&v| v as f32).collect(),
                        vec![c],
                    )?;
                    add_w(
                        WeightKey::Bias,
                        sum_g.iter().map(|&v| v as f32).collect(),
                        vec![c],
                    )?;
                    let m = (self.batch * spatial) as f64;
                    // The input gradient overwrites `g` (each element reads
                    // only its own `g`): no new buffer to zero and fill.
                    let mut dx = g;
                    dx.par_chunks_mut(spatial)
                        .zip(x.par_chunks(spatial))
                        .enumerate()
                        .for_each(|(bc, (pl, xs))| {
                            let ch = bc % c;
                            let scale = gamma[ch] * inv_std[ch];
                            if train {
                                let (mg, mgx) = ((sum_g[ch] / m) as f32, (sum_gx[ch] / m) as f32);
                                let (mu, is) = (mean[ch], inv_std[ch]);
                                for (d, &xv) in pl.iter_mut().zip(xs) {
                                    *d = scale * (*d - mg - (xv - mu) * is * mgx);
                                }
                            } else {
                                pl.iter_mut().for_each(|d| *d *= scale);
                            }
                        });
                    vec![dx]
                }
                Op::Relu => vec![zip_in_place(g, y, |g, y| if y > 0.0 { g } else { 0.0 })],
                Op::Relu6 => vec![zip_in_place(
                    g,
                    y,
                    |g, y| if y > 0.0 && y < 6.0 { g } else { 0.0 },
                )],
                Op::Sigmoid => vec![zip_in_place(g, y, |g, y| g * y * (1.0 - y))],
                // Slope 1/6 where the clamp is open (0 < y < 1).
                Op::HardSigmoid => vec![zip_in_place(g, y, |g, y| {
                    if y > 0.0 && y < 1.0 {
                        g / 6.0
                    } else {
                        0.0
                    }
                })],
                // d/dx x * relu6(x + 3) / 6: 0 below -3, 1 above 3,
                // (2x + 3) / 6 between.
                Op::HardSwish => vec![zip_in_place(g, x, |g, x| {
                    if x <= -3.0 {
                        0.0
                    } else if x >= 3.0 {
                        g
                    } else {
                        g * (2.0 * x + 3.0) / 6.0
                    }
                })],
                Op::Flatten => vec![g],
                Op::ChannelShuffle(p) => {
                    let (c, spatial) = (s.shape.channels(), s.shape.spatial().max(1));
                    let mut dx = vec![0.0; g.len()];
                    dx.par_chunks_mut(spatial)
                        .enumerate()
                        .for_each(|(bc, plane)| {
                            let (b, ic) = (bc / c, bc % c);
                            // Output channel i*g + j reads input j*n + i.
                            let n = c / p.groups;
                            let (j, ii) = (ic / n, ic % n);
                            let oc = ii * p.groups + j;
                            let src = (b * c + oc) * spatial;
                            plane.copy_from_slice(&g[src..src + spatial]);
                        });
                    vec![dx]
                }
                Op::ChannelSlice(p) => {
                    let xs = &s.in_shapes[0];
                    let (item, spatial) = (xs.numel(), xs.spatial());
                    let len = p.len * spatial;
                    let mut dx = vec![0.0; self.batch * item];
                    dx.par_chunks_mut(item.max(1))
                        .enumerate()
                        .for_each(|(b, d)| {
                            d[p.start * spatial..p.start * spatial + len]
                                .copy_from_slice(&g[b * len..(b + 1) * len]);
                        });
                    vec![dx]
                }
                Op::Concat(p) => {
                    let mut g = activation_grad(p.activation, g, y);
                    if let Some(order) = &p.output_order {
                        permute_channels(&mut g, s.shape.spatial(), order, true);
                    }
                    let item = s.shape.numel();
                    let mut at = 0;
                    let mut parts = Vec::new();
                    for sh in &s.in_shapes {
                        let n = sh.numel();
                        let mut d = vec![0.0; self.batch * n];
                        d.par_chunks_mut(n.max(1)).enumerate().for_each(|(b, o)| {
                            o.copy_from_slice(&g[b * item + at..b * item + at + n])
                        });
                        parts.push(d);
                        at += n;
                    }
                    parts
                }
                Op::Add => vec![g.clone(), g],
                Op::Mul => {
                    let b = val(s.inputs[1])?;
                    if s.in_shapes[1] == s.in_shapes[0] {
                        vec![zip_map(&g, b, |g, b| g * b), zip_map(&g, x, |g, a| g * a)]
                    } else {
                        let spatial = s.shape.spatial().max(1);
                        let mut dx = g.clone();
                        dx.par_chunks_mut(spatial)
                            .enumerate()
                            .for_each(|(bc, pl)| pl.iter_mut().for_each(|v| *v *= b[bc]));
                        let mut ds = vec![0.0f32; b.len()];
                        ds.par_iter_mut().enumerate().for_each(|(bc, d)| {
                            let at = bc * spatial;
                            *d = g[at..at + spatial]
                                .iter()
                                .zip(&x[at..at + spatial])
                                .map(|(&g, &a)| f64::from(g) * f64::from(a))
                                .sum::<f64>() as f32;
                        });
                        vec![dx, ds]
                    }
                }
                Op::GlobalAvgPool => {
                    let spatial = s.in_shapes[0].spatial().max(1);
                    let mut dx = vec![0.0; x.len()];
                    dx.par_chunks_mut(spatial).enumerate().for_each(|(bc, pl)| {
                        pl.fill(g[bc] / spatial as f32);
                    });
                    vec![dx]
                }
                Op::MaxPool(_) => {
                    let Saved::MaxPool(arg) = &self.saved[i] else {
                        return Err(TrainError::Internal(
                            "max pool indices were not kept".into(),
                        ));
                    };
                    let (_, h, w) = chw(&s.in_shapes[0]);
                    let (_, oh, ow) = chw(&s.shape);
                    let mut dx = vec![0.0f32; x.len()];
                    dx.par_chunks_mut(h * w).enumerate().for_each(|(bc, pl)| {
                        for (k, &a) in arg[bc * oh * ow..(bc + 1) * oh * ow].iter().enumerate() {
                            if a != u32::MAX {
                                pl[a as usize] += g[bc * oh * ow + k];
                            }
                        }
                    });
                    vec![dx]
                }
                Op::AvgPool(p) => {
                    let (_, h, w) = chw(&s.in_shapes[0]);
                    let (_, oh, ow) = chw(&s.shape);
                    let (rows, cols) = pool_windows(p, (h, w), (oh, ow));
                    let mut dx = vec![0.0f32; x.len()];
                    dx.par_chunks_mut(h * w).enumerate().for_each(|(bc, pl)| {
                        kernels::avg_pool_back_plane(
                            p,
                            &g[bc * oh * ow..(bc + 1) * oh * ow],
                            w,
                            &rows,
                            &cols,
                            pl,
                        )
                    });
                    vec![dx]
                }
                Op::Linear(p) => {
                    let inputs = s.in_shapes[0].numel();
                    let (nb, out) = (self.batch, p.out_features);
                    let wt = weight(weights, s, WeightKey::Weight)?;
                    let mut dw = vec![0.0f32; out * inputs];
                    gemm(
                        (out, nb, inputs),
                        &g,
                        Strides::transposed(out),
                        x,
                        Strides::rows(inputs),
                        0.0,
                        &mut dw,
                        Strides::rows(inputs),
                    );
                    add_w(WeightKey::Weight, dw, vec![out, inputs])?;
                    if p.bias {
                        let mut db = vec![0.0f64; out];
                        for r in g.chunks(out) {
                            db.iter_mut().zip(r).for_each(|(d, &v)| *d += f64::from(v));
                        }
                        add_w(
                            WeightKey::Bias,
                            db.into_iter().map(|v| v as f32).collect(),
                            vec![out],
                        )?;
                    }
                    let mut dx = vec![0.0f32; nb * inputs];
                    gemm(
                        (nb, out, inputs),
                        &g,
                        Strides::rows(out),
                        wt,
                        Strides::rows(inputs),
                        0.0,
                        &mut dx,
                        Strides::rows(inputs),
                    );
                    vec![dx]
                }
                Op::Softmax => {
                    let (c, spatial) = (s.shape.channels(), s.shape.spatial().max(1));
                    let item = c * spatial;
                    let mut dx = vec![0.0f32; g.len()];
                    dx.par_chunks_mut(item.max(1))
                        .enumerate()
                        .for_each(|(b, d)| {
                            for sp in 0..spatial {
                                let at = |k: usize| b * item + k * spatial + sp;
                                let dot: f64 = (0..c)
                                    .map(|k| f64::from(g[at(k)]) * f64::from(y[at(k)]))
                                    .sum();
                                for k in 0..c {
                                    d[k * spatial + sp] =
                                        (f64::from(y[at(k)]) * (f64::from(g[at(k)]) - dot)) as f32;
                                }
                            }
                        });
                    vec![dx]
                }
            };
            for (&j, d) in s.inputs.iter().zip(in_grads) {
                match &mut grads[j] {
                    slot @ None => *slot = Some(d),
                    Some(acc) => {
                        // In parallel: a residual's input gets two full-size
                        // gradients per unit.
                        acc.par_chunks_mut(1 << 14)
                            .zip(d.par_chunks(1 << 14))
                            .for_each(|(a, d)| a.iter_mut().zip(d).for_each(|(a, v)| *a += v))
                    }
                }
            }
            profile::stop(timer, || format!("bwd {}", op_label(s)));
        }
        let input = grads[0]
            .take()
            .unwrap_or_else(|| vec![0.0; self.batch * net.steps[0].shape.numel()]);
        let input = self.tensor_of(0, input)?;
        // Trainable tensors the output does not depend on get zero gradients.
        for id in net.graph.nodes() {
            for spec in net.graph.weights(id) {
                let name = spec.tensor_name(&net.graph.node(id).name);
                if spec.trainable() && wgrads.get(&name).is_none() {
                    if let Ok(t) = Tensor::zeros(spec.shape.clone()) {
                        wgrads.insert(name, t);
                    }
                }
            }
        }
        Ok(Gradients {
            weights: wgrads,
            input,
        })
    }
}

/// Mean softmax cross-entropy of `[N, classes]` logits against labels:
/// the loss, its gradient with respect to the logits, and how many argmax
/// predictions are right. Computed in `f64`.
pub fn softmax_cross_entropy(
    logits: &Tensor,
    labels: &[u32],
) -> Result<(f64, Tensor, usize), TrainError> {
    let n = logits.batch();
    let classes = logits.numel() / n.max(1);
    if labels.len() != n || logits.shape().len() != 2 {
        return Err(TrainError::Labels(format!(
            "{} labels for logits of shape {:?} (expected [N, classes] and N labels)",
            labels.len(),
            logits.shape()
        )));
    }
    let mut grad = vec![0.0f32; logits.numel()];
    let mut loss = 0.0f64;
    let mut correct = 0;
    for (b, (row, &label)) in logits.data().chunks(classes).zip(labels).enumerate() {
        let label = label as usize;
        if label >= classes {
            return Err(TrainError::Labels(format!(
                "label {label} is out of range for {classes} classes"
            )));
        }
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        let log_sum = sum.ln() + f64::from(max);
        loss += log_sum - f64::from(row[label]);
        let arg = row
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv {
                    (i, v)
                } else {
                    (bi, bv)
                }
            })
            .0;
        if arg == label {
            correct += 1;
        }
        for (k, &v) in row.iter().enumerate() {
            let p = (f64::from(v) - log_sum).exp();
            let t = if k == label { 1.0 } else { 0.0 };
            grad[b * classes + k] = ((p - t) / n as f64) as f32;
        }
    }
    let grad = Tensor::new(logits.shape().to_vec(), grad)
        .map_err(|e| TrainError::Internal(e.to_string()))?;
    Ok((loss / n as f64, grad, correct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn close(what: &str, fast: &[f32], reference: &[f32]) {
        assert_eq!(fast.len(), reference.len(), "{what}: lengths");
        let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in fast.iter().zip(reference).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{what}[{i}]: {a} vs the reference {b}"
            );
        }
    }

    /// ReLUs folded into the add or batch norm before them and channel
    /// shuffles folded into the depthwise convolutions after them give
    /// exactly the unfused network's outputs and gradients, in both modes,
    /// under and over one chunk of images.
    #[test]
    fn fused_relus_change_nothing() {
        let spec = shufflekit_spec::Spec::parse_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../specs/shufflenet_v1.yaml"
        )))
        .unwrap();
        let set = |k: &str, v: &str| (k.to_string(), v.to_string());
        let graph = spec
            .build(&[
                set("groups", "2"),
                set("width", "0.25"),
                set("resolution", "12"),
                set("channels", "1"),
                set("classes", "4"),
                set("small_input", "true"),
                set("shallow", "true"),
            ])
            .unwrap();
        let fused = Network::new(&graph).unwrap();
        let plain = Network::build(&graph, false).unwrap();
        let relus = |n: &Network| n.steps.iter().filter(|s| s.op == Op::Relu).count();
        let folded = fused.steps.iter().filter(|s| s.relu).count();
        assert!(folded > 10, "{folded} ReLUs folded");
        assert_eq!(relus(&fused) + folded, relus(&plain));
        let shuffles = |n: &Network| {
            n.steps
                .iter()
                .filter(|s| matches!(s.op, Op::ChannelShuffle(_)))
                .count()
        };
        let folded_shuffles = fused
            .steps
            .iter()
            .filter(|s| s.input_order.is_some())
            .count();
        assert!(folded_shuffles > 3, "{folded_shuffles} shuffles folded");
        assert_eq!(shuffles(&fused) + folded_shuffles, shuffles(&plain));
        let w = shufflekit_ir::weights::Weights::init(
            &graph,
            &shufflekit_ir::weights::InitOptions {
                seed: 2,
                randomize_batch_norm: true,
            },
        );
        for batch in [5, CONV_CHUNK + 3] {
            let x = shufflekit_ir::input::random_input(fused.input_shape(), batch, 3).unwrap();
            let labels: Vec<u32> = (0..batch as u32).map(|b| b % 4).collect();
            for mode in [Mode::Train, Mode::Eval] {
                let run = |net: &Network| {
                    let tape = net.forward(&w, &x, mode).unwrap();
                    let out = tape.output().unwrap();
                    let (_, d, _) = softmax_cross_entropy(&out, &labels).unwrap();
                    let grads = tape.backward(&w, &d).unwrap();
                    (out, grads.weights, grads.input)
                };
                assert_eq!(run(&fused), run(&plain), "{mode:?}, batch {batch}");
            }
        }
    }

    /// The 3x3 stencil against the per-tap loops of the other depthwise
    /// convolutions, on planes from 1x1 up.
    #[test]
    fn depthwise_stencil_matches_the_tap_loops() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for case in 0..20 {
            let (h, w) = (1 + case % 6, 1 + (case * 7) % 9);
            let mut p = Conv2d::new(1, 3);
            p.padding = [1, 1];
            let geometry = p.geometry(&Shape::chw(1, h, w)).unwrap();
            let mut stencil = Stencil3::new(&geometry).expect("a 3x3 stride-1 depthwise");
            let geom = ConvGeom::new(&geometry);
            let (x, wt) = (random(&mut rng, h * w), random(&mut rng, 9));
            let (mut y, mut want) = (random(&mut rng, h * w), Vec::new());
            want.clone_from(&y);
            stencil.forward(&x, &wt, &mut y);
            geom.depthwise(&x, &wt, &mut want);
            close("y", &y, &want);
            let gy = random(&mut rng, h * w);
            let (mut dx, mut dw) = (vec![0.5; h * w], vec![0.25; 9]);
            let (mut rdx, mut rdw) = (dx.clone(), dw.clone());
            stencil.backward(&x, &wt, &gy, &mut dx, &mut dw);
            geom.depthwise_back(&x, &wt, &gy, &mut rdx, &mut rdw);
            close("dx", &dx, &rdx);
            close("dw", &dw, &rdw);
        }
    }

    /// The direct 1x1 kernels, with every instruction-set tier this CPU
    /// runs, against the im2col path (itself checked by finite differences
    /// in tests/gradients.rs): same outputs and gradients on random groups,
    /// channels, planes and batch sizes that are and are not multiples of
    /// the chunk.
    #[test]
    fn pointwise_kernels_match_the_im2col_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..24 {
            let groups = rng.random_range(1..=4);
            let (cin_g, cout_g) = (rng.random_range(1..=9), rng.random_range(1..=9));
            let (h, w) = (rng.random_range(1..=9), rng.random_range(1..=9));
            let batch = [1, 3, CONV_CHUNK, CONV_CHUNK + 5][case % 4];
            let mut p = Conv2d::new(groups * cout_g, 1);
            p.groups = groups;
            let shape = Shape::chw(groups * cin_g, h, w);
            let geometry = p.geometry(&shape).unwrap();
            assert!(geometry.is_pointwise());
            let x = random(&mut rng, batch * shape.numel());
            let wt = random(&mut rng, groups * cout_g * cin_g);
            let gy = random(&mut rng, batch * geometry.out_channels * h * w);
            let reference = general_conv_forward(&x, batch, &geometry, &wt);
            let (rdx, rdw) = general_conv_backward(&x, batch, &geometry, &wt, &gy);
            for isa in Isa::supported() {
                // A buffer of NaNs: the kernel must write every element.
                let dirty = vec![f32::NAN; gy.len()];
                let y = pointwise_forward(&x, batch, &geometry, &wt, dirty, isa);
                close(&format!("{isa:?} y"), &y, &reference);
                let (dx, dw) = pointwise_backward(&x, batch, &geometry, &wt, &gy, isa);
                close(&format!("{isa:?} dx"), &dx, &rdx);
                close(&format!("{isa:?} dw"), &dw, &rdw);
            }
        }
    }
}
