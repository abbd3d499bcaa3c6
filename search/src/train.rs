//! The `train` evaluator: accuracy measured by training each candidate
//! briefly on a dataset (the proxy task of `shufflekit_train::proxy`), and
//! the report section that goes with it.
//!
//! A candidate is rebuilt at the dataset's input shape and class count
//! (the spec's `resolution`, `channels`, `classes`, and `small_input=true`
//! when the spec has it) and trained with `shufflekit_train` (the code
//! `shufflekit train` runs); its budget and MFLOPs stay those of the
//! deployment network the driver costed. The dataset is loaded once and
//! shared by every candidate. A candidate with `shuffle=false` is also
//! trained with `shuffle=true` (same seed and widths), so a search run with
//! `--set shuffle=false` measures the paper's Table 3 ablation by itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use shufflekit_train::data::{DataSource, Split};
use shufflekit_train::proxy::proxy_overrides;
use shufflekit_train::{TrainConfig, Trainer};

use crate::error::{EvaluatorError, SearchError};
use crate::evaluator::{metric, EvalContext, Evaluator, Metrics};
use crate::results::{Record, Status};

/// Names of the metrics and notes the `train` evaluator writes.
pub mod train_metric {
    /// Test accuracy in percent after the last epoch (higher is better).
    pub const ACCURACY: &str = "train_accuracy";
    /// Test error in percent (`100 - accuracy`).
    pub const ERROR: &str = "train_error";
    /// Mean training loss of the last epoch.
    pub const LOSS: &str = "train_loss";
    /// Mean test loss after the last epoch.
    pub const TEST_LOSS: &str = "train_test_loss";
    /// Wall time of the training in seconds.
    pub const SECONDS: &str = "train_seconds";
    /// Multiply-adds (millions) of the trained network at the dataset's
    /// input size.
    pub const PROXY_MFLOPS: &str = "train_proxy_mflops";
    /// Prefix of the per-epoch test accuracies (`train_accuracy_epoch1`...).
    pub const EPOCH_PREFIX: &str = "train_accuracy_epoch";
    /// Test accuracy of the same candidate with `shuffle=true`, measured
    /// alongside a `shuffle=false` candidate (the ablation's other column).
    pub const ACCURACY_SHUFFLED: &str = "train_accuracy_with_shuffle";
    /// Test error of the same candidate with `shuffle=true`.
    pub const ERROR_SHUFFLED: &str = "train_error_with_shuffle";
    /// Note: the overrides the candidate was trained with (`k=v,...`).
    pub const OVERRIDES: &str = "train_overrides";
    /// Note: what the proxy task changed and both input sizes.
    pub const TASK: &str = "train_task";
}

/// Settings of [`TrainEvaluator`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainEvalOptions {
    /// The dataset.
    pub data: DataSource,
    /// Epochs per candidate.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Peak learning rate (linear decay to 0, weight decay 4e-5).
    pub lr: f64,
}

impl Default for TrainEvalOptions {
    fn default() -> Self {
        TrainEvalOptions {
            data: DataSource::MnistSample,
            epochs: 3,
            batch: 64,
            lr: 0.1,
        }
    }
}

/// Trains every candidate on a dataset and reports its test accuracy.
pub struct TrainEvaluator {
    options: TrainEvalOptions,
    split: Arc<Split>,
}

impl TrainEvaluator {
    /// Loads the dataset (once for the whole search).
    pub fn new(options: TrainEvalOptions) -> Result<Self, SearchError> {
        if options.epochs == 0 || options.batch < 2 || !(options.lr.is_finite() && options.lr > 0.0)
        {
            return Err(SearchError::Config(
                "train: epochs must be at least 1, the batch at least 2 and the learning rate positive".into(),
            ));
        }
        let split = options
            .data
            .load()
            .map_err(|e| SearchError::Config(format!("train: {e}")))?;
        Ok(TrainEvaluator {
            options,
            split: Arc::new(split),
        })
    }
}

impl TrainEvaluator {
    fn train_once(&self, graph: &shufflekit_ir::Graph, seed: u64) -> Result<Trainer, String> {
        let config = TrainConfig {
            epochs: self.options.epochs,
            batch: self.options.batch,
            lr: self.options.lr,
            seed,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(graph, &self.split, config).map_err(|e| e.to_string())?;
        trainer
            .fit(&self.split, &mut |_| {}, &mut |_| Ok(true))
            .map_err(|e| e.to_string())?;
        Ok(trainer)
    }
}

impl Evaluator for TrainEvaluator {
    fn name(&self) -> &str {
        "train"
    }

