//! A finished step's upper dir turned into the snapshot of the layer it
//! was captured as (`snapshots/<blob hex>`), so that the next step does
//! not decompress and unpack that blob again: the upper dir already holds
//! those files. For an `npm ci` layer of tens of thousands of files that
//! is seconds per build.
//!
//! The rule: the snapshot must be exactly what [`unpack_blob`] with
//! [`Whiteouts::Overlay`] makes of the blob, because a later build that
//! finds no snapshot unpacks the blob, and both must see the same files.
//! The upper dir differs from that unpack in known ways, undone here:
//! - what the capture left out (mount targets and what is below them,
//!   sockets) is removed;
//! - overlay's own xattrs (`origin`, `impure`…) and the ones layers never
//!   carry (`security.selinux`, `system.*` ACLs) are removed; an opaque dir
//!   gets `trusted.overlay.opaque=y`, as the unpacker sets it;
//! - whiteouts are made again as the unpacker makes them (overlay's are
//!   mode 0 and share one inode);
//! - atimes and mtimes become the tar's clamped whole seconds;
//! - the root is a fresh dir, as the unpacker's is: the upper dir's
//!   entries are moved into it (the upper root itself may carry overlay
//!   xattrs or a mode the step gave `/`, which no layer records).
//!
//! Anything else makes it fall back, and the blob is unpacked when a step
//! needs it, as before: an entry whose type, mode or owner no longer match
//! the capture, a file named `.wh.*` (the unpacker reads it as a whiteout),
//! a hard link whose target the layer does not hold before it, an
//! unprivileged kiln (its unpacker can set no owners and make no
//! whiteouts, so its snapshots differ from any upper dir), or an upper dir
//! on another filesystem than the snapshots.
//!
//! Crash safety: entries are moved into a fresh dir inside the run dir,
//! fixed there, and that dir is renamed into place, so the snapshot
//! appears whole or not at all; a kill leaves it in the run dir, which the
//! next run removes with the rest of a dead kiln's run dirs. A build that
//! loses the race for the same blob keeps the winner's snapshot.
//!
//! [`unpack_blob`]: crate::oci::unpack::unpack_blob

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::capture::{is_overlay_xattr, is_whiteout};
use super::snapshot::Snapshots;
use crate::Result;
use crate::oci::Digest;
use crate::oci::layer::{Entry, EntryKind, clamped_mtime, keep_xattr, xattr_names};
use crate::oci::unpack::{UnpackOptions, Whiteouts, mknod, remove_any, set_times, set_xattr};

/// What became of an upper dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// It is now the blob's snapshot.
    Adopted,
    /// The blob already had a snapshot (another step or build made the
    /// same layer); the upper dir is dropped.
    AlreadyThere,
    /// It could not be made identical to the blob's unpack (the reason):
    /// the blob will be unpacked when needed.
    Fallback(&'static str),
}

/// Makes `run_dir`'s upper dir the snapshot of `blob`, the layer written
/// from `entries` (canonical, as [`crate::oci::layer::write_canonical_layer`]
/// wrote them) with `epoch`; `dropped` are the upper-relative paths the
/// capture left out. The upper dir is emptied unless the result is a
/// fallback decided before anything moved.
pub(crate) fn adopt(
    run_dir: &Path,
    dropped: &[PathBuf],
    entries: &[Entry],
    snapshots: &Snapshots,
    blob: &Digest,
    epoch: i64,
) -> Result<Adoption> {
    let upper = &run_dir.join("upper");
    let dest = snapshots.path(blob);
    if dest.is_dir() {
        return Ok(Adoption::AlreadyThere);
    }
    if !UnpackOptions::new(Whiteouts::Overlay).privileged {
        return Ok(Adoption::Fallback(
            "unprivileged unpacks skip owners and whiteouts",
        ));
    }
    if let Some(reason) = unfit(entries) {
        return Ok(Adoption::Fallback(reason));
    }
    let root = snapshots.root();
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let dev = |p: &Path| {
        fs::symlink_metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("inspecting {}", p.display()))
    };
    if dev(run_dir)? != dev(root)? {
        return Ok(Adoption::Fallback("the run dir is on another filesystem"));
    }
    let into = run_dir.join("snapshot");
    let result = (|| -> Result<Adoption> {
        // As the unpacker makes its destination.
        fs::create_dir_all(&into).with_context(|| format!("creating {}", into.display()))?;
        for d in dropped {
            remove_any(&upper.join(d))?;
        }
        // Moved first, fixed after: a rename may touch what it moves.
        for child in fs::read_dir(upper).with_context(|| format!("reading {}", upper.display()))? {
            let child = child?;
            let to = into.join(child.file_name());
            fs::rename(child.path(), &to).with_context(|| {
                format!("moving {} to {}", child.path().display(), to.display())
            })?;
        }
        if let Some(reason) = normalize(&into, entries, epoch)? {
            return Ok(Adoption::Fallback(reason));
        }
        Ok(if super::snapshot::publish(&into, &dest)? {
            Adoption::Adopted
        } else {
            Adoption::AlreadyThere
        })
    })();
    super::run::remove_tree(&into);
    result
}

