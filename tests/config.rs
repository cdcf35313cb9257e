//! containers-storage.conf loading and checking (SPEC §1), through the Rust API and the C API.
//! Every test builds its own root in a temp dir and an explicit environment: nothing reads the real
//! /etc or the process environment (except the one C test of `cfs_config_load`, which says so).

use std::ffi::{c_char, CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::ptr;

use composefs_storage::config::{self, Finding, LoadOptions, Severity, StorageConfig};
use composefs_storage::ErrorKind;

/// A fake system: `<tmp>/root` is the root for /etc and /usr/share, `<tmp>/home` is $HOME.
struct Sys {
    tmp: tempfile::TempDir,
}

impl Sys {
    fn new() -> Sys {
        Sys { tmp: tempfile::tempdir().unwrap() }
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }
    /// Writes `text` at `rel` under the temp dir and returns the full path.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.tmp.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }
    fn opts(&self) -> LoadOptions {
        LoadOptions::isolated(self.root()).with_env("HOME", self.home())
    }
    fn load(&self) -> StorageConfig {
        config::load(&self.opts()).unwrap()
    }
    fn files(&self, cfg: &StorageConfig) -> Vec<String> {
        cfg.files.iter().map(|f| f.strip_prefix(self.tmp.path()).unwrap().display().to_string()).collect()
    }
}

fn driver(name: &str) -> String {
    format!("[storage]\ndriver = \"{name}\"\n")
}

fn load_text(text: &str) -> composefs_storage::Result<StorageConfig> {
    let sys = Sys::new();
    let p = sys.write("storage.conf", text);
    config::load_file(p)
}

fn codes(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.code).collect()
}

// ---- values ----

const FULL: &str = r#"
[storage]
driver = "overlay"
graphroot = "/var/lib/containers/storage"
runroot = "/run/containers/storage"
imagestore = "/var/lib/images"

[storage.options.pull_options]
enable_partial_images = "true"
convert_images = "TRUE"
use_hard_links = "True"
insecure_allow_unpredictable_image_contents = "tRuE"
ostree_repos = "/ostree/repo:/var/ostree::/third"

[storage.options.overlay]
use_composefs = "true"
mountopt = "nodev,metacopy=on"
force_mask = "0755"
"#;

