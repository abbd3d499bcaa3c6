//! Lowering: one Cranelift function per distinct kernel, independent of
//! how the code is linked (the JIT here, object files later).
//!
//! Every function has the signature `fn(ptrs: *const *mut f32, lo: i64,
//! hi: i64)`: `ptrs` holds the output buffer, the input buffers in slot
//! order, then the packed parameters; the function computes work units
//! `lo..hi` of one image. All shapes, strides, paddings, groups and tile
//! sizes are constants in the code; the only run-time data are the
//! pointers, the unit range and the packed tables.
//!
//! Why every access is in bounds: a unit index `u < units` (checked by the
//! runtime) selects a group and tile whose channels lie inside the tensors;
//! within a plane, rows and columns are split at compile time into
//! segments by the set of kernel taps that land inside the input
//! ([`Segment`]), and a tap outside the input is never loaded; vector
//! blocks of the row are placed only where all their lanes (and, for
//! stride-2 gathers, the one extra element the second load reads) are
//! inside the row, except edge blocks of stride-1 convolutions, whose
//! vectors that would reach past an end of the row load the four elements
//! at that end instead and shift the padding's zeros in; a row copied to
//! the stack is copied within the row into a slot sized for it at compile
//! time; tables (output positions, gather sources) are built and checked
//! against the shapes by the packer.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64, I8X16};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, ExtFuncData, ExternalName, Function, InstBuilder, MemFlagsData, Signature,
    StackSlotData, StackSlotKind, Type, UserExternalName, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use shufflekit_ir::ops::Op;

use crate::isa::Isa;
use crate::kernel_symbols::{KernelLink, WideKernel, KERNEL_NAMESPACE};
use crate::plan::{Act as Activation, Kernel, Reduce, Window};
use crate::target::Features;

/// The most bytes of a row a kernel copies to its stack frame.
pub(crate) const MAX_ROW_COPY: usize = 32 * 1024;

/// Elementwise operations, on one channel plane per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Elementwise {
    /// `x * scale[c] + shift[c]` (inference batch norm).
    Affine,
    Relu,
    Relu6,
    Sigmoid,
    HardSigmoid,
    HardSwish,
    Add,
    Mul,
    /// `x * y[c]` with `y` of shape `[C, 1, 1]`.
    MulChannel,
}

impl Elementwise {
    /// The kernel of a one-input op that works element by element, or None
    /// for the other ops (each has a kernel of its own in `plan`).
    pub(crate) fn unary(op: &Op) -> Option<Elementwise> {
        Some(match op {
            Op::BatchNorm(_) => Elementwise::Affine,
            Op::Relu => Elementwise::Relu,
            Op::Relu6 => Elementwise::Relu6,
            Op::Sigmoid => Elementwise::Sigmoid,
            Op::HardSigmoid => Elementwise::HardSigmoid,
            Op::HardSwish => Elementwise::HardSwish,
            Op::Input(_)
            | Op::Conv2d(_)
            | Op::ChannelShuffle(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Mul
            | Op::Concat(_)
            | Op::ChannelSlice(_)
            | Op::Linear(_)
            | Op::Flatten
            | Op::Softmax => return None,
        })
    }
}

/// Partial sums per channel vector of a single column (see
/// `window_block`): enough independent FMAs to cover their latency.
const LANE_SUMS: usize = 4;

/// The signature every kernel function has.
pub(crate) fn signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig
}

/// Builds the function of a kernel with `inputs` input buffers.
pub(crate) fn lower(
    kernel: &Kernel,
    inputs: usize,
    features: Features,
    isa: Isa,
    link: KernelLink,
    frontend: TargetFrontendConfig,
    index: u32,
) -> Function {
    let call_conv = frontend.default_call_conv;
    let mut func =
        Function::with_name_signature(UserFuncName::user(0, index), signature(call_conv));
    let mut fctx = FunctionBuilderContext::new();
    let b = FunctionBuilder::new(&mut func, &mut fctx);
    let mut g = Gen {
        b,
        fma: features.fma,
    };
    let entry = g.b.create_block();
    g.b.append_block_params_for_function_params(entry);
    g.b.switch_to_block(entry);
    let params = g.b.block_params(entry).to_vec();
    let (ptrs, lo, hi) = (params[0], params[1], params[2]);
    let out = g.load(I64, ptrs, 0);
    let ins: Vec<Value> = (0..inputs)
        .map(|i| g.load(I64, ptrs, 8 * (1 + i as i64)))
        .collect();
    let packed = g.load(I64, ptrs, 8 * (1 + inputs as i64));
    let io = Io {
        ptrs,
        out,
        ins,
        packed,
    };
    if let Some(callee) = wide_kernel(kernel, isa) {
        wide_call(&mut g, kernel, &io, lo, hi, callee, link, call_conv);
    } else {
        units(&mut g, kernel, &io, lo, hi);
    }
    g.b.ins().return_(&[]);
    g.b.seal_all_blocks();
    g.b.finalize(frontend);
    func
}

/// The loop over units `lo..hi` of the 128-bit code.
fn units(g: &mut Gen, kernel: &Kernel, io: &Io, lo: Value, hi: Value) {
    g.for_loop(lo, hi, 1, |g, u| match kernel {
        Kernel::Window(w) => window_unit(g, w, io, u),
        Kernel::Elementwise { op, channels, len } => {
            elementwise_unit(g, *op, *channels, *len, io, u)
        }
        Kernel::GlobalAvg { len, .. } => global_avg_unit(g, *len, io, u),
        Kernel::Gather {
            len, activation, ..
        } => gather_unit(g, *len, *activation, io, u),
        Kernel::Linear { inputs, outputs, m } => linear_unit(g, *inputs, *outputs, *m, io, u),
        Kernel::Softmax { channels, spatial } => softmax(g, *channels, *spatial, io),
    });
}

