//! Dockerfiles: generation from a plan (`generate`); the parser lives in
//! sibling files owned by the Dockerfile frontend.

pub mod generate;
