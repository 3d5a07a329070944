//! kiln turns a source tree into an OCI container image without a Docker daemon.
//!
//! The library is what the `kiln` binary uses; a deploy tool can call it
//! directly. The pipeline and where each piece lives is described in
//! `docs/architecture.md` (frontends → build graph → solver → exporters).
//!
//! Errors are [`anyhow::Error`] with context chains; failures a caller may
//! want to branch on are typed (see [`error`]) and can be recovered with
//! `downcast_ref`.

pub mod build;
pub mod cli;
pub mod context;
pub mod deploy;
pub mod dockerfile;
pub mod error;
pub mod graph;
pub mod oci;
pub mod packages;
pub mod paths;
pub mod plan;
pub mod progress;
pub mod redact;
pub mod registry;
pub mod sandbox;
pub mod sbom;
pub mod solver;
pub mod transfer;

pub use build::{BuildRequest, BuildResult, build};
pub use error::Result;