/// Why entries cannot be reproduced by moving files, if they cannot.
fn unfit(entries: &[Entry]) -> Option<&'static str> {
    let mut seen: Option<HashSet<&Path>> = None;
    for (i, e) in entries.iter().enumerate() {
        let plain = !matches!(e.kind, EntryKind::Whiteout | EntryKind::Opaque);
        if plain
            && e.path
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b".wh."))
        {
            return Some("a file named .wh.* (a whiteout to the unpacker)");
        }
        if let EntryKind::Hardlink(target) = &e.kind {
            // The unpacker links to what it has already made.
            let seen = seen.get_or_insert_with(|| {
                entries[..i]
                    .iter()
                    .filter(|e| !matches!(e.kind, EntryKind::Whiteout | EntryKind::Opaque))
                    .map(|e| e.path.as_path())
                    .collect()
            });
            if !seen.contains(target.as_path()) {
                return Some("a hard link to a path the layer does not hold before it");
            }
        }
        if let Some(seen) = seen.as_mut()
            && plain
        {
            seen.insert(e.path.as_path());
        }
    }
    None
}

/// Makes the tree at `root` (the upper dir's entries) what the unpacker
/// makes of `entries`, or says why it cannot.
fn normalize(root: &Path, entries: &[Entry], epoch: i64) -> Result<Option<&'static str>> {
    let mut dirs: Vec<(PathBuf, i64)> = Vec::new();
    for e in entries {
        let p = root.join(&e.path);
        match &e.kind {
            EntryKind::Whiteout => {
                let md = lstat(&p)?;
                if !is_whiteout(&md) {
                    return Ok(Some("a whiteout changed after the capture"));
                }
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
                mknod(&p, libc::S_IFCHR, 0)?;
            }
            EntryKind::Opaque => set_xattr(&p, b"trusted.overlay.opaque", b"y")?,
            // Shares its target's inode, so its metadata too.
            EntryKind::Hardlink(_) => {}
            kind => {
                let md = lstat(&p)?;
                let symlink = matches!(kind, EntryKind::Symlink(_));
                if !same_kind(kind, &md)
                    || md.uid() != e.meta.uid
                    || md.gid() != e.meta.gid
                    || (!symlink && md.mode() & 0o7777 != e.meta.mode)
                {
                    return Ok(Some("an entry changed after the capture"));
                }
                strip_xattrs(&p)?;
                let t = clamped_mtime(e.meta.mtime, epoch);
                if matches!(kind, EntryKind::Dir) {
                    dirs.push((p, t));
                } else {
                    set_times(&p, t)?;
                }
            }
        }
    }
    // Last: making whiteouts above touched their dirs' mtimes.
    for (p, t) in dirs {
        set_times(&p, t)?;
    }
    Ok(None)
}

fn lstat(p: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(p).with_context(|| format!("inspecting {}", p.display()))
}

fn same_kind(kind: &EntryKind, md: &fs::Metadata) -> bool {
    let ft = md.file_type();
    let dev = |major: u32, minor: u32| {
        crate::oci::layer::major(md.rdev()) == major && crate::oci::layer::minor(md.rdev()) == minor
    };
    match kind {
        EntryKind::File(_) => ft.is_file(),
        EntryKind::Dir => ft.is_dir(),
        EntryKind::Symlink(_) => ft.is_symlink(),
        EntryKind::CharDevice { major, minor } => ft.is_char_device() && dev(*major, *minor),
        EntryKind::BlockDevice { major, minor } => ft.is_block_device() && dev(*major, *minor),
        EntryKind::Fifo => ft.is_fifo(),
        EntryKind::Hardlink(_) | EntryKind::Whiteout | EntryKind::Opaque => false,
    }
}

/// Removes the xattrs no layer carries: overlay's own and those
/// [`keep_xattr`] drops. The rest are the entry's, as captured.
fn strip_xattrs(p: &Path) -> Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    for name in xattr_names(p)? {
        if is_overlay_xattr(&name) || !keep_xattr(&name) {
            let n = CString::new(name.as_slice())?;
            // SAFETY: valid strings.
            if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } != 0 {
                return Err(io::Error::last_os_error()).with_context(|| {
                    format!(
                        "removing xattr {} from {}",
                        String::from_utf8_lossy(&name),
                        p.display()
                    )
                });
            }
        }
    }
    Ok(())
}
