//! Turning a step's overlay upper dir into layer entries, as buildah and
//! BuildKit do: overlay whiteouts (0/0 character devices) become `.wh.`
//! entries, opaque directories (`trusted.overlay.opaque=y`, or
//! `user.overlay.opaque=y` when rootless) become `.wh..wh..opq`, overlay's
//! own xattrs are dropped, and mount points are left out.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::Result;
use crate::oci::layer::{Entry, EntryKind, Meta, ScanOptions, scan_dir};

/// A target path (`/a/b`) as a layer-relative path (`a/b`).
pub(crate) fn rel(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn is_opaque(xattrs: &[(std::ffi::OsString, Vec<u8>)]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    xattrs.iter().any(|(k, v)| {
        (k.as_bytes() == b"trusted.overlay.opaque" || k.as_bytes() == b"user.overlay.opaque")
            && v.as_slice() == b"y"
    })
}

/// The entries of an upper dir. `excluded` are layer-relative mount
/// targets: they and everything below them are left out.
pub fn upper_entries(upper: &Path, excluded: &[PathBuf]) -> Result<Vec<Entry>> {
    use std::os::unix::ffi::OsStrExt;
    let scan = scan_dir(upper, &ScanOptions::default())?;
    let mut whiteouts: HashSet<PathBuf> = HashSet::new();
    let mut out = Vec::with_capacity(scan.entries.len());
    for mut e in scan.entries {
        if excluded.iter().any(|x| e.path.starts_with(x)) {
            continue;
        }
        let opaque = matches!(e.kind, EntryKind::Dir) && is_opaque(&e.meta.xattrs);
        e.meta
            .xattrs
            .retain(|(k, _)| !is_overlay_xattr(k.as_bytes()));
        match &e.kind {
            EntryKind::CharDevice { major: 0, minor: 0 } => {
                whiteouts.insert(e.path.clone());
                out.push(Entry {
                    path: e.path,
                    kind: EntryKind::Whiteout,
                    meta: Meta::root(0),
                });
            }
            // Overlay shares one whiteout inode among many deletions.
            EntryKind::Hardlink(first) if whiteouts.contains(first) => {
                whiteouts.insert(e.path.clone());
                out.push(Entry {
                    path: e.path,
                    kind: EntryKind::Whiteout,
                    meta: Meta::root(0),
                });
            }
            _ if opaque => {
                let path = e.path.clone();
                out.push(e);
                // Note: `canonicalize` keys entries by path, so this marker
                // replaces the directory's own header (its mode/owner fall
                // back to the extractor's defaults). Semantics win.
                out.push(Entry {
                    path,
                    kind: EntryKind::Opaque,
                    meta: Meta::root(0),
                });
            }
            _ => out.push(e),
        }
    }
    Ok(out)
}

/// The metadata of `rel` in the top-most lower dir that has it.
fn lower_meta(lowers_top_first: &[PathBuf], rel: &Path) -> Option<fs::Metadata> {
    lowers_top_first
        .iter()
        .find_map(|l| fs::symlink_metadata(l.join(rel)).ok())
}

/// Removes the mount points the sandbox created (and parent dirs that
/// were only copied up because of them) from the upper dir, so that they
/// do not show up in the layer. Anything the step changed is kept.
pub(crate) fn remove_stubs(upper: &Path, stubs: &BTreeSet<PathBuf>, lowers_top_first: &[PathBuf]) {
    let mut parents: BTreeSet<PathBuf> = BTreeSet::new();
    // Deepest first.
    for s in stubs.iter().rev() {
        let p = upper.join(s);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir(&p); // only if still empty
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = fs::remove_file(&p);
            }
            _ => {}
        }
        let mut a = s.parent();
        while let Some(d) = a.filter(|d| !d.as_os_str().is_empty()) {
            parents.insert(d.to_path_buf());
            a = d.parent();
        }
    }
    for d in parents.iter().rev() {
        if stubs.contains(d) {
            continue;
        }
        let p = upper.join(d);
        let (Ok(um), Some(lm)) = (fs::symlink_metadata(&p), lower_meta(lowers_top_first, d)) else {
            continue;
        };
        let same = um.is_dir()
            && lm.is_dir()
            && um.mode() == lm.mode()
            && um.uid() == lm.uid()
            && um.gid() == lm.gid();
        let opaque = crate::oci::layer::read_xattrs(&p)
            .map(|x| is_opaque(&x))
            .unwrap_or(true);
        if same && !opaque && fs::read_dir(&p).is_ok_and(|mut r| r.next().is_none()) {
            let _ = fs::remove_dir(&p);
        }
    }
}

/// True when `p` in an upper dir is an overlay whiteout.
pub fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}
