//! The zstd:chunked table of contents (SPEC §3.6): its JSON form as containers/storage reads it.
//!
//! Parsing follows `unmarshalToc`: field names match case-insensitively, unknown fields are
//! skipped, `null` means "absent", and trailing data after the object is an error.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use base64::Engine as _;

use crate::image::Mtime;
use crate::source::tar::{EntryType, Header};
use crate::{Error, Result};

/// Entry types a TOC may hold.
pub const TYPE_REG: &str = "reg";
pub const TYPE_CHUNK: &str = "chunk";
pub const TYPE_HARDLINK: &str = "hardlink";
pub const TYPE_SYMLINK: &str = "symlink";
pub const TYPE_DIR: &str = "dir";
pub const TYPE_CHAR: &str = "char";
pub const TYPE_BLOCK: &str = "block";
pub const TYPE_FIFO: &str = "fifo";

/// The digest of empty content.
pub const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The whole TOC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Toc {
    pub version: i64,
    pub entries: Vec<TocEntry>,
    /// `sha256:<hex>` of the compressed tar-split frame, when the blob has one.
    pub tar_split_digest: Option<String>,
}

/// One TOC entry (`minimal.FileMetadata`). Empty strings and zeros mean "absent".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TocEntry {
    pub entry_type: String,
    pub name: String,
    pub link_name: String,
    pub mode: i64,
    pub size: i64,
    pub uid: i64,
    pub gid: i64,
    pub modtime: Option<String>,
    pub accesstime: Option<String>,
    pub changetime: Option<String>,
    pub dev_major: i64,
    pub dev_minor: i64,
    /// Name → base64 of the value, as stored in the TOC.
    pub xattrs: BTreeMap<String, String>,
    pub digest: String,
    pub offset: i64,
    pub end_offset: i64,
    pub chunk_size: i64,
    pub chunk_offset: i64,
    pub chunk_digest: String,
    pub chunk_type: String,
    /// eStargz: where the data starts in its gzip member's decompressed bytes, when the encoder
    /// packed several chunks into one member (zstd:chunked has none).
    pub inner_offset: i64,
}

impl Toc {
    /// Parses TOC JSON bytes (the decompressed TOC frame).
    pub fn parse(json: &[u8]) -> Result<Toc> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let toc = Toc::deserialize(&mut de).map_err(|e| Error::format(format!("invalid TOC JSON: {e}")))?;
        de.end().map_err(|e| Error::format(format!("invalid TOC JSON: trailing data after the TOC object: {e}")))?;
        let mut toc = toc;
        for e in &mut toc.entries {
            // As `unmarshalToc`: empty regular files get the empty-content digest (SPEC §2.2), and
            // every time must parse.
            if e.entry_type == TYPE_REG && e.size == 0 && e.digest.is_empty() {
                e.digest = EMPTY_SHA256.to_string();
            }
            for t in [&e.modtime, &e.accesstime, &e.changetime].into_iter().flatten() {
                parse_rfc3339(t).map_err(|err| err.context(format!("TOC entry {:?}", e.name)))?;
            }
        }
        Ok(toc)
    }
}

