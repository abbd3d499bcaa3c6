//! The built-in functions: their names and arities, and what they compute.

use std::cmp::Ordering;

use super::evaluator::finite;
use super::parser::Node;
use super::value::{num_cmp, Num, TWO_POW_63};
use super::{ExprError, Value};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
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
    pub(super) fn from_name(name: &str) -> Option<Func> {
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

    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn arity(self) -> Option<usize> {
        match self {
            Func::Min | Func::Max => None,
            Func::RoundUp | Func::RoundDown | Func::RoundTo => Some(2),
            Func::Clamp => Some(3),
            _ => Some(1),
        }
    }
}

/// How `round_up`, `round_down` and `round_to` pick a multiple.
#[derive(Clone, Copy)]
pub(super) enum Rounding {
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
pub(super) fn float_to_int(x: f64) -> Option<i64> {
    (x.is_finite() && (-TWO_POW_63..TWO_POW_63).contains(&x)).then_some(x as i64)
}
/// Applies a function to evaluated arguments; `args` are their nodes and
/// `node` is the call's.
pub(super) fn call(
    func: Func,
    values: Vec<Value>,
    args: &[Node],
    node: &Node,
) -> Result<Value, ExprError> {
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
    use crate::expr::testing::*;

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
}
