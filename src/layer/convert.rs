//! Converting one layer stream into a composefs layer directory, in one streaming pass:
//! decompress → tar parse → sha256 + object write → tree; then the blob; then an atomic rename.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::metadata::RecordsWriter;
use super::objects::{ObjectStore, TempFactory, EMPTY_SHA256};
use super::result::ConvertResult;
use super::staging::Staging;
use super::toc::{TarSplitWriter, TocWriter};
use super::tree_builder::{object_path, Added, TreeBuilder};
use super::verity::{Verity, VerityPolicy};
use super::writer::{ObjectWriter, BATCH_BYTES};
use crate::chunked::estargz::{check_layer, check_toc_digest, is_format_file, is_toc_name, TOC_TAR_NAME};
use crate::chunked::{sha256x2, Toc};
use crate::image::Tree;
use crate::source::crc64::Crc64;
use crate::source::tar::{EntryType, TarLimits, TarReader};
use crate::source::LayerStream;
use crate::{Error, ErrorKind, Result};

/// Limits that bound a conversion's metadata memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per-entry limits of the tar reader (names, PAX records, xattrs).
    pub tar: TarLimits,
    /// Most tar entries in one layer.
    pub max_entries: u64,
    /// Largest TOC JSON, in bytes: containers/storage refuses larger ones (`maxTocSize`, SPEC §3.6.5).
    pub max_toc_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { tar: TarLimits::default(), max_entries: 4_000_000, max_toc_size: 150 << 20 }
    }
}

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Other layer dirs whose `diff/` objects may be reused instead of written.
    pub source_layers: Vec<PathBuf>,
    /// A directory where an index across the source layers' caches is kept (created and rebuilt
    /// as needed; see [`super::index`]), so that lookups cost the same with hundreds of source
    /// layers as with a few. Without it, each source layer's cache is probed.
    pub index_dir: Option<PathBuf>,
    /// Reuse source objects by hardlink (else reflink, falling back to copy).
    pub hardlinks: bool,
    pub verity: VerityPolicy,
    /// Turn OCI whiteouts into overlay whiteouts (default). `false` keeps them as plain empty
    /// files, exactly as containers/storage's flat path does (SPEC §10.1), for compatibility.
    pub oci_whiteouts: bool,
    pub limits: Limits,
    /// Keep the blob digest, TOC, tar-split and layers cache in `composefs-data/` (see
    /// [`super::metadata`]) so the layer can be verified, exported and deduped against on its
    /// own. containers/storage keeps these in its layer store instead and can turn this off.
    pub write_metadata: bool,
    /// The input is an eStargz blob: see [`EstargzCheck`].
    pub estargz: Option<EstargzCheck>,
    /// The DiffID the image config promises: a mismatch is an error, checked before the layer
    /// is published.
    pub expected_diff_id: Option<[u8; 32]>,
}

/// How an eStargz blob (SPEC §3.8) is converted: its stream is a tar.gz like any other (the
/// DiffID covers all of it), but its own files (the TOC `stargz.index.json` and the prefetch
/// landmarks) stay out of the tree, and the TOC is checked against the tar it came with, file by
/// file and chunk by chunk ([`crate::chunked::estargz::check_layer`]). Those files stay in the
/// tar-split, so an export gives the exact tar back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EstargzCheck {
    /// sha256 of the TOC JSON (the `containerd.io/snapshot/stargz/toc.digest` annotation), which
    /// the TOC in the stream must have; without it the TOC is only checked against the tar.
    pub toc_digest: Option<[u8; 32]>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            source_layers: Vec::new(),
            index_dir: None,
            hardlinks: false,
            verity: VerityPolicy::IfAvailable,
            oci_whiteouts: true,
            limits: Limits::default(),
            write_metadata: true,
            estargz: None,
            expected_diff_id: None,
        }
    }
}

/// Progress so far: uncompressed bytes consumed and tar entries done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes: u64,
    pub entries: u64,
}

/// Called now and then with the progress; returning `false` cancels the conversion.
pub type ProgressFn<'a> = &'a mut dyn FnMut(Progress) -> bool;

/// Contents up to this size are hashed in memory before anything is written, so duplicates
/// and reused objects cost no write at all; larger ones stream through a temporary file.
const BUFFER_LIMIT: usize = BATCH_BYTES;
/// Report progress at least every this many bytes within a large file.
const PROGRESS_BYTES: u64 = 16 << 20;

