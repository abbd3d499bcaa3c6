//! How the full-width pointwise kernels (`wide.rs`) cut a 1x1 stride-1
//! convolution, per vector tier: the register tile (output channels x
//! vectors of pixels), the row width a plane is split into, and the
//! blocks of input channels (K) summed into the output.
//!
//! The 128-bit tier keeps its own choices (`plan::conv_tile`,
//! `plan::row_width`); these are only asked at [`Isa::Avx2`] and
//! [`Isa::Avx512`].

use crate::isa::Isa;

/// The full-width tiling of one pointwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WideTiling {
    /// Output channels per register tile.
    pub m: usize,
    /// Vectors of pixels per register block ([`vectors`] of `m`).
    pub nv: usize,
    /// Pixels per row of a row-split plane (a multiple of the vector
    /// width), or None: units are channel tiles over the whole plane.
    pub row: Option<usize>,
    /// Input channels per K block (`cin_g` when not blocked).
    pub kc: usize,
}

/// Pixels per vector at `isa`.
pub(crate) fn lanes(isa: Isa) -> usize {
    isa.bits() as usize / 32
}

/// Vectors of 16 pixels per AVX-512 register block of a tile of `m`
/// channels (index `m`, 1..=12): as many as 28 accumulators allow (of the
/// 32 zmm registers; the rest hold pixel vectors and a broadcast weight),
/// at most 4. The kernels are instantiated from this table.
pub(crate) const NV512: [usize; 13] = [0, 4, 4, 4, 4, 4, 4, 4, 3, 3, 2, 2, 2];

/// As [`NV512`] for AVX2 (vectors of 8 pixels, 12 accumulators of the 16
/// ymm registers, at most 3), tiles of 1..=8 channels.
pub(crate) const NV256: [usize; 9] = [0, 3, 3, 3, 3, 2, 2, 1, 1];

/// The most output channels of a register tile at `isa`.
pub(crate) fn max_channels(isa: Isa) -> usize {
    match isa {
        Isa::Sse => 0,
        Isa::Avx2 => NV256.len() - 1,
        Isa::Avx512 => NV512.len() - 1,
    }
}

/// Vectors of pixels per register block of a tile of `m` channels at
/// `isa` ([`NV512`], [`NV256`]); 0 for a tile the kernels do not have.
pub(crate) fn vectors(isa: Isa, m: usize) -> usize {
    let table: &[usize] = match isa {
        Isa::Sse => &[],
        Isa::Avx2 => &NV256,
        Isa::Avx512 => &NV512,
    };
    table.get(m).copied().unwrap_or(0)
}

/// Bytes of input one row (of one K block) may take, so that it stays in
/// L1 (32 KB or more on every AVX2/AVX-512 core) beside the weights and
/// the outputs while every channel tile of the group reads it.
const ROW_BYTES: usize = 24 * 1024;

/// The fewest work units a row-split or K-blocked layer is cut into, so
/// that threads share it evenly (as `plan::MIN_UNITS`).
const MIN_UNITS: usize = 8;

/// The tiling of a pointwise convolution of `groups` groups of `cin_g ->
/// cout_g` channels over a plane of `len` pixels at `isa`; None at
/// [`Isa::Sse`].
pub(crate) fn wide_pointwise(
    isa: Isa,
    len: usize,
    cin_g: usize,
    cout_g: usize,
    groups: usize,
) -> Option<WideTiling> {
    if isa == Isa::Sse || len == 0 || cin_g == 0 || cout_g == 0 {
        return None;
    }
    let (row, kc) = rows_and_blocks(isa, len, cin_g, groups);
    let m = channels(isa, cout_g, row.unwrap_or(len));
    Some(WideTiling {
        m,
        nv: vectors(isa, m),
        row,
        kc,
    })
}

