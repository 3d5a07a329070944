//! Packages → image layers.
//!
//! 1. The .debs are downloaded in parallel into the blob store, each
//!    verified against the sha256 of the signed index (or the lockfile).
//! 2. Packages are grouped by the dependency graph they form (edges from
//!    their own `Depends`/`Pre-Depends`, so a lockfile alone decides the
//!    grouping): the most depended-upon packages (transitive reverse
//!    dependencies, ties by name) get one layer each, up to the budget
//!    minus two; everything else shares one layer; the last layer holds the
//!    dpkg `status` database and the [`super::configure`] results. A
//!    per-package layer holds only that package's files and its
//!    `/var/lib/dpkg/info` entries, so it is a function of the .deb alone
//!    and two images with libc6 share the libc6 layer byte for byte.
//! 3. Layers are cached by (layer format, options, .deb digests), so a warm
//!    compose only resolves and assembles.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::deb::{self, Deb};
use super::fetch::Http;
use super::lock::{LockedPackage, Lockfile};
use super::relation;
use super::repo::RepoConfig;
use super::shared::{Claim, SharedReads};
use super::{configure, dpkg};
use crate::Result;
use crate::oci::digest::{Digest, HashingReader};
use crate::oci::layer::{self, Entry, EntryKind, FileSource, Layer, LayerOptions};
use crate::oci::spool::Spool;
use crate::oci::store::{BlobInfo, Store};
use crate::progress::Progress;
use crate::sandbox::Snapshots;

/// Version of kiln's package → layer mapping; part of every layer cache key.
/// 2: documentation, manual pages and translations left out by default
/// ([`super::exclude`]).
pub const COMPOSE_FORMAT: u32 = 2;

/// Default layer budget.
pub const DEFAULT_MAX_LAYERS: usize = 16;

#[derive(Clone, Debug)]
pub struct ComposeOptions {
    /// At most this many layers (≥ 2).
    pub max_layers: usize,
    pub layer: LayerOptions,
    /// Parallel downloads.
    pub jobs: usize,
    /// Extra CA certificates (file name, PEM) trusted in the image, as
    /// `/usr/local/share/ca-certificates` entries would be.
    pub extra_ca: Vec<(String, Vec<u8>)>,
    /// Keep what [`super::exclude`] leaves out by default (docs, manual
    /// pages, info pages, translations, lintian overrides).
    pub keep_docs: bool,
    /// Where the layers' snapshots go when a build will run steps on them:
    /// each new layer is unpacked from its tar stream as it is written
    /// (the toolchain's files are written once, while the layer
    /// compresses, instead of unpacking the blob afterwards).
    pub snapshots: Option<Snapshots>,
    /// The other package sets of the same build: packages they read are
    /// not read again, and this set writes its layers in its turn
    /// ([`super::shared`]).
    pub shared: Option<Sharing>,
}

/// A set's place among the package sets of one build.
#[derive(Clone, Debug)]
pub struct Sharing {
    pub reads: Arc<SharedReads>,
    /// Its rank: the order the build needs the sets in, 0 first.
    pub rank: usize,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        ComposeOptions {
            max_layers: DEFAULT_MAX_LAYERS,
            layer: LayerOptions::default(),
            jobs: 6,
            extra_ca: Vec::new(),
            keep_docs: false,
            snapshots: None,
            shared: None,
        }
    }
}

/// One layer of a composed image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageLayer {
    pub diff_id: Digest,
    pub blob: Digest,
    pub size: u64,
    pub compression: layer::Compression,
    /// Packages whose files are in it; empty for the final (database) layer.
    pub packages: Vec<String>,
}

impl PackageLayer {
    fn from(l: &Layer, packages: Vec<String>) -> PackageLayer {
        PackageLayer {
            diff_id: l.diff_id.clone(),
            blob: l.blob.digest.clone(),
            size: l.blob.size,
            compression: l.compression,
            packages,
        }
    }

    pub fn to_layer(&self) -> Layer {
        Layer {
            diff_id: self.diff_id.clone(),
            blob: BlobInfo {
                digest: self.blob.clone(),
                size: self.size,
            },
            compression: self.compression,
        }
    }
}

