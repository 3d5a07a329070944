//! The registry as a shared step cache: `--cache-to type=registry,ref=…`
//! and `--cache-from type=registry,ref=…` (buildx's syntax), so builders
//! with empty local caches (CI runners, pods) reuse each other's steps
//! through the registry their images already go to. Format and behaviour:
//! [docs/cache.md](../../docs/cache.md).
//!
//! A cache is one OCI 1.1 artifact: an image manifest with `artifactType`
//! [`ARTIFACT_TYPE`], the empty config, and as `layers` first the cache
//! record (JSON, [`RECORD_MEDIA_TYPE`]), then the step layers and package
//! base layers it names, as they are in the images (same digests: a
//! registry stores them once). The record maps step keys (the content keys
//! of [`crate::graph::key`], the same on every machine) to layer indices,
//! and package-set references to the composed base image.
//!
//! Reading a cache fetches its manifest and record only; a step found there
//! is CACHED and its layer is fetched when a later step or the export needs
//! its bytes ([`RemoteCache::ensure_blob`]). Anything wrong with a cache
//! (missing, unreadable, another version, blobs gone) makes it a miss with a
//! warning, never a failed build.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use oci_spec::image::{Descriptor, DescriptorBuilder, MediaType};
use serde::{Deserialize, Serialize};

use super::cache::{LayerRecord, StepRecord};
use crate::Result;
use crate::oci::image::{Image, desc_digest, descriptor, put_json, read_image};
use crate::oci::layer::Compression;
use crate::oci::reference::Reference;
use crate::oci::{Digest, Store};
use crate::packages::image::ComposedSet;
use crate::progress::Progress;
use crate::registry::{self, Client, PushOptions, PushSummary};

/// The cache manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1+json";
/// The media type of the cache record layer.
pub const RECORD_MEDIA_TYPE: &str = "application/vnd.kiln.cache.record.v1+json";
/// The record format this kiln writes and reads; another is a miss.
/// 2: package bases filed by reference and Debian architecture
/// ([`base_key`]); version 1 filed them by reference alone, so a builder
/// for arm64 took an amd64 builder's base for its own.
pub const FORMAT_VERSION: u32 = 2;

/// Where a record files a package base: its set's reference (which names
/// no architecture) and the Debian architecture its packages are for.
fn base_key(reference: &str, arch: &str) -> String {
    format!("{reference}@{arch}")
}

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// Which steps `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps (and package base) of the stages the image is made of.
    #[default]
    Min,
    /// Every stage's steps and package bases (build stages too).
    Max,
}

/// `--cache-to type=registry,ref=REF[,mode=min|max]`, or `type=inline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    /// The cache's ref; empty for `type=inline`.
    pub reference: String,
    /// `type=inline`: the record of the image's own steps goes into the
    /// image's config ([`with_inline_cache`]); no artifact is written.
    pub inline: bool,
    pub mode: CacheMode,
    /// `cache-mounts=true`: also export the contents of the build's
    /// `RUN --mount=type=cache` dirs (package managers' download caches).
    pub cache_mounts: bool,
}

/// `--cache-from type=registry,ref=REF` (or a bare `REF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    pub reference: String,
}

/// `key=value` pairs of a `--cache-to`/`--cache-from` value; a value
/// without `=` is the ref (buildx accepts `--cache-from REF`).
fn fields(flag: &str, s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if !s.contains('=') {
        out.insert("type".into(), "registry".into());
        out.insert("ref".into(), s.to_string());
        return Ok(out);
    }
    for part in s.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            bail!("{flag} {s}: `{part}` is not KEY=VALUE (e.g. type=registry,ref=REG/REPO:TAG)");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn unsupported_type(flag: &str, s: &str, t: &str) -> anyhow::Error {
    let also = if flag == "--cache-to" {
        ", or in the image itself (type=inline)"
    } else {
        "; an image's inline cache is read with type=registry,ref=IMAGE"
    };
    anyhow::anyhow!(
        "{flag} {s}: cache type `{t}` is not supported; kiln keeps its cache locally and in registries (type=registry){also}"
    )
}

fn reference_of(flag: &str, s: &str, f: &mut BTreeMap<String, String>) -> Result<String> {
    let Some(r) = f.remove("ref").filter(|r| !r.is_empty()) else {
        bail!("{flag} {s}: no ref: give type=registry,ref=REG/REPO:TAG");
    };
    Reference::parse(&r).with_context(|| format!("{flag} {s}: ref {r}"))?;
    Ok(r)
}

impl FromStr for CacheTo {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<CacheTo> {
        let flag = "--cache-to";
        let mut f = fields(flag, s)?;
        match f.remove("type").as_deref() {
            Some("registry") | None => {}
            Some("inline") => return inline_cache_to(s, f),
            Some(t) => return Err(unsupported_type(flag, s, t)),
        }
        let reference = reference_of(flag, s, &mut f)?;
        let mode = match f.remove("mode").as_deref() {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(m) => bail!("{flag} {s}: mode={m}: use mode=min or mode=max"),
        };
        let cache_mounts = match f.remove("cache-mounts").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("{flag} {s}: cache-mounts={v}: use cache-mounts=true or false"),
        };
        if let Some(k) = f.keys().next() {
            bail!("{flag} {s}: unknown option `{k}` (kiln takes type, ref, mode and cache-mounts)");
        }
        Ok(CacheTo {
            reference,
            inline: false,
            mode,
            cache_mounts,
        })
    }
}

/// `--cache-to type=inline[,mode=min]`: the image's own steps only, as in
/// buildx; the rest of a registry cache's options do not apply.
fn inline_cache_to(s: &str, mut f: BTreeMap<String, String>) -> Result<CacheTo> {
    let flag = "--cache-to";
    match f.remove("mode").as_deref() {
        None | Some("min") => {}
        Some(m) => bail!(
            "{flag} {s}: mode={m}: an inline cache holds the image's own steps (mode=min); for every stage's use type=registry,ref=REF,mode=max"
        ),
    }
    if let Some(k) = f.keys().next() {
        bail!(
            "{flag} {s}: `{k}` is not an option of type=inline (it takes mode=min only; ref, cache-mounts and mode=max are for type=registry)"
        );
    }
    Ok(CacheTo {
        reference: String::new(),
        inline: true,
        mode: CacheMode::Min,
        cache_mounts: false,
    })
}