#[test]
fn every_key_is_read() {
    let cfg = load_text(FULL).unwrap();
    assert_eq!(cfg.driver, "overlay");
    assert_eq!(cfg.graphroot, "/var/lib/containers/storage");
    assert_eq!(cfg.runroot, "/run/containers/storage");
    assert_eq!(cfg.imagestore, "/var/lib/images");
    assert!(cfg.use_composefs);
    let p = &cfg.pull_options;
    assert!(p.enable_partial_images && p.convert_images && p.use_hard_links);
    assert!(p.insecure_allow_unpredictable_image_contents);
    assert_eq!(p.ostree_repos, ["/ostree/repo", "/var/ostree", "/third"]);
    assert_eq!(cfg.mountopt, "nodev,metacopy=on");
    assert_eq!(cfg.force_mask, "0755");

    let expect = [
        ("driver", "overlay"),
        ("graphroot", "/var/lib/containers/storage"),
        ("runroot", "/run/containers/storage"),
        ("imagestore", "/var/lib/images"),
        ("use_composefs", "true"),
        ("enable_partial_images", "true"),
        ("convert_images", "true"),
        ("use_hard_links", "true"),
        ("insecure_allow_unpredictable_image_contents", "true"),
        ("ostree_repos", "/ostree/repo:/var/ostree:/third"),
        ("mountopt", "nodev,metacopy=on"),
        ("force_mask", "0755"),
    ];
    assert_eq!(expect.len(), config::KEYS.len());
    for (k, v) in expect {
        assert_eq!(cfg.get_string(k).unwrap(), v, "{k}");
    }
    assert!(cfg.get_bool("use_composefs").unwrap());
    assert_eq!(cfg.get_bool("driver").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(cfg.get_string("nope").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(cfg.get_bool("nope").unwrap_err().kind(), ErrorKind::InvalidArgument);
    // Where each value came from: file and line.
    assert!(
        cfg.sources["use_composefs"].to_string().ends_with("storage.conf: line 16"),
        "{}",
        cfg.sources["use_composefs"]
    );
    assert!(cfg.sources["driver"].to_string().ends_with("storage.conf: line 3"));
}

#[test]
fn unset_values_are_empty_and_false() {
    let cfg = load_text("").unwrap();
    for k in config::KEYS {
        let v = cfg.get_string(k).unwrap();
        assert!(v.is_empty() || v == "false", "{k} = {v:?}");
    }
    assert!(!cfg.use_composefs);
}

#[test]
fn use_composefs_accepts_every_go_parsebool_spelling() {
    for (s, want) in [
        ("1", true),
        ("t", true),
        ("T", true),
        ("TRUE", true),
        ("true", true),
        ("True", true),
        ("0", false),
        ("f", false),
        ("F", false),
        ("FALSE", false),
        ("false", false),
        ("False", false),
    ] {
        let cfg = load_text(&format!("[storage.options.overlay]\nuse_composefs = \"{s}\"\n")).unwrap();
        assert_eq!(cfg.use_composefs, want, "{s}");
    }
}

#[test]
fn use_composefs_rejects_other_spellings_with_go_text() {
    for bad in ["yes", "tRue", "on", " true"] {
        let sys = Sys::new();
        let p = sys.write("storage.conf", &format!("[storage.options.overlay]\n\nuse_composefs = \"{bad}\"\n"));
        let e = config::load_file(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format);
        let msg = e.to_string();
        assert!(msg.contains(&format!("strconv.ParseBool: parsing \"{bad}\": invalid syntax")), "{msg}");
        assert!(msg.contains(&format!("{}: line 3", p.display())), "{msg}");
    }
}

#[test]
fn empty_use_composefs_is_unset() {
    let cfg = load_text("[storage.options.overlay]\nuse_composefs = \"\"\n").unwrap();
    assert!(!cfg.use_composefs);
    assert!(!cfg.sources.contains_key("use_composefs"));
}

#[test]
fn pull_option_bools_are_true_only_for_true_in_any_case() {
    for (s, want) in [
        ("true", true),
        ("TRUE", true),
        ("True", true),
        ("tRuE", true),
        ("1", false),
        ("yes", false),
        ("on", false),
        ("t", false),
        ("false", false),
        ("", false),
        (" true", false),
    ] {
        let cfg = load_text(&format!(
            "[storage.options.pull_options]\nenable_partial_images = \"{s}\"\nconvert_images = \"{s}\"\n\
             use_hard_links = \"{s}\"\ninsecure_allow_unpredictable_image_contents = \"{s}\"\n"
        ))
        .unwrap();
        let p = &cfg.pull_options;
        assert_eq!(
            [
                p.enable_partial_images,
                p.convert_images,
                p.use_hard_links,
                p.insecure_allow_unpredictable_image_contents
            ],
            [want; 4],
            "{s:?}"
        );
    }
}

#[test]
fn inline_and_table_pull_options_are_the_same() {
    let inline = load_text(
        "[storage.options]\npull_options = {enable_partial_images = \"true\", use_hard_links = \"false\", ostree_repos = \"\", convert_images = \"true\"}\n",
    )
    .unwrap();
    let table = load_text(
        "[storage.options.pull_options]\nenable_partial_images = \"true\"\nuse_hard_links = \"false\"\nostree_repos = \"\"\nconvert_images = \"true\"\n",
    )
    .unwrap();
    assert_eq!(inline.pull_options, table.pull_options);
    assert!(inline.pull_options.enable_partial_images && inline.pull_options.convert_images);
    assert!(!inline.pull_options.use_hard_links);
    assert!(inline.pull_options.ostree_repos.is_empty());
    // Dotted keys are a third spelling of the same table.
    let dotted = load_text("[storage]\noptions.pull_options.enable_partial_images = \"true\"\n").unwrap();
    assert!(dotted.pull_options.enable_partial_images);
}

#[test]
fn unknown_keys_are_ignored_whatever_their_type() {
    let cfg = load_text(
        "top = 1\n[storage]\ndriver = \"overlay\"\ntransient_storage = true\n[storage.options]\nsomething = [1, 2]\n\
         [storage.options.overlay]\nbogus = true\nuse_composefs = \"true\"\n[storage.options.pull_options]\n\
         future_option = \"x\"\n[other]\nx = 1\n",
    )
    .unwrap();
    assert_eq!(cfg.driver, "overlay");
    assert!(cfg.use_composefs);
    assert_eq!(cfg.pull_options.raw.get("future_option").map(String::as_str), Some("x"));
}

#[test]
fn mountopt_and_force_mask_prefer_the_overlay_table() {
    let cfg = load_text(
        "[storage.options]\nmountopt = \"nodev\"\nforce_mask = 0o700\n[storage.options.overlay]\nmountopt = \"metacopy=on\"\n",
    )
    .unwrap();
    assert_eq!(cfg.mountopt, "metacopy=on");
    assert_eq!(cfg.force_mask, "700");
    let cfg = load_text("[storage.options]\nmountopt = \"nodev\"\n").unwrap();
    assert_eq!(cfg.mountopt, "nodev");
}

#[test]
fn overlay2_is_overlay() {
    assert_eq!(load_text(&driver("overlay2")).unwrap().driver, "overlay");
}

// ---- errors ----

#[test]
fn native_bool_names_file_line_key_and_fix() {
    let sys = Sys::new();
    let p = sys
        .write("storage.conf", "[storage]\ndriver = \"overlay\"\n\n[storage.options.overlay]\nuse_composefs = true\n");
    let e = config::load_file(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}: line 5: ", p.display())), "{msg}");
    assert!(msg.contains("storage.options.overlay.use_composefs is a TOML bool"), "{msg}");
    assert!(msg.contains("write use_composefs = \"true\""), "{msg}");

    // The same for a pull option written inline, a false value and an integer.
    let p = sys.write(
        "b.conf",
        "[storage.options]\npull_options = {enable_partial_images = \"true\", convert_images = false}\n",
    );
    let msg = config::load_file(&p).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}: line 2: ", p.display())), "{msg}");
    assert!(msg.contains("storage.options.pull_options.convert_images is a TOML bool"), "{msg}");
    assert!(msg.contains("write convert_images = \"false\""), "{msg}");

    let p = sys.write("c.conf", "[storage.options.overlay]\nforce_mask = 755\n");
    let msg = config::load_file(&p).unwrap_err().to_string();
    assert!(msg.contains("line 2: storage.options.overlay.force_mask is a TOML integer"), "{msg}");
    assert!(msg.contains("write force_mask = \"755\""), "{msg}");
}

#[test]
fn syntax_error_names_file_and_line() {
    let sys = Sys::new();
    let p = sys.write("storage.conf", "[storage]\ndriver = \"overlay\"\n\n[storage.options\nx = 1\n");
    let e = config::load_file(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}: line 4: TOML syntax error", p.display())), "{msg}");

    let p = sys.write("dup.conf", "[storage]\ndriver = \"a\"\ndriver = \"b\"\n");
    let msg = config::load_file(&p).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}: line 3: TOML syntax error", p.display())), "{msg}");
}

