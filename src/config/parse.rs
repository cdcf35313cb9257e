//! One storage.conf file → the keys this library cares about, each with its line (SPEC §1.1, §1.2).
//!
//! containers/storage decodes every file onto the same Go struct with BurntSushi/toml. We mirror the
//! parts of that decoder that decide what a value ends up being:
//! - struct fields (`driver`, `use_composefs`, tables) match keys exactly or, failing that,
//!   case-insensitively; map keys (`pull_options`) are verbatim;
//! - a key of the wrong TOML type for its Go field fails the whole file (fatal in container-libs);
//! - unknown keys are ignored.

use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::{Error, Result};

/// A string value as written in one file, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub value: String,
    pub line: usize,
}

/// The keys one file sets. `None` means the file does not mention the key (so an earlier file's
/// value survives, as with Go decoding onto the same struct).
#[derive(Debug, Default)]
pub(crate) struct FileValues {
    pub driver: Option<Located>,
    pub graphroot: Option<Located>,
    pub runroot: Option<Located>,
    pub imagestore: Option<Located>,
    /// `[storage.options] use_composefs`: decoded, never forwarded by containers/storage.
    pub options_use_composefs: Option<Located>,
    /// `[storage.options] mountopt`: forwarded as an unprefixed `mountopt=` driver option.
    pub options_mountopt: Option<Located>,
    /// `[storage.options] force_mask`: a Go `os.FileMode` (TOML integer), kept as octal text.
    pub options_force_mask: Option<Located>,
    pub use_composefs: Option<Located>,
    pub mountopt: Option<Located>,
    pub force_mask: Option<Located>,
    /// `pull_options` entries in file order; merged key by key into earlier files' map.
    pub pull_options: Vec<(String, Located)>,
}

/// Parses the text of `path` (used only in messages).
pub(crate) fn parse_file(path: &Path, text: &str) -> Result<FileValues> {
    let doc = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        Error::format(format!("{}: line {line}: TOML syntax error: {}", path.display(), e.message().trim_end()))
    })?;
    let cx = Cx { path, text };
    let mut out = FileValues::default();
    // A key that matches several TOML keys (`[storage]` and `[Storage]`) decodes each of them onto
    // the same field; the exact spelling is applied last.
    fn set(slot: &mut Option<Located>, v: Option<Located>) {
        if v.is_some() {
            *slot = v;
        }
    }
    for storage in cx.tables(doc.get_ref(), "storage", "storage")? {
        set(&mut out.driver, cx.string(storage, "driver", "storage.driver")?);
        set(&mut out.graphroot, cx.string(storage, "graphroot", "storage.graphroot")?);
        set(&mut out.runroot, cx.string(storage, "runroot", "storage.runroot")?);
        set(&mut out.imagestore, cx.string(storage, "imagestore", "storage.imagestore")?);
        for options in cx.tables(storage, "options", "storage.options")? {
            set(&mut out.options_use_composefs, cx.string(options, "use_composefs", "storage.options.use_composefs")?);
            set(&mut out.options_mountopt, cx.string(options, "mountopt", "storage.options.mountopt")?);
            set(&mut out.options_force_mask, cx.file_mode(options, "force_mask", "storage.options.force_mask")?);
            for pull in cx.tables(options, "pull_options", "storage.options.pull_options")? {
                for (key, value) in pull.iter() {
                    let name = key.get_ref().to_string();
                    let what = format!("storage.options.pull_options.{name}");
                    out.pull_options.push((name.clone(), cx.expect_string(value, &name, &what)?));
                }
            }
            for overlay in cx.tables(options, "overlay", "storage.options.overlay")? {
                let what = "storage.options.overlay";
                set(&mut out.use_composefs, cx.string(overlay, "use_composefs", &format!("{what}.use_composefs"))?);
                set(&mut out.mountopt, cx.string(overlay, "mountopt", &format!("{what}.mountopt"))?);
                set(&mut out.force_mask, cx.string(overlay, "force_mask", &format!("{what}.force_mask"))?);
            }
        }
    }
    Ok(out)
}

