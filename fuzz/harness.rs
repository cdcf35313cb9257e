//! The fuzz harness: one function per target, each taking the raw fuzzer input. The targets in
//! fuzz_targets/ call these, and tests/fuzz_regressions.rs includes this file (`#[path]`) to run
//! every recorded crash input through exactly the same code in `cargo test`.
//!
//! A harness never panics on bad input itself: a panic comes from the library under test, or from
//! an `expect`/`assert` that states an invariant of data the library wrote itself.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use composefs_storage::chunked::cache::{binary_digest, LayerCache, DIGEST_LEN, TAG_LEN};
use composefs_storage::chunked::ranges::ByteRange;
use composefs_storage::chunked::tarsplit::{self, TarSplitReader};
use composefs_storage::chunked::{self, footer, read_manifest, ReadOptions, Toc};
use composefs_storage::config::{self, check_host, Host, LoadOptions, KEYS};
use composefs_storage::image::{self, dump, WriteOptions};
use composefs_storage::layer::index::{CacheIdentity, MergedIndex};
use composefs_storage::layer::pull::{self, BlobFetcher, PullOptions};
use composefs_storage::layer::{self, ConvertOptions, VerityPolicy};
use composefs_storage::source::tar::{TarLimits, TarReader};
use composefs_storage::source::{self, LayerStream};
use sha2::{Digest, Sha256};

/// `chunked::footer::parse` on the last bytes of a blob.
pub fn chunked_footer(data: &[u8]) {
    let _ = footer::parse(data);
}

/// `layer::index::MergedIndex::parse` of an object index file, its layers' cache paths, then
/// lookups of digests taken from the input (every 32 bytes after the header) and of fixed ones:
/// never a panic or an out-of-range layer number.
pub fn layer_index(data: &[u8]) {
    let Some(ix) = MergedIndex::parse(data) else { return };
    // Every layer has its cache path (the path table was checked whole at parse).
    for n in 0..ix.layers().len() {
        assert!(ix.layer_path(n).is_some(), "layer {n} without a path");
    }
    let mut layers = Vec::new();
    for d in data.chunks_exact(32).take(512).chain([&[0u8; 32][..], &[0xffu8; 32][..], &[0x80u8; 4][..], &[][..]]) {
        layers.clear();
        ix.lookup(d, &mut layers);
        assert!(layers.len() <= data.len() / 4, "more hits than entries");
    }
}

/// `chunked::Toc::parse` on TOC JSON, then what reads a parsed TOC: mtimes and the composefs dump
/// (`chunked::dump::generate_dump`).
pub fn chunked_toc(data: &[u8]) {
    let Ok(toc) = Toc::parse(data) else { return };
    for e in &toc.entries {
        let _ = e.mtime();
    }
    let _ = chunked::dump::generate_dump(&toc, &HashMap::new(), &mut std::io::sink());
}

/// `chunked::tarsplit`: the NDJSON reader, the tar size, and re-assembly with made-up contents.
pub fn chunked_tarsplit(data: &[u8]) {
    let mut r = TarSplitReader::new(data);
    while let Ok(Some(_)) = r.next_entry() {}
    let _ = tarsplit::tar_size(data);
    // Contents are zeros of the claimed size, capped so that a huge size is an error, not a long run.
    let _ = tarsplit::reassemble(
        data,
        |_name, size| {
            if size > 1 << 20 {
                return Err(composefs_storage::Error::format("content too big for the fuzzer"));
            }
            Ok(Cursor::new(vec![0u8; size as usize]))
        },
        &mut std::io::sink(),
    );
}

/// `chunked::read_manifest` over a blob in memory. The first byte picks the mode. Even: the rest is
/// the blob (found by its footer). Odd: the rest is `annotations NUL blob`, the annotations as
/// `key=value` lines (easier to mutate than JSON).
pub fn chunked_manifest(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let opts = ReadOptions::default();
    if mode & 1 == 0 {
        let _ = read_manifest(rest, None, &opts);
        return;
    }
    let Some(nul) = rest.iter().position(|&b| b == 0) else { return };
    let Ok(text) = std::str::from_utf8(&rest[..nul]) else { return };
    let annotations: BTreeMap<String, String> =
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let _ = read_manifest(&rest[nul + 1..], Some(&annotations), &opts);
}

