//! Publishing a layer this library made into a containers/storage layer store, so that
//! containers/storage uses it as it uses the layers it pulls itself: as a dedup source of its
//! `pkg/chunked` differ (through the layers cache, SPEC §7.1) and for its layer diff getter
//! (`podman save`, push: the tar re-assembled from tar-split, §3.6.6).
//!
//! A layer directory keeps its self-description in `composefs-data/` ([`super::metadata`]);
//! containers/storage keeps the same data in its layer store `<graphroot>/overlay-layers/`
//! (SPEC §2.1, §2.3), which is what this module writes:
//!
//! | file in `overlay-layers/` | big-data key | content |
//! |---|---|---|
//! | `<id>/=enN0ZC1jaHVua2VkLW1hbmlmZXN0` | `zstd-chunked-manifest` | the TOC JSON, byte for byte |
//! | `<id>/=enN0ZC1jaHVua2VkLWxheWVyLWRhdGE=` | `zstd-chunked-layer-data` | `{"format":1}` (flat layout) |
//! | `<id>/=Y2h1bmtlZC1tYW5pZmVzdC1jYWNoZQ==` | `chunked-manifest-cache` | the layers cache v3 |
//! | `<id>.tar-split.gz` | — | the tar-split NDJSON, gzip |
//!
//! What containers/storage does, and so what this does (c/storage `layers.go`, `pkg/lockfile`,
//! `pkg/chunked/cache_linux.go`):
//! - Big data lives in `<layer store>/<id>/` (made 0700) under the name [`big_data_file_name`];
//!   files are 0600, written to a temporary file in the same directory, synced, then renamed
//!   (`ioutils.NewAtomicFileWriter`). The tar-split is `<layer store>/<id>.tar-split.gz`, 0600,
//!   read back with a gzip reader, so any valid gzip of the NDJSON serves (ours is flate2 at
//!   level 1 where c/storage uses pgzip at BestSpeed: other bytes, same content).
//! - `zstd-chunked-layer-data` is `json.Marshal(chunkedLayerData{Format: 1})`: exactly
//!   `{"format":1}`, no newline. It tells c/storage that the cache names objects (`ab/cdef…`),
//!   not tar paths, if it ever regenerates the cache from the TOC.
//! - Writers of a layer's big data hold the layer store lock for writing: an fcntl (POSIX record)
//!   write lock on the whole of `<layer store>/layers.lock`, blocking (`F_SETLKW`). So does this,
//!   unless told that the caller already holds it ([`PublishOptions::lock_layer_store`]). With
//!   `imagestore` set, containers/storage also locks `<imagestore>/overlay-layers/layers.lock`,
//!   always after the graph root's, and keeps big data under the graph root still: holding the
//!   graph root's lock excludes every reader and writer of the store. The last-writer token in
//!   the lock file is not changed: it tells other processes to reload `layers.json`, which this
//!   does not change (big data is read from its file on each use).
//! - The cache published is the layer's own (SPEC §7.1 format). For a file of several chunks it
//!   indexes every chunk where containers/storage's flat layers index the first only: extra
//!   valid tags, which containers/storage reads like its own.
//!
//! What this never does: edit `layers.json`. containers/storage owns it (it rewrites it whole,
//! under the same lock, and records a last-writer token in `layers.lock` so other processes
//! reload). The caller records the layer there through containers/storage itself, with the
//! fields [`PublishedMetadata::layers_json`] lists (`big-data-names`, `diff-size`); until a layer
//! with this id is in `layers.json`, containers/storage ignores these files, and its
//! `GarbageCollect` removes them. The TOC digest (`toc-digest`) and the DiffID (`diff-digest`)
//! are not in the layer directory: the caller has them from the pull or conversion result.
//!
//! Each file is written completely or not at all; a file already there with the same content is
//! accepted (publishing twice is a no-op; for the tar-split, the same NDJSON however it is
//! gzip-compressed), one with other content is an `AlreadyExists` error and is left as it is. All files are checked before any is written, and files this call wrote are
//! removed again if a later one fails.

use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::metadata;
use crate::chunked::cache::LayerCache;
use crate::chunked::tarsplit::tar_size;
use crate::chunked::Toc;
use crate::{Error, ErrorKind, Result};

