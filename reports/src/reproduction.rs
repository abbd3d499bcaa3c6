//! `docs/reproduction.md`: the ShuffleNet v1 paper's Table 2 (groups at a
//! matched budget) and Table 3 (shuffle on / off) replayed from search
//! results, with one sentence per claim computed from the data.
//!
//! Every number comes from the results files: per-seed accuracies give a
//! mean and a Student-t 95% interval per variant, and each claim compares
//! two variants by the difference of their mean test accuracies with a
//! Welch 95% interval (and says whether the two variants' own intervals
//! separate). A claim reproduces when that interval lies above zero, is
//! contradicted when it lies below, and is not resolved otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shufflekit_search::evaluator::metric;
use shufflekit_search::results::{Record, Results, Status};
use shufflekit_search::space::ParamValue;
use shufflekit_search::stats::{
    bootstrap_spearman, t_quantile, MeanInterval, BOOTSTRAP_RESAMPLES, CONFIDENCE,
};
use shufflekit_search::train::train_metric;

use crate::curves::{accuracy_chart, PointSeries};
use crate::ReportError;

/// One trained network of the replay: a group count with or without
/// shuffle at one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The `groups` parameter.
    pub groups: i64,
    /// The `shuffle` parameter.
    pub shuffle: bool,
    /// The search's budget (millions of counted operations), if it had one.
    pub budget: Option<f64>,
    /// The record the numbers come from.
    pub record: Record,
}

impl Variant {
    /// `g=3` or `g=3, no shuffle`, with the budget when given.
    pub fn label(&self) -> String {
        format!(
            "g={}{}",
            self.groups,
            if self.shuffle { "" } else { ", no shuffle" }
        )
    }

    /// Every seed's value of an accuracy (`train_accuracy` or
    /// `train_val_accuracy`), in seed order; the mean alone for a record
    /// without per-seed values.
    pub fn seed_values(&self, accuracy: &str) -> Vec<f64> {
        let prefix = format!("{accuracy}_seed");
        let v: Vec<f64> = (1..)
            .map_while(|k| self.record.metric(&format!("{prefix}{k}")))
            .collect();
        if v.is_empty() {
            self.record.metric(accuracy).into_iter().collect()
        } else {
            v
        }
    }

    /// The mean and 95% interval of an accuracy over the seeds.
    pub fn interval(&self, accuracy: &str) -> Option<MeanInterval> {
        MeanInterval::of(&self.seed_values(accuracy))
    }
}

fn param(r: &Record, name: &str) -> Option<String> {
    if let Some(v) = r.params.get(name) {
        return Some(v.to_expr());
    }
    r.info.get(train_metric::OVERRIDES).and_then(|o| {
        o.split(',')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .next_back()
    })
}

/// The trained variants of several results files (each read on its own:
/// a `--set shuffle=false` run has the same candidate names as the run
/// with shuffle). A variant seen twice (same groups, shuffle and budget)
/// is kept once, from the first file.
pub fn variants(inputs: &[Results]) -> Vec<Variant> {
    let mut out: Vec<Variant> = Vec::new();
    for results in inputs {
        let budget = results
            .last_run()
            .and_then(|r| r.config.constraints.budget_m);
        for r in &results.records {
            if r.status != Status::Ok || r.metric(train_metric::ACCURACY).is_none() {
                continue;
            }
            let Some(groups) = param(r, "groups").and_then(|g| g.parse::<i64>().ok()) else {
                continue;
            };
            let shuffle = param(r, "shuffle").as_deref() != Some("false");
            if out
                .iter()
                .any(|v| v.groups == groups && v.shuffle == shuffle && v.budget == budget)
            {
                continue;
            }
            out.push(Variant {
                groups,
                shuffle,
                budget,
                record: r.clone(),
            });
        }
    }
    out.sort_by(|a, b| {
        a.budget
            .unwrap_or(0.0)
            .total_cmp(&b.budget.unwrap_or(0.0))
            .then(b.shuffle.cmp(&a.shuffle))
            .then(a.groups.cmp(&b.groups))
    });
    out
}

/// The difference of two means with its Welch 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// `mean(a) - mean(b)`.
    pub mean: f64,
    /// Half-width of the 95% interval (`None` when either side has one
    /// value: no interval can be given).
    pub half_width: Option<f64>,
}