/// `chunked::cache`: the layers cache file reader, and the cache built from a TOC. The first byte
/// picks the mode. Even: the rest is a cache file; it is parsed, every tag in its table looked up
/// (so the location records get read), then written back and re-parsed. Odd: the rest is TOC JSON;
/// a cache is built from it (flat when bit 1 is set), serialized, parsed back, and every digest of
/// the TOC looked up.
pub fn chunked_cache(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else { return };
    if mode & 1 == 0 {
        cache_from_file(data);
    } else {
        cache_from_toc(data, mode & 2 != 0);
    }
}

fn cache_from_file(data: &[u8]) {
    let Ok(Some(cache)) = LayerCache::parse(data) else { return };
    let _ = cache.len();
    // Layout: 4 × u64, u32 k, n_words × u64, 3 × u64, tags (see the cache module docs).
    let n_words = data.get(24..32).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes) as usize;
    let tags = data.get(32 + 4 + n_words * 8 + 24..).unwrap_or_default();
    for tag in tags.chunks_exact(TAG_LEN).take(cache.len().min(256)) {
        if let Ok(d) = <[u8; DIGEST_LEN]>::try_from(&tag[..DIGEST_LEN]) {
            let _ = cache.lookup(&d.into());
        }
    }
    let _ = cache.lookup(&[0u8; DIGEST_LEN].into());
    // What the object index is built from, and the index built from it.
    let digests = cache.object_digests();
    assert!(digests.len() <= cache.len(), "object digests are a subset of the tags");
    if let Ok(ix) = MergedIndex::build(&[(&cache, CacheIdentity([0; 5]), std::path::Path::new("/cache"))]) {
        for d in digests.iter().take(256) {
            let mut layers = Vec::new();
            ix.lookup(d, &mut layers);
            assert_eq!(layers, vec![0], "an index finds every digest it was built from");
        }
    }
    let _ = LayerCache::parse(&cache.to_bytes());
}

fn cache_from_toc(json: &[u8], flat: bool) {
    let Ok(toc) = Toc::parse(json) else { return };
    let Ok(cache) = LayerCache::build(&toc, flat) else { return };
    let parsed = LayerCache::parse(&cache.to_bytes()).expect("a cache we wrote parses").expect("current version");
    assert_eq!(parsed.len(), cache.len());
    for e in toc.entries.iter().take(256) {
        for d in [&e.digest, &e.chunk_digest] {
            if let Ok(d) = binary_digest(d) {
                let _ = parsed.lookup(&d.into()).expect("a cache we wrote has valid location records");
            }
        }
    }
}

/// `config`: a containers-storage.conf as the only system file, loaded with `STORAGE_OPTS` and
/// `STORAGE_DRIVER` from the input, then the getters and checks over the result; and the same file
/// through `config::load_file`. Input: `storage.conf [NUL STORAGE_OPTS [NUL STORAGE_DRIVER]]`.
pub fn config(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let conf = parts.next().unwrap_or_default();
    let (storage_opts, driver) = (parts.next(), parts.next());
    let Ok(root) = tempfile::tempdir() else { return };
    let dir = root.path().join("etc/containers");
    let file = dir.join("storage.conf");
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(&file, conf).is_err() {
        return;
    }
    let mut opts = LoadOptions::isolated(root.path());
    if let Some(v) = storage_opts {
        opts = opts.with_env(config::ENV_STORAGE_OPTS, std::ffi::OsStr::from_bytes(v));
    }
    if let Some(v) = driver {
        opts = opts.with_env(config::ENV_STORAGE_DRIVER, std::ffi::OsStr::from_bytes(v));
    }
    for uid in [0, 1000] {
        let Ok(cfg) = config::load(&opts.clone().with_uid(uid)) else { continue };
        for key in KEYS {
            let _ = cfg.get_string(key);
            let _ = cfg.get_bool(key);
        }
        let _ = cfg.to_json();
        let _ = config::findings_to_json(&cfg.check());
        let _ = check_host(&cfg, &Host::default());
    }
    let _ = config::load_file(&file);
}

