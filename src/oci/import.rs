//! Importers (`kiln load`): OCI layout directories, OCI archives and
//! `docker save` archives into the local image store.
//!
//! What is loaded is untrusted data ([`super::members`] reads it without
//! ever opening a host path). Loading happens in two phases: first every
//! descriptor is checked (each blob's sha256 digest and size against its
//! descriptor, each layer's uncompressed digest against the config's
//! `rootfs.diff_ids`, each name as an image reference), and only then are
//! blobs copied into the store (re-verified while copied) and names
//! written. A refused image therefore leaves the store as it was.

use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};

use super::digest::{Digest, HashingReader};
use super::image::{self, descriptor, put_json};
use super::images::ImageStore;
use super::layer::Compression;
use super::layout::{IMAGE_NAME, REF_NAME};
use super::members::{Members, clean_name};
use super::reference::Reference;
use crate::Result;

/// A loaded image: the name it got and its manifest digest.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub digest: Digest,
}

/// Loads a layout directory or an archive (OCI or docker) into `images`.
pub fn load(path: &Path, images: &ImageStore) -> Result<Vec<Loaded>> {
    let md = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if md.is_dir() {
        return load_layout(&Members::Dir(path.to_path_buf()), images);
    }
    // Extract next to the image store: same filesystem as its blobs.
    let members = Members::extract(path, images.layout().root())?;
    if members.has("oci-layout") && members.has("index.json") {
        return load_layout(&members, images);
    }
    if members.has("manifest.json") {
        return load_docker(&members, images);
    }
    bail!(
        "{} is neither an OCI archive (no oci-layout/index.json) nor a docker archive (no manifest.json)",
        path.display()
    )
}

/// An image name from the loaded data, checked as an image reference.
fn checked_name(name: &str, field: impl FnOnce() -> String) -> Result<String> {
    Reference::parse(name).with_context(|| format!("{}: {name:?}", field()))?;
    Ok(name.to_string())
}

