//! An index of our own beside the layers caches (issue 5 allows one where it is faster): one
//! sorted table, across many source layers, from a digest's first 32 bits to the layers whose
//! caches (SPEC §7.1) hold it. Probing every layer's bloom filter costs a cache miss per layer
//! and lookup, so 500 layers are ~100x slower than 5; this table answers in one bucket read
//! whatever the number of layers.
//!
//! It only accelerates: a layer named by the index is confirmed by its own cache and a stat of
//! the object, and a layer the index does not cover (new since it was built, or changed) is
//! probed through its cache as before. The index names each layer by the path of the cache file
//! it was built from, so that opening hundreds of source layers maps them to index layers without
//! a syscall, and by that file's identity (device, inode, size, mtime), which is checked when the
//! index first names the layer (its cache is opened then anyway). A cache replaced since is a new
//! file: that layer is then probed through its own cache, and the index is removed when the
//! sources are dropped so that the next conversion or pull rebuilds it. A stale entry can only cost
//! a dedup, never return a wrong object. A source under a path the index does not know is matched
//! by identity (a moved store stays covered).
//!
//! File `objects.index`, little endian: magic `CFSIDX02`, u32 layer count, u32 reserved, u64
//! entry count, u64 byte length of the path table; per layer 5 × u64 (dev, ino, size, mtime s,
//! mtime ns); 65 537 × u32 bucket starts (by the digest's first 16 bits), then each bucket's
//! sorted entries, each u32 = the digest's next 16 bits << 16 | layer number; then the path
//! table: per layer a u32 length and the cache file's path. Hardlink fingerprints are left out
//! (lookups ask for contents and chunks): 4 bytes per object, so that the pages a pull touches
//! stay few. Rebuilt (written to a temporary file and renamed) when more than [`MAX_UNINDEXED`]
//! layers with caches are not covered.

use std::fs::Metadata;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::chunked::cache::{Bytes, LayerCache};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CFSIDX02";
pub const FILE_NAME: &str = "objects.index";
/// Layers probed one by one before the index is rebuilt to cover them.
pub const MAX_UNINDEXED: usize = 8;
const BUCKETS: usize = 1 << 16;
const HEADER: usize = 32;
const LAYER_RECORD: usize = 40;
/// Entries carry a 16-bit layer number.
const MAX_LAYERS: usize = u16::MAX as usize;

/// What identifies the cache file an index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheIdentity(pub [u64; 5]);

impl CacheIdentity {
    pub fn of(meta: &Metadata) -> CacheIdentity {
        CacheIdentity([meta.dev(), meta.ino(), meta.size(), meta.mtime() as u64, meta.mtime_nsec() as u64])
    }
}

/// A mapped (or, when built here, in-memory) index file.
pub struct MergedIndex {
    data: Bytes,
    layers: Vec<CacheIdentity>,
    /// Where each layer's cache path lies in `data`.
    paths: Vec<std::ops::Range<usize>>,
    n_entries: usize,
    /// Device and inode of the file it was read from (to remove it only if it is still that file).
    file: Option<(u64, u64)>,
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

impl MergedIndex {
    /// Opens `dir/objects.index`; `None` when it is missing or not a valid index (it is then
    /// rebuilt, never trusted).
    pub fn open(dir: &Path) -> Option<MergedIndex> {
        let file = std::fs::File::open(dir.join(FILE_NAME)).ok()?;
        let meta = file.metadata().ok()?;
        // SAFETY: a read-only map of a file only ever replaced by rename; every access below is
        // bounds-checked against the map's length.
        // No MADV_RANDOM: fault-around maps neighbouring cached pages too, fewer faults.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let mut ix = MergedIndex::from_bytes(Bytes::Mapped(map))?;
        ix.file = Some((meta.dev(), meta.ino()));
        Some(ix)
    }

    /// Parses index file bytes (a copy is kept); `None` when they are not a valid index.
    pub fn parse(data: &[u8]) -> Option<MergedIndex> {
        MergedIndex::from_bytes(Bytes::Owned(data.to_vec()))
    }

