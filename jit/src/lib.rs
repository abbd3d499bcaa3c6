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
//! arguments; they read the same packed weight layout, with the same fused
//! epilogue (bias, residual, activation, channel order), and do their row
//! tails with masked loads and stores. The plan is tier-aware
//! (`pointwise_tiling.rs`): at AVX-512 and AVX2 it picks the register
//! tile (4 channels x 4 vectors of 16, 3 x 3 of 8), rows in whole register
//! blocks, and for many input channels K blocks summed into the output.
//! `wide_window.rs` does the same for window convolutions with a
//! horizontal stride of 1 or 2 and at most 8 kernel columns (depthwise,
//! with the taps in registers for 3x3 and 5x5; the stem; any grouped
//! conv); their padding comes from load masks that keep every lane inside
//! the input row. Pools, the other layers and AArch64 keep the 128-bit
//! code; object files get the kernels at `--cpu x86-64-v3`/`x86-64-v4`
//! ([`ObjectOptions::cpu`]), importing them by symbol from a static
//! library written beside them.
//! The tier is the widest the host has unless [`CompileOptions::isa`]
//! forces one (the tests run every tier the host has).
//!
//! **Why `std::arch` rather than a run-time assembler**, measured by the
//! spike `examples/iced_spike.rs` (route (a) of issue 14, not a product
//! path): it assembles the AVX-512 tile with `iced-x86`'s `code_asm`,
//! specialised on its constants (input channels, channels per tile,
//! vectors of 16 pixels per block, plane, row length, ReLU), reading the
//! same packed weights, places the bytes with cranelift-jit's
//! `define_function_bytes`, checks that its outputs equal
//! `wide::pointwise_avx512`'s bit for bit, and times both interleaved
//! (iced, std::arch, iced, ...) in 41 rounds of about 3 ms, 1 thread:
//! `cargo run --release -p shufflekit-jit --example iced_spike -- 41`,
//! 16:04 UTC on 2026-12-02, AMD EPYC with `avx512f avx512bw avx512vl
//! avx512_vnni avx512_bf16 ...`, load average 16.5 (other helpers'
//! builds and a training run; the spike got 12-30% of a core). G MAC/s,
//! best round of 41 (a slot that ran undisturbed), three runs:
//!
//! | layer (rows of `row_w` pixels) | iced-x86 | std::arch |
//! |---|---:|---:|
//! | v1 g=3 stage 2, 240 -> 60, 28x28 (48) | 55.6-56.1 | 54.4-54.9 |
//! | v1 g=3 stage 2, 60 -> 240, 28x28 (200) | 51.9-52.4 | 51.5-51.6 |
//! | v1 g=3 stage 3, 480 -> 120, 14x14 (24) | 38.5-38.6 | 38.6-38.7 |
//! | v1 g=3 stage 3, 120 -> 480, 14x14 (72) | 46.6-46.8 | 48.6-49.2 |
//! | MobileNet 256 -> 256, 14x14 (16) | 32.7-38.7 | 52.7-53.0 |
//!
//! The medians of the rounds (9-19 G MAC/s for both, per-round ratios
//! 0.59-1.36) measure the preemption of that load, not the kernels; the
//! spike prints them beside the best rounds. On ShuffleNet's shapes the
//! two are within 5%; on the 1-vector rows of the 256-channel layer the
//! assembled tile is 27-38% slower (not chased: LLVM schedules the same
//! four accumulator chains better), and specialising on constants shows
//! no gain on any shape (a loop bound costs a compare).
//!
//! How they read: the generator is about 125 lines (register assignment
//! by hand: accumulators zmm0..24, the block's inputs after them,
//! broadcasts in the rest; every displacement checked to fit an `i32`;
//! loop counters, the unroll by two and the tail mask written out) plus
//! 75 lines to place the bytes, against 70 lines of `tile512`/`block512`
//! in which LLVM allocates the registers and schedules, with no new
//! dependency. Each further kernel kind (depthwise rows, the stem, the FC
//! layer) would again be hand-allocated assembly. Route (a)'s one real
//! advantage is objects: `define_function_bytes` works for the JIT and
//! for `cranelift-object` alike (the bytes go into `.text` beside the
//! layer functions, nothing else to link), whereas the `std::arch`
//! kernels ship as a static library beside `model.o` (`kernel_library.rs`,
//! built by `build.rs`). Equal speed where it matters, code
//! that reads as Rust: `std::arch` stays.
//!
//! The tiers, measured on the pointwise tile alone
//! (`bench/isa-pointwise.sh 5`: `shufflekit bench`
//! of one-layer specs, 1 thread, the tiers interleaved in 5 rounds,
//! medians of the bench's pointwise G MAC/s; a 2-vCPU Xeon with AVX-512,
//! load average about 7):
//!
//! | layer | sse (f32x4) | avx2 | avx512 |
//! |---|---:|---:|---:|
//! | 240 -> 240, g=3, 28x28 | 26.2 | 48.3 | 66.5 |
//! | 960 -> 240 -> 960, g=3, 7x7 | 27.2 | 32.0 | 27.5 |
//!
//! The 7x7 planes did not gain with the 128-bit plan's tiles and rows.
//! With the tier-aware plan (ShuffleNet v1 1x g=3, `bench --isa avx512
//! --threads 1`, the old and new binaries interleaved in 5 rounds on a
//! 2-vCPU AMD EPYC, load average about 14): pointwise 37.1 -> 47.9 G MAC/s
//! (57% -> 74% of the 64.5 G/s 512-bit peak); MobileNet v1 pointwise
//! 58.1 -> 11.0 ms at avx512 and 42.2 -> 26.0 ms at avx2; one-layer
//! `bench/isa/pw7.yaml` 25.0 -> 43.4 G MAC/s and `pw28.yaml` 55.5 ->
//! 55.8 (`bench/ab.sh`, 3 rounds, `--iters 200`).
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

mod buffer;
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
mod pointwise_tiling;
mod target;
mod team;
#[cfg(target_arch = "x86_64")]
mod wide;
mod wide_tiles;
#[cfg(target_arch = "x86_64")]
mod wide_window;

/// What `examples/iced_spike.rs` (the run-time assembler spike of
/// route (a)) compares against: not an API.
#[doc(hidden)]
#[cfg(target_arch = "x86_64")]
pub mod spike {
    pub use crate::wide::{shufflekit_pointwise_avx512 as pointwise_avx512, Shape};
}

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
    let isa = model::isa_checked(options)?;
    let plan = model::plan_checked(graph, options, isa)?;
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
