//! The `kiln` command line: argument parsing and output only. Everything a
//! library user would need lives in the library modules.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod build;
mod cache;
mod deploy;
mod graph;
mod images;
mod packages;
mod plan;
mod rebase;
mod registry;
mod sandbox;
mod sbom;
mod sign;
mod transfer;

use crate::error;
use crate::progress::{Progress, ProgressMode};

const EXAMPLES: &str = "\
Examples:
  kiln build . -t myapp:1                       build the Dockerfile in . into the local store
  kiln build . -t reg.example/app:1 --push      build and push (only missing blobs)
  kiln plan ./app                               print the auto-build plan (Nixpacks schema)
  kiln detect ./app                             which providers match
  kiln info ./app                               setup / install / build / start summary
  kiln dockerfile ./app -o Dockerfile           a Dockerfile equivalent to the plan
  kiln deploy lttle.yaml --registry reg.example/team -o out.yaml   build every build:, push, write image: refs
  kiln graph . --keys                           the Dockerfile's build graph as JSON
  kiln run myapp:1 sh -c 'ls /app'              run a command in an image, in the sandbox
  kiln images | inspect NAME | rmi NAME         the local image store
  kiln sbom myapp:1 --format cyclonedx          what an image holds (SPDX or CycloneDX)
  kiln outdated myapp:1                         its Debian packages with updates (security first)
  kiln rebase myapp:1                           take them without a rebuild (new package layers, same app layers)
  kiln sign reg.example/app:1 --key cosign.pem  sign a pushed image (cosign's format)
  kiln save myapp:1 -o type=docker,dest=a.tar   export (oci, oci-archive, docker)
  kiln load a.tar                               import an archive or OCI layout
  kiln pull debian:bookworm | push NAME REF     talk to registries
  kiln push myapp ssh://deploy@web1 --load podman   send to a server over ssh (missing layers only)
  kiln login reg.example -u me --password-stdin save credentials (docker's config.json)
  kiln image packages -t node --suite trixie nodejs   an image from Debian packages
  kiln packages resolve nodejs@20               a package closure, and why
  kiln lock nodejs@20                           write kiln.lock
  kiln image from-dir ./rootfs -t base:1        a one-layer image from a directory
  kiln cache du | prune --keep-storage 5GB      what the build cache holds; trim it (LRU)
  kiln completions bash                         shell completions

Run `kiln COMMAND --help` for a command's options.";

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI container images from source trees and Dockerfiles, without a daemon",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// How to show progress: auto (tty on a terminal, else plain), plain, tty, json, quiet.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto, env = "KILN_PROGRESS")]
    pub progress: ProgressMode,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from an app's source, without a daemon: detected and
    /// planned like Nixpacks, or from its Dockerfile when it has one.
    ///
    /// Examples: kiln build . -t myapp:1 (auto plan or ./Dockerfile);
    /// kiln build . -f Dockerfile.prod --build-arg VERSION=2 --output type=docker,dest=myapp.tar
    Build(Box<build::BuildCommand>),
    /// Print the build plan for an app (Nixpacks-compatible JSON or TOML).
    ///
    /// Example: kiln plan examples/node-npm --format toml
    Plan(plan::PlanArgs),
    /// Print the providers that match an app.
    ///
    /// Example: kiln detect . --explain
    Detect(plan::DetectArgs),
    /// Summarise an app's plan: providers, toolchains, setup/install/build/start.
    ///
    /// Example: kiln info examples/python-flask
    Info(plan::InfoArgs),
    /// Write a Dockerfile (and assets) equivalent to the plan, for BuildKit/buildah.
    ///
    /// Example: kiln dockerfile . -o Dockerfile --base-image debian:trixie-slim
    Dockerfile(plan::DockerfileArgs),
    /// Build every resource of deploy files that asks for it, push, and write
    /// the documents with `image: REF@sha256:…` in place of `build:`.
    ///
    /// Example: kiln deploy lttle.yaml compose.yaml --registry reg.example/team -o resolved.yaml
    Deploy(deploy::DeployArgs),
    /// Parse a Dockerfile and print its build graph as JSON (no build).
    ///
    /// Example: kiln graph . -f Dockerfile --build-arg V=1 --target app --keys
    Graph(graph::GraphArgs),
    /// Run a command in an image (or a root filesystem dir) in the sandbox.
    ///
    /// Example: kiln run -e DEBUG=1 -w /app -v ./data:/data myapp:latest sh -c 'ls /data'
    Run(sandbox::RunArgs),
    /// List the images in the local image store.
    ///
    /// Example: kiln images
    Images(images::ImagesArgs),
    /// Print an image's manifest and config as JSON.
    ///
    /// Example: kiln inspect myapp:latest
    Inspect(images::InspectArgs),
    /// Remove images from the local store.
    ///
    /// Example: kiln rmi myapp:old
    Rmi(images::RmiArgs),
    /// Load an OCI layout, OCI archive or docker archive into the local store.
    ///
    /// Example: kiln load image.tar
    Load(images::LoadArgs),
    /// Export an image from the local store.
    ///
    /// Example: kiln save myapp -o type=docker,dest=myapp.tar
    Save(images::SaveArgs),
    /// Pull an image from a registry into the local store.
    ///
    /// Example: kiln pull node:20-slim --platform linux/arm64
    Pull(registry::PullArgs),
    /// Push a local image to a registry or, over ssh, to a server (only the blobs it lacks).
    ///
    /// Example: kiln push myapp:1.0 ghcr.io/acme/myapp:1.0 | kiln push myapp ssh://deploy@web1:2222
    Push(registry::PushArgs),
    /// Save credentials for a registry (docker's config.json format).
    ///
    /// Example: echo "$TOKEN" | kiln login ghcr.io -u me --password-stdin
    Login(registry::LoginArgs),
    /// Remove saved credentials for a registry.
    ///
    /// Example: kiln logout ghcr.io
    Logout(registry::LogoutArgs),
    /// Image plumbing (build images from parts).
    ///
    /// Example: kiln image from-dir ./rootfs -t base:1
    #[command(subcommand)]
    Image(Box<images::ImageCommand>),
    /// Debian packages: resolve closures.
    ///
    /// Example: kiln packages resolve nodejs@20
    Packages(packages::PackagesArgs),
    /// Print what an image holds (SBOM: SPDX 2.3 or CycloneDX 1.6 JSON), as
    /// recorded when kiln built it; or its SLSA provenance.
    ///
    /// Example: kiln sbom myapp:1 --format cyclonedx -o sbom.cdx.json
    Sbom(sbom::SbomArgs),
    /// List the Debian packages of an image that its suite has updates for
    /// (security updates first), from the record kiln wrote when it built
    /// the image and the suite's current indexes. Changes nothing.
    ///
    /// Example: kiln outdated myapp:1 --format json
    Outdated(sbom::OutdatedArgs),
    /// Compose an image's Debian package layers again from its suite's
    /// current index, under the same app layers, without running a build
    /// step; refused when a changed package takes away a library or file
    /// the app layers need. Prints each change (package: old → new).
    ///
    /// Example: kiln rebase myapp:1 -t myapp:1-patched
    Rebase(rebase::RebaseArgs),
    /// Sign an image on its registry in cosign's format (ECDSA P-256; the
    /// signature is pushed as the tag sha256-<hex>.sig), the format cosign
    /// and containers/image policies read.
    ///
    /// Example: kiln sign reg.example/app:1 --key cosign.pem
    Sign(sign::SignArgs),
    /// Resolve Debian packages and write (or update) kiln.lock.
    ///
    /// Example: kiln lock nodejs@20 ca-certificates
    Lock(packages::LockArgs),
    /// Inspect and clean the build cache.
    ///
    /// The cache (`kiln cache dir`) holds the step cache, layer blobs and
    /// their snapshots (unpacked layers: most of the space), RUN cache
    /// mounts, Debian package downloads and context stat caches. Builds
    /// record when they use an entry; `du` shows what takes the space and
    /// `prune` removes least recently used entries first (`--keep-storage`,
    /// `--filter until=`, as buildx). Every build ends with the same GC
    /// against a bound: `kiln build --cache-max SIZE`, else `KILN_CACHE_MAX`
    /// (`off` or `0` turn it off), else 10% of the filesystem holding the
    /// cache, at most 20 GiB. It never removes what that build used, and
    /// skips when another kiln process uses the cache. Images in the local
    /// store keep their own copies: pruning never breaks a named image.
    ///
    /// Example: kiln cache du
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Print shell completions.
    ///
    /// Example: kiln completions bash > /etc/bash_completion.d/kiln
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                error::code::USAGE
            } else {
                0
            });
        }
    };
    // --debug shows every step's full output: plain lines on a terminal.
    let mode = match &cli.command {
        Command::Build(a) if a.debug && cli.progress == ProgressMode::Auto => ProgressMode::Plain,
        _ => cli.progress,
    };
    let progress = Progress::new(mode);
    match run(cli, &progress) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err, &progress);
            ExitCode::from(crate::failure::exit_code(&err))
        }
    }
}

