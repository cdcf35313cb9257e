//! The man pages: composefs-storage(3) names every exported function and status code, its EXAMPLE
//! is examples/convert.c (which the packaging test compiles and runs against the installed
//! package), and groff reads both pages without a warning. composefs-storage(1) is generated from
//! the CLI's definitions and checked in src/cli/man.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn library_page() -> String {
    read(&repo().join("man/composefs-storage.3"))
}

#[test]
fn library_page_names_every_exported_function() {
    let page = library_page();
    let symbols = read(&repo().join("src/ffi/exported-symbols.txt"));
    let missing: Vec<&str> = symbols
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        // Function names are set with .BR name (), so each is followed by " ()".
        .filter(|name| !page.contains(&format!("{name} ()")))
        .collect();
    assert!(missing.is_empty(), "man/composefs-storage.3 does not describe: {missing:?}");
}

#[test]
fn library_page_lists_every_status_code_with_its_number() {
    let page = library_page();
    let header = read(&repo().join("include/composefs-storage.h"));
    let mut count = 0;
    for line in header.lines() {
        let line = line.trim();
        let Some((name, number)) = line.strip_suffix(',').and_then(|l| l.split_once(" = ")) else { continue };
        if !(name == "CFS_OK" || name.starts_with("CFS_STATUS_")) {
            continue;
        }
        count += 1;
        let entry = format!(".BR {name} \" ({number})\"");
        assert!(page.contains(&entry), "man/composefs-storage.3 lacks `{entry}`");
    }
    assert!(count >= 13, "found only {count} status codes in the header");
}

#[test]
fn library_page_example_is_examples_convert_c() {
    let page = library_page();
    let start = page.find(".SH EXAMPLE\n.nf\n").expect("an EXAMPLE section") + ".SH EXAMPLE\n.nf\n".len();
    let end = start + page[start..].find(".fi\n").expect("the example's .fi");
    // roff escapes: \- is a minus, \e a backslash.
    let example = page[start..end].replace("\\-", "-").replace("\\e", "\\");
    let file = read(&repo().join("examples/convert.c"));
    let code = &file[file.find("*/\n").expect("the file's leading comment") + 3..];
    assert_eq!(example, code, "the EXAMPLE of man/composefs-storage.3 and examples/convert.c differ");
}

/// groff in its warning mode, as lintian and man(1) read pages.
#[test]
fn groff_reads_both_pages_without_warnings() {
    if Command::new("groff").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "groff is missing (scripts/setup.sh installs groff-base)");
        eprintln!("skipped: no groff on this machine");
        return;
    }
    for page in ["man/composefs-storage.1", "man/composefs-storage.3"] {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(repo().join(page))
            .output()
            .expect("running groff");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "groff on {page}: {stderr}");
    }
}
