//! zstd:chunked layers (SPEC §3.3–§3.6): footer, TOC, tar-split, and reading them from a blob;
//! eStargz blobs (§3.8), whose TOC reads the same way.

pub mod cache;
pub mod consistency;
pub mod dump;
pub mod estargz;
pub mod footer;
mod frames;
pub mod manifest;
pub mod ranges;
pub mod rollsum;
pub mod sha256x2;
pub mod tarsplit;
pub mod toc;
pub mod writer;

pub use footer::{Format, Position};
pub use manifest::{locate, read_manifest, read_manifest_then, BlobSource, Location, Manifest, ReadOptions};
pub use toc::{Toc, TocEntry};
