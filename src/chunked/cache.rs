//! containers/storage's per-layer lookaside cache, version 3 (SPEC §7.1): a sorted table of binary
//! digests (file content, hardlink fingerprint, first chunk) pointing at paths in the layer's
//! `diff/`, behind a bloom filter. Read and written byte-compatibly so that a store shared with
//! containers/storage dedups both ways.
//!
//! Layout (little endian): u64 version=3, u64 tagLen, u64 digestLen, bloom filter (u64 nWords,
//! u32 k, nWords × u64), u64 tagsLen, u64 vdataLen, u64 fnamesLen, tags, vdata, fnames.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

#[cfg(test)]
use super::toc::EMPTY_SHA256;
use super::toc::{sha256_hex, Toc, TocEntry, TYPE_CHUNK, TYPE_REG};

/// `chunkType` of a run of zeros (no data to find elsewhere).
const CHUNK_TYPE_ZEROS: &str = "zeros";
use crate::error::ResultExt;
use crate::{Error, Result};

pub const CACHE_VERSION: u64 = 3;
/// `sha256:` followed by 32 raw bytes.
pub const DIGEST_LEN: usize = 7 + 32;
/// A digest followed by u64 offset and u64 length into vdata.
pub const TAG_LEN: usize = DIGEST_LEN + 16;
/// containers/storage's limits on the tag table and the bloom filter (`maxTagsLen`,
/// `bloomFilterMaxLength`): 100 MB each.
pub const MAX_TAGS_LEN: u64 = 100_000_000;
pub const MAX_BLOOM_WORDS: u64 = 100_000_000;
const BLOOM_SCALE: usize = 10;
const BLOOM_HASHES: u32 = 3;

/// The bloom filter being built for a new cache (crc32-based, k = 3, 10 bits per tag).
struct BloomFilter {
    words: Vec<u64>,
    k: u32,
}

impl BloomFilter {
    fn with_bits(bits: usize, k: u32) -> BloomFilter {
        BloomFilter { words: vec![0; bits.div_ceil(64).max(1)], k }
    }

    fn add(&mut self, item: &[u8]) {
        let modulus = (self.words.len() as u32).wrapping_mul(64);
        for i in 0..self.k {
            let (w, m) = bit_of(bloom_hash(item, i), modulus);
            self.words[w] |= m;
        }
    }
}

/// Hash `seed` of an item (`bloomFilter.hash`): independent of the filter, so a key probing
/// hundreds of filters computes it once ([`CacheKey`]).
fn bloom_hash(item: &[u8], seed: u32) -> u32 {
    if item.is_empty() {
        return 0;
    }
    let split = (seed % item.len() as u32) as usize;
    crc32fast::hash(&item[..split]) ^ crc32fast::hash(&item[split..])
}

/// The word and bit of a hash in a filter of `modulus` bits (u32 arithmetic exactly as upstream,
/// so filters are interchangeable).
fn bit_of(h: u32, modulus: u32) -> (usize, u64) {
    let h = if modulus == 0 { 0 } else { h % modulus };
    ((h / 64) as usize, 1u64 << (h % 64))
}

/// Hashes computed once per key; filters with more hash functions (none known) compute the rest.
const KEY_HASHES: usize = BLOOM_HASHES as usize;

/// A digest to look up in many caches, with its bloom hashes computed once.
#[derive(Debug, Clone)]
pub struct CacheKey {
    digest: [u8; DIGEST_LEN],
    hashes: [u32; KEY_HASHES],
}

impl From<[u8; DIGEST_LEN]> for CacheKey {
    fn from(digest: [u8; DIGEST_LEN]) -> CacheKey {
        CacheKey::new(digest)
    }
}

impl CacheKey {
    /// The 32 digest bytes.
    pub fn sha256(&self) -> &[u8] {
        &self.digest[7..]
    }

    pub fn new(digest: [u8; DIGEST_LEN]) -> CacheKey {
        let hashes = std::array::from_fn(|i| bloom_hash(&digest, i as u32));
        CacheKey { digest, hashes }
    }

    fn hash(&self, seed: u32) -> u32 {
        match self.hashes.get(seed as usize) {
            Some(&h) => h,
            None => bloom_hash(&self.digest, seed),
        }
    }
}

/// Where a digest was found in a layer: the path relative to its `diff/` and the byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    pub path: Vec<u8>,
    pub offset: u64,
    pub length: u64,
}

