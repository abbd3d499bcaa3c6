//! Constant folding at import: a small tensor evaluator for the nodes of
//! shape computations (`x.chunk(2, dim=1)` exports as Shape -> Gather ->
//! Div -> Mul -> Slice), run on nodes whose inputs are all known when the
//! model is imported (initializers, `Constant`s, the `Shape` of a value
//! whose shape is fixed). Their outputs become constants, which the
//! importer then reads as slice bounds, reshape targets or weights.
//!
//! Values are `f32` (float and double tensors) or `i64` (every integer
//! type and bool); integer division truncates toward zero, as ONNX Runtime
//! does. Results are capped at [`MAX_ELEMENTS`] so that a hostile
//! `ConstantOfShape` cannot exhaust memory.

use crate::proto::{Attribute, NodeProto, TensorProto, DOUBLE, FLOAT, INT32, INT64};

/// The ops the evaluator knows.
pub(crate) const FOLDABLE: &[&str] = &[
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Div",
    "Mul",
    "Add",
    "Sub",
    "Cast",
    "Range",
    "Reshape",
    "ConstantOfShape",
    "Expand",
];

/// The most elements a folded tensor may have.
pub(crate) const MAX_ELEMENTS: usize = 1 << 24;

/// `TensorProto.DataType` of bool, and the other integer types read as
/// `i64` (uint8, int8, uint16, int16, uint32, uint64).
const BOOL: i32 = 9;
const OTHER_INTS: &[i32] = &[2, 3, 4, 5, 12, 13];
/// float16 and bfloat16: Cast targets that fold as `f32`.
const HALF_FLOATS: &[i32] = &[10, 16];

/// A tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    /// Float and double tensors.
    Float(Vec<f32>),
    /// Integer and bool tensors.
    Int(Vec<i64>),
}

/// A constant tensor: its dims (all of them, batch included) and values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

type R<T> = Result<T, String>;

fn numel(dims: &[usize]) -> R<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            format!("a tensor of shape {dims:?} is larger than the {MAX_ELEMENTS} elements folding allows")
        })
}

impl Const {
    fn new(dims: Vec<usize>, data: Data) -> R<Const> {
        let n = numel(&dims)?;
        let len = match &data {
            Data::Float(v) => v.len(),
            Data::Int(v) => v.len(),
        };
        if len != n {
            return Err(format!("{len} values for shape {dims:?}"));
        }
        Ok(Const { dims, data })
    }

    /// An `i64` tensor.
    pub fn ints(dims: Vec<usize>, v: Vec<i64>) -> R<Const> {
        Const::new(dims, Data::Int(v))
    }

    /// The constant of an initializer or `Constant` node.
    pub fn from_proto(t: &TensorProto) -> R<Const> {
        let dims = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
            .collect::<R<Vec<usize>>>()?;
        let data = match t.data_type {
            FLOAT | DOUBLE => Data::Float(t.to_f32()?),
            INT64 | INT32 => Data::Int(t.to_i64()?),
            BOOL if !t.raw_data.is_empty() => {
                Data::Int(t.raw_data.iter().map(|&b| i64::from(b != 0)).collect())
            }
            BOOL => Data::Int(t.int32_data.iter().map(|&b| i64::from(b != 0)).collect()),
            other => return Err(format!("data type {other} is not folded")),
        };
        Const::new(dims, data)
    }

    /// The constant as a tensor the importer reads (float or int64).
    pub fn to_proto(&self, name: &str) -> TensorProto {
        match &self.data {
            Data::Float(v) => TensorProto::from_f32(name, &self.dims, v),
            Data::Int(v) => TensorProto::from_i64(name, &self.dims, v),
        }
    }

    fn int_values(&self, what: &str) -> R<&[i64]> {
        match &self.data {
            Data::Int(v) => Ok(v),
            Data::Float(_) => Err(format!("{what} must be integers")),
        }
    }

