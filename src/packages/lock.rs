//! `kiln.lock`: the exact package files an image is made of (TOML).
//!
//! With a lockfile, kiln downloads exactly those files (by filename,
//! verified by sha256) without reading any index, so two machines build
//! identical layers; a file the mirror no longer has is a clear error
//! (point `KILN_DEBIAN_MIRROR` at snapshot.debian.org to rebuild an old lock).
//!
//! An auto build composes two package sets (the build stage's toolchain,
//! the runtime's packages), so its `kiln.lock` holds one `[[set]]` per set
//! ([`Locks`]); a lockfile of one set (`kiln lock PKG…`) is read as a
//! [`Locks`] of one.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::repo::RepoConfig;
use super::resolve::{BaseVariant, Resolution};
use crate::Result;
use crate::oci::digest::Digest;

pub const LOCK_VERSION: u32 = 1;

/// The lockfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub version: u32,
    pub suite: String,
    pub arch: String,
    /// `Date:` of the suite's Release when the lock was made.
    pub release_date: String,
    pub base: BaseVariant,
    pub recommends: bool,
    /// What was asked for (`nodejs@20`…), to re-resolve with `kiln lock`.
    pub requests: Vec<String>,
    #[serde(rename = "package")]
    pub packages: Vec<LockedPackage>,
}

/// One package file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The dist it comes from (`trixie`, `trixie-security`…): decides the mirror.
    pub archive: String,
    /// Path relative to the mirror root (`pool/main/…`).
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

impl LockedPackage {
    pub fn digest(&self) -> Result<Digest> {
        Digest::from_hex(&self.sha256).with_context(|| {
            format!(
                "kiln.lock: package {}: bad sha256 {:?}",
                self.name, self.sha256
            )
        })
    }

    /// Download URL for this file under a repository configuration.
    pub fn url(&self, cfg: &RepoConfig) -> String {
        let base = if self.archive.ends_with("-security") {
            cfg.archives(&self.suite_of())
                .ok()
                .and_then(|a| a.into_iter().find(|a| a.dist.ends_with("-security")))
                .map(|a| a.base)
                .unwrap_or_else(|| cfg.mirror.trim_end_matches('/').to_string())
        } else {
            cfg.mirror.trim_end_matches('/').to_string()
        };
        format!("{base}/{}", self.filename)
    }

    fn suite_of(&self) -> String {
        self.archive.split('-').next().unwrap_or("").to_string()
    }
}

impl Lockfile {
    pub fn from_resolution(
        res: &Resolution,
        base: BaseVariant,
        recommends: bool,
        requests: &[String],
    ) -> Lockfile {
        let mut packages: Vec<LockedPackage> = res
            .packages
            .iter()
            .map(|r| LockedPackage {
                name: r.pkg.name.clone(),
                version: r.pkg.version.to_string(),
                arch: r.pkg.arch.clone(),
                archive: r.pkg.dist.to_string(),
                filename: r.pkg.filename.clone(),
                sha256: r.pkg.sha256.hex().to_string(),
                size: r.pkg.size,
            })
            .collect();
        packages.sort();
        let mut requests = requests.to_vec();
        requests.sort();
        Lockfile {
            version: LOCK_VERSION,
            suite: res.suite.clone(),
            arch: res.arch.clone(),
            release_date: res.date.clone(),
            base,
            recommends,
            requests,
            packages,
        }
    }

    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(self).context("serialising kiln.lock")?;
        Ok(format!(
            "# kiln.lock: the exact Debian package files of this image. Written by `kiln lock`; do not edit.\n{body}"
        ))
    }

    pub fn parse(text: &str, origin: &str) -> Result<Lockfile> {
        let lock: Lockfile = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("{origin}: not a valid kiln.lock: {e}. Regenerate it with `kiln lock`")
        })?;
        lock.check(origin)?;
        Ok(lock)
    }

    /// A version this kiln reads, and well-formed digests.
    fn check(&self, origin: &str) -> Result<()> {
        check_version(self.version, origin)?;
        for p in &self.packages {
            p.digest().with_context(|| origin.to_string())?;
        }
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Lockfile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Lockfile::parse(&text, &path.display().to_string())
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_toml()?)
    }
}

fn check_version(version: u32, origin: &str) -> Result<()> {
    if version != LOCK_VERSION {
        bail!(
            "{origin}: lockfile version {version} is not supported (this kiln writes version {LOCK_VERSION}): regenerate it with `kiln lock`"
        );
    }
    Ok(())
}

/// Written to a temp file next to `path`, then renamed, so a failed write
/// never leaves half a lockfile.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The package sets of one `kiln.lock`: one per composed package base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locks {
    pub version: u32,
    #[serde(rename = "set")]
    pub sets: Vec<Lockfile>,
}

