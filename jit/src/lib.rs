//! Cranelift code generation of shufflekit: compiles a graph (optimised or
//! not) into native code for the host and runs it.
//!
//! Every layer becomes a function specialised to its shapes: convolutions
//! are register-blocked `f32x4` kernels (output channels x pixels, fused
//! multiply-add where the host has it) with bias, residual add, activation
//! and the fused channel order in the epilogue; pools share the same
//! window machinery; the other ops are vectorised loops. Activations are
//! dense NCHW in one arena; weights are packed once into the kernels'
//! layout and passed by pointer, so new weights need no recompilation.
//!
//! **Vector tiers** ([`Isa`]). Cranelift 0.135 has only 128-bit vectors.
//! On x86-64 hosts with AVX2+FMA or AVX-512F, pointwise (1x1, stride 1,
//! unpadded) convolutions, the bulk of ShuffleNet's multiply-adds, run in
//! `std::arch` kernels (`wide.rs`, `#[target_feature]` functions) that
//! the layer's Cranelift function calls with its shapes as constant
//! arguments; they read the same packed weights and cover the same work
//! units, with the same fused epilogue (bias, residual, activation,
//! channel order), and do their row tails with masked loads and stores.
//! Every other layer and AArch64 keep the 128-bit code; object files get
//! the kernels at `--cpu x86-64-v3`/`x86-64-v4` ([`ObjectOptions::cpu`]),
//! importing them by symbol from a static library written beside them.
//! The tier is the widest the host has unless [`CompileOptions::isa`]
//! forces one (the tests run every tier the host has).
//!
//! Why `std::arch` rather than a run-time assembler (`iced-x86`'s
//! `code_asm`, with bytes placed by `define_function_bytes`): the kernels
//! read as ordinary Rust, LLVM allocates the 24 accumulators and schedules
//! them, there is no new dependency, and the shapes the assembler would
//! bake in (channels per group, pixels per row) are loop bounds that cost
//! little at run time. The assembler spike was not built in this step, so
//! the comparison is by reading, not by measurement. Measured on the
//! pointwise tile alone (`bench/isa-pointwise.sh 5`: `shufflekit bench`
//! of one-layer specs, 1 thread, the tiers interleaved in 5 rounds,
//! medians of the bench's pointwise G MAC/s; a 2-vCPU Xeon with AVX-512,
//! load average about 7):
//!
//! | layer | sse (f32x4) | avx2 | avx512 |
//! |---|---:|---:|---:|
//! | 240 -> 240, g=3, 28x28 | 26.2 | 48.3 | 66.5 |
//! | 960 -> 240 -> 960, g=3, 7x7 | 27.2 | 32.0 | 27.5 |
//!
//! The 7x7 planes do not gain: one tile of 4 channels reads the group's
//! 62 KB of inputs from L2 per 16 multiply-adds; wider channel tiles
//! (a plan change) are the next step.
//!
//! ```
//! use shufflekit_ir::{tensor::Tensor, weights::{InitOptions, Weights}};
//! use shufflekit_jit::{CompileOptions, Model};
//! let src = "
//! name: tiny
//! input: [3, 16, 16]
//! layers:
//!   - conv: {name: stem, out: 8, kernel: 3, stride: 2, padding: 1}
//!   - relu
//!   - global_avg_pool
//!   - flatten
//!   - linear: {out: 10}
//! ";
//! let graph = shufflekit_spec::load_str(src, "tiny.yaml", &[]).unwrap();
//! let weights = Weights::init(&graph, &InitOptions::default());
//! let mut model = Model::compile(&graph, &weights, &CompileOptions::default()).unwrap();
//! let input = Tensor::full(vec![2, 3, 16, 16], 0.5).unwrap();
//! let out = model.run(&input).unwrap();
//! assert_eq!(out.shape(), &[2, 10]);
//! let reference = shufflekit_ir::eval::evaluate(&graph, &weights, &input).unwrap();
//! assert!(out.max_abs_diff(&reference).unwrap() <= 1e-4 * reference.max_abs());
//! ```
#![deny(missing_docs)]

mod codegen;
mod cpu;
mod isa;
mod kernel_library;
mod kernel_symbols;
mod lower;
mod model;
mod object;
mod pack;
pub mod peak;
mod plan;
mod target;
mod team;
#[cfg(target_arch = "x86_64")]
mod wide;

pub use cpu::{Cpu, UnknownCpu};
pub use isa::{Isa, UnknownIsa};
pub use model::{CompileOptions, CompileStats, LayerInfo, Model};
pub use object::{compile_object, ObjectFile, ObjectOptions, OBJECT_TARGETS};
pub use target::TargetError;

use shufflekit_ir::verify::VerifyErrors;
use shufflekit_ir::weights::Weights;
use shufflekit_ir::Graph;

/// Runs the passes' default pipeline (batch norm folding, shuffle folding,
/// epilogue fusion) on a graph and its weights: the graph the JIT is fast
/// on. Returns the optimised graph and weights.
pub fn optimize(graph: &Graph, weights: &Weights) -> Result<(Graph, Weights), JitError> {
    let mut module = shufflekit_passes::Module::with_weights(graph.clone(), weights.clone());
    shufflekit_passes::optimize(&mut module)?;
    let weights = module
        .weights
        .ok_or_else(|| JitError::Internal("the passes dropped the weights".into()))?;
    Ok((module.graph, weights))
}

