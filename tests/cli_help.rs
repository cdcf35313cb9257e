//! Every subcommand has `--help` with examples, and the exit codes tell usage errors (2) from
//! failures (1).

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

const SUBCOMMANDS: &[&str] =
    &["config", "convert", "export", "toc", "mkimage", "dump", "mount", "umount", "inspect", "demo"];

#[test]
fn every_subcommand_has_help_with_examples() {
    let top = bin().arg("--help").output().unwrap();
    assert!(top.status.success());
    let top = String::from_utf8_lossy(&top.stdout);
    for sub in SUBCOMMANDS {
        assert!(top.contains(&format!("  {sub} ")), "top-level help lists {sub}:\n{top}");
        let o = bin().args([sub, "--help"]).output().unwrap();
        assert!(o.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Example"), "{sub} --help has examples:\n{text}");
        assert!(text.contains(&format!("composefs-storage {sub}")), "{sub} examples use {sub}:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let code = |args: &[&str]| bin().args(args).output().unwrap().status.code();
    assert_eq!(code(&[]), Some(2));
    assert_eq!(code(&["no-such-subcommand"]), Some(2));
    assert_eq!(code(&["convert"]), Some(2));
    assert_eq!(code(&["inspect", "--no-such-flag", "x"]), Some(2));
    assert_eq!(code(&["convert", "--verity", "sometimes", "/nonexistent.tar", "/nonexistent-dir"]), Some(2));
    assert_eq!(code(&["convert", "/nonexistent.tar", "/nonexistent-dir"]), Some(1));
    assert_eq!(code(&["dump", "/nonexistent.cfs"]), Some(1));
    assert_eq!(code(&["inspect", "/nonexistent-layer"]), Some(1));
}