/// Converts the layer blob `input` into the layer directory `layer_dir`, which must not exist.
/// The directory appears (by rename) only when complete; on error or cancellation nothing is
/// left behind.
pub fn convert(
    input: Box<dyn Read + Send>,
    layer_dir: &Path,
    options: &ConvertOptions,
    progress: Option<ProgressFn<'_>>,
) -> Result<ConvertResult> {
    let staging = Staging::create(layer_dir)?;

    // The TOC, tar-split and layers cache are written on their own thread while the object
    // writer drains and the blob is written: they take longer than both.
    let (tree, mut result, records) = scan_inner(input, &staging.path, options, progress, options.write_metadata)?;
    if let Some(expected) = options.expected_diff_id.filter(|e| *e != result.diff_id) {
        return Err(Error::new(
            ErrorKind::Verification,
            format!(
                "DiffID mismatch: the layer's tar is sha256:{}, expected sha256:{}",
                crate::source::hex(&result.diff_id),
                crate::source::hex(&expected)
            ),
        ));
    }
    let blob_digest = write_blob(&tree, &staging.path.join("composefs-data"), options.verity)?;
    result.blob_verity = Some(blob_digest);
    if let Some(records) = records {
        records.finish()?;
        super::metadata::write_blob_digest(&staging.path, &blob_digest)?;
    }

    staging.commit(layer_dir)?;
    result.layer_dir = layer_dir.to_path_buf();
    Ok(result)
}

/// The streaming pass: objects into `staging/diff`, the tree, TOC and tar-split (no blob yet).
#[cfg(test)]
pub(crate) fn scan(
    input: Box<dyn Read + Send>,
    staging: &Path,
    options: &ConvertOptions,
    progress: Option<ProgressFn<'_>>,
) -> Result<(Tree, ConvertResult)> {
    scan_inner(input, staging, options, progress, false).map(|(tree, result, _)| (tree, result))
}

