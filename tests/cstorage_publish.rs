//! Publishing a layer into a containers/storage layer store (layer::cstorage, SPEC §2.3): the
//! files containers/storage reads, by its names and with the expected bytes; a round trip through
//! the store's location (another conversion finds the objects through the published cache); and
//! republishing, conflicts, bad ids and foreign directories, with nothing left behind.

mod support;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use composefs_storage::chunked::cache::LayerCache;
use composefs_storage::chunked::Toc;
use composefs_storage::layer::cstorage::{publish_layer_metadata, PublishOptions};
use composefs_storage::layer::metadata::{CACHE, TAR_SPLIT, TOC};
use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};
use composefs_storage::ErrorKind;

const ID: &str = "7d1f6ac7dbd2e8a6f3a1e5c0b9d84f2e6a0c3b5d7e9f1a2b4c6d8e0f1a3b5c7d";
const TOC_FILE: &str = "=enN0ZC1jaHVua2VkLW1hbmlmZXN0";
const LAYER_DATA_FILE: &str = "=enN0ZC1jaHVua2VkLWxheWVyLWRhdGE=";
const CACHE_FILE: &str = "=Y2h1bmtlZC1tYW5pZmVzdC1jYWNoZQ==";

fn opts(sources: Vec<PathBuf>) -> ConvertOptions {
    ConvertOptions { source_layers: sources, verity: VerityPolicy::Off, ..Default::default() }
}

fn input() -> Box<std::fs::File> {
    Box::new(std::fs::File::open(support::cstorage().join("etc-doc-gnu/etc-doc-gnu.tar.zst")).unwrap())
}

/// A graph root with the etc-doc-gnu layer converted into `overlay/<ID>`.
fn store_with_layer() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let graphroot = tmp.path().join("graphroot");
    std::fs::create_dir_all(graphroot.join("overlay")).unwrap();
    let layer = graphroot.join("overlay").join(ID);
    convert(input(), &layer, &opts(vec![]), None).unwrap();
    (tmp, graphroot, layer)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", composefs_storage::source::hex(&sha2::Sha256::digest(b)))
}