impl TocEntry {
    /// The tar header the entry stands for (`minimal.FileMetadata` back to `tar.Header`): what a
    /// pull builds the layer's tree from, once the TOC is checked against the tar-split's own
    /// headers ([`super::consistency`]). `index` is the entry's place in the layer.
    pub fn header(&self, index: u64) -> Result<Header> {
        let time = |t: &Option<String>| -> Result<Option<Mtime>> { t.as_deref().map(parse_rfc3339).transpose() };
        let mut xattrs = BTreeMap::new();
        for (k, v) in &self.xattrs {
            let value = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|err| Error::format(format!("TOC entry {:?}: xattr {k:?} is not base64: {err}", self.name)))?;
            xattrs.insert(k.as_bytes().to_vec(), value);
        }
        Ok(Header {
            name: self.name.as_bytes().to_vec(),
            link_name: self.link_name.as_bytes().to_vec(),
            entry_type: self.tar_type()?,
            mode: self.mode,
            uid: self.int(self.uid, "uid")?,
            gid: self.int(self.gid, "gid")?,
            size: self.int(self.size, "size")?,
            mtime: time(&self.modtime)?.unwrap_or_default(),
            atime: time(&self.accesstime)?,
            ctime: time(&self.changetime)?,
            dev_major: self.int(self.dev_major, "devMajor")?,
            dev_minor: self.int(self.dev_minor, "devMinor")?,
            xattrs,
            data_offset: 0,
            index,
        })
    }

    /// The tar entry type of a non-chunk entry.
    pub fn tar_type(&self) -> Result<EntryType> {
        Ok(match self.entry_type.as_str() {
            TYPE_REG => EntryType::Regular,
            TYPE_HARDLINK => EntryType::Hardlink,
            TYPE_SYMLINK => EntryType::Symlink,
            TYPE_CHAR => EntryType::Char,
            TYPE_BLOCK => EntryType::Block,
            TYPE_DIR => EntryType::Directory,
            TYPE_FIFO => EntryType::Fifo,
            t => return Err(Error::format(format!("TOC entry {:?}: unknown type {t:?}", self.name))),
        })
    }

    fn int<T: TryFrom<i64>>(&self, v: i64, what: &str) -> Result<T> {
        T::try_from(v).map_err(|_| Error::format(format!("TOC entry {:?}: {what} {v} out of range", self.name)))
    }

    /// The modification time, if any (SPEC §3.6.2: RFC 3339 with nanoseconds).
    pub fn mtime(&self) -> Result<Option<Mtime>> {
        self.modtime
            .as_deref()
            .map(|s| parse_rfc3339(s).map_err(|e| e.context(format!("TOC entry {:?}: modtime", self.name))))
            .transpose()
    }
}

/// Parses an RFC 3339 timestamp (`2024-01-01T00:00:00.5+01:00`, `...Z`) into Unix seconds and
/// nanoseconds. Years 0001–9999 as Go's `time.Time` marshals them.
pub fn parse_rfc3339(s: &str) -> Result<Mtime> {
    let bad = || Error::format(format!("invalid RFC 3339 time {s:?}"));
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    // On bytes: index 19 need not be a char boundary (fuzzing found `...:0ǭ`).
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        b[r].iter()
            .try_fold(0i64, |n, &c| if c.is_ascii_digit() { Ok(n * 10 + i64::from(c - b'0')) } else { Err(bad()) })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut nsec: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return Err(bad());
        }
        let v: u32 = digits.parse().map_err(|_| bad())?;
        nsec = v * 10u32.pow(9 - digits.len() as u32);
    }
    let offset_secs = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: u8| {
                if c.is_ascii_digit() {
                    Ok(i64::from(c - b'0'))
                } else {
                    Err(bad())
                }
            };
            let off = (digit(*h1)? * 10 + digit(*h2)?) * 3600 + (digit(*m1)? * 10 + digit(*m2)?) * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    Ok(Mtime { sec: days * 86400 + hour * 3600 + min * 60 + sec - offset_secs, nsec })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

// ---- case-insensitive deserialization (Go encoding/json semantics) ----

impl<'de> Deserialize<'de> for Toc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Toc, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Toc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a TOC object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Toc, A::Error> {
                let mut toc = Toc::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "version" => toc.version = map.next_value::<Option<i64>>()?.unwrap_or(0),
                        "entries" => {
                            toc.entries = map.next_value::<Option<Entries>>()?.map(|e| e.0).unwrap_or_default()
                        }
                        "tarsplitdigest" => {
                            toc.tar_split_digest = map.next_value::<Option<String>>()?.filter(|s| !s.is_empty())
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(toc)
            }
        }
        d.deserialize_map(V)
    }
}