    fn from_bytes(data: Bytes) -> Option<MergedIndex> {
        if data.get(..8)? != MAGIC {
            return None;
        }
        let n_layers = u32_at(&data, 8)? as usize;
        let n_entries = usize::try_from(u64_at(&data, 16)?).ok()?;
        let paths_len = usize::try_from(u64_at(&data, 24)?).ok()?;
        let entries_at = HEADER + n_layers.checked_mul(LAYER_RECORD)? + (BUCKETS + 1) * 4;
        let paths_at = entries_at.checked_add(n_entries.checked_mul(4)?)?;
        if n_layers > MAX_LAYERS || data.len() != paths_at.checked_add(paths_len)? {
            return None;
        }
        let layers = (0..n_layers)
            .map(|i| {
                let at = HEADER + i * LAYER_RECORD;
                Some(CacheIdentity(std::array::from_fn(|j| u64_at(&data, at + j * 8).unwrap_or(0))))
                    .filter(|_| data.len() >= at + LAYER_RECORD)
            })
            .collect::<Option<Vec<_>>>()?;
        let mut paths = Vec::with_capacity(n_layers);
        let mut at = paths_at;
        for _ in 0..n_layers {
            let len = u32_at(&data, at)? as usize;
            let end = (at + 4).checked_add(len).filter(|&e| e <= data.len())?;
            paths.push(at + 4..end);
            at = end;
        }
        if at != data.len() {
            return None;
        }
        Some(MergedIndex { data, layers, paths, n_entries, file: None })
    }

    /// The cache file path each layer number was built from.
    pub fn layer_path(&self, n: usize) -> Option<&Path> {
        let r = self.paths.get(n)?.clone();
        Some(Path::new(std::ffi::OsStr::from_bytes(self.data.get(r)?)))
    }

    /// The caches this index was built from, by layer number.
    pub fn layers(&self) -> &[CacheIdentity] {
        &self.layers
    }