impl FromStr for CacheFrom {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<CacheFrom> {
        let flag = "--cache-from";
        let mut f = fields(flag, s)?;
        match f.remove("type").as_deref() {
            Some("registry") | None => {}
            Some(t) => return Err(unsupported_type(flag, s, t)),
        }
        let reference = reference_of(flag, s, &mut f)?;
        if let Some(k) = f.keys().next() {
            bail!("{flag} {s}: unknown option `{k}` (kiln takes type and ref)");
        }
        Ok(CacheFrom { reference })
    }
}

/// A step a solve ran or found cached, as `--cache-to` may export it.
#[derive(Debug, Clone)]
pub struct ExportStep {
    /// Whether the step's stage is part of the image (`mode=min` keeps these).
    pub output: bool,
    pub key: Digest,
    pub record: StepRecord,
}

/// A package base a solve composed or reused.
#[derive(Debug, Clone)]
pub struct ExportBase {
    pub output: bool,
    /// [`crate::graph::PackageSet::reference`].
    pub reference: String,
    pub image: Image,
    pub set: ComposedSet,
}

impl ExportBase {
    /// Where a record files it ([`base_key`]).
    fn key(&self) -> String {
        base_key(&self.reference, &self.set.lock.arch)
    }
}

/// A cache mount a solve's steps use (`RUN --mount=type=cache`).
#[derive(Debug, Clone)]
pub struct ExportMount {
    pub output: bool,
    /// The mount's id (its target when it has none).
    pub id: String,
    /// Its dir on this machine.
    pub dir: std::path::PathBuf,
}

/// What a solve can export to a registry cache.
#[derive(Debug, Clone, Default)]
pub struct Exportable {
    pub steps: Vec<ExportStep>,
    pub bases: Vec<ExportBase>,
    pub mounts: Vec<ExportMount>,
}

impl Exportable {
    /// One export of several solves (the platforms of one build): their
    /// steps are keyed by platform already and their package bases are
    /// filed by architecture ([`base_key`]); what two solves share (a
    /// natively built stage, a cache mount) is kept once, as part of the
    /// image when it is for either.
    pub fn merged<'a>(parts: impl IntoIterator<Item = &'a Exportable>) -> Exportable {
        let mut out = Exportable::default();
        let (mut steps, mut bases, mut mounts) = (HashMap::new(), HashMap::new(), HashMap::new());
        for part in parts {
            merge_into(&mut out.steps, &mut steps, &part.steps, |s| s.key.to_string(), |s| &mut s.output);
            merge_into(&mut out.bases, &mut bases, &part.bases, ExportBase::key, |b| &mut b.output);
            merge_into(&mut out.mounts, &mut mounts, &part.mounts, |m| m.id.clone(), |m| &mut m.output);
        }
        out
    }
}

/// Appends each of `items` to `out` unless one with its key is there
/// (`at`: key → index in `out`); the one kept is part of the image when
/// either is.
fn merge_into<T: Clone>(
    out: &mut Vec<T>,
    at: &mut HashMap<String, usize>,
    items: &[T],
    key: impl Fn(&T) -> String,
    output: impl Fn(&mut T) -> &mut bool,
) {
    for item in items {
        let mut item = item.clone();
        match at.get(&key(&item)) {
            Some(&i) => {
                let o = *output(&mut item);
                *output(&mut out[i]) |= o;
            }
            None => {
                at.insert(key(&item), out.len());
                out.push(item);
            }
        }
    }
}

/// The cache record, on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    #[serde(default)]
    steps: BTreeMap<Digest, WireStep>,
    /// Package bases by [`base_key`].
    #[serde(default)]
    bases: BTreeMap<String, WireBase>,
    /// Package bases without their layers: what the bases of stages the
    /// cache has no steps of resolved to, so a reader keys those stages
    /// (and skips them when nothing reads them) without composing them;
    /// by [`base_key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    resolved: BTreeMap<String, WireBase>,
    /// Cache mount contents by mount id (`cache-mounts=true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    mounts: BTreeMap<String, WireStep>,
}