    fn description(&self) -> String {
        let o = &self.options;
        let [c, h, w] = self.split.shape();
        format!(
            "test accuracy after training each candidate for {} epoch(s) on `{}` ({}; {} training / {} test images of {c}x{h}x{w}, {} classes): SGD momentum 0.9, weight decay 4e-5, lr {} decaying linearly to 0, batch {}, seed of the search; the network is rebuilt at the dataset's input (resolution, channels, classes, small_input) while budget and MFLOPs are counted at the spec's deployment input (shufflekit_train)",
            o.epochs,
            o.data.describe(),
            self.split.source,
            self.split.train.len(),
            self.split.test.len(),
            self.split.classes(),
            o.lr,
            o.batch
        )
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Metrics, EvaluatorError> {
        let err = |m: String| EvaluatorError::new("train", m);
        let overrides = proxy_overrides(ctx.spec, ctx.overrides, &self.split)
            .map_err(|e| err(e.to_string()))?;
        let graph = ctx
            .spec
            .build(&overrides)
            .map_err(|e| err(format!("adapting to `{}`: {e}", self.split.name)))?;
        let start = Instant::now();
        let trainer = self.train_once(&graph, ctx.seed).map_err(err)?;
        let seconds = start.elapsed().as_secs_f64();
        let history = &trainer.history().epochs;
        let last = history
            .last()
            .ok_or_else(|| err("no epoch was run".into()))?;
        let proxy_cost = shufflekit_ir::cost::count(&graph, ctx.cost.convention);
        let mut m = Metrics::default();
        m.set(train_metric::ACCURACY, last.test_accuracy);
        m.set(train_metric::ERROR, 100.0 - last.test_accuracy);
        m.set(train_metric::LOSS, last.train_loss);
        m.set(train_metric::TEST_LOSS, last.test_loss);
        m.set(
            train_metric::SECONDS,
            start.elapsed().as_secs_f64().max(seconds),
        );
        m.set(train_metric::PROXY_MFLOPS, proxy_cost.macs as f64 / 1e6);
        for s in history {
            m.set(
                &format!("{}{}", train_metric::EPOCH_PREFIX, s.epoch),
                s.test_accuracy,
            );
        }
        // The shuffle ablation: a `shuffle=false` candidate is also trained
        // with `shuffle=true` (same seed), unless both build the same
        // network (one group has no shuffle).
        let no_shuffle = ctx.spec.param_names().contains(&"shuffle")
            && ctx
                .overrides
                .iter()
                .rev()
                .find(|(k, _)| k == "shuffle")
                .is_some_and(|(_, v)| v == "false");
        if no_shuffle {
            let mut with: Vec<(String, String)> = overrides
                .iter()
                .filter(|(k, _)| k != "shuffle")
                .cloned()
                .collect();
            with.push(("shuffle".into(), "true".into()));
            let shuffled = ctx
                .spec
                .build(&with)
                .map_err(|e| err(format!("building the shuffle=true counterpart: {e}")))?;
            let dump = |g: &shufflekit_ir::Graph| shufflekit_ir::text::dump(g, Default::default());
            let acc = if dump(&shuffled) == dump(&graph) {
                last.test_accuracy
            } else {
                let t = self.train_once(&shuffled, ctx.seed).map_err(err)?;
                t.history()
                    .epochs
                    .last()
                    .map(|s| s.test_accuracy)
                    .ok_or_else(|| err("no epoch was run".into()))?
            };
            m.set(train_metric::ACCURACY_SHUFFLED, acc);
            m.set(train_metric::ERROR_SHUFFLED, 100.0 - acc);
        }
        m.note(
            train_metric::OVERRIDES,
            ctx.overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        m.note(
            train_metric::TASK,
            format!(
                "trained at {:?} on `{}` with {}; budget and MFLOPs at the deployment input {:?}",
                proxy_cost.input_shape,
                self.split.name,
                overrides
                    .iter()
                    .filter(|o| !ctx.overrides.contains(o))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                ctx.cost.input_shape
            ),
        );
        Ok(m)
    }
}

/// Spearman's rank correlation of paired values (average ranks for ties);
/// `None` with fewer than 3 pairs or a constant side.
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    let ranks = |vals: Vec<f64>| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..vals.len()).collect();
        idx.sort_by(|&a, &b| vals[a].total_cmp(&vals[b]));
        let mut r = vec![0.0; vals.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && vals[idx[j + 1]] == vals[idx[i]] {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0 + 1.0;
            for &k in &idx[i..=j] {
                r[k] = avg;
            }
            i = j + 1;
        }
        r
    };
    let a = ranks(pairs.iter().map(|p| p.0).collect());
    let b = ranks(pairs.iter().map(|p| p.1).collect());
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

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
        "| candidate | MFLOPs (deployment) | MFLOPs (trained input) | test accuracy % | per epoch | train loss | seconds |\n|---|---|---|---|---|---|---|"
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
        let _ = writeln!(
            s,
            "| {}{} | {:.2} | {:.2} | {:.2} | {} | {:.4} | {:.0} |",
            r.id,
            override_of(r, "shuffle")
                .filter(|v| v == "false")
                .map(|_| " (no shuffle)")
                .unwrap_or(""),
            r.metric(metric::MFLOPS).unwrap_or(f64::NAN),
            r.metric(train_metric::PROXY_MFLOPS).unwrap_or(f64::NAN),
            r.metric(train_metric::ACCURACY).unwrap_or(f64::NAN),
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
    let pairs: Vec<(f64, f64)> = trained
        .iter()
        .filter_map(|r| Some((r.metric(metric::NASWOT)?, r.metric(train_metric::ACCURACY)?)))
        .collect();
    if !pairs.is_empty() {
        match spearman(&pairs) {
            Some(rho) => {
                let _ = writeln!(
                    s,
                    "\nSpearman rank correlation between the NASWOT proxy score and the trained accuracy: {rho:.3} over {} candidates.",
                    pairs.len()
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nSpearman rank correlation between proxy and trained accuracy: undefined ({} candidate(s) with both, or a constant side).",
                    pairs.len()
                );
            }
        }
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
) -> Result<Vec<std::path::PathBuf>, SearchError> {
    let Some(md) = training_section(records) else {
        return Ok(Vec::new());
    };
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| SearchError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let md_path = dir.join("training.md");
    std::fs::write(&md_path, md).map_err(io(&md_path))?;
    type Points = (Vec<(f64, f64)>, Vec<String>);
    let mut series: BTreeMap<String, Points> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status != Status::Error) {
        if let (Some(x), Some(y)) = (r.metric(metric::MFLOPS), r.metric(train_metric::ACCURACY)) {
            let label = match override_of(r, "shuffle").as_deref() {
                Some("false") => "without channel shuffle",
                _ => "trained candidates",
            };
            let entry = series.entry(label.to_string()).or_default();
            entry.0.push((x, y));
            entry.1.push(format!(" {}", r.id));
        }
    }
    let series: Vec<shufflekit_train::plot::PointSeries> = series
        .into_iter()
        .map(
            |(label, (points, names))| shufflekit_train::plot::PointSeries {
                label,
                points,
                names,
            },
        )
        .collect();
    let (png, svg) = shufflekit_train::plot::accuracy_chart(
        &dir.join("accuracy_vs_mflops"),
        &series,
        "trained test accuracy vs cost",
        "MFLOPs at the deployment input",
        "test accuracy (%)",
    )
    .map_err(|e| SearchError::Config(e.to_string()))?;
    Ok(vec![md_path, png, svg])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, groups: i64, overrides: &str, values: &[(&str, f64)]) -> Record {
        Record {
            index: groups as u64,
            id: id.into(),
            params: [("groups".to_string(), crate::space::ParamValue::Int(groups))]
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
        assert!(md.contains("### Shuffle ablation"), "{md}");
        assert!(md.contains("| groups=8 | 3.00 | 7.00 | +4.00 |"), "{md}");
        assert!(md.contains("correlation between the NASWOT proxy score and the trained accuracy: -1.000 over 3"), "{md}");
    }

    #[test]
    fn spearman_of_known_rankings() {
        let up = [(1.0, 10.0), (2.0, 20.0), (3.0, 25.0), (4.0, 40.0)];
        assert!((spearman(&up).unwrap() - 1.0).abs() < 1e-12);
        let down = [(1.0, 4.0), (2.0, 3.0), (3.0, 2.0), (4.0, 1.0)];
        assert!((spearman(&down).unwrap() + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) = 0.8
        let mixed = [(1.0, 2.0), (2.0, 1.0), (3.0, 4.0), (4.0, 3.0), (5.0, 5.0)];
        assert!((spearman(&mixed).unwrap() - 0.8).abs() < 1e-12);
        // Ties: spearmanr([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9486832980505138
        let ties = [(1.0, 1.0), (2.0, 2.0), (2.0, 3.0), (3.0, 4.0)];
        assert!((spearman(&ties).unwrap() - 0.9486832980505138).abs() < 1e-12);
        assert!(spearman(&up[..2]).is_none());
        assert!(spearman(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]).is_none());
    }
}
