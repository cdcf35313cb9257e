//! The composefs blob of a layer that containers/storage staged from a TOC (its
//! `generateComposeFsBlob`: `dump.GenerateDump` piped into `mkcomposefs --from-file -`), either
//! byte for byte as that pipeline writes it, or as the layer needs it in c/storage's single-level
//! overlay stack (SPEC §9.2), with two defects of the stock pipeline fixed:
//!
//! - SPEC §10.1: OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) stay plain empty files in the stock
//!   blob, so deletions in the layer never hide anything below it. Here they become real overlay
//!   whiteouts and opaque markers, as [`crate::layer::convert`] makes them from a tar.
//! - SPEC §10.2: the 256 root whiteout stubs `00`..`ff` hide a lower layer's top-level entry of a
//!   two-hex-digit name (`/db`). A layer's lowers never change once it exists, so the blob leaves
//!   the stubs out exactly when one of its lower layers has such an entry. (The stubs matter only
//!   on kernels without data-only overlay lowers, < 6.5, where they hide the object dirs' `xx/`.)
//!
//! A layer with neither whiteouts nor such a lower gets the same bytes as the stock blob.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::tree_builder::{apply_oci_whiteout, WHITEOUT_PREFIX};
use crate::chunked::dump::generate_dump;
use crate::chunked::Toc;
use crate::image::{
    dump, is_root_stub_name, read_root_names, write_image_file, DirEntry, FileContent, InodeKind, Tree,
};
use crate::mount::Layer;
use crate::{Error, Result};

/// How [`write_toc_blob`] writes the blob.
#[derive(Debug, Clone, Default)]
pub struct TocBlobOptions {
    /// Turn OCI whiteouts into overlay whiteouts and opaque directories (SPEC §10.1). `false`
    /// writes them as the stock pipeline does: plain empty files.
    pub oci_whiteouts: bool,
    /// The layer directories below this layer, top first (`<graphroot>/overlay/<id>`): a
    /// composefs layer has `composefs-data/composefs.blob`, a classic layer its tree in `diff/`.
    /// When one has a top-level entry with a two-hex-digit name, the root stubs are left out
    /// (SPEC §10.2). Empty: the stubs are written, as mkcomposefs does.
    pub lower_layers: Vec<PathBuf>,
}

impl TocBlobOptions {
    /// The blob a composefs layer needs in containers/storage's stack: whiteouts converted, and
    /// stubs only where no lower layer's top-level name collides with them.
    pub fn for_layer(lower_layers: Vec<PathBuf>) -> TocBlobOptions {
        TocBlobOptions { oci_whiteouts: true, lower_layers }
    }
}

/// The image tree of a TOC: the tree of containers/storage's dump of it (`verity` maps object
/// paths `ab/cdef…` to fs-verity hex digests), with OCI whiteouts converted if asked.
pub fn toc_tree(toc: &Toc, verity: &HashMap<String, String>, oci_whiteouts: bool) -> Result<Tree> {
    let mut text = Vec::new();
    generate_dump(toc, verity, &mut text)?;
    let mut tree = dump::parse(&text[..], false).map_err(|e| e.context("the TOC's dump"))?;
    if oci_whiteouts {
        convert_oci_whiteouts(&mut tree)?;
    }
    Ok(tree)
}

/// Writes the composefs blob of a TOC to `path` (which must not exist: the file is created
/// exclusively, synced and renamed into place by the image writer) and returns its fs-verity
/// digest, computed while writing.
pub fn write_toc_blob(
    toc: &Toc,
    verity: &HashMap<String, String>,
    options: &TocBlobOptions,
    path: &Path,
) -> Result<[u8; 32]> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::new(crate::ErrorKind::AlreadyExists, format!("{} already exists", path.display())));
    }
    let tree = toc_tree(toc, verity, options.oci_whiteouts)?;
    let mut write = crate::image::WriteOptions::default();
    if lowers_have_hex_names(&options.lower_layers)? {
        write.root_whiteout_stubs = false;
    }
    write_image_file(&tree, &write, path)
}

