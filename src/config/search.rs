//! Which storage.conf files are read, in which order (SPEC §1.3, container-libs `pkg/configfile`).
//!
//! 1. `$CONTAINERS_STORAGE_CONF` alone (missing = error), skipping steps 2 and 3;
//! 2. the first existing main file: user, `/etc`, `/usr/share`;
//! 3. drop-ins `*.conf` from `storage.conf.d`, `storage.rootful.conf.d` (UID 0) or
//!    `storage.rootless.conf.d` + `storage.rootless.conf.d/<UID>` (UID > 0), under `/usr/share`
//!    then `/etc`, then the user's `storage.conf.d`; keyed by basename (a later directory replaces
//!    an earlier file of the same name) and applied in byte order of the basename;
//! 4. `$CONTAINERS_STORAGE_CONF_OVERRIDE` (missing = error).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::LoadOptions;
use crate::{Error, Result};

/// Environment variable naming the only config file to read.
pub const ENV_CONF: &str = "CONTAINERS_STORAGE_CONF";
/// Environment variable naming a file decoded after all others.
pub const ENV_CONF_OVERRIDE: &str = "CONTAINERS_STORAGE_CONF_OVERRIDE";

const MAIN_NAME: &str = "storage.conf";
const DROPIN_SUFFIX: &[u8] = b".conf";
/// Vendor defaults and admin overrides, both relative to the injectable root.
const SYSTEM_DIR: &str = "usr/share/containers";
const ADMIN_DIR: &str = "etc/containers";

/// One file to decode, and why it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// Files named by an environment variable must exist; found files may vanish (skipped).
    pub required: bool,
}

/// The files to decode, in order.
pub fn config_files(opts: &LoadOptions) -> Result<Vec<ConfigFile>> {
    let mut files = Vec::new();
    let only = opts.env_nonempty(ENV_CONF);
    if let Some(path) = &only {
        files.push(ConfigFile { path: PathBuf::from(path), required: true });
    }
    let user_dir = user_config_dir(opts);
    let system_dir = opts.root.join(SYSTEM_DIR);
    let admin_dir = opts.root.join(ADMIN_DIR);
    if only.is_none() {
        let candidates = user_dir.iter().chain([&admin_dir, &system_dir]).map(|d| d.join(MAIN_NAME));
        for path in candidates {
            if exists(&path)? {
                files.push(ConfigFile { path, required: false });
                break;
            }
        }
        let mut dirs = Vec::new();
        for base in [&system_dir, &admin_dir] {
            dirs.push(base.join("storage.conf.d"));
            if opts.uid == 0 {
                dirs.push(base.join("storage.rootful.conf.d"));
            } else {
                let rootless = base.join("storage.rootless.conf.d");
                let per_uid = rootless.join(opts.uid.to_string());
                dirs.push(rootless);
                dirs.push(per_uid);
            }
        }
        if let Some(user) = &user_dir {
            // The user's directory has no rootful/rootless variants.
            dirs.push(user.join("storage.conf.d"));
        }
        files.extend(drop_ins(&dirs)?.into_iter().map(|path| ConfigFile { path, required: false }));
    }
    if let Some(path) = opts.env_nonempty(ENV_CONF_OVERRIDE) {
        files.push(ConfigFile { path: PathBuf::from(path), required: true });
    }
    Ok(files)
}

/// `$XDG_CONFIG_HOME/containers`, else `$HOME/.config/containers` (for root too); `None` when
/// neither is set (container-libs would ask the password database; we read only the environment).
pub fn user_config_dir(opts: &LoadOptions) -> Option<PathBuf> {
    if let Some(xdg) = opts.env_nonempty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(xdg).join("containers"));
    }
    opts.env_nonempty("HOME").map(|home| PathBuf::from(home).join(".config/containers"))
}

/// Drop-in files of `dirs` (in precedence order): regular `*.conf` files (symlinks are not
/// regular, as with Go's `DirEntry.Type()`), keyed by basename, sorted by basename bytes.
fn drop_ins(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut by_name: BTreeMap<OsString, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("read drop-in directory {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("read drop-in directory {}", dir.display()), e))?;
            let name = entry.file_name();
            if !name.as_bytes().ends_with(DROPIN_SUFFIX) {
                continue;
            }
            let file_type = entry.file_type().map_err(|e| Error::io(format!("stat {}", entry.path().display()), e))?;
            if file_type.is_file() {
                by_name.insert(name, entry.path());
            }
        }
    }
    Ok(by_name.into_values().collect())
}

/// Whether a main-file candidate exists: only "not found" means "try the next one".
fn exists(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("open {}", path.display()), e)),
    }
}
