//! `composefs-storage demo`: the main job on a built-in example, with no input needed. Three
//! layer tars (gzip, zstd, plain) are written in code, converted into a temporary store (layers 2
//! and 3 reuse layer 1's objects), then mounted as one stack when root and the kernel allow it;
//! a few files of the merged view show the whiteout and the opaque dir at work.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use composefs_storage::layer::{convert, ConvertOptions, ConvertResult, VerityPolicy};
use composefs_storage::mount::{self, Layer, MountOptions};
use composefs_storage::source::hex;
use composefs_storage::{Error, ErrorKind, Result};

use crate::progress::human_bytes;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  composefs-storage demo
  sudo composefs-storage demo                  # root: also mounts the stack
  composefs-storage demo --workdir /var/tmp --keep   # keep the store to look at it

The demo exits 0 when every step it could run behaved as expected; steps that need root or
kernel features (EROFS, overlayfs) are skipped with the reason when unavailable.")]
pub struct Args {
    /// Create the temporary store under DIR (default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Leave the store in place (its path is printed) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Do not try to mount, even as root.
    #[arg(long)]
    no_mount: bool,
}

/// A fixed mtime for every entry (2024-01-01), so the example is the same on every run.
const MTIME: u64 = 1_704_067_200;

/// One tar entry of the example.
enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, u32, Vec<u8>),
    Symlink(&'a str, &'a str),
}

/// A content of `len` bytes that differs by `seed` (and compresses, as real files do).
fn content(seed: &str, len: usize) -> Vec<u8> {
    let line = format!("{seed}: the quick brown fox jumps over the lazy dog\n");
    line.bytes().cycle().take(len).collect()
}

/// The three layers, bottom first.
fn layers() -> Vec<Vec<Entry<'static>>> {
    let hello = content("hello binary", 48 << 10);
    let readme = content("readme", 12 << 10);
    vec![
        vec![
            Entry::Dir("etc/"),
            Entry::File("etc/hostname", 0o644, b"demo-1\n".to_vec()),
            Entry::File("etc/os-release", 0o644, b"NAME=\"composefs-storage demo\"\nVERSION_ID=1\n".to_vec()),
            Entry::Dir("usr/"),
            Entry::Dir("usr/bin/"),
            Entry::File("usr/bin/hello", 0o755, hello.clone()),
            Entry::Symlink("usr/bin/hi", "hello"),
            Entry::Dir("usr/share/"),
            Entry::Dir("usr/share/doc/"),
            Entry::File("usr/share/doc/README", 0o644, readme.clone()),
            Entry::Dir("var/"),
            Entry::Dir("var/cache/"),
            Entry::Dir("var/cache/app/"),
            Entry::File("var/cache/app/old-1.bin", 0o644, content("cache 1", 20 << 10)),
            Entry::File("var/cache/app/old-2.bin", 0o644, content("cache 2", 20 << 10)),
            Entry::Dir("tmp/"),
            Entry::File("tmp/build.log", 0o644, content("build log", 30 << 10)),
        ],
        vec![
            // The same binary again (as an image rebuilt on the same base would have it).
            Entry::Dir("usr/"),
            Entry::Dir("usr/bin/"),
            Entry::File("usr/bin/hello", 0o755, hello),
            Entry::Dir("usr/lib/"),
            Entry::File("usr/lib/libdemo.so.1", 0o755, content("libdemo", 64 << 10)),
            Entry::Dir("etc/"),
            Entry::File("etc/hostname", 0o644, b"demo-2\n".to_vec()),
            // An OCI whiteout: tmp/build.log is deleted in this layer.
            Entry::Dir("tmp/"),
            Entry::File("tmp/.wh.build.log", 0o644, Vec::new()),
        ],
        vec![
            // An opaque dir: var/cache/app starts empty again in this layer.
            Entry::Dir("var/"),
            Entry::Dir("var/cache/"),
            Entry::Dir("var/cache/app/"),
            Entry::File("var/cache/app/.wh..wh..opq", 0o644, Vec::new()),
            Entry::File("var/cache/app/fresh.bin", 0o644, content("fresh cache", 16 << 10)),
            Entry::Dir("usr/"),
            Entry::Dir("usr/share/"),
            Entry::Dir("usr/share/doc/"),
            Entry::File("usr/share/doc/README", 0o644, readme),
            Entry::Dir("app/"),
            Entry::File("app/config.json", 0o600, b"{\"greeting\": \"hello from layer 3\"}\n".to_vec()),
        ],
    ]
}

