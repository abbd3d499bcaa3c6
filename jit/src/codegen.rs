//! Compiling the lowered functions to machine code, in parallel, with one
//! function per distinct kernel (identical layers share their code). The
//! result is position-independent code without relocations, which the JIT
//! links into executable memory here and an object writer could place in
//! a section.

use std::collections::HashMap;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::Context;
use rayon::prelude::*;

use crate::isa::Isa;
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
    /// kernels of tier `isa` where it has them.
    pub fn functions(&self, target: &Target, isa: Isa) -> Vec<Function> {
        let frontend = target.isa.frontend_config();
        self.distinct
            .par_iter()
            .enumerate()
            .map(|(i, (k, n))| lower::lower(k, *n, target.features, isa, frontend, i as u32))
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
            let compiled = ctx
                .compile(&*target.isa, &mut ControlPlane::default())
                .map_err(|e| JitError::Codegen {
                    function: name.clone(),
                    source: Box::new(e.inner),
                })?;
            if !compiled.buffer.relocs().is_empty() {
                return Err(JitError::Internal(format!(
                    "{name}: unexpected relocations"
                )));
            }
            Ok(Code {
                bytes: compiled.code_buffer().to_vec(),
                alignment: u64::from(compiled.buffer.alignment),
                asm: compiled.vcode.clone(),
                stack_bytes: frame_bytes(&compiled.buffer),
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
