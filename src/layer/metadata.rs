//! What a layer directory made by this library keeps beside its blob, so that it describes itself
//! without containers/storage's layer store (SPEC §2.3 keeps the same data in `overlay-layers/`):
//! the blob's fs-verity digest (checked before mounting), the TOC and the tar-split (to export
//! the layer byte for byte), and the layers cache (to dedup against it).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Lowercase hex fs-verity digest of `composefs.blob`, newline-terminated.
pub const BLOB_DIGEST: &str = "composefs-data/composefs.blob.verity";
/// The layer's TOC JSON (`zstd-chunked-manifest`).
pub const TOC: &str = "composefs-data/toc.json";
/// The layer's tar-split, zstd-compressed NDJSON: as the zstd:chunked blob carries it, so a pull
/// keeps the blob's authenticated frame as it is, and a conversion compresses it at a fraction of
/// gzip's cost. containers/storage's gzip form (`<id>.tar-split.gz`) is made from it on request
/// ([`gzip_tar_split`]).
pub const TAR_SPLIT: &str = "composefs-data/tar-split.json.zst";
/// Where layers made by earlier versions keep the tar-split, gzip-compressed; still read.
pub const TAR_SPLIT_GZ: &str = "composefs-data/tar-split.json.gz";
/// The layers cache v3 of the layer (`chunked-manifest-cache`).
pub const CACHE: &str = "composefs-data/chunked-manifest-cache";
/// The file name containers/storage gives the `chunked-manifest-cache` big data of a layer in
/// `overlay-layers/<id>/` ("=" + base64 of the key, SPEC §2.3).
pub const CSTORAGE_CACHE_KEY_FILE: &str = "=Y2h1bmtlZC1tYW5pZmVzdC1jYWNoZQ==";

/// Writes `data` to `dir/name` (a new file, mode 0644).
pub(crate) fn write_new(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&p)
        .map_err(|e| Error::io(format_args!("create {}", p.display()), e))?;
    f.write_all(data).map_err(|e| Error::io(format_args!("write {}", p.display()), e))
}

/// Decompresses a tar-split record by its magic bytes: zstd, or gzip (containers/storage's form,
/// and this library's before the zstd record).
pub fn tar_split_reader<'a, R: BufRead + Send + 'a>(mut r: R) -> Result<Box<dyn BufRead + Send + 'a>> {
    let head = r.fill_buf().map_err(|e| Error::io("read tar-split", e))?;
    if head.starts_with(&ZSTD_MAGIC) {
        let dec = zstd::stream::read::Decoder::with_buffer(r).map_err(|e| Error::io("decompress tar-split", e))?;
        Ok(Box::new(BufReader::with_capacity(256 << 10, dec)))
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(256 << 10, flate2::bufread::MultiGzDecoder::new(r))))
    } else {
        Err(Error::format("tar-split is neither zstd nor gzip data"))
    }
}

/// Opens the tar-split of a layer this library made (either record), decompressed; `None` when
/// it has none. Errors name the file.
pub fn open_tar_split(layer_dir: &Path) -> Result<Option<(PathBuf, Box<dyn BufRead + Send>)>> {
    for name in [TAR_SPLIT, TAR_SPLIT_GZ] {
        let p = layer_dir.join(name);
        match File::open(&p) {
            Ok(f) => {
                let r = tar_split_reader(BufReader::with_capacity(64 << 10, f))
                    .map_err(|e| e.context(p.display().to_string()))?;
                return Ok(Some((p, r)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format_args!("open {}", p.display()), e)),
        }
    }
    Ok(None)
}

/// containers/storage's form of a tar-split (`<id>.tar-split.gz`): the NDJSON `ndjson` yields,
/// gzip-compressed.
pub fn gzip_tar_split(ndjson: impl Read) -> Result<Vec<u8>> {
    let mut tee = GzipTee::new(ndjson);
    std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| Error::io("read tar-split", e))?;
    tee.finish()
}

/// A reader that gzips every byte it yields (containers/storage's tar-split form), for callers
/// that read the NDJSON anyway.
pub struct GzipTee<R> {
    inner: R,
    gz: flate2::write::GzEncoder<Vec<u8>>,
}

impl<R: Read> GzipTee<R> {
    pub fn new(inner: R) -> GzipTee<R> {
        GzipTee { inner, gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()) }
    }

    /// The gzip stream of everything read so far.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.gz.finish().map_err(|e| Error::io("recompress tar-split as gzip", e))
    }
}

impl<R: Read> Read for GzipTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(&mut self.gz, &buf[..n])?;
        Ok(n)
    }
}

/// Reads `layer_dir/name`, naming what is missing when it is not there.
pub fn read(layer_dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = layer_dir.join(name);
    std::fs::read(&p).map_err(|e| {
        Error::io(format_args!("read {} (a layer converted or pulled by composefs-storage has it)", p.display()), e)
    })
}

/// Writes the self-description of a layer being staged in `staging`.
pub(crate) fn write_all(
    staging: &Path,
    blob_digest: &[u8; 32],
    toc_json: &[u8],
    toc: Option<&crate::chunked::Toc>,
    tar_split_zst: Option<&[u8]>,
) -> Result<()> {
    write_blob_digest(staging, blob_digest)?;
    write_records(staging, toc_json, toc, tar_split_zst)
}

/// Writes the blob's fs-verity digest (known only once the blob is written).
pub(crate) fn write_blob_digest(staging: &Path, blob_digest: &[u8; 32]) -> Result<()> {
    write_new(staging, BLOB_DIGEST, format!("{}\n", crate::source::hex(blob_digest)).as_bytes())
}

/// Writes the TOC, the tar-split and the layers cache built from the TOC (all independent of
/// the blob, so they can be written while it is). `toc` is `toc_json` parsed, when the caller
/// has it (a pull does); else it is parsed here.
pub(crate) fn write_records(
    staging: &Path,
    toc_json: &[u8],
    toc: Option<&crate::chunked::Toc>,
    tar_split_zst: Option<&[u8]>,
) -> Result<()> {
    write_new(staging, TOC, toc_json)?;
    if let Some(ts) = tar_split_zst {
        write_new(staging, TAR_SPLIT, ts)?;
    }
    // The dedup index is best effort: a TOC that cannot be indexed still makes a valid layer.
    let parsed;
    let toc = match toc {
        Some(t) => Some(t),
        None => {
            parsed = crate::chunked::Toc::parse(toc_json).ok();
            parsed.as_ref()
        }
    };
    if let Some(cache) = toc.and_then(|t| crate::chunked::cache::LayerCache::build(t, true).ok()) {
        write_new(staging, CACHE, &cache.to_bytes())?;
    }
    Ok(())
}

/// [`write_records`] on a thread of its own; dropping it waits for the thread, so nothing writes
/// into a staging directory that an error path is about to remove.
pub(crate) struct RecordsWriter(Option<std::thread::JoinHandle<Result<()>>>);

impl RecordsWriter {
    pub(crate) fn spawn(staging: &Path, toc_json: Vec<u8>, tar_split_zst: Vec<u8>) -> Result<RecordsWriter> {
        let staging = staging.to_path_buf();
        let h = std::thread::Builder::new()
            .name("cfs-metadata".into())
            .spawn(move || write_records(&staging, &toc_json, None, Some(&tar_split_zst)))
            .map_err(|e| Error::io("spawn metadata writer thread", e))?;
        Ok(RecordsWriter(Some(h)))
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        match self.0.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::new(crate::ErrorKind::Internal, "metadata writer thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RecordsWriter {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}
