//! The syntax tree and the recursive-descent parser that builds it, within
//! the limits on nesting, height and size.

use super::functions::{Func, FUNCTIONS};
use super::lexer::{Tok, Token};
use super::{ExprError, Value, MAX_DEPTH, MAX_HEIGHT, MAX_ITEMS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
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
    pub(super) fn symbol(self) -> &'static str {
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
    pub(super) fn of_token(tok: Tok) -> Option<(BinOp, u8)> {
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
pub(super) const COMPARISON: u8 = 3;

#[derive(Debug, Clone)]
pub(super) enum Kind {
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
pub(super) struct Node {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) height: usize,
}

impl Node {
    /// Builds a node, refusing trees taller than [`MAX_HEIGHT`].
    pub(super) fn new(kind: Kind, start: usize, end: usize) -> Result<Node, ExprError> {
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
    pub(super) fn children(&self) -> Vec<&Node> {
        match &self.kind {
            Kind::Lit(_) | Kind::Name(_) => Vec::new(),
            Kind::List(items) | Kind::Call(_, items) => items.iter().collect(),
            Kind::Table(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
            Kind::Unary(_, a) => vec![a],
            Kind::Binary(_, a, b) | Kind::Index(a, b) => vec![a, b],
            Kind::Cond(c, a, b) => vec![c, a, b],
        }
    }

    pub(super) fn err(&self, message: impl Into<String>) -> ExprError {
        ExprError::new(self.start, self.end - self.start, message)
    }
}

pub(super) struct Parser<'a> {
    pub(super) src: &'a str,
    pub(super) toks: Vec<Token>,
    pub(super) pos: usize,
    pub(super) depth: usize,
}

impl Parser<'_> {
    pub(super) fn peek(&self) -> Token {
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
    pub(super) fn expected(&self, t: Token, what: &str) -> ExprError {
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

    pub(super) fn expr(&mut self) -> Result<Node, ExprError> {
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

pub(super) fn chained(t: Token) -> ExprError {
    ExprError::new(
        t.start,
        t.end - t.start,
        "comparison operators cannot be chained; use `&&` or parentheses",
    )
}

/// Fails if the call `node` has the wrong number of arguments for `func`.
pub(super) fn check_arity(func: Func, node: &Node) -> Result<(), ExprError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::testing::*;

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
}
