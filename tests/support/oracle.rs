//! composefs-rs (crate `composefs` 0.9.4, a dev-dependency only) as the independent oracle of the
//! image tests: an image this library wrote is read by composefs-rs and by this library's reader
//! ([`read_image`]), and the two readings must agree entry by entry.
//!
//! composefs-rs is used three ways:
//! - its full reader, `erofs_to_filesystem` (paths, file types, permissions, uid/gid, mtime with
//!   nanoseconds, xattrs unescaped, hardlinks, inline content, symlink targets, rdev, sizes, the
//!   fs-verity digest of external files), and `write_dumpfile` of what it read (printed beside
//!   this library's dump of each path that differs);
//! - its low-level `Image` API (header, superblock, inodes, xattrs and directory blocks as
//!   composefs-rs parses them), walked here, for what its full reader does not keep: the on-disk
//!   nlink and inode identity, the redirect (payload) and metacopy, the stored form of every
//!   xattr, the whiteout form, overlay opaque directories and the root's whiteout stubs;
//! - its structural check, `Image::fsck_metadata`.
//!
//! Where composefs-rs cannot express what an image holds, the difference is an [`Exemption`]:
//! named, counted, printed with its reason, and that part is compared through the low-level walk
//! instead. Nothing is left out silently. One plain normalisation: an empty regular file is
//! `Empty` for both (this library reads it as external without payload, composefs-rs as inline
//! with no bytes; the format keeps nothing else for it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use composefs::erofs::format::{S_IFCHR, S_IFDIR, S_IFMT, S_IFREG, XATTR_PREFIXES};
use composefs::erofs::reader::{erofs_to_filesystem, DirectoryBlock, Image, InodeHeader, InodeOps, InodeType, XAttr};
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use composefs::generic_tree::{Inode as CfsInode, LeafContent};
use composefs::tree::{Directory as CfsDirectory, FileSystem, RegularFile, Stat};
use composefs_storage::image::{dump, read_image, File, FileContent, Inode, InodeKind, Tree};
use sha2::{Digest, Sha256};
use zerocopy::{FromBytes, IntoBytes};

/// Something composefs-rs cannot express, and how it is checked instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exemption {
    /// A root entry named by two hex digits that is a whiteout (native or escaped).
    RootHexWhiteout,
    /// A leaf whose on-disk nlink is not its number of names (or a whiteout's is not 1).
    NlinkRewritten,
    /// A whiteout with more than one name.
    WhiteoutLinks,
    /// One of composefs-rs's six overlay marker xattr names on an entry.
    OverlayMarkerXattr,
    /// A whiteout (native or escaped).
    WhiteoutForm,
    /// An external file whose payload is not the object path of what composefs-rs keeps (its
    /// digest, or the object id it parsed from the redirect).
    Payload,
    /// An overlay opaque directory.
    Opaque,
    /// `fsck_metadata` found a native whiteout below the root.
    FsckNativeWhiteout,
    /// `fsck_metadata` found fewer than 256 stub slots in the root.
    FsckNoStubs,
}

impl Exemption {
    pub fn reason(self) -> &'static str {
        match self {
            Exemption::RootHexWhiteout => {
                "composefs-rs skips every root entry named by two hex digits (either case) that is a whiteout, \
                 taking it for one of mkcomposefs's 256 stubs; mkcomposefs adds a stub only where the name is \
                 free, so such an entry is real. Compared through the low-level walk"
            }
            Exemption::NlinkRewritten => {
                "erofs_to_filesystem requires a leaf's nlink to equal its names in the tree and a whiteout's \
                 to be 1; mkcomposefs and this library take a dump's NLINK as given (SPEC §4.1). composefs-rs \
                 reads a copy with those nlinks rewritten; the on-disk nlink is compared through the \
                 low-level walk"
            }
            Exemption::WhiteoutLinks => {
                "composefs-rs reads a hardlinked whiteout as separate whiteouts (it refuses a whiteout with \
                 nlink > 1); which names share the inode is compared through the low-level walk"
            }
            Exemption::OverlayMarkerXattr => {
                "composefs-rs drops trusted.overlay.overlay.{whiteout,whiteouts,opaque} and \
                 user.overlay.{whiteout,whiteouts,opaque} wherever they are; this library's reader drops them \
                 only where mkcomposefs put them as whiteout markers. Compared in stored form through the \
                 low-level walk"
            }
            Exemption::WhiteoutForm => {
                "composefs-rs reads a native whiteout (chr 0:0, this library's OverlayWhiteout) and an \
                 escaped one (a regular file marked trusted.overlay.overlay.whiteout, this library's \
                 CharDevice(0)) alike as CharacterDevice(0); the form is compared through the low-level walk"
            }
            Exemption::Payload => {
                "composefs-rs keeps no payload (SPEC §5.10): with a digest it ignores the redirect, without \
                 one it keeps an object id if the redirect ends in xx/<62 hex>, else nothing; the payload is \
                 compared with the trusted.overlay.redirect read through the low-level walk"
            }
            Exemption::Opaque => {
                "composefs-rs drops trusted.overlay.opaque=y (an OCI opaque directory); compared through the \
                 low-level walk"
            }
            Exemption::FsckNativeWhiteout => {
                "composefs-rs's fsck_metadata refuses a native whiteout (chr 0:0) below the root, which \
                 mkcomposefs never writes; this library writes one for an OCI whiteout (OverlayWhiteout, SPEC \
                 §10.4). fsck stops there; the stubs it would check next are checked by the low-level walk"
            }
            Exemption::FsckNoStubs => {
                "composefs-rs's fsck_metadata wants all 256 root stub slots; WriteOptions::root_whiteout_stubs \
                 = false leaves the stubs out on purpose (SPEC §10.2)"
            }
        }
    }
}