/// [`scan`], optionally leaving the TOC, tar-split and layers cache being written into
/// `staging` by the returned writer.
fn scan_inner(
    input: Box<dyn Read + Send>,
    staging: &Path,
    options: &ConvertOptions,
    mut progress: Option<ProgressFn<'_>>,
    write_records: bool,
) -> Result<(Tree, ConvertResult, Option<RecordsWriter>)> {
    let diff_path = staging.join("diff");
    let data_path = staging.join("composefs-data");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&diff_path)
        .map_err(|e| Error::io(format_args!("mkdir {}", diff_path.display()), e))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data_path)
        .map_err(|e| Error::io(format_args!("mkdir {}", data_path.display()), e))?;

    let store = ObjectStore::new(
        &diff_path,
        super::sources::SourceLayers::open(&options.source_layers, options.index_dir.as_deref())?,
        options.hardlinks,
        Verity::new(options.verity),
    )?;
    let mut writer = ObjectWriter::spawn(store)?;
    let mut temps = TempFactory::new(&diff_path)?;
    // Each regular file's inode and content digest: its object path and fs-verity digest are
    // set once the writer is done.
    let mut file_objects: Vec<(crate::image::InodeId, [u8; 32])> = Vec::new();
    let mut builder = TreeBuilder::new(options.oci_whiteouts);
    let mut toc = TocWriter::new();
    // zstd level 1: the tar-split is ~8% of the tar, and gzip took ~0.1 s per 200 MB layer on
    // this (the parsing) thread; zstd takes a tenth of that and is smaller.
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).map_err(|e| Error::io("compress tar-split", e))?;
    let mut tar_split = TarSplitWriter::new(encoder);
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();

    let stream = LayerStream::new(input)?;
    let mut tar = TarReader::new(stream, options.limits.tar);
    let mut buf = vec![0u8; BUFFER_LIMIT.max(64 << 10)];
    let mut entries: u64 = 0;
    let mut estargz_toc: Option<Vec<u8>> = None;
    let cancelled = |p: Progress, progress: &mut Option<ProgressFn<'_>>| -> Result<()> {
        if let Some(cb) = progress.as_mut() {
            if !cb(p) {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    format!("conversion cancelled after {} entries", p.entries),
                ));
            }
        }
        Ok(())
    };

    while let Some(h) = tar.next_header()? {
        entries += 1;
        if entries > options.limits.max_entries {
            return Err(Error::limit(format!(
                "tar entry {} ({:?}): more than {} entries in one layer",
                h.index,
                h.display_name(),
                options.limits.max_entries
            )));
        }
        tar_split.segment(tar.raw())?;
        tar.clear_raw();
        if options.estargz.is_some() && h.entry_type == EntryType::Regular && is_format_file(&h.name) {
            // The format's own file: its bytes go to the tar-split as they are, the TOC's kept.
            let toc = is_toc_name(&h.name);
            if toc && estargz_toc.is_some() {
                return Err(Error::format(format!("tar entry {}: a second eStargz TOC", h.index)));
            }
            let mut json = Vec::new();
            loop {
                let chunk = tar.data_chunk()?;
                if chunk.is_empty() {
                    break;
                }
                tar_split.segment(chunk)?;
                if toc {
                    if (json.len() + chunk.len()) as u64 > options.limits.max_toc_size {
                        return Err(Error::limit(format!(
                            "tar entry {}: the eStargz TOC exceeds {} bytes",
                            h.index, options.limits.max_toc_size
                        )));
                    }
                    json.extend_from_slice(chunk);
                }
                let k = chunk.len();
                tar.consume_data(k);
            }
            if toc {
                estargz_toc = Some(json);
            }
            continue;
        }
        uids.insert(h.uid);
        gids.insert(h.gid);
        let added = builder.add(&h)?;
        let len = h.payload_len();
        let mut crc = Crc64::new();
        let mut content_digest = None;
        let ctx = || format!("tar entry {} ({:?})", h.index, h.display_name());

        match added {
            Added::File(id) if len <= BUFFER_LIMIT as u64 => {
                let n = len as usize;
                let mut store_small = |data: &[u8], digest: [u8; 32], crc: &mut Crc64| -> Result<[u8; 32]> {
                    crc.update(data);
                    writer.put_bytes(digest, data, ctx())?;
                    file_objects.push((id, digest));
                    Ok(digest)
                };
                let digest = if n == 0 {
                    store_small(&[], EMPTY_SHA256, &mut crc)?
                } else if tar.data_chunk()?.len() == n {
                    // The whole content is in the stream buffer: no copy, and hashed with the
                    // DiffID.
                    let mut hasher = sha256x2::Sha256::new();
                    tar.hash_data(n, &mut hasher);
                    let d = store_small(tar.data_chunk()?, hasher.finalize(), &mut crc)?;
                    tar.consume_data(n);
                    d
                } else {
                    let mut filled = 0;
                    while filled < n {
                        filled += tar.read_data(&mut buf[filled..n])?;
                    }
                    store_small(&buf[..n], Sha256::digest(&buf[..n]).into(), &mut crc)?
                };
                content_digest = Some(digest);
            }
            Added::File(id) => {
                let mut tmp = temps.begin()?;
                let mut hasher = sha256x2::Sha256::new();
                let mut done: u64 = 0;
                let mut next_report = PROGRESS_BYTES;
                let r: Result<()> = (|| {
                    loop {
                        let chunk = tar.data_chunk()?;
                        if chunk.is_empty() {
                            break;
                        }
                        crc.update(chunk);
                        tmp.write_all(chunk)?;
                        let k = chunk.len();
                        tar.hash_data(k, &mut hasher);
                        tar.consume_data(k);
                        done += k as u64;
                        if done >= next_report {
                            next_report += PROGRESS_BYTES;
                            cancelled(Progress { bytes: tar.offset(), entries: entries - 1 }, &mut progress)?;
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    temps.abort(tmp);
                    return Err(e);
                }
                let digest = hasher.finalize();
                writer.commit_temp(tmp, digest, len, ctx())?;
                file_objects.push((id, digest));
                content_digest = Some(digest);
            }
            Added::Nothing => {
                // Whiteouts, directories, links...: any payload is read for the checksums only.
                let mut hasher = Sha256::new();
                loop {
                    let chunk = tar.data_chunk()?;
                    if chunk.is_empty() {
                        break;
                    }
                    crc.update(chunk);
                    hasher.update(chunk);
                    let k = chunk.len();
                    tar.consume_data(k);
                }
                if len > 0 {
                    content_digest = Some(hasher.finalize().into());
                }
            }
        }
        // tar-split: a checksum for every entry whose size field is non-zero (Go reads such a
        // payload even when it is empty for header-only types).
        tar_split.file(&h.name, h.size, (h.size > 0).then_some(&crc))?;
        toc.add(&h, content_digest.as_ref().filter(|_| len > 0));
        if toc.len() > options.limits.max_toc_size {
            return Err(Error::limit(format!(
                "{}: the layer's TOC exceeds {} bytes (containers/storage's limit)",
                ctx(),
                options.limits.max_toc_size
            )));
        }
        cancelled(Progress { bytes: tar.offset(), entries }, &mut progress)?;
    }
    // End-of-archive blocks, then anything after them in 1 MiB segments (as tar-split does).
    tar_split.segment(tar.raw())?;
    tar.clear_raw();
    tar.read_trailer(1 << 20, |chunk| tar_split.segment(chunk))?;
    let stream_digests = tar.into_inner().finish()?;
    let (encoder, tar_split_sha, tar_split_size) = tar_split.finish();
    let tar_split_zst = encoder.finish().map_err(|e| Error::io("compress tar-split", e))?;
    let toc_json = toc.finish(&tar_split_sha);
    let records = match write_records {
        true => Some(RecordsWriter::spawn(staging, toc_json.clone(), tar_split_zst.clone())?),
        false => None,
    };

    let store = writer.finish()?;
    if let Some(check) = &options.estargz {
        check_estargz(check, estargz_toc.as_deref(), &toc_json, &diff_path)?;
    }
    for (id, digest) in file_objects {
        builder.set_file_content(id, object_path(&digest), store.get(&digest).flatten());
    }
    let tree = builder.finish();

    let result = ConvertResult {
        layer_dir: PathBuf::new(),
        compression: stream_digests.compression,
        diff_id: stream_digests.diff_id,
        compressed_digest: stream_digests.compressed_digest,
        compressed_size: stream_digests.compressed_size,
        uncompressed_size: stream_digests.uncompressed_size,
        entries,
        inodes: tree.inodes.len() as u64,
        objects: store.stats,
        uids: uids.into_iter().collect(),
        gids: gids.into_iter().collect(),
        verity_digests: store.verity_digests(),
        blob_verity: None,
        toc_json,
        tar_split_zst,
        tar_split_gz: Default::default(),
        tar_split_size,
    };
    Ok((tree, result, records))
}

/// An eStargz stream's TOC against its digest, and against the layer read with it.
fn check_estargz(check: &EstargzCheck, toc: Option<&[u8]>, ours: &[u8], diff: &Path) -> Result<()> {
    let json = toc.ok_or_else(|| Error::format(format!("the eStargz layer has no {TOC_TAR_NAME}")))?;
    if let Some(want) = &check.toc_digest {
        check_toc_digest(json, want)?;
    }
    let theirs = Toc::parse(json).map_err(|e| e.context("eStargz TOC"))?;
    let ours = Toc::parse(ours)?;
    check_layer(&theirs, &ours, |digest| {
        let path = diff.join(crate::chunked::cache::object_path(digest)?);
        File::open(&path).map_err(|e| Error::io(format_args!("open {}", path.display()), e))
    })
}

/// Writes `composefs.blob` into `data_path`, created O_EXCL 0644 as c/storage does (§2.1),
/// then enables fs-verity on it per `policy`.
pub(crate) fn write_blob(tree: &Tree, data_path: &Path, policy: VerityPolicy) -> Result<[u8; 32]> {
    let blob_path = data_path.join("composefs.blob");
    let mut blob = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&blob_path)
        .map_err(|e| Error::io(format_args!("create {}", blob_path.display()), e))?;
    let digest = {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut blob);
        let digest = super::blob::write_blob(tree, &mut w)?;
        w.flush().map_err(|e| Error::io(format_args!("write {}", blob_path.display()), e))?;
        digest
    };
    // No fsync: like containers/storage and tar, durability is left to the caller (e.g. syncfs
    // before recording the layer); the rename only makes the layer visible when complete.
    drop(blob);
    let data_dir = File::open(data_path).map_err(|e| Error::io(format_args!("open {}", data_path.display()), e))?;
    // The digest is the same whether the kernel measures it or we did while writing.
    Verity::new(policy).apply(std::os::fd::AsFd::as_fd(&data_dir), "composefs.blob", &blob_path.display())?;
    Ok(digest)
}
