//! Re-exporting a layer this library made as its original tar, byte for byte, from its
//! tar-split and its objects: what containers/storage's layer diff getter does for
//! `podman save` and push. The sha256 of the stream is the layer's DiffID.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::metadata;
use crate::chunked::cache::object_path;
use crate::chunked::tarsplit::reassemble;
use crate::chunked::toc::{Toc, TYPE_REG};
use crate::{Error, Result};

/// Writes the layer's tar to `out`; returns its sha256 (DiffID) and size.
pub fn export(layer_dir: &Path, out: &mut impl Write) -> Result<([u8; 32], u64)> {
    let toc = Toc::parse(&metadata::read(layer_dir, metadata::TOC)?)
        .map_err(|e| e.context(format!("{}/{}", layer_dir.display(), metadata::TOC)))?;
    // TOC names are JSON strings: a name that is not UTF-8 is there with U+FFFD in place of its
    // bad bytes (as Go writes it), so the tar-split's raw names are looked up the same way. Two
    // such names that collide with different contents are refused rather than guessed.
    let mut objects: HashMap<&str, Option<String>> = HashMap::new();
    for e in toc.entries.iter().filter(|e| e.entry_type == TYPE_REG) {
        let obj = object_path(&e.digest).map_err(|err| err.context(format!("TOC entry {:?}", e.name)))?;
        let slot = objects.entry(e.name.as_str()).or_insert_with(|| Some(obj.clone()));
        if slot.as_deref().is_some_and(|o| o != obj) && e.name.contains('\u{fffd}') {
            *slot = None;
        } else {
            *slot = Some(obj);
        }
    }
    let Some((split_path, split)) = metadata::open_tar_split(layer_dir)? else {
        return Err(Error::new(
            crate::ErrorKind::NotFound,
            format!(
                "{}/{} is missing (a layer converted or pulled by composefs-storage has it)",
                layer_dir.display(),
                metadata::TAR_SPLIT
            ),
        ));
    };
    let diff = layer_dir.join("diff");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let r = reassemble(
        split,
        |name, _| {
            let name = String::from_utf8_lossy(name);
            let obj = objects.get(name.as_ref()).ok_or_else(|| {
                Error::format(format!("tar-split has content for {name:?}, which is no regular file in the TOC"))
            })?;
            let obj = obj.as_ref().ok_or_else(|| {
                Error::format(format!("tar-split name {name:?} is not UTF-8 and matches several TOC entries"))
            })?;
            let p = diff.join(obj);
            File::open(&p).map_err(|e| Error::io(format_args!("open object {} for {name:?}", p.display()), e))
        },
        &mut w,
    )
    .map_err(|e| match e.kind() {
        // A damaged record (bad compression or NDJSON): name it.
        crate::ErrorKind::Format => e.context(split_path.display().to_string()),
        _ => e,
    })?;
    w.flush().map_err(|e| Error::io("write tar stream", e))?;
    Ok(r)
}
