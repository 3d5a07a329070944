//! The solver: executes a build graph, running only the steps whose cache
//! key misses, stages in parallel when they do not depend on each other.
//!
//! | file | owns |
//! |---|---|
//! | [`cache`] | the step cache (key → layer) |
//! | [`rootfs`] | a read-only union view of a stage's layers |
//! | [`copy`] | COPY/ADD → layer entries, Docker's destination rules |
//! | [`workdir`] | WORKDIR's directory, owned by the current USER |
//! | [`add`] | ADD's archive extraction (tar, gzip, bzip2, xz, zstd) |
//! | [`download`] | ADD's URL downloads, verified against `--checksum` |
//! | [`mounts`] | `RUN --mount` sources from another stage or image |
//! | [`lazy`] | which stages to build: a stage only read is skipped when its readers are cached |
//! | `schedule` | when each package base composes and each stage builds: as soon as what it needs is ready |
//! | [`remote`] | the registry as a shared step cache (`--cache-to`, `--cache-from`) |
//! | `step_mounts` | a RUN step's mounts → the sandbox's, with the temp files they bind |
//!
//! Each stage's state is an [`ImageBuilder`] (layers + history), the graph
//! config the steps build up, and the layers as cache records (for
//! snapshots). `Run` steps run in the sandbox on the stage's snapshots;
//! `Copy` steps read the context or another stage through [`rootfs::RootView`].

pub mod add;
pub mod cache;
pub mod copy;
pub mod download;
pub mod lazy;
pub mod mounts;
pub mod remote;
pub mod rootfs;
mod schedule;
mod step_mounts;
pub mod trust;
pub mod workdir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};

use crate::Result;
use crate::context::Context;
use crate::graph::key::{CacheKeys, ImageDigests, StageKeys};
use crate::graph::{self, Base, ConfigChange, CopyFrom, Graph, ImageConfig, Op, Step};
use crate::oci::image::{Image, ImageBuilder, read_image};
use crate::oci::layer::{Entry, LayerOptions, canonicalize, write_canonical_layer, write_layer};
use crate::oci::{Digest, ImageStore, Store};
use crate::packages::image::ComposedSet;
use crate::platform::Platform;
use crate::progress::{Progress, TAIL_LINES};
use crate::sandbox::{self, Sandbox, Snapshots};

use cache::{LayerRecord, StepCache, StepRecord};
use rootfs::RootView;

/// What every stage of one solve shares: the graph and its keys, the
/// resolved bases, the stages built so far, the counters.
#[derive(Clone, Copy)]
struct StageBuild<'a> {
    g: &'a Graph,
    keys: &'a CacheKeys,
    bases: &'a BTreeMap<String, Image>,
    /// Built stages by index (`None` until built).
    states: &'a Mutex<Vec<Option<StageState>>>,
    stats: &'a Mutex<SolveStats>,
    opts: &'a SolveOptions<'a>,
    progress: &'a Progress,
    /// The stages whose layers are in the target's image.
    output: &'a BTreeSet<usize>,
    /// Every step's record as the solve found or made it, for `--cache-to`.
    exported: &'a Mutex<Vec<remote::ExportStep>>,
}

impl StageBuild<'_> {
    /// Notes a step's record for a later `--cache-to`.
    fn note(&self, stage: usize, key: &Digest, record: &StepRecord) {
        self.exported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(remote::ExportStep {
                output: self.output.contains(&stage),
                key: key.clone(),
                record: record.clone(),
            });
    }
}

/// Everything the solver needs besides the graph.
pub struct SolveOptions<'a> {
    /// The build context (for `Copy` from the context and bind mounts).
    pub context: Option<&'a Mutex<Context>>,
    pub layer: LayerOptions,
    /// Run every step even when its key is cached.
    pub no_cache: bool,
    /// Resolve package bases again (not the sets earlier builds resolved)
    /// and pull base images even when the local store has them.
    pub pull: bool,
    /// Secret values by id (`--secret id=X,src=FILE`); never stored, and
    /// masked in everything the solve's progress handle shows.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Set to cancel running steps (Ctrl-C).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where base images are pulled from when not in the local store.
    pub registry: Option<&'a crate::registry::Client>,
    /// The `kiln.lock` sets that locked package bases name (by
    /// [`graph::PackageSet::lock`] digest).
    pub package_locks: BTreeMap<Digest, crate::packages::lock::Lockfile>,
    /// The `security.insecure` entitlement (`--allow security.insecure`):
    /// `RUN --security=insecure` steps run privileged. Without it such a
    /// step fails the build before anything runs.
    pub allow_insecure: bool,
    /// The network of `RUN --network=default` steps (and of every step of
    /// an auto build).
    pub network: sandbox::Network,
    /// BuildKit's `network.host` entitlement: `RUN --network=host` runs on
    /// the host's network instead of failing.
    pub allow_host_network: bool,
    /// The host's CA bundle (PEM) that [`graph::Mount::HostCa`] mounts
    /// ([`trust::host_bundle`], read once per build); never stored.
    pub host_ca: Option<Arc<Vec<u8>>>,
    /// `--add-host HOST:IP`: lines added to every RUN step's `/etc/hosts`
    /// (not part of the cache key, like the network itself).
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// Images in [`Solver::store`] by the name a Dockerfile uses for them
    /// (`--build-context NAME=DIR`): `FROM NAME` and `COPY --from=NAME`
    /// take these before the local image store or a registry.
    pub local_images: BTreeMap<String, oci_spec::image::Descriptor>,
}

/// What a finished build step did, for tests and summaries.
#[derive(Debug, Clone, Default)]
pub struct SolveStats {
    pub steps_run: usize,
    pub steps_cached: usize,
}

/// The result of a solve: the target's image, written into the store.
pub struct Solved {
    pub image: Image,
    pub stats: SolveStats,
    /// The Debian package sets the solve composed (build stages' too):
    /// what the SBOM lists (`crate::sbom`).
    pub package_sets: Vec<ComposedSet>,
    /// The steps and package bases a `--cache-to` can export.
    pub cache: remote::Exportable,
}

/// A stage's state while it is being built.
#[derive(Clone)]
struct StageState {
    builder: ImageBuilder,
    config: ImageConfig,
    layers: Vec<LayerRecord>,
    /// How this stage's new layers are written ([`stage_layer`]).
    layer: LayerOptions,
}

/// The ids of a RUN step's cache mounts that are not seeded from a stage
/// or image (those are one per source, see `step_mounts`): the dirs a
/// registry cache can carry between machines.
fn plain_cache_mounts(run: &graph::Run) -> Vec<String> {
    run.mounts
        .iter()
        .filter_map(|m| match m {
            graph::Mount::Cache {
                target,
                id,
                from: None,
                ..
            } => Some(if id.is_empty() {
                target.clone()
            } else {
                id.clone()
            }),
            _ => None,
        })
        .collect()
}