impl Record {
    /// A record of this kiln's format with nothing in it yet.
    fn empty() -> Record {
        Record {
            version: FORMAT_VERSION,
            steps: BTreeMap::new(),
            bases: BTreeMap::new(),
            resolved: BTreeMap::new(),
            mounts: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireStep {
    /// The step's layer: an index into the manifest's `layers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diff_id: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_key: Option<Digest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireBase {
    /// The composed image's manifest and config, byte for byte (their
    /// layers are among the cache manifest's).
    manifest: String,
    config: String,
    set: ComposedSet,
}

/// Where a blob of a cache can be fetched from.
#[derive(Debug, Clone)]
struct Origin {
    cache: Reference,
    size: u64,
}

/// The caches `--cache-from` names, read before the solve.
pub struct RemoteCache {
    client: Client,
    progress: Progress,
    steps: HashMap<Digest, StepRecord>,
    bases: HashMap<String, WireBase>,
    /// Bases known by manifest and config only (`Record::resolved`).
    resolved: HashMap<String, WireBase>,
    mounts: HashMap<String, LayerRecord>,
    blobs: HashMap<Digest, Origin>,
    fetched_blobs: AtomicU64,
    fetched_bytes: AtomicU64,
}

impl RemoteCache {
    /// Reads every cache of `from` (manifest and record, not the layers).
    /// A cache that cannot be used is skipped with a warning.
    pub fn load(
        client: &Client,
        store: &Store,
        from: &[CacheFrom],
        progress: &Progress,
    ) -> RemoteCache {
        let mut out = RemoteCache {
            client: Client::new(client.options().clone()).with_progress(progress),
            progress: progress.clone(),
            steps: HashMap::new(),
            bases: HashMap::new(),
            resolved: HashMap::new(),
            mounts: HashMap::new(),
            blobs: HashMap::new(),
            fetched_blobs: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
        };
        for f in from {
            match out.add(store, f) {
                Ok((steps, bases)) => {
                    progress.info(format!(
                        "cache {}: {steps} steps, {bases} package bases",
                        f.reference
                    ));
                }
                Err(e) => {
                    progress.warn(format!(
                        "--cache-from {}: not used, building without it: {e:#}",
                        f.reference
                    ));
                }
            }
        }
        out
    }

    /// Reads one cache; returns how many steps and bases it added.
    fn add(&mut self, store: &Store, from: &CacheFrom) -> Result<(usize, usize)> {
        let cache = Reference::parse(&from.reference)?;
        let s = self.client.session(&cache.registry)?;
        let fetched =
            registry::manifest::fetch(&self.client, &s, store, &cache, &cache.reference())?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&fetched.bytes).context("the cache manifest is not JSON")?;
        let Some(entries) = manifest["manifests"].as_array() else {
            return self.add_manifest(store, from, &cache, &manifest);
        };
        // An image index: each platform's image of a multi-platform build
        // with `--cache-to type=inline` carries its own steps. Entries
        // without a record (attestations, images built without one) are
        // skipped; an index none of whose images has one is no cache.
        let mut added = (0, 0);
        let mut first_error = None;
        for entry in entries {
            let one = (|| {
                let digest = entry["digest"]
                    .as_str()
                    .context("an index entry without a digest")?;
                let fetched = registry::manifest::fetch(&self.client, &s, store, &cache, digest)?;
                let manifest: serde_json::Value = serde_json::from_slice(&fetched.bytes)
                    .with_context(|| format!("the index's manifest {digest} is not JSON"))?;
                if manifest["manifests"].is_array() {
                    bail!("the index's entry {digest} is an index itself");
                }
                self.add_manifest(store, from, &cache, &manifest)
            })();
            match one {
                Ok((steps, bases)) => {
                    added.0 += steps;
                    added.1 += bases;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if added == (0, 0) => {
                Err(e.context("it is an image index and none of its images carries a kiln cache"))
            }
            _ => Ok(added),
        }
    }

    /// Reads one cache manifest: kiln's cache artifact, or an image with
    /// an inline cache. Returns how many steps and bases it added.
    fn add_manifest(
        &mut self,
        store: &Store,
        from: &CacheFrom,
        cache: &Reference,
        manifest: &serde_json::Value,
    ) -> Result<(usize, usize)> {
        let layers: Vec<Descriptor> = serde_json::from_value(manifest["layers"].clone())
            .context("the cache manifest's layers are not descriptors")?;
        // The record's layer indices count `layers` from `first`: the
        // artifact's record is its layer 0, an image's is in its config.
        let (record, first) = if manifest["artifactType"] == ARTIFACT_TYPE {
            let Some(record_desc) = layers
                .first()
                .filter(|d| d.media_type().to_string() == RECORD_MEDIA_TYPE)
            else {
                bail!("the cache manifest's first layer is not a {RECORD_MEDIA_TYPE}");
            };
            let record_digest = desc_digest(record_desc)?;
            registry::pull::blob(
                &self.client,
                store,
                cache,
                &record_digest,
                record_desc.size(),
                &Progress::quiet(),
            )
            .context("fetching the cache record")?;
            (parse_record(&store.read(&record_digest)?)?, 1)
        } else {
            (self.inline_record(store, cache, manifest)?, 0)
        };
        let digests: Vec<Digest> = layers
            .get(first..)
            .unwrap_or_default()
            .iter()
            .map(desc_digest)
            .collect::<Result<_>>()?;
        // A layer the registry lost (deleted, garbage-collected) would
        // fail the build when its bytes are needed: its steps are misses.
        let present = registry::pull::present(&self.client, cache, &digests)?;
        let mut missing = 0;
        // Manifest index → (blob, size, compression) of the layers present.
        let mut usable: HashMap<usize, (Digest, u64, Compression)> = HashMap::new();
        for (i, (d, ok)) in digests.iter().zip(present).enumerate() {
            let i = i + first;
            let desc = &layers[i];
            if !ok {
                missing += 1;
                continue;
            }
            // Only layers a step can stand on (a tar, as compressed).
            let Some(compression) = Compression::from_media_type(desc.media_type().as_ref()) else {
                continue;
            };
            usable.insert(i, (d.clone(), desc.size(), compression));
            self.blobs.entry(d.clone()).or_insert(Origin {
                cache: cache.clone(),
                size: desc.size(),
            });
        }
        if missing > 0 {
            self.progress.warn(format!(
                "--cache-from {}: {missing} of its layers are gone from the registry; the steps that made them will run",
                from.reference
            ));
        }
        let mut steps = 0;
        for (key, w) in record.steps {
            let layer = match (w.layer, w.diff_id) {
                (None, _) => None,
                (Some(i), Some(diff_id)) => match usable.get(&i) {
                    Some((blob, size, compression)) => Some(LayerRecord {
                        blob: blob.clone(),
                        size: *size,
                        diff_id,
                        compression: *compression,
                    }),
                    None => continue,
                },
                (Some(_), None) => continue,
            };
            if let std::collections::hash_map::Entry::Vacant(e) = self.steps.entry(key) {
                e.insert(StepRecord {
                    layer,
                    content_key: w.content_key,
                });
                steps += 1;
            }
        }
        for (id, w) in record.mounts {
            if let (Some(i), Some(diff_id)) = (w.layer, w.diff_id)
                && let Some((blob, size, compression)) = usable.get(&i)
            {
                self.mounts.entry(id).or_insert(LayerRecord {
                    blob: blob.clone(),
                    size: *size,
                    diff_id,
                    compression: *compression,
                });
            }
        }
        let mut bases = 0;
        for (reference, b) in record.bases {
            let Ok(m) = serde_json::from_str::<oci_spec::image::ImageManifest>(&b.manifest) else {
                continue;
            };
            let complete = m.layers().iter().all(|l| {
                desc_digest(l)
                    .map(|d| self.blobs.contains_key(&d))
                    .unwrap_or(false)
            });
            if complete && !self.bases.contains_key(&reference) {
                self.bases.insert(reference, b);
                bases += 1;
            } else if !complete {
                self.resolved.entry(reference).or_insert(b);
            }
        }
        for (reference, b) in record.resolved {
            self.resolved.entry(reference).or_insert(b);
        }
        Ok((steps, bases))
    }

    /// The record an image built with `--cache-to type=inline` carries in
    /// its config ([`INLINE_FIELD`]); an image without one is a miss.
    fn inline_record(
        &self,
        store: &Store,
        image: &Reference,
        manifest: &serde_json::Value,
    ) -> Result<Record> {
        let artifact = manifest["artifactType"].as_str().unwrap_or_default();
        let config: Option<Descriptor> = serde_json::from_value(manifest["config"].clone()).ok();
        let Some(config) = config.filter(|c| {
            matches!(
                c.media_type().to_string().as_str(),
                "application/vnd.oci.image.config.v1+json"
                    | "application/vnd.docker.container.image.v1+json"
            )
        }) else {
            bail!(
                "it is not a kiln cache (artifactType `{artifact}`, not {ARTIFACT_TYPE}) nor an image"
            );
        };
        let digest = desc_digest(&config)?;
        registry::pull::blob(
            &self.client,
            store,
            image,
            &digest,
            config.size(),
            &Progress::quiet(),
        )
        .context("fetching the image's config")?;
        let v: serde_json::Value =
            serde_json::from_slice(&store.read(&digest)?).context("the image config is not JSON")?;
        let Some(record) = v.get(INLINE_FIELD) else {
            bail!(
                "it is an image without kiln's inline cache, not a kiln cache: build it with --cache-to type=inline, or export a cache with --cache-to type=registry,ref=REF"
            );
        };
        parse_record_value(record.clone())
    }

    /// The record of step `key`, if a cache has it with a layer compressed
    /// as `compression` asks (see [`super::cache::StepCache::get`]).
    pub fn step(&self, key: &Digest, compression: Compression) -> Option<StepRecord> {
        let rec = self.steps.get(key)?;
        match &rec.layer {
            Some(l) if l.compression != compression => None,
            _ => Some(rec.clone()),
        }
    }

    /// Fills the empty cache mount dir `dir` of mount `id` with the
    /// contents a cache holds for it, if any: unpacked beside it, then
    /// renamed into place, so a concurrent step sees all or nothing.
    /// Returns whether it did.
    pub fn import_mount(&self, store: &Store, id: &str, dir: &std::path::Path) -> Result<bool> {
        let Some(l) = self.mounts.get(id) else {
            return Ok(false);
        };
        if dir.exists() {
            return Ok(false);
        }
        self.ensure_blob(store, &l.blob)?;
        let tmp = dir.with_extension(format!("import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        crate::oci::unpack::unpack_blob(
            store,
            &l.blob,
            l.compression,
            &tmp,
            crate::oci::unpack::UnpackOptions::new(crate::oci::unpack::Whiteouts::Apply),
        )
        .with_context(|| format!("importing cache mount {id:?}"))?;
        if std::fs::rename(&tmp, dir).is_err() {
            // Another step made the dir meanwhile: its contents stay.
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(false);
        }
        Ok(true)
    }

    /// The package base filed under `reference` for the Debian
    /// architecture `arch`, its manifest and config written into `store`
    /// (its layers are fetched when needed).
    pub fn base(
        &self,
        store: &Store,
        reference: &str,
        arch: &str,
    ) -> Result<Option<(Image, ComposedSet)>> {
        match self.bases.get(&base_key(reference, arch)) {
            Some(b) => Ok(Some(stored_base(store, reference, arch, b)?)),
            None => Ok(None),
        }
    }

    /// The package base filed under `reference` by what it resolved to
    /// only (no cache has its layers): its manifest and config written
    /// into `store`, enough to key the stages on it, not to build them.
    /// `None` when a cache has the whole base ([`RemoteCache::base`]).
    pub fn resolved_base(
        &self,
        store: &Store,
        reference: &str,
        arch: &str,
    ) -> Result<Option<(Image, ComposedSet)>> {
        let key = base_key(reference, arch);
        if self.bases.contains_key(&key) {
            return Ok(None);
        }
        match self.resolved.get(&key) {
            Some(b) => Ok(Some(stored_base(store, reference, arch, b)?)),
            None => Ok(None),
        }
    }

    /// Makes `digest` present in `store`: fetched from the cache that named
    /// it when missing. A blob no cache names is left to the caller.
    pub fn ensure_blob(&self, store: &Store, digest: &Digest) -> Result<()> {
        if store.contains(digest) {
            return Ok(());
        }
        let Some(o) = self.blobs.get(digest) else {
            return Ok(());
        };
        let n = registry::pull::blob(
            &self.client,
            store,
            &o.cache,
            digest,
            o.size,
            &self.progress,
        )
        .with_context(|| format!("fetching layer {digest} from the cache {}", o.cache))?;
        self.fetched_blobs.fetch_add(1, Ordering::Relaxed);
        self.fetched_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// [`RemoteCache::ensure_blob`] for each of `digests`, as many at once
    /// as the registry client transfers.
    pub fn ensure_blobs(&self, store: &Store, digests: &[Digest]) -> Result<()> {
        let queue = std::sync::Mutex::new(digests.iter());
        let workers = self
            .client
            .options()
            .parallel
            .clamp(1, digests.len().max(1));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                            let Some(d) = next else { return Ok(()) };
                            self.ensure_blob(store, d)?;
                        }
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a cache layer fetcher panicked"))
            })
        })
    }

    /// Whether a cache names `digest` (on which registry and repository).
    fn origin(&self, digest: &Digest) -> Option<&Reference> {
        self.blobs.get(digest).map(|o| &o.cache)
    }

    /// Layers fetched so far, and their bytes.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.fetched_blobs.load(Ordering::Relaxed),
            self.fetched_bytes.load(Ordering::Relaxed),
        )
    }
}

