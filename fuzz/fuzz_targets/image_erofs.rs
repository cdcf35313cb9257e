#![no_main]
//! See `image_erofs` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::image_erofs(data));