    /// Layer numbers whose caches hold a digest starting with the 32 bits of `sha256`
    /// (appended to `out`, ascending).
    pub fn lookup(&self, sha256: &[u8], out: &mut Vec<u16>) {
        let Some(&[b0, b1, b2, b3]) = sha256.get(..4) else { return };
        let bucket = u16::from_be_bytes([b0, b1]) as usize;
        let frag = u16::from_be_bytes([b2, b3]) as u32;
        let buckets_at = HEADER + self.layers.len() * LAYER_RECORD;
        let entries_at = buckets_at + (BUCKETS + 1) * 4;
        let bound = |i: usize| (u32_at(&self.data, buckets_at + i * 4).unwrap_or(0) as usize).min(self.n_entries);
        let (lo, hi) = (bound(bucket), bound(bucket + 1));
        if lo >= hi {
            return;
        }
        let entry = |i: usize| u32_at(&self.data, entries_at + i * 4).unwrap_or(u32::MAX);
        // First entry >= frag << 16 in the bucket, then every entry with the same 32 bits.
        let want = frag << 16;
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let mid = (a + b) / 2;
            if entry(mid) < want {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        while a < hi && entry(a) >> 16 == frag {
            out.push(entry(a) as u16);
            a += 1;
        }
    }

    /// Builds an index over `caches`, each with its file's identity and path (layer number =
    /// position), at most [`MAX_LAYERS`] of them.
    pub fn build(caches: &[(&LayerCache, CacheIdentity, &Path)]) -> Result<MergedIndex> {
        let caches = &caches[..caches.len().min(MAX_LAYERS)];
        let total: usize = caches.iter().map(|(c, _, _)| c.len()).sum();
        // Sorted as u64 = bucket << 32 | entry, stored as the u32 entries.
        let mut entries: Vec<u64> = Vec::with_capacity(total);
        for (n, (cache, _, _)) in caches.iter().enumerate() {
            entries.extend(cache.object_digests().into_iter().map(|d| {
                let frag = d[..4].iter().fold(0u64, |a, &b| a << 8 | b as u64);
                frag << 16 | n as u64
            }));
        }
        entries.sort_unstable();
        entries.dedup();
        if entries.len() > u32::MAX as usize {
            return Err(Error::limit(format!("object index: {} entries exceed 2^32", entries.len())));
        }
        let mut path_table = Vec::new();
        for (_, _, path) in caches {
            let p = path.as_os_str().as_bytes();
            let len = u32::try_from(p.len()).map_err(|_| Error::limit("object index: a cache path over 4 GiB"))?;
            path_table.extend_from_slice(&len.to_le_bytes());
            path_table.extend_from_slice(p);
        }
        let mut out = Vec::with_capacity(
            HEADER + caches.len() * LAYER_RECORD + (BUCKETS + 1) * 4 + entries.len() * 4 + path_table.len(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(caches.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&(path_table.len() as u64).to_le_bytes());
        for (_, id, _) in caches {
            id.0.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        let mut at = 0usize;
        for bucket in 0..=BUCKETS {
            while at < entries.len() && ((entries[at] >> 32) as usize) < bucket {
                at += 1;
            }
            out.extend_from_slice(&(at as u32).to_le_bytes());
        }
        entries.iter().for_each(|&e| out.extend_from_slice(&(e as u32).to_le_bytes()));
        out.extend_from_slice(&path_table);
        MergedIndex::from_bytes(Bytes::Owned(out))
            .ok_or_else(|| Error::new(crate::ErrorKind::Internal, "a new object index does not parse"))
    }

    /// Removes `dir/objects.index` if it is still the file this index was read from (it was found
    /// stale: the next user rebuilds it). A newer index renamed in meanwhile is kept, bar a race of
    /// a few instructions that costs at most one rebuild.
    pub fn remove_if_current(&self, dir: &Path) {
        let path = dir.join(FILE_NAME);
        let same = |m: std::fs::Metadata| Some((m.dev(), m.ino())) == self.file;
        if std::fs::symlink_metadata(&path).is_ok_and(same) {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Saves the index as `dir/objects.index` (created if needed): a temporary file renamed over
    /// the old one, so readers never see a partial index and mapped old ones stay valid.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format_args!("mkdir {}", dir.display()), e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".objects.index.")
            .tempfile_in(dir)
            .map_err(|e| Error::io(format_args!("create a temporary file in {}", dir.display()), e))?;
        tmp.write_all(&self.data).map_err(|e| Error::io(format_args!("write {}", tmp.path().display()), e))?;
        tmp.persist(dir.join(FILE_NAME))
            .map_err(|e| Error::io(format_args!("rename into {}/{FILE_NAME}", dir.display()), e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::Toc;
    use sha2::{Digest, Sha256};

    fn cache_of(digests: &[[u8; 32]]) -> LayerCache {
        let entries: Vec<_> = digests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
                serde_json::json!({"type": "reg", "name": format!("f{i}"), "size": 1, "digest": format!("sha256:{hex}")})
            })
            .collect();
        let toc = Toc::parse(serde_json::json!({"version": 1, "entries": entries}).to_string().as_bytes()).unwrap();
        LayerCache::build(&toc, true).unwrap()
    }

    fn d(s: &str) -> [u8; 32] {
        Sha256::digest(s).into()
    }

    #[test]
    fn finds_every_layer_holding_a_digest_and_nothing_else() {
        let shared = d("shared");
        let a = cache_of(&[d("a1"), d("a2"), shared]);
        let b = cache_of(&[d("b1"), shared]);
        let c = cache_of(&[d("c1")]);
        let ids = [CacheIdentity([1, 1, 1, 1, 1]), CacheIdentity([1, 2, 1, 1, 1]), CacheIdentity([1, 3, 1, 1, 1])];
        let paths = [Path::new("/l/a/cache"), Path::new("/l/b/cache"), Path::new("relative/c/cache")];
        let built =
            MergedIndex::build(&[(&a, ids[0], paths[0]), (&b, ids[1], paths[1]), (&c, ids[2], paths[2])]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        built.write(dir.path()).unwrap();
        let ix = MergedIndex::open(dir.path()).expect("written index opens");
        assert_eq!(ix.layers(), &ids);
        assert_eq!((0..3).map(|n| ix.layer_path(n).unwrap()).collect::<Vec<_>>(), paths);
        assert_eq!(ix.layer_path(3), None);
        let find = |x: [u8; 32]| {
            let mut v = Vec::new();
            ix.lookup(&x, &mut v);
            v
        };
        assert_eq!(find(shared), vec![0, 1]);
        assert_eq!(find(d("a2")), vec![0]);
        assert_eq!(find(d("c1")), vec![2]);
        assert_eq!(find(d("absent")), Vec::<u16>::new());
        // Digests at the ends of the bucket range.
        let lowest = [0u8; 32];
        let highest = [0xffu8; 32];
        let e = cache_of(&[lowest, highest]);
        let ix = MergedIndex::build(&[(&e, ids[0], paths[0])]).unwrap();
        let mut v = Vec::new();
        ix.lookup(&lowest, &mut v);
        ix.lookup(&highest, &mut v);
        assert_eq!(v, vec![0, 0]);
    }

    #[test]
    fn a_stale_index_is_removed_only_while_it_is_the_file_that_was_read() {
        let a = cache_of(&[d("a1")]);
        let built = MergedIndex::build(&[(&a, CacheIdentity([0; 5]), Path::new("/a"))]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        built.write(dir.path()).unwrap();
        let read = MergedIndex::open(dir.path()).unwrap();
        // Replaced meanwhile (a rebuild by another process): kept.
        built.write(dir.path()).unwrap();
        read.remove_if_current(dir.path());
        assert!(dir.path().join(FILE_NAME).exists());
        // Still the same file: removed. An index not read from a file removes nothing.
        let read = MergedIndex::open(dir.path()).unwrap();
        built.remove_if_current(dir.path());
        assert!(dir.path().join(FILE_NAME).exists());
        read.remove_if_current(dir.path());
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn damaged_index_files_are_refused_never_followed() {
        let a = cache_of(&[d("a1"), d("a2")]);
        let ix = MergedIndex::build(&[(&a, CacheIdentity([0; 5]), Path::new("/a/cache"))]).unwrap();
        let good = ix.data.to_vec();
        for cut in [0, 7, 8, 23, 24, good.len() / 2, good.len() - 1] {
            assert!(MergedIndex::from_bytes(Bytes::Owned(good[..cut].to_vec())).is_none(), "cut at {cut}");
        }
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        assert!(MergedIndex::from_bytes(Bytes::Owned(bad_magic)).is_none());
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(MergedIndex::from_bytes(Bytes::Owned(huge)).is_none());
        // Path lengths that lie: past the end, short of it, or a table of another length.
        let path_len_at = good.len() - "/a/cache".len() - 4;
        for lie in [u32::MAX, 9, 7] {
            let mut bad = good.clone();
            bad[path_len_at..path_len_at + 4].copy_from_slice(&lie.to_le_bytes());
            assert!(MergedIndex::from_bytes(Bytes::Owned(bad)).is_none(), "path length {lie}");
        }
        let mut bad = good.clone();
        bad[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(MergedIndex::from_bytes(Bytes::Owned(bad)).is_none());
        // Bucket starts that point anywhere: lookups stay in bounds and find nothing wrong.
        let mut wild = good.clone();
        let buckets_at = HEADER + LAYER_RECORD;
        for i in (0..=BUCKETS).step_by(97) {
            wild[buckets_at + i * 4..buckets_at + i * 4 + 4].copy_from_slice(&(i as u32 * 7919).to_le_bytes());
        }
        let ix = MergedIndex::from_bytes(Bytes::Owned(wild)).unwrap();
        let mut v = Vec::new();
        for i in 0..2000 {
            ix.lookup(&d(&i.to_string()), &mut v);
        }
        assert!(v.iter().all(|&l| l == 0));
    }
}
