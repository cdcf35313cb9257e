//! What a pull makes of a TOC before it looks at any store: the layer's tree, each file's
//! content, the contents wanted from the blob (in blob order, with their ranges) and the chunks
//! of the files split into several. It needs only the TOC, so [`PullManifest`] makes it while
//! the tar-split is still being parsed, on the thread that would otherwise wait for it (a rootfs
//! layer: 20 ms that a pull then no longer spends on one core before its fetch starts).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use crate::chunked::ranges::ByteRange;
use crate::chunked::toc::{TocEntry, TYPE_CHUNK, TYPE_REG};
use crate::chunked::{Location, Manifest, Toc};
use crate::image::InodeId;
use crate::layer::tree_builder::{Added, TreeBuilder};
use crate::{Error, Result};

/// One chunk of a file as the TOC describes it.
pub(super) struct ChunkInfo {
    pub offset: u64,
    pub chunk_offset: u64,
    pub size: u64,
    pub digest: [u8; 32],
    pub zeros: bool,
}

/// A content the layer needs: its size, the blob range of all its frames, and the first name
/// that has it.
pub(super) struct Wanted {
    pub size: u64,
    pub range: ByteRange,
    pub name: String,
}

/// The pull's view of a TOC (see the module doc).
pub(super) struct TocPlan {
    pub builder: TreeBuilder,
    /// Each regular file's inode and content digest.
    pub files: Vec<(InodeId, [u8; 32])>,
    pub content_of_name: HashMap<String, [u8; 32]>,
    /// How many tar members read each non-empty content (for the DiffID thread).
    pub uses: HashMap<[u8; 32], u32>,
    /// The non-empty contents, in TOC (= tar) order, each once.
    pub wanted: Vec<([u8; 32], Wanted)>,
    /// Whether some file is empty (its object is written without a fetch).
    pub has_empty: bool,
    pub uids: BTreeSet<u32>,
    pub gids: BTreeSet<u32>,
    /// TOC entries other than chunk continuations.
    pub entries: u64,
    pub chunks_of: HashMap<String, Vec<ChunkInfo>>,
}

impl TocPlan {
    /// The plan of `toc`, whose file data lies before `data_end` in the blob. Errors name the
    /// TOC entry.
    pub fn new(toc: &Toc, data_end: u64, oci_whiteouts: bool) -> Result<TocPlan> {
        let mut plan = TocPlan {
            builder: TreeBuilder::new(oci_whiteouts),
            files: Vec::new(),
            content_of_name: HashMap::new(),
            uses: HashMap::new(),
            wanted: Vec::new(),
            has_empty: false,
            uids: BTreeSet::new(),
            gids: BTreeSet::new(),
            entries: 0,
            chunks_of: chunks_by_name(&toc.entries),
        };
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        for e in toc.entries.iter().filter(|e| e.entry_type != TYPE_CHUNK) {
            let h = e.header(plan.entries)?;
            plan.entries += 1;
            plan.uids.insert(h.uid);
            plan.gids.insert(h.gid);
            let Added::File(id) = plan.builder.add(&h)? else { continue };
            let digest = digest_bytes(&e.digest, &e.name)?;
            plan.files.push((id, digest));
            plan.content_of_name.insert(e.name.clone(), digest);
            if h.size == 0 {
                plan.has_empty = true;
                continue;
            }
            *plan.uses.entry(digest).or_default() += 1;
            if seen.insert(digest) {
                let (start, end) = (e.offset, e.end_offset);
                if start <= 0 || end <= start || end as u64 > data_end {
                    return Err(Error::format(format!(
                        "TOC entry {:?}: data range {start}..{end} is not inside the blob's data (0..{data_end})",
                        e.name
                    )));
                }
                let range = ByteRange { offset: start as u64, length: (end - start) as u64 };
                plan.wanted.push((digest, Wanted { size: h.size, range, name: e.name.clone() }));
            }
        }
        Ok(plan)
    }
}

