//! The runtime: a compiled model with its packed weights, its arena and
//! its threads.

use std::time::{Duration, Instant};

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use shufflekit_ir::cost::LayerKind;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::Weights;
use shufflekit_ir::Graph;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::buffer::Buffer;
use crate::codegen::{self, Kernels};
use crate::isa::Isa;
use crate::kernel_symbols::KernelLink;
use crate::pack;
use crate::plan::{self, Plan, Storage};
use crate::target::Target;
use crate::team::Team;
use crate::JitError;

/// How to compile and run a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Threads that split each layer's work (1 runs on the calling thread).
    pub threads: usize,
    /// The most memory, in bytes, the model may use for its arena (per
    /// batch) plus its packed weights. A graph that needs more for one
    /// image is refused before any code is generated; a batch that needs
    /// more is refused by [`Model::run`].
    pub memory_limit: usize,
    /// The vector tier of the kernels: `None` picks the widest the host
    /// runs; forcing one the host lacks is [`JitError::IsaUnsupported`].
    pub isa: Option<Isa>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            threads: 1,
            memory_limit: 4 << 30,
            isa: None,
        }
    }
}

/// What compiling took.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileStats {
    /// Wall time of planning, lowering, code generation, linking and
    /// weight packing.
    pub compile_time: Duration,
    /// Layers with a kernel (`flatten` and the input have none).
    pub layers: usize,
    /// Distinct functions generated (identical layers share one).
    pub functions: usize,
    /// Bytes of machine code.
    pub code_bytes: usize,
    /// Whether the kernels use fused multiply-add.
    pub fma: bool,
    /// The vector tier of the kernels.
    pub isa: Isa,
    /// Arena bytes per image.
    pub arena_bytes: usize,
}

/// One layer of a compiled model, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// The node's name.
    pub name: String,
    /// The op kind (`conv2d`...).
    pub op: &'static str,
    /// Coarse layer kind.
    pub kind: LayerKind,
    /// Multiply-adds per image.
    pub macs: u64,
}

type KernelFn = unsafe extern "C" fn(*const *mut f32, i64, i64);

/// A graph compiled to native code, with packed weights, ready to run on
/// any batch size.
pub struct Model {
    graph: Graph,
    plan: Plan,
    module: Option<JITModule>,
    functions: Vec<KernelFn>,
    /// Every layer's packed parameters in one aligned block.
    packed: Buffer,
    /// Where each layer's parameters start in `packed` (a multiple of
    /// [`IMAGE_ALIGN`] floats).
    packed_at: Vec<usize>,
    arena: Buffer,
    options: CompileOptions,
    /// The other threads (none for one thread).
    team: Option<Team>,
    stats: CompileStats,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("graph", &self.graph.name)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        self.functions.clear();
        if let Some(module) = self.module.take() {
            // SAFETY: the function pointers were cleared above and are not
            // reachable anywhere else.
            unsafe { module.free_memory() };
        }
    }
}

/// Floats (64 bytes) each image's arena and each layer's packed
/// parameters are aligned to, so that the plan's 64-byte aligned offsets
/// are 64-byte aligned in memory.
const IMAGE_ALIGN: usize = 16;