/// The full-width kernel of a layer at tier `isa`, if there is one: the
/// window kernels of [`wide_window`], and pointwise convolutions (1x1,
/// stride 1, unpadded) with a register tile the tier's kernel has (the
/// plan sizes it for the tier).
#[cfg(target_arch = "x86_64")]
fn wide_kernel(kernel: &Kernel, isa: Isa) -> Option<WideKernel> {
    if let Some(callee) = wide_window(kernel, isa) {
        return Some(callee);
    }
    let Kernel::Window(w) = kernel else {
        return None;
    };
    let pointwise = w.reduce == Reduce::Fma
        && w.kernel == [1, 1]
        && w.stride == [1, 1]
        && w.padding == [0, 0]
        && w.in_plane() == w.out_plane()
        && crate::pointwise_tiling::supports(isa, w.m, w.nv);
    if !pointwise {
        return None;
    }
    match isa {
        Isa::Sse => None,
        Isa::Avx2 => Some(WideKernel::PointwiseAvx2),
        Isa::Avx512 => Some(WideKernel::PointwiseAvx512),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn wide_kernel(_: &Kernel, _: Isa) -> Option<WideKernel> {
    None
}

/// The body of a layer with a full-width kernel: one call with the shapes
/// as constants (stored in the frame, passed by address). The JIT calls
/// the kernel's address in this process (no relocations); an object
/// imports its symbol (see `kernel_symbols.rs`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn wide_call(
    g: &mut Gen,
    kernel: &Kernel,
    io: &Io,
    lo: Value,
    hi: Value,
    callee: WideKernel,
    link: KernelLink,
    call_conv: CallConv,
) {
    if let Some(fields) = wide_window_shape(kernel) {
        let res = match kernel {
            Kernel::Window(w) if w.residual => io.ins[1],
            _ => g.int(0),
        };
        return emit_wide_call(
            g,
            &fields,
            [io.out, io.ins[0], res, io.packed, lo, hi],
            callee,
            link,
            call_conv,
        );
    }
    let Kernel::Window(w) = kernel else {
        return;
    };
    let shape = crate::wide::Shape {
        cin_g: w.cin_g as i64,
        cout_g: w.cout_g as i64,
        m: w.m as i64,
        plane: w.in_plane() as i64,
        row_w: if w.split_rows { w.in_hw[1] as i64 } else { 0 },
        rows: if w.split_rows { w.in_hw[0] as i64 } else { 0 },
        last_w: w.last_w as i64,
        act: match w.activation {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Relu6 => 2,
        },
        kc: w.kc as i64,
    };
    let fields = [
        shape.cin_g,
        shape.cout_g,
        shape.m,
        shape.plane,
        shape.row_w,
        shape.rows,
        shape.last_w,
        shape.act,
        shape.kc,
    ];
    debug_assert_eq!(fields.len(), crate::wide::SHAPE_LEN);
    let res = if w.residual { io.ins[1] } else { g.int(0) };
    emit_wide_call(
        g,
        &fields,
        [io.out, io.ins[0], res, io.packed, lo, hi],
        callee,
        link,
        call_conv,
    );
}

/// The full-width kernel (`wide_window.rs`) of a window convolution that
/// is not pointwise, at tier `isa`.
#[cfg(target_arch = "x86_64")]
fn wide_window(kernel: &Kernel, isa: Isa) -> Option<WideKernel> {
    wide_window_shape(kernel)?;
    // AVX2 keeps the 128-bit code: measured slower (`wide_window`'s docs).
    match isa {
        Isa::Sse | Isa::Avx2 => None,
        Isa::Avx512 => Some(WideKernel::WindowAvx512),
    }
}

/// The shape fields of a layer that [`wide_window`] takes: window
/// convolutions other than the pointwise ones (`wide.rs`) with a
/// horizontal stride of 1 or 2, at most
/// `wide_window::MAX_KW` kernel columns and `wide_window::MAX_TILE`
/// channels per tile. The others keep the 128-bit code.
#[cfg(target_arch = "x86_64")]
fn wide_window_shape(kernel: &Kernel) -> Option<[i64; 16]> {
    use crate::wide_window as ww;
    match kernel {
        Kernel::Window(w)
            if w.reduce == Reduce::Fma
                && !w.split_rows
                && !(w.kernel == [1, 1] && w.stride == [1, 1] && w.padding == [0, 0])
                && (1..=2).contains(&w.stride[1])
                && w.kernel[1] <= ww::MAX_KW
                && (1..=ww::MAX_TILE).contains(&w.m) =>
        {
            let shape = ww::WindowShape {
                in_h: w.in_hw[0] as i64,
                in_w: w.in_hw[1] as i64,
                out_h: w.out_hw[0] as i64,
                out_w: w.out_hw[1] as i64,
                k_h: w.kernel[0] as i64,
                k_w: w.kernel[1] as i64,
                s_h: w.stride[0] as i64,
                s_w: w.stride[1] as i64,
                p_h: w.padding[0] as i64,
                p_w: w.padding[1] as i64,
                d_h: w.dilation[0] as i64,
                d_w: w.dilation[1] as i64,
                cin_g: w.cin_g as i64,
                cout_g: w.cout_g as i64,
                m: w.m as i64,
                act: match w.activation {
                    Activation::None => 0,
                    Activation::Relu => 1,
                    Activation::Relu6 => 2,
                },
            };
            Some(shape.fields())
        }
        _ => None,
    }
}

/// Emits the call of a full-width kernel: `shape` stored in the frame,
/// `args` then the shape's address.
#[cfg(target_arch = "x86_64")]
fn emit_wide_call(
    g: &mut Gen,
    shape: &[i64],
    args: [Value; 6],
    callee: WideKernel,
    link: KernelLink,
    call_conv: CallConv,
) {
    let slot = g.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (8 * shape.len()) as u32,
        3,
    ));
    let shape_ptr = g.b.ins().stack_addr(I64, slot, 0);
    for (i, &v) in shape.iter().enumerate() {
        let c = g.int(v);
        g.store(c, shape_ptr, 8 * i as i64);
    }
    let mut sig = Signature::new(call_conv);
    for _ in 0..7 {
        sig.params.push(AbiParam::new(I64));
    }
    let sig = g.b.import_signature(sig);
    let mut call_args = args.to_vec();
    call_args.push(shape_ptr);
    let args = call_args;
    match link {
        KernelLink::Address => {
            let f = g.int(callee.address() as i64);
            g.b.ins().call_indirect(sig, f, &args);
        }
        KernelLink::Symbol => {
            let name =
                g.b.func
                    .declare_imported_user_function(UserExternalName::new(
                        KERNEL_NAMESPACE,
                        callee.index(),
                    ));
            let f = g.b.import_function(ExtFuncData {
                name: ExternalName::user(name),
                signature: sig,
                // Defined in another object: reached through the GOT.
                colocated: false,
                patchable: false,
            });
            g.b.ins().call(f, &args);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
fn wide_call(
    _: &mut Gen,
    _: &Kernel,
    _: &Io,
    _: Value,
    _: Value,
    _: WideKernel,
    _: KernelLink,
    _: CallConv,
) {
}

/// The buffers of a call.
struct Io {
    ptrs: Value,
    out: Value,
    ins: Vec<Value>,
    packed: Value,
}

/// Accesses are in bounds (see the module doc) but not necessarily
/// aligned.
fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// A function builder with the helpers the kernels share.
struct Gen<'a> {
    b: FunctionBuilder<'a>,
    fma: bool,
}

impl Gen<'_> {
    fn int(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// `base + off` as an address and an immediate that fits the
    /// instruction (large offsets are added to the base first).
    fn addr(&mut self, base: Value, off: i64) -> (Value, i32) {
        match i32::try_from(off) {
            Ok(imm) => (base, imm),
            Err(_) => (self.b.ins().iadd_imm_s(base, off), 0),
        }
    }

    fn load(&mut self, ty: Type, base: Value, off: i64) -> Value {
        let (base, imm) = self.addr(base, off);
        self.b.ins().load(ty, mem(), base, imm)
    }

    fn store(&mut self, v: Value, base: Value, off: i64) {
        let (base, imm) = self.addr(base, off);
        self.b.ins().store(mem(), v, base, imm);
    }

    /// A float from memory, splatted when `ty` is a vector.
    fn bcast(&mut self, ty: Type, base: Value, off: i64) -> Value {
        let s = self.load(F32, base, off);
        self.splat(ty, s)
    }

    /// Lanes `first, first + 2, ...` of the eight lanes of `a` then `b`
    /// (one `shufps`).
    fn deinterleave(&mut self, a: Value, b: Value, first: u8) -> Value {
        let mask: Vec<u8> = (0..4u8)
            .flat_map(|l| (0..4).map(move |k| (2 * l + first) * 4 + k))
            .collect();
        let imm = self.b.func.dfg.immediates.push(mask.as_slice().into());
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let a = self.b.ins().bitcast(I8X16, le, a);
        let b = self.b.ins().bitcast(I8X16, le, b);
        let r = self.b.ins().shuffle(a, b, imm);
        self.b.ins().bitcast(F32X4, le, r)
    }

    /// The four elements of a row at columns `e..e + 4`, `off` bytes from
    /// `p` (which may lie outside the row of `width` elements), with zeros
    /// for the columns outside it; loads only inside the row.
    fn edge_load(&mut self, p: Value, off: i64, e: i64, width: i64) -> Value {
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        if e >= 0 && e + 4 <= width {
            let raw = self.load(I32X4, p, off);
            return self.b.ins().bitcast(F32X4, le, raw);
        }
        let c = if e < 0 { 0 } else { width - 4 };
        let v = self.load(F32X4, p, off + (c - e) * 4);
        let zero = self.fconst(F32X4, 0.0);
        // Lane l takes v's lane l + e - c, or a zero (from the second
        // operand) outside 0..4.
        let mask: Vec<u8> = (0..4i64)
            .flat_map(|l| {
                let src = l + e - c;
                let base = if (0..4).contains(&src) { src * 4 } else { 16 };
                (0..4).map(move |k| (base + k) as u8)
            })
            .collect();
        let imm = self.b.func.dfg.immediates.push(mask.as_slice().into());
        let a = self.b.ins().bitcast(I8X16, le, v);
        let z = self.b.ins().bitcast(I8X16, le, zero);
        let r = self.b.ins().shuffle(a, z, imm);
        self.b.ins().bitcast(F32X4, le, r)
    }

    /// Lane `lane` of an `f32x4` in every lane (one `pshufd`).
    fn lane_splat(&mut self, v: Value, lane: u8) -> Value {
        let mask: Vec<u8> = (0..4)
            .flat_map(|_| (0..4).map(move |k| lane * 4 + k))
            .collect();
        let imm = self.b.func.dfg.immediates.push(mask.as_slice().into());
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let bytes = self.b.ins().bitcast(I8X16, le, v);
        let r = self.b.ins().shuffle(bytes, bytes, imm);
        self.b.ins().bitcast(F32X4, le, r)
    }

    fn splat(&mut self, ty: Type, s: Value) -> Value {
        if ty == F32 {
            s
        } else {
            self.b.ins().splat(ty, s)
        }
    }

    fn fconst(&mut self, ty: Type, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        self.splat(ty, s)
    }

    /// `a * b + acc`, fused when the target has FMA.
    fn mac(&mut self, a: Value, b: Value, acc: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, acc)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, acc)
        }
    }

    /// `cond ? x : y` for a float comparison result of type `ty`.
    fn choose(&mut self, ty: Type, cond: Value, x: Value, y: Value) -> Value {
        if ty == F32 {
            self.b.ins().select(cond, x, y)
        } else {
            let flags =
                MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
            let mask = self.b.ins().bitcast(ty, flags, cond);
            self.b.ins().bitselect(mask, x, y)
        }
    }

    /// `max(x, y)` as `f32::max` treats a NaN in `y`: `x > y ? x : y`
    /// with NaN `x` giving `y`. Written `y < x` so that x86 matches the
    /// pattern to one `maxps` (whose NaN rule is exactly this).
    fn max(&mut self, ty: Type, x: Value, y: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, y, x);
        self.choose(ty, c, x, y)
    }

    fn min(&mut self, ty: Type, x: Value, y: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, x, y);
        self.choose(ty, c, x, y)
    }

    fn activation(&mut self, ty: Type, act: Activation, v: Value) -> Value {
        match act {
            Activation::None => v,
            Activation::Relu => {
                let zero = self.fconst(ty, 0.0);
                self.max(ty, v, zero)
            }
            Activation::Relu6 => {
                let zero = self.fconst(ty, 0.0);
                let six = self.fconst(ty, 6.0);
                let r = self.max(ty, v, zero);
                self.min(ty, r, six)
            }
        }
    }

    /// A counted loop `iv = lo, lo + step, ... < hi` (signed compare).
    fn for_loop(&mut self, lo: Value, hi: Value, step: i64, body: impl FnOnce(&mut Self, Value)) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let iv = self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::Value(lo)]);
        self.b.switch_to_block(header);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, iv, hi);
        self.b.ins().brif(c, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, iv);
        let next = self.b.ins().iadd_imm_s(iv, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
    }

    /// A loop over constant bounds; the body is emitted once and the loop
    /// skipped when empty.
    fn for_const(&mut self, lo: i64, hi: i64, step: i64, body: impl FnOnce(&mut Self, Value)) {
        if lo >= hi {
            return;
        }
        if lo + step >= hi {
            let v = self.int(lo);
            body(self, v);
            return;
        }
        let (l, h) = (self.int(lo), self.int(hi));
        self.for_loop(l, h, step, body);
    }

    /// `if cond { then } else { otherwise }`.
    fn if_else(
        &mut self,
        cond: Value,
        then: impl FnOnce(&mut Self),
        otherwise: impl FnOnce(&mut Self),
    ) {
        let t = self.b.create_block();
        let e = self.b.create_block();
        let join = self.b.create_block();
        self.b.ins().brif(cond, t, &[], e, &[]);
        self.b.switch_to_block(t);
        then(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(e);
        otherwise(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
    }

    /// Sum of the four lanes.
    fn hsum(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4).map(|i| self.b.ins().extractlane(v, i)).collect();
        let a = self.b.ins().fadd(l[0], l[1]);
        let c = self.b.ins().fadd(l[2], l[3]);
        self.b.ins().fadd(a, c)
    }

    /// `exp(x)` (Cephes' single-precision polynomial, relative error about
    /// 2e-7 on [-87, 88]; inputs are clamped there).
    fn exp(&mut self, ty: Type, x: Value) -> Value {
        let hi = self.fconst(ty, 88.37);
        let lo = self.fconst(ty, -87.0);
        let x = self.min(ty, x, hi);
        let x = self.max(ty, x, lo);
        let log2e = self.fconst(ty, std::f32::consts::LOG2_E);
        let t = self.b.ins().fmul(x, log2e);
        let fx = self.b.ins().nearest(t);
        let c1 = self.fconst(ty, -0.693_359_4);
        let c2 = self.fconst(ty, 2.121_944_4e-4);
        let x = self.mac(fx, c1, x);
        let x = self.mac(fx, c2, x);
        let coefs = [
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.0e-1,
        ];
        let mut y = self.fconst(ty, coefs[0]);
        for &c in &coefs[1..] {
            let cv = self.fconst(ty, c);
            y = self.mac(y, x, cv);
        }
        let xx = self.b.ins().fmul(x, x);
        let one = self.fconst(ty, 1.0);
        let x1 = self.b.ins().fadd(x, one);
        let y = self.mac(y, xx, x1);
        let ity = if ty == F32 { I32 } else { I32X4 };
        let n = self.b.ins().fcvt_to_sint_sat(ity, fx);
        let bias = self.b.ins().iconst(I32, 127);
        let bias = if ty == F32 {
            bias
        } else {
            self.b.ins().splat(I32X4, bias)
        };
        let n = self.b.ins().iadd(n, bias);
        let shift = self.b.ins().iconst(I32, 23);
        let n = self.b.ins().ishl(n, shift);
        let flags = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let pow = self.b.ins().bitcast(ty, flags, n);
        self.b.ins().fmul(y, pow)
    }

    /// Copies `len` floats from `src` to `dst` through an activation
    /// (vectors, then a scalar tail).
    fn copy(&mut self, dst: Value, src: Value, len: usize, act: Activation) {
        let vecs = (len / 4) as i64;
        // Eight vectors per iteration, then the rest one by one: the loop
        // control would otherwise cost more than the copy.
        let unrolled = vecs / 8 * 8;
        self.for_const(0, unrolled * 16, 8 * 16, |g, off| {
            let s = g.b.ins().iadd(src, off);
            let d = g.b.ins().iadd(dst, off);
            let vs: Vec<Value> = (0..8).map(|i| g.load(F32X4, s, 16 * i)).collect();
            for (i, v) in vs.into_iter().enumerate() {
                let v = g.activation(F32X4, act, v);
                g.store(v, d, 16 * i as i64);
            }
        });
        self.for_const(unrolled * 16, vecs * 16, 16, |g, off| {
            let s = g.b.ins().iadd(src, off);
            let d = g.b.ins().iadd(dst, off);
            let v = g.load(F32X4, s, 0);
            let v = g.activation(F32X4, act, v);
            g.store(v, d, 0);
        });
        for i in (vecs * 4)..len as i64 {
            let v = self.load(F32, src, 4 * i);
            let v = self.activation(F32, act, v);
            self.store(v, dst, 4 * i);
        }
    }
}

