//! Generated specs of any size, for the scale tests and benchmarks: the
//! expansion, checking and counting of a spec must take time linear (or
//! n log n) in its number of layers.

/// The layouts [`spec`] can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A flat list of unnamed `relu` layers (`relu`, `relu_1`, ...).
    Relu,
    /// A flat list of unnamed 3x3 convolutions, each followed by a `relu`.
    Conv,
    /// A flat list of named `relu` layers, each naming its input in `from`.
    Named,
    /// Repeats of a residual block (conv, batch norm, relu, add), in
    /// `repeat`s of at most 10,000 calls.
    Repeat,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 4] = [Layout::Relu, Layout::Conv, Layout::Named, Layout::Repeat];

    /// A short name, for benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Relu => "relu",
            Layout::Conv => "conv",
            Layout::Named => "named",
            Layout::Repeat => "repeat",
        }
    }
}

/// The text of a spec whose graph has exactly `nodes` nodes (the input
/// node included), on an `[8, 8, 8]` input. For [`Layout::Repeat`], `nodes`
/// is rounded down to 1 plus a multiple of 4 (the block's size).
pub fn spec(layout: Layout, nodes: usize) -> String {
    let layers = nodes.saturating_sub(1);
    let mut out = format!("name: scale_{}\ninput: [8, 8, 8]\n", layout.name());
    match layout {
        Layout::Relu => {
            out.push_str("layers:\n");
            for _ in 0..layers {
                out.push_str("  - relu\n");
            }
        }
        Layout::Conv => {
            out.push_str("layers:\n");
            if layers % 2 == 1 {
                out.push_str("  - relu\n");
            }
            for _ in 0..layers / 2 {
                out.push_str("  - conv: {out: 8, kernel: 3, padding: 1}\n  - relu\n");
            }
        }
        Layout::Named => {
            out.push_str("layers:\n");
            for i in 0..layers {
                let from = match i {
                    0 => "input".to_string(),
                    _ => format!("r{}", i - 1),
                };
                out.push_str(&format!("  - relu: {{name: r{i}, from: {from}}}\n"));
            }
        }
        Layout::Repeat => {
            out.push_str(concat!(
                "blocks:\n",
                "  unit:\n",
                "    layers:\n",
                "      - conv: {out: 8, kernel: 1}\n",
                "      - batch_norm\n",
                "      - relu\n",
                "      - add: {from: [in, relu]}\n",
                "layers:\n",
            ));
            let mut calls = layers / 4;
            let mut stage = 1;
            while calls > 0 {
                let count = calls.min(10_000);
                out.push_str(&format!(
                    "  - repeat: {{count: {count}, name: s{stage}u}}\n    unit: {{}}\n"
                ));
                calls -= count;
                stage += 1;
            }
        }
    }
    out
}