/// The file being decoded, for messages.
struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn line(&self, v: &Spanned<DeValue<'_>>) -> usize {
        line_of(self.text, v.span().start)
    }

    /// The sub-tables named `name` (a `[header]` table, an inline table or dotted keys all look the
    /// same here).
    fn tables<'t, 'i>(&self, parent: &'t DeTable<'i>, name: &str, what: &str) -> Result<Vec<&'t DeTable<'i>>> {
        fields(parent, name)
            .into_iter()
            .map(|v| match v.get_ref() {
                DeValue::Table(t) => Ok(t),
                other => Err(Error::format(format!(
                    "{}: line {}: {what} is a TOML {}, but containers/storage expects a table ([{what}])",
                    self.path.display(),
                    self.line(v),
                    type_name(other)
                ))),
            })
            .collect()
    }

    /// A key that containers/storage decodes into a Go `string`.
    fn string(&self, table: &DeTable<'_>, name: &str, what: &str) -> Result<Option<Located>> {
        let mut last = None;
        for v in fields(table, name) {
            last = Some(self.expect_string(v, name, what)?);
        }
        Ok(last)
    }

    fn expect_string(&self, v: &Spanned<DeValue<'_>>, name: &str, what: &str) -> Result<Located> {
        let line = self.line(v);
        match v.get_ref() {
            DeValue::String(s) => Ok(Located { value: s.to_string(), line }),
            other => {
                let fix = match other {
                    DeValue::Boolean(b) => format!("{name} = \"{b}\""),
                    DeValue::Integer(i) => format!("{name} = \"{i}\""),
                    DeValue::Float(f) => format!("{name} = \"{f}\""),
                    _ => format!("{name} = \"...\" (a quoted string)"),
                };
                Err(Error::format(format!(
                    "{}: line {line}: {what} is a TOML {}, but containers/storage reads it as a string and \
                     refuses the whole file: write {fix}",
                    self.path.display(),
                    type_name(other)
                )))
            }
        }
    }

    /// `[storage.options] force_mask`, a Go `os.FileMode`: only a TOML integer decodes.
    fn file_mode(&self, table: &DeTable<'_>, name: &str, what: &str) -> Result<Option<Located>> {
        let Some(v) = fields(table, name).pop() else {
            return Ok(None);
        };
        let line = self.line(v);
        let bad = |detail: String| {
            Error::format(format!(
                "{}: line {line}: {what} {detail}; containers/storage refuses the whole file: write \
                 {name} = 0o700 (an integer) here, or put {name} = \"0700\" under [storage.options.overlay]",
                self.path.display()
            ))
        };
        match v.get_ref() {
            DeValue::Integer(i) => {
                let parsed = u64::from_str_radix(i.as_str(), i.radix()).ok();
                match parsed.filter(|m| *m <= u64::from(u32::MAX)) {
                    Some(m) => Ok(Some(Located { value: if m == 0 { String::new() } else { format!("{m:o}") }, line })),
                    None => Err(bad(format!("= {i} is out of range for a file mode"))),
                }
            }
            other => Err(bad(format!(
                "is a TOML {}, but containers/storage reads it as an integer file mode",
                type_name(other)
            ))),
        }
    }
}

/// The entries of `table` that BurntSushi/toml decodes into the Go struct field `name`: every key
/// equal to it ignoring case, with the exact spelling last (Go visits them in map order, so which
/// wins is unspecified there; the exact one is the natural choice).
fn fields<'t, 'i>(table: &'t DeTable<'i>, name: &str) -> Vec<&'t Spanned<DeValue<'i>>> {
    let mut folded = Vec::new();
    let mut exact = None;
    for (k, v) in table.iter() {
        let k: &str = k.get_ref();
        if k == name {
            exact = Some(v);
        } else if k.eq_ignore_ascii_case(name) {
            folded.push(v);
        }
    }
    folded.extend(exact);
    folded
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "float",
        DeValue::Boolean(_) => "bool",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "array",
        DeValue::Table(_) => "table",
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// Go's `strconv.ParseBool`, with its error text (SPEC §1.1: `use_composefs`).
pub fn parse_go_bool(s: &str) -> std::result::Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {}: invalid syntax", go_quote(s))),
    }
}

/// A pull-option boolean: true only for the string "true" in any case (SPEC §1.1).
pub fn parse_pull_bool(s: &str) -> bool {
    s.eq_ignore_ascii_case("true")
}

/// Go's `%q` for the strings that show up in messages (close enough: printable text verbatim,
/// the rest escaped).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileValues> {
        parse_file(Path::new("/t/storage.conf"), text)
    }

    #[test]
    fn reads_keys_with_lines() {
        let v =
            parse("[storage]\ndriver = \"overlay\"\n\n[storage.options.overlay]\nuse_composefs = \"true\"\n").unwrap();
        assert_eq!(v.driver, Some(Located { value: "overlay".into(), line: 2 }));
        assert_eq!(v.use_composefs, Some(Located { value: "true".into(), line: 5 }));
    }

    #[test]
    fn struct_fields_fold_case_map_keys_do_not() {
        // "[Storage]" and "[storage...]" are distinct TOML tables that decode onto the same Go field.
        let text = "[Storage]\nDRIVER = \"vfs\"\n[storage.options.pull_options]\nEnable_Partial_Images = \"true\"\n";
        let v = parse(text).unwrap();
        assert_eq!(v.driver.unwrap().value, "vfs");
        assert_eq!(v.pull_options[0].0, "Enable_Partial_Images");
        // On a conflict the exact spelling is applied last.
        let v = parse("[storage]\nDriver = \"a\"\ndriver = \"b\"\nDRIVER = \"c\"\n").unwrap();
        assert_eq!(v.driver.unwrap().value, "b");
    }

    #[test]
    fn options_force_mask_is_an_integer() {
        let v = parse("[storage.options]\nforce_mask = 0o750\n").unwrap();
        assert_eq!(v.options_force_mask.unwrap().value, "750");
        let e = parse("[storage.options]\nforce_mask = \"0750\"\n").unwrap_err();
        assert!(e.to_string().contains("line 2: storage.options.force_mask is a TOML string"), "{e}");
    }

    #[test]
    fn go_bool_spellings() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false), "{f}");
        }
        for bad in ["yes", "tRUE", "", " true", "on"] {
            assert_eq!(
                parse_go_bool(bad),
                Err(format!("strconv.ParseBool: parsing {}: invalid syntax", go_quote(bad)))
            );
        }
        assert_eq!(go_quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn line_of_counts_newlines() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
