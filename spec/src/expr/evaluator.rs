//! Evaluation of a syntax tree: names, operators, indexing and conditionals,
//! with checked arithmetic.

use std::cmp::Ordering;

use super::functions::{call, Func};
use super::parser::{BinOp, Kind, Node, UnOp};
use super::value::{float_divmod, int_floor_div, int_mod, num_cmp, Num};
use super::{ExprError, Value};

pub(super) struct Evaluator<'a> {
    pub(super) lookup: &'a dyn Fn(&str) -> Option<Value>,
}

pub(super) fn finite(
    x: f64,
    node: &Node,
    what: impl FnOnce() -> String,
) -> Result<Value, ExprError> {
    if x.is_finite() {
        Ok(Value::Float(x))
    } else {
        Err(node.err(format!("{} is not a finite number", what())))
    }
}

pub(super) fn list_keys(entries: &[(Value, Value)]) -> String {
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
    pub(super) fn eval(&self, node: &Node) -> Result<Value, ExprError> {
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
pub(super) fn as_bool(v: Value, node: &Node, what: &str) -> Result<bool, ExprError> {
    match v {
        Value::Bool(b) => Ok(b),
        v => Err(node.err(format!("{what} must be a bool, found {}", v.type_name()))),
    }
}

/// Fails if `key`, written at `node`, is already a key of `table`.
pub(super) fn check_new_key(
    table: &[(Value, Value)],
    key: &Value,
    node: &Node,
) -> Result<(), ExprError> {
    if table.iter().any(|(k, _)| k.loose_eq(key)) {
        return Err(node.err(format!("duplicate key {key} in table")));
    }
    Ok(())
}

pub(super) fn unary(op: UnOp, v: Value, node: &Node) -> Result<Value, ExprError> {
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
pub(super) fn lookup_index(
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
pub(super) fn apply_binary(
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
pub(super) fn arith(
    op: BinOp,
    a: &Value,
    b: &Value,
    node: &Node,
    divisor: &Node,
) -> Result<Value, ExprError> {
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

#[cfg(test)]
mod tests {
    use crate::expr::testing::*;

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
}