/// What a successful comparison covered.
#[derive(Debug, Default)]
pub struct Report {
    /// Entries this library's reader reports, the root included.
    pub entries: usize,
    /// `composefs_version` of the image header (0 or 1 for mkcomposefs's format).
    pub version: u32,
    /// Each exemption that applied, with how many entries it applied to.
    pub exemptions: BTreeMap<Exemption, usize>,
}

impl Report {
    pub fn print(&self, what: &str) {
        eprintln!(
            "oracle: {what}: {} entries agree with composefs-rs (composefs_version {})",
            self.entries, self.version
        );
        for (e, n) in &self.exemptions {
            eprintln!("  exemption {e:?} x{n}: {}", e.reason());
        }
    }
}

/// Reads `image` with this library's reader and with composefs-rs and panics, listing the
/// differences, unless they agree.
pub fn check_image(image: &[u8], what: &str) -> Report {
    let ours = read_image(image).unwrap_or_else(|e| panic!("{what}: this library cannot read its image: {e}"));
    match compare(image, &ours) {
        Ok(report) => {
            report.print(what);
            report
        }
        Err(e) => panic!("{what}: composefs-rs reads the image differently:\n{e}"),
    }
}

/// Compares `ours` (normally this library's reading of `image`) with composefs-rs's reading of
/// `image`. `Err` lists the differences.
pub fn compare(image: &[u8], ours: &Tree) -> Result<Report, String> {
    let img = Image::open(image)
        .and_then(|i| i.restrict_to_composefs())
        .map_err(|e| format!("composefs-rs rejects the image: {e}"))?;
    let mut report = Report { version: img.header.composefs_version.get(), ..Report::default() };
    let raw = raw_walk(&img).map_err(|e| format!("composefs-rs's Image API cannot walk the image: {e}"))?;
    let ours_flat = flatten_ours(ours);
    report.entries = ours_flat.len();

    let mut diffs = Diffs { who: "on disk", lines: Vec::new() };
    compare_raw(&raw, &ours_flat, &mut diffs, &mut report);

    fsck(&img, &raw, &ours_flat, &mut diffs, &mut report);
    let patched = rewrite_nlinks(image, &img, &raw, &mut report);
    let fs = match erofs_to_filesystem::<Sha256HashValue>(&patched) {
        Ok(fs) => fs,
        Err(e) => {
            diffs.note(b"/", format!("composefs-rs's erofs_to_filesystem rejects the image: {e:#}"));
            return Err(explain(&diffs.lines, ours, None));
        }
    };
    diffs.who = "composefs-rs";
    compare_fs(&fs, &raw, &ours_flat, &mut diffs, &mut report);

    if diffs.lines.is_empty() {
        return Ok(report);
    }
    Err(explain(&diffs.lines, ours, Some(&fs)))
}

/// The differences found, each with its path.
struct Diffs {
    /// Who this library is compared with in the current pass.
    who: &'static str,
    lines: Vec<(Vec<u8>, String)>,
}

impl Diffs {
    fn check<T: PartialEq + fmt::Debug>(&mut self, path: &[u8], field: &str, ours: T, theirs: T) {
        if ours != theirs {
            let who = self.who;
            self.note(path, format!("{field}: this library {ours:?}, {who} {theirs:?}"));
        }
    }