/// A cache file, read in place: lookups test the bloom filter and binary-search the tag table
/// in the file's bytes, so opening a store's hundreds of caches costs a map each, not a read.
pub struct LayerCache {
    data: Bytes,
    /// Byte offset of the bloom filter's words, their count and the hash count.
    bloom_at: usize,
    bloom_words: usize,
    k: u32,
    tags: std::ops::Range<usize>,
    vdata: std::ops::Range<usize>,
    fnames: std::ops::Range<usize>,
}

/// File bytes held in memory or mapped (also used by `layer::index`).
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    /// A read-only shared map, as containers/storage maps the file. Caches (and object indexes)
    /// are replaced by rename, never rewritten in place (ours: `metadata::write_new` into a
    /// staging dir, `MergedIndex::write`; containers/storage: atomic big-data writes), so the
    /// mapped file does not shrink under us.
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

impl std::fmt::Debug for LayerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerCache").field("tags", &self.len()).field("bytes", &self.data.len()).finish()
    }
}

/// Files smaller than this are read rather than mapped (a map costs more than the read).
const MAP_THRESHOLD: u64 = 64 << 10;

/// The 39-byte binary key (`makeBinaryDigest`) of a raw sha256 digest.
pub fn digest_key(digest: &[u8; 32]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    out[..7].copy_from_slice(b"sha256:");
    out[7..].copy_from_slice(digest);
    out
}

/// Converts `sha256:<hex>` to the 39-byte binary key (`makeBinaryDigest`).
pub fn binary_digest(digest: &str) -> Result<[u8; DIGEST_LEN]> {
    let hex = sha256_hex(digest)?;
    let bytes =
        crate::source::unhex32(hex.as_bytes()).ok_or_else(|| Error::format(format!("invalid digest {digest:?}")))?;
    let mut out = [0u8; DIGEST_LEN];
    out[..7].copy_from_slice(b"sha256:");
    out[7..].copy_from_slice(&bytes);
    Ok(out)
}

/// containers/storage's hardlink fingerprint of a TOC entry: sha256 over the content digest, then
/// `uid:gid:<octal mode>`, then each xattr key and its base64 value in key order.
pub fn hardlink_fingerprint(e: &TocEntry) -> String {
    format!("sha256:{}", crate::source::hex(&hardlink_fingerprint_sha256(e)))
}

/// [`hardlink_fingerprint`] as the binary key of the cache (no hex round trip: it is computed
/// for every file of every layer written).
fn hardlink_fingerprint_key(e: &TocEntry) -> [u8; DIGEST_LEN] {
    digest_key(&hardlink_fingerprint_sha256(e))
}

fn hardlink_fingerprint_sha256(e: &TocEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(e.digest.as_bytes());
    h.update(format!("{}:{}:{:o}", e.uid, e.gid, e.mode).as_bytes());
    for (k, v) in &e.xattrs {
        h.update(k.as_bytes());
        h.update(v.as_bytes());
    }
    h.finalize().into()
}

fn uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn read_uvarint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The object path `ab/cdef…` of a `sha256:` digest (SPEC §2.2).
/// Whether `path` is the flat object path (`ab/cdef…`, SPEC §2.2) of `digest`.
fn names_digest(path: &[u8], digest: &[u8; 32]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hex = |i: usize| HEX[((digest[i / 2] >> (4 * (1 - i % 2))) & 15) as usize];
    path.len() == 65 && path[2] == b'/' && (0..64).all(|i| path[if i < 2 { i } else { i + 1 }] == hex(i))
}

pub fn object_path(digest: &str) -> Result<String> {
    let hex = sha256_hex(digest)?;
    Ok(format!("{}/{}", &hex[..2], &hex[2..]))
}

