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

use std::fmt;

mod evaluator;
mod functions;
mod lexer;
mod parser;
#[cfg(test)]
mod testing;
mod value;

pub use functions::FUNCTIONS;
pub use value::Value;

use evaluator::Evaluator;
use lexer::{lex, Tok};
use parser::{Kind, Node, Parser, UnOp};

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

#[cfg(test)]
mod tests {
    use super::functions::Func;
    use super::*;
    use crate::expr::testing::*;
    use proptest::prelude::*;

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
