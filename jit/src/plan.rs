//! From a graph to a list of layers, each with the kernel that computes it,
//! the buffers it reads and writes, and the number of independent work
//! units it splits into. Every size and offset is computed with checked
//! arithmetic here, once; the lowering only uses these numbers.
//!
//! Activations are dense NCHW `f32` per image (the API layout), so inputs
//! and outputs need no conversion and `flatten` is free. Within one image
//! every buffer is at most [`MAX_BUFFER_BYTES`] long, so every offset the
//! kernels compute fits an `i32` immediate.

use std::collections::HashMap;

use shufflekit_ir::cost::LayerKind;
use shufflekit_ir::ops::{Activation, Op, Pool};
use shufflekit_ir::verify::VerifyErrors;
use shufflekit_ir::{Graph, NodeId, Shape};
use shufflekit_passes::memory;

use crate::isa::Isa;
use crate::lower::Elementwise;
use crate::pointwise_tiling::wide_pointwise;
use crate::JitError;

/// The buffer [`JitError::TooLarge`] names for a layer's weights.
const PACKED_WEIGHTS: &str = "packed weights";

/// The largest buffer (per image) or parameter block, in bytes.
pub(crate) const MAX_BUFFER_BYTES: usize = i32::MAX as usize / 2;

/// How a window kernel combines the values under its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reduce {
    /// A convolution: multiply-add with packed weights.
    Fma,
    /// Max pooling.
    Max,
    /// Average pooling.
    Avg {
        /// Divide by the window clipped to the padded input, not by the
        /// number of real inputs.
        count_include_pad: bool,
    },
}

/// A sliding-window kernel: convolutions of every shape and both poolings.
/// Output channel tiles of `m` channels, `nv` vectors of the tier's width
/// (4 pixels at [`Isa::Sse`]) each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Window {
    pub reduce: Reduce,
    /// Input plane `[h, w]` (a 1x1 stride-1 convolution sees its whole
    /// plane as one row).
    pub in_hw: [usize; 2],
    /// Output plane `[h, w]`.
    pub out_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    /// Input channels per group.
    pub cin_g: usize,
    /// Output channels per group.
    pub cout_g: usize,
    /// Output channels per register tile.
    pub m: usize,
    /// Vectors of output pixels per register tile (of 4 pixels at
    /// [`Isa::Sse`], of the tier's width for the full-width kernels).
    pub nv: usize,
    /// Input channels per K block: the full-width pointwise kernels sum
    /// blocks of `kc` input channels into the output (the first block
    /// writes, the others add, the epilogue runs on the last), so that a
    /// row's inputs of one block stay in L1. `cin_g` when not blocked
    /// (always at [`Isa::Sse`]).
    pub kc: usize,
    pub activation: Act,
    pub residual: bool,
    /// The last vector block of a row may overlap the one before it (it
    /// recomputes a few outputs): only when the output aliases no input.
    pub overlap: bool,
    /// Units are (group, output row) with every channel tile inside,
    /// instead of (group, tile) with every row inside. Only for 1x1
    /// stride-1 unpadded convolutions, whose plane is viewed as rows of a
    /// width that keeps one row's inputs in L1.
    pub split_rows: bool,
    /// Columns of the last row (`in_hw[1]` unless a row-split plane ends
    /// with a shorter row).
    pub last_w: usize,
}

impl Window {
    /// Output channel tiles per group: full tiles of `m`, then one of the
    /// remainder.
    pub fn tiles(&self) -> (usize, usize) {
        (self.cout_g / self.m, self.cout_g % self.m)
    }

    /// Tiles per group.
    pub fn tiles_per_group(&self) -> usize {
        let (full, rem) = self.tiles();
        full + usize::from(rem > 0)
    }

    /// Values of one input plane.
    pub fn in_plane(&self) -> usize {
        (self.in_hw[0] - 1) * self.in_hw[1] + self.last_w
    }

    /// Values of one output plane.
    pub fn out_plane(&self) -> usize {
        if self.split_rows {
            self.in_plane()
        } else {
            self.out_hw[0] * self.out_hw[1]
        }
    }

    /// Taps per input channel.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Floats of the packed block of a tile of `mt` channels: weights
    /// `[cin_g][taps][mt]`, bias `[mt]`, output byte offsets `[mt]`.
    pub fn block_len(&self, mt: usize) -> usize {
        mt * (self.cin_g * self.taps() + 2)
    }

