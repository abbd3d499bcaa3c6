//! The machine's multiply-add peak for the code this JIT can emit,
//! measured rather than assumed from a nominal clock: a loop of
//! independent multiply-adds run on each thread at once. At 128 bits it
//! is a Cranelift loop of `f32x4` multiply-adds; at 256 and 512 bits
//! (AVX2, AVX-512) the same recurrence written with `std::arch`.

use std::time::{Duration, Instant};

use cranelift_codegen::ir::types::{F32X4, I64};
use cranelift_codegen::ir::{condcodes::IntCC, Function};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, InstBuilder, MemFlagsData, Signature, UserFuncName,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};

use crate::isa::Isa;
use crate::target::Target;
use crate::JitError;

/// Independent accumulators: enough to cover the FMA latency on every
/// current core (4 cycles x 2 units needs 8).
const CHAINS: usize = 12;

/// A measured peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Multiply-adds per second on all threads together, in G.
    pub gmacs: f64,
    /// Threads that ran the loop at once.
    pub threads: usize,
    /// Whether the loop used fused multiply-add (else multiply then add).
    pub fma: bool,
    /// The vector tier of the loop.
    pub isa: Isa,
}

type LoopFn = unsafe extern "C" fn(i64, *mut f32);

/// The loop's multiplier and addend, and chain `i`'s start.
const X: f32 = 0.999_9;
const Y: f32 = 1e-4;
fn start(i: usize) -> f32 {
    1.0 + i as f32 * 1e-3
}

/// Measures the 128-bit peak on `threads` threads (about 30 ms per
/// thread).
pub fn measure(threads: usize) -> Result<Peak, JitError> {
    measure_isa(threads, Isa::Sse)
}

/// Measures the peak of tier `isa` on `threads` threads (about 30 ms per
/// thread); a tier the host lacks is [`JitError::IsaUnsupported`].
pub fn measure_isa(threads: usize, isa: Isa) -> Result<Peak, JitError> {
    crate::model::isa_checked(&crate::CompileOptions {
        isa: Some(isa),
        ..crate::CompileOptions::default()
    })?;
    let (module, f, fma) = jit_loop()?;
    let lanes = (isa.bits() / 32) as usize;
    let run = |iters: i64| -> Duration {
        let mut sink = [0f32; 4];
        let start = Instant::now();
        match isa {
            // SAFETY: the loop writes four floats to `sink` and nothing else.
            Isa::Sse => unsafe { f(iters, sink.as_mut_ptr()) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the host has the tier (checked above).
            Isa::Avx2 => sink[0] = unsafe { wide_loops::avx2(iters) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx512 => sink[0] = unsafe { wide_loops::avx512(iters) },
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => {}
        }
        std::hint::black_box(sink);
        start.elapsed()
    };
    // Calibrate to about 10 ms, then the best of three on every thread.
    let mut iters = 1 << 16;
    while run(iters) < Duration::from_millis(10) && iters < 1 << 34 {
        iters *= 2;
    }
    let threads = threads.max(1);
    let best = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || (0..3).map(|_| run(iters)).min().unwrap_or_default()))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Duration::MAX))
            .collect::<Vec<_>>()
    });
    let macs = iters as f64 * (CHAINS * lanes) as f64;
    let gmacs = best
        .iter()
        .map(|t| macs / t.as_secs_f64().max(1e-9) / 1e9)
        .sum();
    // SAFETY: no function of the module is in use any more.
    unsafe { module.free_memory() };
    Ok(Peak {
        gmacs,
        threads,
        fma: fma || isa != Isa::Sse,
        isa,
    })
}

/// The loop at 256 and 512 bits: CHAINS accumulators, each `acc = acc * x
/// + y` per iteration; returns lane 0 of their sum.
#[cfg(target_arch = "x86_64")]
mod wide_loops {
    use super::{start, CHAINS, X, Y};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub fn avx2(iters: i64) -> f32 {
        let (x, y) = (_mm256_set1_ps(X), _mm256_set1_ps(Y));
        let mut acc: [__m256; CHAINS] = std::array::from_fn(|i| _mm256_set1_ps(start(i)));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        let sum = acc.iter().skip(1).fold(acc[0], |s, &a| _mm256_add_ps(s, a));
        _mm256_cvtss_f32(sum)
    }

    #[target_feature(enable = "avx512f")]
    pub fn avx512(iters: i64) -> f32 {
        let (x, y) = (_mm512_set1_ps(X), _mm512_set1_ps(Y));
        let mut acc: [__m512; CHAINS] = std::array::from_fn(|i| _mm512_set1_ps(start(i)));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        let sum = acc.iter().skip(1).fold(acc[0], |s, &a| _mm512_add_ps(s, a));
        _mm512_cvtss_f32(sum)
    }
}