#[test]
fn publishes_the_files_containers_storage_reads() {
    let (_tmp, graphroot, layer) = store_with_layer();
    let r = publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap();
    let store = graphroot.join("overlay-layers");
    let tar_split_name = format!("{ID}.tar-split.gz");
    assert_eq!(listing(&store), vec![ID.to_string(), tar_split_name.clone(), "layers.lock".to_string()]);
    let data = store.join(ID);
    let mut want_names = vec![TOC_FILE, LAYER_DATA_FILE, CACHE_FILE];
    want_names.sort();
    assert_eq!(listing(&data), want_names);
    assert_eq!(mode(&data), 0o700);

    // Exact bytes: the TOC and cache the layer keeps, and the layer data containers/storage writes.
    assert_eq!(std::fs::read(data.join(TOC_FILE)).unwrap(), std::fs::read(layer.join(TOC)).unwrap());
    assert_eq!(std::fs::read(data.join(CACHE_FILE)).unwrap(), std::fs::read(layer.join(CACHE)).unwrap());
    assert_eq!(std::fs::read(data.join(LAYER_DATA_FILE)).unwrap(), br#"{"format":1}"#);
    // The tar-split: gzip, as containers/storage keeps it, of the NDJSON the layer keeps (zstd).
    let ts = std::fs::read(store.join(&tar_split_name)).unwrap();
    assert_eq!(&ts[..2], &[0x1f, 0x8b]);
    for f in [TOC_FILE, LAYER_DATA_FILE, CACHE_FILE] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&store.join(&tar_split_name)), 0o600);

    // The tar-split is the NDJSON containers/storage's own compressor wrote for this tar (corpus).
    let mut ndjson = Vec::new();
    flate2::read::MultiGzDecoder::new(&ts[..]).read_to_end(&mut ndjson).unwrap();
    let want = zstd::decode_all(
        std::fs::File::open(support::cstorage().join("etc-doc-gnu/etc-doc-gnu.tarsplit.ndjson.zst")).unwrap(),
    )
    .unwrap();
    assert_eq!(ndjson, want);
    assert_eq!(zstd::decode_all(&std::fs::read(layer.join(TAR_SPLIT)).unwrap()[..]).unwrap(), want);

    // What the caller records in layers.json; the tar size is the corpus oracle's.
    let compress: serde_json::Value = serde_json::from_slice(
        &std::fs::read(support::cstorage().join("etc-doc-gnu/etc-doc-gnu.compress.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r.diff_size, compress["tarSize"].as_u64());
    assert_eq!(r.big_data_names(), vec!["zstd-chunked-layer-data", "zstd-chunked-manifest", "chunked-manifest-cache"]);
    let js: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(js["layersJson"]["diff-size"], compress["tarSize"]);
    assert_eq!(js["layersJson"]["big-data-names"].as_array().unwrap().len(), 3);
    assert_eq!(js["layerId"], ID);
    for f in r.big_data.iter().chain(r.tar_split.iter()) {
        let bytes = std::fs::read(&f.path).unwrap();
        assert!(f.written);
        assert_eq!(f.size, bytes.len() as u64);
        assert_eq!(f.digest, sha256(&bytes));
    }
}

#[test]
fn another_conversion_finds_the_objects_through_the_published_cache() {
    let (tmp, graphroot, layer) = store_with_layer();
    publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap();
    // From now on the only cache of the layer is the one in containers/storage's layer store.
    std::fs::remove_file(layer.join(CACHE)).unwrap();

    let r = convert(input(), &tmp.path().join("l2"), &opts(vec![layer.clone()]), None).unwrap();
    assert_eq!(r.objects.bytes_written, 0, "every object came from the published layer");
    assert!(r.objects.objects_reused > 0);

    // Control: replacing the published cache by one that lists none of the objects makes the
    // layer be skipped without a probe, so it was that file that decided above.
    let other = Toc::parse(br#"{"version":1,"entries":[{"type":"reg","name":"x","size":1,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#).unwrap();
    let published = graphroot.join("overlay-layers").join(ID).join(CACHE_FILE);
    std::fs::write(&published, LayerCache::build(&other, true).unwrap().to_bytes()).unwrap();
    let r = convert(input(), &tmp.path().join("l3"), &opts(vec![layer]), None).unwrap();
    assert_eq!(r.objects.objects_reused, 0);
    assert!(r.objects.bytes_written > 0);
}

fn no_temp_files(graphroot: &Path) {
    for dir in [graphroot.join("overlay-layers"), graphroot.join("overlay-layers").join(ID)] {
        if dir.exists() {
            let names = listing(&dir);
            assert!(names.iter().all(|n| !n.starts_with('.')), "temporary files left in {}: {names:?}", dir.display());
        }
    }
}

#[test]
fn republishing_is_a_no_op_and_other_content_is_refused() {
    let (_tmp, graphroot, layer) = store_with_layer();
    let first = publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap();
    let again = publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap();
    assert!(again.big_data.iter().chain(again.tar_split.iter()).all(|f| !f.written));
    assert_eq!(
        first.big_data.iter().map(|f| &f.digest).collect::<Vec<_>>(),
        again.big_data.iter().map(|f| &f.digest).collect::<Vec<_>>()
    );
    assert_eq!(first.diff_size, again.diff_size);

    // The same tar-split NDJSON compressed otherwise (as containers/storage's pgzip writes it) is
    // the same content: kept as it is. Other NDJSON is refused.
    let store = graphroot.join("overlay-layers");
    let ts_path = store.join(format!("{ID}.tar-split.gz"));
    let mut ndjson = Vec::new();
    flate2::read::MultiGzDecoder::new(&std::fs::read(&ts_path).unwrap()[..]).read_to_end(&mut ndjson).unwrap();
    let regz = |data: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let theirs = regz(&ndjson);
    assert_ne!(theirs, std::fs::read(&ts_path).unwrap());
    std::fs::write(&ts_path, &theirs).unwrap();
    let r = publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap();
    let ts = r.tar_split.unwrap();
    assert!(!ts.written);
    assert_eq!(ts.digest, sha256(&theirs));
    assert_eq!(std::fs::read(&ts_path).unwrap(), theirs);
    ndjson.extend_from_slice(b"{\"type\":2,\"payload\":\"AA==\",\"position\":99999}\n");
    std::fs::write(&ts_path, regz(&ndjson)).unwrap();
    let e = publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    std::fs::write(&ts_path, &theirs).unwrap();

    // Another TOC where ours would go: refused, left as it was, and nothing else written either
    // (the tar-split, removed here, stays absent: everything is checked before anything is written).
    let toc_path = store.join(ID).join(TOC_FILE);
    std::fs::write(&toc_path, b"{\"version\":1,\"entries\":null}").unwrap();
    std::fs::remove_file(store.join(format!("{ID}.tar-split.gz"))).unwrap();
    let e = publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains(TOC_FILE), "{e}");
    assert_eq!(std::fs::read(&toc_path).unwrap(), b"{\"version\":1,\"entries\":null}");
    assert!(!store.join(format!("{ID}.tar-split.gz")).exists());
    no_temp_files(&graphroot);

    // A directory where a file goes is refused too.
    std::fs::remove_file(&toc_path).unwrap();
    std::fs::create_dir(&toc_path).unwrap();
    let e = publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    no_temp_files(&graphroot);
}

#[test]
fn bad_ids_foreign_dirs_and_missing_graph_roots_leave_nothing_behind() {
    let (tmp, graphroot, layer) = store_with_layer();
    for id in ["", ".", "..", "a/b", "../x", ".tmp"] {
        let e = publish_layer_metadata(&layer, &graphroot, id, &PublishOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{id:?}: {e}");
    }
    assert!(!graphroot.join("overlay-layers").exists(), "nothing created for bad ids");

    // Not a layer directory of ours: the error names the missing file.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(foreign.join("diff")).unwrap();
    let e = publish_layer_metadata(&foreign, &graphroot, ID, &PublishOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("composefs-data/composefs.blob"), "{e}");
    std::fs::create_dir_all(foreign.join("composefs-data")).unwrap();
    std::fs::write(foreign.join("composefs-data/composefs.blob"), b"").unwrap();
    let e = publish_layer_metadata(&foreign, &graphroot, ID, &PublishOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(TOC), "{e}");
    // A TOC containers/storage could not read is never handed to it.
    std::fs::write(foreign.join(TOC), b"{\"version\":1,\"entries\":[]} trailing").unwrap();
    let e = publish_layer_metadata(&foreign, &graphroot, ID, &PublishOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format, "{e}");
    assert!(!graphroot.join("overlay-layers").exists(), "nothing created for foreign dirs");

    let e =
        publish_layer_metadata(&layer, &tmp.path().join("no-such-root"), ID, &PublishOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!tmp.path().join("no-such-root").exists());
}

#[test]
fn a_layer_without_a_cache_gets_one_built_from_its_toc() {
    let (_tmp, graphroot, layer) = store_with_layer();
    let own = std::fs::read(layer.join(CACHE)).unwrap();
    std::fs::remove_file(layer.join(CACHE)).unwrap();
    publish_layer_metadata(&layer, &graphroot, ID, &PublishOptions::default()).unwrap();
    assert_eq!(std::fs::read(graphroot.join("overlay-layers").join(ID).join(CACHE_FILE)).unwrap(), own);
}

/// Another process holding a lock the way containers/storage's `pkg/lockfile` does: a child (fork,
/// no exec: no helper program is needed) that takes an fcntl write lock on the whole of a file
/// (`F_SETLKW`), says so on a pipe, and keeps it until `release` closes the other pipe.
struct LockHolder {
    pid: libc::pid_t,
    release: Option<std::os::fd::OwnedFd>,
}

impl LockHolder {
    fn hold(path: &Path) -> LockHolder {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        // Everything the child uses is made before the fork: after it, the child of this
        // multithreaded process only makes async-signal-safe calls and never allocates.
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: flock is plain data; all zeros and then the fields set is a valid request.
        let mut whole: libc::flock = unsafe { std::mem::zeroed() };
        whole.l_type = libc::F_WRLCK as _;
        whole.l_whence = libc::SEEK_SET as _;
        let (mut ready, mut release) = ([0; 2], [0; 2]);
        // SAFETY: pipe2 writes two new descriptors into each array.
        unsafe {
            assert_eq!(libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC), 0);
            assert_eq!(libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC), 0);
        }
        let (keep_lo, keep_hi) = (ready[1].min(release[0]) as libc::c_uint, ready[1].max(release[0]) as libc::c_uint);
        // SAFETY: see above; the child ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: the child: async-signal-safe calls on data made before the fork. First it
            // closes what it inherited (other tests' pipes and lock files) but its two pipe ends.
            unsafe {
                for (lo, hi) in [(3, keep_lo.wrapping_sub(1)), (keep_lo + 1, keep_hi - 1), (keep_hi + 1, !0)] {
                    if lo <= hi && lo >= 3 {
                        libc::syscall(libc::SYS_close_range, lo, hi, 0);
                    }
                }
                let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o644);
                let locked = fd >= 0 && libc::fcntl(fd, libc::F_SETLKW, &whole) == 0;
                let word: &[u8; 1] = if locked { b"L" } else { b"E" };
                libc::write(ready[1], word.as_ptr().cast(), 1);
                let mut byte = 0u8;
                libc::read(release[0], (&raw mut byte).cast(), 1); // until the test closes its end
                libc::_exit(0);
            }
        }
        // SAFETY: the parent's ends, owned here from now on; the child's ends closed.
        let (ready_r, release_w) = unsafe {
            libc::close(ready[1]);
            libc::close(release[0]);
            (std::fs::File::from_raw_fd(ready[0]), OwnedFd::from_raw_fd(release[1]))
        };
        let mut word = [0u8; 1];
        (&ready_r).read_exact(&mut word).expect("the lock holder said nothing");
        assert_eq!(&word, b"L", "the lock holder could not take the lock");
        LockHolder { pid, release: Some(release_w) }
    }

    /// Lets the lock go: the child exits, which releases its lock; waits for it.
    fn release(&mut self) {
        if self.release.take().is_some() {
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(self.pid, &mut status, 0) }, self.pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "lock holder: {status:#x}");
        }
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.release();
        } else if self.release.take().is_some() {
            // SAFETY: reaps our own child (it exits once its pipe is closed).
            unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        }
    }
}

