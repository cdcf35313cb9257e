//! The registry of live handles: detects a freed (or foreign, or wrong-type) handle before it is
//! dereferenced, so that use after free and double free get an error code instead of a crash.
//!
//! Why a registry and not a magic field checked on entry (as librsvg's GObject type checks do):
//! reading a magic field of a freed handle is itself a use after free (AddressSanitizer and
//! valgrind report it, and the allocator may have reused the memory); the registry never touches
//! the pointed-to memory until it knows the handle is live. The calls behind handles convert,
//! pull or parse whole layers, so one mutex lock and a B-tree lookup per call cost nothing
//! measurable. Detection is best-effort: a freed address that the allocator hands out again for a
//! new handle of the same type is live again (the call then acts on the new handle, which is
//! memory-safe), and freeing a handle while another thread uses it stays undefined behaviour
//! (the header documents handles as not shareable during a free).

use std::any::TypeId;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use super::util::null_argument;
use crate::{Error, Result};

/// Live handles: (address, type). The type is part of the key, so that a handle of another type
/// passed by mistake (a `cfs_pull_options *` cast to `cfs_convert_options *`) is caught too.
static LIVE: Mutex<BTreeSet<(usize, TypeId)>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<(usize, TypeId)>> {
    // A panic while the lock is held cannot leave the set half-updated (insert/remove are atomic
    // with respect to unwinding), so a poisoned lock is still consistent.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn key<T: 'static>(ptr: *const T) -> (usize, TypeId) {
    (ptr as usize, TypeId::of::<T>())
}

/// Hands a boxed value to C as a handle, recorded as live.
pub(crate) fn register<T: 'static>(value: Box<T>) -> *mut T {
    let ptr = Box::into_raw(value);
    live().insert(key(ptr));
    ptr
}

/// Frees a handle from [`register`]. NULL, a handle already freed and a pointer that is not a live
/// handle of this type are all ignored (the `_free` functions return nothing to report it with).
///
/// # Safety
/// `ptr` is NULL or a pointer the caller got from this library as a `T` handle.
pub(crate) unsafe fn release<T: 'static>(ptr: *mut T) {
    if ptr.is_null() {
        return;
    }
    {
        let mut set = live();
        if !set.remove(&key(ptr)) {
            return;
        }
        if set.is_empty() {
            // An emptied B-tree keeps its root node: drop it, so that a program that freed every
            // handle has nothing of ours left on the heap (valgrind's leak check counts it).
            *set = BTreeSet::new();
        }
    }
    // SAFETY: it was live, so it came from Box::into_raw in `register` and is freed only here,
    // once (the removal above makes any later release of the same pointer a no-op).
    drop(unsafe { Box::from_raw(ptr) });
}

/// Whether `ptr` is a live handle of type `T` (for exports that cannot return an error).
pub(crate) fn is_live<T: 'static>(ptr: *const T) -> bool {
    !ptr.is_null() && live().contains(&key(ptr))
}

fn not_live(what: &str) -> Error {
    Error::invalid_argument(format!(
        "{what} is not a live handle (already freed, or not created by this library as this type)"
    ))
}

/// A `&T` from a handle: a NULL-argument error for NULL, an invalid-argument error when it is not
/// a live handle of this type.
///
/// # Safety
/// The handle is not freed (by another thread) while the reference is in use.
pub(crate) unsafe fn try_handle<'a, T: 'static>(ptr: *const T, what: &str) -> Result<&'a T> {
    if ptr.is_null() {
        return Err(null_argument(what));
    }
    if !is_live(ptr) {
        return Err(not_live(what));
    }
    // SAFETY: live, so it points to the T boxed by `register` and not yet released.
    Ok(unsafe { &*ptr })
}

/// A `&mut T` from a handle, as [`try_handle`].
///
/// # Safety
/// As [`try_handle`], and the handle is not used by another thread during the call.
pub(crate) unsafe fn try_handle_mut<'a, T: 'static>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    if ptr.is_null() {
        return Err(null_argument(what));
    }
    if !is_live(ptr) {
        return Err(not_live(what));
    }
    // SAFETY: live, so it points to the T boxed by `register`; exclusive by the caller's contract.
    Ok(unsafe { &mut *ptr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_and_foreign_handles_are_refused() {
        let p = register(Box::new(7u32));
        // SAFETY: a live handle.
        assert_eq!(*unsafe { try_handle(p, "h") }.unwrap(), 7);
        // A live address under another type is not a handle of that type.
        // SAFETY: never dereferenced (not live as u64).
        assert!(unsafe { try_handle(p as *const u64, "h") }.is_err());
        // SAFETY: live.
        unsafe { release(p) };
        // SAFETY: the registry says it is not live, so it is never dereferenced.
        let e = unsafe { try_handle(p, "h") }.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        // SAFETY: a double free is a no-op.
        unsafe { release(p) };
        let local = 5u32;
        // SAFETY: not live: never dereferenced.
        assert!(unsafe { try_handle(&local as *const u32, "h") }.is_err());
    }
}
