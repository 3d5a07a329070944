//! Keeping the build cache in bounds: `kiln cache prune`, `kiln cache du`
//! and the GC a build runs when it ends, following BuildKit's rules.
//!
//! **Entries.** What GC removes, one at a time: a step record
//! (`steps/<key>`); a blob of the store together with its snapshot
//! (`snapshots/<blob hex>`, the bulk of a cache); a cache mount; a package
//! index or record; a context stat cache. Least recently used goes first.
//!
//! **Used.** A build records use explicitly (atime is not reliable): a
//! step-cache hit sets the record's mtime, the end of a solve sets the
//! mtime of every blob its stages, bases and image stand on, a cache mount's
//! dir gets its mtime set when a step mounts it, a reused package set or
//! stat cache when read. One `utimensat` each ([`touch`]).
//!
//! **Consistency.** A record is removed before the blob it names, a
//! snapshot is moved out of `snapshots/` (one rename) before its blob is
//! removed and deleted afterwards: a kill at any point leaves no record
//! naming a missing layer and no half snapshot under a real name. Lookups
//! tolerate the rest: a record whose blob is gone is a miss, a snapshot
//! missing for a present blob is unpacked again.
//!
//! **Safety.** Builds and `kiln run` hold the store lock shared for as long
//! as they use the cache; GC removes only while it holds it exclusively.
//! `kiln cache prune` waits for it; the GC at the end of a build only tries
//! and leaves the work to the next build when another kiln process is using
//! the cache.

pub mod units;
mod usage;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

pub use usage::{CacheEntry, Kind, Sizes, Usage, is_hex_digest, measure, tree_bytes};

use crate::Result;
use crate::oci::Store;

pub use crate::paths::touch;

/// What a prune removes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keep the most recently used entries up to this many bytes
    /// (`--keep-storage`); `None` removes every candidate.
    pub keep_bytes: Option<u64>,
    /// Only entries unused for longer than this (`--filter until=`).
    pub until: Option<Duration>,
    /// Only entries last used before this instant (the auto GC keeps what
    /// the build that runs it used).
    pub used_before: Option<SystemTime>,
    /// Also resolved package sets and archive metadata (`--all`).
    pub all: bool,
    /// Report only.
    pub dry_run: bool,
}

/// One removed (or, dry, removable) entry.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub kind: Kind,
    pub name: String,
    pub bytes: u64,
    #[serde(serialize_with = "rfc3339")]
    pub last_used: SystemTime,
}

/// What a prune did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// The cache dir's size before and after, bytes on disk.
    pub before: u64,
    pub after: u64,
    /// Bytes of the removed entries.
    pub removed_bytes: u64,
    /// Of those, what the disk got back (blobs also linked from the image
    /// store free only their snapshot).
    pub freed_bytes: u64,
    pub removed: Vec<Removed>,
}

impl Report {
    /// Count and bytes per `du` heading, snapshots of blobs counted apart.
    pub fn by_group(&self) -> BTreeMap<&'static str, (usize, u64)> {
        let mut out: BTreeMap<&'static str, (usize, u64)> = BTreeMap::new();
        for r in &self.removed {
            let e = out.entry(r.kind.group()).or_default();
            e.0 += 1;
            e.1 += r.bytes;
        }
        out
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(
        &chrono::DateTime::<chrono::Utc>::from(*t)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// The blobs each record names (`"blob"` fields, whatever the record's
/// shape): step records and package layer records.
fn named_blobs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("blob", serde_json::Value::String(s)) => {
                        out.push(s.strip_prefix("sha256:").unwrap_or(s).to_string())
                    }
                    _ => named_blobs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| named_blobs(v, out)),
        _ => {}
    }
}

/// For each entry, the records that name it (they go with it); and the
/// records that name a blob the store no longer has (or cannot be read).
pub fn references(u: &Usage) -> (Vec<Vec<usize>>, Vec<usize>) {
    let blobs: HashMap<&str, usize> = u
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == Kind::Blob)
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut deps = vec![Vec::new(); u.entries.len()];
    let mut dangling = Vec::new();
    for (i, e) in u.entries.iter().enumerate() {
        if !matches!(e.kind, Kind::Step | Kind::PackageRecord) {
            continue;
        }
        let Some(v) = fs::read(&e.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            dangling.push(i);
            continue;
        };
        let mut named = Vec::new();
        named_blobs(&v, &mut named);
        for hex in named {
            match blobs.get(hex.as_str()) {
                Some(&b) => deps[b].push(i),
                None => {
                    dangling.push(i);
                    break;
                }
            }
        }
    }
    (deps, dangling)
}

