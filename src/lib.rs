//! kiln turns a source tree into an OCI container image without a Docker daemon.
//!
//! The library is what the `kiln` binary uses; a deploy tool can call it
//! directly. The pipeline and where each piece lives is described in
//! `docs/architecture.md` (frontends → build graph → solver → exporters).
//!
//! The entry points for a program that embeds kiln are [`plan()`] and
//! [`build()`]: they report progress live to a [`progress::ProgressSink`]
//! (through [`Progress::with_sink`]) and fail with [`Error`], an enum to
//! branch on (a failed step, the network, bad input, cancellation) with
//! [`Error::is_transient`] for retries. `examples/embed.rs` plans, builds,
//! pushes and cancels; docs/library.md describes the API. Inside, errors
//! are [`anyhow::Error`] chains (see [`error`]). The library builds without
//! the command line: `default-features = false` drops the `cli` feature
//! (clap, clap_complete, indicatif).

/// Declares the modules the library does not promise: private to the
/// crate, or `pub` (and hidden from the docs) with the `internals`
/// feature, which only the crate's own test suites turn on (a
/// dev-dependency of kiln on itself), because they reach into the pieces
/// they test (the layer writer, the sandbox, the graph). A program that
/// embeds kiln sees the promised API alone, so an internal change cannot
/// break it; the dead-code and unused-import lints are off for these modules
/// without the feature, since some of their items (and re-exports) exist
/// for the tests.
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unused_imports)]
        mod $name;
    )*};
}

internal_modules!(
    build, context, deploy, dockerfile, error, failure, gc, graph, http, oci, packages, paths,
    plan, platform, progress, rebase, redact, registry, sandbox, sbom, ship, sign, solver,
    transfer,
);

/// The command line of the `kiln` binary (the `cli` feature): the binary
/// is a separate crate, so this is `pub`, but it is no library API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;

// What the library promises (docs/library.md): the items below and the
// functions after them. Everything else is internal.
pub use build::{
    BuildRequest, BuildResult, BuildSource, CacheFrom, CacheMode, CacheTo, Entitlement,
    PlanRequest, PlatformImage,
};
pub use deploy::{Built, DeployRequest, DeployResult, Resolved};
pub use error::Result;
pub use failure::Error;
pub use gc::Bound;
pub use oci::{Compression, Digest, ImageStore};
pub use plan::BuildPlan;
pub use platform::Platform;
pub use progress::{Event, Progress, ProgressSink};
pub use rebase::{Change, Rebased};
pub use registry::Reference;
pub use sandbox::Network;
pub use sbom::Format as SbomFormat;
pub use sbom::outdated::{Report as OutdatedReport, Update as PackageUpdate};
pub use ship::{Destination, PushRequest, Shipped};
pub use sign::Signed;
pub use transfer::{Engine, SshOptions, SshTarget, TransferOptions, TransferSummary};

/// Builds an image (from the context's Dockerfile, inline Dockerfile text
/// or the auto plan; see [`BuildRequest`]), reporting to `progress` as it
/// goes. [`build::build`] is the same with an `anyhow` error.
pub fn build(req: &BuildRequest, progress: &Progress) -> std::result::Result<BuildResult, Error> {
    build::build(req, progress).map_err(Error::from)
}

/// The auto build plan for the app in `dir` (what `kiln plan` prints): the
/// providers that matched, the packages, the install, build and start
/// commands, with `req`'s overrides and `-e` variables applied (or the plan
/// `req.plan_file` names). It is the plan [`build()`] uses for the same
/// request. Unlike the binary, it reads no `KILN_*`/`NIXPACKS_*` variable
/// from the process environment: pass them in `req.env`.
pub fn plan(dir: &std::path::Path, req: &PlanRequest) -> std::result::Result<BuildPlan, Error> {
    req.plan(dir, Vec::new(), &Progress::quiet())
        .map_err(Error::from)
}

/// Builds every service the deploy files name (compose, FTL, lttle),
/// pushes or sends the images, and returns the files with pinned digests
/// (what `kiln deploy` writes).
pub fn deploy(
    req: &DeployRequest,
    progress: &Progress,
) -> std::result::Result<DeployResult, Error> {
    deploy::deploy(req, progress).map_err(Error::from)
}

/// Moves the local image `image` (built by kiln) onto its Debian suite's
/// current packages without running a step: new package layers under the
/// same app layers, named `tag` (default: `image`'s own name). Refused,
/// with the reason, when a changed package breaks what the app layers
/// need (what `kiln rebase` does; docs/rebase.md).
pub fn rebase(
    image: &str,
    tag: Option<&str>,
    progress: &Progress,
) -> std::result::Result<Rebased, Error> {
    rebase::rebase_default(image, tag, progress).map_err(Error::from)
}

/// Sends an image of the local store to a registry or a server over SSH,
/// only the blobs the other side lacks (what `kiln push` does).
pub fn push(req: &PushRequest, progress: &Progress) -> std::result::Result<Shipped, Error> {
    ship::stored::push(req, progress).map_err(Error::from)
}

/// The SBOM of the local image `image` (built by kiln) as a document:
/// SPDX 2.3 or CycloneDX 1.6 JSON (what `kiln sbom` prints).
pub fn sbom(image: &str, format: SbomFormat) -> std::result::Result<Vec<u8>, Error> {
    sbom::record_of(image)
        .and_then(|r| sbom::render(&r, format))
        .map_err(Error::from)
}

/// The SLSA v1 provenance statement of the local image `image` (what
/// `kiln sbom --provenance` prints).
pub fn provenance(image: &str) -> std::result::Result<Vec<u8>, Error> {
    sbom::record_of(image)
        .and_then(|r| sbom::provenance::statement(&r))
        .map_err(Error::from)
}

/// The Debian packages of the local image `image` whose suite has moved on
/// (security updates first), without changing anything (what `kiln
/// outdated` prints).
pub fn outdated(image: &str, progress: &Progress) -> std::result::Result<OutdatedReport, Error> {
    sbom::record_of(image)
        .and_then(|r| sbom::outdated::check(&r, progress))
        .map_err(Error::from)
}

/// Signs the image `image` names on its registry with the ECDSA P-256
/// private key `key_pem` (PKCS#8 PEM), in cosign's format: the
/// `sha256-<digest>.sig` tag (what `kiln sign` does; docs/sbom.md).
pub fn sign(
    image: &Reference,
    key_pem: &[u8],
    insecure_registries: &[String],
    progress: &Progress,
) -> std::result::Result<Signed, Error> {
    let run = || -> Result<Signed> {
        let key = sign::SigningKey::from_pem(key_pem, "the signing key")?;
        let client = registry::Client::new(registry::ClientOptions {
            insecure_registries: insecure_registries.to_vec(),
            credentials: registry::CredentialSource::Files,
            ..registry::ClientOptions::default()
        })
        .with_progress(progress);
        sign::sign(&client, image, &key, progress)
    };
    run().map_err(Error::from)
}
