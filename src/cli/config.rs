//! `composefs-storage config`: the effective containers-storage.conf settings as JSON, or
//! (`--check`) why composefs would not take effect.

use std::path::PathBuf;
use std::process::ExitCode;

use composefs_storage::config::{self, LoadOptions, Severity};

/// Exit code of `config --check` when a finding says composefs will not take effect.
const EXIT_CHECK_FAILED: u8 = 3;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  composefs-storage config                       # effective settings as JSON
  composefs-storage config --check               # why composefs would not take effect
  composefs-storage config --check --json | jq '.[].code'
  composefs-storage config --file ./storage.conf | jq .

Exit status: 0 ok, 1 the files could not be read or parsed, 2 bad usage, 3 --check found a
problem that keeps composefs from taking effect.")]
pub struct Args {
    /// Read only this file (no search, no drop-ins, no environment overrides).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Look for /etc/containers and /usr/share/containers under DIR instead of /.
    #[arg(long, value_name = "DIR", conflicts_with = "file")]
    root: Option<PathBuf>,
    /// Print findings, one per line; exit 3 if composefs would not take effect.
    #[arg(long)]
    check: bool,
    /// With --check: print the findings as a JSON array of {severity, code, message}.
    #[arg(long, requires = "check")]
    json: bool,
}

pub fn run(args: Args) -> composefs_storage::Result<ExitCode> {
    let cfg = match &args.file {
        Some(path) => config::load_file(path)?,
        None => {
            let mut opts = LoadOptions::from_process();
            if let Some(root) = args.root {
                opts.root = root;
            }
            config::load(&opts)?
        }
    };
    if !args.check {
        println!("{}", cfg.to_json());
        return Ok(ExitCode::SUCCESS);
    }
    let mut findings = cfg.check();
    findings.extend(config::check_host(&cfg, &config::Host::current()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings).unwrap_or_default());
    } else if findings.is_empty() {
        println!("ok: composefs takes effect with these settings");
    } else {
        for f in &findings {
            println!("{f}");
        }
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        Ok(ExitCode::from(EXIT_CHECK_FAILED))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