impl Difference {
    /// The Welch difference `a - b` of two samples (`None` when either is
    /// empty or not finite). The degrees of freedom (Welch-Satterthwaite)
    /// are rounded down, which widens the interval slightly.
    pub fn of(a: &[f64], b: &[f64]) -> Option<Difference> {
        let (ia, ib) = (MeanInterval::of(a)?, MeanInterval::of(b)?);
        let mean = ia.mean - ib.mean;
        let (Some(sa), Some(sb)) = (ia.sd, ib.sd) else {
            return Some(Difference {
                mean,
                half_width: None,
            });
        };
        let (va, vb) = (sa * sa / ia.n as f64, sb * sb / ib.n as f64);
        let se2 = va + vb;
        if se2 == 0.0 {
            return Some(Difference {
                mean,
                half_width: Some(0.0),
            });
        }
        let df = se2 * se2 / (va * va / (ia.n - 1) as f64 + vb * vb / (ib.n - 1) as f64);
        let t = t_quantile(0.5 + CONFIDENCE / 2.0, (df.floor() as usize).max(1))?;
        Some(Difference {
            mean,
            half_width: Some(t * se2.sqrt()),
        })
    }

    /// Whether the interval lies above zero (`Some(true)`), below zero
    /// (`Some(false)`), or neither / no interval (`None`).
    pub fn sign(&self) -> Option<bool> {
        let h = self.half_width?;
        if self.mean - h > 0.0 {
            Some(true)
        } else if self.mean + h < 0.0 {
            Some(false)
        } else {
            None
        }
    }

    /// `+1.23 ± 0.45` (or `+1.23 (no interval)`).
    pub fn display(&self) -> String {
        match self.half_width {
            Some(h) => format!("{:+.2} ± {h:.2}", self.mean),
            None => format!("{:+.2} (no interval: one seed)", self.mean),
        }
    }
}

/// `97.12 ± 0.35`, or `97.12` with one value.
pub fn format_pm(iv: &MeanInterval) -> String {
    iv.display(2)
}

/// How a claim came out here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every comparison's interval lies on the claimed side of zero.
    Reproduces,
    /// Some comparisons reproduce, the others are not resolved or go the
    /// other way.
    Partly,
    /// No comparison reproduces and at least one goes clearly the other way.
    Contradicted,
    /// No interval excludes zero.
    NotResolved,
    /// The results lack the variants the claim needs.
    NotTested,
}

impl Verdict {
    /// The verdict in words.
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Reproduces => "Reproduces",
            Verdict::Partly => "Partly reproduces",
            Verdict::Contradicted => "Does not reproduce (the opposite is measured)",
            Verdict::NotResolved => "Not resolved (every interval includes zero)",
            Verdict::NotTested => "Not tested",
        }
    }

    fn of(signs: &[Option<bool>]) -> Verdict {
        let up = signs.iter().filter(|s| **s == Some(true)).count();
        let down = signs.iter().filter(|s| **s == Some(false)).count();
        if signs.is_empty() {
            Verdict::NotTested
        } else if up == signs.len() {
            Verdict::Reproduces
        } else if up > 0 {
            Verdict::Partly
        } else if down > 0 {
            Verdict::Contradicted
        } else {
            Verdict::NotResolved
        }
    }
}

/// One paper claim and what the data say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Where the paper makes it.
    pub table: &'static str,
    /// The claim.
    pub claim: &'static str,
    /// The outcome.
    pub verdict: Verdict,
    /// One sentence with the numbers.
    pub sentence: String,
}

/// The accuracy every claim compares: test accuracy, the analogue of the
/// paper's ImageNet validation error (the search chose nothing here).
const CLAIM_METRIC: &str = train_metric::ACCURACY;

fn compare(a: &Variant, b: &Variant) -> Option<(Difference, bool)> {
    let d = Difference::of(&a.seed_values(CLAIM_METRIC), &b.seed_values(CLAIM_METRIC))?;
    let (ia, ib) = (a.interval(CLAIM_METRIC)?, b.interval(CLAIM_METRIC)?);
    let separate = ia.half_width.is_some() && ib.half_width.is_some() && !ia.overlaps(&ib);
    Some((d, separate))
}

fn budget_text(b: Option<f64>) -> String {
    b.map_or("no budget".into(), |b| format!("{b} MFLOPs"))
}

fn separation(separate: bool) -> &'static str {
    if separate {
        "intervals separate"
    } else {
        "intervals overlap"
    }
}

