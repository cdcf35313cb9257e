//! Property tests: random trees through the EROFS writer and reader.
//! - write -> read -> write gives the same bytes;
//! - the tree read back names the same paths with the same kinds, metadata and xattrs;
//! - composefs-rs reads the image as this library does (tests/support/oracle.rs);
//! - for trees a dump can express, dump -> parse -> write gives the same image too.

mod support;

use std::collections::BTreeMap;

use composefs_storage::image::{
    dump, read_image, write_image, DirEntry, Directory, File, FileContent, Inode, InodeKind, Metadata, Mtime, Tree,
    WriteOptions, ROOT,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum K {
    Dir {
        opaque: bool,
    },
    External {
        size: u64,
        payload: Option<Vec<u8>>,
        digest: Option<[u8; 32]>,
    },
    Inline(Vec<u8>),
    Symlink(Vec<u8>),
    Chr(u64),
    Blk(u64),
    Fifo,
    Sock,
    OverlayWhiteout,
    /// A hardlink to the n-th earlier non-directory inode.
    Link(usize),
}

#[derive(Debug, Clone)]
struct Op {
    parent: usize,
    name: Vec<u8>,
    kind: K,
    meta: Metadata,
    nlink: u32,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'0'), Just(b'f'), Just(b'.'), Just(b'-')], 1..4),
        2 => proptest::collection::vec(1u8..=255, 1..30),
        1 => proptest::collection::vec(Just(b'x'), 200..=255),
    ]
    .prop_filter("valid name", |n| n.as_slice() != b"." && n.as_slice() != b".." && !n.contains(&b'/'))
}

fn meta() -> impl Strategy<Value = Metadata> {
    let key = prop_oneof![
        Just(b"user.a".to_vec()),
        Just(b"user.overlay.whiteout".to_vec()),
        Just(b"trusted.overlay.opaque".to_vec()),
        Just(b"trusted.overlay.redirect".to_vec()),
        Just(b"security.selinux".to_vec()),
        Just(b"system.posix_acl_access".to_vec()),
        Just(b"trusted.x".to_vec()),
        Just(b"odd.key=\x01".to_vec()),
    ];
    let value = prop_oneof![Just(b"".to_vec()), Just(b"y".to_vec()), proptest::collection::vec(any::<u8>(), 0..80)];
    (
        0u32..0o10000,
        prop_oneof![0u32..3, Just(65535), Just(70000)],
        prop_oneof![0u32..3, Just(100000)],
        prop_oneof![Just(0i64), Just(1_700_000_000), -100i64..100],
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
        proptest::collection::btree_map(key, value, 0..4),
    )
        .prop_map(|(permissions, uid, gid, sec, nsec, xattrs)| Metadata {
            permissions,
            uid,
            gid,
            mtime: Mtime { sec, nsec },
            xattrs,
        })
}

fn kind() -> impl Strategy<Value = K> {
    prop_oneof![
        4 => any::<bool>().prop_map(|o| K::Dir { opaque: o }),
        4 => (
            prop_oneof![Just(0u64), 1u64..10_000_000, Just(5u64 << 40)],
            proptest::option::of(proptest::collection::vec(b'a'..=b'f', 1..70)),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|(size, payload, digest)| K::External { size, payload, digest }),
        2 => prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..100),
            proptest::collection::vec(any::<u8>(), 2000..5000)
        ]
        .prop_map(K::Inline),
        2 => prop_oneof![
            proptest::collection::vec(1u8..=255, 1..100),
            proptest::collection::vec(Just(b'l'), 3900..4095)
        ]
        .prop_map(K::Symlink),
        1 => prop_oneof![Just(0u64), Just(259u64), any::<u32>().prop_map(u64::from)].prop_map(K::Chr),
        1 => (1u64..5000).prop_map(K::Blk),
        1 => Just(K::Fifo),
        1 => Just(K::Sock),
        1 => Just(K::OverlayWhiteout),
        2 => (0usize..1000).prop_map(K::Link),
    ]
}

fn ops() -> impl Strategy<Value = (Metadata, Vec<Op>)> {
    let op = (0usize..1000, name(), kind(), meta(), 1u32..4).prop_map(|(parent, name, kind, meta, nlink)| Op {
        parent,
        name,
        kind,
        meta,
        nlink,
    });
    (meta(), proptest::collection::vec(op, 0..60))
}

