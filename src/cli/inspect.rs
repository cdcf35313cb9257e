//! `composefs-storage inspect`: what a layer dir holds (entries by type, objects, blob and its
//! fs-verity state, the kept metadata) and, with `--verify`, whether every redirect of the blob
//! resolves to an object of the right size (`--deep`: and the right sha256).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use composefs_storage::image::{self, fsverity, FileContent, InodeKind};
use composefs_storage::layer::metadata;
use composefs_storage::mount::{self, BLOB_PATH};
use composefs_storage::source::hex;
use composefs_storage::{Error, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::progress::human_bytes;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  composefs-storage inspect /var/tmp/l1
  composefs-storage inspect --verify /var/tmp/l1           # every redirect has its object
  composefs-storage inspect --verify --deep --json /var/tmp/l1 | jq .problems

Exit status: 0 when no problem was found, 1 when any was (listed on stdout), 2 on bad usage.")]
pub struct Args {
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Check that every redirect in the blob resolves to an object of the right size.
    #[arg(long)]
    verify: bool,
    /// With --verify: also re-hash every object and compare its sha256 with its name.
    #[arg(long, requires = "verify")]
    deep: bool,
    /// A layer directory (composefs, as made by `convert`, or classic with its tree in diff/).
    layer_dir: PathBuf,
}

/// Entries of a tree by type.
#[derive(Default)]
struct Counts {
    dirs: u64,
    opaque_dirs: u64,
    files: u64,
    inline_files: u64,
    external_files: u64,
    empty_files: u64,
    file_bytes: u64,
    symlinks: u64,
    whiteouts: u64,
    devices: u64,
    fifos: u64,
    sockets: u64,
    hardlinks: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.dirs
            + self.files
            + self.symlinks
            + self.whiteouts
            + self.devices
            + self.fifos
            + self.sockets
            + self.hardlinks
    }

    fn to_json(&self) -> Value {
        json!({
            "total": self.total(),
            "directories": self.dirs,
            "opaqueDirectories": self.opaque_dirs,
            "files": self.files,
            "inlineFiles": self.inline_files,
            "externalFiles": self.external_files,
            "emptyFiles": self.empty_files,
            "fileBytes": self.file_bytes,
            "symlinks": self.symlinks,
            "whiteouts": self.whiteouts,
            "devices": self.devices,
            "fifos": self.fifos,
            "sockets": self.sockets,
            "hardlinks": self.hardlinks,
        })
    }

    fn line(&self) -> String {
        format!(
            "{} entries: {} dirs ({} opaque), {} files ({} inline, {} external, {} empty; {}), {} symlinks, \
             {} whiteouts, {} devices, {} fifos, {} sockets, {} hardlinks",
            self.total(),
            self.dirs,
            self.opaque_dirs,
            self.files,
            self.inline_files,
            self.external_files,
            self.empty_files,
            human_bytes(self.file_bytes),
            self.symlinks,
            self.whiteouts,
            self.devices,
            self.fifos,
            self.sockets,
            self.hardlinks
        )
    }
}

/// One object of `diff/`.
struct Object {
    size: u64,
    verity: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let dir = &args.layer_dir;
    let layer = mount::Layer::from_layer_dir(dir)?;
    let (summary, problems, notes) =
        if layer.is_composefs() { inspect_composefs(&args)? } else { inspect_classic(dir, args.verify)? };
    if args.json {
        let mut v = summary;
        if let Some(o) = v.as_object_mut() {
            o.remove("entriesLine");
        }
        v["problems"] = json!(problems);
        v["notes"] = json!(notes);
        v["ok"] = json!(problems.is_empty());
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_text(&summary);
        for n in &notes {
            println!("note: {n}");
        }
        if problems.is_empty() {
            println!("{}", if args.verify { "ok: no problems found" } else { "ok" });
        } else {
            println!("{} problem(s):", problems.len());
            for p in &problems {
                println!("  - {p}");
            }
        }
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("composefs-storage: inspect {}: {} problem(s) found", dir.display(), problems.len());
        Ok(ExitCode::from(crate::EXIT_FAILURE))
    }
}

