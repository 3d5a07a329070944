//! The local image store: named images kept as one OCI image layout under
//! the data dir (`kiln images`, `kiln inspect`, `kiln rmi`). It is the
//! embedded default destination of a build; no daemon is involved.
//!
//! Names are normalised as docker does for display: `app` is `app:latest`;
//! `name@sha256:…` names are kept as given. The index entry's
//! `org.opencontainers.image.ref.name` is the full name, so skopeo reads an
//! image as `oci:$KILN_DATA_DIR/images:app:latest`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;

use super::digest::Digest;
use super::image::{self, Image};
use super::layout::{self, Layout};
use super::store::Store;
use crate::Result;

/// An image as `kiln images` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    pub name: String,
    pub digest: Digest,
    /// Config + layer blob bytes (compressed).
    pub size: u64,
    /// When kiln named the image (built, pulled, loaded or tagged it),
    /// RFC 3339; the config's `created` for entries named before kiln
    /// recorded it. The config's own `created` is the reproducible epoch
    /// (`SOURCE_DATE_EPOCH`, default 1970) of a built image.
    pub created: String,
    /// The platforms it holds (`linux/amd64`): one for an image, each
    /// manifest's for an index (a multi-platform build), in its order.
    pub platforms: Vec<String>,
}

/// The index entry's annotation holding when kiln named the image
/// (RFC 3339, UTC): what `kiln images` shows as CREATED.
pub const NAMED_AT: &str = "dev.kiln.named-at";

/// Named images in an OCI layout.
#[derive(Debug)]
pub struct ImageStore {
    layout: Layout,
}

/// Why a name was not found; the CLI turns it into advice.
#[derive(Debug, thiserror::Error)]
#[error(
    "image {0:?} is not in the local image store: build it (kiln build -t {0}), pull it (kiln pull {0}) or load it (kiln load FILE); `kiln images` lists what is there"
)]
pub struct ImageNotFound(pub String);

/// `app` → `app:latest`; names with a tag or digest are kept.
pub fn normalize_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        bail!("empty image name: give NAME or NAME:TAG");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("invalid image name {name:?}: names cannot contain spaces");
    }
    if name.contains('@') {
        return Ok(name.to_string());
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        Ok(name.to_string())
    } else {
        Ok(format!("{name}:latest"))
    }
}

impl ImageStore {
    /// The store under `kiln::paths::data_dir()/images`.
    pub fn open_default() -> Result<ImageStore> {
        ImageStore::open(crate::paths::data_dir()?.join("images"))
    }

    pub fn open(dir: impl Into<PathBuf>) -> Result<ImageStore> {
        let dir = dir.into();
        let layout = Layout::open_or_create(&dir)
            .with_context(|| format!("opening the local image store {}", dir.display()))?;
        Ok(ImageStore { layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The store's blobs.
    pub fn blobs(&self) -> &Store {
        self.layout.blobs()
    }

    /// Copies an image's blobs from `from` (hard links when possible) and
    /// names it. Blobs are all in place before the name is written.
    pub fn import(&self, from: &Store, desc: &Descriptor, name: &str) -> Result<String> {
        for (digest, _) in image::closure(from, desc)? {
            self.blobs().import_from(from, &digest)?;
        }
        self.tag(name, desc)
    }

    /// Names an image whose blobs are already in this store.
    pub fn tag(&self, name: &str, desc: &Descriptor) -> Result<String> {
        let name = normalize_name(name)?;
        // Refuse to name an incomplete image.
        for (digest, _) in image::closure(self.blobs(), desc)? {
            if !self.blobs().contains(&digest) {
                bail!("cannot tag {name}: blob {digest} is missing from the local image store");
            }
        }
        let mut plain = desc.clone();
        plain.set_annotations(None);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.layout.set_ref(&name, &plain, &[(NAMED_AT, &now)])?;
        Ok(name)
    }

    /// The descriptor named `name`; also accepts a manifest digest or a
    /// unique prefix of one (as docker accepts image ids).
    pub fn resolve(&self, name: &str) -> Result<Descriptor> {
        let index = self.layout.index()?;
        let norm = normalize_name(name)?;
        if let Some(d) = index
            .manifests()
            .iter()
            .find(|m| layout::ref_name(m) == Some(norm.as_str()))
        {
            return Ok(strip(d));
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&Descriptor> = index
                .manifests()
                .iter()
                .filter(|m| m.digest().digest().starts_with(hex))
                .collect();
            let distinct: BTreeSet<&str> = hits.iter().map(|m| m.digest().digest()).collect();
            match distinct.len() {
                1 => return Ok(strip(hits[0])),
                n if n > 1 => bail!("{name:?} matches {n} images: give more digits"),
                _ => {}
            }
        }
        Err(ImageNotFound(name.to_string()).into())
    }

    /// Reads a named image (an index is resolved for `platform`).
    pub fn image(&self, name: &str, platform: Option<&crate::platform::Platform>) -> Result<Image> {
        let desc = self.resolve(name)?;
        image::read_image(self.blobs(), &desc, platform)
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let mut out = Vec::new();
        for m in self.layout.index()?.manifests() {
            let Some(name) = layout::ref_name(m) else {
                continue;
            };
            let digest = image::desc_digest(m)?;
            let (size, config_created, own_platform) =
                match image::read_image(self.blobs(), m, None) {
                    Ok(img) => (
                        img.size(),
                        img.config.created().clone().unwrap_or_default(),
                        config_platform(&img.config),
                    ),
                    // An index without the host's platform: show its own size.
                    Err(_) => (m.size(), String::new(), String::new()),
                };
            let platforms = if image::is_index(m.media_type()) {
                let index: oci_spec::image::ImageIndex = image::read_json(self.blobs(), &digest)?;
                index
                    .manifests()
                    .iter()
                    .filter_map(|e| e.platform().as_ref())
                    .map(|p| crate::platform::Platform::from_oci(p).to_string())
                    .collect()
            } else {
                vec![own_platform]
            };
            let created = m
                .annotations()
                .as_ref()
                .and_then(|a| a.get(NAMED_AT))
                .cloned()
                .unwrap_or(config_created);
            out.push(ImageSummary {
                name: name.to_string(),
                digest,
                size,
                created,
                platforms,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a name; blobs no other name uses are deleted. Returns the
    /// removed name.
    pub fn remove(&self, name: &str) -> Result<String> {
        let norm = normalize_name(name)?;
        if !self.layout.remove_ref(&norm)? {
            return Err(ImageNotFound(name.to_string()).into());
        }
        self.gc()?;
        Ok(norm)
    }

    /// Deletes blobs that no named image refers to. Returns how many.
    pub fn gc(&self) -> Result<usize> {
        let mut keep = BTreeSet::new();
        for m in self.layout.index()?.manifests() {
            for (d, _) in image::closure(self.blobs(), m)? {
                keep.insert(d);
            }
        }
        // Blobs written in the last minutes may belong to a pull or build that
        // has not named its image yet.
        Ok(self
            .blobs()
            .prune(&keep, std::time::Duration::from_secs(600))?
            .removed)
    }
}

fn strip(d: &Descriptor) -> Descriptor {
    let mut d = d.clone();
    d.set_annotations(None);
    d
}

/// `os/arch[/variant]` of an image config.
fn config_platform(c: &oci_spec::image::ImageConfiguration) -> String {
    let mut p = format!("{}/{}", c.os(), c.architecture());
    if let Some(v) = c.variant() {
        p.push('/');
        p.push_str(v);
    }
    p
}
