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

pub mod build;
#[cfg(feature = "cli")]
pub mod cli;
pub mod context;
pub mod deploy;
pub mod dockerfile;
pub mod error;
pub mod failure;
pub mod gc;
pub mod graph;
pub mod http;
pub mod oci;
pub mod packages;
pub mod paths;
pub mod plan;
pub mod platform;
pub mod progress;
pub mod rebase;
pub mod redact;
pub mod registry;
pub mod sandbox;
pub mod sbom;
pub mod ship;
pub mod sign;
pub mod solver;
pub mod transfer;

pub use build::{BuildRequest, BuildResult, PlanRequest};
pub use error::Result;
pub use failure::Error;
pub use progress::{Event, Progress, ProgressSink};

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
pub fn plan(
    dir: &std::path::Path,
    req: &PlanRequest,
) -> std::result::Result<plan::BuildPlan, Error> {
    req.plan(dir, Vec::new(), &Progress::quiet())
        .map_err(Error::from)
}
