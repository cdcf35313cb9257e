//! The composefs image: the tree model, the dump format, the EROFS writer and reader, fs-verity.
//!
//! # Overlay whiteouts: mkcomposefs behaviour and the layer extension
//! The writer reproduces mkcomposefs 1.0.8 byte for byte (SPEC §5): every `trusted.overlay.*`
//! xattr of the input is escaped to `trusted.overlay.overlay.*`, and a char device 0:0
//! ([`InodeKind::CharDevice`]`(0)`) is escaped to a regular file with `*.overlay.whiteout`
//! xattrs, its parent getting `*.overlay.whiteouts` (and, in version 1, `*.overlay.opaque=x`).
//! Those escaped markers act only one overlay level up.
//!
//! Beyond mkcomposefs, for layer images in c/storage's single-level overlay stack (SPEC §10.4):
//! - [`InodeKind::OverlayWhiteout`] is written as a real char device 0:0, with no escaping and
//!   no xattrs on its parent, so it hides the name in lower layers;
//! - [`Directory::overlay_opaque`] adds an unescaped `trusted.overlay.opaque=y`;
//! - any `trusted.overlay.*` xattr that came from the input stays escaped, so layer content can
//!   never inject overlay markers. Neither extension changes the image version.
//!
//! The reader maps these back: a real char device 0:0 becomes an `OverlayWhiteout` (except the
//! root stubs `00`..`ff` mkcomposefs adds, which are dropped), and an unescaped opaque marker on
//! a directory other than the root sets `overlay_opaque`.

pub mod dump;
pub mod erofs;
pub mod fsverity;
pub mod output;
pub mod tree;

pub use erofs::{is_root_stub_name, read_image, read_root_names, select_version, write_image, WriteOptions};
pub use fsverity::{digest_reader, FsVerityHasher};
pub use output::{write_image_file, write_image_with_digest, VerityWriter};
pub use tree::{DirEntry, Directory, File, FileContent, Inode, InodeId, InodeKind, Metadata, Mtime, Tree, ROOT};
