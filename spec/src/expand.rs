//! Expansion of a loaded spec into a graph: parameters and derived values
//! are evaluated, blocks called, repeats unrolled, names made hierarchical,
//! references resolved, and every node shape-checked as it is added.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::expr::{self, Value};
use crate::load::{canonical_op, is_identifier, is_layer_name};
use crate::source::{suggest, token_len};
use crate::yaml::{Loc, ScalarStyle, Yaml, YamlKind};
use crate::{Overrides, ParamValues, Spec, SpecError};
use shufflekit_ir::graph::{Graph, NodeId, SourceLoc};
use shufflekit_ir::ops::{
    Arity, BatchNorm, ChannelShuffle, ChannelSlice, Conv2d, Linear, Op, Pool, SpecSyntax,
    SPEC_SYNTAX,
};
use shufflekit_ir::shape::{Shape, MAX_DIM};

/// The most nodes one spec may expand to.
pub const MAX_NODES: usize = 100_000;
/// The largest `repeat` count.
pub const MAX_REPEAT: usize = 10_000;
/// The most layer entries one expansion may visit (nested repeats of layers
/// that expand to nothing would otherwise take unbounded time).
pub const MAX_STEPS: usize = 1_000_000;
/// The deepest nesting of block calls.
const MAX_CALL_DEPTH: usize = 64;

impl Spec {
    /// The declared parameters with their default values (defaults that are
    /// expressions are evaluated).
    pub fn param_defaults(&self) -> Result<ParamValues, SpecError> {
        let mut b = Builder::new(self);
        b.eval_params(&[])?;
        Ok(self
            .params
            .iter()
            .filter_map(|(n, _)| b.globals.get(n).map(|v| (n.clone(), v.clone())))
            .collect())
    }

    /// Expands the spec with the given overrides into a verified graph.
    pub fn build(&self, overrides: &Overrides) -> Result<Graph, SpecError> {
        let mut b = Builder::new(self);
        b.eval_params(overrides)?;
        b.eval_lets()?;
        b.build()?;
        Ok(b.graph)
    }
}

/// A frame of the call stack, for "called from" notes.
struct Call {
    block: String,
    file: usize,
    loc: Loc,
    scope: String,
}

/// Where layers are being added: the file the YAML came from, the name
/// prefix, the values in scope, the scope's input and the previous layer.
#[derive(Clone)]
struct Ctx {
    file: usize,
    scope: String,
    env: Vec<HashMap<String, Value>>,
    input: NodeId,
    prev: NodeId,
}

impl Ctx {
    fn full_name(&self, short: &str) -> String {
        if self.scope.is_empty() {
            short.to_string()
        } else {
            format!("{}.{short}", self.scope)
        }
    }
}

struct Builder<'s> {
    spec: &'s Spec,
    graph: Graph,
    globals: HashMap<String, Value>,
    scope_outputs: HashMap<String, NodeId>,
    /// Per first-choice name, the suffix [`Builder::fresh_name`] tries next.
    fresh_next: RefCell<HashMap<String, usize>>,
    calls: Vec<Call>,
    steps: usize,
}

/// A field of a layer's parameter map, with where it is.
struct Fields<'y> {
    entries: Vec<(&'y str, &'y Yaml, &'y Yaml)>,
    /// Where the layer starts, for errors about missing fields.
    at: Loc,
}

impl<'s> Builder<'s> {
    fn new(spec: &'s Spec) -> Self {
        Builder {
            spec,
            graph: Graph::new(spec.name.clone()),
            globals: HashMap::new(),
            scope_outputs: HashMap::new(),
            fresh_next: RefCell::new(HashMap::new()),
            calls: Vec::new(),
            steps: 0,
        }
    }

    /// An error inside the current expansion, with "called from" notes.
    fn err(&self, file: usize, loc: Loc, len: usize, message: String) -> SpecError {
        let mut e = self.spec.error(file, loc, len, message);
        self.add_call_notes(&mut e);
        e
    }

    fn add_call_notes(&self, e: &mut SpecError) {
        for call in self.calls.iter().rev() {
            let f = &self.spec.files[call.file];
            e.notes.push(format!(
                "in block `{}` called as `{}` at {}:{}:{}",
                call.block, call.scope, f.name, call.loc.line, call.loc.col
            ));
        }
    }

    fn eval_params(&mut self, overrides: &Overrides) -> Result<(), SpecError> {
        for (name, _) in overrides {
            if !self.spec.params.iter().any(|(p, _)| p == name) {
                let mut e = SpecError::global(
                    "<command line>",
                    format!(
                        "`--set {name}=...`: the spec `{}` has no parameter `{name}`",
                        self.spec.name
                    ),
                );
                if let Some(s) = suggest(name, self.spec.param_names()) {
                    e.notes.push(format!("did you mean `{s}`?"));
                }
                e.notes.push(format!(
                    "parameters: {}",
                    self.spec.param_names().join(", ")
                ));
                return Err(e);
            }
        }
        for (name, default) in &self.spec.params {
            let value = match overrides.iter().rev().find(|(n, _)| n == name) {
                Some((_, text)) => {
                    let env = vec![];
                    let parsed = expr::parse(text).and_then(|e| e.eval(&|n| self.lookup(&env, n)));
                    parsed.map_err(|e| {
                        SpecError::global(
                            "<command line>",
                            format!("`--set {name}={text}`: {}", e.message),
                        )
                    })?
                }
                None => self.eval(0, &[], default)?,
            };
            self.globals.insert(name.clone(), value);
        }
        Ok(())
    }