/// Rows (or columns) of an output plane that see the same kernel taps:
/// outputs `lo..hi`, the taps inside the input, and the window size
/// clipped to the padded input (the divisor of padded average pooling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub lo: usize,
    pub hi: usize,
    pub taps: Vec<usize>,
    pub padded: usize,
}

/// The segments of one axis.
pub(crate) fn segments(
    out: usize,
    len: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Vec<Segment> {
    let mut segs: Vec<Segment> = Vec::new();
    for o in 0..out {
        let start = (o * stride) as i64 - pad as i64;
        let taps: Vec<usize> = (0..kernel)
            .filter(|&k| {
                let i = start + (k * dilation) as i64;
                i >= 0 && i < len as i64
            })
            .collect();
        let end = (start + kernel as i64).min((len + pad) as i64);
        let padded = (end - start).max(0) as usize;
        match segs.last_mut() {
            Some(s) if s.taps == taps && s.padded == padded => s.hi = o + 1,
            _ => segs.push(Segment {
                lo: o,
                hi: o + 1,
                taps,
                padded,
            }),
        }
    }
    segs
}

/// What a window tile needs while emitting one block.
struct Tile<'a> {
    w: &'a Window,
    /// Channels in this tile.
    mt: usize,
    /// The group's input planes.
    xg: Value,
    /// The tile's packed block (convolutions).
    blk: Option<Value>,
    /// Byte offset of the output plane (pools; convolutions read a table).
    out_off: Option<Value>,
    /// A depthwise tile's weights, one broadcast per tap, loaded once for
    /// the whole plane.
    taps: Vec<Value>,
    /// A row-split convolution's row copied to the stack: its address and
    /// the bytes between channels.
    row_copy: Option<(Value, i64)>,
}

