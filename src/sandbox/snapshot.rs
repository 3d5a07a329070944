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

    /// `cache_dir()/snapshots`, recovered if the machine went down since
    /// snapshots were last published there ([`super::unsynced`]).
    pub fn open_default() -> Result<Snapshots> {
        let s = Snapshots::new(crate::paths::cache_dir()?.join("snapshots"));
        super::unsynced::on_open(&s.root)?;
        Ok(s)
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
        // Checked on every use, not only when a snapshot is made: a cache
        // made by an older kiln (0755) becomes private on its next build.
        crate::paths::private_dir(&self.root)?;
        let dest = self.path(blob);
        if dest.is_dir() {
            return Ok((dest, true));
        }
        let (tmp, into) = self.staging(blob.short())?;
        unpack_blob(
            store,
            blob,
            compression,
            &into,
            UnpackOptions::new(Whiteouts::Overlay),
        )
        .with_context(|| format!("unpacking layer {blob} as a snapshot"))?;
        publish(&into, &dest)?;
        super::run::remove_tree(tmp.path());
        Ok((dest, false))
    }

    /// A temp dir under the root, and the path in it to fill (not yet
    /// created) before [`publish`]ing it: on the same filesystem, so the
    /// rename is atomic, and named `.tmp-*`, which readers skip.
    fn staging(&self, label: &str) -> Result<(tempfile::TempDir, PathBuf)> {
        crate::paths::private_dir(&self.root)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{label}-"))
            .tempdir_in(&self.root)
            .with_context(|| format!("creating a temp dir in {}", self.root.display()))?;
        let into = tmp.path().join("fs");
        Ok((tmp, into))
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
        let (tmp, into) = self.staging("new")?;
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<Vec<u8>>(crate::oci::layer::CHUNKS_IN_FLIGHT);
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
        // The unpack read the whole tar only if the layer was written. A
        // snapshot that cannot be moved in is only a missed shortcut: the
        // blob is unpacked when a step needs it.
        if let (Ok(l), Ok(_)) = (&layer, unpacked) {
            let _ = publish(&into, &self.path(&l.blob.digest));
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

/// Moves a filled snapshot dir into place. Returns whether it was moved;
/// `false` when `dest` is already there (another step or build made the
/// same layer first; its files are the same). Nothing is fsynced: the
/// snapshot dir's record of this boot covers it ([`super::unsynced`]).
pub(crate) fn publish(into: &Path, dest: &Path) -> Result<bool> {
    if dest.is_dir() {
        return Ok(false);
    }
    if let Some(root) = dest.parent() {
        super::unsynced::before_publish(root)?;
    }
    match fs::rename(into, dest) {
        Ok(()) => Ok(true),
        Err(_) if dest.is_dir() => Ok(false),
        Err(e) => Err(e).with_context(|| format!("moving a snapshot to {}", dest.display())),
    }
}
