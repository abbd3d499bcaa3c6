//! Full-width x86-64 kernels (AVX-512, AVX2+FMA) for pointwise (1x1,
//! stride 1, unpadded) convolutions, written with `std::arch` and called
//! from the layer's Cranelift function with the shapes as constant
//! arguments (Cranelift 0.135 has only 128-bit vectors).
//!
//! They read the packed blocks of the `f32x4` kernel unchanged (per tile of
//! `mt` channels: weights `[cin_g][mt]`, bias `[mt]`, output byte offsets
//! `[mt]`) and cover the same units, so the runtime cannot tell them apart.
//!
//! Why every access is in bounds: a unit `u < units` (checked by the
//! runtime) selects a group and a tile or row inside the tensors exactly as
//! in the `f32x4` kernel; pixel blocks cover `p0..p0 + n` of the plane,
//! full vectors where they fit and masked loads and stores (which do not
//! touch masked-out lanes) for the tail.

use core::arch::x86_64::*;

/// The most channels a tile has (`plan::conv_tile` picks at most 6).
pub(crate) const MAX_TILE: usize = 6;

/// The C signature the layer function calls: `(out, x, residual or null,
/// packed, lo, hi, shape)`, `shape` a pointer to [`Shape`].
pub(crate) type PointwiseFn =
    unsafe extern "C" fn(*mut f32, *const f32, *const f32, *const f32, i64, i64, *const i64);

/// A pointwise convolution's constants, as `i64`s in this order (the
/// layer function stores them in its stack frame and passes their
/// address).
#[repr(C)]
pub(crate) struct Shape {
    pub cin_g: i64,
    pub cout_g: i64,
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
}

/// Number of `i64` fields of [`Shape`].
pub(crate) const SHAPE_LEN: usize = 8;

/// One tile's work: `mt` channels over pixels `p0..p0 + n`.
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
}

/// Walks the units `lo..hi` and calls `tile(job, mt)` for each tile.
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
        for t in tiles {
            let mt = if t < full { m } else { rem };
            let job = TileJob {
                // SAFETY: group `grp` and tile `t` lie inside the input
                // and the packed weights (the caller's contract).
                x: unsafe { x.add(grp * cin * plane) },
                plane,
                cin,
                blk: unsafe { packed.add(grp * group_len + t * block_len(m)) },
                p0,
                n,
                out,
                res,
                act: s.act,
            };
            tile(&job, mt);
        }
    }
}

macro_rules! dispatch_mt {
    ($f:ident, $job:expr, $mt:expr) => {
        match $mt {
            1 => $f::<1>($job),
            2 => $f::<2>($job),
            3 => $f::<3>($job),
            4 => $f::<4>($job),
            5 => $f::<5>($job),
            6 => $f::<6>($job),
            // The lowering only calls these kernels for tiles of at most
            // MAX_TILE channels.
            _ => {}
        }
    };
}

/// The AVX-512 pointwise kernel (see [`PointwiseFn`]), exported
/// under its own name for objects.
///
/// # Safety
/// The host has AVX-512F; the arguments are as [`for_tiles`] requires.
#[no_mangle]
pub(crate) unsafe extern "C" fn shufflekit_pointwise_avx512(
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
        for_tiles(out, x, res, packed, lo, hi, s, |job, mt| {
            dispatch_mt!(tile512, job, mt)
        })
    }
}

/// Pixels per AVX-512 register block: 4 vectors of 16, so a 6-channel
/// tile keeps 24 accumulators of the 32 registers.
const NV512: usize = 4;

/// Pixels `p0..p0 + n` of one tile: blocks of `NV512` vectors, then one
/// block of the vectors left (the last one masked).
#[target_feature(enable = "avx512f")]
fn tile512<const M: usize>(j: &TileJob) {
    let end = j.p0 + j.n;
    let mut p = j.p0;
    while p + 16 * NV512 <= end {
        block512::<M, NV512>(j, p, 16 * NV512);
        p += 16 * NV512;
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
/// masked: neither loaded nor stored).
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
    // SAFETY (whole function): weights, bias and offsets are the tile's
    // packed block; every pixel access is masked to `p..p + valid`,
    // inside the row.
    let mut acc = [[_mm512_setzero_ps(); NV]; M];
    for ic in 0..j.cin {
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
        let off = unsafe { (*w.add(j.cin * M + M + c)).to_bits() as usize / 4 };
        for (v, &a) in accc.iter().enumerate() {
            let at = off + p + 16 * v;
            let mut val = _mm512_add_ps(a, bias);
            if !j.res.is_null() {
                val = _mm512_add_ps(val, unsafe {
                    _mm512_maskz_loadu_ps(masks[v], j.res.add(at))
                });
            }
            val = match j.act {
                1 => _mm512_max_ps(val, _mm512_setzero_ps()),
                2 => _mm512_min_ps(_mm512_max_ps(val, _mm512_setzero_ps()), _mm512_set1_ps(6.0)),
                _ => val,
            };
            unsafe { _mm512_mask_storeu_ps(j.out.add(at), masks[v], val) };
        }
    }
}

/// The AVX2+FMA pointwise kernel (see [`PointwiseFn`]), exported
/// under its own name for objects.
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
        for_tiles(out, x, res, packed, lo, hi, s, |job, mt| {
            dispatch_mt!(tile256, job, mt)
        })
    }
}

