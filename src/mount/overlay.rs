//! The overlay mount of a stack (SPEC §9.2, §9.4, §9.6).
//!
//! Preferred: the new mount API with one `lowerdir+`/`datadir+` per layer, so the number of layers
//! is not limited by a page-sized option string. Fallback: classic `mount(2)` with `::` data-only
//! lowers, and with plain `:` where the kernel has no data-only lowers (then the root whiteout
//! stubs of every composefs image hide the object directories' `xx/` names, SPEC §5.3).
//!
//! Layers are passed as `/proc/self/fd/N` paths of fds this process holds, so no layer path is
//! ever escaped or length-limited (`:`, `,` and `\` in paths are harmless).

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags};

use super::erofs::kernel_messages;
use super::probe;
use crate::{Error, Result};

/// What to stack. Layer strings are paths the kernel resolves (usually `/proc/self/fd/N`).
pub(crate) struct OverlaySpec {
    /// Regular lowers, top first.
    pub lowers: Vec<String>,
    /// Data-only lowers (composefs object dirs), in the same order as their layers.
    pub data: Vec<String>,
    pub upper_work: Option<(String, String)>,
    pub metacopy: bool,
    /// `verity=` value, if any.
    pub verity: Option<&'static str>,
}

impl OverlaySpec {
    fn options(&self) -> Vec<(&'static str, &'static str)> {
        let mut opts = Vec::new();
        if self.metacopy {
            opts.push(("metacopy", "on"));
            opts.push(("redirect_dir", "on"));
        }
        if let Some(v) = self.verity {
            opts.push(("verity", v));
        }
        opts
    }
}

/// Mounts the overlay on `target` (a directory the caller checked).
pub(crate) fn mount(spec: &OverlaySpec, target: &Path) -> Result<()> {
    if probe::overlay_append() {
        mount_append(spec, target)
    } else {
        mount_legacy(spec, target)
    }
}

fn mount_append(spec: &OverlaySpec, target: &Path) -> Result<()> {
    let what = || format!("mount overlay on {}", target.display());
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| Error::io(format!("{}: fsopen(\"overlay\")", what()), e.into()))?;
    let step = |name: &str, r: rustix::io::Result<()>| -> Result<()> {
        r.map_err(|e| Error::io(format!("{}: {name}{}", what(), kernel_messages(fs.as_fd())), e.into()))
    };
    step("fsconfig source", fsconfig_set_string(&fs, "source", "overlay"))?;
    for (i, l) in spec.lowers.iter().enumerate() {
        step(&format!("fsconfig lowerdir+ (layer {i})"), fsconfig_set_string(&fs, "lowerdir+", l))?;
    }
    for (i, d) in spec.data.iter().enumerate() {
        step(&format!("fsconfig datadir+ (object dir {i})"), fsconfig_set_string(&fs, "datadir+", d))?;
    }
    if let Some((upper, work)) = &spec.upper_work {
        step("fsconfig upperdir", fsconfig_set_string(&fs, "upperdir", upper))?;
        step("fsconfig workdir", fsconfig_set_string(&fs, "workdir", work))?;
    } else {
        step("fsconfig ro", fsconfig_set_flag(&fs, "ro"))?;
    }
    for (k, v) in spec.options() {
        step(&format!("fsconfig {k}={v}"), fsconfig_set_string(&fs, k, v))?;
    }
    step("fsconfig create", fsconfig_create(&fs))?;
    let attrs = if spec.upper_work.is_some() { MountAttrFlags::empty() } else { MountAttrFlags::MOUNT_ATTR_RDONLY };
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| Error::io(format!("{}: fsmount", what()), e.into()))?;
    // A sporadic EINVAL from move_mount is known upstream (SPEC §10.9); the detached mount is
    // still ours after a failure, so trying again is safe.
    let mut tries = 0;
    loop {
        match move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::INVAL && tries < 2 => tries += 1,
            Err(e) => return Err(Error::io(format!("{}: move_mount", what()), e.into())),
        }
    }
}

/// The classic option string; `data_only` chooses `::` or `:` before the object dirs.
pub(crate) fn legacy_options(spec: &OverlaySpec, data_only: bool) -> String {
    let mut lower = spec.lowers.join(":");
    for d in &spec.data {
        lower.push_str(if data_only { "::" } else { ":" });
        lower.push_str(d);
    }
    let mut s = format!("lowerdir={lower}");
    if let Some((upper, work)) = &spec.upper_work {
        s.push_str(&format!(",upperdir={upper},workdir={work}"));
    }
    for (k, v) in spec.options() {
        s.push_str(&format!(",{k}={v}"));
    }
    s
}

fn mount_legacy(spec: &OverlaySpec, target: &Path) -> Result<()> {
    let opts = legacy_options(spec, probe::legacy_data_only());
    // mount(2) copies at most one page of options (SPEC §9.6).
    if opts.len() >= 4096 {
        return Err(Error::limit(format!(
            "mount overlay on {}: {} layers need a {}-byte option string, over the page-size limit of mount(2) on a kernel without lowerdir+",
            target.display(),
            spec.lowers.len() + spec.data.len(),
            opts.len()
        )));
    }
    let c = CString::new(opts).map_err(|_| Error::invalid_argument("overlay options contain a NUL byte"))?;
    let flags = if spec.upper_work.is_some() { MountFlags::empty() } else { MountFlags::RDONLY };
    rustix::mount::mount("overlay", target, "overlay", flags, c.as_c_str())
        .map_err(|e| Error::io(format!("mount overlay on {} ({})", target.display(), c.to_string_lossy()), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_option_string_marks_data_only_layers() {
        let spec = OverlaySpec {
            lowers: vec!["/a".into(), "/b".into()],
            data: vec!["/x".into(), "/y".into()],
            upper_work: Some(("/u".into(), "/w".into())),
            metacopy: true,
            verity: Some("require"),
        };
        assert_eq!(
            legacy_options(&spec, true),
            "lowerdir=/a:/b::/x::/y,upperdir=/u,workdir=/w,metacopy=on,redirect_dir=on,verity=require"
        );
        assert!(legacy_options(&spec, false).starts_with("lowerdir=/a:/b:/x:/y,"));
    }
}
