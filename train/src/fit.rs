//! The training loop: minibatch SGD over a [`Split`], per-epoch loss and
//! accuracy, checkpoints and resuming.
//!
//! Runs are reproducible: the weights are initialised from the seed
//! (`Weights::init`), each epoch's shuffle and augmentation draw from a
//! stream keyed by the seed and the epoch, and the gradients do not depend
//! on the number of threads (see [`crate::grad`]), so the same seed gives
//! bit-identical weights, and a run resumed from a checkpoint ends with the
//! weights of an uninterrupted one. The last incomplete minibatch of an
//! epoch is dropped (batch norm needs at least two values per channel).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use shufflekit_ir::ops::WeightKey;
use shufflekit_ir::weights::{InitOptions, Weights, WeightsError};
use shufflekit_ir::{Graph, Op};

use crate::data::{epoch_order, epoch_rng, Augment, Dataset, Split};
use crate::grad::{softmax_cross_entropy, Mode, Network};
use crate::optim::{Schedule, ScheduleKind, Sgd};
use crate::{CheckpointProblem, GraphProblem, TrainError};

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per minibatch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f32,
    /// Weight decay of conv and linear weights (the paper's 4e-5).
    pub weight_decay: f32,
    /// Learning-rate decay after the warm-up.
    pub schedule: ScheduleKind,
    /// Warm-up length in epochs (may be fractional).
    pub warmup_epochs: f64,
    /// Seed of the weights, the shuffles and the augmentation.
    pub seed: u64,
    /// Random crop and flip of training images.
    pub augment: Augment,
    /// Batch norm running-average momentum (PyTorch's 0.1).
    pub bn_momentum: f32,
    /// Images per batch when measuring accuracy.
    pub eval_batch: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch: 64,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 4e-5,
            schedule: ScheduleKind::Linear,
            warmup_epochs: 0.0,
            seed: 0,
            augment: Augment::default(),
            bn_momentum: 0.1,
            eval_batch: 200,
        }
    }
}

/// The most epochs a run may ask for.
pub const MAX_EPOCHS: usize = 100_000;

impl TrainConfig {
    /// Checks every setting is usable.
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return Err(TrainError::Config(format!(
                "epochs must be in 1..={MAX_EPOCHS}, not {}",
                self.epochs
            )));
        }
        if self.batch < 2 {
            return bad("the batch must hold at least 2 images (batch norm needs a batch)");
        }
        if self.eval_batch == 0 {
            return bad("the evaluation batch must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be positive");
        }
        if !(0.0..1.0).contains(&self.momentum) || !(0.0..=1.0).contains(&self.bn_momentum) {
            return bad("momentum must be in [0, 1)");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight decay must be non-negative");
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            return bad("the warm-up must be between 0 and the number of epochs");
        }
        Ok(())
    }
}

/// What one epoch achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's minibatches (training mode).
    pub train_loss: f64,
    /// Training accuracy in percent, counted on the minibatches as they
    /// were trained (training-mode batch norm).
    pub train_accuracy: f64,
    /// Mean validation loss (inference mode), when the split holds out a
    /// validation set.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// Validation accuracy in percent (inference mode): what choosing
    /// between networks reads.
    #[serde(default)]
    pub val_accuracy: Option<f64>,
    /// Mean test loss (inference mode).
    pub test_loss: f64,
    /// Test accuracy in percent (inference mode).
    pub test_accuracy: f64,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall time of the training steps.
    pub train_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// Every epoch so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// In order.
    pub epochs: Vec<EpochStats>,
}

/// Progress reported while training.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One minibatch done.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step in the epoch.
        step: usize,
        /// Steps per epoch.
        steps: usize,
        /// The minibatch's loss.
        loss: f64,
    },
    /// The validation and test sets are being measured.
    Evaluating {
        /// 1-based epoch.
        epoch: usize,
    },
    /// One epoch done.
    Epoch(EpochStats),
}

/// A training run in progress: network, weights, optimiser and history.
#[derive(Debug, Clone)]
pub struct Trainer {
    net: Network,
    config: TrainConfig,
    weights: Weights,
    sgd: Sgd,
    history: History,
    steps_per_epoch: usize,
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    format: String,
    graph: String,
    data: String,
    config: TrainConfig,
    history: History,
}

