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

pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
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
    Ok(upper_capture(upper, excluded)?.entries)
}

/// What an upper dir holds, as a layer.
#[derive(Debug, Default)]
pub struct Capture {
    /// The layer's entries (not yet canonical).
    pub entries: Vec<Entry>,
    /// Upper-relative paths that are in the upper dir but not in the layer
    /// (mount targets with what is below them, sockets), top-most only.
    pub dropped: Vec<PathBuf>,
}

/// [`upper_entries`], plus what was left out.
pub fn upper_capture(upper: &Path, excluded: &[PathBuf]) -> Result<Capture> {
    use std::os::unix::ffi::OsStrExt;
    let scan = scan_dir(upper, &ScanOptions::default())?;
    let mut whiteouts: HashSet<PathBuf> = HashSet::new();
    let mut out = Vec::with_capacity(scan.entries.len());
    let mut dropped: Vec<PathBuf> = scan
        .skipped
        .iter()
        .filter_map(|(host, _)| host.strip_prefix(upper).ok().map(Path::to_path_buf))
        .collect();
    let mut dropped_dirs: Vec<PathBuf> = Vec::new();
    for mut e in scan.entries {
        if excluded.iter().any(|x| e.path.starts_with(x)) {
            // The scan is depth-first: what is below a dropped path follows it.
            if !dropped_dirs.last().is_some_and(|d| e.path.starts_with(d)) {
                dropped_dirs.push(e.path.clone());
            }
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
                // `canonicalize` keys the marker as `DIR/.wh..wh..opq`, so
                // the directory keeps its own header too.
                out.push(Entry {
                    path,
                    kind: EntryKind::Opaque,
                    meta: Meta::root(0),
                });
            }
            _ => out.push(e),
        }
    }
    dropped.extend(dropped_dirs);
    Ok(Capture {
        entries: out,
        dropped,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn setxattr(p: &Path, name: &str, value: &[u8]) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid strings and buffer.
        let r = unsafe {
            libc::setxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
    }

    fn tmp() -> tempfile::TempDir {
        // Under target/: a disk filesystem with user xattrs (not a tmpfs).
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        fs::create_dir_all(&base).unwrap();
        tempfile::tempdir_in(base).unwrap()
    }

    #[test]
    fn opaque_dirs_excluded_mounts_and_overlay_xattrs() {
        let t = tmp();
        let up = t.path();
        fs::create_dir_all(up.join("o/sub")).unwrap();
        fs::write(up.join("o/sub/f"), "x").unwrap();
        setxattr(&up.join("o"), "user.overlay.opaque", b"y");
        setxattr(&up.join("o/sub/f"), "user.overlay.origin", b"junk");
        setxattr(&up.join("o/sub/f"), "user.keep", b"1");
        fs::create_dir_all(up.join("cache/pip")).unwrap();
        fs::write(up.join("cache/pip/blob"), "x").unwrap();
        fs::write(up.join("a"), "hi").unwrap();
        let entries = upper_entries(up, &[PathBuf::from("cache/pip")]).unwrap();
        let paths: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                (
                    e.path.display().to_string(),
                    format!("{:?}", std::mem::discriminant(&e.kind)),
                )
            })
            .collect();
        assert!(
            entries
                .iter()
                .any(|e| e.path == Path::new("o") && e.kind == EntryKind::Opaque),
            "{paths:?}"
        );
        assert!(
            entries
                .iter()
                .any(|e| e.path == Path::new("cache") && e.kind == EntryKind::Dir)
        );
        assert!(
            !entries.iter().any(|e| e.path.starts_with("cache/pip")),
            "{paths:?}"
        );
        let f = entries
            .iter()
            .find(|e| e.path == Path::new("o/sub/f"))
            .unwrap();
        let names: Vec<_> = f.meta.xattrs.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("user.keep")]);
        assert!(entries.iter().any(|e| e.path == Path::new("a")));
    }

    #[test]
    fn stubs_are_removed_but_changes_kept() {
        let t = tmp();
        let (up, low) = (t.path().join("upper"), t.path().join("lower"));
        fs::create_dir_all(low.join("run")).unwrap();
        fs::create_dir_all(low.join("etc")).unwrap();
        // Stub dir with a copied-up parent; a stub file; a stub the step filled.
        fs::create_dir_all(up.join("run/secrets")).unwrap();
        fs::create_dir_all(up.join("etc")).unwrap();
        fs::write(up.join("etc/hosts"), "").unwrap();
        fs::write(up.join("etc/changed"), "x").unwrap();
        fs::create_dir_all(up.join("newdir")).unwrap();
        fs::write(up.join("newdir/kept"), "x").unwrap();
        let stubs: BTreeSet<PathBuf> = ["run/secrets", "etc/hosts", "newdir"]
            .iter()
            .map(PathBuf::from)
            .collect();
        remove_stubs(&up, &stubs, &[low]);
        assert!(!up.join("run").exists(), "copied-up parent of a stub kept");
        assert!(!up.join("etc/hosts").exists());
        assert!(up.join("etc/changed").exists());
        assert!(up.join("newdir/kept").exists());
    }
}
