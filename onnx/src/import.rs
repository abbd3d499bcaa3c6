//! ONNX to spec: the model's nodes become layers of a flat spec (one
//! `layers:` list, every layer named and with explicit `from`), its
//! initializers the weights.
//!
//! The importer builds our graph as it goes, so a shape that does not fit
//! fails at the ONNX node concerned. Patterns that span several ONNX nodes
//! are recognised by tracking what a value is: `Reshape` to
//! `[N, g, C/g, H, W]`, `Transpose(perm=[0, 2, 1, 3, 4])` and `Reshape`
//! back to `[N, C, H, W]` make one `channel_shuffle`; `MatMul` or a
//! bias-free `Conv` followed by the only `Add` of a constant gets that
//! constant as its bias.
//!
//! What it does not do: import anything but one 4-D float input and one
//! output, nodes of other domains, or ops outside the list in the crate
//! docs (those are all listed in one error before anything else is done).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use shufflekit_ir::ops::{
    BatchNorm, ChannelShuffle, ChannelSlice, Concat, Conv2d, Linear, Op, Pool, WeightKey,
    WeightRole,
};
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::Weights;
use shufflekit_ir::{Graph, NodeId, Shape};

use crate::fold::{self, Const};
use crate::names::Names;
use crate::proto::{Attribute, Dim, Model, NodeProto, TensorProto, ATTR_TENSOR, FLOAT};
use crate::{ImportError, UnsupportedNode};

/// An imported model: a spec and its weights.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The network's name (the ONNX graph's name, sanitised), also the
    /// spec's `name`.
    pub name: String,
    /// The spec YAML: one flat layer list that [`shufflekit_spec::load_str`] accepts.
    pub spec: String,
    /// The weights, named after the spec's layers (`conv1.weight`).
    pub weights: Weights,
}

/// The ops [`import`] knows, in the default ONNX domain (a Reshape,
/// Transpose, Reshape sequence imports as a channel shuffle).
pub(crate) const SUPPORTED: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Add",
    "Mul",
    "Concat",
    "Split",
    "Slice",
    "Reshape",
    "Transpose",
    "Gemm",
    "MatMul",
    "Flatten",
    "Softmax",
    "Identity",
    "Constant",
];

/// Reads a serialised ONNX model and returns an equivalent spec with its
/// weights. Every node with an op outside the supported set is listed in
/// one [`ImportError::Unsupported`]; nothing is imported partially.
/// External data needs the model's directory: use
/// [`import_file`](crate::import_file) for such models.
pub fn import(bytes: &[u8]) -> Result<Imported, ImportError> {
    import_in(bytes, None)
}

/// [`import`] with the directory external data is read from.
pub(crate) fn import_in(bytes: &[u8], dir: Option<&Path>) -> Result<Imported, ImportError> {
    let mut model = Model::decode(bytes).map_err(|e| ImportError::Corrupt(e.to_string()))?;
    crate::external::load(&mut model, dir)?;
    let model = model;
    let Some(g) = &model.graph else {
        return Err(ImportError::Model(
            "the model has no graph (is this an ONNX model?)".into(),
        ));
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);

    let name = sanitize(&g.name).unwrap_or_else(|| "imported".into());
    let mut im = Importer {
        opset,
        graph: Graph::new(name.clone()),
        weights: Weights::new(),
        values: HashMap::new(),
        uses: HashMap::new(),
        taken: Names::default(),
        batch: 1,
    };
    // The spec's input node is `input`, and `in` is reserved in specs (a
    // block's input), so no layer may take either name.
    for reserved in ["input", "in"] {
        im.taken.take(reserved);
    }
    for t in &g.initializer {
        im.values.insert(t.name.clone(), Value::Const(t.clone()));
    }
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *im.uses.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &g.output {
        *im.uses.entry(o.name.clone()).or_default() += 1;
    }

    let inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !im.values.contains_key(&i.name))
        .collect();
    let [input] = inputs[..] else {
        return Err(ImportError::Model(format!(
            "the model has {} inputs (besides initializers); shufflekit imports exactly one",
            inputs.len()
        )));
    };
    if input.elem_type != FLOAT {
        return Err(ImportError::Model(format!(
            "input `{}` has element type {}; shufflekit imports float (1) inputs",
            input.name, input.elem_type
        )));
    }
    let dims = input.dims.as_deref().unwrap_or(&[]);
    let chw: Option<Vec<usize>> = match dims {
        [_, rest @ ..] if rest.len() == 3 => rest
            .iter()
            .map(|d| match d {
                Dim::Value(v) if *v > 0 => usize::try_from(*v).ok(),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let Some(chw) = chw else {
        return Err(ImportError::Model(format!(
            "input `{}` has shape {}; shufflekit imports [N, C, H, W] inputs with fixed C, H and W",
            input.name,
            show_dims(dims)
        )));
    };
    // A symbolic batch folds as 1: Reshape targets ignore their first
    // entry, so shapes computed from it import the same.
    if let Some(Dim::Value(b)) = dims.first() {
        im.batch = usize::try_from(*b).unwrap_or(1).max(1);
    }
    let input_id = im
        .graph
        .add(
            Op::Input(Shape::chw(chw[0], chw[1], chw[2])),
            "input",
            &[],
            None,
        )
        .map_err(|e| ImportError::Model(format!("input `{}`: {}", input.name, e.message)))?;
    im.values.insert(input.name.clone(), Value::Layer(input_id));

    // Every node is either folded (all its inputs known now), mapped onto
    // a layer, or listed as unsupported with why; the nodes downstream of
    // one that failed are skipped, so that all failures are reported at
    // once and only once.
    let mut unsupported = Vec::new();
    let mut first_error = None;
    let mut failed: HashSet<String> = HashSet::new();
    for n in &g.node {
        let op = if n.domain.is_empty() || n.domain == "ai.onnx" {
            n.op_type.clone()
        } else {
            format!("{}::{}", n.domain, n.op_type)
        };
        let default_domain = op == n.op_type;
        let maps = default_domain && SUPPORTED.contains(&op.as_str());
        let folds = default_domain && (fold::FOLDABLE.contains(&op.as_str()) || op == "Constant");
        let mut fail = |reason: Option<String>, failed: &mut HashSet<String>| {
            if let Some(reason) = reason {
                unsupported.push(UnsupportedNode {
                    name: node_label(n),
                    op: op.clone(),
                    reason,
                });
            }
            failed.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        };
        if !maps && !folds {
            let reason = if default_domain {
                "shufflekit has no such layer and cannot evaluate it at import".to_string()
            } else {
                format!(
                    "an op of domain `{}`, which shufflekit does not import",
                    n.domain
                )
            };
            fail(Some(reason), &mut failed);
            continue;
        }
        if let Some(bad) = n.input.iter().find(|i| failed.contains(*i)) {
            let reason = (!maps)
                .then(|| format!("its input `{bad}` comes from a node that was not imported"));
            fail(reason, &mut failed);
            continue;
        }
        let result = match im.try_fold(n) {
            Ok(true) => continue,
            Ok(false) if maps => im.node(n),
            Ok(false) => {
                let reason = im.why_not_known(n);
                fail(Some(reason), &mut failed);
                continue;
            }
            Err(e) => Err(e),
        };
        if let Err(message) = result {
            first_error.get_or_insert(ImportError::Node {
                node: node_label(n),
                op: n.op_type.clone(),
                message,
            });
            fail(None, &mut failed);
        }
    }
    if !unsupported.is_empty() {
        return Err(ImportError::Unsupported { nodes: unsupported });
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    let [output] = &g.output[..] else {
        return Err(ImportError::Model(format!(
            "the model has {} outputs; shufflekit imports exactly one",
            g.output.len()
        )));
    };
    match im.values.get(&output.name) {
        Some(Value::Layer(id)) => im.graph.set_output(*id),
        Some(_) => {
            return Err(ImportError::Model(format!(
                "output `{}` is not computed from the input by layers shufflekit has",
                output.name
            )))
        }
        None => {
            return Err(ImportError::Model(format!(
                "output `{}` is not produced by any node",
                output.name
            )))
        }
    }

    if im.graph.len() > shufflekit_spec::MAX_NODES {
        return Err(ImportError::Model(format!(
            "the model expands to {} layers; a spec holds at most {}",
            im.graph.len(),
            shufflekit_spec::MAX_NODES
        )));
    }
    let text = spec_yaml(&im.graph, &model, g.doc_string.as_str())?;
    // The spec must load to the graph built here, and the weights fit it.
    let loaded = shufflekit_spec::load_str(&text, &format!("{name}.yaml"), &[])
        .map_err(|e| ImportError::Internal(e.to_string()))?;
    // Shapes were checked node by node; what is left is the values (NaN,
    // negative variances).
    im.weights
        .check(&loaded)
        .map_err(|e| ImportError::Model(format!("the model's weights: {e}")))?;
    Ok(Imported {
        name,
        spec: text,
        weights: im.weights,
    })
}

/// What an ONNX value is while the graph is being built.
#[derive(Debug, Clone)]
enum Value {
    /// The output of a layer of our graph.
    Layer(NodeId),
    /// A constant (an initializer or a `Constant` node).
    Const(TensorProto),
    /// The first step of a channel shuffle: `[N, g, C/g, ...]` of a layer.
    ShuffleSplit { src: NodeId, groups: usize },
    /// The second step: the split transposed to `[N, C/g, g, ...]`.
    ShuffleTransposed { src: NodeId, groups: usize },
}

struct Importer {
    opset: i64,
    graph: Graph,
    weights: Weights,
    values: HashMap<String, Value>,
    uses: HashMap<String, usize>,
    taken: Names,
    /// The batch size `Shape` folds with: the input's, or 1 when it is
    /// symbolic.
    batch: usize,
}

type R<T> = Result<T, String>;

fn node_label(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        n.output.first().cloned().unwrap_or_default()
    }
}

fn show_dims(dims: &[Dim]) -> String {
    let d: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Value(v) => v.to_string(),
            Dim::Param(p) => p.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", d.join(", "))
}

/// A layer name from an ONNX name: letters, digits, `_` and `-` only,
/// starting with a letter.
fn sanitize(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '_'
        };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('_') || out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        return None;
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert(0, 'n');
    }
    // YAML would read these plain scalars as booleans or null.
    if matches!(
        out.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        out.push('_');
    }
    Some(out)
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a Attribute> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}

