//! Deploy files: find every resource that asks for a build, build it with
//! [`crate::build`], push it, and give back the same documents with
//! `build:` replaced by `image: REGISTRY/…:TAG@sha256:…`.
//!
//! | module | owns |
//! |---|---|
//! | [`yaml`] | reading YAML streams (`FILE:LINE:COLUMN` errors), typed fields |
//! | [`lttle`] | lttle-style resource documents (`machine:`/`app:` with `build: auto / options / docker`) |
//! | [`compose`] | compose files (`services.*.build`, `image`) |
//! | [`ftl`] | FTL-style `ftl.yaml` (`services[].path` / `build`, optional `image`) |
//! | [`rewrite`] | putting `image:` where `build:` was, keeping everything else |
//!
//! Everything is checked before anything is built (syntax, build modes,
//! directories, Dockerfiles), builds run on `jobs` threads sharing one
//! cache, and the documents are only returned when every resource
//! succeeded: a failure never yields output that references half of the
//! work. Images already pushed by then stay valid in the registry.
//!
//! ```no_run
//! # fn main() -> kiln::Result<()> {
//! use kiln::deploy::{DeployRequest, deploy};
//! let req = DeployRequest {
//!     files: vec!["lttle.yaml".into()],
//!     registry: "registry.example.com/tenant".into(),
//!     ..DeployRequest::default()
//! };
//! let out = deploy(&req, &kiln::progress::Progress::quiet())?;
//! print!("{}", out.combined());
//! # Ok(()) }
//! ```

pub mod compose;
pub mod ftl;
pub mod lttle;
pub mod rewrite;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest as _, Sha256};

use crate::Result;
use crate::build::{BuildRequest, PlanRequest};
use crate::oci::Digest;
use crate::progress::Progress;
use crate::registry::{self, Client, ClientOptions, Reference};

pub use rewrite::Seg;

/// What `kiln deploy` does, as a library call.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Deploy files (lttle resources, compose files, `ftl.yaml`).
    pub files: Vec<PathBuf>,
    /// `HOST[/NAMESPACE]`: where generated image names are pushed.
    pub registry: String,
    /// `--debug-build`: the build summary, generated Dockerfile and logs.
    pub debug_build: bool,
    /// `--no-build-cache`: run every step.
    pub no_cache: bool,
    /// `--skip-push`: build (and name) the images, push nothing.
    pub skip_push: bool,
    /// How many resources build at once (default 2).
    pub jobs: usize,
    /// Registries reachable over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Where images without a registry reference (FTL services without
    /// `image:`) go.
    pub unpushed: Destination,
    /// Set to stop the builds (Ctrl-C).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Extra CA certificates for auto builds' build stages (`--ca-cert`).
    pub ca_certs: Vec<PathBuf>,
    /// Auto builds' steps do not trust the host's CA bundle (`--no-host-ca`).
    pub no_host_ca: bool,
    /// Registry caches every build reads (`--cache-from`), one per
    /// resource: see [`resource_cache_ref`].
    pub cache_from: Vec<crate::build::CacheFrom>,
    /// The registry cache every build writes (`--cache-to`), one per resource.
    pub cache_to: Option<crate::build::CacheTo>,
    /// `--platform`: the platforms of every image (`BuildRequest::platform`'s
    /// comma list; several make each image an index); `None`: this
    /// machine's.
    pub platform: Option<String>,
}

impl Default for DeployRequest {
    fn default() -> Self {
        DeployRequest {
            files: Vec::new(),
            registry: String::new(),
            debug_build: false,
            no_cache: false,
            skip_push: false,
            jobs: 2,
            insecure_registries: Vec::new(),
            unpushed: Destination::LocalStore,
            cancel: None,
            ca_certs: Vec::new(),
            no_host_ca: false,
            cache_from: Vec::new(),
            cache_to: None,
            platform: None,
        }
    }
}

/// Where an image that names no registry ends up: [`Destination::LocalStore`]
/// or [`Destination::Ssh`] (`--ssh [ssh://][USER@]HOST[:PORT][/PATH]`).
pub use crate::ship::Destination;

/// Where a resource's image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `REGISTRY/REPO:TAG`, pushed.
    Registry(String),
    /// A name in the local store (FTL services without `image:`).
    Local(String),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Registry(r) | Target::Local(r) => r,
        }
    }
}

