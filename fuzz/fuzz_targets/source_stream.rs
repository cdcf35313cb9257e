#![no_main]
//! See `source_stream` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::source_stream(data));
