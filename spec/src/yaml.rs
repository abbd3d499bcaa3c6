//! YAML in, one located tree out: the only module of shufflekit that touches a
//! YAML library.
//!
//! Users write specs in YAML and expect every error to point at the file, line
//! and column of the offending text, so [`parse`] returns a [`Yaml`] tree in
//! which every node and every map key carries the [`Loc`] where it starts.
//!
//! # Why two libraries
//!
//! * **serde_yaml 0.9** is the parser of record. It decides what the document
//!   means (how every scalar is typed, see below) and whether it is
//!   well-formed: syntax errors carry its message and its location.
//! * **saphyr-parser 0.3** is used *only* for its event stream, whose events
//!   carry source spans, because serde_yaml has no span API. From those events
//!   this module learns where each node and each map key starts, and it checks
//!   the rules below (tags, merge keys, duplicate keys, limits) before
//!   serde_yaml builds anything, so that hostile input is rejected early.
//!
//! The two are combined into one located tree by walking serde_yaml's value and
//! saphyr's located skeleton side by side. They should always agree on the
//! shape; if they ever do not, the part that differs takes the [`Loc`] of the
//! nearest located ancestor instead of panicking. Both libraries stay confined
//! to this file, so a maintained fork can replace serde_yaml (which is no
//! longer maintained) by editing this file alone.
//!
//! # How scalars are typed (serde_yaml's YAML 1.2 core-schema rules)
//!
//! * Quoted (`'…'`, `"…"`) and block (`|`, `>`) scalars are always
//!   [`YamlKind::Str`]: `"3"` is the string `3`, never a number.
//! * Plain scalars: empty, `~`, `null`, `Null`, `NULL` are [`YamlKind::Null`];
//!   `true`/`True`/`TRUE`/`false`/`False`/`FALSE` are [`YamlKind::Bool`]
//!   (`yes`, `on`, `y` are strings); `42`, `-7`, `+5`, `0x1F`, `0o17`, `0b101`
//!   are [`YamlKind::Int`] (`012` and `1_000` are strings); `1.0`, `1.`, `.5`,
//!   `1e3`, `.inf`, `-.inf`, `.nan` are [`YamlKind::Float`] (so `1.0` is a
//!   float, not an integer; `1e400`, beyond `f64`, is a string); everything
//!   else is a string. Keys are typed the same way: `1: x` has an integer
//!   key, which [`Yaml::get`] (string keys only) does not find.
//! * An integer literal that does not fit in `i64` (for instance
//!   `99999999999999999999`, or `9223372036854775808`, or
//!   `0xFFFFFFFFFFFFFFFF`) is an error ("integer … is out of range"): it is
//!   never wrapped, nor turned into a float.
//!
//! # What is rejected, always with a location where one exists
//!
//! Syntax errors (with serde_yaml's message and location; saphyr's only in
//! the unexpected case where serde_yaml finds nothing wrong with a source
//! saphyr rejects); more than one document (an empty or comment-only source is a
//! [`YamlKind::Null`] at 1:1); duplicate map keys (reported at the second key,
//! naming the line of the first); tags (`!foo`, `!!str`); merge keys (a plain
//! `<<` key); non-scalar map keys; sources over 4 MiB; collections nested more
//! than 128 deep; documents with more than 1,000,000 nodes or 64 MiB of scalar
//! text once every alias is expanded (so an alias bomb fails fast); aliases to
//! a node that contains them.
//!
//! # Locations
//!
//! A [`Loc`] is where the node starts: for a quoted scalar the opening quote,
//! for a block scalar its `|` or `>` indicator, for a flow collection its `[`
//! or `{`, for a block sequence its first `-`, for a block map its first key,
//! after any anchor (`&name`) in front of the node. An empty value (`key:` with
//! nothing after it) is located right after its key. An alias is expanded
//! into a copy of its anchored node: the copy's root is located at the alias
//! (`*name`), the nodes inside it keep the locations of the anchored original.
//! Lines end at `\n`, `\r\n` or a lone `\r`; columns count chars, not bytes; a
//! leading byte-order mark is not counted in columns (it is in offsets).
//! U+0085, U+2028 and U+2029 are line breaks to serde_yaml (YAML 1.1) but not
//! to saphyr (YAML 1.2), nor here: a node right after one may be located at
//! it, or at its parent.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle as SaphyrStyle, ScanError, Span};
use serde_yaml::Value;

/// Largest source accepted, in bytes.
const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting of collections accepted.
const MAX_DEPTH: usize = 128;
/// Most nodes (scalars, collections, keys) accepted, counting every alias
/// expansion in full.
const MAX_NODES: u64 = 1_000_000;
/// Most bytes of scalar text accepted, counting every alias expansion in full.
const MAX_SCALAR_BYTES: u64 = 64 * 1024 * 1024;
/// How far past a syntax error serde_yaml is shown the source, in bytes, at
/// most (YAML's implicit keys are at most 1024 chars long).
const LOOKAHEAD_BYTES: usize = 4096;
/// The plain scalars serde_yaml reads as null (besides the empty one).
const NULLS: [&str; 4] = ["~", "null", "Null", "NULL"];
/// The plain scalars serde_yaml reads as booleans.
const BOOLS: [&str; 6] = ["true", "True", "TRUE", "false", "False", "FALSE"];
/// Longest excerpt of a scalar quoted in an error message, in chars.
const MAX_QUOTED_CHARS: usize = 40;

/// Where something starts in the source: 1-based line and column (column
/// counted in chars), and the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in chars (not bytes) from the start of the line.
    pub col: usize,
    /// Byte offset from the start of the source.
    pub offset: usize,
}

/// A YAML node with the location where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Yaml {
    /// What the node is.
    pub kind: YamlKind,
    /// Where the node starts (see the module documentation).
    pub loc: Loc,
    /// How the node was written, when it is a scalar.
    pub style: ScalarStyle,
}

/// How a scalar was written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// Unquoted: the only style whose text is typed as null, bool or number.
    Plain,
    /// Single- or double-quoted; the node's `loc` is the opening quote.
    Quoted,
    /// A literal (`|`) or folded (`>`) block scalar.
    Block,
    /// The node is a list or a map.
    NotScalar,
}

/// The value of a YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum YamlKind {
    /// `~`, `null`, or nothing at all.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A floating-point number, including `.inf` and `.nan`.
    Float(f64),
    /// A string.
    Str(String),
    /// A list (sequence).
    Seq(Vec<Yaml>),
    /// A map: (key node, value node) pairs in source order, keys unique.
    Map(Vec<(Yaml, Yaml)>),
}

/// Why a source could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    /// Where the problem is, when it is known.
    pub loc: Option<Loc>,
    /// What the problem is, without its location.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.loc {
            Some(loc) => write!(f, "{}:{}: {}", loc.line, loc.col, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for YamlError {}

impl YamlError {
    fn at(loc: Loc, message: impl Into<String>) -> YamlError {
        YamlError {
            loc: Some(loc),
            message: message.into(),
        }
    }
}

impl Yaml {
    /// The value of the first entry whose key is the string `key`, if this is
    /// a map that has one.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match &self.kind {
            YamlKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of this node, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            YamlKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of this node's type, for error messages: "null", "bool",
    /// "integer", "float", "string", "list" or "map".
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            YamlKind::Null => "null",
            YamlKind::Bool(_) => "bool",
            YamlKind::Int(_) => "integer",
            YamlKind::Float(_) => "float",
            YamlKind::Str(_) => "string",
            YamlKind::Seq(_) => "list",
            YamlKind::Map(_) => "map",
        }
    }
}

