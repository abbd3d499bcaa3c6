//! Search spaces: which parameters of a spec vary and over which values.
//!
//! A sweep is written `name=v1,v2,...` (a list) or `name=start:end:step`
//! (an inclusive range). Range values are computed as `start + i * step`
//! and rounded to the number of decimals written in `start`, `end` and
//! `step`, so `width=0.25:2.0:0.05` gives exactly `0.25, 0.3, ..., 2.0`
//! with no accumulated drift. Candidates are the Cartesian product of the
//! sweeps, the last sweep varying fastest.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shufflekit_spec::yaml::{Yaml, YamlKind};
use shufflekit_spec::{SourceFile, SpecError};

use crate::error::SearchError;

/// The most candidates one search space may have.
pub const MAX_CANDIDATES: u64 = 10_000_000;
/// The most values one range may expand to.
pub const MAX_RANGE_VALUES: u64 = 1_000_000;

/// The value of one spec parameter in a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// Anything else, passed to the spec as written.
    Text(String),
}

impl ParamValue {
    /// Parses one value as written on the command line: `true`/`false`,
    /// an integer, a real number, or else text.
    pub fn parse(text: &str) -> ParamValue {
        let t = text.trim();
        match t {
            "true" => return ParamValue::Bool(true),
            "false" => return ParamValue::Bool(false),
            _ => {}
        }
        if let Ok(i) = t.parse::<i64>() {
            return ParamValue::Int(i);
        }
        if let Ok(f) = t.parse::<f64>() {
            if f.is_finite() {
                return ParamValue::Float(f);
            }
        }
        ParamValue::Text(t.to_string())
    }

    /// The value as a spec expression, for `Spec::build` overrides. Reals
    /// always carry a decimal point so the spec sees a real.
    pub fn to_expr(&self) -> String {
        match self {
            ParamValue::Bool(b) => b.to_string(),
            ParamValue::Int(i) => i.to_string(),
            ParamValue::Float(f) => {
                let s = format!("{f}");
                if s.contains(['.', 'e', 'E']) || !f.is_finite() {
                    s
                } else {
                    format!("{s}.0")
                }
            }
            ParamValue::Text(s) => s.clone(),
        }
    }

    /// The value as a number, when it is one (booleans are 0 and 1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Bool(b) => Some(f64::from(u8::from(*b))),
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            ParamValue::Text(_) => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(x) => write!(f, "{x}"),
            other => write!(f, "{}", other.to_expr()),
        }
    }
}

/// An inclusive arithmetic range of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// The first value.
    pub start: f64,
    /// The last value allowed (included when the steps land on it).
    pub end: f64,
    /// The distance between values (> 0).
    pub step: f64,
    /// Whether start, end and step are all integers.
    pub integer: bool,
    /// Decimals values are rounded to (the most written in start, end, step).
    pub decimals: u32,
}

impl Range {
    /// The number of values in the range.
    pub fn len(&self) -> u64 {
        // The tolerance absorbs binary rounding of decimal steps
        // (2.0 - 0.25) / 0.05 = 34.99999...
        (((self.end - self.start) / self.step) + 1e-9).floor() as u64 + 1
    }

    /// Always false: a range has at least its start.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th value, `start + i * step` rounded to the range's decimals.
    pub fn value(&self, i: u64) -> ParamValue {
        if self.integer {
            ParamValue::Int(self.start as i64 + i as i64 * self.step as i64)
        } else {
            ParamValue::Float(round_decimals(
                self.start + i as f64 * self.step,
                self.decimals,
            ))
        }
    }
}

/// Rounds to `decimals` places: the nearest `f64` to the decimal number,
/// so `0.1 + 2 * 0.1` becomes exactly the `0.3` that parsing "0.3" gives.
pub fn round_decimals(x: f64, decimals: u32) -> f64 {
    if decimals > 15 {
        return x;
    }
    let scale = 10f64.powi(decimals as i32);
    let r = (x * scale).round() / scale;
    // Formatting with the decimals and parsing back gives the nearest f64.
    format!("{r:.prec$}", prec = decimals as usize)
        .parse()
        .unwrap_or(r)
}

/// The values one parameter takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Values {
    /// An explicit list.
    List(Vec<ParamValue>),
    /// An inclusive range.
    Range(Range),
}

impl Values {
    /// The number of values.
    pub fn len(&self) -> u64 {
        match self {
            Values::List(v) => v.len() as u64,
            Values::Range(r) => r.len(),
        }
    }