    /// Floats of one group's packed blocks.
    pub fn group_len(&self) -> usize {
        let (full, rem) = self.tiles();
        full * self.block_len(self.m) + if rem > 0 { self.block_len(rem) } else { 0 }
    }
}

/// An activation, as the kernels key it (the IR's type is not `Hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Act {
    None,
    Relu,
    Relu6,
}

impl From<Activation> for Act {
    fn from(a: Activation) -> Act {
        match a {
            Activation::None => Act::None,
            Activation::Relu => Act::Relu,
            Activation::Relu6 => Act::Relu6,
        }
    }
}

/// The code that computes one layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// Convolutions and pools. Units: groups x tiles per group.
    Window(Window),
    /// Units: channels, each a plane of `len` values.
    Elementwise {
        op: Elementwise,
        channels: usize,
        len: usize,
    },
    /// Mean of each plane. Units: channels.
    GlobalAvg { channels: usize, len: usize },
    /// Output channel `k` is a plane copied from an input chosen by a
    /// table (shuffle, concat, slice, flatten), with a concat's fused
    /// activation applied in the copy. Units: output channels.
    Gather {
        channels: usize,
        len: usize,
        inputs: usize,
        activation: Act,
    },
    /// Fully connected layer, tiles of `m` outputs. Units: output tiles.
    Linear {
        inputs: usize,
        outputs: usize,
        m: usize,
    },
    /// Softmax over channels. Units: 1.
    Softmax { channels: usize, spatial: usize },
}

impl Kernel {
    /// Independent work units per image.
    pub fn units(&self) -> usize {
        match self {
            Kernel::Window(w) if w.split_rows => w.groups * w.out_hw[0],
            Kernel::Window(w) => w.groups * w.tiles_per_group(),
            Kernel::Elementwise { channels, .. } => *channels,
            Kernel::GlobalAvg { channels, .. } | Kernel::Gather { channels, .. } => *channels,
            Kernel::Linear { outputs, m, .. } => outputs.div_ceil(*m),
            Kernel::Softmax { .. } => 1,
        }
    }
}

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// The caller's input tensor.
    Input,
    /// The arena, at this offset (in floats) of each image's part.
    Arena(usize),
}

/// A value (a node's output) of the planned graph.
#[derive(Debug, Clone)]
pub(crate) struct Value {
    /// Floats per image.
    pub len: usize,
    pub storage: Storage,
}

/// One compiled layer.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub node: NodeId,
    pub name: String,
    pub kind: LayerKind,
    pub macs: u64,
    pub kernel: Kernel,
    /// Values read, in slot order.
    pub inputs: Vec<usize>,
    /// Value written.
    pub output: usize,
    /// Work units per image (see [`Kernel::units`]).
    pub units: usize,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub layers: Vec<Layer>,
    pub values: Vec<Value>,
    pub output: usize,
    pub input_shape: Shape,
    pub output_shape: Shape,
    /// Floats of arena per image.
    pub arena_len: usize,
}

/// Builds the plan of a verified graph for the vector tier `isa` (which
/// sizes the pointwise convolutions' tiles, rows and K blocks).
pub(crate) fn plan(graph: &Graph, isa: Isa) -> Result<Plan, JitError> {
    shufflekit_ir::verify::verify(graph).map_err(VerifyErrors)?;
    let inputs = graph.input_nodes();
    let [input_node] = inputs[..] else {
        return Err(JitError::InputCount(inputs.len()));
    };
    let output_node = graph
        .output()
        .ok_or_else(|| JitError::Internal("the verified graph has no output".into()))?;
    let needed = ancestors(graph, output_node);
    let cost = shufflekit_ir::cost::count(graph, shufflekit_ir::cost::Convention::Macs);
    let macs: HashMap<&str, u64> = cost
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.macs))
        .collect();

    let mut values: Vec<Value> = Vec::new();
    let mut value_of: HashMap<NodeId, usize> = HashMap::new();
    let mut layers = Vec::new();
    for id in graph.nodes().filter(|id| needed.contains(id)) {
        let node = graph.node(id);
        let len = node.shape.numel();
        byte_size(len, &node.name, "output per image")?;
        let ins: Vec<usize> = graph
            .inputs(id)
            .iter()
            .map(|i| {
                value_of.get(i).copied().ok_or_else(|| {
                    JitError::Internal(format!("input of `{}` not planned", node.name))
                })
            })
            .collect::<Result<_, _>>()?;
        if let Op::Input(_) = &node.op {
            value_of.insert(id, values.len());
            values.push(Value {
                len,
                storage: Storage::Input,
            });
            continue;
        }
        let kernel = kernel_for(graph, id, isa)?;
        let output = values.len();
        values.push(Value {
            len,
            storage: Storage::Arena(0),
        });
        value_of.insert(id, output);
        layers.push(Layer {
            node: id,
            name: node.name.clone(),
            kind: LayerKind::of(graph, id),
            macs: macs.get(node.name.as_str()).copied().unwrap_or(0),
            units: kernel.units(),
            kernel,
            inputs: ins,
            output,
        });
    }
    let output = value_of
        .get(&output_node)
        .copied()
        .ok_or_else(|| JitError::Internal("output not planned".into()))?;
    let arena_len = arena(graph, &mut layers, &mut values)?;
    Ok(Plan {
        layers,
        values,
        output,
        input_shape: graph.node(input_node).shape.clone(),
        output_shape: graph.node(output_node).shape.clone(),
        arena_len,
    })
}

