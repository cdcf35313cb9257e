//! The EROFS writer: a [`Tree`] to the exact bytes mkcomposefs 1.0.8 writes (SPEC §5).
//!
//! Three passes over the tree, none of which allocates per node beyond one fixed-size record:
//! 1. breadth-first numbering (the C `lcfs_compute_tree` order), checks and directory nlink;
//! 2. per-node xattrs after the mkcomposefs rewrites, interned into a table that counts their
//!    uses (for the shared table); keys and values borrow the tree's bytes behind a static prefix,
//!    so no xattr byte is copied (a copy of every redirect and metacopy value was a fifth of the
//!    writer's memory);
//! 3. sizes and positions (tails, padding, nids, block addresses).
//!
//! The image is then written in one sequential pass through a buffered writer.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::Write;

use super::format::*;
use crate::image::tree::{FileContent, InodeKind, Mtime, Tree, ROOT};
use crate::{Error, Result};

/// How to write an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// `--min-version` of mkcomposefs (0 or 1).
    pub min_version: u32,
    /// `--max-version` of mkcomposefs (0 or 1; raised to `min_version` if lower).
    pub max_version: u32,
    /// Add the 256 root whiteout stubs `00`..`ff` as mkcomposefs does. A layer image meant for a
    /// stack where layer roots are plain lowers may leave them out (SPEC §10.2).
    pub root_whiteout_stubs: bool,
}

impl Default for WriteOptions {
    /// mkcomposefs defaults: versions 0..1, with stubs.
    fn default() -> Self {
        WriteOptions { min_version: 0, max_version: 1, root_whiteout_stubs: true }
    }
}

impl WriteOptions {
    /// Checks the options without a tree (versions must be 0 or 1).
    pub fn check(&self) -> Result<()> {
        version_for(self, false).map(|_| ())
    }
}

/// The composefs version an image of `tree` gets (SPEC §5.2).
pub fn select_version(tree: &Tree, options: &WriteOptions) -> Result<u32> {
    version_for(options, tree.has_escaped_whiteouts())
}

fn version_for(options: &WriteOptions, has_escaped_whiteouts: bool) -> Result<u32> {
    let (min, mut max) = (options.min_version, options.max_version);
    if min > COMPOSEFS_VERSION_MAX || max > COMPOSEFS_VERSION_MAX {
        return Err(Error::invalid_argument(format!(
            "composefs image version {} is not supported (0..={COMPOSEFS_VERSION_MAX})",
            min.max(max)
        )));
    }
    if max < min {
        max = min;
    }
    if min < 1 && max >= 1 && has_escaped_whiteouts {
        return Ok(1);
    }
    Ok(min)
}

/// Writes the composefs EROFS image of `tree` to `out`.
pub fn write_image(tree: &Tree, options: &WriteOptions, out: &mut impl Write) -> Result<()> {
    write_image_unbuffered(tree, options, &mut std::io::BufWriter::with_capacity(256 << 10, out))
}

/// [`write_image`] straight to `out`, which must buffer itself: the encoder makes many small writes.
pub(crate) fn write_image_unbuffered(tree: &Tree, options: &WriteOptions, out: &mut impl Write) -> Result<()> {
    let plan = Plan::new(tree, options)?;
    let mut w = Out { w: out, pos: 0 };
    plan.write(&mut w).map_err(|e| Error::io("writing composefs image", e))?;
    w.w.flush().map_err(|e| Error::io("writing composefs image", e))
}

/// Whether `name` is one of the root stub names `00`..`ff` (two lowercase hex digits): a name
/// the stubs of an mkcomposefs image would hide in the layers below it (SPEC §5.3, §10.2).
pub fn is_root_stub_name(name: &[u8]) -> bool {
    matches!(name, [a, b] if [a, b].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)))
}

/// The root stub names `00`..`ff`.
static STUB_NAMES: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut names = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        names[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    names
};

const UNSET: u32 = u32::MAX;

/// One inode of the image, in BFS order.
#[derive(Default, Clone)]
struct Node {
    /// Tree inode id, or `tree.inodes.len() + k` for root stub `k`.
    id: u32,
    /// Parent directory (tree id), for `..`.
    parent: u32,
    /// Directory nlink (2 + subdirectories).
    dir_nlink: u32,
    /// A directory that holds escaped whiteouts.
    has_whiteouts: bool,
    compact: bool,
    xattr_start: u32,
    xattr_len: u32,
    xattr_size: u32,
    tail: u32,
    n_blocks: u32,
    /// Zero bytes written before the inode (slot alignment and tail padding).
    pad: u32,
    blkaddr: u32,
    nid: u64,
}

/// The static first pieces of the xattr keys and values the writer makes, by index ([`XEntry`]
/// keeps a 1-byte index rather than a 16-byte slice).
const FIRST_PIECES: [&[u8]; 4] = [b"", b"trusted.overlay.overlay.", b"/", &[0, 36, 0, 1]];
const NO_PREFIX: u8 = 0;
/// An input `trusted.overlay.*` key, escaped (SPEC §5.3); generated escaped keys use it too, so
/// that one key always has one split (interning hashes the pieces).
const ESCAPED: u8 = 1;
/// A redirect: "/" + payload.
const SLASH: u8 = 2;
/// A metacopy value with a digest: its header + the digest.
const METACOPY_HEADER: u8 = 3;

/// A byte string in two pieces, a static first piece and borrowed rest, compared as their
/// concatenation.
#[derive(Clone, Copy)]
struct Pieces<'a> {
    first: &'static [u8],
    rest: &'a [u8],
}

impl<'a> Pieces<'a> {
    fn new(first: u8, rest: &'a [u8]) -> Self {
        Pieces { first: FIRST_PIECES[first as usize], rest }
    }

    fn len(&self) -> usize {
        self.first.len() + self.rest.len()
    }

    fn starts_with(&self, prefix: &[u8]) -> bool {
        let n = prefix.len().min(self.first.len());
        self.len() >= prefix.len() && self.first[..n] == prefix[..n] && self.rest.starts_with(&prefix[n..])
    }

    /// Without its first `n` bytes.
    fn skip(&self, n: usize) -> Pieces<'a> {
        match self.first.get(n..) {
            Some(first) => Pieces { first, rest: self.rest },
            None => Pieces { first: b"", rest: &self.rest[n - self.first.len()..] },
        }
    }

    /// The bytes in one slice: the rest itself, or both pieces copied into `buf`.
    fn contiguous<'b>(&self, buf: &'b mut Vec<u8>) -> &'b [u8]
    where
        'a: 'b,
    {
        if self.first.is_empty() {
            return self.rest;
        }
        buf.clear();
        buf.extend_from_slice(self.first);
        buf.extend_from_slice(self.rest);
        buf
    }

    fn write_to(&self, w: &mut Out<impl Write>) -> std::io::Result<()> {
        w.put(self.first)?;
        w.put(self.rest)
    }
}

