//! Helpers shared by the integration tests: real services on loopback.
#![allow(dead_code)]

pub mod auto;
pub mod base;
pub mod debian;
pub mod kiln;
pub mod podman;
pub mod proxy;
pub mod registry;
pub mod sshd;
