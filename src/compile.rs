//! `shufflekit compile`: runs the compiler passes and prints the graph (and,
//! once the JIT lands, the generated code).

use std::io::Write;

use anyhow::Context;
use clap::ValueEnum;
use shufflekit_ir::text::{self, DumpOptions};
use shufflekit_passes::{memory, run, select_pipeline, Module, RunOptions};

use crate::SpecArgs;

/// What `compile --emit` prints.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The graph as the spec describes it, before any pass.
    Ir,
    /// The graph after the pass pipeline.
    OptIr,
    /// Cranelift IR of every kernel.
    Clif,
    /// Machine code of every kernel.
    Asm,
}

/// Options of `shufflekit compile`.
#[derive(clap::Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Emit::OptIr)]
    pub emit: Emit,
    /// Run only these passes, in this order (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub passes: Option<Vec<String>>,
    /// Leave these passes out of the pipeline (repeatable, or comma-separated).
    #[arg(long = "skip-pass", value_delimiter = ',')]
    pub skip_pass: Vec<String>,
    /// Say what each pass did and why anything was left, e.g. a shuffle that
    /// could not be folded (on stderr).
    #[arg(long)]
    pub explain: bool,
    /// Print each pass's time and the memory plan (on stderr).
    #[arg(long)]
    pub time_passes: bool,
    /// Print the graph after every pass (on stderr).
    #[arg(long)]
    pub print_after_all: bool,
    /// Add each node's spec location to the printed graph.
    #[arg(long)]
    pub locations: bool,
    #[command(flatten)]
    pub aot: crate::aot::AotArgs,
}

/// Runs `shufflekit compile`.
pub fn compile(args: &CompileArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let graph = crate::load(&args.spec)?;
    if args.aot.output.is_some() {
        return crate::aot::write_object(&graph, &args.aot, out);
    }
    let dump = DumpOptions {
        locations: args.locations,
    };
    if args.emit == Emit::Ir {
        write!(out, "{}", text::dump(&graph, dump))?;
        return Ok(());
    }
    let pipeline = select_pipeline(args.passes.as_deref(), &args.skip_pass)?;
    let mut module = Module::graph_only(graph);
    let options = RunOptions {
        dump: args.print_after_all,
    };
    let report = run(&mut module, &pipeline, &options).context("running the passes")?;
    let mut err = std::io::stderr().lock();
    if args.print_after_all {
        for p in &report.passes {
            writeln!(err, "== after pass {}", p.name)?;
            write!(err, "{}", p.after.as_deref().unwrap_or_default())?;
        }
    }
    if args.explain || args.time_passes {
        for p in &report.passes {
            if args.time_passes {
                writeln!(
                    err,
                    "pass {:<22} {:>8.3} ms  {} changes",
                    p.name,
                    p.time.as_secs_f64() * 1e3,
                    p.log.changes
                )?;
            } else {
                writeln!(err, "pass {}: {} changes", p.name, p.log.changes)?;
            }
            if args.explain {
                for note in &p.log.notes {
                    writeln!(err, "  {note}")?;
                }
            }
        }
        if args.time_passes {
            let plan = memory::plan(&module.graph);
            writeln!(
                err,
                "memory plan: arena {} bytes, lower bound {} bytes, sum of activations {} bytes (per image)",
                plan.arena_bytes, plan.lower_bound_bytes, plan.total_bytes
            )?;
        }
    }
    match args.emit {
        Emit::OptIr => write!(out, "{}", text::dump(&module.graph, dump))?,
        Emit::Clif | Emit::Asm => {
            let what = if args.emit == Emit::Clif {
                shufflekit_jit::Emit::Clif
            } else {
                shufflekit_jit::Emit::Asm
            };
            let options = shufflekit_jit::CompileOptions::default();
            let code = shufflekit_jit::emit(&module.graph, what, &options)?;
            write!(out, "{code}")?;
        }
        Emit::Ir => unreachable!("handled above"),
    }
    Ok(())
}