impl LayerCache {
    /// Builds the cache of a layer from its TOC. `flat` is the composefs layout: entries are the
    /// distinct regular-file contents named by object path (`makeEntriesFlat`); otherwise the
    /// original names are used (a classic layer).
    pub fn build(toc: &Toc, flat: bool) -> Result<LayerCache> {
        let entries = cache_entries(toc, flat)?;
        let mut fnames: Vec<u8> = Vec::new();
        let mut fname_pos: HashMap<String, usize> = HashMap::new();
        let mut vdata: Vec<u8> = Vec::new();
        let mut tags: Vec<[u8; TAG_LEN]> = Vec::new();
        let mut name_position = |name: &str, fnames: &mut Vec<u8>| -> Result<usize> {
            if let Some(&p) = fname_pos.get(name) {
                return Ok(p);
            }
            let p = fnames.len();
            let len = u32::try_from(name.len()).map_err(|_| Error::limit("file name too long for the cache"))?;
            fnames.extend_from_slice(&len.to_le_bytes());
            fnames.extend_from_slice(name.as_bytes());
            fname_pos.insert(name.to_string(), p);
            Ok(p)
        };
        let tag = |d: [u8; DIGEST_LEN], off: u64, len: u64| {
            let mut t = [0u8; TAG_LEN];
            t[..DIGEST_LEN].copy_from_slice(&d);
            t[DIGEST_LEN..DIGEST_LEN + 8].copy_from_slice(&off.to_le_bytes());
            t[DIGEST_LEN + 8..].copy_from_slice(&len.to_le_bytes());
            t
        };
        for (name, e) in &entries {
            if !e.digest.is_empty() {
                let pos = name_position(name, &mut fnames)?;
                let mut loc = Vec::new();
                uvarint(&mut loc, pos as u64);
                uvarint(&mut loc, 0);
                uvarint(&mut loc, e.size.max(0) as u64);
                let off = vdata.len() as u64;
                tags.push(tag(binary_digest(&e.digest)?, off, loc.len() as u64));
                tags.push(tag(hardlink_fingerprint_key(e), off, loc.len() as u64));
                vdata.extend_from_slice(&loc);
            }
            if !e.chunk_digest.is_empty() {
                let pos = name_position(name, &mut fnames)?;
                let mut loc = Vec::new();
                uvarint(&mut loc, pos as u64);
                uvarint(&mut loc, e.chunk_offset.max(0) as u64);
                uvarint(&mut loc, e.chunk_size.max(0) as u64);
                let off = vdata.len() as u64;
                tags.push(tag(binary_digest(&e.chunk_digest)?, off, loc.len() as u64));
                vdata.extend_from_slice(&loc);
            }
        }
        let mut bloom = BloomFilter::with_bits(tags.len() * BLOOM_SCALE, BLOOM_HASHES);
        for t in &tags {
            bloom.add(&t[..DIGEST_LEN]);
        }
        tags.sort_unstable();
        // The file bytes, as containers/storage writes them.
        let mut out =
            Vec::with_capacity(64 + bloom.words.len() * 8 + tags.len() * TAG_LEN + vdata.len() + fnames.len());
        for v in [CACHE_VERSION, TAG_LEN as u64, DIGEST_LEN as u64, bloom.words.len() as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&bloom.k.to_le_bytes());
        for w in &bloom.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for v in [tags.len() * TAG_LEN, vdata.len(), fnames.len()] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        for t in &tags {
            out.extend_from_slice(t);
        }
        out.extend_from_slice(&vdata);
        out.extend_from_slice(&fnames);
        LayerCache::from_bytes(Bytes::Owned(out))?
            .ok_or_else(|| Error::new(crate::ErrorKind::Internal, "a new layers cache does not parse"))
    }

