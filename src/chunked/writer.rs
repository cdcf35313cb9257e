//! Writing a zstd:chunked blob from a layer tar (SPEC §3.3–§3.6), as containers/storage's
//! `compressor.ZstdCompressor` does, so that any zstd:chunked reader (ours, containers/storage)
//! can pull it partially and `zstd -d` still gives the original tar byte for byte:
//!
//! - tar headers (with the previous entry's padding) go into the current zstd frame; each
//!   regular file's payload starts a new frame, and every chunk of it is a frame of its own;
//! - chunk boundaries come from the rollsum ([`super::rollsum`]); runs of at least
//!   [`HOLES_THRESHOLD`] zero bytes are `zeros` chunks;
//! - then the TOC JSON, the tar-split NDJSON and the 64-byte footer, each in a skippable frame.
//!
//! The input streams through once (any compression [`LayerStream`] reads); memory is bounded by
//! metadata (TOC, tar-split, names) plus fixed buffers, whatever the file sizes.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use super::footer::{FOOTER_SIZE, MAGIC_CURRENT, MANIFEST_TYPE_CRFS};
use super::frames::Frames;
use super::manifest::{ANNOTATION_TAR_SPLIT_POSITION, ANNOTATION_TOC_CHECKSUM, ANNOTATION_TOC_POSITION, MAX_TOC_SIZE};
use super::rollsum::RollSum;
use crate::layer::toc::{push_entry_head, push_json_str, push_num as num, TarSplitWriter};
use crate::source::crc64::Crc64;
use crate::source::tar::{EntryType, Header, TarLimits, TarReader};
use crate::source::{hex, Compression, LayerStream};
use crate::{Error, Result};
use sha2::{Digest, Sha256};

/// Runs of at least this many zero bytes become `zeros` chunks (`holesThreshold`).
pub const HOLES_THRESHOLD: u64 = 1024;
/// containers/storage's default level (`ZstdCompressor` with a nil level).
pub const DEFAULT_LEVEL: i32 = 10;

/// How to compress.
#[derive(Debug, Clone, Copy)]
pub struct CompressOptions {
    /// zstd level of every frame (1–22).
    pub level: i32,
    pub tar: TarLimits,
    /// Most tar entries in one layer.
    pub max_entries: u64,
    /// Threads compressing frames (0: one per CPU). The blob is the same whatever the number.
    pub threads: usize,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions { level: DEFAULT_LEVEL, tar: TarLimits::default(), max_entries: 4_000_000, threads: 0 }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct CompressResult {
    /// The layer annotations (TOC digest and positions), as `convert --annotations` reads them.
    pub annotations: BTreeMap<String, String>,
    /// `sha256:` of the compressed TOC.
    pub toc_digest: String,
    /// sha256 and size of the blob written.
    pub blob_digest: [u8; 32],
    pub blob_size: u64,
    /// sha256 and size of the uncompressed tar (the DiffID).
    pub diff_id: [u8; 32],
    pub tar_size: u64,
    /// How the input was compressed.
    pub input_compression: Compression,
    /// Tar entries, and TOC entries of type `chunk` (later chunks of large files).
    pub entries: u64,
    pub chunk_entries: u64,
}

impl CompressResult {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "annotations": self.annotations,
            "tocDigest": self.toc_digest,
            "blobDigest": format!("sha256:{}", hex(&self.blob_digest)),
            "blobSize": self.blob_size,
            "diffID": format!("sha256:{}", hex(&self.diff_id)),
            "tarSize": self.tar_size,
            "inputCompression": self.input_compression.as_str(),
            "entries": self.entries,
            "chunkEntries": self.chunk_entries,
        })
    }
}

/// One chunk of a file's payload: a frame of the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    /// Offset in the file.
    chunk_offset: u64,
    /// Its frame ([`Frames::next_frame`]).
    frame: u64,
    size: u64,
    digest: [u8; 32],
    zeros: bool,
}

