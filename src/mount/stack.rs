//! Composing a stack: open every layer, check blobs, mount the EROFS layers detached, then the
//! overlay (SPEC §9.2), so that only the overlay mount remains.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{open, statfs, Mode, OFlags};
use rustix::mount::{move_mount, unmount as umount2, MoveMountFlags, UnmountFlags};

use super::overlay::{self, OverlaySpec};
use super::reuse::{self, Identity};
use super::tempdir::TempDir;
use super::{cache, erofs, probe, stubs, verity, Layer, MountOptions, VerityPolicy};
use crate::{Error, Result};

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

fn proc_fd(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn open_dir(path: &Path, what: &str) -> Result<OwnedFd> {
    open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::io(format!("open {what} {}", path.display()), e.into()))
}

/// EROFS mounts attached under a private temp dir for kernels that cannot take detached mounts as
/// layers; detached (lazily unmounted) and removed on drop, whatever happened.
struct AttachedLayers {
    dir: TempDir,
    mounted: Vec<std::path::PathBuf>,
}

impl AttachedLayers {
    fn attach(&mut self, mnt: &OwnedFd) -> Result<String> {
        let p = self.dir.path().join(self.mounted.len().to_string());
        std::fs::create_dir(&p).map_err(|e| Error::io(format!("create {}", p.display()), e))?;
        move_mount(mnt, "", rustix::fs::CWD, &p, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
            .map_err(|e| Error::io(format!("attach EROFS at {}", p.display()), e.into()))?;
        self.mounted.push(p.clone());
        Ok(p.to_string_lossy().into_owned())
    }
}

impl Drop for AttachedLayers {
    fn drop(&mut self) {
        for p in &self.mounted {
            let _ = umount2(p, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW);
        }
    }
}

/// A layer's composefs blob: known by its identity (`statx`) and opened only when its bytes are
/// needed (to mount it, to hash it, to build a derived image from it). A stack whose derived
/// image is cached and whose blobs were checked before needs no blob opened at all.
pub(crate) struct Blob {
    pub path: PathBuf,
    pub expected: Option<[u8; 32]>,
    pub id: Identity,
    file: Option<File>,
    verified: bool,
    /// Where successful checks are recorded across processes (`reuse::RECORDS_DIR` in the cache
    /// dir), if that dir is usable.
    records: Option<PathBuf>,
}

impl Blob {
    fn stat(path: &Path, expected: Option<[u8; 32]>, records: Option<PathBuf>) -> Result<Blob> {
        let id = reuse::identity_of_path(path)
            .map_err(|e| Error::io(format!("open composefs blob {}", path.display()), e))?;
        Ok(Blob { path: path.to_path_buf(), expected, id, file: None, verified: false, records })
    }

    /// Refuses the blob unless it has its expected digest (if one is set). A file checked before
    /// with the same identity passes from memory (see `reuse.rs` for why that is safe); an open
    /// file is checked itself, so what is read or mounted afterwards is what was checked.
    fn verify(&mut self) -> Result<()> {
        let Some(expected) = self.expected else { return Ok(()) };
        if self.verified {
            return Ok(());
        }
        let known = |id: &Identity, records: Option<&Path>| {
            reuse::is_verified(id, &expected) || records.is_some_and(|r| reuse::is_recorded(r, id, &expected))
        };
        if self.file.is_none() && known(&self.id, self.records.as_deref()) {
            self.verified = true;
            return Ok(());
        }
        self.open()?;
        let f = self.file.as_ref().ok_or_else(|| Error::new(crate::ErrorKind::Internal, "blob file missing"))?;
        if !known(&self.id, self.records.as_deref()) {
            verity::check_blob(f, &self.path, &expected)?;
            if reuse::mark_verified(&self.id, &expected) {
                if let Some(r) = &self.records {
                    reuse::record(r, &self.id, &expected);
                }
            }
        }
        self.verified = true;
        Ok(())
    }

