//! `kiln build`: docker/buildx flags over [`crate::build`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Args;

use crate::Result;
use crate::build::{BuildRequest, build, parse_secret};
use crate::oci::layer::Compression;
use crate::progress::Progress;
use crate::ship::Destination;

#[derive(Args, Debug)]
pub struct BuildCommand {
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Dockerfile text given inline (takes precedence over any file).
    #[arg(long)]
    pub dockerfile_content: Option<String>,
    /// Name of the image, NAME[:TAG] (repeatable).
    #[arg(short, long = "tag")]
    pub tag: Vec<String>,
    /// Build argument KEY=VALUE, or KEY to take it from the environment (repeatable).
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    /// The stage to build (an auto build has `build` and `runtime`).
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform, os/arch[/variant]; several, comma-separated
    /// (linux/amd64,linux/arm64), build an OCI image index.
    #[arg(long)]
    pub platform: Option<String>,
    /// Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (repeatable).
    #[arg(long)]
    pub secret: Vec<String>,
    /// Run every step, ignoring the step cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Resolve Debian package sets against the archive again (they are
    /// otherwise reused, like pulled base images) and pull base images
    /// even when the local store has them.
    #[arg(long)]
    pub pull: bool,
    /// Export: type=oci,dest=DIR | type=oci-archive,dest=F.tar | type=docker,dest=F.tar |
    /// type=local,dest=DIR (the root filesystem) | type=tar,dest=F.tar (it, as one tar) |
    /// type=registry[,name=REF] | type=ssh,dest=[USER@]HOST[:PORT][/PATH] (repeatable).
    #[arg(short, long)]
    pub output: Vec<String>,
    /// ssh config file for type=ssh outputs (as `ssh -F FILE`).
    #[arg(
        short = 'F',
        long = "ssh-config",
        value_name = "FILE",
        env = "KILN_SSH_CONFIG"
    )]
    pub ssh_config: Option<PathBuf>,
    /// Push every -t name to its registry.
    #[arg(long)]
    pub push: bool,
    /// Bound of the build cache: after the build, least recently used
    /// entries go until it fits (SIZE like 10GB, or off). Default
    /// KILN_CACHE_MAX, else 10% of its filesystem, at most 20 GiB.
    #[arg(long, value_name = "SIZE", value_parser = crate::gc::Bound::parse)]
    pub cache_max: Option<crate::gc::Bound>,
    #[command(flatten)]
    pub remote_cache: RemoteCacheArgs,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compression: Compression,
    /// A registry that may be reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// Network of RUN steps: default (own network namespace with outbound
    /// access; the host's loopback services are out of reach), none
    /// (loopback only) or host (the host's network: an explicit opt-in).
    #[arg(long, value_enum, default_value_t = crate::sandbox::Network::Private)]
    pub network: crate::sandbox::Network,
    /// Grant an entitlement (repeatable): security.insecure lets `RUN
    /// --security=insecure` steps run privileged, as root on the host;
    /// network.host lets `RUN --network=host` steps use the host's network.
    #[arg(long, value_enum, value_name = "ENTITLEMENT")]
    pub allow: Vec<crate::build::Entitlement>,
    /// Add HOST:IP to the /etc/hosts of RUN steps (repeatable; buildx's
    /// --add-host; HOST=IP works too).
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = parse_add_host)]
    pub add_host: Vec<(String, std::net::IpAddr)>,
    /// A named context, NAME=DIR: a local directory the Dockerfile reads as
    /// `FROM NAME` and `COPY --from=NAME` (repeatable; buildx's
    /// --build-context; docker-image:// and URLs are not supported).
    #[arg(long = "build-context", value_name = "NAME=DIR", value_parser = parse_build_context)]
    pub build_context: Vec<(String, PathBuf)>,
    /// Set a label on the image, KEY=VALUE (repeatable; wins over the
    /// Dockerfile's LABEL and the plan's).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Write the image's manifest digest to FILE (buildx's --iidfile).
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build result as JSON to FILE (buildx's --metadata-file:
    /// `containerimage.digest`, `image.name`, and kiln's fields).
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Print the build result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Build from the auto plan even when the context has a Dockerfile.
    #[arg(long)]
    pub auto: bool,
    /// Print the build summary, the equivalent Dockerfile and every step's full output.
    #[arg(long, visible_alias = "debug-build")]
    pub debug: bool,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub ca: BuildCaArgs,
    #[command(flatten)]
    pub attest: super::sbom::AttestArgs,
}

