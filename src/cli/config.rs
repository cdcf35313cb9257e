//! `composefs-storage config`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> composefs_storage::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
