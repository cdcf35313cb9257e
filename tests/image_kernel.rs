//! Images as the kernel sees them: mounted as EROFS (loop), and stacked under overlayfs with a
//! data-only lower for the object files, as c/storage mounts layers (SPEC §9.1–9.2). Checks
//! what mkcomposefs-identical images present, and that the layer extensions (unescaped
//! whiteouts and opaque directories, SPEC §10.4) really hide lower-layer entries.
//! Needs root, EROFS, loop devices and overlayfs; skips with a reason otherwise.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use composefs_storage::image::{
    write_image, DirEntry, Directory, File, FileContent, Inode, InodeKind, Metadata, Mtime, Tree, WriteOptions, ROOT,
};

/// A mount point that is unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &Path) -> Result<Mounted, String> {
    std::fs::create_dir_all(target).map_err(|e| e.to_string())?;
    let out = Command::new("mount").args(args).arg(target).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(Mounted(target.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn mount_erofs(image: &Path, target: &Path) -> Option<Mounted> {
    match mount(&["-t", "erofs", "-o", "loop,ro", image.to_str().unwrap()], target) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipping: cannot mount EROFS image (needs root, loop devices, erofs): {e}");
            None
        }
    }
}

fn meta(perm: u32) -> Metadata {
    Metadata {
        permissions: perm,
        uid: 0,
        gid: 0,
        mtime: Mtime { sec: 1_700_000_000, nsec: 5 },
        xattrs: Default::default(),
    }
}

fn add(t: &mut Tree, dir: usize, name: &str, kind: InodeKind) -> usize {
    let id = t.push(Inode { meta: meta(0o644), kind, nlink: 1 });
    t.link(dir, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
    id
}

fn dir(t: &mut Tree, parent: usize, name: &str, opaque: bool) -> usize {
    let id = t.push(Inode {
        meta: meta(0o755),
        kind: InodeKind::Directory(Directory { overlay_opaque: opaque, ..Default::default() }),
        nlink: 2,
    });
    t.link(parent, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
    id
}

fn write(t: &Tree, path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    write_image(t, &WriteOptions::default(), &mut f).unwrap();
}

#[test]
fn erofs_and_overlay_mounts_show_the_tree() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipping: needs root to mount");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("ab")).unwrap();
    std::fs::write(data.join("ab/cdef"), b"external content\n").unwrap();

    // Lower layer A.
    let mut a = Tree::new(meta(0o755));
    let ext = add(
        &mut a,
        ROOT,
        "ext",
        InodeKind::File(File {
            size: 17,
            content: FileContent::External { payload: Some(b"ab/cdef".to_vec()), digest: None },
        }),
    );
    a.link(ROOT, b"ext-link".to_vec(), DirEntry { inode: ext, hardlink: true });
    a.inodes[ext].nlink = 2;
    add(&mut a, ROOT, "inline", InodeKind::File(File { size: 5, content: FileContent::Inline(b"hello".to_vec()) }));
    add(&mut a, ROOT, "sym", InodeKind::Symlink(vec![b'x'; 3000]));
    add(&mut a, ROOT, "chr", InodeKind::CharDevice(259));
    let ad = dir(&mut a, ROOT, "a", false);
    add(&mut a, ad, "gone", InodeKind::File(File { size: 0, content: FileContent::Inline(vec![]) }));
    add(&mut a, ad, "kept", InodeKind::File(File { size: 0, content: FileContent::Inline(vec![]) }));
    let od = dir(&mut a, ROOT, "o", false);
    add(&mut a, od, "old", InodeKind::File(File { size: 0, content: FileContent::Inline(vec![]) }));
    // An mkcomposefs-style (escaped) whiteout: shows as an empty regular file at this level.
    add(&mut a, ROOT, "escaped", InodeKind::CharDevice(0));
    let a_img = tmp.path().join("a.cfs");
    write(&a, &a_img);

    let Some(ma) = mount_erofs(&a_img, &tmp.path().join("ma")) else {
        return;
    };
    let m = &ma.0;
    assert_eq!(std::fs::read(m.join("inline")).unwrap(), b"hello");
    assert_eq!(std::fs::read_link(m.join("sym")).unwrap().as_os_str().len(), 3000);
    let st = std::fs::symlink_metadata(m.join("chr")).unwrap();
    assert!(st.file_type().is_char_device());
    assert_eq!(st.rdev(), 259);
    assert_eq!(st.mode() & 0o7777, 0o644);
    assert_eq!((st.mtime(), st.mtime_nsec()), (1_700_000_000, 5));
    let (e1, e2) = (std::fs::metadata(m.join("ext")).unwrap(), std::fs::metadata(m.join("ext-link")).unwrap());
    assert_eq!((e1.ino(), e1.nlink(), e1.len()), (e2.ino(), 2, 17));
    assert!(std::fs::symlink_metadata(m.join("ff")).unwrap().file_type().is_char_device());
    assert!(std::fs::metadata(m.join("escaped")).unwrap().is_file());

    // Upper layer B: a real whiteout for a/gone and an opaque o/.
    let mut b = Tree::new(meta(0o755));
    let bd = dir(&mut b, ROOT, "a", false);
    add(&mut b, bd, "gone", InodeKind::OverlayWhiteout);
    let bo = dir(&mut b, ROOT, "o", true);
    add(&mut b, bo, "new", InodeKind::File(File { size: 0, content: FileContent::Inline(vec![]) }));
    let b_img = tmp.path().join("b.cfs");
    write(&b, &b_img);
    let Some(mb) = mount_erofs(&b_img, &tmp.path().join("mb")) else {
        return;
    };

    let lower = format!("lowerdir={}:{}::{}", mb.0.display(), ma.0.display(), data.display());
    let merged = tmp.path().join("merged");
    let ov =
        match mount(&["-t", "overlay", "overlay", "-o", &format!("ro,{lower},metacopy=on,redirect_dir=on")], &merged) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipping overlay part: {e}");
                return;
            }
        };
    let mm = &ov.0;
    assert_eq!(std::fs::read(mm.join("ext")).unwrap(), b"external content\n");
    assert!(mm.join("a/kept").exists());
    assert!(!mm.join("a/gone").exists(), "OverlayWhiteout must hide a/gone");
    assert!(mm.join("o/new").exists());
    assert!(!mm.join("o/old").exists(), "overlay_opaque must hide o/old");
    drop(ov);
}
