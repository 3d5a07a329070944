//! The content-addressed blob store.
//!
//! ```text
//! ROOT/
//!   blobs/sha256/<hex>   immutable blobs (mode 0444), named by their digest
//!   ingest/              blobs being written (temp names; never trusted)
//!   lock                 shared by users of the store, exclusive for prune
//! ```
//!
//! Crash safety: a blob is written to `ingest/`, fsynced, its digest checked,
//! then renamed into `blobs/` and the directory fsynced. A kill at any moment
//! leaves at worst a temp file in `ingest/` (removed by `prune`), never a
//! partial file under a real digest. The same layout is the `blobs/` half of
//! an OCI image layout, so [`super::layout::Layout`] reuses this type.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::digest::{Digest, HashingReader, HashingWriter};
use crate::Result;

/// A blob store rooted at a directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Held (shared) for the life of the store so `prune` cannot delete a
    /// blob another process has just written but not yet referenced.
    _lock: Option<File>,
    exclusive: bool,
}

/// A blob's digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    pub bytes: u64,
    /// Blobs whose content does not match their name.
    pub corrupt: Vec<PathBuf>,
    /// Files in `blobs/sha256` that are not named like a digest.
    pub stray: Vec<PathBuf>,
    /// Leftover temp files in `ingest/` (harmless; removed by prune).
    pub temp_files: usize,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.stray.is_empty()
    }
}

