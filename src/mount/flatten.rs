//! Flattening a run of adjacent composefs layers into one image (SPEC §9.2, §10.2, §11).
//!
//! Mounting N composefs layers costs N EROFS superblocks (each with its own backing-dev
//! registration and teardown), which makes a 20-layer composefs stack an order of magnitude
//! slower to mount than a classic one. Adjacent composefs layers can instead be merged, with
//! overlay semantics, into a single image whose redirects still name objects by content digest,
//! so the layers' object dirs stay data-only lowers unchanged. The merged image is written once
//! (without root whiteout stubs, which also removes the SPEC §10.2 defect) and cached by the
//! identities of its layer blobs; later mounts of the stack mount one EROFS.
//!
//! Overlay semantics reproduced here, per name, looking from the top layer down:
//! - a whiteout ends the lookup: the name is absent (and stays a whiteout in the merged image
//!   when layers below the run could still hold it);
//! - a non-directory ends the lookup: it is the entry;
//! - directories merge, the topmost one giving the attributes, until an opaque directory, a
//!   whiteout or a non-directory ends the chain. A chain ended inside the run makes the merged
//!   directory opaque to layers below the run.

use std::collections::{BTreeSet, HashMap};

use crate::image::tree::{DirEntry, Directory, Inode, InodeId, InodeKind, Tree, ROOT};

/// Merges `layers` (top first) into one tree. `bottom` says no layer lies below the run, so
/// whiteouts and opaque markers, which would hide nothing, are left out.
pub(crate) fn merge(layers: &[Tree], bottom: bool) -> Tree {
    let root_meta = layers.first().map(|t| t.root().meta.clone()).unwrap_or_default();
    let mut m = Merger { layers, bottom, out: Tree::new(root_meta), copied: HashMap::new() };
    let chain: Vec<(usize, InodeId)> = (0..layers.len()).map(|k| (k, ROOT)).collect();
    m.merge_dir(ROOT, &chain);
    m.out
}

struct Merger<'a> {
    layers: &'a [Tree],
    bottom: bool,
    out: Tree,
    /// (layer, inode) → inode in `out`, so the surviving names of a hardlinked inode stay linked.
    copied: HashMap<(usize, InodeId), InodeId>,
}

