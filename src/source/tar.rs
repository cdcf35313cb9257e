//! A small streaming tar reader (ustar, GNU long names/links, PAX) that hands out every raw byte.
//!
//! Why not the `tar` crate: converting a layer needs, in one pass and without seeking, (1) every
//! header and padding byte exactly as read, split at the same places as Go's `archive/tar` with
//! `RawAccounting` (the tar-split segments, SPEC §3.6.6), (2) the stream offset of each payload
//! (TOC `offset`), (3) explicit limits on names, PAX records and xattrs with errors that name the
//! entry, and (4) Go's reading rules (header-only types carry no payload whatever their size
//! field says; PAX times with sign and fraction). The `tar` crate hides the raw header bytes of
//! extension records and padding, so the tar-split could not be reproduced byte for byte.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use crate::image::Mtime;
use crate::{Error, Result};

pub const BLOCK: usize = 512;

/// Limits that bound the memory one entry's metadata can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarLimits {
    /// Longest entry name or link target, in bytes.
    pub max_name_len: usize,
    /// Largest PAX extended header or GNU long-name record, in bytes.
    pub max_extension_len: u64,
    /// Most xattrs on one entry.
    pub max_xattrs: usize,
    /// Largest xattr value, in bytes (Linux `XATTR_SIZE_MAX`).
    pub max_xattr_value: usize,
    /// Longest xattr name, in bytes (Linux `XATTR_NAME_MAX`).
    pub max_xattr_name: usize,
}

impl Default for TarLimits {
    fn default() -> Self {
        TarLimits {
            max_name_len: 4096,
            max_extension_len: 1 << 20,
            max_xattrs: 128,
            max_xattr_value: 65536,
            max_xattr_name: 255,
        }
    }
}

/// The type of a tar entry (after PAX/GNU extension headers are folded in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Regular,
    Hardlink,
    Symlink,
    Char,
    Block,
    Directory,
    Fifo,
    /// A PAX global header ('g'): returned as an entry, as Go's reader does, and otherwise ignored.
    GlobalHeader,
}

impl EntryType {
    /// Types whose payload is always empty, whatever the size field says (Go `isHeaderOnlyType`).
    pub fn is_header_only(self) -> bool {
        matches!(
            self,
            EntryType::Hardlink
                | EntryType::Symlink
                | EntryType::Char
                | EntryType::Block
                | EntryType::Directory
                | EntryType::Fifo
        )
    }
}

