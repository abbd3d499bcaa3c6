//! The protobuf wire format of the ONNX messages this crate reads and
//! writes, by hand: only the fields of `onnx.proto` that export and import
//! use. Unknown fields are skipped, as protobuf requires; repeated scalars
//! are accepted packed or not. Nested graphs (attributes of `If`/`Loop`)
//! are skipped, so decoding never recurses more than three messages deep.

use std::fmt;

/// `TensorProto.DataType` values used here.
pub(crate) const FLOAT: i32 = 1;
pub(crate) const INT32: i32 = 6;
pub(crate) const INT64: i32 = 7;
pub(crate) const DOUBLE: i32 = 11;

/// `AttributeProto.AttributeType` values used here.
pub(crate) const ATTR_FLOAT: i32 = 1;
pub(crate) const ATTR_INT: i32 = 2;
pub(crate) const ATTR_TENSOR: i32 = 4;
pub(crate) const ATTR_FLOATS: i32 = 6;
pub(crate) const ATTR_INTS: i32 = 7;

/// A malformed message: where the reader was and what it found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodeError {
    /// The message being read (`ModelProto.graph.node`...).
    pub context: String,
    /// Byte offset in the enclosing buffer.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {} of {}",
            self.message, self.offset, self.context
        )
    }
}

/// `ModelProto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Model {
    pub ir_version: i64,
    pub opset_import: Vec<OpsetId>,
    pub producer_name: String,
    pub producer_version: String,
    pub doc_string: String,
    pub graph: Option<GraphProto>,
}

/// `OperatorSetIdProto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OpsetId {
    pub domain: String,
    pub version: i64,
}

/// `GraphProto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GraphProto {
    pub name: String,
    pub node: Vec<NodeProto>,
    pub initializer: Vec<TensorProto>,
    pub input: Vec<ValueInfo>,
    pub output: Vec<ValueInfo>,
    pub doc_string: String,
}

/// `NodeProto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NodeProto {
    pub input: Vec<String>,
    pub output: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub attribute: Vec<Attribute>,
}

/// `AttributeProto` (graphs, sparse tensors and types are skipped).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Attribute {
    pub name: String,
    pub r#type: i32,
    pub f: f32,
    pub i: i64,
    pub s: Vec<u8>,
    pub t: Option<TensorProto>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
    /// The attribute holds a subgraph or another kind this crate skips.
    pub skipped: bool,
}

/// `TensorProto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TensorProto {
    pub dims: Vec<i64>,
    pub data_type: i32,
    pub float_data: Vec<f32>,
    pub int32_data: Vec<i32>,
    pub int64_data: Vec<i64>,
    pub double_data: Vec<f64>,
    pub name: String,
    pub raw_data: Vec<u8>,
    /// `data_location == EXTERNAL` or `external_data` present.
    pub external: bool,
    /// The `external_data` entries (`location`, `offset`, `length`...), in
    /// file order.
    pub external_data: Vec<(String, String)>,
}

/// `ValueInfoProto` of a tensor: name, element type and dimensions.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ValueInfo {
    pub name: String,
    pub elem_type: i32,
    /// `None` when the type has no shape.
    pub dims: Option<Vec<Dim>>,
}

/// One `TensorShapeProto.Dimension`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dim {
    Value(i64),
    Param(String),
    Unknown,
}

// ---------------------------------------------------------------- encoding

/// Bytes of a message being written.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn int(&mut self, field: u32, v: i64) {
        self.tag(field, 0);
        self.varint(v as u64);
    }

    fn float(&mut self, field: u32, v: f32) {
        self.tag(field, 5);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    fn string_if(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        f(&mut inner);
        self.bytes(field, &inner.buf);
    }
}

impl Model {
    /// The serialised `ModelProto`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.int(1, self.ir_version);
        w.string_if(2, &self.producer_name);
        w.string_if(3, &self.producer_version);
        w.string_if(6, &self.doc_string);
        if let Some(g) = &self.graph {
            w.message(7, |w| g.encode(w));
        }
        for o in &self.opset_import {
            w.message(8, |w| {
                w.string_if(1, &o.domain);
                w.int(2, o.version);
            });
        }
        w.buf
    }
}

