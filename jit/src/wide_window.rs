//! Full-width x86-64 kernels (AVX-512, AVX2+FMA) for the layers that are
//! not pointwise: sliding-window convolutions (depthwise, the stem, any
//! grouped conv with a horizontal stride of 1 or 2) and the fully connected
//! layer. Like `wide.rs`, they are `std::arch` functions the layer's
//! Cranelift function calls with its shapes as constants in a
//! [`WindowShape`] or [`LinearShape`] (passed by address).
//!
//! They read the packed blocks of the `f32x4` kernels unchanged
//! (`pack.rs`): per window tile of `mt` channels, weights
//! `[cin_g][kh][kw][mt]`, bias `[mt]`, output byte offsets `[mt]`; per
//! linear tile of `mt` outputs, weights `[inputs / 4][mt][4]`, then
//! `[inputs % 4][mt]`, bias `[mt]`. They cover the same units (window:
//! group x channel tile with every output row inside; linear: output
//! tiles), so the runtime cannot tell them apart.
//!
//! Why every access is in bounds: a unit `u < units` (checked by the
//! runtime) selects a group and a tile inside the tensors as in the
//! `f32x4` kernel. A window row `iy` outside `0..in_h` is skipped; within
//! an input row every load is masked to the columns `0..in_w` (masked-out
//! lanes are neither read nor faulted on, so the padding's zeros come from
//! the mask); every store and residual load is masked to the output
//! columns `0..out_w` of the row. Addresses of masked-out lanes are
//! formed with wrapping pointer arithmetic and never dereferenced. The
//! linear kernel's loads are masked to the tile's `mt * 4` weights per
//! chunk of inputs and to the `inputs` values of the input.

use std::arch::x86_64::*;

/// The most channels a window tile has (`plan::conv_tile` picks at most 6).
pub(crate) const MAX_TILE: usize = 6;

/// The widest kernel (columns) the window kernels take: their column masks
/// are kept per kernel column in a fixed array.
pub(crate) const MAX_KW: usize = 8;

/// The C signature the layer function calls: `(out, x, residual or null,
/// packed, lo, hi, shape)`, `shape` a pointer to [`WindowShape`] or
/// [`LinearShape`].
pub(crate) type WideFn =
    unsafe extern "C" fn(*mut f32, *const f32, *const f32, *const f32, i64, i64, *const i64);

/// A window convolution's constants, as `i64`s in this order (the layer
/// function stores them in its stack frame and passes their address).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowShape {
    pub in_h: i64,
    pub in_w: i64,
    pub out_h: i64,
    pub out_w: i64,
    pub k_h: i64,
    pub k_w: i64,
    pub s_h: i64,
    /// 1 or 2 (the lowering calls these kernels for no other).
    pub s_w: i64,
    pub p_h: i64,
    pub p_w: i64,
    pub d_h: i64,
    pub d_w: i64,
    pub cin_g: i64,
    pub cout_g: i64,
    pub m: i64,
    /// 0 none, 1 relu, 2 relu6.
    pub act: i64,
}

impl WindowShape {
    /// The fields in memory order.
    pub(crate) fn fields(&self) -> Vec<i64> {
        vec![
            self.in_h,
            self.in_w,
            self.out_h,
            self.out_w,
            self.k_h,
            self.k_w,
            self.s_h,
            self.s_w,
            self.p_h,
            self.p_w,
            self.d_h,
            self.d_w,
            self.cin_g,
            self.cout_g,
            self.m,
            self.act,
        ]
    }
}

/// A fully connected layer's constants (see [`WindowShape`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinearShape {
    pub inputs: i64,
    pub outputs: i64,
    /// Outputs per tile.
    pub m: i64,
}

impl LinearShape {
    /// The fields in memory order.
    pub(crate) fn fields(&self) -> Vec<i64> {
        vec![self.inputs, self.outputs, self.m]
    }
}

/// Lanes `l` in `0..32` whose column `start + l` lies in `0..w`, as a bit
/// mask: the columns a load from `start` may touch.
fn span_mask(start: isize, w: isize) -> u32 {
    let lo = (-start).clamp(0, 32) as u32;
    let hi = (w - start).clamp(0, 32) as u32;
    if hi <= lo {
        return 0;
    }
    let upto = |n: u32| if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    upto(hi) & !upto(lo)
}

/// One window tile's work: `mt` channels of one group, every output row.
struct WindowJob<'a> {
    s: &'a WindowShape,
    /// The group's first input plane.
    x: *const f32,
    /// The tile's packed block.
    blk: *const f32,
    out: *mut f32,
    res: *const f32,
}

