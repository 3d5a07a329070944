//! The files of an image handed to `kiln load`, read as data only.
//!
//! An archive (a `docker save` tar or an OCI archive) is untrusted: its
//! members are copied into a private temp dir under kiln's own names and
//! looked up by their exact normalised name. A member name or a name in
//! `manifest.json` that is absolute or climbs with `..` is refused; a
//! symbolic or hard link member may only point at another member of the
//! archive, so nothing outside the archive is ever opened on the host (and
//! no error can tell whether a host path exists).
//!
//! An OCI layout directory is opened component by component with
//! `O_NOFOLLOW`, so a symbolic link inside it is refused rather than
//! followed, and only regular files are read (a FIFO or device would block
//! or leak). The standard library and the `tar` crate do not offer either
//! rule, hence this module.
//!
//! The temp dir (`.load-*` next to the image store's blobs) holds a `lock`
//! file locked for as long as the load runs; a later load removes dirs
//! whose lock nobody holds (left by a killed `kiln load`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::Result;

/// Hops through link members before a name is taken as a loop.
const MAX_LINK_HOPS: usize = 16;

/// Where the files come from.
pub enum Members {
    /// A layout directory given by the user.
    Dir(PathBuf),
    /// The members of an archive, extracted under kiln's own names.
    Archive(Extracted),
}

/// Archive members copied to a temp dir (removed on drop).
pub struct Extracted {
    /// What the archive is called in errors.
    archive: String,
    // Field order: the lock is released after the dir is removed.
    _dir: tempfile::TempDir,
    _lock: File,
    /// Normalised member name → its bytes on disk.
    files: HashMap<String, PathBuf>,
    /// Normalised link member name → the normalised member it points at.
    links: HashMap<String, String>,
}

/// `name` as kiln compares member names: `/`-separated, without `.` or
/// empty components. `None` when it is absolute, climbs with `..` or is
/// empty: such a name could only reach outside the archive.
pub fn clean_name(name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A symbolic link's target, resolved against the member's directory.
/// `None` when it is absolute or leaves the archive's root.
fn resolve_symlink(member: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = member.split('/').collect();
    parts.pop();
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Members {
    /// Extracts the members of the tar file `path` into a temp dir in `tmp_in`.
    pub fn extract(path: &Path, tmp_in: &Path) -> Result<Members> {
        let archive = path.display().to_string();
        remove_stale_dirs(tmp_in, STALE_AFTER);
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir_in(tmp_in)
            .context("creating a temp dir for loading")?;
        let lock = File::create(dir.path().join("lock")).context("creating the load's lock")?;
        lock.lock().context("locking the load's temp dir")?;
        let file = File::open(path).with_context(|| format!("cannot open {archive}"))?;
        let mut tar = tar::Archive::new(BufReader::new(file));
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        for (i, entry) in tar
            .entries()
            .with_context(|| format!("{archive} is not a tar archive"))?
            .enumerate()
        {
            let mut entry =
                entry.with_context(|| format!("{archive} is not a valid tar archive"))?;
            let raw = entry
                .path()
                .with_context(|| format!("{archive}: member {i} has an unreadable name"))?;
            let raw = raw
                .to_str()
                .with_context(|| format!("{archive}: member {raw:?} has a non-UTF-8 name"))?
                .to_string();
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind.is_pax_global_extensions() {
                continue;
            }
            let Some(name) = clean_name(&raw) else {
                bail!(
                    "{archive}: member {raw:?} is absolute or leaves the archive with '..': refused (kiln load reads archive members only)"
                );
            };
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .with_context(|| format!("{archive}: link member {raw:?}"))?
                    .with_context(|| format!("{archive}: link member {raw:?} has no target"))?;
                let target = target.to_str().with_context(|| {
                    format!("{archive}: link member {raw:?} has a non-UTF-8 target")
                })?;
                // A hard link names another member; a symbolic link is
                // relative to the link's directory.
                let resolved = if kind.is_hard_link() {
                    clean_name(target)
                } else {
                    resolve_symlink(&name, target)
                };
                let Some(resolved) = resolved else {
                    bail!(
                        "{archive}: member {raw:?} is a link to {target:?}, outside the archive: refused (kiln load reads archive members only)"
                    );
                };
                files.remove(&name);
                links.insert(name, resolved);
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                // Devices, FIFOs…: never an image file; not extracted.
                continue;
            }
            let dest = dir.path().join(format!("m{i}"));
            let mut out =
                File::create(&dest).with_context(|| format!("creating {}", dest.display()))?;
            io::copy(&mut entry, &mut out)
                .with_context(|| format!("{archive}: reading member {raw:?}"))?;
            links.remove(&name);
            files.insert(name, dest);
        }
        Ok(Members::Archive(Extracted {
            archive,
            _dir: dir,
            _lock: lock,
            files,
            links,
        }))
    }

    /// Is there a readable regular file `name`?
    pub fn has(&self, name: &str) -> bool {
        self.open(name).is_ok()
    }

    /// Opens the file `name` (already a clean name, e.g. `index.json` or
    /// `blobs/sha256/HEX`).
    pub fn open(&self, name: &str) -> Result<File> {
        let name = clean_name(name)
            .with_context(|| format!("{name:?} is absolute or leaves the image with '..'"))?;
        match self {
            Members::Dir(root) => open_beneath(root, &name),
            Members::Archive(x) => {
                let mut at = name.clone();
                for _ in 0..MAX_LINK_HOPS {
                    if let Some(p) = x.files.get(&at) {
                        return File::open(p).with_context(|| format!("opening {}", p.display()));
                    }
                    match x.links.get(&at) {
                        Some(next) => at = next.clone(),
                        None => bail!("{name:?} is not in the archive {}", x.archive),
                    }
                }
                bail!(
                    "{name:?} in the archive {} is a loop of links: refused",
                    x.archive
                )
            }
        }
    }

    /// Reads the whole file `name`.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut self.open(name)?, &mut buf)
            .with_context(|| format!("reading {name}"))?;
        Ok(buf)
    }

    /// What the source is called in errors.
    pub fn describe(&self) -> String {
        match self {
            Members::Dir(d) => d.display().to_string(),
            Members::Archive(x) => x.archive.clone(),
        }
    }
}

