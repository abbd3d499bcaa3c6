//! Evaluators: what a search measures about each candidate.
//!
//! Every evaluator implements [`Evaluator`] and returns [`Metrics`]: named
//! numbers (the objectives and constraints read them) and named notes
//! (which engine ran, how). They combine freely; the driver always runs
//! [`FlopsEvaluator`] first because budgets, plots and the Pareto front
//! need the cost. A training-based accuracy evaluator plugs in the same way.

use std::collections::BTreeMap;
use std::time::Instant;

use shufflekit_ir::cost::Cost;
use shufflekit_ir::eval;
use shufflekit_ir::input::random_input;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, Op};
use shufflekit_spec::Spec;

use crate::budget::{ops_by_kind, peak_activation_bytes, Counting, MEMORY_METHOD};
use crate::error::{EvaluatorError, SearchError};
use crate::paper;
use crate::space::ParamValue;

/// Names of the metrics the built-in evaluators produce.
pub mod metric {
    /// Counted operations in millions (the x axis; see `Counting`).
    pub const MFLOPS: &str = "mflops";
    /// Multiply-adds of conv and linear layers.
    pub const MACS: &str = "macs";
    /// Multiply-adds of conv layers only.
    pub const CONV_MACS: &str = "conv_macs";
    /// Trainable parameters.
    pub const PARAMS: &str = "params";
    /// Peak activation memory in bytes (batch 1, f32).
    pub const PEAK_MEMORY: &str = "peak_memory_bytes";
    /// Prefix of the counted operations per layer kind (`ops.stem`...).
    pub const OPS_KIND_PREFIX: &str = "ops.";
    /// Median latency in milliseconds.
    pub const LATENCY_MS: &str = "latency_ms";
    /// NASWOT score (higher is better).
    pub const NASWOT: &str = "naswot";
    /// Published top-1 error in percent (lower is better).
    pub const PAPER_ERROR: &str = "paper_top1_error";
    /// The complexity the paper prints for the variant.
    pub const PAPER_MFLOPS: &str = "paper_mflops";
}

/// What an evaluator found about one candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Named numbers.
    pub values: BTreeMap<String, f64>,
    /// Named notes (engine used, method, source table).
    pub info: BTreeMap<String, String>,
}

impl Metrics {
    /// Adds a number.
    pub fn set(&mut self, name: &str, value: f64) {
        self.values.insert(name.to_string(), value);
    }

    /// Adds a note.
    pub fn note(&mut self, name: &str, text: impl Into<String>) {
        self.info.insert(name.to_string(), text.into());
    }
}

/// Everything an evaluator may look at for one candidate.
pub struct EvalContext<'a> {
    /// The parsed spec (to rebuild the network with other overrides).
    pub spec: &'a Spec,
    /// The overrides that built `graph` (fixed settings, then the
    /// candidate's values).
    pub overrides: &'a [(String, String)],
    /// The candidate's parameters (swept and matched ones).
    pub params: &'a BTreeMap<String, ParamValue>,
    /// The built network.
    pub graph: &'a Graph,
    /// Its cost under the search's convention.
    pub cost: &'a Cost,
    /// How the budget counts.
    pub counting: Counting,
    /// The search's seed (weights and inputs derive from it).
    pub seed: u64,
}

impl EvalContext<'_> {
    /// The value a parameter has for this candidate: its override, or the
    /// spec's default when that default does not depend on other parameters.
    pub fn param(&self, name: &str) -> Option<ParamValue> {
        if let Some((_, v)) = self.overrides.iter().rev().find(|(k, _)| k == name) {
            return Some(ParamValue::parse(v));
        }
        let defaults = self.spec.param_defaults().ok()?;
        defaults
            .get(name)
            .map(|v| ParamValue::parse(&v.to_string()))
    }
}

/// Something a search measures about each candidate.
pub trait Evaluator: Send + Sync {
    /// A short name (`flops`, `latency`...), used in `--evaluate`.
    fn name(&self) -> &str;
    /// What it measures and how, for reports.
    fn description(&self) -> String;
    /// Whether it needs the machine to itself (timing): the driver then runs
    /// no other evaluation at the same time.
    fn exclusive(&self) -> bool {
        false
    }
    /// Measures one candidate.
    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Metrics, EvaluatorError>;
}

