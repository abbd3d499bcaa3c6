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
//!
//! A fixed share of the training set is held out as a validation set
//! (stratified, chosen by the search's seed, the same for every candidate):
//! the chooser reads the validation accuracy; the test accuracy is only
//! reported. With `seeds: N` each candidate is trained N times, with seeds
//! `seed, seed + 1, ..., seed + N - 1` (weights, shuffles, augmentation);
//! every seed's accuracies are kept in the record, and the headline metrics
//! are their means with a Student-t 95% interval.

use std::sync::Arc;
use std::time::Instant;

use shufflekit_train::data::{DataSource, Split};
use shufflekit_train::proxy::proxy_overrides;
use shufflekit_train::{EpochStats, TrainConfig, TrainError, Trainer};

use crate::error::{EvaluatorError, SearchError};
use crate::evaluator::{EvalContext, Evaluator, Metrics};
use crate::stats::MeanInterval;

/// Names of the metrics and notes the `train` evaluator writes.
pub mod train_metric {
    /// Test accuracy in percent after the last epoch, mean over the seeds
    /// (reported, not used to choose).
    pub const ACCURACY: &str = "train_accuracy";
    /// Half-width of the 95% Student-t interval of [`ACCURACY`] (absent
    /// with one seed).
    pub const ACCURACY_CI: &str = "train_accuracy_ci95";
    /// Validation accuracy in percent after the last epoch, mean over the
    /// seeds: what the chooser reads.
    pub const VAL_ACCURACY: &str = "train_val_accuracy";
    /// Half-width of the 95% interval of [`VAL_ACCURACY`] (absent with one
    /// seed).
    pub const VAL_ACCURACY_CI: &str = "train_val_accuracy_ci95";
    /// Prefix of each seed's test accuracy (`train_accuracy_seed1`...,
    /// 1-based in the order of the seeds).
    pub const SEED_PREFIX: &str = "train_accuracy_seed";
    /// Prefix of each seed's validation accuracy.
    pub const VAL_SEED_PREFIX: &str = "train_val_accuracy_seed";
    /// Number of seeds each candidate was trained with.
    pub const SEEDS: &str = "train_seeds";
    /// Note: the seeds, comma-separated.
    pub const SEED_LIST: &str = "train_seed_list";
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
    /// Prefix of the per-epoch test accuracies (`train_accuracy_epoch1`...,
    /// means over the seeds).
    pub const EPOCH_PREFIX: &str = "train_accuracy_epoch";
    /// Test accuracy of the same candidate with `shuffle=true`, measured
    /// alongside a `shuffle=false` candidate (the ablation's other column;
    /// mean over the same seeds).
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
    /// Trainings per candidate, with seeds `seed..seed + seeds`.
    pub seeds: usize,
    /// Share of the training set held out for validation (per class).
    pub validation: f64,
    /// Whether a `shuffle=false` candidate is also trained with
    /// `shuffle=true` (the ablation's other column). Off when another run
    /// trains the shuffled variants anyway (`scripts/reproduce-paper`).
    pub shuffle_counterpart: bool,
}

/// The most seeds a search may ask for per candidate.
pub const MAX_SEEDS: usize = 1000;

impl Default for TrainEvalOptions {
    fn default() -> Self {
        TrainEvalOptions {
            data: DataSource::MnistSample,
            epochs: 3,
            batch: 64,
            lr: 0.1,
            seeds: 1,
            validation: 0.1,
            shuffle_counterpart: true,
        }
    }
}

/// Trains every candidate on a dataset and reports its test accuracy.
pub struct TrainEvaluator {
    options: TrainEvalOptions,
    split: Arc<Split>,
}

