//! Partial pull of a zstd:chunked layer (SPEC §7.2, §8): read and verify the TOC, reuse every
//! object that this layer or a source layer already has (by content digest alone: object
//! attributes do not matter under metacopy, unlike containers/storage's `use_hard_links`
//! fingerprint), fetch only the byte ranges of the rest, verify each file's sha256 (before it
//! becomes an object, or, for the files the decompression pool writes, on the DiffID thread in the
//! same pass as the DiffID, before the layer is published), then write the blob and check the
//! DiffID by re-assembling the tar from the tar-split, as containers/storage does.
//!
//! The layer produced is the same as converting the full stream (same objects, same blob).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::convert::{write_blob, Progress, ProgressFn};
use super::objects::{Linker, Located, ObjectStats, ObjectStore, TempFactory, EMPTY_SHA256};
use super::staging::Staging;
use super::toc_blob::{verity_map_digest, PulledBlobRecord};
use super::tree_builder::object_path;
use super::verity::{Verity, VerityPolicy};
use super::writer::ObjectWriter;
use crate::chunked::ranges::{plan, ByteRange, MAX_RANGES};
use crate::chunked::{read_manifest_then, BlobSource, Format, ReadOptions};
use crate::{Error, ErrorKind, Result};
use diff_id::{DiffIdJob, Ready};
use pool::DecompressPool;
pub use toc_plan::PullManifest;
use toc_plan::{digest_bytes, ChunkInfo, TocPlan, Wanted};

mod diff_id;
mod pool;
mod toc_plan;
mod whole;

/// Where the bytes of a blob come from: a registry (ranged requests) or a local file.
pub trait BlobFetcher {
    /// Size of the whole blob in bytes.
    fn blob_size(&self) -> u64;

    /// The bytes of `ranges` (sorted, disjoint), concatenated in order. A source that refuses
    /// this many ranges at once (an HTTP 400) fails with [`ErrorKind::LimitExceeded`]: the puller
    /// asks again with half as many.
    fn fetch<'a>(&'a mut self, ranges: &[ByteRange]) -> Result<Box<dyn Read + 'a>>;
}

/// A blob that is fully on disk: the trivial fetcher.
pub struct FileFetcher {
    file: File,
    size: u64,
}

impl FileFetcher {
    pub fn new(file: File) -> Result<FileFetcher> {
        let size = file.metadata().map_err(|e| Error::io("stat blob", e))?.len();
        Ok(FileFetcher { file, size })
    }
}

/// Reads a list of ranges of a file one after the other with `pread`.
struct RangesReader<'a> {
    file: &'a File,
    ranges: Vec<ByteRange>,
    next: usize,
    pos: u64,
}

impl Read for RangesReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(r) = self.ranges.get(self.next) {
            if self.pos < r.length {
                let want = buf.len().min((r.length - self.pos) as usize);
                let n = self.file.read_at(&mut buf[..want], r.offset + self.pos)?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "blob shorter than its ranges"));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            self.next += 1;
            self.pos = 0;
        }
        Ok(0)
    }
}

impl BlobFetcher for FileFetcher {
    fn blob_size(&self) -> u64 {
        self.size
    }
    fn fetch<'a>(&'a mut self, ranges: &[ByteRange]) -> Result<Box<dyn Read + 'a>> {
        Ok(Box::new(RangesReader { file: &self.file, ranges: ranges.to_vec(), next: 0, pos: 0 }))
    }
}

/// Adapts a fetcher to the random access the manifest reader wants (the TOC and tar-split).
struct FetcherSource<'a> {
    fetcher: std::cell::RefCell<&'a mut dyn BlobFetcher>,
    fetched: std::cell::Cell<u64>,
    requests: std::cell::Cell<u64>,
}

