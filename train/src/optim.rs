//! SGD with momentum and weight decay, and learning-rate schedules.
//!
//! The update is PyTorch's `torch.optim.SGD` (dampening 0, not Nesterov):
//! `g' = g + wd * w`, `v = momentum * v + g'`, `w = w - lr * v`. Weight
//! decay applies to conv and linear weights only (not to biases or batch
//! norm parameters), as the ShuffleNet authors' training code does.

use serde::{Deserialize, Serialize};
use shufflekit_ir::weights::Weights;
use shufflekit_ir::Graph;

use crate::TrainError;

/// The shape of the learning-rate curve after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Linear decay to 0 at the last step (the ShuffleNet paper's).
    #[default]
    Linear,
    /// Half a cosine from the base rate to 0.
    Cosine,
    /// The base rate throughout.
    Constant,
}

impl ScheduleKind {
    /// Parses `linear`, `cosine` or `constant`.
    pub fn from_name(name: &str) -> Option<ScheduleKind> {
        match name {
            "linear" => Some(ScheduleKind::Linear),
            "cosine" => Some(ScheduleKind::Cosine),
            "constant" => Some(ScheduleKind::Constant),
            _ => None,
        }
    }
}

/// A learning rate per step: a linear warm-up from `base / warmup` to
/// `base` over the first `warmup` steps, then `kind` from `base` down over
/// the remaining steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The peak learning rate.
    pub base: f64,
    /// The decay after the warm-up.
    pub kind: ScheduleKind,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps of the run.
    pub total: usize,
}

impl Schedule {
    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        match self.kind {
            ScheduleKind::Linear => self.base * (1.0 - t),
            ScheduleKind::Cosine => self.base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            ScheduleKind::Constant => self.base,
        }
    }
}

/// SGD with momentum and weight decay; keeps one momentum buffer per
/// trainable tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Sgd {
    /// Momentum factor (0.9 in the paper).
    pub momentum: f32,
    /// Weight decay on conv and linear weights (4e-5 in the paper).
    pub weight_decay: f32,
    /// Momentum buffers, named like the weights.
    pub buffers: Weights,
    decayed: std::collections::BTreeSet<String>,
}

impl Sgd {
    /// An optimiser for the graph's trainable tensors, with zero momentum.
    pub fn new(graph: &Graph, momentum: f32, weight_decay: f32) -> Sgd {
        let mut decayed = std::collections::BTreeSet::new();
        for id in graph.nodes() {
            for spec in graph.weights(id) {
                if spec.role.is_decayed() {
                    decayed.insert(spec.tensor_name(&graph.node(id).name));
                }
            }
        }
        Sgd {
            momentum,
            weight_decay,
            buffers: Weights::new(),
            decayed,
        }
    }

