//! Dense `f32` tensors in row-major (C) order. Activations carry the batch
//! as their first dimension (`[N, C, H, W]` or `[N, F]`); weight tensors use
//! the same type with their own shapes (`[out, in / groups, kh, kw]`...).
//!
//! The fields are private so that `data.len()` always equals the product of
//! the shape: every constructor checks it.

use std::fmt;

/// A dense `f32` tensor whose data length always equals the product of its
/// shape.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// A tensor could not be built from the given parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// The data length differs from the product of the shape.
    #[error("shape {shape:?} needs {expected} values, got {got}")]
    LengthMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// The product of the shape.
        expected: usize,
        /// The data length given.
        got: usize,
    },
    /// The product of the shape does not fit in memory addresses.
    #[error("shape {shape:?} has too many elements")]
    TooLarge {
        /// The requested shape.
        shape: Vec<usize>,
    },
    /// The memory for the tensor could not be allocated.
    #[error("a tensor of shape {shape:?} needs {}, more than can be allocated", describe_bytes(*.bytes))]
    OutOfMemory {
        /// The requested shape.
        shape: Vec<usize>,
        /// The bytes it needs.
        bytes: u128,
    },
    /// [`Tensor::stack`] was given nothing, or parts of different shapes.
    #[error("cannot stack tensors: {0}")]
    Stack(String),
    /// [`Tensor::item`] was asked for an item past the batch.
    #[error("item {index} is out of range for a batch of {batch}")]
    ItemOutOfRange {
        /// The index asked for.
        index: usize,
        /// The batch size (first dimension).
        batch: usize,
    },
}

/// The number of elements of a shape, or None when it overflows or exceeds
/// what one `Vec<f32>` can hold.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<f32>())
}

/// A byte count for messages: `602,112,000,000,000 bytes (547.6 TiB)`.
pub fn describe_bytes(bytes: u128) -> String {
    let digits = bytes.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut size = bytes as f64;
    let mut unit = None;
    for u in units {
        if size < 1024.0 {
            break;
        }
        size /= 1024.0;
        unit = Some(u);
    }
    match unit {
        Some(u) => format!("{grouped} bytes ({size:.1} {u})"),
        None => format!("{grouped} bytes"),
    }
}

/// An empty vector with room for `len` values of `f32`, or
/// [`TensorError::OutOfMemory`] (instead of an abort) when the memory cannot
/// be had; `shape` names the tensor in the error.
pub fn try_with_capacity(len: usize, shape: &[usize]) -> Result<Vec<f32>, TensorError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| TensorError::OutOfMemory {
            shape: shape.to_vec(),
            bytes: len as u128 * std::mem::size_of::<f32>() as u128,
        })?;
    Ok(v)
}

