//! `kiln deploy`: flags over [`crate::deploy`]; writes the resolved
//! documents to `-o` (atomically) or stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Args;

use crate::Result;
use crate::deploy::{DeployRequest, deploy, write_atomic};
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Deploy files: lttle-style resources, compose files, ftl.yaml.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where generated image names are pushed: HOST[/NAMESPACE].
    #[arg(long, default_value = "")]
    pub registry: String,
    /// Write the resolved documents here (default: stdout); written only
    /// when every resource succeeded.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Show the build summary, the generated Dockerfile and full logs.
    #[arg(long)]
    pub debug_build: bool,
    /// Run every build step, ignoring the cache.
    #[arg(long)]
    pub no_build_cache: bool,
    /// Build and name the images but push nothing.
    #[arg(long)]
    pub skip_push: bool,
    /// How many resources build at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    /// A registry that may be reached over plain HTTP (repeatable; loopback always may).
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// Send images of services without `image:` (FTL) to this server over
    /// SSH: [ssh://][USER@]HOST[:PORT][/PATH], only the layers it lacks.
    #[arg(long, value_name = "HOST")]
    pub ssh: Option<String>,
    #[command(flatten)]
    pub ssh_flags: super::transfer::SshFlags,
    #[command(flatten)]
    pub ca: super::build::BuildCaArgs,
    #[command(flatten)]
    pub remote_cache: super::build::RemoteCacheArgs,
    /// Build every image for these platforms (os/arch[/variant], comma
    /// separated): several give each image an OCI index, pushed or sent
    /// whole, as `kiln build --platform` does.
    #[arg(long, value_name = "OS/ARCH[,…]")]
    pub platform: Option<String>,
}

pub fn run(a: DeployArgs, progress: &Progress) -> Result<()> {
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.clone()).context("installing a signal handler")?;
    }
    let req = DeployRequest {
        files: a.files,
        registry: a.registry,
        debug_build: a.debug_build,
        no_cache: a.no_build_cache,
        skip_push: a.skip_push,
        jobs: a.jobs.max(1),
        insecure_registries: a.insecure_registry,
        cancel: Some(cancel.clone()),
        ca_certs: a.ca.ca_cert,
        no_host_ca: a.ca.no_host_ca,
        cache_from: a.remote_cache.cache_from,
        cache_to: a.remote_cache.cache_to,
        platform: a.platform,
        unpushed: match &a.ssh {
            Some(host) => crate::deploy::Destination::ssh_host(
                host,
                crate::transfer::TransferOptions {
                    ssh: crate::transfer::SshOptions {
                        config: a.ssh_flags.ssh_config.clone(),
                        ..Default::default()
                    },
                    load: a.ssh_flags.load,
                },
            )
            .with_context(|| format!("--ssh {host}"))?,
            None => {
                a.ssh_flags.refuse_for_registry()?;
                crate::deploy::Destination::LocalStore
            }
        },
    };
    let result = deploy(&req, progress);
    if cancel.load(Ordering::SeqCst) {
        return Err(crate::error::CodedError::new(
            crate::error::code::INTERRUPTED,
            "interrupted; no documents were written",
        )
        .into());
    }
    let r = result?;
    for b in &r.images {
        eprintln!(
            "{}: {} ({} blobs sent, {} already there)",
            b.label, b.reference, b.blobs_sent, b.blobs_skipped
        );
    }
    eprintln!("{} images, {} blobs sent", r.images.len(), r.blobs_sent());
    let text = r.combined();
    match &a.output {
        Some(p) => write_atomic(p, &text)?,
        None => print!("{text}"),
    }
    Ok(())
}
