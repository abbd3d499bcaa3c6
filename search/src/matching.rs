//! Budget matching: the largest value of one parameter whose cost fits the
//! budget, by bisection on a lattice of values.
//!
//! The lattice is `start + i * step` for `i >= 0`: an integer parameter
//! steps by 1 from 1 (or by the step of a range given with `--sweep`), a
//! real parameter steps by the resolution (default [`DEFAULT_RESOLUTION`])
//! from the resolution. Without an upper end the search doubles `i` until
//! the cost exceeds the budget. Values at the low end that do not build
//! (a stage narrower than the stem that feeds it) are skipped: the search
//! starts at the first lattice value that builds, and a failure to build
//! above a value that fits counts as over the budget. Bisection assumes the cost does not
//! decrease as the parameter grows; every cost computed on the way is
//! kept, and [`MatchOutcome::monotone`] says whether they agree with that
//! assumption (the neighbours of the answer are always among them).

use serde::{Deserialize, Serialize};
use shufflekit_ir::cost;
use shufflekit_spec::Spec;

use crate::budget::Counting;
use crate::space::{ParamValue, Range};

/// The lattice step of real parameters when no range is given.
pub const DEFAULT_RESOLUTION: f64 = 0.001;
/// The largest lattice index the doubling search tries.
const MAX_INDEX: u64 = 1 << 24;

/// The values budget matching walks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lattice {
    /// The range: `end` is ignored when `bounded` is false.
    pub range: Range,
    /// Whether `range.end` bounds the search.
    pub bounded: bool,
}

impl Lattice {
    /// The default lattice of a parameter whose default is `default`.
    pub fn for_default(default: &ParamValue, resolution: f64) -> Lattice {
        let integer = matches!(default, ParamValue::Int(_));
        let (start, step) = if integer {
            (1.0, 1.0)
        } else {
            (resolution, resolution)
        };
        let decimals = format!("{resolution}")
            .split_once('.')
            .map(|(_, f)| f.len() as u32)
            .unwrap_or(0);
        Lattice {
            range: Range {
                start,
                end: start,
                step,
                integer,
                decimals: if integer { 0 } else { decimals },
            },
            bounded: false,
        }
    }

    fn max_index(&self) -> u64 {
        if self.bounded {
            self.range.len() - 1
        } else {
            MAX_INDEX
        }
    }
}

/// What budget matching found for one combination of the other parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchOutcome {
    /// The matched parameter.
    pub param: String,
    /// Its largest value that fits.
    pub value: ParamValue,
    /// The counted cost at that value.
    pub cost: u64,
    /// The channel count the spec rounded the value to, when the graph has
    /// layers named after the parameter (the output width of the last one:
    /// `stage2` -> the last `stage2.*` layer).
    pub rounded_channels: Option<usize>,
    /// How many costs were computed.
    pub probes: usize,
    /// Whether every computed cost was non-decreasing in the parameter.
    pub monotone: bool,
    /// A description of the first decrease seen, when not monotone.
    pub monotonicity_note: Option<String>,
    /// Whether the answer is the top of a bounded lattice (the budget might
    /// allow more).
    pub at_upper_bound: bool,
}

/// Why matching found nothing or could not run.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchFailure {
    /// Even the smallest lattice value costs more than the budget.
    NothingFits {
        /// The smallest value.
        value: ParamValue,
        /// Its cost.
        cost: u64,
    },
    /// The spec does not build at the smallest lattice value.
    Build(String),
}

