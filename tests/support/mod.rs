//! Helpers shared by the integration tests: real services on loopback.
#![allow(dead_code)]

pub mod registry;