    fn scalar(&self, what: &str) -> R<f64> {
        match &self.data {
            Data::Int(v) if v.len() == 1 => Ok(v[0] as f64),
            Data::Float(v) if v.len() == 1 => Ok(f64::from(v[0])),
            _ => Err(format!("{what} is not a scalar")),
        }
    }

    /// Keeps the elements at `index` (flat positions into `self`), with
    /// new dims.
    fn pick(&self, dims: Vec<usize>, index: &[usize]) -> R<Const> {
        let data = match &self.data {
            Data::Float(v) => Data::Float(index.iter().map(|&i| v[i]).collect()),
            Data::Int(v) => Data::Int(index.iter().map(|&i| v[i]).collect()),
        };
        Const::new(dims, data)
    }
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a Attribute> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// An axis in `0..rank` from one that may be negative.
fn axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let k = if a < 0 { a + r } else { a };
    if (0..r).contains(&k) {
        Ok(k as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

/// Every multi-index of `dims` in row-major order, as the flat index into
/// a tensor of `src_dims` broadcast to `dims` (`src_dims` right-aligned,
/// size-1 dims repeated).
fn broadcast_index(src_dims: &[usize], dims: &[usize]) -> R<Vec<usize>> {
    let n = numel(dims)?;
    let offset = dims.len() - src_dims.len();
    let src_strides = strides(src_dims);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let mut flat = 0;
        for (k, &s) in src_strides.iter().enumerate() {
            if src_dims[k] != 1 {
                flat += idx[k + offset] * s;
            }
        }
        out.push(flat);
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(out)
}

/// The numpy broadcast of two shapes.
fn broadcast_dims(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let rank = a.len().max(b.len());
    let get = |d: &[usize], k: usize| {
        if k + d.len() >= rank {
            d[k + d.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|k| match (get(a, k), get(b, k)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Evaluates node `n` on known inputs (`None` for an absent optional one).
/// `Shape` is not here: the importer knows the shapes.
pub(crate) fn evaluate(n: &NodeProto, inputs: &[Option<Const>], opset: i64) -> R<Vec<Const>> {
    let input = |k: usize| -> R<&Const> {
        inputs
            .get(k)
            .and_then(|i| i.as_ref())
            .ok_or_else(|| format!("input {k} is missing"))
    };
    let optional_ints = |k: usize, what: &str| -> R<Option<Vec<i64>>> {
        match inputs.get(k).and_then(|i| i.as_ref()) {
            None => Ok(None),
            Some(c) => c.int_values(what).map(|v| Some(v.to_vec())),
        }
    };
    let one = |c: Const| Ok(vec![c]);
    match n.op_type.as_str() {
        "Add" | "Sub" | "Mul" | "Div" => one(arithmetic(&n.op_type, input(0)?, input(1)?)?),
        "Gather" => one(gather(input(0)?, input(1)?, attr_int(n, "axis", 0))?),
        "Unsqueeze" => {
            let axes = if opset >= 13 {
                optional_ints(1, "axes")?
            } else {
                attr_ints(n, "axes")
            }
            .ok_or("the axes are missing")?;
            let x = input(0)?;
            let rank = x.dims.len() + axes.len();
            let mut axes = axes.iter().map(|&a| axis(a, rank)).collect::<R<Vec<_>>>()?;
            axes.sort_unstable();
            axes.dedup();
            if axes.len() != rank - x.dims.len() {
                return Err("repeated axes".into());
            }
            let mut dims = x.dims.clone();
            for a in axes {
                dims.insert(a, 1);
            }
            one(Const::new(dims, x.data.clone())?)
        }
        "Squeeze" => {
            let x = input(0)?;
            let axes = if opset >= 13 {
                optional_ints(1, "axes")?
            } else {
                attr_ints(n, "axes")
            };
            let dims = match axes {
                None => x.dims.iter().copied().filter(|&d| d != 1).collect(),
                Some(axes) => {
                    let axes = axes
                        .iter()
                        .map(|&a| axis(a, x.dims.len()))
                        .collect::<R<Vec<_>>>()?;
                    if let Some(&a) = axes.iter().find(|&&a| x.dims[a] != 1) {
                        return Err(format!("axis {a} has size {}, not 1", x.dims[a]));
                    }
                    x.dims
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| !axes.contains(k))
                        .map(|(_, &d)| d)
                        .collect()
                }
            };
            one(Const::new(dims, x.data.clone())?)
        }
        "Concat" => {
            let parts = (0..inputs.len()).map(input).collect::<R<Vec<_>>>()?;
            one(concat(&parts, attr_int(n, "axis", 0))?)
        }
        "Slice" => {
            let (starts, ends, axes, steps) = if opset >= 10 {
                (
                    optional_ints(1, "starts")?.ok_or("starts are missing")?,
                    optional_ints(2, "ends")?.ok_or("ends are missing")?,
                    optional_ints(3, "axes")?,
                    optional_ints(4, "steps")?,
                )
            } else {
                (
                    attr_ints(n, "starts").ok_or("starts are missing")?,
                    attr_ints(n, "ends").ok_or("ends are missing")?,
                    attr_ints(n, "axes"),
                    None,
                )
            };
            one(slice(input(0)?, &starts, &ends, axes, steps)?)
        }
        "Cast" => {
            let to = attr(n, "to").ok_or("`to` is missing")?.i as i32;
            let x = input(0)?;
            let data = match (&x.data, to) {
                (Data::Float(v), FLOAT | DOUBLE) => Data::Float(v.clone()),
                (Data::Float(v), t) if HALF_FLOATS.contains(&t) => Data::Float(v.clone()),
                (Data::Int(v), FLOAT | DOUBLE) => {
                    Data::Float(v.iter().map(|&x| x as f32).collect())
                }
                (Data::Int(v), t) if HALF_FLOATS.contains(&t) => {
                    Data::Float(v.iter().map(|&x| x as f32).collect())
                }
                (Data::Float(v), BOOL) => {
                    Data::Int(v.iter().map(|&x| i64::from(x != 0.0)).collect())
                }
                (Data::Int(v), BOOL) => Data::Int(v.iter().map(|&x| i64::from(x != 0)).collect()),
                (Data::Float(v), t) if t == INT64 || t == INT32 || OTHER_INTS.contains(&t) => {
                    Data::Int(v.iter().map(|&x| x.trunc() as i64).collect())
                }
                (Data::Int(v), t) if t == INT64 || t == INT32 || OTHER_INTS.contains(&t) => {
                    Data::Int(v.clone())
                }
                (_, t) => return Err(format!("a cast to data type {t} is not folded")),
            };
            one(Const::new(x.dims.clone(), data)?)
        }
        "Range" => {
            let (start, limit, delta) = (input(0)?, input(1)?, input(2)?);
            let (s, l, d) = (
                start.scalar("start")?,
                limit.scalar("limit")?,
                delta.scalar("delta")?,
            );
            if d == 0.0 {
                return Err("delta is 0".into());
            }
            let count = ((l - s) / d).ceil().max(0.0);
            // NaN bounds give a NaN count, refused too.
            if count.is_nan() || count > MAX_ELEMENTS as f64 {
                return Err(format!("a range of {count} elements is too large to fold"));
            }
            let count = count as usize;
            let data = match &start.data {
                Data::Int(_) => {
                    Data::Int((0..count).map(|k| s as i64 + k as i64 * d as i64).collect())
                }
                Data::Float(_) => {
                    Data::Float((0..count).map(|k| (s + k as f64 * d) as f32).collect())
                }
            };
            one(Const::new(vec![count], data)?)
        }
        "Reshape" => {
            let x = input(0)?;
            let target = if opset >= 5 {
                optional_ints(1, "the shape")?
            } else {
                attr_ints(n, "shape")
            }
            .ok_or("the target shape is missing")?;
            let dims = reshape_dims(&x.dims, &target, attr_int(n, "allowzero", 0) != 0)?;
            one(Const::new(dims, x.data.clone())?)
        }
        "ConstantOfShape" => {
            let shape = input(0)?.int_values("the shape")?;
            let dims = shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
                .collect::<R<Vec<_>>>()?;
            let count = numel(&dims)?;
            let value = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                None => Data::Float(vec![0.0]),
                Some(t) => Const::from_proto(t)?.data,
            };
            let data = match value {
                Data::Float(v) if v.len() == 1 => Data::Float(vec![v[0]; count]),
                Data::Int(v) if v.len() == 1 => Data::Int(vec![v[0]; count]),
                _ => return Err("`value` is not one element".into()),
            };
            one(Const::new(dims, data)?)
        }
        "Expand" => {
            let x = input(0)?;
            let shape = input(1)?.int_values("the shape")?;
            let shape = shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
                .collect::<R<Vec<_>>>()?;
            let dims = broadcast_dims(&x.dims, &shape)?;
            let index = broadcast_index(&x.dims, &dims)?;
            one(x.pick(dims, &index)?)
        }
        other => Err(format!("no evaluator for {other}")),
    }
}

fn arithmetic(op: &str, a: &Const, b: &Const) -> R<Const> {
    let dims = broadcast_dims(&a.dims, &b.dims)?;
    let (ia, ib) = (
        broadcast_index(&a.dims, &dims)?,
        broadcast_index(&b.dims, &dims)?,
    );
    let data = match (&a.data, &b.data) {
        (Data::Int(x), Data::Int(y)) => {
            let mut out = Vec::with_capacity(ia.len());
            for (&i, &j) in ia.iter().zip(&ib) {
                let (p, q) = (x[i], y[j]);
                let v = match op {
                    "Add" => p.checked_add(q),
                    "Sub" => p.checked_sub(q),
                    "Mul" => p.checked_mul(q),
                    _ if q == 0 => return Err("integer division by zero".into()),
                    _ => p.checked_div(q),
                };
                out.push(v.ok_or_else(|| format!("{p} {op} {q} overflows"))?);
            }
            Data::Int(out)
        }
        (Data::Float(x), Data::Float(y)) => Data::Float(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    match op {
                        "Add" => p + q,
                        "Sub" => p - q,
                        "Mul" => p * q,
                        _ => p / q,
                    }
                })
                .collect(),
        ),
        _ => return Err(format!("{op} of an integer and a float tensor")),
    };
    Const::new(dims, data)
}

fn gather(data: &Const, indices: &Const, a: i64) -> R<Const> {
    let rank = data.dims.len();
    if rank == 0 {
        return Err("gather from a scalar".into());
    }
    let a = axis(a, rank)?;
    let size = data.dims[a] as i64;
    let idx = indices
        .int_values("the indices")?
        .iter()
        .map(|&i| {
            let k = if i < 0 { i + size } else { i };
            if (0..size).contains(&k) {
                Ok(k as usize)
            } else {
                Err(format!(
                    "index {i} is out of range for a dimension of {size}"
                ))
            }
        })
        .collect::<R<Vec<_>>>()?;
    let outer: usize = data.dims[..a].iter().product();
    let inner: usize = data.dims[a + 1..].iter().product();
    let mut dims = data.dims[..a].to_vec();
    dims.extend(&indices.dims);
    dims.extend(&data.dims[a + 1..]);
    numel(&dims)?;
    let mut flat = Vec::new();
    for o in 0..outer {
        for &k in &idx {
            for i in 0..inner {
                flat.push((o * data.dims[a] + k) * inner + i);
            }
        }
    }
    data.pick(dims, &flat)
}

fn concat(parts: &[&Const], a: i64) -> R<Const> {
    let first = parts.first().ok_or("no inputs")?;
    let rank = first.dims.len();
    let a = axis(a, rank)?;
    let mut dims = first.dims.clone();
    dims[a] = 0;
    for p in parts {
        let same_rest = p.dims.len() == rank
            && p.dims
                .iter()
                .enumerate()
                .all(|(k, &d)| k == a || d == first.dims[k]);
        if !same_rest {
            return Err(format!(
                "shapes {:?} and {:?} do not concatenate on axis {a}",
                first.dims, p.dims
            ));
        }
        dims[a] += p.dims[a];
    }
    numel(&dims)?;
    let outer: usize = first.dims[..a].iter().product();
    let inner: usize = first.dims[a + 1..].iter().product();
    let mut data = match &first.data {
        Data::Float(_) => Data::Float(Vec::new()),
        Data::Int(_) => Data::Int(Vec::new()),
    };
    for o in 0..outer {
        for p in parts {
            let chunk = p.dims[a] * inner;
            let range = o * chunk..(o + 1) * chunk;
            match (&mut data, &p.data) {
                (Data::Float(d), Data::Float(v)) => d.extend_from_slice(&v[range]),
                (Data::Int(d), Data::Int(v)) => d.extend_from_slice(&v[range]),
                _ => return Err("a concatenation of integer and float tensors".into()),
            }
        }
    }
    Const::new(dims, data)
}

fn slice(
    x: &Const,
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> R<Const> {
    let rank = x.dims.len();
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps have different lengths".into());
    }
    // Per axis: first index, step, count.
    let mut plan: Vec<(i64, i64, usize)> = x.dims.iter().map(|&d| (0, 1, d)).collect();
    for k in 0..starts.len() {
        let a = axis(axes[k], rank)?;
        let d = x.dims[a] as i64;
        let step = steps[k];
        if step == 0 {
            return Err("a slice step of 0".into());
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (norm(starts[k]), norm(ends[k]));
        let (s, e, count) = if step > 0 {
            let (s, e) = (s.clamp(0, d), e.clamp(0, d));
            (s, e, if e > s { (e - s + step - 1) / step } else { 0 })
        } else {
            let (s, e) = (s.clamp(-1, d - 1), e.clamp(-1, d - 1));
            (s, e, if s > e { (s - e - step - 1) / -step } else { 0 })
        };
        let _ = e;
        plan[a] = (s, step, count as usize);
    }
    let dims: Vec<usize> = plan.iter().map(|p| p.2).collect();
    let n = numel(&dims)?;
    let st = strides(&x.dims);
    let mut flat = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let mut f = 0i64;
        for k in 0..rank {
            let (s, step, _) = plan[k];
            f += (s + idx[k] as i64 * step) * st[k] as i64;
        }
        flat.push(f as usize);
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    x.pick(dims, &flat)
}

/// A Reshape's output dims: 0 copies the input's dim (unless
/// `allowzero`), one -1 is inferred.
fn reshape_dims(input: &[usize], target: &[i64], allowzero: bool) -> R<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut dims = Vec::with_capacity(target.len());
    let mut infer = None;
    for (k, &d) in target.iter().enumerate() {
        match d {
            0 if !allowzero => dims.push(
                *input
                    .get(k)
                    .ok_or(format!("dim {k} copies a dimension the input lacks"))?,
            ),
            -1 if infer.is_none() => {
                infer = Some(k);
                dims.push(1);
            }
            d if d >= 0 => dims.push(d as usize),
            d => return Err(format!("target shape {target:?} has dimension {d}")),
        }
    }
    let known = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the target shape overflows")?;
    if let Some(k) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!(
                "target shape {target:?} does not fit {total} elements"
            ));
        }
        dims[k] = total / known;
    } else if known != total {
        return Err(format!(
            "target shape {target:?} does not fit {total} elements"
        ));
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[usize], v: &[i64]) -> Const {
        Const::ints(dims.to_vec(), v.to_vec()).unwrap()
    }

    fn floats(dims: &[usize], v: &[f32]) -> Const {
        Const::new(dims.to_vec(), Data::Float(v.to_vec())).unwrap()
    }

    fn node(op: &str, attrs: Vec<Attribute>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        }
    }