fn window_unit(g: &mut Gen, w: &Window, io: &Io, u: Value) {
    if w.split_rows {
        return window_rows_unit(g, w, io, u);
    }
    let tpg = w.tiles_per_group() as i64;
    let (grp, t) = if tpg == 1 {
        (u, None)
    } else {
        let grp = g.b.ins().udiv_imm_u(u, tpg);
        let base = g.b.ins().imul_imm_s(grp, tpg);
        (grp, Some(g.b.ins().isub(u, base)))
    };
    let in_plane = w.in_plane() as i64;
    let out_plane = w.out_plane() as i64;
    let xoff = g.b.ins().imul_imm_s(grp, w.cin_g as i64 * in_plane * 4);
    let xg = g.b.ins().iadd(io.ins[0], xoff);
    let (full, rem) = w.tiles();
    if w.reduce != Reduce::Fma {
        let ooff = g.b.ins().imul_imm_s(grp, out_plane * 4);
        let tile = Tile {
            w,
            mt: 1,
            xg,
            blk: None,
            out_off: Some(ooff),
            taps: Vec::new(),
            row_copy: None,
        };
        window_tile(g, &tile, io);
        return;
    }
    let goff = g.b.ins().imul_imm_s(grp, w.group_len() as i64 * 4);
    let gblk = g.b.ins().iadd(io.packed, goff);
    let blk = match t {
        Some(t) => {
            let toff = g.b.ins().imul_imm_s(t, w.block_len(w.m) as i64 * 4);
            g.b.ins().iadd(gblk, toff)
        }
        None => gblk,
    };
    // Depthwise: nine weights (for 3x3) stay in registers; with the two
    // accumulators and inputs of a block that is 13 of the 16.
    let taps: Vec<Value> = if w.cin_g == 1 && w.cout_g == 1 && w.nv <= 2 && w.taps() <= 9 {
        (0..w.taps())
            .map(|t| g.bcast(F32X4, blk, (t * 4) as i64))
            .collect()
    } else {
        Vec::new()
    };
    let tile = |mt| Tile {
        w,
        mt,
        xg,
        blk: Some(blk),
        out_off: None,
        taps: taps.clone(),
        row_copy: None,
    };
    match (full, rem, t) {
        (f, r, Some(t)) if f > 0 && r > 0 => {
            let c = g.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, t, f as i64);
            g.if_else(
                c,
                |g| window_tile(g, &tile(w.m), io),
                |g| window_tile(g, &tile(r), io),
            );
        }
        (0, r, _) => window_tile(g, &tile(r), io),
        _ => window_tile(g, &tile(w.m), io),
    }
}

/// One column item of a row: a run of vector blocks or of scalar columns.
#[derive(Debug, Clone)]
enum Cols {
    /// `count` blocks of `nv` vectors starting at `start`.
    Vectors {
        start: usize,
        count: usize,
        nv: usize,
    },
    /// Single columns `lo..hi` seeing `taps`.
    Scalars(Segment),
    /// One block of `nv` vectors at column `start` (a constant) whose taps
    /// may reach into the padding (see [`edge_plan`]).
    Edge { start: usize, nv: usize },
}

/// The column plan of a stride-1 convolution with its padding in vectors:
/// blocks from column 0, the last one overlapping its neighbour, the
/// blocks at the ends of the row loading within the row and shifting the
/// padding's zeros in. None when that does not apply: pools (their
/// padding is not zero), blocks that may not overlap, rows narrower than
/// a vector, windows reaching more than three columns past an end.
fn edge_plan(w: &Window) -> Option<Vec<Cols>> {
    let [_, in_w] = w.in_hw;
    let [_, out_w] = w.out_hw;
    let (k, p, d) = (w.kernel[1], w.padding[1], w.dilation[1]);
    let reach_right = ((k - 1) * d) as i64 - p as i64;
    if w.reduce != Reduce::Fma
        || w.stride[1] != 1
        || !w.overlap
        || w.split_rows
        || p == 0
        || p > 3
        || !(0..=3).contains(&reach_right)
        || in_w < 4
        || out_w < 4
    {
        return None;
    }
    let nv = if out_w >= 4 * w.nv { w.nv } else { 1 };
    let nb = 4 * nv;
    let mut starts: Vec<usize> = (0..out_w / nb).map(|b| b * nb).collect();
    if out_w % nb != 0 {
        starts.push(out_w - nb);
    }
    let inside = |c: usize| c >= p && (c + nb - 1) as i64 + reach_right < in_w as i64;
    let mut items = Vec::new();
    let mut i = 0;
    while i < starts.len() {
        let c = starts[i];
        if !inside(c) {
            items.push(Cols::Edge { start: c, nv });
            i += 1;
            continue;
        }
        // A run of evenly spaced blocks inside the row.
        let mut count = 1;
        while i + count < starts.len()
            && starts[i + count] == c + count * nb
            && inside(starts[i + count])
        {
            count += 1;
        }
        items.push(Cols::Vectors {
            start: c,
            count,
            nv,
        });
        i += count;
    }
    Some(items)
}

/// The column plan of a row, shared by every row of a window kernel.
fn column_plan(w: &Window) -> Vec<Cols> {
    if let Some(items) = edge_plan(w) {
        return items;
    }
    let [_, in_w] = w.in_hw;
    let [_, out_w] = w.out_hw;
    let (k, s, p, d) = (w.kernel[1], w.stride[1], w.padding[1], w.dilation[1]);
    let segs = segments(out_w, in_w, k, s, p, d);
    let vec_ok = |ox: usize| {
        let last = (ox * s + (k - 1) * d) as i64 - p as i64;
        let extra = if s == 2 { 1 } else { 0 };
        (ox * s) as i64 >= p as i64 && last + extra < in_w as i64
    };
    let mut items = Vec::new();
    for seg in segs {
        let full = seg.taps.len() == k && seg.padded == k;
        if !full {
            items.push(Cols::Scalars(seg));
            continue;
        }
        // The vector-safe part of a full segment is a prefix of it.
        let mut bv = seg.lo;
        while bv < seg.hi && vec_ok(bv) {
            bv += 1;
        }
        let (a, len) = (seg.lo, bv - seg.lo);
        let nb = 4 * w.nv;
        let mut scalar_from = bv;
        if len >= nb {
            items.push(Cols::Vectors {
                start: a,
                count: len / nb,
                nv: w.nv,
            });
            let done = a + len / nb * nb;
            if done < bv {
                if w.overlap {
                    items.push(Cols::Vectors {
                        start: bv - nb,
                        count: 1,
                        nv: w.nv,
                    });
                } else {
                    let nv = (bv - done) / 4;
                    if nv > 0 {
                        items.push(Cols::Vectors {
                            start: done,
                            count: 1,
                            nv,
                        });
                    }
                    scalar_from = done + 4 * nv;
                    if scalar_from < bv {
                        items.push(Cols::Scalars(Segment {
                            lo: scalar_from,
                            hi: bv,
                            ..seg.clone()
                        }));
                    }
                    scalar_from = bv;
                }
            }
        } else if len >= 4 {
            let nv = len / 4;
            items.push(Cols::Vectors {
                start: a,
                count: 1,
                nv,
            });
            if len % 4 != 0 {
                if w.overlap {
                    items.push(Cols::Vectors {
                        start: bv - 4 * nv,
                        count: 1,
                        nv,
                    });
                } else {
                    items.push(Cols::Scalars(Segment {
                        lo: a + 4 * nv,
                        hi: bv,
                        ..seg.clone()
                    }));
                }
            }
        } else {
            scalar_from = a;
        }
        if scalar_from < seg.hi {
            items.push(Cols::Scalars(Segment {
                lo: scalar_from,
                hi: seg.hi,
                ..seg
            }));
        }
    }
    items
}

fn window_tile(g: &mut Gen, tile: &Tile, io: &Io) {
    let w = tile.w;
    let [in_h, _] = w.in_hw;
    let rows = segments(
        w.out_hw[0],
        in_h,
        w.kernel[0],
        w.stride[0],
        w.padding[0],
        w.dilation[0],
    );
    let cols = column_plan(w);
    for row in &rows {
        g.for_const(row.lo as i64, row.hi as i64, 1, |g, oy| {
            window_row(g, tile, io, oy, row, &cols)
        });
    }
}

