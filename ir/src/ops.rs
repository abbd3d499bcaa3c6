//! The closed set of operations a graph is made of. Each op's parameters
//! live in a struct that owns its shape arithmetic, so the output-size
//! formula of a convolution exists in exactly one place.

use std::fmt;

use crate::shape::{Shape, MAX_ELEMENTS};

/// Which of a node's tensors: the tensor is named `<node name>.<suffix>`
/// (PyTorch's names, so weight files and ONNX initializers line up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightKey {
    /// `weight`: a convolution's or linear layer's kernel, a batch norm's scale.
    Weight,
    /// `bias`: a per-channel bias, a batch norm's shift.
    Bias,
    /// `running_mean`: a batch norm's running mean.
    RunningMean,
    /// `running_var`: a batch norm's running variance.
    RunningVar,
}

impl WeightKey {
    /// Every key, in the order a node lists its tensors.
    pub const ALL: [WeightKey; 4] = [
        WeightKey::Weight,
        WeightKey::Bias,
        WeightKey::RunningMean,
        WeightKey::RunningVar,
    ];

    /// The tensor name's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            WeightKey::Weight => "weight",
            WeightKey::Bias => "bias",
            WeightKey::RunningMean => "running_mean",
            WeightKey::RunningVar => "running_var",
        }
    }

    /// The key a suffix names, if any.
    pub fn from_suffix(suffix: &str) -> Option<WeightKey> {
        WeightKey::ALL.into_iter().find(|k| k.suffix() == suffix)
    }

    /// The full tensor name for node `node`: `<node>.<suffix>`.
    pub fn tensor_name(self, node: &str) -> String {
        format!("{node}.{}", self.suffix())
    }
}

impl fmt::Display for WeightKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// What a weight tensor does in its op: how it is initialised, trained and
/// decayed follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightRole {
    /// The multiplicative kernel of a convolution or linear layer
    /// (initialised by fan-in, weight-decayed).
    Kernel,
    /// An added per-channel bias.
    Bias,
    /// A batch norm's scale (gamma).
    Scale,
    /// A batch norm's shift (beta).
    Shift,
    /// A batch norm's running mean (a buffer, not trained).
    RunningMean,
    /// A batch norm's running variance (a buffer, not trained).
    RunningVar,
}

impl WeightRole {
    /// The key, and so the name, of a tensor with this role.
    pub fn key(self) -> WeightKey {
        match self {
            WeightRole::Kernel | WeightRole::Scale => WeightKey::Weight,
            WeightRole::Bias | WeightRole::Shift => WeightKey::Bias,
            WeightRole::RunningMean => WeightKey::RunningMean,
            WeightRole::RunningVar => WeightKey::RunningVar,
        }
    }

    /// Learned parameters count towards a model's parameter total and get
    /// gradients; buffers (running statistics) do neither.
    pub fn is_trainable(self) -> bool {
        !matches!(self, WeightRole::RunningMean | WeightRole::RunningVar)
    }

    /// Only kernels take weight decay (not biases, not batch-norm affines).
    pub fn is_decayed(self) -> bool {
        self == WeightRole::Kernel
    }
}

/// A weight tensor an op owns, named `<node name>.<suffix>`. Its first
/// dimension always indexes the node's output channels (or features), so a
/// permutation of those channels reorders exactly its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSpec {
    /// What the tensor does; its key gives the name's suffix.
    pub role: WeightRole,
    /// Shape of the tensor.
    pub shape: Vec<usize>,
}

impl WeightSpec {
    /// The key of the tensor (the suffix of its name).
    pub fn key(&self) -> WeightKey {
        self.role.key()
    }

    /// The tensor's full name for node `node`.
    pub fn tensor_name(&self, node: &str) -> String {
        self.key().tensor_name(node)
    }