/// How one resource is built: what [`BuildRequest`] gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSpec {
    /// Absolute or relative to the current dir (already joined to the
    /// deploy file's dir).
    pub context: PathBuf,
    pub dockerfile: Option<PathBuf>,
    /// `dockerfileContent:`: inline text, first in priority.
    pub dockerfile_content: Option<String>,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `build: auto`: the plan even if a Dockerfile is present.
    pub auto: bool,
    /// `command:`: the plan's start command.
    pub start_cmd: Option<String>,
}

/// A resource that asks for a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub file: PathBuf,
    /// `NAMESPACE/NAME` as deploy tools print it.
    pub label: String,
    pub spec: BuildSpec,
    pub target: Target,
    /// Which document of the file, and the path to the mapping that holds
    /// `build:`.
    pub doc: usize,
    pub at: Vec<Seg>,
}

impl Resource {
    fn what(&self) -> String {
        format!("{} ({})", self.label, self.file.display())
    }
}

/// One built image.
#[derive(Debug, Clone)]
pub struct Built {
    pub label: String,
    pub file: PathBuf,
    pub digest: Digest,
    /// `REF@sha256:…`: what the output documents now say.
    pub reference: String,
    pub pushed: bool,
    pub blobs_sent: usize,
    pub blobs_skipped: usize,
}

/// A deploy file with its documents resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub file: PathBuf,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct DeployResult {
    pub files: Vec<Resolved>,
    pub images: Vec<Built>,
}

impl DeployResult {
    /// All files' documents as one stream (`---` between files).
    pub fn combined(&self) -> String {
        let mut out = String::new();
        for (i, f) in self.files.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&f.text);
            if !f.text.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    pub fn blobs_sent(&self) -> usize {
        self.images.iter().map(|b| b.blobs_sent).sum()
    }
}

/// A parsed deploy file: its documents and the resources to build.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub file: PathBuf,
    pub text: String,
    pub docs: Vec<serde_norway::Value>,
    pub resources: Vec<Resource>,
}

/// Which format a file is in, from its first non-empty document:
/// `services:` as a mapping is compose, as a list is FTL, anything else is
/// lttle-style resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Lttle,
    Compose,
    Ftl,
}

pub fn detect(docs: &[serde_norway::Value]) -> Format {
    let first = docs.iter().find(|d| !d.is_null());
    match first.and_then(|d| d.get("services")) {
        Some(serde_norway::Value::Mapping(_)) => Format::Compose,
        Some(serde_norway::Value::Sequence(_)) => Format::Ftl,
        _ => Format::Lttle,
    }
}

/// Reads and checks one deploy file (no build).
pub fn parse(file: &Path, text: &str, registry: &str) -> Result<Parsed> {
    let docs = yaml::load(file, text)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let naming = Naming {
        file,
        base,
        registry,
    };
    let resources = match detect(&docs) {
        Format::Lttle => lttle::resources(&docs, &naming)?,
        Format::Compose => compose::resources(&docs, &naming)?,
        Format::Ftl => ftl::resources(&docs, &naming)?,
    };
    Ok(Parsed {
        file: file.to_path_buf(),
        text: text.to_string(),
        docs,
        resources,
    })
}

/// What the format modules need to name images.
pub struct Naming<'a> {
    pub file: &'a Path,
    /// The deploy file's directory: paths in it are relative to it.
    pub base: &'a Path,
    /// `HOST[/NAMESPACE]`
    pub registry: &'a str,
}