/// Builds a tree; then makes each inode's first name in depth-first order its primary one (the
/// order the reader and mkcomposefs's own reader use).
fn build(root: Metadata, ops: &[Op]) -> Tree {
    let mut t = Tree::new(root);
    let mut dirs = vec![ROOT];
    let mut leaves = Vec::new();
    for op in ops {
        let parent = dirs[op.parent % dirs.len()];
        if t.lookup(parent, &op.name).is_some() {
            continue;
        }
        let kind = match &op.kind {
            K::Link(n) => {
                if leaves.is_empty() {
                    continue;
                }
                let target = leaves[n % leaves.len()];
                t.link(parent, op.name.clone(), DirEntry { inode: target, hardlink: true });
                continue;
            }
            K::Dir { opaque } => InodeKind::Directory(Directory { entries: BTreeMap::new(), overlay_opaque: *opaque }),
            K::External { size, payload, digest } => InodeKind::File(File {
                size: *size,
                content: FileContent::External { payload: payload.clone(), digest: *digest },
            }),
            K::Inline(c) => InodeKind::File(File { size: c.len() as u64, content: FileContent::Inline(c.clone()) }),
            K::Symlink(s) => InodeKind::Symlink(s.clone()),
            K::Chr(r) => InodeKind::CharDevice(*r),
            K::Blk(r) => InodeKind::BlockDevice(*r),
            K::Fifo => InodeKind::Fifo,
            K::Sock => InodeKind::Socket,
            K::OverlayWhiteout => InodeKind::OverlayWhiteout,
        };
        let is_dir = matches!(kind, InodeKind::Directory(_));
        let id = t.push(Inode { meta: op.meta.clone(), kind, nlink: op.nlink });
        t.link(parent, op.name.clone(), DirEntry { inode: id, hardlink: false });
        if is_dir {
            dirs.push(id);
        } else {
            leaves.push(id);
        }
    }
    // Primary = first name in walk order.
    let mut seen = vec![false; t.inodes.len()];
    let entries: Vec<(Vec<u8>, DirEntry)> = t.walk().collect();
    for (path, e) in entries {
        let first = !std::mem::replace(&mut seen[e.inode], true);
        let slash = path.iter().rposition(|&b| b == b'/').unwrap();
        let dir = t.resolve(&path[..slash]).unwrap();
        t.link(dir, path[slash + 1..].to_vec(), DirEntry { inode: e.inode, hardlink: !first });
    }
    t
}

fn image(t: &Tree, o: &WriteOptions) -> Vec<u8> {
    let mut v = Vec::new();
    write_image(t, o, &mut v).unwrap();
    v
}

/// What must survive a round trip, per path: kind, metadata, content (directory nlink and a
/// size-0 file's payload are not kept by the format).
fn summary(t: &Tree, stubs: bool) -> Vec<(Vec<u8>, bool, String)> {
    t.walk()
        .filter(|(p, _)| {
            // A root-level OverlayWhiteout that looks like a stub is dropped by the reader.
            let i = t.inode(t.resolve(p).unwrap());
            !(stubs
                && p.len() == 3
                && p[1..].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                && i.kind == InodeKind::OverlayWhiteout)
        })
        .map(|(p, e)| {
            let i = t.inode(e.inode);
            let kind = match &i.kind {
                InodeKind::Directory(d) => format!("dir opaque={}", d.overlay_opaque),
                InodeKind::File(f) if f.size == 0 => "empty file".to_string(),
                k => format!("{k:?} nlink={}", i.nlink),
            };
            let mut xattrs = i.meta.xattrs.clone();
            let whiteout_parent = i.as_dir().is_some_and(|d| {
                d.entries.values().any(|c| !c.hardlink && t.inode(c.inode).kind == InodeKind::CharDevice(0))
            });
            if whiteout_parent {
                // mkcomposefs replaces these with its own markers.
                for k in [&b"trusted.overlay.opaque"[..], b"user.overlay.opaque", b"user.overlay.whiteouts"] {
                    xattrs.remove(k);
                }
            }
            if i.kind == InodeKind::CharDevice(0) {
                // mkcomposefs replaces it with its own whiteout marker.
                xattrs.remove(&b"user.overlay.whiteout"[..]);
            }
            (
                p,
                e.hardlink,
                format!("{kind} {:?} {:?}", i.meta.permissions, (i.meta.uid, i.meta.gid, i.meta.mtime, xattrs)),
            )
        })
        .collect()
}

fn has_extensions(t: &Tree) -> bool {
    t.inodes.iter().any(|i| match &i.kind {
        InodeKind::OverlayWhiteout => true,
        InodeKind::Directory(d) => d.overlay_opaque,
        _ => false,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn write_read_write_is_stable((root, ops) in ops(), stubs in any::<bool>(), min in 0u32..2) {
        let t = build(root, &ops);
        let o = WriteOptions { min_version: min, max_version: 1, root_whiteout_stubs: stubs };
        let img = image(&t, &o);
        let back = read_image(&img).unwrap();
        if let Err(e) = support::oracle::compare(&img, &back) {
            prop_assert!(false, "composefs-rs reads the image differently:\n{}", e);
        }
        prop_assert!(image(&back, &o) == img);
        prop_assert_eq!(summary(&back, stubs), summary(&t, stubs));
        if !has_extensions(&t) {
            let mut text = Vec::new();
            dump::write(&t, &mut text).unwrap();
            let parsed = dump::parse(&text[..], false).unwrap();
            prop_assert!(image(&parsed, &o) == img);
        }
    }
}
