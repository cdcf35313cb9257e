//! eStargz (stargz-snapshotter's gzip-based lazy-pull format, SPEC §3.8): the footer, the TOC
//! (`stargz.index.json`, the last tar entry, in a gzip member of its own), and the TOC turned
//! into the form the zstd:chunked pull reads (end offsets and chunk sizes filled in, the format's
//! own files left out), as containers/storage's estargz differ does.
//!
//! The blob is one valid tar.gz: every gzip member holds tar bytes, each file chunk starts a new
//! member, and a file's last member also holds the next entry's header. So a file's content is
//! the first `chunkSize` decompressed bytes of its member (after `innerOffset` when the encoder
//! packed several small files in one member), and what follows is not that file's.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::footer::{Format, Position};
use super::manifest::{BlobSource, Location, Manifest, MAX_TOC_SIZE};
use super::toc::{sha256_bytes, sha256_hex, Toc, TocEntry, TYPE_CHUNK, TYPE_REG};
use crate::source::tar::{EntryType, TarLimits, TarReader};
use crate::{Error, ErrorKind, Result};

/// The layer annotation with the sha256 of the TOC JSON.
pub const ANNOTATION_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The TOC's name in the tar stream.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Marks the end of the files to prefetch.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Marks a layer with nothing to prefetch.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// The current footer: an empty gzip member whose extra field has an `SG` subfield
/// `%016xSTARGZ` (the TOC's offset).
pub const FOOTER_SIZE: usize = 51;
/// The original stargz footer: the same without the subfield header.
pub const LEGACY_FOOTER_SIZE: usize = 47;

/// Whether a tar entry name is one of the format's own files (the TOC and the landmarks). They
/// are part of the tar stream (and so of the DiffID) but not of the layer's tree, as in
/// containers/storage's differ and stargz-snapshotter.
pub fn is_format_file(name: &[u8]) -> bool {
    let clean = clean_name(name);
    clean == TOC_TAR_NAME.as_bytes()
        || clean == PREFETCH_LANDMARK.as_bytes()
        || clean == NO_PREFETCH_LANDMARK.as_bytes()
}

/// Whether a tar entry name is the TOC's.
pub fn is_toc_name(name: &[u8]) -> bool {
    clean_name(name) == TOC_TAR_NAME.as_bytes()
}

/// `path.Clean("/" + name)` without the leading slash, for the flat names the format uses.
fn clean_name(name: &[u8]) -> &[u8] {
    let mut n = name;
    loop {
        if let Some(rest) = n.strip_prefix(b"./") {
            n = rest;
        } else if let Some(rest) = n.strip_prefix(b"/") {
            n = rest;
        } else {
            return n;
        }
    }
}

/// What an eStargz footer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Offset of the gzip member holding the TOC.
    pub toc_offset: u64,
    /// 51 or 47 bytes.
    pub size: u64,
}

/// Reads the footer from the last bytes of a blob (up to [`FOOTER_SIZE`]). `Ok(None)` when the
/// blob does not end like an eStargz blob; an error when it does but the footer is damaged.
pub fn parse_footer(tail: &[u8]) -> Result<Option<Footer>> {
    for size in [FOOTER_SIZE, LEGACY_FOOTER_SIZE] {
        if tail.len() < size {
            continue;
        }
        let member = &tail[tail.len() - size..];
        if let Some(hex) = footer_offset_field(member) {
            let bad =
                || Error::format(format!("eStargz footer: invalid TOC offset {:?}", String::from_utf8_lossy(hex)));
            let text = std::str::from_utf8(hex).map_err(|_| bad())?;
            let toc_offset = u64::from_str_radix(text, 16).map_err(|_| bad())?;
            // It must be a whole, empty gzip member (header, an empty stored block, CRC and size).
            let mut decoder = flate2::bufread::GzDecoder::new(member);
            let mut out = Vec::new();
            let ok = decoder.read_to_end(&mut out).is_ok() && out.is_empty() && decoder.into_inner().is_empty();
            if !ok {
                return Err(Error::format(format!(
                    "eStargz footer: the last {size} bytes are not an empty gzip member"
                )));
            }
            return Ok(Some(Footer { toc_offset, size: size as u64 }));
        }
    }
    Ok(None)
}

