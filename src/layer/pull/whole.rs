//! An eStargz layer pulled without `insecure_allow_unpredictable_image_contents`: the blob has no
//! tar-split, so its DiffID can only come from all of its bytes (its tar headers share gzip
//! members with file data). As containers/storage does (`errFallbackCanConvert`), the whole blob
//! is fetched and converted, which checks its DiffID and its TOC file by file; objects that
//! source layers already hold are still reused rather than written.

use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::sync_channel;

use super::{BlobFetcher, PullOptions, PullResult};
use crate::chunked::ranges::ByteRange;
use crate::chunked::Manifest;
use crate::layer::convert::{convert, ConvertOptions, EstargzCheck, Progress, ProgressFn};
use crate::source::ChannelReader;
use crate::{Error, ErrorKind, Result};

/// Bytes per hand-off to the converting thread.
const PIECE: usize = 256 << 10;

/// Fetches the whole blob and converts it on another thread (the fetcher stays on this one).
/// `fetched` and `requests` are what reading the manifest cost.
pub(super) fn pull_whole(
    fetcher: &mut dyn BlobFetcher,
    layer_dir: &Path,
    options: &PullOptions,
    manifest: &Manifest,
    (fetched, requests): (u64, u64),
    mut progress: Option<ProgressFn<'_>>,
) -> Result<PullResult> {
    let size = fetcher.blob_size();
    let toc_digest = super::digest_bytes(&manifest.location.toc_digest, "eStargz TOC")?;
    let convert_options = ConvertOptions {
        source_layers: options.source_layers.clone(),
        index_dir: options.index_dir.clone(),
        hardlinks: options.hardlinks,
        verity: options.verity,
        oci_whiteouts: options.oci_whiteouts,
        write_metadata: options.write_metadata,
        // The TOC in the stream must be the one read (and authenticated) above.
        estargz: Some(EstargzCheck { toc_digest: Some(toc_digest) }),
        expected_diff_id: options.expected_diff_id,
        ..ConvertOptions::default()
    };
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(8);
    let input = Box::new(ChannelReader::new(rx));
    let r = std::thread::scope(|scope| {
        let converting = std::thread::Builder::new()
            .name("cfs-convert".into())
            .spawn_scoped(scope, || convert(input, layer_dir, &convert_options, None))
            .map_err(|e| Error::io("spawn conversion thread", e))?;
        let pumped = (|| -> Result<u64> {
            let mut reader = fetcher.fetch(&[ByteRange { offset: 0, length: size }])?;
            let mut done = 0u64;
            loop {
                let mut buf = vec![0u8; PIECE];
                let n = match reader.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io(format!("fetch the blob at offset {done}"), e)),
                };
                if n == 0 {
                    return Ok(done);
                }
                buf.truncate(n);
                done += n as u64;
                if tx.send(Ok(buf)).is_err() {
                    // The conversion stopped: its error says why.
                    return Ok(done);
                }
                if let Some(cb) = progress.as_mut() {
                    if !cb(Progress { bytes: done, entries: 0 }) {
                        return Err(Error::new(ErrorKind::Cancelled, "pull cancelled"));
                    }
                }
            }
        })();
        if let Err(e) = &pumped {
            // The conversion fails on this and removes what it wrote.
            let _ = tx.send(Err(io::Error::other(e.to_string())));
        }
        drop(tx);
        let converted =
            converting.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "conversion thread panicked")));
        // A failed fetch is the cause of the conversion's failure; otherwise the conversion's error
        // (a bad layer) is the one to report.
        pumped.and(converted)
    })?;
    Ok(PullResult {
        layer_dir: r.layer_dir,
        toc_digest: manifest.location.toc_digest.clone(),
        toc_authenticated: manifest.location.authenticated,
        diff_id: Some(r.diff_id),
        blob_size: size,
        blob_bytes_fetched: fetched + r.compressed_size,
        chunk_bytes_reused: 0,
        requests: requests + 1,
        ranges: 1,
        entries: r.entries,
        objects: r.objects,
        uids: r.uids,
        gids: r.gids,
        verity_digests: r.verity_digests,
        blob_verity: r.blob_verity,
        toc_json: manifest.toc_json.clone(),
    })
}
