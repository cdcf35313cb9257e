//! containers-storage.conf: loading the composefs-related settings as containers/storage does
//! (SPEC §1), and checking why composefs would not take effect.
//!
//! [`load`] finds the files ([`search`]), decodes each one ([`parse`]) onto the same settings the
//! way container-libs decodes every file onto one Go struct (a later file overrides only the keys
//! it sets; `pull_options` entries merge key by key), then applies `STORAGE_DRIVER` and
//! `STORAGE_OPTS` as `types.LoadStoreOptions` does. [`StorageConfig::check`] explains the result;
//! [`check_host`] adds what depends on the running host (user namespace, `mkcomposefs`).
//!
//! Values are the ones containers/storage would hand to the overlay driver and the pull code,
//! before built-in defaults: an empty string means "not set in any file". Paths are not
//! `$VAR`-expanded (containers/storage expands them only for rootless users).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

mod check;
pub mod parse;
pub mod search;

pub use check::{check_host, findings_to_json, Finding, Host, Severity};
pub use parse::{parse_go_bool, parse_pull_bool};
pub use search::{ENV_CONF, ENV_CONF_OVERRIDE};

use crate::{Error, ErrorKind, Result};

/// Environment variable that replaces the configured driver.
pub const ENV_STORAGE_DRIVER: &str = "STORAGE_DRIVER";
/// Environment variable that replaces *all* configured driver options (comma-separated).
pub const ENV_STORAGE_OPTS: &str = "STORAGE_OPTS";
/// Set by podman when it re-executes itself in a user namespace: the UID outside it.
pub const ENV_ROOTLESS_UID: &str = "_CONTAINERS_ROOTLESS_UID";

/// A config file larger than this is refused (real ones are a few KiB).
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// The keys of [`StorageConfig::get_string`] / [`StorageConfig::get_bool`] (and the C API).
pub const KEYS: &[&str] = &[
    "driver",
    "graphroot",
    "runroot",
    "imagestore",
    "use_composefs",
    "enable_partial_images",
    "convert_images",
    "use_hard_links",
    "insecure_allow_unpredictable_image_contents",
    "ostree_repos",
    "mountopt",
    "force_mask",
];

/// Pull-option keys that containers/storage reads (SPEC §1.1); others are ignored by it.
pub const PULL_OPTION_KEYS: &[&str] = &[
    "enable_partial_images",
    "convert_images",
    "use_hard_links",
    "insecure_allow_unpredictable_image_contents",
    "ostree_repos",
];

/// Everything the loader may read from outside the files: injectable, so tests never touch the
/// real `/etc` or the process environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Prefix for the implicit system paths `/etc/containers` and `/usr/share/containers`
    /// (container-libs' `RootForImplicitAbsolutePaths`); paths from the environment are not
    /// prefixed. `/` for the real system.
    pub root: PathBuf,
    /// The UID whose rootful (0) or rootless (> 0) drop-ins apply; also what `check` calls rootless.
    pub uid: u32,
    /// The environment the loader sees: only [`LoadOptions::ENV_VARS`] matter.
    pub env: BTreeMap<String, OsString>,
}