/// Splits one file's payload into chunks as `rollingChecksumReader` over `holesFinder` does, and
/// writes each chunk as a frame.
struct FileChunker {
    roll: RollSum,
    /// Zero bytes seen but not yet emitted: a run that may still reach the hole threshold.
    zeros: u64,
    file_hash: Sha256,
    /// The current chunk's, from the second chunk on: the first starts where the file does, so its
    /// digest is the file's so far (and most files are one chunk, whose digest the TOC omits).
    chunk_hash: Sha256,
    chunk_len: u64,
    chunk_start: u64,
    /// Payload bytes emitted so far.
    done: u64,
    /// The first payload frame ([`Frames::next_frame`]), once there is payload.
    start: Option<u64>,
    chunks: Vec<Chunk>,
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl FileChunker {
    fn new() -> FileChunker {
        FileChunker {
            roll: RollSum::new(),
            zeros: 0,
            file_hash: Sha256::new(),
            chunk_hash: Sha256::new(),
            chunk_len: 0,
            chunk_start: 0,
            done: 0,
            start: None,
            chunks: Vec::new(),
        }
    }

    /// Emits payload bytes (already rolled) into the current chunk.
    fn data(&mut self, frames: &mut Frames<'_>, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.start.is_none() {
            // The payload starts a new frame: end the one holding the headers.
            frames.close()?;
            self.start = Some(frames.next_frame());
        }
        if self.chunk_len == 0 {
            self.chunk_start = frames.next_frame();
        }
        frames.write(bytes)?;
        self.file_hash.update(bytes);
        if !self.chunks.is_empty() {
            self.chunk_hash.update(bytes);
        }
        self.chunk_len += bytes.len() as u64;
        self.done += bytes.len() as u64;
        Ok(())
    }

    fn data_zeros(&mut self, frames: &mut Frames<'_>, mut n: u64) -> Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.data(frames, &ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    /// Ends the current chunk (and its frame), if it has bytes.
    fn end_chunk(&mut self, frames: &mut Frames<'_>, zeros: bool) -> Result<()> {
        if self.chunk_len == 0 {
            return Ok(());
        }
        frames.close()?;
        // Each chunk costs a TOC entry of more than 100 bytes: stop before metadata outgrows the
        // TOC limit (a hostile file can split every few bytes).
        if self.chunks.len() as u64 >= MAX_TOC_SIZE / 100 {
            return Err(Error::limit(format!(
                "a file splits into more than {} chunks: its TOC entries would exceed {MAX_TOC_SIZE} bytes",
                MAX_TOC_SIZE / 100
            )));
        }
        self.chunks.push(Chunk {
            chunk_offset: self.done - self.chunk_len,
            frame: self.chunk_start,
            size: self.chunk_len,
            digest: match self.chunks.is_empty() {
                true => self.file_hash.clone().finalize().into(),
                false => self.chunk_hash.finalize_reset().into(),
            },
            zeros,
        });
        self.chunk_len = 0;
        Ok(())
    }

    /// Emits the pending zero run: a `zeros` chunk when long enough, else ordinary data.
    fn flush_zeros(&mut self, frames: &mut Frames<'_>) -> Result<()> {
        let z = std::mem::take(&mut self.zeros);
        if z >= HOLES_THRESHOLD {
            self.end_chunk(frames, false)?;
            self.roll.roll_zeros(z);
            self.data_zeros(frames, z)?;
            return self.end_chunk(frames, true);
        }
        let (mut pending, mut left) = (0, z);
        while left > 0 {
            let (rolled, split) = self.roll.roll_to_split(&ZEROS[..left.min(ZEROS.len() as u64) as usize]);
            pending += rolled as u64;
            left -= rolled as u64;
            if split {
                self.data_zeros(frames, pending)?;
                pending = 0;
                self.end_chunk(frames, false)?;
            }
        }
        self.data_zeros(frames, pending)
    }

    fn feed(&mut self, frames: &mut Frames<'_>, s: &[u8]) -> Result<()> {
        let (mut i, mut seg) = (0, 0);
        while i < s.len() {
            if s[i] == 0 {
                self.data(frames, &s[seg..i])?;
                let run = s[i..].iter().take_while(|&&c| c == 0).count();
                self.zeros += run as u64;
                i += run;
                seg = i;
                continue;
            }
            if self.zeros > 0 {
                self.flush_zeros(frames)?;
            }
            let (rolled, split) = self.roll.roll_to_split_or_zero(&s[i..]);
            i += rolled;
            if split {
                self.data(frames, &s[seg..i])?;
                seg = i;
                self.end_chunk(frames, false)?;
            }
        }
        self.data(frames, &s[seg..i])
    }

    fn finish(&mut self, frames: &mut Frames<'_>) -> Result<()> {
        if self.zeros > 0 {
            self.flush_zeros(frames)?;
        }
        self.end_chunk(frames, false)
    }
}

/// Appends the chunk fields of a TOC entry.
fn chunk_fields(o: &mut Vec<u8>, c: &Chunk) {
    num(o, "chunkSize", c.size as i128);
    num(o, "chunkOffset", c.chunk_offset as i128);
    o.extend_from_slice(format!(",\"chunkDigest\":\"sha256:{}\"", hex(&c.digest)).as_bytes());
    if c.zeros {
        o.extend_from_slice(b",\"chunkType\":\"zeros\"");
    }
}

/// The TOC JSON being written. Blob offsets are frame indices until every frame is written
/// (frames are compressed on several threads): each is a hole in `text`, filled by [`Self::resolve`].
struct TocText {
    text: Vec<u8>,
    /// Where each offset goes in `text`, and its frame.
    offsets: Vec<(usize, u64)>,
}

impl TocText {
    /// Appends `"key":` and a hole for the offset of `frame` (never 0: a payload frame follows
    /// at least one frame of tar headers, so the field is always present).
    fn offset(&mut self, key: &str, frame: u64) {
        self.text.extend_from_slice(format!(",\"{key}\":").as_bytes());
        self.offsets.push((self.text.len(), frame));
    }

