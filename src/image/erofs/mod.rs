//! The composefs EROFS image: on-disk format, writer (byte-identical to mkcomposefs 1.0.8) and
//! reader.

pub mod format;
pub mod reader;
pub mod writer;

pub use reader::{read_image, read_root_names};
pub(crate) use writer::write_image_unbuffered;
pub use writer::{is_root_stub_name, select_version, write_image, WriteOptions};
