//! Unpacking layer tars into directories.
//!
//! Two modes:
//! - [`Whiteouts::Apply`]: layers applied in order onto one root filesystem
//!   (what `umoci unpack` and a runtime do): `.wh.NAME` deletes `NAME`,
//!   `.wh..wh..opq` empties the directory of what earlier layers put there.
//! - [`Whiteouts::Overlay`]: one layer into its own empty directory, to be
//!   used as an overlayfs lower dir: `.wh.NAME` becomes a 0/0 character
//!   device and `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr, which is
//!   how overlayfs itself records deletions.
//!
//! Paths never escape the destination: `..` is refused, and symlinks met on
//! the way to an entry are resolved inside the destination (as
//! containerd's and umoci's secure joins do). Ownership, devices and
//! `trusted.*` xattrs need root; without it they are skipped and counted.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use super::digest::Digest;
use super::layer::{Compression, normalize};
use super::store::Store;
use crate::Result;

/// Extended attributes from PAX records: (name, value).
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// How whiteout markers are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    Apply,
    Overlay,
}

/// Options of [`unpack`].
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    pub whiteouts: Whiteouts,
    /// Set owners (lchown) and create device nodes; defaults to "am I root".
    pub privileged: bool,
}

impl UnpackOptions {
    pub fn new(whiteouts: Whiteouts) -> Self {
        // SAFETY: geteuid has no preconditions.
        UnpackOptions {
            whiteouts,
            privileged: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// What [`unpack`] did.
#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    pub entries: usize,
    /// Entries or attributes skipped for lack of privilege.
    pub skipped_unprivileged: usize,
}

/// Unpacks a stored layer blob.
pub fn unpack_blob(
    store: &Store,
    digest: &Digest,
    compression: Compression,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<UnpackStats> {
    let blob = store.open_blob(digest)?;
    let reader = compression.decoder(io::BufReader::with_capacity(1 << 20, blob))?;
    unpack(reader, dest, opts)
        .with_context(|| format!("unpacking layer {digest} into {}", dest.display()))
}

/// Unpacks an uncompressed layer tar stream into `dest` (created if missing).
pub fn unpack(reader: impl Read, dest: &Path, opts: UnpackOptions) -> Result<UnpackStats> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    // Paths this layer wrote: an opaque marker must not delete them.
    let mut written: HashSet<PathBuf> = HashSet::new();
    // Directory metadata is applied last so that read-only dirs can be filled.
    let mut dirs: Vec<(PathBuf, tar::Header, Xattrs)> = Vec::new();
    for entry in archive.entries().context("reading the layer tar")? {
        let mut entry = entry.context("reading the layer tar")?;
        let raw = entry.path().context("reading an entry path")?.into_owned();
        // Some tools write an entry for the root itself (`./`): nothing to do.
        if raw.components().all(|c| {
            matches!(
                c,
                std::path::Component::CurDir | std::path::Component::RootDir
            )
        }) {
            continue;
        }
        let rel = normalize(&raw).with_context(|| format!("layer entry {}", raw.display()))?;
        let xattrs = pax_xattrs(&mut entry)?;
        let header = entry.header().clone();
        stats.entries += 1;
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = secure_join(dest, &parent_rel)?;
        if name == b".wh..wh..opq" {
            fs::create_dir_all(&parent)?;
            match opts.whiteouts {
                Whiteouts::Apply => {
                    for child in fs::read_dir(&parent)? {
                        let child = child?.path();
                        let child_rel = parent_rel.join(child.file_name().unwrap_or_default());
                        if !written.contains(&child_rel) {
                            remove_any(&child)?;
                        }
                    }
                }
                Whiteouts::Overlay => {
                    if opts.privileged {
                        set_xattr(&parent, b"trusted.overlay.opaque", b"y")?;
                    } else {
                        stats.skipped_unprivileged += 1;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
            match opts.whiteouts {
                Whiteouts::Apply => remove_any(&target)?,
                Whiteouts::Overlay => {
                    fs::create_dir_all(&parent)?;
                    remove_any(&target)?;
                    if opts.privileged {
                        mknod(&target, libc::S_IFCHR, 0)?;
                    } else {
                        stats.skipped_unprivileged += 1;
                    }
                }
            }
            written.insert(parent_rel.join(std::ffi::OsStr::from_bytes(hidden)));
            continue;
        }
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let path = parent.join(rel.file_name().context("entry without a name")?);
        let kind = header.entry_type();
        // Replace what is there unless both are directories (they merge).
        if let Ok(existing) = fs::symlink_metadata(&path)
            && !(existing.is_dir() && kind.is_dir())
        {
            remove_any(&path)?;
        }
        match kind {
            tar::EntryType::Directory => {
                if !path.is_dir() {
                    fs::create_dir(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                }
                // Writable by us until the end, when the real mode is set.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
                dirs.push((path, header, xattrs));
                written.insert(rel);
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                io::copy(&mut entry, &mut f)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.context("symlink without a target")?;
                symlink(&target, &path)
                    .with_context(|| format!("creating symlink {}", path.display()))?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name()?.context("hard link without a target")?;
                let target = secure_join(dest, &normalize(&target)?)?;
                fs::hard_link(&target, &path).with_context(|| {
                    format!("hard-linking {} to {}", path.display(), target.display())
                })?;
                written.insert(rel);
                // A hard link shares the target's metadata: nothing more to set.
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ty, dev) = match kind {
                    tar::EntryType::Char => (libc::S_IFCHR, device(&header)),
                    tar::EntryType::Block => (libc::S_IFBLK, device(&header)),
                    _ => (libc::S_IFIFO, 0),
                };
                if ty != libc::S_IFIFO && !opts.privileged {
                    stats.skipped_unprivileged += 1;
                    continue;
                }
                mknod(&path, ty, dev)?;
            }
            // PAX/GNU metadata entries are consumed by the tar crate.
            other => bail!(
                "layer entry {} has an unsupported type {other:?}",
                rel.display()
            ),
        }
        written.insert(rel);
        finish_meta(&path, &header, &xattrs, kind.is_symlink(), opts, &mut stats)?;
    }
    // Deepest first, so setting a parent's mtime is not undone by its children.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, header, xattrs) in dirs {
        finish_meta(&path, &header, &xattrs, false, opts, &mut stats)?;
    }
    Ok(stats)
}

fn device(h: &tar::Header) -> libc::dev_t {
    let major = h.device_major().ok().flatten().unwrap_or(0);
    let minor = h.device_minor().ok().flatten().unwrap_or(0);
    libc::makedev(major, minor)
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn finish_meta(
    path: &Path,
    h: &tar::Header,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    is_symlink: bool,
    opts: UnpackOptions,
    stats: &mut UnpackStats,
) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    if opts.privileged {
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        // SAFETY: c is a valid path string.
        if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("chown {}", path.display()));
        }
    }
    for (name, value) in xattrs {
        if !opts.privileged && name.starts_with(b"trusted.") {
            stats.skipped_unprivileged += 1;
            continue;
        }
        set_xattr(path, name, value)?;
    }
    if !is_symlink {
        // After chown: chown clears setuid bits.
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    set_times(path, h.mtime().unwrap_or(0) as i64)
}

/// Sets a path's atime and mtime to `secs` (whole seconds), without
/// following a symlink: what every unpacked entry gets from its header.
pub(crate) fn set_times(path: &Path, secs: i64) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid path and a two-element times array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setting the mtime of {}", path.display()));
    }
    Ok(())
}

pub(crate) fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: valid strings and a value buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| {
            format!(
                "setting xattr {} on {}",
                String::from_utf8_lossy(name),
                path.display()
            )
        });
    }
    Ok(())
}

