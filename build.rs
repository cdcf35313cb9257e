//! Shared-library link settings: the SONAME and a version script that exports only `cfs_*`.

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // The ABI major version: keep in step with CFS_ABI_VERSION (src/ffi/version.rs).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcomposefs_storage.so.0");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={manifest}/src/ffi/libcomposefs_storage.map");
    println!("cargo:rerun-if-changed=src/ffi/libcomposefs_storage.map");
}
