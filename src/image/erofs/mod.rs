//! The composefs EROFS image: on-disk format, writer (byte-identical to mkcomposefs 1.0.8) and
//! reader.

pub mod format;
pub mod writer;

pub use writer::{select_version, write_image, WriteOptions};