pub(crate) fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: valid path string.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("mknod {}", path.display()));
    }
    Ok(())
}

/// Removes a file, symlink or directory tree if it exists.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            make_removable(path);
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
}

/// Read-only directories cannot be emptied even by their owner.
fn make_removable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                make_removable(&e.path());
            }
        }
    }
}

/// Joins `rel` onto `root`, resolving symlinks met along the way inside
/// `root` (an absolute link target means `root`-relative), so the result is
/// always below `root`. The last component is not resolved.
pub fn secure_join(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut parts: Vec<PathBuf> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = parts.pop() {
        let candidate = cur.join(&part);
        let host = root.join(&candidate);
        let is_last = parts.is_empty();
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() && !is_last => {
                hops += 1;
                if hops > 40 {
                    bail!(
                        "too many levels of symbolic links under {}",
                        root.join(rel).display()
                    );
                }
                let target = fs::read_link(&host)?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                let mut pending: Vec<PathBuf> = Vec::new();
                for c in target.components() {
                    match c {
                        Component::Normal(n) => pending.push(PathBuf::from(n)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
                for p in pending.into_iter().rev() {
                    parts.push(p);
                }
            }
            _ if part.as_os_str() == ".." => {
                cur.pop();
            }
            _ => cur = candidate,
        }
    }
    Ok(root.join(cur))
}