/// Takes `staged`, the blob that the layer's pull wrote, as the layer's blob at `path` when it is
/// the blob [`write_toc_blob`] would write with `verity` and `options`, and returns its fs-verity
/// digest; else removes it and returns `None` (the caller then writes the blob from the TOC).
///
/// A zstd:chunked pull builds its blob from the TOC: the bytes of `write_toc_blob` in layer mode
/// over lowers without two-hex top-level names, with the fs-verity digests the pull measured
/// (tests/toc_blob.rs). So the staged blob is taken when `options` ask for layer mode, no lower
/// needs the root stubs left out, and each object's digest in it is the one `verity` has (what
/// containers/storage measured after the pull). This spares containers/storage's commit a second
/// parse of the TOC and a second image (a rootfs layer: 0.1 s of its 0.2 s).
pub fn adopt_staged_blob(
    staged: &Path,
    verity: &HashMap<String, String>,
    options: &TocBlobOptions,
    path: &Path,
) -> Result<Option<[u8; 32]>> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::new(crate::ErrorKind::AlreadyExists, format!("{} already exists", path.display())));
    }
    let taken = (|| {
        if !options.oci_whiteouts || lowers_have_hex_names(&options.lower_layers)? {
            return Ok(None);
        }
        // The pull's record says what the blob is: no need to read it (a rootfs layer: 10 ms of
        // the commit). Without one, or with another verity map, the blob is read and checked.
        let digest = match PulledBlobRecord::read(staged) {
            Some(r) if r.oci_whiteouts && r.root_stubs && Some(r.verity) == hex_verity_map_digest(verity) => r.digest,
            _ => {
                let bytes = match std::fs::read(staged) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io(format!("read staged blob {}", staged.display()), e)),
                };
                // A blob the pull wrote is read like any other; one that is not a composefs image,
                // or not this one, is simply not taken.
                let Ok(tree) = crate::image::read_image(&bytes) else { return Ok(None) };
                if !same_verity_digests(&tree, verity) {
                    return Ok(None);
                }
                crate::image::digest_reader(&bytes[..])?
            }
        };
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            staged,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                // The record has served; the layer's blob does not keep it.
                let _ = rustix::fs::removexattr(path, PULLED_BLOB_XATTR);
                Ok(Some(digest))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(rustix::io::Errno::EXIST) => {
                Err(Error::new(crate::ErrorKind::AlreadyExists, format!("{} already exists", path.display())))
            }
            // Another filesystem, or one without RENAME_NOREPLACE: written from the TOC instead.
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::INVAL) => Ok(None),
            Err(e) => {
                Err(Error::io(format!("rename {} to {}", staged.display(), path.display()), std::io::Error::from(e)))
            }
        }
    })();
    if !matches!(taken, Ok(Some(_))) {
        match std::fs::remove_file(staged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("remove staged blob {}", staged.display()), e))
            }
            _ => {}
        }
    }
    taken
}

/// The extended attribute in which a pull records what its blob is ([`PulledBlobRecord`]).
const PULLED_BLOB_XATTR: &str = "user.composefs-storage.pulled-blob";

/// What a pull wrote as its layer's blob, kept on the blob (an extended attribute: it goes where
/// the file goes) so that [`adopt_staged_blob`] need not read the blob again to know it: the
/// options it was written with, the sha256 of the fs-verity digests of objects in it
/// ([`verity_map_digest`]) and the blob's own fs-verity digest. Only whoever may write the staged
/// blob may set it, and such a writer could as well replace the blob by one that passes the
/// check that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledBlobRecord {
    pub oci_whiteouts: bool,
    pub root_stubs: bool,
    pub verity: [u8; 32],
    pub digest: [u8; 32],
}

impl PulledBlobRecord {
    const MAGIC: &'static [u8; 4] = b"cfs1";
    const LEN: usize = 4 + 1 + 32 + 32;

    /// Sets the record on `blob`. It is an optimization: where it cannot be set (a filesystem
    /// without user extended attributes, no room for one) the blob is read at adoption instead.
    pub fn write(&self, blob: &Path) {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(Self::MAGIC);
        v.push(u8::from(self.oci_whiteouts) | (u8::from(self.root_stubs) << 1));
        v.extend_from_slice(&self.verity);
        v.extend_from_slice(&self.digest);
        let _ = rustix::fs::setxattr(blob, PULLED_BLOB_XATTR, &v, rustix::fs::XattrFlags::empty());
    }

    /// The record on `blob`, if it has a well-formed one.
    pub fn read(blob: &Path) -> Option<PulledBlobRecord> {
        let mut v = [0u8; Self::LEN + 1];
        let n = rustix::fs::getxattr(blob, PULLED_BLOB_XATTR, &mut v[..]).ok()?;
        if n != Self::LEN || &v[..4] != Self::MAGIC || v[4] & !3 != 0 {
            return None;
        }
        Some(PulledBlobRecord {
            oci_whiteouts: v[4] & 1 != 0,
            root_stubs: v[4] & 2 != 0,
            verity: v[5..37].try_into().ok()?,
            digest: v[37..69].try_into().ok()?,
        })
    }
}

/// The sha256 of a verity map (object path -> fs-verity digest), independent of its order: each
/// path, a NUL and the 32 digest bytes, by path.
pub fn verity_map_digest<'a>(map: impl IntoIterator<Item = (&'a str, [u8; 32])>) -> [u8; 32] {
    use sha2::Digest;
    let sorted: std::collections::BTreeMap<&str, [u8; 32]> = map.into_iter().collect();
    let mut h = sha2::Sha256::new();
    for (path, d) in sorted {
        h.update(path.as_bytes());
        h.update([0u8]);
        h.update(d);
    }
    h.finalize().into()
}

