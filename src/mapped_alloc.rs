//! The library's global allocator: the system's, except that blocks of 1 MiB and more are
//! anonymous mappings of their own, unmapped when freed.
//!
//! Why: glibc maps blocks above its mmap threshold (128 KiB at first) itself, but each time a
//! mapped block larger than the threshold is freed it raises the threshold to that size (up to
//! 32 MiB), and its trim threshold to twice that. A pull frees multi-MiB buffers early (the
//! manifest's), so every later large buffer of the pull comes from the heap arena of the thread
//! that allocates it, and what is freed there stays resident, once per thread. Measured on a cold
//! zstd:chunked pull through containers/storage (rootfs layer, 6 interleaved pairs): 54-72 MiB
//! peak RSS before, 49-51 MiB with this, no slower. The threshold (`mallopt`) belongs to the
//! process, not to a library in it; mapping the library's own large blocks is the same remedy
//! without touching anyone else's allocations. zstd's C allocations still go to malloc.
//!
//! Why 1 MiB and not glibc's 128 KiB: a mapping made and unmapped per block costs its page faults
//! and, in a process with threads, a TLB shootdown on every CPU at each `munmap`; blocks of
//! 128 KiB-1 MiB (a pull's per-file buffers) are better reused from the heap. 128 KiB measured
//! 47 MiB but 6% slower.
//!
//! Leak checkers (valgrind, LeakSanitizer) and allocators preloaded in place of malloc see only
//! malloc: `CFS_ALLOC=malloc` in the environment (read once, at the first large block) sends
//! every block there. `scripts/test-c.sh` sets it for its valgrind and sanitizer runs.
//!
//! Rust programs that link this crate and bring a global allocator of their own build it with
//! `default-features = false` (feature `mapped-large-allocs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Blocks this large or larger are mapped.
const THRESHOLD: usize = 1024 * 1024;

/// The allocator: [`System`] below [`THRESHOLD`], `mmap`/`mremap`/`munmap` from it up.
pub struct MappedLarge;

static PAGE: AtomicUsize = AtomicUsize::new(0);
/// 0: not read yet; 1: map large blocks; 2: malloc only (`CFS_ALLOC=malloc`).
static MODE: AtomicU8 = AtomicU8::new(0);

fn page() -> usize {
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let p = if p > 0 { p as usize } else { 4096 };
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

fn maps_large() -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => {
            // getenv, not std::env: it must not allocate (this runs inside the allocator).
            // SAFETY: a NUL-terminated name; the result is read before anything can change it.
            let value = unsafe { libc::getenv(c"CFS_ALLOC".as_ptr()) };
            let malloc_only = !value.is_null() && unsafe { std::ffi::CStr::from_ptr(value) } == c"malloc";
            MODE.store(if malloc_only { 2 } else { 1 }, Ordering::Relaxed);
            !malloc_only
        }
        mode => mode == 1,
    }
}

/// Whether a block of this layout is (or is to be) a mapping of its own. Decided by the layout
/// alone, so that `dealloc` and `realloc`, which get the layout the block was made with, agree
/// with `alloc`; the mode never changes after it is first read, before any large block exists.
fn is_mapped(layout: Layout) -> bool {
    layout.size() >= THRESHOLD && layout.align() <= page() && maps_large()
}

fn mapping_len(size: usize) -> usize {
    let page = page();
    size.div_ceil(page) * page
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping, no address hint.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            mapping_len(size),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Hands the free memory of malloc's heaps back to the system (`malloc_trim`): called after work
/// that freed much, at a point where what the caller does next would otherwise add to it. It
/// changes no setting of the process's allocator; a no-op where malloc is not glibc's.
pub(crate) fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

unsafe impl GlobalAlloc for MappedLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            // Anonymous mappings are zero-filled.
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_mapped(layout) {
            // SAFETY: `ptr` is a mapping of this length, made by `map` or `mremap` here.
            unsafe { libc::munmap(ptr.cast(), mapping_len(layout.size())) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc's contract: the new size, rounded up to the alignment,
        // does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_mapped(layout), is_mapped(new_layout)) {
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                // The kernel moves the pages (no copy), as glibc's realloc of a mapped block does.
                // SAFETY: `ptr` is a mapping of the old length.
                let p = unsafe {
                    libc::mremap(ptr.cast(), mapping_len(layout.size()), mapping_len(new_size), libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            // Across the threshold: a new block, the bytes both hold copied, the old one freed.
            _ => {
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks hold at least the smaller size, and do not overlap.
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks made, grown, shrunk and freed across the threshold keep their bytes, whichever
    /// side of it they start and end on, and zeroed blocks are zero on both sides.
    #[test]
    fn blocks_keep_their_bytes_across_the_threshold() {
        let a = MappedLarge;
        let sizes = [1, 4096, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, 3 * THRESHOLD + 17, 8 << 20];
        for &from in &sizes {
            for &to in &sizes {
                let layout = Layout::from_size_align(from, 16).unwrap();
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert!(std::slice::from_raw_parts(p, from).iter().all(|&b| b == 0), "{from}: not zeroed");
                    for i in 0..from {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let q = a.realloc(p, layout, to);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % 16, 0);
                    for i in 0..from.min(to) {
                        assert_eq!(*q.add(i), (i % 251) as u8, "{from} -> {to}: byte {i}");
                    }
                    // The whole new block is usable.
                    ptr::write_bytes(q, 0xa5, to);
                    a.dealloc(q, Layout::from_size_align(to, 16).unwrap());
                }
            }
        }
    }

    /// Large blocks are mappings of their own (page-aligned, gone from the address space when
    /// freed); small ones and over-aligned ones are the system allocator's.
    #[test]
    fn large_blocks_are_their_own_mappings() {
        let a = MappedLarge;
        let mapped = |p: *mut u8| {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let addr = p as usize;
            maps.lines().any(|l| {
                let range = l.split(' ').next().unwrap();
                let (start, _) = range.split_once('-').unwrap();
                usize::from_str_radix(start, 16).unwrap() == addr
            })
        };
        unsafe {
            let large = Layout::from_size_align(THRESHOLD, 8).unwrap();
            let p = a.alloc(large);
            assert_eq!(p as usize % page(), 0);
            assert!(mapped(p), "a large block is not a mapping of its own");
            a.dealloc(p, large);
            assert!(!mapped(p), "a freed large block is still mapped");

            let small = Layout::from_size_align(THRESHOLD - 1, 8).unwrap();
            let p = a.alloc(small);
            assert!(!mapped(p), "a block under the threshold is a mapping of its own");
            a.dealloc(p, small);

            let aligned = Layout::from_size_align(THRESHOLD, 2 * page()).unwrap();
            let p = a.alloc(aligned);
            assert_eq!(p as usize % (2 * page()), 0);
            a.dealloc(p, aligned);
        }
    }
}
