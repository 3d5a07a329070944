//! `kiln::build`: a build request in, an image out — what the CLI's
//! `kiln build` and deploy tools call.
//!
//! Which frontend runs: inline Dockerfile content, else the Dockerfile
//! (`-f`, default `CONTEXT/Dockerfile`) when there is one, else the auto
//! plan of the source tree (providers, `nixpacks.toml`/`kiln.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};

use crate::Result;
use crate::dockerfile::lower::{BaseResolver, BuildArgs};
use crate::error::InputError;
use crate::graph::ImageConfig;
use crate::oci::image::Image;
use crate::oci::layer::{Compression, LayerOptions, source_date_epoch};
use crate::oci::{Digest, images::normalize_name};
use crate::progress::Progress;
use crate::registry::{self, Client, ClientOptions, Reference};
use crate::ship::{self, Destination, ShipOptions, Shipped};
pub use crate::solver::remote::{CacheFrom, CacheMode, CacheTo};
use crate::solver::{SolveOptions, SolveStats, Solver};

/// What to build and where the result goes.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (default `CONTEXT/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// Dockerfile text given inline (platforms pass it through the API);
    /// takes precedence over any file.
    pub dockerfile_content: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `os/arch[/variant]`; the host's by default. Several, separated by
    /// commas (`linux/amd64,linux/arm64`), build one image per platform
    /// under an OCI image index, in the order given ([`platforms_of`]).
    pub platform: Option<String>,
    /// Names for the image in the local store (and push targets).
    pub tags: Vec<String>,
    pub no_cache: bool,
    /// Resolve package bases against the archive again instead of reusing
    /// the sets earlier builds resolved, and pull base images from their
    /// registry even when the local store has them (`--pull`).
    pub pull: bool,
    /// Secret values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub outputs: Vec<Destination>,
    /// Push every tag to its registry.
    pub push: bool,
    pub compression: Compression,
    pub insecure_registries: Vec<String>,
    /// Set it to cancel the build (the CLI sets it on Ctrl-C; a library
    /// caller from any thread, e.g. on a timeout): the running step's
    /// processes are killed and its files removed, no later step or push
    /// starts, and the build returns [`crate::Error::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// Build from the auto plan even when a Dockerfile is present (`--auto`).
    pub auto: bool,
    /// Options for the auto plan (start command override, extra packages,
    /// `-e` variables): what `kiln plan` takes.
    pub plan: PlanRequest,
    /// Print the build summary, the equivalent Dockerfile and every step's
    /// full output (`--debug`, `--debug-build`).
    pub debug: bool,
    /// Auto builds: extra CA certificates (PEM files) the build stage
    /// trusts, for networks that intercept TLS (`--ca-cert`, `KILN_CA_CERTS`).
    pub ca_certs: Vec<PathBuf>,
    /// Auto builds: do not give the build steps the host's CA bundle
    /// (`--no-host-ca`, `KILN_NO_HOST_CA=1`); see [`crate::solver::trust`].
    pub no_host_ca: bool,
    /// Entitlements granted to the build (`--allow`, as buildx).
    pub allow: Vec<Entitlement>,
    /// Labels set on the image (`--label K=V`, as buildx and Nixpacks),
    /// after the Dockerfile's or plan's own: these win.
    pub labels: Vec<(String, String)>,
    /// The network of RUN steps that do not choose one (`--network`):
    /// private with outbound access unless the caller opts into `Host`.
    pub network: crate::sandbox::Network,
    /// `--add-host HOST:IP`: added to every RUN step's `/etc/hosts`.
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--build-context NAME=DIR` (Dockerfile builds): a local directory
    /// that `FROM NAME` and `COPY --from=NAME` read, before any image or
    /// stage of that name.
    pub build_contexts: Vec<(String, PathBuf)>,
    /// The cache's size bound for the GC that ends the build
    /// (`--cache-max`; by default `KILN_CACHE_MAX`, see [`crate::gc::Bound`]).
    pub cache_max: crate::gc::Bound,
    /// Attach the SBOM (SPDX and CycloneDX) to the pushed image and the
    /// OCI layout outputs as OCI 1.1 referrers (`--sbom`).
    pub sbom: bool,
    /// Attach the SLSA provenance statement the same way (`--provenance`).
    pub provenance: bool,
    /// Registry caches read before the solve (`--cache-from`; repeatable,
    /// first match wins): [`crate::solver::remote`], docs/cache.md.
    pub cache_from: Vec<CacheFrom>,
    /// The registry cache written after a successful build, or the
    /// image's own inline cache (`--cache-to`, [`CacheTo::inline`]).
    pub cache_to: Option<CacheTo>,
}

/// A privilege a build must be granted explicitly (buildx's `--allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Entitlement {
    /// `RUN --security=insecure` runs its step privileged: every
    /// capability, /proc unmasked and writable; root on the host.
    #[cfg_attr(feature = "cli", value(name = "security.insecure"))]
    SecurityInsecure,
    /// `RUN --network=host` runs on the host's network (its loopback
    /// services included) instead of failing.
    #[cfg_attr(feature = "cli", value(name = "network.host"))]
    NetworkHost,
}

/// Options for auto builds (the plan's CLI-level overrides).
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// `-s`: replaces the start command (deploy files' `command:`).
    pub start_cmd: Option<String>,
    /// `-i`: replaces the install commands.
    pub install_cmd: Option<String>,
    /// `-b`: replaces the build commands.
    pub build_cmd: Option<String>,
    /// `--apt`: extra Debian packages (build stage and runtime image).
    pub apt: Vec<String>,
    /// `--pkgs`: Nix package names (Nixpacks'), mapped to Debian packages
    /// for the build stage and the runtime image.
    pub pkgs: Vec<String>,
    /// `--libs`: Nix library names (Nixpacks'), mapped like `pkgs`.
    pub libs: Vec<String>,
    /// `-e KEY=VALUE` entries given to the plan: `KILN_*`/`NIXPACKS_*`
    /// configure it, the rest are variables of the build steps and the
    /// image (as Nixpacks' `--env`).
    pub env: Vec<String>,
    /// `--build-env KEY=VALUE`: variables of the build steps only.
    pub build_env: Vec<String>,
    /// `-c`: the plan's config file, relative to the context.
    pub config: Option<String>,
    /// `--plan FILE`: build this plan (as `kiln plan`/`nixpacks plan`
    /// write it) instead of detecting one.
    pub plan_file: Option<PathBuf>,
    /// `--cache-key KEY`: prefix of the plan's cache mount ids.
    pub cache_key: Option<String>,
    /// `--no-error-without-start`: no start command gives an image
    /// without `CMD` instead of an error.
    pub no_error_without_start: bool,
}