/// The 16 hex digits of a footer candidate, when it has the footer's shape: a gzip header with
/// only FEXTRA set and an extra field ending in `STARGZ` (in an `SG` subfield for 51 bytes).
fn footer_offset_field(member: &[u8]) -> Option<&[u8]> {
    if member.len() < 12 || member[..3] != [0x1f, 0x8b, 0x08] || member[3] != 0x04 {
        return None;
    }
    let xlen = u16::from_le_bytes([member[10], member[11]]) as usize;
    let extra = member.get(12..12 + xlen)?;
    let field = match (member.len(), xlen) {
        (FOOTER_SIZE, 26) if extra[..2] == *b"SG" && u16::from_le_bytes([extra[2], extra[3]]) == 22 => &extra[4..],
        (LEGACY_FOOTER_SIZE, 22) => extra,
        _ => return None,
    };
    (field[16..] == *b"STARGZ").then_some(&field[..16])
}

/// Reads the footer of `blob`, if it is an eStargz blob.
pub fn read_footer(blob: &(impl BlobSource + ?Sized)) -> Result<Option<Footer>> {
    let size = blob.size()?;
    let n = (FOOTER_SIZE as u64).min(size);
    let mut tail = vec![0u8; n as usize];
    blob.read_exact_at(size - n, &mut tail)?;
    parse_footer(&tail)
}

/// Whether `file` is an eStargz blob, by its footer: for a conversion that is given a file, so
/// that the format's files stay out of the tree and its TOC is checked. A pipe or device says
/// nothing (it cannot be read at its end without consuming it): `false`.
pub fn detect_file(file: &std::fs::File) -> Result<bool> {
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(read_footer(file)?.is_some()),
        _ => Ok(false),
    }
}

/// Reads, authenticates and decodes the TOC of an eStargz blob (`readEstargzChunkedManifest`):
/// against `toc_digest` (the annotation, `sha256:` of the TOC JSON) when given, else
/// unauthenticated. The TOC is checked and normalized for a pull ([`normalize`]).
pub fn read_manifest(blob: &(impl BlobSource + ?Sized), toc_digest: Option<&str>) -> Result<Manifest> {
    read_manifest_with(blob, toc_digest, None)
}

/// [`read_manifest`] with the footer already read (a pull fetches the blob's end once).
pub(crate) fn read_manifest_with(
    blob: &(impl BlobSource + ?Sized),
    toc_digest: Option<&str>,
    footer: Option<Footer>,
) -> Result<Manifest> {
    let blob_size = blob.size()?;
    let footer = match footer {
        Some(f) => f,
        None => read_footer(blob)?
            .ok_or_else(|| Error::format("not an eStargz blob: no eStargz footer in its last 51 bytes"))?,
    };
    let end = blob_size - footer.size;
    if footer.toc_offset >= end {
        return Err(Error::format(format!(
            "eStargz TOC offset {} is outside the blob's data (0..{end})",
            footer.toc_offset
        )));
    }
    let length = end - footer.toc_offset;
    if length > MAX_TOC_SIZE {
        return Err(Error::limit(format!(
            "eStargz TOC too big to process ({length} bytes compressed; limit {MAX_TOC_SIZE})"
        )));
    }
    let mut compressed = vec![0u8; length as usize];
    blob.read_exact_at(footer.toc_offset, &mut compressed)?;
    let json = toc_from_member(&compressed)?;
    drop(compressed);
    let (digest, authenticated) = match toc_digest {
        Some(d) => {
            let want = sha256_bytes(d).map_err(|e| e.context(format!("annotation {ANNOTATION_TOC_DIGEST}")))?;
            check_toc_digest(&json, &want)?;
            (d.to_string(), true)
        }
        None => (format!("sha256:{}", crate::source::hex(&Sha256::digest(&json))), false),
    };
    let mut toc = Toc::parse(&json)?;
    normalize(&mut toc, footer.toc_offset)?;
    Ok(Manifest {
        location: Location {
            format: Format::Estargz,
            toc_digest: digest,
            authenticated,
            toc: Position { offset: footer.toc_offset, length, uncompressed_length: json.len() as u64 },
            tar_split: None,
        },
        toc_json: json.into(),
        toc,
        tar_split: None,
        tar_split_zst: None,
        tar_size: None,
    })
}

/// Checks the TOC JSON against the sha256 the layer's annotation gives.
pub fn check_toc_digest(json: &[u8], want: &[u8; 32]) -> Result<()> {
    let got: [u8; 32] = Sha256::digest(json).into();
    if got != *want {
        return Err(Error::new(
            ErrorKind::Verification,
            format!(
                "eStargz TOC checksum mismatch: expected sha256:{}, got sha256:{}",
                crate::source::hex(want),
                crate::source::hex(&got)
            ),
        ));
    }
    Ok(())
}

