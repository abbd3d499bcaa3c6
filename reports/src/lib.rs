//! Reports of shufflekit searches: a directory with `report.md`, a
//! self-contained `index.html` (inline SVG, no scripts, no external
//! resources), PNG and SVG charts, `results.csv`, the JSONL results and,
//! when candidates were trained, `statistics.json` (means, intervals, every
//! seed, the choice and the proxy's rank correlation).
//!
//! Everything is rendered from the results alone ([`Results`]), so
//! `shufflekit report` can merge shard files and re-render at any time.
//!
//! ```no_run
//! use shufflekit_search::Results;
//! let results = Results::read_all(&["out/results.jsonl".into()]).unwrap();
//! let report = shufflekit_reports::render(
//!     &results,
//!     "out".as_ref(),
//!     &shufflekit_reports::ReportOptions::default(),
//! )
//! .unwrap();
//! println!("{}", report.dir.join("index.html").display());
//! ```
#![deny(missing_docs)]

pub mod curves;
pub mod plots;
pub mod reproduction;
pub mod training;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shufflekit_search::budget::KIND_GROUPS;
use shufflekit_search::evaluator::{metric, PAPER_SPEC};
use shufflekit_search::paper::PAPER_POINTS;
use shufflekit_search::pareto::{
    choice, default_objectives, interval_of, pareto_front, primary_score, Choice, TRAINED_RULE,
};
use shufflekit_search::stats::{bootstrap_spearman, BOOTSTRAP_RESAMPLES};
use shufflekit_search::train::train_metric;
use shufflekit_search::{Direction, Line, Objective, Record, Results, Status};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or directory could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error("cannot draw `{}`: {message}", path.display())]
    Plot {
        /// The chart file.
        path: PathBuf,
        /// What plotters said.
        message: String,
    },
    /// The results hold no candidate at all.
    #[error("the results contain no candidate: nothing to report")]
    NoResults,
}

/// Settings of a report.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// The Pareto objectives; empty for the defaults (cost, score, latency).
    pub objectives: Vec<Objective>,
    /// The command that rendered the report, when it is not the search
    /// itself (`shufflekit report ...`).
    pub render_command: Option<String>,
    /// Input files the report merged; the merged JSONL is not written over
    /// any of them.
    pub inputs: Vec<PathBuf>,
}

/// What [`render`] wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// The report directory.
    pub dir: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The chosen variant's id.
    pub chosen: Option<String>,
    /// The ids on the Pareto front.
    pub front: Vec<String>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, text: &str, files: &mut Vec<PathBuf>) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(io_err(path))?;
    files.push(path.to_path_buf());
    Ok(())
}

/// A chart of the report.
struct Chart {
    stem: String,
    title: String,
    svg: String,
}

