//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Args;

use crate::Result;
use crate::http::parse_timeout;
use crate::oci::ImageStore;
use crate::progress::{Progress, human_bytes};
use crate::registry::{
    Client, ClientOptions, CredentialSource, Credentials, Platform, PullOptions, PushOptions,
    Reference, credentials, origins, pull,
};
use crate::ship::{Destination, ShipOptions, Shipped, ship};

/// Flags shared by the commands that talk to a registry.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryFlags {
    /// Allow plain HTTP to this registry (HOST or HOST:PORT; repeatable).
    /// Loopback registries (localhost, 127.0.0.1, ::1) are allowed anyway.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Fail a request when the registry sends (or accepts) nothing for this
    /// many seconds; stalled requests are retried 3 times [default: 30].
    #[arg(long, value_name = "SECONDS", env = "KILN_NET_TIMEOUT", value_parser = parse_timeout)]
    pub net_timeout: Option<std::time::Duration>,
}

impl RegistryFlags {
    pub(super) fn client(&self, credentials: CredentialSource, progress: &Progress) -> Client {
        let mut opts = ClientOptions {
            insecure_registries: self.insecure_registry.clone(),
            credentials,
            ..ClientOptions::default()
        };
        if let Some(t) = self.net_timeout {
            opts.stall_timeout = t;
        }
        Client::new(opts).with_progress(progress)
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference: NAME[:TAG], NAME@sha256:…, HOST[:PORT]/NAME[:TAG].
    pub reference: String,
    /// Platform to pick from a multi-platform image (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn pull(args: PullArgs, progress: &Progress) -> Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let images = ImageStore::open_default()?;
    let client = args.registry.client(CredentialSource::Files, progress);
    let result = pull::pull(
        &client,
        images.blobs(),
        &reference,
        &PullOptions { platform },
        progress,
    )?;
    let name = reference.to_string();
    images.tag(&name, &result.manifest)?;
    remember(&reference, &result.blobs, progress);
    println!(
        "{name}: pulled {} ({} blobs fetched, {} already present, {})",
        result.resolved,
        result.blobs_fetched,
        result.blobs_present,
        human_bytes(result.bytes_fetched)
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The local image (name, name:tag or digest prefix).
    pub name: String,
    /// Where to push it: a registry reference (default: NAME itself, as
    /// `docker push` does) or ssh://[USER@]HOST[:PORT][/PATH] for a server.
    pub reference: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub ssh: super::transfer::SshFlags,
    #[command(flatten)]
    pub attest: super::sbom::AttestArgs,
}

pub fn push(args: PushArgs, progress: &Progress) -> Result<()> {
    let to = args.reference.as_deref().unwrap_or(&args.name);
    let options = args.ssh.transfer_options(args.registry.net_timeout);
    let dest = Destination::parse_push(to, options)?;
    if let Destination::Ssh { .. } = dest {
        return super::transfer::push(&args.name, &dest, args.json, progress);
    }
    args.ssh.refuse_for_registry()?;
    let images = ImageStore::open_default()?;
    let root = images.resolve(&args.name)?;
    let target = Reference::parse(to)?;
    // An image pulled from another repository of the same registry: ask
    // the registry to mount its blobs instead of uploading them.
    let mut opts = PushOptions::default();
    if let Ok(source) = Reference::parse(&args.name)
        && source.registry == target.registry
        && source.repository != target.repository
    {
        opts.mount_from.push(source.repository);
    }
    if let Ok(path) = origins::default_path() {
        let blobs = crate::oci::image::closure(images.blobs(), &root)?
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>();
        opts.mount_sources = origins::lookup(&path, &target.registry, &target.repository, &blobs);
    }
    let client = args.registry.client(CredentialSource::Files, progress);
    let shipped = ship(
        images.blobs(),
        &root,
        &args.name,
        &dest,
        &ShipOptions {
            client: Some(&client),
            push: opts,
            ..ShipOptions::default()
        },
        progress,
    )?;
    let Shipped::Pushed(_, summary) = shipped else {
        unreachable!("a registry destination is pushed")
    };
    remember(&target, &summary.blobs, progress);
    super::sbom::attach_on_push(&args.attest, &client, &images, &root, &target, progress)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{}: pushed ({} blobs sent, {} skipped, {} mounted, {} sent)",
            summary.reference,
            summary.blobs_sent,
            summary.blobs_skipped,
            summary.blobs_mounted,
            human_bytes(summary.bytes_sent)
        );
    }
    Ok(())
}

/// Notes where blobs now live, for later cross-repository mounts. A
/// failure only costs a future mount, so it is a warning.
fn remember(at: &Reference, blobs: &[crate::oci::Digest], progress: &Progress) {
    let done = origins::default_path()
        .and_then(|p| origins::record(&p, &at.registry, &at.repository, blobs));
    if let Err(e) = done {
        progress.warn(format!("could not record blob origins: {e:#}"));
    }
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host[:port] (default: docker.io).
    pub server: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (visible in the process list: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `docker.io`, `https://ghcr.io/`, `index.docker.io` → the registry name.
fn server_name(server: Option<&str>) -> String {
    credentials::normalize_key(server.unwrap_or("docker.io"))
}

pub fn login(args: LoginArgs, progress: &Progress) -> Result<()> {
    let registry = server_name(args.server.as_deref());
    let username = match args.username {
        Some(u) => u,
        None => prompt("Username: ", true)?,
    };
    if username.is_empty() {
        bail!("no user name given: pass -u USER");
    }
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin cannot be used together"),
        (Some(p), false) => {
            progress
                .warn("--password is visible to other users of this machine; use --password-stdin");
            p
        }
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
        (None, false) => prompt("Password: ", false)?,
    };
    if password.is_empty() {
        bail!("empty password: give it on stdin with --password-stdin");
    }
    let creds = Credentials::basic(username, password);
    let client = args
        .registry
        .client(CredentialSource::Fixed(Some(creds.clone())), progress);
    client
        .verify_login(&registry)
        .with_context(|| format!("logging in to {registry}"))?;
    let written = credentials::store(&registry, &creds)?;
    println!("Login to {registry} succeeded (saved in {written})");
    Ok(())
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port] (default: docker.io).
    pub server: Option<String>,
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let registry = server_name(args.server.as_deref());
    if credentials::erase(&registry)? {
        println!("Removed the credentials for {registry}");
    } else {
        println!("No credentials were stored for {registry}");
    }
    Ok(())
}

/// Asks on the terminal; input is hidden unless `echo`.
fn prompt(question: &str, echo: bool) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "no terminal to ask for the {}: pass -u USER and --password-stdin",
            question.trim_end_matches([':', ' ']).to_lowercase()
        );
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if !echo && got {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: valid fd and termios from tcgetattr.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if !echo && got {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        eprintln!();
    }
    read.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
