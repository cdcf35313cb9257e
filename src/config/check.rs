//! Why composefs would not take effect: findings about a loaded configuration (SPEC §1.1, §1.4,
//! §3.2). containers/storage itself says nothing in most of these cases; composefs is silently off.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::{parse, Source, StorageConfig, PULL_OPTION_KEYS};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Composefs will not take effect, or containers/storage will refuse to start.
    Error,
    /// Composefs takes effect only partly, or a setting does not do what it seems to.
    Warning,
    /// Worth knowing; nothing is wrong.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One finding: a stable `code` (kebab-case, for programs and tests) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity.as_str(), self.message)
    }
}

/// Facts about the running host that decide whether containers/storage accepts composefs (SPEC §1.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Host {
    /// `$PATH`, searched for `mkcomposefs`.
    pub path_env: Option<OsString>,
    /// `$_CONTAINERS_USERNS_CONFIGURED` is set: podman re-executed itself in a user namespace.
    pub userns_configured: bool,
    /// `/proc/self/uid_map` maps the full ID range (the initial user namespace); `None` if unknown.
    pub full_uid_mapping: Option<bool>,
    /// The process has `CAP_SYS_ADMIN`; `None` if unknown.
    pub cap_sys_admin: Option<bool>,
}

impl Host {
    /// The facts of this process.
    pub fn current() -> Host {
        let uid_map = std::fs::read("/proc/self/uid_map").ok();
        Host {
            path_env: std::env::var_os("PATH"),
            userns_configured: std::env::var_os("_CONTAINERS_USERNS_CONFIGURED").is_some_and(|v| !v.is_empty()),
            // containers/storage: a full mapping contains 4294967295.
            full_uid_mapping: uid_map.map(|m| String::from_utf8_lossy(&m).contains("4294967295")),
            cap_sys_admin: rustix::thread::capabilities(None)
                .ok()
                .map(|c| c.effective.contains(rustix::thread::CapabilitySet::SYS_ADMIN)),
        }
    }
}

/// Findings about the host rather than the files: containers/storage's `unshare.IsRootless()` is
/// also true for root in a user namespace (no full UID mapping, no `CAP_SYS_ADMIN`), and with
/// composefs on its overlay driver refuses to start unless `mkcomposefs` is in `$PATH` (this
/// library does not need it).
pub fn check_host(cfg: &StorageConfig, host: &Host) -> Vec<Finding> {
    let mut out = Vec::new();
    if cfg.uid == 0 {
        let why = if host.userns_configured {
            Some("$_CONTAINERS_USERNS_CONFIGURED is set")
        } else if host.cap_sys_admin == Some(false) {
            Some("the process lacks CAP_SYS_ADMIN")
        } else if host.full_uid_mapping == Some(false) {
            Some("/proc/self/uid_map does not map the full UID range")
        } else {
            None
        };
        if let Some(why) = why {
            out.push(Finding {
                severity: Severity::Error,
                code: "user-namespace",
                message: format!(
                    "UID 0 here is not real root ({why}): containers/storage treats this as rootless and refuses \
                     composefs (\"composefs is not supported in user namespaces\")"
                ),
            });
        }
    }
    if cfg.use_composefs && !in_path("mkcomposefs", host.path_env.as_deref()) {
        out.push(Finding {
            severity: Severity::Warning,
            code: "mkcomposefs-missing",
            message: "mkcomposefs is not in $PATH: containers/storage's overlay driver refuses to start with \
                      composefs on (\"composefs helper program not found\"); install composefs (this library \
                      itself does not need it)"
                .into(),
        });
    }
    out
}