#[test]
fn a_bad_file_anywhere_fails_the_load() {
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf", &driver("overlay"));
    sys.write("root/etc/containers/storage.conf.d/50-bad.conf", "[storage.options.overlay]\nuse_composefs = true\n");
    let e = config::load(&sys.opts()).unwrap_err();
    assert!(e.to_string().contains("50-bad.conf: line 2"), "{e}");
}

#[test]
fn missing_file_is_not_found() {
    let e = config::load_file("/nonexistent/storage.conf").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("/nonexistent/storage.conf"), "{e}");
}

#[test]
fn a_wrong_table_type_is_an_error() {
    let e = load_text("[storage]\noptions = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("line 2: storage.options is a TOML string"), "{e}");
}

// ---- search order ----

#[test]
fn no_files_is_fine() {
    let sys = Sys::new();
    let cfg = sys.load();
    assert!(cfg.files.is_empty());
    assert_eq!(cfg.driver, "");
}

#[test]
fn main_file_first_existing_wins() {
    let sys = Sys::new();
    sys.write("root/usr/share/containers/storage.conf", &driver("vendor"));
    assert_eq!(sys.load().driver, "vendor");
    sys.write("root/etc/containers/storage.conf", &driver("admin"));
    let cfg = sys.load();
    assert_eq!(cfg.driver, "admin");
    assert_eq!(sys.files(&cfg), ["root/etc/containers/storage.conf"]);
    sys.write("home/.config/containers/storage.conf", "# empty: still wins\n");
    let cfg = sys.load();
    assert_eq!(cfg.driver, "");
    assert_eq!(sys.files(&cfg), ["home/.config/containers/storage.conf"]);
    // $XDG_CONFIG_HOME replaces $HOME/.config; an empty one does not count.
    sys.write("xdg/containers/storage.conf", &driver("xdg"));
    let xdg = sys.tmp.path().join("xdg");
    assert_eq!(config::load(&sys.opts().with_env("XDG_CONFIG_HOME", &xdg)).unwrap().driver, "xdg");
    assert_eq!(config::load(&sys.opts().with_env("XDG_CONFIG_HOME", "")).unwrap().files.len(), 1);
    assert_eq!(config::load(&sys.opts().with_env("XDG_CONFIG_HOME", "")).unwrap().driver, "");
}

#[test]
fn storage_conf_env_reads_only_that_file_but_override_still_applies() {
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf", &driver("admin"));
    sys.write("root/etc/containers/storage.conf.d/10.conf", "[storage]\ngraphroot = \"/dropin\"\n");
    sys.write("home/.config/containers/storage.conf.d/20.conf", "[storage]\nrunroot = \"/dropin\"\n");
    let only = sys.write("only.conf", &driver("only"));
    let over = sys.write("override.conf", "[storage]\ngraphroot = \"/override\"\n");
    let opts = sys.opts().with_env(config::ENV_CONF, &only);
    let cfg = config::load(&opts).unwrap();
    assert_eq!(cfg.driver, "only");
    assert_eq!(cfg.graphroot, "");
    assert_eq!(cfg.runroot, "");
    assert_eq!(sys.files(&cfg), ["only.conf"]);
    assert!(codes(&cfg.check()).contains(&"storage-conf-env"));
    let cfg = config::load(&opts.clone().with_env(config::ENV_CONF_OVERRIDE, &over)).unwrap();
    assert_eq!(sys.files(&cfg), ["only.conf", "override.conf"]);
    assert_eq!((cfg.driver.as_str(), cfg.graphroot.as_str()), ("only", "/override"));
    // An empty variable counts as unset.
    let cfg = config::load(&sys.opts().with_env(config::ENV_CONF, "")).unwrap();
    assert_eq!(cfg.driver, "admin");
}

#[test]
fn missing_env_files_are_errors() {
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf", &driver("admin"));
    let missing = sys.tmp.path().join("missing.conf");
    for var in [config::ENV_CONF, config::ENV_CONF_OVERRIDE] {
        let e = config::load(&sys.opts().with_env(var, &missing)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{var}");
        assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
    }
}

#[test]
fn drop_ins_override_by_basename_and_apply_in_lexical_order() {
    let sys = Sys::new();
    sys.write("root/usr/share/containers/storage.conf", "[storage]\ndriver = \"vendor\"\nrunroot = \"/main\"\n");
    sys.write("root/usr/share/containers/storage.conf.d/10-same.conf", &driver("usr-10"));
    sys.write("root/usr/share/containers/storage.conf.d/90-late.conf", "[storage]\ngraphroot = \"/usr-90\"\n");
    sys.write("root/etc/containers/storage.conf.d/10-same.conf", &driver("etc-10"));
    sys.write("root/etc/containers/storage.conf.d/50-mid.conf", "[storage]\ngraphroot = \"/etc-50\"\n");
    sys.write("home/.config/containers/storage.conf.d/50-mid.conf", "[storage]\nimagestore = \"/user-50\"\n");
    // Not drop-ins: wrong suffix, a directory, a symlink.
    sys.write("root/etc/containers/storage.conf.d/99-z.conf.bak", &driver("bak"));
    fs::create_dir_all(sys.root().join("etc/containers/storage.conf.d/98-dir.conf")).unwrap();
    std::os::unix::fs::symlink(
        sys.root().join("usr/share/containers/storage.conf.d/90-late.conf"),
        sys.root().join("etc/containers/storage.conf.d/97-link.conf"),
    )
    .unwrap();
    let cfg = sys.load();
    assert_eq!(
        sys.files(&cfg),
        [
            "root/usr/share/containers/storage.conf",
            "root/etc/containers/storage.conf.d/10-same.conf",
            "home/.config/containers/storage.conf.d/50-mid.conf",
            "root/usr/share/containers/storage.conf.d/90-late.conf",
        ]
    );
    assert_eq!(cfg.driver, "etc-10");
    assert_eq!(cfg.runroot, "/main"); // kept: later files do not mention it
    assert_eq!(cfg.graphroot, "/usr-90"); // the /etc 50-mid was replaced by the user's 50-mid
    assert_eq!(cfg.imagestore, "/user-50");
}

#[test]
fn drop_ins_are_read_without_a_main_file() {
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf.d/a.conf", &driver("dropin"));
    assert_eq!(sys.load().driver, "dropin");
}

#[test]
fn rootful_and_rootless_drop_in_dirs() {
    let sys = Sys::new();
    sys.write(
        "root/usr/share/containers/storage.rootful.conf.d/20-rootful.conf",
        "[storage]\nrunroot = \"/rootful\"\n",
    );
    sys.write("root/etc/containers/storage.rootless.conf.d/20-rootless.conf", "[storage]\nrunroot = \"/rootless\"\n");
    sys.write("root/etc/containers/storage.rootless.conf.d/10-same.conf", &driver("rootless-all"));
    sys.write("root/etc/containers/storage.rootless.conf.d/1000/10-same.conf", &driver("rootless-1000"));
    sys.write("root/etc/containers/storage.rootless.conf.d/1001/30-other.conf", "[storage]\ngraphroot = \"/1001\"\n");
    sys.write(
        "root/usr/share/containers/storage.rootless.conf.d/1000/05-vendor.conf",
        "[storage]\nimagestore = \"/v\"\n",
    );

    let root = config::load(&sys.opts().with_uid(0)).unwrap();
    assert_eq!(sys.files(&root), ["root/usr/share/containers/storage.rootful.conf.d/20-rootful.conf"]);
    assert_eq!(root.runroot, "/rootful");

    let user = config::load(&sys.opts().with_uid(1000)).unwrap();
    assert_eq!(
        sys.files(&user),
        [
            "root/usr/share/containers/storage.rootless.conf.d/1000/05-vendor.conf",
            "root/etc/containers/storage.rootless.conf.d/1000/10-same.conf",
            "root/etc/containers/storage.rootless.conf.d/20-rootless.conf",
        ]
    );
    assert_eq!(
        (user.driver.as_str(), user.runroot.as_str(), user.graphroot.as_str()),
        ("rootless-1000", "/rootless", "")
    );
    assert_eq!(user.uid, 1000);
    assert!(codes(&user.check()).contains(&"rootless"));
}

#[test]
fn override_file_is_decoded_last() {
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf", &driver("admin"));
    sys.write("root/etc/containers/storage.conf.d/zz.conf", &driver("dropin"));
    let over = sys.write("o.conf", &driver("override"));
    let cfg = config::load(&sys.opts().with_env(config::ENV_CONF_OVERRIDE, &over)).unwrap();
    assert_eq!(cfg.driver, "override");
    assert_eq!(sys.files(&cfg).last().map(String::as_str), Some("o.conf"));
}

#[test]
fn pull_options_merge_across_files_key_by_key() {
    let sys = Sys::new();
    sys.write(
        "root/etc/containers/storage.conf",
        "[storage.options]\npull_options = {enable_partial_images = \"true\", use_hard_links = \"true\"}\n",
    );
    sys.write(
        "root/etc/containers/storage.conf.d/99-composefs.conf",
        "[storage.options.pull_options]\nconvert_images = \"true\"\nuse_hard_links = \"false\"\n",
    );
    let cfg = sys.load();
    let p = &cfg.pull_options;
    assert!(p.enable_partial_images, "kept from the main file");
    assert!(p.convert_images, "added by the drop-in");
    assert!(!p.use_hard_links, "replaced by the drop-in");
    assert!(cfg.sources["use_hard_links"].to_string().contains("99-composefs.conf: line 3"));
}

#[test]
fn a_later_file_resets_a_value_with_an_empty_string() {
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf", "[storage.options.overlay]\nuse_composefs = \"true\"\n");
    sys.write("root/etc/containers/storage.conf.d/off.conf", "[storage.options.overlay]\nuse_composefs = \"\"\n");
    assert!(!sys.load().use_composefs);
}

#[test]
fn only_the_final_use_composefs_value_is_parsed() {
    // containers/storage parses the merged string at driver init: a bad value that a later file
    // replaces is harmless.
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf", "[storage.options.overlay]\nuse_composefs = \"yes\"\n");
    sys.write("root/etc/containers/storage.conf.d/fix.conf", "[storage.options.overlay]\nuse_composefs = \"1\"\n");
    assert!(sys.load().use_composefs);
}

