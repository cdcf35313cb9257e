//! The TOC checked against the tar-split (containers/storage's `ensureTOCMatchesTarSplit` and
//! `tarSizeFromTarSplit`, SPEC §3.6.5). A pull builds the layer's tree from the TOC but computes its
//! DiffID (and `export` writes the tar) from the tar-split, whose segments hold the layer's own tar
//! headers: unless both describe the same entries with the same metadata, the mounted layer would
//! not be the layer its DiffID names.

use std::collections::HashMap;
use std::io::{BufRead, Cursor};

use super::tarsplit::{TarSplitEntry, TarSplitReader};
use super::toc::{Toc, TocEntry, TYPE_CHUNK};
use crate::image::Mtime;
use crate::source::tar::{EntryType, Header, TarLimits, TarReader, BLOCK};
use crate::{Error, Result};

/// The tar-split's file entries with the tar headers its segments hold, read up to its end or its
/// first error: the half of the check that needs no TOC, so that it can run while the TOC is parsed.
pub struct SplitHeaders {
    /// Each file entry's name, size and the header before it, in tar order.
    files: Vec<(Vec<u8>, u64, Header)>,
    /// What stopped the reading before the end, reported after the entries before it are checked
    /// (the order of a check that reads and compares entry by entry).
    failure: Option<Error>,
    tar_size: u64,
}

impl SplitHeaders {
    /// Reads a tar-split stream to its end. `toc_len`, the length of the TOC's JSON, bounds what
    /// is kept: each entry's name, link target and xattrs, and 20 bytes more, are in the TOC entry
    /// it must match (a tar-split read before its digest is checked could be anything).
    pub fn read_from(input: impl BufRead, toc_len: u64) -> SplitHeaders {
        let mut out = SplitHeaders { files: Vec::new(), failure: None, tar_size: 0 };
        if let Err(e) = out.read_entries(input, toc_len) {
            out.failure = Some(e);
        }
        out
    }

    fn read_entries(&mut self, input: impl BufRead, toc_len: u64) -> Result<()> {
        let mut reader = TarSplitReader::new(input);
        let mut kept = 0u64;
        // The raw bytes since the last file: the previous file's padding, then this entry's header
        // blocks (extension headers included).
        let mut raw: Vec<u8> = Vec::with_capacity(4 * BLOCK);
        while let Some(entry) = reader.next_entry()? {
            match entry {
                TarSplitEntry::Segment { payload, .. } => {
                    self.tar_size += payload.len() as u64;
                    raw.extend_from_slice(&payload);
                }
                TarSplitEntry::File { name, size, .. } => {
                    self.tar_size += size;
                    let header = header_before(&raw, &name)?;
                    raw.clear();
                    let xattrs: usize = header.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
                    kept += (name.len() + header.link_name.len() + xattrs + 20) as u64;
                    if kept > toc_len {
                        return Err(inconsistent(format!(
                            "the tar-split's entries up to {:?} hold more than its TOC of {toc_len} bytes",
                            String::from_utf8_lossy(&name)
                        )));
                    }
                    self.files.push((name, size, header));
                }
            }
        }
        Ok(())
    }
}

