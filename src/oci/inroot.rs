//! A directory tree that cannot be escaped: the one way kiln writes into,
//! deletes from or resolves paths in a tree whose contents it did not make
//! (an image's layers, an `ADD`ed archive, a build context).
//!
//! Paths are resolved by the kernel: [`pathrs`] (the library behind runc's
//! safe path resolution) walks them with `openat2(2)` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so a symlink met on the way —
//! absolute, relative, chained or looping — is followed *inside* the root
//! or refused, never out of it. What a string join cannot promise: the
//! answer is a directory file descriptor, not a path that the next syscall
//! would resolve again.
//!
//! The last component of a path is never followed: every operation on it
//! is an `*at` syscall relative to its parent's descriptor with
//! `AT_SYMLINK_NOFOLLOW` (or `O_NOFOLLOW`, or a type check before the two
//! calls that have no such flag, `fchmodat` and the xattr calls, which go
//! through the parent's descriptor in `/proc/self/fd`). So a layer entry
//! `esc` → `/etc` followed by `esc/passwd` writes `ROOT/etc/passwd`, and
//! `esc/.wh.passwd` deletes `ROOT/etc/passwd`, never the host's.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

use crate::Result;

/// A root directory; every path given to it is relative to it (a leading
/// `/` means the root too).
pub struct InRoot {
    root: pathrs::Root,
    host: PathBuf,
}

/// A directory inside an [`InRoot`], held by descriptor; `rel` names it
/// (root-relative) in errors.
pub struct Dir {
    fd: OwnedFd,
    rel: PathBuf,
}

fn errno_of(e: &pathrs::error::Error) -> Option<i32> {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(n) => n,
        _ => None,
    }
}

impl InRoot {
    /// Opens the existing directory `host` as a root.
    pub fn open(host: &Path) -> Result<InRoot> {
        let root =
            pathrs::Root::open(host).with_context(|| format!("opening {}", host.display()))?;
        Ok(InRoot {
            root,
            host: host.to_path_buf(),
        })
    }

    /// The root directory itself.
    pub fn root_dir(&self) -> Result<Dir> {
        let fd = self
            .root
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the root's descriptor")?;
        Ok(Dir {
            fd,
            rel: PathBuf::new(),
        })
    }

    /// The directory `rel`, made with its missing parents (mode 0755 before
    /// umask), symlinks on the way resolved inside the root. A component
    /// that is not a directory (or a dangling symlink) is an error.
    pub fn mkdir_all(&self, rel: &Path) -> Result<Dir> {
        if is_root(rel) {
            return self.root_dir();
        }
        let handle = self
            .root
            .mkdir_all(rel, &Permissions::from_mode(0o755))
            .with_context(|| {
                format!(
                    "creating directory /{} in {}",
                    rel.display(),
                    self.host.display()
                )
            })?;
        Ok(Dir {
            fd: handle.into(),
            rel: rel.to_path_buf(),
        })
    }

