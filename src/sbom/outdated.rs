//! `kiln outdated IMAGE`: which Debian packages of an image its suite now
//! has other versions of, security updates first. Read-only: it compares
//! the image's [`Record`] (what the build composed, with versions) to the
//! suite's current signed indexes, and changes nothing.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{DebPackage, Record};
use crate::Result;
use crate::packages::index::SuiteIndex;
use crate::packages::repo::{Repo, RepoConfig, canonical_suite};
use crate::packages::version;
use crate::platform::Platform;
use crate::progress::Progress;

/// One package whose suite has moved on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Update {
    pub name: String,
    pub arch: String,
    /// The version in the image.
    pub installed: String,
    /// The suite's candidate now; `None` when the suite no longer has the
    /// package at all.
    pub available: Option<String>,
    /// The archive the candidate comes from (`trixie-security`…).
    pub archive: Option<String>,
    /// The candidate comes from the security archive.
    pub security: bool,
}

/// What `kiln outdated` reports for one image.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub suite: String,
    /// The suite index's date (its newest Release's `Date:`).
    pub index_date: String,
    /// How many Debian packages the image holds.
    pub packages: usize,
    /// Security updates first, then by name.
    pub updates: Vec<Update>,
}

/// The suite the record's packages came from: their archive without its
/// `-security`/`-updates`/`-backports` suffix (one suite per image).
pub fn suite_of(record: &Record) -> Result<&'static str> {
    let mut suites = record.debian.iter().map(|p| base_suite(&p.archive));
    let Some(first) = suites.next() else {
        bail!(
            "image {} has no Debian packages kiln composed (it was built FROM an image): nothing to compare",
            record.image.digest
        );
    };
    if let Some(other) = suites.find(|s| *s != first) {
        bail!(
            "image {} holds packages of two suites ({first} and {other}); kiln outdated compares one",
            record.image.digest
        );
    }
    canonical_suite(first).with_context(|| format!("the record of image {}", record.image.digest))
}

fn base_suite(archive: &str) -> &str {
    ["-security", "-updates", "-backports", "-proposed-updates"]
        .iter()
        .find_map(|s| archive.strip_suffix(s))
        .unwrap_or(archive)
}

/// The packages of `installed` whose candidate in `idx` differs from the
/// installed version (newer, or older after a suite was rolled back), or
/// that `idx` no longer has.
pub fn updates<'a>(
    installed: impl IntoIterator<Item = &'a DebPackage>,
    idx: &SuiteIndex,
) -> Vec<Update> {
    let mut out: Vec<Update> = installed
        .into_iter()
        .filter_map(|p| {
            let candidate = idx.best(&p.name);
            let same = candidate.is_some_and(|c| {
                version::compare(c.version.as_str(), &p.version) == Ordering::Equal
            });
            if same {
                return None;
            }
            Some(Update {
                name: p.name.clone(),
                arch: p.arch.clone(),
                installed: p.version.clone(),
                available: candidate.map(|c| c.version.as_str().to_string()),
                archive: candidate.map(|c| c.dist.to_string()),
                security: candidate.is_some_and(|c| c.dist.ends_with("-security")),
            })
        })
        .collect();
    out.sort_by(|a, b| b.security.cmp(&a.security).then(a.name.cmp(&b.name)));
    out
}

/// Compares `record` with its suite's current indexes (fetched when the
/// cached ones are stale, as a package resolve does).
pub fn check(record: &Record, progress: &Progress) -> Result<Report> {
    let suite = suite_of(record)?;
    let platform = Platform::parse(&record.image.platform)
        .map_err(|e| anyhow::anyhow!("the record's platform {:?}: {e}", record.image.platform))?;
    let arch = platform.debian_arch()?;
    let config = RepoConfig {
        arch: arch.to_string(),
        ..RepoConfig::from_env()
    };
    let repo = Repo::new(config, progress)?;
    let idx = repo
        .load_suite(suite)
        .with_context(|| format!("reading the {suite} indexes for {arch}"))?;
    // A package appears once per architecture it was composed for.
    let unique: BTreeMap<(&str, &str), &DebPackage> = record
        .debian
        .iter()
        .map(|p| ((p.name.as_str(), p.arch.as_str()), p))
        .collect();
    Ok(Report {
        image: record.image.digest.clone(),
        suite: suite.to_string(),
        index_date: idx.date().to_string(),
        packages: unique.len(),
        updates: updates(unique.into_values(), &idx),
    })
}