    fn note(&mut self, path: &[u8], what: String) {
        self.lines.push((path.to_vec(), what));
    }
}

/// Bytes shown as a dump shows them (one to one: equal text means equal bytes).
#[derive(PartialEq)]
struct Esc<'a>(&'a [u8]);

impl fmt::Debug for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "\"{}\"", esc(self.0))
    }
}

/// Bytes shown in hex.
#[derive(PartialEq)]
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", hex(self.0))
    }
}

/// A mode shown in octal.
#[derive(PartialEq)]
struct Oct(u32);

impl fmt::Debug for Oct {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:o}", self.0)
    }
}

/// An entry as both sides can say it.
#[derive(Clone, PartialEq, Eq)]
enum Kind<'a> {
    Dir,
    /// A regular file of size 0.
    Empty,
    Inline(&'a [u8]),
    /// `redirect_id`: the object id composefs-rs takes from the redirect when there is no digest.
    External {
        size: u64,
        digest: Option<[u8; 32]>,
        redirect_id: Option<[u8; 32]>,
    },
    Symlink(&'a [u8]),
    Whiteout,
    Chr(u64),
    Blk(u64),
    Fifo,
    Socket,
}

impl fmt::Debug for Kind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let digest = |d: &Option<[u8; 32]>| d.as_ref().map_or("-".to_string(), |d| hex(d));
        match self {
            Kind::Inline(c) if c.len() > 64 => {
                write!(f, "Inline({} bytes, sha256 {})", c.len(), hex(&Sha256::digest(c)))
            }
            Kind::Inline(c) => write!(f, "Inline({:?})", Esc(c)),
            Kind::External { size, digest: d, redirect_id } => {
                write!(f, "External(size {size}, digest {}, redirect id {})", digest(d), digest(redirect_id))
            }
            Kind::Symlink(t) => write!(f, "Symlink({:?})", Esc(t)),
            Kind::Dir => write!(f, "Dir"),
            Kind::Empty => write!(f, "Empty"),
            Kind::Whiteout => write!(f, "Whiteout"),
            Kind::Chr(r) => write!(f, "Chr({r})"),
            Kind::Blk(r) => write!(f, "Blk({r})"),
            Kind::Fifo => write!(f, "Fifo"),
            Kind::Socket => write!(f, "Socket"),
        }
    }
}

struct Entry<'a> {
    path: Vec<u8>,
    kind: Kind<'a>,
    permissions: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    /// Sorted by name.
    xattrs: Vec<(&'a [u8], &'a [u8])>,
    /// For every name of an inode but the first in depth-first name order: the index of that
    /// first name's entry.
    link: Option<usize>,
}

/// One inode as composefs-rs's `Image` API parses it.
struct RawNode {
    nid: u64,
    mode: u32,
    nlink: u32,
    /// The inode's `i_u`: the device number of a device.
    rdev: u32,
    size: u64,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    /// Stored (not unescaped) xattrs: (name prefix from the prefix table, name suffix, value).
    xattrs: Vec<(&'static [u8], Vec<u8>, Vec<u8>)>,
}

impl RawNode {
    fn xattr(&self, key: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(p, s, _)| key.len() == p.len() + s.len() && key.starts_with(p) && key[p.len()..] == s[..])
            .map(|(_, _, v)| v.as_slice())
    }

    fn is_whiteout(&self) -> bool {
        let fmt = self.mode & S_IFMT as u32;
        (fmt == S_IFCHR as u32 && self.rdev == 0)
            || (fmt == S_IFREG as u32 && self.xattr(b"trusted.overlay.overlay.whiteout").is_some())
    }
}

/// The xattr names composefs-rs's reader drops wherever they are, as this library's reader names
/// them (`trusted.overlay.overlay.X` unescaped to `trusted.overlay.X`).
const MARKER_XATTRS: [&[u8]; 6] = [
    b"trusted.overlay.whiteout",
    b"trusted.overlay.whiteouts",
    b"trusted.overlay.opaque",
    b"user.overlay.whiteout",
    b"user.overlay.whiteouts",
    b"user.overlay.opaque",
];

