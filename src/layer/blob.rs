//! Writing the layer's composefs blob with this library's image writer (mkcomposefs defaults,
//! so layers without whiteouts give the same bytes as containers/storage + mkcomposefs).

use std::io::Write;

use crate::image::{write_image_with_digest, Tree, WriteOptions};
use crate::Result;

/// Writes `tree` as an EROFS composefs image; returns the image's fs-verity digest (computed in
/// userspace while writing, so it is known whether or not the filesystem has fs-verity).
pub fn write_blob(tree: &Tree, out: &mut (impl Write + Send)) -> Result<[u8; 32]> {
    write_image_with_digest(tree, &WriteOptions::default(), out)
}