fn print_text(v: &Value) {
    println!("layer {}: {}", v["layerDir"].as_str().unwrap_or(""), v["format"].as_str().unwrap_or(""));
    if let Some(l) = v["entriesLine"].as_str() {
        println!("  {l}");
    }
    if let Some(b) = v.get("blob") {
        let kept = match b["keptDigest"].as_str() {
            Some(_) if b["keptDigestMatches"] == json!(true) => "matches composefs.blob.verity",
            Some(_) => "DIFFERS from composefs.blob.verity",
            None => "no composefs.blob.verity kept",
        };
        println!(
            "  blob: {} bytes, format v{}, fs-verity digest {} ({kept}), fs-verity {}",
            b["size"],
            b["version"],
            b["fsVerity"].as_str().unwrap_or(""),
            if b["fsVerityEnabled"] == json!(true) { "enabled" } else { "not enabled" }
        );
    }
    if let Some(o) = v.get("objects") {
        println!(
            "  objects: {} in diff/, {}, fs-verity enabled on {}; {} distinct redirects",
            o["count"],
            human_bytes(o["bytes"].as_u64().unwrap_or(0)),
            o["fsVerityEnabled"],
            o["redirects"]
        );
    }
    if let Some(m) = v["metadata"].as_object() {
        let list: Vec<String> = m
            .iter()
            .map(|(k, present)| format!("{k} {}", if present == &json!(true) { "yes" } else { "no" }))
            .collect();
        println!("  metadata: {}", list.join(", "));
    }
    if let Some(c) = v.get("verified") {
        println!(
            "  verified: {} redirects checked, {} objects re-hashed",
            c["redirects"],
            c["objectsHashed"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "no".into())
        );
    }
}

type Inspection = (Value, Vec<String>, Vec<String>);