impl PlanRequest {
    /// The plan of the app in `dir`: `plan_file` when given, else detected,
    /// with this request's overrides. `secrets` are the build's secret
    /// names (the plan mounts them). One function for `kiln::plan` and the
    /// auto build, so the two never disagree.
    pub fn plan(
        &self,
        dir: &Path,
        secrets: Vec<String>,
        progress: &Progress,
    ) -> Result<crate::plan::BuildPlan> {
        let split = |v: &[String]| -> Vec<String> {
            v.iter()
                .flat_map(|s| crate::plan::context::split_list(s))
                .collect()
        };
        let opts = crate::plan::Options {
            install_cmd: self.install_cmd.clone(),
            build_cmd: self.build_cmd.clone(),
            start_cmd: self.start_cmd.clone(),
            pkgs: split(&self.pkgs),
            apt: split(&self.apt),
            libs: split(&self.libs),
            config: self.config.clone(),
            build_env: self.build_env.clone(),
            secrets,
            progress: Some(progress.clone()),
        };
        match &self.plan_file {
            Some(file) => crate::plan::from_file(file, &self.env, &opts),
            None => crate::plan::generate(dir, &self.env, &opts),
        }
    }
}

/// Which frontend a build used, and why (`kiln build` prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSource {
    /// Dockerfile text given through the API or `--dockerfile-content`.
    Inline,
    /// A Dockerfile on disk.
    Dockerfile(PathBuf),
    /// The auto plan, with the providers that matched.
    Auto { providers: Vec<String> },
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image (with several platforms: the first one's).
    pub image: Image,
    /// The digest of what was named and pushed: the image's manifest, or
    /// with several platforms the image index.
    pub digest: Digest,
    /// What was named and pushed: the image's manifest, or the OCI image
    /// index over one manifest per platform (in the order given).
    pub root: oci_spec::image::Descriptor,
    /// With several platforms, each one's image and record in the order
    /// given; empty for a one-platform build.
    pub platforms: Vec<PlatformImage>,
    /// Names given in the local store.
    pub names: Vec<String>,
    pub stats: SolveStats,
    /// `reference@digest` of each push.
    pub pushed: Vec<String>,
    /// Which frontend ran.
    pub source: BuildSource,
    /// What the image holds ([`crate::sbom`]); `None` when it could not
    /// be recorded (the build warned why). With several platforms: the
    /// first one's (each one's is in [`BuildResult::platforms`]).
    pub record: Option<crate::sbom::Record>,
}

/// One platform's image of a multi-platform build.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: crate::platform::Platform,
    pub image: Image,
    /// What this platform's image holds (its SBOM and provenance are made
    /// from it); `None` when it could not be recorded.
    pub record: Option<crate::sbom::Record>,
}

impl BuildRequest {
    /// The platforms this request builds ([`platforms_of`]).
    pub fn platforms(&self) -> Result<Vec<crate::platform::Platform>> {
        platforms_of(self)
    }
}

/// The platforms of a build: `req.platform` split on commas, each parsed,
/// in the order given (the order of the index's manifests); the host's
/// when none is given. A platform named twice is an error.
pub fn platforms_of(req: &BuildRequest) -> Result<Vec<crate::platform::Platform>> {
    let Some(list) = req.platform.as_deref() else {
        return Ok(vec![crate::platform::Platform::host()]);
    };
    let mut out: Vec<crate::platform::Platform> = Vec::new();
    for p in list.split(',') {
        let p = crate::platform::Platform::parse(p)
            .map_err(|e| InputError::new(format!("--platform {list}: {e:#}")))?;
        if out.contains(&p) {
            return Err(InputError::new(format!("--platform {list}: {p} is named twice")).into());
        }
        out.push(p);
    }
    Ok(out)
}

/// Outputs that hold one image's files, not an index: refused before any
/// work when several platforms are built.
fn check_multi_platform_outputs(
    outputs: &[Destination],
    platforms: &[crate::platform::Platform],
) -> Result<()> {
    let list = platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for o in outputs {
        let what = match o {
            Destination::DockerArchive(f) => format!("-o type=docker,dest={}", f.display()),
            Destination::RootfsDir(d) => format!("-o type=local,dest={}", d.display()),
            Destination::RootfsTar(f) => format!("-o type=tar,dest={}", f.display()),
            _ => continue,
        };
        return Err(InputError::new(format!(
            "{what} holds one platform's image, but --platform {list} builds {}: build it with one --platform, or use -o type=oci (an OCI layout holds the image index)",
            platforms.len()
        ))
        .into());
    }
    Ok(())
}

/// The OCI image index over the platforms' manifests, in the order given,
/// each entry saying its platform: written into `store`. Only digests,
/// sizes and platforms go in (no time, no name), so the same manifests
/// give the same index.
fn platform_index(
    store: &crate::oci::Store,
    platforms: &[crate::platform::Platform],
    built: &[Built],
) -> Result<(oci_spec::image::Descriptor, oci_spec::image::ImageIndex)> {
    let manifests = platforms
        .iter()
        .zip(built)
        .map(|(p, b)| {
            let mut d = b.image.manifest_desc.clone();
            d.set_annotations(None);
            d.set_platform(Some(p.to_oci()));
            d
        })
        .collect();
    crate::oci::image::write_index(store, manifests)
}

/// `--label`s, set last on the target stage so they win over the
/// Dockerfile's `LABEL`s and the plan's.
fn add_labels(graph: &mut crate::graph::Graph, labels: &[(String, String)]) {
    if labels.is_empty() {
        return;
    }
    let target = graph.target;
    graph.stages[target].steps.push(crate::graph::Step {
        op: crate::graph::Op::Config(crate::graph::config::ConfigChange::Labels(labels.to_vec())),
        origin: None,
    });
}

/// Resolves base image configs for the Dockerfile frontend (ENV of a base
/// image is visible to `$VAR` expansion in later instructions).
struct Resolver<'a> {
    solver: &'a Solver,
    client: &'a Client,
    progress: &'a Progress,
    seen: Mutex<BTreeMap<String, Option<ImageConfig>>>,
    /// `--build-context` images by name.
    local_images: BTreeMap<String, oci_spec::image::Descriptor>,
}

impl BaseResolver for Resolver<'_> {
    fn image_config(
        &self,
        reference: &str,
        platform: &crate::platform::Platform,
    ) -> Result<Option<ImageConfig>> {
        if let Some(c) = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(reference)
        {
            return Ok(c.clone());
        }
        let mut opts = solve_options(None, self.client, &BuildRequest::default())?;
        opts.local_images = self.local_images.clone();
        let img = self
            .solver
            .resolve_image(reference, platform, &opts, self.progress)?;
        let cfg = Some(ImageConfig::from_oci(
            &img.config.config().clone().unwrap_or_default(),
        ));
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reference.to_string(), cfg.clone());
        Ok(cfg)
    }
}

