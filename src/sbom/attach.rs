//! Attaching a document to an image as an OCI 1.1 artifact: an image
//! manifest with `artifactType`, the empty config, the document as its one
//! layer and `subject` = the image manifest. The image's own manifest is
//! never touched, so its digest stays what it was.
//!
//! Registries get it through [`crate::registry::push::push_referrer`]
//! (the referrers API, or the `sha256-<hex>` tag index of the OCI
//! distribution spec 1.1 where that API is missing); an OCI layout gets it
//! as an index entry next to the image ([`into_layout`]).

use std::path::Path;

use anyhow::Context as _;
use oci_spec::image::Descriptor;
use serde_json::json;

use super::{Format, Record};
use crate::Result;
use crate::oci::image::desc_digest;
use crate::oci::layout::Layout;
use crate::oci::{Digest, Store};

/// OCI's empty JSON config (`{}`), which artifacts without a config use.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A document to attach.
#[derive(Debug, Clone)]
pub struct Document {
    pub artifact_type: &'static str,
    pub bytes: Vec<u8>,
    /// The image's `created`, which the artifact carries too.
    pub created: String,
}

/// The documents `--sbom` (SPDX and CycloneDX) and `--provenance` attach.
pub fn documents(record: &Record, sbom: bool, provenance: bool) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    let doc = |artifact_type, bytes| Document {
        artifact_type,
        bytes,
        created: record.image.created.clone(),
    };
    if sbom {
        for f in [Format::Spdx, Format::Cyclonedx] {
            out.push(doc(f.artifact_type(), super::render(record, f)?));
        }
    }
    if provenance {
        out.push(doc(
            super::provenance::MEDIA_TYPE,
            super::provenance::statement(record)?,
        ));
    }
    Ok(out)
}

/// Writes the artifact manifest of `doc` about `subject` (and its blobs)
/// into `store`; returns its descriptor, with `artifactType` set as an
/// index entry wants it.
pub fn artifact(store: &Store, subject: &Descriptor, doc: &Document) -> Result<Descriptor> {
    let empty = store.put(b"{}")?;
    let blob = store.put(&doc.bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": doc.artifact_type,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": empty.digest.to_string(),
            "size": empty.size,
            "data": "e30=",
        },
        "layers": [{
            "mediaType": doc.artifact_type,
            "digest": blob.digest.to_string(),
            "size": blob.size,
        }],
        "subject": {
            "mediaType": subject.media_type().to_string(),
            "digest": desc_digest(subject)?.to_string(),
            "size": subject.size(),
        },
        "annotations": {"org.opencontainers.image.created": doc.created},
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let info = store.put(&bytes)?;
    let desc: Descriptor = serde_json::from_value(json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": info.digest.to_string(),
        "size": info.size,
        "artifactType": doc.artifact_type,
    }))
    .context("the artifact descriptor")?;
    Ok(desc)
}

/// Adds the documents to the OCI layout at `dest` (which holds the image
/// already): their blobs, and one index entry per artifact manifest,
/// annotated with the subject's digest (`dev.kiln.subject`) since an
/// index entry has no `subject` field of its own.
pub fn into_layout(
    store: &Store,
    subject: &Descriptor,
    docs: &[Document],
    dest: &Path,
) -> Result<()> {
    let layout = Layout::open(dest).with_context(|| {
        format!(
            "opening the OCI layout {} to attach the SBOM",
            dest.display()
        )
    })?;
    let subject_digest = desc_digest(subject)?;
    for doc in docs {
        let mut desc = artifact(store, subject, doc)?;
        let manifest = desc_digest(&desc)?;
        for d in blobs_of(store, &manifest)? {
            layout.blobs().import_from(store, &d)?;
        }
        let mut ann = std::collections::HashMap::new();
        ann.insert("dev.kiln.subject".to_string(), subject_digest.to_string());
        desc.set_annotations(Some(ann));
        layout.update_index(|m| {
            m.retain(|e| e.digest() != desc.digest());
            m.push(desc.clone());
            Ok(())
        })?;
    }
    Ok(())
}

/// An artifact manifest and the blobs it names.
fn blobs_of(store: &Store, manifest: &Digest) -> Result<Vec<Digest>> {
    let v: serde_json::Value = serde_json::from_slice(&store.read(manifest)?)?;
    let mut out = vec![manifest.clone()];
    for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().into_iter().flatten()) {
        if let Some(s) = d["digest"].as_str() {
            out.push(s.parse()?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_names_its_subject_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let subject_bytes = br#"{"schemaVersion":2}"#;
        let s = store.put(subject_bytes).unwrap();
        let subject: Descriptor = serde_json::from_value(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": s.digest.to_string(),
            "size": s.size,
        }))
        .unwrap();
        let doc = Document {
            artifact_type: "application/spdx+json",
            bytes: b"{\"spdxVersion\":\"SPDX-2.3\"}\n".to_vec(),
            created: "2024-01-02T03:04:05Z".into(),
        };
        let a = artifact(&store, &subject, &doc).unwrap();
        assert_eq!(a, artifact(&store, &subject, &doc).unwrap());
        let m: serde_json::Value =
            serde_json::from_slice(&store.read(&desc_digest(&a).unwrap()).unwrap()).unwrap();
        assert_eq!(m["artifactType"], "application/spdx+json");
        assert_eq!(m["subject"]["digest"], s.digest.to_string());
        assert_eq!(m["config"]["digest"], Digest::of(b"{}").to_string());
        assert_eq!(m["layers"][0]["digest"], Digest::of(&doc.bytes).to_string());
        assert_eq!(store.read(&s.digest).unwrap(), subject_bytes);
    }
}
