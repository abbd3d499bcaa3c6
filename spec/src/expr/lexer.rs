//! The lexer: expression source to tokens with their byte spans.

use super::ExprError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
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

#[cfg(test)]
mod tests {
    use crate::expr::testing::*;

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
}
