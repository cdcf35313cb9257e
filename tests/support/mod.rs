//! Shared by the integration tests: where the corpus is (../shared/corpus, made with the real
//! tools; see its README).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The corpus directory: `$CFS_CORPUS`, else `../shared/corpus` beside the checkout (as CI lays
/// it out), else one level further up (a git worktree under a sibling folder). `None` (after
/// saying so) when there is none; under CI a missing corpus is a failure, never a silent skip.
pub fn corpus() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("CFS_CORPUS").map(PathBuf::from),
        Some(root.join("../shared/corpus")),
        Some(root.join("../../shared/corpus")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.join("README.md").exists());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "the test corpus is missing (../shared/corpus or $CFS_CORPUS)");
        eprintln!("skipping: corpus not found (set CFS_CORPUS)");
    }
    found
}

/// `corpus/cstorage`, for tests that cannot run without it.
pub fn cstorage() -> PathBuf {
    corpus().expect("the test corpus (../shared/corpus or $CFS_CORPUS)").join("cstorage")
}

/// `len` pseudo-random bytes from a xorshift generator seeded with `seed` (any seed, 0 included):
/// test content that does not compress and is the same on every run.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub mod hygiene;
pub mod oracle;
pub mod tar;
