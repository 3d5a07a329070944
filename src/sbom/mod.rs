//! What an image holds, recorded at build time, and the documents made
//! from that record: SPDX 2.3 and CycloneDX 1.6 SBOMs, SLSA v1 provenance.
//!
//! No scanner is involved: the [`Record`] is written by `kiln build` from
//! what the build itself used — the Debian package sets it composed (with
//! the layer that holds each package), the lockfiles of the auto plan and
//! the plan itself. It is kept in the data dir keyed by the image's
//! manifest digest ([`save`], [`load`]), so every name of the image (and
//! its digest) finds it, and the image's own bytes never change.
//! The documents ([`spdx`], [`cyclonedx`], [`provenance`]) are pure
//! functions of the record: same image, same bytes.
//!
//! [`attach`] turns a document into an OCI 1.1 artifact whose `subject` is
//! the image manifest (a registry's referrers, or an OCI layout's index).

pub mod attach;
pub mod collect;
pub mod cyclonedx;
pub mod debian;
pub mod lockfiles;
pub mod outdated;
pub mod provenance;
pub mod purl;
pub mod spdx;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::oci::Digest;

/// The record's format version. 2 added each package set's request
/// ([`SetRequest`]), which `kiln rebase` re-resolves; version 1 records
/// are still read (for `kiln sbom`, `kiln outdated`).
pub const RECORD_VERSION: u32 = 2;

/// The oldest record version this kiln reads.
pub const MIN_RECORD_VERSION: u32 = 1;

/// What one image holds and how it was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub image: ImageInfo,
    /// The application the image was built from.
    pub app: App,
    /// Debian packages kiln composed into the image, by name.
    pub debian: Vec<DebPackage>,
    /// Language dependencies named by the lockfiles the plan used.
    pub languages: Vec<LangPackage>,
    pub build: BuildInfo,
}

/// The image itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The manifest digest (`sha256:…`).
    pub digest: String,
    /// The config's `created` (RFC 3339; `SOURCE_DATE_EPOCH` when set).
    pub created: String,
    /// `os/arch`.
    pub platform: String,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
}

/// The application: from its manifest (`package.json`, `pyproject.toml`,
/// `Cargo.toml`, `go.mod`) when it names itself, else `app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub version: Option<String>,
    /// The purl of the app when its ecosystem has one.
    pub purl: Option<String>,
}

/// One Debian package in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The source package and its version (`Source:` of the control data;
    /// the package's own name and version when it has none).
    pub source: String,
    pub source_version: String,
    /// sha256 of the `.deb`, as the signed Packages index gives it.
    pub sha256: String,
    pub size: u64,
    /// Where it was downloaded from (`trixie-security`…) and its path there.
    pub archive: String,
    pub filename: String,
    /// `debian-13`, `debian-12`, `debian-sid` (the purl's `distro`).
    pub distro: String,
    /// SPDX license expression from a machine-readable `copyright` file,
    /// or `None` (NOASSERTION).
    pub license: Option<String>,
    /// The layer blob digest that holds the package's files.
    pub layer: String,
}

/// One dependency named by a language lockfile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LangPackage {
    /// `npm`, `pypi`, `golang`, `cargo`, `gem`, `composer`.
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    pub purl: String,
    /// (algorithm as SPDX names it: `SHA256`, `SHA512`…, lower-case hex).
    pub hashes: Vec<(String, String)>,
    /// License the lockfile states (npm's `license`), as written.
    pub license: Option<String>,
    /// The lockfile, relative to the context.
    pub lockfile: String,
}

/// How the image was built: the provenance's inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// `auto`, `dockerfile` or `inline`.
    pub frontend: String,
    /// The providers of an auto build.
    pub providers: Vec<String>,
    /// Digest of the build context (every file the build could read).
    pub context_digest: Option<String>,
    /// The auto plan (Nixpacks JSON), when the build used one.
    pub plan: Option<serde_json::Value>,
    /// sha256 of `kiln.lock` as read, when the build used one.
    pub kiln_lock: Option<String>,
    /// `--build-arg`s (values), `-e` plan variables and `--label`s.
    /// Secret values never appear here: only secret ids are listed.
    pub arguments: BTreeMap<String, String>,
    pub secret_ids: Vec<String>,
    /// The Debian package sets composed (one per package base).
    pub package_sets: Vec<PackageSetInfo>,
    pub kiln_version: String,
    /// The image `kiln rebase` made this one from (its manifest digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebased_from: Option<String>,
}

/// A composed Debian package set: which archive state it was resolved from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSetInfo {
    pub suite: String,
    pub arch: String,
    /// `Date:` of the suite's `Release` the set was resolved against.
    pub release_date: String,
    /// The mirror the `.deb` files came from.
    pub mirror: String,
    /// sha256 of the set as a `kiln.lock` section (names every file).
    pub digest: String,
    /// Whether the image holds this set's packages (a build stage's set
    /// is an input only).
    pub in_image: bool,
    /// What the set was composed from, to compose it again (`kiln
    /// rebase`); `None` in records of version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<SetRequest>,
}