/// A record's package base, its manifest and config written into `store`.
fn stored_base(
    store: &Store,
    reference: &str,
    arch: &str,
    b: &WireBase,
) -> Result<(Image, ComposedSet)> {
    if b.set.lock.arch != arch {
        bail!(
            "the cache files the package base {reference} for {arch}, but its packages are for {}",
            b.set.lock.arch
        );
    }
    let config = store.put(b.config.as_bytes())?;
    let manifest = store.put(b.manifest.as_bytes())?;
    let m: oci_spec::image::ImageManifest = serde_json::from_str(&b.manifest)?;
    if desc_digest(m.config())? != config.digest {
        bail!("the cache's package base {reference} names another config than it carries");
    }
    let platform = crate::platform::Platform::from_debian_arch(&b.set.lock.arch)?;
    let mut desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(manifest.digest.to_oci())
        .size(manifest.size)
        .build()
        .context("building the package base's descriptor")?;
    desc.set_platform(Some(platform.to_oci()));
    let image = read_image(store, &desc, Some(&platform))?;
    Ok((image, b.set.clone()))
}

fn parse_record(bytes: &[u8]) -> Result<Record> {
    parse_record_value(serde_json::from_slice(bytes).context("the cache record is not JSON")?)
}

fn parse_record_value(v: serde_json::Value) -> Result<Record> {
    match v["version"].as_u64() {
        Some(n) if n == u64::from(FORMAT_VERSION) => {}
        Some(n) => bail!(
            "its record has format version {n}; this kiln reads version {FORMAT_VERSION} (export the cache again with this kiln)"
        ),
        None => bail!("its record has no format version"),
    }
    serde_json::from_value(v).context("the cache record does not parse")
}

