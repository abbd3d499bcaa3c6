//! Matrix products of the 1x1 convolutions, without packing.
//!
//! A pointwise convolution of one image and group is a product of a small
//! weight matrix (tens of rows and columns) with the image's planes (16 to
//! 784 columns). A general GEMM packs both operands into panels first; at
//! these sizes that copy costs as much as the multiply-adds (measured:
//! `pack_avx512` at 10% of a training step, beside 12% in the kernel; the
//! weight gradient through the packing GEMM was 41-48% of a step in the
//! per-op profile, before [`nt`]). These
//! kernels read the operands in place, hold a block of the result in
//! registers, and are compiled three times: AVX-512, AVX2 with FMA, and
//! portable, picked at run time ([`Isa::detect`]); the tests run every tier the CPU has. Each block sums in a fixed
//! order, so results do not depend on threads; they may differ in the last
//! bits between tiers (FMA rounds once).

use crate::kernels::Strides;

/// The instruction set a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 512-bit vectors with fused multiply-add.
    Avx512,
    /// 256-bit vectors with fused multiply-add.
    Avx2,
    /// Whatever the build targets (SSE2 on x86-64).
    Portable,
}

impl Isa {
    /// The best tier this CPU runs.
    pub fn detect() -> Isa {
        *Isa::supported().last().unwrap_or(&Isa::Portable)
    }

    /// Every tier this CPU runs, best last.
    pub fn supported() -> Vec<Isa> {
        let mut tiers = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                tiers.push(Isa::Avx2);
            }
            if has!("avx512f") && has!("fma") {
                tiers.push(Isa::Avx512);
            }
        }
        tiers
    }
}

