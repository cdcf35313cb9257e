//! The in-memory model of a composefs image: an arena of inodes and directories of named entries.
//!
//! A hardlink is a second directory entry naming the same inode. Exactly one entry per inode is the
//! *primary* one (`DirEntry::hardlink == false`): the image writer places the inode where its primary
//! entry is in BFS order, as mkcomposefs places a dump's link target (SPEC §5.4), and every other
//! entry is a link to it.
//!
//! Names are raw bytes and kept sorted bytewise, which is `strcmp` order for names without NUL
//! (the order mkcomposefs uses). Xattr keys are sorted the same way.

use std::collections::BTreeMap;

/// Index of an inode in [`Tree::inodes`].
pub type InodeId = usize;

/// Seconds and nanoseconds since the epoch; seconds may be negative (dates before 1970).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

/// Attributes every inode has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits, setuid/setgid/sticky (`mode & 0o7777`); the file type is in [`InodeKind`].
    pub permissions: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    /// Extended attributes, sorted by key. Keys and values are arbitrary bytes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Where a regular file's content lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// Stored in the image itself (composefs dumps allow up to 5000 bytes).
    Inline(Vec<u8>),
    /// Stored outside the image: an overlay redirect to `payload` (relative to the data dir,
    /// e.g. `ab/cdef…`), and optionally the content's fs-verity digest for the metacopy xattr.
    /// The payload and the digest are independent (containers/storage names objects by content
    /// sha256 while the digest is fs-verity: SPEC §5.10).
    External { payload: Option<Vec<u8>>, digest: Option<[u8; 32]> },
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Size in bytes (for inline content, equal to its length).
    pub size: u64,
    pub content: FileContent,
}

/// A named entry in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry {
    pub inode: InodeId,
    /// True for every name of an inode but its primary one.
    pub hardlink: bool,
}

/// A directory: its entries, sorted by name (without `.` and `..`, which the writer adds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    pub entries: BTreeMap<Vec<u8>, DirEntry>,
    /// A real (unescaped) overlay opaque directory, as an OCI `.wh..wh..opq` asks for: the image
    /// writer emits `trusted.overlay.opaque=y` as is. Never set from input xattrs (SPEC §10.4).
    pub overlay_opaque: bool,
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeKind {
    Directory(Directory),
    File(File),
    Symlink(Vec<u8>),
    /// Linux `rdev` encoding (`makedev`). A char device with rdev 0 is an overlay whiteout as
    /// mkcomposefs sees it: the writer escapes it (SPEC §5.3).
    CharDevice(u64),
    BlockDevice(u64),
    Fifo,
    Socket,
    /// A real (unescaped) overlay whiteout, as an OCI `.wh.NAME` asks for: written as a char
    /// device 0:0 with no escaping, so it hides NAME in lower layers of a single-level stack
    /// (SPEC §10.4). Never produced from a dump.
    OverlayWhiteout,
}

impl InodeKind {
    /// The `S_IFMT` bits of this kind.
    pub fn file_type_bits(&self) -> u32 {
        match self {
            InodeKind::Directory(_) => libc::S_IFDIR,
            InodeKind::File(_) => libc::S_IFREG,
            InodeKind::Symlink(_) => libc::S_IFLNK,
            InodeKind::CharDevice(_) | InodeKind::OverlayWhiteout => libc::S_IFCHR,
            InodeKind::BlockDevice(_) => libc::S_IFBLK,
            InodeKind::Fifo => libc::S_IFIFO,
            InodeKind::Socket => libc::S_IFSOCK,
        }
    }
}

/// One inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub meta: Metadata,
    pub kind: InodeKind,
    /// Link count for non-directories, as the producer computed it (a dump's NLINK is used as
    /// given, SPEC §4.1). Directories' counts are always recomputed by the writer.
    pub nlink: u32,
}

impl Inode {
    /// Full `st_mode`: file type bits and permissions.
    pub fn mode(&self) -> u32 {
        self.kind.file_type_bits() | (self.meta.permissions & 0o7777)
    }

    pub fn as_dir(&self) -> Option<&Directory> {
        match &self.kind {
            InodeKind::Directory(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_dir_mut(&mut self) -> Option<&mut Directory> {
        match &mut self.kind {
            InodeKind::Directory(d) => Some(d),
            _ => None,
        }
    }
}

/// A whole image tree. Inode 0 is the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub inodes: Vec<Inode>,
}

/// The root's inode id.
pub const ROOT: InodeId = 0;

impl Tree {
    /// A tree holding only a root directory with `meta`.
    pub fn new(root_meta: Metadata) -> Tree {
        Tree { inodes: vec![Inode { meta: root_meta, kind: InodeKind::Directory(Directory::default()), nlink: 2 }] }
    }

    pub fn root(&self) -> &Inode {
        &self.inodes[ROOT]
    }

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id]
    }