/// Go's `exec.LookPath` for a bare name: an executable non-directory in one of `$PATH`'s entries
/// (an empty entry is the current directory).
fn in_path(name: &str, path_env: Option<&OsStr>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path_env) = path_env else { return false };
    std::env::split_paths(path_env).any(|dir| {
        let dir = if dir.as_os_str().is_empty() { Path::new(".").to_path_buf() } else { dir };
        std::fs::metadata(dir.join(name)).is_ok_and(|m| !m.is_dir() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Findings as a JSON array of `{"severity", "code", "message"}` objects.
pub fn findings_to_json(findings: &[Finding]) -> String {
    serde_json::to_string(findings).unwrap_or_else(|_| "[]".to_string())
}

fn at(source: Option<&Source>) -> String {
    source.map(|s| format!(" ({s})")).unwrap_or_default()
}

pub(super) fn check(cfg: &StorageConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |severity, code, message: String| out.push(Finding { severity, code, message });
    let src = |key: &str| cfg.sources.get(key);
    let pull = &cfg.pull_options;

    if cfg.files.is_empty() {
        add(
            Severity::Info,
            "no-config-file",
            "no storage.conf was read: containers/storage uses its built-in defaults, which leave composefs off".into(),
        );
    }
    if let Some(path) = &cfg.storage_conf_env {
        add(
            Severity::Info,
            "storage-conf-env",
            format!(
                "$CONTAINERS_STORAGE_CONF selects {} as the only file: the main files and every storage.conf.d drop-in are skipped",
                path.display()
            ),
        );
    }

    // Is use_composefs on at all, and if not, why not.
    let discarded = |key: &str| cfg.discarded_by_storage_opts.iter().find(|(k, _)| k == key).map(|(_, s)| s);
    if !cfg.use_composefs {
        if let Some(s) = discarded("use_composefs") {
            add(
                Severity::Error,
                "storage-opts-replaces-use-composefs",
                format!(
                    "$STORAGE_OPTS is set, and it replaces every driver option from the files, so use_composefs ({s}) \
                     is discarded: add overlay.use_composefs=true to $STORAGE_OPTS, or unset it"
                ),
            );
        } else if let Some(ignored) = &cfg.ignored_use_composefs {
            add(
                Severity::Error,
                "use-composefs-wrong-table",
                format!(
                    "use_composefs = {} is set under [storage.options] ({}), where containers/storage decodes it and \
                     silently ignores it: move it to [storage.options.overlay] use_composefs = \"true\"",
                    parse::go_quote(&ignored.value),
                    ignored.source
                ),
            );
        } else if let Some(s) = src("use_composefs") {
            add(
                Severity::Error,
                "composefs-off",
                format!("composefs is off: use_composefs is false ({s}); set [storage.options.overlay] use_composefs = \"true\""),
            );
        } else {
            add(
                Severity::Error,
                "composefs-off",
                "composefs is off: [storage.options.overlay] use_composefs is not set; set use_composefs = \"true\" there"
                    .into(),
            );
        }
    } else if let Some(ignored) = &cfg.ignored_use_composefs {
        add(
            Severity::Warning,
            "use-composefs-wrong-table",
            format!(
                "use_composefs under [storage.options] ({}) is ignored by containers/storage; only \
                 [storage.options.overlay] use_composefs counts: remove the [storage.options] one",
                ignored.source
            ),
        );
    }

    if cfg.uid != 0 {
        add(
            Severity::Error,
            "rootless",
            format!(
                "running as UID {} (rootless): containers/storage refuses composefs in a user namespace \
                 (\"composefs is not supported in user namespaces\"); composefs needs root",
                cfg.uid
            ),
        );
    }

    match cfg.driver.as_str() {
        "overlay" => {}
        "" => add(
            Severity::Warning,
            "driver-unset",
            "driver is not set: containers/storage picks one automatically, and composefs needs overlay; set \
             [storage] driver = \"overlay\""
                .into(),
        ),
        other => add(
            Severity::Error,
            "driver-not-overlay",
            format!(
                "driver is {}{}: composefs works only with the overlay driver",
                parse::go_quote(other),
                at(src("driver"))
            ),
        ),
    }

    for (key, value) in &pull.raw {
        let where_ = at(src(key));
        if PULL_OPTION_KEYS.contains(&key.as_str()) {
            if key != "ostree_repos" && !parse::parse_pull_bool(value) && looks_true(value) {
                add(
                    Severity::Warning,
                    "pull-option-not-true",
                    format!(
                        "pull option {key} = {}{where_} counts as false: only the string \"true\" (any case) is true",
                        parse::go_quote(value)
                    ),
                );
            }
        } else {
            let hint = PULL_OPTION_KEYS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(key) || edit_distance(k, key) <= 2)
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            add(
                Severity::Warning,
                "unknown-pull-option",
                format!(
                    "pull option {}{where_} is not one containers/storage reads, so it does nothing{hint}",
                    parse::go_quote(key)
                ),
            );
        }
    }
    // Composefs only happens through the chunked differ (SPEC §1.1, §3.2).
    if cfg.use_composefs {
        if !pull.enable_partial_images {
            let also =
                if pull.convert_images { " (convert_images alone does not help: it needs the differ too)" } else { "" };
            add(
                Severity::Error,
                "partial-images-off",
                format!(
                    "use_composefs is on but pull option enable_partial_images is not \"true\"{}: containers/storage never \
                     uses its chunked differ, every layer is unpacked the classic way, and composefs never takes \
                     effect{also}; set pull_options = {{enable_partial_images = \"true\", convert_images = \"true\"}}",
                    at(src("enable_partial_images"))
                ),
            );
        } else if !pull.convert_images {
            add(
                Severity::Warning,
                "convert-images-off",
                "pull option convert_images is not \"true\": only zstd:chunked layers become composefs; gzip and \
                 plain tar layers are unpacked the classic way; set convert_images = \"true\""
                    .into(),
            );
        }
    }

    if pull.insecure_allow_unpredictable_image_contents {
        add(
            Severity::Warning,
            "insecure-contents",
            format!(
                "insecure_allow_unpredictable_image_contents is true{}: layer contents are not checked against the \
                 image's DiffIDs",
                at(src("insecure_allow_unpredictable_image_contents"))
            ),
        );
    }

    for (key, s) in &cfg.discarded_by_storage_opts {
        if key != "use_composefs" {
            add(
                Severity::Warning,
                "storage-opts-replaces-option",
                format!(
                    "$STORAGE_OPTS is set and replaces every driver option from the files: {key} ({s}) is discarded"
                ),
            );
        }
    }

    if !cfg.force_mask.is_empty() && !valid_force_mask(&cfg.force_mask) {
        add(
            Severity::Error,
            "force-mask-invalid",
            format!(
                "force_mask = {}{} is neither \"shared\", \"private\" nor an octal mode: the overlay driver refuses to \
                 start (strconv.ParseInt: parsing {}: invalid syntax)",
                parse::go_quote(&cfg.force_mask),
                at(src("force_mask")),
                parse::go_quote(&cfg.force_mask)
            ),
        );
    }

    if !cfg.imagestore.is_empty() && cfg.imagestore == cfg.graphroot {
        add(
            Severity::Error,
            "imagestore-is-graphroot",
            format!(
                "imagestore is the same as graphroot ({}): containers/storage refuses this (\"imagestore {} must either \
                 be not set or be a different than graphroot\")",
                cfg.imagestore, cfg.imagestore
            ),
        );
    }
    out
}

/// Strings people write meaning "true" that containers/storage's pull options read as false.
fn looks_true(v: &str) -> bool {
    let t = v.trim();
    parse::parse_go_bool(t) == Ok(true)
        || ["yes", "y", "on", "enable", "enabled"].iter().any(|w| t.eq_ignore_ascii_case(w))
}

/// The overlay driver's `force_mask`: "shared", "private", or `strconv.ParseInt(v, 8, 32)`.
fn valid_force_mask(v: &str) -> bool {
    matches!(v, "shared" | "private") || i32::from_str_radix(v, 8).is_ok()
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("convert_images", "convert_image"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn force_mask_values() {
        for ok in ["shared", "private", "0755", "700", "0"] {
            assert!(valid_force_mask(ok), "{ok}");
        }
        for bad in ["0x1ff", "rwx", "0789", ""] {
            assert!(!valid_force_mask(bad), "{bad}");
        }
    }
}