/// Parses one YAML document.
///
/// See the module documentation for how scalars are typed, where locations
/// point, and what is rejected.
pub fn parse(src: &str) -> Result<Yaml, YamlError> {
    if src.len() > MAX_SOURCE_BYTES {
        return Err(YamlError {
            loc: None,
            message: format!(
                "the YAML source is {} bytes, more than the limit of {} bytes (4 MiB)",
                src.len(),
                MAX_SOURCE_BYTES
            ),
        });
    }
    let source = Source::new(src);

    // Pass 1: saphyr's events give the located skeleton, and every rule that
    // must hold before serde_yaml is allowed to expand aliases.
    let mut skeleton = Skeleton::new(&source);
    let mut parser = Parser::new_from_str(source.body);
    loop {
        match parser.next_event() {
            None | Some(Ok((Event::StreamEnd, _))) => break,
            Some(Ok((event, span))) => skeleton.event(event, span)?,
            Some(Err(err)) => return Err(syntax_error(&source, &err, skeleton.prev_end)),
        }
    }

    // Pass 2: serde_yaml gives the values.
    let value = serde_yaml::from_str::<Value>(source.body).map_err(|e| serde_error(&source, &e))?;
    let start = source.loc(0, 0);
    let Some(root) = skeleton.root else {
        // No document at all (empty or comments only).
        return Ok(Yaml {
            kind: YamlKind::Null,
            loc: start,
            style: ScalarStyle::Plain,
        });
    };
    let empty_document = matches!(&skeleton.nodes[root].kind,
        Kind::Scalar { text, plain: true } if text.is_empty());
    skeleton.build(value, root, empty_document.then_some(start), start)
}

// ---------------------------------------------------------------------------
// Positions in the source.

/// The source with the tables that turn saphyr's char indices and
/// serde_yaml's byte indices into [`Loc`]s.
struct Source<'a> {
    /// The source without its byte-order mark, as both parsers see it.
    body: &'a str,
    /// Bytes removed from the front of the source (the byte-order mark).
    base: usize,
    /// Byte and char index in `body` of the start of each line.
    lines: Vec<(usize, usize)>,
    /// Byte index of each char of `body` (and of its end); `None` when `body`
    /// is ASCII, where the two are equal.
    char_bytes: Option<Vec<u32>>,
    /// Number of chars in `body`.
    chars: usize,
}

impl<'a> Source<'a> {
    fn new(src: &'a str) -> Source<'a> {
        let (body, base) = match src.strip_prefix('\u{feff}') {
            Some(body) => (body, src.len() - body.len()),
            None => (src, 0),
        };
        let bytes = body.as_bytes();
        let mut char_bytes = (!body.is_ascii()).then(|| Vec::with_capacity(body.len() + 1));
        let mut lines = vec![(0, 0)];
        let mut chars = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b & 0xC0 == 0x80 {
                continue; // a UTF-8 continuation byte
            }
            if let Some(table) = char_bytes.as_mut() {
                // Fits: the source is at most MAX_SOURCE_BYTES long.
                table.push(i as u32);
            }
            chars += 1;
            if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                lines.push((i + 1, chars));
            }
        }
        if let Some(table) = char_bytes.as_mut() {
            table.push(body.len() as u32);
        }
        Source {
            body,
            base,
            lines,
            char_bytes,
            chars,
        }
    }

    /// Byte index in `body` of the char at char index `ci` (clamped to the end).
    fn byte_of_char(&self, ci: usize) -> usize {
        let ci = ci.min(self.chars);
        match &self.char_bytes {
            None => ci,
            Some(table) => table[ci] as usize,
        }
    }

    /// The location of the char at char index `ci` and byte index `bi` of `body`.
    fn loc(&self, ci: usize, bi: usize) -> Loc {
        let line = self.lines.partition_point(|&(b, _)| b <= bi).max(1);
        let (_, line_char) = self.lines[line - 1];
        Loc {
            line,
            col: ci.saturating_sub(line_char) + 1,
            offset: bi + self.base,
        }
    }

    /// The location of saphyr's char index `ci`.
    fn loc_of_char(&self, ci: usize) -> Loc {
        let ci = ci.min(self.chars);
        self.loc(ci, self.byte_of_char(ci))
    }

    /// The location of serde_yaml's byte index `bi` (clamped into `body`).
    fn loc_of_byte(&self, bi: usize) -> Loc {
        let mut bi = bi.min(self.body.len());
        while !self.body.is_char_boundary(bi) {
            bi -= 1;
        }
        let line = self.lines.partition_point(|&(b, _)| b <= bi).max(1);
        let (line_byte, line_char) = self.lines[line - 1];
        let ci = line_char + self.body[line_byte..bi].chars().count();
        self.loc(ci, bi)
    }

    /// A cursor at char index `ci`.
    fn cursor(&self, ci: usize) -> Cursor<'a> {
        let ci = ci.min(self.chars);
        Cursor {
            body: self.body,
            ci,
            bi: self.byte_of_char(ci),
        }
    }
}

/// A position in `body` that walks forward one char at a time.
struct Cursor<'a> {
    body: &'a str,
    ci: usize,
    bi: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.body[self.bi..].chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.ci += 1;
            self.bi += c.len_utf8();
        }
    }

    /// Skips to the end of the line (not past the line break).
    fn skip_comment(&mut self, limit: usize) {
        while self.ci < limit && !matches!(self.peek(), None | Some('\n' | '\r')) {
            self.bump();
        }
    }

    /// Skips an anchor or tag: up to white space or a flow indicator.
    fn skip_property(&mut self, limit: usize) {
        self.bump();
        while self.ci < limit
            && !matches!(
                self.peek(),
                None | Some(' ' | '\t' | '\n' | '\r' | ',' | '[' | ']' | '{' | '}')
            )
        {
            self.bump();
        }
    }
}

// ---------------------------------------------------------------------------
// Pass 1: the located skeleton, from saphyr's events.

/// What a skeleton node is.
enum Kind {
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<usize>),
    Map(Vec<(usize, usize)>),
    /// An alias to the node at this index.
    Alias(usize),
}

/// A node of the located skeleton.
struct Node {
    kind: Kind,
    loc: Loc,
    style: ScalarStyle,
    /// Nodes in this subtree, aliases expanded.
    nodes: u64,
    /// Bytes of scalar text in this subtree, aliases expanded.
    bytes: u64,
    /// Collections nested in this subtree, itself included, aliases expanded.
    height: usize,
    /// Whether the node's end has been seen (an alias to an unfinished node
    /// would be recursive).
    done: bool,
}

/// What kind of node an event starts, for [`Skeleton::node_loc`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Scalar,
    BlockScalar,
    Seq,
    Map,
}

/// An open collection.
struct Frame {
    node: usize,
    /// For a map: its key waiting for a value, and the keys seen so far with
    /// the line each was first defined on.
    map: Option<(Option<usize>, HashMap<Value, usize>)>,
}

struct Skeleton<'s> {
    source: &'s Source<'s>,
    nodes: Vec<Node>,
    stack: Vec<Frame>,
    /// saphyr's anchor ids to node indices.
    anchors: HashMap<usize, usize>,
    root: Option<usize>,
    documents: usize,
    total_nodes: u64,
    total_bytes: u64,
    /// Char index where the previous event ended (implicit document starts
    /// aside).
    prev_end: usize,
}

