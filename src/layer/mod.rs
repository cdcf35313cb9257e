//! A composefs layer directory (SPEC §2): converting a layer stream into `diff/` objects plus
//! `composefs-data/composefs.blob`, with the TOC and tar-split containers/storage keeps for it.

mod blob;
pub mod convert;
pub mod cstorage;
pub mod export;
pub mod index;
pub mod metadata;
pub mod objects;
pub mod pull;
pub mod result;
pub mod sources;
pub mod staging;
pub mod toc;
pub mod toc_blob;
pub mod tree_builder;
pub mod verity;
mod writer;

pub use convert::{convert, ConvertOptions, EstargzCheck, Limits, Progress, ProgressFn};
pub use objects::ObjectStats;
pub use result::ConvertResult;
pub use verity::VerityPolicy;

#[cfg(test)]
mod tests;