// ---- environment overrides ----

#[test]
fn storage_driver_env_wins() {
    let sys = Sys::new();
    sys.write("root/etc/containers/storage.conf", &driver("overlay"));
    let cfg = config::load(&sys.opts().with_env(config::ENV_STORAGE_DRIVER, "vfs")).unwrap();
    assert_eq!(cfg.driver, "vfs");
    assert_eq!(cfg.sources["driver"].to_string(), "$STORAGE_DRIVER");
    let f = cfg.check();
    assert!(f.iter().any(|f| f.code == "driver-not-overlay" && f.message.contains("$STORAGE_DRIVER")), "{f:?}");
}

#[test]
fn storage_opts_replaces_driver_options() {
    let sys = Sys::new();
    sys.write(
        "root/etc/containers/storage.conf",
        "[storage]\ndriver = \"overlay\"\n[storage.options.pull_options]\nenable_partial_images = \"true\"\n\
         convert_images = \"true\"\n[storage.options.overlay]\nuse_composefs = \"true\"\nmountopt = \"nodev\"\n",
    );
    let cfg = config::load(&sys.opts().with_env(config::ENV_STORAGE_OPTS, "overlay.size=10G")).unwrap();
    assert!(!cfg.use_composefs);
    assert_eq!(cfg.mountopt, "");
    let c = codes(&cfg.check());
    assert!(c.contains(&"storage-opts-replaces-use-composefs"), "{c:?}");
    assert!(c.contains(&"storage-opts-replaces-option"), "{c:?}");

    // Set but empty: no driver options at all.
    assert!(!config::load(&sys.opts().with_env(config::ENV_STORAGE_OPTS, "")).unwrap().use_composefs);

    let cfg = config::load(
        &sys.opts().with_env(config::ENV_STORAGE_OPTS, "btrfs.min_space=1G, Overlay.Use_Composefs = T ,mountopt=nodev"),
    )
    .unwrap();
    assert!(cfg.use_composefs);
    assert_eq!(cfg.mountopt, "nodev");
    assert!(cfg.check().iter().all(|f| f.severity != Severity::Error), "{:?}", cfg.check());

    for bad in ["use_composefs=yes", "nokeyvalue", "aufs.x=1"] {
        let e = config::load(&sys.opts().with_env(config::ENV_STORAGE_OPTS, bad)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format, "{bad}");
        assert!(e.to_string().contains("$STORAGE_OPTS"), "{e}");
    }
}