/// Renders the report of `results` into `out`.
pub fn render(
    results: &Results,
    out: &Path,
    options: &ReportOptions,
) -> Result<Report, ReportError> {
    if results.records.is_empty() {
        return Err(ReportError::NoResults);
    }
    let plots_dir = out.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(io_err(&plots_dir))?;
    let records = &results.records;
    let objectives = if options.objectives.is_empty() {
        default_objectives(records)
    } else {
        options.objectives.clone()
    };
    let front = pareto_front(records, &objectives);
    let picked = choice(records);
    let chosen = picked.as_ref().map(|c| c.chosen);
    let mut files = Vec::new();

    let run = results.last_run();
    let unit = run
        .map(|r| r.cost_unit.clone())
        .unwrap_or_else(|| "MMACs".into());
    let budget = run.and_then(|r| r.config.constraints.budget_m);
    let group_param = series_param(results);
    let mut charts = Vec::new();

    // Score vs cost, one chart per score; trained accuracies with their
    // intervals over seeds.
    for (m, dir, label) in [
        (
            train_metric::VAL_ACCURACY,
            Direction::Max,
            "validation accuracy after training, % (mean over seeds)",
        ),
        (
            train_metric::ACCURACY,
            Direction::Max,
            "test accuracy after training, % (mean over seeds)",
        ),
        (
            metric::NASWOT,
            Direction::Max,
            "NASWOT score (higher is better)",
        ),
        (
            metric::PAPER_ERROR,
            Direction::Min,
            "published ImageNet top-1 error, % (lower is better)",
        ),
    ] {
        if !records.iter().any(|r| r.metric(m).is_some()) {
            continue;
        }
        let paper_applies = m == metric::PAPER_ERROR
            && run.is_some_and(|r| {
                r.config.spec_name == PAPER_SPEC
                    && r.config.counting.convention == shufflekit_ir_convention_macs()
            });
        let x_max = records
            .iter()
            .filter_map(|r| r.metric(metric::MFLOPS))
            .fold(budget.unwrap_or(0.0), f64::max);
        let reference = if paper_applies {
            PAPER_POINTS
                .iter()
                .filter(|p| p.mflops <= x_max * 1.15)
                .map(|p| (p.mflops, p.top1_error, p.label()))
                .collect()
        } else {
            Vec::new()
        };
        let mut s = scatter_of(records, m, dir, &group_param, chosen, budget, reference);
        s.error_bars = records
            .iter()
            .filter_map(|r| {
                let x = r.metric(metric::MFLOPS)?;
                let iv = interval_of(r, m)?;
                iv.half_width?;
                let (lo, hi) = iv.bounds();
                Some((x, lo, hi))
            })
            .collect();
        let scatter = plots::Scatter {
            title: format!("{} vs cost", short_name(m)),
            x_label: unit.clone(),
            y_label: label.to_string(),
            // Error bars reach down into the lower right, where the points
            // of a budget-matched sweep sit; cheap and accurate stays empty.
            legend: match dir {
                _ if !s.error_bars.is_empty() => plots::Corner::UpperLeft,
                Direction::Max => plots::Corner::LowerRight,
                Direction::Min => plots::Corner::UpperRight,
            },
            ..s
        };
        let stem = format!("score_{m}");
        let svg = plots::scatter(&plots_dir, &stem, &scatter)?;
        charts.push(Chart {
            stem,
            title: format!("{} vs {unit}", short_name(m)),
            svg,
        });
    }
    // Latency vs cost.
    if records
        .iter()
        .any(|r| r.metric(metric::LATENCY_MS).is_some())
    {
        let engine = records
            .iter()
            .find_map(|r| r.info.get("latency_engine").cloned())
            .unwrap_or_default();
        let s = scatter_of(
            records,
            metric::LATENCY_MS,
            Direction::Min,
            &group_param,
            chosen,
            budget,
            Vec::new(),
        );
        let scatter = plots::Scatter {
            title: format!("Latency vs cost (FLOPs are not speed; engine: {engine})"),
            x_label: unit.clone(),
            y_label: "median latency, ms".into(),
            legend: plots::Corner::UpperLeft,
            ..s
        };
        let svg = plots::scatter(&plots_dir, "latency_vs_cost", &scatter)?;
        charts.push(Chart {
            stem: "latency_vs_cost".into(),
            title: format!("Latency vs {unit}"),
            svg,
        });
    }
    // The chosen variant's cost per layer kind.
    if let Some(c) = chosen.map(|i| &records[i]) {
        let bars: Vec<(String, f64)> = KIND_GROUPS
            .iter()
            .filter_map(|(k, label)| {
                let v = c.metric(&format!("{}{k}", metric::OPS_KIND_PREFIX))?;
                (*k != "other" || v > 0.0).then(|| (label.to_string(), v / 1e6))
            })
            .collect();
        if !bars.is_empty() {
            let b = plots::Bars {
                title: format!("Cost per layer kind: {}", c.id),
                y_label: unit.clone(),
                bars,
            };
            let svg = plots::bars(&plots_dir, "cost_by_layer_kind", &b)?;
            charts.push(Chart {
                stem: "cost_by_layer_kind".into(),
                title: format!("Cost per layer kind of the chosen variant ({})", c.id),
                svg,
            });
        }
    }
    for c in &charts {
        files.push(plots_dir.join(format!("{}.png", c.stem)));
        files.push(plots_dir.join(format!("{}.svg", c.stem)));
    }

    write(
        &out.join("results.csv"),
        &results_csv(records, &front, chosen),
        &mut files,
    )?;
    if let Some(stats) = statistics_json(records, picked.as_ref()) {
        let text = serde_json::to_string_pretty(&stats).unwrap_or_default() + "\n";
        write(&out.join("statistics.json"), &text, &mut files)?;
    }
    let jsonl = out.join("results.jsonl");
    let is_input = options.inputs.iter().any(|i| same_file(i, &jsonl));
    if !is_input {
        write(&jsonl, &merged_jsonl(results), &mut files)?;
    } else {
        files.push(jsonl);
    }
    let summary = Summary {
        results,
        objectives: &objectives,
        front: &front,
        chosen,
        choice: picked.as_ref(),
        charts: &charts,
        options,
        unit: &unit,
    };
    write(&out.join("report.md"), &summary.markdown(), &mut files)?;
    write(&out.join("index.html"), &summary.html(), &mut files)?;
    Ok(Report {
        dir: out.to_path_buf(),
        files,
        chosen: chosen.map(|i| records[i].id.clone()),
        front: front.iter().map(|&i| records[i].id.clone()).collect(),
    })
}