impl LoadOptions {
    /// The environment variables the loader reads.
    pub const ENV_VARS: &'static [&'static str] = &[
        ENV_CONF,
        ENV_CONF_OVERRIDE,
        "XDG_CONFIG_HOME",
        "HOME",
        ENV_STORAGE_DRIVER,
        ENV_STORAGE_OPTS,
        ENV_ROOTLESS_UID,
    ];

    /// The real system: root `/`, the process's environment, and its UID as containers/storage
    /// sees it (`$_CONTAINERS_ROOTLESS_UID` if set, else the effective UID).
    pub fn from_process() -> LoadOptions {
        let env: BTreeMap<String, OsString> =
            Self::ENV_VARS.iter().filter_map(|name| std::env::var_os(name).map(|v| (name.to_string(), v))).collect();
        // Go's `strconv.Atoi` result, where a bad value reads as 0 (and a negative one is not rootless).
        let uid = match env.get(ENV_ROOTLESS_UID).filter(|v| !v.is_empty()) {
            Some(v) => v.to_str().and_then(|v| v.parse().ok()).unwrap_or(0),
            None => rustix::process::geteuid().as_raw(),
        };
        LoadOptions { root: PathBuf::from("/"), uid, env }
    }

    /// A system rooted at `root`, with an empty environment and UID 0 (for tests and tools).
    pub fn isolated(root: impl Into<PathBuf>) -> LoadOptions {
        LoadOptions { root: root.into(), uid: 0, env: BTreeMap::new() }
    }

    /// Sets one environment variable.
    pub fn with_env(mut self, name: &str, value: impl Into<OsString>) -> LoadOptions {
        self.env.insert(name.to_string(), value.into());
        self
    }

    /// Sets the UID.
    pub fn with_uid(mut self, uid: u32) -> LoadOptions {
        self.uid = uid;
        self
    }

    /// Replaces the root for the system paths.
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> LoadOptions {
        self.root = root.into();
        self
    }

    fn env(&self, name: &str) -> Option<&OsStr> {
        self.env.get(name).map(|v| v.as_os_str())
    }

    /// A variable that is set and not empty (Go's `os.Getenv(x) != ""`).
    fn env_nonempty(&self, name: &str) -> Option<&OsStr> {
        self.env(name).filter(|v| !v.is_empty())
    }
}

impl Default for LoadOptions {
    /// Same as [`LoadOptions::from_process`].
    fn default() -> LoadOptions {
        LoadOptions::from_process()
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A line of a config file.
    File { path: PathBuf, line: usize },
    /// An environment variable (`STORAGE_DRIVER`, `STORAGE_OPTS`).
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { path, line } => write!(f, "{}: line {line}", path.display()),
            Source::Env(name) => write!(f, "${name}"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A raw string setting and where it was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub value: String,
    pub source: Source,
}

/// The pull options containers/storage hands to its pull code (SPEC §1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PullOptions {
    /// The chunked differ's master switch.
    pub enable_partial_images: bool,
    /// Convert layers without a TOC locally (and allow no fallback).
    pub convert_images: bool,
    /// Dedup with hard links.
    pub use_hard_links: bool,
    /// Skip the DiffID recomputation.
    pub insecure_allow_unpredictable_image_contents: bool,
    /// OSTree repositories searched for objects (the value split on `:`, empty parts dropped).
    pub ostree_repos: Vec<String>,
    /// Every `pull_options` entry as merged across files, including keys containers/storage ignores.
    pub raw: BTreeMap<String, String>,
}

/// The effective composefs-related settings of containers-storage.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageConfig {
    /// Storage driver (`$STORAGE_DRIVER` wins; `overlay2` becomes `overlay`); "" = unset.
    pub driver: String,
    pub graphroot: String,
    pub runroot: String,
    pub imagestore: String,
    /// `[storage.options.overlay] use_composefs` (or `use_composefs=` in `$STORAGE_OPTS`), parsed
    /// with Go's `strconv.ParseBool`; false when unset.
    pub use_composefs: bool,
    pub pull_options: PullOptions,
    /// Overlay mount options: `[storage.options.overlay] mountopt`, else `[storage.options] mountopt`
    /// (or from `$STORAGE_OPTS`).
    pub mountopt: String,
    /// `[storage.options.overlay] force_mask`, else `[storage.options] force_mask` in octal (or
    /// from `$STORAGE_OPTS`); "" = unset.
    pub force_mask: String,
    /// The UID the files were selected for.
    pub uid: u32,
    /// Files decoded, in order.
    pub files: Vec<PathBuf>,
    /// Where each key of [`KEYS`] that is set, and each `pull_options` entry, came from.
    pub sources: BTreeMap<String, Source>,
    /// `[storage.options] use_composefs`: decoded by containers/storage but never used.
    pub ignored_use_composefs: Option<Setting>,
    /// `$STORAGE_OPTS` when set: it replaced every driver option from the files.
    pub storage_opts: Option<String>,
    /// Driver options set in files that `$STORAGE_OPTS` discarded (key, where).
    pub discarded_by_storage_opts: Vec<(String, Source)>,
    /// `$CONTAINERS_STORAGE_CONF` when it selected the only file.
    pub storage_conf_env: Option<PathBuf>,
}

