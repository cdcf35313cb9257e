//! The layers whose objects a new layer may reuse (SPEC §7), and which of them may hold a given
//! digest: each layer's lookaside cache answers for it (a bloom filter and a sorted table), and
//! with an index directory a [`MergedIndex`] answers for most of them at once.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{openat, Mode, OFlags};

use super::index::{CacheIdentity, MergedIndex, MAX_UNINDEXED};
use crate::chunked::cache::{CacheKey, LayerCache};
use crate::{Error, Result};

pub struct Source {
    /// The layer's `diff/`.
    pub path: PathBuf,
    /// `diff/`, opened on first use (with an index, most layers are never asked).
    diff: std::sync::OnceLock<std::result::Result<OwnedFd, rustix::io::Errno>>,
    /// The layer's lookaside cache file (SPEC §7.1), when it has one, and its identity.
    cache_file: Option<(PathBuf, CacheIdentity)>,
    /// The cache, opened on first use: with an index, most layers are never asked.
    cache: std::sync::OnceLock<Option<LayerCache>>,
}

fn open_dir(path: &Path) -> std::result::Result<OwnedFd, rustix::io::Errno> {
    openat(rustix::fs::CWD, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

impl Source {
    /// What identifies the layer's cache file (for the index), when it has one.
    fn identity(&self) -> Option<CacheIdentity> {
        self.cache_file.as_ref().map(|(_, id)| *id)
    }

    /// The layer's `diff/` directory.
    pub fn diff(&self) -> Result<BorrowedFd<'_>> {
        match self.diff.get_or_init(|| open_dir(&self.path)) {
            Ok(fd) => Ok(fd.as_fd()),
            Err(e) => Err(Error::io(format_args!("open source layer objects {}", self.path.display()), (*e).into())),
        }
    }

    /// The layer's cache: a bloom filter and a sorted table that answer "not here" without a
    /// syscall. `None` when the layer has none (or it is unreadable, or of another version).
    pub fn cache(&self) -> Option<&LayerCache> {
        self.cache.get_or_init(|| LayerCache::open(&self.cache_file.as_ref()?.0).ok().flatten()).as_ref()
    }

    /// Opens object `object` (`ab/cdef…`) for reading, relative to `diff/`; `None` when it is
    /// not there (any more).
    pub fn open_object(&self, object: &str) -> Result<Option<std::fs::File>> {
        match openat(self.diff()?, object, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => Ok(Some(fd.into())),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(format_args!("open {}/{object}", self.path.display()), e.into())),
        }
    }

    /// False when the layer's cache says it certainly does not hold `key`. A cache can be stale or
    /// corrupt: only a clean miss counts, a hit is confirmed by the caller.
    pub fn may_hold(&self, key: &CacheKey) -> bool {
        !matches!(self.cache().map(|c| c.lookup(key)), Some(Ok(None)))
    }
}

/// The index and how its layer numbers map to sources.
struct Indexed {
    index: MergedIndex,
    /// Source position of each index layer number (`usize::MAX`: not a source now).
    source_of: Vec<usize>,
    /// Sources the index does not cover, in order (probed one by one).
    unindexed: Vec<usize>,
}

/// Source layers, in the caller's order (the first that holds a digest gives it).
pub struct SourceLayers {
    sources: Vec<Source>,
    indexed: Option<Indexed>,
}

/// Finds `layer/composefs-data/chunked-manifest-cache`; without one, the layer is probed with a
/// stat instead.
///
/// A layer of a containers/storage store (`<graphroot>/overlay/<id>`) has its cache in the layer
/// store instead: `<graphroot>/overlay-layers/<id>/` + the big-data name of
/// `chunked-manifest-cache` (SPEC §2.3), which is read the same way.
fn find_cache(layer: &Path) -> Option<(PathBuf, CacheIdentity)> {
    let open = |p: PathBuf| {
        let m = std::fs::metadata(&p).ok()?;
        Some((p, CacheIdentity::of(&m)))
    };
    open(layer.join(super::metadata::CACHE)).or_else(|| {
        let id = layer.file_name()?;
        let driver_home = layer.parent()?;
        if driver_home.file_name()? != "overlay" {
            return None;
        }
        open(driver_home.parent()?.join("overlay-layers").join(id).join(super::metadata::CSTORAGE_CACHE_KEY_FILE))
    })
}