impl PartialEq for Pieces<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pieces<'_> {}
impl PartialOrd for Pieces<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pieces<'_> {
    /// Bytewise order of the concatenations, compared a run at a time.
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = ([self.first, self.rest], [other.first, other.rest]);
        let (mut ai, mut ao, mut bi, mut bo) = (0, 0, 0, 0);
        loop {
            while ai < 2 && ao == a[ai].len() {
                ai += 1;
                ao = 0;
            }
            while bi < 2 && bo == b[bi].len() {
                bi += 1;
                bo = 0;
            }
            if ai == 2 || bi == 2 {
                return (ai != 2).cmp(&(bi != 2));
            }
            let n = (a[ai].len() - ao).min(b[bi].len() - bo);
            match a[ai][ao..ao + n].cmp(&b[bi][bo..bo + n]) {
                Ordering::Equal => (ao, bo) = (ao + n, bo + n),
                o => return o,
            }
        }
    }
}

/// The EROFS prefix index and the remaining suffix of an xattr key (`format::split_xattr_key`
/// over pieces).
fn split_key(key: Pieces<'_>) -> (u8, Pieces<'_>) {
    if key.first.is_empty() {
        let (index, suffix) = split_xattr_key(key.rest);
        return (index, Pieces { first: b"", rest: suffix });
    }
    for (prefix, index) in XATTR_PREFIXES {
        if key.starts_with(prefix) {
            return (index, key.skip(prefix.len()));
        }
    }
    (0, key)
}

/// One distinct (key, value) xattr pair.
#[derive(Clone, Copy)]
struct XEntry<'a> {
    key_rest: &'a [u8],
    val_rest: &'a [u8],
    key_first: u8,
    val_first: u8,
    /// The key's EROFS prefix index and that prefix's length (split once, when interned).
    prefix_index: u8,
    prefix_len: u8,
    count: u32,
    /// Next entry with the same hash.
    next: u32,
    /// Byte offset in the shared table, or UNSET when the pair is not shared.
    shared_off: u32,
}

/// A `Hasher` for keys that already are hashes.
#[derive(Default)]
struct IdentityHasher(u64);
impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("IdentityHasher only hashes u64")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Interns xattr pairs (borrowing their bytes) and counts their uses.
#[derive(Default)]
struct Interner<'a> {
    entries: Vec<XEntry<'a>>,
    heads: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    state: std::hash::RandomState,
}

impl<'a> Interner<'a> {
    /// `(first piece index, rest)` of the key and of the value.
    fn intern(&mut self, key: (u8, &'a [u8]), value: (u8, &'a [u8])) -> u32 {
        let (k, v) = (Pieces::new(key.0, key.1), Pieces::new(value.0, value.1));
        let mut h = self.state.build_hasher();
        h.write_usize(k.len());
        for piece in [k.first, k.rest, v.first, v.rest] {
            h.write(piece);
        }
        let hash = h.finish();
        let head = self.heads.get(&hash).copied().unwrap_or(UNSET);
        let mut cur = head;
        while cur != UNSET {
            if self.key(cur) == k && self.value(cur) == v {
                self.entries[cur as usize].count += 1;
                return cur;
            }
            cur = self.entries[cur as usize].next;
        }
        let id = self.entries.len() as u32;
        let (prefix_index, suffix) = split_key(k);
        self.entries.push(XEntry {
            key_rest: key.1,
            val_rest: value.1,
            key_first: key.0,
            val_first: value.0,
            prefix_index,
            prefix_len: (k.len() - suffix.len()) as u8,
            count: 1,
            next: head,
            shared_off: UNSET,
        });
        self.heads.insert(hash, id);
        id
    }

    fn key(&self, id: u32) -> Pieces<'a> {
        let e = &self.entries[id as usize];
        Pieces::new(e.key_first, e.key_rest)
    }

    fn value(&self, id: u32) -> Pieces<'a> {
        let e = &self.entries[id as usize];
        Pieces::new(e.val_first, e.val_rest)
    }

    /// The key's EROFS prefix index and its suffix.
    fn split_key(&self, id: u32) -> (u8, Pieces<'a>) {
        let e = &self.entries[id as usize];
        (e.prefix_index, self.key(id).skip(e.prefix_len as usize))
    }
}

/// A directory child as the image sees it, `.` and `..` and the stubs included.
#[derive(Clone, Copy)]
struct Child<'a> {
    name: &'a [u8],
    id: u32,
    /// Not a place of its own in BFS order (`.`, `..` and tree hardlinks).
    link: bool,
    /// A tree entry (not `.`, `..` or a stub).
    entry: bool,
}

/// Everything computed before the first byte is written.
struct Plan<'a> {
    tree: &'a Tree,
    stubs: bool,
    version: u32,
    nodes: Vec<Node>,
    /// nid by id (tree ids, then stubs); UNSET_NID until placed.
    nids: Vec<u64>,
    xattrs: Interner<'a>,
    node_xattrs: Vec<u32>,
    shared: Vec<u32>,
    shared_size: u64,
    has_acl: bool,
    min_mtime: Mtime,
    inodes_end: u64,
    data_start: u64,
    n_data_blocks: u64,
    /// The inode being worked on, to name it in errors.
    current: u32,
}