/// Loads the configuration like container-libs' `types.LoadStoreOptions` (SPEC §1.3).
pub fn load(opts: &LoadOptions) -> Result<StorageConfig> {
    let files = search::config_files(opts)?;
    let mut cfg = decode_files(&files, opts.uid)?;
    cfg.storage_conf_env = opts.env_nonempty(ENV_CONF).map(PathBuf::from);
    if let Some(driver) = opts.env_nonempty(ENV_STORAGE_DRIVER) {
        cfg.driver = normalize_driver(&driver.to_string_lossy());
        cfg.sources.insert("driver".into(), Source::Env(ENV_STORAGE_DRIVER));
    }
    if let Some(storage_opts) = opts.env(ENV_STORAGE_OPTS) {
        apply_storage_opts(&mut cfg, &storage_opts.to_string_lossy())?;
    }
    finish(&mut cfg);
    Ok(cfg)
}

/// Loads exactly one file, with no environment (for `config --file` and tests). The UID is the
/// process's, so that [`StorageConfig::check`] can judge rootless use.
pub fn load_file(path: impl AsRef<Path>) -> Result<StorageConfig> {
    let file = search::ConfigFile { path: path.as_ref().to_path_buf(), required: true };
    let mut cfg = decode_files(&[file], LoadOptions::from_process().uid)?;
    finish(&mut cfg);
    Ok(cfg)
}

/// Raw values after decoding all files, before env overrides.
#[derive(Default)]
struct Merged {
    driver: Option<Setting>,
    graphroot: Option<Setting>,
    runroot: Option<Setting>,
    imagestore: Option<Setting>,
    options_use_composefs: Option<Setting>,
    options_mountopt: Option<Setting>,
    options_force_mask: Option<Setting>,
    use_composefs: Option<Setting>,
    mountopt: Option<Setting>,
    force_mask: Option<Setting>,
    pull: BTreeMap<String, Setting>,
}

fn decode_files(files: &[search::ConfigFile], uid: u32) -> Result<StorageConfig> {
    let mut m = Merged::default();
    let mut read = Vec::new();
    for file in files {
        let Some(text) = read_config(file)? else {
            continue;
        };
        let v = parse::parse_file(&file.path, &text)?;
        let at = |l: parse::Located| Setting {
            value: l.value,
            source: Source::File { path: file.path.clone(), line: l.line },
        };
        // A key the file sets replaces the earlier value, even with ""; others are kept.
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(l) = v.$f { m.$f = Some(at(l)); } )* };
        }
        over!(
            driver,
            graphroot,
            runroot,
            imagestore,
            options_use_composefs,
            options_mountopt,
            options_force_mask,
            use_composefs,
            mountopt,
            force_mask
        );
        for (k, l) in v.pull_options {
            m.pull.insert(k, at(l));
        }
        read.push(file.path.clone());
    }

    let mut cfg = StorageConfig { uid, files: read, ..StorageConfig::default() };
    let mut take = |key: &str, s: Option<Setting>| -> String {
        match s {
            Some(s) if !s.value.is_empty() => {
                cfg.sources.insert(key.to_string(), s.source);
                s.value
            }
            _ => String::new(),
        }
    };
    let driver = take("driver", m.driver);
    let graphroot = take("graphroot", m.graphroot);
    let runroot = take("runroot", m.runroot);
    let imagestore = take("imagestore", m.imagestore);
    // Driver options: the unprefixed ones from [storage.options] come first and the overlay table's
    // later, so the overlay table wins (types/options.go, pkg/config GetGraphDriverOptions).
    let mountopt = take("mountopt", m.mountopt.filter(|s| !s.value.is_empty()).or(m.options_mountopt));
    let force_mask = take("force_mask", m.force_mask.filter(|s| !s.value.is_empty()).or(m.options_force_mask));
    let use_composefs = m.use_composefs.filter(|s| !s.value.is_empty());
    cfg.driver = normalize_driver(&driver);
    cfg.graphroot = graphroot;
    cfg.runroot = runroot;
    cfg.imagestore = imagestore;
    cfg.mountopt = mountopt;
    cfg.force_mask = force_mask;
    cfg.ignored_use_composefs = m.options_use_composefs.filter(|s| !s.value.is_empty());
    if let Some(s) = use_composefs {
        cfg.use_composefs = parse_use_composefs(&s)?;
        cfg.sources.insert("use_composefs".into(), s.source);
    }
    for (key, s) in &m.pull {
        cfg.sources.insert(key.clone(), s.source.clone());
    }
    cfg.pull_options.raw = m.pull.into_iter().map(|(k, s)| (k, s.value)).collect();
    Ok(cfg)
}

