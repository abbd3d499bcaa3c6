//! Zeroed `f32` buffers for the arena and the packed weights, aligned to a
//! cache line (and to a huge page when they span one), with their pages
//! touched up front.
//!
//! Why not `Vec<f32>`: its base is only 16-byte aligned (glibc returns
//! page + 16 for large blocks), so every 64-byte AVX-512 access of a
//! 64-byte aligned value in the plan straddles two cache lines, and where
//! the split falls changes from one process to the next. On Linux the
//! buffers of 2 MiB or more also ask for transparent huge pages
//! (`madvise(MADV_HUGEPAGE)`, the kernel's default mode is `madvise`), so
//! the TLB footprint does not depend on the physical pages a process
//! happens to get. The buffer is zero-filled after the advice, so every
//! page faults in (as a huge page where the kernel has one) when the buffer
//! is made, not in the first timed runs.

use std::alloc::{alloc, dealloc, Layout};
use std::ptr::NonNull;

/// Alignment of every buffer: one cache line, one AVX-512 vector.
const LINE: usize = 64;

/// Size and alignment of a transparent huge page on x86-64 and AArch64
/// Linux with 4 KiB base pages.
const HUGE_PAGE: usize = 2 << 20;

/// An owned, zero-initialised, aligned block of `f32`s.
pub(crate) struct Buffer {
    ptr: NonNull<f32>,
    len: usize,
    layout: Option<Layout>,
}

// SAFETY: `Buffer` owns its block exclusively, like a `Vec<f32>`.
unsafe impl Send for Buffer {}
// SAFETY: shared access only reads through `as_ptr`; writes need `&mut`.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// An empty buffer (no allocation).
    pub(crate) fn empty() -> Buffer {
        Buffer {
            ptr: NonNull::dangling(),
            len: 0,
            layout: None,
        }
    }

    /// `len` zeroed floats, or `None` when the allocation fails or its
    /// size overflows.
    pub(crate) fn zeroed(len: usize) -> Option<Buffer> {
        if len == 0 {
            return Some(Buffer::empty());
        }
        let bytes = len.checked_mul(4)?;
        let align = if bytes >= HUGE_PAGE { HUGE_PAGE } else { LINE };
        let layout = Layout::from_size_align(bytes.checked_next_multiple_of(align)?, align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc(layout) };
        let ptr = NonNull::new(raw as *mut f32)?;
        advise_huge_pages(raw, layout);
        // SAFETY: `raw` is a fresh block of `layout.size()` bytes.
        unsafe { std::ptr::write_bytes(raw, 0, layout.size()) };
        Some(Buffer {
            ptr,
            len,
            layout: Some(layout),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *const f32 {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: `ptr` points to `len` initialised floats (or is dangling
        // with `len == 0`), owned by `self`; `&mut self` makes the access
        // unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { dealloc(self.ptr.as_ptr() as *mut u8, layout) };
        }
    }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(raw: *mut u8, layout: Layout) {
    if layout.align() == HUGE_PAGE {
        // SAFETY: `raw..raw + size` is the block just allocated, aligned
        // to a huge page. The advice only changes how the kernel backs the
        // pages; a failure (THP disabled) leaves ordinary pages.
        unsafe { libc::madvise(raw as *mut libc::c_void, layout.size(), libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: *mut u8, _: Layout) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_aligned() {
        for len in [1, 15, 16, 1000, (HUGE_PAGE / 4) + 3] {
            let mut b = Buffer::zeroed(len).unwrap();
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % LINE, 0, "len {len}");
            assert!(b.as_mut_slice().iter().all(|&v| v == 0.0));
        }
        let big = Buffer::zeroed(HUGE_PAGE / 4).unwrap();
        assert_eq!(big.as_ptr() as usize % HUGE_PAGE, 0);
    }

    #[test]
    fn overflow_is_refused_and_empty_buffers_are_empty() {
        assert!(Buffer::zeroed(usize::MAX / 2).is_none());
        assert!(Buffer::zeroed(usize::MAX / 8).is_none());
        assert_eq!(Buffer::zeroed(0).unwrap().as_mut_slice(), &[] as &[f32]);
    }
}