/// The report as `kiln outdated` prints it: a table, then one line that
/// says how many and against which index.
pub fn render_table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if !r.updates.is_empty() {
        let w = |f: fn(&Update) -> usize, head: &str| {
            r.updates.iter().map(f).max().unwrap_or(0).max(head.len())
        };
        let (wn, wi, wa) = (
            w(|u| u.name.len(), "PACKAGE"),
            w(|u| u.installed.len(), "INSTALLED"),
            w(|u| u.available.as_deref().map_or(9, str::len), "AVAILABLE"),
        );
        let _ = writeln!(
            s,
            "{:wn$}  {:wi$}  {:wa$}  FROM",
            "PACKAGE", "INSTALLED", "AVAILABLE"
        );
        for u in &r.updates {
            let from = match (&u.archive, u.security) {
                (Some(a), true) => format!("{a} (security)"),
                (Some(a), false) => a.clone(),
                (None, _) => "no longer in the suite".to_string(),
            };
            let _ = writeln!(
                s,
                "{:wn$}  {:wi$}  {:wa$}  {from}",
                u.name,
                u.installed,
                u.available.as_deref().unwrap_or("(removed)")
            );
        }
    }
    let security = r.updates.iter().filter(|u| u.security).count();
    let _ = if r.updates.is_empty() {
        writeln!(
            s,
            "all {} Debian packages are current in {} (index of {})",
            r.packages, r.suite, r.index_date
        )
    } else {
        writeln!(
            s,
            "{} of {} Debian packages have updates in {} ({security} from the security archive; index of {}); rebuild with --pull to take them",
            r.updates.len(),
            r.packages,
            r.suite,
            r.index_date
        )
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::repo::{Archive, Release};

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn index(archives: &[(&str, &[(&str, &str)])]) -> SuiteIndex {
        let mut idx = SuiteIndex::new("trixie", "amd64");
        for (prio, (dist, pkgs)) in archives.iter().enumerate() {
            let rel = Release::parse(
                Archive {
                    base: "http://mirror/debian".into(),
                    dist: dist.to_string(),
                    optional: false,
                },
                &format!(
                    "Date: Sat, 01 Nov 2025 00:00:00 UTC\nSHA256:\n {SHA} 1 main/binary-amd64/Packages\n"
                ),
                vec![],
            )
            .unwrap();
            let text: String = pkgs
                .iter()
                .map(|(n, v)| {
                    format!(
                        "Package: {n}\nVersion: {v}\nArchitecture: amd64\nFilename: pool/x.deb\nSHA256: {SHA}\nSize: 1\n\n"
                    )
                })
                .collect();
            idx.add(&rel, prio, &text).unwrap();
        }
        idx.finish();
        idx
    }

    fn deb(name: &str, version: &str) -> DebPackage {
        DebPackage {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            source: name.into(),
            source_version: version.into(),
            sha256: SHA.into(),
            size: 1,
            archive: "trixie".into(),
            filename: "pool/x.deb".into(),
            distro: "debian-13".into(),
            license: None,
            layer: format!("sha256:{SHA}"),
        }
    }

    #[test]
    fn security_updates_first_then_point_updates_then_removed_packages() {
        let idx = index(&[
            (
                "trixie",
                &[
                    ("libssl3t64", "3.5.1-1"),
                    ("tzdata", "2025b-4"),
                    ("bash", "5.2.37-2"),
                ],
            ),
            ("trixie-updates", &[("tzdata", "2025c-0+deb13u1")]),
            ("trixie-security", &[("libssl3t64", "3.5.1-1+deb13u1")]),
        ]);
        let installed = [
            deb("bash", "5.2.37-2"),
            deb("tzdata", "2025b-4"),
            deb("libssl3t64", "3.5.1-1"),
            deb("gone", "1.0-1"),
        ];
        let u = updates(&installed, &idx);
        let seen: Vec<(&str, Option<&str>, bool)> = u
            .iter()
            .map(|u| (u.name.as_str(), u.available.as_deref(), u.security))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("libssl3t64", Some("3.5.1-1+deb13u1"), true),
                ("gone", None, false),
                ("tzdata", Some("2025c-0+deb13u1"), false),
            ]
        );
        assert_eq!(u[2].archive.as_deref(), Some("trixie-updates"));
    }

    #[test]
    fn the_suite_is_the_archive_without_its_suffix() {
        assert_eq!(base_suite("trixie-security"), "trixie");
        assert_eq!(base_suite("bookworm-updates"), "bookworm");
        assert_eq!(base_suite("sid"), "sid");
    }
}