/// The layer store directory under the graph root (SPEC §2.1).
pub const LAYER_STORE_DIR: &str = "overlay-layers";
/// The layer store lock file, in [`LAYER_STORE_DIR`].
pub const LAYER_STORE_LOCK: &str = "layers.lock";
/// Suffix of a layer's tar-split file in the layer store (`<id>.tar-split.gz`).
pub const TAR_SPLIT_SUFFIX: &str = ".tar-split.gz";
/// Big-data key of the TOC JSON.
pub const KEY_TOC: &str = "zstd-chunked-manifest";
/// Big-data key of the differ output format.
pub const KEY_LAYER_DATA: &str = "zstd-chunked-layer-data";
/// Big-data key of the layers cache.
pub const KEY_CACHE: &str = "chunked-manifest-cache";
/// The `zstd-chunked-layer-data` of a flat (composefs) layer: `DifferOutputFormatFlat` = 1.
pub const LAYER_DATA_FLAT: &[u8] = br#"{"format":1}"#;

/// The longest layer id accepted: `<id>.tar-split.gz` must fit in a file name (255 bytes).
const MAX_ID_LEN: usize = 255 - TAR_SPLIT_SUFFIX.len();

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Take containers/storage's layer store lock while writing (default). Set to false only
    /// when the caller already holds it for writing: an fcntl lock belongs to the process, so a
    /// process that holds it through containers/storage would get it again at once, and closing
    /// our descriptor of `layers.lock` would release the caller's lock too.
    pub lock_layer_store: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions { lock_layer_store: true }
    }
}