/// Counted operations, multiply-adds, parameters, peak activation memory
/// and operations per layer kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlopsEvaluator;

impl Evaluator for FlopsEvaluator {
    fn name(&self) -> &str {
        "flops"
    }

    fn description(&self) -> String {
        format!("exact counting from the graph (shufflekit_ir::cost); peak memory: {MEMORY_METHOD}")
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Metrics, EvaluatorError> {
        let mut m = Metrics::default();
        let counted = ctx.counting.count(ctx.cost);
        m.set(metric::MFLOPS, counted as f64 / 1e6);
        m.set("counted_ops", counted as f64);
        m.set(metric::MACS, ctx.cost.macs as f64);
        m.set(metric::CONV_MACS, ctx.cost.conv_macs as f64);
        m.set("ops", ctx.cost.ops as f64);
        m.set(metric::PARAMS, ctx.cost.params as f64);
        let (arena, lower_bound, method) = peak_activation_bytes(ctx.graph)
            .map_err(|e| EvaluatorError::new(self.name(), format!("peak memory: {e}")))?;
        m.set(metric::PEAK_MEMORY, arena as f64);
        m.set("memory_lower_bound_bytes", lower_bound as f64);
        m.note("memory_method", method);
        for (kind, ops) in ops_by_kind(ctx.cost) {
            m.set(&format!("{}{kind}", metric::OPS_KIND_PREFIX), ops as f64);
        }
        Ok(m)
    }
}

/// Settings of [`LatencyEvaluator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyOptions {
    /// Threads the engine may use.
    pub threads: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Timed runs; the median is reported.
    pub runs: usize,
    /// Batch size of the timed input.
    pub batch: usize,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            threads: 1,
            warmup: 2,
            runs: 7,
            batch: 1,
        }
    }
}

/// How latency is measured: the graph goes through the default pass
/// pipeline (batch norm and shuffle folding, fusion) and is compiled by the
/// Cranelift JIT (`shufflekit_jit`); if that fails the reference evaluator
/// runs the unoptimised graph, and the record's `latency_engine` says so.
pub const LATENCY_ENGINE_NOTE: &str = if cfg!(feature = "jit") {
    "default pass pipeline, then the Cranelift JIT (shufflekit_jit::Model); falls back to the reference evaluator (shufflekit_ir::eval) if compilation fails, recorded per candidate in `latency_engine`"
} else {
    "reference evaluator (shufflekit_ir::eval) on the unoptimised graph: this build has no `jit` feature (the Cranelift JIT is not available yet); recorded per candidate in `latency_engine`"
};

/// Wall-clock time of one forward pass: warm-up runs, then the median of
/// timed runs, with `threads` threads. It runs alone (exclusive), so other
/// candidates do not disturb it.
pub struct LatencyEvaluator {
    options: LatencyOptions,
    pool: rayon::ThreadPool,
}

