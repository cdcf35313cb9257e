//! Locating, authenticating and decoding the TOC and tar-split of a zstd:chunked blob
//! (SPEC §3.3–§3.6.5): what containers/storage's `readZstdChunkedManifest` does, plus the footer
//! and the legacy format it no longer recognises.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use std::sync::mpsc::{sync_channel, SyncSender};

use sha2::{Digest, Sha256};

use super::consistency::{check_headers_against_toc, SplitHeaders};
use super::footer::{self, Format, Position, SKIPPABLE_MAGIC};
use super::toc::{sha256_hex, Toc};
use crate::source::ChannelReader;
use crate::{Error, ErrorKind, Result};

/// Largest TOC accepted, compressed or not (`maxTocSize`, 150 MiB).
pub const MAX_TOC_SIZE: u64 = 150 << 20;
/// Largest compressed tar-split accepted. containers/storage has no limit here and reads the
/// frame into memory; we cap it like the TOC and decompress it to a temporary file.
pub const MAX_TAR_SPLIT_COMPRESSED: u64 = 150 << 20;
/// Largest decompressed tar-split accepted (it is streamed to a temporary file, not kept in memory).
pub const MAX_TAR_SPLIT_SIZE: u64 = 4 << 30;

pub const ANNOTATION_TOC_CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
pub const ANNOTATION_TOC_POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
pub const ANNOTATION_TAR_SPLIT_POSITION: &str = "io.github.containers.zstd-chunked.tarsplit-position";
pub const LEGACY_ANNOTATION_TOC_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";
pub const LEGACY_ANNOTATION_TOC_POSITION: &str = "io.containers.zstd-chunked.manifest-position";
pub const ESTARGZ_ANNOTATION_TOC_DIGEST: &str = super::estargz::ANNOTATION_TOC_DIGEST;

/// Random access to a blob: a file on disk, a buffer, or (for partial pulls) a ranged fetcher.
pub trait BlobSource {
    /// Total size of the blob in bytes.
    fn size(&self) -> Result<u64>;
    /// Fills `buf` from `offset`; short data is an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Fills each buffer from its offset (in increasing order, not overlapping). A remote source
    /// reads them in one request: one round trip to a registry, not one per buffer.
    fn read_many_at(&self, reads: &mut [(u64, &mut [u8])]) -> Result<()> {
        reads.iter_mut().try_for_each(|(offset, buf)| self.read_exact_at(*offset, buf))
    }
}

impl BlobSource for File {
    fn size(&self) -> Result<u64> {
        Ok(self.metadata().map_err(|e| Error::io("stat blob", e))?.len())
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        FileExt::read_exact_at(self, buf, offset).map_err(|e| Error::io(format!("read blob at offset {offset}"), e))
    }
}

impl BlobSource for [u8] {
    fn size(&self) -> Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).ok().filter(|&s| s <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(Error::format(format!(
                "read of {} bytes at offset {offset} is past the end of the blob",
                buf.len()
            ))),
        }
    }
}

/// Where the TOC was found and how far it is trusted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub format: Format,
    /// `sha256:<hex>` of the compressed TOC.
    pub toc_digest: String,
    /// True when the digest came from annotations (the manifest) rather than from the blob itself.
    pub authenticated: bool,
    #[serde(skip)]
    pub toc: Position,
    #[serde(skip)]
    pub tar_split: Option<Position>,
}

/// A decoded, verified zstd:chunked (or eStargz) manifest.
#[derive(Debug)]
pub struct Manifest {
    pub location: Location,
    /// The decompressed TOC JSON, byte for byte (what containers/storage stores as
    /// `zstd-chunked-manifest`).
    pub toc_json: std::sync::Arc<[u8]>,
    pub toc: Toc,
    /// The decompressed tar-split NDJSON in an anonymous temporary file, positioned at 0; `None`
    /// for legacy layers without one.
    pub tar_split: Option<File>,
    /// The tar-split as the blob carries it (zstd, authenticated by its digest and decoded once
    /// above): a layer keeps it as it is.
    pub tar_split_zst: Option<Vec<u8>>,
    /// The size of the layer's tar, from the tar-split (`tarSizeFromTarSplit`).
    pub tar_size: Option<u64>,
}

