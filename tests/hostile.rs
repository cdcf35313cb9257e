//! The hostile-input suite of issue #9, through the public conversion and pull API: path
//! traversal names, symlink and hardlink games, device nodes, enormous names / xattrs / entry
//! counts, decompression bombs, lying TOCs and truncated blobs. Each ends in a clear error (or,
//! where the input is legal, in a layer that keeps everything inside it), nothing is written
//! outside the layer dir, and the hygiene check finds no fd, mount, loop device or staging dir
//! left behind. Every test takes the hygiene lock (see tests/support/hygiene.rs).

mod support;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use composefs_storage::layer::pull::{pull, FileFetcher, PullOptions};
use composefs_storage::layer::{convert, ConvertOptions, ConvertResult, VerityPolicy};
use composefs_storage::{Error, ErrorKind};
use support::hygiene::{check_err, Hygiene};
use support::tar::{content, TarBuilder};

fn opts() -> ConvertOptions {
    ConvertOptions { verity: VerityPolicy::Off, ..Default::default() }
}

/// Everything under `dir`, relative, sorted (to prove nothing appeared outside the layer).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A sandbox: `work/` holds the layer, `outside/` a sentinel that must never change.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("work")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside/etc")).unwrap();
        std::fs::write(tmp.path().join("outside/etc/passwd"), b"sentinel").unwrap();
        Sandbox { tmp }
    }
    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }
    fn layer(&self) -> PathBuf {
        self.work().join("layer")
    }
    fn assert_outside_untouched(&self) {
        let o = self.tmp.path().join("outside");
        assert_eq!(tree(&o), vec!["etc".to_string(), "etc/passwd".to_string()]);
        assert_eq!(std::fs::read(o.join("etc/passwd")).unwrap(), b"sentinel");
    }

    /// Converts `tar`; must fail with `kind`, a message containing `needle`, and leave nothing.
    fn refuse(&self, what: &str, tar: Vec<u8>, o: &ConvertOptions, kind: ErrorKind, needle: &str) -> Error {
        let layer = self.layer();
        let e = check_err(self.tmp.path(), what, || convert(Box::new(Cursor::new(tar)), &layer, o, None));
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert!(e.to_string().contains(needle), "{what}: {e:?} lacks {needle:?}");
        assert!(tree(&self.work()).is_empty(), "{what}: left {:?}", tree(&self.work()));
        self.assert_outside_untouched();
        e
    }

    /// Converts `tar`, which is legal; the layer holds only `diff/` objects and `composefs-data/`.
    fn accept(&self, what: &str, tar: Vec<u8>) -> ConvertResult {
        let layer = self.layer();
        let h = Hygiene::take(self.tmp.path());
        let r = convert(Box::new(Cursor::new(tar)), &layer, &opts(), None);
        h.assert_clean(what);
        let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        for p in tree(&layer) {
            let md = std::fs::symlink_metadata(layer.join(&p)).unwrap();
            assert!(md.is_dir() || md.is_file(), "{what}: {p} is neither file nor dir on disk");
            assert!(p.starts_with("diff") || p.starts_with("composefs-data"), "{what}: unexpected {p}");
        }
        self.assert_outside_untouched();
        assert_eq!(tree(&self.work())[0], "layer");
        r
    }
}