    /// Learned parameter (counted, trained) rather than a buffer.
    pub fn trainable(&self) -> bool {
        self.role.is_trainable()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An activation applied in a convolution's epilogue or a concatenation's
/// copy (fused by the passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// No activation.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// Applies the activation to one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }

    /// The plain op that computes it on its own (`None` for no activation).
    pub fn op(self) -> Option<Op> {
        match self {
            Activation::None => None,
            Activation::Relu => Some(Op::Relu),
            Activation::Relu6 => Some(Op::Relu6),
        }
    }
}

/// Parameters of a 2-D convolution. Weights are `[out, in / groups, kh, kw]`.
///
/// The compiler passes fuse work into a convolution's epilogue: output
/// channel `k` of the node is
/// `activation(conv[order[k]] + bias[order[k]] + residual[k])`, where
/// `order` is `output_order` (the identity when `None`) and `residual` the
/// node's second input when `residual` is set. Specs produce plain
/// convolutions (no activation, no residual, no order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv2d {
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[ph, pw]`.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Channel groups: input and output channels are split into this many
    /// groups and output group k sees only input group k.
    pub groups: usize,
    /// Whether the convolution adds a per-channel bias.
    pub bias: bool,
    /// Activation applied last.
    pub activation: Activation,
    /// The node has a second input, of the output's shape, added before the
    /// activation (a fused residual add).
    pub residual: bool,
    /// A fused channel permutation: output channel `k` is the convolution's
    /// channel `output_order[k]`.
    pub output_order: Option<Vec<usize>>,
}

impl Conv2d {
    /// A convolution with stride 1, no padding, dilation 1, one group and no bias.
    pub fn new(out_channels: usize, kernel: usize) -> Self {
        Conv2d {
            out_channels,
            kernel: [kernel, kernel],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: false,
            activation: Activation::None,
            residual: false,
            output_order: None,
        }
    }

    /// The convolution's geometry on an input `[C, H, W]`, or why it does
    /// not fit: the one place the group split, the depthwise test and the
    /// output size are worked out (eval, grad, cost and the JIT read it).
    pub fn geometry(&self, input: &Shape) -> Result<ConvGeometry, String> {
        let (c, h, w) = chw(input, "conv2d")?;
        for (what, v) in [
            ("out", self.out_channels),
            ("groups", self.groups),
            ("kernel", self.kernel[0].min(self.kernel[1])),
            ("stride", self.stride[0].min(self.stride[1])),
            ("dilation", self.dilation[0].min(self.dilation[1])),
        ] {
            if v == 0 {
                return Err(format!("{what} must be positive"));
            }
        }
        if c % self.groups != 0 {
            return Err(format!(
                "input channels {c} are not divisible by groups {}",
                self.groups
            ));
        }
        if !self.out_channels.is_multiple_of(self.groups) {
            return Err(format!(
                "output channels {} are not divisible by groups {}",
                self.out_channels, self.groups
            ));
        }
        let mut out_size = [0; 2];
        for (axis, (what, len)) in [("height", h), ("width", w)].into_iter().enumerate() {
            out_size[axis] = window_out(
                len,
                self.kernel[axis],
                self.stride[axis],
                self.padding[axis],
                self.dilation[axis],
                false,
            )
            .ok_or_else(|| {
                too_small(
                    what,
                    len,
                    self.kernel[axis],
                    self.padding[axis],
                    self.dilation[axis],
                )
            })?;
        }
        Ok(ConvGeometry {
            groups: self.groups,
            in_channels: c,
            out_channels: self.out_channels,
            in_per_group: c / self.groups,
            out_per_group: self.out_channels / self.groups,
            in_size: [h, w],
            out_size,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        })
    }

    /// The output shape for an input `[C, H, W]`.
    pub fn output_shape(&self, input: &Shape) -> Result<Shape, String> {
        let g = self.geometry(input)?;
        checked_numel(&self.weight_shape(g.in_channels))
            .ok_or("the weight tensor is larger than the size limit")?;
        if let Some(order) = &self.output_order {
            check_permutation(order, self.out_channels)?;
        }
        Ok(Shape::chw(self.out_channels, g.out_size[0], g.out_size[1]))
    }

    /// Shape of the weight tensor for `in_channels` input channels.
    pub fn weight_shape(&self, in_channels: usize) -> Vec<usize> {
        vec![
            self.out_channels,
            in_channels / self.groups.max(1),
            self.kernel[0],
            self.kernel[1],
        ]
    }
}

/// A convolution applied to an input of a given size: channels per group,
/// plane sizes and the window, all checked ([`Conv2d::geometry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Channel groups.
    pub groups: usize,
    /// Input channels (all groups).
    pub in_channels: usize,
    /// Output channels (all groups).
    pub out_channels: usize,
    /// Input channels each output channel sees (`in_channels / groups`).
    pub in_per_group: usize,
    /// Output channels of one group (`out_channels / groups`).
    pub out_per_group: usize,
    /// Input plane `[h, w]`.
    pub in_size: [usize; 2],
    /// Output plane `[oh, ow]`.
    pub out_size: [usize; 2],
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[ph, pw]`.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
}

impl ConvGeometry {
    /// Every group has exactly one input and one output channel.
    pub fn is_depthwise(&self) -> bool {
        self.in_per_group == 1 && self.out_per_group == 1
    }

    /// A 1x1 kernel with stride 1 and no padding: the input plane is the
    /// matrix a matrix product reads, untouched.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// The offset of kernel tap `k` along `axis` (0 rows, 1 columns) in the
    /// unpadded input: output position `o` reads input `o * stride + offset`.
    pub fn tap_offset(&self, axis: usize, k: usize) -> isize {
        (k * self.dilation[axis]) as isize - self.padding[axis] as isize
    }

    /// The output positions along `axis` whose input position for kernel tap
    /// `k` lies inside the input (not in the padding), as `lo..hi` (empty
    /// when none).
    pub fn valid_outputs(&self, axis: usize, k: usize) -> std::ops::Range<usize> {
        let (s, n) = (self.stride[axis] as isize, self.in_size[axis] as isize);
        let offset = self.tap_offset(axis, k);
        // o * s + offset >= 0  <=>  o >= ceil(-offset / s)
        let lo = if offset >= 0 {
            0
        } else {
            (-offset + s - 1) / s
        };
        // o * s + offset <= n - 1  <=>  o <= floor((n - 1 - offset) / s)
        let hi = if n - 1 - offset < 0 {
            0
        } else {
            (n - 1 - offset) / s + 1
        };
        let hi = hi.min(self.out_size[axis] as isize);
        lo.min(hi) as usize..hi as usize
    }

    /// The input position that output `o` reads through kernel tap `k`
    /// along `axis`; `o` must be in [`ConvGeometry::valid_outputs`].
    pub fn input_of(&self, axis: usize, k: usize, o: usize) -> usize {
        ((o * self.stride[axis]) as isize + self.tap_offset(axis, k)) as usize
    }

    /// Kernel taps `kh * kw`.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Input plane size `h * w`.
    pub fn in_plane(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }

    /// Output plane size `oh * ow`.
    pub fn out_plane(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }

    /// Multiply-adds of one image: every output value sums
    /// `in_per_group * kh * kw` products.
    pub fn macs(&self) -> u64 {
        [
            self.out_channels,
            self.out_plane(),
            self.taps(),
            self.in_per_group,
        ]
        .iter()
        .map(|&v| v as u64)
        .product()
    }
}

/// Parameters of a max or average pooling window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Implicit padding `[ph, pw]` (ignored values for max, see
    /// `count_include_pad` for average).
    pub padding: [usize; 2],
    /// Round the output size up instead of down (PyTorch's `ceil_mode`; a
    /// window that would start entirely in the padding is dropped).
    pub ceil_mode: bool,
    /// Average pooling only: divide by the full window size, padding
    /// included (PyTorch's default), instead of by the number of real inputs.
    pub count_include_pad: bool,
}

impl Pool {
    /// A square window with stride equal to the window and no padding.
    pub fn new(kernel: usize) -> Self {
        Pool {
            kernel: [kernel, kernel],
            stride: [kernel, kernel],
            padding: [0, 0],
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    /// The output shape for an input `[C, H, W]`.
    pub fn output_shape(&self, input: &Shape, op: &str) -> Result<Shape, String> {
        let (c, h, w) = chw(input, op)?;
        if self.kernel.contains(&0) || self.stride.contains(&0) {
            return Err("kernel and stride must be positive".into());
        }
        for i in 0..2 {
            if self.padding[i] * 2 > self.kernel[i] {
                return Err(format!(
                    "padding {} is more than half the window {}",
                    self.padding[i], self.kernel[i]
                ));
            }
        }
        let oh = window_out(
            h,
            self.kernel[0],
            self.stride[0],
            self.padding[0],
            1,
            self.ceil_mode,
        )
        .ok_or_else(|| too_small("height", h, self.kernel[0], self.padding[0], 1))?;
        let ow = window_out(
            w,
            self.kernel[1],
            self.stride[1],
            self.padding[1],
            1,
            self.ceil_mode,
        )
        .ok_or_else(|| too_small("width", w, self.kernel[1], self.padding[1], 1))?;
        Ok(Shape::chw(c, oh, ow))
    }
}

/// Output length of a sliding window, or None when the window does not fit.
/// With `ceil`, PyTorch's rule: round up, but the last window must start
/// inside the input or the left padding.
pub fn window_out(
    len: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil: bool,
) -> Option<usize> {
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let padded = len.checked_add(pad.checked_mul(2)?)?;
    let room = padded.checked_sub(span)?;
    let mut out = if ceil {
        room.div_ceil(stride) + 1
    } else {
        room / stride + 1
    };
    if ceil && (out - 1) * stride >= len + pad {
        out -= 1;
    }
    Some(out)
}

fn too_small(what: &str, len: usize, kernel: usize, pad: usize, dilation: usize) -> String {
    let span = dilation
        .saturating_mul(kernel.saturating_sub(1))
        .saturating_add(1);
    format!(
        "kernel {kernel} (extent {span}) does not fit the input {what} {len} with padding {pad}"
    )
}

/// A channel order in short form: `shuffle(g=3)` when it is exactly a
/// channel shuffle, otherwise the list.
pub fn describe_order(order: &[usize]) -> String {
    let n = order.len();
    for g in 2..n {
        if n.is_multiple_of(g)
            && (0..n).all(|k| order[k] == ChannelShuffle { groups: g }.source_channel(k, n))
        {
            return format!("shuffle(g={g})");
        }
    }
    let list: Vec<String> = order.iter().map(|c| c.to_string()).collect();
    format!("[{}]", list.join(","))
}

/// Checks that `order` is a permutation of `0..n`.
pub fn check_permutation(order: &[usize], n: usize) -> Result<(), String> {
    if order.len() != n {
        return Err(format!(
            "channel order has {} entries for {n} channels",
            order.len()
        ));
    }
    let mut seen = vec![false; n];
    for &c in order {
        if c >= n || std::mem::replace(&mut seen[c], true) {
            return Err(format!("channel order is not a permutation of 0..{n}"));
        }
    }
    Ok(())
}

fn chw(shape: &Shape, op: &str) -> Result<(usize, usize, usize), String> {
    shape
        .as_chw()
        .ok_or_else(|| format!("{op} needs a [C, H, W] input, got {shape}"))
}

fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

/// Parameters of a batch normalisation (inference mode uses the running
/// statistics: `y = (x - mean) / sqrt(var + eps) * weight + bias`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl Default for BatchNorm {
    fn default() -> Self {
        BatchNorm { eps: 1e-5 }
    }
}

/// Parameters of a channel shuffle: with `C = g * n`, output channel
/// `i * g + j` is input channel `j * n + i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelShuffle {
    /// The number of groups `g`.
    pub groups: usize,
}

impl ChannelShuffle {
    /// The input channel that output channel `out` reads, for `channels` channels.
    pub fn source_channel(&self, out: usize, channels: usize) -> usize {
        let n = channels / self.groups;
        let (i, j) = (out / self.groups, out % self.groups);
        j * n + i
    }
}

/// Parameters of a channel slice: channels `start .. start + len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSlice {
    /// First channel taken.
    pub start: usize,
    /// Number of channels taken.
    pub len: usize,
}

