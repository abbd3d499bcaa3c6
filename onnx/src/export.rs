//! Graph to ONNX: one ONNX node (or a short fixed pattern) per graph node,
//! opset 17, IR version 8, the way PyTorch would export the same network.
//!
//! What it does not do: export graphs the compiler passes have rewritten
//! (fused epilogues and channel orders have no single ONNX op); export those
//! from the spec's graph instead.

use shufflekit_ir::ops::{Activation, Op, Pool, WeightKey};
use shufflekit_ir::weights::Weights;
use shufflekit_ir::{verify, Graph, NodeId};

use crate::names::Names;
use crate::proto::{
    Attribute, Dim, GraphProto, Model, NodeProto, OpsetId, TensorProto, ValueInfo, ATTR_FLOAT,
    ATTR_INT, ATTR_INTS, FLOAT,
};
use crate::{ExportError, IR_VERSION, OPSET};

/// Serialises `graph` with `weights` as an ONNX model (opset 17, IR version
/// 8). The input is named `input`, of shape `[N, ...]` with a symbolic batch
/// dimension `N`; the output `output`; initializers carry our tensor names
/// (`stage2.unit1.gconv1.weight`).
///
/// Fails on a graph the verifier rejects, weights that do not fit it, a
/// graph with other than one input, or fused nodes left by the passes.
pub fn export(graph: &Graph, weights: &Weights) -> Result<Vec<u8>, ExportError> {
    Ok(export_model(graph, weights)?.encode())
}

