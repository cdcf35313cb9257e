//! containers/storage's `dump.GenerateDump` (SPEC §4.3): the composefs dump of a TOC, byte for
//! byte, with xattrs in sorted order (upstream iterates a Go map, so its order varies from run to
//! run; mkcomposefs sorts them, so the image is the same).
//!
//! This is the compatibility path: whiteouts stay plain files as upstream writes them (SPEC §10.1).
//! Layer conversion builds its image tree directly and converts whiteouts.

use std::collections::HashMap;
use std::io::Write;

use base64::Engine as _;

use super::cache::object_path;
use super::toc::{
    Toc, TocEntry, TYPE_BLOCK, TYPE_CHAR, TYPE_CHUNK, TYPE_DIR, TYPE_FIFO, TYPE_HARDLINK, TYPE_REG, TYPE_SYMLINK,
};
use crate::image::dump::{escape_into, escape_optional};
use crate::layer::tree_builder::makedev;
use crate::{Error, Result};

/// `CleanAbsPath`: `filepath.Clean("/" + name)`.
pub fn clean_abs_path(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Longest path accepted (Linux `PATH_MAX`, as the tar reader's default name limit).
const PATH_MAX: usize = 4096;

fn type_bits(t: &str) -> Option<u32> {
    Some(match t {
        TYPE_REG | TYPE_HARDLINK => 0o100000,
        TYPE_CHAR => 0o020000,
        TYPE_BLOCK => 0o060000,
        TYPE_DIR => 0o040000,
        TYPE_FIFO => 0o010000,
        TYPE_SYMLINK => 0o120000,
        _ => return None,
    })
}

struct Generator<'a> {
    added: HashMap<String, TocEntry>,
    links: HashMap<&'a str, i64>,
    verity: &'a HashMap<String, String>,
    line: Vec<u8>,
}

impl Generator<'_> {
    /// Writes `entry`, after synthesising its missing parents outermost first (iteratively: a
    /// deep path must not recurse, fuzzing found a stack overflow).
    fn node(&mut self, out: &mut impl Write, entry: &TocEntry) -> Result<()> {
        let path = clean_abs_path(&entry.name);
        if path.len() > PATH_MAX {
            // Every missing parent is kept as a string: without a bound, one deep name costs
            // memory quadratic in its length.
            return Err(Error::limit(format!(
                "TOC entry name is longer than {PATH_MAX} bytes: {:?}...",
                path.chars().take(64).collect::<String>()
            )));
        }
        let mut missing = Vec::new();
        let mut p = path.as_str();
        while p != "/" {
            p = parent_of(p);
            if self.added.contains_key(p) {
                break;
            }
            missing.push(p.to_string());
        }
        for parent in missing.into_iter().rev() {
            let synthesized =
                TocEntry { name: parent, entry_type: TYPE_DIR.to_string(), mode: 0o755, ..Default::default() };
            self.write_node(out, &synthesized)?;
        }
        self.write_node(out, entry)
    }

    fn write_node(&mut self, out: &mut impl Write, entry: &TocEntry) -> Result<()> {
        let path = clean_abs_path(&entry.name);
        if let Some(prev) = self.added.get(&path) {
            if prev != entry {
                return Err(Error::format(format!("entry {path:?} already added with different data")));
            }
            return Ok(());
        }
        self.added.insert(path.clone(), entry.clone());

        let line = &mut self.line;
        line.clear();
        escape_into(line, path.as_bytes(), false);
        let nlink = self.links.get(entry.name.as_str()).copied().unwrap_or(0)
            + self.links.get(entry.link_name.as_str()).copied().unwrap_or(0)
            + 1;
        let bits = type_bits(&entry.entry_type)
            .ok_or_else(|| Error::format(format!("unknown type {} for {:?}", entry.entry_type, entry.name)))?;
        let mode = (entry.mode as u32) | bits;
        let at = if entry.entry_type == TYPE_HARDLINK { "@" } else { "" };
        let rdev = makedev(entry.dev_major as u32, entry.dev_minor as u32);
        let mtime = entry.mtime()?.unwrap_or_default();
        let _ = write!(
            line,
            " {} {at}{mode:o} {nlink} {} {} {rdev} {}.{} ",
            entry.size, entry.uid, entry.gid, mtime.sec, mtime.nsec
        );
        let payload = if !entry.link_name.is_empty() {
            if entry.entry_type == TYPE_SYMLINK {
                entry.link_name.clone()
            } else {
                clean_abs_path(&entry.link_name)
            }
        } else if !entry.digest.is_empty() {
            object_path(&entry.digest).map_err(|e| e.context(format!("digest of {:?}", entry.name)))?
        } else {
            String::new()
        };
        escape_optional(line, payload.as_bytes());
        line.extend_from_slice(b" - ");
        let digest = self.verity.get(&payload).map(String::as_str).unwrap_or("");
        escape_optional(line, digest.as_bytes());
        for (k, v) in &entry.xattrs {
            let value = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| Error::format(format!("decode xattr {k:?} of {:?}: {e}", entry.name)))?;
            line.push(b' ');
            escape_into(line, k.as_bytes(), true);
            line.push(b'=');
            escape_into(line, &value, true);
        }
        line.push(b'\n');
        out.write_all(line).map_err(|e| Error::io("write dump", e))
    }
}

