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

/// The bloom filter in front of the tag table (crc32-based, k = 3, 10 bits per tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    words: Vec<u64>,
    k: u32,
}

impl BloomFilter {
    fn with_bits(bits: usize, k: u32) -> BloomFilter {
        BloomFilter { words: vec![0; bits.div_ceil(64).max(1)], k }
    }

    fn position(&self, item: &[u8], seed: u32) -> (usize, u64) {
        if item.is_empty() {
            return (0, 1);
        }
        // u32 arithmetic exactly as upstream, so filters are interchangeable.
        let modulus = (self.words.len() as u32).wrapping_mul(64);
        let split = (seed % item.len() as u32) as usize;
        let h = crc32fast::hash(&item[..split]) ^ crc32fast::hash(&item[split..]);
        let h = if modulus == 0 { 0 } else { h % modulus };
        ((h / 64) as usize, 1u64 << (h % 64))
    }

    fn add(&mut self, item: &[u8]) {
        for i in 0..self.k {
            let (w, m) = self.position(item, i);
            self.words[w] |= m;
        }
    }

    /// False means certainly absent.
    pub fn maybe_contains(&self, item: &[u8]) -> bool {
        (0..self.k).all(|i| {
            let (w, m) = self.position(item, i);
            self.words.get(w).is_some_and(|x| x & m != 0)
        })
    }
}

/// Where a digest was found in a layer: the path relative to its `diff/` and the byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    pub path: Vec<u8>,
    pub offset: u64,
    pub length: u64,
}