    fn open(&mut self) -> Result<()> {
        if self.file.is_none() {
            let f = File::open(&self.path)
                .map_err(|e| Error::io(format!("open composefs blob {}", self.path.display()), e))?;
            let id = reuse::identity_of_fd(&f).map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?;
            if id != self.id {
                // Replaced since it was looked at: whatever was checked was another file.
                self.id = id;
                self.verified = false;
            }
            self.file = Some(f);
        }
        Ok(())
    }

    /// The open blob, checked against its expected digest, and its path.
    pub(crate) fn file(&mut self) -> Result<(&File, &Path)> {
        self.open()?;
        self.verify()?;
        let f = self.file.as_ref().ok_or_else(|| Error::new(crate::ErrorKind::Internal, "blob file missing"))?;
        Ok((f, &self.path))
    }
}

/// One EROFS layer of the stack: its detached mount, and the layer blob it was mounted from
/// (`None` for a derived image, which has no root whiteout stubs when that matters).
struct ErofsLayer {
    mount: Arc<OwnedFd>,
    blob: Option<Blob>,
}

/// Mounts `layers` (top first) as one overlay on `target`. See the module docs of
/// [`crate::mount`]. Nothing is left mounted or attached if this fails.
pub fn mount(layers: &[Layer], target: &Path, opts: &MountOptions) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::invalid_argument(format!("mount on {}: no layers given", target.display())));
    }
    open_dir(target, "mountpoint")?;
    let upper_work = match &opts.upper_work {
        Some((u, w)) => Some((open_dir(u, "upper dir")?, open_dir(w, "work dir")?)),
        None => None,
    };

    // Look at and check everything before mounting anything.
    let mut lower_fds: Vec<OwnedFd> = Vec::new(); // classic trees, top first
    let mut data_fds: Vec<OwnedFd> = Vec::new();
    let mut erofs_index: Vec<bool> = Vec::new();
    let mut blobs: Vec<Blob> = Vec::new();
    let mut records: Option<Option<PathBuf>> = None; // looked up on the first expected digest
    for layer in layers {
        match layer {
            Layer::Classic { tree } => {
                lower_fds.push(open_dir(tree, "classic layer tree")?);
                erofs_index.push(false);
            }
            Layer::Composefs { blob, objects, expected_digest } => {
                let records = match (expected_digest, &records) {
                    (None, _) => None,
                    (Some(_), Some(r)) => r.clone(),
                    (Some(_), None) => {
                        let dir = opts.stub_cache_dir.clone().unwrap_or_else(cache::default_cache_dir);
                        let r = cache::prepare_cache_dir(&dir).ok().map(|()| dir.join(reuse::RECORDS_DIR));
                        records.insert(r).clone()
                    }
                };
                let mut b = Blob::stat(blob, *expected_digest, records)?;
                if expected_digest.is_none() && opts.verity == VerityPolicy::Require {
                    return Err(Error::new(
                        crate::ErrorKind::Verification,
                        format!(
                            "composefs blob {}: verity policy is \"require\" but no expected digest was given",
                            blob.display()
                        ),
                    ));
                }
                b.verify()?;
                data_fds.push(open_dir(objects, "composefs object dir")?);
                blobs.push(b);
                erofs_index.push(true);
            }
        }
    }
    let any_composefs = !data_fds.is_empty();
    let verity = match opts.verity {
        _ if !any_composefs => None,
        VerityPolicy::Off => None,
        VerityPolicy::Require => Some("require"),
        // The converter enables fs-verity on a layer's blob and objects together (SPEC §6.2), so
        // a blob with fs-verity says its objects have it: no directory scan. statx tells.
        VerityPolicy::IfAvailable => blobs.iter().all(|b| b.id.verity).then_some("on"),
    };

    let data_only = probe::overlay_append() || probe::legacy_data_only();
    // Mount the EROFS layers (detached) in stack order, runs flattened where asked.
    let (erofs_index, mut erofs_layers) = mount_erofs_layers(erofs_index, blobs, data_only, opts)?;
    if erofs_index.len() > 1 && any_composefs && data_only {
        replace_colliding_stubs(&erofs_index, &lower_fds, &mut erofs_layers, opts)?;
    }
    let erofs_fds: Vec<Arc<OwnedFd>> = erofs_layers.into_iter().map(|l| l.mount).collect();

    let mut attached = None;
    let mut lowers = Vec::with_capacity(layers.len());
    let (mut classic_it, mut erofs_it) = (lower_fds.iter(), erofs_fds.iter());
    for is_erofs in erofs_index {
        if !is_erofs {
            lowers
                .push(proc_fd(classic_it.next().ok_or_else(|| Error::new(crate::ErrorKind::Internal, "layer count"))?));
            continue;
        }
        let mnt = erofs_it.next().ok_or_else(|| Error::new(crate::ErrorKind::Internal, "layer count"))?;
        lowers.push(mount_layer_path(mnt, &mut attached)?);
    }
    // overlayfs wants two layers when there is no upper and no data-only layer: add an empty
    // tmpfs (held only by the overlay) under a lone classic layer.
    let empty_fd;
    if lowers.len() == 1 && data_fds.is_empty() && upper_work.is_none() {
        empty_fd = empty_layer()?;
        lowers.push(mount_layer_path(&empty_fd, &mut attached)?);
    }
    let spec = OverlaySpec {
        lowers,
        data: data_fds.iter().map(proc_fd).collect(),
        upper_work: upper_work.as_ref().map(|(u, w)| (proc_fd(u), proc_fd(w))),
        metacopy: any_composefs,
        verity,
    };
    let result = overlay::mount(&spec, target);
    drop(attached);
    result
}

