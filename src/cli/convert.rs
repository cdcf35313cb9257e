//! `composefs-storage convert`: one layer blob (path or `-` for stdin) into a layer directory.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeMap;
use std::path::Path;

use composefs_storage::chunked::estargz::{detect_file, ANNOTATION_TOC_DIGEST};
use composefs_storage::chunked::manifest::{ANNOTATION_TOC_CHECKSUM, LEGACY_ANNOTATION_TOC_CHECKSUM};
use composefs_storage::chunked::toc::sha256_bytes;
use composefs_storage::layer::pull::{pull, FileFetcher, PullOptions};
use composefs_storage::layer::{convert, ConvertOptions, EstargzCheck, VerityPolicy};
use composefs_storage::{Error, Result};

use crate::progress::ProgressLine;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  composefs-storage convert layer.tar.gz /var/tmp/l1
  composefs-storage convert --source-layer /var/tmp/l1 layer2.tar.zst /var/tmp/l2
  curl -sL URL | composefs-storage convert --json - /var/tmp/l3
  composefs-storage convert --annotations ann.json --source-layer /var/tmp/l1 blob.zst /var/tmp/l4

A progress line is drawn on stderr while converting when stderr is a terminal.")]
pub struct Args {
    /// Another layer directory whose `diff/` objects may be reused (repeatable).
    #[arg(long = "source-layer", value_name = "DIR")]
    source_layers: Vec<PathBuf>,
    /// Keep an index across the source layers' caches in DIR (created and rebuilt as needed), so
    /// lookups cost the same with hundreds of source layers as with a few.
    #[arg(long, value_name = "DIR")]
    index_dir: Option<PathBuf>,
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
    /// JSON object of the layer's OCI annotations. When they describe a zstd:chunked TOC, the
    /// layer is pulled partially: only contents that no source layer has are read from the blob.
    /// An eStargz TOC digest authenticates the TOC; its layer is converted whole (it has no
    /// tar-split to check a DiffID with), or pulled partially with --insecure-skip-diff-id.
    #[arg(long, value_name = "FILE")]
    annotations: Option<PathBuf>,
    /// Pull a zstd:chunked or eStargz blob through the TOC its footer points at (not
    /// authenticated), without annotations.
    #[arg(long)]
    chunked: bool,
    /// The input is an eStargz blob (found by its footer anyway when INPUT is a file): its
    /// `stargz.index.json` and landmark files stay out of the tree, and its TOC is checked
    /// against the layer, file by file and chunk by chunk.
    #[arg(long)]
    estargz: bool,
    /// The DiffID (`sha256:<hex>`) the layer must have, from the image config: a mismatch fails
    /// and leaves nothing.
    #[arg(long, value_name = "DIGEST")]
    diff_id: Option<String>,
    /// Accept zstd:chunked layers without a tar-split and skip the DiffID check
    /// (containers/storage's insecure_allow_unpredictable_image_contents).
    #[arg(long)]
    insecure_skip_diff_id: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr (it is drawn only when stderr is a terminal anyway).
    #[arg(long, short)]
    quiet: bool,
    /// The layer blob: tar, gzip or zstd (by magic); `-` reads standard input.
    input: PathBuf,
    /// The layer directory to create; it must not exist.
    layer_dir: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let annotations = match &args.annotations {
        Some(p) => Some(read_annotations(p)?),
        None => None,
    };
    let chunked = args.chunked
        || annotations.as_ref().is_some_and(|a| {
            a.contains_key(ANNOTATION_TOC_CHECKSUM)
                || a.contains_key(LEGACY_ANNOTATION_TOC_CHECKSUM)
                || a.contains_key(ANNOTATION_TOC_DIGEST)
        });
    if chunked {
        return run_pull(args, annotations);
    }
    let verity = VerityPolicy::parse(&args.verity)?;
    let expected_diff_id = expected_diff_id(&args)?;
    let mut estargz = args.estargz;
    let input: Box<dyn Read + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        let file = std::fs::File::open(&args.input)
            .map_err(|e| Error::io(format_args!("open {}", args.input.display()), e))?;
        estargz |= detect_file(&file)?;
        Box::new(file)
    };
    let options = ConvertOptions {
        source_layers: args.source_layers,
        index_dir: args.index_dir,
        hardlinks: args.hardlinks,
        verity,
        oci_whiteouts: !args.keep_whiteout_files,
        estargz: estargz.then(EstargzCheck::default),
        expected_diff_id,
        ..Default::default()
    };
    let mut bar = ProgressLine::new("converting", None, args.quiet);
    let result = match bar.as_mut() {
        Some(b) => convert(input, &args.layer_dir, &options, Some(&mut |p| b.update(p))),
        None => convert(input, &args.layer_dir, &options, None),
    };
    if let Some(b) = bar {
        b.finish();
    }
    let result = result?;
    if let Some(p) = &args.toc {
        std::fs::write(p, &result.toc_json).map_err(|e| Error::io(format_args!("write {}", p.display()), e))?;
    }
    if let Some(p) = &args.tar_split {
        std::fs::write(p, result.tar_split_gz()?).map_err(|e| Error::io(format_args!("write {}", p.display()), e))?;
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

fn expected_diff_id(args: &Args) -> Result<Option<[u8; 32]>> {
    args.diff_id
        .as_deref()
        .map(|d| sha256_bytes(d).map_err(|e| Error::invalid_argument(format!("--diff-id: {e}"))))
        .transpose()
}

fn read_annotations(p: &Path) -> Result<BTreeMap<String, String>> {
    let data = std::fs::read(p).map_err(|e| Error::io(format_args!("read {}", p.display()), e))?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::format(format!("{}: not a JSON object of string annotations: {e}", p.display())))
}