/// Finds the largest lattice value of `param` whose counted cost is at most
/// `budget`, with `base` overrides for everything else.
pub fn match_budget(
    spec: &Spec,
    base: &[(String, String)],
    param: &str,
    lattice: &Lattice,
    counting: Counting,
    budget: u64,
) -> Result<MatchOutcome, MatchFailure> {
    let mut probes: Vec<(u64, Option<u64>)> = Vec::new();
    let mut cost_at = |i: u64| -> Result<u64, String> {
        if let Some((_, c)) = probes.iter().find(|(j, _)| *j == i) {
            return c.ok_or_else(|| "does not build".to_string());
        }
        let value = lattice.range.value(i);
        let mut overrides = base.to_vec();
        overrides.push((param.to_string(), value.to_expr()));
        let result = spec
            .build(&overrides)
            .map(|g| counting.count(&cost::count(&g, counting.convention)))
            .map_err(|e| e.to_string());
        probes.push((i, result.as_ref().ok().copied()));
        result
    };
    let max = lattice.max_index();
    // The smallest values may not build (a stage narrower than the stem
    // feeding it): find the first lattice value that builds, by doubling
    // and then bisecting on "builds".
    let mut first = 0u64;
    if let Err(e) = cost_at(0) {
        let (mut bad, mut good) = (0u64, None);
        let mut step = 1u64;
        while step <= max {
            match cost_at(step) {
                Ok(_) => {
                    good = Some(step);
                    break;
                }
                Err(_) => {
                    bad = step;
                    step = step.saturating_mul(2);
                }
            }
        }
        let Some(mut good) = good else {
            return Err(MatchFailure::Build(e));
        };
        while good - bad > 1 {
            let mid = bad + (good - bad) / 2;
            match cost_at(mid) {
                Ok(_) => good = mid,
                Err(_) => bad = mid,
            }
        }
        first = good;
    }
    let c0 = cost_at(first).map_err(MatchFailure::Build)?;
    if c0 > budget {
        return Err(MatchFailure::NothingFits {
            value: lattice.range.value(first),
            cost: c0,
        });
    }
    // Invariant: lo fits, hi does not fit (or is past the end).
    let (mut lo, mut hi) = (first, max + 1);
    let mut step = 1u64;
    while lo + step <= max {
        let i = lo + step;
        match cost_at(i) {
            Ok(c) if c <= budget => {
                lo = i;
                step = step.saturating_mul(2);
            }
            // A build failure above a value that builds counts as too big
            // (tensors past the size limits).
            _ => {
                hi = i;
                break;
            }
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match cost_at(mid) {
            Ok(c) if c <= budget => lo = mid,
            _ => hi = mid,
        }
    }
    // Make sure the neighbours of the answer were computed.
    if lo > first {
        let _ = cost_at(lo - 1);
    }
    if lo < max {
        let _ = cost_at(lo + 1);
    }
    let mut seen: Vec<(u64, u64)> = probes
        .iter()
        .filter_map(|(i, c)| c.map(|c| (*i, c)))
        .collect();
    seen.sort();
    seen.dedup();
    let decrease = seen.windows(2).find(|w| w[1].1 < w[0].1);
    let monotonicity_note = decrease.map(|w| {
        format!(
            "cost decreases from {} at {param}={} to {} at {param}={}",
            w[0].1,
            lattice.range.value(w[0].0),
            w[1].1,
            lattice.range.value(w[1].0)
        )
    });
    let cost = seen
        .iter()
        .find(|(i, _)| *i == lo)
        .map(|(_, c)| *c)
        .unwrap_or(c0);
    let value = lattice.range.value(lo);
    let mut overrides = base.to_vec();
    overrides.push((param.to_string(), value.to_expr()));
    let rounded_channels = spec.build(&overrides).ok().and_then(|g| {
        let prefix = format!("{param}.");
        g.nodes()
            .filter(|&id| {
                let n = &g.node(id).name;
                n == param || n.starts_with(&prefix)
            })
            .last()
            .map(|id| g.node(id).shape.channels())
    });
    Ok(MatchOutcome {
        param: param.to_string(),
        value,
        cost,
        rounded_channels,
        probes: probes.len(),
        monotone: monotonicity_note.is_none(),
        monotonicity_note,
        at_upper_bound: lattice.bounded && lo == max,
    })
}
