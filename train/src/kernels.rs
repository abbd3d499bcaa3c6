//! The numeric kernels of training: convolution forward and backward
//! (im2col + `matrixmultiply::sgemm`, with a direct path for depthwise
//! convolutions, and a stencil for the 3x3 stride-1 ones), pooling forward
//! and backward. The 1x1 convolutions' products are in `small_gemm`.
//!
//! Every kernel works on one image at a time; the callers in
//! [`crate::grad`] spread images over rayon tasks. Weight gradients are
//! summed per fixed chunk of images and the chunks are then added in order,
//! so the result does not depend on how many threads ran.

use shufflekit_ir::ops::{ConvGeometry, Pool};

/// Row and column strides of a matrix operand, in elements.
#[derive(Clone, Copy)]
pub(crate) struct Strides {
    pub rs: usize,
    pub cs: usize,
}

impl Strides {
    /// A row-major matrix with `cols` columns.
    pub fn rows(cols: usize) -> Strides {
        Strides { rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(cols: usize) -> Strides {
        Strides { rs: 1, cs: cols }
    }
    /// One past the last element an `r x c` matrix with these strides reads.
    pub fn last(self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            0
        } else {
            (r - 1) * self.rs + (c - 1) * self.cs + 1
        }
    }
}

/// `c = a (m x k) * b (k x n) + beta * c`, every operand with its strides.
/// The slices are checked to cover every element the strides address, so
/// the call into `sgemm` stays in bounds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    sa: Strides,
    b: &[f32],
    sb: Strides,
    beta: f32,
    c: &mut [f32],
    sc: Strides,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= sa.last(m, k) && b.len() >= sb.last(k, n) && c.len() >= sc.last(m, n),
        "gemm operands are smaller than their shapes"
    );
    // SAFETY: the assertion above shows every element `sgemm` reads
    // (`a[i*rs + j*cs]` for i < m, j < k, and likewise for b) and writes
    // (c for i < m, j < n) lies inside the slices; `c` is borrowed mutably
    // and cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            sa.rs as isize,
            sa.cs as isize,
            b.as_ptr(),
            sb.rs as isize,
            sb.cs as isize,
            beta,
            c.as_mut_ptr(),
            sc.rs as isize,
            sc.cs as isize,
        );
    }
}

/// One kernel tap's contiguous run of output positions in one output row:
/// output elements `out .. out + count` read input elements `input,
/// input + step, ...`.
#[derive(Clone, Copy)]
struct Run {
    tap: usize,
    out: usize,
    input: usize,
    count: usize,
}

/// The geometry of one convolution plane: every tap's runs.
pub(crate) struct ConvGeom {
    runs: Vec<Run>,
    /// Input step between consecutive outputs of a run (the column stride).
    step: usize,
    /// Kernel taps (`kh * kw`).
    pub taps: usize,
    /// Input plane size.
    pub in_plane: usize,
    /// Output plane size.
    pub out_plane: usize,
    /// 1x1, stride 1, no padding: the input plane is the column matrix.
    pub pointwise: bool,
}

impl ConvGeom {
    /// The runs of a convolution from `h x w` to `oh x ow`.
    pub fn new(p: &ConvGeometry) -> ConvGeom {
        let ([h, w], [oh, ow]) = (p.in_size, p.out_size);
        let [kh, kw] = p.kernel;
        let mut runs = Vec::new();
        for ky in 0..kh {
            let ys = p.valid_outputs(0, ky);
            for kx in 0..kw {
                let xs = p.valid_outputs(1, kx);
                if xs.is_empty() {
                    continue;
                }
                let ix0 = p.input_of(1, kx, xs.start);
                for oy in ys.clone() {
                    runs.push(Run {
                        tap: ky * kw + kx,
                        out: oy * ow + xs.start,
                        input: p.input_of(0, ky, oy) * w + ix0,
                        count: xs.len(),
                    });
                }
            }
        }
        ConvGeom {
            runs,
            step: p.stride[1],
            taps: kh * kw,
            in_plane: h * w,
            out_plane: oh * ow,
            pointwise: p.is_pointwise(),
        }
    }

