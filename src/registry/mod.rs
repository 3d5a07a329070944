//! The OCI Distribution client: references, auth, pull and push.
//!
//! | module | owns |
//! |---|---|
//! | [`crate::oci::reference`] | image references parsed as docker does (with the OCI types: the local store names images by them too) |
//! | [`credentials`] | docker/podman credential files and helpers, login/logout |
//! | [`auth`] | `WWW-Authenticate` challenges, bearer tokens and scopes |
//! | [`client`] | HTTP: sessions per registry, scheme choice, auth, retries |
//! | [`manifest`] | manifests and indexes on the wire, platform selection |
//! | [`origins`] | which repositories hold a blob, for cross-repository mounts |
//! | [`pull`] | registry → blob store, verified |
//! | [`push`] | blob store → registry, only what is missing |
//!
//! The API works on a [`crate::oci::Store`] and oci-spec descriptors, so a
//! deploy tool can push what it built without the `kiln` binary:
//!
//! ```no_run
//! # fn main() -> kiln::Result<()> {
//! use kiln::registry::{Client, ClientOptions, PushOptions, Reference, push};
//! # let store: kiln::oci::Store = todo!(); let manifest: oci_spec::image::Descriptor = todo!();
//! let client = Client::new(ClientOptions::default());
//! let target = Reference::parse("ghcr.io/acme/app:1.0")?;
//! let summary = push::push(&client, &store, &manifest, &target, &PushOptions::default(),
//!     &kiln::progress::Progress::quiet())?;
//! println!("{} blobs sent", summary.blobs_sent);
//! # Ok(()) }
//! ```

pub mod auth;
pub mod client;
pub mod credentials;
pub mod manifest;
pub mod origins;
mod parallel;
pub mod pull;
pub mod push;

pub use crate::oci::reference::{InvalidReference, Reference};
pub use crate::platform::Platform;
pub use client::{Client, ClientOptions, RegistryError};
pub use credentials::{CredentialSource, Credentials};
pub use pull::{PullOptions, PullResult};
pub use push::{PushOptions, PushSummary};