fn attr_float(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map(|a| a.f).unwrap_or(default)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn attr_str(n: &NodeProto, name: &str) -> String {
    attr(n, name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default()
}

/// A pair of positive sizes from an attribute (default when absent).
fn pair(n: &NodeProto, name: &str, default: [usize; 2]) -> R<[usize; 2]> {
    match attr_ints(n, name) {
        None => Ok(default),
        Some(v) => match v[..] {
            [a, b] if a > 0 && b > 0 => Ok([a as usize, b as usize]),
            _ => Err(format!(
                "`{name}` is {v:?}; shufflekit imports 2-D ops with positive values"
            )),
        },
    }
}

/// Symmetric 2-D padding from `pads` and `auto_pad`.
fn pads(n: &NodeProto) -> R<[usize; 2]> {
    let auto = attr_str(n, "auto_pad");
    match auto.as_str() {
        "" | "NOTSET" => {}
        "VALID" => return Ok([0, 0]),
        other => {
            return Err(format!(
                "auto_pad `{other}` is not supported (write explicit pads)"
            ))
        }
    }
    match attr_ints(n, "pads") {
        None => Ok([0, 0]),
        Some(p) => match p[..] {
            [t, l, b, r] if t == b && l == r && t >= 0 && l >= 0 => Ok([t as usize, l as usize]),
            _ => Err(format!(
                "pads {p:?} are not symmetric 2-D padding [top, left, bottom, right] with top = bottom and left = right"
            )),
        },
    }
}

fn dims_usize(t: &TensorProto) -> R<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor `{}` has dimension {d}", t.name)))
        .collect()
}

impl Importer {
    fn layer_name(&mut self, n: &NodeProto) -> String {
        let base = sanitize(&node_label(n)).unwrap_or_else(|| n.op_type.to_ascii_lowercase());
        self.taken.fresh(&base)
    }

    fn input(&self, n: &NodeProto, k: usize) -> R<&Value> {
        let name = n
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("input {k} is missing"))?;
        self.values
            .get(name)
            .ok_or_else(|| format!("input `{name}` is not produced by any earlier node"))
    }

    fn optional_input(&self, n: &NodeProto, k: usize) -> R<Option<&Value>> {
        match n.input.get(k) {
            Some(s) if !s.is_empty() => self.input(n, k).map(Some),
            _ => Ok(None),
        }
    }

    fn layer(&self, n: &NodeProto, k: usize) -> R<NodeId> {
        match self.input(n, k)? {
            Value::Layer(id) => Ok(*id),
            Value::Const(_) => Err(format!(
                "input `{}` is a constant; shufflekit imports this op on computed values only",
                n.input[k]
            )),
            _ => Err(format!(
                "input `{}` is an intermediate step of a channel shuffle (Reshape-Transpose-Reshape), used otherwise",
                n.input[k]
            )),
        }
    }

    fn constant(&self, n: &NodeProto, k: usize) -> R<&TensorProto> {
        match self.input(n, k)? {
            Value::Const(t) => Ok(t),
            _ => Err(format!(
                "input `{}` must be a constant (an initializer or a Constant node)",
                n.input[k]
            )),
        }
    }

    fn optional_constant(&self, n: &NodeProto, k: usize) -> R<Option<&TensorProto>> {
        match self.optional_input(n, k)? {
            None => Ok(None),
            Some(Value::Const(t)) => Ok(Some(t)),
            Some(_) => Err(format!(
                "input `{}` must be a constant (an initializer or a Constant node)",
                n.input[k]
            )),
        }
    }

    fn floats(&self, n: &NodeProto, k: usize) -> R<(Vec<usize>, Vec<f32>)> {
        let t = self.constant(n, k)?;
        let v = t
            .to_f32()
            .map_err(|e| format!("constant `{}`: {e}", n.input[k]))?;
        Ok((dims_usize(t)?, v))
    }

    fn ints_input(&self, n: &NodeProto, k: usize) -> R<Option<Vec<i64>>> {
        match self.optional_constant(n, k)? {
            None => Ok(None),
            Some(t) => t
                .to_i64()
                .map(Some)
                .map_err(|e| format!("constant `{}`: {e}", n.input[k])),
        }
    }

    fn shape(&self, id: NodeId) -> &Shape {
        &self.graph.node(id).shape
    }

    fn add(&mut self, n: &NodeProto, op: Op, inputs: &[NodeId]) -> R<NodeId> {
        let name = self.layer_name(n);
        self.add_named(name, op, inputs)
    }

    fn add_named(&mut self, name: String, op: Op, inputs: &[NodeId]) -> R<NodeId> {
        self.graph
            .add(op, name, inputs, None)
            .map_err(|e| e.message)
    }

    fn set_output(&mut self, n: &NodeProto, v: Value) -> R<()> {
        let out = n
            .output
            .first()
            .filter(|s| !s.is_empty())
            .ok_or("the node has no output")?;
        for extra in n.output.iter().skip(1).filter(|s| !s.is_empty()) {
            if self.uses.get(extra).copied().unwrap_or(0) > 0 {
                return Err(format!(
                    "its second output `{extra}` is used; shufflekit imports only the first"
                ));
            }
        }
        self.values.insert(out.clone(), v);
        Ok(())
    }

    fn weight(&mut self, id: NodeId, key: WeightKey, dims: Vec<usize>, data: Vec<f32>) -> R<()> {
        let node = &self.graph.node(id).name;
        let t = Tensor::new(dims, data)
            .map_err(|e| format!("tensor `{}`: {e}", key.tensor_name(node)))?;
        self.weights.insert_of(node, key, t);
        Ok(())
    }

    /// Normalises an axis of a tensor of rank `rank` (batch included).
    fn axis(axis: i64, rank: usize) -> R<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if (0..r).contains(&a) {
            Ok(a as usize)
        } else {
            Err(format!("axis {axis} is out of range for rank {rank}"))
        }
    }

    /// The full shape (batch first) of a value, when it is fixed.
    fn value_dims(&self, v: &Value) -> Vec<usize> {
        let mut dims = vec![self.batch];
        match v {
            Value::Layer(id) => dims.extend(self.shape(*id).dims()),
            Value::Const(t) => return t.dims.iter().map(|&d| d.max(0) as usize).collect(),
            Value::ShuffleSplit { src, groups } | Value::ShuffleTransposed { src, groups } => {
                let d = self.shape(*src).dims();
                let (c, g) = (d[0], *groups);
                if matches!(v, Value::ShuffleSplit { .. }) {
                    dims.extend([g, c / g]);
                } else {
                    dims.extend([c / g, g]);
                }
                dims.extend(&d[1..]);
            }
        }
        dims
    }

    /// Folds `n` when all its inputs are known (constants, or for `Shape`
    /// any value with a fixed shape): `Ok(true)` if folded, `Ok(false)` if
    /// some input is computed from the model's input.
    fn try_fold(&mut self, n: &NodeProto) -> R<bool> {
        if n.op_type == "Constant" {
            self.constant_node(n)?;
            return Ok(true);
        }
        if !fold::FOLDABLE.contains(&n.op_type.as_str()) {
            return Ok(false);
        }
        if n.op_type == "Shape" {
            let v = self.input(n, 0)?.clone();
            let dims = self.value_dims(&v);
            let rank = dims.len() as i64;
            let clamp = |a: i64| (if a < 0 { a + rank } else { a }).clamp(0, rank) as usize;
            let start = clamp(attr_int(n, "start", 0));
            let end = clamp(attr_int(n, "end", rank));
            let picked: Vec<i64> = dims
                .get(start..end.max(start))
                .unwrap_or(&[])
                .iter()
                .map(|&d| d as i64)
                .collect();
            let c = Const::ints(vec![picked.len()], picked)?;
            self.set_const(n, vec![c])?;
            return Ok(true);
        }
        let mut inputs = Vec::with_capacity(n.input.len());
        for k in 0..n.input.len() {
            match self.optional_input(n, k)? {
                None => inputs.push(None),
                Some(Value::Const(t)) => inputs.push(Some(Const::from_proto(t).map_err(|e| {
                    format!(
                        "its inputs are known at import, but constant `{}` cannot be folded: {e}",
                        n.input[k]
                    )
                })?)),
                Some(_) => return Ok(false),
            }
        }
        let outputs = fold::evaluate(n, &inputs, self.opset)
            .map_err(|e| format!("its inputs are known at import, but folding it failed: {e}"))?;
        self.set_const(n, outputs)?;
        Ok(true)
    }

    fn set_const(&mut self, n: &NodeProto, outputs: Vec<Const>) -> R<()> {
        for (name, c) in n.output.iter().zip(outputs) {
            if !name.is_empty() {
                self.values
                    .insert(name.clone(), Value::Const(c.to_proto(name)));
            }
        }
        Ok(())
    }

    /// Why a foldable node with no layer of its own could not be folded.
    fn why_not_known(&self, n: &NodeProto) -> String {
        let computed = n
            .input
            .iter()
            .find(|i| matches!(self.values.get(*i), Some(v) if !matches!(v, Value::Const(_))));
        match computed {
            Some(i) => format!(
                "its input `{i}` is computed from the model's input, so it cannot be folded at import, and shufflekit has no {} layer",
                n.op_type
            ),
            None => format!("shufflekit has no {} layer", n.op_type),
        }
    }

    fn node(&mut self, n: &NodeProto) -> R<()> {
        match n.op_type.as_str() {
            "Constant" => self.constant_node(n),
            "Identity" => {
                let v = self.input(n, 0)?.clone();
                self.set_output(n, v)
            }
            "Conv" => self.conv(n),
            "BatchNormalization" => self.batch_norm(n),
            "Relu" | "Sigmoid" => {
                let x = self.layer(n, 0)?;
                let op = if n.op_type == "Relu" {
                    Op::Relu
                } else {
                    Op::Sigmoid
                };
                let id = self.add(n, op, &[x])?;
                self.set_output(n, Value::Layer(id))
            }
            "HardSwish" => {
                let x = self.layer(n, 0)?;
                let id = self.add(n, Op::HardSwish, &[x])?;
                self.set_output(n, Value::Layer(id))
            }
            "HardSigmoid" => {
                let x = self.layer(n, 0)?;
                let (alpha, beta) = (attr_float(n, "alpha", 0.2), attr_float(n, "beta", 0.5));
                // PyTorch's hardsigmoid; ONNX's default alpha 0.2 is another
                // function.
                if (alpha - 1.0 / 6.0).abs() > 1e-6 || beta != 0.5 {
                    return Err(format!(
                        "HardSigmoid with alpha {alpha} and beta {beta}; shufflekit's hard_sigmoid is PyTorch's (alpha 1/6, beta 0.5)"
                    ));
                }
                let id = self.add(n, Op::HardSigmoid, &[x])?;
                self.set_output(n, Value::Layer(id))
            }
            "Clip" => self.clip(n),
            "MaxPool" | "AveragePool" => self.pool(n),
            "GlobalAveragePool" => {
                let x = self.layer(n, 0)?;
                let id = self.add(n, Op::GlobalAvgPool, &[x])?;
                self.set_output(n, Value::Layer(id))
            }
            "ReduceMean" => self.reduce_mean(n),
            "Add" | "Mul" => self.binary(n),
            "Concat" => {
                let ins: Vec<NodeId> = (0..n.input.len())
                    .map(|k| self.layer(n, k))
                    .collect::<R<_>>()?;
                let first = *ins.first().ok_or("no inputs")?;
                let rank = self.shape(first).rank() + 1;
                let axis = Self::axis(attr_int(n, "axis", 1), rank)?;
                if axis != 1 {
                    return Err(format!(
                        "concatenation along axis {axis}; shufflekit concatenates channels (axis 1)"
                    ));
                }
                let id = self.add(n, Op::Concat(Concat::default()), &ins)?;
                self.set_output(n, Value::Layer(id))
            }
            "Split" => self.split(n),
            "Slice" => self.slice(n),
            "Reshape" => self.reshape(n),
            "Transpose" => self.transpose(n),
            "Gemm" => self.gemm(n),
            "MatMul" => {
                let x = self.layer(n, 0)?;
                let (dims, b) = self.floats(n, 1)?;
                let [k, m] = dims[..] else {
                    return Err(format!("the weight has shape {dims:?}, expected [in, out]"));
                };
                let w = transpose(&b, k, m);
                self.linear(n, x, m, k, w, None)
            }
            "Flatten" => {
                let x = self.layer(n, 0)?;
                let rank = self.shape(x).rank() + 1;
                let axis = Self::axis(attr_int(n, "axis", 1), rank)?;
                if axis != 1 {
                    return Err(format!(
                        "flattening from axis {axis}; shufflekit flattens from axis 1 (keeping the batch)"
                    ));
                }
                let id = self.add(n, Op::Flatten, &[x])?;
                self.set_output(n, Value::Layer(id))
            }
            "Softmax" => {
                let x = self.layer(n, 0)?;
                let rank = self.shape(x).rank() + 1;
                let default = if self.opset >= 13 { -1 } else { 1 };
                let axis = Self::axis(attr_int(n, "axis", default), rank)?;
                // Before opset 13, Softmax flattens from `axis`: the same
                // as ours only on [N, C].
                if axis != 1 || (self.opset < 13 && rank != 2) {
                    return Err(format!(
                        "softmax over axis {axis} of a rank-{rank} tensor (opset {}); shufflekit's softmax is over channels (axis 1)",
                        self.opset
                    ));
                }
                let id = self.add(n, Op::Softmax, &[x])?;
                self.set_output(n, Value::Layer(id))
            }
            other => Err(format!("op `{other}` is not supported")),
        }
    }

    fn constant_node(&mut self, n: &NodeProto) -> R<()> {
        let out = n.output.first().cloned().unwrap_or_default();
        let t = if let Some(a) = attr(n, "value") {
            match (&a.t, a.r#type) {
                (Some(t), ATTR_TENSOR | 0) => t.clone(),
                _ => return Err("`value` is not a tensor".into()),
            }
        } else if let Some(a) = attr(n, "value_float") {
            TensorProto::from_f32(&out, &[], &[a.f])
        } else if let Some(a) = attr(n, "value_floats") {
            TensorProto::from_f32(&out, &[a.floats.len()], &a.floats)
        } else if let Some(a) = attr(n, "value_int") {
            TensorProto::from_i64(&out, &[], &[a.i])
        } else if let Some(a) = attr(n, "value_ints") {
            TensorProto::from_i64(&out, &[a.ints.len()], &a.ints)
        } else {
            return Err(
                "only `value`, `value_float(s)` and `value_int(s)` constants are supported".into(),
            );
        };
        self.set_output(n, Value::Const(t))
    }

    fn conv(&mut self, n: &NodeProto) -> R<()> {
        let x = self.layer(n, 0)?;
        let (wdims, w) = self.floats(n, 1)?;
        let [out, _, kh, kw] = wdims[..] else {
            return Err(format!(
                "the weight has shape {wdims:?}; shufflekit imports 2-D convolutions ([out, in/groups, kh, kw])"
            ));
        };
        let bias = match self.optional_input(n, 2)? {
            None => None,
            Some(_) => Some(self.floats(n, 2)?.1),
        };
        let kernel = pair(n, "kernel_shape", [kh, kw])?;
        if kernel != [kh, kw] {
            return Err(format!(
                "kernel_shape {kernel:?} differs from the weight's {:?}",
                [kh, kw]
            ));
        }
        let group = attr_int(n, "group", 1);
        let mut c = Conv2d::new(out, 1);
        c.kernel = kernel;
        c.stride = pair(n, "strides", [1, 1])?;
        c.dilation = pair(n, "dilations", [1, 1])?;
        c.padding = pads(n)?;
        c.groups = usize::try_from(group)
            .ok()
            .filter(|&g| g > 0)
            .ok_or(format!("group {group} is not positive"))?;
        c.bias = bias.is_some();
        let id = self.add(n, Op::Conv2d(c), &[x])?;
        let expected = self.graph.weights(id)[0].shape.clone();
        if expected != wdims {
            return Err(format!(
                "the weight has shape {wdims:?}, expected {expected:?} for input {}",
                self.shape(x)
            ));
        }
        self.weight(id, WeightKey::Weight, wdims, w)?;
        if let Some(b) = bias {
            self.weight(id, WeightKey::Bias, vec![out], b)?;
        }
        self.set_output(n, Value::Layer(id))
    }

    fn batch_norm(&mut self, n: &NodeProto) -> R<()> {
        if attr_int(n, "training_mode", 0) != 0 {
            return Err("training_mode is set; shufflekit imports inference batch norms".into());
        }
        let x = self.layer(n, 0)?;
        let c = self.shape(x).channels();
        // ONNX's BatchNormalization inputs 1 to 4, by their ONNX names.
        let inputs = [
            (1, "scale", WeightRole::Scale),
            (2, "bias", WeightRole::Shift),
            (3, "mean", WeightRole::RunningMean),
            (4, "var", WeightRole::RunningVar),
        ];
        let mut params = Vec::new();
        for (k, what, role) in inputs {
            let (_, v) = self.floats(n, k)?;
            if v.len() != c {
                return Err(format!("{what} has {} values for {c} channels", v.len()));
            }
            params.push((role, v));
        }
        let eps = attr_float(n, "epsilon", 1e-5);
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(format!("epsilon {eps} is not a finite non-negative number"));
        }
        let id = self.add(n, Op::BatchNorm(BatchNorm { eps }), &[x])?;
        for (role, v) in params {
            self.weight(id, role.key(), vec![c], v)?;
        }
        self.set_output(n, Value::Layer(id))
    }

    fn clip(&mut self, n: &NodeProto) -> R<()> {
        let x = self.layer(n, 0)?;
        let scalar = |s: &Self, k: usize| -> R<Option<f32>> {
            match s.optional_input(n, k)? {
                None => Ok(None),
                Some(_) => {
                    let (_, v) = s.floats(n, k)?;
                    match v[..] {
                        [x] => Ok(Some(x)),
                        _ => Err(format!("input {k} is not a scalar")),
                    }
                }
            }
        };
        let (lo, hi) = if self.opset >= 11 {
            (scalar(self, 1)?, scalar(self, 2)?)
        } else {
            (attr(n, "min").map(|a| a.f), attr(n, "max").map(|a| a.f))
        };
        let op = match (lo, hi) {
            (Some(l), Some(h)) if l == 0.0 && h == 6.0 => Op::Relu6,
            (Some(0.0), None) => Op::Relu,
            _ => {
                return Err(format!(
                    "Clip to [{}, {}]; shufflekit imports Clip(0, 6) as relu6 and Clip(0) as relu",
                    lo.map_or("-inf".into(), |v| v.to_string()),
                    hi.map_or("inf".into(), |v| v.to_string())
                ))
            }
        };
        let id = self.add(n, op, &[x])?;
        self.set_output(n, Value::Layer(id))
    }

    fn pool(&mut self, n: &NodeProto) -> R<()> {
        let x = self.layer(n, 0)?;
        if attr(n, "kernel_shape").is_none() {
            return Err("kernel_shape is missing".into());
        }
        let kernel = pair(n, "kernel_shape", [0, 0])?;
        if pair(n, "dilations", [1, 1])? != [1, 1] {
            return Err("dilated pooling is not supported".into());
        }
        let p = Pool {
            kernel,
            stride: pair(n, "strides", [1, 1])?,
            padding: pads(n)?,
            ceil_mode: attr_int(n, "ceil_mode", 0) != 0,
            count_include_pad: attr_int(n, "count_include_pad", 0) != 0,
        };
        let op = if n.op_type == "MaxPool" {
            Op::MaxPool(Pool {
                count_include_pad: true,
                ..p
            })
        } else {
            Op::AvgPool(p)
        };
        let id = self.add(n, op, &[x])?;
        self.set_output(n, Value::Layer(id))
    }

    fn reduce_mean(&mut self, n: &NodeProto) -> R<()> {
        let x = self.layer(n, 0)?;
        let rank = self.shape(x).rank() + 1;
        // The axes are an attribute before opset 18, an input from 18.
        let axes = if self.opset >= 18 {
            if attr(n, "axes").is_some() {
                return Err(format!(
                    "an `axes` attribute at opset {}; from opset 18 the axes are the second input",
                    self.opset
                ));
            }
            self.ints_input(n, 1)?
        } else {
            if self.optional_input(n, 1)?.is_some() {
                return Err(format!(
                    "an axes input at opset {}; before opset 18 the axes are the `axes` attribute",
                    self.opset
                ));
            }
            attr_ints(n, "axes")
        }
        .unwrap_or_default();
        if axes.is_empty() && self.opset >= 18 && attr_int(n, "noop_with_empty_axes", 0) != 0 {
            return self.set_output(n, Value::Layer(x));
        }
        // No axes: the mean of everything, which the check below refuses.
        let axes = if axes.is_empty() {
            (0..rank as i64).collect()
        } else {
            axes
        };
        let mut axes: Vec<usize> = axes
            .iter()
            .map(|&a| Self::axis(a, rank))
            .collect::<R<_>>()?;
        axes.sort_unstable();
        if rank != 4 || axes != [2, 3] {
            return Err(format!(
                "mean over axes {axes:?} of a rank-{rank} tensor; shufflekit imports the spatial mean (axes [2, 3] of [N, C, H, W])"
            ));
        }
        let keep = attr_int(n, "keepdims", 1) != 0;
        let name = self.layer_name(n);
        let pooled = self.add_named(name.clone(), Op::GlobalAvgPool, &[x])?;
        let id = if keep {
            pooled
        } else {
            let flat = self.taken.fresh(&format!("{name}_flatten"));
            self.add_named(flat, Op::Flatten, &[pooled])?
        };
        self.set_output(n, Value::Layer(id))
    }

    fn binary(&mut self, n: &NodeProto) -> R<()> {
        let a = self.input(n, 0)?.clone();
        let b = self.input(n, 1)?.clone();
        match (a, b) {
            (Value::Layer(x), Value::Layer(y)) => {
                let (x, y) = if n.op_type == "Mul" && self.shape(x).numel() < self.shape(y).numel()
                {
                    (y, x)
                } else {
                    (x, y)
                };
                let op = if n.op_type == "Add" { Op::Add } else { Op::Mul };
                let id = self.add(n, op, &[x, y])?;
                self.set_output(n, Value::Layer(id))
            }
            (Value::Layer(x), Value::Const(_)) if n.op_type == "Add" => self.bias_add(n, x, 1, 0),
            (Value::Const(_), Value::Layer(x)) if n.op_type == "Add" => self.bias_add(n, x, 0, 1),
            _ => Err(format!(
                "{} of a constant; shufflekit imports {} of two computed tensors, and Add of a bias right after a MatMul, Gemm or Conv without one",
                n.op_type, n.op_type
            )),
        }
    }

    /// `Add(layer, constant)`: the constant becomes the layer's bias when
    /// the layer is a bias-free linear or convolution read only here.
    fn bias_add(
        &mut self,
        n: &NodeProto,
        x: NodeId,
        layer_input: usize,
        const_input: usize,
    ) -> R<()> {
        let (_, b) = self.floats(n, const_input)?;
        let only_use = self.uses.get(&n.input[layer_input]).copied() == Some(1);
        let node = self.graph.node(x);
        let out = match &node.op {
            Op::Linear(l) if !l.bias => Some(l.out_features),
            Op::Conv2d(c) if !c.bias => Some(c.out_channels),
            _ => None,
        };
        match out {
            Some(out) if only_use && b.len() == out => {
                match &mut self.graph.node_mut(x).op {
                    Op::Linear(l) => l.bias = true,
                    Op::Conv2d(c) => c.bias = true,
                    _ => {}
                }
                self.weight(x, WeightKey::Bias, vec![out], b)?;
                self.set_output(n, Value::Layer(x))
            }
            _ => Err(format!(
                "Add of a constant of {} values to `{}` ({}); shufflekit imports such an Add only as the bias of a bias-free MatMul, Gemm or Conv whose output nothing else reads",
                b.len(),
                n.input[layer_input],
                node.op
            )),
        }
    }

    fn split(&mut self, n: &NodeProto) -> R<()> {
        let x = self.layer(n, 0)?;
        let rank = self.shape(x).rank() + 1;
        let axis = Self::axis(attr_int(n, "axis", 0), rank)?;
        if axis != 1 {
            return Err(format!(
                "split along axis {axis}; shufflekit splits channels (axis 1)"
            ));
        }
        let c = self.shape(x).channels();
        let parts = n.output.len();
        // The sizes are the `split` attribute before opset 13, the second
        // input from 13 (opset 18 adds `num_outputs` for equal parts).
        let given = if self.opset >= 13 {
            if attr(n, "split").is_some() {
                return Err(format!(
                    "a `split` attribute at opset {}; from opset 13 the sizes are the second input",
                    self.opset
                ));
            }
            self.ints_input(n, 1)?
        } else {
            if self.optional_input(n, 1)?.is_some() {
                return Err(format!(
                    "a sizes input at opset {}; before opset 13 the sizes are the `split` attribute",
                    self.opset
                ));
            }
            attr_ints(n, "split")
        };
        let sizes: Vec<i64> = match given {
            Some(s) => s,
            None => {
                let k = parts.max(1);
                if c.is_multiple_of(k) {
                    vec![(c / k) as i64; k]
                } else if self.opset >= 18 {
                    // Opset 18: parts of ceil(c / k), the last one smaller.
                    let size = c.div_ceil(k);
                    let mut v = vec![size as i64; k - 1];
                    v.push(c as i64 - (size * (k - 1)) as i64);
                    v
                } else {
                    return Err(format!("{c} channels do not split into {k} equal parts"));
                }
            }
        };
        if sizes.len() != parts || sizes.iter().any(|&s| s <= 0) {
            return Err(format!(
                "split sizes {sizes:?} do not give {parts} positive parts"
            ));
        }
        let base = sanitize(&node_label(n)).unwrap_or_else(|| "split".into());
        let mut start = 0usize;
        for (k, &len) in sizes.iter().enumerate() {
            let len = len as usize;
            let name = self.taken.fresh(&format!("{base}_{k}"));
            let id = self.add_named(name, Op::ChannelSlice(ChannelSlice { start, len }), &[x])?;
            start = start.saturating_add(len);
            if let Some(o) = n.output.get(k).filter(|o| !o.is_empty()) {
                self.values.insert(o.clone(), Value::Layer(id));
            }
        }
        Ok(())
    }

    fn slice(&mut self, n: &NodeProto) -> R<()> {
        let x = self.layer(n, 0)?;
        let (starts, ends, axes, steps) = if self.opset >= 10 {
            (
                self.ints_input(n, 1)?.ok_or("starts are missing")?,
                self.ints_input(n, 2)?.ok_or("ends are missing")?,
                self.ints_input(n, 3)?,
                self.ints_input(n, 4)?,
            )
        } else {
            (
                attr_ints(n, "starts").ok_or("starts are missing")?,
                attr_ints(n, "ends").ok_or("ends are missing")?,
                attr_ints(n, "axes"),
                None,
            )
        };
        let rank = self.shape(x).rank() + 1;
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let ([start], [end], [axis]) = (&starts[..], &ends[..], &axes[..]) else {
            return Err(format!(
                "a slice over axes {axes:?}; shufflekit imports slices of one axis (channels)"
            ));
        };
        if Self::axis(*axis, rank)? != 1 {
            return Err(format!(
                "a slice along axis {axis}; shufflekit slices channels (axis 1)"
            ));
        }
        if let Some(s) = steps {
            if s != [1] {
                return Err(format!("slice steps {s:?}; only step 1 is supported"));
            }
        }
        let c = self.shape(x).channels() as i64;
        let clamp = |v: i64| if v < 0 { v.saturating_add(c) } else { v }.clamp(0, c);
        let (s, e) = (clamp(*start), clamp(*end));
        if e <= s {
            return Err(format!("the slice {start}..{end} of {c} channels is empty"));
        }
        let op = Op::ChannelSlice(ChannelSlice {
            start: s as usize,
            len: (e - s) as usize,
        });
        let id = self.add(n, op, &[x])?;
        self.set_output(n, Value::Layer(id))
    }

    /// The target of a Reshape as per-image dims: the first entry is the
    /// batch (any of 0, -1 or a number), the others may be 0 (copy the
    /// input's) or one -1 (inferred).
    fn reshape_target(target: &[i64], input: &[usize], allowzero: bool) -> R<Vec<usize>> {
        let Some((_, rest)) = target.split_first() else {
            return Err("the target shape is empty; shufflekit needs the batch first".into());
        };
        let numel: usize = input.iter().product();
        let mut dims = Vec::with_capacity(rest.len());
        let mut infer = None;
        for (k, &d) in rest.iter().enumerate() {
            match d {
                0 if !allowzero => dims.push(*input.get(k).ok_or(format!(
                    "target dim {} copies a dimension the input lacks",
                    k + 1
                ))?),
                -1 if infer.is_none() => {
                    infer = Some(k);
                    dims.push(1);
                }
                d if d > 0 => dims.push(d as usize),
                d => return Err(format!("target shape {target:?} has dimension {d}")),
            }
        }
        let known = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&p| p > 0)
            .ok_or(format!("target shape {target:?} is invalid"))?;
        if let Some(k) = infer {
            if !numel.is_multiple_of(known) {
                return Err(format!(
                    "target shape {target:?} does not fit an input of {numel} values per image"
                ));
            }
            dims[k] = numel / known;
        } else if known != numel {
            return Err(format!(
                "target shape {target:?} does not keep the batch: the input has {numel} values per image"
            ));
        }
        Ok(dims)
    }

    fn reshape(&mut self, n: &NodeProto) -> R<()> {
        // The target is the `shape` attribute before opset 5, an input since.
        let target = if self.opset >= 5 {
            self.ints_input(n, 1)?
        } else {
            attr_ints(n, "shape")
        }
        .ok_or("the target shape is missing")?;
        let allowzero = attr_int(n, "allowzero", 0) != 0;
        let v = self.input(n, 0)?.clone();
        match v {
            Value::Layer(x) => {
                let dims = self.shape(x).dims().to_vec();
                let out = Self::reshape_target(&target, &dims, allowzero)?;
                if out == dims {
                    return self.set_output(n, Value::Layer(x));
                }
                if out.len() == 1 {
                    let id = self.add(n, Op::Flatten, &[x])?;
                    return self.set_output(n, Value::Layer(id));
                }
                if out.len() == dims.len() + 1
                    && out[0] > 1
                    && out[0].checked_mul(out[1]) == Some(dims[0])
                    && out[2..] == dims[1..]
                {
                    return self.set_output(
                        n,
                        Value::ShuffleSplit {
                            src: x,
                            groups: out[0],
                        },
                    );
                }
                Err(format!(
                    "a reshape of [N, {}] to {target:?}; shufflekit imports reshapes that flatten, that change nothing, or that start a channel shuffle (Reshape to [N, g, C/g, H, W], Transpose, Reshape back)",
                    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                ))
            }
            Value::ShuffleTransposed { src, groups } => {
                let dims = self.shape(src).dims().to_vec();
                let channels = dims[0];
                let mut split = vec![channels / groups, groups];
                split.extend(&dims[1..]);
                let out = Self::reshape_target(&target, &split, allowzero)?;
                if out != dims {
                    return Err(format!(
                        "the channel shuffle's last Reshape gives {out:?}, expected {dims:?}"
                    ));
                }
                let id = self.add(n, Op::ChannelShuffle(ChannelShuffle { groups }), &[src])?;
                self.set_output(n, Value::Layer(id))
            }
            Value::ShuffleSplit { .. } => Err(
                "a reshape of the first step of a channel shuffle; expected Transpose(perm=[0, 2, 1, ...]) next".into(),
            ),
            Value::Const(_) => Err("a reshape of a constant is not supported".into()),
        }
    }

    fn transpose(&mut self, n: &NodeProto) -> R<()> {
        let v = self.input(n, 0)?.clone();
        let perm = attr_ints(n, "perm").unwrap_or_default();
        match v {
            Value::ShuffleSplit { src, groups } => {
                let rank = self.shape(src).rank() + 2;
                let expected: Vec<i64> = [0, 2, 1]
                    .into_iter()
                    .chain(3..rank as i64)
                    .collect();
                if perm != expected {
                    return Err(format!(
                        "perm {perm:?} after a Reshape to [N, g, C/g, ...] is not the channel shuffle's {expected:?}"
                    ));
                }
                self.set_output(n, Value::ShuffleTransposed { src, groups })
            }
            _ => Err(
                "a transpose that is not the middle of a channel shuffle (Reshape to [N, g, C/g, H, W], Transpose(perm=[0, 2, 1, 3, 4]), Reshape back)".into(),
            ),
        }
    }

    fn gemm(&mut self, n: &NodeProto) -> R<()> {
        let x = self.layer(n, 0)?;
        if attr_int(n, "transA", 0) != 0 {
            return Err("transA is set; shufflekit imports x * W^T with x = [N, in]".into());
        }
        let (dims, b) = self.floats(n, 1)?;
        let [r, c] = dims[..] else {
            return Err(format!("the weight has shape {dims:?}, expected 2-D"));
        };
        let alpha = attr_float(n, "alpha", 1.0);
        let beta = attr_float(n, "beta", 1.0);
        let (out, inp, mut w) = if attr_int(n, "transB", 0) != 0 {
            (r, c, b)
        } else {
            (c, r, transpose(&b, r, c))
        };
        if alpha != 1.0 {
            w.iter_mut().for_each(|v| *v *= alpha);
        }
        let bias = match self.optional_input(n, 2)? {
            None => None,
            Some(_) => {
                let (_, mut v) = self.floats(n, 2)?;
                if v.len() == 1 {
                    v = vec![v[0]; out];
                }
                if v.len() != out {
                    return Err(format!("the bias has {} values for {out} outputs", v.len()));
                }
                v.iter_mut().for_each(|x| *x *= beta);
                Some(v)
            }
        };
        self.linear(n, x, out, inp, w, bias)
    }

    fn linear(
        &mut self,
        n: &NodeProto,
        x: NodeId,
        out: usize,
        inp: usize,
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> R<()> {
        let have = self.shape(x).clone();
        if have.rank() != 1 || have.channels() != inp {
            return Err(format!(
                "the input is [N, {}] but the weight expects [N, {inp}] (add a Flatten first)",
                have.dims()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let op = Op::Linear(Linear {
            out_features: out,
            bias: bias.is_some(),
        });
        let id = self.add(n, op, &[x])?;
        self.weight(id, WeightKey::Weight, vec![out, inp], w)?;
        if let Some(b) = bias {
            self.weight(id, WeightKey::Bias, vec![out], b)?;
        }
        self.set_output(n, Value::Layer(id))
    }
}

/// `[r, c]` row-major to `[c, r]`.
fn transpose(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            if let (Some(&x), Some(o)) = (v.get(i * c + j), out.get_mut(j * r + i)) {
                *o = x;
            }
        }
    }
    out
}

/// The spec of the imported graph: flat, every layer named, with explicit
/// `from` ([`shufflekit_spec::write_flat`]), under a comment naming the producer.
fn spec_yaml(graph: &Graph, model: &Model, doc: &str) -> Result<String, ImportError> {
    let producer = if model.producer_name.is_empty() {
        "unknown"
    } else {
        &model.producer_name
    };
    let comments = [format!(
        "Imported from ONNX by shufflekit (producer: {producer} {}, IR version {}).",
        model.producer_version, model.ir_version
    )];
    let doc: String = doc.chars().take(2000).collect();
    shufflekit_spec::write_flat(
        graph,
        &shufflekit_spec::SpecHeader {
            comments: &comments,
            doc: Some(&doc),
        },
    )
    .map_err(|e| ImportError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_into_layer_names() {
        assert_eq!(
            sanitize("/features/features.0/Conv").as_deref(),
            Some("features_features_0_Conv")
        );
        assert_eq!(
            sanitize("stage2.unit1.gconv1").as_deref(),
            Some("stage2_unit1_gconv1")
        );
        assert_eq!(sanitize("3x3").as_deref(), Some("n3x3"));
        assert_eq!(sanitize("true").as_deref(), Some("true_"));
        assert_eq!(sanitize("//"), None);
    }

    #[test]
    fn reshape_targets_resolve_zero_and_minus_one() {
        let t = Importer::reshape_target;
        assert_eq!(
            t(&[0, 3, -1, 4, 4], &[12, 4, 4], false).unwrap(),
            vec![3, 4, 4, 4]
        );
        assert_eq!(t(&[-1, 192], &[12, 4, 4], false).unwrap(), vec![192]);
        assert_eq!(
            t(&[1, 0, 0, 0], &[12, 4, 4], false).unwrap(),
            vec![12, 4, 4]
        );
        assert!(t(&[1, 5, -1], &[12, 4, 4], false).is_err());
        assert!(t(&[1, -1, -1], &[12, 4, 4], false).is_err());
        assert!(t(&[], &[12, 4, 4], false).is_err());
    }

    use crate::proto::{GraphProto, OpsetId, ValueInfo};

    fn node(name: &str, op: &str, domain: &str, input: &[&str], output: &str) -> NodeProto {
        NodeProto {
            input: input.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            domain: domain.to_string(),
            attribute: vec![],
        }
    }

    fn model(nodes: Vec<NodeProto>, output: &str) -> Vec<u8> {
        model_at(nodes, output, 17)
    }

    fn model_at(nodes: Vec<NodeProto>, output: &str, opset: i64) -> Vec<u8> {
        let info = |name: &str, dims: Vec<Dim>| ValueInfo {
            name: name.into(),
            elem_type: FLOAT,
            dims: Some(dims),
        };
        Model {
            ir_version: 8,
            opset_import: vec![OpsetId {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(GraphProto {
                name: "bad".into(),
                node: nodes,
                initializer: vec![TensorProto::from_f32("w", &[4, 3, 1, 1], &[0.5; 12])],
                input: vec![info(
                    "x",
                    vec![
                        Dim::Param("N".into()),
                        Dim::Value(3),
                        Dim::Value(8),
                        Dim::Value(8),
                    ],
                )],
                output: vec![info(output, vec![])],
                doc_string: String::new(),
            }),
            ..Default::default()
        }
        .encode()
    }

    #[test]
    fn every_unsupported_node_is_listed() {
        let bytes = model(
            vec![
                node("conv", "Conv", "", &["x", "w"], "a"),
                node("leaky", "LeakyRelu", "", &["a"], "b"),
                node("", "Resize", "", &["b"], "c"),
                node("fused", "FusedConv", "com.microsoft", &["c"], "d"),
                node("relu", "Relu", "", &["d"], "y"),
            ],
            "y",
        );
        let e = import(&bytes).unwrap_err();
        let ImportError::Unsupported { nodes } = &e else {
            panic!("{e}");
        };
        let got: Vec<(&str, &str)> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.op.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("leaky", "LeakyRelu"),
                ("c", "Resize"),
                ("fused", "com.microsoft::FusedConv"),
            ]
        );
        let text = e.to_string();
        assert!(
            text.starts_with("3 nodes shufflekit cannot import")
                && text.ends_with(
                    "`leaky` (LeakyRelu): shufflekit has no such layer and cannot evaluate it at import; `c` (Resize): shufflekit has no such layer and cannot evaluate it at import; `fused` (com.microsoft::FusedConv): an op of domain `com.microsoft`, which shufflekit does not import"
                ),
            "{text}"
        );
    }

    #[test]
    fn a_shape_computation_on_computed_values_says_why_it_did_not_fold() {
        // Div of a layer's output: foldable op, but its input is computed.
        let bytes = model(
            vec![
                node("conv", "Conv", "", &["x", "w"], "a"),
                node("half", "Div", "", &["a", "w"], "b"),
                node("shape", "Shape", "", &["b"], "s"),
                node("g", "Gather", "", &["s", "w"], "y"),
            ],
            "y",
        );
        let e = import(&bytes).unwrap_err();
        let ImportError::Unsupported { nodes } = &e else {
            panic!("{e}");
        };
        let got: Vec<(&str, &str)> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("half", "its input `a` is computed from the model's input, so it cannot be folded at import, and shufflekit has no Div layer"),
                ("shape", "its input `b` comes from a node that was not imported"),
                ("g", "its input `s` comes from a node that was not imported"),
            ],
            "{e}"
        );
    }

    #[test]
    fn an_op_in_another_opsets_form_is_an_error_naming_the_opset() {
        let ints = |name: &str, v: &[i64]| Attribute {
            name: name.into(),
            r#type: crate::proto::ATTR_INTS,
            ints: v.to_vec(),
            ..Default::default()
        };
        let mut split = node("split", "Split", "", &["a"], "y");
        split.output.push("z".into());
        split.attribute = vec![
            ints("split", &[2, 2]),
            Attribute {
                name: "axis".into(),
                r#type: crate::proto::ATTR_INT,
                i: 1,
                ..Default::default()
            },
        ];
        let conv = || node("conv", "Conv", "", &["x", "w"], "a");
        let e = import(&model_at(vec![conv(), split.clone()], "y", 13))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "a `split` attribute at opset 13; from opset 13 the sizes are the second input"
            ),
            "{e}"
        );
        // The same node is right at opset 11.
        import(&model_at(vec![conv(), split], "y", 11)).unwrap();

        let mut mean = node("mean", "ReduceMean", "", &["a"], "y");
        mean.attribute = vec![ints("axes", &[2, 3])];
        import(&model_at(vec![conv(), mean.clone()], "y", 17)).unwrap();
        let e = import(&model_at(vec![conv(), mean], "y", 18))
            .unwrap_err()
            .to_string();
        assert!(e.contains("an `axes` attribute at opset 18"), "{e}");
    }

    #[test]
    fn shape_subgraphs_fold_into_slice_bounds() {
        // The TorchScript exporter's `x.chunk(2, dim=1)`: Shape -> Gather
        // -> Add -> Div -> Mul -> Slice, on a [N, 4, 8, 8] convolution.
        let c = |name: &str, v: &[i64]| {
            let mut n = node(name, "Constant", "", &[], name);
            n.attribute.push(Attribute {
                name: "value".into(),
                r#type: ATTR_TENSOR,
                t: Some(TensorProto::from_i64(name, &[v.len()], v)),
                ..Default::default()
            });
            n
        };
        let bytes = model(
            vec![
                node("conv", "Conv", "", &["x", "w"], "a"),
                node("shape", "Shape", "", &["a"], "s"),
                c("one", &[1]),
                c("zero", &[0]),
                c("two", &[2]),
                node("gather", "Gather", "", &["s", "one"], "ch"),
                node("add", "Add", "", &["ch", "one"], "ch1"),
                node("div", "Div", "", &["ch1", "two"], "half"),
                node("mul", "Mul", "", &["half", "one"], "end"),
                node("mul2", "Mul", "", &["half", "two"], "end2"),
                node("left", "Slice", "", &["a", "zero", "end", "one"], "l"),
                node("right", "Slice", "", &["a", "end", "end2", "one"], "r"),
                node("cat", "Concat", "", &["r", "l"], "y"),
            ],
            "y",
        );
        let imported = import(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            imported
                .spec
                .contains("slice: {name: left, from: conv, start: 0, len: 2}")
                && imported
                    .spec
                    .contains("slice: {name: right, from: conv, start: 2, len: 2}"),
            "{}",
            imported.spec
        );
        // Only layers: the folded nodes left nothing behind.
        assert_eq!(
            imported.spec.matches("  - ").count(),
            4,
            "{}",
            imported.spec
        );
    }

    #[test]
    fn supported_ops_with_unsupported_settings_name_the_node() {
        let mut clip = node("clip", "Clip", "", &["a"], "y");
        clip.input.push(String::new());
        let bytes = model(vec![node("conv", "Conv", "", &["x", "w"], "a"), clip], "y");
        // Clip with no bounds is not relu6.
        let e = import(&bytes).unwrap_err().to_string();
        assert!(
            e.starts_with("node `clip` (Clip): Clip to [-inf, inf]"),
            "{e}"
        );

        let bytes = model(vec![node("t", "Transpose", "", &["x"], "y")], "y");
        let e = import(&bytes).unwrap_err().to_string();
        assert!(
            e.starts_with("node `t` (Transpose): a transpose that is not"),
            "{e}"
        );

        let bytes = model(vec![node("conv", "Conv", "", &["x", "nothing"], "y")], "y");
        let e = import(&bytes).unwrap_err().to_string();
        assert!(
            e.contains("input `nothing` is not produced by any earlier node"),
            "{e}"
        );

        let e = import(&[]).unwrap_err().to_string();
        assert!(e.contains("has no graph"), "{e}");
    }
}
