//! The TOC JSON (SPEC §3.6) and tar-split NDJSON (§3.6.6) of a converted layer, in
//! containers/storage's formats, written while the tar streams by.
//!
//! The TOC is what containers/storage's convert path stores (`NoCompression` writer, §3.7):
//! payload offsets are tar stream offsets, `tarSplitDigest` is the sha256 of the (uncompressed)
//! tar-split. Files are described as one chunk each (no rollsum chunk entries).

use std::io::Write;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::image::Mtime;
use crate::source::crc64::Crc64;
use crate::source::hex;
use crate::source::tar::{EntryType, Header};
use crate::{Error, Result};

/// Appends `s` as a JSON string the way Go's `encoding/json` does (HTML-safe escaping, invalid
/// UTF-8 as U+FFFD).
pub fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                }
                c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        // Go replaces each invalid byte by U+FFFD.
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `time.RFC3339Nano` in UTC: fraction without trailing zeros, `Z` zone.
pub fn rfc3339_nano(t: Mtime) -> String {
    let days = t.sec.div_euclid(86_400);
    let secs = t.sec.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let mut s = format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if t.nsec != 0 {
        let frac = format!("{:09}", t.nsec);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn toc_type(t: EntryType) -> &'static str {
    match t {
        EntryType::Regular | EntryType::GlobalHeader => "reg",
        EntryType::Hardlink => "hardlink",
        EntryType::Symlink => "symlink",
        EntryType::Char => "char",
        EntryType::Block => "block",
        EntryType::Directory => "dir",
        EntryType::Fifo => "fifo",
    }
}

/// Appends `,"k":v` unless `v` is zero (Go's `omitempty`).
pub(crate) fn push_num(o: &mut Vec<u8>, k: &str, v: i128) {
    if v != 0 {
        o.extend_from_slice(format!(",\"{k}\":{v}").as_bytes());
    }
}

/// Appends the start of `h`'s TOC entry (`minimal.FileMetadata`, fields in Go's order) up to and
/// including its xattrs, without the closing brace: the digest and offset fields follow.
pub(crate) fn push_entry_head(o: &mut Vec<u8>, h: &Header) {
    o.extend_from_slice(b"{\"type\":\"");
    o.extend_from_slice(toc_type(h.entry_type).as_bytes());
    o.extend_from_slice(b"\",\"name\":");
    push_json_str(o, &h.name);
    if !h.link_name.is_empty() {
        o.extend_from_slice(b",\"linkName\":");
        push_json_str(o, &h.link_name);
    }
    push_num(o, "mode", h.mode as i128);
    push_num(o, "size", h.size as i128);
    push_num(o, "uid", h.uid as i128);
    push_num(o, "gid", h.gid as i128);
    let time = |o: &mut Vec<u8>, k: &str, t: Option<Mtime>| {
        // Go omits only the zero time.Time (year 1), which tar times never are.
        if let Some(t) = t {
            o.extend_from_slice(format!(",\"{k}\":\"{}\"", rfc3339_nano(t)).as_bytes());
        }
    };
    time(o, "modtime", Some(h.mtime));
    time(o, "accesstime", h.atime);
    time(o, "changetime", h.ctime);
    push_num(o, "devMajor", h.dev_major as i128);
    push_num(o, "devMinor", h.dev_minor as i128);
    if !h.xattrs.is_empty() {
        o.extend_from_slice(b",\"xattrs\":{");
        for (i, (k, v)) in h.xattrs.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            push_json_str(o, k);
            o.push(b':');
            push_json_str(o, base64::engine::general_purpose::STANDARD.encode(v).as_bytes());
        }
        o.push(b'}');
    }
}

/// Builds the TOC JSON, one entry per tar entry, in tar order.
pub struct TocWriter {
    out: Vec<u8>,
    entries: u64,
}

impl Default for TocWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TocWriter {
    pub fn new() -> TocWriter {
        TocWriter { out: b"{\"version\":1,\"entries\":[".to_vec(), entries: 0 }
    }