    /// An upper bound of the final length (20 digits per offset).
    fn len_bound(&self) -> u64 {
        self.text.len() as u64 + 20 * self.offsets.len() as u64
    }

    /// The JSON, with each frame's blob offset in its hole.
    fn resolve(self, offset_of: impl Fn(u64) -> u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 10 * self.offsets.len());
        let mut at = 0;
        for (pos, frame) in self.offsets {
            out.extend_from_slice(&self.text[at..pos]);
            out.extend_from_slice(offset_of(frame).to_string().as_bytes());
            at = pos;
        }
        out.extend_from_slice(&self.text[at..]);
        out
    }
}

/// Appends the TOC entries of one tar entry (`minimal.FileMetadata`, fields in Go's order), and
/// one `chunk` entry per further chunk when the payload has more than one. `end` is the frame
/// after the payload.
fn push_entries(toc: &mut TocText, h: &Header, f: &FileChunker, end: u64) {
    push_entry_head(&mut toc.text, h);
    if let Some(start) = f.start {
        let digest: [u8; 32] = f.file_hash.clone().finalize().into();
        toc.text.extend_from_slice(format!(",\"digest\":\"sha256:{}\"", hex(&digest)).as_bytes());
        toc.offset("offset", start);
        toc.offset("endOffset", end);
        if f.chunks.len() > 1 {
            chunk_fields(&mut toc.text, &f.chunks[0]);
        }
    }
    toc.text.push(b'}');
    if f.chunks.len() > 1 {
        for c in &f.chunks[1..] {
            toc.text.extend_from_slice(b",{\"type\":\"chunk\",\"name\":");
            push_json_str(&mut toc.text, &h.name);
            toc.offset("offset", c.frame);
            chunk_fields(&mut toc.text, c);
            toc.text.push(b'}');
        }
    }
}