    /// Writes the column matrix of one image's `channels` input planes
    /// (`channels * taps` rows of `out_plane` values) into `col`, whose rows
    /// are `stride` apart, starting at column `at`.
    pub fn im2col(&self, x: &[f32], channels: usize, col: &mut [f32], stride: usize, at: usize) {
        for c in 0..channels {
            let plane = &x[c * self.in_plane..(c + 1) * self.in_plane];
            for t in 0..self.taps {
                let row = (c * self.taps + t) * stride + at;
                col[row..row + self.out_plane].fill(0.0);
            }
            for r in &self.runs {
                let row = (c * self.taps + r.tap) * stride + at;
                let dst = &mut col[row + r.out..][..r.count];
                if self.step == 1 {
                    dst.copy_from_slice(&plane[r.input..r.input + r.count]);
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = plane[r.input + i * self.step];
                    }
                }
            }
        }
    }

    /// Adds a column matrix's gradient (laid out as [`ConvGeom::im2col`]
    /// writes it) back onto one image's `channels` input planes.
    pub fn col2im(&self, col: &[f32], channels: usize, dx: &mut [f32], stride: usize, at: usize) {
        for c in 0..channels {
            let plane = &mut dx[c * self.in_plane..(c + 1) * self.in_plane];
            for r in &self.runs {
                let row = (c * self.taps + r.tap) * stride + at;
                let src = &col[row + r.out..][..r.count];
                for (i, s) in src.iter().enumerate() {
                    plane[r.input + i * self.step] += s;
                }
            }
        }
    }

    /// Depthwise forward of one channel: `out += sum_tap w[tap] * x(shifted)`.
    pub fn depthwise(&self, x: &[f32], w: &[f32], out: &mut [f32]) {
        for r in &self.runs {
            let wv = w[r.tap];
            let dst = &mut out[r.out..r.out + r.count];
            if self.step == 1 {
                for (d, s) in dst.iter_mut().zip(&x[r.input..r.input + r.count]) {
                    *d += wv * s;
                }
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d += wv * x[r.input + i * self.step];
                }
            }
        }
    }

    /// Depthwise backward of one channel: adds to the input gradient and the
    /// channel's weight gradient.
    pub fn depthwise_back(&self, x: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], dw: &mut [f32]) {
        for r in &self.runs {
            let wv = w[r.tap];
            let g = &dy[r.out..r.out + r.count];
            let mut acc = 0.0f32;
            if self.step == 1 {
                let xs = &x[r.input..r.input + r.count];
                let ds = &mut dx[r.input..r.input + r.count];
                for ((d, &gv), &xv) in ds.iter_mut().zip(g).zip(xs) {
                    *d += wv * gv;
                    acc += gv * xv;
                }
            } else {
                for (i, &gv) in g.iter().enumerate() {
                    let at = r.input + i * self.step;
                    dx[at] += wv * gv;
                    acc += gv * x[at];
                }
            }
            dw[r.tap] += acc;
        }
    }
}

/// One pooling window along one axis: real input cells `lo..hi` and the
/// window's size clipped to input + padding (the divisor with padding).
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub lo: usize,
    pub hi: usize,
    pub padded: usize,
}

/// The windows of a pooling op along one axis (PyTorch's rules, as the
/// reference evaluator applies them).
pub(crate) fn windows(p: &Pool, axis: usize, len: usize, out: usize) -> Vec<Window> {
    (0..out)
        .map(|o| {
            let start = o as isize * p.stride[axis] as isize - p.padding[axis] as isize;
            let end_padded =
                (start + p.kernel[axis] as isize).min(len as isize + p.padding[axis] as isize);
            let (lo, hi) = (start.max(0), end_padded.min(len as isize));
            Window {
                lo: lo as usize,
                hi: hi.max(lo) as usize,
                padded: (end_padded - start).max(0) as usize,
            }
        })
        .collect()
}

/// Max pooling of one plane; records the flat input index of each maximum
/// (the first one in row-major order; `u32::MAX` for an empty window).
pub(crate) fn max_pool_plane(
    x: &[f32],
    w: usize,
    rows: &[Window],
    cols: &[Window],
    out: &mut [f32],
    arg: &mut [u32],
) {
    let ow = cols.len();
    for (oy, ry) in rows.iter().enumerate() {
        for (ox, rx) in cols.iter().enumerate() {
            let mut best = f32::NEG_INFINITY;
            let mut at = u32::MAX;
            for y in ry.lo..ry.hi {
                for xx in rx.lo..rx.hi {
                    let v = x[y * w + xx];
                    if at == u32::MAX || v > best || v.is_nan() && !best.is_nan() {
                        best = v;
                        at = (y * w + xx) as u32;
                    }
                }
            }
            out[oy * ow + ox] = best;
            arg[oy * ow + ox] = at;
        }
    }
}

/// The divisor of an average-pooling window (0 for an empty window).
pub(crate) fn avg_divisor(p: &Pool, ry: &Window, rx: &Window) -> f32 {
    let real = (ry.hi - ry.lo) * (rx.hi - rx.lo);
    if real == 0 {
        0.0
    } else if p.count_include_pad {
        (ry.padded * rx.padded) as f32
    } else {
        real as f32
    }
}

/// Average pooling of one plane.
pub(crate) fn avg_pool_plane(
    p: &Pool,
    x: &[f32],
    w: usize,
    rows: &[Window],
    cols: &[Window],
    out: &mut [f32],
) {
    let ow = cols.len();
    for (oy, ry) in rows.iter().enumerate() {
        for (ox, rx) in cols.iter().enumerate() {
            let d = avg_divisor(p, ry, rx);
            out[oy * ow + ox] = if d == 0.0 {
                0.0
            } else {
                let mut s = 0.0f32;
                for y in ry.lo..ry.hi {
                    for v in &x[y * w + rx.lo..y * w + rx.hi] {
                        s += v;
                    }
                }
                s / d
            };
        }
    }
}