/// The name an xattr of the tree is stored under: a `trusted.overlay.` one is escaped (SPEC §5.3).
fn stored_name(key: &[u8]) -> Vec<u8> {
    match key.strip_prefix(b"trusted.overlay.") {
        Some(rest) => [&b"trusted.overlay.overlay."[..], rest].concat(),
        None => key.to_vec(),
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path as a dump line starts with it.
fn show_path(p: &[u8]) -> String {
    let mut out = Vec::new();
    dump::escape_into(&mut out, p, false);
    show(&out)
}

/// An xattr name or value, escaped as in a dump (one to one, so equal strings mean equal bytes).
fn esc(b: &[u8]) -> String {
    let mut out = Vec::new();
    dump::escape_into(&mut out, b, true);
    show(&out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `xx/<62 hex>` object path of a digest.
fn object_path(d: &[u8; 32]) -> Vec<u8> {
    let h = hex(d);
    format!("{}/{}", &h[..2], &h[2..]).into_bytes()
}

fn is_hex2(name: &[u8]) -> bool {
    name.len() == 2 && name.iter().all(u8::is_ascii_hexdigit)
}

fn bump(report: &mut Report, e: Exemption) {
    *report.exemptions.entry(e).or_default() += 1;
}

/// This library's reading: the root as `/`, then [`Tree::walk`] (depth first, name order), each
/// entry with its inode.
fn flatten_ours(tree: &Tree) -> Vec<(Entry<'_>, &Inode)> {
    let root = tree.root();
    let mut out = vec![(ours_entry(b"/".to_vec(), root, None), root)];
    let mut first: HashMap<usize, usize> = HashMap::new();
    for (path, e) in tree.walk() {
        let inode = tree.inode(e.inode);
        let link = if inode.as_dir().is_some() { None } else { first.get(&e.inode).copied() };
        first.entry(e.inode).or_insert(out.len());
        out.push((ours_entry(path, inode, link), inode));
    }
    out
}

fn ours_entry(path: Vec<u8>, inode: &Inode, link: Option<usize>) -> Entry<'_> {
    let kind = match &inode.kind {
        InodeKind::Directory(_) => Kind::Dir,
        InodeKind::File(f) if f.size == 0 => Kind::Empty,
        InodeKind::File(f) => match &f.content {
            FileContent::Inline(c) => Kind::Inline(c),
            FileContent::External { payload, digest } => Kind::External {
                size: f.size,
                digest: *digest,
                // composefs-rs's own rule (check_redirect_xattr): only without a digest.
                redirect_id: match (digest, payload) {
                    (None, Some(p)) => Sha256HashValue::from_object_pathname(p).ok().map(id_bytes),
                    _ => None,
                },
            },
        },
        InodeKind::Symlink(t) => Kind::Symlink(t),
        InodeKind::CharDevice(0) | InodeKind::OverlayWhiteout => Kind::Whiteout,
        InodeKind::CharDevice(r) => Kind::Chr(*r),
        InodeKind::BlockDevice(r) => Kind::Blk(*r),
        InodeKind::Fifo => Kind::Fifo,
        InodeKind::Socket => Kind::Socket,
    };
    let m = &inode.meta;
    Entry {
        path,
        kind,
        permissions: m.permissions,
        uid: m.uid,
        gid: m.gid,
        mtime: (m.mtime.sec, m.mtime.nsec),
        xattrs: m.xattrs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect(),
        link,
    }
}

fn id_bytes(id: Sha256HashValue) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(id.as_bytes());
    out
}

/// Every entry reachable from the root, depth first in name order, the root first as `/`.
fn raw_walk(img: &Image) -> Result<Vec<(Vec<u8>, RawNode)>, String> {
    let root_nid = img.sb.root_nid.get() as u64;
    let mut out = Vec::new();
    let mut stack = vec![(b"/".to_vec(), root_nid)];
    let mut dirs_seen = HashSet::new();
    while let Some((path, nid)) = stack.pop() {
        let inode = img.inode(nid).map_err(|e| format!("{}: nid {nid}: {e}", show_path(&path)))?;
        let node = raw_node(img, nid, &inode).map_err(|e| format!("{}: {e}", show_path(&path)))?;
        if node.mode & S_IFMT as u32 == S_IFDIR as u32 {
            if !dirs_seen.insert(nid) {
                return Err(format!("{}: directory nid {nid} named twice", show_path(&path)));
            }
            let mut children = dir_children(img, &inode).map_err(|e| format!("{}: {e}", show_path(&path)))?;
            children.sort();
            for (name, child) in children.into_iter().rev() {
                let prefix = if path == b"/" { &[][..] } else { &path[..] };
                stack.push(([prefix, b"/", &name].concat(), child));
            }
        }
        out.push((path, node));
    }
    Ok(out)
}

fn dir_children(img: &Image, inode: &InodeType) -> Result<Vec<(Vec<u8>, u64)>, String> {
    let mut out = Vec::new();
    let mut add = |block: &DirectoryBlock| -> Result<(), String> {
        for e in block.entries().map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            if e.name != b"." && e.name != b".." {
                out.push((e.name.to_vec(), e.nid()));
            }
        }
        Ok(())
    };
    for blk in img.inode_blocks(inode).map_err(|e| e.to_string())? {
        add(img.directory_block(blk).map_err(|e| e.to_string())?)?;
    }
    if let Some(inline) = inode.inline() {
        add(DirectoryBlock::ref_from_bytes(inline).map_err(|_| "inline directory data".to_string())?)?;
    }
    Ok(out)
}

fn raw_node(img: &Image, nid: u64, inode: &InodeType) -> Result<RawNode, String> {
    let (uid, gid, mtime) = match inode {
        InodeType::Compact(i) => (
            i.header.uid.get() as u32,
            i.header.gid.get() as u32,
            // A compact inode has no mtime: it is the build time (SPEC §5.6).
            (img.sb.build_time.get() as i64, img.sb.build_time_nsec.get()),
        ),
        InodeType::Extended(i) => {
            (i.header.uid.get(), i.header.gid.get(), (i.header.mtime.get() as i64, i.header.mtime_nsec.get()))
        }
    };
    let mut xattrs = Vec::new();
    if let Some(section) = inode.xattrs().map_err(|e| e.to_string())? {
        let mut push = |x: &XAttr| -> Result<(), String> {
            let prefix = XATTR_PREFIXES
                .get(x.header.name_index as usize)
                .ok_or_else(|| format!("xattr prefix index {}", x.header.name_index))?;
            let suffix = x.suffix().map_err(|e| e.to_string())?.to_vec();
            xattrs.push((*prefix, suffix, x.value().map_err(|e| e.to_string())?.to_vec()));
            Ok(())
        };
        for id in section.shared().map_err(|e| e.to_string())? {
            push(img.shared_xattr(id.get()).map_err(|e| e.to_string())?)?;
        }
        for x in section.local().map_err(|e| e.to_string())? {
            push(x.map_err(|e| e.to_string())?)?;
        }
    }
    Ok(RawNode {
        nid,
        mode: inode.mode().0.get() as u32,
        nlink: inode.nlink(),
        rdev: inode.u(),
        size: inode.size(),
        uid,
        gid,
        mtime,
        xattrs,
    })
}

/// This library's reading against the low-level walk: everything on disk, stubs included.
fn compare_raw(raw: &[(Vec<u8>, RawNode)], ours: &[(Entry, &Inode)], diffs: &mut Diffs, report: &mut Report) {
    let by_path: HashMap<&[u8], &RawNode> = raw.iter().map(|(p, n)| (p.as_slice(), n)).collect();
    let ours_paths: HashSet<&[u8]> = ours.iter().map(|(o, _)| o.path.as_slice()).collect();
    let root = &raw[0].1;

    // Names on disk that this library's reader does not report: only the root's stubs (SPEC §5.3).
    let stub_xattrs: Vec<(&[u8], Vec<u8>, Vec<u8>)> = root
        .xattr(b"security.selinux")
        .map(|v| vec![(&b"security."[..], b"selinux".to_vec(), v.to_vec())])
        .unwrap_or_default();
    for (path, n) in raw {
        if ours_paths.contains(path.as_slice()) {
            continue;
        }
        let name = &path[1..];
        let stub = name.len() == 2
            && name.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && n.mode == S_IFCHR as u32 | 0o644
            && n.rdev == 0
            && n.nlink == 1
            && (n.uid, n.gid, n.mtime) == (root.uid, root.gid, root.mtime)
            && n.xattrs == stub_xattrs;
        if !stub {
            diffs.note(path, format!("on disk (nid {}, mode {:o}) but not in this library's reading", n.nid, n.mode));
        }
    }

    let mut first_of_nid: HashMap<u64, &[u8]> = HashMap::new();
    for (o, inode) in ours {
        let path = o.path.as_slice();
        let Some(n) = by_path.get(path) else {
            diffs.note(path, "in this library's reading but not on disk".into());
            continue;
        };
        let fmt = n.mode & S_IFMT as u32;
        let (want_fmt, want_rdev) = match &inode.kind {
            // SPEC §5.3: escaped to a regular file marked trusted.overlay.overlay.whiteout.
            InodeKind::CharDevice(0) => (S_IFREG as u32, None),
            InodeKind::CharDevice(r) | InodeKind::BlockDevice(r) => (inode.kind.file_type_bits(), Some(*r)),
            InodeKind::OverlayWhiteout => (S_IFCHR as u32, Some(0)),
            k => (k.file_type_bits(), None),
        };
        diffs.check(path, "file type", Oct(want_fmt), Oct(fmt));
        if let Some(r) = want_rdev {
            diffs.check(path, "rdev", r, n.rdev as u64);
        }
        if o.kind == Kind::Whiteout {
            diffs.check(path, "a whiteout", true, n.is_whiteout());
            bump(report, Exemption::WhiteoutForm);
        }
        diffs.check(path, "permissions", Oct(o.permissions), Oct(n.mode & 0o7777));
        diffs.check(path, "uid/gid", (o.uid, o.gid), (n.uid, n.gid));
        diffs.check(path, "mtime", o.mtime, n.mtime);
        diffs.check(path, "nlink", inode.nlink, n.nlink);
        match &inode.kind {
            InodeKind::File(f) => diffs.check(path, "size", f.size, n.size),
            InodeKind::Symlink(t) => diffs.check(path, "size", t.len() as u64, n.size),
            _ => {}
        }

        // Every xattr of the tree is on disk in its stored form (SPEC §5.3; composefs-rs drops
        // some, which are checked here only).
        for &(k, v) in &o.xattrs {
            let stored = n.xattr(&stored_name(k));
            if stored != Some(v) {
                diffs.note(
                    path,
                    format!("xattr {:?}: this library {:?}, on disk {:?}", Esc(k), Esc(v), stored.map(Esc)),
                );
            }
        }

        // The redirect and metacopy of a file with external content (SPEC §5.3).
        let (payload, metacopy) = match &inode.kind {
            InodeKind::File(File { size: 1.., content: FileContent::External { payload, digest } }) => {
                let metacopy = match digest {
                    Some(d) => [&[0, 36, 0, 1][..], d].concat(),
                    None => Vec::new(),
                };
                if let Some(p) = payload {
                    let kept = match digest {
                        Some(d) => *p == object_path(d),
                        None => {
                            Sha256HashValue::from_object_pathname(p).is_ok_and(|id| *p == object_path(&id_bytes(id)))
                        }
                    };
                    if !kept {
                        bump(report, Exemption::Payload);
                    }
                }
                (payload.as_deref(), Some(metacopy))
            }
            _ => (None, None),
        };
        let redirect = n.xattr(b"trusted.overlay.redirect").map(|v| v.strip_prefix(b"/").unwrap_or(v));
        diffs.check(path, "payload (trusted.overlay.redirect)", payload.map(Esc), redirect.map(Esc));
        let disk_metacopy = n.xattr(b"trusted.overlay.metacopy");
        diffs.check(path, "trusted.overlay.metacopy", metacopy.as_deref().map(Hex), disk_metacopy.map(Hex));

        // An OCI opaque directory (the root always has the marker).
        if let Some(dir) = inode.as_dir() {
            if path != b"/" {
                let disk = n.xattr(b"trusted.overlay.opaque") == Some(b"y");
                diffs.check(path, "overlay opaque", dir.overlay_opaque, disk);
                if dir.overlay_opaque {
                    bump(report, Exemption::Opaque);
                }
            }
        }

        // Which names share an inode.
        if fmt != S_IFDIR as u32 {
            let first = *first_of_nid.entry(n.nid).or_insert(path);
            let disk_link = (first != path).then_some(first);
            let link = o.link.map(|i| ours[i].0.path.as_slice());
            diffs.check(path, "hardlink to", link.map(Esc), disk_link.map(Esc));
        }
    }
}

/// composefs-rs's structural check of the whole image (`Image::fsck_metadata`: inline symlink
/// layout for old kernels, the root's 256 stub slots, no native whiteout outside the root). It
/// stops at its first finding; the two it makes on images this library writes on purpose are
/// exemptions.
fn fsck(img: &Image, raw: &[(Vec<u8>, RawNode)], ours: &[(Entry, &Inode)], diffs: &mut Diffs, report: &mut Report) {
    let Err(e) = img.fsck_metadata() else { return };
    let msg = e.to_string();
    let native_below_root =
        ours.iter().any(|(o, inode)| inode.kind == InodeKind::OverlayWhiteout && o.path[1..].contains(&b'/'));
    let stub_slots = raw
        .iter()
        .filter(|(p, _)| p.len() == 3 && p[1..].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
        .count();
    if msg.contains("native whiteout outside root stubs") && native_below_root {
        bump(report, Exemption::FsckNativeWhiteout);
    } else if msg.contains("hex-named root entries, expected 256") && stub_slots < 256 {
        bump(report, Exemption::FsckNoStubs);
    } else {
        diffs.note(b"/", format!("composefs-rs's fsck_metadata: {msg}"));
    }
}

/// A copy of `image` whose leaves' nlinks are what `erofs_to_filesystem` requires: the number of
/// names, 1 for a whiteout.
fn rewrite_nlinks(image: &[u8], img: &Image, raw: &[(Vec<u8>, RawNode)], report: &mut Report) -> Vec<u8> {
    let mut names: BTreeMap<u64, (u32, &RawNode)> = BTreeMap::new();
    for (_, n) in raw {
        if n.mode & S_IFMT as u32 != S_IFDIR as u32 {
            names.entry(n.nid).or_insert((0, n)).0 += 1;
        }
    }
    let inodes_at = img.sb.meta_blkaddr.get() as usize * img.block_size;
    let mut out = image.to_vec();
    for (nid, (count, n)) in names {
        if n.is_whiteout() && count > 1 {
            bump(report, Exemption::WhiteoutLinks);
        }
        let want = if n.is_whiteout() { 1 } else { count };
        if n.nlink == want {
            continue;
        }
        bump(report, Exemption::NlinkRewritten);
        let at = inodes_at + nid as usize * 32;
        if out[at] & 1 == 0 {
            out[at + 6..at + 8].copy_from_slice(&(want as u16).to_le_bytes()); // compact: i_nlink, u16
        } else {
            out[at + 44..at + 48].copy_from_slice(&want.to_le_bytes()); // extended: i_nlink, u32
        }
    }
    out
}

/// This library's reading against composefs-rs's full reader.
fn compare_fs(
    fs: &FileSystem<Sha256HashValue>,
    raw: &[(Vec<u8>, RawNode)],
    ours: &[(Entry, &Inode)],
    diffs: &mut Diffs,
    report: &mut Report,
) {
    let mut theirs = vec![cfs_entry(b"/".to_vec(), &fs.root.stat, Kind::Dir, None)];
    flatten_cfs(fs, &fs.root, b"", &mut HashMap::new(), &mut theirs);
    let by_path: HashMap<&[u8], &Entry> = theirs.iter().map(|e| (e.path.as_slice(), e)).collect();
    let raw: HashMap<&[u8], &RawNode> = raw.iter().map(|(p, n)| (p.as_slice(), n)).collect();

    let mut expected = HashSet::new();
    for (o, _) in ours {
        let path = o.path.as_slice();
        let top = path.len() > 1 && !path[1..].contains(&b'/');
        if top && is_hex2(&path[1..]) && raw.get(path).is_some_and(|n| n.is_whiteout()) {
            bump(report, Exemption::RootHexWhiteout);
            continue;
        }
        expected.insert(path);
        let Some(t) = by_path.get(path) else {
            diffs.note(path, "composefs-rs does not see it".into());
            continue;
        };
        diffs.check(path, "kind", &o.kind, &t.kind);
        diffs.check(path, "permissions", Oct(o.permissions), Oct(t.permissions));
        diffs.check(path, "uid/gid", (o.uid, o.gid), (t.uid, t.gid));
        diffs.check(path, "mtime", o.mtime, t.mtime);
        // Exemption::WhiteoutLinks: composefs-rs shares no whiteout.
        let link = if o.kind == Kind::Whiteout { None } else { o.link.map(|i| ours[i].0.path.as_slice()) };
        let their_link = t.link.map(|i| theirs[i].path.as_slice());
        diffs.check(path, "hardlink to", link.map(Esc), their_link.map(Esc));
        let mut ours_x = Vec::new();
        for &(k, v) in &o.xattrs {
            if MARKER_XATTRS.contains(&k) {
                bump(report, Exemption::OverlayMarkerXattr);
            } else {
                ours_x.push((Esc(k), Esc(v)));
            }
        }
        let theirs_x: Vec<(Esc, Esc)> = t.xattrs.iter().map(|&(k, v)| (Esc(k), Esc(v))).collect();
        diffs.check(path, "xattrs", ours_x, theirs_x);
    }
    for t in &theirs {
        if !expected.contains(t.path.as_slice()) {
            diffs.note(&t.path, "composefs-rs sees it, this library's reading has no such entry".into());
        }
    }
}

/// composefs-rs's reading in the same order as [`flatten_ours`].
fn flatten_cfs<'a>(
    fs: &'a FileSystem<Sha256HashValue>,
    dir: &'a CfsDirectory<Sha256HashValue>,
    prefix: &[u8],
    first: &mut HashMap<usize, usize>,
    out: &mut Vec<Entry<'a>>,
) {
    for (name, inode) in dir.sorted_entries() {
        let path = [prefix, b"/", name.as_bytes()].concat();
        match inode {
            CfsInode::Directory(d) => {
                out.push(cfs_entry(path.clone(), &d.stat, Kind::Dir, None));
                flatten_cfs(fs, d, &path, first, out);
            }
            CfsInode::Leaf(id, _) => {
                let leaf = fs.leaf(*id);
                let link = first.get(&id.0).copied();
                first.entry(id.0).or_insert(out.len());
                let kind = match &leaf.content {
                    LeafContent::Regular(RegularFile::Inline(d)) if d.is_empty() => Kind::Empty,
                    LeafContent::Regular(RegularFile::Inline(d)) => Kind::Inline(d),
                    LeafContent::Regular(RegularFile::External(id, size)) => {
                        Kind::External { size: *size, digest: Some(id_bytes(id.clone())), redirect_id: None }
                    }
                    LeafContent::Regular(RegularFile::ExternalNoVerity(id, size)) => {
                        Kind::External { size: *size, digest: None, redirect_id: Some(id_bytes(id.clone())) }
                    }
                    LeafContent::Regular(RegularFile::Sparse(0)) => Kind::Empty,
                    LeafContent::Regular(RegularFile::Sparse(size)) => {
                        Kind::External { size: *size, digest: None, redirect_id: None }
                    }
                    LeafContent::Symlink(t) => Kind::Symlink(t.as_bytes()),
                    LeafContent::CharacterDevice(0) => Kind::Whiteout,
                    LeafContent::CharacterDevice(r) => Kind::Chr(*r),
                    LeafContent::BlockDevice(r) => Kind::Blk(*r),
                    LeafContent::Fifo => Kind::Fifo,
                    LeafContent::Socket => Kind::Socket,
                };
                out.push(cfs_entry(path, &leaf.stat, kind, link));
            }
        }
    }
}

fn cfs_entry<'a>(path: Vec<u8>, stat: &'a Stat, kind: Kind<'a>, link: Option<usize>) -> Entry<'a> {
    Entry {
        path,
        kind,
        permissions: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        mtime: (stat.st_mtim_sec, stat.st_mtim_nsec),
        xattrs: stat.xattrs.iter().map(|(k, v)| (k.as_bytes(), &v[..])).collect(),
        link,
    }
}

/// The differences, then the dump lines of the first differing paths as both readers print them
/// (composefs-rs's `write_dumpfile` of its reading, this library's `dump::write` of its own).
fn explain(diffs: &[(Vec<u8>, String)], ours: &Tree, fs: Option<&FileSystem<Sha256HashValue>>) -> String {
    let mut out: Vec<String> = diffs.iter().take(40).map(|(p, what)| format!("{}: {what}", show_path(p))).collect();
    if diffs.len() > 40 {
        out.push(format!("... and {} more", diffs.len() - 40));
    }
    let mut ours_dump = Vec::new();
    if let Err(e) = dump::write(ours, &mut ours_dump) {
        out.push(format!("(this library's dump::write fails: {e})"));
    }
    let mut oracle_dump = Vec::new();
    if let Some(Err(e)) = fs.map(|fs| composefs::dumpfile::write_dumpfile(&mut oracle_dump, fs)) {
        out.push(format!("(composefs-rs's write_dumpfile fails: {e:#})"));
    }
    let mut shown = HashSet::new();
    for (path, _) in diffs {
        if shown.len() == 5 || !shown.insert(path) {
            continue;
        }
        let start = format!("{} ", show_path(path)).into_bytes();
        for (who, text) in [("this library", &ours_dump), ("composefs-rs", &oracle_dump)] {
            let found: Vec<String> = text.split(|&b| b == b'\n').filter(|l| l.starts_with(&start)).map(show).collect();
            out.push(format!(
                "  dump by {who}: {}",
                if found.is_empty() { "(none)".into() } else { found.join(" | ") }
            ));
        }
    }
    out.join("\n")
}
