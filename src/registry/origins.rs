//! Where blobs came from: `registry → digest → repositories` that held it,
//! recorded on pull and push, consulted on push to try a cross-repository
//! mount instead of an upload (a base image pulled from `ghcr.io/acme/base`
//! is never re-uploaded to `ghcr.io/acme/app`).
//!
//! A hint cache, not a source of truth: a stale entry costs one refused
//! mount (the registry answers 202 and the upload proceeds). Kept as one
//! JSON file in the cache dir, replaced atomically; concurrent writers may
//! lose each other's additions, which only costs a future mount.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Result;
use crate::oci::Digest;

/// Repositories remembered per blob (most recent first).
const MAX_REPOS: usize = 4;

type Map = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// `$KILN_CACHE_DIR/registry-origins.json`.
pub fn default_path() -> Result<PathBuf> {
    Ok(crate::paths::cache_dir()?.join("registry-origins.json"))
}

fn load(path: &Path) -> Map {
    // A missing or damaged hint file is an empty one.
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records that `repository` on `registry` holds `digests`.
pub fn record(path: &Path, registry: &str, repository: &str, digests: &[Digest]) -> Result<()> {
    let mut map = load(path);
    let reg = map.entry(registry.to_string()).or_default();
    for d in digests {
        let repos = reg.entry(d.to_string()).or_default();
        repos.retain(|r| r != repository);
        repos.insert(0, repository.to_string());
        repos.truncate(MAX_REPOS);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(&serde_json::to_vec(&map)?)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Repositories of `registry` (other than `except`) known to hold each blob.
pub fn lookup(
    path: &Path,
    registry: &str,
    except: &str,
    digests: &[Digest],
) -> HashMap<Digest, Vec<String>> {
    let map = load(path);
    let Some(reg) = map.get(registry) else {
        return HashMap::new();
    };
    digests
        .iter()
        .filter_map(|d| {
            let repos: Vec<String> = reg
                .get(&d.to_string())?
                .iter()
                .filter(|r| *r != except)
                .cloned()
                .collect();
            (!repos.is_empty()).then(|| (d.clone(), repos))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_looks_up_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.json");
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        record(&p, "ghcr.io", "acme/base", &[a.clone(), b.clone()]).unwrap();
        record(&p, "ghcr.io", "acme/app", std::slice::from_ref(&a)).unwrap();
        record(&p, "quay.io", "x/y", std::slice::from_ref(&b)).unwrap();
        let found = lookup(&p, "ghcr.io", "acme/app", &[a.clone(), b.clone()]);
        assert_eq!(found[&a], vec!["acme/base".to_string()]);
        assert_eq!(found[&b], vec!["acme/base".to_string()]);
        let found = lookup(&p, "ghcr.io", "acme/new", std::slice::from_ref(&a));
        assert_eq!(
            found[&a],
            vec!["acme/app".to_string(), "acme/base".to_string()]
        );
        assert!(lookup(&p, "docker.io", "z", &[a]).is_empty());
        std::fs::write(&p, "garbage").unwrap();
        assert!(lookup(&p, "ghcr.io", "z", &[b]).is_empty());
    }
}
