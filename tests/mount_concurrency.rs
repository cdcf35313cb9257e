//! Many stacks mounted and unmounted in parallel from several threads.

mod mount_support;

use std::fs;
use std::sync::Arc;

use composefs_storage::mount::{self, ErofsBacking, Layer, MountOptions};
use mount_support::*;

#[test]
fn parallel_mounts_do_not_interfere() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let (cfs, tree, image) = noparents_layer_dir(&root, "cfs");
    // A second composefs layer right under the first: every thread flattens the pair, racing to
    // build the same cached image on first use.
    let cfs2 = composefs_layer_dir(&root.join("cfs2"), &image, &tree);
    let expected = Arc::new(fs::read(tree.join("opt/z/f2")).unwrap());
    const THREADS: usize = 6;
    const ROUNDS: usize = 8;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (root, cfs, cfs2, expected) = (root.clone(), cfs.clone(), cfs2.clone(), expected.clone());
            std::thread::spawn(move || {
                // Each thread has its own classic layer, so the merged views differ per thread.
                let classic = root.join(format!("classic{t}"));
                fs::create_dir_all(classic.join("diff")).unwrap();
                fs::write(classic.join("diff/thread"), t.to_string()).unwrap();
                let mnt = root.join(format!("mnt{t}"));
                fs::create_dir(&mnt).unwrap();
                let stack = [
                    Layer::from_layer_dir(&classic).unwrap(),
                    Layer::from_layer_dir(&cfs).unwrap(),
                    Layer::from_layer_dir(&cfs2).unwrap(),
                ];
                for r in 0..ROUNDS {
                    let backing = if (t + r) % 2 == 0 { ErofsBacking::Auto } else { ErofsBacking::LoopDevice };
                    let opts = MountOptions {
                        erofs_backing: backing,
                        stub_cache_dir: Some(root.join("cache")),
                        ..MountOptions::read_only()
                    };
                    mount::mount(&stack, &mnt, &opts).unwrap();
                    let guard = MountGuard(mnt.clone());
                    assert_eq!(fs::read_to_string(mnt.join("thread")).unwrap(), t.to_string());
                    assert_eq!(&fs::read(mnt.join("opt/z/f2")).unwrap(), &*expected);
                    mount::unmount(&mnt).unwrap();
                    std::mem::forget(guard);
                    assert!(!mnt.join("thread").exists());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    Snapshot::assert_clean(&root);
}