/// `--cache-from`/`--cache-to` of the commands that build (docs/cache.md).
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteCacheArgs {
    /// Read steps from a registry cache: type=registry,ref=REG/REPO:TAG (or
    /// just the ref; repeatable). A missing or unusable cache is a miss.
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    pub cache_from: Vec<crate::build::CacheFrom>,
    /// Write the build's steps to a registry cache after the build:
    /// type=registry,ref=REG/REPO:TAG[,mode=min|max][,cache-mounts=true]
    /// (max: every stage; cache-mounts: the RUN --mount=type=cache dirs too),
    /// or into the image itself: type=inline (read with --cache-from IMAGE).
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF[,mode=max]")]
    pub cache_to: Option<crate::build::CacheTo>,
}

/// `--ca-cert` of the commands that run auto builds.
#[derive(Args, Debug, Clone, Default)]
pub struct BuildCaArgs {
    /// Auto builds: trust this CA certificate (PEM) in build stages, e.g. a
    /// company proxy's (repeatable; also KILN_CA_CERTS=FILE:FILE). Never in the image.
    #[arg(
        long = "ca-cert",
        value_name = "FILE",
        env = "KILN_CA_CERTS",
        value_delimiter = ':'
    )]
    pub ca_cert: Vec<PathBuf>,
    /// Auto builds: do not give build steps the host's CA bundle (they
    /// trust it by default, mounted read-only, never in the image; also
    /// KILN_NO_HOST_CA=1).
    #[arg(long = "no-host-ca", env = "KILN_NO_HOST_CA", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub no_host_ca: bool,
}

/// The auto plan's flags, as `kiln plan` takes them.
#[derive(Args, Debug, Clone, Default)]
pub struct PlanArgs {
    /// Auto builds: replace the start command.
    #[arg(short = 's', long, value_name = "CMD")]
    pub start_cmd: Option<String>,
    /// Auto builds: replace the install commands.
    #[arg(short = 'i', long, value_name = "CMD")]
    pub install_cmd: Option<String>,
    /// Auto builds: replace the build commands.
    #[arg(short = 'b', long, value_name = "CMD")]
    pub build_cmd: Option<String>,
    /// Auto builds: add Debian packages (build stage and image).
    #[arg(short = 'a', long = "apt", value_name = "PKG")]
    pub apt: Vec<String>,
    /// Auto builds: add Nix packages, mapped to Debian ones (build stage and
    /// image; Nixpacks' --pkgs, NIXPACKS_PKGS).
    #[arg(short = 'p', long = "pkgs", value_name = "PKG")]
    pub pkgs: Vec<String>,
    /// Auto builds: add Nix libraries, mapped to Debian packages (Nixpacks'
    /// --libs, NIXPACKS_LIBS).
    #[arg(long = "libs", value_name = "LIB")]
    pub libs: Vec<String>,
    /// Auto builds: NAME=VALUE (or NAME to copy it from here) for the build
    /// steps AND the image's environment, as Nixpacks' --env; KILN_*/
    /// NIXPACKS_* names configure the plan instead. Build-only: --build-env;
    /// secrets: --secret.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Auto builds: NAME=VALUE (or NAME) for the build steps only, never in
    /// the image.
    #[arg(long = "build-env", value_name = "NAME[=VALUE]")]
    pub build_env: Vec<String>,
    /// Auto builds: the plan's config file, relative to the context (.toml or .json).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<String>,
    /// Build this plan (JSON, or TOML for *.toml; as `kiln plan` or
    /// `nixpacks plan` writes it) instead of detecting one.
    #[arg(long = "plan", value_name = "FILE")]
    pub plan_file: Option<PathBuf>,
    /// Auto builds: prefix of the cache mount ids (npm's, pip's… caches),
    /// to keep apps' caches apart (Nixpacks' --cache-key).
    #[arg(long, value_name = "KEY")]
    pub cache_key: Option<String>,
    /// Auto builds: without a start command, build an image without CMD
    /// instead of failing.
    #[arg(long)]
    pub no_error_without_start: bool,
}

impl PlanArgs {
    pub fn request(self) -> crate::build::PlanRequest {
        crate::build::PlanRequest {
            start_cmd: self.start_cmd,
            install_cmd: self.install_cmd,
            build_cmd: self.build_cmd,
            apt: self.apt,
            pkgs: self.pkgs,
            libs: self.libs,
            env: super::plan::with_process_options(&self.env),
            build_env: self.build_env,
            config: self.config,
            plan_file: self.plan_file,
            cache_key: self.cache_key,
            no_error_without_start: self.no_error_without_start,
        }
    }
}