    /// Whether there are no values (never true for parsed sweeps).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th value (`i < len()`).
    pub fn get(&self, i: u64) -> ParamValue {
        match self {
            Values::List(v) => v[i as usize].clone(),
            Values::Range(r) => r.value(i),
        }
    }
}

/// One swept parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// The spec parameter.
    pub param: String,
    /// Its values.
    pub values: Values,
    /// The sweep as written (`width=0.25:2.0:0.05`).
    pub text: String,
}

fn decimals_of(text: &str) -> u32 {
    let t = text.trim();
    if t.contains(['e', 'E']) {
        return 12;
    }
    t.split_once('.')
        .map(|(_, frac)| frac.len() as u32)
        .unwrap_or(0)
}

impl Sweep {
    /// Parses `name=v1,v2,...` or `name=start:end:step` (`name=start:end`
    /// steps by 1).
    pub fn parse(text: &str) -> Result<Sweep, SearchError> {
        let bad = |message: &str| SearchError::BadSweep {
            text: text.to_string(),
            message: message.to_string(),
        };
        let (name, rhs) = text
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=V1,V2,... or NAME=START:END:STEP"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad("the parameter name must be an identifier"));
        }
        Sweep::from_values_text(name, rhs, text)
    }

    /// Parses the values part (`1,2,3` or `0.25:2.0:0.05`) of a sweep of
    /// `param`; `text` is the whole sweep for messages.
    pub fn from_values_text(param: &str, rhs: &str, text: &str) -> Result<Sweep, SearchError> {
        let bad = |message: String| SearchError::BadSweep {
            text: text.to_string(),
            message,
        };
        let rhs = rhs.trim();
        if rhs.is_empty() {
            return Err(bad("no values after `=`".into()));
        }
        let values = if rhs.contains(':') && !rhs.contains(',') {
            let parts: Vec<&str> = rhs.split(':').map(str::trim).collect();
            if parts.len() < 2 || parts.len() > 3 {
                return Err(bad("a range is START:END:STEP".into()));
            }
            let num = |s: &str, what: &str| -> Result<f64, SearchError> {
                s.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(format!("the range {what} `{s}` is not a number")))
            };
            let start = num(parts[0], "start")?;
            let end = num(parts[1], "end")?;
            let step_text = parts.get(2).copied().unwrap_or("1");
            let step = num(step_text, "step")?;
            if step <= 0.0 {
                return Err(bad("the range step must be positive".into()));
            }
            if end < start {
                return Err(bad(format!(
                    "the range end {end} is below its start {start}"
                )));
            }
            let integer = [parts[0], parts[1], step_text]
                .iter()
                .all(|s| s.parse::<i64>().is_ok());
            let decimals = [parts[0], parts[1], step_text]
                .iter()
                .map(|s| decimals_of(s))
                .max()
                .unwrap_or(0);
            let range = Range {
                start,
                end,
                step,
                integer,
                decimals,
            };
            let n = ((end - start) / step).floor();
            if n.is_nan() || n >= MAX_RANGE_VALUES as f64 {
                return Err(bad(format!(
                    "the range has more than {MAX_RANGE_VALUES} values"
                )));
            }
            Values::Range(range)
        } else {
            let mut list = Vec::new();
            for item in rhs.split(',') {
                let item = item.trim();
                if item.is_empty() {
                    return Err(bad("empty value in the list".into()));
                }
                if item.contains(':') {
                    return Err(bad(format!(
                        "`{item}`: a list cannot contain a range; use one or the other"
                    )));
                }
                list.push(ParamValue::parse(item));
            }
            Values::List(list)
        };
        Ok(Sweep {
            param: param.to_string(),
            values,
            text: text.to_string(),
        })
    }
}

/// A slice of the space: candidate `k` belongs to shard `k % count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, `0 <= index < count`.
    pub index: u64,
    /// How many shards the space is cut into.
    pub count: u64,
}

impl Shard {
    /// Parses `i/n` (0-based `i`).
    pub fn parse(text: &str) -> Result<Shard, SearchError> {
        let err = |m: &str| SearchError::Config(format!("bad shard `{text}`: {m}"));
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| err("expected INDEX/COUNT, e.g. 0/4"))?;
        let index: u64 = i.trim().parse().map_err(|_| err("INDEX is not a number"))?;
        let count: u64 = n.trim().parse().map_err(|_| err("COUNT is not a number"))?;
        if count == 0 {
            return Err(err("COUNT must be at least 1"));
        }
        if index >= count {
            return Err(err("INDEX must be below COUNT (shards count from 0)"));
        }
        Ok(Shard { index, count })
    }

    /// Whether candidate `k` belongs to this shard.
    pub fn contains(&self, k: u64) -> bool {
        k % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One point of the space.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its position in the full (unsharded) enumeration.
    pub index: u64,
    /// The swept parameters' values, in sweep order.
    pub params: Vec<(String, ParamValue)>,
}