impl GraphProto {
    fn encode(&self, w: &mut Writer) {
        for n in &self.node {
            w.message(1, |w| n.encode(w));
        }
        w.string_if(2, &self.name);
        for t in &self.initializer {
            w.message(5, |w| t.encode(w));
        }
        w.string_if(10, &self.doc_string);
        for v in &self.input {
            w.message(11, |w| v.encode(w));
        }
        for v in &self.output {
            w.message(12, |w| v.encode(w));
        }
    }
}

impl NodeProto {
    fn encode(&self, w: &mut Writer) {
        for i in &self.input {
            w.bytes(1, i.as_bytes());
        }
        for o in &self.output {
            w.bytes(2, o.as_bytes());
        }
        w.string_if(3, &self.name);
        w.string_if(4, &self.op_type);
        for a in &self.attribute {
            w.message(5, |w| a.encode(w));
        }
        w.string_if(7, &self.domain);
    }
}

impl Attribute {
    fn encode(&self, w: &mut Writer) {
        w.string_if(1, &self.name);
        match self.r#type {
            ATTR_FLOAT => w.float(2, self.f),
            ATTR_INT => w.int(3, self.i),
            ATTR_TENSOR => {
                if let Some(t) = &self.t {
                    w.message(5, |w| t.encode(w));
                }
            }
            ATTR_FLOATS => {
                for &f in &self.floats {
                    w.float(7, f);
                }
            }
            ATTR_INTS => {
                for &i in &self.ints {
                    w.int(8, i);
                }
            }
            _ => {}
        }
        w.int(20, i64::from(self.r#type));
    }
}

impl TensorProto {
    fn encode(&self, w: &mut Writer) {
        for &d in &self.dims {
            w.int(1, d);
        }
        w.int(2, i64::from(self.data_type));
        w.string_if(8, &self.name);
        if !self.raw_data.is_empty() {
            w.bytes(9, &self.raw_data);
        }
        for (key, value) in &self.external_data {
            w.message(13, |w| {
                w.string_if(1, key);
                w.string_if(2, value);
            });
        }
        if self.external {
            w.int(14, 1);
        }
    }
}

impl ValueInfo {
    fn encode(&self, w: &mut Writer) {
        w.string_if(1, &self.name);
        w.message(2, |w| {
            w.message(1, |w| {
                w.int(1, i64::from(self.elem_type));
                if let Some(dims) = &self.dims {
                    w.message(2, |w| {
                        for d in dims {
                            w.message(1, |w| match d {
                                Dim::Value(v) => w.int(1, *v),
                                Dim::Param(p) => w.bytes(2, p.as_bytes()),
                                Dim::Unknown => {}
                            });
                        }
                    });
                }
            });
        });
    }
}

// ---------------------------------------------------------------- decoding

/// A field's value as the wire format carries it.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads the fields of one message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    context: &'a str,
}

