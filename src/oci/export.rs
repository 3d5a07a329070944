//! Exporters: an image from a blob store to a destination, with buildx's
//! `--output` syntax.
//!
//! | `--output` | writes |
//! |---|---|
//! | `type=oci,dest=DIR` | an OCI image layout directory (added to if it exists) |
//! | `type=oci-archive,dest=FILE.tar` (or `type=oci,dest=FILE.tar`) | an OCI layout as a tar |
//! | `type=docker,dest=FILE.tar` | a `docker save` archive, loadable by `docker load` and `podman load` |
//! | `type=registry` / `type=image,push=true` | a registry push (see `registry`) |
//!
//! The OCI layout entry is named with the tag (`org.opencontainers.image.ref.name`,
//! so `skopeo inspect oci:DIR:TAG` works) and the full name
//! (`io.containerd.image.name`), as buildx does. Archives are written to a
//! temp file and renamed, so a failed export leaves no partial file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;

use super::digest::{Digest, HashingWriter};
use super::image::{self, canonical_json};
use super::layer::Compression;
use super::layout::{IMAGE_NAME, Layout};
use super::store::Store;
use crate::Result;

/// Where an image goes (the parsed `--output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    OciDir(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    /// Push to the registry named by the image's tag.
    Registry,
}

impl Output {
    /// Parses buildx's `type=…,dest=…` (or the `-o DIR` shorthand: a
    /// path means `type=local`, which kiln treats as an OCI layout dir).
    pub fn parse(spec: &str) -> Result<Output> {
        if !spec.contains('=') {
            return Ok(Output::OciDir(PathBuf::from(spec)));
        }
        let mut fields = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').with_context(|| {
                format!("--output {spec:?}: {part:?} is not KEY=VALUE (e.g. type=oci,dest=out)")
            })?;
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
        let ty = fields.remove("type").with_context(|| {
            format!("--output {spec:?} has no type=: use type=oci|oci-archive|docker|registry")
        })?;
        let dest = fields.remove("dest").map(PathBuf::from);
        let push = fields.remove("push").is_some_and(|v| v == "true");
        fields.remove("name");
        if let Some(k) = fields.keys().next() {
            bail!("--output {spec:?}: unknown key {k:?} (kiln knows type, dest, name, push)");
        }
        let need = |dest: Option<PathBuf>| {
            dest.with_context(|| format!("--output {spec:?} needs dest=PATH"))
        };
        Ok(match ty.as_str() {
            "oci" => {
                let d = need(dest)?;
                if d.extension().is_some_and(|e| e == "tar") {
                    Output::OciArchive(d)
                } else {
                    Output::OciDir(d)
                }
            }
            "oci-archive" | "tar" => Output::OciArchive(need(dest)?),
            "docker" | "docker-archive" => Output::DockerArchive(need(dest)?),
            "registry" => Output::Registry,
            "image" if push => Output::Registry,
            "local" => Output::OciDir(need(dest)?),
            other => bail!(
                "--output type={other} is not supported: use oci, oci-archive, docker or registry"
            ),
        })
    }
}

/// Splits `repo/name:tag` into (`repo/name:tag`, `tag`) for index annotations.
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !last.contains('@') => tag,
        _ => "latest",
    }
}

/// Writes the image to an OCI layout directory, named `name`.
pub fn to_oci_dir(src: &Store, desc: &Descriptor, name: &str, dest: &Path) -> Result<()> {
    {
        let layout = Layout::open_or_create(dest)?;
        for (digest, _) in image::closure(src, desc)? {
            layout.blobs().import_from(src, &digest)?;
        }
        let mut plain = desc.clone();
        plain.set_annotations(None);
        layout.set_ref(tag_of(name), &plain, &[(IMAGE_NAME, name)])?;
    }
    // The layout's bookkeeping files are kiln's, not part of the format.
    let _ = fs::remove_dir(dest.join("ingest"));
    let _ = fs::remove_file(dest.join("lock"));
    let _ = fs::remove_file(dest.join("index.lock"));
    Ok(())
}

/// Writes the image as an OCI layout inside a tar file.
pub fn to_oci_archive(src: &Store, desc: &Descriptor, name: &str, dest: &Path) -> Result<()> {
    let mut plain = desc.clone();
    let mut ann = std::collections::HashMap::new();
    ann.insert(
        super::layout::REF_NAME.to_string(),
        tag_of(name).to_string(),
    );
    ann.insert(IMAGE_NAME.to_string(), name.to_string());
    plain.set_annotations(Some(ann));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [plain],
    });
    write_archive(dest, |tar| {
        append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(tar, "index.json", &canonical_json(&index)?)?;
        for (digest, _) in image::closure(src, desc)? {
            let mut f = src.open_blob(&digest)?;
            let len = f.metadata()?.len();
            append_reader(tar, &format!("blobs/sha256/{}", digest.hex()), len, &mut f)?;
        }
        Ok(())
    })
}

