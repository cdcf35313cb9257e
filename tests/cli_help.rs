//! Every subcommand has `--help` with examples, and the exit codes tell usage errors (2) from
//! failures (1).

mod support;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

const SUBCOMMANDS: &[&str] = &[
    "config",
    "convert",
    "export",
    "publish-metadata",
    "toc",
    "mkimage",
    "dump",
    "mount",
    "umount",
    "inspect",
    "demo",
];

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
    assert_eq!(code(&["convert", "--diff-id", "md5:00", "/nonexistent.tar", "/nonexistent-dir"]), Some(2));
    // A layer whose tar is not the DiffID given: a failure, and no layer.
    if let Some(corpus) = support::corpus() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        let tar = corpus.join("cstorage/noparents-ustar/noparents-ustar.tar");
        let zeros = format!("sha256:{}", "0".repeat(64));
        let args = ["convert", "-q", "--diff-id", &zeros, &tar.to_string_lossy(), &layer.to_string_lossy()];
        assert_eq!(code(&args), Some(1));
        assert!(!layer.exists());
    }
}

/// A layer tar of 8 files of 1 MiB (progress is reported per entry).
fn big_tar(path: &std::path::Path) {
    let mut out = Vec::new();
    for i in 0..8 {
        let data: Vec<u8> = format!("file {i}\n").bytes().cycle().take(1 << 20).collect();
        let mut h = [0u8; 512];
        let name = format!("f{i:03}");
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"14544400200");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out).unwrap();
}

#[test]
fn convert_progress_only_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("big.tar");
    big_tar(&tar);
    // stderr is a pipe here: not a byte of progress.
    let o = bin().arg("convert").arg(&tar).arg(tmp.path().join("a")).output().unwrap();
    assert!(o.status.success());
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    // On a terminal (script(1) gives it one), the progress line is drawn and cleared.
    let cmd = format!(
        "{} convert {} {}",
        env!("CARGO_BIN_EXE_composefs-storage"),
        tar.display(),
        tmp.path().join("b").display()
    );
    let Ok(o) = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output() else {
        eprintln!("SKIP: no script(1) to run under a terminal");
        return;
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\r\x1b[Kconverting "), "{text:?}");
    assert!(text.contains("entries"), "{text:?}");
    // --quiet: none even on a terminal.
    let o = Command::new("script").args(["-qec", &format!("{cmd}q --quiet"), "/dev/null"]).output().unwrap();
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("converting"));
}

/// A reader of stdout that goes away ends the CLI by SIGPIPE, as other Unix tools, not by a panic
/// (`composefs-storage compress layer.tar - | head -c 1`).
#[test]
fn a_closed_stdout_is_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let Some(corpus) = support::corpus() else { return };
    let tar = corpus.join("cstorage/handmade-pax/handmade-pax.tar.zst");
    let mut child = bin()
        .args(["compress", &tar.to_string_lossy(), "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The blob is over a megabyte: the child cannot write it all into the pipe before this close.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {stderr}", out.status);
}
