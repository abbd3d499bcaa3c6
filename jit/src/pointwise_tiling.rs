//! How the full-width pointwise kernels (`wide.rs`) cut a 1x1 stride-1
//! convolution, per vector tier: the register tile (output channels x
//! vectors of pixels), the row width a plane is split into, and the
//! blocks of input channels (K) summed into the output.
//!
//! The 128-bit tier keeps its own choices (`plan::conv_tile`,
//! `plan::row_width`); these are only asked at [`Isa::Avx2`] and
//! [`Isa::Avx512`].

use crate::isa::Isa;
pub(crate) use crate::wide_tiles::{NV256, NV512};

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

/// Whether the tier has a kernel for tiles of `m` channels and register
/// blocks of `nv` vectors (the lowering calls the kernels only then).
pub(crate) fn supports(isa: Isa, m: usize, nv: usize) -> bool {
    nv > 0 && vectors(isa, m) == nv
}

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

/// Bytes of input one row (of one K block) may take: it stays in L2
/// while every channel tile of the group reads it (each pixel vector
/// loaded serves 4 channels' multiply-adds, which L2 feeds). Measured
/// against an L1-sized 24 KB on the EPYC (`bench --isa avx512`, 1 thread,
/// interleaved): ShuffleNet v1 1x g=3 pointwise 49.4 against 48.2 G MAC/s;
/// MobileNet v1 pointwise 11.4 against 11.7 ms (medians of 5 rounds,
/// within the noise).
const ROW_BYTES: usize = 128 * 1024;

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
/// [`ROW_BYTES`]; else rows (multiples of one register block, so that
/// only the plane's last row has a partial block) whose inputs fit; else,
/// for many input channels, rows of one register block with the
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
    // One register block of the preferred tile (64 pixels at AVX-512, 24
    // at AVX2).
    let block = vectors(isa, preferred_channels(isa)) * lanes;
    let most = (ROW_BYTES / 4 / cin_g).min(16 * lanes) / lanes * lanes;
    if most >= block {
        let rows = len
            .div_ceil(most)
            .max(MIN_UNITS.div_ceil(groups))
            .min(len.div_ceil(block));
        let row = len
            .div_ceil(rows)
            .next_multiple_of(block)
            .min(most / block * block);
        return if row >= len {
            whole
        } else {
            (Some(row), cin_g)
        };
    }
    let row = block;
    let rows = len.div_ceil(row);
    if rows < 2 || rows.saturating_mul(groups) < MIN_UNITS {
        return whole;
    }
    let most_k = (ROW_BYTES / 4 / row).max(1);
    let blocks = cin_g.div_ceil(most_k);
    (Some(row), cin_g.div_ceil(blocks))
}

/// The tile's output channels. Rows of at least 4 vectors: 4 channels
/// at AVX-512 and 3 at AVX2, whatever the remainder (measured on ShuffleNet
/// v1 1x g=3, `bench --isa avx512`, 1 thread, pointwise G MAC/s, planes
/// unsplit, 2 rounds: tiles of at most 4 channels 49.2-49.8, at most 5
/// 48.6, at most 6 47.8, the estimate below over 1..=12, with a 7x4 tile
/// that spilled, 47.2-47.3).
/// Shorter rows: the tile with the fewest estimated cycles per input
/// channel (every tile of the group, the remainder tile included), so
/// that short rows still get enough accumulators to cover the latency.
fn channels(isa: Isa, cout_g: usize, row: usize) -> usize {
    if row.div_ceil(lanes(isa)) >= 4 {
        return preferred_channels(isa).min(cout_g);
    }
    (1..=max_channels(isa).min(cout_g))
        .min_by_key(|&m| (cost(isa, cout_g, m, row), std::cmp::Reverse(m)))
        .unwrap_or(1)
}

/// The channels of the tile rows of 4 vectors or more get.
fn preferred_channels(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 4,
        _ => 3,
    }
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
                        // Accumulators, pixel vectors and a broadcast weight: at most 30.
                        assert!(t.nv >= 1 && t.nv * (t.m + 1) < 30);
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
        // MobileNet v1's 14x14 512 -> 512: rows of 64 pixels fit.
        let t = wide_pointwise(Isa::Avx512, 196, 512, 512, 1).unwrap();
        assert_eq!((t.row, t.kc), (Some(64), 512));
        // 14x14 1024 -> 1024: 4 K-blocked rows would be too few units.
        let t = wide_pointwise(Isa::Avx512, 196, 1024, 1024, 1).unwrap();
        assert_eq!((t.row, t.kc), (None, 1024));
        // 56x56 1024 -> 256: rows of 64 pixels, two blocks of 512.
        let t = wide_pointwise(Isa::Avx512, 3136, 1024, 256, 1).unwrap();
        assert_eq!((t.row, t.kc), (Some(64), 512));
        // 28x28 256 -> 256: rows of 128 pixels, not blocked.
        let t = wide_pointwise(Isa::Avx512, 784, 256, 256, 1).unwrap();
        assert_eq!((t.row, t.kc), (Some(128), 256));
    }
}
