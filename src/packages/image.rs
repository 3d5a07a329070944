//! Images made of Debian packages: resolve (or read a lockfile), compose
//! layers, and assemble the image config and manifest. This is the library
//! API behind `kiln image packages` and `kiln lock`.

use anyhow::bail;

use super::compose::{self, ComposeOptions, Composed};
use super::lock::Lockfile;
use super::repo::{Repo, RepoConfig};
use super::resolve::{self, BaseVariant, Request, Resolution, ResolveOptions};
use crate::Result;
use crate::oci::image::{Image, ImageBuilder, set_env};
use crate::oci::store::Store;
use crate::progress::Progress;

/// `PATH` of package images (Debian's default for root).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct PackagesRequest {
    pub repo: RepoConfig,
    /// A suite, or `None` to pick one from the version requests.
    pub suite: Option<String>,
    pub base: BaseVariant,
    pub recommends: bool,
    /// `name`, `name@prefix` or `name=version`.
    pub packages: Vec<String>,
    /// Resolve against the archive again even when this request's set was
    /// resolved before (`--pull`); otherwise the stored set is reused
    /// without reading an index ([`super::resolved`]).
    pub pull: bool,
}

impl PackagesRequest {
    fn requests(&self) -> Result<Vec<Request>> {
        self.packages.iter().map(|p| p.parse()).collect()
    }

    fn sorted_requests(&self) -> Vec<String> {
        let mut r = self.packages.clone();
        r.sort();
        r
    }
}

/// Resolves a request (reading indexes).
pub fn resolve(req: &PackagesRequest, progress: &Progress) -> Result<Resolution> {
    let repo = Repo::new(req.repo.clone(), progress)?;
    let opts = ResolveOptions {
        base: req.base,
        recommends: req.recommends,
    };
    let (_, res) = resolve::resolve_in_repo(&repo, req.suite.as_deref(), &req.requests()?, &opts)?;
    Ok(res)
}

/// Resolves a request into a lockfile (always against the archive), and
/// keeps it as the request's resolved set for later builds.
pub fn lock(req: &PackagesRequest, progress: &Progress) -> Result<Lockfile> {
    let res = resolve(req, progress)?;
    let lock = Lockfile::from_resolution(&res, req.base, req.recommends, &req.sorted_requests());
    // With `--suite` unset the suite is picked from the versions; the set
    // is stored under the request as given, so the same request finds it.
    if let Err(e) = super::resolved::put(req, &lock) {
        progress.warn(format!("{e:#}"));
    }
    Ok(lock)
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: Image,
    pub lock: Lockfile,
    pub composed: Composed,
    /// Where the package set came from.
    pub set: SetSource,
}

/// A package base as a build composed it: the set and the layers holding
/// it (what the SBOM lists, `crate::sbom`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ComposedSet {
    pub lock: Lockfile,
    pub layers: Vec<compose::PackageLayer>,
    /// The mirror the `.deb` files came from.
    pub mirror: String,
    /// Extra CA certificates composed into the set's bundle: (file name, PEM).
    pub extra_ca: Vec<(String, String)>,
}

/// Where a built image's package set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetSource {
    /// The lockfile the caller gave.
    Lockfile,
    /// Resolved against the archive now.
    Resolved,
    /// The set resolved by an earlier build, this long ago (no index read).
    Reused(std::time::Duration),
}

impl SetSource {
    /// A note for the progress line when a reused set is older than
    /// [`super::resolved::STALE_AFTER`].
    pub fn stale_note(&self) -> Option<String> {
        match self {
            SetSource::Reused(age) if *age >= super::resolved::STALE_AFTER => Some(format!(
                "package set resolved {} ago; --pull for newer packages",
                super::resolved::age_text(*age)
            )),
            _ => None,
        }
    }
}

/// Builds an image into `store`. With `lock`, exactly its files are used
/// (after checking it was made for this request); otherwise the set
/// resolved for this request by an earlier build is reused, or (the first
/// time, or with `req.pull`) the request is resolved against the indexes.
pub fn build(
    store: &Store,
    req: &PackagesRequest,
    lock: Option<Lockfile>,
    opts: &ComposeOptions,
    progress: &Progress,
) -> Result<Built> {
    let (lock, set) = match lock {
        Some(l) => {
            let want = req.sorted_requests();
            if !req.packages.is_empty()
                && (l.requests != want || l.base != req.base || l.recommends != req.recommends)
            {
                bail!(
                    "kiln.lock was made for {:?} (base {:?}, recommends {}), not for {:?} (base {:?}, recommends {}): run `kiln lock` to update it",
                    l.requests,
                    l.base,
                    l.recommends,
                    want,
                    req.base,
                    req.recommends
                );
            }
            if let Some(s) = &req.suite
                && super::repo::canonical_suite(s)? != l.suite
            {
                bail!(
                    "kiln.lock is for suite {} but --suite {s} was given: run `kiln lock --suite {s}`",
                    l.suite
                );
            }
            (l, SetSource::Lockfile)
        }
        None => lock_or_resolve(req, progress)?,
    };
    let http = super::fetch::Http::new();
    let composed = compose::compose(&req.repo, &http, store, &lock, opts, progress)?;
    let image = assemble(store, &lock, &composed, opts)?;
    Ok(Built {
        image,
        lock,
        composed,
        set,
    })
}

fn lock_or_resolve(req: &PackagesRequest, progress: &Progress) -> Result<(Lockfile, SetSource)> {
    if !req.pull
        && let Some(r) = super::resolved::get(req)?
    {
        return Ok((r.lock, SetSource::Reused(r.age)));
    }
    Ok((lock(req, progress)?, SetSource::Resolved))
}

/// The history entry (`created_by`) of a package layer.
pub fn layer_history(l: &compose::PackageLayer) -> String {
    if l.packages.is_empty() {
        "kiln packages: dpkg database and configuration".to_string()
    } else if l.packages.len() == 1 {
        format!("kiln packages: {}", l.packages[0])
    } else {
        format!("kiln packages: {} packages", l.packages.len())
    }
}

/// Image config + manifest over composed layers.
pub fn assemble(
    store: &Store,
    lock: &Lockfile,
    composed: &Composed,
    opts: &ComposeOptions,
) -> Result<Image> {
    let platform = crate::platform::Platform::from_debian_arch(&lock.arch)?;
    let mut b = ImageBuilder::scratch(platform);
    for l in &composed.layers {
        b.add_layer(&l.to_layer(), &layer_history(l));
    }
    let config = b.config_mut();
    set_env(config, "PATH", PATH);
    if lock
        .packages
        .iter()
        .any(|p| p.name == "dash" || p.name == "bash")
    {
        config.set_cmd(Some(vec!["/bin/sh".to_string()]));
    }
    let mut labels = std::collections::HashMap::new();
    labels.insert("dev.kiln.debian.suite".to_string(), lock.suite.clone());
    labels.insert(
        "dev.kiln.debian.release-date".to_string(),
        lock.release_date.clone(),
    );
    config.set_labels(Some(labels));
    b.write(store, opts.layer.epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_a_reused_set_older_than_a_week_is_named_stale() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(SetSource::Reused(6 * day).stale_note(), None);
        assert_eq!(SetSource::Resolved.stale_note(), None);
        assert_eq!(SetSource::Lockfile.stale_note(), None);
        assert_eq!(
            SetSource::Reused(9 * day + Duration::from_secs(5)).stale_note(),
            Some("package set resolved 9 days ago; --pull for newer packages".to_string())
        );
    }
}