/// Walks the units `lo..hi` of a window convolution and calls
/// `tile(job, mt)` for each.
///
/// # Safety
/// The pointers and `s` must describe buffers as the packer and the plan
/// lay them out, `0 <= lo <= hi <= units`.
#[allow(clippy::too_many_arguments)]
unsafe fn for_window_tiles(
    out: *mut f32,
    x: *const f32,
    res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    s: &WindowShape,
    mut tile: impl FnMut(&WindowJob, usize),
) {
    let (cin, cout, m) = (s.cin_g as usize, s.cout_g as usize, s.m as usize);
    let plane = (s.in_h * s.in_w) as usize;
    let taps = (s.k_h * s.k_w) as usize;
    let (full, rem) = (cout / m, cout % m);
    let tpg = full + usize::from(rem > 0);
    let block_len = |mt: usize| mt * (cin * taps + 2);
    let group_len = full * block_len(m) + if rem > 0 { block_len(rem) } else { 0 };
    for u in lo as usize..hi as usize {
        let (grp, t) = (u / tpg, u % tpg);
        let mt = if t < full { m } else { rem };
        let job = WindowJob {
            s,
            // SAFETY: group `grp` and tile `t` lie inside the input and
            // the packed weights (the caller's contract).
            x: unsafe { x.add(grp * cin * plane) },
            blk: unsafe { packed.add(grp * group_len + t * block_len(m)) },
            out,
            res,
        };
        tile(&job, mt);
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

/// The AVX-512 window kernel (see [`WideFn`]; `shape` is a
/// [`WindowShape`]).
///
/// # Safety
/// The host has AVX-512F; the arguments are as [`for_window_tiles`]
/// requires; `s_w` is 1 or 2 and `k_w <= MAX_KW`.
pub(crate) unsafe extern "C" fn window_avx512(
    out: *mut f32,
    x: *const f32,
    res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    shape: *const i64,
) {
    // SAFETY: the layer function passes the address of a `WindowShape`.
    let s = unsafe { &*(shape as *const WindowShape) };
    let depthwise = s.cin_g == 1 && s.cout_g == 1;
    unsafe {
        for_window_tiles(out, x, res, packed, lo, hi, s, |job, mt| {
            match (depthwise, s.k_h, s.k_w, s.s_w) {
                (true, 3, 3, 1) => depthwise512::<3, 1>(job),
                (true, 3, 3, 2) => depthwise512::<3, 2>(job),
                (true, 5, 5, 1) => depthwise512::<5, 1>(job),
                (true, 5, 5, 2) => depthwise512::<5, 2>(job),
                _ => dispatch_mt!(window_tile512, job, mt),
            }
        })
    }
}

/// A depthwise channel with a `K x K` kernel and horizontal stride `SW`:
/// the taps' weights stay in registers for the whole plane, the column
/// masks of a block of 16 output columns are computed once for all rows.
#[target_feature(enable = "avx512f")]
fn depthwise512<const K: usize, const SW: usize>(j: &WindowJob) {
    let s = j.s;
    let (h, w) = (s.in_h as isize, s.in_w as isize);
    let (oh, ow) = (s.out_h as usize, s.out_w as usize);
    let wt = j.blk;
    // SAFETY (block): the tile's block holds K * K weights, the bias and
    // the output offset.
    let (taps, bias, off) = unsafe {
        let taps: [[__m512; K]; K] = std::array::from_fn(|ky| {
            std::array::from_fn(|kx| _mm512_set1_ps(*wt.add(ky * K + kx)))
        });
        (
            taps,
            _mm512_set1_ps(*wt.add(K * K)),
            (*wt.add(K * K + 1)).to_bits() as usize / 4,
        )
    };
    let mut ox0 = 0;
    while ox0 < ow {
        let valid = (ow - ox0).min(16);
        let out_mask: __mmask16 = if valid == 16 { !0 } else { (1u16 << valid) - 1 };
        let starts: [isize; K] = std::array::from_fn(|kx| {
            (ox0 * SW) as isize - s.p_w as isize + (kx * s.d_w as usize) as isize
        });
        let masks: [u32; K] = std::array::from_fn(|kx| span_mask(starts[kx], w));
        for oy in 0..oh {
            let iy0 = (oy * s.s_h as usize) as isize - s.p_h as isize;
            let mut acc = [_mm512_setzero_ps(); 2];
            for (ky, taps_ky) in taps.iter().enumerate() {
                let iy = iy0 + (ky * s.d_h as usize) as isize;
                if iy < 0 || iy >= h {
                    continue;
                }
                // SAFETY: `0 <= iy < in_h`: the row lies inside the plane.
                let row = unsafe { j.x.add(iy as usize * w as usize) };
                for kx in 0..K {
                    let p = row.wrapping_offset(starts[kx]);
                    let m = masks[kx];
                    // SAFETY: the masks keep every loaded lane inside the
                    // row's columns `0..in_w`.
                    let xv = unsafe {
                        if SW == 1 {
                            _mm512_maskz_loadu_ps(m as __mmask16, p)
                        } else {
                            let a = _mm512_maskz_loadu_ps(m as __mmask16, p);
                            let b =
                                _mm512_maskz_loadu_ps((m >> 16) as __mmask16, p.wrapping_add(16));
                            even_lanes512(a, b)
                        }
                    };
                    acc[ky % 2] = _mm512_fmadd_ps(taps_ky[kx], xv, acc[ky % 2]);
                }
            }
            let at = off + oy * ow + ox0;
            let mut val = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), bias);
            if !j.res.is_null() {
                // SAFETY: masked to the row's output columns.
                val = _mm512_add_ps(val, unsafe {
                    _mm512_maskz_loadu_ps(out_mask, j.res.wrapping_add(at))
                });
            }
            val = match s.act {
                1 => _mm512_max_ps(val, _mm512_setzero_ps()),
                2 => _mm512_min_ps(_mm512_max_ps(val, _mm512_setzero_ps()), _mm512_set1_ps(6.0)),
                _ => val,
            };
            // SAFETY: masked to the row's output columns.
            unsafe { _mm512_mask_storeu_ps(j.out.wrapping_add(at), out_mask, val) };
        }
        ox0 += 16;
    }
}

