//! The peer benchmark: the same models, weights and input through
//! shufflekit's JIT, ONNX Runtime and tract, on the same machine, with the
//! same thread counts. Run it with `bench/peer.sh`, which builds the tract
//! runner (its own workspace, `bench/tract-runner/`) and this program in
//! release mode first.
//!
//! For each model it exports the spec's graph with seeded weights (random
//! batch-norm statistics) to ONNX, draws one input per batch size, and for
//! each thread count times our engine in-process (the compiler passes, then
//! the Cranelift JIT, as `shufflekit run` does) and the two peers as
//! long-lived subprocesses (`bench/ort_runner.py --serve`, `tract-runner
//! --serve`), each warmed up first. The engines are timed in interleaved
//! rounds (ours, ONNX Runtime, tract, ours, ...; `--runs` runs each per
//! round), so that a slow spell of the machine hits every engine alike; an
//! engine's figure is the median of its round medians. Every engine's
//! output is checked against ONNX Runtime's (1e-4 relative) before its time
//! counts. The table, the CPU and its vector flags are printed in Markdown
//! on stdout; progress goes to stderr.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use clap::Parser;
use shufflekit_ir::input::{random_input, read_npy, write_npy};
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_jit::{CompileOptions, Model};

/// The largest accepted `max |engine - ONNX Runtime| / max |ONNX Runtime|`.
const TOLERANCE: f32 = 1e-4;

/// A model of the comparison: label, spec file, parameter overrides.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The models of the comparison.
const MODELS: &[Case] = &[
    (
        "ShuffleNet v1 1x g=3",
        "shufflenet_v1.yaml",
        &[("groups", "3")],
    ),
    (
        "ShuffleNet v1 1x g=8",
        "shufflenet_v1.yaml",
        &[("groups", "8")],
    ),
    (
        "ShuffleNet v1 0.5x g=3",
        "shufflenet_v1.yaml",
        &[("groups", "3"), ("width", "0.5")],
    ),
    ("ShuffleNet v2 1x", "shufflenet_v2.yaml", &[]),
    ("MobileNet v1 1.0", "mobilenet_v1.yaml", &[]),
];

