//! Where kiln keeps its state: XDG base directories, overridable.
//!
//! | what | default | override |
//! |---|---|---|
//! | blob store + step cache | `$XDG_CACHE_HOME/kiln` (`~/.cache/kiln`) | `KILN_CACHE_DIR` |
//! | local image store (an OCI layout) | `$XDG_DATA_HOME/kiln/images` (`~/.local/share/kiln/images`) | `KILN_DATA_DIR` (the parent) |

use std::path::PathBuf;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use crate::Result;

fn home() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => bail!("HOME is not set: set HOME, or KILN_CACHE_DIR and KILN_DATA_DIR"),
    }
}

fn xdg(var: &str, fallback: &str) -> Result<PathBuf> {
    match std::env::var_os(var) {
        // The XDG spec says relative values are invalid and must be ignored.
        Some(v) if PathBuf::from(&v).is_absolute() => Ok(PathBuf::from(v)),
        _ => Ok(home()
            .context("finding the XDG directories")?
            .join(fallback)),
    }
}

/// Root of the blob store and step cache.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    Ok(xdg("XDG_CACHE_HOME", ".cache")?.join("kiln"))
}

/// Root of kiln's persistent data (the local image store lives below it).
pub fn data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    Ok(xdg("XDG_DATA_HOME", ".local/share")?.join("kiln"))
}

/// Creates `dir` (and its parents) if needed and makes it mode 0700, also
/// when an older kiln made it 0755. For the dirs that hold trees from
/// images and steps (snapshots, run dirs, cache mounts, mount sources):
/// their setuid-root binaries and device nodes must not be reachable by
/// the host's other users (containerd keeps its snapshots 0700 too).
pub fn private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "making {} private (mode 0700): it holds image files other users must not reach; chmod 700 it or use another KILN_CACHE_DIR",
                    dir.display()
                )
            },
        )?;
    }
    Ok(())
}

/// Sets a file's or dir's mtime to now: the record that a build used a
/// cache entry, which the cache GC (`crate::gc`) orders by. Best effort (a
/// failure only makes the entry look older to GC). Here, not in `gc`,
/// because every module that keeps cache entries calls it.
pub fn touch(path: &Path) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let _ = utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::UTIME_NOW,
        UtimensatFlags::NoFollowSymlink,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_made_0700_and_fixes_an_open_one() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        private_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
            0o700
        );
    }
}
