//! Keeping the root whiteout stubs of composefs images from hiding lower layers (SPEC §10.2).
//!
//! mkcomposefs gives every image root 256 char-device-0:0 entries `00`..`ff` (SPEC §5.3). They
//! exist for kernels without data-only lowers, where they hide the object dirs' `xx/` names. In a
//! stack with data-only lowers they are real whiteouts in a regular lower, so a lower layer's
//! top-level `/db` vanishes under any composefs layer above it that lacks `/db`.
//!
//! Fix, without touching the on-disk blob (which stays byte-identical to what containers/storage
//! writes): after the EROFS layers are mounted, look at the layer roots (a few hundred names at
//! most). Only a composefs layer whose stub names a real top-level entry of some layer below it
//! is replaced, by a stub-less copy of its image (read → drop stubs → write), kept in a cache dir
//! keyed by the original blob's fs-verity digest, so the rewrite happens once per image. Stacks
//! without such a collision (nearly all) mount the blobs as they are.
//!
//! On kernels without data-only lowers (`:` fallback) the stubs are what hides the object dirs,
//! so nothing is changed there. A containers/storage store mounting its own layers still has the
//! defect; stacks mounted through this library (Rust, C, Go, CLI) do not.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::reuse::Identity;
use super::stack::Blob;
use super::MountOptions;
use crate::{Error, Result};

/// Top-level two-hex-digit names of one layer root: mkcomposefs stubs, and real entries.
#[derive(Debug, Default)]
pub(crate) struct RootNames {
    pub stubs: BTreeSet<[u8; 2]>,
    pub real: BTreeSet<[u8; 2]>,
}

fn two_hex(name: &[u8]) -> Option<[u8; 2]> {
    match name {
        [a, b] if crate::image::is_root_stub_name(name) => Some([*a, *b]),
        _ => None,
    }
}

/// Reads the two-hex-digit names at the root of a layer given by an fd (a classic tree or a
/// detached EROFS mount). Only char devices are stat-ed (the directory entry type says the rest).
/// A stub looks exactly as mkcomposefs makes it: char 0:0, mode 0644, the root's owner and mtime.
/// A real whiteout of the same name would look the same and is harmless to treat as a stub here:
/// it also hides that name below.
pub(crate) fn root_names(layer: &OwnedFd) -> Result<RootNames> {
    let dir = PathBuf::from(format!("/proc/self/fd/{}", layer.as_raw_fd()));
    let root = std::fs::metadata(&dir).map_err(|e| Error::io("stat layer root", e))?;
    let mut out = RootNames::default();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("read layer root", e))? {
        let entry = entry.map_err(|e| Error::io("read layer root", e))?;
        let name = entry.file_name();
        let Some(hex) = two_hex(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str())) else { continue };
        let ft = entry.file_type().map_err(|e| Error::io("read layer root entry type", e))?;
        if !ft.is_char_device() {
            out.real.insert(hex);
            continue;
        }
        let m = entry.metadata().map_err(|e| Error::io("stat layer root entry", e))?;
        let stub = m.rdev() == 0
            && m.permissions().mode() & 0o7777 == 0o644
            && m.uid() == root.uid()
            && m.gid() == root.gid()
            && (m.mtime(), m.mtime_nsec()) == (root.mtime(), root.mtime_nsec());
        if stub {
            out.stubs.insert(hex);
        } else {
            out.real.insert(hex);
        }
    }
    Ok(out)
}

/// Per-process cache of composefs images' root names (up to 256 stats per image otherwise),
/// keyed by the blob file's identity: the same file unchanged has the same root names.
static IMAGE_ROOT_NAMES: std::sync::Mutex<Option<std::collections::HashMap<Identity, std::sync::Arc<RootNames>>>> =
    std::sync::Mutex::new(None);
/// Bound on cached images: entries are small, but a long-running process should not grow forever.
const CACHE_MAX: usize = 4096;

/// [`root_names`] of a mounted composefs image whose blob has identity `id`.
pub(crate) fn image_root_names(id: &Identity, mounted: &OwnedFd) -> Result<std::sync::Arc<RootNames>> {
    {
        let cache = IMAGE_ROOT_NAMES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.as_ref().and_then(|c| c.get(id)) {
            return Ok(hit.clone());
        }
    }
    let names = std::sync::Arc::new(root_names(mounted)?);
    let mut cache = IMAGE_ROOT_NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let map = cache.get_or_insert_with(Default::default);
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(*id, names.clone());
    Ok(names)
}