const CHECKPOINT_FORMAT: &str = "shufflekit-train-checkpoint-1";

/// A fingerprint of a graph: a hash of its text form.
fn fingerprint(graph: &Graph) -> String {
    let text = shufflekit_ir::text::dump(graph, Default::default());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{}:{h:016x}", graph.name)
}

impl Trainer {
    /// A fresh run: weights from [`training_init`], zero momentum. The graph must take the split's images and
    /// output one logit per class.
    pub fn new(graph: &Graph, split: &Split, config: TrainConfig) -> Result<Trainer, TrainError> {
        config.check()?;
        let net = Network::new(graph)?;
        let shape = split.shape();
        if net.input_shape().dims() != shape {
            return Err(GraphProblem::InputMismatch {
                input: net.input_shape().clone(),
                data: split.name.clone(),
                images: shape,
            }
            .into());
        }
        if net.output_shape().dims() != [split.classes()] {
            return Err(GraphProblem::ClassMismatch {
                output: net.output_shape().clone(),
                data: split.name.clone(),
                classes: split.classes(),
            }
            .into());
        }
        // A shift as large as the image leaves nothing of it.
        let side = shape.iter().skip(1).copied().min().unwrap_or(0);
        if config.augment.crop_padding > 0 && config.augment.crop_padding >= side {
            return Err(TrainError::Config(format!(
                "the random crop's padding ({}) must be smaller than the images' side ({side} pixels)",
                config.augment.crop_padding
            )));
        }
        if split.train.len() < config.batch {
            return Err(TrainError::Config(format!(
                "the batch ({}) is larger than the training set ({} images)",
                config.batch,
                split.train.len()
            )));
        }
        let weights = training_init(graph, config.seed)?;
        let sgd = Sgd::new(graph, config.momentum, config.weight_decay);
        Ok(Trainer {
            net,
            steps_per_epoch: split.train.len() / config.batch,
            config,
            weights,
            sgd,
            history: History::default(),
        })
    }

