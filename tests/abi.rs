//! The C ABI's committed artifacts stay in step with the code: the generated header, the list of
//! exported symbols, the version macros and the SONAME (issue 2, "C ABI conventions").
//!
//! Fixes when one of these fails: `make header` (regenerate include/composefs-storage.h),
//! `make symbols` (regenerate src/ffi/exported-symbols.txt), then commit the result.
//!
//! The header is generated here by cbindgen's library (a dev-dependency pinned to the version of the
//! CLI that scripts/gen-header.sh runs), so `cargo test` needs no cbindgen binary; the two give the
//! same bytes (test-all.sh's header-check step runs the CLI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use composefs_storage::ffi::version::CFS_ABI_VERSION;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn committed_header() -> String {
    read(&repo().join("include/composefs-storage.h"))
}

/// Runs a command and returns its stdout, failing the test with its stderr otherwise.
fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("command output is UTF-8")
}

/// The cdylib of this crate, built now: `cargo test` builds only the rlib for its tests, and a
/// leftover .so from an earlier build could be stale.
fn shared_library() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/abi-* → target/<profile>/
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
            let target_dir = profile_dir.parent().expect("target dir");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev",
                Some(other) => other,
                None => panic!("unexpected test binary path {}", exe.display()),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            output(
                Command::new(cargo)
                    .args(["build", "--lib", "--profile", profile, "--target-dir"])
                    .arg(target_dir)
                    .current_dir(repo()),
            );
            let so = profile_dir.join("libcomposefs_storage.so");
            assert!(so.exists(), "cargo build --lib did not produce {}", so.display());
            so
        })
        .clone()
}

/// `#define NAME value` from the header.
fn header_define(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|l| l.strip_prefix("#define ")?.strip_prefix(name)?.strip_prefix(' ').map(str::trim))
        .unwrap_or_else(|| panic!("include/composefs-storage.h has no #define {name}"))
        .to_string()
}

/// Names of the functions the header declares (`... cfs_name(...);` at top level).
fn header_functions(header: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = header;
    while let Some(at) = rest.find("cfs_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let (name, after) = tail.split_at(end);
        // A declaration: the name is followed by "(" and the statement ends in ");" before any "{".
        let is_call = after.starts_with('(');
        let preceded_by_space = at > 0 && matches!(rest.as_bytes()[at - 1], b' ' | b'*');
        if is_call && preceded_by_space {
            names.insert(name.to_string());
        }
        rest = after;
    }
    names
}