/// The paper's claims checked on the variants ([`variants`]).
pub fn claims(vs: &[Variant]) -> Vec<Claim> {
    let mut budgets: Vec<Option<f64>> = vs.iter().map(|v| v.budget).collect();
    budgets.dedup();
    let find = |g: i64, shuffle: bool, b: Option<f64>| {
        vs.iter()
            .find(|v| v.groups == g && v.shuffle == shuffle && v.budget == b)
    };
    let mut out = Vec::new();

    // Table 2: every g > 1 against g = 1 at the same budget.
    let mut signs = Vec::new();
    let mut parts = Vec::new();
    for &b in &budgets {
        let Some(one) = find(1, true, b) else {
            continue;
        };
        for v in vs
            .iter()
            .filter(|v| v.shuffle && v.budget == b && v.groups > 1)
        {
            if let Some((d, sep)) = compare(v, one) {
                signs.push(d.sign());
                parts.push(format!(
                    "g={} {} points, {}",
                    v.groups,
                    d.display(),
                    separation(sep)
                ));
            }
        }
    }
    let verdict = Verdict::of(&signs);
    let sentence = if signs.is_empty() {
        "Not tested: the results have no g=1 variant and a g>1 variant at the same budget.".into()
    } else {
        let up = signs.iter().filter(|s| **s == Some(true)).count();
        format!(
            "{} here: {up} of {} group counts beat g=1 with 95% confidence (test accuracy minus g=1's at {}: {}).",
            verdict.describe(),
            signs.len(),
            budgets.iter().map(|b| budget_text(*b)).collect::<Vec<_>>().join(" and "),
            parts.join("; ")
        )
    };
    out.push(Claim {
        table: "Table 2",
        claim: "g > 1 beats g = 1 at a matched budget",
        verdict,
        sentence,
    });

    // Table 2: the gain of the most groups over g = 1 is larger at the
    // smallest budget than at the largest.
    let gain = |b: Option<f64>| -> Option<(i64, Difference)> {
        let one = find(1, true, b)?;
        let top = vs
            .iter()
            .filter(|v| v.shuffle && v.budget == b && v.groups > 1)
            .max_by_key(|v| v.groups)?;
        let d = Difference::of(
            &top.seed_values(CLAIM_METRIC),
            &one.seed_values(CLAIM_METRIC),
        )?;
        Some((top.groups, d))
    };
    let gained: Vec<(Option<f64>, (i64, Difference))> = budgets
        .iter()
        .filter_map(|&b| gain(b).map(|g| (b, g)))
        .collect();
    let (verdict, sentence) = match (gained.first(), gained.last()) {
        (Some(small), Some(large)) if gained.len() >= 2 && small.1 .0 == large.1 .0 => {
            let (gs, ds) = small.1;
            let (_, dl) = large.1;
            // Difference of two independent differences: their half-widths
            // add in quadrature (exact when both use the same t quantile).
            let half = match (ds.half_width, dl.half_width) {
                (Some(a), Some(b)) => Some(a.hypot(b)),
                _ => None,
            };
            let d = Difference {
                mean: ds.mean - dl.mean,
                half_width: half,
            };
            let verdict = Verdict::of(&[d.sign()]);
            (
                verdict,
                format!(
                    "{} here: g={gs} gains {} points over g=1 at {} and {} at {}, so the smaller model gains {} points more.",
                    verdict.describe(),
                    ds.display(),
                    budget_text(small.0),
                    dl.display(),
                    budget_text(large.0),
                    d.display()
                ),
            )
        }
        _ => (
            Verdict::NotTested,
            format!(
                "Not tested: it needs Table 2 at two or more budgets, and these results have {} ({}).",
                budgets.len(),
                budgets.iter().map(|b| budget_text(*b)).collect::<Vec<_>>().join(", ")
            ),
        ),
    };
    out.push(Claim {
        table: "Table 2",
        claim: "smaller models benefit more from more groups",
        verdict,
        sentence,
    });

    // Table 3: shuffle on against off, same groups and budget.
    let mut signs = Vec::new();
    let mut parts = Vec::new();
    for off in vs.iter().filter(|v| !v.shuffle) {
        let Some(on) = find(off.groups, true, off.budget) else {
            continue;
        };
        if let Some((d, sep)) = compare(on, off) {
            signs.push(d.sign());
            parts.push(format!(
                "g={} at {} {} points, {}",
                off.groups,
                budget_text(off.budget),
                d.display(),
                separation(sep)
            ));
        }
    }
    let verdict = Verdict::of(&signs);
    let sentence = if signs.is_empty() {
        "Not tested: the results have no shuffle=false variant with its shuffle=true counterpart."
            .into()
    } else {
        let up = signs.iter().filter(|s| **s == Some(true)).count();
        format!(
            "{} here: {up} of {} group counts are better with shuffle with 95% confidence (test accuracy with shuffle minus without: {}).",
            verdict.describe(),
            signs.len(),
            parts.join("; ")
        )
    };
    out.push(Claim {
        table: "Table 3",
        claim: "channel shuffle on beats shuffle off",
        verdict,
        sentence,
    });
    out
}