impl<'s> Skeleton<'s> {
    fn new(source: &'s Source<'s>) -> Skeleton<'s> {
        Skeleton {
            source,
            nodes: Vec::new(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            documents: 0,
            total_nodes: 0,
            total_bytes: 0,
            prev_end: 0,
        }
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let start = span.start.index();
        let is_map = matches!(event, Event::MappingStart(..));
        let is_implicit_start = matches!(event, Event::DocumentStart(false));
        match event {
            Event::DocumentStart(_) => {
                if self.documents > 0 {
                    return Err(YamlError::at(
                        self.source.loc_of_char(start),
                        "a second YAML document starts here; a spec must be a single document",
                    ));
                }
                self.documents += 1;
            }
            Event::Alias(id) => {
                let loc = self.source.loc_of_char(start);
                let Some(&target) = self.anchors.get(&id) else {
                    return Err(YamlError::at(loc, "unknown anchor"));
                };
                let t = &self.nodes[target];
                if !t.done {
                    return Err(YamlError::at(
                        loc,
                        "this alias refers to a node that contains it (recursive alias)",
                    ));
                }
                let (nodes, bytes, height, style) = (t.nodes, t.bytes, t.height, t.style);
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(YamlError::at(
                        loc,
                        format!(
                            "expanding this alias nests collections more than {MAX_DEPTH} deep"
                        ),
                    ));
                }
                self.charge(nodes, bytes, loc)?;
                let idx = self.push(Node {
                    kind: Kind::Alias(target),
                    loc,
                    style,
                    nodes,
                    bytes,
                    height,
                    done: true,
                });
                self.attach(idx)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if tag.is_some() {
                    return Err(tags_error(self.source.loc_of_char(start)));
                }
                let block = matches!(style, SaphyrStyle::Literal | SaphyrStyle::Folded);
                let loc = self.node_loc(
                    span,
                    if block {
                        Shape::BlockScalar
                    } else {
                        Shape::Scalar
                    },
                );
                let plain = style == SaphyrStyle::Plain;
                if plain && int_literal_fits(&text) == Some(false) {
                    return Err(out_of_range(loc, &text));
                }
                let len = text.len() as u64;
                self.charge(1, len, loc)?;
                let idx = self.push(Node {
                    kind: Kind::Scalar {
                        text: text.into_owned(),
                        plain,
                    },
                    loc,
                    style: match style {
                        SaphyrStyle::Plain => ScalarStyle::Plain,
                        SaphyrStyle::SingleQuoted | SaphyrStyle::DoubleQuoted => {
                            ScalarStyle::Quoted
                        }
                        SaphyrStyle::Literal | SaphyrStyle::Folded => ScalarStyle::Block,
                    },
                    nodes: 1,
                    bytes: len,
                    height: 0,
                    done: true,
                });
                if anchor != 0 {
                    self.anchors.insert(anchor, idx);
                }
                self.attach(idx)?;
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                if tag.is_some() {
                    return Err(tags_error(self.source.loc_of_char(start)));
                }
                let loc = self.node_loc(span, if is_map { Shape::Map } else { Shape::Seq });
                if self.expecting_key() {
                    let what = if is_map { "map" } else { "list" };
                    return Err(YamlError::at(
                        loc,
                        format!("map keys must be scalars, but this key is a {what}"),
                    ));
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(YamlError::at(
                        loc,
                        format!("collections are nested more than {MAX_DEPTH} deep"),
                    ));
                }
                self.charge(1, 0, loc)?;
                let idx = self.push(Node {
                    kind: if is_map {
                        Kind::Map(Vec::new())
                    } else {
                        Kind::Seq(Vec::new())
                    },
                    loc,
                    style: ScalarStyle::NotScalar,
                    nodes: 1,
                    bytes: 0,
                    height: 1,
                    done: false,
                });
                if anchor != 0 {
                    self.anchors.insert(anchor, idx);
                }
                self.stack.push(Frame {
                    node: idx,
                    map: is_map.then(|| (None, HashMap::new())),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let children: Vec<usize> = match &self.nodes[frame.node].kind {
                        Kind::Seq(items) => items.clone(),
                        Kind::Map(entries) => entries.iter().flat_map(|&(k, v)| [k, v]).collect(),
                        _ => Vec::new(),
                    };
                    let (mut nodes, mut bytes, mut height) = (1u64, 0u64, 0usize);
                    for child in children {
                        let c = &self.nodes[child];
                        nodes += c.nodes;
                        bytes += c.bytes;
                        height = height.max(c.height);
                    }
                    let node = &mut self.nodes[frame.node];
                    node.nodes = nodes;
                    node.bytes = bytes;
                    node.height = height + 1;
                    node.done = true;
                    self.attach(frame.node)?;
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        // An implicit document start is located at the first token after it,
        // which may be past a block scalar's indicator.
        if !is_implicit_start {
            self.prev_end = span.end.index();
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Counts `nodes` more nodes and `bytes` more bytes of scalar text.
    fn charge(&mut self, nodes: u64, bytes: u64, loc: Loc) -> Result<(), YamlError> {
        self.total_nodes += nodes;
        self.total_bytes += bytes;
        if self.total_nodes > MAX_NODES {
            return Err(YamlError::at(
                loc,
                format!("the document has more than {MAX_NODES} nodes once aliases are expanded"),
            ));
        }
        if self.total_bytes > MAX_SCALAR_BYTES {
            return Err(YamlError::at(
                loc,
                format!(
                    "the document has more than {MAX_SCALAR_BYTES} bytes of text once aliases are expanded"
                ),
            ));
        }
        Ok(())
    }

    /// Whether the next node is a map key.
    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                map: Some((None, _)),
                ..
            })
        )
    }

    /// Hangs the finished node `idx` on the open collection, or makes it the root.
    fn attach(&mut self, idx: usize) -> Result<(), YamlError> {
        if self.expecting_key() {
            let key = self.key_identity(idx)?;
            let loc = self.nodes[idx].loc;
            let Some(Frame {
                map: Some((pending, seen)),
                ..
            }) = self.stack.last_mut()
            else {
                return Ok(());
            };
            if let Some(&first_line) = seen.get(&key) {
                let name = match &key {
                    Value::String(s) => format!("{:?}", shorten(s)),
                    _ => match &self.nodes[idx].kind {
                        Kind::Scalar { text, .. } => shorten(text),
                        _ => "(alias)".to_owned(),
                    },
                };
                return Err(YamlError::at(
                    loc,
                    format!("duplicate key {name} (first defined on line {first_line})"),
                ));
            }
            seen.insert(key, loc.line);
            *pending = Some(idx);
            return Ok(());
        }
        let Some(frame) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(idx);
            }
            return Ok(());
        };
        let parent = frame.node;
        let pending = match &mut frame.map {
            Some((pending, _)) => pending.take(),
            None => None,
        };
        match (&mut self.nodes[parent].kind, pending) {
            (Kind::Seq(items), _) => items.push(idx),
            (Kind::Map(entries), Some(key)) => entries.push((key, idx)),
            _ => {}
        }
        Ok(())
    }

    /// The value serde_yaml will see for the key node `idx`, to find
    /// duplicates; rejects merge keys and non-scalar keys.
    fn key_identity(&self, idx: usize) -> Result<Value, YamlError> {
        let node = &self.nodes[idx];
        let target = match node.kind {
            Kind::Alias(t) => &self.nodes[t],
            _ => node,
        };
        match &target.kind {
            Kind::Scalar { text, plain: true } => {
                if text == "<<" && !matches!(node.kind, Kind::Alias(_)) {
                    return Err(YamlError::at(
                        node.loc,
                        "merge keys (`<<`) are not supported",
                    ));
                }
                Ok(resolve_plain(text))
            }
            Kind::Scalar { text, plain: false } => Ok(Value::String(text.clone())),
            _ => Err(YamlError::at(
                node.loc,
                "map keys must be scalars, but this key is an alias to a collection",
            )),
        }
    }

    /// Where the node of an event with this span starts (see the module doc).
    fn node_loc(&self, span: Span, what: Shape) -> Loc {
        let source = self.source;
        let start = span.start.index();
        let end = span.end.index();
        let first = source.cursor(start).peek();
        let has_properties = matches!(first, Some('&' | '!'));
        if what == Shape::BlockScalar {
            // saphyr's span of a block scalar starts at its content (or at its
            // indicator when it has none), or at its properties (`&anchor`)
            // when it has some: the indicator lies between the previous event
            // and the content, or after the properties.
            if matches!(first, Some('|' | '>')) {
                return source.loc_of_char(start);
            }
            let found = self
                .find(self.prev_end.min(start), start, &['|', '>'])
                .or_else(|| has_properties.then(|| self.find(start, end, &['|', '>']))?);
            return found.unwrap_or_else(|| source.loc_of_char(start));
        }
        let mut cur = source.cursor(start);
        if has_properties {
            while cur.ci < end {
                match cur.peek() {
                    Some(' ' | '\t' | '\n' | '\r') => cur.bump(),
                    Some('#') => cur.skip_comment(end),
                    Some('&' | '!') => cur.skip_property(end),
                    _ => break,
                }
            }
            if !(cur.ci < end || (what != Shape::Scalar && cur.ci == end)) {
                cur = source.cursor(start);
            }
        }
        if what == Shape::Seq && !matches!(cur.peek(), Some('[' | '-')) {
            // An indentless sequence (`key:` then `- item` at the key's
            // indentation) is spanned from its first item's content.
            if let Some(loc) = self.find(self.prev_end.min(start), cur.ci, &['-']) {
                return loc;
            }
        }
        source.loc(cur.ci, cur.bi)
    }

    /// The location of the first of `targets` from char index `from` up to
    /// `limit`, outside comments and properties.
    fn find(&self, from: usize, limit: usize, targets: &[char]) -> Option<Loc> {
        let mut cur = self.source.cursor(from);
        while cur.ci < limit {
            match cur.peek()? {
                c if targets.contains(&c) => return Some(self.source.loc(cur.ci, cur.bi)),
                '#' => cur.skip_comment(limit),
                '&' | '!' | '*' => cur.skip_property(limit),
                _ => cur.bump(),
            }
        }
        None
    }

    // -----------------------------------------------------------------------
    // Pass 2: serde_yaml's value, located with the skeleton.

    /// Builds the located node for serde_yaml's `value` from skeleton node
    /// `idx`; `at` overrides the location of the node (not of its children),
    /// `parent` is the location of the nearest located ancestor.
    fn build(
        &self,
        value: Value,
        idx: usize,
        at: Option<Loc>,
        parent: Loc,
    ) -> Result<Yaml, YamlError> {
        let node = &self.nodes[idx];
        if let Kind::Alias(target) = node.kind {
            return self.build(value, target, Some(at.unwrap_or(node.loc)), parent);
        }
        let loc = at.unwrap_or(node.loc);
        let kind = match (value, &node.kind) {
            (Value::Tagged(_), _) => return Err(tags_error(loc)),
            (Value::Sequence(items), Kind::Seq(children)) => {
                if items.len() != children.len() {
                    return detached(Value::Sequence(items), loc);
                }
                YamlKind::Seq(
                    items
                        .into_iter()
                        .zip(children)
                        .map(|(v, &c)| self.build(v, c, None, loc))
                        .collect::<Result<_, _>>()?,
                )
            }
            (Value::Mapping(map), Kind::Map(children)) => {
                if map.len() != children.len() {
                    return detached(Value::Mapping(map), loc);
                }
                YamlKind::Map(
                    map.into_iter()
                        .zip(children)
                        .map(|((k, v), &(kc, vc))| {
                            Ok((self.build(k, kc, None, loc)?, self.build(v, vc, None, loc)?))
                        })
                        .collect::<Result<_, YamlError>>()?,
                )
            }
            (value, Kind::Scalar { text, plain }) if agrees(&value, text, *plain) => {
                scalar(value, loc, (*plain).then_some(text.as_str()))?
            }
            // The parsers disagree here (they should not): locate what
            // serde_yaml found at the nearest located ancestor.
            (value, _) => return detached(value, parent),
        };
        Ok(Yaml {
            kind,
            loc,
            style: node.style,
        })
    }
}