/// The path of tree inode `id`, for error messages (a walk: only on the error path).
fn describe(tree: &Tree, id: u32) -> String {
    if id as usize == ROOT {
        return "/".to_string();
    }
    if id as usize >= tree.inodes.len() {
        return "a root whiteout stub".to_string();
    }
    tree.walk()
        .find(|(_, e)| e.inode == id as usize && !e.hardlink)
        .map(|(p, _)| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_else(|| format!("inode {id}"))
}

const UNSET_NID: u64 = u64::MAX;

/// Calls `f` for each child of directory `dir` in `strcmp` order, with `.`, `..` and (for the
/// root) the stubs merged in; an existing entry wins over a stub of the same name.
fn for_each_child<'a>(
    tree: &'a Tree,
    stubs: bool,
    dir: u32,
    parent: u32,
    mut f: impl FnMut(Child<'a>) -> Result<()>,
) -> Result<()> {
    let Some(d) = tree.inodes[dir as usize].as_dir() else {
        return Ok(());
    };
    let mut entries = d.entries.iter().peekable();
    let n_specials = if dir as usize == ROOT && stubs { 2 + 256 } else { 2 };
    let n_tree = tree.inodes.len() as u32;
    for s in 0..n_specials {
        let (name, id): (&'a [u8], u32) = match s {
            0 => (b".", dir),
            1 => (b"..", parent),
            k => (&STUB_NAMES[k - 2], n_tree + (k - 2) as u32),
        };
        while let Some((n, e)) = entries.peek() {
            if n.as_slice() >= name {
                break;
            }
            f(Child { name: n, id: entry_id(e.inode), link: e.hardlink, entry: true })?;
            entries.next();
        }
        if s >= 2 && entries.peek().is_some_and(|(n, _)| n.as_slice() == name) {
            continue;
        }
        f(Child { name, id, link: s < 2, entry: false })?;
    }
    for (n, e) in entries {
        f(Child { name: n, id: entry_id(e.inode), link: e.hardlink, entry: true })?;
    }
    Ok(())
}

/// A tree inode id as u32; out-of-range ids saturate and are rejected as missing inodes.
fn entry_id(id: usize) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.len() > 255 || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return Err(Error::invalid_argument(format!(
            "tree has an invalid file name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

impl<'a> Plan<'a> {
    fn new(tree: &'a Tree, options: &WriteOptions) -> Result<Plan<'a>> {
        version_for(options, false)?;
        if tree.inodes.is_empty() || tree.inodes[ROOT].as_dir().is_none() {
            return Err(Error::invalid_argument("tree root is not a directory"));
        }
        if tree.inodes.len() >= (u32::MAX - 512) as usize {
            return Err(Error::limit("tree has too many inodes for an EROFS image"));
        }
        let mut plan = Plan {
            tree,
            stubs: options.root_whiteout_stubs,
            version: 0,
            nodes: Vec::with_capacity(tree.inodes.len() + 256),
            nids: vec![UNSET_NID; tree.inodes.len() + 256],
            xattrs: Interner::default(),
            node_xattrs: Vec::new(),
            shared: Vec::new(),
            shared_size: 0,
            has_acl: false,
            min_mtime: tree.inodes[ROOT].meta.mtime,
            inodes_end: 0,
            data_start: 0,
            n_data_blocks: 0,
            current: ROOT as u32,
        };
        let has_whiteouts = plan.number()?;
        plan.version = version_for(options, has_whiteouts)?;
        let result = (|| {
            plan.collect_xattrs()?;
            plan.share_xattrs();
            plan.place()
        })();
        result.map_err(|e| e.context(describe(tree, plan.current)))?;
        Ok(plan)
    }

    fn n_tree(&self) -> u32 {
        self.tree.inodes.len() as u32
    }

    fn kind(&self, id: u32) -> Option<&'a InodeKind> {
        self.tree.inodes.get(id as usize).map(|i| &i.kind)
    }

    /// Pass 1: BFS numbering, checks, directory nlink, whiteout parents.
    fn number(&mut self) -> Result<bool> {
        let tree = self.tree;
        let n_tree = self.n_tree();
        // Which BFS node an id became (to catch an inode with two primary names).
        let mut placed = vec![false; tree.inodes.len() + 256];
        placed[ROOT] = true;
        self.nodes.push(Node { id: ROOT as u32, parent: ROOT as u32, ..Default::default() });
        let mut i = 0;
        let mut any_whiteouts = false;
        while i < self.nodes.len() {
            let (dir, parent) = (self.nodes[i].id, self.nodes[i].parent);
            if dir >= n_tree || tree.inodes[dir as usize].as_dir().is_none() {
                i += 1;
                continue;
            }
            let (mut subdirs, mut whiteouts) = (0u32, false);
            let nodes = &mut self.nodes;
            for_each_child(tree, self.stubs, dir, parent, |c| {
                if c.entry {
                    check_name(c.name)?;
                    if c.id >= n_tree {
                        return Err(Error::invalid_argument(format!(
                            "tree entry {:?} names a missing inode",
                            String::from_utf8_lossy(c.name)
                        )));
                    }
                }
                let kind = if c.id < n_tree { Some(&tree.inodes[c.id as usize].kind) } else { None };
                if c.link {
                    if !(c.name == b"." || c.name == b"..") && matches!(kind, Some(InodeKind::Directory(_))) {
                        return Err(Error::invalid_argument(format!(
                            "tree has a hardlink {:?} to a directory",
                            String::from_utf8_lossy(c.name)
                        )));
                    }
                    return Ok(());
                }
                if std::mem::replace(&mut placed[c.id as usize], true) {
                    return Err(Error::invalid_argument(format!(
                        "tree inode {} has more than one primary name (at {:?})",
                        c.id,
                        String::from_utf8_lossy(c.name)
                    )));
                }
                match kind {
                    Some(InodeKind::Directory(_)) => subdirs += 1,
                    Some(InodeKind::CharDevice(0)) => whiteouts = true,
                    _ => {}
                }
                nodes.push(Node { id: c.id, parent: dir, ..Default::default() });
                Ok(())
            })?;
            let n = &mut self.nodes[i];
            n.dir_nlink = 2 + subdirs;
            n.has_whiteouts = whiteouts;
            any_whiteouts |= whiteouts;
            i += 1;
        }
        // Every hardlink must name an inode that has a place of its own.
        for node in &self.nodes {
            if let Some(d) = tree.inodes.get(node.id as usize).and_then(|i| i.as_dir()) {
                for (name, e) in &d.entries {
                    if e.hardlink && !placed.get(e.inode).copied().unwrap_or(false) {
                        return Err(Error::invalid_argument(format!(
                            "tree hardlink {:?} names an inode with no primary entry",
                            String::from_utf8_lossy(name)
                        )));
                    }
                }
            }
        }
        if self.nodes.len() > u32::MAX as usize {
            return Err(Error::limit("too many inodes for an EROFS image"));
        }
        Ok(any_whiteouts)
    }

    /// Pass 2: the xattrs of each node after the mkcomposefs rewrites (SPEC §5.3), interned.
    fn collect_xattrs(&mut self) -> Result<()> {
        let tree = self.tree;
        let n_tree = self.n_tree();
        let root = &tree.inodes[ROOT];
        let root_selinux = root.meta.xattrs.get(&b"security.selinux"[..]);
        // A node's (key, value) pairs as (first piece, rest), borrowing the tree.
        type Half<'t> = (u8, &'t [u8]);
        let mut pairs: Vec<(Half<'a>, Half<'a>)> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        self.node_xattrs.reserve(self.nodes.len() * 2);
        let mut min_mtime = self.min_mtime;
        let mut has_acl = false;
        for ni in 0..self.nodes.len() {
            let node = &self.nodes[ni];
            self.current = node.id;
            pairs.clear();
            let mut add = |key: Half<'a>, value: Half<'a>| pairs.push((key, value));
            if node.id >= n_tree {
                // A root stub: the root's mtime, owner and SELinux label.
                if let Some(v) = root_selinux {
                    add((NO_PREFIX, b"security.selinux"), (NO_PREFIX, v));
                }
            } else {
                let inode = &tree.inodes[node.id as usize];
                if inode.meta.mtime < min_mtime {
                    min_mtime = inode.meta.mtime;
                }
                for (k, v) in &inode.meta.xattrs {
                    match k.strip_prefix(b"trusted.overlay.") {
                        Some(rest) => add((ESCAPED, rest), (NO_PREFIX, v)),
                        None => add((NO_PREFIX, k), (NO_PREFIX, v)),
                    }
                }
                match &inode.kind {
                    InodeKind::File(f) if f.size > 0 => {
                        if let FileContent::External { payload, digest } = &f.content {
                            match digest {
                                Some(d) => add((NO_PREFIX, b"trusted.overlay.metacopy"), (METACOPY_HEADER, d)),
                                None => add((NO_PREFIX, b"trusted.overlay.metacopy"), (NO_PREFIX, b"")),
                            }
                            if let Some(p) = payload.as_deref().filter(|p| !p.is_empty()) {
                                add((NO_PREFIX, b"trusted.overlay.redirect"), (SLASH, p));
                            }
                        }
                    }
                    InodeKind::CharDevice(0) => {
                        add((ESCAPED, b"whiteout"), (NO_PREFIX, b""));
                        add((NO_PREFIX, b"user.overlay.whiteout"), (NO_PREFIX, b""));
                    }
                    InodeKind::Directory(d) => {
                        if node.has_whiteouts {
                            add((ESCAPED, b"whiteouts"), (NO_PREFIX, b""));
                            add((NO_PREFIX, b"user.overlay.whiteouts"), (NO_PREFIX, b""));
                            if self.version >= 1 {
                                add((ESCAPED, b"opaque"), (NO_PREFIX, b"x"));
                                add((NO_PREFIX, b"user.overlay.opaque"), (NO_PREFIX, b"x"));
                            }
                        }
                        if d.overlay_opaque || node.id as usize == ROOT {
                            add((NO_PREFIX, b"trusted.overlay.opaque"), (NO_PREFIX, b"y"));
                        }
                    }
                    _ => {}
                }
            }
            // Sort by key (stable: a later, generated value replaces an input one of the same key).
            // Most nodes' pairs come in order with no key twice (a file's metacopy and redirect):
            // one comparison each tells, where sorting and looking for duplicates took three.
            let key_of = |half: &Half<'a>| Pieces::new(half.0, half.1);
            let ordered = pairs.windows(2).all(|w| key_of(&w[0].0) < key_of(&w[1].0));
            if !ordered {
                pairs.sort_by(|a, b| key_of(&a.0).cmp(&key_of(&b.0)));
            }
            ids.clear();
            for (i, &(k, v)) in pairs.iter().enumerate() {
                let key = key_of(&k);
                if !ordered && pairs.get(i + 1).is_some_and(|n| key_of(&n.0) == key) {
                    continue;
                }
                let known = self.xattrs.entries.len();
                let id = self.xattrs.intern(k, v);
                // A pair seen before was checked then.
                if id as usize >= known {
                    let (_, suffix) = self.xattrs.split_key(id);
                    if suffix.len() > 255 || Pieces::new(v.0, v.1).len() > u16::MAX as usize {
                        return Err(Error::limit(format!(
                            "xattr {:?} is too long for EROFS (name suffix ≤ 255, value ≤ 65535 bytes)",
                            String::from_utf8_lossy(key.contiguous(&mut Vec::new()))
                        )));
                    }
                    // The ACL keys are EROFS prefixes of their own (indexes 2 and 3), whole.
                    let (prefix, suffix) = self.xattrs.split_key(id);
                    if matches!(prefix, 2 | 3) && suffix.len() == 0 {
                        has_acl = true;
                    }
                }
                ids.push(id);
            }
            let node = &mut self.nodes[ni];
            node.xattr_start = self.node_xattrs.len() as u32;
            node.xattr_len = ids.len() as u32;
            self.node_xattrs.extend_from_slice(&ids);
        }
        self.min_mtime = min_mtime;
        self.has_acl = has_acl;
        Ok(())
    }

    /// Pairs used more than once go to the shared table, in descending (key, value length,
    /// value) order (SPEC §5.7).
    fn share_xattrs(&mut self) {
        let x = &self.xattrs;
        let mut shared: Vec<u32> = (0..x.entries.len() as u32).filter(|&i| x.entries[i as usize].count > 1).collect();
        shared.sort_unstable_by(|&a, &b| {
            x.key(b)
                .cmp(&x.key(a))
                .then(x.value(b).len().cmp(&x.value(a).len()))
                .then_with(|| x.value(b).cmp(&x.value(a)))
        });
        let mut off = 0u64;
        for &id in &shared {
            let (_, suffix) = self.xattrs.split_key(id);
            let value_len = self.xattrs.value(id).len();
            self.xattrs.entries[id as usize].shared_off = off as u32;
            off += xattr_entry_size(suffix.len(), value_len);
        }
        self.shared = shared;
        self.shared_size = off;
    }

    /// Which of a node's xattrs are referenced from the shared table (the first 128 shared ones).
    fn is_shared_ref(&self, id: u32, n_shared_so_far: usize) -> bool {
        self.xattrs.entries[id as usize].shared_off != UNSET && n_shared_so_far < MAX_SHARED_PER_INODE
    }

    fn node_xattr_ids(&self, node: &Node) -> &[u32] {
        &self.node_xattrs[node.xattr_start as usize..(node.xattr_start + node.xattr_len) as usize]
    }

    /// The dirent bytes of directory node `node`: (full blocks, tail bytes), before padding moves.
    fn dir_size(&self, node: &Node) -> Result<(u32, u32)> {
        let (mut blocks, mut size) = (0u64, 0u64);
        for_each_child(self.tree, self.stubs, node.id, node.parent, |c| {
            let len = DIRENT_SIZE + c.name.len() as u64;
            if size + len > BLOCK_SIZE {
                blocks += 1;
                size = 0;
            }
            size += len;
            Ok(())
        })?;
        if size > BLOCK_SIZE / 2 {
            blocks += 1;
            size = 0;
        }
        let blocks = u32::try_from(blocks).map_err(|_| Error::limit("directory too large for EROFS"))?;
        Ok((blocks, size as u32))
    }

    /// Pass 3: inode sizes, tail placement, nids and data block addresses (SPEC §5.6).
    fn place(&mut self) -> Result<()> {
        let mut pos = INODES_START;
        let mut n_data_blocks = 0u64;
        for ni in 0..self.nodes.len() {
            let mut node = self.nodes[ni].clone();
            self.current = node.id;
            // Xattr body size.
            let (mut n_shared, mut inline) = (0usize, 0u64);
            for &id in self.node_xattr_ids(&node) {
                if self.is_shared_ref(id, n_shared) {
                    n_shared += 1;
                } else {
                    let (_, suffix) = self.xattrs.split_key(id);
                    inline += xattr_entry_size(suffix.len(), self.xattrs.value(id).len());
                }
            }
            let xattr_size = if node.xattr_len == 0 {
                0
            } else {
                round_up(XATTR_IBODY_HEADER_SIZE + 4 * n_shared as u64 + inline, 4)
            };
            if xattr_size > XATTR_IBODY_HEADER_SIZE + 4 * u16::MAX as u64 {
                return Err(Error::limit("an inode's xattrs are too large for EROFS"));
            }
            node.xattr_size = xattr_size as u32;

            let kind = self.kind(node.id);
            let (mtime, nlink, uid, gid, size) = self.inode_attrs(&node);
            let mut is_symlink = false;
            match kind {
                Some(InodeKind::Directory(_)) => {
                    let (b, t) = self.dir_size(&node)?;
                    node.n_blocks = b;
                    node.tail = t;
                }
                Some(InodeKind::Symlink(t)) => {
                    is_symlink = true;
                    node.tail = t.len() as u32;
                }
                Some(InodeKind::File(f)) if f.size > 0 => match &f.content {
                    FileContent::Inline(c) => {
                        if c.len() as u64 != f.size {
                            return Err(Error::invalid_argument(format!(
                                "tree file of size {} has {} bytes of inline content",
                                f.size,
                                c.len()
                            )));
                        }
                        node.n_blocks = (f.size / BLOCK_SIZE) as u32;
                        node.tail = (f.size % BLOCK_SIZE) as u32;
                        if node.tail as u64 > BLOCK_SIZE / 2 {
                            node.n_blocks += 1;
                            node.tail = 0;
                        }
                    }
                    FileContent::External { .. } => {
                        let chunks = chunk_count(f.size);
                        if chunks > MAX_CHUNKS {
                            return Err(Error::limit(format!("file of {} bytes is too large for EROFS", f.size)));
                        }
                        node.tail = (chunks * 4) as u32;
                    }
                },
                _ => {}
            }
            let dir_size = node.n_blocks as u64 * BLOCK_SIZE + node.tail as u64;
            let checked_size = if matches!(kind, Some(InodeKind::Directory(_))) { dir_size } else { size };
            node.compact = mtime == self.min_mtime
                && nlink <= u16::MAX as u32
                && uid <= u16::MAX as u32
                && gid <= u16::MAX as u32
                && checked_size <= u32::MAX as u64;
            let inode_size = if node.compact { COMPACT_INODE_SIZE } else { EXTENDED_INODE_SIZE };

            let aligned = round_up(pos, SLOT_SIZE);
            let mut pad = aligned - pos;
            pos = aligned;
            let non_tail = inode_size + xattr_size;
            let tail = node.tail as u64;
            let extra = if is_symlink {
                let total = non_tail + tail;
                if total >= BLOCK_SIZE {
                    node.n_blocks = 1;
                    node.tail = 0;
                }
                if pos / BLOCK_SIZE != (pos + total - 1) / BLOCK_SIZE {
                    round_up(pos, BLOCK_SIZE) - pos
                } else {
                    0
                }
            } else {
                let rem = BLOCK_SIZE - (pos + non_tail) % BLOCK_SIZE;
                if rem < tail {
                    let extra = round_up(rem, SLOT_SIZE);
                    let rem = BLOCK_SIZE - (pos + non_tail + extra) % BLOCK_SIZE;
                    if tail <= rem {
                        extra
                    } else {
                        node.n_blocks += 1;
                        node.tail = 0;
                        round_up(pos, BLOCK_SIZE) - pos
                    }
                } else {
                    0
                }
            };
            pad += extra;
            pos += extra;
            node.pad = pad as u32;
            node.nid = pos / SLOT_SIZE;
            self.nids[node.id as usize] = node.nid;
            pos += non_tail + node.tail as u64;
            n_data_blocks += node.n_blocks as u64;
            self.nodes[ni] = node;
        }
        self.inodes_end = round_up(pos, SLOT_SIZE);
        self.data_start = round_up(self.inodes_end + self.shared_size, BLOCK_SIZE);
        self.n_data_blocks = n_data_blocks;
        let mut next = self.data_start / BLOCK_SIZE;
        if next + n_data_blocks > u32::MAX as u64 {
            return Err(Error::limit("image too large for EROFS block addresses"));
        }
        for node in &mut self.nodes {
            if node.n_blocks > 0 {
                node.blkaddr = next as u32;
                next += node.n_blocks as u64;
            }
        }
        if self.nodes[0].nid > u16::MAX as u64 {
            return Err(Error::limit("root inode does not fit a 16-bit nid"));
        }
        if self.xattr_id_limit_exceeded() {
            return Err(Error::limit("shared xattr table too large for EROFS"));
        }
        Ok(())
    }

    fn xattr_id_limit_exceeded(&self) -> bool {
        (self.inodes_end % BLOCK_SIZE + self.shared_size) / 4 > u32::MAX as u64
    }

    /// (mtime, nlink, uid, gid, size) of a node as the image stores them.
    fn inode_attrs(&self, node: &Node) -> (Mtime, u32, u32, u32, u64) {
        let root = &self.tree.inodes[ROOT];
        match self.tree.inodes.get(node.id as usize) {
            None => (root.meta.mtime, 1, root.meta.uid, root.meta.gid, 0),
            Some(inode) => {
                let m = &inode.meta;
                let (nlink, size) = match &inode.kind {
                    InodeKind::Directory(_) => (node.dir_nlink, 0),
                    InodeKind::File(f) => (inode.nlink, f.size),
                    InodeKind::Symlink(t) => (inode.nlink, t.len() as u64),
                    _ => (inode.nlink, 0),
                };
                (m.mtime, nlink, m.uid, m.gid, size)
            }
        }
    }

    /// The mode bits and dirent file type of an id, after whiteout escaping.
    fn mode_and_type(&self, id: u32) -> (u16, u8) {
        match self.tree.inodes.get(id as usize) {
            None => ((libc::S_IFCHR | 0o644) as u16, FT_CHR),
            Some(inode) => {
                let perm = inode.meta.permissions & 0o7777;
                let (fmt, ft) = match &inode.kind {
                    InodeKind::Directory(_) => (libc::S_IFDIR, FT_DIR),
                    InodeKind::File(_) | InodeKind::CharDevice(0) => (libc::S_IFREG, FT_REG),
                    InodeKind::Symlink(_) => (libc::S_IFLNK, FT_SYMLINK),
                    InodeKind::CharDevice(_) | InodeKind::OverlayWhiteout => (libc::S_IFCHR, FT_CHR),
                    InodeKind::BlockDevice(_) => (libc::S_IFBLK, FT_BLK),
                    InodeKind::Fifo => (libc::S_IFIFO, FT_FIFO),
                    InodeKind::Socket => (libc::S_IFSOCK, FT_SOCK),
                };
                ((fmt | perm) as u16, ft)
            }
        }
    }

    fn write(&self, w: &mut Out<impl Write>) -> std::io::Result<()> {
        // Composefs header, then zeros up to the superblock.
        let mut hdr = [0u8; 32];
        put_u32(&mut hdr, 0, COMPOSEFS_MAGIC);
        put_u32(&mut hdr, 4, COMPOSEFS_HEADER_VERSION);
        put_u32(&mut hdr, 8, if self.has_acl { COMPOSEFS_FLAGS_HAS_ACL } else { 0 });
        put_u32(&mut hdr, 12, self.version);
        w.put(&hdr)?;
        w.zeros(SUPERBLOCK_OFFSET - 32)?;
        let mut sb = [0u8; SUPERBLOCK_SIZE as usize];
        put_u32(&mut sb, 0, EROFS_MAGIC);
        put_u32(&mut sb, 8, FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER);
        sb[12] = BLOCK_BITS;
        put_u16(&mut sb, 14, self.nodes[0].nid as u16);
        put_u64(&mut sb, 16, self.nodes.len() as u64);
        put_u64(&mut sb, 24, self.min_mtime.sec as u64);
        put_u32(&mut sb, 32, self.min_mtime.nsec);
        put_u32(&mut sb, 36, (self.data_start / BLOCK_SIZE + self.n_data_blocks) as u32);
        put_u32(&mut sb, 40, (INODES_START / BLOCK_SIZE) as u32);
        put_u32(&mut sb, 44, (self.inodes_end / BLOCK_SIZE) as u32);
        w.put(&sb)?;

        let mut dirents: Vec<Child<'a>> = Vec::new();
        for (bfs_index, node) in self.nodes.iter().enumerate() {
            w.zeros(node.pad as u64)?;
            self.write_inode(w, bfs_index as u32, node)?;
            self.write_xattr_body(w, node)?;
            // The inline tail.
            match self.kind(node.id) {
                Some(InodeKind::Directory(_)) => self.write_dirents(w, node, false, &mut dirents)?,
                Some(InodeKind::Symlink(t)) if node.n_blocks == 0 => w.put(t)?,
                Some(InodeKind::File(f)) if f.size > 0 => match &f.content {
                    FileContent::Inline(c) => w.put(&c[c.len() - node.tail as usize..])?,
                    FileContent::External { .. } => {
                        for _ in 0..node.tail / 4 {
                            w.put(&[0xff; 4])?;
                        }
                    }
                },
                _ => {}
            }
        }
        w.align(SLOT_SIZE)?;
        debug_assert_eq!(w.pos, self.inodes_end);
        for &id in &self.shared {
            self.write_xattr_entry(w, id)?;
        }
        w.align(BLOCK_SIZE)?;
        debug_assert_eq!(w.pos, self.data_start);
        for node in &self.nodes {
            if node.n_blocks == 0 {
                continue;
            }
            match self.kind(node.id) {
                Some(InodeKind::Directory(_)) => self.write_dirents(w, node, true, &mut dirents)?,
                Some(InodeKind::Symlink(t)) => w.put(t)?,
                Some(InodeKind::File(f)) => match &f.content {
                    FileContent::Inline(c) => {
                        w.put(&c[..(node.n_blocks as usize * BLOCK_SIZE as usize).min(c.len())])?
                    }
                    FileContent::External { .. } => {
                        for _ in 0..MAX_CHUNKS {
                            w.put(&[0xff; 4])?;
                        }
                    }
                },
                _ => {}
            }
            w.align(BLOCK_SIZE)?;
        }
        debug_assert_eq!(w.pos, self.data_start + self.n_data_blocks * BLOCK_SIZE);
        Ok(())
    }

    fn write_inode(&self, w: &mut Out<impl Write>, ino: u32, node: &Node) -> std::io::Result<()> {
        let kind = self.kind(node.id);
        let (mtime, nlink, uid, gid, _) = self.inode_attrs(node);
        let (mode, _) = self.mode_and_type(node.id);
        let mut layout = if node.tail > 0 { LAYOUT_FLAT_INLINE } else { LAYOUT_FLAT_PLAIN };
        let mut i_u = if node.n_blocks > 0 { node.blkaddr } else { 0 };
        let size = match kind {
            Some(InodeKind::Directory(_)) => node.n_blocks as u64 * BLOCK_SIZE + node.tail as u64,
            Some(InodeKind::Symlink(t)) => t.len() as u64,
            Some(InodeKind::File(f)) => {
                if f.size > 0 && matches!(f.content, FileContent::External { .. }) {
                    layout = LAYOUT_CHUNK_BASED;
                    i_u = (i_u & 0xffff_0000) | (chunk_bits(f.size) - BLOCK_BITS as u32);
                }
                f.size
            }
            Some(InodeKind::CharDevice(r)) | Some(InodeKind::BlockDevice(r)) => {
                i_u = *r as u32;
                0
            }
            _ => 0,
        };
        let icount = if node.xattr_size == 0 { 0 } else { (node.xattr_size as u64 - XATTR_IBODY_HEADER_SIZE) / 4 + 1 };
        let format = (layout << 1) | u16::from(!node.compact);
        if node.compact {
            let mut b = [0u8; COMPACT_INODE_SIZE as usize];
            put_u16(&mut b, 0, format);
            put_u16(&mut b, 2, icount as u16);
            put_u16(&mut b, 4, mode);
            put_u16(&mut b, 6, nlink as u16);
            put_u32(&mut b, 8, size as u32);
            put_u32(&mut b, 16, i_u);
            put_u32(&mut b, 20, ino);
            put_u16(&mut b, 24, uid as u16);
            put_u16(&mut b, 26, gid as u16);
            w.put(&b)
        } else {
            let mut b = [0u8; EXTENDED_INODE_SIZE as usize];
            put_u16(&mut b, 0, format);
            put_u16(&mut b, 2, icount as u16);
            put_u16(&mut b, 4, mode);
            put_u64(&mut b, 8, size);
            put_u32(&mut b, 16, i_u);
            put_u32(&mut b, 20, ino);
            put_u32(&mut b, 24, uid);
            put_u32(&mut b, 28, gid);
            put_u64(&mut b, 32, mtime.sec as u64);
            put_u32(&mut b, 40, mtime.nsec);
            put_u32(&mut b, 44, nlink);
            w.put(&b)
        }
    }

    fn write_xattr_body(&self, w: &mut Out<impl Write>, node: &Node) -> std::io::Result<()> {
        if node.xattr_size == 0 {
            return Ok(());
        }
        let ids = self.node_xattr_ids(node);
        let mut filter = 0u32;
        let mut n_shared = 0usize;
        let mut buf = Vec::new();
        for &id in ids {
            let (index, suffix) = self.xattrs.split_key(id);
            filter |= xattr_filter_bit(index, suffix.contiguous(&mut buf));
            if self.is_shared_ref(id, n_shared) {
                n_shared += 1;
            }
        }
        let mut hdr = [0u8; XATTR_IBODY_HEADER_SIZE as usize];
        put_u32(&mut hdr, 0, !filter);
        hdr[4] = n_shared as u8;
        w.put(&hdr)?;
        let base = self.inodes_end % BLOCK_SIZE;
        let mut k = 0usize;
        for &id in ids {
            if self.is_shared_ref(id, k) {
                k += 1;
                let off = self.xattrs.entries[id as usize].shared_off as u64;
                w.put(&(((base + off) / 4) as u32).to_le_bytes())?;
            }
        }
        let mut k = 0usize;
        for &id in ids {
            if self.is_shared_ref(id, k) {
                k += 1;
            } else {
                self.write_xattr_entry(w, id)?;
            }
        }
        Ok(())
    }

    fn write_xattr_entry(&self, w: &mut Out<impl Write>, id: u32) -> std::io::Result<()> {
        let (index, suffix) = self.xattrs.split_key(id);
        let value = self.xattrs.value(id);
        let mut hdr = [0u8; 4];
        hdr[0] = suffix.len() as u8;
        hdr[1] = index;
        put_u16(&mut hdr, 2, value.len() as u16);
        w.put(&hdr)?;
        suffix.write_to(w)?;
        value.write_to(w)?;
        w.align(4)
    }

    /// Writes a directory's full dirent blocks (`blocks`) or its inline tail (`!blocks`).
    fn write_dirents(
        &self,
        w: &mut Out<impl Write>,
        node: &Node,
        blocks: bool,
        chunk: &mut Vec<Child<'a>>,
    ) -> std::io::Result<()> {
        chunk.clear();
        let mut size = 0u64;
        let mut written = 0u32;
        let res = for_each_child(self.tree, self.stubs, node.id, node.parent, |c| {
            let len = DIRENT_SIZE + c.name.len() as u64;
            if size + len > BLOCK_SIZE {
                if blocks {
                    self.write_dirent_chunk(w, chunk).map_err(|e| Error::io("writing", e))?;
                    w.align(BLOCK_SIZE).map_err(|e| Error::io("writing", e))?;
                }
                written += 1;
                chunk.clear();
                size = 0;
            }
            size += len;
            chunk.push(c);
            Ok(())
        });
        res.map_err(|e| std::io::Error::other(e.to_string()))?;
        if written < node.n_blocks {
            if blocks {
                self.write_dirent_chunk(w, chunk)?;
                w.align(BLOCK_SIZE)?;
            }
        } else if !blocks && !chunk.is_empty() {
            self.write_dirent_chunk(w, chunk)?;
        }
        Ok(())
    }

    fn write_dirent_chunk(&self, w: &mut Out<impl Write>, chunk: &[Child<'a>]) -> std::io::Result<()> {
        let mut nameoff = (chunk.len() as u64 * DIRENT_SIZE) as u16;
        for c in chunk {
            let (_, ft) = self.mode_and_type(c.id);
            let mut d = [0u8; DIRENT_SIZE as usize];
            put_u64(&mut d, 0, self.nids[c.id as usize]);
            put_u16(&mut d, 8, nameoff);
            d[10] = ft;
            w.put(&d)?;
            nameoff = nameoff.wrapping_add(c.name.len() as u16);
        }
        for c in chunk {
            w.put(c.name)?;
        }
        Ok(())
    }
}

/// The output with a running position, for alignment.
struct Out<W: Write> {
    w: W,
    pos: u64,
}

static ZEROS: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.pos += b.len() as u64;
        self.w.write_all(b)
    }

    fn zeros(&mut self, mut n: u64) -> std::io::Result<()> {
        while n > 0 {
            let k = n.min(BLOCK_SIZE);
            self.put(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn align(&mut self, to: u64) -> std::io::Result<()> {
        self.zeros(round_up(self.pos, to) - self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::read_image;
    use crate::image::tree::{DirEntry, Directory, Inode, Metadata};

    /// Pieces compare, match prefixes and split exactly as their concatenations do, whatever
    /// the split.
    #[test]
    fn pieces_behave_as_their_concatenation() {
        let strings: [&[u8]; 9] = [
            b"",
            b"/",
            b"/ab",
            b"trusted.overlay.overlay.",
            b"trusted.overlay.overlay.opaque",
            b"trusted.overlay.opaque",
            b"trusted.overlay.overlay.whiteouts",
            b"user.x",
            &[0, 36, 0, 1, 7],
        ];
        // Every split of each string whose first part is one of the static first pieces.
        let mut all: Vec<(Vec<u8>, Pieces<'static>)> = Vec::new();
        for s in strings {
            for (i, first) in FIRST_PIECES.iter().enumerate() {
                if let Some(rest) = s.strip_prefix(*first) {
                    all.push((s.to_vec(), Pieces::new(i as u8, rest)));
                }
            }
        }
        assert!(all.len() > strings.len(), "some strings have two splits");
        for (a, pa) in &all {
            assert_eq!(pa.len(), a.len());
            assert_eq!(pa.contiguous(&mut Vec::new()), &a[..]);
            for (b, pb) in &all {
                assert_eq!(pa.cmp(pb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(pa == pb, a == b);
                assert_eq!(pa.starts_with(b), a.starts_with(b));
                if a.starts_with(b) {
                    assert_eq!(pa.skip(b.len()).contiguous(&mut Vec::new()), &a[b.len()..]);
                }
            }
            let (index, suffix) = split_key(*pa);
            let (want_index, want_suffix) = split_xattr_key(a);
            assert_eq!((index, suffix.contiguous(&mut Vec::new())), (want_index, want_suffix));
        }
    }

    fn layer_tree() -> Tree {
        let mut t = Tree::new(Metadata { permissions: 0o755, ..Default::default() });
        let d = t.push(Inode {
            meta: Metadata { permissions: 0o755, ..Default::default() },
            kind: InodeKind::Directory(Directory { overlay_opaque: true, ..Default::default() }),
            nlink: 2,
        });
        t.link(ROOT, b"opq".to_vec(), DirEntry { inode: d, hardlink: false });
        let w = t.push(Inode { meta: Metadata::default(), kind: InodeKind::OverlayWhiteout, nlink: 1 });
        t.link(d, b"gone".to_vec(), DirEntry { inode: w, hardlink: false });
        let mut meta = Metadata::default();
        meta.xattrs.insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
        let f = t.push(Inode {
            meta,
            kind: InodeKind::File(crate::image::File { size: 0, content: FileContent::Inline(Vec::new()) }),
            nlink: 1,
        });
        t.link(ROOT, b"f".to_vec(), DirEntry { inode: f, hardlink: false });
        t
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn layer_whiteouts_and_opaque_dirs_are_written_unescaped() {
        let t = layer_tree();
        let mut img = Vec::new();
        write_image(&t, &WriteOptions::default(), &mut img).unwrap();
        // No mkcomposefs whiteout escaping, version stays 0.
        assert!(!contains(&img, b"overlay.whiteout"));
        assert_eq!(u32::from_le_bytes(img[12..16].try_into().unwrap()), 0);
        // The input's own overlay xattr stays escaped.
        assert!(contains(&img, b"overlay.overlay.opaque"));
        let back = read_image(&img).unwrap();
        let d = back.resolve(b"/opq").unwrap();
        assert!(back.inode(d).as_dir().unwrap().overlay_opaque);
        assert_eq!(back.inode(back.resolve(b"/opq/gone").unwrap()).kind, InodeKind::OverlayWhiteout);
        let f = back.inode(back.resolve(b"/f").unwrap());
        assert_eq!(f.meta.xattrs.get(&b"trusted.overlay.opaque"[..]).map(|v| &v[..]), Some(&b"y"[..]));
        assert!(!back.root().as_dir().unwrap().overlay_opaque);
        // 4 inodes + 256 stubs.
        assert_eq!(u64::from_le_bytes(img[1024 + 16..1024 + 24].try_into().unwrap()), 4 + 256);
    }

    #[test]
    fn stubs_can_be_left_out_and_versions_are_checked() {
        let t = layer_tree();
        let mut img = Vec::new();
        let o = WriteOptions { root_whiteout_stubs: false, ..Default::default() };
        write_image(&t, &o, &mut img).unwrap();
        assert_eq!(u64::from_le_bytes(img[1024 + 16..1024 + 24].try_into().unwrap()), 4);
        let o = WriteOptions { min_version: 2, max_version: 2, ..Default::default() };
        assert_eq!(write_image(&t, &o, &mut Vec::new()).unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
        // min 1 forces version 1; max < min is raised.
        let o = WriteOptions { min_version: 1, max_version: 0, ..Default::default() };
        let mut img = Vec::new();
        write_image(&t, &o, &mut img).unwrap();
        assert_eq!(u32::from_le_bytes(img[12..16].try_into().unwrap()), 1);
    }

    /// The header's ACL flag (mkcomposefs's COMPOSEFS_FLAGS_HAS_ACL) is set exactly when an
    /// inode has a POSIX ACL key, whole: not for a longer key or another prefix.
    #[test]
    fn the_acl_flag_follows_the_acl_keys() {
        for (key, want) in [
            (&b"system.posix_acl_access"[..], true),
            (b"system.posix_acl_default", true),
            (b"system.posix_acl_accessx", false),
            (b"system.posix_acl", false),
            (b"user.posix_acl_access", false),
            (b"security.selinux", false),
        ] {
            let mut t = layer_tree();
            let f = t.resolve(b"/f").unwrap();
            t.inodes[f].meta.xattrs.insert(key.to_vec(), b"\x02\0\0\0".to_vec());
            let mut img = Vec::new();
            write_image(&t, &WriteOptions::default(), &mut img).unwrap();
            let flags = u32::from_le_bytes(img[8..12].try_into().unwrap());
            assert_eq!(flags & COMPOSEFS_FLAGS_HAS_ACL != 0, want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn malformed_trees_are_rejected() {
        let mut t = layer_tree();
        let f = t.resolve(b"/f").unwrap();
        t.link(ROOT, b"again".to_vec(), DirEntry { inode: f, hardlink: false });
        assert!(write_image(&t, &WriteOptions::default(), &mut Vec::new()).is_err());
        let mut t = layer_tree();
        t.link(ROOT, b"dirlink".to_vec(), DirEntry { inode: t.resolve(b"/opq").unwrap(), hardlink: true });
        assert!(write_image(&t, &WriteOptions::default(), &mut Vec::new()).is_err());
        let mut t = layer_tree();
        t.link(ROOT, b"dangling".to_vec(), DirEntry { inode: 999, hardlink: false });
        assert!(write_image(&t, &WriteOptions::default(), &mut Vec::new()).is_err());
        let mut t = layer_tree();
        t.link(ROOT, b"dangling".to_vec(), DirEntry { inode: 5, hardlink: false });
        assert!(write_image(&t, &WriteOptions::default(), &mut Vec::new()).is_err());
        let mut t = layer_tree();
        t.link(ROOT, b"a/b".to_vec(), DirEntry { inode: t.resolve(b"/f").unwrap(), hardlink: true });
        assert!(write_image(&t, &WriteOptions::default(), &mut Vec::new()).is_err());
    }
}