/// `image::dump::parse`: a composefs dump (strict when bit 0 of the first byte is set). A tree it
/// accepts must survive the writers: its dump written back parses again, and its EROFS image
/// (when the writer takes it) reads back.
pub fn image_dump(data: &[u8]) {
    let Some((&mode, text)) = data.split_first() else { return };
    let strict = mode & 1 != 0;
    let Ok(tree) = dump::parse(text, strict) else { return };
    let mut out = Vec::new();
    dump::write(&tree, &mut out).expect("write the dump of a parsed tree");
    // Escaping can make a line longer than the original: past 64 KiB, mkcomposefs (and so the
    // parser) refuses xattrs on it (SPEC §4.1). Any other error is a finding.
    match dump::parse(out.as_slice(), false) {
        Err(e) if e.kind() == composefs_storage::ErrorKind::LimitExceeded => {}
        r => drop(r.expect("a dump we wrote parses")),
    }
    let mut img = Vec::new();
    if image::write_image(&tree, &WriteOptions::default(), &mut img).is_ok() {
        image::read_image(&img).expect("an image we wrote reads back");
    }
}

/// `image::read_image`: an EROFS composefs image; what it reads is written as a dump and as an
/// image again.
pub fn image_erofs(data: &[u8]) {
    let Ok(tree) = image::read_image(data) else { return };
    let _ = dump::write(&tree, &mut std::io::sink());
    let _ = image::write_image(&tree, &WriteOptions::default(), &mut std::io::sink());
}