/// The path the overlay gets for a detached mount: its fd where the kernel takes detached
/// layers, else a private temp dir it is attached to for the moment.
fn mount_layer_path(mnt: &OwnedFd, attached: &mut Option<AttachedLayers>) -> Result<String> {
    if probe::detached_layers() {
        return Ok(proc_fd(mnt));
    }
    if attached.is_none() {
        *attached = Some(AttachedLayers { dir: TempDir::new("layers")?, mounted: Vec::new() });
    }
    match attached {
        Some(a) => a.attach(mnt),
        None => Err(Error::new(crate::ErrorKind::Internal, "attached layers missing")),
    }
}

/// Mounts the composefs layers' EROFS, detached, in stack order. With `opts.flatten`, each run
/// of two or more adjacent composefs layers, and the bottom run whatever its length, becomes one
/// flattened image (see `flatten.rs`); the layers' object dirs stay as they are. Returns the
/// new layer index (composefs or not, top first) and the EROFS layers.
fn mount_erofs_layers(
    erofs_index: Vec<bool>,
    blobs: Vec<Blob>,
    data_only: bool,
    opts: &MountOptions,
) -> Result<(Vec<bool>, Vec<ErofsLayer>)> {
    let mut index_out = Vec::with_capacity(erofs_index.len());
    let mut out = Vec::with_capacity(blobs.len());
    let mut blobs = blobs.into_iter();
    let mut i = 0;
    while i < erofs_index.len() {
        if !erofs_index[i] {
            index_out.push(false);
            i += 1;
            continue;
        }
        let run_len = erofs_index[i..].iter().take_while(|&&e| e).count();
        let mut run: Vec<Blob> = blobs.by_ref().take(run_len).collect();
        let bottom = i + run_len == erofs_index.len();
        i += run_len;
        // A lone image is rewritten only at the bottom of the stack: there its whiteouts and
        // opaque markers hide nothing, and overlayfs would list the whiteouts of a directory no
        // other layer has as entries that cannot be opened; the bottom rewrite leaves them out.
        if opts.flatten && (run_len >= 2 || bottom) {
            let cache = opts.stub_cache_dir.clone().unwrap_or_else(cache::default_cache_dir);
            let mount = stubs::flattened(&mut run, bottom, !data_only, &cache, opts)?;
            index_out.push(true);
            out.push(ErofsLayer { mount, blob: None });
            continue;
        }
        for mut b in run {
            let (f, path) = b.file()?;
            let mount = Arc::new(erofs::mount_detached(f, path, opts.erofs_backing)?);
            index_out.push(true);
            out.push(ErofsLayer { mount, blob: Some(b) });
        }
    }
    Ok((index_out, out))
}