/// `2026-12-02 13:45 UTC` from seconds since the Unix epoch (proleptic
/// Gregorian calendar, the civil-from-days algorithm).
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// What [`render`] needs beside the results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReproductionOptions {
    /// The generator's own command line.
    pub command: Option<String>,
    /// A banner for a run that is not the reproduction (e.g. a smoke run).
    pub banner: Option<String>,
    /// The results files, as given (named in the document).
    pub inputs: Vec<PathBuf>,
}

/// The per-variant table of [`render`].
pub fn variant_table(vs: &[Variant]) -> String {
    let mut s = String::from(
        "| variant | budget (MFLOPs) | matched value | MFLOPs | params | seeds | validation accuracy % | test accuracy % | training s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let pm = |v: &Variant, m: &str| v.interval(m).map_or("-".into(), |iv| format_pm(&iv));
    for v in vs {
        let r = &v.record;
        let stage2 = r.matched.as_ref().map_or("-".into(), |m| {
            let value = match &m.value {
                ParamValue::Float(f) => format!("{}={f}", m.param),
                other => format!("{}={}", m.param, other.to_expr()),
            };
            match m.rounded_channels {
                Some(c) => format!("{value} ({c} channels)"),
                None => value,
            }
        });
        let _ = writeln!(
            s,
            "| {} | {} | {stage2} | {:.2} | {} | {} | {} | {} | {:.0} |",
            v.label(),
            v.budget.map_or("-".into(), |b| format!("{b}")),
            r.metric(metric::MFLOPS).unwrap_or(f64::NAN),
            r.metric(metric::PARAMS)
                .map_or("-".into(), |p| format!("{p:.0}")),
            v.seed_values(CLAIM_METRIC).len(),
            pm(v, train_metric::VAL_ACCURACY),
            pm(v, train_metric::ACCURACY),
            r.metric(train_metric::SECONDS).unwrap_or(f64::NAN),
        );
    }
    s
}

/// Writes the chart (test accuracy mean ± 95% interval against groups, a
/// series per budget and shuffle setting) to `stem.png` / `stem.svg`.
pub fn write_chart(stem: &Path, vs: &[Variant]) -> Result<(PathBuf, PathBuf), ReportError> {
    let mut series: BTreeMap<(String, bool), PointSeries> = BTreeMap::new();
    for v in vs {
        let Some(iv) = v.interval(CLAIM_METRIC) else {
            continue;
        };
        let label = format!(
            "{}{}",
            budget_text(v.budget),
            if v.shuffle {
                ", shuffle"
            } else {
                ", no shuffle"
            }
        );
        let s = series
            .entry((budget_text(v.budget), !v.shuffle))
            .or_insert_with(|| PointSeries {
                label,
                points: Vec::new(),
                names: Vec::new(),
                errors: Vec::new(),
            });
        // No-shuffle points sit a little to the right so both bars show.
        let x = v.groups as f64 + if v.shuffle { 0.0 } else { 0.15 };
        s.points.push((x, iv.mean));
        s.names.push(format!("  g={}", v.groups));
        s.errors.push(iv.half_width.unwrap_or(0.0));
    }
    let series: Vec<PointSeries> = series.into_values().collect();
    accuracy_chart(
        stem,
        &series,
        "Test accuracy, mean ± 95% interval over seeds",
        "groups",
        "test accuracy %",
    )
}

/// Spearman's correlation of NASWOT with validation accuracy over the
/// shuffle-on variants, with its bootstrap interval.
fn proxy_sentence(vs: &[Variant]) -> Option<String> {
    let pairs: Vec<(f64, f64)> = vs
        .iter()
        .filter(|v| v.shuffle)
        .filter_map(|v| {
            Some((
                v.record.metric(metric::NASWOT)?,
                v.record.metric(train_metric::VAL_ACCURACY)?,
            ))
        })
        .collect();
    let b = bootstrap_spearman(&pairs, BOOTSTRAP_RESAMPLES, 0)?;
    Some(format!(
        "NASWOT against mean validation accuracy over the {} shuffle-on variants: Spearman {:.3}, percentile bootstrap 95% interval [{:.3}, {:.3}] ({} resamples, seed 0).",
        pairs.len(),
        b.estimate,
        b.low,
        b.high,
        BOOTSTRAP_RESAMPLES
    ))
}

/// Renders the Markdown document and writes its chart to
/// `chart_dir/reproduction.png|svg`; `chart_link` is how the document
/// links to that directory (relative to the document).
pub fn render(
    inputs: &[Results],
    chart_dir: &Path,
    chart_link: &str,
    opts: &ReproductionOptions,
) -> Result<String, ReportError> {
    let vs = variants(inputs);
    let mut s = String::from("# Replaying the ShuffleNet v1 paper (Tables 2 and 3)\n\n");
    if let Some(b) = &opts.banner {
        let _ = writeln!(s, "> **{b}**\n");
    }
    let _ = writeln!(
        s,
        "Generated from the results files alone; every number below is computed from them. Intervals are 95% Student-t intervals of the mean over seeds; a claim compares mean test accuracies by their difference with a Welch 95% interval, and reproduces when that interval excludes zero on the claimed side. The validation split chose nothing here (every variant is reported); test accuracy is the analogue of the paper's ImageNet validation error.\n"
    );
    let _ = writeln!(s, "## Commands\n\n```sh");
    for r in inputs.iter().flat_map(|r| &r.runs) {
        let _ = writeln!(s, "{}", r.command);
    }
    if let Some(c) = &opts.command {
        let _ = writeln!(s, "{c}");
    }
    let _ = writeln!(s, "```\n");
    if let Some(run) = inputs.iter().find_map(|r| r.last_run()) {
        let m = &run.machine;
        let vector: Vec<&str> = m
            .cpu_flags
            .iter()
            .map(String::as_str)
            .filter(|f| ["sse4_2", "avx", "avx2", "fma", "avx512f", "neon", "asimd"].contains(f))
            .collect();
        let first = inputs
            .iter()
            .flat_map(|r| &r.runs)
            .map(|r| r.started_unix)
            .min()
            .unwrap_or(run.started_unix);
        let _ = writeln!(
            s,
            "## Machine and setup\n\n- Machine: {}, {} logical CPUs, {}, vector flags: {}.\n- Started: {} (shufflekit {}).\n- Counting: {}.",
            m.cpu_model,
            m.logical_cpus,
            m.os,
            if vector.is_empty() { "none listed".into() } else { vector.join(" ") },
            utc_date(first),
            run.version,
            run.counting_description,
        );
        if let Some(t) = run.evaluator_descriptions.get("train") {
            let _ = writeln!(s, "- Training: {t}.");
        }
        if let Some(task) = vs
            .first()
            .and_then(|v| v.record.info.get(train_metric::TASK))
        {
            let _ = writeln!(s, "- Each variant was {task}.");
        }
        let wall: f64 = inputs
            .iter()
            .flat_map(|r| &r.records)
            .map(|r| r.seconds)
            .sum();
        let _ = writeln!(
            s,
            "- Candidate wall time summed over the runs: {:.0} s ({:.1} min).\n",
            wall,
            wall / 60.0
        );
    }
    let _ = writeln!(s, "## Results\n\n{}", variant_table(&vs));
    for w in inputs.iter().flat_map(|r| &r.warnings) {
        let _ = writeln!(s, "- warning: {w}");
    }
    // The train evaluator retrains a shuffle=false candidate's shuffle=true
    // counterpart; seeded training is bit-reproducible, so it must equal
    // the Table 2 run of the same variant.
    for off in vs.iter().filter(|v| !v.shuffle) {
        let (Some(on), Some(again)) = (
            vs.iter()
                .find(|v| v.shuffle && v.groups == off.groups && v.budget == off.budget),
            off.record.metric(train_metric::ACCURACY_SHUFFLED),
        ) else {
            continue;
        };
        let first = on.record.metric(train_metric::ACCURACY).unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "- g={} with shuffle, trained again alongside the no-shuffle run: mean test accuracy {again:.4} against {first:.4} in the Table 2 run ({}).",
            off.groups,
            if (again - first).abs() < 1e-9 { "identical, as seeded training must be" } else { "they differ: the runs are not comparable" }
        );
    }
    std::fs::create_dir_all(chart_dir).map_err(|source| ReportError::Io {
        path: chart_dir.to_path_buf(),
        source,
    })?;
    write_chart(&chart_dir.join("reproduction"), &vs)?;
    let _ = writeln!(
        s,
        "\n![Test accuracy against groups, mean and 95% interval]({chart_link}/reproduction.png)\n\n([SVG]({chart_link}/reproduction.svg))\n\n## The paper's claims\n"
    );
    for c in claims(&vs) {
        let _ = writeln!(s, "- **{}: {}.** {}", c.table, c.claim, c.sentence);
    }
    if let Some(p) = proxy_sentence(&vs) {
        let _ = writeln!(s, "\n## The proxy\n\n{p}");
    }
    if !opts.inputs.is_empty() {
        let _ = writeln!(
            s,
            "\nResults files: {}.",
            opts.inputs
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(s)
}