    /// The existing directory `rel` (symlinks resolved inside the root),
    /// or `None` when it is missing or not a directory.
    pub fn open_dir(&self, rel: &Path) -> Result<Option<Dir>> {
        if is_root(rel) {
            return self.root_dir().map(Some);
        }
        match self.root.resolve(rel) {
            Ok(h) => {
                let fd: OwnedFd = h.into();
                let st = nix::sys::stat::fstat(&fd)
                    .with_context(|| format!("inspecting /{}", rel.display()))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                    return Ok(None);
                }
                Ok(Some(Dir {
                    fd,
                    rel: rel.to_path_buf(),
                }))
            }
            Err(e) if matches!(errno_of(&e), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e)).with_context(|| {
                format!("resolving /{} in {}", rel.display(), self.host.display())
            }),
        }
    }

    /// The host path that `rel` resolves to inside the root, the last
    /// component followed too: for handing a path to something that only
    /// takes paths (a bind mount's source). The answer was inside the root
    /// when it was resolved; a tree that changes under kiln's feet is not
    /// a tree kiln reads. `None` when `rel` does not exist.
    pub fn real_path(&self, rel: &Path) -> Result<Option<PathBuf>> {
        let fd: OwnedFd = if is_root(rel) {
            self.root_dir()?.fd
        } else {
            match self.root.resolve(rel) {
                Ok(h) => h.into(),
                Err(e) if matches!(errno_of(&e), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    return Ok(None);
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)).with_context(|| {
                        format!("resolving /{} in {}", rel.display(), self.host.display())
                    });
                }
            }
        };
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .with_context(|| format!("reading where /{} resolved", rel.display()))?;
        let root = std::fs::canonicalize(&self.host)
            .with_context(|| format!("resolving {}", self.host.display()))?;
        match real.strip_prefix(&root) {
            Ok(inside) => Ok(Some(self.host.join(inside))),
            Err(_) => bail!(
                "/{} resolved outside {} (to {})",
                rel.display(),
                self.host.display(),
                real.display()
            ),
        }
    }

    /// The host path of `rel` with every symlink before its last
    /// component resolved inside the root, the last one not followed (the
    /// caller decides what a final symlink means). Components that do not
    /// exist yet are kept as they are: they are no symlinks.
    pub fn join_nofollow(&self, rel: &Path) -> Result<PathBuf> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        let Some(last) = rel.file_name() else {
            return Ok(self.host.clone());
        };
        let mut prefix = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut missing: Vec<OsString> = Vec::new();
        loop {
            if let Some(real) = self.real_path(&prefix)? {
                // The first missing component must really be missing, not
                // a symlink that resolves to nothing (the host would follow
                // it where the root does not).
                if let Some(first) = missing.last() {
                    let parent = self
                        .open_dir(&prefix)?
                        .with_context(|| format!("/{} is not a directory", prefix.display()))?;
                    if parent.lstat(first)?.is_some() {
                        bail!(
                            "/{} is a symbolic link to nothing inside {}",
                            prefix.join(first).display(),
                            self.host.display()
                        );
                    }
                }
                let mut out = real;
                out.extend(missing.iter().rev());
                out.push(last);
                return Ok(out);
            }
            match prefix.file_name() {
                Some(n) => {
                    missing.push(n.to_owned());
                    prefix.pop();
                }
                None => bail!("{} is not a directory", self.host.display()),
            }
        }
    }
}

fn is_root(rel: &Path) -> bool {
    rel.components().all(|c| {
        matches!(
            c,
            std::path::Component::RootDir | std::path::Component::CurDir
        )
    })
}

fn cname(name: &OsStr) -> Result<CString> {
    if name.is_empty() || name.as_bytes().contains(&b'/') || name == ".." || name == "." {
        bail!("{:?} is not a single file name", name);
    }
    CString::new(name.as_bytes()).with_context(|| format!("{name:?} contains a NUL byte"))
}

impl Dir {
    /// Root-relative path of `name` in this directory, for messages.
    fn label(&self, name: &OsStr) -> String {
        format!("/{}", self.rel.join(name).display())
    }

    /// `name`'s metadata, not following a symlink; `None` when missing.
    pub fn lstat(&self, name: &OsStr) -> Result<Option<FileStat>> {
        let c = cname(name)?;
        match fstatat(&self.fd, c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting {}", self.label(name))),
        }
    }

    /// Removes `name` whatever it is (a directory with its contents); a
    /// missing `name` is not an error. Never follows a symlink.
    pub fn remove(&self, name: &OsStr) -> Result<()> {
        let Some(st) = self.lstat(name)? else {
            return Ok(());
        };
        let c = cname(name)?;
        if is_dir(&st) {
            let child = self.child_dir(name)?;
            child.empty()?;
            unlinkat(&self.fd, c.as_c_str(), UnlinkatFlags::RemoveDir)
        } else {
            unlinkat(&self.fd, c.as_c_str(), UnlinkatFlags::NoRemoveDir)
        }
        .with_context(|| format!("removing {}", self.label(name)))
    }

    /// Removes everything in this directory.
    pub fn empty(&self) -> Result<()> {
        for name in self.list()? {
            self.remove(&name)?;
        }
        Ok(())
    }

