//! Manifests on the wire: media types, fetching by tag or digest with
//! verification, telling an index from an image manifest, and platforms.

use std::io::Read;

use anyhow::{Context, bail};
use oci_spec::image::{ImageIndex, ImageManifest};

use super::auth::repo_scope;
use super::client::{Body, Client, Session, status_of};
use crate::Result;
use crate::oci::reference::Reference;
use crate::oci::{Digest, Store};
use crate::platform::Platform;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header for manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests bigger than this are refused (the spec's recommended limit).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// An index (multi-platform) or an image manifest.
// Built once per manifest fetched; boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Parsed {
    Index(ImageIndex),
    Manifest(ImageManifest),
}

/// Manifest bytes with their digest and media type.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// Parses manifest bytes, telling index from manifest by media type (the
/// header's, else the document's `mediaType`, else its shape). `what` names
/// the source for errors.
pub fn parse(bytes: &[u8], header_type: Option<&str>, what: &str) -> Result<(Parsed, String)> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let looks_html = bytes.iter().take(256).any(|b| *b == b'<');
        if looks_html {
            anyhow::anyhow!(
                "{what} is an HTML page, not an image manifest: is this a registry API endpoint?"
            )
        } else {
            anyhow::anyhow!("{what} is not valid JSON ({e})")
        }
    })?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        bail!(
            "{what} is a Docker schema 1 manifest, which kiln does not support: re-push the image with a current tool"
        );
    }
    let doc_type = value.get("mediaType").and_then(|v| v.as_str());
    let header_type = header_type.filter(|t| t.contains("manifest") || t.contains("index"));
    let media_type = match (doc_type, header_type) {
        (Some(d), _) => d.to_string(),
        (None, Some(h)) => h.to_string(),
        (None, None) if value.get("manifests").is_some() => OCI_INDEX.to_string(),
        (None, None) if value.get("layers").is_some() => OCI_MANIFEST.to_string(),
        (None, None) => bail!("{what} is neither an image manifest nor an index"),
    };
    let parsed = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => Parsed::Index(
            serde_json::from_value(value)
                .with_context(|| format!("{what} is not a valid image index"))?,
        ),
        OCI_MANIFEST | DOCKER_MANIFEST => Parsed::Manifest(
            serde_json::from_value(value)
                .with_context(|| format!("{what} is not a valid image manifest"))?,
        ),
        other => bail!("{what} has media type {other}, which is not an image manifest or index"),
    };
    Ok((parsed, media_type))
}