impl SourceLayers {
    /// Opens the source layer dirs. With `index_dir`, the index kept there is used for the layers
    /// it covers, and rebuilt (best effort: an index that cannot be written is only slower) when
    /// more than [`MAX_UNINDEXED`] layers with caches are not covered.
    pub fn open(layers: &[PathBuf], index_dir: Option<&Path>) -> Result<SourceLayers> {
        let mut sources = Vec::with_capacity(layers.len());
        for layer in layers {
            let path = layer.join("diff");
            let cache_file = find_cache(layer);
            let source = Source { path, diff: Default::default(), cache_file, cache: Default::default() };
            // A layer without a cache is probed on every lookup: a missing one is an error now.
            // (One with a cache exists; its `diff/` is opened when first needed.)
            if source.cache_file.is_none() {
                source.diff()?;
            }
            sources.push(source);
        }
        let indexed = index_dir.and_then(|dir| Self::index(&sources, dir));
        Ok(SourceLayers { sources, indexed })
    }

    fn index(sources: &[Source], dir: &Path) -> Option<Indexed> {
        let with_cache = sources.iter().filter(|s| s.identity().is_some()).count();
        if with_cache <= MAX_UNINDEXED {
            return None; // Probing these few costs less than any index.
        }
        let map = |index: MergedIndex| {
            let mut source_of = vec![usize::MAX; index.layers().len()];
            let by_identity: std::collections::HashMap<CacheIdentity, usize> =
                index.layers().iter().enumerate().map(|(n, id)| (*id, n)).collect();
            let mut unindexed = Vec::new();
            for (i, s) in sources.iter().enumerate() {
                match s.identity().and_then(|id| by_identity.get(&id)) {
                    Some(&n) if source_of[n] == usize::MAX => source_of[n] = i,
                    _ => unindexed.push(i),
                }
            }
            Indexed { index, source_of, unindexed }
        };
        if let Some(found) = MergedIndex::open(dir).map(map) {
            let uncovered = found.unindexed.iter().filter(|&&i| sources[i].identity().is_some()).count();
            if uncovered <= MAX_UNINDEXED {
                return Some(found);
            }
        }
        // An index that cannot be saved would be rebuilt by every pull, costing more than the
        // probes it saves: without a writable index dir, probe.
        if std::fs::create_dir_all(dir).is_err() || rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_err() {
            return None;
        }
        let caches: Vec<(&LayerCache, CacheIdentity)> =
            sources.iter().filter_map(|s| Some((s.cache()?, s.identity()?))).collect();
        let built = MergedIndex::build(&caches).ok()?;
        let _ = built.write(dir);
        Some(map(built))
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn get(&self, i: usize) -> &Source {
        &self.sources[i]
    }

    /// Positions of the sources that may hold `key`, in order: with an index, the layers it
    /// names plus those it does not cover; without, all. Each is still to be confirmed
    /// ([`Source::may_hold`], then the object itself).
    pub fn candidates(&self, key: &CacheKey) -> Vec<usize> {
        let Some(ix) = &self.indexed else { return (0..self.sources.len()).collect() };
        let mut layers = Vec::new();
        ix.index.lookup(key.sha256(), &mut layers);
        let mut out: Vec<usize> = layers
            .into_iter()
            .filter_map(|n| ix.source_of.get(n as usize).copied().filter(|&i| i != usize::MAX))
            .collect();
        out.extend_from_slice(&ix.unindexed);
        out.sort_unstable();
        out.dedup();
        out
    }
}