impl<'a> FetcherSource<'a> {
    fn new(fetcher: &'a mut dyn BlobFetcher) -> FetcherSource<'a> {
        FetcherSource {
            fetcher: std::cell::RefCell::new(fetcher),
            fetched: Default::default(),
            requests: Default::default(),
        }
    }

    fn fetcher(&self) -> Result<std::cell::RefMut<'_, &'a mut dyn BlobFetcher>> {
        self.fetcher.try_borrow_mut().map_err(|_| Error::new(ErrorKind::Internal, "fetcher in use"))
    }

    /// Fills `reads` (in order, adjacent ones merged into one range) from one request.
    fn fetch_into(&self, reads: &mut [(u64, &mut [u8])]) -> Result<()> {
        let mut ranges: Vec<ByteRange> = Vec::new();
        for (offset, buf) in reads.iter() {
            match ranges.last_mut() {
                Some(r) if r.end() == *offset => r.length += buf.len() as u64,
                _ => ranges.push(ByteRange { offset: *offset, length: buf.len() as u64 }),
            }
        }
        let mut f = self.fetcher()?;
        self.requests.set(self.requests.get() + 1);
        let mut r = f.fetch(&ranges)?;
        for (offset, buf) in reads.iter_mut() {
            r.read_exact(buf).map_err(|e| Error::io(format!("fetch {} bytes at {offset}", buf.len()), e))?;
            self.fetched.set(self.fetched.get() + buf.len() as u64);
        }
        Ok(())
    }
}

impl BlobSource for FetcherSource<'_> {
    fn size(&self) -> Result<u64> {
        Ok(self.fetcher()?.blob_size())
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.fetch_into(&mut [(offset, buf)])
    }
    fn read_many_at(&self, reads: &mut [(u64, &mut [u8])]) -> Result<()> {
        let adjacent = |a: &(u64, &mut [u8]), b: &(u64, &mut [u8])| a.0 + a.1.len() as u64 == b.0;
        let one_range = reads.windows(2).all(|w| adjacent(&w[0], &w[1]));
        match self.fetch_into(reads) {
            // A source that refuses several ranges in one request gets one request for each.
            Err(e) if e.kind() == ErrorKind::LimitExceeded && !one_range => {
                reads.chunk_by_mut(adjacent).try_for_each(|run| self.fetch_into(run))
            }
            r => r,
        }
    }
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The layer's OCI annotations (the TOC digest there is the trust anchor). Without them the
    /// TOC is located through the blob's footer and is not authenticated.
    pub annotations: Option<BTreeMap<String, String>>,
    /// Layer dirs whose objects may be reused.
    pub source_layers: Vec<PathBuf>,
    /// A directory where an index across the source layers' caches is kept (created and rebuilt
    /// as needed; see [`super::index`]), so that lookups cost the same with hundreds of source
    /// layers as with a few. Without it, each source layer's cache is probed.
    pub index_dir: Option<PathBuf>,
    /// Reuse by hardlink (else reflink, else copy).
    pub hardlinks: bool,
    pub verity: VerityPolicy,
    /// Turn OCI whiteouts into overlay whiteouts (as conversion does).
    pub oci_whiteouts: bool,
    /// `insecure_allow_unpredictable_image_contents`: accept layers without a tar-split and skip
    /// the DiffID.
    pub insecure_skip_diff_id: bool,
    /// The DiffID the image config promises; a mismatch is an error.
    pub expected_diff_id: Option<[u8; 32]>,
    /// Most ranges per request (halved when the source refuses).
    pub max_ranges: usize,
    /// Keep the blob digest, TOC, tar-split and layers cache in `composefs-data/`
    /// ([`super::metadata`]).
    pub write_metadata: bool,
    /// The blob's manifest, already read with [`read_manifest_from`] (as containers/storage's
    /// `NewDiffer` reads it before the pull): the pull takes its TOC and tar-split from here
    /// instead of fetching and checking them again, and `annotations` is not looked at.
    pub manifest: Option<Arc<PullManifest>>,
    /// Threads that decompress and verify fetched files beside the one that reads them (0: one
    /// fewer than the CPUs, at least one). A cold pull's per-byte work (zstd and sha256 of every
    /// file) is spread over them; the reading thread keeps files assembled with local chunks.
    pub decompress_threads: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            annotations: None,
            source_layers: Vec::new(),
            index_dir: None,
            hardlinks: false,
            verity: VerityPolicy::IfAvailable,
            oci_whiteouts: true,
            insecure_skip_diff_id: false,
            expected_diff_id: None,
            max_ranges: MAX_RANGES,
            write_metadata: true,
            manifest: None,
            decompress_threads: 0,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub layer_dir: PathBuf,
    /// `sha256:` of the compressed TOC (`TOCDigest`).
    pub toc_digest: String,
    /// Whether the TOC digest came from the annotations.
    pub toc_authenticated: bool,
    /// The DiffID, unless skipped.
    pub diff_id: Option<[u8; 32]>,
    pub blob_size: u64,
    /// Bytes of the blob read (TOC, tar-split and file data, gaps included).
    pub blob_bytes_fetched: u64,
    /// Bytes of missing files copied from identical chunks in source layers instead of fetched.
    pub chunk_bytes_reused: u64,
    /// Fetch requests made and ranges asked for in all.
    pub requests: u64,
    pub ranges: u64,
    pub entries: u64,
    pub objects: ObjectStats,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub verity_digests: BTreeMap<String, [u8; 32]>,
    pub blob_verity: Option<[u8; 32]>,
    /// The decompressed TOC, as stored upstream (`zstd-chunked-manifest`); shared with the
    /// manifest it came from.
    pub toc_json: Arc<[u8]>,
}

impl PullResult {
    pub fn to_json(&self) -> serde_json::Value {
        let hex = crate::source::hex;
        serde_json::json!({
            "layerDir": self.layer_dir.to_string_lossy(),
            "tocDigest": self.toc_digest,
            "tocAuthenticated": self.toc_authenticated,
            "diffID": self.diff_id.map(|d| format!("sha256:{}", hex(&d))),
            "blobSize": self.blob_size,
            "blobBytesFetched": self.blob_bytes_fetched,
            "chunkBytesReused": self.chunk_bytes_reused,
            "requests": self.requests,
            "ranges": self.ranges,
            "entries": self.entries,
            "objects": self.objects.objects,
            "objectsReused": self.objects.objects_reused,
            "bytesWritten": self.objects.bytes_written,
            "bytesReused": self.objects.bytes_reused,
            "dedupHits": self.objects.dedup_hits,
            "uids": self.uids,
            "gids": self.gids,
            "blobFsVerity": self.blob_verity.map(|d| hex(&d)),
        })
    }
}