/// Parameters of a concatenation along channels: output channel `k` is
/// `activation(concatenated channel output_order[k])`. Specs produce plain
/// concatenations (no order, no activation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Concat {
    /// A fused channel permutation (set by the compiler passes): output
    /// channel `k` is concatenated channel `output_order[k]`.
    pub output_order: Option<Vec<usize>>,
    /// An activation fused into the copy (set by the compiler passes).
    pub activation: Activation,
}

/// Parameters of a fully connected layer on a flat vector. Weights are
/// `[out, in]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linear {
    /// Output features.
    pub out_features: usize,
    /// Whether a bias is added.
    pub bias: bool,
}

/// How a spec layer names an op: `- conv: {name: c1, out: 24, kernel: 3}`.
/// The spec parser accepts exactly these keys and fields; the spec writer
/// (`shufflekit_spec::write_flat`, in the crate built on this one) writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecSyntax {
    /// The layer key.
    pub key: &'static str,
    /// Other keys accepted for it.
    pub aliases: &'static [&'static str],
    /// Its fields besides `name` and `from`.
    pub fields: &'static [&'static str],
}

/// Every layer key of the spec language. `split` is the spec's own: it
/// expands to channel slices.
pub const SPEC_SYNTAX: &[SpecSyntax] = &[
    SpecSyntax {
        key: "conv",
        aliases: &["conv2d"],
        fields: &[
            "out", "kernel", "stride", "padding", "dilation", "groups", "bias",
        ],
    },
    SpecSyntax {
        key: "batch_norm",
        aliases: &["bn"],
        fields: &["eps"],
    },
    SpecSyntax {
        key: "relu",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "relu6",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "sigmoid",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "hard_sigmoid",
        aliases: &["hardsigmoid"],
        fields: &[],
    },
    SpecSyntax {
        key: "hard_swish",
        aliases: &["hardswish"],
        fields: &[],
    },
    SpecSyntax {
        key: "channel_shuffle",
        aliases: &["shuffle"],
        fields: &["groups"],
    },
    SpecSyntax {
        key: "max_pool",
        aliases: &[],
        fields: &["kernel", "stride", "padding", "ceil_mode"],
    },
    SpecSyntax {
        key: "avg_pool",
        aliases: &[],
        fields: &[
            "kernel",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
        ],
    },
    SpecSyntax {
        key: "global_avg_pool",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "add",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "mul",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "concat",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "slice",
        aliases: &["channel_slice"],
        fields: &["start", "len", "end"],
    },
    SpecSyntax {
        key: "split",
        aliases: &[],
        fields: &["sizes", "parts"],
    },
    SpecSyntax {
        key: "linear",
        aliases: &["fc"],
        fields: &["out", "bias"],
    },
    SpecSyntax {
        key: "flatten",
        aliases: &[],
        fields: &[],
    },
    SpecSyntax {
        key: "softmax",
        aliases: &[],
        fields: &[],
    },
];