/// Output vectors of 16 pixels per AVX-512 register block: with 6
/// channels, 24 accumulators of the 32 registers.
const NV512: usize = 4;

#[target_feature(enable = "avx512f")]
fn window_tile512<const M: usize>(j: &WindowJob) {
    let ow = j.s.out_w as usize;
    for oy in 0..j.s.out_h as usize {
        let mut ox = 0;
        while ox + 16 * NV512 <= ow {
            window_block512::<M, NV512>(j, oy, ox, 16 * NV512);
            ox += 16 * NV512;
        }
        match (ow - ox).div_ceil(16) {
            0 => {}
            1 => window_block512::<M, 1>(j, oy, ox, ow - ox),
            2 => window_block512::<M, 2>(j, oy, ox, ow - ox),
            3 => window_block512::<M, 3>(j, oy, ox, ow - ox),
            _ => window_block512::<M, 4>(j, oy, ox, ow - ox),
        }
    }
}

/// Even lanes of two vectors (`a` then `b`): a stride-2 row's 16 columns
/// out of the 32 loaded.
#[target_feature(enable = "avx512f")]
fn even_lanes512(a: __m512, b: __m512) -> __m512 {
    let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    _mm512_permutex2var_ps(a, idx, b)
}

/// One register block: `M` channels x `NV` vectors of 16 output pixels of
/// row `oy` from column `ox0`, of which the first `valid` are inside the
/// row.
#[target_feature(enable = "avx512f")]
fn window_block512<const M: usize, const NV: usize>(
    j: &WindowJob,
    oy: usize,
    ox0: usize,
    valid: usize,
) {
    let s = j.s;
    let (h, w) = (s.in_h as isize, s.in_w as isize);
    let (kh, kw) = (s.k_h as usize, s.k_w as usize);
    let sw = s.s_w as usize;
    let plane = (h * w) as usize;
    let out_masks: [__mmask16; NV] = std::array::from_fn(|v| {
        let k = valid.saturating_sub(16 * v).min(16);
        if k == 16 {
            !0
        } else {
            (1u16 << k) - 1
        }
    });
    // Column masks per kernel column and vector, the same for every row
    // and input channel.
    let mut col_masks = [[0u32; NV]; MAX_KW];
    let mut col_start = [[0isize; NV]; MAX_KW];
    for kx in 0..kw.min(MAX_KW) {
        for v in 0..NV {
            let start =
                ((ox0 + 16 * v) * sw) as isize - s.p_w as isize + (kx * s.d_w as usize) as isize;
            col_start[kx][v] = start;
            col_masks[kx][v] = span_mask(start, w);
        }
    }
    let iy0 = (oy * s.s_h as usize) as isize - s.p_h as isize;
    let wt = j.blk;
    let mut acc = [[_mm512_setzero_ps(); NV]; M];
    for ic in 0..s.cin_g as usize {
        for ky in 0..kh {
            let iy = iy0 + (ky * s.d_h as usize) as isize;
            if iy < 0 || iy >= h {
                continue;
            }
            // SAFETY: `ic < cin_g` and `0 <= iy < in_h`: the row lies
            // inside the group's input.
            let row = unsafe { j.x.add(ic * plane + iy as usize * w as usize) };
            for kx in 0..kw.min(MAX_KW) {
                let xs: [__m512; NV] = std::array::from_fn(|v| {
                    let (start, m) = (col_start[kx][v], col_masks[kx][v]);
                    let p = row.wrapping_offset(start);
                    // SAFETY: the masks keep every loaded lane inside the
                    // row's columns `0..in_w`.
                    unsafe {
                        if sw == 1 {
                            _mm512_maskz_loadu_ps(m as __mmask16, p)
                        } else {
                            let a = _mm512_maskz_loadu_ps(m as __mmask16, p);
                            let b =
                                _mm512_maskz_loadu_ps((m >> 16) as __mmask16, p.wrapping_add(16));
                            even_lanes512(a, b)
                        }
                    }
                });
                let tap = (ic * kh + ky) * kw + kx;
                for (c, accc) in acc.iter_mut().enumerate() {
                    // SAFETY: `tap < cin_g * taps`: inside the tile's weights.
                    let wv = unsafe { _mm512_set1_ps(*wt.add(tap * M + c)) };
                    for v in 0..NV {
                        accc[v] = _mm512_fmadd_ps(wv, xs[v], accc[v]);
                    }
                }
            }
        }
    }
    let wlen = s.cin_g as usize * kh * kw * M;
    let opos = oy * s.out_w as usize + ox0;
    for (c, accc) in acc.iter().enumerate() {
        // SAFETY: bias and offsets follow the weights in the tile's block.
        let bias = unsafe { _mm512_set1_ps(*wt.add(wlen + c)) };
        let off = unsafe { (*wt.add(wlen + M + c)).to_bits() as usize / 4 };
        for (v, &a) in accc.iter().enumerate() {
            let at = off + opos + 16 * v;
            let mut val = _mm512_add_ps(a, bias);
            if !j.res.is_null() {
                // SAFETY: masked to the row's output columns.
                val = _mm512_add_ps(val, unsafe {
                    _mm512_maskz_loadu_ps(out_masks[v], j.res.wrapping_add(at))
                });
            }
            val = match s.act {
                1 => _mm512_max_ps(val, _mm512_setzero_ps()),
                2 => _mm512_min_ps(_mm512_max_ps(val, _mm512_setzero_ps()), _mm512_set1_ps(6.0)),
                _ => val,
            };
            // SAFETY: masked to the row's output columns.
            unsafe { _mm512_mask_storeu_ps(j.out.wrapping_add(at), out_masks[v], val) };
        }
    }
}

