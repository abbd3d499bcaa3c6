//! The report section of the `train` evaluator (`training.md` and the
//! accuracy-against-cost chart): trained accuracy per candidate, the
//! paper's Table 3 shuffle ablation when the results have `shuffle=false`
//! candidates, and the rank correlation of the NASWOT proxy with the
//! trained accuracy when both ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use shufflekit_search::evaluator::metric;
use shufflekit_search::pareto::{choice, interval_of};
use shufflekit_search::results::{Record, Status};
use shufflekit_search::train::train_metric;

use crate::curves::{accuracy_chart, PointSeries};
use crate::{accuracy_statements, ReportError};

fn override_of(r: &Record, name: &str) -> Option<String> {
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

/// The Markdown section of a report for records the `train` evaluator
/// measured: accuracy against MFLOPs (deployment input) with the proxy
/// task's input; the shuffle ablation in the style of the paper's Table 3
/// when the records include candidates with `shuffle=false` (with or
/// without their `shuffle=true` counterparts: merge both runs' results);
/// and Spearman's correlation between the NASWOT proxy score and the
/// trained accuracy when the `proxy` evaluator ran too. `None` when no
/// record has a trained accuracy.
pub fn training_section(records: &[Record]) -> Option<String> {
    let trained: Vec<&Record> = records
        .iter()
        .filter(|r| r.status != Status::Error && r.metric(train_metric::ACCURACY).is_some())
        .collect();
    if trained.is_empty() {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(s, "## Accuracy by training\n");
    if let Some(task) = trained[0].info.get(train_metric::TASK) {
        let _ = writeln!(s, "Each candidate was {task}.\n");
    }
    let _ = writeln!(
        s,
        "| candidate | MFLOPs (deployment) | MFLOPs (trained input) | seeds | validation accuracy % | test accuracy % (reported only) | test accuracy per epoch (mean) | train loss | seconds |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut sorted = trained.clone();
    sorted.sort_by(|a, b| {
        a.metric(metric::MFLOPS)
            .unwrap_or(0.0)
            .total_cmp(&b.metric(metric::MFLOPS).unwrap_or(0.0))
    });
    for r in &sorted {
        let epochs: Vec<String> = (1..)
            .map_while(|e| r.metric(&format!("{}{e}", train_metric::EPOCH_PREFIX)))
            .map(|v| format!("{v:.1}"))
            .collect();
        let show = |m: &str| interval_of(r, m).map_or("-".into(), |iv| iv.display(2));
        let _ = writeln!(
            s,
            "| {}{} | {:.2} | {:.2} | {} | {} | {} | {} | {:.4} | {:.0} |",
            r.id,
            override_of(r, "shuffle")
                .filter(|v| v == "false")
                .map(|_| " (no shuffle)")
                .unwrap_or(""),
            r.metric(metric::MFLOPS).unwrap_or(f64::NAN),
            r.metric(train_metric::PROXY_MFLOPS).unwrap_or(f64::NAN),
            r.metric(train_metric::SEEDS).map_or(1, |n| n as usize),
            show(train_metric::VAL_ACCURACY),
            show(train_metric::ACCURACY),
            epochs.join(" / "),
            r.metric(train_metric::LOSS).unwrap_or(f64::NAN),
            r.metric(train_metric::SECONDS).unwrap_or(f64::NAN),
        );
    }
    // Table 3: per groups (and other parameters), with and without shuffle.
    let key = |r: &Record| {
        let mut params: BTreeMap<String, String> = r
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != "shuffle")
            .map(|(k, v)| (k.clone(), v.to_expr()))
            .collect();
        // A budget-matched width differs between the two runs: key by the
        // swept parameters other than the matched one.
        if let Some(m) = &r.matched {
            params.remove(&m.param);
        }
        params
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let no_shuffle: Vec<&&Record> = trained
        .iter()
        .filter(|r| override_of(r, "shuffle").as_deref() == Some("false"))
        .collect();
    if !no_shuffle.is_empty() {
        let _ = writeln!(
            s,
            "\n### Shuffle ablation (the paper's Table 3 style)\n\nTest error % after the same training, with and without channel shuffle (same seed, same budget-matched widths):\n\n| variant | with shuffle | without shuffle | difference |\n|---|---|---|---|"
        );
        let mut keys: Vec<String> = no_shuffle.iter().map(|r| key(r)).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let err_of = |shuffle: bool| {
                let find = |no_shuffle: bool| {
                    trained.iter().find(|r| {
                        key(r) == k
                            && (override_of(r, "shuffle").as_deref() == Some("false")) == no_shuffle
                    })
                };
                if shuffle {
                    find(false)
                        .and_then(|r| r.metric(train_metric::ERROR))
                        .or_else(|| find(true).and_then(|r| r.metric(train_metric::ERROR_SHUFFLED)))
                } else {
                    find(true).and_then(|r| r.metric(train_metric::ERROR))
                }
            };
            let (with, without) = (err_of(true), err_of(false));
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            let diff = match (with, without) {
                (Some(a), Some(b)) => format!("{:+.2}", b - a),
                _ => "-".into(),
            };
            let _ = writeln!(s, "| {k} | {} | {} | {diff} |", f(with), f(without));
        }
    }
    let _ = writeln!(s);
    for p in accuracy_statements(records, choice(records).as_ref()) {
        let _ = writeln!(s, "{p}\n");
    }
    Some(s)
}

/// Writes `training.md` ([`training_section`]) and the chart
/// `accuracy_vs_mflops.png` / `.svg` (trained accuracy against MFLOPs at the
/// deployment input, one series per `shuffle` setting) into `dir`; returns
/// the files written (none when no record was trained).
pub fn write_training_report(
    dir: &std::path::Path,
    records: &[Record],
) -> Result<Vec<std::path::PathBuf>, ReportError> {
    let Some(md) = training_section(records) else {
        return Ok(Vec::new());
    };
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let md_path = dir.join("training.md");
    std::fs::write(&md_path, md).map_err(io(&md_path))?;
    // The chart shows what chooses: validation accuracy when there is one.
    let (y_metric, which) = if records
        .iter()
        .any(|r| r.metric(train_metric::VAL_ACCURACY).is_some())
    {
        (train_metric::VAL_ACCURACY, "validation")
    } else {
        (train_metric::ACCURACY, "test")
    };
    type Points = (Vec<(f64, f64)>, Vec<String>, Vec<f64>);
    let mut series: BTreeMap<String, Points> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status != Status::Error) {
        if let (Some(x), Some(iv)) = (r.metric(metric::MFLOPS), interval_of(r, y_metric)) {
            let label = match override_of(r, "shuffle").as_deref() {
                Some("false") => "without channel shuffle",
                _ => "trained candidates",
            };
            let entry = series.entry(label.to_string()).or_default();
            entry.0.push((x, iv.mean));
            entry.1.push(format!(" {}", r.id));
            entry.2.push(iv.half_width.unwrap_or(0.0));
        }
    }
    let series: Vec<PointSeries> = series
        .into_iter()
        .map(|(label, (points, names, errors))| PointSeries {
            label,
            points,
            names,
            errors,
        })
        .collect();
    let (png, svg) = accuracy_chart(
        &dir.join("accuracy_vs_mflops"),
        &series,
        &format!("trained {which} accuracy vs cost (mean, 95% interval over seeds)"),
        "MFLOPs at the deployment input",
        &format!("{which} accuracy (%)"),
    )?;
    Ok(vec![md_path, png, svg])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, groups: i64, overrides: &str, values: &[(&str, f64)]) -> Record {
        Record {
            index: groups as u64,
            id: id.into(),
            params: [(
                "groups".to_string(),
                shufflekit_search::space::ParamValue::Int(groups),
            )]
            .into_iter()
            .collect(),
            status: Status::Ok,
            metrics: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            info: [(train_metric::OVERRIDES.to_string(), overrides.to_string())]
                .into_iter()
                .collect(),
            violations: Vec::new(),
            error: None,
            matched: None,
            seconds: 1.0,
        }
    }

    #[test]
    fn training_section_has_the_ablation_and_the_correlation() {
        assert!(training_section(&[]).is_none());
        let r = |g: i64, acc: f64, with: f64, naswot: f64| {
            record(
                &format!("groups={g}"),
                g,
                &format!("shuffle=false,groups={g}"),
                &[
                    (metric::MFLOPS, 30.0 + g as f64),
                    (metric::NASWOT, naswot),
                    (train_metric::ACCURACY, acc),
                    (train_metric::ERROR, 100.0 - acc),
                    (train_metric::ERROR_SHUFFLED, 100.0 - with),
                    (&format!("{}1", train_metric::EPOCH_PREFIX), acc - 5.0),
                ],
            )
        };
        let md = training_section(&[
            r(2, 95.0, 96.0, 1.0),
            r(3, 94.0, 96.5, 2.0),
            r(8, 93.0, 97.0, 3.0),
        ])
        .unwrap();
        assert!(md.contains("| groups=3 (no shuffle) | 33.00 |"), "{md}");
        assert!(md.contains("| 1 | - | 94.00 |"), "{md}");
        assert!(md.contains("### Shuffle ablation"), "{md}");
        assert!(md.contains("| groups=8 | 3.00 | 7.00 | +4.00 |"), "{md}");
        assert!(
            md.contains("Spearman rank correlation of the NASWOT proxy score with the trained test accuracy: -1.000 over 3 candidates, bootstrap 95% interval"),
            "{md}"
        );
        assert!(md.contains("trained with one seed: no interval"), "{md}");
    }

    /// Three seeds per candidate: validation mean, its half-width, MACs.
    fn seeded(id: &str, index: u64, val: f64, ci: f64, macs: f64) -> Record {
        let mut r = record(
            id,
            index as i64,
            "",
            &[
                (metric::MFLOPS, macs / 1e6),
                (metric::MACS, macs),
                (train_metric::VAL_ACCURACY, val),
                (train_metric::VAL_ACCURACY_CI, ci),
                (train_metric::ACCURACY, val - 0.5),
                (train_metric::ACCURACY_CI, ci),
                (train_metric::SEEDS, 3.0),
            ],
        );
        r.index = index;
        r
    }

    #[test]
    fn the_report_gives_intervals_the_lead_and_the_tie_rule() {
        // Disjoint intervals: the best leads outside them.
        let apart = [
            seeded("a", 0, 90.0, 0.5, 10e6),
            seeded("b", 1, 85.0, 0.5, 5e6),
        ];
        let md = training_section(&apart).unwrap();
        assert!(
            md.contains("| a | 10.00 | NaN | 3 | 90.00 ± 0.50 | 89.50 ± 0.50 |"),
            "{md}"
        );
        assert!(md.contains("trained with 3 seeds"), "{md}");
        assert!(
            md.contains("Chosen: `a` (90.00 ± 0.50% validation)"),
            "{md}"
        );
        assert!(
            md.contains("lead over the runner-up `b` (85.00 ± 0.50%) is outside the intervals"),
            "{md}"
        );
        // Overlapping intervals: the cheaper one is chosen, and the report says why.
        let close = [
            seeded("a", 0, 90.0, 2.0, 10e6),
            seeded("b", 1, 89.0, 2.0, 5e6),
        ];
        let md = training_section(&close).unwrap();
        assert!(
            md.contains("Chosen: `b` (89.00 ± 2.00% validation)"),
            "{md}"
        );
        assert!(md.contains("The best mean is `a` (90.00 ± 2.00%), but its interval overlaps the cheaper `b`'s, so the tie went to the cheaper."), "{md}");
        assert!(md.contains("is NOT outside the intervals"), "{md}");
    }
}