fn solve_options<'a>(
    context: Option<&'a Mutex<crate::context::Context>>,
    client: &'a Client,
    req: &BuildRequest,
) -> Result<SolveOptions<'a>> {
    Ok(SolveOptions {
        context,
        layer: LayerOptions {
            compression: req.compression,
            epoch: source_date_epoch()?,
        },
        no_cache: req.no_cache,
        pull: req.pull,
        secrets: req.secrets.clone(),
        cancel: req.cancel.clone(),
        registry: Some(client),
        package_locks: BTreeMap::new(),
        allow_insecure: req.allow.contains(&Entitlement::SecurityInsecure),
        network: req.network,
        allow_host_network: req.allow.contains(&Entitlement::NetworkHost)
            || req.network == crate::sandbox::Network::Host,
        host_ca: None,
        extra_hosts: req.add_hosts.clone(),
        local_images: BTreeMap::new(),
    })
}

/// Each `--build-context NAME=DIR` as a one-layer image of DIR (files
/// owned by root, as `COPY` from the build context gives them) in the
/// solver's store, by NAME. Content-addressed: an unchanged dir gives the
/// same image, so steps that read it stay cached.
fn named_contexts(
    req: &BuildRequest,
    solver: &Solver,
    progress: &Progress,
) -> Result<BTreeMap<String, oci_spec::image::Descriptor>> {
    let mut out = BTreeMap::new();
    for (name, dir) in &req.build_contexts {
        if !dir.is_dir() {
            bail!(
                "--build-context {name}={}: not a directory (kiln takes local directories only)",
                dir.display()
            );
        }
        let platform = req
            .platform
            .as_deref()
            .map(crate::platform::Platform::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
        let img = crate::oci::from_dir::image_from_dir(
            &solver.store,
            dir,
            &crate::oci::from_dir::FromDirOptions {
                layer: LayerOptions {
                    compression: req.compression,
                    epoch: source_date_epoch()?,
                },
                ownership: crate::oci::layer::Ownership::Fixed(0, 0),
                platform,
                ..Default::default()
            },
            progress,
        )
        .with_context(|| format!("--build-context {name}={}", dir.display()))?;
        out.insert(name.clone(), img.manifest_desc);
    }
    Ok(out)
}

/// Builds an image (picks the frontend, see the module doc; solves the
/// graph; names, exports and pushes the result as `req` asks), then keeps
/// the cache within its bound ([`crate::gc::auto`]): least recently used
/// entries go, never one this build used.
pub fn build(req: &BuildRequest, progress: &Progress) -> Result<BuildResult> {
    let started = std::time::SystemTime::now();
    let cache = crate::paths::cache_dir()?;
    // A bad KILN_CACHE_MAX fails before any work.
    let bound = req.cache_max.resolve(&cache)?;
    let result = build_image(req, progress);
    let cancelled = req
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst));
    if let Some(bound) = bound
        && !cancelled
    {
        report_gc(crate::gc::auto(&cache, bound, started), bound, progress);
    }
    result
}

/// Says what the end-of-build GC did, when it did something.
fn report_gc(outcome: Result<crate::gc::AutoOutcome>, bound: u64, progress: &Progress) {
    use crate::gc::AutoOutcome;
    use crate::progress::human_bytes;
    match outcome {
        Ok(AutoOutcome::Within { .. }) => {}
        Ok(AutoOutcome::Pruned(r)) if r.removed.is_empty() => progress.info(format!(
            "cache: {} stays over its bound {} (KILN_CACHE_MAX, --cache-max): this build alone uses more, and GC keeps what it used",
            human_bytes(r.after),
            human_bytes(bound)
        )),
        Ok(AutoOutcome::Pruned(r)) => progress.info(format!(
            "cache: removed {} least recently used entries ({}); it takes {} of its bound {}{}",
            r.removed.len(),
            human_bytes(r.removed_bytes),
            human_bytes(r.after),
            human_bytes(bound),
            if r.after > bound {
                " (the rest is what this build used)"
            } else {
                ""
            }
        )),
        Ok(AutoOutcome::Busy { total }) => progress.info(format!(
            "cache: {} is over its bound {}, but other builds or runs use it; a later build trims it",
            human_bytes(total),
            human_bytes(bound)
        )),
        Err(e) => progress.warn(format!("cache GC: {e:#}")),
    }
}

