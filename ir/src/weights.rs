//! Named weight tensors: deterministic initialisation, safetensors files,
//! and the check that a set of weights fits a graph.
//!
//! A tensor is named `<node name>.<suffix>` (see [`crate::ops::WeightSpec`]):
//! `stage2.unit1.gconv1.weight`, `stage2.unit1.bn1.running_var`.
//!
//! Initialisation draws each tensor from its own random stream, keyed by the
//! seed and the tensor's name, so adding or removing a layer leaves every
//! other tensor's values unchanged. Loading never fills in or reinitialises
//! anything: [`Weights::check`] reports every missing, extra, misshapen or
//! non-finite tensor by name.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::graph::Graph;
use crate::ops::{WeightKey, WeightRole};
use crate::tensor::Tensor;

/// A set of named `f32` tensors, kept sorted by name so that iteration and
/// saved files are deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

/// How [`Weights::init`] fills the tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// The seed every tensor's random stream derives from.
    pub seed: u64,
    /// Give batch norms random statistics and affine parameters (weight in
    /// [0.5, 1.5], bias and running mean in [-0.2, 0.2], running variance in
    /// [0.5, 2.0]) and conv/linear biases small random values, so tests
    /// exercise them. Without it batch norm is the identity (weight 1, bias
    /// 0, mean 0, variance 1) and biases are zero.
    pub randomize_batch_norm: bool,
}

/// Why weights could not be read, written or used with a graph.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read weights file `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write weights file `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (truncated, bad header,
    /// offsets that do not cover the data).
    #[error("`{}` is not a valid safetensors file: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser found wrong.
        message: String,
    },
    /// A tensor in the file is not `F32`.
    #[error("`{}`: tensor `{tensor}` has dtype {dtype}, expected F32", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor's memory could not be allocated.
    #[error(
        "tensor `{tensor}` needs {} of memory, more than can be allocated",
        crate::tensor::describe_bytes(*bytes)
    )]
    OutOfMemory {
        /// The tensor's name.
        tensor: String,
        /// The bytes it needs.
        bytes: u128,
    },
    /// The weights could not be serialised (a tensor too large for the format).
    #[error("cannot serialise the weights: {0}")]
    Serialize(String),
    /// The weights do not fit the graph; every problem is listed.
    #[error("{}", MismatchDisplay { graph, problems })]
    Mismatch {
        /// The graph's name.
        graph: String,
        /// Every problem found, in graph order, then extra tensors by name.
        problems: Vec<WeightProblem>,
    },
}

/// One way a tensor fails to fit the graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightProblem {
    /// The graph needs a tensor the weights lack.
    #[error("missing tensor `{tensor}` (expected shape {expected:?})")]
    Missing {
        /// The tensor's name.
        tensor: String,
        /// The shape the graph needs.
        expected: Vec<usize>,
    },
    /// The weights have a tensor no node of the graph uses.
    #[error("unexpected tensor `{tensor}` of shape {shape:?} (no layer of the graph uses it)")]
    Unexpected {
        /// The tensor's name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The tensor has another shape than the graph needs.
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor's name.
        tensor: String,
        /// The shape the graph needs.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// The tensor holds a NaN or an infinity.
    #[error("tensor `{tensor}` has a non-finite value {value} at index {index}")]
    NonFinite {
        /// The tensor's name.
        tensor: String,
        /// Flat index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A batch norm's running variance is negative.
    #[error("tensor `{tensor}` has a negative variance {value} at index {index}")]
    NegativeVariance {
        /// The tensor's name.
        tensor: String,
        /// Flat index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
}

impl WeightProblem {
    /// The name of the tensor concerned.
    pub fn tensor(&self) -> &str {
        match self {
            WeightProblem::Missing { tensor, .. }
            | WeightProblem::Unexpected { tensor, .. }
            | WeightProblem::Shape { tensor, .. }
            | WeightProblem::NonFinite { tensor, .. }
            | WeightProblem::NegativeVariance { tensor, .. } => tensor,
        }
    }
}

/// How many problems a mismatch error prints before summarising the rest.
const SHOWN_PROBLEMS: usize = 10;

struct MismatchDisplay<'a> {
    graph: &'a str,
    problems: &'a [WeightProblem],
}

impl fmt::Display for MismatchDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "the weights do not fit the graph `{}`: {n} problem{}",
            self.graph,
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.problems.iter().take(SHOWN_PROBLEMS) {
            write!(f, "\n  {p}")?;
        }
        if n > SHOWN_PROBLEMS {
            write!(f, "\n  ... and {} more", n - SHOWN_PROBLEMS)?;
        }
        Ok(())
    }
}

