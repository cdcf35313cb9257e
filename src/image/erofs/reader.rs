//! The EROFS reader: a composefs image back into a [`Tree`], undoing the mkcomposefs rewrites
//! (escaped overlay xattrs, metacopy/redirect, escaped whiteouts, root stubs).
//!
//! Every offset and length is checked against the image: a corrupt image gives a format error,
//! never a panic, and allocations are bounded by the image size. Hardlinks come back as in
//! mkcomposefs's own reader: the first name of an inode in depth-first name order is its
//! primary entry.

use std::collections::{BTreeMap, HashMap};

use super::format::*;
use crate::image::tree::{
    DirEntry, Directory, File, FileContent, Inode, InodeId, InodeKind, Metadata, Mtime, Tree, ROOT,
};
use crate::{Error, Result};

/// Reads a whole image.
pub fn read_image(data: &[u8]) -> Result<Tree> {
    Reader::new(data)?.read_tree()
}

/// The names in an image's root directory, without `.`, `..` and the root whiteout stubs: what
/// the image adds at the top of an overlay stack. Reads the root directory only.
pub fn read_root_names(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let r = Reader::new(data)?;
    let root_raw = r.inode(r.root_nid)?;
    if root_raw.mode as u32 & libc::S_IFMT != libc::S_IFDIR {
        return Err(corrupt("root inode is not a directory"));
    }
    let root = r.node(&root_raw, None, b"")?.ok_or_else(|| corrupt("root"))?;
    let mut names = Vec::new();
    for (name, nid) in r.dirents(&root_raw)? {
        // Only a char device can be a stub: look at the inodes of the names a stub could have.
        let stub_like =
            super::writer::is_root_stub_name(&name) && r.node(&r.inode(nid)?, Some(&root.meta), &name)?.is_none();
        if !stub_like {
            names.push(name);
        }
    }
    Ok(names)
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::format(format!("corrupt composefs image: {what}"))
}

struct Reader<'a> {
    data: &'a [u8],
    meta_start: u64,
    xattr_start: u64,
    build_time: Mtime,
    root_nid: u64,
    /// Bytes of file, symlink and directory data still allowed to be copied out: a corrupt
    /// image whose inodes all point at the same blocks must not make us allocate without bound.
    budget: std::cell::Cell<u64>,
}

/// An xattr as stored: full key, value.
type RawXattr<'a> = (Vec<u8>, &'a [u8]);
/// Directory entries: (name, nid).
type Dirents = Vec<(Vec<u8>, u64)>;

