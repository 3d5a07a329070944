//! Helpers shared by the integration tests: real services on loopback.
#![allow(dead_code)]

pub mod auto;
pub mod base;
pub mod debian;
pub mod hostile;
pub mod kiln;
pub mod podman;
pub mod proxy;
pub mod pyvenv;
pub mod registry;
pub mod rootless;
pub mod sandbox;
pub mod snapshot;
pub mod sshd;

/// One kiln cache dir (blob store, .debs, step cache) for every suite whose
/// assertions do not need an empty cache, kept across runs: each Debian
/// package and npm/pip download happens once per machine. kiln's store is
/// safe for concurrent builds (file locks, atomic renames).
pub fn shared_cache() -> std::path::PathBuf {
    std::path::Path::new(debian::CACHE).join("build-cache")
}
