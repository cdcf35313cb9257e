#![no_main]
//! See `layer_index` in fuzz/harness.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| composefs_storage_fuzz::layer_index(data));
