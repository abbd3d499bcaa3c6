//! Complexity accounting: multiply-adds, parameters and activation sizes per
//! layer and in total, under a named counting convention.
//!
//! The default convention is the ShuffleNet paper's: "FLOPs" are
//! multiply-adds of convolutions and fully connected layers only; batch
//! norm, activations, pooling, add, concat and shuffle count zero.

use serde::Serialize;

use crate::graph::{Graph, NodeId};
use crate::ops::Op;

/// How operations are counted. Every output names the convention it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Convention {
    /// Multiply-adds of conv and linear layers only (the ShuffleNet paper,
    /// fvcore, thop's MACs, ptflops).
    #[default]
    Macs,
    /// Two FLOPs per multiply-add of conv and linear layers (PyTorch's
    /// FlopCounterMode, TensorFlow's profiler).
    Flops,
    /// Multiply-adds plus elementwise work, the way mmcv's counter does:
    /// conv/linear bias and activations 1 per output element, batch norm 2,
    /// add and mul 1, pooling 1 per input element.
    MacsAll,
}

impl Convention {
    /// All conventions, for listing.
    pub const ALL: [Convention; 3] = [Convention::Macs, Convention::Flops, Convention::MacsAll];

    /// The name used on the command line and in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Convention::Macs => "macs",
            Convention::Flops => "flops",
            Convention::MacsAll => "macs-all",
        }
    }

    /// A one-line description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Convention::Macs => "multiply-adds of conv and linear layers only (the ShuffleNet paper's FLOPs)",
            Convention::Flops => "2 FLOPs per multiply-add of conv and linear layers",
            Convention::MacsAll => "multiply-adds plus elementwise ops (bias, activations, batch norm x2, add, mul, pooling), as mmcv counts",
        }
    }

    /// Parses a name as printed by [`Convention::name`].
    pub fn from_name(name: &str) -> Option<Convention> {
        Convention::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A coarse classification of layers, for per-kind breakdowns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// A spatial convolution that is not depthwise (stems, VGG-like layers).
    Conv,
    /// A 1x1 convolution, grouped or not.
    Pointwise,
    /// A depthwise convolution.
    Depthwise,
    /// A fully connected layer.
    Linear,
    /// Everything else (normalisation, activations, pooling, data movement).
    Other,
}

impl LayerKind {
    /// The kind of a node.
    pub fn of(graph: &Graph, id: NodeId) -> LayerKind {
        match &graph.node(id).op {
            Op::Conv2d(c) => {
                let depthwise = graph
                    .input_shapes(id)
                    .first()
                    .and_then(|s| c.geometry(s).ok())
                    .is_some_and(|g| g.is_depthwise());
                if depthwise {
                    LayerKind::Depthwise
                } else if c.kernel == [1, 1] {
                    LayerKind::Pointwise
                } else {
                    LayerKind::Conv
                }
            }
            Op::Linear(_) => LayerKind::Linear,
            _ => LayerKind::Other,
        }
    }
}

/// The cost of one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    /// Hierarchical node name.
    pub name: String,
    /// Op kind (`conv2d`, `linear`...).
    pub op: &'static str,
    /// Coarse layer kind.
    pub kind: LayerKind,
    /// Output shape without batch.
    pub output_shape: Vec<usize>,
    /// Multiply-adds (conv and linear only).
    pub macs: u64,
    /// Work under the chosen convention.
    pub ops: u64,
    /// Trainable parameters.
    pub params: u64,
    /// Output activation elements per image.
    pub activations: u64,
}

/// The cost of a whole graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    /// The graph's name.
    pub model: String,
    /// The counting convention of `ops`.
    pub convention: Convention,
    /// What the convention counts, in words.
    pub convention_description: &'static str,
    /// Input shape without batch.
    pub input_shape: Vec<usize>,
    /// Multiply-adds of conv and linear layers.
    pub macs: u64,
    /// Multiply-adds of conv layers only (the figures the paper's Table 1 rounds).
    pub conv_macs: u64,
    /// Multiply-adds of linear layers only.
    pub linear_macs: u64,
    /// Total work under the chosen convention.
    pub ops: u64,
    /// Trainable parameters (conv and linear weights and biases, batch-norm
    /// weight and bias).
    pub params: u64,
    /// Non-trainable buffers (batch-norm running statistics).
    pub buffers: u64,
    /// Sum of all layers' output elements per image.
    pub activations: u64,
    /// Per layer, in topological order.
    pub layers: Vec<LayerCost>,
}

impl Cost {
    /// Multiply-adds grouped by layer kind.
    pub fn macs_by_kind(&self) -> Vec<(LayerKind, u64)> {
        let mut totals: std::collections::BTreeMap<LayerKind, u64> = Default::default();
        for l in &self.layers {
            *totals.entry(l.kind).or_default() += l.macs;
        }
        totals.into_iter().collect()
    }
}

/// Counts the cost of every layer of a graph.
pub fn count(graph: &Graph, convention: Convention) -> Cost {
    let mut layers = Vec::with_capacity(graph.len());
    let (mut conv_macs, mut linear_macs, mut params, mut buffers, mut activations, mut ops) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for id in graph.nodes() {
        let node = graph.node(id);
        let in_shapes = graph.input_shapes(id);
        let out = node.shape.numel() as u64;
        let input_elems = in_shapes.first().map(|s| s.numel() as u64).unwrap_or(0);
        let macs = match &node.op {
            // The graph's shapes were checked when each node was wired in,
            // so the geometry exists.
            Op::Conv2d(c) => c.geometry(in_shapes[0]).map_or(0, |g| g.macs()),
            Op::Linear(_) => out * in_shapes[0].numel() as u64,
            _ => 0,
        };
        let elementwise = match &node.op {
            Op::Conv2d(c) => {
                out * (u64::from(c.bias)
                    + u64::from(c.residual)
                    + u64::from(c.activation != crate::ops::Activation::None))
            }
            Op::Linear(l) if l.bias => out,
            // A fused activation counts as the op it replaced.
            Op::Concat(c) => out * u64::from(c.activation != crate::ops::Activation::None),
            Op::MaxPool(_) | Op::AvgPool(_) | Op::GlobalAvgPool => input_elems,
            op => out * op.ops_per_output(),
        };
        let layer_ops = match convention {
            Convention::Macs => macs,
            Convention::Flops => 2 * macs,
            Convention::MacsAll => macs + elementwise,
        };
        let (mut p, mut b) = (0u64, 0u64);
        for w in node.op.weights(&in_shapes) {
            if w.trainable() {
                p += w.numel() as u64;
            } else {
                b += w.numel() as u64;
            }
        }
        match node.op {
            Op::Conv2d(_) => conv_macs += macs,
            Op::Linear(_) => linear_macs += macs,
            _ => {}
        }
        params += p;
        buffers += b;
        activations += out;
        ops += layer_ops;
        layers.push(LayerCost {
            name: node.name.clone(),
            op: node.op.kind(),
            kind: LayerKind::of(graph, id),
            output_shape: node.shape.dims().to_vec(),
            macs,
            ops: layer_ops,
            params: p,
            activations: out,
        });
    }
    let input_shape = graph
        .input_nodes()
        .first()
        .map(|&i| graph.node(i).shape.dims().to_vec())
        .unwrap_or_default();
    Cost {
        model: graph.name.clone(),
        convention,
        convention_description: convention.describe(),
        input_shape,
        macs: conv_macs + linear_macs,
        conv_macs,
        linear_macs,
        ops,
        params,
        buffers,
        activations,
        layers,
    }
}