impl Location {
    /// Where file data ends in the blob: at the TOC's skippable-frame header, or (eStargz) at
    /// the TOC's gzip member.
    pub fn data_end(&self) -> u64 {
        match self.format {
            Format::Estargz => self.toc.offset,
            Format::Current | Format::Legacy => self.toc.offset.saturating_sub(8),
        }
    }
}

impl Manifest {
    /// Where file data ends in the blob ([`Location::data_end`]).
    pub fn data_end(&self) -> u64 {
        self.location.data_end()
    }
}

/// Options for [`read_manifest`].
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Directory for the decoded tar-split temp file (default: the system temp dir).
    pub tmp_dir: Option<std::path::PathBuf>,
}

/// Finds where the TOC is: from the layer's annotations when given, else from the blob's footer.
/// An eStargz blob's TOC is read and authenticated to be located (its digest is the JSON's).
pub fn locate(blob: &(impl BlobSource + ?Sized), annotations: Option<&BTreeMap<String, String>>) -> Result<Location> {
    match kind(blob, annotations)? {
        Kind::Estargz { digest, footer } => Ok(super::estargz::read_manifest_with(blob, digest, footer)?.location),
        Kind::Chunked { tail } => Ok(locate_chunked(blob, annotations, tail)?.0),
    }
}

/// A zstd:chunked TOC's place: by the footer in `tail` (read when there were no annotations),
/// else by the annotations; with the compressed TOC where finding it read it (the footer's way).
fn locate_chunked(
    blob: &(impl BlobSource + ?Sized),
    annotations: Option<&BTreeMap<String, String>>,
    tail: Option<Vec<u8>>,
) -> Result<(Location, Option<Vec<u8>>)> {
    match (tail, annotations) {
        (Some(tail), _) => locate_from_footer(blob, &tail).map(|(l, toc)| (l, Some(toc))),
        (None, Some(a)) => Ok((locate_from_annotations(a)?, None)),
        (None, None) => Err(Error::new(ErrorKind::Internal, "no footer read and no annotations")),
    }
}

/// What a blob is, from its annotations, or else from its last bytes (read once: in a pull, one
/// ranged fetch serves both formats' footers).
enum Kind<'a> {
    /// eStargz: the annotation's TOC digest, or (no annotations) the footer found.
    Estargz { digest: Option<&'a str>, footer: Option<super::estargz::Footer> },
    /// zstd:chunked: the blob's last bytes when no annotations were given.
    Chunked { tail: Option<Vec<u8>> },
}

fn kind<'a>(blob: &(impl BlobSource + ?Sized), annotations: Option<&'a BTreeMap<String, String>>) -> Result<Kind<'a>> {
    match annotations {
        Some(a) => {
            let zstd = a.contains_key(ANNOTATION_TOC_CHECKSUM) || a.contains_key(LEGACY_ANNOTATION_TOC_CHECKSUM);
            match a.get(ESTARGZ_ANNOTATION_TOC_DIGEST) {
                Some(_) if zstd => Err(Error::format("the layer has both zstd:chunked and estargz annotations")),
                Some(d) => Ok(Kind::Estargz { digest: Some(d.as_str()), footer: None }),
                None => Ok(Kind::Chunked { tail: None }),
            }
        }
        None => {
            let size = blob.size()?;
            let n = (footer::TAIL_SIZE.max(super::estargz::FOOTER_SIZE) as u64).min(size);
            let mut tail = vec![0u8; n as usize];
            blob.read_exact_at(size - n, &mut tail)?;
            Ok(match super::estargz::parse_footer(&tail)? {
                Some(f) => Kind::Estargz { digest: None, footer: Some(f) },
                None => Kind::Chunked { tail: Some(tail) },
            })
        }
    }
}

