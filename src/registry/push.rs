//! Push: an image (manifest or index) from the blob store to a registry.
//!
//! Per blob, in parallel: `HEAD` (present → skipped); `POST ?mount=&from=`
//! for each mount source (201 → mounted); else `POST` an upload, then a
//! monolithic `PUT ?digest=` with the body for small blobs, or one streaming
//! `PATCH` + an empty `PUT ?digest=` for large ones (never several PATCH
//! chunks: some registries drop all but the first). Bodies stream from the
//! store file. A failed attempt (5xx, 429, dropped connection) restarts that
//! blob's upload after a backoff; blobs already completed are skipped by the
//! HEAD on the next run. Manifests go last (per-platform manifests before
//! their index), so a tag never points at missing blobs.

use std::collections::HashMap;

use anyhow::{Context, bail};
use oci_spec::image::Descriptor;

use super::auth::repo_scope;
use super::client::{Body, Client, Session, absolute, status_of, with_query};
use super::manifest::{self, Parsed};
use super::parallel::for_each;
use crate::Result;
use crate::oci::reference::Reference;
use crate::oci::{Digest, Store};
use crate::progress::{Progress, Task};

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Repositories on the target registry that may hold the blobs already
    /// (tried with a cross-repository mount before uploading).
    pub mount_from: Vec<String>,
    /// Per blob, repositories on the target registry known to hold it
    /// (from [`super::origins`]); tried before `mount_from`.
    pub mount_sources: HashMap<Digest, Vec<String>>,
    /// Blobs up to this size go in one `PUT`; bigger ones in one `PATCH`.
    pub monolithic_max: u64,
    /// Blobs the local store may lack because the target repository has
    /// them or can mount them (a build cache whose layers were never
    /// fetched, [`crate::solver::remote`]): pushed only by `HEAD` or mount.
    pub remote_blobs: std::collections::HashSet<Digest>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            mount_from: Vec::new(),
            mount_sources: HashMap::new(),
            monolithic_max: 8 << 20,
            remote_blobs: std::collections::HashSet::new(),
        }
    }
}

/// What a push did, from kiln's own counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushSummary {
    /// The pushed reference, pinned to the digest of its manifest or index.
    pub reference: String,
    pub digest: String,
    /// Blobs uploaded.
    pub blobs_sent: usize,
    /// Blobs the registry had already.
    pub blobs_skipped: usize,
    /// Blobs made available by a cross-repository mount.
    pub blobs_mounted: usize,
    /// Blob bytes uploaded (manifests not counted).
    pub bytes_sent: u64,
    pub manifests_pushed: usize,
    /// Every blob of the image (now present in the target repository).
    #[serde(skip)]
    pub blobs: Vec<Digest>,
}

enum Outcome {
    Present,
    Mounted,
    Sent(u64),
}