impl Candidate {
    /// A name that reads on its own: `groups=3,width=0.5`.
    pub fn id(&self) -> String {
        if self.params.is_empty() {
            return "default".to_string();
        }
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The Cartesian product of some sweeps.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Space {
    /// The swept parameters, the last varying fastest.
    pub sweeps: Vec<Sweep>,
}

impl Space {
    /// The number of candidates (an empty space has one: the defaults).
    pub fn len(&self) -> Result<u64, SearchError> {
        let mut n: u64 = 1;
        for s in &self.sweeps {
            n = n.saturating_mul(s.values.len());
        }
        if n > MAX_CANDIDATES {
            return Err(SearchError::SpaceTooLarge {
                count: n,
                max: MAX_CANDIDATES,
            });
        }
        Ok(n)
    }

    /// Never empty: without sweeps the space is the spec's defaults.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `k`-th candidate (`k < len()`).
    pub fn candidate(&self, k: u64) -> Candidate {
        let mut rest = k;
        let mut params = vec![(String::new(), ParamValue::Bool(false)); self.sweeps.len()];
        for (slot, s) in params.iter_mut().zip(&self.sweeps).rev() {
            let n = s.values.len().max(1);
            *slot = (s.param.clone(), s.values.get(rest % n));
            rest /= n;
        }
        Candidate { index: k, params }
    }
}

/// Parses a time span: `90`, `90s`, `15m`, `2h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, SearchError> {
    let t = text.trim();
    let (num, scale) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        _ => (t, 1.0),
    };
    let secs: f64 = num.trim().parse().map_err(|_| {
        SearchError::Config(format!(
            "bad time `{text}`: expected seconds, or a number with s, m or h"
        ))
    })?;
    if !secs.is_finite() || secs < 0.0 || secs * scale > 1e9 {
        return Err(SearchError::Config(format!(
            "bad time `{text}`: out of range"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(secs * scale))
}

/// Parses a byte size: `4000000`, `512KiB`, `4MiB`, `1GiB`, `4MB`, `1GB`.
pub fn parse_bytes(text: &str) -> Result<u64, SearchError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(SearchError::Config(format!(
                "bad size `{text}`: unknown unit `{other}` (use B, kB, MB, GB, KiB, MiB or GiB)"
            )))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| SearchError::Config(format!("bad size `{text}`: not a number")))?;
    let bytes = n * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(SearchError::Config(format!(
            "bad size `{text}`: out of range"
        )));
    }
    Ok(bytes.round() as u64)
}

/// A search space file: the same settings as the command-line flags.
///
/// ```yaml
/// sweep:
///   groups: [1, 2, 3, 4, 8]
///   width: "0.25:2.0:0.05"
/// set: {resolution: 224}
/// budget: 140
/// convention: macs
/// ```
///
/// It is read with the spec language's YAML layer, so every error names the
/// file, line and column, as spec errors do. A key whose value is null is
/// left unset.
#[derive(Debug, Clone, Default)]
pub struct SpaceFile {
    /// Parameters to sweep, sorted by name (each a list of values or a
    /// `start:end:step` string in the file).
    pub sweeps: Vec<Sweep>,
    /// Fixed parameter overrides as `name=value` pairs, sorted by name.
    pub sets: Vec<(String, String)>,
    /// The parameter to fit to the budget.
    pub match_budget: Option<String>,
    /// Budget in millions of counted operations.
    pub budget: Option<f64>,
    /// Maximum trainable parameters.
    pub max_params: Option<u64>,
    /// Maximum peak activation memory in bytes (`4MiB`, bytes... in the
    /// file).
    pub max_memory: Option<u64>,
    /// Maximum measured latency in ms.
    pub max_latency: Option<f64>,
    /// `macs`, `flops` or `macs-all`.
    pub convention: Option<String>,
    /// `all` or `conv`.
    pub count: Option<String>,
    /// Evaluators, e.g. `[flops, proxy]`.
    pub evaluate: Option<Vec<String>>,
}

