//! Ahead-of-time compilation: the same kernels as the JIT, linked into a
//! relocatable object file with cranelift-object instead of executable
//! memory, plus a C header.
//!
//! The object exports `<name>_run_with_weights(input, output, arena, batch,
//! weights)`, which runs every layer kernel in order over its full unit
//! range, one image after the other, single-threaded, then copies the
//! output value out of the arena. With embedded weights it also exports
//! `<name>_run(input, output, arena, batch)`, which passes the embedded
//! data object. Nothing in the object calls libc or allocates.
//!
//! At a wide CPU level ([`ObjectOptions::cpu`] x86-64-v3 or v4) the
//! pointwise layers call the full-width kernels by symbol (an undefined
//! `shufflekit_pointwise_*`, reached through the GOT), which the kernel
//! library ([`ObjectFile::kernel_library`], see `kernel_library.rs`)
//! defines; the portable levels need nothing besides the object.

use cranelift_codegen::ir::types::{F32, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, Linkage, Module, ModuleReloc, ModuleRelocTarget};
use cranelift_object::{ObjectBuilder, ObjectModule};
use shufflekit_ir::weights::Weights;
use shufflekit_ir::Graph;

use crate::codegen::{self, Kernels};
use crate::cpu::Cpu;
use crate::isa::Isa;
use crate::kernel_symbols::{KernelLink, WideKernel};
use crate::model::plan_checked;
use crate::plan::{Plan, Storage};
use crate::target::Target;
use crate::{pack, CompileOptions, JitError};

pub use crate::target::OBJECT_TARGETS;

/// Alignment (in floats) of each layer's packed parameters in the blob.
const PACK_ALIGN: usize = 16;

/// How to build an object file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOptions {
    /// `host`, `x86_64-unknown-linux-gnu` or `aarch64-unknown-linux-gnu`.
    pub target: String,
    /// The C identifier prefixing the exported symbols (default: the
    /// graph's name, sanitised).
    pub name: Option<String>,
    /// Embed the packed weights as a data object (else the caller passes
    /// them, see [`ObjectFile::weights`]).
    pub embed_weights: bool,
    /// The CPU level (`None`: the target's portable baseline). The x86-64
    /// levels fit only x86-64 targets; `host` only this machine's triple.
    pub cpu: Option<Cpu>,
}

impl Default for ObjectOptions {
    fn default() -> Self {
        ObjectOptions {
            target: "host".into(),
            name: None,
            embed_weights: true,
            cpu: None,
        }
    }
}

/// A compiled object with its header.
#[derive(Debug, Clone)]
pub struct ObjectFile {
    /// The relocatable object (ELF).
    pub object: Vec<u8>,
    /// The C header declaring the entry points and shapes.
    pub header: String,
    /// The packed weights blob, little-endian `f32` (what `_run` embeds,
    /// and what `_run_with_weights` expects).
    pub weights: Vec<u8>,
    /// The symbol prefix.
    pub name: String,
    /// Arena bytes the caller provides per image.
    pub arena_bytes: usize,
    /// Floats of input per image.
    pub input_len: usize,
    /// Floats of output per image.
    pub output_len: usize,
    /// Whether the kernels use fused multiply-add.
    pub fma: bool,
    /// The kernel tier the pointwise layers run.
    pub isa: Isa,
    /// The kernel symbols the object imports (empty at the portable
    /// levels).
    pub imports: Vec<&'static str>,
    /// The static library to link with the object, at a wide tier (write
    /// it beside the object; the header says how to link).
    pub kernel_library: Option<&'static [u8]>,
}

/// A C identifier from a graph name.
fn c_identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "model_");
    }
    s
}

