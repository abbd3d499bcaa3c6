//! Full-width x86-64 kernels (AVX-512, AVX2+FMA) for pointwise (1x1,
//! stride 1, unpadded) convolutions, written with `std::arch` and called
//! from the layer's Cranelift function with the shapes as constant
//! arguments (Cranelift 0.135 has only 128-bit vectors).
//!
//! They read the packed blocks of the `f32x4` kernel's layout (per tile of
//! `mt` channels: weights `[cin_g][mt]`, bias `[mt]`, output byte offsets
//! `[mt]`), with the tiles, rows and K blocks the plan sized for the tier
//! (`pointwise_tiling.rs`), and cover the plan's units.
//!
//! K blocks: a unit walks the input channels in blocks of `kc`; for each
//! block every tile of the unit sums that block into its outputs. The
//! first block starts from zero and adds bias and residual (the residual
//! element is read just before the same element is written, so an output
//! that aliases its residual stays correct), later blocks start from the
//! output's partial sum, and the last applies the activation.
//!
//! Why every access is in bounds: a unit `u < units` (checked by the
//! runtime) selects a group and a tile or row inside the tensors exactly as
//! in the `f32x4` kernel; input channels stay in `0..cin_g`; pixel blocks
//! cover `p0..p0 + n` of the plane, full vectors where they fit and masked
//! loads and stores (which do not touch masked-out lanes) for the tail.

use core::arch::x86_64::*;

use crate::wide_tiles::{NV256, NV512};

/// The C signature the layer function calls: `(out, x, residual or null,
/// packed, lo, hi, shape)`, `shape` a pointer to [`Shape`].
pub(crate) type PointwiseFn =
    unsafe extern "C" fn(*mut f32, *const f32, *const f32, *const f32, i64, i64, *const i64);

/// A pointwise convolution's constants, as `i64`s in this order (the
/// layer function stores them in its stack frame and passes their
/// address).
#[repr(C)]
pub struct Shape {
    /// Input channels per group.
    pub cin_g: i64,
    /// Output channels per group.
    pub cout_g: i64,
    /// Output channels per tile (the packed layout's `mt` of full tiles).
    pub m: i64,
    /// Pixels of one channel plane.
    pub plane: i64,
    /// Pixels per row of a row-split plane; 0 when units are channel tiles.
    pub row_w: i64,
    /// Rows of a row-split plane (units per group).
    pub rows: i64,
    /// Pixels of the last row.
    pub last_w: i64,
    /// 0 none, 1 relu, 2 relu6.
    pub act: i64,
    /// Input channels per K block (`cin_g` when not blocked).
    pub kc: i64,
}

/// Number of `i64` fields of [`Shape`].
pub(crate) const SHAPE_LEN: usize = 9;

/// One tile's work: `mt` channels over pixels `p0..p0 + n`, input
/// channels `k0..k1`.
struct TileJob {
    x: *const f32,
    plane: usize,
    cin: usize,
    blk: *const f32,
    p0: usize,
    n: usize,
    out: *mut f32,
    res: *const f32,
    act: i64,
    k0: usize,
    k1: usize,
    /// The first K block: start from zero, add bias and residual.
    first: bool,
    /// The last K block: apply the activation.
    last: bool,
}

