//! The composefs dump format (composefs-dump(5), SPEC §4): a text form of a [`Tree`], one inode per
//! line, as `mkcomposefs --from-file` reads it and `composefs-info dump` prints it.
//!
//! [`parse`] follows the mkcomposefs 1.0.8 parser: paths must be absolute and canonical, parents
//! come before children, `@MODE` lines are hardlinks to the path in PAYLOAD, and a hardlink
//! target's NLINK is used as given. `strict` is `CFS_PARSE_STRICT=1`: it also requires SIZE to
//! equal a symlink's target length, rdev to be 0 on anything but devices, and all 11 fields.
//! Beyond mkcomposefs, the same xattr key twice on one line is an error (it is ambiguous).
//!
//! [`write()`] prints a tree back, in depth-first name order, with the escaping c/storage uses
//! (SPEC §4.2); its output parses back to the same tree.

use std::collections::btree_map::Entry as MapEntry;
use std::io::{BufRead, Write};

use super::tree::{DirEntry, Directory, File, FileContent, Inode, InodeId, InodeKind, Metadata, Mtime, Tree, ROOT};
use crate::{Error, Result};

/// The largest inline content mkcomposefs accepts (`LCFS_INLINE_CONTENT_MAX`).
pub const INLINE_CONTENT_MAX: usize = 5000;
/// The longest symlink target (`PATH_MAX - 1`).
pub const SYMLINK_MAX: usize = 4095;
/// The longest file name.
pub const NAME_MAX: usize = 255;
/// The longest xattr key (`XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// The largest xattr value (`XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65535;
/// Lines with xattrs may be at most this long ("Too many xattrs" in mkcomposefs).
pub const XATTR_LINE_MAX: usize = 65535;
/// Lines longer than this are rejected before parsing, so a missing newline cannot make us
/// buffer an arbitrary amount (inline content, a symlink and 255-byte xattrs all fit easily).
pub const LINE_MAX: usize = 16 << 20;

/// Lines the reading thread hands to a parser at a time, and batches that may wait at each
/// hand-off.
const BATCH_LINES: usize = 1024;
const BATCHES_IN_FLIGHT: usize = 2;
/// Threads parsing lines, at most: one per CPU (parsing is most of the work; the tree builder,
/// which must take the lines in order, about half as much).
const MAX_PARSERS: usize = 4;

/// Parses a whole dump into a tree. Errors name the line number.
///
/// A dump of more than one batch of lines is read on a second thread and parsed (fields, escapes,
/// numbers, digests, xattrs: most of the work) by one thread per CPU, each taking every n-th
/// batch, while this one builds the tree from their batches in order (a 134k-line dump on 2 CPUs:
/// the lone parsing thread was busy all along, the builder half the time). Memory stays bounded by
/// the tree: at most `2 * BATCHES_IN_FLIGHT + 2` batches per parser exist at a time.
pub fn parse(input: impl BufRead + Send, strict: bool) -> Result<Tree> {
    let mut reader = LineReader { input, lineno: 0 };
    let mut builder = Builder { tree: None, last_dir: Vec::new(), levels: Vec::new() };
    let first = reader.batch();
    let at_end = first.end.is_some();
    builder.take(first.parse(strict))?;
    if !at_end {
        let parsers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_PARSERS);
        std::thread::scope(|s| {
            let (mut to_parsers, mut from_parsers) = (Vec::new(), Vec::new());
            for _ in 0..parsers {
                let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<RawBatch>(BATCHES_IN_FLIGHT);
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(BATCHES_IN_FLIGHT);
                s.spawn(move || {
                    // The builder has stopped (an error) when nobody receives.
                    for raw in raw_rx {
                        if tx.send(raw.parse(strict)).is_err() {
                            break;
                        }
                    }
                });
                to_parsers.push(raw_tx);
                from_parsers.push(rx);
            }
            s.spawn(move || {
                for i in 0.. {
                    let raw = reader.batch();
                    let last = raw.end.is_some();
                    if to_parsers[i % parsers].send(raw).is_err() || last {
                        break;
                    }
                }
            });
            // Batch i went to parser i % parsers; the first that has none left is the end.
            // Returning early drops the receivers, which stops the parsers and then the reader.
            (0..).map_while(|i| from_parsers[i % parsers].recv().ok()).try_for_each(|batch| builder.take(batch))
        })?;
    }
    builder.tree.ok_or_else(|| Error::format("dump is empty: expected a first line for `/`"))
}

/// A parsed line, or the error that ends the dump (read error, or a line that cannot be split).
type Item = Result<(usize, Line)>;

/// Reads the dump's lines, in batches for the parsers.
struct LineReader<R> {
    input: R,
    lineno: usize,
}

/// Up to `BATCH_LINES` non-empty lines, unparsed.
struct RawBatch {
    /// The lines, one after another.
    bytes: Vec<u8>,
    /// Where each line ends in `bytes`, and its number in the dump.
    lines: Vec<(usize, usize)>,
    /// Set when the input ended with this batch: at its end, or on an error (read, line too long).
    end: Option<Result<()>>,
}