/// Compiles a graph (usually optimised, see [`crate::optimize`]) and its
/// weights into an object file for `options.target`.
pub fn compile_object(
    graph: &Graph,
    weights: &Weights,
    options: &ObjectOptions,
) -> Result<ObjectFile, JitError> {
    let name = match &options.name {
        Some(n) => {
            if c_identifier(n) != *n {
                return Err(JitError::Options {
                    option: "name",
                    value: format!("`{n}`"),
                    problem:
                        "not a C identifier (letters, digits and `_`, not starting with a digit)",
                });
            }
            n.clone()
        }
        None => c_identifier(&graph.name),
    };
    let (target, isa) = Target::for_object(&options.target, options.cpu)?;
    weights.check(graph)?;
    let plan = plan_checked(graph, &CompileOptions::default(), isa)?;
    let kernels = Kernels::of(&plan);
    let code = codegen::compile(
        kernels.functions(&target, isa, KernelLink::Symbol),
        &target,
        false,
    )?;

    // The packed weights, each layer aligned.
    let mut offsets = Vec::with_capacity(plan.layers.len());
    let mut blob: Vec<f32> = Vec::new();
    for layer in &plan.layers {
        let p = pack::pack_checked(graph, weights, layer)?;
        offsets.push(blob.len());
        blob.extend_from_slice(&p);
        blob.resize(blob.len().next_multiple_of(PACK_ALIGN), 0.0);
    }
    let weight_bytes: Vec<u8> = blob
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();

    let builder = ObjectBuilder::new(
        target.isa.clone(),
        name.clone(),
        cranelift_module::default_libcall_names(),
    )?;
    let mut module = ObjectModule::new(builder);
    let call_conv = target.isa.default_call_conv();
    let frontend = target.isa.frontend_config();
    let kernel_sig = crate::lower::signature(call_conv);
    // The full-width kernels the layer functions call, imported once each.
    let mut imported: Vec<(WideKernel, cranelift_module::FuncId)> = Vec::new();
    for c in &code {
        for r in &c.imports {
            if !imported.iter().any(|&(k, _)| k == r.kernel) {
                let id = module.declare_function(
                    r.kernel.symbol(),
                    Linkage::Import,
                    &wide_signature(call_conv),
                )?;
                imported.push((r.kernel, id));
            }
        }
    }
    let mut kernel_ids = Vec::with_capacity(code.len());
    for (i, c) in code.iter().enumerate() {
        let id =
            module.declare_function(&format!("{name}_kernel{i}"), Linkage::Local, &kernel_sig)?;
        let relocs: Vec<ModuleReloc> = c
            .imports
            .iter()
            .map(|r| {
                let (_, callee) = imported
                    .iter()
                    .find(|&&(k, _)| k == r.kernel)
                    .copied()
                    .ok_or_else(|| JitError::Internal("an import was not declared".into()))?;
                Ok(ModuleReloc {
                    offset: r.offset,
                    kind: r.kind,
                    name: ModuleRelocTarget::from(callee),
                    addend: r.addend,
                })
            })
            .collect::<Result<_, JitError>>()?;
        module.define_function_bytes(id, c.alignment, &c.bytes, &relocs)?;
        kernel_ids.push(id);
    }

    // `<name>_run_with_weights`.
    let mut run_w_sig = Signature::new(call_conv);
    for _ in 0..5 {
        run_w_sig.params.push(AbiParam::new(I64));
    }
    let run_w = module.declare_function(
        &format!("{name}_run_with_weights"),
        Linkage::Export,
        &run_w_sig,
    )?;
    let mut ctx = Context::new();
    ctx.func.signature = run_w_sig.clone();
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let refs: Vec<_> = kernel_ids
            .iter()
            .map(|&id| module.declare_func_in_func(id, b.func))
            .collect();
        build_entry(&mut b, &plan, &kernels, &refs, &offsets);
        b.finalize(frontend);
    }
    module.define_function(run_w, &mut ctx)?;
    // The deepest call: `_run`, `_run_with_weights`, then one kernel.
    let driver_bytes = ctx
        .compiled_code()
        .map_or(0, |c| codegen::frame_bytes(&c.buffer));
    let library_stack = if isa == Isa::Sse {
        0
    } else {
        crate::kernel_library::KERNELS_STACK_BYTES
    };
    let stack_bytes =
        2 * driver_bytes + code.iter().map(|c| c.stack_bytes).max().unwrap_or(0) + library_stack;
    module.clear_context(&mut ctx);

    if options.embed_weights {
        let data = module.declare_data(&format!("{name}_weights"), Linkage::Local, false, false)?;
        let mut desc = DataDescription::new();
        // An empty blob still needs an address.
        let mut bytes = weight_bytes.clone();
        if bytes.is_empty() {
            bytes.resize(PACK_ALIGN * 4, 0);
        }
        desc.define(bytes.into_boxed_slice());
        desc.set_align(64);
        module.define_data(data, &desc)?;

        let mut run_sig = Signature::new(call_conv);
        for _ in 0..4 {
            run_sig.params.push(AbiParam::new(I64));
        }
        let run = module.declare_function(&format!("{name}_run"), Linkage::Export, &run_sig)?;
        ctx.func.signature = run_sig;
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let callee = module.declare_func_in_func(run_w, b.func);
            let gv = module.declare_data_in_func(data, b.func);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let mut args = b.block_params(entry).to_vec();
            args.push(b.ins().symbol_value(I64, gv));
            b.ins().call(callee, &args);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(frontend);
        }
        module.define_function(run, &mut ctx)?;
        module.clear_context(&mut ctx);
    }

    let object = module.finish().emit().map_err(JitError::ObjectFile)?;
    let input_len = plan.input_shape.dims().iter().product();
    let output_len = plan.values[plan.output].len;
    let arena_bytes = plan.arena_len * 4;
    let kernel_library = (isa != Isa::Sse).then_some(crate::kernel_library::KERNELS_A);
    let level = match options.cpu {
        Some(cpu) => cpu.name(),
        None if target.isa.name() == "x64" => Cpu::X86_64.name(),
        None => "baseline",
    };
    let header = header(
        &name,
        &plan,
        arena_bytes,
        stack_bytes,
        options,
        &target,
        (level, isa),
    );
    Ok(ObjectFile {
        object,
        header,
        weights: weight_bytes,
        name,
        arena_bytes,
        input_len,
        output_len,
        fma: target.features.fma,
        isa,
        imports: imported.iter().map(|(k, _)| k.symbol()).collect(),
        kernel_library,
    })
}

