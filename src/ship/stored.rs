//! `kiln push`, as a library call: an image of the local store sent to a
//! registry or to a server over SSH.

use std::time::Duration;

use anyhow::bail;

use super::{Destination, ShipOptions, Shipped, ship};
use crate::Result;
use crate::oci::{Digest, ImageStore};
use crate::progress::Progress;
use crate::sbom;
use crate::registry::{Client, ClientOptions, CredentialSource, PushOptions, Reference, origins};

/// What to push where.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The stored image: a name, `name:tag` or a digest prefix.
    pub image: String,
    /// A registry reference (`Destination::Registry`; `None` pushes to the
    /// image's own name, as `docker push NAME` does) or a server
    /// (`Destination::Ssh`). Other destinations are `kiln save`'s.
    pub to: Destination,
    /// Registries reachable over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Fail a registry request that moves nothing for this long (default:
    /// 30 s).
    pub stall_timeout: Option<Duration>,
    /// Attach the image's SBOM (SPDX and CycloneDX) as OCI 1.1 referrers.
    pub sbom: bool,
    /// Attach its SLSA provenance the same way.
    pub provenance: bool,
}

impl PushRequest {
    /// Pushes `image` to `to`, nothing attached, default timeouts.
    pub fn new(image: impl Into<String>, to: Destination) -> PushRequest {
        PushRequest {
            image: image.into(),
            to,
            insecure_registries: Vec::new(),
            stall_timeout: None,
            sbom: false,
            provenance: false,
        }
    }
}

/// Sends the stored image `req.image` to `req.to`: only the blobs the
/// other side lacks, blobs of another repository of the same registry
/// mounted rather than uploaded, and the SBOM/provenance attached when
/// asked.
pub fn push(req: &PushRequest, progress: &Progress) -> Result<Shipped> {
    let images = ImageStore::open_default()?;
    let root = images.resolve(&req.image)?;
    match &req.to {
        Destination::Ssh { .. } => {
            if req.sbom || req.provenance {
                bail!(
                    "--sbom and --provenance attach to a registry push; a server over SSH gets the image alone"
                );
            }
            // A digest given as the image has no name to carry: name it
            // after the digest on the server.
            let normalized = crate::oci::images::normalize_name(&req.image)?;
            let tag = match images.layout().find(&normalized)? {
                Some(_) => req.image.clone(),
                None => format!("sha256-{}", root.digest().digest()),
            };
            ship(
                images.blobs(),
                &root,
                &tag,
                &req.to,
                &ShipOptions::default(),
                progress,
            )
        }
        Destination::Registry(to) => {
            let target = match to {
                Some(r) => r.clone(),
                None => Reference::parse(&req.image)?,
            };
            let opts = push_options(&images, &root, &req.image, &target)?;
            let mut client_opts = ClientOptions {
                insecure_registries: req.insecure_registries.clone(),
                credentials: CredentialSource::Files,
                ..ClientOptions::default()
            };
            if let Some(t) = req.stall_timeout {
                client_opts.stall_timeout = t;
            }
            let client = Client::new(client_opts).with_progress(progress);
            let dest = Destination::Registry(Some(target.clone()));
            let shipped = ship(
                images.blobs(),
                &root,
                &req.image,
                &dest,
                &ShipOptions {
                    client: Some(&client),
                    push: opts,
                    ..ShipOptions::default()
                },
                progress,
            )?;
            if let Shipped::Pushed(_, summary) = &shipped {
                remember(&target, &summary.blobs, progress);
            }
            attach(req, &client, &images, &root, &target, progress)?;
            Ok(shipped)
        }
        other => bail!(
            "push sends to a registry or to ssh://HOST, not to {other:?}: write files with `kiln save` or `kiln build -o`"
        ),
    }
}

/// `--sbom`/`--provenance`: attaches the documents of the image `root`
/// (from its build record) to the pushed image as referrers.
fn attach(
    req: &PushRequest,
    client: &Client,
    images: &ImageStore,
    root: &oci_spec::image::Descriptor,
    target: &Reference,
    progress: &Progress,
) -> Result<()> {
    if !req.sbom && !req.provenance {
        return Ok(());
    }
    let digest = crate::oci::image::desc_digest(root)?;
    let record = sbom::load(&digest)?;
    for doc in sbom::attach::documents(&record, req.sbom, req.provenance)? {
        let artifact = sbom::attach::artifact(images.blobs(), root, &doc)?;
        let how = crate::registry::push::push_referrer(
            client,
            images.blobs(),
            &artifact,
            &digest,
            target,
            progress,
        )?;
        progress.info(format!(
            "attached {} to {}@{digest} ({how})",
            doc.artifact_type,
            target.name()
        ));
    }
    Ok(())
}

/// Where the registry can take blobs from instead of an upload: the image's
/// own repository when it was pulled from the same registry, and the
/// repositories kiln pushed them to before.
fn push_options(
    images: &ImageStore,
    root: &oci_spec::image::Descriptor,
    name: &str,
    target: &Reference,
) -> Result<PushOptions> {
    let mut opts = PushOptions::default();
    if let Ok(source) = Reference::parse(name)
        && source.registry == target.registry
        && source.repository != target.repository
    {
        opts.mount_from.push(source.repository);
    }
    if let Ok(path) = origins::default_path() {
        let blobs = crate::oci::image::closure(images.blobs(), root)?
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>();
        opts.mount_sources = origins::lookup(&path, &target.registry, &target.repository, &blobs);
    }
    Ok(opts)
}

/// Notes where blobs now live, for later cross-repository mounts. A
/// failure only costs a future mount, so it is a warning.
pub(crate) fn remember(at: &Reference, blobs: &[Digest], progress: &Progress) {
    let done = origins::default_path()
        .and_then(|p| origins::record(&p, &at.registry, &at.repository, blobs));
    if let Err(e) = done {
        progress.warn(format!("could not record blob origins: {e:#}"));
    }
}
