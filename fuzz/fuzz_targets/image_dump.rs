#![no_main]
//! See `image_dump` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::image_dump(data));