fn locate_from_annotations(a: &BTreeMap<String, String>) -> Result<Location> {
    let current = a.contains_key(ANNOTATION_TOC_CHECKSUM);
    let legacy = a.contains_key(LEGACY_ANNOTATION_TOC_CHECKSUM);
    let estargz = a.contains_key(ESTARGZ_ANNOTATION_TOC_DIGEST);
    if (current || legacy) && estargz {
        return Err(Error::format("the layer has both zstd:chunked and estargz annotations"));
    }
    if estargz {
        return Err(Error::new(ErrorKind::Internal, "eStargz annotations reach the zstd:chunked locator"));
    }
    let (format, checksum_key, position_key) = if current {
        (Format::Current, ANNOTATION_TOC_CHECKSUM, ANNOTATION_TOC_POSITION)
    } else if legacy {
        (Format::Legacy, LEGACY_ANNOTATION_TOC_CHECKSUM, LEGACY_ANNOTATION_TOC_POSITION)
    } else {
        return Err(Error::unsupported(format!(
            "not a zstd:chunked layer: no {ANNOTATION_TOC_CHECKSUM} annotation (convert it as a plain layer)"
        )));
    };
    let digest = &a[checksum_key];
    sha256_hex(digest).map_err(|e| e.context(format!("annotation {checksum_key}")))?;
    let pos = a.get(position_key).ok_or_else(|| Error::format(format!("annotation {position_key} is missing")))?;
    let toc = parse_position(pos, 4).map_err(|e| e.context(format!("annotation {position_key}")))?;
    let tar_split = match (format, a.get(ANNOTATION_TAR_SPLIT_POSITION)) {
        (Format::Current, Some(p)) => {
            Some(parse_position(p, 3).map_err(|e| e.context(format!("annotation {ANNOTATION_TAR_SPLIT_POSITION}")))?)
        }
        _ => None,
    };
    Ok(Location {
        format,
        toc_digest: digest.clone(),
        authenticated: true,
        toc,
        tar_split: tar_split.filter(|p| p.offset > 0),
    })
}

/// `offset:length:uncompressedLength[:type]`, decimal; type must be 1.
fn parse_position(s: &str, fields: usize) -> Result<Position> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || Error::format(format!("invalid position {s:?} (expected {fields} colon-separated decimal numbers)"));
    if parts.len() != fields {
        return Err(bad());
    }
    let n: Vec<u64> = parts.iter().map(|p| p.parse::<u64>().map_err(|_| bad())).collect::<Result<_>>()?;
    if fields == 4 && n[3] != footer::MANIFEST_TYPE_CRFS {
        return Err(Error::format(format!("invalid manifest type {} in {s:?} (expected 1)", n[3])));
    }
    Ok(Position { offset: n[0], length: n[1], uncompressed_length: n[2] })
}

/// The TOC's place by the footer, and the compressed TOC (read to compute its digest).
fn locate_from_footer(blob: &(impl BlobSource + ?Sized), tail: &[u8]) -> Result<(Location, Vec<u8>)> {
    let f = footer::parse(tail)?;
    let compressed = read_frame(blob, f.toc, MAX_TOC_SIZE, "TOC")?;
    let toc_digest = format!("sha256:{}", crate::source::hex(&Sha256::digest(&compressed)));
    Ok((
        Location { format: f.format, toc_digest, authenticated: false, toc: f.toc, tar_split: f.tar_split },
        compressed,
    ))
}

/// Checks that a frame position lies inside the blob, with room for its header before it, and
/// within `max` bytes.
fn check_position(blob: &(impl BlobSource + ?Sized), p: Position, max: u64, what: &str) -> Result<()> {
    let size = blob.size()?;
    if p.length > max || p.uncompressed_length > max {
        return Err(Error::limit(format!(
            "zstd:chunked {what} too big to process ({} bytes compressed, {} uncompressed; limit {max})",
            p.length, p.uncompressed_length
        )));
    }
    let end = p.offset.checked_add(p.length);
    if p.offset < 8 || end.is_none_or(|e| e > size) {
        return Err(Error::format(format!(
            "zstd:chunked {what} position {}+{} is outside the blob of {size} bytes",
            p.offset, p.length
        )));
    }
    Ok(())
}