/// The stages whose layers end up in the target's image: the target and
/// the stages it stands on (`FROM stage`). Other stages' layers are only
/// read (by COPY --from, mounts) and cached.
fn output_stages(g: &Graph, target: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut at = Some(target);
    while let Some(i) = at {
        if !out.insert(i) {
            break;
        }
        at = match g.stages.get(i).map(|s| &s.base) {
            Some(Base::Stage(parent)) => Some(*parent),
            _ => None,
        };
    }
    out
}

/// Layers of output stages use the requested compression; the others are
/// never exported, so they are written with zstd, which compresses and
/// unpacks several times faster than gzip (a Python toolchain base is
/// ~300 MB: 15 s of gzip on two cores). buildah and BuildKit keep such
/// layers uncompressed; zstd keeps them small in the cache as well.
fn stage_layer(opts: &SolveOptions<'_>, output: bool) -> LayerOptions {
    if output {
        opts.layer
    } else {
        LayerOptions {
            compression: crate::oci::Compression::Zstd,
            ..opts.layer
        }
    }
}

/// The engine: stores, step cache, sandbox.
pub struct Solver {
    pub store: Store,
    pub images: ImageStore,
    pub steps: StepCache,
    pub snapshots: Snapshots,
    pub sandbox: Sandbox,
    /// The registry caches of `--cache-from`, read before the solve: a
    /// step missing locally is looked up there, its layer fetched when
    /// its bytes are needed.
    pub remote: Option<remote::RemoteCache>,
}

impl Solver {
    /// The default locations under the cache and data dirs.
    pub fn open_default(progress: &Progress) -> Result<Solver> {
        Ok(Solver {
            store: crate::oci::cache_store()?,
            images: ImageStore::open_default()?,
            steps: StepCache::open_default()?,
            snapshots: Snapshots::open_default()?,
            sandbox: Sandbox::new(progress)?,
            remote: None,
        })
    }