    fn eval_lets(&mut self) -> Result<(), SpecError> {
        for (name, node) in &self.spec.lets {
            let value = self.eval(0, &[], node)?;
            self.globals.insert(name.clone(), value);
        }
        Ok(())
    }

    fn lookup(&self, env: &[HashMap<String, Value>], name: &str) -> Option<Value> {
        env.iter()
            .rev()
            .find_map(|frame| frame.get(name))
            .or_else(|| self.globals.get(name))
            .cloned()
    }

    /// Evaluates a YAML value: numbers and bools as they are, strings as
    /// expressions, lists element by element.
    fn eval(
        &self,
        file: usize,
        env: &[HashMap<String, Value>],
        node: &Yaml,
    ) -> Result<Value, SpecError> {
        match &node.kind {
            YamlKind::Int(i) => Ok(Value::Int(*i)),
            YamlKind::Float(f) => Ok(Value::Float(*f)),
            YamlKind::Bool(b) => Ok(Value::Bool(*b)),
            YamlKind::Seq(items) => items
                .iter()
                .map(|i| self.eval(file, env, i))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
            YamlKind::Str(src) => {
                let text = &self.spec.files[file].text;
                let start = node.loc.offset + usize::from(node.style == ScalarStyle::Quoted);
                let mappable = text
                    .get(start..)
                    .is_some_and(|t| t.starts_with(src.as_str()));
                let result = expr::parse(src).and_then(|e| e.eval(&|n| self.lookup(env, n)));
                result.map_err(|e| {
                    let mut err = if mappable {
                        self.spec.error_at_offset(
                            file,
                            start + e.offset,
                            e.len.max(1),
                            e.message.clone(),
                        )
                    } else {
                        self.spec
                            .error(file, node.loc, src.len(), e.message.clone())
                    };
                    if !mappable || e.offset > 0 || e.len < src.len() {
                        err.notes.push(format!("in the expression `{src}`"));
                    }
                    self.add_call_notes(&mut err);
                    err
                })
            }
            YamlKind::Null | YamlKind::Map(_) => Err({
                let mut e = self.spec.type_error(
                    file,
                    node,
                    "a value",
                    "a number, a bool, a list or an expression",
                );
                self.add_call_notes(&mut e);
                e
            }),
        }
    }