fn shufflekit_ir_convention_macs() -> shufflekit_search::budget::Convention {
    shufflekit_search::budget::Convention::Macs
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn short_name(m: &str) -> &str {
    match m {
        metric::NASWOT => "NASWOT score",
        train_metric::VAL_ACCURACY => "Validation accuracy",
        train_metric::ACCURACY => "Test accuracy",
        metric::PAPER_ERROR => "Published top-1 error",
        metric::LATENCY_MS => "Latency",
        other => other,
    }
}

/// The parameter points are coloured by: the first swept one with at most
/// eight values.
fn series_param(results: &Results) -> Option<String> {
    let sweeps = results.last_run().map(|r| r.config.space.sweeps.clone())?;
    sweeps
        .iter()
        .find(|s| s.values.len() <= 8)
        .map(|s| s.param.clone())
}

fn front_2d(points: &mut [(f64, f64)], dir: Direction) -> Vec<(f64, f64)> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for &(x, y) in points.iter() {
        let better = match front.last() {
            None => true,
            Some(&(_, best)) => match dir {
                Direction::Max => y > best,
                Direction::Min => y < best,
            },
        };
        if better {
            front.push((x, y));
        }
    }
    front
}

fn scatter_of(
    records: &[Record],
    m: &str,
    dir: Direction,
    group: &Option<String>,
    chosen: Option<usize>,
    budget: Option<f64>,
    reference: Vec<(f64, f64, String)>,
) -> plots::Scatter {
    let mut groups: BTreeMap<String, (f64, Vec<(f64, f64)>)> = BTreeMap::new();
    let mut infeasible = Vec::new();
    let mut ok_points = Vec::new();
    for r in records {
        let (Some(x), Some(y)) = (r.metric(metric::MFLOPS), r.metric(m)) else {
            continue;
        };
        if r.status != Status::Ok {
            infeasible.push((x, y));
            continue;
        }
        ok_points.push((x, y));
        let (key, order) = match group.as_ref().and_then(|g| r.params.get(g).map(|v| (g, v))) {
            Some((g, v)) => (format!("{g}={v}"), v.as_f64().unwrap_or(0.0)),
            None => ("feasible".to_string(), 0.0),
        };
        groups
            .entry(key)
            .or_insert((order, Vec::new()))
            .1
            .push((x, y));
    }
    let mut series: Vec<(f64, plots::Series)> = groups
        .into_iter()
        .map(|(label, (order, points))| (order, plots::Series { label, points }))
        .collect();
    series.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.label.cmp(&b.1.label)));
    plots::Scatter {
        series: series.into_iter().map(|(_, s)| s).collect(),
        infeasible,
        front: front_2d(&mut ok_points, dir),
        chosen: chosen
            .and_then(|i| Some((records[i].metric(metric::MFLOPS)?, records[i].metric(m)?))),
        budget,
        reference,
        ..Default::default()
    }
}

/// All metric names in the records, in a stable order (headline first).
fn metric_columns(records: &[Record]) -> Vec<String> {
    let headline = [
        metric::MFLOPS,
        metric::MACS,
        metric::CONV_MACS,
        metric::PARAMS,
        metric::PEAK_MEMORY,
        metric::LATENCY_MS,
        metric::NASWOT,
        metric::PAPER_ERROR,
        metric::PAPER_MFLOPS,
    ];
    let mut all: Vec<String> = records
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect();
    all.sort();
    all.dedup();
    let mut out: Vec<String> = headline
        .iter()
        .filter(|h| all.iter().any(|a| a == *h))
        .map(|h| h.to_string())
        .collect();
    out.extend(all.into_iter().filter(|a| !headline.contains(&a.as_str())));
    out
}

