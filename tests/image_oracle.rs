//! The oracle itself (tests/support/oracle.rs): on an image with every kind of entry it agrees
//! with this library and names every exemption, and it finds each deliberate difference, both a
//! changed reading of the same image and the image of a changed tree.

mod support;

use composefs_storage::image::{
    read_image, write_image, DirEntry, Directory, File, FileContent, Inode, InodeKind, Metadata, Mtime, Tree,
    WriteOptions, ROOT,
};
use support::oracle::{check_image, compare, Exemption};

fn meta(permissions: u32) -> Metadata {
    Metadata { permissions, uid: 0, gid: 0, mtime: Mtime { sec: 1_700_000_000, nsec: 5 }, xattrs: Default::default() }
}

fn add(t: &mut Tree, dir: usize, name: &str, kind: InodeKind) -> usize {
    let permissions = if matches!(kind, InodeKind::Directory(_)) { 0o755 } else { 0o644 };
    let id = t.push(Inode { meta: meta(permissions), kind, nlink: 1 });
    t.link(dir, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
    id
}

fn link(t: &mut Tree, dir: usize, name: &str, target: usize) {
    t.link(dir, name.as_bytes().to_vec(), DirEntry { inode: target, hardlink: true });
}

fn file(size: u64, content: FileContent) -> InodeKind {
    InodeKind::File(File { size, content })
}

fn inline(bytes: &[u8]) -> InodeKind {
    file(bytes.len() as u64, FileContent::Inline(bytes.to_vec()))
}

fn directory(opaque: bool) -> InodeKind {
    InodeKind::Directory(Directory { overlay_opaque: opaque, ..Default::default() })
}

fn object_path(d: &[u8; 32]) -> Vec<u8> {
    let h: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}/{}", &h[..2], &h[2..]).into_bytes()
}

/// Every kind of entry, and something for each exemption but `FsckNoStubs` (which needs an image
/// without stubs).
fn rich_tree() -> Tree {
    let mut root = meta(0o755);
    root.mtime = Mtime { sec: 1_600_000_000, nsec: 7 };
    root.xattrs.insert(b"security.selinux".to_vec(), b"system_u:object_r:root_t:s0".to_vec());
    let mut t = Tree::new(root);

    // An opaque directory with a whiteout in it (so mkcomposefs's markers), a user's marker xattr
    // and an overlay xattr to escape.
    let d = add(&mut t, ROOT, "dir", directory(true));
    t.inode_mut(d).meta.xattrs.insert(b"trusted.overlay.foo".to_vec(), b"bar".to_vec());
    let i = add(&mut t, d, "inline", inline(b"hello\n"));
    t.inode_mut(i).meta.xattrs.insert(b"user.a".to_vec(), b"b\0c=d".to_vec());
    add(&mut t, d, "big-inline", inline(&[7; 3000]));
    add(&mut t, d, "wh", InodeKind::CharDevice(0));
    let marked = add(&mut t, ROOT, "marked", directory(false));
    t.inode_mut(marked).meta.xattrs.insert(b"user.overlay.opaque".to_vec(), b"y".to_vec());
    t.inode_mut(marked).meta.xattrs.insert(b"trusted.overlay.whiteout".to_vec(), Vec::new());

    // External files: payload is not the digest path; payload is a digest path without a digest;
    // a payload composefs-rs cannot parse; empty.
    let digest = [0x5a; 32];
    let content_sha = [0xc3; 32];
    add(
        &mut t,
        ROOT,
        "ext-verity",
        file(5000, FileContent::External { payload: Some(object_path(&content_sha)), digest: Some(digest) }),
    );
    add(
        &mut t,
        ROOT,
        "ext-noverity",
        file(10, FileContent::External { payload: Some(object_path(&content_sha)), digest: None }),
    );
    add(
        &mut t,
        ROOT,
        "ext-odd",
        file(7, FileContent::External { payload: Some(b"50/231e.file".to_vec()), digest: None }),
    );
    add(&mut t, ROOT, "empty", file(0, FileContent::External { payload: None, digest: None }));

    add(&mut t, ROOT, "link", InodeKind::Symlink(b"dir/inline".to_vec()));
    add(&mut t, ROOT, "chr", InodeKind::CharDevice(259));
    add(&mut t, ROOT, "blk", InodeKind::BlockDevice(2049));
    add(&mut t, ROOT, "fifo", InodeKind::Fifo);
    add(&mut t, ROOT, "sock", InodeKind::Socket);

    // A user's whiteout where a stub would be, and an OCI whiteout below the root.
    add(&mut t, ROOT, "ab", InodeKind::CharDevice(0));
    let oci = add(&mut t, ROOT, "oci", directory(false));
    add(&mut t, oci, "gone", InodeKind::OverlayWhiteout);

    // Hardlinks: a file, a whiteout; a file whose nlink is not its number of names.
    let h = add(&mut t, ROOT, "hl1", inline(b"shared"));
    t.inode_mut(h).nlink = 2;
    link(&mut t, d, "hl2", h);
    let w = add(&mut t, ROOT, "wh-a", InodeKind::CharDevice(0));
    t.inode_mut(w).nlink = 2;
    link(&mut t, ROOT, "wh-b", w);
    let n = add(&mut t, ROOT, "nlink3", inline(b"x"));
    t.inode_mut(n).nlink = 3;

    // Extended inodes: big ids, an mtime before 1970 with nanoseconds.
    let b = add(&mut t, ROOT, "bigid", inline(b"y"));
    t.inode_mut(b).meta.uid = 70000;
    t.inode_mut(b).meta.gid = 100000;
    let m = add(&mut t, ROOT, "mtime", inline(b"z"));
    t.inode_mut(m).meta.mtime = Mtime { sec: -100, nsec: 999_999_999 };
    t
}