    fn build(&mut self) -> Result<(), SpecError> {
        let spec = self.spec;
        let dims = self.eval(0, &[], &spec.input)?;
        let dims = match dims {
            Value::List(items) if items.len() == 3 => items
                .iter()
                .map(|v| self.to_count(0, &spec.input, "input", v, 1))
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(self.err(
                    0,
                    spec.input.loc,
                    1,
                    format!("`input` must be a list [channels, height, width], found {other}"),
                ))
            }
        };
        let input = self.add_node(
            &Ctx {
                file: 0,
                scope: String::new(),
                env: vec![],
                input: NodeId(Default::default()),
                prev: NodeId(Default::default()),
            },
            Op::Input(Shape::chw(dims[0], dims[1], dims[2])),
            "input".into(),
            &[],
            spec.input.loc,
        )?;
        let mut ctx = Ctx {
            file: 0,
            scope: String::new(),
            env: vec![],
            input,
            prev: input,
        };
        self.layers(&mut ctx, &spec.layers)?;
        if let Some(out) = &spec.output {
            let name = spec.string(0, out, "output")?;
            let id = self.resolve(&ctx, &name, out)?;
            self.graph.set_output(id);
        } else {
            self.graph.set_output(ctx.prev);
        }
        if let Err(errors) = shufflekit_ir::verify::verify(&self.graph) {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Err(SpecError::global(
                &spec.files[0].name,
                format!("the graph is invalid: {}", text.join("; ")),
            ));
        }
        Ok(())
    }

    fn layers(&mut self, ctx: &mut Ctx, list: &Yaml) -> Result<(), SpecError> {
        let YamlKind::Seq(items) = &list.kind else {
            return Err(self.err(
                ctx.file,
                list.loc,
                1,
                format!(
                    "`layers` must be a list of layers, found {}",
                    list.type_name()
                ),
            ));
        };
        for item in items {
            self.entry(ctx, item)?;
        }
        Ok(())
    }

    fn entry(&mut self, ctx: &mut Ctx, item: &Yaml) -> Result<(), SpecError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.err(
                ctx.file,
                item.loc,
                1,
                format!("the spec takes more than {MAX_STEPS} expansion steps (nested repeats?)"),
            ));
        }
        match &item.kind {
            YamlKind::Str(key) => self.dispatch(ctx, key, None, item),
            YamlKind::Map(entries) => {
                let mut body = Vec::new();
                let (mut cond, mut repeat) = (None, None);
                for (k, v) in entries {
                    match self.spec.key_str(ctx.file, k)? {
                        "if" => cond = Some(v),
                        "repeat" => repeat = Some((k, v)),
                        key => body.push((key, k, v)),
                    }
                }
                if let Some(c) = cond {
                    match self.eval(ctx.file, &ctx.env, c)? {
                        Value::Bool(true) => {}
                        Value::Bool(false) => return Ok(()),
                        other => {
                            return Err(self.err(
                                ctx.file,
                                c.loc,
                                1,
                                format!("`if` needs a bool, found {} `{other}`", other.type_name()),
                            ))
                        }
                    }
                }
                if let Some((rk, rv)) = repeat {
                    return self.repeat(ctx, rk, rv, &body, item);
                }
                match body.as_slice() {
                    [(key, k, v)] => self.dispatch(ctx, key, Some(v), k),
                    [] => Err(self.err(ctx.file, item.loc, 1, "this layer names no op or block".into())),
                    [_, (key, k, _), ..] => Err(self.err(
                        ctx.file,
                        k.loc,
                        key.len(),
                        format!(
                            "one layer entry may hold one op or block, but `{key}` follows `{}` (start a new list item with `-`)",
                            body[0].0
                        ),
                    )),
                }
            }
            _ => Err(self.err(
                ctx.file,
                item.loc,
                1,
                format!(
                    "a layer must be an op name or a map like `conv: {{out: 8, kernel: 3}}`, found {}",
                    item.type_name()
                ),
            )),
        }
    }

    fn repeat(
        &mut self,
        ctx: &mut Ctx,
        key: &Yaml,
        spec: &Yaml,
        body: &[(&str, &Yaml, &Yaml)],
        item: &Yaml,
    ) -> Result<(), SpecError> {
        let file = ctx.file;
        let (count_node, mut index, mut name, mut layers) = (None::<&Yaml>, None, None, None);
        let mut count_node = count_node;
        match &spec.kind {
            YamlKind::Map(entries) => {
                for (k, v) in entries {
                    match self.spec.key_str(file, k)? {
                        "count" => count_node = Some(v),
                        "index" => index = Some(self.spec.string(file, v, "index")?),
                        "name" => name = Some(self.spec.string(file, v, "name")?),
                        "layers" => layers = Some(v),
                        other => {
                            return Err(self.with_calls(self.spec.unknown_key(
                                file,
                                k,
                                other,
                                &["count", "index", "name", "layers"],
                                "key of `repeat`",
                            )))
                        }
                    }
                }
            }
            _ => count_node = Some(spec),
        }
        let count_node = count_node
            .ok_or_else(|| self.err(file, key.loc, 6, "`repeat` needs a `count`".into()))?;
        let count_value = self.eval(file, &ctx.env, count_node)?;
        let count = self.to_count(file, count_node, "count", &count_value, 0)?;
        if count > MAX_REPEAT {
            return Err(self.err(
                file,
                count_node.loc,
                1,
                format!("repeat count {count} is more than the limit {MAX_REPEAT}"),
            ));
        }
        if let Some(i) = &index {
            if !is_identifier(i) {
                return Err(self.err(
                    file,
                    spec.loc,
                    1,
                    format!("index `{i}` is not a valid name"),
                ));
            }
        }
        let single = match (layers, body) {
            (Some(_), []) => None,
            (None, [one]) => Some(*one),
            (Some(_), [(k, kn, _), ..]) => {
                return Err(self.err(
                    file,
                    kn.loc,
                    k.len(),
                    format!("`repeat` has `layers` and also `{k}`: give one or the other"),
                ))
            }
            (None, []) => {
                return Err(self.err(file, item.loc, 1, "`repeat` has nothing to repeat".into()))
            }
            (None, [_, (k, kn, _), ..]) => {
                return Err(self.err(
                    file,
                    kn.loc,
                    k.len(),
                    format!("`repeat` may repeat one op or block; `{k}` is a second"),
                ))
            }
        };
        let prefix = name.unwrap_or_else(|| {
            single
                .map(|(k, _, _)| k.to_string())
                .unwrap_or("rep".into())
        });
        if !is_layer_name(&prefix) {
            return Err(self.err(
                file,
                spec.loc,
                1,
                format!("repeat name `{prefix}` is not a valid layer name"),
            ));
        }
        for k in 0..count {
            let scope = ctx.full_name(&format!("{prefix}{}", k + 1));
            let mut frame = HashMap::new();
            if let Some(i) = &index {
                frame.insert(i.clone(), Value::Int(k as i64));
            }
            let mut inner = ctx.clone();
            inner.env.push(frame);
            inner.input = ctx.prev;
            match single {
                Some((key, kn, v)) if self.spec.blocks.contains_key(key) => {
                    let out = self.call(&mut inner, key, Some(v), kn, Some(scope.clone()))?;
                    ctx.prev = out;
                }
                Some((key, kn, v)) => {
                    inner.scope = scope.clone();
                    self.dispatch(&mut inner, key, Some(v), kn)?;
                    ctx.prev = inner.prev;
                }
                None => {
                    inner.scope = scope.clone();
                    self.layers(&mut inner, layers.unwrap_or(spec))?;
                    ctx.prev = inner.prev;
                }
            }
            self.scope_outputs.insert(scope, ctx.prev);
        }
        Ok(())
    }

    fn with_calls(&self, mut e: SpecError) -> SpecError {
        self.add_call_notes(&mut e);
        e
    }

    fn dispatch(
        &mut self,
        ctx: &mut Ctx,
        key: &str,
        value: Option<&Yaml>,
        at: &Yaml,
    ) -> Result<(), SpecError> {
        if key == "seq" {
            return self.seq(ctx, value, at);
        }
        if let Some(op) = canonical_op(key) {
            return self.op(ctx, op, value, at);
        }
        if self.spec.blocks.contains_key(key) {
            let out = self.call(ctx, key, value, at, None)?;
            ctx.prev = out;
            return Ok(());
        }
        let mut valid: Vec<&str> = SPEC_SYNTAX.iter().map(|s| s.key).collect();
        let mut blocks: Vec<&str> = self.spec.blocks.keys().map(String::as_str).collect();
        blocks.sort();
        valid.extend(&blocks);
        valid.push("seq");
        let mut e = self.err(
            ctx.file,
            at.loc,
            key.len(),
            format!("unknown op or block `{key}`"),
        );
        if let Some(s) = suggest(key, valid.iter().copied()) {
            e.notes.insert(0, format!("did you mean `{s}`?"));
        }
        e.notes.push(format!(
            "ops: {}",
            SPEC_SYNTAX
                .iter()
                .map(|s| s.key)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if !blocks.is_empty() {
            e.notes.push(format!("blocks: {}", blocks.join(", ")));
        }
        Err(e)
    }

    fn fields<'y>(
        &self,
        ctx: &Ctx,
        value: Option<&'y Yaml>,
        what: &str,
        at: &Yaml,
    ) -> Result<Fields<'y>, SpecError> {
        let mut entries = Vec::new();
        match value.map(|v| &v.kind) {
            None | Some(YamlKind::Null) => {}
            Some(YamlKind::Map(map)) => {
                for (k, v) in map {
                    entries.push((self.spec.key_str(ctx.file, k)?, k, v));
                }
            }
            Some(_) => {
                let v = value.expect("matched Some");
                return Err(self.with_calls(self.spec.type_error(
                    ctx.file,
                    v,
                    what,
                    "a map of fields like `{out: 8}`",
                )));
            }
        }
        Ok(Fields {
            entries,
            at: at.loc,
        })
    }

    fn seq(&mut self, ctx: &mut Ctx, value: Option<&Yaml>, at: &Yaml) -> Result<(), SpecError> {
        let mut f = self.fields(ctx, value, "`seq`", at)?;
        self.reject_unknown(ctx, &f, &["name", "from", "layers"])?;
        let name = self.name_field(ctx, &mut f)?;
        let from = f.take("from").map(|(_, v)| v);
        let layers = f.take("layers").map(|(_, v)| v);
        let layers =
            layers.ok_or_else(|| self.err(ctx.file, at.loc, 3, "`seq` needs `layers`".into()))?;
        let mut inner = ctx.clone();
        if let Some(from) = from {
            inner.prev = self.single_input(ctx, from, "seq")?;
        }
        inner.input = inner.prev;
        if let Some((n, k)) = &name {
            inner.scope = ctx.full_name(n);
            self.check_free(ctx, &inner.scope, k)?;
        }
        self.layers(&mut inner, layers)?;
        ctx.prev = inner.prev;
        if name.is_some() {
            self.scope_outputs.insert(inner.scope, inner.prev);
        }
        Ok(())
    }

    fn call(
        &mut self,
        ctx: &mut Ctx,
        block_name: &str,
        value: Option<&Yaml>,
        at: &Yaml,
        scope: Option<String>,
    ) -> Result<NodeId, SpecError> {
        let spec = self.spec;
        let block = &spec.blocks[block_name];
        if let Some(pos) = self.calls.iter().position(|c| c.block == block_name) {
            let chain: Vec<&str> = self.calls[pos..].iter().map(|c| c.block.as_str()).collect();
            return Err(self.err(
                ctx.file,
                at.loc,
                block_name.len(),
                format!("block recursion: {} -> {block_name}", chain.join(" -> ")),
            ));
        }
        if self.calls.len() >= MAX_CALL_DEPTH {
            return Err(self.err(
                ctx.file,
                at.loc,
                block_name.len(),
                "blocks are nested too deeply".into(),
            ));
        }
        let mut f = self.fields(
            ctx,
            value,
            &format!("the arguments of block `{block_name}`"),
            at,
        )?;
        let mut valid = vec!["name", "from"];
        valid.extend(block.arg_names());
        self.reject_unknown(ctx, &f, &valid)?;
        let name = self.name_field(ctx, &mut f)?;
        let from = f.take("from").map(|(_, v)| v);
        let input = match from {
            Some(from) => self.single_input(ctx, from, block_name)?,
            None => ctx.prev,
        };
        let scope = match (scope, &name) {
            (Some(s), _) => s,
            (None, Some((n, k))) => {
                let s = ctx.full_name(n);
                self.check_free(ctx, &s, k)?;
                s
            }
            (None, None) => self.fresh_name(ctx, block_name),
        };
        let mut frame: HashMap<String, Value> = HashMap::new();
        let in_shape = &self.graph.node(input).shape;
        let dims = in_shape.dims();
        for (k, key) in ["in_channels", "in_height", "in_width"]
            .into_iter()
            .enumerate()
        {
            if let Some(&d) = dims.get(k) {
                frame.insert(key.to_string(), Value::Int(d as i64));
            }
        }
        for (arg, default) in &block.args {
            let value = match f.take(arg) {
                Some((_, v)) => self.eval(ctx.file, &ctx.env, v)?,
                None => match default {
                    Some(d) => self.eval(block.file, &[frame.clone()], d)?,
                    None => {
                        return Err(self.err(
                            ctx.file,
                            at.loc,
                            block_name.len(),
                            format!("block `{block_name}` needs the argument `{arg}`"),
                        ))
                    }
                },
            };
            frame.insert(arg.clone(), value);
        }
        self.calls.push(Call {
            block: block_name.to_string(),
            file: ctx.file,
            loc: at.loc,
            scope: scope.clone(),
        });
        for (n, v) in &block.lets {
            let value = self.eval(block.file, &[frame.clone()], v)?;
            frame.insert(n.clone(), value);
        }
        let mut inner = Ctx {
            file: block.file,
            scope: scope.clone(),
            env: vec![frame],
            input,
            prev: input,
        };
        self.layers(&mut inner, &block.layers)?;
        self.calls.pop();
        self.scope_outputs.insert(scope, inner.prev);
        Ok(inner.prev)
    }

    /// The first free name of `base`, `base_1`, `base_2`, ... in the scope.
    /// Names are never freed, so the search for a base resumes where the
    /// last one stopped: a chain of n unnamed layers takes O(n), not O(n^2).
    fn fresh_name(&self, ctx: &Ctx, base: &str) -> String {
        let taken = |n: &str| self.graph.find(n).is_some() || self.scope_outputs.contains_key(n);
        let first = ctx.full_name(base);
        if !taken(&first) {
            return first;
        }
        let mut next = self.fresh_next.borrow_mut();
        let k = next.entry(first).or_insert(1);
        loop {
            let name = ctx.full_name(&format!("{base}_{k}"));
            if !taken(&name) {
                return name;
            }
            *k += 1;
        }
    }

    fn check_free(&self, ctx: &Ctx, full: &str, key: &Yaml) -> Result<(), SpecError> {
        if self.graph.find(full).is_some() || self.scope_outputs.contains_key(full) {
            return Err(self.err(
                ctx.file,
                key.loc,
                1,
                format!("the name `{full}` is already used"),
            ));
        }
        Ok(())
    }

    fn name_field<'y>(
        &self,
        ctx: &Ctx,
        f: &mut Fields<'y>,
    ) -> Result<Option<(String, &'y Yaml)>, SpecError> {
        let Some((_, v)) = f.take("name") else {
            return Ok(None);
        };
        let name = self
            .spec
            .string(ctx.file, v, "name")
            .map_err(|e| self.with_calls(e))?;
        if !is_layer_name(&name) {
            return Err(self.err(
                ctx.file,
                v.loc,
                name.len(),
                format!("layer name `{name}` may use only letters, digits, `_` and `-`"),
            ));
        }
        if name == "in" {
            return Err(self.err(
                ctx.file,
                v.loc,
                2,
                "`in` is reserved for the input of a block".into(),
            ));
        }
        Ok(Some((name, v)))
    }

    fn refs(&self, ctx: &Ctx, from: &Yaml) -> Result<Vec<NodeId>, SpecError> {
        match &from.kind {
            YamlKind::Str(s) => Ok(vec![self.resolve(ctx, s, from)?]),
            YamlKind::Seq(items) => items
                .iter()
                .map(|i| match &i.kind {
                    YamlKind::Str(s) => self.resolve(ctx, s, i),
                    _ => Err(self.with_calls(self.spec.type_error(
                        ctx.file,
                        i,
                        "a `from` entry",
                        "a layer name",
                    ))),
                })
                .collect(),
            _ => Err(self.with_calls(self.spec.type_error(
                ctx.file,
                from,
                "`from`",
                "a layer name or a list of them",
            ))),
        }
    }

    fn single_input(&self, ctx: &Ctx, from: &Yaml, what: &str) -> Result<NodeId, SpecError> {
        let ids = self.refs(ctx, from)?;
        match ids.as_slice() {
            [one] => Ok(*one),
            _ => Err(self.err(
                ctx.file,
                from.loc,
                1,
                format!("`{what}` takes one input, `from` names {}", ids.len()),
            )),
        }
    }

    /// Resolves a layer reference: `in` is the current scope's input;
    /// otherwise the name is looked up in the current scope, then each
    /// enclosing scope out to the top.
    fn resolve(&self, ctx: &Ctx, name: &str, at: &Yaml) -> Result<NodeId, SpecError> {
        if name == "in" {
            return Ok(ctx.input);
        }
        let mut scope = ctx.scope.as_str();
        loop {
            let full = if scope.is_empty() {
                name.to_string()
            } else {
                format!("{scope}.{name}")
            };
            if let Some(id) = self
                .graph
                .find(&full)
                .or_else(|| self.scope_outputs.get(&full).copied())
            {
                return Ok(id);
            }
            if scope.is_empty() {
                break;
            }
            scope = scope.rfind('.').map(|i| &scope[..i]).unwrap_or("");
        }
        let local: Vec<&str> = self
            .graph
            .nodes()
            .map(|id| self.graph.node(id).name.as_str())
            .filter_map(|n| {
                if ctx.scope.is_empty() {
                    Some(n)
                } else {
                    n.strip_prefix(ctx.scope.as_str())
                        .and_then(|r| r.strip_prefix('.'))
                }
            })
            .collect();
        let mut e = self.err(
            ctx.file,
            at.loc,
            name.len() + usize::from(at.style == ScalarStyle::Quoted) * 2,
            format!("no layer named `{name}` before this point"),
        );
        if let Some(s) = suggest(name, local.iter().copied()) {
            e.notes.insert(0, format!("did you mean `{s}`?"));
        }
        Err(e)
    }

    fn reject_unknown(&self, ctx: &Ctx, f: &Fields, valid: &[&str]) -> Result<(), SpecError> {
        for (key, k, _) in &f.entries {
            if !valid.contains(key) {
                return Err(
                    self.with_calls(self.spec.unknown_key(ctx.file, k, key, valid, "field"))
                );
            }
        }
        Ok(())
    }

    fn to_count(
        &self,
        file: usize,
        node: &Yaml,
        field: &str,
        v: &Value,
        min: usize,
    ) -> Result<usize, SpecError> {
        let n = match v {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            Value::Float(x) if x.fract() == 0.0 && *x >= 0.0 && *x <= 9.0e15 => Some(*x as u64),
            _ => None,
        };
        let what = if min == 0 {
            "a non-negative integer"
        } else {
            "a positive integer"
        };
        match n {
            Some(n) if n >= min as u64 && n <= MAX_DIM as u64 => Ok(n as usize),
            Some(n) if n > MAX_DIM as u64 => Err(self.err(
                file,
                node.loc,
                token_len(&self.spec.files[file].text, node.loc.offset),
                format!("`{field}` is {n}, more than the size limit {MAX_DIM}"),
            )),
            _ => {
                let mut e = self.err(
                    file,
                    node.loc,
                    token_len(&self.spec.files[file].text, node.loc.offset),
                    format!("`{field}` must be {what}, got {} `{v}`", v.type_name()),
                );
                if let YamlKind::Str(src) = &node.kind {
                    e.notes.insert(0, format!("`{src}` evaluated to {v}"));
                }
                Err(e)
            }
        }
    }

    fn count_field(
        &self,
        ctx: &Ctx,
        f: &mut Fields,
        field: &str,
        default: Option<usize>,
        min: usize,
    ) -> Result<usize, SpecError> {
        match f.take(field) {
            Some((_, v)) => {
                let value = self.eval(ctx.file, &ctx.env, v)?;
                self.to_count(ctx.file, v, field, &value, min)
            }
            None => default.ok_or_else(|| self.missing(ctx, f, field)),
        }
    }

    fn missing(&self, ctx: &Ctx, f: &Fields, field: &str) -> SpecError {
        self.err(ctx.file, f.at, 1, format!("missing field `{field}`"))
    }

    fn pair_field(
        &self,
        ctx: &Ctx,
        f: &mut Fields,
        field: &str,
        default: Option<[usize; 2]>,
        min: usize,
    ) -> Result<[usize; 2], SpecError> {
        let Some((_, v)) = f.take(field) else {
            return default.ok_or_else(|| self.missing(ctx, f, field));
        };
        match self.eval(ctx.file, &ctx.env, v)? {
            Value::List(items) if items.len() == 2 => Ok([
                self.to_count(ctx.file, v, field, &items[0], min)?,
                self.to_count(ctx.file, v, field, &items[1], min)?,
            ]),
            Value::List(items) => Err(self.err(
                ctx.file,
                v.loc,
                1,
                format!(
                    "`{field}` must be one integer or a pair [height, width], got a list of {}",
                    items.len()
                ),
            )),
            x => {
                let n = self.to_count(ctx.file, v, field, &x, min)?;
                Ok([n, n])
            }
        }
    }

    fn bool_field(
        &self,
        ctx: &Ctx,
        f: &mut Fields,
        field: &str,
        default: bool,
    ) -> Result<bool, SpecError> {
        let Some((_, v)) = f.take(field) else {
            return Ok(default);
        };
        match self.eval(ctx.file, &ctx.env, v)? {
            Value::Bool(b) => Ok(b),
            x => Err(self.err(
                ctx.file,
                v.loc,
                1,
                format!(
                    "`{field}` must be true or false, got {} `{x}`",
                    x.type_name()
                ),
            )),
        }
    }

    fn float_field(
        &self,
        ctx: &Ctx,
        f: &mut Fields,
        field: &str,
        default: f64,
    ) -> Result<f64, SpecError> {
        let Some((_, v)) = f.take(field) else {
            return Ok(default);
        };
        match self.eval(ctx.file, &ctx.env, v)? {
            Value::Float(x) if x.is_finite() && x > 0.0 => Ok(x),
            Value::Int(i) if i > 0 => Ok(i as f64),
            x => Err(self.err(
                ctx.file,
                v.loc,
                1,
                format!("`{field}` must be a positive number, got `{x}`"),
            )),
        }
    }

    fn op(
        &mut self,
        ctx: &mut Ctx,
        kind: &'static str,
        value: Option<&Yaml>,
        at: &Yaml,
    ) -> Result<(), SpecError> {
        let mut f = self.fields(ctx, value, &format!("the fields of `{kind}`"), at)?;
        self.reject_unknown(ctx, &f, &op_fields(kind))?;
        let name = self.name_field(ctx, &mut f)?;
        let from = f.take("from").map(|(_, v)| v);
        let mut inputs = match from {
            Some(v) => self.refs(ctx, v)?,
            None => vec![ctx.prev],
        };
        let op = if let Some(op) = Op::from_bare_spec_key(kind) {
            op
        } else {
            match kind {
                "conv" => Op::Conv2d(Conv2d {
                    out_channels: self.count_field(ctx, &mut f, "out", None, 1)?,
                    kernel: self.pair_field(ctx, &mut f, "kernel", None, 1)?,
                    stride: self.pair_field(ctx, &mut f, "stride", Some([1, 1]), 1)?,
                    padding: self.pair_field(ctx, &mut f, "padding", Some([0, 0]), 0)?,
                    dilation: self.pair_field(ctx, &mut f, "dilation", Some([1, 1]), 1)?,
                    groups: self.count_field(ctx, &mut f, "groups", Some(1), 1)?,
                    bias: self.bool_field(ctx, &mut f, "bias", false)?,
                    ..Conv2d::new(1, 1)
                }),
                "batch_norm" => Op::BatchNorm(BatchNorm {
                    eps: self.float_field(ctx, &mut f, "eps", 1e-5)? as f32,
                }),
                "channel_shuffle" => Op::ChannelShuffle(ChannelShuffle {
                    groups: self.count_field(ctx, &mut f, "groups", None, 1)?,
                }),
                "max_pool" | "avg_pool" => {
                    let kernel = self.pair_field(ctx, &mut f, "kernel", None, 1)?;
                    let pool = Pool {
                        kernel,
                        stride: self.pair_field(ctx, &mut f, "stride", Some(kernel), 1)?,
                        padding: self.pair_field(ctx, &mut f, "padding", Some([0, 0]), 0)?,
                        ceil_mode: self.bool_field(ctx, &mut f, "ceil_mode", false)?,
                        count_include_pad: if kind == "avg_pool" {
                            self.bool_field(ctx, &mut f, "count_include_pad", true)?
                        } else {
                            true
                        },
                    };
                    if kind == "max_pool" {
                        Op::MaxPool(pool)
                    } else {
                        Op::AvgPool(pool)
                    }
                }
                "slice" => {
                    let start = self.count_field(ctx, &mut f, "start", Some(0), 0)?;
                    let len = match (f.has("len"), f.has("end")) {
                        (true, false) => self.count_field(ctx, &mut f, "len", None, 1)?,
                        (false, true) => {
                            let end = self.count_field(ctx, &mut f, "end", None, 1)?;
                            if end <= start {
                                return Err(self.err(
                                    ctx.file,
                                    at.loc,
                                    kind.len(),
                                    format!("slice end {end} is not after start {start}"),
                                ));
                            }
                            end - start
                        }
                        _ => {
                            return Err(self.err(
                                ctx.file,
                                at.loc,
                                kind.len(),
                                "`slice` needs exactly one of `len` and `end`".into(),
                            ))
                        }
                    };
                    Op::ChannelSlice(ChannelSlice { start, len })
                }
                "split" => return self.split(ctx, f, name, inputs, at),
                "linear" => Op::Linear(Linear {
                    out_features: self.count_field(ctx, &mut f, "out", None, 1)?,
                    bias: self.bool_field(ctx, &mut f, "bias", true)?,
                }),
                _ => unreachable!("canonical op names are matched above"),
            }
        };
        // Ops of several inputs name them all in `from`.
        let single = op.arity() == Arity::Exactly(1);
        if !single && from.is_none() {
            return Err(self.err(
                ctx.file,
                at.loc,
                kind.len(),
                format!("`{kind}` needs `from: [a, b, ...]` naming its inputs"),
            ));
        }
        if let (Some(v), Arity::Exactly(n)) = (from, op.arity()) {
            if n > 1 && inputs.len() != n {
                let n = if n == 2 { "two".into() } else { n.to_string() };
                return Err(self.err(
                    ctx.file,
                    v.loc,
                    1,
                    format!("`{kind}` takes {n} inputs, `from` names {}", inputs.len()),
                ));
            }
        }
        if single && inputs.len() != 1 {
            let v = from.expect("more than one input comes from `from`");
            return Err(self.err(
                ctx.file,
                v.loc,
                1,
                format!("`{kind}` takes one input, `from` names {}", inputs.len()),
            ));
        }
        let full = match &name {
            Some((n, k)) => {
                let full = ctx.full_name(n);
                self.check_free(ctx, &full, k)?;
                full
            }
            None => self.fresh_name(ctx, kind),
        };
        let id = self.add_node(ctx, op, full, &std::mem::take(&mut inputs), at.loc)?;
        ctx.prev = id;
        Ok(())
    }

    fn split(
        &mut self,
        ctx: &mut Ctx,
        mut f: Fields,
        name: Option<(String, &Yaml)>,
        inputs: Vec<NodeId>,
        at: &Yaml,
    ) -> Result<(), SpecError> {
        let [input] = inputs[..] else {
            return Err(self.err(ctx.file, at.loc, 5, "`split` takes one input".into()));
        };
        let channels = self.graph.node(input).shape.channels();
        let sizes: Vec<usize> = match (f.take("sizes"), f.take("parts")) {
            (Some((_, v)), None) => match self.eval(ctx.file, &ctx.env, v)? {
                Value::List(items) => items
                    .iter()
                    .map(|x| self.to_count(ctx.file, v, "sizes", x, 1))
                    .collect::<Result<_, _>>()?,
                x => {
                    return Err(self.err(
                        ctx.file,
                        v.loc,
                        1,
                        format!("`sizes` must be a list, got `{x}`"),
                    ))
                }
            },
            (None, Some((_, v))) => {
                let value = self.eval(ctx.file, &ctx.env, v)?;
                let parts = self.to_count(ctx.file, v, "parts", &value, 1)?;
                if !channels.is_multiple_of(parts) {
                    return Err(self.err(
                        ctx.file,
                        v.loc,
                        1,
                        format!("{channels} channels do not split into {parts} equal parts"),
                    ));
                }
                vec![channels / parts; parts]
            }
            _ => {
                return Err(self.err(
                    ctx.file,
                    at.loc,
                    5,
                    "`split` needs exactly one of `sizes` and `parts`".into(),
                ))
            }
        };
        let total: usize = sizes.iter().sum();
        if total != channels {
            return Err(self.err(
                ctx.file,
                at.loc,
                5,
                format!("split sizes add up to {total}, but the input has {channels} channels"),
            ));
        }
        let base = match &name {
            Some((n, k)) => {
                let full = ctx.full_name(n);
                self.check_free(ctx, &full, k)?;
                full
            }
            None => self.fresh_name(ctx, "split"),
        };
        let mut start = 0;
        let mut last = input;
        for (k, len) in sizes.into_iter().enumerate() {
            last = self.add_node(
                ctx,
                Op::ChannelSlice(ChannelSlice { start, len }),
                format!("{base}.{k}"),
                &[input],
                at.loc,
            )?;
            start += len;
        }
        self.scope_outputs.insert(base, last);
        ctx.prev = last;
        Ok(())
    }

    fn add_node(
        &mut self,
        ctx: &Ctx,
        op: Op,
        name: String,
        inputs: &[NodeId],
        loc: Loc,
    ) -> Result<NodeId, SpecError> {
        let file = &self.spec.files[ctx.file];
        if self.graph.len() >= MAX_NODES {
            return Err(self.err(
                ctx.file,
                loc,
                1,
                format!("the spec expands to more than {MAX_NODES} layers"),
            ));
        }
        let source = SourceLoc {
            file: file.name.clone(),
            line: loc.line,
            col: loc.col,
        };
        let kind = op.kind();
        self.graph
            .add(op, name.clone(), inputs, Some(source))
            .map_err(|e| {
                let mut err = self.err(
                    ctx.file,
                    loc,
                    token_len(&file.text, loc.offset),
                    format!("{kind}: {}", e.message),
                );
                err.layer = Some(name.clone());
                if !inputs.is_empty() {
                    let shapes: Vec<String> = inputs
                        .iter()
                        .map(|&i| {
                            format!("`{}` {}", self.graph.node(i).name, self.graph.node(i).shape)
                        })
                        .collect();
                    err.notes.insert(0, format!("input: {}", shapes.join(", ")));
                }
                err
            })
    }
}

/// The fields a layer of this op key accepts: `name`, `from` and the op's own.
fn op_fields(kind: &str) -> Vec<&'static str> {
    let mut v = vec!["name", "from"];
    v.extend_from_slice(SpecSyntax::find(kind).map_or(&[][..], |s| s.fields));
    v
}

impl<'y> Fields<'y> {
    fn take(&mut self, key: &str) -> Option<(&'y Yaml, &'y Yaml)> {
        let found = self.entries.iter().find(|(k, _, _)| *k == key)?;
        Some((found.1, found.2))
    }

    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| *k == key)
    }
}