/// Fetches the manifest `reference` names (`tag` or `sha256:…`) from the
/// registry, or from the store when it is pinned by a digest the store has.
/// Resolves tags with HEAD first (registries count GETs against pull
/// limits), verifies the bytes against the digest, and stores them.
pub fn fetch(
    client: &Client,
    s: &Session,
    store: &Store,
    image: &Reference,
    reference: &str,
) -> Result<Fetched> {
    let what = format!("manifest {reference} of {}", image.name());
    let scopes = [repo_scope(&image.repository, "pull")];
    let path = format!("/v2/{}/manifests/{reference}", image.repository);
    let mut want: Option<Digest> = reference.parse().ok();
    let mut head_type = None;
    if want.is_none() {
        let head = client.retry(&format!("resolving {image}"), || {
            client.request(
                s,
                "HEAD",
                &path,
                &[("Accept", ACCEPT)],
                &scopes,
                Body::Empty,
            )
        });
        match head {
            Ok(r) => {
                want = r
                    .header("docker-content-digest")
                    .and_then(|d| d.trim().parse().ok());
                head_type = r.header("content-type").map(str::to_string);
            }
            Err(e) if status_of(&e) == Some(404) => {
                bail!(
                    "{image} not found on {}: check the name and tag",
                    image.registry
                )
            }
            // Some registries refuse HEAD; GET answers the same question.
            Err(_) => {}
        }
    }
    if let Some(d) = &want
        && store.contains(d)
    {
        let bytes = store.read(d)?;
        let (_, media_type) = parse(&bytes, head_type.as_deref(), &what)?;
        return Ok(Fetched {
            bytes,
            digest: d.clone(),
            media_type,
        });
    }
    let get_path = match &want {
        Some(d) => format!("/v2/{}/manifests/{d}", image.repository),
        None => path.clone(),
    };
    let (bytes, header_digest, ctype) = client.retry(&format!("fetching {what}"), || {
        let r = client
            .request(
                s,
                "GET",
                &get_path,
                &[("Accept", ACCEPT)],
                &scopes,
                Body::Empty,
            )
            .map_err(|e| {
                if status_of(&e) == Some(404) {
                    e.context(format!("{image} not found on {}", image.registry))
                } else {
                    e
                }
            })?;
        let header_digest = r.header("docker-content-digest").map(str::to_string);
        let ctype = r.header("content-type").map(str::to_string);
        let mut bytes = Vec::new();
        r.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| net_read_error(s, &get_path, e))?;
        Ok((bytes, header_digest, ctype))
    })?;
    if bytes.len() as u64 > MAX_MANIFEST {
        bail!("{what} is larger than 4 MiB: refusing it");
    }
    let actual = Digest::of(&bytes);
    if let Some(d) = &want
        && &actual != d
    {
        bail!(
            "{what} does not match its digest: expected {d}, the registry sent content hashing to {actual}; nothing was stored"
        );
    }
    if let Some(h) = header_digest
        .as_deref()
        .and_then(|h| h.trim().parse::<Digest>().ok())
        && h != actual
    {
        bail!(
            "{what} does not match the digest the registry announced ({h}); its content hashes to {actual}; nothing was stored"
        );
    }
    let (_, media_type) = parse(&bytes, ctype.as_deref(), &what)?;
    store.put_verified(&actual, &bytes[..])?;
    Ok(Fetched {
        bytes,
        digest: actual,
        media_type,
    })
}

/// A read error on a response body: retryable, like a dropped connection.
pub fn net_read_error(s: &Session, path: &str, e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(super::client::RegistryError {
        registry: s.registry.clone(),
        method: "GET".into(),
        path: path.to_string(),
        status: None,
        message: if crate::http::is_stall(&e) {
            "no bytes while reading the answer: stalled".to_string()
        } else {
            format!("connection dropped while reading: {e}")
        },
        retry_after: None,
        stalled: crate::http::is_stall(&e),
    })
}

/// Picks the manifest for `platform` from an index; the error lists what
/// the index offers.
pub fn select<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    what: &str,
) -> Result<&'a oci_spec::image::Descriptor> {
    let candidates: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
        .collect();
    // Prefer an exact variant match when the user gave none (e.g. arm v7
    // over v6 is the index's order, as docker does).
    if let Some(d) = candidates.first() {
        return Ok(d);
    }
    let offered: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| Platform::from_oci(p).to_string())
        .collect();
    bail!(
        "{what} has no image for platform {platform}; it offers: {}. Pick one with --platform",
        if offered.is_empty() {
            "nothing with a platform".to_string()
        } else {
            offered.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
        let index: ImageIndex = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}}
            ]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64)
        ))
        .unwrap();
        let d = select(&index, &Platform::parse("linux/arm64/v8").unwrap(), "x").unwrap();
        assert!(d.digest().to_string().ends_with(&"b".repeat(64)));
        let d = select(&index, &Platform::parse("linux/amd64").unwrap(), "x").unwrap();
        assert!(d.digest().to_string().ends_with(&"a".repeat(64)));
        let err = select(&index, &Platform::parse("linux/s390x").unwrap(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
    }

    #[test]
    fn parse_tells_kinds_apart_and_refuses_junk() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{a}","size":2}},"layers":[]}}"#,
            a = "a".repeat(64)
        );
        let (p, mt) = parse(m.as_bytes(), None, "m").unwrap();
        assert!(matches!(p, Parsed::Manifest(_)));
        assert_eq!(mt, DOCKER_MANIFEST);
        let err = parse(b"<html><body>hi</body></html>", Some("text/html"), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTML"), "{err}");
        let err = parse(br#"{"schemaVersion":1}"#, None, "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("schema 1"), "{err}");
    }
}
