//! The reference evaluator: the definition of what a graph computes.
//!
//! [`evaluate`] runs a verified graph on a batch of inputs with a set of
//! weights that [`Weights::check`] accepts, one plain function per op, with
//! PyTorch's semantics (NCHW, inference-mode batch norm, pooling rules of
//! `max_pool2d` / `avg_pool2d` including `ceil_mode` and
//! `count_include_pad`). It is written to be obviously correct first and
//! reasonably fast second: convolutions accumulate in `f32` with the
//! innermost loop over contiguous output columns, and work is spread with
//! rayon over batch x channels (and over output rows of large planes).
//!
//! Intermediate tensors are dropped as soon as their last user has run, and
//! elementwise ops reuse their input's buffer when they are its last user.
//! [`evaluate_all`] keeps every node's output instead, for tests of passes.
//!
//! What it does not do: fuse, reorder or approximate anything; the only
//! floating-point choices are the summation orders visible in the code.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::graph::{Graph, IrError, Node, NodeId};
use crate::ops::{self, ConvGeometry, Op, WeightKey};
use crate::shape::Shape;
use crate::tensor::Tensor;
use crate::verify;
use crate::weights::{Weights, WeightsError};

/// Why a graph could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The verifier rejected the graph.
    #[error("the graph is invalid: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidGraph(Vec<IrError>),
    /// The weights do not fit the graph.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The graph has no input node or several; evaluation feeds one tensor.
    #[error("the graph has {0} input nodes; evaluation needs exactly one")]
    InputCount(usize),
    /// The input tensor's shape is not `[N, ...]` of the graph's input.
    #[error("input shape {got:?} does not match the network's input {expected}: expected [N, {}] for a batch of N", expected.dims().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    InputShape {
        /// The graph's input shape (without batch).
        expected: Shape,
        /// The shape of the tensor given.
        got: Vec<usize>,
    },
    /// The input tensor has batch size 0.
    #[error("the input batch is empty")]
    EmptyBatch,
    /// A layer's output for this batch exceeds what memory can address.
    #[error("layer `{node}`: the output for a batch of {batch} ({batch} x {shape}) is too large")]
    TooLarge {
        /// The layer.
        node: String,
        /// The batch size.
        batch: usize,
        /// The layer's per-image shape.
        shape: Shape,
    },
    /// Memory for a layer's output could not be allocated.
    #[error("layer `{node}`: out of memory allocating {elements} values")]
    OutOfMemory {
        /// The layer.
        node: String,
        /// The number of `f32` values asked for.
        elements: usize,
    },
    /// An inconsistency the checks before evaluation should have ruled out
    /// (a bug in the evaluator if it happens).
    #[error("layer `{node}` ({op}): internal error: {message}")]
    Internal {
        /// The layer.
        node: String,
        /// Its op kind.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Runs the graph on `input` (`[N, ...]` of the graph's input shape, any
/// batch size N >= 1) and returns the output node's value, `[N, ...]` of
/// its shape.
///
/// The graph is verified and the weights checked first; any graph the
/// verifier accepts with weights [`Weights::check`] accepts evaluates
/// without panicking.
pub fn evaluate(graph: &Graph, weights: &Weights, input: &Tensor) -> Result<Tensor, EvalError> {
    let mut values = run(graph, weights, input, false)?;
    values.pop().map(|(_, t)| t).ok_or(EvalError::InputCount(0))
}

/// Like [`evaluate`], but returns every node's output (inputs included), in
/// the graph's topological order.
pub fn evaluate_all(
    graph: &Graph,
    weights: &Weights,
    input: &Tensor,
) -> Result<Vec<(NodeId, Tensor)>, EvalError> {
    run(graph, weights, input, true)
}

/// Which values a run returns.
#[derive(Clone, Copy)]
enum Keep {
    /// Only the output node's (everything else is freed as soon as possible).
    Output(NodeId),
    /// Every node's.
    All,
}

/// What the checks before a run established.
struct Runner {
    output: NodeId,
    batch: usize,
}

impl Runner {
    fn prepare(graph: &Graph, weights: &Weights, input: &Tensor) -> Result<Runner, EvalError> {
        verify::verify(graph).map_err(EvalError::InvalidGraph)?;
        weights.check(graph)?;
        let inputs = graph.input_nodes();
        let [input_node] = inputs[..] else {
            return Err(EvalError::InputCount(inputs.len()));
        };
        let expected = &graph.node(input_node).shape;
        let got = input.shape();
        if got.len() != expected.rank() + 1 || got[1..] != *expected.dims() {
            return Err(EvalError::InputShape {
                expected: expected.clone(),
                got: got.to_vec(),
            });
        }
        if got[0] == 0 {
            return Err(EvalError::EmptyBatch);
        }
        // The verifier guarantees an output node.
        let output = graph.output().ok_or(EvalError::InputCount(0))?;
        Ok(Runner {
            output,
            batch: got[0],
        })
    }
}

fn run(
    graph: &Graph,
    weights: &Weights,
    input: &Tensor,
    keep_all: bool,
) -> Result<Vec<(NodeId, Tensor)>, EvalError> {
    let Runner { batch, output } = Runner::prepare(graph, weights, input)?;
    let keep = if keep_all {
        Keep::All
    } else {
        Keep::Output(output)
    };
    let needed: HashSet<NodeId> = match keep {
        Keep::All => graph.nodes().collect(),
        Keep::Output(out) => ancestors(graph, out),
    };
    // Remaining reads of each value; a value is dropped when it reaches 0.
    let mut uses: HashMap<NodeId, usize> = HashMap::new();
    for id in graph.nodes().filter(|id| needed.contains(id)) {
        for i in graph.inputs(id) {
            *uses.entry(i).or_default() += 1;
        }
    }
    if let Keep::Output(out) = keep {
        *uses.entry(out).or_default() += 1;
    }

    let mut values: HashMap<NodeId, Tensor> = HashMap::new();
    let mut order = Vec::new();
    for id in graph.nodes().filter(|id| needed.contains(id)) {
        let node = graph.node(id);
        let ins = graph.inputs(id);
        let mut shape = vec![batch];
        shape.extend_from_slice(node.shape.dims());
        let len = batch
            .checked_mul(node.shape.numel())
            .filter(|&n| crate::tensor::checked_numel(&[n]).is_some())
            .ok_or_else(|| EvalError::TooLarge {
                node: node.name.clone(),
                batch,
                shape: node.shape.clone(),
            })?;

        let data = if let Op::Input(_) = node.op {
            input.data().to_vec()
        } else if is_in_place(&node.op) {
            let x = ins[0];
            let owned = match keep {
                Keep::Output(_) if uses.get(&x) == Some(&1) => values.remove(&x),
                _ => None,
            };
            let mut data = match owned {
                Some(t) => t.into_data(),
                None => value(&values, x, node)?.data().to_vec(),
            };
            apply_in_place(graph, weights, id, &mut data)?;
            data
        } else {
            let args: Vec<&Tensor> = ins
                .iter()
                .map(|&i| value(&values, i, node))
                .collect::<Result<_, _>>()?;
            let mut out = alloc(len, node)?;
            compute(graph, weights, id, &args, &mut out)?;
            out
        };
        if data.len() != len {
            return Err(internal(
                node,
                format!("produced {} values, expected {len}", data.len()),
            ));
        }
        let tensor = Tensor::new(shape, data).map_err(|e| internal(node, e.to_string()))?;

        if let Keep::Output(_) = keep {
            for i in &ins {
                if let Some(n) = uses.get_mut(i) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        values.remove(i);
                    }
                }
            }
        }
        values.insert(id, tensor);
        order.push(id);
    }
    let mut result = Vec::new();
    match keep {
        Keep::All => {
            for id in order {
                if let Some(t) = values.remove(&id) {
                    result.push((id, t));
                }
            }
        }
        Keep::Output(out) => {
            if let Some(t) = values.remove(&out) {
                result.push((out, t));
            }
        }
    }
    Ok(result)
}

