//! `kiln packages …`: Debian package resolution from the command line.

use clap::{Args, Subcommand};

use crate::Result;
use crate::packages::repo::{Repo, RepoConfig};
use crate::packages::resolve::{self, BaseVariant, Request, ResolveOptions};
use crate::progress::{Progress, human_bytes};

/// Repository options shared by package commands.
#[derive(Args, Debug, Clone)]
pub struct RepoArgs {
    /// Debian suite (trixie, bookworm, sid); default: the first satisfying every version request, else trixie.
    #[arg(long)]
    pub suite: Option<String>,
    /// Architecture: amd64 or arm64 (default: this machine's).
    #[arg(long)]
    pub arch: Option<String>,
    /// Mirror URL (also KILN_DEBIAN_MIRROR), e.g. a snapshot.debian.org URL.
    #[arg(long)]
    pub mirror: Option<String>,
    /// Components to read (default main).
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Also use <suite>-backports.
    #[arg(long)]
    pub backports: bool,
    /// Use cached indexes only, no network.
    #[arg(long)]
    pub offline: bool,
}

impl RepoArgs {
    pub fn config(&self) -> Result<RepoConfig> {
        let mut c = RepoConfig::from_env();
        if let Some(m) = &self.mirror {
            c.mirror = m.clone();
        }
        if let Some(a) = &self.arch {
            crate::platform::Platform::from_debian_arch(a)
                .map_err(|e| anyhow::anyhow!("--arch {a}: {e}"))?;
            c.arch = a.clone();
        }
        if !self.components.is_empty() {
            c.components = self.components.clone();
        }
        c.backports = self.backports;
        c.offline = self.offline;
        Ok(c)
    }
}

#[derive(Args, Debug)]
pub struct PackagesArgs {
    #[command(subcommand)]
    pub command: PackagesCommand,
}

#[derive(Subcommand, Debug)]
pub enum PackagesCommand {
    /// Resolve packages and print the closure (name, version, arch, installed size, sha256, why).
    ///
    /// Example: kiln packages resolve --why libssl3t64 nodejs@20
    Resolve(ResolveArgs),
}

#[derive(Args, Debug)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Base set: minimal, minbase or none.
    #[arg(long, value_enum, default_value_t = BaseVariant::None)]
    pub base: BaseVariant,
    /// Include Recommends.
    #[arg(long)]
    pub with_recommends: bool,
    /// Explain why this package is in the closure.
    #[arg(long)]
    pub why: Option<String>,
    /// Packages: NAME, NAME@VERSION-PREFIX (nodejs@20) or NAME=VERSION.
    #[arg(required = true)]
    pub packages: Vec<String>,
}

pub fn run(args: PackagesArgs, progress: &Progress) -> Result<()> {
    match args.command {
        PackagesCommand::Resolve(a) => resolve_cmd(a, progress),
    }
}

fn resolve_cmd(a: ResolveArgs, progress: &Progress) -> Result<()> {
    let requests = a
        .packages
        .iter()
        .map(|p| p.parse::<Request>())
        .collect::<Result<Vec<_>>>()?;
    let repo = Repo::new(a.repo.config()?, progress)?;
    let opts = ResolveOptions {
        base: a.base,
        recommends: a.with_recommends,
    };
    let (_, res) = resolve::resolve_in_repo(&repo, a.repo.suite.as_deref(), &requests, &opts)?;
    if let Some(w) = &a.why {
        for (name, reason) in res.why(w)? {
            println!("{name}: {reason}");
        }
        return Ok(());
    }
    println!("# suite {} ({}), Release {}", res.suite, res.arch, res.date);
    let mut total = 0;
    for r in &res.packages {
        total += r.pkg.installed_size * 1024;
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            r.pkg.name,
            r.pkg.version,
            r.pkg.arch,
            human_bytes(r.pkg.installed_size * 1024),
            r.pkg.sha256,
            r.reason
        );
    }
    println!(
        "# {} packages, {} installed",
        res.packages.len(),
        human_bytes(total)
    );
    Ok(())
}

/// Options of `kiln image packages` and `kiln lock` beyond the repository.
#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Base set: minimal (libc, shell, coreutils, CA certificates, tzdata, netbase), minbase (Essential + apt) or none.
    #[arg(long, value_enum, default_value_t = BaseVariant::Minimal)]
    pub base: BaseVariant,
    /// Include Recommends.
    #[arg(long)]
    pub with_recommends: bool,
}

impl SetArgs {
    fn request(&self, packages: Vec<String>) -> Result<crate::packages::image::PackagesRequest> {
        Ok(crate::packages::image::PackagesRequest {
            repo: self.repo.config()?,
            suite: self.repo.suite.clone(),
            base: self.base,
            recommends: self.with_recommends,
            packages,
            pull: false,
        })
    }
}

/// `kiln lock`.
#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// The lockfile to write (default: kiln.lock, or DIR/kiln.lock with --auto).
    #[arg(short = 'o', long)]
    pub output: Option<std::path::PathBuf>,
    /// Lock the package sets of DIR's auto build (its build stage and its
    /// runtime), which `kiln build DIR` then uses.
    #[arg(long, value_name = "DIR", conflicts_with = "packages")]
    pub auto: Option<std::path::PathBuf>,
    /// With --auto: the platform whose packages are locked (default: this machine's).
    #[arg(long, requires = "auto")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub plan: super::build::PlanArgs,
    /// Packages (NAME, NAME@VERSION-PREFIX, NAME=VERSION); without any, the
    /// requests of the existing lockfile are resolved again (an update).
    pub packages: Vec<String>,
}