/// One output row of a tile.
fn window_row(g: &mut Gen, tile: &Tile, io: &Io, oy: Value, row: &Segment, cols: &[Cols]) {
    for item in cols {
        match item {
            Cols::Vectors { start, count, nv } => {
                let nb = (4 * nv) as i64;
                let (s, e) = (*start as i64, *start as i64 + *count as i64 * nb);
                g.for_const(s, e, nb, |g, ox| {
                    window_block(g, tile, io, oy, ox, F32X4, *nv, row, None, None)
                });
            }
            Cols::Scalars(seg) => {
                g.for_const(seg.lo as i64, seg.hi as i64, 1, |g, ox| {
                    window_block(g, tile, io, oy, ox, F32, 1, row, Some(seg), None)
                });
            }
            Cols::Edge { start, nv } => {
                let ox = g.int(*start as i64);
                window_block(g, tile, io, oy, ox, F32X4, *nv, row, None, Some(*start));
            }
        }
    }
}

/// A unit of a row-split convolution (1x1, stride 1, no padding: every
/// row sees every tap): one row of one group, all channel tiles, so the
/// row's inputs stay in L1 while every tile reads them.
fn window_rows_unit(g: &mut Gen, w: &Window, io: &Io, u: Value) {
    let rows = w.out_hw[0] as i64;
    let grp = g.b.ins().udiv_imm_u(u, rows);
    let base = g.b.ins().imul_imm_s(grp, rows);
    let oy = g.b.ins().isub(u, base);
    let in_plane = w.in_plane() as i64;
    let xoff = g.b.ins().imul_imm_s(grp, w.cin_g as i64 * in_plane * 4);
    let xg = g.b.ins().iadd(io.ins[0], xoff);
    let goff = g.b.ins().imul_imm_s(grp, w.group_len() as i64 * 4);
    let gblk = g.b.ins().iadd(io.packed, goff);
    let row = Segment {
        lo: 0,
        hi: w.out_hw[0],
        taps: vec![0],
        padded: 1,
    };
    let cols = column_plan(w);
    // Rows of planes whose channels are not 16-byte aligned apart are
    // copied to the stack first: the vector loads then never straddle
    // cache lines, and walk one small contiguous block.
    let r = w.in_hw[1];
    let copy_bytes = (w.cin_g * r * 4) as u32;
    let slot = ((in_plane * 4) % 16 != 0 && copy_bytes as usize <= MAX_ROW_COPY).then(|| {
        let slot = g.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            copy_bytes,
            4,
        ));
        g.b.ins().stack_addr(I64, slot, 0)
    });
    let src = g.b.ins().imul_imm_s(oy, (r * 4) as i64);
    let src = g.b.ins().iadd(xg, src);
    let with_row = |g: &mut Gen, width: usize, cols: &[Cols]| {
        let row_copy = slot.map(|dst| {
            copy_row(g, src, in_plane * 4, dst, (r * 4) as i64, w.cin_g, width);
            (dst, (r * 4) as i64)
        });
        rows_tiles(g, w, io, xg, gblk, oy, &row, cols, row_copy);
    };
    if w.last_w == r {
        with_row(g, r, &cols);
        return;
    }
    // The last row is shorter: its own column plan.
    let last_cols = column_plan(&Window {
        in_hw: [1, w.last_w],
        out_hw: [1, w.last_w],
        ..w.clone()
    });
    let is_last = g.b.ins().icmp_imm_s(IntCC::Equal, oy, rows - 1);
    g.if_else(
        is_last,
        |g| with_row(g, w.last_w, &last_cols),
        |g| with_row(g, r, &cols),
    );
}

/// Copies `width` floats of each of `channels` rows, `src_stride` bytes
/// apart from `src`, to rows `dst_stride` bytes apart from `dst`.
fn copy_row(
    g: &mut Gen,
    src: Value,
    src_stride: i64,
    dst: Value,
    dst_stride: i64,
    channels: usize,
    width: usize,
) {
    let svar = g.b.declare_var(I64);
    let dvar = g.b.declare_var(I64);
    g.b.def_var(svar, src);
    g.b.def_var(dvar, dst);
    g.for_const(0, channels as i64, 1, |g, _| {
        let s = g.b.use_var(svar);
        let d = g.b.use_var(dvar);
        for v in 0..width / 4 {
            let x = g.load(F32X4, s, 16 * v as i64);
            g.store(x, d, 16 * v as i64);
        }
        for e in (width / 4 * 4)..width {
            let x = g.load(F32, s, 4 * e as i64);
            g.store(x, d, 4 * e as i64);
        }
        let s = g.b.ins().iadd_imm_s(s, src_stride);
        let d = g.b.ins().iadd_imm_s(d, dst_stride);
        g.b.def_var(svar, s);
        g.b.def_var(dvar, d);
    });
}

/// Every channel tile of one row of a row-split convolution.
#[allow(clippy::too_many_arguments)]
fn rows_tiles(
    g: &mut Gen,
    w: &Window,
    io: &Io,
    xg: Value,
    gblk: Value,
    oy: Value,
    row: &Segment,
    cols: &[Cols],
    row_copy: Option<(Value, i64)>,
) {
    let (full, rem) = w.tiles();
    let bl = (w.block_len(w.m) * 4) as i64;
    g.for_const(0, full as i64 * bl, bl, |g, off| {
        let blk = g.b.ins().iadd(gblk, off);
        let tile = Tile {
            w,
            mt: w.m,
            xg,
            blk: Some(blk),
            out_off: None,
            taps: Vec::new(),
            row_copy,
        };
        window_row(g, &tile, io, oy, row, cols);
    });
    if rem > 0 {
        let blk = g.b.ins().iadd_imm_s(gblk, full as i64 * bl);
        let tile = Tile {
            w,
            mt: rem,
            xg,
            blk: Some(blk),
            out_off: None,
            taps: Vec::new(),
            row_copy,
        };
        window_row(g, &tile, io, oy, row, cols);
    }
}

/// Loads the inputs of `nv` vectors (or one scalar) of one tap:
/// elements `base + (lane * stride)` for each lane, `base` at byte offset
/// `off` from `p`.
fn load_inputs(
    g: &mut Gen,
    ty: Type,
    p: Value,
    off: i64,
    nv: usize,
    stride: usize,
    loads: &mut Loads,
) -> Vec<Value> {
    (0..nv)
        .map(|v| {
            let o = off + (4 * v * stride * 4) as i64;
            if ty == F32 {
                return g.load(F32, p, o);
            }
            match stride {
                // Loaded as integers: x86 cannot fold the load into an FMA
                // then, so the FMA may overwrite the fresh register
                // instead of a shared multiplicand that would need a copy.
                1 => {
                    let le = MemFlagsData::new()
                        .with_endianness(cranelift_codegen::ir::Endianness::Little);
                    let raw = g.load(I32X4, p, o);
                    g.b.ins().bitcast(F32X4, le, raw)
                }
                // Even lanes of two loads; the odd lanes of the pair one
                // element back when an earlier tap loaded it (taps kx and
                // kx + 1 share their loads).
                2 => match (loads.get(&(p, o - 4)), loads.get(&(p, o + 12))) {
                    (Some(&a), Some(&b)) => g.deinterleave(a, b, 1),
                    _ => {
                        let a = loads.load(g, p, o);
                        let b = loads.load(g, p, o + 16);
                        g.deinterleave(a, b, 0)
                    }
                },
                s => {
                    let l0 = g.load(F32, p, o);
                    let mut vec = g.b.ins().scalar_to_vector(F32X4, l0);
                    for lane in 1..4u8 {
                        let x = g.load(F32, p, o + (lane as usize * s * 4) as i64);
                        vec = g.b.ins().insertlane(vec, x, lane);
                    }
                    vec
                }
            }
        })
        .collect()
}

/// The vector loads of one basic block, by base and offset, so that a tap
/// can reuse what another loaded.
/// Only for one-channel tiles: with several channels, keeping the loads
/// alive costs more registers than it saves loads (measured on the
/// stem).
struct Loads(std::collections::HashMap<(Value, i64), Value>, bool);

impl Loads {
    fn get(&self, key: &(Value, i64)) -> Option<&Value> {
        if self.1 {
            self.0.get(key)
        } else {
            None
        }
    }

    fn load(&mut self, g: &mut Gen, p: Value, o: i64) -> Value {
        *self.0.entry((p, o)).or_insert_with(|| g.load(F32X4, p, o))
    }
}

