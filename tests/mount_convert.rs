//! End to end: corpus tars converted by this library (`layer::convert`, OCI whiteouts turned into
//! overlay whiteouts), mounted as a stack, compared with `tar -x` of the same tars with OCI
//! whiteout semantics applied.

mod mount_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use composefs_storage::layer::{convert, ConvertOptions};
use composefs_storage::mount::{self, Layer, MountOptions};
use mount_support::*;

fn tar(name: &str) -> PathBuf {
    corpus_path().join(format!("cstorage/{name}/{name}.tar.zst"))
}

fn converted(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(format!("layer-{name}"));
    let input = Box::new(fs::File::open(tar(name)).unwrap());
    convert(input, &dir, &ConvertOptions::default(), None).unwrap();
    dir
}

/// `tar -x` of `name` over `dest`, then the OCI whiteouts applied: `.wh.NAME` removes NAME (and
/// itself), `.wh..wh..opq` empties its directory of what lower layers put there (and itself).
fn extract_oci(name: &str, dest: &Path) {
    let fresh = dest.with_extension("fresh");
    extract(&tar(name), &fresh);
    for p in walk(&fresh) {
        let rel = p.strip_prefix(&fresh).unwrap();
        let file_name = rel.file_name().unwrap().to_string_lossy().into_owned();
        if file_name == ".wh..wh..opq" {
            let parent = dest.join(rel.parent().unwrap());
            if parent.is_dir() {
                for e in fs::read_dir(&parent).unwrap() {
                    let e = e.unwrap().path();
                    if e.is_dir() && !e.is_symlink() {
                        fs::remove_dir_all(&e).unwrap()
                    } else {
                        fs::remove_file(&e).unwrap()
                    }
                }
            }
        } else if let Some(victim) = file_name.strip_prefix(".wh.") {
            let v = dest.join(rel.parent().unwrap()).join(victim);
            if v.is_dir() && !v.is_symlink() {
                fs::remove_dir_all(&v).unwrap();
            } else if fs::symlink_metadata(&v).is_ok() {
                fs::remove_file(&v).unwrap();
            }
        }
    }
    // Now lay the new layer, without its whiteout files, over what is left (keeping the mtimes
    // of the directories the whiteout files were in).
    for p in walk(&fresh) {
        if p.file_name().unwrap().to_string_lossy().starts_with(".wh.") {
            let parent = p.parent().unwrap();
            let m = fs::symlink_metadata(parent).unwrap();
            fs::remove_file(&p).unwrap();
            let t = rustix::fs::Timespec { tv_sec: m.mtime(), tv_nsec: m.mtime_nsec() as _ };
            let times = rustix::fs::Timestamps { last_access: t, last_modification: t };
            rustix::fs::utimensat(rustix::fs::CWD, parent, &times, rustix::fs::AtFlags::empty()).unwrap();
        }
    }
    // An entry of the new layer replaces the old one whole (a directory keeps its contents but
    // takes the new attributes), which `cp -a` over existing files would not do.
    for p in walk(&fresh) {
        let d = dest.join(p.strip_prefix(&fresh).unwrap());
        let Ok(old) = fs::symlink_metadata(&d) else { continue };
        if old.is_dir() && fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut names = vec![0u8; 65536];
            let n = rustix::fs::llistxattr(&d, &mut names).unwrap();
            for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                let name = std::ffi::CString::new(name).unwrap();
                rustix::fs::lremovexattr(&d, name.as_c_str()).unwrap();
            }
        } else if old.is_dir() {
            fs::remove_dir_all(&d).unwrap();
        } else {
            fs::remove_file(&d).unwrap();
        }
    }
    let out =
        std::process::Command::new("cp").arg("-a").arg(format!("{}/.", fresh.display())).arg(dest).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fs::remove_dir_all(&fresh).unwrap();
}

#[test]
fn converted_layers_mount_as_tar_x_says() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let pax = converted(root, "handmade-pax");
    let arc = converted(root, "handmade-archive");
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let cache = root.join("cache");
    for (stack, tars) in
        [(vec![&pax], vec!["handmade-pax"]), (vec![&arc, &pax], vec!["handmade-pax", "handmade-archive"])]
    {
        let expected = root.join("expected");
        fs::create_dir(&expected).unwrap();
        for t in &tars {
            extract_oci(t, &expected);
        }
        // Unflattened, a lone bottom image lists its whiteouts as entries that cannot be opened
        // (overlayfs passes a directory only one layer has through as is).
        let modes: &[bool] = if stack.len() == 1 { &[true] } else { &[true, false] };
        for &flatten in modes {
            let layers: Vec<Layer> = stack.iter().map(|d| Layer::from_layer_dir(d).unwrap()).collect();
            let opts = MountOptions { flatten, stub_cache_dir: Some(cache.clone()), ..MountOptions::read_only() };
            mount::mount(&layers, &mnt, &opts).unwrap();
            let guard = MountGuard(mnt.clone());
            compare_trees(&expected, &mnt);
            drop(guard);
            Snapshot::assert_clean(root);
        }
        fs::remove_dir_all(&expected).unwrap();
    }
}