    /// Builds `target` of `graph`.
    pub fn solve(
        &self,
        g: &Graph,
        target: usize,
        opts: &SolveOptions<'_>,
        progress: &Progress,
    ) -> Result<Solved> {
        // Masked from the start: a secret given to a step as a variable
        // (`env=`) is no file mount the sandbox could know about.
        for value in opts.secrets.values() {
            progress.add_secret(value);
        }
        let order = graph::deps::build_order(g, target)?;
        if !opts.allow_insecure {
            check_entitlements(g, &order)?;
        }
        check_platforms(g, &order)?;
        // Resolve every image the needed stages read, then key the graph.
        let mut bases: BTreeMap<String, Image> = BTreeMap::new();
        // Package bases compose in parallel (index reads and .deb
        // downloads of a build and a runtime stage overlap).
        let output = output_stages(g, target);
        let mut sets: BTreeMap<String, (&graph::PackageSet, &Platform, LayerOptions)> =
            BTreeMap::new();
        for &i in &order {
            if let Base::Packages(p) = &g.stages[i].base {
                let layer = stage_layer(opts, output.contains(&i));
                let set = sets
                    .entry(p.reference())
                    .or_insert((p, &g.stages[i].platform, layer));
                // A set an output stage stands on is written as asked.
                if output.contains(&i) {
                    set.2 = layer;
                }
            }
        }
        // What the progress header counts: every package set and every
        // shown step of the stages to build.
        let total_steps = sets.len()
            + order
                .iter()
                .map(|&i| g.stages[i].steps.iter().filter(|s| shown(&s.op)).count())
                .sum::<usize>();
        progress.steps(total_steps as u64);
        let mut export = remote::Exportable::default();
        for &i in &order {
            for step in &g.stages[i].steps {
                let Op::Run(run) = &step.op else { continue };
                for id in plain_cache_mounts(run) {
                    export.mounts.push(remote::ExportMount {
                        output: output.contains(&i),
                        dir: self.sandbox.cache_mount_dir(&id),
                        id,
                    });
                }
            }
        }
        for &i in &order {
            let stage = &g.stages[i];
            let mut refs = Vec::new();
            if let Base::Image { reference } = &stage.base {
                refs.push(reference.clone());
            }
            for step in &stage.steps {
                match &step.op {
                    Op::Copy(c) => {
                        if let CopyFrom::Image(r) = &c.from {
                            refs.push(r.clone());
                        }
                    }
                    Op::Run(r) => {
                        for m in &r.mounts {
                            if let graph::Mount::Bind {
                                from: CopyFrom::Image(img),
                                ..
                            }
                            | graph::Mount::Cache {
                                from: Some(CopyFrom::Image(img)),
                                ..
                            } = m
                            {
                                refs.push(img.clone());
                            }
                        }
                    }
                    _ => {}
                }
            }
            for r in refs {
                if let std::collections::btree_map::Entry::Vacant(slot) = bases.entry(r) {
                    let img = self.resolve_image(slot.key(), &stage.platform, opts, progress)?;
                    slot.insert(img);
                }
            }
        }
        // `ADD <url>` without `--checksum` is keyed by what the URL serves
        // now (as in BuildKit): download before keying.
        let resolved;
        let g = match self.download_unpinned(g, &order, progress)? {
            Some(owned) => {
                resolved = owned;
                &resolved
            }
            None => g,
        };
        let digests = |bases: &BTreeMap<String, Image>| -> Result<ImageDigests> {
            bases
                .iter()
                .map(|(r, img)| Ok((r.clone(), img.digest()?)))
                .collect()
        };
        let stats = Mutex::new(SolveStats::default());
        let exported = Mutex::new(Vec::new());
        // With a registry cache, a stage whose readers are all cached is not
        // built ([`lazy`]): to know which, the bases are composed (or found
        // by what they resolved to) and the whole graph keyed first. The
        // bases only build stages stand on that the cache knows by their
        // resolution wait: they are composed below if a stage on them must
        // be built. Without one, each base composes and each stage starts
        // as soon as what it needs is ready (`schedule`).
        let mut composed_early: BTreeMap<String, (Image, ComposedSet)> = BTreeMap::new();
        let mut skipped: BTreeSet<usize> = BTreeSet::new();
        let mut keys_early: Option<CacheKeys> = None;
        if self.remote.is_some() {
            let mut provisional = self.resolved_bases(g, &sets, &output, opts, progress);
            let mut compose: Vec<String> = Vec::new();
            for &i in &order {
                if let Base::Packages(p) = &g.stages[i].base
                    && !provisional.contains_key(&p.reference())
                    && !compose.contains(&p.reference())
                {
                    compose.push(p.reference());
                }
            }
            loop {
                composed_early.extend(self.compose_sets(&sets, &compose, opts, progress)?);
                let mut all = bases.clone();
                for (r, (img, _)) in composed_early.iter().chain(&provisional) {
                    all.insert(r.clone(), img.clone());
                }
                let keys = graph::key::compute(g, target, &digests(&all)?)?;
                let build = lazy::needed_stages(g, &order, &keys, opts.no_cache, &|i, k| {
                    self.cached(k, stage_layer(opts, output.contains(&i)).compression)
                })?;
                // A stage to build on a base known only by its resolution:
                // the base is composed now, and the keys computed again.
                compose = Vec::new();
                for &i in &build {
                    if let Base::Packages(p) = &g.stages[i].base
                        && provisional.remove(&p.reference()).is_some()
                    {
                        compose.push(p.reference());
                    }
                }
                if compose.is_empty() {
                    skipped = order.iter().copied().filter(|i| !build.contains(i)).collect();
                    keys_early = Some(keys);
                    break;
                }
            }
            // The bases of stages not built stay known by their resolution
            // (their keys and the export need no more).
            composed_early.extend(provisional);
            if let Some(keys) = &keys_early {
                for &i in &skipped {
                    self.skip_stage(g, i, keys, opts, progress, &stats, &exported)?;
                }
            }
        }

        // Package bases compose in parallel (index reads and .deb
        // downloads of a build and a runtime stage overlap), and each stage
        // is keyed and built as soon as its own base is composed and the
        // stages it reads are built (`schedule`).
        for (r, (img, _)) in &composed_early {
            bases.insert(r.clone(), img.clone());
        }
        let bases = Mutex::new(bases);
        // The sets left to compose share their .deb reads, and write their
        // layers in the order the stages need them (`order` is
        // dependencies first).
        let mut rank: BTreeMap<String, usize> = BTreeMap::new();
        for &i in order.iter().filter(|i| !skipped.contains(i)) {
            if let Base::Packages(p) = &g.stages[i].base
                && !composed_early.contains_key(&p.reference())
            {
                let next = rank.len();
                rank.entry(p.reference()).or_insert(next);
            }
        }
        let reads = Arc::new(crate::packages::shared::SharedReads::new(rank.len()));
        let composed: Mutex<BTreeMap<String, (Image, ComposedSet)>> = Mutex::new(composed_early);
        let keys: Mutex<Vec<Option<StageKeys>>> = Mutex::new(match &keys_early {
            Some(k) => k.stages.clone(),
            None => vec![None; g.stages.len()],
        });
        let states: Mutex<Vec<Option<StageState>>> = Mutex::new(vec![None; g.stages.len()]);
        schedule::Schedule::new(g, &order)
            .without(&skipped)
            .run(|job| match job {
                schedule::Job::Base(r) => {
                    if relock(&composed).contains_key(r) {
                        return Ok(());
                    }
                    let (p, platform, layer) = sets
                        .get(r)
                        .with_context(|| format!("package base {r} is not in the graph"))?;
                    let share = crate::packages::compose::Sharing {
                        reads: reads.clone(),
                        rank: rank.get(r).copied().unwrap_or_default(),
                    };
                    let built =
                        self.compose_packages(p, platform, *layer, share, opts, progress)?;
                    relock(&bases).insert(r.clone(), built.0.clone());
                    relock(&composed).insert(r.clone(), built);
                    Ok(())
                }
                schedule::Job::Stage(i) => {
                    // What this stage reads is ready: key it, then build it
                    // over a copy of the bases and keys as they are now.
                    let bases_now = relock(&bases).clone();
                    let digests = digests(&bases_now)?;
                    let keys_now = {
                        let mut keys = relock(&keys);
                        keys[*i] = Some(graph::key::stage_keys(g, *i, &digests, &keys)?);
                        CacheKeys {
                            stages: keys.clone(),
                        }
                    };
                    let cx = StageBuild {
                        g,
                        keys: &keys_now,
                        bases: &bases_now,
                        states: &states,
                        stats: &stats,
                        opts,
                        progress,
                        output: &output,
                        exported: &exported,
                    };
                    let st = self.build_stage(&cx, *i, stage_layer(opts, output.contains(i)))?;
                    relock(&states)[*i] = Some(st);
                    Ok(())
                }
            })?;
        let bases = bases.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut package_sets = Vec::new();
        for (r, (img, set)) in composed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            export.bases.push(remote::ExportBase {
                output: output
                    .iter()
                    .any(|&i| matches!(&g.stages[i].base, Base::Packages(p) if p.reference() == r)),
                reference: r,
                image: img,
                set: set.clone(),
            });
            package_sets.push(set);
        }
        let mut states = states.into_inner().unwrap_or_else(|e| e.into_inner());
        let st = states[target]
            .take()
            .context("the target stage was not built")?;
        let mut builder = st.builder;
        st.config.apply_to_oci(builder.config_mut());
        let image = builder.write(&self.store, opts.layer.epoch)?;
        // The image's layers found in a registry cache and not needed by
        // any step are fetched now: the exports read them.
        if let Some(r) = &self.remote {
            let (_, before) = r.fetched();
            let digests = image
                .manifest
                .layers()
                .iter()
                .map(crate::oci::image::desc_digest)
                .collect::<Result<Vec<_>>>()?;
            r.ensure_blobs(&self.store, &digests)?;
            let (n, b) = r.fetched();
            if n > 0 {
                progress.info(format!(
                    "fetched {n} layers ({b} bytes) from the registry cache ({} for the image's own layers)",
                    b - before
                ));
            }
        }
        let layers = states.iter().flatten().flat_map(|s| &s.layers);
        self.record_use(
            layers.chain(&st.layers).map(|l| &l.blob),
            bases.values().chain([&image]),
        );
        export.steps = exported.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(Solved {
            image,
            stats: stats.into_inner().unwrap_or_else(|e| e.into_inner()),
            package_sets,
            cache: export,
        })
    }

    /// A stage not built ([`lazy`]): its line, and the steps it has
    /// cached shown as cached (as on a warm rebuild that built it) and
    /// noted for a `mode=max` export.
    #[allow(clippy::too_many_arguments)]
    fn skip_stage(
        &self,
        g: &Graph,
        i: usize,
        keys: &CacheKeys,
        opts: &SolveOptions<'_>,
        progress: &Progress,
        stats: &Mutex<SolveStats>,
        exported: &Mutex<Vec<remote::ExportStep>>,
    ) -> Result<()> {
        let stage = &g.stages[i];
        let name = stage.display_name(i);
        progress.info(lazy::skipped_line(&name));
        // Never part of the image: its layers are zstd ([`stage_layer`]).
        let compression = stage_layer(opts, false).compression;
        let found = lazy::cached_steps(g, i, keys, &|_, k| self.cached(k, compression))?;
        let total = stage.steps.iter().filter(|s| shown(&s.op)).count();
        let steps = &progress.for_steps();
        let mut shown_at = None;
        for (j, key, record) in found {
            if shown_at != Some(j) {
                shown_at = Some(j);
                let step = &stage.steps[j];
                let number = stage.steps[..=j].iter().filter(|s| shown(&s.op)).count();
                let text = step
                    .origin
                    .as_ref()
                    .map(|o| o.text.clone())
                    .unwrap_or_else(|| describe(&step.op));
                steps
                    .task(format!("[{name} {number}/{total}] {}", one_line(&text)))
                    .finish("cached");
                stats.lock().unwrap_or_else(|e| e.into_inner()).steps_cached += 1;
            }
            exported
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(remote::ExportStep {
                    output: false,
                    key,
                    record,
                });
        }
        Ok(())
    }

    /// Records that this build used the layers of its stages and the blobs
    /// of its base images and result (their mtime: the cache GC removes
    /// least recently used first). A cached step's record is touched when
    /// it is found; its layer may be shared, so it is touched here.
    fn record_use<'a>(
        &self,
        layers: impl Iterator<Item = &'a Digest>,
        images: impl Iterator<Item = &'a Image>,
    ) {
        let mut seen = BTreeSet::new();
        for d in layers {
            if seen.insert(d.clone()) {
                self.store.touch(d);
            }
        }
        for img in images {
            let config = crate::oci::image::desc_digest(img.manifest.config()).ok();
            for d in [img.digest().ok(), config].into_iter().flatten().chain(
                img.manifest
                    .layers()
                    .iter()
                    .filter_map(|l| crate::oci::image::desc_digest(l).ok()),
            ) {
                if seen.insert(d.clone()) {
                    self.store.touch(&d);
                }
            }
        }
    }

    /// A copy of `g` whose `ADD <url>` items without a checksum carry the
    /// digest of their content, downloaded into the store; `None` when
    /// there are none.
    fn download_unpinned(
        &self,
        g: &Graph,
        order: &[usize],
        progress: &Progress,
    ) -> Result<Option<Graph>> {
        let mut out: Option<Graph> = None;
        let http = crate::packages::fetch::Http::new();
        // One download per URL and build, however many steps name it.
        let mut seen: BTreeMap<String, Digest> = BTreeMap::new();
        for &i in order {
            for j in 0..g.stages[i].steps.len() {
                let step = &g.stages[i].steps[j];
                let Op::Copy(c) = &step.op else { continue };
                for (k, item) in c.items.iter().enumerate() {
                    let graph::CopyItem::Url {
                        url,
                        checksum: None,
                        digest: None,
                    } = item
                    else {
                        continue;
                    };
                    let d = match seen.get(url) {
                        Some(d) => d.clone(),
                        None => {
                            let task = progress.task(format!("[download] {url}"));
                            let d = download::fetch(&self.store, &http, url, None)
                                .with_context(|| format!("ADD {url} ({})", origin_of(step)))?;
                            task.finish("done");
                            seen.insert(url.clone(), d.clone());
                            d
                        }
                    };
                    let owned = out.get_or_insert_with(|| g.clone());
                    if let Op::Copy(c) = &mut owned.stages[i].steps[j].op
                        && let graph::CopyItem::Url { digest, .. } = &mut c.items[k]
                    {
                        *digest = Some(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The files holding the content of the URLs `c` adds: blobs in the
    /// store, downloaded (and verified against `--checksum`) when missing.
    fn downloads(&self, c: &graph::Copy) -> Result<BTreeMap<String, PathBuf>> {
        let mut out = BTreeMap::new();
        let http = crate::packages::fetch::Http::new();
        for item in &c.items {
            if let graph::CopyItem::Url {
                url,
                checksum,
                digest,
            } = item
            {
                let d = match digest {
                    Some(d) if self.store.contains(d) => d.clone(),
                    _ => download::fetch(&self.store, &http, url, checksum.as_deref())?,
                };
                out.insert(url.clone(), self.store.blob_path(&d));
            }
        }
        Ok(out)
    }

    /// The package bases of `sets` that only stages outside the image
    /// stand on and that a registry cache knows by what they resolved to
    /// ([`remote::RemoteCache::resolved_base`]): shown as cached, composed
    /// only if a stage on them is built.
    fn resolved_bases(
        &self,
        g: &Graph,
        sets: &BTreeMap<String, (&graph::PackageSet, &Platform, LayerOptions)>,
        output: &BTreeSet<usize>,
        opts: &SolveOptions<'_>,
        progress: &Progress,
    ) -> BTreeMap<String, (Image, ComposedSet)> {
        let mut out = BTreeMap::new();
        let Some(remote) = &self.remote else {
            return out;
        };
        if opts.pull || opts.no_cache {
            return out;
        }
        for (r, (p, platform, _)) in sets {
            let in_image = output
                .iter()
                .any(|&i| matches!(&g.stages[i].base, Base::Packages(q) if q.reference() == *r));
            if in_image {
                continue;
            }
            let found = platform
                .debian_arch()
                .and_then(|arch| remote.resolved_base(&self.store, r, arch));
            match found {
                Ok(Some(found)) => {
                    progress
                        .for_steps()
                        .task(packages_label(p))
                        .finish("cached");
                    out.insert(r.clone(), found);
                }
                Ok(None) => {}
                Err(e) => progress.warn(format!(
                    "the registry cache's package base {r} is not usable, composing it: {e:#}"
                )),
            }
        }
        out
    }

    /// Composes the package sets `which` (references, in the order the
    /// build needs them) in parallel, sharing their .deb reads.
    fn compose_sets(
        &self,
        sets: &BTreeMap<String, (&graph::PackageSet, &Platform, LayerOptions)>,
        which: &[String],
        opts: &SolveOptions<'_>,
        progress: &Progress,
    ) -> Result<BTreeMap<String, (Image, ComposedSet)>> {
        let reads = Arc::new(crate::packages::shared::SharedReads::new(which.len()));
        let composed: Vec<(String, Result<(Image, ComposedSet)>)> = std::thread::scope(|s| {
            let handles: Vec<_> = which
                .iter()
                .enumerate()
                .filter_map(|(rank, r)| {
                    let (p, platform, layer) = *sets.get(r)?;
                    let share = crate::packages::compose::Sharing {
                        reads: reads.clone(),
                        rank,
                    };
                    Some((
                        r.clone(),
                        s.spawn(move || {
                            self.compose_packages(p, platform, layer, share, opts, progress)
                        }),
                    ))
                })
                .collect();
            handles
                .into_iter()
                .map(|(r, h)| (r, h.join().expect("compose thread panicked")))
                .collect()
        });
        composed
            .into_iter()
            .map(|(r, built)| Ok((r, built?)))
            .collect()
    }

    /// A stage base made of Debian packages, composed (or found in the
    /// package layer cache) into the store.
    fn compose_packages(
        &self,
        p: &graph::PackageSet,
        platform: &Platform,
        layer: LayerOptions,
        share: crate::packages::compose::Sharing,
        opts: &SolveOptions<'_>,
        progress: &Progress,
    ) -> Result<(Image, ComposedSet)> {
        use crate::packages::{compose::ComposeOptions, image};
        // Composing until this returns, however it does: the sets ranked
        // after it wait for that to write their layers.
        let reads = share.reads.clone();
        let _turn = reads.turn(share.rank);
        let mut req = packages_request(p, platform)?;
        req.pull = opts.pull;
        let lock = match &p.lock {
            Some(d) => Some(opts.package_locks.get(d).cloned().with_context(|| {
                format!(
                    "the package set {} names lock {d}, which the build was not given",
                    p.packages.join(" ")
                )
            })?),
            None => None,
        };
        let task = progress.for_steps().task(packages_label(p));
        // A registry cache's base is this set as another builder resolved
        // and composed it: reused like a set resolved here before, unless
        // `--pull` asks for the archive's current one.
        if !opts.pull
            && !opts.no_cache
            && let Some(remote) = &self.remote
        {
            match remote.base(&self.store, &p.reference(), &req.repo.arch) {
                Ok(Some(found)) => {
                    task.finish("cached");
                    return Ok(found);
                }
                Ok(None) => {}
                Err(e) => progress.warn(format!(
                    "the registry cache's package base {} is not usable, composing it: {e:#}",
                    p.reference()
                )),
            }
        }
        // The downloads and the layers (one per package group) are parts
        // of this step: the terminal shows them on its line.
        let parts = progress.under(&task);
        let built = image::build(
            &self.store,
            &req,
            lock,
            &ComposeOptions {
                layer,
                extra_ca: p
                    .extra_ca
                    .iter()
                    .map(|(n, pem)| (n.clone(), pem.clone().into_bytes()))
                    .collect(),
                // Every stage on a package base runs steps on it (a COPY
                // reads its dirs too): snapshot the layers as they are written.
                snapshots: Some(self.snapshots.clone()),
                shared: Some(share),
                ..ComposeOptions::default()
            },
            &parts,
        )
        .with_context(|| {
            format!(
                "composing Debian packages {} from {}",
                p.packages.join(" "),
                p.suite
            )
        })?;
        if let Some(note) = built.set.stale_note() {
            progress.info(format!(
                "[packages] {}: {note}",
                one_line(&p.packages.join(" "))
            ));
        }
        task.finish(if built.composed.cached {
            "cached"
        } else {
            "done"
        });
        let set = ComposedSet {
            lock: built.lock,
            layers: built.composed.layers,
            mirror: req.repo.mirror.clone(),
            extra_ca: p.extra_ca.clone(),
        };
        Ok((built.image, set))
    }

    /// A base image: the local image store first, else the registry.
    pub(crate) fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
        opts: &SolveOptions<'_>,
        progress: &Progress,
    ) -> Result<Image> {
        if let Some(desc) = opts.local_images.get(reference) {
            return read_image(&self.store, desc, Some(platform));
        }
        if !(opts.pull && opts.registry.is_some())
            && let Ok(desc) = self.images.resolve(reference)
        {
            for (d, _) in crate::oci::image::closure(self.images.blobs(), &desc)? {
                self.store.import_from(self.images.blobs(), &d)?;
            }
            return read_image(&self.store, &desc, Some(platform));
        }
        let Some(client) = opts.registry else {
            bail!("image {reference} is not in the local store and no registry client was given");
        };
        let r = crate::registry::Reference::parse(reference)
            .with_context(|| format!("FROM {reference}"))?;
        let pulled = crate::registry::pull::pull(
            client,
            &self.store,
            &r,
            &crate::registry::PullOptions {
                platform: Some(platform.clone()),
            },
            progress,
        )
        .with_context(|| format!("pulling {reference}"))?;
        read_image(&self.store, &pulled.manifest, Some(platform))
    }

    fn build_stage(
        &self,
        cx: &StageBuild<'_>,
        idx: usize,
        layer: LayerOptions,
    ) -> Result<StageState> {
        let StageBuild {
            g,
            keys,
            bases,
            states,
            stats,
            opts,
            progress,
            ..
        } = *cx;
        let stage = &g.stages[idx];
        let stage_keys = keys.stages[idx].as_ref().context("stage without keys")?;
        let state_of = |i: usize| -> Result<StageState> {
            states.lock().unwrap_or_else(|e| e.into_inner())[i]
                .clone()
                .with_context(|| format!("stage {i} is not built yet"))
        };
        let mut st = match &stage.base {
            Base::Scratch => StageState {
                builder: ImageBuilder::scratch(stage.platform.clone()),
                config: ImageConfig::default(),
                layers: Vec::new(),
                layer,
            },
            Base::Stage(i) => StageState {
                layer,
                ..state_of(*i)?
            },
            Base::Image { reference } => {
                let img = bases.get(reference).context("base image not resolved")?;
                StageState {
                    builder: ImageBuilder::from_image(img),
                    config: ImageConfig::from_oci(&img.config.config().clone().unwrap_or_default()),
                    layers: layer_records(img)?,
                    layer,
                }
            }
            Base::Packages(p) => {
                let img = bases
                    .get(&p.reference())
                    .context("package base not composed")?;
                StageState {
                    builder: ImageBuilder::from_image(img),
                    config: ImageConfig::from_oci(&img.config.config().clone().unwrap_or_default()),
                    layers: layer_records(img)?,
                    layer,
                }
            }
        };
        let name = stage.display_name(idx);
        // Config-only steps (ENV, LABEL, CMD…) are not shown: the shown
        // steps are numbered 1..=total without gaps.
        let total = stage.steps.iter().filter(|s| shown(&s.op)).count();
        let mut number = 0;
        let progress = &progress.for_steps();
        // The chain of keys as built: it leaves the precomputed one after a
        // COPY --from=<stage> keyed by content, and the later steps are
        // keyed again over it.
        let mut parent = stage_keys.base.clone();
        let mut diverged = false;
        for (j, step) in stage.steps.iter().enumerate() {
            let snapshot = snapshot_when_written(g, idx, j);
            // A cancelled build stops at the next step (a running step is
            // stopped by the sandbox, which watches the same flag).
            if opts
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
            {
                return Err(crate::sandbox::Cancelled.into());
            }
            if shown(&step.op) {
                number += 1;
            }
            let own_key = if diverged {
                graph::key::step_key(&parent, &step.op, &stage_keys.reads[j])?
            } else {
                stage_keys.steps[j].clone()
            };
            let key = &own_key;
            let text = step
                .origin
                .as_ref()
                .map(|o| o.text.clone())
                .unwrap_or_else(|| describe(&step.op));
            let label = format!("[{name} {number}/{total}] {}", one_line(&text));
            if let Op::Config(change) = &step.op
                && !matches!(change, ConfigChange::WorkingDir(_))
            {
                st.config.apply(change);
                st.builder.add_empty_history(&text);
                parent = graph::key::after_step(&parent, &step.op, key);
                continue;
            }
            if !opts.no_cache
                && let Op::Copy(c) = &step.op
                && let CopyFrom::Stage(from) = &c.from
            {
                let ck = self
                    .copy_by_content(
                        &mut st,
                        c,
                        &|| state_of(*from),
                        key,
                        &step.op,
                        &label,
                        &text,
                        stats,
                        progress,
                        snapshot,
                        &|k: &Digest, r: &StepRecord| cx.note(idx, k, r),
                    )
                    .with_context(|| format!("{label} ({})", origin_of(step)))?;
                parent = graph::key::after_content_copy(&parent, &ck);
                diverged = true;
                continue;
            }
            if !opts.no_cache
                && let Some(rec) = self.cached(key, st.layer.compression)
            {
                cx.note(idx, key, &rec);
                progress.task(label).finish("cached");
                if let Op::Config(change) = &step.op {
                    st.config.apply(change);
                }
                add_layer(&mut st, rec.layer.as_ref(), &text);
                stats.lock().unwrap_or_else(|e| e.into_inner()).steps_cached += 1;
                parent = graph::key::after_step(&parent, &step.op, key);
                continue;
            }
            let layer = match &step.op {
                Op::Copy(c) => {
                    let task = progress.task(label.clone());
                    let dest_view = self.view(&st)?;
                    let downloads = self
                        .downloads(c)
                        .with_context(|| format!("{label} ({})", origin_of(step)))?;
                    let entries = match &c.from {
                        CopyFrom::Context => {
                            let ctx = opts.context.context(
                                "COPY from the build context, but the build has no context",
                            )?;
                            let ctx = ctx.lock().unwrap_or_else(|e| e.into_inner());
                            copy::entries(c, &copy::Source::Context(&ctx), &dest_view, &downloads, &self.sandbox.idmap)
                        }
                        CopyFrom::Stage(i) => {
                            let view = self.view(&state_of(*i)?)?;
                            copy::entries(c, &copy::Source::View(&view), &dest_view, &downloads, &self.sandbox.idmap)
                        }
                        CopyFrom::Image(r) => {
                            let img = bases.get(r).context("image not resolved")?;
                            let view = RootView::new(self.snapshots.for_image(&self.store, img)?);
                            copy::entries(c, &copy::Source::View(&view), &dest_view, &downloads, &self.sandbox.idmap)
                        }
                    }
                    .with_context(|| format!("{label} ({})", origin_of(step)))?;
                    let l = self.write(entries, st.layer, snapshot)?;
                    task.finish("done");
                    l
                }
                Op::Run(run) => {
                    let view_of = |from: &CopyFrom| -> Result<mounts::SourceFs> {
                        match from {
                            CopyFrom::Stage(i) => Ok(mounts::SourceFs {
                                view: self.view(&state_of(*i)?)?,
                                name: format!("stage {}", g.stages[*i].display_name(*i)),
                                key: keys.stages[*i]
                                    .as_ref()
                                    .map(|k| k.result().to_string())
                                    .context("stage without keys")?,
                            }),
                            CopyFrom::Image(r) => {
                                let img = bases.get(r).context("image not resolved")?;
                                Ok(mounts::SourceFs {
                                    view: RootView::new(
                                        self.snapshots.for_image(&self.store, img)?,
                                    ),
                                    name: format!("image {r}"),
                                    key: img.digest()?.to_string(),
                                })
                            }
                            CopyFrom::Context => bail!("the build context is not a stage"),
                        }
                    };
                    self.run_step(&st, run, &label, &origin_of(step), &view_of, opts, progress)?
                }
                Op::Config(change) => {
                    // WORKDIR creates its directory when missing, as Docker does.
                    let task = progress.task(label.clone());
                    st.config.apply(change);
                    let ConfigChange::WorkingDir(dir) = change else {
                        unreachable!()
                    };
                    let view = self.view(&st)?;
                    let entries = workdir::entries(&view, dir, &st.config.user)
                        .with_context(|| format!("{label} ({})", origin_of(step)))?;
                    let layer = if entries.is_empty() {
                        None
                    } else {
                        self.write(entries, st.layer, snapshot)?
                    };
                    task.finish("done");
                    layer
                }
            };
            let rec = StepRecord {
                layer: layer.clone(),
                content_key: None,
            };
            self.steps.put(key, &rec)?;
            cx.note(idx, key, &rec);
            add_layer(&mut st, layer.as_ref(), &text);
            stats.lock().unwrap_or_else(|e| e.into_inner()).steps_run += 1;
            parent = graph::key::after_step(&parent, &step.op, key);
        }
        Ok(st)
    }

    /// A `COPY --from=<stage>` keyed by the content it writes: cached when
    /// the same layer was written before, whatever else changed in the
    /// source stage or in the steps below. `key` is the step's key by the
    /// source stage; its record names the content key, so a rebuild whose
    /// source stage did not change hashes nothing (nor needs the source:
    /// `source` is only asked for on a miss). Returns the content key.
    #[allow(clippy::too_many_arguments)]
    fn copy_by_content(
        &self,
        st: &mut StageState,
        c: &graph::Copy,
        source: &dyn Fn() -> Result<StageState>,
        key: &Digest,
        op: &Op,
        label: &str,
        text: &str,
        stats: &Mutex<SolveStats>,
        progress: &Progress,
        snapshot: bool,
        note: &dyn Fn(&Digest, &StepRecord),
    ) -> Result<Digest> {
        let compression = st.layer.compression;
        if let Some(rec) = self.cached(key, compression)
            && let Some(ck) = rec.content_key.clone()
        {
            note(key, &rec);
            if let Some(ck_rec) = self.cached(&ck, compression) {
                note(&ck, &ck_rec);
            }
            progress.task(label).finish("cached");
            add_layer(st, rec.layer.as_ref(), text);
            stats.lock().unwrap_or_else(|e| e.into_inner()).steps_cached += 1;
            return Ok(ck);
        }
        let task = progress.task(label);
        let dest_view = self.view(st)?;
        let downloads = self.downloads(c)?;
        let view = self.view(&source()?)?;
        let entries = copy::entries(c, &copy::Source::View(&view), &dest_view, &downloads, &self.sandbox.idmap)?;
        let ck = graph::key::content_copy_key(op, &copy::content_digest(&entries)?)?;
        let layer = match self.cached(&ck, compression) {
            Some(rec) => {
                note(&ck, &rec);
                task.finish("cached");
                stats.lock().unwrap_or_else(|e| e.into_inner()).steps_cached += 1;
                rec.layer
            }
            None => {
                let layer = self.write(entries, st.layer, snapshot)?;
                let rec = StepRecord {
                    layer: layer.clone(),
                    content_key: None,
                };
                self.steps.put(&ck, &rec)?;
                note(&ck, &rec);
                task.finish("done");
                stats.lock().unwrap_or_else(|e| e.into_inner()).steps_run += 1;
                layer
            }
        };
        let rec = StepRecord {
            layer: layer.clone(),
            content_key: Some(ck.clone()),
        };
        self.steps.put(key, &rec)?;
        note(key, &rec);
        add_layer(st, layer.as_ref(), text);
        Ok(ck)
    }

    /// The record of step `key`: the local step cache's, else a registry
    /// cache's (kept locally too: a local hit once its layer is fetched).
    fn cached(&self, key: &Digest, compression: crate::oci::Compression) -> Option<StepRecord> {
        if let Some(rec) = self.steps.get(key, &self.store, compression) {
            return Some(rec);
        }
        let rec = self.remote.as_ref()?.step(key, compression)?;
        // Best effort: the record is only a shortcut for the next build.
        let _ = self.steps.put(key, &rec);
        Some(rec)
    }

    /// The snapshot of a layer, its blob fetched from a registry cache
    /// first when the store lacks it.
    fn snapshot(&self, l: &LayerRecord) -> Result<PathBuf> {
        if let Some(r) = &self.remote
            && !self.snapshots.path(&l.blob).is_dir()
        {
            r.ensure_blob(&self.store, &l.blob)?;
        }
        Ok(self
            .snapshots
            .ensure(&self.store, &l.blob, l.compression)?
            .0)
    }

    /// Writes entries as a layer (no entries, no layer), and its snapshot
    /// from the same tar stream when `snapshot` (a later step reads it).
    fn write(
        &self,
        entries: Vec<Entry>,
        layer: LayerOptions,
        snapshot: bool,
    ) -> Result<Option<LayerRecord>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let written = if snapshot {
            self.snapshots.write_layer(&self.store, entries, layer)?
        } else {
            write_layer(&self.store, entries, layer)?
        };
        Ok(Some(LayerRecord::from(&written)))
    }

    /// The stage's layers as snapshot dirs, bottom-most first. Missing
    /// snapshots are unpacked in parallel (a fresh package base is a dozen
    /// layers; each unpack is one decompressing thread plus file creation).
    fn lowers(&self, st: &StageState) -> Result<Vec<PathBuf>> {
        let missing: Vec<&LayerRecord> = st
            .layers
            .iter()
            .filter(|l| !self.snapshots.path(&l.blob).is_dir())
            .collect();
        if missing.len() > 1 {
            let queue = Mutex::new(missing.into_iter());
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        s.spawn(|| -> Result<()> {
                            loop {
                                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                                let Some(l) = next else {
                                    return Ok(());
                                };
                                self.snapshot(l)?;
                            }
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("a snapshot unpacker panicked"))
                })
            })?;
        }
        st.layers.iter().map(|l| self.snapshot(l)).collect()
    }

    fn view(&self, st: &StageState) -> Result<RootView> {
        Ok(RootView::new(self.lowers(st)?))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &self,
        st: &StageState,
        run: &graph::Run,
        label: &str,
        origin: &str,
        view_of: &dyn Fn(&CopyFrom) -> Result<mounts::SourceFs>,
        opts: &SolveOptions<'_>,
        progress: &Progress,
    ) -> Result<Option<LayerRecord>> {
        // A cache mount this machine does not have yet starts with what a
        // registry cache holds for it (`cache-mounts=true` exports).
        if let Some(remote) = &self.remote {
            for id in plain_cache_mounts(run) {
                let dir = self.sandbox.cache_mount_dir(&id);
                match remote.import_mount(&self.store, &id, &dir) {
                    Ok(true) => progress.info(format!(
                        "{label}: cache mount {id:?} filled from the registry cache"
                    )),
                    Ok(false) => {}
                    Err(e) => {
                        progress.warn(format!("{label}: cache mount {id:?} starts empty: {e:#}"))
                    }
                }
            }
        }
        let mut spec = sandbox::RunSpec::new(
            self.lowers(st)?,
            sandbox::StepCommand::Exec(run.command.clone()),
        );
        spec.name = label.to_string();
        spec.extra_hosts = opts.extra_hosts.clone();
        let mut env = st.config.env.clone();
        for (k, v) in &run.build_args {
            if !env.iter().any(|(ek, _)| ek == k) {
                env.push((k.clone(), v.clone()));
            }
        }
        spec.workdir = PathBuf::from(if st.config.working_dir.is_empty() {
            "/"
        } else {
            &st.config.working_dir
        });
        spec.user = (!st.config.user.is_empty()).then(|| st.config.user.clone());
        spec.network = match run.network {
            graph::Network::Default => opts.network,
            graph::Network::None => sandbox::Network::None,
            graph::Network::Host if opts.allow_host_network => sandbox::Network::Host,
            graph::Network::Host => bail!(
                "{label}: RUN --network=host needs the network.host entitlement (the step would reach the host's loopback services): pass --allow network.host to kiln build"
            ),
        };
        // Only reachable when allowed (see check_entitlements).
        spec.privileged = run.security == graph::Security::Insecure && opts.allow_insecure;
        spec.cancel = opts.cancel.clone();
        let step = step_mounts::StepRef {
            label,
            origin,
            view_of,
        };
        // Kept until the step has run: it owns the files the mounts bind.
        let mut mounts = step_mounts::translate(run, &step, opts)?;
        spec.mounts.append(&mut mounts.mounts);
        env.append(&mut mounts.env);
        spec.env = env;
        let out = self
            .sandbox
            .run(&spec, progress)
            .with_context(|| format!("{label} ({origin})"))?;
        if !out.success() {
            let tail = progress.tail(label);
            let mut shown = if tail.is_empty() {
                "(no output)".to_string()
            } else {
                tail.join("\n")
            };
            let host_ca = run
                .mounts
                .iter()
                .any(|m| matches!(m, graph::Mount::HostCa { .. }));
            if let Some(hint) = trust::certificate_hint(&shown, host_ca) {
                shown.push('\n');
                shown.push_str(&hint);
            }
            return Err(crate::error::StepFailure {
                step: label.to_string(),
                exit_code: out.exit_code,
                message: format!(
                    "{label} ({origin}) failed with exit code {}\ncommand: {}\nlast {} lines of output:\n{shown}",
                    out.exit_code,
                    run.command.join(" "),
                    TAIL_LINES.min(tail.len().max(1))
                ),
                tail,
            }
            .into());
        }
        let mut captured = out.capture()?;
        let entries = canonicalize(std::mem::take(&mut captured.entries));
        if entries.is_empty() {
            return Ok(None);
        }
        let layer = write_canonical_layer(&self.store, &entries, st.layer)?;
        // The upper dir already holds the layer's files: it becomes the
        // layer's snapshot, so the next step does not unpack the blob.
        let blob = &layer.blob.digest;
        if let Err(e) =
            out.into_snapshot(&self.snapshots, &captured, &entries, blob, st.layer.epoch)
        {
            progress.warn(format!(
                "{label}: keeping the step's files as the snapshot of layer {} failed, it will be unpacked instead: {e:#}",
                blob.short()
            ));
        }
        Ok(Some(LayerRecord::from(&layer)))
    }
}

