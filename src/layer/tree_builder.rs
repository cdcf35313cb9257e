//! Builds the image tree from tar entries the way containers/storage's dump describes a layer
//! (SPEC §4.3): paths cleaned as `filepath.Clean("/" + name)`, missing parents synthesised as
//! 0755 0:0 mtime 0, regular files as metacopy redirects to their object path. Differences, on
//! purpose: a duplicate path replaces the earlier entry (tar extraction semantics; c/storage
//! fails), a directory listed after its children updates them in place (§10.13), and OCI
//! whiteouts become real overlay whiteouts / opaque markers (§10.1, §10.4).

use std::collections::HashMap;

use crate::image::{DirEntry, Directory, File, FileContent, Inode, InodeId, InodeKind, Metadata, Mtime, Tree, ROOT};
use crate::source::tar::{EntryType, Header};
use crate::{Error, Result};

/// Names that mark OCI whiteouts (`.wh.NAME`) and the opaque marker (`.wh..wh..opq`).
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_NAME: &[u8] = b".wh..wh..opq";
/// Other AUFS metadata (`.wh..wh.plnk`, ...): meaningless in an overlay layer, dropped.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Applies the OCI whiteout entry `name` (it starts with [`WHITEOUT_PREFIX`]) of directory `dir`
/// as overlay sees it: `.wh..wh..opq` makes `dir` opaque, other AUFS metadata is dropped, and
/// `.wh.NAME` adds a real overlay whiteout NAME (with `meta`'s owner and mtime) unless `dir` has
/// NAME itself (a whiteout hides lower layers only, never the layer's own entry).
pub(crate) fn apply_oci_whiteout(tree: &mut Tree, dir: InodeId, name: &[u8], meta: &Metadata) -> Result<()> {
    if name == OPAQUE_NAME {
        if let Some(d) = tree.inode_mut(dir).as_dir_mut() {
            d.overlay_opaque = true;
        }
    } else if !name.starts_with(AUFS_META_PREFIX) {
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() {
            return Err(Error::format("whiteout without a name"));
        }
        if tree.lookup(dir, target).is_none() {
            let meta = Metadata { permissions: 0, xattrs: Default::default(), ..meta.clone() };
            let id = tree.push(Inode { meta, kind: InodeKind::OverlayWhiteout, nlink: 1 });
            tree.link(dir, target.to_vec(), DirEntry { inode: id, hardlink: false });
        }
    }
    Ok(())
}
/// Longest name of one path component (EROFS and Linux `NAME_MAX`).
pub const MAX_COMPONENT: usize = 255;

/// `filepath.Clean("/" + name)` as components: `.` and empty components dropped, `..` pops
/// (never above the root). The result is never used as a filesystem path.
pub fn clean_components(name: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `ab/cdef…` for a sha256 (SPEC §2.2).
pub fn object_path(digest: &[u8; 32]) -> String {
    let h = crate::source::hex(digest);
    format!("{}/{}", &h[..2], &h[2..])
}

/// Linux `makedev`.
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (major as u64, minor as u64);
    (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & !0xff) << 12) | ((ma & !0xfff) << 32)
}

/// Incrementally builds a [`Tree`] from tar headers.
pub struct TreeBuilder {
    tree: Tree,
    oci_whiteouts: bool,
    /// Every name of inodes that have (had) more than one, to re-elect a primary entry when the
    /// primary is replaced.
    names: HashMap<InodeId, Vec<(InodeId, Vec<u8>)>>,
}

/// What the caller must do with a regular file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Nothing: not a regular file with content to store (or a whiteout).
    Nothing,
    /// A regular file inode: set its content with [`TreeBuilder::set_file_content`].
    File(InodeId),
}

fn dir_inode(meta: Metadata) -> Inode {
    Inode { meta, kind: InodeKind::Directory(Directory::default()), nlink: 2 }
}

fn synthesized_meta() -> Metadata {
    Metadata { permissions: 0o755, uid: 0, gid: 0, mtime: Mtime::default(), xattrs: Default::default() }
}