/// A package base as a record carries it: manifest and config byte for
/// byte (their digests are its identity in the step keys).
fn wire_base(store: &Store, b: &ExportBase) -> Result<WireBase> {
    let manifest = String::from_utf8(store.read(&b.image.digest()?)?)
        .context("a package base manifest is not UTF-8")?;
    let config = String::from_utf8(store.read(&desc_digest(b.image.manifest.config())?)?)
        .context("a package base config is not UTF-8")?;
    Ok(WireBase {
        manifest,
        config,
        set: b.set.clone(),
    })
}

/// The image config field an image built with `--cache-to type=inline`
/// carries its cache record in (BuildKit's is `moby.buildkit.cache.v0`).
/// Its layer indices count the image's own layers from 0.
pub const INLINE_FIELD: &str = "kiln.cache";

/// `image` with the cache record of its own steps and package base (what
/// `mode=min` exports) in its config, under [`INLINE_FIELD`]: a new config
/// and manifest, the same layers. A step whose layer is not one of the
/// image's is left out.
pub fn with_inline_cache(store: &Store, image: &Image, ex: &Exportable) -> Result<Image> {
    let index: HashMap<Digest, usize> = image
        .manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| Ok((desc_digest(l)?, i)))
        .collect::<Result<_>>()?;
    let mut record = Record::empty();
    for s in ex.steps.iter().filter(|s| s.output) {
        let layer = match &s.record.layer {
            None => None,
            Some(l) => match index.get(&l.blob) {
                Some(&i) => Some((i, l.diff_id.clone())),
                None => continue,
            },
        };
        record.steps.insert(
            s.key.clone(),
            WireStep {
                layer: layer.as_ref().map(|(i, _)| *i),
                diff_id: layer.map(|(_, d)| d),
                content_key: s.record.content_key.clone(),
            },
        );
    }
    for b in &ex.bases {
        let inside = b
            .image
            .manifest
            .layers()
            .iter()
            .all(|l| desc_digest(l).is_ok_and(|d| index.contains_key(&d)));
        if b.output && inside {
            record.bases.insert(b.key(), wire_base(store, b)?);
        } else {
            record.resolved.insert(b.key(), wire_base(store, b)?);
        }
    }
    let config_desc = image.manifest.config();
    let mut config: serde_json::Value = serde_json::from_slice(&store.read(&desc_digest(config_desc)?)?)
        .context("the image config is not JSON")?;
    config
        .as_object_mut()
        .context("the image config is not a JSON object")?
        .insert(INLINE_FIELD.to_string(), serde_json::to_value(&record)?);
    let config_blob = put_json(store, &config)?;
    let mut manifest = image.manifest.clone();
    manifest.set_config(descriptor(config_desc.media_type().clone(), &config_blob));
    let manifest_blob = put_json(store, &manifest)?;
    let mut manifest_desc = descriptor(image.manifest_desc.media_type().clone(), &manifest_blob);
    manifest_desc.set_platform(image.manifest_desc.platform().clone());
    Ok(Image {
        manifest_desc,
        manifest,
        config: image.config.clone(),
    })
}

/// The cache artifact for `ex` as `mode` selects, written into `store`:
/// the manifest's descriptor and the layer blobs it names.
fn write_artifact(
    store: &Store,
    ex: &Exportable,
    mode: CacheMode,
    mounts: &[(String, LayerRecord)],
    available: &dyn Fn(&Digest) -> bool,
) -> Result<(Descriptor, Vec<Digest>)> {
    let keep = |output: bool| output || mode == CacheMode::Max;
    let mut layers: Vec<serde_json::Value> = Vec::new();
    let mut index: HashMap<Digest, usize> = HashMap::new();
    let mut add_layer = |digest: &Digest, size: u64, media_type: &str| -> usize {
        *index.entry(digest.clone()).or_insert_with(|| {
            layers.push(serde_json::json!({
                "mediaType": media_type,
                "digest": digest.to_string(),
                "size": size,
            }));
            // Index 0 is the record.
            layers.len()
        })
    };
    let mut record = Record::empty();
    for b in &ex.bases {
        let digests: Vec<Digest> = b
            .image
            .manifest
            .layers()
            .iter()
            .map(desc_digest)
            .collect::<Result<_>>()?;
        // The bases left out (or whose layers this machine lacks) are
        // carried by what they resolved to.
        if !keep(b.output) || !digests.iter().all(available) {
            record.resolved.insert(b.key(), wire_base(store, b)?);
            continue;
        }
        for l in b.image.manifest.layers() {
            add_layer(&desc_digest(l)?, l.size(), l.media_type().as_ref());
        }
        record.bases.insert(b.key(), wire_base(store, b)?);
    }
    for s in ex.steps.iter().filter(|s| keep(s.output)) {
        let wire = match &s.record.layer {
            None => WireStep {
                layer: None,
                diff_id: None,
                content_key: s.record.content_key.clone(),
            },
            Some(l) if available(&l.blob) => WireStep {
                layer: Some(add_layer(&l.blob, l.size, l.compression.media_type())),
                diff_id: Some(l.diff_id.clone()),
                content_key: s.record.content_key.clone(),
            },
            Some(_) => continue,
        };
        record.steps.insert(s.key.clone(), wire);
    }
    for (id, l) in mounts {
        record.mounts.insert(
            id.clone(),
            WireStep {
                layer: Some(add_layer(&l.blob, l.size, l.compression.media_type())),
                diff_id: Some(l.diff_id.clone()),
                content_key: None,
            },
        );
    }
    let record_blob = store.put(&serde_json::to_vec(&record)?)?;
    let empty = store.put(b"{}")?;
    let mut all = vec![serde_json::json!({
        "mediaType": RECORD_MEDIA_TYPE,
        "digest": record_blob.digest.to_string(),
        "size": record_blob.size,
    })];
    let blobs: Vec<Digest> = layers
        .iter()
        .filter_map(|l| l["digest"].as_str().and_then(|d| d.parse().ok()))
        .collect();
    all.extend(layers);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": empty.digest.to_string(),
            "size": empty.size,
            "data": "e30=",
        },
        "layers": all,
    });
    let blob = store.put(&serde_json::to_vec(&manifest)?)?;
    let desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(blob.digest.to_oci())
        .size(blob.size)
        .build()
        .context("building the cache manifest's descriptor")?;
    Ok((desc, blobs))
}