/// Checks that the tar-split's entries (read by [`SplitHeaders::read_from`]) and the TOC's
/// non-chunk entries are the same paths, each once, with the same metadata, and returns the size of
/// the tar the tar-split reassembles to.
///
/// Compared, as containers/storage does: type, link target, mode, owner, size, modification time,
/// device numbers and xattrs, the header parsed from the tar-split's raw segments against the TOC
/// entry of that name. Access and change times are not compared: the composefs image does not
/// keep them, and their encodings vary between tar writers (GNU, star, PAX) more than the rest.
pub fn check_headers_against_toc(toc: &Toc, split: SplitHeaders) -> Result<u64> {
    let mut pending: HashMap<&[u8], &TocEntry> = HashMap::with_capacity(toc.entries.len());
    for e in toc.entries.iter().filter(|e| e.entry_type != TYPE_CHUNK) {
        if pending.insert(e.name.as_bytes(), e).is_some() {
            return Err(Error::format(format!("TOC contains duplicate entries for path {:?}", e.name)));
        }
    }
    for (name, size, header) in &split.files {
        let Some(toc_entry) = pending.remove(name.as_slice()) else {
            return Err(inconsistent(format!(
                "tar-split contains an entry for {:?} missing in TOC",
                String::from_utf8_lossy(name)
            )));
        };
        if toc_entry.size != *size as i64 && toc_entry.size != 0 {
            return Err(inconsistent(format!(
                "size of {:?} is {} in the TOC but {size} in tar-split",
                toc_entry.name, toc_entry.size
            )));
        }
        compare(toc_entry, header)?;
    }
    if let Some(e) = split.failure {
        return Err(e);
    }
    if let Some(name) = pending.keys().next() {
        return Err(inconsistent(format!(
            "TOC contains entries not present in tar-split, incl. {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(split.tar_size)
}

fn inconsistent(what: String) -> Error {
    Error::format(format!("tar-split and TOC data is inconsistent: {what}"))
}

/// The tar header that `raw` (the segments before a tar-split file entry) ends with. Headers are
/// whole blocks and the padding before them is shorter than one, so they start at
/// `raw.len() % BLOCK`.
fn header_before(raw: &[u8], name: &[u8]) -> Result<Header> {
    let what = || format!("the tar header of tar-split entry {:?}", String::from_utf8_lossy(name));
    let mut tar = TarReader::new(Cursor::new(&raw[raw.len() % BLOCK..]), TarLimits::default());
    let header = loop {
        match tar.next_header().map_err(|e| e.context(what()))? {
            Some(h) if h.entry_type == EntryType::GlobalHeader => continue,
            Some(h) => break h,
            None => {
                return Err(inconsistent(format!(
                    "no tar header before tar-split entry {:?}",
                    String::from_utf8_lossy(name)
                )))
            }
        }
    };
    if header.name != name {
        return Err(inconsistent(format!(
            "tar-split entry {:?} follows the tar header of {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&header.name)
        )));
    }
    Ok(header)
}

/// The TOC entry against the tar header it must stand for (`ensureFileMetadataAttributesMatch`).
fn compare(e: &TocEntry, tar: &Header) -> Result<()> {
    let toc = e.header(0)?;
    let mismatch = |field: &str, toc_value: String, tar_value: String| {
        Err(inconsistent(format!(
            "TOC and tar-split metadata doesn't match for {:?}: {field} is {toc_value} in the TOC but {tar_value} in the tar header",
            e.name
        )))
    };
    // A V7 header's regular type with a trailing slash is a directory (as Go reads it).
    let tar_type = match tar.entry_type {
        EntryType::Regular if tar.name.ends_with(b"/") => EntryType::Directory,
        t => t,
    };
    if toc.entry_type != tar_type {
        return mismatch("the type", format!("{:?}", toc.entry_type), format!("{tar_type:?}"));
    }
    if toc.link_name != tar.link_name {
        return mismatch(
            "the link target",
            format!("{:?}", String::from_utf8_lossy(&toc.link_name)),
            format!("{:?}", String::from_utf8_lossy(&tar.link_name)),
        );
    }
    if toc.mode != tar.mode {
        return mismatch("the mode", format!("{:o}", toc.mode), format!("{:o}", tar.mode));
    }
    if (toc.uid, toc.gid) != (tar.uid, tar.gid) {
        return mismatch("the owner", format!("{}:{}", toc.uid, toc.gid), format!("{}:{}", tar.uid, tar.gid));
    }
    if tar_type == EntryType::Regular && toc.size != tar.size {
        return mismatch("the size", toc.size.to_string(), tar.size.to_string());
    }
    if time_or_none(e.modtime.as_ref().map(|_| toc.mtime)) != time_or_none(Some(tar.mtime)) {
        return mismatch("the mtime", format!("{:?}", toc.mtime), format!("{:?}", tar.mtime));
    }
    if matches!(tar_type, EntryType::Char | EntryType::Block)
        && (toc.dev_major, toc.dev_minor) != (tar.dev_major, tar.dev_minor)
    {
        return mismatch(
            "the device",
            format!("{}:{}", toc.dev_major, toc.dev_minor),
            format!("{}:{}", tar.dev_major, tar.dev_minor),
        );
    }
    if toc.xattrs != tar.xattrs {
        let names = |x: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>| {
            x.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>()
        };
        return mismatch(
            "the xattrs",
            format!("{:?} (values aside)", names(&toc.xattrs)),
            format!("{:?}", names(&tar.xattrs)),
        );
    }
    Ok(())
}

/// A time as containers/storage compares them: absent, Go's zero time and the Unix epoch are all
/// "no time" (its TOC writer did not always leave zero times out).
fn time_or_none(t: Option<Mtime>) -> Option<Mtime> {
    const GO_ZERO_TIME: i64 = -62_135_596_800;
    t.filter(|t| !((t.sec == 0 || t.sec == GO_ZERO_TIME) && t.nsec == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::writer::{compress, CompressOptions};
    use crate::chunked::{read_manifest, ReadOptions};
    use crate::source::tar::tests::{end, file, header, pax};
    use std::io::{BufReader, Seek, SeekFrom};

    /// The tar-split of `m`, read from its start.
    fn headers(m: &mut crate::chunked::Manifest, toc_len: u64) -> SplitHeaders {
        let split = m.tar_split.as_mut().unwrap();
        split.seek(SeekFrom::Start(0)).unwrap();
        SplitHeaders::read_from(BufReader::new(split), toc_len)
    }

    /// A layer with a file (xattr by PAX), a directory, a symlink, a hardlink and a device.
    fn layer() -> Vec<u8> {
        let mut tar = header("etc/", b'5', 0, "").to_vec();
        tar.extend(pax(&[("SCHILY.xattr.user.a", b"1")]));
        tar.extend(file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"));
        tar.extend(header("etc/link", b'2', 0, "passwd"));
        tar.extend(header("etc/hard", b'1', 0, "etc/passwd"));
        let mut dev = header("dev-null", b'3', 0, "");
        dev[329..336].copy_from_slice(b"0000001");
        dev[337..344].copy_from_slice(b"0000003");
        crate::source::tar::tests::fix_sum(&mut dev);
        tar.extend(dev);
        tar.extend(end());
        tar
    }

    /// The layer's TOC and decoded tar-split, as a pull reads them.
    fn manifest() -> crate::chunked::Manifest {
        let mut blob = Vec::new();
        let r = compress(Box::new(std::io::Cursor::new(layer())), &mut blob, &CompressOptions::default()).unwrap();
        read_manifest(blob.as_slice(), Some(&r.annotations), &ReadOptions::default()).unwrap()
    }

    fn check_with(change: impl Fn(&mut TocEntry)) -> Result<u64> {
        let mut m = manifest();
        for e in &mut m.toc.entries {
            change(e);
        }
        let split = headers(&mut m, u64::MAX);
        check_headers_against_toc(&m.toc, split)
    }

    #[test]
    fn an_honest_toc_matches_and_gives_the_tar_size() {
        assert_eq!(check_with(|_| {}).unwrap(), layer().len() as u64);
    }

    #[test]
    fn each_lie_of_the_toc_is_named() {
        let on = |name: &'static str, f: fn(&mut TocEntry)| {
            move |e: &mut TocEntry| {
                if e.name == name {
                    f(e)
                }
            }
        };
        type Change = Box<dyn Fn(&mut TocEntry)>;
        let cases: Vec<(&str, Change, &str)> = vec![
            ("mode", Box::new(on("etc/passwd", |e| e.mode = 0o4755)), "the mode is 4755 in the TOC but 644"),
            ("uid", Box::new(on("etc/passwd", |e| e.uid = 1000)), "the owner is 1000:0 in the TOC but 0:0"),
            ("type", Box::new(on("etc/link", |e| e.entry_type = "reg".into())), "the type"),
            ("link", Box::new(on("etc/link", |e| e.link_name = "/etc/shadow".into())), "the link target"),
            ("hardlink", Box::new(on("etc/hard", |e| e.link_name = "etc/link".into())), "the link target"),
            ("mtime", Box::new(on("etc/", |e| e.modtime = Some("2001-01-01T00:00:00Z".into()))), "the mtime"),
            ("device", Box::new(on("dev-null", |e| e.dev_minor = 5)), "the device is 1:5 in the TOC but 1:3"),
            ("xattr", Box::new(on("etc/passwd", |e| e.xattrs.clear())), "the xattrs"),
            ("size", Box::new(on("etc/passwd", |e| e.size += 1)), "size of \"etc/passwd\""),
            ("name", Box::new(on("etc/passwd", |e| e.name = "etc/shadow".into())), "missing in TOC"),
        ];
        for (what, change, needle) in cases {
            let e = check_with(change).expect_err(what);
            let msg = e.to_string();
            assert!(msg.contains("tar-split and TOC data is inconsistent") && msg.contains(needle), "{what}: {msg}");
        }
    }

    #[test]
    fn a_tar_split_holding_more_than_its_toc_could_is_refused_while_read() {
        let mut m = manifest();
        let toc_len = m.toc_json.len() as u64;
        let whole = headers(&mut m, u64::MAX);
        assert!(whole.failure.is_none() && whole.files.len() == 5);
        let e = headers(&mut m, 30).failure.expect("over the bound");
        assert!(e.to_string().contains("hold more than its TOC of 30 bytes"), "{e}");
        let honest = headers(&mut m, toc_len);
        assert!(honest.failure.is_none(), "{:?}", honest.failure);
        assert_eq!(check_headers_against_toc(&m.toc, honest).unwrap(), layer().len() as u64);
    }

    #[test]
    fn zero_and_epoch_times_count_as_no_time() {
        assert_eq!(time_or_none(Some(Mtime { sec: 0, nsec: 0 })), None);
        assert_eq!(time_or_none(Some(Mtime { sec: -62_135_596_800, nsec: 0 })), None);
        assert_eq!(time_or_none(Some(Mtime { sec: 1, nsec: 0 })), Some(Mtime { sec: 1, nsec: 0 }));
    }
}