/// What `prune` removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed: usize,
    pub bytes: u64,
    pub temp_files: usize,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, sharing it with other
    /// processes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        Store::open_with(root.into(), false)
    }

    /// Opens the store for exclusive use (pruning); waits for other kiln
    /// processes using it to finish.
    pub fn open_exclusive(root: impl Into<PathBuf>) -> Result<Store> {
        Store::open_with(root.into(), true)
    }

    /// [`Store::open_exclusive`] without waiting: `None` while other
    /// processes use the store (see [`Store::lock_holders`]).
    pub fn try_open_exclusive(root: impl Into<PathBuf>) -> Result<Option<Store>> {
        let root = root.into();
        let lock = Store::lock_file(&root)?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(Store {
                root,
                _lock: Some(lock),
                exclusive: true,
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking the blob store {}", root.display()))
            }
        }
    }

    /// The processes holding the store's lock (from `/proc/locks`; empty
    /// where that is not readable).
    pub fn lock_holders(root: &Path) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = fs::metadata(root.join("lock")) else {
            return Vec::new();
        };
        let dev = format!(
            "{:02x}:{:02x}:{}",
            libc::major(md.dev()),
            libc::minor(md.dev()),
            md.ino()
        );
        let me = std::process::id();
        let mut pids: Vec<u32> = fs::read_to_string("/proc/locks")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                // `1: FLOCK  ADVISORY  READ  1234 fd:01:5678 0 EOF`; waiters
                // have a `->` field and are skipped.
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6 && f[1] == "FLOCK" && f[5] == dev)
                    .then(|| f[4].parse().ok())
                    .flatten()
            })
            .filter(|p| *p != me)
            .collect();
        pids.sort();
        pids.dedup();
        pids
    }

    fn lock_file(root: &Path) -> Result<File> {
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir)
                .with_context(|| format!("creating the blob store directory {}", dir.display()))?;
        }
        let lock_path = root.join("lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening the store lock {}", lock_path.display()))
    }

    fn open_with(root: PathBuf, exclusive: bool) -> Result<Store> {
        let lock = Store::lock_file(&root)?;
        let locked = if exclusive {
            lock.lock()
        } else {
            lock.lock_shared()
        };
        locked.with_context(|| format!("locking the blob store {}", root.display()))?;
        Ok(Store {
            root,
            _lock: Some(lock),
            exclusive,
        })
    }

    /// A read-only view of an existing store or layout that is not kiln's
    /// (e.g. an OCI layout given to `kiln load`): creates nothing, takes no lock.
    pub fn read_only(root: impl Into<PathBuf>) -> Store {
        Store {
            root: root.into(),
            _lock: None,
            exclusive: false,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Records that a build used the blob (its mtime, which the cache GC
    /// reads as its last use).
    pub fn touch(&self, digest: &Digest) {
        crate::paths::touch(&self.blob_path(digest));
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        // Not following a symlink: in a layout kiln did not make, a link
        // named like a blob is not that blob.
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        Ok(fs::metadata(&p)
            .with_context(|| format!("blob {digest} is not in the store"))?
            .len())
    }

    /// Opens a blob for reading, without verifying it.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest))
            .with_context(|| format!("blob {digest} is not in the store {}", self.root.display()))
    }

    /// Reads a whole blob, verifying its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(digest)?.read_to_end(&mut buf)?;
        let actual = Digest::of(&buf);
        if &actual != digest {
            bail!(
                "blob {digest} in {} is corrupt (its content hashes to {actual}): run `kiln cache verify --fix`",
                self.root.display()
            );
        }
        Ok(buf)
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter<'_>> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.root.join("ingest"))
            .with_context(|| format!("creating a temp file in {}", self.root.display()))?;
        let file = tmp.reopen()?;
        Ok(BlobWriter {
            store: self,
            tmp,
            out: HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobInfo> {
        let digest = Digest::of(bytes);
        if self.contains(&digest) {
            return Ok(BlobInfo {
                digest,
                size: bytes.len() as u64,
            });
        }
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.commit()
    }

    /// Copies a blob from a reader, refusing it unless it hashes to `expected`.
    pub fn put_verified(&self, expected: &Digest, mut from: impl Read) -> Result<BlobInfo> {
        let mut w = self.writer()?;
        io::copy(&mut from, &mut w).with_context(|| format!("reading blob {expected}"))?;
        w.commit_expecting(expected)
    }

    /// Makes a blob of another store available here: a hard link when both
    /// are on one filesystem (blobs are immutable), a verified copy otherwise.
    pub fn import_from(&self, other: &Store, digest: &Digest) -> Result<()> {
        if self.contains(digest) {
            return Ok(());
        }
        let src = other.blob_path(digest);
        let dst = self.blob_path(digest);
        match fs::hard_link(&src, &dst) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => self
                .put_verified(digest, other.open_blob(digest)?)
                .map(|_| ()),
        }
    }

    /// Every blob digest in the store.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-hashes every blob. With `fix`, removes corrupt and stray files.
    pub fn verify(&self, fix: bool) -> Result<VerifyReport> {
        let dir = self.root.join("blobs/sha256");
        let mut report = VerifyReport::default();
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            match name.to_str().and_then(|n| Digest::from_hex(n).ok()) {
                Some(d) => files.push((d, entry.path())),
                None => report.stray.push(entry.path()),
            }
        }
        report.temp_files = fs::read_dir(self.root.join("ingest"))?.count();
        // Hashing is CPU-bound: spread it over the cores.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = files.len().div_ceil(workers).max(1);
        let results: Vec<Result<(PathBuf, bool, u64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(digest, path)| {
                                let f = File::open(path)
                                    .with_context(|| format!("opening {}", path.display()))?;
                                let mut r = HashingReader::new(f);
                                io::copy(&mut r, &mut io::sink())
                                    .with_context(|| format!("reading {}", path.display()))?;
                                let (actual, size) = r.finish();
                                Ok((path.clone(), &actual == digest, size))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("verify worker panicked"))
                .collect()
        });
        for r in results {
            let (path, ok, size) = r?;
            report.checked += 1;
            report.bytes += size;
            if !ok {
                report.corrupt.push(path);
            }
        }
        if fix {
            for p in report.corrupt.iter().chain(&report.stray) {
                fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(report)
    }

    /// Removes every blob not in `keep` that is older than `grace` (a blob
    /// another process has just written may not be referenced yet). Leftover
    /// temp files are removed only when the store is open exclusively.
    pub fn prune(
        &self,
        keep: &BTreeSet<Digest>,
        grace: std::time::Duration,
    ) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        if self.exclusive {
            for entry in fs::read_dir(self.root.join("ingest"))? {
                fs::remove_file(entry?.path())?;
                report.temp_files += 1;
            }
        }
        let now = std::time::SystemTime::now();
        for digest in self.list()? {
            if keep.contains(&digest) {
                continue;
            }
            let p = self.blob_path(&digest);
            let age = fs::symlink_metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            if age < grace {
                continue;
            }
            report.bytes += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            report.removed += 1;
        }
        Ok(report)
    }
}

/// A blob being written. Nothing is visible under a digest until
/// [`BlobWriter::commit`]; dropping the writer discards the temp file.
pub struct BlobWriter<'a> {
    store: &'a Store,
    tmp: tempfile::NamedTempFile,
    out: HashingWriter<BufWriter<File>>,
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out
            .get_ref()
            .get_ref()
            .metadata()
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Seals the blob under its digest.
    pub fn commit(self) -> Result<BlobInfo> {
        self.seal(None)
    }

    /// Seals the blob only if it hashes to `expected`; otherwise discards it.
    pub fn commit_expecting(self, expected: &Digest) -> Result<BlobInfo> {
        self.seal(Some(expected))
    }

    fn seal(self, expected: Option<&Digest>) -> Result<BlobInfo> {
        let BlobWriter { store, tmp, out } = self;
        let (digest, size, buf) = out.finish();
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        if let Some(expected) = expected
            && expected != &digest
        {
            // `tmp` is dropped here, deleting the bytes.
            bail!(
                "content does not match its digest: expected {expected}, got {digest} ({size} bytes)"
            );
        }
        let dst = store.blob_path(&digest);
        if dst.is_file() {
            return Ok(BlobInfo { digest, size });
        }
        file.sync_all()?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o444))?;
        tmp.persist(&dst)
            .with_context(|| format!("storing blob {digest}"))?;
        // Make the rename durable before anyone relies on the blob.
        File::open(dst.parent().expect("blob path has a parent"))?.sync_all()?;
        Ok(BlobInfo { digest, size })
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let info = store.put(b"hello").unwrap();
        assert_eq!(info.size, 5);
        assert_eq!(store.read(&info.digest).unwrap(), b"hello");
        let report = store.verify(false).unwrap();
        assert_eq!(report.checked, 1);
        assert!(report.is_ok());
    }

    #[test]
    fn wrong_digest_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let claimed = Digest::of(b"something else");
        let err = store.put_verified(&claimed, &b"hello"[..]).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(!store.contains(&claimed));
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn verify_finds_and_fixes_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let info = store.put(b"hello").unwrap();
        let p = store.blob_path(&info.digest);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"hellO").unwrap();
        assert!(store.read(&info.digest).is_err());
        let report = store.verify(true).unwrap();
        assert_eq!(report.corrupt.len(), 1);
        assert!(!store.contains(&info.digest));
        assert!(store.verify(false).unwrap().is_ok());
    }

    #[test]
    fn prune_keeps_only_roots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.put(b"a").unwrap().digest;
        let b = store.put(b"b").unwrap().digest;
        let report = store
            .prune(&BTreeSet::from([a.clone()]), std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(report.removed, 1);
        assert!(store.contains(&a) && !store.contains(&b));
    }
}