impl LatencyEvaluator {
    /// An evaluator with its own thread pool.
    pub fn new(options: LatencyOptions) -> Result<Self, SearchError> {
        if options.threads == 0 || options.runs == 0 || options.batch == 0 {
            return Err(SearchError::Config(
                "latency threads, runs and batch must be at least 1".into(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .thread_name(|i| format!("latency-{i}"))
            .build()
            .map_err(SearchError::Threads)?;
        Ok(LatencyEvaluator { options, pool })
    }
}

impl Evaluator for LatencyEvaluator {
    fn name(&self) -> &str {
        "latency"
    }

    fn description(&self) -> String {
        let o = self.options;
        format!(
            "{LATENCY_ENGINE_NOTE}; batch {}, {} thread(s), {} warm-up run(s), median of {} timed runs, measured with no other evaluation running",
            o.batch, o.threads, o.warmup, o.runs
        )
    }

    fn exclusive(&self) -> bool {
        true
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Metrics, EvaluatorError> {
        let err = |m: String| EvaluatorError::new("latency", m);
        let o = self.options;
        let weights = Weights::try_init(
            ctx.graph,
            &InitOptions {
                seed: ctx.seed,
                randomize_batch_norm: false,
            },
        )
        .map_err(|e| EvaluatorError::from_source("latency", e))?;
        let input_shape =
            input_shape(ctx.graph).ok_or_else(|| err("the graph has no input".into()))?;
        let input = random_input(&input_shape, o.batch, ctx.seed)
            .map_err(|e| EvaluatorError::from_source("latency", e))?;
        let mut m = Metrics::default();
        let jit = self
            .pool
            .install(|| time_jit(ctx.graph, &weights, &input, o));
        let times = match jit {
            Ok((times, compile_ms)) => {
                m.note("latency_engine", "jit");
                m.set("jit_compile_ms", compile_ms);
                times
            }
            Err(why) => {
                m.note("latency_engine", "reference");
                m.note("latency_fallback", why);
                self.pool.install(|| -> Result<Vec<f64>, EvaluatorError> {
                    for _ in 0..o.warmup {
                        eval::evaluate(ctx.graph, &weights, &input)
                            .map_err(|e| EvaluatorError::from_source("latency", e))?;
                    }
                    let mut times = Vec::with_capacity(o.runs);
                    for _ in 0..o.runs {
                        let t = Instant::now();
                        let out = eval::evaluate(ctx.graph, &weights, &input)
                            .map_err(|e| EvaluatorError::from_source("latency", e))?;
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                        drop(out);
                    }
                    Ok(times)
                })?
            }
        };
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        m.set(metric::LATENCY_MS, median);
        m.set("latency_ms_min", sorted[0]);
        m.set("latency_ms_max", sorted[sorted.len() - 1]);
        m.note("latency_threads", o.threads.to_string());
        Ok(m)
    }
}

/// Optimises, compiles and times a graph with the JIT: the timed runs in
/// milliseconds and the compile time, or why it could not.
#[cfg(feature = "jit")]
fn time_jit(
    graph: &Graph,
    weights: &Weights,
    input: &shufflekit_ir::tensor::Tensor,
    o: LatencyOptions,
) -> Result<(Vec<f64>, f64), String> {
    let start = Instant::now();
    let mut module = shufflekit_passes::Module {
        graph: graph.clone(),
        weights: Some(weights.clone()),
    };
    shufflekit_passes::optimize(&mut module).map_err(|e| format!("passes: {e}"))?;
    let weights = module.weights.ok_or("passes dropped the weights")?;
    let options = shufflekit_jit::CompileOptions {
        threads: o.threads,
        ..Default::default()
    };
    let mut model = shufflekit_jit::Model::compile(&module.graph, &weights, &options)
        .map_err(|e| format!("jit: {e}"))?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    for _ in 0..o.warmup {
        model.run(input).map_err(|e| format!("jit: {e}"))?;
    }
    let mut times = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        let t = Instant::now();
        let out = model.run(input).map_err(|e| format!("jit: {e}"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    Ok((times, compile_ms))
}

/// Without the `jit` feature there is no JIT to time.
#[cfg(not(feature = "jit"))]
fn time_jit(
    _graph: &Graph,
    _weights: &Weights,
    _input: &shufflekit_ir::tensor::Tensor,
    _o: LatencyOptions,
) -> Result<(Vec<f64>, f64), String> {
    Err("built without the `jit` feature of shufflekit-search".into())
}

fn input_shape(graph: &Graph) -> Option<shufflekit_ir::Shape> {
    graph
        .input_nodes()
        .first()
        .map(|&i| graph.node(i).shape.clone())
}

/// Settings of [`ProxyEvaluator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Images in the minibatch.
    pub batch: usize,
    /// The reduced input resolution.
    pub resolution: usize,
    /// The spec parameter that sets the resolution; without it (or when the
    /// spec lacks it) the network runs at its own resolution.
    pub resolution_param: Option<String>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            batch: 32,
            resolution: 64,
            resolution_param: Some("resolution".into()),
        }
    }
}

/// NASWOT (Mellor et al., "Neural Architecture Search without Training",
/// ICML 2021): the log-determinant of the kernel `K[i][j] = A - H(c_i,
/// c_j)`, where `c_i` is the binary pattern of which ReLU units are active
/// for image `i`, `A` the number of ReLU units and `H` the Hamming distance.
/// The network is run untrained (He-initialised weights from the seed,
/// identity batch norm) by the reference evaluator's `evaluate_all` on a
/// seeded standard-normal minibatch at reduced resolution.
#[derive(Debug, Clone, Default)]
pub struct ProxyEvaluator {
    options: ProxyOptions,
}

impl ProxyEvaluator {
    /// A NASWOT evaluator.
    pub fn new(options: ProxyOptions) -> Result<Self, SearchError> {
        if options.batch < 2 || options.resolution == 0 {
            return Err(SearchError::Config(
                "the proxy needs a batch of at least 2 and a positive resolution".into(),
            ));
        }
        Ok(ProxyEvaluator { options })
    }
}

impl Evaluator for ProxyEvaluator {
    fn name(&self) -> &str {
        "proxy"
    }

    fn description(&self) -> String {
        format!(
            "NASWOT score (Mellor et al. 2021): log-determinant of the binary ReLU-activation-pattern kernel over a seeded standard-normal minibatch of {} images at {}x{} (via the `{}` parameter), untrained He-initialised weights, computed with the reference evaluator's evaluate_all (shufflekit_ir::eval)",
            self.options.batch,
            self.options.resolution,
            self.options.resolution,
            self.options.resolution_param.as_deref().unwrap_or("-")
        )
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Metrics, EvaluatorError> {
        let mut m = Metrics::default();
        let small;
        let graph = match &self.options.resolution_param {
            Some(p) if ctx.spec.param_names().contains(&p.as_str()) => {
                let mut overrides: Vec<(String, String)> = ctx
                    .overrides
                    .iter()
                    .filter(|(k, _)| k != p)
                    .cloned()
                    .collect();
                overrides.push((p.clone(), self.options.resolution.to_string()));
                small = ctx.spec.build(&overrides).map_err(|e| {
                    EvaluatorError::caused_by(
                        "proxy",
                        format!("building at resolution {}: {e}", self.options.resolution),
                        e,
                    )
                })?;
                m.note("proxy_resolution", self.options.resolution.to_string());
                &small
            }
            _ => {
                m.note("proxy_resolution", "native");
                ctx.graph
            }
        };
        let score = naswot(graph, self.options.batch, ctx.seed)?;
        m.set(metric::NASWOT, score);
        m.note("proxy_method", "naswot");
        Ok(m)
    }
}

/// The NASWOT score of a graph on a seeded random minibatch; its errors
/// are the `proxy` evaluator's.
pub fn naswot(graph: &Graph, batch: usize, seed: u64) -> Result<f64, EvaluatorError> {
    let weights = Weights::try_init(
        graph,
        &InitOptions {
            seed,
            randomize_batch_norm: false,
        },
    )
    .map_err(|e| EvaluatorError::from_source("proxy", e))?;
    let shape =
        input_shape(graph).ok_or_else(|| EvaluatorError::new("proxy", "the graph has no input"))?;
    let input =
        random_input(&shape, batch, seed).map_err(|e| EvaluatorError::from_source("proxy", e))?;
    let values = eval::evaluate_all(graph, &weights, &input)
        .map_err(|e| EvaluatorError::from_source("proxy", e))?;
    let mut kernel = vec![vec![0f64; batch]; batch];
    let mut units = 0usize;
    for (id, t) in &values {
        if !matches!(graph.node(*id).op, Op::Relu | Op::Relu6) {
            continue;
        }
        let per = t.numel() / batch;
        units += per;
        let words = per.div_ceil(64);
        let codes: Vec<Vec<u64>> = (0..batch)
            .map(|i| {
                let mut bits = vec![0u64; words];
                for (j, &x) in t.data()[i * per..(i + 1) * per].iter().enumerate() {
                    if x > 0.0 {
                        bits[j / 64] |= 1 << (j % 64);
                    }
                }
                bits
            })
            .collect();
        for i in 0..batch {
            for j in i..batch {
                let hamming: u32 = codes[i]
                    .iter()
                    .zip(&codes[j])
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum();
                let same = (per - hamming as usize) as f64;
                kernel[i][j] += same;
                if i != j {
                    kernel[j][i] += same;
                }
            }
        }
    }
    if units == 0 {
        return Err(EvaluatorError::new(
            "proxy",
            "the network has no ReLU: NASWOT is undefined",
        ));
    }
    log_abs_det(kernel).ok_or_else(|| {
        EvaluatorError::new(
            "proxy",
            "the activation-pattern kernel is singular (two images share a pattern)",
        )
    })
}

/// `log |det a|` by Gaussian elimination with partial pivoting; `None`
/// when the matrix is singular.
pub fn log_abs_det(mut a: Vec<Vec<f64>>) -> Option<f64> {
    let n = a.len();
    let mut log = 0.0;
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        let scale = a.iter().map(|r| r[col].abs()).fold(0.0, f64::max).max(1.0);
        if a[pivot][col].abs() <= 1e-12 * scale {
            return None;
        }
        a.swap(col, pivot);
        let p = a[col][col];
        log += p.abs().ln();
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in rest.iter_mut() {
            let f = row[col] / p;
            if f != 0.0 {
                for (x, y) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * y;
                }
            }
        }
    }
    Some(log)
}

/// The published ImageNet top-1 error of the ShuffleNet v1 variants the
/// paper reports (Tables 2, 3 and 5), matched by groups, width, shuffle and
/// shallow; a candidate only matches if its graph costs exactly what the
/// paper's variant costs (same MACs and parameters), so a changed stage
/// width or resolution does not borrow the paper's number.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaperEvaluator;

/// The spec name the paper tables apply to.
pub const PAPER_SPEC: &str = "shufflenet_v1";

impl Evaluator for PaperEvaluator {
    fn name(&self) -> &str {
        "paper"
    }

    fn description(&self) -> String {
        "published ImageNet top-1 error of ShuffleNet v1 (Zhang et al. 2017, Tables 2, 3, 5) for the variants the paper reports, matched by groups/width/shuffle/shallow and identical cost; other candidates get no value".into()
    }

    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Metrics, EvaluatorError> {
        let mut m = Metrics::default();
        if ctx.spec.name != PAPER_SPEC {
            return Ok(m);
        }
        let num = |n: &str| ctx.param(n).and_then(|v| v.as_f64());
        let flag = |n: &str| match ctx.param(n) {
            Some(ParamValue::Bool(b)) => Some(b),
            _ => None,
        };
        let (Some(width), Some(groups), Some(shuffle), Some(shallow)) = (
            num("width"),
            num("groups"),
            flag("shuffle"),
            flag("shallow"),
        ) else {
            return Ok(m);
        };
        let Some(point) = paper::lookup(width, groups as i64, shuffle, shallow) else {
            return Ok(m);
        };
        let reference: Vec<(String, String)> = vec![
            ("groups".into(), point.groups.to_string()),
            ("width".into(), ParamValue::Float(point.width).to_expr()),
            ("shuffle".into(), point.shuffle.to_string()),
            ("shallow".into(), point.shallow.to_string()),
        ];
        let graph = ctx
            .spec
            .build(&reference)
            .map_err(|e| EvaluatorError::from_source("paper", e))?;
        let cost = shufflekit_ir::cost::count(&graph, ctx.cost.convention);
        if cost.macs != ctx.cost.macs || cost.params != ctx.cost.params {
            return Ok(m);
        }
        m.set(metric::PAPER_ERROR, point.top1_error);
        m.set(metric::PAPER_MFLOPS, point.mflops);
        m.note("paper_source", point.source);
        m.note("paper_variant", point.label());
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_det_of_small_matrices() {
        let d = log_abs_det(vec![vec![2.0, 0.0], vec![0.0, 3.0]]).unwrap();
        assert!((d - 6f64.ln()).abs() < 1e-12);
        let d = log_abs_det(vec![vec![0.0, 1.0], vec![1.0, 0.0]]).unwrap();
        assert!(d.abs() < 1e-12);
        assert!(log_abs_det(vec![vec![1.0, 2.0], vec![2.0, 4.0]]).is_none());
    }
}