fn inspect_composefs(args: &Args) -> Result<Inspection> {
    let dir = &args.layer_dir;
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    // The blob: metadata only (size bounded by entries), so it is read whole.
    let blob_path = dir.join(BLOB_PATH);
    let data = std::fs::read(&blob_path).map_err(|e| Error::io(format_args!("read {}", blob_path.display()), e))?;
    let tree = image::read_image(&data).map_err(|e| e.context(blob_path.display()))?;
    // The composefs header's format version (offset 12; read_image checked the header).
    let version = data.get(12..16).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let digest = fsverity::digest_bytes(&data);
    let blob_file = File::open(&blob_path).map_err(|e| Error::io(format_args!("open {}", blob_path.display()), e))?;
    let measured = measure(&blob_file);
    if measured.is_some_and(|m| m != digest) {
        problems.push("blob: the kernel's fs-verity digest differs from the one computed from its bytes".to_string());
    }
    let kept_path = dir.join(metadata::BLOB_DIGEST);
    let kept = match std::fs::read_to_string(&kept_path) {
        Ok(s) => match mount::parse_digest(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("{}: {}", metadata::BLOB_DIGEST, e.message()));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format_args!("read {}", kept_path.display()), e)),
    };
    if let Some(k) = kept {
        if k != digest {
            problems.push(format!(
                "blob: fs-verity digest is {}, {} says {} (the blob changed or the digest file is wrong; mount refuses it)",
                hex(&digest),
                metadata::BLOB_DIGEST,
                hex(&k)
            ));
        }
    }

    // Entries by type, and each redirect with the size the image gives it.
    let mut counts = Counts::default();
    let mut redirects: BTreeMap<Vec<u8>, (u64, Vec<u8>)> = BTreeMap::new();
    for (path, e) in tree.walk() {
        if e.hardlink {
            counts.hardlinks += 1;
            continue;
        }
        match &tree.inode(e.inode).kind {
            InodeKind::Directory(d) => {
                counts.dirs += 1;
                counts.opaque_dirs += d.overlay_opaque as u64;
            }
            InodeKind::File(f) => {
                counts.files += 1;
                counts.file_bytes += f.size;
                match &f.content {
                    FileContent::Inline(_) => counts.inline_files += 1,
                    FileContent::External { .. } if f.size == 0 => counts.empty_files += 1,
                    FileContent::External { payload: Some(p), .. } => {
                        counts.external_files += 1;
                        match redirects.get(p) {
                            Some((size, first)) if *size != f.size => problems.push(format!(
                                "{} and {} redirect to the same object {} with different sizes ({} and {})",
                                String::from_utf8_lossy(first),
                                String::from_utf8_lossy(&path),
                                String::from_utf8_lossy(p),
                                size,
                                f.size
                            )),
                            Some(_) => {}
                            None => {
                                redirects.insert(p.clone(), (f.size, path.clone()));
                            }
                        }
                    }
                    FileContent::External { payload: None, .. } => {
                        counts.external_files += 1;
                        problems.push(format!(
                            "{}: {} bytes of external content without a redirect",
                            String::from_utf8_lossy(&path),
                            f.size
                        ));
                    }
                }
            }
            InodeKind::Symlink(_) => counts.symlinks += 1,
            InodeKind::OverlayWhiteout | InodeKind::CharDevice(0) => counts.whiteouts += 1,
            InodeKind::CharDevice(_) | InodeKind::BlockDevice(_) => counts.devices += 1,
            InodeKind::Fifo => counts.fifos += 1,
            InodeKind::Socket => counts.sockets += 1,
        }
    }

    // The objects of diff/: `ab/cdef…`.
    let diff = dir.join("diff");
    let (objects, stray) = list_objects(&diff)?;
    if stray > 0 {
        notes.push(format!("{stray} entries in diff/ are not objects (ab/cdef… regular files)"));
    }
    let object_bytes: u64 = objects.values().map(|o| o.size).sum();
    let verity_enabled = objects.values().filter(|o| o.verity).count();

    let mut verified = Value::Null;
    if args.verify {
        for (payload, (size, path)) in &redirects {
            let name = String::from_utf8_lossy(payload);
            let path = String::from_utf8_lossy(path);
            match objects.get(name.as_ref()) {
                None => problems.push(format!("{path}: object diff/{name} is missing")),
                Some(o) if o.size != *size => {
                    problems.push(format!("{path}: object diff/{name} is {} bytes, the image says {size}", o.size))
                }
                Some(_) => {}
            }
        }
        // The empty object is written for empty files (as containers/storage does), which
        // carry no redirect.
        let unreferenced = objects.iter().filter(|(k, o)| o.size > 0 && !redirects.contains_key(k.as_bytes())).count();
        if unreferenced > 0 {
            notes.push(format!("{unreferenced} objects in diff/ are not referenced by the blob"));
        }
        let mut hashed = None;
        if args.deep {
            let mut n = 0u64;
            for name in objects.keys() {
                let p = diff.join(name);
                let actual = sha256_file(&p)?;
                n += 1;
                if name.replace('/', "") != hex(&actual) {
                    problems.push(format!("object diff/{name}: content sha256 is {}", hex(&actual)));
                }
            }
            hashed = Some(n);
        }
        verified = json!({ "redirects": redirects.len(), "objectsHashed": hashed });
    }

    let meta: serde_json::Map<String, Value> =
        [metadata::BLOB_DIGEST, metadata::TOC, metadata::TAR_SPLIT, metadata::TAR_SPLIT_GZ, metadata::CACHE]
            .iter()
            // The gzip tar-split of earlier versions is listed only where a layer has it.
            .filter(|name| **name != metadata::TAR_SPLIT_GZ || dir.join(name).is_file())
            .map(|name| {
                let short = name.rsplit('/').next().unwrap_or(name).to_string();
                (short, json!(dir.join(name).is_file()))
            })
            .collect();
    let mut summary = json!({
        "layerDir": dir.to_string_lossy(),
        "format": "composefs",
        "entries": counts.to_json(),
        "entriesLine": counts.line(),
        "blob": {
            "size": data.len(),
            "version": version,
            "fsVerity": hex(&digest),
            "fsVerityEnabled": measured.is_some(),
            "keptDigest": kept.map(|k| hex(&k)),
            "keptDigestMatches": kept.map(|k| k == digest),
        },
        "objects": {
            "count": objects.len(),
            "bytes": object_bytes,
            "fsVerityEnabled": verity_enabled,
            "redirects": redirects.len(),
        },
        "metadata": meta,
    });
    if !verified.is_null() {
        summary["verified"] = verified;
    }
    Ok((summary, problems, notes))
}