/// Whether serde_yaml's scalar `value` can be saphyr's scalar `text` (plain
/// or not): a cheap check that the two parsers paired up the same node.
fn agrees(value: &Value, text: &str, plain: bool) -> bool {
    match value {
        Value::String(s) => s == text,
        Value::Null => plain && (text.is_empty() || NULLS.contains(&text)),
        Value::Bool(_) => plain && BOOLS.contains(&text),
        Value::Number(_) => {
            plain && matches!(text.bytes().next(), Some(b'0'..=b'9' | b'+' | b'-' | b'.'))
        }
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => false,
    }
}

/// The kind of a scalar `value`; `plain_text` is its source text when plain.
fn scalar(value: Value, loc: Loc, plain_text: Option<&str>) -> Result<YamlKind, YamlError> {
    Ok(match value {
        Value::Null => YamlKind::Null,
        Value::Bool(b) => YamlKind::Bool(b),
        Value::String(s) => YamlKind::Str(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                YamlKind::Int(i)
            } else if n.is_u64() {
                return Err(out_of_range(loc, &n.to_string()));
            } else {
                if let Some(text) = plain_text {
                    if int_literal_fits(text).is_some() {
                        return Err(out_of_range(loc, text));
                    }
                }
                YamlKind::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::Tagged(_) => return Err(tags_error(loc)),
        Value::Sequence(_) | Value::Mapping(_) => return detached(value, loc).map(|y| y.kind),
    })
}

/// Builds `value` with every node at `loc`: used only where the two parsers
/// disagree on the shape, which they should not.
fn detached(value: Value, loc: Loc) -> Result<Yaml, YamlError> {
    let style = match value {
        Value::Sequence(_) | Value::Mapping(_) => ScalarStyle::NotScalar,
        _ => ScalarStyle::Plain,
    };
    let kind = match value {
        Value::Sequence(items) => YamlKind::Seq(
            items
                .into_iter()
                .map(|v| detached(v, loc))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => YamlKind::Map(
            map.into_iter()
                .map(|(k, v)| Ok((detached(k, loc)?, detached(v, loc)?)))
                .collect::<Result<_, YamlError>>()?,
        ),
        value => scalar(value, loc, None)?,
    };
    Ok(Yaml { kind, loc, style })
}

// ---------------------------------------------------------------------------
// Scalars and errors.

/// The value serde_yaml gives the plain scalar `text`, as far as map-key
/// equality goes (null, bool and number keys written differently can be
/// equal: `1` and `0x1`). serde_yaml itself types the text.
fn resolve_plain(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    let first = text.as_bytes()[0];
    let maybe_typed = first.is_ascii_digit()
        || matches!(first, b'+' | b'-' | b'.')
        || NULLS.contains(&text)
        || BOOLS.contains(&text);
    if maybe_typed {
        match serde_yaml::from_str::<Value>(text) {
            Ok(value @ (Value::Bool(_) | Value::Number(_))) => return value,
            Ok(Value::Null) if NULLS.contains(&text) => return Value::Null,
            _ => {}
        }
    }
    Value::String(text.to_owned())
}

/// Whether the plain scalar `text` is an integer literal by serde_yaml's rules
/// (`None` if it is not one), and if so whether it fits in `i64`.
fn int_literal_fits(text: &str) -> Option<bool> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(d) = unsigned.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = unsigned.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = unsigned.strip_prefix("0b") {
        (2, d)
    } else {
        (10, unsigned)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
        return None; // YAML 1.2: leading zeros make it a string.
    }
    let signed = if negative {
        format!("-{digits}")
    } else {
        digits.to_owned()
    };
    Some(i64::from_str_radix(&signed, radix).is_ok())
}

/// `text`, cut to at most [`MAX_QUOTED_CHARS`] chars.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn out_of_range(loc: Loc, text: &str) -> YamlError {
    YamlError::at(
        loc,
        format!(
            "integer {} is out of range (it must fit in a signed 64-bit integer)",
            shorten(text)
        ),
    )
}

fn tags_error(loc: Loc) -> YamlError {
    YamlError::at(loc, "YAML tags are not supported")
}