/// A file whose content is not in any layer: fetched, or assembled from chunks (SPEC §8).
struct Missing {
    digest: [u8; 32],
    size: u64,
    /// All its frames in the blob.
    range: ByteRange,
    name: String,
    /// Where each part of the content comes from, in file order.
    pieces: Vec<Piece>,
}

/// One part of a missing file's content.
enum Piece {
    /// Compressed frames (zstd) or members (eStargz) of the blob, and the content bytes they give.
    Fetch(ByteRange, u64),
    /// A chunk found in a source layer's file (and verified): copied from there.
    Local { file: File, offset: u64, size: u64 },
    /// A `zeros` chunk: written as a hole, nothing fetched.
    Zeros(u64),
}

/// How fetched data is compressed. The zstd context is reused from file to file (creating one
/// per file cost more than small files' decompression).
enum Codec {
    Zstd(zstd::zstd_safe::DCtx<'static>),
    Gzip,
}

impl Codec {
    fn new(format: Format) -> Codec {
        match format {
            Format::Estargz => Codec::Gzip,
            Format::Current | Format::Legacy => Codec::Zstd(zstd::zstd_safe::DCtx::create()),
        }
    }

    /// Whether the decompression pool takes this format (zstd frames only: eStargz pulls are
    /// insecure-mode ones and rare).
    fn pools(&self) -> bool {
        matches!(self, Codec::Zstd(_))
    }
}

/// Where the content of a missing file comes from: local chunks (verified now), holes, and the
/// blob ranges of the rest (adjacent ones merged). A chunk list that does not tile the file and
/// its range exactly is ignored: the whole range is fetched.
fn plan_pieces(store: &ObjectStore, chunks: Option<&Vec<ChunkInfo>>, range: ByteRange, size: u64) -> Vec<Piece> {
    let whole = || vec![Piece::Fetch(range, size)];
    let Some(chunks) = chunks.filter(|c| c.len() > 1) else { return whole() };
    let mut at = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        let end = chunks.get(i + 1).map_or(range.end(), |n| n.offset);
        if c.chunk_offset != at || c.offset >= end || (i == 0 && c.offset != range.offset) || end > range.end() {
            return whole();
        }
        at += c.size;
    }
    if at != size {
        return whole();
    }
    let mut pieces: Vec<Piece> = Vec::with_capacity(chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        let end = chunks.get(i + 1).map_or(range.end(), |n| n.offset);
        let piece = if c.zeros {
            Piece::Zeros(c.size)
        } else {
            match store.find_chunk(&c.digest, c.size) {
                Some((file, offset)) if local_chunk_matches(&file, offset, c.size, &c.digest) => {
                    Piece::Local { file, offset, size: c.size }
                }
                _ => Piece::Fetch(ByteRange { offset: c.offset, length: end - c.offset }, c.size),
            }
        };
        match (pieces.last_mut(), piece) {
            (Some(Piece::Fetch(last, len)), Piece::Fetch(r, n)) if last.end() == r.offset => {
                last.length += r.length;
                *len += n;
            }
            (_, p) => pieces.push(p),
        }
    }
    pieces
}

/// Whether `size` bytes at `offset` of `file` have the sha256 `digest` (`validateChunkChecksum`).
fn local_chunk_matches(file: &File, offset: u64, size: u64, digest: &[u8; 32]) -> bool {
    crate::source::sha256_at(file, offset, size).is_ok_and(|d| d == *digest)
}

/// Pulls the zstd:chunked layer that `fetcher` serves into `layer_dir` (which must not exist).
/// Nothing is left behind on error or cancellation.
pub fn pull(
    fetcher: &mut dyn BlobFetcher,
    layer_dir: &Path,
    options: &PullOptions,
    progress: Option<ProgressFn<'_>>,
) -> Result<PullResult> {
    let result = pull_into(fetcher, layer_dir, options, progress);
    // Its buffers are freed now; what the caller does next (c/storage: gzip the tar-split) must
    // not stack on them (peak RSS of a cold pull in c/storage: 50-57 -> 51-53 MiB).
    crate::mapped_alloc::release_free_heap();
    result
}