/// The package request a package base stands for, on the stage's
/// platform; an error for a platform without Debian packages.
pub(crate) fn packages_request(
    p: &graph::PackageSet,
    platform: &Platform,
) -> Result<crate::packages::image::PackagesRequest> {
    let mut repo = crate::packages::repo::RepoConfig::from_env();
    repo.arch = platform.debian_arch()?.to_string();
    Ok(crate::packages::image::PackagesRequest {
        repo,
        suite: Some(p.suite.clone()),
        base: p.base,
        recommends: false,
        packages: p.packages.clone(),
        pull: false,
    })
}

/// A lock whose holder panicked is still the state to report from (the
/// panic itself reaches the caller through the thread scope).
fn relock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn layer_records(img: &Image) -> Result<Vec<LayerRecord>> {
    img.manifest
        .layers()
        .iter()
        .zip(img.config.rootfs().diff_ids())
        .map(|(l, diff)| {
            let blob = crate::oci::image::desc_digest(l)?;
            Ok(LayerRecord {
                compression: crate::oci::Compression::from_media_type(l.media_type().as_ref())
                    .with_context(|| {
                        format!("layer {blob} has an unknown media type {}", l.media_type())
                    })?,
                blob,
                size: l.size(),
                diff_id: diff.parse::<Digest>()?,
            })
        })
        .collect()
}