/// The objects under `diff`, by `ab/cdef…` name, and how many other entries there are.
fn list_objects(diff: &Path) -> Result<(BTreeMap<String, Object>, u64)> {
    let mut objects = BTreeMap::new();
    let mut stray = 0;
    let read = |p: &Path| std::fs::read_dir(p).map_err(|e| Error::io(format_args!("read dir {}", p.display()), e));
    for top in read(diff)? {
        let top = top.map_err(|e| Error::io(format_args!("read dir {}", diff.display()), e))?;
        let tname = top.file_name().to_string_lossy().into_owned();
        let is_dir = top.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || tname.len() != 2 || !tname.bytes().all(|b| b.is_ascii_hexdigit()) {
            stray += 1;
            continue;
        }
        for obj in read(&top.path())? {
            let obj = obj.map_err(|e| Error::io(format_args!("read dir {}", top.path().display()), e))?;
            let p = obj.path();
            let md = std::fs::symlink_metadata(&p).map_err(|e| Error::io(format_args!("stat {}", p.display()), e))?;
            if !md.is_file() {
                stray += 1;
                continue;
            }
            let verity = File::open(&p).ok().and_then(|f| measure(&f)).is_some();
            objects.insert(format!("{tname}/{}", obj.file_name().to_string_lossy()), Object { size: md.len(), verity });
        }
    }
    Ok((objects, stray))
}

/// The kernel's fs-verity digest of `file`; `None` when it has none or the filesystem has no
/// fs-verity (not an error: it is reported as "not enabled").
fn measure(file: &File) -> Option<[u8; 32]> {
    composefs_storage::layer::verity::measure(std::os::fd::AsFd::as_fd(file)).ok()
}

fn sha256_file(p: &Path) -> Result<[u8; 32]> {
    let mut f = File::open(p).map_err(|e| Error::io(format_args!("open {}", p.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(format_args!("read {}", p.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// A classic layer: its unpacked tree in `diff/`, counted by type (overlay whiteouts are char 0:0).
fn inspect_classic(dir: &Path, verify: bool) -> Result<Inspection> {
    let diff = dir.join("diff");
    let mut counts = Counts::default();
    let mut seen_inodes = std::collections::HashSet::new();
    let mut stack = vec![diff.clone()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| Error::io(format_args!("read dir {}", d.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format_args!("read dir {}", d.display()), e))?;
            let p = ent.path();
            let md = std::fs::symlink_metadata(&p).map_err(|e| Error::io(format_args!("stat {}", p.display()), e))?;
            let ft = md.file_type();
            if !ft.is_dir() && md.nlink() > 1 && !seen_inodes.insert((md.dev(), md.ino())) {
                counts.hardlinks += 1;
                continue;
            }
            if ft.is_dir() {
                counts.dirs += 1;
                let opaque = rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut [0u8; 4]).is_ok_and(|n| n == 1);
                counts.opaque_dirs += opaque as u64;
                stack.push(p);
            } else if ft.is_file() {
                counts.files += 1;
                counts.file_bytes += md.len();
                counts.empty_files += (md.len() == 0) as u64;
            } else if ft.is_symlink() {
                counts.symlinks += 1;
            } else if ft.is_char_device() && md.rdev() == 0 {
                counts.whiteouts += 1;
            } else if ft.is_char_device() || ft.is_block_device() {
                counts.devices += 1;
            } else if ft.is_fifo() {
                counts.fifos += 1;
            } else {
                counts.sockets += 1;
            }
        }
    }
    let notes = if verify { vec!["a classic layer has no redirects to verify".to_string()] } else { Vec::new() };
    let summary = json!({
        "layerDir": dir.to_string_lossy(),
        "format": "classic",
        "entries": counts.to_json(),
        "entriesLine": counts.line(),
    });
    Ok((summary, Vec::new(), notes))
}
