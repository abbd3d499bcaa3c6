//! The register blocks the full-width pointwise kernels (`wide.rs`) are
//! instantiated for, per tile width: plain constants, so that the kernel
//! library (`kernels/lib.rs`, `#![no_std]`) compiles them too. The tiling
//! (`pointwise_tiling.rs`) picks among them.

/// Vectors of 16 pixels per AVX-512 register block of a tile of `m`
/// channels (index `m`, 1..=12), at most 4: `m * nv` accumulators plus
/// `nv` pixel vectors and a broadcast weight stay within 30 of the 32 zmm
/// registers, so nothing spills. The kernels are instantiated from this
/// table.
pub(crate) const NV512: [usize; 13] = [0, 4, 4, 4, 4, 4, 4, 3, 3, 2, 2, 2, 2];

/// As [`NV512`] for AVX2 (vectors of 8 pixels, 16 ymm registers): tiles
/// of 1..=3 channels x 3 vectors. Measured on ShuffleNet v1 1x g=3
/// (`bench --isa avx2`, 1 thread, pointwise G MAC/s, 3 rounds): 3x3
/// 40.1-41.1, 6x2 28.8-30.0, 4x3 (16 registers: it spills) 23.5-25.1.
pub(crate) const NV256: [usize; 4] = [0, 3, 3, 3];