impl Weights {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fresh weights for every tensor the graph needs: He (Kaiming) normal
    /// for conv and linear weights (standard deviation `sqrt(2 / fan_in)`,
    /// `fan_in = in / groups * kh * kw` or `in`), batch norm and biases as
    /// [`InitOptions::randomize_batch_norm`] says. Each tensor depends only
    /// on the seed and its name.
    ///
    /// Panics when the memory cannot be had, as any allocation does; code
    /// that sizes weights from user input uses [`Weights::try_init`].
    pub fn init(graph: &Graph, options: &InitOptions) -> Weights {
        Weights::try_init(graph, options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Weights::init`], with every tensor's memory reserved fallibly: a
    /// graph whose weights do not fit in memory is an error naming the
    /// tensor and the bytes it needs.
    pub fn try_init(graph: &Graph, options: &InitOptions) -> Result<Weights, WeightsError> {
        let mut weights = Weights::new();
        for id in graph.nodes() {
            let node = graph.node(id);
            for spec in graph.weights(id) {
                let name = spec.tensor_name(&node.name);
                let mut rng = named_rng(options.seed, "weights", &name);
                let n = spec.numel();
                let random = options.randomize_batch_norm;
                let mut data = Vec::new();
                data.try_reserve_exact(n)
                    .map_err(|_| WeightsError::OutOfMemory {
                        tensor: name.clone(),
                        bytes: n as u128 * 4,
                    })?;
                let mut uniform = |low: f32, high: f32, constant: f32| {
                    if random {
                        data.extend((0..n).map(|_| rng.random_range(low..=high)));
                    } else {
                        data.resize(n, constant);
                    }
                };
                match spec.role {
                    WeightRole::Kernel => {
                        let fan_in: usize = spec.shape.iter().skip(1).product();
                        let std = (2.0 / fan_in.max(1) as f64).sqrt();
                        push_normal_values(&mut rng, &mut data, n);
                        data.iter_mut().for_each(|z| *z = (*z as f64 * std) as f32);
                    }
                    WeightRole::Scale => uniform(0.5, 1.5, 1.0),
                    WeightRole::Shift | WeightRole::RunningMean => uniform(-0.2, 0.2, 0.0),
                    WeightRole::RunningVar => uniform(0.5, 2.0, 1.0),
                    WeightRole::Bias => uniform(-0.1, 0.1, 0.0),
                }
                // The graph checked every weight shape against the size
                // limit, so the lengths agree.
                if let Ok(t) = Tensor::new(spec.shape.clone(), data) {
                    weights.insert(name, t);
                }
            }
        }
        Ok(weights)
    }

    /// Adds or replaces a tensor; returns the one it replaced.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// Removes a tensor and returns it.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// The tensor of that name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor `key` of node `node` (`<node>.<suffix>`).
    pub fn of(&self, node: &str, key: WeightKey) -> Option<&Tensor> {
        self.tensors.get(&key.tensor_name(node))
    }

    /// Mutable access to the tensor `key` of node `node`.
    pub fn of_mut(&mut self, node: &str, key: WeightKey) -> Option<&mut Tensor> {
        self.tensors.get_mut(&key.tensor_name(node))
    }

    /// Adds or replaces the tensor `key` of node `node`.
    pub fn insert_of(&mut self, node: &str, key: WeightKey, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(key.tensor_name(node), tensor)
    }

    /// Removes the tensor `key` of node `node` and returns it.
    pub fn remove_of(&mut self, node: &str, key: WeightKey) -> Option<Tensor> {
        self.tensors.remove(&key.tensor_name(node))
    }

    /// Mutable access to the tensor of that name.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors.get_mut(name)
    }

    /// The tensors, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of values over all tensors.
    pub fn numel(&self) -> usize {
        self.tensors.values().map(Tensor::numel).sum()
    }

    /// The safetensors encoding (`F32`, little-endian), tensors sorted by name.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, WeightsError> {
        let bytes: Vec<(&str, &[usize], Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let b: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.as_str(), t.shape(), b)
            })
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for (name, shape, b) in &bytes {
            let view = TensorView::new(Dtype::F32, shape.to_vec(), b)
                .map_err(|e| WeightsError::Serialize(format!("tensor `{name}`: {e}")))?;
            views.push((*name, view));
        }
        safetensors::serialize(views, None).map_err(|e| WeightsError::Serialize(e.to_string()))
    }

    /// Parses a safetensors encoding; `path` is only used in errors.
    pub fn from_safetensors(bytes: &[u8], path: &Path) -> Result<Weights, WeightsError> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut weights = Weights::new();
        for (name, view) in file.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::Dtype {
                    path: path.to_path_buf(),
                    tensor: name.to_string(),
                    dtype: format!("{:?}", view.dtype()),
                });
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let tensor =
                Tensor::new(view.shape().to_vec(), data).map_err(|e| WeightsError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("tensor `{name}`: {e}"),
                })?;
            weights.insert(name, tensor);
        }
        Ok(weights)
    }

    /// Writes the weights as a safetensors file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        let path = path.as_ref();
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes).map_err(|source| WeightsError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a safetensors file. Only `F32` tensors are accepted; whether
    /// they fit a graph is [`Weights::check`]'s job.
    pub fn load(path: impl AsRef<Path>) -> Result<Weights, WeightsError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Weights::from_safetensors(&bytes, path)
    }

    /// Checks the weights hold exactly the tensors the graph needs, each of
    /// the right shape with finite values (and non-negative batch norm
    /// variances). Every problem is reported.
    pub fn check(&self, graph: &Graph) -> Result<(), WeightsError> {
        let mut problems = Vec::new();
        let mut expected = BTreeMap::new();
        for id in graph.nodes() {
            let node = graph.node(id);
            for spec in graph.weights(id) {
                let name = spec.tensor_name(&node.name);
                match self.tensors.get(&name) {
                    None => problems.push(WeightProblem::Missing {
                        tensor: name.clone(),
                        expected: spec.shape.clone(),
                    }),
                    Some(t) if t.shape() != spec.shape => problems.push(WeightProblem::Shape {
                        tensor: name.clone(),
                        expected: spec.shape.clone(),
                        found: t.shape().to_vec(),
                    }),
                    Some(t) => {
                        if let Some((index, &value)) =
                            t.data().iter().enumerate().find(|(_, v)| !v.is_finite())
                        {
                            problems.push(WeightProblem::NonFinite {
                                tensor: name.clone(),
                                index,
                                value,
                            });
                        } else if spec.role == WeightRole::RunningVar {
                            if let Some((index, &value)) =
                                t.data().iter().enumerate().find(|(_, v)| **v < 0.0)
                            {
                                problems.push(WeightProblem::NegativeVariance {
                                    tensor: name.clone(),
                                    index,
                                    value,
                                });
                            }
                        }
                    }
                }
                expected.insert(name, ());
            }
        }
        for (name, t) in &self.tensors {
            if !expected.contains_key(name) {
                problems.push(WeightProblem::Unexpected {
                    tensor: name.clone(),
                    shape: t.shape().to_vec(),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::Mismatch {
                graph: graph.name.clone(),
                problems,
            })
        }
    }
}

/// A random stream that depends only on the seed, a domain (`weights`,
/// `input`) and a name: ChaCha8 keyed by the seed, with the stream number a
/// 64-bit FNV-1a hash of `domain/name`.
pub(crate) fn named_rng(seed: u64, domain: &str, name: &str) -> ChaCha8Rng {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in domain.bytes().chain([b'/']).chain(name.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(hash);
    rng
}

/// Appends `n` standard normal samples to `out` (Box-Muller, two per
/// draw of the stream), into memory the caller reserved.
pub(crate) fn push_normal_values(rng: &mut ChaCha8Rng, out: &mut Vec<f32>, n: usize) {
    let target = out.len() + n;
    while out.len() < target {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        if out.len() < target {
            out.push((r * theta.sin()) as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{BatchNorm, Conv2d, Linear, Op};
    use crate::shape::Shape;

    fn graph() -> Graph {
        let mut g = Graph::new("tiny");
        let x = g
            .add(Op::Input(Shape::chw(4, 6, 6)), "input", &[], None)
            .unwrap();
        let mut conv = Conv2d::new(8, 3);
        conv.groups = 2;
        conv.bias = true;
        let c = g.add(Op::Conv2d(conv), "conv", &[x], None).unwrap();
        let b = g
            .add(Op::BatchNorm(BatchNorm::default()), "bn", &[c], None)
            .unwrap();
        let f = g.add(Op::Flatten, "flatten", &[b], None).unwrap();
        g.add(
            Op::Linear(Linear {
                out_features: 5,
                bias: true,
            }),
            "fc",
            &[f],
            None,
        )
        .unwrap();
        g
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shufflekit-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn problems(e: WeightsError) -> Vec<WeightProblem> {
        match e {
            WeightsError::Mismatch { problems, .. } => problems,
            other => panic!("expected a mismatch, got {other}"),
        }
    }

    #[test]
    fn init_is_deterministic_and_per_tensor() {
        let g = graph();
        let opts = InitOptions {
            seed: 7,
            randomize_batch_norm: false,
        };
        let a = Weights::init(&g, &opts);
        assert_eq!(a, Weights::init(&g, &opts));
        let names: Vec<&str> = a.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
                "bn.weight",
                "conv.bias",
                "conv.weight",
                "fc.bias",
                "fc.weight"
            ]
        );
        assert_eq!(a.get("conv.weight").unwrap().shape(), &[8, 2, 3, 3]);
        assert!(a.get("bn.weight").unwrap().data().iter().all(|&v| v == 1.0));
        assert!(a
            .get("bn.running_var")
            .unwrap()
            .data()
            .iter()
            .all(|&v| v == 1.0));
        assert!(a.get("conv.bias").unwrap().data().iter().all(|&v| v == 0.0));
        let other = Weights::init(&g, &InitOptions { seed: 8, ..opts });
        assert_ne!(a.get("conv.weight"), other.get("conv.weight"));

        // A tensor depends on its name only: a graph with an extra layer
        // keeps every other tensor's values.
        let mut g2 = Graph::new("tiny2");
        let x = g2
            .add(Op::Input(Shape::chw(4, 6, 6)), "input", &[], None)
            .unwrap();
        let mut conv = Conv2d::new(8, 3);
        conv.groups = 2;
        conv.bias = true;
        let c = g2.add(Op::Conv2d(conv), "conv", &[x], None).unwrap();
        let e = g2
            .add(Op::BatchNorm(BatchNorm::default()), "extra", &[c], None)
            .unwrap();
        let b = g2
            .add(Op::BatchNorm(BatchNorm::default()), "bn", &[e], None)
            .unwrap();
        let f = g2.add(Op::Flatten, "flatten", &[b], None).unwrap();
        g2.add(
            Op::Linear(Linear {
                out_features: 5,
                bias: true,
            }),
            "fc",
            &[f],
            None,
        )
        .unwrap();
        let random = InitOptions {
            seed: 7,
            randomize_batch_norm: true,
        };
        let (a, b) = (Weights::init(&g, &random), Weights::init(&g2, &random));
        assert_eq!(b.len(), a.len() + 4);
        for (name, t) in a.iter() {
            assert_eq!(Some(t), b.get(name), "{name}");
        }
    }

    #[test]
    fn init_statistics_follow_he_normal() {
        let mut g = Graph::new("big");
        let x = g
            .add(Op::Input(Shape::chw(64, 3, 3)), "input", &[], None)
            .unwrap();
        g.add(Op::Conv2d(Conv2d::new(128, 3)), "conv", &[x], None)
            .unwrap();
        let w = Weights::init(&g, &InitOptions::default());
        let t = w.get("conv.weight").unwrap();
        let n = t.numel() as f64;
        let mean = t.data().iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = t
            .data()
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let expected = 2.0 / (64.0 * 9.0);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!(
            (var / expected - 1.0).abs() < 0.02,
            "var {var} vs {expected}"
        );
    }

    #[test]
    fn randomized_batch_norm_is_in_range() {
        let w = Weights::init(
            &graph(),
            &InitOptions {
                seed: 1,
                randomize_batch_norm: true,
            },
        );
        let in_range = |name: &str, lo: f32, hi: f32| {
            let t = w.get(name).unwrap();
            assert!(t.data().iter().all(|&v| (lo..=hi).contains(&v)), "{name}");
            assert!(
                t.data().iter().any(|&v| v != t.data()[0]),
                "{name} is constant"
            );
        };
        in_range("bn.weight", 0.5, 1.5);
        in_range("bn.bias", -0.2, 0.2);
        in_range("bn.running_mean", -0.2, 0.2);
        in_range("bn.running_var", 0.5, 2.0);
        in_range("conv.bias", -0.1, 0.1);
        assert!(w.check(&graph()).is_ok());
    }

    #[test]
    fn save_load_round_trip() {
        let g = graph();
        let w = Weights::init(
            &g,
            &InitOptions {
                seed: 3,
                randomize_batch_norm: true,
            },
        );
        let path = temp("round_trip.safetensors");
        w.save(&path).unwrap();
        let back = Weights::load(&path).unwrap();
        assert_eq!(w, back);
        back.check(&g).unwrap();
        // Deterministic bytes.
        assert_eq!(std::fs::read(&path).unwrap(), w.to_safetensors().unwrap());
    }

    #[test]
    fn every_mismatch_is_named() {
        let g = graph();
        let mut w = Weights::init(&g, &InitOptions::default());
        w.remove("bn.bias");
        w.insert("conv.weight", Tensor::zeros(vec![8, 4, 3, 3]).unwrap());
        w.insert(
            "fc.bias",
            Tensor::new(vec![5], vec![0.0, 1.0, f32::NAN, 0.0, 0.0]).unwrap(),
        );
        w.insert("bn.running_var", Tensor::full(vec![8], -1.0).unwrap());
        w.insert("ghost.weight", Tensor::zeros(vec![2]).unwrap());
        let e = w.check(&g).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("the weights do not fit the graph `tiny`: 5 problems"),
            "{text}"
        );
        assert!(
            text.contains("tensor `conv.weight` has shape [8, 4, 3, 3], expected [8, 2, 3, 3]"),
            "{text}"
        );
        assert!(
            text.contains("missing tensor `bn.bias` (expected shape [8])"),
            "{text}"
        );
        assert!(
            text.contains("tensor `fc.bias` has a non-finite value NaN at index 2"),
            "{text}"
        );
        assert!(
            text.contains("tensor `bn.running_var` has a negative variance -1 at index 0"),
            "{text}"
        );
        assert!(
            text.contains("unexpected tensor `ghost.weight` of shape [2]"),
            "{text}"
        );
        let p = problems(e);
        assert_eq!(p.len(), 5);
        assert_eq!(p.last().unwrap().tensor(), "ghost.weight");
    }

    #[test]
    fn long_problem_lists_are_summarised() {
        let g = graph();
        let mut w = Weights::new();
        for i in 0..15 {
            w.insert(format!("x{i:02}"), Tensor::zeros(vec![1]).unwrap());
        }
        let text = w.check(&g).unwrap_err().to_string();
        assert!(text.contains("23 problems"), "{text}");
        assert!(text.ends_with("... and 13 more"), "{text}");
    }

    #[test]
    fn bad_files_name_the_file() {
        let missing = temp("does_not_exist.safetensors");
        let e = Weights::load(&missing).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read weights file `"),
            "{e}"
        );
        assert!(e.to_string().contains("does_not_exist.safetensors"), "{e}");

        let w = Weights::init(&graph(), &InitOptions::default());
        let bytes = w.to_safetensors().unwrap();
        let path = temp("truncated.safetensors");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let e = Weights::load(&path).unwrap_err();
        assert!(matches!(e, WeightsError::Corrupt { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("truncated.safetensors` is not a valid safetensors file"),
            "{e}"
        );

        let path = temp("garbage.safetensors");
        std::fs::write(&path, b"hello").unwrap();
        let e = Weights::load(&path).unwrap_err();
        assert!(
            e.to_string()
                .contains("garbage.safetensors` is not a valid safetensors file"),
            "{e}"
        );

        let path = temp("header.safetensors");
        let mut bad = 1000u64.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{not json");
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            Weights::load(&path).unwrap_err(),
            WeightsError::Corrupt { .. }
        ));

        let e = Weights::new()
            .save(temp("no_such_dir").join("w.safetensors"))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("cannot write weights file `"),
            "{e}"
        );
    }

    #[test]
    fn other_dtypes_are_refused() {
        let data = [0u8; 16];
        let view = TensorView::new(Dtype::F64, vec![2], &data).unwrap();
        let bytes = safetensors::serialize([("conv.weight", view)], None).unwrap();
        let e = Weights::from_safetensors(&bytes, Path::new("f64.safetensors")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`f64.safetensors`: tensor `conv.weight` has dtype F64, expected F32"
        );
    }
}