/// Places every layer's output where the passes' memory plan
/// (`shufflekit_passes::memory`, the only planner) puts it, asked for
/// 64-byte offsets and the sharings the kernels take ([`kernel_takes`]).
/// Returns the arena length in floats.
fn arena(graph: &Graph, layers: &mut [Layer], values: &mut [Value]) -> Result<usize, JitError> {
    let options = memory::Options {
        align: 64,
        allows: kernel_takes,
    };
    let plan = memory::plan_with(graph, &options);
    plan.check(graph)
        .map_err(|e| JitError::Internal(format!("the memory plan: {e}")))?;
    let buffers: HashMap<NodeId, &memory::Buffer> =
        plan.buffers.iter().map(|b| (b.node, b)).collect();
    for layer in layers.iter_mut() {
        let value = &mut values[layer.output];
        let b = buffers
            .get(&layer.node)
            .filter(|b| b.bytes == value.len * 4 && b.offset % 4 == 0)
            .ok_or_else(|| JitError::Internal(format!("`{}` has no fitting buffer", layer.name)))?;
        value.storage = Storage::Arena(b.offset / 4);
        // A concat whose inputs were all written in place copies nothing.
        let all_in_place = |ins: &[NodeId]| {
            ins.iter().all(|i| {
                buffers.get(i).is_some_and(|p| {
                    p.sharing == Some(memory::Sharing::IntoConcat) && p.shares == Some(layer.node)
                })
            })
        };
        if let Kernel::Gather {
            activation: Act::None,
            ..
        } = layer.kernel
        {
            if matches!(graph.node(layer.node).op, Op::Concat(_))
                && all_in_place(&graph.inputs(layer.node))
            {
                layer.units = 0;
            }
        }
        if let (Kernel::Window(w), Some(memory::Sharing::InPlace { .. })) =
            (&mut layer.kernel, b.sharing)
        {
            w.overlap = false;
        }
    }
    Ok(plan.arena_bytes.div_ceil(4))
}

/// The sharings the kernels can take, of those the op facts offer: an
/// elementwise kernel runs in place (each element is read just before it is
/// written), a convolution over its residual (read just before the same
/// element is written, with no recomputed block: [`Window::overlap`]), and
/// a copy without activation can be a view (it copies onto itself), and
/// every kernel writes exactly its output's elements, so any can write into
/// its part of a concat (whose copy then skips it or copies it onto itself).
/// The answer depends only on the kernel's kind and residual, the same on
/// every tier, so the 128-bit plan answers for all.
fn kernel_takes(graph: &Graph, id: NodeId, sharing: memory::Sharing) -> bool {
    match (kernel_for(graph, id, Isa::Sse), sharing) {
        (Ok(_), memory::Sharing::IntoConcat) => true,
        (Ok(Kernel::Elementwise { .. }), memory::Sharing::InPlace { .. }) => true,
        (Ok(Kernel::Window(w)), memory::Sharing::InPlace { slot: 1 }) => w.residual,
        (
            Ok(Kernel::Gather {
                activation: Act::None,
                ..
            }),
            memory::Sharing::View,
        ) => true,
        _ => false,
    }
}

fn ancestors(graph: &Graph, out: NodeId) -> std::collections::HashSet<NodeId> {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![out];
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(graph.inputs(id));
        }
    }
    seen
}

