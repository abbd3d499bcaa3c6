//! The static library that objects at a wide tier (`--cpu x86-64-v3`,
//! `x86-64-v4`, or `host` on such a CPU) link against: `shufflekit
//! compile` writes it beside the object as `<object>.kernels.a`.
//!
//! What it is: the full-width kernels of `wide.rs` and `wide_window.rs` (the same source the
//! JIT runs), built by `build.rs` from `kernels/lib.rs` as a `#![no_std]`
//! library for x86_64-unknown-linux-gnu, one ELF object in a GNU archive.
//!
//! - **Symbols.** It exports only the kernels of `kernel_symbols.rs`
//!   (`shufflekit_pointwise_avx2`, `shufflekit_pointwise_avx512`,
//!   `shufflekit_window_avx512`);
//!   everything else, its own `memset` included, is local. Objects
//!   of the same shufflekit version need the library once (linking several
//!   copies is harmless: a member is pulled in once). Objects of
//!   different versions must not share a link line: the kernels' argument
//!   layout is not versioned.
//! - **Dependencies.** None: no libc call (LLVM's one `memset` calls the
//!   library's local `rep stosb` one), no unwinding (`panic=abort`; a
//!   panic, which would be a bug, executes `ud2`), no thread-local or
//!   global data. The build checks that the object has no undefined
//!   symbol.
//! - **Stack.** At most [`KERNELS_STACK_BYTES`] per call (64,880 bytes when
//!   measured), bounded by `build.rs` from the compiled frames and added
//!   to the `STACK_BYTES` of the headers of objects that link it.
//! - **Size.** About 390 KB (the kernels are specialised per tile width);
//!   the test in this file bounds it.
//! - **CPU.** A kernel runs only when the layer calls it, and the object
//!   calls only the tier it was compiled for, so an `x86-64-v3` object
//!   never executes AVX-512 code.

// `KERNELS_STACK_BYTES`: an upper bound of the stack a call into the
// library needs, measured by `build.rs` from the compiled frames.
#[cfg(target_arch = "x86_64")]
include!(concat!(env!("OUT_DIR"), "/kernels_stack.rs"));

#[cfg(not(target_arch = "x86_64"))]
pub(crate) const KERNELS_STACK_BYTES: usize = 0;

/// The library's bytes (a GNU `ar` archive).
#[cfg(target_arch = "x86_64")]
pub(crate) const KERNELS_A: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/libshufflekit_kernels.a"));

/// Elsewhere there is no library: `Target::for_object` refuses the wide
/// tiers on such hosts.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const KERNELS_A: &[u8] = &[];

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_library_is_a_small_archive_exporting_every_kernel() {
        assert!(KERNELS_A.starts_with(b"!<arch>\n"));
        assert!(
            (1_000..1_000_000).contains(&KERNELS_A.len()),
            "{} bytes",
            KERNELS_A.len()
        );
        let has = |needle: &[u8]| KERNELS_A.windows(needle.len()).any(|w| w == needle);
        for &k in crate::kernel_symbols::WideKernel::ALL {
            assert!(has(k.symbol().as_bytes()), "{} is missing", k.symbol());
        }
        assert!(
            (256..1 << 20).contains(&KERNELS_STACK_BYTES),
            "{KERNELS_STACK_BYTES}"
        );
        // That it needs no symbol from elsewhere is checked by `build.rs`
        // and, with `nm`, by tests/aot.rs.
    }
}