fn param_columns(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        for k in r.params.keys() {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The candidates as CSV: index, id, parameters, status, front and chosen
/// flags, every metric, violations and errors. Timing of the run itself
/// (seconds per candidate) is left out so reruns compare equal.
pub fn results_csv(records: &[Record], front: &[usize], chosen: Option<usize>) -> String {
    let params = param_columns(records);
    let metrics = metric_columns(records);
    let mut out = String::new();
    let mut header = vec!["index".to_string(), "id".to_string()];
    header.extend(params.iter().cloned());
    header.extend(["status", "on_front", "chosen"].map(String::from));
    header.extend(metrics.iter().cloned());
    header.extend(["matched_channels", "violations", "error"].map(String::from));
    out.push_str(
        &header
            .iter()
            .map(|h| csv_field(h))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push('\n');
    for (i, r) in records.iter().enumerate() {
        let mut row = vec![r.index.to_string(), r.id.clone()];
        row.extend(
            params
                .iter()
                .map(|p| r.params.get(p).map(|v| v.to_string()).unwrap_or_default()),
        );
        row.push(status_name(r.status).into());
        row.push(front.contains(&i).to_string());
        row.push((chosen == Some(i)).to_string());
        row.extend(
            metrics
                .iter()
                .map(|m| r.metric(m).map(number).unwrap_or_default()),
        );
        row.push(
            r.matched
                .as_ref()
                .and_then(|m| m.rounded_channels)
                .map(|c| c.to_string())
                .unwrap_or_default(),
        );
        row.push(r.violations.join("; "));
        row.push(r.error.clone().unwrap_or_default());
        out.push_str(
            &row.iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Infeasible => "infeasible",
        Status::Error => "error",
    }
}

/// The merged results as JSONL: run lines, candidates by index, stop lines.
pub fn merged_jsonl(results: &Results) -> String {
    let mut out = String::new();
    let lines = results
        .runs
        .iter()
        .map(|r| Line::Run(Box::new(r.clone())))
        .chain(
            results
                .records
                .iter()
                .map(|r| Line::Candidate(Box::new(r.clone()))),
        )
        .chain(results.stops.iter().map(|s| Line::Stop(s.clone())));
    for l in lines {
        if let Ok(t) = serde_json::to_string(&l) {
            out.push_str(&t);
            out.push('\n');
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn fmt_metric(m: &str, v: f64) -> String {
    match m {
        metric::MFLOPS | metric::LATENCY_MS | metric::NASWOT => format!("{v:.2}"),
        metric::PEAK_MEMORY => format!("{:.2} MiB", v / (1024.0 * 1024.0)),
        metric::PARAMS => format!("{:.3} M", v / 1e6),
        metric::PAPER_ERROR => format!("{v:.1}"),
        _ => number(v),
    }
}

/// Everything the Markdown and HTML renderings share.
struct Summary<'a> {
    results: &'a Results,
    objectives: &'a [Objective],
    front: &'a [usize],
    chosen: Option<usize>,
    choice: Option<&'a Choice>,
    charts: &'a [Chart],
    options: &'a ReportOptions,
    unit: &'a str,
}

/// A simple table: header and rows of text.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| {} |",
            self.header
                .iter()
                .map(|h| md_cell(h))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(s, "|{}", "---|".repeat(self.header.len()));
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} |",
                r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
            );
        }
        s
    }

    fn html(&self) -> String {
        let mut s = String::from("<table>\n<thead><tr>");
        for h in &self.header {
            let _ = write!(s, "<th>{}</th>", html_escape(h));
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            s.push_str("<tr>");
            for c in r {
                let _ = write!(s, "<td>{}</td>", html_escape(c));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody>\n</table>\n");
        s
    }
}

impl Summary<'_> {
    fn records(&self) -> &[Record] {
        &self.results.records
    }

    /// Key facts as (label, value) pairs.
    fn facts(&self) -> Vec<(String, String)> {
        let mut f = Vec::new();
        let Some(run) = self.results.last_run() else {
            f.push(("run".into(), "no run line in the results".into()));
            return f;
        };
        let c = &run.config;
        f.push((
            "spec".into(),
            format!("{} (`{}`)", c.spec_name, c.spec_path),
        ));
        f.push(("FLOP convention".into(), run.counting_description.clone()));
        f.push(("cost unit".into(), self.unit.to_string()));
        let sweeps: Vec<String> = c.space.sweeps.iter().map(|s| s.text.clone()).collect();
        f.push((
            "space".into(),
            format!(
                "{} ({} candidates){}",
                if sweeps.is_empty() {
                    "defaults only".to_string()
                } else {
                    sweeps.join(" ")
                },
                run.space_size,
                c.match_param
                    .as_ref()
                    .map(|p| format!("; `{p}` matched to the budget by bisection"))
                    .unwrap_or_default()
            ),
        ));
        if !c.fixed.is_empty() {
            f.push((
                "fixed".into(),
                c.fixed
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
        let k = &c.constraints;
        let mut cons = Vec::new();
        if let Some(b) = k.budget_m {
            cons.push(format!("budget {b} M"));
        }
        if let Some(p) = k.max_params {
            cons.push(format!("max params {p}"));
        }
        if let Some(m) = k.max_memory_bytes {
            cons.push(format!("max peak memory {m} B"));
        }
        if let Some(l) = k.max_latency_ms {
            cons.push(format!("max latency {l} ms"));
        }
        f.push((
            "constraints".into(),
            if cons.is_empty() {
                "none".into()
            } else {
                cons.join(", ")
            },
        ));
        for (name, d) in &run.evaluator_descriptions {
            f.push((format!("evaluator `{name}`"), d.clone()));
        }
        f.push(("seed".into(), c.seed.to_string()));
        f.push((
            "objectives".into(),
            self.objectives
                .iter()
                .map(|o| {
                    format!(
                        "{}:{}",
                        o.metric,
                        if o.direction == Direction::Min {
                            "min"
                        } else {
                            "max"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        ));
        f.push((
            "chosen by".into(),
            match primary_score(self.records()) {
                Some(o) if self.choice.is_some_and(|c| c.trained.is_some()) => {
                    format!("`{}`: {TRAINED_RULE}", o.metric)
                }
                Some(o) => format!(
                    "best `{}` ({}) among feasible candidates, ties to the cheaper",
                    o.metric,
                    if o.direction == Direction::Min {
                        "lowest"
                    } else {
                        "highest"
                    }
                ),
                None => "no score evaluator: the costliest feasible candidate".into(),
            },
        ));
        let m = &run.machine;
        f.push((
            "machine".into(),
            format!("{}, {} logical CPUs, {}", m.cpu_model, m.logical_cpus, m.os),
        ));
        f.push(("CPU flags".into(), m.cpu_flags.join(" ")));
        for (i, r) in self.results.runs.iter().enumerate() {
            let shard = r.shard.map(|s| format!(" (shard {s})")).unwrap_or_default();
            f.push((format!("command {}{shard}", i + 1), r.command.clone()));
        }
        if let Some(rc) = &self.options.render_command {
            f.push(("report rendered by".into(), rc.clone()));
        }
        for (i, s) in self.results.stops.iter().enumerate() {
            f.push((
                format!("stop {}", i + 1),
                format!(
                    "{}; {} evaluated, {} left, {:.1} s",
                    s.reason.describe(),
                    s.evaluated,
                    s.remaining,
                    s.seconds
                ),
            ));
        }
        let count = |st: Status| self.records().iter().filter(|r| r.status == st).count();
        f.push((
            "candidates".into(),
            format!(
                "{} with results: {} feasible, {} over a constraint, {} errors",
                self.records().len(),
                count(Status::Ok),
                count(Status::Infeasible),
                count(Status::Error)
            ),
        ));
        for w in &self.results.warnings {
            f.push(("warning".into(), w.clone()));
        }
        f
    }

    fn headline_metrics(&self) -> Vec<&'static str> {
        [
            metric::MFLOPS,
            train_metric::VAL_ACCURACY,
            train_metric::ACCURACY,
            metric::PARAMS,
            metric::PEAK_MEMORY,
            metric::LATENCY_MS,
            metric::NASWOT,
            metric::PAPER_ERROR,
        ]
        .into_iter()
        .filter(|m| self.records().iter().any(|r| r.metric(m).is_some()))
        .collect()
    }

    fn table_of(&self, indices: &[usize]) -> Table {
        let ms = self.headline_metrics();
        let mut header = vec!["candidate".to_string(), "status".to_string()];
        header.extend(ms.iter().map(|m| match *m {
            metric::MFLOPS => format!("cost ({})", self.unit),
            train_metric::VAL_ACCURACY => "validation accuracy %".into(),
            train_metric::ACCURACY => "test accuracy % (reported only)".into(),
            _ => m.to_string(),
        }));
        let rows = indices
            .iter()
            .map(|&i| {
                let r = &self.records()[i];
                let mut row = vec![r.id.clone(), status_name(r.status).to_string()];
                row.extend(ms.iter().map(|m| {
                    if *m == train_metric::VAL_ACCURACY || *m == train_metric::ACCURACY {
                        return interval_of(r, m).map_or("-".into(), |iv| iv.display(2));
                    }
                    r.metric(m)
                        .map(|v| fmt_metric(m, v))
                        .unwrap_or_else(|| "-".into())
                }));
                row
            })
            .collect();
        Table { header, rows }
    }

    fn matched_table(&self) -> Option<Table> {
        let rows: Vec<Vec<String>> = self
            .records()
            .iter()
            .filter_map(|r| {
                let m = r.matched.as_ref()?;
                Some(vec![
                    r.id.clone(),
                    format!("{}={}", m.param, m.value),
                    m.rounded_channels
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    format!("{:.3}", m.cost as f64 / 1e6),
                    m.probes.to_string(),
                    if m.monotone {
                        "yes".into()
                    } else {
                        format!("NO: {}", m.monotonicity_note.clone().unwrap_or_default())
                    },
                ])
            })
            .collect();
        (!rows.is_empty()).then(|| Table {
            header: [
                "candidate",
                "largest value within budget",
                "rounded channels",
                &format!("cost ({})", self.unit),
                "costs computed",
                "monotone",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        })
    }

    fn chosen_text(&self) -> String {
        match self.chosen.map(|i| &self.records()[i]) {
            Some(r) => r.headline(&[
                metric::MFLOPS,
                train_metric::VAL_ACCURACY,
                metric::NASWOT,
                metric::PAPER_ERROR,
                metric::LATENCY_MS,
            ]),
            None => "no feasible candidate".into(),
        }
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let name = self
            .results
            .last_run()
            .map(|r| r.config.spec_name.clone())
            .unwrap_or_default();
        let _ = writeln!(s, "# Search report: {name}\n");
        let _ = writeln!(s, "**Chosen variant:** `{}`\n", self.chosen_text());
        s.push_str("## Setup\n\n");
        for (k, v) in self.facts() {
            if k.starts_with("command") || k == "report rendered by" {
                let _ = writeln!(s, "- **{k}**: `{}`", v.replace('`', "'"));
            } else {
                let _ = writeln!(s, "- **{k}**: {}", v.replace('\n', " "));
            }
        }
        if let Some(i) = self.chosen {
            s.push_str("\n## Chosen variant\n\n");
            s.push_str(&self.table_of(&[i]).markdown());
        }
        let statements = accuracy_statements(self.records(), self.choice);
        if !statements.is_empty() {
            s.push_str("\n## Accuracy and its uncertainty\n\n");
            for p in &statements {
                let _ = writeln!(s, "{p}\n");
            }
        }
        if let Some(t) = self.matched_table() {
            s.push_str("\n## Budget matching\n\n");
            s.push_str(&t.markdown());
        }
        s.push_str("\n## Pareto front\n\n");
        if self.front.is_empty() {
            s.push_str("No feasible candidate has every objective.\n");
        } else {
            s.push_str(&self.table_of(self.front).markdown());
        }
        s.push_str("\n## Charts\n\n");
        for c in self.charts {
            let _ = writeln!(
                s,
                "### {}\n\n![{}](plots/{}.png)\n\n([SVG](plots/{}.svg))\n",
                c.title, c.title, c.stem, c.stem
            );
        }
        s.push_str("## All candidates\n\n");
        let all: Vec<usize> = (0..self.records().len()).collect();
        s.push_str(&self.table_of(&all).markdown());
        s.push_str("\nFull data: [results.csv](results.csv), [results.jsonl](results.jsonl)");
        if self.choice.is_some_and(|c| c.trained.is_some()) {
            s.push_str(", [statistics.json](statistics.json)");
        }
        s.push_str(".\n");
        s
    }

    fn html(&self) -> String {
        let name = self
            .results
            .last_run()
            .map(|r| r.config.spec_name.clone())
            .unwrap_or_default();
        let mut s = String::new();
        s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        s.push_str("<link rel=\"icon\" href=\"data:,\">\n");
        let _ = writeln!(s, "<title>Search report: {}</title>", html_escape(&name));
        s.push_str("<style>\nbody{font-family:'DejaVu Sans',Verdana,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\ntable{border-collapse:collapse;margin:1em 0;font-size:0.9em}\nth,td{border:1px solid #ccc;padding:3px 8px;text-align:left}\nth{background:#f2f2f2}\ndt{font-weight:bold;margin-top:0.5em}\ndd{margin-left:1.5em;word-break:break-word}\ncode{background:#f6f6f6;padding:1px 3px}\nfigure{margin:1.5em 0}\nfigure svg{max-width:100%;height:auto;border:1px solid #eee}\n</style>\n</head>\n<body>\n");
        let _ = writeln!(s, "<h1>Search report: {}</h1>", html_escape(&name));
        let _ = writeln!(
            s,
            "<p><strong>Chosen variant:</strong> <code>{}</code></p>",
            html_escape(&self.chosen_text())
        );
        s.push_str("<h2>Setup</h2>\n<dl>\n");
        for (k, v) in self.facts() {
            let value = if k.starts_with("command") || k == "report rendered by" || k == "CPU flags"
            {
                format!("<code>{}</code>", html_escape(&v))
            } else {
                html_escape(&v)
            };
            let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", html_escape(&k), value);
        }
        s.push_str("</dl>\n");
        if let Some(i) = self.chosen {
            s.push_str("<h2>Chosen variant</h2>\n");
            s.push_str(&self.table_of(&[i]).html());
        }
        let statements = accuracy_statements(self.records(), self.choice);
        if !statements.is_empty() {
            s.push_str("<h2>Accuracy and its uncertainty</h2>\n");
            for p in &statements {
                let _ = writeln!(s, "<p>{}</p>", html_escape(p).replace('`', ""));
            }
        }
        if let Some(t) = self.matched_table() {
            s.push_str("<h2>Budget matching</h2>\n");
            s.push_str(&t.html());
        }
        s.push_str("<h2>Pareto front</h2>\n");
        if self.front.is_empty() {
            s.push_str("<p>No feasible candidate has every objective.</p>\n");
        } else {
            s.push_str(&self.table_of(self.front).html());
        }
        s.push_str("<h2>Charts</h2>\n");
        for c in self.charts {
            let _ = writeln!(
                s,
                "<figure>\n<figcaption>{}</figcaption>",
                html_escape(&c.title)
            );
            s.push_str(&inline_svg(&c.svg));
            s.push_str("\n</figure>\n");
        }
        s.push_str("<h2>All candidates</h2>\n");
        let all: Vec<usize> = (0..self.records().len()).collect();
        s.push_str(&self.table_of(&all).html());
        s.push_str("<p>Full data: <code>results.csv</code>, <code>results.jsonl</code> beside this page.</p>\n</body>\n</html>\n");
        s
    }
}

/// The seed of the bootstrap of the proxy's rank correlation.
pub const BOOTSTRAP_SEED: u64 = 0;

/// What a report says about trained accuracy (empty when nothing was
/// trained): which set chooses and which is only reported; the number of
/// seeds and the interval (or that one seed gives none); the choice, and
/// whether the best candidate's lead over the runner-up is outside the
/// intervals; and, when the NASWOT proxy ran too, its Spearman rank
/// correlation with the trained accuracy with a bootstrap 95% interval.
pub fn accuracy_statements(records: &[Record], choice: Option<&Choice>) -> Vec<String> {
    let trained: Vec<&Record> = records
        .iter()
        .filter(|r| r.status != Status::Error && r.metric(train_metric::ACCURACY).is_some())
        .collect();
    if trained.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let has_val = trained
        .iter()
        .any(|r| r.metric(train_metric::VAL_ACCURACY).is_some());
    let chooser = if has_val {
        train_metric::VAL_ACCURACY
    } else {
        train_metric::ACCURACY
    };
    out.push(if has_val {
        "Selection uses the validation set, held out from the training set (per class, fixed by the search's seed); the test set is only reported and never used to choose.".to_string()
    } else {
        "These results have no validation set: the test accuracy was used to choose, so it is not an unbiased estimate.".to_string()
    });
    let seeds: Vec<usize> = trained
        .iter()
        .map(|r| r.metric(train_metric::SEEDS).map_or(1, |n| n as usize))
        .collect();
    let (lo, hi) = (
        seeds.iter().copied().min().unwrap_or(1),
        seeds.iter().copied().max().unwrap_or(1),
    );
    let n_text = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo} to {hi}")
    };
    out.push(if hi < 2 {
        "Each candidate was trained with one seed: no interval can be given, and differences between candidates may be seed noise (run with `--seeds N`, N >= 2, for mean ± 95% interval).".to_string()
    } else {
        format!("Each candidate was trained with {n_text} seeds; accuracies are the mean ± the half-width of the 95% Student-t interval (df = seeds - 1), and the charts draw these intervals as error bars.")
    });
    if let Some(c) = choice {
        if let Some(t) = &c.trained {
            let name = |i: usize| records[i].id.clone();
            let show =
                |i: usize| interval_of(&records[i], chooser).map_or("-".into(), |iv| iv.display(2));
            let mut p = format!(
                "Chosen: `{}` ({}% {}). Rule: {TRAINED_RULE}.",
                name(c.chosen),
                show(c.chosen),
                if has_val { "validation" } else { "test" }
            );
            if c.chosen != t.best {
                let _ = write!(
                    p,
                    " The best mean is `{}` ({}%), but its interval overlaps the cheaper `{}`'s, so the tie went to the cheaper.",
                    name(t.best),
                    show(t.best),
                    name(c.chosen)
                );
            }
            match (t.runner_up, t.separated) {
                (None, _) => p.push_str(" No runner-up to compare with."),
                (Some(j), Some(true)) => {
                    let _ = write!(
                        p,
                        " The best mean's lead over the runner-up `{}` ({}%) is outside the intervals: the two do not overlap.",
                        name(j),
                        show(j)
                    );
                }
                (Some(j), Some(false)) => {
                    let _ = write!(
                        p,
                        " The best mean's lead over the runner-up `{}` ({}%) is NOT outside the intervals: they overlap, so the ranking of the two is not established.",
                        name(j),
                        show(j)
                    );
                }
                (Some(j), None) => {
                    let _ = write!(
                        p,
                        " The runner-up is `{}` ({}%); with one seed no interval says whether the best mean's lead is more than noise.",
                        name(j),
                        show(j)
                    );
                }
            }
            out.push(p);
        }
    }
    let pairs: Vec<(f64, f64)> = trained
        .iter()
        .filter_map(|r| Some((r.metric(metric::NASWOT)?, r.metric(chooser)?)))
        .collect();
    if !pairs.is_empty() {
        let what = if has_val { "validation" } else { "test" };
        out.push(
            match bootstrap_spearman(&pairs, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED) {
                Some(b) => format!(
                    "Spearman rank correlation of the NASWOT proxy score with the trained {what} accuracy: {:.3} over {} candidates, bootstrap 95% interval [{:.3}, {:.3}] ({} resamples of the candidates with replacement, seed {}, percentile method; {} resamples had a defined correlation).",
                    b.estimate,
                    pairs.len(),
                    b.low,
                    b.high,
                    b.resamples,
                    b.seed,
                    b.defined
                ),
                None => format!(
                    "Spearman rank correlation of the NASWOT proxy score with the trained {what} accuracy: undefined ({} candidate(s) with both, or a constant side).",
                    pairs.len()
                ),
            },
        );
    }
    out
}

/// The statistics of trained accuracy as JSON (`statistics.json`; `None`
/// when nothing was trained): the selection set, the rule, the choice and
/// its comparison with the runner-up, each trained candidate's mean,
/// interval and per-seed accuracies (validation and test), and the proxy's
/// Spearman correlation with its bootstrap interval.
pub fn statistics_json(records: &[Record], choice: Option<&Choice>) -> Option<serde_json::Value> {
    use serde_json::json;
    let trained: Vec<&Record> = records
        .iter()
        .filter(|r| r.status != Status::Error && r.metric(train_metric::ACCURACY).is_some())
        .collect();
    if trained.is_empty() {
        return None;
    }
    let has_val = trained
        .iter()
        .any(|r| r.metric(train_metric::VAL_ACCURACY).is_some());
    let chooser = if has_val {
        train_metric::VAL_ACCURACY
    } else {
        train_metric::ACCURACY
    };
    let seeds_of = |r: &Record, prefix: &str| -> Vec<f64> {
        (1..)
            .map_while(|k| r.metric(&format!("{prefix}{k}")))
            .collect()
    };
    let set = |r: &Record, m: &str, prefix: &str| {
        interval_of(r, m).map(|iv| {
            json!({
                "mean": iv.mean,
                "ci95_half_width": iv.half_width,
                "ci95": iv.half_width.map(|_| [iv.bounds().0, iv.bounds().1]),
                "seeds": seeds_of(r, prefix),
            })
        })
    };
    let candidates: Vec<serde_json::Value> = trained
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "status": status_name(r.status),
                "macs": r.metric(metric::MACS),
                "mflops": r.metric(metric::MFLOPS),
                "seeds": r.metric(train_metric::SEEDS).map_or(1, |n| n as usize),
                "seed_values": r.info.get(train_metric::SEED_LIST),
                "validation_accuracy": set(r, train_metric::VAL_ACCURACY, train_metric::VAL_SEED_PREFIX),
                "test_accuracy": set(r, train_metric::ACCURACY, train_metric::SEED_PREFIX),
                "naswot": r.metric(metric::NASWOT),
            })
        })
        .collect();
    let id = |i: usize| records[i].id.clone();
    let chosen = choice.and_then(|c| {
        let t = c.trained.as_ref()?;
        Some(json!({
            "chosen": id(c.chosen),
            "best_mean": id(t.best),
            "runner_up": t.runner_up.map(id),
            "lead_outside_intervals": t.separated,
            "tied_with_best": t.tied.iter().map(|&i| id(i)).collect::<Vec<_>>(),
            "intervals": t.intervals,
        }))
    });
    let pairs: Vec<(f64, f64)> = trained
        .iter()
        .filter_map(|r| Some((r.metric(metric::NASWOT)?, r.metric(chooser)?)))
        .collect();
    let spearman = (!pairs.is_empty()).then(|| {
        match bootstrap_spearman(&pairs, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED) {
            Some(b) => json!({
                "candidates": pairs.len(),
                "rho": b.estimate,
                "bootstrap_ci95": [b.low, b.high],
                "resamples": b.resamples,
                "defined_resamples": b.defined,
                "seed": b.seed,
                "method": "percentile bootstrap over candidates, resampled with replacement",
            }),
            None => json!({ "candidates": pairs.len(), "rho": null }),
        }
    });
    Some(json!({
        "selection_metric": chooser,
        "selection_set": if has_val { "validation (held out from the training set)" } else { "test (no validation set in these results)" },
        "test_set": "reported only",
        "interval": "95% Student-t interval of the mean over seeds, df = seeds - 1; none with one seed",
        "rule": TRAINED_RULE,
        "choice": chosen,
        "naswot_vs_trained_spearman": spearman,
        "candidates": candidates,
    }))
}

/// The SVG without an XML declaration, with a view box so it scales.
fn inline_svg(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    };
    if body.contains("viewBox") {
        body.to_string()
    } else {
        body.replacen(
            "<svg ",
            &format!("<svg viewBox=\"0 0 {} {}\" ", plots::SIZE.0, plots::SIZE.1),
            1,
        )
    }
}