/// Writes a `docker save` archive (manifest.json, config, uncompressed
/// layer tars), which `docker load` and `podman load` read.
pub fn to_docker_archive(
    src: &Store,
    desc: &Descriptor,
    names: &[String],
    dest: &Path,
) -> Result<()> {
    let img = image::read_image(src, desc, None)?;
    let config_digest = image::desc_digest(img.manifest.config())?;
    let config_file = format!("{}.json", config_digest.hex());
    let mut layer_files = Vec::new();
    write_archive(dest, |tar| {
        append_bytes(tar, &config_file, &src.read(&config_digest)?)?;
        for (l, diff_id) in img
            .manifest
            .layers()
            .iter()
            .zip(img.config.rootfs().diff_ids())
        {
            let digest = image::desc_digest(l)?;
            let compression =
                Compression::from_media_type(l.media_type().as_ref()).with_context(|| {
                    format!(
                        "layer {digest} has an unknown media type {}",
                        l.media_type()
                    )
                })?;
            let diff: Digest = diff_id.parse()?;
            let file = format!("{}/layer.tar", diff.hex());
            // The tar header needs the size first: decompress to a temp file,
            // checking the result against the config's diff_id.
            let mut tmp = tempfile::tempfile()?;
            let mut hashed = HashingWriter::new(BufWriter::new(&mut tmp));
            io::copy(
                &mut compression.decoder(io::BufReader::new(src.open_blob(&digest)?))?,
                &mut hashed,
            )
            .with_context(|| format!("decompressing layer {digest}"))?;
            let (actual, len, buf) = hashed.finish();
            buf.into_inner().map_err(|e| e.into_error())?;
            if actual != diff {
                bail!("layer {digest} decompresses to {actual}, but the config says {diff}");
            }
            tmp.rewind()?;
            append_reader(tar, &file, len, &mut tmp)?;
            layer_files.push(file);
        }
        let repo_tags: Vec<&String> = names.iter().filter(|n| !n.contains('@')).collect();
        let manifest = serde_json::json!([{
            "Config": config_file,
            "RepoTags": repo_tags,
            "Layers": layer_files,
        }]);
        append_bytes(tar, "manifest.json", &serde_json::to_vec(&manifest)?)?;
        Ok(())
    })
}

fn write_archive(
    dest: &Path,
    body: impl FnOnce(&mut tar::Builder<BufWriter<File>>) -> Result<()>,
) -> Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let mut tar = tar::Builder::new(BufWriter::new(tmp.reopen()?));
    body(&mut tar)?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    out.get_ref().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

fn header(path: &str, len: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    tar.append(&header(path, bytes.len() as u64)?, bytes)
        .with_context(|| format!("writing {path}"))?;
    Ok(())
}

fn append_reader<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    len: u64,
    r: &mut impl io::Read,
) -> Result<()> {
    tar.append(&header(path, len)?, io::Read::take(r, len))
        .with_context(|| format!("writing {path}"))?;
    Ok(())
}

/// Exports to a local destination (not a registry).
pub fn export(src: &Store, desc: &Descriptor, name: &str, output: &Output) -> Result<()> {
    match output {
        Output::OciDir(d) => to_oci_dir(src, desc, name, d),
        Output::OciArchive(f) => to_oci_archive(src, desc, name, f),
        Output::DockerArchive(f) => to_docker_archive(src, desc, &[name.to_string()], f),
        Output::Registry => bail!("a registry output is a push: use `kiln push` or --push"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        assert_eq!(
            Output::parse("type=oci,dest=out").unwrap(),
            Output::OciDir("out".into())
        );
        assert_eq!(
            Output::parse("type=oci,dest=o.tar").unwrap(),
            Output::OciArchive("o.tar".into())
        );
        assert_eq!(
            Output::parse("type=docker,dest=i.tar").unwrap(),
            Output::DockerArchive("i.tar".into())
        );
        assert_eq!(Output::parse("type=registry").unwrap(), Output::Registry);
        assert_eq!(Output::parse("dir").unwrap(), Output::OciDir("dir".into()));
        let err = Output::parse("type=oci").unwrap_err().to_string();
        assert!(err.contains("dest="), "{err}");
        let err = Output::parse("type=zip,dest=x").unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
        assert!(Output::parse("type=oci,dest=x,color=red").is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of("app:1"), "1");
        assert_eq!(tag_of("localhost:5000/app"), "latest");
        assert_eq!(tag_of("localhost:5000/app:v2"), "v2");
    }
}
