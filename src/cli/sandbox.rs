//! `kiln run`: try an image (or a root filesystem dir) in the sandbox.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};

use crate::error::CodedError;
use crate::oci::images::ImageStore;
use crate::progress::Progress;
use crate::sandbox::{BindMount, Io, Mount, Network, RunSpec, Sandbox, Snapshots, StepCommand};

/// Arguments of `kiln run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Set an environment variable (KEY=VALUE, or KEY to take it from kiln's environment).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside (default: the image's WorkingDir, else /).
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<PathBuf>,
    /// User: name, uid, name:group or uid:gid (default: the image's User, else root).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Bind mount HOST:TARGET[:ro|rw] (read-only unless :rw).
    #[arg(short = 'v', long = "volume", value_name = "HOST:TARGET[:rw]")]
    pub volumes: Vec<String>,
    /// default (own network namespace with outbound access; the host's
    /// loopback services are out of reach), none (loopback only) or host.
    #[arg(long, value_enum, default_value_t = Network::Private)]
    pub network: Network,
    /// Hostname inside.
    #[arg(long, default_value = "kiln")]
    pub hostname: String,
    /// For a multi-platform image (an index): the platform to run (default:
    /// this machine's). A foreign one runs under qemu-user (binfmt_misc).
    #[arg(long)]
    pub platform: Option<String>,
    /// Use this directory as the root filesystem instead of an image
    /// (every argument is then the command).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// IMAGE then the command and its arguments (default: the image's Entrypoint + Cmd).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [CMD]..."
    )]
    pub args: Vec<String>,
}

fn parse_volume(v: &str) -> crate::Result<Mount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, rw) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, false),
        [s, t, "rw"] => (*s, *t, true),
        _ => bail!("invalid volume {v:?}: use HOST:TARGET, HOST:TARGET:ro or HOST:TARGET:rw"),
    };
    let source = std::fs::canonicalize(source)
        .with_context(|| format!("volume {v:?}: host path {source} does not exist"))?;
    Ok(Mount::Bind(BindMount {
        source,
        target: PathBuf::from(target),
        readwrite: rw,
    }))
}

/// Runs `kiln run`; returns the command's exit code.
pub fn run(args: RunArgs, progress: &Progress) -> crate::Result<u8> {
    let mut args = args;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut workdir = None;
    let mut user = None;
    // The build cache, held (its lock, shared) until the command ends: the
    // cache GC never removes the snapshots under a running command.
    let mut _cache = None;
    let mut default_cmd: Vec<String> = Vec::new();
    // Whether the command runs under qemu-user (a foreign image).
    let mut emulated = false;
    let mut entrypoint: Vec<String> = Vec::new();
    let lowers = match &args.rootfs {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--rootfs {}: not a directory", dir.display());
            }
            vec![dir.clone()]
        }
        None => {
            if args.args.is_empty() {
                bail!("no image given: kiln run IMAGE [CMD...] (or --rootfs DIR CMD...)");
            }
            let name = args.args.remove(0);
            let store = ImageStore::open_default()?;
            let platform = args
                .platform
                .as_deref()
                .map(crate::platform::Platform::parse)
                .transpose()
                .context("--platform")?;
            let image = store.image(&name, platform.as_ref())?;
            // A foreign image fails here, saying what to install, rather
            // than with "exec format error" from inside.
            let arch = crate::platform::Platform::linux(
                &image.config.architecture().to_string(),
                image.config.variant().as_deref(),
            );
            arch.check_executable()
                .with_context(|| format!("running {name}"))?;
            emulated = arch.architecture != crate::platform::Platform::host().architecture;
            if let Some(c) = image.config.config() {
                for kv in c.env().clone().unwrap_or_default() {
                    if let Some((k, v)) = kv.split_once('=') {
                        env.push((k.to_string(), v.to_string()));
                    }
                }
                workdir = c.working_dir().clone().filter(|w| !w.is_empty());
                user = c.user().clone().filter(|u| !u.is_empty());
                default_cmd = c.cmd().clone().unwrap_or_default();
                entrypoint = c.entrypoint().clone().unwrap_or_default();
            }
            // The image's blobs are linked into the cache, as a build's
            // base image's are, so its snapshots have their blob there and
            // GC ages them like a build's (least recently used first).
            let cache = crate::oci::cache_store()?;
            for (d, _) in crate::oci::image::closure(store.blobs(), &image.manifest_desc)? {
                cache.import_from(store.blobs(), &d)?;
                cache.touch(&d);
            }
            let lowers = Snapshots::open_default()?.for_image(&cache, &image)?;
            _cache = Some(cache);
            lowers
        }
    };
    let mut argv = entrypoint;
    if args.args.is_empty() {
        argv.extend(default_cmd);
    } else {
        argv.extend(args.args.iter().cloned());
    }
    if argv.is_empty() {
        bail!(
            "no command: give one after the image (kiln run IMAGE CMD...); the image has no Cmd or Entrypoint"
        );
    }
    // kiln's sandbox keeps its own reaper as PID 1, so an image's tini is
    // not PID 1 here and warns unless it is a subreaper. Images do not
    // say `tini -s` (qemu-user has no PR_SET_CHILD_SUBREAPER, and an arm64
    // image run emulated would die on it); `kiln run` asks through the
    // variable instead, for this process only — natively: under qemu
    // (`--platform` of a foreign image) tini would die on it.
    if argv[0].rsplit('/').next() == Some("tini")
        && !env.iter().any(|(k, _)| k == "TINI_SUBREAPER")
        && !emulated
    {
        env.push(("TINI_SUBREAPER".to_string(), "1".to_string()));
    }
    let mut spec = RunSpec::new(lowers, StepCommand::Exec(argv));
    for e in &args.env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), std::env::var(e).unwrap_or_default()),
        };
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    spec.env = env;
    spec.workdir = args
        .workdir
        .clone()
        .or(workdir.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    spec.user = args.user.clone().or(user);
    spec.hostname = args.hostname.clone();
    spec.network = args.network;
    spec.io = Io::Inherit;
    for v in &args.volumes {
        spec.mounts.push(parse_volume(v)?);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.clone()).context("installing a signal handler")?;
    }
    spec.cancel = Some(cancel);
    let sandbox = Sandbox::new(progress)?;
    // The command owns the terminal: no task lines around its output.
    let quiet = Progress::quiet();
    match sandbox.run(&spec, &quiet) {
        Ok(out) => Ok(out.exit_code.clamp(0, 255) as u8),
        Err(e) if e.downcast_ref::<crate::sandbox::Cancelled>().is_some() => Err(CodedError::new(
            crate::error::code::INTERRUPTED,
            format!("kiln run was interrupted: {e}"),
        )
        .into()),
        Err(e) => Err(e),
    }
}
