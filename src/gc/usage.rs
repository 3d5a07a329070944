//! What the cache dir holds: every entry GC can remove, with its size on
//! disk (blocks, as `du` counts them) and when a build last used it.
//!
//! Cheap by construction: one `stat` per top-level entry. The two kinds
//! that are trees are not walked every time: a snapshot never changes once
//! made, so its size is measured once and kept in `gc/sizes.json`; a cache
//! mount is measured again only when a step used it since (its dir's mtime,
//! set on every use, is newer than the measurement).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What an entry is; decides how it is removed and where `du` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A step-cache record (`steps/<key>`).
    Step,
    /// A blob of the store (layer, config, manifest, .deb, download) and,
    /// for a layer, its snapshot: they go together.
    Blob,
    /// A snapshot whose blob is not in the store (nothing can use it).
    Snapshot,
    /// A `RUN --mount=type=cache` dir (`cache-mounts/<id>`).
    CacheMount,
    /// A downloaded Debian index or other re-fetchable package data.
    Packages,
    /// A record of composed package layers (`packages/layers/`).
    PackageRecord,
    /// A resolved package set (`packages/resolved/`): kept like a pulled
    /// base image; only `--all` removes it.
    Resolved,
    /// Archive metadata kiln needs to check the next download
    /// (`packages/inrelease`, `packages/keyrings`): only `--all`.
    ArchiveMeta,
    /// A context stat cache (`context/`).
    Context,
    /// Leftovers of interrupted writes and runs.
    Temp,
}

impl Kind {
    /// The heading `du` counts it under.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Step => "steps",
            Kind::Blob => "store",
            Kind::Snapshot => "snapshots",
            Kind::CacheMount => "cache mounts",
            Kind::Packages | Kind::PackageRecord | Kind::Resolved | Kind::ArchiveMeta => "packages",
            Kind::Context => "context",
            Kind::Temp => "temp",
        }
    }

    /// Whether only `--all` removes it.
    pub fn kept_without_all(self) -> bool {
        matches!(self, Kind::Resolved | Kind::ArchiveMeta)
    }
}

/// One removable thing.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub kind: Kind,
    /// Digest hex, cache-mount id, or path relative to the cache dir.
    pub name: String,
    /// The main path (the blob file for a blob).
    pub path: PathBuf,
    /// Bytes on disk, snapshot included.
    pub bytes: u64,
    /// Of `bytes`, the snapshot's (blobs and orphan snapshots).
    pub snapshot_bytes: u64,
    pub last_used: SystemTime,
    /// A blob also linked from elsewhere (the image store): removing it
    /// from the cache frees only its snapshot.
    pub shared: bool,
}

/// The cache dir, measured.
#[derive(Debug, Default)]
pub struct Usage {
    pub entries: Vec<CacheEntry>,
    /// Bytes of what is not an entry (the dirs themselves, locks, GC state,
    /// files kiln does not remove).
    pub fixed: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.fixed + self.entries.iter().map(|e| e.bytes).sum::<u64>()
    }
}

/// Measured sizes of the trees, `gc/sizes.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Sizes {
    /// Snapshot (blob hex) → bytes.
    #[serde(default)]
    pub snapshots: BTreeMap<String, u64>,
    /// Cache mount id → (bytes, measured at, ns since the epoch).
    #[serde(default)]
    pub cache_mounts: BTreeMap<String, (u64, i128)>,
}

impl Sizes {
    pub fn load(cache: &Path) -> Sizes {
        fs::read(sizes_path(cache))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves the sizes (best effort: a lost update costs a re-measure).
    pub fn save(&self, cache: &Path) {
        let p = sizes_path(cache);
        if let Some(dir) = p.parent()
            && crate::paths::private_dir(dir).is_ok()
            && let Ok(bytes) = serde_json::to_vec(self)
        {
            let _ = crate::oci::layout::write_cache_record(&p, &bytes);
        }
    }
}

fn sizes_path(cache: &Path) -> PathBuf {
    cache.join("gc").join("sizes.json")
}

/// Whether a file name is a sha256 hex digest.
pub fn is_hex_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Temp names kiln's writers use (`tempfile`'s default, `.tmp-*` of
/// atomic writes and snapshot staging).
fn is_temp_name(name: &str) -> bool {
    name.starts_with(".tmp")
}

fn ns(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn disk(md: &fs::Metadata) -> u64 {
    md.blocks() * 512
}

/// Bytes on disk of a tree, hard links counted once (as `du`). Entries
/// that vanish or cannot be read count nothing.
pub fn tree_bytes(root: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(root) else {
        return 0;
    };
    let mut total = disk(&md);
    if !md.is_dir() {
        return total;
    }
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.nlink() > 1 && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            total += disk(&md);
        }
    }
    total
}