/// One file in the layer store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedFile {
    /// The big-data key, or `None` for the tar-split.
    pub key: Option<&'static str>,
    /// Where it is (in JSON: lossy UTF-8, as paths are bytes).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// Whether this call wrote it (false: identical content was already there).
    pub written: bool,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What [`publish_layer_metadata`] wrote, and what the caller must record in `layers.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedMetadata {
    /// The layer id.
    pub layer_id: String,
    /// The big data, in the order written.
    pub big_data: Vec<PublishedFile>,
    /// The tar-split, when the layer has one (a pull of a legacy zstd:chunked blob has none;
    /// containers/storage then exports the layer from its mounted tree instead).
    pub tar_split: Option<PublishedFile>,
    /// The size of the layer's tar, from its tar-split (`tarSizeFromTarSplit`), when it has one.
    pub diff_size: Option<u64>,
}

impl PublishedMetadata {
    /// The big-data keys, for `big-data-names` in the layer's `layers.json` record.
    pub fn big_data_names(&self) -> Vec<&'static str> {
        self.big_data.iter().filter_map(|f| f.key).collect()
    }

    /// The `layers.json` fields the caller records (through containers/storage): a JSON object
    /// with `big-data-names` and, when known, `diff-size`.
    pub fn layers_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("big-data-names".into(), serde_json::json!(self.big_data_names()));
        if let Some(n) = self.diff_size {
            m.insert("diff-size".into(), n.into());
        }
        serde_json::Value::Object(m)
    }

    /// The whole result as JSON (for the C API and the CLI).
    pub fn to_json(&self) -> String {
        // Cannot fail: every field serialises (paths lossily).
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("layersJson".into(), self.layers_json());
        }
        v.to_string()
    }
}

/// The file name containers/storage gives big data `key` (`makeBigDataBaseName`, SPEC §2.3): the
/// key itself when every character is in `[.0-9a-z]`, else `"="` + standard padded base64 of it.
pub fn big_data_file_name(key: &str) -> String {
    if key.bytes().all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase()) {
        key.to_string()
    } else {
        format!("={}", base64::engine::general_purpose::STANDARD.encode(key))
    }
}

/// Checks that `id` can name files in the layer store: not empty, not `.`/`..`, no `/` or NUL,
/// not hidden (temporary files start with `.`), short enough. containers/storage makes ids of 64
/// lowercase hex digits; callers may choose others, so others are accepted.
pub fn validate_layer_id(id: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid_argument(format!("layer id {id:?}: {why}")));
    if id.is_empty() {
        return bad("empty");
    }
    if id.starts_with('.') {
        return bad("starts with '.'");
    }
    if id.contains('/') || id.contains('\0') {
        return bad("contains '/' or NUL");
    }
    if id.len() > MAX_ID_LEN {
        return bad(&format!("longer than {MAX_ID_LEN} bytes"));
    }
    Ok(())
}

/// Writes the TOC, layer data, layers cache and tar-split of the layer directory `layer_dir`
/// (made by `convert` or `pull`) into the layer store of the containers/storage graph root
/// `graphroot`, for the layer `layer_id` (see the module documentation). Does not touch
/// `layers.json`.
pub fn publish_layer_metadata(
    layer_dir: &Path,
    graphroot: &Path,
    layer_id: &str,
    options: &PublishOptions,
) -> Result<PublishedMetadata> {
    validate_layer_id(layer_id)?;
    let plan = Plan::read(layer_dir)?;
    let graphroot_meta =
        std::fs::metadata(graphroot).map_err(|e| Error::io(format_args!("graph root {}", graphroot.display()), e))?;
    if !graphroot_meta.is_dir() {
        return Err(Error::invalid_argument(format!("graph root {} is not a directory", graphroot.display())));
    }
    let store = graphroot.join(LAYER_STORE_DIR);
    mkdir_0700(&store)?;

    // Threads of this process do not exclude each other through an fcntl lock.
    let _in_process = PUBLISH_MUTEX.lock().unwrap_or_else(|p| p.into_inner());
    let _lock = if options.lock_layer_store { Some(StoreLock::acquire(&store)?) } else { None };

    let data_dir = store.join(layer_id);
    // (key, path, bytes); the tar-split (key None) is gzip, where any gzip of the same NDJSON
    // is the same content (containers/storage writes its own with pgzip).
    let files: Vec<(Option<&'static str>, PathBuf, &[u8])> = {
        let mut v: Vec<(Option<&'static str>, PathBuf, &[u8])> = Vec::new();
        if let Some(ts) = &plan.tar_split_gz {
            v.push((None, store.join(format!("{layer_id}{TAR_SPLIT_SUFFIX}")), ts));
        }
        v.push((Some(KEY_LAYER_DATA), data_dir.join(big_data_file_name(KEY_LAYER_DATA)), LAYER_DATA_FLAT));
        v.push((Some(KEY_TOC), data_dir.join(big_data_file_name(KEY_TOC)), &plan.toc_json));
        v.push((Some(KEY_CACHE), data_dir.join(big_data_file_name(KEY_CACHE)), &plan.cache));
        v
    };

    // Check everything before writing anything: a conflict leaves the store as it was.
    let mut present = Vec::with_capacity(files.len());
    for (key, path, data) in &files {
        present.push(same_content_present(path, data, key.is_none())?);
    }

    let created_dir = mkdir_0700(&data_dir)?;
    let mut written: Vec<PathBuf> = Vec::new();
    let mut out = PublishedMetadata {
        layer_id: layer_id.to_string(),
        big_data: Vec::new(),
        tar_split: None,
        diff_size: plan.diff_size,
    };
    let result = (|| -> Result<()> {
        for ((key, path, data), present) in files.iter().zip(present) {
            let wrote = present.is_none() && write_atomic(path, data, key.is_none())?;
            if wrote {
                written.push(path.clone());
            }
            // Describe the file as it is on disk (an equivalent tar-split keeps its own bytes).
            let on_disk: &[u8] = present.as_deref().unwrap_or(data);
            let f = PublishedFile {
                key: *key,
                path: path.clone(),
                size: on_disk.len() as u64,
                digest: format!("sha256:{}", crate::source::hex(&Sha256::digest(on_disk))),
                written: wrote,
            };
            match key {
                Some(_) => out.big_data.push(f),
                None => out.tar_split = Some(f),
            }
        }
        // The renames are durable once their directories are.
        sync_dir(&data_dir)?;
        sync_dir(&store)
    })();
    if let Err(e) = result {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
        if created_dir {
            let _ = std::fs::remove_dir(&data_dir);
        }
        return Err(e);
    }
    Ok(out)
}

static PUBLISH_MUTEX: Mutex<()> = Mutex::new(());

/// The bytes to publish, read and checked from the layer directory.
struct Plan {
    toc_json: Vec<u8>,
    cache: Vec<u8>,
    tar_split_gz: Option<Vec<u8>>,
    diff_size: Option<u64>,
}

impl Plan {
    fn read(layer_dir: &Path) -> Result<Plan> {
        let blob = layer_dir.join("composefs-data/composefs.blob");
        std::fs::symlink_metadata(&blob).map_err(|e| {
            Error::io(format_args!("{} (a layer converted or pulled by composefs-storage has it)", blob.display()), e)
        })?;
        let toc_json = metadata::read(layer_dir, metadata::TOC)?;
        let at = |what: &str| format!("{}/{what}", layer_dir.display());
        // Never hand containers/storage a TOC or cache it would choke on.
        let toc = Toc::parse(&toc_json).map_err(|e| e.context(at(metadata::TOC)))?;
        let cache = match std::fs::read(layer_dir.join(metadata::CACHE)) {
            Ok(c) => match LayerCache::parse(&c) {
                Ok(Some(_)) => c,
                Ok(None) => {
                    return Err(Error::format(format!("{}: not a version 3 layers cache", at(metadata::CACHE))))
                }
                Err(e) => return Err(e.context(at(metadata::CACHE))),
            },
            // A layer whose TOC could not be indexed when it was made has no cache; build it
            // (an error here is the same one containers/storage would meet).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LayerCache::build(&toc, true)
                .map_err(|e| e.context(format!("build the layers cache of {}", at(metadata::TOC))))?
                .to_bytes(),
            Err(e) => return Err(Error::io(format_args!("read {}", at(metadata::CACHE)), e)),
        };
        // containers/storage keeps the tar-split gzip-compressed; the layer's record is zstd
        // (or gzip, from earlier versions): recompressed while its tar size is summed.
        let (tar_split_gz, diff_size) = match metadata::open_tar_split(layer_dir)? {
            Some((path, ndjson)) => {
                let mut tee = metadata::GzipTee::new(ndjson);
                let size = tar_size(BufReader::new(&mut tee)).map_err(|e| e.context(path.display()))?;
                (Some(tee.finish()?), Some(size))
            }
            None => (None, None),
        };
        Ok(Plan { toc_json, cache, tar_split_gz, diff_size })
    }
}

/// Creates `dir` with mode 0700 if missing; true if this call created it.
fn mkdir_0700(dir: &Path) -> Result<bool> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(Error::io(format_args!("mkdir {}", dir.display()), e)),
    }
}

/// What `path` already holds when that is `data` (with `gzip`: the same decompressed bytes);
/// `None` when absent; an `AlreadyExists` error when it holds something else.
fn same_content_present(path: &Path, data: &[u8], gzip: bool) -> Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format_args!("stat {}", path.display()), e)),
        Ok(m) if !m.is_file() => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a regular file", path.display()),
            ))
        }
        Ok(m) if !gzip && m.len() != data.len() as u64 => {}
        Ok(_) => {
            let have = std::fs::read(path).map_err(|e| Error::io(format_args!("read {}", path.display()), e))?;
            if have == data || (gzip && same_decompressed(&have, data)) {
                return Ok(Some(have));
            }
        }
    }
    Err(Error::new(
        ErrorKind::AlreadyExists,
        format!("{} exists with other content; it is never overwritten", path.display()),
    ))
}

/// Whether two gzip streams decompress to the same bytes (streamed; a corrupt one never matches).
fn same_decompressed(a: &[u8], b: &[u8]) -> bool {
    use std::io::Read;
    fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
    let (mut x, mut y) = (flate2::bufread::MultiGzDecoder::new(a), flate2::bufread::MultiGzDecoder::new(b));
    let (mut bx, mut by) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let (Ok(n), Ok(m)) = (fill(&mut x, &mut bx), fill(&mut y, &mut by)) else { return false };
        if bx[..n] != by[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Puts `data` at `path` (0600) complete or not at all: a synced temporary file in the same
/// directory, renamed without replacing. Returns false if a concurrent writer (one that does not
/// take the lock) put the same content there first.
fn write_atomic(path: &Path, data: &[u8], gzip: bool) -> Result<bool> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::invalid_argument(format!("{} has no parent directory", path.display())));
    };
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".cfs-tmp-{}-{n}-{}", std::process::id(), name.to_string_lossy()));
    let what = || format!("write {}", path.display());
    let r = (|| -> Result<bool> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(format_args!("create {}", tmp.display()), e))?;
        f.write_all(data).and_then(|()| f.sync_all()).map_err(|e| Error::io(what(), e))?;
        drop(f);
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, &tmp, CWD, path, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => same_content_present(path, data, gzip).map(|_| false),
            // A filesystem without RENAME_NOREPLACE: a hardlink never replaces either.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => match std::fs::hard_link(&tmp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    same_content_present(path, data, gzip).map(|_| false)
                }
                Err(e) => Err(Error::io(what(), e)),
            },
            Err(e) => Err(Error::io(what(), e.into())),
        }
    })();
    // After a rename this is gone already; after a hardlink or an error it is removed here.
    let _ = std::fs::remove_file(&tmp);
    r
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format_args!("sync {}", dir.display()), e))
}

/// containers/storage's layer store lock, held for writing (`pkg/lockfile`: an fcntl write lock
/// on the whole file, blocking). Dropping it closes the descriptor, which releases it.
struct StoreLock(#[allow(dead_code)] File);

impl StoreLock {
    fn acquire(store: &Path) -> Result<StoreLock> {
        let p = store.join(LAYER_STORE_LOCK);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&p)
            .map_err(|e| Error::io(format_args!("open {}", p.display()), e))?;
        loop {
            match rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(StoreLock(f)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io(format_args!("lock {}", p.display()), e.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_names_are_those_of_containers_storage() {
        // SPEC §2.3.
        assert_eq!(big_data_file_name(KEY_TOC), "=enN0ZC1jaHVua2VkLW1hbmlmZXN0");
        assert_eq!(big_data_file_name(KEY_LAYER_DATA), "=enN0ZC1jaHVua2VkLWxheWVyLWRhdGE=");
        assert_eq!(big_data_file_name(KEY_CACHE), "=Y2h1bmtlZC1tYW5pZmVzdC1jYWNoZQ==");
        assert_eq!(big_data_file_name(KEY_CACHE), metadata::CSTORAGE_CACHE_KEY_FILE);
        // Keys of [.0-9a-z] only are used as they are.
        assert_eq!(big_data_file_name("manifest.v2"), "manifest.v2");
        assert_eq!(big_data_file_name("Manifest"), "=TWFuaWZlc3Q=");
        assert_eq!(big_data_file_name("sha256:ab"), "=c2hhMjU2OmFi");
    }

    #[test]
    fn layer_ids_that_cannot_name_a_file_are_refused() {
        for id in ["", ".", "..", ".hidden", "a/b", "/abs", "a\0b", &"a".repeat(MAX_ID_LEN + 1)] {
            let e = validate_layer_id(id).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{id:?}: {e}");
        }
        for id in ["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "my-layer", "a.b"] {
            validate_layer_id(id).unwrap();
        }
    }

    #[test]
    fn layer_data_is_what_json_marshal_writes() {
        #[derive(serde::Serialize)]
        struct ChunkedLayerData {
            format: u32,
        }
        assert_eq!(serde_json::to_vec(&ChunkedLayerData { format: 1 }).unwrap(), LAYER_DATA_FLAT);
    }

    #[test]
    fn result_json_survives_non_utf8_paths() {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/root-\xff/overlay-layers/x/=Y2h1"));
        let r = PublishedMetadata {
            layer_id: "x".into(),
            big_data: vec![PublishedFile {
                key: Some(KEY_CACHE),
                path,
                size: 1,
                digest: "sha256:00".into(),
                written: true,
            }],
            tar_split: None,
            diff_size: Some(7),
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["bigData"][0]["path"], "/root-\u{fffd}/overlay-layers/x/=Y2h1");
        assert_eq!(v["layersJson"], serde_json::json!({"big-data-names": [KEY_CACHE], "diff-size": 7}));
        assert_eq!(v["tarSplit"], serde_json::Value::Null);
    }
}
