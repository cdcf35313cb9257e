//! The composefs EROFS image: on-disk format, writer (byte-identical to mkcomposefs 1.0.8) and
//! reader.

pub mod format;
pub mod reader;
pub mod writer;

pub use reader::read_image;
pub use writer::{select_version, write_image, WriteOptions};
