//! `kiln packages …`: Debian package resolution from the command line.

use clap::{Args, Subcommand};

use crate::Result;
use crate::packages::repo::{Repo, RepoConfig};
use crate::packages::resolve::{self, Base, Request, ResolveOptions};
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
            if a != "amd64" && a != "arm64" {
                anyhow::bail!("--arch {a}: kiln builds amd64 and arm64 images");
            }
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
    #[arg(long, value_enum, default_value_t = Base::None)]
    pub base: Base,
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