/// The entries to remove, in removal order (records before the blobs they
/// name). Leftovers, orphan snapshots and dangling records always go;
/// then the candidates (old enough for `until`/`used_before`; resolved
/// sets and archive metadata only with `all`), least recently used first,
/// until the cache fits `keep_bytes` (all of them without it).
pub fn select(
    u: &Usage,
    deps: &[Vec<usize>],
    dangling: &[usize],
    opts: &Options,
    now: SystemTime,
) -> Vec<usize> {
    let n = u.entries.len();
    let mut chosen = vec![false; n];
    let mut total = u.total();
    let mut order = Vec::new();
    fn take(
        i: usize,
        u: &Usage,
        deps: &[Vec<usize>],
        chosen: &mut [bool],
        total: &mut u64,
        order: &mut Vec<usize>,
    ) {
        if chosen[i] {
            return;
        }
        chosen[i] = true;
        *total = total.saturating_sub(u.entries[i].bytes);
        order.push(i);
        for &d in &deps[i] {
            take(d, u, deps, chosen, total, order);
        }
    }
    for (i, e) in u.entries.iter().enumerate() {
        if matches!(e.kind, Kind::Temp | Kind::Snapshot) {
            take(i, u, deps, &mut chosen, &mut total, &mut order);
        }
    }
    for &i in dangling {
        take(i, u, deps, &mut chosen, &mut total, &mut order);
    }
    let mut candidates: Vec<usize> = (0..n)
        .filter(|&i| {
            let e = &u.entries[i];
            !chosen[i]
                && (opts.all || !e.kind.kept_without_all())
                && opts
                    .until
                    .is_none_or(|d| now.duration_since(e.last_used).unwrap_or_default() > d)
                && opts.used_before.is_none_or(|t| e.last_used < t)
        })
        .collect();
    candidates.sort_by(|&a, &b| {
        let (a, b) = (&u.entries[a], &u.entries[b]);
        a.last_used
            .cmp(&b.last_used)
            .then(b.bytes.cmp(&a.bytes))
            .then(a.name.cmp(&b.name))
    });
    for i in candidates {
        if opts.keep_bytes.is_some_and(|k| total <= k) {
            break;
        }
        take(i, u, deps, &mut chosen, &mut total, &mut order);
    }
    // Records first: a kill mid-prune never leaves one naming a missing blob.
    order.sort_by_key(|&i| !matches!(u.entries[i].kind, Kind::Step | Kind::PackageRecord));
    order
}

/// Where removed trees wait to be deleted: out of every dir a build reads,
/// on the same filesystem (a rename), private like the snapshots.
fn trash_dir(cache: &Path) -> PathBuf {
    cache.join("gc").join("trash")
}