/// The keys a space file may have.
const SPACE_KEYS: &[&str] = &[
    "sweep",
    "set",
    "match_budget",
    "budget",
    "max_params",
    "max_memory",
    "max_latency",
    "convention",
    "count",
    "evaluate",
];

impl SpaceFile {
    /// Reads a space file.
    pub fn read(path: &Path) -> Result<SpaceFile, SearchError> {
        SourceFile::read(path, "the search space file")
            .and_then(|file| SpaceFile::parse(&file))
            .map_err(|source| SearchError::SpaceFile { source })
    }

    /// Parses the text of a space file; errors point into `file`.
    pub fn parse(file: &SourceFile) -> Result<SpaceFile, SpecError> {
        let root = file.parse_yaml()?;
        let entries = match &root.kind {
            YamlKind::Map(entries) => entries.as_slice(),
            YamlKind::Null => &[],
            _ => return Err(file.type_error(&root, "a search space file", "a map")),
        };
        let mut space = SpaceFile::default();
        for (k, v) in entries {
            let key = file.key_str(k)?;
            if !SPACE_KEYS.contains(&key) {
                return Err(file.unknown_key(k, key, SPACE_KEYS, "key"));
            }
            if v.kind == YamlKind::Null {
                continue;
            }
            match key {
                "sweep" => space.sweeps = sweeps(file, v)?,
                "set" => space.sets = sets(file, v)?,
                "match_budget" => space.match_budget = Some(file.string(v, key)?),
                "budget" => space.budget = Some(number(file, v, key)?),
                "max_params" => space.max_params = Some(count(file, v, key)?),
                "max_memory" => space.max_memory = Some(size(file, v, key)?),
                "max_latency" => space.max_latency = Some(number(file, v, key)?),
                "convention" => space.convention = Some(file.string(v, key)?),
                "count" => space.count = Some(file.string(v, key)?),
                _ => space.evaluate = Some(strings(file, v, key)?),
            }
        }
        Ok(space)
    }
}