/// The file of a blob in a layout.
fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Hashes a stream, reading at most `limit + 1` bytes (so a lying size
/// cannot make kiln read forever).
fn hash_stream(r: impl Read, limit: u64) -> io::Result<(Digest, u64)> {
    let mut h = HashingReader::new(r.take(limit.saturating_add(1)));
    io::copy(&mut h, &mut io::sink())?;
    Ok(h.finish())
}

/// Checks a layout blob against its descriptor: file present, size and
/// digest as claimed. Returns the digest.
fn check_blob(src: &Members, desc: &Descriptor, what: &str) -> Result<Digest> {
    let want = image::desc_digest(desc).with_context(|| what.to_string())?;
    let f = src
        .open(&blob_name(&want))
        .with_context(|| format!("{what}: blob {want} is missing"))?;
    let (got, size) = hash_stream(BufReader::new(f), desc.size())
        .with_context(|| format!("{what}: reading blob {want}"))?;
    if size > desc.size() {
        bail!(
            "{what}: blob {want} is larger than the {} bytes its descriptor says: the layout is corrupt",
            desc.size()
        );
    }
    if size < desc.size() {
        bail!(
            "{what}: blob {want} has {size} bytes but its descriptor says {}: the layout is corrupt",
            desc.size()
        );
    }
    if got != want {
        bail!("{what}: blob {want} hashes to {got}: the layout is corrupt");
    }
    Ok(want)
}

/// JSON documents (index, manifest, config) are read into memory: a
/// hostile size must not exhaust it. Real configs are a few KiB.
const MAX_JSON: u64 = 16 << 20;

/// Reads a small JSON blob after checking it against its descriptor.
fn read_checked(src: &Members, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if desc.size() > MAX_JSON {
        bail!(
            "{what}: a {}-byte JSON document is beyond kiln's limit of {MAX_JSON} bytes",
            desc.size()
        );
    }
    let d = check_blob(src, desc, what)?;
    src.read(&blob_name(&d))
}

/// Reads a JSON member (manifest.json, index.json, a docker config),
/// refusing one beyond [`MAX_JSON`].
fn read_json_member(src: &Members, name: &str) -> Result<Vec<u8>> {
    let f = src.open(name)?;
    let size = f.metadata()?.len();
    if size > MAX_JSON {
        bail!("{name}: {size} bytes, beyond kiln's limit of {MAX_JSON} bytes for a JSON document");
    }
    let mut buf = Vec::new();
    f.take(MAX_JSON).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Checks a layer's uncompressed content against the config's diff_id.
fn check_diff_id(
    src: &Members,
    file: &str,
    compression: Compression,
    diff_id: &str,
    what: &str,
) -> Result<()> {
    let want: Digest = diff_id
        .parse()
        .with_context(|| format!("{what}: the config's diff_id {diff_id:?}"))?;
    let mut r = HashingReader::new(compression.decoder(BufReader::new(src.open(file)?))?);
    io::copy(&mut r, &mut io::sink()).with_context(|| format!("{what}: decompressing {file}"))?;
    let (got, _) = r.finish();
    if got != want {
        bail!(
            "{what}: the layer's uncompressed content hashes to {got}, but the config's diff_id says {want}: the image is corrupt"
        );
    }
    Ok(())
}

/// Checks the tree under `desc` (an index or a manifest) and collects the
/// digests of its blobs.
fn check_tree(src: &Members, desc: &Descriptor, what: &str, blobs: &mut Vec<Digest>) -> Result<()> {
    let bytes = read_checked(src, desc, what)?;
    let digest = image::desc_digest(desc)?;
    if image::is_index(desc.media_type()) {
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: blob {digest} is not an image index"))?;
        for (i, m) in index.manifests().iter().enumerate() {
            check_tree(
                src,
                m,
                &format!("{what} → manifests[{i}] ({})", m.digest()),
                blobs,
            )?;
        }
    } else if image::is_manifest(desc.media_type()) {
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: blob {digest} is not an image manifest"))?;
        let cwhat = format!("{what} → config ({})", manifest.config().digest());
        let config: ImageConfiguration =
            serde_json::from_slice(&read_checked(src, manifest.config(), &cwhat)?)
                .with_context(|| format!("{cwhat}: not an image config"))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            bail!(
                "{what}: {} layers in the manifest but {} diff_ids in the config: the image is corrupt",
                manifest.layers().len(),
                diff_ids.len()
            );
        }
        blobs.push(image::desc_digest(manifest.config())?);
        for (i, (l, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
            let lwhat = format!("{what} → layers[{i}] ({})", l.digest());
            let d = check_blob(src, l, &lwhat)?;
            // A blob that is not a filesystem tar (e.g. the in-toto
            // attestations buildx adds) has no uncompressed form to check.
            if let Some(compression) = Compression::from_media_type(l.media_type().as_ref()) {
                check_diff_id(src, &blob_name(&d), compression, diff_id, &lwhat)?;
            }
            blobs.push(d);
        }
    } else {
        bail!(
            "{what}: media type {} is neither an image manifest nor an index",
            desc.media_type()
        );
    }
    blobs.push(digest);
    Ok(())
}

fn load_layout(src: &Members, images: &ImageStore) -> Result<Vec<Loaded>> {
    let shown = src.describe();
    let marker = src.read("oci-layout").with_context(|| {
        format!("{shown} is not an OCI image layout (no readable oci-layout file)")
    })?;
    let v: serde_json::Value = serde_json::from_slice(&marker)
        .with_context(|| format!("{shown}: oci-layout is not valid JSON"))?;
    if v.get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        bail!("{shown}: oci-layout lacks imageLayoutVersion");
    }
    let text = read_json_member(src, "index.json")?;
    let index: ImageIndex = serde_json::from_slice(&text)
        .with_context(|| format!("{shown}: index.json is not a valid OCI index"))?;
    // Phase 1: check every name and blob; nothing is written yet.
    let mut plan = Vec::new();
    for (i, m) in index.manifests().iter().enumerate() {
        // An attached artifact (an SBOM, a provenance: `--sbom`) is about
        // an image, not one: the image it names is loaded as any other.
        if m.artifact_type().is_some() {
            continue;
        }
        let what = format!("index.json: manifests[{i}] ({})", m.digest());
        let ann = m.annotations().clone().unwrap_or_default();
        let name = match (ann.get(IMAGE_NAME), ann.get(REF_NAME)) {
            (Some(n), _) => Some(checked_name(n, || {
                format!("{what}: annotation {IMAGE_NAME} is not an image name")
            })?),
            (None, Some(n)) => Some(checked_name(n, || {
                format!("{what}: annotation {REF_NAME} is not an image name")
            })?),
            (None, None) => None,
        };
        let mut blobs = Vec::new();
        check_tree(src, m, &what, &mut blobs)?;
        plan.push((m, name, blobs));
    }
    if plan.is_empty() {
        bail!("{shown} holds no images (index.json lists no manifests)");
    }
    // Phase 2: copy the blobs (verified again on the way in), then name.
    let store = images.blobs();
    for (_, _, blobs) in &plan {
        for d in blobs {
            if !store.contains(d) {
                store
                    .put_verified(d, BufReader::new(src.open(&blob_name(d))?))
                    .with_context(|| format!("blob {d} of {shown}"))?;
            }
        }
    }
    let mut out = Vec::new();
    for (m, name, _) in plan {
        let digest = image::desc_digest(m)?;
        let name = name.unwrap_or_else(|| format!("sha256:{}", digest.hex()));
        let name = images.tag(&name, m)?;
        out.push(Loaded { name, digest });
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

/// A docker archive image, checked and ready to store.
struct DockerImage {
    config: Vec<u8>,
    /// Member name and compression of each layer.
    layers: Vec<(String, Compression)>,
    names: Vec<String>,
}

/// A member named by a field of manifest.json, as a clean member name.
fn field_member(i: usize, field: &str, value: &str) -> Result<String> {
    clean_name(value).with_context(|| {
        format!(
            "manifest.json: [{i}].{field} {value:?}: an absolute path or one leaving the archive with '..': refused"
        )
    })
}

fn load_docker(src: &Members, images: &ImageStore) -> Result<Vec<Loaded>> {
    let text = read_json_member(src, "manifest.json")?;
    let manifests: Vec<DockerManifest> = serde_json::from_slice(&text)
        .context("manifest.json of the archive is not docker's format")?;
    // Phase 1: check names, members and diff_ids.
    let mut checked = Vec::new();
    for (i, dm) in manifests.iter().enumerate() {
        let names = dm
            .repo_tags
            .iter()
            .flatten()
            .map(|n| {
                checked_name(n, || {
                    format!("manifest.json: [{i}].RepoTags: not an image reference")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let config_name = field_member(i, "Config", &dm.config)?;
        let config_bytes = read_json_member(src, &config_name)
            .with_context(|| format!("manifest.json: [{i}].Config {:?}", dm.config))?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).with_context(|| {
                format!(
                    "manifest.json: [{i}].Config {:?} is not an image config",
                    dm.config
                )
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != dm.layers.len() {
            bail!(
                "manifest.json: [{i}]: {} layers listed but the config {:?} has {} diff_ids",
                dm.layers.len(),
                dm.config,
                diff_ids.len()
            );
        }
        let mut layers = Vec::new();
        for (j, (file, diff_id)) in dm.layers.iter().zip(diff_ids).enumerate() {
            let what = format!("manifest.json: [{i}].Layers[{j}] {file:?}");
            let member = field_member(i, &format!("Layers[{j}]"), file)?;
            let compression = sniff(src, &member).with_context(|| what.clone())?;
            check_diff_id(src, &member, compression, diff_id, &what)?;
            layers.push((member, compression));
        }
        checked.push(DockerImage {
            config: config_bytes,
            layers,
            names,
        });
    }
    // Phase 2: store and name.
    let store = images.blobs();
    let mut out = Vec::new();
    for img in checked {
        let config_blob = store.put(&img.config)?;
        let mut layers = Vec::new();
        for (member, compression) in &img.layers {
            let mut w = store.writer()?;
            io::copy(&mut src.open(member)?, &mut w)
                .with_context(|| format!("storing layer {member}"))?;
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
        let names = if img.names.is_empty() {
            vec![format!("sha256:{}", mblob.digest.hex())]
        } else {
            img.names
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

/// Compression of a member, from its magic bytes.
fn sniff(src: &Members, member: &str) -> Result<Compression> {
    let mut magic = [0u8; 4];
    let mut f = src.open(member)?;
    let mut n = 0;
    while n < magic.len() {
        match f.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}