/// One inode as stored.
struct RawInode<'a> {
    mode: u16,
    nlink: u32,
    size: u64,
    i_u: u32,
    uid: u32,
    gid: u32,
    mtime: Mtime,
    layout: u16,
    /// Raw xattrs (full key, value), in on-disk order.
    xattrs: Vec<RawXattr<'a>>,
    /// Bytes right after the inode and its xattrs (the inline tail, not yet cut to size).
    tail: &'a [u8],
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Result<Reader<'a>> {
        if (data.len() as u64) < INODES_START {
            return Err(corrupt(format!("{} bytes is too short for the superblock", data.len())));
        }
        if le32(data, 0) != COMPOSEFS_MAGIC {
            return Err(corrupt("bad composefs header magic"));
        }
        let sb = &data[SUPERBLOCK_OFFSET as usize..INODES_START as usize];
        if le32(sb, 0) != EROFS_MAGIC {
            return Err(corrupt("bad EROFS superblock magic"));
        }
        if sb[12] != BLOCK_BITS {
            return Err(Error::unsupported(format!("EROFS block size 2^{} (only 4096 is supported)", sb[12])));
        }
        Ok(Reader {
            data,
            root_nid: le16(sb, 14) as u64,
            build_time: Mtime { sec: le64(sb, 24) as i64, nsec: le32(sb, 32) },
            meta_start: le32(sb, 40) as u64 * BLOCK_SIZE,
            xattr_start: le32(sb, 44) as u64 * BLOCK_SIZE,
            budget: std::cell::Cell::new(4 * data.len() as u64 + (1 << 20)),
        })
    }

    fn slice(&self, off: u64, len: u64, what: &str) -> Result<&'a [u8]> {
        let end = off.checked_add(len).filter(|&e| e <= self.data.len() as u64);
        match end {
            Some(end) => Ok(&self.data[off as usize..end as usize]),
            None => Err(corrupt(format!("{what} at {off}+{len} is past the end of the image"))),
        }
    }

    fn block(&self, addr: u32, n: u64, what: &str) -> Result<&'a [u8]> {
        self.slice(addr as u64 * BLOCK_SIZE, n, what)
    }

    fn inode(&self, nid: u64) -> Result<RawInode<'a>> {
        let off = nid
            .checked_mul(SLOT_SIZE)
            .and_then(|o| o.checked_add(self.meta_start))
            .ok_or_else(|| corrupt(format!("nid {nid} out of range")))?;
        let head = self.slice(off, 2, "inode")?;
        let extended = le16(head, 0) & 1 == 1;
        let isize = if extended { EXTENDED_INODE_SIZE } else { COMPACT_INODE_SIZE };
        let b = self.slice(off, isize, "inode")?;
        let format = le16(b, 0);
        let layout = (format >> 1) & 7;
        let icount = le16(b, 2) as u64;
        let mut raw = if extended {
            RawInode {
                mode: le16(b, 4),
                size: le64(b, 8),
                i_u: le32(b, 16),
                uid: le32(b, 24),
                gid: le32(b, 28),
                mtime: Mtime { sec: le64(b, 32) as i64, nsec: le32(b, 40) },
                nlink: le32(b, 44),
                layout,
                xattrs: Vec::new(),
                tail: &[],
            }
        } else {
            RawInode {
                mode: le16(b, 4),
                nlink: le16(b, 6) as u32,
                size: le32(b, 8) as u64,
                i_u: le32(b, 16),
                uid: le16(b, 24) as u32,
                gid: le16(b, 26) as u32,
                mtime: self.build_time,
                layout,
                xattrs: Vec::new(),
                tail: &[],
            }
        };
        let xattr_size = if icount == 0 { 0 } else { XATTR_IBODY_HEADER_SIZE + (icount - 1) * 4 };
        if xattr_size > 0 {
            let body = self.slice(off + isize, xattr_size, "xattr body")?;
            self.read_xattrs(body, &mut raw.xattrs)?;
        }
        let tail_start = off + isize + xattr_size;
        raw.tail = self.data.get(tail_start as usize..).unwrap_or(&[]);
        Ok(raw)
    }

    fn read_xattrs(&self, body: &'a [u8], out: &mut Vec<RawXattr<'a>>) -> Result<()> {
        let shared = body[4] as u64;
        let mut p = XATTR_IBODY_HEADER_SIZE + shared * 4;
        if p > body.len() as u64 {
            return Err(corrupt("xattr body shorter than its shared ids"));
        }
        for i in 0..shared {
            let id = le32(body, (XATTR_IBODY_HEADER_SIZE + i * 4) as usize) as u64;
            let off = self.xattr_start + id * 4;
            let hdr = self.slice(off, XATTR_ENTRY_HEADER_SIZE, "shared xattr")?;
            let (entry, _) = self.xattr_entry(hdr, off)?;
            out.push(entry);
        }
        while p + XATTR_ENTRY_HEADER_SIZE <= body.len() as u64 {
            let base = body.as_ptr() as usize - self.data.as_ptr() as usize;
            let (entry, len) = self.xattr_entry(&body[p as usize..], base as u64 + p)?;
            if p + len > body.len() as u64 {
                return Err(corrupt("inline xattr runs past the xattr body"));
            }
            out.push(entry);
            p += len;
        }
        Ok(())
    }

    /// One xattr entry at image offset `off`: ((key, value), padded length).
    fn xattr_entry(&self, hdr: &[u8], off: u64) -> Result<(RawXattr<'a>, u64)> {
        let (name_len, index, value_len) = (hdr[0] as u64, hdr[1], le16(hdr, 2) as u64);
        let prefix = xattr_prefix(index).ok_or_else(|| corrupt(format!("unknown xattr prefix index {index}")))?;
        let body = self.slice(off + XATTR_ENTRY_HEADER_SIZE, name_len + value_len, "xattr entry")?;
        let mut key = Vec::with_capacity(prefix.len() + name_len as usize);
        key.extend_from_slice(prefix);
        key.extend_from_slice(&body[..name_len as usize]);
        if key.is_empty() {
            return Err(corrupt("empty xattr name"));
        }
        Ok(((key, &body[name_len as usize..]), xattr_entry_size(name_len as usize, value_len as usize)))
    }

    fn charge(&self, bytes: u64) -> Result<()> {
        let left = self
            .budget
            .get()
            .checked_sub(bytes)
            .ok_or_else(|| corrupt("inodes share data: more data than the image can hold"))?;
        self.budget.set(left);
        Ok(())
    }

    /// The bytes of a flat inode's data: full blocks at `i_u`, then the inline tail.
    fn flat_data(&self, raw: &RawInode<'a>, what: &str) -> Result<Vec<u8>> {
        if raw.size > self.data.len() as u64 {
            return Err(corrupt(format!("{what} of {} bytes is larger than the image", raw.size)));
        }
        let (block_part, tail_len) = match raw.layout {
            LAYOUT_FLAT_PLAIN => (raw.size, 0),
            LAYOUT_FLAT_INLINE => (raw.size - raw.size % BLOCK_SIZE, raw.size % BLOCK_SIZE),
            l => return Err(corrupt(format!("{what} has unsupported data layout {l}"))),
        };
        self.charge(raw.size)?;
        let mut out = Vec::with_capacity(raw.size as usize);
        if block_part > 0 {
            out.extend_from_slice(self.block(raw.i_u, block_part, what)?);
        }
        if tail_len > 0 {
            out.extend_from_slice(
                raw.tail.get(..tail_len as usize).ok_or_else(|| corrupt(format!("{what} tail past the image end")))?,
            );
        }
        Ok(out)
    }

    /// The entries of a directory: (name, nid), `.` and `..` excluded.
    fn dirents(&self, raw: &RawInode<'a>) -> Result<Dirents> {
        let data = self.flat_data(raw, "directory")?;
        let mut out = Vec::new();
        for block in data.chunks(BLOCK_SIZE as usize) {
            if block.len() < DIRENT_SIZE as usize {
                return Err(corrupt("directory block shorter than one dirent"));
            }
            let first_nameoff = le16(block, 8) as usize;
            if first_nameoff == 0 || !first_nameoff.is_multiple_of(DIRENT_SIZE as usize) || first_nameoff > block.len()
            {
                return Err(corrupt(format!("bad first dirent name offset {first_nameoff}")));
            }
            let n = first_nameoff / DIRENT_SIZE as usize;
            for i in 0..n {
                let d = i * DIRENT_SIZE as usize;
                let nid = le64(block, d);
                let start = le16(block, d + 8) as usize;
                let end = if i + 1 < n {
                    le16(block, d + DIRENT_SIZE as usize + 8) as usize
                } else {
                    block[start.min(block.len())..].iter().position(|&b| b == 0).map_or(block.len(), |p| start + p)
                };
                if start < first_nameoff || end < start || end > block.len() {
                    return Err(corrupt("dirent name out of its block"));
                }
                let name = &block[start..end];
                if name == b"." || name == b".." {
                    continue;
                }
                if name.is_empty() || name.len() > 255 || name.iter().any(|&b| b == b'/' || b == 0) {
                    return Err(corrupt(format!("invalid file name {:?}", String::from_utf8_lossy(name))));
                }
                out.push((name.to_vec(), nid));
            }
        }
        Ok(out)
    }

    /// Builds the tree node of one (non-hardlink) inode. Directories come back empty.
    /// `root` is the root's metadata when the inode is named in the root (to recognise stubs).
    fn node(&self, raw: &RawInode<'a>, root: Option<&Metadata>, name: &[u8]) -> Result<Option<Inode>> {
        let fmt = raw.mode as u32 & libc::S_IFMT;
        let mut meta = Metadata {
            permissions: raw.mode as u32 & 0o7777,
            uid: raw.uid,
            gid: raw.gid,
            mtime: raw.mtime,
            xattrs: BTreeMap::new(),
        };
        let has = |k: &[u8]| raw.xattrs.iter().any(|(key, _)| key == k);
        let escaped_whiteout = fmt == libc::S_IFREG && has(b"trusted.overlay.overlay.whiteout");
        let whiteout_parent = fmt == libc::S_IFDIR && has(b"trusted.overlay.overlay.whiteouts");
        let (mut payload, mut digest, mut opaque) = (None, None, false);
        for (key, value) in &raw.xattrs {
            self.charge((key.len() + value.len()) as u64)?;
            let key = key.as_slice();
            match key {
                b"trusted.overlay.redirect" if fmt == libc::S_IFREG => {
                    payload = Some(value.strip_prefix(b"/").unwrap_or(value).to_vec());
                }
                b"trusted.overlay.metacopy" if fmt == libc::S_IFREG => {
                    if value.len() == 36 {
                        digest = value[4..].try_into().ok();
                    }
                }
                b"trusted.overlay.overlay.whiteout" | b"user.overlay.whiteout" if escaped_whiteout => {}
                b"trusted.overlay.overlay.whiteouts" | b"user.overlay.whiteouts" if whiteout_parent => {}
                b"trusted.overlay.overlay.opaque" | b"user.overlay.opaque" if whiteout_parent && *value == b"x" => {}
                // The root always has it; elsewhere it is a layer's opaque marker.
                b"trusted.overlay.opaque" if fmt == libc::S_IFDIR && *value == b"y" => opaque = !name.is_empty(),
                _ => {
                    if let Some(rest) = key.strip_prefix(b"trusted.overlay.overlay.") {
                        let mut k = b"trusted.overlay.".to_vec();
                        k.extend_from_slice(rest);
                        meta.xattrs.insert(k, value.to_vec());
                    } else if key.starts_with(b"trusted.overlay.") {
                        // A real overlay xattr mkcomposefs never writes: not part of the tree.
                    } else {
                        meta.xattrs.insert(key.to_vec(), value.to_vec());
                    }
                }
            }
        }
        let kind = match fmt {
            libc::S_IFDIR => InodeKind::Directory(Directory { entries: BTreeMap::new(), overlay_opaque: opaque }),
            libc::S_IFREG if escaped_whiteout => InodeKind::CharDevice(0),
            libc::S_IFREG => {
                let content = if raw.size == 0 {
                    FileContent::External { payload: None, digest: None }
                } else if raw.layout == LAYOUT_CHUNK_BASED {
                    FileContent::External { payload, digest }
                } else {
                    FileContent::Inline(self.flat_data(raw, "inline file")?)
                };
                InodeKind::File(File { size: raw.size, content })
            }
            libc::S_IFLNK => {
                let target = self.flat_data(raw, "symlink")?;
                if target.is_empty() {
                    return Err(corrupt("empty symlink target"));
                }
                InodeKind::Symlink(target)
            }
            libc::S_IFCHR if raw.i_u == 0 => {
                let stub = root.is_some_and(|r| r.uid == meta.uid && r.gid == meta.gid && r.mtime == meta.mtime)
                    && super::writer::is_root_stub_name(name)
                    && meta.permissions == 0o644;
                if stub {
                    return Ok(None);
                }
                InodeKind::OverlayWhiteout
            }
            libc::S_IFCHR => InodeKind::CharDevice(raw.i_u as u64),
            libc::S_IFBLK => InodeKind::BlockDevice(raw.i_u as u64),
            libc::S_IFIFO => InodeKind::Fifo,
            libc::S_IFSOCK => InodeKind::Socket,
            _ => return Err(corrupt(format!("inode with mode {:o}", raw.mode))),
        };
        Ok(Some(Inode { meta, kind, nlink: raw.nlink }))
    }

    fn read_tree(&self) -> Result<Tree> {
        let root_raw = self.inode(self.root_nid)?;
        if root_raw.mode as u32 & libc::S_IFMT != libc::S_IFDIR {
            return Err(corrupt("root inode is not a directory"));
        }
        let root = self.node(&root_raw, None, b"")?.ok_or_else(|| corrupt("root"))?;
        let mut tree = Tree { inodes: vec![root] };
        let mut seen: HashMap<u64, InodeId> = HashMap::new();
        seen.insert(self.root_nid, ROOT);
        // Depth-first, name order: a stack of (directory, its entries, next index).
        let mut stack: Vec<(InodeId, Dirents, usize)> = vec![(ROOT, self.dirents(&root_raw)?, 0)];
        while let Some(top) = stack.last_mut() {
            let (dir, i) = (top.0, top.2);
            let Some((name, nid)) = top.1.get(i).cloned() else {
                stack.pop();
                continue;
            };
            top.2 += 1;
            if let Some(&id) = seen.get(&nid) {
                if tree.inodes[id].as_dir().is_some() {
                    return Err(corrupt(format!(
                        "directory nid {nid} is named twice (at {:?})",
                        String::from_utf8_lossy(&name)
                    )));
                }
                tree.link(dir, name, DirEntry { inode: id, hardlink: true });
                continue;
            }
            let raw = self.inode(nid)?;
            let root_meta = if dir == ROOT { Some(&tree.inodes[ROOT].meta) } else { None };
            let Some(inode) = self.node(&raw, root_meta, &name)? else {
                continue;
            };
            let is_dir = inode.as_dir().is_some();
            let id = tree.push(inode);
            seen.insert(nid, id);
            tree.link(dir, name, DirEntry { inode: id, hardlink: false });
            if is_dir {
                stack.push((id, self.dirents(&raw)?, 0));
            }
        }
        Ok(tree)
    }
}