/// Derives the typed pull options from the raw map.
fn finish(cfg: &mut StorageConfig) {
    let raw = &cfg.pull_options.raw;
    let flag = |k: &str| raw.get(k).is_some_and(|v| parse_pull_bool(v));
    let p = PullOptions {
        enable_partial_images: flag("enable_partial_images"),
        convert_images: flag("convert_images"),
        use_hard_links: flag("use_hard_links"),
        insecure_allow_unpredictable_image_contents: flag("insecure_allow_unpredictable_image_contents"),
        ostree_repos: raw
            .get("ostree_repos")
            .map(|v| v.split(':').filter(|p| !p.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        raw: raw.clone(),
    };
    cfg.pull_options = p;
}

fn parse_use_composefs(s: &Setting) -> Result<bool> {
    parse_go_bool(&s.value).map_err(|go| {
        Error::format(format!(
            "{}: use_composefs: {go} (write \"true\" or \"false\"; accepted: 1 t T TRUE true True 0 f F FALSE false False)",
            s.source
        ))
    })
}

/// containers/storage switches `overlay2` to the equivalent `overlay`.
fn normalize_driver(driver: &str) -> String {
    if driver == "overlay2" {
        "overlay".to_string()
    } else {
        driver.to_string()
    }
}

/// `$STORAGE_OPTS` replaces every driver option from the files (`types.LoadStoreOptions`); the
/// overlay driver then reads `[overlay.|overlay2.]key=value` entries (SPEC §1.1 "Driver options").
fn apply_storage_opts(cfg: &mut StorageConfig, opts: &str) -> Result<()> {
    for key in ["use_composefs", "mountopt", "force_mask"] {
        if let Some(source) = cfg.sources.remove(key) {
            cfg.discarded_by_storage_opts.push((key.to_string(), source));
        }
    }
    cfg.use_composefs = false;
    cfg.mountopt.clear();
    cfg.force_mask.clear();
    cfg.storage_opts = Some(opts.to_string());
    if opts.is_empty() {
        return Ok(());
    }
    let source = Source::Env(ENV_STORAGE_OPTS);
    for option in opts.split(',') {
        let (key, value) = parse_driver_option(option)?;
        let (driver, name) = match key.split_once('.') {
            Some((driver, name)) => (driver, name),
            None => ("", key.as_str()),
        };
        if !matches!(driver, "" | "overlay" | "overlay2") {
            continue; // another driver's option
        }
        match name {
            "use_composefs" => {
                let s = Setting { value: value.clone(), source: source.clone() };
                cfg.use_composefs = parse_use_composefs(&s)?;
            }
            "mountopt" => cfg.mountopt = value.clone(),
            "force_mask" => cfg.force_mask = value.clone(),
            _ => continue,
        }
        cfg.sources.insert(name.to_string(), source.clone());
    }
    Ok(())
}

/// container-libs `ParseDriverOption`: `key=value`, spaces trimmed, key lower-cased, a driver
/// prefix must be a known driver.
fn parse_driver_option(option: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::format(format!("${ENV_STORAGE_OPTS}: {why}"));
    let Some((key, value)) = option.split_once('=') else {
        return Err(bad(&format!("unable to parse key/value option: {option}")));
    };
    let key = key.trim().to_lowercase();
    if let Some((driver, _)) = key.split_once('.') {
        if !driver.is_empty() && !matches!(driver, "overlay" | "overlay2" | "btrfs" | "zfs" | "vfs") {
            return Err(bad(&format!(
                "unknown driver {} in option {}",
                parse::go_quote(driver),
                parse::go_quote(option)
            )));
        }
    }
    Ok((key, value.trim().to_string()))
}

/// Reads a config file; `None` when a found (not required) file vanished meanwhile.
fn read_config(file: &search::ConfigFile) -> Result<Option<String>> {
    let path = &file.path;
    let context = || {
        if file.required {
            format!("open {} (named by the environment)", path.display())
        } else {
            format!("open {}", path.display())
        }
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if !file.required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(context(), e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(Error::limit(format!("{}: larger than {MAX_FILE_SIZE} bytes", path.display())));
    }
    String::from_utf8(bytes).map(Some).map_err(|e| {
        Error::format(format!("{}: not valid UTF-8 at byte {}", path.display(), e.utf8_error().valid_up_to()))
    })
}

impl StorageConfig {
    /// A string value by key (one of [`KEYS`]): booleans as "true"/"false", `ostree_repos`
    /// colon-joined, unset values as "".
    pub fn get_string(&self, key: &str) -> Result<String> {
        Ok(match key {
            "driver" => self.driver.clone(),
            "graphroot" => self.graphroot.clone(),
            "runroot" => self.runroot.clone(),
            "imagestore" => self.imagestore.clone(),
            "mountopt" => self.mountopt.clone(),
            "force_mask" => self.force_mask.clone(),
            "ostree_repos" => self.pull_options.ostree_repos.join(":"),
            _ => self.get_bool(key).map_err(|_| unknown_key(key))?.to_string(),
        })
    }

    /// A boolean value by key: `use_composefs` and the four boolean pull options.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let p = &self.pull_options;
        match key {
            "use_composefs" => Ok(self.use_composefs),
            "enable_partial_images" => Ok(p.enable_partial_images),
            "convert_images" => Ok(p.convert_images),
            "use_hard_links" => Ok(p.use_hard_links),
            "insecure_allow_unpredictable_image_contents" => Ok(p.insecure_allow_unpredictable_image_contents),
            k if KEYS.contains(&k) => {
                Err(Error::invalid_argument(format!("config key {} is a string, not a boolean", parse::go_quote(k))))
            }
            k => Err(unknown_key(k)),
        }
    }

    /// The effective settings as a JSON object: the [`KEYS`] (`ostree_repos` as an array), the raw
    /// `pull_options`, `uid`, `files` in read order, and `sources` (where each set key came from).
    pub fn to_json(&self) -> String {
        let p = &self.pull_options;
        let view = JsonView {
            driver: &self.driver,
            graphroot: &self.graphroot,
            runroot: &self.runroot,
            imagestore: &self.imagestore,
            use_composefs: self.use_composefs,
            enable_partial_images: p.enable_partial_images,
            convert_images: p.convert_images,
            use_hard_links: p.use_hard_links,
            insecure_allow_unpredictable_image_contents: p.insecure_allow_unpredictable_image_contents,
            ostree_repos: &p.ostree_repos,
            mountopt: &self.mountopt,
            force_mask: &self.force_mask,
            pull_options: &p.raw,
            uid: self.uid,
            files: self.files.iter().map(|f| f.to_string_lossy()).collect(),
            sources: &self.sources,
        };
        serde_json::to_string_pretty(&view).unwrap_or_default()
    }

    /// Why composefs would not take effect (or the store would not start): see [`Finding`].
    pub fn check(&self) -> Vec<Finding> {
        check::check(self)
    }
}

/// The JSON form of [`StorageConfig`], in [`KEYS`] order.
#[derive(Serialize)]
struct JsonView<'a> {
    driver: &'a str,
    graphroot: &'a str,
    runroot: &'a str,
    imagestore: &'a str,
    use_composefs: bool,
    enable_partial_images: bool,
    convert_images: bool,
    use_hard_links: bool,
    insecure_allow_unpredictable_image_contents: bool,
    ostree_repos: &'a [String],
    mountopt: &'a str,
    force_mask: &'a str,
    pull_options: &'a BTreeMap<String, String>,
    uid: u32,
    files: Vec<std::borrow::Cow<'a, str>>,
    sources: &'a BTreeMap<String, Source>,
}

fn unknown_key(key: &str) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("unknown config key {} (known: {})", parse::go_quote(key), KEYS.join(", ")),
    )
}