/// Checks that the 8 bytes before a frame are a skippable-frame header of its length.
fn check_header(header: &[u8; 8], p: Position, what: &str) -> Result<()> {
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if header[..4] != SKIPPABLE_MAGIC || u64::from(len) != p.length {
        return Err(Error::format(format!(
            "zstd:chunked {what} at offset {} is not a skippable frame of {} bytes",
            p.offset, p.length
        )));
    }
    Ok(())
}

/// Reads, authenticates and decodes the TOC and tar-split of a blob, and checks that both describe
/// the same entries (SPEC §3.6.5).
pub fn read_manifest(
    blob: &(impl BlobSource + ?Sized),
    annotations: Option<&BTreeMap<String, String>>,
    options: &ReadOptions,
) -> Result<Manifest> {
    read_manifest_then(blob, annotations, options, |_, _| ()).map(|(m, ())| m)
}

/// [`read_manifest`], and `with_toc` called with the TOC as soon as it is parsed, on the thread
/// that then waits for the tar-split's thread (for work that needs only the TOC: it costs no time
/// when it takes less than what remains of the tar-split). Its result is dropped if the manifest
/// is not valid.
pub fn read_manifest_then<T>(
    blob: &(impl BlobSource + ?Sized),
    annotations: Option<&BTreeMap<String, String>>,
    options: &ReadOptions,
    with_toc: impl FnOnce(&Toc, &Location) -> T,
) -> Result<(Manifest, T)> {
    let (location, toc_read) = match kind(blob, annotations)? {
        Kind::Estargz { digest, footer } => {
            let m = super::estargz::read_manifest_with(blob, digest, footer)?;
            let t = with_toc(&m.toc, &m.location);
            return Ok((m, t));
        }
        Kind::Chunked { tail } => locate_chunked(blob, annotations, tail)?,
    };
    // The tar-split's position is known now, its digest only from the TOC: it is read with the
    // TOC (both frames with their headers: one request to a registry, where one for each was four
    // round trips) and hashed, decompressed and parsed on another thread while this one parses the
    // TOC (a rootfs layer: 90 of the 180 ms the two took one after the other). Nothing of it is
    // used before its digest is checked; where it cannot be read now, it is read again below,
    // which reports why.
    let split_at =
        location.tar_split.filter(|&pos| check_position(blob, pos, MAX_TAR_SPLIT_COMPRESSED, "tar-split").is_ok());
    let read_split = |pos| read_frame(blob, pos, MAX_TAR_SPLIT_COMPRESSED, "tar-split").ok().map(|c| (pos, c));
    let (compressed, early_split) = match (toc_read, split_at) {
        // Located by the footer: the TOC is read already.
        (Some(toc), _) => (toc, split_at.and_then(read_split)),
        (None, Some(pos)) => {
            check_position(blob, location.toc, MAX_TOC_SIZE, "TOC")?;
            match read_frames(blob, [(location.toc, "TOC"), (pos, "tar-split")]) {
                Ok([toc, split]) => (toc?, split.ok().map(|c| (pos, c))),
                // The request for both failed: the TOC on its own, whose failure is reported.
                Err(_) => (read_frame(blob, location.toc, MAX_TOC_SIZE, "TOC")?, None),
            }
        }
        (None, None) => (read_frame(blob, location.toc, MAX_TOC_SIZE, "TOC")?, None),
    };
    let toc_len = location.toc.uncompressed_length;
    std::thread::scope(|scope| {
        let early_split = match early_split {
            Some((pos, compressed)) => Some(
                std::thread::Builder::new()
                    .name("cfs-tar-split".into())
                    .spawn_scoped(scope, move || SplitWork::run(compressed, pos, toc_len, options))
                    .map_err(|e| Error::io("spawn tar-split thread", e))?,
            ),
            None => None,
        };
        verify_digest(&Sha256::digest(&compressed), &location.toc_digest, "TOC")?;
        let toc_json = decompress_exact(&compressed, location.toc.uncompressed_length, "TOC")?;
        drop(compressed);
        let toc = Toc::parse(&toc_json)?;
        let with_toc = with_toc(&toc, &location);

        let tar_split = match &toc.tar_split_digest {
            Some(digest) => {
                let pos = location.tar_split.ok_or_else(|| {
                    Error::format(format!(
                        "the TOC requires a tar-split, but no position for it is known ({ANNOTATION_TAR_SPLIT_POSITION})"
                    ))
                })?;
                let work = match early_split {
                    Some(thread) => {
                        thread.join().map_err(|_| Error::new(ErrorKind::Internal, "the tar-split thread panicked"))?
                    }
                    None => {
                        let compressed = read_frame(blob, pos, MAX_TAR_SPLIT_COMPRESSED, "tar-split")?;
                        SplitWork::run(compressed, pos, toc_len, options)
                    }
                };
                verify_digest(&work.digest, digest, "tar-split")?;
                let (file, headers) = work.decoded?;
                let tar_size = check_headers_against_toc(&toc, headers)?;
                Some(((file, tar_size), work.compressed))
            }
            // Legacy layers have none; a tar-split without a digest in the TOC cannot be
            // authenticated and is ignored. Whoever needs the DiffID refuses such layers.
            None => None,
        };
        let (tar_split, tar_split_zst) = tar_split.unzip();
        let (tar_split, tar_size) = tar_split.unzip();
        Ok((Manifest { location, toc_json: toc_json.into(), toc, tar_split, tar_split_zst, tar_size }, with_toc))
    })
}

