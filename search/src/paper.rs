//! The published ImageNet top-1 errors of ShuffleNet v1 (Zhang et al.,
//! arXiv 1707.01083), as transcribed in `shared/reference/shufflenet-v1.md`.

/// One published result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperPoint {
    /// The width multiplier (`ShuffleNet s x`).
    pub width: f64,
    /// The number of groups.
    pub groups: i64,
    /// Whether channel shuffle is on.
    pub shuffle: bool,
    /// The 2/4/2-unit variant of Table 5.
    pub shallow: bool,
    /// The complexity the paper prints for it, in MFLOPs (multiply-adds).
    pub mflops: f64,
    /// Top-1 error on ImageNet validation, in percent.
    pub top1_error: f64,
    /// The table it comes from.
    pub source: &'static str,
}

impl PaperPoint {
    /// A short label: `1x g=3`, `0.5x g=8 no shuffle`, `0.5x g=3 shallow`.
    pub fn label(&self) -> String {
        let mut s = format!("{}x g={}", self.width, self.groups);
        if !self.shuffle {
            s.push_str(" no shuffle");
        }
        if self.shallow {
            s.push_str(" shallow");
        }
        s
    }
}

const fn p(
    width: f64,
    groups: i64,
    shuffle: bool,
    shallow: bool,
    mflops: f64,
    top1_error: f64,
    source: &'static str,
) -> PaperPoint {
    PaperPoint {
        width,
        groups,
        shuffle,
        shallow,
        mflops,
        top1_error,
        source,
    }
}

/// Every published variant with its error. 1x complexities are Table 1's
/// per-group figures; 0.5x and 0.25x use Table 2's row figures (38, 13).
pub const PAPER_POINTS: &[PaperPoint] = &[
    // Table 2: error vs groups (with shuffle).
    p(1.0, 1, true, false, 143.0, 33.6, "Table 2"),
    p(1.0, 2, true, false, 140.0, 32.7, "Table 2"),
    p(1.0, 3, true, false, 137.0, 32.6, "Table 2"),
    p(1.0, 4, true, false, 133.0, 32.8, "Table 2"),
    p(1.0, 8, true, false, 137.0, 32.4, "Table 2"),
    p(0.5, 1, true, false, 38.0, 45.1, "Table 2"),
    p(0.5, 2, true, false, 38.0, 44.4, "Table 2"),
    p(0.5, 3, true, false, 38.0, 43.2, "Table 2"),
    p(0.5, 4, true, false, 38.0, 41.6, "Table 2"),
    p(0.5, 8, true, false, 38.0, 42.3, "Table 2"),
    p(0.25, 1, true, false, 13.0, 57.1, "Table 2"),
    p(0.25, 2, true, false, 13.0, 56.8, "Table 2"),
    p(0.25, 3, true, false, 13.0, 55.0, "Table 2"),
    p(0.25, 4, true, false, 13.0, 54.2, "Table 2"),
    p(0.25, 8, true, false, 13.0, 52.7, "Table 2"),
    // Table 3: without shuffle.
    p(1.0, 3, false, false, 137.0, 34.5, "Table 3"),
    p(1.0, 8, false, false, 137.0, 37.6, "Table 3"),
    p(0.5, 3, false, false, 38.0, 45.7, "Table 3"),
    p(0.5, 8, false, false, 38.0, 48.1, "Table 3"),
    p(0.25, 3, false, false, 13.0, 56.3, "Table 3"),
    p(0.25, 8, false, false, 13.0, 56.5, "Table 3"),
    // Table 5: larger and shallow variants.
    p(2.0, 3, true, false, 524.0, 26.3, "Table 5"),
    p(1.5, 3, true, false, 292.0, 28.5, "Table 5"),
    p(0.5, 3, true, true, 40.0, 42.8, "Table 5"),
];

/// The published result for a variant, if the paper reports it.
pub fn lookup(
    width: f64,
    groups: i64,
    shuffle: bool,
    shallow: bool,
) -> Option<&'static PaperPoint> {
    PAPER_POINTS.iter().find(|p| {
        (p.width - width).abs() < 1e-9
            && p.groups == groups
            && p.shuffle == shuffle
            && p.shallow == shallow
    })
}