impl RawBatch {
    /// The lines parsed, up to the first that fails; then the error the input ended on, if any.
    fn parse(self, strict: bool) -> Vec<Item> {
        let mut items = Vec::with_capacity(self.lines.len() + 1);
        let mut start = 0;
        for &(end, lineno) in &self.lines {
            let item = Line::parse(&self.bytes[start..end], strict)
                .map(|line| (lineno, line))
                .map_err(|e| e.context(format!("dump line {lineno}")));
            start = end;
            let failed = item.is_err();
            items.push(item);
            if failed {
                return items;
            }
        }
        if let Some(Err(e)) = self.end {
            items.push(Err(e));
        }
        items
    }
}

impl<R: BufRead> LineReader<R> {
    /// The next `BATCH_LINES` non-empty lines, fewer where the input ends (or fails).
    fn batch(&mut self) -> RawBatch {
        let mut batch = RawBatch { bytes: Vec::new(), lines: Vec::with_capacity(BATCH_LINES), end: None };
        while batch.lines.len() < BATCH_LINES {
            let start = batch.bytes.len();
            let read = std::io::Read::take(&mut self.input, LINE_MAX as u64 + 1).read_until(b'\n', &mut batch.bytes);
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    batch.bytes.truncate(start);
                    batch.end = Some(Err(Error::io(format!("reading dump line {}", self.lineno + 1), e)));
                    break;
                }
            };
            if n == 0 {
                batch.end = Some(Ok(()));
                break;
            }
            self.lineno += 1;
            if batch.bytes.last() == Some(&b'\n') {
                batch.bytes.pop();
            } else if batch.bytes.len() - start > LINE_MAX {
                batch.bytes.truncate(start);
                batch.end = Some(Err(Error::limit(format!("dump line {}: longer than {LINE_MAX} bytes", self.lineno))));
                break;
            }
            if batch.bytes.len() > start {
                batch.lines.push((batch.bytes.len(), self.lineno));
            }
        }
        batch
    }
}

/// Splits a line into fields on single spaces.
struct Fields<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match rest.iter().position(|&b| b == b' ') {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }

    fn required(&mut self, name: &str) -> Result<&'a [u8]> {
        self.next_field().ok_or_else(|| Error::format(format!("missing field {name}")))
    }
}

/// One line, parsed without the tree. The errors that mkcomposefs reports after the tree checks
/// (parent, duplicate) are kept in `body` to be reported in the same order.
struct Line {
    path: Vec<u8>,
    /// `path[..parent_len]` is the parent's path, `path[name_start..]` the name.
    parent_len: usize,
    name_start: usize,
    body: Result<Body>,
}

enum Body {
    Root(Inode),
    /// A hardlink to `target` (absolute); `canonical` says whether it is a canonical path
    /// (otherwise it names nothing).
    Hardlink {
        target: Vec<u8>,
        canonical: bool,
    },
    Inode(Inode),
}

impl Line {
    fn parse(line: &[u8], strict: bool) -> Result<Line> {
        let mut f = Fields { rest: Some(line) };
        let path = unescape(f.required("PATH")?).map_err(|e| e.context("PATH"))?;
        let size: u64 = parse_dec(f.required("SIZE")?, "SIZE")?;
        let mode_field = f.required("MODE")?;
        let (hardlink, mode_digits) = match mode_field.split_first() {
            Some((b'@', rest)) => (true, rest),
            _ => (false, mode_field),
        };
        let mode = parse_octal(mode_digits)?;
        canonical_path(&path)?;
        let (parent_len, name_start) = if path == b"/" {
            (0, 0)
        } else {
            let slash = path.iter().rposition(|&b| b == b'/').expect("canonical_path checked it is absolute");
            (slash.max(1), slash + 1)
        };
        let fields = Rest { size, mode, hardlink, strict, line_len: line.len() };
        let body = if path == b"/" {
            fields.root(f).map_err(|e| e.context("`/`"))
        } else if hardlink {
            fields.hardlink(f, &path)
        } else {
            fields.inode(f, &path)
        };
        Ok(Line { path, parent_len, name_start, body })
    }

    fn parent(&self) -> &[u8] {
        &self.path[..self.parent_len]
    }
}

/// The fields after MODE, with what came before that they need.
struct Rest {
    size: u64,
    mode: u32,
    hardlink: bool,
    strict: bool,
    line_len: usize,
}

/// NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST, each optional unless strict.
struct Tail<'a> {
    nlink: Option<&'a [u8]>,
    uid: Option<&'a [u8]>,
    gid: Option<&'a [u8]>,
    rdev: Option<&'a [u8]>,
    mtime: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    content: Option<&'a [u8]>,
    digest: Option<&'a [u8]>,
}

