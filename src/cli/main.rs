//! The `composefs-storage` command-line tool: a thin shell over the library's Rust API.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 usage error (bad arguments), 3 `config --check`
//! found problems.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod compress;
mod config;
mod convert;
mod demo;
mod export;
mod image;
mod inspect;
#[cfg(test)]
mod man;
mod mount;
mod progress;
mod publish;
mod toc;

#[derive(Parser)]
#[command(
    name = "composefs-storage",
    version,
    about = "The composefs layer path of containers/storage",
    long_about = "The composefs layer path of containers/storage: convert image layers (tar, gzip, zstd, \
zstd:chunked, eStargz) into composefs layer directories, reuse their files across layers, and mount \
stacks of them as one overlay.

A composefs layer directory holds diff/, an object directory with each regular file stored once \
under its content's sha256 (diff/ab/cdef...), and composefs-data/composefs.blob, an EROFS image with \
all of the layer's metadata that redirects each regular file to its object. It is the layout \
containers/storage writes with use_composefs = \"true\" in containers-storage.conf, and the layer \
directories this tool writes can be recorded in its store (publish-metadata).

The same operations are in the library libcomposefs_storage (see composefs-storage(3)).",
    after_help = "Start here:
  composefs-storage demo                          # the whole job on a built-in example
  composefs-storage convert layer.tar.gz /var/tmp/l1
  composefs-storage inspect --verify /var/tmp/l1

Exit status: 0 success, 1 the operation failed, 2 bad usage, 3 config --check found problems.
`composefs-storage help SUBCOMMAND` shows each subcommand's options and examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the effective containers-storage.conf settings, or check why composefs would not take effect.
    Config(config::Args),
    /// Compress a layer tar (any compression) into a zstd:chunked blob, printing its annotations.
    Compress(compress::Args),
    /// Convert one layer blob (tar, gzip, zstd, zstd:chunked, eStargz) into a composefs layer directory.
    Convert(convert::Args),
    /// Write a layer's original tar (byte for byte, from its tar-split and objects) to stdout.
    Export(export::Args),
    /// Publish a layer's TOC, layers cache and tar-split into a containers/storage layer store.
    PublishMetadata(publish::Args),
    /// Print the TOC JSON of a zstd:chunked or eStargz blob (verified against its annotations when given).
    Toc(toc::Args),
    /// Write a composefs EROFS image from a composefs dump, as mkcomposefs --from-file does.
    Mkimage(image::MkimageArgs),
    /// Print a composefs image as a composefs dump.
    Dump(image::DumpArgs),
    /// Mount layer dirs (top first) as one overlay: composefs and classic layers, ro or rw.
    Mount(mount::MountArgs),
    /// Unmount a stack mounted with `mount`.
    Umount(mount::UmountArgs),
    /// Clean up after killed mount sequences and bound the derived-image cache.
    MountCleanup(mount::CleanupArgs),
    /// Summarise a layer dir (entries, objects, blob, fs-verity, metadata); --verify checks its objects.
    Inspect(inspect::Args),
    /// Run the main job on a built-in 3-layer example: convert, dedup, mount, list, unmount.
    Demo(demo::Args),
}

/// Exit code for a failed operation.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad command-line usage (clap uses the same).
pub const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // Die of SIGPIPE, as Unix tools do, when whoever reads stdout goes away (`export | head`): the
    // Rust runtime ignores it, which turns the next write into a panic in `println!`.
    // SAFETY: at start-up, before any other thread exists; SIG_DFL is a valid disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(args) => config::run(args),
        Command::Compress(args) => compress::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Toc(args) => toc::run(args),
        Command::PublishMetadata(args) => publish::run(args),
        Command::Export(args) => export::run(args),
        Command::Mkimage(args) => image::mkimage(args),
        Command::Dump(args) => image::dump(args),
        Command::Mount(args) => mount::run_mount(args),
        Command::Umount(args) => mount::run_umount(args),
        Command::MountCleanup(args) => mount::run_cleanup(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("composefs-storage: {e}");
            ExitCode::from(if e.kind() == composefs_storage::ErrorKind::InvalidArgument {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            })
        }
    }
}