fn add_layer(st: &mut StageState, layer: Option<&LayerRecord>, text: &str) {
    match layer {
        Some(l) => {
            st.builder.add_layer(&l.layer(), text);
            st.layers.push(l.clone());
        }
        None => st.builder.add_empty_history(text),
    }
}

/// Refuses a `RUN --security=insecure` in the needed stages (BuildKit's
/// entitlement check): it would run as root on the host, which only an
/// explicit `--allow security.insecure` may grant.
fn check_entitlements(g: &Graph, order: &[usize]) -> Result<()> {
    for &i in order {
        for step in &g.stages[i].steps {
            if let Op::Run(r) = &step.op
                && r.security == graph::Security::Insecure
            {
                bail!(
                    "{}: RUN --security=insecure needs the security.insecure entitlement: the step would run privileged (every capability, /proc writable), i.e. as root on the host; pass --allow security.insecure to grant it, or remove --security=insecure",
                    origin_of(step)
                );
            }
        }
    }
    Ok(())
}

/// A stage with `RUN` steps for a platform this machine cannot execute
/// fails before any work, naming what to install (not at its first step,
/// with "not an executable format").
fn check_platforms(g: &Graph, order: &[usize]) -> Result<()> {
    for &i in order {
        let stage = &g.stages[i];
        if stage.steps.iter().any(|s| matches!(s.op, Op::Run(_))) {
            stage.platform.check_executable().with_context(|| {
                format!(
                    "stage {}: its RUN steps run {} programs",
                    stage.name.clone().unwrap_or_else(|| i.to_string()),
                    stage.platform
                )
            })?;
        }
    }
    Ok(())
}