    /// The current weights (running statistics included).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The epochs run so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The prepared network.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Minibatches per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// The learning-rate schedule of the whole run.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            base: self.config.lr,
            kind: self.config.schedule,
            warmup: (self.config.warmup_epochs * self.steps_per_epoch as f64).round() as usize,
            total: self.config.epochs * self.steps_per_epoch,
        }
    }

    /// Runs the remaining epochs; `after_epoch` runs after each (to save a
    /// checkpoint) and may stop the run by returning `false`.
    pub fn fit(
        &mut self,
        split: &Split,
        observer: &mut dyn FnMut(&Event),
        after_epoch: &mut dyn FnMut(&Trainer) -> Result<bool, TrainError>,
    ) -> Result<(), TrainError> {
        while self.history.epochs.len() < self.config.epochs {
            let stats = self.run_epoch(split, observer)?;
            observer(&Event::Epoch(stats));
            if !after_epoch(self)? {
                break;
            }
        }
        Ok(())
    }

    /// Trains one epoch and measures the validation set (if any) and the
    /// test set.
    pub fn run_epoch(
        &mut self,
        split: &Split,
        observer: &mut dyn FnMut(&Event),
    ) -> Result<EpochStats, TrainError> {
        let epoch = self.history.epochs.len() + 1;
        let schedule = self.schedule();
        let order = epoch_order(split.train.len(), self.config.seed, epoch);
        let mut aug_rng = epoch_rng(self.config.seed, epoch, 1);
        let augment = self.config.augment;
        let use_aug = augment.crop_padding > 0 || augment.flip;
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = 0.0;
        for step in 0..self.steps_per_epoch {
            let idx = &order[step * self.config.batch..(step + 1) * self.config.batch];
            let (x, labels) = split
                .batch(&split.train, idx, augment, use_aug.then_some(&mut aug_rng))
                .map_err(|e| TrainError::Internal(e.to_string()))?;
            let tape = self.net.forward(&self.weights, &x, Mode::Train)?;
            let (loss, d_logits, right) = softmax_cross_entropy(&tape.output()?, &labels)?;
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    step: step + 1,
                    loss,
                });
            }
            let grads = tape.backward(&self.weights, &d_logits)?;
            tape.update_running_stats(&mut self.weights, self.config.bn_momentum);
            drop(tape);
            lr = schedule.lr((epoch - 1) * self.steps_per_epoch + step);
            self.sgd
                .step(&mut self.weights, &grads.weights, lr as f32)?;
            loss_sum += loss * labels.len() as f64;
            correct += right;
            seen += labels.len();
            observer(&Event::Step {
                epoch,
                step: step + 1,
                steps: self.steps_per_epoch,
                loss,
            });
        }
        let train_seconds = start.elapsed().as_secs_f64();
        observer(&Event::Evaluating { epoch });
        let val = match &split.validation {
            Some(v) => Some(self.evaluate(split, v)?),
            None => None,
        };
        let (test_loss, test_accuracy) = self.evaluate(split, &split.test)?;
        let stats = EpochStats {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: 100.0 * correct as f64 / seen.max(1) as f64,
            val_loss: val.map(|v| v.0),
            val_accuracy: val.map(|v| v.1),
            test_loss,
            test_accuracy,
            lr,
            train_seconds,
            images_per_second: seen as f64 / train_seconds.max(1e-9),
        };
        self.history.epochs.push(stats.clone());
        Ok(stats)
    }

    /// Mean loss and accuracy (percent) of the current weights on a set, in
    /// inference mode.
    pub fn evaluate(&self, split: &Split, set: &Dataset) -> Result<(f64, f64), TrainError> {
        let (mut loss, mut correct) = (0.0f64, 0usize);
        let all: Vec<usize> = (0..set.len()).collect();
        for idx in all.chunks(self.config.eval_batch) {
            let (x, labels) = split
                .batch(set, idx, Augment::default(), None)
                .map_err(|e| TrainError::Internal(e.to_string()))?;
            let logits = self.net.predict(&self.weights, &x)?;
            let (l, _, right) = softmax_cross_entropy(&logits, &labels)?;
            loss += l * labels.len() as f64;
            correct += right;
        }
        let n = set.len().max(1) as f64;
        Ok((loss / n, 100.0 * correct as f64 / n))
    }

    /// Writes a checkpoint directory: `weights.safetensors`,
    /// `momentum.safetensors` and `state.json` (settings, history, the
    /// graph's fingerprint and the dataset's name).
    pub fn save_checkpoint(&self, dir: &Path, data: &str) -> Result<(), TrainError> {
        let err = |problem: CheckpointProblem| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            problem,
        };
        let write = |e| err(CheckpointProblem::Write(e));
        std::fs::create_dir_all(dir).map_err(write)?;
        self.weights.save(dir.join("weights.safetensors"))?;
        self.sgd.buffers.save(dir.join("momentum.safetensors"))?;
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT.into(),
            graph: fingerprint(self.net.graph()),
            data: data.into(),
            config: self.config.clone(),
            history: self.history.clone(),
        };
        let json =
            serde_json::to_string_pretty(&state).map_err(|e| err(CheckpointProblem::Encode(e)))?;
        // Written last and renamed into place, so a checkpoint with a state
        // file is complete.
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, json).map_err(write)?;
        std::fs::rename(&tmp, dir.join("state.json")).map_err(write)?;
        Ok(())
    }

    /// Continues a run from a checkpoint written by [`Trainer::save_checkpoint`]
    /// for the same graph, dataset and settings (only `epochs` may differ
    /// when the schedule is constant).
    pub fn resume(
        graph: &Graph,
        split: &Split,
        config: TrainConfig,
        dir: &Path,
        data: &str,
    ) -> Result<Trainer, TrainError> {
        let err = |problem: CheckpointProblem| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            problem,
        };
        let mut t = Trainer::new(graph, split, config)?;
        let text = std::fs::read_to_string(dir.join("state.json"))
            .map_err(|e| err(CheckpointProblem::ReadState(e)))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| err(CheckpointProblem::Decode(e)))?;
        if state.format != CHECKPOINT_FORMAT {
            return Err(err(CheckpointProblem::UnknownFormat(state.format)));
        }
        if state.graph != fingerprint(graph) {
            return Err(err(CheckpointProblem::OtherNetwork));
        }
        if state.data != data {
            return Err(err(CheckpointProblem::OtherData {
                trained_on: state.data,
                data: data.to_string(),
            }));
        }
        let mut a = state.config.clone();
        let mut b = t.config.clone();
        if a.schedule == ScheduleKind::Constant {
            a.epochs = 0;
            b.epochs = 0;
        }
        if a != b {
            return Err(err(CheckpointProblem::OtherSettings(
                serde_json::to_string(&state.config).unwrap_or_default(),
            )));
        }
        let weights = Weights::load(dir.join("weights.safetensors"))?;
        weights.check(graph)?;
        t.weights = weights;
        t.sgd.buffers = Weights::load(dir.join("momentum.safetensors"))?;
        t.history = state.history;
        Ok(t)
    }
}

