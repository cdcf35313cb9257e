//! The layers whose objects a new layer may reuse (SPEC §7), and which of them may hold a given
//! digest: each layer's lookaside cache answers for it (a bloom filter and a sorted table), and
//! with an index directory a [`MergedIndex`] answers for most of them at once.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{openat, Mode, OFlags};

use super::index::{CacheIdentity, MergedIndex, MAX_UNINDEXED};
use crate::chunked::cache::{CacheKey, LayerCache};
use crate::{Error, Result};

pub struct Source {
    /// The layer's `diff/`.
    pub path: PathBuf,
    /// `diff/`, opened on first use (with an index, most layers are never asked).
    diff: OnceLock<std::result::Result<OwnedFd, rustix::io::Errno>>,
    /// The layer's lookaside cache file (SPEC §7.1), when it has one, and its identity: from a
    /// stat, or as the index recorded it for that path (checked when the cache is opened).
    cache_file: Option<(PathBuf, CacheIdentity)>,
    /// The cache and the identity of the file read, opened on first use: with an index, most
    /// layers are never asked.
    cache: OnceLock<Option<(LayerCache, CacheIdentity)>>,
    /// For a layer without a cache: the object names in each prefix directory of `diff/`
    /// (sorted), each read on the first lookup under that prefix (see [`Source::may_hold`]).
    listed: OnceLock<Box<[OnceLock<Option<Listing>>]>>,
}

/// The digests of the objects in one prefix directory, sorted.
type Listing = Vec<[u8; 32]>;