type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], context: &'a str) -> Self {
        Reader {
            buf,
            pos: 0,
            context,
        }
    }

    fn error(&self, message: impl Into<String>) -> DecodeError {
        DecodeError {
            context: self.context.to_string(),
            offset: self.pos,
            message: message.into(),
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.error("truncated varint (the data ends inside a number)"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.error(format!(
                    "truncated data: a field of {n} bytes with {} left",
                    self.buf.len() - self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field number and value, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| self.error("field number too large"))?;
        if field == 0 {
            return Err(self.error("field number 0 (not a protobuf message)"));
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| self.error("length too large"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Wire::Fixed32(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            }
            w => {
                return Err(self.error(format!(
                    "wire type {w} (groups or garbage; not a protobuf message)"
                )))
            }
        };
        Ok(Some((field, value)))
    }

    fn wrong(&self, field: u32) -> DecodeError {
        self.error(format!("field {field} has the wrong wire type"))
    }

    fn int(&self, field: u32, v: Wire) -> Result<i64> {
        match v {
            Wire::Varint(x) => Ok(x as i64),
            _ => Err(self.wrong(field)),
        }
    }

    fn string(&self, field: u32, v: Wire) -> Result<String> {
        match v {
            Wire::Bytes(b) => String::from_utf8(b.to_vec())
                .map_err(|_| self.error(format!("field {field} is not valid UTF-8"))),
            _ => Err(self.wrong(field)),
        }
    }

    fn bytes(&self, field: u32, v: Wire<'a>) -> Result<&'a [u8]> {
        match v {
            Wire::Bytes(b) => Ok(b),
            _ => Err(self.wrong(field)),
        }
    }

    fn float(&self, field: u32, v: Wire) -> Result<f32> {
        match v {
            Wire::Fixed32(x) => Ok(f32::from_bits(x)),
            _ => Err(self.wrong(field)),
        }
    }

    /// A repeated varint field, packed or not.
    fn ints(&self, field: u32, v: Wire, out: &mut Vec<i64>) -> Result<()> {
        match v {
            Wire::Varint(x) => out.push(x as i64),
            Wire::Bytes(b) => {
                let mut r = Reader::new(b, self.context);
                while r.pos < b.len() {
                    out.push(r.varint()? as i64);
                }
            }
            _ => return Err(self.wrong(field)),
        }
        Ok(())
    }

    /// A repeated `float` field, packed or not.
    fn floats(&self, field: u32, v: Wire, out: &mut Vec<f32>) -> Result<()> {
        match v {
            Wire::Fixed32(x) => out.push(f32::from_bits(x)),
            Wire::Bytes(b) if b.len() % 4 == 0 => out.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            _ => return Err(self.wrong(field)),
        }
        Ok(())
    }

    /// A repeated `double` field, packed or not.
    fn doubles(&self, field: u32, v: Wire, out: &mut Vec<f64>) -> Result<()> {
        match v {
            Wire::Fixed64(x) => out.push(f64::from_bits(x)),
            Wire::Bytes(b) if b.len() % 8 == 0 => out.extend(
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            ),
            _ => return Err(self.wrong(field)),
        }
        Ok(())
    }
}

impl Model {
    /// Parses a serialised `ModelProto`.
    pub fn decode(buf: &[u8]) -> Result<Model> {
        let mut m = Model::default();
        let mut r = Reader::new(buf, "ModelProto");
        while let Some((f, v)) = r.next()? {
            match f {
                1 => m.ir_version = r.int(f, v)?,
                2 => m.producer_name = r.string(f, v)?,
                3 => m.producer_version = r.string(f, v)?,
                6 => m.doc_string = r.string(f, v)?,
                7 => m.graph = Some(GraphProto::decode(r.bytes(f, v)?)?),
                8 => {
                    let b = r.bytes(f, v)?;
                    let mut o = OpsetId::default();
                    let mut r = Reader::new(b, "ModelProto.opset_import");
                    while let Some((f, v)) = r.next()? {
                        match f {
                            1 => o.domain = r.string(f, v)?,
                            2 => o.version = r.int(f, v)?,
                            _ => {}
                        }
                    }
                    m.opset_import.push(o);
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

impl GraphProto {
    fn decode(buf: &[u8]) -> Result<GraphProto> {
        let mut g = GraphProto::default();
        let mut r = Reader::new(buf, "ModelProto.graph");
        while let Some((f, v)) = r.next()? {
            match f {
                1 => g.node.push(NodeProto::decode(r.bytes(f, v)?)?),
                2 => g.name = r.string(f, v)?,
                5 => g
                    .initializer
                    .push(TensorProto::decode(r.bytes(f, v)?, "graph.initializer")?),
                10 => g.doc_string = r.string(f, v)?,
                11 => g.input.push(ValueInfo::decode(r.bytes(f, v)?)?),
                12 => g.output.push(ValueInfo::decode(r.bytes(f, v)?)?),
                _ => {}
            }
        }
        Ok(g)
    }
}

impl NodeProto {
    fn decode(buf: &[u8]) -> Result<NodeProto> {
        let mut n = NodeProto::default();
        let mut r = Reader::new(buf, "graph.node");
        while let Some((f, v)) = r.next()? {
            match f {
                1 => n.input.push(r.string(f, v)?),
                2 => n.output.push(r.string(f, v)?),
                3 => n.name = r.string(f, v)?,
                4 => n.op_type = r.string(f, v)?,
                5 => n.attribute.push(Attribute::decode(r.bytes(f, v)?)?),
                7 => n.domain = r.string(f, v)?,
                _ => {}
            }
        }
        Ok(n)
    }
}

impl Attribute {
    fn decode(buf: &[u8]) -> Result<Attribute> {
        let mut a = Attribute::default();
        let mut r = Reader::new(buf, "graph.node.attribute");
        while let Some((f, v)) = r.next()? {
            match f {
                1 => a.name = r.string(f, v)?,
                2 => a.f = r.float(f, v)?,
                3 => a.i = r.int(f, v)?,
                4 => a.s = r.bytes(f, v)?.to_vec(),
                5 => a.t = Some(TensorProto::decode(r.bytes(f, v)?, "attribute.t")?),
                7 => r.floats(f, v, &mut a.floats)?,
                8 => r.ints(f, v, &mut a.ints)?,
                20 => a.r#type = r.int(f, v)? as i32,
                6 | 10 | 11 | 13 | 14 | 15 | 22 | 23 => a.skipped = true,
                _ => {}
            }
        }
        Ok(a)
    }
}

impl TensorProto {
    fn decode(buf: &[u8], context: &str) -> Result<TensorProto> {
        let mut t = TensorProto::default();
        let mut r = Reader::new(buf, context);
        while let Some((f, v)) = r.next()? {
            match f {
                1 => r.ints(f, v, &mut t.dims)?,
                2 => t.data_type = r.int(f, v)? as i32,
                4 => r.floats(f, v, &mut t.float_data)?,
                5 => {
                    let mut ints = Vec::new();
                    r.ints(f, v, &mut ints)?;
                    t.int32_data.extend(ints.into_iter().map(|i| i as i32));
                }
                7 => r.ints(f, v, &mut t.int64_data)?,
                8 => t.name = r.string(f, v)?,
                9 => t.raw_data = r.bytes(f, v)?.to_vec(),
                10 => r.doubles(f, v, &mut t.double_data)?,
                13 => {
                    let mut r = Reader::new(r.bytes(f, v)?, "TensorProto.external_data");
                    let (mut key, mut value) = (String::new(), String::new());
                    while let Some((f, v)) = r.next()? {
                        match f {
                            1 => key = r.string(f, v)?,
                            2 => value = r.string(f, v)?,
                            _ => {}
                        }
                    }
                    t.external = true;
                    t.external_data.push((key, value));
                }
                14 => t.external |= r.int(f, v)? == 1,
                _ => {}
            }
        }
        Ok(t)
    }
}

impl ValueInfo {
    fn decode(buf: &[u8]) -> Result<ValueInfo> {
        let mut vi = ValueInfo::default();
        let mut r = Reader::new(buf, "graph.input/output");
        while let Some((f, v)) = r.next()? {
            match f {
                1 => vi.name = r.string(f, v)?,
                2 => {
                    // TypeProto: only tensor_type (1) matters.
                    let mut tr = Reader::new(r.bytes(f, v)?, "ValueInfoProto.type");
                    while let Some((f, v)) = tr.next()? {
                        if f != 1 {
                            continue;
                        }
                        let mut tt = Reader::new(tr.bytes(f, v)?, "TypeProto.tensor_type");
                        while let Some((f, v)) = tt.next()? {
                            match f {
                                1 => vi.elem_type = tt.int(f, v)? as i32,
                                2 => {
                                    let mut dims = Vec::new();
                                    let mut sr = Reader::new(tt.bytes(f, v)?, "TensorShapeProto");
                                    while let Some((f, v)) = sr.next()? {
                                        if f != 1 {
                                            continue;
                                        }
                                        let mut dr =
                                            Reader::new(sr.bytes(f, v)?, "TensorShapeProto.dim");
                                        let mut dim = Dim::Unknown;
                                        while let Some((f, v)) = dr.next()? {
                                            match f {
                                                1 => dim = Dim::Value(dr.int(f, v)?),
                                                2 => dim = Dim::Param(dr.string(f, v)?),
                                                _ => {}
                                            }
                                        }
                                        dims.push(dim);
                                    }
                                    vi.dims = Some(dims);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(vi)
    }
}

impl TensorProto {
    /// Number of elements the dims describe, or `None` for a negative dim
    /// or an overflow.
    pub fn numel(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
    }

    /// The values as `f32` (from any float or integer storage).
    pub fn to_f32(&self) -> std::result::Result<Vec<f32>, String> {
        let n = self.numel().ok_or("its dimensions are invalid")?;
        if self.external {
            return Err("its data is stored in an external file that was not loaded".into());
        }
        let values: Vec<f32> = match self.data_type {
            FLOAT if !self.raw_data.is_empty() => {
                if self.raw_data.len() != n.saturating_mul(4) {
                    return Err(format!(
                        "raw data has {} bytes for {n} floats",
                        self.raw_data.len()
                    ));
                }
                self.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            FLOAT => self.float_data.clone(),
            DOUBLE if !self.raw_data.is_empty() => self
                .raw_data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            DOUBLE => self.double_data.iter().map(|&v| v as f32).collect(),
            INT64 | INT32 => self.to_i64()?.into_iter().map(|v| v as f32).collect(),
            t => return Err(format!("data type {t} is not supported (float expected)")),
        };
        if values.len() != n {
            return Err(format!(
                "it has {} values for dimensions {:?}",
                values.len(),
                self.dims
            ));
        }
        Ok(values)
    }

    /// The values as `i64` (from integer storage).
    pub fn to_i64(&self) -> std::result::Result<Vec<i64>, String> {
        let n = self.numel().ok_or("its dimensions are invalid")?;
        if self.external {
            return Err("its data is stored in an external file that was not loaded".into());
        }
        let values: Vec<i64> = match self.data_type {
            INT64 if !self.raw_data.is_empty() => self
                .raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            INT64 => self.int64_data.clone(),
            INT32 if !self.raw_data.is_empty() => self
                .raw_data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            INT32 => self.int32_data.iter().map(|&v| i64::from(v)).collect(),
            t => return Err(format!("data type {t} is not supported (integer expected)")),
        };
        if values.len() != n {
            return Err(format!(
                "it has {} values for dimensions {:?}",
                values.len(),
                self.dims
            ));
        }
        Ok(values)
    }

    /// A float tensor stored as raw little-endian data.
    pub fn from_f32(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
        TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.to_string(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    /// An int64 tensor stored as raw little-endian data.
    pub fn from_i64(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
        TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: INT64,
            name: name.to_string(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_round_trips_through_the_wire_format() {
        let m = Model {
            ir_version: 8,
            opset_import: vec![OpsetId {
                domain: String::new(),
                version: 17,
            }],
            producer_name: "shufflekit".into(),
            producer_version: "0.1".into(),
            doc_string: String::new(),
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![NodeProto {
                    input: vec!["x".into(), "w".into()],
                    output: vec!["y".into()],
                    name: "conv".into(),
                    op_type: "Conv".into(),
                    domain: String::new(),
                    attribute: vec![Attribute {
                        name: "pads".into(),
                        r#type: ATTR_INTS,
                        ints: vec![1, 1, -1, 300],
                        ..Default::default()
                    }],
                }],
                initializer: vec![TensorProto::from_f32("w", &[2], &[1.5, -2.0])],
                input: vec![ValueInfo {
                    name: "x".into(),
                    elem_type: FLOAT,
                    dims: Some(vec![Dim::Param("N".into()), Dim::Value(3)]),
                }],
                output: vec![],
                doc_string: String::new(),
            }),
        };
        let bytes = m.encode();
        assert_eq!(Model::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let m = Model {
            ir_version: 8,
            graph: Some(GraphProto {
                name: "graph".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = m.encode();
        for n in 1..bytes.len() {
            // Every prefix either parses (a prefix can be a valid message) or
            // fails cleanly.
            let _ = Model::decode(&bytes[..n]);
        }
        assert!(Model::decode(&bytes[..bytes.len() - 2]).is_err());
        let e = Model::decode(b"\x0f\xff\xff").unwrap_err();
        assert!(e.to_string().contains("wire type 7"), "{e}");
    }
}
