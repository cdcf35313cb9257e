//! `composefs-storage publish-metadata`: write a layer's TOC, layers cache and tar-split into a
//! containers/storage layer store (SPEC §2.3), so containers/storage dedups against the layer
//! and can export it.

use std::path::PathBuf;
use std::process::ExitCode;

use composefs_storage::layer::cstorage::{publish_layer_metadata, PublishOptions};
use composefs_storage::Result;

#[derive(clap::Args)]
#[command(after_help = "Writes <GRAPHROOT>/overlay-layers/<ID>/ (big data zstd-chunked-manifest, \
                        zstd-chunked-layer-data, chunked-manifest-cache) and <ID>.tar-split.gz, under \
                        the layer store lock. layers.json is left to containers/storage: record the \
                        layer there with the printed big-data-names and diff-size.\n\n\
                        Examples:\n  \
                        composefs-storage convert layer.tar /var/lib/containers/storage/overlay/$ID\n  \
                        composefs-storage publish-metadata --graphroot /var/lib/containers/storage \\\n      \
                        --layer-id $ID /var/lib/containers/storage/overlay/$ID")]
pub struct Args {
    /// The containers/storage graph root (its layer store is GRAPHROOT/overlay-layers).
    #[arg(long, value_name = "DIR")]
    graphroot: PathBuf,
    /// The layer's id in the store (containers/storage uses 64 lowercase hex digits).
    #[arg(long, value_name = "ID")]
    layer_id: String,
    /// Do not take GRAPHROOT/overlay-layers/layers.lock (only when the caller holds it).
    #[arg(long)]
    no_lock: bool,
    /// A layer directory made by `convert` (it keeps the TOC, cache and tar-split in composefs-data/).
    layer_dir: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let options = PublishOptions { lock_layer_store: !args.no_lock };
    let r = publish_layer_metadata(&args.layer_dir, &args.graphroot, &args.layer_id, &options)?;
    println!("{}", r.to_json());
    Ok(ExitCode::SUCCESS)
}
