//! The C ABI: a thin boundary that converts types and errors and calls only the Rust API.
//!
//! Conventions (rustls-ffi, librsvg): every symbol is `cfs_<object>_<verb>`; handles are opaque
//! with `_new`/`_free` (free of NULL is a no-op); every fallible call returns [`cfs_status`] and
//! takes a last `cfs_error **err` that receives the error (never a thread-global last error);
//! outputs are written only on success; every export runs inside [`ffi_call!`], which turns a
//! panic into `CFS_STATUS_INTERNAL`; handles are checked against a registry of live handles
//! (src/ffi/handles.rs), so that a freed handle gets an error code instead of a crash.
//!
//! This is the only module (besides syscall wrappers) with `unsafe` code.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]
// Exports take raw pointers by design; each dereference is checked and documented in the header.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

#[macro_use]
mod panic;
mod handles;
pub mod util;

pub mod compress;
pub mod config;
pub mod convert;
pub mod cstorage;
pub mod error;
pub mod image;
pub mod mount;
pub mod pull;
pub mod toc;
pub mod version;

pub use error::{cfs_error, cfs_status};