/// While another process holds containers/storage's layer store lock (an fcntl write lock, as
/// `pkg/lockfile` takes it), nothing is published; once it lets go, everything is.
#[test]
fn waits_for_the_layer_store_lock() {
    let (_tmp, graphroot, layer) = store_with_layer();
    let store = graphroot.join("overlay-layers");
    std::fs::create_dir(&store).unwrap();
    let mut holder = LockHolder::hold(&store.join("layers.lock"));

    let (l, g) = (layer.clone(), graphroot.clone());
    let t = std::thread::spawn(move || publish_layer_metadata(&l, &g, ID, &PublishOptions::default()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!store.join(ID).join(TOC_FILE).exists(), "published while the lock was held elsewhere");
    assert!(!t.is_finished());
    holder.release();
    t.join().unwrap().unwrap();
    assert!(store.join(ID).join(TOC_FILE).exists());
}

#[test]
fn cli_publish_metadata_then_convert_with_the_source_layer() {
    let (tmp, graphroot, layer) = store_with_layer();
    let bin = env!("CARGO_BIN_EXE_composefs-storage");
    let o = Command::new(bin)
        .args(["publish-metadata", "--graphroot"])
        .arg(&graphroot)
        .args(["--layer-id", ID])
        .arg(&layer)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let js: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(js["layersJson"]["big-data-names"][2], "chunked-manifest-cache");
    std::fs::remove_file(layer.join(CACHE)).unwrap();

    let o = Command::new(bin)
        .args(["convert", "--json", "--quiet", "--verity", "off", "--source-layer"])
        .arg(&layer)
        .arg(support::cstorage().join("etc-doc-gnu/etc-doc-gnu.tar.zst"))
        .arg(tmp.path().join("l2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let js: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(js["bytesWritten"], 0, "{js}");

    // A bad id is a usage error (exit 2).
    let o = Command::new(bin)
        .args(["publish-metadata", "--graphroot"])
        .arg(&graphroot)
        .args(["--layer-id", "../x"])
        .arg(&layer)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
