//! Mounting composefs layers and mixed stacks (SPEC §9).
//!
//! A stack is a list of layers, top first. A composefs layer is a blob (mounted read-only as EROFS)
//! plus its object directory (a data-only overlay lower); a classic layer is an unpacked tree. The
//! overlay on the mountpoint is the only mount left afterwards: the EROFS mounts are detached
//! `fsmount` fds the overlay holds (or, on kernels that cannot take those as layers, attached
//! briefly under a private temp dir and detached once the overlay is up). Unmounting the overlay
//! therefore leaves no mount and no loop device behind, and so does every error.
//!
//! Verified mounts: a composefs layer may carry the expected fs-verity digest of its blob, checked
//! against the open blob before it is mounted (SPEC §10.8, which no upstream implementation does).
//! The check measures the very fd that is then mounted (`/proc/self/fd/N` or the loop device's
//! backing fd), so a path swapped after the check is never mounted.
//!
//! Two departures from containers/storage's composition, both invisible in the merged view:
//! - adjacent composefs layers are merged into one cached image (`flatten.rs`), so a 20-layer
//!   stack needs one EROFS mount instead of 20 (the per-superblock cost dominates otherwise);
//! - the 256 root whiteout stubs of mkcomposefs images never hide a lower layer's top-level
//!   two-hex-digit names (SPEC §10.2): flattened images are written without them, and a single
//!   image whose stubs would hide something below is mounted from a stub-less copy (`stubs.rs`).
//!   The blobs on disk stay byte-identical to what containers/storage writes.
//!
//! Derived images (flattened runs, stub-less copies) live in `MountOptions::stub_cache_dir`,
//! by default `$COMPOSEFS_STORAGE_CACHE_DIR`, else `/run/composefs-storage/stubless` for root
//! (cleared at boot).
//! That dir is bounded and cleaned (`cache.rs`, [`cleanup`]); it also records successful blob
//! checks and the kernel probes' results for later processes. Within a process, blob checks and
//! the EROFS mounts of derived images are remembered (`reuse.rs`), so a repeated mount of a
//! cached stack costs about what a classic stack does (SPEC §11).

mod blob;
mod cache;
mod erofs;
mod flatten;
mod loopdev;
mod overlay;
mod probe;
mod reuse;
mod stack;
mod stubs;
mod tempdir;
mod verity;

use std::path::{Path, PathBuf};

pub use blob::{mount_blob, open_blob_mount};
pub use cache::{cleanup, CacheLimits, CleanupReport, CACHE_DIR_ENV};
pub use erofs::ErofsBacking;
pub use probe::{kernel_features, restrict_features_for_tests, KernelFeatures};
pub use reuse::release_kept_mounts;
pub use stack::{mount, unmount};
pub use verity::{file_digest as blob_digest, hex, parse_digest, VerityPolicy};

use crate::{Error, ErrorKind, Result};

/// Where a composefs layer dir keeps its blob, relative to the layer dir (SPEC §2.1).
pub const BLOB_PATH: &str = "composefs-data/composefs.blob";
/// Where the CLI keeps the blob's expected fs-verity digest (64 hex digits and a newline),
/// relative to the layer dir. The library itself takes digests from its caller.
pub const BLOB_DIGEST_PATH: &str = crate::layer::metadata::BLOB_DIGEST;

/// One layer of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// A composefs layer: its EROFS blob and its flat object directory.
    Composefs {
        blob: PathBuf,
        objects: PathBuf,
        /// The blob's expected fs-verity digest: when set, the mount is refused unless it matches.
        expected_digest: Option<[u8; 32]>,
    },
    /// A classic layer: an unpacked tree.
    Classic { tree: PathBuf },
}