// ---- check ----

const GOOD: &str = "[storage]\ndriver = \"overlay\"\n[storage.options]\n\
    pull_options = {enable_partial_images = \"true\", convert_images = \"true\"}\n\
    [storage.options.overlay]\nuse_composefs = \"true\"\n";

fn check_text(text: &str) -> Vec<Finding> {
    let mut cfg = load_text(text).unwrap();
    cfg.uid = 0; // judge the file, not who runs the test
    cfg.check()
}

#[test]
fn a_good_config_has_no_findings() {
    assert_eq!(check_text(GOOD), []);
}

#[test]
fn composefs_off_is_an_error() {
    let f = check_text("[storage]\ndriver = \"overlay\"\n");
    assert_eq!(codes(&f), ["composefs-off"]);
    assert_eq!(f[0].severity, Severity::Error);
    let f = check_text(&GOOD.replace("use_composefs = \"true\"", "use_composefs = \"false\""));
    assert_eq!(codes(&f), ["composefs-off"]);
    assert!(f[0].message.contains("line 6"), "{}", f[0].message);
}

#[test]
fn use_composefs_in_the_wrong_table() {
    let wrong = "[storage]\ndriver = \"overlay\"\n[storage.options]\nuse_composefs = \"true\"\n\
        pull_options = {enable_partial_images = \"true\", convert_images = \"true\"}\n";
    let f = check_text(wrong);
    assert_eq!(codes(&f), ["use-composefs-wrong-table"]);
    assert_eq!(f[0].severity, Severity::Error);
    assert!(f[0].message.contains("[storage.options.overlay]") && f[0].message.contains("line 4"), "{}", f[0].message);
    // Both set: composefs is on, the stray one is only a warning.
    let f = check_text(&format!("{wrong}[storage.options.overlay]\nuse_composefs = \"true\"\n"));
    assert_eq!(codes(&f), ["use-composefs-wrong-table"]);
    assert_eq!(f[0].severity, Severity::Warning);
}

#[test]
fn composefs_without_partial_images_is_an_error() {
    let f = check_text("[storage]\ndriver = \"overlay\"\n[storage.options.overlay]\nuse_composefs = \"true\"\n");
    assert_eq!(codes(&f), ["partial-images-off"]);
    assert_eq!(f[0].severity, Severity::Error);
    // convert_images alone does not help.
    let f = check_text(&GOOD.replace("enable_partial_images = \"true\", ", ""));
    assert_eq!(codes(&f), ["partial-images-off"]);
    assert!(f[0].message.contains("convert_images alone"), "{}", f[0].message);
    // Partial images without conversion: a warning.
    let f = check_text(&GOOD.replace(", convert_images = \"true\"", ""));
    assert_eq!(codes(&f), ["convert-images-off"]);
    assert_eq!(f[0].severity, Severity::Warning);
}

#[test]
fn rootless_is_an_error() {
    let mut cfg = load_text(GOOD).unwrap();
    cfg.uid = 1000;
    let f = cfg.check();
    assert_eq!(codes(&f), ["rootless"]);
    assert!(f[0].message.contains("composefs is not supported in user namespaces"));
}

#[test]
fn driver_findings() {
    let f = check_text(&GOOD.replace("\"overlay\"", "\"vfs\""));
    assert_eq!(codes(&f), ["driver-not-overlay"]);
    assert_eq!(f[0].severity, Severity::Error);
    let f = check_text(&GOOD.replace("driver = \"overlay\"\n", ""));
    assert_eq!(codes(&f), ["driver-unset"]);
    assert_eq!(f[0].severity, Severity::Warning);
}