/// Pushes the image whose top-level manifest or index is `root` (in
/// `store`) to `target`.
pub fn push(
    client: &Client,
    store: &Store,
    root: &Descriptor,
    target: &Reference,
    opts: &PushOptions,
    progress: &Progress,
) -> Result<PushSummary> {
    let root_digest =
        Digest::from_oci(root.digest()).context("the image to push has a non-sha256 digest")?;
    if let Some(d) = &target.digest
        && d != &root_digest
    {
        bail!(
            "cannot push {root_digest} to {target}: the reference pins another digest; drop the @sha256:… part"
        );
    }
    let root_bytes = store
        .read(&root_digest)
        .with_context(|| format!("reading the image manifest {root_digest} to push"))?;
    let what = format!("manifest {root_digest}");
    let root_mt = root.media_type().to_string();
    let (parsed, root_type) = manifest::parse(&root_bytes, Some(&root_mt), &what)?;
    // Manifests to PUT, children before the index.
    let mut manifests: Vec<(Digest, Vec<u8>, String)> = Vec::new();
    let mut images = Vec::new();
    match parsed {
        Parsed::Manifest(m) => images.push(m),
        Parsed::Index(index) => {
            for child in index.manifests() {
                let d = Digest::from_oci(child.digest())
                    .context("the index names a non-sha256 manifest")?;
                let bytes = store.read(&d).with_context(|| {
                    format!("manifest {d} named by index {root_digest} is not in the store")
                })?;
                let w = format!("manifest {d}");
                match manifest::parse(&bytes, Some(child.media_type().as_ref()), &w)? {
                    (Parsed::Manifest(m), mt) => {
                        images.push(m);
                        manifests.push((d, bytes, mt));
                    }
                    (Parsed::Index(_), _) => bail!("{w}: nested indexes are not supported"),
                }
            }
        }
    }
    manifests.push((root_digest.clone(), root_bytes, root_type));
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for m in &images {
        for d in std::iter::once(m.config()).chain(m.layers().iter()) {
            let digest = Digest::from_oci(d.digest()).context("a blob has a non-sha256 digest")?;
            if blobs.iter().any(|(x, _)| x == &digest) {
                continue;
            }
            if !store.contains(&digest) && !opts.remote_blobs.contains(&digest) {
                bail!(
                    "blob {digest} of the image is not in the local store {}: pull or rebuild the image",
                    store.root().display()
                );
            }
            blobs.push((digest, d.size()));
        }
    }
    let s = client.session(&target.registry)?;
    let mut scopes = vec![repo_scope(&target.repository, "pull,push")];
    let mut sources: Vec<&String> = opts
        .mount_sources
        .values()
        .flatten()
        .chain(&opts.mount_from)
        .filter(|r| **r != target.repository)
        .collect();
    sources.sort();
    sources.dedup();
    scopes.extend(sources.iter().map(|r| repo_scope(r, "pull")));
    let outcomes = for_each(client.options().parallel, &blobs, |(digest, size)| {
        let task = progress.task(format!("push {}", digest.short()));
        // This blob's known homes first, then the general mount sources.
        let mut mounts: Vec<&String> = opts
            .mount_sources
            .get(digest)
            .into_iter()
            .flatten()
            .collect();
        mounts.extend(&opts.mount_from);
        mounts.retain(|r| **r != target.repository);
        let mut seen = std::collections::HashSet::new();
        mounts.retain(|r| seen.insert(*r));
        mounts.truncate(3);
        let out = client.retry(&format!("pushing blob {digest} to {target}"), || {
            push_blob(
                client, &s, store, target, digest, *size, &mounts, &scopes, opts, &task,
            )
        })?;
        task.finish(match out {
            Outcome::Present => "skipped",
            Outcome::Mounted => "cached",
            Outcome::Sent(_) => "done",
        });
        Ok(out)
    })?;
    let mut summary = PushSummary {
        reference: target.with_digest(root_digest.clone()).to_string(),
        digest: root_digest.to_string(),
        blobs: blobs.iter().map(|(d, _)| d.clone()).collect(),
        ..Default::default()
    };
    for o in outcomes {
        match o {
            Outcome::Present => summary.blobs_skipped += 1,
            Outcome::Mounted => summary.blobs_mounted += 1,
            Outcome::Sent(n) => {
                summary.blobs_sent += 1;
                summary.bytes_sent += n;
            }
        }
    }
    let last = manifests.len() - 1;
    for (i, (digest, bytes, media_type)) in manifests.iter().enumerate() {
        let reference = if i == last {
            target.tag.clone().unwrap_or_else(|| digest.to_string())
        } else {
            digest.to_string()
        };
        let path = format!("/v2/{}/manifests/{reference}", target.repository);
        let resp = client.retry(&format!("pushing manifest {digest} to {target}"), || {
            client.request(
                &s,
                "PUT",
                &path,
                &[("Content-Type", media_type)],
                &scopes,
                Body::Bytes(bytes),
            )
        })?;
        if let Some(h) = resp.header("docker-content-digest")
            && h.trim() != digest.to_string()
        {
            bail!(
                "{} stored manifest {digest} under another digest ({h}): the registry rewrote it",
                target.registry
            );
        }
        summary.manifests_pushed += 1;
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn push_blob(
    client: &Client,
    s: &Session,
    store: &Store,
    target: &Reference,
    digest: &Digest,
    size: u64,
    mounts: &[&String],
    scopes: &[String],
    opts: &PushOptions,
    task: &Task,
) -> Result<Outcome> {
    let repo = &target.repository;
    let head = client.request(
        s,
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        scopes,
        Body::Empty,
    );
    match head {
        Ok(_) => return Ok(Outcome::Present),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => return Err(e),
    }
    let mut location = None;
    for from in mounts {
        let url = with_query(
            &with_query(
                &format!("/v2/{repo}/blobs/uploads/"),
                "mount",
                &digest.to_string(),
            ),
            "from",
            from,
        );
        let r = client.request(s, "POST", &url, &[], scopes, Body::Bytes(&[]))?;
        if r.status() == 201 {
            return Ok(Outcome::Mounted);
        }
        // 202: the registry started a plain upload instead.
        location = r.header("location").map(str::to_string);
        if location.is_some() {
            break;
        }
    }
    let location = match location {
        Some(l) => l,
        None => {
            let r = client.request(
                s,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                scopes,
                Body::Bytes(&[]),
            )?;
            r.header("location").map(str::to_string).with_context(|| {
                format!("{} started an upload without a Location header", s.registry)
            })?
        }
    };
    let location = absolute(s, &location);
    if !store.contains(digest) {
        bail!(
            "blob {digest} is neither on {}/{repo} nor mountable there, and the local store {} lacks it",
            s.registry,
            store.root().display()
        );
    }
    let file = store.open_blob(digest)?;
    let reader = crate::progress::Reading::new(file, size, task);
    let octet = ("Content-Type", "application/octet-stream");
    let put_url = if size <= opts.monolithic_max {
        with_query(&location, "digest", &digest.to_string())
    } else {
        let r = client.request(
            s,
            "PATCH",
            &location,
            &[octet],
            scopes,
            Body::Stream(Box::new(reader), size),
        )?;
        let next = r.header("location").map(str::to_string).with_context(|| {
            format!("{} accepted a PATCH without a Location header", s.registry)
        })?;
        let put = with_query(&absolute(s, &next), "digest", &digest.to_string());
        client.request(s, "PUT", &put, &[octet], scopes, Body::Bytes(&[]))?;
        task.bytes(size, Some(size));
        return Ok(Outcome::Sent(size));
    };
    client.request(
        s,
        "PUT",
        &put_url,
        &[octet],
        scopes,
        Body::Stream(Box::new(reader), size),
    )?;
    task.bytes(size, Some(size));
    Ok(Outcome::Sent(size))
}

/// How [`push_referrer`] made an artifact findable from its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrerLink {
    /// The registry's referrers API lists it (it read the `subject`).
    ReferrersApi,
    /// The registry has no referrers API: the artifact was added to the
    /// `sha256-<hex>` tag's index (OCI distribution spec 1.1 fallback).
    FallbackTag,
}

impl std::fmt::Display for ReferrerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReferrerLink::ReferrersApi => "referrers API",
            ReferrerLink::FallbackTag => "referrers tag schema",
        })
    }
}