/// Pixels per AVX2 register block: 2 vectors of 8, so a 6-channel tile
/// keeps 12 accumulators of the 16 registers.
const NV256: usize = 2;

/// Lane masks of the first `k` lanes, `k` in `0..=8`, for
/// `maskload`/`maskstore` (all bits set selects a lane).
const MASKS256: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

#[target_feature(enable = "avx2,fma")]
fn tile256<const M: usize>(j: &TileJob) {
    let w = j.blk;
    // SAFETY (whole function): as in `tile512`; masked-out lanes of
    // `maskload`/`maskstore` are not accessed.
    let bias: [__m256; M] =
        core::array::from_fn(|c| unsafe { _mm256_set1_ps(*w.add(j.cin * M + c)) });
    let offs: [usize; M] =
        core::array::from_fn(|c| unsafe { (*w.add(j.cin * M + M + c)).to_bits() as usize / 4 });
    let end = j.p0 + j.n;
    let mut p = j.p0;
    let epilogue = |v: __m256, c: usize, p: usize, mask: Option<__m256i>| unsafe {
        let at = offs[c] + p;
        let mut v = _mm256_add_ps(v, bias[c]);
        if !j.res.is_null() {
            let r = match mask {
                Some(m) => _mm256_maskload_ps(j.res.add(at), m),
                None => _mm256_loadu_ps(j.res.add(at)),
            };
            v = _mm256_add_ps(v, r);
        }
        v = match j.act {
            1 => _mm256_max_ps(v, _mm256_setzero_ps()),
            2 => _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0)),
            _ => v,
        };
        match mask {
            Some(m) => _mm256_maskstore_ps(j.out.add(at), m, v),
            None => _mm256_storeu_ps(j.out.add(at), v),
        }
    };
    while p + 8 * NV256 <= end {
        let mut acc = [[_mm256_setzero_ps(); NV256]; M];
        for ic in 0..j.cin {
            let xs: [__m256; NV256] = core::array::from_fn(|v| unsafe {
                _mm256_loadu_ps(j.x.add(ic * j.plane + p + 8 * v))
            });
            for (c, accc) in acc.iter_mut().enumerate() {
                let wv = unsafe { _mm256_set1_ps(*w.add(ic * M + c)) };
                for v in 0..NV256 {
                    accc[v] = _mm256_fmadd_ps(wv, xs[v], accc[v]);
                }
            }
        }
        for (c, accc) in acc.iter().enumerate() {
            for (v, &a) in accc.iter().enumerate() {
                epilogue(a, c, p + 8 * v, None);
            }
        }
        p += 8 * NV256;
    }
    while p < end {
        let k = (end - p).min(8);
        let (mask, full) = if k == 8 {
            (None, true)
        } else {
            // SAFETY: `8 - k` is in `1..8`, so 8 lanes from there lie
            // inside MASKS256.
            let m = unsafe { _mm256_loadu_si256(MASKS256.as_ptr().add(8 - k).cast()) };
            (Some(m), false)
        };
        let mut acc = [_mm256_setzero_ps(); M];
        for ic in 0..j.cin {
            let src = unsafe { j.x.add(ic * j.plane + p) };
            let xv = match (full, mask) {
                (false, Some(m)) => unsafe { _mm256_maskload_ps(src, m) },
                _ => unsafe { _mm256_loadu_ps(src) },
            };
            for (c, a) in acc.iter_mut().enumerate() {
                let wv = unsafe { _mm256_set1_ps(*w.add(ic * M + c)) };
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
        }
        for (c, &a) in acc.iter().enumerate() {
            epilogue(a, c, p, mask);
        }
        p += k;
    }
}