/// `c = a * b` (or `c += a * b` with `accumulate`): `a` is `m x k` with any
/// strides, `b` is `k x n` with rows `ldb` apart, `c` is `m x n` with rows
/// `ldc` apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn nn(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    sa: Strides,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= sa.last(m, k)
            && (k == 0 || b.len() >= (k - 1) * ldb + n)
            && c.len() >= (m - 1) * ldc + n,
        "small_gemm::nn operands are smaller than their shapes"
    );
    let p = NnArgs {
        m,
        k,
        n,
        a,
        sa,
        b,
        ldb,
        ldc,
        accumulate,
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only made by `Isa::supported` (and so
        // `Isa::detect`) when the CPU has AVX-512F and FMA.
        Isa::Avx512 => unsafe { nn_avx512(&p, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { nn_avx2(&p, c) },
        _ => nn_blocks::<16, false>(&p, c),
    }
}

struct NnArgs<'a> {
    m: usize,
    k: usize,
    n: usize,
    a: &'a [f32],
    sa: Strides,
    b: &'a [f32],
    ldb: usize,
    ldc: usize,
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn nn_avx512(p: &NnArgs, c: &mut [f32]) {
    nn_blocks::<32, true>(p, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn nn_avx2(p: &NnArgs, c: &mut [f32]) {
    nn_blocks::<16, true>(p, c)
}

/// Rows in blocks of 4, columns in blocks of `NR`, then `NR / 2`, `NR / 4`,
/// then one at a time.
#[inline(always)]
fn nn_blocks<const NR: usize, const FMA: bool>(p: &NnArgs, c: &mut [f32]) {
    let mut i = 0;
    while i < p.m {
        let rows = (p.m - i).min(4);
        let mut j = 0;
        while j < p.n {
            let left = p.n - j;
            j += match rows {
                4 => nn_cols::<4, NR, FMA>(p, c, i, j, left),
                3 => nn_cols::<3, NR, FMA>(p, c, i, j, left),
                2 => nn_cols::<2, NR, FMA>(p, c, i, j, left),
                _ => nn_cols::<1, NR, FMA>(p, c, i, j, left),
            };
        }
        i += rows;
    }
}

/// One block at rows `i..i + MR`, column `j`, as wide as `left` allows;
/// returns its width.
#[inline(always)]
fn nn_cols<const MR: usize, const NR: usize, const FMA: bool>(
    p: &NnArgs,
    c: &mut [f32],
    i: usize,
    j: usize,
    left: usize,
) -> usize {
    if left >= NR {
        nn_block::<MR, NR, FMA>(p, c, i, j);
        NR
    } else if left >= 16 && NR > 16 {
        nn_block::<MR, 16, FMA>(p, c, i, j);
        16
    } else if left >= 8 {
        nn_block::<MR, 8, FMA>(p, c, i, j);
        8
    } else {
        nn_block::<MR, 1, FMA>(p, c, i, j);
        1
    }
}

#[inline(always)]
fn madd<const FMA: bool>(acc: f32, a: f32, b: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// `MR x W` block of `c` at `(i, j)` in registers over all of `k`.
#[inline(always)]
fn nn_block<const MR: usize, const W: usize, const FMA: bool>(
    p: &NnArgs,
    c: &mut [f32],
    i: usize,
    j: usize,
) {
    let mut acc = [[0.0f32; W]; MR];
    for kk in 0..p.k {
        let row: &[f32; W] = p.b[kk * p.ldb + j..][..W]
            .try_into()
            .expect("a slice of W values");
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = p.a[(i + r) * p.sa.rs + kk * p.sa.cs];
            for (s, &bv) in acc.iter_mut().zip(row) {
                *s = madd::<FMA>(*s, av, bv);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let out = &mut c[(i + r) * p.ldc + j..][..W];
        if p.accumulate {
            out.iter_mut().zip(acc).for_each(|(o, v)| *o += v);
        } else {
            out.copy_from_slice(acc);
        }
    }
}

/// `c += a * b^T`: `a` is `m x k` with rows `lda` apart, `b` is `n x k`
/// with rows `ldb` apart (both read along `k`, as a 1x1 convolution's
/// output gradient and input planes are), `c` is `m x n` with rows `ldc`
/// apart. The weight gradient of a 1x1 convolution: with AVX-512 each
/// element is a dot product over the plane in vector lanes held in
/// registers for a block of rows of `a` and of `b`, no packing; other tiers
/// use the general GEMM. Fixed summation order either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn nt(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        a.len() >= (m - 1) * lda + k
            && b.len() >= (n - 1) * ldb + k
            && c.len() >= (m - 1) * ldc + n,
        "small_gemm::nt operands are smaller than their shapes"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only made by `Isa::supported` (and so
        // `Isa::detect`) when the CPU has AVX-512F and FMA.
        Isa::Avx512 => unsafe {
            nt_avx512(
                &NtArgs {
                    m,
                    k,
                    n,
                    a,
                    lda,
                    b,
                    ldb,
                    ldc,
                },
                c,
            )
        },
        // Without AVX-512: the general GEMM (with its packing); portable
        // blocks of dot products were slower than it (measured at W = 16).
        _ => crate::kernels::gemm(
            (m, k, n),
            a,
            Strides { rs: lda, cs: 1 },
            b,
            Strides { rs: 1, cs: ldb },
            1.0,
            c,
            Strides { rs: ldc, cs: 1 },
        ),
    }
}

struct NtArgs<'a> {
    m: usize,
    k: usize,
    n: usize,
    a: &'a [f32],
    lda: usize,
    b: &'a [f32],
    ldb: usize,
    ldc: usize,
}

/// The AVX-512 `nt`: blocks of 4 x 4 dot products (row and column tails
/// one at a time) in explicit vectors (portable `[f32; 16]` arrays were not
/// kept in registers: 3x slower than the packing GEMM, measured), the tail
/// of `k` as a masked load, the lanes summed by `_mm512_reduce_add_ps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn nt_avx512(p: &NtArgs, c: &mut [f32]) {
    let mut i = 0;
    while i < p.m {
        let rows = (p.m - i).min(4);
        let mut j = 0;
        while j < p.n {
            let wide = p.n - j >= 4;
            // SAFETY: `nt` checked that rows `i..i + MR` of `a` and `j..j +
            // NR` of `b` hold `k` values each and that `c` holds the block.
            unsafe {
                match (rows, wide) {
                    (4, true) => nt_block_avx512::<4, 4>(p, c, i, j),
                    (4, false) => nt_block_avx512::<4, 1>(p, c, i, j),
                    (_, true) => nt_block_avx512::<1, 4>(p, c, i, j),
                    (_, false) => nt_block_avx512::<1, 1>(p, c, i, j),
                }
            }
            j += if wide { 4 } else { 1 };
        }
        i += if rows == 4 { 4 } else { 1 };
    }
}

/// One `MR x NR` block of [`nt_avx512`]. Safety: rows `i..i + MR` of `a`
/// and `j..j + NR` of `b` must hold `k` values, `c` the block's elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn nt_block_avx512<const MR: usize, const NR: usize>(
    p: &NtArgs,
    c: &mut [f32],
    i: usize,
    j: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let (a, b) = (p.a.as_ptr(), p.b.as_ptr());
    let mut kk = 0;
    // Full vectors, then one masked vector for the tail (the masked-off
    // lanes are not read).
    while kk < p.k {
        let left = p.k - kk;
        let mask: __mmask16 = if left >= 16 {
            0xffff
        } else {
            ((1u32 << left) - 1) as __mmask16
        };
        let mut bv = [_mm512_setzero_ps(); NR];
        for (s, v) in bv.iter_mut().enumerate() {
            // SAFETY: lanes `kk..kk + min(left, 16)` of row `j + s` are in `b`.
            *v = unsafe { _mm512_maskz_loadu_ps(mask, b.add((j + s) * p.ldb + kk)) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above, for row `i + r` of `a`.
            let av = unsafe { _mm512_maskz_loadu_ps(mask, a.add((i + r) * p.lda + kk)) };
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = _mm512_fmadd_ps(av, bv, *acc);
            }
        }
        kk += 16;
    }
    for (r, acc) in acc.iter().enumerate() {
        for (s, &v) in acc.iter().enumerate() {
            c[(i + r) * p.ldc + j + s] += _mm512_reduce_add_ps(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn near(got: f32, want: f64, k: usize) -> bool {
        (f64::from(got) - want).abs() <= 1e-5 * (k as f64 + 1.0)
    }

    /// `nt` with every tier this CPU runs against an `f64` triple loop, on
    /// sizes that hit the 4 x 4 blocks, both tails and every tail of `k`,
    /// with padded leading dimensions; it adds to `c` and leaves padding.
    #[test]
    fn nt_matches_a_triple_loop() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for case in 0..60 {
            let (m, n) = (rng.random_range(1..=11), rng.random_range(1..=11));
            let k = [1, 4, 7, 8, 15, 16, 17, 33, 49, 196][case % 10];
            let (lda, ldb, ldc) = (k + case % 3, k + case % 4, n + case % 5);
            let a = random(&mut rng, m * lda);
            let b = random(&mut rng, n * ldb);
            let c0 = random(&mut rng, m * ldc);
            for isa in Isa::supported() {
                let mut c = c0.clone();
                nt(isa, (m, k, n), &a, lda, &b, ldb, &mut c, ldc);
                for i in 0..m {
                    for j in 0..ldc {
                        if j >= n {
                            assert_eq!(c[i * ldc + j], c0[i * ldc + j], "padding");
                            continue;
                        }
                        let mut want = f64::from(c0[i * ldc + j]);
                        for kk in 0..k {
                            want += f64::from(a[i * lda + kk]) * f64::from(b[j * ldb + kk]);
                        }
                        assert!(
                            near(c[i * ldc + j], want, k),
                            "{isa:?} nt {m}x{k}x{n} c[{i}][{j}]"
                        );
                    }
                }
            }
        }
    }

    /// Every tier this CPU runs against an `f64` triple loop, on sizes that
    /// hit every block width and the row and column tails, with plain and
    /// transposed `a`, and padded leading dimensions.
    #[test]
    fn every_tier_matches_a_triple_loop() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let tiers = Isa::supported();
        assert!(tiers.contains(&Isa::Portable));
        for case in 0..60 {
            let m = rng.random_range(1..=11);
            let k = rng.random_range(0..=37);
            let n = [1, 7, 8, 9, 16, 17, 31, 32, 33, 49, 70][case % 11];
            let transposed = case % 2 == 1;
            let sa = if transposed {
                Strides::transposed(m)
            } else {
                Strides::rows(k)
            };
            let a = random(&mut rng, m * k);
            let (ldb, ldc) = (n + case % 3, n + case % 5);
            let b = random(&mut rng, k * ldb);
            let c0 = random(&mut rng, m * ldc);
            for &isa in &tiers {
                for accumulate in [false, true] {
                    let mut c = c0.clone();
                    nn(isa, (m, k, n), &a, sa, &b, ldb, &mut c, ldc, accumulate);
                    for i in 0..m {
                        for j in 0..n {
                            let mut want = if accumulate {
                                f64::from(c0[i * ldc + j])
                            } else {
                                0.0
                            };
                            for kk in 0..k {
                                want += f64::from(a[i * sa.rs + kk * sa.cs])
                                    * f64::from(b[kk * ldb + j]);
                            }
                            assert!(
                                near(c[i * ldc + j], want, k),
                                "{isa:?} nn {m}x{k}x{n} c[{i}][{j}]"
                            );
                        }
                    }
                    // Padding between rows is left alone.
                    for i in 0..m {
                        for j in n..ldc {
                            assert_eq!(c[i * ldc + j], c0[i * ldc + j]);
                        }
                    }
                }
            }
        }
    }
}
