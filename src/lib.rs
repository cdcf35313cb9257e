//! composefs-storage: the composefs layer path of containers/storage.
//!
//! Data flows one way: input stream → tree + objects → image → layer dir → mount.
//! The Rust API in these modules is the real API; [`ffi`] is a thin C boundary over it.

pub mod chunked;
pub mod config;
pub mod error;
pub mod image;
pub mod layer;
pub mod mount;
pub mod source;

pub mod ffi;

pub use error::{Error, ErrorKind, Result};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
