//! Importers (`kiln load`): OCI layout directories, OCI archives and
//! `docker save` archives into the local image store. Every blob is
//! verified against its digest (and every layer against its config
//! `diff_id`) before an image is named.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifestBuilder, MediaType};

use super::digest::{Digest, HashingReader};
use super::image::{self, descriptor, put_json};
use super::images::ImageStore;
use super::layer::Compression;
use super::layout::{IMAGE_NAME, REF_NAME};
use super::store::Store;
use crate::Result;

/// A loaded image: the name it got and its manifest digest.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub digest: Digest,
}

/// Loads a layout directory or an archive (OCI or docker) into `images`.
pub fn load(path: &Path, images: &ImageStore) -> Result<Vec<Loaded>> {
    let md = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if md.is_dir() {
        return load_layout(path, images);
    }
    // Unpack next to the image store so blobs can be hard-linked in.
    let tmp = tempfile::Builder::new()
        .prefix(".load-")
        .tempdir_in(images.layout().root())
        .context("creating a temp dir for loading")?;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a tar archive", path.display()))?
    {
        let mut entry =
            entry.with_context(|| format!("{} is not a valid tar archive", path.display()))?;
        // `unpack_in` refuses paths that would leave the directory.
        entry
            .unpack_in(tmp.path())
            .with_context(|| format!("extracting {}", path.display()))?;
    }
    let root = tmp.path();
    if root.join("oci-layout").is_file() && root.join("index.json").is_file() {
        return load_layout(root, images);
    }
    if root.join("manifest.json").is_file() {
        return load_docker(root, images);
    }
    bail!(
        "{} is neither an OCI archive (no oci-layout/index.json) nor a docker archive (no manifest.json)",
        path.display()
    )
}

fn load_layout(root: &Path, images: &ImageStore) -> Result<Vec<Loaded>> {
    let layout_store = Store::read_only(root);
    let marker = root.join("oci-layout");
    if !marker.is_file() {
        bail!(
            "{} is not an OCI image layout (no oci-layout file)",
            root.display()
        );
    }
    let index_path = root.join("index.json");
    let text = fs::read_to_string(&index_path)
        .with_context(|| format!("reading {}", index_path.display()))?;
    let index: oci_spec::image::ImageIndex = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid OCI index", index_path.display()))?;
    let mut out = Vec::new();
    for m in index.manifests() {
        let digest = image::desc_digest(m)?;
        // Verify every blob while copying it in.
        for (d, _) in image::closure(&layout_store, m)? {
            if !images.blobs().contains(&d) {
                let f = layout_store.open_blob(&d)?;
                images
                    .blobs()
                    .put_verified(&d, f)
                    .with_context(|| format!("blob {d} of {}", root.display()))?;
            }
        }
        let ann = m.annotations().clone().unwrap_or_default();
        let name = ann
            .get(IMAGE_NAME)
            .or_else(|| ann.get(REF_NAME))
            .cloned()
            .unwrap_or_else(|| format!("sha256:{}", digest.hex()));
        let mut plain = m.clone();
        plain.set_annotations(None);
        let name = images.tag(&name, &plain)?;
        out.push(Loaded { name, digest });
    }
    if out.is_empty() {
        bail!(
            "{} holds no images (index.json lists no manifests)",
            root.display()
        );
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn load_docker(root: &Path, images: &ImageStore) -> Result<Vec<Loaded>> {
    let mpath = root.join("manifest.json");
    let text = fs::read_to_string(&mpath)?;
    let manifests: Vec<DockerManifest> = serde_json::from_str(&text)
        .context("manifest.json of the archive is not docker's format")?;
    let store = images.blobs();
    let mut out = Vec::new();
    for dm in manifests {
        let config_bytes = fs::read(root.join(&dm.config))
            .with_context(|| format!("archive lacks {}", dm.config))?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("{} is not an image config", dm.config))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != dm.layers.len() {
            bail!(
                "{}: {} layers listed but the config has {} diff_ids",
                dm.config,
                dm.layers.len(),
                diff_ids.len()
            );
        }
        let config_blob = store.put(&config_bytes)?;
        let mut layers = Vec::new();
        for (file, diff_id) in dm.layers.iter().zip(diff_ids) {
            let path = root.join(file);
            let diff: Digest = diff_id.parse()?;
            let compression = sniff(&path)?;
            // Check the uncompressed content against the config first.
            let mut r =
                HashingReader::new(compression.decoder(BufReader::new(File::open(&path)?))?);
            io::copy(&mut r, &mut io::sink()).with_context(|| format!("reading layer {file}"))?;
            let (actual, _) = r.finish();
            if actual != diff {
                bail!(
                    "layer {file} hashes to {actual}, but the config says {diff}: the archive is corrupt"
                );
            }
            let mut w = store.writer()?;
            io::copy(&mut File::open(&path)?, &mut w)?;
            let blob = w.commit()?;
            layers.push(descriptor(MediaType::from(compression.media_type()), &blob));
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config_blob))
            .layers(layers)
            .build()?;
        let mblob = put_json(store, &manifest)?;
        let desc: Descriptor = descriptor(MediaType::ImageManifest, &mblob);
        let names = dm.repo_tags.unwrap_or_default();
        let names = if names.is_empty() {
            vec![format!("sha256:{}", mblob.digest.hex())]
        } else {
            names
        };
        for n in names {
            let name = images.tag(&n, &desc)?;
            out.push(Loaded {
                name,
                digest: mblob.digest.clone(),
            });
        }
    }
    Ok(out)
}

/// Compression of a file, from its magic bytes.
fn sniff(path: &Path) -> Result<Compression> {
    let mut magic = [0u8; 4];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}