/// The blob's dump (composefs-storage's own reader), to see where entries landed.
fn dump_of(layer: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
        .arg("dump")
        .arg(layer.join("composefs-data/composefs.blob"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn traversal_names_stay_inside_the_layer() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    let mut t = TarBuilder::new();
    t.file("../../outside/etc/passwd", b"evil1")
        .file("/outside/etc/passwd2", b"evil2")
        .file("a/../../../x", b"evil3")
        .file("./././y", b"y");
    s.accept("traversal names", t.finish());
    let dump = dump_of(&s.layer());
    // Cleaned as containers/storage cleans them: rooted at the layer.
    for p in ["/outside/etc/passwd ", "/outside/etc/passwd2 ", "/x ", "/y "] {
        assert!(dump.lines().any(|l| l.starts_with(p)), "{p} not at the layer root:\n{dump}");
    }
}

#[test]
fn symlink_games_write_nothing_through_links() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    let outside = s.tmp.path().join("outside/etc");
    let mut t = TarBuilder::new();
    // A symlink to a real directory outside, then a file "through" it: a file named under a
    // symlink is not a directory entry of the link's target.
    t.entry("esc", b'2', 0o777, &[], outside.to_str().unwrap()).file("esc/passwd", b"evil");
    s.refuse("file under a symlink", t.finish(), &opts(), ErrorKind::Format, "esc/passwd");

    // Symlinks pointing outside are just symlinks in the image (never followed at conversion).
    let mut t = TarBuilder::new();
    t.entry("up", b'2', 0o777, &[], "../../../../outside/etc")
        .entry("abs", b'2', 0o777, &[], outside.to_str().unwrap())
        .entry("self", b'2', 0o777, &[], "self");
    s.accept("symlinks pointing outside", t.finish());
}

#[test]
fn hardlink_games_are_refused_with_the_entry_named() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("hardlink to a missing file", TarBuilder::new().entry("hl", b'1', 0o644, &[], "missing").finish(), "hl"),
        (
            "hardlink outside the layer",
            TarBuilder::new().entry("hl", b'1', 0o644, &[], "../../outside/etc/passwd").finish(),
            "hl",
        ),
        (
            "hardlink to a directory",
            TarBuilder::new().dir("d").entry("hl", b'1', 0o644, &[], "d").finish(),
            "directory",
        ),
        ("hardlink to itself", TarBuilder::new().entry("hl", b'1', 0o644, &[], "hl").finish(), "hl"),
    ];
    for (what, tar, needle) in cases {
        s.refuse(what, tar, &opts(), ErrorKind::Format, needle);
    }
}

#[test]
fn device_nodes_exist_only_in_the_image() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    let mut t = TarBuilder::new();
    t.dir("dev").entry("dev/null", b'3', 0o666, &[], "").entry("dev/sda", b'4', 0o660, &[], "").entry(
        "dev/fifo",
        b'6',
        0o644,
        &[],
        "",
    );
    s.accept("device nodes", t.finish());
    let dump = dump_of(&s.layer());
    assert!(dump.lines().any(|l| l.starts_with("/dev/null ")), "{dump}");
}

#[test]
fn enormous_names_xattrs_and_entry_counts_hit_limits() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    let long = "n".repeat(5000);
    let mut t = TarBuilder::new();
    t.pax(&[("path", long.as_bytes())]).file("short", b"x");
    s.refuse("a 5000-byte name", t.finish(), &opts(), ErrorKind::LimitExceeded, "name");

    let component = "c".repeat(300);
    let mut t = TarBuilder::new();
    t.pax(&[("path", component.as_bytes())]).file("short", b"x");
    s.refuse("a 300-byte name component", t.finish(), &opts(), ErrorKind::LimitExceeded, "255");

    let big = vec![b'v'; 70_000];
    let mut t = TarBuilder::new();
    t.pax(&[("SCHILY.xattr.user.big", &big)]).file("f", b"x");
    s.refuse("a 70 KB xattr value", t.finish(), &opts(), ErrorKind::LimitExceeded, "xattr");

    let mut t = TarBuilder::new();
    let records: Vec<(String, Vec<u8>)> = (0..200).map(|i| (format!("SCHILY.xattr.user.k{i}"), vec![b'v'])).collect();
    let refs: Vec<(&str, &[u8])> = records.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    t.pax(&refs).file("f", b"x");
    s.refuse("200 xattrs on one entry", t.finish(), &opts(), ErrorKind::LimitExceeded, "xattr");

    let mut t = TarBuilder::new();
    for i in 0..300 {
        t.file(&format!("f{i}"), b"");
    }
    let mut o = opts();
    o.limits.max_entries = 100;
    s.refuse("300 entries over a limit of 100", t.finish(), &o, ErrorKind::LimitExceeded, "entries");
}