/// The chunks of every regular file the TOC splits into several, by name.
fn chunks_by_name(entries: &[TocEntry]) -> HashMap<String, Vec<ChunkInfo>> {
    let mut out: HashMap<String, Vec<ChunkInfo>> = HashMap::new();
    let mut bad: HashSet<String> = HashSet::new();
    let mut current: Option<&str> = None;
    for e in entries {
        let starts = e.entry_type == TYPE_REG && !e.chunk_digest.is_empty();
        let continues = e.entry_type == TYPE_CHUNK && current == Some(e.name.as_str());
        if !starts && !continues {
            current = None;
            continue;
        }
        current = Some(e.name.as_str());
        let info = digest_bytes(&e.chunk_digest, &e.name).ok().and_then(|digest| {
            Some(ChunkInfo {
                offset: u64::try_from(e.offset).ok()?,
                chunk_offset: u64::try_from(e.chunk_offset).ok()?,
                size: u64::try_from(e.chunk_size).ok()?,
                digest,
                zeros: e.chunk_type == "zeros",
            })
        });
        match info {
            Some(i) => out.entry(e.name.clone()).or_default().push(i),
            None => {
                bad.insert(e.name.clone());
            }
        }
    }
    // A file with an unusable chunk list is fetched whole (its digest is checked anyway).
    for name in bad {
        out.remove(&name);
    }
    out
}

pub(super) fn digest_bytes(digest: &str, name: &str) -> Result<[u8; 32]> {
    crate::chunked::toc::sha256_bytes(digest).map_err(|e| e.context(format!("TOC entry {name:?}")))
}

/// A manifest read for a pull ([`super::read_manifest_from`]), with the plan of its TOC made
/// while its tar-split was parsed. It is a [`Manifest`] (`Deref`); changing it (`DerefMut`)
/// drops the plan, so a pull never plans from a TOC other than the one it pulls.
pub struct PullManifest {
    manifest: Manifest,
    /// Taken by the first pull that uses it, if in the same whiteout mode (the mode is beside
    /// it); an error in it is that pull's.
    plan: Mutex<Option<(bool, Result<TocPlan>)>>,
}

/// The whiteout mode plans are made in ahead of a pull: the default of pulls
/// ([`super::PullOptions::oci_whiteouts`]).
const PLANNED_OCI_WHITEOUTS: bool = true;

impl PullManifest {
    /// The plan made with `toc` by [`crate::chunked::read_manifest_then`].
    pub(super) fn plan_while_reading(toc: &Toc, location: &Location) -> Result<TocPlan> {
        TocPlan::new(toc, location.data_end(), PLANNED_OCI_WHITEOUTS)
    }

    pub(super) fn with_plan(manifest: Manifest, plan: Result<TocPlan>) -> PullManifest {
        PullManifest { manifest, plan: Mutex::new(Some((PLANNED_OCI_WHITEOUTS, plan))) }
    }

    /// The plan for a pull in `oci_whiteouts` mode: the one made ahead if it is still here and
    /// in that mode, else made now.
    pub(super) fn take_plan(&self, oci_whiteouts: bool) -> Result<TocPlan> {
        let ahead = self.plan.lock().ok().and_then(|mut p| p.take());
        match ahead {
            Some((mode, plan)) if mode == oci_whiteouts => plan,
            _ => TocPlan::new(&self.manifest.toc, self.manifest.data_end(), oci_whiteouts),
        }
    }

    pub fn into_manifest(self) -> Manifest {
        self.manifest
    }
}

impl From<Manifest> for PullManifest {
    fn from(manifest: Manifest) -> PullManifest {
        PullManifest { manifest, plan: Mutex::new(None) }
    }
}

impl Deref for PullManifest {
    type Target = Manifest;
    fn deref(&self) -> &Manifest {
        &self.manifest
    }
}

impl DerefMut for PullManifest {
    fn deref_mut(&mut self) -> &mut Manifest {
        *self.plan.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        &mut self.manifest
    }
}

impl std::fmt::Debug for PullManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.manifest.fmt(f)
    }
}