/// The row width and K block: the whole plane when all its inputs fit
/// [`ROW_BYTES`]; else rows (whole vectors, at least 4 of them) whose
/// inputs fit; else, for many input channels, rows of 4 vectors with the
/// input channels in blocks that fit, when that still gives [`MIN_UNITS`]
/// units; else the whole plane unblocked (channel tiles as units: each
/// reads the plane from L2, which the register tile's reuse affords).
fn rows_and_blocks(isa: Isa, len: usize, cin_g: usize, groups: usize) -> (Option<usize>, usize) {
    let lanes = lanes(isa);
    let whole = (None, cin_g);
    if cin_g.saturating_mul(len).saturating_mul(4) <= ROW_BYTES {
        return whole;
    }
    let groups = groups.max(1);
    let most = (ROW_BYTES / 4 / cin_g).min(16 * lanes) / lanes * lanes;
    if most >= 4 * lanes {
        let rows = len
            .div_ceil(most)
            .max(MIN_UNITS.div_ceil(groups))
            .min(len.div_ceil(4 * lanes));
        let row = len.div_ceil(rows).next_multiple_of(lanes);
        return if row >= len {
            whole
        } else {
            (Some(row), cin_g)
        };
    }
    let row = 4 * lanes;
    let rows = len.div_ceil(row);
    if rows < 2 || rows.saturating_mul(groups) < MIN_UNITS {
        return whole;
    }
    let most_k = (ROW_BYTES / 4 / row).max(1);
    let blocks = cin_g.div_ceil(most_k);
    (Some(row), cin_g.div_ceil(blocks))
}

/// The tile's output channels: the one with the fewest estimated cycles
/// per input channel over a row of `row` pixels (every tile of the group,
/// the remainder tile included).
fn channels(isa: Isa, cout_g: usize, row: usize) -> usize {
    (1..=max_channels(isa).min(cout_g))
        .min_by_key(|&m| (cost(isa, cout_g, m, row), std::cmp::Reverse(m)))
        .unwrap_or(1)
}

/// Estimated cycles (x2, to stay integral) per input channel of the group's
/// tiles of `m` channels over `row` pixels: per register block, the
/// multiply-adds (at least 8, the chains that cover the FMA latency) and
/// half a cycle per load (pixel vectors and broadcast weights).
fn cost(isa: Isa, cout_g: usize, m: usize, row: usize) -> usize {
    let lanes = lanes(isa);
    let vecs = row.div_ceil(lanes);
    let block = |mt: usize| {
        let nv = vectors(isa, m).max(1);
        let (full, tail) = (vecs / nv, vecs % nv);
        let one = |v: usize| 2 * (mt * v).max(8) + v + mt;
        full * one(nv) + if tail > 0 { one(tail) } else { 0 }
    };
    let (full, rem) = (cout_g / m, cout_g % m);
    full * block(m) + if rem > 0 { block(rem) } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_has_no_wide_tiling() {
        assert_eq!(wide_pointwise(Isa::Sse, 784, 80, 80, 3), None);
    }

    #[test]
    fn tiles_fit_the_registers_and_rows_are_whole_vectors() {
        for isa in [Isa::Avx2, Isa::Avx512] {
            for len in [1, 15, 49, 196, 784, 3136] {
                for cin_g in [1, 20, 80, 160, 512, 1024] {
                    for cout_g in [1, 7, 20, 60, 80, 512] {
                        let t = wide_pointwise(isa, len, cin_g, cout_g, 1).unwrap();
                        assert!(t.m >= 1 && t.m <= max_channels(isa).min(cout_g));
                        assert!(t.nv >= 1 && t.nv * t.m <= 28);
                        assert!(t.kc >= 1 && t.kc <= cin_g);
                        if let Some(r) = t.row {
                            assert!(r < len && r.is_multiple_of(lanes(isa)));
                            assert!(t.kc * r * 4 <= ROW_BYTES);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn large_ungrouped_layers_are_k_blocked() {
        // MobileNet v1's 14x14 512 -> 512 layer.
        let t = wide_pointwise(Isa::Avx512, 196, 512, 512, 1).unwrap();
        assert_eq!(t.row, None, "4 rows of 64 give too few units");
        // 28x28 256 -> 256.
        let t = wide_pointwise(Isa::Avx512, 784, 256, 256, 1).unwrap();
        assert_eq!(t.row, Some(64));
        assert!(t.kc < 256);
    }
}
