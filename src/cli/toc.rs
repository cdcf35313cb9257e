//! `composefs-storage toc`: print the TOC JSON of a zstd:chunked or eStargz blob.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use composefs_storage::chunked::{read_manifest, ReadOptions};
use composefs_storage::error::ResultExt;
use composefs_storage::{Error, Result};

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  composefs-storage toc --annotations layer.annotations.json layer.zst\n  composefs-storage toc layer.zst | jq '.entries | length'"
)]
pub struct Args {
    /// JSON object of the layer's OCI annotations (the TOC digest there authenticates the TOC).
    /// Without it the TOC is found through the blob's footer and is not authenticated.
    #[arg(long, value_name = "FILE")]
    annotations: Option<PathBuf>,
    /// Print where the TOC is and how it was verified (JSON) instead of the TOC.
    #[arg(long)]
    location: bool,
    /// The zstd:chunked or eStargz blob.
    blob: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let annotations: Option<BTreeMap<String, String>> =
        match &args.annotations {
            Some(p) => {
                let data = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
                Some(serde_json::from_slice(&data).map_err(|e| {
                    Error::format(format!("{}: not a JSON object of string annotations: {e}", p.display()))
                })?)
            }
            None => None,
        };
    let blob = std::fs::File::open(&args.blob).with_context(|| format!("open {}", args.blob.display()))?;
    let m = read_manifest(&blob, annotations.as_ref(), &ReadOptions::default())
        .with_context(|| args.blob.display().to_string())?;
    let mut out = std::io::stdout().lock();
    let written = if args.location {
        let text = serde_json::to_string_pretty(&m.location).map_err(|e| Error::format(e.to_string()))?;
        writeln!(out, "{text}")
    } else {
        out.write_all(&m.toc_json).and_then(|_| writeln!(out))
    };
    written.with_context(|| "write to stdout")?;
    if !m.location.authenticated {
        eprintln!(
            "composefs-storage: note: TOC located through the blob footer; its digest {} is not authenticated",
            m.location.toc_digest
        );
    }
    Ok(ExitCode::SUCCESS)
}