/// One register tile: `mt` channels x `nv` vectors (or one scalar column)
/// at output row `oy`, column `ox`.
#[allow(clippy::too_many_arguments)]
fn window_block(
    g: &mut Gen,
    tile: &Tile,
    io: &Io,
    oy: Value,
    ox: Value,
    ty: Type,
    nv: usize,
    row: &Segment,
    col: Option<&Segment>,
    edge: Option<usize>,
) {
    let w = tile.w;
    let mt = tile.mt;
    let [_, in_w] = w.in_hw;
    let [_, out_w] = w.out_hw;
    let (sy, sx) = (w.stride[0] as i64, w.stride[1] as i64);
    let (py, px) = (w.padding[0] as i64, w.padding[1] as i64);
    let (dy, dx) = (w.dilation[0] as i64, w.dilation[1] as i64);
    let in_plane = w.in_plane() as i64;
    let kw = w.kernel[1];
    let all_kx: Vec<usize> = (0..kw).collect();
    let kxs = col.map_or(&all_kx[..], |c| &c.taps[..]);
    let taps: Vec<(usize, usize)> = row
        .taps
        .iter()
        .flat_map(|&ky| kxs.iter().map(move |&kx| (ky, kx)))
        .collect();
    // p = xg + ((oy*sy - py) * in_w + ox*sx - px) * 4
    let ry = g.b.ins().imul_imm_s(oy, sy * in_w as i64 * 4);
    let rx = g.b.ins().imul_imm_s(ox, sx * 4);
    let (p, in_plane) = match tile.row_copy {
        // 1x1, stride 1, unpadded: the column is the offset in the row.
        Some((base, stride)) => (g.b.ins().iadd(base, rx), stride / 4),
        None => {
            let r = g.b.ins().iadd(ry, rx);
            let r = g.b.ins().iadd_imm_s(r, -(py * in_w as i64 + px) * 4);
            (g.b.ins().iadd(tile.xg, r), in_plane)
        }
    };
    let tap_off = |ky: usize, kx: usize| (ky as i64 * dy * in_w as i64 + kx as i64 * dx) * 4;

    let init = match w.reduce {
        Reduce::Max => f32::NEG_INFINITY,
        _ => 0.0,
    };
    // A single column of a multi-channel convolution keeps the channels in
    // the lanes instead: `[ceil(mt / 4)][LANE_SUMS]` vector accumulators,
    // each tap's `mt` weights one vector load, the input one broadcast,
    // and the taps spread over LANE_SUMS partial sums so the FMAs do not
    // wait on each other. A column costs a quarter of a block of eight
    // instead of two thirds (scalar FMAs per channel, bound by loads).
    let lanes = ty == F32 && w.reduce == Reduce::Fma && mt >= 2;
    let mut acc: Vec<Vec<Value>> = if lanes {
        (0..mt.div_ceil(4))
            .map(|_| (0..LANE_SUMS).map(|_| g.fconst(F32X4, 0.0)).collect())
            .collect()
    } else {
        (0..mt)
            .map(|_| (0..nv).map(|_| g.fconst(ty, init)).collect())
            .collect()
    };
    match w.reduce {
        Reduce::Fma => {
            let blk = tile.blk.unwrap_or(io.packed);
            let ntaps = w.taps();
            let ic_bytes = (ntaps * mt * 4) as i64;
            let vector_weights = ty == F32X4 && mt >= 2 && mt * nv + nv + 2 <= 16;
            let body =
                |g: &mut Gen, acc: &mut Vec<Vec<Value>>, pic: Value, wic: Value, unroll: usize| {
                    let mut step = 0;
                    let mut loads = Loads(Default::default(), mt == 1);
                    for uu in 0..unroll {
                        for &(ky, kx) in &taps {
                            if lanes {
                                let off = tap_off(ky, kx) + uu as i64 * in_plane * 4;
                                let x = g.bcast(F32X4, pic, off);
                                let woff0 =
                                    uu as i64 * ic_bytes + (((ky * kw + kx) * mt) * 4) as i64;
                                for (q, accq) in acc.iter_mut().enumerate() {
                                    // The last vector may read up to three
                                    // floats past this tap's weights, still
                                    // inside the block (the bias and offset
                                    // tables follow the weights).
                                    let wv = g.load(F32X4, wic, woff0 + 16 * q as i64);
                                    let a = &mut accq[step % LANE_SUMS];
                                    *a = g.mac(wv, x, *a);
                                }
                                step += 1;
                                continue;
                            }
                            let off = tap_off(ky, kx) + uu as i64 * in_plane * 4;
                            let xs = match edge {
                                Some(ox0) => (0..nv)
                                    .map(|v| {
                                        let e = (ox0 + 4 * v + kx * dx as usize) as i64 - px;
                                        g.edge_load(pic, off + 16 * v as i64, e, in_w as i64)
                                    })
                                    .collect(),
                                None => load_inputs(g, ty, pic, off, nv, w.stride[1], &mut loads),
                            };
                            let woff0 = uu as i64 * ic_bytes + (((ky * kw + kx) * mt) * 4) as i64;
                            // The tile's weights of this tap are `mt`
                            // consecutive floats: loaded as vectors and
                            // splatted by lane (one load per four weights
                            // instead of one per weight). The last vector
                            // may read up to three floats past them, still
                            // inside the block (the bias and offset tables
                            // follow the weights).
                            let wvecs: Vec<Value> = if vector_weights {
                                (0..mt.div_ceil(4))
                                    .map(|q| g.load(F32X4, wic, woff0 + 16 * q as i64))
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            for (j, accj) in acc.iter_mut().enumerate() {
                                let woff = woff0 + (j * 4) as i64;
                                // One broadcast per channel, shared by the
                                // row's vectors. x86's FMA overwrites a
                                // multiplicand (vfmadd213/132), so each use
                                // but the last is a register copy, which
                                // the renamer eliminates; a fresh
                                // `vbroadcastss` per multiply-add instead
                                // saturates the load ports (measured: 23
                                // vs 29 G MAC/s on Zen 4 for a 6x2 tile).
                                // Tiles too large to keep the copy in a
                                // register take the fresh broadcasts.
                                let held = (ty == F32X4 && !tile.taps.is_empty())
                                    .then(|| tile.taps[ky * kw + kx]);
                                let shared = if let Some(h) = held {
                                    Some(h)
                                } else if vector_weights {
                                    Some(g.lane_splat(wvecs[j / 4], (j % 4) as u8))
                                } else {
                                    (mt * nv + nv + 2 <= 16).then(|| g.bcast(ty, wic, woff))
                                };
                                for (a, &x) in accj.iter_mut().zip(&xs) {
                                    let wv = match shared {
                                        Some(wv) => wv,
                                        None => g.bcast(ty, wic, woff),
                                    };
                                    // x86 FMAs overwrite their first
                                    // operand: the value used only here
                                    // (the inputs, in the last row).
                                    *a = if mt == 1 || j + 1 == mt {
                                        g.mac(x, wv, *a)
                                    } else {
                                        g.mac(wv, x, *a)
                                    };
                                }
                            }
                        }
                    }
                };
            let work = w.cin_g * taps.len() * mt * nv;
            if w.cin_g == 1 || work <= 256 {
                body(g, &mut acc, p, blk, w.cin_g);
            } else {
                let unroll = if ntaps == 1 {
                    [8, 4, 2, 1]
                        .into_iter()
                        .find(|u| w.cin_g.is_multiple_of(*u))
                        .unwrap_or(1)
                } else {
                    1
                };
                let vars: Vec<Vec<_>> = acc
                    .iter()
                    .map(|r| {
                        r.iter()
                            .map(|&v| {
                                let var = g.b.declare_var(if lanes { F32X4 } else { ty });
                                g.b.def_var(var, v);
                                var
                            })
                            .collect()
                    })
                    .collect();
                let pvar = g.b.declare_var(I64);
                g.b.def_var(pvar, p);
                let end = (w.cin_g as i64) * ic_bytes;
                let zero = g.int(0);
                let endv = g.int(end);
                g.for_loop(zero, endv, ic_bytes * unroll as i64, |g, k| {
                    let wic = g.b.ins().iadd(blk, k);
                    let pic = g.b.use_var(pvar);
                    let mut a: Vec<Vec<Value>> = vars
                        .iter()
                        .map(|r| r.iter().map(|&v| g.b.use_var(v)).collect())
                        .collect();
                    body(g, &mut a, pic, wic, unroll);
                    for (r, vr) in a.iter().zip(&vars) {
                        for (&v, &var) in r.iter().zip(vr) {
                            g.b.def_var(var, v);
                        }
                    }
                    let next = g.b.ins().iadd_imm_s(pic, unroll as i64 * in_plane * 4);
                    g.b.def_var(pvar, next);
                });
                acc = vars
                    .iter()
                    .map(|r| r.iter().map(|&v| g.b.use_var(v)).collect())
                    .collect();
            }
        }
        Reduce::Max => {
            // The reference keeps the first NaN it meets. Here: `m < x ?
            // x : m` for numbers (x86: one `maxps`, which takes x when
            // either is NaN), and a mask of the lanes that saw a NaN,
            // applied at the end.
            let mut nan: Vec<Option<Value>> = vec![None; nv];
            let mut loads = Loads(Default::default(), true);
            for &(ky, kx) in &taps {
                let xs = load_inputs(g, ty, p, tap_off(ky, kx), nv, w.stride[1], &mut loads);
                for ((a, x), n) in acc[0].iter_mut().zip(xs).zip(nan.iter_mut()) {
                    let lt = g.b.ins().fcmp(FloatCC::LessThan, x, *a);
                    *a = g.choose(ty, lt, *a, x);
                    let un = g.b.ins().fcmp(FloatCC::Unordered, x, x);
                    *n = Some(match *n {
                        Some(prev) => g.b.ins().bor(prev, un),
                        None => un,
                    });
                }
            }
            for (a, n) in acc[0].iter_mut().zip(nan) {
                if let Some(n) = n {
                    let q = g.fconst(ty, f32::NAN);
                    *a = g.choose(ty, n, q, *a);
                }
            }
        }
        Reduce::Avg { .. } => {
            let mut loads = Loads(Default::default(), true);
            for &(ky, kx) in &taps {
                let xs = load_inputs(g, ty, p, tap_off(ky, kx), nv, w.stride[1], &mut loads);
                for (a, x) in acc[0].iter_mut().zip(xs) {
                    *a = g.b.ins().fadd(*a, x);
                }
            }
        }
    }

    if lanes {
        // Back to one scalar per channel: sum the partial sums, then take
        // the lanes apart.
        let sums: Vec<Value> = acc
            .iter()
            .map(|parts| {
                let mut parts = parts.clone();
                while parts.len() > 1 {
                    let b = parts.pop().unwrap_or_else(|| unreachable!());
                    let a = parts.pop().unwrap_or_else(|| unreachable!());
                    parts.insert(0, g.b.ins().fadd(a, b));
                }
                parts[0]
            })
            .collect();
        acc = (0..mt)
            .map(|j| vec![g.b.ins().extractlane(sums[j / 4], (j % 4) as u8)])
            .collect();
    }

    // Epilogue: bias, residual, activation or divisor, store.
    let orow = g.b.ins().imul_imm_s(oy, out_w as i64 * 4);
    let ocol = g.b.ins().imul_imm_s(ox, 4);
    let opos = g.b.ins().iadd(orow, ocol);
    let divisor = match w.reduce {
        Reduce::Avg { count_include_pad } => {
            let kx_padded = col.map_or(kw, |c| c.padded);
            let d = if count_include_pad {
                row.padded * kx_padded
            } else {
                taps.len()
            };
            Some(d)
        }
        _ => None,
    };
    for (j, accj) in acc.iter().enumerate() {
        let (ooff, bias) = match tile.blk {
            Some(blk) => {
                let wlen = (w.cin_g * w.taps() * mt) as i64;
                let bias = g.bcast(ty, blk, (wlen + j as i64) * 4);
                let off = g.load(I32, blk, (wlen + mt as i64 + j as i64) * 4);
                (g.b.ins().uextend(I64, off), Some(bias))
            }
            None => (tile.out_off.unwrap_or(opos), None),
        };
        let at = g.b.ins().iadd(ooff, opos);
        let dst = g.b.ins().iadd(io.out, at);
        let res = if w.residual {
            Some(g.b.ins().iadd(io.ins[1], at))
        } else {
            None
        };
        for (v, &a) in accj.iter().enumerate() {
            let mut val = a;
            if let Some(bias) = bias {
                val = g.b.ins().fadd(val, bias);
            }
            if let Some(res) = res {
                let r = g.load(ty, res, 16 * v as i64);
                val = g.b.ins().fadd(val, r);
            }
            match divisor {
                Some(0) => val = g.fconst(ty, 0.0),
                Some(d) => {
                    let dv = g.fconst(ty, d as f32);
                    val = g.b.ins().fdiv(val, dv);
                }
                None => {}
            }
            val = g.activation(ty, w.activation, val);
            g.store(val, dst, 16 * v as i64);
        }
    }
}

fn elementwise_unit(g: &mut Gen, op: Elementwise, channels: usize, len: usize, io: &Io, c: Value) {
    let off = g.b.ins().imul_imm_s(c, len as i64 * 4);
    let x = g.b.ins().iadd(io.ins[0], off);
    let dst = g.b.ins().iadd(io.out, off);
    let y = match op {
        Elementwise::Add | Elementwise::Mul => Some(g.b.ins().iadd(io.ins[1], off)),
        _ => None,
    };
    let scalars = |g: &mut Gen| -> (Value, Value) {
        match op {
            Elementwise::Affine => {
                let at = g.b.ins().imul_imm_s(c, 4);
                let pc = g.b.ins().iadd(io.packed, at);
                let s = g.load(F32, pc, 0);
                let t = g.load(F32, pc, channels as i64 * 4);
                (s, t)
            }
            Elementwise::MulChannel => {
                let at = g.b.ins().imul_imm_s(c, 4);
                let pc = g.b.ins().iadd(io.ins[1], at);
                let s = g.load(F32, pc, 0);
                (s, s)
            }
            _ => {
                let z = g.b.ins().f32const(0.0);
                (z, z)
            }
        }
    };
    let (s, t) = scalars(g);
    let apply = |g: &mut Gen, ty: Type, xv: Value, yv: Option<Value>| -> Value {
        match op {
            Elementwise::Affine => {
                let sv = g.splat(ty, s);
                let tv = g.splat(ty, t);
                g.mac(xv, sv, tv)
            }
            Elementwise::MulChannel => {
                let sv = g.splat(ty, s);
                g.b.ins().fmul(xv, sv)
            }
            Elementwise::Relu => g.activation(ty, Activation::Relu, xv),
            Elementwise::Relu6 => g.activation(ty, Activation::Relu6, xv),
            Elementwise::Sigmoid => {
                let n = g.b.ins().fneg(xv);
                let e = g.exp(ty, n);
                let one = g.fconst(ty, 1.0);
                let d = g.b.ins().fadd(one, e);
                g.b.ins().fdiv(one, d)
            }
            Elementwise::HardSigmoid | Elementwise::HardSwish => {
                // relu6(x + 3) / 6, as shufflekit_ir::ops::hard_sigmoid.
                let three = g.fconst(ty, 3.0);
                let six = g.fconst(ty, 6.0);
                let t = g.b.ins().fadd(xv, three);
                let t = g.activation(ty, Activation::Relu6, t);
                let h = g.b.ins().fdiv(t, six);
                if op == Elementwise::HardSwish {
                    g.b.ins().fmul(xv, h)
                } else {
                    h
                }
            }
            Elementwise::Add => g.b.ins().fadd(xv, yv.unwrap_or(xv)),
            Elementwise::Mul => g.b.ins().fmul(xv, yv.unwrap_or(xv)),
        }
    };
    let vecs = (len / 4) as i64;
    g.for_const(0, vecs * 16, 16, |g, k| {
        let xp = g.b.ins().iadd(x, k);
        let xv = g.load(F32X4, xp, 0);
        let yv = y.map(|y| {
            let yp = g.b.ins().iadd(y, k);
            g.load(F32X4, yp, 0)
        });
        let r = apply(g, F32X4, xv, yv);
        let dp = g.b.ins().iadd(dst, k);
        g.store(r, dp, 0);
    });
    for i in (vecs * 4)..len as i64 {
        let xv = g.load(F32, x, 4 * i);
        let yv = y.map(|y| g.load(F32, y, 4 * i));
        let r = apply(g, F32, xv, yv);
        g.store(r, dst, 4 * i);
    }
}

fn global_avg_unit(g: &mut Gen, len: usize, io: &Io, c: Value) {
    let off = g.b.ins().imul_imm_s(c, len as i64 * 4);
    let x = g.b.ins().iadd(io.ins[0], off);
    let vecs = (len / 4) as i64;
    let var = g.b.declare_var(F32X4);
    let z = g.fconst(F32X4, 0.0);
    g.b.def_var(var, z);
    g.for_const(0, vecs * 16, 16, |g, k| {
        let xp = g.b.ins().iadd(x, k);
        let v = g.load(F32X4, xp, 0);
        let a = g.b.use_var(var);
        let s = g.b.ins().fadd(a, v);
        g.b.def_var(var, s);
    });
    let a = g.b.use_var(var);
    let mut sum = g.hsum(a);
    for i in (vecs * 4)..len as i64 {
        let v = g.load(F32, x, 4 * i);
        sum = g.b.ins().fadd(sum, v);
    }
    let n = g.b.ins().f32const(len as f32);
    let mean = g.b.ins().fdiv(sum, n);
    let o = g.b.ins().imul_imm_s(c, 4);
    let dst = g.b.ins().iadd(io.out, o);
    g.store(mean, dst, 0);
}

fn gather_unit(g: &mut Gen, len: usize, act: Activation, io: &Io, k: Value) {
    let at = g.b.ins().imul_imm_s(k, 8);
    let entry = g.b.ins().iadd(io.packed, at);
    let slot = g.load(I32, entry, 0);
    let off = g.load(I32, entry, 4);
    let slot = g.b.ins().uextend(I64, slot);
    let off = g.b.ins().uextend(I64, off);
    let slot_at = g.b.ins().imul_imm_s(slot, 8);
    let slot_ptr = g.b.ins().iadd(io.ptrs, slot_at);
    let base = g.load(I64, slot_ptr, 8);
    let src = g.b.ins().iadd(base, off);
    let doff = g.b.ins().imul_imm_s(k, len as i64 * 4);
    let dst = g.b.ins().iadd(io.out, doff);
    g.copy(dst, src, len, act);
}

fn linear_unit(g: &mut Gen, inputs: usize, outputs: usize, m: usize, io: &Io, t: Value) {
    let tiles = outputs.div_ceil(m);
    let rem = outputs - (tiles - 1) * m;
    let tile = |g: &mut Gen, mt: usize| {
        let boff = g.b.ins().imul_imm_s(t, (m * (inputs + 1) * 4) as i64);
        let blk = g.b.ins().iadd(io.packed, boff);
        let chunks = inputs / 4;
        let vars: Vec<_> = (0..mt)
            .map(|_| {
                let var = g.b.declare_var(F32X4);
                let z = g.fconst(F32X4, 0.0);
                g.b.def_var(var, z);
                var
            })
            .collect();
        let x = io.ins[0];
        g.for_const(0, chunks as i64, 1, |g, q| {
            let xo = g.b.ins().imul_imm_s(q, 16);
            let xp = g.b.ins().iadd(x, xo);
            let xv = g.load(F32X4, xp, 0);
            let wo = g.b.ins().imul_imm_s(q, (mt * 16) as i64);
            let wp = g.b.ins().iadd(blk, wo);
            for (j, &var) in vars.iter().enumerate() {
                let wv = g.load(F32X4, wp, 16 * j as i64);
                let a = g.b.use_var(var);
                let r = g.mac(wv, xv, a);
                g.b.def_var(var, r);
            }
        });
        let tail = (chunks * 4 * mt * 4) as i64;
        let bias_at = (inputs * mt * 4) as i64;
        let o0 = g.b.ins().imul_imm_s(t, (m * 4) as i64);
        let dst = g.b.ins().iadd(io.out, o0);
        for (j, &var) in vars.iter().enumerate() {
            let a = g.b.use_var(var);
            let mut s = g.hsum(a);
            for r in 0..inputs % 4 {
                let wv = g.load(F32, blk, tail + ((r * mt + j) * 4) as i64);
                let xv = g.load(F32, x, ((chunks * 4 + r) * 4) as i64);
                s = g.mac(wv, xv, s);
            }
            let b = g.load(F32, blk, bias_at + 4 * j as i64);
            s = g.b.ins().fadd(s, b);
            g.store(s, dst, 4 * j as i64);
        }
    };
    if rem == m {
        tile(g, m);
    } else if tiles == 1 {
        tile(g, rem);
    } else {
        let c =
            g.b.ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, t, (tiles - 1) as i64);
        g.if_else(c, |g| tile(g, m), |g| tile(g, rem));
    }
}