/// The error for a source saphyr rejected at `err`, after checking every event
/// up to char index `checked`: serde_yaml's error, as serde_yaml is the parser
/// of record, unless serde_yaml finds none.
fn syntax_error(source: &Source<'_>, err: &ScanError, checked: usize) -> YamlError {
    let ci = err.marker().index().min(source.chars);
    let at = source.byte_of_char(ci);
    let checked = source.byte_of_char(checked).min(at);
    let body = source.body;
    // serde_yaml expands the aliases it has read before it reports a syntax
    // error, and only the text up to `checked` was held to the limits. So it
    // is shown the source up to the end of the error's line (at most
    // LOOKAHEAD_BYTES past the error), and only up to `checked` if that would
    // show it an unchecked alias.
    let eol = body[at..].find(['\n', '\r']).map_or(body.len(), |i| at + i);
    let mut cut = eol.min(at.saturating_add(LOOKAHEAD_BYTES));
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    if body[checked..cut].contains('*') {
        cut = checked;
    }
    let input = &body[..cut];
    let ours = || YamlError::at(source.loc(ci, at), err.info());
    match serde_yaml::from_str::<Value>(input) {
        Ok(_) => ours(),
        Err(e) => {
            // An error at the end of a cut source is an artifact of the cut.
            let truncated = input.len() < body.len();
            if truncated && e.location().is_none_or(|l| l.index() >= input.len()) {
                ours()
            } else {
                serde_error(source, &e)
            }
        }
    }
}

