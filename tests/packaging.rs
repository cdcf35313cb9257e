//! The packaging files agree with the crate: one version everywhere (Cargo.toml, debian/changelog,
//! the RPM spec, composefs-storage(3)), and the Debian symbols file and package name follow the ABI
//! version (the SONAME). scripts/test-deb.sh builds and tests the packages themselves.

use std::path::PathBuf;

fn read(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn every_packaging_file_has_the_crate_version() {
    let changelog = read("debian/changelog");
    let first = changelog.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("composefs-storage ({VERSION})")),
        "debian/changelog's latest entry is `{first}`, not version {VERSION}"
    );
    let spec = read("rpm/composefs-storage.spec");
    assert!(
        spec.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Version:", VERSION]),
        "rpm/composefs-storage.spec's Version is not {VERSION}"
    );
    let page = read("man/composefs-storage.3");
    assert!(
        page.contains(&format!("\"composefs\\-storage {VERSION}\"")),
        "man/composefs-storage.3's title line does not name version {VERSION}"
    );
}

#[test]
fn debian_names_follow_the_abi_version() {
    let abi = composefs_storage::ffi::version::CFS_ABI_VERSION;
    let symbols = read("debian/libcomposefs-storage0.symbols");
    let first = symbols.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("libcomposefs_storage.so.{abi} libcomposefs-storage{abi} #MINVER#"),
        "debian/libcomposefs-storage0.symbols names another SONAME or package"
    );
    let control = read("debian/control");
    assert!(
        control.lines().any(|l| l == format!("Package: libcomposefs-storage{abi}")),
        "debian/control has no package libcomposefs-storage{abi} (the SONAME's number)"
    );
}