fn symbol_list() -> BTreeSet<String> {
    read(&repo().join("src/ffi/exported-symbols.txt"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn exported_symbols(so: &Path) -> BTreeSet<String> {
    output(Command::new("nm").args(["-D", "--defined-only", "--format=posix"]).arg(so))
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// The pinned cbindgen: Cargo.toml's `cbindgen = "=…"` dev-dependency, and CBINDGEN_VERSION in
/// scripts/lib.sh for the CLI (`cbindgen_pins_agree` keeps them in step).
const CBINDGEN_VERSION: &str = "0.29.2";

/// What `scripts/gen-header.sh` writes: `cbindgen --config cbindgen.toml src/ffi/mod.rs` (only src/ffi
/// is the C ABI), then its `sed` of the @...@ placeholders (the first of each on a line).
fn generated_header() -> String {
    let config = cbindgen::Config::from_file(repo().join("cbindgen.toml")).expect("reading cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(repo().join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate the header from src/ffi: {e}"));
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let raw = String::from_utf8(raw).expect("cbindgen output is UTF-8");
    let substitutions = [
        ("@VERSION_MAJOR@", env!("CARGO_PKG_VERSION_MAJOR")),
        ("@VERSION_MINOR@", env!("CARGO_PKG_VERSION_MINOR")),
        ("@VERSION_PATCH@", env!("CARGO_PKG_VERSION_PATCH")),
        ("@VERSION@", env!("CARGO_PKG_VERSION")),
        ("@CBINDGEN_VERSION@", CBINDGEN_VERSION),
    ];
    raw.split_inclusive('\n')
        .map(|line| substitutions.iter().fold(line.to_string(), |l, (from, to)| l.replacen(from, to, 1)))
        .collect()
}

/// Fails when the committed header is not what cbindgen generates from src/ffi now. With
/// `CFS_BLESS_HEADER=1` (`make header`) it writes the generated header instead.
#[test]
fn header_is_up_to_date() {
    let fresh = generated_header();
    let path = repo().join("include/composefs-storage.h");
    if std::env::var_os("CFS_BLESS_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = committed_header();
    if fresh != committed {
        let first = fresh.lines().zip(committed.lines()).position(|(a, b)| a != b);
        panic!(
            "include/composefs-storage.h is out of date with src/ffi (first difference at line {}): \
             run `make header` and commit it",
            first.map_or_else(|| "end".to_string(), |i| (i + 1).to_string())
        );
    }
}

/// The cbindgen this test links and the CLI the scripts install are the same version.
#[test]
fn cbindgen_pins_agree() {
    let manifest = read(&repo().join("Cargo.toml"));
    assert!(
        manifest.lines().any(|l| l.starts_with("cbindgen = ") && l.contains(&format!("\"={CBINDGEN_VERSION}\""))),
        "Cargo.toml's cbindgen dev-dependency is not pinned to ={CBINDGEN_VERSION}"
    );
    let lib_sh = read(&repo().join("scripts/lib.sh"));
    assert!(
        lib_sh.lines().any(|l| l.split_whitespace().next() == Some(&format!("CBINDGEN_VERSION={CBINDGEN_VERSION}"))),
        "scripts/lib.sh's CBINDGEN_VERSION is not {CBINDGEN_VERSION}"
    );
}

#[test]
fn header_version_macros_match_cargo_toml() {
    let h = committed_header();
    assert_eq!(header_define(&h, "CFS_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MAJOR"), "run `make header`");
    assert_eq!(header_define(&h, "CFS_VERSION_MINOR"), env!("CARGO_PKG_VERSION_MINOR"), "run `make header`");
    assert_eq!(header_define(&h, "CFS_VERSION_PATCH"), env!("CARGO_PKG_VERSION_PATCH"), "run `make header`");
    assert_eq!(header_define(&h, "CFS_VERSION_STRING"), format!("\"{}\"", env!("CARGO_PKG_VERSION")));
    assert_eq!(header_define(&h, "CFS_ABI_VERSION"), CFS_ABI_VERSION.to_string(), "run `make header`");
}

#[test]
fn version_functions_match_header() {
    let v = composefs_storage::ffi::version::cfs_version();
    // SAFETY: cfs_version returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(v) }.to_str().expect("version is UTF-8");
    assert_eq!(format!("\"{v}\""), header_define(&committed_header(), "CFS_VERSION_STRING"));
    assert_eq!(
        composefs_storage::ffi::version::cfs_abi_version().to_string(),
        header_define(&committed_header(), "CFS_ABI_VERSION")
    );
}

#[test]
fn exported_symbols_match_committed_list() {
    let so = shared_library();
    let built = exported_symbols(&so);
    let foreign: Vec<_> = built.iter().filter(|s| !s.starts_with("cfs_")).collect();
    assert!(
        foreign.is_empty(),
        "{} exports symbols outside cfs_*: {foreign:?} (see src/ffi/libcomposefs_storage.map)",
        so.display()
    );
    let listed = symbol_list();
    let missing: Vec<_> = listed.difference(&built).collect();
    let unlisted: Vec<_> = built.difference(&listed).collect();
    assert!(
        missing.is_empty() && unlisted.is_empty(),
        "exports of {} differ from src/ffi/exported-symbols.txt: listed but not exported {missing:?}, \
         exported but not listed {unlisted:?}; if intended, run `make symbols` and commit the list",
        so.display()
    );
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let declared = header_functions(&committed_header());
    let listed = symbol_list();
    assert!(declared.len() >= 8, "found only {declared:?} in the header");
    let undeclared: Vec<_> = listed.difference(&declared).collect();
    let unexported: Vec<_> = declared.difference(&listed).collect();
    assert!(
        undeclared.is_empty() && unexported.is_empty(),
        "header and symbol list disagree: exported but not in the header {undeclared:?}, \
         declared but not exported {unexported:?}; run `make header` and `make symbols`"
    );
}

#[test]
fn soname_carries_the_abi_version() {
    let dynamic = output(Command::new("readelf").arg("-d").arg(shared_library()));
    let want = format!("[libcomposefs_storage.so.{CFS_ABI_VERSION}]");
    assert!(
        dynamic.lines().any(|l| l.contains("(SONAME)") && l.contains(&want)),
        "SONAME is not {want} (build.rs must follow CFS_ABI_VERSION in src/ffi/version.rs):\n{dynamic}"
    );
}