/// Pushes an OCI 1.1 artifact manifest (`artifact`, in `store`) whose
/// `subject` is `subject`, by digest, to `target`'s repository, and makes
/// it findable from the subject: a registry with the referrers API does
/// that itself; otherwise the artifact joins the index tagged
/// `sha256-<subject hex>`. The subject's manifest is not touched.
pub fn push_referrer(
    client: &Client,
    store: &Store,
    artifact: &Descriptor,
    subject: &Digest,
    target: &Reference,
    progress: &Progress,
) -> Result<ReferrerLink> {
    let by_digest = Reference {
        tag: None,
        digest: None,
        ..target.clone()
    };
    push(
        client,
        store,
        artifact,
        &by_digest,
        &PushOptions::default(),
        progress,
    )?;
    let s = client.session(&target.registry)?;
    let repo = &target.repository;
    let scopes = [repo_scope(repo, "pull,push")];
    let index_type = "application/vnd.oci.image.index.v1+json";
    let get = |path: &str| -> Result<Option<Vec<u8>>> {
        match client.request(
            &s,
            "GET",
            path,
            &[("Accept", index_type)],
            &scopes,
            Body::Empty,
        ) {
            Ok(r) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(r.into_reader(), 4 << 20),
                    &mut bytes,
                )?;
                Ok(Some(bytes))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let listed = |bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
            .unwrap_or_default()
    };
    let artifact_digest = artifact.digest().to_string();
    if let Some(bytes) = get(&format!("/v2/{repo}/referrers/{subject}"))?
        && listed(&bytes)
            .iter()
            .any(|m| m.get("digest").and_then(|d| d.as_str()) == Some(artifact_digest.as_str()))
    {
        return Ok(ReferrerLink::ReferrersApi);
    }
    let tag = format!("{}-{}", subject.algorithm(), subject.hex());
    let path = format!("/v2/{repo}/manifests/{tag}");
    let mut entries = get(&path)?.map(|b| listed(&b)).unwrap_or_default();
    entries.retain(|m| m.get("digest").and_then(|d| d.as_str()) != Some(artifact_digest.as_str()));
    entries.push(serde_json::to_value(artifact)?);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": entries,
    });
    let bytes = serde_json::to_vec(&index)?;
    client.retry(
        &format!("tagging the referrers of {subject} on {target}"),
        || {
            client.request(
                &s,
                "PUT",
                &path,
                &[("Content-Type", index_type)],
                &scopes,
                Body::Bytes(&bytes),
            )
        },
    )?;
    Ok(ReferrerLink::FallbackTag)
}
