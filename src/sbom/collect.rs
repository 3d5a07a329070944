//! Making a [`Record`] at the end of a build, from what the build used.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{
    App, BuildInfo, DebPackage, ImageInfo, PackageSetInfo, RECORD_VERSION, Record, SetRequest,
};
use crate::Result;
use crate::oci::image::{Image, desc_digest};
use crate::packages::compose::PackageLayer;
use crate::packages::image::ComposedSet;
use crate::platform::Platform;

/// What the build knows beyond the image.
pub struct Inputs<'a> {
    pub image: &'a Image,
    /// Every package set the build composed; those whose layers are in the
    /// image are listed as its content, the others as build inputs.
    pub package_sets: &'a [ComposedSet],
    /// The snapshot directory of a package layer (unpacked).
    pub snapshot: &'a dyn Fn(&PackageLayer) -> Result<PathBuf>,
    /// The context of an auto build (its lockfiles are read); `None` for
    /// Dockerfile builds, whose `RUN` steps may install anything.
    pub lockfile_dir: Option<&'a Path>,
    /// Whether the plan prunes development dependencies.
    pub omit_dev: bool,
    pub build: BuildInfo,
}

/// The record of a freshly built image.
pub fn record(inputs: Inputs<'_>) -> Result<Record> {
    let img = inputs.image;
    let layers: Vec<String> = img
        .manifest
        .layers()
        .iter()
        .map(|l| desc_digest(l).map(|d| d.to_string()))
        .collect::<Result<_>>()?;
    let mut debian: Vec<DebPackage> = Vec::new();
    let mut build = inputs.build;
    for set in inputs.package_sets {
        let in_image = !set.layers.is_empty()
            && set
                .layers
                .iter()
                .all(|l| layers.contains(&l.blob.to_string()));
        build.package_sets.push(PackageSetInfo {
            suite: set.lock.suite.clone(),
            arch: set.lock.arch.clone(),
            release_date: set.lock.release_date.clone(),
            mirror: set.mirror.clone(),
            digest: set.lock.digest()?.to_string(),
            in_image,
            request: Some(SetRequest {
                requests: set.lock.requests.clone(),
                base: set.lock.base,
                recommends: set.lock.recommends,
                extra_ca: set.extra_ca.clone(),
                layers: set.layers.iter().map(|l| l.blob.to_string()).collect(),
            }),
        });
        if !in_image {
            continue;
        }
        let dirs = set
            .layers
            .iter()
            .map(|l| (inputs.snapshot)(l))
            .collect::<Result<Vec<_>>>()
            .context("reading the package layers for the SBOM")?;
        debian.extend(super::debian::packages(&set.lock, &set.layers, &dirs));
    }
    debian.sort();
    debian.dedup_by(|a, b| a.name == b.name && a.version == b.version && a.arch == b.arch);
    build.package_sets.sort_by(|a, b| a.digest.cmp(&b.digest));
    build.package_sets.dedup();
    let languages = match inputs.lockfile_dir {
        Some(dir) => super::lockfiles::read_dir(dir, inputs.omit_dev)?,
        None => Vec::new(),
    };
    let labels = img
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default();
    let mut app = inputs.lockfile_dir.and_then(app_of).unwrap_or(App {
        name: "app".into(),
        version: None,
        purl: None,
    });
    if let Some(t) = labels.get("org.opencontainers.image.title") {
        app.name = t.clone();
    }
    if let Some(v) = labels.get("org.opencontainers.image.version") {
        app.version = Some(v.clone());
    }
    Ok(Record {
        version: RECORD_VERSION,
        image: ImageInfo {
            digest: img.digest()?.to_string(),
            created: img
                .config
                .created()
                .clone()
                .unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
            platform: {
                let mut p = oci_spec::image::PlatformBuilder::default()
                    .os(img.config.os().clone())
                    .architecture(img.config.architecture().clone())
                    .build()?;
                p.set_variant(img.config.variant().clone());
                Platform::from_oci(&p).to_string()
            },
            layers,
        },
        app,
        debian,
        languages,
        build,
    })
}

/// The app's own name and version from its manifest, when it names itself.
fn app_of(dir: &Path) -> Option<App> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    if let Some(t) = read("package.json")
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
        && let Some(name) = v.get("name").and_then(|n| n.as_str())
    {
        let version = v.get("version").and_then(|n| n.as_str()).map(String::from);
        let purl = super::purl::with_namespace("npm", name, version.as_deref().unwrap_or(""));
        return Some(App {
            name: name.into(),
            purl: Some(purl.trim_end_matches('@').to_string()),
            version,
        });
    }
    let toml_of = |f: &str| read(f).and_then(|t| toml::from_str::<toml::Value>(&t).ok());
    if let Some(v) = toml_of("pyproject.toml") {
        let t = v
            .get("project")
            .or_else(|| v.get("tool").and_then(|t| t.get("poetry")));
        if let Some(name) = t.and_then(|t| t.get("name")).and_then(|n| n.as_str()) {
            let version = t
                .and_then(|t| t.get("version"))
                .and_then(|n| n.as_str())
                .map(String::from);
            let purl = super::purl::pypi(name, version.as_deref().unwrap_or(""));
            return Some(App {
                name: name.into(),
                purl: Some(purl.trim_end_matches('@').to_string()),
                version,
            });
        }
    }
    if let Some(v) = toml_of("Cargo.toml")
        && let Some(p) = v.get("package")
        && let Some(name) = p.get("name").and_then(|n| n.as_str())
    {
        let version = p.get("version").and_then(|n| n.as_str()).map(String::from);
        let purl = super::purl::with_namespace("cargo", name, version.as_deref().unwrap_or(""));
        return Some(App {
            name: name.into(),
            purl: Some(purl.trim_end_matches('@').to_string()),
            version,
        });
    }
    if let Some(t) = read("go.mod")
        && let Some(m) = t.lines().find_map(|l| l.trim().strip_prefix("module "))
    {
        let name = m.trim().trim_matches('"').to_string();
        return Some(App {
            purl: Some(
                super::purl::with_namespace("golang", &name, "")
                    .trim_end_matches('@')
                    .to_string(),
            ),
            name,
            version: None,
        });
    }
    None
}