fn pull_into(
    fetcher: &mut dyn BlobFetcher,
    layer_dir: &Path,
    options: &PullOptions,
    mut progress: Option<ProgressFn<'_>>,
) -> Result<PullResult> {
    let blob_size = fetcher.blob_size();
    let staging = Staging::create(layer_dir)?;
    let diff_path = staging.path.join("diff");
    let data_path = staging.path.join("composefs-data");
    for (p, mode) in [(&diff_path, 0o755), (&data_path, 0o700)] {
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), mode)
            .create(p)
            .map_err(|e| Error::io(format_args!("mkdir {}", p.display()), e))?;
    }

    // 1. The TOC and tar-split, authenticated and cross-checked.
    let (manifest, mut fetched, mut requests) = match &options.manifest {
        Some(m) => (m.clone(), 0, 0),
        None => {
            let source = FetcherSource::new(&mut *fetcher);
            let m = read_pull_manifest(&source, options.annotations.as_ref(), Some(staging.path.clone()))?;
            (Arc::new(m), source.fetched.get(), source.requests.get())
        }
    };
    if manifest.location.format == Format::Estargz {
        if !options.insecure_skip_diff_id {
            drop(staging);
            return whole::pull_whole(fetcher, layer_dir, options, &manifest, (fetched, requests), progress);
        }
        if crate::chunked::estargz::has_shared_members(&manifest.toc) {
            return Err(Error::unsupported(
                "the eStargz layer packs several chunks into one gzip member (innerOffset, the encoder's \
                 minimum chunk size): a partial pull cannot fetch them separately; pull it without \
                 insecure_allow_unpredictable_image_contents, which fetches and converts the whole blob",
            ));
        }
        // JSON strings cannot hold bytes that are not UTF-8: the encoder wrote U+FFFD for them,
        // so the TOC alone would give other names (the whole pull reads them from the tar).
        if let Some(e) = manifest.toc.entries.iter().find(|e| (e.name.clone() + &e.link_name).contains('\u{fffd}')) {
            return Err(Error::unsupported(format!(
                "eStargz TOC entry {:?}: its name or link target was not UTF-8 in the tar, which the TOC \
                 cannot hold; pull it without insecure_allow_unpredictable_image_contents, which \
                 fetches and converts the whole blob",
                e.name
            )));
        }
    }
    if manifest.tar_split.is_none() && !options.insecure_skip_diff_id {
        return Err(Error::unsupported(
            "the layer has no tar-split, so its DiffID cannot be verified; a partial pull needs \
             insecure_allow_unpredictable_image_contents (or convert the full stream instead)",
        ));
    }
    // 2. The tree, and which contents are needed (planned while the manifest was read, unless
    // it was read in another whiteout mode).
    let mut store = ObjectStore::new(
        &diff_path,
        super::sources::SourceLayers::open(&options.source_layers, options.index_dir.as_deref())?,
        options.hardlinks,
        Verity::new(options.verity),
    )?;
    let TocPlan { mut builder, files, content_of_name, uses, wanted, has_empty, uids, gids, entries, mut chunks_of } =
        manifest.take_plan(options.oci_whiteouts)?;
    let ready = std::sync::Arc::new(Ready::default());
    if has_empty {
        store.put_bytes(&EMPTY_SHA256, &[])?;
        ready.add(EMPTY_SHA256);
    }

    // 3. Find what exists (taken during or after the fetch: until then the DiffID thread reads
    // it where it is); collect what must be fetched, in blob order.
    let mut missing: Vec<Missing> = Vec::new();
    let mut reusable: Vec<([u8; 32], u64, ByteRange, String, Located)> = Vec::new();
    let mut sources_found = Vec::new();
    for (digest, Wanted { size, range, name }) in wanted {
        match store.locate(&digest, size) {
            Some(at) => {
                sources_found.push((digest, at.source()));
                // Batched: each notification is a futex wake of the DiffID thread.
                if sources_found.len() == 256 {
                    ready.add_sources(sources_found.drain(..));
                }
                reusable.push((digest, size, range, name, at));
            }
            None => {
                let pieces = plan_pieces(&store, chunks_of.remove(&name).as_ref(), range, size);
                missing.push(Missing { digest, size, range, name, pieces });
            }
        }
    }
    ready.add_sources(sources_found.drain(..));
    missing.sort_by_key(|m| m.range.offset);
    for w in missing.windows(2) {
        if w[1].range.offset < w[0].range.end() {
            return Err(Error::format(format!(
                "TOC entries {:?} and {:?} have overlapping data ranges",
                w[0].name, w[1].name
            )));
        }
    }

    // When the fetch is most of the work, fetched objects are created and written on a thread of
    // their own (as in a conversion: a cold pull 0.67 -> 0.56 s), which announces them to the
    // DiffID thread once they are in place, and the files that need nothing local are
    // decompressed by a pool. When most content is reused, that third thread only competes with
    // the DiffID thread (a warm pull 5% slower): they are written here.
    let fetched_bytes: u64 = missing.iter().map(|m| m.size).sum();
    let reused_bytes: u64 = reusable.iter().map(|r| r.1).sum();
    let threaded = fetched_bytes >= reused_bytes;
    let mut codec = Codec::new(manifest.location.format);
    let pooled = threaded && codec.pools() && missing.iter().any(DecompressPool::takes);

    // The DiffID is computed on another thread while objects arrive (SPEC §8: it re-reads the
    // whole layer, the largest cost of a pull that reuses most contents). It also checks the
    // sha256 of the contents the pool decompresses: it reads them all anyway, and hashes each
    // beside the tar in one pass (chunked::sha256x2), where the pool would hash them again.
    let diff_id_job = match (&manifest.tar_split, options.insecure_skip_diff_id) {
        (Some(split), false) => {
            ready.set_uses(uses);
            let unchecked: HashSet<[u8; 32]> = match pooled {
                true => missing.iter().filter(|m| DecompressPool::takes(m)).map(|m| m.digest).collect(),
                false => HashSet::new(),
            };
            Some(DiffIdJob::spawn(split, &diff_path, store.sources(), content_of_name, unchecked, ready.clone())?)
        }
        _ => None,
    };

    // 4. Fetch, decompress, verify, store (files that need nothing from the blob first), while
    // another thread takes what source layers have.
    let mut temps = TempFactory::new(&diff_path)?;
    let mut chunk_bytes_reused = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    let mut ranges_asked = 0u64;
    let linker = store.linker()?;
    // Linking is mostly kernel time; it gets a thread when there is a core for it beside this
    // one and the DiffID thread (else it would only slow the DiffID down, the longest task).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let link_thread = cores >= 2 + usize::from(diff_id_job.is_some());
    // One decompressing thread per CPU beside this one, which reads (a rootfs layer on 2 CPUs: 4%
    // faster with one, 6% with two, but two gave 10 MiB more peak RSS in glibc's arenas).
    let threads = match options.decompress_threads {
        0 => cores.saturating_sub(1).max(1),
        n => n,
    };
    let mut writer = if threaded {
        let announce = ready.clone();
        Objects::Threaded(ObjectWriter::spawn_with_hook(store, Some(Box::new(move |stored| announce.add_all(stored))))?)
    } else {
        Objects::Inline(Box::new(store), ready.clone())
    };
    let (linked, fetch) = std::thread::scope(|scope| {
        let links = link_thread.then(|| {
            std::thread::Builder::new()
                .name("cfs-link".into())
                .spawn_scoped(scope, || link_all(&linker, &reusable, &ready))
                .map_err(|e| Error::io("spawn link thread", e))
        });
        let fetch = (|| -> Result<()> {
            // Files are decompressed by a pool (when objects go to the writer thread; a pull that
            // mostly reuses fetches too little to gain from one), and checked there unless the
            // DiffID thread checks them.
            let mut pool = match &writer {
                Objects::Threaded(w) if pooled => {
                    let check = diff_id_job.is_none();
                    Some(DecompressPool::spawn(threads, w, &diff_path, &ready, check)?)
                }
                _ => None,
            };
            let mut parts: Vec<ByteRange> = Vec::new();
            // For each part: its file, and whether it is that file's last part.
            let mut part_owner: Vec<(usize, bool)> = Vec::new();
            for (mi, m) in missing.iter().enumerate() {
                let start = parts.len();
                parts.extend(m.pieces.iter().filter_map(|p| if let Piece::Fetch(r, _) = p { Some(*r) } else { None }));
                part_owner.extend((start..parts.len()).map(|i| (mi, i + 1 == parts.len())));
                if start == parts.len() {
                    let mut b = Building::begin(&mut temps, m)?;
                    chunk_bytes_reused += b.local_pieces(m, &mut buf)?;
                    writer.take(b.verify(&mut temps, m)?, m, &ready)?;
                }
            }
            let mut max_ranges = options.max_ranges.max(1);
            let mut done_bytes = 0u64;
            let mut pending = plan(&parts, max_ranges);
            let mut building: Option<(usize, Building)> = None;
            while !pending.is_empty() {
                let ranges: Vec<ByteRange> = pending.iter().map(|f| f.range).collect();
                requests += 1;
                let mut reader = match fetcher.fetch(&ranges) {
                    Err(e) if e.kind() == ErrorKind::LimitExceeded && max_ranges > 1 => {
                        max_ranges /= 2;
                        pending = plan(&parts, max_ranges);
                        continue;
                    }
                    r => r?,
                };
                ranges_asked += ranges.len() as u64;
                for f in &pending {
                    let mut pos = f.range.offset;
                    for &i in &f.parts {
                        let (mi, last) = part_owner[i];
                        let m = &missing[mi];
                        let r = parts[i];
                        skip(&mut reader, r.offset - pos)?;
                        pos = r.end();
                        if let Some(pool) = pool.as_mut().filter(|_| DecompressPool::takes(m)) {
                            pool.add(&mut reader, mi, m, r.length, last)?;
                        } else {
                            if building.as_ref().is_none_or(|(b, _)| *b != mi) {
                                building = Some((mi, Building::begin(&mut temps, m)?));
                            }
                            let Some((_, b)) = building.as_mut() else {
                                return Err(Error::new(ErrorKind::Internal, "no file in progress"));
                            };
                            chunk_bytes_reused += b.local_pieces(m, &mut buf)?;
                            b.fetched_piece(&mut reader, r, m, &mut buf, &mut codec)?;
                            if last {
                                chunk_bytes_reused += b.local_pieces(m, &mut buf)?;
                                if let Some((_, b)) = building.take() {
                                    writer.take(b.verify(&mut temps, m)?, m, &ready)?;
                                }
                            }
                        }
                        done_bytes += r.length;
                        if let Some(cb) = progress.as_mut() {
                            if !cb(Progress { bytes: done_bytes, entries }) {
                                return Err(Error::new(ErrorKind::Cancelled, "pull cancelled"));
                            }
                        }
                    }
                    skip(&mut reader, f.range.end() - pos)?;
                    fetched += f.range.length;
                }
                // What this request brought goes out now: the DiffID thread may be waiting for it
                // (and the hardlinks, taken next on this thread, take a while).
                writer.flush()?;
                if let Some(pool) = pool.as_mut() {
                    pool.flush()?;
                }
                pending.clear();
            }
            drop(building);
            if let Some(pool) = pool.take() {
                pool.finish()?;
            }
            writer.flush()?;
            Ok(())
        })();
        let linked = match links {
            Some(spawned) => {
                spawned.and_then(|h| h.join().map_err(|_| Error::new(ErrorKind::Internal, "link thread panicked"))?)
            }
            None if fetch.is_ok() => link_all(&linker, &reusable, &ready),
            None => Ok(Vec::new()),
        };
        (linked, fetch)
    });
    if let Err(e) = fetch {
        // A decompressing thread that found the writer gone says only that: the writer's own
        // error is the one to report.
        if e.kind() == ErrorKind::Internal {
            writer.finish()?;
        }
        return Err(e);
    }
    let mut store = writer.finish()?;
    let linked = linked?;

    // Record what the link thread took. One that went away since is asked for again, or fetched
    // on its own.
    for ((digest, size, range, name, _), took) in reusable.into_iter().zip(linked) {
        if took {
            store.adopt(&digest, size)?;
            continue;
        }
        if store.reuse(&digest, size)?.is_none() {
            let m = Missing { digest, size, range, name, pieces: vec![Piece::Fetch(range, size)] };
            requests += 1;
            ranges_asked += 1;
            let mut reader = fetcher.fetch(&[range])?;
            let mut b = Building::begin(&mut temps, &m)?;
            b.fetched_piece(&mut reader, range, &m, &mut buf, &mut codec)?;
            b.verify(&mut temps, &m)?.store(&mut store, &m)?;
            fetched += range.length;
        }
        ready.add(digest);
    }

    // 5. Objects into the tree, then the blob, with the record that lets containers/storage's
    // commit take it as it is (toc_blob::adopt_staged_blob).
    let mut embedded: Vec<(String, [u8; 32])> = Vec::new();
    for (id, digest) in files {
        let v = store.get(&digest).ok_or_else(|| Error::new(ErrorKind::Internal, "object missing after pull"))?;
        let path = object_path(&digest);
        if let Some(v) = v {
            embedded.push((path.clone(), v));
        }
        builder.set_file_content(id, path, v);
    }
    let tree = builder.finish();
    let blob_digest = write_blob(&tree, &data_path, options.verity)?;
    let blob_verity = Some(blob_digest);
    PulledBlobRecord {
        oci_whiteouts: options.oci_whiteouts,
        root_stubs: true,
        verity: verity_map_digest(embedded.iter().map(|(p, d)| (p.as_str(), *d))),
        digest: blob_digest,
    }
    .write(&data_path.join("composefs.blob"));

    if options.write_metadata {
        // The tar-split frame of the blob, kept as it is (authenticated and decoded already).
        super::metadata::write_all(
            &staging.path,
            &blob_digest,
            &manifest.toc_json,
            Some(&manifest.toc),
            manifest.tar_split_zst.as_deref(),
        )?;
    }
    // 6. The DiffID, from the tar-split and the objects now on disk.
    let diff_id = match diff_id_job {
        Some(job) => {
            let id = job.finish()?;
            if let Some(expected) = options.expected_diff_id {
                if expected != id {
                    return Err(Error::new(
                        ErrorKind::Verification,
                        format!(
                            "DiffID mismatch: the layer re-assembles to sha256:{}, expected sha256:{}",
                            crate::source::hex(&id),
                            crate::source::hex(&expected)
                        ),
                    ));
                }
            }
            Some(id)
        }
        None => None,
    };
    let verity_digests = store.verity_digests();
    let objects = store.stats;
    drop(store);
    staging.commit(layer_dir)?;
    Ok(PullResult {
        layer_dir: layer_dir.to_path_buf(),
        toc_digest: manifest.location.toc_digest.clone(),
        toc_authenticated: manifest.location.authenticated,
        diff_id,
        blob_size,
        blob_bytes_fetched: fetched,
        chunk_bytes_reused,
        requests,
        ranges: ranges_asked,
        entries,
        objects,
        uids: uids.into_iter().collect(),
        gids: gids.into_iter().collect(),
        verity_digests,
        blob_verity,
        toc_json: manifest.toc_json.clone(),
    })
}