/// Indexes (top first) of the layers whose stubs would hide a real entry of a layer below.
pub(crate) fn colliding_layers<N: std::ops::Deref<Target = RootNames>>(layers: &[N]) -> Vec<usize> {
    let mut below: BTreeSet<[u8; 2]> = BTreeSet::new();
    let mut out = Vec::new();
    for (i, l) in layers.iter().enumerate().rev() {
        if l.stubs.iter().any(|s| below.contains(s)) {
            out.push(i);
        }
        below.extend(l.real.iter().copied());
    }
    out.reverse();
    out
}

/// The detached EROFS mount of the stub-less copy of `blob` (whose fs-verity digest is
/// `digest`), the copy made on first use.
pub(crate) fn stubless_copy(
    blob: &mut Blob,
    digest: &[u8; 32],
    cache: &Path,
    opts: &MountOptions,
) -> Result<std::sync::Arc<OwnedFd>> {
    let name = format!("{}.blob", super::verity::hex(digest));
    super::cache::mount_image(cache, &name, opts, &mut || {
        let (f, path) = blob.file()?;
        write_tree(&read_tree(f, path)?, false)
    })
}

/// The detached EROFS mount of one image merging a run of composefs layers (top first), made on
/// first use and cached by the layers' identities (their expected digests, which every layer
/// with one has been checked against, else their files' identities).
pub(crate) fn flattened(
    run: &mut [Blob],
    bottom: bool,
    with_stubs: bool,
    cache: &Path,
    opts: &MountOptions,
) -> Result<std::sync::Arc<OwnedFd>> {
    use sha2::Digest;
    let mut key = sha2::Sha256::new();
    key.update(format!("composefs-storage flatten v2 bottom={bottom} stubs={with_stubs}\n"));
    for b in run.iter() {
        match &b.expected {
            Some(d) => key.update(format!("digest {}\n", super::verity::hex(d))),
            None => key.update(format!("file {:?}\n", b.id)),
        }
    }
    let name = format!("flat-{}.blob", super::verity::hex(&key.finalize()));
    super::cache::mount_image(cache, &name, opts, &mut || {
        let mut trees = Vec::with_capacity(run.len());
        for b in run.iter_mut() {
            let (f, path) = b.file()?;
            trees.push(read_tree(f, path)?);
        }
        write_tree(&super::flatten::merge(&trees, bottom), with_stubs)
    })
}

/// Reads a composefs image (metadata-sized) into a tree; the reader drops the root stubs.
fn read_tree(blob: &File, blob_path: &Path) -> Result<crate::image::Tree> {
    let size = blob.metadata().map_err(|e| Error::io(format!("stat {}", blob_path.display()), e))?.len();
    let size = usize::try_from(size)
        .map_err(|_| Error::limit(format!("composefs blob {} is too large", blob_path.display())))?;
    let mut data = vec![0u8; size];
    std::os::unix::fs::FileExt::read_exact_at(blob, &mut data, 0)
        .map_err(|e| Error::io(format!("read {}", blob_path.display()), e))?;
    crate::image::read_image(&data).map_err(|e| e.context(format!("composefs blob {}", blob_path.display())))
}

/// Writes a tree as a composefs image, with or without the root stubs.
fn write_tree(tree: &crate::image::Tree, stubs: bool) -> Result<Vec<u8>> {
    let options = crate::image::WriteOptions { root_whiteout_stubs: stubs, ..Default::default() };
    let mut out = Vec::new();
    crate::image::write_image(tree, &options, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(stubs: &[&str], real: &[&str]) -> Box<RootNames> {
        let set = |v: &[&str]| v.iter().map(|s| two_hex(s.as_bytes()).unwrap()).collect();
        Box::new(RootNames { stubs: set(stubs), real: set(real) })
    }

    #[test]
    fn only_layers_whose_stubs_hide_something_below_collide() {
        let layers = [names(&["db", "00"], &[]), names(&["00"], &["ab"]), names(&[], &["db"])];
        assert_eq!(colliding_layers(&layers), vec![0]);
        let layers = [names(&["ab"], &[]), names(&["00"], &["ab"]), names(&[], &["00"])];
        assert_eq!(colliding_layers(&layers), vec![0, 1]);
        // A real entry in the same layer or above is not hidden.
        let layers = [names(&[], &["db"]), names(&["db"], &[])];
        assert!(colliding_layers(&layers).is_empty());
        assert!(two_hex(b"DB").is_none() && two_hex(b"d").is_none() && two_hex(b"0f").is_some());
    }
}