impl Tensor {
    /// A tensor from a shape and row-major data; fails when the lengths
    /// disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, TensorError> {
        let expected = checked_numel(&shape).ok_or_else(|| TensorError::TooLarge {
            shape: shape.clone(),
        })?;
        if expected != data.len() {
            return Err(TensorError::LengthMismatch {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Result<Self, TensorError> {
        let n = checked_numel(&shape).ok_or_else(|| TensorError::TooLarge {
            shape: shape.clone(),
        })?;
        let mut data = try_with_capacity(n, &shape)?;
        data.resize(n, 0.0);
        Ok(Tensor { shape, data })
    }

    /// A tensor whose every element is `value`.
    pub fn full(shape: Vec<usize>, value: f32) -> Result<Self, TensorError> {
        let mut t = Tensor::zeros(shape)?;
        t.data.fill(value);
        Ok(t)
    }

    /// Stacks equally shaped tensors along a new first (batch) dimension:
    /// `k` tensors of shape `[C, H, W]` give `[k, C, H, W]`.
    pub fn stack(items: &[Tensor]) -> Result<Self, TensorError> {
        let first = items
            .first()
            .ok_or_else(|| TensorError::Stack("no tensors given".into()))?;
        let mut data = Vec::new();
        for (i, t) in items.iter().enumerate() {
            if t.shape != first.shape {
                return Err(TensorError::Stack(format!(
                    "item 0 has shape {:?} but item {i} has {:?}",
                    first.shape, t.shape
                )));
            }
            data.extend_from_slice(&t.data);
        }
        let mut shape = vec![items.len()];
        shape.extend_from_slice(&first.shape);
        Tensor::new(shape, data)
    }

    /// Concatenates tensors along their first (batch) dimension; every other
    /// dimension must agree.
    pub fn concat_batch(items: &[Tensor]) -> Result<Self, TensorError> {
        let first = items
            .first()
            .ok_or_else(|| TensorError::Stack("no tensors given".into()))?;
        if first.shape.is_empty() {
            return Err(TensorError::Stack("a scalar has no batch dimension".into()));
        }
        let mut batch = 0usize;
        let mut data = Vec::new();
        for (i, t) in items.iter().enumerate() {
            if t.shape.is_empty() || t.shape[1..] != first.shape[1..] {
                return Err(TensorError::Stack(format!(
                    "item 0 has shape {:?} but item {i} has {:?}",
                    first.shape, t.shape
                )));
            }
            batch = batch
                .checked_add(t.shape[0])
                .ok_or_else(|| TensorError::TooLarge {
                    shape: first.shape.clone(),
                })?;
            data.extend_from_slice(&t.data);
        }
        let mut shape = first.shape.clone();
        shape[0] = batch;
        Tensor::new(shape, data)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable access to the elements (the length cannot change).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The elements, consuming the tensor.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The shape and the elements, consuming the tensor.
    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.data)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The first dimension (the batch size for activations); 1 for a scalar.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The shape without the first (batch) dimension.
    pub fn item_shape(&self) -> &[usize] {
        self.shape.get(1..).unwrap_or(&[])
    }

    /// The elements of batch item `index` (a `[C, H, W]` image of a
    /// `[N, C, H, W]` tensor), or None past the batch.
    pub fn item_data(&self, index: usize) -> Option<&[f32]> {
        if self.shape.is_empty() {
            return None;
        }
        let size = self.item_shape().iter().product::<usize>();
        let start = index.checked_mul(size)?;
        self.data.get(start..start.checked_add(size)?)
    }

    /// Batch item `index` as a tensor of batch 1 (`[1, C, H, W]`).
    pub fn item(&self, index: usize) -> Result<Tensor, TensorError> {
        let data = self
            .item_data(index)
            .ok_or(TensorError::ItemOutOfRange {
                index,
                batch: self.batch(),
            })?
            .to_vec();
        let mut shape = self.shape.clone();
        shape[0] = 1;
        Tensor::new(shape, data)
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, self.data)
    }

    /// The largest absolute difference to another tensor of the same shape,
    /// or None when the shapes differ. NaN anywhere gives NaN.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        if self.shape != other.shape {
            return None;
        }
        Some(
            self.data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, |m, d| if d.is_nan() || d > m { d } else { m }),
        )
    }

    /// The largest absolute value (0 for an empty tensor).
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }
}

impl fmt::Debug for Tensor {
    /// Prints the shape and at most the first 8 values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: Vec<f32> = self.data.iter().take(8).copied().collect();
        write!(f, "Tensor {{ shape: {:?}, data: {head:?}", self.shape)?;
        if self.data.len() > 8 {
            write!(f, " .. ({} values)", self.data.len())?;
        }
        write!(f, " }}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_with_separators_and_units() {
        assert_eq!(describe_bytes(0), "0 bytes");
        assert_eq!(describe_bytes(1023), "1,023 bytes");
        assert_eq!(describe_bytes(1536), "1,536 bytes (1.5 KiB)");
        assert_eq!(
            describe_bytes(602_112_000_000_000),
            "602,112,000,000,000 bytes (547.6 TiB)"
        );
    }

    #[test]
    fn constructors_check_lengths() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        let e = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(e.to_string(), "shape [2, 3] needs 6 values, got 5");
        let e = Tensor::zeros(vec![usize::MAX, 2]).unwrap_err();
        assert!(matches!(e, TensorError::TooLarge { .. }), "{e}");
        let t = Tensor::full(vec![2], 1.5).unwrap();
        assert_eq!(t.data(), &[1.5, 1.5]);
    }

    #[test]
    fn stack_and_items_round_trip() {
        let a = Tensor::new(vec![2, 1], vec![1.0, 2.0]).unwrap();
        let b = Tensor::new(vec![2, 1], vec![3.0, 4.0]).unwrap();
        let s = Tensor::stack(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(s.shape(), &[2, 2, 1]);
        assert_eq!(s.item_data(1), Some(&[3.0, 4.0][..]));
        assert_eq!(s.item(0).unwrap().into_data(), a.data());
        assert!(s.item(2).is_err());
        let c = Tensor::new(vec![3], vec![0.0; 3]).unwrap();
        assert!(Tensor::stack(&[a.clone(), c]).is_err());
        let cat = Tensor::concat_batch(&[s.clone(), s.item(1).unwrap()]).unwrap();
        assert_eq!(cat.shape(), &[3, 2, 1]);
        assert_eq!(cat.data(), &[1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
    }

    #[test]
    fn diffs() {
        let a = Tensor::new(vec![3], vec![1.0, -4.0, 2.0]).unwrap();
        let b = Tensor::new(vec![3], vec![1.5, -4.0, 2.0]).unwrap();
        assert_eq!(a.max_abs_diff(&b), Some(0.5));
        assert_eq!(a.max_abs(), 4.0);
        assert_eq!(a.max_abs_diff(&Tensor::zeros(vec![1, 3]).unwrap()), None);
    }
}
