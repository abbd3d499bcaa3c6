//! What the expression tests share: the names they know and shorthands
//! that parse, evaluate and check errors and their spans.

pub(crate) use super::*;

pub(crate) fn table(pairs: &[(i64, i64)]) -> Value {
    Value::Table(
        pairs
            .iter()
            .map(|&(k, v)| (Value::Int(k), Value::Int(v)))
            .collect(),
    )
}

/// The names the tests know.
pub(crate) fn env(name: &str) -> Option<Value> {
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

pub(crate) fn ev(src: &str) -> Value {
    match parse(src).and_then(|e| e.eval(&env)) {
        Ok(v) => v,
        Err(e) => panic!("`{src}` failed: {}", e.render(src)),
    }
}

pub(crate) fn int(src: &str) -> i64 {
    match ev(src) {
        Value::Int(i) => i,
        v => panic!("`{src}` gave {v:?}, not an int"),
    }
}

pub(crate) fn float(src: &str) -> f64 {
    match ev(src) {
        Value::Float(x) => x,
        v => panic!("`{src}` gave {v:?}, not a float"),
    }
}

pub(crate) fn boolean(src: &str) -> bool {
    match ev(src) {
        Value::Bool(b) => b,
        v => panic!("`{src}` gave {v:?}, not a bool"),
    }
}

/// The error of parsing or evaluating `src`.
pub(crate) fn err(src: &str) -> ExprError {
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
pub(crate) fn fails(src: &str, msg: &str, offset: usize, text: &str) {
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

pub(crate) fn check_span(src: &str, e: &ExprError) {
    assert!(!e.message.is_empty());
    let end = e.offset.checked_add(e.len).expect("span overflows");
    assert!(end <= src.len(), "span {:?} beyond {src:?}", e.span());
    assert!(src.is_char_boundary(e.offset) && src.is_char_boundary(end));
}