struct Entries(Vec<TocEntry>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of TOC entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Entries, A::Error> {
                // Do not trust size hints from input: grow as entries arrive.
                let mut v = Vec::new();
                while let Some(e) = seq.next_element::<TocEntry>()? {
                    v.push(e);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for TocEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<TocEntry, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TocEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a TOC entry object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<TocEntry, A::Error> {
                let mut e = TocEntry::default();
                while let Some(key) = map.next_key::<String>()? {
                    let s = |m: &mut A| -> std::result::Result<String, A::Error> {
                        Ok(m.next_value::<Option<String>>()?.unwrap_or_default())
                    };
                    let n = |m: &mut A| -> std::result::Result<i64, A::Error> {
                        Ok(m.next_value::<Option<i64>>()?.unwrap_or(0))
                    };
                    let t = |m: &mut A| -> std::result::Result<Option<String>, A::Error> {
                        m.next_value::<Option<String>>()
                    };
                    match key.to_ascii_lowercase().as_str() {
                        "type" => e.entry_type = s(&mut map)?,
                        "name" => e.name = s(&mut map)?,
                        "linkname" => e.link_name = s(&mut map)?,
                        "mode" => e.mode = n(&mut map)?,
                        "size" => e.size = n(&mut map)?,
                        "uid" => e.uid = n(&mut map)?,
                        "gid" => e.gid = n(&mut map)?,
                        "modtime" => e.modtime = t(&mut map)?,
                        "accesstime" => e.accesstime = t(&mut map)?,
                        "changetime" => e.changetime = t(&mut map)?,
                        "devmajor" => e.dev_major = n(&mut map)?,
                        "devminor" => e.dev_minor = n(&mut map)?,
                        "xattrs" => {
                            e.xattrs = map.next_value::<Option<BTreeMap<String, String>>>()?.unwrap_or_default()
                        }
                        "digest" => e.digest = s(&mut map)?,
                        "offset" => e.offset = n(&mut map)?,
                        "endoffset" => e.end_offset = n(&mut map)?,
                        "chunksize" => e.chunk_size = n(&mut map)?,
                        "chunkoffset" => e.chunk_offset = n(&mut map)?,
                        "chunkdigest" => e.chunk_digest = s(&mut map)?,
                        "chunktype" => e.chunk_type = s(&mut map)?,
                        "inneroffset" => e.inner_offset = n(&mut map)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(e)
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks a `sha256:<64 lowercase hex>` digest string and returns the hex part.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::format(format!("unsupported digest {digest:?}: only sha256 is supported")))?;
    if hex.len() != 64 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::format(format!("invalid sha256 digest {digest:?}")));
    }
    Ok(hex)
}

/// The 32 bytes of a `sha256:<hex>` digest.
pub fn sha256_bytes(digest: &str) -> Result<[u8; 32]> {
    let hex = sha256_hex(digest)?;
    // Checked above: 64 lowercase hex digits.
    crate::source::unhex32(hex.as_bytes()).ok_or_else(|| Error::format("invalid digest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_skips_unknown_fields() {
        let toc = Toc::parse(
            br#"{"Version":1,"ENTRIES":[{"TYPE":"reg","name":"a","LinkName":"","mode":420,"size":2,"x":[1,{"y":2}],"xattrs":{"user.a":"YQ=="},"modtime":"2024-01-01T00:00:00Z"}],"tarSplitDigest":null}"#,
        )
        .unwrap();
        assert_eq!(toc.version, 1);
        assert_eq!(toc.entries.len(), 1);
        let e = &toc.entries[0];
        assert_eq!((e.entry_type.as_str(), e.name.as_str(), e.mode, e.size), ("reg", "a", 420, 2));
        assert_eq!(e.xattrs.get("user.a").map(String::as_str), Some("YQ=="));
        assert_eq!(e.mtime().unwrap(), Some(Mtime { sec: 1704067200, nsec: 0 }));
        assert_eq!(toc.tar_split_digest, None);
        assert!(Toc::parse(br#"{"version":1,"entries":null}"#).unwrap().entries.is_empty());
    }

    #[test]
    fn rejects_trailing_data_and_bad_types() {
        let e = Toc::parse(br#"{"version":1} {}"#).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
        assert!(Toc::parse(br#"{"version":"one"}"#).is_err());
        assert!(Toc::parse(br#"{"entries":[{"mode":"x"}]}"#).is_err());
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), Mtime { sec: 0, nsec: 0 });
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00.005Z").unwrap(), Mtime { sec: 1704067200, nsec: 5_000_000 });
        assert_eq!(parse_rfc3339("2024-01-01T01:00:00+01:00").unwrap(), Mtime { sec: 1704067200, nsec: 0 });
        assert_eq!(parse_rfc3339("1960-01-01T00:00:00Z").unwrap().sec, -315619200);
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z").unwrap().sec, -62135596800);
        for bad in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_digest_strings() {
        let h = "4355a46b19d348dc2f57c046f8ef63d4538ebb936000f3c9ee954a27460dd865";
        assert_eq!(sha256_hex(&format!("sha256:{h}")).unwrap(), h);
        assert!(sha256_hex(&format!("sha512:{h}")).is_err());
        assert!(sha256_hex("sha256:abc").is_err());
        assert!(sha256_hex(&format!("sha256:{}", h.to_uppercase())).is_err());
    }
}