/// The TOC JSON from the gzip member that holds it: its first tar entry must be
/// `stargz.index.json`, a regular file within [`MAX_TOC_SIZE`].
fn toc_from_member(compressed: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: &dyn std::fmt::Display| Error::format(format!("eStargz TOC: {e}"));
    let decoder = flate2::bufread::GzDecoder::new(compressed);
    let mut tar = TarReader::new(decoder.take(MAX_TOC_SIZE + 64 * 1024), TarLimits::default());
    let h = tar.next_header().map_err(|e| bad(&e))?.ok_or_else(|| bad(&"its gzip member holds no tar entry"))?;
    if !is_toc_name(&h.name) || h.entry_type != EntryType::Regular {
        return Err(bad(&format_args!(
            "its first tar entry is {:?}, expected the regular file {TOC_TAR_NAME}",
            h.display_name()
        )));
    }
    if h.size > MAX_TOC_SIZE {
        return Err(Error::limit(format!("eStargz TOC of {} bytes is over the {MAX_TOC_SIZE}-byte limit", h.size)));
    }
    let mut json = vec![0u8; h.size as usize];
    let mut filled = 0;
    while filled < json.len() {
        match tar.read_data(&mut json[filled..]).map_err(|e| bad(&e))? {
            0 => return Err(bad(&"the TOC entry is truncated")),
            n => filled += n,
        }
    }
    Ok(json)
}

/// Makes an eStargz TOC readable as a zstd:chunked one without a tar-split: drops the format's
/// own files, fills in each file's `endOffset` (the start of the next member, or of the TOC) and
/// each chunk's `chunkSize` (the encoder leaves both out for a last chunk), and checks that data
/// offsets increase and stay before the TOC. Entries sharing a member (`innerOffset`, from the
/// encoder's minimum chunk size) are kept, with their member's end; a pull refuses them.
pub fn normalize(toc: &mut Toc, toc_offset: u64) -> Result<()> {
    toc.entries
        .retain(|e| !((e.entry_type == TYPE_REG || e.entry_type == TYPE_CHUNK) && is_format_file(e.name.as_bytes())));

    let toc_offset = i64::try_from(toc_offset).map_err(|_| Error::format("eStargz TOC offset out of range"))?;
    // Each data entry's member ends where the next member starts (entries sharing a member
    // have the same offset), the last one where the TOC's does.
    let (mut next, mut next_end) = (toc_offset, toc_offset);
    for e in toc.entries.iter_mut().rev() {
        if e.entry_type != TYPE_REG && e.entry_type != TYPE_CHUNK || e.offset == 0 {
            continue;
        }
        if e.offset < 0 || e.offset > next || e.inner_offset < 0 {
            return Err(Error::format(format!(
                "eStargz TOC entry {:?}: data offset {}+{} is not before the next entry's ({next})",
                e.name, e.offset, e.inner_offset
            )));
        }
        if e.offset < next {
            next_end = next;
            next = e.offset;
        }
        e.end_offset = next_end;
    }
    // A file spans its chunks: its end is its last chunk's; each chunk's size is what is left
    // before the next chunk (or the file's end).
    for span in file_spans(&toc.entries) {
        let (first, last) = (span.start, span.end - 1);
        let size = toc.entries[first].size;
        for k in span {
            let next_start = if k < last { toc.entries[k + 1].chunk_offset } else { size };
            let e = &mut toc.entries[k];
            if e.chunk_size == 0 || k == last {
                e.chunk_size = next_start - e.chunk_offset;
            }
        }
        if last > first {
            toc.entries[first].end_offset = toc.entries[last].end_offset;
        }
    }
    Ok(())
}

/// The index ranges of the TOC's regular files, each with the chunk entries that follow it.
fn file_spans(entries: &[TocEntry]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let mut j = i + 1;
        while j < entries.len() && entries[j].entry_type == TYPE_CHUNK && entries[j].name == entries[i].name {
            j += 1;
        }
        if entries[i].entry_type == TYPE_REG {
            spans.push(i..j);
        }
        i = j;
    }
    spans
}

/// Whether some data entry shares a gzip member with another (`innerOffset`).
pub fn has_shared_members(toc: &Toc) -> bool {
    toc.entries.iter().any(|e| e.inner_offset != 0)
}