/// The C signature of a full-width kernel: seven pointer-sized arguments
/// (see `wide::PointwiseFn`).
fn wide_signature(call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64); 7]);
    sig
}

/// The body of `run_with_weights(input, output, arena, batch, weights)`.
fn build_entry(
    b: &mut FunctionBuilder,
    plan: &Plan,
    kernels: &Kernels,
    refs: &[cranelift_codegen::ir::FuncRef],
    offsets: &[usize],
) {
    let mem = MemFlagsData::new().with_notrap();
    let max_slots = plan
        .layers
        .iter()
        .map(|l| l.inputs.len() + 2)
        .max()
        .unwrap_or(2);
    let slot = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (max_slots * 8) as u32,
        3,
    ));
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let copy = b.create_block();
    let next = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.append_block_param(header, I64);
    b.append_block_param(copy, I64);
    let p = b.block_params(entry).to_vec();
    let (input, output, arena, batch, weights) = (p[0], p[1], p[2], p[3], p[4]);
    b.switch_to_block(entry);
    let zero = b.ins().iconst(I64, 0);
    b.ins().jump(header, &[BlockArg::Value(zero)]);

    // header(img): img < batch ? body : exit
    b.switch_to_block(header);
    let img = b.block_params(header)[0];
    let more = b.ins().icmp(
        cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThan,
        img,
        batch,
    );
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let in_len: usize = plan.input_shape.dims().iter().product();
    let in_base = {
        let off = b.ins().imul_imm_u(img, (in_len * 4) as i64);
        b.ins().iadd(input, off)
    };
    let arena_base = {
        let off = b.ins().imul_imm_u(img, (plan.arena_len * 4) as i64);
        b.ins().iadd(arena, off)
    };
    let value_ptr = |b: &mut FunctionBuilder, v: usize| match plan.values[v].storage {
        Storage::Input => in_base,
        Storage::Arena(off) => b.ins().iadd_imm_s(arena_base, (off * 4) as i64),
    };
    for (li, layer) in plan.layers.iter().enumerate() {
        let mut ptrs = vec![value_ptr(b, layer.output)];
        for &i in &layer.inputs {
            ptrs.push(value_ptr(b, i));
        }
        ptrs.push(b.ins().iadd_imm_s(weights, (offsets[li] * 4) as i64));
        for (k, ptr) in ptrs.into_iter().enumerate() {
            b.ins().stack_store(I64, ptr, slot, (k * 8) as i32);
        }
        let table = b.ins().stack_addr(I64, slot, 0);
        let lo = b.ins().iconst(I64, 0);
        let hi = b.ins().iconst(I64, layer.units as i64);
        b.ins().call(refs[kernels.of_layer[li]], &[table, lo, hi]);
    }
    // Copy the output value to `output + img * out_len`.
    let out_len = plan.values[plan.output].len;
    let src = value_ptr(b, plan.output);
    let dst = {
        let off = b.ins().imul_imm_u(img, (out_len * 4) as i64);
        b.ins().iadd(output, off)
    };
    b.ins().jump(copy, &[BlockArg::Value(zero)]);

    // copy(i): i < out_len ? (dst[i] = src[i]; copy(i + 1)) : next
    b.switch_to_block(copy);
    let i = b.block_params(copy)[0];
    let copy_body = b.create_block();
    let more = b.ins().icmp_imm_s(
        cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThan,
        i,
        out_len as i64,
    );
    b.ins().brif(more, copy_body, &[], next, &[]);
    b.switch_to_block(copy_body);
    let byte = b.ins().ishl_imm_u(i, 2);
    let from = b.ins().iadd(src, byte);
    let to = b.ins().iadd(dst, byte);
    let v = b.ins().load(F32, mem, from, 0);
    b.ins().store(mem, v, to, 0);
    let i1 = b.ins().iadd_imm_s(i, 1);
    b.ins().jump(copy, &[BlockArg::Value(i1)]);

    b.switch_to_block(next);
    let img1 = b.ins().iadd_imm_s(img, 1);
    b.ins().jump(header, &[BlockArg::Value(img1)]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
}