pub fn lock(a: LockArgs, progress: &Progress) -> Result<()> {
    if let Some(dir) = a.auto {
        let output = a
            .output
            .unwrap_or_else(|| dir.join(crate::build::LOCK_FILE));
        let req = crate::build::BuildRequest {
            context: dir,
            auto: true,
            platform: a.platform,
            plan: a.plan.request(),
            ..Default::default()
        };
        let locks = crate::build::lock_auto(&req, progress)?;
        locks.write(&output)?;
        for l in &locks.sets {
            println!(
                "{}: {} packages for {} from {} ({}), Release {}",
                output.display(),
                l.packages.len(),
                l.requests.join(" "),
                l.suite,
                l.arch,
                l.release_date
            );
        }
        return Ok(());
    }
    let output = a.output.unwrap_or_else(|| "kiln.lock".into());
    let mut set = a.set.clone();
    let packages = if a.packages.is_empty() {
        let old = crate::packages::lock::Lockfile::read(&output).map_err(|e| {
            e.context("no packages given and no lockfile to update: run `kiln lock PKG…`")
        })?;
        set.base = old.base;
        set.with_recommends |= old.recommends;
        old.requests
    } else {
        a.packages
    };
    let req = set.request(packages)?;
    let l = crate::packages::image::lock(&req, progress)?;
    l.write(&output)?;
    println!(
        "{}: {} packages from {} ({}), Release {}",
        output.display(),
        l.packages.len(),
        l.suite,
        l.arch,
        l.release_date
    );
    Ok(())
}

/// `kiln image packages`.
#[derive(Args, Debug)]
pub struct ImagePackagesArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// Name of the image in the local store (NAME[:TAG]).
    #[arg(short, long)]
    pub tag: String,
    /// Use exactly the files of this lockfile (see `kiln lock`).
    #[arg(long)]
    pub lock: Option<std::path::PathBuf>,
    /// Resolve against the archive again instead of reusing the set an
    /// earlier build of the same request resolved.
    #[arg(long)]
    pub pull: bool,
    /// At most this many layers.
    #[arg(long, default_value_t = crate::packages::compose::DEFAULT_MAX_LAYERS)]
    pub max_layers: usize,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = crate::oci::Compression::Gzip)]
    pub compression: crate::oci::Compression,
    /// Trust this extra CA certificate (PEM) in the image, like a file in
    /// /usr/local/share/ca-certificates (repeatable; e.g. a company proxy's CA).
    #[arg(long = "ca-cert")]
    pub ca_cert: Vec<std::path::PathBuf>,
    /// Keep what images leave out by default: /usr/share/doc (copyright
    /// files are always kept), man and info pages, translations (.mo) and
    /// lintian overrides. dpkg still lists those files either way.
    #[arg(long)]
    pub keep_docs: bool,
    /// Also export the image: type=oci,dest=DIR | type=oci-archive,dest=FILE | type=docker,dest=FILE.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Packages: NAME, NAME@VERSION-PREFIX (nodejs@20) or NAME=VERSION.
    pub packages: Vec<String>,
}

pub fn image_packages(a: ImagePackagesArgs, progress: &Progress) -> Result<()> {
    use crate::ship::{Destination, ShipOptions, ship};
    let output = a
        .output
        .as_deref()
        .map(Destination::parse_output)
        .transpose()?;
    let name = crate::oci::images::normalize_name(&a.tag)?;
    let lock = a
        .lock
        .as_deref()
        .map(crate::packages::lock::Lockfile::read)
        .transpose()?;
    if lock.is_none() && a.packages.is_empty() && a.set.base == BaseVariant::None {
        anyhow::bail!("nothing to install: give packages, a --base, or --lock");
    }
    let mut req = a.set.request(a.packages)?;
    req.pull = a.pull;
    let opts = crate::packages::compose::ComposeOptions {
        max_layers: a.max_layers,
        layer: crate::oci::LayerOptions {
            compression: a.compression,
            epoch: crate::oci::layer::source_date_epoch()?,
        },
        extra_ca: a
            .ca_cert
            .iter()
            .map(|p| {
                let pem = std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", p.display()))?;
                if !pem.starts_with(b"-----BEGIN CERTIFICATE-----") {
                    anyhow::bail!("--ca-cert {}: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)", p.display());
                }
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| "extra.crt".into());
                Ok((name, pem))
            })
            .collect::<Result<Vec<_>>>()?,
        keep_docs: a.keep_docs,
        ..Default::default()
    };
    let cache = crate::oci::cache_store()?;
    let built = crate::packages::image::build(&cache, &req, lock, &opts, progress)?;
    if let Some(note) = built.set.stale_note() {
        progress.info(note);
    }
    let images = crate::oci::ImageStore::open_default()?;
    images.import(&cache, &built.image.manifest_desc, &name)?;
    if let Some(out) = output {
        ship(
            &cache,
            &built.image.manifest_desc,
            &name,
            &out,
            &ShipOptions::default(),
            progress,
        )?;
    }
    println!(
        "{name} {} ({} packages from {}, {} layers, {})",
        built.image.digest()?,
        built.lock.packages.len(),
        built.lock.suite,
        built.composed.layers.len(),
        human_bytes(built.image.size())
    );
    Ok(())
}