impl Locks {
    /// Reads either form: `[[set]]` sections, or one set at the top level.
    pub fn parse(text: &str, origin: &str) -> Result<Locks> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("{origin}: not a valid kiln.lock: {e}. Regenerate it with `kiln lock`")
        })?;
        if !table.contains_key("set") {
            return Ok(Locks {
                version: LOCK_VERSION,
                sets: vec![Lockfile::parse(text, origin)?],
            });
        }
        let locks: Locks = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("{origin}: not a valid kiln.lock: {e}. Regenerate it with `kiln lock`")
        })?;
        check_version(locks.version, origin)?;
        for (i, set) in locks.sets.iter().enumerate() {
            set.check(&format!("{origin}: set {}", i + 1))?;
        }
        Ok(locks)
    }

    pub fn read(path: &Path) -> Result<Locks> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Locks::parse(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(self).context("serialising kiln.lock")?;
        Ok(format!(
            "# kiln.lock: the exact Debian package files of this build's package sets. Written by `kiln lock --auto`; do not edit.\n{body}"
        ))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_toml()?)
    }

    /// The set made for these requests (any order), base, suite and
    /// architecture.
    pub fn find(
        &self,
        suite: &str,
        arch: &str,
        base: BaseVariant,
        requests: &[String],
    ) -> Option<&Lockfile> {
        let mut want = requests.to_vec();
        want.sort();
        self.sets.iter().find(|l| {
            l.suite == suite
                && l.arch == arch
                && l.base == base
                && !l.recommends
                && l.requests == want
        })
    }
}

impl Lockfile {
    /// The digest of the set's canonical TOML: what a locked package base
    /// is keyed by.
    pub fn digest(&self) -> Result<Digest> {
        Ok(Digest::of(toml::to_string(self)?.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lockfile {
        Lockfile {
            version: 1,
            suite: "trixie".into(),
            arch: "amd64".into(),
            release_date: "Sat, 21 Nov 2026 09:15:44 UTC".into(),
            base: BaseVariant::Minimal,
            recommends: false,
            requests: vec!["nodejs".into()],
            packages: vec![LockedPackage {
                name: "libc6".into(),
                version: "2.41-12".into(),
                arch: "amd64".into(),
                archive: "trixie-security".into(),
                filename: "pool/updates/main/g/glibc/libc6_2.41-12_amd64.deb".into(),
                sha256: "b59b0625cd1a791375d40dab23a4d5d3d0641e3d0a773501becdc3725b7f99cf".into(),
                size: 10,
            }],
        }
    }

    #[test]
    fn roundtrip_and_urls() {
        let l = sample();
        let t = l.to_toml().unwrap();
        assert_eq!(Lockfile::parse(&t, "kiln.lock").unwrap(), l);
        let cfg = RepoConfig::default();
        assert_eq!(
            l.packages[0].url(&cfg),
            "http://deb.debian.org/debian-security/pool/updates/main/g/glibc/libc6_2.41-12_amd64.deb"
        );
    }

    #[test]
    fn sets_and_single_lockfiles() {
        let one = sample();
        let locks = Locks::parse(&one.to_toml().unwrap(), "kiln.lock").unwrap();
        assert_eq!(locks.sets, vec![one.clone()]);
        let mut two = one.clone();
        two.requests = vec!["ca-certificates".into(), "tini".into()];
        let locks = Locks {
            version: LOCK_VERSION,
            sets: vec![one.clone(), two.clone()],
        };
        let text = locks.to_toml().unwrap();
        assert_eq!(Locks::parse(&text, "kiln.lock").unwrap(), locks);
        let found = locks.find(
            "trixie",
            "amd64",
            BaseVariant::Minimal,
            &["tini".into(), "ca-certificates".into()],
        );
        assert_eq!(found, Some(&two));
        assert_eq!(
            locks.find("trixie", "arm64", BaseVariant::Minimal, &["nodejs".into()]),
            None
        );
        assert_eq!(
            locks.find("trixie", "amd64", BaseVariant::Minbase, &["nodejs".into()]),
            None
        );
        assert_ne!(one.digest().unwrap(), two.digest().unwrap());
        let e = format!(
            "{:#}",
            Locks::parse(
                &text.replacen("version = 1", "version = 3", 1),
                "app/kiln.lock"
            )
            .unwrap_err()
        );
        assert!(
            e.contains("app/kiln.lock") && e.contains("version 3"),
            "{e}"
        );
    }

    #[test]
    fn bad_lockfiles() {
        let t = sample().to_toml().unwrap();
        let bad = t.replace("b59b0625", "zzzz0625");
        let e = format!("{:#}", Lockfile::parse(&bad, "kiln.lock").unwrap_err());
        assert!(e.contains("libc6") && e.contains("sha256"), "{e}");
        let e = format!(
            "{:#}",
            Lockfile::parse("version = 9\n", "x/kiln.lock").unwrap_err()
        );
        assert!(e.contains("x/kiln.lock"), "{e}");
        let e = format!(
            "{:#}",
            Lockfile::parse(&t.replace("version = 1", "version = 2"), "kiln.lock").unwrap_err()
        );
        assert!(e.contains("version 2"), "{e}");
    }
}