/// Compresses the layer `input` (plain tar, gzip or zstd) into a zstd:chunked blob on `out`.
/// On error, what was written to `out` is garbage: the caller removes it.
pub fn compress(
    input: Box<dyn std::io::Read + Send>,
    out: &mut dyn Write,
    options: &CompressOptions,
) -> Result<CompressResult> {
    let level = options.level;
    if !(1..=22).contains(&level) {
        return Err(Error::invalid_argument(format!("zstd level {level} is not in 1..=22")));
    }
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut frames = Frames::new(out, level, threads)?;
    let split_enc = zstd::stream::write::Encoder::new(Vec::new(), level)
        .map_err(|e| Error::io("create zstd encoder for the tar-split", e))?;
    let mut tar_split = TarSplitWriter::new(split_enc);
    let mut toc = TocText { text: b"{\"version\":1,\"entries\":".to_vec(), offsets: Vec::new() };
    let mut toc_entries = 0u64;
    let mut chunk_entries = 0u64;
    let mut names: HashSet<Vec<u8>> = HashSet::new();

    // The DiffID on the decompressing thread: this one chunks, hashes and hands out frames.
    let mut tar = TarReader::new(LayerStream::with_worker_diff_id(input)?, options.tar);
    let mut entries = 0u64;
    while let Some(h) = tar.next_header()? {
        entries += 1;
        let ctx = || format!("tar entry {} ({:?})", h.index, h.display_name());
        if entries > options.max_entries {
            return Err(Error::limit(format!("{}: more than {} entries in one layer", ctx(), options.max_entries)));
        }
        if h.entry_type == EntryType::GlobalHeader {
            // containers/storage's compressor fails the same way ("unknown tarball type").
            return Err(Error::unsupported(format!(
                "{}: a PAX global header has no zstd:chunked TOC type (containers/storage refuses it too)",
                ctx()
            )));
        }
        if !names.insert(h.name.clone()) {
            return Err(Error::format(format!(
                "{}: duplicates of file paths not supported (zstd:chunked needs each path once)",
                ctx()
            )));
        }
        tar_split.segment(tar.raw())?;
        frames.write(tar.raw())?;
        tar.clear_raw();

        let mut chunker = FileChunker::new();
        let mut crc = Crc64::new();
        loop {
            let data = tar.data_chunk()?;
            if data.is_empty() {
                break;
            }
            crc.update(data);
            chunker.feed(&mut frames, data)?;
            let n = data.len();
            tar.consume_data(n);
        }
        chunker.finish(&mut frames)?;
        // The next headers start a new frame after a payload.
        frames.close()?;
        let end = frames.next_frame();
        tar_split.file(&h.name, h.size, (h.size > 0).then_some(&crc))?;

        toc.text.push(if toc_entries == 0 { b'[' } else { b',' });
        push_entries(&mut toc, &h, &chunker, end);
        toc_entries += 1;
        if chunker.chunks.len() > 1 {
            chunk_entries += chunker.chunks.len() as u64 - 1;
        }
        if toc.len_bound() > MAX_TOC_SIZE {
            return Err(Error::limit(format!(
                "{}: the layer's TOC exceeds {MAX_TOC_SIZE} bytes (containers/storage's limit)",
                ctx()
            )));
        }
    }
    // End-of-archive blocks and anything after them, in the last frame.
    tar_split.segment(tar.raw())?;
    frames.write(tar.raw())?;
    tar.clear_raw();
    tar.read_trailer(1 << 20, |chunk| {
        tar_split.segment(chunk)?;
        frames.write(chunk)
    })?;
    frames.close()?;
    frames.finish_frames()?;
    let digests = tar.into_inner().finish()?;

    let (split_enc, _, split_size) = tar_split.finish();
    let split_compressed = split_enc.finish().map_err(|e| Error::io("compress tar-split", e))?;
    let split_digest = hex(&Sha256::digest(&split_compressed));
    if toc_entries == 0 {
        toc.text.extend_from_slice(b"null");
    } else {
        toc.text.push(b']');
    }
    let mut toc = toc.resolve(|frame| frames.offset(frame));
    toc.extend_from_slice(format!(",\"tarSplitDigest\":\"sha256:{split_digest}\"}}").as_bytes());
    let toc_compressed = zstd::bulk::compress(&toc, level).map_err(|e| Error::io("compress TOC", e))?;
    let toc_digest = format!("sha256:{}", hex(&Sha256::digest(&toc_compressed)));

    let toc_offset = frames.skippable(&toc_compressed)?;
    let split_offset = frames.skippable(&split_compressed)?;
    let mut footer = Vec::with_capacity(FOOTER_SIZE);
    for v in [
        toc_offset,
        toc_compressed.len() as u64,
        toc.len() as u64,
        MANIFEST_TYPE_CRFS,
        split_offset,
        split_compressed.len() as u64,
        split_size,
    ] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(MAGIC_CURRENT);
    frames.skippable(&footer)?;
    frames.out.flush().map_err(|e| Error::io("write zstd:chunked blob", e))?;

    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_TOC_CHECKSUM.to_string(), toc_digest.clone());
    annotations.insert(
        ANNOTATION_TOC_POSITION.to_string(),
        format!("{toc_offset}:{}:{}:{MANIFEST_TYPE_CRFS}", toc_compressed.len(), toc.len()),
    );
    annotations.insert(
        ANNOTATION_TAR_SPLIT_POSITION.to_string(),
        format!("{split_offset}:{}:{split_size}", split_compressed.len()),
    );
    Ok(CompressResult {
        annotations,
        toc_digest,
        blob_digest: frames.hasher.clone().finalize().into(),
        blob_size: frames.written,
        diff_id: digests.diff_id,
        tar_size: digests.uncompressed_size,
        input_compression: digests.compression,
        entries,
        chunk_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::{read_manifest, ReadOptions};
    use crate::source::tar::tests as testutil;

    fn compress_tar(tar: Vec<u8>) -> Result<(Vec<u8>, CompressResult)> {
        let mut out = Vec::new();
        let r = compress(Box::new(std::io::Cursor::new(tar)), &mut out, &CompressOptions::default())?;
        Ok((out, r))
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((x >> 8) as u8).max(1)
            })
            .collect()
    }

    #[test]
    fn large_files_are_chunked_zero_runs_are_zeros_chunks_and_the_blob_reads_back() {
        let mut content = pseudo_random(600 << 10, 7);
        content.extend_from_slice(&[0u8; 5000]);
        content.extend_from_slice(&pseudo_random(1000, 9));
        content.extend_from_slice(&[0u8; 1023]); // under the threshold: plain data
        content.extend_from_slice(b"end");
        let mut tar = testutil::file("./big", &content);
        tar.extend(testutil::file("./small", b"hello"));
        tar.extend(testutil::end());
        let (blob, r) = compress_tar(tar.clone()).unwrap();

        // Plain zstd decoding skips the skippable frames and gives the tar back.
        assert_eq!(zstd::stream::decode_all(&blob[..]).unwrap(), tar);
        assert_eq!(r.diff_id, <[u8; 32]>::from(Sha256::digest(&tar)));
        assert_eq!(r.blob_digest, <[u8; 32]>::from(Sha256::digest(&blob)));

        for ann in [Some(&r.annotations), None] {
            let m = read_manifest(&blob[..], ann, &ReadOptions::default()).unwrap();
            assert_eq!(m.location.toc_digest, r.toc_digest);
            let big: Vec<_> = m.toc.entries.iter().filter(|e| e.name == "./big").collect();
            assert!(big.len() > 3, "600 KiB of random data splits into several chunks");
            assert_eq!(big[0].digest, format!("sha256:{}", hex(&Sha256::digest(&content))));
            // Chunks tile the file, each frame decompresses to its data and matches its digest.
            let mut at = 0i64;
            for (i, c) in big.iter().enumerate() {
                assert_eq!(c.chunk_offset, at);
                let end = big.get(i + 1).map(|n| n.offset).unwrap_or(big[0].end_offset) as usize;
                let data = zstd::stream::decode_all(&blob[c.offset as usize..end]).unwrap();
                assert_eq!(data, &content[at as usize..(at + c.chunk_size) as usize]);
                assert_eq!(c.chunk_digest, format!("sha256:{}", hex(&Sha256::digest(&data))));
                at += c.chunk_size;
            }
            assert_eq!(at, content.len() as i64);
            let zeros: Vec<_> = big.iter().filter(|c| c.chunk_type == "zeros").collect();
            assert_eq!(zeros.len(), 1, "one run of 5000 zeros; the 1023-byte run is data");
            assert_eq!(zeros[0].chunk_size, 5000);
            let small = m.toc.entries.iter().find(|e| e.name == "./small").unwrap();
            assert_eq!(small.chunk_size, 0, "single-chunk files carry no chunk fields");
            let data = zstd::stream::decode_all(&blob[small.offset as usize..small.end_offset as usize]).unwrap();
            assert_eq!(data, b"hello");
        }
    }

    #[test]
    fn duplicates_and_global_headers_are_refused() {
        let mut tar = testutil::file("./a", b"1");
        tar.extend(testutil::file("./a", b"2"));
        tar.extend(testutil::end());
        let e = compress_tar(tar).unwrap_err();
        assert!(e.to_string().contains("duplicates of file paths"), "{e}");

        let mut g = testutil::header("pax_global_header", b'g', 0, "").to_vec();
        g.extend(testutil::file("./a", b"1"));
        g.extend(testutil::end());
        let e = compress_tar(g).unwrap_err();
        assert!(e.to_string().contains("global header"), "{e}");
    }

    #[test]
    fn an_empty_tar_has_a_null_entry_list() {
        let (blob, r) = compress_tar(testutil::end()).unwrap();
        let m = read_manifest(&blob[..], Some(&r.annotations), &ReadOptions::default()).unwrap();
        assert!(m.toc.entries.is_empty());
        assert!(m.toc_json.starts_with(b"{\"version\":1,\"entries\":null,\"tarSplitDigest\":\"sha256:"));
    }
}
