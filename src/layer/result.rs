//! What a conversion produced: digests, sizes, counts, owners, fs-verity digests, and the TOC
//! and tar-split containers/storage stores for a converted layer (SPEC §2.3).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::objects::ObjectStats;
use crate::source::{hex, Compression};

/// The result of [`crate::layer::convert()`].
#[derive(Debug, Clone)]
pub struct ConvertResult {
    /// The finished layer directory.
    pub layer_dir: PathBuf,
    pub compression: Compression,
    /// sha256 of the uncompressed tar (`UncompressedDigest`).
    pub diff_id: [u8; 32],
    /// sha256 and size of the blob as read (`CompressedDigest`).
    pub compressed_digest: [u8; 32],
    pub compressed_size: u64,
    /// Size of the uncompressed tar (`UncompressedSize`).
    pub uncompressed_size: u64,
    /// Tar entries read (extension headers not counted).
    pub entries: u64,
    /// Inodes in the image tree (including the root and synthesised parents).
    pub inodes: u64,
    pub objects: ObjectStats,
    /// Distinct owners seen (`UIDs`, `GIDs`).
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// fs-verity digests by object path (`ab/cdef…`), for objects where fs-verity is enabled.
    pub verity_digests: BTreeMap<String, [u8; 32]>,
    /// fs-verity digest of `composefs.blob` (computed while writing it: known even where the
    /// filesystem has no fs-verity). Always set by a successful conversion.
    pub blob_verity: Option<[u8; 32]>,
    /// TOC JSON (the `zstd-chunked-manifest` big data).
    pub toc_json: Vec<u8>,
    /// tar-split NDJSON, zstd-compressed (as the layer keeps it; see [`Self::tar_split_gz`] for
    /// containers/storage's gzip form).
    pub tar_split_zst: Vec<u8>,
    /// The gzip form, made on first request: most callers never ask, and gzip costs several
    /// times what zstd does.
    pub(crate) tar_split_gz: std::sync::OnceLock<Vec<u8>>,
    /// Size of the uncompressed tar-split NDJSON.
    pub tar_split_size: u64,
}

fn sha(d: &[u8; 32]) -> String {
    format!("sha256:{}", hex(d))
}

impl ConvertResult {
    /// tar-split NDJSON, gzip-compressed, as containers/storage stores it for a layer
    /// (`<id>.tar-split.gz`). Made from [`Self::tar_split_zst`] on the first call, then kept.
    pub fn tar_split_gz(&self) -> crate::Result<&[u8]> {
        if let Some(gz) = self.tar_split_gz.get() {
            return Ok(gz);
        }
        let ndjson = super::metadata::tar_split_reader(&self.tar_split_zst[..])?;
        let gz = super::metadata::gzip_tar_split(ndjson)?;
        Ok(self.tar_split_gz.get_or_init(|| gz))
    }

    /// Writes the tar-split NDJSON, uncompressed, to `out` (containers/storage keeps it in an
    /// unnamed file until it stores the layer).
    pub fn write_tar_split(&self, out: &mut dyn std::io::Write) -> crate::Result<u64> {
        let mut ndjson = super::metadata::tar_split_reader(&self.tar_split_zst[..])?;
        let n = std::io::copy(&mut ndjson, out).map_err(|e| crate::Error::io("write the tar-split", e))?;
        out.flush().map_err(|e| crate::Error::io("write the tar-split", e))?;
        Ok(n)
    }

    /// A JSON summary (without the TOC and tar-split bodies, which are described by digest and size).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "layerDir": self.layer_dir.to_string_lossy(),
            "compression": self.compression.as_str(),
            "diffID": sha(&self.diff_id),
            "compressedDigest": sha(&self.compressed_digest),
            "compressedSize": self.compressed_size,
            "uncompressedSize": self.uncompressed_size,
            "entries": self.entries,
            "inodes": self.inodes,
            "objects": self.objects.objects,
            "objectsReused": self.objects.objects_reused,
            "bytesWritten": self.objects.bytes_written,
            "bytesReused": self.objects.bytes_reused,
            "dedupHits": self.objects.dedup_hits,
            "uids": self.uids,
            "gids": self.gids,
            "fsVerityDigests": self.verity_digests.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(hex(v)))).collect::<serde_json::Map<_, _>>(),
            "blobFsVerity": self.blob_verity.map(|d| hex(&d)),
            "tocDigest": sha(&Sha256::digest(&self.toc_json).into()),
            "tocSize": self.toc_json.len(),
            "tarSplitSize": self.tar_split_size,
            "tarSplitZstdSize": self.tar_split_zst.len(),
        })
    }
}
