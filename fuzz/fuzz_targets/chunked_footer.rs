#![no_main]
//! See `chunked_footer` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::chunked_footer(data));