fn mtime(md: &fs::Metadata) -> SystemTime {
    md.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

fn list(dir: &Path) -> Vec<(String, PathBuf, fs::Metadata)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), e.path(), md))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn dir_bytes(p: &Path) -> u64 {
    fs::symlink_metadata(p).map(|m| disk(&m)).unwrap_or(0)
}

/// Whether a run dir's owner (the pid in its `owner` file, see
/// `sandbox::run`) is alive: a `kiln run` of an older kiln, which did not
/// take the cache lock.
fn run_is_live(dir: &Path) -> bool {
    fs::read_to_string(dir.join("owner"))
        .ok()
        .and_then(|o| o.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
}

/// How old a temp file in a dir no lock protects must be before it counts
/// as a leftover (`kiln lock` writes `packages/` without the cache lock).
const UNLOCKED_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Measures the cache dir at `cache`, updating `sizes` with the trees it
/// had to walk.
pub fn measure(cache: &Path, sizes: &mut Sizes) -> Usage {
    let mut u = Usage::default();
    let now = SystemTime::now();
    let entry = |u: &mut Usage, kind, name: String, path: PathBuf, bytes, last_used| {
        u.entries.push(CacheEntry {
            kind,
            name,
            path,
            bytes,
            snapshot_bytes: 0,
            last_used,
            shared: false,
        })
    };
    u.fixed += dir_bytes(cache);

    // The store: blobs, and leftovers of interrupted writes.
    let store = cache.join("store");
    for p in [
        store.clone(),
        store.join("blobs"),
        store.join("blobs/sha256"),
        store.join("ingest"),
    ] {
        u.fixed += dir_bytes(&p);
    }
    for (_, _, md) in list(&store) {
        if !md.is_dir() {
            u.fixed += disk(&md);
        }
    }
    let mut blob_index: BTreeMap<String, usize> = BTreeMap::new();
    for (name, path, md) in list(&store.join("blobs/sha256")) {
        if !is_hex_digest(&name) {
            u.fixed += disk(&md);
            continue;
        }
        blob_index.insert(name.clone(), u.entries.len());
        u.entries.push(CacheEntry {
            kind: Kind::Blob,
            name,
            path,
            bytes: disk(&md),
            snapshot_bytes: 0,
            last_used: mtime(&md),
            shared: md.nlink() > 1,
        });
    }
    for (name, path, md) in list(&store.join("ingest")) {
        entry(
            &mut u,
            Kind::Temp,
            format!("store/ingest/{name}"),
            path,
            disk(&md),
            mtime(&md),
        );
    }

    // Snapshots: attached to their blob; without one, orphans.
    let snaps = cache.join("snapshots");
    u.fixed += dir_bytes(&snaps);
    let mut live = BTreeMap::new();
    for (name, path, md) in list(&snaps) {
        if crate::sandbox::unsynced::is_own_file(&name) {
            // The crash-safety record (and its lock): never collected.
            u.fixed += disk(&md);
            continue;
        }
        if is_hex_digest(&name) && md.is_dir() {
            let bytes = *sizes
                .snapshots
                .entry(name.clone())
                .or_insert_with(|| tree_bytes(&path));
            live.insert(name.clone(), bytes);
            match blob_index.get(&name) {
                Some(&i) => {
                    u.entries[i].bytes += bytes;
                    u.entries[i].snapshot_bytes = bytes;
                }
                None => u.entries.push(CacheEntry {
                    kind: Kind::Snapshot,
                    name,
                    path,
                    bytes,
                    snapshot_bytes: bytes,
                    last_used: mtime(&md),
                    shared: false,
                }),
            }
        } else {
            let bytes = tree_bytes(&path);
            entry(
                &mut u,
                Kind::Temp,
                format!("snapshots/{name}"),
                path,
                bytes,
                mtime(&md),
            );
        }
    }
    sizes.snapshots = live;

    // Step records.
    let steps = cache.join("steps");
    u.fixed += dir_bytes(&steps);
    for (name, path, md) in list(&steps) {
        let kind = if is_temp_name(&name) {
            Kind::Temp
        } else {
            Kind::Step
        };
        entry(&mut u, kind, name, path, disk(&md), mtime(&md));
    }

    // Cache mounts: `<id>` dirs and their `<id>.lock` files.
    let mounts = cache.join("cache-mounts");
    u.fixed += dir_bytes(&mounts);
    let listed = list(&mounts);
    let dirs: HashSet<&str> = listed
        .iter()
        .filter(|(_, _, md)| md.is_dir())
        .map(|(n, _, _)| n.as_str())
        .collect();
    let mut measured = BTreeMap::new();
    for (name, path, md) in &listed {
        if md.is_dir() && !is_temp_name(name) {
            let used = mtime(md);
            let bytes = match sizes.cache_mounts.get(name) {
                Some(&(b, at)) if at > ns(used) => b,
                _ => tree_bytes(path),
            };
            measured.insert(name.clone(), (bytes, ns(now)));
            let lock = mounts.join(format!("{name}.lock"));
            let bytes = bytes + fs::symlink_metadata(&lock).map(|m| disk(&m)).unwrap_or(0);
            entry(
                &mut u,
                Kind::CacheMount,
                name.clone(),
                path.clone(),
                bytes,
                used,
            );
        } else if let Some(id) = name.strip_suffix(".lock")
            && dirs.contains(id)
        {
            // Counted with its dir.
        } else {
            entry(
                &mut u,
                Kind::Temp,
                format!("cache-mounts/{name}"),
                path.clone(),
                disk(md),
                mtime(md),
            );
        }
    }
    sizes.cache_mounts = measured;

    // Debian package data.
    let packages = cache.join("packages");
    u.fixed += dir_bytes(&packages);
    for (sub, path, md) in list(&packages) {
        if !md.is_dir() {
            u.fixed += disk(&md);
            continue;
        }
        u.fixed += disk(&md);
        let kind = match sub.as_str() {
            "resolved" => Kind::Resolved,
            "layers" => Kind::PackageRecord,
            "inrelease" | "keyrings" => Kind::ArchiveMeta,
            _ => Kind::Packages,
        };
        for (name, p, md) in list(&path) {
            let old_temp = is_temp_name(&name)
                && now.duration_since(mtime(&md)).unwrap_or_default() > UNLOCKED_TEMP_AGE;
            let k = if old_temp { Kind::Temp } else { kind };
            let bytes = if md.is_dir() {
                tree_bytes(&p)
            } else {
                disk(&md)
            };
            entry(
                &mut u,
                k,
                format!("packages/{sub}/{name}"),
                p,
                bytes,
                mtime(&md),
            );
        }
    }

    // Context stat caches.
    let context = cache.join("context");
    u.fixed += dir_bytes(&context);
    for (name, path, md) in list(&context) {
        let kind = if is_temp_name(&name) {
            Kind::Temp
        } else {
            Kind::Context
        };
        entry(
            &mut u,
            kind,
            format!("context/{name}"),
            path,
            disk(&md),
            mtime(&md),
        );
    }

    // Run dirs and mount sources: in use while a build runs (GC removes
    // them only with the cache to itself), else left by a killed kiln.
    for sub in ["sandbox", "mounts"] {
        let dir = cache.join(sub);
        u.fixed += dir_bytes(&dir);
        for (name, path, md) in list(&dir) {
            let bytes = tree_bytes(&path);
            if sub == "sandbox" && run_is_live(&path) {
                u.fixed += bytes;
                continue;
            }
            entry(
                &mut u,
                Kind::Temp,
                format!("{sub}/{name}"),
                path,
                bytes,
                mtime(&md),
            );
        }
    }

    // GC's own state and its trash (trees being deleted).
    let gc = cache.join("gc");
    for (name, path, md) in list(&gc) {
        if name == "trash" {
            u.fixed += disk(&md);
            for (n, p, md) in list(&path) {
                let bytes = tree_bytes(&p);
                entry(
                    &mut u,
                    Kind::Temp,
                    format!("gc/trash/{n}"),
                    p,
                    bytes,
                    mtime(&md),
                );
            }
        } else {
            u.fixed += tree_bytes(&path);
        }
    }
    u.fixed += dir_bytes(&gc);

    // Anything else (registry-origins.json, a newer kiln's dirs): counted,
    // never removed.
    for (name, path, _) in list(cache) {
        if !matches!(
            name.as_str(),
            "store"
                | "snapshots"
                | "steps"
                | "cache-mounts"
                | "packages"
                | "context"
                | "sandbox"
                | "mounts"
                | "gc"
        ) {
            u.fixed += tree_bytes(&path);
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_bytes_counts_hard_links_once() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a"), vec![1u8; 100_000]).unwrap();
        let one = tree_bytes(&d);
        fs::hard_link(d.join("a"), d.join("b")).unwrap();
        assert_eq!(tree_bytes(&d), one);
        fs::write(d.join("c"), vec![1u8; 100_000]).unwrap();
        assert!(tree_bytes(&d) >= one + 100_000);
    }

    #[test]
    fn measure_attaches_snapshots_to_blobs_and_finds_orphans() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path();
        let store = crate::oci::Store::open(c.join("store")).unwrap();
        let blob = store.put(&vec![7u8; 50_000]).unwrap().digest;
        fs::create_dir_all(c.join("snapshots").join(blob.hex())).unwrap();
        fs::write(
            c.join("snapshots").join(blob.hex()).join("f"),
            vec![0u8; 200_000],
        )
        .unwrap();
        let orphan = "ab".repeat(32);
        fs::create_dir_all(c.join("snapshots").join(&orphan)).unwrap();
        fs::create_dir_all(c.join("snapshots/.tmp-x-1")).unwrap();
        fs::create_dir_all(c.join("steps")).unwrap();
        fs::write(c.join("steps").join("cd".repeat(32)), b"{}").unwrap();
        fs::create_dir_all(c.join("cache-mounts/_root_.npm-1")).unwrap();
        fs::write(c.join("cache-mounts/_root_.npm-1.lock"), b"").unwrap();
        let mut sizes = Sizes::default();
        let u = measure(c, &mut sizes);
        let b = u.entries.iter().find(|e| e.kind == Kind::Blob).unwrap();
        assert_eq!(b.name, blob.hex());
        assert!(b.snapshot_bytes >= 200_000 && b.bytes >= 250_000, "{b:?}");
        assert!(
            u.entries
                .iter()
                .any(|e| e.kind == Kind::Snapshot && e.name == orphan)
        );
        assert!(
            u.entries
                .iter()
                .any(|e| e.kind == Kind::Temp && e.name == "snapshots/.tmp-x-1")
        );
        assert_eq!(u.entries.iter().filter(|e| e.kind == Kind::Step).count(), 1);
        assert_eq!(
            u.entries
                .iter()
                .filter(|e| e.kind == Kind::CacheMount)
                .count(),
            1
        );
        assert!(
            !u.entries
                .iter()
                .any(|e| e.kind == Kind::Temp && e.name.ends_with(".lock"))
        );
        // The snapshot size is remembered: a second measure does not walk
        // it (a file added behind kiln's back is not seen).
        assert_eq!(sizes.snapshots[blob.hex()], b.snapshot_bytes);
        fs::write(
            c.join("snapshots").join(blob.hex()).join("g"),
            vec![0u8; 200_000],
        )
        .unwrap();
        let again = measure(c, &mut sizes);
        let b2 = again.entries.iter().find(|e| e.kind == Kind::Blob).unwrap();
        assert_eq!(b2.snapshot_bytes, b.snapshot_bytes);
    }
}