impl Naming<'_> {
    /// The push target: `image` as given when it names a registry host,
    /// `REGISTRY/image` when it does not, else `REGISTRY/NAME:TAG`. A
    /// missing tag is `latest`.
    pub fn reference(
        &self,
        image: Option<&str>,
        name: &str,
        tag: &str,
        field: &str,
    ) -> Result<String> {
        let raw = match image {
            Some(i) if has_registry_host(i) => i.to_string(),
            Some(i) => self.under_registry(i, field)?,
            None => self.under_registry(&format!("{name}:{tag}"), field)?,
        };
        let r = Reference::parse(&raw).map_err(|e| {
            anyhow!(
                "{}: {field}: {raw:?} is not a valid image reference: {e}",
                self.file.display()
            )
        })?;
        if r.digest.is_some() {
            bail!(
                "{}: {field}: {raw:?} has a digest; give a tag (kiln adds the digest it builds)",
                self.file.display()
            );
        }
        // Reference::parse fills in `latest`; look at what was written.
        let last = raw.rsplit('/').next().unwrap_or(&raw);
        Ok(if last.contains(':') {
            raw
        } else {
            format!("{raw}:latest")
        })
    }

    fn under_registry(&self, repo: &str, field: &str) -> Result<String> {
        if self.registry.is_empty() {
            bail!(
                "{}: {field}: no registry to push {repo} to: give --registry HOST[/NAMESPACE] or a full image reference",
                self.file.display()
            );
        }
        Ok(format!("{}/{repo}", self.registry.trim_end_matches('/')))
    }

    /// A path from the deploy file, relative to its directory.
    pub fn path(&self, p: &str) -> PathBuf {
        clean(&self.base.join(p))
    }

    /// The generated name for a resource without `name:`/`image:`: a UUID
    /// (as lttle and Nixpacks do) derived from the deploy file's absolute
    /// path, the resource kind and its NAMESPACE/NAME, so the same
    /// resource keeps the same repository between runs (and a re-run
    /// pushes nothing new).
    pub fn generated_name(&self, kind: &str, label: &str) -> String {
        let abs = std::fs::canonicalize(self.file).unwrap_or_else(|_| self.file.to_path_buf());
        let mut h = Sha256::new();
        h.update(b"kiln-deploy-name-v1\0");
        h.update(abs.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(kind.as_bytes());
        h.update(b"\0");
        h.update(label.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        // RFC 9562 layout: version 5 (name-based), variant 10.
        b[6] = (b[6] & 0x0f) | 0x50;
        b[8] = (b[8] & 0x3f) | 0x80;
        let x = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &x[..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..]
        )
    }
}

