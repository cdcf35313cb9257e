//! Kernel feature probes, each run at most once per process (SPEC §9.3), and their results
//! recorded per boot in the derived-image cache dir, so that a process that mounts once (the CLI,
//! an engine run per command) does not pay for them again: they create and tear down overlay and
//! tmpfs superblocks, which costs more than a whole mount of a cached stack.
//!
//! Unlike containers/storage, a failing probe never fails the mount that triggered it
//! (SPEC §10.21): a probe that cannot decide answers "unsupported" and the mount falls back.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags, MountAttrFlags};

static EROFS_FROM_FILE: AtomicBool = AtomicBool::new(true);
static OVERLAY_APPEND: OnceLock<bool> = OnceLock::new();
static DETACHED_LAYERS: OnceLock<bool> = OnceLock::new();
static LEGACY_DATA_ONLY: OnceLock<bool> = OnceLock::new();

/// Whether EROFS can mount a regular file directly (assumed until the kernel says `ENOTBLK`).
pub(crate) fn erofs_from_file() -> bool {
    EROFS_FROM_FILE.load(Ordering::Relaxed)
}

pub(crate) fn set_erofs_from_file(v: bool) {
    EROFS_FROM_FILE.store(v, Ordering::Relaxed);
}

/// The record of probe results: `<boot id> <name>=<0|1>...` in the cache dir. The kernel cannot
/// change without a reboot, which changes the boot id. The cache dir is checked to be ours and
/// not writable by others, as for the images kept there.
const RECORD_NAME: &str = "kernel-features";

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
}

fn record_path() -> Option<std::path::PathBuf> {
    let dir = super::cache::default_cache_dir();
    super::cache::prepare_cache_dir(&dir).ok()?;
    Some(dir.join(RECORD_NAME))
}

/// This boot's recorded results, read once per process.
fn recorded() -> &'static std::collections::HashMap<String, bool> {
    static RECORDED: OnceLock<std::collections::HashMap<String, bool>> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let mut out = std::collections::HashMap::new();
        let (Some(boot), Some(path)) = (boot_id(), record_path()) else { return out };
        let Ok(text) = std::fs::read_to_string(path) else { return out };
        let mut words = text.split_whitespace();
        if words.next() != Some(boot.as_str()) {
            return out;
        }
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                out.insert(k.to_string(), v == "1");
            }
        }
        out
    })
}

/// Adds `name=value` to this boot's record (best effort; concurrent writers agree on values).
fn record(name: &str, value: bool) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(boot), Some(path)) = (boot_id(), record_path()) else { return };
    let mut entries: Vec<String> = match std::fs::read_to_string(&path) {
        Ok(text) if text.split_whitespace().next() == Some(boot.as_str()) => {
            text.split_whitespace().skip(1).filter(|w| !w.starts_with(&format!("{name}="))).map(String::from).collect()
        }
        _ => Vec::new(),
    };
    entries.push(format!("{name}={}", u8::from(value)));
    // Named like the cache's other temporaries, so `cleanup` removes one a killed writer left.
    let tmp = path.with_file_name(format!(".tmp-{}-{RECORD_NAME}", std::process::id()));
    if std::fs::write(&tmp, format!("{boot} {}\n", entries.join(" ")))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A probe's result: recorded for this boot, else probed. Only a feature that worked is
/// recorded: "unsupported" may also mean the probe could not decide (SPEC §10.21), so it is asked
/// again by the next process.
fn probed(name: &str, probe: impl FnOnce() -> bool) -> bool {
    if recorded().get(name) == Some(&true) {
        return true;
    }
    let v = probe();
    if v {
        record(name, v);
    }
    v
}

/// Whether overlayfs takes `lowerdir+` and `datadir+` through fsconfig (Linux ≥ 6.8). Unknown
/// keys fail at fsconfig time, so this needs no mount.
pub(crate) fn overlay_append() -> bool {
    *OVERLAY_APPEND.get_or_init(|| {
        probed("overlay_append", || {
            let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
                return false;
            };
            fsconfig_set_string(&fs, "lowerdir+", "/").is_ok() && fsconfig_set_string(&fs, "datadir+", "/").is_ok()
        })
    })
}

/// Whether a detached mount (an `fsmount` fd never attached) can be an overlay layer
/// (Linux ≥ 6.15). Probed with two detached tmpfs mounts and an overlay that is created, never
/// attached, and dropped.
pub(crate) fn detached_layers() -> bool {
    *DETACHED_LAYERS.get_or_init(|| overlay_append() && probed("detached_layers", probe_detached_layers))
}

fn probe_detached_layers() -> bool {
    let tmpfs = || -> Option<std::os::fd::OwnedFd> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).ok()?;
        fsconfig_create(&fs).ok()?;
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).ok()
    };
    let (Some(a), Some(b)) = (tmpfs(), tmpfs()) else {
        return false;
    };
    let Ok(ovl) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
        return false;
    };
    fsconfig_set_string(&ovl, "lowerdir+", format!("/proc/self/fd/{}", a.as_raw_fd())).is_ok()
        && fsconfig_set_string(&ovl, "lowerdir+", format!("/proc/self/fd/{}", b.as_raw_fd())).is_ok()
        && fsconfig_create(&ovl).is_ok()
}

/// Whether the classic option string accepts `::` data-only lowers (Linux ≥ 6.5). Only asked
/// when [`overlay_append`] is false; needs a real test mount under a private temp dir.
pub(crate) fn legacy_data_only() -> bool {
    *LEGACY_DATA_ONLY.get_or_init(|| probed("legacy_data_only", probe_legacy_data_only))
}

fn probe_legacy_data_only() -> bool {
    let Ok(dir) = super::tempdir::TempDir::new("probe") else {
        return false;
    };
    let (l, d, m) = (dir.path().join("l"), dir.path().join("d"), dir.path().join("m"));
    if [&l, &d, &m].iter().any(|p| std::fs::create_dir(p).is_err()) {
        return false;
    }
    let opts = format!("lowerdir={}::{},metacopy=on,redirect_dir=on", l.display(), d.display());
    let Ok(opts) = std::ffi::CString::new(opts) else {
        return false;
    };
    let ok = rustix::mount::mount("overlay", &m, "overlay", rustix::mount::MountFlags::RDONLY, opts.as_c_str()).is_ok();
    if ok {
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
    }
    ok
}

/// What this kernel offers, as probed (for diagnostics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeatures {
    pub erofs_from_file: bool,
    pub overlay_append: bool,
    pub detached_layers: bool,
    pub data_only_layers: bool,
}

/// Runs (or recalls) every probe.
pub fn kernel_features() -> KernelFeatures {
    let overlay_append = overlay_append();
    KernelFeatures {
        erofs_from_file: erofs_from_file(),
        overlay_append,
        detached_layers: detached_layers(),
        data_only_layers: overlay_append || legacy_data_only(),
    }
}

/// Pretends the kernel lacks features, to exercise the fallbacks (tests only: it affects the
/// whole process). Features can only be taken away, and only before any probe has run; returns
/// false if that is too late.
#[doc(hidden)]
pub fn restrict_features_for_tests(f: KernelFeatures) -> bool {
    set_erofs_from_file(f.erofs_from_file);
    OVERLAY_APPEND.set(f.overlay_append).is_ok()
        && DETACHED_LAYERS.set(f.detached_layers).is_ok()
        && LEGACY_DATA_ONLY.set(f.data_only_layers).is_ok()
}