/// The prefix of the temp dirs archives are extracted into.
const TEMP_PREFIX: &str = ".load-";

/// A `.load-*` dir without a lock file (just created, or from an older
/// kiln) is a leftover only when it is this old.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes `.load-*` dirs in `dir` that no running load holds. Best effort.
fn remove_stale_dirs(dir: &Path, min_age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            || !e.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let path = e.path();
        let stale = match File::open(path.join("lock")) {
            // Unlocked: its load is gone (a load never reuses a dir).
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age),
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Opens `root/name` without following a symbolic link at any component
/// below `root`, and only if it is a regular file.
fn open_beneath(root: &Path, name: &str) -> Result<File> {
    let shown = || format!("{}/{name}", root.display());
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let mut at: OwnedFd = open(root, OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {}", root.display()))?;
    let parts: Vec<&str> = name.split('/').collect();
    let (last, dirs) = parts.split_last().expect("a clean name has a component");
    for d in dirs {
        at = openat(&at, *d, dir_flags, Mode::empty()).map_err(|e| refuse_link(e, shown()))?;
    }
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    let fd = openat(&at, *last, flags, Mode::empty()).map_err(|e| refuse_link(e, shown()))?;
    let st = fstat(&fd).with_context(shown)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        bail!(
            "{} is not a regular file: refused (kiln load reads layout files only)",
            shown()
        );
    }
    // Regular files ignore O_NONBLOCK: the file reads as usual.
    Ok(File::from(fd))
}

fn refuse_link(e: nix::Error, shown: String) -> anyhow::Error {
    match e {
        nix::Error::ELOOP | nix::Error::ENOTDIR => anyhow::anyhow!(
            "{shown}: a symbolic link (or not a directory) inside the layout: refused (kiln load does not follow links out of a layout)"
        ),
        nix::Error::ENOENT => anyhow::anyhow!("{shown} does not exist"),
        e => anyhow::Error::new(e).context(format!("opening {shown}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names() {
        assert_eq!(clean_name("./a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(
            clean_name("manifest.json").as_deref(),
            Some("manifest.json")
        );
        assert_eq!(clean_name("../x"), None);
        assert_eq!(clean_name("a/../../x"), None);
        assert_eq!(clean_name("a/../b"), None);
        assert_eq!(clean_name("/etc/passwd"), None);
        assert_eq!(clean_name("."), None);
        assert_eq!(clean_name(""), None);
    }

    #[test]
    fn symlink_targets_stay_inside() {
        assert_eq!(
            resolve_symlink("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(resolve_symlink("abc/layer.tar", "../../x"), None);
        assert_eq!(resolve_symlink("x.json", "/etc/shadow"), None);
        assert_eq!(resolve_symlink("x.json", ".."), None);
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, name, target).unwrap();
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn extract(bytes: &[u8]) -> Result<Members> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tar");
        std::fs::write(&p, bytes).unwrap();
        // Leak the dir: the members live in a temp dir inside it.
        let keep = dir.keep();
        Members::extract(&p, &keep)
    }

    #[test]
    fn links_resolve_only_to_members() {
        let m = extract(&tar_with(|b| {
            file(b, "a/layer.tar", b"layer");
            link(b, tar::EntryType::Symlink, "b/layer.tar", "../a/layer.tar");
            link(b, tar::EntryType::Link, "c.tar", "a/layer.tar");
        }))
        .unwrap();
        assert_eq!(m.read("b/layer.tar").unwrap(), b"layer");
        assert_eq!(m.read("c.tar").unwrap(), b"layer");
        let err = m.read("nope").unwrap_err().to_string();
        assert!(err.contains("\"nope\" is not in the archive"), "{err}");
    }

    #[test]
    fn links_out_of_the_archive_are_refused() {
        for (kind, target) in [
            (tar::EntryType::Symlink, "/etc/hostname"),
            (tar::EntryType::Symlink, "../../etc/hostname"),
            (tar::EntryType::Link, "/etc/hostname"),
        ] {
            let err = extract(&tar_with(|b| link(b, kind, "config.json", target)))
                .err()
                .expect("refused")
                .to_string();
            assert!(
                err.contains("member \"config.json\" is a link to") && err.contains("refused"),
                "{err}"
            );
        }
    }

    #[test]
    fn link_loops_are_refused() {
        let m = extract(&tar_with(|b| {
            link(b, tar::EntryType::Symlink, "a", "b");
            link(b, tar::EntryType::Symlink, "b", "a");
        }))
        .unwrap();
        assert!(m.read("a").unwrap_err().to_string().contains("loop"));
    }

    #[test]
    fn leftovers_of_killed_loads_are_removed_but_not_running_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("m0"), b"member").unwrap();
            p
        };
        // A killed load: lock file, nobody holds it.
        let killed = mk(".load-killed");
        File::create(killed.join("lock")).unwrap();
        // A running load holds its lock.
        let running = mk(".load-running");
        let held = File::create(running.join("lock")).unwrap();
        held.lock().unwrap();
        // No lock file yet: kept while young.
        mk(".load-young");
        mk("not-a-load");
        assert_eq!(remove_stale_dirs(dir.path(), STALE_AFTER), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".load-running", ".load-young", "not-a-load"]);
        assert_eq!(remove_stale_dirs(dir.path(), std::time::Duration::ZERO), 1);
        drop(held);
        assert_eq!(remove_stale_dirs(dir.path(), STALE_AFTER), 1);
    }

    #[test]
    fn layout_dirs_do_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        std::fs::write(&canary, b"secret").unwrap();
        let root = dir.path().join("layout");
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::write(root.join("index.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(&canary, root.join("blobs/x")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        let m = Members::Dir(root.clone());
        assert_eq!(m.read("index.json").unwrap(), b"{}");
        for name in ["blobs/x", "up/canary"] {
            let err = m.read(name).unwrap_err().to_string();
            assert!(err.contains("symbolic link"), "{name}: {err}");
        }
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let err = m.read("fifo").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