/// Drops `.` components (`./app/./x` → `app/x`) so messages show the
/// path as a person would write it; `..` is kept (symlinks make it
/// meaningful).
pub fn clean(p: &Path) -> PathBuf {
    let out: PathBuf = p
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// docker's rule: the first path component is a registry host when it has
/// a `.` or `:` or is `localhost`.
pub fn has_registry_host(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// A repository-safe name: lower case, `[a-z0-9._-]`, as compose makes
/// project names.
pub fn sanitize(s: &str) -> String {
    let out: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let out = out
        .trim_matches(|c| c == '-' || c == '.' || c == '_')
        .to_string();
    if out.is_empty() { "app".into() } else { out }
}

/// Checks what can be checked without building: the build directory and
/// the Dockerfile.
pub fn check(r: &Resource) -> Result<()> {
    if !r.spec.context.is_dir() {
        bail!(
            "{}: build directory {} does not exist (paths are relative to the deploy file)",
            r.what(),
            r.spec.context.display()
        );
    }
    if r.spec.dockerfile_content.is_none()
        && let Some(f) = &r.spec.dockerfile
        && !f.is_file()
    {
        // The message deploy tools print, exactly, then where.
        return Err(anyhow!("Dockerfile not found: {}", f.display()))
            .with_context(|| format!("building {}", r.what()));
    }
    Ok(())
}

/// Reads, builds, pushes and rewrites; see the module docs.
pub fn deploy(req: &DeployRequest, progress: &Progress) -> Result<DeployResult> {
    if req.files.is_empty() {
        bail!("no deploy files given");
    }
    let mut parsed = Vec::new();
    for f in &req.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        parsed.push(parse(f, &text, &req.registry)?);
    }
    let resources: Vec<Resource> = parsed.iter().flat_map(|p| p.resources.clone()).collect();
    for r in &resources {
        check(r)?;
    }
    let results = run_all(&resources, req, progress);
    let mut built = Vec::new();
    let mut failures = Vec::new();
    for (r, res) in resources.iter().zip(results) {
        match res {
            Ok(b) => built.push(b),
            Err(e) => failures.push((r, e)),
        }
    }
    if !failures.is_empty() {
        let mut head = format!(
            "{} of {} resources failed; no documents were written",
            failures.len(),
            resources.len()
        );
        let pushed: Vec<&str> = built
            .iter()
            .filter(|b| b.pushed)
            .map(|b| b.reference.as_str())
            .collect();
        if !pushed.is_empty() {
            head.push_str(&format!(
                "\n  already pushed (valid, unreferenced): {}",
                pushed.join(", ")
            ));
        }
        // One failure keeps its own error chain (and its exit code); several
        // are listed one per line.
        if failures.len() == 1
            && let Some((_, e)) = failures.pop()
        {
            return Err(e.context(head));
        }
        for (r, e) in &failures {
            head.push_str(&format!("\n  {}: {e:#}", r.what()));
        }
        bail!(head);
    }
    let mut files = Vec::new();
    for p in &parsed {
        let images: Vec<(&Resource, &Built)> = p
            .resources
            .iter()
            .map(|r| {
                let b = built
                    .iter()
                    .find(|b| b.label == r.label && b.file == r.file)
                    .expect("every resource was built");
                (r, b)
            })
            .collect();
        files.push(Resolved {
            file: p.file.clone(),
            text: rewrite::resolve(p, &images)?,
        });
    }
    Ok(DeployResult {
        files,
        images: built,
    })
}

/// Builds every resource on `req.jobs` threads; results in input order.
fn run_all(resources: &[Resource], req: &DeployRequest, progress: &Progress) -> Vec<Result<Built>> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<Built>>>> =
        Mutex::new((0..resources.len()).map(|_| None).collect());
    let stop = AtomicBool::new(false);
    let client = Client::new(ClientOptions {
        insecure_registries: req.insecure_registries.clone(),
        ..ClientOptions::default()
    })
    .with_progress(progress);
    std::thread::scope(|s| {
        for _ in 0..req.jobs.clamp(1, resources.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(r) = resources.get(i) else { break };
                    // After a failure or Ctrl-C, start nothing new: the
                    // output will not be written anyway.
                    let cancelled = req
                        .cancel
                        .as_ref()
                        .is_some_and(|c| c.load(Ordering::SeqCst));
                    let res = if stop.load(Ordering::SeqCst) || cancelled {
                        Err(anyhow!(
                            "not built: another resource failed or the deploy was interrupted"
                        ))
                    } else {
                        build_one(r, req, &client, progress)
                    };
                    if res.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(res);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow!("not built"))))
        .collect()
}

/// The cache ref of one resource of a deploy: the given ref with the
/// image's name appended to its tag (`reg/cache:main` for image
/// `reg/shop/api` → `reg/cache:main-api`), so resources built in parallel
/// do not overwrite each other's cache.
pub fn resource_cache_ref(cache: &str, image: &str) -> String {
    let last = image
        .split(['@'])
        .next()
        .unwrap_or(image)
        .rsplit('/')
        .next()
        .unwrap_or(image);
    let name: String = last
        .split(':')
        .next()
        .unwrap_or(last)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    match crate::registry::Reference::parse(cache) {
        Ok(r) => {
            let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
            format!("{}:{tag}-{name}", r.name())
        }
        Err(_) => format!("{cache}-{name}"),
    }
}