impl<'a> Tail<'a> {
    fn split(f: &mut Fields<'a>) -> Tail<'a> {
        Tail {
            nlink: f.next_field(),
            uid: f.next_field(),
            gid: f.next_field(),
            rdev: f.next_field(),
            mtime: f.next_field(),
            payload: f.next_field(),
            content: f.next_field(),
            digest: f.next_field(),
        }
    }
}

impl Rest {
    fn root(&self, mut f: Fields<'_>) -> Result<Body> {
        let t = Tail::split(&mut f);
        let (mut meta, nlink) = parse_meta(self.mode, [t.nlink, t.uid, t.gid, t.mtime], self.strict)?;
        parse_xattrs(&mut f, &mut meta.xattrs, self.line_len)?;
        if self.mode & libc::S_IFMT != libc::S_IFDIR || self.hardlink {
            return Err(Error::format("`/` must be a directory"));
        }
        let rdev: u64 = optional_dec(t.rdev, "RDEV")?;
        if self.strict && rdev != 0 {
            return Err(Error::format("`/`: RDEV must be 0 for a directory"));
        }
        Ok(Body::Root(Inode { meta, kind: InodeKind::Directory(Directory::default()), nlink }))
    }

    fn hardlink(&self, mut f: Fields<'_>, path: &[u8]) -> Result<Body> {
        let t = Tail::split(&mut f);
        let target = unescape(
            t.payload
                .filter(|p| *p != b"-")
                .ok_or_else(|| Error::format(format!("hardlink {} has no target in PAYLOAD", show(path))))?,
        )?;
        if target.first() != Some(&b'/') {
            return Err(Error::format(format!("hardlink target {} is not absolute", show(&target))));
        }
        let canonical = canonical_path(&target).is_ok();
        Ok(Body::Hardlink { target, canonical })
    }

    fn inode(&self, mut f: Fields<'_>, path: &[u8]) -> Result<Body> {
        let (size, mode, strict) = (self.size, self.mode, self.strict);
        let t = Tail::split(&mut f);
        let (mut meta, nlink) = parse_meta(mode, [t.nlink, t.uid, t.gid, t.mtime], strict)?;
        let rdev: u64 = optional_dec(t.rdev, "RDEV")?;
        let payload = optional(t.payload).map(unescape).transpose().map_err(|e| e.context("PAYLOAD"))?;
        let content = optional(t.content).map(unescape).transpose().map_err(|e| e.context("CONTENT"))?;
        let digest = optional(t.digest).map(parse_digest).transpose()?;
        if strict && t.digest.is_none() {
            return Err(Error::format("missing field DIGEST"));
        }
        parse_xattrs(&mut f, &mut meta.xattrs, self.line_len)?;

        let file_type = mode & libc::S_IFMT;
        if strict && rdev != 0 && file_type != libc::S_IFCHR && file_type != libc::S_IFBLK {
            return Err(Error::format(format!("{}: RDEV {rdev} on a non-device", show(path))));
        }
        let kind = match file_type {
            libc::S_IFDIR => InodeKind::Directory(Directory::default()),
            libc::S_IFREG => match content {
                Some(c) => {
                    if c.len() > INLINE_CONTENT_MAX {
                        return Err(Error::limit(format!(
                            "{}: inline content of {} bytes is over the maximum {INLINE_CONTENT_MAX}",
                            show(path),
                            c.len()
                        )));
                    }
                    if c.len() as u64 != size {
                        return Err(Error::format(format!(
                            "{}: SIZE {size} but inline content has {} bytes",
                            show(path),
                            c.len()
                        )));
                    }
                    InodeKind::File(File { size, content: FileContent::Inline(c) })
                }
                None => InodeKind::File(File { size, content: FileContent::External { payload, digest } }),
            },
            libc::S_IFLNK => {
                let target = payload
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Error::format(format!("symlink {} has no target in PAYLOAD", show(path))))?;
                if target.len() > SYMLINK_MAX {
                    return Err(Error::limit(format!(
                        "symlink {}: target of {} bytes is over the maximum {SYMLINK_MAX}",
                        show(path),
                        target.len()
                    )));
                }
                if target.contains(&0) {
                    return Err(Error::format(format!("symlink {}: target contains NUL", show(path))));
                }
                if strict && size != target.len() as u64 {
                    return Err(Error::format(format!(
                        "symlink {}: SIZE {size} differs from the target length {}",
                        show(path),
                        target.len()
                    )));
                }
                InodeKind::Symlink(target)
            }
            libc::S_IFCHR => InodeKind::CharDevice(rdev),
            libc::S_IFBLK => InodeKind::BlockDevice(rdev),
            libc::S_IFIFO => InodeKind::Fifo,
            libc::S_IFSOCK => InodeKind::Socket,
            _ => return Err(Error::format(format!("{}: MODE {mode:o} has no valid file type", show(path)))),
        };
        Ok(Body::Inode(Inode { meta, kind, nlink }))
    }
}