fn open_dir(path: &Path) -> std::result::Result<OwnedFd, rustix::io::Errno> {
    openat(rustix::fs::CWD, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

impl Source {
    /// What identifies the layer's cache file (for the index), when it has one.
    fn identity(&self) -> Option<CacheIdentity> {
        self.cache_file.as_ref().map(|(_, id)| *id)
    }

    /// Whether the cache file read is the one recorded in `cache_file` (always true once the
    /// identity came from a stat, unless the file changed since).
    fn cache_is_as_recorded(&self) -> bool {
        self.cache.get_or_init(|| self.load_cache()).as_ref().map(|(_, id)| *id) == self.identity()
    }

    fn load_cache(&self) -> Option<(LayerCache, CacheIdentity)> {
        let (c, meta) = LayerCache::open_file(&self.cache_file.as_ref()?.0).ok().flatten()?;
        Some((c, CacheIdentity::of(&meta)))
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
        self.cache.get_or_init(|| self.load_cache()).as_ref().map(|(c, _)| c)
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

    /// False when the layer certainly does not hold the object of content `digest` (`key`):
    /// its cache says so, or, for a layer without one, the listing of the object's prefix
    /// directory has no such name (a pull into a store with a layer of a few files looked each of
    /// a rootfs's ten thousand contents up there with a stat: 15 ms before the fetch starts; a
    /// layer's objects do not change once it exists). A cache can be stale or corrupt: only a
    /// clean miss counts, a hit is confirmed by the caller.
    pub fn may_hold(&self, key: &CacheKey, digest: &[u8; 32]) -> bool {
        if let Some(cache) = self.cache() {
            return !matches!(cache.lookup(key), Ok(None));
        }
        let listed = self.listed.get_or_init(|| (0..256).map(|_| OnceLock::new()).collect());
        match listed[digest[0] as usize].get_or_init(|| self.list_prefix(digest[0])) {
            Some(digests) => digests.binary_search(digest).is_ok(),
            None => true,
        }
    }

    /// The digests of the objects in `diff/<prefix>/`, sorted (32 bytes each: the listing of a
    /// layer costs what its cache would); empty when there is no such directory, `None` when it
    /// cannot be read (the caller then stats each object, as for a layer never listed). Names that
    /// are not objects are left out: no lookup asks for them.
    fn list_prefix(&self, first: u8) -> Option<Listing> {
        let prefix = crate::source::hex(&[first]);
        let diff = self.diff().ok()?;
        let dir = match openat(diff, &prefix, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Some(Vec::new()),
            Err(_) => return None,
        };
        let mut digests = Listing::new();
        let mut path = [0u8; 64];
        path[..2].copy_from_slice(prefix.as_bytes());
        for e in rustix::fs::Dir::read_from(&dir).ok()? {
            let e = e.ok()?;
            let name = e.file_name().to_bytes();
            if name.len() == 62 {
                path[2..].copy_from_slice(name);
                digests.extend(crate::source::unhex32(&path));
            }
        }
        digests.sort_unstable();
        Some(digests)
    }
}

/// The index and how its layer numbers map to sources.
struct Indexed {
    index: MergedIndex,
    dir: PathBuf,
    /// Source position of each index layer number (`usize::MAX`: not a source now).
    source_of: Vec<usize>,
    /// Sources the index does not cover, in order (probed one by one).
    unindexed: Vec<usize>,
    /// Per source: [`TRUSTED`], [`UNCHECKED`] (mapped by path, its cache not yet compared with the
    /// index) or [`STALE`].
    state: Vec<AtomicU8>,
    /// The [`STALE`] sources: the index names them but their caches changed since it was built.
    /// They are probed like `unindexed` for the rest of the run, and the index is removed on drop
    /// (rebuilt next time).
    stale: Mutex<Vec<usize>>,
    any_stale: AtomicBool,
}

/// Source states in [`Indexed::state`].
const TRUSTED: u8 = 0;
const UNCHECKED: u8 = 1;
const STALE: u8 = 2;

/// Source layers, in the caller's order (the first that holds a digest gives it).
pub struct SourceLayers {
    sources: Vec<Source>,
    indexed: Option<Indexed>,
}

/// Where a layer's cache may be: `layer/composefs-data/chunked-manifest-cache`, else, for a layer
/// of a containers/storage store (`<graphroot>/overlay/<id>`), the layer store's big data
/// `<graphroot>/overlay-layers/<id>/` + the file name of `chunked-manifest-cache` (SPEC §2.3).
fn cache_paths(layer: &Path) -> (PathBuf, Option<PathBuf>) {
    let own = layer.join(super::metadata::CACHE);
    let cstorage = (|| {
        let id = layer.file_name()?;
        let driver_home = layer.parent()?;
        if driver_home.file_name()? != "overlay" {
            return None;
        }
        Some(driver_home.parent()?.join("overlay-layers").join(id).join(super::metadata::CSTORAGE_CACHE_KEY_FILE))
    })();
    (own, cstorage)
}

/// Finds the layer's cache file (see [`cache_paths`]) and its identity; without one, the layer is
/// probed with a stat instead.
fn find_cache(layer: &Path) -> Option<(PathBuf, CacheIdentity)> {
    let open = |p: PathBuf| {
        let m = std::fs::metadata(&p).ok()?;
        Some((p, CacheIdentity::of(&m)))
    };
    let (own, cstorage) = cache_paths(layer);
    open(own).or_else(|| open(cstorage?))
}

impl SourceLayers {
    /// Opens the source layer dirs. With `index_dir`, the index kept there is used for the layers
    /// it covers, and rebuilt (best effort: an index that cannot be written is only slower) when
    /// more than [`MAX_UNINDEXED`] layers with caches are not covered.
    pub fn open(layers: &[PathBuf], index_dir: Option<&Path>) -> Result<SourceLayers> {
        let index = index_dir.and_then(MergedIndex::open);
        // Cache paths the index knows: a source there is mapped without a syscall, and its
        // cache's identity is checked when the index first names it.
        let by_path: HashMap<&Path, usize> = match &index {
            Some(ix) => (0..ix.layers().len()).filter_map(|n| Some((ix.layer_path(n)?, n))).collect(),
            None => HashMap::new(),
        };
        let mut sources = Vec::with_capacity(layers.len());
        let mut known = Vec::with_capacity(layers.len());
        for layer in layers {
            let (own, cstorage) = cache_paths(layer);
            let hit = [Some(own), cstorage].into_iter().flatten().find_map(|p| {
                let n = *by_path.get(p.as_path())?;
                Some((p, n))
            });
            let (cache_file, n) = match (hit, &index) {
                (Some((p, n)), Some(ix)) => (Some((p, ix.layers()[n])), Some(n)),
                _ => (find_cache(layer), None),
            };
            let source = Source {
                path: layer.join("diff"),
                diff: Default::default(),
                cache_file,
                cache: Default::default(),
                listed: Default::default(),
            };
            // A layer without a cache is probed on every lookup: a missing one is an error now.
            // (One with a cache exists; its `diff/` is opened when first needed.)
            if source.cache_file.is_none() {
                source.diff()?;
            }
            sources.push(source);
            known.push(n);
        }
        let indexed = index_dir.and_then(|dir| Self::index(&sources, &known, index, dir));
        Ok(SourceLayers { sources, indexed })
    }

    /// The index over `sources`: the one read (`known` = the index layer each source's cache path
    /// matched), or a new one when it covers too few of them.
    fn index(sources: &[Source], known: &[Option<usize>], read: Option<MergedIndex>, dir: &Path) -> Option<Indexed> {
        let with_cache = sources.iter().filter(|s| s.identity().is_some()).count();
        if with_cache <= MAX_UNINDEXED {
            return None; // Probing these few costs less than any index.
        }
        // `known`: the index layer of each source's cache, by path; `checked`: whether those
        // caches are the files the index was built from (true for an index built just now).
        let map = |index: MergedIndex, known: &[Option<usize>], checked: bool| {
            let mut source_of = vec![usize::MAX; index.layers().len()];
            let mut state: Vec<AtomicU8> = Vec::with_capacity(sources.len());
            // By path first, then the rest by identity (checked by their stat).
            for (i, n) in known.iter().enumerate() {
                let by_path = n.filter(|&n| source_of[n] == usize::MAX).inspect(|&n| source_of[n] = i);
                state.push(AtomicU8::new(if by_path.is_some() && !checked { UNCHECKED } else { TRUSTED }));
            }
            let by_identity: HashMap<CacheIdentity, usize> =
                index.layers().iter().enumerate().map(|(n, id)| (*id, n)).collect();
            let mut unindexed = Vec::new();
            for (i, s) in sources.iter().enumerate() {
                if known[i].is_some_and(|n| source_of[n] == i) {
                    continue;
                }
                match s.identity().and_then(|id| by_identity.get(&id)) {
                    Some(&n) if source_of[n] == usize::MAX => source_of[n] = i,
                    _ => unindexed.push(i),
                }
            }
            Indexed {
                index,
                dir: dir.to_path_buf(),
                source_of,
                unindexed,
                state,
                stale: Mutex::new(Vec::new()),
                any_stale: AtomicBool::new(false),
            }
        };
        if let Some(found) = read.map(|ix| map(ix, known, false)) {
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
        // Built from the caches as read now (their identities as opened, not as recorded); layer
        // number = position among the sources that have one.
        let mut caches: Vec<(&LayerCache, CacheIdentity, &Path)> = Vec::new();
        let mut known = vec![None; sources.len()];
        for (i, s) in sources.iter().enumerate() {
            if let (Some((cache, id)), Some((path, _))) = (s.cache.get_or_init(|| s.load_cache()), &s.cache_file) {
                known[i] = Some(caches.len());
                caches.push((cache, *id, path.as_path()));
            }
        }
        // (It covers at most its layer limit: numbers past it are no layer.)
        let built = MergedIndex::build(&caches).ok()?;
        known.iter_mut().for_each(|n| *n = n.filter(|&n| n < built.layers().len()));
        let _ = built.write(dir);
        Some(map(built, &known, true))
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
            .filter(|&i| self.check_indexed(ix, i))
            .collect();
        out.extend_from_slice(&ix.unindexed);
        if ix.any_stale.load(Ordering::Acquire) {
            out.extend(ix.stale.lock().unwrap_or_else(|p| p.into_inner()).iter());
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether the index may answer for source `i`: on the first question, its cache is opened
    /// and must be the file the index was built from; if not, the source is probed through its
    /// own cache from then on, like one the index does not cover.
    fn check_indexed(&self, ix: &Indexed, i: usize) -> bool {
        match ix.state[i].load(Ordering::Acquire) {
            TRUSTED => true,
            STALE => false,
            _ => {
                let ok = self.sources[i].cache_is_as_recorded();
                ix.state[i].store(if ok { TRUSTED } else { STALE }, Ordering::Release);
                if !ok {
                    ix.stale.lock().unwrap_or_else(|p| p.into_inner()).push(i);
                    ix.any_stale.store(true, Ordering::Release);
                }
                ok
            }
        }
    }
}

/// Layers mapped to the index by path whose caches a run stats at its end when the index never
/// named them: a cache replaced by one naming objects the index does not know is then noticed
/// within (layers / this) runs, at a cost that does not grow with the store.
const CHECKS_PER_RUN: usize = 16;

impl Drop for SourceLayers {
    fn drop(&mut self) {
        let Some(ix) = &self.indexed else { return };
        if !ix.any_stale.load(Ordering::Acquire) {
            // A different window of layers each run (any varying start does).
            let n = self.sources.len();
            let start = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as usize ^ std::process::id() as usize);
            let changed = (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| ix.state[i].load(Ordering::Acquire) == UNCHECKED)
                .take(CHECKS_PER_RUN)
                .any(|i| {
                    let s = &self.sources[i];
                    let now = s.cache_file.as_ref().and_then(|(p, _)| std::fs::metadata(p).ok());
                    now.map(|m| CacheIdentity::of(&m)) != s.identity()
                });
            if !changed {
                return;
            }
        }
        ix.index.remove_if_current(&ix.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::cache::digest_key;

    /// A layer without a cache answers from the listing of each prefix directory: held objects
    /// may be there, others (in a listed prefix, in a prefix with no directory, in a prefix that
    /// is not a directory) certainly are not.
    #[test]
    fn a_layer_without_a_cache_answers_from_its_listings() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("l");
        let held = [
            [0xab; 32],
            [
                0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
                27, 28, 29, 30, 31,
            ],
        ];
        for d in &held {
            let p = layer.join("diff").join(super::super::tree_builder::object_path(d));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        std::fs::write(layer.join("diff/cd"), b"not a directory").unwrap();
        let sources = SourceLayers::open(&[layer], None).unwrap();
        let src = sources.get(0);
        assert!(src.cache().is_none());
        let ask = |d: &[u8; 32]| src.may_hold(&CacheKey::new(digest_key(d)), d);
        for d in &held {
            assert!(ask(d), "{}", crate::source::hex(d));
        }
        let mut other = held[0];
        other[31] = 0;
        assert!(!ask(&other), "another object in a listed prefix");
        assert!(!ask(&[0x12; 32]), "a prefix with no directory");
        assert!(!ask(&[0xcd; 32]), "a prefix that is not a directory");
    }
}
