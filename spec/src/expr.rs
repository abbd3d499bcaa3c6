//! The expression language of spec files.
//!
//! Numeric fields of a spec may be written as expressions in strings, such as
//! `"out / 4"`, `"grouped_first ? groups : 1"` or
//! `"round_up({1: 144, 2: 200, 3: 240, 4: 272, 8: 384}[groups] * width, 4 * groups)"`.
//! [`parse`] turns such a string into an [`Expr`], and [`Expr::eval`] computes
//! its [`Value`] given a way to look up the names it refers to.
//!
//! # Language
//!
//! * Literals: integers (`224`), floats (`0.5`, `1.`, `.25`, `1e-3`), `true`,
//!   `false`, lists (`[116, 232, 464]`) and tables (`{1: 144, 2: 200}`).
//! * Names: `[A-Za-z_][A-Za-z0-9_]*`, answered by the lookup given to
//!   [`Expr::eval`].
//! * Operators, from lowest to highest precedence:
//!
//!   | operators                  | associativity | operands                  |
//!   |----------------------------|---------------|---------------------------|
//!   | `c ? a : b`                | right         | `c` a bool                |
//!   | <code>\|\|</code>          | left          | bools, short-circuit      |
//!   | `&&`                       | left          | bools, short-circuit      |
//!   | `== != < <= > >=`          | none          | numbers; `==`/`!=` any    |
//!   | `+ -`                      | left          | numbers                   |
//!   | `* / // %`                 | left          | numbers                   |
//!   | unary `-`, `!`             | prefix        | number, bool              |
//!   | `x[i]`, `f(a, b)`          | postfix       | list or table, function   |
//!
//! * Integer arithmetic is checked; `/` always gives a float; `//` floors and
//!   `%` takes the sign of the divisor, as in Python.
//! * Functions: `min`, `max`, `abs`, `round`, `ceil`, `floor`, `int`, `float`,
//!   `round_up`, `round_down`, `round_to`, `clamp` and `len`.
//!
//! Every error carries the byte span of the source it concerns.

use std::cmp::Ordering;
use std::fmt;

/// The longest source, in bytes, that [`parse`] accepts.
pub const MAX_SOURCE_LEN: usize = 4096;

/// How deeply parentheses, brackets, braces, calls, conditionals and unary
/// operators may nest.
pub const MAX_DEPTH: usize = 64;

/// The greatest height of a syntax tree, which bounds how many operators may
/// be chained (as in `1 + 1 + ... + 1`).
pub const MAX_HEIGHT: usize = 256;

/// The most elements a list or table literal, or arguments a call, may have.
pub const MAX_ITEMS: usize = 1024;

/// The names of the functions an expression may call, sorted.
pub const FUNCTIONS: &[&str] = &[
    "abs",
    "ceil",
    "clamp",
    "float",
    "floor",
    "int",
    "len",
    "max",
    "min",
    "round",
    "round_down",
    "round_to",
    "round_up",
];

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// A value an expression computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float; the results of expressions are always finite.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A list of values.
    List(Vec<Value>),
    /// A table of key-value pairs, in the order they were written.
    Table(Vec<(Value, Value)>),
}

impl Value {
    /// The name of this value's type: `int`, `float`, `bool`, `list` or `table`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::List(_) => "list",
            Value::Table(_) => "table",
        }
    }

    /// The integer, if this is an [`Value::Int`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, if this is an [`Value::Int`] or a [`Value::Float`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// The boolean, if this is a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Equality as the expression language's `==` sees it: numbers compare by
    /// value across `Int` and `Float` (`3 == 3.0`), lists element by element,
    /// tables as sets of entries (regardless of order), and values of
    /// different types are unequal.
    pub fn loose_eq(&self, other: &Value) -> bool {
        if let (Some(a), Some(b)) = (Num::of(self), Num::of(other)) {
            return num_cmp(a, b) == Some(Ordering::Equal);
        }
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq(y))
            }
            (Value::Table(a), Value::Table(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| {
                        b.iter()
                            .find(|(k2, _)| k.loose_eq(k2))
                            .is_some_and(|(_, v2)| v.loose_eq(v2))
                    })
            }
            _ => false,
        }
    }

    /// Whether `==` may compare the two values: both numbers, or both of the
    /// same type.
    fn comparable_with(&self, other: &Value) -> bool {
        let kind = |v: &Value| match v {
            Value::Int(_) | Value::Float(_) => 0,
            Value::Bool(_) => 1,
            Value::List(_) => 2,
            Value::Table(_) => 3,
        };
        kind(self) == kind(other)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            // `Debug` always shows a dot or an exponent: `1.0`, `0.5`, `1e16`.
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Table(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A number, for arithmetic.
#[derive(Debug, Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Int(i) => Some(Num::I(*i)),
            Value::Float(x) => Some(Num::F(*x)),
            _ => None,
        }
    }

    fn to_f64(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(x) => x,
        }
    }

    fn value(self) -> Value {
        match self {
            Num::I(i) => Value::Int(i),
            Num::F(x) => Value::Float(x),
        }
    }
}

/// 2^63 as a float: the first float above the range of `i64`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Compares an integer with a float exactly (no rounding of the integer).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    // `t` lies in the range of i64, so the cast is exact.
    match i.cmp(&(t as i64)) {
        Ordering::Equal => (t).partial_cmp(&f),
        other => Some(other),
    }
}

/// Compares two numbers by value; `None` when a NaN is involved.
fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(a), Num::I(b)) => Some(a.cmp(&b)),
        (Num::F(a), Num::F(b)) => a.partial_cmp(&b),
        (Num::I(a), Num::F(b)) => cmp_int_float(a, b),
        (Num::F(a), Num::I(b)) => cmp_int_float(b, a).map(Ordering::reverse),
    }
}

/// Python's `//` on integers; `None` on overflow. `b` must not be zero.
fn int_floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    if a % b != 0 && ((a < 0) != (b < 0)) {
        Some(q - 1)
    } else {
        Some(q)
    }
}

/// Python's `%` on integers: the result takes the sign of `b`, which must not
/// be zero.
fn int_mod(a: i64, b: i64) -> i64 {
    if b == -1 {
        return 0;
    }
    let r = a % b;
    if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    }
}

/// Python's `divmod` on floats: `(a // b, a % b)`. `b` must not be zero.
fn float_divmod(a: f64, b: f64) -> (f64, f64) {
    let mut m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 {
        if (b < 0.0) != (m < 0.0) {
            m += b;
            div -= 1.0;
        }
    } else {
        m = 0.0f64.copysign(b);
    }
    let floordiv = if div != 0.0 {
        let mut fd = div.floor();
        if div - fd > 0.5 {
            fd += 1.0;
        }
        fd
    } else {
        0.0f64.copysign(a / b)
    };
    (floordiv, m)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error with the byte span in the expression's source that it concerns.
///
/// The span always lies within the source, on `char` boundaries; an error at
/// the end of the source has `offset == source.len()` and `len == 0`. Its
/// `Display` shows the message alone; [`ExprError::render`] adds the source
/// line with the span underlined.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    /// Byte offset of the span's start in the source.
    pub offset: usize,
    /// Length of the span in bytes (0 at the end of the source).
    pub len: usize,
    /// What went wrong.
    pub message: String,
}

impl ExprError {
    /// Creates an error about `len` bytes from `offset`.
    pub fn new(offset: usize, len: usize, message: impl Into<String>) -> Self {
        ExprError {
            offset,
            len,
            message: message.into(),
        }
    }

    /// The span as a byte range of the source.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }

    /// The message followed by the source line concerned, with the span
    /// underlined by carets, for showing to a user.
    pub fn render(&self, source: &str) -> String {
        let end = self.offset.saturating_add(self.len);
        if end > source.len()
            || !source.is_char_boundary(self.offset)
            || !source.is_char_boundary(end)
        {
            return self.message.clone();
        }
        let line_start = source[..self.offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[self.offset..]
            .find('\n')
            .map_or(source.len(), |i| self.offset + i);
        let column = source[line_start..self.offset].chars().count();
        let width = source[self.offset..end.min(line_end)]
            .chars()
            .count()
            .max(1);
        format!(
            "{}\n  {}\n  {}{}",
            self.message,
            &source[line_start..line_end],
            " ".repeat(column),
            "^".repeat(width)
        )
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExprError {}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Int,
    Float,
    True,
    False,
    Name,
    Plus,
    Minus,
    Star,
    Slash,
    SlashSlash,
    Percent,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Question,
    Colon,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Eof,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = src.as_bytes();
    let n = bytes.len();
    let digit_at = |j: usize| j < n && bytes[j].is_ascii_digit();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(c) = src[i..].chars().next() {
        let start = i;
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let tok = if c.is_ascii_digit() || (c == '.' && digit_at(i + 1)) {
            let mut float = false;
            while digit_at(i) {
                i += 1;
            }
            if i < n && bytes[i] == b'.' {
                float = true;
                i += 1;
                while digit_at(i) {
                    i += 1;
                }
            }
            if i < n && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut k = i + 1;
                if k < n && (bytes[k] == b'+' || bytes[k] == b'-') {
                    k += 1;
                }
                if !digit_at(k) {
                    return Err(ExprError::new(
                        start,
                        k - start,
                        format!(
                            "expected digits in the exponent of number `{}`",
                            &src[start..k]
                        ),
                    ));
                }
                float = true;
                i = k;
                while digit_at(i) {
                    i += 1;
                }
            }
            if float {
                Tok::Float
            } else {
                Tok::Int
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < n && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            match &src[start..i] {
                "true" => Tok::True,
                "false" => Tok::False,
                _ => Tok::Name,
            }
        } else {
            let next = bytes.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('/', Some(b'/')) => (Tok::SlashSlash, 2),
                ('=', Some(b'=')) => (Tok::EqEq, 2),
                ('!', Some(b'=')) => (Tok::Ne, 2),
                ('<', Some(b'=')) => (Tok::Le, 2),
                ('>', Some(b'=')) => (Tok::Ge, 2),
                ('&', Some(b'&')) => (Tok::AndAnd, 2),
                ('|', Some(b'|')) => (Tok::OrOr, 2),
                ('+', _) => (Tok::Plus, 1),
                ('-', _) => (Tok::Minus, 1),
                ('*', _) => (Tok::Star, 1),
                ('/', _) => (Tok::Slash, 1),
                ('%', _) => (Tok::Percent, 1),
                ('<', _) => (Tok::Lt, 1),
                ('>', _) => (Tok::Gt, 1),
                ('!', _) => (Tok::Bang, 1),
                ('?', _) => (Tok::Question, 1),
                (':', _) => (Tok::Colon, 1),
                ('(', _) => (Tok::LParen, 1),
                (')', _) => (Tok::RParen, 1),
                ('[', _) => (Tok::LBracket, 1),
                (']', _) => (Tok::RBracket, 1),
                ('{', _) => (Tok::LBrace, 1),
                ('}', _) => (Tok::RBrace, 1),
                (',', _) => (Tok::Comma, 1),
                _ => {
                    let hint = match c {
                        '=' => " (did you mean `==`?)",
                        '&' => " (did you mean `&&`?)",
                        '|' => " (did you mean `||`?)",
                        _ => "",
                    };
                    let shown = match c {
                        '"' | '\'' | '\\' => c.to_string(),
                        _ => c.escape_debug().to_string(),
                    };
                    return Err(ExprError::new(
                        start,
                        c.len_utf8(),
                        format!("unexpected character `{shown}`{hint}"),
                    ));
                }
            };
            i += len;
            tok
        };
        toks.push(Token { tok, start, end: i });
    }
    toks.push(Token {
        tok: Tok::Eof,
        start: n,
        end: n,
    });
    Ok(toks)
}

// ---------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
        }
    }

    /// The binary operator a token stands for, with its precedence (higher
    /// binds tighter).
    fn of_token(tok: Tok) -> Option<(BinOp, u8)> {
        Some(match tok {
            Tok::OrOr => (BinOp::Or, 1),
            Tok::AndAnd => (BinOp::And, 2),
            Tok::EqEq => (BinOp::Eq, COMPARISON),
            Tok::Ne => (BinOp::Ne, COMPARISON),
            Tok::Lt => (BinOp::Lt, COMPARISON),
            Tok::Le => (BinOp::Le, COMPARISON),
            Tok::Gt => (BinOp::Gt, COMPARISON),
            Tok::Ge => (BinOp::Ge, COMPARISON),
            Tok::Plus => (BinOp::Add, 4),
            Tok::Minus => (BinOp::Sub, 4),
            Tok::Star => (BinOp::Mul, 5),
            Tok::Slash => (BinOp::Div, 5),
            Tok::SlashSlash => (BinOp::FloorDiv, 5),
            Tok::Percent => (BinOp::Mod, 5),
            _ => return None,
        })
    }
}

