//! The step cache: cache key → what the step produced (a layer, or nothing
//! for config-only steps), one small JSON file per key under
//! `cache_dir()/steps/`, written atomically. The layer blobs live in the
//! blob store; a record whose blob has been pruned is treated as a miss, so
//! pruning the store can never make a build use a missing layer. A hit
//! sets the record's mtime: its last use, for the cache GC ([`crate::gc`]).

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::oci::layer::{Compression, Layer};
use crate::oci::store::{BlobInfo, Store};
use crate::oci::{Digest, layout::write_cache_record};

/// A layer as the cache records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub blob: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub compression: Compression,
}

impl From<&Layer> for LayerRecord {
    fn from(l: &Layer) -> Self {
        LayerRecord {
            blob: l.blob.digest.clone(),
            size: l.blob.size,
            diff_id: l.diff_id.clone(),
            compression: l.compression,
        }
    }
}

impl LayerRecord {
    pub fn layer(&self) -> Layer {
        Layer {
            diff_id: self.diff_id.clone(),
            blob: BlobInfo {
                digest: self.blob.clone(),
                size: self.size,
            },
            compression: self.compression,
        }
    }
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `None` for a step that changed only the config (or nothing).
    pub layer: Option<LayerRecord>,
    /// For a `COPY --from=<stage>` recorded under its source-stage key: the
    /// content key it resolved to ([`crate::graph::key::content_copy_key`]),
    /// which the steps after it chain from. A rebuild whose source stage
    /// did not change finds it here without hashing the copied files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_key: Option<Digest>,
}

/// Step records by cache key.
#[derive(Debug, Clone)]
pub struct StepCache {
    dir: PathBuf,
}

impl StepCache {
    pub fn new(dir: impl Into<PathBuf>) -> StepCache {
        StepCache { dir: dir.into() }
    }

    /// `cache_dir()/steps`.
    pub fn open_default() -> Result<StepCache> {
        Ok(StepCache::new(crate::paths::cache_dir()?.join("steps")))
    }

    /// The record for `key`, if it exists, its layer is in `store` and is
    /// compressed as `compression` asks (a layer cached for a stage that is
    /// not exported is zstd; reusing it in an exported stage would mix
    /// compressions the user did not ask for, so that is a miss).
    pub fn get(&self, key: &Digest, store: &Store, compression: Compression) -> Option<StepRecord> {
        let path = self.dir.join(key.hex());
        let text = fs::read(&path).ok()?;
        let rec: StepRecord = serde_json::from_slice(&text).ok()?;
        match &rec.layer {
            Some(l) if !store.contains(&l.blob) || l.compression != compression => None,
            _ => {
                // A hit is a use: the cache GC removes least recently used first.
                crate::paths::touch(&path);
                Some(rec)
            }
        }
    }

    pub fn put(&self, key: &Digest, rec: &StepRecord) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating the step cache {}", self.dir.display()))?;
        write_cache_record(&self.dir.join(key.hex()), &serde_json::to_vec(rec)?)
    }

    /// Every layer blob the cache refers to (roots for `kiln cache prune`).
    pub fn referenced_blobs(&self) -> Vec<Digest> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<StepRecord>(&b).ok())
            .filter_map(|r| r.layer.map(|l| l.blob))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records are written without fsync (`write_cache_record`): what a
    /// crash can leave, an empty or cut record or one naming a blob that
    /// never reached the store, must read as a miss.
    #[test]
    fn a_record_cut_short_or_naming_a_missing_blob_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let cache = StepCache::new(dir.path().join("steps"));
        let key = Digest::of(b"step");
        let missing = Digest::of(b"no such layer");
        let rec = StepRecord {
            layer: Some(LayerRecord {
                blob: missing.clone(),
                size: 1,
                diff_id: missing,
                compression: Compression::Gzip,
            }),
            content_key: None,
        };
        cache.put(&key, &rec).unwrap();
        assert!(cache.get(&key, &store, Compression::Gzip).is_none());
        let path = dir.path().join("steps").join(key.hex());
        let whole = fs::read(&path).unwrap();
        for cut in [0, 1, whole.len() / 2, whole.len() - 1] {
            fs::write(&path, &whole[..cut]).unwrap();
            assert!(cache.get(&key, &store, Compression::Gzip).is_none(), "cut at {cut}");
        }
        // A whole record of a step without a layer is a hit.
        let empty = StepRecord {
            layer: None,
            content_key: None,
        };
        cache.put(&key, &empty).unwrap();
        assert!(cache.get(&key, &store, Compression::Gzip).is_some());
    }
}