/// `maskload`, as a plain load when every lane is selected (`maskload`
/// and `maskstore` are slow on some hosts, AMD's among them).
///
/// # Safety
/// Every lane `mask` selects is readable.
#[target_feature(enable = "avx2")]
unsafe fn load_masked256(p: *const f32, mask: __m256i) -> __m256 {
    // SAFETY: all 8 lanes are readable when all are selected; otherwise
    // the masked-out lanes are not read.
    unsafe {
        if _mm256_testc_si256(mask, _mm256_set1_epi32(-1)) != 0 {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, mask)
        }
    }
}

/// A masked store: a plain store when every lane is selected, else lane
/// by lane (`maskstore` is microcoded, tens of cycles, on AMD hosts).
///
/// # Safety
/// Every lane `mask` selects is writable.
#[target_feature(enable = "avx2")]
unsafe fn store_masked256(p: *mut f32, mask: __m256i, v: __m256) {
    if _mm256_testc_si256(mask, _mm256_set1_epi32(-1)) != 0 {
        // SAFETY: all 8 lanes are selected, so writable.
        unsafe { _mm256_storeu_ps(p, v) };
        return;
    }
    let bits = _mm256_movemask_ps(_mm256_castsi256_ps(mask)) as u32;
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    for (l, &x) in lanes.iter().enumerate() {
        if bits >> l & 1 == 1 {
            // SAFETY: lane `l` is selected, so writable.
            unsafe { *p.wrapping_add(l) = x };
        }
    }
}

