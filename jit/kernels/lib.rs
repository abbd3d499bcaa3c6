//! The kernel library that objects at a wide tier link against: the
//! full-width kernels of the jit crate (the same source files, included
//! here as modules), built by `jit/build.rs` as a `#![no_std]` static
//! library for x86_64-unknown-linux-gnu. It exports only the kernels'
//! `#[no_mangle]` symbols (`shufflekit_*`) and calls no libc function:
//! the one LLVM inserts (`memset`, zeroing spilled accumulators) is the
//! library's own [`memset`], which the build script makes a local symbol,
//! so it neither needs nor replaces the program's.
#![no_std]
// Tile sizes and shapes the lowering uses but the library does not.
#![allow(dead_code)]

#[path = "../src/wide.rs"]
mod wide;
#[path = "../src/wide_tiles.rs"]
mod wide_tiles;
#[path = "../src/wide_window.rs"]
mod wide_window;

/// `memset` for the kernels, so the library needs no libc (local to the
/// library after the build). `rep stosb`, not a loop: LLVM would turn a
/// loop back into a call to `memset`.
///
/// # Safety
/// `dst..dst + n` is writable.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller (LLVM-generated code) passes a writable range.
    unsafe {
        core::arch::asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// A panic can only be a bug in a kernel (division by a zero tile size,
/// which the lowering never passes): trap rather than unwind into C.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `ud2` raises SIGILL and does not return.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