/// A ustar tar of `entries` (owner root, fixed mtime).
fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, typeflag, mode, data, link): (&str, u8, u32, &[u8], &str) = match e {
            Entry::Dir(n) => (n, b'5', 0o755, &[], ""),
            Entry::File(n, mode, data) => (n, b'0', *mode, data, ""),
            Entry::Symlink(n, target) => (n, b'2', 0o777, &[], target),
        };
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(format!("{MTIME:011o}").as_bytes());
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Unmounts on drop, so an error between mount and unmount leaves no mount behind.
struct Mounted<'a>(Option<&'a Path>);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = mount::unmount(p);
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let parent = args.workdir.clone().unwrap_or_else(std::env::temp_dir);
    let store = tempfile::Builder::new()
        .prefix("composefs-storage-demo.")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(format_args!("create a temporary store under {}", parent.display()), e))?;
    println!("store: {}", store.path().display());
    let result = demo(store.path(), &args);
    if args.keep {
        let kept = store.keep();
        println!("kept the store at {}", kept.display());
    } else {
        let path = store.path().to_path_buf();
        make_removable(&path);
        match store.close() {
            Ok(()) => println!("cleaned up {}", path.display()),
            // The demo's own failure, if any, is the one worth reporting.
            Err(e) if result.is_err() => eprintln!("composefs-storage: could not remove {}: {e}", path.display()),
            Err(e) => return Err(Error::io(format_args!("remove {}", path.display()), e)),
        }
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn demo(store: &Path, args: &Args) -> Result<()> {
    // 1. Three layers, compressed three ways, converted bottom first, each reusing the layers
    //    below it as sources of objects.
    println!("\n1. convert three layers (layers 2 and 3 reuse the objects of the layers below)");
    // Objects are mode 0000, as containers/storage writes them: only root can open one again,
    // to enable fs-verity on it or to reuse it in another layer.
    let root = rustix::process::geteuid().is_root();
    let verity = if root { VerityPolicy::IfAvailable } else { VerityPolicy::Off };
    if !root {
        println!("   (not root: objects are mode 0000 as in containers/storage, so layers cannot reuse each");
        println!("   other's objects here and fs-verity stays off; run as root to see dedup across layers)");
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut written_total = 0;
    let mut reused_total = 0;
    for (i, entries) in layers().iter().enumerate() {
        let raw = tar(entries);
        let (blob, how) = match i {
            0 => (gzip(&raw)?, "gzip"),
            1 => (zstd::encode_all(raw.as_slice(), 3).map_err(|e| Error::io("zstd-compress layer 2", e))?, "zstd"),
            _ => (raw.clone(), "tar"),
        };
        let dir = store.join(format!("layer{}", i + 1));
        let options = ConvertOptions {
            source_layers: if root { dirs.clone() } else { Vec::new() },
            verity,
            ..Default::default()
        };
        let input: Box<dyn Read + Send> = Box::new(Cursor::new(blob.clone()));
        let r = convert(input, &dir, &options, None).map_err(|e| e.context(format!("convert layer {}", i + 1)))?;
        print_layer(i + 1, how, blob.len(), &r, &dir)?;
        written_total += r.objects.bytes_written;
        reused_total += r.objects.bytes_reused;
        dirs.push(dir);
    }
    println!(
        "   dedup: {} of file content reused instead of written ({} written in all)",
        human_bytes(reused_total),
        human_bytes(written_total)
    );

    // 2. The stack, top first, mounted when we can.
    println!("\n2. mount the stack (layer 3 on top)");
    if args.no_mount {
        println!("   skipped: --no-mount");
        return Ok(());
    }
    if let Some(why) = cannot_mount() {
        println!("   skipped: {why}");
        return Ok(());
    }
    let mnt = store.join("merged");
    std::fs::create_dir(&mnt).map_err(|e| Error::io(format_args!("mkdir {}", mnt.display()), e))?;
    let mut stack = Vec::new();
    for dir in dirs.iter().rev() {
        stack.push(Layer::from_layer_dir(dir)?.read_digest_file(dir)?);
    }
    let opts = MountOptions { stub_cache_dir: Some(store.join("cache")), ..MountOptions::read_only() };
    if let Err(e) = mount::mount(&stack, &mnt, &opts) {
        if matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::PermissionDenied) {
            println!("   skipped: the kernel refused the mount: {e}");
            return Ok(());
        }
        return Err(e);
    }
    let guard = Mounted(Some(&mnt));
    println!("   mounted on {} (read-only overlay of EROFS images and object dirs)", mnt.display());
    show_merged(&mnt)?;
    drop(guard);
    println!("   unmounted");
    Ok(())
}

/// Gives the owner write permission on every directory under `dir` (converted layers' `diff/`
/// dirs are read-only, which only root can ignore), so the store can be removed.
fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755));
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