/// The cache mounts of `ex` as `mode` selects, each dir written as one
/// zstd layer (owners and modes kept; unchanged contents give the same
/// blob, which the registry then has already).
fn mount_layers(
    store: &Store,
    ex: &Exportable,
    mode: CacheMode,
    progress: &Progress,
) -> Result<Vec<(String, LayerRecord)>> {
    let mut out: Vec<(String, LayerRecord)> = Vec::new();
    for m in ex
        .mounts
        .iter()
        .filter(|m| m.output || mode == CacheMode::Max)
    {
        if out.iter().any(|(id, _)| *id == m.id) || !m.dir.is_dir() {
            continue;
        }
        let scan = crate::oci::layer::scan_dir(&m.dir, &crate::oci::layer::ScanOptions::default())
            .with_context(|| format!("reading cache mount {:?} ({})", m.id, m.dir.display()))?;
        if scan.entries.is_empty() {
            continue;
        }
        let layer = crate::oci::layer::write_layer(
            store,
            scan.entries,
            crate::oci::layer::LayerOptions {
                compression: Compression::Zstd,
                // Contents as they are: no clamping.
                epoch: i64::MAX,
            },
        )?;
        progress.info(format!("cache mount {:?}: {} bytes", m.id, layer.blob.size));
        out.push((m.id.clone(), LayerRecord::from(&layer)));
    }
    Ok(out)
}

