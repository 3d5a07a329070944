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
//! Paths never escape the destination: `..` and absolute names are refused,
//! and every entry is placed through [`InRoot`] (the kernel resolves its
//! parent inside the destination with `openat2(RESOLVE_IN_ROOT)`; the entry
//! itself is never followed), whatever symlinks this layer or an earlier
//! one put on the way. Ownership, devices and `trusted.*` xattrs need root;
//! without it they are skipped and counted.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, bail};
use nix::sys::stat::SFlag;

use super::digest::Digest;
use super::inroot::{Dir, InRoot, is_dir};
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
///
/// Every entry is placed through [`InRoot`]: its parent is resolved by the
/// kernel inside `dest`, and the entry itself is made relative to that
/// parent's descriptor, so no symlink in the layer (or in `dest` already)
/// can take a write, a deletion or a metadata change outside `dest`.
pub fn unpack(reader: impl Read, dest: &Path, opts: UnpackOptions) -> Result<UnpackStats> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let root = InRoot::open(dest)?;
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    // Paths this layer wrote: an opaque marker must not delete them.
    let mut written: HashSet<PathBuf> = HashSet::new();
    // Directory metadata is applied last so that read-only dirs can be filled.
    let mut dirs: Vec<(PathBuf, tar::Header, Xattrs)> = Vec::new();
    // The last parent resolved: a tar lists siblings together. Dropped
    // whenever this layer removes anything or makes a symlink, either of
    // which may change what a path resolves to.
    let mut parents = ParentCache::default();
    for entry in archive.entries().context("reading the layer tar")? {
        let mut entry = entry.context("reading the layer tar")?;
        let raw = entry.path().context("reading an entry path")?.into_owned();
        // Some tools write an entry for the root itself (`./`): nothing to do.
        if raw
            .components()
            .all(|c| matches!(c, Component::CurDir | Component::RootDir))
        {
            continue;
        }
        let rel = normalize(&raw).with_context(|| format!("layer entry {}", raw.display()))?;
        let xattrs = pax_xattrs(&mut entry)?;
        let header = entry.header().clone();
        stats.entries += 1;
        let name = rel.file_name().context("entry without a name")?.to_owned();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name.as_bytes() == b".wh..wh..opq" {
            let parent = parents.get(&root, &parent_rel)?;
            match opts.whiteouts {
                Whiteouts::Apply => {
                    for child in parent.list()? {
                        if !written.contains(&parent_rel.join(&child)) {
                            parent.remove(&child)?;
                        }
                    }
                    parents.clear();
                }
                Whiteouts::Overlay => {
                    if opts.privileged {
                        parent.set_xattr(None, b"trusted.overlay.opaque", b"y")?;
                    } else {
                        stats.skipped_unprivileged += 1;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
            let hidden = OsStr::from_bytes(hidden);
            match opts.whiteouts {
                Whiteouts::Apply => {
                    // Nothing to delete under a parent that does not exist.
                    if let Some(parent) = root.open_dir(&parent_rel)? {
                        parent.remove(hidden)?;
                    }
                }
                Whiteouts::Overlay => {
                    let parent = parents.get(&root, &parent_rel)?;
                    parent.remove(hidden)?;
                    if opts.privileged {
                        parent.mknod(hidden, SFlag::S_IFCHR, 0)?;
                    } else {
                        stats.skipped_unprivileged += 1;
                    }
                }
            }
            parents.clear();
            written.insert(parent_rel.join(hidden));
            continue;
        }
        let parent = parents.get(&root, &parent_rel)?;
        let kind = header.entry_type();
        // Replace what is there unless both are directories (they merge).
        if let Some(existing) = parent.lstat(&name)?
            && !(is_dir(&existing) && kind.is_dir())
        {
            parent.remove(&name)?;
            parents.clear();
        }
        match kind {
            tar::EntryType::Directory => {
                match parent.lstat(&name)? {
                    // Writable by us until the end, when the real mode is set.
                    Some(_) => parent.chmod(&name, 0o700)?,
                    None => parent.mkdir(&name, 0o700)?,
                }
                dirs.push((rel.clone(), header, xattrs));
                written.insert(rel);
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = parent.create_file(&name, 0o600)?;
                io::copy(&mut entry, &mut f)
                    .with_context(|| format!("writing {}", rel.display()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.context("symlink without a target")?;
                parent.symlink(&name, &target)?;
                parents.clear();
            }
            tar::EntryType::Link => {
                let target = entry.link_name()?.context("hard link without a target")?;
                let target =
                    normalize(&target).with_context(|| format!("hard link {}", rel.display()))?;
                let target_name = target
                    .file_name()
                    .with_context(|| format!("hard link {} to the root", rel.display()))?;
                let Some(target_dir) = root.open_dir(target.parent().unwrap_or(Path::new("")))?
                else {
                    bail!(
                        "hard link {} to {}: no such file in this layer or below",
                        rel.display(),
                        target.display()
                    );
                };
                parent.link(&name, &target_dir, target_name)?;
                written.insert(rel);
                // A hard link shares the target's metadata: nothing more to set.
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ty, dev) = match kind {
                    tar::EntryType::Char => (SFlag::S_IFCHR, device(&header)),
                    tar::EntryType::Block => (SFlag::S_IFBLK, device(&header)),
                    _ => (SFlag::S_IFIFO, 0),
                };
                if ty != SFlag::S_IFIFO && !opts.privileged {
                    stats.skipped_unprivileged += 1;
                    continue;
                }
                parent.mknod(&name, ty, dev)?;
            }
            // PAX/GNU metadata entries are consumed by the tar crate.
            other => bail!(
                "layer entry {} has an unsupported type {other:?}",
                rel.display()
            ),
        }
        written.insert(rel);
        finish_meta(
            &parent,
            &name,
            &header,
            &xattrs,
            kind.is_symlink(),
            opts,
            &mut stats,
        )?;
    }
    // Deepest first, so setting a parent's mtime is not undone by its children.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (rel, header, xattrs) in dirs {
        let name = rel.file_name().context("entry without a name")?;
        // A later entry may have replaced the directory: its own metadata
        // was set then.
        let Some(parent) = root.open_dir(rel.parent().unwrap_or(Path::new("")))? else {
            continue;
        };
        if !parent.lstat(name)?.is_some_and(|st| is_dir(&st)) {
            continue;
        }
        finish_meta(&parent, name, &header, &xattrs, false, opts, &mut stats)?;
    }
    Ok(stats)
}

/// The directory of the previous entry, kept while nothing could have
/// changed what its path resolves to.
#[derive(Default)]
struct ParentCache {
    last: Option<(PathBuf, Rc<Dir>)>,
}

impl ParentCache {
    fn get(&mut self, root: &InRoot, rel: &Path) -> Result<Rc<Dir>> {
        if let Some((p, d)) = &self.last
            && p == rel
        {
            return Ok(d.clone());
        }
        let d = Rc::new(root.mkdir_all(rel)?);
        self.last = Some((rel.to_path_buf(), d.clone()));
        Ok(d)
    }

    fn clear(&mut self) {
        self.last = None;
    }
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
    parent: &Dir,
    name: &OsStr,
    h: &tar::Header,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    is_symlink: bool,
    opts: UnpackOptions,
    stats: &mut UnpackStats,
) -> Result<()> {
    if opts.privileged {
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        parent.chown(name, uid, gid)?;
    }
    for (key, value) in xattrs {
        if !opts.privileged && key.starts_with(b"trusted.") {
            stats.skipped_unprivileged += 1;
            continue;
        }
        parent.set_xattr(Some(name), key, value)?;
    }
    if !is_symlink {
        // After chown: chown clears setuid bits.
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        parent.chmod(name, mode)?;
    }
    parent.set_times(name, h.mtime().unwrap_or(0) as i64)
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

/// Joins `rel` onto `root`, resolving the symlinks met before its last
/// component inside `root` with the kernel's help ([`InRoot`]); the last
/// component is not followed. For callers that need a path (a mount
/// point), and check the last component themselves.
pub fn secure_join(root: &Path, rel: &Path) -> Result<PathBuf> {
    InRoot::open(root)?.join_nofollow(rel)
}
