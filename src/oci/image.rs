//! Image assembly: config, manifest and index blobs.
//!
//! JSON blobs are written canonically (object keys sorted, no spaces) so the
//! same content always has the same digest: oci-spec keeps labels and
//! annotations in `HashMap`s, whose order changes from run to run.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use oci_spec::image::{
    Config, Descriptor, DescriptorBuilder, History, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, PlatformBuilder, RootFsBuilder,
};
use serde::Serialize;
use serde_json::Value;

use super::digest::Digest;
use super::layer::Layer;
use super::store::{BlobInfo, Store};
use crate::Result;
use crate::platform::Platform;

/// The platform kiln runs on (`linux/amd64`, `linux/arm64`…).
pub fn host_platform() -> Platform {
    Platform::host()
}

/// Serializes with object keys sorted at every level and no whitespace.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<String, Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k, v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    let v = sort(serde_json::to_value(value)?);
    // serde_json's Map keeps insertion order only with `preserve_order`;
    // either way the order above is sorted.
    Ok(serde_json::to_vec(&v)?)
}

/// Writes a JSON document as a blob.
pub fn put_json<T: Serialize>(store: &Store, value: &T) -> Result<BlobInfo> {
    store.put(&canonical_json(value)?)
}

/// Reads and parses a JSON blob, verifying its digest.
pub fn read_json<T: serde::de::DeserializeOwned>(store: &Store, digest: &Digest) -> Result<T> {
    let bytes = store.read(digest)?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("blob {digest} is not the JSON document expected"))
}

/// A descriptor for a stored blob.
pub fn descriptor(media_type: MediaType, blob: &BlobInfo) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(blob.digest.to_oci())
        .size(blob.size)
        .build()
        .expect("descriptor has every required field")
}

/// The digest of a descriptor, as kiln's [`Digest`].
pub fn desc_digest(desc: &Descriptor) -> Result<Digest> {
    Digest::from_oci(desc.digest()).map_err(Into::into)
}

/// An image: its manifest (and descriptor) and its config.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_desc: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

impl Image {
    pub fn digest(&self) -> Result<Digest> {
        desc_digest(&self.manifest_desc)
    }

    /// Config + layer blob sizes (what a pull transfers).
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }
}

/// Builds an image config + manifest from a base and new layers.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    platform: oci_spec::image::Platform,
    config: Config,
    diff_ids: Vec<String>,
    layers: Vec<Descriptor>,
    history: Vec<History>,
    annotations: BTreeMap<String, String>,
}

impl ImageBuilder {
    /// An empty image (`FROM scratch`) for a platform.
    pub fn scratch(platform: Platform) -> Self {
        ImageBuilder {
            platform: platform.to_oci(),
            config: Config::default(),
            diff_ids: Vec::new(),
            layers: Vec::new(),
            history: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Starts from an existing image: its layers, config and history.
    pub fn from_image(base: &Image) -> Self {
        let c = &base.config;
        let platform = {
            let mut b = PlatformBuilder::default()
                .os(c.os().clone())
                .architecture(c.architecture().clone());
            if let Some(v) = c.variant() {
                b = b.variant(v.clone());
            }
            b.build().expect("platform")
        };
        ImageBuilder {
            platform,
            config: c.config().clone().unwrap_or_default(),
            diff_ids: c.rootfs().diff_ids().clone(),
            layers: base.manifest.layers().clone(),
            history: c.history().clone().unwrap_or_default(),
            annotations: BTreeMap::new(),
        }
    }

    /// The runtime config (Env, Cmd, Entrypoint, WorkingDir, User…) to edit.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Adds a layer with a history entry.
    pub fn add_layer(&mut self, layer: &Layer, created_by: &str) {
        let desc = descriptor(MediaType::from(layer.media_type()), &layer.blob);
        self.diff_ids.push(layer.diff_id.to_string());
        self.layers.push(desc);
        self.history.push(history(created_by, false));
    }

    /// Replaces the bottom `count` layers, and their history entries, by
    /// `layers` (each with its history text); the layers above keep their
    /// descriptors, diff ids and history (`kiln rebase`).
    pub fn replace_bottom_layers(
        &mut self,
        count: usize,
        layers: &[(Layer, String)],
    ) -> Result<()> {
        if count > self.layers.len() || self.diff_ids.len() != self.layers.len() {
            bail!(
                "cannot replace {count} bottom layers of an image with {} layers and {} diff ids",
                self.layers.len(),
                self.diff_ids.len()
            );
        }
        // The history entries up to the one of the `count`-th layer.
        let mut cut = 0;
        let mut seen = 0;
        for (i, h) in self.history.iter().enumerate() {
            if seen == count {
                break;
            }
            if h.empty_layer() != Some(true) {
                seen += 1;
            }
            cut = i + 1;
        }
        if seen < count {
            bail!("the image's history names {seen} layers, fewer than {count}");
        }
        let mut history: Vec<History> = layers.iter().map(|(_, t)| history(t, false)).collect();
        history.extend(self.history.drain(cut..));
        self.history = history;
        let mut descs: Vec<Descriptor> = layers
            .iter()
            .map(|(l, _)| descriptor(MediaType::from(l.media_type()), &l.blob))
            .collect();
        descs.extend(self.layers.drain(count..));
        self.layers = descs;
        let mut diff_ids: Vec<String> = layers.iter().map(|(l, _)| l.diff_id.to_string()).collect();
        diff_ids.extend(self.diff_ids.drain(count..));
        self.diff_ids = diff_ids;
        Ok(())
    }

    /// Adds a history entry for a config-only change (ENV, CMD…).
    pub fn add_empty_history(&mut self, created_by: &str) {
        self.history.push(history(created_by, true));
    }

    /// Sets an annotation on the manifest.
    pub fn annotate(&mut self, key: &str, value: &str) {
        self.annotations.insert(key.to_string(), value.to_string());
    }

    /// Number of layers so far.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Writes config and manifest into the store. `epoch` is the image's
    /// creation time (`SOURCE_DATE_EPOCH`), so equal inputs give equal digests.
    pub fn write(self, store: &Store, epoch: i64) -> Result<Image> {
        let created = rfc3339(epoch);
        let history: Vec<History> = self
            .history
            .into_iter()
            .map(|mut h| {
                h.set_created(Some(created.clone()));
                h
            })
            .collect();
        let mut cb = ImageConfigurationBuilder::default()
            .created(created)
            .architecture(self.platform.architecture().clone())
            .os(self.platform.os().clone())
            .config(self.config)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(self.diff_ids)
                    .build()?,
            )
            .history(history);
        if let Some(v) = self.platform.variant() {
            cb = cb.variant(v.clone());
        }
        let config = cb.build().context("assembling the image config")?;
        let config_blob = put_json(store, &config)?;
        let mut mb = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config_blob))
            .layers(self.layers);
        if !self.annotations.is_empty() {
            mb = mb.annotations(
                self.annotations
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        let manifest = mb.build().context("assembling the image manifest")?;
        let manifest_blob = put_json(store, &manifest)?;
        let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest_blob);
        manifest_desc.set_platform(Some(self.platform));
        Ok(Image {
            manifest_desc,
            manifest,
            config,
        })
    }
}

