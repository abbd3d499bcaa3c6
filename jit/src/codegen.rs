//! Compiling the lowered functions to machine code, in parallel, with one
//! function per distinct kernel (identical layers share their code). The
//! result is position-independent code whose only relocations are calls
//! to full-width kernels imported by symbol (objects; the JIT calls them
//! by address and has none), which the JIT links into executable memory
//! and the object writer places in a section.

use std::collections::HashMap;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::Context;
use rayon::prelude::*;

use crate::isa::Isa;
use crate::kernel_symbols::{KernelLink, WideKernel};
use crate::plan::{Kernel, Plan};
use crate::target::Target;
use crate::{lower, JitError};

/// The distinct kernels of a plan, and for each layer the index of its kernel.
pub(crate) struct Kernels {
    /// `(kernel, number of inputs)`, in first-use order.
    pub distinct: Vec<(Kernel, usize)>,
    /// Per layer, an index into `distinct`.
    pub of_layer: Vec<usize>,
}

impl Kernels {
    pub fn of(plan: &Plan) -> Kernels {
        let mut index: HashMap<(Kernel, usize), usize> = HashMap::new();
        let mut distinct = Vec::new();
        let mut of_layer = Vec::with_capacity(plan.layers.len());
        for layer in &plan.layers {
            let key = (layer.kernel.clone(), layer.inputs.len());
            let i = *index.entry(key.clone()).or_insert_with(|| {
                distinct.push(key);
                distinct.len() - 1
            });
            of_layer.push(i);
        }
        Kernels { distinct, of_layer }
    }

    /// The Cranelift IR of every distinct kernel, with the full-width
    /// kernels of tier `isa` where it has them, reached as `link` says.
    pub fn functions(&self, target: &Target, isa: Isa, link: KernelLink) -> Vec<Function> {
        let frontend = target.isa.frontend_config();
        self.distinct
            .par_iter()
            .enumerate()
            .map(|(i, (k, n))| lower::lower(k, *n, target.features, isa, link, frontend, i as u32))
            .collect()
    }
}

/// Machine code of one function.
pub(crate) struct Code {
    pub bytes: Vec<u8>,
    pub alignment: u64,
    /// The disassembly, when asked for.
    pub asm: Option<String>,
    /// Stack bytes of one call: the frame, the saved frame pointer and the
    /// return address.
    pub stack_bytes: usize,
    /// The calls to imported kernels (empty with [`KernelLink::Address`]).
    pub imports: Vec<KernelReloc>,
}

/// A relocation of a call to an imported full-width kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelReloc {
    /// Offset in the function's code.
    pub offset: u32,
    pub kind: cranelift_codegen::binemit::Reloc,
    pub kernel: WideKernel,
    pub addend: i64,
}

/// Compiles functions to machine code in parallel.
pub(crate) fn compile(
    functions: Vec<Function>,
    target: &Target,
    disasm: bool,
) -> Result<Vec<Code>, JitError> {
    functions
        .into_par_iter()
        .map(|func| {
            let name = func.name.to_string();
            let mut ctx = Context::for_function(func);
            ctx.set_disasm(disasm);
            ctx.compile(&*target.isa, &mut ControlPlane::default())
                .map_err(|e| JitError::Codegen {
                    function: name.clone(),
                    source: Box::new(e.inner),
                })?;
            let compiled = ctx
                .compiled_code()
                .ok_or_else(|| JitError::Internal(format!("{name}: no compiled code")))?;
            let imports = compiled
                .buffer
                .relocs()
                .iter()
                .map(|r| {
                    let kernel = match &r.target {
                        cranelift_codegen::FinalizedRelocTarget::ExternalName(n) => {
                            WideKernel::of_name(&ctx.func, n)
                        }
                        cranelift_codegen::FinalizedRelocTarget::Func(_) => None,
                    };
                    kernel
                        .map(|kernel| KernelReloc {
                            offset: r.offset,
                            kind: r.kind,
                            kernel,
                            addend: r.addend,
                        })
                        .ok_or_else(|| {
                            JitError::Internal(format!(
                                "{name}: unexpected relocation {:?}",
                                r.target
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Code {
                bytes: compiled.code_buffer().to_vec(),
                alignment: u64::from(compiled.buffer.alignment),
                asm: compiled.vcode.clone(),
                stack_bytes: frame_bytes(&compiled.buffer),
                imports,
            })
        })
        .collect()
}

/// Stack bytes of a compiled function per call: its frame below the frame
/// pointer (spills, stack slots, saved registers) plus the saved frame
/// pointer and return address.
pub(crate) fn frame_bytes(
    buffer: &cranelift_codegen::MachBufferFinalized<cranelift_codegen::Final>,
) -> usize {
    buffer
        .frame_layout()
        .map_or(0, |f| f.frame_to_fp_offset as usize)
        + 16
}