/// [`verity_map_digest`] of a map as containers/storage gives it (hex digests); `None` when a value
/// is not 64 hex digits (no record is trusted for such a map: the blob is read and checked).
fn hex_verity_map_digest(map: &HashMap<String, String>) -> Option<[u8; 32]> {
    let pairs: Option<Vec<(&str, [u8; 32])>> =
        map.iter().map(|(k, v)| crate::source::unhex32(v.as_bytes()).map(|d| (k.as_str(), d))).collect();
    Some(verity_map_digest(pairs?))
}

/// Whether every object of `tree` has the fs-verity digest that `verity` gives its path (none where
/// `verity` has none), as the blob written from the TOC with `verity` would.
fn same_verity_digests(tree: &Tree, verity: &HashMap<String, String>) -> bool {
    tree.walk().filter(|(_, e)| !e.hardlink).all(|(_, e)| match &tree.inode(e.inode).kind {
        InodeKind::File(crate::image::File { content: FileContent::External { payload, digest }, .. }) => {
            let want = payload.as_deref().and_then(|p| verity.get(std::str::from_utf8(p).ok()?));
            match (want, digest) {
                (None, None) => true,
                (Some(hex), Some(d)) => hex.eq_ignore_ascii_case(&crate::source::hex(d)),
                _ => false,
            }
        }
        _ => true,
    })
}

/// Whether any of `layers` has a real top-level entry that a root stub would hide.
fn lowers_have_hex_names(layers: &[PathBuf]) -> Result<bool> {
    for layer in layers {
        let names = match Layer::from_layer_dir(layer)? {
            Layer::Composefs { blob, .. } => {
                let f = std::fs::File::open(&blob)
                    .map_err(|e| Error::io(format!("open lower layer blob {}", blob.display()), e))?;
                // SAFETY: a read-only private mapping of a blob that containers/storage writes
                // once and never changes; the reader checks every offset against its length.
                let map = unsafe { memmap2::Mmap::map(&f) }
                    .map_err(|e| Error::io(format!("map lower layer blob {}", blob.display()), e))?;
                read_root_names(&map).map_err(|e| e.context(format!("lower layer blob {}", blob.display())))?
            }
            Layer::Classic { tree } => std::fs::read_dir(&tree)
                .and_then(|it| it.map(|e| e.map(|e| e.file_name().as_bytes().to_vec())).collect())
                .map_err(|e| Error::io(format!("read lower layer {}", tree.display()), e))?,
        };
        if names.iter().any(|n| is_root_stub_name(n)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Turns the OCI whiteouts a dump keeps as plain files into overlay whiteouts and opaque
/// directories, as [`crate::layer::tree_builder`] does while reading a tar: `.wh.NAME` hides NAME
/// below (unless this layer has NAME itself), `.wh..wh..opq` makes its directory opaque, other
/// AUFS metadata is dropped.
pub fn convert_oci_whiteouts(tree: &mut Tree) -> Result<()> {
    let dirs: Vec<usize> = std::iter::once(crate::image::ROOT)
        .chain(tree.walk().filter(|(_, e)| !e.hardlink && tree.inode(e.inode).as_dir().is_some()).map(|(_, e)| e.inode))
        .collect();
    for dir in dirs {
        let Some(d) = tree.inode(dir).as_dir() else { continue };
        let marked: Vec<(Vec<u8>, DirEntry)> = d
            .entries
            .range(WHITEOUT_PREFIX.to_vec()..)
            .take_while(|(n, _)| n.starts_with(WHITEOUT_PREFIX))
            .map(|(n, e)| (n.clone(), *e))
            .collect();
        for (name, entry) in marked {
            let inode = tree.inode(entry.inode);
            let path = || String::from_utf8_lossy(&name).into_owned();
            if !matches!(inode.kind, InodeKind::File(_)) {
                return Err(Error::format(format!("whiteout {:?} is not a regular file", path())));
            }
            if !entry.hardlink && inode.nlink > 1 {
                return Err(Error::format(format!("whiteout {:?} has other hardlinked names", path())));
            }
            let meta = inode.meta.clone();
            if let Some(d) = tree.inode_mut(dir).as_dir_mut() {
                d.entries.remove(&name);
            }
            if entry.hardlink {
                let target = tree.inode_mut(entry.inode);
                target.nlink = target.nlink.saturating_sub(1);
            }
            apply_oci_whiteout(tree, dir, &name, &meta).map_err(|e| e.context(format!("{:?}", path())))?;
        }
    }
    // Whiteout files named once are now unreachable: drop them.
    *tree = tree.normalized();
    Ok(())
}