fn build_one(
    r: &Resource,
    req: &DeployRequest,
    client: &Client,
    progress: &Progress,
) -> Result<Built> {
    let name = r.target.name().to_string();
    progress.info(format!("Building image for {}", r.label));
    if req.debug_build {
        progress.info(format!("Generated image reference: {name}"));
        progress.info(format!(
            "Building image for path: {}",
            r.spec.context.display()
        ));
    }
    let breq = BuildRequest {
        context: r.spec.context.clone(),
        dockerfile: r.spec.dockerfile.clone(),
        dockerfile_content: r.spec.dockerfile_content.clone(),
        build_args: r.spec.args.clone(),
        target: r.spec.target.clone(),
        tags: vec![name.clone()],
        platform: req.platform.clone(),
        no_cache: req.no_cache,
        insecure_registries: req.insecure_registries.clone(),
        cancel: req.cancel.clone(),
        auto: r.spec.auto,
        plan: PlanRequest {
            start_cmd: r.spec.start_cmd.clone(),
            ..PlanRequest::default()
        },
        debug: req.debug_build,
        ca_certs: req.ca_certs.clone(),
        no_host_ca: req.no_host_ca,
        cache_from: req
            .cache_from
            .iter()
            .map(|c| crate::build::CacheFrom {
                reference: resource_cache_ref(&c.reference, &name),
            })
            .collect(),
        cache_to: req.cache_to.as_ref().map(|c| crate::build::CacheTo {
            // An inline cache goes into each resource's own image.
            reference: if c.inline {
                String::new()
            } else {
                resource_cache_ref(&c.reference, &name)
            },
            ..c.clone()
        }),
        ..BuildRequest::default()
    };
    let res =
        crate::build::build(&breq, progress).with_context(|| format!("building {}", r.what()))?;
    let digest = res.digest.clone();
    let local_ref = |n: &str| pinned(n, &digest);
    match &r.target {
        Target::Registry(reference) if !req.skip_push => {
            let target = Reference::parse(reference)
                .with_context(|| format!("{}: image reference {reference}", r.what()))?;
            progress.info(format!("Pushing image for {} → {reference}", r.label));
            let store = crate::oci::cache_store()?;
            let summary = registry::push::push(
                client,
                &store,
                &res.root,
                &target,
                &registry::PushOptions::default(),
                progress,
            )
            .with_context(|| format!("pushing the image for {} to {reference}", r.what()))?;
            progress.info(format!(
                "Successfully built and pushed image for {} ({} blobs sent, {} already there)",
                r.label, summary.blobs_sent, summary.blobs_skipped
            ));
            Ok(Built {
                label: r.label.clone(),
                file: r.file.clone(),
                reference: pinned(reference, &digest),
                digest,
                pushed: true,
                blobs_sent: summary.blobs_sent,
                blobs_skipped: summary.blobs_skipped,
            })
        }
        Target::Registry(reference) => {
            progress.info(format!(
                "Successfully built image for {} as {reference} (not pushed: --skip-push)",
                r.label
            ));
            Ok(Built {
                label: r.label.clone(),
                file: r.file.clone(),
                reference: local_ref(reference),
                digest,
                pushed: false,
                blobs_sent: 0,
                blobs_skipped: 0,
            })
        }
        Target::Local(n) if !req.skip_push && matches!(req.unpushed, Destination::Ssh { .. }) => {
            let Destination::Ssh { target, .. } = &req.unpushed else {
                unreachable!()
            };
            progress.info(format!("Sending image for {} → {target}", r.label));
            let store = crate::oci::cache_store()?;
            let shipped = crate::ship::ship(
                &store,
                &res.root,
                n,
                &req.unpushed,
                &crate::ship::ShipOptions::default(),
                progress,
            )
            .with_context(|| format!("sending the image for {} to {target}", r.what()))?;
            let crate::ship::Shipped::Sent(summary) = shipped else {
                unreachable!("an ssh destination is sent")
            };
            progress.info(format!(
                "Successfully built and sent image for {} to {target} ({} blobs sent, {} already there)",
                r.label, summary.blobs_sent, summary.blobs_present
            ));
            Ok(Built {
                label: r.label.clone(),
                file: r.file.clone(),
                reference: local_ref(n),
                digest,
                pushed: true,
                blobs_sent: summary.blobs_sent,
                blobs_skipped: summary.blobs_present,
            })
        }
        Target::Local(n) => {
            progress.info(format!(
                "Successfully built image for {}, kept in the local store as {n} (no image: to push to)",
                r.label
            ));
            Ok(Built {
                label: r.label.clone(),
                file: r.file.clone(),
                reference: local_ref(n),
                digest,
                pushed: false,
                blobs_sent: 0,
                blobs_skipped: 0,
            })
        }
    }
}

/// `NAME:TAG` → `NAME:TAG@DIGEST`, the name as written (no
/// `docker.io/library/` added). The tag stays for people reading the
/// document; the digest is what runtimes pull.
pub fn pinned(reference: &str, digest: &Digest) -> String {
    format!("{reference}@{digest}")
}

/// Writes `text` to `path` through a temp file in the same directory and a
/// rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-deploy-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| anyhow!("writing {}: {}", path.display(), e.error))?;
    Ok(())
}
