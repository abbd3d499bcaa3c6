//! The `train` evaluator: accuracy measured by training each candidate
//! briefly on a dataset (the proxy task of `shufflekit_train::proxy`), and
//! the metrics its report section (`shufflekit_reports::training`) reads.
//!
//! A candidate is rebuilt at the dataset's input shape and class count
//! (the spec's `resolution`, `channels`, `classes`, and `small_input=true`
//! when the spec has it) and trained with `shufflekit_train` (the code
//! `shufflekit train` runs); its budget and MFLOPs stay those of the
//! deployment network the driver costed. The dataset is loaded once and
//! shared by every candidate. A candidate with `shuffle=false` is also
//! trained with `shuffle=true` (same seed and widths), so a search run with
//! `--set shuffle=false` measures the paper's Table 3 ablation by itself.

use std::sync::Arc;
use std::time::Instant;

use shufflekit_train::data::{DataSource, Split};
use shufflekit_train::proxy::proxy_overrides;
use shufflekit_train::{TrainConfig, TrainError, Trainer};

use crate::error::{EvaluatorError, SearchError};
use crate::evaluator::{EvalContext, Evaluator, Metrics};

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
        config(&options, 0)
            .check()
            .map_err(SearchError::TrainSettings)?;
        let split = options.data.load().map_err(SearchError::TrainData)?;
        Ok(TrainEvaluator {
            options,
            split: Arc::new(split),
        })
    }
}

impl TrainEvaluator {
    fn train_once(&self, graph: &shufflekit_ir::Graph, seed: u64) -> Result<Trainer, TrainError> {
        let mut trainer = Trainer::new(graph, &self.split, config(&self.options, seed))?;
        trainer.fit(&self.split, &mut |_| {}, &mut |_| Ok(true))?;
        Ok(trainer)
    }
}

/// The training settings of one candidate.
fn config(options: &TrainEvalOptions, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs: options.epochs,
        batch: options.batch,
        lr: options.lr,
        seed,
        ..TrainConfig::default()
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
        let failed = |e: TrainError| EvaluatorError::from_source("train", e);
        let overrides = proxy_overrides(ctx.spec, ctx.overrides, &self.split).map_err(failed)?;
        let graph = ctx.spec.build(&overrides).map_err(|e| {
            EvaluatorError::caused_by(
                "train",
                format!("adapting to `{}`: {e}", self.split.name),
                e,
            )
        })?;
        let start = Instant::now();
        let trainer = self.train_once(&graph, ctx.seed).map_err(failed)?;
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
            let shuffled = ctx.spec.build(&with).map_err(|e| {
                EvaluatorError::caused_by(
                    "train",
                    format!("building the shuffle=true counterpart: {e}"),
                    e,
                )
            })?;
            let dump = |g: &shufflekit_ir::Graph| shufflekit_ir::text::dump(g, Default::default());
            let acc = if dump(&shuffled) == dump(&graph) {
                last.test_accuracy
            } else {
                let t = self.train_once(&shuffled, ctx.seed).map_err(failed)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