fn run(cli: Cli, progress: &Progress) -> crate::Result<()> {
    match cli.command {
        Command::Build(a) => build::run(*a, progress),
        Command::Plan(a) => plan::run_plan(a, progress),
        Command::Sbom(a) => sbom::run(a, progress),
        Command::Outdated(a) => sbom::run_outdated(a, progress),
        Command::Rebase(a) => rebase::run(a, progress),
        Command::Sign(a) => sign::run(a, progress),
        Command::Detect(a) => plan::run_detect(a, progress),
        Command::Info(a) => plan::run_info(a, progress),
        Command::Dockerfile(a) => plan::run_dockerfile(a, progress),
        Command::Deploy(a) => deploy::run(a, progress),
        Command::Graph(a) => graph::run(a, progress),
        Command::Run(args) => match sandbox::run(args, progress)? {
            0 => Ok(()),
            code => Err(error::CodedError::new(
                code,
                format!("the command exited with code {code}"),
            )
            .into()),
        },
        Command::Images(a) => images::images(a),
        Command::Inspect(a) => images::inspect(a),
        Command::Rmi(a) => images::rmi(a),
        Command::Load(a) => images::load(a),
        Command::Save(a) => images::save(a, progress),
        Command::Pull(a) => registry::pull(a, progress),
        Command::Push(a) => registry::push(a, progress),
        Command::Login(a) => registry::login(a, progress),
        Command::Logout(a) => registry::logout(a),
        Command::Image(c) => images::image(*c, progress),
        Command::Packages(a) => packages::run(a, progress),
        Command::Lock(a) => packages::lock(a, progress),
        Command::Cache(c) => cache::cache(c),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error,
            // and `kiln completions bash | head` closes the pipe early.
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut out);
            match std::io::Write::write_all(&mut std::io::stdout(), &out) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => anyhow::Context::context(r, "writing the completions"),
            }
        }
    }
}

