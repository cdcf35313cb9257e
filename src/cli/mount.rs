//! `composefs-storage mount` and `composefs-storage umount`.

use std::path::PathBuf;
use std::process::ExitCode;

use composefs_storage::mount::{self, Layer, MountOptions, VerityPolicy};
use composefs_storage::{Error, Result};

/// Mount a stack of layer dirs (top first) on MOUNTPOINT as one overlay.
///
/// A layer dir with `composefs-data/` is a composefs layer (blob `composefs-data/composefs.blob`,
/// objects in `diff/`); any other is a classic layer with its tree in `diff/`. When
/// `composefs-data/composefs.blob.verity` exists, the blob must have that fs-verity digest.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  composefs-storage mount /var/tmp/l3 /var/tmp/l2 /var/tmp/l1 /mnt/merged
  composefs-storage mount --verity require /var/tmp/l2 /var/tmp/l1 /mnt/merged
  composefs-storage mount --rw --upper /var/tmp/up --work /var/tmp/work /var/tmp/l1 /mnt/merged
  composefs-storage umount /mnt/merged

Needs root, and a kernel with EROFS and overlayfs.")]
pub struct MountArgs {
    /// Mount read-write (needs --upper and --work).
    #[arg(long)]
    rw: bool,
    /// Upper dir of a read-write mount.
    #[arg(long, value_name = "DIR")]
    upper: Option<PathBuf>,
    /// Work dir of a read-write mount (same filesystem as --upper).
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// fs-verity policy: off, if-available or require.
    #[arg(long, default_value = "if-available", value_name = "POLICY")]
    verity: String,
    /// Do not check the blobs against their recorded fs-verity digests.
    #[arg(long)]
    no_blob_check: bool,
    /// How EROFS images are mounted: auto (from the file where the kernel can) or loop.
    #[arg(long, default_value = "auto", value_name = "BACKING")]
    erofs_backing: String,
    /// Tests only: mount as on a kernel without lowerdir+, detached layers or file-backed EROFS.
    #[arg(long, hide = true)]
    pretend_old_kernel: bool,
    /// Layer dirs, top first, then the mountpoint.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Unmount a stack mounted by `composefs-storage mount`.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  composefs-storage umount /mnt/merged")]
pub struct UmountArgs {
    /// Where the stack is mounted.
    mountpoint: PathBuf,
}

/// Clean up after killed mount sequences and bound the derived-image cache.
///
/// Removes unfinished derived images and private temp dirs whose process is gone (detaching any
/// mount left in them), and evicts cached derived images (flattened runs, stub-less copies)
/// beyond the limits, least recently used first. Mounted stacks are not affected; an image
/// another process is about to mount is never removed.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  composefs-storage mount-cleanup
  composefs-storage mount-cleanup --max-images 0 --max-bytes 0   # every image not in use")]
pub struct CleanupArgs {
    /// The derived-image cache dir (default: $COMPOSEFS_STORAGE_CACHE_DIR, else
    /// /run/composefs-storage/stubless for root).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Keep at most this many cached images.
    #[arg(long, value_name = "N", default_value_t = mount::CacheLimits::default().max_images)]
    max_images: usize,
    /// Keep at most this many bytes of cached images.
    #[arg(long, value_name = "BYTES", default_value_t = mount::CacheLimits::default().max_bytes)]
    max_bytes: u64,
}

pub fn run_cleanup(args: CleanupArgs) -> Result<ExitCode> {
    let limits = mount::CacheLimits { max_images: args.max_images, max_bytes: args.max_bytes };
    let r = mount::cleanup(args.cache_dir.as_deref(), limits)?;
    println!(
        "removed {} cached images, {} abandoned temporaries; detached {} stale mounts",
        r.images_evicted, r.temporaries_removed, r.stale_mounts_detached
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_mount(args: MountArgs) -> Result<ExitCode> {
    let verity = VerityPolicy::parse(&args.verity)?;
    let upper_work = match (args.rw, args.upper, args.work) {
        (true, Some(u), Some(w)) => Some((u, w)),
        (true, _, _) => return Err(Error::invalid_argument("--rw needs --upper DIR and --work DIR")),
        (false, None, None) => None,
        (false, _, _) => return Err(Error::invalid_argument("--upper and --work need --rw")),
    };
    if verity == VerityPolicy::Require && args.no_blob_check {
        return Err(Error::invalid_argument("--verity require cannot be combined with --no-blob-check"));
    }
    let erofs_backing = match args.erofs_backing.as_str() {
        "auto" => mount::ErofsBacking::Auto,
        "loop" => mount::ErofsBacking::LoopDevice,
        v => return Err(Error::invalid_argument(format!("--erofs-backing {v:?}: expected auto or loop"))),
    };
    if args.pretend_old_kernel {
        let old = mount::KernelFeatures {
            erofs_from_file: false,
            overlay_append: false,
            detached_layers: false,
            data_only_layers: true,
        };
        if !mount::restrict_features_for_tests(old) {
            return Err(Error::new(composefs_storage::ErrorKind::Internal, "kernel features already probed"));
        }
    }
    let (mountpoint, dirs) = args.paths.split_last().ok_or_else(|| Error::invalid_argument("no mountpoint"))?;
    let mut layers = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let layer = Layer::from_layer_dir(dir)?;
        layers.push(if args.no_blob_check { layer } else { layer.read_digest_file(dir)? });
    }
    let opts = MountOptions { upper_work, verity, erofs_backing, ..MountOptions::default() };
    mount::mount(&layers, mountpoint, &opts)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_umount(args: UmountArgs) -> Result<ExitCode> {
    mount::unmount(&args.mountpoint)?;
    Ok(ExitCode::SUCCESS)
}