/// The node and every node it depends on.
fn ancestors(graph: &Graph, out: NodeId) -> HashSet<NodeId> {
    let mut seen = HashSet::new();
    let mut stack = vec![out];
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(graph.inputs(id));
        }
    }
    seen
}

fn value<'a>(
    values: &'a HashMap<NodeId, Tensor>,
    id: NodeId,
    node: &Node,
) -> Result<&'a Tensor, EvalError> {
    values
        .get(&id)
        .ok_or_else(|| internal(node, format!("input {id} has no value")))
}

fn internal(node: &Node, message: String) -> EvalError {
    EvalError::Internal {
        node: node.name.clone(),
        op: node.op.kind(),
        message,
    }
}

/// A zeroed buffer, or an error instead of an abort when memory runs out.
fn alloc(len: usize, node: &Node) -> Result<Vec<f32>, EvalError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| EvalError::OutOfMemory {
            node: node.name.clone(),
            elements: len,
        })?;
    v.resize(len, 0.0);
    Ok(v)
}

/// Unary ops computed over their input's buffer: those that may overwrite
/// their only input ([`Op::in_place_inputs`]) and reshapes.
fn is_in_place(op: &Op) -> bool {
    (op.arity() == ops::Arity::Exactly(1) && op.in_place_inputs() == [0]) || op.is_reshape()
}

fn weight<'a>(weights: &'a Weights, node: &Node, key: WeightKey) -> Result<&'a [f32], EvalError> {
    weights
        .of(&node.name, key)
        .map(Tensor::data)
        .ok_or_else(|| internal(node, format!("weight `{key}` is missing")))
}

fn chw(shape: &Shape, node: &Node) -> Result<(usize, usize, usize), EvalError> {
    shape
        .as_chw()
        .ok_or_else(|| internal(node, format!("expected a [C, H, W] shape, got {shape}")))
}

/// Smallest chunk of elements worth a rayon task for cheap elementwise work.
const MIN_PARALLEL: usize = 1 << 14;

fn apply_in_place(
    graph: &Graph,
    weights: &Weights,
    id: NodeId,
    data: &mut [f32],
) -> Result<(), EvalError> {
    let node = graph.node(id);
    match &node.op {
        Op::Relu => map_in_place(data, |v| v.max(0.0)),
        Op::Relu6 => map_in_place(data, |v| v.clamp(0.0, 6.0)),
        Op::Sigmoid => map_in_place(data, |v| 1.0 / (1.0 + (-v).exp())),
        Op::HardSigmoid => map_in_place(data, crate::ops::hard_sigmoid),
        Op::HardSwish => map_in_place(data, crate::ops::hard_swish),
        Op::Flatten => {}
        Op::BatchNorm(p) => {
            let channels = node.shape.channels();
            batch_norm(
                data,
                channels,
                node.shape.spatial(),
                p.eps,
                [
                    weight(weights, node, WeightKey::Weight)?,
                    weight(weights, node, WeightKey::Bias)?,
                    weight(weights, node, WeightKey::RunningMean)?,
                    weight(weights, node, WeightKey::RunningVar)?,
                ],
            );
        }
        other => {
            return Err(internal(
                node,
                format!("{} is not an in-place op", other.kind()),
            ))
        }
    }
    Ok(())
}

/// Reorders the channels of every image: new channel `k` = old channel
/// `order[k]`.
fn reorder_channels(data: &mut [f32], spatial: usize, order: &[usize]) {
    let item = order.len() * spatial;
    if item == 0 {
        return;
    }
    for image in data.chunks_mut(item) {
        let old = image.to_vec();
        for (k, &c) in order.iter().enumerate() {
            image[k * spatial..(k + 1) * spatial]
                .copy_from_slice(&old[c * spatial..(c + 1) * spatial]);
        }
    }
}

/// `max(x, 0)` and friends. NaN handling follows `f32::max`/`clamp`.
fn map_in_place(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    data.par_chunks_mut(MIN_PARALLEL)
        .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = f(*v)));
}

/// Inference batch norm: `(x - mean) / sqrt(var + eps) * weight + bias`, per
/// channel.
fn batch_norm(
    data: &mut [f32],
    channels: usize,
    spatial: usize,
    eps: f32,
    [gamma, beta, mean, var]: [&[f32]; 4],
) {
    let min_len = (MIN_PARALLEL / spatial.max(1)).max(1);
    data.par_chunks_mut(spatial.max(1))
        .with_min_len(min_len)
        .enumerate()
        .for_each(|(bc, plane)| {
            let c = bc % channels;
            let denom = (var[c] + eps).sqrt();
            for v in plane {
                *v = (*v - mean[c]) / denom * gamma[c] + beta[c];
            }
        });
}