/// One entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as stored (PAX `path` or GNU long name when present), raw bytes.
    pub name: Vec<u8>,
    /// Hardlink or symlink target, raw.
    pub link_name: Vec<u8>,
    pub entry_type: EntryType,
    /// The header's mode field, as stored (Go `Header.Mode`).
    pub mode: i64,
    pub uid: u32,
    pub gid: u32,
    /// The size field (PAX `size` when present). For header-only types the payload is empty anyway.
    pub size: u64,
    pub mtime: Mtime,
    pub atime: Option<Mtime>,
    pub ctime: Option<Mtime>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.*` records, sorted by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Offset of the payload in the uncompressed stream.
    pub data_offset: u64,
    /// 0-based index of this entry (extension headers are not counted).
    pub index: u64,
}

impl Header {
    /// Bytes of payload that follow this header in the stream.
    pub fn payload_len(&self) -> u64 {
        if self.entry_type.is_header_only() {
            0
        } else {
            self.size
        }
    }

    /// The name for error messages.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Reads tar entries one by one from an uncompressed stream.
pub struct TarReader<R> {
    inner: R,
    limits: TarLimits,
    offset: u64,
    /// Raw header and padding bytes not yet taken (tar-split segments).
    raw: Vec<u8>,
    remaining: u64,
    padding: usize,
    index: u64,
    current: String,
    at_end: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, limits: TarLimits) -> TarReader<R> {
        TarReader {
            inner,
            limits,
            offset: 0,
            raw: Vec::with_capacity(4096),
            remaining: 0,
            padding: 0,
            index: 0,
            current: String::new(),
            at_end: false,
        }
    }

    /// The underlying stream (after the end of the archive).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes consumed from the stream so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The raw bytes (headers, extension records, padding, end blocks) read since the last call.
    pub fn take_raw(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.raw, Vec::with_capacity(4096))
    }

    /// The raw bytes read since the last call, without giving up the buffer.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn clear_raw(&mut self) {
        self.raw.clear();
    }

    fn where_(&self) -> String {
        if self.current.is_empty() {
            format!("tar entry {} at offset {}", self.index, self.offset)
        } else {
            format!("tar entry {} ({:?})", self.index, self.current)
        }
    }

    /// Reads exactly `buf.len()` bytes, or fails naming `what` as truncated.
    fn read_exact_or(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(Error::format(format!(
                        "{}: stream ends inside {what} (truncated layer: {} of {} bytes)",
                        self.where_(),
                        filled,
                        buf.len()
                    )))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::format(format!("{}: reading {what}: {e}", self.where_()))),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads one block; `None` at a clean end of stream.
    fn read_block(&mut self, blk: &mut [u8; BLOCK]) -> Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut blk[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(Error::format(format!(
                        "{}: stream ends inside a header block (truncated layer)",
                        self.where_()
                    )))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::format(format!("{}: reading header: {e}", self.where_()))),
            }
        }
        self.offset += BLOCK as u64;
        Ok(true)
    }

    /// Reads payload bytes of the current entry into `buf`; 0 when the payload is done.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(Error::format(format!(
                        "{}: stream ends inside file data ({} bytes missing: truncated layer or lying size field)",
                        self.where_(),
                        self.remaining
                    )))
                }
                Ok(n) => {
                    self.remaining -= n as u64;
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::format(format!("{}: reading file data: {e}", self.where_()))),
            }
        }
    }

    /// Payload bytes of the current entry available without copying (at most what is left of
    /// the payload); empty when the payload is done. Mark them used with [`Self::consume_data`].
    pub fn data_chunk(&mut self) -> Result<&[u8]>
    where
        R: BufRead,
    {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        let msg = |r: &Self| format!("{}: stream ends inside file data", r.where_());
        let avail = match self.inner.fill_buf() {
            Ok(a) => a.len(),
            Err(e) => return Err(Error::format(format!("{}: {e}", msg(self)))),
        };
        if avail == 0 {
            return Err(Error::format(format!(
                "{} ({remaining} bytes missing: truncated layer or lying size field)",
                msg(self)
            )));
        }
        let n = (avail as u64).min(remaining) as usize;
        let buf = self.inner.fill_buf().map_err(|e| Error::format(e.to_string()))?;
        Ok(&buf[..n])
    }

    /// Marks `n` bytes returned by [`Self::data_chunk`] as used.
    pub fn consume_data(&mut self, n: usize)
    where
        R: BufRead,
    {
        self.inner.consume(n);
        self.remaining -= n as u64;
        self.offset += n as u64;
    }

    /// Skips whatever payload of the current entry is left (not recorded as raw bytes, as in Go).
    fn skip_data(&mut self) -> Result<()> {
        let mut buf = [0u8; 8192];
        while self.remaining > 0 {
            self.read_data(&mut buf)?;
        }
        Ok(())
    }

    /// The next entry, or `None` after the end-of-archive marker. The previous entry's unread
    /// payload is skipped.
    pub fn next_header(&mut self) -> Result<Option<Header>> {
        if self.at_end {
            return Ok(None);
        }
        self.skip_data()?;
        if self.padding > 0 {
            let mut pad = [0u8; BLOCK];
            let n = self.padding;
            self.read_exact_or(&mut pad[..n], "padding after file data")?;
            self.raw.extend_from_slice(&pad[..n]);
            self.padding = 0;
        }
        self.current.clear();

        let mut pax: Option<Vec<u8>> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut blk = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut blk)? {
                return Err(Error::format(format!(
                    "{}: stream ends without the end-of-archive marker (truncated layer)",
                    self.where_()
                )));
            }
            self.raw.extend_from_slice(&blk);
            if blk.iter().all(|&b| b == 0) {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(Error::format(format!("{}: extension header not followed by an entry", self.where_())));
                }
                // End of archive: a second zero block should follow (a lone one at EOF is accepted, as Go does).
                if self.read_block(&mut blk)? {
                    self.raw.extend_from_slice(&blk);
                    if blk.iter().any(|&b| b != 0) {
                        return Err(Error::format(format!(
                            "{}: data after a single zero block (corrupt end-of-archive marker)",
                            self.where_()
                        )));
                    }
                }
                self.at_end = true;
                return Ok(None);
            }
            self.verify_checksum(&blk)?;
            let typeflag = blk[156];
            let size = self.numeric(&blk[124..136], "size")?;
            match typeflag {
                b'x' | b'L' | b'K' => {
                    if size > self.limits.max_extension_len {
                        return Err(Error::limit(format!(
                            "{}: extension header of {size} bytes exceeds the limit of {}",
                            self.where_(),
                            self.limits.max_extension_len
                        )));
                    }
                    let mut data = vec![0u8; size as usize];
                    self.read_exact_or(&mut data, "extension header data")?;
                    self.raw.extend_from_slice(&data);
                    let pad = pad_len(size);
                    let mut padb = [0u8; BLOCK];
                    self.read_exact_or(&mut padb[..pad], "extension header padding")?;
                    self.raw.extend_from_slice(&padb[..pad]);
                    match typeflag {
                        b'x' => pax = Some(data),
                        b'L' => long_name = Some(trim_nul(data)),
                        _ => long_link = Some(trim_nul(data)),
                    }
                    continue;
                }
                _ => {}
            }
            let mut h = self.parse_header(&blk, typeflag, size)?;
            if let Some(n) = long_name {
                h.name = n;
            }
            if let Some(l) = long_link {
                h.link_name = l;
            }
            if let Some(records) = pax {
                self.current = String::from_utf8_lossy(&h.name).into_owned();
                self.apply_pax(&mut h, &records)?;
            }
            // Old-style directories: a regular entry whose name ends in '/' (Go does the same).
            if typeflag == 0 && h.name.ends_with(b"/") {
                h.entry_type = EntryType::Directory;
            }
            self.current = String::from_utf8_lossy(&h.name).into_owned();
            if h.name.len() > self.limits.max_name_len || h.link_name.len() > self.limits.max_name_len {
                return Err(Error::limit(format!(
                    "{}: name or link target longer than {} bytes",
                    self.where_(),
                    self.limits.max_name_len
                )));
            }
            if h.name.contains(&0) || h.link_name.contains(&0) {
                return Err(Error::format(format!("{}: NUL byte in name or link target", self.where_())));
            }
            h.data_offset = self.offset;
            h.index = self.index;
            self.remaining = h.payload_len();
            self.padding = pad_len(self.remaining);
            self.index += 1;
            return Ok(Some(h));
        }
    }

    /// Reads the rest of the stream after the end-of-archive marker in chunks of at most
    /// `chunk` bytes (trailing padding, kept for tar-split and the DiffID).
    pub fn read_trailer(&mut self, chunk: usize, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut buf = vec![0u8; chunk.max(1)];
        loop {
            let n = match self.inner.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::format(format!("after the end-of-archive marker: {e}"))),
            };
            self.offset += n as u64;
            sink(&buf[..n])?;
        }
    }

    fn verify_checksum(&self, blk: &[u8; BLOCK]) -> Result<()> {
        let stored = self.numeric(&blk[148..156], "checksum")?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in blk.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += b as u64;
            signed += (b as i8) as i64;
        }
        if stored != unsigned && stored as i64 != signed {
            return Err(Error::format(format!(
                "{}: bad header checksum (stored {stored:o}, computed {unsigned:o}): corrupt or not a tar stream",
                self.where_()
            )));
        }
        Ok(())
    }

    fn numeric(&self, field: &[u8], what: &str) -> Result<u64> {
        let v = parse_numeric(field).ok_or_else(|| {
            Error::format(format!("{}: invalid {what} field {:?}", self.where_(), String::from_utf8_lossy(field)))
        })?;
        u64::try_from(v).map_err(|_| Error::format(format!("{}: negative {what} field", self.where_())))
    }

    fn parse_header(&self, blk: &[u8; BLOCK], typeflag: u8, size: u64) -> Result<Header> {
        let entry_type = match typeflag {
            b'0' | 0 | b'7' => EntryType::Regular,
            b'1' => EntryType::Hardlink,
            b'2' => EntryType::Symlink,
            b'3' => EntryType::Char,
            b'4' => EntryType::Block,
            b'5' => EntryType::Directory,
            b'6' => EntryType::Fifo,
            b'g' => EntryType::GlobalHeader,
            b'S' => return Err(Error::unsupported(format!("{}: GNU sparse entries are not supported", self.where_()))),
            t => {
                return Err(Error::unsupported(format!(
                    "{}: unsupported tar entry type {:?}",
                    self.where_(),
                    t as char
                )))
            }
        };
        let magic = &blk[257..265];
        let ustar = &magic[..6] == b"ustar\0";
        let mut name = cstr(&blk[0..100]).to_vec();
        if ustar {
            let prefix = cstr(&blk[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let mode = parse_numeric(&blk[100..108])
            .ok_or_else(|| Error::format(format!("{}: invalid mode field", self.where_())))?;
        let uid = self.id(&blk[108..116], "uid")?;
        let gid = self.id(&blk[116..124], "gid")?;
        let mtime = parse_numeric(&blk[136..148])
            .ok_or_else(|| Error::format(format!("{}: invalid mtime field", self.where_())))?;
        let (dev_major, dev_minor) = if matches!(entry_type, EntryType::Char | EntryType::Block) {
            (self.dev(&blk[329..337], "devmajor")?, self.dev(&blk[337..345], "devminor")?)
        } else {
            (0, 0)
        };
        // GNU headers keep atime/ctime where ustar has the prefix (Go reads them when the
        // field is not empty).
        let (atime, ctime) = if magic == b"ustar  \0" {
            let field = |r: std::ops::Range<usize>| {
                (blk[r.start] != 0).then(|| Mtime { sec: parse_numeric(&blk[r]).unwrap_or(0), nsec: 0 })
            };
            (field(345..357), field(357..369))
        } else {
            (None, None)
        };
        Ok(Header {
            name,
            link_name: cstr(&blk[157..257]).to_vec(),
            entry_type,
            mode,
            uid,
            gid,
            size,
            mtime: Mtime { sec: mtime, nsec: 0 },
            atime,
            ctime,
            dev_major,
            dev_minor,
            xattrs: BTreeMap::new(),
            data_offset: 0,
            index: 0,
        })
    }

    fn id(&self, field: &[u8], what: &str) -> Result<u32> {
        let v = self.numeric(field, what)?;
        u32::try_from(v).map_err(|_| Error::format(format!("{}: {what} {v} does not fit in 32 bits", self.where_())))
    }

    fn dev(&self, field: &[u8], what: &str) -> Result<u32> {
        self.id(field, what)
    }

    fn apply_pax(&self, h: &mut Header, records: &[u8]) -> Result<()> {
        let mut rest = records;
        while !rest.is_empty() {
            let bad = || Error::format(format!("{}: malformed PAX record", self.where_()));
            let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
            let len: usize = std::str::from_utf8(&rest[..sp]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(bad());
            }
            let rec = &rest[sp + 1..len - 1];
            rest = &rest[len..];
            let eq = rec.iter().position(|&b| b == b'=').ok_or_else(bad)?;
            let (key, value) = (&rec[..eq], &rec[eq + 1..]);
            match key {
                b"path" => h.name = value.to_vec(),
                b"linkpath" => h.link_name = value.to_vec(),
                b"size" => h.size = self.pax_int(value, "size")?,
                b"uid" => h.uid = self.pax_id(value, "uid")?,
                b"gid" => h.gid = self.pax_id(value, "gid")?,
                b"mtime" => h.mtime = self.pax_time(value, "mtime")?,
                b"atime" => h.atime = Some(self.pax_time(value, "atime")?),
                b"ctime" => h.ctime = Some(self.pax_time(value, "ctime")?),
                _ if key.starts_with(b"SCHILY.xattr.") => {
                    let name = &key[b"SCHILY.xattr.".len()..];
                    if name.is_empty() || name.len() > self.limits.max_xattr_name {
                        return Err(Error::limit(format!(
                            "{}: xattr name of {} bytes (must be 1..={})",
                            self.where_(),
                            name.len(),
                            self.limits.max_xattr_name
                        )));
                    }
                    if value.len() > self.limits.max_xattr_value {
                        return Err(Error::limit(format!(
                            "{}: xattr {:?} value of {} bytes exceeds the limit of {}",
                            self.where_(),
                            String::from_utf8_lossy(name),
                            value.len(),
                            self.limits.max_xattr_value
                        )));
                    }
                    h.xattrs.insert(name.to_vec(), value.to_vec());
                    if h.xattrs.len() > self.limits.max_xattrs {
                        return Err(Error::limit(format!(
                            "{}: more than {} xattrs",
                            self.where_(),
                            self.limits.max_xattrs
                        )));
                    }
                }
                _ if key.starts_with(b"GNU.sparse.") => {
                    return Err(Error::unsupported(format!("{}: PAX sparse files are not supported", self.where_())))
                }
                _ => {} // uname, gname, comment, charset, other vendors' keys: not needed.
            }
        }
        Ok(())
    }

    fn pax_int(&self, v: &[u8], what: &str) -> Result<u64> {
        std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
            Error::format(format!("{}: invalid PAX {what} {:?}", self.where_(), String::from_utf8_lossy(v)))
        })
    }

    fn pax_id(&self, v: &[u8], what: &str) -> Result<u32> {
        let n = self.pax_int(v, what)?;
        u32::try_from(n)
            .map_err(|_| Error::format(format!("{}: PAX {what} {n} does not fit in 32 bits", self.where_())))
    }

    fn pax_time(&self, v: &[u8], what: &str) -> Result<Mtime> {
        parse_pax_time(v).ok_or_else(|| {
            Error::format(format!("{}: invalid PAX {what} {:?}", self.where_(), String::from_utf8_lossy(v)))
        })
    }
}

fn pad_len(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(n) = v.iter().position(|&b| b == 0) {
        v.truncate(n);
    }
    v
}

/// A numeric header field: octal (spaces and NULs around it allowed) or GNU base-256.
pub fn parse_numeric(field: &[u8]) -> Option<i64> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            // GNU base-256, two's complement (Go `parseNumeric`).
            let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut v: u64 = 0;
            for (i, &b) in field.iter().enumerate() {
                let mut c = b ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if v >> 56 > 0 {
                    return None;
                }
                v = (v << 8) | c as u64;
            }
            if v >> 63 > 0 {
                return None;
            }
            return Some(if inv == 0xff { !(v as i64) } else { v as i64 });
        }
    }
    let s = field.iter().position(|&b| b != b' ' && b != 0).map(|i| &field[i..]).unwrap_or(&[]);
    let end = s.iter().position(|&b| b == b' ' || b == 0).unwrap_or(s.len());
    let (digits, tail) = s.split_at(end);
    if tail.iter().any(|&b| b != b' ' && b != 0) {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((d - b'0') as i64)?;
    }
    Some(v)
}

/// A PAX time `[-]SEC[.FRACTION]` (Go `parsePAXTime`: the fraction has the sign of the seconds).
pub fn parse_pax_time(v: &[u8]) -> Option<Mtime> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let neg = int.starts_with('-');
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = digits.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += (b - b'0') as i64 * 10i64.pow(8 - i as u32);
    }
    if neg {
        // -S.F == -(S + F): seconds -S-1 and 1e9-F nanoseconds when F > 0.
        if nsec > 0 {
            Some(Mtime { sec: -secs - 1, nsec: (1_000_000_000 - nsec) as u32 })
        } else {
            Some(Mtime { sec: -secs, nsec: 0 })
        }
    } else {
        Some(Mtime { sec: secs, nsec: nsec as u32 })
    }
}

impl TarReader<super::LayerStream> {
    /// Hashes the next `n` payload bytes (at most what [`Self::data_chunk`] gave) into `content`
    /// in the same pass as the DiffID ([`super::LayerStream::hash_ahead`]); they are still to be
    /// consumed, with [`Self::consume_data`].
    pub fn hash_data(&mut self, n: usize, content: &mut crate::chunked::sha256x2::Sha256) {
        let n = (n as u64).min(self.remaining) as usize;
        self.inner.hash_ahead(n, content);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar header block for tests, with a correct checksum unless `bad_sum`.
    pub fn header(name: &str, typeflag: u8, size: u64, link: &str) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..107].copy_from_slice(b"0000644");
        b[108..115].copy_from_slice(b"0000000");
        b[116..123].copy_from_slice(b"0000000");
        b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        b[136..147].copy_from_slice(b"14544400200");
        b[156] = typeflag;
        b[157..157 + link.len()].copy_from_slice(link.as_bytes());
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        fix_sum(&mut b);
        b
    }

    pub fn fix_sum(b: &mut [u8; BLOCK]) {
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| x as u32).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }

    pub fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let mut out = header("PaxHeaders/x", b'x', data.len() as u64, "").to_vec();
        out.extend_from_slice(&data);
        out.resize(out.len() + pad_len(data.len() as u64), 0);
        out
    }

    pub fn file(name: &str, content: &[u8]) -> Vec<u8> {
        let mut out = header(name, b'0', content.len() as u64, "").to_vec();
        out.extend_from_slice(content);
        out.resize(out.len() + pad_len(content.len() as u64), 0);
        out
    }

    pub fn end() -> Vec<u8> {
        vec![0u8; 1024]
    }

    fn read_all(tar: &[u8]) -> Result<Vec<(Header, Vec<u8>)>> {
        let mut r = TarReader::new(tar, TarLimits::default());
        let mut out = Vec::new();
        while let Some(h) = r.next_header()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((h, data));
        }
        Ok(out)
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"0009"), None);
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]), Some(-2));
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1714979289.123456789"), Some(Mtime { sec: 1714979289, nsec: 123456789 }));
        assert_eq!(parse_pax_time(b"-302486400"), Some(Mtime { sec: -302486400, nsec: 0 }));
        assert_eq!(parse_pax_time(b"-1.5"), Some(Mtime { sec: -2, nsec: 500_000_000 }));
        assert_eq!(parse_pax_time(b"1.0000000001"), Some(Mtime { sec: 1, nsec: 0 }));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn reads_entries_payloads_and_raw_bytes() {
        let mut tar = Vec::new();
        tar.extend(pax(&[("path", b"long/name"), ("SCHILY.xattr.user.a", b"v\0\xff"), ("mtime", b"5.5")]));
        tar.extend(file("short", b"hello"));
        tar.extend(header("link", b'2', 0, "target"));
        tar.extend(end());
        let entries = read_all(&tar).unwrap();
        assert_eq!(entries.len(), 2);
        let (h, d) = &entries[0];
        assert_eq!(h.name, b"long/name");
        assert_eq!(d, b"hello");
        assert_eq!(h.xattrs.get(&b"user.a"[..]).map(|v| v.as_slice()), Some(&b"v\0\xff"[..]));
        assert_eq!(h.mtime, Mtime { sec: 5, nsec: 500_000_000 });
        assert_eq!(h.data_offset, 3 * 512);
        assert_eq!(entries[1].0.entry_type, EntryType::Symlink);
        assert_eq!(entries[1].0.link_name, b"target");

        // Raw bytes + payloads reassemble the stream exactly.
        let mut r = TarReader::new(&tar[..], TarLimits::default());
        let mut again = Vec::new();
        while r.next_header().unwrap().is_some() {
            again.extend(r.take_raw());
            let mut buf = [0u8; 7];
            loop {
                let n = r.read_data(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                again.extend_from_slice(&buf[..n]);
            }
        }
        again.extend(r.take_raw());
        assert_eq!(again, tar);
    }

    #[test]
    fn gnu_long_names() {
        let long = "d/".repeat(80) + "file";
        let mut tar = Vec::new();
        let mut l = header("././@LongLink", b'L', long.len() as u64 + 1, "");
        l[257..265].copy_from_slice(b"ustar  \0");
        fix_sum(&mut l);
        tar.extend(l);
        let mut data = long.as_bytes().to_vec();
        data.push(0);
        data.resize(512, 0);
        tar.extend(data);
        tar.extend(file("truncated-name", b"x"));
        tar.extend(end());
        let e = read_all(&tar).unwrap();
        assert_eq!(e[0].0.name, long.as_bytes());
    }

    #[test]
    fn hostile_inputs_are_clear_errors() {
        // Bad checksum.
        let mut h = header("a", b'0', 0, "");
        h[0] = b'b';
        let mut tar = h.to_vec();
        tar.extend(end());
        let e = read_all(&tar).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");

        // Truncated inside data; the message names the entry.
        let mut tar = file("victim", &[7u8; 600]);
        tar.truncate(512 + 100);
        let e = read_all(&tar).unwrap_err();
        assert!(e.to_string().contains("victim") && e.to_string().contains("truncated"), "{e}");

        // Size field lies (larger than the stream).
        let mut tar = header("liar", b'0', 1 << 30, "").to_vec();
        tar.extend(end());
        let e = read_all(&tar).unwrap_err();
        assert!(e.to_string().contains("liar"), "{e}");

        // No end-of-archive marker.
        let e = read_all(&file("a", b"x")).unwrap_err();
        assert!(e.to_string().contains("end-of-archive"), "{e}");

        // Huge PAX header is refused before allocating.
        let mut tar = header("PaxHeaders/x", b'x', 1 << 32, "").to_vec();
        tar.extend(end());
        let e = read_all(&tar).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::LimitExceeded, "{e}");

        // Malformed PAX record.
        let mut tar = header("PaxHeaders/x", b'x', 10, "").to_vec();
        let mut d = b"99 path=x\n".to_vec();
        d.resize(512, 0);
        tar.extend(d);
        tar.extend(file("a", b""));
        tar.extend(end());
        assert!(read_all(&tar).unwrap_err().to_string().contains("PAX"));

        // Too many xattrs.
        let names: Vec<String> = (0..200).map(|i| format!("SCHILY.xattr.user.{i}")).collect();
        let recs: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
        let mut tar = pax(&recs);
        tar.extend(file("a", b""));
        tar.extend(end());
        assert_eq!(read_all(&tar).unwrap_err().kind(), crate::ErrorKind::LimitExceeded);

        // Not a tar at all.
        let junk = vec![b'j'; 2048];
        assert!(read_all(&junk).is_err());

        // Sparse is refused clearly.
        let mut tar = header("s", b'S', 0, "").to_vec();
        tar.extend(end());
        assert_eq!(read_all(&tar).unwrap_err().kind(), crate::ErrorKind::Unsupported);
    }

    #[test]
    fn header_only_types_have_no_payload() {
        // A directory with a size field: the next block is the next header (Go semantics).
        let mut tar = header("d/", b'5', 512, "").to_vec();
        tar.extend(file("d/f", b"abc"));
        tar.extend(end());
        let e = read_all(&tar).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0.size, 512);
        assert_eq!(e[1].1, b"abc");
    }
}