/// The AVX2+FMA window kernel (see [`window_avx512`]).
///
/// # Safety
/// As [`window_avx512`], with AVX2 and FMA instead of AVX-512F.
pub(crate) unsafe extern "C" fn window_avx2(
    out: *mut f32,
    x: *const f32,
    res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    shape: *const i64,
) {
    // SAFETY: the layer function passes the address of a `WindowShape`.
    let s = unsafe { &*(shape as *const WindowShape) };
    let depthwise = s.cin_g == 1 && s.cout_g == 1;
    unsafe {
        for_window_tiles(out, x, res, packed, lo, hi, s, |job, mt| {
            match (depthwise, s.k_h, s.k_w, s.s_w) {
                (true, 3, 3, 1) => depthwise256::<3, 1>(job),
                (true, 3, 3, 2) => depthwise256::<3, 2>(job),
                (true, 5, 5, 1) => depthwise256::<5, 1>(job),
                (true, 5, 5, 2) => depthwise256::<5, 2>(job),
                _ => dispatch_mt!(window_tile256, job, mt),
            }
        })
    }
}

/// As [`depthwise512`] with blocks of 8 output columns.
#[target_feature(enable = "avx2,fma")]
fn depthwise256<const K: usize, const SW: usize>(j: &WindowJob) {
    let s = j.s;
    let (h, w) = (s.in_h as isize, s.in_w as isize);
    let (oh, ow) = (s.out_h as usize, s.out_w as usize);
    let wt = j.blk;
    // SAFETY (block): the tile's block holds K * K weights, the bias and
    // the output offset.
    let (taps, bias, off) = unsafe {
        let taps: [[__m256; K]; K] = std::array::from_fn(|ky| {
            std::array::from_fn(|kx| _mm256_set1_ps(*wt.add(ky * K + kx)))
        });
        (
            taps,
            _mm256_set1_ps(*wt.add(K * K)),
            (*wt.add(K * K + 1)).to_bits() as usize / 4,
        )
    };
    let mut ox0 = 0;
    while ox0 < ow {
        let valid = (ow - ox0).min(8) as u32;
        let out_mask = lane_mask256((1u32 << valid) - 1);
        let starts: [isize; K] = std::array::from_fn(|kx| {
            (ox0 * SW) as isize - s.p_w as isize + (kx * s.d_w as usize) as isize
        });
        let masks: [[__m256i; 2]; K] = std::array::from_fn(|kx| {
            let m = span_mask(starts[kx], w);
            [lane_mask256(m), lane_mask256(m >> 8)]
        });
        for oy in 0..oh {
            let iy0 = (oy * s.s_h as usize) as isize - s.p_h as isize;
            let mut acc = [_mm256_setzero_ps(); 2];
            for (ky, taps_ky) in taps.iter().enumerate() {
                let iy = iy0 + (ky * s.d_h as usize) as isize;
                if iy < 0 || iy >= h {
                    continue;
                }
                // SAFETY: `0 <= iy < in_h`: the row lies inside the plane.
                let row = unsafe { j.x.add(iy as usize * w as usize) };
                for kx in 0..K {
                    let p = row.wrapping_offset(starts[kx]);
                    let [m0, m1] = masks[kx];
                    // SAFETY: the masks keep every loaded lane inside the
                    // row's columns `0..in_w`.
                    let xv = unsafe {
                        if SW == 1 {
                            load_masked256(p, m0)
                        } else {
                            let a = load_masked256(p, m0);
                            let b = load_masked256(p.wrapping_add(8), m1);
                            even_lanes256(a, b)
                        }
                    };
                    acc[ky % 2] = _mm256_fmadd_ps(taps_ky[kx], xv, acc[ky % 2]);
                }
            }
            let at = off + oy * ow + ox0;
            let dst = j.out.wrapping_add(at);
            let mut val = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), bias);
            if !j.res.is_null() {
                // SAFETY: masked to the row's output columns.
                val = _mm256_add_ps(val, unsafe {
                    load_masked256(j.res.wrapping_add(at), out_mask)
                });
            }
            val = match s.act {
                1 => _mm256_max_ps(val, _mm256_setzero_ps()),
                2 => _mm256_min_ps(_mm256_max_ps(val, _mm256_setzero_ps()), _mm256_set1_ps(6.0)),
                _ => val,
            };
            // SAFETY: masked to the row's output columns.
            unsafe { store_masked256(dst, out_mask, val) };
        }
        ox0 += 8;
    }
}

/// Output vectors of 8 pixels per AVX2 register block: with 6 channels,
/// 12 accumulators of the 16 registers.
const NV256: usize = 2;