pub(crate) fn export_model(graph: &Graph, weights: &Weights) -> Result<Model, ExportError> {
    verify::verify(graph).map_err(|errors| ExportError::InvalidGraph {
        messages: errors.iter().map(|e| e.to_string()).collect(),
    })?;
    let fused: Vec<String> = graph.nodes().filter_map(|id| fused(graph, id)).collect();
    if !fused.is_empty() {
        return Err(ExportError::Optimised { nodes: fused });
    }
    weights.check(graph)?;
    let inputs = graph.input_nodes();
    let [input] = inputs[..] else {
        return Err(ExportError::InputCount(inputs.len()));
    };
    let output = graph.output().ok_or(ExportError::InputCount(0))?;

    let mut e = Exporter {
        graph,
        taken: Names::default(),
        names: Default::default(),
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    // Initializers keep our tensor names; values and helper tensors get
    // names that differ from all of them.
    for id in graph.nodes() {
        for spec in graph.weights(id) {
            let name = spec.tensor_name(&graph.node(id).name);
            if let Some(t) = weights.get(&name) {
                e.initializers
                    .push(TensorProto::from_f32(&name, t.shape(), t.data()));
            }
            e.taken.take(name);
        }
    }
    e.taken.take("input");
    e.taken.take("output");
    e.names.insert(input, "input".into());
    if output != input {
        e.names.insert(output, "output".into());
    }
    for id in graph.nodes() {
        if !e.names.contains_key(&id) {
            let n = e.taken.fresh(&graph.node(id).name);
            e.names.insert(id, n);
        }
    }
    for id in graph.nodes() {
        e.node(id);
    }

    let batch_dims = |dims: &[usize]| {
        let mut d = vec![Dim::Param("N".into())];
        d.extend(dims.iter().map(|&v| Dim::Value(v as i64)));
        Some(d)
    };
    let g = GraphProto {
        name: graph.name.clone(),
        node: e.nodes,
        initializer: e.initializers,
        input: vec![ValueInfo {
            name: "input".into(),
            elem_type: FLOAT,
            dims: batch_dims(graph.node(input).shape.dims()),
        }],
        output: vec![ValueInfo {
            name: e.names[&output].clone(),
            elem_type: FLOAT,
            dims: batch_dims(graph.node(output).shape.dims()),
        }],
        doc_string: String::new(),
    };
    Ok(Model {
        ir_version: IR_VERSION,
        opset_import: vec![OpsetId {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "shufflekit".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: String::new(),
        graph: Some(g),
    })
}

/// Why a node cannot be exported, if it carries fused work.
fn fused(graph: &Graph, id: NodeId) -> Option<String> {
    let node = graph.node(id);
    let what = match &node.op {
        Op::Conv2d(c) => {
            let mut w = Vec::new();
            if c.activation != Activation::None {
                w.push("a fused activation");
            }
            if c.residual {
                w.push("a fused residual add");
            }
            if c.output_order.is_some() {
                w.push("a fused channel order");
            }
            w
        }
        Op::Concat(c) if c.output_order.is_some() => vec!["a fused channel order"],
        _ => Vec::new(),
    };
    (!what.is_empty()).then(|| format!("`{}` ({}): {}", node.name, node.op, what.join(", ")))
}

struct Exporter<'a> {
    graph: &'a Graph,
    taken: Names,
    names: std::collections::HashMap<NodeId, String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

fn ints(name: &str, v: &[usize]) -> Attribute {
    Attribute {
        name: name.into(),
        r#type: ATTR_INTS,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> Attribute {
    Attribute {
        name: name.into(),
        r#type: ATTR_INT,
        i: v,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> Attribute {
    Attribute {
        name: name.into(),
        r#type: ATTR_FLOAT,
        f: v,
        ..Default::default()
    }
}

fn pool_attrs(p: &Pool) -> Vec<Attribute> {
    vec![
        ints("kernel_shape", &p.kernel),
        ints("strides", &p.stride),
        ints(
            "pads",
            &[p.padding[0], p.padding[1], p.padding[0], p.padding[1]],
        ),
        int("ceil_mode", i64::from(p.ceil_mode)),
    ]
}

impl Exporter<'_> {
    fn push(
        &mut self,
        name: &str,
        op: &str,
        input: Vec<String>,
        output: &str,
        attrs: Vec<Attribute>,
    ) {
        self.nodes.push(NodeProto {
            input,
            output: vec![output.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            domain: String::new(),
            attribute: attrs,
        });
    }

    fn constant_i64(&mut self, base: &str, values: &[i64]) -> String {
        let name = self.taken.fresh(base);
        self.initializers
            .push(TensorProto::from_i64(&name, &[values.len()], values));
        name
    }

    /// A node computing `activation` (`Relu`, or `Clip` to [0, 6]).
    fn activation(&mut self, name: &str, activation: Activation, input: String, out: &str) {
        match activation {
            Activation::None => {}
            Activation::Relu => self.push(name, "Relu", vec![input], out, vec![]),
            Activation::Relu6 => {
                let lo = self.constant_f32(&format!("{name}/min"), 0.0);
                let hi = self.constant_f32(&format!("{name}/max"), 6.0);
                self.push(name, "Clip", vec![input, lo, hi], out, vec![]);
            }
        }
    }

    fn constant_f32(&mut self, base: &str, value: f32) -> String {
        let name = self.taken.fresh(base);
        self.initializers
            .push(TensorProto::from_f32(&name, &[], &[value]));
        name
    }

    fn node(&mut self, id: NodeId) {
        let graph = self.graph;
        let node = graph.node(id);
        let name = node.name.clone();
        let out = self.names[&id].clone();
        let ins: Vec<String> = graph
            .inputs(id)
            .iter()
            .map(|i| self.names[i].clone())
            .collect();
        let weight = |key: WeightKey| key.tensor_name(&name);
        match &node.op {
            Op::Input(_) => {}
            Op::Conv2d(c) => {
                let mut inputs = vec![ins[0].clone(), weight(WeightKey::Weight)];
                if c.bias {
                    inputs.push(weight(WeightKey::Bias));
                }
                let attrs = vec![
                    ints("kernel_shape", &c.kernel),
                    ints("strides", &c.stride),
                    ints(
                        "pads",
                        &[c.padding[0], c.padding[1], c.padding[0], c.padding[1]],
                    ),
                    ints("dilations", &c.dilation),
                    int("group", c.groups as i64),
                ];
                self.push(&name, "Conv", inputs, &out, attrs);
            }
            Op::BatchNorm(b) => {
                let inputs = vec![
                    ins[0].clone(),
                    weight(WeightKey::Weight),
                    weight(WeightKey::Bias),
                    weight(WeightKey::RunningMean),
                    weight(WeightKey::RunningVar),
                ];
                self.push(
                    &name,
                    "BatchNormalization",
                    inputs,
                    &out,
                    vec![float("epsilon", b.eps)],
                );
            }
            Op::Relu => self.activation(&name, Activation::Relu, ins[0].clone(), &out),
            Op::Sigmoid => self.push(&name, "Sigmoid", ins, &out, vec![]),
            // PyTorch's hardsigmoid: ONNX's with alpha 1/6 (default 0.2).
            Op::HardSigmoid => self.push(
                &name,
                "HardSigmoid",
                ins,
                &out,
                vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
            ),
            Op::HardSwish => self.push(&name, "HardSwish", ins, &out, vec![]),
            Op::Relu6 => self.activation(&name, Activation::Relu6, ins[0].clone(), &out),
            Op::ChannelShuffle(s) => {
                // [N, C, rest...] -> [N, g, C/g, rest...] -> swap 1 and 2 -> [N, C, rest...]
                let dims = node.shape.dims();
                let g = s.groups as i64;
                let c = dims[0] as i64;
                let rest: Vec<i64> = dims[1..].iter().map(|&d| d as i64).collect();
                let mut split = vec![-1, g, c / g];
                split.extend(&rest);
                let mut merged = vec![-1, c];
                merged.extend(&rest);
                let mut perm = vec![0, 2, 1];
                perm.extend((3..3 + rest.len()).map(|d| d as i64));
                let split_shape = self.constant_i64(&format!("{name}/split_shape"), &split);
                let merged_shape = self.constant_i64(&format!("{name}/merged_shape"), &merged);
                let v1 = self.taken.fresh(&format!("{name}/split"));
                let v2 = self.taken.fresh(&format!("{name}/transposed"));
                self.push(
                    &format!("{name}/Reshape"),
                    "Reshape",
                    vec![ins[0].clone(), split_shape],
                    &v1,
                    vec![],
                );
                self.push(
                    &format!("{name}/Transpose"),
                    "Transpose",
                    vec![v1],
                    &v2,
                    vec![Attribute {
                        name: "perm".into(),
                        r#type: ATTR_INTS,
                        ints: perm,
                        ..Default::default()
                    }],
                );
                self.push(
                    &format!("{name}/Reshape_1"),
                    "Reshape",
                    vec![v2, merged_shape],
                    &out,
                    vec![],
                );
            }
            Op::MaxPool(p) => self.push(&name, "MaxPool", ins, &out, pool_attrs(p)),
            Op::AvgPool(p) => {
                let mut attrs = pool_attrs(p);
                attrs.push(int("count_include_pad", i64::from(p.count_include_pad)));
                self.push(&name, "AveragePool", ins, &out, attrs);
            }
            Op::GlobalAvgPool => self.push(&name, "GlobalAveragePool", ins, &out, vec![]),
            Op::Add => self.push(&name, "Add", ins, &out, vec![]),
            Op::Mul => self.push(&name, "Mul", ins, &out, vec![]),
            Op::Concat(c) if c.activation != Activation::None => {
                // The fused activation is a node of its own.
                let copied = self.taken.fresh(&format!("{name}/concat"));
                self.push(&name, "Concat", ins, &copied, vec![int("axis", 1)]);
                let act = self.taken.fresh(&format!("{name}/activation"));
                self.activation(&act, c.activation, copied, &out);
            }
            Op::Concat(_) => self.push(&name, "Concat", ins, &out, vec![int("axis", 1)]),
            Op::ChannelSlice(s) => {
                let starts = self.constant_i64(&format!("{name}/starts"), &[s.start as i64]);
                let ends = self.constant_i64(&format!("{name}/ends"), &[(s.start + s.len) as i64]);
                let axes = self.constant_i64(&format!("{name}/axes"), &[1]);
                self.push(
                    &name,
                    "Slice",
                    vec![ins[0].clone(), starts, ends, axes],
                    &out,
                    vec![],
                );
            }
            Op::Linear(l) => {
                let mut inputs = vec![ins[0].clone(), weight(WeightKey::Weight)];
                if l.bias {
                    inputs.push(weight(WeightKey::Bias));
                }
                self.push(&name, "Gemm", inputs, &out, vec![int("transB", 1)]);
            }
            Op::Flatten => self.push(&name, "Flatten", ins, &out, vec![int("axis", 1)]),
            Op::Softmax => self.push(&name, "Softmax", ins, &out, vec![int("axis", 1)]),
        }
    }
}