/// What the header says about linking at tier `isa`.
fn link_note(isa: Isa) -> String {
    let needs = match isa {
        Isa::Sse => {
            return "the object needs nothing else (no libc, no\n * kernel library).".into()
        }
        Isa::Avx2 => "AVX2 and FMA (x86-64-v3)",
        Isa::Avx512 => "AVX-512F (x86-64-v4)",
    };
    format!(
        "the full-width layers call the {isa}\n \
         * kernels of the static library `shufflekit compile` wrote beside the\n \
         * object (`model.o` -> `model.kernels.a`); link both, e.g.\n \
         *   cc main.c model.o model.kernels.a -o main\n \
         * The library calls no libc function either. The program needs a CPU\n \
         * with {needs}."
    )
}

/// The C header of an object.
fn header(
    name: &str,
    plan: &Plan,
    arena_bytes: usize,
    stack_bytes: usize,
    options: &ObjectOptions,
    target: &Target,
    (level, isa): (&str, Isa),
) -> String {
    let up = name.to_ascii_uppercase();
    let dims = |d: &[usize]| {
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let in_dims = plan.input_shape.dims();
    let out_dims = plan.output_shape.dims();
    let in_len: usize = in_dims.iter().product();
    let out_len = plan.values[plan.output].len;
    let version = env!("CARGO_PKG_VERSION");
    let mut h = format!(
        "/* {name}: generated by shufflekit {version} for {triple}. Do not edit.\n\
         \x20*\n\
         \x20* All tensors are dense float32, NCHW, batch first. The caller provides\n\
         \x20* an arena of {up}_ARENA_BYTES bytes per image (4-byte aligned; 64 is\n\
         \x20* best); the object calls no libc function and never allocates. Calls\n\
         \x20* on different arenas may run on different threads. A call needs\n\
         \x20* {up}_STACK_BYTES bytes of stack (some kernels copy a row of inputs\n\
         \x20* there; their frames probe every page in order).\n\
         \x20*\n\
         \x20* CPU level {level}: {link}\n\
         \x20*/\n\
         #ifndef SHUFFLEKIT_{up}_H\n\
         #define SHUFFLEKIT_{up}_H\n\n\
         #include <stddef.h>\n\n\
         #define {up}_VERSION \"shufflekit {version}\"\n\
         #define {up}_TARGET \"{triple}\"\n\
         #define {up}_CPU \"{level}\"\n\
         #define {up}_KERNEL_TIER \"{isa}\" /* sse: no kernel library */\n\
         #define {up}_INPUT_RANK {in_rank}\n\
         #define {up}_INPUT_SHAPE {{{in_shape}}}\n\
         #define {up}_INPUT_SIZE {in_len} /* floats per image */\n\
         #define {up}_OUTPUT_RANK {out_rank}\n\
         #define {up}_OUTPUT_SHAPE {{{out_shape}}}\n\
         #define {up}_OUTPUT_SIZE {out_len} /* floats per image */\n\
         #define {up}_ARENA_BYTES {arena} /* per image */\n\
         #define {up}_STACK_BYTES {stack} /* deepest call, from the frames */\n\
         #define {up}_WEIGHTS_BYTES {wbytes}\n\
         #define {up}_EMBEDDED_WEIGHTS {embedded}\n\n\
         #ifdef __cplusplus\nextern \"C\" {{\n#endif\n\n",
        triple = target.isa.triple(),
        in_rank = in_dims.len(),
        in_shape = dims(in_dims),
        out_rank = out_dims.len(),
        out_shape = dims(out_dims),
        arena = arena_bytes.max(1),
        stack = stack_bytes,
        wbytes = plan
            .layers
            .iter()
            .map(|l| pack::packed_len(l).next_multiple_of(PACK_ALIGN) * 4)
            .sum::<usize>(),
        embedded = u8::from(options.embed_weights),
        link = link_note(isa),
    );
    if options.embed_weights {
        h.push_str(&format!(
            "/* Runs `batch` images: input [batch, {in_len}] -> output [batch, {out_len}],\n   \
             arena of batch * {up}_ARENA_BYTES bytes, with the embedded weights. */\n\
             void {name}_run(const float *input, float *output, void *arena, size_t batch);\n\n"
        ));
    }
    h.push_str(&format!(
        "/* The same with the packed weights blob passed by pointer (the .weights\n   \
         file `shufflekit compile` writes; {up}_WEIGHTS_BYTES bytes, 4-byte aligned). */\n\
         void {name}_run_with_weights(const float *input, float *output, void *arena,\n    \
         size_t batch, const void *weights);\n\n\
         #ifdef __cplusplus\n}}\n#endif\n\n\
         /* Generic names, for programs written against any model. */\n\
         #ifndef SHUFFLEKIT_NO_GENERIC_NAMES\n\
         #define SHUFFLEKIT_MODEL_NAME \"{name}\"\n\
         #define SHUFFLEKIT_MODEL_VERSION {up}_VERSION\n\
         #define SHUFFLEKIT_MODEL_INPUT_RANK {up}_INPUT_RANK\n\
         #define SHUFFLEKIT_MODEL_INPUT_SHAPE {up}_INPUT_SHAPE\n\
         #define SHUFFLEKIT_MODEL_INPUT_SIZE {up}_INPUT_SIZE\n\
         #define SHUFFLEKIT_MODEL_OUTPUT_SIZE {up}_OUTPUT_SIZE\n\
         #define SHUFFLEKIT_MODEL_ARENA_BYTES {up}_ARENA_BYTES\n\
         #define SHUFFLEKIT_MODEL_WEIGHTS_BYTES {up}_WEIGHTS_BYTES\n\
         #define SHUFFLEKIT_MODEL_EMBEDDED_WEIGHTS {up}_EMBEDDED_WEIGHTS\n\
         #define SHUFFLEKIT_MODEL_RUN_WITH_WEIGHTS {name}_run_with_weights\n"
    ));
    if options.embed_weights {
        h.push_str(&format!("#define SHUFFLEKIT_MODEL_RUN {name}_run\n"));
    }
    h.push_str(&format!("#endif\n\n#endif /* SHUFFLEKIT_{up}_H */\n"));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use shufflekit_ir::ops::Op;
    use shufflekit_ir::weights::InitOptions;
    use shufflekit_ir::Shape;

    fn two_inputs() -> Graph {
        let mut g = Graph::new("two inputs");
        let a = g
            .add(Op::Input(Shape::chw(2, 4, 4)), "a", &[], None)
            .unwrap();
        let b = g
            .add(Op::Input(Shape::chw(2, 4, 4)), "b", &[], None)
            .unwrap();
        g.add(Op::Add, "sum", &[a, b], None).unwrap();
        g
    }

    #[test]
    fn unsupported_graphs_targets_and_names_are_errors() {
        let g = two_inputs();
        let w = Weights::init(&g, &InitOptions::default());
        for target in OBJECT_TARGETS {
            let options = ObjectOptions {
                target: target.into(),
                ..ObjectOptions::default()
            };
            let e = compile_object(&g, &w, &options).unwrap_err();
            assert!(matches!(e, JitError::InputCount(2)), "{e}");
        }
        let bad = ObjectOptions {
            target: "powerpc64-unknown-linux-gnu".into(),
            ..ObjectOptions::default()
        };
        let e = compile_object(&g, &w, &bad).unwrap_err().to_string();
        assert!(
            e.contains("unsupported target `powerpc64-unknown-linux-gnu`"),
            "{e}"
        );
        let bad = ObjectOptions {
            name: Some("a-b".into()),
            ..ObjectOptions::default()
        };
        let e = compile_object(&g, &w, &bad).unwrap_err().to_string();
        assert!(e.contains("not a C identifier"), "{e}");
        assert_eq!(c_identifier("two inputs"), "two_inputs");
        assert_eq!(c_identifier("3x"), "model_3x");
    }

    /// One pointwise convolution (the layer the wide kernels cover).
    fn pointwise() -> Graph {
        let src = "name: pw\ninput: [8, 6, 6]\nlayers:\n  - conv: {out: 12, kernel: 1}\n  - relu\n";
        shufflekit_spec::load_str(src, "pw.yaml", &[]).unwrap()
    }

    /// Only an x86-64 build carries the kernel library.
    #[cfg(not(target_arch = "x86_64"))]
    #[test]
    fn wide_levels_need_an_x86_64_build() {
        let g = pointwise();
        let w = Weights::init(&g, &InitOptions::default());
        for cpu in [Cpu::X86_64V3, Cpu::X86_64V4] {
            let options = ObjectOptions {
                target: "x86_64-unknown-linux-gnu".into(),
                cpu: Some(cpu),
                ..ObjectOptions::default()
            };
            let err = compile_object(&g, &w, &options).unwrap_err();
            assert!(
                matches!(
                    err,
                    JitError::Target(crate::target::TargetError::NoKernelLibrary(c)) if c == cpu
                ),
                "{err:?}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn wide_levels_import_their_kernels_and_baselines_nothing() {
        let g = pointwise();
        let w = Weights::init(&g, &InitOptions::default());
        let at = |target: &str, cpu: Option<Cpu>| {
            let options = ObjectOptions {
                target: target.into(),
                cpu,
                ..ObjectOptions::default()
            };
            compile_object(&g, &w, &options)
        };
        let cases = [
            (None, Isa::Sse, vec![]),
            (Some(Cpu::X86_64), Isa::Sse, vec![]),
            (
                Some(Cpu::X86_64V3),
                Isa::Avx2,
                vec!["shufflekit_pointwise_avx2"],
            ),
            (
                Some(Cpu::X86_64V4),
                Isa::Avx512,
                vec!["shufflekit_pointwise_avx512"],
            ),
        ];
        for (cpu, isa, imports) in cases {
            let o = at("x86_64-unknown-linux-gnu", cpu).unwrap();
            assert_eq!((o.isa, &o.imports), (isa, &imports), "{cpu:?}");
            assert_eq!(o.kernel_library.is_some(), isa != Isa::Sse, "{cpu:?}");
            assert_eq!(o.fma, isa != Isa::Sse, "{cpu:?}: the level's FMA");
            let symbol = imports.first().copied().unwrap_or("shufflekit_pointwise");
            let named = o
                .object
                .windows(symbol.len())
                .any(|x| x == symbol.as_bytes());
            assert_eq!(
                named,
                !imports.is_empty(),
                "{cpu:?}: the symbol in the object"
            );
        }
        // The kernel library's frames count in the stack a call needs.
        let stack = |o: &ObjectFile| {
            o.header
                .lines()
                .find_map(|l| l.strip_prefix("#define PW_STACK_BYTES "))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap()
        };
        let base = at("x86_64-unknown-linux-gnu", None).unwrap();
        let wide = at("x86_64-unknown-linux-gnu", Some(Cpu::X86_64V4)).unwrap();
        assert!(
            stack(&wide) >= stack(&base) + crate::kernel_library::KERNELS_STACK_BYTES,
            "{} {}",
            stack(&wide),
            stack(&base)
        );
        let host = at("host", Some(Cpu::Host)).unwrap();
        assert_eq!(host.isa, Isa::host());
        // AArch64 is unchanged: no kernels, and x86-64 levels do not fit.
        let arm = at("aarch64-unknown-linux-gnu", None).unwrap();
        assert!(arm.imports.is_empty() && arm.kernel_library.is_none());
        for cpu in [Cpu::X86_64, Cpu::X86_64V3, Cpu::X86_64V4] {
            let e = at("aarch64-unknown-linux-gnu", Some(cpu))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!(
                    "cpu `{cpu}` does not fit target `aarch64-unknown-linux-gnu`"
                )),
                "{e}"
            );
        }
        #[cfg(target_arch = "x86_64")]
        {
            let e = at("aarch64-unknown-linux-gnu", Some(Cpu::Host))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`host` is this machine"), "{e}");
        }
    }
}