/// A detached, empty, read-only tmpfs.
fn empty_layer() -> Result<OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags, MountAttrFlags,
    };
    let err = |what: &str, e: rustix::io::Errno| Error::io(format!("create an empty bottom layer: {what}"), e.into());
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| err("fsopen tmpfs", e))?;
    fsconfig_set_string(&fs, "mode", "0755").map_err(|e| err("fsconfig mode", e))?;
    fsconfig_set_string(&fs, "size", "4k").map_err(|e| err("fsconfig size", e))?;
    fsconfig_create(&fs).map_err(|e| err("fsconfig create", e))?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::MOUNT_ATTR_RDONLY).map_err(|e| err("fsmount", e))
}

/// Remounts, from a stub-less copy, every composefs layer whose root whiteout stubs would hide a
/// top-level name of a layer below it (SPEC §10.2; see `stubs.rs`).
fn replace_colliding_stubs(
    erofs_index: &[bool],
    classic_fds: &[OwnedFd],
    erofs_layers: &mut [ErofsLayer],
    opts: &MountOptions,
) -> Result<()> {
    // Layer i (top first) → whether it is composefs, and its index among its kind.
    let mut which = Vec::with_capacity(erofs_index.len());
    let (mut c, mut e) = (0, 0);
    for &is_erofs in erofs_index {
        if is_erofs {
            which.push((true, e));
            e += 1;
        } else {
            which.push((false, c));
            c += 1;
        }
    }
    let mut names = Vec::with_capacity(which.len());
    for &(is_erofs, k) in &which {
        names.push(match (is_erofs, erofs_layers.get(k)) {
            (true, Some(ErofsLayer { mount, blob: Some(b) })) => stubs::image_root_names(&b.id, mount)?,
            (true, Some(ErofsLayer { mount, blob: None })) => Arc::new(stubs::root_names(mount)?),
            (true, None) => return Err(Error::new(crate::ErrorKind::Internal, "layer count")),
            (false, _) => Arc::new(stubs::root_names(&classic_fds[k])?),
        });
    }
    let cache = opts.stub_cache_dir.clone().unwrap_or_else(cache::default_cache_dir);
    for i in stubs::colliding_layers(&names) {
        let (true, k) = which[i] else { continue };
        // Derived images are written without stubs where data-only layers exist.
        let Some(ErofsLayer { mount, blob: Some(b) }) = erofs_layers.get_mut(k) else { continue };
        let digest = match b.expected {
            Some(d) => d,
            None => {
                let (f, path) = b.file()?;
                verity::file_digest(f, path)?
            }
        };
        *mount = stubs::stubless_copy(b, &digest, &cache, opts)?;
    }
    Ok(())
}

/// Unmounts the overlay on `target`. Refuses anything that is not an overlay mount root, so a
/// wrong path cannot take down an unrelated mount.
pub fn unmount(target: &Path) -> Result<()> {
    let st = statfs(target).map_err(|e| Error::io(format!("statfs {}", target.display()), e.into()))?;
    let stx = rustix::fs::statx(
        rustix::fs::CWD,
        target,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .map_err(|e| Error::io(format!("statx {}", target.display()), e.into()))?;
    let mount_root = rustix::fs::StatxAttributes::MOUNT_ROOT;
    let is_root = stx.stx_attributes_mask.contains(mount_root) && stx.stx_attributes.contains(mount_root);
    if st.f_type as i64 != OVERLAYFS_SUPER_MAGIC || !is_root {
        return Err(Error::invalid_argument(format!("unmount {}: not an overlay mountpoint", target.display())));
    }
    umount2(target, UnmountFlags::NOFOLLOW).map_err(|e| Error::io(format!("unmount {}", target.display()), e.into()))
}
