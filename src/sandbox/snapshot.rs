//! Layer snapshots: each layer blob unpacked once, as an overlay lower dir
//! (whiteouts as 0/0 devices, opaque dirs marked), under
//! `cache_dir()/snapshots/<blob hex>`, and reused by every later step and
//! build. Unpacking goes to a temp dir renamed into place, so a crash or a
//! concurrent build never leaves or sees a half snapshot.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Result;
use crate::oci::Digest;
use crate::oci::layer::Compression;
use crate::oci::store::Store;
use crate::oci::unpack::{UnpackOptions, Whiteouts, unpack_blob};

/// The snapshot directory.
#[derive(Debug, Clone)]
pub struct Snapshots {
    root: PathBuf,
}

impl Snapshots {
    pub fn new(root: impl Into<PathBuf>) -> Snapshots {
        Snapshots { root: root.into() }
    }

    /// `cache_dir()/snapshots`.
    pub fn open_default() -> Result<Snapshots> {
        Ok(Snapshots::new(crate::paths::cache_dir()?.join("snapshots")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the snapshot of a layer blob lives (whether or not it exists).
    pub fn path(&self, blob: &Digest) -> PathBuf {
        self.root.join(blob.hex())
    }

    /// The snapshot of a layer blob, unpacking it first if needed.
    /// Returns the dir and whether it was already there.
    pub fn ensure(
        &self,
        store: &Store,
        blob: &Digest,
        compression: Compression,
    ) -> Result<(PathBuf, bool)> {
        let dest = self.path(blob);
        if dest.is_dir() {
            return Ok((dest, true));
        }
        fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", blob.short()))
            .tempdir_in(&self.root)
            .with_context(|| format!("creating a temp dir in {}", self.root.display()))?;
        let into = tmp.path().join("fs");
        unpack_blob(
            store,
            blob,
            compression,
            &into,
            UnpackOptions::new(Whiteouts::Overlay),
        )
        .with_context(|| format!("unpacking layer {blob} as a snapshot"))?;
        match fs::rename(&into, &dest) {
            Ok(()) => {}
            // Another build won the race: use its snapshot.
            Err(_) if dest.is_dir() => {}
            Err(e) => {
                return Err(e).with_context(|| format!("moving a snapshot to {}", dest.display()));
            }
        }
        super::run::remove_tree(tmp.path());
        Ok((dest, false))
    }

    /// Snapshots of an image's layers, bottom-most first (ready for
    /// [`super::RunSpec::lowers`]).
    pub fn for_image(
        &self,
        store: &Store,
        image: &crate::oci::image::Image,
    ) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for l in image.manifest.layers() {
            let digest = crate::oci::image::desc_digest(l)?;
            let compression =
                Compression::from_media_type(l.media_type().as_ref()).with_context(|| {
                    format!(
                        "layer {digest} has an unknown media type {}",
                        l.media_type()
                    )
                })?;
            out.push(self.ensure(store, &digest, compression)?.0);
        }
        Ok(out)
    }
}
