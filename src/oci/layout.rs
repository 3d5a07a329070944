//! OCI image layouts: a directory with `oci-layout`, `index.json` and
//! `blobs/sha256/…`, readable by skopeo (`oci:DIR:REF`), umoci and podman.
//!
//! Entries of `index.json` are named with the standard
//! `org.opencontainers.image.ref.name` annotation. Updates of `index.json`
//! hold an exclusive lock and replace the file atomically.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use super::store::Store;
use crate::Result;

/// The annotation naming an index entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and buildx's) annotation with the full image name.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// An OCI image layout directory.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    blobs: Store,
}

impl Layout {
    /// Opens a layout, creating it (and its `oci-layout` file) if needed.
    pub fn open_or_create(root: impl Into<PathBuf>) -> Result<Layout> {
        let root = root.into();
        refuse_symlinks(&root)?;
        let marker = root.join("oci-layout");
        if !marker.exists() {
            if root.is_dir()
                && fs::read_dir(&root)?.next().is_some()
                && !root.join("blobs").exists()
            {
                bail!(
                    "{} exists and is not an OCI image layout: give an empty or new directory",
                    root.display()
                );
            }
            fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let blobs = Store::open(&root)?;
        let layout = Layout { root, blobs };
        if !layout.root.join("index.json").exists() {
            layout.write_index(&empty_index())?;
        }
        Ok(layout)
    }

    /// Opens an existing layout, refusing a directory that is not one.
    pub fn open(root: impl Into<PathBuf>) -> Result<Layout> {
        let root = root.into();
        let marker = root.join("oci-layout");
        let text = fs::read_to_string(&marker).with_context(|| {
            format!(
                "{} is not an OCI image layout (no readable oci-layout file)",
                root.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", marker.display()))?;
        if v.get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            bail!("{} lacks imageLayoutVersion", marker.display());
        }
        let blobs = Store::open(&root)?;
        Ok(Layout { root, blobs })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layout's blobs.
    pub fn blobs(&self) -> &Store {
        &self.blobs
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid OCI index", path.display()))
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index)?;
        write_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Runs a read-modify-write of `index.json` under an exclusive lock.
    pub fn update_index(&self, f: impl FnOnce(&mut Vec<Descriptor>) -> Result<()>) -> Result<()> {
        let lock_path = self.root.join("index.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let mut index = self.index()?;
        let mut manifests = index.manifests().clone();
        f(&mut manifests)?;
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Points `name` at `desc` (replacing an entry of the same name).
    pub fn set_ref(&self, name: &str, desc: &Descriptor, extra: &[(&str, &str)]) -> Result<()> {
        let mut desc = desc.clone();
        let mut ann: HashMap<String, String> = desc.annotations().clone().unwrap_or_default();
        ann.insert(REF_NAME.to_string(), name.to_string());
        for (k, v) in extra {
            ann.insert(k.to_string(), v.to_string());
        }
        desc.set_annotations(Some(ann));
        self.update_index(|manifests| {
            manifests.retain(|m| ref_name(m) != Some(name));
            manifests.push(desc);
            manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
            Ok(())
        })
    }

    /// The entry named `name`, if any.
    pub fn find(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .find(|m| ref_name(m) == Some(name))
            .cloned())
    }

    /// Removes the entry named `name`; true if there was one.
    pub fn remove_ref(&self, name: &str) -> Result<bool> {
        let mut found = false;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|m| ref_name(m) != Some(name));
            found = manifests.len() != before;
            Ok(())
        })?;
        Ok(found)
    }
}

/// The `org.opencontainers.image.ref.name` of an index entry.
pub fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()?
        .get(REF_NAME)
        .map(String::as_str)
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("empty index")
}

/// Writes a file via a temp file + fsync + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Writes a file via a temp file + rename, without waiting for the disk:
/// for cache records whose loss or truncation in a crash is only a miss
/// (their readers parse them and check what they name), such as step
/// records and the cache GC's bookkeeping. Readers never see a partial
/// file while the machine runs. A warm rebuild writes a dozen of these;
/// an fsync each was ~25 ms of it.
pub fn write_cache_record(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().context("path without a parent")?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A layout kiln adds to may have been made by someone else (`-o
/// type=oci,dest=DIR` into an existing directory): a symlink where kiln
/// writes (`blobs` → `/etc`…) would take its writes out of the directory.
/// kiln writes only into real directories and files it can replace.
fn refuse_symlinks(root: &Path) -> Result<()> {
    for rel in [
        "oci-layout",
        "index.json",
        "index.lock",
        "lock",
        "blobs",
        "blobs/sha256",
        "ingest",
    ] {
        let p = root.join(rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "{} is a symbolic link: kiln writes an OCI layout only into real directories \
                 (remove the link or give another dest)",
                p.display()
            );
        }
    }
    Ok(())
}
