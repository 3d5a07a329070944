//! `RUN --mount=type=bind,from=STAGE|IMAGE` and `type=cache,from=…`: a
//! path inside another stage's (or image's) layers, made into one host
//! directory (or file) the sandbox can bind.
//!
//! A stage's files are spread over its snapshot layers, so the subtree is
//! rebuilt from the union view: directories are created, files are hard
//! links to the snapshots when the mount is read-only (cheap; a read-only
//! bind cannot change them) and copies when it is writable (writes land in
//! the throw-away copy, never in a snapshot, and are discarded with it as
//! in BuildKit). Owners, modes and symlinks are kept.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::rootfs::RootView;
use crate::Result;

/// The filesystem a mount reads from.
pub struct SourceFs {
    pub view: RootView,
    /// `stage NAME` or `image REF`, for errors.
    pub name: String,
    /// The stage's result key or the image's digest.
    pub key: String,
}

/// How the files of a materialised tree relate to the snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Hard links (read-only mounts).
    Linked,
    /// Private copies (writable mounts, cache seeds).
    Copied,
}

/// A temp dir (under `parent`) holding `source` of `view`; `.1` is the
/// host path to bind: the directory, or the file when `source` is one.
/// `what` names the stage or image for errors.
pub fn materialise(
    view: &RootView,
    source: &str,
    what: &str,
    parent: &Path,
    files: Files,
) -> Result<(tempfile::TempDir, PathBuf)> {
    let source = if source.is_empty() { "/" } else { source };
    let resolved = view.resolve(Path::new(source))?;
    let Some(host) = view.lookup(&resolved) else {
        bail!("{source}: not found in {what} (the mount's source= must exist there)");
    };
    crate::paths::private_dir(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix("mount-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temp dir in {}", parent.display()))?;
    let md = fs::symlink_metadata(&host)?;
    let out = tmp.path().join("root");
    if md.is_dir() {
        fs::create_dir(&out)?;
        copy_dir(view, &resolved, &out, files)?;
        set_meta(&out, &md)?;
    } else if md.is_file() {
        place_file(&host, &md, &out, files)?;
    } else {
        bail!("{source} in {what} is neither a file nor a directory");
    }
    Ok((tmp, out))
}

fn copy_dir(view: &RootView, dir: &Path, out: &Path, files: Files) -> Result<()> {
    for (name, host) in view.read_dir(dir)? {
        let md =
            fs::symlink_metadata(&host).with_context(|| format!("reading {}", host.display()))?;
        let dst = out.join(&name);
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&dst)?;
            copy_dir(view, &dir.join(&name), &dst, files)?;
            // After the contents, so a read-only directory can be filled.
            set_meta(&dst, &md)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&host)?, &dst)?;
            chown(&dst, &md)?;
        } else if ft.is_file() {
            place_file(&host, &md, &dst, files)?;
        }
        // Devices, fifos and sockets are left out: a bind source is data.
    }
    Ok(())
}

fn place_file(host: &Path, md: &fs::Metadata, dst: &Path, files: Files) -> Result<()> {
    // A hard link shares the snapshot's inode: its metadata is already right.
    if files == Files::Linked && fs::hard_link(host, dst).is_ok() {
        return Ok(());
    }
    fs::copy(host, dst).with_context(|| format!("copying {}", host.display()))?;
    set_meta(dst, md)
}

fn set_meta(dst: &Path, md: &fs::Metadata) -> Result<()> {
    chown(dst, md)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
        .with_context(|| format!("chmod of {}", dst.display()))?;
    Ok(())
}

/// Keeps the snapshot's owner. Rootless, ids outside the user's own
/// cannot be given (EPERM): the copy then stays the user's, which the
/// sandbox maps to root.
fn chown(dst: &Path, md: &fs::Metadata) -> Result<()> {
    match std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid())) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        r => r.with_context(|| format!("chown of {}", dst.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materialises_a_subtree_across_layers() {
        let t = tempfile::tempdir().unwrap();
        let (l0, l1) = (t.path().join("l0"), t.path().join("l1"));
        fs::create_dir_all(l0.join("opt/t")).unwrap();
        fs::create_dir_all(l1.join("opt/t")).unwrap();
        fs::write(l0.join("opt/t/a"), "a").unwrap();
        fs::write(l1.join("opt/t/b"), "b").unwrap();
        let view = RootView::new(vec![l0, l1]);
        let (_tmp, root) = materialise(
            &view,
            "/opt/t",
            "stage tools",
            &t.path().join("m"),
            Files::Copied,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "a");
        assert_eq!(fs::read_to_string(root.join("b")).unwrap(), "b");
        let (_tmp, file) = materialise(
            &view,
            "/opt/t/b",
            "stage tools",
            &t.path().join("m"),
            Files::Linked,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(file).unwrap(), "b");
        let err = materialise(
            &view,
            "/nope",
            "stage tools",
            &t.path().join("m"),
            Files::Linked,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nope: not found in stage tools"), "{err}");
    }
}
