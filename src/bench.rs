//! `shufflekit bench`: compile a spec's network and time it, overall and
//! per layer kind; and the JIT engine of `shufflekit run`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use shufflekit_ir::cost::{self, Convention, LayerKind};
use shufflekit_ir::eval;
use shufflekit_ir::input::random_input;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::Weights;
use shufflekit_ir::Graph;
use shufflekit_jit::{CompileOptions, Isa, Model};

use crate::run::Engine;
use crate::SpecArgs;

/// Options of `shufflekit bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// The engine to time.
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    engine: Engine,
    /// Images per run.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Threads that split each layer (JIT engine).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::limits::MAX_THREADS))]
    threads: u32,
    /// Timed runs (after 3 warm-up runs).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=crate::limits::MAX_ITERS))]
    iters: u32,
    /// Weights (safetensors); without it they are initialised from seed 0.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// JIT engine: the vector tier (sse, avx2, avx512; default the widest
    /// the CPU has).
    #[arg(long, value_name = "TIER", value_parser = parse_isa)]
    isa: Option<Isa>,
}

/// `--isa`: a tier name.
pub(crate) fn parse_isa(s: &str) -> Result<Isa, shufflekit_jit::UnknownIsa> {
    s.parse()
}

/// The JIT engine of `shufflekit run`: optimise, compile, run.
pub(crate) fn jit_evaluate(
    graph: &Graph,
    weights: &Weights,
    input: &Tensor,
    isa: Option<Isa>,
) -> anyhow::Result<Tensor> {
    let (graph, weights) = shufflekit_jit::optimize(graph, weights)?;
    let options = CompileOptions {
        isa,
        ..CompileOptions::default()
    };
    let mut model = Model::compile(&graph, &weights, &options)?;
    Ok(model.run(input)?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn kind_name(k: LayerKind) -> &'static str {
    match k {
        LayerKind::Conv => "conv/stem",
        LayerKind::Pointwise => "pointwise",
        LayerKind::Depthwise => "depthwise",
        LayerKind::Linear => "linear",
        LayerKind::Other => "other",
    }
}

/// The CPU model and its vector flags (from `/proc/cpuinfo` on Linux),
/// printed with every benchmark so figures can be compared across hosts.
fn cpu_line() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags: Vec<String> = field("flags")
        .or_else(|| field("Features"))
        .unwrap_or_default()
        .split_whitespace()
        .filter(|f| {
            ["sse4_2", "avx", "fma", "asimd", "neon"]
                .iter()
                .any(|p| f.starts_with(p))
        })
        .map(str::to_string)
        .collect();
    format!(
        "{model}; vector flags: {}; tiers: {}",
        flags.join(" "),
        Isa::host_tiers()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// `shufflekit bench`.
pub(crate) fn bench(args: &BenchArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let graph = crate::load(&args.spec)?;
    let weights = crate::weights_for(&graph, args.weights.as_deref(), 0, None)?;
    let inputs = graph.input_nodes();
    let [input_node] = inputs[..] else {
        anyhow::bail!(
            "`{}` has {} input layers; bench needs exactly one",
            graph.name,
            inputs.len()
        );
    };
    let batch = args.batch as usize;
    let input = random_input(&graph.node(input_node).shape, batch, 0)
        .with_context(|| format!("--batch {batch}: the random input"))?;
    let macs = cost::count(&graph, Convention::Macs).macs;
    let iters = args.iters as usize;
    writeln!(
        out,
        "model {} input {} batch {batch} engine {} threads {}",
        graph.name,
        graph.node(input_node).shape,
        args.engine.name(),
        args.threads
    )?;

    writeln!(out, "cpu: {}", cpu_line())?;

    let mut model = None;
    match args.engine {
        Engine::Reference => {}
        Engine::Jit => {
            let start = Instant::now();
            let (opt_graph, opt_weights) = shufflekit_jit::optimize(&graph, &weights)?;
            let passes = start.elapsed();
            let options = CompileOptions {
                threads: args.threads as usize,
                isa: args.isa,
                ..CompileOptions::default()
            };
            let m = Model::compile(&opt_graph, &opt_weights, &options)?;
            let s = m.stats();
            writeln!(
                out,
                "compile: {:.1} ms (passes {:.1} ms + code generation and weight packing {:.1} ms); {} layers, {} distinct functions, {} KiB of code, fma {}, isa {} ({} bits)",
                ms(passes + s.compile_time),
                ms(passes),
                ms(s.compile_time),
                s.layers,
                s.functions,
                s.code_bytes / 1024,
                if s.fma { "yes" } else { "no" },
                s.isa,
                s.isa.bits()
            )?;
            model = Some(m);
        }
    }

    let mut times = Vec::with_capacity(iters);
    let mut profile: Vec<Vec<Duration>> = Vec::new();
    if let Some(m) = model.as_mut() {
        for _ in 0..3 {
            m.run(&input)?;
        }
        for _ in 0..iters {
            let t = Instant::now();
            m.run(&input)?;
            times.push(t.elapsed());
        }
        for _ in 0..iters.clamp(5, 30) {
            profile.push(m.run_profiled(&input)?.1);
        }
    } else {
        eval::evaluate(&graph, &weights, &input)?;
        for _ in 0..iters {
            let t = Instant::now();
            eval::evaluate(&graph, &weights, &input)?;
            times.push(t.elapsed());
        }
    }
    times.sort();
    let median = percentile(&times, 0.5);
    let total_macs = macs as f64 * batch as f64;
    writeln!(
        out,
        "latency: median {:.3} ms, p10 {:.3} ms, p90 {:.3} ms ({iters} runs)",
        ms(median),
        ms(percentile(&times, 0.1)),
        ms(percentile(&times, 0.9))
    )?;
    writeln!(
        out,
        "throughput: {:.1} images/s, {:.2} G multiply-adds/s ({:.2} M multiply-adds per image)",
        batch as f64 / median.as_secs_f64(),
        total_macs / median.as_secs_f64() / 1e9,
        macs as f64 / 1e6
    )?;

    // The JIT's own multiply-add loop on as many threads, after the runs
    // (so it does not warm the caches or the clock for them).
    let peak = model
        .as_ref()
        .and_then(|m| shufflekit_jit::peak::measure_isa(args.threads as usize, m.stats().isa).ok())
        .map(|p| (p.gmacs, p.fma, p.isa));
    if let Some(m) = &model {
        // Per layer: the median of its profiled times; summed per kind.
        let layers = m.layers();
        let mut kinds: BTreeMap<LayerKind, (Duration, u64)> = BTreeMap::new();
        for (i, l) in layers.iter().enumerate() {
            let mut t: Vec<Duration> = profile.iter().filter_map(|p| p.get(i).copied()).collect();
            t.sort();
            let e = kinds.entry(l.kind).or_default();
            e.0 += t.get(t.len() / 2).copied().unwrap_or_default();
            e.1 += l.macs * batch as u64;
        }
        let sum: Duration = kinds.values().map(|v| v.0).sum();
        writeln!(
            out,
            "per layer kind (medians of {} profiled runs):",
            profile.len()
        )?;
        writeln!(
            out,
            "  {:<10} {:>9} {:>6} {:>10} {:>9}{}",
            "kind",
            "ms",
            "share",
            "M MACs",
            "G MAC/s",
            if peak.is_some() { "  of peak" } else { "" }
        )?;
        for (k, (t, m)) in &kinds {
            let rate = *m as f64 / t.as_secs_f64().max(1e-12) / 1e9;
            write!(
                out,
                "  {:<10} {:>9.3} {:>5.1}% {:>10.2} {:>9.2}",
                kind_name(*k),
                ms(*t),
                100.0 * t.as_secs_f64() / sum.as_secs_f64().max(1e-12),
                *m as f64 / 1e6,
                rate
            )?;
            match peak {
                Some((p, ..)) if *m > 0 => writeln!(out, "  {:>7.1}%", 100.0 * rate / p)?,
                _ => writeln!(out)?,
            }
        }
        if let Some((p, fma, isa)) = peak {
            writeln!(
                out,
                "peak measured: {p:.1} G multiply-adds/s on {} thread(s) ({:.1} GFLOP/s): a loop of independent {}-bit {}",
                args.threads,
                2.0 * p,
                isa.bits(),
                if fma { "FMAs" } else { "multiplies and adds (no FMA on this CPU)" }
            )?;
        }
    }
    Ok(())
}
