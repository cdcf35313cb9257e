//! composefs-storage(1), generated from the same clap definitions as `--help`, so the two cannot
//! drift: `man_page_is_up_to_date` fails when `man/composefs-storage.1` differs from what the
//! definitions give (`make man` rewrites it). A test, not a build step: clap_mangen stays a
//! dev-dependency and the shipped binary does not carry a page generator.
//!
//! One page, one section per subcommand (synopsis, description, options, examples), as git(1)-style
//! separate pages would leave `man composefs-storage` without the options.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_mangen::Man;

use crate::Cli;

/// The page's roff source.
fn render() -> String {
    let mut cmd = Cli::command();
    // Fills in each subcommand's bin name ("composefs-storage convert") for its synopsis.
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let top = page(cmd.clone(), &version);

    // The title by hand: clap_mangen leaves an empty date unquoted, which shifts the other fields.
    let mut out =
        format!(".TH COMPOSEFS\\-STORAGE 1 \"\" \"composefs\\-storage {version}\" \"User Commands\"\n").into_bytes();
    out.extend(section(|w| top.render_name_section(w)).into_bytes());
    out.extend(section(|w| top.render_synopsis_section(w)).into_bytes());
    out.extend(section(|w| top.render_description_section(w)).into_bytes());
    // The top level's after-help: where to start, exit status.
    out.extend(notes(&section(|w| top.render_extra_section(w)), "EXAMPLES").into_bytes());

    // `help` is clap's own subcommand: nothing to document beyond the SYNOPSIS.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let man = page(sub.clone(), &version);
        out.extend(format!(".SH \"COMPOSEFS\\-STORAGE {}\"\n", sub.get_name().to_uppercase()).into_bytes());
        // Each piece comes as its own `.SH`: they become subsections of this command's section.
        out.extend(demote(&section(|w| man.render_synopsis_section(w)), "Synopsis").into_bytes());
        out.extend(demote(&section(|w| man.render_description_section(w)), "Description").into_bytes());
        out.extend(demote(&section(|w| man.render_options_section(w)), "Options").into_bytes());
        if sub.get_after_help().is_some() || sub.get_after_long_help().is_some() {
            out.extend(notes(&section(|w| man.render_extra_section(w)), "Examples and notes").into_bytes());
        }
    }
    out.extend(
        b".SH \"SEE ALSO\"\n\
          .BR composefs\\-storage (3),\n\
          .BR mkcomposefs (1),\n\
          .BR mount.composefs (1),\n\
          .BR containers\\-storage.conf (5)\n"
            .iter(),
    );
    // roff_preamble once, at the top (it defines the apostrophe string `\*(Aq` the text uses).
    format!("{ROFF_PREAMBLE}{}", String::from_utf8(out).expect("roff is UTF-8"))
}

/// What clap_mangen's roff writer puts before every piece it renders.
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

fn page(cmd: clap::Command, version: &str) -> Man {
    Man::new(cmd)
        .title("COMPOSEFS-STORAGE")
        .section("1")
        .source(format!("composefs-storage {version}"))
        .manual("User Commands")
}

/// One rendered piece, without the preamble.
fn section(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    render(&mut buf).expect("rendering into memory");
    let text = String::from_utf8(buf).expect("roff is UTF-8");
    text.strip_prefix(ROFF_PREAMBLE).map(str::to_string).unwrap_or(text)
}

/// An after-help text as it is in `--help`: its examples are laid out by hand, so no filling.
fn notes(roff: &str, title: &str) -> String {
    let body = demote(roff, title);
    let (heading, text) = body.split_once('\n').expect("a heading line");
    format!("{heading}\n.nf\n{text}.fi\n")
}

/// Turns a rendered piece's first `.SH` heading into `.SS FIRST` and any further ones (help
/// headings of option groups) into `.SS` with their own names; the top level's extra section is
/// renamed, since clap_mangen calls it EXTRA.
fn demote(roff: &str, first: &str) -> String {
    let mut seen = false;
    let mut out = String::new();
    for line in roff.lines() {
        match line.strip_prefix(".SH ") {
            Some(_) if !seen => {
                seen = true;
                out.push_str(&format!(".SS {first}\n"));
            }
            Some(name) => out.push_str(&format!(".SS {name}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man/composefs-storage.1")
}

#[test]
fn man_page_is_up_to_date() {
    let fresh = render();
    let path = committed_path();
    if std::env::var_os("CFS_BLESS_MAN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if fresh != committed {
        let first = fresh.lines().zip(committed.lines()).position(|(a, b)| a != b);
        panic!(
            "man/composefs-storage.1 is out of date with the CLI's definitions (first difference at line {}): \
             run `make man` and commit it",
            first.map_or_else(|| "end".to_string(), |i| (i + 1).to_string())
        );
    }
}

/// Every subcommand, and every option of each, has its place in the page.
#[test]
fn man_page_covers_every_subcommand_and_option() {
    let page = render();
    let mut cmd = Cli::command();
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let heading = format!(".SH \"COMPOSEFS\\-STORAGE {}\"", sub.get_name().to_uppercase());
        let at = page.find(&heading).unwrap_or_else(|| panic!("no section for {}", sub.get_name()));
        let rest = &page[at + heading.len()..];
        let body = &rest[..rest.find("\n.SH ").unwrap_or(rest.len())];
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                // roff escapes each '-' of an option name.
                let roff_long = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(body.contains(&roff_long), "{}: --{long} is not in its section", sub.get_name());
            }
        }
    }
}
