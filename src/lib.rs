//! composefs-storage: the composefs layer path of containers/storage.
//!
//! Data flows one way: input stream → tree + objects → image → layer dir → mount.
//! The Rust API in these modules is the real API; [`ffi`] is a thin C boundary over it.

pub mod chunked;
pub mod config;
pub mod error;
pub mod image;
pub mod layer;
pub mod mount;
pub mod source;

pub mod ffi;
// Built (and its tests run) either way; the global allocator only with the feature.
#[cfg_attr(not(feature = "mapped-large-allocs"), allow(dead_code))]
mod mapped_alloc;

#[cfg(feature = "mapped-large-allocs")]
#[global_allocator]
static ALLOCATOR: mapped_alloc::MappedLarge = mapped_alloc::MappedLarge;

pub use error::{Error, ErrorKind, Result};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the unit tests find the shared test corpus (the integration tests' `tests/support`
/// looks the same way): `$CFS_CORPUS`, else `../shared/corpus` beside the checkout (CI's layout),
/// else one level further up (a worktree in a sibling folder). `None` after saying so; under CI a
/// missing corpus fails the test instead of skipping it.
#[cfg(test)]
pub(crate) fn test_corpus() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = [
        std::env::var_os("CFS_CORPUS").map(std::path::PathBuf::from),
        Some(root.join("../shared/corpus")),
        Some(root.join("../../shared/corpus")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("README.md").exists());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "the test corpus is missing (../shared/corpus or $CFS_CORPUS)");
        eprintln!("skipping: corpus not found (set CFS_CORPUS)");
    }
    found
}