fn softmax(g: &mut Gen, channels: usize, spatial: usize, io: &Io) {
    let (x, out) = (io.ins[0], io.out);
    if spatial == 1 {
        // Channels are contiguous: vectors along them.
        let vecs = (channels / 4) as i64;
        let tail = (vecs * 4)..channels as i64;
        let mvar = g.b.declare_var(F32X4);
        let ninf = g.fconst(F32X4, f32::NEG_INFINITY);
        g.b.def_var(mvar, ninf);
        g.for_const(0, vecs * 16, 16, |g, k| {
            let p = g.b.ins().iadd(x, k);
            let v = g.load(F32X4, p, 0);
            let m = g.b.use_var(mvar);
            let r = g.max(F32X4, v, m);
            g.b.def_var(mvar, r);
        });
        let mv = g.b.use_var(mvar);
        let mut max = g.b.ins().extractlane(mv, 0);
        for l in 1..4 {
            let e = g.b.ins().extractlane(mv, l);
            max = g.max(F32, e, max);
        }
        for i in tail.clone() {
            let v = g.load(F32, x, 4 * i);
            max = g.max(F32, v, max);
        }
        let maxv = g.splat(F32X4, max);
        let svar = g.b.declare_var(F32X4);
        let z = g.fconst(F32X4, 0.0);
        g.b.def_var(svar, z);
        g.for_const(0, vecs * 16, 16, |g, k| {
            let p = g.b.ins().iadd(x, k);
            let v = g.load(F32X4, p, 0);
            let d = g.b.ins().fsub(v, maxv);
            let e = g.exp(F32X4, d);
            let q = g.b.ins().iadd(out, k);
            g.store(e, q, 0);
            let s = g.b.use_var(svar);
            let s = g.b.ins().fadd(s, e);
            g.b.def_var(svar, s);
        });
        let sv = g.b.use_var(svar);
        let mut sum = g.hsum(sv);
        for i in tail.clone() {
            let v = g.load(F32, x, 4 * i);
            let d = g.b.ins().fsub(v, max);
            let e = g.exp(F32, d);
            g.store(e, out, 4 * i);
            sum = g.b.ins().fadd(sum, e);
        }
        let sumv = g.splat(F32X4, sum);
        g.for_const(0, vecs * 16, 16, |g, k| {
            let q = g.b.ins().iadd(out, k);
            let v = g.load(F32X4, q, 0);
            let r = g.b.ins().fdiv(v, sumv);
            g.store(r, q, 0);
        });
        for i in tail {
            let v = g.load(F32, out, 4 * i);
            let r = g.b.ins().fdiv(v, sum);
            g.store(r, out, 4 * i);
        }
        return;
    }
    // Channels are strided: one spatial position at a time.
    let stride = (spatial * 4) as i64;
    g.for_const(0, spatial as i64 * 4, 4, |g, s| {
        let xs = g.b.ins().iadd(x, s);
        let os = g.b.ins().iadd(out, s);
        let end = channels as i64 * stride;
        let mvar = g.b.declare_var(F32);
        let ninf = g.b.ins().f32const(f32::NEG_INFINITY);
        g.b.def_var(mvar, ninf);
        g.for_const(0, end, stride, |g, c| {
            let p = g.b.ins().iadd(xs, c);
            let v = g.load(F32, p, 0);
            let m = g.b.use_var(mvar);
            let r = g.max(F32, v, m);
            g.b.def_var(mvar, r);
        });
        let max = g.b.use_var(mvar);
        let svar = g.b.declare_var(F32);
        let z = g.b.ins().f32const(0.0);
        g.b.def_var(svar, z);
        g.for_const(0, end, stride, |g, c| {
            let p = g.b.ins().iadd(xs, c);
            let v = g.load(F32, p, 0);
            let d = g.b.ins().fsub(v, max);
            let e = g.exp(F32, d);
            let q = g.b.ins().iadd(os, c);
            g.store(e, q, 0);
            let s = g.b.use_var(svar);
            let s = g.b.ins().fadd(s, e);
            g.b.def_var(svar, s);
        });
        let sum = g.b.use_var(svar);
        g.for_const(0, end, stride, |g, c| {
            let q = g.b.ins().iadd(os, c);
            let v = g.load(F32, q, 0);
            let r = g.b.ins().fdiv(v, sum);
            g.store(r, q, 0);
        });
    });
}