#[test]
fn pull_option_findings() {
    let f =
        check_text(&GOOD.replace("convert_images = \"true\"", "convert_images = \"yes\", convert_image = \"true\""));
    assert_eq!(codes(&f), ["unknown-pull-option", "pull-option-not-true", "convert-images-off"]);
    assert!(f[0].message.contains("did you mean convert_images?"), "{}", f[0].message);
    assert!(f[1].message.contains("\"yes\"") && f[1].message.contains("line 4"), "{}", f[1].message);
    let f = check_text(&GOOD.replace(
        "convert_images = \"true\"",
        "convert_images = \"true\", insecure_allow_unpredictable_image_contents = \"true\"",
    ));
    assert_eq!(codes(&f), ["insecure-contents"]);
}

#[test]
fn store_would_not_start_findings() {
    let f = check_text(&format!("{GOOD}force_mask = \"0o755\"\n"));
    assert_eq!(codes(&f), ["force-mask-invalid"]);
    for ok in ["shared", "private", "0755"] {
        assert_eq!(check_text(&format!("{GOOD}force_mask = \"{ok}\"\n")), []);
    }
    let f = check_text(&GOOD.replace("[storage]\n", "[storage]\ngraphroot = \"/s\"\nimagestore = \"/s\"\n"));
    assert_eq!(codes(&f), ["imagestore-is-graphroot"]);
}

#[test]
fn no_config_file_is_noted() {
    let sys = Sys::new();
    let f = sys.load().check();
    assert_eq!(codes(&f), ["no-config-file", "composefs-off", "driver-unset"]);
}

#[test]
fn sample_config_has_warnings_only() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample-storage.conf");
    let mut cfg = config::load_file(path).unwrap();
    cfg.uid = 0;
    assert!(cfg.use_composefs);
    let f = cfg.check();
    assert_eq!(codes(&f), ["use-composefs-wrong-table", "pull-option-not-true", "convert-images-off"]);
    assert!(f.iter().all(|f| f.severity == Severity::Warning));
}

#[test]
fn json_output() {
    let cfg = load_text(FULL).unwrap();
    let v: serde_json::Value = serde_json::from_str(&cfg.to_json()).unwrap();
    assert_eq!(v["driver"], "overlay");
    assert_eq!(v["use_composefs"], true);
    assert_eq!(v["ostree_repos"], serde_json::json!(["/ostree/repo", "/var/ostree", "/third"]));
    assert_eq!(v["pull_options"]["convert_images"], "TRUE");
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    for k in config::KEYS {
        assert!(v.get(*k).is_some(), "{k}");
    }
    let f: serde_json::Value =
        serde_json::from_str(&config::findings_to_json(&check_text("[storage]\ndriver = \"overlay\"\n"))).unwrap();
    assert_eq!(f[0]["severity"], "error");
    assert_eq!(f[0]["code"], "composefs-off");
}

// ---- the C API, called from Rust ----

mod c_api {
    use super::*;
    use composefs_storage::ffi::config::*;
    use composefs_storage::ffi::error::{cfs_error_free, cfs_error_message};
    use composefs_storage::ffi::util::cfs_string_free;
    use composefs_storage::ffi::{cfs_error, cfs_status};

