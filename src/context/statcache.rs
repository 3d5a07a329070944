//! The context's stat cache: the content digest of each file, remembered
//! with the file's stat (size, mtime, ctime, inode, device), so a rebuild
//! hashes only the files whose stat changed (git's index does the same).
//!
//! Keys stay content digests: the cache only avoids re-reading a file it
//! can prove unchanged. The proof is the stat, plus git's "racy clean"
//! rule: a file whose mtime or ctime is not older than the moment its
//! digest was taken (less [`RACY_MARGIN`], for timestamp granularity and the
//! kernel's coarse clock) could have changed within the same timestamp
//! tick, so it is hashed again until it is old enough. The ctime cannot be
//! set from user space, so a rewrite that restores size and mtime
//! (`touch -d`) is still seen.
//!
//! One file per context directory, `cache_dir()/context/<sha256 of the
//! canonical path>.json`; a missing or unreadable cache is empty, and a
//! failure to write it only costs the next build some hashing.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::oci::digest::Digest;

/// Bump when the meaning of an entry changes.
const FORMAT: u32 = 1;

/// How much older than the hashing a file's timestamps must be.
pub const RACY_MARGIN: Duration = Duration::from_secs(1);

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileStat {
    pub fn of(md: &std::fs::Metadata) -> FileStat {
        FileStat {
            size: md.size(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
            ino: md.ino(),
            dev: md.dev(),
        }
    }
}

/// One remembered digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Known {
    pub stat: FileStat,
    pub digest: Digest,
    /// Wall clock (ns since the epoch) just before the file was read.
    pub hashed_ns: i128,
}

impl Known {
    /// Whether this digest is the content of a file that now has `stat`.
    pub fn vouches_for(&self, stat: &FileStat) -> bool {
        let margin = RACY_MARGIN.as_nanos() as i128;
        self.stat == *stat && stat.mtime_ns.max(stat.ctime_ns) < self.hashed_ns - margin
    }
}

/// Wall clock in ns since the epoch.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128
}

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    files: BTreeMap<String, Known>,
}

/// The cache file of the context at `root`.
pub fn default_path(root: &Path) -> Result<PathBuf> {
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let key = Digest::of(canon.as_os_str().as_encoded_bytes());
    Ok(crate::paths::cache_dir()?
        .join("context")
        .join(format!("{}.json", key.hex())))
}

/// Reads the cache at `path`; anything unreadable is an empty cache.
pub fn load(path: &Path) -> BTreeMap<String, Known> {
    // A build reads it: a use, for the cache GC (it is rewritten only when
    // a file was hashed).
    crate::paths::touch(path);
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
        .filter(|s| s.format == FORMAT)
        .map(|s| s.files)
        .unwrap_or_default()
}

/// Writes `files` to `path` atomically.
pub fn save(path: &Path, files: BTreeMap<String, Known>) -> Result<()> {
    use anyhow::Context as _;
    let dir = path.parent().context("stat cache path without a parent")?;
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(
        tmp.path(),
        serde_json::to_vec(&Stored {
            format: FORMAT,
            files,
        })?,
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mtime_s: i128, ctime_s: i128) -> FileStat {
        FileStat {
            size: 3,
            mtime_ns: mtime_s * 1_000_000_000,
            ctime_ns: ctime_s * 1_000_000_000,
            ino: 7,
            dev: 1,
        }
    }

    #[test]
    fn only_an_equal_and_old_enough_stat_is_vouched_for() {
        let s = stat(100, 100);
        let k = Known {
            stat: s,
            digest: Digest::of(b"one"),
            hashed_ns: 200 * 1_000_000_000,
        };
        assert!(k.vouches_for(&s));
        // Any field differs: hashed again.
        assert!(!k.vouches_for(&FileStat { size: 4, ..s }));
        assert!(!k.vouches_for(&FileStat { ino: 8, ..s }));
        assert!(!k.vouches_for(&stat(100, 101)));
        assert!(!k.vouches_for(&stat(101, 101)));
        // Racy: the file's timestamps are as new as the hashing (or within
        // the margin), so a same-tick rewrite could hide behind them.
        let racy = Known {
            hashed_ns: 100 * 1_000_000_000 + 500_000_000,
            ..k.clone()
        };
        assert!(!racy.vouches_for(&s));
        let same = Known {
            hashed_ns: 100 * 1_000_000_000,
            ..k
        };
        assert!(!same.vouches_for(&s));
    }

    #[test]
    fn round_trip_and_damage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c/x.json");
        assert!(load(&p).is_empty());
        let mut files = BTreeMap::new();
        files.insert(
            "a".to_string(),
            Known {
                stat: stat(1, 1),
                digest: Digest::of(b"a"),
                hashed_ns: 5,
            },
        );
        save(&p, files).unwrap();
        assert_eq!(load(&p)["a"].digest, Digest::of(b"a"));
        std::fs::write(&p, b"{").unwrap();
        assert!(load(&p).is_empty());
    }
}