#[derive(Parser)]
#[command(about = "shufflekit's JIT vs ONNX Runtime vs tract on the same models")]
struct Args {
    /// Interleaved rounds per configuration (the median of the rounds'
    /// medians is reported).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Timed runs per engine in each round.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Thread counts (each engine gets the same).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Only the models whose label contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The tract runner binary.
    #[arg(long, default_value = "bench/tract-runner/target/release/tract-runner")]
    tract: PathBuf,
    /// The Python interpreter with onnxruntime and numpy (`bench/peer.sh`
    /// passes the environment it makes from `bench/requirements.txt`).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where models, inputs and outputs are written.
    #[arg(long, default_value = "target/peer-bench")]
    work_dir: PathBuf,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// One line of the table.
struct Row {
    model: &'static str,
    batch: usize,
    threads: usize,
    ours: f64,
    ort: f64,
    tract: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.runs > 0 && args.rounds > 0,
        "--runs and --rounds must be positive"
    );
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating `{}`", args.work_dir.display()))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let have_tract = args.tract.exists();
    if !have_tract {
        eprintln!(
            "warning: `{}` does not exist (build it with `cargo build --release --manifest-path bench/tract-runner/Cargo.toml`); tract is left out",
            args.tract.display()
        );
    }
    let mut rows = Vec::new();
    for (index, &(label, file, overrides)) in MODELS.iter().enumerate() {
        if !args.only.is_empty() && !args.only.iter().any(|o| label.contains(o.as_str())) {
            continue;
        }
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let graph = shufflekit_spec::load(&root.join("specs").join(file), &overrides)?;
        let weights = Weights::init(
            &graph,
            &InitOptions {
                seed: args.seed,
                randomize_batch_norm: true,
            },
        );
        let model_path = args.work_dir.join(format!("model{index}.onnx"));
        std::fs::write(&model_path, shufflekit_onnx::export(&graph, &weights)?)?;
        let input_shape = graph.node(graph.input_nodes()[0]).shape.clone();
        let mut module = shufflekit_passes::Module::with_weights(graph, weights);
        shufflekit_passes::optimize(&mut module)?;
        let (graph, weights) = (
            module.graph,
            module.weights.context("the passes keep the weights")?,
        );
        for &threads in &args.threads {
            let options = CompileOptions {
                threads,
                ..CompileOptions::default()
            };
            let mut jit = Model::compile(&graph, &weights, &options)?;
            for &batch in &args.batch {
                eprintln!("{label}: batch {batch}, {threads} thread(s)");
                let x = random_input(&input_shape, batch, args.seed)?;
                let x_path = args.work_dir.join(format!("x{index}_b{batch}.npy"));
                write_npy(&x_path, &x)?;

                let ort_out = args.work_dir.join("ort.npy");
                let mut ort = Peer::start(
                    Command::new(&args.python)
                        .arg("-I")
                        .arg(root.join("bench/ort_runner.py"))
                        .args([&model_path, &x_path, &ort_out]),
                    &args,
                    threads,
                )
                .context("ONNX Runtime")?;
                let tract_out = args.work_dir.join("tract.npy");
                let mut tract = if have_tract {
                    Some(
                        Peer::start(
                            Command::new(&args.tract).args([&model_path, &x_path, &tract_out]),
                            &args,
                            threads,
                        )
                        .context("tract")?,
                    )
                } else {
                    None
                };
                for _ in 0..args.warmup {
                    jit.run(&x)?;
                }
                let (mut ours, mut ort_rounds, mut tract_rounds) =
                    (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..args.rounds {
                    ours.push(median(&mut time_ours(&mut jit, &x, args.runs)?));
                    ort_rounds.push(median(&mut ort.time(args.runs).context("ONNX Runtime")?));
                    if let Some(t) = tract.as_mut() {
                        tract_rounds.push(median(&mut t.time(args.runs).context("tract")?));
                    }
                }
                ort.save().context("ONNX Runtime")?;
                let expected = read_npy(&ort_out)?;
                check("shufflekit", label, &jit.run(&x)?, &expected)?;
                if let Some(t) = tract.as_mut() {
                    t.save().context("tract")?;
                    check("tract", label, &read_npy(&tract_out)?, &expected)?;
                }
                let (ours, ort) = (median(&mut ours), median(&mut ort_rounds));
                let tract = tract.map(|_| median(&mut tract_rounds));
                rows.push(Row {
                    model: label,
                    batch,
                    threads,
                    ours,
                    ort,
                    tract,
                });
            }
        }
    }
    print_table(&rows, &args);
    Ok(())
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    if times.len().is_multiple_of(2) {
        (times[mid - 1] + times[mid]) / 2.0
    } else {
        times[mid]
    }
}

/// Times `runs` runs of our engine, in ms.
fn time_ours(jit: &mut Model, x: &Tensor, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(jit.run(x)?);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// A peer's runner in `--serve` mode: loaded and warmed up once, then timed
/// a round at a time.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Peer {
    fn start(command: &mut Command, args: &Args, threads: usize) -> anyhow::Result<Peer> {
        let name = format!("{command:?}");
        let mut child = command
            .args(["--threads", &threads.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {name}"))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut peer = Peer {
            child,
            stdin,
            stdout,
            name,
        };
        let line = peer.line()?;
        ensure!(line == "ready", "{} said `{line}`, not `ready`", peer.name);
        Ok(peer)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("{} ended ({status}) without answering", self.name);
        }
        Ok(line.trim().to_string())
    }

    fn ask(&mut self, command: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.line()
    }

    /// `runs` timed runs, in ms.
    fn time(&mut self, runs: usize) -> anyhow::Result<Vec<f64>> {
        let line = self.ask(&format!("time {runs}"))?;
        let list = line
            .strip_prefix("times_ms ")
            .with_context(|| format!("{} printed `{line}`, not `times_ms ...`", self.name))?;
        list.split(',')
            .map(|t| {
                t.parse::<f64>()
                    .with_context(|| format!("{}: time `{t}`", self.name))
            })
            .collect()
    }

    /// Writes the last output to the runner's output file.
    fn save(&mut self) -> anyhow::Result<()> {
        let line = self.ask("save")?;
        ensure!(line == "saved", "{} said `{line}`, not `saved`", self.name);
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// The CPU's model name and its vector flags, from `/proc/cpuinfo`.
fn cpu() -> (String, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let all = field("flags");
    let flags: Vec<&str> = all
        .split_whitespace()
        .filter(|f| {
            f.starts_with("avx") || f.starts_with("sse") || *f == "fma" || f.contains("vnni")
        })
        .collect();
    (field("model name"), flags.join(" "))
}

fn check(engine: &str, model: &str, got: &Tensor, expected: &Tensor) -> anyhow::Result<()> {
    ensure!(
        got.shape() == expected.shape(),
        "{model}: {engine}'s output has shape {:?}, ONNX Runtime's {:?}",
        got.shape(),
        expected.shape()
    );
    let rel = got.max_abs_diff(expected).unwrap_or(f32::INFINITY) / expected.max_abs();
    eprintln!("  {engine} vs ONNX Runtime: max relative difference {rel:.2e}");
    ensure!(
        rel < TOLERANCE,
        "{model}: {engine}'s output differs from ONNX Runtime's by {rel:e} (relative)"
    );
    Ok(())
}

fn print_table(rows: &[Row], args: &Args) {
    let (model, flags) = cpu();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("CPU: {model}, {cores} cores; vector flags: {flags}");
    println!();
    println!(
        "Latency in ms: the median of {} interleaved rounds' medians ({} runs per engine per round, after {} warm-up runs); ratio = shufflekit / engine (below 1: shufflekit is faster).",
        args.rounds, args.runs, args.warmup
    );
    println!();
    println!(
        "| model | batch | threads | shufflekit (JIT) | ONNX Runtime | ours / ORT | tract | ours / tract |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (tract, ratio) = match r.tract {
            Some(t) => (format!("{t:.2}"), format!("{:.2}", r.ours / t)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.model,
            r.batch,
            r.threads,
            r.ours,
            r.ort,
            r.ours / r.ort,
            tract,
            ratio
        );
    }
}