pub fn run(a: BuildCommand, progress: &Progress) -> Result<()> {
    let mut build_args = BTreeMap::new();
    for kv in &a.build_arg {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            // Docker: a bare name takes the value from the environment, or is skipped.
            None => match std::env::var(kv) {
                Ok(v) => build_args.insert(kv.clone(), v),
                Err(_) => continue,
            },
        };
    }
    let secrets = a
        .secret
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let mut outputs = a
        .output
        .iter()
        .map(|o| Destination::parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    for o in &mut outputs {
        if let Destination::Ssh { options, .. } = o {
            options.ssh.config = a.ssh_config.clone();
        }
    }
    let cancel = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C: stop the running steps (the sandbox kills their process
        // trees and removes their files), then exit.
        let flag = cancel.clone();
        signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())
            .context("installing the SIGINT handler")?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, flag)
            .context("installing the SIGTERM handler")?;
    }
    let req = BuildRequest {
        context: a.context,
        dockerfile: a.file,
        dockerfile_content: a.dockerfile_content,
        build_args,
        target: a.target,
        platform: a.platform,
        tags: a.tag,
        no_cache: a.no_cache,
        pull: a.pull,
        secrets,
        outputs,
        push: a.push,
        compression: a.compression,
        insecure_registries: a.insecure_registry,
        cancel: Some(cancel.clone()),
        auto: a.auto,
        debug: a.debug,
        ca_certs: a.ca.ca_cert,
        no_host_ca: a.ca.no_host_ca,
        allow: a.allow,
        plan: a.plan.request(),
        network: a.network,
        labels: a.label,
        add_hosts: a.add_host,
        build_contexts: a.build_context,
        cache_max: a.cache_max.unwrap_or_default(),
        sbom: a.attest.sbom(),
        provenance: a.attest.provenance(),
        cache_from: a.remote_cache.cache_from,
        cache_to: a.remote_cache.cache_to,
    };
    let started = std::time::Instant::now();
    let mut result = build(&req, progress);
    if cancel.load(Ordering::SeqCst) {
        result = Err(
            crate::error::CodedError::new(crate::error::code::INTERRUPTED, "interrupted").into(),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.result(match &result {
        Ok(r) => crate::progress::BuildOutcome {
            ok: true,
            seconds,
            digest: Some(r.digest.to_string()),
            size: Some(r.image.size()),
            names: r.names.clone(),
            pushed: r.pushed.clone(),
            ..Default::default()
        },
        Err(e) => crate::progress::BuildOutcome {
            ok: false,
            seconds,
            error: Some(format!("{e:#}")),
            exit_code: Some(crate::failure::exit_code(e)),
            ..Default::default()
        },
    });
    let r = result?;
    if let Some(f) = &a.iidfile {
        std::fs::write(f, r.digest.to_string())
            .with_context(|| format!("--iidfile: writing {}", f.display()))?;
    }
    if let Some(f) = &a.metadata_file {
        let v = serde_json::json!({
            "containerimage.digest": r.digest.to_string(),
            "image.name": r.names.join(","),
            "kiln.names": r.names,
            "kiln.pushed": r.pushed,
            "kiln.size": r.image.size(),
        });
        std::fs::write(f, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("--metadata-file: writing {}", f.display()))?;
    }
    if a.json {
        let v = serde_json::json!({
            "digest": r.digest.to_string(),
            "names": r.names,
            "pushed": r.pushed,
            "steps_run": r.stats.steps_run,
            "steps_cached": r.stats.steps_cached,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", r.digest);
    }
    Ok(())
}

/// `HOST:IP` (or `HOST=IP`) of `--add-host`; the IP may be IPv6.
fn parse_add_host(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let bad =
        || format!("{s:?} is not HOST:IP (e.g. --add-host db:10.0.0.5 or --add-host db:fd00::5)");
    let (host, ip) = match (s.split_once('='), s.split_once(':')) {
        (Some((h, ip)), _) if !h.contains(':') => (h, ip),
        (_, Some((h, ip))) => (h, ip),
        _ => return Err(bad()),
    };
    let host = host.trim();
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad());
    }
    let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
    let ip = ip.parse().map_err(|_| bad())?;
    Ok((host.to_string(), ip))
}

/// `NAME=DIR` of `--build-context`: local directories only.
fn parse_build_context(s: &str) -> Result<(String, PathBuf), String> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(format!(
            "{s:?} is not NAME=DIR (e.g. --build-context assets=./assets)"
        ));
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("{s:?}: the context needs a NAME (NAME=DIR)"));
    }
    if value.starts_with("docker-image://")
        || value.starts_with("oci-layout://")
        || value.starts_with("target:")
        || value.contains("://")
        || value.starts_with("git@")
    {
        return Err(format!(
            "{s:?}: only local directories are supported as named contexts (not images, git or URLs); use FROM/COPY --from=IMAGE for an image"
        ));
    }
    if value.is_empty() {
        return Err(format!("{s:?}: give the directory (NAME=DIR)"));
    }
    Ok((name.to_string(), PathBuf::from(value)))
}

/// `KEY=VALUE` of `--label`.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE (e.g. --label org.opencontainers.image.source=https://…)"
        )),
    }
}