fn origin_of(step: &Step) -> String {
    match &step.origin {
        Some(o) => format!("{}:{}", o.file, o.line),
        None => "generated step".to_string(),
    }
}

/// Whether a step has a line in the progress display: every step but the
/// ones that only change the image config (WORKDIR creates a directory).
/// Whether step `j` of stage `idx` writes its layer's snapshot from the
/// layer's tar stream, as it compresses: when a later step of the stage
/// or another stage will read the files, which would otherwise unpack the
/// compressed blob again (a Go binary's 7 MB: 25 ms of a warm rebuild).
/// The last step of an image nobody reads is left to the exporters.
/// (Before steps were keyed by content, this wasted a warm rebuild's time
/// on re-made layers whose snapshots existed; a layer is now written only
/// when its content is new.)
fn snapshot_when_written(g: &Graph, idx: usize, j: usize) -> bool {
    let reads_files =
        |op: &Op| !matches!(op, Op::Config(c) if !matches!(c, ConfigChange::WorkingDir(_)));
    g.stages[idx].steps[j + 1..].iter().any(|s| reads_files(&s.op))
        || (0..g.stages.len()).any(|i| i != idx && graph::deps::direct_deps(g, i).contains(&idx))
}

fn shown(op: &Op) -> bool {
    !matches!(op, Op::Config(c) if !matches!(c, ConfigChange::WorkingDir(_)))
}

