//! tar-split NDJSON (SPEC §3.6.6): the raw tar bytes of a layer minus file contents, one JSON
//! object per line. Read as a stream, one entry at a time.

use std::io::{BufRead, Read};

use base64::Engine as _;
use serde::Deserialize;

use super::sha256x2::{update_both, Sha256};
use crate::{Error, Result};

/// Longest NDJSON line accepted: a segment holds tar headers (PAX records included), so a line
/// this long is hostile, not a layer.
pub const MAX_LINE: usize = 64 << 20;

/// One tar-split entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarSplitEntry {
    /// A tar member: its name (raw bytes) and content size; the content itself is not in tar-split.
    File { name: Vec<u8>, size: u64, position: u64 },
    /// Raw tar bytes: headers, padding, the end-of-archive blocks.
    Segment { payload: Vec<u8>, position: u64 },
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    entry_type: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    position: i64,
}

/// Iterates the entries of a tar-split stream.
pub struct TarSplitReader<R> {
    input: R,
    line: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> TarSplitReader<R> {
    pub fn new(input: R) -> Self {
        TarSplitReader { input, line: Vec::new(), line_no: 0 }
    }

    /// The next entry, `None` at the end of the stream.
    pub fn next_entry(&mut self) -> Result<Option<TarSplitEntry>> {
        loop {
            self.line.clear();
            let n = self
                .input
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io("reading tar-split", e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            if self.line.len() > MAX_LINE {
                return Err(Error::limit(format!("tar-split line {} is longer than {MAX_LINE} bytes", self.line_no)));
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return self.decode().map(Some);
        }
    }

    fn decode(&self) -> Result<TarSplitEntry> {
        let at = || format!("tar-split line {}", self.line_no);
        let raw: RawEntry = serde_json::from_slice(&self.line).map_err(|e| Error::format(format!("{}: {e}", at())))?;
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| Error::format(format!("{}: invalid base64: {e}", at())))
        };
        let position =
            u64::try_from(raw.position).map_err(|_| Error::format(format!("{}: negative position", at())))?;
        match raw.entry_type {
            1 => {
                let name = match (raw.name_raw, raw.name) {
                    (Some(r), _) => b64(&r)?,
                    (None, Some(n)) => n.into_bytes(),
                    (None, None) => return Err(Error::format(format!("{}: file entry without a name", at()))),
                };
                let size = u64::try_from(raw.size).map_err(|_| Error::format(format!("{}: negative size", at())))?;
                Ok(TarSplitEntry::File { name, size, position })
            }
            2 => {
                let payload = b64(raw.payload.as_deref().unwrap_or(""))?;
                Ok(TarSplitEntry::Segment { payload, position })
            }
            t => Err(Error::format(format!("{}: unexpected tar-split entry type {t}", at()))),
        }
    }
}

/// The size of the tar stream a tar-split describes (`tarSizeFromTarSplit`).
pub fn tar_size(input: impl BufRead) -> Result<u64> {
    let mut r = TarSplitReader::new(input);
    let mut total: u64 = 0;
    while let Some(e) = r.next_entry()? {
        let n = match e {
            TarSplitEntry::File { size, .. } => size,
            TarSplitEntry::Segment { payload, .. } => payload.len() as u64,
        };
        total = total.checked_add(n).ok_or_else(|| Error::format("tar-split sizes overflow"))?;
    }
    Ok(total)
}

/// Re-assembles the original tar stream from a tar-split and the file contents, writing it to
/// `out` and returning its sha256 (the layer's DiffID) and size. `open` is asked for the content of
/// each member that has data (by raw tar name, with its size) and must yield exactly that many bytes.
///
/// The tar-split's per-file CRC-64 is not checked: the DiffID covers every byte, and callers compare
/// it with the expected one.
pub fn reassemble<R: Read>(
    tar_split: impl BufRead,
    mut open: impl FnMut(&[u8], u64) -> Result<R>,
    out: &mut impl std::io::Write,
) -> Result<([u8; 32], u64)> {
    reassemble_checked(tar_split, |name, size| Ok((open(name, size)?, None)), out)
}

/// [`reassemble`], where `open` may also give the sha256 that a member's content must have: that
/// content is hashed beside the tar ([`sha256x2::update_both`]) and a mismatch is an error naming
/// the member (a pull checks the contents it did not check as it wrote them).
pub fn reassemble_checked<R: Read>(
    tar_split: impl BufRead,
    mut open: impl FnMut(&[u8], u64) -> Result<(R, Option<[u8; 32]>)>,
    out: &mut impl std::io::Write,
) -> Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 256 << 10];
    let mut r = TarSplitReader::new(tar_split);
    while let Some(entry) = r.next_entry()? {
        match entry {
            TarSplitEntry::Segment { payload, .. } => {
                hasher.update(&payload);
                out.write_all(&payload).map_err(|e| Error::io("write tar stream", e))?;
                total += payload.len() as u64;
            }
            TarSplitEntry::File { size: 0, .. } => {}
            TarSplitEntry::File { name, size, .. } => {
                let shown = String::from_utf8_lossy(&name).into_owned();
                let (src, want) = open(&name, size)?;
                let mut src = src.take(size);
                let mut content = want.map(|_| Sha256::new());
                let mut left = size;
                while left > 0 {
                    let n = src.read(&mut buf).map_err(|e| Error::io(format!("read content of {shown:?}"), e))?;
                    if n == 0 {
                        return Err(Error::format(format!(
                            "content of {shown:?} is {} bytes short of the {size} bytes tar-split expects",
                            left
                        )));
                    }
                    match content.as_mut() {
                        Some(c) => update_both(&mut hasher, c, &buf[..n]),
                        None => hasher.update(&buf[..n]),
                    }
                    out.write_all(&buf[..n]).map_err(|e| Error::io("write tar stream", e))?;
                    left -= n as u64;
                }
                if let (Some(c), Some(want)) = (content, want) {
                    let got = c.finalize();
                    if got != want {
                        return Err(Error::new(
                            crate::ErrorKind::Verification,
                            format!(
                                "file {shown:?}: checksum mismatch: the TOC says sha256:{} ({size} bytes), the data is sha256:{} ({size} bytes)",
                                crate::source::hex(&want),
                                crate::source::hex(&got)
                            ),
                        ));
                    }
                }
                total += size;
            }
        }
    }
    Ok((hasher.finalize(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_segments_and_raw_names() {
        let input = br#"{"type":2,"payload":"AAE=","position":0}
{"type":1,"name":"a","size":2,"payload":"YTMgAAAAAAA=","position":1}

{"type":1,"name":"ignored","name_raw":"/w==","payload":null,"position":2}
"#;
        let mut r = TarSplitReader::new(&input[..]);
        assert_eq!(r.next_entry().unwrap(), Some(TarSplitEntry::Segment { payload: vec![0, 1], position: 0 }));
        assert_eq!(r.next_entry().unwrap(), Some(TarSplitEntry::File { name: b"a".to_vec(), size: 2, position: 1 }));
        assert_eq!(r.next_entry().unwrap(), Some(TarSplitEntry::File { name: vec![0xff], size: 0, position: 2 }));
        assert_eq!(r.next_entry().unwrap(), None);
        assert_eq!(tar_size(&input[..]).unwrap(), 4);

        let mut out = Vec::new();
        let (digest, n) = reassemble(
            &input[..],
            |name, size| {
                assert_eq!((name, size), (&b"a"[..], 2));
                Ok(&b"xyz"[..])
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, vec![0, 1, b'x', b'y']);
        assert_eq!(n, 4);
        use sha2::Digest;
        assert_eq!(digest, <[u8; 32]>::from(sha2::Sha256::digest([0, 1, b'x', b'y'])));
        let e = reassemble(&input[..], |_, _| Ok(&b"x"[..]), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("1 bytes short"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let e = tar_size(&b"{\"type\":2,\"payload\":\"\"}\n{\"type\":3}\n"[..]).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = tar_size(&b"{\"type\":2,\"payload\":\"!!\"}\n"[..]).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        assert!(tar_size(&b"not json\n"[..]).is_err());
    }
}