/// Builds the tree from parsed lines, in order: what needs the lines before.
struct Builder {
    tree: Option<Tree>,
    /// The parent directory path of the previous line, so that a run of siblings resolves its
    /// parent once.
    last_dir: Vec<u8>,
    /// Each directory on `last_dir` below the root: where its path ends in `last_dir`, and its
    /// inode (the last is `last_dir`'s). A dump goes depth first, so the next parent shares most
    /// of them: only the rest is looked up (resolving every parent from the root was a third of a
    /// 134k-line dump's name comparisons).
    levels: Vec<(usize, InodeId)>,
}

impl Builder {
    /// The inode of directory path `dir` (absolute, canonical), `last` and `levels` turned into
    /// `dir`'s; `None` if a component is missing (`last` and `levels` are then the root's).
    fn enter(tree: &Tree, levels: &mut Vec<(usize, InodeId)>, last: &mut Vec<u8>, dir: &[u8]) -> Option<InodeId> {
        if dir == last.as_slice() {
            return Some(levels.last().map_or(ROOT, |&(_, id)| id));
        }
        let common = dir.iter().zip(last.iter()).take_while(|(a, b)| a == b).count();
        // Keep the levels that are whole components of `dir` too.
        while levels.last().is_some_and(|&(end, _)| end > common || (end < dir.len() && dir[end] != b'/')) {
            levels.pop();
        }
        let (mut end, mut id) = levels.last().copied().unwrap_or((0, ROOT));
        // Here `dir[end]` is a '/' (the root's, at 0, or one after a kept level).
        while end + 1 < dir.len() {
            let start = end + 1;
            end = dir[start..].iter().position(|&b| b == b'/').map_or(dir.len(), |i| start + i);
            match tree.lookup(id, &dir[start..end]) {
                Some(e) => id = e.inode,
                None => {
                    levels.clear();
                    last.clear();
                    return None;
                }
            }
            levels.push((end, id));
        }
        last.clear();
        last.extend_from_slice(dir);
        Some(id)
    }

    fn take(&mut self, batch: Vec<Item>) -> Result<()> {
        for item in batch {
            let (lineno, line) = item?;
            self.line(line).map_err(|e| e.context(format!("dump line {lineno}")))?;
        }
        Ok(())
    }

    fn line(&mut self, line: Line) -> Result<()> {
        let Some(tree) = self.tree.as_mut() else {
            if line.path != b"/" {
                return Err(Error::format(format!(
                    "first line is {:?}, expected the root `/`",
                    String::from_utf8_lossy(&line.path)
                )));
            }
            let Body::Root(root) = line.body? else { unreachable!("the line of `/` has a root body") };
            let mut t = Tree::new(root.meta);
            t.inodes[ROOT].nlink = root.nlink;
            self.tree = Some(t);
            return Ok(());
        };
        if line.path == b"/" {
            return Err(Error::format("`/` appears twice"));
        }
        let path = &line.path;
        let parent_id = Self::enter(tree, &mut self.levels, &mut self.last_dir, line.parent())
            .ok_or_else(|| Error::format(format!("parent directory of {} is missing", show(path))))?;
        if tree.inodes[parent_id].as_dir().is_none() {
            return Err(Error::format(format!("parent of {} is not a directory", show(path))));
        }
        // One search of the parent's entries for the check and the insertion (hardlinks, which
        // must resolve their target first, search again).
        let next_id = tree.inodes.len();
        let dir = tree.inodes[parent_id].as_dir_mut().expect("checked above");
        let MapEntry::Vacant(slot) = dir.entries.entry(line.path[line.name_start..].to_vec()) else {
            return Err(Error::format(format!("duplicate entry {}", show(path))));
        };
        match line.body? {
            Body::Inode(inode) => {
                slot.insert(DirEntry { inode: next_id, hardlink: false });
                tree.push(inode);
            }
            Body::Hardlink { target, canonical } => {
                drop(slot);
                let target_id = tree
                    .resolve(&target)
                    .filter(|_| canonical)
                    .ok_or_else(|| Error::format(format!("hardlink target {} does not exist", show(&target))))?;
                if tree.inodes[target_id].as_dir().is_some() {
                    return Err(Error::format(format!("hardlink {} to directory {}", show(&line.path), show(&target))));
                }
                tree.link(
                    parent_id,
                    line.path[line.name_start..].to_vec(),
                    DirEntry { inode: target_id, hardlink: true },
                );
            }
            Body::Root(_) => unreachable!("only `/` has a root body"),
        }
        Ok(())
    }
}

/// Checks that `path` is absolute with no empty, `.` or `..` components, no NUL, names ≤ 255.
fn canonical_path(path: &[u8]) -> Result<()> {
    if path.first() != Some(&b'/') {
        return Err(Error::format(format!("path {} is not absolute", show(path))));
    }
    if path == b"/" {
        return Ok(());
    }
    for comp in path[1..].split(|&b| b == b'/') {
        match comp {
            b"" => return Err(Error::format(format!("path {} has an empty component", show(path)))),
            b"." | b".." => return Err(Error::format(format!("path {} has a `.` or `..` component", show(path)))),
            _ if comp.len() > NAME_MAX => {
                return Err(Error::limit(format!("path {}: a name is longer than {NAME_MAX} bytes", show(path))))
            }
            _ if comp.contains(&0) => return Err(Error::format(format!("path {} contains NUL", show(path)))),
            _ => {}
        }
    }
    Ok(())
}