#[target_feature(enable = "avx2,fma")]
fn window_tile256<const M: usize>(j: &WindowJob) {
    let ow = j.s.out_w as usize;
    for oy in 0..j.s.out_h as usize {
        let mut ox = 0;
        while ox + 8 * NV256 <= ow {
            window_block256::<M, NV256>(j, oy, ox, 8 * NV256);
            ox += 8 * NV256;
        }
        if ox < ow {
            match (ow - ox).div_ceil(8) {
                1 => window_block256::<M, 1>(j, oy, ox, ow - ox),
                _ => window_block256::<M, 2>(j, oy, ox, ow - ox),
            }
        }
    }
}

/// The lanes of the low 8 bits of `bits` as a `maskload` mask.
#[target_feature(enable = "avx2")]
fn lane_mask256(bits: u32) -> __m256i {
    let lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let b = _mm256_set1_epi32((bits & 0xff) as i32);
    _mm256_cmpeq_epi32(_mm256_and_si256(b, lanes), lanes)
}

/// Even lanes of two vectors (`a` then `b`).
#[target_feature(enable = "avx2")]
fn even_lanes256(a: __m256, b: __m256) -> __m256 {
    // [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit pairs in order 0 2 1 3.
    let t = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(t)))
}

#[target_feature(enable = "avx2,fma")]
fn window_block256<const M: usize, const NV: usize>(
    j: &WindowJob,
    oy: usize,
    ox0: usize,
    valid: usize,
) {
    let s = j.s;
    let (h, w) = (s.in_h as isize, s.in_w as isize);
    let (kh, kw) = (s.k_h as usize, s.k_w as usize);
    let sw = s.s_w as usize;
    let plane = (h * w) as usize;
    let out_masks: [__m256i; NV] = std::array::from_fn(|v| {
        let k = valid.saturating_sub(8 * v).min(8) as u32;
        lane_mask256((1u32 << k) - 1)
    });
    // Per kernel column and vector: the start column and the masks of the
    // (one or two) loads.
    let mut col_start = [[0isize; NV]; MAX_KW];
    let mut col_masks = [[[_mm256_setzero_si256(); 2]; NV]; MAX_KW];
    for kx in 0..kw.min(MAX_KW) {
        for v in 0..NV {
            let start =
                ((ox0 + 8 * v) * sw) as isize - s.p_w as isize + (kx * s.d_w as usize) as isize;
            let m = span_mask(start, w);
            col_start[kx][v] = start;
            col_masks[kx][v] = [lane_mask256(m), lane_mask256(m >> 8)];
        }
    }
    let iy0 = (oy * s.s_h as usize) as isize - s.p_h as isize;
    let wt = j.blk;
    let mut acc = [[_mm256_setzero_ps(); NV]; M];
    for ic in 0..s.cin_g as usize {
        for ky in 0..kh {
            let iy = iy0 + (ky * s.d_h as usize) as isize;
            if iy < 0 || iy >= h {
                continue;
            }
            // SAFETY: `ic < cin_g` and `0 <= iy < in_h`: the row lies
            // inside the group's input.
            let row = unsafe { j.x.add(ic * plane + iy as usize * w as usize) };
            for kx in 0..kw.min(MAX_KW) {
                let xs: [__m256; NV] = std::array::from_fn(|v| {
                    let p = row.wrapping_offset(col_start[kx][v]);
                    let [m0, m1] = col_masks[kx][v];
                    // SAFETY: the masks keep every loaded lane inside the
                    // row's columns `0..in_w`.
                    unsafe {
                        if sw == 1 {
                            load_masked256(p, m0)
                        } else {
                            let a = load_masked256(p, m0);
                            let b = load_masked256(p.wrapping_add(8), m1);
                            even_lanes256(a, b)
                        }
                    }
                });
                let tap = (ic * kh + ky) * kw + kx;
                for (c, accc) in acc.iter_mut().enumerate() {
                    // SAFETY: `tap < cin_g * taps`: inside the tile's weights.
                    let wv = unsafe { _mm256_set1_ps(*wt.add(tap * M + c)) };
                    for v in 0..NV {
                        accc[v] = _mm256_fmadd_ps(wv, xs[v], accc[v]);
                    }
                }
            }
        }
    }
    let wlen = s.cin_g as usize * kh * kw * M;
    let opos = oy * s.out_w as usize + ox0;
    for (c, accc) in acc.iter().enumerate() {
        // SAFETY: bias and offsets follow the weights in the tile's block.
        let bias = unsafe { _mm256_set1_ps(*wt.add(wlen + c)) };
        let off = unsafe { (*wt.add(wlen + M + c)).to_bits() as usize / 4 };
        for (v, &a) in accc.iter().enumerate() {
            let at = off + opos + 8 * v;
            let mut val = _mm256_add_ps(a, bias);
            if !j.res.is_null() {
                // SAFETY: masked to the row's output columns.
                val = _mm256_add_ps(val, unsafe {
                    load_masked256(j.res.wrapping_add(at), out_masks[v])
                });
            }
            val = match s.act {
                1 => _mm256_max_ps(val, _mm256_setzero_ps()),
                2 => _mm256_min_ps(_mm256_max_ps(val, _mm256_setzero_ps()), _mm256_set1_ps(6.0)),
                _ => val,
            };
            // SAFETY: masked to the row's output columns.
            unsafe { store_masked256(j.out.wrapping_add(at), out_masks[v], val) };
        }
    }
}

