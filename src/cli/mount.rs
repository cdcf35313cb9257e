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
    /// Layer dirs, top first, then the mountpoint.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Unmount a stack mounted by `composefs-storage mount`.
#[derive(clap::Args)]
pub struct UmountArgs {
    mountpoint: PathBuf,
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
    let (mountpoint, dirs) = args.paths.split_last().ok_or_else(|| Error::invalid_argument("no mountpoint"))?;
    let mut layers = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let layer = Layer::from_layer_dir(dir)?;
        layers.push(if args.no_blob_check { layer } else { layer.read_digest_file(dir)? });
    }
    let opts = MountOptions { upper_work, verity, ..MountOptions::default() };
    mount::mount(&layers, mountpoint, &opts)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_umount(args: UmountArgs) -> Result<ExitCode> {
    mount::unmount(&args.mountpoint)?;
    Ok(ExitCode::SUCCESS)
}
