//! The composefs image: the tree model, the dump format, the EROFS writer and reader, fs-verity.

pub mod tree;

pub use tree::{DirEntry, Directory, File, FileContent, Inode, InodeId, InodeKind, Metadata, Mtime, Tree, ROOT};
