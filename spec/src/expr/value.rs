//! The values expressions compute, and the exact comparisons and
//! Python-style division of numbers they use.

use std::cmp::Ordering;
use std::fmt;

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
    pub(super) fn comparable_with(&self, other: &Value) -> bool {
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
pub(super) enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub(super) fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Int(i) => Some(Num::I(*i)),
            Value::Float(x) => Some(Num::F(*x)),
            _ => None,
        }
    }

    pub(super) fn to_f64(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(x) => x,
        }
    }

    pub(super) fn value(self) -> Value {
        match self {
            Num::I(i) => Value::Int(i),
            Num::F(x) => Value::Float(x),
        }
    }
}

/// 2^63 as a float: the first float above the range of `i64`.
pub(super) const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Compares an integer with a float exactly (no rounding of the integer).
pub(super) fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
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
pub(super) fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(a), Num::I(b)) => Some(a.cmp(&b)),
        (Num::F(a), Num::F(b)) => a.partial_cmp(&b),
        (Num::I(a), Num::F(b)) => cmp_int_float(a, b),
        (Num::F(a), Num::I(b)) => cmp_int_float(b, a).map(Ordering::reverse),
    }
}

/// Python's `//` on integers; `None` on overflow. `b` must not be zero.
pub(super) fn int_floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    if a % b != 0 && ((a < 0) != (b < 0)) {
        Some(q - 1)
    } else {
        Some(q)
    }
}

/// Python's `%` on integers: the result takes the sign of `b`, which must not
/// be zero.
pub(super) fn int_mod(a: i64, b: i64) -> i64 {
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
pub(super) fn float_divmod(a: f64, b: f64) -> (f64, f64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::testing::*;

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
}