/// Moves a tree out of the way (one rename), to delete it later.
fn discard_tree(cache: &Path, path: &Path) -> Result<()> {
    let trash = trash_dir(cache);
    crate::paths::private_dir(&trash)?;
    let name = format!(
        "{}-{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    match fs::rename(path, trash.join(&name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // Another filesystem (a mounted snapshots dir): a temp name in
        // place, which readers skip, then delete it now.
        Err(_) => {
            let parent = path.parent().context("a cache path without a parent")?;
            let tmp = parent.join(format!(".tmp-gc-{name}"));
            fs::rename(path, &tmp)
                .with_context(|| format!("moving {} out of the cache", path.display()))?;
            crate::sandbox::remove_tree(&tmp);
            Ok(())
        }
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn remove(cache: &Path, e: &CacheEntry) -> Result<()> {
    match e.kind {
        Kind::Blob => {
            let snapshot = cache.join("snapshots").join(&e.name);
            if snapshot.is_dir() {
                discard_tree(cache, &snapshot)?;
            }
            remove_file(&e.path)
        }
        Kind::CacheMount => {
            discard_tree(cache, &e.path)?;
            remove_file(&e.path.with_file_name(format!("{}.lock", e.name)))
        }
        _ if fs::symlink_metadata(&e.path).is_ok_and(|m| m.is_dir()) => {
            discard_tree(cache, &e.path)
        }
        _ => remove_file(&e.path),
    }
}

/// Deletes what removals moved to the trash (also a killed GC's).
pub fn empty_trash(cache: &Path) {
    if let Ok(rd) = fs::read_dir(trash_dir(cache)) {
        for e in rd.flatten() {
            crate::sandbox::remove_tree(&e.path());
        }
    }
}

/// Removes what `opts` selects from the cache at `cache`. The caller holds
/// the store lock exclusively (shared is enough for a dry run). Trees are
/// only moved to the trash; [`empty_trash`] deletes them (it needs no lock).
pub fn prune_locked(cache: &Path, opts: &Options) -> Result<Report> {
    let mut sizes = Sizes::load(cache);
    let usage = measure(cache, &mut sizes);
    let (deps, dangling) = references(&usage);
    let now = SystemTime::now();
    let order = select(&usage, &deps, &dangling, opts, now);
    let mut report = Report {
        dry_run: opts.dry_run,
        before: usage.total(),
        after: usage.total(),
        removed_bytes: 0,
        freed_bytes: 0,
        removed: Vec::new(),
    };
    for i in order {
        let e = &usage.entries[i];
        if !opts.dry_run {
            remove(cache, e)?;
            if e.kind == Kind::Blob {
                sizes.snapshots.remove(&e.name);
            }
            if e.kind == Kind::CacheMount {
                sizes.cache_mounts.remove(&e.name);
            }
        }
        report.removed_bytes += e.bytes;
        report.freed_bytes += if e.shared { e.snapshot_bytes } else { e.bytes };
        report.after = report.after.saturating_sub(e.bytes);
        report.removed.push(Removed {
            kind: e.kind,
            name: e.name.clone(),
            bytes: e.bytes,
            last_used: e.last_used,
        });
    }
    if !opts.dry_run {
        sizes.save(cache);
    }
    Ok(report)
}

/// `kiln cache prune` on the cache at `cache`: waits for the exclusive
/// lock with `wait` (which says who holds it), removes, deletes the trash.
pub fn prune(
    cache: &Path,
    opts: &Options,
    wait: impl FnOnce(&Path) -> Result<Store>,
) -> Result<Report> {
    let store = cache.join("store");
    let lock = if opts.dry_run {
        Store::open(&store)?
    } else {
        wait(&store)?
    };
    let report = prune_locked(cache, opts)?;
    drop(lock);
    if !opts.dry_run {
        empty_trash(cache);
        State::forget(cache);
    }
    Ok(report)
}

/// The cache's size bound for the GC that ends a build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bound {
    /// `KILN_CACHE_MAX`, else [`default_bound`].
    #[default]
    Default,
    /// No GC (`0` or `off`).
    Off,
    Bytes(u64),
}

/// BuildKit's default is a share of the disk: 10% of the filesystem that
/// holds the cache, at most 20 GiB (Docker's `defaultKeepStorage` example).
pub const DEFAULT_CAP: u64 = 20 << 30;

impl Bound {
    /// `off`, `0`, or a size (`10GB`).
    pub fn parse(text: &str) -> Result<Bound> {
        match text.trim() {
            "off" | "0" => Ok(Bound::Off),
            s => Ok(Bound::Bytes(units::parse_size(s)?)),
        }
    }

    /// The bound in bytes (`None`: no GC).
    pub fn resolve(self, cache: &Path) -> Result<Option<u64>> {
        let b = match self {
            Bound::Default => match std::env::var("KILN_CACHE_MAX") {
                Ok(v) if !v.trim().is_empty() => Bound::parse(&v).with_context(|| {
                    format!(
                        "KILN_CACHE_MAX={v:?}: give a size (10GB), or off to turn the cache GC off"
                    )
                })?,
                _ => Bound::Bytes(default_bound(cache)),
            },
            b => b,
        };
        Ok(match b {
            Bound::Bytes(n) => Some(n),
            _ => None,
        })
    }
}

/// 10% of the filesystem holding `cache` (or its nearest existing
/// parent), at most [`DEFAULT_CAP`].
pub fn default_bound(cache: &Path) -> u64 {
    let mut p = cache;
    loop {
        if let Ok(s) = nix::sys::statvfs::statvfs(p) {
            let size = s.blocks() * s.fragment_size();
            return (size / 10).min(DEFAULT_CAP);
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return DEFAULT_CAP,
        }
    }
}

/// What the last check found, `gc/state.json`: lets a build whose cache
/// did not change since skip the GC with a few `stat`s.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    /// When the cache was measured (ns since the epoch).
    checked_ns: i128,
    total: u64,
    /// The bound it was checked against.
    bound: u64,
}