    /// Bytes of TOC JSON so far.
    pub fn len(&self) -> u64 {
        self.out.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Adds the entry for `h`; `digest` is the content sha256 for regular files with content.
    pub fn add(&mut self, h: &Header, digest: Option<&[u8; 32]>) {
        if h.entry_type == EntryType::GlobalHeader {
            return;
        }
        let o = &mut self.out;
        if self.entries > 0 {
            o.push(b',');
        }
        self.entries += 1;
        push_entry_head(o, h);
        if let Some(d) = digest {
            o.extend_from_slice(format!(",\"digest\":\"sha256:{}\"", hex(d)).as_bytes());
            push_num(o, "offset", h.data_offset as i128);
            push_num(o, "endOffset", (h.data_offset + h.payload_len()) as i128);
        }
        o.push(b'}');
    }

    /// The finished TOC JSON.
    pub fn finish(mut self, tar_split_digest: &[u8; 32]) -> Vec<u8> {
        if self.entries == 0 {
            self.out.truncate(self.out.len() - 1);
            self.out.extend_from_slice(b"null");
        } else {
            self.out.push(b']');
        }
        self.out.extend_from_slice(format!(",\"tarSplitDigest\":\"sha256:{}\"}}", hex(tar_split_digest)).as_bytes());
        self.out
    }
}

/// Writes tar-split NDJSON (vbatts/tar-split `storage.Entry` lines) to a sink, hashing it.
pub struct TarSplitWriter<W: Write> {
    out: W,
    hasher: Sha256,
    position: u64,
    line: Vec<u8>,
    uncompressed: u64,
}

impl<W: Write> TarSplitWriter<W> {
    pub fn new(out: W) -> Self {
        TarSplitWriter { out, hasher: Sha256::new(), position: 0, line: Vec::new(), uncompressed: 0 }
    }

    fn emit(&mut self) -> Result<()> {
        self.line.push(b'\n');
        self.hasher.update(&self.line);
        self.uncompressed += self.line.len() as u64;
        self.out.write_all(&self.line).map_err(|e| Error::io("write tar-split", e))?;
        self.line.clear();
        self.position += 1;
        Ok(())
    }

    /// A segment of raw tar bytes (headers, padding, end blocks). Empty segments are skipped.
    pub fn segment(&mut self, raw: &[u8]) -> Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        self.line.extend_from_slice(b"{\"type\":2,\"payload\":\"");
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        self.line.extend_from_slice(b64.as_bytes());
        self.line.extend_from_slice(format!("\",\"position\":{}}}", self.position).as_bytes());
        self.emit()
    }

    /// A file entry: name (or `name_raw` for non-UTF-8 names), size and CRC-64 of the payload.
    pub fn file(&mut self, name: &[u8], size: u64, crc: Option<&Crc64>) -> Result<()> {
        self.line.extend_from_slice(b"{\"type\":1");
        if !name.is_empty() {
            if std::str::from_utf8(name).is_ok() {
                self.line.extend_from_slice(b",\"name\":");
                push_json_str(&mut self.line, name);
            } else {
                self.line.extend_from_slice(b",\"name_raw\":\"");
                self.line.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(name).as_bytes());
                self.line.push(b'"');
            }
        }
        if size != 0 {
            self.line.extend_from_slice(format!(",\"size\":{size}").as_bytes());
        }
        match crc {
            Some(c) => {
                self.line.extend_from_slice(b",\"payload\":\"");
                self.line.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(c.sum()).as_bytes());
                self.line.push(b'"');
            }
            None => self.line.extend_from_slice(b",\"payload\":null"),
        }
        self.line.extend_from_slice(format!(",\"position\":{}}}", self.position).as_bytes());
        self.emit()
    }

    /// Ends the stream: the sink, the sha256 and the size of the NDJSON.
    pub fn finish(self) -> (W, [u8; 32], u64) {
        (self.out, self.hasher.finalize().into(), self.uncompressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_like_go() {
        assert_eq!(rfc3339_nano(Mtime { sec: 1704067200, nsec: 0 }), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(Mtime { sec: 1714979289, nsec: 123456789 }), "2024-05-06T07:08:09.123456789Z");
        assert_eq!(rfc3339_nano(Mtime { sec: -302486400, nsec: 0 }), "1960-06-01T00:00:00Z");
        assert_eq!(rfc3339_nano(Mtime { sec: 1, nsec: 500_000_000 }), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn json_strings_like_go() {
        let mut o = Vec::new();
        push_json_str(&mut o, b"a\"b\\c\nd<&>\x01\xff\xe9");
        assert_eq!(String::from_utf8(o).unwrap(), r#""a\"b\\c\nd\u003c\u0026\u003e\u0001\ufffd\ufffd""#);
    }
}
