//! `composefs-storage export`: write a layer's original tar to standard output.

use std::path::PathBuf;
use std::process::ExitCode;

use composefs_storage::layer::export::export;
use composefs_storage::Result;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  composefs-storage export /var/tmp/layer > layer.tar\n  \
                        composefs-storage export /var/tmp/layer | sha256sum   # the DiffID")]
pub struct Args {
    /// Print the DiffID (sha256 of the tar) on standard error when done.
    #[arg(long)]
    print_diff_id: bool,
    /// A layer directory made by `convert` (it keeps the TOC and tar-split in composefs-data/).
    layer_dir: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let (diff_id, size) = export(&args.layer_dir, &mut out)?;
    if args.print_diff_id {
        eprintln!("sha256:{} {size}", composefs_storage::source::hex(&diff_id));
    }
    Ok(ExitCode::SUCCESS)
}