/// Walks the units `lo..hi` and calls `tile(job, mt)` for each tile and
/// K block.
///
/// # Safety
/// The pointers and `shape` must describe buffers as the packer and the
/// plan lay them out, `0 <= lo <= hi <= units`.
#[allow(clippy::too_many_arguments)]
unsafe fn for_tiles(
    out: *mut f32,
    x: *const f32,
    res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    s: &Shape,
    mut tile: impl FnMut(&TileJob, usize),
) {
    let (cin, cout, m, plane) = (
        s.cin_g as usize,
        s.cout_g as usize,
        s.m as usize,
        s.plane as usize,
    );
    let kc = (s.kc as usize).clamp(1, cin.max(1));
    let (full, rem) = (cout / m, cout % m);
    let tpg = full + usize::from(rem > 0);
    let block_len = |mt: usize| mt * (cin + 2);
    let group_len = full * block_len(m) + if rem > 0 { block_len(rem) } else { 0 };
    for u in lo as usize..hi as usize {
        let (grp, tiles, p0, n) = if s.rows > 0 {
            let rows = s.rows as usize;
            let (grp, oy) = (u / rows, u % rows);
            let n = if oy + 1 == rows {
                s.last_w as usize
            } else {
                s.row_w as usize
            };
            (grp, 0..tpg, oy * s.row_w as usize, n)
        } else {
            let (grp, t) = (u / tpg, u % tpg);
            (grp, t..t + 1, 0, plane)
        };
        let mut k0 = 0;
        while k0 < cin {
            let k1 = (k0 + kc).min(cin);
            for t in tiles.clone() {
                let mt = if t < full { m } else { rem };
                let job = TileJob {
                    // SAFETY: group `grp` and tile `t` lie inside the
                    // input and the packed weights (the caller's
                    // contract).
                    x: unsafe { x.add(grp * cin * plane) },
                    plane,
                    cin,
                    blk: unsafe { packed.add(grp * group_len + t * block_len(m)) },
                    p0,
                    n,
                    out,
                    res,
                    act: s.act,
                    k0,
                    k1,
                    first: k0 == 0,
                    last: k1 == cin,
                };
                tile(&job, mt);
            }
            k0 = k1;
        }
    }
}

/// Calls `$f::<m, {table[m]}>` for the tile's channel count (every `m` the
/// table has; the lowering calls these kernels only for those).
macro_rules! dispatch_mt {
    ($f:ident, $table:ident, $job:expr, $mt:expr; $($m:literal)*) => {
        match $mt {
            $($m => $f::<$m, { $table[$m] }>($job),)*
            _ => {}
        }
    };
}

/// The AVX-512 pointwise kernel (see [`PointwiseFn`]).
///
/// # Safety
/// The host has AVX-512F; the arguments are as [`for_tiles`] requires.
#[no_mangle]
pub unsafe extern "C" fn shufflekit_pointwise_avx512(
    out: *mut f32,
    x: *const f32,
    res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    shape: *const i64,
) {
    // SAFETY: the layer function passes the address of a `Shape`.
    let s = unsafe { &*(shape as *const Shape) };
    unsafe {
        for_tiles(
            out,
            x,
            res,
            packed,
            lo,
            hi,
            s,
            |job, mt| dispatch_mt!(tile512, NV512, job, mt; 1 2 3 4 5 6 7 8 9 10 11 12),
        )
    }
}

/// Pixels `p0..p0 + n` of one tile: blocks of `NV` vectors of 16, then one
/// block of the vectors left (the last one masked).
#[target_feature(enable = "avx512f")]
fn tile512<const M: usize, const NV: usize>(j: &TileJob) {
    let end = j.p0 + j.n;
    let mut p = j.p0;
    while p + 16 * NV <= end {
        block512::<M, NV>(j, p, 16 * NV);
        p += 16 * NV;
    }
    match (end - p).div_ceil(16) {
        0 => {}
        1 => block512::<M, 1>(j, p, end - p),
        2 => block512::<M, 2>(j, p, end - p),
        3 => block512::<M, 3>(j, p, end - p),
        _ => block512::<M, 4>(j, p, end - p),
    }
}