/// Writes the composefs dump of `toc` (as parsed by [`Toc::parse`], which gives empty files the
/// empty-content digest) to `out`. `verity` maps object paths (`ab/cdef…`) to fs-verity hex digests.
pub fn generate_dump(toc: &Toc, verity: &HashMap<String, String>, out: &mut impl Write) -> Result<()> {
    let mut links: HashMap<&str, i64> = HashMap::new();
    for e in &toc.entries {
        if !e.link_name.is_empty() && e.entry_type != TYPE_SYMLINK {
            *links.entry(e.link_name.as_str()).or_default() += 1;
        }
    }
    let mut g = Generator { added: HashMap::new(), links, verity, line: Vec::with_capacity(512) };
    if toc.entries.is_empty() {
        let root = TocEntry { name: "/".into(), entry_type: TYPE_DIR.into(), mode: 0o755, ..Default::default() };
        g.node(out, &root)?;
    }
    for e in toc.entries.iter().filter(|e| e.entry_type != TYPE_CHUNK) {
        g.node(out, e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_abs_path_matches_go() {
        for (i, o) in [("./a/", "/a"), ("a//b/../c", "/a/c"), ("", "/"), (".", "/"), ("../../x", "/x"), ("/", "/")] {
            assert_eq!(clean_abs_path(i), o, "{i}");
        }
        assert_eq!(makedev(1, 3), 259);
        assert_eq!(makedev(7, 0), 1792);
    }

    #[test]
    fn upstream_dump_node_lines() {
        // TestDumpNode's expectations (SPEC §4.3).
        let toc = Toc::parse(br#"{"version":1,"entries":[
            {"type":"dir","name":"/","modtime":"2023-01-01T00:00:00Z"},
            {"type":"reg","name":"example.txt","mode":0,"size":100,"uid":1000,"gid":1000,"modtime":"2023-01-01T00:00:00Z",
             "digest":"sha256:0123456789abcdef1123456789abcdef2123456789abcdef3123456789abcdef","xattrs":{"user.key1":"dmFsdWUx"}},
            {"type":"symlink","name":"mysymlink","linkName":"targetfile","modtime":"2023-01-01T00:00:00Z"},
            {"type":"hardlink","name":"myhardlink","linkName":"existingfile","modtime":"2023-01-01T00:00:00Z"},
            {"type":"dir","name":"foo/bar","mode":493}]}"#)
        .unwrap();
        let mut out = Vec::new();
        generate_dump(&toc, &HashMap::new(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "/ 0 40000 1 0 0 0 1672531200.0 - - -");
        assert_eq!(lines[1], "/example.txt 100 100000 1 1000 1000 0 1672531200.0 01/23456789abcdef1123456789abcdef2123456789abcdef3123456789abcdef - - user.key1=value1");
        assert_eq!(lines[2], "/mysymlink 0 120000 1 0 0 0 1672531200.0 targetfile - -");
        // TestDumpNode dumps this node alone (nlink 1); in a whole TOC the link to "existingfile"
        // counts too: links[name] + links[linkName] + 1.
        assert_eq!(lines[3], "/myhardlink 0 @100000 2 0 0 0 1672531200.0 /existingfile - -");
        assert_eq!(lines[4], "/foo 0 40755 1 0 0 0 0.0 - - -");
        assert_eq!(lines[5], "/foo/bar 0 40755 1 0 0 0 0.0 - - -");
    }

    #[test]
    fn duplicates_must_be_identical_and_types_known() {
        let dup = Toc::parse(br#"{"entries":[{"type":"reg","name":"a","size":1,"digest":"sha256:0123456789abcdef1123456789abcdef2123456789abcdef3123456789abcdef"},{"type":"reg","name":"./a","size":1,"digest":"sha256:0123456789abcdef1123456789abcdef2123456789abcdef3123456789abcdef"}]}"#).unwrap();
        let e = generate_dump(&dup, &HashMap::new(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("\"/a\" already added with different data"), "{e}");
        let late_dir =
            Toc::parse(br#"{"entries":[{"type":"reg","name":"d/f","size":0},{"type":"dir","name":"d/","mode":493}]}"#)
                .unwrap();
        assert!(generate_dump(&late_dir, &HashMap::new(), &mut Vec::new()).is_err(), "SPEC §10.13");
        let bad = Toc::parse(br#"{"entries":[{"type":"socket","name":"s"}]}"#).unwrap();
        assert!(generate_dump(&bad, &HashMap::new(), &mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("unknown type"));
    }
}