/// The dirs whose mtime changes when an entry is added.
const WATCHED: &[&str] = &[
    "store/blobs/sha256",
    "snapshots",
    "steps",
    "cache-mounts",
    "packages/indexes",
    "packages/layers",
    "packages/resolved",
    "context",
];

impl State {
    fn path(cache: &Path) -> PathBuf {
        cache.join("gc").join("state.json")
    }

    fn load(cache: &Path) -> Option<State> {
        serde_json::from_slice(&fs::read(State::path(cache)).ok()?).ok()
    }

    fn save(&self, cache: &Path) {
        let p = State::path(cache);
        if let Some(dir) = p.parent()
            && crate::paths::private_dir(dir).is_ok()
            && let Ok(b) = serde_json::to_vec(self)
        {
            let _ = crate::oci::layout::write_cache_record(&p, &b);
        }
    }

    fn forget(cache: &Path) {
        let _ = fs::remove_file(State::path(cache));
    }

    /// Whether the cache may have grown past `bound` since this check:
    /// it was over, the bound is lower, or an entry dir changed (with a
    /// margin for the kernel's coarse file timestamps).
    fn may_exceed(&self, cache: &Path, bound: u64) -> bool {
        if self.total > bound || bound < self.bound {
            return true;
        }
        let since = self.checked_ns - 1_000_000_000;
        WATCHED.iter().any(|d| {
            fs::metadata(cache.join(d))
                .and_then(|m| m.modified())
                .is_ok_and(|t| usage_ns(t) >= since)
        })
    }
}

fn usage_ns(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// What the GC at the end of a build did.
#[derive(Debug)]
pub enum AutoOutcome {
    /// Nothing changed since the last check, or the cache is within bound.
    Within { total: Option<u64> },
    /// Entries were removed (the report), the cache now `after` bytes.
    Pruned(Report),
    /// Over the bound, but another kiln process uses the cache.
    Busy { total: u64 },
}

/// The GC at the end of a build: when the cache may have grown past
/// `bound`, measures it (holding the lock shared); when it is over, takes
/// the lock exclusively if no other kiln process uses the cache and
/// removes least recently used entries until it fits, never one used
/// since `started` (the build that runs it).
pub fn auto(cache: &Path, bound: u64, started: SystemTime) -> Result<AutoOutcome> {
    if let Some(s) = State::load(cache)
        && !s.may_exceed(cache, bound)
    {
        return Ok(AutoOutcome::Within { total: None });
    }
    let store = cache.join("store");
    let checked_ns = usage_ns(SystemTime::now());
    let total = {
        let _shared = Store::open(&store)?;
        let mut sizes = Sizes::load(cache);
        let total = measure(cache, &mut sizes).total();
        sizes.save(cache);
        total
    };
    if total <= bound {
        State {
            checked_ns,
            total,
            bound,
        }
        .save(cache);
        return Ok(AutoOutcome::Within { total: Some(total) });
    }
    let Some(lock) = Store::try_open_exclusive(&store)? else {
        State {
            checked_ns,
            total,
            bound,
        }
        .save(cache);
        return Ok(AutoOutcome::Busy { total });
    };
    let report = prune_locked(
        cache,
        &Options {
            keep_bytes: Some(bound),
            used_before: Some(started - Duration::from_secs(1)),
            ..Options::default()
        },
    )?;
    // Measured after the removals, which change the watched dirs; nothing
    // else writes while the lock is exclusive.
    let checked_ns = usage_ns(SystemTime::now());
    State {
        checked_ns,
        total: report.after,
        bound,
    }
    .save(cache);
    drop(lock);
    empty_trash(cache);
    Ok(AutoOutcome::Pruned(report))
}

#[cfg(test)]
mod tests;