/// One linear tile's work: outputs `o0..o0 + mt`.
struct LinearJob {
    inputs: usize,
    x: *const f32,
    blk: *const f32,
    out: *mut f32,
    mt: usize,
}

/// Walks the output tiles `lo..hi` of a linear layer.
///
/// # Safety
/// The pointers and `s` must describe buffers as the packer and the plan
/// lay them out, `0 <= lo <= hi <= units`.
unsafe fn for_linear_tiles(
    out: *mut f32,
    x: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    s: &LinearShape,
    mut tile: impl FnMut(&LinearJob),
) {
    let (inputs, outputs, m) = (s.inputs as usize, s.outputs as usize, s.m as usize);
    for t in lo as usize..hi as usize {
        let o0 = t * m;
        let job = LinearJob {
            inputs,
            x,
            // SAFETY: tile `t` lies inside the packed weights and the
            // output (the caller's contract).
            blk: unsafe { packed.add(o0 * (inputs + 1)) },
            out: unsafe { out.add(o0) },
            mt: m.min(outputs - o0),
        };
        tile(&job);
    }
}

/// The scalar end of a linear tile: the `inputs % 4` inputs after the
/// chunks and the bias, added to the chunks' sums `sums`, stored.
///
/// # Safety
/// `j` is a tile of [`for_linear_tiles`].
unsafe fn linear_finish(j: &LinearJob, sums: &[f32; 32]) {
    let chunks = j.inputs / 4;
    let tail = chunks * 4 * j.mt;
    for o in 0..j.mt {
        let mut acc = sums[4 * o] + sums[4 * o + 1] + sums[4 * o + 2] + sums[4 * o + 3];
        // SAFETY (block): tail weights, bias and the tile's outputs are
        // inside the block and the output.
        unsafe {
            for r in 0..j.inputs % 4 {
                acc += *j.blk.add(tail + r * j.mt + o) * *j.x.add(chunks * 4 + r);
            }
            acc += *j.blk.add(j.inputs * j.mt + o);
            *j.out.add(o) = acc;
        }
    }
}

/// The AVX-512 linear kernel (see [`WideFn`]; `shape` is a
/// [`LinearShape`] with `m <= 8`; `res` is ignored).
///
/// # Safety
/// The host has AVX-512F; the arguments are as [`for_linear_tiles`]
/// requires.
pub(crate) unsafe extern "C" fn linear_avx512(
    out: *mut f32,
    x: *const f32,
    _res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    shape: *const i64,
) {
    // SAFETY: the layer function passes the address of a `LinearShape`.
    let s = unsafe { &*(shape as *const LinearShape) };
    unsafe { for_linear_tiles(out, x, packed, lo, hi, s, |j| linear_tile512(j)) }
}

/// A chunk's 32 weights from `wp`, the lanes `k0` and `k1` select (plain
/// loads when all are selected).
///
/// # Safety
/// The selected lanes are readable.
#[target_feature(enable = "avx512f")]
unsafe fn weights512(wp: *const f32, k0: __mmask16, k1: __mmask16) -> (__m512, __m512) {
    // SAFETY: every selected lane is readable, masked-out ones are not read.
    unsafe {
        if k0 & k1 == !0 {
            (_mm512_loadu_ps(wp), _mm512_loadu_ps(wp.add(16)))
        } else {
            (
                _mm512_maskz_loadu_ps(k0, wp),
                _mm512_maskz_loadu_ps(k1, wp.wrapping_add(16)),
            )
        }
    }
}

