//! The `shufflekit` command line.

mod aot;
mod bench;
mod compile;
mod diag;
mod limits;
mod onnx_cmd;
mod run;
mod search_cmd;
mod slurm;
mod train_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shufflekit_ir::cost::{self, Convention, Cost};
use shufflekit_ir::text::{self, DumpOptions};
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::Graph;
use shufflekit_search::error::SearchError;
use shufflekit_spec::SpecError;

#[derive(Parser)]
#[command(
    name = "shufflekit",
    version,
    about = "Design, count, compile and search ShuffleNet-family networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command that reads a spec takes.
#[derive(clap::Args)]
struct SpecArgs {
    /// The spec file (YAML).
    spec: PathBuf,
    /// Override a parameter: `--set groups=8` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a spec, expand it and check every shape.
    Check {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the graph in its text form.
        #[arg(long)]
        print_ir: bool,
        /// With --print-ir: add each node's spec location.
        #[arg(long)]
        locations: bool,
    },
    /// Count multiply-adds, parameters and activations, per layer and in total.
    Flops {
        #[command(flatten)]
        spec: SpecArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Counting convention of the `ops` column.
        #[arg(long, value_enum, default_value_t = ConventionArg::Macs)]
        convention: ConventionArg,
        /// Batch sizes to report the peak activation memory for
        /// (repeatable, or comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        batch: Vec<usize>,
    },
    /// List a spec's parameters with their default values.
    Params {
        /// The spec file (YAML).
        spec: PathBuf,
    },
    /// Evaluate a network on an input and print its top classes.
    Run(run::RunArgs),
    /// Write freshly initialised weights (safetensors).
    Init(run::InitArgs),
    /// Run the compiler passes and print the graph or the generated code.
    Compile(compile::CompileArgs),
    /// Compile a network and time it: latency, throughput, per layer kind.
    Bench(bench::BenchArgs),
    /// Search a spec's parameters under a budget and write a report.
    Search(Box<search_cmd::SearchArgs>),
    /// Merge results files (shards) and render a report.
    Report(search_cmd::ReportArgs),
    /// Render docs/reproduction.md (the paper's Tables 2 and 3 replayed)
    /// from the results files of `scripts/reproduce-paper`.
    ReportReproduction(search_cmd::ReproductionArgs),
    /// Train a spec on a dataset (the proxy task) and write its weights.
    Train(Box<train_cmd::TrainArgs>),
    /// Write a spec's network with its weights as an ONNX model.
    Export(onnx_cmd::ExportArgs),
    /// Turn an ONNX model into a spec and a weights file.
    Import(onnx_cmd::ImportArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConventionArg {
    /// Multiply-adds of conv and linear layers (the ShuffleNet paper's FLOPs).
    Macs,
    /// 2 FLOPs per multiply-add.
    Flops,
    /// Multiply-adds plus elementwise ops, as mmcv counts.
    MacsAll,
}

impl From<ConventionArg> for Convention {
    fn from(c: ConventionArg) -> Self {
        match c {
            ConventionArg::Macs => Convention::Macs,
            ConventionArg::Flops => Convention::Flops,
            ConventionArg::MacsAll => Convention::MacsAll,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(located) = located_error(&e) {
                eprint!("{}", diag::render(located));
            } else {
                eprintln!("error: {}", diag::one_line(&e));
            }
            ExitCode::FAILURE
        }
    }
}

/// The located error behind `e`, if it has one: a spec error, also one a
/// search hit reading its spec, or a search space file's.
fn located_error(e: &anyhow::Error) -> Option<&SpecError> {
    e.downcast_ref::<SpecError>()
        .or_else(|| match e.downcast_ref::<SearchError>() {
            Some(SearchError::SpaceFile { source } | SearchError::Spec(source)) => Some(source),
            _ => None,
        })
}

fn load(args: &SpecArgs) -> anyhow::Result<Graph> {
    let overrides = args
        .set
        .iter()
        .map(|s| shufflekit_spec::parse_override(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(shufflekit_spec::load(&args.spec, &overrides)?)
}

/// The weights a command runs with: those of `file`, checked against the
/// graph, or else seeded ones, said on stderr when `note` is given
/// (`note: no --weights given: {note} from seed {seed}`).
fn weights_for(
    graph: &Graph,
    file: Option<&std::path::Path>,
    seed: u64,
    note: Option<&str>,
) -> anyhow::Result<Weights> {
    if let Some(path) = file {
        let weights = Weights::load(path)?;
        weights
            .check(graph)
            .with_context(|| format!("weights file `{}`", path.display()))?;
        return Ok(weights);
    }
    if let Some(note) = note {
        eprintln!("note: no --weights given: {note} from seed {seed}");
    }
    let init = InitOptions {
        seed,
        randomize_batch_norm: false,
    };
    Ok(Weights::try_init(graph, &init)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Check {
            spec,
            print_ir,
            locations,
        } => {
            let graph = load(&spec)?;
            if print_ir {
                write!(out, "{}", text::dump(&graph, DumpOptions { locations }))?;
            } else {
                let cost = cost::count(&graph, Convention::Macs);
                writeln!(
                    out,
                    "{}: ok, {} layers, input {:?}, output {}",
                    spec.spec.display(),
                    graph.len(),
                    cost.input_shape,
                    graph
                        .output()
                        .map(|o| graph.node(o).shape.to_string())
                        .unwrap_or_default()
                )?;
            }
        }
        Command::Flops {
            spec,
            format,
            convention,
            batch,
        } => {
            let graph = load(&spec)?;
            let cost = cost::count(&graph, convention.into());
            let memory = memory_report(graph, &batch)?;
            match format {
                Format::Json => {
                    let mut value = serde_json::to_value(&cost)?;
                    value["memory"] = serde_json::to_value(&memory)?;
                    serde_json::to_writer_pretty(&mut out, &value)?;
                    writeln!(out)?;
                }
                Format::Csv => write_csv(&mut out, &cost)?,
                Format::Table => {
                    write_table(&mut out, &cost)?;
                    write_memory(&mut out, &memory)?;
                }
            }
        }
        Command::Run(args) => run::run(&args, &mut out)?,
        Command::Init(args) => run::init(&args, &mut out)?,
        Command::Compile(args) => compile::compile(&args, &mut out)?,
        Command::Bench(args) => bench::bench(&args, &mut out)?,
        Command::Search(args) => search_cmd::search(&args, &mut out)?,
        Command::Report(args) => search_cmd::report(&args, &mut out)?,
        Command::ReportReproduction(args) => search_cmd::report_reproduction(&args, &mut out)?,
        Command::Train(args) => train_cmd::train(&args, &mut out)?,
        Command::Export(args) => onnx_cmd::export(&args, &mut out)?,
        Command::Import(args) => onnx_cmd::import(&args, &mut out)?,
        Command::Params { spec: path } => {
            let parsed = shufflekit_spec::Spec::parse_file(&path)?;
            for (name, value) in parsed.param_defaults()? {
                writeln!(out, "{name} = {value}")?;
            }
        }
    }
    out.flush().context("writing the output")?;
    Ok(())
}

/// Peak activation memory of the optimised graph.
#[derive(serde::Serialize)]
struct MemoryReport {
    /// The arena for one image after the pass pipeline and memory planning.
    arena_bytes_per_image: usize,
    /// The largest total of simultaneously live tensors (no plan does better).
    lower_bound_bytes_per_image: usize,
    /// Sum of all activations of the optimised graph (no reuse).
    sum_of_activations_bytes_per_image: usize,
    /// Peak activation memory (the arena) per batch size.
    peak_activation_bytes: Vec<BatchMemory>,
}

#[derive(serde::Serialize)]
struct BatchMemory {
    batch: usize,
    bytes: u64,
}

fn memory_report(graph: Graph, batches: &[usize]) -> anyhow::Result<MemoryReport> {
    let mut module = shufflekit_passes::Module::graph_only(graph);
    shufflekit_passes::optimize(&mut module)?;
    let plan = shufflekit_passes::memory::plan(&module.graph);
    let peak = batches
        .iter()
        .map(|&b| {
            anyhow::ensure!(b > 0, "--batch must be positive");
            let bytes = (plan.arena_bytes as u64).checked_mul(b as u64).ok_or_else(|| {
                anyhow::anyhow!(
                    "--batch {b}: the arena would be {} bytes per image times {b}, more than 2^64 bytes",
                    thousands(plan.arena_bytes as u64)
                )
            })?;
            Ok(BatchMemory { batch: b, bytes })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(MemoryReport {
        arena_bytes_per_image: plan.arena_bytes,
        lower_bound_bytes_per_image: plan.lower_bound_bytes,
        sum_of_activations_bytes_per_image: plan.total_bytes,
        peak_activation_bytes: peak,
    })
}

fn write_memory(out: &mut impl Write, m: &MemoryReport) -> anyhow::Result<()> {
    for b in &m.peak_activation_bytes {
        writeln!(
            out,
            "peak activation memory  {} bytes ({:.2} MiB) at batch {}  (arena after passes; lower bound {} bytes, sum of activations {} bytes per image)",
            thousands(b.bytes),
            b.bytes as f64 / (1024.0 * 1024.0),
            b.batch,
            thousands(m.lower_bound_bytes_per_image as u64),
            thousands(m.sum_of_activations_bytes_per_image as u64)
        )?;
    }
    Ok(())
}

/// Formats an integer with thousands separators: 137460672 -> 137,460,672.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn write_table(out: &mut impl Write, cost: &Cost) -> anyhow::Result<()> {
    let name_width = cost
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(5);
    writeln!(
        out,
        "{:<name_width$}  {:<15}  {:>16}  {:>13}  {:>11}  {:>10}",
        "layer", "op", "output", "macs", "params", "activations"
    )?;
    for l in &cost.layers {
        let shape = l
            .output_shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        writeln!(
            out,
            "{:<name_width$}  {:<15}  {:>16}  {:>13}  {:>11}  {:>10}",
            l.name,
            l.op,
            shape,
            thousands(l.macs),
            thousands(l.params),
            thousands(l.activations)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "model        {}", cost.model)?;
    writeln!(out, "input        {:?}", cost.input_shape)?;
    writeln!(
        out,
        "macs         {}  (conv {} + linear {}), {:.2} M",
        thousands(cost.macs),
        thousands(cost.conv_macs),
        thousands(cost.linear_macs),
        cost.macs as f64 / 1e6
    )?;
    if cost.convention != Convention::Macs {
        writeln!(
            out,
            "ops          {}, {:.2} M",
            thousands(cost.ops),
            cost.ops as f64 / 1e6
        )?;
    }
    writeln!(
        out,
        "params       {}  ({:.3} M; buffers {})",
        thousands(cost.params),
        cost.params as f64 / 1e6,
        thousands(cost.buffers)
    )?;
    writeln!(
        out,
        "activations  {} elements per image (sum of layer outputs)",
        thousands(cost.activations)
    )?;
    let by_kind: Vec<String> = cost
        .macs_by_kind()
        .into_iter()
        .filter(|(_, m)| *m > 0)
        .map(|(k, m)| {
            format!(
                "{} {:.1}%",
                serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                100.0 * m as f64 / cost.macs.max(1) as f64
            )
        })
        .collect();
    writeln!(out, "macs by kind {}", by_kind.join(", "))?;
    writeln!(
        out,
        "convention   {}: {}",
        cost.convention.name(),
        cost.convention_description
    )?;
    Ok(())
}

fn write_csv(out: &mut impl Write, cost: &Cost) -> anyhow::Result<()> {
    writeln!(
        out,
        "# model={} convention={}",
        cost.model,
        cost.convention.name()
    )?;
    writeln!(out, "name,op,kind,output_shape,macs,ops,params,activations")?;
    for l in &cost.layers {
        let shape = l
            .output_shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let kind = serde_json::to_value(l.kind)?;
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            l.name,
            l.op,
            kind.as_str().unwrap_or(""),
            shape,
            l.macs,
            l.ops,
            l.params,
            l.activations
        )?;
    }
    writeln!(
        out,
        "total,,,,{},{},{},{}",
        cost.macs, cost.ops, cost.params, cost.activations
    )?;
    Ok(())
}