/// Fetches, authenticates and decodes the TOC and tar-split of a zstd:chunked blob, and checks
/// that they describe the same entries ([`read_manifest`]): the first step of [`pull`], for a
/// caller that needs the manifest before it decides to pull (containers/storage's `NewDiffer`),
/// then passes it in [`PullOptions::manifest`]. The decoded tar-split is kept in an unnamed file
/// in `tmp_dir` (default: the system's temporary directory).
pub fn read_manifest_from(
    fetcher: &mut dyn BlobFetcher,
    annotations: Option<&BTreeMap<String, String>>,
    tmp_dir: Option<&Path>,
) -> Result<PullManifest> {
    read_pull_manifest(&FetcherSource::new(fetcher), annotations, tmp_dir.map(Path::to_path_buf))
}

/// [`read_manifest_then`], with the pull's plan of the TOC made while the tar-split is parsed.
fn read_pull_manifest(
    source: &FetcherSource<'_>,
    annotations: Option<&BTreeMap<String, String>>,
    tmp_dir: Option<PathBuf>,
) -> Result<PullManifest> {
    let (m, plan) =
        read_manifest_then(source, annotations, &ReadOptions { tmp_dir }, PullManifest::plan_while_reading)?;
    Ok(PullManifest::with_plan(m, plan))
}