/// Exports the steps of a finished build to the registry cache `to`:
/// missing blobs first (`HEAD`, then a mount from a repository known to
/// hold them, then an upload), the manifest last under the tag, so a
/// reader never sees a cache whose blobs are missing. Of concurrent
/// writers, the last complete one wins.
///
/// A layer the local store lacks (a step found in a `--cache-from` cache
/// and never needed locally) is pushed by mount from that cache when it is
/// on the same registry, else fetched; a layer neither has is left out
/// with its step.
pub fn export(
    client: &Client,
    store: &Store,
    from: Option<&RemoteCache>,
    ex: &Exportable,
    to: &CacheTo,
    mount_sources: HashMap<Digest, Vec<String>>,
    progress: &Progress,
) -> Result<PushSummary> {
    let target = Reference::parse(&to.reference)
        .with_context(|| format!("--cache-to ref {}", to.reference))?;
    let mut opts = PushOptions {
        mount_sources,
        ..PushOptions::default()
    };
    let mut remote: HashSet<Digest> = HashSet::new();
    let mut missing: BTreeSet<Digest> = BTreeSet::new();
    let keep = |output: bool| output || to.mode == CacheMode::Max;
    let wanted = ex
        .steps
        .iter()
        .filter(|s| keep(s.output))
        .filter_map(|s| s.record.layer.as_ref().map(|l| l.blob.clone()))
        .chain(ex.bases.iter().filter(|b| keep(b.output)).flat_map(|b| {
            b.image
                .manifest
                .layers()
                .iter()
                .filter_map(|l| desc_digest(l).ok())
        }));
    for d in wanted {
        if store.contains(&d) || remote.contains(&d) || missing.contains(&d) {
            continue;
        }
        match from.and_then(|f| f.origin(&d)) {
            Some(o) if o.registry == target.registry => {
                // Mounted (or found by HEAD) on the target, never downloaded.
                if o.repository != target.repository {
                    opts.mount_sources
                        .entry(d.clone())
                        .or_default()
                        .push(o.repository.clone());
                }
                remote.insert(d);
            }
            Some(_) => {
                if let Some(f) = from {
                    f.ensure_blob(store, &d)?;
                }
            }
            None => {
                missing.insert(d);
            }
        }
    }
    let mounts = if to.cache_mounts {
        mount_layers(store, ex, to.mode, progress)?
    } else {
        Vec::new()
    };
    let available = |d: &Digest| store.contains(d) || remote.contains(d);
    let (desc, _) = write_artifact(store, ex, to.mode, &mounts, &available)?;
    opts.remote_blobs = remote;
    registry::push::push(client, store, &desc, &target, &opts, progress)
        .with_context(|| format!("exporting the build cache to {target} (--cache-to)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_flags_parse_as_buildx_writes_them() {
        let to: CacheTo = "type=registry,ref=reg.example/app:cache,mode=max"
            .parse()
            .unwrap();
        assert_eq!(to.reference, "reg.example/app:cache");
        assert_eq!(to.mode, CacheMode::Max);
        let to: CacheTo = "type=registry,ref=reg.example/app:cache".parse().unwrap();
        assert_eq!((to.mode, to.cache_mounts), (CacheMode::Min, false));
        let to: CacheTo = "type=registry,ref=reg.example/app:cache,cache-mounts=true"
            .parse()
            .unwrap();
        assert!(to.cache_mounts);
        let from: CacheFrom = "reg.example/app:cache".parse().unwrap();
        assert_eq!(from.reference, "reg.example/app:cache");
        let from: CacheFrom = "type=registry,ref=reg.example/app:c".parse().unwrap();
        assert_eq!(from.reference, "reg.example/app:c");
    }

    #[test]
    fn bad_cache_flags_name_the_flag_and_the_fix() {
        let e = "type=local,dest=/tmp/c".parse::<CacheTo>().unwrap_err();
        assert!(format!("{e:#}").contains("--cache-to"), "{e:#}");
        assert!(format!("{e:#}").contains("type=registry"), "{e:#}");
        let e = "type=registry,ref=r.example/a:c,mode=all"
            .parse::<CacheTo>()
            .unwrap_err();
        assert!(format!("{e:#}").contains("mode=min or mode=max"), "{e:#}");
        let e = "type=registry".parse::<CacheFrom>().unwrap_err();
        assert!(format!("{e:#}").contains("no ref"), "{e:#}");
        let e = "type=registry,ref=r.example/a:c,compression=zstd"
            .parse::<CacheFrom>()
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown option `compression`"),
            "{e:#}"
        );
    }

    #[test]
    fn a_record_of_another_version_is_refused_with_the_reason() {
        for other in [1, 3] {
            let e = parse_record(format!(r#"{{"version": {other}, "steps": {{}}}}"#).as_bytes())
                .unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains(&format!("format version {other}")), "{e}");
            assert!(e.contains("export the cache again"), "{e}");
        }
        assert!(parse_record(b"{}").is_err());
        let r = parse_record(br#"{"version": 2}"#).unwrap();
        assert!(r.steps.is_empty() && r.bases.is_empty());
    }

    /// A package base of `arch` (Debian's name) with one layer.
    fn package_base(store: &Store, reference: &str, arch: &str) -> ExportBase {
        let platform = crate::platform::Platform::from_debian_arch(arch).unwrap();
        let l = layer(store, format!("{arch} packages").as_bytes(), Compression::Gzip);
        let mut builder = crate::oci::image::ImageBuilder::scratch(platform);
        builder.add_layer(&l.layer(), "packages");
        let image = builder.write(store, 0).unwrap();
        let lock = crate::packages::lock::Lockfile {
            version: 1,
            suite: "trixie".into(),
            arch: arch.into(),
            release_date: String::new(),
            base: Default::default(),
            recommends: false,
            requests: vec!["nodejs".into()],
            packages: Vec::new(),
        };
        ExportBase {
            output: true,
            reference: reference.into(),
            image,
            set: ComposedSet {
                lock,
                layers: Vec::new(),
                mirror: String::new(),
                extra_ca: Vec::new(),
            },
        }
    }

    #[test]
    /// Two platforms' solves, one export: a step both ran (a stage built
    /// natively for both) is kept once, in the image if either's is; each
    /// architecture's base is kept.
    fn merged_exports_keep_shared_steps_once_and_each_architectures_base() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let step = |output, key: &[u8]| ExportStep {
            output,
            key: Digest::of(key),
            record: StepRecord {
                layer: None,
                content_key: None,
            },
        };
        let reference = "debian-packages:trixie/minimal/nodejs";
        let amd64 = Exportable {
            steps: vec![step(false, b"npm ci"), step(true, b"runtime amd64")],
            bases: vec![package_base(&store, reference, "amd64")],
            mounts: Vec::new(),
        };
        let arm64 = Exportable {
            steps: vec![step(true, b"npm ci"), step(true, b"runtime arm64")],
            bases: vec![package_base(&store, reference, "arm64")],
            mounts: Vec::new(),
        };
        let both = Exportable::merged([&amd64, &arm64]);
        let steps: Vec<(Digest, bool)> =
            both.steps.iter().map(|s| (s.key.clone(), s.output)).collect();
        assert_eq!(
            steps,
            [
                (Digest::of(b"npm ci"), true),
                (Digest::of(b"runtime amd64"), true),
                (Digest::of(b"runtime arm64"), true),
            ]
        );
        let keys: Vec<String> = both.bases.iter().map(ExportBase::key).collect();
        assert_eq!(keys, [base_key(reference, "amd64"), base_key(reference, "arm64")]);
    }

    #[test]
    /// A package set's reference names no architecture: a cache of an
    /// amd64 build and an arm64 build of the same set keeps both, and a
    /// builder finds only its own architecture's (version 1 gave an arm64
    /// build the amd64 packages).
    fn a_package_base_is_found_for_its_own_architecture_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reference = "debian-packages:trixie/minimal/nodejs";
        let ex = Exportable {
            steps: Vec::new(),
            bases: vec![
                package_base(&store, reference, "amd64"),
                package_base(&store, reference, "arm64"),
            ],
            mounts: Vec::new(),
        };
        let all = |_: &Digest| true;
        let (desc, _) = write_artifact(&store, &ex, CacheMode::Max, &[], &all).unwrap();
        let m: serde_json::Value =
            serde_json::from_slice(&store.read(&desc_digest(&desc).unwrap()).unwrap()).unwrap();
        let rec_digest: Digest = m["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
        let rec = parse_record(&store.read(&rec_digest).unwrap()).unwrap();
        assert_eq!(rec.bases.len(), 2, "{:?}", rec.bases.keys());

        let mut cache = RemoteCache {
            client: Client::new(Default::default()),
            progress: Progress::quiet(),
            steps: HashMap::new(),
            bases: rec.bases.clone().into_iter().collect(),
            resolved: HashMap::new(),
            mounts: HashMap::new(),
            blobs: HashMap::new(),
            fetched_blobs: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
        };
        for arch in ["amd64", "arm64"] {
            let (image, set) = cache.base(&store, reference, arch).unwrap().unwrap();
            assert_eq!(set.lock.arch, arch);
            assert_eq!(image.config.architecture().to_string(), arch);
        }
        assert!(cache.base(&store, reference, "armhf").unwrap().is_none());
        assert!(cache.resolved_base(&store, reference, "armhf").unwrap().is_none());

        // A record that files a base under another architecture than its
        // packages' is refused, not used.
        let amd64 = rec.bases[&base_key(reference, "amd64")].clone();
        cache.bases = HashMap::from([(base_key(reference, "arm64"), amd64)]);
        let e = format!("{:#}", cache.base(&store, reference, "arm64").unwrap_err());
        assert!(e.contains("for arm64, but its packages are for amd64"), "{e}");
    }

    fn layer(store: &Store, bytes: &[u8], compression: Compression) -> LayerRecord {
        let b = store.put(bytes).unwrap();
        LayerRecord {
            blob: b.digest.clone(),
            size: b.size,
            diff_id: Digest::of(b"diff"),
            compression,
        }
    }

    #[test]
    fn the_artifact_keeps_output_steps_in_min_mode_and_all_in_max() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = layer(&store, b"runtime layer", Compression::Gzip);
        let b = layer(&store, b"build layer", Compression::Zstd);
        let step = |output, key: &[u8], l: &LayerRecord| ExportStep {
            output,
            key: Digest::of(key),
            record: StepRecord {
                layer: Some(l.clone()),
                content_key: None,
            },
        };
        let ex = Exportable {
            steps: vec![
                step(true, b"k1", &a),
                step(false, b"k2", &b),
                ExportStep {
                    output: true,
                    key: Digest::of(b"k3"),
                    record: StepRecord {
                        layer: None,
                        content_key: Some(Digest::of(b"ck")),
                    },
                },
            ],
            bases: Vec::new(),
            mounts: Vec::new(),
        };
        let all = |_: &Digest| true;
        for (mode, want) in [(CacheMode::Min, vec![&a]), (CacheMode::Max, vec![&a, &b])] {
            let (desc, blobs) = write_artifact(&store, &ex, mode, &[], &all).unwrap();
            let m: serde_json::Value =
                serde_json::from_slice(&store.read(&desc_digest(&desc).unwrap()).unwrap()).unwrap();
            assert_eq!(m["artifactType"], ARTIFACT_TYPE);
            assert_eq!(m["config"]["mediaType"], EMPTY_MEDIA_TYPE);
            let layers = m["layers"].as_array().unwrap();
            assert_eq!(layers[0]["mediaType"], RECORD_MEDIA_TYPE);
            let want_blobs: Vec<Digest> = want.iter().map(|l| l.blob.clone()).collect();
            assert_eq!(blobs, want_blobs, "{mode:?}");
            assert_eq!(layers.len(), 1 + want.len());
            assert_eq!(layers[1]["mediaType"], Compression::Gzip.media_type());
            let rec_digest: Digest = layers[0]["digest"].as_str().unwrap().parse().unwrap();
            let rec = parse_record(&store.read(&rec_digest).unwrap()).unwrap();
            assert_eq!(rec.steps.len(), 1 + want.len(), "{mode:?}");
            let k1 = &rec.steps[&Digest::of(b"k1")];
            assert_eq!(k1.layer, Some(1));
            assert_eq!(k1.diff_id, Some(a.diff_id.clone()));
            assert_eq!(
                rec.steps[&Digest::of(b"k3")].content_key,
                Some(Digest::of(b"ck"))
            );
        }
        // A layer neither the store nor a cache has is left out, with its step.
        let none = |d: &Digest| *d != a.blob;
        let (desc, blobs) = write_artifact(&store, &ex, CacheMode::Max, &[], &none).unwrap();
        assert_eq!(blobs, vec![b.blob.clone()]);
        let m: serde_json::Value =
            serde_json::from_slice(&store.read(&desc_digest(&desc).unwrap()).unwrap()).unwrap();
        let rec_digest: Digest = m["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
        let rec = parse_record(&store.read(&rec_digest).unwrap()).unwrap();
        assert!(!rec.steps.contains_key(&Digest::of(b"k1")));
        assert!(rec.steps.contains_key(&Digest::of(b"k2")));
    }

    #[test]
    fn type_inline_is_the_image_own_steps_only() {
        let to: CacheTo = "type=inline".parse().unwrap();
        assert!(to.inline && to.reference.is_empty() && to.mode == CacheMode::Min);
        assert!("type=inline,mode=min".parse::<CacheTo>().unwrap().inline);
        assert!(!"type=registry,ref=r.example/a:c".parse::<CacheTo>().unwrap().inline);
        for (bad, says) in [
            ("type=inline,mode=max", "mode=min"),
            ("type=inline,ref=r.example/a:c", "`ref` is not an option of type=inline"),
            ("type=inline,cache-mounts=true", "`cache-mounts`"),
        ] {
            let e = format!("{:#}", bad.parse::<CacheTo>().unwrap_err());
            assert!(e.contains("--cache-to") && e.contains(says), "{bad}: {e}");
        }
        let e = format!("{:#}", "type=inline".parse::<CacheFrom>().unwrap_err());
        assert!(e.contains("type=registry,ref=IMAGE"), "{e}");
    }

    #[test]
    fn an_inline_cache_is_the_image_with_its_steps_in_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = layer(&store, b"runtime layer", Compression::Gzip);
        let b = layer(&store, b"build layer", Compression::Zstd);
        let mut builder =
            crate::oci::image::ImageBuilder::scratch(crate::platform::Platform::linux("amd64", None));
        builder.add_layer(&a.layer(), "COPY app /app");
        let image = builder.write(&store, 0).unwrap();
        let step = |output, key: &[u8], layer: Option<&LayerRecord>| ExportStep {
            output,
            key: Digest::of(key),
            record: StepRecord {
                layer: layer.cloned(),
                content_key: None,
            },
        };
        let ex = Exportable {
            steps: vec![
                step(true, b"copy", Some(&a)),
                step(true, b"env", None),
                step(false, b"build", Some(&b)),
                // An output step whose layer is not the image's: left out.
                step(true, b"stray", Some(&b)),
            ],
            bases: Vec::new(),
            mounts: Vec::new(),
        };
        let inline = with_inline_cache(&store, &image, &ex).unwrap();
        assert_ne!(inline.digest().unwrap(), image.digest().unwrap());
        assert_eq!(inline.manifest.layers(), image.manifest.layers());
        assert_eq!(inline.manifest_desc.platform(), image.manifest_desc.platform());
        let raw = |i: &Image| -> serde_json::Value {
            let d = desc_digest(i.manifest.config()).unwrap();
            serde_json::from_slice(&store.read(&d).unwrap()).unwrap()
        };
        let (mut before, mut after) = (raw(&image), raw(&inline));
        let record = after.as_object_mut().unwrap().remove(INLINE_FIELD).unwrap();
        assert_eq!(after, before.take(), "the rest of the config is unchanged");
        let rec = parse_record_value(record).unwrap();
        let keys: Vec<&Digest> = rec.steps.keys().collect();
        let mut want = [Digest::of(b"copy"), Digest::of(b"env")];
        want.sort();
        assert_eq!(keys, want.iter().collect::<Vec<_>>());
        // Indices count the image's layers from 0.
        let copy = &rec.steps[&Digest::of(b"copy")];
        assert_eq!((copy.layer, copy.diff_id.clone()), (Some(0), Some(a.diff_id.clone())));
        assert_eq!(rec.steps[&Digest::of(b"env")].layer, None);
    }
}
