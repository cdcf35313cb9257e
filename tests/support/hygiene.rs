//! Resource hygiene after error paths (issue #9): a snapshot of this process's open fds, the
//! mounts and loop devices that mention a test's directory, and staging leftovers under it; after
//! the error path, nothing new may remain.
//!
//! Open fds are process-wide, so tests of one binary that check them must not run at the same
//! time as tests that open files: every test of a binary that uses [`Hygiene`] holds [`lock`]
//! for its whole run (fixtures included: a file another test opens between two checks would look
//! like a leak). New fds get a bounded grace period to close (a reader thread of a failed
//! conversion may still be unwinding when the call returns); one still open after it is a leak.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static LOCK: Mutex<()> = Mutex::new(());

/// Serializes the tests of one binary: take it first thing in every test of a binary that uses
/// [`Hygiene`], and keep it to the end.
pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a test may leave behind, taken before the error path.
pub struct Hygiene {
    root: PathBuf,
    fds: BTreeMap<i32, String>,
    mounts: Vec<String>,
    loops: Vec<String>,
    staging: Vec<PathBuf>,
}

/// fd number → what it refers to (its /proc/self/fd link).
fn open_fds() -> BTreeMap<i32, String> {
    let mut fds = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        // Unreadable links are fds closed while listing.
        if let Ok(target) = std::fs::read_link(e.path()) {
            let target = target.to_string_lossy().into_owned();
            // The listing's own directory handle (this one or another thread's).
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                continue;
            }
            fds.insert(n, target);
        }
    }
    fds
}

fn mounts_under(root: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(root))
        .map(str::to_string)
        .collect()
}

fn loops_under(root: &str) -> Vec<String> {
    let mut loops = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                if b.contains(root) {
                    loops.push(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
                }
            }
        }
    }
    loops.sort();
    loops
}

/// Staging dirs under `root` (the library names them `.<layer>.staging-*`; see
/// src/layer/staging.rs), at any depth.
fn staging_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().contains(".staging-") {
                found.push(e.path());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    found.sort();
    found
}

impl Hygiene {
    /// Snapshots before an error path whose files live under `root`.
    pub fn take(root: &Path) -> Hygiene {
        assert!(LOCK.try_lock().is_err(), "hold support::hygiene::lock() for the whole test");
        let r = root.to_string_lossy().into_owned();
        Hygiene {
            root: root.to_path_buf(),
            fds: open_fds(),
            mounts: mounts_under(&r),
            loops: loops_under(&r),
            staging: staging_under(root),
        }
    }

    /// What is open, mounted, attached or staged now and was not at `take`.
    fn new_since(&self) -> Vec<String> {
        let r = self.root.to_string_lossy().into_owned();
        let mut leaks = Vec::new();
        for (fd, target) in open_fds() {
            if self.fds.get(&fd) != Some(&target) {
                leaks.push(format!("fd {fd} -> {target}"));
            }
        }
        leaks.extend(mounts_under(&r).into_iter().filter(|m| !self.mounts.contains(m)).map(|m| format!("mount {m}")));
        leaks.extend(loops_under(&r).into_iter().filter(|l| !self.loops.contains(l)).map(|l| format!("loop {l}")));
        leaks.extend(
            staging_under(&self.root)
                .into_iter()
                .filter(|s| !self.staging.contains(s))
                .map(|s| format!("staging {}", s.display())),
        );
        leaks
    }

    /// Fails the test, naming each, when anything new remains after a grace period (5 s).
    pub fn assert_clean(self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let leaks = self.new_since();
            if leaks.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("{what}: left behind:\n  {}", leaks.join("\n  "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs an error path under a hygiene check: `f` must fail, and leave nothing new under `root`
/// nor open in this process. Returns the error for the caller's assertions on it.
pub fn check_err<T: std::fmt::Debug, E>(root: &Path, what: &str, f: impl FnOnce() -> Result<T, E>) -> E {
    let h = Hygiene::take(root);
    let r = f();
    h.assert_clean(what);
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e,
    }
}