/// The initial weights of a run: `Weights::init` from the seed (He normal
/// conv and linear weights, identity batch norm, zero biases), then two
/// changes that keep the first steps of a deep residual network stable:
/// the output layer, when it is a linear or a convolution, starts at zero
/// (every class equally likely, loss `ln(classes)`), and a batch norm whose
/// output feeds an `add` starts with a zero scale, so each residual unit
/// starts as the identity (torchvision's `zero_init_residual`).
pub fn training_init(graph: &Graph, seed: u64) -> Result<Weights, WeightsError> {
    let mut weights = Weights::try_init(
        graph,
        &InitOptions {
            seed,
            randomize_batch_norm: false,
        },
    )?;
    // The weight of a linear or conv, the scale of a batch norm.
    let mut zero = |node: &str| {
        if let Some(t) = weights.of_mut(node, WeightKey::Weight) {
            t.data_mut().fill(0.0);
        }
    };
    if let Some(out) = graph.output() {
        let node = graph.node(out);
        if matches!(node.op, Op::Linear(_) | Op::Conv2d(_)) {
            zero(&node.name);
        }
    }
    for id in graph.nodes() {
        let node = graph.node(id);
        if matches!(node.op, Op::BatchNorm(_))
            && graph
                .users(id)
                .iter()
                .any(|&u| matches!(graph.node(u).op, Op::Add))
        {
            zero(&node.name);
        }
    }
    Ok(weights)
}

/// The checkpoint directory of a weights file: `<out>.checkpoint`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".checkpoint");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shufflekit_ir::ops::{BatchNorm, Conv2d, Linear};
    use shufflekit_ir::Shape;

    /// conv -> bn -> add(input) -> bn -> pool -> flatten -> linear.
    fn residual_net() -> Graph {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(4, 6, 6)), "input", &[], None)
            .unwrap();
        let mut c = Conv2d::new(4, 3);
        c.padding = [1, 1];
        let conv = g.add(Op::Conv2d(c), "conv", &[x], None).unwrap();
        let bn = g
            .add(Op::BatchNorm(BatchNorm::default()), "bn", &[conv], None)
            .unwrap();
        let add = g.add(Op::Add, "add", &[x, bn], None).unwrap();
        let bn2 = g
            .add(Op::BatchNorm(BatchNorm::default()), "bn2", &[add], None)
            .unwrap();
        let pool = g.add(Op::GlobalAvgPool, "pool", &[bn2], None).unwrap();
        let flat = g.add(Op::Flatten, "flat", &[pool], None).unwrap();
        let fc = Linear {
            out_features: 3,
            bias: true,
        };
        g.add(Op::Linear(fc), "fc", &[flat], None).unwrap();
        g
    }

    #[test]
    fn training_init_zeroes_the_classifier_and_the_scale_of_a_residual_batch_norm() {
        let g = residual_net();
        let plain = Weights::init(
            &g,
            &InitOptions {
                seed: 3,
                randomize_batch_norm: false,
            },
        );
        let w = training_init(&g, 3).unwrap();
        let all = |w: &Weights, node: &str, key: WeightKey, v: f32| {
            w.of(node, key).unwrap().data().iter().all(|&x| x == v)
        };
        assert!(all(&w, "fc", WeightKey::Weight, 0.0));
        assert!(!all(&plain, "fc", WeightKey::Weight, 0.0));
        // The batch norm feeding the add starts at scale 0, the other at 1.
        assert!(all(&w, "bn", WeightKey::Weight, 0.0));
        assert!(all(&w, "bn2", WeightKey::Weight, 1.0));
        // Everything else is the seeded init.
        assert_eq!(
            w.of("conv", WeightKey::Weight),
            plain.of("conv", WeightKey::Weight)
        );
    }
}
