//! Helpers shared by the integration tests: real services on loopback.
#![allow(dead_code)]

pub mod base;
pub mod debian;
pub mod proxy;
pub mod registry;