/// serde_yaml's error, its location moved from the message into `loc`.
fn serde_error(source: &Source<'_>, err: &serde_yaml::Error) -> YamlError {
    let mut message = err.to_string();
    let loc = err.location().map(|l| {
        let suffixes = [
            format!(" at line {} column {}", l.line(), l.column()),
            format!(" at position {}", l.index()),
        ];
        for suffix in suffixes {
            if let Some(i) = message.find(&suffix) {
                message.replace_range(i..i + suffix.len(), "");
                break;
            }
        }
        source.loc_of_byte(l.index())
    });
    YamlError { loc, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(y: &Yaml) -> (usize, usize) {
        (y.loc.line, y.loc.col)
    }

    fn key<'a>(map: &'a Yaml, name: &str) -> &'a Yaml {
        match &map.kind {
            YamlKind::Map(entries) => {
                &entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .expect("key")
                    .0
            }
            _ => panic!("not a map"),
        }
    }

    fn items(y: &Yaml) -> &[Yaml] {
        match &y.kind {
            YamlKind::Seq(items) => items,
            _ => panic!("not a list: {y:?}"),
        }
    }

    fn err(src: &str) -> YamlError {
        parse(src).expect_err("should fail")
    }

    fn err_line(src: &str) -> (String, usize) {
        let e = err(src);
        (e.message.clone(), e.loc.expect("located").line)
    }

    #[test]
    fn block_style_locations() {
        let src = "name: tiny\nparams:\n  width: 8\nlayers:\n  - relu\n  - conv: 3\n";
        let y = parse(src).unwrap();
        assert_eq!(loc(&y), (1, 1));
        assert_eq!(loc(key(&y, "params")), (2, 1));
        let params = y.get("params").unwrap();
        assert_eq!(loc(params), (3, 3));
        assert_eq!(loc(key(params, "width")), (3, 3));
        assert_eq!(loc(params.get("width").unwrap()), (3, 10));
        assert_eq!(
            params.get("width").unwrap().loc.offset,
            src.find('8').unwrap()
        );
        let layers = y.get("layers").unwrap();
        assert_eq!(loc(layers), (5, 3));
        let l = items(layers);
        assert_eq!(loc(&l[0]), (5, 5));
        assert_eq!(loc(&l[1]), (6, 5));
        assert_eq!(loc(l[1].get("conv").unwrap()), (6, 11));
        assert_eq!(y.get("name").unwrap().as_str(), Some("tiny"));
        assert_eq!(l[1].get("conv").unwrap().kind, YamlKind::Int(3));
    }

    #[test]
    fn flow_style_locations() {
        let src = "layers:\n  - conv: {out: 24, kernel: 3}\n";
        let y = parse(src).unwrap();
        let conv_item = &items(y.get("layers").unwrap())[0];
        let conv = conv_item.get("conv").unwrap();
        assert_eq!(loc(conv), (2, 11));
        assert_eq!(conv.style, ScalarStyle::NotScalar);
        let k = key(conv, "kernel");
        assert_eq!(loc(k), (2, 21));
        assert_eq!(k.loc.offset, src.find("kernel").unwrap());
        let three = conv.get("kernel").unwrap();
        assert_eq!(loc(three), (2, 29));
        assert_eq!(three.loc.offset, src.find('3').unwrap());
        assert_eq!(three.kind, YamlKind::Int(3));
        assert_eq!(loc(conv.get("out").unwrap()), (2, 17));
        let seq = parse("x: [1, [2, 3], {a: b}]").unwrap();
        let x = items(seq.get("x").unwrap());
        assert_eq!(loc(seq.get("x").unwrap()), (1, 4));
        assert_eq!(loc(&x[1]), (1, 8));
        assert_eq!(loc(&items(&x[1])[1]), (1, 12));
        assert_eq!(loc(&x[2]), (1, 16));
        assert_eq!(loc(x[2].get("a").unwrap()), (1, 20));
    }

    #[test]
    fn nested_sequences() {
        let y = parse("- - 1\n  - - 2\n    - 3\n- []\n").unwrap();
        let outer = items(&y);
        assert_eq!(loc(&y), (1, 1));
        assert_eq!(loc(&outer[0]), (1, 3));
        let inner = items(&outer[0]);
        assert_eq!(loc(&inner[0]), (1, 5));
        assert_eq!(loc(&inner[1]), (2, 5));
        assert_eq!(loc(&items(&inner[1])[1]), (3, 7));
        assert_eq!(loc(&outer[1]), (4, 3));
        assert_eq!(items(&outer[1]).len(), 0);
    }

    #[test]
    fn quoted_and_block_scalars() {
        let src =
            "a: \"x y\"\nb: 'z'\nc: |\n  line one\n  line two\nd: >-\n  folded\n  text\n- e\n";
        // The trailing "- e" is a syntax error; check the valid part first.
        let valid = &src[..src.find("- e").unwrap()];
        let y = parse(valid).unwrap();
        let a = y.get("a").unwrap();
        assert_eq!(
            (loc(a), a.style, a.as_str()),
            ((1, 4), ScalarStyle::Quoted, Some("x y"))
        );
        assert_eq!(&valid[a.loc.offset + 1..a.loc.offset + 4], "x y");
        let b = y.get("b").unwrap();
        assert_eq!((loc(b), b.style), ((2, 4), ScalarStyle::Quoted));
        let c = y.get("c").unwrap();
        assert_eq!((loc(c), c.style), ((3, 4), ScalarStyle::Block));
        assert_eq!(c.as_str(), Some("line one\nline two\n"));
        let d = y.get("d").unwrap();
        assert_eq!(
            (loc(d), d.style, d.as_str()),
            ((6, 4), ScalarStyle::Block, Some("folded text"))
        );
        assert_eq!(y.get("a").unwrap().type_name(), "string");
        let e = err(src);
        assert_eq!(e.loc.unwrap().line, 9);
        assert!(e.message.contains("did not find expected key"), "{e}");
        // An anchored block scalar, a block scalar in a list, and one with a comment.
        let y = parse("- &t | # note | >\n  x\n- >\n  y\n").unwrap();
        assert_eq!(loc(&items(&y)[0]), (1, 6));
        assert_eq!(loc(&items(&y)[1]), (3, 3));
        // Quoted scalars keep their type; plain ones are typed.
        let y = parse("a: \"3\"\nb: 3\nc: 1.0\nd: true\ne: ~\nf:\ng: 012\nh: 0x1F\n").unwrap();
        assert_eq!(y.get("a").unwrap().kind, YamlKind::Str("3".into()));
        assert_eq!(y.get("b").unwrap().kind, YamlKind::Int(3));
        assert_eq!(y.get("c").unwrap().kind, YamlKind::Float(1.0));
        assert_eq!(y.get("d").unwrap().kind, YamlKind::Bool(true));
        assert_eq!(y.get("e").unwrap().kind, YamlKind::Null);
        assert_eq!(y.get("f").unwrap().kind, YamlKind::Null);
        assert_eq!(y.get("g").unwrap().kind, YamlKind::Str("012".into()));
        assert_eq!(y.get("h").unwrap().kind, YamlKind::Int(31));
        assert_eq!(y.get("c").unwrap().type_name(), "float");
    }

    #[test]
    fn anchors_and_aliases() {
        let src = "base: &b {out: 24, kernel: 3}\nuse: *b\nlist: [&n 5, *n]\nq: &q \"s\"\n";
        let y = parse(src).unwrap();
        let base = y.get("base").unwrap();
        assert_eq!(loc(base), (1, 10));
        let copy = y.get("use").unwrap();
        assert_eq!(copy.kind, base.kind);
        assert_eq!(loc(copy), (2, 6));
        assert_eq!(loc(copy.get("kernel").unwrap()), (1, 28));
        let list = items(y.get("list").unwrap());
        assert_eq!(loc(&list[0]), (3, 11));
        assert_eq!(list[1].kind, YamlKind::Int(5));
        assert_eq!(loc(&list[1]), (3, 14));
        let q = y.get("q").unwrap();
        assert_eq!((loc(q), q.style), ((4, 7), ScalarStyle::Quoted));
        let y = parse("a: &m\n  k: v\n").unwrap();
        assert_eq!(loc(y.get("a").unwrap()), (2, 3));
        let (m, line) = err_line("a: &a [1, *a]\n");
        assert!(m.contains("recursive alias"), "{m}");
        assert_eq!(line, 1);
        let (m, line) = err_line("a: 1\nb: *nope\n");
        assert!(m.contains("unknown anchor"), "{m}");
        assert_eq!(line, 2);
    }

    #[test]
    fn crlf_line_endings() {
        let src = "a: 1\r\nb:\r\n  - x\r\n  - \"y\"\r\n";
        let y = parse(src).unwrap();
        assert_eq!(loc(key(&y, "b")), (2, 1));
        let b = items(y.get("b").unwrap());
        assert_eq!(loc(&b[0]), (3, 5));
        assert_eq!(loc(&b[1]), (4, 5));
        assert_eq!(b[1].loc.offset, src.find('"').unwrap());
        let e = err("a: 1\r\nb: x: 2\r\n");
        assert_eq!((e.loc.unwrap().line, e.loc.unwrap().col), (2, 5));
        // A lone CR also ends a line.
        let y = parse("a: 1\rb: 2\r").unwrap();
        assert_eq!(loc(y.get("b").unwrap()), (2, 4));
    }

    #[test]
    fn multibyte_columns_count_chars() {
        let src = "é: {ü: 1, ß: [2]}\nx: 名前 # ñ\ny: \"€\"\n";
        let y = parse(src).unwrap();
        let m = y.get("é").unwrap();
        assert_eq!(loc(m), (1, 4));
        assert_eq!(loc(m.get("ü").unwrap()), (1, 8));
        assert_eq!(loc(key(m, "ß")), (1, 11));
        assert_eq!(loc(m.get("ß").unwrap()), (1, 14));
        assert_eq!(m.get("ß").unwrap().loc.offset, src.find('[').unwrap());
        assert_eq!(loc(y.get("y").unwrap()), (3, 4));
        assert_eq!(y.get("x").unwrap().as_str(), Some("名前"));
        // A byte-order mark is skipped: not a column, but part of offsets.
        let y = parse("\u{feff}a: 1\nb: é\n").unwrap();
        assert_eq!(loc(key(&y, "a")), (1, 1));
        assert_eq!(key(&y, "a").loc.offset, 3);
        assert_eq!(loc(y.get("a").unwrap()), (1, 4));
        let e = err("\u{feff}é: [1\n");
        assert_eq!(e.loc.unwrap().line, 2);
    }

    #[test]
    fn syntax_errors_use_serde_yaml() {
        let e = err("a: 1\nb: x: 2\n");
        assert_eq!(e.message, "mapping values are not allowed in this context");
        assert_eq!(
            e.loc,
            Some(Loc {
                line: 2,
                col: 5,
                offset: 9
            })
        );
        assert_eq!(
            e.to_string(),
            "2:5: mapping values are not allowed in this context"
        );
        let e = err("a: [1, 2\nb: 3\n");
        assert!(
            !e.message
                .contains(&format!("at line {}", e.loc.unwrap().line)),
            "{e}"
        );
        assert!(e.loc.is_some());
        let e = err("key: \"unterminated\n");
        assert!(e.message.contains("quoted scalar"), "{e}");
        // Even with an alias after the error, serde_yaml's message is used.
        let e = err("a: &a 1\nb: [1\nc: *a\n");
        assert!(e.loc.is_some(), "{e}");
    }

    #[test]
    fn documents() {
        for empty in [
            "",
            "# only a comment\n",
            "---\n",
            "--- # c\n...\n",
            "\u{feff}",
        ] {
            let y = parse(empty).unwrap();
            assert_eq!(
                (y.kind.clone(), loc(&y)),
                (YamlKind::Null, (1, 1)),
                "{empty:?}"
            );
        }
        let (m, line) = err_line("a: 1\n---\nb: 2\n");
        assert!(m.contains("second YAML document"), "{m}");
        assert_eq!(line, 2);
        let (_, line) = err_line("a: 1\n...\nb: 2\n");
        assert_eq!(line, 3);
        assert!(parse("---\na: 1\n...\n").is_ok());
    }

    #[test]
    fn duplicate_keys() {
        let (m, line) = err_line("a: 1\nb: 2\na: 3\n");
        assert_eq!(m, "duplicate key \"a\" (first defined on line 1)");
        assert_eq!(line, 3);
        let e = err("x:\n  k: 1\n  \"k\": 2\n");
        assert_eq!(e.message, "duplicate key \"k\" (first defined on line 2)");
        assert_eq!((e.loc.unwrap().line, e.loc.unwrap().col), (3, 3));
        let (m, line) = err_line("{1: a, 0x1: b}");
        assert!(
            m.contains("duplicate key 0x1 (first defined on line 1)"),
            "{m}"
        );
        assert_eq!(line, 1);
        let (m, line) = err_line("a: &k key\n? *k\n: 2\nkey: 3\n");
        assert!(
            m.contains("duplicate key \"key\" (first defined on line 2)"),
            "{m}"
        );
        assert_eq!(line, 4);
        // Different types are different keys.
        let y = parse("1: a\n\"1\": b\n").unwrap();
        assert_eq!(y.get("1").unwrap().as_str(), Some("b"));
    }

    #[test]
    fn tags_merge_keys_and_keys() {
        let (m, line) = err_line("a: 1\nb: !foo 2\n");
        assert_eq!((m.as_str(), line), ("YAML tags are not supported", 2));
        let (m, line) = err_line("a:\n  - !!str 1\n");
        assert_eq!((m.as_str(), line), ("YAML tags are not supported", 2));
        let (m, line) = err_line("x: !m {a: 1}\n");
        assert_eq!((m.as_str(), line), ("YAML tags are not supported", 1));
        let (m, line) = err_line("base: &b {a: 1}\nc:\n  <<: *b\n  d: 2\n");
        assert_eq!(
            (m.as_str(), line),
            ("merge keys (`<<`) are not supported", 3)
        );
        // A quoted "<<" is an ordinary key.
        assert!(parse("\"<<\": 1\n").is_ok());
        let (m, line) = err_line("a: 1\n[x, y]: 2\n");
        assert!(m.contains("map keys must be scalars"), "{m}");
        assert_eq!(line, 2);
        let (m, line) = err_line("l: &l [1]\n? *l\n: 2\n");
        assert!(m.contains("map keys must be scalars"), "{m}");
        assert_eq!(line, 2);
        // Scalar keys of any type are accepted.
        let y = parse("1: a\ntrue: b\n~: c\n").unwrap();
        let YamlKind::Map(entries) = &y.kind else {
            panic!()
        };
        assert_eq!(entries[0].0.kind, YamlKind::Int(1));
        assert_eq!(entries[1].0.kind, YamlKind::Bool(true));
        assert_eq!(entries[2].0.kind, YamlKind::Null);
        assert_eq!(y.get("1"), None);
    }

    #[test]
    fn integers_out_of_range() {
        for (src, line) in [
            ("a: 1\nb: 99999999999999999999\n", 2),
            ("a: -99999999999999999999\n", 1),
            ("a:\n  - 9223372036854775808\n", 2),
            ("a: 18446744073709551615\n", 1),
            ("a: 0xFFFFFFFFFFFFFFFF\n", 1),
            ("a: 99999999999999999999999999999999999999999999\n", 1),
            ("99999999999999999999: a\n", 1),
        ] {
            let e = err(src);
            assert!(e.message.starts_with("integer "), "{e}");
            assert!(e.message.contains("is out of range"), "{e}");
            assert_eq!(e.loc.unwrap().line, line, "{src}");
        }
        let e = err("x: 99999999999999999999\n");
        assert_eq!(e.loc.unwrap().col, 4);
        assert!(e.message.contains("99999999999999999999"), "{e}");
        let y =
            parse("a: 9223372036854775807\nb: -9223372036854775808\nc: \"99999999999999999999\"\n")
                .unwrap();
        assert_eq!(y.get("a").unwrap().kind, YamlKind::Int(i64::MAX));
        assert_eq!(y.get("b").unwrap().kind, YamlKind::Int(i64::MIN));
        assert_eq!(y.get("c").unwrap().type_name(), "string");
        assert_eq!(y.get("a").unwrap().type_name(), "integer");
    }

    #[test]
    fn limits() {
        let big = "a".repeat(MAX_SOURCE_BYTES + 1);
        let e = err(&big);
        assert!(e.message.contains("4 MiB"), "{e}");
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        let (m, line) = err_line(&deep);
        assert!(m.contains("nested more than 128 deep"), "{m}");
        assert_eq!(line, 1);
        assert_eq!(err(&deep).loc.unwrap().col, 129);
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(parse(&ok).is_ok());
        let mut block = String::new();
        for i in 0..130 {
            block.push_str(&" ".repeat(i));
            block.push_str("- \n");
        }
        block.push_str(&" ".repeat(130));
        block.push_str("- x\n");
        let (m, _) = err_line(&block);
        assert!(m.contains("nested more than 128 deep"), "{m}");
        // Depth through an alias counts too.
        let nested = format!(
            "a: &a {}{}\nb: {}*a{}\n",
            "[".repeat(100),
            "]".repeat(100),
            "[".repeat(40),
            "]".repeat(40)
        );
        let (m, line) = err_line(&nested);
        assert!(m.contains("128 deep"), "{m}");
        assert_eq!(line, 2);
    }

    #[test]
    fn alias_bombs_fail_fast() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(",");
            bomb.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], refs));
        }
        let started = std::time::Instant::now();
        let (m, line) = err_line(&bomb);
        assert!(m.contains("1000000 nodes"), "{m}");
        assert!((6..=9).contains(&line), "{line}");
        assert!(started.elapsed().as_secs() < 5);
        // One big anchored node referenced many times.
        let mut wide = String::from("a: &a [");
        wide.push_str(&vec!["1"; 20_000].join(","));
        wide.push_str("]\nb: [");
        wide.push_str(&vec!["*a"; 200].join(","));
        wide.push_str("]\n");
        let started = std::time::Instant::now();
        let (m, line) = err_line(&wide);
        assert!(m.contains("nodes"), "{m}");
        assert_eq!(line, 2);
        assert!(started.elapsed().as_secs() < 5);
        // Unchecked aliases right before a syntax error.
        let mut lag = String::from("a: &a [");
        lag.push_str(&vec!["1"; 20_000].join(","));
        lag.push_str("]\nb: [[");
        lag.push_str(&vec!["*a"; 200].join(","));
        lag.push_str("] \"unterminated\n");
        let started = std::time::Instant::now();
        let e = err(&lag);
        assert_eq!(e.loc.unwrap().line, 2, "{e}");
        assert!(started.elapsed().as_secs() < 5);
        // Long text referenced many times.
        let mut text = format!("a: &a \"{}\"\nb: [", "x".repeat(1 << 20));
        text.push_str(&vec!["*a"; 100].join(","));
        text.push_str("]\n");
        let (m, line) = err_line(&text);
        assert!(m.contains("bytes of text"), "{m}");
        assert_eq!(line, 2);
    }

    #[test]
    fn accessors() {
        let y = parse("a: [1]\nb: {c: d}\ne: 2.5\nf: null\ng: false\n").unwrap();
        assert_eq!(y.type_name(), "map");
        assert_eq!(y.get("a").unwrap().type_name(), "list");
        assert_eq!(y.get("b").unwrap().get("c").unwrap().as_str(), Some("d"));
        assert_eq!(y.get("e").unwrap().kind, YamlKind::Float(2.5));
        assert_eq!(y.get("f").unwrap().type_name(), "null");
        assert_eq!(y.get("g").unwrap().type_name(), "bool");
        assert_eq!(y.get("zz"), None);
        assert_eq!(y.get("a").unwrap().get("x"), None);
        assert_eq!(y.as_str(), None);
        assert_eq!(y.style, ScalarStyle::NotScalar);
    }

    /// Checks that `loc` is a real position of `src`: a char boundary whose
    /// line and column are those of its offset.
    fn check_loc(src: &str, loc: Loc) {
        assert!(loc.offset <= src.len(), "{loc:?} past {}", src.len());
        assert!(src.is_char_boundary(loc.offset), "{loc:?}");
        let bom = if src.starts_with('\u{feff}') { 3 } else { 0 };
        let start = bom.min(loc.offset);
        let mut line = 1;
        let mut col = 1;
        // A `\r\n` is one line break, also for a place between its two
        // chars: look past `loc` for the `\n`.
        for (i, c) in src[start..loc.offset].char_indices() {
            let crlf = c == '\r' && src[start + i + 1..].starts_with('\n');
            if c == '\n' || (c == '\r' && !crlf) {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        assert_eq!((loc.line, loc.col), (line, col), "{loc:?} in {src:?}");
    }

    /// Checks that `y`, from a successful parse of `src`, is located at a
    /// real position and, unless it fell back to the location of its parent
    /// (`parent`) or `src` has chars that are line breaks to serde_yaml only,
    /// that the source there starts the way such a node starts (so the two
    /// parsers' trees were paired up right).
    fn check_tree(src: &str, y: &Yaml, parent: Loc) {
        check_loc(src, y.loc);
        let here = src[y.loc.offset..].chars().next();
        let yaml11_breaks = src.contains(['\u{85}', '\u{2028}', '\u{2029}']);
        // The root of an alias copy is at the alias.
        if y.loc != parent && !yaml11_breaks && here != Some('*') {
            match (&y.kind, y.style) {
                (YamlKind::Str(s), ScalarStyle::Plain) => {
                    assert_eq!(here, s.chars().next(), "{y:?} in {src:?}")
                }
                (_, ScalarStyle::Quoted) => {
                    assert!(matches!(here, Some('"' | '\'')), "{y:?} in {src:?}")
                }
                (_, ScalarStyle::Block) => {
                    assert!(matches!(here, Some('|' | '>')), "{y:?} in {src:?}")
                }
                (YamlKind::Seq(_), _) => {
                    assert!(matches!(here, Some('[' | '-')), "{y:?} in {src:?}")
                }
                (YamlKind::Map(entries), _) => assert!(
                    matches!(here, Some('{' | '?'))
                        || entries.first().is_some_and(|(k, _)| k.loc == y.loc),
                    "{y:?} in {src:?}"
                ),
                _ => {}
            }
        }
        match &y.kind {
            YamlKind::Seq(items) => items.iter().for_each(|i| check_tree(src, i, y.loc)),
            YamlKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                check_tree(src, k, y.loc);
                check_tree(src, v, y.loc);
            }),
            _ => {}
        }
    }

    /// Where the document of `src` starts: the fallback location of the root.
    fn start_of(src: &str) -> Loc {
        let offset = if src.starts_with('\u{feff}') { 3 } else { 0 };
        Loc {
            line: 1,
            col: 1,
            offset,
        }
    }

    fn check_any(src: &str) {
        match parse(src) {
            Ok(y) => check_tree(src, &y, start_of(src)),
            Err(e) => {
                if let Some(l) = e.loc {
                    check_loc(src, l);
                }
            }
        }
    }

    /// A generated YAML node, with the style it is written in.
    #[derive(Debug, Clone)]
    enum Gen {
        Word(String),
        Int(i64),
        Quoted(String, bool),
        Literal(String),
        /// Items, and 0 for flow, 1 for block, 2 for indentless style.
        Seq(Vec<Gen>, u8),
        Map(Vec<Gen>, bool),
        /// A node with an anchor (and a comment after it, in block style).
        Anchored(Box<Gen>),
    }

    fn gen_node() -> impl proptest::strategy::Strategy<Value = Gen> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            "w[a-zé]{0,4}".prop_map(Gen::Word),
            any::<i64>().prop_map(Gen::Int),
            ("[a-z é#:'\"]{0,6}", any::<bool>()).prop_map(|(s, d)| Gen::Quoted(s, d)),
            "[a-z][a-z é]{0,6}".prop_map(Gen::Literal),
        ];
        leaf.prop_recursive(5, 40, 5, |inner| {
            let items = proptest::collection::vec(inner.clone(), 0..5);
            let values = proptest::collection::vec(inner.clone(), 0..5);
            prop_oneof![
                (items, 0u8..3).prop_map(|(v, f)| Gen::Seq(v, f)),
                (values, any::<bool>()).prop_map(|(v, f)| Gen::Map(v, f)),
                inner.prop_map(|g| match g {
                    Gen::Anchored(_) => g,
                    g => Gen::Anchored(Box::new(g)),
                }),
            ]
        })
    }

    /// Writes `g` in flow style.
    fn flow(g: &Gen, out: &mut String) {
        match g {
            Gen::Word(w) => out.push_str(w),
            Gen::Int(i) => out.push_str(&i.to_string()),
            Gen::Quoted(s, true) | Gen::Literal(s) => out.push_str(&format!("{s:?}")),
            Gen::Quoted(s, false) => out.push_str(&format!("'{}'", s.replace('\'', "''"))),
            Gen::Anchored(g) => {
                out.push_str("&a ");
                flow(g, out);
            }
            Gen::Seq(items, _) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    flow(item, out);
                }
                out.push(']');
            }
            Gen::Map(values, _) => {
                out.push('{');
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&format!("k{i}: "));
                    flow(v, out);
                }
                out.push('}');
            }
        }
    }

    /// Writes `g` as a block value after `key:` (`under_key`) or `-`, its
    /// block children indented by `indent`.
    fn block(g: &Gen, indent: usize, under_key: bool, out: &mut String) {
        let pad = " ".repeat(indent);
        match g {
            Gen::Literal(s) => out.push_str(&format!(" |\n{pad}{s}\n")),
            Gen::Anchored(g) => {
                let on_own_lines = match &**g {
                    Gen::Seq(items, 1 | 2) => !items.is_empty(),
                    Gen::Map(values, false) => !values.is_empty(),
                    _ => false,
                };
                out.push_str(if on_own_lines { " &a # c |" } else { " &a" });
                block(g, indent, under_key, out);
            }
            Gen::Seq(items, style @ (1 | 2)) if !items.is_empty() => {
                out.push('\n');
                let pad = if *style == 2 && under_key {
                    " ".repeat(indent - 2)
                } else {
                    pad
                };
                for item in items {
                    out.push_str(&format!("{pad}-"));
                    block(item, pad.len() + 2, false, out);
                }
            }
            Gen::Map(values, false) if !values.is_empty() => {
                out.push('\n');
                for (i, v) in values.iter().enumerate() {
                    out.push_str(&format!("{pad}k{i}:"));
                    block(v, indent + 2, true, out);
                }
            }
            _ => {
                out.push(' ');
                flow(g, out);
                out.push('\n');
            }
        }
    }

    /// Checks that `y` is what `g` describes.
    fn same(g: &Gen, y: &Yaml) {
        match (g, &y.kind) {
            (Gen::Anchored(g), _) => same(g, y),
            (Gen::Word(w), YamlKind::Str(s)) => assert_eq!(w, s),
            (Gen::Int(i), YamlKind::Int(j)) => assert_eq!(i, j),
            (Gen::Quoted(a, _), YamlKind::Str(b)) => assert_eq!(a, b),
            (Gen::Literal(a), YamlKind::Str(b)) => assert!(b.starts_with(a.as_str())),
            (Gen::Seq(items, _), YamlKind::Seq(ys)) => {
                assert_eq!(items.len(), ys.len());
                items.iter().zip(ys).for_each(|(g, y)| same(g, y));
            }
            (Gen::Map(values, _), YamlKind::Map(entries)) => {
                assert_eq!(values.len(), entries.len());
                for (i, (g, (k, v))) in values.iter().zip(entries).enumerate() {
                    assert_eq!(k.as_str(), Some(format!("k{i}").as_str()));
                    same(g, v);
                }
            }
            _ => panic!("{g:?} vs {y:?}"),
        }
    }

    const SPEC: &str = "name: tiny # a comment\r\nparams: {width: 8, \"g\": 'x'}\ninput: [3, 32, 32]\nbase: &b\n  kernel: 3\nlayers:\n  - conv: {name: stem, out: width * 2, kernel: 3, stride: 2}\n  - relu\n  - block: *b\n  - note: |\n      é text\n  - >-\n    folded\n  - [1, [2, -3.5e2], ~, true]\n";

    /// Found by `random_strings_never_panic`: an error at the end of a line
    /// that ends in `\r\n` is located between the two chars, on that line.
    #[test]
    fn an_error_before_a_crlf_is_on_its_line() {
        check_any("%\u{10000}\u{10000}\u{800}\u{a1}\u{80}\u{a1}\u{10000}\u{10000}\u{10000}\u{10000}\u{10000}\u{800}\u{10000}\u{a1}\u{a1}\u{10000}\u{10000}\u{10000}\u{10000}\n\u{a1} A A a \u{a1}\u{a1} \u{a1}\0 AaaAA0\u{a1}\u{a1}\u{a1}0\u{a1}\u{a1}\u{a1}\u{a1}\0aA  AA0\u{a1}0\0 *A0a\r\n");
    }

    #[test]
    fn the_spec_parses() {
        let y = parse(SPEC).unwrap();
        check_tree(SPEC, &y, start_of(SPEC));
        let layers = items(y.get("layers").unwrap());
        assert_eq!(layers.len(), 6);
        assert_eq!(loc(layers[3].get("note").unwrap()), (10, 11));
        assert_eq!(loc(&layers[4]), (12, 5));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        #[test]
        fn generated_documents_are_located(g in gen_node(), crlf in proptest::bool::ANY) {
            let mut src = String::from("root:");
            block(&g, 2, true, &mut src);
            if crlf {
                src = src.replace('\n', "\r\n");
            }
            let y = parse(&src).unwrap_or_else(|e| panic!("{e} in {src:?}"));
            check_tree(&src, &y, start_of(&src));
            let value = y.get("root").unwrap();
            same(&g, value);
        }

        #[test]
        fn random_strings_never_panic(src in "(?s).{0,200}") {
            check_any(&src);
        }

        #[test]
        fn yamlish_strings_never_panic(src in "[-:\\[\\]{},&*!|>'\"#?<.\\r\\n \t a-c0-9é\u{feff}\u{2028}]{0,120}") {
            check_any(&src);
        }

        #[test]
        fn mutated_specs_never_panic(
            edits in proptest::collection::vec((0usize..1000, 0u8..=255, 0u8..3), 1..8)
        ) {
            let mut bytes = SPEC.as_bytes().to_vec();
            for (pos, byte, op) in edits {
                let at = pos % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => { bytes.remove(at); }
                    _ => {}
                }
            }
            let src = String::from_utf8_lossy(&bytes).into_owned();
            check_any(&src);
        }
    }
}