#[test]
fn decompression_bombs_and_truncated_streams_end_in_clear_errors() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    // 64 MiB of a non-tar byte compressed to a few KB: refused at the first header, without
    // reading (or buffering) the rest.
    let bomb = zstd::encode_all(std::io::repeat(0xAB).take_bytes(64 << 20), 3).unwrap();
    assert!(bomb.len() < 64 << 10);
    s.refuse("zstd bomb of garbage", bomb, &opts(), ErrorKind::Format, "checksum");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::copy(&mut std::io::repeat(0xAB).take_bytes(64 << 20), &mut gz).unwrap();
    s.refuse("gzip bomb of garbage", gz.finish().unwrap(), &opts(), ErrorKind::Format, "checksum");

    // A header that claims a 1 GiB file, then the stream ends: truncated, named.
    let mut t = TarBuilder::new();
    t.file("small", b"ok");
    let mut tar = t.unfinished();
    let mut big = TarBuilder::new();
    big.entry("huge", b'0', 0o644, &[], "");
    let mut header = big.unfinished();
    // Patch the size field to 1 GiB and fix the checksum.
    header[124..136].copy_from_slice(b"10000000000\0");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header[..512].iter().map(|&b| u32::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    tar.extend_from_slice(&header[..512]);
    tar.extend_from_slice(&content(1, 1 << 20));
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    s.refuse("truncated 1 GiB entry", zst, &opts(), ErrorKind::Format, "truncated");

    // A stream cut inside a header.
    let mut t = TarBuilder::new();
    t.file("a", b"a").raw(&[b'x'; 100]);
    s.refuse("cut in a header", t.unfinished(), &opts(), ErrorKind::Format, "truncated");
}

trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}

fn cstorage() -> PathBuf {
    support::cstorage()
}

fn annotations(case: &str) -> std::collections::BTreeMap<String, String> {
    let p = cstorage().join(case).join(format!("{case}.annotations.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn lying_tocs_and_truncated_chunked_blobs_are_refused() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    let case = "etc-doc-gnu";
    let blob_path = cstorage().join(case).join(format!("{case}.zstd-chunked"));
    let blob = std::fs::read(&blob_path).unwrap();
    let popts = PullOptions { annotations: Some(annotations(case)), verity: VerityPolicy::Off, ..Default::default() };
    let layer = s.layer();

    // Truncated: the footer and TOC the annotations point at are gone.
    let cut = s.tmp.path().join("cut.zstd-chunked");
    std::fs::write(&cut, &blob[..blob.len() / 2]).unwrap();
    let e = check_err(s.tmp.path(), "truncated chunked blob", || {
        let mut f = FileFetcher::new(std::fs::File::open(&cut).unwrap()).unwrap();
        pull(&mut f, &layer, &popts, None)
    });
    assert!(matches!(e.kind(), ErrorKind::Format | ErrorKind::Verification | ErrorKind::Io), "{e}");
    assert!(tree(&s.work()).is_empty());

    // A TOC digest that lies (the annotations authenticate another TOC).
    let mut lying = popts.clone();
    lying
        .annotations
        .as_mut()
        .unwrap()
        .insert("io.github.containers.zstd-chunked.manifest-checksum".into(), format!("sha256:{}", "1".repeat(64)));
    let e = check_err(s.tmp.path(), "lying TOC digest", || {
        let mut f = FileFetcher::new(std::fs::File::open(&blob_path).unwrap()).unwrap();
        pull(&mut f, &layer, &lying, None)
    });
    assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    assert!(tree(&s.work()).is_empty());

    // A TOC position that lies (points into file data).
    let mut lying = popts.clone();
    lying
        .annotations
        .as_mut()
        .unwrap()
        .insert("io.github.containers.zstd-chunked.manifest-position".into(), "0:100:200:1".into());
    let e = check_err(s.tmp.path(), "lying TOC position", || {
        let mut f = FileFetcher::new(std::fs::File::open(&blob_path).unwrap()).unwrap();
        pull(&mut f, &layer, &lying, None)
    });
    assert!(matches!(e.kind(), ErrorKind::Format | ErrorKind::Verification), "{e}");
    assert!(tree(&s.work()).is_empty());
    s.assert_outside_untouched();
}

/// The hygiene check itself can fail: a file left open under the sandbox and a staging dir left
/// behind are both reported.
#[test]
fn hygiene_check_reports_a_leaked_fd_and_staging_dir() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let s = Sandbox::new();
    let h = Hygiene::take(s.tmp.path());
    let leaked = std::fs::File::create(s.work().join("leak")).unwrap();
    std::fs::create_dir(s.work().join(".layer.staging-1-2")).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.assert_clean("self-test")));
    let msg = r.expect_err("the leaks were not reported");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("work/leak") && msg.contains(".layer.staging-1-2"), "{msg}");
    drop(leaked);
}