impl SpecSyntax {
    /// The syntax a layer key (or one of its aliases) names.
    pub fn find(key: &str) -> Option<&'static SpecSyntax> {
        SPEC_SYNTAX
            .iter()
            .find(|s| s.key == key || s.aliases.contains(&key))
    }
}

/// Every operation a graph can contain.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The network input, of the given shape (batch excluded).
    Input(Shape),
    /// 2-D convolution, grouped and depthwise included.
    Conv2d(Conv2d),
    /// Batch normalisation over channels.
    BatchNorm(BatchNorm),
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `relu6(x + 3) / 6`, PyTorch's `hardsigmoid` (MobileNet v3).
    HardSigmoid,
    /// `x * relu6(x + 3) / 6`, PyTorch's `hardswish` (MobileNet v3).
    HardSwish,
    /// Channel shuffle (a fixed permutation of channels).
    ChannelShuffle(ChannelShuffle),
    /// Max pooling.
    MaxPool(Pool),
    /// Average pooling.
    AvgPool(Pool),
    /// Mean over the spatial dimensions: `[C, H, W]` to `[C, 1, 1]`.
    GlobalAvgPool,
    /// Elementwise sum of two tensors of the same shape.
    Add,
    /// Product of the first input with the second, which has the same shape
    /// or is `[C, 1, 1]` (broadcast per channel, as squeeze-excitation needs).
    Mul,
    /// Concatenation along channels (same spatial size).
    Concat(Concat),
    /// A contiguous range of channels.
    ChannelSlice(ChannelSlice),
    /// Fully connected layer on a flat vector.
    Linear(Linear),
    /// `[C, H, W]` to `[C * H * W]` (row-major).
    Flatten,
    /// Softmax over channels (the first dimension).
    Softmax,
}

