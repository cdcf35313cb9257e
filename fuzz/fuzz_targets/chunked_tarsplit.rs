#![no_main]
//! See `chunked_tarsplit` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::chunked_tarsplit(data));