impl Merger<'_> {
    /// Fills `out_dir` from the directory chain `chain` (top first).
    fn merge_dir(&mut self, out_dir: InodeId, chain: &[(usize, InodeId)]) {
        let mut names: BTreeSet<&[u8]> = BTreeSet::new();
        for &(k, d) in chain {
            if let Some(dir) = self.layers[k].inode(d).as_dir() {
                names.extend(dir.entries.keys().map(|n| n.as_slice()));
            }
        }
        for name in names {
            self.merge_name(out_dir, chain, name);
        }
    }

    fn merge_name(&mut self, out_dir: InodeId, chain: &[(usize, InodeId)], name: &[u8]) {
        let mut dirs: Vec<(usize, InodeId)> = Vec::new();
        let mut ended = false; // the lookup stopped inside the run
        for &(k, d) in chain {
            let Some(e) = self.layers[k].lookup(d, name) else { continue };
            let inode = self.layers[k].inode(e.inode);
            match &inode.kind {
                InodeKind::Directory(dir) => {
                    dirs.push((k, e.inode));
                    if dir.overlay_opaque {
                        ended = true;
                        break;
                    }
                }
                kind if dirs.is_empty() => {
                    // The topmost entry is not a directory: it is the entry (or a whiteout).
                    if !matches!(kind, InodeKind::OverlayWhiteout) || !self.bottom {
                        let id = self.copy_leaf(k, e);
                        self.out.link(out_dir, name.to_vec(), id);
                    }
                    return;
                }
                _ => {
                    ended = true;
                    break;
                }
            }
        }
        if let Some(&(k, top)) = dirs.first() {
            let meta = self.layers[k].inode(top).meta.clone();
            let id = self.out.push(Inode {
                meta,
                kind: InodeKind::Directory(Directory {
                    entries: Default::default(),
                    overlay_opaque: ended && !self.bottom,
                }),
                nlink: 2,
            });
            self.out.link(out_dir, name.to_vec(), DirEntry { inode: id, hardlink: false });
            self.merge_dir(id, &dirs);
        }
    }

    /// Copies a non-directory, keeping hardlinks within its layer linked.
    fn copy_leaf(&mut self, k: usize, e: DirEntry) -> DirEntry {
        if let Some(&id) = self.copied.get(&(k, e.inode)) {
            return DirEntry { inode: id, hardlink: true };
        }
        let id = self.out.push(self.layers[k].inode(e.inode).clone());
        self.copied.insert((k, e.inode), id);
        DirEntry { inode: id, hardlink: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::{File, FileContent, Metadata};

    fn meta(p: u32) -> Metadata {
        Metadata { permissions: p, ..Default::default() }
    }
    fn file(t: &mut Tree, dir: InodeId, name: &str, payload: &str) -> InodeId {
        let id = t.push(Inode {
            meta: meta(0o644),
            kind: InodeKind::File(File {
                size: 1,
                content: FileContent::External { payload: Some(payload.as_bytes().to_vec()), digest: None },
            }),
            nlink: 1,
        });
        t.link(dir, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
        id
    }
    fn dir(t: &mut Tree, parent: InodeId, name: &str, perm: u32, opaque: bool) -> InodeId {
        let id = t.push(Inode {
            meta: meta(perm),
            kind: InodeKind::Directory(Directory { entries: Default::default(), overlay_opaque: opaque }),
            nlink: 2,
        });
        t.link(parent, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
        id
    }
    fn whiteout(t: &mut Tree, parent: InodeId, name: &str) {
        let id = t.push(Inode { meta: meta(0), kind: InodeKind::OverlayWhiteout, nlink: 1 });
        t.link(parent, name.as_bytes().to_vec(), DirEntry { inode: id, hardlink: false });
    }
    fn payload(t: &Tree, path: &str) -> Option<String> {
        match &t.inode(t.resolve(path.as_bytes())?).kind {
            InodeKind::File(File { content: FileContent::External { payload: Some(p), .. }, .. }) => {
                Some(String::from_utf8(p.clone()).unwrap())
            }
            InodeKind::OverlayWhiteout => Some("WHITEOUT".into()),
            _ => Some("OTHER".into()),
        }
    }

    #[test]
    fn merge_follows_overlay_semantics() {
        // Lower: /a/x, /a/y, /o/old, /gone, /d (dir), /h1 + /h2 hardlinked, /keep.
        let mut lower = Tree::new(meta(0o755));
        let a = dir(&mut lower, ROOT, "a", 0o700, false);
        file(&mut lower, a, "x", "lx");
        file(&mut lower, a, "y", "ly");
        let o = dir(&mut lower, ROOT, "o", 0o755, false);
        file(&mut lower, o, "old", "lold");
        file(&mut lower, ROOT, "gone", "lgone");
        let d = dir(&mut lower, ROOT, "d", 0o755, false);
        file(&mut lower, d, "in-d", "lind");
        let h = file(&mut lower, ROOT, "h1", "lh");
        lower.link(ROOT, b"h2".to_vec(), DirEntry { inode: h, hardlink: true });
        file(&mut lower, ROOT, "keep", "lkeep");
        // Upper: /a (0o750) with x replaced and y whited out, /o opaque with /o/new, /gone
        // whited out, /d replaced by a file, /h1 replaced, /w whiteout of a name not below.
        let mut upper = Tree::new(meta(0o711));
        let ua = dir(&mut upper, ROOT, "a", 0o750, false);
        file(&mut upper, ua, "x", "ux");
        whiteout(&mut upper, ua, "y");
        let uo = dir(&mut upper, ROOT, "o", 0o755, true);
        file(&mut upper, uo, "new", "unew");
        whiteout(&mut upper, ROOT, "gone");
        file(&mut upper, ROOT, "d", "ud");
        file(&mut upper, ROOT, "h1", "uh");
        whiteout(&mut upper, ROOT, "w");

        for bottom in [true, false] {
            let m = merge(&[upper.clone(), lower.clone()], bottom);
            assert_eq!(m.root().meta.permissions, 0o711);
            assert_eq!(payload(&m, "/a/x").as_deref(), Some("ux"));
            assert_eq!(m.inode(m.resolve(b"/a").unwrap()).meta.permissions, 0o750);
            assert_eq!(payload(&m, "/o/new").as_deref(), Some("unew"));
            assert_eq!(m.resolve(b"/o/old"), None);
            assert_eq!(payload(&m, "/d").as_deref(), Some("ud"));
            assert_eq!(m.resolve(b"/d/in-d"), None);
            assert_eq!(payload(&m, "/h1").as_deref(), Some("uh"));
            assert_eq!(payload(&m, "/h2").as_deref(), Some("lh"));
            assert_eq!(payload(&m, "/keep").as_deref(), Some("lkeep"));
            let o_opaque = m.inode(m.resolve(b"/o").unwrap()).as_dir().unwrap().overlay_opaque;
            let a_opaque = m.inode(m.resolve(b"/a").unwrap()).as_dir().unwrap().overlay_opaque;
            assert!(!a_opaque, "/a merges with layers below the run");
            if bottom {
                assert_eq!(m.resolve(b"/a/y"), None);
                assert_eq!(m.resolve(b"/gone"), None);
                assert_eq!(m.resolve(b"/w"), None);
                assert!(!o_opaque);
            } else {
                // Layers below the run must not show these names either.
                assert_eq!(payload(&m, "/a/y").as_deref(), Some("WHITEOUT"));
                assert_eq!(payload(&m, "/gone").as_deref(), Some("WHITEOUT"));
                assert_eq!(payload(&m, "/w").as_deref(), Some("WHITEOUT"));
                assert!(o_opaque);
            }
        }
    }

    #[test]
    fn hardlinks_stay_linked_and_directory_chains_end_at_non_directories() {
        let mut lower = Tree::new(meta(0o755));
        let h = file(&mut lower, ROOT, "h1", "lh");
        lower.link(ROOT, b"h2".to_vec(), DirEntry { inode: h, hardlink: true });
        let s = dir(&mut lower, ROOT, "s", 0o755, false);
        file(&mut lower, s, "f", "lf");
        let mut middle = Tree::new(meta(0o755));
        file(&mut middle, ROOT, "s", "ms"); // a file hides the lower dir /s
        let mut upper = Tree::new(meta(0o755));
        let us = dir(&mut upper, ROOT, "s", 0o755, false);
        file(&mut upper, us, "g", "ug");
        let m = merge(&[upper, middle, lower], false);
        assert_eq!(m.resolve(b"/h1").unwrap(), m.resolve(b"/h2").unwrap());
        assert_eq!(payload(&m, "/s/g").as_deref(), Some("ug"));
        assert_eq!(m.resolve(b"/s/f"), None);
        assert!(m.inode(m.resolve(b"/s").unwrap()).as_dir().unwrap().overlay_opaque);
    }
}