/// Reads a frame within `max` bytes and checks its skippable-frame header (one request).
fn read_frame(blob: &(impl BlobSource + ?Sized), p: Position, max: u64, what: &str) -> Result<Vec<u8>> {
    check_position(blob, p, max, what)?;
    let [frame] = read_frames(blob, [(p, what)])?;
    frame
}

/// Reads frames (positions inside the blob, as `check_position` found) and their headers with
/// one [`BlobSource::read_many_at`]: an error there is the read's; then each frame, or why its
/// header is wrong.
fn read_frames<const N: usize>(
    blob: &(impl BlobSource + ?Sized),
    frames: [(Position, &str); N],
) -> Result<[Result<Vec<u8>>; N]> {
    let mut headers = [[0u8; 8]; N];
    let mut bodies: [Vec<u8>; N] = std::array::from_fn(|i| vec![0u8; frames[i].0.length as usize]);
    {
        let mut reads: Vec<(u64, &mut [u8])> = headers
            .iter_mut()
            .zip(bodies.iter_mut())
            .zip(&frames)
            .flat_map(|((h, b), (p, _))| [(p.offset - 8, &mut h[..]), (p.offset, &mut b[..])])
            .collect();
        reads.sort_by_key(|r| r.0);
        if reads.windows(2).any(|w| w[0].0 + w[0].1.len() as u64 > w[1].0) {
            return Err(Error::format("zstd:chunked frames overlap"));
        }
        blob.read_many_at(&mut reads)?;
    }
    let mut bodies = bodies.into_iter();
    Ok(std::array::from_fn(|i| {
        let body = bodies.next().unwrap_or_default();
        check_header(&headers[i], frames[i].0, frames[i].1).map(|()| body)
    }))
}

/// A tar-split frame hashed, decompressed to a temporary file and parsed, before its digest is
/// known to be the TOC's.
struct SplitWork {
    digest: [u8; 32],
    compressed: Vec<u8>,
    decoded: Result<(File, SplitHeaders)>,
}