/// A parsed cache file. Lookups are binary searches over the tag table.
#[derive(Debug, Clone)]
pub struct LayerCache {
    bloom: BloomFilter,
    tags: Vec<u8>,
    vdata: Vec<u8>,
    fnames: Vec<u8>,
}

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
    let mut out = [0u8; DIGEST_LEN];
    out[..7].copy_from_slice(b"sha256:");
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| Error::format("invalid digest"))?;
        out[7 + i] = u8::from_str_radix(s, 16).map_err(|_| Error::format(format!("invalid digest {digest:?}")))?;
    }
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
        Ok(LayerCache { bloom, tags: tags.concat(), vdata, fnames })
    }

    /// The cache file bytes, as containers/storage writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.bloom.words.len() * 8 + self.tags.len() + self.vdata.len() + self.fnames.len(),
        );
        for v in [CACHE_VERSION, TAG_LEN as u64, DIGEST_LEN as u64, self.bloom.words.len() as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.bloom.k.to_le_bytes());
        for w in &self.bloom.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for v in [self.tags.len(), self.vdata.len(), self.fnames.len()] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        out.extend_from_slice(&self.tags);
        out.extend_from_slice(&self.vdata);
        out.extend_from_slice(&self.fnames);
        out
    }

    /// Parses a cache file. `Ok(None)` for another version (the caller regenerates it, as
    /// upstream does); an error for a corrupt file.
    pub fn parse(data: &[u8]) -> Result<Option<LayerCache>> {
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
        let words_bytes = data.get(pos..pos + n_words as usize * 8).ok_or_else(|| corrupt("truncated bloom filter"))?;
        let words: Vec<u64> =
            words_bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        pos += words_bytes.len();
        let (tags_len, vdata_len, fnames_len) = (u64_at(&mut pos)?, u64_at(&mut pos)?, u64_at(&mut pos)?);
        if tags_len > MAX_TAGS_LEN || tags_len % TAG_LEN as u64 != 0 {
            return Err(corrupt(&format!("tags length {tags_len}")));
        }
        let rest = &data[pos.min(data.len())..];
        let total = tags_len.checked_add(vdata_len).and_then(|v| v.checked_add(fnames_len));
        if total.is_none_or(|t| t > rest.len() as u64) {
            return Err(corrupt("section lengths exceed the file size"));
        }
        let (tags, rest) = rest.split_at(tags_len as usize);
        let (vdata, rest) = rest.split_at(vdata_len as usize);
        let fnames = &rest[..fnames_len as usize];
        if words.is_empty() {
            return Err(corrupt("empty bloom filter"));
        }
        Ok(Some(LayerCache {
            bloom: BloomFilter { words, k },
            tags: tags.to_vec(),
            vdata: vdata.to_vec(),
            fnames: fnames.to_vec(),
        }))
    }

    /// Looks a binary digest up. Errors only on a corrupt entry.
    pub fn lookup(&self, digest: &[u8; DIGEST_LEN]) -> Result<Option<CacheHit>> {
        if !self.bloom.maybe_contains(digest) {
            return Ok(None);
        }
        let n = self.tags.len() / TAG_LEN;
        let tag = |i: usize| &self.tags[i * TAG_LEN..(i + 1) * TAG_LEN];
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
        let end = off.checked_add(len).filter(|&e| e <= self.vdata.len() as u64).ok_or_else(corrupt)?;
        let loc = &self.vdata[off as usize..end as usize];
        let mut p = 0;
        let name_pos = read_uvarint(loc, &mut p).ok_or_else(corrupt)? as usize;
        let offset = read_uvarint(loc, &mut p).ok_or_else(corrupt)?;
        let length = read_uvarint(loc, &mut p).ok_or_else(corrupt)?;
        let len_bytes = self.fnames.get(name_pos..name_pos.checked_add(4).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let name_len = u32::from_le_bytes(len_bytes.try_into().map_err(|_| corrupt())?) as usize;
        let path = self.fnames.get(name_pos + 4..name_pos + 4 + name_len).ok_or_else(corrupt)?;
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
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../shared/corpus/cstorage/{case}/{case}.toc.raw.json"));
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
            let hit = reread.lookup(&binary_digest(&digest).unwrap()).unwrap().expect("content digest indexed");
            assert_eq!(String::from_utf8(hit.path).unwrap(), object_path(&digest).unwrap());
            assert_eq!(hit.offset, 0);
            assert_eq!(hit.length, e.size as u64);
            if !e.chunk_digest.is_empty() {
                let hit = reread.lookup(&binary_digest(&e.chunk_digest).unwrap()).unwrap().expect("first chunk");
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
                let hit = reread.lookup(&binary_digest(&e.chunk_digest).unwrap()).unwrap().expect("later chunk");
                assert_eq!((String::from_utf8(hit.path).unwrap(), hit.offset), (owner.clone(), e.chunk_offset as u64));
                assert_eq!(hit.length, e.chunk_size as u64);
                later += 1;
            }
        }
        assert!(later > 0, "the corpus has later data chunks");
        let absent = binary_digest(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        assert!(reread.lookup(&absent).unwrap().is_none());
    }

    #[test]
    fn dir_cache_keeps_original_names_and_hardlink_fingerprints() {
        let toc = corpus_toc("noparents-ustar");
        let cache = LayerCache::build(&toc, false).unwrap();
        let f1 = &toc.entries[0];
        let hit = cache.lookup(&binary_digest(&hardlink_fingerprint(f1)).unwrap()).unwrap().unwrap();
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
        let probe = binary_digest(&format!("sha256:{}", "00".repeat(32))).unwrap();
        for i in (0..cache.len()).step_by(97) {
            let mut c = cache.clone();
            c[i] ^= 0xff;
            if let Ok(Some(lc)) = LayerCache::parse(&c) {
                let _ = lc.lookup(&probe);
            }
        }
        // A vdata offset that points past the end is reported, not followed.
        let mut lc = LayerCache::parse(&cache).unwrap().unwrap();
        lc.vdata.truncate(1);
        let toc = corpus_toc("etc-doc-gnu");
        let d = toc.entries.iter().find(|e| !e.digest.is_empty()).unwrap();
        assert!(lc.lookup(&binary_digest(&d.digest).unwrap()).is_err());
    }

    #[test]
    fn bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let mut bf = BloomFilter::with_bits(1000 * BLOOM_SCALE, BLOOM_HASHES);
        let items: Vec<[u8; 32]> = (0u32..1000).map(|i| Sha256::digest(i.to_le_bytes()).into()).collect();
        for i in &items {
            bf.add(i);
        }
        assert!(items.iter().all(|i| bf.maybe_contains(i)));
        let fp =
            (1000u32..11000).filter(|i| bf.maybe_contains(&<[u8; 32]>::from(Sha256::digest(i.to_le_bytes())))).count();
        assert!(fp < 500, "{fp} false positives in 10000");
    }
}