fn build_image(req: &BuildRequest, progress: &Progress) -> Result<BuildResult> {
    // Masked in everything shown from here on, whichever frontend runs.
    for value in req.secrets.values() {
        progress.add_secret(value);
    }
    let context = &req.context;
    if !context.is_dir() {
        return Err(InputError::in_file(
            context,
            format!("build context {} is not a directory", context.display()),
        )
        .into());
    }
    // Names are checked before any work.
    let names: Vec<String> = req
        .tags
        .iter()
        .map(|t| normalize_name(t).map_err(|e| InputError::new(format!("{e:#}")).into()))
        .collect::<Result<_>>()?;
    let push_refs: Vec<Reference> = if req.push {
        if names.is_empty() {
            return Err(InputError::new("--push needs a name: give -t REGISTRY/NAME:TAG").into());
        }
        names
            .iter()
            .map(|n| Reference::parse(n).map_err(Into::into))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let platforms = platforms_of(req)?;
    if platforms.len() > 1 {
        check_multi_platform_outputs(&req.outputs, &platforms)?;
    }
    let mut solver = Solver::open_default(progress)?;
    let client = Client::new(ClientOptions {
        insecure_registries: req.insecure_registries.clone(),
        ..ClientOptions::default()
    })
    .with_progress(progress);
    if !req.cache_from.is_empty() && !req.no_cache {
        solver.remote = Some(crate::solver::remote::RemoteCache::load(
            &client,
            &solver.store,
            &req.cache_from,
            progress,
        ));
    }
    let solver = solver;
    let mut built = Vec::new();
    for p in &platforms {
        let mut one = req.clone();
        if platforms.len() > 1 {
            progress.info(format!("building for {p}"));
            one.platform = Some(p.to_string());
        }
        built.push(solve_platform(&one, &solver, &client, progress)?);
    }
    let (root, digest) = match built.as_slice() {
        [one] => (one.image.manifest_desc.clone(), one.digest.clone()),
        _ => {
            let (desc, _) = platform_index(&solver.store, &platforms, &built)?;
            let digest = crate::oci::image::desc_digest(&desc)?;
            progress.info(format!(
                "image index {digest}: {}",
                platforms
                    .iter()
                    .zip(&built)
                    .map(|(p, b)| format!("{p} {}", b.digest))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            (desc, digest)
        }
    };
    let attachments: Vec<(
        oci_spec::image::Descriptor,
        Vec<crate::sbom::attach::Document>,
    )> = built
        .iter()
        .filter(|b| !b.attachments.is_empty())
        .map(|b| (b.image.manifest_desc.clone(), b.attachments.clone()))
        .collect();
    let (stored, pushed) = deliver(
        req,
        &solver,
        &client,
        &Delivery {
            root: &root,
            digest: &digest,
            names: &names,
            push_refs,
            cache: built.iter().map(|b| (&b.image, &b.cache)).collect(),
            attachments: &attachments,
        },
        progress,
    )?;
    let stats = SolveStats {
        steps_run: built.iter().map(|b| b.stats.steps_run).sum(),
        steps_cached: built.iter().map(|b| b.stats.steps_cached).sum(),
    };
    let platform_images = if built.len() > 1 {
        platforms
            .iter()
            .zip(&built)
            .map(|(p, b)| PlatformImage {
                platform: p.clone(),
                image: b.image.clone(),
                record: b.record.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let first = built.into_iter().next().expect("at least one platform");
    Ok(BuildResult {
        image: first.image,
        digest,
        root,
        platforms: platform_images,
        names: stored,
        stats,
        pushed,
        source: first.source,
        record: first.record,
    })
}

/// One platform's image, solved and recorded.
struct Built {
    image: Image,
    digest: Digest,
    /// What `--cache-to` exports of its solve.
    cache: crate::solver::remote::Exportable,
    stats: SolveStats,
    source: BuildSource,
    record: Option<crate::sbom::Record>,
    /// The SBOM/provenance documents `--sbom`/`--provenance` attach to it.
    attachments: Vec<crate::sbom::attach::Document>,
}

/// Picks the frontend, lowers it to the graph and solves it for the one
/// platform of `req` (the host's when it names none).
fn solve_platform(
    req: &BuildRequest,
    solver: &Solver,
    client: &Client,
    progress: &Progress,
) -> Result<Built> {
    let context = &req.context;
    let args = BuildArgs {
        args: req.build_args.clone(),
        target: req.target.clone(),
        platform: req.platform.clone(),
        build_platform: None,
        named_contexts: req.build_contexts.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut source = choose_source(req)?;
    if !req.build_contexts.is_empty() && matches!(source, BuildSource::Auto { .. }) {
        bail!(
            "--build-context is for Dockerfile builds (FROM NAME, COPY --from=NAME); this is an auto build"
        );
    }
    let local_images = named_contexts(req, solver, progress)?;
    let resolver = Resolver {
        solver,
        client,
        progress,
        seen: Mutex::new(BTreeMap::new()),
        local_images: local_images.clone(),
    };
    let mut package_locks = BTreeMap::new();
    let mut host_ca = None;
    let mut build_info = crate::sbom::BuildInfo::default();
    let mut omit_dev = false;
    let (graph, ctx) = match &source {
        BuildSource::Auto { .. } => {
            let AutoGraph {
                mut graph,
                ctx,
                providers,
                host_ca: bundle,
                plan,
            } = auto_graph(req, progress, false)?;
            omit_dev = omits_dev_dependencies(&plan);
            build_info.plan = Some(serde_json::to_value(&plan)?);
            host_ca = bundle.map(Arc::new);
            source = BuildSource::Auto { providers };
            if let Some(t) = &req.target {
                graph.target = auto_target(&graph, t)?;
            }
            let lock_path = req.context.join(LOCK_FILE);
            if lock_path.is_file() {
                package_locks = lock_package_bases(&mut graph, &lock_path)?;
                build_info.kiln_lock = Some(
                    crate::oci::Digest::of(
                        &std::fs::read(&lock_path)
                            .with_context(|| format!("reading {}", lock_path.display()))?,
                    )
                    .to_string(),
                );
                progress.info(format!(
                    "using {} for the Debian packages ({} sets)",
                    lock_path.display(),
                    package_locks.len()
                ));
            }
            (graph, ctx)
        }
        BuildSource::Inline | BuildSource::Dockerfile(_) => {
            let (dockerfile, _tmp): (PathBuf, Option<tempfile::NamedTempFile>) = match &source {
                BuildSource::Dockerfile(p) => (p.clone(), None),
                _ => {
                    let text = req.dockerfile_content.as_deref().unwrap_or_default();
                    let f = tempfile::Builder::new()
                        .prefix("Dockerfile.inline-")
                        .tempfile()?;
                    std::fs::write(f.path(), text)?;
                    (f.path().to_path_buf(), Some(f))
                }
            };
            progress.info(match &source {
                BuildSource::Inline => format!(
                    "building the inline Dockerfile (given through the API or --dockerfile-content) with context {}",
                    context.display()
                ),
                _ => format!(
                    "building {} with context {}{}",
                    dockerfile.display(),
                    context.display(),
                    if req.dockerfile.is_some() {
                        ""
                    } else {
                        " (a Dockerfile is in the context; --auto builds from the plan instead)"
                    }
                ),
            });
            let loaded = crate::dockerfile::load_with(context, &dockerfile, &args, &resolver)?;
            for w in &loaded.lowered.warnings {
                progress.warn(w.clone());
            }
            (loaded.lowered.graph, loaded.context)
        }
    };
    let mut graph = graph;
    add_labels(&mut graph, &req.labels);
    let graph = &graph;
    build_info.context_digest = ctx
        .digest_sources(&[".".to_string()], &Default::default())
        .ok()
        .map(|d| d.to_string());
    let ctx = Mutex::new(ctx);
    let mut opts = solve_options(Some(&ctx), client, req)?;
    opts.package_locks = package_locks;
    opts.host_ca = host_ca;
    opts.local_images = local_images;
    let is_auto = matches!(source, BuildSource::Auto { .. });
    let can_add_packages = is_auto && opts.package_locks.is_empty();
    // An auto build may run again, once for each reason: emulated, when
    // the native cross build cannot make the app for the target; with the
    // runtime packages its shared-library check named.
    let mut again = req.clone();
    let mut emulate = false;
    let mut added = false;
    let mut retried: Option<crate::graph::Graph> = None;
    let solved = loop {
        let g = retried.as_ref().unwrap_or(graph);
        let e = match solver.solve(g, g.target, &opts, progress) {
            Ok(s) => break s,
            Err(e) if !is_auto => return Err(e),
            Err(e) => e,
        };
        let text = format!("{e:#}");
        let reason = (!emulate)
            .then(|| crate::plan::providers::emulate_reason(&text))
            .flatten();
        let add = if let Some(reason) = reason {
            let platform = again.platform.as_deref().unwrap_or("this platform");
            progress.info(format!(
                "{reason}: building the app on {platform} instead, its build stage emulated under qemu-user (slower)"
            ));
            emulate = true;
            None
        } else {
            // The runtime stage's shared-library check named packages
            // that ship what its files need: add them and build once more
            // (the build stage is cached). Not with a kiln.lock (it fixes
            // the package sets), nor for packages kept out
            // (`buildOnlyPkgs`).
            let add = (can_add_packages && !added)
                .then(|| crate::plan::shared_libs::packages_to_add(&text))
                .flatten();
            let Some(add) = add else { return Err(e) };
            let old = again
                .plan
                .env
                .iter()
                .position(|v| v.starts_with("KILN_RUNTIME_APT_PKGS="));
            let value = match old.map(|i| again.plan.env.remove(i)) {
                Some(v) => format!("{v} {}", add.join(" ")),
                None => format!("KILN_RUNTIME_APT_PKGS={}", add.join(" ")),
            };
            again.plan.env.push(value);
            Some(add)
        };
        let mut graph2 = auto_graph(&again, progress, emulate)?.graph;
        if let Some(add) = add {
            let runtime_has_them = graph2.stages.get(1).is_some_and(|st| match &st.base {
                crate::graph::Base::Packages(p) => add.iter().all(|a| p.packages.contains(a)),
                _ => false,
            });
            if !runtime_has_them {
                return Err(e);
            }
            progress.info(format!(
                "the runtime image lacked shared libraries its files need: adding {} to its packages and building again (list them in `[start] aptPkgs` to skip this)",
                add.join(" ")
            ));
            added = true;
        }
        if let Some(t) = &req.target {
            graph2.target = auto_target(&graph2, t)?;
        }
        let lock_path = req.context.join(LOCK_FILE);
        if emulate && lock_path.is_file() {
            opts.package_locks = lock_package_bases(&mut graph2, &lock_path)?;
        }
        add_labels(&mut graph2, &req.labels);
        retried = Some(graph2);
    };
    let cache = solved.cache;
    // `--cache-to type=inline`: the image carries its own steps' record
    // (a new config, so a new digest; without it the image is unchanged).
    let image = match &req.cache_to {
        Some(to) if to.inline => {
            crate::solver::remote::with_inline_cache(&solver.store, &solved.image, &cache)
                .context("adding the inline cache to the image (--cache-to type=inline)")?
        }
        _ => solved.image,
    };
    let digest = image.digest()?;
    let record = match record_of(
        req,
        solver,
        &image,
        &solved.package_sets,
        &source,
        build_info,
        omit_dev,
    ) {
        Ok(r) => Some(r),
        Err(e) if req.sbom || req.provenance => {
            return Err(e.context("recording what the image holds (--sbom/--provenance)"));
        }
        Err(e) => {
            progress.warn(format!("no SBOM recorded for this image: {e:#}"));
            None
        }
    };
    let attachments = match &record {
        Some(r) => crate::sbom::attach::documents(r, req.sbom, req.provenance)?,
        None => Vec::new(),
    };
    Ok(Built {
        image,
        digest,
        cache,
        stats: solved.stats,
        source,
        record,
        attachments,
    })
}

/// What [`deliver`] names, exports and pushes.
struct Delivery<'a> {
    /// The image's manifest, or the index over its platforms' manifests.
    root: &'a oci_spec::image::Descriptor,
    digest: &'a Digest,
    names: &'a [String],
    push_refs: Vec<Reference>,
    /// Each platform's image and solve, for `--cache-to` (one cache for
    /// them all).
    cache: Vec<(&'a Image, &'a crate::solver::remote::Exportable)>,
    /// Documents to attach, by the manifest they describe.
    attachments: &'a [(
        oci_spec::image::Descriptor,
        Vec<crate::sbom::attach::Document>,
    )],
}

/// Names the built image in the local store, writes `req.outputs` and
/// pushes it. Returns the stored names and `reference@digest` of each push.
fn deliver(
    req: &BuildRequest,
    solver: &Solver,
    client: &Client,
    d: &Delivery<'_>,
    progress: &Progress,
) -> Result<(Vec<String>, Vec<String>)> {
    let Delivery {
        root,
        digest,
        names,
        push_refs,
        cache,
        attachments,
    } = d;
    let push_refs = push_refs.clone();
    let mut stored = Vec::new();
    for n in names.iter() {
        stored.push(solver.images.import(&solver.store, root, n)?);
    }
    let label = names
        .first()
        .cloned()
        .unwrap_or_else(|| format!("sha256:{}", digest.hex()));
    let mut pushed = Vec::new();
    for out in &req.outputs {
        match out {
            // Pushed below, with --push's.
            Destination::Registry(_) => {}
            o => {
                let how = ship::ship(
                    &solver.store,
                    root,
                    &label,
                    o,
                    &ShipOptions::default(),
                    progress,
                )
                .with_context(|| format!("exporting to {o:?}"))?;
                if let Shipped::Sent(s) = how {
                    progress.info(format!(
                        "sent {} to {} ({} blobs sent, {} already there)",
                        s.tag, s.target, s.blobs_sent, s.blobs_present
                    ));
                    pushed.push(format!("{}@{}", s.target, s.digest));
                }
            }
        }
        if let Destination::OciDir(dest) = out {
            for (subject, docs) in attachments.iter() {
                crate::sbom::attach::into_layout(&solver.store, subject, docs, dest)?;
            }
        }
    }
    // `-o type=registry,name=REF` pushes to REF; `--push` and a nameless
    // registry output push to every -t name.
    let mut refs = push_refs;
    for out in &req.outputs {
        match out {
            Destination::Registry(Some(r)) if !refs.contains(r) => refs.push(r.clone()),
            Destination::Registry(None) if refs.is_empty() => {
                if names.is_empty() {
                    bail!("a registry output needs a name: give -t REGISTRY/NAME:TAG");
                }
                for n in names.iter() {
                    refs.push(Reference::parse(n)?);
                }
            }
            _ => {}
        }
    }
    let mut pushed_to: Vec<Reference> = Vec::new();
    for r in refs {
        if req
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            return Err(crate::sandbox::Cancelled.into());
        }
        let to = Destination::Registry(Some(r.clone()));
        let opts = ShipOptions {
            client: Some(client),
            ..ShipOptions::default()
        };
        let Shipped::Pushed(_, summary) =
            ship::ship(&solver.store, root, &r.to_string(), &to, &opts, progress)?
        else {
            unreachable!("a registry destination is pushed")
        };
        progress.info(format!(
            "pushed {r} ({} blobs sent, {} already there)",
            summary.blobs_sent, summary.blobs_skipped
        ));
        for (subject, docs) in attachments.iter() {
            let subject_digest = crate::oci::image::desc_digest(subject)?;
            for a in docs {
                let artifact = crate::sbom::attach::artifact(&solver.store, subject, a)?;
                let how = registry::push::push_referrer(
                    client,
                    &solver.store,
                    &artifact,
                    &subject_digest,
                    &r,
                    progress,
                )?;
                progress.info(format!(
                    "attached {} to {r}@{subject_digest} ({how})",
                    a.artifact_type
                ));
            }
        }
        pushed.push(format!("{}@{digest}", r.name()));
        pushed_to.push(r);
    }
    if let Some(to) = &req.cache_to
        && !to.inline
    {
        let images: Vec<&Image> = cache.iter().map(|(image, _)| *image).collect();
        let ex = crate::solver::remote::Exportable::merged(cache.iter().map(|(_, ex)| *ex));
        export_cache(client, solver, &images, &ex, to, &pushed_to, progress)?;
    }
    Ok((stored, pushed))
}

/// `--cache-to`: the build's steps to the registry cache, mounting the
/// images' layers (one per platform) from the repositories they were just
/// pushed to (and those kiln's blob origins know) instead of uploading
/// them again.
fn export_cache(
    client: &Client,
    solver: &Solver,
    images: &[&Image],
    ex: &crate::solver::remote::Exportable,
    to: &CacheTo,
    pushed_to: &[Reference],
    progress: &Progress,
) -> Result<()> {
    let target = Reference::parse(&to.reference)
        .with_context(|| format!("--cache-to ref {}", to.reference))?;
    let blobs: Vec<crate::oci::Digest> = ex
        .steps
        .iter()
        .filter_map(|s| s.record.layer.as_ref().map(|l| l.blob.clone()))
        .collect();
    let mut sources = match registry::origins::default_path() {
        Ok(p) => registry::origins::lookup(&p, &target.registry, &target.repository, &blobs),
        Err(_) => Default::default(),
    };
    for r in pushed_to.iter().filter(|r| r.registry == target.registry) {
        for l in images.iter().flat_map(|i| i.manifest.layers()) {
            sources
                .entry(crate::oci::image::desc_digest(l)?)
                .or_default()
                .insert(0, r.repository.clone());
        }
    }
    let task = progress.task(format!("[cache] exporting to {}", to.reference));
    let summary = crate::solver::remote::export(
        client,
        &solver.store,
        solver.remote.as_ref(),
        ex,
        to,
        sources,
        progress,
    )?;
    task.finish("done");
    progress.info(format!(
        "exported the build cache to {} ({} blobs sent, {} mounted, {} already there)",
        summary.reference, summary.blobs_sent, summary.blobs_mounted, summary.blobs_skipped
    ));
    Ok(())
}

/// `KILN_*` variables of kiln's environment that the CLI hands to the plan
/// with the others but that only say where this machine keeps things.
const MACHINE_SETTINGS: &[&str] = &[
    "KILN_CACHE_DIR",
    "KILN_DATA_DIR",
    "KILN_PROGRESS",
    "KILN_NET_TIMEOUT",
    "KILN_CA_CERTS",
    "KILN_NO_HOST_CA",
    "KILN_DEBIAN_KEYRINGS",
];

/// Makes and keeps the SBOM record of a built image.
fn record_of(
    req: &BuildRequest,
    solver: &Solver,
    image: &Image,
    sets: &[crate::packages::image::ComposedSet],
    source: &BuildSource,
    mut build: crate::sbom::BuildInfo,
    omit_dev: bool,
) -> Result<crate::sbom::Record> {
    // Secret values never reach the record, even inside a build argument.
    let mut redactor = crate::redact::Redactor::new();
    for v in req.secrets.values() {
        redactor.add(v);
    }
    let clean = |s: &str| redactor.redact(s).into_owned();
    // A value under a name that says it is a credential is masked too:
    // `--build-arg NPM_TOKEN=…` is no `--secret`, but it is one.
    let value = |k: &str, v: &str| {
        let k = k.to_ascii_uppercase();
        if ["TOKEN", "PASSWORD", "SECRET", "KEY", "AUTH", "CREDENTIAL"]
            .iter()
            .any(|w| k.contains(w))
        {
            crate::redact::MASK.to_string()
        } else {
            clean(v)
        }
    };
    build.frontend = match source {
        BuildSource::Auto { .. } => "auto",
        BuildSource::Dockerfile(_) => "dockerfile",
        BuildSource::Inline => "inline",
    }
    .into();
    if let BuildSource::Auto { providers } = source {
        build.providers = providers.clone();
    }
    for (k, v) in &req.build_args {
        build
            .arguments
            .insert(format!("build-arg:{k}"), value(k, v));
    }
    for e in &req.plan.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        // Where this machine keeps kiln's state is no input of the image.
        if MACHINE_SETTINGS.contains(&k) {
            continue;
        }
        build.arguments.insert(format!("env:{k}"), value(k, v));
    }
    for (k, v) in &req.labels {
        build.arguments.insert(format!("label:{k}"), clean(v));
    }
    for (k, v) in [
        ("target", req.target.as_deref()),
        ("platform", req.platform.as_deref()),
        ("start-cmd", req.plan.start_cmd.as_deref()),
        ("install-cmd", req.plan.install_cmd.as_deref()),
        ("build-cmd", req.plan.build_cmd.as_deref()),
        ("config", req.plan.config.as_deref()),
    ] {
        if let Some(v) = v {
            build.arguments.insert(k.into(), clean(v));
        }
    }
    if let Some(p) = build.plan.take() {
        build.plan = Some(serde_json::from_str(&clean(&serde_json::to_string(&p)?))?);
    }
    build.secret_ids = req.secrets.keys().cloned().collect();
    build.kiln_version = env!("CARGO_PKG_VERSION").into();
    let snapshot = |l: &crate::packages::compose::PackageLayer| {
        solver
            .snapshots
            .ensure(&solver.store, &l.blob, l.compression)
            .map(|(dir, _)| dir)
    };
    let record = crate::sbom::collect::record(crate::sbom::collect::Inputs {
        image,
        package_sets: sets,
        snapshot: &snapshot,
        lockfile_dir: matches!(source, BuildSource::Auto { .. }).then_some(req.context.as_path()),
        omit_dev,
        build,
    })?;
    crate::sbom::save(&record)?;
    Ok(record)
}

/// The lockfile of an auto build's package sets, in the context.
pub const LOCK_FILE: &str = "kiln.lock";

/// Points every package base of `g` at its set in the lockfile at `path`.
/// A set the lockfile lacks is an error (the plan changed since `kiln lock
/// --auto`), never a silent resolution against today's archive.
fn lock_package_bases(
    g: &mut crate::graph::Graph,
    path: &Path,
) -> Result<BTreeMap<crate::oci::Digest, crate::packages::lock::Lockfile>> {
    let locks = crate::packages::lock::Locks::read(path)?;
    let mut used = BTreeMap::new();
    for stage in &mut g.stages {
        let crate::graph::Base::Packages(p) = &mut stage.base else {
            continue;
        };
        let req = crate::solver::packages_request(p, &stage.platform)?;
        let Some(set) = locks.find(&p.suite, &req.repo.arch, p.base, &p.packages) else {
            bail!(
                "{}: no set for the {} stage's packages {} ({} {}): the plan changed since it was written; run `kiln lock --auto {}` (with the same -a/-e/-c flags) to update it",
                path.display(),
                stage.name.as_deref().unwrap_or("unnamed"),
                p.packages.join(" "),
                p.suite,
                req.repo.arch,
                path.parent()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| ".".into())
            );
        };
        let digest = set.digest()?;
        p.lock = Some(digest.clone());
        used.insert(digest, set.clone());
    }
    Ok(used)
}

/// Resolves the package sets of the context's auto plan (today's Debian
/// archive) into a [`Locks`](crate::packages::lock::Locks): what `kiln lock
/// --auto DIR` writes to `DIR/kiln.lock` so that auto builds compose exactly
/// these package files on every machine.
pub fn lock_auto(req: &BuildRequest, progress: &Progress) -> Result<crate::packages::lock::Locks> {
    let graph = auto_graph(req, progress, false)?.graph;
    let mut seen = std::collections::BTreeSet::new();
    let mut sets = Vec::new();
    for stage in &graph.stages {
        let crate::graph::Base::Packages(p) = &stage.base else {
            continue;
        };
        let mut p = p.clone();
        p.extra_ca.clear();
        if !seen.insert(p.reference()) {
            continue;
        }
        let preq = crate::solver::packages_request(&p, &stage.platform)?;
        sets.push(crate::packages::image::lock(&preq, progress)?);
    }
    Ok(crate::packages::lock::Locks {
        version: crate::packages::lock::LOCK_VERSION,
        sets,
    })
}

/// The auto plan for the context, lowered to the graph. Says which
/// providers matched and why the plan (not a Dockerfile) is used.
/// `--target` of an auto build: one of the plan's stages (`build`,
/// `runtime`), as a Dockerfile's `AS` names are for a Dockerfile build.
fn auto_target(graph: &crate::graph::Graph, target: &str) -> Result<usize> {
    let want = target.to_ascii_lowercase();
    graph
        .stages
        .iter()
        .position(|s| s.name.as_deref() == Some(want.as_str()))
        .with_context(|| {
            let names: Vec<&str> = graph
                .stages
                .iter()
                .filter_map(|s| s.name.as_deref())
                .collect();
            format!(
                "--target {target}: the auto build has no such stage (its stages: {})",
                names.join(", ")
            )
        })
}

/// An auto build's plan lowered to the graph.
struct AutoGraph {
    graph: crate::graph::Graph,
    ctx: crate::context::Context,
    /// The providers that matched.
    providers: Vec<String>,
    /// The host's CA bundle the build steps mount (`None` with
    /// `--no-host-ca` or when the host has no store).
    host_ca: Option<Vec<u8>>,
    /// The plan the graph was lowered from.
    plan: crate::plan::BuildPlan,
}

/// `emulate`: the build stage runs on the target platform even where the
/// provider could build natively for it (its cross build failed).
fn auto_graph(req: &BuildRequest, progress: &Progress, emulate: bool) -> Result<AutoGraph> {
    let dir = &req.context;
    let plan = req
        .plan
        .plan(dir, req.secrets.keys().cloned().collect(), progress)?;
    let providers = plan.providers.clone().unwrap_or_default();
    progress.info(format!(
        "Auto-build using providers: {} ({})",
        if providers.is_empty() {
            "none".to_string()
        } else {
            providers.join(", ")
        },
        match &req.plan.plan_file {
            Some(f) => format!("the plan {}", f.display()),
            None if req.auto => "--auto given".to_string(),
            None => "no Dockerfile in the context".to_string(),
        }
    ));
    // `-e` now reaches the image (Nixpacks' rule): say so where it shows.
    let cli_vars = image_vars_from_env(&req.plan.env, &plan);
    if !cli_vars.is_empty() {
        progress.info(format!(
            "in the image's environment (-e): {} (build-only variables: --build-env)",
            cli_vars.join(" ")
        ));
    }
    if req.debug {
        progress.info(format!(
            "build summary:\n{}",
            crate::plan::lower::summary(&plan)?
        ));
        let generated = crate::plan::dockerfile::generate(
            &plan,
            &crate::plan::dockerfile::Options {
                base_image: None,
                context: Some(dir.to_path_buf()),
            },
        )?;
        progress.info(format!(
            "equivalent Dockerfile (`kiln dockerfile {}`):\n{}",
            dir.display(),
            generated.dockerfile
        ));
    }
    let (matcher, ignore_file) = crate::plan::lower::context_ignore(dir)?;
    if ignore_file.is_none() {
        progress.info(format!(
            "no .dockerignore: leaving out {} (add a .dockerignore to choose)",
            crate::plan::lower::DEFAULT_IGNORE.join(" ")
        ));
    }
    let ctx = crate::context::Context::open_cached(dir, matcher)?;
    let platform = match &req.platform {
        Some(p) => {
            crate::platform::Platform::parse(p).map_err(|e| anyhow::anyhow!("--platform: {e}"))?
        }
        None => crate::platform::Platform::host(),
    };
    // Every auto build stands on composed Debian packages: refuse a
    // platform without them before any work.
    platform
        .debian_arch()
        .map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
    let build_ca = req
        .ca_certs
        .iter()
        .map(|p| read_ca(p))
        .collect::<Result<Vec<_>>>()?;
    // Read once, here: every step of the build mounts this copy.
    let host_ca = if req.no_host_ca {
        None
    } else {
        let bundle = crate::solver::trust::host_bundle(&build_ca);
        if bundle.is_none() {
            progress.info(
                "no CA certificates found on the host: build steps trust only the image's bundle",
            );
        }
        bundle
    };
    let build_platform = if emulate {
        platform.clone()
    } else {
        crate::platform::Platform::host()
    };
    let lower_opts = crate::plan::lower::LowerOptions {
        platform,
        // A Go build for another platform cross-compiles here, pip
        // installs the target's wheels here.
        build_platform,
        build_ca,
        host_ca: host_ca.is_some(),
        cache_key: req.plan.cache_key.clone(),
        allow_no_start: req.plan.no_error_without_start,
    };
    if let crate::plan::providers::Cross::Emulate(why) =
        crate::plan::lower::cross_build(&plan, &ctx, &lower_opts)
    {
        progress.info(format!(
            "{why}: building the app on {} (its build stage emulated under qemu-user, slower)",
            lower_opts.platform
        ));
    }
    let graph = crate::plan::lower::lower(&plan, &ctx, &lower_opts)?;
    Ok(AutoGraph {
        graph,
        ctx,
        providers,
        host_ca,
        plan,
    })
}

/// Whether the image holds no development dependencies: the plan prunes
/// them after the build, or installs without them (`npm ci --omit=dev`
/// when nothing after the install could use one).
fn omits_dev_dependencies(plan: &crate::plan::BuildPlan) -> bool {
    plan.phase("prune").is_some()
        || plan
            .phase("install")
            .is_some_and(|p| p.cmds.iter().flatten().any(|c| c.contains("--omit=dev")))
}

/// The names `-e` put in the plan's image variables (not the options).
fn image_vars_from_env(env: &[String], plan: &crate::plan::BuildPlan) -> Vec<String> {
    let vars = plan.variables.clone().unwrap_or_default();
    let mut names: Vec<String> = env
        .iter()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string())
        .filter(|k| vars.contains_key(k))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A PEM CA certificate file as (file name, text).
fn read_ca(p: &Path) -> Result<(String, String)> {
    let pem = std::fs::read_to_string(p)
        .with_context(|| format!("--ca-cert {}: cannot read it", p.display()))?;
    if !pem.trim_start().starts_with("-----BEGIN CERTIFICATE-----") {
        bail!(
            "--ca-cert {}: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            p.display()
        );
    }
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "extra.crt".into());
    Ok((name, pem))
}