/// Takes each located content into the staging `diff/` (the link thread); whether each was taken.
fn link_all(
    linker: &Linker,
    items: &[([u8; 32], u64, ByteRange, String, Located)],
    ready: &Ready,
) -> Result<Vec<bool>> {
    let mut took = Vec::with_capacity(items.len());
    let mut done = Vec::new();
    let mut prefixes = [false; 256];
    for (digest, size, _, _, at) in items {
        if !std::mem::replace(&mut prefixes[digest[0] as usize], true) {
            linker.ensure_prefix(digest)?;
        }
        let ok = linker.take_located(at, *size)?;
        if ok {
            done.push(*digest);
            // Batched: each notification is a futex wake of the DiffID thread.
            if done.len() == 256 {
                ready.add_all(done.drain(..));
            }
        }
        took.push(ok);
    }
    ready.add_all(done.drain(..));
    Ok(took)
}

fn skip(reader: &mut dyn Read, n: u64) -> Result<()> {
    let got =
        std::io::copy(&mut reader.take(n), &mut std::io::sink()).map_err(|e| Error::io("read fetched data", e))?;
    if got != n {
        return Err(Error::format(format!("fetched data ended {} bytes early", n - got)));
    }
    Ok(())
}

/// A missing file being assembled from its pieces, in order.
struct Building {
    into: Assembly,
    hasher: Sha256,
    total: u64,
    /// The next piece to take.
    next: usize,
}