/// Bytes of `len` floats, refused past [`MAX_BUFFER_BYTES`]; `what` says
/// which buffer of `layer` they are.
pub(crate) fn byte_size(len: usize, layer: &str, what: &'static str) -> Result<usize, JitError> {
    len.checked_mul(4)
        .filter(|&b| b <= MAX_BUFFER_BYTES)
        .ok_or_else(|| too_large(layer, what))
}

fn too_large(layer: &str, what: &'static str) -> JitError {
    JitError::TooLarge {
        layer: layer.to_string(),
        what,
        limit: MAX_BUFFER_BYTES,
    }
}

fn chw(shape: &Shape, name: &str) -> Result<(usize, usize, usize), JitError> {
    shape.as_chw().ok_or_else(|| {
        JitError::Internal(format!("`{name}`: expected a [C, H, W] shape, got {shape}"))
    })
}

/// Picks the register tile `(m, nv)` of a convolution: 8 or 9
/// accumulators (of the 16 vector registers; the inputs, weights and
/// their copies take the rest), a tile that divides the group's output
/// channels when one does.
fn conv_tile(cout_g: usize, cin_g: usize) -> (usize, usize) {
    if cout_g == 1 && cin_g == 1 {
        // Depthwise: one channel, two vectors, so that the taps' weights
        // stay in registers (see the lowering).
        return (1, 2);
    }
    // 4x2 first: with the copies of shared broadcasts (see the lowering)
    // larger tiles run out of registers and spill (measured: 5x2 and 6x2
    // about 13% slower over ShuffleNet's pointwise layers).
    for (m, nv) in [(4, 2), (5, 2), (6, 2), (3, 3)] {
        if cout_g.is_multiple_of(m) {
            return (m, nv);
        }
    }
    (cout_g.min(6), 2)
}

/// The kernel of one node at tier `isa`.
fn kernel_for(graph: &Graph, id: NodeId, isa: Isa) -> Result<Kernel, JitError> {
    let node = graph.node(id);
    let in_shapes = graph.input_shapes(id);
    let x = *in_shapes
        .first()
        .ok_or_else(|| JitError::Internal(format!("`{}` has no input", node.name)))?;
    let plane = |s: &Shape| (s.channels(), s.spatial());
    Ok(match &node.op {
        Op::Conv2d(c) => {
            let geometry = c
                .geometry(x)
                .map_err(|e| JitError::Internal(format!("`{}`: {e}", node.name)))?;
            let ([h, w], [oh, ow]) = (geometry.in_size, geometry.out_size);
            let (cin_g, cout_g) = (geometry.in_per_group, geometry.out_per_group);
            let pointwise = geometry.is_pointwise();
            // The full-width kernels' tiling (None at Sse, and for
            // convolutions that are not pointwise).
            let wide = pointwise
                .then(|| wide_pointwise(isa, h * w, cin_g, cout_g, c.groups))
                .flatten();
            // A 1x1 convolution sees its plane as rows of `width` pixels:
            // one row's inputs of every input channel of a group fit L1.
            let width = match wide {
                Some(t) => t.row,
                None => pointwise
                    .then(|| row_width(h * w, cin_g, c.groups))
                    .flatten(),
            };
            let (in_hw, out_hw) = match width {
                Some(r) => ([(h * w).div_ceil(r), r], [(h * w).div_ceil(r), r]),
                None if pointwise => ([1, h * w], [1, oh * ow]),
                None => ([h, w], [oh, ow]),
            };
            let (m, nv, kc) = match wide {
                Some(t) => (t.m, t.nv, t.kc),
                None => {
                    let (m, nv) = conv_tile(cout_g, cin_g);
                    (m, nv, cin_g)
                }
            };
            let window = Window {
                reduce: Reduce::Fma,
                in_hw,
                out_hw,
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
                dilation: if pointwise { [1, 1] } else { c.dilation },
                groups: c.groups,
                cin_g,
                cout_g,
                m,
                nv,
                kc,
                activation: c.activation.into(),
                residual: c.residual,
                overlap: true,
                split_rows: width.is_some(),
                last_w: width.map_or(in_hw[1], |r| h * w - (in_hw[0] - 1) * r),
            };
            let packed = window
                .group_len()
                .checked_mul(window.groups)
                .ok_or_else(|| too_large(&node.name, PACKED_WEIGHTS))?;
            byte_size(packed, &node.name, PACKED_WEIGHTS)?;
            Kernel::Window(window)
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (c, h, w) = chw(x, &node.name)?;
            let (_, oh, ow) = chw(&node.shape, &node.name)?;
            let reduce = match &node.op {
                Op::MaxPool(_) => Reduce::Max,
                _ => Reduce::Avg {
                    count_include_pad: p.count_include_pad,
                },
            };
            Kernel::Window(pool_window(p, reduce, c, [h, w], [oh, ow]))
        }
        Op::GlobalAvgPool => Kernel::GlobalAvg {
            channels: x.channels(),
            len: x.spatial(),
        },
        Op::Add => elementwise(Elementwise::Add, x),
        Op::Mul => {
            let y = in_shapes
                .get(1)
                .ok_or_else(|| JitError::Internal("mul has one input".into()))?;
            if *y == x {
                elementwise(Elementwise::Mul, x)
            } else {
                let (channels, len) = plane(x);
                Kernel::Elementwise {
                    op: Elementwise::MulChannel,
                    channels,
                    len,
                }
            }
        }
        Op::ChannelShuffle(_) | Op::ChannelSlice(_) | Op::Concat(_) => Kernel::Gather {
            channels: node.shape.channels(),
            len: x.spatial(),
            inputs: in_shapes.len(),
            activation: match &node.op {
                Op::Concat(c) => c.activation.into(),
                _ => Act::None,
            },
        },
        Op::Linear(l) => {
            let packed = x
                .numel()
                .checked_add(1)
                .and_then(|n| n.checked_mul(l.out_features))
                .ok_or_else(|| too_large(&node.name, PACKED_WEIGHTS))?;
            byte_size(packed, &node.name, PACKED_WEIGHTS)?;
            Kernel::Linear {
                inputs: x.numel(),
                outputs: l.out_features,
                m: 8,
            }
        }
        Op::Softmax => Kernel::Softmax {
            channels: x.channels(),
            spatial: x.spatial(),
        },
        // A plain copy (dense NCHW flattening changes no value), so that
        // every node owns the buffer the memory plan gives it.
        Op::Flatten => Kernel::Gather {
            channels: 1,
            len: x.numel(),
            inputs: 1,
            activation: Act::None,
        },
        // One-input elementwise ops (`Elementwise::unary` says which).
        op => match Elementwise::unary(op) {
            Some(e) => elementwise(e, x),
            None => {
                return Err(JitError::Internal(format!(
                    "`{}` ({}) has no kernel",
                    node.name,
                    node.op.kind()
                )))
            }
        },
    })
}