fn parse_meta(mode: u32, fields: [Option<&[u8]>; 4], strict: bool) -> Result<(Metadata, u32)> {
    let [nlink, uid, gid, mtime] = fields;
    if strict && mtime.is_none() {
        return Err(Error::format("missing field MTIME"));
    }
    let meta = Metadata {
        permissions: mode & 0o7777,
        uid: optional_dec(uid, "UID")?,
        gid: optional_dec(gid, "GID")?,
        mtime: mtime.map(parse_mtime).transpose()?.unwrap_or_default(),
        xattrs: Default::default(),
    };
    Ok((meta, optional_dec(nlink, "NLINK")?))
}

fn parse_xattrs(
    f: &mut Fields<'_>,
    xattrs: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    line_len: usize,
) -> Result<()> {
    // mkcomposefs rejects xattrs on lines over 64 KiB (SPEC §4.1).
    if line_len > XATTR_LINE_MAX && f.rest.is_some_and(|r| r.iter().any(|&b| b != b' ')) {
        return Err(Error::limit(format!("too many xattrs: a line with xattrs is longer than {XATTR_LINE_MAX} bytes")));
    }
    while let Some(field) = f.next_field() {
        if field.is_empty() {
            continue;
        }
        let eq = field
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| Error::format(format!("xattr {} has no `=`", show(field))))?;
        let key = unescape(&field[..eq]).map_err(|e| e.context("xattr key"))?;
        if key.is_empty() {
            return Err(Error::format("empty xattr key"));
        }
        if key.contains(&0) {
            return Err(Error::format(format!("xattr key {} contains NUL", show(&key))));
        }
        if key.len() > XATTR_NAME_MAX {
            return Err(Error::limit(format!("xattr key of {} bytes is longer than {XATTR_NAME_MAX}", key.len())));
        }
        let value = unescape(&field[eq + 1..]).map_err(|e| e.context("xattr value"))?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::limit(format!(
                "xattr {} value of {} bytes is larger than {XATTR_SIZE_MAX}",
                show(&key),
                value.len()
            )));
        }
        match xattrs.entry(key) {
            MapEntry::Occupied(e) => {
                return Err(Error::format(format!("xattr {} appears twice", show(e.key()))));
            }
            MapEntry::Vacant(e) => {
                e.insert(value);
            }
        }
    }
    Ok(())
}

fn optional(field: Option<&[u8]>) -> Option<&[u8]> {
    field.filter(|f| !f.is_empty() && *f != b"-")
}

fn optional_dec<T: std::str::FromStr + Default>(field: Option<&[u8]>, name: &str) -> Result<T> {
    match field {
        None => Ok(T::default()),
        Some(f) => parse_dec(f, name),
    }
}

fn parse_dec<T: std::str::FromStr>(field: &[u8], name: &str) -> Result<T> {
    std::str::from_utf8(field)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::format(format!("{name} {} is not a decimal number in range", show(field))))
}

fn parse_octal(field: &[u8]) -> Result<u32> {
    std::str::from_utf8(field)
        .ok()
        .filter(|s| !s.is_empty())
        .and_then(|s| u32::from_str_radix(s, 8).ok())
        .ok_or_else(|| Error::format(format!("MODE {} is not an octal number", show(field))))
}

fn parse_mtime(field: &[u8]) -> Result<Mtime> {
    let bad = || Error::format(format!("MTIME {} is not SECONDS.NANOSECONDS", show(field)));
    let dot = field.iter().position(|&b| b == b'.').ok_or_else(bad)?;
    let (sec, nsec) = (&field[..dot], &field[dot + 1..]);
    let (neg, digits) = match sec.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, sec),
    };
    let magnitude: i64 = parse_dec(digits, "MTIME").map_err(|_| bad())?;
    Ok(Mtime { sec: if neg { -magnitude } else { magnitude }, nsec: parse_dec(nsec, "MTIME").map_err(|_| bad())? })
}

fn parse_digest(field: &[u8]) -> Result<[u8; 32]> {
    crate::source::unhex32(field).ok_or_else(|| Error::format(format!("DIGEST {} is not 64 hex digits", show(field))))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the dump escapes: `\\ \n \r \t \xHH`; any other byte stands for itself.
pub fn unescape(s: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let bad = || Error::format(format!("bad escape in {}", show(s)));
        match s.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hi = s.get(i + 2).copied().and_then(hex_val).ok_or_else(bad)?;
                let lo = s.get(i + 3).copied().and_then(hex_val).ok_or_else(bad)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            _ => return Err(bad()),
        }
        i += 2;
    }
    Ok(out)
}

/// A short printable form of raw bytes for error messages.
fn show(bytes: &[u8]) -> String {
    let mut s = Vec::new();
    escape_into(&mut s, &bytes[..bytes.len().min(200)], false);
    let mut out = String::from_utf8_lossy(&s).into_owned();
    if bytes.len() > 200 {
        out.push_str("...");
    }
    out
}