    /// Applies one step with learning rate `lr` to every tensor that has a
    /// gradient.
    pub fn step(
        &mut self,
        weights: &mut Weights,
        grads: &Weights,
        lr: f32,
    ) -> Result<(), TrainError> {
        for (name, g) in grads.iter() {
            let w = weights.get_mut(name).ok_or_else(|| {
                TrainError::Internal(format!("gradient for unknown tensor `{name}`"))
            })?;
            if w.shape() != g.shape() {
                return Err(TrainError::Internal(format!(
                    "gradient of `{name}` has shape {:?}, the tensor {:?}",
                    g.shape(),
                    w.shape()
                )));
            }
            if self.buffers.get(name).is_none() {
                let zeros = shufflekit_ir::tensor::Tensor::zeros(g.shape().to_vec())
                    .map_err(|e| TrainError::Internal(e.to_string()))?;
                self.buffers.insert(name, zeros);
            }
            let wd = if self.decayed.contains(name) {
                self.weight_decay
            } else {
                0.0
            };
            let buf = self
                .buffers
                .get_mut(name)
                .ok_or_else(|| TrainError::Internal("momentum buffer vanished".into()))?;
            for ((wv, &gv), bv) in w
                .data_mut()
                .iter_mut()
                .zip(g.data())
                .zip(buf.data_mut().iter_mut())
            {
                let d = gv + wd * *wv;
                *bv = self.momentum * *bv + d;
                *wv -= lr * *bv;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shufflekit_ir::ops::{Conv2d, Linear};
    use shufflekit_ir::tensor::Tensor;
    use shufflekit_ir::Op;
    use shufflekit_ir::Shape;

    #[test]
    fn linear_schedule_decays_to_zero_after_warmup() {
        let s = Schedule {
            base: 0.5,
            kind: ScheduleKind::Linear,
            warmup: 2,
            total: 12,
        };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(1), 0.5);
        assert_eq!(s.lr(2), 0.5);
        assert!((s.lr(7) - 0.25).abs() < 1e-12);
        assert!(s.lr(11) > 0.0 && s.lr(11) < 0.06);
        assert_eq!(s.lr(12), 0.0);
    }

    #[test]
    fn cosine_and_constant_schedules() {
        let c = Schedule {
            base: 1.0,
            kind: ScheduleKind::Cosine,
            warmup: 0,
            total: 10,
        };
        assert_eq!(c.lr(0), 1.0);
        assert!((c.lr(5) - 0.5).abs() < 1e-12);
        assert!(c.lr(10).abs() < 1e-12);
        let k = Schedule {
            base: 0.1,
            kind: ScheduleKind::Constant,
            warmup: 0,
            total: 10,
        };
        assert_eq!(k.lr(9), 0.1);
        assert_eq!(
            ScheduleKind::from_name("cosine"),
            Some(ScheduleKind::Cosine)
        );
        assert_eq!(ScheduleKind::from_name("step"), None);
    }

    #[test]
    fn sgd_matches_pytorch_momentum_and_decays_only_weights() {
        let mut g = Graph::new("t");
        let x = g
            .add(Op::Input(Shape::chw(1, 1, 1)), "input", &[], None)
            .unwrap();
        let mut c = Conv2d::new(1, 1);
        c.bias = true;
        let c = g.add(Op::Conv2d(c), "conv", &[x], None).unwrap();
        let f = g.add(Op::Flatten, "flat", &[c], None).unwrap();
        g.add(
            Op::Linear(Linear {
                out_features: 1,
                bias: true,
            }),
            "fc",
            &[f],
            None,
        )
        .unwrap();
        let mut w = Weights::new();
        let one = |v: f32, s: Vec<usize>| Tensor::new(s, vec![v]).unwrap();
        w.insert("conv.weight", one(1.0, vec![1, 1, 1, 1]));
        w.insert("conv.bias", one(1.0, vec![1]));
        let mut grads = Weights::new();
        grads.insert("conv.weight", one(0.5, vec![1, 1, 1, 1]));
        grads.insert("conv.bias", one(0.5, vec![1]));
        let mut sgd = Sgd::new(&g, 0.9, 0.1);
        // Step 1: d = 0.5 + 0.1 * 1 = 0.6, v = 0.6, w = 1 - 0.1 * 0.6 = 0.94.
        sgd.step(&mut w, &grads, 0.1).unwrap();
        assert!((w.get("conv.weight").unwrap().data()[0] - 0.94).abs() < 1e-6);
        // The bias is not decayed: v = 0.5, b = 0.95.
        assert!((w.get("conv.bias").unwrap().data()[0] - 0.95).abs() < 1e-6);
        // Step 2: d = 0.5 + 0.094 = 0.594, v = 0.54 + 0.594 = 1.134,
        // w = 0.94 - 0.1134 = 0.8266 (torch.optim.SGD gives the same).
        sgd.step(&mut w, &grads, 0.1).unwrap();
        assert!((w.get("conv.weight").unwrap().data()[0] - 0.8266).abs() < 1e-6);
        let mut bad = Weights::new();
        bad.insert("nope.weight", one(0.0, vec![1]));
        assert!(sgd.step(&mut w, &bad, 0.1).is_err());
    }
}