/// Where a file is assembled: small ones in memory, so the verified object is created under its
/// final name at once (as a conversion does), large ones in a temporary object renamed when verified.
enum Assembly {
    Memory(Vec<u8>),
    Temp(super::objects::TempObject),
}

/// Files up to this size are assembled in memory (one at a time).
const IN_MEMORY: u64 = 256 << 10;

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl Building {
    fn begin(temps: &mut TempFactory, m: &Missing) -> Result<Building> {
        let into = match m.size <= IN_MEMORY {
            true => Assembly::Memory(Vec::with_capacity(m.size as usize)),
            false => Assembly::Temp(temps.begin()?),
        };
        Ok(Building { into, hasher: Sha256::new(), total: 0, next: 0 })
    }

    fn append(&mut self, data: &[u8], m: &Missing) -> Result<()> {
        self.total += data.len() as u64;
        if self.total > m.size {
            return Err(Error::format(format!("file {:?}: its data is longer than its {} bytes", m.name, m.size)));
        }
        self.hasher.update(data);
        match &mut self.into {
            Assembly::Memory(v) => {
                v.extend_from_slice(data);
                Ok(())
            }
            Assembly::Temp(tmp) => tmp.write_all(data),
        }
    }

    /// Takes the local and hole pieces up to the next fetched one; returns the bytes copied.
    fn local_pieces(&mut self, m: &Missing, buf: &mut Vec<u8>) -> Result<u64> {
        let mut copied = 0;
        while let Some(p) = m.pieces.get(self.next) {
            match p {
                Piece::Fetch(..) => break,
                Piece::Zeros(n) => {
                    let mut left = *n;
                    while left > 0 {
                        let k = left.min(ZEROS.len() as u64) as usize;
                        self.append(&ZEROS[..k], m)?;
                        left -= k as u64;
                    }
                }
                Piece::Local { file, offset, size } => {
                    buf.resize(256 << 10, 0);
                    let mut done = 0u64;
                    while done < *size {
                        let want = buf.len().min((size - done) as usize);
                        let n = file
                            .read_at(&mut buf[..want], offset + done)
                            .map_err(|e| Error::io(format!("file {:?}: read a local chunk", m.name), e))?;
                        if n == 0 {
                            return Err(Error::format(format!("file {:?}: a local chunk shrank while read", m.name)));
                        }
                        self.append(&buf[..n], m)?;
                        done += n as u64;
                    }
                    copied += size;
                }
            }
            self.next += 1;
        }
        Ok(copied)
    }

    /// Decompresses the next piece's frames (`range`, `range.length` bytes of `reader`).
    fn fetched_piece(
        &mut self,
        reader: &mut dyn Read,
        range: ByteRange,
        m: &Missing,
        buf: &mut [u8],
        codec: &mut Codec,
    ) -> Result<()> {
        let ctx = || format!("file {:?}", m.name);
        let mut compressed = reader.take(range.length);
        match codec {
            Codec::Zstd(dctx) => {
                let mut decoder = zstd::stream::read::Decoder::with_context(BufReader::new(&mut compressed), dctx);
                loop {
                    let n = decoder.read(buf).map_err(|e| Error::format(format!("{}: bad zstd data: {e}", ctx())))?;
                    if n == 0 {
                        break;
                    }
                    self.append(&buf[..n], m)?;
                }
            }
            Codec::Gzip => {
                // Members hold more than this piece (the next entry's tar header): only its own
                // bytes are read; a shorter stream fails the size check.
                let mut left = match m.pieces.get(self.next) {
                    Some(Piece::Fetch(_, len)) => *len,
                    _ => m.size - self.total,
                };
                let mut decoder = flate2::bufread::MultiGzDecoder::new(BufReader::new(&mut compressed));
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = decoder
                        .read(&mut buf[..want])
                        .map_err(|e| Error::format(format!("{}: bad gzip data: {e}", ctx())))?;
                    if n == 0 {
                        break;
                    }
                    self.append(&buf[..n], m)?;
                    left -= n as u64;
                }
            }
        }
        // Whatever the decoder did not consume of this range (padding) is skipped.
        std::io::copy(&mut compressed, &mut std::io::sink()).map_err(|e| Error::io("read fetched data", e))?;
        self.next += 1;
        Ok(())
    }

    /// Checks size and sha256 against the TOC: nothing unverified ever gets an object name.
    fn verify(self, temps: &mut TempFactory, m: &Missing) -> Result<Verified> {
        let digest: [u8; 32] = self.hasher.finalize().into();
        if self.total != m.size || digest != m.digest {
            if let Assembly::Temp(tmp) = self.into {
                temps.abort(tmp);
            }
            return Err(checksum_mismatch(&m.name, &m.digest, m.size, &digest, self.total));
        }
        Ok(Verified { digest, into: self.into })
    }
}

