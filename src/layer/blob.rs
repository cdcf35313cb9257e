//! Writing the layer's composefs blob with this library's image writer (mkcomposefs defaults,
//! so layers without whiteouts give the same bytes as containers/storage + mkcomposefs).

use std::io::Write;

use crate::image::{write_image, Tree, WriteOptions};
use crate::Result;

/// Writes `tree` as an EROFS composefs image.
pub fn write_blob(tree: &Tree, out: &mut impl Write) -> Result<()> {
    write_image(tree, &WriteOptions::default(), out)
}
