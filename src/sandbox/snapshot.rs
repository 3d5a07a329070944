//! Layer snapshots: each layer blob unpacked once, as an overlay lower dir
//! (whiteouts as 0/0 devices, opaque dirs marked), under
//! `cache_dir()/snapshots/<blob hex>`, and reused by every later step and
//! build. Unpacking goes to a temp dir renamed into place, so a crash or a
//! concurrent build never leaves or sees a half snapshot.
//!
//! Layers kiln writes itself from entries (the Debian package bases) can
//! get their snapshot as they are written ([`Snapshots::write_layer`]):
//! the unpacker reads the very tar bytes the compressor gets, so the
//! snapshot is the unpack of the blob, made while the blob compresses
//! instead of decompressing it afterwards. A RUN step's snapshot is its
//! upper dir (see `adopt`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Result;
use crate::oci::Digest;
use crate::oci::layer::{
    Compression, Entry, Layer, LayerOptions, canonicalize, tar_stream, write_canonical_layer_tee,
};
use crate::oci::store::Store;
use crate::oci::unpack::{UnpackOptions, Whiteouts, unpack, unpack_blob};

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

    /// Writes entries as a layer into `store` and, from the same tar
    /// stream, the layer's snapshot. A failed unpack costs only the
    /// snapshot (it is unpacked from the blob when needed).
    pub fn write_layer(
        &self,
        store: &Store,
        entries: Vec<Entry>,
        opts: LayerOptions,
    ) -> Result<Layer> {
        let entries = canonicalize(entries);
        fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-new-")
            .tempdir_in(&self.root)
            .with_context(|| format!("creating a temp dir in {}", self.root.display()))?;
        let into = tmp.path().join("fs");
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let (layer, unpacked) = std::thread::scope(|s| {
            let unpacker = s.spawn(|| {
                unpack(
                    tar_stream(rx),
                    &into,
                    UnpackOptions::new(Whiteouts::Overlay),
                )
            });
            let layer = write_canonical_layer_tee(store, &entries, opts, Some(tx));
            (layer, unpacker.join().expect("snapshot unpacker panicked"))
        });
        // The unpack read the whole tar only if the layer was written.
        if let (Ok(l), Ok(_)) = (&layer, unpacked) {
            let dest = self.path(&l.blob.digest);
            // Losing a race (or an existing snapshot) is fine: same files.
            if !dest.is_dir() {
                let _ = fs::rename(&into, &dest);
            }
        }
        super::run::remove_tree(tmp.path());
        layer
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