/// A fetched file that is not what the TOC says.
fn checksum_mismatch(name: &str, want: &[u8; 32], want_size: u64, got: &[u8; 32], got_size: u64) -> Error {
    Error::new(
        ErrorKind::Verification,
        format!(
            "file {name:?}: checksum mismatch: the TOC says sha256:{} ({want_size} bytes), the data is sha256:{} ({got_size} bytes)",
            crate::source::hex(want),
            crate::source::hex(got),
        ),
    )
}

/// A file assembled and checked against the TOC, to become an object.
struct Verified {
    digest: [u8; 32],
    into: Assembly,
}

impl Verified {
    /// Stores it now.
    fn store(self, store: &mut ObjectStore, m: &Missing) -> Result<()> {
        match self.into {
            Assembly::Memory(data) => store.put_bytes(&self.digest, &data)?,
            Assembly::Temp(tmp) => store.commit_temp(tmp, &self.digest, m.size)?,
        };
        Ok(())
    }
}

/// Where fetched objects go during the fetch: stored on this thread (and announced to the DiffID
/// thread), or handed to a writer thread (which announces them once stored).
enum Objects {
    Inline(Box<ObjectStore>, Arc<Ready>),
    Threaded(ObjectWriter),
}

impl Objects {
    fn take(&mut self, v: Verified, m: &Missing, ready: &Ready) -> Result<()> {
        if let Assembly::Memory(data) = &v.into {
            ready.offer(&v.digest, data);
            ready.publish();
        }
        match self {
            Objects::Inline(store, ready) => {
                let digest = v.digest;
                v.store(store, m)?;
                ready.add(digest);
                Ok(())
            }
            Objects::Threaded(writer) => match v.into {
                Assembly::Memory(data) => writer.put_bytes(v.digest, &data, m.name.clone()),
                Assembly::Temp(tmp) => writer.commit_temp(tmp, v.digest, m.size, m.name.clone()),
            },
        }
    }

    /// Sends what the writer thread has not been given yet.
    fn flush(&mut self) -> Result<()> {
        match self {
            Objects::Inline(..) => Ok(()),
            Objects::Threaded(writer) => writer.flush(),
        }
    }

    /// The store, once every object is in place.
    fn finish(self) -> Result<ObjectStore> {
        match self {
            Objects::Inline(store, _) => Ok(*store),
            Objects::Threaded(writer) => writer.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves a blob of counting bytes; refuses more than one range per request when `one_range`.
    struct Counting {
        blob: Vec<u8>,
        one_range: bool,
        requests: Vec<Vec<ByteRange>>,
    }

    impl BlobFetcher for Counting {
        fn blob_size(&self) -> u64 {
            self.blob.len() as u64
        }
        fn fetch<'a>(&'a mut self, ranges: &[ByteRange]) -> Result<Box<dyn Read + 'a>> {
            self.requests.push(ranges.to_vec());
            if self.one_range && ranges.len() > 1 {
                return Err(Error::limit("one range per request"));
            }
            let data: Vec<u8> =
                ranges.iter().flat_map(|r| self.blob[r.offset as usize..r.end() as usize].to_vec()).collect();
            Ok(Box::new(std::io::Cursor::new(data)))
        }
    }

    #[test]
    fn reads_are_one_request_and_adjacent_ones_one_range() {
        for one_range in [false, true] {
            let mut f = Counting { blob: (0..=255u8).collect(), one_range, requests: Vec::new() };
            let source = FetcherSource::new(&mut f);
            let (mut a, mut b, mut c) = ([0u8; 2], [0u8; 3], [0u8; 4]);
            source.read_many_at(&mut [(10, &mut a[..]), (12, &mut b[..]), (100, &mut c[..])]).unwrap();
            assert_eq!((a, b, c), ([10, 11], [12, 13, 14], [100, 101, 102, 103]));
            assert_eq!(source.fetched.get(), 9);
            let asked = source.requests.get();
            let two = vec![ByteRange { offset: 10, length: 5 }, ByteRange { offset: 100, length: 4 }];
            match one_range {
                false => assert_eq!(f.requests, vec![two]),
                // Refused, then each range on its own.
                true => assert_eq!(f.requests, vec![two.clone(), vec![two[0]], vec![two[1]]]),
            }
            assert_eq!(asked, f.requests.len() as u64);
        }
    }
}