/// Checks a layer converted from an eStargz blob against the blob's own TOC: `ours` is the TOC
/// made from the tar headers and contents as they streamed by, `theirs` the `stargz.index.json`
/// that came with them. Both list the same entries in the same order (the format's own files
/// aside): same type, name, link, size, mode, owner, device, xattrs and content digest, and a
/// modification time that rounds to the TOC's second. Each chunk of a file cut in several is
/// checked against its `chunkDigest` by reading the object back through `object` (the content is
/// already verified whole; this checks what a later partial pull of the blob would rely on).
pub fn check_layer(theirs: &Toc, ours: &Toc, mut object: impl FnMut(&str) -> Result<std::fs::File>) -> Result<()> {
    let files: Vec<&TocEntry> = theirs
        .entries
        .iter()
        .filter(|e| e.entry_type != TYPE_CHUNK && !(e.entry_type == TYPE_REG && is_format_file(e.name.as_bytes())))
        .collect();
    if files.len() != ours.entries.len() {
        return Err(lie(format_args!("it lists {} entries, the tar has {}", files.len(), ours.entries.len())));
    }
    for (t, o) in files.iter().zip(&ours.entries) {
        let name = &o.name;
        let what = |field: &str, t: &dyn std::fmt::Debug, o: &dyn std::fmt::Debug| {
            lie(format_args!("entry {name:?}: {field} is {t:?} in the TOC, {o:?} in the tar"))
        };
        if trim(&t.name) != trim(&o.name) {
            return Err(lie(format_args!("entry {:?} of the TOC is {:?} in the tar", t.name, o.name)));
        }
        if t.entry_type != o.entry_type {
            return Err(what("type", &t.entry_type, &o.entry_type));
        }
        if trim(&t.link_name) != trim(&o.link_name) {
            return Err(what("link", &t.link_name, &o.link_name));
        }
        let reg = o.entry_type == TYPE_REG;
        if reg && (t.size != o.size || t.digest != o.digest) {
            return Err(what("content", &(t.size, &t.digest), &(o.size, &o.digest)));
        }
        if (t.mode & 0o7777, t.uid, t.gid) != (o.mode & 0o7777, o.uid, o.gid) {
            return Err(what("mode and owner", &(t.mode, t.uid, t.gid), &(o.mode, o.uid, o.gid)));
        }
        if (t.dev_major, t.dev_minor) != (o.dev_major, o.dev_minor) {
            return Err(what("device", &(t.dev_major, t.dev_minor), &(o.dev_major, o.dev_minor)));
        }
        if t.xattrs != o.xattrs {
            return Err(what("xattrs", &t.xattrs, &o.xattrs));
        }
        if let Some(tm) = t.mtime()? {
            let om = o.mtime()?.unwrap_or_default();
            let rounded = om.sec + i64::from(om.nsec >= 500_000_000);
            if tm.sec != rounded {
                return Err(what("modtime", &tm.sec, &om.sec));
            }
        }
    }
    check_chunks(theirs, &mut object)
}

/// Every file's chunks against their `chunkDigest` (see [`check_layer`]).
fn check_chunks(theirs: &Toc, object: &mut impl FnMut(&str) -> Result<std::fs::File>) -> Result<()> {
    let entries = &theirs.entries;
    for span in file_spans(entries) {
        let e = &entries[span.start];
        if e.size == 0 || is_format_file(e.name.as_bytes()) {
            continue;
        }
        let chunks = &entries[span];
        if chunks.len() == 1 {
            if !e.chunk_digest.is_empty() && e.chunk_digest != e.digest {
                return Err(lie(format_args!("entry {:?}: its one chunk's digest is not the file's", e.name)));
            }
            continue;
        }
        let file = object(&e.digest)?;
        let mut at = 0i64;
        for (k, c) in chunks.iter().enumerate() {
            let end = chunks.get(k + 1).map_or(e.size, |n| n.chunk_offset);
            if c.chunk_offset != at || end <= at || end > e.size {
                return Err(lie(format_args!(
                    "entry {:?}: chunk at {} does not follow the previous one (expected {at})",
                    e.name, c.chunk_offset
                )));
            }
            let want = sha256_hex(&c.chunk_digest)
                .map_err(|err| err.context(format!("TOC entry {:?}: chunkDigest", e.name)))?;
            let got = crate::source::sha256_at(&file, at as u64, (end - at) as u64)
                .map_err(|err| Error::io(format!("read back the object of {:?}", e.name), err))?;
            let got = crate::source::hex(&got);
            if got != want {
                return Err(Error::new(
                    ErrorKind::Verification,
                    format!(
                        "eStargz TOC entry {:?}: chunk {at}..{end} checksum mismatch: the TOC says sha256:{want}, the data is sha256:{got}",
                        e.name
                    ),
                ));
            }
            at = end;
        }
    }
    Ok(())
}

fn trim(name: &str) -> &str {
    let n = std::str::from_utf8(clean_name(name.as_bytes())).unwrap_or(name);
    n.strip_suffix('/').unwrap_or(n)
}

/// The TOC does not describe the tar it came with.
fn lie(what: std::fmt::Arguments<'_>) -> Error {
    Error::new(ErrorKind::Verification, format!("eStargz TOC does not match the layer: {what}"))
}