impl Layer {
    /// Recognises a containers/storage-style layer dir: composefs iff `DIR/composefs-data/`
    /// exists (blob in it, objects in `DIR/diff`), else classic with its tree in `DIR/diff`.
    /// No digest is attached; see [`Layer::with_expected_digest`] and [`Layer::read_digest_file`].
    pub fn from_layer_dir(dir: &Path) -> Result<Layer> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(format!("layer dir {}", dir.display()), e))?;
        if !meta.is_dir() {
            return Err(Error::invalid_argument(format!("layer dir {} is not a directory", dir.display())));
        }
        let data = dir.join("composefs-data");
        match std::fs::symlink_metadata(&data) {
            Ok(m) if m.is_dir() => {
                Ok(Layer::Composefs { blob: dir.join(BLOB_PATH), objects: dir.join("diff"), expected_digest: None })
            }
            Ok(_) => Err(Error::format(format!("layer dir {}: composefs-data is not a directory", dir.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Layer::Classic { tree: dir.join("diff") }),
            Err(e) => Err(Error::io(format!("stat {}", data.display()), e)),
        }
    }

    /// Sets the expected blob digest (composefs layers only; classic layers are returned as is).
    pub fn with_expected_digest(mut self, digest: [u8; 32]) -> Layer {
        if let Layer::Composefs { expected_digest, .. } = &mut self {
            *expected_digest = Some(digest);
        }
        self
    }

    /// For a composefs layer dir: reads `DIR/composefs-data/composefs.blob.verity` into the
    /// expected digest. A missing file leaves the digest unset; a malformed one is an error.
    pub fn read_digest_file(self, dir: &Path) -> Result<Layer> {
        if !self.is_composefs() {
            return Ok(self);
        }
        let path = dir.join(BLOB_DIGEST_PATH);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(self.with_expected_digest(
                parse_digest(&s)
                    .map_err(|e| Error::new(ErrorKind::Format, format!("{}: {}", path.display(), e.message())))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    pub fn is_composefs(&self) -> bool {
        matches!(self, Layer::Composefs { .. })
    }
}

/// How to mount a stack.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Upper and work dirs for a read-write mount (same filesystem); `None` mounts read-only.
    pub upper_work: Option<(PathBuf, PathBuf)>,
    pub verity: VerityPolicy,
    pub erofs_backing: ErofsBacking,
    /// Where derived images (stub-less copies and flattened runs, see `stubs.rs`, `flatten.rs`)
    /// are kept; `None` is `$COMPOSEFS_STORAGE_CACHE_DIR`, else `/run/composefs-storage/stubless`
    /// for root, else a per-user dir under the temp dir.
    pub stub_cache_dir: Option<PathBuf>,
    /// Merge each run of adjacent composefs layers into one cached image, so the stack needs one
    /// EROFS mount per run instead of one per layer (see `flatten.rs`). On by default.
    pub flatten: bool,
    /// Keep the EROFS mounts of derived images (flattened runs, stub-less copies) for later mounts
    /// of the same image in this process, so those skip creating and tearing down an EROFS
    /// superblock (see `reuse.rs`). Only with file-backed EROFS and detached layers (no loop
    /// device is ever kept). On by default; [`cleanup`] and [`release_kept_mounts`] drop them.
    pub reuse_erofs: bool,
    /// Bounds of the derived-image cache dir, enforced after each new image.
    pub cache_limits: CacheLimits,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            upper_work: None,
            verity: VerityPolicy::default(),
            erofs_backing: ErofsBacking::default(),
            stub_cache_dir: None,
            flatten: true,
            reuse_erofs: true,
            cache_limits: CacheLimits::default(),
        }
    }
}

impl MountOptions {
    /// Read-only with the default policy (`if-available`).
    pub fn read_only() -> MountOptions {
        MountOptions::default()
    }

    /// Read-write into `upper`, with `work` as overlay's work dir.
    pub fn read_write(upper: impl Into<PathBuf>, work: impl Into<PathBuf>) -> MountOptions {
        MountOptions { upper_work: Some((upper.into(), work.into())), ..MountOptions::default() }
    }
}