/// The text of a scalar, as a sweep or `--set` value is written.
fn scalar_text(v: &Yaml) -> Option<String> {
    match &v.kind {
        YamlKind::Bool(b) => Some(b.to_string()),
        YamlKind::Int(i) => Some(i.to_string()),
        // `{:?}` keeps the `.0` of an integral float, so `1.0` stays a float.
        YamlKind::Float(x) => Some(format!("{x:?}")),
        YamlKind::Str(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of a map, or an error naming `what`.
fn map_entries<'y>(
    file: &SourceFile,
    v: &'y Yaml,
    what: &str,
) -> Result<&'y [(Yaml, Yaml)], SpecError> {
    match &v.kind {
        YamlKind::Map(entries) => Ok(entries),
        _ => Err(file.type_error(v, &format!("`{what}`"), "a map")),
    }
}

/// `sweep:`: each parameter's list of values or `start:end:step` string.
fn sweeps(file: &SourceFile, v: &Yaml) -> Result<Vec<Sweep>, SpecError> {
    let mut out = Vec::new();
    for (k, v) in map_entries(file, v, "sweep")? {
        let name = file.key_str(k)?;
        let rhs = match &v.kind {
            YamlKind::Seq(items) => items
                .iter()
                .map(|item| {
                    scalar_text(item).ok_or_else(|| {
                        file.error_at_node(item, format!("sweep `{name}`: values must be scalars"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => scalar_text(v).ok_or_else(|| {
                file.error_at_node(
                    v,
                    format!("sweep `{name}`: expected a list or START:END:STEP"),
                )
            })?,
        };
        let sweep = Sweep::from_values_text(name, &rhs, &format!("{name}={rhs}"))
            .map_err(|e| file.error_at_node(v, e.to_string()))?;
        out.push(sweep);
    }
    out.sort_by(|a, b| a.param.cmp(&b.param));
    Ok(out)
}

/// `set:`: each parameter's fixed value.
fn sets(file: &SourceFile, v: &Yaml) -> Result<Vec<(String, String)>, SpecError> {
    let mut out = map_entries(file, v, "set")?
        .iter()
        .map(|(k, v)| {
            let name = file.key_str(k)?;
            let text = scalar_text(v).ok_or_else(|| {
                file.error_at_node(v, format!("set `{name}`: the value must be a scalar"))
            })?;
            Ok((name.to_string(), text))
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    out.sort();
    Ok(out)
}

fn number(file: &SourceFile, v: &Yaml, key: &str) -> Result<f64, SpecError> {
    match v.kind {
        YamlKind::Int(i) => Ok(i as f64),
        YamlKind::Float(x) => Ok(x),
        _ => Err(file.type_error(v, &format!("`{key}`"), "a number")),
    }
}

fn count(file: &SourceFile, v: &Yaml, key: &str) -> Result<u64, SpecError> {
    match v.kind {
        YamlKind::Int(i) if i >= 0 => Ok(i as u64),
        _ => Err(file.type_error(v, &format!("`{key}`"), "a non-negative integer")),
    }
}

/// A size in bytes: a number or a string with a unit (`4MiB`).
fn size(file: &SourceFile, v: &Yaml, key: &str) -> Result<u64, SpecError> {
    let text = match &v.kind {
        YamlKind::Int(_) | YamlKind::Float(_) | YamlKind::Str(_) => scalar_text(v),
        _ => None,
    }
    .ok_or_else(|| file.type_error(v, &format!("`{key}`"), "a size such as 4MiB"))?;
    parse_bytes(&text).map_err(|e| file.error_at_node(v, format!("`{key}`: {e}")))
}

fn strings(file: &SourceFile, v: &Yaml, key: &str) -> Result<Vec<String>, SpecError> {
    match &v.kind {
        YamlKind::Seq(items) => items.iter().map(|item| file.string(item, key)).collect(),
        _ => Err(file.type_error(v, &format!("`{key}`"), "a list of names")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_do_not_drift() {
        let s = Sweep::parse("width=0.25:2.0:0.05").unwrap();
        assert_eq!(s.values.len(), 36);
        let v: Vec<f64> = (0..36).map(|i| s.values.get(i).as_f64().unwrap()).collect();
        assert_eq!(v[1], 0.3);
        assert_eq!(v[35], 2.0);
        for (i, x) in v.iter().enumerate() {
            let expected: f64 = format!("{:.2}", 0.25 + 0.05 * i as f64).parse().unwrap();
            assert_eq!(*x, expected);
        }
        let s = Sweep::parse("w=0.1:1:0.1").unwrap();
        assert_eq!(s.values.len(), 10);
        assert_eq!(s.values.get(2), ParamValue::Float(0.3));
        let ints = Sweep::parse("stage2=100:400:4").unwrap();
        assert_eq!(ints.values.len(), 76);
        assert_eq!(ints.values.get(75), ParamValue::Int(400));
    }

    #[test]
    fn lists_and_errors() {
        let s = Sweep::parse("groups=1,2,3,4,8").unwrap();
        assert_eq!(s.values.len(), 5);
        assert_eq!(s.values.get(4), ParamValue::Int(8));
        let b = Sweep::parse("shuffle=true,false").unwrap();
        assert_eq!(b.values.get(1), ParamValue::Bool(false));
        for bad in [
            "groups",
            "=1,2",
            "groups=",
            "groups=1,,2",
            "width=1:0:0.1",
            "width=0:1:0",
            "width=0:1:-1",
            "width=a:b:c",
            "width=0:1e12:1e-6",
            "w=1:2:3:4",
        ] {
            assert!(Sweep::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn product_order_and_shards() {
        let space = Space {
            sweeps: vec![
                Sweep::parse("a=1,2").unwrap(),
                Sweep::parse("b=0.5,1.0,1.5").unwrap(),
            ],
        };
        assert_eq!(space.len().unwrap(), 6);
        assert_eq!(space.candidate(0).id(), "a=1,b=0.5");
        assert_eq!(space.candidate(4).id(), "a=2,b=1");
        assert_eq!(space.candidate(4).params[1].1.to_expr(), "1.0");
        let shard = Shard::parse("1/2").unwrap();
        assert!(shard.contains(3) && !shard.contains(4));
        assert!(Shard::parse("2/2").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("x").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert!(parse_duration("soon").is_err());
    }

    /// Parses a space file's text, named `space.yaml`.
    fn space(text: &str) -> Result<SpaceFile, SpecError> {
        SpaceFile::parse(&SourceFile::new("space.yaml", text))
    }

    /// The error of a space file's text, checking where it points.
    fn space_error(text: &str, line: usize, col: usize, message: &str) -> SpecError {
        let e = space(text).expect_err(text);
        assert_eq!((e.line, e.col), (line, col), "{text:?}: {e}");
        assert!(e.message.contains(message), "{text:?}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("space.yaml:{line}:{col}: ")),
            "{e}"
        );
        e
    }

    #[test]
    fn space_files_read_every_setting() {
        let file = space(
            "sweep:\n  width: [1.0, 1.5]\n  groups: \"1:3\"\nset: {resolution: 160, shuffle: false}\n\
             match_budget: stage2\nbudget: 140\nmax_params: 2000000\nmax_memory: 4MiB\n\
             max_latency: 2.5\nconvention: flops\ncount: conv\nevaluate: [flops, proxy]\n",
        )
        .unwrap();
        let sweeps: Vec<(&str, u64)> = file
            .sweeps
            .iter()
            .map(|s| (s.param.as_str(), s.values.len()))
            .collect();
        assert_eq!(sweeps, [("groups", 3), ("width", 2)]);
        assert_eq!(file.sweeps[1].values.get(0), ParamValue::Float(1.0));
        assert_eq!(
            file.sets,
            [
                ("resolution".to_string(), "160".to_string()),
                ("shuffle".to_string(), "false".to_string())
            ]
        );
        assert_eq!(file.match_budget.as_deref(), Some("stage2"));
        assert_eq!(file.budget, Some(140.0));
        assert_eq!(file.max_params, Some(2_000_000));
        assert_eq!(file.max_memory, Some(4 << 20));
        assert_eq!(file.max_latency, Some(2.5));
        assert_eq!(file.convention.as_deref(), Some("flops"));
        assert_eq!(file.count.as_deref(), Some("conv"));
        assert_eq!(file.evaluate, Some(vec!["flops".into(), "proxy".into()]));
        let empty = space("# nothing\nbudget: ~\n").unwrap();
        assert!(empty.sweeps.is_empty() && empty.budget.is_none());
    }

    #[test]
    fn malformed_space_file_names_line_and_column() {
        space_error("sweep:\n  groups: [1, 2\n", 3, 1, "invalid YAML");
        space_error("budget: 1\nbudget: 2\n", 2, 1, "duplicate");
        space_error("- 1\n- 2\n", 1, 1, "must be a map, found list");
    }

    #[test]
    fn unknown_space_key_names_line_column_and_the_key() {
        let e = space_error(
            "sweep: {groups: [1, 2]}\nbudgett: 140\n",
            2,
            1,
            "unknown key `budgett`",
        );
        assert!(e.notes.iter().any(|n| n.contains("did you mean `budget`?")));
        assert_eq!(e.len, "budgett".len());
    }

    #[test]
    fn wrong_typed_space_values_name_line_column_and_the_key() {
        space_error(
            "budget: lots\n",
            1,
            9,
            "`budget` must be a number, found string",
        );
        space_error(
            "max_params: -1\n",
            1,
            13,
            "`max_params` must be a non-negative integer",
        );
        space_error("convention: 2\n", 1, 13, "`convention` must be a string");
        space_error("evaluate: flops\n", 1, 11, "`evaluate` must be a list");
        space_error("set: [1]\n", 1, 6, "`set` must be a map, found list");
        space_error(
            "set:\n  groups: [3]\n",
            2,
            11,
            "set `groups`: the value must be a scalar",
        );
        space_error("max_memory: 4XB\n", 1, 13, "`max_memory`: bad size `4XB`");
        space_error("max_memory: true\n", 1, 13, "`max_memory` must be a size");
    }

    #[test]
    fn bad_sweep_values_in_a_space_file_name_line_and_column() {
        space_error("sweep:\n  width: \"2:1:0.1\"\n", 2, 10, "below its start");
        space_error(
            "sweep:\n  groups: [1, [2]]\n",
            2,
            15,
            "values must be scalars",
        );
        space_error(
            "sweep:\n  groups: {a: 1}\n",
            2,
            11,
            "expected a list or START:END:STEP",
        );
        space_error("sweep:\n  groups: []\n", 2, 11, "no values");
    }

    #[test]
    fn reading_a_space_file_keeps_the_located_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("space.yaml");
        std::fs::write(&path, "sweep:\n  width: \"2:1:0.1\"\n").unwrap();
        let e = SpaceFile::read(&path).unwrap_err();
        let SearchError::SpaceFile { source } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((source.line, source.col), (2, 10));
        let cause = std::error::Error::source(&e).expect("a source");
        assert_eq!(cause.to_string(), source.to_string());
        assert!(e.to_string().contains("space.yaml:2:10: "), "{e}");
        let missing = SpaceFile::read(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("cannot read the search space file"),
            "{missing}"
        );
    }
}