/// One tile: each chunk of 4 inputs, broadcast to 4 lanes x 4, multiplies
/// the `mt x 4` weights of the chunk (two vectors, masked to `mt * 4`
/// lanes); two chunks at a time into two pairs of accumulators.
#[target_feature(enable = "avx512f")]
fn linear_tile512(j: &LinearJob) {
    let lanes = 4 * j.mt;
    let k0: __mmask16 = if lanes >= 16 { !0 } else { (1u16 << lanes) - 1 };
    let k1: __mmask16 = if lanes >= 32 {
        !0
    } else if lanes > 16 {
        (1u16 << (lanes - 16)) - 1
    } else {
        0
    };
    let chunks = j.inputs / 4;
    let mut acc = [_mm512_setzero_ps(); 4];
    let step = lanes;
    let mut q = 0;
    // SAFETY (loop): chunk `q < chunks` reads inputs `4q..4q + 4` and the
    // block's `lanes` weights of the chunk (masked).
    while q + 2 <= chunks {
        for u in 0..2 {
            let xv = unsafe { _mm512_broadcast_f32x4(_mm_loadu_ps(j.x.add(4 * (q + u)))) };
            let wp = unsafe { j.blk.add((q + u) * step) };
            let (w0, w1) = unsafe { weights512(wp, k0, k1) };
            acc[2 * u] = _mm512_fmadd_ps(w0, xv, acc[2 * u]);
            acc[2 * u + 1] = _mm512_fmadd_ps(w1, xv, acc[2 * u + 1]);
        }
        q += 2;
    }
    if q < chunks {
        let xv = unsafe { _mm512_broadcast_f32x4(_mm_loadu_ps(j.x.add(4 * q))) };
        let wp = unsafe { j.blk.add(q * step) };
        let (w0, w1) = unsafe { weights512(wp, k0, k1) };
        acc[0] = _mm512_fmadd_ps(w0, xv, acc[0]);
        acc[1] = _mm512_fmadd_ps(w1, xv, acc[1]);
    }
    let mut sums = [0f32; 32];
    // SAFETY: `sums` holds 32 floats.
    unsafe {
        _mm512_storeu_ps(sums.as_mut_ptr(), _mm512_add_ps(acc[0], acc[2]));
        _mm512_storeu_ps(sums.as_mut_ptr().add(16), _mm512_add_ps(acc[1], acc[3]));
        linear_finish(j, &sums);
    }
}

/// The AVX2+FMA linear kernel (see [`linear_avx512`]).
///
/// # Safety
/// As [`linear_avx512`], with AVX2 and FMA instead of AVX-512F.
pub(crate) unsafe extern "C" fn linear_avx2(
    out: *mut f32,
    x: *const f32,
    _res: *const f32,
    packed: *const f32,
    lo: i64,
    hi: i64,
    shape: *const i64,
) {
    // SAFETY: the layer function passes the address of a `LinearShape`.
    let s = unsafe { &*(shape as *const LinearShape) };
    unsafe { for_linear_tiles(out, x, packed, lo, hi, s, |j| linear_tile256(j)) }
}

/// As [`linear_tile512`] with four vectors of 8 per chunk.
#[target_feature(enable = "avx2,fma")]
fn linear_tile256(j: &LinearJob) {
    let lanes = 4 * j.mt;
    let bits = if lanes >= 32 {
        u32::MAX
    } else {
        (1u32 << lanes) - 1
    };
    let masks: [__m256i; 4] = std::array::from_fn(|v| lane_mask256(bits >> (8 * v)));
    let chunks = j.inputs / 4;
    let mut acc = [_mm256_setzero_ps(); 4];
    for q in 0..chunks {
        // SAFETY: chunk `q < chunks` reads inputs `4q..4q + 4` and the
        // block's `lanes` weights of the chunk (masked).
        let x4 = unsafe { _mm_loadu_ps(j.x.add(4 * q)) };
        let xv = _mm256_set_m128(x4, x4);
        let wp = unsafe { j.blk.add(q * lanes) };
        for (v, a) in acc.iter_mut().enumerate() {
            let wv = unsafe { load_masked256(wp.wrapping_add(8 * v), masks[v]) };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
    }
    let mut sums = [0f32; 32];
    // SAFETY: `sums` holds 32 floats.
    unsafe {
        for (v, &a) in acc.iter().enumerate() {
            _mm256_storeu_ps(sums.as_mut_ptr().add(8 * v), a);
        }
        linear_finish(j, &sums);
    }
}

#[cfg(test)]
mod tests {
    use super::span_mask;

    #[test]
    fn span_masks_cover_exactly_the_row() {
        for w in 0..40isize {
            for start in -40..40isize {
                let m = span_mask(start, w);
                for l in 0..32 {
                    let inside = (0..w).contains(&(start + l));
                    assert_eq!(m >> l & 1 == 1, inside, "start {start} w {w} lane {l}");
                }
            }
        }
    }
}