fn history(created_by: &str, empty_layer: bool) -> History {
    let mut b = HistoryBuilder::default()
        .created_by(created_by.to_string())
        .comment("kiln".to_string());
    if empty_layer {
        b = b.empty_layer(true);
    }
    b.build().expect("history")
}

/// RFC 3339 UTC time for a Unix timestamp.
pub fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes an index over several per-platform manifests.
pub fn write_index(store: &Store, manifests: Vec<Descriptor>) -> Result<(Descriptor, ImageIndex)> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .context("assembling the image index")?;
    let blob = put_json(store, &index)?;
    Ok((descriptor(MediaType::ImageIndex, &blob), index))
}

/// Is this media type a manifest (OCI or Docker v2)?
pub fn is_manifest(mt: &MediaType) -> bool {
    matches!(
        mt.to_string().as_str(),
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
    )
}

/// Is this media type an index (OCI or Docker manifest list)?
pub fn is_index(mt: &MediaType) -> bool {
    matches!(
        mt.to_string().as_str(),
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// Reads the image a descriptor points to. An index is resolved to the
/// manifest for `platform` (the host's when `None`).
pub fn read_image(store: &Store, desc: &Descriptor, platform: Option<&Platform>) -> Result<Image> {
    let digest = desc_digest(desc)?;
    if is_index(desc.media_type()) {
        let index: ImageIndex = read_json(store, &digest)?;
        let want = platform.cloned().unwrap_or_else(Platform::host);
        let found = index
            .manifests()
            .iter()
            .find(|m| m.platform().as_ref().is_some_and(|p| want.matches(p)));
        let Some(m) = found else {
            let offered: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|m| {
                    m.platform()
                        .as_ref()
                        .map(|p| Platform::from_oci(p).to_string())
                })
                .collect();
            bail!(
                "image index {digest} has no manifest for {}; it offers: {}. Pick one with --platform",
                want,
                offered.join(", ")
            );
        };
        return read_image(store, m, platform);
    }
    let manifest: ImageManifest = read_json(store, &digest)?;
    let config_digest = desc_digest(manifest.config())?;
    let config: ImageConfiguration = read_json(store, &config_digest)?;
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        bail!(
            "image {digest} is inconsistent: {} layers in the manifest, {} diff_ids in the config",
            manifest.layers().len(),
            config.rootfs().diff_ids().len()
        );
    }
    Ok(Image {
        manifest_desc: desc.clone(),
        manifest,
        config,
    })
}

/// Every blob an image or index refers to, itself included (deduplicated).
pub fn closure(store: &Store, desc: &Descriptor) -> Result<Vec<(Digest, MediaType)>> {
    let mut out = Vec::new();
    let digest = desc_digest(desc)?;
    out.push((digest.clone(), desc.media_type().clone()));
    if is_index(desc.media_type()) {
        let index: ImageIndex = read_json(store, &digest)?;
        for m in index.manifests() {
            for item in closure(store, m)? {
                if !out.iter().any(|(d, _)| d == &item.0) {
                    out.push(item);
                }
            }
        }
    } else if is_manifest(desc.media_type()) {
        let manifest: ImageManifest = read_json(store, &digest)?;
        out.push((
            desc_digest(manifest.config())?,
            manifest.config().media_type().clone(),
        ));
        for l in manifest.layers() {
            let d = desc_digest(l)?;
            if !out.iter().any(|(x, _)| x == &d) {
                out.push((d, l.media_type().clone()));
            }
        }
    } else {
        bail!(
            "{digest} has media type {}, which is neither an image manifest nor an index",
            desc.media_type()
        );
    }
    Ok(out)
}

/// Parses `K=V` into a config env list, replacing an existing `K`.
pub fn set_env(config: &mut Config, key: &str, value: &str) {
    let mut env = config.env().clone().unwrap_or_default();
    let prefix = format!("{key}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{key}={value}"));
    config.set_env(Some(env));
}

/// Media type from a string, for callers holding plain strings.
pub fn media_type(s: &str) -> MediaType {
    MediaType::from(s)
}