/// The loop, compiled for the host; and whether it uses FMA.
fn jit_loop() -> Result<(JITModule, LoopFn, bool), JitError> {
    let target = Target::host()?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        target.isa.clone(),
        cranelift_module::default_libcall_names(),
    ));
    let mut sig = Signature::new(target.isa.default_call_conv());
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    let id = module.declare_function("peak", Linkage::Local, &sig)?;
    let mut ctx = module.make_context();
    let fma = target.features.fma;
    ctx.func = build(sig, fma, target.isa.frontend_config());
    module.define_function(id, &mut ctx)?;
    module.finalize_definitions()?;
    // SAFETY: built above with this signature (the platform's C convention).
    let f: LoopFn = unsafe { std::mem::transmute(module.get_finalized_function(id)) };
    Ok((module, f, fma))
}

/// `fn(iters, out)`: CHAINS accumulators, each `acc = acc * x + y` per
/// iteration; lane 0 of their sum goes to `out` (so the loop is not
/// dead code).
fn build(sig: Signature, fma: bool, frontend: TargetFrontendConfig) -> Function {
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let iters = b.block_params(entry)[0];
    let out = b.block_params(entry)[1];
    let splat = |b: &mut FunctionBuilder, v: f32| {
        let s = b.ins().f32const(v);
        b.ins().splat(F32X4, s)
    };
    let x = splat(&mut b, X);
    let y = splat(&mut b, Y);
    let init: Vec<_> = (0..CHAINS).map(|i| splat(&mut b, start(i))).collect();
    let zero = b.ins().iconst(I64, 0);
    b.append_block_param(header, I64);
    for _ in 0..CHAINS {
        b.append_block_param(header, F32X4);
    }
    let mut args: Vec<BlockArg> = vec![zero.into()];
    args.extend(init.iter().map(|&v| BlockArg::from(v)));
    b.ins().jump(header, &args);

    b.switch_to_block(header);
    let params = b.block_params(header).to_vec();
    let (i, accs) = (params[0], &params[1..]);
    let more = b.ins().icmp(IntCC::SignedLessThan, i, iters);
    let exit_args: Vec<BlockArg> = accs.iter().map(|&v| v.into()).collect();
    for _ in 0..CHAINS {
        b.append_block_param(exit, F32X4);
    }
    b.ins().brif(more, body, &[], exit, &exit_args);

    b.switch_to_block(body);
    let next: Vec<_> = accs
        .iter()
        .map(|&a| {
            if fma {
                b.ins().fma(a, x, y)
            } else {
                let p = b.ins().fmul(a, x);
                b.ins().fadd(p, y)
            }
        })
        .collect();
    let i1 = b.ins().iadd_imm_s(i, 1);
    let mut args: Vec<BlockArg> = vec![i1.into()];
    args.extend(next.iter().map(|&v| BlockArg::from(v)));
    b.ins().jump(header, &args);

    b.switch_to_block(exit);
    let accs = b.block_params(exit).to_vec();
    let sum = accs
        .iter()
        .skip(1)
        .fold(accs[0], |s, &a| b.ins().fadd(s, a));
    let lane = b.ins().extractlane(sum, 0);
    b.ins().store(MemFlagsData::trusted(), lane, out, 0);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(frontend);
    func
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_computes_what_it_says() {
        // The generated loop against the same recurrence in Rust, to the
        // bit: it does run the multiply-adds it is timed for.
        let (module, f, fma) = jit_loop().unwrap();
        for iters in [0i64, 1, 7, 1000] {
            let mut sink = [0f32; 4];
            // SAFETY: writes four floats to `sink`.
            unsafe { f(iters, sink.as_mut_ptr()) };
            let chains: Vec<f32> = (0..CHAINS)
                .map(|i| {
                    (0..iters).fold(
                        start(i),
                        |a, _| {
                            if fma {
                                a.mul_add(X, Y)
                            } else {
                                a * X + Y
                            }
                        },
                    )
                })
                .collect();
            let expected = chains.iter().skip(1).fold(chains[0], |s, &a| s + a);
            assert_eq!(sink[0].to_bits(), expected.to_bits(), "{iters} iterations");
        }
        // SAFETY: `f` is not used any more.
        unsafe { module.free_memory() };
    }

    #[test]
    fn the_peak_is_positive_and_finite() {
        for isa in Isa::host_tiers() {
            let p = measure_isa(1, isa).unwrap();
            assert!(p.gmacs.is_finite() && p.gmacs > 0.0, "{p:?}");
            assert_eq!(p.isa, isa);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_wide_loops_compute_the_recurrence() {
        // Lane 0 of the sum of the chains, as in the 128-bit test.
        let expected = |iters: i64| {
            let chains: Vec<f32> = (0..CHAINS)
                .map(|i| (0..iters).fold(start(i), |a, _| a.mul_add(X, Y)))
                .collect();
            chains.iter().skip(1).fold(chains[0], |s, &a| s + a)
        };
        for iters in [0i64, 1, 7, 1000] {
            if Isa::Avx2.supported() {
                // SAFETY: the host has AVX2 and FMA.
                let got = unsafe { wide_loops::avx2(iters) };
                assert_eq!(got.to_bits(), expected(iters).to_bits(), "avx2 {iters}");
            }
            if Isa::Avx512.supported() {
                // SAFETY: the host has AVX-512F.
                let got = unsafe { wide_loops::avx512(iters) };
                assert_eq!(got.to_bits(), expected(iters).to_bits(), "avx512 {iters}");
            }
        }
    }
}