    fn cstr(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    /// Takes an error object and returns its message.
    fn take_error(err: *mut cfs_error) -> String {
        assert!(!err.is_null());
        // SAFETY: a live error from the library; freed right after.
        let msg = unsafe { CStr::from_ptr(cfs_error_message(err)) }.to_string_lossy().into_owned();
        cfs_error_free(err);
        msg
    }

    fn take_string(s: *mut c_char) -> String {
        assert!(!s.is_null());
        // SAFETY: a string from the library; freed right after.
        let v = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
        cfs_string_free(s);
        v
    }

    fn load(path: &Path) -> *mut cfs_config {
        let mut cfg = ptr::null_mut();
        let mut err = ptr::null_mut();
        let p = cstr(path.to_str().unwrap());
        assert_eq!(cfs_config_load_file(p.as_ptr(), &mut cfg, &mut err), cfs_status::CFS_OK);
        assert!(err.is_null() && !cfg.is_null());
        cfg
    }

    #[test]
    fn load_get_json_check() {
        let sys = Sys::new();
        let cfg = load(&sys.write("s.conf", FULL));
        for (k, want) in
            [("driver", "overlay"), ("ostree_repos", "/ostree/repo:/var/ostree:/third"), ("use_composefs", "true")]
        {
            let mut out = ptr::null_mut();
            let mut err = ptr::null_mut();
            assert_eq!(cfs_config_get_string(cfg, cstr(k).as_ptr(), &mut out, &mut err), cfs_status::CFS_OK);
            assert_eq!(take_string(out), want);
        }
        let mut b = false;
        assert_eq!(cfs_config_get_bool(cfg, c"convert_images".as_ptr(), &mut b, ptr::null_mut()), cfs_status::CFS_OK);
        assert!(b);
        let mut json = ptr::null_mut();
        assert_eq!(cfs_config_to_json(cfg, &mut json, ptr::null_mut()), cfs_status::CFS_OK);
        let v: serde_json::Value = serde_json::from_str(&take_string(json)).unwrap();
        assert_eq!(v["mountopt"], "nodev,metacopy=on");
        let mut findings = ptr::null_mut();
        assert_eq!(cfs_config_check(cfg, &mut findings, ptr::null_mut()), cfs_status::CFS_OK);
        let f: serde_json::Value = serde_json::from_str(&take_string(findings)).unwrap();
        assert!(f.as_array().unwrap().iter().any(|f| f["code"] == "insecure-contents"), "{f}");
        cfs_config_free(cfg);
        cfs_config_free(ptr::null_mut());
    }

    #[test]
    fn unset_value_is_empty_string() {
        let sys = Sys::new();
        let cfg = load(&sys.write("s.conf", "[storage]\n"));
        let mut out = ptr::null_mut();
        assert_eq!(cfs_config_get_string(cfg, c"imagestore".as_ptr(), &mut out, ptr::null_mut()), cfs_status::CFS_OK);
        assert_eq!(take_string(out), "");
        cfs_config_free(cfg);
    }

    #[test]
    fn bad_keys_are_invalid_arguments_and_outputs_stay_untouched() {
        let sys = Sys::new();
        let cfg = load(&sys.write("s.conf", FULL));
        let sentinel = 0x5a5a as *mut c_char;
        let mut out = sentinel;
        let mut err = ptr::null_mut();
        assert_eq!(
            cfs_config_get_string(cfg, c"no_such_key".as_ptr(), &mut out, &mut err),
            cfs_status::CFS_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(out, sentinel);
        assert!(take_error(err).contains("no_such_key"));
        let mut b = true;
        let mut err = ptr::null_mut();
        assert_eq!(
            cfs_config_get_bool(cfg, c"driver".as_ptr(), &mut b, &mut err),
            cfs_status::CFS_STATUS_INVALID_ARGUMENT
        );
        assert!(b);
        take_error(err);
        cfs_config_free(cfg);
    }

    #[test]
    fn null_arguments() {
        use cfs_status::CFS_STATUS_NULL_ARGUMENT as NULL;
        let sys = Sys::new();
        let path = sys.write("s.conf", FULL);
        let p = cstr(path.to_str().unwrap());
        let cfg = load(&path);
        let mut handle = std::ptr::dangling_mut::<cfs_config>();
        let mut err = ptr::null_mut();
        assert_eq!(cfs_config_load_file(ptr::null(), &mut handle, &mut err), NULL);
        assert_eq!(handle, std::ptr::dangling_mut::<cfs_config>());
        assert!(take_error(err).contains("path"));
        assert_eq!(cfs_config_load_file(p.as_ptr(), ptr::null_mut(), ptr::null_mut()), NULL);
        assert_eq!(cfs_config_load(ptr::null(), ptr::null_mut(), ptr::null_mut()), NULL);

        let sentinel = 0x5a5a as *mut c_char;
        let mut s = sentinel;
        assert_eq!(cfs_config_get_string(ptr::null(), c"driver".as_ptr(), &mut s, ptr::null_mut()), NULL);
        assert_eq!(cfs_config_get_string(cfg, ptr::null(), &mut s, ptr::null_mut()), NULL);
        assert_eq!(cfs_config_get_string(cfg, c"driver".as_ptr(), ptr::null_mut(), ptr::null_mut()), NULL);
        let mut b = true;
        assert_eq!(cfs_config_get_bool(ptr::null(), c"use_composefs".as_ptr(), &mut b, ptr::null_mut()), NULL);
        assert_eq!(cfs_config_get_bool(cfg, ptr::null(), &mut b, ptr::null_mut()), NULL);
        assert_eq!(cfs_config_get_bool(cfg, c"use_composefs".as_ptr(), ptr::null_mut(), ptr::null_mut()), NULL);
        assert_eq!(cfs_config_to_json(ptr::null(), &mut s, ptr::null_mut()), NULL);
        assert_eq!(cfs_config_to_json(cfg, ptr::null_mut(), ptr::null_mut()), NULL);
        assert_eq!(cfs_config_check(ptr::null(), &mut s, ptr::null_mut()), NULL);
        assert_eq!(cfs_config_check(cfg, ptr::null_mut(), ptr::null_mut()), NULL);
        assert_eq!((s, b), (sentinel, true));
        cfs_config_free(cfg);
    }

    #[test]
    fn load_errors_carry_file_and_line() {
        let sys = Sys::new();
        let path = sys.write("bad.conf", "[storage.options.overlay]\nuse_composefs = true\n");
        let p = cstr(path.to_str().unwrap());
        let mut handle = std::ptr::dangling_mut::<cfs_config>();
        let mut err = ptr::null_mut();
        assert_eq!(cfs_config_load_file(p.as_ptr(), &mut handle, &mut err), cfs_status::CFS_STATUS_FORMAT);
        assert_eq!(handle, std::ptr::dangling_mut::<cfs_config>());
        let msg = take_error(err);
        assert!(msg.contains("bad.conf: line 2") && msg.contains("write use_composefs = \"true\""), "{msg}");

        let missing = cstr("/nonexistent/storage.conf");
        let mut err = ptr::null_mut();
        assert_eq!(cfs_config_load_file(missing.as_ptr(), &mut handle, &mut err), cfs_status::CFS_STATUS_NOT_FOUND);
        take_error(err);
    }

    /// The one test that sees the real process environment (HOME, CONTAINERS_STORAGE_CONF, ...):
    /// it checks only what holds whatever that environment is.
    #[test]
    fn load_with_a_root() {
        let sys = Sys::new();
        let main = sys.write("root/etc/containers/storage.conf", &driver("overlay"));
        let root = cstr(sys.root().to_str().unwrap());
        let mut cfg = ptr::null_mut();
        let mut err = ptr::null_mut();
        let status = cfs_config_load(root.as_ptr(), &mut cfg, &mut err);
        if status != cfs_status::CFS_OK {
            panic!("cfs_config_load: {}", take_error(err));
        }
        let mut json = ptr::null_mut();
        assert_eq!(cfs_config_to_json(cfg, &mut json, ptr::null_mut()), cfs_status::CFS_OK);
        let v: serde_json::Value = serde_json::from_str(&take_string(json)).unwrap();
        let files: Vec<&str> = v["files"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
        let env_selects_files = std::env::var_os(config::ENV_CONF).is_some_and(|v| !v.is_empty());
        let user_file = LoadOptions::from_process();
        let user_has_main = composefs_storage::config::search::user_config_dir(&user_file)
            .is_some_and(|d| d.join("storage.conf").exists());
        if !env_selects_files && !user_has_main {
            assert_eq!(files.first().copied(), main.to_str());
        }
        cfs_config_free(cfg);
    }
}

#[test]
fn host_check_looks_for_mkcomposefs_like_exec_lookpath() {
    use std::os::unix::fs::PermissionsExt;
    let sys = Sys::new();
    let cfg = load_text(GOOD).unwrap();
    let bin = sys.tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let mut host = config::Host::default();
    assert_eq!(codes(&config::check_host(&cfg, &host)), ["mkcomposefs-missing"]);
    host.path_env = Some(std::env::join_paths([Path::new("/nonexistent"), &bin]).unwrap());
    assert_eq!(codes(&config::check_host(&cfg, &host)), ["mkcomposefs-missing"]);
    let tool = sys.write("bin/mkcomposefs", "#!/bin/sh\n");
    assert_eq!(codes(&config::check_host(&cfg, &host)), ["mkcomposefs-missing"], "not executable");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(config::check_host(&cfg, &host), []);
    // Composefs off: nothing to say about the helper.
    let off = load_text("[storage]\ndriver = \"overlay\"\n").unwrap();
    assert_eq!(config::check_host(&off, &config::Host::default()), []);
}

#[test]
fn host_check_sees_root_in_a_user_namespace() {
    let mut cfg = load_text(GOOD).unwrap();
    cfg.uid = 0;
    let mut real_root = config::Host::default();
    real_root.path_env = Some("/nonexistent".into());
    real_root.full_uid_mapping = Some(true);
    real_root.cap_sys_admin = Some(true);
    assert_eq!(codes(&config::check_host(&cfg, &real_root)), ["mkcomposefs-missing"]);

    let mut configured = real_root.clone();
    configured.userns_configured = true;
    let mut no_cap = real_root.clone();
    no_cap.cap_sys_admin = Some(false);
    let mut partial_map = real_root.clone();
    partial_map.full_uid_mapping = Some(false);
    for (host, why) in
        [(configured, "_CONTAINERS_USERNS_CONFIGURED"), (no_cap, "CAP_SYS_ADMIN"), (partial_map, "uid_map")]
    {
        let f = config::check_host(&cfg, &host);
        assert_eq!(codes(&f), ["user-namespace", "mkcomposefs-missing"]);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].message.contains(why), "{}", f[0].message);
    }
}

// ---- the command-line tool ----

mod cli {
    use super::*;
    use std::process::Command;