/// One register block: `M` channels x `NV` vectors of 16 pixels from
/// `p`, of which the first `valid` are inside the row (lanes past it are
/// masked: neither loaded nor stored), input channels `k0..k1`.
#[target_feature(enable = "avx512f")]
fn block512<const M: usize, const NV: usize>(j: &TileJob, p: usize, valid: usize) {
    let w = j.blk;
    let masks: [__mmask16; NV] = core::array::from_fn(|v| {
        let k = valid.saturating_sub(16 * v).min(16);
        if k == 16 {
            !0
        } else {
            (1u16 << k) - 1
        }
    });
    // SAFETY (whole function): weights (rows `k0..k1` of `0..cin`), bias
    // and offsets are the tile's packed block; every pixel access is
    // masked to `p..p + valid`, inside the row, of an output channel's
    // plane (`offs`, the packer's offsets) or an input channel's plane.
    let offs: [usize; M] =
        core::array::from_fn(|c| unsafe { (*w.add(j.cin * M + M + c)).to_bits() as usize / 4 });
    let mut acc: [[__m512; NV]; M] = if j.first {
        [[_mm512_setzero_ps(); NV]; M]
    } else {
        core::array::from_fn(|c| {
            core::array::from_fn(|v| unsafe {
                _mm512_maskz_loadu_ps(masks[v], j.out.add(offs[c] + p + 16 * v))
            })
        })
    };
    for ic in j.k0..j.k1 {
        let row = unsafe { j.x.add(ic * j.plane + p) };
        let xs: [__m512; NV] =
            core::array::from_fn(|v| unsafe { _mm512_maskz_loadu_ps(masks[v], row.add(16 * v)) });
        for (c, accc) in acc.iter_mut().enumerate() {
            let wv = unsafe { _mm512_set1_ps(*w.add(ic * M + c)) };
            for v in 0..NV {
                accc[v] = _mm512_fmadd_ps(wv, xs[v], accc[v]);
            }
        }
    }
    for (c, accc) in acc.iter().enumerate() {
        let bias = unsafe { _mm512_set1_ps(*w.add(j.cin * M + c)) };
        for (v, &a) in accc.iter().enumerate() {
            let at = offs[c] + p + 16 * v;
            let mut val = a;
            if j.first {
                val = _mm512_add_ps(val, bias);
                if !j.res.is_null() {
                    val = _mm512_add_ps(val, unsafe {
                        _mm512_maskz_loadu_ps(masks[v], j.res.add(at))
                    });
                }
            }
            if j.last {
                val = match j.act {
                    1 => _mm512_max_ps(val, _mm512_setzero_ps()),
                    2 => {
                        _mm512_min_ps(_mm512_max_ps(val, _mm512_setzero_ps()), _mm512_set1_ps(6.0))
                    }
                    _ => val,
                };
            }
            unsafe { _mm512_mask_storeu_ps(j.out.add(at), masks[v], val) };
        }
    }
}

/// The AVX2+FMA pointwise kernel (see [`PointwiseFn`]).
///
/// # Safety
/// The host has AVX2 and FMA; the arguments are as [`for_tiles`] requires.
#[no_mangle]
pub(crate) unsafe extern "C" fn shufflekit_pointwise_avx2(
    out: *mut f32,
    x: *const f32,
    res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    shape: *const i64,
) {
    // SAFETY: the layer function passes the address of a `Shape`.
    let s = unsafe { &*(shape as *const Shape) };
    unsafe {
        for_tiles(
            out,
            x,
            res,
            packed,
            lo,
            hi,
            s,
            |job, mt| dispatch_mt!(tile256, NV256, job, mt; 1 2 3),
        )
    }
}

/// Lane masks of the first `k` lanes, `k` in `1..=8`, for
/// `maskload`/`maskstore` (all bits set selects a lane): 8 lanes from
/// index `8 - k`.
const MASKS256: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// Pixels `p0..p0 + n` of one tile: unmasked blocks of `NV` vectors of 8,
/// then one block of the vectors left (masked unless they are whole).
#[target_feature(enable = "avx2,fma")]
fn tile256<const M: usize, const NV: usize>(j: &TileJob) {
    let end = j.p0 + j.n;
    let mut p = j.p0;
    while p + 8 * NV <= end {
        block256::<M, NV, true>(j, p, 8 * NV);
        p += 8 * NV;
    }
    // Whole vectors left take plain accesses too.
    match ((end - p).div_ceil(8), (end - p).is_multiple_of(8)) {
        (0, _) => {}
        (1, true) => block256::<M, 1, true>(j, p, end - p),
        (1, false) => block256::<M, 1, false>(j, p, end - p),
        (2, true) => block256::<M, 2, true>(j, p, end - p),
        (2, false) => block256::<M, 2, false>(j, p, end - p),
        (_, true) => block256::<M, 3, true>(j, p, end - p),
        (_, false) => block256::<M, 3, false>(j, p, end - p),
    }
}