/// The zstd:chunked path: a partial pull from the blob file.
fn run_pull(args: Args, annotations: Option<BTreeMap<String, String>>) -> Result<ExitCode> {
    if args.input.as_os_str() == "-" {
        return Err(Error::invalid_argument(
            "a zstd:chunked or eStargz layer is pulled by ranges: give the blob as a file, not standard \
             input (or convert the stream without --annotations: --estargz for eStargz)",
        ));
    }
    let file =
        std::fs::File::open(&args.input).map_err(|e| Error::io(format_args!("open {}", args.input.display()), e))?;
    let mut fetcher = FileFetcher::new(file)?;
    let expected_diff_id = expected_diff_id(&args)?;
    let options = PullOptions {
        annotations,
        source_layers: args.source_layers,
        index_dir: args.index_dir,
        hardlinks: args.hardlinks,
        verity: VerityPolicy::parse(&args.verity)?,
        oci_whiteouts: !args.keep_whiteout_files,
        insecure_skip_diff_id: args.insecure_skip_diff_id,
        expected_diff_id,
        ..Default::default()
    };
    let mut bar = ProgressLine::new("pulling", None, args.quiet);
    let result = match bar.as_mut() {
        Some(b) => pull(&mut fetcher, &args.layer_dir, &options, Some(&mut |p| b.update(p))),
        None => pull(&mut fetcher, &args.layer_dir, &options, None),
    };
    if let Some(b) = bar {
        b.finish();
    }
    let result = result?;
    if let Some(p) = &args.toc {
        std::fs::write(p, &result.toc_json).map_err(|e| Error::io(format_args!("write {}", p.display()), e))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result.to_json()).unwrap_or_default());
    } else {
        println!(
            "{}: {} entries, {} objects ({} bytes written, {} reused), read {} of {} blob bytes{}",
            args.layer_dir.display(),
            result.entries,
            result.objects.objects,
            result.objects.bytes_written,
            result.objects.bytes_reused,
            result.blob_bytes_fetched,
            result.blob_size,
            result
                .diff_id
                .map(|d| format!(", DiffID sha256:{}", composefs_storage::source::hex(&d)))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