    /// The cache file bytes, as containers/storage writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.data.to_vec()
    }

    /// Opens a cache file: mapped when large, read when small or not a regular file (as
    /// containers/storage does). `Ok(None)` for another version; an error for a corrupt file.
    pub fn open(path: &std::path::Path) -> Result<Option<LayerCache>> {
        Ok(LayerCache::open_file(path)?.map(|(c, _)| c))
    }

    /// [`Self::open`], also returning the metadata of the file opened (its identity, for indexes
    /// built from it).
    pub fn open_file(path: &std::path::Path) -> Result<Option<(LayerCache, std::fs::Metadata)>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(format_args!("open {}", path.display()), e))?;
        let meta = file.metadata().map_err(|e| Error::io(format_args!("stat {}", path.display()), e))?;
        let data = if meta.is_file() && meta.len() >= MAP_THRESHOLD {
            // SAFETY: a read-only map of a file that is only ever replaced by rename (see
            // `Bytes::Mapped`); all accesses are bounds-checked against the map's length.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| Error::io(format_args!("map {}", path.display()), e))?;
            let _ = map.advise(memmap2::Advice::Random);
            Bytes::Mapped(map)
        } else {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut v)
                .map_err(|e| Error::io(format_args!("read {}", path.display()), e))?;
            Bytes::Owned(v)
        };
        let cache = LayerCache::from_bytes(data).with_context(|| format!("layers cache {}", path.display()))?;
        Ok(cache.map(|c| (c, meta)))
    }

    /// The 32 digest bytes of every tag an object lookup can ask for (contents and chunks), in
    /// table order: hardlink fingerprints are left out. In a flat cache a fingerprint shares
    /// its location record with the content tag whose digest names the record's object path
    /// (`ab/cdef…`); a cache with other names (a classic layer) keeps every tag.
    pub fn object_digests(&self) -> Vec<&[u8]> {
        let tags: Vec<&[u8]> =
            self.data[self.tags.clone()].chunks_exact(TAG_LEN).filter(|t| t.starts_with(b"sha256:")).collect();
        let record = |t: &[u8]| u64::from_le_bytes(t[DIGEST_LEN..DIGEST_LEN + 8].try_into().unwrap_or([0; 8]));
        let names_itself: Vec<bool> = tags
            .iter()
            .map(|t| {
                let digest: &[u8; 32] = t[7..DIGEST_LEN].try_into().unwrap_or(&[0; 32]);
                self.record_path(record(t)).is_some_and(|p| names_digest(p, digest))
            })
            .collect();
        // Records of content tags, as a bitmap over vdata offsets (records lie inside vdata).
        let mut content_records = vec![0u64; self.vdata.len().div_ceil(64) + 1];
        let bit = |off: u64| (off.min(self.vdata.len() as u64) as usize / 64, 1u64 << (off % 64));
        for (t, &own) in tags.iter().zip(&names_itself) {
            if own {
                let (w, m) = bit(record(t));
                content_records[w] |= m;
            }
        }
        tags.iter()
            .zip(&names_itself)
            .filter(|(t, &own)| {
                let (w, m) = bit(record(t));
                own || content_records[w] & m == 0
            })
            .map(|(t, _)| &t[7..DIGEST_LEN])
            .collect()
    }

    /// The path of the location record at `off` in vdata, if it decodes.
    fn record_path(&self, off: u64) -> Option<&[u8]> {
        let (vdata, fnames) = (&self.data[self.vdata.clone()], &self.data[self.fnames.clone()]);
        let mut p = usize::try_from(off).ok()?;
        let name_pos = usize::try_from(read_uvarint(vdata, &mut p)?).ok()?;
        let len = u32::from_le_bytes(fnames.get(name_pos..name_pos.checked_add(4)?)?.try_into().ok()?) as usize;
        fnames.get(name_pos + 4..(name_pos + 4).checked_add(len)?)
    }

    /// Parses a cache file. `Ok(None)` for another version (the caller regenerates it, as
    /// upstream does); an error for a corrupt file.
    pub fn parse(data: &[u8]) -> Result<Option<LayerCache>> {
        LayerCache::from_bytes(Bytes::Owned(data.to_vec()))
    }

    fn from_bytes(bytes: Bytes) -> Result<Option<LayerCache>> {
        let data = &bytes[..];
        let mut pos = 0usize;
        let corrupt = |what: &str| Error::format(format!("corrupted layers cache file: {what}"));
        let u64_at = |pos: &mut usize| -> Result<u64> {
            let b = data.get(*pos..*pos + 8).ok_or_else(|| corrupt("truncated header"))?;
            *pos += 8;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| corrupt("header"))?))
        };
        if u64_at(&mut pos)? != CACHE_VERSION {
            return Ok(None);
        }
        let (tag_len, digest_len) = (u64_at(&mut pos)?, u64_at(&mut pos)?);
        if tag_len != TAG_LEN as u64 || digest_len != DIGEST_LEN as u64 {
            // Only sha256 digests exist in practice; anything else is not ours to interpret.
            return Err(corrupt(&format!(
                "tag length {tag_len} / digest length {digest_len} (expected {TAG_LEN}/{DIGEST_LEN})"
            )));
        }
        let n_words = u64_at(&mut pos)?;
        if n_words > MAX_BLOOM_WORDS {
            return Err(corrupt(&format!("bloom filter length {n_words} exceeds {MAX_BLOOM_WORDS}")));
        }
        let k_bytes = data.get(pos..pos + 4).ok_or_else(|| corrupt("truncated bloom filter"))?;
        let k = u32::from_le_bytes(k_bytes.try_into().map_err(|_| corrupt("bloom filter"))?);
        pos += 4;
        if k > 64 {
            return Err(corrupt(&format!("bloom filter with {k} hash functions")));
        }
        let bloom_at = pos;
        let bloom_words = n_words as usize;
        if data.len() < pos + bloom_words * 8 {
            return Err(corrupt("truncated bloom filter"));
        }
        pos += bloom_words * 8;
        let (tags_len, vdata_len, fnames_len) = (u64_at(&mut pos)?, u64_at(&mut pos)?, u64_at(&mut pos)?);
        if tags_len > MAX_TAGS_LEN || tags_len % TAG_LEN as u64 != 0 {
            return Err(corrupt(&format!("tags length {tags_len}")));
        }
        let rest = data.len().saturating_sub(pos) as u64;
        let total = tags_len.checked_add(vdata_len).and_then(|v| v.checked_add(fnames_len));
        if total.is_none_or(|t| t > rest) {
            return Err(corrupt("section lengths exceed the file size"));
        }
        if bloom_words == 0 {
            return Err(corrupt("empty bloom filter"));
        }
        let tags = pos..pos + tags_len as usize;
        let vdata = tags.end..tags.end + vdata_len as usize;
        let fnames = vdata.end..vdata.end + fnames_len as usize;
        Ok(Some(LayerCache { data: bytes, bloom_at, bloom_words, k, tags, vdata, fnames }))
    }

    /// False means certainly absent.
    fn maybe_contains(&self, key: &CacheKey) -> bool {
        let modulus = (self.bloom_words as u32).wrapping_mul(64);
        (0..self.k).all(|i| {
            let (w, m) = bit_of(key.hash(i), modulus);
            let at = self.bloom_at + w * 8;
            self.data.get(at..at + 8).is_some_and(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) & m != 0)
        })
    }

    /// Looks a binary digest up. Errors only on a corrupt entry.
    pub fn lookup(&self, key: &CacheKey) -> Result<Option<CacheHit>> {
        if !self.maybe_contains(key) {
            return Ok(None);
        }
        let digest = &key.digest;
        let tags = &self.data[self.tags.clone()];
        let (vdata, fnames) = (&self.data[self.vdata.clone()], &self.data[self.fnames.clone()]);
        let n = tags.len() / TAG_LEN;
        let tag = |i: usize| &tags[i * TAG_LEN..(i + 1) * TAG_LEN];
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if tag(mid)[..DIGEST_LEN] < digest[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo >= n || tag(lo)[..DIGEST_LEN] != digest[..] {
            return Ok(None);
        }
        let t = tag(lo);
        let corrupt = || Error::format("corrupted layers cache file: bad location record");
        let off = u64::from_le_bytes(t[DIGEST_LEN..DIGEST_LEN + 8].try_into().map_err(|_| corrupt())?);
        let len = u64::from_le_bytes(t[DIGEST_LEN + 8..].try_into().map_err(|_| corrupt())?);
        let end = off.checked_add(len).filter(|&e| e <= vdata.len() as u64).ok_or_else(corrupt)?;
        let loc = &vdata[off as usize..end as usize];
        let mut p = 0;
        let name_pos = read_uvarint(loc, &mut p).ok_or_else(corrupt)? as usize;
        let offset = read_uvarint(loc, &mut p).ok_or_else(corrupt)?;
        let length = read_uvarint(loc, &mut p).ok_or_else(corrupt)?;
        let len_bytes = fnames.get(name_pos..name_pos.checked_add(4).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let name_len = u32::from_le_bytes(len_bytes.try_into().map_err(|_| corrupt())?) as usize;
        let path = fnames.get(name_pos + 4..name_pos + 4 + name_len).ok_or_else(corrupt)?;
        Ok(Some(CacheHit { path: path.to_vec(), offset, length }))
    }

    /// Number of tags (entries) in the table.
    pub fn len(&self) -> usize {
        self.tags.len() / TAG_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// The entries a cache indexes (`prepareCacheFile`): with the empty-file digest injected; in flat
/// mode one per distinct regular-file content, named by object path.
fn cache_entries(toc: &Toc, flat: bool) -> Result<Vec<(String, TocEntry)>> {
    let mut out = Vec::new();
    let mut seen_paths = std::collections::HashSet::new();
    let mut seen_chunks = std::collections::HashSet::new();
    // Flat mode: the object path of the regular file the following `chunk` entries belong to.
    let mut chunk_owner: Option<String> = None;
    for e in &toc.entries {
        if flat {
            // Only regular files and their chunks are indexed: clone nothing else.
            if e.entry_type != TYPE_CHUNK && e.entry_type != TYPE_REG {
                chunk_owner = None;
                continue;
            }
        }
        let e = e.clone();
        if flat {
            if e.entry_type == TYPE_CHUNK {
                // Unlike containers/storage (which drops them here), later chunks are indexed too,
                // in the file's object at their offset, so that a partial pull can reuse any chunk
                // (SPEC §8). Each chunk digest once, and never one that is a whole content here.
                let Some(path) = &chunk_owner else { continue };
                if !e.chunk_digest.is_empty()
                    && e.chunk_type != CHUNK_TYPE_ZEROS
                    && seen_chunks.insert(e.chunk_digest.clone())
                {
                    let chunk_only = TocEntry { digest: String::new(), ..e };
                    out.push((path.clone(), chunk_only));
                }
                continue;
            }
            chunk_owner = None;
            if e.digest.is_empty() {
                return Err(Error::format(format!("TOC entry {:?} has no digest", e.name)));
            }
            let path = object_path(&e.digest).map_err(|err| err.context(format!("TOC entry {:?}", e.name)))?;
            if !seen_paths.insert(path.clone()) {
                continue;
            }
            if !e.chunk_digest.is_empty() {
                chunk_owner = Some(path.clone());
                seen_chunks.insert(e.chunk_digest.clone());
            }
            seen_chunks.insert(e.digest.clone());
            out.push((path, e));
        } else if !e.digest.is_empty() || (!e.chunk_digest.is_empty() && seen_chunks.insert(e.chunk_digest.clone())) {
            // Chunks do not take part in hardlink dedup: one location per chunk digest is enough.
            out.push((e.name.clone(), e));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_toc(case: &str) -> Toc {
        let corpus = crate::test_corpus().expect("the test corpus (../shared/corpus or $CFS_CORPUS)");
        let p = corpus.join(format!("cstorage/{case}/{case}.toc.raw.json"));
        Toc::parse(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn flat_cache_finds_every_object_by_content_fingerprint_and_first_chunk() {
        let toc = corpus_toc("handmade-pax");
        let cache = LayerCache::build(&toc, true).unwrap();
        let bytes = cache.to_bytes();
        let reread = LayerCache::parse(&bytes).unwrap().unwrap();
        assert_eq!(reread.to_bytes(), bytes, "parse/serialize round trip");
        let mut chunk_hits = 0;
        for e in toc.entries.iter().filter(|e| e.entry_type == TYPE_REG) {
            let digest = if e.digest.is_empty() { EMPTY_SHA256.to_string() } else { e.digest.clone() };
            let hit = reread.lookup(&binary_digest(&digest).unwrap().into()).unwrap().expect("content digest indexed");
            assert_eq!(String::from_utf8(hit.path).unwrap(), object_path(&digest).unwrap());
            assert_eq!(hit.offset, 0);
            assert_eq!(hit.length, e.size as u64);
            if !e.chunk_digest.is_empty() {
                let hit = reread.lookup(&binary_digest(&e.chunk_digest).unwrap().into()).unwrap().expect("first chunk");
                assert_eq!(hit.offset, 0);
                chunk_hits += 1;
            }
        }
        assert!(chunk_hits > 0, "the corpus has multi-chunk files");
        // Later data chunks are indexed too (containers/storage drops them, SPEC §7.1), in the
        // file's object at their offset.
        let mut owner = String::new();
        let mut later = 0;
        for e in &toc.entries {
            if e.entry_type == TYPE_REG {
                owner = object_path(if e.digest.is_empty() { EMPTY_SHA256 } else { &e.digest }).unwrap();
            } else if e.entry_type == "chunk" && e.chunk_type.is_empty() {
                let hit = reread.lookup(&binary_digest(&e.chunk_digest).unwrap().into()).unwrap().expect("later chunk");
                assert_eq!((String::from_utf8(hit.path).unwrap(), hit.offset), (owner.clone(), e.chunk_offset as u64));
                assert_eq!(hit.length, e.chunk_size as u64);
                later += 1;
            }
        }
        assert!(later > 0, "the corpus has later data chunks");
        let absent = binary_digest(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        assert!(reread.lookup(&absent.into()).unwrap().is_none());
    }

    #[test]
    fn object_digests_are_contents_and_chunks_without_fingerprints() {
        let toc = corpus_toc("handmade-pax");
        let cache = LayerCache::build(&toc, true).unwrap();
        let got: std::collections::BTreeSet<Vec<u8>> = cache.object_digests().into_iter().map(<[u8]>::to_vec).collect();
        let raw = |d: &str| binary_digest(d).unwrap()[7..].to_vec();
        let mut want = std::collections::BTreeSet::new();
        for e in &toc.entries {
            if e.entry_type == TYPE_REG {
                want.insert(raw(if e.digest.is_empty() { EMPTY_SHA256 } else { &e.digest }));
                assert!(!got.contains(&raw(&hardlink_fingerprint(e))), "fingerprint of {} left out", e.name);
            }
            if !e.chunk_digest.is_empty() && e.chunk_type != CHUNK_TYPE_ZEROS {
                want.insert(raw(&e.chunk_digest));
            }
        }
        assert_eq!(got, want);
        // A classic (Dir) cache names files by their names: every tag is kept.
        let dir = LayerCache::build(&corpus_toc("noparents-ustar"), false).unwrap();
        assert_eq!(dir.object_digests().len(), dir.len());
    }

    #[test]
    fn dir_cache_keeps_original_names_and_hardlink_fingerprints() {
        let toc = corpus_toc("noparents-ustar");
        let cache = LayerCache::build(&toc, false).unwrap();
        let f1 = &toc.entries[0];
        let hit = cache.lookup(&binary_digest(&hardlink_fingerprint(f1)).unwrap().into()).unwrap().unwrap();
        assert_eq!(hit.path, b"usr/lib/x/y/f1");
        assert_eq!(cache.len(), 4, "two files, each by content and by fingerprint");
    }

    #[test]
    fn corrupt_or_foreign_caches_are_errors_or_ignored_never_panics() {
        let cache = LayerCache::build(&corpus_toc("etc-doc-gnu"), true).unwrap().to_bytes();
        let mut v2 = cache.clone();
        v2[0] = 2;
        assert!(LayerCache::parse(&v2).unwrap().is_none(), "other versions are regenerated");
        for cut in [0, 7, 8, 30, 40, cache.len() / 2, cache.len() - 1] {
            assert!(LayerCache::parse(&cache[..cut]).is_err(), "truncated at {cut}");
        }
        // Flip bytes everywhere: parsing and lookups may fail but never panic.
        let probe: CacheKey = binary_digest(&format!("sha256:{}", "00".repeat(32))).unwrap().into();
        for i in (0..cache.len()).step_by(97) {
            let mut c = cache.clone();
            c[i] ^= 0xff;
            if let Ok(Some(lc)) = LayerCache::parse(&c) {
                let _ = lc.lookup(&probe);
            }
        }
        // A vdata offset that points past the end is reported, not followed.
        let toc = corpus_toc("etc-doc-gnu");
        let d = binary_digest(&toc.entries.iter().find(|e| !e.digest.is_empty()).unwrap().digest).unwrap();
        let at = cache.windows(DIGEST_LEN).position(|w| w == d).expect("tag in the file") + DIGEST_LEN;
        let mut bad = cache.clone();
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let lc = LayerCache::parse(&bad).unwrap().unwrap();
        assert!(lc.lookup(&d.into()).is_err());
    }

    #[test]
    fn bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let key = |i: u32| digest_key(&Sha256::digest(i.to_le_bytes()).into());
        let mut bf = BloomFilter::with_bits(1000 * BLOOM_SCALE, BLOOM_HASHES);
        for i in 0..1000 {
            bf.add(&key(i));
        }
        // Read back through the file reader, with keys hashed once.
        let mut file = Vec::new();
        for v in [CACHE_VERSION, TAG_LEN as u64, DIGEST_LEN as u64, bf.words.len() as u64] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        file.extend_from_slice(&bf.k.to_le_bytes());
        bf.words.iter().for_each(|w| file.extend_from_slice(&w.to_le_bytes()));
        file.extend_from_slice(&[0; 24]);
        let lc = LayerCache::parse(&file).unwrap().unwrap();
        assert!((0..1000).all(|i| lc.maybe_contains(&key(i).into())));
        let fp = (1000u32..11000).filter(|&i| lc.maybe_contains(&key(i).into())).count();
        assert!(fp < 500, "{fp} false positives in 10000");
    }
}
