//! Kernel feature probes, each run at most once per process (SPEC §9.3).
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

/// Whether overlayfs takes `lowerdir+` and `datadir+` through fsconfig (Linux ≥ 6.8). Unknown
/// keys fail at fsconfig time, so this needs no mount.
pub(crate) fn overlay_append() -> bool {
    *OVERLAY_APPEND.get_or_init(|| {
        let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
            return false;
        };
        fsconfig_set_string(&fs, "lowerdir+", "/").is_ok() && fsconfig_set_string(&fs, "datadir+", "/").is_ok()
    })
}

/// Whether a detached mount (an `fsmount` fd never attached) can be an overlay layer
/// (Linux ≥ 6.15). Probed with two detached tmpfs mounts and an overlay that is created, never
/// attached, and dropped.
pub(crate) fn detached_layers() -> bool {
    *DETACHED_LAYERS.get_or_init(|| {
        if !overlay_append() {
            return false;
        }
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
    })
}

/// Whether the classic option string accepts `::` data-only lowers (Linux ≥ 6.5). Only asked
/// when [`overlay_append`] is false; needs a real test mount under a private temp dir.
pub(crate) fn legacy_data_only() -> bool {
    *LEGACY_DATA_ONLY.get_or_init(|| {
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
        let ok =
            rustix::mount::mount("overlay", &m, "overlay", rustix::mount::MountFlags::RDONLY, opts.as_c_str()).is_ok();
        if ok {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
        ok
    })
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
