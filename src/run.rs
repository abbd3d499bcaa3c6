//! The `run` and `init` commands: evaluate a network on an input and print
//! its top classes, and write freshly initialised weights.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use shufflekit_ir::eval;
use shufflekit_ir::input::{self, ImageOptions};
use shufflekit_ir::ops::Op;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, Shape};

use crate::SpecArgs;

/// Options of `shufflekit run`.
#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Weights (safetensors). Without it, weights are initialised from --seed.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// The input: an .npy array ([N, C, H, W], or [C, H, W] for one image)
    /// or a PNG/JPEG image (resized, centre-cropped and normalised).
    #[arg(long, value_name = "FILE", conflicts_with = "random_input")]
    input: Option<PathBuf>,
    /// Feed a standard normal random input drawn from --seed (the default
    /// when --input is not given).
    #[arg(long)]
    random_input: bool,
    /// Batch size of the random input.
    #[arg(long, value_name = "N", conflicts_with = "input", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// Seed of the initialised weights and of the random input.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// How many classes to print per image.
    #[arg(long, value_name = "K", default_value_t = 5)]
    top: usize,
    /// Write the network's output (the logits) as .npy, batch first.
    #[arg(long, value_name = "FILE.npy")]
    output: Option<PathBuf>,
    /// The engine that evaluates the network.
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    engine: Engine,
    /// JIT engine: the vector tier (sse, avx2, avx512; default the widest
    /// the CPU has).
    #[arg(long, value_name = "TIER", value_parser = crate::bench::parse_isa)]
    isa: Option<shufflekit_jit::Isa>,
    /// Image inputs: per-channel mean (default ImageNet's 0.485,0.456,0.406).
    #[arg(
        long,
        value_name = "A,B,C",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    mean: Option<Vec<f32>>,
    /// Image inputs: per-channel standard deviation (default ImageNet's
    /// 0.229,0.224,0.225).
    #[arg(
        long,
        value_name = "A,B,C",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    std: Option<Vec<f32>>,
}

/// Options of `shufflekit init`.
#[derive(Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Seed of the weights (each tensor depends only on the seed and its name).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Random batch-norm statistics and biases instead of identities and
    /// zeros (for tests).
    #[arg(long)]
    randomize_batch_norm: bool,
    /// The safetensors file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

/// Which implementation evaluates the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Engine {
    /// Native code compiled with Cranelift after the optimisation passes.
    Jit,
    /// The reference evaluator (plain Rust, the definition of the results).
    Reference,
}

impl Engine {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Jit => "jit",
            Engine::Reference => "reference",
        }
    }

    fn evaluate(
        self,
        graph: &Graph,
        weights: &Weights,
        input: &Tensor,
        isa: Option<shufflekit_jit::Isa>,
    ) -> anyhow::Result<Tensor> {
        match self {
            Engine::Jit => crate::bench::jit_evaluate(graph, weights, input, isa),
            Engine::Reference => Ok(eval::evaluate(graph, weights, input)?),
        }
    }
}

/// `shufflekit run`.
pub(crate) fn run(args: &RunArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let graph = crate::load(&args.spec)?;
    let input_shape = single_input(&graph)?;

    let weights = crate::weights_for(
        &graph,
        args.weights.as_deref(),
        args.seed,
        Some("initialising weights"),
    )?;

    let (input, source) = read_input(args, &input_shape)?;
    let batch = input.batch();

    let start = Instant::now();
    let output = args
        .engine
        .evaluate(&graph, &weights, &input, args.isa)
        .with_context(|| format!("evaluating `{}` on {source}", graph.name))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;

    let output_node = graph.output().map(|o| graph.node(o));
    let is_probability = output_node.is_some_and(|n| matches!(n.op, Op::Softmax));
    let item_shape = output.item_shape().to_vec();
    let is_vector = item_shape.iter().skip(1).all(|&d| d == 1);
    writeln!(
        out,
        "{}: {source}, output {item_shape:?} per image",
        graph.name
    )?;
    for b in 0..batch {
        let Some(scores) = output.item_data(b) else {
            break;
        };
        if !is_vector {
            if b == 0 {
                writeln!(out, "the output is not a vector of class scores: no top-k")?;
            }
            break;
        }
        let probs = if is_probability {
            scores.iter().map(|&v| f64::from(v)).collect()
        } else {
            softmax(scores)
        };
        let k = args.top.min(scores.len());
        writeln!(out, "image {b}: top {k} of {} classes", scores.len())?;
        // Rank by the scores themselves: probabilities can underflow to 0.
        let ranking: Vec<f64> = scores.iter().map(|&v| f64::from(v)).collect();
        for (rank, (class, score)) in top_k(&ranking, k).into_iter().enumerate() {
            writeln!(
                out,
                "  {:>2}. class {class:>5}  p={:.6}  {}={score:.4}",
                rank + 1,
                probs[class],
                if is_probability { "output" } else { "logit" }
            )?;
        }
    }
    writeln!(
        out,
        "time: {ms:.1} ms ({} engine, batch {batch})",
        args.engine.name()
    )?;
    if let Some(path) = &args.output {
        input::write_npy(path, &output)?;
        eprintln!(
            "wrote the output {:?} to {}",
            output.shape(),
            path.display()
        );
    }
    Ok(())
}

