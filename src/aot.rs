//! `shufflekit compile --target T [--cpu LEVEL] -o model.o`: an object
//! file and its C header (see `shufflekit_jit::compile_object`), and at a
//! wide CPU level the kernel library to link with it (`model.kernels.a`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use shufflekit_ir::Graph;

/// Options of the object output of `shufflekit compile`.
#[derive(clap::Args)]
pub struct AotArgs {
    /// Write a relocatable object file (and its header, `model.h` beside it,
    /// named after the object) instead of printing.
    #[arg(short = 'o', long = "output", value_name = "FILE.o")]
    pub output: Option<PathBuf>,
    /// The object's target: host, x86_64-unknown-linux-gnu or
    /// aarch64-unknown-linux-gnu.
    #[arg(long, value_name = "TRIPLE", requires = "output")]
    pub target: Option<String>,
    /// The CPU level the object may use: x86-64 (the portable baseline,
    /// the default), x86-64-v3 (AVX2+FMA kernels), x86-64-v4 (AVX-512
    /// kernels) or host (what this CPU has). At v3 and v4 the pointwise
    /// layers call kernels in `FILE.kernels.a`, written beside the object:
    /// link both (`cc main.c model.o model.kernels.a`).
    #[arg(long, value_name = "LEVEL", requires = "output", value_parser = parse_cpu)]
    pub cpu: Option<shufflekit_jit::Cpu>,
    /// Weights to embed (safetensors). Without it, weights are initialised
    /// from --seed.
    #[arg(long, value_name = "FILE", requires = "output")]
    pub weights: Option<PathBuf>,
    /// Seed of the initialised weights (without --weights).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// The C symbol prefix (default: the network's name).
    #[arg(long, value_name = "IDENT", requires = "output")]
    pub name: Option<String>,
    /// Do not embed the weights: the object exports only
    /// `<name>_run_with_weights` and the packed weights are written to
    /// `FILE.weights` beside the object.
    #[arg(long, requires = "output")]
    pub external_weights: bool,
}

/// Writes the object, header (and weights) for `graph`.
pub fn write_object(graph: &Graph, args: &AotArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(path) = &args.output else {
        anyhow::bail!("no output file");
    };
    let weights = crate::weights_for(graph, args.weights.as_deref(), args.seed, None)?;
    let options = shufflekit_jit::ObjectOptions {
        target: args.target.clone().unwrap_or_else(|| "host".into()),
        name: args.name.clone(),
        embed_weights: !args.external_weights,
        cpu: args.cpu,
    };
    let (graph, weights) = shufflekit_jit::optimize(graph, &weights)?;
    let obj = shufflekit_jit::compile_object(&graph, &weights, &options).with_context(|| {
        format!(
            "compiling `{}` for {}{}",
            graph.name,
            options.target,
            options.cpu.map_or(String::new(), |c| format!(" --cpu {c}"))
        )
    })?;
    let header = path.with_extension("h");
    write(path, &obj.object)?;
    write(&header, obj.header.as_bytes())?;
    writeln!(
        out,
        "wrote {} ({} bytes, {}) and {}: {}_run, arena {} bytes per image{}",
        path.display(),
        obj.object.len(),
        options.target,
        header.display(),
        obj.name,
        obj.arena_bytes,
        if obj.fma { ", fma" } else { "" }
    )?;
    if let Some(library) = obj.kernel_library {
        let lpath = path.with_extension("kernels.a");
        write(&lpath, library)?;
        writeln!(
            out,
            "wrote {} ({} bytes, the kernel library; the object calls {}); link both: cc main.c {} {}",
            lpath.display(),
            library.len(),
            if obj.imports.is_empty() {
                "none of its kernels".to_string()
            } else {
                obj.imports.join(", ")
            },
            path.display(),
            lpath.display()
        )?;
    }
    if args.external_weights {
        let wpath = path.with_extension("weights");
        write(&wpath, &obj.weights)?;
        writeln!(
            out,
            "wrote {} ({} bytes)",
            wpath.display(),
            obj.weights.len()
        )?;
    }
    Ok(())
}

fn parse_cpu(s: &str) -> Result<shufflekit_jit::Cpu, shufflekit_jit::UnknownCpu> {
    s.parse()
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write `{}`", path.display()))
}