/// One register block: `M` channels x `NV` vectors of 8 pixels from `p`,
/// of which the first `valid` are inside the row; `FULL` when all are
/// (plain loads and stores), else masked ones (AMD's masked stores are
/// slow, so full blocks avoid them).
#[target_feature(enable = "avx2,fma")]
fn block256<const M: usize, const NV: usize, const FULL: bool>(
    j: &TileJob,
    p: usize,
    valid: usize,
) {
    let w = j.blk;
    // SAFETY: for every `v < NV` of a block, `valid > 8 * v` (the tail
    // block has `ceil(valid / 8)` vectors), so `k` is in `1..=8` and the
    // 8 lanes from `8 - k` lie inside MASKS256.
    let masks: [__m256i; NV] = core::array::from_fn(|v| {
        let k = valid.saturating_sub(8 * v).clamp(1, 8);
        unsafe { _mm256_loadu_si256(MASKS256.as_ptr().add(8 - k).cast()) }
    });
    // SAFETY (from here on): as in `block512`; masked-out lanes of
    // `maskload`/`maskstore` are not accessed, and unmasked accesses are
    // only made when all `8 * NV` pixels lie inside the row (`FULL`).
    let load = |src: *const f32, v: usize| unsafe {
        if FULL {
            _mm256_loadu_ps(src)
        } else {
            _mm256_maskload_ps(src, masks[v])
        }
    };
    let offs: [usize; M] =
        core::array::from_fn(|c| unsafe { (*w.add(j.cin * M + M + c)).to_bits() as usize / 4 });
    let mut acc: [[__m256; NV]; M] = if j.first {
        [[_mm256_setzero_ps(); NV]; M]
    } else {
        core::array::from_fn(|c| {
            core::array::from_fn(|v| load(unsafe { j.out.add(offs[c] + p + 8 * v) }, v))
        })
    };
    for ic in j.k0..j.k1 {
        let row = unsafe { j.x.add(ic * j.plane + p) };
        let xs: [__m256; NV] = core::array::from_fn(|v| load(unsafe { row.add(8 * v) }, v));
        for (c, accc) in acc.iter_mut().enumerate() {
            let wv = unsafe { _mm256_set1_ps(*w.add(ic * M + c)) };
            for v in 0..NV {
                accc[v] = _mm256_fmadd_ps(wv, xs[v], accc[v]);
            }
        }
    }
    for (c, accc) in acc.iter().enumerate() {
        let bias = unsafe { _mm256_set1_ps(*w.add(j.cin * M + c)) };
        for (v, &a) in accc.iter().enumerate() {
            let at = offs[c] + p + 8 * v;
            let mut val = a;
            if j.first {
                val = _mm256_add_ps(val, bias);
                if !j.res.is_null() {
                    val = _mm256_add_ps(val, load(unsafe { j.res.add(at) }, v));
                }
            }
            if j.last {
                val = match j.act {
                    1 => _mm256_max_ps(val, _mm256_setzero_ps()),
                    2 => {
                        _mm256_min_ps(_mm256_max_ps(val, _mm256_setzero_ps()), _mm256_set1_ps(6.0))
                    }
                    _ => val,
                };
            }
            let dst = unsafe { j.out.add(at) };
            unsafe {
                if FULL {
                    _mm256_storeu_ps(dst, val)
                } else {
                    _mm256_maskstore_ps(dst, masks[v], val)
                }
            }
        }
    }
}