    /// The names in this directory.
    pub fn list(&self) -> Result<Vec<OsString>> {
        let fd = openat(
            &self.fd,
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening /{}", self.rel.display()))?;
        let mut dir = nix::dir::Dir::from_fd(fd)
            .with_context(|| format!("reading /{}", self.rel.display()))?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.with_context(|| format!("reading /{}", self.rel.display()))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_owned());
            }
        }
        Ok(out)
    }

    /// The subdirectory `name`, not following a symlink; also made
    /// writable by its owner, so that it can be emptied without root.
    fn child_dir(&self, name: &OsStr) -> Result<Dir> {
        let c = cname(name)?;
        let fd = openat(
            &self.fd,
            c.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", self.label(name)))?;
        // Read-only directories cannot be emptied even by their owner.
        let _ = nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o700));
        Ok(Dir {
            fd,
            rel: self.rel.join(name),
        })
    }

    /// Makes the directory `name` with `mode`.
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> Result<()> {
        let c = cname(name)?;
        mkdirat(&self.fd, c.as_c_str(), Mode::from_bits_truncate(mode))
            .with_context(|| format!("creating {}", self.label(name)))
    }

    /// Creates the regular file `name` (which must not exist) for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> Result<File> {
        let c = cname(name)?;
        let fd = openat(
            &self.fd,
            c.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .with_context(|| format!("creating {}", self.label(name)))?;
        Ok(File::from(fd))
    }

    /// Makes the symlink `name` → `target` (stored as given: it is
    /// resolved, inside the root, only when something follows it).
    pub fn symlink(&self, name: &OsStr, target: &Path) -> Result<()> {
        let c = cname(name)?;
        symlinkat(target, &self.fd, c.as_c_str())
            .with_context(|| format!("creating symlink {}", self.label(name)))
    }

    /// Makes `name` a hard link to `target_name` in `target_dir` (a
    /// symlink is linked, not followed).
    pub fn link(&self, name: &OsStr, target_dir: &Dir, target_name: &OsStr) -> Result<()> {
        let c = cname(name)?;
        let t = cname(target_name)?;
        linkat(
            &target_dir.fd,
            t.as_c_str(),
            &self.fd,
            c.as_c_str(),
            AtFlags::empty(),
        )
        .with_context(|| {
            format!(
                "hard-linking {} to {}",
                self.label(name),
                target_dir.label(target_name)
            )
        })
    }

    /// Makes a device node or fifo.
    pub fn mknod(&self, name: &OsStr, kind: SFlag, dev: libc::dev_t) -> Result<()> {
        let c = cname(name)?;
        mknodat(
            &self.fd,
            c.as_c_str(),
            kind,
            Mode::from_bits_truncate(0o600),
            dev,
        )
        .with_context(|| format!("mknod {}", self.label(name)))
    }

    /// Sets `name`'s owner (not following a symlink).
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> Result<()> {
        let c = cname(name)?;
        fchownat(
            &self.fd,
            c.as_c_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("chown {}", self.label(name)))
    }

    /// Sets `name`'s mode; a symlink (whose mode is meaningless, and which
    /// `fchmodat` would follow) is left alone.
    pub fn chmod(&self, name: &OsStr, mode: u32) -> Result<()> {
        match self.lstat(name)? {
            Some(st) if !is_symlink(&st) => {}
            _ => return Ok(()),
        }
        let c = cname(name)?;
        fchmodat(
            &self.fd,
            c.as_c_str(),
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .with_context(|| format!("chmod {}", self.label(name)))
    }

    /// Sets `name`'s atime and mtime to `secs` (not following a symlink).
    pub fn set_times(&self, name: &OsStr, secs: i64) -> Result<()> {
        let c = cname(name)?;
        let t = TimeSpec::new(secs as libc::time_t, 0);
        utimensat(
            &self.fd,
            c.as_c_str(),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .with_context(|| format!("setting the mtime of {}", self.label(name)))
    }

    /// Sets an extended attribute on `name`, or on this directory itself
    /// when `name` is `None`, not following a symlink. The path goes
    /// through this directory's descriptor (there is no `lsetxattrat`
    /// before Linux 6.13), so only `name` is looked up, without following.
    pub fn set_xattr(&self, name: Option<&OsStr>, key: &[u8], value: &[u8]) -> Result<()> {
        let mut p = format!("/proc/self/fd/{}", self.fd.as_raw_fd()).into_bytes();
        if let Some(n) = name {
            cname(n)?;
            p.push(b'/');
            p.extend_from_slice(n.as_bytes());
        }
        let path = CString::new(p)?;
        let k = CString::new(key)?;
        // lsetxattr: a final symlink is not followed; the magic link of
        // the directory itself (name = None) is a jump, not a symlink walk.
        let f = if name.is_some() {
            libc::lsetxattr
        } else {
            libc::setxattr
        };
        // SAFETY: valid C strings and a value buffer of the given length.
        let rc = unsafe {
            f(
                path.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let what = match name {
                Some(n) => self.label(n),
                None => format!("/{}", self.rel.display()),
            };
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("setting xattr {} on {what}", String::from_utf8_lossy(key))
            });
        }
        Ok(())
    }
}