fn gzip(raw: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(raw).and_then(|()| enc.finish()).map_err(|e| Error::io("gzip layer 1", e))
}

fn print_layer(n: usize, how: &str, blob_len: usize, r: &ConvertResult, dir: &Path) -> Result<()> {
    let blob = dir.join(mount::BLOB_PATH);
    let blob_size = std::fs::metadata(&blob).map_err(|e| Error::io(format_args!("stat {}", blob.display()), e))?.len();
    println!(
        "   layer {n} ({how}, {}): {} entries, {} objects: {} new ({}), {} reused from lower layers ({})",
        human_bytes(blob_len as u64),
        r.entries,
        r.objects.objects,
        r.objects.objects - r.objects.objects_reused,
        human_bytes(r.objects.bytes_written),
        r.objects.objects_reused,
        human_bytes(r.objects.bytes_reused),
    );
    println!(
        "           composefs.blob {} fs-verity {}",
        human_bytes(blob_size),
        r.blob_verity.map(|d| hex(&d)).unwrap_or_default()
    );
    Ok(())
}

/// Why this process cannot mount, if it cannot.
fn cannot_mount() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("mounting needs root (run `sudo composefs-storage demo` to see this step)".into());
    }
    // fsopen loads the filesystem module when needed, as a mount would.
    for needed in ["erofs", "overlay"] {
        if let Err(e) = rustix::mount::fsopen(needed, rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC) {
            return Some(format!("the kernel cannot open a {needed} filesystem ({e}); try `modprobe {needed}`"));
        }
    }
    None
}

/// Lists a few paths of the merged view and checks what the whiteout and opaque dir did.
fn show_merged(mnt: &Path) -> Result<()> {
    let list = |rel: &str| -> Result<Vec<String>> {
        let p = mnt.join(rel);
        let mut names: Vec<String> = std::fs::read_dir(&p)
            .map_err(|e| Error::io(format_args!("read dir {}", p.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    };
    println!("   /                {}", list("")?.join(" "));
    println!("   /usr/bin         {}", list("usr/bin")?.join(" "));
    let tmp = list("tmp")?;
    println!("   /tmp             {}", if tmp.is_empty() { "(empty)".to_string() } else { tmp.join(" ") });
    let cache = list("var/cache/app")?;
    println!("   /var/cache/app   {}", cache.join(" "));
    let read = |rel: &str| -> Result<String> {
        let p = mnt.join(rel);
        std::fs::read_to_string(&p).map_err(|e| Error::io(format_args!("read {}", p.display()), e))
    };
    println!("   /etc/hostname    {}", read("etc/hostname")?.trim());

    let mut wrong = Vec::new();
    if tmp.iter().any(|n| n == "build.log") {
        wrong.push("tmp/build.log is still visible: layer 2's whiteout did not hide it");
    }
    if cache != ["fresh.bin"] {
        wrong.push("var/cache/app should hold only fresh.bin: layer 3's opaque dir did not hide layer 1's files");
    }
    if read("etc/hostname")? != "demo-2\n" {
        wrong.push("etc/hostname should be layer 2's");
    }
    if read("usr/bin/hello")?.as_bytes() != content("hello binary", 48 << 10).as_slice() {
        wrong.push("usr/bin/hello does not have its content");
    }
    if !wrong.is_empty() {
        return Err(Error::new(ErrorKind::Verification, format!("the merged view is wrong: {}", wrong.join("; "))));
    }
    println!("   ok: the whiteout hid tmp/build.log, the opaque dir hid layer 1's cache, contents match");
    Ok(())
}