/// Appends `bytes` escaped as SPEC §4.2 (ESCAPE_STANDARD, plus `=` when `escape_equal`).
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8], escape_equal: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'=' if escape_equal => out.extend_from_slice(b"\\x3d"),
            0x21..=0x7e => out.push(b),
            _ => out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
        }
    }
}

/// An optional field: `-` when empty, `\x2d` for a lone dash (ESCAPE_LONE_DASH).
pub fn escape_optional(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes {
        b"" => out.push(b'-'),
        b"-" => out.extend_from_slice(b"\\x2d"),
        _ => escape_into(out, bytes, false),
    }
}

/// Prints `tree` as a dump: depth first in name order, the first name of each inode in that order
/// as a full line and its other names as `@` hardlinks to it.
pub fn write(tree: &Tree, out: &mut impl Write) -> Result<()> {
    let mut w = std::io::BufWriter::with_capacity(64 << 10, out);
    let mut line = Vec::with_capacity(512);
    // The path each inode was first printed at (empty: not printed yet).
    let mut printed: Vec<Option<Vec<u8>>> = vec![None; tree.inodes.len()];
    write_line(&mut line, b"/", tree.root(), None);
    w.write_all(&line).map_err(|e| Error::io("writing dump", e))?;
    for (path, entry) in tree.walk() {
        line.clear();
        let inode = tree
            .inodes
            .get(entry.inode)
            .ok_or_else(|| Error::invalid_argument(format!("tree entry {} names a missing inode", show(&path))))?;
        let first = printed.get_mut(entry.inode).and_then(|p| p.as_ref());
        match first {
            Some(target) if inode.as_dir().is_none() => write_line(&mut line, &path, inode, Some(target)),
            _ => {
                write_line(&mut line, &path, inode, None);
                if inode.as_dir().is_none() {
                    printed[entry.inode] = Some(path);
                }
            }
        }
        w.write_all(&line).map_err(|e| Error::io("writing dump", e))?;
    }
    w.flush().map_err(|e| Error::io("writing dump", e))
}