fn image(t: &Tree, o: &WriteOptions) -> Vec<u8> {
    let mut out = Vec::new();
    write_image(t, o, &mut out).unwrap();
    out
}

#[test]
fn agrees_on_every_kind_of_entry_and_names_every_exemption() {
    let img = image(&rich_tree(), &WriteOptions::default());
    let report = check_image(&img, "rich tree");
    assert_eq!(report.version, 1);
    let all = [
        Exemption::RootHexWhiteout,
        Exemption::NlinkRewritten,
        Exemption::WhiteoutLinks,
        Exemption::OverlayMarkerXattr,
        Exemption::WhiteoutForm,
        Exemption::Payload,
        Exemption::Opaque,
        Exemption::FsckNativeWhiteout,
    ];
    for e in all {
        assert!(report.exemptions.contains_key(&e), "{e:?} not exercised: {:?}", report.exemptions);
    }
    // Only the payloads composefs-rs cannot hold: not the one that is its digest's path.
    assert_eq!(report.exemptions[&Exemption::Payload], 2);

    let no_stubs = WriteOptions { root_whiteout_stubs: false, ..WriteOptions::default() };
    let mut t = rich_tree();
    t.inode_mut(t.resolve(b"/oci").unwrap()).as_dir_mut().unwrap().entries.clear();
    let report = check_image(&image(&t, &no_stubs), "rich tree without stubs");
    assert!(report.exemptions.contains_key(&Exemption::FsckNoStubs), "{:?}", report.exemptions);
}

type Mutation = (&'static str, &'static [u8], fn(&mut Tree, usize));