/// The backward of [`avg_pool_plane`]: each output's gradient, divided by
/// its divisor, is added to every real input cell of its window.
pub(crate) fn avg_pool_back_plane(
    p: &Pool,
    dy: &[f32],
    w: usize,
    rows: &[Window],
    cols: &[Window],
    dx: &mut [f32],
) {
    let ow = cols.len();
    for (oy, ry) in rows.iter().enumerate() {
        for (ox, rx) in cols.iter().enumerate() {
            let d = avg_divisor(p, ry, rx);
            if d == 0.0 {
                continue;
            }
            let g = dy[oy * ow + ox] / d;
            for y in ry.lo..ry.hi {
                for v in &mut dx[y * w + rx.lo..y * w + rx.hi] {
                    *v += g;
                }
            }
        }
    }
}

/// The depthwise 3x3 convolution with stride 1 and padding 1 (every
/// stride-1 ShuffleNet unit's), as a stencil over a zero-padded copy of the
/// plane: one pass per output row with the nine taps in registers, instead
/// of one short loop per tap and row ([`ConvGeom::depthwise`]; on 4x4 to
/// 14x14 planes those loops are mostly overhead). The taps are summed in
/// the same order as there, so results match it.
pub(crate) struct Stencil3 {
    h: usize,
    w: usize,
    /// The padded plane, `(h + 2) x (w + 2)`, borders zero.
    padded: Vec<f32>,
}

impl Stencil3 {
    /// A stencil for the geometry, if it is a 3x3, stride-1, padding-1,
    /// dilation-1 depthwise convolution.
    pub fn new(p: &ConvGeometry) -> Option<Stencil3> {
        let fits = p.is_depthwise()
            && p.kernel == [3, 3]
            && p.stride == [1, 1]
            && p.padding == [1, 1]
            && p.dilation == [1, 1];
        let [h, w] = p.in_size;
        fits.then(|| Stencil3 {
            h,
            w,
            padded: vec![0.0; (h + 2) * (w + 2)],
        })
    }

    /// Copies `plane` into the middle of the padded buffer.
    fn pad(&mut self, plane: &[f32]) {
        let pw = self.w + 2;
        for (y, row) in plane.chunks(self.w).take(self.h).enumerate() {
            self.padded[(y + 1) * pw + 1..][..self.w].copy_from_slice(row);
        }
    }

    /// `out += conv(x)` of one channel (`w`: its nine taps).
    pub fn forward(&mut self, x: &[f32], wt: &[f32], out: &mut [f32]) {
        self.pad(x);
        let (w, pw) = (self.w, self.w + 2);
        let t: [f32; 9] = wt[..9].try_into().expect("nine taps");
        for (oy, o) in out.chunks_mut(w).take(self.h).enumerate() {
            let r = |ky: usize, kx: usize| &self.padded[(oy + ky) * pw + kx..][..w];
            let rows = [
                r(0, 0),
                r(0, 1),
                r(0, 2),
                r(1, 0),
                r(1, 1),
                r(1, 2),
                r(2, 0),
                r(2, 1),
                r(2, 2),
            ];
            for (ox, o) in o.iter_mut().enumerate() {
                let mut s = *o;
                for (tv, row) in t.iter().zip(&rows) {
                    s += tv * row[ox];
                }
                *o = s;
            }
        }
    }

    /// Backward of [`Stencil3::forward`] for one channel: adds to the input
    /// gradient `dx` and the nine weight gradients `dw`.
    pub fn backward(&mut self, x: &[f32], wt: &[f32], dy: &[f32], dx: &mut [f32], dw: &mut [f32]) {
        let (w, pw) = (self.w, self.w + 2);
        // dW[t] = sum over outputs of dy * x(shifted by t), row by row.
        self.pad(x);
        for (tap, dw) in dw[..9].iter_mut().enumerate() {
            let (ky, kx) = (tap / 3, tap % 3);
            for (oy, g) in dy.chunks(w).take(self.h).enumerate() {
                let row = &self.padded[(oy + ky) * pw + kx..][..w];
                let mut acc = 0.0f32;
                for (&gv, &xv) in g.iter().zip(row) {
                    acc += gv * xv;
                }
                *dw += acc;
            }
        }
        // dx(iy, ix) = sum over taps of w[t] * dy(iy + 1 - ky, ix + 1 - kx):
        // the same stencil over the padded dy with the taps reversed.
        self.pad(dy);
        let t: [f32; 9] = wt[..9].try_into().expect("nine taps");
        for (iy, d) in dx.chunks_mut(w).take(self.h).enumerate() {
            let r = |ky: usize, kx: usize| &self.padded[(iy + 2 - ky) * pw + 2 - kx..][..w];
            let rows = [
                r(0, 0),
                r(0, 1),
                r(0, 2),
                r(1, 0),
                r(1, 1),
                r(1, 2),
                r(2, 0),
                r(2, 1),
                r(2, 2),
            ];
            for (ix, d) in d.iter_mut().enumerate() {
                let mut s = *d;
                for (tv, row) in t.iter().zip(&rows) {
                    s += tv * row[ix];
                }
                *d = s;
            }
        }
    }
}
