//! The `export` and `import` commands: ONNX out of a spec, and a spec with
//! weights out of an ONNX model.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::SpecArgs;

/// Options of `shufflekit export`.
#[derive(Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Weights (safetensors). Without it, weights are initialised from --seed.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Seed of the initialised weights (without --weights).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// The ONNX file to write.
    #[arg(short, long, value_name = "FILE.onnx")]
    output: PathBuf,
}

/// Options of `shufflekit import`.
#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The ONNX model to read.
    model: PathBuf,
    /// The directory to write `<name>.yaml` and `<name>.safetensors` into
    /// (created if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
}

/// `shufflekit export`.
pub(crate) fn export(args: &ExportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let graph = crate::load(&args.spec)?;
    let weights = crate::weights_for(
        &graph,
        args.weights.as_deref(),
        args.seed,
        Some("exporting weights initialised"),
    )?;
    let bytes = shufflekit_onnx::export(&graph, &weights)
        .with_context(|| format!("exporting `{}`", graph.name))?;
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("writing `{}`", args.output.display()))?;
    writeln!(
        out,
        "wrote {} ({} layers, {} tensors, {} bytes, ONNX opset {}, IR version {})",
        args.output.display(),
        graph.len(),
        weights.len(),
        bytes.len(),
        shufflekit_onnx::OPSET,
        shufflekit_onnx::IR_VERSION
    )?;
    Ok(())
}

/// `shufflekit import`.
pub(crate) fn import(args: &ImportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let imported = shufflekit_onnx::import_file(&args.model)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating `{}`", args.output.display()))?;
    let spec_path = args.output.join(format!("{}.yaml", imported.name));
    let weights_path = args.output.join(format!("{}.safetensors", imported.name));
    std::fs::write(&spec_path, &imported.spec)
        .with_context(|| format!("writing `{}`", spec_path.display()))?;
    imported.weights.save(&weights_path)?;
    let graph = shufflekit_spec::load(&spec_path, &[])?;
    writeln!(
        out,
        "wrote {} ({} layers) and {} ({} tensors)",
        spec_path.display(),
        graph.len(),
        weights_path.display(),
        imported.weights.len()
    )?;
    Ok(())
}