/// Why a graph could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// The verifier rejected the graph.
    #[error("the graph is invalid: {0}")]
    InvalidGraph(#[from] VerifyErrors),
    /// The weights do not fit the graph.
    #[error("the weights do not fit the graph")]
    Weights(#[from] shufflekit_ir::weights::WeightsError),
    /// The graph has no input node or several; a model takes one tensor.
    #[error("the graph has {0} input nodes; the JIT needs exactly one")]
    InputCount(usize),
    /// A tensor or parameter block is larger than the kernels can address.
    #[error("too large: `{layer}` needs more than {limit} bytes for its {what}")]
    TooLarge {
        /// The layer.
        layer: String,
        /// Which of its buffers (`output per image`, `packed weights`).
        what: &'static str,
        /// The largest buffer the kernels address, in bytes.
        limit: usize,
    },
    /// Running the graph would need more memory than the configured limit.
    #[error("the model needs {needed} bytes at batch {batch}, more than the memory limit of {limit} bytes")]
    MemoryLimit {
        /// Bytes needed (arena for the batch plus packed weights).
        needed: usize,
        /// The limit from [`CompileOptions::memory_limit`].
        limit: usize,
        /// The batch size the estimate is for.
        batch: usize,
    },
    /// The arena could not be allocated.
    #[error("out of memory allocating {0} bytes")]
    OutOfMemory(usize),
    /// The input tensor is not `[N, ...]` of the graph's input shape.
    #[error("input shape {got:?} does not match the network's input {expected:?} (with a batch dimension first)")]
    InputShape {
        /// The graph's input shape (without batch).
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
    /// The input has batch size 0.
    #[error("the input batch is empty")]
    EmptyBatch,
    /// An option is out of range (zero threads, an object name that is not
    /// a C identifier).
    #[error("invalid options: {option} = {value}: {problem}")]
    Options {
        /// The option.
        option: &'static str,
        /// Its value as given.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The worker threads of a multi-threaded model could not be started.
    #[error("cannot start threads: {0}")]
    Threads(#[source] std::io::Error),
    /// A vector tier was forced that the host cannot run.
    #[error("the host cannot run isa {isa} (it runs: {host})")]
    IsaUnsupported {
        /// The tier asked for.
        isa: Isa,
        /// The tiers the host runs.
        host: String,
    },
    /// The host (or the requested target) is not supported by Cranelift.
    #[error("code generation target: {0}")]
    Target(#[from] TargetError),
    /// Cranelift rejected the generated code of a function (a bug in the
    /// lowering; boxed: the error is large and rare).
    #[error("code generation failed: {function}: {source}")]
    Codegen {
        /// The kernel function.
        function: String,
        /// Cranelift's error.
        #[source]
        source: Box<cranelift_codegen::CodegenError>,
    },
    /// The object file could not be written out.
    #[error("writing the object file: {0}")]
    ObjectFile(#[source] cranelift_object::object::write::Error),
    /// Cranelift could not declare, define or link a function or data
    /// (boxed: the error is large and rare).
    #[error("linking the generated code")]
    Module(#[source] Box<cranelift_module::ModuleError>),
    /// The compiler passes failed.
    #[error("optimising the graph")]
    Passes(#[from] shufflekit_passes::PassError),
    /// An inconsistency the planner should have ruled out (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<cranelift_module::ModuleError> for JitError {
    fn from(e: cranelift_module::ModuleError) -> Self {
        JitError::Module(Box::new(e))
    }
}

/// What [`emit`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Cranelift IR of every distinct kernel function.
    Clif,
    /// The machine code of every distinct kernel, as Cranelift prints it.
    Asm,
}

/// The generated code of a graph as text, each function headed by the
/// layers that use it. Nothing is executed; weights are not needed.
pub fn emit(graph: &Graph, what: Emit, options: &CompileOptions) -> Result<String, JitError> {
    let plan = model::plan_checked(graph, options)?;
    let target = target::Target::host()?;
    let kernels = codegen::Kernels::of(&plan);
    let functions = kernels.functions(
        &target,
        model::isa_checked(options)?,
        kernel_symbols::KernelLink::Address,
    );
    let mut out = String::new();
    let texts: Vec<String> = match what {
        Emit::Clif => functions.iter().map(|f| f.display().to_string()).collect(),
        Emit::Asm => codegen::compile(functions, &target, true)?
            .into_iter()
            .map(|c| c.asm.unwrap_or_default())
            .collect(),
    };
    for (i, text) in texts.iter().enumerate() {
        let users: Vec<&str> = plan
            .layers
            .iter()
            .zip(&kernels.of_layer)
            .filter(|(_, &k)| k == i)
            .map(|(l, _)| l.name.as_str())
            .collect();
        out.push_str(&format!(
            "; kernel{i}: {:?}\n; layers: {}\n{text}\n",
            kernels.distinct[i].0,
            users.join(", ")
        ));
    }
    Ok(out)
}