impl TrainEvaluator {
    /// Loads the dataset (once for the whole search) and holds out the
    /// validation set with `seed` (the search's).
    pub fn new(options: TrainEvalOptions, seed: u64) -> Result<Self, SearchError> {
        config(&options, 0)
            .check()
            .map_err(SearchError::TrainSettings)?;
        if !(1..=MAX_SEEDS).contains(&options.seeds) {
            return Err(SearchError::TrainSettings(TrainError::Config(format!(
                "--seeds must be in 1..={MAX_SEEDS}, not {}",
                options.seeds
            ))));
        }
        let split = options
            .data
            .load()
            .and_then(|s| s.hold_out(options.validation, seed))
            .map_err(SearchError::TrainData)?;
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

    /// The seeds of a candidate: `base, base + 1, ...`.
    fn seeds(&self, base: u64) -> Vec<u64> {
        (0..self.options.seeds as u64)
            .map(|k| base.wrapping_add(k))
            .collect()
    }

    /// Trains `graph` once per seed and returns each run's history.
    fn train_seeds(
        &self,
        graph: &shufflekit_ir::Graph,
        base: u64,
    ) -> Result<Vec<Vec<EpochStats>>, TrainError> {
        self.seeds(base)
            .into_iter()
            .map(|seed| Ok(self.train_once(graph, seed)?.history().epochs.clone()))
            .collect()
    }
}

/// The mean and interval of one number of each run's last epoch.
fn last_of(
    runs: &[Vec<EpochStats>],
    pick: impl Fn(&EpochStats) -> Option<f64>,
) -> Option<(Vec<f64>, MeanInterval)> {
    let values: Option<Vec<f64>> = runs.iter().map(|h| h.last().and_then(&pick)).collect();
    let values = values?;
    let m = MeanInterval::of(&values)?;
    Some((values, m))
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
        let seeds = match o.seeds {
            1 => "one seed (the search's)".to_string(),
            n => format!(
                "{n} seeds (the search's seed and the {} after it; mean ± 95% Student-t interval)",
                n - 1
            ),
        };
        format!(
            "validation and test accuracy after training each candidate for {} epoch(s) on `{}` ({}; {} training / {} validation / {} test images of {c}x{h}x{w}, {} classes) with {seeds}: SGD momentum 0.9, weight decay 4e-5, lr {} decaying linearly to 0, batch {}; the validation accuracy chooses, the test accuracy is only reported; the network is rebuilt at the dataset's input (resolution, channels, classes, small_input) while budget and MFLOPs are counted at the spec's deployment input (shufflekit_train)",
            o.epochs,
            o.data.describe(),
            self.split.source,
            self.split.train.len(),
            self.split.validation.as_ref().map_or(0, |v| v.len()),
            self.split.test.len(),
            self.split.classes(),
            o.lr,
            o.batch
        ) + if o.shuffle_counterpart {
            ""
        } else {
            "; shuffle=false candidates are not also trained with shuffle"
        }
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
        let runs = self.train_seeds(&graph, ctx.seed).map_err(failed)?;
        let (tests, test) = last_of(&runs, |s| Some(s.test_accuracy))
            .ok_or_else(|| err("no epoch was run".into()))?;
        let proxy_cost = shufflekit_ir::cost::count(&graph, ctx.cost.convention);
        let mut m = Metrics::default();
        m.set(train_metric::ACCURACY, test.mean);
        m.set(train_metric::ERROR, 100.0 - test.mean);
        if let Some(h) = test.half_width {
            m.set(train_metric::ACCURACY_CI, h);
        }
        for (k, v) in tests.iter().enumerate() {
            m.set(&format!("{}{}", train_metric::SEED_PREFIX, k + 1), *v);
        }
        if let Some((vals, val)) = last_of(&runs, |s| s.val_accuracy) {
            m.set(train_metric::VAL_ACCURACY, val.mean);
            if let Some(h) = val.half_width {
                m.set(train_metric::VAL_ACCURACY_CI, h);
            }
            for (k, v) in vals.iter().enumerate() {
                m.set(&format!("{}{}", train_metric::VAL_SEED_PREFIX, k + 1), *v);
            }
        }
        m.set(train_metric::SEEDS, runs.len() as f64);
        let mean_last = |pick: fn(&EpochStats) -> f64| {
            runs.iter().filter_map(|h| h.last().map(pick)).sum::<f64>() / runs.len() as f64
        };
        m.set(train_metric::LOSS, mean_last(|s| s.train_loss));
        m.set(train_metric::TEST_LOSS, mean_last(|s| s.test_loss));
        m.set(train_metric::SECONDS, start.elapsed().as_secs_f64());
        m.set(train_metric::PROXY_MFLOPS, proxy_cost.macs as f64 / 1e6);
        for (e, first) in runs[0].iter().enumerate() {
            let at: Vec<f64> = runs
                .iter()
                .filter_map(|h| h.get(e).map(|s| s.test_accuracy))
                .collect();
            m.set(
                &format!("{}{}", train_metric::EPOCH_PREFIX, first.epoch),
                at.iter().sum::<f64>() / at.len() as f64,
            );
        }
        m.note(
            train_metric::SEED_LIST,
            self.seeds(ctx.seed)
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        // The shuffle ablation: a `shuffle=false` candidate is also trained
        // with `shuffle=true` (same seed), unless both build the same
        // network (one group has no shuffle).
        let no_shuffle = self.options.shuffle_counterpart
            && ctx.spec.param_names().contains(&"shuffle")
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
                test.mean
            } else {
                let runs = self.train_seeds(&shuffled, ctx.seed).map_err(failed)?;
                last_of(&runs, |s| Some(s.test_accuracy))
                    .ok_or_else(|| err("no epoch was run".into()))?
                    .1
                    .mean
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

pub use crate::stats::spearman;
