//! `composefs-storage convert`: one layer blob (path or `-` for stdin) into a layer directory.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};
use composefs_storage::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Another layer directory whose `diff/` objects may be reused (repeatable).
    #[arg(long = "source-layer", value_name = "DIR")]
    source_layers: Vec<PathBuf>,
    /// Reuse source objects by hardlink instead of reflink/copy.
    #[arg(long)]
    hardlinks: bool,
    /// fs-verity on objects and the blob.
    #[arg(long, value_name = "off|if-available|require", default_value = "if-available")]
    verity: String,
    /// Keep OCI whiteouts as plain files, as containers/storage's flat path does (for comparison).
    #[arg(long)]
    keep_whiteout_files: bool,
    /// Also write the layer's TOC JSON to FILE.
    #[arg(long, value_name = "FILE")]
    toc: Option<PathBuf>,
    /// Also write the layer's tar-split (gzip-compressed NDJSON) to FILE.
    #[arg(long, value_name = "FILE")]
    tar_split: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// The layer blob: tar, gzip or zstd (by magic); `-` reads standard input.
    input: PathBuf,
    /// The layer directory to create; it must not exist.
    layer_dir: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let options = ConvertOptions {
        source_layers: args.source_layers,
        hardlinks: args.hardlinks,
        verity: VerityPolicy::parse(&args.verity)?,
        oci_whiteouts: !args.keep_whiteout_files,
        ..Default::default()
    };
    let input: Box<dyn Read + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.input)
                .map_err(|e| Error::io(format_args!("open {}", args.input.display()), e))?,
        )
    };
    let result = convert(input, &args.layer_dir, &options, None)?;
    if let Some(p) = &args.toc {
        std::fs::write(p, &result.toc_json).map_err(|e| Error::io(format_args!("write {}", p.display()), e))?;
    }
    if let Some(p) = &args.tar_split {
        std::fs::write(p, &result.tar_split_gz).map_err(|e| Error::io(format_args!("write {}", p.display()), e))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result.to_json()).unwrap_or_default());
    } else {
        println!(
            "{}: {} entries, {} objects ({} bytes written, {} reused), DiffID sha256:{}",
            args.layer_dir.display(),
            result.entries,
            result.objects.objects,
            result.objects.bytes_written,
            result.objects.bytes_reused,
            composefs_storage::source::hex(&result.diff_id)
        );
    }
    Ok(ExitCode::SUCCESS)
}
