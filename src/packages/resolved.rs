//! Resolved package sets, kept like pulled base images.
//!
//! Resolving a request reads the suite's signed indexes (an `InRelease`
//! check per archive, then parsing the 56 MB trixie `Packages`): 1–2 s even
//! when nothing changed. Like a base image that is pulled once and reused
//! until `--pull`, a resolved set (a [`Lockfile`]) is stored under
//! `cache_root()/resolved/<key>.json`, keyed by everything that decides the
//! resolution except the archive's state: mirror, security mirror,
//! components, architecture, backports, suite, base set, Recommends and the
//! sorted requests. A build without `kiln.lock` reuses it without touching
//! the network or an index; `kiln build --pull`, `kiln image packages
//! --pull` and `kiln lock` resolve again and replace it.
//!
//! A cache of the parsed index (keyed by the index's sha256) was the other
//! way to make this fast; it was not chosen because the cases it helps are
//! the rare ones: a warm rebuild needs no index at all with this cache, and
//! a `--pull` normally downloads a new index anyway (a new hash, a miss).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::image::PackagesRequest;
use super::lock::Lockfile;
use crate::Result;
use crate::oci::digest::Digest;

/// Bump when the meaning of a stored set changes.
const FORMAT: u32 = 1;

/// A set older than this is named in the progress line (a hint to `--pull`).
pub const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Serialize, Deserialize)]
struct Stored {
    /// When the set was resolved (seconds since the epoch).
    resolved_at: u64,
    lock: Lockfile,
}

/// A set found in the cache.
#[derive(Debug, Clone)]
pub struct Reused {
    pub lock: Lockfile,
    /// How long ago it was resolved.
    pub age: Duration,
}

/// The cache file of `req`'s resolved set.
fn path(req: &PackagesRequest) -> Result<PathBuf> {
    let root = req.repo.cache_root()?;
    Ok(root.join("resolved").join(format!("{}.json", key(req)?)))
}

/// Everything that decides what a request resolves to, given the archive.
fn key(req: &PackagesRequest) -> Result<String> {
    let suite = match &req.suite {
        Some(s) => super::repo::canonical_suite(s)?.to_string(),
        None => String::new(),
    };
    let mut requests = req.packages.clone();
    requests.sort();
    let mut components = req.repo.components.clone();
    components.sort();
    let k = serde_json::json!({
        "format": FORMAT,
        "mirror": req.repo.mirror.trim_end_matches('/'),
        "security_mirror": req.repo.security_mirror,
        "components": components,
        "arch": req.repo.arch,
        "backports": req.repo.backports,
        "suite": suite,
        "base": req.base,
        "recommends": req.recommends,
        "requests": requests,
    });
    Ok(Digest::of(&serde_json::to_vec(&k)?).hex().to_string())
}

/// The stored set of `req`, if any. A missing or unreadable entry is a miss
/// (it is resolved again and rewritten), never an error.
pub fn get(req: &PackagesRequest) -> Result<Option<Reused>> {
    let p = path(req)?;
    let Ok(bytes) = std::fs::read(&p) else {
        return Ok(None);
    };
    let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else {
        return Ok(None);
    };
    // A reuse is a use, for the cache GC (least recently used first).
    crate::paths::touch(&p);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Ok(Some(Reused {
        lock: stored.lock,
        age: Duration::from_secs(now.saturating_sub(stored.resolved_at)),
    }))
}

/// Stores `lock` as `req`'s resolved set (atomically: a reader sees the
/// old set or the new one).
pub fn put(req: &PackagesRequest, lock: &Lockfile) -> Result<()> {
    use anyhow::Context as _;
    let p = path(req)?;
    let dir = p.parent().context("resolved set path without a parent")?;
    write_atomic(dir, &p, lock)
        .with_context(|| format!("storing the resolved package set in {}", p.display()))
}

fn write_atomic(dir: &Path, p: &Path, lock: &Lockfile) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let stored = Stored {
        resolved_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        lock: lock.clone(),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), serde_json::to_vec(&stored)?)?;
    tmp.persist(p).map_err(|e| e.error)?;
    Ok(())
}

/// `3 days`, `1 day`, `5 hours`: for progress lines.
pub fn age_text(age: Duration) -> String {
    let h = age.as_secs() / 3600;
    match h / 24 {
        0 if h == 1 => "1 hour".to_string(),
        0 => format!("{h} hours"),
        1 => "1 day".to_string(),
        d => format!("{d} days"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::repo::RepoConfig;
    use crate::packages::resolve::BaseVariant;

    fn req(cache: &Path, packages: &[&str]) -> PackagesRequest {
        PackagesRequest {
            repo: RepoConfig {
                cache: Some(cache.to_path_buf()),
                ..RepoConfig::default()
            },
            suite: Some("stable".into()),
            base: BaseVariant::Minimal,
            recommends: false,
            packages: packages.iter().map(|s| s.to_string()).collect(),
            pull: false,
        }
    }

    fn lock(name: &str) -> Lockfile {
        Lockfile {
            version: crate::packages::lock::LOCK_VERSION,
            suite: "trixie".into(),
            arch: "amd64".into(),
            release_date: "Sat, 01 Nov 2025 00:00:00 UTC".into(),
            base: BaseVariant::Minimal,
            recommends: false,
            requests: vec![name.into()],
            packages: vec![],
        }
    }

    #[test]
    fn a_stored_set_is_found_by_an_equal_request_only() {
        let d = tempfile::tempdir().unwrap();
        let a = req(d.path(), &["nodejs@20", "git"]);
        assert!(get(&a).unwrap().is_none());
        put(&a, &lock("nodejs@20")).unwrap();
        // Order of requests and the suite's alias do not matter.
        let mut same = req(d.path(), &["git", "nodejs@20"]);
        same.suite = Some("trixie".into());
        let got = get(&same).unwrap().expect("stored set");
        assert_eq!(got.lock, lock("nodejs@20"));
        assert!(got.age < Duration::from_secs(60));
        // Anything that changes the resolution is another set.
        assert!(
            get(&req(d.path(), &["nodejs@22", "git"]))
                .unwrap()
                .is_none()
        );
        let mut other_mirror = req(d.path(), &["nodejs@20", "git"]);
        other_mirror.repo.mirror =
            "https://snapshot.debian.org/archive/debian/20250801T000000Z".into();
        assert!(get(&other_mirror).unwrap().is_none());
        let mut recommends = req(d.path(), &["nodejs@20", "git"]);
        recommends.recommends = true;
        assert!(get(&recommends).unwrap().is_none());
    }

    #[test]
    fn a_damaged_entry_is_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let a = req(d.path(), &["python3"]);
        let p = path(&a).unwrap();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"{not json").unwrap();
        assert!(get(&a).unwrap().is_none());
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age_text(Duration::from_secs(3600)), "1 hour");
        assert_eq!(age_text(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(age_text(Duration::from_secs(24 * 3600 + 5)), "1 day");
        assert_eq!(age_text(Duration::from_secs(9 * 24 * 3600)), "9 days");
    }
}