/// `source::tar::TarReader` over an uncompressed tar stream: every header, its payload (through
/// `read_data` when bit 0 of the first byte is set, else `data_chunk`), the raw header bytes, and
/// the trailer.
pub fn source_tar(data: &[u8]) {
    let Some((&mode, tar)) = data.split_first() else { return };
    let mut r = TarReader::new(tar, TarLimits::default());
    loop {
        match r.next_header() {
            Ok(Some(h)) => {
                let _ = (h.display_name(), h.payload_len());
                let _ = r.take_raw();
                if mode & 1 != 0 {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = r.read_data(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                } else {
                    loop {
                        let n = match r.data_chunk() {
                            Ok(c) if !c.is_empty() => c.len(),
                            _ => break,
                        };
                        r.consume_data(n);
                    }
                }
            }
            Ok(None) => {
                let _ = r.read_trailer(4096, |_| Ok(()));
                return;
            }
            Err(_) => return,
        }
    }
}

/// Most uncompressed bytes `source_stream` reads: a tiny zstd or gzip bomb must not turn one
/// input into minutes of decompression (bounded time per input is the point; a real consumer
/// is bounded by the layer's size).
const STREAM_OUTPUT_CAP: u64 = 16 << 20;

/// `source::detect` and `source::LayerStream`: compression detection and decompression of a
/// layer blob on the helper thread, read to the end (or [`STREAM_OUTPUT_CAP`]) and finished.
pub fn source_stream(data: &[u8]) {
    let _ = source::detect(data);
    let Ok(mut stream) = LayerStream::new(Box::new(Cursor::new(data.to_vec()))) else { return };
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                let _ = stream.finish();
                return;
            }
            Ok(n) => {
                total += n as u64;
                if total > STREAM_OUTPUT_CAP {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// `layer::convert` of an uncompressed tar into a fresh layer directory. Compressed inputs are
/// skipped (`source_stream` covers decompression): a few bytes of zstd can declare gigabytes of
/// zeros, which would be written to disk. Checks the promise of `convert`: on error nothing is
/// left next to the layer dir, on success only the layer dir.
pub fn layer_convert(data: &[u8]) {
    if !matches!(source::detect(data), Ok(source::Compression::None)) {
        return;
    }
    let Ok(root) = tempfile::tempdir() else { return };
    let dir = root.path().join("layer");
    let opts = ConvertOptions { verity: VerityPolicy::Off, ..ConvertOptions::default() };
    let result = layer::convert(Box::new(Cursor::new(data.to_vec())), &dir, &opts, None);
    debug("layer_convert", &result);
    let left = entries(root.path());
    match result {
        Ok(_) => assert_eq!(left, ["layer"], "a successful conversion leaves only the layer dir"),
        Err(e) => assert!(left.is_empty(), "a failed conversion ({e}) left {left:?} behind"),
    }
}

/// With `$FUZZ_HARNESS_DEBUG` set, prints what an operation returned (for triage and for checking
/// that seeds take the success path).
fn debug<T: std::fmt::Debug>(what: &str, result: &composefs_storage::Result<T>) {
    if std::env::var_os("FUZZ_HARNESS_DEBUG").is_some() {
        match result {
            Ok(_) => eprintln!("{what}: ok"),
            Err(e) => eprintln!("{what}: {e}"),
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// `layer::pull::pull`: a partial pull of a zstd:chunked blob the harness assembles, so that the
/// fuzzer mutates the plain TOC and tar-split rather than their zstd frames. Input:
/// `flags TOC-JSON NUL tar-split-NDJSON NUL file-data`. The blob is the file data, then the
/// compressed TOC and tar-split in skippable frames, then the footer; `@TARSPLIT@` in the TOC
/// becomes the tar-split's digest. Flag bit 0: pass annotations (authenticated TOC) instead of
/// finding it by the footer; bit 1: `insecure_skip_diff_id`. Same promise as `layer_convert`.
pub fn layer_pull(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let (Some(toc), Some(tar_split), Some(file_data)) = (parts.next(), parts.next(), parts.next()) else { return };
    let (Ok(ts_z), Ok(toc_text)) = (zstd::encode_all(tar_split, 1), std::str::from_utf8(toc)) else { return };
    let ts_digest = format!("sha256:{:x}", Sha256::digest(&ts_z));
    let Ok(toc_z) = zstd::encode_all(toc_text.replace("@TARSPLIT@", &ts_digest).as_bytes(), 1) else { return };
    let toc_len = toc_text.replace("@TARSPLIT@", &ts_digest).len() as u64;

    let mut blob = file_data.to_vec();
    let frame = |blob: &mut Vec<u8>, payload: &[u8]| -> u64 {
        blob.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18]);
        blob.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        blob.extend_from_slice(payload);
        (blob.len() - payload.len()) as u64
    };
    let toc_off = frame(&mut blob, &toc_z);
    let ts_off = frame(&mut blob, &ts_z);
    let mut footer = Vec::new();
    for v in [toc_off, toc_z.len() as u64, toc_len, 1, ts_off, ts_z.len() as u64, tar_split.len() as u64] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(b"GNUlInUx");
    frame(&mut blob, &footer);

    let annotations = (flags & 1 != 0).then(|| {
        BTreeMap::from([
            (
                "io.github.containers.zstd-chunked.manifest-checksum".to_string(),
                format!("sha256:{:x}", Sha256::digest(&toc_z)),
            ),
            (
                "io.github.containers.zstd-chunked.manifest-position".to_string(),
                format!("{toc_off}:{}:{toc_len}:1", toc_z.len()),
            ),
            (
                "io.github.containers.zstd-chunked.tarsplit-position".to_string(),
                format!("{ts_off}:{}:{}", ts_z.len(), tar_split.len()),
            ),
        ])
    });
    let opts = PullOptions {
        annotations,
        verity: VerityPolicy::Off,
        insecure_skip_diff_id: flags & 2 != 0,
        ..PullOptions::default()
    };
    let Ok(root) = tempfile::tempdir() else { return };
    let result = pull::pull(&mut MemoryFetcher(blob), &root.path().join("layer"), &opts, None);
    debug("layer_pull", &result);
    let left = entries(root.path());
    match result {
        Ok(_) => assert_eq!(left, ["layer"], "a successful pull leaves only the layer dir"),
        Err(e) => assert!(left.is_empty(), "a failed pull ({e}) left {left:?} behind"),
    }
}

/// A blob in memory, served range by range.
struct MemoryFetcher(Vec<u8>);

impl BlobFetcher for MemoryFetcher {
    fn blob_size(&self) -> u64 {
        self.0.len() as u64
    }

    fn fetch<'a>(&'a mut self, ranges: &[ByteRange]) -> composefs_storage::Result<Box<dyn Read + 'a>> {
        let mut out = Vec::new();
        for r in ranges {
            let bytes = usize::try_from(r.offset)
                .ok()
                .and_then(|o| self.0.get(o..o.checked_add(usize::try_from(r.length).ok()?)?))
                .ok_or_else(|| composefs_storage::Error::format("range past the end of the blob"))?;
            out.extend_from_slice(bytes);
        }
        Ok(Box::new(Cursor::new(out)))
    }
}