    pub fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        &mut self.inodes[id]
    }

    /// Adds an inode that no directory names yet; link it with [`Tree::link`].
    pub fn push(&mut self, inode: Inode) -> InodeId {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// Names `inode` as `name` in directory `dir`, replacing any previous entry of that name.
    /// Returns the replaced entry. Panics if `dir` is not a directory (a caller bug).
    pub fn link(&mut self, dir: InodeId, name: Vec<u8>, entry: DirEntry) -> Option<DirEntry> {
        self.inodes[dir].as_dir_mut().expect("Tree::link: parent is not a directory").entries.insert(name, entry)
    }

    /// Looks up `name` in directory `dir`.
    pub fn lookup(&self, dir: InodeId, name: &[u8]) -> Option<DirEntry> {
        self.inodes[dir].as_dir()?.entries.get(name).copied()
    }

    /// Resolves an absolute or relative path of `/`-separated components from the root (no `.`/`..`
    /// handling: tree paths are already clean).
    pub fn resolve(&self, path: &[u8]) -> Option<InodeId> {
        let mut cur = ROOT;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = self.lookup(cur, comp)?.inode;
        }
        Some(cur)
    }

    /// Whether any inode is a char device with rdev 0 (an mkcomposefs-style whiteout, which
    /// raises the default image version to 1: SPEC §5.2). Unreachable inodes are ignored.
    pub fn has_escaped_whiteouts(&self) -> bool {
        self.walk().any(|(_, e)| !e.hardlink && matches!(self.inodes[e.inode].kind, InodeKind::CharDevice(0)))
    }

    /// Every directory entry reachable from the root, depth first, in name order, with its full path
    /// (`/a/b`). The root itself is not included.
    pub fn walk(&self) -> impl Iterator<Item = (Vec<u8>, DirEntry)> + '_ {
        // Explicit stack of (path, entry) in reverse name order, so pops come in name order and a
        // directory's subtree comes right after it.
        let mut stack: Vec<(Vec<u8>, DirEntry)> = Vec::new();
        self.push_children(&mut stack, &[], ROOT);
        std::iter::from_fn(move || {
            let (path, entry) = stack.pop()?;
            if !entry.hardlink {
                self.push_children(&mut stack, &path, entry.inode);
            }
            Some((path, entry))
        })
    }

    /// A copy with inodes renumbered in [`Tree::walk`] order (root 0, then each inode where it is
    /// first named), dropping unreachable inodes: two trees that hold the same filesystem compare
    /// equal after this, however their producers numbered the inodes.
    pub fn normalized(&self) -> Tree {
        let mut map: Vec<Option<InodeId>> = vec![None; self.inodes.len()];
        map[ROOT] = Some(ROOT);
        let mut order = vec![ROOT];
        for (_, e) in self.walk() {
            if let Some(slot) = map.get_mut(e.inode) {
                if slot.is_none() {
                    *slot = Some(order.len());
                    order.push(e.inode);
                }
            }
        }
        let inodes = order
            .iter()
            .map(|&old| {
                let mut inode = self.inodes[old].clone();
                if let Some(d) = inode.as_dir_mut() {
                    for e in d.entries.values_mut() {
                        e.inode = map.get(e.inode).copied().flatten().unwrap_or(e.inode);
                    }
                }
                inode
            })
            .collect();
        Tree { inodes }
    }

    fn push_children(&self, stack: &mut Vec<(Vec<u8>, DirEntry)>, prefix: &[u8], dir: InodeId) {
        if let Some(d) = self.inodes[dir].as_dir() {
            for (name, e) in d.entries.iter().rev() {
                let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
                p.extend_from_slice(prefix);
                p.push(b'/');
                p.extend_from_slice(name);
                stack.push((p, *e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> Inode {
        Inode {
            meta: Metadata { permissions: 0o644, ..Default::default() },
            kind: InodeKind::File(File { size, content: FileContent::External { payload: None, digest: None } }),
            nlink: 1,
        }
    }

    #[test]
    fn walk_is_depth_first_in_name_order_and_resolve_finds_paths() {
        let mut t = Tree::new(Metadata { permissions: 0o755, ..Default::default() });
        let d = t.push(Inode { meta: Metadata::default(), kind: InodeKind::Directory(Directory::default()), nlink: 2 });
        t.link(ROOT, b"b".to_vec(), DirEntry { inode: d, hardlink: false });
        let f = t.push(file(3));
        t.link(d, b"x".to_vec(), DirEntry { inode: f, hardlink: false });
        t.link(ROOT, b"a".to_vec(), DirEntry { inode: f, hardlink: true });
        t.link(ROOT, b"c".to_vec(), DirEntry { inode: t.inodes.len(), hardlink: false });
        t.push(Inode { meta: Metadata::default(), kind: InodeKind::CharDevice(0), nlink: 1 });
        let paths: Vec<Vec<u8>> = t.walk().map(|(p, _)| p).collect();
        assert_eq!(paths, vec![b"/a".to_vec(), b"/b".to_vec(), b"/b/x".to_vec(), b"/c".to_vec()]);
        assert_eq!(t.resolve(b"/b/x"), Some(f));
        assert_eq!(t.resolve(b"/nope"), None);
        assert!(t.has_escaped_whiteouts());
        assert_eq!(t.inode(f).mode(), 0o100644);
    }
}