/// An elementwise kernel over the planes of `x` (units: channels, so
/// threads split it), or over one plane for flat tensors (batch norm keeps
/// one value per feature there).
fn elementwise(op: Elementwise, x: &Shape) -> Kernel {
    let (channels, len) = match (x.rank(), op) {
        (3, _) | (_, Elementwise::Affine) => (x.channels(), x.spatial()),
        _ => (1, x.numel()),
    };
    Kernel::Elementwise { op, channels, len }
}

fn pool_window(
    p: &Pool,
    reduce: Reduce,
    c: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
) -> Window {
    Window {
        reduce,
        in_hw,
        out_hw,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
        dilation: [1, 1],
        groups: c,
        cin_g: 1,
        cout_g: 1,
        m: 1,
        nv: if out_hw[1] >= 16 { 4 } else { 2 },
        kc: 1,
        activation: Act::None,
        residual: false,
        overlap: true,
        split_rows: false,
        last_w: in_hw[1],
    }
}

/// The row width a 1x1 convolution's plane of `len` pixels is split into,
/// so that one row's inputs (`cin_g` channels) stay in L1 while every
/// channel tile of the group reads them: a multiple of 8 pixels (one
/// register block) whose inputs fit in [`ROW_BYTES`]; the last row may be
/// shorter. None when the whole plane fits (split by channel tiles
/// instead, which gives more units to threads).
fn row_width(len: usize, cin_g: usize, groups: usize) -> Option<usize> {
    let most = (ROW_BYTES / 4 / cin_g.max(1)).clamp(8, 256) / 8 * 8;
    if len <= most {
        return None;
    }
    // Rows of about equal width, rounded up to whole blocks; at least
    // MIN_UNITS units in all, so that threads share the layer evenly.
    let rows = len
        .div_ceil(most)
        .max(MIN_UNITS.div_ceil(groups.max(1)))
        .min(len.div_ceil(8));
    Some(len.div_ceil(rows).next_multiple_of(8))
}

/// The fewest work units a row-split convolution is cut into.
const MIN_UNITS: usize = 8;

/// Bytes of input a row of a row-split 1x1 convolution may read.
const ROW_BYTES: usize = 16 * 1024;
