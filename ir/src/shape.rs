//! Tensor shapes without the batch dimension, and the size limits every
//! shape is checked against.

use std::fmt;

/// The largest number of elements one tensor (per image) may have: 2^28
/// floats is 1 GiB. Anything larger is refused when the node is built, so
/// later size arithmetic cannot overflow.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The largest value of a single dimension.
pub const MAX_DIM: usize = 1 << 24;

/// A tensor shape without the batch dimension: `[C, H, W]` for feature maps,
/// `[N]` for flat vectors. The batch size is chosen at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// A feature-map shape `[c, h, w]`.
    pub fn chw(c: usize, h: usize, w: usize) -> Self {
        Shape(vec![c, h, w])
    }

    /// A flat vector shape `[n]`.
    pub fn flat(n: usize) -> Self {
        Shape(vec![n])
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The channel (first) dimension.
    pub fn channels(&self) -> usize {
        self.0.first().copied().unwrap_or(0)
    }

    /// `(C, H, W)` if this is a feature-map shape.
    pub fn as_chw(&self) -> Option<(usize, usize, usize)> {
        match self.0[..] {
            [c, h, w] => Some((c, h, w)),
            _ => None,
        }
    }

    /// The spatial size `H * W` (1 for flat shapes).
    pub fn spatial(&self) -> usize {
        self.0.iter().skip(1).product()
    }

    /// Number of elements. Shapes in a graph are checked against
    /// [`MAX_ELEMENTS`], so this cannot overflow for them.
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Checks every dimension is positive and the sizes are within limits.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("shape has no dimensions".into());
        }
        let mut total: usize = 1;
        for &d in &self.0 {
            if d == 0 {
                return Err(format!("shape {self} has a zero dimension"));
            }
            if d > MAX_DIM {
                return Err(format!(
                    "shape {self} has a dimension larger than the limit {MAX_DIM}"
                ));
            }
            total = total
                .checked_mul(d)
                .filter(|&t| t <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    format!("shape {self} has more than {MAX_ELEMENTS} elements (the size limit)")
                })?;
        }
        Ok(())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}
