//! Full-width x86-64 kernels (AVX-512) for the convolutions that are not
//! pointwise: sliding windows (depthwise, the stem, any grouped conv with
//! a horizontal stride of 1 or 2). Like `wide.rs`, they are `std::arch`
//! functions the layer's Cranelift function calls with its shapes as
//! constants in a [`WindowShape`] (passed by address).
//!
//! Measured and not kept (2-vCPU AMD EPYC, 5 interleaved rounds, load
//! about 13): AVX2 versions of these kernels were slower than the 128-bit
//! code there (ShuffleNet v1 stem 0.41 -> 0.55 ms, depthwise 0.35 -> 0.42
//! ms; masked AVX2 loads and stores are slow on AMD), and AVX-512 / AVX2
//! fully connected kernels too (FC 0.223 -> 0.262 ms on ShuffleNet v1,
//! 0.242 -> 0.303 on MobileNet v1). Both are in the history of the `dw`
//! branch; the AVX2 tier and the FC layer keep the 128-bit code.
//!
//! They read the packed blocks of the `f32x4` kernels unchanged
//! (`pack.rs`): per window tile of `mt` channels, weights
//! `[cin_g][kh][kw][mt]`, bias `[mt]`, output byte offsets `[mt]`. They
//! cover the same units (group x channel tile with every output row
//! inside), so the runtime cannot tell them apart.
//!
//! Why every access is in bounds: a unit `u < units` (checked by the
//! runtime) selects a group and a tile inside the tensors as in the
//! `f32x4` kernel. A window row `iy` outside `0..in_h` is skipped; within
//! an input row every load is masked to the columns `0..in_w` (masked-out
//! lanes are neither read nor faulted on, so the padding's zeros come from
//! the mask); every store and residual load is masked to the output
//! columns `0..out_w` of the row. Addresses of masked-out lanes are
//! formed with wrapping pointer arithmetic and never dereferenced.

use core::arch::x86_64::*;

/// The most channels a window tile has (`plan::conv_tile` picks at most 6).
pub(crate) const MAX_TILE: usize = 6;

/// The widest kernel (columns) the window kernels take: their column masks
/// are kept per kernel column in a fixed array.
pub(crate) const MAX_KW: usize = 8;

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
    pub(crate) fn fields(&self) -> [i64; 16] {
        [
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

/// The AVX-512 window kernel (see `wide::PointwiseFn`'s signature; `shape` is a
/// [`WindowShape`]).
///
/// # Safety
/// The host has AVX-512F; the arguments are as [`for_window_tiles`]
/// requires; `s_w` is 1 or 2 and `k_w <= MAX_KW`.
#[no_mangle]
pub(crate) unsafe extern "C" fn shufflekit_window_avx512(
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
        let taps: [[__m512; K]; K] = core::array::from_fn(|ky| {
            core::array::from_fn(|kx| _mm512_set1_ps(*wt.add(ky * K + kx)))
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
        let starts: [isize; K] = core::array::from_fn(|kx| {
            (ox0 * SW) as isize - s.p_w as isize + (kx * s.d_w as usize) as isize
        });
        let masks: [u32; K] = core::array::from_fn(|kx| span_mask(starts[kx], w));
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
    let out_masks: [__mmask16; NV] = core::array::from_fn(|v| {
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
                let xs: [__m512; NV] = core::array::from_fn(|v| {
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