impl TreeBuilder {
    /// `oci_whiteouts`: turn `.wh.*` entries into overlay whiteouts (true, the default) or keep
    /// them as plain files exactly as containers/storage does (false, for compatibility tests).
    pub fn new(oci_whiteouts: bool) -> TreeBuilder {
        TreeBuilder { tree: Tree::new(synthesized_meta()), oci_whiteouts, names: HashMap::new() }
    }

    pub fn finish(self) -> Tree {
        self.tree
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Adds one tar entry. Regular files are created with an external content placeholder that
    /// the caller fills in once the content digest is known.
    pub fn add(&mut self, h: &Header) -> Result<Added> {
        let ctx = || format!("tar entry {} ({:?})", h.index, String::from_utf8_lossy(&h.name));
        if h.entry_type == EntryType::GlobalHeader {
            return Ok(Added::Nothing);
        }
        let comps = clean_components(&h.name);
        for c in &comps {
            if c.len() > MAX_COMPONENT {
                return Err(Error::limit(format!("{}: path component longer than {MAX_COMPONENT} bytes", ctx())));
            }
        }
        let meta = Metadata {
            permissions: (h.mode as u32) & 0o7777,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            xattrs: h.xattrs.clone(),
        };
        let Some((&name, parents)) = comps.split_last() else {
            // The root itself ("./", "/", ".." ...).
            if h.entry_type != EntryType::Directory {
                return Err(Error::format(format!("{}: a non-directory entry names the root", ctx())));
            }
            self.tree.inode_mut(ROOT).meta = meta;
            return Ok(Added::Nothing);
        };
        let parent = self.ensure_dirs(parents).map_err(|e| e.context(ctx()))?;

        if self.oci_whiteouts && name.starts_with(WHITEOUT_PREFIX) {
            apply_oci_whiteout(&mut self.tree, parent, name, &meta).map_err(|e| e.context(ctx()))?;
            return Ok(Added::Nothing);
        }

        let kind = match h.entry_type {
            EntryType::Directory => {
                if let Some(e) = self.tree.lookup(parent, name) {
                    if !e.hardlink && self.tree.inode(e.inode).as_dir().is_some() {
                        // Later wins for metadata; children stay.
                        self.tree.inode_mut(e.inode).meta = meta;
                        return Ok(Added::Nothing);
                    }
                }
                let id = self.tree.push(dir_inode(meta));
                self.replace(parent, name, DirEntry { inode: id, hardlink: false });
                return Ok(Added::Nothing);
            }
            EntryType::Hardlink => {
                let target = clean_components(&h.link_name);
                let id = self.resolve(&target).ok_or_else(|| {
                    Error::format(format!(
                        "{}: hardlink target {:?} does not exist (yet)",
                        ctx(),
                        String::from_utf8_lossy(&h.link_name)
                    ))
                })?;
                match self.tree.inode(id).kind {
                    InodeKind::Directory(_) => {
                        return Err(Error::format(format!("{}: hardlink to a directory", ctx())));
                    }
                    InodeKind::OverlayWhiteout => {
                        return Err(Error::format(format!("{}: hardlink to a whiteout", ctx())));
                    }
                    _ => {}
                }
                if let Some(old) = self.tree.lookup(parent, name) {
                    if old.inode == id {
                        return Ok(Added::Nothing); // Linking a name to itself: no change.
                    }
                }
                self.tree.inode_mut(id).nlink += 1;
                let names = self.names.entry(id).or_default();
                if names.is_empty() {
                    // First extra name: the target path is then the only (primary) name.
                    if let Some((last, dirs)) = target.split_last() {
                        if let Some(tp) = self.resolve(dirs) {
                            self.names.entry(id).or_default().push((tp, last.to_vec()));
                        }
                    }
                }
                let names = self.names.entry(id).or_default();
                names.push((parent, name.to_vec()));
                self.replace(parent, name, DirEntry { inode: id, hardlink: true });
                return Ok(Added::Nothing);
            }
            EntryType::Regular => {
                InodeKind::File(File { size: h.size, content: FileContent::External { payload: None, digest: None } })
            }
            EntryType::Symlink => InodeKind::Symlink(h.link_name.clone()),
            EntryType::Char => InodeKind::CharDevice(makedev(h.dev_major, h.dev_minor)),
            EntryType::Block => InodeKind::BlockDevice(makedev(h.dev_major, h.dev_minor)),
            EntryType::Fifo => InodeKind::Fifo,
            EntryType::GlobalHeader => return Ok(Added::Nothing),
        };
        let is_file = matches!(kind, InodeKind::File(_));
        let id = self.tree.push(Inode { meta, kind, nlink: 1 });
        self.replace(parent, name, DirEntry { inode: id, hardlink: false });
        Ok(if is_file { Added::File(id) } else { Added::Nothing })
    }

    /// Sets a regular file's object path and fs-verity digest.
    pub fn set_file_content(&mut self, id: InodeId, payload: String, verity: Option<[u8; 32]>) {
        if let InodeKind::File(f) = &mut self.tree.inode_mut(id).kind {
            f.content = FileContent::External { payload: Some(payload.into_bytes()), digest: verity };
        }
    }

    fn resolve(&self, comps: &[&[u8]]) -> Option<InodeId> {
        let mut cur = ROOT;
        for c in comps {
            let e = self.tree.lookup(cur, c)?;
            cur = e.inode;
        }
        Some(cur)
    }

    /// The directory at `comps`, creating missing ones as containers/storage does.
    fn ensure_dirs(&mut self, comps: &[&[u8]]) -> Result<InodeId> {
        let mut cur = ROOT;
        for (i, c) in comps.iter().enumerate() {
            if self.oci_whiteouts && c.starts_with(WHITEOUT_PREFIX) {
                return Err(Error::format(format!(
                    "whiteout name {:?} used as a parent directory",
                    String::from_utf8_lossy(c)
                )));
            }
            cur = match self.tree.lookup(cur, c) {
                Some(e) if self.tree.inode(e.inode).as_dir().is_some() && !e.hardlink => e.inode,
                Some(_) => {
                    let path: Vec<&[u8]> = comps[..=i].to_vec();
                    return Err(Error::format(format!(
                        "parent /{} is not a directory",
                        String::from_utf8_lossy(&path.join(&b'/'))
                    )));
                }
                None => {
                    let id = self.tree.push(dir_inode(synthesized_meta()));
                    self.tree.link(cur, c.to_vec(), DirEntry { inode: id, hardlink: false });
                    id
                }
            };
        }
        Ok(cur)
    }

    /// Links `entry` as `name` in `parent`, dropping what was there (later entries win).
    fn replace(&mut self, parent: InodeId, name: &[u8], entry: DirEntry) {
        if let Some(old) = self.tree.link(parent, name.to_vec(), entry) {
            self.forget(old, parent, name);
        }
    }

    /// Accounts for a directory entry that was removed from the tree.
    fn forget(&mut self, old: DirEntry, parent: InodeId, name: &[u8]) {
        let id = old.inode;
        if let Some(d) = self.tree.inode(id).as_dir() {
            if !old.hardlink {
                let children: Vec<(Vec<u8>, DirEntry)> = d.entries.iter().map(|(n, e)| (n.clone(), *e)).collect();
                for (n, e) in children {
                    self.forget(e, id, &n);
                }
            }
            return;
        }
        let inode = self.tree.inode_mut(id);
        inode.nlink = inode.nlink.saturating_sub(1);
        let Some(names) = self.names.get_mut(&id) else {
            return;
        };
        names.retain(|(p, n)| !(*p == parent && n == name));
        if old.hardlink {
            return;
        }
        // The primary name went away: promote a remaining name that still links this inode.
        let candidates = names.clone();
        for (p, n) in candidates {
            if let Some(e) = self.tree.lookup(p, &n) {
                if e.inode == id {
                    self.tree.link(p, n, DirEntry { inode: id, hardlink: false });
                    return;
                }
            }
        }
    }
}