/// Computes a node that writes a fresh buffer (`out`, zeroed, of the
/// node's size for the batch).
fn compute(
    graph: &Graph,
    weights: &Weights,
    id: NodeId,
    args: &[&Tensor],
    out: &mut [f32],
) -> Result<(), EvalError> {
    let node = graph.node(id);
    let in_shapes = graph.input_shapes(id);
    let x = args
        .first()
        .map(|t| t.data())
        .ok_or_else(|| internal(node, "no input".into()))?;
    let x_shape = in_shapes
        .first()
        .copied()
        .ok_or_else(|| internal(node, "no input shape".into()))?;
    match &node.op {
        Op::Conv2d(p) => {
            let bias = if p.bias {
                Some(weight(weights, node, WeightKey::Bias)?)
            } else {
                None
            };
            let geometry = p.geometry(x_shape).map_err(|e| internal(node, e))?;
            conv2d(
                x,
                &geometry,
                weight(weights, node, WeightKey::Weight)?,
                bias,
                out,
            );
            // The fused epilogue, in its defining order: reorder channels,
            // add the residual, apply the activation.
            if let Some(order) = &p.output_order {
                reorder_channels(out, node.shape.spatial(), order);
            }
            if p.residual {
                let r = args
                    .get(1)
                    .ok_or_else(|| internal(node, "the residual input is missing".into()))?;
                for (o, r) in out.iter_mut().zip(r.data()) {
                    *o += r;
                }
            }
            if p.activation != ops::Activation::None {
                map_in_place(out, |v| p.activation.apply(v));
            }
        }
        Op::MaxPool(p) => pool(
            x,
            chw(x_shape, node)?,
            p,
            chw(&node.shape, node)?,
            PoolKind::Max,
            out,
        ),
        Op::AvgPool(p) => pool(
            x,
            chw(x_shape, node)?,
            p,
            chw(&node.shape, node)?,
            PoolKind::Avg,
            out,
        ),
        Op::GlobalAvgPool => global_avg_pool(x, x_shape.spatial(), out),
        Op::ChannelShuffle(p) => channel_shuffle(x, x_shape.channels(), x_shape.spatial(), p, out),
        Op::ChannelSlice(p) => {
            let item = x_shape.numel();
            let spatial = x_shape.spatial();
            channel_slice(x, item, p.start * spatial, p.len * spatial, out);
        }
        Op::Concat(p) => {
            let parts: Vec<(&[f32], usize)> = args
                .iter()
                .zip(&in_shapes)
                .map(|(t, s)| (t.data(), s.numel()))
                .collect();
            concat(&parts, out);
            if let Some(order) = &p.output_order {
                reorder_channels(out, node.shape.spatial(), order);
            }
            if p.activation != ops::Activation::None {
                out.par_iter_mut().for_each(|v| *v = p.activation.apply(*v));
            }
        }
        Op::Add => {
            let y = args
                .get(1)
                .ok_or_else(|| internal(node, "add takes two inputs".into()))?;
            add(x, y.data(), out);
        }
        Op::Mul => {
            let y = args
                .get(1)
                .ok_or_else(|| internal(node, "mul takes two inputs".into()))?;
            let y_shape = in_shapes
                .get(1)
                .ok_or_else(|| internal(node, "mul takes two inputs".into()))?;
            if *y_shape == x_shape {
                mul(x, y.data(), out);
            } else {
                mul_per_channel(x, x_shape.spatial(), y.data(), out);
            }
        }
        Op::Linear(p) => {
            let bias = if p.bias {
                Some(weight(weights, node, WeightKey::Bias)?)
            } else {
                None
            };
            linear(
                x,
                x_shape.numel(),
                weight(weights, node, WeightKey::Weight)?,
                bias,
                p.out_features,
                out,
            );
        }
        Op::Softmax => softmax(x, x_shape.channels(), x_shape.spatial(), out),
        Op::Input(_)
        | Op::Relu
        | Op::Relu6
        | Op::Sigmoid
        | Op::HardSigmoid
        | Op::HardSwish
        | Op::BatchNorm(_)
        | Op::Flatten => return Err(internal(node, "handled elsewhere".into())),
    }
    Ok(())
}

/// Planes at least this large are split into row blocks across threads.
const ROW_SPLIT: usize = 4096;

/// 2-D convolution, PyTorch's `conv2d`: `out[b, o, y, x] = bias[o] +
/// sum over i in o's group, ky, kx of w[o, i, ky, kx] * in[b, g*cin_g + i,
/// y*sh + ky*dh - ph, x*sw + kx*dw - pw]` (zero outside the input).
fn conv2d(
    x: &[f32],
    geometry: &ConvGeometry,
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (c, o) = (geometry.in_channels, geometry.out_channels);
    let ([h, w], [oh, ow]) = (geometry.in_size, geometry.out_size);
    let (cin_g, cout_g) = (geometry.in_per_group, geometry.out_per_group);
    let taps = cin_g * geometry.taps();
    let plane = geometry.out_plane();
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(bo, out_plane)| {
            let (b, oc) = (bo / o, bo % o);
            let g = oc / cout_g;
            let start = (b * c + g * cin_g) * h * w;
            let group_in = &x[start..start + cin_g * h * w];
            let w_oc = &weight[oc * taps..(oc + 1) * taps];
            out_plane.fill(bias.map_or(0.0, |bias| bias[oc]));
            let conv = ConvPlane {
                input: group_in,
                geometry,
                weights: w_oc,
            };
            if plane >= ROW_SPLIT && oh > 1 {
                let rows = (ROW_SPLIT / ow).max(1);
                out_plane
                    .par_chunks_mut(rows * ow)
                    .enumerate()
                    .for_each(|(t, block)| conv.rows(t * rows, block));
            } else {
                conv.rows(0, out_plane);
            }
        });
}

/// One output channel of one image: its group's input planes and weights.
struct ConvPlane<'a> {
    input: &'a [f32],
    geometry: &'a ConvGeometry,
    weights: &'a [f32],
}

