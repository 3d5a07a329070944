//! Pull: reference → manifest (through the index for the platform) →
//! config and layers into the blob store.
//!
//! Every blob is streamed into the store's ingest area and committed only
//! when its sha256 and size match the descriptor (`commit_expecting`): a
//! wrong or truncated blob never appears under a digest. Blobs the store
//! already has are not fetched.

use std::io::{Read, Write};

use anyhow::{Context, bail};
use oci_spec::image::{Descriptor, DescriptorBuilder, MediaType};

use super::auth::repo_scope;
use super::client::{Body, Client, Session};
use super::manifest::{self, Parsed};
use super::parallel::for_each;
use crate::Result;
use crate::oci::reference::Reference;
use crate::oci::{Digest, Store};
use crate::platform::Platform;
use crate::progress::Progress;

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to pick from an index; the host's when `None`.
    pub platform: Option<Platform>,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// The reference, pinned to the digest it resolved to.
    pub reference: Reference,
    /// The digest the reference resolved to (an index or a manifest).
    pub resolved: Digest,
    /// The image manifest chosen (for the platform), stored with its blobs.
    pub manifest: Descriptor,
    pub blobs_fetched: usize,
    pub blobs_present: usize,
    pub bytes_fetched: u64,
    /// The config and layer digests of the chosen manifest.
    pub blobs: Vec<Digest>,
}

/// Pulls `image` into `store`.
pub fn pull(
    client: &Client,
    store: &Store,
    image: &Reference,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<PullResult> {
    let s = client.session(&image.registry)?;
    let top = manifest::fetch(client, &s, store, image, &image.reference())?;
    let (parsed, _) = manifest::parse(&top.bytes, Some(&top.media_type), &format!("{image}"))?;
    let (chosen, parsed) = match parsed {
        Parsed::Manifest(m) => ((top.clone(), top.bytes.len()), m),
        Parsed::Index(index) => {
            let platform = opts.platform.clone().unwrap_or_else(Platform::host);
            let d = manifest::select(&index, &platform, &image.to_string())?;
            let digest = Digest::from_oci(d.digest())
                .with_context(|| format!("{image}: the index names a non-sha256 manifest"))?;
            let f = manifest::fetch(client, &s, store, image, &digest.to_string())?;
            let what = format!("{image} ({platform})");
            match manifest::parse(&f.bytes, Some(&f.media_type), &what)? {
                (Parsed::Manifest(m), _) => {
                    let n = f.bytes.len();
                    ((f, n), m)
                }
                (Parsed::Index(_), _) => bail!("{what}: an index points to another index"),
            }
        }
    };
    let mut blobs: Vec<(Digest, u64, String)> = Vec::new();
    for (d, kind) in std::iter::once((parsed.config(), "config"))
        .chain(parsed.layers().iter().map(|l| (l, "layer")))
    {
        let digest = Digest::from_oci(d.digest())
            .with_context(|| format!("{image}: {kind} has a non-sha256 digest"))?;
        if !blobs.iter().any(|(x, _, _)| x == &digest) {
            blobs.push((digest, d.size(), kind.to_string()));
        }
    }
    let all: Vec<Digest> = blobs.iter().map(|(d, _, _)| d.clone()).collect();
    let (present, missing): (Vec<_>, Vec<_>) =
        blobs.into_iter().partition(|(d, _, _)| store.contains(d));
    let fetched = for_each(
        client.options().parallel,
        &missing,
        |(digest, size, kind)| {
            client.retry(&format!("fetching {kind} {digest} of {image}"), || {
                fetch_blob(client, &s, store, image, digest, *size, kind, progress)
            })
        },
    )?;
    let (fetched_doc, size) = chosen;
    let manifest = DescriptorBuilder::default()
        .media_type(MediaType::from(fetched_doc.media_type.as_str()))
        .digest(fetched_doc.digest.to_oci())
        .size(size as u64)
        .build()
        .context("building the manifest descriptor")?;
    Ok(PullResult {
        reference: image.with_digest(top.digest.clone()),
        resolved: top.digest,
        manifest,
        blobs_fetched: missing.len(),
        blobs_present: present.len(),
        bytes_fetched: fetched.iter().sum(),
        blobs: all,
    })
}

/// Fetches one blob of `image`'s repository into `store` (retried,
/// verified); returns the bytes fetched (0 when the store had it).
pub fn blob(
    client: &Client,
    store: &Store,
    image: &Reference,
    digest: &Digest,
    size: u64,
    progress: &Progress,
) -> Result<u64> {
    let s = client.session(&image.registry)?;
    client.retry(&format!("fetching blob {digest} of {image}"), || {
        fetch_blob(client, &s, store, image, digest, size, "blob", progress)
    })
}

/// Which of `digests` `image`'s repository has (`HEAD`, in parallel), in
/// the order given.
pub fn present(client: &Client, image: &Reference, digests: &[Digest]) -> Result<Vec<bool>> {
    let s = client.session(&image.registry)?;
    let scopes = [repo_scope(&image.repository, "pull")];
    for_each(client.options().parallel, digests, |digest| {
        let path = format!("/v2/{}/blobs/{digest}", image.repository);
        match client.retry(&format!("checking blob {digest} of {image}"), || {
            client.request(&s, "HEAD", &path, &[], &scopes, Body::Empty)
        }) {
            Ok(_) => Ok(true),
            Err(e) if super::client::status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// Counts bytes through a writer and reports them.
struct Counting<'a, W> {
    inner: W,
    done: u64,
    total: u64,
    task: &'a crate::progress::Task,
    last: std::time::Instant,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.done += n as u64;
        if self.last.elapsed().as_millis() >= 100 {
            self.last = std::time::Instant::now();
            self.task.bytes(self.done, Some(self.total));
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[allow(clippy::too_many_arguments)]
fn fetch_blob(
    client: &Client,
    s: &Session,
    store: &Store,
    image: &Reference,
    digest: &Digest,
    size: u64,
    kind: &str,
    progress: &Progress,
) -> Result<u64> {
    if store.contains(digest) {
        return Ok(0);
    }
    let task = progress.task(format!("pull {kind} {}", digest.short()));
    let path = format!("/v2/{}/blobs/{digest}", image.repository);
    let resp = client.request(
        s,
        "GET",
        &path,
        &[],
        &[repo_scope(&image.repository, "pull")],
        Body::Empty,
    )?;
    let mut w = store.writer()?;
    let mut counting = Counting {
        inner: &mut w,
        done: 0,
        total: size,
        task: &task,
        last: std::time::Instant::now(),
    };
    // One byte more than announced tells "too long" from "exact".
    let mut body = resp.into_reader().take(size + 1);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(manifest::net_read_error(s, &path, e)),
        };
        counting
            .write_all(&buf[..n])
            .with_context(|| format!("writing blob {digest} to {}", store.root().display()))?;
    }
    let got = counting.done;
    if got < size {
        return Err(manifest::net_read_error(
            s,
            &path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("got {got} of {size} bytes"),
            ),
        ));
    }
    if got > size {
        bail!(
            "{kind} {digest} of {image} is larger than its manifest says ({size} bytes): nothing was stored"
        );
    }
    w.commit_expecting(digest).with_context(|| {
        format!("{kind} {digest} of {image} from {}: the bytes do not match the digest; nothing was stored", image.registry)
    })?;
    task.bytes(size, Some(size));
    task.finish("done");
    Ok(size)
}
