//! `composefs-storage compress`: a layer tar (any compression) into a zstd:chunked blob.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use composefs_storage::chunked::writer::{compress, CompressOptions, CompressResult, DEFAULT_LEVEL};
use composefs_storage::{Error, Result};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  composefs-storage compress --annotations-out l1.ann.json layer.tar.gz l1.zst
  composefs-storage convert --annotations l1.ann.json --source-layer /var/tmp/l0 l1.zst /var/tmp/l1
  tar -C dir -c . | composefs-storage compress --json - - > l2.zst

The blob is what containers/storage's zstd:chunked compressor writes (each file's data in its own
zstd frames, large files split into rollsum chunks, runs of zeros as `zeros` chunks, then the TOC,
the tar-split and the footer); `zstd -d` of it gives the input tar byte for byte. The annotations
(TOC digest and positions) belong in the image manifest's layer descriptor.")]
pub struct Args {
    /// Write the layer's OCI annotations (a JSON object) to FILE.
    #[arg(long, value_name = "FILE")]
    annotations_out: Option<PathBuf>,
    /// zstd level of every frame (containers/storage uses 10).
    #[arg(long, default_value_t = DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Threads compressing frames (0: one per CPU); the blob is the same whatever the number.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the result (annotations, digests, sizes) as JSON (on stderr when OUTPUT is `-`).
    #[arg(long)]
    json: bool,
    /// The layer: tar, gzip or zstd (by magic); `-` reads standard input.
    input: PathBuf,
    /// The blob to create (it must not exist); `-` writes standard output.
    output: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let input: Box<dyn Read + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.input)
                .map_err(|e| Error::io(format_args!("open {}", args.input.display()), e))?,
        )
    };
    let options = CompressOptions { level: args.level, threads: args.threads, ..Default::default() };
    let to_stdout = args.output.as_os_str() == "-";
    let result = if to_stdout {
        let stdout = std::io::stdout();
        let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
        let r = compress(input, &mut w, &options)?;
        w.flush().map_err(|e| Error::io("write standard output", e))?;
        r
    } else {
        compress_to_file(input, &args.output, &options)?
    };
    if let Some(p) = &args.annotations_out {
        let json = serde_json::to_string_pretty(&result.annotations).unwrap_or_default() + "\n";
        std::fs::write(p, json).map_err(|e| Error::io(format_args!("write {}", p.display()), e))?;
    }
    let report = if args.json {
        serde_json::to_string_pretty(&result.to_json()).unwrap_or_default()
    } else {
        format!(
            "{}: {} entries ({} more chunks), {} -> {} bytes, TOC {}, DiffID sha256:{}",
            args.output.display(),
            result.entries,
            result.chunk_entries,
            result.tar_size,
            result.blob_size,
            result.toc_digest,
            composefs_storage::source::hex(&result.diff_id)
        )
    };
    if to_stdout {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes to a temporary file beside `output` and renames it into place only when complete.
fn compress_to_file(input: Box<dyn Read + Send>, output: &Path, options: &CompressOptions) -> Result<CompressResult> {
    if output.symlink_metadata().is_ok() {
        return Err(Error::invalid_argument(format!("{} already exists", output.display())));
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".compress-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format_args!("create a temporary file in {}", dir.display()), e))?;
    let result = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let r = compress(input, &mut w, options)?;
        w.flush().map_err(|e| Error::io(format_args!("write {}", output.display()), e))?;
        r
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(format_args!("chmod {}", tmp.path().display()), e))?;
    // Dropping `tmp` on any error above removes it; persist_noclobber refuses to replace a file.
    tmp.persist_noclobber(output)
        .map_err(|e| Error::io(format_args!("rename the blob into place as {}", output.display()), e.error))?;
    Ok(result)
}