/// The result of [`compose`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Composed {
    pub layers: Vec<PackageLayer>,
    /// Whether every layer came from the cache.
    #[serde(skip)]
    pub cached: bool,
}

/// Downloads missing .debs into the store, `jobs` at a time.
pub fn fetch_debs(
    cfg: &RepoConfig,
    http: &Http,
    store: &Store,
    pkgs: &[LockedPackage],
    jobs: usize,
    progress: &Progress,
) -> Result<()> {
    fetch_debs_then(cfg, http, store, pkgs, jobs, progress, &|_| {})
}

/// [`fetch_debs`], calling `then` with each package as soon as its file is
/// in the store (cached ones first), so unpacking overlaps the downloads.
fn fetch_debs_then<'a>(
    cfg: &RepoConfig,
    http: &Http,
    store: &Store,
    pkgs: &'a [LockedPackage],
    jobs: usize,
    progress: &Progress,
    then: &(dyn Fn(&'a LockedPackage) + Sync),
) -> Result<()> {
    let mut todo = Vec::new();
    for p in pkgs {
        if store.contains(&p.digest()?) {
            then(p);
        } else {
            todo.push(p);
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    if cfg.offline {
        bail!(
            "--offline: {} package files are not cached (first: {} {}): run once without --offline",
            todo.len(),
            todo[0].name,
            todo[0].version
        );
    }
    // Largest first so the long downloads start early.
    todo.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
    let total: u64 = todo.iter().map(|p| p.size).sum();
    let task = progress.task(format!("download {} packages", todo.len()));
    let queue = Mutex::new(todo.into_iter());
    let done = Mutex::new(0u64);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let Some(p) = queue.lock().map(|mut q| q.next()).ok().flatten() else {
                        return;
                    };
                    match fetch_one(cfg, http, store, p) {
                        Ok(n) => {
                            then(p);
                            if let Ok(mut d) = done.lock() {
                                *d += n;
                                task.bytes(*d, Some(total));
                            }
                        }
                        Err(e) => {
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(e);
                            }
                        }
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap_or_default();
    if let Some(e) = errors.pop() {
        task.finish("failed");
        return Err(e);
    }
    task.finish("done");
    Ok(())
}

fn fetch_one(cfg: &RepoConfig, http: &Http, store: &Store, p: &LockedPackage) -> Result<u64> {
    let url = p.url(cfg);
    let want = p.digest()?;
    let (_, mut body) = http
        .open(&url)
        .with_context(|| format!("downloading {} {} ({})", p.name, p.version, p.filename))?;
    let mut w = store.writer()?;
    let n = std::io::copy(&mut body, &mut w).with_context(|| format!("downloading {url}"))?;
    w.flush()?;
    w.commit_expecting(&want).with_context(|| {
        format!(
            "{url}: refused: the file does not match the sha256 the signed index (or kiln.lock) gives for {} {} (corrupt or tampered mirror; try another mirror)",
            p.name, p.version
        )
    })?;
    Ok(n)
}

/// Reads a .deb from the store, verifying its digest; its file contents go
/// to `spool`. The file is parsed as it is read and hashed on the way: a
/// package is not held in memory, not even compressed.
pub fn read_deb(store: &Store, p: &LockedPackage, spool: &mut Spool) -> Result<Deb> {
    let want = p.digest()?;
    let what = || {
        format!(
            "reading the cached package file of {} {}",
            p.name, p.version
        )
    };
    let file = store.open_blob(&want).with_context(what)?;
    let mut r = HashingReader::new(std::io::BufReader::with_capacity(1 << 16, file));
    let deb = deb::read_stream(
        &mut r,
        &format!("{} {} ({})", p.name, p.version, p.filename),
        Some(spool),
    );
    // What the parser left (ar padding, a trailing member) counts too.
    std::io::copy(&mut r, &mut std::io::sink()).with_context(what)?;
    let (got, _) = r.finish();
    if got != want {
        bail!(
            "the cached package file of {} {}: blob {want} in {} is corrupt (its content hashes to {got}): run `kiln cache verify --fix`",
            p.name,
            p.version,
            store.root().display()
        );
    }
    deb
}

/// Drops file contents configure does not need (it only reads a few) and
/// brings into memory the small ones it reads; shared libraries stay
/// spooled (ldconfig copies them out).
fn slim(mut d: Deb) -> Result<Deb> {
    for e in &mut d.entries {
        let s = e.path.to_string_lossy();
        let lib = s.starts_with("usr/lib") && s.contains(".so");
        // /etc: conffiles, whose md5 goes into the dpkg status.
        let read = s.starts_with("etc/")
            || s.starts_with("usr/share/base-passwd/")
            || s.starts_with("usr/share/ca-certificates/");
        let EntryKind::File(src) = &e.kind else {
            continue;
        };
        let slimmed = match src {
            FileSource::Spool(span) if read => FileSource::Bytes(Arc::from(
                span.read_all()
                    .with_context(|| format!("reading back {s} from the spool file"))?,
            )),
            _ if read || lib => continue,
            _ => FileSource::Bytes(Arc::from(Vec::new())),
        };
        e.kind = EntryKind::File(slimmed);
    }
    Ok(d)
}

/// Dependency edges between the packages of a set, from their control data.
pub fn edges(
    controls: &BTreeMap<String, super::control::Paragraph>,
    arch: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut provides: HashMap<String, Vec<String>> = HashMap::new();
    for (name, c) in controls {
        provides.entry(name.clone()).or_default().push(name.clone());
        if let Some(p) = c.get("Provides")
            && let Ok(groups) = relation::parse(&p, arch)
        {
            for d in groups.into_iter().flatten() {
                provides.entry(d.name).or_default().push(name.clone());
            }
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, c) in controls {
        let set = out.entry(name.clone()).or_default();
        for f in ["Pre-Depends", "Depends"] {
            let Some(v) = c.get(f) else { continue };
            let Ok(groups) = relation::parse(&v, arch) else {
                continue;
            };
            for g in groups {
                // The first alternative present in the set is the edge.
                if let Some(t) = g
                    .iter()
                    .find_map(|d| provides.get(&d.name).and_then(|v| v.first()))
                    && t != name
                {
                    set.insert(t.clone());
                }
            }
        }
    }
    out
}

/// Groups packages into at most `max_layers - 1` groups (the last layer is
/// the database): singles by popularity, then one shared group.
pub fn group(edges: &BTreeMap<String, BTreeSet<String>>, max_layers: usize) -> Vec<Vec<String>> {
    // popularity = number of packages that (transitively) depend on it
    let mut popularity: BTreeMap<&String, usize> = edges.keys().map(|k| (k, 0)).collect();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for d in edges.get(n).into_iter().flatten() {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        for d in seen {
            if d != start
                && let Some(c) = popularity.get_mut(d)
            {
                *c += 1;
            }
        }
    }
    let mut order: Vec<(&String, usize)> = popularity.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let singles = max_layers.saturating_sub(2);
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut rest = Vec::new();
    for (i, (name, _)) in order.into_iter().enumerate() {
        if i < singles {
            groups.push(vec![name.clone()]);
        } else {
            rest.push(name.clone());
        }
    }
    if !rest.is_empty() {
        rest.sort();
        groups.push(rest);
    }
    groups
}

fn cache_key(kind: &str, opts: &ComposeOptions, digests: &[&str], extra: &str) -> String {
    let mut s = format!(
        "kiln-packages {kind} compose={COMPOSE_FORMAT} layer={} compression={:?} epoch={} keep_docs={} {extra}\n",
        layer::LAYER_FORMAT,
        opts.layer.compression,
        opts.layer.epoch,
        opts.keep_docs
    );
    let mut d: Vec<&str> = digests.to_vec();
    d.sort();
    for x in d {
        s.push_str(x);
        s.push('\n');
    }
    Digest::of(s.as_bytes()).hex().to_string()
}

struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Option<T> {
        let b = std::fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&b).ok()
    }
    fn put<T: Serialize>(&self, key: &str, v: &T) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::fs::write(tmp.path(), serde_json::to_vec_pretty(v)?)?;
        tmp.persist(self.dir.join(format!("{key}.json")))
            .map_err(|e| e.error)?;
        Ok(())
    }
}

/// Threads for CPU-bound work (unpacking, compressing): the cores, at least two.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// Downloads the missing .debs and reads every package once, a package as
/// soon as its file is in the store, so xz decompression overlaps the
/// downloads. Contents are filtered by [`super::exclude`] unless
/// `keep_docs`; file contents are spooled to disk ([`Spool`]), so the set
/// is not held in memory and later copies of an entry are cheap. A
/// package another set of the build claimed is not downloaded or read
/// here: its read is taken once done ([`super::shared`]).
fn fetch_and_read(
    cfg: &RepoConfig,
    http: &Http,
    store: &Store,
    lock: &Lockfile,
    opts: &ComposeOptions,
    progress: &Progress,
) -> Result<BTreeMap<String, Deb>> {
    let shared = opts.shared.as_ref().map(|s| &*s.reads);
    let mut mine: Vec<LockedPackage> = Vec::new();
    let mut theirs: Vec<&LockedPackage> = Vec::new();
    let mut claims = HashMap::new();
    for p in &lock.packages {
        match shared.map(|s| s.claim(&p.sha256, opts.keep_docs)) {
            Some(Claim::Theirs) => theirs.push(p),
            Some(Claim::Mine(c)) => {
                claims.insert(p.name.clone(), c);
                mine.push(p.clone());
            }
            None => mine.push(p.clone()),
        }
    }
    // Dropped unfinished (an error), a claim lets the other sets read it.
    let claims = Mutex::new(claims);
    let task = progress.task(if theirs.is_empty() {
        format!("unpack {} packages", mine.len())
    } else {
        format!(
            "unpack {} packages ({} read for another set)",
            mine.len(),
            theirs.len()
        )
    });
    let (tx, rx) = std::sync::mpsc::channel::<&LockedPackage>();
    let rx = Mutex::new(rx);
    let read: Mutex<BTreeMap<String, Deb>> = Mutex::new(BTreeMap::new());
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let spool_dir = cfg.cache_root()?;
    let fetched = std::thread::scope(|s| {
        for _ in 0..workers() {
            s.spawn(|| {
                // One spool file per reader: the contents of every package
                // it reads, until the layers are written.
                let mut spool = None;
                loop {
                    // The sender is dropped when every download ended.
                    let Some(p) = rx.lock().ok().and_then(|r| r.recv().ok()) else {
                        return;
                    };
                    let read_one = |spool: &mut Option<Spool>| -> Result<Deb> {
                        let spool = match spool {
                            Some(s) => s,
                            None => spool.insert(Spool::new_in(&spool_dir)?),
                        };
                        read_deb(store, p, spool)
                    };
                    match read_one(&mut spool) {
                        Ok(mut d) => {
                            if !opts.keep_docs {
                                d.entries = super::exclude::filter(std::mem::take(&mut d.entries));
                            }
                            if let Some(c) = claims.lock().ok().and_then(|mut c| c.remove(&p.name)) {
                                c.done(&d);
                            }
                            if let Ok(mut m) = read.lock() {
                                m.insert(p.name.clone(), d);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
        let tx = Mutex::new(tx);
        let mine: &[LockedPackage] = &mine;
        let then = |p| {
            if let Ok(t) = tx.lock() {
                let _ = t.send(p);
            }
        };
        let r = fetch_debs_then(cfg, http, store, mine, opts.jobs, progress, &then);
        drop(tx);
        r
    });
    fetched?;
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut read = read
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a package reader panicked"))?;
    for p in theirs {
        let d = match shared.and_then(|s| s.wait(&p.sha256, opts.keep_docs)) {
            Some(d) => d,
            // The set that claimed it stopped: read it here.
            None => {
                fetch_debs(cfg, http, store, std::slice::from_ref(p), 1, progress)?;
                let mut d = read_deb(store, p, &mut Spool::new_in(&spool_dir)?)?;
                if !opts.keep_docs {
                    d.entries = super::exclude::filter(std::mem::take(&mut d.entries));
                }
                d
            }
        };
        read.insert(p.name.clone(), d);
    }
    task.finish("done");
    Ok(read)
}

/// Turns a locked package set into layers in the store.
pub fn compose(
    cfg: &RepoConfig,
    http: &Http,
    store: &Store,
    lock: &Lockfile,
    opts: &ComposeOptions,
    progress: &Progress,
) -> Result<Composed> {
    if lock.arch != cfg.arch {
        bail!(
            "kiln.lock is for {} but the build targets {}: run `kiln lock --arch {}` or build for {}",
            lock.arch,
            cfg.arch,
            cfg.arch,
            lock.arch
        );
    }
    if opts.max_layers < 2 {
        bail!(
            "the layer budget must be at least 2 (got {})",
            opts.max_layers
        );
    }
    let cache = LayerCache {
        dir: cfg.cache_root()?.join("layers"),
    };
    let ca: Vec<String> = opts
        .extra_ca
        .iter()
        .map(|(n, b)| format!("ca:{n}:{}", Digest::of(b).hex()))
        .collect();
    let mut all: Vec<&str> = lock.packages.iter().map(|p| p.sha256.as_str()).collect();
    all.extend(ca.iter().map(String::as_str));
    let image_key = cache_key(
        "image",
        opts,
        &all,
        &format!("max_layers={} arch={}", opts.max_layers, lock.arch),
    );
    if let Some(c) = cache.get::<Composed>(&image_key)
        && c.layers.iter().all(|l| store.contains(&l.blob))
    {
        return Ok(Composed { cached: true, ..c });
    }

    let by_name: BTreeMap<&str, &LockedPackage> =
        lock.packages.iter().map(|p| (p.name.as_str(), p)).collect();
    let debs = fetch_and_read(cfg, http, store, lock, opts, progress)?;
    let controls: BTreeMap<String, super::control::Paragraph> = debs
        .iter()
        .map(|(n, d)| (n.clone(), d.control.clone()))
        .collect();
    let slims: Vec<Deb> = debs
        .values()
        .map(|d| slim(d.clone()))
        .collect::<Result<_>>()?;
    let groups = group(&edges(&controls, &lock.arch), opts.max_layers);
    // The sets the build needs first write their layers first.
    if let Some(s) = &opts.shared {
        s.reads.wait_turn(s.rank);
    }

    // Layers are written in parallel, largest first, so the big shared
    // layer's gzip does not run alone at the end (each writer is one
    // compressing thread; the machine may have more cores).
    let size_of = |g: &Vec<String>| -> u64 {
        g.iter()
            .filter_map(|n| by_name.get(n.as_str()))
            .map(|p| p.size)
            .sum()
    };
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size_of(&groups[i])));
    let next = Mutex::new(order.into_iter());
    let slots: Mutex<Vec<Option<PackageLayer>>> = Mutex::new(vec![None; groups.len()]);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let write_group = |g: &Vec<String>| -> Result<PackageLayer> {
        let digests: Vec<&str> = g
            .iter()
            .map(|n| by_name[n.as_str()].sha256.as_str())
            .collect();
        let key = cache_key("layer", opts, &digests, "");
        if let Some(l) = cache.get::<PackageLayer>(&key)
            && store.contains(&l.blob)
        {
            return Ok(l);
        }
        let label = if g.len() == 1 {
            g[0].clone()
        } else {
            format!("{} packages", g.len())
        };
        let task = progress.task(format!("layer {label}"));
        let mut entries: Vec<Entry> = Vec::new();
        for n in g {
            let d = debs
                .get(n)
                .with_context(|| format!("package {n} was not read"))?;
            entries.extend(dpkg::info_entries(d)?);
            entries.extend(d.entries.iter().cloned());
        }
        let l = write_layer(store, entries, opts)
            .with_context(|| format!("writing the layer of {label}"))?;
        // The size is what the package set's line sums.
        task.bytes(l.blob.size, Some(l.blob.size));
        task.finish("done");
        let pl = PackageLayer::from(&l, g.clone());
        cache.put(&key, &pl)?;
        Ok(pl)
    };
    std::thread::scope(|s| {
        for _ in 0..workers() {
            s.spawn(|| {
                loop {
                    let Some(i) = next.lock().ok().and_then(|mut it| it.next()) else {
                        return;
                    };
                    match write_group(&groups[i]) {
                        Ok(l) => {
                            if let Ok(mut v) = slots.lock() {
                                v[i] = Some(l);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut layers = slots
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .context("a layer was not written")?;
    let task = progress.task("configure");
    let refs: Vec<&Deb> = slims.iter().collect();
    let mut entries = dpkg::database_entries(&refs, &lock.arch)?;
    entries.extend(configure::configure(
        &refs,
        &lock.arch,
        &opts.extra_ca,
        progress,
    )?);
    let l = write_layer(store, entries, opts).context("writing the configure layer")?;
    task.bytes(l.blob.size, Some(l.blob.size));
    task.finish("done");
    layers.push(PackageLayer::from(&l, Vec::new()));
    let composed = Composed {
        layers,
        cached: false,
    };
    cache.put(&image_key, &composed)?;
    Ok(composed)
}

/// Writes one layer, and its snapshot when asked for.
fn write_layer(store: &Store, entries: Vec<Entry>, opts: &ComposeOptions) -> Result<Layer> {
    match &opts.snapshots {
        Some(s) => s.write_layer(store, entries, opts.layer),
        None => layer::write_layer(store, entries, opts.layer),
    }
}

/// Reads a layer blob back as (path → entry) — used by tests and `--why`-style tooling.
pub fn layer_paths(store: &Store, l: &PackageLayer) -> Result<Vec<String>> {
    let f = store.open_blob(&l.blob)?;
    let mut tar = tar::Archive::new(l.compression.decoder(f)?);
    let mut out = Vec::new();
    for e in tar.entries()? {
        let e = e?;
        out.push(e.path()?.to_string_lossy().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn stored_deb(store: &Store, files: &[(&str, &[u8])]) -> LockedPackage {
        let bytes =
            deb::tests::make_deb("Package: hello\nVersion: 1.0\nArchitecture: amd64\n", files);
        let blob = store.put(&bytes).unwrap();
        LockedPackage {
            name: "hello".into(),
            version: "1.0".into(),
            arch: "amd64".into(),
            archive: "trixie".into(),
            filename: "pool/main/h/hello/hello_1.0_amd64.deb".into(),
            sha256: blob.digest.hex().to_string(),
            size: bytes.len() as u64,
        }
    }

    /// The contents go to the spool file, not memory, and come back whole.
    #[test]
    fn a_read_deb_keeps_its_contents_in_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let p = stored_deb(
            &store,
            &[("./usr/bin/hello", &big), ("./etc/hello.conf", b"x=1\n")],
        );
        let mut spool = Spool::new_in(dir.path()).unwrap();
        let d = read_deb(&store, &p, &mut spool).unwrap();
        let contents = |d: &Deb, path: &str| match &d
            .entries
            .iter()
            .find(|e| e.path == Path::new(path))
            .unwrap()
            .kind
        {
            EntryKind::File(FileSource::Spool(s)) => ("spool", s.read_all().unwrap()),
            EntryKind::File(FileSource::Bytes(b)) => ("memory", b.to_vec()),
            k => panic!("{k:?}"),
        };
        assert_eq!(contents(&d, "usr/bin/hello"), ("spool", big.clone()));
        // configure reads /etc from memory; the rest it does not read.
        let s = slim(d).unwrap();
        assert_eq!(
            contents(&s, "etc/hello.conf"),
            ("memory", b"x=1\n".to_vec())
        );
        assert_eq!(contents(&s, "usr/bin/hello"), ("memory", Vec::new()));
    }

    /// A stored .deb that no longer matches its digest is refused.
    #[test]
    fn a_corrupt_stored_deb_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let p = stored_deb(&store, &[("./usr/bin/hello", b"#!/bin/sh\n")]);
        let path = store.blob_path(&p.digest().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let mut spool = Spool::new_in(dir.path()).unwrap();
        let err = format!("{:#}", read_deb(&store, &p, &mut spool).unwrap_err());
        // It names the package (the user's way to find it in kiln.lock).
        assert!(
            err.contains("is corrupt") && err.contains("hello 1.0"),
            "{err}"
        );
    }

    fn named_deb(store: &Store, name: &str, files: &[(&str, &[u8])]) -> LockedPackage {
        let bytes = deb::tests::make_deb(
            &format!("Package: {name}\nVersion: 1.0\nArchitecture: amd64\n"),
            files,
        );
        let blob = store.put(&bytes).unwrap();
        LockedPackage {
            name: name.into(),
            version: "1.0".into(),
            arch: "amd64".into(),
            archive: "trixie".into(),
            filename: format!("pool/main/{name}_1.0_amd64.deb"),
            sha256: blob.digest.hex().to_string(),
            size: bytes.len() as u64,
        }
    }

    fn locked(packages: Vec<LockedPackage>) -> Lockfile {
        Lockfile {
            version: super::super::lock::LOCK_VERSION,
            suite: "trixie".into(),
            arch: "amd64".into(),
            release_date: "Sat, 01 Nov 2025 00:00:00 UTC".into(),
            base: Default::default(),
            recommends: false,
            requests: packages.iter().map(|p| p.name.clone()).collect(),
            packages,
        }
    }

    fn offline(root: &Path) -> RepoConfig {
        RepoConfig {
            arch: "amd64".into(),
            offline: true,
            cache: Some(root.join("packages")),
            ..RepoConfig::default()
        }
    }

    /// Two sets of one build read a package they share once: the second
    /// set composes without its .deb file (gone from the store, offline),
    /// and its layers are the bytes it composes alone.
    #[test]
    fn a_package_in_two_sets_is_read_once_and_the_layers_are_unchanged() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let files: &[(&str, &[u8])] = &[("./usr/lib/libshared.so.1", &big)];
        let gzip = |shared| ComposeOptions {
            layer: LayerOptions {
                compression: layer::Compression::Gzip,
                epoch: 0,
            },
            shared,
            ..ComposeOptions::default()
        };
        let progress = Progress::quiet();

        // The runtime set alone, in its own cache.
        let alone_dir = tempfile::tempdir().unwrap();
        let store = Store::open(alone_dir.path().join("store")).unwrap();
        let runtime = locked(vec![named_deb(&store, "libshared", files)]);
        let alone = compose(
            &offline(alone_dir.path()),
            &Http::new(),
            &store,
            &runtime,
            &gzip(None),
            &progress,
        )
        .unwrap();

        // A build set with it and more (zstd: no layer of the runtime
        // set's is in the layer cache), then the runtime set.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let shared = named_deb(&store, "libshared", files);
        let build = locked(vec![
            shared.clone(),
            named_deb(&store, "gcc", &[("./usr/bin/gcc", b"cc")]),
        ]);
        let reads = Arc::new(SharedReads::new(2));
        let share = |rank| {
            Some(Sharing {
                reads: reads.clone(),
                rank,
            })
        };
        let cfg = offline(dir.path());
        let runtime_turn = reads.turn(1);
        {
            let _t = reads.turn(0);
            let zstd = ComposeOptions {
                layer: LayerOptions {
                    compression: layer::Compression::Zstd,
                    epoch: 0,
                },
                shared: share(0),
                ..ComposeOptions::default()
            };
            compose(&cfg, &Http::new(), &store, &build, &zstd, &progress).unwrap();
        }
        let blob = store.blob_path(&shared.digest().unwrap());
        std::fs::remove_file(&blob).unwrap();
        let second = compose(&cfg, &Http::new(), &store, &runtime, &gzip(share(1)), &progress)
            .unwrap();
        drop(runtime_turn);
        assert!(!second.cached);
        assert_eq!(second.layers, alone.layers);

        // Without the build's shared reads (and its layer cache), the
        // missing file is an error: the second set did not read it.
        std::fs::remove_dir_all(dir.path().join("packages/layers")).unwrap();
        let e = compose(&cfg, &Http::new(), &store, &runtime, &gzip(None), &progress).unwrap_err();
        assert!(format!("{e:#}").contains("--offline"), "{e:#}");
    }

    #[test]
    fn grouping_puts_the_most_depended_upon_first() {
        let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |a: &str, deps: &[&str]| {
            e.insert(a.into(), deps.iter().map(|s| s.to_string()).collect());
        };
        add("libc6", &["libgcc-s1"]);
        add("libgcc-s1", &["libc6"]);
        add("libssl", &["libc6"]);
        add("node", &["libssl", "libc6", "libuv"]);
        add("libuv", &["libc6"]);
        add("tzdata", &[]);
        let g = group(&e, 4);
        assert_eq!(g[0], vec!["libc6"]);
        assert_eq!(g[1], vec!["libgcc-s1"]);
        assert_eq!(g[2], vec!["libssl", "libuv", "node", "tzdata"]);
        assert_eq!(g.len(), 3);
        // Enough budget: one layer each.
        assert_eq!(group(&e, 16).len(), 6);
    }
}