/// Runs the CLI and returns its exit status and its own peak RSS in KiB (wait4, not the
/// maximum over every child this test binary ever had).
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which Child::wait cannot replace
fn run_cli_rss(args: &[&std::ffi::OsStr]) -> (i32, i64) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for the child we spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid of our own unwaited child; valid pointers to locals.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "composefs-storage did not exit normally: {status:#x}");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Writes a zstd tar of 2 000 small files and, when `big` > 0, one file of `big` zero bytes,
/// streamed (never held in memory).
fn write_zero_bomb(path: &Path, big: u64) {
    use std::io::Write;
    let mut z = zstd::Encoder::new(std::fs::File::create(path).unwrap(), 1).unwrap();
    let mut t = TarBuilder::new();
    for i in 0..2_000 {
        t.file(&format!("d{}/f{i}", i % 100), format!("{i}").as_bytes());
    }
    if big > 0 {
        t.entry("zeros", b'0', 0o644, &[], "");
    }
    let mut head = t.unfinished();
    if big > 0 {
        let h = head.len() - 512;
        head[h + 124..h + 136].copy_from_slice(format!("{big:011o}\0").as_bytes());
        head[h + 148..h + 156].copy_from_slice(b"        ");
        let sum: u32 = head[h..].iter().map(|&b| u32::from(b)).sum();
        head[h + 148..h + 155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }
    z.write_all(&head).unwrap();
    std::io::copy(&mut std::io::repeat(0).take_bytes(big), &mut z).unwrap();
    z.write_all(&vec![0u8; (512 - (big % 512) as usize) % 512 + 1024]).unwrap(); // padding, end blocks
    z.finish().unwrap();
}

#[test]
fn a_legal_bomb_converts_in_memory_bounded_by_metadata() {
    let _serial = support::hygiene::lock();
    let s = Sandbox::new();
    // 128 MiB of zeros compress to a few KB: a legal layer, so it must convert, streaming, in
    // memory that does not grow with the file (issue 9's "bounded memory"). The same layer
    // without the big file is the baseline: the difference is what the file costs.
    const BIG: u64 = 128 << 20;
    let (small, bomb) = (s.work().join("small.tar.zst"), s.work().join("bomb.tar.zst"));
    write_zero_bomb(&small, 0);
    write_zero_bomb(&bomb, BIG);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let convert = |input: &Path, layer: &Path| {
        run_cli_rss(&["convert".as_ref(), "--verity".as_ref(), "off".as_ref(), input.as_os_str(), layer.as_os_str()])
    };
    let (code, rss_small) = convert(&small, &s.work().join("small-layer"));
    assert_eq!(code, 0);
    let layer = s.layer();
    let (code, rss_bomb) = convert(&bomb, &layer);
    assert_eq!(code, 0, "the bomb is a legal layer");
    assert!(
        rss_bomb < rss_small + 16 * 1024 && rss_bomb < 64 * 1024,
        "peak RSS {rss_bomb} KiB with a {BIG}-byte file, {rss_small} KiB without: grows with the file"
    );
    eprintln!("peak RSS: {rss_small} KiB without the big file, {rss_bomb} KiB with it");
    let diff = layer.join("diff");
    let big: Vec<_> =
        tree(&diff).into_iter().filter(|p| std::fs::metadata(diff.join(p)).unwrap().len() == BIG).collect();
    assert_eq!(big.len(), 1, "one object of the big file's size");
    s.assert_outside_untouched();
}
