#![no_main]
//! See `layer_pull` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::layer_pull(data));