/// A package set's request and how its layers were written: what `kiln
/// rebase` re-resolves against the suite's current index and composes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRequest {
    /// The packages asked for (`nodejs@20`, `tini`…), sorted.
    pub requests: Vec<String>,
    pub base: crate::packages::resolve::BaseVariant,
    pub recommends: bool,
    /// Extra CA certificates in the set's bundle: (file name, PEM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_ca: Vec<(String, String)>,
    /// The set's layer blobs, bottom first.
    pub layers: Vec<String>,
}

/// Which SBOM format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Format {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

impl Format {
    /// The artifact type of an attached document.
    pub fn artifact_type(self) -> &'static str {
        match self {
            Format::Spdx => spdx::MEDIA_TYPE,
            Format::Cyclonedx => cyclonedx::MEDIA_TYPE,
        }
    }
}

/// The document for a record, in `format`.
pub fn render(record: &Record, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Spdx => spdx::document(record),
        Format::Cyclonedx => cyclonedx::document(record),
    }
}

/// Pretty JSON with a final newline (the bytes of every document).
pub(crate) fn to_json(value: &serde_json::Value) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value)?;
    out.push(b'\n');
    Ok(out)
}

/// `$KILN_DATA_DIR/sbom`: the records, one file per image manifest.
pub fn records_dir() -> Result<PathBuf> {
    Ok(crate::paths::data_dir()?.join("sbom"))
}

fn record_path(digest: &Digest) -> Result<PathBuf> {
    Ok(records_dir()?.join(format!("{}-{}.json", digest.algorithm(), digest.hex())))
}

/// Keeps the record of the image `record.image.digest`.
pub fn save(record: &Record) -> Result<()> {
    let digest = Digest::from_oci(&record.image.digest.parse()?)
        .with_context(|| format!("record of {}: bad digest", record.image.digest))?;
    let path = record_path(&digest)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = serde_json::to_vec_pretty(record)?;
    crate::oci::layout::write_atomic(&path, &bytes)
        .with_context(|| format!("writing the SBOM record {}", path.display()))
}

/// The record of the local image `image` (a name, `name:tag` or digest
/// prefix in kiln's image store).
pub fn record_of(image: &str) -> Result<Record> {
    record_for(image, None)
}

/// The record of a local image; of an image index, the record of the
/// manifest for `platform` (this machine's when `None`, as `kiln run`).
pub fn record_for(image: &str, platform: Option<&crate::platform::Platform>) -> Result<Record> {
    let images = crate::oci::ImageStore::open_default()?;
    load(&images.image(image, platform)?.digest()?)
}

/// The record of the image whose manifest is `digest`.
pub fn load(digest: &Digest) -> Result<Record> {
    let path = record_path(digest)?;
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no SBOM record for image {digest}: kiln records what an image holds when it builds it (kiln build); images pulled or loaded from elsewhere have none ({} is missing)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let record: Record = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{}: not a kiln SBOM record; rebuild the image",
            path.display()
        )
    })?;
    if !(MIN_RECORD_VERSION..=RECORD_VERSION).contains(&record.version) {
        bail!(
            "{}: SBOM record version {} (this kiln reads {MIN_RECORD_VERSION} to {RECORD_VERSION}); rebuild the image",
            path.display(),
            record.version
        );
    }
    Ok(record)
}

/// The document namespace / serial of an image: derived from its digest,
/// so a document names its image and is the same on every machine.
pub(crate) fn image_hex(record: &Record) -> &str {
    record
        .image
        .digest
        .split_once(':')
        .map(|(_, h)| h)
        .unwrap_or(&record.image.digest)
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A small record the document tests share.
    use super::*;

    pub fn record() -> Record {
        Record {
            version: RECORD_VERSION,
            image: ImageInfo {
                digest: format!("sha256:{}", "ab".repeat(32)),
                created: "2024-01-02T03:04:05Z".into(),
                platform: "linux/amd64".into(),
                layers: vec![format!("sha256:{}", "11".repeat(32))],
            },
            app: App {
                name: "@acme/web".into(),
                version: Some("1.0.0".into()),
                purl: Some("pkg:npm/%40acme/web@1.0.0".into()),
            },
            debian: vec![DebPackage {
                name: "libc6".into(),
                version: "2.41-12".into(),
                arch: "amd64".into(),
                source: "glibc".into(),
                source_version: "2.41-12".into(),
                sha256: "cd".repeat(32),
                size: 1234,
                archive: "trixie".into(),
                filename: "pool/main/g/glibc/libc6_2.41-12_amd64.deb".into(),
                distro: "debian-13".into(),
                license: Some("LGPL-2.1-or-later AND LicenseRef-public-domain".into()),
                layer: format!("sha256:{}", "11".repeat(32)),
            }],
            languages: vec![LangPackage {
                ecosystem: "npm".into(),
                name: "express".into(),
                version: "4.21.2".into(),
                purl: "pkg:npm/express@4.21.2".into(),
                hashes: vec![("SHA512".into(), "ef".repeat(64))],
                license: Some("MIT".into()),
                lockfile: "package-lock.json".into(),
            }],
            build: BuildInfo {
                frontend: "auto".into(),
                providers: vec!["node".into()],
                kiln_version: "0.1.0".into(),
                ..BuildInfo::default()
            },
        }
    }
}