/// The tier `options` ask for, checked against the host.
pub(crate) fn isa_checked(options: &CompileOptions) -> Result<Isa, JitError> {
    match options.isa {
        None => Ok(Isa::host()),
        Some(isa) if isa.supported() => Ok(isa),
        Some(isa) => Err(JitError::IsaUnsupported {
            isa,
            host: Isa::host_tiers()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Plans the graph for tier `isa` and checks its memory needs against the
/// limit.
pub(crate) fn plan_checked(
    graph: &Graph,
    options: &CompileOptions,
    isa: Isa,
) -> Result<Plan, JitError> {
    let plan = plan::plan(graph, isa)?;
    let mut weights = 0usize;
    for layer in &plan.layers {
        weights = weights.saturating_add(pack::packed_len(layer).saturating_mul(4));
    }
    let needed = plan.arena_len.saturating_mul(4).saturating_add(weights);
    if needed > options.memory_limit {
        return Err(JitError::MemoryLimit {
            needed,
            limit: options.memory_limit,
            batch: 1,
        });
    }
    Ok(plan)
}

impl Model {
    /// Compiles a graph for the host and packs its weights.
    pub fn compile(
        graph: &Graph,
        weights: &Weights,
        options: &CompileOptions,
    ) -> Result<Model, JitError> {
        let start = Instant::now();
        if options.threads == 0 {
            return Err(JitError::Options {
                option: "threads",
                value: "0".into(),
                problem: "must be at least 1",
            });
        }
        weights.check(graph)?;
        let isa = isa_checked(options)?;
        let plan = plan_checked(graph, options, isa)?;
        let target = Target::host()?;
        let kernels = Kernels::of(&plan);
        let code = codegen::compile(
            kernels.functions(&target, isa, KernelLink::Address),
            &target,
            false,
        )?;
        if code.iter().any(|c| !c.imports.is_empty()) {
            return Err(JitError::Internal(
                "a JIT function imports a kernel by symbol".into(),
            ));
        }

        let builder = JITBuilder::with_isa(
            target.isa.clone(),
            cranelift_module::default_libcall_names(),
        );
        let mut module = JITModule::new(builder);
        let sig = crate::lower::signature(target.isa.default_call_conv());
        let mut ids = Vec::with_capacity(code.len());
        for (i, c) in code.iter().enumerate() {
            let id = module.declare_function(&format!("kernel{i}"), Linkage::Local, &sig)?;
            module.define_function_bytes(id, c.alignment, &c.bytes, &[])?;
            ids.push(id);
        }
        module.finalize_definitions()?;
        let functions = kernels
            .of_layer
            .iter()
            .map(|&k| {
                let ptr = module.get_finalized_function(ids[k]);
                // SAFETY: the code was generated for this signature
                // (`lower::signature`, the platform's C convention).
                unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) }
            })
            .collect();
        let team = if options.threads > 1 {
            Some(Team::new(options.threads).map_err(JitError::Threads)?)
        } else {
            None
        };
        let mut model = Model {
            graph: graph.clone(),
            stats: CompileStats {
                compile_time: Duration::ZERO,
                layers: plan.layers.len(),
                functions: code.len(),
                code_bytes: code.iter().map(|c| c.bytes.len()).sum(),
                fma: target.features.fma,
                isa,
                arena_bytes: plan.arena_len.saturating_mul(4),
            },
            plan,
            module: Some(module),
            functions,
            packed: Buffer::empty(),
            packed_at: Vec::new(),
            arena: Buffer::empty(),
            options: options.clone(),
            team,
        };
        model.set_weights(weights)?;
        model.stats.compile_time = start.elapsed();
        Ok(model)
    }

    /// Packs new weights for the same graph (no recompilation).
    pub fn set_weights(&mut self, weights: &Weights) -> Result<(), JitError> {
        weights.check(&self.graph)?;
        let packed = self
            .plan
            .layers
            .iter()
            .map(|layer| pack::pack_checked(&self.graph, weights, layer))
            .collect::<Result<Vec<_>, _>>()?;
        let mut at = Vec::with_capacity(packed.len());
        let mut len = 0usize;
        for p in &packed {
            at.push(len);
            len = len
                .checked_add(p.len())
                .and_then(|n| n.checked_next_multiple_of(IMAGE_ALIGN))
                .ok_or_else(|| JitError::OutOfMemory(usize::MAX))?;
        }
        let mut blob =
            Buffer::zeroed(len).ok_or_else(|| JitError::OutOfMemory(len.saturating_mul(4)))?;
        for (p, &start) in packed.iter().zip(&at) {
            blob.as_mut_slice()[start..start + p.len()].copy_from_slice(p);
        }
        self.packed = blob;
        self.packed_at = at;
        Ok(())
    }

    /// What compiling took.
    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// The compiled layers, in execution order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        self.plan
            .layers
            .iter()
            .map(|l| LayerInfo {
                name: l.name.clone(),
                op: self.graph.node(l.node).op.kind(),
                kind: l.kind,
                macs: l.macs,
            })
            .collect()
    }

    /// Runs the model on `input` (`[N, ...]` of the graph's input shape)
    /// and returns the output node's value (`[N, ...]`).
    pub fn run(&mut self, input: &Tensor) -> Result<Tensor, JitError> {
        self.execute(input, None)
    }

    /// Like [`Model::run`], and also returns the wall time of each layer
    /// (in the order of [`Model::layers`]).
    pub fn run_profiled(&mut self, input: &Tensor) -> Result<(Tensor, Vec<Duration>), JitError> {
        let mut times = Vec::with_capacity(self.plan.layers.len());
        let out = self.execute(input, Some(&mut times))?;
        Ok((out, times))
    }

    fn execute(
        &mut self,
        input: &Tensor,
        times: Option<&mut Vec<Duration>>,
    ) -> Result<Tensor, JitError> {
        let plan = &self.plan;
        let expected = &plan.input_shape;
        let got = input.shape();
        if got.len() != expected.rank() + 1 || got[1..] != *expected.dims() {
            return Err(JitError::InputShape {
                expected: expected.dims().to_vec(),
                got: got.to_vec(),
            });
        }
        let batch = got[0];
        if batch == 0 {
            return Err(JitError::EmptyBatch);
        }
        let image_len =
            plan.arena_len
                .checked_next_multiple_of(IMAGE_ALIGN)
                .ok_or(JitError::MemoryLimit {
                    needed: usize::MAX,
                    limit: self.options.memory_limit,
                    batch,
                })?;
        let arena_total = batch
            .checked_mul(image_len)
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or(JitError::MemoryLimit {
                needed: usize::MAX,
                limit: self.options.memory_limit,
                batch,
            })?;
        let needed = arena_total
            .saturating_mul(4)
            .saturating_add(self.packed.len().saturating_mul(4));
        if needed > self.options.memory_limit {
            return Err(JitError::MemoryLimit {
                needed,
                limit: self.options.memory_limit,
                batch,
            });
        }
        if self.arena.len() < arena_total {
            // The old arena goes first, so the two are never held at once.
            self.arena = Buffer::empty();
            self.arena = Buffer::zeroed(arena_total)
                .ok_or_else(|| JitError::OutOfMemory(arena_total.saturating_mul(4)))?;
        }
        if self.packed_at.len() != plan.layers.len() {
            return Err(JitError::Internal("weights are not packed".into()));
        }
        let input_data = input.data();
        let arena_len = image_len;
        let arena_ptr = self.arena.as_mut_ptr();
        let arena_size = self.arena.len();
        // The address of value `v` for image `b`, after checking that the
        // whole value lies inside its buffer.
        let value_ptr = |v: usize, b: usize| -> Result<*mut f32, JitError> {
            let value = &plan.values[v];
            let (start, end, size, base) = match value.storage {
                Storage::Input => (
                    b * value.len,
                    (b + 1) * value.len,
                    input_data.len(),
                    input_data.as_ptr() as *mut f32,
                ),
                Storage::Arena(off) => (
                    b * arena_len + off,
                    b * arena_len + off + value.len,
                    arena_size,
                    arena_ptr,
                ),
            };
            if end > size || start > end {
                return Err(JitError::Internal(format!(
                    "value {v} is outside its buffer"
                )));
            }
            // SAFETY: `start <= end <= size` of the buffer `base` points to.
            Ok(unsafe { base.add(start) })
        };
        // Every call's buffers, per layer and image, checked once.
        let mut tables: Vec<Vec<*mut f32>> = Vec::with_capacity(plan.layers.len());
        for (li, layer) in plan.layers.iter().enumerate() {
            // SAFETY: `packed_at[li]` is inside the block (`set_weights`).
            let packed = unsafe { self.packed.as_ptr().add(self.packed_at[li]) } as *mut f32;
            let mut ptrs = Vec::with_capacity(batch * (layer.inputs.len() + 2));
            for b in 0..batch {
                ptrs.push(value_ptr(layer.output, b)?);
                for &i in &layer.inputs {
                    ptrs.push(value_ptr(i, b)?);
                }
                ptrs.push(packed);
            }
            tables.push(ptrs);
        }
        let calls: Vec<Call> = plan
            .layers
            .iter()
            .zip(&tables)
            .zip(&self.functions)
            .map(|((layer, ptrs), &func)| Call {
                func,
                ptrs,
                stride: layer.inputs.len() + 2,
                units: layer.units,
            })
            .collect();
        let threads = self.options.threads;
        match (self.team.as_mut(), times) {
            // Whole images per thread, claimed one at a time (a thread the
            // machine slows down takes fewer): no synchronisation between
            // layers, and each image's activations stay in that core's
            // caches.
            (team, None) if batch > 1 && batch >= threads => {
                let next = AtomicUsize::new(0);
                let images = |_: usize| loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batch {
                        break;
                    }
                    for call in &calls {
                        call.run(b * call.units, (b + 1) * call.units);
                    }
                };
                match team {
                    Some(team) => team.run(&images),
                    None => images(0),
                }
            }
            // Layer by layer, each split across the threads by units
            // (see `team`).
            (team, times) => {
                let items: Vec<usize> = calls.iter().map(|c| batch * c.units).collect();
                crate::team::run_layers(
                    team,
                    &items,
                    &|layer, lo, hi| calls[layer].run(lo, hi),
                    times,
                );
            }
        }
        let out = &plan.values[plan.output];
        let mut data = Vec::new();
        data.try_reserve_exact(batch.saturating_mul(out.len))
            .map_err(|_| JitError::OutOfMemory(batch.saturating_mul(out.len).saturating_mul(4)))?;
        for b in 0..batch {
            let p = value_ptr(plan.output, b)?;
            // SAFETY: `value_ptr` checked that the value lies in its buffer.
            data.extend_from_slice(unsafe { std::slice::from_raw_parts(p, out.len) });
        }
        let mut shape = vec![batch];
        shape.extend_from_slice(plan.output_shape.dims());
        Tensor::new(shape, data).map_err(|e| JitError::Internal(e.to_string()))
    }
}

/// One layer's calls: work items `image * units + unit`.
struct Call<'a> {
    func: KernelFn,
    /// Per image: output, inputs, packed parameters.
    ptrs: &'a [*mut f32],
    stride: usize,
    units: usize,
}

// SAFETY: the pointers are only dereferenced by the kernel, and calls on
// different units write disjoint parts of the output (each unit owns its
// output channels or tiles); inputs and parameters are only read.
unsafe impl Sync for Call<'_> {}

impl Call<'_> {
    /// Runs work items `lo..hi`.
    fn run(&self, lo: usize, hi: usize) {
        let mut item = lo;
        while item < hi {
            let b = item / self.units;
            let u0 = item % self.units;
            let u1 = (hi - b * self.units).min(self.units);
            let ptrs = &self.ptrs[b * self.stride..(b + 1) * self.stride];
            // SAFETY: `ptrs` holds the buffers of image `b`, each checked to
            // be as long as the kernel's shapes say; `u0 < u1 <= units`.
            unsafe { (self.func)(ptrs.as_ptr(), u0 as i64, u1 as i64) };
            item = b * self.units + u1;
        }
    }
}