    fn int_attr(name: &str, i: i64) -> Attribute {
        Attribute {
            name: name.into(),
            r#type: crate::proto::ATTR_INT,
            i,
            ..Default::default()
        }
    }

    fn ints_attr(name: &str, v: &[i64]) -> Attribute {
        Attribute {
            name: name.into(),
            r#type: crate::proto::ATTR_INTS,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn eval(op: &str, attrs: Vec<Attribute>, inputs: Vec<Option<Const>>, opset: i64) -> Const {
        let mut out = evaluate(&node(op, attrs), &inputs, opset).unwrap();
        out.remove(0)
    }

    #[test]
    fn the_chunk_computation_folds() {
        // Shape [1, 48, 28, 28] -> Gather(1) -> (+1) / 2 -> * 1 and * 2.
        let shape = ints(&[4], &[1, 48, 28, 28]);
        let c = eval(
            "Gather",
            vec![int_attr("axis", 0)],
            vec![Some(shape), Some(ints(&[1], &[1]))],
            17,
        );
        assert_eq!(c, ints(&[1], &[48]));
        let c = eval("Add", vec![], vec![Some(c), Some(ints(&[1], &[1]))], 17);
        let c = eval("Div", vec![], vec![Some(c), Some(ints(&[1], &[2]))], 17);
        assert_eq!(c, ints(&[1], &[24]), "integer division truncates");
        let c = eval("Mul", vec![], vec![Some(c), Some(ints(&[1], &[2]))], 17);
        assert_eq!(c, ints(&[1], &[48]));
        // A scalar index drops the axis.
        let c = eval(
            "Gather",
            vec![],
            vec![Some(ints(&[3], &[5, 6, 7])), Some(ints(&[], &[-1]))],
            17,
        );
        assert_eq!(c, ints(&[], &[7]));
        let e = evaluate(
            &node("Div", vec![]),
            &[Some(ints(&[1], &[1])), Some(ints(&[1], &[0]))],
            17,
        )
        .unwrap_err();
        assert!(e.contains("division by zero"), "{e}");
    }

    #[test]
    fn slices_take_steps_and_negative_indices() {
        let x = ints(&[2, 5], &[0, 1, 2, 3, 4, 10, 11, 12, 13, 14]);
        let s = |starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]| {
            slice(&x, starts, ends, Some(axes.to_vec()), Some(steps.to_vec())).unwrap()
        };
        assert_eq!(s(&[1], &[100], &[1], &[2]), ints(&[2, 2], &[1, 3, 11, 13]));
        assert_eq!(
            s(&[-1], &[-4], &[-1], &[-1]),
            ints(&[2, 3], &[4, 3, 2, 14, 13, 12])
        );
        assert_eq!(
            s(&[-1], &[i64::MIN], &[1], &[-2]),
            ints(&[2, 3], &[4, 2, 0, 14, 12, 10])
        );
        assert_eq!(s(&[1, 0], &[2, 1], &[0, 1], &[1, 1]), ints(&[1, 1], &[10]));
        assert_eq!(s(&[3], &[1], &[1], &[1]).dims, vec![2, 0]);
        // Through the node, opset 13: inputs; opset 9: attributes.
        let c = eval(
            "Slice",
            vec![],
            vec![
                Some(x.clone()),
                Some(ints(&[1], &[0])),
                Some(ints(&[1], &[-1])),
                Some(ints(&[1], &[1])),
                None,
            ],
            13,
        );
        assert_eq!(c.dims, vec![2, 4]);
        let c = eval(
            "Slice",
            vec![ints_attr("starts", &[1]), ints_attr("ends", &[2])],
            vec![Some(x)],
            9,
        );
        assert_eq!(c, ints(&[1, 5], &[10, 11, 12, 13, 14]));
    }