/// The precedence of the (non-associative) comparison operators.
const COMPARISON: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Min,
    Max,
    Abs,
    Round,
    Ceil,
    Floor,
    Int,
    Float,
    RoundUp,
    RoundDown,
    RoundTo,
    Clamp,
    Len,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "min" => Func::Min,
            "max" => Func::Max,
            "abs" => Func::Abs,
            "round" => Func::Round,
            "ceil" => Func::Ceil,
            "floor" => Func::Floor,
            "int" => Func::Int,
            "float" => Func::Float,
            "round_up" => Func::RoundUp,
            "round_down" => Func::RoundDown,
            "round_to" => Func::RoundTo,
            "clamp" => Func::Clamp,
            "len" => Func::Len,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Func::Min => "min",
            Func::Max => "max",
            Func::Abs => "abs",
            Func::Round => "round",
            Func::Ceil => "ceil",
            Func::Floor => "floor",
            Func::Int => "int",
            Func::Float => "float",
            Func::RoundUp => "round_up",
            Func::RoundDown => "round_down",
            Func::RoundTo => "round_to",
            Func::Clamp => "clamp",
            Func::Len => "len",
        }
    }

    /// The number of arguments taken; `None` means "at least one".
    fn arity(self) -> Option<usize> {
        match self {
            Func::Min | Func::Max => None,
            Func::RoundUp | Func::RoundDown | Func::RoundTo => Some(2),
            Func::Clamp => Some(3),
            _ => Some(1),
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Lit(Value),
    Name(String),
    List(Vec<Node>),
    Table(Vec<(Node, Node)>),
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Index(Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    start: usize,
    end: usize,
    height: usize,
}

impl Node {
    /// Builds a node, refusing trees taller than [`MAX_HEIGHT`].
    fn new(kind: Kind, start: usize, end: usize) -> Result<Node, ExprError> {
        let mut node = Node {
            kind,
            start,
            end,
            height: 1,
        };
        node.height = 1 + node.children().iter().map(|c| c.height).max().unwrap_or(0);
        if node.height > MAX_HEIGHT {
            return Err(ExprError::new(
                start,
                end - start,
                format!("expression nested too deeply (more than {MAX_HEIGHT} chained operations)"),
            ));
        }
        Ok(node)
    }

    /// The sub-expressions, in source order.
    fn children(&self) -> Vec<&Node> {
        match &self.kind {
            Kind::Lit(_) | Kind::Name(_) => Vec::new(),
            Kind::List(items) | Kind::Call(_, items) => items.iter().collect(),
            Kind::Table(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
            Kind::Unary(_, a) => vec![a],
            Kind::Binary(_, a, b) | Kind::Index(a, b) => vec![a, b],
            Kind::Cond(c, a, b) => vec![c, a, b],
        }
    }

    fn err(&self, message: impl Into<String>) -> ExprError {
        ExprError::new(self.start, self.end - self.start, message)
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Token {
        self.toks[self.pos]
    }

    fn peek_at(&self, ahead: usize) -> Token {
        self.toks[(self.pos + ahead).min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos];
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn text(&self, t: Token) -> &str {
        &self.src[t.start..t.end]
    }

    /// An error at `t` saying what was expected there.
    fn expected(&self, t: Token, what: &str) -> ExprError {
        if t.tok == Tok::Eof {
            ExprError::new(
                t.start,
                0,
                format!("unexpected end of expression: expected {what}"),
            )
        } else {
            ExprError::new(
                t.start,
                t.end - t.start,
                format!("expected {what}, found `{}`", self.text(t)),
            )
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Token, ExprError> {
        let t = self.peek();
        if t.tok == tok {
            Ok(self.bump())
        } else {
            Err(self.expected(t, what))
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let t = self.peek();
            return Err(ExprError::new(
                t.start,
                t.end - t.start,
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // The functions on the recursive path of parsing (`expr`, `operators`,
    // `unary`, `postfix`, `primary` and what it calls) keep few locals, so
    // that deep nesting fits in small stacks even in debug builds.

    fn expr(&mut self) -> Result<Node, ExprError> {
        self.enter()?;
        let node = self.operators()?;
        let node = if self.peek().tok == Tok::Question {
            self.conditional(node)?
        } else {
            node
        };
        self.leave();
        Ok(node)
    }

    /// The rest of `cond ? a : b`, from the `?`.
    fn conditional(&mut self, cond: Node) -> Result<Node, ExprError> {
        self.bump();
        let then = self.expr()?;
        self.expect(Tok::Colon, "`:` in conditional expression")?;
        let otherwise = self.expr()?;
        let (start, end) = (cond.start, otherwise.end);
        Node::new(
            Kind::Cond(Box::new(cond), Box::new(then), Box::new(otherwise)),
            start,
            end,
        )
    }

    fn operators(&mut self) -> Result<Node, ExprError> {
        let first = self.unary()?;
        if BinOp::of_token(self.peek().tok).is_none() {
            return Ok(first);
        }
        self.operator_chain(first)
    }

    /// Parses operands joined by binary operators, after the first operand,
    /// by operator precedence with explicit stacks (one stack frame for all
    /// precedence levels).
    fn operator_chain(&mut self, first: Node) -> Result<Node, ExprError> {
        let mut operands = vec![first];
        let mut ops: Vec<(BinOp, u8)> = Vec::new();
        while let Some((op, prec)) = BinOp::of_token(self.peek().tok) {
            let t = self.bump();
            while let Some(&(top, top_prec)) = ops.last() {
                if top_prec < prec {
                    break;
                }
                if prec == COMPARISON && top_prec == COMPARISON {
                    return Err(chained(t));
                }
                ops.pop();
                Self::reduce(&mut operands, top)?;
            }
            ops.push((op, prec));
            operands.push(self.unary()?);
        }
        while let Some((op, _)) = ops.pop() {
            Self::reduce(&mut operands, op)?;
        }
        Ok(operands.pop().expect("one operand is left"))
    }

    /// Replaces the two topmost operands by `op` applied to them.
    fn reduce(operands: &mut Vec<Node>, op: BinOp) -> Result<(), ExprError> {
        let right = operands.pop().expect("a right operand");
        let left = operands.pop().expect("a left operand");
        let (start, end) = (left.start, right.end);
        let node = Node::new(
            Kind::Binary(op, Box::new(left), Box::new(right)),
            start,
            end,
        )?;
        operands.push(node);
        Ok(())
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        match self.peek().tok {
            Tok::Minus | Tok::Bang => self.prefixed(),
            _ => self.postfix(),
        }
    }

    /// A unary operator and its operand.
    fn prefixed(&mut self) -> Result<Node, ExprError> {
        let t = self.peek();
        let op = if t.tok == Tok::Minus {
            UnOp::Neg
        } else {
            UnOp::Not
        };
        self.bump();
        if op == UnOp::Neg {
            if let Some(min) = self.int_min(t) {
                return min;
            }
        }
        self.enter()?;
        let operand = self.unary()?;
        self.leave();
        let end = operand.end;
        Node::new(Kind::Unary(op, Box::new(operand)), t.start, end)
    }

    /// `-9223372036854775808` is i64::MIN, although its digits alone
    /// overflow: after the `-` token `minus`, reads such a literal if there.
    fn int_min(&mut self, minus: Token) -> Option<Result<Node, ExprError>> {
        let lit = self.peek();
        let is_min = lit.tok == Tok::Int
            && self.peek_at(1).tok != Tok::LBracket
            && self.text(lit).parse::<u64>() == Ok(1 << 63);
        if !is_min {
            return None;
        }
        self.bump();
        Some(Node::new(
            Kind::Lit(Value::Int(i64::MIN)),
            minus.start,
            lit.end,
        ))
    }

    fn postfix(&mut self) -> Result<Node, ExprError> {
        let base = self.primary()?;
        if self.peek().tok == Tok::LBracket {
            self.indexes(base)
        } else {
            Ok(base)
        }
    }

    /// Indexes `base` with the `[...]` that follow.
    fn indexes(&mut self, mut base: Node) -> Result<Node, ExprError> {
        while self.peek().tok == Tok::LBracket {
            self.bump();
            let index = self.expr()?;
            let close = self.expect(Tok::RBracket, "`]` after index")?;
            let start = base.start;
            base = Node::new(
                Kind::Index(Box::new(base), Box::new(index)),
                start,
                close.end,
            )?;
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let t = self.bump();
        match t.tok {
            Tok::LParen => self.parenthesized(t),
            Tok::LBracket => self.list(t),
            Tok::LBrace => self.table(t),
            Tok::Name if self.peek().tok == Tok::LParen => self.call(t),
            _ => self.atom(t),
        }
    }

    fn parenthesized(&mut self, open: Token) -> Result<Node, ExprError> {
        let mut inner = self.expr()?;
        inner.start = open.start;
        inner.end = self.expect(Tok::RParen, "`)` to close `(`")?.end;
        Ok(inner)
    }

    fn list(&mut self, open: Token) -> Result<Node, ExprError> {
        let (items, end) = self.items(Tok::RBracket, "list literal", Self::expr)?;
        Node::new(Kind::List(items), open.start, end)
    }

    fn table(&mut self, open: Token) -> Result<Node, ExprError> {
        let (entries, end) = self.items(Tok::RBrace, "table literal", Self::entry)?;
        Node::new(Kind::Table(entries), open.start, end)
    }

    fn entry(&mut self) -> Result<(Node, Node), ExprError> {
        let key = self.expr()?;
        self.expect(Tok::Colon, "`:` after table key")?;
        Ok((key, self.expr()?))
    }

    /// A literal or a name (or an error if `t` starts no expression).
    fn atom(&self, t: Token) -> Result<Node, ExprError> {
        let text = self.text(t);
        let kind = match t.tok {
            Tok::Int => match text.parse::<i64>() {
                Ok(i) => Kind::Lit(Value::Int(i)),
                Err(_) => {
                    return Err(ExprError::new(
                        t.start,
                        t.end - t.start,
                        format!(
                            "integer literal `{text}` is too large (the largest is {})",
                            i64::MAX
                        ),
                    ))
                }
            },
            Tok::Float => match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Kind::Lit(Value::Float(x)),
                _ => {
                    return Err(ExprError::new(
                        t.start,
                        t.end - t.start,
                        format!("number `{text}` is too large for a float"),
                    ))
                }
            },
            Tok::True => Kind::Lit(Value::Bool(true)),
            Tok::False => Kind::Lit(Value::Bool(false)),
            Tok::Name => Kind::Name(text.to_string()),
            _ => return Err(self.expected(t, "an expression")),
        };
        Node::new(kind, t.start, t.end)
    }

    /// Parses comma-separated items up to and including `close` (the opening
    /// token has been consumed); a trailing comma is allowed. Returns the
    /// items and the end of the closing token.
    fn items<T>(
        &mut self,
        close: Tok,
        what: &str,
        item: fn(&mut Self) -> Result<T, ExprError>,
    ) -> Result<(Vec<T>, usize), ExprError> {
        let mut items = Vec::new();
        while self.peek().tok != close {
            if items.len() == MAX_ITEMS {
                return Err(self.too_many(what));
            }
            items.push(item(self)?);
            let t = self.peek().tok;
            if t == Tok::Comma {
                self.bump();
            } else if t != close {
                return Err(self.bad_separator(close, what));
            }
        }
        Ok((items, self.bump().end))
    }

    fn too_many(&self, what: &str) -> ExprError {
        let t = self.peek();
        ExprError::new(
            t.start,
            t.end - t.start,
            format!("{what} has more than {MAX_ITEMS} elements"),
        )
    }

    fn bad_separator(&self, close: Tok, what: &str) -> ExprError {
        let expected = match close {
            Tok::RParen => "`)` after argument list".to_string(),
            Tok::RBracket => format!("`,` or `]` in {what}"),
            _ => format!("`,` or `}}` in {what}"),
        };
        self.expected(self.peek(), &expected)
    }

    fn call(&mut self, name: Token) -> Result<Node, ExprError> {
        let func = self.function(name)?;
        self.bump(); // `(`
        let (args, end) = self.items(Tok::RParen, "argument list", Self::expr)?;
        let node = Node::new(Kind::Call(func, args), name.start, end)?;
        check_arity(func, &node)?;
        Ok(node)
    }

    fn function(&self, name: Token) -> Result<Func, ExprError> {
        let text = self.text(name);
        Func::from_name(text).ok_or_else(|| {
            ExprError::new(
                name.start,
                name.end - name.start,
                format!(
                    "unknown function `{text}`; the known functions are {}",
                    FUNCTIONS.join(", ")
                ),
            )
        })
    }
}

fn chained(t: Token) -> ExprError {
    ExprError::new(
        t.start,
        t.end - t.start,
        "comparison operators cannot be chained; use `&&` or parentheses",
    )
}

/// Fails if the call `node` has the wrong number of arguments for `func`.
fn check_arity(func: Func, node: &Node) -> Result<(), ExprError> {
    let found = node.children().len();
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    match func.arity() {
        Some(n) if n != found => Err(node.err(format!(
            "{}() takes {n} {}, found {found}",
            func.name(),
            plural(n)
        ))),
        None if found == 0 => Err(node.err(format!(
            "{}() takes at least 1 argument, found 0",
            func.name()
        ))),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------

/// A parsed expression, which keeps its source text and the byte spans of its
/// sub-expressions for errors.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Node,
}

/// Parses an expression.
///
/// Fails on syntax errors, integer literals outside `i64`, unknown functions,
/// calls with the wrong number of arguments, and inputs beyond the limits
/// [`MAX_SOURCE_LEN`], [`MAX_DEPTH`], [`MAX_HEIGHT`] and [`MAX_ITEMS`].
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_SOURCE_LEN {
        let mut cut = MAX_SOURCE_LEN;
        while !src.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(ExprError::new(
            cut,
            src.len() - cut,
            format!(
                "expression is too long ({} bytes; the limit is {MAX_SOURCE_LEN})",
                src.len()
            ),
        ));
    }
    let mut parser = Parser {
        src,
        toks: lex(src)?,
        pos: 0,
        depth: 0,
    };
    let root = parser.expr()?;
    let t = parser.peek();
    if t.tok != Tok::Eof {
        return Err(parser.expected(t, "an operator or end of expression"));
    }
    Ok(Expr {
        source: src.to_string(),
        root,
    })
}

impl std::str::FromStr for Expr {
    type Err = ExprError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Expr {
    /// The source text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Computes the expression's value. `lookup` answers a name with its
    /// value, or None when the name is unknown.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<Value>) -> Result<Value, ExprError> {
        Evaluator { lookup }.eval(&self.root)
    }

    /// Names the expression refers to, in order of first appearance, without
    /// duplicates (function names are not included).
    pub fn names(&self) -> Vec<String> {
        fn walk(node: &Node, out: &mut Vec<String>) {
            if let Kind::Name(name) = &node.kind {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            for child in node.children() {
                walk(child, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// The value of the expression if it is a bare literal (`224`, `0.5`,
    /// `true`, or a negated number), without evaluating anything.
    pub fn as_literal(&self) -> Option<Value> {
        match &self.root.kind {
            Kind::Lit(v) => Some(v.clone()),
            Kind::Unary(UnOp::Neg, inner) => match inner.kind {
                Kind::Lit(Value::Int(i)) => i.checked_neg().map(Value::Int),
                Kind::Lit(Value::Float(x)) => Some(Value::Float(-x)),
                _ => None,
            },
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

struct Evaluator<'a> {
    lookup: &'a dyn Fn(&str) -> Option<Value>,
}

/// How `round_up`, `round_down` and `round_to` pick a multiple.
#[derive(Clone, Copy)]
enum Rounding {
    Up,
    Down,
    Nearest,
}

impl Rounding {
    fn quotient_int(self, x: i128, m: i128) -> i128 {
        match self {
            Rounding::Up => x.div_euclid(m) + i128::from(x.rem_euclid(m) != 0),
            Rounding::Down => x.div_euclid(m),
            Rounding::Nearest => (2 * x + m).div_euclid(2 * m),
        }
    }

    fn quotient_float(self, r: f64) -> f64 {
        match self {
            Rounding::Up => r.ceil(),
            Rounding::Down => r.floor(),
            Rounding::Nearest => {
                let q = r.floor();
                if r - q >= 0.5 {
                    q + 1.0
                } else {
                    q
                }
            }
        }
    }
}

/// A float as an integer, if it is finite and within the range of `i64`.
fn float_to_int(x: f64) -> Option<i64> {
    (x.is_finite() && (-TWO_POW_63..TWO_POW_63).contains(&x)).then_some(x as i64)
}

fn finite(x: f64, node: &Node, what: impl FnOnce() -> String) -> Result<Value, ExprError> {
    if x.is_finite() {
        Ok(Value::Float(x))
    } else {
        Err(node.err(format!("{} is not a finite number", what())))
    }
}

fn list_keys(entries: &[(Value, Value)]) -> String {
    const SHOWN: usize = 20;
    let mut keys: Vec<String> = entries
        .iter()
        .take(SHOWN)
        .map(|(k, _)| k.to_string())
        .collect();
    if entries.len() > SHOWN {
        keys.push(format!("... ({} more)", entries.len() - SHOWN));
    }
    keys.join(", ")
}

// The functions on the recursive path (`eval`, `binary`, `cond`) keep few
// locals so that deep trees fit in small stacks even in debug builds; the
// work that formats messages lives in functions off that path.
impl Evaluator<'_> {
    fn eval(&self, node: &Node) -> Result<Value, ExprError> {
        match &node.kind {
            Kind::Lit(v) => Ok(v.clone()),
            Kind::Name(name) => self.name(name, node),
            Kind::List(items) => self.list(items),
            Kind::Table(entries) => self.table(entries),
            Kind::Unary(op, operand) => unary(*op, self.eval(operand)?, node),
            Kind::Cond(c, a, b) => self.cond(c, a, b),
            Kind::Binary(op, l, r) => self.binary(*op, l, r, node),
            Kind::Index(base, index) => self.index(base, index),
            Kind::Call(func, args) => self.call(*func, args, node),
        }
    }

    fn name(&self, name: &str, node: &Node) -> Result<Value, ExprError> {
        (self.lookup)(name).ok_or_else(|| node.err(format!("unknown name `{name}`")))
    }

    fn list(&self, items: &[Node]) -> Result<Value, ExprError> {
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            values.push(self.eval(item)?);
        }
        Ok(Value::List(values))
    }

    fn table(&self, entries: &[(Node, Node)]) -> Result<Value, ExprError> {
        let mut table: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = self.eval(k)?;
            check_new_key(&table, &key, k)?;
            let value = self.eval(v)?;
            table.push((key, value));
        }
        Ok(Value::Table(table))
    }

    fn cond(&self, c: &Node, a: &Node, b: &Node) -> Result<Value, ExprError> {
        let chosen = if as_bool(self.eval(c)?, c, "the condition of `? :`")? {
            a
        } else {
            b
        };
        self.eval(chosen)
    }

    fn index(&self, base: &Node, index: &Node) -> Result<Value, ExprError> {
        let container = self.eval(base)?;
        let key = self.eval(index)?;
        lookup_index(container, key, base, index)
    }

    fn call(&self, func: Func, args: &[Node], node: &Node) -> Result<Value, ExprError> {
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            values.push(self.eval(arg)?);
        }
        call(func, values, args, node)
    }

    fn binary(&self, op: BinOp, l: &Node, r: &Node, node: &Node) -> Result<Value, ExprError> {
        let left = self.eval(l)?;
        if let BinOp::Or | BinOp::And = op {
            let operand = if op == BinOp::Or {
                "the left operand of `||`"
            } else {
                "the left operand of `&&`"
            };
            let left = as_bool(left, l, operand)?;
            if left == (op == BinOp::Or) {
                return Ok(Value::Bool(left));
            }
            let operand = if op == BinOp::Or {
                "the right operand of `||`"
            } else {
                "the right operand of `&&`"
            };
            return Ok(Value::Bool(as_bool(self.eval(r)?, r, operand)?));
        }
        let right = self.eval(r)?;
        apply_binary(op, &left, &right, node, r)
    }
}

/// The boolean `v`, or an error saying that `what` (at `node`) must be one.
fn as_bool(v: Value, node: &Node, what: &str) -> Result<bool, ExprError> {
    match v {
        Value::Bool(b) => Ok(b),
        v => Err(node.err(format!("{what} must be a bool, found {}", v.type_name()))),
    }
}

/// Fails if `key`, written at `node`, is already a key of `table`.
fn check_new_key(table: &[(Value, Value)], key: &Value, node: &Node) -> Result<(), ExprError> {
    if table.iter().any(|(k, _)| k.loose_eq(key)) {
        return Err(node.err(format!("duplicate key {key} in table")));
    }
    Ok(())
}

fn unary(op: UnOp, v: Value, node: &Node) -> Result<Value, ExprError> {
    match (op, v) {
        (UnOp::Neg, Value::Int(i)) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| node.err(format!("integer overflow in -({i})"))),
        (UnOp::Neg, Value::Float(x)) => Ok(Value::Float(-x)),
        (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
        (UnOp::Neg, v) => Err(node.err(format!("cannot apply unary `-` to {}", v.type_name()))),
        (UnOp::Not, v) => Err(node.err(format!("cannot apply `!` to {}", v.type_name()))),
    }
}

/// `container[key]`, where `base` and `index` are the nodes of the two.
fn lookup_index(
    container: Value,
    key: Value,
    base: &Node,
    index: &Node,
) -> Result<Value, ExprError> {
    match container {
        Value::List(items) => {
            let Value::Int(i) = key else {
                return Err(index.err(format!(
                    "a list index must be an int, found {}",
                    key.type_name()
                )));
            };
            let len = items.len();
            usize::try_from(i)
                .ok()
                .and_then(|i| items.into_iter().nth(i))
                .ok_or_else(|| {
                    index.err(format!("index {i} out of range for list of length {len}"))
                })
        }
        Value::Table(mut entries) => match entries.iter().position(|(k, _)| k.loose_eq(&key)) {
            Some(p) => Ok(entries.swap_remove(p).1),
            None if entries.is_empty() => {
                Err(index.err(format!("no entry for {key} in table; the table is empty")))
            }
            None => Err(index.err(format!(
                "no entry for {key} in table; keys are {}",
                list_keys(&entries)
            ))),
        },
        v => Err(base.err(format!("cannot index into {}", v.type_name()))),
    }
}

/// `a op b` for any binary operator but `&&` and `||`; `node` is the whole
/// operation's and `r` the right operand's.
fn apply_binary(
    op: BinOp,
    a: &Value,
    b: &Value,
    node: &Node,
    r: &Node,
) -> Result<Value, ExprError> {
    let compare = matches!(
        op,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
    );
    if !compare {
        return arith(op, a, b, node, r);
    }
    let mismatch = || {
        node.err(format!(
            "cannot compare {} with {} using `{}`",
            a.type_name(),
            b.type_name(),
            op.symbol()
        ))
    };
    if let BinOp::Eq | BinOp::Ne = op {
        if !a.comparable_with(b) {
            return Err(mismatch());
        }
        return Ok(Value::Bool(a.loose_eq(b) == (op == BinOp::Eq)));
    }
    let (Some(x), Some(y)) = (Num::of(a), Num::of(b)) else {
        return Err(mismatch());
    };
    let result = num_cmp(x, y).is_some_and(|o| match op {
        BinOp::Lt => o == Ordering::Less,
        BinOp::Le => o != Ordering::Greater,
        BinOp::Gt => o == Ordering::Greater,
        _ => o != Ordering::Less,
    });
    Ok(Value::Bool(result))
}

/// `a op b` for an arithmetic operator; `divisor` is the node of `b`.
fn arith(op: BinOp, a: &Value, b: &Value, node: &Node, divisor: &Node) -> Result<Value, ExprError> {
    let (Some(x), Some(y)) = (Num::of(a), Num::of(b)) else {
        return Err(node.err(format!(
            "cannot apply `{}` to {} and {}",
            op.symbol(),
            a.type_name(),
            b.type_name()
        )));
    };
    let divides = matches!(op, BinOp::Div | BinOp::FloorDiv | BinOp::Mod);
    if divides && y.to_f64() == 0.0 {
        return Err(divisor.err("division by zero"));
    }
    let describe = || format!("{a} {} {b}", op.symbol());
    if let (Num::I(x), Num::I(y)) = (x, y) {
        let result = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::FloorDiv => int_floor_div(x, y),
            BinOp::Mod => Some(int_mod(x, y)),
            _ => return Ok(Value::Float(x as f64 / y as f64)),
        };
        return result
            .map(Value::Int)
            .ok_or_else(|| node.err(format!("integer overflow in {}", describe())));
    }
    let (x, y) = (x.to_f64(), y.to_f64());
    let result = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::FloorDiv => float_divmod(x, y).0,
        _ => float_divmod(x, y).1,
    };
    finite(result, node, || format!("the result of {}", describe()))
}

/// Applies a function to evaluated arguments; `args` are their nodes and
/// `node` is the call's.
fn call(func: Func, values: Vec<Value>, args: &[Node], node: &Node) -> Result<Value, ExprError> {
    let name = func.name();
    let number = |i: usize| -> Result<Num, ExprError> {
        Num::of(&values[i]).ok_or_else(|| {
            args[i].err(format!(
                "{name}() expects a number, found {}",
                values[i].type_name()
            ))
        })
    };
    let to_int = |x: f64| {
        float_to_int(x).map(Value::Int).ok_or_else(|| {
            node.err(format!(
                "{name}() result {x:?} does not fit in a 64-bit integer"
            ))
        })
    };
    let overflow = || node.err(format!("integer overflow in {name}()"));
    match func {
        Func::Min | Func::Max => {
            // A single list argument stands for its elements.
            let (items, from_list): (Vec<(Value, &Node)>, bool) = match values.as_slice() {
                [Value::List(items)] => {
                    (items.iter().map(|v| (v.clone(), &args[0])).collect(), true)
                }
                _ => (values.iter().cloned().zip(args).collect(), false),
            };
            if items.is_empty() {
                return Err(node.err(format!("{name}() of an empty list")));
            }
            let mut best: Option<(Num, Value)> = None;
            for (v, n) in items {
                let Some(x) = Num::of(&v) else {
                    let what = if from_list {
                        "a list of numbers"
                    } else {
                        "numbers"
                    };
                    return Err(n.err(format!("{name}() expects {what}, found {}", v.type_name())));
                };
                let better = match &best {
                    None => true,
                    Some((b, _)) => {
                        let want = if func == Func::Min {
                            Ordering::Less
                        } else {
                            Ordering::Greater
                        };
                        num_cmp(x, *b) == Some(want)
                    }
                };
                if better {
                    best = Some((x, v));
                }
            }
            Ok(best.map(|(_, v)| v).unwrap_or(Value::Int(0)))
        }
        Func::Abs => match number(0)? {
            Num::I(i) => i.checked_abs().map(Value::Int).ok_or_else(overflow),
            Num::F(x) => Ok(Value::Float(x.abs())),
        },
        Func::Round | Func::Ceil | Func::Floor | Func::Int => match number(0)? {
            Num::I(i) => Ok(Value::Int(i)),
            Num::F(x) => to_int(match func {
                Func::Round => x.round(),
                Func::Ceil => x.ceil(),
                Func::Floor => x.floor(),
                _ => x.trunc(),
            }),
        },
        Func::Float => Ok(Value::Float(number(0)?.to_f64())),
        Func::RoundUp | Func::RoundDown | Func::RoundTo => {
            let rounding = match func {
                Func::RoundUp => Rounding::Up,
                Func::RoundDown => Rounding::Down,
                _ => Rounding::Nearest,
            };
            let x = number(0)?;
            let m = number(1)?;
            if !matches!(num_cmp(m, Num::I(0)), Some(Ordering::Greater)) {
                return Err(args[1].err(format!(
                    "{name}() needs a positive multiple, found {}",
                    values[1]
                )));
            }
            match (x, m) {
                (Num::I(x), Num::I(m)) => {
                    let q = rounding.quotient_int(i128::from(x), i128::from(m));
                    i64::try_from(q * i128::from(m))
                        .map(Value::Int)
                        .map_err(|_| overflow())
                }
                (Num::F(x), Num::I(m)) => {
                    let q = rounding.quotient_float(x / m as f64);
                    let q = float_to_int(q).ok_or_else(overflow)?;
                    q.checked_mul(m).map(Value::Int).ok_or_else(overflow)
                }
                (x, Num::F(m)) => {
                    let q = rounding.quotient_float(x.to_f64() / m);
                    finite(q * m, node, || format!("the result of {name}()"))
                }
            }
        }
        Func::Clamp => {
            let (x, lo, hi) = (number(0)?, number(1)?, number(2)?);
            if !matches!(num_cmp(lo, hi), Some(Ordering::Less | Ordering::Equal)) {
                return Err(node.err(format!(
                    "clamp() needs lo <= hi, found lo = {} and hi = {}",
                    values[1], values[2]
                )));
            }
            let v = if num_cmp(x, lo) == Some(Ordering::Less) {
                lo
            } else if num_cmp(x, hi) == Some(Ordering::Greater) {
                hi
            } else {
                x
            };
            Ok(v.value())
        }
        Func::Len => match &values[0] {
            Value::List(items) => Ok(Value::Int(items.len() as i64)),
            Value::Table(entries) => Ok(Value::Int(entries.len() as i64)),
            v => Err(args[0].err(format!(
                "len() expects a list or a table, found {}",
                v.type_name()
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(pairs: &[(i64, i64)]) -> Value {
        Value::Table(
            pairs
                .iter()
                .map(|&(k, v)| (Value::Int(k), Value::Int(v)))
                .collect(),
        )
    }

    /// The names the tests know.
    fn env(name: &str) -> Option<Value> {
        Some(match name {
            "x" => Value::Int(7),
            "x_1" => Value::Int(8),
            "y" => Value::Float(2.5),
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            "xs" => Value::List(vec![Value::Int(116), Value::Int(232), Value::Int(464)]),
            "tab" => table(&[(1, 144), (2, 200), (3, 240), (4, 272), (8, 384)]),
            "empty" => Value::Table(Vec::new()),
            "nan" => Value::Float(f64::NAN),
            _ => return None,
        })
    }

    fn ev(src: &str) -> Value {
        match parse(src).and_then(|e| e.eval(&env)) {
            Ok(v) => v,
            Err(e) => panic!("`{src}` failed: {}", e.render(src)),
        }
    }

    fn int(src: &str) -> i64 {
        match ev(src) {
            Value::Int(i) => i,
            v => panic!("`{src}` gave {v:?}, not an int"),
        }
    }

    fn float(src: &str) -> f64 {
        match ev(src) {
            Value::Float(x) => x,
            v => panic!("`{src}` gave {v:?}, not a float"),
        }
    }

    fn boolean(src: &str) -> bool {
        match ev(src) {
            Value::Bool(b) => b,
            v => panic!("`{src}` gave {v:?}, not a bool"),
        }
    }

    /// The error of parsing or evaluating `src`.
    fn err(src: &str) -> ExprError {
        match parse(src).and_then(|e| e.eval(&env)) {
            Ok(v) => panic!("`{src}` gave {v:?}, not an error"),
            Err(e) => {
                check_span(src, &e);
                e
            }
        }
    }

    /// Asserts that `src` fails with a message containing `msg`, spanning
    /// exactly `text`, which starts at byte `offset`.
    fn fails(src: &str, msg: &str, offset: usize, text: &str) {
        let e = err(src);
        assert!(
            e.message.contains(msg),
            "`{src}`: message {:?} lacks {msg:?}",
            e.message
        );
        assert_eq!(
            (e.offset, &src[e.span()]),
            (offset, text),
            "`{src}`: wrong span for {:?}",
            e.message
        );
    }

    fn check_span(src: &str, e: &ExprError) {
        assert!(!e.message.is_empty());
        let end = e.offset.checked_add(e.len).expect("span overflows");
        assert!(end <= src.len(), "span {:?} beyond {src:?}", e.span());
        assert!(src.is_char_boundary(e.offset) && src.is_char_boundary(end));
    }

    // ----- literals -----

    #[test]
    fn integer_literals() {
        assert_eq!(int("224"), 224);
        assert_eq!(int("0"), 0);
        assert_eq!(int("007"), 7);
        assert_eq!(int("9223372036854775807"), i64::MAX);
        assert_eq!(int("-9223372036854775808"), i64::MIN);
        assert_eq!(int("- 9223372036854775808"), i64::MIN);
    }

    #[test]
    fn integer_literal_too_large() {
        fails(
            "1 + 9223372036854775808",
            "integer literal `9223372036854775808` is too large",
            4,
            "9223372036854775808",
        );
        fails(
            "99999999999999999999999999999999999999999",
            "too large",
            0,
            "99999999999999999999999999999999999999999",
        );
    }

    #[test]
    fn float_literals() {
        assert_eq!(float("0.5"), 0.5);
        assert_eq!(float("1."), 1.0);
        assert_eq!(float(".25"), 0.25);
        assert_eq!(float("1e-3"), 1e-3);
        assert_eq!(float("1E3"), 1000.0);
        assert_eq!(float("1.5e+2"), 150.0);
        assert_eq!(float("1.e2"), 100.0);
        assert_eq!(float("2e0"), 2.0);
    }

    #[test]
    fn float_literal_errors() {
        fails("1e999", "number `1e999` is too large", 0, "1e999");
        fails("2 * 3e", "expected digits in the exponent", 4, "3e");
        fails("3e+ 1", "expected digits in the exponent", 0, "3e+");
        fails(
            "1.5.2",
            "expected an operator or end of expression, found `.2`",
            3,
            ".2",
        );
    }

    #[test]
    fn bool_list_and_table_literals() {
        assert!(boolean("true"));
        assert!(!boolean("false"));
        assert_eq!(ev("[]"), Value::List(vec![]));
        assert_eq!(ev("{}"), Value::Table(vec![]));
        assert_eq!(
            ev("[116, 232, 464]"),
            Value::List(vec![Value::Int(116), Value::Int(232), Value::Int(464)])
        );
        assert_eq!(ev("[1, 2,]"), ev("[1, 2]"));
        assert_eq!(ev("{1: 144, 2: 200,}"), table(&[(1, 144), (2, 200)]));
        assert_eq!(
            ev("{true: 1.5, false: [x]}"),
            Value::Table(vec![
                (Value::Bool(true), Value::Float(1.5)),
                (Value::Bool(false), Value::List(vec![Value::Int(7)])),
            ])
        );
        assert_eq!(ev("[[1], [2, 3]][1][0]"), Value::Int(2));
    }

    #[test]
    fn duplicate_table_keys() {
        fails(
            "{1: 2, 3: 4, 1.0: 5}",
            "duplicate key 1.0 in table",
            13,
            "1.0",
        );
    }

    #[test]
    fn whitespace_anywhere() {
        assert_eq!(int(" \t\n xs [ max ( 0 ,\n 1 ) ] \r\n"), 232);
        assert_eq!(int("xs[ 0 ]//4"), 29);
        assert_eq!(int("1\u{a0}+\u{2003}2"), 3);
    }

    // ----- names -----

    #[test]
    fn names_are_looked_up() {
        assert_eq!(int("x"), 7);
        assert_eq!(float("y"), 2.5);
        assert_eq!(int("x_1"), 8);
    }

    #[test]
    fn unknown_name() {
        fails("x + foo", "unknown name `foo`", 4, "foo");
        assert_eq!(err("x + foo").message, "unknown name `foo`");
        // Function names are names too when not called.
        fails("min + 1", "unknown name `min`", 0, "min");
    }

    #[test]
    fn names_in_order_without_duplicates() {
        let e = parse("a + b * a - min(c, b)[d] ? e : a").unwrap();
        assert_eq!(e.names(), ["a", "b", "c", "d", "e"]);
        assert!(parse("true || false").unwrap().names().is_empty());
        assert_eq!(parse("{k: v}[k]").unwrap().names(), ["k", "v"]);
    }

    // ----- arithmetic -----

    #[test]
    fn integer_arithmetic() {
        assert_eq!(int("2 + 3"), 5);
        assert_eq!(int("2 - 5"), -3);
        assert_eq!(int("4 * 6"), 24);
        assert_eq!(int("7 // 2"), 3);
        assert_eq!(int("7 % 3"), 1);
        assert_eq!(int("x * x"), 49);
    }

    #[test]
    fn true_division_gives_float() {
        assert_eq!(float("7 / 2"), 3.5);
        assert_eq!(ev("8 / 4"), Value::Float(2.0));
        assert_eq!(float("1 / 3"), 1.0 / 3.0);
    }

    #[test]
    fn mixed_arithmetic_gives_float() {
        assert_eq!(float("1 + 0.5"), 1.5);
        assert_eq!(ev("2 * 0.5"), Value::Float(1.0));
        assert_eq!(float("x - y"), 4.5);
        assert_eq!(ev("3.0 // 2"), Value::Float(1.0));
        assert_eq!(ev("7 % 2.0"), Value::Float(1.0));
        assert_eq!(float("0.5 - 2"), -1.5);
    }

    #[test]
    fn python_floor_division_and_modulo_on_ints() {
        for (a, b, q, r) in [
            (7, 2, 3, 1),
            (-7, 2, -4, 1),
            (7, -2, -4, -1),
            (-7, -2, 3, -1),
            (6, 3, 2, 0),
            (-6, 3, -2, 0),
            (0, 5, 0, 0),
            (1, -5, -1, -4),
        ] {
            assert_eq!(int(&format!("{a} // {b}")), q, "{a} // {b}");
            assert_eq!(int(&format!("{a} % {b}")), r, "{a} % {b}");
        }
        assert_eq!(int("-9223372036854775808 % -1"), 0);
        assert_eq!(int("-9223372036854775808 // 1"), i64::MIN);
        assert_eq!(int("-9223372036854775808 // 2"), i64::MIN / 2);
    }

    #[test]
    fn python_floor_division_and_modulo_on_floats() {
        for (src, want) in [
            ("-7.5 // 2", -4.0),
            ("-7.5 % 2", 0.5),
            ("7.5 // -2", -4.0),
            ("7.5 % -2", -0.5),
            ("1 // 0.1", 9.0),
            ("1 % 0.1", 0.09999999999999995),
            ("-1.0 // 3", -1.0),
            ("-1.0 % 3", 2.0),
            ("5.5 % 2.5", 0.5),
        ] {
            assert_eq!(float(src), want, "{src}");
        }
        // A zero remainder takes the divisor's sign.
        assert!(float("5.0 % -5").is_sign_negative());
        assert!(float("-5.0 % 5").is_sign_positive());
    }

    #[test]
    fn division_by_zero() {
        fails("1 / 0", "division by zero", 4, "0");
        fails("x // (2 - 2)", "division by zero", 5, "(2 - 2)");
        fails("1 % 0.0", "division by zero", 4, "0.0");
        fails("1.5 / 0", "division by zero", 6, "0");
        fails("y % -0.0", "division by zero", 4, "-0.0");
        fails("7 // 0 + 1", "division by zero", 5, "0");
        assert_eq!(err("1 / 0").message, "division by zero");
    }

    #[test]
    fn integer_overflow() {
        let src = "9223372036854775807 + 1";
        fails(src, "integer overflow in 9223372036854775807 + 1", 0, src);
        let src = "-9223372036854775808 - 1";
        fails(src, "integer overflow in -9223372036854775808 - 1", 0, src);
        let src = "1 + 4611686018427387904 * 2";
        fails(
            src,
            "integer overflow in 4611686018427387904 * 2",
            4,
            "4611686018427387904 * 2",
        );
        let src = "-9223372036854775808 // -1";
        fails(
            src,
            "integer overflow in -9223372036854775808 // -1",
            0,
            src,
        );
        let src = "-(-9223372036854775808)";
        fails(src, "integer overflow in -(-9223372036854775808)", 0, src);
        let src = "abs(-9223372036854775808)";
        fails(src, "integer overflow in abs()", 0, src);
    }

    #[test]
    fn non_finite_float_results() {
        let src = "1e308 * 10";
        fails(
            src,
            "the result of 1e308 * 10 is not a finite number",
            0,
            src,
        );
        fails(
            "1 + (1e308 + 1e308)",
            "not a finite number",
            4,
            "(1e308 + 1e308)",
        );
        fails("nan + 1", "not a finite number", 0, "nan + 1");
        fails(
            "1e-300 / 1e-300 * 1e300 / 1e-300",
            "not a finite number",
            0,
            "1e-300 / 1e-300 * 1e300 / 1e-300",
        );
    }

    #[test]
    fn bools_are_not_numbers() {
        fails(
            "true + 1",
            "cannot apply `+` to bool and int",
            0,
            "true + 1",
        );
        fails(
            "2 * (x > 1)",
            "cannot apply `*` to int and bool",
            0,
            "2 * (x > 1)",
        );
        fails("[1] * 2", "cannot apply `*` to list and int", 0, "[1] * 2");
        fails("1 - tab", "cannot apply `-` to int and table", 0, "1 - tab");
        fails("1 + -true", "cannot apply unary `-` to bool", 4, "-true");
        fails("!1", "cannot apply `!` to int", 0, "!1");
    }

    #[test]
    fn unary_operators() {
        assert_eq!(int("-x"), -7);
        assert_eq!(int("--x"), 7);
        assert_eq!(int("- -3"), 3);
        assert_eq!(float("-y"), -2.5);
        assert!(!boolean("!t"));
        assert!(boolean("!!t"));
        assert!(boolean("!f"));
    }

    // ----- comparisons -----

    #[test]
    fn numeric_comparisons() {
        assert!(boolean("1 < 2"));
        assert!(!boolean("2 < 2"));
        assert!(boolean("2 <= 2"));
        assert!(!boolean("3 <= 2"));
        assert!(boolean("3 > 2"));
        assert!(!boolean("2 > 2"));
        assert!(boolean("2 >= 2"));
        assert!(!boolean("2 >= 3"));
        assert!(boolean("1 == 1.0"));
        assert!(boolean("1 != 2"));
        assert!(!boolean("1 != 1"));
        assert!(boolean("2.5 > 2"));
        assert!(boolean("y < x"));
        assert!(boolean("-0.0 == 0"));
    }

    #[test]
    fn int_float_comparisons_are_exact() {
        assert!(!boolean("9007199254740993 == 9007199254740992.0"));
        assert!(boolean("9007199254740993 > 9007199254740992.0"));
        assert!(boolean("9223372036854775807 < 9223372036854775808.0"));
        assert!(boolean("-9223372036854775808 == -9223372036854775808.0"));
        assert!(boolean("-9223372036854775808 > -1e19"));
        assert!(boolean("0 > -0.5"));
        assert!(boolean("0.5 > 0"));
    }

    #[test]
    fn equality_of_bools_lists_and_tables() {
        assert!(boolean("t == true"));
        assert!(boolean("t != f"));
        assert!(boolean("[1, 2] == [1.0, 2]"));
        assert!(!boolean("[1] == [1, 2]"));
        assert!(boolean("[1] != [1, 2]"));
        assert!(!boolean("[1, true] == [1, 1]"));
        assert!(boolean("{1: 2, 3: 4} == {3: 4, 1: 2.0}"));
        assert!(!boolean("{1: 2} == {1: 3}"));
        assert!(!boolean("{1: 2} == {2: 2}"));
        assert!(boolean("xs == [116, 232, 464]"));
    }

    #[test]
    fn nan_compares_false() {
        assert!(!boolean("nan < 1"));
        assert!(!boolean("nan >= 1"));
        assert!(!boolean("nan == nan"));
        assert!(boolean("nan != nan"));
    }

    #[test]
    fn comparison_type_errors() {
        fails(
            "1 == true",
            "cannot compare int with bool using `==`",
            0,
            "1 == true",
        );
        fails(
            "xs != 1",
            "cannot compare list with int using `!=`",
            0,
            "xs != 1",
        );
        fails(
            "[1] < [2]",
            "cannot compare list with list using `<`",
            0,
            "[1] < [2]",
        );
        fails(
            "t >= f",
            "cannot compare bool with bool using `>=`",
            0,
            "t >= f",
        );
    }

    #[test]
    fn comparisons_do_not_chain() {
        let msg = "comparison operators cannot be chained";
        fails("1 < 2 < 3", msg, 6, "<");
        fails("1 == 1 == true", msg, 7, "==");
        fails("1 < 2 == true", msg, 6, "==");
        assert!(boolean("(1 < 2) == true"));
    }

    // ----- logic -----

    #[test]
    fn logical_operators() {
        assert!(boolean("t && t"));
        assert!(!boolean("t && f"));
        assert!(!boolean("f && t"));
        assert!(!boolean("f && f"));
        assert!(boolean("t || f"));
        assert!(boolean("f || t"));
        assert!(boolean("t || t"));
        assert!(!boolean("f || f"));
        assert!(boolean("1 < 2 && 3 < 4"));
    }

    #[test]
    fn logical_operators_short_circuit() {
        assert!(!boolean("f && undefined"));
        assert!(boolean("t || undefined"));
        assert!(!boolean("f && 1 / 0 > 1"));
        fails("t && undefined", "unknown name `undefined`", 5, "undefined");
    }

    #[test]
    fn logical_operands_must_be_bools() {
        fails(
            "1 && t",
            "the left operand of `&&` must be a bool, found int",
            0,
            "1",
        );
        fails(
            "f || 2",
            "the right operand of `||` must be a bool, found int",
            5,
            "2",
        );
        fails(
            "f || 2.0",
            "the right operand of `||` must be a bool, found float",
            5,
            "2.0",
        );
        fails(
            "t && xs",
            "the right operand of `&&` must be a bool, found list",
            5,
            "xs",
        );
    }

    // ----- conditional -----

    #[test]
    fn conditional() {
        assert_eq!(int("t ? 1 : 2"), 1);
        assert_eq!(int("f ? 1 : 2"), 2);
        assert_eq!(int("f ? 1 : t ? 2 : 3"), 2);
        assert_eq!(int("f ? 1 : f ? 2 : 3"), 3);
        assert_eq!(int("t ? f ? 1 : 2 : 3"), 2);
        assert_eq!(int("t ? (f ? 1 : 2) : 3"), 2);
        assert_eq!(int("x == 7 ? xs[0] : xs[1]"), 116);
        assert_eq!(float("t ? y : x"), 2.5);
    }

    #[test]
    fn conditional_evaluates_only_the_chosen_branch() {
        assert_eq!(int("t ? 1 : 1 / 0"), 1);
        assert_eq!(int("f ? undefined : 2"), 2);
        assert_eq!(int("t ? 2 : xs[99]"), 2);
    }

    #[test]
    fn conditional_errors() {
        fails(
            "x ? 1 : 2",
            "the condition of `? :` must be a bool, found int",
            0,
            "x",
        );
        fails(
            "t ? 1",
            "unexpected end of expression: expected `:` in conditional expression",
            5,
            "",
        );
        fails(
            "t ? 1 2",
            "expected `:` in conditional expression, found `2`",
            6,
            "2",
        );
        fails("t ? : 2", "expected an expression, found `:`", 4, ":");
    }

    // ----- precedence -----

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(int("1 + 2 * 3"), 7);
        assert_eq!(int("(1 + 2) * 3"), 9);
        assert_eq!(int("10 - 3 - 2"), 5);
        assert_eq!(int("2 * 3 % 4"), 2);
        assert_eq!(int("100 // 10 // 3"), 3);
        assert_eq!(float("8 / 2 / 2"), 2.0);
        assert_eq!(int("-2 * 3"), -6);
        assert_eq!(int("-xs[0]"), -116);
        assert_eq!(int("2 - -2"), 4);
        assert_eq!(int("-7 // 2"), -4);
        assert_eq!(int("-7 % 3"), 2);
        assert!(boolean("1 + 2 < 4"));
        assert!(boolean("!t == f"));
        assert!(boolean("!t || t"));
        assert!(!boolean("!(t || t)"));
        assert!(boolean("t || f && f"));
        assert!(boolean("f && f || t"));
        // `&&` binds tighter than `||`: `(t || t) && 1` would be an error.
        assert!(boolean("t || t && 1"));
        // `?:` binds loosest.
        assert_eq!(int("f || t ? 1 + 1 : 2"), 2);
        assert_eq!(int("2 + 3 == 5 && 1 < 2 ? 10 : 20"), 10);
    }

    // ----- indexing -----

    #[test]
    fn list_indexing() {
        assert_eq!(int("xs[0]"), 116);
        assert_eq!(int("xs[2]"), 464);
        assert_eq!(int("xs[x - 6]"), 232);
        assert_eq!(int("[[1, 2], [3]][1][0]"), 3);
    }

    #[test]
    fn list_index_errors() {
        fails("xs[3]", "index 3 out of range for list of length 3", 3, "3");
        fails(
            "xs[-1]",
            "index -1 out of range for list of length 3",
            3,
            "-1",
        );
        fails("[][0]", "index 0 out of range for list of length 0", 3, "0");
        fails(
            "xs[1.0]",
            "a list index must be an int, found float",
            3,
            "1.0",
        );
        fails("x[0]", "cannot index into int", 0, "x");
        fails(
            "xs[0",
            "unexpected end of expression: expected `]` after index",
            4,
            "",
        );
    }

    #[test]
    fn table_indexing() {
        assert_eq!(int("tab[3]"), 240);
        assert_eq!(int("tab[3.0]"), 240);
        assert_eq!(int("{1: 144, 2: 200}[2]"), 200);
        assert_eq!(int("{true: 1, false: 0}[x > 1]"), 1);
        assert_eq!(int("{[1, 2]: 3}[[1, 2.0]]"), 3);
    }

    #[test]
    fn table_index_errors() {
        fails(
            "tab[5]",
            "no entry for 5 in table; keys are 1, 2, 3, 4, 8",
            4,
            "5",
        );
        assert_eq!(
            err("tab[5]").message,
            "no entry for 5 in table; keys are 1, 2, 3, 4, 8"
        );
        fails("tab[2.5]", "no entry for 2.5 in table", 4, "2.5");
        fails("tab[t]", "no entry for true in table", 4, "t");
        fails(
            "empty[1]",
            "no entry for 1 in table; the table is empty",
            6,
            "1",
        );
        let big: Vec<String> = (0..25).map(|i| format!("{i}: {i}")).collect();
        let src = format!("{{{}}}[99]", big.join(", "));
        let e = err(&src);
        assert!(e.message.contains("keys are 0, 1, 2"), "{}", e.message);
        assert!(e.message.ends_with("19, ... (5 more)"), "{}", e.message);
    }

    // ----- functions -----

    #[test]
    fn min_and_max() {
        assert_eq!(int("min(3, 1, 2)"), 1);
        assert_eq!(int("max(3, 1, 2)"), 3);
        assert_eq!(int("min(5)"), 5);
        assert_eq!(int("max(xs)"), 464);
        assert_eq!(int("min(xs)"), 116);
        assert_eq!(ev("min([2.5, 1, 3])"), Value::Int(1));
        assert_eq!(ev("max(1, 1.0)"), Value::Int(1));
        assert_eq!(ev("max(1.0, 1)"), Value::Float(1.0));
        assert_eq!(float("min(x, y)"), 2.5);
        assert_eq!(ev("max(x, y, -1e9)"), Value::Int(7));
    }

    #[test]
    fn min_and_max_errors() {
        fails(
            "min()",
            "min() takes at least 1 argument, found 0",
            0,
            "min()",
        );
        fails("max(1, t)", "max() expects numbers, found bool", 7, "t");
        fails("min(xs, 1)", "min() expects numbers, found list", 4, "xs");
        fails("min([])", "min() of an empty list", 0, "min([])");
        fails(
            "max([1, t])",
            "max() expects a list of numbers, found bool",
            4,
            "[1, t]",
        );
    }

    #[test]
    fn abs_function() {
        assert_eq!(int("abs(-3)"), 3);
        assert_eq!(int("abs(3)"), 3);
        assert_eq!(float("abs(-2.5)"), 2.5);
        fails("abs(t)", "abs() expects a number, found bool", 4, "t");
        fails(
            "abs(1, 2)",
            "abs() takes 1 argument, found 2",
            0,
            "abs(1, 2)",
        );
    }

    #[test]
    fn round_ceil_floor_int() {
        assert_eq!(int("round(2.5)"), 3);
        assert_eq!(int("round(-2.5)"), -3);
        assert_eq!(int("round(2.4999)"), 2);
        assert_eq!(int("round(0.49999999999999994)"), 0);
        assert_eq!(int("round(7)"), 7);
        assert_eq!(int("ceil(2.1)"), 3);
        assert_eq!(int("ceil(-2.1)"), -2);
        assert_eq!(int("ceil(4)"), 4);
        assert_eq!(int("floor(2.9)"), 2);
        assert_eq!(int("floor(-2.1)"), -3);
        assert_eq!(int("floor(-9223372036854775808.0)"), i64::MIN);
        assert_eq!(int("int(2.7)"), 2);
        assert_eq!(int("int(-2.7)"), -2);
        assert_eq!(int("int(5)"), 5);
    }

    #[test]
    fn float_to_int_range_errors() {
        let msg = "result 1e300 does not fit in a 64-bit integer";
        fails("round(1e300)", &format!("round() {msg}"), 0, "round(1e300)");
        fails("ceil(1e300)", &format!("ceil() {msg}"), 0, "ceil(1e300)");
        fails(
            "floor(-1e300)",
            "floor() result -1e300 does not fit",
            0,
            "floor(-1e300)",
        );
        fails(
            "int(9223372036854775807.0)",
            "does not fit in a 64-bit integer",
            0,
            "int(9223372036854775807.0)",
        );
        fails(
            "floor(nan)",
            "floor() result NaN does not fit",
            0,
            "floor(nan)",
        );
        fails("int(t)", "int() expects a number, found bool", 4, "t");
        fails("ceil(xs)", "ceil() expects a number, found list", 5, "xs");
    }

    #[test]
    fn float_function() {
        assert_eq!(ev("float(3)"), Value::Float(3.0));
        assert_eq!(ev("float(y)"), Value::Float(2.5));
        fails(
            "float([1])",
            "float() expects a number, found list",
            6,
            "[1]",
        );
    }

    #[test]
    fn round_up_down_to() {
        assert_eq!(int("round_up(13, 4)"), 16);
        assert_eq!(int("round_up(12, 4)"), 12);
        assert_eq!(int("round_up(-13, 4)"), -12);
        assert_eq!(ev("round_up(13.5, 4)"), Value::Int(16));
        assert_eq!(ev("round_up(1.3, 0.5)"), Value::Float(1.5));
        assert_eq!(ev("round_up(13, 4.0)"), Value::Float(16.0));
        assert_eq!(int("round_down(13, 4)"), 12);
        assert_eq!(int("round_down(12, 4)"), 12);
        assert_eq!(int("round_down(-13, 4)"), -16);
        assert_eq!(ev("round_down(7.9, 2)"), Value::Int(6));
        assert_eq!(int("round_to(13, 4)"), 12);
        assert_eq!(int("round_to(14, 4)"), 16);
        assert_eq!(int("round_to(15, 4)"), 16);
        assert_eq!(int("round_to(10, 4)"), 12);
        assert_eq!(int("round_to(-14, 4)"), -12);
        assert_eq!(int("round_to(-15, 4)"), -16);
        assert_eq!(ev("round_to(6.0, 4)"), Value::Int(8));
        assert_eq!(ev("round_to(1.25, 0.5)"), Value::Float(1.5));
        assert_eq!(ev("round_to(1.2, 0.5)"), Value::Float(1.0));
        assert_eq!(int("round_up(9223372036854775806, 2)"), 9223372036854775806);
    }

    #[test]
    fn round_up_down_to_errors() {
        fails(
            "round_up(13, 0)",
            "round_up() needs a positive multiple, found 0",
            13,
            "0",
        );
        fails(
            "round_down(13, -4)",
            "round_down() needs a positive multiple, found -4",
            15,
            "-4",
        );
        fails(
            "round_to(1, 0.0)",
            "round_to() needs a positive multiple, found 0.0",
            12,
            "0.0",
        );
        fails(
            "round_up(1, nan)",
            "round_up() needs a positive multiple, found NaN",
            12,
            "nan",
        );
        fails(
            "round_up(t, 2)",
            "round_up() expects a number, found bool",
            9,
            "t",
        );
        fails(
            "round_up(13)",
            "round_up() takes 2 arguments, found 1",
            0,
            "round_up(13)",
        );
        let src = "round_up(9223372036854775807, 2)";
        fails(src, "integer overflow in round_up()", 0, src);
        let src = "round_down(-9223372036854775808, 3)";
        fails(src, "integer overflow in round_down()", 0, src);
        let src = "round_to(9.3e18, 4)";
        fails(src, "integer overflow in round_to()", 0, src);
        let src = "round_up(1e308, 1e-308)";
        fails(
            src,
            "the result of round_up() is not a finite number",
            0,
            src,
        );
    }

    #[test]
    fn clamp_function() {
        assert_eq!(int("clamp(5, 1, 10)"), 5);
        assert_eq!(int("clamp(-5, 1, 10)"), 1);
        assert_eq!(int("clamp(50, 1, 10)"), 10);
        assert_eq!(ev("clamp(2.5, 1, 2)"), Value::Int(2));
        assert_eq!(ev("clamp(1.5, 1, 2)"), Value::Float(1.5));
        assert_eq!(int("clamp(3, 3, 3)"), 3);
        fails(
            "clamp(5, 10, 1)",
            "clamp() needs lo <= hi, found lo = 10 and hi = 1",
            0,
            "clamp(5, 10, 1)",
        );
        fails(
            "clamp(1, 2)",
            "clamp() takes 3 arguments, found 2",
            0,
            "clamp(1, 2)",
        );
        fails(
            "clamp(1, f, 2)",
            "clamp() expects a number, found bool",
            9,
            "f",
        );
    }

    #[test]
    fn len_function() {
        assert_eq!(int("len(xs)"), 3);
        assert_eq!(int("len(tab)"), 5);
        assert_eq!(int("len([])"), 0);
        assert_eq!(int("len({})"), 0);
        fails(
            "len(x)",
            "len() expects a list or a table, found int",
            4,
            "x",
        );
        fails(
            "len(xs, xs)",
            "len() takes 1 argument, found 2",
            0,
            "len(xs, xs)",
        );
    }

    #[test]
    fn unknown_function() {
        let e = err("1 + foo(1)");
        assert_eq!(
            e.message,
            "unknown function `foo`; the known functions are abs, ceil, clamp, float, floor, \
             int, len, max, min, round, round_down, round_to, round_up"
        );
        assert_eq!((e.offset, e.len), (4, 3));
        fails("x(1)", "unknown function `x`", 0, "x");
    }

    #[test]
    fn functions_constant_is_sorted_and_complete() {
        let mut sorted = FUNCTIONS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, FUNCTIONS);
        for name in FUNCTIONS {
            assert_eq!(Func::from_name(name).map(Func::name), Some(*name));
        }
    }

    // ----- syntax errors -----

    #[test]
    fn syntax_errors() {
        fails(
            "min(1, 2",
            "unexpected end of expression: expected `)` after argument list",
            8,
            "",
        );
        fails(
            "min(1 2)",
            "expected `)` after argument list, found `2`",
            6,
            "2",
        );
        fails("1 $ 2", "unexpected character `$`", 2, "$");
        fails(
            "1 +",
            "unexpected end of expression: expected an expression",
            3,
            "",
        );
        fails("", "unexpected end of expression", 0, "");
        fails("   ", "unexpected end of expression", 3, "");
        fails(
            "(1 + 2",
            "unexpected end of expression: expected `)` to close `(`",
            6,
            "",
        );
        fails("(1 + 2]", "expected `)` to close `(`, found `]`", 6, "]");
        fails(
            "[1, 2",
            "unexpected end of expression: expected `,` or `]` in list literal",
            5,
            "",
        );
        fails(
            "[1 2]",
            "expected `,` or `]` in list literal, found `2`",
            3,
            "2",
        );
        fails("{1 2}", "expected `:` after table key, found `2`", 3, "2");
        fails(
            "{1: 2 3: 4}",
            "expected `,` or `}` in table literal, found `3`",
            6,
            "3",
        );
        fails(
            "1 2",
            "expected an operator or end of expression, found `2`",
            2,
            "2",
        );
        fails(
            "1 )",
            "expected an operator or end of expression, found `)`",
            2,
            ")",
        );
        fails("* 2", "expected an expression, found `*`", 0, "*");
        fails("[,]", "expected an expression, found `,`", 1, ",");
        fails("min(,)", "expected an expression, found `,`", 4, ",");
        fails(
            "a = 1",
            "unexpected character `=` (did you mean `==`?)",
            2,
            "=",
        );
        fails(
            "t & f",
            "unexpected character `&` (did you mean `&&`?)",
            2,
            "&",
        );
        fails(
            "t | f",
            "unexpected character `|` (did you mean `||`?)",
            2,
            "|",
        );
        fails("\"a\"", "unexpected character `\"`", 0, "\"");
        fails("1 +\u{0}", "unexpected character `\\0`", 3, "\u{0}");
        fails("x.y", "unexpected character `.`", 1, ".");
    }

    #[test]
    fn error_spans_respect_utf8() {
        fails("é + 1", "unexpected character `é`", 0, "é");
        fails("x + 1 🙂", "unexpected character `🙂`", 6, "🙂");
        fails("日本", "unexpected character `日`", 0, "日");
        fails("1 +\u{3000}", "unexpected end of expression", 6, "");
    }

    // ----- limits -----

    #[test]
    fn nesting_depth_is_limited() {
        let ok = format!("{}1{}", "(".repeat(63), ")".repeat(63));
        assert_eq!(int(&ok), 1);
        let deep = "(".repeat(4000);
        fails(
            &deep,
            "expression nested too deeply (more than 64 levels)",
            64,
            "(",
        );
        for deep in [
            format!("{}1", "-".repeat(4000)),
            format!("{}t", "!".repeat(4000)),
            "[".repeat(4000),
            "{".repeat(4000),
            "min(".repeat(1000),
            "xs[".repeat(1000),
            "t ? 1 : ".repeat(500) + "1",
            format!("{}1{}", "(".repeat(2000), ")".repeat(2000)),
        ] {
            assert!(
                err(&deep).message.contains("nested too deeply"),
                "{}",
                &deep[..20]
            );
        }
        assert_eq!(int(&format!("{}1", "-".repeat(50))), 1);
    }

    #[test]
    fn chains_of_operators_are_limited() {
        let ok = format!("{}1", "1+".repeat(MAX_HEIGHT - 1));
        assert_eq!(int(&ok), MAX_HEIGHT as i64);
        let long = format!("{}1", "1+".repeat(MAX_HEIGHT));
        let e = err(&long);
        assert!(e.message.contains("nested too deeply"), "{}", e.message);
        let long = format!("{}1", "1+".repeat(2000));
        assert!(err(&long).message.contains("nested too deeply"));
        let long = format!("[[1]]{}", "[0]".repeat(1000));
        assert!(err(&long).message.contains("nested too deeply"));
    }

    #[test]
    fn worst_cases_fit_in_a_small_stack() {
        let sources = [
            format!(
                "{}1{}",
                "(".repeat(MAX_DEPTH - 1),
                ")".repeat(MAX_DEPTH - 1)
            ),
            format!(
                "{}1{}",
                "[".repeat(MAX_DEPTH - 1),
                "]".repeat(MAX_DEPTH - 1)
            ),
            format!("{}1", "-".repeat(MAX_DEPTH - 2)),
            format!("{}1", "1+".repeat(MAX_HEIGHT - 1)),
            format!("{}{}1{}", "(".repeat(50), "1*".repeat(200), ")".repeat(50)),
            format!(
                "{}1{}",
                "abs(".repeat(MAX_DEPTH - 1),
                ")".repeat(MAX_DEPTH - 1)
            ),
            format!("{}1", "f ? 0 : ".repeat(MAX_DEPTH - 1)),
        ];
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || {
                for src in &sources {
                    let e = parse(src).unwrap_or_else(|e| panic!("{}", e.render(src)));
                    let v = e.eval(&env).unwrap();
                    let _ = (e.names(), e.clone(), format!("{e:?}"), v.to_string());
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn source_length_is_limited() {
        let src = "1".repeat(5000);
        fails(
            &src,
            "expression is too long (5000 bytes; the limit is 4096)",
            4096,
            &src[4096..],
        );
        let src = "€".repeat(2000);
        let e = err(&src);
        assert_eq!(e.offset, 4095);
        let ok = format!("{}1", " ".repeat(MAX_SOURCE_LEN - 1));
        assert_eq!(int(&ok), 1);
    }

    #[test]
    fn literal_size_is_limited() {
        let ok = format!("len([{}])", "1,".repeat(MAX_ITEMS));
        assert_eq!(int(&ok), MAX_ITEMS as i64);
        let src = format!("[{}]", "1,".repeat(MAX_ITEMS + 50));
        fails(
            &src,
            "list literal has more than 1024 elements",
            1 + 2 * MAX_ITEMS,
            "1",
        );
        let src = format!("min({}1)", "1,".repeat(MAX_ITEMS + 50));
        fails(
            &src,
            "argument list has more than 1024 elements",
            4 + 2 * MAX_ITEMS,
            "1",
        );
        let src = format!("{{{}}}", "1:1,".repeat(MAX_ITEMS / 2 + 1));
        assert!(parse(&src).is_ok());
    }

    // ----- display and helpers -----

    #[test]
    fn value_display() {
        let cases = [
            (Value::Int(3), "3"),
            (Value::Int(-3), "-3"),
            (Value::Float(0.5), "0.5"),
            (Value::Float(1.0), "1.0"),
            (Value::Float(-0.0), "-0.0"),
            (Value::Float(1e16), "1e16"),
            (Value::Float(1e-7), "1e-7"),
            (Value::Bool(true), "true"),
            (Value::Bool(false), "false"),
            (Value::List(vec![Value::Int(1), Value::Int(2)]), "[1, 2]"),
            (Value::List(vec![]), "[]"),
            (table(&[(1, 144), (2, 200)]), "{1: 144, 2: 200}"),
            (Value::Table(vec![]), "{}"),
            (
                Value::List(vec![
                    Value::List(vec![Value::Int(1), Value::Float(2.5)]),
                    Value::Table(vec![(Value::Bool(true), Value::List(vec![]))]),
                ]),
                "[[1, 2.5], {true: []}]",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(v.to_string(), want);
        }
    }

    #[test]
    fn value_helpers() {
        let names = [
            (Value::Int(1), "int"),
            (Value::Float(1.0), "float"),
            (Value::Bool(true), "bool"),
            (Value::List(vec![]), "list"),
            (Value::Table(vec![]), "table"),
        ];
        for (v, name) in names {
            assert_eq!(v.type_name(), name);
        }
        assert_eq!(Value::from(3).as_i64(), Some(3));
        assert_eq!(Value::from(3).as_f64(), Some(3.0));
        assert_eq!(Value::from(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::from(0.5).as_i64(), None);
        assert_eq!(Value::from(true).as_bool(), Some(true));
        assert_eq!(Value::from(1).as_bool(), None);
        assert_eq!(
            Value::from(vec![Value::Int(1)]),
            Value::List(vec![Value::Int(1)])
        );
        assert!(Value::Int(3).loose_eq(&Value::Float(3.0)));
        assert!(!Value::Int(1).loose_eq(&Value::Bool(true)));
    }

    #[test]
    fn expr_helpers() {
        let e = parse(" x + 1 ").unwrap();
        assert_eq!(e.source(), " x + 1 ");
        assert_eq!(e.to_string(), " x + 1 ");
        let e: Expr = "2 * 3".parse().unwrap();
        assert_eq!(e.eval(&|_| None), Ok(Value::Int(6)));
        assert_eq!(e.as_literal(), None);
        assert_eq!(parse("224").unwrap().as_literal(), Some(Value::Int(224)));
        assert_eq!(
            parse("-0.5").unwrap().as_literal(),
            Some(Value::Float(-0.5))
        );
        assert_eq!(
            parse("-9223372036854775808").unwrap().as_literal(),
            Some(Value::Int(i64::MIN))
        );
        assert_eq!(
            parse("(true)").unwrap().as_literal(),
            Some(Value::Bool(true))
        );
        assert_eq!(parse("[1]").unwrap().as_literal(), None);
    }

    #[test]
    fn error_display_and_render() {
        let src = "x + foo";
        let e = err(src);
        assert_eq!(e.to_string(), "unknown name `foo`");
        assert_eq!(e.span(), 4..7);
        assert_eq!(e.render(src), "unknown name `foo`\n  x + foo\n      ^^^");
        let src = "x +\n foo";
        assert_eq!(err(src).render(src), "unknown name `foo`\n   foo\n   ^^^");
        let src = "\u{3000}x +";
        assert_eq!(
            err(src).render(src),
            "unexpected end of expression: expected an expression\n  \u{3000}x +\n      ^"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(ExprError::new(0, 0, "m"));
        assert_eq!(boxed.to_string(), "m");
        assert_eq!(ExprError::new(99, 1, "m").render("x"), "m");
    }

    // ----- the examples from spec files -----

    fn spec_env(groups: i64, width: f64) -> impl Fn(&str) -> Option<Value> {
        move |name| match name {
            "out" => Some(Value::Int(464)),
            "groups" => Some(Value::Int(groups)),
            "width" => Some(Value::Float(width)),
            "grouped_first" => Some(Value::Bool(groups > 1)),
            "i" => Some(Value::Int(groups - 1)),
            _ => None,
        }
    }

    const C2: &str =
        "round_up({1: 144, 2: 200, 3: 240, 4: 272, 8: 384}[groups] * width, 4 * groups)";

    #[test]
    fn spec_examples() {
        let run = |src: &str, groups, width| parse(src).unwrap().eval(&spec_env(groups, width));
        assert_eq!(run("out / 4", 1, 1.0), Ok(Value::Float(116.0)));
        assert_eq!(run("grouped_first ? groups : 1", 3, 1.0), Ok(Value::Int(3)));
        assert_eq!(run("grouped_first ? groups : 1", 1, 1.0), Ok(Value::Int(1)));
        assert_eq!(run("i == 0 ? 2 : 1", 1, 1.0), Ok(Value::Int(2)));
        assert_eq!(run("i == 0 ? 2 : 1", 4, 1.0), Ok(Value::Int(1)));
        for (groups, width, want) in [
            (1, 1.0, 144),
            (2, 1.0, 200),
            (3, 1.0, 240),
            (4, 1.0, 272),
            (8, 1.0, 384),
            (8, 0.5, 192),
            (1, 1.5, 216),
            (2, 0.25, 56),
            (3, 2.0, 480),
        ] {
            assert_eq!(
                run(C2, groups, width),
                Ok(Value::Int(want)),
                "g{groups} x{width}"
            );
        }
        assert_eq!(parse(C2).unwrap().names(), ["groups", "width"]);
        let e = run(C2, 5, 1.0).unwrap_err();
        assert_eq!(e.message, "no entry for 5 in table; keys are 1, 2, 3, 4, 8");
        assert_eq!(e.offset, C2.find("[groups]").unwrap() + 1);
        assert_eq!(e.len, "groups".len());
        let e = parse("out / 4").unwrap().eval(&|_| None).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.offset, e.len),
            ("unknown name `out`", 0, 3)
        );
    }

    // ----- property tests -----

    /// The names the fuzzers know.
    fn fuzz_env(name: &str) -> Option<Value> {
        let extra = match name {
            "groups" => Value::Int(3),
            "width" => Value::Float(0.5),
            "out" => Value::Int(i64::MAX),
            "i" => Value::Int(0),
            "big" => Value::Float(1e300),
            _ => return env(name),
        };
        Some(extra)
    }

    /// Parses and evaluates `src`, checking every error's span.
    fn run_any(src: &str) {
        match parse(src) {
            Ok(e) => {
                assert_eq!(e.source(), src);
                let _ = e.names();
                let _ = e.as_literal();
                match e.eval(&fuzz_env) {
                    Ok(v) => {
                        let _ = v.to_string();
                    }
                    Err(err) => check_span(src, &err),
                }
            }
            Err(err) => {
                check_span(src, &err);
                let _ = err.render(src);
            }
        }
    }

    const SEEDS: &[&str] = &[
        "out / 4",
        "grouped_first ? groups : 1",
        C2,
        "i == 0 ? 2 : 1",
        "min(xs) + max(1, 2.5) * -abs(-3) // 2 % 7",
        "[1, 2.5, true, {1: [2]}][3][1][0]",
        "clamp(round(y), 1, ceil(x / 2)) - floor(width) + int(-2.5) + float(len(tab))",
        "!(t && f) || x >= 3 && y != 2.5 ? round_to(x, 4) : round_down(-x, 3)",
        "-9223372036854775808 // -1 + 9223372036854775807",
        "tab[groups] * 1e308 / 1e-3",
    ];

    const TOKENS: &[&str] = &[
        "1",
        "0",
        "-1",
        "2.5",
        ".5",
        "1e3",
        "1e",
        "9223372036854775808",
        "1e999",
        "true",
        "false",
        "x",
        "y",
        "t",
        "f",
        "xs",
        "tab",
        "nan",
        "big",
        "out",
        "zz",
        "min",
        "round_up",
        "len",
        "+",
        "-",
        "*",
        "/",
        "//",
        "%",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "!",
        "?",
        ":",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        " ",
        "$",
        "é",
        "🙂",
        "=",
        "&",
        "|",
        ".",
    ];

    fn mutate(seed: &str, edits: &[(u8, usize, usize)]) -> String {
        let mut s = seed.to_string();
        for &(kind, a, b) in edits {
            let boundary = |s: &str, mut i: usize| {
                i %= s.len() + 1;
                while !s.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            let i = boundary(&s, a);
            match kind % 4 {
                0 => s.insert_str(i, TOKENS[b % TOKENS.len()]),
                1 => {
                    let j = boundary(&s, i + b % 8).max(i);
                    s.replace_range(i..j, "");
                }
                2 => {
                    let j = boundary(&s, b).max(i);
                    let piece = s[i..j].to_string();
                    s.insert_str(j, &piece);
                }
                _ => s.truncate(i),
            }
        }
        s
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::Float),
            any::<bool>().prop_map(Value::Bool),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                prop::collection::vec(inner, 0..4).prop_map(|vs| {
                    Value::Table(
                        vs.into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::Int(i as i64 - 1), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// Random syntactically valid expressions (though calls may have the
    /// wrong number of arguments), with every operator parenthesized.
    fn valid_expr_strategy() -> impl Strategy<Value = String> {
        const ATOMS: &[&str] = &[
            "0",
            "1",
            "2",
            "-1",
            "0.5",
            "1e300",
            "1e-300",
            "true",
            "false",
            "x",
            "y",
            "t",
            "f",
            "xs",
            "tab",
            "empty",
            "nan",
            "big",
            "out",
            "zz",
            "[]",
            "{}",
            "9223372036854775807",
            "-9223372036854775808",
        ];
        const BINARY: &[&str] = &[
            "+", "-", "*", "/", "//", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||",
        ];
        let leaf = prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            prop::sample::select(ATOMS).prop_map(String::from),
        ];
        leaf.prop_recursive(6, 64, 4, |inner| {
            prop_oneof![
                (inner.clone(), prop::sample::select(BINARY), inner.clone())
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
                (prop::sample::select(&["-", "!"][..]), inner.clone())
                    .prop_map(|(op, a)| format!("{op}{a}")),
                (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, i)| format!("{a}[{i}]")),
                (
                    prop::sample::select(FUNCTIONS),
                    prop::collection::vec(inner.clone(), 3),
                    0..8usize,
                )
                    .prop_map(|(f, mut args, n)| {
                        // Mostly the right number of arguments.
                        let arity = Func::from_name(f).and_then(Func::arity).unwrap_or(2);
                        args.truncate(if n < 6 { arity } else { n - 5 });
                        format!("{f}({})", args.join(", "))
                    }),
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(", "))),
                prop::collection::vec((inner.clone(), inner), 0..3).prop_map(|entries| {
                    let entries: Vec<String> =
                        entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!("{{{}}}", entries.join(", "))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn printable_ascii_never_panics(src in "[ -~]{0,80}") {
            run_any(&src);
        }

        #[test]
        fn any_string_never_panics(src in any::<String>()) {
            run_any(&src);
        }

        #[test]
        fn token_soup_never_panics(
            toks in prop::collection::vec(prop::sample::select(TOKENS), 0..60),
            spaced in any::<bool>(),
        ) {
            run_any(&toks.join(if spaced { " " } else { "" }));
        }

        #[test]
        fn valid_expressions_parse_and_never_panic(src in valid_expr_strategy()) {
            if let Err(e) = parse(&src) {
                // `-9223372036854775808[0]` negates `9223372036854775808[0]`.
                prop_assert!(
                    e.message.contains(" takes ")
                        || e.message.contains("`9223372036854775808` is too large")
                        || e.message.contains("nested too deeply")
                        || e.message.contains("too long"),
                    "{}", e.render(&src)
                );
            }
            run_any(&src);
        }

        #[test]
        fn mutated_examples_never_panic(
            seed in prop::sample::select(SEEDS),
            edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..6),
        ) {
            run_any(&mutate(seed, &edits));
        }
    }

    proptest! {
        #[test]
        fn displayed_values_parse_back(v in value_strategy()) {
            let src = v.to_string();
            let back = parse(&src).and_then(|e| e.eval(&|_| None));
            prop_assert_eq!(back, Ok(v));
        }

        #[test]
        fn int_floor_division_and_modulo_agree(a in any::<i64>(), b in any::<i64>()) {
            prop_assume!(b != 0);
            let q = parse(&format!("{a} // {b}")).unwrap().eval(&|_| None);
            let r = parse(&format!("{a} % {b}")).unwrap().eval(&|_| None).unwrap();
            let Value::Int(r) = r else { panic!("not an int") };
            prop_assert!(r == 0 || (r < 0) == (b < 0));
            prop_assert!(i128::from(r).abs() < i128::from(b).abs());
            match q {
                Ok(Value::Int(q)) => {
                    prop_assert_eq!(i128::from(q) * i128::from(b) + i128::from(r), i128::from(a));
                }
                Ok(v) => panic!("not an int: {v:?}"),
                Err(e) => {
                    prop_assert!(a == i64::MIN && b == -1);
                    prop_assert!(e.message.starts_with("integer overflow in"));
                }
            }
        }

        #[test]
        fn float_floor_division_and_modulo_agree(a in -1e6f64..1e6, b in -1e3f64..1e3) {
            prop_assume!(b != 0.0);
            let q = parse(&format!("{a:?} // {b:?}")).unwrap().eval(&|_| None).unwrap();
            let r = parse(&format!("{a:?} % {b:?}")).unwrap().eval(&|_| None).unwrap();
            let (Value::Float(q), Value::Float(r)) = (q, r) else { panic!("not floats") };
            prop_assert_eq!(q, q.floor());
            prop_assert!(r == 0.0 || (r < 0.0) == (b < 0.0));
            prop_assert!(r.abs() <= b.abs());
            prop_assert!((q * b + r - a).abs() <= 1e-6 * a.abs().max(1.0));
        }

        #[test]
        fn comparisons_match_reference(a in any::<i64>(), b in -1e19f64..1e19) {
            let lt = parse(&format!("{a} < {b:?}")).unwrap().eval(&|_| None).unwrap();
            // Exact reference through i128: `a < b` iff `a < b` for integral
            // `b`, else iff `a <= floor(b)`.
            let (a, fb) = (i128::from(a), b.floor() as i128);
            let want = if b.fract() == 0.0 { a < fb } else { a <= fb };
            prop_assert_eq!(lt, Value::Bool(want));
        }
    }
}