    /// Runs `composefs-storage config ARGS` with a clean environment (HOME in the temp dir).
    fn run(sys: &Sys, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
            .arg("config")
            .args(args)
            .env_clear()
            .env("HOME", sys.home())
            .output()
            .unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
    }

    fn sample() -> String {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample-storage.conf").display().to_string()
    }

    #[test]
    fn prints_json() {
        let sys = Sys::new();
        let (rc, out, err) = run(&sys, &["--file", &sample()]);
        assert_eq!(rc, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["use_composefs"], true);
        assert_eq!(v["enable_partial_images"], true);
        assert_eq!(v["convert_images"], false);
    }

    #[test]
    fn check_of_the_sample_warns_and_succeeds_as_root() {
        let host = config::check_host(&StorageConfig::default(), &config::Host::current());
        if !rustix::process::geteuid().is_root() || !host.is_empty() {
            eprintln!("skipped: not real root here, so the sample check exits 3 (the rootless finding)");
            return;
        }
        let sys = Sys::new();
        let (rc, out, err) = run(&sys, &["--check", "--file", &sample()]);
        assert_eq!(rc, 0, "{out}{err}");
        assert!(out.lines().all(|l| l.starts_with("warning: ")), "{out}");
        assert!(out.contains("use_composefs under [storage.options]"), "{out}");
        assert!(out.contains("convert_images = \"1\""), "{out}");
    }

    #[test]
    fn check_exits_3_when_composefs_is_off() {
        let sys = Sys::new();
        sys.write("root/etc/containers/storage.conf", &driver("overlay"));
        let root = sys.root().display().to_string();
        let (rc, out, _) = run(&sys, &["--check", "--root", &root]);
        assert_eq!(rc, 3, "{out}");
        assert!(out.contains("error: composefs is off"), "{out}");
        let (rc, out, _) = run(&sys, &["--root", &root]);
        assert_eq!(rc, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["files"][0], format!("{root}/etc/containers/storage.conf"));
    }

    #[test]
    fn errors_and_usage() {
        let sys = Sys::new();
        let (rc, _, err) = run(&sys, &["--file", "/nonexistent/storage.conf"]);
        assert_eq!(rc, 1);
        assert!(err.contains("/nonexistent/storage.conf"), "{err}");
        let bad = sys.write("bad.conf", "[storage.options.overlay]\nuse_composefs = true\n");
        let (rc, _, err) = run(&sys, &["--check", "--file", bad.to_str().unwrap()]);
        assert_eq!(rc, 1);
        assert!(err.contains("bad.conf: line 2") && err.contains("write use_composefs = \"true\""), "{err}");
        let (rc, _, _) = run(&sys, &["--file", "a", "--root", "b"]);
        assert_eq!(rc, 2);
    }
}