/// Prints an error chain as `error: what` + `  caused by: …` lines.
fn report(err: &anyhow::Error, progress: &Progress) {
    if progress.mode() == ProgressMode::Json {
        // stderr stays one JSON object per line: the error is an event
        // (already in the build's final `result` event when there is one).
        if !progress.has_result() {
            progress.error(format!("{err:#}"));
        }
        return;
    }
    eprint!("{}", render_error(err, progress));
}

/// The text [`report`] prints, with the build's secrets masked: a message
/// may quote a step's output (the failure summary) or a value.
fn render_error(err: &anyhow::Error, progress: &Progress) -> String {
    let red = progress.color();
    let head = if red { "\x1b[31merror\x1b[0m" } else { "error" };
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = progress.redact(&cause.to_string());
        if i == 0 {
            out.push_str(&format!("{head}: {text}\n"));
        } else {
            out.push_str(&format!("  caused by: {text}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_mask_the_build_secrets() {
        let progress = Progress::quiet();
        progress.add_secret(b"pem-line-one\npem-line-two\n");
        progress.add_secret(b"token-value\n");
        let err = anyhow::anyhow!("step printed token-value and pem-line-two")
            .context("[1/2] RUN cat /run/secrets/key failed: pem-line-one");
        let text = render_error(&err, &progress);
        assert_eq!(
            text,
            "error: [1/2] RUN cat /run/secrets/key failed: ****\n  caused by: step printed **** and ****\n"
        );
    }
}