fn write_line(line: &mut Vec<u8>, path: &[u8], inode: &Inode, link_target: Option<&Vec<u8>>) {
    escape_into(line, path, false);
    let m = &inode.meta;
    let mode = inode.mode();
    if let Some(target) = link_target {
        line.extend_from_slice(
            format!(" 0 @{mode:o} {} {} {} 0 {}.{} ", inode.nlink, m.uid, m.gid, m.mtime.sec, m.mtime.nsec).as_bytes(),
        );
        escape_optional(line, target);
        line.extend_from_slice(b" - -\n");
        return;
    }
    let (size, rdev) = match &inode.kind {
        InodeKind::File(f) => (f.size, 0),
        InodeKind::Symlink(t) => (t.len() as u64, 0),
        InodeKind::CharDevice(r) | InodeKind::BlockDevice(r) => (0, *r),
        _ => (0, 0),
    };
    line.extend_from_slice(
        format!(" {size} {mode:o} {} {} {} {rdev} {}.{} ", inode.nlink, m.uid, m.gid, m.mtime.sec, m.mtime.nsec)
            .as_bytes(),
    );
    match &inode.kind {
        InodeKind::Symlink(t) => {
            escape_optional(line, t);
            line.extend_from_slice(b" - -");
        }
        InodeKind::File(File { content: FileContent::Inline(c), .. }) => {
            line.extend_from_slice(b"- ");
            escape_optional(line, c);
            line.extend_from_slice(b" -");
        }
        InodeKind::File(File { content: FileContent::External { payload, digest }, .. }) => {
            escape_optional(line, payload.as_deref().unwrap_or(b""));
            line.extend_from_slice(b" - ");
            match digest {
                Some(d) => {
                    for b in d {
                        line.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                }
                None => line.push(b'-'),
            }
        }
        _ => line.extend_from_slice(b"- - -"),
    }
    for (k, v) in &m.xattrs {
        line.push(b' ');
        escape_into(line, k, true);
        line.push(b'=');
        escape_into(line, v, true);
    }
    line.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str, strict: bool) -> Result<Tree> {
        parse(s.as_bytes(), strict)
    }

    /// A dump of `/`, `/d` and `n` files in it: lines 1, 2, and 3.. for the files.
    fn many_files(n: usize) -> String {
        let mut dump = String::from("/ 0 40755 2 0 0 0 0.0 - - -\n/d 0 40755 2 0 0 0 0.0 - - -\n");
        for i in 0..n {
            dump.push_str(&format!("/d/f{i} 3 100644 1 0 0 0 {i}.0 - abc -\n"));
        }
        dump
    }

    /// Parents are found from the previous one's directories: up, down and across siblings whose
    /// names share a prefix, each line lands in its own directory.
    #[test]
    fn parents_found_from_the_previous_ones_are_the_right_directories() {
        let dir = |p: &str| format!("{p} 0 40755 2 0 0 0 0.0 - - -\n");
        let file = |p: &str| format!("{p} 1 100644 1 0 0 0 0.0 - x -\n");
        let mut dump = dir("/") + &dir("/a") + &dir("/a/b") + &dir("/a/bc") + &file("/a/b/x");
        dump += &(file("/a/bc/y") + &file("/a/b/z") + &dir("/q") + &dir("/q/r") + &file("/q/r/s"));
        dump += &(file("/a/bc/w") + &file("/f") + &file("/a/b/v"));
        let t = parse_str(&dump, true).unwrap();
        let names = |d: &str| -> Vec<String> {
            let id = t.resolve(d.as_bytes()).unwrap();
            t.inode(id).as_dir().unwrap().entries.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
        };
        assert_eq!(names("/a/b"), ["v", "x", "z"]);
        assert_eq!(names("/a/bc"), ["w", "y"]);
        assert_eq!(names("/q/r"), ["s"]);
        assert_eq!(names("/"), ["a", "f", "q"]);
        let e = parse_str(&(dump.clone() + &file("/f/g")), true).unwrap_err().to_string();
        assert!(e.contains("parent of /f/g is not a directory"), "{e}");
        let e = parse_str(&(dump + &file("/a/bd/g")), true).unwrap_err().to_string();
        assert!(e.contains("parent directory of /a/bd/g is missing"), "{e}");
    }

    /// Dumps of several batches are read on a second thread and parsed on others, each taking
    /// every n-th batch: the tree is the same, and errors from any side (a line that does not
    /// parse, one that does not fit the tree, one too long, a read error) name their line, late
    /// in the dump as early.
    #[test]
    fn multi_batch_dumps_parse_in_order_and_errors_name_their_line() {
        let n = BATCH_LINES * 3 + 17;
        let t = parse_str(&many_files(n), true).unwrap();
        let d = t.resolve(b"/d").unwrap();
        assert_eq!(t.inode(d).as_dir().unwrap().entries.len(), n);
        let last = t.resolve(format!("/d/f{}", n - 1).as_bytes()).unwrap();
        assert_eq!(t.inode(last).meta.mtime.sec, (n - 1) as i64);

        // Line 2 + 2500 + 1: a bad MTIME (the reading side).
        let bad_mtime = many_files(n).replace("/d/f2500 3 100644 1 0 0 0 2500.0", "/d/f2500 3 100644 1 0 0 0 x");
        let e = parse_str(&bad_mtime, true).unwrap_err().to_string();
        assert!(e.contains("dump line 2503") && e.contains("MTIME"), "{e}");
        // A duplicate entry (the tree side), after the reader has gone on.
        let mut dup = many_files(n);
        dup.push_str("/d/f7 3 100644 1 0 0 0 0.0 - abc -\n");
        let e = parse_str(&dup, true).unwrap_err().to_string();
        assert!(e.contains(&format!("dump line {}", n + 3)) && e.contains("duplicate entry /d/f7"), "{e}");
        // A missing parent early in a long dump: the reader, blocked on a full channel, stops.
        let mut orphan = String::from("/ 0 40755 2 0 0 0 0.0 - - -\n/x/y 0 100644 1 0 0 0 0.0 - - -\n");
        orphan.push_str(&many_files(n * 4)[28..]);
        let e = parse_str(&orphan, true).unwrap_err().to_string();
        assert!(e.contains("dump line 2") && e.contains("parent directory of /x/y is missing"), "{e}");

        // A line too long to buffer, in a later batch and in the first.
        for files in [n, 3] {
            let mut long = many_files(files);
            long.push_str(&"a".repeat(LINE_MAX + 10));
            let e = parse_str(&long, true).unwrap_err().to_string();
            assert!(e.contains(&format!("dump line {}: longer than", files + 3)), "{e}");
        }

        // A read error after a few batches.
        struct Failing<'a>(&'a [u8]);
        impl std::io::Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let k = buf.len().min(self.0.len());
                buf[..k].copy_from_slice(&self.0[..k]);
                self.0 = &self.0[k..];
                Ok(k)
            }
        }
        let text = many_files(n);
        let cut = text.match_indices('\n').nth(BATCH_LINES * 2 + 9).unwrap().0 + 1;
        let e = parse(std::io::BufReader::new(Failing(&text.as_bytes()[..cut])), true).unwrap_err().to_string();
        assert!(
            e.contains(&format!("reading dump line {}", BATCH_LINES * 2 + 11)) && e.contains("disk on fire"),
            "{e}"
        );
    }

    #[test]
    fn parses_all_kinds_and_prints_them_back() {
        let dump = "/ 0 40755 3 0 0 0 1672531200.0 - - - user.a=b\n\
/d 0 40700 2 1 2 0 5.1 - - -\n\
/d/f 100 100644 2 1000 1000 0 1672531200.5000000 01/23456789abcdef1123456789abcdef2123456789abcdef3123456789abcdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef user.key1=value1 user.x\\x3dy=a\\x3db\n\
/hl 0 @100644 0 0 0 0 0.0 /d/f - -\n\
/in 5 100600 1 0 0 0 0.0 - a\\x20b\\n\\\\ -\n\
/l 5 120777 1 0 0 0 -10.3 \\x2d/a\\tb - -\n\
/c 0 20644 1 0 0 259 0.0 - - -\n\
/b 0 60644 1 0 0 1792 0.0 - - -\n\
/p 0 10644 1 0 0 0 0.0 - - -\n\
/s 0 140644 1 0 0 0 0.0 - - -\n\
/name\\x20with\\x3dodd\\xff 0 100644 1 0 0 0 0.0 - - -\n";
        let t = parse_str(dump, true).unwrap();
        let f = t.resolve(b"/d/f").unwrap();
        assert_eq!(t.lookup(ROOT, b"hl"), Some(DirEntry { inode: f, hardlink: true }));
        let fi = t.inode(f);
        assert_eq!(fi.nlink, 2);
        assert_eq!(fi.meta.mtime, Mtime { sec: 1672531200, nsec: 5000000 });
        assert_eq!(fi.meta.xattrs.get(&b"user.x=y"[..]).map(|v| &v[..]), Some(&b"a=b"[..]));
        match &fi.kind {
            InodeKind::File(File {
                size: 100,
                content: FileContent::External { payload: Some(p), digest: Some(d) },
            }) => {
                assert_eq!(&p[..3], b"01/");
                assert_eq!(d[1], 0x23);
            }
            k => panic!("{k:?}"),
        }
        let l = t.inode(t.resolve(b"/l").unwrap());
        assert_eq!(l.kind, InodeKind::Symlink(b"-/a\tb".to_vec()));
        assert_eq!(l.meta.mtime, Mtime { sec: -10, nsec: 3 });
        assert_eq!(
            t.inode(t.resolve(b"/in").unwrap()).kind,
            InodeKind::File(File { size: 5, content: FileContent::Inline(b"a b\n\\".to_vec()) })
        );
        assert_eq!(t.inode(t.resolve(b"/c").unwrap()).kind, InodeKind::CharDevice(259));
        assert!(t.resolve(b"/name with=odd\xff").is_some());

        let mut out = Vec::new();
        write(&t, &mut out).unwrap();
        let again = parse(&out[..], true).unwrap();
        assert_eq!(again.normalized(), t.normalized());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("/hl 0 @100644 2 1000 1000 0 1672531200.5000000 /d/f - -\n"), "{text}");
        assert!(text.contains("/l 5 120777 1 0 0 0 -10.3 -/a\\tb - -\n"), "{text}");
        assert!(text.contains(" user.x\\x3dy=a\\x3db\n"), "{text}");
    }

    #[test]
    fn cstorage_test_dump_node_lines_parse() {
        let dump = "/ 0 40000 1 0 0 0 1672531200.0 - - -\n\
/example.txt 100 100000 1 1000 1000 0 1672531200.0 01/23456789abcdef1123456789abcdef2123456789abcdef3123456789abcdef - - user.key1=value1\n\
/mysymlink 0 120000 1 0 0 0 1672531200.0 targetfile - -\n\
/myhardlink 0 @100000 1 0 0 0 1672531200.0 /example.txt - -\n\
/foo 0 40755 1 0 0 0 0.0 - - -";
        let t = parse_str(dump, false).unwrap();
        assert_eq!(t.root().meta.permissions, 0);
        assert!(t.resolve(b"/foo").is_some());
        // Strict mode wants the symlink SIZE to match.
        let e = parse_str(dump, true).unwrap_err();
        assert!(e.to_string().starts_with("dump line 3: "), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("/ 0 40755 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n", "dump line 2: parent directory"),
            (
                "/ 0 40755 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n",
                "dump line 3: duplicate",
            ),
            ("/a 0 100644 1 0 0 0 0.0 - - -\n", "dump line 1: first line"),
            ("/ 0 40755 1 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 1.2.3 - - -\n", "dump line 2: MTIME"),
            ("/ 0 40755 1 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - zz\n", "dump line 2: DIGEST"),
            (
                "/ 0 40755 1 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - - a=1 a=2\n",
                "dump line 2: xattr a appears twice",
            ),
            ("/ 0 40755 1 0 0 0 0.0 - - -\n/x 3 100644 1 0 0 0 0.0 - ab -\n", "dump line 2: /x: SIZE 3"),
            ("/ 0 40755 1 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - \\q -\n", "dump line 2: CONTENT: bad escape"),
            (
                "/ 0 40755 1 0 0 0 0.0 - - -\n/x 0 @100644 1 0 0 0 0.0 /y - -\n",
                "dump line 2: hardlink target /y does not exist",
            ),
            ("", "dump is empty"),
        ];
        for (dump, want) in cases {
            let e = parse_str(dump, false).unwrap_err();
            assert!(e.to_string().starts_with(want), "{dump:?}: {e}");
        }
    }
}