impl ConvPlane<'_> {
    /// Accumulates output rows `oy0 ..` into `out` (whole rows).
    fn rows(&self, oy0: usize, out: &mut [f32]) {
        let p = self.geometry;
        let ([h, w], ow) = (p.in_size, p.out_size[1]);
        let [kh, kw] = p.kernel;
        let [sh, sw] = p.stride;
        let nrows = out.len() / ow;
        let cin = p.in_per_group;
        if p.is_pointwise() {
            // Output and input planes coincide: accumulate whole blocks of
            // rows, four input channels at a time.
            let (lo, hi) = (oy0 * w, (oy0 + nrows) * w);
            let plane = |i: usize| &self.input[i * h * w + lo..i * h * w + hi];
            let mut i = 0;
            while i + 4 <= cin {
                let (x0, x1, x2, x3) = (plane(i), plane(i + 1), plane(i + 2), plane(i + 3));
                let wv = &self.weights[i..i + 4];
                for (k, o) in out.iter_mut().enumerate() {
                    *o += wv[0] * x0[k] + wv[1] * x1[k] + wv[2] * x2[k] + wv[3] * x3[k];
                }
                i += 4;
            }
            for i in i..cin {
                let wv = self.weights[i];
                for (o, &v) in out.iter_mut().zip(plane(i)) {
                    *o += wv * v;
                }
            }
            return;
        }
        for i in 0..cin {
            let input = &self.input[i * h * w..(i + 1) * h * w];
            for ky in 0..kh {
                let off_y = p.tap_offset(0, ky);
                for kx in 0..kw {
                    let wv = self.weights[(i * kh + ky) * kw + kx];
                    let xs = p.valid_outputs(1, kx);
                    if xs.is_empty() {
                        continue;
                    }
                    let (x_lo, x_hi, count) = (xs.start, xs.end, xs.len());
                    let ix0 = p.input_of(1, kx, x_lo);
                    for r in 0..nrows {
                        let iy = (oy0 + r) as isize * sh as isize + off_y;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let in_row = &input[iy as usize * w..(iy as usize + 1) * w];
                        let out_row = &mut out[r * ow + x_lo..r * ow + x_hi];
                        if sw == 1 {
                            for (o, &v) in out_row.iter_mut().zip(&in_row[ix0..ix0 + count]) {
                                *o += wv * v;
                            }
                        } else {
                            for (o, &v) in out_row.iter_mut().zip(in_row[ix0..].iter().step_by(sw))
                            {
                                *o += wv * v;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Max,
    Avg,
}

/// Max or average pooling with PyTorch's window rules. A window covers
/// `start = o * stride - pad` to `start + kernel`; for max, positions
/// outside the input are ignored; for average, the divisor is the window
/// clipped to `input + padding` when `count_include_pad`, else the number of
/// real inputs in it.
fn pool(
    x: &[f32],
    (_, h, w): (usize, usize, usize),
    p: &ops::Pool,
    (_, oh, ow): (usize, usize, usize),
    kind: PoolKind,
    out: &mut [f32],
) {
    let window = |o: usize, axis: usize, len: usize| {
        let start = o as i128 * p.stride[axis] as i128 - p.padding[axis] as i128;
        let end_padded =
            (start + p.kernel[axis] as i128).min(len as i128 + p.padding[axis] as i128);
        let padded_size = end_padded - start;
        let (lo, hi) = (start.max(0), end_padded.min(len as i128));
        (lo as usize, hi.max(lo) as usize, padded_size)
    };
    let rows: Vec<_> = (0..oh).map(|oy| window(oy, 0, h)).collect();
    let cols: Vec<_> = (0..ow).map(|ox| window(ox, 1, w)).collect();
    out.par_chunks_mut((oh * ow).max(1))
        .enumerate()
        .for_each(|(bc, out_plane)| {
            let input = &x[bc * h * w..(bc + 1) * h * w];
            for (oy, &(y0, y1, ysize)) in rows.iter().enumerate() {
                for (ox, &(x0, x1, xsize)) in cols.iter().enumerate() {
                    let cells =
                        (y0..y1).flat_map(|y| input[y * w + x0..y * w + x1].iter().copied());
                    out_plane[oy * ow + ox] =
                        match kind {
                            PoolKind::Max => cells.fold(f32::NEG_INFINITY, |m, v| {
                                if v > m || v.is_nan() {
                                    v
                                } else {
                                    m
                                }
                            }),
                            PoolKind::Avg => {
                                let real = (y1 - y0) * (x1 - x0);
                                if real == 0 {
                                    0.0
                                } else {
                                    let divisor = if p.count_include_pad {
                                        (ysize as f64 * xsize as f64) as f32
                                    } else {
                                        real as f32
                                    };
                                    cells.sum::<f32>() / divisor
                                }
                            }
                        };
                }
            }
        });
}

/// Mean of each plane (summed in `f64`).
fn global_avg_pool(x: &[f32], spatial: usize, out: &mut [f32]) {
    let spatial = spatial.max(1);
    out.par_iter_mut().enumerate().for_each(|(bc, o)| {
        let plane = &x[bc * spatial..(bc + 1) * spatial];
        *o = (plane.iter().map(|&v| f64::from(v)).sum::<f64>() / spatial as f64) as f32;
    });
}

/// Output channel `i * g + j` is input channel `j * n + i`.
fn channel_shuffle(
    x: &[f32],
    channels: usize,
    spatial: usize,
    p: &ops::ChannelShuffle,
    out: &mut [f32],
) {
    let spatial = spatial.max(1);
    out.par_chunks_mut(spatial)
        .enumerate()
        .for_each(|(bc, plane)| {
            let (b, oc) = (bc / channels, bc % channels);
            let src = (b * channels + p.source_channel(oc, channels)) * spatial;
            plane.copy_from_slice(&x[src..src + spatial]);
        });
}

/// Per image, the elements `start .. start + len` (channels times spatial).
fn channel_slice(x: &[f32], item: usize, start: usize, len: usize, out: &mut [f32]) {
    out.par_chunks_mut(len.max(1))
        .enumerate()
        .for_each(|(b, o)| o.copy_from_slice(&x[b * item + start..b * item + start + len]));
}

/// Per image, the inputs' blocks one after the other (channel concat).
fn concat(parts: &[(&[f32], usize)], out: &mut [f32]) {
    let item: usize = parts.iter().map(|(_, n)| n).sum();
    out.par_chunks_mut(item.max(1))
        .enumerate()
        .for_each(|(b, o)| {
            let mut at = 0;
            for (data, n) in parts {
                o[at..at + n].copy_from_slice(&data[b * n..(b + 1) * n]);
                at += n;
            }
        });
}

fn add(x: &[f32], y: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(MIN_PARALLEL)
        .enumerate()
        .for_each(|(k, o)| {
            let at = k * MIN_PARALLEL;
            for (i, v) in o.iter_mut().enumerate() {
                *v = x[at + i] + y[at + i];
            }
        });
}

fn mul(x: &[f32], y: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(MIN_PARALLEL)
        .enumerate()
        .for_each(|(k, o)| {
            let at = k * MIN_PARALLEL;
            for (i, v) in o.iter_mut().enumerate() {
                *v = x[at + i] * y[at + i];
            }
        });
}

/// `out[b, c, ...] = x[b, c, ...] * y[b, c]` (y is `[N, C, 1, 1]`).
fn mul_per_channel(x: &[f32], spatial: usize, y: &[f32], out: &mut [f32]) {
    let spatial = spatial.max(1);
    out.par_chunks_mut(spatial).enumerate().for_each(|(bc, o)| {
        let s = y[bc];
        for (v, &xv) in o.iter_mut().zip(&x[bc * spatial..(bc + 1) * spatial]) {
            *v = xv * s;
        }
    });
}

/// `out[b, o] = bias[o] + sum_i w[o, i] * x[b, i]`.
fn linear(
    x: &[f32],
    inputs: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    outputs: usize,
    out: &mut [f32],
) {
    out.par_iter_mut()
        .with_min_len(64)
        .enumerate()
        .for_each(|(bo, v)| {
            let (b, o) = (bo / outputs, bo % outputs);
            let row = &weight[o * inputs..(o + 1) * inputs];
            let xb = &x[b * inputs..(b + 1) * inputs];
            let dot: f32 = row.iter().zip(xb).map(|(w, x)| w * x).sum();
            *v = bias.map_or(0.0, |bias| bias[o]) + dot;
        });
}

/// Softmax over the first per-image dimension, at each spatial position:
/// `exp(x - max) / sum exp(x - max)`.
fn softmax(x: &[f32], channels: usize, spatial: usize, out: &mut [f32]) {
    let spatial = spatial.max(1);
    let item = channels * spatial;
    out.par_chunks_mut(item.max(1))
        .enumerate()
        .for_each(|(b, o)| {
            let xb = &x[b * item..(b + 1) * item];
            for s in 0..spatial {
                let at = |c: usize| c * spatial + s;
                let max = (0..channels)
                    .map(|c| xb[at(c)])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f64;
                for c in 0..channels {
                    let e = f64::from(xb[at(c)] - max).exp();
                    o[at(c)] = e as f32;
                    sum += e;
                }
                for c in 0..channels {
                    o[at(c)] = (f64::from(o[at(c)]) / sum) as f32;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{BatchNorm, ChannelShuffle, ChannelSlice, Conv2d, Linear, Pool};

    /// A graph `input -> op`, evaluated with the given weights (by suffix).
    fn run_op(op: Op, input: Vec<usize>, data: Vec<f32>, weights: &[(&str, Vec<f32>)]) -> Tensor {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape(input.clone())), "input", &[], None)
            .unwrap();
        g.add(op, "op", &[x], None).unwrap();
        let w = weights_for(&g, weights);
        let mut shape = vec![1];
        shape.extend(input);
        evaluate(&g, &w, &Tensor::new(shape, data).unwrap()).unwrap()
    }

    fn weights_for(g: &Graph, given: &[(&str, Vec<f32>)]) -> Weights {
        let mut w = Weights::new();
        for id in g.nodes() {
            for spec in g.weights(id) {
                let data = given
                    .iter()
                    .find(|(s, _)| *s == spec.key().suffix())
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(|| panic!("no weights for {}", spec.key()));
                w.insert(
                    spec.tensor_name(&g.node(id).name),
                    Tensor::new(spec.shape.clone(), data).unwrap(),
                );
            }
        }
        w
    }

    fn iota(n: usize, from: f32) -> Vec<f32> {
        (0..n).map(|i| from + i as f32).collect()
    }

    fn conv(out: usize, kernel: usize, f: impl FnOnce(&mut Conv2d)) -> Op {
        let mut c = Conv2d::new(out, kernel);
        f(&mut c);
        Op::Conv2d(c)
    }

    #[test]
    fn conv_padding_and_stride() {
        // 4x4 input 1..16, 3x3 ones, stride 2, pad 1: sums of the clipped windows.
        let op = conv(1, 3, |c| {
            c.stride = [2, 2];
            c.padding = [1, 1];
        });
        let y = run_op(
            op,
            vec![1, 4, 4],
            iota(16, 1.0),
            &[("weight", vec![1.0; 9])],
        );
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.data(), &[14.0, 30.0, 57.0, 99.0]);
    }

    #[test]
    fn conv_dilation_and_bias() {
        // 5x5 input 0..24, 2x2 kernel with dilation 2, weights 1, 10, 100, 1000:
        // out(y, x) = in(y, x) + 10 in(y, x+2) + 100 in(y+2, x) + 1000 in(y+2, x+2) + bias.
        let op = conv(1, 2, |c| {
            c.dilation = [2, 2];
            c.bias = true;
        });
        let y = run_op(
            op,
            vec![1, 5, 5],
            iota(25, 0.0),
            &[
                ("weight", vec![1.0, 10.0, 100.0, 1000.0]),
                ("bias", vec![0.5]),
            ],
        );
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(y.data()[0], 13020.5);
        assert_eq!(y.data()[8], 12.0 + 140.0 + 2200.0 + 24000.0 + 0.5);
    }

    #[test]
    fn conv_asymmetric_kernel_stride_padding() {
        // 1x3 kernel [1, 2, 3], stride (1, 2), padding (0, 1) on a 2x4 input 1..8.
        let op = conv(1, 1, |c| {
            c.kernel = [1, 3];
            c.stride = [1, 2];
            c.padding = [0, 1];
        });
        let y = run_op(
            op,
            vec![1, 2, 4],
            iota(8, 1.0),
            &[("weight", vec![1.0, 2.0, 3.0])],
        );
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        // Row 1 2 3 4: x=0 -> pad*1 + 1*2 + 2*3 = 8; x=1 -> 2*1 + 3*2 + 4*3 = 20.
        // Row 5 6 7 8: 5*2 + 6*3 = 28; 6 + 14 + 24 = 44.
        assert_eq!(y.data(), &[8.0, 20.0, 28.0, 44.0]);
    }

    #[test]
    fn conv_groups_see_only_their_channels() {
        // 4 channels [1, 2, 3, 4], 2 groups: out0 = 1*1 + 10*2 + 0.5,
        // out1 = 100*3 + 1000*4 - 0.5.
        let op = conv(2, 1, |c| {
            c.groups = 2;
            c.bias = true;
        });
        let y = run_op(
            op,
            vec![4, 1, 1],
            vec![1.0, 2.0, 3.0, 4.0],
            &[
                ("weight", vec![1.0, 10.0, 100.0, 1000.0]),
                ("bias", vec![0.5, -0.5]),
            ],
        );
        assert_eq!(y.data(), &[21.5, 4299.5]);
    }

    #[test]
    fn pointwise_conv_with_many_channels() {
        // 6 input channels (the 4-at-a-time path plus a remainder of 2), 2x2 planes.
        let op = conv(1, 1, |_| {});
        let x: Vec<f32> = (0..24).map(|i| (i / 4) as f32 + 1.0).collect(); // channel k is k+1
        let y = run_op(op, vec![6, 2, 2], x, &[("weight", iota(6, 1.0))]);
        // sum_k (k+1)^2 for k < 6 = 91.
        assert_eq!(y.data(), &[91.0; 4]);
    }

    #[test]
    fn depthwise_conv() {
        // Channel 0: all-ones kernel on all-ones input counts the in-bounds taps.
        // Channel 1: kernel with only the centre 2 doubles the input.
        let op = conv(2, 3, |c| {
            c.groups = 2;
            c.padding = [1, 1];
        });
        let mut x = vec![1.0; 9];
        x.extend(iota(9, 1.0));
        let mut w = vec![1.0; 9];
        w.extend([0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        let y = run_op(op, vec![2, 3, 3], x, &[("weight", w)]);
        assert_eq!(
            &y.data()[..9],
            &[4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]
        );
        assert_eq!(
            &y.data()[9..],
            &iota(9, 1.0).iter().map(|v| v * 2.0).collect::<Vec<_>>()[..]
        );
    }

    fn pool_op(
        max: bool,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil: bool,
        include: bool,
    ) -> Op {
        let p = Pool {
            kernel,
            stride,
            padding,
            ceil_mode: ceil,
            count_include_pad: include,
        };
        if max {
            Op::MaxPool(p)
        } else {
            Op::AvgPool(p)
        }
    }

    #[test]
    fn max_pool_floor_and_ceil() {
        // 5x5 input 0..24, 2x2 windows, stride 2.
        let floor = run_op(
            pool_op(true, [2, 2], [2, 2], [0, 0], false, true),
            vec![1, 5, 5],
            iota(25, 0.0),
            &[],
        );
        assert_eq!(floor.data(), &[6.0, 8.0, 16.0, 18.0]);
        let ceil = run_op(
            pool_op(true, [2, 2], [2, 2], [0, 0], true, true),
            vec![1, 5, 5],
            iota(25, 0.0),
            &[],
        );
        assert_eq!(
            ceil.data(),
            &[6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0]
        );
        // Padding is ignored by max: 3x3 stride 2 pad 1 on negative values.
        let neg: Vec<f32> = iota(16, 1.0).iter().map(|v| -v).collect();
        let y = run_op(
            pool_op(true, [3, 3], [2, 2], [1, 1], false, true),
            vec![1, 4, 4],
            neg,
            &[],
        );
        assert_eq!(y.data(), &[-1.0, -2.0, -5.0, -6.0]);
    }

    #[test]
    fn avg_pool_divisors() {
        // 2x2 input 1..4, 3x3 window, stride 1, pad 1: every window holds all
        // four values (sum 10) and five padding cells.
        let x = vec![1.0, 2.0, 3.0, 4.0];
        let incl = run_op(
            pool_op(false, [3, 3], [1, 1], [1, 1], false, true),
            vec![1, 2, 2],
            x.clone(),
            &[],
        );
        assert_eq!(incl.data(), &[10.0 / 9.0; 4]);
        let excl = run_op(
            pool_op(false, [3, 3], [1, 1], [1, 1], false, false),
            vec![1, 2, 2],
            x,
            &[],
        );
        assert_eq!(excl.data(), &[2.5; 4]);
    }

    #[test]
    fn avg_pool_ceil_mode_clips_the_last_window() {
        // Row [1, 2, 3, 4, 5], window 2 stride 2, ceil: [1, 2], [3, 4], [5] -> 1.5, 3.5, 5.
        let y = run_op(
            pool_op(false, [1, 2], [1, 2], [0, 0], true, true),
            vec![1, 1, 5],
            iota(5, 1.0),
            &[],
        );
        assert_eq!(y.data(), &[1.5, 3.5, 5.0]);
        // Row [1, 2, 3, 4], window 3 stride 2 pad 1, ceil (PyTorch,
        // F.avg_pool2d(x, (1, 3), (1, 2), (0, 1), ceil_mode=True)): windows
        // [pad 1 2] / 3 = 1, [2 3 4] / 3 = 3, [4 pad] clipped to input + pad
        // -> divisor 2: 4 / 2 = 2.
        let y = run_op(
            pool_op(false, [1, 3], [1, 2], [0, 1], true, true),
            vec![1, 1, 4],
            iota(4, 1.0),
            &[],
        );
        assert_eq!(y.data(), &[1.0, 3.0, 2.0]);
        // Without count_include_pad the divisors are the real counts: 2, 3, 1.
        let y = run_op(
            pool_op(false, [1, 3], [1, 2], [0, 1], true, false),
            vec![1, 1, 4],
            iota(4, 1.0),
            &[],
        );
        assert_eq!(y.data(), &[1.5, 3.0, 4.0]);
    }

    #[test]
    fn global_avg_pool_means_planes() {
        let y = run_op(Op::GlobalAvgPool, vec![2, 2, 2], iota(8, 0.0), &[]);
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        assert_eq!(y.data(), &[1.5, 5.5]);
    }

    #[test]
    fn shuffle_is_the_papers_permutation() {
        let y = run_op(
            Op::ChannelShuffle(ChannelShuffle { groups: 3 }),
            vec![6, 1, 2],
            iota(12, 0.0),
            &[],
        );
        // Channels 0 2 4 1 3 5, two values each.
        assert_eq!(
            y.data(),
            &[0.0, 1.0, 4.0, 5.0, 8.0, 9.0, 2.0, 3.0, 6.0, 7.0, 10.0, 11.0]
        );
        let y = run_op(
            Op::ChannelShuffle(ChannelShuffle { groups: 2 }),
            vec![6, 1, 1],
            iota(6, 0.0),
            &[],
        );
        assert_eq!(y.data(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn slice_and_concat_order() {
        // input [4, 1, 2]: a = channels 0..1, b = channels 1..3, concat(b, a).
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(4, 1, 2)), "input", &[], None)
            .unwrap();
        let a = g
            .add(
                Op::ChannelSlice(ChannelSlice { start: 0, len: 1 }),
                "a",
                &[x],
                None,
            )
            .unwrap();
        let b = g
            .add(
                Op::ChannelSlice(ChannelSlice { start: 1, len: 2 }),
                "b",
                &[x],
                None,
            )
            .unwrap();
        g.add(Op::Concat(Default::default()), "cat", &[b, a], None)
            .unwrap();
        let input = Tensor::new(vec![2, 4, 1, 2], iota(16, 0.0)).unwrap();
        let all = evaluate_all(&g, &Weights::new(), &input).unwrap();
        let get = |name: &str| {
            all.iter()
                .find(|(id, _)| g.node(*id).name == name)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(get("a").data(), &[0.0, 1.0, 8.0, 9.0]);
        assert_eq!(
            get("b").data(),
            &[2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 12.0, 13.0]
        );
        let cat = get("cat");
        assert_eq!(cat.shape(), &[2, 3, 1, 2]);
        assert_eq!(
            cat.data(),
            &[2.0, 3.0, 4.0, 5.0, 0.0, 1.0, 10.0, 11.0, 12.0, 13.0, 8.0, 9.0]
        );
        assert_eq!(all.len(), 4);
        assert_eq!(evaluate(&g, &Weights::new(), &input).unwrap(), cat);
    }

    #[test]
    fn fused_conv_epilogue_reorders_then_adds_then_activates() {
        // 1x1 conv, 3 input channels of one pixel x = [1, 2, 3], identity
        // weights scaled by [1, -1, 2] and bias [0, 1, -10]: conv = [1, -1, -4].
        // order [2, 0, 1] gives [-4, 1, -1]; residual r = [1, 1, 1] gives
        // [-3, 2, 0]; relu gives [0, 2, 0].
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(3, 1, 1)), "input", &[], None)
            .unwrap();
        let op = conv(3, 1, |c| {
            c.bias = true;
            c.residual = true;
            c.activation = ops::Activation::Relu;
            c.output_order = Some(vec![2, 0, 1]);
        });
        let ones = Op::Conv2d(Conv2d::new(3, 1));
        let r = g.add(ones, "r", &[x], None).unwrap();
        g.add(op, "op", &[x, r], None).unwrap();
        // r = x3 / 3 in every channel = [1, 1, 1].
        let mut w = Weights::new();
        let third = 1.0 / 3.0;
        let r_weight = vec![0.0, 0.0, third, 0.0, 0.0, third, 0.0, 0.0, third];
        w.insert("r.weight", Tensor::new(vec![3, 3, 1, 1], r_weight).unwrap());
        let op_weight = vec![1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 2.0];
        w.insert(
            "op.weight",
            Tensor::new(vec![3, 3, 1, 1], op_weight).unwrap(),
        );
        w.insert(
            "op.bias",
            Tensor::new(vec![3], vec![0.0, 1.0, -10.0]).unwrap(),
        );
        let y = evaluate(
            &g,
            &w,
            &Tensor::new(vec![1, 3, 1, 1], vec![1.0, 2.0, 3.0]).unwrap(),
        )
        .unwrap();
        assert_eq!(y.data(), &[0.0, 2.0, 0.0]);
    }

    #[test]
    fn concat_output_order_permutes_channels() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(2, 1, 2)), "input", &[], None)
            .unwrap();
        let r = g.add(Op::Relu, "r", &[x], None).unwrap();
        let order = ops::Concat {
            output_order: Some(vec![0, 2, 1, 3]),
            ..Default::default()
        };
        g.add(Op::Concat(order), "cat", &[x, r], None).unwrap();
        let w = weights_for(&g, &[]);
        let input = Tensor::new(vec![1, 2, 1, 2], vec![1.0, -2.0, 3.0, -4.0]).unwrap();
        let y = evaluate(&g, &w, &input).unwrap();
        // Concatenated channels: [1, -2], [3, -4], [1, 0], [3, 0]; order 0, 2, 1, 3.
        assert_eq!(y.data(), &[1.0, -2.0, 1.0, 0.0, 3.0, -4.0, 3.0, 0.0]);
    }

    #[test]
    fn concat_activation_applies_to_every_copied_value() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(1, 1, 2)), "input", &[], None)
            .unwrap();
        let twice = g.add(Op::Add, "twice", &[x, x], None).unwrap();
        let cat = ops::Concat {
            output_order: Some(vec![1, 0]),
            activation: ops::Activation::Relu6,
        };
        g.add(Op::Concat(cat), "cat", &[x, twice], None).unwrap();
        let input = Tensor::new(vec![1, 1, 1, 2], vec![-1.0, 4.0]).unwrap();
        let out = evaluate(&g, &Weights::new(), &input).unwrap();
        // Channels [-1, 4], [-2, 8]; swapped, then clamped to [0, 6].
        assert_eq!(out.data(), &[0.0, 6.0, 0.0, 4.0]);
    }

    #[test]
    fn add_and_mul_with_broadcast() {
        // mul(x, gap(x)) on x = [[1, 2], [3, 4]] (2 channels of 1x2): means 1.5, 3.5.
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(2, 1, 2)), "input", &[], None)
            .unwrap();
        let m = g.add(Op::GlobalAvgPool, "gap", &[x], None).unwrap();
        let s = g.add(Op::Mul, "scale", &[x, m], None).unwrap();
        let sq = g.add(Op::Mul, "square", &[s, s], None).unwrap();
        // relu(x) reads x, then add reads x again: the in-place relu must copy.
        let r = g.add(Op::Relu, "relu", &[x], None).unwrap();
        let a = g.add(Op::Add, "add", &[sq, r], None).unwrap();
        g.add(Op::Add, "add2", &[a, x], None).unwrap();
        let input = Tensor::new(vec![1, 2, 1, 2], vec![1.0, -2.0, 3.0, 4.0]).unwrap();
        let all = evaluate_all(&g, &Weights::new(), &input).unwrap();
        let get = |name: &str| {
            all.iter()
                .find(|(id, _)| g.node(*id).name == name)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(get("gap").data(), &[-0.5, 3.5]);
        assert_eq!(get("scale").data(), &[-0.5, 1.0, 10.5, 14.0]);
        assert_eq!(get("square").data(), &[0.25, 1.0, 110.25, 196.0]);
        assert_eq!(
            get("add2").data(),
            &[0.25 + 1.0 + 1.0, 1.0 + 0.0 - 2.0, 110.25 + 6.0, 196.0 + 8.0]
        );
        assert_eq!(evaluate(&g, &Weights::new(), &input).unwrap(), get("add2"));
    }

    #[test]
    fn linear_and_flatten_order() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(2, 1, 2)), "input", &[], None)
            .unwrap();
        let f = g.add(Op::Flatten, "flatten", &[x], None).unwrap();
        g.add(
            Op::Linear(Linear {
                out_features: 2,
                bias: true,
            }),
            "fc",
            &[f],
            None,
        )
        .unwrap();
        // Flatten keeps C, H, W order: [1, 2, 3, 4].
        let w = weights_for(
            &g,
            &[
                ("weight", vec![1.0, 0.0, -1.0, 0.0, 2.0, 2.0, 2.0, 2.0]),
                ("bias", vec![0.5, 0.0]),
            ],
        );
        let input = Tensor::new(
            vec![2, 2, 1, 2],
            vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 1.0],
        )
        .unwrap();
        let all = evaluate_all(&g, &w, &input).unwrap();
        assert_eq!(all[1].1.shape(), &[2, 4]);
        assert_eq!(all[1].1.data(), input.data());
        assert_eq!(all[2].1.data(), &[-1.5, 20.0, 0.5, 2.0]);
    }

    #[test]
    fn softmax_over_the_first_dimension() {
        let y = run_op(Op::Softmax, vec![3], vec![0.0, 2f32.ln(), 3f32.ln()], &[]);
        let expected = [1.0 / 6.0, 1.0 / 3.0, 0.5];
        for (a, b) in y.data().iter().zip(expected) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        // [C=2, 1, 2]: each position normalises over the two channels.
        let y = run_op(
            Op::Softmax,
            vec![2, 1, 2],
            vec![0.0, 1000.0, 0.0, 1000.0],
            &[],
        );
        assert_eq!(y.data(), &[0.5, 0.5, 0.5, 0.5]);
    }

    #[test]
    fn batch_norm_and_activations() {
        let bn = Op::BatchNorm(BatchNorm { eps: 0.0 });
        // (x - 3) / sqrt(4) * 2 + 1 on channel 0; identity on channel 1.
        let y = run_op(
            bn,
            vec![2, 1, 2],
            vec![5.0, 3.0, 7.0, -1.0],
            &[
                ("weight", vec![2.0, 1.0]),
                ("bias", vec![1.0, 0.0]),
                ("running_mean", vec![3.0, 0.0]),
                ("running_var", vec![4.0, 1.0]),
            ],
        );
        assert_eq!(y.data(), &[3.0, 1.0, 7.0, -1.0]);
        let x = vec![-1.0, 0.5, 7.0];
        assert_eq!(
            run_op(Op::Relu, vec![3], x.clone(), &[]).data(),
            &[0.0, 0.5, 7.0]
        );
        assert_eq!(
            run_op(Op::Relu6, vec![3], x.clone(), &[]).data(),
            &[0.0, 0.5, 6.0]
        );
        let x = vec![-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0];
        assert_eq!(
            run_op(Op::HardSigmoid, vec![7], x.clone(), &[]).data(),
            &[0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        );
        assert_eq!(
            run_op(Op::HardSwish, vec![7], x, &[]).data(),
            &[-0.0, -0.0, -0.375, 0.0, 1.125, 3.0, 4.0]
        );
        let s = run_op(Op::Sigmoid, vec![3], vec![0.0, 100.0, -100.0], &[]);
        assert_eq!(s.data()[0], 0.5);
        assert!((s.data()[1] - 1.0).abs() < 1e-7 && s.data()[2] >= 0.0 && s.data()[2] < 1e-40);
    }

    #[test]
    fn input_problems_are_reported() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(3, 8, 8)), "input", &[], None)
            .unwrap();
        g.add(Op::Conv2d(Conv2d::new(4, 3)), "conv", &[x], None)
            .unwrap();
        let w = Weights::init(&g, &Default::default());
        let bad = Tensor::zeros(vec![1, 3, 8, 9]).unwrap();
        let e = evaluate(&g, &w, &bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input shape [1, 3, 8, 9] does not match the network's input [3, 8, 8]: expected [N, 3, 8, 8] for a batch of N"
        );
        let unbatched = Tensor::zeros(vec![3, 8, 8]).unwrap();
        assert!(matches!(
            evaluate(&g, &w, &unbatched),
            Err(EvalError::InputShape { .. })
        ));
        let empty = Tensor::zeros(vec![0, 3, 8, 8]).unwrap();
        assert!(matches!(
            evaluate(&g, &w, &empty),
            Err(EvalError::EmptyBatch)
        ));
        let e = evaluate(
            &g,
            &Weights::new(),
            &Tensor::zeros(vec![1, 3, 8, 8]).unwrap(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("missing tensor `conv.weight`"),
            "{e}"
        );
        g.add(Op::Input(Shape::chw(3, 8, 8)), "input2", &[], None)
            .unwrap();
        let e = evaluate(&g, &w, &Tensor::zeros(vec![1, 3, 8, 8]).unwrap()).unwrap_err();
        assert!(matches!(e, EvalError::InputCount(2)), "{e}");
    }

    #[test]
    fn invalid_graphs_are_refused() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(3, 8, 8)), "input", &[], None)
            .unwrap();
        let r = g.add(Op::Relu, "relu", &[x], None).unwrap();
        g.node_mut(r).shape = Shape::chw(3, 4, 4);
        let e = evaluate(
            &g,
            &Weights::new(),
            &Tensor::zeros(vec![1, 3, 8, 8]).unwrap(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the graph is invalid: layer `relu`"),
            "{e}"
        );
    }

    /// A direct transcription of the convolution formula, for the property
    /// test below.
    fn direct_conv(
        x: &[f32],
        (c, h, w): (usize, usize, usize),
        p: &Conv2d,
        wt: &[f32],
        (oh, ow): (usize, usize),
    ) -> Vec<f32> {
        let (o, [kh, kw]) = (p.out_channels, p.kernel);
        let (cin_g, cout_g) = (c / p.groups, o / p.groups);
        let mut out = vec![0.0f32; o * oh * ow];
        for oc in 0..o {
            let g = oc / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.0f32;
                    for i in 0..cin_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.padding[0] as isize;
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.padding[1] as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    let xv =
                                        x[((g * cin_g + i) * h + iy as usize) * w + ix as usize];
                                    s += wt[((oc * cin_g + i) * kh + ky) * kw + kx] * xv;
                                }
                            }
                        }
                    }
                    out[(oc * oh + oy) * ow + ox] = s;
                }
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        /// The optimised convolution equals the formula for any kernel,
        /// stride, padding, dilation and groups (small integer values, so
        /// every sum is exact whatever the order).
        #[test]
        fn conv_matches_the_formula(
            groups in 1usize..4, cin_g in 1usize..4, cout_g in 1usize..4,
            h in 1usize..12, w in 1usize..12, kh in 1usize..4, kw in 1usize..4,
            sh in 1usize..4, sw in 1usize..4, ph in 0usize..3, pw in 0usize..3,
            dh in 1usize..3, dw in 1usize..3, seed in 0u64..1000,
        ) {
            let c = groups * cin_g;
            let mut p = Conv2d::new(groups * cout_g, 1);
            p.kernel = [kh, kw];
            p.stride = [sh, sw];
            p.padding = [ph, pw];
            p.dilation = [dh, dw];
            p.groups = groups;
            let mut g = Graph::new("t");
            let x = g.add(Op::Input(Shape::chw(c, h, w)), "input", &[], None).unwrap();
            let Ok(id) = g.add(Op::Conv2d(p.clone()), "conv", &[x], None) else {
                return Err(proptest::test_runner::TestCaseError::reject("kernel does not fit"));
            };
            let (_, oh, ow) = g.node(id).shape.as_chw().unwrap();
            let small = |n: usize, salt: u64| -> Vec<f32> {
                (0..n as u64).map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed * 97 + salt)) % 7) as f32 - 3.0).collect()
            };
            let xs = small(2 * c * h * w, 1);
            let wt = small(p.out_channels * cin_g * kh * kw, 2);
            let weights = weights_for(&g, &[("weight", wt.clone())]);
            let y = evaluate(&g, &weights, &Tensor::new(vec![2, c, h, w], xs.clone()).unwrap()).unwrap();
            for b in 0..2 {
                let item = &xs[b * c * h * w..(b + 1) * c * h * w];
                let expected = direct_conv(item, (c, h, w), &p, &wt, (oh, ow));
                proptest::prop_assert_eq!(y.item_data(b).unwrap(), &expected[..]);
            }
        }
    }

    #[test]
    fn large_planes_split_rows_the_same() {
        // A 100x100 plane takes the row-split path; compare with a direct sum.
        let op = conv(2, 3, |c| {
            c.padding = [1, 1];
            c.stride = [1, 2];
        });
        let x: Vec<f32> = (0..2 * 100 * 100)
            .map(|i| ((i * 7919) % 13) as f32 - 6.0)
            .collect();
        let w: Vec<f32> = (0..2 * 2 * 9).map(|i| (i % 5) as f32 - 2.0).collect();
        let y = run_op(op, vec![2, 100, 100], x.clone(), &[("weight", w.clone())]);
        assert_eq!(y.shape(), &[1, 2, 100, 50]);
        for (oc, oy, ox) in [(0, 0, 0), (1, 99, 49), (1, 50, 25), (0, 73, 1)] {
            let mut s = 0.0f32;
            for ic in 0..2 {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (
                            oy as isize + ky as isize - 1,
                            ox as isize * 2 + kx as isize - 1,
                        );
                        if (0..100).contains(&iy) && (0..100).contains(&ix) {
                            s += w[((oc * 2 + ic) * 3 + ky) * 3 + kx]
                                * x[(ic * 100 + iy as usize) * 100 + ix as usize];
                        }
                    }
                }
            }
            assert_eq!(y.data()[(oc * 100 + oy) * 50 + ox], s, "at {oc} {oy} {ox}");
        }
    }
}