/// Whether a stat is a directory's.
pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A root and, beside it, a canary the root must never reach.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let canary = t.path().join("canary");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&canary).unwrap();
        fs::write(canary.join("victim"), b"host").unwrap();
        (t, root, canary)
    }

    #[test]
    fn symlinked_parents_resolve_inside_the_root() {
        let (_t, root, canary) = setup();
        symlink(&canary, root.join("abs")).unwrap();
        symlink(
            "../../../../../../../..".to_string() + canary.to_str().unwrap(),
            root.join("rel"),
        )
        .unwrap();
        let r = InRoot::open(&root).unwrap();
        // Dangling inside the root: refused, not followed on the host.
        for link in ["abs", "rel"] {
            assert!(r.mkdir_all(Path::new(link)).is_err());
            assert!(r.join_nofollow(&Path::new(link).join("victim")).is_err());
        }
        // With the in-root target present, writes land there.
        let inside = root.join(canary.strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        fs::write(inside.join("victim"), b"image").unwrap();
        for link in ["abs", "rel"] {
            let d = r.mkdir_all(Path::new(link)).unwrap();
            d.create_file(OsStr::new(&format!("new-{link}")), 0o644)
                .unwrap();
            d.remove(OsStr::new("victim")).unwrap();
        }
        assert_eq!(fs::read(canary.join("victim")).unwrap(), b"host");
        assert_eq!(fs::read_dir(&canary).unwrap().count(), 1);
        assert!(inside.join("new-abs").is_file() && inside.join("new-rel").is_file());
        assert!(!inside.join("victim").exists());
    }

    #[test]
    fn the_last_component_is_never_followed() {
        let (_t, root, canary) = setup();
        symlink(canary.join("victim"), root.join("v")).unwrap();
        let r = InRoot::open(&root).unwrap();
        let d = r.root_dir().unwrap();
        d.chmod(OsStr::new("v"), 0o777).unwrap();
        d.set_times(OsStr::new("v"), 0).unwrap();
        assert!(d.create_file(OsStr::new("v"), 0o644).is_err());
        d.remove(OsStr::new("v")).unwrap();
        let m = fs::metadata(canary.join("victim")).unwrap();
        assert_ne!(m.permissions().mode() & 0o777, 0o777);
        assert_ne!(m.mtime_secs(), 0);
        assert_eq!(fs::read(canary.join("victim")).unwrap(), b"host");
    }

    trait Mtime {
        fn mtime_secs(&self) -> i64;
    }
    impl Mtime for fs::Metadata {
        fn mtime_secs(&self) -> i64 {
            use std::os::unix::fs::MetadataExt;
            self.mtime()
        }
    }

    #[test]
    fn real_path_stays_inside() {
        let (_t, root, canary) = setup();
        symlink(&canary, root.join("abs")).unwrap();
        let r = InRoot::open(&root).unwrap();
        // Resolves to ROOT/<canary path>, which does not exist.
        assert_eq!(r.real_path(Path::new("abs")).unwrap(), None);
        assert!(r.join_nofollow(Path::new("abs/victim")).is_err());
        fs::create_dir_all(root.join(canary.strip_prefix("/").unwrap())).unwrap();
        assert_eq!(
            r.join_nofollow(Path::new("abs/victim")).unwrap(),
            root.join(canary.strip_prefix("/").unwrap()).join("victim")
        );
        fs::create_dir(root.join("d")).unwrap();
        symlink("/d", root.join("to-d")).unwrap();
        assert_eq!(
            r.real_path(Path::new("to-d")).unwrap(),
            Some(root.join("d"))
        );
        assert_eq!(
            r.join_nofollow(Path::new("to-d/x/y")).unwrap(),
            root.join("d/x/y")
        );
    }

    #[test]
    fn names_with_slashes_or_dots_are_refused() {
        let (_t, root, _canary) = setup();
        let d = InRoot::open(&root).unwrap().root_dir().unwrap();
        for bad in ["a/b", "..", ".", ""] {
            assert!(d.create_file(OsStr::new(bad), 0o644).is_err(), "{bad}");
        }
    }
}