/// `shufflekit init`.
pub(crate) fn init(args: &InitArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let graph = crate::load(&args.spec)?;
    let weights = Weights::try_init(
        &graph,
        &InitOptions {
            seed: args.seed,
            randomize_batch_norm: args.randomize_batch_norm,
        },
    )?;
    weights.save(&args.output)?;
    writeln!(
        out,
        "wrote {} tensors ({} values) for `{}` to {}",
        weights.len(),
        weights.numel(),
        graph.name,
        args.output.display()
    )?;
    Ok(())
}

fn single_input(graph: &Graph) -> anyhow::Result<Shape> {
    match graph.input_nodes()[..] {
        [id] => Ok(graph.node(id).shape.clone()),
        ref ids => bail!(
            "`{}` has {} input layers; run needs exactly one",
            graph.name,
            ids.len()
        ),
    }
}

/// The input tensor and a description of where it came from.
fn read_input(args: &RunArgs, shape: &Shape) -> anyhow::Result<(Tensor, String)> {
    let Some(path) = &args.input else {
        if args.mean.is_some() || args.std.is_some() {
            bail!("--mean and --std apply to image inputs only");
        }
        let batch = args.batch.unwrap_or(1) as usize;
        if !args.random_input {
            eprintln!(
                "note: no --input given: using a random normal input (seed {}, batch {batch})",
                args.seed
            );
        }
        let t = input::random_input(shape, batch, args.seed)
            .with_context(|| format!("--batch {batch}: the random input"))?;
        return Ok((
            t,
            format!("random input (seed {}, batch {batch})", args.seed),
        ));
    };
    if is_npy(path)? {
        if args.mean.is_some() || args.std.is_some() {
            bail!("--mean and --std apply to image inputs only, not to .npy arrays");
        }
        let t = input::read_npy(path)?;
        // An array of exactly the network's input shape is one image.
        let t = if t.shape() == shape.dims() {
            let mut batched = vec![1];
            batched.extend_from_slice(shape.dims());
            t.reshape(batched)?
        } else {
            t
        };
        let got = t.shape();
        if got.len() != shape.rank() + 1 || got[1..] != *shape.dims() {
            bail!(
                "input `{}` has shape {got:?}, but the network takes [N, {}] (or one image {shape})",
                path.display(),
                shape.dims().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        Ok((t, format!("`{}`", path.display())))
    } else {
        let defaults = ImageOptions::default();
        let options = ImageOptions {
            mean: args.mean.clone().unwrap_or(defaults.mean),
            std: args.std.clone().unwrap_or(defaults.std),
        };
        let t = input::load_image(path, shape, &options)?;
        Ok((t, format!("image `{}`", path.display())))
    }
}

/// True for files named `.npy` or starting with the .npy magic.
fn is_npy(path: &Path) -> anyhow::Result<bool> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        return Ok(true);
    }
    let mut head = [0u8; 6];
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let n = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
    Ok(n == 6 && &head == b"\x93NUMPY")
}

/// Softmax in `f64`, max-subtracted.
fn softmax(scores: &[f32]) -> Vec<f64> {
    let max = scores
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|&v| (f64::from(v) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` largest values with their indices, largest first; ties keep the
/// lower index first.
fn top_k(values: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut indexed: Vec<(usize, f64)> = values.iter().copied().enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    indexed.truncate(k);
    indexed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        let v = [0.1, 0.4, 0.4, 0.05, 0.05];
        assert_eq!(top_k(&v, 3), vec![(1, 0.4), (2, 0.4), (0, 0.1)]);
        assert_eq!(top_k(&v, 0), vec![]);
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12 && p[2] < 1e-300);
    }
}
