//! Stacks of composefs layers written by this library's image writer: real OCI whiteouts and
//! opaque dirs (SPEC §10.4) hide what they must, and root stubs hide nothing (SPEC §10.2),
//! whether adjacent composefs layers are flattened into one image or mounted one by one.

mod mount_support;

use std::fs;
use std::path::{Path, PathBuf};

use composefs_storage::image::{
    write_image, DirEntry, Directory, File, FileContent, Inode, InodeId, InodeKind, Metadata, Tree, WriteOptions, ROOT,
};
use composefs_storage::mount::{self, Layer, MountOptions};
use mount_support::*;

fn meta(permissions: u32) -> Metadata {
    Metadata { permissions, ..Default::default() }
}

fn file(t: &mut Tree, dir: InodeId, name: &str, data: &str) {
    let id = t.push(Inode {
        meta: meta(0o644),
        kind: InodeKind::File(File { size: data.len() as u64, content: FileContent::Inline(data.as_bytes().to_vec()) }),
        nlink: 1,
    });
    t.link(dir, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
}

fn dir(t: &mut Tree, parent: InodeId, name: &str, opaque: bool) -> InodeId {
    let id = t.push(Inode {
        meta: meta(0o755),
        kind: InodeKind::Directory(Directory { entries: Default::default(), overlay_opaque: opaque }),
        nlink: 2,
    });
    t.link(parent, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
    id
}

fn whiteout(t: &mut Tree, parent: InodeId, name: &str) {
    let id = t.push(Inode { meta: meta(0), kind: InodeKind::OverlayWhiteout, nlink: 1 });
    t.link(parent, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
}

/// A composefs layer dir holding `tree` as its blob (mkcomposefs defaults: with root stubs).
fn layer(root: &Path, name: &str, tree: &Tree) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(dir.join("composefs-data")).unwrap();
    fs::create_dir_all(dir.join("diff")).unwrap();
    let mut f = fs::File::create(dir.join("composefs-data/composefs.blob")).unwrap();
    write_image(tree, &WriteOptions::default(), &mut f).unwrap();
    dir
}

/// Every path in the mounted view, with file contents.
fn view(mnt: &Path) -> Vec<(String, Option<String>)> {
    walk(mnt)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(mnt).unwrap().to_string_lossy().into_owned();
            let content = if p.is_file() { Some(fs::read_to_string(&p).unwrap()) } else { None };
            (rel, content)
        })
        .collect()
}

#[test]
fn whiteouts_opaque_dirs_and_stubs_in_composefs_stacks() {
    if !can_mount() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    // Lower: /a/x /a/y /o/old /gone /keep /db/in-db (a two-hex-digit top-level name).
    let mut lower = Tree::new(meta(0o755));
    let a = dir(&mut lower, ROOT, "a", false);
    file(&mut lower, a, "x", "lx");
    file(&mut lower, a, "y", "ly");
    let o = dir(&mut lower, ROOT, "o", false);
    file(&mut lower, o, "old", "old");
    file(&mut lower, ROOT, "gone", "g");
    file(&mut lower, ROOT, "keep", "k");
    let db = dir(&mut lower, ROOT, "db", false);
    file(&mut lower, db, "in-db", "db");
    // Upper: /a/x replaced, /a/y whited out, /o opaque with /o/new, /gone whited out; no /db.
    let mut upper = Tree::new(meta(0o755));
    let ua = dir(&mut upper, ROOT, "a", false);
    file(&mut upper, ua, "x", "ux");
    whiteout(&mut upper, ua, "y");
    let uo = dir(&mut upper, ROOT, "o", true);
    file(&mut upper, uo, "new", "new");
    whiteout(&mut upper, ROOT, "gone");
    let (up, low) = (layer(root, "upper", &upper), layer(root, "lower", &lower));
    // A classic layer below both: /a/z shows through, /o/below and /gone2 do not... /gone does not.
    let classic = root.join("classic");
    fs::create_dir_all(classic.join("diff/a")).unwrap();
    fs::create_dir_all(classic.join("diff/o")).unwrap();
    fs::write(classic.join("diff/a/z"), "cz").unwrap();
    fs::write(classic.join("diff/o/below"), "cb").unwrap();
    fs::write(classic.join("diff/gone"), "cg").unwrap();
    fs::write(classic.join("diff/0a"), "c0a").unwrap();
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();

    let s = |v: &str| Some(v.to_string());
    let expected_two = vec![
        ("a".to_string(), None),
        ("a/x".into(), s("ux")),
        ("db".into(), None),
        ("db/in-db".into(), s("db")),
        ("keep".into(), s("k")),
        ("o".into(), None),
        ("o/new".into(), s("new")),
    ];
    let mut expected_three = expected_two.clone();
    expected_three.push(("0a".into(), s("c0a")));
    expected_three.push(("a/z".into(), s("cz")));
    for flatten in [true, false] {
        let opts = MountOptions { flatten, stub_cache_dir: Some(root.join("cache")), ..MountOptions::read_only() };
        for (dirs, expected) in [(vec![&up, &low], &expected_two), (vec![&up, &low, &classic], &expected_three)] {
            let stack: Vec<Layer> = dirs.iter().map(|d| Layer::from_layer_dir(d).unwrap()).collect();
            mount::mount(&stack, &mnt, &opts).unwrap();
            let guard = MountGuard(mnt.clone());
            let mut got = view(&mnt);
            got.sort();
            let mut want = expected.clone();
            want.sort();
            assert_eq!(got, want, "flatten={flatten}, {} layers", dirs.len());
            drop(guard);
            Snapshot::assert_clean(root);
        }
    }
}

#[test]
fn images_with_acls_are_mounted_without_noacl() {
    if !can_mount() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    // A POSIX ACL granting uid 1000 read: user::rw-, user:1000:r--, group::r--, mask::r--, other::r--.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 4, u32::MAX)]
    {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let mut tree = Tree::new(meta(0o755));
    file(&mut tree, ROOT, "with-acl", "secret");
    let id = tree.resolve(b"/with-acl").unwrap();
    tree.inode_mut(id).meta.xattrs.insert(b"system.posix_acl_access".to_vec(), acl.clone());
    let dir = layer(root, "acl", &tree);
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    mount::mount(&[Layer::from_layer_dir(&dir).unwrap()], &mnt, &MountOptions::read_only()).unwrap();
    let guard = MountGuard(mnt.clone());
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(mnt.join("with-acl"), "system.posix_acl_access", &mut buf).unwrap();
    assert_eq!(&buf[..n], &acl[..]);
    drop(guard);
    Snapshot::assert_clean(root);
}