    #[test]
    fn shape_ops_fold() {
        let x = ints(&[3], &[4, 5, 6]);
        // Unsqueeze: axes as input from opset 13, as attribute before.
        let u = eval(
            "Unsqueeze",
            vec![],
            vec![Some(x.clone()), Some(ints(&[2], &[0, -1]))],
            13,
        );
        assert_eq!(u.dims, vec![1, 3, 1]);
        let u11 = eval(
            "Unsqueeze",
            vec![ints_attr("axes", &[0, 2])],
            vec![Some(x.clone())],
            11,
        );
        assert_eq!(u11, u);
        let s = eval("Squeeze", vec![], vec![Some(u.clone()), None], 13);
        assert_eq!(s, x);
        let s = eval("Squeeze", vec![], vec![Some(u), Some(ints(&[1], &[2]))], 13);
        assert_eq!(s.dims, vec![1, 3]);
        // Concat of shape pieces.
        let c = eval(
            "Concat",
            vec![int_attr("axis", 0)],
            vec![Some(ints(&[1], &[1])), Some(ints(&[2], &[-1, 7]))],
            17,
        );
        assert_eq!(c, ints(&[3], &[1, -1, 7]));
        let c = eval(
            "Concat",
            vec![int_attr("axis", 1)],
            vec![
                Some(ints(&[2, 1], &[1, 2])),
                Some(ints(&[2, 2], &[3, 4, 5, 6])),
            ],
            17,
        );
        assert_eq!(c, ints(&[2, 3], &[1, 3, 4, 2, 5, 6]));
        // Reshape with 0 and -1.
        let r = eval(
            "Reshape",
            vec![],
            vec![
                Some(ints(&[2, 3, 2], &[0; 12])),
                Some(ints(&[3], &[0, -1, 2])),
            ],
            17,
        );
        assert_eq!(r.dims, vec![2, 3, 2]);
        let r = eval(
            "Reshape",
            vec![],
            vec![Some(ints(&[2, 3, 2], &[0; 12])), Some(ints(&[2], &[-1, 4]))],
            17,
        );
        assert_eq!(r.dims, vec![3, 4]);
        // Range, Cast, ConstantOfShape, Expand, Sub.
        let r = eval(
            "Range",
            vec![],
            vec![
                Some(ints(&[], &[10])),
                Some(ints(&[], &[1])),
                Some(ints(&[], &[-3])),
            ],
            17,
        );
        assert_eq!(r, ints(&[3], &[10, 7, 4]));
        let f = eval("Cast", vec![int_attr("to", 1)], vec![Some(r)], 17);
        assert_eq!(f, floats(&[3], &[10.0, 7.0, 4.0]));
        let back = eval(
            "Cast",
            vec![int_attr("to", 7)],
            vec![Some(floats(&[2], &[-2.7, 2.7]))],
            17,
        );
        assert_eq!(back, ints(&[2], &[-2, 2]));
        let z = eval(
            "ConstantOfShape",
            vec![],
            vec![Some(ints(&[2], &[2, 3]))],
            17,
        );
        assert_eq!(z, floats(&[2, 3], &[0.0; 6]));
        let e = eval(
            "Expand",
            vec![],
            vec![Some(ints(&[2, 1], &[1, 2])), Some(ints(&[3], &[2, 1, 3]))],
            17,
        );
        assert_eq!(e, ints(&[2, 2, 3], &[1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2]));
        let d = eval(
            "Sub",
            vec![],
            vec![Some(ints(&[2], &[5, 6])), Some(ints(&[], &[1]))],
            17,
        );
        assert_eq!(d, ints(&[2], &[4, 5]));
    }

    #[test]
    fn hostile_sizes_are_errors() {
        let e = evaluate(
            &node("ConstantOfShape", vec![]),
            &[Some(ints(&[2], &[1 << 40, 1 << 40]))],
            17,
        )
        .unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let e = evaluate(
            &node("Range", vec![]),
            &[
                Some(ints(&[], &[0])),
                Some(ints(&[], &[i64::MAX])),
                Some(ints(&[], &[1])),
            ],
            17,
        )
        .unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = evaluate(
            &node("Gather", vec![]),
            &[Some(ints(&[3], &[1, 2, 3])), Some(ints(&[1], &[3]))],
            17,
        )
        .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }
}
