#![no_main]
//! See `chunked_cache` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::chunked_cache(data));