impl SplitWork {
    /// Parsing takes longer than decompressing (a rootfs layer's 16 MiB: 55 against 40 ms), so
    /// it runs on a thread of its own, on the pieces as they are decompressed.
    fn run(compressed: Vec<u8>, pos: Position, toc_len: u64, options: &ReadOptions) -> SplitWork {
        let digest = Sha256::digest(&compressed).into();
        let (tx, rx) = sync_channel(4);
        let decoded = std::thread::scope(|scope| {
            let parser = std::thread::Builder::new()
                .name("cfs-split-parse".into())
                .spawn_scoped(scope, move || SplitHeaders::read_from(ChannelReader::new(rx), toc_len))
                .map_err(|e| Error::io("spawn tar-split parsing thread", e))?;
            // Decompression errors come first, as when the whole frame was decompressed before
            // parsing; the parser reads what came before them.
            let file = decompress_to_tmpfile(&compressed, pos.uncompressed_length, options, tx);
            let headers =
                parser.join().map_err(|_| Error::new(ErrorKind::Internal, "the tar-split parsing thread panicked"))?;
            Ok((file?, headers))
        });
        SplitWork { digest, compressed, decoded }
    }
}

fn verify_digest(got: &[u8], expected: &str, what: &str) -> Result<()> {
    let want = sha256_hex(expected).map_err(|e| e.context(format!("{what} digest")))?;
    let got = crate::source::hex(got);
    if got != want {
        return Err(Error::new(
            ErrorKind::Verification,
            format!("{what} checksum mismatch: expected sha256:{want}, got sha256:{got}"),
        ));
    }
    Ok(())
}

fn decompress_exact(compressed: &[u8], expected_len: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expected_len.min(MAX_TOC_SIZE) as usize);
    let dec = zstd::stream::read::Decoder::new(compressed).map_err(|e| Error::io(format!("decompress {what}"), e))?;
    dec.take(expected_len + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::format(format!("{what} is not valid zstd data: {e}")))?;
    if out.len() as u64 != expected_len {
        return Err(Error::format(format!(
            "{what} decompresses to {} bytes, but its position says {expected_len}",
            if out.len() as u64 > expected_len { "more than that".to_string() } else { out.len().to_string() }
        )));
    }
    Ok(out)
}

/// The tar-split goes to its parser in pieces this large: under the global allocator's mapping
/// threshold (src/mapped_alloc.rs), so that freed pieces are reused from the heap rather than each
/// mapped and faulted in afresh (1 MiB pieces: 4.6k more page faults in a pull).
const TAR_SPLIT_PIECE: usize = 64 << 10;

/// Decompresses the tar-split into a temporary file, sending each piece to `pieces` too (for as
/// long as its receiver wants them).
fn decompress_to_tmpfile(
    compressed: &[u8],
    expected_len: u64,
    options: &ReadOptions,
    pieces: SyncSender<std::io::Result<Vec<u8>>>,
) -> Result<File> {
    if expected_len > MAX_TAR_SPLIT_SIZE {
        return Err(Error::limit(format!(
            "tar-split of {expected_len} bytes is over the {MAX_TAR_SPLIT_SIZE}-byte limit"
        )));
    }
    let mut file = match &options.tmp_dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    }
    .map_err(|e| Error::io("create temporary file for tar-split", e))?;
    let dec = zstd::stream::read::Decoder::new(compressed).map_err(|e| Error::io("decompress tar-split", e))?;
    let mut dec = dec.take(expected_len + 1);
    let mut n = 0u64;
    let mut pieces = Some(pieces);
    loop {
        let mut piece = Vec::with_capacity(TAR_SPLIT_PIECE);
        (&mut dec)
            .take(TAR_SPLIT_PIECE as u64)
            .read_to_end(&mut piece)
            .map_err(|e| Error::format(format!("tar-split is not valid zstd data: {e}")))?;
        if piece.is_empty() {
            break;
        }
        n += piece.len() as u64;
        file.write_all(&piece).map_err(|e| Error::io("write tar-split", e))?;
        if pieces.as_ref().is_some_and(|p| p.send(Ok(piece)).is_err()) {
            pieces = None;
        }
    }
    if n != expected_len {
        let got = if n > expected_len { "more than that".to_string() } else { n.to_string() };
        return Err(Error::format(format!(
            "tar-split decompresses to {got} bytes, but its position says {expected_len}"
        )));
    }
    file.flush().map_err(|e| Error::io("write tar-split", e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io("seek tar-split", e))?;
    Ok(file)
}