/// How many inputs an op takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// At least this many.
    AtLeast(usize),
}

impl Op {
    /// The op's name as written in specs and dumps (`conv2d`, `batch_norm`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Conv2d(_) => "conv2d",
            Op::BatchNorm(_) => "batch_norm",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Sigmoid => "sigmoid",
            Op::HardSigmoid => "hard_sigmoid",
            Op::HardSwish => "hard_swish",
            Op::ChannelShuffle(_) => "channel_shuffle",
            Op::MaxPool(_) => "max_pool",
            Op::AvgPool(_) => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Concat(_) => "concat",
            Op::ChannelSlice(_) => "channel_slice",
            Op::Linear(_) => "linear",
            Op::Flatten => "flatten",
            Op::Softmax => "softmax",
        }
    }

    /// The spec layer key that writes this op (`None` for the input, which
    /// a spec declares with `input:`, not as a layer).
    pub fn spec_key(&self) -> Option<&'static str> {
        Some(match self {
            Op::Input(_) => return None,
            Op::Conv2d(_) => "conv",
            Op::ChannelSlice(_) => "slice",
            other => other.kind(),
        })
    }

    /// The op a spec layer key names when the layer has no fields of its
    /// own (`relu`, `add`, `concat`...): the parser builds these from the
    /// key alone, and the spec writer writes no fields for them. None for
    /// the keys of ops with fields, and for unknown keys.
    pub fn from_bare_spec_key(key: &str) -> Option<Op> {
        [
            Op::Relu,
            Op::Relu6,
            Op::Sigmoid,
            Op::HardSigmoid,
            Op::HardSwish,
            Op::GlobalAvgPool,
            Op::Add,
            Op::Mul,
            Op::Concat(Concat::default()),
            Op::Flatten,
            Op::Softmax,
        ]
        .into_iter()
        .find(|op| op.spec_key() == Some(key))
    }

    /// The elementwise operations per output value that mmcv's `macs-all`
    /// convention counts for an op that works element by element (0 for
    /// the others: convolutions, pools and data movement are counted by
    /// their structure in `cost`).
    pub fn ops_per_output(&self) -> u64 {
        match self {
            // Scale and shift.
            Op::BatchNorm(_) => 2,
            Op::Relu | Op::Relu6 | Op::Sigmoid | Op::HardSigmoid | Op::HardSwish => 1,
            Op::Add | Op::Mul => 1,
            _ => 0,
        }
    }

    /// How many inputs the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input(_) => Arity::Exactly(0),
            Op::Add | Op::Mul => Arity::Exactly(2),
            Op::Conv2d(c) if c.residual => Arity::Exactly(2),
            Op::Concat(_) => Arity::AtLeast(1),
            _ => Arity::Exactly(1),
        }
    }

    /// Infers the output shape from the input shapes, or says why the inputs
    /// do not fit. Callers check the arity first.
    pub fn output_shape(&self, inputs: &[&Shape]) -> Result<Shape, String> {
        let first = || inputs.first().copied().ok_or("missing input");
        let shape = match self {
            Op::Input(shape) => shape.clone(),
            Op::Conv2d(p) => {
                let out = p.output_shape(first()?)?;
                if p.residual {
                    let r = inputs.get(1).ok_or("missing residual input")?;
                    if **r != out {
                        return Err(format!("residual input {r} differs from the output {out}"));
                    }
                }
                out
            }
            Op::BatchNorm(_) | Op::Relu | Op::Relu6 | Op::Sigmoid => first()?.clone(),
            Op::HardSigmoid | Op::HardSwish => first()?.clone(),
            Op::ChannelShuffle(p) => {
                let x = first()?;
                let c = x.channels();
                if p.groups == 0 || c % p.groups != 0 {
                    return Err(format!(
                        "channels {c} are not divisible by shuffle groups {}",
                        p.groups
                    ));
                }
                x.clone()
            }
            Op::MaxPool(p) => p.output_shape(first()?, "max_pool")?,
            Op::AvgPool(p) => p.output_shape(first()?, "avg_pool")?,
            Op::GlobalAvgPool => {
                let (c, _, _) = chw(first()?, "global_avg_pool")?;
                Shape::chw(c, 1, 1)
            }
            Op::Add => {
                let (a, b) = (inputs[0], inputs[1]);
                if a != b {
                    return Err(format!("add needs equal shapes, got {a} and {b}"));
                }
                a.clone()
            }
            Op::Mul => {
                let (a, b) = (inputs[0], inputs[1]);
                let per_channel = a.rank() == 3 && b.dims() == [a.channels(), 1, 1];
                if a != b && !per_channel {
                    return Err(format!(
                        "mul needs equal shapes or a [C, 1, 1] second input, got {a} and {b}"
                    ));
                }
                a.clone()
            }
            Op::Concat(p) => {
                let a = first()?;
                let mut channels = 0usize;
                for (k, s) in inputs.iter().enumerate() {
                    if s.rank() != a.rank() || s.dims()[1..] != a.dims()[1..] {
                        return Err(format!(
                            "concat inputs must agree in all but channels: input 0 is {a}, input {k} is {s}"
                        ));
                    }
                    channels = channels
                        .checked_add(s.channels())
                        .ok_or("too many channels")?;
                }
                if let Some(order) = &p.output_order {
                    check_permutation(order, channels)?;
                }
                let mut dims = a.dims().to_vec();
                dims[0] = channels;
                Shape(dims)
            }
            Op::ChannelSlice(p) => {
                let x = first()?;
                let c = x.channels();
                if p.len == 0 {
                    return Err("slice length must be positive".into());
                }
                if p.start.checked_add(p.len).is_none_or(|end| end > c) {
                    return Err(format!(
                        "channels {}..{} are out of range for {c} channels",
                        p.start,
                        p.start.saturating_add(p.len)
                    ));
                }
                let mut dims = x.dims().to_vec();
                dims[0] = p.len;
                Shape(dims)
            }
            Op::Linear(p) => {
                let x = first()?;
                if x.rank() != 1 {
                    return Err(format!(
                        "linear needs a flat input, got {x} (add a flatten layer first)"
                    ));
                }
                if p.out_features == 0 {
                    return Err("out must be positive".into());
                }
                checked_numel(&[p.out_features, x.channels()])
                    .ok_or("the weight tensor is larger than the size limit")?;
                Shape::flat(p.out_features)
            }
            Op::Flatten => Shape::flat(first()?.numel()),
            Op::Softmax => first()?.clone(),
        };
        shape.check_limits()?;
        Ok(shape)
    }

    /// The weight tensors the op owns, given its input shapes.
    pub fn weights(&self, inputs: &[&Shape]) -> Vec<WeightSpec> {
        let channels = inputs.first().map(|s| s.channels()).unwrap_or(0);
        let spec = |role, shape| WeightSpec { role, shape };
        match self {
            Op::Conv2d(p) => {
                let mut w = vec![spec(WeightRole::Kernel, p.weight_shape(channels))];
                if p.bias {
                    w.push(spec(WeightRole::Bias, vec![p.out_channels]));
                }
                w
            }
            Op::BatchNorm(_) => [
                WeightRole::Scale,
                WeightRole::Shift,
                WeightRole::RunningMean,
                WeightRole::RunningVar,
            ]
            .into_iter()
            .map(|role| spec(role, vec![channels]))
            .collect(),
            Op::Linear(p) => {
                let mut w = vec![spec(WeightRole::Kernel, vec![p.out_features, channels])];
                if p.bias {
                    w.push(spec(WeightRole::Bias, vec![p.out_features]));
                }
                w
            }
            _ => Vec::new(),
        }
    }

    /// The input slots whose bytes the output may overwrite: the input has
    /// the output's shape and each element is read just before the same
    /// element is written. The evaluator, the memory plan and the JIT's
    /// aliasing check read this one list.
    pub fn in_place_inputs(&self) -> &'static [usize] {
        match self {
            Op::BatchNorm(_) | Op::Relu | Op::Relu6 | Op::Sigmoid => &[0],
            Op::HardSigmoid | Op::HardSwish => &[0],
            Op::Add => &[0, 1],
            // The second input may be a per-channel [C, 1, 1] factor.
            Op::Mul => &[0],
            // The fused residual (slot 1) has the output's shape.
            Op::Conv2d(c) if c.residual => &[1],
            _ => &[],
        }
    }

    /// The output is the input's bytes, only the shape changes (`flatten`).
    pub fn is_reshape(&self) -> bool {
        matches!(self, Op::Flatten)
    }

    /// The output is a contiguous range of the input's bytes (a channel
    /// slice of an NCHW tensor), so it can be a view.
    pub fn is_view(&self) -> bool {
        matches!(self, Op::ChannelSlice(_))
    }

    /// True for ops that act on each channel independently, so a channel
    /// permutation commutes with them.
    pub fn is_per_channel(&self) -> bool {
        matches!(
            self,
            Op::BatchNorm(_)
                | Op::Relu
                | Op::Relu6
                | Op::Sigmoid
                | Op::HardSigmoid
                | Op::HardSwish
                | Op::MaxPool(_)
                | Op::AvgPool(_)
                | Op::GlobalAvgPool
        )
    }
}