/// A package base's line in the progress display.
fn packages_label(p: &graph::PackageSet) -> String {
    format!(
        "[packages] {} ({})",
        one_line(&p.packages.join(" ")),
        p.suite
    )
}

fn one_line(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 72 {
        format!("{}…", flat.chars().take(71).collect::<String>())
    } else {
        flat
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Copy(c) => format!("COPY → {}", c.dest),
        Op::Run(r) => format!("RUN {}", r.command.join(" ")),
        Op::Config(c) => format!("{c:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> graph::PackageSet {
        graph::PackageSet {
            suite: "bookworm".into(),
            packages: vec!["ca-certificates".into()],
            base: Default::default(),
            lock: None,
            extra_ca: Vec::new(),
        }
    }

    #[test]
    fn a_layer_is_snapshotted_as_written_only_when_something_reads_it() {
        let step = |op: Op| graph::Step { op, origin: None };
        let workdir = |d: &str| step(Op::Config(ConfigChange::WorkingDir(d.into())));
        let stage = |base: Base, steps: Vec<graph::Step>| graph::Stage {
            name: None,
            base,
            platform: Platform::linux("amd64", None),
            steps,
            origin: None,
        };
        let run = step(Op::Run(graph::Run {
            command: vec!["make".into()],
            build_args: vec![],
            mounts: vec![],
            network: graph::Network::Default,
            security: graph::Security::Sandbox,
            context_digest: None,
        }));
        let copy = step(Op::Copy(graph::Copy::new(
            CopyFrom::Stage(0),
            vec![graph::CopyItem::Path("/out".into())],
            "/out",
        )));
        let cmd = step(Op::Config(ConfigChange::Cmd(Some(vec!["/out".into()]))));
        // FROM scratch AS build; WORKDIR /src; RUN make
        // FROM scratch; COPY --from=build /out /out; WORKDIR /app; CMD ["/out"]
        let g = Graph {
            stages: vec![
                stage(Base::Scratch, vec![workdir("/src"), run]),
                stage(Base::Scratch, vec![copy, workdir("/app"), cmd]),
            ],
            target: 1,
        };
        // The build stage's last step: another stage copies from it.
        assert!(snapshot_when_written(&g, 0, 1));
        // The COPY: WORKDIR looks at the files after it.
        assert!(snapshot_when_written(&g, 1, 0));
        // The image's last file step: only CMD follows, nothing reads it.
        assert!(!snapshot_when_written(&g, 1, 1));
    }

    #[test]
    fn a_package_base_is_composed_for_its_platform_or_refused() {
        let arch =
            |p: &str| packages_request(&set(), &Platform::parse(p).unwrap()).map(|r| r.repo.arch);
        assert_eq!(arch("linux/amd64").unwrap(), "amd64");
        assert_eq!(arch("linux/arm64/v8").unwrap(), "arm64");
        // Never another architecture's packages.
        for other in ["linux/arm/v7", "linux/s390x", "linux/386"] {
            let e = arch(other).unwrap_err().to_string();
            assert!(
                e.contains(&format!("platform {other} is not supported"))
                    && e.contains("linux/amd64, linux/arm64"),
                "{other}: {e}"
            );
        }
    }
}