/// Which frontend runs, as platforms decide: inline Dockerfile content >
/// the Dockerfile (`-f`, else `CONTEXT/Dockerfile` when present) > the auto
/// plan. `auto` forces the plan; an explicit `-f` that is missing is an
/// error, never a fallback.
pub fn choose_source(req: &BuildRequest) -> Result<BuildSource> {
    if req.auto {
        if req.dockerfile_content.is_some() || req.dockerfile.is_some() {
            bail!("--auto cannot be combined with -f or --dockerfile-content");
        }
        return Ok(BuildSource::Auto {
            providers: Vec::new(),
        });
    }
    if req.dockerfile_content.is_some() {
        return Ok(BuildSource::Inline);
    }
    if let Some(f) = &req.dockerfile {
        if !f.is_file() {
            return Err(
                InputError::in_file(f, format!("Dockerfile not found: {}", f.display())).into(),
            );
        }
        return Ok(BuildSource::Dockerfile(f.clone()));
    }
    let default = req.context.join("Dockerfile");
    if default.is_file() {
        return Ok(BuildSource::Dockerfile(default));
    }
    Ok(BuildSource::Auto {
        providers: Vec::new(),
    })
}

/// Reads `--secret id=X,src=FILE` / `id=X,env=VAR` (BuildKit's syntax).
pub fn parse_secret(spec: &str) -> Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => bail!("--secret {spec:?}: expected id=ID,src=FILE or id=ID,env=VAR"),
        }
    }
    let id = id.with_context(|| format!("--secret {spec:?} has no id="))?;
    let value = match (src, env) {
        (Some(f), _) => std::fs::read(Path::new(&f))
            .with_context(|| format!("--secret id={id}: cannot read {f}"))?,
        (None, Some(v)) => std::env::var(&v)
            .with_context(|| format!("--secret id={id}: environment variable {v} is not set"))?
            .into_bytes(),
        (None, None) => std::env::var(&id)
            .with_context(|| format!("--secret id={id}: give src=FILE or env=VAR"))?
            .into_bytes(),
    };
    Ok((id, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kiln build --pkgs/--libs/--apt/--build-env` reach the plan as
    /// `kiln plan`'s flags do: Nix names mapped to Debian packages for the
    /// build stage and the runtime image, lists split on commas/spaces.
    /// The library's `kiln::plan` gives the plan the build uses.
    #[test]
    fn build_plan_flags_reach_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Procfile"), "web: sh -c 'echo hi'\n").unwrap();
        let req = BuildRequest {
            context: dir.path().to_path_buf(),
            plan: PlanRequest {
                pkgs: vec!["cowsay".into()],
                libs: vec!["zlib".into()],
                apt: vec!["jq, curl".into()],
                build_env: vec!["ONLY_BUILD=1".into()],
                ..PlanRequest::default()
            },
            ..BuildRequest::default()
        };
        let plan = crate::plan(dir.path(), &req.plan).unwrap();
        let built = req
            .plan
            .plan(dir.path(), Vec::new(), &Progress::quiet())
            .unwrap();
        assert_eq!(
            serde_json::to_string(&plan).unwrap(),
            serde_json::to_string(&built).unwrap()
        );
        let setup = plan.phase("setup").unwrap().apt_pkgs.clone().unwrap();
        for p in ["cowsay", "zlib1g-dev", "jq", "curl"] {
            assert!(setup.iter().any(|s| s == p), "{p} not in {setup:?}");
        }
        let runtime = plan.start.clone().unwrap().apt_pkgs.unwrap();
        for p in ["cowsay", "zlib1g", "jq", "curl"] {
            assert!(runtime.iter().any(|s| s == p), "{p} not in {runtime:?}");
        }
        assert_eq!(plan.build_variables.unwrap()["ONLY_BUILD"], "1");
    }

    /// The SBOM leaves out dev dependencies whether the plan prunes them or
    /// never installs them (node-npm: `npm ci --omit=dev`, no prune).
    #[test]
    fn dev_dependencies_are_omitted_by_a_prune_or_a_production_install() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let plan_of = |name: &str| {
            PlanRequest::default()
                .plan(&examples.join(name), Vec::new(), &Progress::quiet())
                .unwrap()
        };
        let npm = plan_of("node-npm");
        assert!(npm.phase("prune").is_none());
        assert!(omits_dev_dependencies(&npm));
        assert!(!omits_dev_dependencies(&plan_of("procfile")));
    }
}