fn activation(f: &mut fmt::Formatter<'_>, a: Activation) -> fmt::Result {
    match a.op() {
        Some(op) => write!(f, " {}", op.kind()),
        None => Ok(()),
    }
}

fn pair(f: &mut fmt::Formatter<'_>, key: &str, v: [usize; 2]) -> fmt::Result {
    if v[0] == v[1] {
        write!(f, " {key}={}", v[0])
    } else {
        write!(f, " {key}={}x{}", v[0], v[1])
    }
}

impl fmt::Display for Op {
    /// Prints the op with its parameters, e.g. `conv2d out=240 k=1 g=3`;
    /// parameters at their defaults are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind())?;
        match self {
            Op::Input(_) => Ok(()),
            Op::Conv2d(p) => {
                write!(f, " out={}", p.out_channels)?;
                pair(f, "k", p.kernel)?;
                if p.stride != [1, 1] {
                    pair(f, "s", p.stride)?;
                }
                if p.padding != [0, 0] {
                    pair(f, "p", p.padding)?;
                }
                if p.dilation != [1, 1] {
                    pair(f, "d", p.dilation)?;
                }
                if p.groups != 1 {
                    write!(f, " g={}", p.groups)?;
                }
                if p.bias {
                    write!(f, " bias")?;
                }
                if p.residual {
                    write!(f, " +residual")?;
                }
                activation(f, p.activation)?;
                if let Some(order) = &p.output_order {
                    write!(f, " order={}", describe_order(order))?;
                }
                Ok(())
            }
            Op::BatchNorm(p) => write!(f, " eps={:e}", p.eps),
            Op::ChannelShuffle(p) => write!(f, " g={}", p.groups),
            Op::MaxPool(p) | Op::AvgPool(p) => {
                pair(f, "k", p.kernel)?;
                pair(f, "s", p.stride)?;
                if p.padding != [0, 0] {
                    pair(f, "p", p.padding)?;
                }
                if p.ceil_mode {
                    write!(f, " ceil")?;
                }
                if matches!(self, Op::AvgPool(_)) && !p.count_include_pad {
                    write!(f, " exclude_pad")?;
                }
                Ok(())
            }
            Op::ChannelSlice(p) => write!(f, " {}..{}", p.start, p.start + p.len),
            Op::Concat(p) => {
                activation(f, p.activation)?;
                if let Some(order) = &p.output_order {
                    write!(f, " order={}", describe_order(order))?;
                }
                Ok(())
            }
            Op::Linear(p) => {
                write!(f, " out={}", p.out_features)?;
                if p.bias {
                    write!(f, " bias")?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// PyTorch's `hardsigmoid`: `relu6(x + 3) / 6` (ONNX `HardSigmoid` with
/// alpha 1/6 and beta 1/2). The evaluator, the gradient and the JIT compute
/// this same formula.
pub fn hard_sigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// PyTorch's `hardswish`: `x * relu6(x + 3) / 6` (ONNX `HardSwish`).
pub fn hard_swish(x: f32) -> f32 {
    x * hard_sigmoid(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_output_size_follows_the_standard_formula() {
        let mut c = Conv2d::new(24, 3);
        c.stride = [2, 2];
        c.padding = [1, 1];
        assert_eq!(
            c.output_shape(&Shape::chw(3, 224, 224)).unwrap(),
            Shape::chw(24, 112, 112)
        );
        c.dilation = [2, 2];
        // (224 + 2 - 2*2 - 1) / 2 + 1 = 111
        assert_eq!(
            c.output_shape(&Shape::chw(3, 224, 224)).unwrap(),
            Shape::chw(24, 111, 111)
        );
    }

    #[test]
    fn valid_outputs_are_exactly_the_taps_that_read_inside_the_input() {
        for (n, k, s, p, d) in (1..9).flat_map(|n| {
            (1..5).flat_map(move |k| {
                (1..4).flat_map(move |s| {
                    (0..3).flat_map(move |p| (1..3).map(move |d| (n, k, s, p, d)))
                })
            })
        }) {
            let mut c = Conv2d::new(1, k);
            c.stride = [s, s];
            c.padding = [p, p];
            c.dilation = [d, d];
            let Ok(g) = c.geometry(&Shape::chw(1, n, n)) else {
                continue; // the window does not fit
            };
            for axis in 0..2 {
                for tap in 0..k {
                    let inside: Vec<usize> = (0..g.out_size[axis])
                        .filter(|&o| {
                            let i = (o * s) as isize + g.tap_offset(axis, tap);
                            (0..n as isize).contains(&i)
                        })
                        .collect();
                    let range: Vec<usize> = g.valid_outputs(axis, tap).collect();
                    assert_eq!(range, inside, "n={n} k={k} s={s} p={p} d={d} tap={tap}");
                    for o in range {
                        let i = (o * s + tap * d) as isize - p as isize;
                        assert_eq!(g.input_of(axis, tap, o) as isize, i);
                    }
                }
            }
        }
    }

    #[test]
    fn conv_geometry_splits_groups_and_counts_macs() {
        // ShuffleNet v1 g=3, stage 2 unit 2's first group conv: 240 -> 60, 1x1, 28x28.
        let mut c = Conv2d::new(60, 1);
        c.groups = 3;
        let g = c.geometry(&Shape::chw(240, 28, 28)).unwrap();
        assert_eq!((g.in_per_group, g.out_per_group), (80, 20));
        assert!(g.is_pointwise() && !g.is_depthwise());
        // 60 outputs x 784 pixels x 80 inputs each.
        assert_eq!(g.macs(), 60 * 784 * 80);
        // Its 3x3 stride-2 depthwise conv: 60 -> 60 at 14x14.
        let mut d = Conv2d::new(60, 3);
        d.groups = 60;
        d.stride = [2, 2];
        d.padding = [1, 1];
        let g = d.geometry(&Shape::chw(60, 28, 28)).unwrap();
        assert!(g.is_depthwise() && !g.is_pointwise());
        assert_eq!(
            (g.out_size, g.taps(), g.macs()),
            ([14, 14], 9, 60 * 196 * 9)
        );
        // A depth multiplier of 2 is grouped, not depthwise.
        d.out_channels = 120;
        assert!(!d.geometry(&Shape::chw(60, 28, 28)).unwrap().is_depthwise());
    }

    #[test]
    fn every_weight_is_indexed_by_output_channel_first() {
        let x = Shape::chw(6, 8, 8);
        let mut conv = Conv2d::new(4, 3);
        conv.groups = 2;
        conv.bias = true;
        let ops = [
            Op::Conv2d(conv),
            Op::BatchNorm(BatchNorm::default()),
            Op::Linear(Linear {
                out_features: 5,
                bias: true,
            }),
        ];
        for op in ops {
            let input = if matches!(op, Op::Linear(_)) {
                Shape::flat(384)
            } else {
                x.clone()
            };
            let out = op.output_shape(&[&input]).unwrap();
            let specs = op.weights(&[&input]);
            assert!(!specs.is_empty(), "{op}");
            for spec in specs {
                assert_eq!(spec.shape[0], out.channels(), "{op}: {}", spec.key());
                assert_eq!(
                    WeightKey::from_suffix(spec.key().suffix()),
                    Some(spec.key())
                );
            }
        }
        assert_eq!(
            WeightKey::RunningVar.tensor_name("s2.bn"),
            "s2.bn.running_var"
        );
        assert!(!WeightRole::RunningMean.is_trainable() && WeightRole::Scale.is_trainable());
        assert!(WeightRole::Kernel.is_decayed() && !WeightRole::Scale.is_decayed());
    }

    #[test]
    fn every_op_has_spec_syntax() {
        let ops = [
            Op::Conv2d(Conv2d::new(1, 1)),
            Op::BatchNorm(BatchNorm::default()),
            Op::Relu,
            Op::Relu6,
            Op::Sigmoid,
            Op::HardSigmoid,
            Op::HardSwish,
            Op::ChannelShuffle(ChannelShuffle { groups: 2 }),
            Op::MaxPool(Pool::new(2)),
            Op::AvgPool(Pool::new(2)),
            Op::GlobalAvgPool,
            Op::Add,
            Op::Mul,
            Op::Concat(Concat::default()),
            Op::ChannelSlice(ChannelSlice { start: 0, len: 1 }),
            Op::Linear(Linear {
                out_features: 1,
                bias: true,
            }),
            Op::Flatten,
            Op::Softmax,
        ];
        for op in &ops {
            let key = op.spec_key().unwrap();
            assert_eq!(SpecSyntax::find(key).map(|s| s.key), Some(key), "{op}");
        }
        assert_eq!(SpecSyntax::find("bn").map(|s| s.key), Some("batch_norm"));
        assert!(Op::Input(Shape::flat(1)).spec_key().is_none());
        // Every key and alias is unique.
        let mut all: Vec<&str> = SPEC_SYNTAX
            .iter()
            .flat_map(|s| std::iter::once(s.key).chain(s.aliases.iter().copied()))
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn conv_rejects_groups_that_do_not_divide() {
        let mut c = Conv2d::new(60, 1);
        c.groups = 5;
        let e = c.output_shape(&Shape::chw(24, 56, 56)).unwrap_err();
        assert!(e.contains("24 are not divisible by groups 5"), "{e}");
        c.groups = 8;
        let e = c.output_shape(&Shape::chw(24, 56, 56)).unwrap_err();
        assert!(
            e.contains("output channels 60 are not divisible by groups 8"),
            "{e}"
        );
    }

    #[test]
    fn conv_rejects_kernel_larger_than_input() {
        let c = Conv2d::new(8, 7);
        let e = c.output_shape(&Shape::chw(3, 5, 5)).unwrap_err();
        assert!(e.contains("does not fit the input height 5"), "{e}");
    }

    #[test]
    fn pool_ceil_mode_matches_pytorch() {
        // PyTorch: MaxPool2d(3, 2, ceil_mode=True) on 6x6 -> 3x3 (floor gives 2x2).
        let mut p = Pool::new(3);
        p.stride = [2, 2];
        p.ceil_mode = true;
        assert_eq!(
            p.output_shape(&Shape::chw(1, 6, 6), "max_pool").unwrap(),
            Shape::chw(1, 3, 3)
        );
        p.ceil_mode = false;
        assert_eq!(
            p.output_shape(&Shape::chw(1, 6, 6), "max_pool").unwrap(),
            Shape::chw(1, 2, 2)
        );
        // The last window may not start in the right padding: 5x5, k2 s2 p1 ceil -> 3.
        let mut q = Pool::new(2);
        q.padding = [1, 1];
        q.ceil_mode = true;
        assert_eq!(
            q.output_shape(&Shape::chw(1, 5, 5), "max_pool").unwrap(),
            Shape::chw(1, 3, 3)
        );
    }

    #[test]
    fn shuffle_permutation_is_the_papers() {
        // C = g * n with g = 3, n = 2: output i*g + j reads input j*n + i.
        let s = ChannelShuffle { groups: 3 };
        let perm: Vec<usize> = (0..6).map(|o| s.source_channel(o, 6)).collect();
        assert_eq!(perm, vec![0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn huge_shapes_are_refused() {
        let c = Conv2d::new(1 << 20, 1);
        assert!(c.output_shape(&Shape::chw(1 << 20, 1, 1)).is_err());
        let op = Op::Input(Shape::chw(100_000, 100_000, 100_000));
        assert!(op.output_shape(&[]).is_err());
    }
}