/// Each changes one thing about one path (the second field); the function gets that path's inode.
const MUTATIONS: &[Mutation] = &[
    ("uid", b"/bigid", |t, i| t.inode_mut(i).meta.uid += 1),
    ("gid", b"/bigid", |t, i| t.inode_mut(i).meta.gid = 0),
    ("permissions", b"/dir", |t, i| t.inode_mut(i).meta.permissions = 0o700),
    ("mtime nsec", b"/mtime", |t, i| t.inode_mut(i).meta.mtime.nsec -= 1),
    ("mtime of a compact inode", b"/fifo", |t, i| t.inode_mut(i).meta.mtime.sec += 1),
    ("xattr value", b"/dir/inline", |t, i| {
        t.inode_mut(i).meta.xattrs.insert(b"user.a".to_vec(), b"b\0C=d".to_vec());
    }),
    ("xattr added", b"/", |t, i| {
        t.inode_mut(i).meta.xattrs.insert(b"user.new".to_vec(), Vec::new());
    }),
    ("escaped overlay xattr removed", b"/dir", |t, i| {
        t.inode_mut(i).meta.xattrs.remove(&b"trusted.overlay.foo"[..]);
    }),
    ("marker xattr composefs-rs drops", b"/marked", |t, i| {
        t.inode_mut(i).meta.xattrs.insert(b"user.overlay.opaque".to_vec(), b"n".to_vec());
    }),
    ("inline content", b"/dir/inline", |t, i| t.inode_mut(i).kind = inline(b"hellO\n")),
    ("long inline content", b"/dir/big-inline", |t, i| {
        let mut c = vec![7; 3000];
        c[2999] = 8;
        t.inode_mut(i).kind = inline(&c);
    }),
    ("symlink target", b"/link", |t, i| t.inode_mut(i).kind = InodeKind::Symlink(b"dir/inlinE".to_vec())),
    ("payload", b"/ext-verity", |t, i| {
        t.inode_mut(i).kind =
            file(5000, FileContent::External { payload: Some(b"x/y".to_vec()), digest: Some([0x5a; 32]) })
    }),
    ("fs-verity digest", b"/ext-verity", |t, i| {
        let payload = Some(object_path(&[0xc3; 32]));
        t.inode_mut(i).kind = file(5000, FileContent::External { payload, digest: Some([0x5b; 32]) })
    }),
    ("digest added", b"/ext-noverity", |t, i| {
        let payload = Some(object_path(&[0xc3; 32]));
        t.inode_mut(i).kind = file(10, FileContent::External { payload, digest: Some([0xc3; 32]) })
    }),
    ("external size", b"/ext-odd", |t, i| {
        t.inode_mut(i).kind = file(8, FileContent::External { payload: Some(b"50/231e.file".to_vec()), digest: None })
    }),
    ("empty file made external", b"/empty", |t, i| {
        t.inode_mut(i).kind = file(1, FileContent::External { payload: None, digest: None })
    }),
    ("rdev", b"/chr", |t, i| t.inode_mut(i).kind = InodeKind::CharDevice(260)),
    ("file type", b"/fifo", |t, i| t.inode_mut(i).kind = InodeKind::Socket),
    ("nlink", b"/nlink3", |t, i| t.inode_mut(i).nlink = 1),
    ("whiteout form", b"/dir/wh", |t, i| t.inode_mut(i).kind = InodeKind::OverlayWhiteout),
    ("whiteout at a stub's name", b"/ab", |t, i| t.inode_mut(i).meta.uid = 5),
    ("opaque", b"/dir", |t, i| t.inode_mut(i).as_dir_mut().unwrap().overlay_opaque = false),
    // /dir/hl2 comes first in depth-first name order, so /hl1 is the name that loses its link.
    ("hardlink broken", b"/hl1", |t, i| {
        let copy = t.inode(i).clone();
        let id = t.push(copy);
        let d = t.resolve(b"/dir").unwrap();
        t.link(d, b"hl2".to_vec(), DirEntry { inode: id, hardlink: false });
        t.link(ROOT, b"hl1".to_vec(), DirEntry { inode: i, hardlink: false });
    }),
    ("whiteout hardlink broken", b"/wh-b", |t, i| {
        let copy = t.inode(i).clone();
        let id = t.push(copy);
        t.link(ROOT, b"wh-b".to_vec(), DirEntry { inode: id, hardlink: false });
    }),
    ("entry added", b"/new", |t, _| {
        add(t, ROOT, "new", InodeKind::Fifo);
    }),
    ("entry removed", b"/sock", |t, _| {
        t.inode_mut(ROOT).as_dir_mut().unwrap().entries.remove(&b"sock"[..]);
    }),
];

#[test]
fn finds_each_deliberate_difference() {
    let img = image(&rich_tree(), &WriteOptions::default());
    let base = read_image(&img).unwrap();
    compare(&img, &base).unwrap();
    for (what, path, mutate) in MUTATIONS {
        let shown = String::from_utf8_lossy(path);
        let mut changed = base.clone();
        let at = changed.resolve(path).unwrap_or(ROOT);
        mutate(&mut changed, at);
        assert!(changed != base, "{what}: the mutation changes nothing");

        // This library's reading changed, the image not.
        let err = compare(&img, &changed).err().unwrap_or_else(|| panic!("{what}: not found"));
        assert!(err.lines().any(|l| l.starts_with(&format!("{shown}: "))), "{what}: not reported at {shown}:\n{err}");
        assert!(err.contains("dump by composefs-rs: "), "{what}: no composefs-rs dump lines:\n{err}");

        // The image of the changed tree, read as the original.
        let img2 = image(&changed, &WriteOptions::default());
        let err = compare(&img2, &base).err().unwrap_or_else(|| panic!("{what}: the changed image is not found"));
        assert!(err.lines().any(|l| l.starts_with(&format!("{shown}: "))), "{what}: not reported at {shown}:\n{err}");
    }
}
